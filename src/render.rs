//! Maps a [`log::Record`] to the row pglog stores: fixed columns plus a JSONB `data` object.
//!
//! Pure: no I/O, no global state, so every rule here is unit-tested with
//! [`log::Record::builder`].

use std::panic::{catch_unwind, AssertUnwindSafe};

use chrono::{DateTime, SubsecRound, Utc};
use log::kv::{self, Key, Value, VisitSource};
use log::{Level, Record};
use serde_json::{Map, Value as Json};

/// Key-values that fill columns of their own instead of a `data` field.
const FUNC_KEY: &str = "func";
const SCOPE_KEY: &str = "scope";

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
    /// Every other key-value, with its JSON type, plus location keys, `pid` and `target`.
    pub data: Map<String, Json>,
}

impl Row {
    /// The `level` column: stogger's vocabulary.
    pub fn level_word(&self) -> &'static str {
        level_word(self.level)
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

/// Renders `record` as it is logged at `now`.
pub(crate) fn render(record: &Record<'_>, now: DateTime<Utc>) -> Row {
    let mut data = Map::new();
    if let Some(module) = record.module_path() {
        data.insert("code_module".to_owned(), Json::from(module));
    }
    if let Some(file) = record.file() {
        data.insert("code_file".to_owned(), Json::from(file));
    }
    if let Some(line) = record.line() {
        data.insert("code_lineno".to_owned(), Json::from(line));
    }
    data.insert("pid".to_owned(), Json::from(std::process::id()));
    if record.module_path() != Some(record.target()) {
        data.insert("target".to_owned(), Json::from(record.target()));
    }

    // Key-values come last so that a caller's own `pid` or `target` wins over ours.
    let mut visitor = Fields {
        func: None,
        scope: None,
        data,
    };
    // Our visitor never fails; a failing source just stops early with what it gave.
    let _ = record.key_values().visit(&mut visitor);

    let mut data = visitor.data;
    let mut event = storable(message(record));
    if event.len() > EVENT_MAX_BYTES {
        let cut = floor_char_boundary(&event, EVENT_MAX_BYTES);
        let head = format!(
            "{}… [{} bytes; whole in data.{EVENT_FULL_KEY}]",
            &event[..cut],
            event.len()
        );
        data.insert(
            EVENT_FULL_KEY.to_owned(),
            Json::String(std::mem::replace(&mut event, head)),
        );
    }
    Row {
        timestamp: now.trunc_subsecs(6),
        level: record.level(),
        event,
        func: visitor.func.map(storable),
        scope: visitor.scope.map(storable),
        data: storable_map(data),
    }
}

fn message(record: &Record<'_>) -> String {
    let args = record.args();
    match args.as_str() {
        Some(literal) => literal.to_owned(),
        None => display(args),
    }
}

/// Formats user values without ever panicking: `to_string` panics when a `Display`
/// impl returns an error, and a `Display` impl may panic itself. What was written before
/// the failure is kept, followed by a marker.
fn display(value: &dyn std::fmt::Display) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    match catch_unwind(AssertUnwindSafe(|| write!(text, "{value}"))) {
        Ok(Ok(())) => {}
        Ok(Err(_)) => text.push_str(FORMAT_ERROR),
        Err(_) => text.push_str(FORMAT_PANIC),
    }
    text
}

/// Replaces NUL, which PostgreSQL cannot store in text, by a visible stand-in.
fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', &NUL_STANDIN.to_string())
    } else {
        text
    }
}

fn storable_map(map: Map<String, Json>) -> Map<String, Json> {
    if !map
        .iter()
        .any(|(k, v)| k.contains('\0') || needs_cleaning(v))
    {
        return map;
    }
    map.into_iter()
        .map(|(k, v)| (storable(k), storable_json(v)))
        .collect()
}

fn needs_cleaning(value: &Json) -> bool {
    match value {
        Json::String(s) => s.contains('\0'),
        Json::Array(items) => items.iter().any(needs_cleaning),
        Json::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains('\0') || needs_cleaning(v)),
        Json::Null | Json::Bool(_) | Json::Number(_) => false,
    }
}

fn storable_json(value: Json) -> Json {
    match value {
        Json::String(s) => Json::String(storable(s)),
        Json::Array(items) => Json::Array(items.into_iter().map(storable_json).collect()),
        Json::Object(map) => Json::Object(storable_map(map)),
        other => other,
    }
}

/// The largest index `<= max` that starts a character (`str::floor_char_boundary` is
/// not stable yet).
fn floor_char_boundary(text: &str, max: usize) -> usize {
    (0..=max.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

struct Fields {
    func: Option<String>,
    scope: Option<String>,
    data: Map<String, Json>,
}

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        match key.as_str() {
            FUNC_KEY => self.func = Some(text(&value)),
            SCOPE_KEY => self.scope = Some(text(&value)),
            other => {
                self.data.insert(other.to_owned(), json(&value));
            }
        }
        Ok(())
    }
}

fn text(value: &Value<'_>) -> String {
    match value.to_borrowed_str() {
        Some(s) => s.to_owned(),
        None => display(value),
    }
}

/// Keeps the value's JSON type; a value that cannot be serialized is stored as its text.
fn json(value: &Value<'_>) -> Json {
    // serde_json panics (rather than erring) when a `Display` impl returns an error;
    // contain it here so that one bad value does not cost the whole event.
    match catch_unwind(AssertUnwindSafe(|| serde_json::to_value(value))) {
        Ok(Ok(json)) => json,
        Ok(Err(_)) | Err(_) => Json::String(display(value)),
    }
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
        assert_eq!(row.data["code_module"], "app::auth");
        assert_eq!(row.data["code_file"], "src/auth.rs");
        assert_eq!(row.data["code_lineno"], 17);
        assert_eq!(row.data["pid"], std::process::id());
        assert!(
            !row.data.contains_key("target"),
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
        assert_eq!(row.data["target"], "audit");
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
            assert_eq!(&row.data[k], v, "key {k}");
        }
    }

    #[test]
    fn structured_values_stay_structured() {
        let tags = vec!["a", "b"];
        let row = render_kvs(&[
            ("tags", Value::from_serde(&tags)),
            ("missing", Value::null()),
        ]);
        assert_eq!(row.data["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(row.data["missing"], Json::Null);
    }

    #[test]
    fn debug_and_display_values_become_strings() {
        let v = vec![1, 2];
        let row = render_kvs(&[
            ("dbg", Value::from_debug(&v)),
            ("disp", Value::from_display(&"shown")),
        ]);
        assert_eq!(row.data["dbg"], "[1, 2]");
        assert_eq!(row.data["disp"], "shown");
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
        assert!(!row.data.contains_key("func"));
        assert!(!row.data.contains_key("scope"));
        assert_eq!(row.data["k"], 1);
    }

    #[test]
    fn callers_keys_win_over_ours() {
        let row = render_kvs(&[("pid", "worker-3".to_value())]);
        assert_eq!(row.data["pid"], "worker-3");
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
        assert_eq!(row.data["k\u{2400}"], "v\u{2400}");
        assert_eq!(
            row.data["nested"],
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
        assert_eq!(row.data[EVENT_FULL_KEY], serde_json::Value::String(long));
        let short = "x".repeat(EVENT_MAX_BYTES);
        assert!(!rendered(format_args!("{short}"), &[])
            .data
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
        assert_eq!(row.data["v"], "partial<formatting error>");
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
        assert_eq!(row.data["v"], "half<formatting panicked>");
        assert_eq!(row.data["ok"], 1);
    }

    #[test]
    fn literal_messages_are_not_reformatted() {
        let record = Record::builder().args(format_args!("plain")).build();
        assert_eq!(render(&record, at()).event, "plain");
    }
}
