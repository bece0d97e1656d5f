//! Usage as it happens, per function version and day, held in memory until the control
//! plane moves it to the store ([`crate::Dispatcher::take_usage`]): the invoke path adds
//! to a map under a short lock and never writes to disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;

use ember_core::usage::{DayUsage, Usage};

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

#[derive(Default)]
pub(crate) struct Meter {
    pending: Mutex<HashMap<Key, Pending>>,
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
        self.pending
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

    /// Takes everything added since the last call.
    pub fn take(&self) -> Vec<DayUsage> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("usage lock"));
        pending
            .into_iter()
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
}
