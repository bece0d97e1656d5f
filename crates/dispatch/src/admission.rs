//! The live side of admission: the counts the policy decides on, the permit an admitted
//! invocation holds, and the scale-up buckets.
//!
//! One short-held mutex guards all counts, so a decision and the count it is based on
//! never disagree: two calls cannot both take the last slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_policy::{Admission, Bucket, Load, ReservationError, ScalePacing, Throttle};

use crate::wakeup::{Waiter, Wakeup};

/// The counts' maps: looked up several times on every call, with a hash that is fast on
/// short names (and seeded per process, as the standard one is).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Every function's reservation, in-flight count and scale-up bucket.
#[derive(Default)]
pub(crate) struct Concurrency {
    state: Mutex<State>,
    /// Woken when a permit is returned, for calls that wait for a slot.
    freed: Wakeup,
}

#[derive(Default)]
struct State {
    reserved: Map<String, u32>,
    reserved_total: u32,
    /// Running invocations by function name (all versions together), keyed by the
    /// function's shared name so that admitting a call allocates nothing. A function's
    /// entry stays at zero until it is deleted, rather than being removed and added again
    /// as its calls come and go.
    in_flight: Map<Arc<str>, u32>,
    unreserved_in_flight: u32,
    buckets: Map<String, Bucket>,
    /// The most invocations of each function running at once since the last
    /// [`Concurrency::take_peaks`].
    peaks: Map<Arc<str>, u32>,
}

/// One admitted invocation's share of the concurrency; released on drop.
pub(crate) struct Permit<'a> {
    concurrency: &'a Concurrency,
    function: &'a Arc<str>,
    /// Whether it counted against the unreserved pool.
    unreserved: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.concurrency.lock();
        if let Some(n) = state.in_flight.get_mut(self.function) {
            *n -= 1;
        }
        if self.unreserved {
            state.unreserved_in_flight -= 1;
        }
        drop(state);
        self.concurrency.freed.wake();
    }
}

impl Concurrency {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("concurrency lock")
    }

    /// Counts a call as waiting for a slot, until dropped: [`Concurrency::freed`] futures
    /// are woken only while one is held. Taken before the first try.
    pub fn waiter(&self) -> Waiter<'_> {
        self.freed.waiter()
    }

    /// Resolves when a permit is next returned, while a [`Waiter`] is held.
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// Admits one invocation of `function` or says why not.
    pub fn admit<'a>(
        &'a self,
        policy: &Admission,
        function: &'a Arc<str>,
    ) -> Result<Permit<'a>, Throttle> {
        let mut state = self.lock();
        let reserved = state.reserved.get(function.as_ref()).copied();
        let load = Load {
            reserved,
            function_in_flight: state.in_flight.get(function).copied().unwrap_or(0),
            unreserved_in_flight: state.unreserved_in_flight,
            reserved_total: state.reserved_total,
        };
        policy.admit(load)?;
        let n = match state.in_flight.get_mut(function) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                state.in_flight.insert(Arc::clone(function), 1);
                1
            }
        };
        match state.peaks.get_mut(function) {
            Some(peak) => *peak = (*peak).max(n),
            None => {
                state.peaks.insert(Arc::clone(function), n);
            }
        }
        let unreserved = reserved.is_none();
        if unreserved {
            state.unreserved_in_flight += 1;
        }
        Ok(Permit {
            concurrency: self,
            function,
            unreserved,
        })
    }

    /// Sets (or with `None` removes) a function's reservation, if the account can give it.
    pub fn reserve(
        &self,
        policy: &Admission,
        function: &str,
        reservation: Option<u32>,
    ) -> Result<(), ReservationError> {
        let mut state = self.lock();
        let others = state.reserved_total - state.reserved.get(function).copied().unwrap_or(0);
        match reservation {
            Some(n) => {
                policy.check_reservation(n, others)?;
                state.reserved.insert(function.to_owned(), n);
                state.reserved_total = others + n;
            }
            None => {
                state.reserved.remove(function);
                state.reserved_total = others;
            }
        }
        Ok(())
    }

    /// Restores a stored reservation without checking it against the others (a server
    /// restarted with a lower account limit still honours what was granted).
    pub fn restore(&self, function: &str, reservation: u32) {
        let mut state = self.lock();
        let previous = state.reserved.insert(function.to_owned(), reservation);
        state.reserved_total = state.reserved_total - previous.unwrap_or(0) + reservation;
    }

    pub fn reserved(&self, function: &str) -> Option<u32> {
        self.lock().reserved.get(function).copied()
    }

    pub fn reserved_total(&self) -> u32 {
        self.lock().reserved_total
    }

    /// Running invocations of `function`.
    pub fn in_flight(&self, function: &str) -> u32 {
        self.lock().in_flight.get(function).copied().unwrap_or(0)
    }

    /// The most invocations of `function` running at once since the last `take_peaks`.
    pub fn peak(&self, function: &str) -> u32 {
        self.lock().peaks.get(function).copied().unwrap_or(0)
    }

    /// Every function's peak since the last call; the next period starts from what runs now.
    pub fn take_peaks(&self) -> HashMap<Arc<str>, u32> {
        let mut state = self.lock();
        let running = state
            .in_flight
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(f, n)| (Arc::clone(f), *n))
            .collect();
        std::mem::replace(&mut state.peaks, running)
            .into_iter()
            .collect()
    }

    /// Forgets a deleted function.
    pub fn forget(&self, function: &str) {
        let mut state = self.lock();
        if let Some(n) = state.reserved.remove(function) {
            state.reserved_total -= n;
        }
        state.buckets.remove(function);
        if state.in_flight.get(function) == Some(&0) {
            state.in_flight.remove(function);
        }
    }

    /// Takes a scale-up token for a new environment of `function`, or says how long until
    /// one is there.
    pub fn take_token(
        &self,
        pacing: &ScalePacing,
        function: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut state = self.lock();
        state
            .buckets
            .entry(function.to_owned())
            .or_insert_with(|| Bucket::full(pacing, now))
            .take(pacing, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Arc<str> {
        Arc::from(n)
    }

    #[test]
    fn permits_return_their_slot_when_dropped() {
        let policy = Admission {
            account_limit: 2,
            unreserved_min: 0,
        };
        let concurrency = Concurrency::default();
        let (f, g) = (name("f"), name("g"));
        let a = concurrency.admit(&policy, &f).unwrap();
        let _b = concurrency.admit(&policy, &g).unwrap();
        assert!(concurrency.admit(&policy, &f).is_err());
        drop(a);
        assert!(concurrency.admit(&policy, &f).is_ok());
    }

    #[test]
    fn peaks_remember_the_most_at_once_until_taken() {
        let policy = Admission::default();
        let concurrency = Concurrency::default();
        let f = name("f");
        let a = concurrency.admit(&policy, &f).unwrap();
        let b = concurrency.admit(&policy, &f).unwrap();
        drop(a);
        assert_eq!(concurrency.peak("f"), 2);
        assert_eq!(concurrency.take_peaks()[&name("f")], 2);
        // The next period starts with the one still running.
        assert_eq!(concurrency.peak("f"), 1);
        drop(b);
        assert_eq!(concurrency.take_peaks()[&name("f")], 1);
        assert_eq!(concurrency.peak("f"), 0);
    }

    #[test]
    fn a_reservation_moves_a_function_out_of_the_shared_pool() {
        let policy = Admission {
            account_limit: 3,
            unreserved_min: 1,
        };
        let concurrency = Concurrency::default();
        concurrency.reserve(&policy, "r", Some(2)).unwrap();
        assert!(concurrency.reserve(&policy, "s", Some(1)).is_err());
        let (r, u) = (name("r"), name("u"));
        let _r1 = concurrency.admit(&policy, &r).unwrap();
        let _r2 = concurrency.admit(&policy, &r).unwrap();
        let _u = concurrency.admit(&policy, &u).unwrap();
        assert_eq!(
            concurrency.admit(&policy, &r).err(),
            Some(Throttle::ReservedConcurrency { limit: 2 })
        );
        assert_eq!(
            concurrency.admit(&policy, &u).err(),
            Some(Throttle::AccountConcurrency { limit: 1 })
        );
        concurrency.reserve(&policy, "r", None).unwrap();
        assert_eq!(concurrency.reserved_total(), 0);
    }
}
