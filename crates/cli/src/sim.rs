//! `ember sim`: capacity planning by simulation, through the live scheduling policies.
//!
//! `ember sim run [TRACE]` replays a CSV trace (or a generated heavy-tailed one) through
//! [`ember_sim`] with the server's settings of the same names, and prints cold starts,
//! throttles and idle memory-time per keep-alive policy; `ember sim generate` writes a
//! synthetic trace to replay elsewhere (or against a live server).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ember_policy::{Adaptive, Admission, KeepAlive, ScalePacing};
use ember_sim::{Report, SimConfig, generate, simulate, trace};

#[derive(clap::Args)]
pub struct SimArgs {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(clap::Subcommand)]
enum SimCommand {
    /// Replay a trace and report cold starts, throttles and idle memory-time.
    Run(RunArgs),
    /// Write a heavy-tailed synthetic trace (CSV: at_ms,function,duration_ms).
    Generate(GenerateArgs),
}

#[derive(clap::Args)]
struct Generated {
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
    /// Keep-alive policy to simulate: fixed, adaptive, or both side by side.
    #[arg(long, default_value = "both", value_parser = ["fixed", "adaptive", "both"])]
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
    /// Memory of each function, for idle memory-time.
    #[arg(long, default_value_t = 128)]
    memory: u32,
    /// How long a cold start takes before the handler runs.
    #[arg(long, default_value = "0s", value_parser = ember_core::duration::parse)]
    init: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.command {
        SimCommand::Generate(args) => {
            let g = &args.generated;
            let text = trace::write(&generate::heavy_tailed(g.seed, g.functions, g.span));
            match args.out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("could not write {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
        SimCommand::Run(args) => replay(args),
    }
}

fn replay(args: RunArgs) -> anyhow::Result<()> {
    let calls = match &args.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read {}", path.display()))?;
            trace::parse(&text).with_context(|| format!("{} is not a trace", path.display()))?
        }
        None => {
            let g = &args.generated;
            generate::heavy_tailed(g.seed, g.functions, g.span)
        }
    };
    let fixed = KeepAlive::Fixed {
        ttl: args.keep_alive,
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
    let policies: Vec<(&str, KeepAlive)> = match args.policy.as_str() {
        "fixed" => vec![("fixed", fixed)],
        "adaptive" => vec![("adaptive", adaptive)],
        _ => vec![("fixed", fixed), ("adaptive", adaptive)],
    };
    let reports: Vec<(&str, Report)> = policies
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
                    wait: Duration::ZERO,
                },
                memory_mb: args.memory,
                init: args.init,
            };
            (name, simulate(&calls, &config))
        })
        .collect();
    if args.json {
        let body: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|(name, report)| Ok(((*name).to_owned(), serde_json::to_value(report)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let functions = reports.first().map_or(0, |(_, r)| r.functions.len());
    println!("{} calls to {functions} functions", calls.len());
    println!(
        "{:<10} {:>12} {:>8} {:>10} {:>10} {:>16}",
        "policy", "cold starts", "cold %", "throttles", "pre-warms", "idle GB-s"
    );
    for (name, r) in &reports {
        let t = &r.total;
        println!(
            "{:<10} {:>12} {:>7.2}% {:>10} {:>10} {:>16.0}",
            name,
            t.cold_starts,
            100.0 * t.cold_starts as f64 / (t.calls.max(1)) as f64,
            t.throttles,
            t.prewarms,
            t.idle_gb_seconds
        );
    }
    if let [(_, fixed), (_, adaptive)] = reports.as_slice() {
        println!(
            "adaptive / fixed: cold starts ×{:.2}, idle memory-time ×{:.2}",
            adaptive.total.cold_starts as f64 / fixed.total.cold_starts.max(1) as f64,
            adaptive.total.idle_gb_seconds / fixed.total.idle_gb_seconds.max(f64::MIN_POSITIVE)
        );
    }
    Ok(())
}
