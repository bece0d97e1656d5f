//! Ember's scheduling policies, as pure functions of (state, time, event).
//!
//! Nothing here reads a clock, sleeps or does I/O: callers pass `now`. The live dispatcher
//! and the simulator (`ember sim`) call the same code, and tests drive it with virtual time.
//!
//! - [`Admission`]: the account limit and reserved concurrency; whether a call may run.
//! - [`ScalePacing`] and [`Bucket`]: the pace at which a function may start environments.
//! - [`KeepAlive`]: fixed or adaptive (histogram) keep-alive and pre-warming.
//! - [`Pool`]: a version's warm pool as a state machine on top of those: which environment
//!   a call gets, which are reclaimed, when one is pre-warmed.
//! - [`routes_to_additional`]: weighted alias routing.

mod admission;
mod keep_alive;
mod pacing;
mod pool;

pub use admission::{Admission, Load, ReservationError, Throttle};
pub use keep_alive::{Adaptive, IdleHistogram, KeepAlive, Plan};
pub use pacing::{Bucket, ScalePacing};
pub use pool::{Counts, Pool};

/// Weighted routing of an alias between its version and one additional version.
///
/// `weight` is the additional version's share (0–1); `draw` is uniform in [0, 1). Pure, so
/// tests and the simulator pass their own draws.
pub fn routes_to_additional(weight: f64, draw: f64) -> bool {
    draw < weight
}

#[cfg(test)]
mod tests {
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
