//! A guest's stdout or stderr, kept in memory up to a cap.
//!
//! Past the cap the guest's writes still succeed and the bytes are counted, not kept: a
//! module that floods its output is not made to fail by it (wasmtime's own memory pipe
//! traps the guest instead), and the host keeps only what it will use.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Default)]
struct Kept {
    bytes: BytesMut,
    dropped: u64,
}

/// One output stream of one instance. Clones share the same buffer.
#[derive(Clone)]
pub struct Capture {
    cap: usize,
    kept: Arc<Mutex<Kept>>,
}

impl Capture {
    pub fn new(cap: usize) -> Capture {
        Capture {
            cap,
            kept: Arc::default(),
        }
    }

    /// What was kept, and how many bytes past the cap were dropped.
    pub fn take(&self) -> (Bytes, u64) {
        let mut kept = self.kept.lock().expect("capture lock");
        let dropped = std::mem::take(&mut kept.dropped);
        (std::mem::take(&mut kept.bytes).freeze(), dropped)
    }

    fn keep(&self, data: &[u8]) {
        let mut kept = self.kept.lock().expect("capture lock");
        let room = self.cap.saturating_sub(kept.bytes.len());
        let n = data.len().min(room);
        kept.bytes.extend_from_slice(&data[..n]);
        kept.dropped += (data.len() - n) as u64;
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Writes never wait and are never refused.
const PERMIT: usize = 1024 * 1024;

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
