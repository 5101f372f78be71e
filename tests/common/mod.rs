//! Helpers shared by the integration tests: the throwaway server, fresh databases,
//! reading rows back.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::atomic::{AtomicU32, Ordering};

pub use throwaway_pg::Server;

/// The server every test of this binary shares; started on first use, stopped when the
/// test process exits. Fails the test (never skips) when no server can be started.
pub fn server() -> &'static Server {
    Server::shared()
}

/// A new, empty database on the shared server; returns its DSN.
pub fn fresh_db(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    server()
        .create_database(&name)
        .expect("create a test database")
}

pub fn connect(dsn: &str) -> postgres::Client {
    postgres::Client::connect(dsn, postgres::NoTls).expect("connect to the test server")
}

/// Lets `log::info!(logger: &l, ...)` through: those macros also check the global max level.
pub fn open_levels() {
    log::set_max_level(log::LevelFilter::Trace);
}

/// A builder aimed at `dsn` with timeouts short enough for tests.
pub fn builder(dsn: &str, table: &str) -> pglog::Builder {
    pglog::Builder::new()
        .dsn(dsn)
        .table(table)
        .level(log::LevelFilter::Trace)
}

/// One stored row, as the tests look at it.
#[derive(Debug)]
pub struct Stored {
    pub level: String,
    pub event: String,
    pub func: Option<String>,
    pub scope: Option<String>,
    pub data: serde_json::Value,
}

pub fn rows(dsn: &str, table: &str) -> Vec<Stored> {
    let sql = format!(
        "SELECT level, event, func, scope, data FROM {} ORDER BY id",
        pglog_quote(table)
    );
    connect(dsn)
        .query(&sql, &[])
        .expect("read rows back")
        .iter()
        .map(|r| Stored {
            level: r.get(0),
            event: r.get(1),
            func: r.get(2),
            scope: r.get(3),
            data: r.get(4),
        })
        .collect()
}

pub fn pglog_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn index_names(dsn: &str, table: &str) -> Vec<String> {
    let mut names: Vec<String> = connect(dsn)
        .query(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass($1) AND NOT i.indisprimary ORDER BY 1",
            &[&pglog_quote(table)],
        )
        .expect("list indexes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    names
}

pub fn expected_indexes(table: &str) -> Vec<String> {
    let mut names: Vec<String> = ["timestamp", "level", "event", "data"]
        .iter()
        .map(|s| format!("idx_{table}_{s}"))
        .collect();
    names.sort();
    names
}

// --- programs run as child processes ---------------------------------------------------
//
// A process can install a global logger once, and some checks read what a program wrote
// on stderr: such tests live in `harness = false` binaries whose `main` runs the checks,
// or, when `PGLOG_TEST_CHILD` names a program, runs that program instead.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CHILD: &str = "PGLOG_TEST_CHILD";

/// The child program this process should run, if it is a child.
pub fn child_program() -> Option<String> {
    std::env::var(CHILD).ok()
}

/// Runs the named checks (all, or those matching the command line's filters), prints
/// libtest-style lines, and exits non-zero when any failed.
pub fn run_checks(checks: &[(&str, fn())]) {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, check) in checks {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        match std::panic::catch_unwind(*check) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1?})", started.elapsed());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    let status = if failed == 0 { "ok" } else { "FAILED" };
    println!("\ntest result: {status}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out\n");
    if failed > 0 {
        std::process::exit(101);
    }
}

/// A command that runs `program` in a child process of this test binary.
pub fn child_command(program: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD, program);
    cmd
}

/// Runs `program` in a child process of this test binary and waits for it, at most
/// `limit`: a child that hangs is killed and the test fails.
pub fn run_child(program: &str, envs: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = child_command(program);
    cmd.envs(envs.iter().copied());
    run_command(cmd, limit)
}

/// Runs `cmd` with its output captured, at most `limit`.
pub fn run_command(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    // Drain both pipes while waiting: a child blocked on a full pipe would look hung.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            pipe.read_to_end(&mut buf).ok();
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!(
                "child still running after {limit:?}: killed\nstderr tail:\n{}",
                tail(&stderr, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// An outage program: owns its server (the faults would disturb other tests), logs
/// `events` through the global logger `builder` makes, pausing `pause` after each,
/// stops the server with `-m immediate` a quarter of the way in and restarts it three
/// quarters in. Prints the `i` of every stored row on stdout at the end, for
/// [`check_outage`].
pub fn outage(builder: pglog::Builder, events: u64, pause: Duration) {
    let server = throwaway_pg::Server::start().expect("start a server");
    let dsn = server.create_database("outage").unwrap();
    let guard = builder.dsn(&dsn).table("outage_logs").try_init().unwrap();
    let started = Instant::now();
    for i in 0..events {
        if i == events / 4 {
            server.stop(throwaway_pg::StopMode::Immediate).unwrap();
        }
        if i == events * 3 / 4 {
            server.restart().unwrap();
        }
        log::info!(i; "event");
        std::thread::sleep(pause);
    }
    let stats = guard.stats();
    drop(guard);
    let stored: Vec<String> = connect(&dsn)
        .query("SELECT data->>'i' FROM outage_logs ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    println!("elapsed_ms={}", started.elapsed().as_millis());
    println!(
        "stats written={} fallback={}",
        stats.written, stats.fallback
    );
    println!("stored={}", stored.join(","));
}

/// What an outage program reported: the `i` of every stored row (its stdout line
/// `stored=...`) and of every event it wrote to stderr instead. Checks that every event
/// from 0 to `events` is in one of them, in both only when stderr says the write's
/// outcome was unknown, and that rows resume after the restart three quarters in.
pub fn check_outage(output: &Output, events: u64) -> (usize, usize) {
    assert_success(output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stored: Vec<u64> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stored="))
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let fell_back: Vec<(u64, bool)> = fallback_events(&stderr, "event")
        .into_iter()
        .map(|(json, uncertain)| (json["i"].as_u64().unwrap(), uncertain))
        .collect();
    let (rows, lines, _) = check_every_event(&stored, &fell_back, events, "outage");
    assert!(
        stored.iter().any(|&i| i > events * 3 / 4),
        "rows resume after the restart"
    );
    (rows, lines)
}

pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "child failed: {}\nstdout:\n{}\nstderr tail:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        tail(&String::from_utf8_lossy(&output.stderr), 40)
    );
}

/// Fails with the notices when the child printed any `pglog:` line.
pub fn assert_no_notices(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let notices: Vec<&str> = stderr.lines().filter(|l| l.starts_with("pglog:")).collect();
    assert!(
        notices.is_empty(),
        "no notices expected, got:\n{}",
        notices.join("\n")
    );
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The events a child wrote to stderr instead of storing them: the JSON of every line
/// whose message is `event`, with whether the line says the write's outcome is unknown
/// (such an event may be in the table too).
pub fn fallback_events(stderr: &str, event: &str) -> Vec<(serde_json::Value, bool)> {
    // `<time> <LEVEL> <target>: <message> {json}`; a long message is shown cut, so match
    // its start, and the key-values from the first ` {"` after it.
    let marker = format!(": {event}");
    stderr
        .lines()
        .filter_map(|line| {
            let after = line.find(&marker)? + marker.len();
            let at = after + line[after..].find(" {\"")? + 1;
            let json: serde_json::Value = serde_json::from_str(&line[at..]).ok()?;
            let uncertain = json["pglog_outcome"] == "unknown";
            Some((json, uncertain))
        })
        .collect()
}

/// Checks that the events numbered `0..count` are each stored once or written to stderr
/// once, never both unless stderr says the write's outcome was unknown. Returns the
/// numbers stored, on stderr, and uncertain.
pub fn check_every_event(
    stored: &[u64],
    on_stderr: &[(u64, bool)],
    count: u64,
    what: &str,
) -> (usize, usize, usize) {
    use std::collections::BTreeSet;
    let rows: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(rows.len(), stored.len(), "{what}: an event stored twice");
    let lines: BTreeSet<u64> = on_stderr.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        lines.len(),
        on_stderr.len(),
        "{what}: an event on stderr twice"
    );
    let uncertain: BTreeSet<u64> = on_stderr
        .iter()
        .filter(|(_, u)| *u)
        .map(|(i, _)| *i)
        .collect();
    let both: BTreeSet<u64> = rows.intersection(&lines).copied().collect();
    assert!(
        both.is_subset(&uncertain),
        "{what}: events both stored and on stderr without an unknown outcome: {:?}",
        both.difference(&uncertain).take(10).collect::<Vec<_>>()
    );
    let all: BTreeSet<u64> = rows.union(&lines).copied().collect();
    let missing: Vec<u64> = (0..count).filter(|i| !all.contains(i)).take(10).collect();
    assert!(missing.is_empty(), "{what}: events lost, e.g. {missing:?}");
    assert_eq!(
        all.len() as u64,
        count,
        "{what}: events that were never logged"
    );
    (rows.len(), lines.len(), uncertain.len())
}
