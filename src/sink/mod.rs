//! Where rendered events go. A sink owns all I/O; the logger only filters, renders and
//! dispatches.

mod batch;
mod blocking;
mod connect;
mod copy;
mod database;
mod health;
pub(crate) mod maintenance;
mod pool;
mod queue;
pub(crate) mod session;
#[cfg(test)]
mod testing;
pub(crate) mod trouble;

pub(crate) use batch::BatchSettings;
pub use batch::Overflow;
pub(crate) use connect::{Endpoint, NoticeHandler};
pub(crate) use pool::PoolSettings;
pub(crate) use session::{SessionConfig, SessionSettings};

use batch::Batch;
use blocking::Blocking;
use database::Database;
use maintenance::{Keeper, Maintenance, Pass, Timing};

use std::sync::Arc;
use std::time::Duration;

use crate::render::Row;
use crate::schema::Partition;
use crate::stats::{Counters, Outcome, Stats};

/// Where a logger's events go, and the count of where they went: the sink makes the
/// [`Counters`] and hands them to the parts that settle events (the batch writer, the
/// pool's connector); nothing else counts an event as written, on stderr or uncertain.
pub(crate) struct Sink {
    counters: Arc<Counters>,
    route: Route,
    /// The table's maintenance thread, when partitions or retention ask for one.
    maintenance: Option<Maintenance<Keeper>>,
}

enum Route {
    /// One INSERT per event on the caller's thread.
    Blocking(Blocking),
    /// A bounded queue and a writer thread.
    Batch(Batch),
    /// PostgreSQL turned off (stogger's `enable_postgres = false`) or unusable by
    /// configuration: every event goes to stderr.
    Stderr,
}

impl Sink {
    /// A sink writing every event to stderr.
    pub fn stderr() -> Sink {
        Sink {
            counters: Arc::default(),
            route: Route::Stderr,
            maintenance: None,
        }
    }

    /// A sink writing to the database: blocking, or batch mode with `batch` settings.
    /// Waits at most the connect timeout for a first session (see [`Database::start`]).
    /// With partitions or `retention_days`, starts the table's maintenance thread.
    pub fn database(
        session: SessionConfig,
        pool: PoolSettings,
        pool_wait: Duration,
        batch: Option<BatchSettings>,
        retention_days: Option<u32>,
    ) -> Sink {
        let counters = Arc::<Counters>::default();
        let db = Database::start(session, pool, pool_wait, &counters);
        let config = Arc::clone(db.config());
        let maintenance =
            (config.partition != Partition::None || retention_days.is_some()).then(|| {
                Maintenance::start(
                    Keeper::new(config, retention_days),
                    Timing {
                        every: maintenance::EVERY,
                        retry: maintenance::RETRY,
                    },
                )
            });
        let route = match batch {
            Some(settings) => Route::Batch(Batch::start(db, settings, &counters)),
            None => Route::Blocking(Blocking::new(db)),
        };
        Sink {
            counters,
            route,
            maintenance,
        }
    }

    /// Runs a maintenance pass now and waits for it to end; `Err` says why it did not
    /// complete (no maintenance asked for, another process's turn, a failure).
    pub fn maintain_now(&self) -> Result<(), String> {
        let maintenance = self
            .maintenance
            .as_ref()
            .ok_or("no maintenance: neither partition nor retention_days is set")?;
        match maintenance.run_now(maintenance::LONGEST_PASS) {
            Some(Pass::Done) => Ok(()),
            Some(Pass::Failed { why, .. }) => Err(why),
            Some(other) => Err(format!("{other:?}")),
            None => Err("no pass ended in time (or this is a forked child)".to_owned()),
        }
    }

    /// The counts of where events went, for the parts of the logger that settle events
    /// before they reach the sink (the recursion guard, the panic guard).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn stats(&self) -> Stats {
        self.counters
            .snapshot(self.queue_depth(), self.database_reachable())
    }

    /// The reason the database is unusable right now, if it is.
    pub fn startup_error(&self) -> Option<String> {
        self.db().and_then(Database::startup_error)
    }

    fn db(&self) -> Option<&Database> {
        match &self.route {
            Route::Blocking(sink) => Some(sink.database()),
            Route::Batch(sink) => Some(sink.database()),
            Route::Stderr => None,
        }
    }

    /// Stores `row`, else writes it to stderr; counted either way (in batch mode, once
    /// the writer has settled it).
    #[inline]
    pub fn write(&self, row: Row) {
        match &self.route {
            Route::Blocking(sink) => self.counters.settle_one(&row, sink.write(&row)),
            Route::Batch(sink) => sink.enqueue(row),
            Route::Stderr => self.counters.settle_one(&row, Outcome::NotStored),
        }
    }

    /// Returns when every event handed to the sink so far is committed or on stderr
    /// (in batch mode: or after the flush timeout).
    pub fn flush(&self) {
        match &self.route {
            Route::Batch(sink) => sink.flush(),
            // Each write commits or falls back before it returns: nothing is pending.
            Route::Blocking(..) | Route::Stderr => {}
        }
    }

    /// Flushes and stops background work, and ends idle sessions cleanly; events logged
    /// later go to stderr (batch) or are written as before (blocking).
    pub fn close(&self) {
        match &self.route {
            Route::Batch(sink) => {
                sink.close();
                sink.database().close_idle();
            }
            Route::Blocking(sink) => sink.database().close_idle(),
            Route::Stderr => {}
        }
        if let Some(maintenance) = &self.maintenance {
            maintenance.stop();
        }
    }

    fn queue_depth(&self) -> usize {
        match &self.route {
            Route::Batch(sink) => sink.queue_depth(),
            Route::Blocking(..) | Route::Stderr => 0,
        }
    }

    fn database_reachable(&self) -> bool {
        self.db().is_some_and(Database::reachable)
    }
}
