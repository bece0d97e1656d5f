//! The WebAssembly part of `ember bench`: a wasm hello world through Invoke and through a
//! function URL, beside Cloudflare's `workerd` and Deno's `Deno.serve` serving the same
//! hello world in JavaScript, all driven by the same load generator in the same run.
//!
//! - **latency**: sequential calls (every one a fresh instance in a warm environment), p50
//!   and p99, against the direct HTTP hop (the server's floor);
//! - **throughput** at 1, 16 and 64 concurrent clients: the function URL, `workerd`,
//!   `deno` and the direct hop;
//! - **instantiation**: starting an instance of the module and running it to its end, in
//!   this process, without HTTP;
//! - **cold start**: request in → response out when the function has no environment;
//! - **memory per idle environment**: the server's resident memory with 200 provisioned
//!   environments, less before, per environment.
//!
//! The peers are npm packages (`npm install --prefix bench-peers workerd deno`); where one
//! is missing its columns say so and the rest is measured.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Method;
use serde_json::json;

use super::{BenchArgs, Summary, cold_starts, sequential, summarize, throughput};
use crate::client::Client;
use crate::commands::{FunctionSettings, create_or_update};

/// Hello world as a WASI command: answers `{"statusCode":200,"body":"hello"}`.
pub const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"statusCode\":200,\"body\":\"hello\"}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 33))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// The same hello world for the JavaScript peers.
const HELLO_JS: &str = "export default { async fetch() { return new Response(\"hello\"); } };\n";
const HELLO_DENO: &str = "Deno.serve({ hostname: \"127.0.0.1\", port: Number(Deno.args[0]), onListen() {} }, () => new Response(\"hello\"));\n";

/// Concurrencies of the throughput figure.
pub const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// Provisioned environments for the memory figure.
const IDLE_ENVIRONMENTS: u32 = 200;

pub struct WasmFigures {
    pub invoke: Summary,
    pub url: Summary,
    pub instantiate: Summary,
    pub cold: Summary,
    /// Requests per second at each of [`CONCURRENCY`].
    pub throughput: Vec<Rates>,
    pub workerd: Result<(), String>,
    pub deno: Result<(), String>,
    pub idle_environment_bytes: Option<f64>,
}

/// Requests per second with `clients` concurrent clients.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub clients: usize,
    pub url: f64,
    /// `None` where the peer could not run.
    pub workerd: Option<f64>,
    pub deno: Option<f64>,
    pub direct: f64,
}

/// A peer server process, killed when dropped.
struct Peer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// Runs `command` (a server on `port`, its files in `dir`) until it answers.
    async fn start(
        what: &str,
        mut command: Command,
        port: u16,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Peer> {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("could not start {what}"))?;
        let mut peer = Peer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        answering(&Client::new(&peer.url), &mut peer.child, what).await?;
        Ok(peer)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a peer's binary is: the peers directory's `node_modules/.bin`, else `PATH`.
fn find_peer(peers: &Path, name: &str) -> Result<PathBuf, String> {
    let local = peers.join("node_modules/.bin").join(name);
    if local.exists() {
        return Ok(local);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.exists())
        })
        .ok_or_else(|| {
            format!(
                "{name} not found in {} or PATH (npm install --prefix {} workerd deno)",
                local.display(),
                peers.display()
            )
        })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until `url` answers 200.
async fn answering(client: &Client, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(answer) = client.request(Method::GET, "/", &[], Vec::new()).await
            && answer.status == 200
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited before answering: {status}");
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_workerd(peers: &Path) -> anyhow::Result<Peer> {
    let program = find_peer(peers, "workerd").map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    std::fs::write(dir.path().join("hello.js"), HELLO_JS)?;
    let config = format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .hello) ],
  sockets = [ ( name = "http", address = "127.0.0.1:{port}", http = (), service = "main" ) ]
);
const hello :Workerd.Worker = (
  modules = [ (name = "hello.js", esModule = embed "hello.js") ],
  compatibilityDate = "2024-09-01",
);
"#
    );
    std::fs::write(dir.path().join("config.capnp"), config)?;
    let mut command = Command::new(program);
    command.arg("serve").arg(dir.path().join("config.capnp"));
    Peer::start("workerd", command, port, dir).await
}

async fn start_deno(peers: &Path) -> anyhow::Result<Peer> {
    let program = find_peer(peers, "deno").map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    std::fs::write(dir.path().join("hello.ts"), HELLO_DENO)?;
    let mut command = Command::new(program);
    command
        .args(["run", "--allow-net", "--no-prompt"])
        .arg(dir.path().join("hello.ts"))
        .arg(port.to_string())
        .env("DENO_DIR", dir.path().join("cache"))
        .env("NO_COLOR", "1");
    Peer::start("deno", command, port, dir).await
}

/// Instance start and run of the hello module in this process, without HTTP.
async fn instantiation(n: usize) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let engine = ember_sandbox_wasm::WasmEngine::new(dir.path())?;
    let module = engine.load(HELLO_WAT.as_bytes())?;
    let input = bytes::Bytes::from_static(super::PAYLOAD);
    let args = ["/var/task/hello.wat".to_owned()];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n + n / 10 {
        let run = ember_sandbox_wasm::Run {
            input: &input,
            args: &args,
            env: &[],
            tmp: None,
            task: None,
            egress: false,
            limits: ember_sandbox_wasm::Limits {
                memory_bytes: 128 << 20,
                timeout: Duration::from_secs(3),
            },
        };
        let t = Instant::now();
        let outcome = engine.run_command(&module, run).await?;
        samples.push(t.elapsed());
        if outcome.end != ember_sandbox_wasm::End::Exit(0) {
            bail!("the hello module failed: {:?}", outcome.end);
        }
    }
    // The first tenth warms the pool's slots.
    Ok(samples.split_off(n / 10))
}

fn rss_bytes(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024.0)
}

/// The server's resident memory per idle provisioned environment of `name`.
async fn idle_environment_bytes(
    client: &Client,
    name: &str,
    server_pid: u32,
) -> anyhow::Result<f64> {
    let version: serde_json::Value = serde_json::from_slice(
        &client
            .call(
                Method::POST,
                &format!("/2015-03-31/functions/{name}/versions"),
                &[],
                b"{}".to_vec(),
            )
            .await?
            .body,
    )?;
    let qualifier = version["Version"]
        .as_str()
        .context("no version")?
        .to_owned();
    let path =
        format!("/2019-09-30/functions/{name}/provisioned-concurrency?Qualifier={qualifier}");
    let before = rss_bytes(server_pid)?;
    let body =
        serde_json::to_vec(&json!({ "ProvisionedConcurrentExecutions": IDLE_ENVIRONMENTS }))?;
    client.call(Method::PUT, &path, &[], body).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state: serde_json::Value =
            serde_json::from_slice(&client.call(Method::GET, &path, &[], Vec::new()).await?.body)?;
        if state["Status"] == "READY" {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{IDLE_ENVIRONMENTS} provisioned environments were not ready within 60 s: {state}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rss_bytes(server_pid)?;
    client.call(Method::DELETE, &path, &[], Vec::new()).await?;
    Ok((after - before) / f64::from(IDLE_ENVIRONMENTS))
}

/// Deploys the wasm hello world and measures it beside its peers.
pub async fn figures(
    client: &Client,
    direct: &Client,
    args: &BenchArgs,
    warmup: usize,
    server_pid: u32,
) -> anyhow::Result<WasmFigures> {
    eprintln!("WebAssembly…");
    let zip = crate::package::zip_files(&[("hello.wat", HELLO_WAT.as_bytes(), false)])?;
    let settings = FunctionSettings {
        runtime: Some("wasm".into()),
        handler: Some("hello.wat".into()),
        ..Default::default()
    };
    create_or_update(client, "bench-wasm", &zip, &settings).await?;
    let url = client
        .call(
            Method::POST,
            "/2021-10-31/functions/bench-wasm/url",
            &[],
            br#"{"AuthType": "NONE"}"#.to_vec(),
        )
        .await;
    if let Err(e) = url
        && !e.to_string().contains("already")
    {
        return Err(e);
    }
    let invoke_path = "/2015-03-31/functions/bench-wasm/invocations";
    let url_path = "/url/bench-wasm/";
    let n = args.warm;
    sequential(client, invoke_path, warmup).await?;
    let invoke = summarize(sequential(client, invoke_path, n).await?);
    sequential(client, url_path, warmup).await?;
    let url = summarize(sequential(client, url_path, n).await?);
    let instantiate = summarize(instantiation(n).await?);
    let cold = summarize(cold_starts(client, "bench-wasm", args.cold).await?);

    let peers = &args.peers;
    let workerd = start_workerd(peers).await;
    let deno = start_deno(peers).await;
    let workerd_client = workerd.as_ref().ok().map(|p| Client::new(&p.url));
    let deno_client = deno.as_ref().ok().map(|p| Client::new(&p.url));
    let mut rates = Vec::new();
    for clients in CONCURRENCY {
        // Every client makes the same number of calls, at least 200, about 2 s in all.
        let total = (clients * 200).max(args.warm.min(20_000));
        let rate = |c: Option<&Client>, path: &'static str| {
            let c = c.cloned();
            async move {
                match c {
                    Some(c) => {
                        throughput(&c, path, clients, total / 10).await?;
                        throughput(&c, path, clients, total).await.map(Some)
                    }
                    None => Ok(None),
                }
            }
        };
        let url_rps = rate(Some(client), url_path).await?.unwrap_or_default();
        let workerd_rps = rate(workerd_client.as_ref(), "/").await?;
        let deno_rps = rate(deno_client.as_ref(), "/").await?;
        let direct_rps = rate(Some(direct), "/").await?.unwrap_or_default();
        rates.push(Rates {
            clients,
            url: url_rps,
            workerd: workerd_rps,
            deno: deno_rps,
            direct: direct_rps,
        });
    }
    drop((workerd_client, deno_client));
    let peer_status = |p: &anyhow::Result<Peer>| match p {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{e:#}")),
    };
    let (workerd_status, deno_status) = (peer_status(&workerd), peer_status(&deno));
    drop((workerd, deno));
    let idle = match idle_environment_bytes(client, "bench-wasm", server_pid).await {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!("memory per idle environment not measured: {e:#}");
            None
        }
    };
    Ok(WasmFigures {
        invoke,
        url,
        instantiate,
        cold,
        throughput: rates,
        workerd: workerd_status,
        deno: deno_status,
        idle_environment_bytes: idle,
    })
}
