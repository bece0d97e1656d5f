//! `ember`: the server and its client commands, in one binary.
//!
//! - `server` (`server.rs`): wires the store, the sandbox backend, the dispatcher and the
//!   API, and serves them.
//! - `deploy`, `invoke`, `ls`, `get`, `rm`, `logs` (`commands.rs`): clients of the HTTP
//!   API, nothing more (`client.rs`).
//! - `bench` (`bench.rs`): measures Ember against baselines in one run.
//! - `sandbox-init`, `sandbox-reaper`, `sandbox-shim` (hidden, recognised before the
//!   parser): the helpers the server starts for its environments, where `ember-init`
//!   (`ember_init.rs`, the same helpers in a small binary) is missing.
//! - `echo-runtime`, `echo-server` (hidden): a minimal compiled Runtime API client and a
//!   trivial HTTP server, used by `bench`.

mod bench;
mod client;
mod commands;
mod echo_runtime;
mod observe;
mod package;
mod serve;
mod server;
mod sim;

/// The request path allocates small and often: with glibc's malloc, allocation was about
/// 14% of the server's CPU on a function URL, and mimalloc takes 11–14% off each request's
/// CPU. Its transparent huge pages are off (`no_thp`): with them an idle single-threaded
/// `ember` held 6 MiB more. Environments do not start from this binary but from
/// `ember-init`, which keeps glibc's allocator and its small footprint.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ember",
    version,
    about = "Ember: self-hosted functions-as-a-service that speaks the AWS Lambda protocols"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where client commands find the server.
#[derive(clap::Args, Clone)]
pub struct Endpoint {
    /// The Ember server's URL.
    #[arg(
        long,
        global = true,
        env = "EMBER_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    pub endpoint: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Ember server.
    Server(server::ServerArgs),
    /// Create or update a function from a directory or a zip.
    Deploy(commands::DeployArgs),
    /// Invoke a function and print its response.
    Invoke(commands::InvokeArgs),
    /// List functions.
    Ls(commands::LsArgs),
    /// Show a function's configuration.
    Get(commands::NameArgs),
    /// Delete a function.
    Rm(commands::NameArgs),
    /// Print a function's log.
    Logs(commands::LogsArgs),
    /// Manage the access keys requests are signed with.
    Keys(commands::KeysArgs),
    /// Show invocations, errors, throttles, environments and recent concurrency per function.
    Stats(observe::StatsArgs),
    /// Show usage (requests, billed duration, GB-seconds) and its cost per function and day.
    Usage(observe::UsageArgs),
    /// Show asynchronous events per function: queued, retrying, running, failed, oldest.
    Events(observe::EventsArgs),
    /// Measure warm and cold invocation latency against baselines, in one run.
    Bench(bench::BenchArgs),
    /// Replay a call trace through the scheduling policies: cold starts, throttles, memory.
    Sim(sim::SimArgs),
    #[command(hide = true, name = "echo-runtime")]
    EchoRuntime,
    /// A trivial HTTP server answering every request with its body: `bench`'s floor.
    #[command(hide = true, name = "echo-server")]
    EchoServer,
}

/// The async runtime. With `bind` (the server's), one worker per core, each bound to its
/// own core, where the process may run on more than one and nothing else sets the number
/// of workers (`TOKIO_WORKER_THREADS`, a CPU quota below the cores).
///
/// Left to the kernel, two workers and the threads of whatever else runs on the host (a
/// load generator, a runtime's process) are put on the same core at times while the other
/// core idles, and such a placement can last for seconds. A worker that stays on its core
/// also keeps the connections and pools it serves in that core's caches. What the server
/// starts from a worker (a process, a thread) is started on all its cores
/// ([`ember_sandbox::affinity::unbound`]), and the runtime's blocking threads stay on all.
fn runtime(bind: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if !bind {
        return builder.build();
    }
    let cores = ember_sandbox::affinity::process_core_list();
    let one_per_core = std::env::var_os("TOKIO_WORKER_THREADS").is_none()
        && std::thread::available_parallelism().map_or(0, |n| n.get()) == cores.len();
    if cores.len() > 1 && one_per_core {
        let next = std::sync::atomic::AtomicUsize::new(0);
        builder
            .worker_threads(cores.len())
            // Every thread starts on all cores (a blocking thread may have been started
            // from a bound worker); only workers go idle, and each is bound as it first does.
            .on_thread_start(ember_sandbox::affinity::unbind_current_thread)
            .on_thread_park(move || ember_sandbox::affinity::bind_worker(&cores, &next));
    }
    builder.build()
}

fn main() -> ExitCode {
    // The sandbox helpers, where `ember-init` is missing: recognised before the argument
    // parser, since a reaper's or shim's command line is another program's, flags and all.
    let args: Vec<String> = std::env::args().collect();
    ember_sandbox_oci::helpers::run(&args);
    let cli = Cli::parse();
    match cli.command {
        Command::EchoRuntime => return exit(echo_runtime::run()),
        Command::Sim(args) => return exit(sim::run(args)),
        _ => {}
    }
    let bind = matches!(&cli.command, Command::Server(args) if args.bind_workers);
    let runtime = match runtime(bind) {
        Ok(rt) => rt,
        Err(e) => {
            return exit(Err(
                anyhow::Error::new(e).context("could not start the async runtime")
            ));
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Deploy(args) => commands::deploy(args).await,
            Command::Invoke(args) => commands::invoke(args).await,
            Command::Ls(args) => commands::ls(args).await,
            Command::Get(args) => commands::get(args).await,
            Command::Rm(args) => commands::rm(args).await,
            Command::Logs(args) => commands::logs(args).await,
            Command::Keys(args) => commands::keys(args).await,
            Command::Stats(args) => observe::stats(args).await,
            Command::Usage(args) => observe::usage(args).await,
            Command::Events(args) => observe::events(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::EchoServer => bench::echo_server().await,
            Command::EchoRuntime | Command::Sim(_) => {
                unreachable!("handled above")
            }
        }
    });
    // Do not wait for lingering blocking tasks (a log follower, a slow unpack).
    runtime.shutdown_timeout(Duration::from_millis(100));
    exit(result)
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The default data directory: `./ember-data`, beside where the server is started.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("ember-data")
}
