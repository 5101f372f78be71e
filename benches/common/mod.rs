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

/// `PGLOG_BENCH_RUNS`, or 9 when measuring and 1 otherwise.
pub fn runs() -> usize {
    std::env::var("PGLOG_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(if measuring() { 9 } else { 1 })
}

/// Settings of the measuring server, on top of throwaway-pg's own (`fsync=off`,
/// `full_page_writes=off`): no autovacuum and no checkpoint during a run, so that
/// background work does not land on whichever side happens to run next.
pub const SERVER_SETTINGS: [(&str, &str); 3] = [
    ("autovacuum", "off"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "1h"),
];

/// A server kept quiet for measuring. Every side of every comparison runs on it.
pub fn server() -> throwaway_pg::Server {
    SERVER_SETTINGS
        .iter()
        .fold(throwaway_pg::Builder::new(), |b, (k, v)| b.setting(k, v))
        .start()
        .expect("start a throwaway PostgreSQL")
}

/// Runs every system `runs()` times, one round at a time; each round starts with the next
/// system, so that none always runs first (or right after the same neighbour). Returns
/// each system's results, in the order given.
pub fn rounds(mut systems: Vec<Box<dyn FnMut(usize) -> f64 + '_>>) -> Vec<Vec<f64>> {
    let n = systems.len();
    let mut results = vec![Vec::new(); n];
    for run in 0..runs() {
        for k in 0..n {
            let system = (run + k) % n;
            results[system].push(systems[system](run));
        }
    }
    results
}

pub fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A blocking-mode logger that has created `table` (pglog's DDL) or panics.
fn connected(dsn: &str, table: &str) -> (pglog::Logger, pglog::Guard) {
    pglog::Builder::new()
        .dsn(dsn)
        .table(table)
        .require_database(true)
        .build()
        .unwrap()
}

/// Creates `table` with pglog's DDL, so that references pay for the same indexes.
pub fn create_table(dsn: &str, table: &str) {
    drop(connected(dsn, table));
}

pub fn count_rows(dsn: &str, table: &str) -> u64 {
    let count: i64 = postgres::Client::connect(dsn, postgres::NoTls)
        .unwrap()
        .query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .unwrap()
        .get(0);
    count as u64
}

/// The event every benchmark logs; `i` makes each row distinct.
pub fn log_event(logger: &pglog::Logger, i: u64) {
    log::info!(logger: logger, i, user = "bench"; "benchmark event");
}

/// The `data` pglog stores for [`log_event`], as text, split around the value of `i`, so
/// that references write exactly the same JSON (keys, location, pid) with their own `i`.
pub struct ReferenceData {
    before: String,
    after: String,
}

impl ReferenceData {
    /// Logs one event into a scratch table and reads back what pglog stored.
    pub fn read(dsn: &str) -> ReferenceData {
        let table = "reference_data";
        let (logger, guard) = connected(dsn, table);
        log_event(&logger, 0);
        drop(guard);
        let stored: String = postgres::Client::connect(dsn, postgres::NoTls)
            .unwrap()
            .query_one(&format!("SELECT data::text FROM \"{table}\""), &[])
            .unwrap()
            .get(0);
        let (before, after) = stored
            .split_once("\"i\": 0")
            .unwrap_or_else(|| panic!("no \"i\": 0 in {stored}"));
        ReferenceData {
            before: format!("{before}\"i\": "),
            after: after.to_owned(),
        }
    }

    /// The JSON of event `i`, or with `i` given as SQL or pgbench text.
    pub fn with(&self, i: impl std::fmt::Display) -> String {
        format!("{}{i}{}", self.before, self.after)
    }
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

/// `ours[i] / theirs[i]`: each pair ran in the same round.
pub fn ratios(ours: &[f64], theirs: &[f64]) -> Vec<f64> {
    ours.iter().zip(theirs).map(|(a, b)| a / b).collect()
}

/// `27.1k–31.0k`: the lowest and highest of `values`, each as `show` writes it.
pub fn range(values: &[f64], show: impl Fn(f64) -> String) -> String {
    let low = values.iter().copied().fold(f64::MAX, f64::min);
    let high = values.iter().copied().fold(0.0, f64::max);
    format!("{}–{}", show(low), show(high))
}

/// `12,345`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{value:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The machine's load average over 1, 5 and 15 minutes.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
