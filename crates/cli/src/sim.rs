//! `ember sim`: capacity planning by simulation, through the live scheduling policies.
//!
//! `ember sim run [TRACE]` replays a CSV trace (or a generated one) through [`ember_sim`]
//! with the server's settings of the same names, and prints, per keep-alive policy side by
//! side, cold starts, added latency, throttles, concurrency, idle memory-time and cost (and
//! with `--svg`, a chart over time); `ember sim generate` writes a synthetic trace to replay
//! elsewhere (or against a live server).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ember_core::KeepAliveSetting;
use ember_core::usage::Prices;
use ember_policy::{Adaptive, Admission, KeepAlive, ScalePacing};
use ember_sim::{Call, Report, SimConfig, generate, simulate, trace};

#[derive(clap::Args)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(clap::Subcommand)]
enum SimCommand {
    /// Replay a trace and report cold starts, latency, throttles, concurrency, memory, cost.
    Run(Box<RunArgs>),
    /// Write a synthetic trace (CSV: at_ms,function,duration_ms,memory_mb).
    Generate(GenerateArgs),
}

#[derive(clap::Args)]
struct Generated {
    /// The shape of a generated trace: heavy-tailed (many rare functions, a few hot ones,
    /// timers and bursts, like production), poisson (steady), diurnal (a daily cycle), or
    /// spike (steady, then 20× for 5 minutes mid-span).
    #[arg(long, default_value = "heavy-tailed", value_parser = ["heavy-tailed", "poisson", "diurnal", "spike"])]
    generator: String,
    /// Mean calls per second per function, for poisson, diurnal and spike.
    #[arg(long, default_value_t = 0.01)]
    rate: f64,
    /// Functions in a generated trace.
    #[arg(long, default_value_t = 200)]
    functions: usize,
    /// Length of a generated trace.
    #[arg(long, default_value = "24h", value_parser = ember_core::duration::parse)]
    span: Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args)]
struct GenerateArgs {
    #[command(flatten)]
    generated: Generated,
    /// Where to write it; standard output if absent.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The trace to replay; a generated one (see --functions, --span, --seed) if absent.
    trace: Option<PathBuf>,
    #[command(flatten)]
    generated: Generated,
    /// Keep-alive policies to simulate side by side, comma-separated: `fixed` (for
    /// --keep-alive), `fixed:DURATION`, `adaptive`; `both` is `fixed,adaptive`.
    #[arg(long, default_value = "both")]
    policy: String,
    /// The fixed keep-alive (and the adaptive policy's fallback), as on the server.
    #[arg(long, default_value = "10m", value_parser = ember_core::duration::parse)]
    keep_alive: Duration,
    /// The adaptive policy's histogram bin, as on the server.
    #[arg(long, default_value = "1m", value_parser = ember_core::duration::parse)]
    adaptive_bin: Duration,
    /// The adaptive policy's idle-time percentile to keep environments until.
    #[arg(long, default_value_t = Adaptive::default().tail_percentile)]
    adaptive_tail: f64,
    /// The adaptive policy's idle-time percentile to pre-warm at.
    #[arg(long, default_value_t = Adaptive::default().head_percentile)]
    adaptive_head: f64,
    /// Below this coefficient of variation of its bins, a histogram is too flat to follow.
    #[arg(long, default_value_t = Adaptive::default().min_cv)]
    adaptive_min_cv: f64,
    /// What the adaptive policy counts one cold start as worth, in idle time of one
    /// environment.
    #[arg(long, default_value = "10m", value_parser = ember_core::duration::parse)]
    adaptive_cold_cost: Duration,
    #[arg(long, default_value_t = 1000)]
    account_concurrency: u32,
    #[arg(long, default_value_t = 1000)]
    scale_burst: u32,
    #[arg(long, default_value_t = 1000)]
    scale_refill: u32,
    #[arg(long, default_value = "10s", value_parser = ember_core::duration::parse)]
    scale_period: Duration,
    /// How long a call beyond the scale-up pace waits for an environment before it is
    /// throttled, as on the server.
    #[arg(long, default_value = "1s", value_parser = ember_core::duration::parse)]
    scale_wait: Duration,
    /// Provisioned environments of a function, as NAME=N; repeat for several.
    #[arg(long, value_parser = parse_provisioned)]
    provisioned: Vec<(String, u32)>,
    /// Memory of functions whose calls do not say, for memory-time and cost.
    #[arg(long, default_value_t = 128)]
    memory: u32,
    /// How long a cold start takes before the handler runs.
    #[arg(long, default_value = "0s", value_parser = ember_core::duration::parse)]
    init: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write an SVG chart of environments and cold starts over time, per policy.
    #[arg(long)]
    svg: Option<PathBuf>,
}

fn parse_provisioned(text: &str) -> Result<(String, u32), String> {
    let (name, n) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=N, got {text:?}"))?;
    let n = n
        .parse()
        .map_err(|_| format!("expected a number of environments after `=`, got {n:?}"))?;
    Ok((name.to_owned(), n))
}

fn generated(g: &Generated) -> Vec<Call> {
    match g.generator.as_str() {
        "poisson" => generate::poisson(g.seed, g.functions, g.span, g.rate),
        "diurnal" => generate::diurnal(g.seed, g.functions, g.span, g.rate),
        "spike" => generate::spike(g.seed, g.functions, g.span, g.rate),
        _ => generate::heavy_tailed(g.seed, g.functions, g.span),
    }
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.command {
        SimCommand::Generate(args) => {
            let text = trace::write(&generated(&args.generated));
            match args.out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("could not write {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
        SimCommand::Run(args) => replay(*args),
    }
}

fn replay(args: RunArgs) -> anyhow::Result<()> {
    let calls = match &args.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read {}", path.display()))?;
            trace::parse(&text).with_context(|| format!("{} is not a trace", path.display()))?
        }
        None => generated(&args.generated),
    };
    let adaptive = KeepAlive::Adaptive(Adaptive {
        bin: args.adaptive_bin,
        fallback_ttl: args.keep_alive,
        tail_percentile: args.adaptive_tail,
        head_percentile: args.adaptive_head,
        min_cv: args.adaptive_min_cv,
        cold_start_cost: args.adaptive_cold_cost,
        ..Adaptive::default()
    });
    let names = match args.policy.as_str() {
        "both" => "fixed,adaptive",
        other => other,
    };
    let policies: Vec<(String, KeepAlive)> = names
        .split(',')
        .map(|name| {
            let policy = match name.trim() {
                "fixed" => KeepAlive::Fixed {
                    ttl: args.keep_alive,
                },
                other => match other
                    .parse::<KeepAliveSetting>()
                    .map_err(anyhow::Error::msg)?
                {
                    KeepAliveSetting::Fixed(ttl) => KeepAlive::Fixed { ttl },
                    KeepAliveSetting::Adaptive => adaptive,
                },
            };
            Ok((name.trim().to_owned(), policy))
        })
        .collect::<anyhow::Result<_>>()?;
    let provisioned: HashMap<String, u32> = args.provisioned.iter().cloned().collect();
    let started = std::time::Instant::now();
    let reports: Vec<(String, Report)> = policies
        .into_iter()
        .map(|(name, keep_alive)| {
            let config = SimConfig {
                keep_alive,
                admission: Admission {
                    account_limit: args.account_concurrency,
                    unreserved_min: 0,
                },
                pacing: ScalePacing {
                    burst: args.scale_burst,
                    refill: args.scale_refill,
                    period: args.scale_period,
                    wait: args.scale_wait,
                },
                memory_mb: args.memory,
                init: args.init,
                provisioned: provisioned.clone(),
                prices: Prices::default(),
                timeline_points: 200,
            };
            (name, simulate(&calls, &config))
        })
        .collect();
    let elapsed = started.elapsed();
    if let Some(path) = &args.svg {
        let svg = ember_sim::chart::svg(&reports).map_err(anyhow::Error::msg)?;
        std::fs::write(path, svg).with_context(|| format!("could not write {}", path.display()))?;
    }
    if args.json {
        let body: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|(name, report)| Ok((name.clone(), serde_json::to_value(report)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let functions = reports.first().map_or(0, |(_, r)| r.functions.len());
    let hours = reports
        .first()
        .map_or(0.0, |(_, r)| r.span_seconds / 3600.0);
    println!(
        "{} calls to {functions} functions over {hours:.1} h, simulated in {:.2} s",
        calls.len(),
        elapsed.as_secs_f64()
    );
    let rows = reports
        .iter()
        .map(|(name, r)| {
            let t = &r.total;
            [
                name.clone(),
                t.cold_starts.to_string(),
                format!(
                    "{:.2}%",
                    100.0 * t.cold_starts as f64 / t.calls.max(1) as f64
                ),
                format!("{:.1}", r.added_latency.p50_ms),
                format!("{:.1}", r.added_latency.p99_ms),
                t.throttles.to_string(),
                r.peak_concurrency.to_string(),
                format!("{:.2}", r.mean_concurrency),
                t.prewarms.to_string(),
                format!("{:.0}", t.idle_gb_seconds),
                format!("${:.2}", r.cost),
            ]
        })
        .collect();
    crate::commands::print_table(
        &[
            "POLICY",
            "COLD STARTS",
            "COLD %",
            "ADDED P50 MS",
            "ADDED P99 MS",
            "THROTTLES",
            "PEAK CONC",
            "MEAN CONC",
            "PRE-WARMS",
            "IDLE GB-S",
            "COST",
        ],
        rows,
    )?;
    if let [(first, base), rest @ ..] = reports.as_slice() {
        for (name, r) in rest {
            println!(
                "{name} / {first}: cold starts ×{:.2}, idle memory-time ×{:.2}",
                r.total.cold_starts as f64 / base.total.cold_starts.max(1) as f64,
                r.total.idle_gb_seconds / base.total.idle_gb_seconds.max(f64::MIN_POSITIVE)
            );
        }
    }
    if let Some(path) = &args.svg {
        println!("chart: {}", path.display());
    }
    Ok(())
}
