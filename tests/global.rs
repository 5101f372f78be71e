//! Programs that install pglog as the global logger, run as child processes of this
//! test binary (a process can install a global logger only once).
//!
//! `harness = false`: `main` runs the checks, or, when `PGLOG_TEST_CHILD` names a
//! program, runs that program instead.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use log::LevelFilter;

const THREADS: u64 = 4;
const PER_THREAD: u64 = 250;

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "acceptance" => acceptance_program(),
            "init_from_env" => init_from_env_program(),
            "startup" => startup_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    checks![
        every_event_from_four_threads_lands,
        init_reads_pglog_dsn_and_table,
        concurrent_startup_on_an_empty_database,
    ];
}

// --- the acceptance program of the core issue -------------------------------------------

fn acceptance_program() {
    let dsn = std::env::var("TEST_DSN").unwrap();
    let guard = pglog::Builder::new()
        .dsn(&dsn)
        .table("accept_logs")
        .level(LevelFilter::Trace)
        .try_init()
        .expect("init");
    let again = pglog::Builder::new()
        .dsn(&dsn)
        .try_init()
        .map(drop)
        .unwrap_err();
    assert!(
        matches!(again, pglog::Error::AlreadyInitialized(_)),
        "{again}"
    );

    std::thread::scope(|s| {
        for thread in 0..THREADS {
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    log::info!(thread, i, even = i % 2 == 0, ratio = i as f64 / 4.0, name = "worker",
                        func = "work", scope = format!("t{thread}").as_str(); "event {i} from thread {thread}");
                }
            });
        }
    });
    log::error!("an error");
    log::warn!("a warning");
    log::info!("an info");
    log::debug!("a debug");
    log::trace!("a trace");
    assert_eq!(guard.stats().written, THREADS * PER_THREAD + 5);
    drop(guard);
}

fn every_event_from_four_threads_lands() {
    let dsn = fresh_db("accept");
    let output = run_child("acceptance", &[("TEST_DSN", &dsn)]);
    assert_success(&output);
    assert_no_notices(&output);

    let rows = rows(&dsn, "accept_logs");
    assert_eq!(rows.len() as u64, THREADS * PER_THREAD + 5);
    let mut seen = BTreeSet::new();
    for r in rows.iter().filter(|r| r.func.is_some()) {
        let d = &r.data;
        let (thread, i) = (d["thread"].as_u64().unwrap(), d["i"].as_u64().unwrap());
        assert!(seen.insert((thread, i)), "duplicate {thread}/{i}");
        assert_eq!(r.level, "info");
        assert_eq!(r.event, format!("event {i} from thread {thread}"));
        assert_eq!(r.func.as_deref(), Some("work"));
        assert_eq!(r.scope.as_deref(), Some(format!("t{thread}").as_str()));
        assert_eq!(d["even"], serde_json::json!(i % 2 == 0));
        assert_eq!(d["ratio"], serde_json::json!(i as f64 / 4.0));
        assert_eq!(d["name"], serde_json::json!("worker"));
        assert_eq!(d["code_module"], serde_json::json!("global"));
        assert_eq!(d["code_file"], serde_json::json!("tests/global.rs"));
        assert!(d["code_lineno"].is_u64() && d["pid"].is_u64());
        assert!(d.get("func").is_none() && d.get("scope").is_none());
    }
    assert_eq!(seen.len() as u64, THREADS * PER_THREAD);
    let levels: Vec<&str> = rows
        .iter()
        .filter(|r| r.func.is_none())
        .map(|r| r.level.as_str())
        .collect();
    assert_eq!(levels, ["error", "warning", "info", "debug", "trace"]);
    assert_eq!(
        index_names(&dsn, "accept_logs"),
        expected_indexes("accept_logs")
    );
}

// --- pglog::init() and its environment --------------------------------------------------

fn init_from_env_program() {
    let guard = pglog::init().expect("init");
    log::info!(via = "init"; "configured from the environment");
    log::debug!("below init's default level");
    drop(guard);
}

fn init_reads_pglog_dsn_and_table() {
    let dsn = fresh_db("initenv");
    // Nothing of the developer's environment (PG*, STOGGER_*...) may leak in.
    let mut cmd = child_command("init_from_env");
    cmd.env_clear()
        .env(CHILD, "init_from_env")
        .env("PGLOG_DSN", &dsn)
        .env("PGLOG_TABLE", "from_env");
    assert_success(&run_command(cmd));
    let rows = rows(&dsn, "from_env");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].data["via"], serde_json::json!("init"));
}

// --- several processes creating the table at once ----------------------------------------

fn startup_program() {
    let dsn = std::env::var("TEST_DSN").unwrap();
    let start_at: u128 = std::env::var("START_AT_MS").unwrap().parse().unwrap();
    // Line the processes up so that their CREATE TABLE statements really race.
    while now_ms() < start_at {
        std::thread::sleep(Duration::from_micros(200));
    }
    let guard = pglog::Builder::new()
        .dsn(dsn)
        .table("race_logs")
        .require_database(true)
        .try_init()
        .expect("init");
    for i in 0..25 {
        log::info!(i; "started");
    }
    assert_eq!(guard.stats().written, 25);
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn concurrent_startup_on_an_empty_database() {
    const PROCESSES: usize = 6;
    for _round in 0..3 {
        let dsn = fresh_db("race");
        let start_at = (now_ms() + 500).to_string();
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .env(CHILD, "startup")
                    .env("TEST_DSN", &dsn)
                    .env("START_AT_MS", &start_at)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert_success(&output);
            assert_no_notices(&output);
        }
        assert_eq!(rows(&dsn, "race_logs").len(), PROCESSES * 25);
        assert_eq!(
            index_names(&dsn, "race_logs"),
            expected_indexes("race_logs")
        );
    }
}
