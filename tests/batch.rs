//! Batch mode against a real server: exact delivery, flush semantics, overflow policies,
//! a poison row, an outage.

mod common;

use std::time::{Duration, Instant};

use common::*;
use log::{LevelFilter, Log};
use pglog::Overflow;

const LIMIT: Duration = Duration::from_secs(180);

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "forty_thousand" => forty_thousand_program(),
            "outage" => outage_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    run_checks(&[
        (
            "forty_thousand_events_from_four_threads_land",
            forty_thousand_events_from_four_threads_land,
        ),
        (
            "guard_drop_delivers_every_event_exactly_once",
            guard_drop_delivers_every_event_exactly_once,
        ),
        (
            "flush_commits_what_was_queued_before_it",
            flush_commits_what_was_queued_before_it,
        ),
        ("drop_policy_counts_exactly", drop_policy_counts_exactly),
        (
            "block_policy_waits_boundedly_then_falls_back",
            block_policy_waits_boundedly_then_falls_back,
        ),
        (
            "a_poison_row_spares_its_batch",
            a_poison_row_spares_its_batch,
        ),
        (
            "server_stopped_and_restarted_mid_run",
            server_stopped_and_restarted_mid_run,
        ),
    ]);
}

fn batch_builder(dsn: &str, table: &str) -> pglog::Builder {
    builder(dsn, table).batch()
}

fn count(dsn: &str, table: &str) -> i64 {
    connect(dsn)
        .query_one(&format!("SELECT count(*) FROM {}", pglog_quote(table)), &[])
        .unwrap()
        .get(0)
}

// --- 40,000 events from four threads, through the global logger ---------------------------

fn forty_thousand_program() {
    let dsn = std::env::var("TEST_DSN").unwrap();
    let guard = pglog::Builder::new()
        .dsn(&dsn)
        .table("forty")
        .level(LevelFilter::Trace)
        .batch()
        // Every event must become a row, however slow a loaded machine makes the writer:
        // the policy for programs that would rather wait than send events to stderr.
        .overflow(Overflow::Block(Duration::from_secs(60)))
        .try_init()
        .unwrap();
    std::thread::scope(|s| {
        for thread in 0..4u64 {
            s.spawn(move || {
                for i in 0..10_000u64 {
                    log::info!(thread, i; "event");
                }
            });
        }
    });
    log::error!("e");
    log::warn!("w");
    log::info!("i");
    log::debug!("d");
    log::trace!("t");
    drop(guard);
}

fn forty_thousand_events_from_four_threads_land() {
    let dsn = fresh_db("forty");
    let output = run_child("forty_thousand", &[("TEST_DSN", &dsn)], LIMIT);
    assert_success(&output);
    assert_no_notices(&output);
    let mut client = connect(&dsn);
    let distinct: i64 = client
        .query_one(
            "SELECT count(DISTINCT (data->>'thread', data->>'i')) FROM forty WHERE event = 'event'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(distinct, 40_000);
    assert_eq!(count(&dsn, "forty"), 40_005);
    let levels: Vec<String> = client
        .query(
            "SELECT level FROM forty WHERE event <> 'event' ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(levels, ["error", "warning", "info", "debug", "trace"]);
}

// --- delivery and flushing ----------------------------------------------------------------------

fn guard_drop_delivers_every_event_exactly_once() {
    open_levels();
    let dsn = fresh_db("batchdrop");
    let (logger, guard) = batch_builder(&dsn, "b").build().unwrap();
    for i in 0..5_000 {
        log::info!(logger: &logger, i; "event");
    }
    drop(guard);
    let stats = logger.stats();
    assert_eq!(
        (stats.written, stats.fallback, stats.dropped),
        (5_000, 0, 0),
        "{stats:?}"
    );
    assert_eq!(count(&dsn, "b"), 5_000);
    // The writer has stopped: later events are not lost, they go to stderr.
    log::info!(logger: &logger, "after the guard");
    assert_eq!(logger.stats().fallback, 1);
    assert_eq!(logger.stats().queue_depth, 0);
}

fn flush_commits_what_was_queued_before_it() {
    open_levels();
    let dsn = fresh_db("batchflush");
    // A long interval: nothing is written until a flush or an error-level event.
    let (logger, guard) = batch_builder(&dsn, "f")
        .flush_interval(Duration::from_secs(120))
        .build()
        .unwrap();
    for i in 0..10 {
        log::info!(logger: &logger, i; "queued");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(&dsn, "f"),
        0,
        "nothing is written before the interval or a flush"
    );
    guard.flush();
    assert_eq!(
        count(&dsn, "f"),
        10,
        "Guard::flush returns once queued events are committed"
    );

    log::info!(logger: &logger, "via Log::flush");
    logger.flush();
    assert_eq!(count(&dsn, "f"), 11, "Log::flush is a real round trip too");

    // An error-level event is written at once, without a flush.
    log::error!(logger: &logger, "urgent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&dsn, "f") < 12 {
        assert!(
            Instant::now() < deadline,
            "the error-level event was not written promptly"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(guard);
}

// --- overflow ---------------------------------------------------------------------------------

/// Locks the table and logs one event, waiting until the writer is stuck writing it: the
/// queue then fills deterministically.
fn stuck_writer(dsn: &str, table: &str, logger: &pglog::Logger) -> postgres::Client {
    let mut locker = connect(dsn);
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        ))
        .unwrap();
    log::info!(logger: logger, "stuck in the writer");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = connect(dsn)
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'COPY%'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            return locker;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never blocked on the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn drop_policy_counts_exactly() {
    open_levels();
    let dsn = fresh_db("dropped");
    let (logger, guard) = batch_builder(&dsn, "d")
        .queue_capacity(10)
        .batch_size(1)
        .overflow(Overflow::Drop)
        .statement_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut locker = stuck_writer(&dsn, "d", &logger);
    for i in 0..100 {
        log::info!(logger: &logger, i; "while stuck");
    }
    let stats = guard.stats();
    assert_eq!((stats.dropped, stats.queue_depth), (90, 10), "{stats:?}");
    locker.batch_execute("COMMIT").unwrap();
    guard.flush();
    let stats = guard.stats();
    assert_eq!(
        (stats.written, stats.fallback, stats.dropped),
        (11, 0, 90),
        "{stats:?}"
    );
    assert_eq!(count(&dsn, "d"), 11);
}

fn block_policy_waits_boundedly_then_falls_back() {
    open_levels();
    let dsn = fresh_db("blocked");
    let wait = Duration::from_millis(100);
    let (logger, guard) = batch_builder(&dsn, "bl")
        .queue_capacity(10)
        .batch_size(1)
        .overflow(Overflow::Block(wait))
        .statement_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut locker = stuck_writer(&dsn, "bl", &logger);
    for i in 0..10 {
        log::info!(logger: &logger, i; "fits in the queue");
    }
    for i in 0..5 {
        let started = Instant::now();
        log::info!(logger: &logger, i; "waits, then goes to stderr");
        let took = started.elapsed();
        assert!(
            took >= wait && took < wait + Duration::from_secs(2),
            "call took {took:?}"
        );
    }
    assert_eq!(guard.stats().fallback, 5);
    locker.batch_execute("COMMIT").unwrap();
    guard.flush();
    let stats = guard.stats();
    assert_eq!(
        (stats.written, stats.fallback, stats.dropped),
        (11, 5, 0),
        "{stats:?}"
    );
}

// --- one bad row --------------------------------------------------------------------------------

fn a_poison_row_spares_its_batch() {
    open_levels();
    let dsn = fresh_db("poison");
    let (logger, guard) = batch_builder(&dsn, "p")
        .flush_interval(Duration::from_secs(120))
        .build()
        .unwrap();
    connect(&dsn)
        .batch_execute("ALTER TABLE p ADD CONSTRAINT no_poison CHECK (event <> 'poison')")
        .unwrap();
    for event in ["a", "b", "poison", "c", "d"] {
        log::info!(logger: &logger, "{event}");
    }
    guard.flush();
    let stats = guard.stats();
    assert_eq!((stats.written, stats.fallback), (4, 1), "{stats:?}");
    let events: Vec<String> = connect(&dsn)
        .query("SELECT event FROM p ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(events, ["a", "b", "c", "d"]);
}

// --- outage -------------------------------------------------------------------------------------

const OUTAGE_EVENTS: u64 = 50_000;

fn outage_program() {
    outage(
        pglog::Builder::new().batch(),
        OUTAGE_EVENTS,
        Duration::from_micros(40),
    );
}

fn server_stopped_and_restarted_mid_run() {
    let output = run_child("outage", &[], LIMIT);
    let (rows, lines) = check_outage(&output, OUTAGE_EVENTS);
    let elapsed = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("elapsed_ms="))
        .unwrap_or_default()
        .to_owned();
    println!("    {rows} rows, {lines} stderr lines, {elapsed} ms");
}
