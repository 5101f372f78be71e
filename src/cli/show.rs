//! How the command prints events and its own messages. Colours go through `anstream`,
//! which drops them when the output is not a terminal, or when `NO_COLOR` is set.

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::filter::severity;
use crate::fallback::{LineParts, TIME_FORMAT};

/// The columns [`Event::from_row`] reads, in its order.
pub(crate) const EVENT_COLUMNS: &str = "id, timestamp, level, event, func, scope, data::text";

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub id: i64,
    pub timestamp: DateTime<Utc>,
    pub level: String,
    pub event: String,
    pub func: Option<String>,
    pub scope: Option<String>,
    /// `data` as the server writes it out.
    pub data: String,
}

impl Event {
    /// From a row of `SELECT` [`EVENT_COLUMNS`] (at `offset`).
    pub fn from_row(row: &tokio_postgres::Row, offset: usize) -> Event {
        Event {
            id: row.get(offset),
            timestamp: row.get(offset + 1),
            level: row.get(offset + 2),
            event: row.get(offset + 3),
            func: row.get(offset + 4),
            scope: row.get(offset + 5),
            data: row.get(offset + 6),
        }
    }
}

const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();

/// The style of a level word, by its severity.
pub(crate) fn level_style(word: &str) -> Style {
    let colour = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match severity(word) {
        5.. => colour(AnsiColor::Red).bold().invert(),
        4 => colour(AnsiColor::Red).bold(),
        3 => colour(AnsiColor::Yellow).bold(),
        2 => colour(AnsiColor::Green),
        1 => colour(AnsiColor::Blue),
        _ => DIM,
    }
}

/// The event as pglog's stderr line writes it: `<UTC time> <LEVEL> <target>: <message>
/// <key-values as JSON>`, with `func`, `scope` and every `data` key in the JSON, each
/// part styled (plain text where colours are off).
pub(crate) fn text_line(event: &Event) -> String {
    let data: Map<String, Value> = serde_json::from_str(&event.data).unwrap_or_default();
    let target = ["target", "code_module"]
        .iter()
        .find_map(|k| data.get(*k).and_then(Value::as_str))
        .unwrap_or("-");
    // `func` and `scope` first, as the stderr line has them; then data's keys.
    let columns = [("func", &event.func), ("scope", &event.scope)];
    let members: Vec<String> = columns
        .iter()
        .filter_map(|(key, value)| Some((*key, Value::from(value.as_deref()?))))
        .chain(
            data.iter()
                .map(|(key, value)| (key.as_str(), value.clone())),
        )
        .map(|(key, value)| format!("{}:{value}", Value::from(key)))
        .collect();
    let fields = format!("{{{}}}", members.join(","));
    let time = event.timestamp.format(TIME_FORMAT).to_string();
    let parts = LineParts::new(&time, &event.level, target, &event.event, &fields);
    let level = level_style(&event.level);
    format!(
        "{DIM}{}{DIM:#} {level}{}{level:#} {BOLD}{}{BOLD:#}: {} {DIM}{}{DIM:#}",
        parts.time, parts.level, parts.target, parts.message, parts.json
    )
}

/// The event as one JSON object, every column, `data` as stored.
pub(crate) fn json_line(event: &Event) -> String {
    let columns = serde_json::json!({
        "id": event.id,
        "timestamp": event.timestamp.format(TIME_FORMAT).to_string(),
        "level": event.level,
        "event": event.event,
        "func": event.func,
        "scope": event.scope,
    })
    .to_string();
    // data's text as the server wrote it: numbers keep every digit.
    format!(
        "{},\"data\":{}}}",
        &columns[..columns.len() - 1],
        event.data
    )
}

/// Writes `text` to stdout, styled where colours are on; a closed stdout (`| head`) is
/// not an error worth a word.
pub(crate) fn out(text: &str) {
    use std::io::Write;
    let mut stdout = anstream::stdout();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// [`out`] with a newline.
pub(crate) fn line(text: &str) {
    out(&format!("{text}\n"));
}

/// `pglog: <message>` on stderr, the name in bold red on a terminal.
pub(crate) fn error(message: &str) {
    let style = Style::new().fg_color(Some(AnsiColor::Red.into())).bold();
    anstream::eprintln!("{style}pglog:{style:#} {message}");
}

/// `pglog: <message>` on stderr: something the operator should know, not a failure.
pub(crate) fn note(message: &str) {
    anstream::eprintln!("{DIM}pglog:{DIM:#} {message}");
}

/// Whether the output is a terminal and takes colours.
pub(crate) fn colours_on() -> bool {
    anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> Event {
        Event {
            id: 7,
            timestamp: DateTime::parse_from_rfc3339("2026-11-22T08:00:00.000001Z")
                .unwrap()
                .with_timezone(&Utc),
            level: "warning".into(),
            event: "disk\nfull \u{1b}[31m".into(),
            func: Some("check".into()),
            scope: None,
            data: data.into(),
        }
    }

    fn plain(styled: &str) -> String {
        anstream::adapter::strip_str(styled).to_string()
    }

    #[test]
    fn a_row_reads_as_pglogs_stderr_line() {
        let line = plain(&text_line(&event(
            r#"{"pid": 12, "code_module": "app::disk", "free": 0}"#,
        )));
        assert_eq!(
            line,
            "2026-11-22T08:00:00.000001Z WARNING app::disk: disk\\nfull \\u{1b}[31m \
             {\"func\":\"check\",\"code_module\":\"app::disk\",\"free\":0,\"pid\":12}"
        );
        // The target key wins over the module, as in the stderr line.
        let line = plain(&text_line(&event(
            r#"{"code_module": "m", "target": "t t"}"#,
        )));
        assert!(line.contains(" t\\u{20}t: "), "{line}");
        let line = plain(&text_line(&Event {
            func: None,
            ..event("{}")
        }));
        assert!(
            line.contains(" WARNING -: disk\\nfull \\u{1b}[31m {}"),
            "{line}"
        );
    }

    #[test]
    fn json_lines_carry_every_column_and_data_as_stored() {
        let line = json_line(&event(r#"{"big": 123456789012345678901234567890}"#));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["id"], 7);
        assert_eq!(value["level"], "warning");
        assert_eq!(value["event"], "disk\nfull \u{1b}[31m");
        assert_eq!(value["scope"], Value::Null);
        assert!(line.contains("123456789012345678901234567890"), "{line}");
        assert!(!line.contains('\n'));
    }
}
