//! Degrade, never crash, hang or lose: real faults on a throwaway server.
//!
//! `harness = false` (see `common::run_checks`): several checks run a program in a child
//! process to read what it wrote on stderr, or to install the global logger.

mod common;

use std::time::{Duration, Instant};

use common::*;
use log::LevelFilter;
use serde_json::json;

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "outage" => outage_program(),
            "trace_everything" => trace_everything_program(),
            "stderr_closed" => stderr_closed_program(),
            "echo" => echo_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    checks![
        server_stopped_and_restarted_mid_run,
        trace_for_every_target_neither_recurses_nor_deadlocks,
        locked_table_bounds_every_call,
        hostile_input_lands_whole,
        log_calls_on_tokio_runtime_threads_land,
        startup_problems_are_named_and_heal,
        closed_stderr_is_survived,
        echo_prints_each_event_once_up_or_down,
    ];
}

// --- stop the server a quarter of the way in, restart it three quarters in --------------

const OUTAGE_EVENTS: u64 = 20_000;

fn outage_program() {
    // A program that does some work between log calls, so that the last quarter spans
    // the reconnect.
    outage(
        pglog::Builder::new(),
        OUTAGE_EVENTS,
        Duration::from_micros(100),
    );
}

fn server_stopped_and_restarted_mid_run() {
    let output = run_child("outage", &[]);
    let (rows, lines) = check_outage(&output, OUTAGE_EVENTS);
    assert!(
        lines as u64 >= OUTAGE_EVENTS / 2,
        "the outage's events went to stderr"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_default()
            .to_owned()
    };
    let outages = stderr.matches("events go to stderr until").count();
    let recoveries = stderr.matches("database reachable again").count();
    assert!(
        (1..=3).contains(&outages) && (1..=3).contains(&recoveries),
        "notices: {outages} down, {recoveries} up"
    );
    println!(
        "    {rows} rows, {lines} stderr lines, {} ms; stats {}",
        line("elapsed_ms="),
        line("stats ")
    );
}

// --- trace for every target ---------------------------------------------------------------

fn trace_everything_program() {
    let dsn = std::env::var("TEST_DSN").unwrap();
    let guard = pglog::Builder::new()
        .dsn(&dsn)
        .table("trace_logs")
        .level(LevelFilter::Trace)
        .try_init()
        .unwrap();
    for i in 0..200 {
        log::trace!(i; "event {i}");
    }
    assert_eq!(guard.stats().written, 200, "{:?}", guard.stats());
}

fn trace_for_every_target_neither_recurses_nor_deadlocks() {
    let dsn = fresh_db("trace");
    let output = run_child("trace_everything", &[("TEST_DSN", &dsn)]);
    assert_success(&output);
    let rows = rows(&dsn, "trace_logs");
    assert_eq!(rows.len(), 200);
    assert!(rows
        .iter()
        .all(|r| r.level == "trace" && r.data["code_module"] == json!("degrade")));
}

// --- a table locked for 20 s ----------------------------------------------------------------

fn locked_table_bounds_every_call() {
    open_levels();
    let dsn = fresh_db("lock");
    let statement_timeout = Duration::from_secs(2);
    let (logger, guard) = builder(&dsn, "lock_logs")
        .statement_timeout(statement_timeout)
        .build()
        .unwrap();
    let mut locker = connect(&dsn);
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE lock_logs IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let lock_until = Instant::now() + Duration::from_secs(20);
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        log::info!(logger: &logger, i; "while locked");
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(400));
    }
    // Each call waits at most the statement timeout (plus scheduling slack), never more.
    assert!(
        slowest < statement_timeout + Duration::from_secs(1),
        "slowest call {slowest:?}"
    );
    std::thread::sleep(lock_until.saturating_duration_since(Instant::now()));
    tx.commit().unwrap();
    let stats = guard.stats();
    assert_eq!(stats.written + stats.fallback, 50, "{stats:?}");
    assert!(stats.fallback > 0);

    // The lock is gone: writing resumes by itself (after the current backoff).
    let deadline = Instant::now() + Duration::from_secs(10);
    while guard.stats().written == stats.written {
        assert!(Instant::now() < deadline, "writing never resumed");
        log::info!(logger: &logger, "after the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = guard.stats();
    assert_eq!(rows(&dsn, "lock_logs").len() as u64, after.written);
    println!(
        "    slowest call while locked: {slowest:?}; {} stored, {} to stderr",
        stats.written, stats.fallback
    );
}

// --- hostile input ----------------------------------------------------------------------------

struct FailingDisplay;
impl std::fmt::Display for FailingDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("partial")?;
        Err(std::fmt::Error)
    }
}

struct PanickingDisplay;
impl std::fmt::Display for PanickingDisplay {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("a broken Display impl")
    }
}

fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(json!("bottom"), |inner, _| json!({ "n": inner }))
}

fn hostile_input_lands_whole() {
    open_levels();
    let dsn = fresh_db("hostile");
    let (logger, guard) = builder(&dsn, "hostile_logs").build().unwrap();
    let mib = "x".repeat(1 << 20);
    let deep = nested(500);
    let huge = "y".repeat(1 << 20);
    let bytes: &[u8] = &[0xff, 0xfe, 0x00, b'"'];

    log::info!(logger: &logger, k = "v\0w", func = "f\0"; "nul\0inside");
    log::info!(logger: &logger, "{mib}");
    log::info!(logger: &logger, "'; DROP TABLE hostile_logs; -- \"quoted\" $1 \\x");
    log::info!(logger: &logger, bytes:? = bytes; "{:?}", bytes);
    log::info!(logger: &logger, deep:serde = deep; "deep");
    log::info!(logger: &logger, huge = huge.as_str(); "huge value");
    log::info!(logger: &logger, bad = log::kv::Value::from_display(&FailingDisplay); "{}", FailingDisplay);
    log::info!(logger: &logger, ok = 1; "{}", PanickingDisplay);
    log::info!(logger: &logger, after = "panic"; "still writing");

    let stats = guard.stats();
    assert_eq!((stats.written, stats.fallback), (9, 0), "{stats:?}");
    let mut client = connect(&dsn);
    // serde_json refuses to parse nesting deeper than 128: compare that value in SQL.
    let deep_equal: bool = client
        .query_one(
            "SELECT data->'deep' = $1::text::jsonb FROM hostile_logs WHERE event = 'deep'",
            &[&deep.to_string()],
        )
        .unwrap()
        .get(0);
    assert!(deep_equal, "the 500-deep value is stored as logged");
    let rows: Vec<(String, Option<String>, serde_json::Value)> = client
        .query(
            "SELECT event, func, data - 'deep' FROM hostile_logs ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows[0].0, "nul\u{2400}inside");
    assert_eq!(rows[0].1.as_deref(), Some("f\u{2400}"));
    assert_eq!(rows[0].2["k"], json!("v\u{2400}w"));
    assert!(rows[1].0.len() < 2100);
    assert_eq!(
        rows[1].2["event_full"].as_str().unwrap(),
        mib,
        "the 1 MiB message is whole"
    );
    assert_eq!(
        rows[2].0,
        "'; DROP TABLE hostile_logs; -- \"quoted\" $1 \\x"
    );
    assert_eq!(rows[3].0, "[255, 254, 0, 34]");
    assert_eq!(rows[3].2["bytes"], json!("[255, 254, 0, 34]"));
    assert_eq!(rows[5].2["huge"].as_str().unwrap().len(), 1 << 20);
    assert_eq!(rows[6].0, "partial<formatting error>");
    assert_eq!(rows[6].2["bad"], json!("partial<formatting error>"));
    assert_eq!(rows[7].0, "<formatting panicked>");
    assert_eq!(rows[7].2["ok"], json!(1));
    assert_eq!(rows[8].0, "still writing");
}

// --- tokio --------------------------------------------------------------------------------------

fn log_calls_on_tokio_runtime_threads_land() {
    open_levels();
    let dsn = fresh_db("tokio");
    let (logger, guard) = builder(&dsn, "tokio_logs").build().unwrap();
    let logger = std::sync::Arc::new(logger);
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    current.block_on(async { log::info!(logger: &*logger, "inside block_on") });
    let l = std::sync::Arc::clone(&logger);
    current.block_on(async move {
        tokio::spawn(async move { log::info!(logger: &*l, "inside a task") })
            .await
            .unwrap();
    });
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let l = std::sync::Arc::clone(&logger);
    multi.block_on(async move {
        tokio::spawn(async move { log::info!(logger: &*l, "on a worker thread") })
            .await
            .unwrap();
    });
    let stats = guard.stats();
    assert_eq!((stats.written, stats.fallback), (3, 0), "{stats:?}");
    let events: Vec<String> = rows(&dsn, "tokio_logs")
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(
        events,
        ["inside block_on", "inside a task", "on a worker thread"]
    );
}

// --- what is wrong at startup is named, and heals -------------------------------------------

fn startup_problems_are_named_and_heal() {
    open_levels();
    let server = server();
    let unusable = |dsn: &str, table: &str| -> String {
        match builder(dsn, table).require_database(true).build() {
            Err(pglog::Error::DatabaseUnavailable(why)) => why,
            other => panic!("expected DatabaseUnavailable, got {:?}", other.map(drop)),
        }
    };
    let missing_db = unusable(&server.dsn("no_such_db"), "t");
    assert!(
        missing_db.contains("database \"no_such_db\" does not exist"),
        "{missing_db}"
    );
    let missing_role = unusable(
        &server
            .dsn("postgres")
            .replace("user=postgres", "user=nobody_here"),
        "t",
    );
    assert!(
        missing_role.contains("role \"nobody_here\" does not exist"),
        "{missing_role}"
    );

    // A table that exists with other columns: named, then healed when the DBA fixes it.
    let dsn = fresh_db("wrongcols");
    connect(&dsn)
        .batch_execute("CREATE TABLE app_logs (id serial, msg text)")
        .unwrap();
    let why = unusable(&dsn, "app_logs");
    assert!(
        why.contains("needs pglog's columns") && why.contains("app_logs"),
        "{why}"
    );
    let (logger, guard) = builder(&dsn, "app_logs").build().unwrap();
    assert!(!guard.stats().database_reachable);
    log::info!(logger: &logger, "to stderr while the table is wrong");
    assert_eq!(guard.stats().fallback, 1);
    connect(&dsn).batch_execute("DROP TABLE app_logs").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while guard.stats().written == 0 {
        assert!(
            Instant::now() < deadline,
            "writing never started: {:?}",
            guard.stats()
        );
        log::info!(logger: &logger, "once the table is fixed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(guard.stats().database_reachable);
    assert_eq!(index_names(&dsn, "app_logs"), expected_indexes("app_logs"));
}

// --- stderr closed ---------------------------------------------------------------------------

fn stderr_closed_program() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let guard = pglog::Builder::new()
        .dsn(format!("host=127.0.0.1 port={port} user=x dbname=x"))
        .try_init()
        .unwrap();
    for i in 0..100 {
        log::error!(i; "nowhere to go");
    }
    let stats = guard.stats();
    assert_eq!(stats.fallback, 100, "{stats:?}");
    println!("survived");
}

fn closed_stderr_is_survived() {
    // `2>&-` closes the child's stderr: every fallback write fails with EBADF.
    let output = std::process::Command::new("sh")
        .args(["-c", "exec \"$0\" 2>&-"])
        .arg(std::env::current_exe().unwrap())
        .env(CHILD, "stderr_closed")
        .output()
        .unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    assert!(String::from_utf8_lossy(&output.stdout).contains("survived"));
}

// --- console echo ------------------------------------------------------------------------------

fn echo_program() {
    let dsn = std::env::var("TEST_DSN").unwrap();
    let guard = pglog::Builder::new()
        .dsn(&dsn)
        .table("echo_logs")
        .echo(LevelFilter::Warn)
        .try_init()
        .unwrap();
    log::warn!(n = 1; "echoed");
    log::info!(n = 2; "not echoed");
    println!(
        "written={} fallback={}",
        guard.stats().written,
        guard.stats().fallback
    );
}

fn echo_prints_each_event_once_up_or_down() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("host=127.0.0.1 port={closed} user=x dbname=x");
    for (dsn, stats) in [
        (fresh_db("echo"), "written=2 fallback=0"),
        (down, "written=0 fallback=2"),
    ] {
        let output = run_child("echo", &[("TEST_DSN", &dsn)]);
        assert_success(&output);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(stats), "{stdout}");
        assert_eq!(
            stderr.matches("WARNING degrade: echoed").count(),
            1,
            "{stderr}"
        );
        let info_lines = stderr.matches("not echoed").count();
        // Up: info is stored, not printed. Down: printed once, by the fallback.
        assert_eq!(
            info_lines,
            if stats.starts_with("written=2") { 0 } else { 1 },
            "{stderr}"
        );
    }
}
