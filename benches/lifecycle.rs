//! What partitioning costs and what it buys, plain table against `partition = day`, in
//! one run on one throwaway server:
//!
//! - insert throughput, blocking (1 thread) and batch mode, into each layout;
//! - removing one expired day of 1,000,000 rows (beside 1,000,000 kept rows): retention
//!   dropping its partition against retention's batched `DELETE` on the plain table,
//!   with the time, the table's size afterwards, and the slowest log call made by a
//!   writer meanwhile;
//! - three queries an operator runs on 10,000,000 rows spread over 30 days: the last
//!   hour's errors, the last day's events with a `data` key/value, the count per level
//!   per hour for a week; with the partitions each plan reads.
//!
//! - `pglog tail` on the same tables, with the plans its queries get (with the `cli`
//!   feature).
//!
//! `cargo bench --bench lifecycle --features cli` measures and writes
//! `benches/LIFECYCLE.md`;
//! `PGLOG_BENCH_SCALE` (default 1) scales every row count, `PGLOG_BENCH_RUNS` (default 9)
//! the rounds. Under `cargo test` a smoke pass with small tables checks that every part
//! still works.

#[path = "common/mod.rs"]
mod common;
#[path = "compare/references.rs"]
#[allow(dead_code)] // only pgbench is used here
mod references;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveTime, Utc};
use common::*;
use pglog::Partition;

fn main() {
    open_levels();
    let server = server();
    let dsn = server.create_database("bench").unwrap();
    let mut md = String::from("# pglog: plain table against day partitions\n\n");
    let load_before = load_average();

    // `PGLOG_BENCH_ONLY=inserts` (or removal, queries): that part alone, printed, no file.
    let only = std::env::var("PGLOG_BENCH_ONLY").ok();
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let data = ReferenceData::read(&dsn);
    let inserts = if part("inserts") {
        inserts(&server, &dsn, &data)
    } else {
        String::new()
    };
    let removal = if part("removal") {
        removal(&dsn)
    } else {
        String::new()
    };
    let queries = if part("queries") {
        queries(&dsn)
    } else {
        String::new()
    };

    let _ = writeln!(
        md,
        "- Date: {} UTC. Server: {}, a throwaway cluster (settings as in RESULTS.md: fsync \
         off, autovacuum off). Machine: shared 2-core VM; load average before {load_before}, \
         after {}. Every figure is the median of the rounds given; a round runs each side \
         once, seconds apart, alternating which goes first.\n",
        Utc::now().format("%Y-%m-%d %H:%M"),
        server.psql("bench", "SHOW server_version").unwrap().trim(),
        load_average(),
    );
    md.push_str(&inserts);
    md.push_str(&removal);
    md.push_str(&queries);
    if !measuring() || only.is_some() {
        println!("smoke pass with small tables, one round: not a measurement\n\n{md}");
        return;
    }
    println!("\n{md}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/LIFECYCLE.md");
    std::fs::write(path, md).unwrap_or_else(|e| panic!("write {path}: {e}"));
    println!("wrote {path}");
}

/// A full-size row count, scaled by `PGLOG_BENCH_SCALE`; `smoke` under `cargo test`.
fn rows(full: u64, smoke: u64) -> u64 {
    if !measuring() {
        return smoke;
    }
    let scale: f64 = std::env::var("PGLOG_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0);
    ((full as f64 * scale) as u64).max(1_000)
}

fn builder(dsn: &str, table: &str, partition: Partition) -> pglog::Builder {
    pglog::Builder::new()
        .dsn(dsn)
        .table(table)
        .partition(partition)
        .require_database(true)
}

// ---------------------------------------------------------------------------------------
// Insert throughput

fn inserts(server: &throwaway_pg::Server, dsn: &str, data: &ReferenceData) -> String {
    let blocking_n = rows(20_000, 200);
    let batch_n = rows(100_000, 1_000);
    // pgbench's prepared INSERT of the same rows into each layout: what the server itself
    // pays for routing a row to its partition, without pglog.
    let pgbench = |table: &str, partition: Partition| {
        drop(builder(dsn, table, partition).build().unwrap());
        references::pgbench_insert(server, dsn, table, data, blocking_n, 1)
    };
    let results = rounds(vec![
        Box::new(|run| blocking(dsn, &format!("bp_{run}"), Partition::None, blocking_n)),
        Box::new(|run| blocking(dsn, &format!("bd_{run}"), Partition::Day, blocking_n)),
        Box::new(|run| batch(dsn, &format!("cp_{run}"), Partition::None, batch_n)),
        Box::new(|run| batch(dsn, &format!("cd_{run}"), Partition::Day, batch_n)),
        Box::new(|run| pgbench(&format!("gp_{run}"), Partition::None)),
        Box::new(|run| pgbench(&format!("gd_{run}"), Partition::Day)),
    ]);
    let mut md = format!(
        "## Insert throughput\n\n\
         Blocking mode, 1 thread, {} events per run; batch mode (defaults: batch 1,000, COPY), \
         {} events per run, timed from `build()` to the guard's drop having committed the \
         last one. {} rounds.\n\n\
         | mode | plain, events/s | partitioned (day), events/s | ratio | target |\n\
         |---|--:|--:|--:|---|\n",
        thousands(blocking_n as f64),
        thousands(batch_n as f64),
        runs()
    );
    for (mode, plain, day) in [
        ("pglog blocking", &results[0], &results[1]),
        ("pglog batch", &results[2], &results[3]),
        (
            "pgbench -M prepared, 1 client (reference)",
            &results[4],
            &results[5],
        ),
    ] {
        let (ratio, spread) = paired(day, plain);
        let _ = writeln!(
            md,
            "| {mode} | {:.0} | {:.0} | {ratio:.2} ({spread}) | {} |",
            median(plain),
            median(day),
            match (mode.starts_with("pglog"), ratio >= 0.95) {
                (false, _) => "",
                (true, true) => "≥ 0.95×: met",
                (true, false) => "≥ 0.95×: **missed**",
            }
        );
    }
    md.push('\n');
    md
}

fn blocking(dsn: &str, table: &str, partition: Partition, n: u64) -> f64 {
    let (logger, guard) = builder(dsn, table, partition).build().unwrap();
    let started = Instant::now();
    for i in 0..n {
        log_event(&logger, i);
    }
    let elapsed = started.elapsed();
    assert_eq!(guard.stats().written, n, "{:?}", guard.stats());
    n as f64 / elapsed.as_secs_f64()
}

fn batch(dsn: &str, table: &str, partition: Partition, n: u64) -> f64 {
    drop(builder(dsn, table, partition).build().unwrap());
    let started = Instant::now();
    let (logger, guard) = builder(dsn, table, partition).batch().build().unwrap();
    for i in 0..n {
        log_event(&logger, i);
    }
    drop(guard);
    let elapsed = started.elapsed();
    assert_eq!(logger.stats().written, n, "{:?}", logger.stats());
    n as f64 / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// Removing one expired day

struct Removal {
    seconds: f64,
    passes: u32,
    before: i64,
    after: i64,
    vacuumed: Option<i64>,
    slowest_call: Duration,
    calls: u64,
}

fn removal(dsn: &str) -> String {
    let n = rows(1_000_000, 10_000);
    let rounds_wanted = runs().min(3);
    let mut plain = Vec::new();
    let mut day = Vec::new();
    for run in 0..rounds_wanted {
        for k in 0..2 {
            match (run + k) % 2 {
                0 => plain.push(remove_one_day(
                    dsn,
                    &format!("rp_{run}"),
                    Partition::None,
                    n,
                )),
                _ => day.push(remove_one_day(dsn, &format!("rd_{run}"), Partition::Day, n)),
            }
        }
    }
    let seconds = |r: &[Removal]| r.iter().map(|r| r.seconds).collect::<Vec<_>>();
    let mut md = format!(
        "## Removing one expired day\n\n\
         The table holds {rows} rows on the day ten days ago and {rows} rows today; a logger \
         with `retention_days = 7` runs maintenance passes until the old day is gone, \
         while another logger writes one event every 10 ms into the same table. {} rounds.\n\n\
         | layout | how | time | passes | size before | size after | after VACUUM | slowest log call meanwhile |\n\
         |---|---|--:|--:|--:|--:|--:|--:|\n",
        rounds_wanted,
        rows = thousands(n as f64)
    );
    for (name, how, results) in [
        ("plain", "batched DELETE (5,000 rows, 100 ms apart)", &plain),
        ("partitioned (day)", "DROP TABLE of its partition", &day),
    ] {
        let mid = &results[results.len() / 2];
        let _ = writeln!(
            md,
            "| {name} | {how} | {} | {} | {} | {} | {} | {:.1?} ({} calls) |",
            duration(median(&seconds(results))),
            mid.passes,
            megabytes(mid.before),
            megabytes(mid.after),
            mid.vacuumed
                .map_or_else(|| "(nothing to reclaim)".to_owned(), megabytes),
            results.iter().map(|r| r.slowest_call).max().unwrap(),
            mid.calls,
        );
    }
    let ratio = median(&seconds(&plain)) / median(&seconds(&day));
    let _ = writeln!(
        md,
        "\nDropping the partition is {ratio:.0}× faster, and gives the space back at once; \
         the plain table keeps its size (the deleted rows' space is reused by later rows once \
         vacuumed, not returned). Each DELETE batch is its own short transaction, so writers \
         are never held up by it; a pass stops after its 60 s budget and the next one, a \
         minute later, goes on (passes here follow each other at once).\n"
    );
    md
}

fn remove_one_day(dsn: &str, table: &str, partition: Partition, n: u64) -> Removal {
    drop(builder(dsn, table, partition).build().unwrap());
    let today = Utc::now().date_naive();
    let old = today - Days::new(10);
    let mut client = connect(dsn);
    if partition == Partition::Day {
        create_day_partitions(&mut client, table, old, old);
    }
    load(
        &mut client,
        table,
        midnight(old),
        Duration::from_secs(86_400),
        n,
    );
    let start_of_today = midnight(today);
    let so_far = (Utc::now() - start_of_today).to_std().unwrap();
    load(&mut client, table, start_of_today, so_far, n);
    client
        .batch_execute(&format!("VACUUM ANALYZE \"{table}\""))
        .unwrap();
    let before = table_size(&mut client, table);

    let (writer, writer_guard) = builder(dsn, table, partition).build().unwrap();
    let started = Instant::now();
    let (_, guard) = builder(dsn, table, partition).retention(7).build().unwrap();
    let expired = |client: &mut postgres::Client| -> i64 {
        client
            .query_one(
                &format!("SELECT count(*) FROM \"{table}\" WHERE timestamp < $1"),
                &[&midnight(today - Days::new(7))],
            )
            .unwrap()
            .get(0)
    };
    let done = AtomicBool::new(false);
    let (passes, slowest_call, calls) = std::thread::scope(|s| {
        let writing = s.spawn(|| {
            let (mut slowest, mut calls) = (Duration::ZERO, 0u64);
            while !done.load(Ordering::Acquire) {
                let call = Instant::now();
                log_event(&writer, calls);
                slowest = slowest.max(call.elapsed());
                calls += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (slowest, calls)
        });
        let mut passes = 0;
        let mut check = connect(dsn);
        while expired(&mut check) > 0 {
            let _ = guard.__maintain_now();
            passes += 1;
            assert!(passes < 1_000, "retention makes no progress on {table}");
        }
        done.store(true, Ordering::Release);
        let (slowest, calls) = writing.join().unwrap();
        (passes, slowest, calls)
    });
    let seconds = started.elapsed().as_secs_f64();
    drop(guard);
    drop(writer_guard);
    assert_eq!(writer.stats().written, calls, "{:?}", writer.stats());
    let after = table_size(&mut client, table);
    let vacuumed = (partition == Partition::None).then(|| {
        client
            .batch_execute(&format!("VACUUM \"{table}\""))
            .unwrap();
        table_size(&mut client, table)
    });
    let kept: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .unwrap()
        .get(0);
    assert_eq!(kept as u64, n + calls, "only the old day goes");
    client
        .batch_execute(&format!("DROP TABLE \"{table}\""))
        .unwrap();
    Removal {
        seconds,
        passes,
        before,
        after,
        vacuumed,
        slowest_call,
        calls,
    }
}

// ---------------------------------------------------------------------------------------
// Operator queries

const QUERIES: [(&str, &str); 3] = [
    (
        "the last hour's errors",
        "SELECT * FROM {t} WHERE level = 'error' AND timestamp > now() - interval '1 hour' \
         ORDER BY timestamp DESC",
    ),
    (
        "the last day's events with user_id 42",
        "SELECT * FROM {t} WHERE data @> '{\"user_id\": 42}' \
         AND timestamp > now() - interval '1 day' ORDER BY timestamp DESC",
    ),
    (
        "count per level per hour, last 7 days",
        "SELECT date_trunc('hour', timestamp) AS hour, level, count(*) FROM {t} \
         WHERE timestamp > now() - interval '7 days' GROUP BY 1, 2 ORDER BY 1, 2",
    ),
];

fn queries(dsn: &str) -> String {
    let n = rows(10_000_000, 30_000);
    let mut client = connect(dsn);
    let today = Utc::now().date_naive();
    let from = Utc::now() - chrono::Duration::days(30);
    let mut loaded = Vec::new();
    for (table, partition) in [("q_plain", Partition::None), ("q_day", Partition::Day)] {
        drop(builder(dsn, table, partition).build().unwrap());
        if partition == Partition::Day {
            create_day_partitions(&mut client, table, from.date_naive(), today);
        }
        let started = Instant::now();
        load(
            &mut client,
            table,
            from,
            Duration::from_secs(30 * 86_400),
            n,
        );
        client
            .batch_execute(&format!("VACUUM ANALYZE \"{table}\""))
            .unwrap();
        loaded.push((table, started.elapsed(), table_size(&mut client, table)));
    }
    let mut md = format!(
        "## Operator queries\n\n\
         {} rows spread evenly over the last 30 days (2% error, 5% warning, 13% debug, the \
         rest info; `data` with pid, user_id out of 10,000, code_file, code_line), loaded \
         into a table pglog created (plain: {}; day partitions: {}), then `VACUUM ANALYZE`. \
         Each query once to warm the cache, then timed {} times; median.\n\n\
         | query | rows | plain | partitioned (day) | time ratio (partitioned / plain) | partitions read |\n\
         |---|--:|--:|--:|--:|---|\n",
        thousands(n as f64),
        megabytes(loaded[0].2),
        megabytes(loaded[1].2),
        runs()
    );
    let mut plans = String::new();
    for (what, sql) in QUERIES {
        let [plain, day] = ["q_plain", "q_day"].map(|t| sql.replace("{t}", &format!("\"{t}\"")));
        let found = client.query(&plain, &[]).unwrap().len();
        assert_eq!(found, client.query(&day, &[]).unwrap().len(), "{what}");
        let times = rounds(vec![
            Box::new(|_| timed(dsn, &plain)),
            Box::new(|_| timed(dsn, &day)),
        ]);
        let day_plan = explain(&mut client, &day);
        let read = day_plan
            .lines()
            .filter(|l| {
                (l.contains(" on q_day_p") || l.contains(" on q_day_default"))
                    && !l.contains("Bitmap Index Scan")
            })
            .count();
        let removed = day_plan
            .lines()
            .find_map(|l| l.trim().strip_prefix("Subplans Removed: "))
            .unwrap_or("0")
            .to_owned();
        let (ratio, spread) = paired(&times[1], &times[0]);
        let _ = writeln!(
            md,
            "| {what} | {found} | {} | {} | {ratio:.2} ({spread}) | {read} scanned, {removed} pruned |",
            duration(median(&times[0])),
            duration(median(&times[1])),
        );
        let _ = write!(
            plans,
            "\n### {what}\n\n```sql\n{plain}\n```\n\nPlain:\n\n```\n{}```\n\nPartitioned:\n\n```\n{day_plan}```\n",
            explain(&mut client, &plain)
        );
    }
    md.push_str(&tail_commands(dsn));
    let _ = writeln!(
        md,
        "\nLoading took {:?} (plain) and {:?} (partitioned). Plans (`EXPLAIN (ANALYZE, \
         COSTS OFF, TIMING OFF)`): a partition left out at planning time does not appear; \
         one left out when the query starts (the bounds use `now()`) is counted in \
         `Subplans Removed`.\n{plans}",
        loaded[0].1, loaded[1].1
    );
    md
}

/// What an operator types first, against the same tables.
const TAILS: [&[&str]; 3] = [
    &["tail", "-n", "20"],
    &["tail", "--level", "error", "--since", "1h"],
    &["tail", "--where", "user_id=42", "--since", "1d"],
];

/// The `pglog` command's `tail` on both tables, timed as a user waits for it: from
/// starting the process to its exit (configuration, connect, query, printing). Needs the
/// command, built with the `cli` feature.
fn tail_commands(dsn: &str) -> String {
    // Cargo names the binary even when its required feature is off (and does not build it).
    let Some(pglog) = option_env!("CARGO_BIN_EXE_pglog").filter(|_| cfg!(feature = "cli")) else {
        return "\n`pglog tail` not timed: the command needs the `cli` feature \
                (`cargo bench --bench lifecycle --features cli`).\n"
            .to_owned();
    };
    let run = |table: &str, args: &[&str], explain: bool| {
        let mut cmd = std::process::Command::new(pglog);
        cmd.args(args).args(["--dsn", dsn, "--table", table]);
        if explain {
            cmd.arg("--explain");
        }
        let started = Instant::now();
        let out = cmd.output().expect("run pglog");
        let seconds = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "pglog {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (seconds, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut md = format!(
        "\n### `pglog tail` on these tables\n\n\
         From starting the command to its exit (reading the configuration, connecting, the \
         query, printing), median of {} runs; target: under 100 ms.\n\n\
         | command | lines | plain | partitioned (day) | target |\n|---|--:|--:|--:|---|\n",
        runs()
    );
    let mut plans = String::new();
    for args in TAILS {
        let lines = run("q_plain", args, false).1.lines().count();
        let times = rounds(vec![
            Box::new(|_| run("q_plain", args, false).0),
            Box::new(|_| run("q_day", args, false).0),
        ]);
        let (plain, day) = (median(&times[0]), median(&times[1]));
        let _ = writeln!(
            md,
            "| `pglog {}` | {lines} | {} | {} | < 100 ms: {} |",
            args.join(" "),
            duration(plain),
            duration(day),
            if plain.max(day) < 0.1 {
                "met"
            } else {
                "**missed**"
            }
        );
        let _ = write!(
            plans,
            "\n`pglog {} --explain`, plain:\n\n```\n{}```\n\npartitioned:\n\n```\n{}```\n",
            args.join(" "),
            run("q_plain", args, true).1,
            run("q_day", args, true).1
        );
    }
    md.push_str(&plans);
    md
}

/// Seconds one run of `sql` takes on a fresh session (the pool of an operator's psql).
fn timed(dsn: &str, sql: &str) -> f64 {
    let mut client = connect(dsn);
    client.query(sql, &[]).unwrap();
    let started = Instant::now();
    client.query(sql, &[]).unwrap();
    started.elapsed().as_secs_f64()
}

fn explain(client: &mut postgres::Client, sql: &str) -> String {
    client
        .query(
            &format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0) + "\n")
        .collect()
}

// ---------------------------------------------------------------------------------------
// Loading rows

fn connect(dsn: &str) -> postgres::Client {
    postgres::Client::connect(dsn, postgres::NoTls).unwrap()
}

fn midnight(day: chrono::NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// Day partitions named as pglog names them, for days a program that ran back then would
/// have created: `first..=last`, those that do not exist yet.
fn create_day_partitions(
    client: &mut postgres::Client,
    table: &str,
    first: chrono::NaiveDate,
    last: chrono::NaiveDate,
) {
    for day in first.iter_days().take_while(|d| *d <= last) {
        let next = day + Days::new(1);
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS \"{table}_p{}\" PARTITION OF \"{table}\" \
                 FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
                day.format("%Y%m%d")
            ))
            .unwrap();
    }
}

/// `n` rows spread evenly over `span` from `from`. Its secondary indexes are dropped
/// during the load and built again after, with their own definitions (names included):
/// a bulk build is several times faster than maintaining them row by row.
fn load(client: &mut postgres::Client, table: &str, from: DateTime<Utc>, span: Duration, n: u64) {
    let indexes: Vec<(String, String)> = client
        .query(
            "SELECT indexname, indexdef FROM pg_indexes i \
             JOIN pg_index x ON x.indexrelid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass \
             WHERE i.tablename = $1 AND NOT x.indisprimary",
            &[&table],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, _) in &indexes {
        client
            .batch_execute(&format!("DROP INDEX \"{name}\""))
            .unwrap();
    }
    let chunk = 1_000_000;
    let mut first = 0;
    while first < n {
        let last = (first + chunk).min(n);
        client
            .execute(
                &format!(
                    "INSERT INTO \"{table}\" (timestamp, level, event, func, scope, data) \
                     SELECT $1::timestamptz + ($2::float8 * i / $3::float8) * interval '1 second', \
                            CASE WHEN i % 100 < 2 THEN 'error' WHEN i % 100 < 7 THEN 'warning' \
                                 WHEN i % 100 < 20 THEN 'debug' ELSE 'info' END, \
                            'event number ' || (i % 200), 'app::handler_' || (i % 20), 'app', \
                            jsonb_build_object('pid', 1000 + i % 7, 'user_id', i % 10000, \
                                               'code_file', 'src/handler.rs', 'code_line', i % 500) \
                     FROM generate_series($4::int8, $5::int8 - 1) AS i"
                ),
                &[
                    &from,
                    &span.as_secs_f64(),
                    &(n as f64),
                    &(first as i64),
                    &(last as i64),
                ],
            )
            .unwrap();
        first = last;
    }
    client
        .batch_execute("SET maintenance_work_mem = '1GB'")
        .unwrap();
    for (_, definition) in &indexes {
        // A partitioned table's index reads `ON ONLY`, which would build it on the parent
        // alone: built on every partition, as pglog's DDL does.
        client
            .batch_execute(&definition.replacen(" ON ONLY ", " ON ", 1))
            .unwrap();
    }
    // Every partition has its four indexes again, valid.
    let (partitions, indexes_seen): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT count(*), coalesce(sum((SELECT count(*) FROM pg_index i \
                   WHERE i.indrelid = t.relid AND i.indisvalid AND NOT i.indisprimary)), 0)::int8 \
                 FROM pg_partition_tree($1::text::regclass) t WHERE t.isleaf",
                &[&format!("\"{table}\"")],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        indexes_seen,
        partitions * indexes.len() as i64,
        "{table}: an index missing"
    );
}

/// The table's size with its indexes and TOAST, partitions included.
fn table_size(client: &mut postgres::Client, table: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) \
             FROM pg_partition_tree($1::text::regclass)), pg_total_relation_size($1::text::regclass))::int8",
            &[&format!("\"{table}\"")],
        )
        .unwrap()
        .get(0)
}

// ---------------------------------------------------------------------------------------
// Figures

/// The median of the paired ratios, and their range.
fn paired(ours: &[f64], theirs: &[f64]) -> (f64, String) {
    let ratios = ratios(ours, theirs);
    (median(&ratios), range(&ratios, |v| format!("{v:.2}")))
}

fn duration(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{seconds:.1} s")
    }
}

fn megabytes(bytes: i64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}
