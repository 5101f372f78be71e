//! Everything pglog writes to stderr: events it could not store, and its own notices.
//!
//! [`write_line`] is the only place that touches stderr. It never panics, not even when
//! stderr is closed, and writes each line with one call so that lines from several
//! threads do not interleave.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::render::Row;

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
    format_event_with(row, false)
}

/// The line of `row`; `unknown`: its write was sent and never answered.
fn format_event_with(row: &Row, unknown: bool) -> String {
    let mut json = Vec::with_capacity(256);
    row.write_line_fields(&mut json);
    if unknown {
        json.pop();
        json.extend_from_slice(b",\"pglog_outcome\":\"unknown\"}");
    }
    let time = row.timestamp.format(TIME_FORMAT).to_string();
    // An error's chain follows the message, so that a reader sees it at once (`pglog
    // replay` takes it off again: the traceback in the JSON holds it).
    let message = match row.chain_suffix() {
        Some(chain) => Cow::Owned(format!("{}{chain}", row.event)),
        None => Cow::Borrowed(row.event.as_str()),
    };
    LineParts::new(
        &time,
        row.level_word(),
        row.shown_target(),
        &message,
        &String::from_utf8_lossy(&json),
    )
    .join()
}

/// How a line writes the time: UTC, microseconds.
pub(crate) const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// The parts of an event's line, each escaped, in the order [`join`](LineParts::join)
/// writes them: `<time> <LEVEL> <target>: <message> <key-values as JSON>`. pglog's
/// stderr lines and the `pglog` command's `tail` share them, so that the two read alike
/// and `replay` reads both.
pub(crate) struct LineParts {
    pub time: String,
    /// Upper case, padded to 7 characters.
    pub level: String,
    pub target: String,
    pub message: String,
    pub json: String,
}

impl LineParts {
    pub fn new(time: &str, level: &str, target: &str, message: &str, json: &str) -> LineParts {
        let mut escaped_target = String::with_capacity(target.len());
        // A space in the target is escaped too, so that the first ": " ends it.
        for c in target.chars() {
            if c == ' ' {
                escaped_target.push_str("\\u{20}");
            } else {
                escape_char(&mut escaped_target, c);
            }
        }
        let mut escaped_message = String::with_capacity(message.len());
        escape_into(&mut escaped_message, message);
        let mut escaped_json = String::with_capacity(json.len());
        escape_json_into(&mut escaped_json, json);
        let mut level_upper = String::with_capacity(8);
        escape_into(&mut level_upper, &level.to_uppercase());
        LineParts {
            time: time.to_owned(),
            level: format!("{level_upper:<7}"),
            target: escaped_target,
            message: escaped_message,
            json: escaped_json,
        }
    }

    pub fn join(&self) -> String {
        let mut line = String::with_capacity(
            self.time.len() + self.target.len() + self.message.len() + self.json.len() + 16,
        );
        let _ = write!(
            line,
            "{} {} {}: {} {}",
            self.time, self.level, self.target, self.message, self.json
        );
        line
    }
}

/// One event line read back: what [`format_event`] wrote, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))] // read back by tests now, by `replay` later
pub(crate) struct Line {
    pub timestamp: String,
    pub level: String,
    pub target: String,
    pub message: String,
    /// The key-values, JSON text as written.
    pub json: String,
}

/// Reads an event line back; `None` for anything else (a notice, another program's line).
///
/// The key-values are the leftmost ` {` whose rest of the line is exactly one JSON
/// object: a message cannot fake that, since no prefix of a line can be completed into one
/// JSON value by the object that follows it.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn read_line(line: &str) -> Option<Line> {
    let (timestamp, rest) = line.split_once(' ')?;
    let (level, rest) = rest.split_once(' ')?;
    let rest = rest.trim_start_matches(' ');
    let (target, rest) = rest.split_once(": ")?;
    let at = rest.match_indices(" {").map(|(i, _)| i).find(|&i| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&rest[i + 1..]).is_ok()
    })?;
    Some(Line {
        timestamp: timestamp.to_owned(),
        level: level.to_owned(),
        target: unescape(target)?,
        message: unescape(&rest[..at])?,
        json: rest[at + 1..].to_owned(),
    })
}

/// Reads [`escape_into`]'s output back.
fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Whether a character must not reach a terminal or a log file as itself: controls (C0,
/// DEL, C1: newlines, escape sequences), and the Unicode separators and direction
/// overrides that can make one line look like two, or text read backwards.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Appends `text` with every unsafe character escaped, as journalctl does, so that one
/// event is one line and nothing in it drives the terminal: `\n`, `\r`, `\t`, `\u{..}`
/// for the others, and `\\` for a backslash so that the escaping reads back exactly.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        escape_char(out, c);
    }
}

fn escape_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if is_unsafe(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Appends JSON text with the unsafe characters JSON lets through raw (DEL, C1, the
/// separators and overrides) written as JSON escapes: still the same JSON.
fn escape_json_into(out: &mut String, json: &str) {
    for c in json.chars() {
        if is_unsafe(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
}

/// Like [`event`], for an event whose write was sent and never answered: it may be in
/// the table as well. Its line says so (`"pglog_outcome":"unknown"`), so that a reader
/// (or a replay) can tell.
pub(crate) fn uncertain_event(row: &Row) {
    // Printed even when echoed: the echo did not say the write was in doubt.
    write_line(&format_event_with(row, true));
}

/// Writes one of pglog's own notices: `pglog: <message>`, escaped as event lines are (a
/// notice quotes table names and server messages, which may hold anything).
pub(crate) fn notice(message: &str) {
    let mut line = String::with_capacity(message.len() + 8);
    line.push_str("pglog: ");
    escape_into(&mut line, message);
    write_line(&line);
}

/// How often the same kind of trouble may be reported on stderr.
pub(crate) const NOTICE_INTERVAL: Duration = Duration::from_secs(30);

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

    /// A notice said once in the process's life.
    pub const fn once() -> RateLimit {
        RateLimit::new(Duration::MAX)
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
/// In the process pglog was set up in, through std's stderr lock, as the program's own
/// `eprintln!` does, so that neither tears the other's lines. In a child forked from it,
/// that lock may be held forever by a parent thread that did not survive the `fork()`,
/// so there each line goes out with one write to a duplicate of descriptor 2, pglog's
/// own lines kept whole by a lock the child recognises as its parent's (see
/// [`line_lock`]).
fn write_line(line: &str) {
    #[cfg(test)]
    if capture::write(line) {
        return;
    }
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let home = HOME.load(Ordering::Acquire);
    // Nothing useful can be done if stderr is gone; the event was counted as sent here.
    if home == NO_HOME || home == crate::fork::generation() {
        let _ = std::io::stderr().lock().write_all(&buf);
    } else {
        let _turn = line_lock();
        let _ = write_stderr(&buf);
    }
}

/// The fork generation of the process pglog was set up in (see [`write_line`]).
static HOME: AtomicU32 = AtomicU32::new(NO_HOME);
const NO_HOME: u32 = u32::MAX;

/// Marks the calling process as the one pglog was set up in.
pub(crate) fn settle_home() {
    HOME.store(crate::fork::generation(), Ordering::Release);
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

    fn line_of(message: &str, kvs: &[(&str, log::kv::Value<'_>)]) -> String {
        format_event(&render(
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(log::Level::Warn)
                .target("app")
                .module_path_static(Some("app"))
                .key_values(&kvs)
                .build(),
            chrono::Utc::now(),
        ))
    }

    #[test]
    fn a_message_can_neither_forge_a_line_nor_drive_the_terminal() {
        let forged = "a\r\n2026-01-01T00:00:00.000000Z ERROR forged: fake line";
        let line = line_of(forged, &[]);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        assert!(line.contains("a\\r\\n2026-01-01"), "{line}");
        let escapes = line_of(
            "\x1b[2J\x1b[31m\u{9b}31m\u{202e}txt\u{7f}",
            &[("v", "\x1b]0;title\x07\u{85}".into())],
        );
        for c in ['\x1b', '\x07', '\u{9b}', '\u{202e}', '\u{7f}', '\u{85}'] {
            assert!(!escapes.contains(c), "{c:?} reached the line: {escapes}");
        }
        assert!(escapes.contains("\\u{1b}[2J"), "{escapes}");
        // The key-values are still JSON, the same values.
        let json: serde_json::Value =
            serde_json::from_str(&escapes[escapes.find(" {\"").unwrap() + 1..]).unwrap();
        assert_eq!(json["v"], "\x1b]0;title\x07\u{85}");
    }

    #[test]
    fn an_errors_chain_follows_the_message_and_reads_back() {
        let io = std::io::Error::other("disk full\nfor /var");
        let value = crate::error_value(&io);
        let line = line_of(
            "cannot save",
            &[("err", log::kv::Value::from_dyn_error(&value))],
        );
        assert!(
            line.contains(" app: cannot save: disk full\\nfor /var {"),
            "{line}"
        );
        let read = read_line(&line).unwrap();
        let json: serde_json::Value = serde_json::from_str(&read.json).unwrap();
        assert_eq!(json["exception_traceback"], "disk full\n  for /var");
        let chain = crate::exception::chain_suffix(json["exception_traceback"].as_str().unwrap());
        assert_eq!(read.message.strip_suffix(&chain), Some("cannot save"));
    }

    #[test]
    fn a_backslash_is_doubled_so_that_escapes_read_back() {
        let line = line_of("C:\\new\n", &[]);
        assert!(line.contains(": C:\\\\new\\n {"), "{line}");
    }

    #[test]
    fn the_line_carries_the_values_the_row_would_hold() {
        let big: i128 = i128::MAX;
        let line = line_of(
            "exact",
            &[("big", big.to_value()), ("nan", f64::NAN.to_value())],
        );
        assert!(
            line.contains(&format!("\"big\":{big}")),
            "no rounding: {line}"
        );
        assert!(line.contains("\"nan\":\"NaN\""), "{line}");
    }

    #[test]
    fn lines_read_back_whatever_the_target_and_message_hold() {
        // Found by the property test: a target holding ": ", and key-values holding " {".
        let row = render(
            &log::Record::builder()
                .args(format_args!("m {{\"x\": {{"))
                .target("a: b {\"c\"")
                .key_values(&[(" {", 1)])
                .build(),
            chrono::Utc::now(),
        );
        let read = read_line(&format_event(&row)).unwrap();
        assert_eq!(read.target, "a: b {\"c\"");
        assert_eq!(read.message, "m {\"x\": {");
        let json: serde_json::Value = serde_json::from_str(&read.json).unwrap();
        assert_eq!(json[" {"], 1);
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

/// Arbitrary events: nothing panics, the row obeys the rules the server applies, and the
/// stderr line reads back to the same message and fields.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::render::{render_capped, EVENT_MAX_BYTES};
    use log::kv::{ToValue, Value};
    use proptest::prelude::*;
    use serde_json::Value as Json;

    /// Text of every kind: NUL, controls, escapes, separators, any Unicode.
    fn hostile_text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".*",
            "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{2028}\\u{202e}\\\\\"{}: a-z]{0,40}",
            Just("\\u0000".to_owned()),
            Just("a\r\n2026-01-01T00:00:00.000000Z ERROR forged: fake line".to_owned()),
        ]
    }

    /// JSON-shaped values, nested up to 40 deep.
    fn json_value() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Json::from),
            hostile_text().prop_map(Json::String),
        ];
        leaf.prop_recursive(40, 200, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                prop::collection::vec((hostile_text(), inner), 0..6)
                    .prop_map(|members| Json::Object(members.into_iter().collect())),
            ]
        })
    }

    /// A key-value: structured, a number (non-finite and huge ones too), or text.
    #[derive(Debug, Clone)]
    enum Kv {
        Json(Json),
        Float(f64),
        Big(i128),
        Huge(u128),
        Text(String),
    }

    fn kv() -> impl Strategy<Value = Kv> {
        prop_oneof![
            json_value().prop_map(Kv::Json),
            prop_oneof![
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                any::<f64>()
            ]
            .prop_map(Kv::Float),
            any::<i128>().prop_map(Kv::Big),
            any::<u128>().prop_map(Kv::Huge),
            hostile_text().prop_map(Kv::Text),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            hostile_text(),
            // Reserved and duplicate-prone keys.
            prop::sample::select(vec![
                "func",
                "scope",
                "pid",
                "code_module",
                "target",
                "event_full",
                "k"
            ])
            .prop_map(str::to_owned),
        ]
    }

    fn no_nul(json: &Json) -> bool {
        match json {
            Json::String(s) => !s.contains('\0'),
            Json::Array(items) => items.iter().all(no_nul),
            Json::Object(map) => map.iter().all(|(k, v)| !k.contains('\0') && no_nul(v)),
            _ => true,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        #[test]
        fn any_event_renders_storably_and_its_line_reads_back(
            message in hostile_text(),
            target in hostile_text(),
            pairs in prop::collection::vec((key(), kv()), 0..6),
            max in prop_oneof![Just(crate::render::DEFAULT_MAX_EVENT_BYTES), 1024usize..4096],
        ) {
            let values: Vec<(String, Kv)> = pairs;
            let kvs: Vec<(&str, Value<'_>)> = values
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Kv::Json(json) => Value::from_serde(json),
                        Kv::Float(f) => f.to_value(),
                        Kv::Big(i) => i.to_value(),
                        Kv::Huge(u) => u.to_value(),
                        Kv::Text(t) => t.as_str().to_value(),
                    };
                    (k.as_str(), value)
                })
                .collect();
            let row = render_capped(
                &log::Record::builder()
                    .args(format_args!("{message}"))
                    .level(log::Level::Info)
                    .target(&target)
                    .module_path_static(Some("app"))
                    .key_values(&kvs)
                    .build(),
                chrono::Utc::now(),
                max,
            );

            // The server's rules: no NUL in text or JSON strings, `event` small enough for
            // its btree index, `data` a JSON object.
            prop_assert!(!row.event.contains('\0'));
            prop_assert!(row.event.len() <= EVENT_MAX_BYTES + 64);
            prop_assert!(row.func.as_deref().is_none_or(|f| !f.contains('\0')));
            prop_assert!(row.scope.as_deref().is_none_or(|s| !s.contains('\0')));
            let mut data = Vec::new();
            row.write_data(&mut data);
            let data: Json = serde_json::from_slice(&data).expect("data is JSON");
            prop_assert!(data.is_object() && no_nul(&data));

            // One line, nothing a terminal acts on, and it reads back.
            let line = format_event(&row);
            prop_assert!(!line.chars().any(is_unsafe), "unsafe character in {line:?}");
            let read = read_line(&line).expect("an event line reads back");
            prop_assert_eq!(&read.message, &row.event);
            prop_assert_eq!(&read.target, row.shown_target());
            prop_assert_eq!(read.level.as_str(), "INFO");
            let mut expected = Vec::new();
            row.write_line_fields(&mut expected);
            let expected: Json = serde_json::from_slice(&expected).unwrap();
            let json: Json = serde_json::from_str(&read.json).expect("the line's JSON");
            prop_assert_eq!(json, expected);
        }
    }
}
