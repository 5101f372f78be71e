//! Where rendered events go. A sink owns all I/O; the logger only filters, renders and
//! dispatches.

mod blocking;
mod session;

pub(crate) use blocking::{Blocking, PoolSettings};
pub(crate) use session::SessionConfig;

use crate::fallback;
use crate::render::Row;
use crate::stats::Counters;

pub(crate) enum Sink {
    /// One INSERT per event on the caller's thread.
    Blocking(Blocking),
    /// PostgreSQL turned off (stogger's `enable_postgres = false`): every event goes to
    /// stderr.
    #[allow(dead_code)] // constructed by the configuration layer
    Stderr,
}

impl Sink {
    pub fn write(&self, row: &Row, counters: &Counters) {
        match self {
            Sink::Blocking(sink) => sink.write(row, counters),
            Sink::Stderr => {
                Counters::add(&counters.fallback, 1);
                fallback::event(row);
            }
        }
    }

    /// Returns when every event handed to the sink so far is committed or on stderr.
    pub fn flush(&self) {
        match self {
            // Each write commits or falls back before it returns: nothing is pending.
            Sink::Blocking(_) | Sink::Stderr => {}
        }
    }

    pub fn queue_depth(&self) -> usize {
        0
    }

    pub fn database_reachable(&self) -> bool {
        match self {
            Sink::Blocking(sink) => sink.database_reachable(),
            Sink::Stderr => false,
        }
    }
}
