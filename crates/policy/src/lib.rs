//! Ember's scheduling policies, as pure functions of (state, time).
//!
//! Nothing here reads a clock, sleeps or does I/O: callers pass `now`. The live dispatcher
//! and, later, the simulator call the same code, and tests drive it with virtual time.
//!
//! - [`KeepAlive`]: when an idle environment is reclaimed.
//! - [`Admission`]: whether a new invocation may run, given what is already running.

use std::time::{Duration, Instant};

/// Reclaims an environment once it has been idle for `idle_timeout`.
///
/// The default, 10 minutes, is what LocalStack uses and close to what Lambda is observed to
/// do: long enough that a function called every few minutes stays warm, short enough that
/// an idle host frees its memory within the hour. Lower it on a memory-tight host; raise it
/// when cold starts cost more than the memory of idle environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    pub idle_timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            idle_timeout: Duration::from_secs(600),
        }
    }
}

impl KeepAlive {
    /// Whether an environment idle since `idle_since` should be reclaimed at `now`.
    pub fn expired(&self, idle_since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(idle_since) >= self.idle_timeout
    }

    /// How often to look for expired environments: often enough that none outlives its
    /// keep-alive by more than a quarter of it (at most one second late).
    pub fn scan_interval(&self) -> Duration {
        (self.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// The account-wide concurrency limit.
///
/// Default 1,000 concurrent invocations, like a new Lambda account. Each running
/// invocation holds one environment, so this also bounds the environments a burst can
/// start; lower it to protect a small host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub account_limit: u32,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            account_limit: 1000,
        }
    }
}

/// Why an invocation was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The account-wide limit is reached.
    AccountConcurrency { limit: u32 },
}

impl Admission {
    /// Decides on one more invocation while `in_flight` already run.
    pub fn admit(&self, in_flight: u32) -> Result<(), Throttle> {
        if in_flight < self.account_limit {
            Ok(())
        } else {
            Err(Throttle::AccountConcurrency {
                limit: self.account_limit,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_environment_is_kept_until_its_keep_alive_passes() {
        let policy = KeepAlive {
            idle_timeout: Duration::from_secs(600),
        };
        let t0 = Instant::now();
        assert!(!policy.expired(t0, t0));
        assert!(!policy.expired(t0, t0 + Duration::from_secs(599)));
        assert!(policy.expired(t0, t0 + Duration::from_secs(600)));
    }

    #[test]
    fn a_clock_that_reads_earlier_never_expires_anything() {
        let policy = KeepAlive {
            idle_timeout: Duration::from_secs(1),
        };
        let t0 = Instant::now() + Duration::from_secs(5);
        assert!(!policy.expired(t0, t0 - Duration::from_secs(5)));
    }

    #[test]
    fn scan_interval_tracks_short_keep_alives_and_caps_long_ones() {
        assert_eq!(
            KeepAlive {
                idle_timeout: Duration::from_secs(2)
            }
            .scan_interval(),
            Duration::from_millis(500)
        );
        assert_eq!(KeepAlive::default().scan_interval(), Duration::from_secs(1));
    }

    #[test]
    fn admission_refuses_at_the_account_limit() {
        let policy = Admission { account_limit: 2 };
        assert_eq!(policy.admit(0), Ok(()));
        assert_eq!(policy.admit(1), Ok(()));
        assert_eq!(
            policy.admit(2),
            Err(Throttle::AccountConcurrency { limit: 2 })
        );
    }
}

/// Weighted routing of an alias between its version and one additional version.
///
/// `weight` is the additional version's share (0–1); `draw` is uniform in [0, 1). Pure, so
/// tests and the simulator pass their own draws.
pub fn routes_to_additional(weight: f64, draw: f64) -> bool {
    draw < weight
}

#[cfg(test)]
mod routing_tests {
    use super::routes_to_additional;

    #[test]
    fn the_additional_share_matches_its_weight() {
        let draws = (0..1000).map(|i| f64::from(i) / 1000.0);
        let extra = draws.filter(|d| routes_to_additional(0.3, *d)).count();
        assert_eq!(extra, 300);
        assert!(!routes_to_additional(0.0, 0.0));
        assert!(routes_to_additional(1.0, 0.999));
    }
}
