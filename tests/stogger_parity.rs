//! The rules pglog follows where it meets stogger in one table, one per check (the list
//! is `pyproject-compat/README.md`'s "Differences from stogger"): errors in stogger's
//! exception keys, whose `pid` and `code_*` a row holds, timestamps, and the configuration
//! edges. Each child process runs `pglog::init()` in a directory with a `pyproject.toml`,
//! with a cleared environment, as a Rust tool beside a Python service would.

mod common;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "errors" => errors_program(),
            "timestamps" => timestamps_program(),
            "init" => init_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    checks![
        errors_land_in_stoggers_keys,
        stogger_queries_find_both_languages_errors,
        pglogs_own_keys_win,
        timestamps_are_utc_microseconds_whatever_the_time_zones,
        no_enable_postgres_key_means_on,
        stogger_enable_postgres_words,
        an_empty_table_variable_is_unset,
    ];
}

// --- child programs --------------------------------------------------------------------

/// An error with a typed chain, as `thiserror` builds them.
#[derive(Debug)]
struct StartError {
    source: anyhow::Error,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the service did not start")
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// `reading` ← `loading` ← `starting`, over an io error: three causes under the top.
fn anyhow_chain() -> anyhow::Error {
    anyhow::Error::new(io::Error::new(io::ErrorKind::NotFound, "no such file"))
        .context("reading /etc/app.toml")
        .context("loading configuration")
        .context("starting the service")
}

fn errors_program() {
    let guard = pglog::init().expect("init");
    let missing = fs::read("/nonexistent/config.toml").unwrap_err();
    log::error!(err:err = missing; "cannot read configuration");

    let e = anyhow_chain();
    let value = pglog::ErrorValue::from_dyn(e.as_ref())
        .class("app::StartError")
        .backtrace(e.backtrace());
    log::error!(err:err = value; "service failed");

    let typed = StartError {
        source: anyhow_chain(),
    };
    log::error!(err:err = pglog::error_value(&typed); "typed");

    let first = io::Error::other("disk full");
    let second = "x".parse::<u8>().unwrap_err();
    log::warn!(write:err = first, parse:err = second; "two errors");

    log::info!(pid = 7, code_file = "elsewhere.rs", code_func = "handler"; "own keys");
    let stats = guard.stats();
    println!("written={} fallback={}", stats.written, stats.fallback);
}

fn micros_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

fn timestamps_program() {
    let guard = pglog::init().expect("init");
    let before = micros_now();
    for i in 0..20 {
        log::info!(i = i; "tick");
        std::thread::sleep(std::time::Duration::from_micros(1_337));
    }
    let after = micros_now();
    guard.flush();
    println!("{before} {after}");
}

fn init_program() {
    let guard = pglog::init().expect("init");
    log::info!("hello");
    let stats = guard.stats();
    println!("written={} fallback={}", stats.written, stats.fallback);
}

// --- helpers -----------------------------------------------------------------------------

/// A fresh database, a directory whose `pyproject.toml` is `section` plus its DSN, and a
/// DSN to read it.
fn project(prefix: &str, section: &str) -> (PathBuf, String) {
    let name = database(server(), prefix, "postgres");
    let dir = scratch_dir(prefix);
    let text = format!(
        "{section}\npostgres_dsn = \"{}\"\npostgres_table = \"shared_logs\"\n",
        server().url(&name)
    );
    fs::write(dir.join("pyproject.toml"), text).unwrap();
    (dir, server().dsn(&name))
}

const STOGGER_ON: &str = "[tool.stogger]\nenable_postgres = true";

/// A row as stogger's PostgreSQL target writes one for `log.exception(...)` (the keys
/// and their forms observed from stogger 2026.7.28; see pyproject-compat/README.md).
const STOGGER_ERROR_ROW: &str = r#"INSERT INTO shared_logs (timestamp, level, event, data)
    VALUES (date_trunc('second', now()), 'error', 'config load failed', '{
      "exception_class": "builtins.FileNotFoundError",
      "exception_msg": "[Errno 2] No such file or directory: ''config.toml''",
      "exception_traceback": "Traceback (most recent call last):\n  File \"/srv/app/main.py\", line 12, in load\n    open(\"config.toml\")\nFileNotFoundError: [Errno 2] No such file or directory: ''config.toml''",
      "code_module": "app.main", "code_func": "load", "code_file": "/srv/app/main.py",
      "code_lineno": 14, "pid": 4242}')"#;

fn logged_errors() -> (PathBuf, String, std::process::Output) {
    let (dir, dsn) = project(
        "errors",
        &format!("[tool.pglog]\necho = \"warn\"\n\n{STOGGER_ON}"),
    );
    let output = run_in(&dir, "errors", &[("RUST_BACKTRACE", "1")]);
    assert_success(&output);
    assert_eq!(stdout(&output).trim(), "written=5 fallback=0");
    (dir, dsn, output)
}

// --- checks ------------------------------------------------------------------------------

fn errors_land_in_stoggers_keys() {
    let (_, dsn, output) = logged_errors();
    let rows = rows(&dsn, "shared_logs");
    let by_event = |event: &str| &rows.iter().find(|r| r.event == event).unwrap().data;

    let io = by_event("cannot read configuration");
    assert_eq!(io["err"], "No such file or directory (os error 2)");
    assert_eq!(io["exception_msg"], io["err"]);
    assert_eq!(io["exception_class"], "std::io::Error");
    assert_eq!(io["exception_traceback"], io["err"]);

    let chain = "starting the service\n\
                 caused by: loading configuration\n\
                 caused by: reading /etc/app.toml\n\
                 caused by: no such file";
    let service = by_event("service failed");
    assert_eq!(service["exception_msg"], "starting the service");
    assert_eq!(service["exception_class"], "app::StartError");
    let traceback = service["exception_traceback"].as_str().unwrap();
    assert!(
        traceback.starts_with(&format!("{chain}\n\nstack backtrace:\n")),
        "the causes in order, then anyhow's backtrace (RUST_BACKTRACE=1):\n{traceback}"
    );
    assert!(traceback.contains("anyhow_chain"), "{traceback}");

    let typed = by_event("typed");
    assert_eq!(typed["exception_class"], "stogger_parity::StartError");
    let typed_traceback = typed["exception_traceback"].as_str().unwrap();
    assert!(
        typed_traceback.starts_with(&format!("the service did not start\ncaused by: {chain}")),
        "{typed_traceback}"
    );

    // Two errors: the first fills stogger's keys, each keeps its own.
    let two = by_event("two errors");
    assert_eq!(two["exception_msg"], "disk full");
    assert_eq!(two["write"], "disk full");
    assert_eq!(two["parse"], "invalid digit found in string");

    // The echo shows each chain after its message, as anyhow's `{:#}` reads.
    let stderr = stderr(&output);
    assert!(
        stderr.contains(
            " stogger_parity: service failed: starting the service: loading configuration: \
             reading /etc/app.toml: no such file {"
        ),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        4,
        "one line per echoed event:\n{stderr}"
    );
}

fn stogger_queries_find_both_languages_errors() {
    let (_, dsn, _) = logged_errors();
    let mut client = connect(&dsn);
    client.batch_execute(STOGGER_ERROR_ROW).unwrap();
    let mut events = |sql: &str| -> Vec<String> {
        client
            .query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(
        events("SELECT event FROM shared_logs WHERE data ? 'exception_class' ORDER BY id"),
        [
            "cannot read configuration",
            "service failed",
            "typed",
            "two errors",
            "config load failed"
        ]
    );
    assert_eq!(
        events(
            "SELECT event FROM shared_logs \
             WHERE data->>'exception_msg' ILIKE '%no such file or directory%' ORDER BY id"
        ),
        ["cannot read configuration", "config load failed"]
    );
    // The traceback search a Python dashboard makes reaches the Rust causes too.
    assert_eq!(
        events(
            "SELECT event FROM shared_logs \
             WHERE data->>'exception_traceback' ILIKE '%/etc/app.toml%' ORDER BY id"
        ),
        ["service failed", "typed"]
    );
    // GIN containment, as the `data` index serves it.
    assert_eq!(
        events(
            "SELECT event FROM shared_logs \
             WHERE data @> '{\"exception_class\": \"std::io::Error\"}' ORDER BY id"
        ),
        ["cannot read configuration", "two errors"]
    );
}

fn pglogs_own_keys_win() {
    let (_, dsn, _) = logged_errors();
    let rows = rows(&dsn, "shared_logs");
    let own = &rows.iter().find(|r| r.event == "own keys").unwrap().data;
    let pids: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r.data["pid"].to_string()).collect();
    assert_eq!(pids.len(), 1, "every row holds the process id: {pids:?}");
    assert_ne!(own["pid"], 7);
    assert_eq!(own["kv_pid"], 7);
    assert!(own["code_file"]
        .as_str()
        .unwrap()
        .ends_with("stogger_parity.rs"));
    assert_eq!(own["kv_code_file"], "elsewhere.rs");
    assert_eq!(
        own["code_func"], "handler",
        "stogger's key pglog leaves to the caller"
    );
    assert!(rows
        .iter()
        .filter(|r| r.event != "own keys")
        .all(|r| r.data.get("code_func").is_none()));
}

fn timestamps_are_utc_microseconds_whatever_the_time_zones() {
    let (dir, dsn) = project("timestamps", STOGGER_ON);
    let db: String = connect(&dsn)
        .query_one("SELECT current_database()", &[])
        .unwrap()
        .get(0);
    // The session time zone pglog's sessions get, and the process's own.
    server()
        .psql(
            "postgres",
            &format!(
                "ALTER DATABASE {} SET timezone = 'Asia/Kathmandu'",
                quote_ident(&db)
            ),
        )
        .unwrap();
    let output = run_in(&dir, "timestamps", &[("TZ", "America/New_York")]);
    assert_success(&output);
    let (before, after) = stdout(&output)
        .trim()
        .split_once(' ')
        .map(|(b, a)| (b.parse::<i64>().unwrap(), a.parse::<i64>().unwrap()))
        .unwrap();
    let stamps: Vec<(i64, String)> = connect(&dsn)
        .query(
            "SELECT (extract(epoch FROM timestamp) * 1000000)::bigint, \
                    to_char(timestamp AT TIME ZONE 'UTC', 'HH24:MI:SS.US') \
             FROM shared_logs ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(stamps.len(), 20);
    for (micros, _) in &stamps {
        assert!(
            (before..=after).contains(micros),
            "{micros} within the calls' {before}..{after}: the instant, not a shifted local time"
        );
    }
    assert!(
        stamps.iter().any(|(_, text)| !text.ends_with(".000000")),
        "microseconds kept: {stamps:?}"
    );
    assert!(
        stamps.windows(2).all(|w| w[0].0 < w[1].0),
        "distinct and ordered within one second: {stamps:?}"
    );
}

fn no_enable_postgres_key_means_on() {
    // stogger's target stays off without the key; pglog writes (see the README here).
    let (dir, dsn) = project("no_enable", "[tool.stogger]");
    let output = run_in(&dir, "init", &[]);
    assert_success(&output);
    assert_eq!(stdout(&output).trim(), "written=1 fallback=0");
    assert_eq!(events(&dsn, "shared_logs"), ["hello"]);
}

fn stogger_enable_postgres_words() {
    let (dir, dsn) = project("enable_words", STOGGER_ON);
    for off in ["0", "false", "off", "No"] {
        let output = run_in(&dir, "init", &[("STOGGER_ENABLE_POSTGRES", off)]);
        assert_success(&output);
        assert_eq!(stdout(&output).trim(), "written=0 fallback=1", "{off}");
    }
    assert!(!table_exists(&dsn, "shared_logs"));
    for on in ["1", "true", "on", "YES"] {
        let output = run_in(&dir, "init", &[("STOGGER_ENABLE_POSTGRES", on)]);
        assert_eq!(stdout(&output).trim(), "written=1 fallback=0", "{on}");
    }
    // An empty value is unset: the file's `true` stands.
    let output = run_in(&dir, "init", &[("STOGGER_ENABLE_POSTGRES", "")]);
    assert_eq!(stdout(&output).trim(), "written=1 fallback=0");
    assert_eq!(events(&dsn, "shared_logs").len(), 5);
}

fn an_empty_table_variable_is_unset() {
    let (dir, dsn) = project("empty_table", STOGGER_ON);
    let output = run_in(&dir, "init", &[("STOGGER_POSTGRES_TABLE", "")]);
    assert_success(&output);
    assert_no_notices(&output);
    assert_eq!(events(&dsn, "shared_logs"), ["hello"], "the file's table");
}
