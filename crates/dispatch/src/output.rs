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

struct Drain {
    /// What was printed since the last `collect`: its last few KB.
    captured: Vec<u8>,
    open: bool,
    buf: Box<[u8]>,
}

struct Shared {
    pipe: pipe::Receiver,
    drain: Mutex<Drain>,
    function: Arc<str>,
    logs: LogSink,
}

/// Handle on one environment's output.
pub struct Output {
    shared: Arc<Shared>,
    pump: tokio::task::AbortHandle,
}

impl Drop for Output {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Output {
    /// Starts pumping `fd` into `function`'s log.
    pub fn start(fd: OwnedFd, function: Arc<str>, logs: LogSink) -> io::Result<Output> {
        let shared = Arc::new(Shared {
            pipe: pipe::Receiver::from_owned_fd(fd)?,
            drain: Mutex::new(Drain {
                captured: Vec::new(),
                open: true,
                buf: vec![0u8; 64 * 1024].into(),
            }),
            function,
            logs,
        });
        let pump = tokio::spawn(pump(Arc::clone(&shared))).abort_handle();
        Ok(Output { shared, pump })
    }

    /// Everything printed since the last call (its last 4 KB), once the pipe is drained.
    pub async fn collect(&self) -> Bytes {
        let mut drain = self.shared.drain.lock().await;
        self.shared.drain_now(&mut drain).await;
        Bytes::from(std::mem::take(&mut drain.captured))
    }
}

async fn pump(shared: Arc<Shared>) {
    loop {
        if shared.pipe.readable().await.is_err() {
            return;
        }
        let mut drain = shared.drain.lock().await;
        shared.drain_now(&mut drain).await;
        if !drain.open {
            return;
        }
    }
}

impl Shared {
    /// Reads and logs what the pipe holds now.
    async fn drain_now(&self, drain: &mut Drain) {
        while drain.open {
            match self.pipe.try_read(&mut drain.buf) {
                Ok(0) => drain.open = false,
                Ok(n) => {
                    let data = Bytes::copy_from_slice(&drain.buf[..n]);
                    drain.captured.extend_from_slice(&data);
                    if drain.captured.len() > 2 * LOG_TAIL_BYTES {
                        let cut = drain.captured.len() - LOG_TAIL_BYTES;
                        drain.captured.drain(..cut);
                    }
                    self.logs.write_output(&self.function, data).await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => drain.open = false,
            }
        }
    }
}
