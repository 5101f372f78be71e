//! `pglog tail`: the newest events, oldest first, and with `-f` every new one as it is
//! stored.
//!
//! Following reads by `id`, never the table again: each poll asks for the rows above the
//! highest id seen, plus the ids still missing below it. Ids come from a sequence when a
//! row is inserted, and a row becomes visible when its transaction commits, so a batch
//! writer's rows may appear after rows with higher ids: an id skipped over is asked for
//! again for [`GAP_WAIT`], long enough for any write pglog makes to commit or fail. The
//! poll returns every new id, matching or not (a bare id for those the filters reject),
//! so that only true gaps are remembered.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_postgres::types::Type;

use super::filter::{FilterArgs, Filters};
use super::show::{self, Event, EVENT_COLUMNS};
use super::{Context, Db, Failure, Param};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// How many of the newest events to show
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(i64).range(0..=1_000_000))]
    lines: i64,
    /// Keep showing new events as they are stored (Ctrl-C ends)
    #[arg(short, long)]
    follow: bool,
    /// text: pglog's readable line; json: one object per line with every column
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Print how the server runs the query (EXPLAIN ANALYZE: indexes, partitions read,
    /// time), instead of the events
    #[arg(long)]
    explain: bool,
    #[command(flatten)]
    filters: FilterArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Text,
    Json,
}

/// How often `--follow` asks for new rows.
const POLL: Duration = Duration::from_millis(250);
/// How long an id skipped over is asked for again.
const GAP_WAIT: Duration = Duration::from_secs(30);
/// The most ids remembered as missing; the oldest go first.
const MOST_GAPS: usize = 100_000;
/// The most rows one poll reads; more follow at once.
const POLL_ROWS: i64 = 10_000;
/// How often a follow that hears nothing checks that the table was not emptied.
const RESET_CHECK: Duration = Duration::from_secs(10);

pub(crate) fn run(context: &Context, args: &Args) -> Result<(), Failure> {
    let filters = args.filters.filters(Utc::now())?;
    let table = context.table()?.quoted();
    let mut db = context.connect()?;
    let mut out = Printer::new(args.output);
    let top = highest_id(&mut db, &table)?;
    let (conditions, mut params) = filters.sql(3);
    let sql = format!(
        "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM {table} WHERE id <= $2 AND {conditions} \
         ORDER BY timestamp DESC LIMIT $1) newest ORDER BY timestamp, id"
    );
    let mut all: Vec<Param<'_>> = vec![(&args.lines, Type::INT8), (&top, Type::INT8)];
    all.append(&mut params);
    if args.explain {
        let plan = db
            .query(
                &format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}"),
                &all,
            )
            .map_err(|e| format!("cannot read {table}: {e}"))?;
        for row in &plan {
            show::line(&row.get::<_, String>(0));
        }
        return Ok(());
    }
    let rows = db
        .query(&sql, &all)
        .map_err(|e| format!("cannot read {table}: {e}"))?;
    for row in &rows {
        if !out.print(&Event::from_row(row, 0)) {
            return Ok(());
        }
    }
    if args.follow {
        follow(context, db, &table, &filters, top, &mut out)?;
    }
    Ok(())
}

fn highest_id(db: &mut Db, table: &str) -> Result<i64, Failure> {
    let rows = db
        .query(&format!("SELECT coalesce(max(id), 0) FROM {table}"), &[])
        .map_err(|e| format!("cannot read {table}: {e}"))?;
    Ok(rows.first().map_or(0, |r| r.get(0)))
}

/// Prints events as text or JSON lines; `false` once stdout is closed (`| head`).
struct Printer {
    output: Output,
    stdout: anstream::AutoStream<std::io::Stdout>,
}

impl Printer {
    fn new(output: Output) -> Printer {
        Printer {
            output,
            stdout: anstream::stdout(),
        }
    }

    fn print(&mut self, event: &Event) -> bool {
        let line = match self.output {
            Output::Text => show::text_line(event),
            Output::Json => show::json_line(event),
        };
        writeln!(self.stdout, "{line}").is_ok()
    }

    fn flush(&mut self) -> bool {
        self.stdout.flush().is_ok()
    }
}

/// Ids skipped over, with when each was first missed.
#[derive(Debug, Default)]
struct Gaps {
    missing: BTreeMap<i64, Instant>,
}

impl Gaps {
    /// Takes a poll's ids (ascending) above `highest`; returns the new highest.
    fn saw(&mut self, ids: &[i64], mut highest: i64, now: Instant) -> i64 {
        for &id in ids {
            if id > highest {
                // A jump beyond what is remembered anyway is not walked through.
                for skipped in (highest + 1).max(id - MOST_GAPS as i64)..id {
                    self.missing.insert(skipped, now);
                }
                highest = id;
            } else {
                self.missing.remove(&id);
            }
        }
        self.missing
            .retain(|_, since| now.duration_since(*since) < GAP_WAIT);
        while self.missing.len() > MOST_GAPS {
            self.missing.pop_first();
        }
        highest
    }

    fn ids(&self) -> Vec<i64> {
        self.missing.keys().copied().collect()
    }
}

fn follow(
    context: &Context,
    mut db: Db,
    table: &str,
    filters: &Filters,
    mut highest: i64,
    out: &mut Printer,
) -> Result<(), Failure> {
    let (conditions, filter_params) = filters.sql(4);
    // Every new id; the columns only of rows the filters take.
    let sql = format!(
        "SELECT id, matched, {columns} FROM (SELECT *, ({conditions}) AS matched FROM {table} \
         WHERE id > $1 OR id = ANY($2) ORDER BY id LIMIT $3) new_rows",
        columns = EVENT_COLUMNS
            .split(", ")
            .map(|c| format!("CASE WHEN matched THEN {c} END"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut gaps = Gaps::default();
    let mut quiet_since = Instant::now();
    let mut lost = false;
    loop {
        if !out.flush() {
            return Ok(());
        }
        let missing = gaps.ids();
        let mut params: Vec<Param<'_>> = vec![
            (&highest, Type::INT8),
            (&missing, Type::INT8_ARRAY),
            (&POLL_ROWS, Type::INT8),
        ];
        params.extend(filter_params.iter().cloned());
        let rows = match db.query(&sql, &params) {
            Ok(rows) => rows,
            Err(e) if db.session.is_broken() => {
                show::note(&format!(
                    "lost the connection to {} ({e}); following on when it is back",
                    db.target()
                ));
                lost = true;
                db = reconnect(context);
                continue;
            }
            Err(e) => return Err(format!("cannot read {table}: {e}").into()),
        };
        if lost {
            show::note(&format!("reconnected to {}", db.target()));
            lost = false;
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        for row in rows
            .iter()
            .filter(|r| r.get::<_, Option<bool>>(1) == Some(true))
        {
            if !out.print(&Event::from_row(row, 2)) {
                return Ok(());
            }
        }
        highest = gaps.saw(&ids, highest, Instant::now());
        if rows.len() as i64 == POLL_ROWS {
            continue;
        }
        if rows.is_empty() && quiet_since.elapsed() >= RESET_CHECK {
            quiet_since = Instant::now();
            let top = highest_id(&mut db, table)?;
            if top < highest {
                show::note(&format!(
                    "{table} holds no id above {top} any more (emptied or recreated): \
                     following from there"
                ));
                highest = top;
                gaps = Gaps::default();
            }
        } else if !rows.is_empty() {
            quiet_since = Instant::now();
        }
        std::thread::sleep(POLL);
    }
}

/// A new session, once the server answers again; tries every second.
fn reconnect(context: &Context) -> Db {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Ok(db) = context.connect() {
            return db;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_skipped_over_are_asked_for_until_seen_or_too_old() {
        let start = Instant::now();
        let mut gaps = Gaps::default();
        assert_eq!(gaps.saw(&[11, 12, 15], 10, start), 15);
        assert_eq!(gaps.ids(), [13, 14]);
        // 14 commits late; 13 never does (a rollback).
        assert_eq!(gaps.saw(&[14, 16], 15, start), 16);
        assert_eq!(gaps.ids(), [13]);
        assert_eq!(gaps.saw(&[], 16, start + GAP_WAIT), 16);
        assert!(gaps.ids().is_empty());
    }

    #[test]
    fn the_missing_ids_remembered_are_bounded() {
        let mut gaps = Gaps::default();
        let now = Instant::now();
        gaps.saw(&[MOST_GAPS as i64 * 3], 0, now);
        assert_eq!(gaps.ids().len(), MOST_GAPS);
        assert_eq!(gaps.ids()[0], MOST_GAPS as i64 * 2);
    }
}
