//! Blocking mode, one thread, against `pgbench -M prepared` running the same single-row
//! INSERT into an identical table (same indexes, same server, same run).
//!
//! `cargo bench --bench blocking` measures; under `cargo test` (no `--bench` argument)
//! it runs a small smoke pass so the suite checks the benchmark still works.
//! Set `PGLOG_BENCH_EVENTS` to change the number of events per run.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use log::LevelFilter;

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let events: u64 = std::env::var("PGLOG_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 20_000 } else { 200 });
    let runs = if measuring { 5 } else { 1 };

    let server = throwaway_pg::Server::start().expect("start a throwaway PostgreSQL");
    let dsn = server
        .create_database("bench")
        .expect("create the bench database");

    let mut pglog_rates = Vec::new();
    let mut pgbench_rates = Vec::new();
    for run in 0..runs {
        pglog_rates.push(pglog_blocking(&dsn, &format!("pglog_{run}"), events));
        pgbench_rates.push(pgbench_insert(&server, &format!("ref_{run}"), events));
    }
    let (pglog, reference) = (median(pglog_rates), median(pgbench_rates));
    if !measuring {
        println!("smoke pass ({events} events each way): not a measurement; run `cargo bench --bench blocking`");
        return;
    }
    println!("events per run: {events}, runs: {runs} (medians)");
    println!("{:<42} {:>12}", "system", "events/s");
    println!(
        "{:<42} {:>12.0}",
        "pgbench -M prepared single-row INSERT", reference
    );
    println!("{:<42} {:>12.0}", "pglog blocking, 1 thread", pglog);
    println!("ratio pglog / pgbench: {:.2}", pglog / reference);
}

fn pglog_blocking(dsn: &str, table: &str, events: u64) -> f64 {
    let (logger, guard) = pglog::Builder::new()
        .dsn(dsn)
        .table(table)
        .level(LevelFilter::Info)
        .build()
        .unwrap();
    log::set_max_level(LevelFilter::Info);
    let started = Instant::now();
    for i in 0..events {
        log::info!(logger: &logger, i, user = "bench"; "benchmark event");
    }
    let elapsed = started.elapsed();
    let stats = guard.stats();
    assert_eq!(
        stats.written, events,
        "every event must be a row: {stats:?}"
    );
    events as f64 / elapsed.as_secs_f64()
}

/// The reference: the same row pglog writes (same columns, a JSON object of similar size).
fn pgbench_insert(server: &throwaway_pg::Server, table: &str, events: u64) -> f64 {
    // Same DDL as pglog's, so both pay for the same indexes.
    let (ddl_logger, ddl_guard) = pglog::Builder::new()
        .dsn(server.dsn("bench"))
        .table(table)
        .build()
        .unwrap();
    drop((ddl_logger, ddl_guard));
    let script =
        std::env::temp_dir().join(format!("pglog-bench-{}-{table}.sql", std::process::id()));
    let row = r#"'{"i": 12345, "user": "bench", "pid": 4242, "code_file": "benches/blocking.rs", "code_lineno": 42, "code_module": "blocking"}'"#;
    let sql = format!(
        "INSERT INTO \"{table}\" (\"timestamp\", \"level\", \"event\", \"func\", \"scope\", \"data\") \
         VALUES (now(), 'info', 'benchmark event', NULL, NULL, {row}::jsonb);\n"
    );
    std::fs::File::create(&script)
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let output = Command::new(server.bindir().join("pgbench"))
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            "1",
            "-t",
            &events.to_string(),
            "-f",
        ])
        .arg(&script)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port().to_string(),
            "-U",
            server.superuser(),
            "bench",
        ])
        .output()
        .expect("run pgbench");
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no tps in pgbench output: {stdout}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
