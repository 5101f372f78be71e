//! The accounting of every event: each one stored once or written to stderr once, never
//! both unless pglog said the write's outcome was unknown; and a program that checks it
//! across a server stopped and restarted under it.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{assert_success, connect};

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
