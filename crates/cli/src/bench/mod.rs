//! `ember bench`: every figure a user of a serverless platform compares, measured in one
//! run against baselines measured alongside, and written up as a report with charts.
//!
//! It starts a private server (temporary data directory, ephemeral port), deploys the same
//! workloads (`workloads.rs`: hello, 10 ms of CPU, a 1 MB echo, a 300 ms init) on each
//! runtime (`provided`, `python3`, `nodejs`, `wasm`), and measures:
//!
//! - **warm latency** p50/p99/p99.9, one client and 16, beside a direct HTTP round trip to a
//!   trivial hyper server in another process (`ember echo-server`): the floor of any hop;
//! - **throughput** at 1, 16 and 64 clients (`load.rs`, the one load generator every server
//!   here is driven by);
//! - **cold starts** per runtime and backend (`process`, `runc`, `gvisor`, `wasm`), split into
//!   Ember's stages from each response's `Server-Timing`, beside each runtime's bare start;
//! - **heavy init**: cold, warm and provisioned first calls;
//! - **scale-out**: 0 → 100 environments in a burst;
//! - **density**: memory per idle environment, Ember's share, and how many fit in 4 GiB;
//! - **latency against load**: p99 at 10–90% of the throughput ceiling (an open loop);
//! - **a runtime without a platform**: `awslambdaric` against a minimal Runtime API;
//! - **WebAssembly** (`wasm.rs`) beside `workerd` and `deno`;
//! - frozen, signed and asynchronous calls.
//!
//! Two runs on one machine should agree on every ratio within ±15%, so a figure and its
//! baseline are taken in turns rather than one after the other: sequential calls in
//! [`TURNS`] turns per target, throughput over short rounds ([`ROUND`]) per target in turns,
//! cold starts alternating with the runtime's bare start, each after the environments
//! before are torn down (`EnvironmentsDestroying` of `/ember/v1/stats` back at 0), the
//! scale-out figure as the median of [`BURSTS`] bursts, each just after the same hundred
//! starts with no platform; and
//! each section starts once the host's CPU is quiet (the kernel tears namespaces and
//! cgroups down in the background).
//!
//! Everything lands in `<out>/<timestamp>/`: `results.json`, `report.md` and SVG charts
//! (`charts.rs`). `--publish DIR` also writes the report as `DIR/benchmarks.md` with its
//! charts in `DIR/benchmarks/`; `--compare FILE` adds a section setting this run's ratios
//! beside an earlier `results.json`'s.

mod charts;
mod load;
mod results;
mod runtime_client;
mod wasm;
mod workloads;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::client::Client;
use crate::commands::create_or_update;
use load::{Request, Stop};
use results::{
    ColdStart, Density, Extras, Floor, HeavyInit, Latency, LoadCurve, LoadPoint, Machine, Rate,
    Results, RuntimeFigures, ScaleOut, Stages,
};
use workloads::{RUNTIMES, Runtime};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Sequential warm invocations per latency figure.
    #[arg(long, default_value_t = 2000)]
    warm: usize,
    /// Cold starts per runtime and backend (five times as many on wasm), and at most as
    /// many scale-out bursts per runtime (9 at most; 49 on wasm).
    #[arg(long, default_value_t = 21)]
    cold: usize,
    /// Seconds each throughput and load point runs (a throughput point in five rounds).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Where the results go: a directory per run, named by its start time.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Also write the report to DIR/benchmarks.md, its charts to DIR/benchmarks/.
    #[arg(long, value_name = "DIR")]
    publish: Option<PathBuf>,
    /// An earlier run's results.json: its headline ratios are set beside this run's.
    #[arg(long, value_name = "FILE")]
    compare: Option<PathBuf>,
    /// Where the peers (`workerd`, `deno`) are installed with npm: their binaries are
    /// looked for in `<peers>/node_modules/.bin`, then on PATH.
    #[arg(long, default_value = "bench-peers")]
    peers: PathBuf,
    /// Seconds each section waits at most for the host's CPU to quiet down before it
    /// starts (0: it does not wait).
    #[arg(long, default_value_t = 30.0)]
    settle: f64,
}

impl BenchArgs {
    fn run_for(&self) -> Duration {
        Duration::from_secs_f64(self.seconds.max(0.1))
    }

    fn settle(&self) -> Duration {
        Duration::from_secs_f64(self.settle.max(0.0))
    }
}

/// How far apart two runs' ratios may be and still count as repeatable.
const REPEATABLE: f64 = 0.15;

/// The event of the asynchronous figures.
const PAYLOAD: &[u8] = workloads::HELLO;

/// Concurrencies of the throughput figures.
const CONCURRENCY: [usize; 3] = [1, 16, 64];

/// Environments in the scale-out burst.
const BURST: usize = 100;

/// Idle environments for the density figure.
const IDLE: u32 = 50;

fn invoke_path(name: &str) -> String {
    format!("/2015-03-31/functions/{name}/invocations")
}

/// Time since the Unix epoch as `2026-11-23T01-02-03Z` (a directory name).
fn timestamp() -> String {
    let stamp = ember_core::time::lambda_timestamp(SystemTime::now());
    format!("{}Z", stamp[..19].replace(':', "-"))
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".into(), |(_, v)| v.trim().to_owned());
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or("Linux".into(), |v| v.trim_matches('"').to_owned());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        os,
    }
}

/// A `Key:  N kB` line of a `/proc/<pid>/` file, in bytes.
fn proc_bytes(pid: u32, file: &str, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

/// Proportional resident memory of a process, in bytes.
fn pss_bytes(pid: u32) -> Option<f64> {
    proc_bytes(pid, "smaps_rollup", "Pss:")
}

fn rss_bytes(pid: u32) -> anyhow::Result<f64> {
    proc_bytes(pid, "status", "VmRSS:").with_context(|| format!("no VmRSS for process {pid}"))
}

/// Every descendant of `root`, by parent links in `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command may hold spaces and parentheses: fields start after the last ')'.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
        else {
            continue;
        };
        parent.push((pid, ppid));
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// The stages of a `Server-Timing` header, in microseconds.
fn stages(header: Option<&str>) -> Stages {
    let mut s = Stages::default();
    for entry in header.unwrap_or_default().split(", ") {
        let Some((name, dur)) = entry.split_once(";dur=") else {
            continue;
        };
        let us = dur.parse::<f64>().unwrap_or(0.0) * 1000.0;
        match name {
            "placement" => s.placement_us = us,
            "sandbox" => s.sandbox_us = us,
            "runtime-init" => s.runtime_init_us = us,
            "code-init" => s.code_init_us = us,
            "handler" => s.handler_us = us,
            _ => {}
        }
    }
    s
}

/// The middle value (the upper of the two middle ones), or 0 with none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Each stage's median.
fn median_stages(all: &[Stages]) -> Stages {
    let med = |f: fn(&Stages) -> f64| median(all.iter().map(f).collect());
    Stages {
        placement_us: med(|s| s.placement_us),
        sandbox_us: med(|s| s.sandbox_us),
        runtime_init_us: med(|s| s.runtime_init_us),
        code_init_us: med(|s| s.code_init_us),
        handler_us: med(|s| s.handler_us),
    }
}

/// Calls `name` once, failing on a function error; its latency and `Server-Timing`.
async fn call_once(
    client: &Client,
    path: &str,
    payload: &[u8],
) -> anyhow::Result<(Duration, Stages)> {
    let t = Instant::now();
    let answer = client
        .request(Method::POST, path, &[], payload.to_vec())
        .await?;
    let elapsed = t.elapsed();
    if answer.status != 200 || answer.headers.contains_key("x-amz-function-error") {
        bail!(
            "{path} failed ({}): {}",
            answer.status,
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
        );
    }
    Ok((elapsed, stages(answer.header("server-timing"))))
}

/// Retires `name`'s environments: a configuration change does.
async fn retire(client: &Client, name: &str, note: &str) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&json!({ "Description": note }))?;
    client
        .call(
            Method::PUT,
            &format!("/2015-03-31/functions/{name}/configuration"),
            &[],
            body,
        )
        .await?;
    Ok(())
}

/// CPU time the host spent busy and in all, in clock ticks, from `/proc/stat`.
fn cpu_ticks() -> Option<(u64, u64)> {
    cpu_times().map(|t| (t.all - t.idle, t.all))
}

/// The host's CPU time so far, in ticks, from `/proc/stat`.
struct CpuTimes {
    idle: u64,
    /// Taken by the hypervisor for other guests: busy as far as this machine can tell.
    steal: u64,
    all: u64,
}

fn cpu_times() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    Some(CpuTimes {
        idle: fields.get(3)? + fields.get(4)?,
        steal: *fields.get(7)?,
        all: fields.iter().take(8).sum(),
    })
}

/// The share of the CPU time between `before` and now that the hypervisor took.
fn stolen_since(before: &Option<CpuTimes>) -> Option<f64> {
    let (before, now) = (before.as_ref()?, cpu_times()?);
    let all = now.all.checked_sub(before.all).filter(|a| *a > 0)?;
    Some(now.steal.saturating_sub(before.steal) as f64 / all as f64)
}

/// A section during which the hypervisor took more than this share of the CPU is measured
/// again.
const STOLEN: f64 = 0.02;

/// Most times a section is measured while the hypervisor keeps taking the CPU.
const ATTEMPTS: usize = 3;

/// Runs `measure` again while the hypervisor took more than [`STOLEN`] of the CPU during it,
/// [`ATTEMPTS`] times at most, and keeps the least disturbed run: on a virtual machine whose
/// host is busy, other guests take the CPU in bursts, and a burst moves whichever figure it
/// lands on, not its baseline taken a moment apart.
async fn least_stolen<T, F, Fut>(what: &str, mut measure: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut best: Option<(f64, T)> = None;
    for _ in 0..ATTEMPTS {
        let before = cpu_times();
        let value = measure().await?;
        let Some(stolen) = stolen_since(&before) else {
            return Ok(value);
        };
        if stolen <= STOLEN {
            return Ok(value);
        }
        eprintln!(
            "{what}: the hypervisor took {:.1}% of the CPU meanwhile",
            stolen * 100.0
        );
        if best.as_ref().is_none_or(|(least, _)| stolen < *least) {
            best = Some((stolen, value));
        }
    }
    Ok(best.expect("measured at least once").1)
}

/// Host CPU busier than this (a share of all cores) is not quiet.
const QUIET: f64 = 0.10;

/// Until the host's CPU is quiet for a quarter of a second, or `at_most` has passed: the kernel
/// tears down a section's namespaces and cgroups in the background, and that work would
/// otherwise land on the next section's figures. How long it waited.
async fn quiet(at_most: Duration) -> Duration {
    let began = Instant::now();
    let Some(mut last) = cpu_ticks() else {
        return Duration::ZERO;
    };
    while began.elapsed() < at_most {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(now) = cpu_ticks() else { break };
        let (busy, all) = (now.0 - last.0, now.1 - last.1);
        last = now;
        if all > 0 && (busy as f64) < QUIET * all as f64 {
            break;
        }
    }
    began.elapsed()
}

/// Starts a section of the run: says which, and waits for a quiet host first.
async fn section(what: &str, args: &BenchArgs) {
    let waited = quiet(args.settle()).await;
    if waited > Duration::from_secs(1) {
        eprintln!(
            "{what} (after {:.0} s for the host to quiet down)",
            waited.as_secs_f64()
        );
    } else {
        eprintln!("{what}");
    }
}

/// Calls `check` every `every` until it answers `Break`; past `limit`, fails with the state
/// it answered last (`Continue`).
async fn poll_until<T, F, Fut>(limit: Duration, every: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<ControlFlow<T, String>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let state = match check().await? {
            ControlFlow::Break(done) => return Ok(done),
            ControlFlow::Continue(state) => state,
        };
        if Instant::now() > deadline {
            bail!("{state} after {limit:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// `GET path` of the server, as JSON.
async fn get_json(client: &Client, path: &str) -> anyhow::Result<serde_json::Value> {
    let answer = client.call(Method::GET, path, &[], Vec::new()).await?;
    Ok(serde_json::from_slice(&answer.body)?)
}

/// Until every retired environment is torn down: a teardown running beside the next
/// measurement would be measured with it.
async fn settled(client: &Client) -> anyhow::Result<()> {
    poll_until(
        Duration::from_secs(60),
        Duration::from_millis(2),
        || async move {
            let stats = get_json(client, "/ember/v1/stats").await?;
            Ok(if stats["EnvironmentsDestroying"] == 0 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!(
                    "retired environments still being torn down: {stats}"
                ))
            })
        },
    )
    .await
}

/// One cold start of `name` (its environments retired and torn down first): its latency
/// and stages.
async fn cold_start(
    client: &Client,
    name: &str,
    payload: &[u8],
    i: usize,
) -> anyhow::Result<(Duration, Stages)> {
    retire(client, name, &format!("cold sample {i}")).await?;
    settled(client).await?;
    let (t, s) = call_once(client, &invoke_path(name), payload).await?;
    if s.sandbox_us == 0.0 && s.runtime_init_us == 0.0 && s.code_init_us == 0.0 {
        bail!("{name}'s call after a configuration change was not a cold start");
    }
    Ok((t, s))
}

/// Publishes a version of `name` with `n` provisioned environments and waits until they
/// are ready; the version's qualifier.
async fn provision(client: &Client, name: &str, n: u32) -> anyhow::Result<String> {
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
    let body = serde_json::to_vec(&json!({ "ProvisionedConcurrentExecutions": n }))?;
    client.call(Method::PUT, &path, &[], body).await?;
    let path = &path;
    poll_until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        || async move {
            let state = get_json(client, path).await?;
            Ok(if state["Status"] == "READY" {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(format!(
                    "{n} provisioned environments of {name} not ready: {state}"
                ))
            })
        },
    )
    .await?;
    Ok(qualifier)
}

async fn unprovision(client: &Client, name: &str, qualifier: &str) -> anyhow::Result<()> {
    let path =
        format!("/2019-09-30/functions/{name}/provisioned-concurrency?Qualifier={qualifier}");
    client.call(Method::DELETE, &path, &[], Vec::new()).await?;
    Ok(())
}

/// Every client's calls before a figure is taken: enough for every client to have its own
/// warm environment first (a cold start is not what a throughput figure measures).
const WARM_UP: Stop = Stop::Count(20);

/// Turns a sequential figure is taken in. Every target's samples are taken in turns with
/// every other's (a figure's and its baseline's alike), so a drift of the machine over the
/// run (another process, the page cache, the CPU's clock) moves them together rather than
/// their ratio.
const TURNS: usize = FLOOR_PROCESSES;

/// How long one throughput round lasts. Rounds of every target are taken in turns and a
/// point's rate is over all its rounds. On this kind of virtual machine loopback throughput drifts
/// by ±20% over a few seconds (other guests share the host's cores) and holds still for
/// well under a second: with short rounds in turns, a figure and its baseline see the same
/// stretches of the machine. Rounds of one second or more let one target meet a slow
/// stretch that its baseline missed, and ratios moved by 16% between two runs.
const ROUND: Duration = Duration::from_millis(250);

/// Fewest rounds of a throughput point (when `--seconds` is short).
const ROUNDS: usize = 5;

/// Rounds of a throughput point that runs `run_for` per target in all.
fn rounds(run_for: Duration) -> usize {
    ((run_for.as_secs_f64() / ROUND.as_secs_f64()).round() as usize).max(ROUNDS)
}

/// Processes of the direct hop's server. A one-client round trip between two processes
/// costs 40 µs on one pair and 80 µs on the next, depending on where the scheduler puts
/// them; the floor is taken over many, one per turn.
const FLOOR_PROCESSES: usize = 20;

/// A server and the request it gets: one side of a figure taken in turns.
#[derive(Clone, Copy)]
struct Target<'a> {
    /// Processes of the same server: each turn goes to the next.
    servers: &'a [String],
    request: &'a Request,
}

impl Target<'_> {
    fn base(&self, turn: usize) -> &str {
        &self.servers[turn % self.servers.len()]
    }
}

/// `n` sequential calls to each target in [`TURNS`] turns, after `warm_up` calls each.
async fn sequential_in_turns(
    targets: &[Target<'_>],
    warm_up: usize,
    n: usize,
) -> anyhow::Result<Vec<Vec<Duration>>> {
    for t in targets {
        for base in t.servers {
            load::sequential(base, t.request, warm_up).await?;
        }
    }
    let mut out = vec![Vec::with_capacity(n); targets.len()];
    for turn in 0..TURNS {
        for (t, samples) in targets.iter().zip(&mut out) {
            let base = t.base(turn);
            samples.extend(load::sequential(base, t.request, n.div_ceil(TURNS)).await?);
        }
    }
    Ok(out)
}

/// Each target under `clients` closed-loop clients for `run_for` in all, in [`rounds`]
/// rounds of about [`ROUND`] taken in turns after a warm-up: its rate over all its rounds
/// (their requests over their time), and every latency.
///
/// All rounds count rather than the median one: where a target's rate swings from one
/// quarter second to the next (16 Node.js environments, each a process with its own
/// garbage collector, sharing two cores with the server and the load generator), the
/// median round is one draw of that swing, and the rounds together average it out.
async fn closed_in_rounds(
    targets: &[Target<'_>],
    clients: usize,
    run_for: Duration,
) -> anyhow::Result<Vec<(f64, Vec<Duration>)>> {
    let rounds = rounds(run_for);
    for t in targets {
        for turn in 0..rounds.min(t.servers.len()) {
            load::closed(t.base(turn), t.request, clients, WARM_UP).await?;
        }
    }
    let window = run_for / rounds as u32;
    let mut out = vec![(Duration::ZERO, Vec::new()); targets.len()];
    for round in 0..rounds {
        for (t, (elapsed, latencies)) in targets.iter().zip(&mut out) {
            let base = t.base(round);
            let sampled = load::closed(base, t.request, clients, Stop::After(window)).await?;
            *elapsed += sampled.elapsed;
            latencies.extend(sampled.latencies);
        }
    }
    Ok(out
        .into_iter()
        .map(|(elapsed, latencies)| {
            (
                latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
                latencies,
            )
        })
        .collect())
}

/// Each target's throughput at each of [`CONCURRENCY`].
async fn rates_in_rounds(
    targets: &[Target<'_>],
    run_for: Duration,
) -> anyhow::Result<Vec<Vec<Rate>>> {
    let mut out = vec![Vec::new(); targets.len()];
    for clients in CONCURRENCY {
        let point = closed_in_rounds(targets, clients, run_for).await?;
        for (rates, (rps, _)) in out.iter_mut().zip(point) {
            rates.push(Rate { clients, rps });
        }
    }
    Ok(out)
}

/// A warm figure of the direct hop or of one runtime's functions.
struct Warm {
    /// Sequential hello calls.
    hello: Vec<Duration>,
    /// Hello calls from 16 clients at once.
    loaded: Vec<Duration>,
    rates: Vec<Rate>,
    /// Sequential 1 MB echoes.
    echo: Vec<Duration>,
}

/// The warm figures of each `(servers, hello, echo)`, all taken in turns.
async fn warm_in_turns(
    targets: &[(&[String], Request, Request)],
    args: &BenchArgs,
) -> anyhow::Result<Vec<Warm>> {
    let hello: Vec<_> = targets
        .iter()
        .map(|(servers, request, _)| Target { servers, request })
        .collect();
    let echo: Vec<_> = targets
        .iter()
        .map(|(servers, _, request)| Target { servers, request })
        .collect();
    let sequential = least_stolen("warm latency", || {
        sequential_in_turns(&hello, (args.warm / 10).max(50), args.warm)
    })
    .await?;
    let loaded = closed_in_rounds(&hello, 16, args.run_for()).await?;
    let rates = rates_in_rounds(&hello, args.run_for()).await?;
    let echoes = sequential_in_turns(&echo, 3, (args.warm / 5).max(20)).await?;
    Ok(sequential
        .into_iter()
        .zip(loaded)
        .zip(rates)
        .zip(echoes)
        .map(|(((hello, (_, loaded)), rates), echo)| Warm {
            hello,
            loaded,
            rates,
            echo,
        })
        .collect())
}

/// The latency distribution's shape for the chart: (percentile, µs).
fn quantiles(mut samples: Vec<Duration>) -> Vec<(f64, f64)> {
    samples.sort_unstable();
    let qs = [
        1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9,
    ];
    if samples.is_empty() {
        return Vec::new();
    }
    qs.iter()
        .map(|q| {
            let i = ((samples.len() as f64 - 1.0) * q / 100.0).round() as usize;
            (*q, samples[i].as_secs_f64() * 1e6)
        })
        .collect()
}

/// One runtime's figures: its warm ones (taken in turns with the others), the CPU-bound
/// workload and heavy init.
async fn runtime_figures(
    client: &Client,
    base: &str,
    runtime: Runtime,
    warm: Warm,
    args: &BenchArgs,
) -> anyhow::Result<RuntimeFigures> {
    section(
        &format!("{}: 10 ms of CPU and heavy init…", runtime.name()),
        args,
    )
    .await;
    let cpu = Request::post(
        &invoke_path(&runtime.cpu_function()),
        workloads::cpu_event(),
    );
    load::sequential(base, &cpu, 5).await?;
    let cpu = Latency::of(load::sequential(base, &cpu, (args.warm / 20).max(20)).await?);

    let init_name = runtime.init_function();
    let n = args.cold.clamp(1, 5);
    let (mut cold, mut cold_stages) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (t, s) = cold_start(client, &init_name, workloads::HELLO, i).await?;
        cold.push(t);
        cold_stages.push(s);
    }
    let init_hello = Request::post(&invoke_path(&init_name), workloads::HELLO);
    let warm_init =
        Latency::of(load::sequential(base, &init_hello, (args.warm / 10).max(50)).await?);
    let qualifier = provision(client, &init_name, 1).await?;
    let path = format!("/2015-03-31/functions/{init_name}:{qualifier}/invocations");
    let mut provisioned = Vec::new();
    for _ in 0..n {
        provisioned.push(call_once(client, &path, workloads::HELLO).await?.0);
    }
    unprovision(client, &init_name, &qualifier).await?;
    Ok(RuntimeFigures {
        runtime: runtime.name().into(),
        hello: Latency::of(warm.hello),
        hello_loaded: Latency::of(warm.loaded),
        rates: warm.rates,
        cpu,
        echo_1mb: Latency::of(warm.echo),
        heavy_init: HeavyInit {
            cold: Latency::of(cold),
            cold_stages: median_stages(&cold_stages),
            warm: warm_init,
            provisioned: Latency::of(provisioned),
        },
    })
}

/// Bursts per scale-out figure of a process runtime: the median one is shown. With five, a
/// burst over its baseline moved by 25% between two runs; a burst of a hundred processes
/// meets more of the machine's moods than a single call does.
const BURSTS: usize = 9;

/// Bursts per scale-out figure of wasm, whose burst of 100 takes about 15 ms: one
/// scheduling hiccup moves a sample by a large share. With 25, the median moved by 14.8%
/// and 17.2% between two runs; each more burst costs about 1.3 s.
const WASM_BURSTS: usize = 49;

/// How many samples a cold-start figure of `runtime` takes, for `n` of a process runtime. A
/// wasm cold start is under a millisecond and its burst of 100 about 15 ms, so one
/// scheduling hiccup moves a sample by a large share: wasm takes five times as many.
fn cold_samples(runtime: Runtime, n: usize) -> usize {
    if runtime == Runtime::Wasm { n * 5 } else { n }
}

/// [`BURST`] calls at once to `runtime`'s holding function with no environment, in
/// [`BURSTS`] bursts ([`WASM_BURSTS`] on wasm; no more than `--cold`, five times that on
/// wasm), each on a quiet host (the burst before
/// leaves a hundred namespaces and cgroups for the kernel to tear down). Its baseline is the
/// same hundred starts with no platform ([`bare_burst`]), taken just before each burst, and
/// the ratio is the median of each burst over its own baseline: a burst is bound by how
/// much the two cores can start at once, as the bare burst is, so a slow stretch of the
/// machine moves both alike (a single cold start, bound by wake-ups rather than work, moved
/// 45% where a burst moved 15%).
async fn scale_out(
    client: &Client,
    runtime: Runtime,
    direct_url: &str,
    args: &BenchArgs,
) -> anyhow::Result<ScaleOut> {
    let name = runtime.sleep_function();
    let bursts_run = match runtime {
        Runtime::Wasm => WASM_BURSTS.min(cold_samples(runtime, args.cold.max(1))),
        _ => BURSTS.min(args.cold.max(1)),
    };
    let mut bare = Vec::new();
    let mut bursts = Vec::new();
    let mut ratios = Vec::new();
    for i in 0..bursts_run {
        retire(client, &name, &format!("scale-out {i}")).await?;
        settled(client).await?;
        quiet(args.settle()).await;
        let took = bare_burst(runtime, direct_url).await?;
        let (ready, fresh) = burst(client, runtime).await?;
        let last = ready.last().copied().unwrap_or(0.0);
        ratios.push(last / (took.as_secs_f64() * 1000.0).max(1e-9));
        bare.push(took);
        bursts.push((ready, fresh));
    }
    retire(client, &name, "after scale-out").await?;
    bursts.sort_by(|a, b| {
        a.0.last()
            .copied()
            .unwrap_or(0.0)
            .total_cmp(&b.0.last().copied().unwrap_or(0.0))
    });
    let (ready, fresh) = bursts.swap_remove(bursts.len() / 2);
    let seconds = ready.last().copied().unwrap_or(0.0) / 1000.0;
    Ok(ScaleOut {
        runtime: runtime.name().into(),
        environments: fresh,
        seconds,
        per_second: fresh as f64 / seconds.max(1e-9),
        ready_ms: ready,
        baseline: bare_burst_label(runtime),
        baseline_ms: Latency::of(bare).p50_us / 1000.0,
        ratio: median(ratios),
    })
}

/// The scale-out figure's baseline, [`BURST`] starts at once with no platform: the
/// runtime's bare start (as in the cold-start figures) run that many times at once, until
/// the last has exited; for a runtime with no process (wasm), that many calls at once to
/// the direct hop, each on a new connection, until the last is answered.
async fn bare_burst(runtime: Runtime, direct_url: &str) -> anyhow::Result<Duration> {
    let Some((_, program, argv)) = runtime.bare_start() else {
        let direct = Client::new(direct_url);
        let start = Instant::now();
        let calls: Vec<_> = (0..BURST)
            .map(|_| {
                let direct = direct.clone();
                tokio::spawn(async move { call_once(&direct, "/", workloads::HELLO).await })
            })
            .collect();
        for call in calls {
            call.await??;
        }
        return Ok(start.elapsed());
    };
    tokio::task::spawn_blocking(move || time_command(&program, argv, BURST)).await?
}

/// What [`bare_burst`] measures, as the report names it.
fn bare_burst_label(runtime: Runtime) -> String {
    match runtime.bare_start() {
        Some((label, _, _)) => format!("{label}, {BURST} at once"),
        None => format!("{BURST} direct hops at once"),
    }
}

/// One burst: when each call's environment took it (ms from the burst's start, sorted),
/// and how many environments were new.
async fn burst(client: &Client, runtime: Runtime) -> anyhow::Result<(Vec<f64>, usize)> {
    let path = invoke_path(&runtime.sleep_function());
    let event = runtime.sleep_event(1000);
    let start = Instant::now();
    let calls: Vec<_> = (0..BURST)
        .map(|_| {
            let (client, path, event) = (client.clone(), path.clone(), event.clone());
            tokio::spawn(async move {
                let (_, s) = call_once(&client, &path, event.as_bytes()).await?;
                // The environment took its call when the handler began.
                let took = start.elapsed().as_secs_f64() * 1000.0 - s.handler_us / 1000.0;
                anyhow::Ok((took, s.sandbox_us > 0.0 || s.runtime_init_us > 0.0))
            })
        })
        .collect();
    let mut ready = Vec::new();
    let mut fresh = 0;
    for call in calls {
        let (took, cold) = call.await??;
        ready.push(took);
        fresh += usize::from(cold);
    }
    ready.sort_by(f64::total_cmp);
    Ok((ready, fresh))
}

/// Memory of `IDLE` idle provisioned environments of `runtime`.
async fn density(
    client: &Client,
    runtime: Runtime,
    server_pid: u32,
    bare: Option<f64>,
) -> anyhow::Result<Density> {
    let name = runtime.function();
    retire(client, &name, "density").await?;
    settled(client).await?;
    let processes = |pids: &[u32]| pids.iter().filter_map(|p| pss_bytes(*p)).sum::<f64>();
    let before_pids = descendants(server_pid);
    let before = processes(&before_pids);
    let server_before = rss_bytes(server_pid)?;
    let qualifier = provision(client, &name, IDLE).await?;
    // Let the runtimes settle into their idle `/next`.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = processes(&descendants(server_pid));
    let server_after = rss_bytes(server_pid)?;
    unprovision(client, &name, &qualifier).await?;
    let n = f64::from(IDLE);
    // A wasm environment has no processes of its own: all it holds is in Ember's.
    let environment_bytes = if runtime == Runtime::Wasm {
        0.0
    } else {
        ((after - before) / n).max(0.0)
    };
    let platform_bytes = ((server_after - server_before) / n).max(0.0);
    let held = environment_bytes + platform_bytes;
    Ok(Density {
        runtime: runtime.name().into(),
        environments: IDLE as usize,
        environment_bytes,
        platform_bytes,
        fit_in_4gib: (held > 0.0).then(|| 4.0 * 1024.0 * 1024.0 * 1024.0 / held),
        bare_bytes: bare,
    })
}

/// The memory of a bare interpreter (or runtime binary) sitting idle: [`IDLE`] of them at
/// once, as many as the density figure's environments, so they share what they can as
/// those do.
async fn bare_bytes(runtime: Runtime) -> Option<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    let api = listener.local_addr().ok()?.to_string();
    let exe = std::env::current_exe().ok()?;
    let command = || {
        let mut c = match runtime {
            Runtime::Python => {
                let mut c = Command::new("/usr/bin/python3");
                c.args(["-c", "import time; time.sleep(60)"]);
                c
            }
            Runtime::Node => {
                let mut c = Command::new("/usr/bin/node");
                c.args(["-e", "setTimeout(() => {}, 60000)"]);
                c
            }
            // The runtime binary waiting on a Runtime API that never answers.
            Runtime::Provided => {
                let mut c = Command::new(&exe);
                c.arg("echo-runtime").env("AWS_LAMBDA_RUNTIME_API", &api);
                c
            }
            Runtime::Wasm => return None,
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Some(c)
    };
    let mut children = Vec::new();
    for _ in 0..IDLE {
        if let Ok(child) = command()?.spawn() {
            children.push(child);
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let total: f64 = children.iter().filter_map(|c| pss_bytes(c.id())).sum();
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(listener);
    (!children.is_empty()).then(|| total / children.len() as f64)
}

/// p99 of provided hello at 10–90% of its ceiling, beside the direct hop at the same rates.
async fn load_curve(base: &str, direct: &str, args: &BenchArgs) -> anyhow::Result<LoadCurve> {
    section("latency against load…", args).await;
    let runtime = Runtime::Provided;
    let hello = Request::post(&invoke_path(&runtime.function()), workloads::HELLO);
    let echo = Request::post("/", workloads::HELLO);
    load::closed(base, &hello, 64, WARM_UP).await?;
    let ceiling = load::closed(base, &hello, 64, Stop::After(args.run_for()))
        .await?
        .rate();
    let mut points = Vec::new();
    for percent in [10, 30, 50, 70, 90] {
        let rate = ceiling * f64::from(percent) / 100.0;
        let latency = load::open(base, &hello, rate, args.run_for(), 64).await?;
        let direct = load::open(direct, &echo, rate, args.run_for(), 64).await?;
        points.push(LoadPoint {
            percent,
            offered_rps: rate,
            latency: Latency::of(latency),
            direct: Latency::of(direct),
        });
    }
    Ok(LoadCurve {
        runtime: runtime.name().into(),
        ceiling_rps: ceiling,
        points,
    })
}

/// Frozen, signed and asynchronous calls of the provided function.
async fn extras(
    client: &Client,
    base: &str,
    args: &BenchArgs,
    sync_per_s: f64,
) -> anyhow::Result<Extras> {
    section("frozen, signed and asynchronous calls…", args).await;
    let name = Runtime::Provided.function();
    let path = invoke_path(&name);
    let n = args.warm.min(1000);
    let settings = format!("/ember/v1/functions/{name}/settings");
    let freeze = |on: bool| serde_json::to_vec(&json!({ "FreezeIdle": on }));
    client
        .call(Method::PUT, &settings, &[], freeze(true)?)
        .await?;
    let hello = Request::post(&path, workloads::HELLO);
    load::sequential(base, &hello, 50).await?;
    let frozen = Latency::of(load::sequential(base, &hello, n).await?);
    client
        .call(Method::PUT, &settings, &[], freeze(false)?)
        .await?;

    let enqueue = Latency::of(enqueue_latency(client, &name, n).await?);
    events_drained(client, &name, Duration::from_secs(300)).await?;
    let events_per_s = event_throughput(client, &name, 4, n).await?;

    // Last, because from the first key on every request must be signed.
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
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let (t, _) = call_once(&signed, &path, workloads::HELLO).await?;
        if i >= 50 {
            samples.push(t);
        }
    }
    Ok(Extras {
        frozen,
        signed: Latency::of(samples),
        event_enqueue: enqueue,
        events_per_s,
        sync_per_s,
    })
}

/// Whether the server can run functions on `isolation`: a function moved onto it answers.
async fn deploy_on(
    client: &Client,
    runtime: Runtime,
    isolation: &str,
) -> anyhow::Result<Option<String>> {
    let mut packages = workloads::packages(runtime)?;
    let mut package = packages.remove(0);
    let name = format!("{}-{isolation}", package.name);
    package.settings.isolation = Some(isolation.into());
    match create_or_update(client, &name, &package.zip, &package.settings).await {
        Ok(_) => Ok(Some(name)),
        Err(e) if isolation != "process" => {
            eprintln!("{} on {isolation}: {e:#}", runtime.name());
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let began = Instant::now();
    let times = cpu_times();
    let started = timestamp();
    let dir = args.out.join(&started);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let server = Server::start("main")?;
    let server_pid = server.child.id();
    let client = Client::new(&server.endpoint);
    let base = server.endpoint.clone();
    let mut skipped = Vec::new();

    eprintln!("deploying the benchmark functions…");
    let mut runtimes = Vec::new();
    for runtime in RUNTIMES {
        if let Some(why) = runtime.unavailable() {
            skipped.push(format!("{}: {why}", runtime.name()));
            continue;
        }
        for package in workloads::packages(runtime)? {
            create_or_update(&client, &package.name, &package.zip, &package.settings)
                .await
                .with_context(|| format!("deploying {}", package.name))?;
        }
        runtimes.push(runtime);
    }

    let mut bare_bytes_by = BTreeMap::new();
    for runtime in &runtimes {
        if let Some(b) = bare_bytes(*runtime).await {
            bare_bytes_by.insert(runtime.name().to_owned(), b);
        }
    }

    section(
        "warm latency and throughput, in turns with the direct hop…",
        &args,
    )
    .await;
    let echoes = (0..FLOOR_PROCESSES)
        .map(|_| EchoProcess::start())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let floor_urls: Vec<String> = echoes.iter().map(|e| e.url.clone()).collect();
    let direct_url = floor_urls[0].clone();
    let ember = [base.clone()];
    let targets: Vec<_> = std::iter::once((
        floor_urls.as_slice(),
        Request::post("/", workloads::HELLO),
        Request::post("/", workloads::echo_event()),
    ))
    .chain(runtimes.iter().map(|r| {
        let path = invoke_path(&r.function());
        (
            ember.as_slice(),
            Request::post(&path, workloads::HELLO),
            Request::post(&path, workloads::echo_event()),
        )
    }))
    .collect();
    let mut warm = warm_in_turns(&targets, &args).await?.into_iter();
    let direct = warm.next().context("no direct hop figures")?;
    let mut shapes = vec![charts::Line {
        name: "direct hop".into(),
        points: quantiles(direct.hello.clone()),
    }];
    let mut floor = Floor {
        direct: Latency::of(direct.hello),
        direct_1mb: Latency::of(direct.echo),
        direct_loaded: Latency::of(direct.loaded),
        direct_rates: direct.rates,
        bare_starts: BTreeMap::new(),
        bare_bytes: bare_bytes_by,
    };
    let mut figures = Vec::new();
    for (runtime, warm) in runtimes.iter().zip(warm) {
        shapes.push(charts::Line {
            name: runtime.name().into(),
            points: quantiles(warm.hello.clone()),
        });
        figures.push(runtime_figures(&client, &base, *runtime, warm, &args).await?);
    }

    // A runtime with no process to start (wasm) has the direct hop as its baseline, called
    // in turns with its cold starts by the same client.
    let direct_client = Client::new(&direct_url);
    call_once(&direct_client, "/", workloads::HELLO).await?;
    let mut cold = Vec::new();
    for runtime in &runtimes {
        section(
            &format!(
                "{}: cold starts by backend, in turns with its bare start…",
                runtime.name()
            ),
            &args,
        )
        .await;
        let mut on = Vec::new();
        for backend in runtime.backends() {
            let name = if *backend == "wasm" {
                Some(runtime.function())
            } else {
                deploy_on(&client, *runtime, backend).await?
            };
            match name {
                Some(name) => on.push((*backend, name)),
                None => skipped.push(format!(
                    "{} on {backend}: this host cannot run it",
                    runtime.name()
                )),
            }
        }
        let n = cold_samples(*runtime, args.cold);
        let bare = runtime.bare_start();
        let mut bare_samples = Vec::new();
        let mut samples = vec![(Vec::new(), Vec::new(), Vec::new()); on.len()];
        for i in 0..n {
            for ((_, name), (latencies, all, ratios)) in on.iter().zip(&mut samples) {
                let (t, s) = cold_start(&client, name, workloads::HELLO, i).await?;
                let b = match &bare {
                    Some((_, program, argv)) => time_command(program, argv, 1)?,
                    None => call_once(&direct_client, "/", workloads::HELLO).await?.0,
                };
                latencies.push(t);
                all.push(s);
                ratios.push(t.as_secs_f64() / b.as_secs_f64().max(1e-9));
                bare_samples.push(b);
            }
        }
        let baseline = match bare {
            Some((label, _, _)) => {
                let latency = Latency::of(bare_samples);
                floor.bare_starts.insert(label.to_owned(), latency);
                (label, latency.p50_us)
            }
            None => ("direct hop", Latency::of(bare_samples).p50_us),
        };
        for ((backend, name), (latencies, all, ratios)) in on.into_iter().zip(samples) {
            cold.push(ColdStart {
                runtime: runtime.name().into(),
                backend: backend.into(),
                latency: Latency::of(latencies),
                stages: median_stages(&all),
                baseline: baseline.0.into(),
                baseline_us: baseline.1,
                ratio: median(ratios),
            });
            if backend != "wasm" && backend != "process" {
                retire(&client, &name, "done").await?;
            }
        }
    }

    let mut scale = Vec::new();
    for runtime in &runtimes {
        section(&format!("{}: scale-out…", runtime.name()), &args).await;
        scale.push(scale_out(&client, *runtime, &direct_url, &args).await?);
    }
    let mut dense = Vec::new();
    for runtime in &runtimes {
        let bare = floor.bare_bytes.get(runtime.name()).copied();
        section(&format!("{}: density…", runtime.name()), &args).await;
        dense.push(density(&client, *runtime, server_pid, bare).await?);
    }
    let load = load_curve(&base, &direct_url, &args).await?;

    let python = runtimes.iter().find(|r| **r == Runtime::Python);
    let runtime_client = match python {
        Some(python) => {
            let hello = Request::post(&invoke_path(&python.function()), workloads::HELLO);
            match runtime_client::measure(&args, (&base, &hello)).await {
                Ok(measured) => Some(results::RuntimeClient {
                    awslambdaric: measured.awslambdaric,
                    ember_python: measured.ember,
                    awslambdaric_start: measured.start,
                }),
                Err(e) => {
                    skipped.push(format!("awslambdaric: {e:#}"));
                    None
                }
            }
        }
        None => None,
    };

    let peers = wasm::figures(&client, &floor_urls, &args).await?;
    for (name, why) in &peers.missing {
        skipped.push(format!("{name}: {why}"));
    }
    let sync_per_s = figures
        .iter()
        .find(|f| f.runtime == "provided")
        .and_then(|f| f.rates.iter().find(|r| r.clients == 1))
        .map_or(0.0, |r| r.rps);
    let extras = extras(&client, &base, &args, sync_per_s).await?;
    drop(echoes);
    drop(server);

    let mut results = Results {
        started,
        // The program as a user names it; the arguments exactly as given.
        command: std::iter::once("ember".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        seconds: began.elapsed().as_secs_f64(),
        stolen: stolen_since(&times),
        machine: machine(),
        floor,
        runtimes: figures,
        cold,
        scale_out: scale,
        density: dense,
        load: Some(load),
        runtime_client,
        peers,
        extras,
        skipped,
        headline: BTreeMap::new(),
    };
    results.headline = results.headline_ratios();
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    charts::write_all(&dir, &results, &shapes)?;
    let repeat = match &args.compare {
        Some(previous) => compare(previous, &results)?,
        None => String::new(),
    };
    let report = results.markdown("") + &repeat;
    std::fs::write(dir.join("report.md"), &report)?;
    if let Some(docs) = &args.publish {
        let charts_dir = docs.join("benchmarks");
        std::fs::create_dir_all(&charts_dir)?;
        charts::write_all(&charts_dir, &results, &shapes)?;
        std::fs::write(
            docs.join("benchmarks.md"),
            results.markdown("benchmarks/") + &repeat,
        )?;
        eprintln!(
            "report published to {}",
            docs.join("benchmarks.md").display()
        );
    }
    println!("{report}");
    println!("\nresults, report and charts in {}", dir.display());
    Ok(())
}

/// One headline ratio in two runs.
struct Change {
    name: String,
    before: f64,
    now: f64,
}

impl Change {
    fn relative(&self) -> f64 {
        self.now / self.before - 1.0
    }

    fn repeatable(&self) -> bool {
        self.relative().abs() <= REPEATABLE
    }
}

/// The headline ratios both runs have.
fn changes(before: &Results, now: &Results) -> Vec<Change> {
    now.headline
        .iter()
        .filter_map(|(name, &now)| {
            Some(Change {
                name: name.clone(),
                before: *before.headline.get(name)?,
                now,
            })
        })
        .collect()
}

/// This run's headline ratios beside an earlier run's, as a section of the report.
fn compare(previous: &Path, now: &Results) -> anyhow::Result<String> {
    let before: Results = serde_json::from_slice(
        &std::fs::read(previous).with_context(|| format!("reading {}", previous.display()))?,
    )
    .with_context(|| format!("{} is not an ember bench results.json", previous.display()))?;
    let mut m = String::new();
    let _ = writeln!(
        m,
        "\n## Repeatability\n\nThis run's headline ratios beside those of the run started {}.{}\n",
        before.started,
        match (before.stolen, now.stolen) {
            (Some(b), Some(n)) => format!(
                " The hypervisor took {:.1}% of the CPU time during that run, {:.1}% during this one.",
                b * 100.0,
                n * 100.0
            ),
            _ => String::new(),
        }
    );
    let _ = writeln!(
        m,
        "| ratio | before | now | change | within ±{:.0}% |\n|---|---:|---:|---:|---|",
        REPEATABLE * 100.0
    );
    let all = changes(&before, now);
    for c in &all {
        let _ = writeln!(
            m,
            "| {} | {:.2} | {:.2} | {:+.1}% | {} |",
            c.name,
            c.before,
            c.now,
            c.relative() * 100.0,
            if c.repeatable() { "yes" } else { "no" }
        );
    }
    let off = all.iter().filter(|c| !c.repeatable()).count();
    let _ = writeln!(
        m,
        "\n{} of {} ratios within ±{:.0}%{}.",
        all.len() - off,
        all.len(),
        REPEATABLE * 100.0,
        if off == 0 {
            ""
        } else {
            "; the others moved more"
        }
    );
    Ok(m)
}

/// A private `ember server`.
struct Server {
    child: Child,
    endpoint: String,
    data_dir: PathBuf,
}

impl Server {
    /// A server with a data directory of its own, named after the bench and `tag`.
    fn start(tag: &str) -> anyhow::Result<Server> {
        let data_dir =
            std::env::temp_dir().join(format!("ember-bench-{}-{tag}", std::process::id()));
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

/// Serves HTTP/1.1 on `listener`, each connection on its own task, every request answered
/// by `handle`.
async fn serve<F, Fut>(listener: tokio::net::TcpListener, handle: F)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<hyper::Response<Full<bytes::Bytes>>, Infallible>>
        + Send
        + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                .await;
        });
    }
}

/// A request's whole body; empty if it could not be read.
async fn body_bytes(req: hyper::Request<hyper::body::Incoming>) -> bytes::Bytes {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

/// Answers every request with its body.
async fn serve_echo(listener: tokio::net::TcpListener) {
    serve(
        listener,
        |req: hyper::Request<hyper::body::Incoming>| async move {
            let body = body_bytes(req).await;
            Ok::<_, Infallible>(hyper::Response::new(Full::new(body)))
        },
    )
    .await;
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
    poll_until(limit, Duration::from_millis(5), || async move {
        let body = get_json(client, "/ember/v1/events").await?;
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
        Ok(if left == 0 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(format!("{left} events of {name} still unfinished"))
        })
    })
    .await
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

/// `copies` runs of `program` started at once, until the last has ended.
fn time_command(program: &Path, args: &[&str], copies: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let children = (0..copies)
        .map(|_| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot run {}", program.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            bail!("{} {args:?} failed: {status}", program.display());
        }
    }
    Ok(t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_becomes_stages_in_microseconds() {
        let s = stages(Some(
            "placement;dur=0.193, sandbox;dur=2.177, runtime-init;dur=36.5, code-init;dur=299.016, handler;dur=0.302",
        ));
        assert_eq!(s.placement_us, 193.0);
        assert_eq!(s.sandbox_us, 2177.0);
        assert_eq!(s.runtime_init_us, 36_500.0);
        assert!((s.code_init_us - 299_016.0).abs() < 1e-6);
        assert_eq!(s.handler_us, 302.0);
        let warm = stages(Some("placement;dur=0.05, handler;dur=1"));
        assert_eq!((warm.sandbox_us, warm.handler_us), (0.0, 1000.0));
        assert_eq!(stages(None).handler_us, 0.0);
    }

    #[test]
    fn stage_medians_are_taken_stage_by_stage() {
        let at = |sandbox_us, handler_us| Stages {
            sandbox_us,
            handler_us,
            ..Stages::default()
        };
        let m = median_stages(&[at(1.0, 30.0), at(3.0, 10.0), at(2.0, 20.0)]);
        assert_eq!((m.sandbox_us, m.handler_us), (2.0, 20.0));
    }

    #[test]
    fn a_child_process_is_among_the_descendants_and_has_memory() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let found = descendants(std::process::id());
        let pss = pss_bytes(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
        assert!(pss.is_some_and(|b| b > 0.0));
    }

    #[test]
    fn a_ratio_that_moved_more_than_fifteen_percent_is_not_repeatable() {
        let mut before = results::tests::sample();
        before.headline = BTreeMap::from([
            ("steady".to_owned(), 2.0),
            ("moved".to_owned(), 2.0),
            ("only before".to_owned(), 1.0),
        ]);
        let mut now = before.clone();
        now.headline = BTreeMap::from([
            ("steady".to_owned(), 2.2),
            ("moved".to_owned(), 2.4),
            ("only now".to_owned(), 1.0),
        ]);
        let all = changes(&before, &now);
        let verdicts: Vec<(&str, bool)> = all
            .iter()
            .map(|c| (c.name.as_str(), c.repeatable()))
            .collect();
        assert_eq!(verdicts, [("moved", false), ("steady", true)]);

        let dir = tempfile::tempdir().unwrap();
        let earlier = dir.path().join("results.json");
        std::fs::write(&earlier, serde_json::to_vec(&before).unwrap()).unwrap();
        let section = compare(&earlier, &now).unwrap();
        assert!(
            section.contains("| moved | 2.00 | 2.40 | +20.0% | no |"),
            "{section}"
        );
        assert!(section.contains("1 of 2 ratios within ±15%"), "{section}");
        assert!(
            section.contains("2.0% of the CPU time during that run, 2.0% during this one"),
            "{section}"
        );
    }
}
