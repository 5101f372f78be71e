//! Where rendered events go. A sink owns all I/O; the logger only filters, renders and
//! dispatches.

mod blocking;
mod session;

pub(crate) use blocking::{Blocking, PoolSettings};
pub(crate) use session::SessionConfig;

use crate::render::Row;
use crate::stats::Counters;

pub(crate) enum Sink {
    /// One INSERT per event on the caller's thread.
    Blocking(Blocking),
}

impl Sink {
    pub fn write(&self, row: &Row, counters: &Counters) {
        match self {
            Sink::Blocking(sink) => sink.write(row, counters),
        }
    }

    /// Returns when every event handed to the sink so far is committed or on stderr.
    pub fn flush(&self) {
        match self {
            // Each write commits before it returns: nothing is ever pending.
            Sink::Blocking(_) => {}
        }
    }

    pub fn queue_depth(&self) -> usize {
        0
    }

    pub fn database_reachable(&self) -> bool {
        match self {
            Sink::Blocking(sink) => sink.database_reachable(),
        }
    }
}
