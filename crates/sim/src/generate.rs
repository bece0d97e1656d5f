//! A synthetic trace with the shape of production serverless traffic.
//!
//! "Serverless in the Wild" (Shahrad et al., ATC '20) characterized Azure Functions:
//! invocation rates span eight orders of magnitude across functions, most functions are
//! called rarely, a large share are timers, and the rest arrive irregularly or in bursts.
//! This generator mixes those kinds, each function with its own rate drawn from a heavy
//! tail, so that keep-alive policies can be compared on something like real traffic:
//!
//! - 35% timers: a fixed period (1 minute to a day) with a second of jitter;
//! - 40% Poisson: a mean gap log-uniform between 10 s and a week;
//! - 25% bursty: sessions of a few calls seconds apart, sessions separated by a Pareto gap
//!   (at least an hour, heavy-tailed).
//!
//! About half the functions are then called at most once an hour, as in the paper.
//!
//! Handler durations are log-normal (median 200 ms). Same seed, same trace.
//!
//! Simpler shapes for what-if questions, each `functions` functions at `rate` calls per
//! second per function on average: [`poisson`] (steady), [`diurnal`] (a daily sine, peak at
//! noon five times the trough), [`spike`] (steady, then twenty times the rate for five
//! minutes in the middle of the span).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal, Pareto};

use crate::trace::Call;

/// Generates `functions` functions' calls over `span`.
pub fn heavy_tailed(seed: u64, functions: usize, span: Duration) -> Vec<Call> {
    let mut rng = StdRng::seed_from_u64(seed);
    let durations = LogNormal::new((0.2f64).ln(), 1.0).expect("valid log-normal");
    let end = span.as_secs_f64();
    let mut calls = Vec::new();
    for f in 0..functions {
        let kind: f64 = rng.random();
        let name = format!("f{f:04}");
        let mut arrivals: Vec<f64> = Vec::new();
        if kind < 0.35 {
            const PERIODS_MIN: [f64; 10] = [
                1.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 240.0, 720.0, 1440.0,
            ];
            let period = PERIODS_MIN[rng.random_range(0..PERIODS_MIN.len())] * 60.0;
            let mut t = rng.random_range(0.0..period);
            while t < end {
                arrivals.push((t + rng.random_range(-1.0..1.0)).max(0.0));
                t += period;
            }
        } else if kind < 0.75 {
            let mean = (10f64.ln() + rng.random::<f64>() * (604_800f64.ln() - 10f64.ln())).exp();
            let gaps = Exp::new(1.0 / mean).expect("valid exponential");
            let mut t = gaps.sample(&mut rng);
            while t < end {
                arrivals.push(t);
                t += gaps.sample(&mut rng);
            }
        } else {
            let sessions = Pareto::new(3600.0, 1.2).expect("valid Pareto");
            let within = Exp::new(1.0 / 5.0).expect("valid exponential");
            let mut t = rng.random_range(0.0..3600.0);
            while t < end {
                let calls_in_session = 1 + (rng.random::<f64>().ln() / 0.6f64.ln()) as u32;
                let mut s = t;
                for _ in 0..calls_in_session.min(50) {
                    arrivals.push(s);
                    s += within.sample(&mut rng);
                }
                let gap: f64 = sessions.sample(&mut rng);
                t = s + gap.min(6.0 * 3600.0);
            }
        }
        for at in arrivals.into_iter().filter(|t| *t < end) {
            let duration = durations.sample(&mut rng).min(60.0);
            calls.push(Call {
                at: Duration::from_secs_f64(at),
                function: name.clone(),
                duration: Duration::from_secs_f64(duration),
                memory_mb: None,
            });
        }
    }
    sort(&mut calls);
    calls
}

fn sort(calls: &mut [Call]) {
    calls.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.function.cmp(&b.function)));
}

/// Calls to `functions` functions whose rate at time `t` (seconds) is `rate × shape(t)`,
/// where `shape` is at most `peak`: a non-homogeneous Poisson process by thinning.
fn shaped(
    seed: u64,
    functions: usize,
    span: Duration,
    rate: f64,
    peak: f64,
    shape: impl Fn(f64) -> f64,
) -> Vec<Call> {
    let mut rng = StdRng::seed_from_u64(seed);
    let durations = LogNormal::new((0.2f64).ln(), 1.0).expect("valid log-normal");
    let end = span.as_secs_f64();
    let mut calls = Vec::new();
    if rate <= 0.0 || !rate.is_finite() {
        return calls;
    }
    let gaps = Exp::new(rate * peak).expect("valid exponential");
    for f in 0..functions {
        let name = format!("f{f:04}");
        let mut t = gaps.sample(&mut rng);
        while t < end {
            if rng.random::<f64>() * peak < shape(t) {
                calls.push(Call {
                    at: Duration::from_secs_f64(t),
                    function: name.clone(),
                    duration: Duration::from_secs_f64(durations.sample(&mut rng).min(60.0)),
                    memory_mb: None,
                });
            }
            t += gaps.sample(&mut rng);
        }
    }
    sort(&mut calls);
    calls
}

/// Steady traffic: each function a Poisson process of `rate` calls per second.
pub fn poisson(seed: u64, functions: usize, span: Duration, rate: f64) -> Vec<Call> {
    shaped(seed, functions, span, rate, 1.0, |_| 1.0)
}

/// A daily cycle: the rate follows a sine over 24 hours, lowest at midnight and five times
/// higher at noon, averaging `rate`.
pub fn diurnal(seed: u64, functions: usize, span: Duration, rate: f64) -> Vec<Call> {
    const DAY: f64 = 86_400.0;
    // 1 + a·(−cos) averages 1; with a = 2/3 the peak (5/3) is five times the trough (1/3).
    let a = 2.0 / 3.0;
    shaped(seed, functions, span, rate, 1.0 + a, move |t| {
        1.0 - a * (std::f64::consts::TAU * t / DAY).cos()
    })
}

/// Steady at `rate`, then twenty times that for five minutes in the middle of the span.
pub fn spike(seed: u64, functions: usize, span: Duration, rate: f64) -> Vec<Call> {
    let middle = span.as_secs_f64() / 2.0;
    let (from, to) = (middle - 150.0, middle + 150.0);
    shaped(seed, functions, span, rate, 20.0, move |t| {
        if (from..to).contains(&t) { 20.0 } else { 1.0 }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_trace() {
        let day = Duration::from_secs(6 * 3600);
        let a = heavy_tailed(7, 50, day);
        assert_eq!(a, heavy_tailed(7, 50, day));
        assert_ne!(a, heavy_tailed(8, 50, day));
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
    }

    fn count_between(calls: &[Call], from_s: u64, to_s: u64) -> usize {
        let (from, to) = (Duration::from_secs(from_s), Duration::from_secs(to_s));
        calls.iter().filter(|c| c.at >= from && c.at < to).count()
    }

    #[test]
    fn the_simple_shapes_have_their_rates() {
        let day = Duration::from_secs(86_400);
        // 10 functions at 0.1/s for a day: about 86,400 calls.
        let steady = poisson(1, 10, day, 0.1);
        assert!((82_000..91_000).contains(&steady.len()), "{}", steady.len());
        let daily = diurnal(1, 10, day, 0.1);
        assert!((82_000..91_000).contains(&daily.len()), "{}", daily.len());
        // Noon's hour has about five times midnight's.
        let noon = count_between(&daily, 11 * 3600 + 1800, 12 * 3600 + 1800);
        let night = count_between(&daily, 0, 1800) + count_between(&daily, 84_600, 86_400);
        let ratio = noon as f64 / night as f64;
        assert!((4.0..6.0).contains(&ratio), "noon {noon}, night {night}");
        let spiky = spike(1, 10, Duration::from_secs(3600), 0.1);
        let during = count_between(&spiky, 1650, 1950);
        let before = count_between(&spiky, 1000, 1300);
        assert!(during > 12 * before, "during {during}, before {before}");
    }

    #[test]
    fn rates_are_heavy_tailed_across_functions() {
        let calls = heavy_tailed(1, 200, Duration::from_secs(24 * 3600));
        let mut per_function = std::collections::HashMap::<&str, usize>::new();
        for c in &calls {
            *per_function.entry(&c.function).or_default() += 1;
        }
        let mut counts: Vec<usize> = per_function.into_values().collect();
        counts.sort_unstable();
        let median = counts[counts.len() / 2];
        let busiest = *counts.last().unwrap();
        // The busiest function is called orders of magnitude more often than the median one,
        // and about half are called at most once an hour.
        assert!(busiest > 50 * median, "median {median}, busiest {busiest}");
        // Functions never called in the day count as rare ones.
        let hourly_or_less = counts.iter().filter(|c| **c <= 24).count() + 200 - counts.len();
        assert!(
            (0.35..0.6).contains(&(hourly_or_less as f64 / 200.0)),
            "{hourly_or_less} of 200 called at most hourly"
        );
    }
}
