//! What the benchmarks share: the server, run counts, medians, the reference rows.
#![allow(dead_code)] // each benchmark uses its own subset

use std::process::Command;

use log::LevelFilter;

/// `cargo bench` passes `--bench`; under `cargo test` the benchmarks run a small smoke
/// pass that only checks they still work.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `PGLOG_BENCH_EVENTS`, or `full` when measuring and `smoke` otherwise.
pub fn events(full: u64, smoke: u64) -> u64 {
    std::env::var("PGLOG_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring() { full } else { smoke })
}

pub fn runs() -> usize {
    if measuring() {
        7
    } else {
        1
    }
}

/// A server kept quiet for measuring: no autovacuum and no checkpoint during a run, so
/// that background work does not land on whichever side happens to run next. Both sides
/// of every comparison run on it.
pub fn server() -> throwaway_pg::Server {
    throwaway_pg::Builder::new()
        .setting("autovacuum", "off")
        .setting("max_wal_size", "8GB")
        .setting("checkpoint_timeout", "1h")
        .start()
        .expect("start a throwaway PostgreSQL")
}

/// Runs `ours` and `reference` `runs()` times each, alternating which goes first, and
/// returns their medians.
pub fn side_by_side(
    mut ours: impl FnMut(usize) -> f64,
    mut reference: impl FnMut(usize) -> f64,
) -> (f64, f64) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for run in 0..runs() {
        if run % 2 == 0 {
            a.push(ours(run));
            b.push(reference(run));
        } else {
            b.push(reference(run));
            a.push(ours(run));
        }
    }
    (median(a), median(b))
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Creates `table` with pglog's DDL, so that references pay for the same indexes.
pub fn create_table(dsn: &str, table: &str) {
    let (logger, guard) = pglog::Builder::new()
        .dsn(dsn)
        .table(table)
        .require_database(true)
        .build()
        .unwrap();
    drop((logger, guard));
}

/// The `data` pglog stores for event `i` of [`log_event`], as the references write it.
pub fn reference_data(i: u64) -> String {
    format!(
        r#"{{"i": {i}, "pid": {}, "user": "bench", "code_file": "benches/common/mod.rs", "code_lineno": 54, "code_module": "batch::common"}}"#,
        std::process::id()
    )
}

pub fn log_event(logger: &pglog::Logger, i: u64) {
    log::info!(logger: logger, i, user = "bench"; "benchmark event");
}

pub fn open_levels() {
    log::set_max_level(LevelFilter::Info);
}

/// Runs a program from the server's bin directory against it; returns stdout.
pub fn run_pg_tool(server: &throwaway_pg::Server, tool: &str, args: &[&str]) -> String {
    let output = Command::new(server.bindir().join(tool))
        .args(args)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port().to_string(),
            "-U",
            server.superuser(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{tool} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

pub fn print_table(title: &str, rows: &[(&str, f64, f64)]) {
    println!("\n{title}");
    println!("{:<48} {:>12} {:>7}", "system", "events/s", "ratio");
    for (name, rate, reference) in rows {
        println!("{name:<48} {rate:>12.0} {:>7.2}", rate / reference);
    }
}
