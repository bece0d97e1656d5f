//! What a runtime costs with no platform around it: AWS's Python runtime interface client,
//! `awslambdaric`, polling a minimal Runtime API served here (`/next` hands over a queued
//! event, `/response` answers it; nothing else).

use std::collections::HashMap;
use std::convert::Infallible;
use std::ops::ControlFlow;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};

use super::load::{self, Request};
use super::results::Latency;

const HANDLER: &str = "def handler(event, context):\n    return event\n";

struct Api {
    events: tokio::sync::Mutex<mpsc::Receiver<(String, Bytes)>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Bytes>>>,
    first_next: Mutex<Option<Instant>>,
}

async fn handle(
    api: Arc<Api>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET && path == "/2018-06-01/runtime/invocation/next" {
        api.first_next
            .lock()
            .expect("first next")
            .get_or_insert_with(Instant::now);
        let next = api.events.lock().await.recv().await;
        let Some((id, event)) = next else {
            return Ok(Response::builder()
                .status(StatusCode::GONE)
                .body(Full::default())
                .expect("a response"));
        };
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            + 30_000;
        // awslambdaric takes the event for JSON only when it is told so.
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", &id)
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:bare",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000",
            )
            .body(Full::new(event))
            .expect("a response"));
    }
    let body = super::body_bytes(req).await;
    let answered = path
        .strip_prefix("/2018-06-01/runtime/invocation/")
        .and_then(|rest| rest.rsplit_once('/'))
        .and_then(|(id, _)| api.waiting.lock().expect("waiting").remove(id));
    if let Some(tx) = answered {
        let _ = tx.send(body);
    }
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("a response"))
}

/// What [`measure`] found.
pub struct Measured {
    /// `n` events, one at a time, after a warm-up.
    pub awslambdaric: Latency,
    /// Ember's python3 hello, as many calls, taken in turns with them.
    pub ember: Latency,
    /// Spawn to the first `/next`, `--cold` times.
    pub start: Latency,
}

/// Warm latency and start time of `python3 -m awslambdaric` on the bare Runtime API, its
/// warm events in [`super::TURNS`] turns with sequential calls of `ember` (a server and its
/// python3 hello), so that a drift of the machine moves both alike.
pub async fn measure(args: &super::BenchArgs, ember: (&str, &Request)) -> anyhow::Result<Measured> {
    super::section("awslambdaric on a bare Runtime API…", args).await;
    let (n, starts) = (args.warm, args.cold);
    let check = Command::new("python3")
        .args(["-c", "import awslambdaric"])
        .stderr(Stdio::null())
        .status()
        .context("no python3 on PATH")?;
    if !check.success() {
        bail!("python3 cannot import awslambdaric (pip install awslambdaric)");
    }
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("app.py"), HANDLER)?;
    let mut start_samples = Vec::new();
    let mut warm = Vec::new();
    let mut ember_warm = Vec::new();
    for round in 0..starts.max(1) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(1);
        let api = Arc::new(Api {
            events: tokio::sync::Mutex::new(rx),
            waiting: Mutex::new(HashMap::new()),
            first_next: Mutex::new(None),
        });
        let serving = Arc::clone(&api);
        let server = tokio::spawn(super::serve(listener, move |req| {
            handle(Arc::clone(&serving), req)
        }));
        let spawned = Instant::now();
        let mut child = Command::new("python3")
            .args(["-m", "awslambdaric", "app.handler"])
            .current_dir(dir.path())
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .env("PYTHONPATH", dir.path())
            .env("AWS_LAMBDA_FUNCTION_NAME", "bare")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start python3 -m awslambdaric")?;
        let first = super::poll_until(Duration::from_secs(20), Duration::from_millis(1), || {
            let first = *api.first_next.lock().expect("first next");
            let exited = child.try_wait();
            async move {
                if let Some(at) = first {
                    return Ok(ControlFlow::Break(at));
                }
                if let Some(status) = exited? {
                    bail!("awslambdaric exited before its first /next: {status}");
                }
                Ok(ControlFlow::Continue(
                    "awslambdaric has not asked for an event".to_owned(),
                ))
            }
        })
        .await
        .inspect_err(|_| {
            let _ = child.kill();
        })?;
        start_samples.push(first - spawned);
        if round == 0 {
            let (base, request) = ember;
            // Warm-up of both, then the turns.
            let mut sent = 0;
            bare_events(&api, &tx, &mut sent, n / 10).await?;
            load::sequential(base, request, n / 10).await?;
            for _ in 0..super::TURNS {
                let per_turn = n.div_ceil(super::TURNS);
                warm.extend(bare_events(&api, &tx, &mut sent, per_turn).await?);
                ember_warm.extend(load::sequential(base, request, per_turn).await?);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        server.abort();
    }
    Ok(Measured {
        awslambdaric: Latency::of(warm),
        ember: Latency::of(ember_warm),
        start: Latency::of(start_samples),
    })
}

/// `n` events handed to the runtime one at a time: each one's latency, from handing it over
/// to its answer.
async fn bare_events(
    api: &Api,
    tx: &mpsc::Sender<(String, Bytes)>,
    sent: &mut usize,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        *sent += 1;
        let id = format!("bench-{sent}");
        let (answer_tx, answer_rx) = oneshot::channel();
        api.waiting
            .lock()
            .expect("waiting")
            .insert(id.clone(), answer_tx);
        let t = Instant::now();
        tx.send((id, Bytes::from_static(super::workloads::HELLO)))
            .await
            .context("the Runtime API stopped")?;
        let answer = tokio::time::timeout(Duration::from_secs(10), answer_rx)
            .await
            .context("awslambdaric did not answer within 10 s")??;
        latencies.push(t.elapsed());
        let same = serde_json::from_slice::<serde_json::Value>(&answer).ok()
            == serde_json::from_slice::<serde_json::Value>(super::workloads::HELLO).ok();
        if !same {
            bail!(
                "awslambdaric answered {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
    Ok(latencies)
}
