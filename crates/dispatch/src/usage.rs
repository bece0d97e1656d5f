//! Usage as it happens, per function version and day, held in memory until the control
//! plane moves it to the store ([`crate::Dispatcher::take_usage`]): the invoke path adds
//! to a map under a short lock and never writes to disk.
//!
//! The maps are sharded by thread ([`crate::shard`]): a worker adds to its own, so the
//! cores do not pass one lock and one entry back and forth on every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;

use ember_core::usage::{DayUsage, Usage};

use crate::shard::{Padded, SHARDS};

/// The function's and the version's names, by the address of their shared text, and the
/// UTC day (days since the epoch). A call finds its entry without touching the names'
/// reference counts, which every worker shares. An entry holds its names, so neither
/// address is reused while it is in the map; two copies of one name make two entries, which
/// the store adds up like any others.
type Key = (usize, usize, u64);

/// What a function version used on a day, so far.
struct Pending {
    function: Arc<str>,
    version: Arc<str>,
    usage: Usage,
}

pub(crate) struct Meter {
    shards: [Padded<Mutex<HashMap<Key, Pending>>>; SHARDS],
}

impl Default for Meter {
    fn default() -> Meter {
        Meter {
            shards: std::array::from_fn(|_| Padded::default()),
        }
    }
}

impl Meter {
    /// Adds `usage` to the function version's total for today.
    pub fn add(&self, function: &Arc<str>, version: &Arc<str>, usage: &Usage) {
        let day = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            / DAY;
        let key = (
            Arc::as_ptr(function).cast::<u8>() as usize,
            Arc::as_ptr(version).cast::<u8>() as usize,
            day,
        );
        self.shards[crate::shard::index()]
            .0
            .lock()
            .expect("usage lock")
            .entry(key)
            .or_insert_with(|| Pending {
                function: Arc::clone(function),
                version: Arc::clone(version),
                usage: Usage::default(),
            })
            .usage
            .add(usage);
    }

    /// Takes everything added since the last call: a row per shard that has one for a
    /// function version and day, which the store adds up.
    pub fn take(&self) -> Vec<DayUsage> {
        self.shards
            .iter()
            .flat_map(|shard| std::mem::take(&mut *shard.0.lock().expect("usage lock")))
            .map(|((_, _, day), pending)| DayUsage {
                function: pending.function.to_string(),
                version: pending.version.to_string(),
                day: ember_core::time::utc_day(UNIX_EPOCH + Duration::from_secs(day * DAY)),
                usage: pending.usage,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_on_one_version_add_up_and_versions_stay_apart() {
        let meter = Meter::default();
        let (f, v1, v2): (Arc<str>, Arc<str>, Arc<str>) = ("f".into(), "1".into(), "2".into());
        meter.add(&f, &v1, &Usage::invocation(3, 1024, false));
        meter.add(&f, &v1, &Usage::invocation(5, 1024, false));
        meter.add(&f, &v2, &Usage::invocation(7, 1024, false));
        let mut taken = meter.take();
        taken.sort_by(|a, b| a.version.cmp(&b.version));
        let totals: Vec<_> = taken
            .iter()
            .map(|d| {
                (
                    d.function.as_str(),
                    d.version.as_str(),
                    d.usage.requests,
                    d.usage.billed_ms,
                )
            })
            .collect();
        assert_eq!(totals, [("f", "1", 2, 8), ("f", "2", 1, 7)]);
        assert!(meter.take().is_empty(), "taken once");
    }

    #[test]
    fn what_every_thread_added_is_taken() {
        let meter = Meter::default();
        let (f, v): (Arc<str>, Arc<str>) = ("f".into(), "1".into());
        std::thread::scope(|scope| {
            for _ in 0..SHARDS + 3 {
                scope.spawn(|| {
                    for _ in 0..10 {
                        meter.add(&f, &v, &Usage::invocation(2, 1024, false));
                    }
                });
            }
        });
        let taken = meter.take();
        let requests: u64 = taken.iter().map(|d| d.usage.requests).sum();
        let billed: u64 = taken.iter().map(|d| d.usage.billed_ms).sum();
        assert_eq!(
            (requests, billed),
            (10 * (SHARDS as u64 + 3), 20 * (SHARDS as u64 + 3))
        );
        assert!(taken.len() <= SHARDS, "at most a row per shard");
        assert!(meter.take().is_empty(), "taken once");
    }
}
