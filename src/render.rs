//! Maps a [`log::Record`] to the row pglog stores: fixed columns plus a JSONB `data` object.
//!
//! Pure: no I/O, no global state, so every rule here is unit-tested with
//! [`log::Record::builder`].
//!
//! A log call pays for as little as it can: the call site is kept as the record's
//! `&'static str`s, and key-values are serialized once, straight into one JSON buffer.
//! The `data` object is assembled from those when the row is written, which in batch
//! mode happens on the writer thread.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use chrono::{DateTime, SubsecRound, Utc};

use crate::exception::{self, Exception};
use log::kv::{self, Key, Value, VisitSource};
use log::{Level, Record};
#[cfg(test)]
use serde_json::{Map, Value as Json};

/// Key-values that fill columns of their own instead of a `data` field.
const FUNC_KEY: &str = "func";
const SCOPE_KEY: &str = "scope";
/// The keys pglog writes itself, as stogger does: a caller's key-value of that name is
/// stored as `kv_<name>`, so that `data->>'pid'` means the writing process in every row,
/// Python's and Rust's.
const OWN_KEYS: [&str; 5] = ["code_module", "code_file", "code_lineno", "pid", "target"];
/// What a caller's key-value named like one of [`OWN_KEYS`] is prefixed with.
pub(crate) const RENAMED_PREFIX: &str = "kv_";

/// Longest `event` stored as is. A btree index entry may not exceed about 2.7 kB, and
/// `event` is indexed: a longer message is cut here and kept whole in `data.event_full`.
pub(crate) const EVENT_MAX_BYTES: usize = 2000;
/// Where an over-long message is kept whole.
pub(crate) const EVENT_FULL_KEY: &str = "event_full";
/// PostgreSQL rejects NUL in text and in JSONB strings; it is stored as this visible sign.
pub(crate) const NUL_STANDIN: char = '\u{2400}';
/// Appended where a `Display` impl reported an error, keeping what it wrote before.
const FORMAT_ERROR: &str = "<formatting error>";
/// Appended where a `Display` impl panicked.
const FORMAT_PANIC: &str = "<formatting panicked>";
/// The default per-event size limit: a message, and each key-value, is kept up to this
/// many bytes (see [`Builder::max_event_bytes`](crate::Builder::max_event_bytes)).
pub(crate) const DEFAULT_MAX_EVENT_BYTES: usize = 4 << 20;
/// How non-finite floats are stored: as these strings (PostgreSQL's and JavaScript's
/// spellings), since JSON has no such numbers and `null` would read as "no value".
const NAN: &str = "NaN";
const INFINITY: &str = "Infinity";
const NEG_INFINITY: &str = "-Infinity";

/// One event, ready to be written to the table or to the fallback.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// When the log call was made, UTC, truncated to PostgreSQL's microsecond precision.
    pub timestamp: DateTime<Utc>,
    pub level: Level,
    /// The formatted message.
    pub event: String,
    pub func: Option<String>,
    pub scope: Option<String>,
    module: Option<Cow<'static, str>>,
    file: Option<Cow<'static, str>>,
    line: Option<u32>,
    /// The record's target, when it is not the module path.
    target: Option<String>,
    /// Every other key-value, serialized as the members of a JSON object (no braces).
    fields: Vec<u8>,
    /// The first error among the key-values, in stogger's keys.
    exception: Option<Box<Exception>>,
    /// Already written to stderr by the console echo: the fallback does not repeat it.
    pub echoed: bool,
}

impl Row {
    /// About how many bytes the row holds, for the batch queue's byte bound: its heap
    /// allocations (by capacity, which is what they occupy) and the struct itself.
    pub fn weight(&self) -> usize {
        let owned = |cow: &Option<Cow<'static, str>>| match cow {
            Some(Cow::Owned(text)) => text.capacity(),
            _ => 0,
        };
        std::mem::size_of::<Row>()
            + self.event.capacity()
            + self.func.as_ref().map_or(0, String::capacity)
            + self.scope.as_ref().map_or(0, String::capacity)
            + self.target.as_ref().map_or(0, String::capacity)
            + owned(&self.module)
            + owned(&self.file)
            + self.fields.capacity()
            + self.exception.as_ref().map_or(0, |e| e.weight())
    }

    /// What a readable line adds to the message when the event holds an error: the
    /// error and its causes (see [`exception::chain_suffix`]).
    pub fn chain_suffix(&self) -> Option<String> {
        let traceback = self.exception.as_ref()?.traceback.as_deref()?;
        Some(exception::chain_suffix(traceback))
    }

    /// The `level` column: stogger's vocabulary.
    pub fn level_word(&self) -> &'static str {
        level_word(self.level)
    }

    /// The `data` column as JSON text: the location keys, `pid` and `target`, the error's
    /// keys, then the key-values (none of which repeats a key before it).
    pub fn write_data(&self, out: &mut Vec<u8>) {
        self.write_object(out, false);
    }

    /// The key-values of a readable line, as one JSON object: `func` and `scope` (which
    /// have columns of their own in the table), then what [`write_data`](Row::write_data)
    /// writes, as that text (numbers as exact as in the row).
    pub fn write_line_fields(&self, out: &mut Vec<u8>) {
        self.write_object(out, true);
    }

    /// What a readable line shows as the target: the record's target, else its module.
    pub fn shown_target(&self) -> &str {
        self.target
            .as_deref()
            .or(self.module.as_deref())
            .unwrap_or("-")
    }

    fn write_object(&self, out: &mut Vec<u8>, columns: bool) {
        out.push(b'{');
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, name: &str| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            write_json(out, name);
            out.push(b':');
        };
        if columns {
            if let Some(func) = &self.func {
                key(out, FUNC_KEY);
                write_json(out, func);
            }
            if let Some(scope) = &self.scope {
                key(out, SCOPE_KEY);
                write_json(out, scope);
            }
        }
        if let Some(module) = &self.module {
            key(out, "code_module");
            write_json(out, module);
        }
        if let Some(file) = &self.file {
            key(out, "code_file");
            write_json(out, file);
        }
        if let Some(line) = self.line {
            key(out, "code_lineno");
            write_json(out, &line);
        }
        key(out, "pid");
        write_json(out, &crate::fork::pid());
        if let Some(target) = &self.target {
            key(out, "target");
            write_json(out, target);
        }
        for (name, text) in self.exception.iter().flat_map(|e| e.members()) {
            key(out, name);
            write_json(out, text);
        }
        if !self.fields.is_empty() {
            out.push(b',');
            out.extend_from_slice(&self.fields);
        }
        out.push(b'}');
    }

    /// The `data` column as a map (duplicate keys: the last wins).
    #[cfg(test)]
    pub fn data(&self) -> Map<String, Json> {
        let mut text = Vec::with_capacity(128 + self.fields.len());
        self.write_data(&mut text);
        match serde_json::from_slice(&text) {
            Ok(Json::Object(map)) => map,
            // Deeper than serde_json parses (128 levels): keep what is readable.
            _ => {
                let mut map = Map::new();
                map.insert(
                    "data".to_owned(),
                    Json::String(String::from_utf8_lossy(&text).into_owned()),
                );
                map
            }
        }
    }
}

/// stogger's level words, shared by Python and Rust writers of one table.
pub(crate) fn level_word(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// Renders `record` as it is logged at `now`, with the default size limit.
pub(crate) fn render(record: &Record<'_>, now: DateTime<Utc>) -> Row {
    render_capped(record, now, DEFAULT_MAX_EVENT_BYTES)
}

/// Renders `record` as it is logged at `now`; the message and each key-value are kept up
/// to `max_bytes` (the head, and a note of the whole size).
pub(crate) fn render_capped(record: &Record<'_>, now: DateTime<Utc>, max_bytes: usize) -> Row {
    let mut visitor = Fields {
        func: None,
        scope: None,
        fields: Vec::new(),
        max_bytes,
        exception: None,
        explicit: Vec::new(),
    };
    // Our visitor never fails; a failing source just stops early with what it gave.
    let _ = record.key_values().visit(&mut visitor);
    let mut fields = visitor.fields;
    let exception = visitor.exception.map(|mut exception| {
        for key in visitor.explicit {
            exception.without(key);
        }
        Box::new(exception)
    });

    let mut event = storable(message(record, max_bytes));
    if event.len() > EVENT_MAX_BYTES {
        let cut = floor_char_boundary(&event, EVENT_MAX_BYTES);
        let head = format!(
            "{}… [{} bytes; whole in data.{EVENT_FULL_KEY}]",
            &event[..cut],
            event.len()
        );
        push_member(
            &mut fields,
            EVENT_FULL_KEY,
            &std::mem::replace(&mut event, head),
        );
    }
    let module = record
        .module_path_static()
        .map(Cow::Borrowed)
        .or_else(|| record.module_path().map(|m| Cow::Owned(m.to_owned())));
    let file = record
        .file_static()
        .map(Cow::Borrowed)
        .or_else(|| record.file().map(|f| Cow::Owned(f.to_owned())));
    let target = (record.module_path() != Some(record.target()))
        .then(|| storable(record.target().to_owned()));
    Row {
        timestamp: now.trunc_subsecs(6),
        level: record.level(),
        event,
        func: visitor.func.map(storable),
        scope: visitor.scope.map(storable),
        module: module.map(storable_cow),
        file: file.map(storable_cow),
        line: record.line(),
        target,
        fields: storable_fields(fields),
        exception,
        echoed: false,
    }
}

fn message(record: &Record<'_>, max_bytes: usize) -> String {
    let args = record.args();
    match args.as_str() {
        Some(literal) if literal.len() <= max_bytes => literal.to_owned(),
        _ => display_capped(args, max_bytes),
    }
}

/// Formats a user value without ever panicking (`to_string` panics when a `Display` impl
/// returns an error, and an impl may panic itself): what was written before a failure is
/// kept, followed by a marker. At most `max_bytes` of the text are kept (memory stays
/// bounded whatever its length), with a note of the whole length after a cut one.
pub(crate) fn display_capped(value: &dyn std::fmt::Display, max_bytes: usize) -> String {
    use std::fmt::Write;
    let mut capped = Capped {
        text: String::new(),
        max_bytes,
        total: 0,
    };
    match catch_unwind(AssertUnwindSafe(|| write!(capped, "{value}"))) {
        Ok(Ok(())) => {}
        Ok(Err(_)) => capped.text.push_str(FORMAT_ERROR),
        Err(_) => capped.text.push_str(FORMAT_PANIC),
    }
    if capped.total > max_bytes {
        let total = capped.total;
        capped.text.push_str(&cut_note(total));
    }
    capped.text
}

/// What follows a cut value: `… [N bytes; cut at max_event_bytes]`.
fn cut_note(total: usize) -> String {
    format!("… [{total} bytes; cut at max_event_bytes]")
}

/// A text sink that keeps its first `max_bytes` and counts the rest.
struct Capped {
    text: String,
    max_bytes: usize,
    total: usize,
}

impl std::fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.total = self.total.saturating_add(s.len());
        let room = self.max_bytes.saturating_sub(self.text.len());
        if room > 0 {
            self.text.push_str(&s[..floor_char_boundary(s, room)]);
        }
        Ok(())
    }
}

/// A byte sink that keeps its first `max_bytes` and counts the rest.
struct CappedBytes<'a> {
    out: &'a mut Vec<u8>,
    room: usize,
    total: usize,
}

impl std::io::Write for CappedBytes<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    // serde_json writes through `write_all`, many small pieces per value: one branch each.
    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.total = self.total.saturating_add(buf.len());
        if buf.len() <= self.room {
            self.out.extend_from_slice(buf);
            self.room -= buf.len();
        } else {
            self.out.extend_from_slice(&buf[..self.room]);
            self.room = 0;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Replaces NUL, which PostgreSQL cannot store in text, by a visible stand-in.
pub(crate) fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', &NUL_STANDIN.to_string())
    } else {
        text
    }
}

fn storable_cow(text: Cow<'static, str>) -> Cow<'static, str> {
    if text.contains('\0') {
        Cow::Owned(storable(text.into_owned()))
    } else {
        text
    }
}

/// JSON escapes NUL as `\u0000`, which JSONB rejects: replace each such escape by the
/// stand-in, reading the JSON text's escapes so that an escaped backslash followed by
/// `u0000` (the text `\u0000` in a value) is left alone. Works at any depth, without
/// parsing.
fn storable_fields(fields: Vec<u8>) -> Vec<u8> {
    const NUL_ESCAPE: &[u8] = b"\\u0000";
    if !fields.windows(NUL_ESCAPE.len()).any(|w| w == NUL_ESCAPE) {
        return fields;
    }
    let mut standin = [0u8; 4];
    let standin = NUL_STANDIN.encode_utf8(&mut standin).as_bytes();
    let mut clean = Vec::with_capacity(fields.len());
    let mut i = 0;
    while i < fields.len() {
        if fields[i] != b'\\' {
            clean.push(fields[i]);
            i += 1;
            continue;
        }
        // An escape: `\uXXXX` is six bytes, any other two.
        let len = if fields.get(i + 1) == Some(&b'u') {
            6
        } else {
            2
        };
        let escape = &fields[i..(i + len).min(fields.len())];
        if escape == NUL_ESCAPE {
            clean.extend_from_slice(standin);
        } else {
            clean.extend_from_slice(escape);
        }
        i += len;
    }
    clean
}

/// The largest index `<= max` that starts a character (`str::floor_char_boundary` is
/// not stable yet).
fn floor_char_boundary(text: &str, max: usize) -> usize {
    (0..=max.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// Serializes what cannot fail to serialize (strings, numbers, parsed JSON).
fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec fails only for values whose serialization fails, never these.
    let _ = serde_json::to_writer(out, value);
}

/// Appends `"key":<value>` to the members in `fields`.
fn push_member<T: serde::Serialize + ?Sized>(fields: &mut Vec<u8>, key: &str, value: &T) {
    push_key(fields, key);
    write_json(fields, value);
}

/// Appends `"key":`, after a comma unless it is the first member.
fn push_key(fields: &mut Vec<u8>, key: &str) {
    if fields.is_empty() {
        fields.reserve(96);
    } else {
        fields.push(b',');
    }
    write_json(fields, key);
    fields.push(b':');
}

struct Fields {
    func: Option<String>,
    scope: Option<String>,
    fields: Vec<u8>,
    max_bytes: usize,
    /// From the first error among the key-values.
    exception: Option<Exception>,
    /// The error keys the caller set himself.
    explicit: Vec<&'static str>,
}

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        match key.as_str() {
            FUNC_KEY => self.func = Some(text(&value, self.max_bytes)),
            SCOPE_KEY => self.scope = Some(text(&value, self.max_bytes)),
            other => {
                if self.exception.is_none() {
                    if let Some(error) = value.to_borrowed_error() {
                        self.exception =
                            catch_unwind(AssertUnwindSafe(|| Exception::of(error, self.max_bytes)))
                                .ok();
                    }
                }
                if let Some(own) = OWN_KEYS.iter().find(|own| **own == other) {
                    let renamed = format!("{RENAMED_PREFIX}{own}");
                    push_value(&mut self.fields, &renamed, &value, self.max_bytes);
                } else {
                    if let Some(key) = exception::KEYS.iter().find(|k| **k == other) {
                        self.explicit.push(key);
                    }
                    push_value(&mut self.fields, other, &value, self.max_bytes);
                }
            }
        }
        Ok(())
    }
}

fn text(value: &Value<'_>, max_bytes: usize) -> String {
    match value.to_borrowed_str() {
        Some(s) if s.len() <= max_bytes => s.to_owned(),
        _ => display_capped(value, max_bytes),
    }
}

/// Appends `"key":<value>`, keeping the value's JSON type (a non-finite float as the
/// string `NaN`, `Infinity` or `-Infinity`); a value longer than `max_bytes` as JSON is
/// kept as the head of that text and a note of its size.
///
/// The value is formatted once: a `Display` impl that fails (serde_json panics when one
/// returns an error) leaves what it wrote, followed by a marker, and is not run again.
fn push_value(fields: &mut Vec<u8>, key: &str, value: &Value<'_>, max_bytes: usize) {
    push_key(fields, key);
    let mark = fields.len();
    let (written, total) = {
        let mut sink = CappedBytes {
            out: &mut *fields,
            room: max_bytes,
            total: 0,
        };
        let written = catch_unwind(AssertUnwindSafe(|| serde_json::to_writer(&mut sink, value)));
        (written, sink.total)
    };
    // serde_json writes a non-finite float as `null`; only then is it worth asking.
    if matches!(written, Ok(Ok(()))) && &fields[mark..] == b"null" {
        if let Some(float) = value.to_f64().filter(|f| !f.is_finite()) {
            let name = match float {
                f if f.is_nan() => NAN,
                f if f > 0.0 => INFINITY,
                _ => NEG_INFINITY,
            };
            fields.truncate(mark);
            write_json(fields, name);
            return;
        }
    }
    match written {
        Ok(Ok(())) if total <= max_bytes => {}
        Ok(Ok(())) => {
            // Too big: keep the head of its JSON text, as a string.
            let head = String::from_utf8_lossy(&fields[mark..]).into_owned();
            fields.truncate(mark);
            let cut = floor_char_boundary(&head, max_bytes);
            write_json(fields, &format!("{}{}", &head[..cut], cut_note(total)));
        }
        failed => {
            // What the `Display` impl wrote is there, as the start of a JSON string.
            let marker = match failed {
                Err(payload) if !is_serde_json_display_error(&*payload) => FORMAT_PANIC,
                _ => FORMAT_ERROR,
            };
            // (Unless it was cut at the size limit, possibly inside an escape.)
            let partial = (total <= max_bytes)
                .then(|| fields[mark..].strip_prefix(b"\"").map(<[u8]>::to_vec))
                .flatten();
            fields.truncate(mark);
            match partial.and_then(|p| String::from_utf8(p).ok()) {
                Some(escaped) => {
                    fields.push(b'"');
                    fields.extend_from_slice(escaped.as_bytes());
                    // The marker needs no escaping.
                    fields.extend_from_slice(marker.as_bytes());
                    fields.push(b'"');
                }
                None => write_json(fields, marker),
            }
        }
    }
}

/// serde_json turns a `Display` impl's error into this panic; any other payload is the
/// impl's own panic.
fn is_serde_json_display_error(payload: &(dyn std::any::Any + Send)) -> bool {
    payload
        .downcast_ref::<&str>()
        .is_some_and(|m| m.contains("there should be an error"))
        || payload
            .downcast_ref::<String>()
            .is_some_and(|m| m.contains("there should be an error"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use log::kv::ToValue;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 14, 48, 52).unwrap()
            + chrono::Duration::nanoseconds(123_456_789)
    }

    fn render_kvs(kvs: &[(&str, Value<'_>)]) -> Row {
        let user = 42;
        // One expression: the record borrows the temporary `format_args!` makes.
        render(
            &Record::builder()
                .args(format_args!("user {user} logged in"))
                .level(Level::Info)
                .target("app::auth")
                .module_path_static(Some("app::auth"))
                .file_static(Some("src/auth.rs"))
                .line(Some(17))
                .key_values(&kvs)
                .build(),
            at(),
        )
    }

    #[test]
    fn level_words_are_stoggers() {
        let words: Vec<_> = [
            Level::Error,
            Level::Warn,
            Level::Info,
            Level::Debug,
            Level::Trace,
        ]
        .into_iter()
        .map(level_word)
        .collect();
        assert_eq!(words, ["error", "warning", "info", "debug", "trace"]);
    }

    #[test]
    fn fixed_columns() {
        let row = render_kvs(&[]);
        assert_eq!(row.event, "user 42 logged in");
        assert_eq!(row.level_word(), "info");
        assert_eq!(
            row.timestamp.to_rfc3339(),
            "2026-11-21T14:48:52.123456+00:00"
        );
        assert_eq!(row.func, None);
        assert_eq!(row.scope, None);
    }

    #[test]
    fn location_keys_and_pid() {
        let row = render_kvs(&[]);
        assert_eq!(row.data()["code_module"], "app::auth");
        assert_eq!(row.data()["code_file"], "src/auth.rs");
        assert_eq!(row.data()["code_lineno"], 17);
        assert_eq!(row.data()["pid"], std::process::id());
        assert!(
            !row.data().contains_key("target"),
            "target equal to the module is not repeated"
        );
    }

    #[test]
    fn target_kept_when_it_differs_from_module() {
        let record = Record::builder()
            .args(format_args!("x"))
            .target("audit")
            .module_path_static(Some("app::auth"))
            .build();
        let row = render(&record, at());
        assert_eq!(row.data()["target"], "audit");
    }

    #[test]
    fn key_values_keep_their_json_types() {
        let row = render_kvs(&[
            ("user_id", 42u64.to_value()),
            ("delta", (-7i32).to_value()),
            ("ratio", 0.5f64.to_value()),
            ("admin", true.to_value()),
            ("name", "ada".to_value()),
            ("letter", 'x'.to_value()),
        ]);
        let expected = serde_json::json!({
            "user_id": 42, "delta": -7, "ratio": 0.5, "admin": true, "name": "ada", "letter": "x",
        });
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(&row.data()[k], v, "key {k}");
        }
    }

    #[test]
    fn structured_values_stay_structured() {
        let tags = vec!["a", "b"];
        let row = render_kvs(&[
            ("tags", Value::from_serde(&tags)),
            ("missing", Value::null()),
        ]);
        assert_eq!(row.data()["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(row.data()["missing"], Json::Null);
    }

    #[test]
    fn debug_and_display_values_become_strings() {
        let v = vec![1, 2];
        let row = render_kvs(&[
            ("dbg", Value::from_debug(&v)),
            ("disp", Value::from_display(&"shown")),
        ]);
        assert_eq!(row.data()["dbg"], "[1, 2]");
        assert_eq!(row.data()["disp"], "shown");
    }

    #[test]
    fn func_and_scope_fill_columns_not_data() {
        let row = render_kvs(&[
            ("func", "login".to_value()),
            ("scope", 7.to_value()),
            ("k", 1.to_value()),
        ]);
        assert_eq!(row.func.as_deref(), Some("login"));
        assert_eq!(row.scope.as_deref(), Some("7"));
        assert!(!row.data().contains_key("func"));
        assert!(!row.data().contains_key("scope"));
        assert_eq!(row.data()["k"], 1);
    }

    #[test]
    fn our_keys_win_and_the_callers_are_kept_beside_them() {
        let row = render_kvs(&[
            ("pid", "worker-3".to_value()),
            ("code_lineno", 9.to_value()),
            ("target", "x".to_value()),
            ("code_func", "login".to_value()),
        ]);
        let data = row.data();
        assert_eq!(data["pid"], std::process::id());
        assert_eq!(data["kv_pid"], "worker-3");
        assert_eq!(data["code_lineno"], 17);
        assert_eq!(data["kv_code_lineno"], 9);
        assert_eq!(data["kv_target"], "x");
        assert!(!data.contains_key("target"), "the target is the module");
        // stogger's key that pglog does not write is the caller's to fill.
        assert_eq!(data["code_func"], "login");
    }

    /// An error with a chain of causes, as `thiserror` or `anyhow` builds them.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn std::error::Error + 'static>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref()
        }
    }

    fn three_causes() -> Layer {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        Layer(
            "cannot start",
            Some(Box::new(Layer(
                "loading configuration",
                Some(Box::new(Layer("reading /etc/app.toml", Some(Box::new(io))))),
            ))),
        )
    }

    #[test]
    fn an_error_fills_stoggers_keys_beside_the_callers() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "config.toml missing");
        let row = render_kvs(&[("err", Value::from_dyn_error(&io))]);
        let data = row.data();
        assert_eq!(data["err"], "config.toml missing");
        assert_eq!(data["exception_msg"], "config.toml missing");
        assert_eq!(data["exception_class"], "std::io::Error");
        assert_eq!(data["exception_traceback"], "config.toml missing");
    }

    #[test]
    fn the_traceback_lists_the_causes_in_order() {
        let error = three_causes();
        let row = render_kvs(&[("err", Value::from_dyn_error(&error))]);
        let data = row.data();
        assert_eq!(data["exception_msg"], "cannot start");
        assert_eq!(data["exception_class"], exception::UNKNOWN_CLASS);
        assert_eq!(
            data["exception_traceback"],
            "cannot start\n\
             caused by: loading configuration\n\
             caused by: reading /etc/app.toml\n\
             caused by: no such file"
        );
        // With the helper, the type is named.
        let value = crate::error_value(&error);
        let row = render_kvs(&[("err", Value::from_dyn_error(&value))]);
        assert_eq!(row.data()["exception_class"], "pglog::render::tests::Layer");
        assert_eq!(
            row.data()["exception_traceback"],
            data["exception_traceback"]
        );
        assert_eq!(
            row.chain_suffix().as_deref(),
            Some(": cannot start: loading configuration: reading /etc/app.toml: no such file")
        );
    }

    #[test]
    fn the_first_error_fills_the_keys_and_every_error_keeps_its_own() {
        let first = std::io::Error::other("disk full");
        let second: Box<dyn std::error::Error> = "timeout".into();
        let row = render_kvs(&[
            ("write", Value::from_dyn_error(&first)),
            ("retry", Value::from_dyn_error(&*second)),
        ]);
        let data = row.data();
        assert_eq!(data["exception_msg"], "disk full");
        assert_eq!(data["write"], "disk full");
        assert_eq!(data["retry"], "timeout");
    }

    #[test]
    fn the_callers_own_error_keys_win() {
        let io = std::io::Error::other("disk full");
        let row = render_kvs(&[
            ("exception_class", "OSError".to_value()),
            ("err", Value::from_dyn_error(&io)),
        ]);
        let mut text = Vec::new();
        row.write_data(&mut text);
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.matches("exception_class").count(), 1, "{text}");
        assert_eq!(row.data()["exception_class"], "OSError");
        assert_eq!(row.data()["exception_msg"], "disk full");
    }

    #[test]
    fn hostile_errors_are_stored_whole_within_bounds() {
        /// A chain that loops back on itself forever.
        #[derive(Debug)]
        struct Loop;
        impl std::fmt::Display for Loop {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("again\0")
            }
        }
        impl std::error::Error for Loop {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&Loop)
            }
        }
        let row = render_kvs(&[("err", Value::from_dyn_error(&Loop))]);
        let traceback = row.data()["exception_traceback"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            traceback.lines().count(),
            66,
            "itself, 64 causes and a note"
        );
        assert!(traceback.ends_with("… more causes, not followed (pglog follows 64)"));
        assert!(!traceback.contains('\0') && traceback.contains("again\u{2400}"));

        /// An error whose `Display` panics.
        #[derive(Debug)]
        struct Broken;
        impl std::fmt::Display for Broken {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("half")?;
                panic!("broken Display")
            }
        }
        impl std::error::Error for Broken {}
        let row = render_kvs(&[("err", Value::from_dyn_error(&Broken))]);
        assert_eq!(row.data()["exception_msg"], "half<formatting panicked>");

        let huge = std::io::Error::other("x".repeat(10_000));
        let kvs = [("err", Value::from_dyn_error(&huge))];
        let row = render_capped(
            &Record::builder()
                .args(format_args!("m"))
                .key_values(&kvs)
                .build(),
            at(),
            1_000,
        );
        let msg = row.data()["exception_msg"].as_str().unwrap().to_owned();
        assert!(
            msg.ends_with("… [10000 bytes; cut at max_event_bytes]"),
            "{msg}"
        );
        let traceback = row.data()["exception_traceback"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(traceback.starts_with("xxxx") && traceback.ends_with("cut at max_event_bytes]"));
        assert!(msg.len() < 1_100 && traceback.len() < 1_100);
    }

    #[test]
    fn a_multi_line_message_stays_one_cause() {
        let error = Layer("two\nlines", Some(Box::new(Layer("cause", None))));
        let row = render_kvs(&[("err", Value::from_dyn_error(&error))]);
        assert_eq!(
            row.data()["exception_traceback"],
            "two\n  lines\ncaused by: cause"
        );
        assert_eq!(row.chain_suffix().as_deref(), Some(": two\nlines: cause"));
    }

    /// `format_args!` makes temporaries: pass it straight in, as the `log` macros do.
    fn rendered(args: std::fmt::Arguments<'_>, kvs: &[(&str, Value<'_>)]) -> Row {
        render(&Record::builder().args(args).key_values(&kvs).build(), at())
    }

    #[test]
    fn nul_bytes_become_a_visible_stand_in_everywhere() {
        let nested = serde_json::json!({"in\0key": ["a\0b", {"deep": "\0"}]});
        let row = rendered(
            format_args!("{}", "before\0after"),
            &[
                ("func", Value::from("f\0")),
                ("k\0", Value::from("v\0")),
                ("nested", Value::from_serde(&nested)),
            ],
        );
        assert_eq!(row.event, "before\u{2400}after");
        assert_eq!(row.func.as_deref(), Some("f\u{2400}"));
        assert_eq!(row.data()["k\u{2400}"], "v\u{2400}");
        assert_eq!(
            row.data()["nested"],
            serde_json::json!({"in\u{2400}key": ["a\u{2400}b", {"deep": "\u{2400}"}]})
        );
    }

    #[test]
    fn long_messages_are_cut_for_the_index_and_kept_whole_in_data() {
        let long = "é".repeat(600_000); // 1.2 MB, two bytes a char
        let row = rendered(format_args!("{long}"), &[]);
        assert!(
            row.event.len() < EVENT_MAX_BYTES + 64,
            "{}",
            row.event.len()
        );
        assert!(row
            .event
            .ends_with("… [1200000 bytes; whole in data.event_full]"));
        assert_eq!(row.data()[EVENT_FULL_KEY], serde_json::Value::String(long));
        let short = "x".repeat(EVENT_MAX_BYTES);
        assert!(!rendered(format_args!("{short}"), &[])
            .data()
            .contains_key(EVENT_FULL_KEY));
    }

    struct Failing;
    impl std::fmt::Display for Failing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("partial")?;
            Err(std::fmt::Error)
        }
    }

    #[test]
    fn display_errors_do_not_panic() {
        let row = rendered(
            format_args!("{}", Failing),
            &[
                ("v", Value::from_display(&Failing)),
                ("func", Value::from_display(&Failing)),
            ],
        );
        assert_eq!(row.event, "partial<formatting error>");
        assert_eq!(row.data()["v"], "partial<formatting error>");
        assert_eq!(row.func.as_deref(), Some("partial<formatting error>"));
    }

    struct Panicking;
    impl std::fmt::Display for Panicking {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("half")?;
            panic!("a broken Display impl")
        }
    }

    #[test]
    fn panicking_display_keeps_the_event_and_its_other_values() {
        let row = rendered(
            format_args!("{}", Panicking),
            &[
                ("v", Value::from_display(&Panicking)),
                ("ok", Value::from(1)),
            ],
        );
        assert_eq!(row.event, "half<formatting panicked>");
        assert_eq!(row.data()["v"], "half<formatting panicked>");
        assert_eq!(row.data()["ok"], 1);
    }

    #[test]
    fn literal_messages_are_not_reformatted() {
        let record = Record::builder().args(format_args!("plain")).build();
        assert_eq!(render(&record, at()).event, "plain");
    }

    #[test]
    fn nul_is_cleaned_at_any_depth_and_the_text_backslash_u0000_is_left_alone() {
        // Deeper than serde_json parses, holding both a NUL and the six characters
        // `\u0000` (which JSON writes as `\\u0000`).
        let deep = (0..200).fold(
            serde_json::json!(["a\0b", "c\\u0000d"]),
            |inner, _| serde_json::json!({ "n": inner }),
        );
        let row = render_kvs(&[("deep", Value::from_serde(&deep))]);
        let mut text = Vec::new();
        row.write_data(&mut text);
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("a\u{2400}b"), "NUL became the stand-in");
        assert!(
            text.contains("c\\\\u0000d"),
            "the literal text was kept: {}",
            &text[text.len() - 80..]
        );
        assert!(!text.contains("a\\u0000b"));
    }

    #[test]
    fn non_finite_numbers_stay_distinguishable() {
        let row = render_kvs(&[
            ("nan", f64::NAN.to_value()),
            ("inf", f64::INFINITY.to_value()),
            ("neg", f64::NEG_INFINITY.to_value()),
            ("f32", f32::NAN.to_value()),
            ("fine", 1.5f64.to_value()),
        ]);
        let data = row.data();
        assert_eq!(data["nan"], "NaN");
        assert_eq!(data["inf"], "Infinity");
        assert_eq!(data["neg"], "-Infinity");
        assert_eq!(data["f32"], "NaN");
        assert_eq!(data["fine"], 1.5);
    }

    #[test]
    fn big_messages_and_values_keep_their_head_and_their_size() {
        let big = "m".repeat(10_000);
        let value = "v".repeat(10_000);
        let kvs = [("k", value.as_str().to_value())];
        let row = render_capped(
            &Record::builder()
                .args(format_args!("{big}"))
                .key_values(&kvs)
                .build(),
            at(),
            1_000,
        );
        let data = row.data();
        // Cut to 1,000 bytes, the message now fits the indexed column whole.
        assert!(!data.contains_key(EVENT_FULL_KEY));
        assert!(
            row.event.starts_with(&"m".repeat(1_000)),
            "the head of the message"
        );
        assert!(
            row.event
                .ends_with("… [10000 bytes; cut at max_event_bytes]"),
            "{}",
            &row.event[990..]
        );
        let k = data["k"].as_str().unwrap();
        assert!(k.starts_with("\"vvvv"), "the head of the value's JSON text");
        assert!(
            k.ends_with("… [10002 bytes; cut at max_event_bytes]"),
            "{k:.40}"
        );
        assert!(
            row.weight() < 10_000,
            "and memory stays small: {}",
            row.weight()
        );
    }

    #[test]
    fn a_failing_display_is_run_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        struct Counted;
        impl std::fmt::Display for Counted {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                CALLS.fetch_add(1, Ordering::SeqCst);
                f.write_str("half")?;
                panic!("broken")
            }
        }
        let row = render_kvs(&[("v", Value::from_display(&Counted))]);
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert_eq!(row.data()["v"], "half<formatting panicked>");
    }
}
