//! `ember echo-runtime`: the smallest useful `provided` runtime — it answers every event
//! with the event itself. `ember bench` packages the `ember` binary with a `bootstrap`
//! that runs this, so the benchmark's `provided` numbers measure the platform, not an
//! interpreter.
//!
//! For the benchmark's other workloads, the event `{"spin_ms":N}` keeps a core busy for N
//! ms and `{"sleep_ms":N}` waits N ms before answering; `INIT_SPIN_MS=N` in the environment
//! keeps a core busy for N ms before the first `/next` (a heavy init).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Context;

pub fn run() -> anyhow::Result<()> {
    let api =
        std::env::var("AWS_LAMBDA_RUNTIME_API").context("AWS_LAMBDA_RUNTIME_API is not set")?;
    if let Some(ms) = std::env::var("INIT_SPIN_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        spin(Duration::from_millis(ms));
    }
    let mut stream = TcpStream::connect(&api)
        .with_context(|| format!("cannot reach the Runtime API at {api}"))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        write!(
            stream,
            "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: {api}\r\n\r\n"
        )?;
        let (request_id, event) = read_response(&mut reader)?;
        let request_id = request_id.context("the Runtime API sent no request id")?;
        if let Some(ms) = millis(&event, b"{\"spin_ms\":") {
            spin(ms);
        } else if let Some(ms) = millis(&event, b"{\"sleep_ms\":") {
            std::thread::sleep(ms);
        }
        let mut request = format!(
            "POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\nHost: {api}\r\nContent-Length: {}\r\n\r\n",
            event.len()
        )
        .into_bytes();
        request.extend_from_slice(&event);
        stream.write_all(&request)?;
        read_response(&mut reader)?;
    }
}

/// `N` of an event that is exactly `<prefix>N}`.
fn millis(event: &[u8], prefix: &[u8]) -> Option<Duration> {
    let digits = event.strip_prefix(prefix)?.strip_suffix(b"}")?;
    let ms = std::str::from_utf8(digits).ok()?.trim().parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Keeps this core busy for `d`.
fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Reads one HTTP response: the request id header, if any, and the body.
fn read_response(reader: &mut BufReader<TcpStream>) -> anyhow::Result<(Option<String>, Vec<u8>)> {
    let mut line = String::new();
    let mut length = 0usize;
    let mut request_id = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            anyhow::bail!("the Runtime API closed the connection");
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse()?;
            } else if name.eq_ignore_ascii_case("lambda-runtime-aws-request-id") {
                request_id = Some(value.to_owned());
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((request_id, body))
}
