//! `ember server`: the one place where stores, backends and the API are wired together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ember_api::auth::KeyRing;
use ember_api::{AppState, Registry};
use ember_core::Isolation;
use ember_core::usage::Prices;
use ember_dispatch::{Backends, DispatchConfig, Dispatcher, LogSink};
use ember_policy::{Adaptive, Admission, KeepAlive, ScalePacing};
use ember_sandbox_oci::{OciBackend, OciConfig, OciRuntime};
use ember_sandbox_process::egress::EgressNetwork;
use ember_sandbox_process::{ProcessBackend, ProcessConfig};
use ember_sandbox_wasm::WasmBackend;
use ember_store::{Artifacts, SecretBox, Store};
use sha2::{Digest, Sha256};

use crate::client::Client;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Address the API listens on.
    #[arg(long, env = "EMBER_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Directory for the store, packages, logs and sandbox files.
    #[arg(long, env = "EMBER_DATA_DIR", default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
    /// How long an idle environment is kept warm before it is reclaimed (e.g. 30s, 10m);
    /// under the adaptive policy, the fallback while a function's idle times are too few.
    #[arg(long, env = "EMBER_KEEP_ALIVE", default_value = "10m", value_parser = ember_core::duration::parse)]
    keep_alive: Duration,
    /// The keep-alive policy for functions that do not choose one: `fixed` keeps every idle
    /// environment for --keep-alive; `adaptive` learns each function's idle times, keeps
    /// environments just past the usual gap and pre-warms ahead of periodic calls.
    #[arg(long, env = "EMBER_KEEP_ALIVE_POLICY", default_value = "fixed", value_parser = ["fixed", "adaptive"])]
    keep_alive_policy: String,
    /// Width of a bin of the adaptive policy's idle-time histogram (240 bins): its time
    /// resolution. Lower it only to compress time in tests and simulations.
    #[arg(long, env = "EMBER_ADAPTIVE_BIN", default_value = "1m", value_parser = ember_core::duration::parse)]
    adaptive_bin: Duration,
    /// Most invocations running at once across all functions; more get 429.
    #[arg(long, env = "EMBER_ACCOUNT_CONCURRENCY", default_value_t = 1000)]
    account_concurrency: u32,
    /// Concurrency that reserved concurrency may not take, kept for functions without a
    /// reservation (at most --account-concurrency).
    #[arg(long, env = "EMBER_UNRESERVED_MIN", default_value_t = 100)]
    unreserved_min: u32,
    /// New environments a function may start at once before the scale-up pace applies.
    #[arg(long, env = "EMBER_SCALE_BURST", default_value_t = 1000)]
    scale_burst: u32,
    /// New environments a function may start per --scale-period after its burst.
    #[arg(long, env = "EMBER_SCALE_REFILL", default_value_t = 1000)]
    scale_refill: u32,
    #[arg(long, env = "EMBER_SCALE_PERIOD", default_value = "10s", value_parser = ember_core::duration::parse)]
    scale_period: Duration,
    /// How long a call beyond the scale-up pace waits for a busy environment to free up
    /// before it gets 429.
    #[arg(long, env = "EMBER_SCALE_WAIT", default_value = "1s", value_parser = ember_core::duration::parse)]
    scale_wait: Duration,
    /// Price per million requests, in dollars, for `ember usage` (default: Lambda's).
    #[arg(long, env = "EMBER_PRICE_REQUESTS", default_value_t = Prices::default().per_million_requests)]
    price_requests: f64,
    /// Price per GB-second of on-demand duration.
    #[arg(long, env = "EMBER_PRICE_GB_SECOND", default_value_t = Prices::default().per_gb_second)]
    price_gb_second: f64,
    /// Price per GB-second that provisioned environments are configured.
    #[arg(long, env = "EMBER_PRICE_PROVISIONED_GB_SECOND", default_value_t = Prices::default().provisioned_per_gb_second)]
    price_provisioned_gb_second: f64,
    /// Price per GB-second of duration on provisioned environments.
    #[arg(long, env = "EMBER_PRICE_PROVISIONED_DURATION_GB_SECOND", default_value_t = Prices::default().provisioned_duration_per_gb_second)]
    price_provisioned_duration_gb_second: f64,
    /// The first retry of an asynchronous event after a function error; the second comes
    /// twice as long after it.
    #[arg(long, env = "EMBER_EVENT_RETRY_DELAY", default_value = "1m", value_parser = ember_core::duration::parse)]
    event_retry_delay: Duration,
    /// Asynchronous events running at once, over all functions (each still within its
    /// function's concurrency).
    #[arg(long, env = "EMBER_EVENT_CONCURRENCY", default_value_t = 64)]
    event_concurrency: usize,
    /// Region reported in ARNs.
    #[arg(long, env = "EMBER_REGION", default_value = "us-east-1")]
    region: String,
    /// Account id reported in ARNs.
    #[arg(long, env = "EMBER_ACCOUNT_ID", default_value = "000000000000")]
    account_id: String,
    /// Deploy the bundled example function `hello` at start and invoke it once.
    #[arg(long, env = "EMBER_EXAMPLE")]
    example: bool,
    /// Bind each async worker thread to a core of its own (when there is one worker per
    /// core): `false` lets the kernel move them.
    #[arg(long, env = "EMBER_BIND_WORKERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub bind_workers: bool,
}

/// Python interpreters in the places a sandbox can see (the host's `/usr` is mounted inside).
const PYTHON_CANDIDATES: &[&str] = &["/usr/bin/python3", "/usr/local/bin/python3"];
/// Node.js binaries, likewise.
const NODE_CANDIDATES: &[&str] = &["/usr/bin/node", "/usr/local/bin/node"];

/// The server's own events at `info`; the WASI implementation's at `warn`: it opens an
/// `info` span for every call a module makes, which would be formatted on every
/// invocation.
const DEFAULT_LOG_FILTER: &str = "info,wasmtime_wasi=warn,wiggle=warn";

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EMBER_LOG")
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .init();

    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "could not create the data directory {}",
            args.data_dir.display()
        )
    })?;
    let data = args.data_dir.canonicalize()?;
    // One server per data directory: a second one would take the first's environments for
    // leftovers of a crash and kill them. The lock lives as long as the server.
    let _lock = lock_data_dir(&data)?;
    // Only root may look inside: it holds every function's code.
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let instance = format!(
        "ember-{}",
        &hex::encode(Sha256::digest(data.as_os_str().as_encoded_bytes()))[..12]
    );

    let runtime_dir = data.join("runtime");
    ember_runtime_api::runtimes::install(&runtime_dir)
        .context("could not install the bundled runtimes")?;
    let python = PYTHON_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p));
    let node = NODE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p));
    if node.is_none() {
        tracing::warn!("no Node.js at {NODE_CANDIDATES:?}: nodejs runtimes are unavailable");
    }
    if python.is_none() {
        tracing::warn!("no Python at {PYTHON_CANDIDATES:?}: python runtimes are unavailable");
    }

    // Bound before the backends exist: the egress network's firewall needs the API's port.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let ember = std::env::current_exe().context("could not locate the ember binary")?;
    let helpers = ember_sandbox_oci::helpers::program(&ember);
    if helpers == ember {
        tracing::warn!(
            "no {} beside {}: environments start with ember itself, about a millisecond \
             slower each and a megabyte larger",
            ember_sandbox_oci::helpers::HELPER_BINARY,
            ember.display()
        );
    }
    let mut backends = Backends::new();
    let egress = match EgressNetwork::start(&instance, listener.local_addr()?.port()) {
        Ok(network) => Some(network),
        Err(e) => {
            tracing::info!("functions cannot have network egress here: {e}");
            backends.without_egress(e.to_string());
            None
        }
    };
    backends.add(
        Isolation::Process,
        Arc::new(ProcessBackend::new(ProcessConfig {
            init_program: helpers.clone(),
            work_dir: data.join("sandbox"),
            instance: instance.clone(),
            egress: egress.clone(),
        })?),
    );
    // The OCI backends are optional: a function may ask for one only where its runtime
    // program is installed.
    for runtime in [OciRuntime::Runc, OciRuntime::Gvisor] {
        let isolation = runtime.isolation();
        let backend = OciBackend::new(OciConfig {
            runtime,
            reaper: helpers.clone(),
            work_dir: data.join(format!("sandbox-{isolation}")),
            instance: format!("{instance}-{isolation}"),
            egress: egress.clone(),
        });
        match backend {
            Ok(backend) => backends.add(isolation, Arc::new(backend)),
            Err(e) => {
                tracing::info!("isolation {isolation} is unavailable: {e}");
                backends.unavailable(isolation, e.to_string());
            }
        }
    }
    match WasmBackend::new(&data.join("wasm")) {
        Ok(backend) => backends.add(Isolation::Wasm, Arc::new(backend)),
        Err(e) => {
            tracing::warn!("the wasm runtime is unavailable: {e}");
            backends.unavailable(Isolation::Wasm, e.to_string());
        }
    }
    let logs = LogSink::start(
        data.join("logs"),
        ember_dispatch::logs::DEFAULT_LOG_FILE_BYTES,
    )?;
    let adaptive = Adaptive {
        bin: args.adaptive_bin,
        fallback_ttl: args.keep_alive,
        ..Adaptive::default()
    };
    let dispatcher = Dispatcher::new(
        backends,
        DispatchConfig {
            keep_alive: match args.keep_alive_policy.as_str() {
                "adaptive" => KeepAlive::Adaptive(adaptive),
                _ => KeepAlive::Fixed {
                    ttl: args.keep_alive,
                },
            },
            adaptive,
            admission: Admission {
                account_limit: args.account_concurrency,
                unreserved_min: args.unreserved_min.min(args.account_concurrency),
            },
            pacing: ScalePacing {
                burst: args.scale_burst,
                refill: args.scale_refill,
                period: args.scale_period,
                wait: args.scale_wait,
            },
            runtime_dir,
            python,
            node,
            region: args.region,
            account: args.account_id,
        },
        logs,
    );
    let store = Arc::new(Store::open(&data.join("ember.db")).context("could not open the store")?);
    let artifacts = Artifacts::open(&data.join("artifacts"))?;
    let sealer = SecretBox::open(&data.join("secrets.key"))?;
    let public = !args.listen.ip().is_loopback();
    let keys =
        KeyRing::load(Arc::clone(&store), sealer, public).map_err(|e| anyhow::anyhow!("{e}"))?;
    if public && keys.is_empty() {
        anyhow::bail!(
            "refusing to listen on {} without access keys: anyone who can reach it could run code on this host. \
             Start on 127.0.0.1, run `ember keys create`, then restart on {}",
            args.listen,
            args.listen
        );
    }
    let prices = Prices {
        per_million_requests: args.price_requests,
        per_gb_second: args.price_gb_second,
        provisioned_per_gb_second: args.price_provisioned_gb_second,
        provisioned_duration_per_gb_second: args.price_provisioned_duration_gb_second,
    };
    let registry = Arc::new(
        Registry::load(Arc::clone(&store), artifacts, dispatcher.clone(), prices)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    tokio::spawn(flush_usage(Arc::downgrade(&registry)));
    // After the functions are deployed: events the last stop left are runnable at once.
    let events = ember_events::Events::start(
        Arc::clone(&store),
        dispatcher.clone(),
        ember_events::EventSettings {
            timing: ember_events::retry::RetryTiming {
                function_error_delay: args.event_retry_delay,
                ..Default::default()
            },
            concurrency: args.event_concurrency,
        },
    )
    .context("could not start the event queue")?;

    let app = ember_api::front(AppState {
        registry: Arc::clone(&registry),
        keys: Arc::new(keys),
        events: events.clone(),
    });

    let addr = listener.local_addr()?;
    println!(
        "Ember is listening on http://{addr} (data in {})",
        data.display()
    );

    if args.example {
        let endpoint = format!("http://{addr}");
        tokio::spawn(async move {
            if let Err(e) = show_example(&endpoint).await {
                eprintln!("error: the example did not run: {e:#}");
            }
        });
    }

    crate::serve::serve(listener, app, shutdown_signal()).await;
    tracing::info!("shutting down: finishing asynchronous events, stopping environments");
    events.shutdown(Duration::from_secs(10)).await;
    dispatcher.shutdown().await;
    let _ = tokio::task::spawn_blocking(move || registry.flush_usage()).await;
    if let Some(egress) = egress {
        egress.stop();
    }
    Ok(())
}

/// How often recorded usage moves to the store: what a crash of the server can lose.
const USAGE_FLUSH: Duration = Duration::from_secs(5);

async fn flush_usage(registry: std::sync::Weak<Registry>) {
    loop {
        tokio::time::sleep(USAGE_FLUSH).await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || registry.flush_usage()).await;
    }
}

fn lock_data_dir(data: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data.join("ember.lock"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!(
            "another Ember server is using the data directory {} ({errno}); stop it or pass another --data-dir",
            data.display()
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Deploys the bundled `hello` function through the API and calls it once.
async fn show_example(endpoint: &str) -> anyhow::Result<()> {
    let client = Client::new(endpoint);
    let zip = crate::package::zip_files(&[(
        "app.py",
        include_bytes!("../../../examples/hello-python/app.py"),
        false,
    )])?;
    crate::commands::create_or_update(
        &client,
        "hello",
        &zip,
        &crate::commands::FunctionSettings {
            runtime: Some("python3".into()),
            handler: Some("app.handler".into()),
            ..Default::default()
        },
    )
    .await?;
    let answer = client
        .invoke("hello", br#"{"name": "Ember"}"#, false)
        .await?;
    println!(
        "\nThe example function `hello` answered:\n  {}",
        String::from_utf8_lossy(&answer.body)
    );
    println!("\nCall it yourself:");
    println!(
        "  curl -s -X POST {endpoint}/2015-03-31/functions/hello/invocations -d '{{\"name\": \"you\"}}'"
    );
    println!("  cargo run --release -- invoke hello --payload '{{\"name\": \"you\"}}' --log");
    println!();
    Ok(())
}
