//! The WebAssembly part of `ember bench`: a wasm hello world through Invoke and through a
//! function URL, beside Cloudflare's `workerd` and Deno's `Deno.serve` serving the same
//! hello world in JavaScript, all driven by the same load generator in the same run.
//!
//! - **latency**: sequential calls (every one a fresh instance in a warm environment), p50
//!   and p99, against the direct HTTP hop (the server's floor);
//! - **throughput** at 1, 16 and 64 concurrent clients: the function URL, `workerd`,
//!   `deno` and the direct hop, in twice the usual number of rounds;
//! - **one core each**: the function URL (a server of its own, bound to one core) and
//!   `workerd`, in turns on the same core, with the load generator bound to another;
//! - **instantiation**: starting an instance of the module and running it to its end, in
//!   this process, without HTTP;
//! - **cold start**: request in → response out when the function has no environment;
//! - **memory per idle environment**: the server's resident memory with 200 provisioned
//!   environments, less before, per environment.
//!
//! The peers are npm packages (`npm install --prefix bench-peers workerd deno`); where one
//! is missing its columns say so and the rest is measured.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Method;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

use super::BenchArgs;
use super::load::{self, Request};
use super::results::{Latency, OneCore, Peers};
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

/// A peer server process, killed when dropped.
struct Peer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// Runs `command` (a server on `port`, its files in `dir`; on core `cpu` if given)
    /// until it answers.
    async fn start(
        what: &str,
        mut command: Command,
        port: u16,
        dir: tempfile::TempDir,
        cpu: Option<usize>,
    ) -> anyhow::Result<Peer> {
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let mut spawn = || {
            command
                .spawn()
                .with_context(|| format!("could not start {what}"))
        };
        let child = match cpu {
            Some(cpu) => on_cpu(cpu, spawn)?,
            None => spawn()?,
        };
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
    super::poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let exited = child.try_wait();
        async move {
            if let Ok(answer) = client.request(Method::GET, "/", &[], Vec::new()).await
                && answer.status == 200
            {
                return Ok(ControlFlow::Break(()));
            }
            if let Some(status) = exited? {
                bail!("{what} exited before answering: {status}");
            }
            Ok(ControlFlow::Continue(format!("{what} not answering")))
        }
    })
    .await
}

/// `workerd` serving the hello world; on one core if `cpu` says which.
async fn start_workerd(peers: &Path, cpu: Option<usize>) -> anyhow::Result<Peer> {
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
    Peer::start("workerd", command, port, dir, cpu).await
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
    Peer::start("deno", command, port, dir, None).await
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
            input: input.clone(),
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

/// The name of the wasm hello world's function.
const HELLO_NAME: &str = "bench-wasm-hello";

/// Deploys the wasm hello world as `name`, with a function URL.
async fn deploy_hello(client: &Client, name: &str) -> anyhow::Result<()> {
    let zip = crate::package::zip_files(&[("hello.wat", HELLO_WAT.as_bytes(), false)])?;
    let settings = FunctionSettings {
        runtime: Some("wasm".into()),
        handler: Some("hello.wat".into()),
        ..Default::default()
    };
    create_or_update(client, name, &zip, &settings).await?;
    let url = client
        .call(
            Method::POST,
            &format!("/2021-10-31/functions/{name}/url"),
            &[],
            br#"{"AuthType": "NONE"}"#.to_vec(),
        )
        .await;
    match url {
        Err(e) if !e.to_string().contains("already") => Err(e),
        _ => Ok(()),
    }
}

/// Deploys the wasm hello world and measures it beside its peers and the direct hop
/// (`direct`: its server's processes).
pub async fn figures(
    client: &Client,
    direct: &[String],
    args: &BenchArgs,
) -> anyhow::Result<Peers> {
    super::section("WebAssembly and its peers…", args).await;
    let name = HELLO_NAME;
    deploy_hello(client, name).await?;
    let base = client.base();
    let invoke = Request::post(&super::invoke_path(name), super::workloads::HELLO);
    let url = Request::post(&format!("/url/{name}/"), super::workloads::HELLO);
    let n = args.warm;
    let warmup = (n / 10).max(50);
    load::sequential(base, &invoke, warmup).await?;
    let invoke_latency = Latency::of(load::sequential(base, &invoke, n).await?);
    load::sequential(base, &url, warmup).await?;
    let url_latency = Latency::of(load::sequential(base, &url, n).await?);
    let instantiate = Latency::of(instantiation(n).await?);

    let peers = &args.peers;
    let workerd = start_workerd(peers, None).await;
    let deno = start_deno(peers).await;
    let root = Request::post("/", super::workloads::HELLO);
    let mut missing = BTreeMap::new();
    // The function URL, the peers that started and the direct hop, in turns.
    let mut names = vec!["wasm URL".to_owned()];
    let ember = [base.to_owned()];
    let mut targets = vec![super::Target {
        servers: &ember,
        request: &url,
    }];
    for (peer, started) in [("workerd", &workerd), ("deno", &deno)] {
        match started {
            Ok(p) => {
                names.push(peer.to_owned());
                targets.push(super::Target {
                    servers: std::slice::from_ref(&p.url),
                    request: &root,
                });
            }
            Err(e) => {
                missing.insert(peer.to_owned(), format!("{e:#}"));
            }
        }
    }
    names.push("direct hop".to_owned());
    targets.push(super::Target {
        servers: direct,
        request: &root,
    });
    // Twice as many rounds as elsewhere: workerd's rate moves more from one round to the
    // next than the function URL's or the direct hop's.
    let rates: BTreeMap<_, _> = names
        .into_iter()
        .zip(super::rates_in_rounds(&targets, args.run_for() * 2).await?)
        .collect();
    drop((workerd, deno));
    let one_core = match one_core(args, &mut missing).await {
        Ok(figure) => Some(figure),
        Err(e) => {
            missing.insert("one core each".to_owned(), format!("{e:#}"));
            None
        }
    };
    Ok(Peers {
        wasm_invoke: invoke_latency,
        wasm_url: url_latency,
        wasm_instantiate: instantiate,
        rates,
        one_core,
        missing,
    })
}

/// The function URL and `workerd`, each on one core (the same one, in turns), with the load
/// generator on another: what each serves per core, whatever the number of cores it could
/// use. Both cores shared, as in the throughput table, the generator takes its share from
/// a server that uses both (Ember) and not from one that runs on one thread (`workerd`).
///
/// A pinned Ember server of its own: bound to one core, its runtime starts one worker
/// (the number of cores it may run on). Without `workerd` the function URL is still
/// measured, and why `workerd` was not goes in `missing` (unless it is there already).
async fn one_core(
    args: &BenchArgs,
    missing: &mut BTreeMap<String, String>,
) -> anyhow::Result<OneCore> {
    let cpus = allowed_cpus()?;
    let (generator, server) = match cpus[..] {
        [first, .., last] => (first, last),
        _ => bail!("it needs two cores and the bench may run on {}", cpus.len()),
    };
    let ember = on_cpu(server, || super::Server::start("one-core"))?;
    let client = Client::new(&ember.endpoint);
    deploy_hello(&client, HELLO_NAME).await?;
    let workerd = match start_workerd(&args.peers, Some(server)).await {
        Ok(workerd) => Some(workerd),
        Err(e) => {
            if !missing.contains_key("workerd") {
                missing.insert("workerd on one core".to_owned(), format!("{e:#}"));
            }
            None
        }
    };
    let url = Request::post(&format!("/url/{HELLO_NAME}/"), super::workloads::HELLO);
    let root = Request::post("/", super::workloads::HELLO);
    let ember_servers = [ember.endpoint.clone()];
    let mut targets = vec![super::Target {
        servers: &ember_servers,
        request: &url,
    }];
    if let Some(workerd) = &workerd {
        targets.push(super::Target {
            servers: std::slice::from_ref(&workerd.url),
            request: &root,
        });
    }
    let run_for = args.run_for() * 2;
    // The generator on a runtime of its own, on a thread bound to the other core.
    let rates = tokio::task::block_in_place(|| {
        on_cpu(generator, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(super::closed_in_rounds(&targets, 64, run_for))
        })
    })?;
    Ok(OneCore {
        url_rps: rates[0].0,
        workerd_rps: rates.get(1).map(|(rps, _)| *rps),
    })
}

/// The cores this process may run on.
fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).context("reading the bench's cores")?;
    Ok(ember_sandbox::affinity::cores_in(&set))
}

/// Runs `f` on a thread of its own bound to `cpu`: what it starts (a thread, a process)
/// is bound there too.
fn on_cpu<T: Send>(cpu: usize, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut set = CpuSet::new();
                set.set(cpu)?;
                sched_setaffinity(Pid::from_raw(0), &set)
                    .with_context(|| format!("binding a thread to core {cpu}"))?;
                f()
            })
            .join()
            .unwrap_or_else(|_| bail!("the thread on core {cpu} panicked"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_started_on_a_core_runs_only_there() {
        let cpus = allowed_cpus().unwrap();
        let last = *cpus.last().expect("the bench may run on some core");
        let mut child = on_cpu(last, || Ok(Command::new("sleep").arg("5").spawn()?)).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        assert_eq!(allowed, last.to_string());
        // The thread that started it went away with its binding: this one is as it was.
        assert_eq!(allowed_cpus().unwrap(), cpus);
    }
}
