//! Counters of where events went, and the snapshot users read from the guard.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where events went since the logger was built, and the database's state now.
///
/// Every event that passed the level filter is counted exactly once in `written`,
/// `fallback` or `dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Events committed to the table.
    pub written: u64,
    /// Events written to stderr because the table could not take them.
    pub fallback: u64,
    /// Events discarded under a policy the user chose.
    pub dropped: u64,
    /// Failed attempts to (re)connect to the database.
    pub retries: u64,
    /// Events waiting to be written (always 0 in blocking mode).
    pub queue_depth: usize,
    /// Whether the last attempt to use the database succeeded.
    pub database_reachable: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub written: AtomicU64,
    pub fallback: AtomicU64,
    pub dropped: AtomicU64,
    pub retries: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self, queue_depth: usize, database_reachable: bool) -> Stats {
        Stats {
            written: self.written.load(Ordering::Relaxed),
            fallback: self.fallback.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            queue_depth,
            database_reachable,
        }
    }
}
