//! What happens to an asynchronous event after an attempt: a pure function of the outcome,
//! the event's history, its configuration and the time.
//!
//! - A function error (the handler failed, crashed or timed out) counts as an attempt; the
//!   event is retried `max_retry_attempts` times (0–2, default 2), `function_error_delay`
//!   × the attempt number apart (1 then 2 minutes by default), then fails
//!   `RetriesExhausted`.
//! - A throttle or a system error (no environment could be started) does not count: the
//!   event is retried after as long as it has waited so far (at least `system_delay`, at
//!   most `system_delay_max`), so the backoff roughly doubles.
//! - Either way, an event that could not run within `max_event_age` fails
//!   `EventAgeExceeded`.

use std::time::Duration;

/// Lambda's default retries and maximum event age.
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// The server's retry timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryTiming {
    pub function_error_delay: Duration,
    pub system_delay: Duration,
    pub system_delay_max: Duration,
}

impl Default for RetryTiming {
    fn default() -> Self {
        RetryTiming {
            function_error_delay: Duration::from_secs(60),
            system_delay: Duration::from_secs(1),
            system_delay_max: Duration::from_secs(300),
        }
    }
}

/// A function's asynchronous settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_retry_attempts: u32,
    pub max_event_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_retry_attempts: DEFAULT_RETRIES,
            max_event_age: DEFAULT_MAX_AGE,
        }
    }
}

/// How an attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Succeeded,
    FunctionError,
    /// Throttled, or no environment could be started.
    NotRun,
}

/// Why an event failed for good, as destination records name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    RetriesExhausted,
    EventAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Done,
    /// Run again at this time (epoch ms), with this many function errors so far.
    RetryAt {
        at_ms: i64,
        attempts: u32,
    },
    Fail(Condition),
}

/// Decides after an attempt at `now_ms` of an event accepted at `enqueued_ms` that had
/// `attempts` function errors before it.
pub fn decide(
    attempt: Attempt,
    attempts: u32,
    enqueued_ms: i64,
    now_ms: i64,
    limits: &Limits,
    timing: &RetryTiming,
) -> Decision {
    let deadline = enqueued_ms.saturating_add(limits.max_event_age.as_millis() as i64);
    let (attempts, delay) = match attempt {
        Attempt::Succeeded => return Decision::Done,
        Attempt::FunctionError => {
            let attempts = attempts + 1;
            if attempts > limits.max_retry_attempts {
                return Decision::Fail(Condition::RetriesExhausted);
            }
            (attempts, timing.function_error_delay * attempts)
        }
        Attempt::NotRun => {
            let waited = Duration::from_millis(now_ms.saturating_sub(enqueued_ms).max(0) as u64);
            (
                attempts,
                waited.clamp(timing.system_delay, timing.system_delay_max),
            )
        }
    };
    let at_ms = now_ms.saturating_add(delay.as_millis() as i64);
    if at_ms > deadline {
        return Decision::Fail(Condition::EventAgeExceeded);
    }
    Decision::RetryAt { at_ms, attempts }
}

/// Whether an event accepted at `enqueued_ms` is too old to run at `now_ms`.
pub fn expired(enqueued_ms: i64, now_ms: i64, limits: &Limits) -> bool {
    now_ms.saturating_sub(enqueued_ms) > limits.max_event_age.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn function_errors_are_retried_twice_a_minute_then_two_apart_then_fail() {
        let (limits, timing) = (Limits::default(), RetryTiming::default());
        let first = decide(Attempt::FunctionError, 0, 0, 0, &limits, &timing);
        assert_eq!(
            first,
            Decision::RetryAt {
                at_ms: MIN,
                attempts: 1
            }
        );
        let second = decide(Attempt::FunctionError, 1, 0, MIN, &limits, &timing);
        assert_eq!(
            second,
            Decision::RetryAt {
                at_ms: 3 * MIN,
                attempts: 2
            }
        );
        let third = decide(Attempt::FunctionError, 2, 0, 3 * MIN, &limits, &timing);
        assert_eq!(third, Decision::Fail(Condition::RetriesExhausted));
        let none = Limits {
            max_retry_attempts: 0,
            ..limits
        };
        assert_eq!(
            decide(Attempt::FunctionError, 0, 0, 0, &none, &timing),
            Decision::Fail(Condition::RetriesExhausted)
        );
        assert_eq!(
            decide(Attempt::Succeeded, 1, 0, MIN, &limits, &timing),
            Decision::Done
        );
    }

    #[test]
    fn throttles_back_off_without_counting_until_the_event_is_too_old() {
        let timing = RetryTiming::default();
        let limits = Limits {
            max_retry_attempts: 2,
            max_event_age: Duration::from_secs(60),
        };
        // Waited 0 s: retry after the minimum second; waited 20 s: after 20 s more.
        assert_eq!(
            decide(Attempt::NotRun, 1, 0, 0, &limits, &timing),
            Decision::RetryAt {
                at_ms: 1000,
                attempts: 1
            }
        );
        assert_eq!(
            decide(Attempt::NotRun, 1, 0, 20_000, &limits, &timing),
            Decision::RetryAt {
                at_ms: 40_000,
                attempts: 1
            }
        );
        // Waited 40 s: the next try would come after the 60 s maximum age.
        assert_eq!(
            decide(Attempt::NotRun, 1, 0, 40_000, &limits, &timing),
            Decision::Fail(Condition::EventAgeExceeded)
        );
        assert!(expired(0, 60_001, &limits) && !expired(0, 60_000, &limits));
    }
}
