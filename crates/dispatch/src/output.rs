//! The pump that carries an environment's stdout and stderr into its function's log.
//!
//! Output is forwarded as it arrives (so `ember logs --follow` shows a long invocation as
//! it runs) and the last few KB are kept for the invocation's `X-Amz-Log-Result`. Because a
//! runtime writes its output before it posts its response, everything an invocation printed
//! is already in the pipe when the response arrives: [`Output::collect`] drains the pipe
//! without waiting and returns what the invocation printed.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use ember_core::limits::LOG_TAIL_BYTES;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::logs::LogSink;

/// Handle on one environment's output pump.
pub struct Output {
    collect: mpsc::Sender<oneshot::Sender<Bytes>>,
}

impl Output {
    /// Starts pumping `fd` into `function`'s log.
    pub fn start(fd: OwnedFd, function: Arc<str>, logs: LogSink) -> io::Result<Output> {
        let pipe = pipe::Receiver::from_owned_fd(fd)?;
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(pump(pipe, rx, function, logs));
        Ok(Output { collect: tx })
    }

    /// Everything printed since the last call (its last 4 KB), once the pipe is drained.
    pub async fn collect(&self) -> Bytes {
        let (tx, rx) = oneshot::channel();
        if self.collect.send(tx).await.is_err() {
            return Bytes::new();
        }
        rx.await.unwrap_or_default()
    }
}

async fn pump(
    pipe: pipe::Receiver,
    mut requests: mpsc::Receiver<oneshot::Sender<Bytes>>,
    function: Arc<str>,
    logs: LogSink,
) {
    let mut captured: Vec<u8> = Vec::new();
    let mut open = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            ready = pipe.readable(), if open => {
                if ready.is_err() {
                    open = false;
                    continue;
                }
                open = drain(&pipe, &mut buf, &mut captured, &function, &logs).await;
            }
            request = requests.recv() => {
                let Some(reply) = request else { return };
                if open {
                    open = drain(&pipe, &mut buf, &mut captured, &function, &logs).await;
                }
                let _ = reply.send(Bytes::from(std::mem::take(&mut captured)));
            }
        }
    }
}

/// Reads what the pipe holds now. Returns whether the pipe is still open.
async fn drain(
    pipe: &pipe::Receiver,
    buf: &mut [u8],
    captured: &mut Vec<u8>,
    function: &Arc<str>,
    logs: &LogSink,
) -> bool {
    loop {
        match pipe.try_read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                let data = Bytes::copy_from_slice(&buf[..n]);
                captured.extend_from_slice(&data);
                if captured.len() > 2 * LOG_TAIL_BYTES {
                    captured.drain(..captured.len() - LOG_TAIL_BYTES);
                }
                logs.write(function, data).await;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}
