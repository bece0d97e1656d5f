//! Per-thread shards for what every call adds to (usage, counters, histograms).
//!
//! A count that every call updates in one place passes its cache line from core to core on
//! every call, whichever lock or atomic guards it. Sharded, each worker thread adds to its
//! own shard, and readers (a scrape, the usage flush) add the shards up.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Shards of a sharded count: more than the cores of a usual host, so that its threads
/// seldom share one.
pub(crate) const SHARDS: usize = 16;

/// One shard's value, on cache lines of its own.
#[derive(Default, Debug)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

/// This thread's shard: threads take the next one in turn the first time they ask.
pub(crate) fn index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}
