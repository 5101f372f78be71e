//! The `pglog` command end to end, against real servers: `tail` (filters, JSON lines,
//! configuration found as `init()` finds it, following another process's rows through a
//! server restart and a batch writer's out-of-order commits), colours only on a
//! terminal (a pseudo-terminal here), `stats` (chart, JSON, SVG), `doctor` on a healthy
//! setup and on five broken ones, `prune` on both layouts, and `replay` of an outage's
//! stderr, column by column, twice.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;

const PGLOG: &str = env!("CARGO_BIN_EXE_pglog");

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "writer" => writer_program(),
            "outage" => outage_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    checks![
        tail_shows_the_newest_events_and_filters_them,
        tail_finds_the_configuration_as_init_does_and_never_prints_a_password,
        bad_input_gets_a_clear_message,
        colours_appear_on_a_terminal_only,
        tail_follow_shows_another_processs_rows_through_a_restart,
        tail_follow_misses_none_of_concurrent_batch_writers,
        stats_charts_levels_per_bucket,
        doctor_passes_a_healthy_setup,
        doctor_names_each_problem_and_its_fix,
        prune_removes_old_days_from_both_layouts,
        replay_restores_an_outage_column_by_column_once,
    ];
}

/// Runs the command with `args`, nothing of the developer's environment, in `dir`.
fn pglog_in(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(PGLOG);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .current_dir(dir);
    run_command(cmd)
}

fn pglog(args: &[&str]) -> Output {
    pglog_in(Path::new(env!("CARGO_TARGET_TMPDIR")), args, &[])
}

/// Runs the command with `args` on `table` of the database `dsn` names.
fn pglog_on(dsn: &str, table: &str, args: &[&str]) -> Output {
    pglog(&[args, &["--dsn", dsn, "--table", table]].concat())
}

/// The lines of a run that must have succeeded.
fn lines_of(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "pglog failed: {}\n{}",
        stdout(output),
        stderr(output)
    );
    stdout(output).lines().map(str::to_owned).collect()
}

/// A table with 40 events written by pglog (levels, key-values, func and scope), a
/// `critical` row a Python writer would add, and a row two days old.
fn logged_table(prefix: &str) -> (String, &'static str) {
    open_levels();
    let dsn = fresh_db(prefix);
    let table = "app_logs";
    let (logger, guard) = builder(&dsn, table).build().unwrap();
    for i in 0..36 {
        log::info!(logger: &logger, i, user_id = i + 100; "event {i}");
    }
    log::warn!(logger: &logger, user_id = 42; "disk almost full");
    log::error!(logger: &logger, user_id = "42", func = "sync", scope = "billing"; "sync failed");
    log::debug!(logger: &logger, "line one\nline two \u{1b}[31m");
    drop(guard);
    let mut client = connect(&dsn);
    client
        .batch_execute(&format!(
            "INSERT INTO {table} (timestamp, level, event, data) VALUES \
             (now(), 'critical', 'python says: database gone', '{{\"code_module\": \"svc.db\"}}'), \
             (now() - interval '2 days', 'info', 'an old event', '{{}}')"
        ))
        .unwrap();
    (dsn, table)
}

fn tail_shows_the_newest_events_and_filters_them() {
    let (dsn, table) = logged_table("tail");
    let tail = |extra: &[&str]| lines_of(&pglog_on(&dsn, table, &[&["tail"], extra].concat()));
    let newest = tail(&[]);
    assert_eq!(newest.len(), 20, "{newest:#?}");
    assert!(
        newest[19].contains(" CRITICAL svc.db: python says: database gone {"),
        "newest last, Python's level shown: {}",
        newest[19]
    );
    assert!(
        newest[18].contains(" DEBUG   cli: line one\\nline two \\u{1b}[31m {"),
        "{}",
        newest[18]
    );
    assert!(
        newest[17].contains(" ERROR   cli: sync failed {\"func\":\"sync\",\"scope\":\"billing\","),
        "{}",
        newest[17]
    );
    for line in &newest {
        let time = line.split(' ').next().unwrap();
        assert!(DateTime::parse_from_rfc3339(time).is_ok(), "{line}");
        assert!(time.ends_with('Z') && time.len() == 27, "{line}");
    }
    assert_eq!(tail(&["-n", "3"]).len(), 3);
    assert!(tail(&["-n", "0"]).is_empty());

    let all = tail(&["-n", "1000"]);
    assert_eq!(all.len(), 41);
    assert!(all[0].contains("an old event"), "oldest first: {}", all[0]);
    assert_eq!(tail(&["-n", "1000", "--since", "1d"]).len(), 40);
    assert_eq!(tail(&["-n", "1000", "--until", "1d"]).len(), 1);

    let errors = tail(&["--level", "error"]);
    assert_eq!(errors.len(), 2, "error and critical: {errors:#?}");
    assert_eq!(tail(&["--level", "WARNING"]).len(), 3);
    assert_eq!(tail(&["--level", "critical"]).len(), 1);

    let answer = tail(&["--where", "user_id=42"]);
    assert_eq!(answer.len(), 2, "the number and the string: {answer:#?}");
    assert_eq!(
        tail(&["--where", "user_id=42", "--level", "error"]).len(),
        1
    );
    assert_eq!(tail(&["--where", "user_id=100", "--where", "i=0"]).len(), 1);
    assert_eq!(tail(&["--where", "user_id=100", "--where", "i=1"]).len(), 0);
    assert_eq!(tail(&["--grep", "^event 1[0-9]$", "-n", "100"]).len(), 10);
    assert_eq!(tail(&["--grep", "(?i)^SYNC"]).len(), 1);
    assert_eq!(tail(&["--event", "almost"]).len(), 1);
    assert_eq!(tail(&["--scope", "billing"]).len(), 1);
    assert_eq!(tail(&["--func", "sync"]).len(), 1);
    let me = std::process::id().to_string();
    assert_eq!(tail(&["--pid", &me, "-n", "100"]).len(), 39);

    let json = tail(&["--output", "json", "-n", "2"]);
    assert_eq!(json.len(), 2);
    let error: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    let keys: Vec<&str> = error
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in ["id", "timestamp", "level", "event", "func", "scope", "data"] {
        assert!(keys.contains(&key), "{key} in {json:?}");
    }
    assert_eq!(error["event"], "line one\nline two \u{1b}[31m");
    assert_eq!(error["data"]["code_module"], "cli");
    println!("  tail: 20 newest of 41, 11 filters, JSON lines: as expected");
}

fn tail_finds_the_configuration_as_init_does_and_never_prints_a_password() {
    let (dsn, table) = logged_table("discover");
    let dir = scratch_dir("cli-config");
    // A URL with a password (trust ignores it) in stogger's section.
    let port = dsn
        .split("port=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let db = dsn.split("dbname=").nth(1).unwrap();
    std::fs::write(
        dir.join("pyproject.toml"),
        format!(
            "[tool.stogger]\npostgres_dsn = \"postgresql://postgres:%PASSWORD%@127.0.0.1:{port}/{db}\"\n\
             postgres_table = \"{table}\"\n"
        ),
    )
    .unwrap();
    let secret = [("STOGGER_POSTGRES_PASSWORD", "hunter2-secret")];
    let out = pglog_in(&dir, &["tail", "-n", "1"], &secret);
    let lines = lines_of(&out);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("database gone"), "{lines:?}");
    // The environment wins over the file, and --table over both.
    let out = pglog_in(&dir, &["tail"], &[("PGLOG_TABLE", "no_such_table")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no_such_table"), "{}", stderr(&out));
    let out = pglog_in(
        &dir,
        &["tail", "-n", "1", "--table", table],
        &[("PGLOG_TABLE", "no_such_table")],
    );
    assert_eq!(lines_of(&out).len(), 1);

    let doctor = pglog_in(&dir, &["doctor"], &secret);
    let text = format!("{}{}", stdout(&doctor), stderr(&doctor));
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains(&format!(
            "{:<20} set (from STOGGER_POSTGRES_PASSWORD)",
            "password"
        )),
        "{text}"
    );
    assert!(
        text.contains("pyproject.toml, line 2, [tool.stogger] postgres_dsn)"),
        "{text}"
    );
    assert!(
        text.contains("pyproject.toml, line 3, [tool.stogger] postgres_table)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{:<20} 4  (default)", "pool_size")),
        "{text}"
    );
    let doctor = pglog_in(&dir, &["doctor"], &[("PGLOG_POOL_SIZE", "7")]);
    assert!(
        stdout(&doctor).contains(&format!(
            "{:<20} 7  (environment PGLOG_POOL_SIZE)",
            "pool_size"
        )),
        "{}",
        stdout(&doctor)
    );
}

fn bad_input_gets_a_clear_message() {
    let (dsn, table) = logged_table("badinput");
    for (args, says) in [
        (vec!["tail", "--level", "loud"], "unknown level `loud`"),
        (
            vec!["tail", "--since", "yesterday"],
            "`yesterday` is not a time",
        ),
        (vec!["tail", "--where", "nokey"], "use KEY=VALUE"),
        (
            vec!["tail", "--grep", "(unclosed"],
            "invalid regular expression",
        ),
        (
            vec!["tail", "--since", "1h", "--until", "2h"],
            "no event can match",
        ),
        (vec!["stats", "--every", "0m"], "--every `0m`"),
        (
            vec!["stats", "--every", "1s", "--since", "30d"],
            "would not fit a chart",
        ),
        (vec!["prune", "--older-than", "12h"], "whole days"),
        (
            vec!["tail", "--table", "x\"; DROP TABLE app_logs; --"],
            "does not exist",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--dsn", &dsn]);
        if !args.contains(&"--table") {
            all.extend(["--table", table]);
        }
        let out = pglog(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("pglog: "), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert_eq!(count_rows(&dsn, table), 41, "nothing dropped");
    let out = pglog(&["tail", "--dsn", "host=127.0.0.1 port=1 connect_timeout=2"]);
    assert!(
        stderr(&out).contains("cannot connect to"),
        "{}",
        stderr(&out)
    );
    let out = pglog(&["tail", "--dsn", "postgresql://u:%PASSWORD%@h/db"]);
    assert!(!out.status.success());
    let out = pglog(&["tail", "-n", "-1"]);
    assert_eq!(out.status.code(), Some(2), "usage error: {}", stderr(&out));
}

fn count_rows(dsn: &str, table: &str) -> i64 {
    connect(dsn)
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

/// Runs the command on a pseudo-terminal; returns what it wrote there.
#[allow(unsafe_code)] // openpty(3): the one way to give a child a terminal without a tool
fn on_terminal(args: &[&str], envs: &[(&str, &str)]) -> String {
    let (mut leader, mut follower) = (0, 0);
    // SAFETY: openpty writes the two descriptors it opens; null name, termios, winsize.
    let opened = unsafe {
        libc::openpty(
            &mut leader,
            &mut follower,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (leader, follower) =
        unsafe { (OwnedFd::from_raw_fd(leader), OwnedFd::from_raw_fd(follower)) };
    let mut child = Command::new(PGLOG)
        .args(args)
        .env_clear()
        .env("TERM", "xterm-256color")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(follower.try_clone().unwrap()))
        .stderr(Stdio::from(follower))
        .spawn()
        .unwrap();
    let mut reader = std::fs::File::from(leader);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the child closed its end.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(all);
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "{args:?} on a terminal: {status}");
    let written = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    String::from_utf8_lossy(&written).into_owned()
}

fn colours_appear_on_a_terminal_only() {
    let (dsn, table) = logged_table("colour");
    let args = ["tail", "--dsn", &dsn, "--table", table, "-n", "3"];
    let coloured = on_terminal(&args, &[]);
    assert!(
        coloured.contains("\u{1b}[31m") || coloured.contains("\u{1b}[1m"),
        "{coloured:?}"
    );
    // The message's own escape stays escaped, coloured or not.
    assert!(coloured.contains("\\u{1b}[31m"), "{coloured:?}");
    let no_color = on_terminal(&args, &[("NO_COLOR", "1")]);
    assert!(!no_color.contains('\u{1b}'), "{no_color:?}");
    let never = on_terminal(&[&args[..], &["--color", "never"]].concat(), &[]);
    assert!(!never.contains('\u{1b}'), "{never:?}");
    let piped = stdout(&pglog(&args));
    assert!(!piped.contains('\u{1b}'), "{piped:?}");
    let forced = stdout(&pglog(&[&args[..], &["--color", "always"]].concat()));
    assert!(forced.contains("\u{1b}["), "{forced:?}");
    let chart = on_terminal(
        &["stats", "--dsn", &dsn, "--table", table, "--every", "1d"],
        &[],
    );
    assert!(chart.contains('█'), "bars on a terminal: {chart}");
    println!("  colours: on a pseudo-terminal yes; with NO_COLOR, --color never or a pipe no");
}

/// A program that logs `PGLOG_TEST_EVENTS` events (`i`, `w`) through `init()`, in batch
/// mode when `PGLOG_BATCH` is set, a `PGLOG_TEST_PAUSE_US` pause apart.
fn writer_program() {
    let events: u64 = env("PGLOG_TEST_EVENTS").parse().unwrap();
    let pause: u64 = env("PGLOG_TEST_PAUSE_US").parse().unwrap();
    let writer = env("PGLOG_TEST_WRITER");
    let guard = pglog::init().unwrap();
    for i in 0..events {
        log::info!(i, w = writer.as_str(); "written by {writer}");
        if pause > 0 {
            std::thread::sleep(Duration::from_micros(pause));
        }
    }
    drop(guard);
}

fn writer(dsn: &str, table: &str, name: &str, events: u64, pause_us: u64, batch: bool) -> Command {
    let mut cmd = child_command("writer");
    cmd.env("PGLOG_DSN", dsn)
        .env("PGLOG_TABLE", table)
        .env("PGLOG_TEST_EVENTS", events.to_string())
        .env("PGLOG_TEST_PAUSE_US", pause_us.to_string())
        .env("PGLOG_TEST_WRITER", name)
        .env("PGLOG_BATCH", if batch { "1" } else { "0" });
    cmd
}

/// `pglog tail -f` as a child, its lines (with when each arrived) on a channel.
struct Follower {
    child: std::process::Child,
    lines: mpsc::Receiver<(Instant, String)>,
    stderr: std::thread::JoinHandle<String>,
}

impl Follower {
    fn start(args: &[&str]) -> Follower {
        let mut child = Command::new(PGLOG)
            .args(args)
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Follower {
            child,
            lines,
            stderr,
        }
    }

    /// The next line, waiting at most `wait`.
    fn next(&self, wait: Duration) -> Option<(Instant, String)> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Lines until `done` says enough, or `wait` passes without a line.
    fn until(&self, wait: Duration, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        while !done(&seen) {
            match self.next(wait) {
                Some((_, line)) => seen.push(line),
                None => break,
            }
        }
        seen
    }

    fn stop(mut self) -> String {
        self.child.kill().ok();
        self.child.wait().ok();
        self.stderr.join().unwrap()
    }
}

fn tail_follow_shows_another_processs_rows_through_a_restart() {
    let server = throwaway_pg::Server::start().expect("start a server");
    let dsn = server.create_database("follow").unwrap();
    let table = "follow_logs";
    assert_success(&run_command(writer(&dsn, table, "before", 3, 0, false)));
    let follower = Follower::start(&["tail", "-f", "-n", "2", "--dsn", &dsn, "--table", table]);
    let first = follower.until(Duration::from_secs(30), |seen| seen.len() == 2);
    assert_eq!(first.len(), 2, "the newest two first: {first:?}");
    assert!(first[1].contains("\"i\":2"), "{first:?}");

    // Each row another process logs, timed from its commit to the line.
    let mut latencies = Vec::new();
    for round in 0..5 {
        let started = Instant::now();
        assert_success(&run_command(writer(
            &dsn,
            table,
            &format!("round{round}"),
            1,
            0,
            false,
        )));
        let committed = Instant::now();
        let (at, line) = follower.next(Duration::from_secs(30)).expect("the new row");
        assert!(line.contains(&format!("written by round{round}")), "{line}");
        latencies.push(at.saturating_duration_since(committed));
        let _ = started;
    }
    latencies.sort();
    println!(
        "  tail -f: another process's row shown {:?} after its commit (median of 5; max {:?})",
        latencies[2], latencies[4]
    );

    server.stop(throwaway_pg::StopMode::Fast).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    server.restart().unwrap();
    assert_success(&run_command(writer(&dsn, table, "after", 1, 0, false)));
    let after = follower.until(Duration::from_secs(60), |seen| {
        seen.iter().any(|l| l.contains("written by after"))
    });
    assert!(
        after.iter().any(|l| l.contains("written by after")),
        "follows on after the restart: {after:?}"
    );
    let stderr = follower.stop();
    assert_eq!(
        stderr.matches("lost the connection").count(),
        1,
        "said once: {stderr}"
    );
    assert_eq!(stderr.matches("reconnected").count(), 1, "{stderr}");
}

fn tail_follow_misses_none_of_concurrent_batch_writers() {
    let dsn = fresh_db("followbatch");
    let table = "busy_logs";
    assert_success(&run_command(writer(&dsn, table, "setup", 1, 0, false)));
    let follower = Follower::start(&[
        "tail", "-f", "-n", "0", "--output", "json", "--dsn", &dsn, "--table", table, "--where",
        "w=batch",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    // Two batch writers and a blocking one at once: ids are taken in one order and
    // committed in another; the blocking writer's rows are filtered out.
    let per_writer = 3_000u64;
    let writers: Vec<_> = [
        ("batch", true, 0),
        ("batch", true, 0),
        ("blocking", false, 200),
    ]
    .iter()
    .map(|(name, batch, pause)| {
        let mut cmd = writer(&dsn, table, name, per_writer, *pause, *batch);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.spawn().unwrap()
    })
    .collect();
    for child in writers {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let wanted = 2 * per_writer as usize;
    let seen = follower.until(Duration::from_secs(10), |seen| seen.len() >= wanted);
    std::thread::sleep(Duration::from_secs(1));
    let mut seen = seen;
    while let Some((_, line)) = follower.next(Duration::from_millis(500)) {
        seen.push(line);
    }
    follower.stop();
    let mut ids: Vec<i64> = seen
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let shown = ids.len();
    ids.sort_unstable();
    ids.dedup();
    let stored: i64 = connect(&dsn)
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE data->>'w' = 'batch'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored as usize, wanted);
    assert_eq!(shown, wanted, "each row shown exactly once");
    assert_eq!(ids.len(), wanted, "no row shown twice");
    println!(
        "  tail -f: {wanted} rows of two batch writers beside a filtered-out one, each shown once"
    );
}

fn stats_charts_levels_per_bucket() {
    let (dsn, table) = logged_table("stats");
    let dir = scratch_dir("cli-stats");
    let svg = dir.join("chart.svg");
    let svg_arg = svg.display().to_string();
    let stats = |args: &[&str]| lines_of(&pglog_on(&dsn, table, &[&["stats"], args].concat()));
    let text = stats(&["--since", "3d", "--every", "1d", "--svg", &svg_arg]);
    let joined = text.join("\n");
    assert!(joined.contains("bucket"), "{joined}");
    assert!(joined.contains("most frequent events"), "{joined}");
    let buckets: Vec<&String> = text.iter().filter(|l| l.starts_with("20")).collect();
    assert!((3..=4).contains(&buckets.len()), "a row per day: {joined}");
    let image = std::fs::read_to_string(&svg).unwrap();
    assert!(
        image.starts_with("<svg") && image.contains("critical"),
        "{image}"
    );

    // A figure summed over the buckets of a JSON answer.
    let summed = |json: &[String], figure: fn(&serde_json::Value) -> Option<i64>| -> i64 {
        let value: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
        value["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(figure)
            .sum()
    };
    let total =
        |b: &serde_json::Value| Some(b["total"].as_i64().expect("every bucket has a total"));
    let json = stats(&[
        "--since", "3d", "--every", "1h", "--output", "json", "--top", "3",
    ]);
    assert_eq!(summed(&json, total), 41, "every event counted once");
    assert_eq!(summed(&json, |b| b["levels"]["error"].as_i64()), 1);
    let value: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(value["top_events"].as_array().unwrap().len(), 3);
    let filtered = stats(&["--level", "error", "--output", "json"]);
    assert_eq!(
        summed(&filtered, total),
        2,
        "the default window (24h), errors and worse"
    );
}

/// The doctor's verdict line for `check`.
fn verdict<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.get(8..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no {check} line in:\n{report}"))
}

fn doctor_passes_a_healthy_setup() {
    let (dsn, table) = logged_table("healthy");
    let out = pglog_on(&dsn, table, &["doctor"]);
    let report = stdout(&out);
    println!(
        "{}",
        report
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(out.status.success(), "{report}{}", stderr(&out));
    for check in [
        "connect",
        "TLS",
        "privileges",
        "table",
        "partitions",
        "pooler",
        "server settings",
    ] {
        assert!(
            verdict(&report, check).starts_with("  ok"),
            "{check}: {report}"
        );
    }
    assert!(report.contains("every check passed"), "{report}");
}

fn doctor_names_each_problem_and_its_fix() {
    // A wrong password.
    let server = auth_server();
    let out = pglog(&[
        "doctor",
        "--dsn",
        &format!(
            "host=127.0.0.1 port={} user={SCRAM_ROLE} dbname=postgres password=wrong",
            server.port()
        ),
    ]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let line = verdict(&report, "authentication");
    assert!(
        line.contains("FAIL") && line.contains("password authentication failed"),
        "{report}"
    );
    assert!(
        report.contains("fix: check the role, the password"),
        "{report}"
    );
    assert!(
        !report.contains("wrong"),
        "the password is never shown: {report}"
    );

    // A role without INSERT.
    let (dsn, table) = logged_table("noinsert");
    connect(&dsn)
        .batch_execute(&format!(
            "CREATE ROLE reader LOGIN; GRANT SELECT ON {table} TO reader"
        ))
        .unwrap();
    let reader = dsn.replace("user=postgres", "user=reader");
    let out = pglog_on(&reader, table, &["doctor"]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let line = verdict(&report, "privileges");
    assert!(
        line.contains("FAIL") && line.contains("reader lacks INSERT on \"app_logs\""),
        "{report}"
    );
    assert!(
        report.contains("GRANT INSERT ON \"app_logs\" TO \"reader\""),
        "{report}"
    );

    // A missing index and a twin.
    let (dsn, table) = logged_table("shape");
    connect(&dsn)
        .batch_execute(&format!(
            "DROP INDEX idx_{table}_level; CREATE INDEX {table}_event_idx ON {table} (event)"
        ))
        .unwrap();
    let out = pglog_on(&dsn, table, &["doctor"]);
    let report = stdout(&out);
    let line = verdict(&report, "table");
    assert!(
        line.contains("index idx_app_logs_level is missing"),
        "{report}"
    );
    assert!(
        line.contains("index app_logs_event_idx is a twin of idx_app_logs_event"),
        "{report}"
    );
    assert!(
        report.contains("CREATE INDEX CONCURRENTLY IF NOT EXISTS \"idx_app_logs_level\""),
        "{report}"
    );
    assert!(
        report.contains("DROP INDEX CONCURRENTLY \"public\".\"app_logs_event_idx\""),
        "{report}"
    );

    // idle_session_timeout on the database.
    let (dsn, table) = logged_table("idle");
    let db = dsn.split("dbname=").nth(1).unwrap();
    connect(&dsn)
        .batch_execute(&format!(
            "ALTER DATABASE {db} SET idle_session_timeout = '1s'"
        ))
        .unwrap();
    let out = pglog_on(&dsn, table, &["doctor"]);
    let report = stdout(&out);
    let line = verdict(&report, "server settings");
    assert!(
        line.contains("warn") && line.contains("idle_session_timeout = 1s"),
        "{report}"
    );
    assert!(report.contains("PGLOG_IDLE_TIMEOUT_MS=750"), "{report}");

    // Nothing listening.
    let out = pglog(&[
        "doctor",
        "--dsn",
        "host=127.0.0.1 port=1 user=x dbname=y connect_timeout=2",
    ]);
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(verdict(&report, "connect").contains("FAIL"), "{report}");
    assert!(report.contains("pg_isready"), "{report}");
    assert!(verdict(&report, "privileges").contains("skip"), "{report}");

    // A configuration stogger reads differently (pyproject-compat/README.md).
    let dir = scratch_dir("stogger_edges");
    std::fs::write(
        dir.join("pyproject.toml"),
        "[tool.stogger]\npostgres_dsn = \"host=127.0.0.1 port=1 user=x dbname=y\"\n",
    )
    .unwrap();
    let env = [
        ("STOGGER_ENABLE_POSTGRES", "on"),
        ("STOGGER_POSTGRES_TABLE", ""),
    ];
    let report = stdout(&pglog_in(&dir, &["doctor"], &env));
    let line = verdict(&report, "stogger");
    for said in [
        "[tool.stogger] has no enable_postgres",
        "STOGGER_ENABLE_POSTGRES=`on`: stogger ignores this value",
        "STOGGER_POSTGRES_TABLE is empty",
    ] {
        assert!(
            line.contains("warn") && line.contains(said),
            "{said}: {report}"
        );
    }
    assert!(
        report.contains("set STOGGER_ENABLE_POSTGRES to 1 or 0"),
        "{report}"
    );
    let env = [("STOGGER_ENABLE_POSTGRES", "1")];
    std::fs::write(
        dir.join("pyproject.toml"),
        "[tool.stogger]\nenable_postgres = true\npostgres_dsn = \"host=127.0.0.1 port=1 user=x dbname=y\"\n",
    )
    .unwrap();
    let report = stdout(&pglog_in(&dir, &["doctor"], &env));
    assert!(verdict(&report, "stogger").contains("ok"), "{report}");
    println!("  doctor: wrong password, no INSERT, missing and twin index, idle_session_timeout, no server, stogger's reading of the configuration: each named with its fix");
}

fn prune_removes_old_days_from_both_layouts() {
    for partition in [pglog::Partition::None, pglog::Partition::Day] {
        let dsn = fresh_db("prune");
        let table = "pruned_logs";
        let (_, guard) = builder(&dsn, table).partition(partition).build().unwrap();
        let mut client = connect(&dsn);
        for (days, rows) in [(40, 6_000), (35, 500), (3, 200), (0, 100)] {
            client
                .execute(
                    &format!(
                        "INSERT INTO {table} (timestamp, level, event) SELECT \
                         date_trunc('day', now()) - make_interval(days => $1) + \
                         make_interval(secs => n), 'info', 'x' FROM generate_series(1, $2) AS n"
                    ),
                    &[&days, &rows],
                )
                .unwrap();
        }
        if partition == pglog::Partition::Day {
            // Rows in the default partition get their own partitions.
            guard.__maintain_now().unwrap();
        }
        drop(guard);
        let dry = lines_of(&pglog_on(
            &dsn,
            table,
            &["prune", "--older-than", "30d", "--dry-run"],
        ));
        assert!(
            dry[0].contains("would remove 6500 events"),
            "{partition:?}: {dry:?}"
        );
        assert_eq!(count_rows(&dsn, table), 6_800);
        let done = lines_of(&pglog_on(&dsn, table, &["prune", "--older-than", "30d"]));
        assert!(
            done.last().unwrap().contains("removed 6500 events"),
            "{partition:?}: {dry:?} {done:?}"
        );
        assert_eq!(count_rows(&dsn, table), 300);
        let again = lines_of(&pglog_on(&dsn, table, &["prune", "--older-than", "30d"]));
        assert!(
            again[0].contains("nothing older than"),
            "{partition:?}: {again:?}"
        );
        println!("  prune {partition:?}: {}", done.join(" | "));
    }
}

/// Messages a hostile or careless program logs.
fn hostile(i: u64) -> String {
    match i % 10 {
        0 => format!("nul \0 in {i}"),
        1 => format!("two\nlines\r\n{i}"),
        2 => format!("escape \u{1b}[2J\u{1b}[31m red {i}"),
        3 => format!("2026-01-01T00:00:00.000000Z ERROR forged: line {{\"i\": {i}}}"),
        4 => format!("backslash \\u{{41}} \\n {i} \u{202e}reversed"),
        5 => format!("{i} {}", "long ".repeat(800)),
        6 => format!("quote \" {{ }} : {i}"),
        _ => format!("plain event {i}"),
    }
}

/// Logs `PGLOG_TEST_EVENTS` hostile events in three phases, waiting between them for the
/// parent (which stops the server after the first and starts it after the second).
fn outage_program() {
    let events: u64 = env("PGLOG_TEST_EVENTS").parse().unwrap();
    let dir = std::path::PathBuf::from(env("PGLOG_TEST_DIR"));
    let guard = pglog::init().unwrap();
    for i in 0..events {
        for phase in 1..=2 {
            if i == events * phase / 3 {
                std::fs::write(dir.join(format!("phase{phase}")), "").unwrap();
                while !dir.join(format!("go{phase}")).exists() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let kind = if i % 7 == 0 { "nul\0key" } else { "plain" };
        log::info!(i, kind, func = "worker", scope = "job-\u{1}7"; "{}", hostile(i));
    }
    drop(guard);
}

fn replay_restores_an_outage_column_by_column_once() {
    let server = throwaway_pg::Server::start().expect("start a server");
    let dsn = server.create_database("replay").unwrap();
    let table = "outage_logs";
    let events = 3_000u64;
    let dir = scratch_dir("cli-replay");
    let mut cmd = child_command("outage");
    cmd.env("PGLOG_DSN", &dsn)
        .env("PGLOG_TABLE", table)
        .env("PGLOG_ECHO", "info")
        .env("PGLOG_LEVEL", "info")
        .env("PGLOG_TEST_EVENTS", events.to_string())
        .env("PGLOG_TEST_DIR", &dir);
    let waiter = std::thread::spawn(move || run_command(cmd));
    let wait_for = |name: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !dir.join(name).exists() {
            assert!(
                Instant::now() < deadline,
                "the program never reached {name}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("phase1");
    server.stop(throwaway_pg::StopMode::Immediate).unwrap();
    std::fs::write(dir.join("go1"), "").unwrap();
    wait_for("phase2");
    server.restart().unwrap();
    std::fs::write(dir.join("go2"), "").unwrap();
    let output = waiter.join().unwrap();
    assert_success(&output);
    let capture = dir.join("stderr.txt");
    std::fs::write(&capture, &output.stderr).unwrap();
    let capture = capture.display().to_string();
    let stored_before = count_rows(&dsn, table);
    assert!(
        (1..events as i64).contains(&stored_before),
        "an outage in the middle: {stored_before} of {events} stored"
    );

    // Every event is echoed on stderr: replayed into an empty table, the rows that the
    // outage let through must come back exactly, column by column.
    let replay = |table: &str, extra: &[&str]| {
        let mut args = vec!["replay", &capture, "--dsn", &dsn, "--table", table];
        args.extend_from_slice(extra);
        lines_of(&pglog(&args)).join("\n")
    };
    connect(&dsn)
        .batch_execute(&format!(
            "CREATE TABLE fresh_logs (LIKE {table} INCLUDING ALL)"
        ))
        .unwrap();
    let said = replay("fresh_logs", &[]);
    assert!(said.contains(&format!("{events} pglog events")), "{said}");
    assert!(said.contains(&format!("{events} inserted")), "{said}");
    let columns = "timestamp, level, event, func, scope, data";
    let differing: i64 = connect(&dsn)
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT {columns} FROM {table} \
                 EXCEPT ALL SELECT {columns} FROM fresh_logs) d"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        differing, 0,
        "a stored row that replay does not reproduce exactly"
    );

    let dry = replay(table, &["--dry-run"]);
    let missing = events as i64 - stored_before;
    assert!(
        dry.contains(&format!("{missing} would be inserted")),
        "{dry}"
    );
    assert_eq!(count_rows(&dsn, table), stored_before);
    let said = replay(table, &[]);
    assert!(said.contains(&format!("{missing} inserted")), "{said}");
    let again = replay(table, &[]);
    assert!(again.contains(" 0 inserted"), "{again}");
    // The table now holds what it would have held without the outage: each event once,
    // the same rows as the complete replay.
    let client = &mut connect(&dsn);
    let (rows, distinct): (i64, i64) = {
        let row = client
            .query_one(
                &format!("SELECT count(*), count(DISTINCT data->>'i') FROM {table}"),
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((rows, distinct), (events as i64, events as i64));
    let differing: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM ((SELECT {columns} FROM {table} EXCEPT ALL \
                 SELECT {columns} FROM fresh_logs) UNION ALL (SELECT {columns} FROM fresh_logs \
                 EXCEPT ALL SELECT {columns} FROM {table})) d"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(differing, 0);
    let nul: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE event LIKE 'nul % in %'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(nul, events as i64 / 10);
    let _: DateTime<Utc> = client
        .query_one(&format!("SELECT max(timestamp) FROM {table}"), &[])
        .unwrap()
        .get(0);
    println!(
        "  replay: {stored_before} of {events} stored during the outage; replay added {missing}, \
         a second replay 0; every row equal column by column to a full replay"
    );
}
