//! The default sink: one INSERT per event, on the caller's thread, on a pooled session.

use super::database::Database;
use crate::fallback;
use crate::render::Row;
use crate::stats::Counters;

pub(crate) struct Blocking {
    db: Database,
}

impl Blocking {
    pub fn new(db: Database) -> Blocking {
        Blocking { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn write(&self, row: &Row, counters: &Counters) {
        let stored = if on_runtime_thread() {
            // The sync client starts a runtime of its own, which panics inside another
            // one; a plain thread has none. Costs a thread spawn per event: async programs
            // are better served by batch mode.
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("pglog-offload".to_owned())
                    .spawn_scoped(s, || self.try_write(row))
                    .map(|handle| handle.join().unwrap_or(false))
                    .unwrap_or(false)
            })
        } else {
            self.try_write(row)
        };
        if stored {
            Counters::add(&counters.written, 1);
        } else {
            Counters::add(&counters.fallback, 1);
            fallback::event(row);
        }
    }

    /// `true` when the row is committed; otherwise the caller sends it to the fallback.
    fn try_write(&self, row: &Row) -> bool {
        self.db.insert(row)
    }
}

pub(crate) fn on_runtime_thread() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}
