//! Where rendered events go. A sink owns all I/O; the logger only filters, renders and
//! dispatches.

mod batch;
mod blocking;
mod connect;
mod copy;
mod database;
mod health;
mod pool;
mod queue;
mod session;
mod trouble;

pub(crate) use batch::BatchSettings;
pub use batch::Overflow;
pub(crate) use connect::{Endpoint, NoticeHandler};
pub(crate) use pool::PoolSettings;
pub(crate) use session::{SessionConfig, SessionSettings};

use batch::Batch;
use blocking::Blocking;
use database::Database;

use crate::fallback;
use crate::render::Row;
use crate::stats::Counters;

pub(crate) enum Sink {
    /// One INSERT per event on the caller's thread.
    Blocking(Blocking),
    /// A bounded queue and a writer thread.
    Batch(Batch),
    /// PostgreSQL turned off (stogger's `enable_postgres = false`) or unusable by
    /// configuration: every event goes to stderr.
    Stderr,
}

impl Sink {
    /// A sink writing to the database: blocking, or batch mode with `batch` settings.
    /// Waits at most the connect timeout for a first session (see [`Database::start`]).
    pub fn database(
        session: SessionConfig,
        pool: PoolSettings,
        pool_wait: std::time::Duration,
        batch: Option<BatchSettings>,
        counters: &std::sync::Arc<Counters>,
    ) -> Sink {
        let db = Database::start(session, pool, pool_wait, counters);
        match batch {
            Some(settings) => Sink::Batch(Batch::start(db, settings, counters)),
            None => Sink::Blocking(Blocking::new(db)),
        }
    }

    /// The reason the database is unusable right now, if it is.
    pub fn startup_error(&self) -> Option<String> {
        self.db().and_then(Database::startup_error)
    }

    fn db(&self) -> Option<&Database> {
        match self {
            Sink::Blocking(sink) => Some(sink.database()),
            Sink::Batch(sink) => Some(sink.database()),
            Sink::Stderr => None,
        }
    }

    #[inline]
    pub fn write(&self, row: Row, counters: &Counters) {
        match self {
            Sink::Blocking(sink) => sink.write(&row, counters),
            Sink::Batch(sink) => sink.enqueue(row),
            Sink::Stderr => fallback::divert(&row, counters),
        }
    }

    /// Returns when every event handed to the sink so far is committed or on stderr
    /// (in batch mode: or after the flush timeout).
    pub fn flush(&self) {
        match self {
            Sink::Batch(sink) => sink.flush(),
            // Each write commits or falls back before it returns: nothing is pending.
            Sink::Blocking(..) | Sink::Stderr => {}
        }
    }

    /// Flushes and stops background work, and ends idle sessions cleanly; events logged
    /// later go to stderr (batch) or are written as before (blocking).
    pub fn close(&self) {
        match self {
            Sink::Batch(sink) => {
                sink.close();
                sink.database().close_idle();
            }
            Sink::Blocking(sink) => sink.database().close_idle(),
            Sink::Stderr => {}
        }
    }

    pub fn queue_depth(&self) -> usize {
        match self {
            Sink::Batch(sink) => sink.queue_depth(),
            Sink::Blocking(..) | Sink::Stderr => 0,
        }
    }

    pub fn database_reachable(&self) -> bool {
        self.db().is_some_and(Database::reachable)
    }
}
