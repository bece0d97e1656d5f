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
            });
        }
    }
    calls.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.function.cmp(&b.function)));
    calls
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
