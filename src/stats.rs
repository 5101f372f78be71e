//! Counters of where events went, and the snapshot users read from the guard.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where events went since the logger was built, and the database's state now.
///
/// Every event that passed the level filter is counted in `logged`, and, once it has
/// left the queue, in exactly one of `written`, `fallback`, `dropped` and `uncertain`:
/// after [`Guard::flush`](crate::Guard::flush) (or in blocking mode, always),
/// `logged == written + fallback + dropped + uncertain + queue_depth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Events that passed the level filter.
    pub logged: u64,
    /// Events committed to the table.
    pub written: u64,
    /// Events written to stderr because the table could not take them.
    pub fallback: u64,
    /// Events discarded: under the overflow policy [`Overflow::Drop`](crate::Overflow::Drop),
    /// and records of the database driver (or logged while pglog writes) below `warn`.
    pub dropped: u64,
    /// Events whose write was sent but never answered (the server froze or the
    /// connection broke mid-statement): they went to stderr too, and may also be in the
    /// table. A duplicate beats a loss.
    pub uncertain: u64,
    /// Failed attempts to (re)connect to the database, and batches tried again.
    pub retries: u64,
    /// Events waiting to be written: queued, or in the batch being written (always 0 in
    /// blocking mode).
    pub queue_depth: usize,
    /// Whether the last attempt to use the database succeeded.
    pub database_reachable: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Incremented by every log call: on a cache line of its own, apart from the counters
    /// the batch writer updates from another core.
    pub logged: Padded,
    pub written: AtomicU64,
    pub fallback: AtomicU64,
    pub dropped: AtomicU64,
    pub uncertain: AtomicU64,
    pub retries: AtomicU64,
}

/// An `AtomicU64` alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Padded(pub AtomicU64);

impl std::ops::Deref for Padded {
    type Target = AtomicU64;
    fn deref(&self) -> &AtomicU64 {
        &self.0
    }
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self, queue_depth: usize, database_reachable: bool) -> Stats {
        Stats {
            logged: self.logged.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            fallback: self.fallback.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            uncertain: self.uncertain.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            queue_depth,
            database_reachable,
        }
    }
}
