//! Hostile input and misuse, each through the public API in a program of its own: log
//! calls from thread-local destructors, messages that try to forge lines or drive the
//! terminal, a second `try_init`, a 100 MB message, records logged while pglog formats
//! another, and a sample of random hostile events. Every program checks that its `Stats`
//! add up.
//!
//! `harness = false` (see `common::run_checks`).

mod common;

use std::cell::RefCell;
use std::process::Output;
use std::time::Instant;

use common::*;
use log::LevelFilter;

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "thread_local_destructor" => thread_local_destructor_program(),
            "forged_lines" => forged_lines_program(),
            "second_try_init" => second_try_init_program(),
            "huge_message" => huge_message_program(),
            "recursive" => recursive_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    checks![
        logging_from_thread_local_destructors_never_aborts,
        a_message_cannot_forge_a_line_or_drive_the_terminal,
        a_second_try_init_fails_before_touching_anything,
        a_huge_message_is_cut_and_the_database_stays_up,
        records_logged_while_formatting_are_counted,
        random_hostile_events_are_all_stored,
    ];
}

/// Prints the stats and whether they add up (`logged = written + fallback + dropped +
/// uncertain + queue_depth`), for [`assert_adds_up`].
fn report(stats: pglog::Stats) {
    let settled =
        stats.written + stats.fallback + stats.dropped + stats.uncertain + stats.queue_depth as u64;
    println!("stats {stats:?}");
    println!("adds_up={}", stats.logged == settled);
}

fn assert_adds_up(output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("adds_up=true"),
        "Stats do not add up:\n{stdout}"
    );
}

fn lines_with(output: &Output, needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

// --- thread-local destructors --------------------------------------------------------------

/// Logs from its `Drop`: what pools, tracing spans and test fixtures do.
struct LogsOnDrop(&'static str);

impl Drop for LogsOnDrop {
    fn drop(&mut self) {
        log::info!(place = self.0; "from a thread-local destructor");
        log::warn!(place = self.0; "from a thread-local destructor");
    }
}

thread_local! {
    static ON_DROP: RefCell<Option<LogsOnDrop>> = const { RefCell::new(None) };
}

fn thread_local_destructor_program() {
    let dsn = env("TEST_DSN");
    let batch = env("TEST_BATCH") == "1";
    let builder = pglog::Builder::new()
        .dsn(&dsn)
        .table("tls_logs")
        .level(LevelFilter::Trace);
    let guard = if batch { builder.batch() } else { builder }
        .try_init()
        .unwrap();
    // A scope is set, so the destructors read the scope thread-local too.
    let _scope = pglog::scope("teardown");
    std::thread::spawn(|| {
        let _scope = pglog::scope("worker");
        ON_DROP.with(|d| *d.borrow_mut() = Some(LogsOnDrop("spawned")));
    })
    .join()
    .unwrap();
    ON_DROP.with(|d| *d.borrow_mut() = Some(LogsOnDrop("main")));
    guard.flush();
    report(guard.stats());
    // The guard drops here, as in any program; the main thread's destructor runs after
    // `main` returns and logs into what is left (batch mode: stderr).
}

fn logging_from_thread_local_destructors_never_aborts() {
    for batch in ["0", "1"] {
        let dsn = fresh_db("tls");
        let output = run_child(
            "thread_local_destructor",
            &[("TEST_DSN", &dsn), ("TEST_BATCH", batch)],
        );
        assert_success(&output);
        let stored: Vec<String> = connect(&dsn)
            .query("SELECT data->>'place' FROM tls_logs ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let on_stderr = lines_with(&output, "from a thread-local destructor");
        println!(
            "    batch={batch}: exit {}; {} stored ({:?}), {} on stderr",
            output.status,
            stored.len(),
            stored,
            on_stderr.len()
        );
        // The spawned thread's two events, before the stats were taken.
        assert_adds_up(&output);
        assert_eq!(stored.iter().filter(|p| *p == "spawned").count(), 2);
        // The main thread's, logged after `main` returned: stored, or on stderr.
        let main_lines = on_stderr
            .iter()
            .filter(|l| l.contains("\"place\":\"main\""))
            .count();
        assert_eq!(
            stored.iter().filter(|p| *p == "main").count() + main_lines,
            2
        );
    }
}

// --- forged lines and terminal escapes -------------------------------------------------------

const FORGED: &str = "a\r\n2026-01-01T00:00:00.000000Z ERROR forged: fake line";
const ESCAPES: &str = "\x1b[2J\x1b[31mred\x1b]0;title\x07\u{9b}31m";

fn forged_lines_program() {
    let dsn = env("TEST_DSN");
    let up = env("TEST_UP") == "1";
    let guard = pglog::Builder::new()
        .dsn(if up {
            dsn.as_str()
        } else {
            "host=127.0.0.1 port=1 user=x dbname=x"
        })
        .table("forged_logs")
        .echo(LevelFilter::Warn)
        .try_init()
        .unwrap();
    log::warn!(user = FORGED; "{FORGED}");
    log::warn!(user = ESCAPES; "{ESCAPES}");
    report(guard.stats());
}

fn a_message_cannot_forge_a_line_or_drive_the_terminal() {
    for up in ["1", "0"] {
        let dsn = fresh_db("forged");
        let output = run_child("forged_lines", &[("TEST_DSN", &dsn), ("TEST_UP", up)]);
        assert_success(&output);
        assert_adds_up(&output);
        let stderr = &output.stderr;
        assert!(!stderr.contains(&0x1b), "a raw ESC reached stderr");
        assert!(
            !String::from_utf8_lossy(stderr).contains('\u{9b}'),
            "a raw CSI reached stderr"
        );
        // Echoed at warn: one line per event, whether the database is up or not.
        let events: Vec<String> = String::from_utf8_lossy(stderr)
            .lines()
            .filter(|l| !l.starts_with("pglog:"))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            events.len(),
            2,
            "one line per event:\n{}",
            events.join("\n")
        );
        assert!(
            !events.iter().any(|l| l.starts_with("2026-01-01")),
            "a forged line"
        );
        println!(
            "    database {}: {}",
            if up == "1" { "up" } else { "down" },
            events[0]
        );
        if up == "1" {
            let stored: Vec<String> = connect(&dsn)
                .query("SELECT event FROM forged_logs ORDER BY id", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(
                stored,
                [FORGED, ESCAPES],
                "the rows hold the text as logged"
            );
        }
    }
}

// --- a second try_init ------------------------------------------------------------------------

fn second_try_init_program() {
    let dsn = env("TEST_DSN");
    let guard = pglog::Builder::new()
        .dsn(&dsn)
        .table("first_logs")
        .try_init()
        .unwrap();
    let started = Instant::now();
    let second = pglog::Builder::new()
        .dsn(&dsn)
        .table("second_logs")
        .try_init();
    println!("second_ms={}", started.elapsed().as_millis());
    println!(
        "second={}",
        match second {
            Err(pglog::Error::AlreadyInitialized(_)) => "already initialized".to_owned(),
            other => format!("{:?}", other.map(drop)),
        }
    );
    log::info!("after the second try_init");
    report(guard.stats());
}

fn a_second_try_init_fails_before_touching_anything() {
    let dsn = fresh_db("second");
    let output = run_child("second_try_init", &[("TEST_DSN", &dsn)]);
    assert_success(&output);
    assert_adds_up(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("second=already initialized"), "{stdout}");
    assert_no_notices(&output);
    let exists: bool = connect(&dsn)
        .query_one("SELECT to_regclass('second_logs') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists, "the second try_init created its table");
    assert_eq!(rows(&dsn, "first_logs").len(), 1);
}

// --- a 100 MB message ------------------------------------------------------------------------------

fn huge_message_program() {
    let dsn = env("TEST_DSN");
    let guard = pglog::Builder::new()
        .dsn(&dsn)
        .table("huge_logs")
        .try_init()
        .unwrap();
    let huge = "h".repeat(100 << 20);
    let started = Instant::now();
    log::info!("{huge}");
    println!("huge_ms={}", started.elapsed().as_millis());
    log::info!("the next event");
    println!("reachable={}", guard.stats().database_reachable);
    report(guard.stats());
}

fn a_huge_message_is_cut_and_the_database_stays_up() {
    let dsn = fresh_db("huge");
    let output = run_child("huge_message", &[("TEST_DSN", &dsn)]);
    assert_success(&output);
    assert_adds_up(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("reachable=true"), "{stdout}");
    assert_no_notices(&output);
    let stored: Vec<(String, i64)> = connect(&dsn)
        .query(
            "SELECT event, coalesce(length(data->>'event_full'), 0) FROM huge_logs ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get::<_, i32>(1) as i64))
        .collect();
    assert_eq!(stored.len(), 2);
    assert!(
        stored[0].1 > 4 << 20 && stored[0].1 < (4 << 20) + 100,
        "{}",
        stored[0].1
    );
    let huge_ms = stdout
        .lines()
        .find_map(|l| l.strip_prefix("huge_ms="))
        .unwrap();
    println!(
        "    100 MB message: stored cut to {} characters in {huge_ms} ms; next event stored",
        stored[0].1
    );
}

// --- records logged while pglog formats another ----------------------------------------------------

/// A value whose formatting logs (a `Display` impl that logs, as some do for diagnostics).
struct Chatty;

impl std::fmt::Display for Chatty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        log::info!("logged while formatting");
        log::warn!("logged while formatting");
        f.write_str("chatty")
    }
}

fn recursive_program() {
    let dsn = env("TEST_DSN");
    let guard = pglog::Builder::new()
        .dsn(&dsn)
        .table("recursive_logs")
        .try_init()
        .unwrap();
    log::info!(v = log::kv::Value::from_display(&Chatty); "outer {}", Chatty);
    report(guard.stats());
}

fn records_logged_while_formatting_are_counted() {
    let dsn = fresh_db("recursive");
    let output = run_child("recursive", &[("TEST_DSN", &dsn)]);
    assert_success(&output);
    assert_adds_up(&output);
    let notices = lines_with(&output, "pglog:");
    assert_eq!(notices.len(), 1, "said once: {notices:?}");
    assert!(notices[0].contains("dropped"), "{notices:?}");
    println!(
        "    {}",
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("")
    );
}

// --- a sample of random hostile events -------------------------------------------------------------

/// Events built from a seeded generator: NUL, controls, escapes, deep nesting, non-finite
/// and huge numbers, reserved and duplicate keys. The server takes every one.
fn random_hostile_events_are_all_stored() {
    open_levels();
    let dsn = fresh_db("random");
    let (logger, guard) = builder(&dsn, "random_logs").build().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let pieces = [
        "\0", "\\u0000", "\\", "\"", "\r\n", "\x1b[2J", "\u{9b}", "\u{202e}", "é", "💥", "{", "}",
        " ", "x",
    ];
    let text = |next: &mut dyn FnMut(u64) -> u64| -> String {
        (0..next(12))
            .map(|_| pieces[next(pieces.len() as u64) as usize])
            .collect()
    };
    let keys = [
        "func",
        "scope",
        "pid",
        "code_module",
        "target",
        "k",
        "k",
        "event_full",
    ];
    let events = 500;
    for i in 0..events {
        let message = text(&mut next);
        let key = keys[next(keys.len() as u64) as usize];
        let nested = (0..next(300)).fold(serde_json::json!(text(&mut next)), |inner, _| {
            serde_json::json!([inner])
        });
        match next(6) {
            0 => log::info!(logger: &logger, i, k = f64::NAN; "{message}"),
            1 => log::info!(logger: &logger, i, k = i128::MIN, u = u128::MAX; "{message}"),
            2 => log::info!(logger: &logger, i, deep:serde = nested; "{message}"),
            3 => log::info!(logger: &logger, i, key = text(&mut next).as_str(); "{message}"),
            4 => {
                let kvs = [
                    (key, log::kv::Value::from(message.as_str())),
                    ("i", log::kv::Value::from(i)),
                ];
                logger.log_kvs(&message, &kvs);
            }
            _ => log::info!(logger: &logger, i, f = f64::NEG_INFINITY, g = 1e308; "{message}"),
        }
    }
    let stats = guard.stats();
    assert_eq!(
        (stats.written, stats.fallback, stats.uncertain),
        (events, 0, 0),
        "{stats:?}"
    );
    let stored: i64 = connect(&dsn)
        .query_one("SELECT count(*) FROM random_logs", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored as u64, events);
}

/// Logs `message` with `kvs` (arbitrary keys) through `logger`.
trait LogKvs {
    fn log_kvs(&self, message: &str, kvs: &[(&str, log::kv::Value<'_>)]);
}

impl LogKvs for pglog::Logger {
    fn log_kvs(&self, message: &str, kvs: &[(&str, log::kv::Value<'_>)]) {
        use log::Log;
        self.log(
            &log::Record::builder()
                .args(format_args!("{message}"))
                .level(log::Level::Info)
                .target("random")
                .key_values(&kvs)
                .build(),
        );
    }
}
