//! Ember's discrete-event simulator: replays a call trace through the *same* policy code the
//! live dispatcher runs ([`ember_policy`]: admission, scale-up pacing with its bounded wait,
//! keep-alive and pre-warming, the warm pool with provisioned environments), on virtual
//! time, and reports cold starts, added latency, throttles, concurrency, idle memory-time
//! and cost.
//!
//! - [`trace`]: the CSV trace format.
//! - [`generate`]: synthetic traces (heavy-tailed like production, Poisson, diurnal, spike).
//! - [`simulate`]: the event loop.
//! - [`chart`]: an SVG of several simulations side by side.
//!
//! What is modelled: one environment serves one call at a time; a cold start takes `init`
//! before the handler runs; idle environments are reused and reclaimed exactly as the
//! policies say; a call beyond the account limit is throttled; a call beyond the scale-up
//! pace waits up to the pacing's `wait` for an environment to come back or a token to
//! come, then is throttled. What is not: the machine's speed. *Added latency* is what the
//! platform adds before the handler runs: the init of a cold start plus any wait.

pub mod chart;
pub mod generate;
pub mod trace;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ember_core::usage::{Prices, Usage};
use ember_policy::{Admission, Bucket, KeepAlive, Load, Pool, ScalePacing};
use serde::Serialize;

pub use trace::Call;

/// What a simulation runs with; the live server's settings of the same names.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub keep_alive: KeepAlive,
    pub admission: Admission,
    pub pacing: ScalePacing,
    /// Memory of functions whose calls do not say.
    pub memory_mb: u32,
    /// How long a cold start takes before the handler runs.
    pub init: Duration,
    /// Provisioned environments per function, initialized before the first call.
    pub provisioned: HashMap<String, u32>,
    pub prices: Prices,
    /// Points of the timeline.
    pub timeline_points: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            keep_alive: KeepAlive::default(),
            admission: Admission::default(),
            pacing: ScalePacing {
                wait: Duration::ZERO,
                ..ScalePacing::default()
            },
            memory_mb: 128,
            init: Duration::ZERO,
            provisioned: HashMap::new(),
            prices: Prices::default(),
            timeline_points: 200,
        }
    }
}

/// Counts for one function, or for all.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub calls: u64,
    pub cold_starts: u64,
    pub throttles: u64,
    pub prewarms: u64,
    /// Calls that waited on the scale-up pace (and then ran or were throttled).
    pub scale_up_waits: u64,
    /// On-demand environment-seconds spent idle.
    pub idle_env_seconds: f64,
    /// On-demand idle memory-time, in GB-seconds.
    pub idle_gb_seconds: f64,
    /// Memory-time of provisioned environments, busy or idle, in GB-seconds.
    pub provisioned_gb_seconds: f64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.calls += other.calls;
        self.cold_starts += other.cold_starts;
        self.throttles += other.throttles;
        self.prewarms += other.prewarms;
        self.scale_up_waits += other.scale_up_waits;
        self.idle_env_seconds += other.idle_env_seconds;
        self.idle_gb_seconds += other.idle_gb_seconds;
        self.provisioned_gb_seconds += other.provisioned_gb_seconds;
    }
}

/// Percentiles of the latency the platform added to the calls that ran, in ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One point of the timeline: the most environments and running calls within its
/// interval, and the cold starts in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    pub at_s: f64,
    pub environments: u32,
    pub concurrency: u32,
    pub cold_starts: u32,
}

/// What a simulation found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub total: Counts,
    pub functions: BTreeMap<String, Counts>,
    pub added_latency: Latency,
    pub peak_concurrency: u32,
    /// Mean running calls over the trace's span.
    pub mean_concurrency: f64,
    /// The trace's span, first call to last.
    pub span_seconds: f64,
    /// Requests, billed duration and provisioned time, as Lambda bills them.
    pub usage: Usage,
    /// `usage` at the configured prices, in dollars.
    pub cost: f64,
    pub timeline: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A pool's deadline (an expiry or a pre-warm) may have come.
    Deadline(usize),
    /// A call's handler ends and its environment is released.
    Finish { function: usize, env: u64 },
    /// A waiting call's scale-up token may be there, or its wait is over.
    Retry(usize),
    /// A call arrives.
    Arrive(usize),
}

/// An environment in the simulation: an id, when it last went idle, and whether it is a
/// provisioned one.
#[derive(Debug)]
struct SimEnv {
    id: u64,
    idle_since: Instant,
    provisioned: bool,
}

struct Function {
    name: String,
    memory_mb: u32,
    pool: Pool<SimEnv>,
    bucket: Bucket,
    in_flight: u32,
    /// Calls waiting on the scale-up pace: the call and when its wait ends.
    waiting: VecDeque<(usize, Duration)>,
    /// Whether each running environment is provisioned, by id.
    running: HashMap<u64, bool>,
    /// The pool deadline an event is queued for, so that each is queued once.
    scheduled: Option<Duration>,
    counts: Counts,
}

/// Time-weighted running calls, for the mean.
#[derive(Default)]
struct Area {
    last: Duration,
    sum: f64,
}

impl Area {
    fn advance(&mut self, to: Duration, level: u32) {
        self.sum += to.saturating_sub(self.last).as_secs_f64() * f64::from(level);
        self.last = self.last.max(to);
    }
}

/// The state of one run, apart from the functions.
struct Run<'a> {
    calls: &'a [Call],
    config: &'a SimConfig,
    queue: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    seq: u64,
    next_env: u64,
    in_flight: u32,
    environments: u32,
    added_ms: Vec<f64>,
    usage: Usage,
    area: Area,
    peak: u32,
    timeline: Vec<Sample>,
    slot: Duration,
}

impl Run<'_> {
    fn push(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, event)));
    }

    fn sample(&mut self, at: Duration) -> &mut Sample {
        let i = ((at.as_secs_f64() / self.slot.as_secs_f64()) as usize)
            .min(self.timeline.len().saturating_sub(1));
        &mut self.timeline[i]
    }

    /// Records the environment and concurrency levels at `at`.
    fn levels(&mut self, at: Duration) {
        let (environments, concurrency) = (self.environments, self.in_flight);
        self.peak = self.peak.max(concurrency);
        let sample = self.sample(at);
        sample.environments = sample.environments.max(environments);
        sample.concurrency = sample.concurrency.max(concurrency);
    }

    /// Starts call `i` on `env` (or a new environment, `None`) at `now`, `waited` after it
    /// arrived.
    fn start(
        &mut self,
        function: &mut Function,
        f: usize,
        i: usize,
        env: Option<SimEnv>,
        at: Duration,
    ) {
        let call = &self.calls[i];
        let waited = at.saturating_sub(call.at);
        let (id, provisioned, init) = match env {
            Some(env) => (env.id, env.provisioned, Duration::ZERO),
            None => {
                function.counts.cold_starts += 1;
                self.sample(at).cold_starts += 1;
                self.next_env += 1;
                self.environments += 1;
                (self.next_env, false, self.config.init)
            }
        };
        self.added_ms.push((waited + init).as_secs_f64() * 1000.0);
        let memory_mb = call.memory_mb.unwrap_or(function.memory_mb);
        let billed_ms = (call.duration.as_secs_f64() * 1000.0).ceil().max(1.0) as u64;
        self.usage
            .add(&Usage::invocation(billed_ms, memory_mb, provisioned));
        self.area.advance(at, self.in_flight);
        function.in_flight += 1;
        self.in_flight += 1;
        function.running.insert(id, provisioned);
        self.levels(at);
        self.push(
            at + init + call.duration,
            Event::Finish {
                function: f,
                env: id,
            },
        );
    }
}

fn idle_time(env: &SimEnv, now: Instant, gb: f64, counts: &mut Counts) {
    if env.provisioned {
        return;
    }
    let seconds = now.saturating_duration_since(env.idle_since).as_secs_f64();
    counts.idle_env_seconds += seconds;
    counts.idle_gb_seconds += seconds * gb;
}

/// Replays `calls` (sorted by time) and reports what happened.
pub fn simulate(calls: &[Call], config: &SimConfig) -> Report {
    let base = Instant::now();
    let span = calls.last().map_or(Duration::ZERO, |c| c.at);
    let points = config.timeline_points.max(1);
    let mut run = Run {
        calls,
        config,
        queue: BinaryHeap::new(),
        seq: 0,
        next_env: 0,
        in_flight: 0,
        environments: 0,
        added_ms: Vec::with_capacity(calls.len()),
        usage: Usage::default(),
        area: Area::default(),
        peak: 0,
        timeline: Vec::new(),
        slot: (span / points as u32).max(Duration::from_millis(1)),
    };
    run.timeline = (0..points)
        .map(|i| Sample {
            at_s: (run.slot * i as u32).as_secs_f64(),
            ..Sample::default()
        })
        .collect();

    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut functions: Vec<Function> = Vec::new();
    for (i, call) in calls.iter().enumerate() {
        if !index.contains_key(call.function.as_str()) {
            index.insert(&call.function, functions.len());
            let mut pool = Pool::default();
            let provisioned = config.provisioned.get(&call.function).copied().unwrap_or(0);
            for _ in 0..provisioned {
                run.next_env += 1;
                run.environments += 1;
                pool.put_provisioned(SimEnv {
                    id: run.next_env,
                    idle_since: base,
                    provisioned: true,
                });
            }
            functions.push(Function {
                name: call.function.clone(),
                memory_mb: call.memory_mb.unwrap_or(config.memory_mb),
                pool,
                bucket: Bucket::full(&config.pacing, base),
                in_flight: 0,
                waiting: VecDeque::new(),
                running: HashMap::new(),
                scheduled: None,
                counts: Counts::default(),
            });
        }
        run.push(call.at, Event::Arrive(i));
    }
    run.levels(Duration::ZERO);

    while let Some(Reverse((at, _, event))) = run.queue.pop() {
        let now = base + at;
        let f = match event {
            Event::Deadline(f) | Event::Finish { function: f, .. } => f,
            Event::Arrive(i) | Event::Retry(i) => index[calls[i].function.as_str()],
        };
        let function = &mut functions[f];
        if matches!(event, Event::Deadline(_)) && function.scheduled == Some(at) {
            function.scheduled = None;
        }
        let gb = f64::from(function.memory_mb) / 1024.0;
        // Whatever expired up to now goes first, as the live reclaim loop would have done.
        for env in function.pool.reclaim(now, |_| true) {
            idle_time(&env, now, gb, &mut function.counts);
            run.environments -= 1;
        }
        if let Some(keep_for) = function.pool.prewarm_due(now)
            && function.bucket.take(&config.pacing, now).is_ok()
        {
            run.next_env += 1;
            run.environments += 1;
            function.counts.prewarms += 1;
            let ready = now + config.init;
            function.pool.put_prewarmed(
                SimEnv {
                    id: run.next_env,
                    idle_since: ready,
                    provisioned: false,
                },
                keep_for,
                ready,
            );
        }
        match event {
            Event::Deadline(_) => {}
            Event::Arrive(i) => {
                function.counts.calls += 1;
                let load = Load {
                    reserved: None,
                    function_in_flight: function.in_flight,
                    unreserved_in_flight: run.in_flight,
                    reserved_total: 0,
                };
                if config.admission.admit(load).is_err() {
                    function.counts.throttles += 1;
                    continue;
                }
                let mut dead = Vec::new();
                let warm = function
                    .pool
                    .acquire(&config.keep_alive, now, |_| true, &mut dead);
                match warm {
                    Some((env, _)) => {
                        idle_time(&env, now, gb, &mut function.counts);
                        run.start(function, f, i, Some(env), at);
                    }
                    None => match function.bucket.take(&config.pacing, now) {
                        Ok(()) => run.start(function, f, i, None, at),
                        Err(_) if config.pacing.wait.is_zero() => {
                            function.pool.finish(now);
                            function.counts.throttles += 1;
                        }
                        Err(until_token) => {
                            // Counted busy in the pool while it waits, as live.
                            function.counts.scale_up_waits += 1;
                            let deadline = at + config.pacing.wait;
                            function.waiting.push_back((i, deadline));
                            run.push((at + until_token).min(deadline), Event::Retry(i));
                        }
                    },
                }
            }
            Event::Retry(i) => {
                let Some(position) = function.waiting.iter().position(|(w, _)| *w == i) else {
                    continue; // Served by an environment that came back.
                };
                let deadline = function.waiting[position].1;
                match function.bucket.take(&config.pacing, now) {
                    Ok(()) => {
                        function.waiting.remove(position);
                        run.start(function, f, i, None, at);
                    }
                    Err(_) if at >= deadline => {
                        function.waiting.remove(position);
                        function.pool.finish(now);
                        function.counts.throttles += 1;
                    }
                    Err(until_token) => run.push((at + until_token).min(deadline), Event::Retry(i)),
                }
            }
            Event::Finish { env, .. } => {
                run.area.advance(at, run.in_flight);
                function.in_flight -= 1;
                run.in_flight -= 1;
                let provisioned = function.running.remove(&env).unwrap_or(false);
                let env = SimEnv {
                    id: env,
                    idle_since: now,
                    provisioned,
                };
                function.pool.finish(now);
                // A call waiting on the pace takes the environment straight away.
                if let Some((waiter, _)) = function.waiting.pop_front() {
                    run.start(function, f, waiter, Some(env), at);
                    continue;
                }
                // An environment the plan releases at once was never idle: nothing to count.
                if function
                    .pool
                    .put_idle(env, provisioned, &config.keep_alive, now)
                    .is_some()
                {
                    run.environments -= 1;
                }
                run.levels(at);
            }
        }
        if let Some(deadline) = function.pool.next_deadline() {
            let at = deadline.saturating_duration_since(base);
            if function.scheduled.is_none_or(|s| at < s) {
                function.scheduled = Some(at);
                run.push(at, Event::Deadline(f));
            }
        }
    }

    // Provisioned environments are paid for over the whole span.
    let mut total = Counts::default();
    let mut by_name = BTreeMap::new();
    for mut function in functions {
        let n = config.provisioned.get(&function.name).copied().unwrap_or(0);
        function.counts.provisioned_gb_seconds =
            f64::from(n) * f64::from(function.memory_mb) / 1024.0 * span.as_secs_f64();
        total.add(&function.counts);
        by_name.insert(function.name, function.counts);
    }
    run.area.advance(span, run.in_flight);
    let mut usage = run.usage;
    usage.provisioned_gb_seconds = total.provisioned_gb_seconds;
    let mut added = run.added_ms;
    added.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        if added.is_empty() {
            return 0.0;
        }
        added[((added.len() - 1) as f64 * p).round() as usize]
    };
    Report {
        added_latency: Latency {
            p50_ms: percentile(0.5),
            p99_ms: percentile(0.99),
            max_ms: added.last().copied().unwrap_or(0.0),
        },
        peak_concurrency: run.peak,
        mean_concurrency: if span.is_zero() {
            0.0
        } else {
            run.area.sum / span.as_secs_f64()
        },
        span_seconds: span.as_secs_f64(),
        cost: usage.cost(&config.prices),
        usage,
        timeline: run.timeline,
        total,
        functions: by_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_policy::Adaptive;

    fn call(at_ms: u64, function: &str, duration_ms: u64) -> Call {
        Call {
            at: Duration::from_millis(at_ms),
            function: function.into(),
            duration: Duration::from_millis(duration_ms),
            memory_mb: None,
        }
    }

    fn fixed(ms: u64) -> SimConfig {
        SimConfig {
            keep_alive: KeepAlive::Fixed {
                ttl: Duration::from_millis(ms),
            },
            ..SimConfig::default()
        }
    }

    #[test]
    fn calls_within_the_keep_alive_are_warm_and_after_it_cold() {
        let calls = [
            call(0, "a", 10),
            call(500, "a", 10),  // warm: idle 490 ms < 1 s
            call(3000, "a", 10), // cold: idle 2.49 s
            call(3000, "b", 10), // another function: cold
        ];
        let report = simulate(&calls, &fixed(1000));
        assert_eq!(report.total.calls, 4);
        assert_eq!(report.total.cold_starts, 3);
        assert_eq!(report.functions["a"].cold_starts, 2);
        // Idle: 490 ms before the warm call, then 1 s after each of the three last calls.
        let idle = report.total.idle_env_seconds;
        assert!((idle - 3.49).abs() < 1e-6, "{idle}");
    }

    #[test]
    fn overlapping_calls_need_their_own_environments() {
        let calls = [
            call(0, "a", 100),
            call(10, "a", 100),
            call(500, "a", 10),
            call(500, "a", 10),
        ];
        let report = simulate(&calls, &fixed(1000));
        assert_eq!(report.total.cold_starts, 2);
    }

    #[test]
    fn the_account_limit_throttles_in_the_simulation_too() {
        let mut config = fixed(1000);
        config.admission.account_limit = 1;
        let calls = [call(0, "a", 100), call(10, "b", 100), call(200, "b", 10)];
        let report = simulate(&calls, &config);
        assert_eq!(report.total.throttles, 1);
        assert_eq!(report.functions["b"].cold_starts, 1);
    }

    #[test]
    fn beyond_the_pace_a_call_waits_for_an_environment_or_is_throttled() {
        let mut config = fixed(60_000);
        config.pacing = ScalePacing {
            burst: 1,
            refill: 1,
            period: Duration::from_secs(10),
            wait: Duration::from_millis(500),
        };
        config.init = Duration::from_millis(100);
        let calls = [
            call(0, "a", 200),   // cold: 100 ms init, runs to 300 ms
            call(50, "a", 1000), // no token: waits for the first, runs at 300 ms
            call(60, "a", 10),   // waits too, but 500 ms pass first: throttled
        ];
        let report = simulate(&calls, &config);
        assert_eq!(report.total.cold_starts, 1);
        assert_eq!(report.total.scale_up_waits, 2);
        assert_eq!(report.total.throttles, 1);
        // Added latency: 100 ms (init) and 250 ms (waited).
        assert_eq!(report.added_latency.max_ms, 250.0);
        assert_eq!(report.peak_concurrency, 1);
    }

    #[test]
    fn provisioned_environments_serve_first_and_calls_beyond_them_spill_over() {
        let mut config = fixed(1000);
        config.init = Duration::from_millis(100);
        config.provisioned.insert("a".into(), 2);
        let calls = [
            call(0, "a", 100),
            call(0, "a", 100),
            call(0, "a", 100), // the third at once: on demand
            call(10_000, "a", 100),
        ];
        let report = simulate(&calls, &config);
        assert_eq!(report.total.cold_starts, 1);
        assert_eq!(report.added_latency.p50_ms, 0.0);
        assert_eq!(report.added_latency.max_ms, 100.0);
        // 2 × 128 MB for the 10 s span; only the on-demand one idles (1 s keep-alive).
        assert!((report.total.provisioned_gb_seconds - 2.5).abs() < 1e-9);
        assert!((report.total.idle_env_seconds - 1.0).abs() < 1e-6);
        assert_eq!(report.usage.requests, 4);
        assert!(report.usage.provisioned_duration_gb_seconds > 0.0);
        assert_eq!(report.peak_concurrency, 3);
    }

    #[test]
    fn adaptive_beats_fixed_on_a_periodic_function() {
        // Every 20 minutes for a day: fixed 10 min is cold every time.
        let calls: Vec<Call> = (0..72).map(|i| call(i * 1_200_000, "timer", 100)).collect();
        let fixed = simulate(&calls, &SimConfig::default());
        let adaptive = simulate(
            &calls,
            &SimConfig {
                keep_alive: KeepAlive::Adaptive(Adaptive::default()),
                ..SimConfig::default()
            },
        );
        assert_eq!(fixed.total.cold_starts, 72);
        assert!(adaptive.total.cold_starts <= 11, "{:?}", adaptive.total);
        assert!(adaptive.total.idle_gb_seconds < fixed.total.idle_gb_seconds);
    }
}

#[cfg(test)]
mod acceptance {
    use super::*;
    use ember_policy::Adaptive;

    #[test]
    fn on_heavy_tailed_traffic_adaptive_has_fewer_cold_starts_for_less_memory() {
        let calls = generate::heavy_tailed(1, 100, Duration::from_secs(24 * 3600));
        let fixed = simulate(&calls, &SimConfig::default());
        let adaptive = simulate(
            &calls,
            &SimConfig {
                keep_alive: KeepAlive::Adaptive(Adaptive::default()),
                ..SimConfig::default()
            },
        );
        assert!(
            adaptive.total.cold_starts < fixed.total.cold_starts,
            "cold starts: adaptive {} vs fixed {}",
            adaptive.total.cold_starts,
            fixed.total.cold_starts
        );
        assert!(
            adaptive.total.idle_gb_seconds <= fixed.total.idle_gb_seconds,
            "idle GB-s: adaptive {} vs fixed {}",
            adaptive.total.idle_gb_seconds,
            fixed.total.idle_gb_seconds
        );
    }
}
