//! Scale-up pacing: a token bucket per function on *new* environments.
//!
//! A warm environment costs nothing to reuse; a new one costs a cold start and memory. The
//! bucket lets a burst start `burst` environments at once, then refills at `refill` per
//! `period` (Lambda's default: 1,000 at once, then 1,000 per 10 s). A call that would need a
//! new environment beyond the pace first waits up to `wait` for a busy one to free up, so a
//! spike of short calls is absorbed by the environments it already has.

use std::time::{Duration, Instant};

/// The pace at which one function may start new environments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalePacing {
    /// New environments that may start at once. Default 1,000.
    pub burst: u32,
    /// Tokens added per `period`. Default 1,000.
    pub refill: u32,
    /// Default 10 s.
    pub period: Duration,
    /// How long a call beyond the pace waits for a warm environment (or a token) before a
    /// 429. Default 1 s: long enough to absorb a spike of short calls, short enough that a
    /// client's own retry is not much later. Set 0 to refuse at once.
    pub wait: Duration,
}

impl Default for ScalePacing {
    fn default() -> Self {
        ScalePacing {
            burst: 1000,
            refill: 1000,
            period: Duration::from_secs(10),
            wait: Duration::from_secs(1),
        }
    }
}

/// One function's bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(pacing: &ScalePacing, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(pacing.burst),
            at: now,
        }
    }

    fn refill(&mut self, pacing: &ScalePacing, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        if pacing.period.is_zero() {
            self.tokens = f64::from(pacing.burst);
        } else {
            let added =
                elapsed.as_secs_f64() / pacing.period.as_secs_f64() * f64::from(pacing.refill);
            self.tokens = (self.tokens + added).min(f64::from(pacing.burst));
        }
        self.at = self.at.max(now);
    }

    /// Takes a token for one new environment, or says how long until one is there.
    pub fn take(&mut self, pacing: &ScalePacing, now: Instant) -> Result<(), Duration> {
        self.refill(pacing, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if pacing.refill == 0 || pacing.period.is_zero() {
            return Err(Duration::MAX);
        }
        let missing = 1.0 - self.tokens;
        let per_token = pacing.period.as_secs_f64() / f64::from(pacing.refill);
        Err(Duration::from_secs_f64(missing * per_token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(burst: u32, refill: u32, period_ms: u64) -> ScalePacing {
        ScalePacing {
            burst,
            refill,
            period: Duration::from_millis(period_ms),
            wait: Duration::ZERO,
        }
    }

    #[test]
    fn a_burst_is_allowed_at_once_then_the_refill_sets_the_pace() {
        let p = pacing(3, 2, 1000);
        let t0 = Instant::now();
        let mut bucket = Bucket::full(&p, t0);
        for _ in 0..3 {
            assert_eq!(bucket.take(&p, t0), Ok(()));
        }
        // Two tokens a second: the next one is half a second away.
        assert_eq!(bucket.take(&p, t0), Err(Duration::from_millis(500)));
        assert!(bucket.take(&p, t0 + Duration::from_millis(499)).is_err());
        assert_eq!(bucket.take(&p, t0 + Duration::from_millis(500)), Ok(()));
        assert!(bucket.take(&p, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_its_burst() {
        let p = pacing(2, 100, 1000);
        let t0 = Instant::now();
        let mut bucket = Bucket::full(&p, t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(bucket.take(&p, later), Ok(()));
        assert_eq!(bucket.take(&p, later), Ok(()));
        assert!(bucket.take(&p, later).is_err());
    }

    #[test]
    fn a_bucket_without_refill_never_recovers() {
        let p = pacing(1, 0, 1000);
        let t0 = Instant::now();
        let mut bucket = Bucket::full(&p, t0);
        assert_eq!(bucket.take(&p, t0), Ok(()));
        assert_eq!(
            bucket.take(&p, t0 + Duration::from_secs(3600)),
            Err(Duration::MAX)
        );
    }
}
