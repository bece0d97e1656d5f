//! `ember bench`: Ember's invoke latency beside baselines measured in the same run.
//!
//! It starts a private server (temporary data directory, ephemeral port), deploys a
//! `provided` function (the compiled `ember echo-runtime`) and a Python function, and
//! measures:
//!
//! - **warm latency**: sequential invocations of a warm environment, p50 and p99, against a
//!   direct HTTP round trip to a trivial hyper server in its own process (`ember
//!   echo-server`), over the same kind of client. The same server inside the benchmark's
//!   own process is shown too, for reference: there client and server share a runtime and
//!   can hand requests over without a context switch, which no real hop does;
//! - **throughput**: invocations per second with several clients at once, against the same
//!   direct hop;
//! - **frozen warm latency**: the same calls with idle environments frozen (`FreezeIdle`),
//!   which costs a thaw before and a freeze after each call;
//! - **signed warm latency**: the same `provided` calls with every request SigV4-signed
//!   and verified (an access key is created on the private server, last);
//! - **cold start**: request in → response out when no environment exists (the function's
//!   configuration is touched before each sample to retire the previous environment),
//!   against `python3 -c pass` for Python and against exec'ing the same runtime for
//!   `provided`.
//!
//! - **per backend**: the warm, frozen and cold figures again with the functions on the
//!   `runc` and `gvisor` backends, where the host has them (cold starts also as a ratio to
//!   the `process` backend's).
//!
//! - **WebAssembly** (`wasm.rs`): a wasm hello world through Invoke and a function URL,
//!   its instantiation, cold start and memory per idle environment, and its throughput
//!   beside `workerd` and `deno` serving the same hello world.
//!
//! It prints a table with ratios and writes every figure to a JSON file.

mod wasm;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::client::Client;
use crate::commands::{FunctionSettings, create_or_update};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Sequential warm invocations per function.
    #[arg(long, default_value_t = 2000)]
    warm: usize,
    /// Cold starts per runtime.
    #[arg(long, default_value_t = 20)]
    cold: usize,
    /// Concurrent clients for the throughput figure.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Where to write the figures.
    #[arg(long, default_value = "ember-bench.json")]
    out: PathBuf,
    /// Where the peers (`workerd`, `deno`) are installed with npm: their binaries are
    /// looked for in `<peers>/node_modules/.bin`, then on PATH.
    #[arg(long, default_value = "bench-peers")]
    peers: PathBuf,
}

const PAYLOAD: &[u8] = br#"{"hello":"world"}"#;

/// Latency percentiles of a sample, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Summary {
    p50_us: f64,
    p99_us: f64,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6;
    Summary {
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

/// A private `ember server`.
struct Server {
    child: Child,
    endpoint: String,
    data_dir: PathBuf,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let data_dir = std::env::temp_dir().join(format!("ember-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut child = Command::new(std::env::current_exe()?)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .env("EMBER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("could not start the server")?;
        let stdout = child.stdout.take().context("no server stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(endpoint) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            let _ = child.kill();
            bail!("the server did not start (it printed {line:?})");
        };
        Ok(Server {
            endpoint: endpoint.to_owned(),
            child,
            data_dir,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `ember echo-server`: serves [`serve_echo`] and prints its address.
pub async fn echo_server() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}", listener.local_addr()?);
    serve_echo(listener).await;
    Ok(())
}

/// The echo server as a child process: the floor a real hop costs.
struct EchoProcess {
    child: Child,
    url: String,
}

impl EchoProcess {
    fn start() -> anyhow::Result<EchoProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("echo-server")
            .stdout(Stdio::piped())
            .spawn()
            .context("could not start the echo server")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no echo server stdout")?)
            .read_line(&mut line)?;
        Ok(EchoProcess {
            url: line.trim().to_owned(),
            child,
        })
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A trivial HTTP server inside this process (see the module docs for why it is only a
/// reference).
async fn direct_server() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_echo(listener));
    Ok(format!("http://{addr}"))
}

/// Answers every request with its body.
async fn serve_echo(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(body)))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn sequential(client: &Client, path: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let answer = client
            .request(Method::POST, path, &[], PAYLOAD.to_vec())
            .await?;
        samples.push(t.elapsed());
        if answer.status != 200 || answer.headers.contains_key("x-amz-function-error") {
            bail!(
                "{path} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    Ok(samples)
}

/// Requests per second with `clients` concurrent sequential clients, `n` requests in all.
async fn throughput(client: &Client, path: &str, clients: usize, n: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    let done = in_parallel(clients, || {
        let (client, path) = (client.clone(), path.to_owned());
        async move {
            sequential(&client, &path, n / clients)
                .await
                .map(|s| s.len())
        }
    })
    .await?;
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Runs `clients` tasks made by `task` at once; the sum of what they return.
async fn in_parallel<F, Fut>(clients: usize, task: F) -> anyhow::Result<usize>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send + 'static,
{
    let tasks: Vec<_> = (0..clients).map(|_| tokio::spawn(task())).collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

/// Enqueue latency of `n` sequential `Event` invocations of `name`.
async fn enqueue_latency(client: &Client, name: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let path = format!("/2015-03-31/functions/{name}/invocations");
    let event = [("x-amz-invocation-type", "Event")];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let answer = client
            .request(Method::POST, &path, &event, PAYLOAD.to_vec())
            .await?;
        samples.push(t.elapsed());
        if answer.status != 202 {
            bail!("{path} answered {} to an Event invoke", answer.status);
        }
    }
    Ok(samples)
}

/// Waits until `name` has no unfinished asynchronous events.
async fn events_drained(client: &Client, name: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let answer = client
            .request(Method::GET, "/ember/v1/events", &[], vec![])
            .await?;
        let body: serde_json::Value = serde_json::from_slice(&answer.body)?;
        let left: u64 = body["Functions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["Function"] == name)
            .map(|f| {
                ["Queued", "Retrying", "Running"]
                    .iter()
                    .map(|k| f[*k].as_u64().unwrap_or(0))
                    .sum::<u64>()
            })
            .sum();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} events of {name} still unfinished after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asynchronous events per second end to end: `n` events enqueued by `clients` clients
/// at once, until the last has run and been acknowledged (removed from the queue).
async fn event_throughput(
    client: &Client,
    name: &str,
    clients: usize,
    n: usize,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let sent = in_parallel(clients, || {
        let (client, name) = (client.clone(), name.to_owned());
        async move {
            enqueue_latency(&client, &name, n / clients)
                .await
                .map(|s| s.len())
        }
    })
    .await?;
    events_drained(client, name, Duration::from_secs(300)).await?;
    Ok(sent as f64 / start.elapsed().as_secs_f64())
}

async fn cold_starts(client: &Client, name: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let config = format!("/2015-03-31/functions/{name}/configuration");
    let invoke = format!("/2015-03-31/functions/{name}/invocations");
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        // A configuration change retires the warm environment: the next call starts cold.
        let body = serde_json::to_vec(&json!({ "Description": format!("cold sample {i}") }))?;
        client.call(Method::PUT, &config, &[], body).await?;
        let t = Instant::now();
        let answer = client
            .request(Method::POST, &invoke, &[], PAYLOAD.to_vec())
            .await?;
        samples.push(t.elapsed());
        if answer.status != 200 || answer.headers.contains_key("x-amz-function-error") {
            bail!("{name} failed: {}", String::from_utf8_lossy(&answer.body));
        }
    }
    Ok(samples)
}

/// Which peers could not be measured, and why.
fn peer_notes(wasm: &wasm::WasmFigures) -> String {
    [("workerd", &wasm.workerd), ("deno", &wasm.deno)]
        .iter()
        .filter_map(|(name, status)| status.as_ref().err().map(|e| format!("; {name}: {e}")))
        .collect()
}

/// The wasm URL's peak throughput over workerd's, if workerd ran.
fn best_ratio(wasm: &wasm::WasmFigures) -> Option<f64> {
    let url = wasm.throughput.iter().map(|r| r.url).fold(0.0, f64::max);
    let workerd = wasm
        .throughput
        .iter()
        .filter_map(|r| r.workerd)
        .fold(None, |best: Option<f64>, r| {
            Some(best.map_or(r, |b| b.max(r)))
        })?;
    Some(url / workerd)
}

fn time_command(n: usize, program: &str, args: &[&str]) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()?;
        samples.push(t.elapsed());
        if !status.success() {
            bail!("{program} {args:?} failed: {status}");
        }
    }
    Ok(samples)
}

/// One OCI backend's figures.
struct BackendFigures {
    isolation: &'static str,
    warm_provided: Summary,
    warm_python: Summary,
    frozen: Summary,
    cold_python: Summary,
    cold_provided: Summary,
}

/// Deploys the benchmark functions on `isolation` and measures them; `None` when the
/// server cannot run that isolation.
async fn backend_figures(
    client: &Client,
    isolation: &'static str,
    provided_zip: &[u8],
    python_zip: &[u8],
    args: &BenchArgs,
    warmup: usize,
) -> anyhow::Result<Option<BackendFigures>> {
    eprintln!("the {isolation} backend…");
    let provided = format!("bench-provided-{isolation}");
    let python = format!("bench-python-{isolation}");
    let settings = |runtime: &str, handler: Option<&str>| FunctionSettings {
        runtime: Some(runtime.into()),
        handler: handler.map(Into::into),
        memory: Some(1769),
        ..Default::default()
    };
    create_or_update(client, &provided, provided_zip, &settings("provided", None)).await?;
    create_or_update(
        client,
        &python,
        python_zip,
        &settings("python3", Some("app.handler")),
    )
    .await?;
    for name in [&provided, &python] {
        let body = serde_json::to_vec(&json!({ "Isolation": isolation }))?;
        let path = format!("/ember/v1/functions/{name}/settings");
        if client.call(Method::PUT, &path, &[], body).await.is_err() {
            return Ok(None);
        }
    }
    let n = args.warm;
    let mut warm = Vec::new();
    for name in [&provided, &python] {
        let path = format!("/2015-03-31/functions/{name}/invocations");
        sequential(client, &path, warmup).await?;
        warm.push(summarize(sequential(client, &path, n).await?));
    }
    let settings_path = format!("/ember/v1/functions/{provided}/settings");
    let freeze = |on: bool| serde_json::to_vec(&json!({ "FreezeIdle": on }));
    client
        .call(Method::PUT, &settings_path, &[], freeze(true)?)
        .await?;
    let path = format!("/2015-03-31/functions/{provided}/invocations");
    sequential(client, &path, warmup).await?;
    let frozen = summarize(sequential(client, &path, n).await?);
    client
        .call(Method::PUT, &settings_path, &[], freeze(false)?)
        .await?;
    let cold_python = summarize(cold_starts(client, &python, args.cold).await?);
    let cold_provided = summarize(cold_starts(client, &provided, args.cold).await?);
    Ok(Some(BackendFigures {
        isolation,
        warm_provided: warm[0],
        warm_python: warm[1],
        frozen,
        cold_python,
        cold_provided,
    }))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let server = Server::start()?;
    let client = Client::new(&server.endpoint);
    let exe = std::fs::read(std::env::current_exe()?)?;
    let bootstrap = b"#!/bin/sh\nexec /var/task/ember echo-runtime\n";
    let provided_zip =
        crate::package::zip_files(&[("bootstrap", bootstrap, true), ("ember", &exe, true)])?;
    let python_zip = crate::package::zip_files(&[(
        "app.py",
        b"def handler(event, context):\n    return event\n",
        false,
    )])?;
    eprintln!("deploying the benchmark functions…");
    let settings = |runtime: &str, handler: Option<&str>| FunctionSettings {
        runtime: Some(runtime.into()),
        handler: handler.map(Into::into),
        memory: Some(1769),
        ..Default::default()
    };
    create_or_update(
        &client,
        "bench-provided",
        &provided_zip,
        &settings("provided", None),
    )
    .await?;
    create_or_update(
        &client,
        "bench-python",
        &python_zip,
        &settings("python3", Some("app.handler")),
    )
    .await?;

    let echo = EchoProcess::start()?;
    let direct = Client::new(&echo.url);
    let in_process = Client::new(&direct_server().await?);
    let warmup = (args.warm / 10).max(50);
    let n = args.warm;
    eprintln!("warm latency ({n} sequential calls each)…");
    sequential(&direct, "/", warmup).await?;
    let direct_lat = summarize(sequential(&direct, "/", n).await?);
    sequential(&in_process, "/", warmup).await?;
    let in_process_lat = summarize(sequential(&in_process, "/", n).await?);
    let mut warm = Vec::new();
    for name in ["bench-provided", "bench-python"] {
        let path = format!("/2015-03-31/functions/{name}/invocations");
        sequential(&client, &path, warmup).await?;
        warm.push((name, summarize(sequential(&client, &path, n).await?)));
    }
    eprintln!("throughput ({} clients)…", args.clients);
    let direct_rps = throughput(&direct, "/", args.clients, n).await?;
    let provided_rps = throughput(
        &client,
        "/2015-03-31/functions/bench-provided/invocations",
        args.clients,
        n,
    )
    .await?;

    eprintln!("asynchronous events…");
    let enqueue = summarize(enqueue_latency(&client, "bench-provided", n).await?);
    events_drained(&client, "bench-provided", Duration::from_secs(300)).await?;
    let events_per_s = event_throughput(&client, "bench-provided", args.clients, n).await?;

    eprintln!("cold starts ({} each)…", args.cold);
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .context("no python3 in /usr")?;
    let python_pass = summarize(time_command(args.cold, python, &["-c", "pass"])?);
    let cold_python = summarize(cold_starts(&client, "bench-python", args.cold).await?);
    let cold_provided = summarize(cold_starts(&client, "bench-provided", args.cold).await?);
    let exe_path = std::env::current_exe()?;
    let exec_floor = summarize(time_command(
        args.cold,
        exe_path.to_str().context("exe path")?,
        &["--version"],
    )?);

    // Freezing idle environments: what a thaw (and the freeze after the call) adds.
    eprintln!("warm latency with idle environments frozen…");
    let settings = "/ember/v1/functions/bench-provided/settings";
    client
        .call(
            Method::PUT,
            settings,
            &[],
            br#"{"FreezeIdle": true}"#.to_vec(),
        )
        .await?;
    let provided_path = "/2015-03-31/functions/bench-provided/invocations";
    sequential(&client, provided_path, warmup).await?;
    let frozen_lat = summarize(sequential(&client, provided_path, n).await?);
    client
        .call(
            Method::PUT,
            settings,
            &[],
            br#"{"FreezeIdle": false}"#.to_vec(),
        )
        .await?;

    let wasm = wasm::figures(&client, &direct, &args, warmup, server.child.id()).await?;

    // The same functions on the OCI backends, where this host has them.
    let mut backends = Vec::new();
    for isolation in ["runc", "gvisor"] {
        match backend_figures(
            &client,
            isolation,
            &provided_zip,
            &python_zip,
            &args,
            warmup,
        )
        .await?
        {
            Some(figures) => backends.push(figures),
            None => eprintln!("isolation {isolation} is unavailable on this server: skipped"),
        }
    }

    // Last, because from the first key on every request must be signed.
    eprintln!("warm latency with signed requests…");
    let key: serde_json::Value = serde_json::from_slice(
        &client
            .call(Method::POST, "/ember/v1/keys", &[], vec![])
            .await?
            .body,
    )?;
    let signed = client.signed(
        key["AccessKeyId"].as_str().context("no key id")?,
        key["SecretAccessKey"].as_str().context("no secret")?,
        "us-east-1",
    );
    sequential(&signed, provided_path, warmup).await?;
    let signed_lat = summarize(sequential(&signed, provided_path, n).await?);

    let (provided, python_warm) = (warm[0].1, warm[1].1);
    let added_p50 = provided.p50_us - direct_lat.p50_us;
    let python_target_us = 1.5 * (python_pass.p50_us + 10_000.0);
    println!("\nEmber benchmark (one run; baselines measured alongside)\n");
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "measure", "p50 µs", "p99 µs", "× base"
    );
    let row = |label: &str, s: Summary, base: Option<Summary>| {
        let ratio = base.map_or(String::new(), |b| format!("{:.2}", s.p50_us / b.p50_us));
        println!(
            "{label:<44} {:>10.1} {:>10.1} {ratio:>8}",
            s.p50_us, s.p99_us
        );
    };
    row(
        "direct HTTP hop to another process (baseline)",
        direct_lat,
        None,
    );
    row(
        "HTTP hop within one process (reference)",
        in_process_lat,
        None,
    );
    row(
        "warm invoke, provided (echo-runtime)",
        provided,
        Some(direct_lat),
    );
    row("warm invoke, python3", python_warm, Some(direct_lat));
    row(
        "warm invoke, provided, SigV4-signed",
        signed_lat,
        Some(direct_lat),
    );
    row(
        "warm invoke, provided, frozen when idle",
        frozen_lat,
        Some(direct_lat),
    );
    row("python3 -c pass (baseline)", python_pass, None);
    row("cold start, python3", cold_python, Some(python_pass));
    row("exec of the runtime binary (baseline)", exec_floor, None);
    row("cold start, provided", cold_provided, Some(exec_floor));
    for b in &backends {
        let label = |what: &str| format!("{what}, {}", b.isolation);
        row(
            &label("warm invoke, provided"),
            b.warm_provided,
            Some(direct_lat),
        );
        row(
            &label("warm invoke, python3"),
            b.warm_python,
            Some(direct_lat),
        );
        row(
            &label("warm invoke, provided, frozen"),
            b.frozen,
            Some(direct_lat),
        );
        row(
            &label("cold start, python3"),
            b.cold_python,
            Some(python_pass),
        );
        row(
            &label("cold start, provided"),
            b.cold_provided,
            Some(exec_floor),
        );
    }
    row(
        "wasm invoke (fresh instance each call)",
        wasm.invoke,
        Some(direct_lat),
    );
    row("wasm function URL", wasm.url, Some(direct_lat));
    row("wasm instantiate + run, in process", wasm.instantiate, None);
    row("cold start, wasm", wasm.cold, Some(direct_lat));
    println!(
        "\nthroughput, requests/s (same load generator){}",
        peer_notes(&wasm)
    );
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "clients", "wasm URL", "workerd", "deno", "direct hop", "URL/workerd"
    );
    let rate = |r: Option<f64>| r.map_or("—".to_owned(), |r| format!("{r:.0}"));
    for r in &wasm.throughput {
        println!(
            "{:>8} {:>12.0} {:>12} {:>12} {:>12.0} {:>12}",
            r.clients,
            r.url,
            rate(r.workerd),
            rate(r.deno),
            r.direct,
            r.workerd
                .map_or("—".to_owned(), |w| format!("{:.2}", r.url / w)),
        );
    }
    let added_wasm = wasm.invoke.p50_us - direct_lat.p50_us;
    println!(
        "wasm invoke adds {added_wasm:.1} µs at p50 over the direct hop (target ≤ 1000 µs: {})",
        if added_wasm <= 1000.0 {
            "met"
        } else {
            "missed"
        }
    );
    if let Some(best) = best_ratio(&wasm) {
        println!(
            "wasm function URL throughput at its peak / workerd at its peak: {best:.2} (target ≥ 2: {})",
            if best >= 2.0 { "met" } else { "missed" }
        );
    }
    if let Some(bytes) = wasm.idle_environment_bytes {
        println!(
            "server memory per idle wasm environment: {:.1} KB ({} provisioned)",
            bytes / 1024.0,
            200
        );
    }
    println!(
        "\nthroughput with {} clients: direct {:.0}/s, provided {:.0}/s ({:.2} × direct)",
        args.clients,
        direct_rps,
        provided_rps,
        provided_rps / direct_rps
    );
    println!(
        "asynchronous events, provided: enqueue p50 {:.1} µs, p99 {:.1} µs; {:.0} events/s end to end \
         (enqueue → run → acknowledged, {} clients) = {:.2} × the synchronous rate",
        enqueue.p50_us,
        enqueue.p99_us,
        events_per_s,
        args.clients,
        events_per_s / provided_rps
    );
    println!(
        "platform-added warm latency (provided p50 − direct p50): {added_p50:.1} µs (target ≤ 200 µs: {})",
        if added_p50 <= 200.0 { "met" } else { "missed" }
    );
    println!(
        "freezing idle environments adds {:.1} µs at p50 (a thaw before each call, a freeze after)",
        frozen_lat.p50_us - provided.p50_us
    );
    println!(
        "python cold start p50 / (python3 -c pass + 10 ms): {:.2} (target ≤ 1.5: {})",
        cold_python.p50_us / (python_pass.p50_us + 10_000.0),
        if cold_python.p50_us <= python_target_us {
            "met"
        } else {
            "missed"
        }
    );

    let figure = |s: Summary| json!({ "p50_us": s.p50_us, "p99_us": s.p99_us });
    let report = json!({
        "warm_samples": n,
        "cold_samples": args.cold,
        "direct_hop": figure(direct_lat),
        "in_process_hop": figure(in_process_lat),
        "warm_provided": figure(provided),
        "warm_python": figure(python_warm),
        "warm_provided_signed": figure(signed_lat),
        "warm_provided_frozen": figure(frozen_lat),
        "freeze_added_p50_us": frozen_lat.p50_us - provided.p50_us,
        "platform_added_warm_p50_us": added_p50,
        "throughput_clients": args.clients,
        "throughput_direct_rps": direct_rps,
        "throughput_provided_rps": provided_rps,
        "event_enqueue_provided": figure(enqueue),
        "events_per_s_provided": events_per_s,
        "events_over_sync_rate": events_per_s / provided_rps,
        "python_c_pass": figure(python_pass),
        "cold_python": figure(cold_python),
        "cold_python_ratio": cold_python.p50_us / (python_pass.p50_us + 10_000.0),
        "exec_floor": figure(exec_floor),
        "cold_provided": figure(cold_provided),
        "wasm": {
            "invoke": figure(wasm.invoke),
            "url": figure(wasm.url),
            "instantiate": figure(wasm.instantiate),
            "cold": figure(wasm.cold),
            "added_p50_us": added_wasm,
            "idle_environment_bytes": wasm.idle_environment_bytes,
            "workerd": wasm.workerd.as_ref().err(),
            "deno": wasm.deno.as_ref().err(),
            "url_over_workerd_at_peak": best_ratio(&wasm),
            "throughput": wasm.throughput.iter().map(|r| json!({
                "clients": r.clients,
                "wasm_url_rps": r.url,
                "workerd_rps": r.workerd,
                "deno_rps": r.deno,
                "direct_rps": r.direct,
            })).collect::<Vec<_>>(),
        },
        "backends": backends.iter().map(|b| json!({
            "isolation": b.isolation,
            "warm_provided": figure(b.warm_provided),
            "warm_python": figure(b.warm_python),
            "warm_provided_frozen": figure(b.frozen),
            "freeze_added_p50_us": b.frozen.p50_us - b.warm_provided.p50_us,
            "cold_python": figure(b.cold_python),
            "cold_python_over_process": b.cold_python.p50_us / cold_python.p50_us,
            "cold_provided": figure(b.cold_provided),
            "cold_provided_over_process": b.cold_provided.p50_us / cold_provided.p50_us,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nfigures written to {}", args.out.display());
    Ok(())
}
