//! Admission: whether one more invocation may run, given what already runs.
//!
//! The account has a concurrency limit (default 1,000, like a new Lambda account). A function
//! may reserve a slice of it: the slice is guaranteed to it and also caps it (`0` disables the
//! function). Functions without a reservation share what is left, and the account always
//! keeps `unreserved_min` (default 100) for them, so reservations cannot starve the rest.

use std::time::Duration;

/// The account-wide concurrency settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Concurrent invocations over all functions. Each running invocation holds one
    /// environment, so this also bounds the environments a burst can start; lower it to
    /// protect a small host.
    pub account_limit: u32,
    /// Concurrency that reservations may not take, so functions without one can still run.
    /// Lambda keeps 100; lower it on a small account limit.
    pub unreserved_min: u32,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            account_limit: 1000,
            unreserved_min: 100,
        }
    }
}

/// Why an invocation was not admitted. Each maps to a Lambda `Reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The concurrency shared by functions without a reservation is used up.
    AccountConcurrency { limit: u32 },
    /// The function's reserved concurrency is used up (or is 0: the function is disabled).
    ReservedConcurrency { limit: u32 },
    /// The function may not start another environment yet, and none freed up in time.
    ScaleUpRate { retry_after: Duration },
}

impl Throttle {
    /// The `Reason` field of Lambda's `TooManyRequestsException`.
    pub fn reason(&self) -> &'static str {
        match self {
            Throttle::AccountConcurrency { .. } => "ConcurrentInvocationLimitExceeded",
            Throttle::ReservedConcurrency { .. } => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
            Throttle::ScaleUpRate { .. } => "FunctionInvocationRateLimitExceeded",
        }
    }

    /// How long a caller should wait before retrying, for `Retry-After` (whole seconds, at
    /// least one). A concurrency slot frees when any invocation ends, usually well within
    /// a second; a scale-up token comes at the bucket's pace.
    pub fn retry_after(&self) -> Duration {
        match self {
            Throttle::AccountConcurrency { .. } | Throttle::ReservedConcurrency { .. } => {
                Duration::from_secs(1)
            }
            Throttle::ScaleUpRate { retry_after } => {
                Duration::from_secs(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
        }
    }
}

/// A reservation that would leave too little for the other functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "ReservedConcurrentExecutions {requested} would leave the account's unreserved concurrency \
     below its minimum of {unreserved_min}: at most {available} can be reserved for this function"
)]
pub struct ReservationError {
    pub requested: u32,
    pub available: u32,
    pub unreserved_min: u32,
}

/// What admission looks at: the function's reservation and what runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Load {
    /// The function's reserved concurrency, if it has one.
    pub reserved: Option<u32>,
    /// Invocations of this function running now (all its versions).
    pub function_in_flight: u32,
    /// Invocations of functions without a reservation running now.
    pub unreserved_in_flight: u32,
    /// The sum of every function's reservation.
    pub reserved_total: u32,
}

impl Admission {
    /// The concurrency shared by functions without a reservation.
    pub fn unreserved_limit(&self, reserved_total: u32) -> u32 {
        self.account_limit.saturating_sub(reserved_total)
    }

    /// Decides on one more invocation.
    pub fn admit(&self, load: Load) -> Result<(), Throttle> {
        match load.reserved {
            Some(limit) if load.function_in_flight >= limit => {
                Err(Throttle::ReservedConcurrency { limit })
            }
            Some(_) => Ok(()),
            None => {
                let limit = self.unreserved_limit(load.reserved_total);
                if load.unreserved_in_flight >= limit {
                    Err(Throttle::AccountConcurrency { limit })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Checks a function's new reservation, given what the other functions reserve.
    pub fn check_reservation(
        &self,
        requested: u32,
        reserved_by_others: u32,
    ) -> Result<(), ReservationError> {
        let available = self
            .account_limit
            .saturating_sub(self.unreserved_min)
            .saturating_sub(reserved_by_others);
        if requested <= available {
            Ok(())
        } else {
            Err(ReservationError {
                requested,
                available,
                unreserved_min: self.unreserved_min,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: Admission = Admission {
        account_limit: 10,
        unreserved_min: 2,
    };

    #[test]
    fn an_unreserved_function_is_refused_when_the_shared_pool_is_full() {
        let load = Load {
            reserved: None,
            function_in_flight: 0,
            unreserved_in_flight: 6,
            reserved_total: 4,
        };
        assert_eq!(
            ACCOUNT.admit(load),
            Err(Throttle::AccountConcurrency { limit: 6 })
        );
        let load = Load {
            unreserved_in_flight: 5,
            ..load
        };
        assert_eq!(ACCOUNT.admit(load), Ok(()));
    }

    #[test]
    fn a_reservation_is_both_a_guarantee_and_a_cap() {
        // The shared pool is full, yet the reserved function still runs within its slice…
        let load = Load {
            reserved: Some(3),
            function_in_flight: 2,
            unreserved_in_flight: 7,
            reserved_total: 3,
        };
        assert_eq!(ACCOUNT.admit(load), Ok(()));
        // …and not beyond it, even with the shared pool empty.
        let load = Load {
            function_in_flight: 3,
            unreserved_in_flight: 0,
            ..load
        };
        assert_eq!(
            ACCOUNT.admit(load),
            Err(Throttle::ReservedConcurrency { limit: 3 })
        );
    }

    #[test]
    fn a_reservation_of_zero_disables_the_function() {
        let load = Load {
            reserved: Some(0),
            ..Load::default()
        };
        let throttle = ACCOUNT.admit(load).unwrap_err();
        assert_eq!(
            throttle.reason(),
            "ReservedFunctionConcurrentInvocationLimitExceeded"
        );
    }

    #[test]
    fn reservations_keep_the_unreserved_minimum() {
        assert_eq!(ACCOUNT.check_reservation(8, 0), Ok(()));
        assert_eq!(ACCOUNT.check_reservation(5, 3), Ok(()));
        let err = ACCOUNT.check_reservation(6, 3).unwrap_err();
        assert_eq!(err.available, 5);
        assert!(err.to_string().contains("at most 5"), "{err}");
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        let rate = Throttle::ScaleUpRate {
            retry_after: Duration::from_millis(1200),
        };
        assert_eq!(rate.retry_after(), Duration::from_secs(2));
        let rate = Throttle::ScaleUpRate {
            retry_after: Duration::from_millis(3),
        };
        assert_eq!(rate.retry_after(), Duration::from_secs(1));
        assert_eq!(rate.reason(), "FunctionInvocationRateLimitExceeded");
    }
}
