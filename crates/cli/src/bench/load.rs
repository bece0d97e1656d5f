//! The benchmark's load generator. Each client holds one HTTP/1.1 keep-alive connection of
//! its own (no shared pool to contend on) and either sends its next request as soon as the
//! previous answer is in (a closed loop: throughput and latency under a given concurrency)
//! or sends on a schedule (an open loop: latency at a given request rate). Every server,
//! Ember and baselines alike, is driven by this same code.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request, sent again and again: always a POST (an empty body is sent as one).
#[derive(Clone)]
pub struct Request {
    pub path: String,
    pub body: Bytes,
}

impl Request {
    pub fn post(path: &str, body: impl Into<Bytes>) -> Request {
        Request {
            path: path.to_owned(),
            body: body.into(),
        }
    }

    /// The whole request as it goes on the wire to `host`.
    fn encode(&self, host: &str) -> Vec<u8> {
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n\r\n",
            self.path,
            self.body.len()
        );
        let mut wire = Vec::with_capacity(head.len() + self.body.len());
        wire.extend_from_slice(head.as_bytes());
        wire.extend_from_slice(&self.body);
        wire
    }
}

/// Latencies of every request of a run, and how long the run took.
pub struct Sampled {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Sampled {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// When a closed loop stops.
#[derive(Clone, Copy)]
pub enum Stop {
    /// After this many requests per client.
    Count(usize),
    /// After this long.
    After(Duration),
}

/// One client connection to `base` (`http://host:port`), sending one request again and
/// again.
///
/// It speaks HTTP/1.1 itself rather than through a client library: the request is encoded
/// once, and each call is one write and (for a small answer) one read on the client's own
/// task, with `httparse` reading the answer's head. A client library took twice the CPU
/// per request (a task for the connection beside the caller's, and a request built each
/// time), and on a host whose cores the load generator shares with the server under test,
/// what the generator spends is taken from a server that uses every core (Ember, the
/// direct hop) but not from one that runs on one thread (workerd).
struct Connection {
    stream: TcpStream,
    /// The request's path, for errors.
    path: String,
    /// The request, encoded.
    wire: Vec<u8>,
    /// What was read and not yet consumed.
    buffer: Vec<u8>,
}

/// The most headers an answer may have.
const MAX_HEADERS: usize = 64;

impl Connection {
    async fn open(base: &str, request: &Request) -> anyhow::Result<Connection> {
        let host = base
            .strip_prefix("http://")
            .context("the load generator speaks plain http")?
            .trim_end_matches('/');
        let stream = TcpStream::connect(host)
            .await
            .with_context(|| format!("cannot connect to {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            path: request.path.clone(),
            wire: request.encode(host),
            buffer: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends the request and reads the whole answer; a status other than 2xx or a function
    /// error is an error (a benchmark of failures would measure the wrong thing).
    async fn send(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.wire).await?;
        let head = loop {
            if let Some(head) = Head::parse(&self.buffer)? {
                break head;
            }
            self.fill().await?;
        };
        match head.framing {
            Framing::Length(n) => {
                let end = head.len + n;
                while self.buffer.len() < end {
                    self.fill().await?;
                }
                // Read in place: the body is looked at only if the answer failed.
                let answered = head.check(&self.path, &self.buffer[head.len..end]);
                self.buffer.drain(..end);
                answered
            }
            Framing::Chunked => {
                self.buffer.drain(..head.len);
                let body = self.chunked().await?;
                head.check(&self.path, &body)
            }
        }
    }

    /// Reads more of the answer; the server closing the connection mid-answer is an error.
    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.buffer.capacity() - self.buffer.len() < 4096 {
            self.buffer.reserve(self.buffer.capacity().max(16 * 1024));
        }
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            bail!("the server closed the connection before its answer was whole");
        }
        Ok(())
    }

    /// A chunked body, whole.
    async fn chunked(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let (start, size) = loop {
                match httparse::parse_chunk_size(&self.buffer) {
                    Ok(httparse::Status::Complete(sized)) => break sized,
                    Ok(httparse::Status::Partial) => self.fill().await?,
                    Err(_) => bail!("the server sent a malformed chunk"),
                }
            };
            let size = usize::try_from(size)?;
            // The chunk and the CRLF after it (the last chunk: no trailers, just CRLF).
            while self.buffer.len() < start + size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buffer[start..start + size]);
            self.buffer.drain(..start + size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

/// What an answer's head says.
struct Head {
    status: u16,
    framing: Framing,
    function_error: bool,
    /// Its length in bytes.
    len: usize,
}

/// How an answer's body ends.
enum Framing {
    Length(usize),
    Chunked,
}

impl Head {
    /// The head at the start of `read`, if it is all there.
    fn parse(read: &[u8]) -> anyhow::Result<Option<Head>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(read) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => bail!("the server sent a malformed answer: {e}"),
        };
        let mut framing = None;
        let mut function_error = false;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .context("the server sent a malformed content-length")?;
                framing = Some(Framing::Length(n));
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                framing = Some(Framing::Chunked);
            } else if header.name.eq_ignore_ascii_case("x-amz-function-error") {
                function_error = true;
            }
        }
        Ok(Some(Head {
            status: response.code.unwrap_or_default(),
            // No length and not chunked: a body-less answer (keep-alive needs one of them).
            framing: framing.unwrap_or(Framing::Length(0)),
            function_error,
            len,
        }))
    }

    /// An error unless the answer (its `body`) is a 2xx without a function error.
    fn check(&self, path: &str, body: &[u8]) -> anyhow::Result<()> {
        if (200..300).contains(&self.status) && !self.function_error {
            return Ok(());
        }
        bail!(
            "{path} answered {}{}: {}",
            self.status,
            if self.function_error {
                " with a function error"
            } else {
                ""
            },
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    }
}

/// `clients` clients at once, each sending its next request when its last is answered.
pub async fn closed(
    base: &str,
    request: &Request,
    clients: usize,
    stop: Stop,
) -> anyhow::Result<Sampled> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(Connection::open(base, request).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    match stop {
                        Stop::Count(n) if latencies.len() >= n => break,
                        Stop::After(d) if start.elapsed() >= d => break,
                        _ => {}
                    }
                    let t = Instant::now();
                    connection.send().await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Sampled {
        latencies,
        elapsed: start.elapsed(),
    })
}

/// `n` requests one after another.
pub async fn sequential(base: &str, request: &Request, n: usize) -> anyhow::Result<Vec<Duration>> {
    Ok(closed(base, request, 1, Stop::Count(n)).await?.latencies)
}

/// Requests at `rate` per second for `duration`, spread evenly over `connections`
/// connections. A request whose connection is still busy with the one before goes out
/// late, and its latency counts from when it should have gone (the wait is the server's
/// doing); one that is on time counts from when it went (the timer's wake-up is not).
pub async fn open(
    base: &str,
    request: &Request,
    rate: f64,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<Vec<Duration>> {
    let total = (rate * duration.as_secs_f64()) as usize;
    let mut opened = Vec::with_capacity(connections);
    for _ in 0..connections {
        opened.push(Connection::open(base, request).await?);
    }
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(i, mut connection)| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut free_at = start;
                for k in (i..total).step_by(connections) {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    let sent = tokio::time::Instant::now();
                    let from = if free_at > due { due } else { sent };
                    connection.send().await?;
                    free_at = tokio::time::Instant::now();
                    latencies.push(free_at - from);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(super::super::serve_echo(listener));
        base
    }

    #[tokio::test]
    async fn a_closed_loop_makes_each_clients_requests() {
        let base = echo().await;
        let request = Request::post("/", &b"{}"[..]);
        let sampled = closed(&base, &request, 4, Stop::Count(25)).await.unwrap();
        assert_eq!(sampled.latencies.len(), 100);
        assert!(sampled.rate() > 0.0);
        let timed = closed(&base, &request, 2, Stop::After(Duration::from_millis(100)))
            .await
            .unwrap();
        assert!(timed.elapsed >= Duration::from_millis(100));
        assert!(!timed.latencies.is_empty());
    }

    #[tokio::test]
    async fn an_open_loop_sends_at_its_rate() {
        let base = echo().await;
        let request = Request::post("/", &b"{}"[..]);
        let start = Instant::now();
        let latencies = open(&base, &request, 500.0, Duration::from_millis(200), 4)
            .await
            .unwrap();
        assert_eq!(latencies.len(), 100);
        // The last request is due at 198 ms: the run cannot have been faster.
        assert!(start.elapsed() >= Duration::from_millis(198));
    }

    /// A server answering every request on a connection with `parts`, each written on
    /// its own (the client sees the answer arrive in pieces).
    async fn canned(parts: &'static [&'static [u8]]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut read = Vec::new();
            loop {
                // A whole request: its head, then as many bytes as its content-length.
                let whole = loop {
                    let mut headers = [httparse::EMPTY_HEADER; 16];
                    let mut request = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(head)) = request.parse(&read) {
                        let length: usize = request
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                            .unwrap_or(0);
                        if read.len() >= head + length {
                            break head + length;
                        }
                    }
                    if stream.read_buf(&mut read).await.unwrap() == 0 {
                        return;
                    }
                };
                read.drain(..whole);
                for part in parts {
                    stream.write_all(part).await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        base
    }

    #[tokio::test]
    async fn chunked_answers_arriving_in_pieces_are_read_whole() {
        let base = canned(&[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n",
            b"\r\n5\r\nhel",
            b"lo\r\n6\r\n world\r\n0\r",
            b"\n\r\n",
        ])
        .await;
        let request = Request::post("/", &b"{}"[..]);
        // Three answers in a row on one connection: each read to its end and no further.
        let latencies = sequential(&base, &request, 3).await.unwrap();
        assert_eq!(latencies.len(), 3);
    }

    #[tokio::test]
    async fn a_megabyte_each_way_travels_whole() {
        let base = echo().await;
        let request = Request::post("/", vec![b'x'; 1 << 20]);
        let sampled = closed(&base, &request, 2, Stop::Count(3)).await.unwrap();
        assert_eq!(sampled.latencies.len(), 6);
    }

    #[tokio::test]
    async fn a_function_error_fails_the_run() {
        let base = canned(&[
            b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\nX-Amz-Function-Error: Unhandled\r\n\r\n",
            b"{\"errorType\":\"Boom\"}",
        ])
        .await;
        let request = Request::post("/fn", &b"{}"[..]);
        let error = sequential(&base, &request, 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("function error"), "{error}");
        assert!(error.contains("Boom"), "{error}");
    }

    #[tokio::test]
    async fn a_connection_closed_mid_answer_fails_the_run() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut read = [0u8; 1024];
            let _ = stream.read(&mut read).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
                .await
                .unwrap();
        });
        let request = Request::post("/", &b"{}"[..]);
        let error = sequential(&base, &request, 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("closed the connection"), "{error}");
    }

    #[tokio::test]
    async fn a_failed_answer_fails_the_run() {
        let base =
            canned(&[b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 6\r\n\r\nbroken"])
                .await;
        let request = Request::post("/", &b"{}"[..]);
        let error = sequential(&base, &request, 1).await.unwrap_err();
        assert!(error.to_string().contains("500"), "{error}");
    }
}
