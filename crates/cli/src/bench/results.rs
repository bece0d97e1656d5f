//! What one run of `ember bench` measured (written as `results.json`) and its report (the
//! Markdown beside it): every figure next to its baseline from the same run, as a ratio.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency percentiles of a sample, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    pub n: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            samples[((samples.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6
        };
        Latency {
            n: samples.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
        }
    }
}

/// Requests per second at a concurrency.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Rate {
    pub clients: usize,
    pub rps: f64,
}

/// A cold start's median stages, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Stages {
    pub placement_us: f64,
    pub sandbox_us: f64,
    pub runtime_init_us: f64,
    pub code_init_us: f64,
    pub handler_us: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Floor {
    /// A request and its answer to a trivial hyper server in another process.
    pub direct: Latency,
    /// The same with a 1 MB body each way.
    pub direct_1mb: Latency,
    /// The same at 16 clients at once.
    pub direct_loaded: Latency,
    pub direct_rates: Vec<Rate>,
    /// Each runtime's bare start: `python3 -c pass`, `node -e 0`, exec of the Rust binary.
    pub bare_starts: BTreeMap<String, Latency>,
    /// Resident memory (PSS) of each bare interpreter, idle.
    pub bare_bytes: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeavyInit {
    /// The first call after deploy: init included.
    pub cold: Latency,
    pub cold_stages: Stages,
    /// Later calls, the environment kept.
    pub warm: Latency,
    /// The first call to a version with a provisioned environment ready.
    pub provisioned: Latency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeFigures {
    pub runtime: String,
    pub hello: Latency,
    /// Hello at 16 clients at once.
    pub hello_loaded: Latency,
    pub rates: Vec<Rate>,
    pub cpu: Latency,
    pub echo_1mb: Latency,
    pub heavy_init: HeavyInit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdStart {
    pub runtime: String,
    pub backend: String,
    pub latency: Latency,
    pub stages: Stages,
    /// What it is compared with, and that figure's p50.
    pub baseline: String,
    pub baseline_us: f64,
    /// The median of each cold start over the bare start taken right after it (0 in
    /// results from before it was recorded: the p50s' ratio stands in).
    #[serde(default)]
    pub ratio: f64,
}

impl ColdStart {
    /// Its figure over its baseline.
    pub fn ratio(&self) -> f64 {
        if self.ratio > 0.0 {
            self.ratio
        } else {
            self.latency.p50_us / self.baseline_us
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleOut {
    pub runtime: String,
    pub environments: usize,
    /// From the burst's start until the last environment took its call.
    pub seconds: f64,
    pub per_second: f64,
    /// When each environment took its call, ms from the burst's start, in order.
    pub ready_ms: Vec<f64>,
    /// The baseline: the same number of starts at once with no platform (what, p50 ms).
    #[serde(default)]
    pub baseline: String,
    #[serde(default)]
    pub baseline_ms: f64,
    /// The median of each burst's time over the baseline taken just before it.
    #[serde(default)]
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Density {
    pub runtime: String,
    pub environments: usize,
    /// Proportional resident memory of one idle environment's processes (0 for wasm,
    /// which has none).
    pub environment_bytes: f64,
    /// What Ember's own process holds per environment.
    pub platform_bytes: f64,
    /// None when the environments held no measurable memory at all (wasm's can: an idle
    /// instance slot is reserved, not resident), where the count would be unbounded.
    pub fit_in_4gib: Option<f64>,
    /// The bare interpreter's memory (the baseline), if it has one.
    pub bare_bytes: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadPoint {
    pub percent: u32,
    pub offered_rps: f64,
    pub latency: Latency,
    /// The direct hop at the same request rate.
    pub direct: Latency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadCurve {
    pub runtime: String,
    pub ceiling_rps: f64,
    pub points: Vec<LoadPoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeClient {
    /// `awslambdaric` against a minimal Runtime API in the benchmark's process.
    pub awslambdaric: Latency,
    /// Ember's python3 hello, warm, taken in turns with `awslambdaric`'s events.
    pub ember_python: Latency,
    /// `awslambdaric`'s start, process spawn to its first `/next`.
    pub awslambdaric_start: Latency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peers {
    pub wasm_invoke: Latency,
    pub wasm_url: Latency,
    pub wasm_instantiate: Latency,
    /// Requests per second by concurrency, per server (`wasm URL`, `workerd`, `deno`,
    /// `direct hop`); a peer that could not run is absent, with its reason in `missing`.
    pub rates: BTreeMap<String, Vec<Rate>>,
    /// The function URL and `workerd` with one core each; absent from runs before it was
    /// measured, or where the host has one core.
    #[serde(default)]
    pub one_core: Option<OneCore>,
    pub missing: BTreeMap<String, String>,
}

/// Requests per second at 64 clients with the server on one core (the function URL and
/// `workerd` in turns on the same one) and the load generator on another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OneCore {
    pub url_rps: f64,
    /// Absent where `workerd` is not installed.
    pub workerd_rps: Option<f64>,
}

impl OneCore {
    /// The function URL's rate over workerd's, where workerd ran.
    pub fn ratio(&self) -> Option<f64> {
        self.workerd_rps.map(|workerd| self.url_rps / workerd)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Extras {
    pub frozen: Latency,
    pub signed: Latency,
    pub event_enqueue: Latency,
    pub events_per_s: f64,
    pub sync_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub started: String,
    pub command: String,
    pub seconds: f64,
    /// The share of the machine's CPU time the hypervisor gave other guests during the run
    /// (steal time); none where the kernel does not say.
    #[serde(default)]
    pub stolen: Option<f64>,
    pub machine: Machine,
    pub floor: Floor,
    pub runtimes: Vec<RuntimeFigures>,
    pub cold: Vec<ColdStart>,
    pub scale_out: Vec<ScaleOut>,
    pub density: Vec<Density>,
    pub load: Option<LoadCurve>,
    pub runtime_client: Option<RuntimeClient>,
    pub peers: Peers,
    pub extras: Extras,
    /// Runtimes or backends not measured, and why.
    pub skipped: Vec<String>,
    /// The ratios a second run is compared on.
    pub headline: BTreeMap<String, f64>,
}

fn us(v: f64) -> String {
    if v >= 100_000.0 {
        format!("{:.0} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

fn bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

/// A table of latencies beside the direct hop: `label | p50 | p99 | × direct hop`, the
/// ratio left empty where a row has no baseline.
fn latency_table(m: &mut String, rows: &[(&str, &Latency, Option<f64>)]) {
    let _ = writeln!(m, "| | p50 | p99 | × direct hop |\n|---|---:|---:|---:|");
    for (label, l, base) in rows {
        let _ = writeln!(
            m,
            "| {label} | {} | {} | {} |",
            us(l.p50_us),
            us(l.p99_us),
            base.map_or(String::new(), |b| ratio(l.p50_us, b))
        );
    }
    m.push('\n');
}

impl Results {
    /// The ratios a repeat run is compared on: each a figure over its same-run baseline.
    pub fn headline_ratios(&self) -> BTreeMap<String, f64> {
        let mut h = BTreeMap::new();
        let f = &self.floor;
        for r in &self.runtimes {
            let name = &r.runtime;
            h.insert(
                format!("{name} warm hello p50 / direct hop"),
                r.hello.p50_us / f.direct.p50_us,
            );
            if let (Some(rate), Some(direct)) = (
                r.rates.iter().find(|x| x.clients == 16),
                f.direct_rates.iter().find(|x| x.clients == 16),
            ) {
                h.insert(
                    format!("{name} throughput at 16 / direct hop"),
                    rate.rps / direct.rps,
                );
            }
            h.insert(
                format!("{name} echo 1 MB p50 / direct hop 1 MB"),
                r.echo_1mb.p50_us / f.direct_1mb.p50_us,
            );
        }
        for c in &self.cold {
            h.insert(
                format!("{} cold start on {} / {}", c.runtime, c.backend, c.baseline),
                c.ratio(),
            );
        }
        for s in &self.scale_out {
            h.insert(
                format!(
                    "{} 0→{} environments / {}",
                    s.runtime, s.environments, s.baseline
                ),
                s.ratio,
            );
        }
        if let Some(rc) = &self.runtime_client {
            h.insert(
                "Ember python3 warm / awslambdaric on a bare Runtime API".into(),
                rc.ember_python.p50_us / rc.awslambdaric.p50_us,
            );
        }
        if let (Some(url), Some(workerd)) = (
            self.peers.rates.get("wasm URL"),
            self.peers.rates.get("workerd"),
        ) {
            let peak = |r: &Vec<Rate>| r.iter().map(|x| x.rps).fold(0.0, f64::max);
            h.insert(
                "wasm URL peak throughput / workerd peak".into(),
                peak(url) / peak(workerd),
            );
        }
        if let Some(r) = self.peers.one_core.as_ref().and_then(OneCore::ratio) {
            h.insert("wasm URL throughput / workerd, one core each".into(), r);
        }
        h
    }

    /// The report; its charts' links start with `images`.
    pub fn markdown(&self, images: &str) -> String {
        let mut m = String::new();
        let f = &self.floor;
        let mc = &self.machine;
        let _ = writeln!(m, "# Ember benchmarks\n");
        let _ = writeln!(
            m,
            "One run of `{}` on {} ({} cores, {:.0} GiB, {} {}), started {}, {:.0} s. Every \
             figure is shown beside its baseline from the same run; ratios are the figure's \
             p50 over the baseline's unless said otherwise. Latencies are request in → answer \
             out at the client. A figure and its baseline are taken in turns (sequential \
             calls in 20 turns each, the direct hop's on 20 processes of its server, one per \
             turn; throughput over rounds of a quarter second each), each cold start is \
             followed by the runtime's bare start and begins once the environments before \
             are torn down, the scale-out figure is the median of 9 bursts (49 on \
             wasm), each just after its baseline, and every \
             section starts on a quiet host (CPU under 10% busy), so that a drift of the \
             machine moves a figure and its baseline together. The sequential warm calls are \
             taken again (three times at most, the least disturbed kept) when the hypervisor \
             took more than 2% of the CPU meanwhile.\n",
            self.command,
            mc.cpu,
            mc.cores,
            mc.memory_gib,
            mc.os,
            mc.kernel,
            self.started,
            self.seconds
        );
        if let Some(stolen) = self.stolen {
            let _ = writeln!(
                m,
                "The machine is a virtual one: during the run the hypervisor gave other guests \
                 {:.1}% of its CPU time (steal time), which no ordering of the figures can \
                 cancel.\n",
                stolen * 100.0
            );
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(m, "Not measured here: {}.\n", self.skipped.join("; "));
        }

        let _ = writeln!(m, "## Headline ratios\n");
        let _ = writeln!(m, "| figure / baseline | ratio |\n|---|---:|");
        for (k, v) in &self.headline {
            let _ = writeln!(m, "| {k} | {v:.2} |");
        }

        let _ = writeln!(m, "\n## Warm invoke latency\n");
        let _ = writeln!(
            m,
            "Sequential calls of a warm environment (one client), and 16 clients at once. \
             Baseline: the same request to a trivial hyper server in another process (the \
             floor of any HTTP hop here).\n"
        );
        let _ = writeln!(
            m,
            "| workload | runtime | p50 | p99 | p99.9 | baseline p50 | × baseline |\n|---|---|---:|---:|---:|---:|---:|"
        );
        let row = |m: &mut String, what: &str, rt: &str, l: &Latency, base: f64| {
            let _ = writeln!(
                m,
                "| {what} | {rt} | {} | {} | {} | {} | {} |",
                us(l.p50_us),
                us(l.p99_us),
                us(l.p999_us),
                us(base),
                ratio(l.p50_us, base)
            );
        };
        row(&mut m, "hello", "direct hop", &f.direct, f.direct.p50_us);
        for r in &self.runtimes {
            row(&mut m, "hello", &r.runtime, &r.hello, f.direct.p50_us);
        }
        row(
            &mut m,
            "hello, 16 clients",
            "direct hop",
            &f.direct_loaded,
            f.direct_loaded.p50_us,
        );
        for r in &self.runtimes {
            row(
                &mut m,
                "hello, 16 clients",
                &r.runtime,
                &r.hello_loaded,
                f.direct_loaded.p50_us,
            );
        }
        let cpu_us = super::workloads::CPU_SPIN_MS as f64 * 1000.0;
        for r in &self.runtimes {
            row(&mut m, "10 ms of CPU", &r.runtime, &r.cpu, cpu_us);
        }
        row(
            &mut m,
            "1 MB echo",
            "direct hop",
            &f.direct_1mb,
            f.direct_1mb.p50_us,
        );
        for r in &self.runtimes {
            row(
                &mut m,
                "1 MB echo",
                &r.runtime,
                &r.echo_1mb,
                f.direct_1mb.p50_us,
            );
        }
        let _ = writeln!(
            m,
            "\nThe 10 ms workload's baseline is the 10 ms of work itself.\n\n![latency distributions]({images}latency.svg)\n"
        );

        let _ = writeln!(m, "## Throughput\n");
        let _ = writeln!(
            m,
            "Requests per second with 1, 16 and 64 clients, each sending its next call when \
             its last is answered, over keep-alive connections.\n"
        );
        let _ = writeln!(
            m,
            "| runtime | 1 | 16 | 64 | × direct hop at 64 |\n|---|---:|---:|---:|---:|"
        );
        let at =
            |rates: &[Rate], c: usize| rates.iter().find(|r| r.clients == c).map_or(0.0, |r| r.rps);
        let _ = writeln!(
            m,
            "| direct hop | {:.0} | {:.0} | {:.0} | 1.00× |",
            at(&f.direct_rates, 1),
            at(&f.direct_rates, 16),
            at(&f.direct_rates, 64)
        );
        for r in &self.runtimes {
            let _ = writeln!(
                m,
                "| {} | {:.0} | {:.0} | {:.0} | {} |",
                r.runtime,
                at(&r.rates, 1),
                at(&r.rates, 16),
                at(&r.rates, 64),
                ratio(at(&r.rates, 64), at(&f.direct_rates, 64))
            );
        }
        let _ = writeln!(m, "\n![throughput]({images}throughput.svg)\n");

        let _ = writeln!(m, "## Cold starts\n");
        let _ = writeln!(
            m,
            "Request in → response out with no environment, split into Ember's stages (medians, \
             from each response's `Server-Timing`). Baseline: the runtime's bare start on the \
             host (`python3 -c pass`, `node -e 0`, exec of the Rust binary; for wasm, the \
             direct hop), taken right after each cold start; its p50 is shown. × baseline: the \
             median of each cold start over the bare start taken right after it.\n"
        );
        let _ = writeln!(
            m,
            "| runtime | backend | p50 | p99 | placement | sandbox | runtime init | code init | handler | baseline | × baseline |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
        );
        for c in &self.cold {
            let s = &c.stages;
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} {} | {:.2}× |",
                c.runtime,
                c.backend,
                us(c.latency.p50_us),
                us(c.latency.p99_us),
                us(s.placement_us),
                us(s.sandbox_us),
                us(s.runtime_init_us),
                us(s.code_init_us),
                us(s.handler_us),
                c.baseline,
                us(c.baseline_us),
                c.ratio()
            );
        }
        let _ = writeln!(m, "\n![cold starts]({images}cold.svg)\n");

        let _ = writeln!(
            m,
            "## Heavy init: what warm reuse and provisioned concurrency buy\n"
        );
        let _ = writeln!(
            m,
            "A function whose init keeps a core busy for {} ms (as heavy imports would). On \
             wasm the init runs once, at deploy (a pre-initialized snapshot).\n",
            super::workloads::INIT_SPIN_MS
        );
        let _ = writeln!(
            m,
            "| runtime | cold (first call) | of which code init | warm | first call, provisioned | cold / provisioned |\n|---|---:|---:|---:|---:|---:|"
        );
        for r in &self.runtimes {
            let h = &r.heavy_init;
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} |",
                r.runtime,
                us(h.cold.p50_us),
                us(h.cold_stages.code_init_us + h.cold_stages.runtime_init_us),
                us(h.warm.p50_us),
                us(h.provisioned.p50_us),
                ratio(h.cold.p50_us, h.provisioned.p50_us)
            );
        }

        let _ = writeln!(m, "\n## Scale-out\n");
        let _ = writeln!(
            m,
            "A burst of 100 calls at once to a function with no environment, each holding its \
             environment 1 s, so each needs its own: the time until the last environment took \
             its call; the median of 9 bursts (49 on wasm). Baseline: the same hundred starts with \
             no platform, taken just before each burst: the runtime's bare start (as in Cold \
             starts) 100 times at once, until the last has exited; for wasm, 100 calls at once \
             to the direct hop, each on a new connection. × baseline: the median of each burst's \
             time over its own baseline.\n"
        );
        let _ = writeln!(
            m,
            "| runtime | environments | 0 → all | new environments / s | baseline | × baseline |\n|---|---:|---:|---:|---|---:|"
        );
        for s in &self.scale_out {
            let _ = writeln!(
                m,
                "| {} | {} | {:.0} ms | {:.0} | {} {:.0} ms | {:.2}× |",
                s.runtime,
                s.environments,
                s.seconds * 1000.0,
                s.per_second,
                s.baseline,
                s.baseline_ms,
                s.ratio
            );
        }
        let _ = writeln!(m, "\n![scale-out]({images}scale-out.svg)\n");

        let _ = writeln!(m, "## Density\n");
        let _ = writeln!(
            m,
            "Idle warm environments (provisioned, nothing running): the proportional resident \
             memory (PSS) of each environment's processes, and what Ember's own process holds \
             per environment. Baseline: the bare interpreter idle, as many at once.\n"
        );
        let _ = writeln!(
            m,
            "| runtime | environments | per environment | Ember per environment | idle environments in 4 GiB | bare interpreter | × bare |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for d in &self.density {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} |",
                d.runtime,
                d.environments,
                bytes(d.environment_bytes),
                bytes(d.platform_bytes),
                d.fit_in_4gib
                    .map_or("no growth measured".into(), |n| format!("{n:.0}")),
                d.bare_bytes.map_or("—".into(), bytes),
                d.bare_bytes
                    .map_or("—".into(), |b| ratio(d.environment_bytes, b)),
            );
        }
        let _ = writeln!(m, "\n![memory per environment]({images}density.svg)\n");

        if let Some(l) = &self.load {
            let _ = writeln!(m, "## Latency as load grows\n");
            let _ = writeln!(
                m,
                "{} hello at a fixed request rate (an open loop over 64 connections; a late \
                 request's wait counts), from 10% to 90% of its throughput ceiling ({:.0} \
                 requests/s at 64 clients). Baseline: p99 at 10%, and the direct hop at the \
                 same rates.\n",
                l.runtime, l.ceiling_rps
            );
            let _ = writeln!(
                m,
                "| load | requests/s | p50 | p99 | p99 / p99 at 10% | direct hop p99 | × direct |\n|---:|---:|---:|---:|---:|---:|---:|"
            );
            let first = l.points.first().map_or(0.0, |p| p.latency.p99_us);
            for p in &l.points {
                let _ = writeln!(
                    m,
                    "| {}% | {:.0} | {} | {} | {} | {} | {} |",
                    p.percent,
                    p.offered_rps,
                    us(p.latency.p50_us),
                    us(p.latency.p99_us),
                    ratio(p.latency.p99_us, first),
                    us(p.direct.p99_us),
                    ratio(p.latency.p99_us, p.direct.p99_us)
                );
            }
            let _ = writeln!(m, "\n![p99 against load]({images}load.svg)\n");
        }

        if let Some(rc) = &self.runtime_client {
            let _ = writeln!(m, "## A runtime without a platform\n");
            let _ = writeln!(
                m,
                "AWS's Python runtime interface client, `awslambdaric`, polling a minimal \
                 Runtime API in the benchmark's own process (an event handed over, its answer \
                 taken: what a runtime costs with no platform around it), beside Ember's \
                 python3 hello end to end, the two taken in 20 turns.\n"
            );
            let _ = writeln!(
                m,
                "| | p50 | p99 | p99.9 |\n|---|---:|---:|---:|\n| awslambdaric, bare Runtime API | {} | {} | {} |\n| Ember python3, warm invoke | {} | {} | {} |\n| awslambdaric start (spawn → first `/next`) | {} | {} | {} |\n",
                us(rc.awslambdaric.p50_us),
                us(rc.awslambdaric.p99_us),
                us(rc.awslambdaric.p999_us),
                us(rc.ember_python.p50_us),
                us(rc.ember_python.p99_us),
                us(rc.ember_python.p999_us),
                us(rc.awslambdaric_start.p50_us),
                us(rc.awslambdaric_start.p99_us),
                us(rc.awslambdaric_start.p999_us),
            );
            let _ = writeln!(
                m,
                "Ember / bare: {}.\n",
                ratio(rc.ember_python.p50_us, rc.awslambdaric.p50_us)
            );
        }

        let p = &self.peers;
        let _ = writeln!(m, "## WebAssembly and the isolate tier\n");
        let _ = writeln!(
            m,
            "The wasm hello (a fresh instance per call) through Invoke and a function URL, and \
             the same hello world served by Cloudflare's `workerd` and by `deno`'s \
             `Deno.serve`, driven by the same load generator. Their throughput points run \
             twice as long as elsewhere (40 rounds of a quarter second per point at the \
             default `--seconds 5`).\n"
        );
        let direct = Some(f.direct.p50_us);
        latency_table(
            &mut m,
            &[
                ("wasm Invoke", &p.wasm_invoke, direct),
                ("wasm function URL", &p.wasm_url, direct),
                ("instantiate + run, in process", &p.wasm_instantiate, None),
            ],
        );
        let names: Vec<&String> = p.rates.keys().collect();
        let _ = writeln!(
            m,
            "| clients | {} |\n|---:|{}",
            names
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(" | "),
            "---:|".repeat(names.len())
        );
        for c in [1, 16, 64] {
            let cells: Vec<String> = names
                .iter()
                .map(|n| format!("{:.0}", at(&p.rates[*n], c)))
                .collect();
            let _ = writeln!(m, "| {c} | {} |", cells.join(" | "));
        }
        if let Some(one) = &p.one_core {
            let _ = write!(
                m,
                "\nWith one core each (in turns on the same core, 64 clients) and the load \
                 generator on another, the function URL served {:.0}/s",
                one.url_rps
            );
            let _ = match one.workerd_rps {
                Some(workerd) => writeln!(
                    m,
                    " and workerd {workerd:.0}/s: {}. In the table above the server \
                     and the generator share both cores, and workerd serves on one thread \
                     either way.",
                    ratio(one.url_rps, workerd)
                ),
                None => writeln!(m, "."),
            };
        }
        for (name, why) in &p.missing {
            let _ = writeln!(m, "\n{name} was not measured: {why}");
        }

        let e = &self.extras;
        let _ = writeln!(m, "\n## Other paths\n");
        latency_table(
            &mut m,
            &[
                (
                    "provided, frozen when idle (a thaw before, a freeze after)",
                    &e.frozen,
                    direct,
                ),
                ("provided, every request SigV4-signed", &e.signed, direct),
                ("`Event` invoke, enqueue", &e.event_enqueue, direct),
            ],
        );
        let _ = writeln!(
            m,
            "Asynchronous events end to end (enqueue → run → acknowledged, 4 clients): {:.0}/s, \
             {} the synchronous rate ({:.0}/s).",
            e.events_per_s,
            ratio(e.events_per_s, e.sync_per_s),
            e.sync_per_s
        );
        m
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_sample() {
        let samples: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let l = Latency::of(samples);
        assert_eq!(l.n, 1000);
        assert!((l.p50_us - 501.0).abs() < 1.5, "{l:?}");
        assert!((l.p99_us - 990.0).abs() < 1.5, "{l:?}");
        assert!((l.p999_us - 999.0).abs() < 1.5, "{l:?}");
        assert_eq!(Latency::of(Vec::new()).n, 0);
    }

    fn latency(p50_us: f64) -> Latency {
        Latency {
            n: 100,
            p50_us,
            p99_us: p50_us * 2.0,
            p999_us: p50_us * 3.0,
        }
    }

    pub(crate) fn sample() -> Results {
        let rates = |k: f64| {
            vec![
                Rate {
                    clients: 1,
                    rps: 1000.0 * k,
                },
                Rate {
                    clients: 16,
                    rps: 8000.0 * k,
                },
                Rate {
                    clients: 64,
                    rps: 9000.0 * k,
                },
            ]
        };
        let mut peers = BTreeMap::new();
        peers.insert("wasm URL".to_owned(), rates(3.0));
        peers.insert("workerd".to_owned(), rates(1.5));
        Results {
            started: "2026-11-23T00-00-00Z".into(),
            command: "ember bench".into(),
            seconds: 300.0,
            stolen: Some(0.02),
            machine: Machine {
                cpu: "a CPU".into(),
                cores: 2,
                memory_gib: 24.0,
                kernel: "6.1".into(),
                os: "Debian".into(),
            },
            floor: Floor {
                direct: latency(100.0),
                direct_1mb: latency(1000.0),
                direct_loaded: latency(200.0),
                direct_rates: rates(10.0),
                bare_starts: BTreeMap::from([("python3 -c pass".to_owned(), latency(10_000.0))]),
                bare_bytes: BTreeMap::new(),
            },
            runtimes: vec![RuntimeFigures {
                runtime: "python3".into(),
                hello: latency(300.0),
                hello_loaded: latency(900.0),
                rates: rates(2.0),
                cpu: latency(10_500.0),
                echo_1mb: latency(5000.0),
                heavy_init: HeavyInit {
                    cold: latency(320_000.0),
                    cold_stages: Stages::default(),
                    warm: latency(300.0),
                    provisioned: latency(400.0),
                },
            }],
            cold: vec![ColdStart {
                runtime: "python3".into(),
                backend: "process".into(),
                latency: latency(25_000.0),
                stages: Stages::default(),
                baseline: "python3 -c pass".into(),
                baseline_us: 10_000.0,
                ratio: 2.4,
            }],
            scale_out: vec![ScaleOut {
                runtime: "python3".into(),
                environments: 100,
                seconds: 1.5,
                per_second: 66.0,
                ready_ms: vec![10.0, 1500.0],
                baseline: "python3 -c pass, 100 at once".into(),
                baseline_ms: 250.0,
                ratio: 6.0,
            }],
            density: vec![Density {
                runtime: "wasm".into(),
                environments: 50,
                environment_bytes: 0.0,
                platform_bytes: 0.0,
                fit_in_4gib: None,
                bare_bytes: None,
            }],
            load: None,
            runtime_client: None,
            peers: Peers {
                wasm_invoke: latency(150.0),
                wasm_url: latency(160.0),
                wasm_instantiate: latency(5.0),
                rates: peers,
                one_core: Some(OneCore {
                    url_rps: 30000.0,
                    workerd_rps: Some(25000.0),
                }),
                missing: BTreeMap::from([("deno".to_owned(), "not installed".to_owned())]),
            },
            extras: Extras {
                frozen: latency(500.0),
                signed: latency(350.0),
                event_enqueue: latency(300.0),
                events_per_s: 2000.0,
                sync_per_s: 4000.0,
            },
            skipped: vec!["deno: not installed".into()],
            headline: BTreeMap::new(),
        }
    }

    #[test]
    fn each_headline_ratio_is_its_figure_over_its_baseline() {
        let h = sample().headline_ratios();
        assert_eq!(h["python3 warm hello p50 / direct hop"], 3.0);
        assert_eq!(h["python3 throughput at 16 / direct hop"], 0.2);
        assert_eq!(h["python3 echo 1 MB p50 / direct hop 1 MB"], 5.0);
        assert_eq!(h["python3 cold start on process / python3 -c pass"], 2.4);
        assert_eq!(
            h["python3 0→100 environments / python3 -c pass, 100 at once"],
            6.0
        );
        assert_eq!(h["wasm URL peak throughput / workerd peak"], 2.0);
        assert_eq!(h["wasm URL throughput / workerd, one core each"], 1.2);
    }

    #[test]
    fn a_cold_start_from_before_paired_ratios_is_its_p50_over_its_baseline() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json["cold"][0].as_object_mut().unwrap().remove("ratio");
        let old: Results = serde_json::from_value(json).unwrap();
        assert_eq!(
            old.headline_ratios()["python3 cold start on process / python3 -c pass"],
            2.5
        );
    }

    #[test]
    fn the_report_has_every_section_its_charts_and_what_was_not_measured() {
        let m = sample().markdown("benchmarks/");
        for heading in [
            "## Headline ratios",
            "## Warm invoke latency",
            "## Throughput",
            "## Cold starts",
            "## Heavy init",
            "## Scale-out",
            "## Density",
            "## WebAssembly and the isolate tier",
        ] {
            assert!(m.contains(heading), "no {heading}");
        }
        for chart in ["latency", "throughput", "cold", "scale-out", "density"] {
            assert!(
                m.contains(&format!("(benchmarks/{chart}.svg)")),
                "no {chart} chart"
            );
        }
        assert!(m.contains("Not measured here: deno: not installed."));
        assert!(m.contains("other guests 2.0% of its CPU time"), "{m}");
        assert!(
            m.contains("| wasm | 50 | 0 KiB | 0 KiB | no growth measured | — | — |"),
            "{m}"
        );
        assert!(
            m.contains("| hello | python3 | 300 µs | 600 µs | 900 µs | 100 µs | 3.00× |"),
            "{m}"
        );
    }
}
