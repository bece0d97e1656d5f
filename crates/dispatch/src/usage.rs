//! Usage as it happens, per function version and day, held in memory until the control
//! plane moves it to the store ([`crate::Dispatcher::take_usage`]): the invoke path adds
//! to a map under a short lock and never writes to disk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;

use ember_core::usage::{DayUsage, Usage};

/// (function, version, UTC day as days since the epoch).
type Key = (Arc<str>, Arc<str>, u64);

#[derive(Default)]
pub(crate) struct Meter {
    pending: Mutex<HashMap<Key, Usage>>,
}

impl Meter {
    /// Adds `usage` to the function version's total for today.
    pub fn add(&self, function: &Arc<str>, version: &Arc<str>, usage: &Usage) {
        let day = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            / DAY;
        self.pending
            .lock()
            .expect("usage lock")
            .entry((Arc::clone(function), Arc::clone(version), day))
            .or_default()
            .add(usage);
    }

    /// Takes everything added since the last call.
    pub fn take(&self) -> Vec<DayUsage> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("usage lock"));
        pending
            .into_iter()
            .map(|((function, version, day), usage)| DayUsage {
                function: function.to_string(),
                version: version.to_string(),
                day: ember_core::time::utc_day(UNIX_EPOCH + Duration::from_secs(day * DAY)),
                usage,
            })
            .collect()
    }
}
