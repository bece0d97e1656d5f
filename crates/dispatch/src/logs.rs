//! Function logs: one append-only file per function, bounded in size, and a live feed.
//!
//! Environments' output and the platform's `START`/`END`/`REPORT` lines reach the
//! [`LogSink`] as chunks; one writer task appends them to `<dir>/<function>.log`, so the
//! invoke path never waits on the disk. When a file passes its size bound it becomes
//! `<function>.log.1` (replacing the previous one) and a new file starts: at most twice the
//! bound is kept per function. Followers (`ember logs --follow`) subscribe to the feed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

/// Per-function log file bound before rotation. 8 MB holds tens of thousands of
/// invocations' report lines; the disk cost is at most twice this per function.
pub const DEFAULT_LOG_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// One chunk of a function's log.
#[derive(Debug, Clone)]
pub struct LogChunk {
    pub function: Arc<str>,
    pub data: Bytes,
}

/// Where log chunks go. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<LogChunk>,
    feed: broadcast::Sender<LogChunk>,
    dir: Arc<PathBuf>,
}

impl LogSink {
    /// Starts the writer task for logs under `dir`.
    pub fn start(dir: PathBuf, max_file_bytes: u64) -> io::Result<LogSink> {
        std::fs::create_dir_all(&dir)?;
        // A deep queue absorbs bursts; when it is full, senders wait, which slows only the
        // environments that flood their output.
        let (tx, rx) = mpsc::channel(4096);
        let (feed, _) = broadcast::channel(1024);
        let sink = LogSink {
            tx,
            feed: feed.clone(),
            dir: Arc::new(dir.clone()),
        };
        std::thread::Builder::new()
            .name("ember-logs".into())
            .spawn(move || write_loop(rx, &dir, max_file_bytes, &feed))?;
        Ok(sink)
    }

    /// Appends `data` to `function`'s log.
    pub async fn write(&self, function: &Arc<str>, data: Bytes) {
        let _ = self
            .tx
            .send(LogChunk {
                function: Arc::clone(function),
                data,
            })
            .await;
    }

    /// The live feed of every function's log.
    pub fn subscribe(&self) -> broadcast::Receiver<LogChunk> {
        self.feed.subscribe()
    }

    /// The log file of `function` (the current one, not the rotated one).
    pub fn path(&self, function: &str) -> PathBuf {
        self.dir.join(format!("{function}.log"))
    }

    /// Removes a function's log files.
    pub fn remove(&self, function: &str) {
        let path = self.path(function);
        let _ = std::fs::remove_file(rotated(&path));
        let _ = std::fs::remove_file(path);
    }
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

fn write_loop(
    mut rx: mpsc::Receiver<LogChunk>,
    dir: &Path,
    max: u64,
    feed: &broadcast::Sender<LogChunk>,
) {
    let mut open: HashMap<Arc<str>, OpenLog> = HashMap::new();
    while let Some(chunk) = rx.blocking_recv() {
        let path = dir.join(format!("{}.log", chunk.function));
        if let Err(e) = append(&mut open, &path, &chunk, max) {
            tracing::warn!(function = %chunk.function, error = %e, "could not write to the function log");
            open.remove(&chunk.function);
        }
        let _ = feed.send(chunk);
    }
}

fn append(
    open: &mut HashMap<Arc<str>, OpenLog>,
    path: &Path,
    chunk: &LogChunk,
    max: u64,
) -> io::Result<()> {
    let log = match open.get_mut(&chunk.function) {
        // A deleted function's file is gone: reopen rather than write to an unlinked inode.
        Some(log) if path.exists() => log,
        _ => {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            let len = file.metadata()?.len();
            open.insert(Arc::clone(&chunk.function), OpenLog { file, len });
            open.get_mut(&chunk.function).expect("just inserted")
        }
    };
    if log.len > 0 && log.len + chunk.data.len() as u64 > max {
        std::fs::rename(path, rotated(path))?;
        log.file = OpenOptions::new().create(true).append(true).open(path)?;
        log.len = 0;
    }
    log.file.write_all(&chunk.data)?;
    log.len += chunk.data.len() as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_log_rotates_and_keeps_the_newest_lines() {
        let dir = std::env::temp_dir().join(format!("ember-logs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sink = LogSink::start(dir.clone(), 100).unwrap();
        let mut feed = sink.subscribe();
        let f: Arc<str> = Arc::from("f");
        for i in 0..30 {
            sink.write(&f, Bytes::from(format!("line {i:03}\n"))).await;
        }
        // The feed sees each chunk after it is on disk.
        for _ in 0..30 {
            feed.recv().await.unwrap();
        }
        let current = std::fs::read_to_string(sink.path("f")).unwrap();
        let old = std::fs::read_to_string(rotated(&sink.path("f"))).unwrap();
        assert!(current.len() <= 100 && old.len() <= 100);
        assert!(current.ends_with("line 029\n"), "{current}");
        assert!(!current.contains("line 000") && !old.contains("line 000"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
