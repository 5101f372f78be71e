//! The default sink: one INSERT per event, on the caller's thread, on a pooled session.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::database::Database;
use crate::fallback::{RateLimit, NOTICE_INTERVAL};
use crate::render::Row;
use crate::stats::Outcome;

pub(crate) struct Blocking {
    db: Database,
    panic_notice: RateLimit,
}

impl Blocking {
    pub fn new(db: Database) -> Blocking {
        Blocking {
            db,
            panic_notice: RateLimit::new(NOTICE_INTERVAL),
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Writes `row`; never panics.
    pub fn write(&self, row: &Row) -> Outcome {
        if needs_own_thread() {
            // A session drives its connection on a runtime of its own, which cannot run
            // inside another one, nor on a thread whose thread-locals are being destroyed
            // (a log call from a thread-local's destructor); a plain thread is fine. Costs
            // a thread spawn per event: async programs are better served by batch mode.
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("pglog-offload".to_owned())
                    .spawn_scoped(s, || self.try_write(row))
                    .map(|handle| handle.join().unwrap_or(Outcome::NotStored))
                    .unwrap_or(Outcome::NotStored)
            })
        } else {
            self.try_write(row)
        }
    }

    /// The driver runs on this thread: should it panic, the event still lands somewhere
    /// and the caller carries on.
    fn try_write(&self, row: &Row) -> Outcome {
        catch_unwind(AssertUnwindSafe(|| self.db.insert(row))).unwrap_or_else(|_| {
            self.panic_notice.notice(|| {
                "the database writer panicked; the event was written to stderr".to_owned()
            });
            Outcome::NotStored
        })
    }
}

/// Whether a session cannot be driven on this thread: it runs an async runtime, or its
/// thread-locals (tokio's among them) are being destroyed.
pub(crate) fn needs_own_thread() -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => true,
        Err(e) => e.is_thread_local_destroyed(),
    }
}
