//! Where events went: the counters, the one place that settles an event (counts it and,
//! unless it was stored, writes it to stderr), and the snapshot users read from the guard.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::fallback;
use crate::render::Row;

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
    /// Attempts to connect that failed (pglog reconnects in the background while the
    /// database is away), plus, in batch mode, batches written again after a failure
    /// that left them unwritten.
    pub retries: u64,
    /// Events waiting to be written: queued, or in the batch being written (always 0 in
    /// blocking mode).
    pub queue_depth: usize,
    /// Whether the last attempt to use the database succeeded.
    pub database_reachable: bool,
}

/// What became of one event's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Stored,
    NotStored,
    /// Sent and never answered: maybe stored.
    Uncertain,
}

/// The counts behind [`Stats`]. Made once per logger by its sink, which hands it to the
/// parts that settle events; only [`Counters::settle`] counts an event as written, on
/// stderr or uncertain.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Incremented by every log call: on a cache line of its own, apart from the counters
    /// the batch writer updates from another core.
    logged: Padded,
    written: AtomicU64,
    fallback: AtomicU64,
    dropped: AtomicU64,
    uncertain: AtomicU64,
    retries: AtomicU64,
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
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `rows` as `outcome`; those not stored go to stderr (the uncertain ones
    /// marked so). Every event that leaves pglog, other than a counted drop, passes here.
    pub fn settle(&self, rows: &[Row], outcome: Outcome) {
        match outcome {
            Outcome::Stored => Counters::add(&self.written, rows.len() as u64),
            Outcome::NotStored => {
                for row in rows {
                    Counters::add(&self.fallback, 1);
                    fallback::event(row);
                }
            }
            Outcome::Uncertain => {
                for row in rows {
                    Counters::add(&self.uncertain, 1);
                    fallback::uncertain_event(row);
                }
            }
        }
    }

    /// [`Counters::settle`] of one event.
    pub fn settle_one(&self, row: &Row, outcome: Outcome) {
        self.settle(std::slice::from_ref(row), outcome);
    }

    /// One event that passed the level filter.
    #[inline]
    pub fn add_logged(&self) {
        Counters::add(&self.logged, 1);
    }

    /// One event discarded, under a policy that says so.
    pub fn add_dropped(&self) {
        Counters::add(&self.dropped, 1);
    }

    /// One failed connect, or one batch tried again.
    pub fn add_retry(&self) {
        Counters::add(&self.retries, 1);
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
