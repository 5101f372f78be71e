//! Connections as deployments have them, with real faults: a transaction pooler shared
//! by several programs, a server restarted or timing sessions out while the program is
//! quiet, `fork()`, a frozen server, a peer that never answers, a smart shutdown, a table
//! dropped mid-run. Every check accounts for every event: stored once, or on stderr
//! once, or (when the write's outcome is unknown) possibly both.
//!
//! `harness = false` (see `common::run_checks`): the programs run in child processes,
//! to install the global logger, own a server they may freeze, and read their stderr.
#![allow(unsafe_code)] // fork() and waitpid() in the fork checks

mod common;

use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use log::LevelFilter;
use throwaway_pg::{Pgbouncer, StopMode};

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "pooled_writer" => pooled_writer_program(),
            "idle_restart" => idle_restart_program(),
            "idle_timeout" => idle_timeout_program(),
            "fork" => fork_program(),
            "freeze" => freeze_program(),
            "silent_peer" => silent_peer_program(),
            "smart_shutdown" => smart_shutdown_program(),
            "dropped_table" => dropped_table_program(),
            "terminated" => terminated_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    checks![
        transaction_pooler_keeps_every_event_in_its_own_table,
        session_pooler_accounts_for_every_event,
        restart_while_idle_costs_the_next_burst_nothing,
        idle_session_timeout_costs_no_event,
        fork_keeps_parent_and_child_apart,
        frozen_server_bounds_every_call,
        silent_peer_is_bounded_and_named,
        smart_shutdown_is_not_held_up_by_an_idle_program,
        dropped_table_comes_back,
        terminated_backends_lose_nothing,
    ];
}

fn mode_builder(dsn: &str, table: &str, batch: bool) -> pglog::Builder {
    let builder = pglog::Builder::new()
        .dsn(dsn)
        .table(table)
        .level(LevelFilter::Trace);
    if batch {
        builder.batch()
    } else {
        builder
    }
}

/// The `data->>key` of every row of `table`, as numbers, where `filter` holds.
fn stored_numbers(dsn: &str, table: &str, key: &str, filter: &str) -> Vec<u64> {
    connect(dsn)
        .query(
            &format!(
                "SELECT (data->>'{key}')::bigint FROM {} WHERE {filter} ORDER BY id",
                quote_ident(table)
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0) as u64)
        .collect()
}

fn stderr_numbers(output: &Output, event: &str, key: &str) -> Vec<(u64, bool)> {
    fallback_events(&String::from_utf8_lossy(&output.stderr), event)
        .into_iter()
        .map(|(json, uncertain)| (json[key].as_u64().unwrap(), uncertain))
        .collect()
}

fn stdout_value(output: &Output, prefix: &str) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in the child's output"))
        .to_owned()
}

// --- a transaction pooler shared by several programs ----------------------------------------

const POOLED_EVENTS: u64 = 2000;

fn pooled_writer_program() {
    let batch = env("TEST_BATCH") == "1";
    let tag = env("TEST_TAG");
    let guard = mode_builder(&env("TEST_DSN"), &env("TEST_TABLE"), batch)
        .try_init()
        .unwrap();
    for i in 0..POOLED_EVENTS {
        log::info!(tag = tag.as_str(), i; "pooled");
    }
    guard.flush();
    println!("stats {:?}", guard.stats());
}

/// Three programs, each logging to its own table through one pgbouncer with two server
/// connections, while a fourth client leaves named prepared statements behind on those
/// connections (what pglog itself used to do). Returns (stored, on stderr, uncertain).
fn pooled_round(
    bouncer: &Pgbouncer,
    dbname: &str,
    tables: [String; 3],
    batch: bool,
) -> (usize, usize, usize) {
    let direct = server().dsn(dbname);
    let pooled = bouncer.dsn(dbname);
    // The leaky neighbour: named statements prepared outside any transaction.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let neighbour = {
        let (pooled, stop) = (pooled.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&pooled, postgres::NoTls).unwrap();
            client
                .batch_execute("CREATE TABLE IF NOT EXISTS neighbour (n int)")
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(statement) = client.prepare("INSERT INTO neighbour VALUES ($1)") {
                    let _ = client.execute(&statement, &[&1i32]);
                }
            }
        })
    };
    let children: Vec<_> = tables
        .iter()
        .enumerate()
        .map(|(k, table)| {
            let (pooled, table) = (pooled.clone(), table.clone());
            std::thread::spawn(move || {
                run_child(
                    "pooled_writer",
                    &[
                        ("TEST_DSN", &pooled),
                        ("TEST_TABLE", &table),
                        ("TEST_BATCH", if batch { "1" } else { "0" }),
                        ("TEST_TAG", &k.to_string()),
                    ],
                )
            })
        })
        .collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    neighbour.join().unwrap();
    let mut totals = (0, 0, 0);
    for (k, (table, output)) in tables.iter().zip(&outputs).enumerate() {
        assert_success(output);
        let strangers: i64 = connect(&direct)
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE data->>'tag' IS DISTINCT FROM '{k}'",
                    quote_ident(table)
                ),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(strangers, 0, "{table} holds another program's events");
        let stored = stored_numbers(&direct, table, "i", "true");
        let lines = stderr_numbers(output, "pooled", "i");
        let (s, l, u) = check_every_event(&stored, &lines, POOLED_EVENTS, table);
        totals = (totals.0 + s, totals.1 + l, totals.2 + u);
    }
    let neighbours_rows: i64 = connect(&direct)
        .query_one("SELECT count(*) FROM neighbour WHERE n <> 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(neighbours_rows, 0, "pglog wrote into the neighbour's table");
    totals
}

fn transaction_pooler_keeps_every_event_in_its_own_table() {
    let server = server();
    let dbname = format!("pooled_{}", std::process::id());
    server.create_database(&dbname).unwrap();
    let bouncer = Pgbouncer::start(server, "transaction", 2).unwrap();
    for batch in [false, true] {
        let mode = if batch { "batch" } else { "blocking" };
        let mut rounds = Vec::new();
        for round in 0..5 {
            let tables = std::array::from_fn(|k| format!("tx_{mode}_{round}_{k}"));
            rounds.push(pooled_round(&bouncer, &dbname, tables, batch));
        }
        println!("    transaction mode, {mode}: (stored, stderr, uncertain) per round of 3 x {POOLED_EVENTS}: {rounds:?}");
    }
}

fn session_pooler_accounts_for_every_event() {
    let server = server();
    let dbname = format!("session_pooled_{}", std::process::id());
    server.create_database(&dbname).unwrap();
    let bouncer = Pgbouncer::start(server, "session", 2).unwrap();
    for batch in [false, true] {
        let mode = if batch { "batch" } else { "blocking" };
        let tables = std::array::from_fn(|k| format!("session_{mode}_{k}"));
        let totals = pooled_round(&bouncer, &dbname, tables, batch);
        println!("    session mode, {mode}: (stored, stderr, uncertain) of 3 x {POOLED_EVENTS}: {totals:?}");
    }
}

// --- a server restarted while the program is quiet ------------------------------------------

const BURST: u64 = 5000;

fn idle_restart_program() {
    let mode: StopMode = env("TEST_STOP_MODE").parse().unwrap();
    let batch = env("TEST_BATCH") == "1";
    let server = throwaway_pg::Server::start().unwrap();
    let dsn = server.create_database("restart").unwrap();
    let guard = mode_builder(&dsn, "restart_logs", batch)
        .try_init()
        .unwrap();
    for i in 0..10u64 {
        log::info!(i; "warm-up");
    }
    guard.flush();
    server.stop(mode).unwrap();
    server.restart().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..BURST {
        log::info!(i; "burst");
    }
    guard.flush();
    let stats = guard.stats();
    drop(guard);
    let stored = stored_numbers(&dsn, "restart_logs", "i", "event = 'burst'");
    println!(
        "stored={}",
        stored
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("stats {stats:?}");
}

fn restart_while_idle_costs_the_next_burst_nothing() {
    for mode in [StopMode::Immediate, StopMode::Fast] {
        for batch in ["0", "1"] {
            let output = run_child(
                "idle_restart",
                &[("TEST_STOP_MODE", mode.as_str()), ("TEST_BATCH", batch)],
            );
            assert_success(&output);
            let stored: Vec<u64> = stdout_value(&output, "stored=")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            let lines = stderr_numbers(&output, "burst", "i");
            let (rows, on_stderr, _) =
                check_every_event(&stored, &lines, BURST, &format!("{mode} stop"));
            let kind = if batch == "1" { "batch" } else { "blocking" };
            println!("    -m {mode}, {kind}: {rows} of {BURST} stored, {on_stderr} on stderr");
            assert!(
                rows as u64 >= BURST * 99 / 100,
                "-m {mode}, {kind}: only {rows} of {BURST} stored; notices: {:?}",
                notices(&output)
            );
        }
    }
}

// --- a server that ends idle sessions ---------------------------------------------------------

const QUIET_EVENTS: u64 = 5;

fn idle_timeout_program() {
    let batch = env("TEST_BATCH") == "1";
    let server = throwaway_pg::Builder::new()
        .setting("idle_session_timeout", "1s")
        .start()
        .unwrap();
    let dsn = server.create_database("idle").unwrap();
    let guard = mode_builder(&dsn, "idle_logs", batch).try_init().unwrap();
    for i in 0..QUIET_EVENTS {
        log::info!(i; "quiet");
        guard.flush();
        std::thread::sleep(Duration::from_secs(2));
    }
    let stats = guard.stats();
    drop(guard);
    let stored = stored_numbers(&dsn, "idle_logs", "i", "true");
    println!("stored={}", stored.len());
    println!("stats {stats:?}");
}

fn idle_session_timeout_costs_no_event() {
    let children: Vec<_> = ["0", "1"]
        .into_iter()
        .map(|batch| {
            std::thread::spawn(move || (batch, run_child("idle_timeout", &[("TEST_BATCH", batch)])))
        })
        .collect();
    for child in children {
        let (batch, output) = child.join().unwrap();
        assert_success(&output);
        assert_eq!(
            stdout_value(&output, "stored="),
            QUIET_EVENTS.to_string(),
            "batch={batch}: every event stored; notices: {:?}",
            notices(&output)
        );
        assert_no_notices(&output);
    }
}

// --- fork ---------------------------------------------------------------------------------------

const FORK_EVENTS: u64 = 50;

fn fork_program() {
    let batch = env("TEST_BATCH") == "1";
    let exit_style = env("TEST_EXIT");
    let dsn = env("TEST_DSN");
    let guard = mode_builder(&dsn, "fork_logs", batch).try_init().unwrap();
    for i in 0..FORK_EVENTS {
        log::info!(who = "parent", i; "before fork");
    }
    // SAFETY: the child only logs, drops or keeps the guard, and exits; nothing it does
    // depends on locks another thread of this process might hold at the fork, except
    // pglog's own, which is what is under test.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        for i in 0..FORK_EVENTS {
            log::info!(who = "child", i; "in child");
        }
        if exit_style == "drop" {
            drop(guard);
        }
        std::process::exit(0);
    }
    for i in 0..FORK_EVENTS {
        log::info!(who = "parent", i; "after fork");
    }
    let started = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the child did not exit within 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("child_ms={}", started.elapsed().as_millis());
    println!("child_status={status}");
    let drop_started = Instant::now();
    guard.flush();
    let stats = guard.stats();
    drop(guard);
    println!("parent_drop_ms={}", drop_started.elapsed().as_millis());
    println!("stats {stats:?}");
}

fn fork_keeps_parent_and_child_apart() {
    for batch in ["0", "1"] {
        for exit_style in ["drop", "exit"] {
            let dsn = fresh_db("fork");
            let started = Instant::now();
            let output = run_child(
                "fork",
                &[
                    ("TEST_BATCH", batch),
                    ("TEST_EXIT", exit_style),
                    ("TEST_DSN", &dsn),
                ],
            );
            let wall = started.elapsed();
            assert_success(&output);
            assert_eq!(stdout_value(&output, "child_status="), "0");
            let what = format!("batch={batch} exit={exit_style}");
            let mut client = connect(&dsn);
            let rows: Vec<(String, String, i64)> = client
                .query(
                    "SELECT data->>'who', event, (data->>'i')::bigint FROM fork_logs",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let distinct: BTreeSet<_> = rows.iter().collect();
            assert_eq!(distinct.len(), rows.len(), "{what}: an event stored twice");
            for event in ["before fork", "after fork"] {
                let n = rows
                    .iter()
                    .filter(|(w, e, _)| w == "parent" && e == event)
                    .count();
                assert_eq!(
                    n as u64, FORK_EVENTS,
                    "{what}: the parent's `{event}` events"
                );
            }
            let child = rows.iter().filter(|(w, _, _)| w == "child").count() as u64;
            let child_lines = stderr_numbers(&output, "in child", "i").len() as u64;
            // A child that exits without dropping the guard loses what batch mode still
            // queued, as any program does (see the README); otherwise every event is kept.
            if !(batch == "1" && exit_style == "exit") {
                assert_eq!(
                    child + child_lines,
                    FORK_EVENTS,
                    "{what}: the child's events"
                );
            }
            println!(
                "    {what}: child's events {child} stored, {child_lines} on stderr; child ran {} ms; parent's drop {} ms; whole program {wall:.1?}",
                stdout_value(&output, "child_ms="),
                stdout_value(&output, "parent_drop_ms=")
            );
        }
    }
}

// --- a frozen server ------------------------------------------------------------------------------

fn freeze_program() {
    let server = throwaway_pg::Server::start().unwrap();
    let dsn = server.create_database("freeze").unwrap();
    let guard = mode_builder(&dsn, "freeze_logs", false).try_init().unwrap();
    let started = Instant::now();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let thawed_at = std::sync::Mutex::new(None::<Duration>);
    let calls: Vec<Vec<(u64, Duration, Duration)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let mut calls = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let at = started.elapsed();
                        let n = t * 1_000_000 + i;
                        log::info!(n; "frozen");
                        calls.push((n, at, started.elapsed() - at));
                        i += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    calls
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        server.freeze().unwrap();
        std::thread::sleep(Duration::from_secs(15));
        server.thaw().unwrap();
        *thawed_at.lock().unwrap() = Some(started.elapsed());
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let stats = guard.stats();
    drop(guard);
    let calls: Vec<(u64, Duration, Duration)> = calls.into_iter().flatten().collect();
    let thawed = thawed_at.lock().unwrap().unwrap();
    let stored: BTreeSet<u64> = stored_numbers(&dsn, "freeze_logs", "n", "true")
        .into_iter()
        .collect();
    let longest = calls.iter().map(|c| c.2).max().unwrap();
    let resumed = calls
        .iter()
        .filter(|c| c.1 >= thawed && stored.contains(&c.0))
        .map(|c| c.1 - thawed)
        .min();
    println!("logged={}", calls.len());
    println!(
        "numbers={}",
        calls
            .iter()
            .map(|c| c.0.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!(
        "stored={}",
        stored
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("longest_ms={}", longest.as_millis());
    println!(
        "resumed_ms={}",
        resumed.map_or(-1, |d| d.as_millis() as i64)
    );
    println!("stats {stats:?}");
}

fn frozen_server_bounds_every_call() {
    let output = run_child("freeze", &[]);
    assert_success(&output);
    let numbers: Vec<u64> = stdout_value(&output, "numbers=")
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let stored: Vec<u64> = stdout_value(&output, "stored=")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // Renumber the events 0..n for the check.
    let index: std::collections::HashMap<u64, u64> = numbers
        .iter()
        .enumerate()
        .map(|(k, n)| (*n, k as u64))
        .collect();
    let stored: Vec<u64> = stored.iter().map(|n| index[n]).collect();
    let lines: Vec<(u64, bool)> = stderr_numbers(&output, "frozen", "n")
        .into_iter()
        .map(|(n, u)| (index[&n], u))
        .collect();
    let (rows, on_stderr, uncertain) =
        check_every_event(&stored, &lines, numbers.len() as u64, "frozen server");
    let longest: u64 = stdout_value(&output, "longest_ms=").parse().unwrap();
    let resumed: i64 = stdout_value(&output, "resumed_ms=").parse().unwrap();
    println!(
        "    {} events from 4 threads: {rows} stored, {on_stderr} on stderr ({uncertain} of unknown outcome); longest call {longest} ms; rows resumed {resumed} ms after SIGCONT",
        numbers.len()
    );
    assert!(longest <= 5000, "a log call took {longest} ms");
    assert!(
        (0..=1000).contains(&resumed),
        "rows resumed {resumed} ms after SIGCONT; notices: {:?}",
        notices(&output)
    );
}

// --- a peer that accepts and never answers ------------------------------------------------------------

fn silent_peer_program() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let guard = pglog::Builder::new()
        .dsn(format!("host=127.0.0.1 port={port} user=app dbname=app"))
        .connect_timeout(Duration::from_secs(1))
        .try_init()
        .unwrap();
    println!("init_ms={}", started.elapsed().as_millis());
    let mut calls = Vec::new();
    for i in 0..20u64 {
        let at = Instant::now();
        log::info!(i; "to a silent peer");
        calls.push(at.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    calls.sort();
    println!("longest_us={}", calls[calls.len() - 1].as_micros());
    println!("median_us={}", calls[calls.len() / 2].as_micros());
    println!("stats {:?}", guard.stats());
}

fn silent_peer_is_bounded_and_named() {
    let output = run_child("silent_peer", &[]);
    assert_success(&output);
    let init: u64 = stdout_value(&output, "init_ms=").parse().unwrap();
    let longest: u64 = stdout_value(&output, "longest_us=").parse().unwrap();
    let median: u64 = stdout_value(&output, "median_us=").parse().unwrap();
    let notices = notices(&output);
    println!("    init {init} ms (connect timeout 1 s); log calls: median {median} µs, longest {longest} µs; notices {notices:?}");
    assert!(init < 2500, "startup took {init} ms");
    assert!(longest < 1_500_000, "a log call took {longest} µs");
    // A peer that never answers costs a call nothing: no call waits for a connect.
    assert!(median < 10_000, "log calls took {median} µs (median)");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("did not answer as PostgreSQL"),
        "{notices:?}"
    );
    assert_eq!(stderr_numbers(&output, "to a silent peer", "i").len(), 20);
}

// --- pg_ctl stop -m smart --------------------------------------------------------------------------------

fn smart_shutdown_program() {
    let server = throwaway_pg::Server::start().unwrap();
    let dsn = server.create_database("smart").unwrap();
    let idle = Duration::from_secs(1);
    let guard = mode_builder(&dsn, "smart_logs", false)
        .idle_timeout(idle)
        .try_init()
        .unwrap();
    for i in 0..10u64 {
        log::info!(i; "before the shutdown");
    }
    let started = Instant::now();
    server.stop(StopMode::Smart).unwrap();
    println!("stop_ms={}", started.elapsed().as_millis());
    println!("stats {:?}", guard.stats());
}

fn smart_shutdown_is_not_held_up_by_an_idle_program() {
    let output = run_child("smart_shutdown", &[]);
    assert_success(&output);
    let stop: u64 = stdout_value(&output, "stop_ms=").parse().unwrap();
    println!("    pg_ctl stop -m smart took {stop} ms with an idle timeout of 1000 ms");
    assert!(stop < 3000, "smart shutdown took {stop} ms");
}

// --- a table dropped while the program runs ---------------------------------------------------------------

fn dropped_table_program() {
    let dsn = env("TEST_DSN");
    let batch = env("TEST_BATCH") == "1";
    let guard = mode_builder(&dsn, "dropped_logs", batch)
        .flush_interval(Duration::from_millis(10))
        .try_init()
        .unwrap();
    let started = Instant::now();
    let mut logged_at = Vec::new();
    let mut dropped_at = None;
    for i in 0..200u64 {
        if i == 70 {
            connect(&dsn)
                .batch_execute("DROP TABLE dropped_logs")
                .unwrap();
            dropped_at = Some(started.elapsed());
        }
        logged_at.push(started.elapsed());
        log::info!(i; "around a drop");
        std::thread::sleep(Duration::from_millis(10));
    }
    guard.flush();
    let stats = guard.stats();
    drop(guard);
    let dropped_at = dropped_at.unwrap();
    let stored = stored_numbers(&dsn, "dropped_logs", "i", "true");
    let resumed = stored
        .iter()
        .map(|&i| logged_at[i as usize])
        .filter(|&at| at >= dropped_at)
        .min()
        .map_or(-1, |at| (at - dropped_at).as_millis() as i64);
    println!(
        "stored={}",
        stored
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("resumed_ms={resumed}");
    println!("stats {stats:?}");
}

fn dropped_table_comes_back() {
    for batch in ["0", "1"] {
        let dsn = fresh_db("dropped");
        let output = run_child(
            "dropped_table",
            &[("TEST_DSN", &dsn), ("TEST_BATCH", batch)],
        );
        assert_success(&output);
        let stored: Vec<u64> = stdout_value(&output, "stored=")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        // Rows logged before the drop went with the table.
        let after: Vec<u64> = stored.iter().copied().filter(|&i| i >= 70).collect();
        let lines: Vec<(u64, bool)> = stderr_numbers(&output, "around a drop", "i")
            .into_iter()
            .filter(|(i, _)| *i >= 70)
            .collect();
        let shifted: Vec<u64> = after.iter().map(|i| i - 70).collect();
        let shifted_lines: Vec<(u64, bool)> = lines.iter().map(|(i, u)| (i - 70, *u)).collect();
        let (rows, on_stderr, _) =
            check_every_event(&shifted, &shifted_lines, 130, "after the drop");
        let resumed: i64 = stdout_value(&output, "resumed_ms=").parse().unwrap();
        let notices = notices(&output);
        println!(
            "    batch={batch}: after the drop {rows} stored, {on_stderr} on stderr; rows resumed {resumed} ms after it; notices {notices:?}"
        );
        assert!(
            (0..=1000).contains(&resumed),
            "rows resumed {resumed} ms after the drop"
        );
        assert!(
            notices.iter().any(|n| n.contains("created it again")),
            "{notices:?}"
        );
    }
}

// --- backends terminated under load --------------------------------------------------------

/// Logs 20,000 events from two threads while another connection terminates pglog's
/// backends every 30 ms: every event must be stored once or be on stderr (twice only when
/// its outcome was unknown), never counted as written and missing.
fn terminated_program() {
    let dsn = env("TEST_DSN");
    let batch = env("TEST_BATCH") == "1";
    let guard = mode_builder(&dsn, "terminated_logs", batch)
        .try_init()
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut client = connect(&dsn);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client.batch_execute(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = {} AND pid <> pg_backend_pid()",
                    pglog_sessions()
                ));
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                s.spawn(move || {
                    for i in 0..10_000u64 {
                        let n = t * 10_000 + i;
                        log::info!(n; "terminated");
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    guard.flush();
    let stats = guard.stats();
    drop(guard);
    println!("stats {stats:?}");
    println!(
        "counted_written={} stored={}",
        stats.written,
        stored_numbers(&dsn, "terminated_logs", "n", "true").len()
    );
}

fn terminated_backends_lose_nothing() {
    for batch in ["0", "1"] {
        let dsn = fresh_db("terminated");
        let output = run_child("terminated", &[("TEST_DSN", &dsn), ("TEST_BATCH", batch)]);
        assert_success(&output);
        let stored = stored_numbers(&dsn, "terminated_logs", "n", "true");
        let lines = stderr_numbers(&output, "terminated", "n");
        let (rows, on_stderr, uncertain) =
            check_every_event(&stored, &lines, 20_000, &format!("batch={batch}"));
        let counts = stdout_value(&output, "counted_written=");
        println!(
            "    batch={batch}: {rows} stored, {on_stderr} on stderr ({uncertain} of unknown outcome); {counts}"
        );
        // Counted as written means in the table.
        let (counted, stored_n) = counts.split_once(" stored=").unwrap();
        assert!(
            counted.parse::<u64>().unwrap() <= stored_n.parse::<u64>().unwrap(),
            "{counts}"
        );
    }
}
