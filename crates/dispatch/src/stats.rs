//! What `ember stats` shows: per function, the counters since the server started, the
//! environments now, and the peak concurrency of each of the last minutes' slots.
//!
//! Peaks are taken from admission (every admitted call updates its function's peak), so a
//! burst shorter than a slot still shows; the reclaim loop closes a slot every
//! [`SLOT`] and keeps the last [`SLOTS`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admission::Concurrency;

/// One slot of the concurrency history.
pub const SLOT: Duration = Duration::from_secs(10);
/// Slots kept: 15 minutes.
pub const SLOTS: usize = 90;

/// A function's figures now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionStats {
    pub function: String,
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub cold_starts: u64,
    pub prewarms: u64,
    pub concurrent_executions: u32,
    pub environments: Environments,
    pub reserved_concurrency: Option<u32>,
    /// Provisioned environments initialized now.
    pub provisioned_concurrency: u32,
    /// Peak concurrency per slot of [`SLOT`], oldest first; the last is the slot in
    /// progress.
    pub concurrency: Vec<u32>,
}

/// Environments by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Environments {
    pub initializing: u32,
    /// Idle on-demand environments.
    pub idle: u32,
    pub busy: u32,
    /// Idle provisioned environments.
    pub provisioned: u32,
}

#[derive(Default)]
pub(crate) struct History {
    state: Mutex<HistoryState>,
}

#[derive(Default)]
struct HistoryState {
    /// When the slot in progress began.
    began: Option<Instant>,
    slots: HashMap<Arc<str>, VecDeque<u32>>,
}

impl History {
    /// Closes the slot in progress if it is over, for every function in `names`.
    pub fn tick<'a>(
        &self,
        now: Instant,
        concurrency: &Concurrency,
        names: impl Iterator<Item = &'a Arc<str>>,
    ) {
        let mut state = self.state.lock().expect("history lock");
        let began = *state.began.get_or_insert(now);
        if now.saturating_duration_since(began) < SLOT {
            return;
        }
        state.began = Some(now);
        let peaks = concurrency.take_peaks();
        let mut kept = HashMap::new();
        for name in names {
            if kept.contains_key(name) {
                continue;
            }
            let mut slots = state.slots.remove(name).unwrap_or_default();
            slots.push_back(peaks.get(name).copied().unwrap_or(0));
            if slots.len() >= SLOTS {
                slots.pop_front();
            }
            kept.insert(Arc::clone(name), slots);
        }
        // Functions that are gone are forgotten with their history.
        state.slots = kept;
    }

    /// The closed slots of `function`, oldest first, and the slot in progress.
    pub fn of(&self, function: &str, in_progress: u32) -> Vec<u32> {
        let state = self.state.lock().expect("history lock");
        let mut slots: Vec<u32> = state
            .slots
            .get(function)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        slots.push(in_progress);
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_policy::Admission;

    #[test]
    fn a_slot_closes_with_its_peak_and_the_history_is_bounded() {
        let history = History::default();
        let concurrency = Concurrency::default();
        let f: Arc<str> = Arc::from("f");
        let t0 = Instant::now();
        history.tick(t0, &concurrency, [&f].into_iter());
        let a = concurrency.admit(&Admission::default(), &f).unwrap();
        let b = concurrency.admit(&Admission::default(), &f).unwrap();
        drop((a, b));
        // Not over yet: nothing closes.
        history.tick(t0 + SLOT / 2, &concurrency, [&f].into_iter());
        assert_eq!(history.of("f", concurrency.peak("f")), vec![2]);
        history.tick(t0 + SLOT, &concurrency, [&f].into_iter());
        assert_eq!(history.of("f", concurrency.peak("f")), vec![2, 0]);
        for i in 2..200 {
            history.tick(t0 + SLOT * i, &concurrency, [&f].into_iter());
        }
        assert_eq!(history.of("f", 0).len(), SLOTS);
    }
}
