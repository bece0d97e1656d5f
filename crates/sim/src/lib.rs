//! Ember's discrete-event simulator: replays a call trace through the *same* policy code the
//! live dispatcher runs ([`ember_policy`]: admission, scale-up pacing, keep-alive and the
//! warm pool), on virtual time, and counts cold starts, throttles and idle memory-time.
//!
//! - [`trace`]: the CSV trace format.
//! - [`generate`]: a heavy-tailed synthetic trace shaped like production traffic.
//! - [`simulate`]: the event loop.
//!
//! What is modelled: one environment serves one call at a time; a cold start takes
//! `init` before the handler runs; idle environments are reused and reclaimed exactly as
//! the policies say; a call beyond the account limit or the scale-up pace is throttled
//! (the live server's short wait for a busy environment is not modelled). What is not:
//! the machine's speed, so a simulation is about counts and memory, not latency.

pub mod generate;
pub mod trace;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use ember_policy::{Admission, Bucket, KeepAlive, Load, Pool, ScalePacing};
use serde::Serialize;

pub use trace::Call;

/// What a simulation runs with; the live server's settings of the same names.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub keep_alive: KeepAlive,
    pub admission: Admission,
    pub pacing: ScalePacing,
    /// Memory of every function, for idle memory-time.
    pub memory_mb: u32,
    /// How long a cold start takes before the handler runs.
    pub init: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            keep_alive: KeepAlive::default(),
            admission: Admission::default(),
            pacing: ScalePacing::default(),
            memory_mb: 128,
            init: Duration::ZERO,
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
    /// Environment-seconds spent idle.
    pub idle_env_seconds: f64,
    /// Idle memory-time, in GB-seconds.
    pub idle_gb_seconds: f64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.calls += other.calls;
        self.cold_starts += other.cold_starts;
        self.throttles += other.throttles;
        self.prewarms += other.prewarms;
        self.idle_env_seconds += other.idle_env_seconds;
        self.idle_gb_seconds += other.idle_gb_seconds;
    }
}

/// What a simulation found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub total: Counts,
    pub functions: BTreeMap<String, Counts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A pool's deadline (an expiry or a pre-warm) may have come.
    Deadline(usize),
    /// A call's handler ends and its environment is released.
    Finish { function: usize, env: u64 },
    /// A call arrives.
    Arrive(usize),
}

/// An environment in the simulation: an id and when it last went idle.
#[derive(Debug)]
struct SimEnv {
    id: u64,
    idle_since: Instant,
}

struct Function {
    name: String,
    pool: Pool<SimEnv>,
    bucket: Bucket,
    in_flight: u32,
    counts: Counts,
}

/// Replays `calls` (sorted by time) and reports what happened.
pub fn simulate(calls: &[Call], config: &SimConfig) -> Report {
    let base = Instant::now();
    let gb = f64::from(config.memory_mb) / 1024.0;
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut functions: Vec<Function> = Vec::new();
    let mut queue: BinaryHeap<Reverse<(Duration, u64, Event)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<_>, at: Duration, event: Event| {
        seq += 1;
        queue.push(Reverse((at, seq, event)));
    };
    for (i, call) in calls.iter().enumerate() {
        if !index.contains_key(call.function.as_str()) {
            index.insert(&call.function, functions.len());
            functions.push(Function {
                name: call.function.clone(),
                pool: Pool::default(),
                bucket: Bucket::full(&config.pacing, base),
                in_flight: 0,
                counts: Counts::default(),
            });
        }
        push(&mut queue, call.at, Event::Arrive(i));
    }
    let mut in_flight = 0u32;
    let mut next_env = 0u64;

    let idle_time = |env: &SimEnv, now: Instant, counts: &mut Counts| {
        let seconds = now.saturating_duration_since(env.idle_since).as_secs_f64();
        counts.idle_env_seconds += seconds;
        counts.idle_gb_seconds += seconds * gb;
    };

    while let Some(Reverse((at, _, event))) = queue.pop() {
        let now = base + at;
        let f = match event {
            Event::Deadline(f) | Event::Finish { function: f, .. } => f,
            Event::Arrive(i) => index[calls[i].function.as_str()],
        };
        let function = &mut functions[f];
        // Whatever expired up to now goes first, as the live reclaim loop would have done.
        for env in function.pool.reclaim(now, |_| true) {
            idle_time(&env, now, &mut function.counts);
        }
        if let Some(keep_for) = function.pool.prewarm_due(now)
            && function.bucket.take(&config.pacing, now).is_ok()
        {
            next_env += 1;
            function.counts.prewarms += 1;
            let ready = now + config.init;
            function.pool.put_prewarmed(
                SimEnv {
                    id: next_env,
                    idle_since: ready,
                },
                keep_for,
                ready,
            );
        }
        match event {
            Event::Deadline(_) => {}
            Event::Arrive(i) => {
                let call = &calls[i];
                function.counts.calls += 1;
                let load = Load {
                    reserved: None,
                    function_in_flight: function.in_flight,
                    unreserved_in_flight: in_flight,
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
                let (env, ends) = match warm {
                    Some((env, _)) => {
                        idle_time(&env, now, &mut function.counts);
                        (env.id, at + call.duration)
                    }
                    None => {
                        if function.bucket.take(&config.pacing, now).is_err() {
                            function.pool.finish(now);
                            function.counts.throttles += 1;
                            continue;
                        }
                        function.counts.cold_starts += 1;
                        next_env += 1;
                        (next_env, at + config.init + call.duration)
                    }
                };
                function.in_flight += 1;
                in_flight += 1;
                push(&mut queue, ends, Event::Finish { function: f, env });
            }
            Event::Finish { env, .. } => {
                function.in_flight -= 1;
                in_flight -= 1;
                function.pool.finish(now);
                // An environment the plan releases at once was never idle: nothing to count.
                let _released = function.pool.put_idle(
                    SimEnv {
                        id: env,
                        idle_since: now,
                    },
                    false,
                    &config.keep_alive,
                    now,
                );
            }
        }
        if let Some(deadline) = function.pool.next_deadline() {
            let at = deadline.saturating_duration_since(base);
            push(&mut queue, at, Event::Deadline(f));
        }
    }

    let mut total = Counts::default();
    let mut by_name = BTreeMap::new();
    for function in functions {
        total.add(&function.counts);
        by_name.insert(function.name, function.counts);
    }
    Report {
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
