//! Keep-alive: how long an idle environment is kept, and when one is started ahead of a
//! call that is expected.
//!
//! - [`KeepAlive::Fixed`]: every idle environment is kept for the same time (default 10
//!   minutes).
//! - [`KeepAlive::Adaptive`]: the hybrid histogram policy of "Serverless in the Wild"
//!   (Shahrad et al., ATC '20). Each function keeps a histogram of its idle times (the gap
//!   from the end of its last invocation to the start of the next). When the histogram is
//!   representative, the environment is released right after a call, a new one is
//!   *pre-warmed* just before the 5th percentile of the idle time, and kept until just after
//!   the 99th: a function called every 30 minutes is then warm at each call for a few
//!   minutes of memory instead of cold after ten. While the histogram is not representative
//!   (too few idle times, too many beyond its range, or too flat to predict from), the
//!   function falls back to the fixed keep-alive.

use std::time::Duration;

/// A keep-alive policy. One is set per server; a function may choose its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeepAlive {
    Fixed { ttl: Duration },
    Adaptive(Adaptive),
}

impl Default for KeepAlive {
    /// Fixed, 10 minutes: what LocalStack uses and close to what Lambda is observed to do.
    fn default() -> Self {
        KeepAlive::Fixed {
            ttl: Duration::from_secs(600),
        }
    }
}

/// The settings of the adaptive policy. The defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    /// Width of a histogram bin. Default 1 minute; the pre-warm and keep-alive windows are
    /// whole bins, so this is also their resolution.
    pub bin: Duration,
    /// Number of bins. Default 240 (4 hours of idle time); longer idle times are counted
    /// as out of range.
    pub bins: u32,
    /// The idle-time percentile at which to pre-warm. Default 5.
    pub head_percentile: f64,
    /// The idle-time percentile until which to keep the environment. Default 99.
    pub tail_percentile: f64,
    /// Safety margin: pre-warm this share earlier and keep this share longer. Default 10%.
    pub margin: f64,
    /// Idle times needed before the histogram is trusted. Default 10.
    pub min_samples: u32,
    /// Coefficient of variation of the bin counts below which the histogram is too flat to
    /// predict from. Default 2.
    pub min_cv: f64,
    /// The keep-alive used while the histogram is not representative. Default 10 minutes.
    pub fallback_ttl: Duration,
    /// What one cold start is worth in idle time of one environment. Within the
    /// percentile window, the keep-alive ends where keeping the environment one more bin
    /// would cost more idle memory than the cold starts it is expected to save. Default
    /// 10 minutes, the trade the fixed policy makes; raise it to buy fewer cold starts
    /// with memory.
    pub cold_start_cost: Duration,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            bin: Duration::from_secs(60),
            bins: 240,
            head_percentile: 5.0,
            tail_percentile: 99.0,
            margin: 0.10,
            min_samples: 10,
            min_cv: 2.0,
            fallback_ttl: Duration::from_secs(600),
            cold_start_cost: Duration::from_secs(600),
        }
    }
}

impl Adaptive {
    /// The adaptive policy with every window scaled to a bin of `bin` (for tests and
    /// simulations on a compressed time scale).
    pub fn with_bin(bin: Duration) -> Adaptive {
        let default = Adaptive::default();
        Adaptive {
            bin,
            fallback_ttl: bin * 10,
            cold_start_cost: bin * 10,
            ..default
        }
    }
}

/// What to do with a function's environment once a call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Release the idle environment at once and start a fresh one this long after the call
    /// ended. `None`: keep the environment from the end of the call.
    pub prewarm_after: Option<Duration>,
    /// How long the environment (kept or pre-warmed) stays after it becomes idle.
    pub keep_for: Duration,
}

/// A function's idle times, in bins.
///
/// The plan from it: pre-warm at the head percentile (less the margin), and keep until the
/// cheapest end within the tail percentile (plus the margin), where the cost weighs idle
/// memory-time against cold starts (`cold_start_cost`). The weighing keeps a bimodal
/// function (bursts of calls seconds apart, then hours of silence) from holding an
/// environment for hours after each burst to save one cold start.
#[derive(Debug, Clone, Default)]
pub struct IdleHistogram {
    counts: Vec<u32>,
    total: u32,
    out_of_range: u32,
}

impl IdleHistogram {
    /// Records one idle time.
    pub fn record(&mut self, policy: &KeepAlive, idle: Duration) {
        let KeepAlive::Adaptive(settings) = policy else {
            return;
        };
        if self.counts.len() != settings.bins as usize {
            self.counts = vec![0; settings.bins as usize];
        }
        let bin = (idle.as_nanos() / settings.bin.as_nanos().max(1)) as usize;
        self.total += 1;
        match self.counts.get_mut(bin) {
            Some(count) => *count += 1,
            None => self.out_of_range += 1,
        }
    }

    /// The number of idle times recorded.
    pub fn samples(&self) -> u32 {
        self.total
    }

    /// The first bin at which `percentile` percent of the in-range idle times are reached.
    fn percentile_bin(&self, percentile: f64) -> usize {
        let in_range: u32 = self.total - self.out_of_range;
        let target = (f64::from(in_range) * percentile / 100.0).ceil().max(1.0);
        let mut seen = 0u32;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if f64::from(seen) >= target {
                return i;
            }
        }
        self.counts.len().saturating_sub(1)
    }

    /// The bin boundary in `head + 1..=tail` at which to stop keeping an environment that
    /// became idle at the head: the one with the least idle memory-time plus cold starts
    /// (weighted by `cold_start_cost`) over the recorded idle times.
    fn cheapest_end(&self, head: usize, tail: usize, settings: &Adaptive) -> usize {
        let bin = settings.bin.as_secs_f64();
        let cold_cost = settings.cold_start_cost.as_secs_f64() / bin;
        // In bins: an idle time in bin i is taken at its middle, i + 0.5.
        let start = head as f64;
        let mut beyond: u32 = self.out_of_range + self.counts[head..].iter().sum::<u32>();
        // Idle time of the calls that came before the end, so far.
        let mut before = 0.0;
        let mut best = (f64::INFINITY, tail);
        for end in head + 1..=tail.min(self.counts.len()) {
            let i = end - 1;
            let count = self.counts[i];
            beyond -= count;
            before += f64::from(count) * (i as f64 + 0.5 - start).max(0.0);
            let cost =
                before + f64::from(beyond) * (end as f64 - start) + f64::from(beyond) * cold_cost;
            if cost < best.0 {
                best = (cost, end);
            }
        }
        best.1
    }

    fn coefficient_of_variation(&self) -> f64 {
        let n = self.counts.len() as f64;
        if n == 0.0 {
            return 0.0;
        }
        let mean = self.counts.iter().map(|c| f64::from(*c)).sum::<f64>() / n;
        if mean == 0.0 {
            return 0.0;
        }
        let variance = self
            .counts
            .iter()
            .map(|c| (f64::from(*c) - mean).powi(2))
            .sum::<f64>()
            / n;
        variance.sqrt() / mean
    }
}

impl KeepAlive {
    /// The plan for a function whose idle times so far are `histogram`.
    pub fn plan(&self, histogram: &IdleHistogram) -> Plan {
        let settings = match self {
            KeepAlive::Fixed { ttl } => {
                return Plan {
                    prewarm_after: None,
                    keep_for: *ttl,
                };
            }
            KeepAlive::Adaptive(settings) => settings,
        };
        let fallback = Plan {
            prewarm_after: None,
            keep_for: settings.fallback_ttl,
        };
        let representative = histogram.total >= settings.min_samples
            && histogram.out_of_range * 2 <= histogram.total
            && histogram.coefficient_of_variation() >= settings.min_cv;
        if !representative {
            return fallback;
        }
        let head = histogram.percentile_bin(settings.head_percentile);
        let tail = histogram.percentile_bin(settings.tail_percentile) + 1;
        let end = histogram.cheapest_end(head, tail, settings) as u32;
        let prewarm = (settings.bin * head as u32).mul_f64(1.0 - settings.margin);
        let until = (settings.bin * end).mul_f64(1.0 + settings.margin);
        if head == 0 {
            Plan {
                prewarm_after: None,
                keep_for: until,
            }
        } else {
            Plan {
                prewarm_after: Some(prewarm),
                keep_for: until.saturating_sub(prewarm),
            }
        }
    }

    /// The longest an environment may be kept by this policy: how often to look for expired
    /// ones is derived from the shortest.
    pub fn scan_interval(&self) -> Duration {
        let shortest = match self {
            KeepAlive::Fixed { ttl } => *ttl,
            KeepAlive::Adaptive(settings) => settings.bin.min(settings.fallback_ttl),
        };
        (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn adaptive() -> KeepAlive {
        KeepAlive::Adaptive(Adaptive::default())
    }

    fn histogram_of(policy: &KeepAlive, idle: impl IntoIterator<Item = Duration>) -> IdleHistogram {
        let mut h = IdleHistogram::default();
        for i in idle {
            h.record(policy, i);
        }
        h
    }

    #[test]
    fn fixed_keeps_every_environment_for_its_ttl() {
        let policy = KeepAlive::default();
        let plan = policy.plan(&IdleHistogram::default());
        assert_eq!(
            plan,
            Plan {
                prewarm_after: None,
                keep_for: 10 * MIN
            }
        );
    }

    #[test]
    fn adaptive_falls_back_to_fixed_until_it_has_enough_idle_times() {
        let policy = adaptive();
        let h = histogram_of(&policy, std::iter::repeat_n(30 * MIN, 9));
        assert_eq!(
            policy.plan(&h),
            Plan {
                prewarm_after: None,
                keep_for: 10 * MIN
            }
        );
    }

    #[test]
    fn a_periodic_function_is_released_then_prewarmed_just_before_its_next_call() {
        let policy = adaptive();
        // Called every 30 minutes and a few seconds.
        let h = histogram_of(
            &policy,
            std::iter::repeat_n(30 * MIN + Duration::from_secs(5), 20),
        );
        let plan = policy.plan(&h);
        // Bin 30 → pre-warm at 30 min − 10%, keep until 31 min + 10%.
        assert_eq!(plan.prewarm_after, Some(27 * MIN));
        assert_eq!(plan.keep_for, Duration::from_secs(341 * 6) - 27 * MIN);
        // Both windows together hold far less memory than the fixed ten minutes.
        assert!(plan.keep_for < 10 * MIN);
    }

    #[test]
    fn a_frequent_function_is_kept_just_past_its_longest_usual_gap() {
        let policy = adaptive();
        let idle = (0..100).map(|i| Duration::from_secs(10 + (i % 3) * 60));
        let plan = policy.plan(&histogram_of(&policy, idle));
        assert_eq!(plan.prewarm_after, None);
        assert_eq!(plan.keep_for, (3 * MIN).mul_f64(1.1));
    }

    #[test]
    fn a_bursty_function_is_not_kept_for_hours_after_each_burst() {
        let policy = adaptive();
        // Bursts of calls seconds apart, then three hours of silence.
        let idle = (0..100).map(|i| {
            if i % 10 == 9 {
                180 * MIN
            } else {
                Duration::from_secs(5)
            }
        });
        let plan = policy.plan(&histogram_of(&policy, idle));
        // The 99th percentile is three hours away; holding memory that long to save one cold
        // start in ten is not worth it: the environment goes after the burst's gaps.
        assert_eq!(plan.prewarm_after, None);
        assert_eq!(plan.keep_for, MIN.mul_f64(1.1));
    }

    #[test]
    fn a_higher_cold_start_cost_keeps_environments_longer() {
        let idle: Vec<Duration> = (0..100)
            .map(|i| {
                if i % 4 == 0 {
                    20 * MIN
                } else {
                    Duration::from_secs(30)
                }
            })
            .collect();
        let cheap = adaptive();
        let dear = KeepAlive::Adaptive(Adaptive {
            cold_start_cost: 120 * MIN,
            ..Adaptive::default()
        });
        assert_eq!(
            cheap.plan(&histogram_of(&cheap, idle.clone())).keep_for,
            MIN.mul_f64(1.1)
        );
        assert_eq!(
            dear.plan(&histogram_of(&dear, idle)).keep_for,
            (21 * MIN).mul_f64(1.1)
        );
    }

    #[test]
    fn mostly_out_of_range_idle_times_fall_back_to_fixed() {
        let policy = adaptive();
        let idle = (0..20).map(|i| if i % 3 == 0 { MIN } else { 300 * MIN });
        let plan = policy.plan(&histogram_of(&policy, idle));
        assert_eq!(
            plan,
            Plan {
                prewarm_after: None,
                keep_for: 10 * MIN
            }
        );
    }

    #[test]
    fn a_flat_histogram_is_too_unpredictable_to_follow() {
        let policy = adaptive();
        // One idle time in every bin: nothing to predict.
        let idle = (0..240).map(|i| MIN * i + Duration::from_secs(1));
        let plan = policy.plan(&histogram_of(&policy, idle));
        assert_eq!(plan.keep_for, 10 * MIN);
    }

    #[test]
    fn the_fixed_policy_records_nothing() {
        let policy = KeepAlive::default();
        let h = histogram_of(&policy, [MIN, MIN]);
        assert_eq!(h.samples(), 0);
    }

    #[test]
    fn scan_interval_tracks_short_keep_alives_and_caps_long_ones() {
        let short = KeepAlive::Fixed {
            ttl: Duration::from_secs(2),
        };
        assert_eq!(short.scan_interval(), Duration::from_millis(500));
        assert_eq!(KeepAlive::default().scan_interval(), Duration::from_secs(1));
    }
}
