//! What stogger's per-call DDL does to pglog writing the same table.
//!
//! stogger's PostgreSQL target runs, on every log call of its usual use, on a new
//! connection: `CREATE TABLE IF NOT EXISTS` and four `CREATE INDEX IF NOT EXISTS` in one
//! transaction, then the INSERT in another. `CREATE INDEX`, even of an index that exists,
//! first takes a SHARE lock on the table, which conflicts with the ROW EXCLUSIVE lock of
//! every open transaction that wrote to it; while it waits, every later INSERT (pglog's
//! too) queues behind it. So one long transaction that inserted a row (a report job, a
//! migration, a Python logger stuck in a failed transaction; a manual VACUUM or CREATE
//! INDEX CONCURRENTLY does the same) stops every writer of the table until it ends.
//!
//! Four scenarios, each `PGLOG_BENCH_SECONDS` (30) long, pglog logging 100 events a second
//! (blocking mode, its default 2 s statement timeout) into one table:
//!
//! 1. beside a "long transaction" that holds an INSERT open 3 s of every 6;
//! 2. beside a stogger writer (50 calls a second, its statements per call);
//! 3. beside both;
//! 4. beside both, in batch mode;
//! 5. beside both, the stogger writer's sessions with `lock_timeout = 200ms` (in its DSN:
//!    `options='-c lock_timeout=200'`), so that its `CREATE INDEX` gives up instead of
//!    queueing every writer behind it.
//!
//! The stogger writer is stogger's statement sequence sent from here, or stogger itself
//! when `STOGGER_PYTHON` names a Python that has stogger and stogger-postgres installed
//! (`pyproject-compat/checks/stogger_load.py` drives it). Writes benches/STOGGER_DDL.md.
//! Under `cargo test` a short smoke pass of scenario 3 checks the accounting only.
//!
//! `cargo bench --bench stogger_ddl`

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{Level, Log, Record};

const TABLE: &str = "shared_logs";
const PGLOG_PER_SECOND: u64 = 100;
const STOGGER_PER_SECOND: u64 = 50;

/// What stogger sends per call, in its two transactions (observed with
/// `log_statement = all` from stogger 2026.7.28 / stogger-postgres 2026.6.30).
fn stogger_ddl() -> String {
    format!(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS \"{TABLE}\" (id BIGSERIAL PRIMARY KEY, timestamp TIMESTAMPTZ NOT NULL, \
            level TEXT NOT NULL, event TEXT NOT NULL, func TEXT, scope TEXT, data JSONB NOT NULL DEFAULT '{{}}');
         CREATE INDEX IF NOT EXISTS \"idx_{TABLE}_timestamp\" ON \"{TABLE}\" (timestamp DESC);
         CREATE INDEX IF NOT EXISTS \"idx_{TABLE}_level\" ON \"{TABLE}\" (level);
         CREATE INDEX IF NOT EXISTS \"idx_{TABLE}_event\" ON \"{TABLE}\" (event);
         CREATE INDEX IF NOT EXISTS \"idx_{TABLE}_data\" ON \"{TABLE}\" USING GIN (data);
         COMMIT"
    )
}

struct Scenario {
    name: &'static str,
    stogger: bool,
    long_transactions: bool,
    batch: bool,
    /// The stogger writer's DSN sets `lock_timeout`.
    stogger_lock_timeout: bool,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "long transactions only",
        stogger: false,
        long_transactions: true,
        batch: false,
        stogger_lock_timeout: false,
    },
    Scenario {
        name: "stogger only",
        stogger: true,
        long_transactions: false,
        batch: false,
        stogger_lock_timeout: false,
    },
    Scenario {
        name: "stogger and long transactions",
        stogger: true,
        long_transactions: true,
        batch: false,
        stogger_lock_timeout: false,
    },
    Scenario {
        name: "stogger and long transactions, pglog batch mode",
        stogger: true,
        long_transactions: true,
        batch: true,
        stogger_lock_timeout: false,
    },
    Scenario {
        name: "stogger (lock_timeout 200 ms) and long transactions",
        stogger: true,
        long_transactions: true,
        batch: false,
        stogger_lock_timeout: true,
    },
];

/// One scenario's outcome.
struct Outcome {
    logged: u64,
    written: u64,
    fallback: u64,
    /// pglog's log calls, milliseconds: median, 99th percentile, slowest.
    calls: [f64; 3],
    /// The stogger writer's calls: how many, slowest (ms), and a summary line.
    stogger_calls: u64,
    stogger_slowest: f64,
    stogger_note: String,
}

fn seconds() -> u64 {
    std::env::var("PGLOG_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if common::measuring() { 30 } else { 4 })
}

fn main() {
    let server = common::server();
    let python = std::env::var("STOGGER_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    let scenarios: Vec<&Scenario> = if common::measuring() {
        SCENARIOS.iter().collect()
    } else {
        vec![&SCENARIOS[2]]
    };
    let mut md = format!(
        "# stogger's per-call DDL beside pglog\n\n\
         `cargo bench --bench stogger_ddl` ({} s per scenario; pglog {PGLOG_PER_SECOND} events/s, \
         blocking mode with its default 2 s statement timeout unless said; stogger writer {}: \
         {STOGGER_PER_SECOND} calls/s; long transaction: an INSERT held open 3 s of every 6 s). \
         2-core VM, throwaway PostgreSQL {}.\n\n\
         | scenario | pglog events | stored | to stderr | pglog call p50 / p99 / max (ms) | stogger calls | stogger slowest call (ms) |\n\
         |---|---|---|---|---|---|---|\n",
        seconds(),
        if python.is_some() {
            "stogger itself (`STOGGER_PYTHON`)"
        } else {
            "stogger's statements sent by the benchmark"
        },
        server.psql("postgres", "SHOW server_version").unwrap_or_default().trim(),
    );
    let mut notes = String::new();
    for (i, scenario) in scenarios.iter().enumerate() {
        let db = format!("stogger_ddl_{i}");
        let dsn = server.create_database(&db).expect("create database");
        let outcome = run(scenario, &dsn, python.as_deref());
        assert_eq!(
            outcome.written + outcome.fallback,
            outcome.logged,
            "{}: every event stored or on stderr",
            scenario.name
        );
        let line = format!(
            "| {} | {} | {} | {} | {:.1} / {:.1} / {:.0} | {} | {:.0} |\n",
            scenario.name,
            outcome.logged,
            outcome.written,
            outcome.fallback,
            outcome.calls[0],
            outcome.calls[1],
            outcome.calls[2],
            if scenario.stogger {
                outcome.stogger_calls.to_string()
            } else {
                "-".to_owned()
            },
            outcome.stogger_slowest,
        );
        print!("{line}");
        if !outcome.stogger_note.is_empty() {
            println!("  stogger: {}", outcome.stogger_note);
            notes.push_str(&format!(
                "- {}: stogger {}\n",
                scenario.name, outcome.stogger_note
            ));
        }
        md.push_str(&line);
    }
    if !notes.is_empty() {
        md.push('\n');
        md.push_str(&notes);
    }
    if common::measuring() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/STOGGER_DDL.md");
        std::fs::write(path, md).expect("write benches/STOGGER_DDL.md");
        println!("wrote {path}");
    }
}

fn run(scenario: &Scenario, dsn: &str, python: Option<&str>) -> Outcome {
    let duration = Duration::from_secs(seconds());
    let mut builder = pglog::Builder::new()
        .dsn(dsn)
        .table(TABLE)
        .require_database(true);
    if scenario.batch {
        builder = builder.batch();
    }
    let (logger, guard) = builder.build().expect("pglog");
    let stop = Arc::new(AtomicBool::new(false));

    let holder = scenario.long_transactions.then(|| {
        let (dsn, stop) = (dsn.to_owned(), stop.clone());
        thread::spawn(move || long_transactions(&dsn, &stop))
    });
    let stogger = scenario.stogger.then(|| {
        let dsn = if scenario.stogger_lock_timeout {
            format!("{dsn} options='-c lock_timeout=200'")
        } else {
            dsn.to_owned()
        };
        let python = python.map(str::to_owned);
        let stop = stop.clone();
        thread::spawn(move || match python {
            Some(python) => real_stogger(&python, &dsn, duration),
            None => stogger_statements(&dsn, &stop),
        })
    });

    let mut calls = Vec::new();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        let due = started + Duration::from_millis(n * 1000 / PGLOG_PER_SECOND);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let call = Instant::now();
        logger.log(
            &Record::builder()
                .args(format_args!("pglog event"))
                .level(Level::Info)
                .target("bench")
                .build(),
        );
        calls.push(call.elapsed().as_secs_f64() * 1000.0);
        n += 1;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(holder) = holder {
        holder.join().unwrap();
    }
    let (stogger_calls, stogger_slowest, stogger_note) = stogger
        .map(|t| t.join().unwrap())
        .unwrap_or((0, 0.0, String::new()));
    drop(logger);
    let stats = guard.stats();
    drop(guard);
    let stored = {
        // The guard's drop wrote what batch mode held: read the final counts from the table.
        let stored: i64 = postgres::Client::connect(dsn, postgres::NoTls)
            .unwrap()
            .query_one(
                &format!("SELECT count(*) FROM {TABLE} WHERE event = 'pglog event'"),
                &[],
            )
            .unwrap()
            .get(0);
        stored as u64
    };
    calls.sort_by(f64::total_cmp);
    let pick = |q: f64| calls[((calls.len() - 1) as f64 * q) as usize];
    Outcome {
        logged: n,
        written: stored,
        fallback: n - stored.min(n),
        calls: [pick(0.5), pick(0.99), pick(1.0)],
        stogger_calls,
        stogger_slowest,
        stogger_note: if stats.logged == n {
            stogger_note
        } else {
            format!("{stogger_note} (pglog counted {} logged)", stats.logged)
        },
    }
}

/// Every 6 s, a transaction that inserts a row and stays open 3 s.
fn long_transactions(dsn: &str, stop: &AtomicBool) {
    let mut client = postgres::Client::connect(dsn, postgres::NoTls).unwrap();
    let started = Instant::now();
    let mut round = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let due = started + Duration::from_millis(500) + Duration::from_secs(6) * round;
        while Instant::now() < due {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let mut tx = client.transaction().unwrap();
        tx.execute(
            &format!(
                "INSERT INTO {TABLE} (timestamp, level, event) VALUES (now(), 'info', 'long transaction')"
            ),
            &[],
        )
        .unwrap();
        thread::sleep(Duration::from_secs(3));
        tx.commit().unwrap();
        round += 1;
    }
}

/// stogger's statements, one new connection per call, `STOGGER_PER_SECOND` calls a
/// second until `stop`; returns the calls made, the slowest (ms) and the failures.
fn stogger_statements(dsn: &str, stop: &AtomicBool) -> (u64, f64, String) {
    let ddl = stogger_ddl();
    let insert = format!(
        "INSERT INTO \"{TABLE}\" (\"event\", \"level\", \"timestamp\", \"data\") VALUES ($1, $2, $3, $4)"
    );
    let started = Instant::now();
    let (mut n, mut slowest, mut failed) = (0u64, 0f64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let due = started + Duration::from_millis(n * 1000 / STOGGER_PER_SECOND);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let call = Instant::now();
        let ok = postgres::Client::connect(dsn, postgres::NoTls).and_then(|mut client| {
            client.batch_execute(&ddl)?;
            let mut tx = client.transaction()?;
            tx.execute(
                &insert,
                &[
                    &"stogger event",
                    &"info",
                    &chrono::Utc::now(),
                    &serde_json::json!({"pid": 1, "code_module": "svc"}),
                ],
            )?;
            tx.commit()
        });
        failed += u64::from(ok.is_err());
        slowest = slowest.max(call.elapsed().as_secs_f64() * 1000.0);
        n += 1;
    }
    let note = if failed > 0 {
        format!("{failed} calls failed")
    } else {
        String::new()
    };
    (n, slowest, note)
}

/// stogger itself, driven by `pyproject-compat/checks/stogger_load.py`.
fn real_stogger(python: &str, dsn: &str, duration: Duration) -> (u64, f64, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pyproject-compat/checks/stogger_load.py"
    );
    let output = Command::new(python)
        .args([
            script,
            dsn,
            TABLE,
            &STOGGER_PER_SECOND.to_string(),
            &duration.as_secs().to_string(),
        ])
        .stderr(Stdio::null())
        .output()
        .expect("run stogger_load.py");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
            .unwrap_or("?")
            .to_owned()
    };
    let calls = field("calls made:").parse().unwrap_or(0);
    let slowest = field("call latency ms:")
        .rsplit("max=")
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(f64::NAN);
    let stored = field("rows found in");
    let note = format!(
        "rows stored: {}; failures stogger knows of: {}",
        stored.split_once(": ").map_or("?", |(_, n)| n),
        field("known failures:")
    );
    (calls, slowest, note)
}
