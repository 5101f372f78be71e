//! Everything pglog writes to stderr: events it could not store, and its own notices.
//!
//! [`write_line`] is the only place that touches stderr. It never panics, not even when
//! stderr is closed, and writes each line with one call so that lines from several
//! threads do not interleave.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::render::Row;
use crate::stats::Counters;

/// Writes an event that could not be stored, as one readable line:
/// `<UTC time> <LEVEL> <target>: <message> <key-values as JSON>`.
///
/// The JSON carries `func`, `scope` and every `data` key, so that the line holds all a
/// row would have held.
///
/// An event the console echo printed already is not printed again.
pub(crate) fn event(row: &Row) {
    if !row.echoed {
        write_line(&format_event(row));
    }
}

pub(crate) fn format_event(row: &Row) -> String {
    let mut fields = row.data();
    let target = ["target", "code_module"]
        .iter()
        .find_map(|k| fields.get(*k).and_then(|v| v.as_str()))
        .unwrap_or("-")
        .to_owned();
    if let Some(func) = &row.func {
        fields.insert("func".to_owned(), func.as_str().into());
    }
    if let Some(scope) = &row.scope {
        fields.insert("scope".to_owned(), scope.as_str().into());
    }
    let mut line = String::with_capacity(row.event.len() + 128);
    let _ = write!(
        line,
        "{} {:<7} {target}: {} {}",
        row.timestamp.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
        row.level_word().to_uppercase(),
        row.event,
        serde_json::Value::Object(fields)
    );
    line
}

/// Sends an event that will not be stored to stderr, counting it: every path that gives
/// up on the table ends here.
pub(crate) fn divert(row: &Row, counters: &Counters) {
    Counters::add(&counters.fallback, 1);
    event(row);
}

/// Like [`divert`], for an event whose write was sent and never answered: it may be in
/// the table as well. Its line says so (`"pglog_outcome":"unknown"`), so that a reader
/// (or a replay) can tell.
pub(crate) fn divert_uncertain(row: &Row, counters: &Counters) {
    Counters::add(&counters.uncertain, 1);
    let mut line = format_event(row);
    if line.ends_with('}') {
        line.pop();
        line.push_str(if line.ends_with('{') { "" } else { "," });
        line.push_str("\"pglog_outcome\":\"unknown\"}");
    }
    // Printed even when echoed: the echo did not say the write was in doubt.
    write_line(&line);
}

/// Writes one of pglog's own notices: `pglog: <message>`.
pub(crate) fn notice(message: &str) {
    write_line(&format!("pglog: {message}"));
}

/// Lets through one notice per interval, so that a dead database cannot print a notice
/// per event. The first call always passes.
#[derive(Debug)]
pub(crate) struct RateLimit {
    interval: Duration,
    /// Milliseconds since [`epoch`] of the last notice that passed, plus one (0: never).
    last: AtomicU64,
}

impl RateLimit {
    pub const fn new(interval: Duration) -> RateLimit {
        RateLimit {
            interval,
            last: AtomicU64::new(0),
        }
    }

    /// Writes `message()` as a notice unless one passed less than an interval ago.
    pub fn notice(&self, message: impl FnOnce() -> String) {
        if self.allow() {
            notice(&message());
        }
    }

    /// Whether a notice may pass now (and counts it as passed).
    pub fn allow(&self) -> bool {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let interval = self.interval.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < interval {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The one function that writes to stderr.
///
/// Not through `std::io::stderr().lock()`: a thread that held that process-wide lock at
/// the instant of a `fork()` holds it forever in the child, and the child's next line
/// would hang. pglog writes each line with one write to a duplicate of descriptor 2, and
/// keeps lines from interleaving with its own lock, which a forked child recognises as its
/// parent's and leaves alone (see [`line_lock`]).
fn write_line(line: &str) {
    #[cfg(test)]
    if capture::write(line) {
        return;
    }
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let _turn = line_lock();
    // Nothing useful can be done if stderr is gone; the event was counted as sent here.
    let _ = write_stderr(&buf);
}

fn write_stderr(buf: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let fd = std::io::stderr().as_fd().try_clone_to_owned()?;
    std::fs::File::from(fd).write_all(buf)
}

/// One line at a time, within this process. The lock remembers which fork generation took
/// it: held by another generation means held by a thread that did not survive a `fork()`,
/// so the child writes without it rather than wait forever.
fn line_lock() -> Option<crate::sync::MutexGuard<'static, ()>> {
    use std::sync::atomic::AtomicU32;
    static LOCK: crate::sync::Mutex<()> = crate::sync::Mutex::new(());
    static HOLDER: AtomicU32 = AtomicU32::new(0);
    let me = crate::fork::generation();
    let guard = match LOCK.try_lock() {
        Some(guard) => guard,
        None if HOLDER.load(Ordering::Acquire) == me => LOCK.lock(),
        None => return None,
    };
    HOLDER.store(me, Ordering::Release);
    Some(guard)
}

/// Unit tests read what pglog would have written to stderr here, instead of cluttering
/// the test output with it.
#[cfg(test)]
pub(crate) mod capture {
    use crate::sync::Mutex;

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    pub(super) fn write(line: &str) -> bool {
        LINES.lock().push(line.to_owned());
        true
    }

    /// The lines written so far that contain `needle` (tests run in parallel: pick a
    /// needle of your own).
    pub fn lines_with(needle: &str) -> Vec<String> {
        LINES
            .lock()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::render;
    use chrono::TimeZone;
    use log::kv::ToValue;

    #[test]
    fn event_line_is_readable_and_complete() {
        let kvs = [("user_id", 42.to_value()), ("func", "login".to_value())];
        let record = log::Record::builder()
            .args(format_args!("user logged in"))
            .level(log::Level::Warn)
            .target("app::auth")
            .module_path_static(Some("app::auth"))
            .line(Some(3))
            .key_values(&kvs)
            .build();
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 21, 1, 2, 3).unwrap();
        let line = format_event(&render(&record, at));
        assert!(
            line.starts_with("2026-11-21T01:02:03.000000Z WARNING app::auth: user logged in {"),
            "{line}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&line[line.find('{').unwrap()..]).unwrap();
        assert_eq!(json["user_id"], 42);
        assert_eq!(json["func"], "login");
        assert_eq!(json["code_lineno"], 3);
    }

    #[test]
    fn rate_limit_lets_the_first_through_then_waits() {
        let limit = RateLimit::new(Duration::from_secs(3600));
        assert!(limit.allow());
        assert!(!limit.allow());
        let open = RateLimit::new(Duration::ZERO);
        assert!(open.allow());
        assert!(open.allow());
    }
}
