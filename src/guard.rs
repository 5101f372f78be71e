//! The guard a program keeps for as long as it logs.

use std::sync::Arc;

use crate::logger::Core;
use crate::stats::Stats;

/// Keeps pglog's pending work alive; dropping it flushes (and in batch mode stops the
/// writer thread: events logged after that go to stderr).
///
/// [`log::set_boxed_logger`] leaks the logger, so nothing would flush at exit without
/// this guard: keep it in `main` until the program ends.
///
/// # Examples
///
/// ```no_run
/// let guard = pglog::Builder::new().dsn("host=/var/run/postgresql dbname=ops").try_init()?;
/// log::info!(job = "nightly"; "started");
/// println!("{} events stored", guard.stats().written);
/// # Ok::<(), pglog::Error>(())
/// ```
#[must_use = "dropping the guard at once flushes and stops pglog's background work; keep it until the program ends"]
pub struct Guard {
    core: Arc<Core>,
}

impl Guard {
    pub(crate) fn new(core: Arc<Core>) -> Guard {
        Guard { core }
    }

    /// Returns when every event logged before the call is in the table or on stderr.
    pub fn flush(&self) {
        self.core.sink.flush();
    }

    /// Where events went so far, and whether the database is reachable now.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// Not part of the API: runs a table maintenance pass (partitions, retention) now
    /// and returns once it ended, for tests that cannot wait an hour for the next.
    /// `Err` says why the pass did not complete.
    #[doc(hidden)]
    pub fn __maintain_now(&self) -> Result<(), String> {
        self.core.sink.maintain_now()
    }
}

impl Drop for Guard {
    /// Flushes, and in batch mode stops the writer: waits at most the flush timeout,
    /// then sends whatever is still queued to stderr. Never silently away. A table
    /// maintenance pass under way (partitions, retention) is given at most 250 ms more
    /// to end its step; its transaction is undone if the program exits first.
    fn drop(&mut self) {
        self.core.sink.close();
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("stats", &self.stats())
            .finish()
    }
}
