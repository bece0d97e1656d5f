//! Function logs: one append-only file per function, bounded in size, and a live feed.
//!
//! Environments' output and the platform's `START`/`END`/`REPORT` lines reach the
//! [`LogSink`] as chunks. One writer thread appends them to `<dir>/<function>.log`, so the
//! invoke path never waits on the disk, and it batches: producers append to a queue under
//! an uncontended lock and wake the writer only when it is parked; once awake it lingers
//! for [`BATCH_WINDOW`] before draining. Under load the writer is never woken per
//! invocation (a wake-up costs a pair of system calls and a context switch on the invoke
//! path), and each batch costs one `write` per function. Readers go through the same queue
//! ([`LogSink::read`]), so what they read includes every line written before they asked,
//! and a follower's live feed starts exactly where its snapshot ends.
//!
//! When a file passes its size bound it becomes `<function>.log.1` (replacing the previous
//! one) and a new file starts: at most twice the bound is kept per function.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, broadcast, oneshot};

/// Per-function log file bound before rotation. 8 MB holds tens of thousands of
/// invocations' report lines; the disk cost is at most twice this per function.
pub const DEFAULT_LOG_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// How long the writer lets chunks accumulate once woken. Lines reach the file and live
/// followers at most this late; readers never miss them (see [`LogSink::read`]).
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// Function output queued beyond this waits for the writer (the platform's own lines never
/// do): a function that floods its output slows only itself.
const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

/// One chunk of a function's log.
#[derive(Debug, Clone)]
pub struct LogChunk {
    pub function: Arc<str>,
    pub data: Bytes,
}

/// What a reader gets: the end of the log, and the live feed from that point on.
pub struct LogRead {
    pub existing: Vec<u8>,
    pub live: Option<broadcast::Receiver<LogChunk>>,
}

enum Entry {
    Chunk(LogChunk),
    Remove(Arc<str>),
    Read {
        function: Arc<str>,
        bytes: u64,
        follow: bool,
        reply: oneshot::Sender<LogRead>,
    },
}

#[derive(Default)]
struct Queue {
    entries: Vec<Entry>,
    chunk_bytes: usize,
    parked: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    drained: Notify,
    feed: broadcast::Sender<LogChunk>,
    dir: PathBuf,
}

/// Where log chunks go. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

impl LogSink {
    /// Starts the writer thread for logs under `dir`.
    pub fn start(dir: PathBuf, max_file_bytes: u64) -> io::Result<LogSink> {
        std::fs::create_dir_all(&dir)?;
        let (feed, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            drained: Notify::new(),
            feed,
            dir,
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("ember-logs".into())
            .spawn(move || write_loop(&writer, max_file_bytes))?;
        Ok(LogSink { shared })
    }

    fn push(&self, entry: Entry) {
        let mut queue = self.shared.queue.lock().expect("log queue");
        if let Entry::Chunk(chunk) = &entry {
            queue.chunk_bytes += chunk.data.len();
        }
        queue.entries.push(entry);
        if queue.parked {
            queue.parked = false;
            self.shared.wake.notify_one();
        }
    }

    /// Appends the platform's own lines to `function`'s log; never waits.
    pub fn write_platform(&self, function: &Arc<str>, data: Bytes) {
        self.push(Entry::Chunk(LogChunk {
            function: Arc::clone(function),
            data,
        }));
    }

    /// Appends a function's output to its log, waiting while too much is queued.
    pub async fn write_output(&self, function: &Arc<str>, data: Bytes) {
        loop {
            let drained = self.shared.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.shared.queue.lock().expect("log queue").chunk_bytes < MAX_QUEUED_BYTES {
                break;
            }
            drained.await;
        }
        self.write_platform(function, data);
    }

    /// The last `bytes` of `function`'s log, including every line written before the call,
    /// and with `follow` the live feed of everything written after.
    pub async fn read(&self, function: &str, bytes: u64, follow: bool) -> LogRead {
        let (reply, answer) = oneshot::channel();
        self.push(Entry::Read {
            function: Arc::from(function),
            bytes,
            follow,
            reply,
        });
        answer.await.unwrap_or(LogRead {
            existing: Vec::new(),
            live: None,
        })
    }

    /// Removes a function's log files (after writing what is queued for it).
    pub fn remove(&self, function: &str) {
        self.push(Entry::Remove(Arc::from(function)));
    }
}

fn log_path(dir: &Path, function: &str) -> PathBuf {
    dir.join(format!("{function}.log"))
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

struct OpenLog {
    file: File,
    len: u64,
}

fn write_loop(shared: &Shared, max: u64) {
    let mut open: HashMap<Arc<str>, OpenLog> = HashMap::new();
    loop {
        {
            let mut queue = shared.queue.lock().expect("log queue");
            while queue.entries.is_empty() {
                queue.parked = true;
                queue = shared.wake.wait(queue).expect("log queue");
            }
        }
        // Linger so that a burst becomes one batch; nobody wakes us meanwhile.
        std::thread::sleep(BATCH_WINDOW);
        let entries = {
            let mut queue = shared.queue.lock().expect("log queue");
            queue.chunk_bytes = 0;
            std::mem::take(&mut queue.entries)
        };
        shared.drained.notify_waiters();
        let mut pending: Vec<LogChunk> = Vec::new();
        for entry in entries {
            match entry {
                Entry::Chunk(chunk) => pending.push(chunk),
                Entry::Remove(function) => {
                    flush(shared, &mut open, &mut pending, max);
                    open.remove(&function);
                    let path = log_path(&shared.dir, &function);
                    let _ = std::fs::remove_file(rotated(&path));
                    let _ = std::fs::remove_file(path);
                }
                Entry::Read {
                    function,
                    bytes,
                    follow,
                    reply,
                } => {
                    flush(shared, &mut open, &mut pending, max);
                    let live = follow.then(|| shared.feed.subscribe());
                    let existing = read_tail(&log_path(&shared.dir, &function), bytes);
                    let _ = reply.send(LogRead { existing, live });
                }
            }
        }
        flush(shared, &mut open, &mut pending, max);
    }
}

/// Writes the pending chunks, one `write` per run of chunks of the same function, and
/// publishes them to followers.
fn flush(
    shared: &Shared,
    open: &mut HashMap<Arc<str>, OpenLog>,
    pending: &mut Vec<LogChunk>,
    max: u64,
) {
    let mut start = 0;
    while start < pending.len() {
        let function = Arc::clone(&pending[start].function);
        let end = pending[start..]
            .iter()
            .position(|c| c.function != function)
            .map_or(pending.len(), |n| start + n);
        let run = &pending[start..end];
        let mut data = Vec::with_capacity(run.iter().map(|c| c.data.len()).sum());
        for chunk in run {
            data.extend_from_slice(&chunk.data);
        }
        if let Err(e) = append(open, &shared.dir, &function, &data, max) {
            tracing::warn!(function = %function, error = %e, "could not write to the function log");
            open.remove(&function);
        }
        start = end;
    }
    for chunk in pending.drain(..) {
        let _ = shared.feed.send(chunk);
    }
}

fn append(
    open: &mut HashMap<Arc<str>, OpenLog>,
    dir: &Path,
    function: &Arc<str>,
    data: &[u8],
    max: u64,
) -> io::Result<()> {
    let path = log_path(dir, function);
    let log = match open.entry(Arc::clone(function)) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let len = file.metadata()?.len();
            e.insert(OpenLog { file, len })
        }
    };
    if log.len > 0 && log.len + data.len() as u64 > max {
        std::fs::rename(&path, rotated(&path))?;
        log.file = OpenOptions::new().create(true).append(true).open(&path)?;
        log.len = 0;
    }
    log.file.write_all(data)?;
    log.len += data.len() as u64;
    Ok(())
}

fn read_tail(path: &Path, bytes: u64) -> Vec<u8> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut out = Vec::new();
    let _ = file.read_to_end(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(max: u64) -> (tempfile::TempDir, LogSink) {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::start(dir.path().join("logs"), max).unwrap();
        (dir, sink)
    }

    #[tokio::test]
    async fn a_full_log_rotates_and_keeps_the_newest_lines() {
        let (dir, sink) = sink(100);
        let f: Arc<str> = Arc::from("f");
        for i in 0..30 {
            sink.write_platform(&f, Bytes::from(format!("line {i:03}\n")));
            // Separate batches, so that rotation happens between them.
            sink.read("f", 0, false).await;
        }
        let current = String::from_utf8(sink.read("f", 1000, false).await.existing).unwrap();
        let old =
            std::fs::read_to_string(rotated(&log_path(&dir.path().join("logs"), "f"))).unwrap();
        assert!(current.len() <= 100 && old.len() <= 100);
        assert!(current.ends_with("line 029\n"), "{current}");
        assert!(!current.contains("line 000") && !old.contains("line 000"));
    }

    #[tokio::test]
    async fn a_read_sees_everything_written_before_it_and_the_feed_continues_without_a_seam() {
        let (_dir, sink) = sink(DEFAULT_LOG_FILE_BYTES);
        let f: Arc<str> = Arc::from("f");
        sink.write_platform(&f, Bytes::from_static(b"one\n"));
        sink.write_output(&f, Bytes::from_static(b"two\n")).await;
        let read = sink.read("f", 1024, true).await;
        assert_eq!(read.existing, b"one\ntwo\n");
        let mut live = read.live.unwrap();
        sink.write_platform(&f, Bytes::from_static(b"three\n"));
        let next = live.recv().await.unwrap();
        assert_eq!(
            &next.data[..],
            b"three\n",
            "the feed repeated or skipped a line"
        );
    }

    #[tokio::test]
    async fn removing_a_log_deletes_its_files() {
        let (dir, sink) = sink(DEFAULT_LOG_FILE_BYTES);
        let f: Arc<str> = Arc::from("gone");
        sink.write_platform(&f, Bytes::from_static(b"x\n"));
        sink.remove("gone");
        assert!(sink.read("gone", 100, false).await.existing.is_empty());
        assert!(!log_path(&dir.path().join("logs"), "gone").exists());
    }
}
