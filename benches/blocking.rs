//! Blocking mode, one thread, against `pgbench -M prepared` running the same single-row
//! INSERT into an identical table (same indexes, same server, same run).
//!
//! `cargo bench --bench blocking`; a smoke pass under `cargo test`.
//! `PGLOG_BENCH_EVENTS` changes the number of events per run.

mod common;

use std::io::Write;
use std::time::Instant;

use common::*;

fn main() {
    open_levels();
    let events = events(20_000, 200);
    let server = server();
    let dsn = server
        .create_database("bench")
        .expect("create the bench database");
    let (ours, reference) = side_by_side(
        |run| pglog_blocking(&dsn, &format!("pglog_{run}"), events),
        |run| pgbench_insert(&server, &dsn, &format!("ref_{run}"), events),
    );
    if !measuring() {
        println!("smoke pass ({events} events each way): not a measurement; run `cargo bench --bench blocking`");
        return;
    }
    print_table(
        &format!(
            "blocking mode, 1 thread, {events} events, median of {} runs",
            runs()
        ),
        &[
            (
                "pgbench -M prepared single-row INSERT (reference)",
                reference,
                reference,
            ),
            ("pglog blocking", ours, reference),
        ],
    );
}

fn pglog_blocking(dsn: &str, table: &str, events: u64) -> f64 {
    let (logger, guard) = pglog::Builder::new().dsn(dsn).table(table).build().unwrap();
    let started = Instant::now();
    for i in 0..events {
        log_event(&logger, i);
    }
    let elapsed = started.elapsed();
    let stats = guard.stats();
    assert_eq!(
        stats.written, events,
        "every event must be a row: {stats:?}"
    );
    events as f64 / elapsed.as_secs_f64()
}

/// The reference: the row pglog writes (same columns, a JSON object of the same shape,
/// a distinct `i` each time), one prepared INSERT per transaction.
fn pgbench_insert(server: &throwaway_pg::Server, dsn: &str, table: &str, events: u64) -> f64 {
    create_table(dsn, table);
    let script =
        std::env::temp_dir().join(format!("pglog-bench-{}-{table}.sql", std::process::id()));
    let data = reference_data(0).replace("\"i\": 0", "\"i\": ' || :i || '");
    let sql = format!(
        "\\set i random(1, 1000000000)\n\
         INSERT INTO \"{table}\" (\"timestamp\", \"level\", \"event\", \"func\", \"scope\", \"data\") \
         VALUES (now(), 'info', 'benchmark event', NULL, NULL, ('{data}')::jsonb);\n"
    );
    std::fs::File::create(&script)
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let transactions = events.to_string();
    let script_arg = script.display().to_string();
    let stdout = run_pg_tool(
        server,
        "pgbench",
        &[
            "-n",
            "-M",
            "prepared",
            "-c",
            "1",
            "-t",
            &transactions,
            "-f",
            &script_arg,
            "bench",
        ],
    );
    let _ = std::fs::remove_file(&script);
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no tps in pgbench output: {stdout}"))
}
