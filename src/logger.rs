//! The [`log::Log`] implementation: filter, guard against re-entry, render, dispatch.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::fallback::{self, RateLimit};
use crate::render::{render, render_capped};
use crate::scope;
use crate::sink::Sink;
use crate::stats::{Counters, Outcome, Stats};

/// Crates whose records describe pglog's own database traffic. Storing them would need
/// the very connection they are about, so they never reach the table (see [`Logger`]).
const DRIVER_TARGETS: [&str; 2] = ["tokio_postgres", "postgres"];

thread_local! {
    /// Set while this thread is inside a sink, so records emitted meanwhile (by the
    /// driver, or by a `Display` impl that logs) cannot recurse into the writer.
    static WRITING: Cell<bool> = const { Cell::new(false) };
}

/// State shared by the logger and its guard.
pub(crate) struct Core {
    pub sink: Sink,
    pub panic_notice: RateLimit,
    /// Events at or above this level are also written to stderr.
    pub echo: LevelFilter,
    /// The message and each key-value are kept up to this many bytes.
    pub max_event_bytes: usize,
    /// Said once: records logged while pglog writes, below `warn`, are dropped.
    pub recursion_notice: RateLimit,
}

impl Core {
    pub fn stats(&self) -> Stats {
        self.sink.stats()
    }
}

/// A logger that writes each record as a row of a PostgreSQL table.
///
/// Made by [`Builder::build`](crate::Builder::build) to compose with other loggers, or
/// installed globally by [`Builder::try_init`](crate::Builder::try_init).
///
/// Records from the database driver (targets `postgres`, `tokio_postgres` and their
/// modules), and records emitted on a thread while pglog is writing on it, are never
/// written to the table: at `warn` and above they go to stderr, below that they are
/// dropped (and counted in [`Stats::dropped`]). This keeps the logger from recursing into itself or deadlocking
/// when every target is enabled at `trace`.
pub struct Logger {
    filter: env_filter::Filter,
    core: Arc<Core>,
}

impl Logger {
    pub(crate) fn new(filter: env_filter::Filter, core: Arc<Core>) -> Logger {
        Logger { filter, core }
    }

    /// The most verbose level any record can pass at; give it to
    /// [`log::set_max_level`] when installing this logger yourself.
    pub fn filter(&self) -> LevelFilter {
        self.filter.filter()
    }

    /// Where events went so far; see [`Guard::stats`](crate::Guard::stats).
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    fn side_channel(&self, record: &Record<'_>, now: DateTime<Utc>, recursive: bool) {
        if record.level() <= Level::Warn {
            self.counters()
                .settle_one(&render(record, now), Outcome::NotStored);
            return;
        }
        self.counters().add_dropped();
        // The driver's own records are dropped by design (see the type's docs); a
        // program's records logged while pglog writes deserve a word.
        if recursive {
            self.core.recursion_notice.notice(|| {
                "records below warn logged while pglog is writing another (from a Display \
                 impl, say) are dropped: they would recurse into the writer (counted in the \
                 guard's stats as dropped)"
                    .to_owned()
            });
        }
    }
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

fn is_driver(target: &str) -> bool {
    DRIVER_TARGETS.iter().any(|krate| {
        target
            .strip_prefix(krate)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Marks this thread as writing until dropped, also when unwinding. A thread-local read
/// during the thread's teardown (a log call from another thread-local's destructor)
/// may be gone: `try_with`, never `with`, which would panic and abort the process.
struct Writing;

impl Writing {
    fn enter() -> Writing {
        let _ = WRITING.try_with(|w| w.set(true));
        Writing
    }

    fn active() -> bool {
        WRITING.try_with(Cell::get).unwrap_or(false)
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        let _ = WRITING.try_with(|w| w.set(false));
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        self.counters().add_logged();
        let now = Utc::now();
        // The last resort: nothing below may unwind out of a log call (an unwinding
        // panic in a thread-local's destructor aborts the process). Every path below
        // counts its event where it settles it; one that panics before is counted here.
        let settled = catch_unwind(AssertUnwindSafe(|| self.log_inner(record, now)));
        if settled.is_err() {
            self.core.panic_notice.notice(|| {
                "logging an event panicked inside pglog; it was written to stderr as far as it could be".to_owned()
            });
            let placeholder = Record::builder()
                .args(format_args!("<event lost to a panic inside pglog>"))
                .level(record.level())
                .target(record.target())
                .build();
            let _ = catch_unwind(AssertUnwindSafe(|| {
                self.counters()
                    .settle_one(&render(&placeholder, now), Outcome::NotStored)
            }));
        }
    }

    fn flush(&self) {
        self.core.sink.flush();
    }
}

impl Logger {
    fn counters(&self) -> &Counters {
        self.core.sink.counters()
    }

    fn log_inner(&self, record: &Record<'_>, now: DateTime<Utc>) {
        if is_driver(record.target()) {
            self.side_channel(record, now, false);
            return;
        }
        if Writing::active() {
            self.side_channel(record, now, true);
            return;
        }
        let _writing = Writing::enter();
        // Formatting runs user code (Display impls) that may panic; a log call must not.
        let max_bytes = self.core.max_event_bytes;
        let mut row = match catch_unwind(AssertUnwindSafe(|| render_capped(record, now, max_bytes)))
        {
            Ok(row) => row,
            Err(_) => {
                self.core.panic_notice.notice(|| {
                    format!(
                        "a value logged at {}:{} panicked while being formatted; the event was written to stderr without it",
                        record.file().unwrap_or("?"),
                        record.line().unwrap_or(0)
                    )
                });
                let placeholder = Record::builder()
                    .args(format_args!(
                        "<message not formatted: a logged value panicked>"
                    ))
                    .level(record.level())
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build();
                self.counters()
                    .settle_one(&render(&placeholder, now), Outcome::NotStored);
                return;
            }
        };
        if row.scope.is_none() {
            row.scope = scope::current();
        }
        if row.level <= self.core.echo {
            fallback::event(&row);
            row.echoed = true;
        }
        self.core.sink.write(row);
    }
}

#[cfg(test)]
mod tests {
    use super::is_driver;

    #[test]
    fn driver_targets_match_crates_and_their_modules_only() {
        assert!(is_driver("postgres"));
        assert!(is_driver("tokio_postgres::prepare"));
        assert!(!is_driver("postgres_tool"));
        assert!(!is_driver("app::postgres"));
    }
}
