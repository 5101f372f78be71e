//! Batch mode: the caller-side cost of a log call (percentiles over 100,000 calls), and
//! throughput against `psql \copy` loading the same rows into the same schema on the
//! same server, in the same run.
//!
//! `cargo bench --bench batch`; a smoke pass under `cargo test`.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

fn main() {
    open_levels();
    let server = server();
    let dsn = server.create_database("bench").unwrap();
    caller_cost(&dsn);
    throughput(&server, &dsn);
}

/// Every call timed on its own. The queue is made large enough never to fill, so this
/// is the cost of rendering and queueing, not of waiting for the database.
fn caller_cost(dsn: &str) {
    let calls = events(100_000, 2_000) as usize;
    let (logger, guard) = pglog::Builder::new()
        .dsn(dsn)
        .table("caller_cost")
        .batch()
        .queue_capacity(calls + 1)
        .build()
        .unwrap();
    let mut nanos = Vec::with_capacity(calls);
    for i in 0..calls as u64 {
        let started = Instant::now();
        log_event(&logger, i);
        nanos.push(started.elapsed().as_nanos() as u64);
    }
    drop(guard);
    assert_eq!(logger.stats().written, calls as u64, "{:?}", logger.stats());
    nanos.sort_unstable();
    let pct = |p: f64| Duration::from_nanos(nanos[((calls as f64 * p) as usize).min(calls - 1)]);
    if !measuring() {
        println!("smoke pass: caller cost measured over {calls} calls (not a measurement)");
        return;
    }
    println!(
        "\ncaller-side cost of a batch-mode log call ({calls} calls): median {:?}, p90 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        Duration::from_nanos(nanos[calls - 1])
    );
}

fn throughput(server: &throwaway_pg::Server, dsn: &str) {
    let n = events(100_000, 1_000);
    let (ours, reference) = side_by_side(
        |run| pglog_batch(dsn, &format!("batch_{run}"), n),
        |run| psql_copy(server, dsn, &format!("copy_{run}"), n),
    );
    if !measuring() {
        println!("smoke pass: {n} events through batch mode and psql \\copy (not a measurement)");
        return;
    }
    print_table(
        &format!("throughput, {n} events, median of {} runs", runs()),
        &[
            ("psql \\copy (reference)", reference, reference),
            ("pglog batch mode", ours, reference),
        ],
    );
}

/// From the first log call until the guard's drop has committed the last event.
fn pglog_batch(dsn: &str, table: &str, n: u64) -> f64 {
    create_table(dsn, table);
    let started = Instant::now();
    let (logger, guard) = pglog::Builder::new()
        .dsn(dsn)
        .table(table)
        .batch()
        .build()
        .unwrap();
    for i in 0..n {
        log_event(&logger, i);
    }
    drop(guard);
    let elapsed = started.elapsed();
    let stats = logger.stats();
    assert_eq!(stats.written, n, "every event must be a row: {stats:?}");
    n as f64 / elapsed.as_secs_f64()
}

/// The same rows as text COPY input, loaded by psql from a file.
fn psql_copy(server: &throwaway_pg::Server, dsn: &str, table: &str, n: u64) -> f64 {
    create_table(dsn, table);
    let path = std::env::temp_dir().join(format!("pglog-bench-{}-{table}.tsv", std::process::id()));
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        // The rows pglog writes: distinct times and `i`, the same keys and location.
        let start = chrono::Utc::now();
        for i in 0..n {
            let at = (start + chrono::Duration::microseconds(i as i64))
                .format("%Y-%m-%d %H:%M:%S%.6f+00");
            writeln!(
                file,
                "{at}\tinfo\tbenchmark event\t\\N\t\\N\t{}",
                reference_data(i)
            )
            .unwrap();
        }
    }
    let copy = format!(
        "\\copy \"{table}\" (\"timestamp\", \"level\", \"event\", \"func\", \"scope\", \"data\") FROM '{}'",
        path.display()
    );
    let started = Instant::now();
    run_pg_tool(
        server,
        "psql",
        &[
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "bench",
            "-c",
            &copy,
        ],
    );
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&path);
    let loaded: i64 = postgres::Client::connect(dsn, postgres::NoTls)
        .unwrap()
        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .unwrap()
        .get(0);
    assert_eq!(loaded as u64, n);
    n as f64 / elapsed.as_secs_f64()
}
