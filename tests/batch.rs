//! Batch mode against a real server: exact delivery, flush semantics, overflow policies,
//! a poison row, an outage.

mod common;

use std::time::{Duration, Instant};

use common::*;
use log::{LevelFilter, Log};
use pglog::Overflow;

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "forty_thousand" => forty_thousand_program(),
            "outage" => outage_program(),
            "slow_shutdown" => slow_shutdown_program(),
            "many_threads" => many_threads_program(),
            "big_events" => big_events_program(),
            "signalled" => signalled_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    checks![
        forty_thousand_events_from_four_threads_land,
        guard_drop_delivers_every_event_exactly_once,
        flush_commits_what_was_queued_before_it,
        drop_policy_counts_exactly,
        block_policy_waits_boundedly_then_falls_back,
        a_poison_row_spares_its_batch,
        a_poison_row_refused_at_commit_spares_its_batch,
        server_stopped_and_restarted_mid_run,
        a_shutdown_that_cannot_finish_loses_nothing,
        eight_busy_threads_never_overflow,
        big_events_are_bounded_in_bytes,
        sigterm_and_sigint_without_the_option_lose_at_most_the_queue,
        #[cfg(feature = "signals")]
        sigterm_and_sigint_with_the_option_lose_nothing,
        #[cfg(not(feature = "signals"))]
        flush_on_signal_names_its_feature,
        a_json_data_column_takes_batches,
        a_batch_too_slow_for_the_timeout_is_written_in_halves,
    ];
}

fn batch_builder(dsn: &str, table: &str) -> pglog::Builder {
    builder(dsn, table).batch()
}

fn count(dsn: &str, table: &str) -> i64 {
    connect(dsn)
        .query_one(&format!("SELECT count(*) FROM {}", quote_ident(table)), &[])
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
    let output = run_child("forty_thousand", &[("TEST_DSN", &dsn)]);
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
    // 10 queued, and the one being written.
    assert_eq!((stats.dropped, stats.queue_depth), (90, 11), "{stats:?}");
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

/// The same, refused only when the transaction commits (a deferred constraint trigger):
/// after the server has already said the COPY is complete.
fn a_poison_row_refused_at_commit_spares_its_batch() {
    open_levels();
    let dsn = fresh_db("poison_commit");
    let (logger, guard) = batch_builder(&dsn, "pc")
        .flush_interval(Duration::from_secs(120))
        .build()
        .unwrap();
    connect(&dsn)
        .batch_execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF NEW.event = 'poison' THEN RAISE EXCEPTION 'poison at commit'; END IF; \
             RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER refuse_poison AFTER INSERT ON pc \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        )
        .unwrap();
    for event in ["a", "b", "poison", "c", "d"] {
        log::info!(logger: &logger, "{event}");
    }
    guard.flush();
    let stats = guard.stats();
    let events: Vec<String> = connect(&dsn)
        .query("SELECT event FROM pc ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(events, ["a", "b", "c", "d"], "{stats:?}");
    assert_eq!((stats.written, stats.fallback), (4, 1), "{stats:?}");
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
    let output = run_child("outage", &[]);
    let (rows, lines) = check_outage(&output, OUTAGE_EVENTS);
    let elapsed = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("elapsed_ms="))
        .unwrap_or_default()
        .to_owned();
    println!("    {rows} rows, {lines} stderr lines, {elapsed} ms");
}

// --- a shutdown that cannot finish --------------------------------------------------------------

const SHUTDOWN_EVENTS: u64 = 300;

/// Creates `table` as pglog would, with a trigger that makes every INSERT or COPY take
/// `seconds`.
fn slow_table(dsn: &str, table: &str, seconds: f64) {
    let (_, guard) = batch_builder(dsn, table).build().unwrap();
    drop(guard);
    connect(dsn)
        .batch_execute(&format!(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON {table} FOR EACH STATEMENT EXECUTE FUNCTION slow()"
        ))
        .unwrap();
}

/// 300 events into a table too slow to take them before the flush timeout; then the
/// guard is dropped (`TEST_FAULT`: `slow` table, `frozen` server during the drop,
/// `nanosecond` flush timeout on a healthy server).
fn slow_shutdown_program() {
    open_levels();
    let fault = env("TEST_FAULT");
    let server = throwaway_pg::Server::start().unwrap();
    let dsn = server.create_database("shutdown").unwrap();
    let mut builder = batch_builder(&dsn, "shutdown_logs");
    match fault.as_str() {
        "slow" => slow_table(&dsn, "shutdown_logs", 2.5),
        "frozen" => {}
        "nanosecond" => builder = builder.flush_timeout(Duration::from_nanos(1)),
        other => panic!("unknown fault {other}"),
    }
    let (logger, guard) = builder.build().unwrap();
    for i in 0..SHUTDOWN_EVENTS {
        log::info!(logger: &logger, i; "at shutdown");
    }
    if fault == "frozen" {
        server.freeze().unwrap();
    }
    let started = Instant::now();
    drop(guard);
    println!("drop_ms={}", started.elapsed().as_millis());
    if fault == "frozen" {
        server.thaw().unwrap();
        // What the frozen server was given may commit now.
        std::thread::sleep(Duration::from_secs(3));
    }
    let stored: Vec<String> = connect(&dsn)
        .query("SELECT data->>'i' FROM shutdown_logs ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    println!("stored={}", stored.join(","));
    println!("stats {:?}", logger.stats());
}

fn a_shutdown_that_cannot_finish_loses_nothing() {
    let flush_timeout = Duration::from_secs(5);
    for fault in ["slow", "frozen", "nanosecond"] {
        let output = run_child("slow_shutdown", &[("TEST_FAULT", fault)]);
        assert_success(&output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let value = |prefix: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix}"))
                .to_owned()
        };
        let stored: Vec<u64> = value("stored=")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let lines: Vec<(u64, bool)> =
            fallback_events(&String::from_utf8_lossy(&output.stderr), "at shutdown")
                .into_iter()
                .map(|(json, uncertain)| (json["i"].as_u64().unwrap(), uncertain))
                .collect();
        let (rows, on_stderr, uncertain) =
            check_every_event(&stored, &lines, SHUTDOWN_EVENTS, fault);
        let drop_ms: u64 = value("drop_ms=").parse().unwrap();
        println!(
            "    {fault}: guard dropped in {drop_ms} ms; {rows} stored, {on_stderr} on stderr ({uncertain} of unknown outcome)"
        );
        // The drop waits the flush timeout at most, plus the time to print what is left.
        assert!(
            drop_ms <= (flush_timeout + Duration::from_millis(500)).as_millis() as u64,
            "{fault}: the drop took {drop_ms} ms"
        );
    }
}

// --- many busy threads on a healthy server --------------------------------------------------------

fn many_threads_program() {
    open_levels();
    let dsn = env("TEST_DSN");
    let (logger, guard) = pglog::Builder::new()
        .dsn(&dsn)
        .table("busy")
        .batch()
        .build()
        .unwrap();
    std::thread::scope(|s| {
        for thread in 0..8u64 {
            let logger = &logger;
            s.spawn(move || {
                for i in 0..25_000u64 {
                    log::info!(logger: logger, thread, i; "busy");
                }
            });
        }
    });
    drop(guard);
    println!("stats {:?}", logger.stats());
    let stats = logger.stats();
    println!(
        "written={} fallback={} dropped={} uncertain={}",
        stats.written, stats.fallback, stats.dropped, stats.uncertain
    );
}

fn eight_busy_threads_never_overflow() {
    let dsn = fresh_db("busy");
    let output = run_child("many_threads", &[("TEST_DSN", &dsn)]);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("written=200000 fallback=0 dropped=0 uncertain=0"),
        "{stdout}"
    );
    assert_no_notices(&output);
    assert_eq!(count(&dsn, "busy"), 200_000);
}

// --- big events ---------------------------------------------------------------------------------

const BIG_EVENTS: u64 = 4 * 5_000;

fn big_events_program() {
    open_levels();
    let dsn = env("TEST_DSN");
    let (logger, guard) = pglog::Builder::new()
        .dsn(&dsn)
        .table("big")
        .batch()
        .build()
        .unwrap();
    let payload = "x".repeat(100_000);
    let logged = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        // A stall a tenth of the way in (the table locked for 3 s): the writer stops,
        // and the queue fills to its byte bound.
        s.spawn(|| {
            while logged.load(std::sync::atomic::Ordering::Relaxed) < BIG_EVENTS / 10 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut locker = connect(&dsn);
            let mut tx = locker.transaction().unwrap();
            tx.batch_execute("LOCK TABLE big IN ACCESS EXCLUSIVE MODE")
                .unwrap();
            std::thread::sleep(Duration::from_secs(3));
            tx.commit().unwrap();
        });
        for thread in 0..4u64 {
            let (logger, payload, logged) = (&logger, payload.as_str(), &logged);
            s.spawn(move || {
                for i in 0..BIG_EVENTS / 4 {
                    let n = thread * 1_000_000 + i;
                    log::info!(logger: logger, n; "big {payload}");
                    logged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    drop(guard);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse::<u64>()
        .unwrap();
    let stats = logger.stats();
    println!("peak_kb={peak}");
    println!(
        "written={} fallback={} dropped={} uncertain={}",
        stats.written, stats.fallback, stats.dropped, stats.uncertain
    );
}

fn big_events_are_bounded_in_bytes() {
    let dsn = fresh_db("big");
    let output = run_child("big_events", &[("TEST_DSN", &dsn)]);
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let peak_kb: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak_kb="))
        .unwrap()
        .parse()
        .unwrap();
    let stored: Vec<u64> = connect(&dsn)
        .query("SELECT (data->>'n')::bigint FROM big", &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0) as u64)
        .collect();
    let lines: Vec<(u64, bool)> = fallback_events(&String::from_utf8_lossy(&output.stderr), "big")
        .into_iter()
        .map(|(json, uncertain)| (json["n"].as_u64().unwrap(), uncertain))
        .collect();
    // Renumber thread * 1,000,000 + i as 0..BIG_EVENTS for the check.
    let dense = |n: u64| n / 1_000_000 * (BIG_EVENTS / 4) + n % 1_000_000;
    let stored: Vec<u64> = stored.into_iter().map(dense).collect();
    let lines: Vec<(u64, bool)> = lines.into_iter().map(|(n, u)| (dense(n), u)).collect();
    let (rows, on_stderr, uncertain) = check_every_event(&stored, &lines, BIG_EVENTS, "big events");
    println!(
        "    4 x 5,000 events of 100 kB, the table locked for 3 s on the way: peak RSS {} MB; \
         {rows} stored, {on_stderr} on stderr ({uncertain} of unknown outcome)",
        peak_kb / 1024
    );
    assert!(peak_kb <= 256 * 1024, "peak RSS {peak_kb} kB");
    connect(&server().dsn("postgres"))
        .batch_execute(&format!(
            "DROP DATABASE \"{}\"",
            dsn.rsplit("dbname=").next().unwrap().trim_matches('\'')
        ))
        .ok();
}

// --- signals --------------------------------------------------------------------------------------

const SIGNALLED_EVENTS: u64 = 5_000;

/// Queues 5,000 events in front of a slow table (every batch takes 100 ms), says so on
/// stdout, and waits for its parent's signal.
fn signalled_program() {
    let dsn = env("TEST_DSN");
    let (logger, guard) = batch_builder(&dsn, "signalled")
        .flush_on_signal(env("TEST_FLUSH_ON_SIGNAL") == "1")
        .overflow(Overflow::Block(Duration::from_secs(60)))
        .build()
        .unwrap();
    log::set_max_level(LevelFilter::Trace);
    log::set_boxed_logger(Box::new(logger)).unwrap();
    for i in 0..SIGNALLED_EVENTS {
        log::info!(i; "signalled");
    }
    println!("logged depth={}", guard.stats().queue_depth);
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(guard);
}

/// Runs `signalled` and sends it `signal` once it has queued everything; returns (stored,
/// on stderr, queue depth when signalled, exit status).
fn signal_run(signal: &str, flush: bool) -> (u64, u64, u64, std::process::ExitStatus) {
    use std::io::{BufRead, BufReader, Read};
    let dsn = fresh_db("signalled");
    slow_table(&dsn, "signalled", 0.1);
    let mut child = child_command("signalled")
        .env("TEST_DSN", &dsn)
        .env("TEST_FLUSH_ON_SIGNAL", if flush { "1" } else { "0" })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).ok();
        text
    });
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let depth: u64 = line
        .trim()
        .strip_prefix("logged depth=")
        .unwrap_or_else(|| panic!("unexpected: {line}"))
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the child outlived its signal");
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = errors.join().unwrap();
    let lines = fallback_events(&stderr, "signalled").len() as u64;
    (count(&dsn, "signalled") as u64, lines, depth, status)
}

fn sigterm_and_sigint_without_the_option_lose_at_most_the_queue() {
    use std::os::unix::process::ExitStatusExt;
    for (signal, number) in [("TERM", 15), ("INT", 2)] {
        let (stored, lines, depth, status) = signal_run(signal, false);
        let lost = SIGNALLED_EVENTS - stored - lines;
        println!(
            "    SIG{signal}, no flush_on_signal: {stored} stored, {lines} on stderr, {lost} lost; {depth} were queued when it came"
        );
        assert_eq!(status.signal(), Some(number), "ended by the signal");
        // The README's window: what was queued, plus the batch being written.
        assert!(lost <= depth + 1_000, "lost {lost}, queued {depth}");
    }
}

#[cfg(feature = "signals")]
fn sigterm_and_sigint_with_the_option_lose_nothing() {
    use std::os::unix::process::ExitStatusExt;
    for (signal, number) in [("TERM", 15), ("INT", 2)] {
        let (stored, lines, depth, status) = signal_run(signal, true);
        println!(
            "    SIG{signal}, flush_on_signal: {stored} stored, {lines} on stderr; {depth} were queued when it came"
        );
        assert_eq!(
            status.signal(),
            Some(number),
            "ended by the signal, as usual"
        );
        assert_eq!(stored + lines, SIGNALLED_EVENTS);
    }
}

#[cfg(not(feature = "signals"))]
fn flush_on_signal_names_its_feature() {
    let err = pglog::Builder::new()
        .enable_postgres(false)
        .flush_on_signal(true)
        .build()
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`signals` cargo feature"), "{err}");
}

// --- a json data column ----------------------------------------------------------------------------

fn a_json_data_column_takes_batches() {
    open_levels();
    for prepared in [true, false] {
        let dsn = fresh_db("json");
        connect(&dsn)
            .batch_execute(
                "CREATE TABLE j (id bigserial PRIMARY KEY, timestamp timestamptz NOT NULL, \
                 level text NOT NULL, event text NOT NULL, func text, scope text, \
                 data json NOT NULL DEFAULT '{}')",
            )
            .unwrap();
        let (logger, guard) = batch_builder(&dsn, "j")
            .create_table(false)
            .prepared_statements(prepared)
            .build()
            .unwrap();
        for i in 0..100 {
            log::info!(logger: &logger, i, ok = true; "json");
        }
        guard.flush();
        let stats = guard.stats();
        assert_eq!((stats.written, stats.fallback), (100, 0), "{stats:?}");
        let sum: i64 = connect(&dsn)
            .query_one(
                "SELECT sum((data->>'i')::int) FROM j WHERE (data->>'ok')::bool",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(sum, 4950);
    }
}

// --- a batch too slow for the statement timeout -----------------------------------------------------

fn a_batch_too_slow_for_the_timeout_is_written_in_halves() {
    open_levels();
    let dsn = fresh_db("halves");
    // 2 ms a row: 1,000 rows take 2 s, longer than the 1 s statement timeout; 250 fit.
    let (_, guard) = batch_builder(&dsn, "halves").build().unwrap();
    drop(guard);
    connect(&dsn)
        .batch_execute(
            "CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$; \
             CREATE TRIGGER slow_row BEFORE INSERT ON halves FOR EACH ROW EXECUTE FUNCTION slow_row()",
        )
        .unwrap();
    let (logger, guard) = batch_builder(&dsn, "halves")
        .statement_timeout(Duration::from_secs(1))
        .flush_interval(Duration::from_secs(60))
        // Halving takes about 4 s here, close to the 5 s default: a loaded machine must
        // not turn this check of halving into one of the flush timeout.
        .flush_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for i in 0..1_000 {
        log::info!(logger: &logger, i; "halves");
    }
    let started = Instant::now();
    guard.flush();
    let stats = guard.stats();
    println!(
        "    1,000 rows at 2 ms each, 1 s statement timeout: {} written, {} to stderr, in {:.1?}",
        stats.written,
        stats.fallback + stats.uncertain,
        started.elapsed()
    );
    assert_eq!(
        (stats.written, stats.fallback, stats.uncertain),
        (1_000, 0, 0),
        "{stats:?}"
    );
    assert_eq!(count(&dsn, "halves"), 1_000);
}
