//! `pglog replay`: events pglog wrote to stderr (an outage, a refused row), read back
//! from a capture (systemd's journal, cron mail, a redirect) into the table, with their
//! own timestamps, levels, messages and key-values.
//!
//! A stderr line holds everything the row would have held (see `fallback`), so the row
//! replayed is the row the table would have had. Replaying is idempotent: an event is
//! inserted only when the table holds fewer copies of it (same timestamp, level, message,
//! `func`, `scope` and `data`) than the files do. So a second replay adds nothing, and
//! an event pglog also sent to stderr because it could not know whether its write
//! committed (`pglog_outcome: unknown`) is inserted only if it did not.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Type;

use super::{Context, Failure, Param};
use crate::fallback::{read_line, Line};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Files holding pglog's stderr lines; - reads standard input
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Count what would be inserted, and insert nothing
    #[arg(long)]
    dry_run: bool,
}

/// Rows per statement.
const CHUNK: usize = 1_000;

/// One event read back, as its row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Replayed {
    timestamp: DateTime<Utc>,
    level: String,
    event: String,
    /// The line's key-values: `func`, `scope` and `data`'s keys, as JSON text.
    fields: String,
}

/// What reading the files found.
#[derive(Debug, Default)]
struct Capture {
    events: Vec<(Replayed, i64)>,
    lines: u64,
    skipped: u64,
}

pub(crate) fn run(context: &Context, args: &Args) -> Result<(), Failure> {
    let mut read = Capture::default();
    // Per event, in the order first read: its copies on plain lines, and on lines that
    // say its write's outcome was unknown (which repeat an echoed line, or stand alone).
    let mut order: Vec<Replayed> = Vec::new();
    let mut copies: HashMap<Replayed, (i64, i64)> = HashMap::new();
    for path in &args.files {
        let input: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(
                std::fs::File::open(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            )
        };
        let mut input = BufReader::new(input);
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            let n = input
                .read_until(b'\n', &mut bytes)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            read.lines += 1;
            let text = String::from_utf8_lossy(&bytes);
            let Some((event, unknown)) = event_in(text.trim_end_matches(['\n', '\r'])) else {
                read.skipped += 1;
                continue;
            };
            let seen = copies.entry(event.clone()).or_insert_with(|| {
                order.push(event);
                (0, 0)
            });
            if unknown {
                seen.1 += 1;
            } else {
                seen.0 += 1;
            }
        }
    }
    // The k-th copy of an event is inserted only when the table holds fewer than k.
    for event in order {
        let (plain, unknown) = copies[&event];
        for nth in 1..=plain.max(unknown) {
            read.events.push((event.clone(), nth));
        }
    }
    let table = context.table()?.quoted();
    let mut db = context.connect()?;
    let sql = statement(&table, args.dry_run);
    let mut added = 0i64;
    for chunk in read.events.chunks(CHUNK) {
        let timestamps: Vec<DateTime<Utc>> = chunk.iter().map(|(e, _)| e.timestamp).collect();
        let levels: Vec<&str> = chunk.iter().map(|(e, _)| e.level.as_str()).collect();
        let events: Vec<&str> = chunk.iter().map(|(e, _)| e.event.as_str()).collect();
        let fields: Vec<&str> = chunk.iter().map(|(e, _)| e.fields.as_str()).collect();
        let copy: Vec<i64> = chunk.iter().map(|(_, k)| *k).collect();
        let params: [Param<'_>; 5] = [
            (&timestamps, Type::TIMESTAMPTZ_ARRAY),
            (&levels, Type::TEXT_ARRAY),
            (&events, Type::TEXT_ARRAY),
            (&fields, Type::TEXT_ARRAY),
            (&copy, Type::INT8_ARRAY),
        ];
        let rows = db.query(&sql, &params).map_err(|e| {
            format!(
                "cannot {} {table} (after {added} events): {e}",
                if args.dry_run { "read" } else { "insert into" }
            )
        })?;
        added += rows.first().map_or(0, |r| r.get::<_, i64>(0));
    }
    let events = read.events.len() as i64;
    super::show::line(&format!(
        "{} lines read: {events} pglog events, {} other lines skipped; {added} {}, {} already in {table}",
        read.lines,
        read.skipped,
        if args.dry_run { "would be inserted" } else { "inserted" },
        events - added,
    ));
    Ok(())
}

/// The statement that inserts (or, for a dry run, counts) the events of one chunk that
/// the table lacks.
fn statement(table: &str, dry_run: bool) -> String {
    let wanted = format!(
        "WITH read AS ( \
           SELECT ts, level, event, f ->> 'func' AS func, f ->> 'scope' AS scope, \
                  f - 'func' - 'scope' - 'pglog_outcome' AS data, nth \
           FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
                AS u(ts, level, event, fields, nth), \
                LATERAL (SELECT fields::jsonb AS f) parsed), \
         missing AS ( \
           SELECT * FROM read WHERE nth > (SELECT count(*) FROM {table} t \
             WHERE t.timestamp = read.ts AND t.level = read.level AND t.event = read.event \
               AND t.func IS NOT DISTINCT FROM read.func \
               AND t.scope IS NOT DISTINCT FROM read.scope AND t.data::jsonb = read.data))"
    );
    if dry_run {
        format!("{wanted} SELECT count(*) FROM missing")
    } else {
        format!(
            "{wanted}, inserted AS (INSERT INTO {table} (timestamp, level, event, func, scope, data) \
             SELECT ts, level, event, func, scope, data FROM missing RETURNING 1) \
             SELECT count(*) FROM inserted"
        )
    }
}

/// The pglog event in `text`: the whole line, or what follows a prefix (the journal's
/// `Nov 22 08:00:00 host tool[123]: `, a syslog priority `<4>`, a timestamp a redirect
/// added); and whether the line says its write's outcome was unknown.
fn event_in(text: &str) -> Option<(Replayed, bool)> {
    text.char_indices()
        .filter(|&(i, _)| looks_like_time(&text[i..]))
        .find_map(|(i, _)| read_line(&text[i..]).and_then(replayed))
}

/// What an event line of unknown outcome ends with (see `fallback::uncertain_event`).
const UNKNOWN: &str = ",\"pglog_outcome\":\"unknown\"}";

/// Whether `text` starts with the time a pglog line starts with:
/// `2026-11-22T08:00:00.000000Z `.
fn looks_like_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() > 28
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[26] == b'Z'
        && bytes[27] == b' '
        && bytes[..4].iter().all(u8::is_ascii_digit)
}

fn replayed(mut line: Line) -> Option<(Replayed, bool)> {
    let unknown = line.json.ends_with(UNKNOWN);
    if unknown {
        line.json.truncate(line.json.len() - UNKNOWN.len());
        line.json.push('}');
    }
    let timestamp = DateTime::parse_from_rfc3339(&line.timestamp)
        .ok()?
        .with_timezone(&Utc);
    let level = line.level.to_lowercase();
    if level.is_empty() || !level.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let mut event = line.message;
    // The line shows an error's chain after the message (`fallback::format_event`).
    if let Some(traceback) = traceback_in(&line.json) {
        let chain = crate::exception::chain_suffix(&traceback);
        if event.ends_with(&chain) {
            event.truncate(event.len() - chain.len());
        }
    }
    Some((
        Replayed {
            timestamp,
            level,
            event,
            fields: line.json,
        },
        unknown,
    ))
}

/// The `exception_traceback` among a line's key-values, if any.
fn traceback_in(json: &str) -> Option<String> {
    if !json.contains(crate::exception::TRACEBACK_KEY) {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(json).ok()? {
        serde_json::Value::Object(mut fields) => {
            match fields.remove(crate::exception::TRACEBACK_KEY)? {
                serde_json::Value::String(traceback) => Some(traceback),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "2026-11-22T08:00:00.000001Z WARNING app::disk: disk\\nfull \
                        {\"func\":\"check\",\"code_module\":\"app::disk\",\"pid\":12}";

    #[test]
    fn an_event_line_is_read_whole_or_after_a_prefix() {
        let whole = event_in(LINE).unwrap();
        assert!(!whole.1);
        let marked = LINE.replace("12}", "12,\"pglog_outcome\":\"unknown\"}");
        assert_eq!(event_in(&marked), Some((whole.0.clone(), true)));
        assert_eq!(whole.0.level, "warning");
        assert_eq!(whole.0.event, "disk\nfull");
        assert_eq!(
            whole.0.timestamp.to_rfc3339(),
            "2026-11-22T08:00:00.000001+00:00"
        );
        for prefix in [
            "Nov 22 08:00:00 host tool[123]: ",
            "<4>",
            "2026-11-22 08:00:00 cron: x: y ",
        ] {
            let text = format!("{prefix}{LINE}");
            assert_eq!(event_in(&text).as_ref(), Some(&whole), "{text}");
        }
    }

    #[test]
    fn an_errors_chain_is_taken_off_the_message() {
        let line = "2026-11-22T08:00:00.000001Z ERROR app: cannot start: loading: no file \
                    {\"exception_traceback\":\"loading\\ncaused by: no file\"}";
        assert_eq!(event_in(line).unwrap().0.event, "cannot start");
        // Only the chain the traceback spells is taken off.
        let other = line.replace("no file {", "no disk {");
        assert_eq!(
            event_in(&other).unwrap().0.event,
            "cannot start: loading: no disk"
        );
    }

    #[test]
    fn other_lines_are_not_events() {
        for text in [
            "",
            "pglog: cannot connect to app@db:5432/ops: connection refused; events go to stderr",
            "thread 'main' panicked at src/main.rs:3:5",
            "2026-11-22T08:00:00.000001Z INFO x: no json",
            "2026-11-22T08:00:00.000001Z INFO x: broken {\"a\":",
            "2026-13-22T08:00:00.000001Z INFO x: bad month {}",
            "2026-11-22T08:00:00.000001Z IN;FO x: odd level {}",
        ] {
            assert_eq!(event_in(text), None, "{text}");
        }
    }

    #[test]
    fn the_statements_insert_only_missing_copies() {
        let insert = statement("\"t\"", false);
        assert!(insert.contains("nth > (SELECT count(*) FROM \"t\" t"));
        assert!(insert.contains("INSERT INTO \"t\""));
        let count = statement("\"t\"", true);
        assert!(!count.contains("INSERT"));
    }
}
