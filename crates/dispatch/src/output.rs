//! The pump that carries an environment's stdout and stderr into its function's log.
//!
//! Output is forwarded as it arrives (so `ember logs --follow` shows a long invocation as
//! it runs) and the last few KB are kept for the invocation's `X-Amz-Log-Result`. Because a
//! runtime writes its output before it posts its response, everything an invocation printed
//! is already in the pipe when the response arrives: [`Output::collect`] drains the pipe
//! without waiting and returns what the invocation printed.
//!
//! The pump task and `collect` share the pipe and one lock; whoever holds the lock reads
//! *and* logs what it read before releasing it, so the function's lines always reach the
//! log before the `END` line written after `collect`. `collect` drains the pipe itself
//! rather than asking the pump: on the invoke path that is one `read` returning `EAGAIN`,
//! not a round trip through another task.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use ember_core::limits::LOG_TAIL_BYTES;
use tokio::net::unix::pipe;
use tokio::sync::Mutex;

use crate::logs::LogSink;

/// Most output one invocation keeps in the log. 1 MB is far more than a useful log of one
/// call; past it, a function is flooding, and only it should pay.
pub const INVOCATION_OUTPUT_BYTES: u64 = 1024 * 1024;
/// Longest incomplete line held back before it is written anyway.
const MAX_PARTIAL_LINE: usize = 64 * 1024;
/// Most output one environment keeps over its life (64 MB: eight full log files).
pub const ENVIRONMENT_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;

struct Drain {
    /// What was printed since the last `collect`: its last few KB.
    captured: Vec<u8>,
    /// The end of a line not yet complete: held back so that another environment of the
    /// function, writing to the same log, cannot land inside it.
    partial: Vec<u8>,
    open: bool,
    buf: Box<[u8]>,
    /// Bytes kept since the last `collect`, and over the environment's life.
    invocation_bytes: u64,
    environment_bytes: u64,
    /// Bytes dropped since the last `collect`.
    dropped: u64,
}

struct Shared {
    /// The runtime's stdout and stderr; `None` for an in-process environment, whose
    /// output is handed over with [`Output::push`].
    pipe: Option<pipe::Receiver>,
    drain: Mutex<Drain>,
    function: Arc<str>,
    logs: LogSink,
}

/// Handle on one environment's output.
pub struct Output {
    shared: Arc<Shared>,
    pump: Option<tokio::task::AbortHandle>,
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(pump) = &self.pump {
            pump.abort();
        }
    }
}

impl Output {
    /// Starts pumping `fd` into `function`'s log.
    pub fn start(fd: OwnedFd, function: Arc<str>, logs: LogSink) -> io::Result<Output> {
        let pipe = pipe::Receiver::from_owned_fd(fd)?;
        let mut output = Output::new(Some(pipe), function, logs);
        output.pump = Some(tokio::spawn(pump(Arc::clone(&output.shared))).abort_handle());
        Ok(output)
    }

    /// The output of an environment without a runtime process: what each invocation
    /// printed is handed over with [`Output::push`].
    pub fn in_process(function: Arc<str>, logs: LogSink) -> Output {
        Output::new(None, function, logs)
    }

    fn new(pipe: Option<pipe::Receiver>, function: Arc<str>, logs: LogSink) -> Output {
        let shared = Arc::new(Shared {
            pipe,
            drain: Mutex::new(Drain {
                captured: Vec::new(),
                partial: Vec::new(),
                open: true,
                buf: vec![0u8; 64 * 1024].into(),
                invocation_bytes: 0,
                environment_bytes: 0,
                dropped: 0,
            }),
            function,
            logs,
        });
        Output { shared, pump: None }
    }

    /// Logs what an in-process invocation printed, as the pump would have, after `start`
    /// (its START line) if it is there; with nothing printed, `start` is left for the
    /// caller to log with the lines that end the invocation.
    pub async fn push(&self, start: &mut Option<String>, printed: Bytes) {
        if printed.is_empty() {
            return;
        }
        if let Some(start) = start.take() {
            self.shared
                .logs
                .write_platform(&self.shared.function, Bytes::from(start));
        }
        let mut drain = self.shared.drain.lock().await;
        self.shared.take_in(&mut drain, printed).await;
    }

    /// Everything printed since the last call (its last 4 KB), once the pipe is drained.
    /// Starts the next invocation's output budget.
    pub async fn collect(&self) -> Bytes {
        let mut drain = self.shared.drain.lock().await;
        self.shared.drain_now(&mut drain).await;
        // The invocation is over: a last line without its newline goes out now.
        self.shared.flush_partial(&mut drain).await;
        if drain.dropped > 0 {
            let note = format!("[ember: {} bytes of output were dropped]\n", drain.dropped);
            self.shared.keep(&mut drain, Bytes::from(note)).await;
            drain.dropped = 0;
        }
        drain.invocation_bytes = 0;
        Bytes::from(std::mem::take(&mut drain.captured))
    }
}

async fn pump(shared: Arc<Shared>) {
    let Some(pipe) = &shared.pipe else {
        return;
    };
    loop {
        if pipe.readable().await.is_err() {
            return;
        }
        let mut drain = shared.drain.lock().await;
        shared.drain_now(&mut drain).await;
        if !drain.open {
            shared.flush_partial(&mut drain).await;
            return;
        }
    }
}

impl Shared {
    /// Sends kept output to the invocation's tail, and its complete lines to the log.
    async fn keep(&self, drain: &mut Drain, data: Bytes) {
        drain.captured.extend_from_slice(&data);
        if drain.captured.len() > 2 * LOG_TAIL_BYTES {
            let cut = drain.captured.len() - LOG_TAIL_BYTES;
            drain.captured.drain(..cut);
        }
        let complete = match data.iter().rposition(|b| *b == b'\n') {
            Some(end) => {
                let mut lines = std::mem::take(&mut drain.partial);
                lines.extend_from_slice(&data[..=end]);
                drain.partial.extend_from_slice(&data[end + 1..]);
                Some(Bytes::from(lines))
            }
            None => {
                drain.partial.extend_from_slice(&data);
                None
            }
        };
        if let Some(lines) = complete {
            self.logs.write_output(&self.function, lines).await;
        }
        // A "line" this long is not one: let it through.
        if drain.partial.len() > MAX_PARTIAL_LINE {
            self.flush_partial(drain).await;
        }
    }

    /// Sends the held-back end of a line to the log.
    async fn flush_partial(&self, drain: &mut Drain) {
        if !drain.partial.is_empty() {
            let rest = Bytes::from(std::mem::take(&mut drain.partial));
            self.logs.write_output(&self.function, rest).await;
        }
    }

    /// Reads and logs what the pipe holds now.
    async fn drain_now(&self, drain: &mut Drain) {
        let Some(pipe) = &self.pipe else {
            return;
        };
        while drain.open {
            match pipe.try_read(&mut drain.buf) {
                Ok(0) => drain.open = false,
                Ok(n) => {
                    let data = Bytes::copy_from_slice(&drain.buf[..n]);
                    self.take_in(drain, data).await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => drain.open = false,
            }
        }
    }

    /// Keeps what the function printed, within the invocation's and the environment's caps.
    async fn take_in(&self, drain: &mut Drain, mut data: Bytes) {
        // Past a cap the output is still taken (the function never blocks on it), but
        // what is taken is dropped, with one marker line.
        let n = data.len();
        let allowed = (INVOCATION_OUTPUT_BYTES - drain.invocation_bytes)
            .min(ENVIRONMENT_OUTPUT_BYTES - drain.environment_bytes);
        let kept = (n as u64).min(allowed) as usize;
        if kept > 0 {
            drain.invocation_bytes += kept as u64;
            drain.environment_bytes += kept as u64;
            self.keep(drain, data.split_to(kept)).await;
        }
        if kept < n {
            if drain.dropped == 0 {
                let which = if drain.environment_bytes >= ENVIRONMENT_OUTPUT_BYTES {
                    format!("this environment's output passed {ENVIRONMENT_OUTPUT_BYTES} bytes")
                } else {
                    format!("this invocation's output passed {INVOCATION_OUTPUT_BYTES} bytes")
                };
                self.keep(
                    drain,
                    Bytes::from(format!("\n[ember: {which}; the rest is dropped]\n")),
                )
                .await;
            }
            drain.dropped += (n - kept) as u64;
        }
    }
}
