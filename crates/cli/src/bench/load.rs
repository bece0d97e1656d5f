//! The benchmark's load generator. Each client holds one HTTP/1.1 keep-alive connection of
//! its own (no shared pool to contend on) and either sends its next request as soon as the
//! previous answer is in (a closed loop: throughput and latency under a given concurrency)
//! or sends on a schedule (an open loop: latency at a given request rate). Every server,
//! Ember and baselines alike, is driven by this same code.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One request, sent again and again.
#[derive(Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Bytes,
}

impl Request {
    pub fn post(path: &str, body: impl Into<Bytes>) -> Request {
        Request {
            method: Method::POST,
            path: path.to_owned(),
            body: body.into(),
        }
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

/// One client connection to `base` (`http://host:port`).
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(base: &str) -> anyhow::Result<Connection> {
        let host = base
            .strip_prefix("http://")
            .context("the load generator speaks plain http")?
            .trim_end_matches('/')
            .to_owned();
        let stream = tokio::net::TcpStream::connect(&host)
            .await
            .with_context(|| format!("cannot connect to {host}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Connection { sender, host })
    }

    /// Sends `request` and reads the whole answer; a status other than 2xx or a function
    /// error is an error (a benchmark of failures would measure the wrong thing).
    async fn send(&mut self, request: &Request) -> anyhow::Result<()> {
        self.sender.ready().await?;
        let req = hyper::Request::builder()
            .method(request.method.clone())
            .uri(&request.path)
            .header("host", &self.host)
            .body(Full::new(request.body.clone()))?;
        let response = self.sender.send_request(req).await?;
        let status = response.status();
        let function_error = response.headers().contains_key("x-amz-function-error");
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() || function_error {
            bail!(
                "{} answered {status}{}: {}",
                request.path,
                if function_error {
                    " with a function error"
                } else {
                    ""
                },
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        Ok(())
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
        connections.push(Connection::open(base).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    match stop {
                        Stop::Count(n) if latencies.len() >= n => break,
                        Stop::After(d) if start.elapsed() >= d => break,
                        _ => {}
                    }
                    let t = Instant::now();
                    connection.send(&request).await?;
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
        opened.push(Connection::open(base).await?);
    }
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(i, mut connection)| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut free_at = start;
                for k in (i..total).step_by(connections) {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    let sent = tokio::time::Instant::now();
                    let from = if free_at > due { due } else { sent };
                    connection.send(&request).await?;
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

    #[tokio::test]
    async fn a_failed_answer_fails_the_run() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(
                    hyper::Response::builder()
                        .status(500)
                        .body(Full::new(Bytes::from_static(b"broken")))
                        .unwrap(),
                )
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let request = Request::post("/", &b"{}"[..]);
        let error = sequential(&base, &request, 1).await.unwrap_err();
        assert!(error.to_string().contains("500"), "{error}");
    }
}
