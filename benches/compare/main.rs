//! The whole comparison in one run, on one throwaway server with the same settings for
//! everybody, each pglog mode against its reference writing the same rows into a table
//! pglog created:
//!
//! - blocking mode, 1 and 4 threads, against `pgbench -M prepared` (1 and 4 clients);
//!   and with unnamed statements only (`prepared_statements(false)`, what every session
//!   behind a transaction pooler uses) against the default, prepared path;
//! - batch mode against `psql \copy`, with unnamed statements (one multi-row `INSERT`
//!   per batch instead of `COPY`) too, and against the Python library fapilog's
//!   `PostgresSink` (batch sizes 100 and 1,000), installed into a virtualenv here;
//! - startup: from `build()` to the first row committed, and `build()` with the
//!   database down;
//! - the caller-side cost of a batch-mode call, as percentiles.
//!
//! `cargo bench --bench compare` measures (medians of `PGLOG_BENCH_RUNS`, default 9, runs
//! of `PGLOG_BENCH_EVENTS` events) and writes `benches/RESULTS.md` and
//! `benches/results.svg`. Under `cargo test` a smoke pass checks that every part still
//! works, without fapilog.

#[path = "../common/mod.rs"]
mod common;
mod references;
mod report;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use references::*;
use report::{Ratio, Report, Startup};

/// fapilog's batch sizes to try; its best one is the reference for the 5× target.
const FAPILOG_BATCHES: [u64; 2] = [100, 1_000];

fn main() {
    open_levels();
    let server = server();
    let dsn = server.create_database("bench").unwrap();
    let data = ReferenceData::read(&dsn);
    let fapilog = measuring().then(Fapilog::install);
    let load_before = load_average();
    let mut report = Report::default();
    let blocking_events = events(20_000, 200);
    let batch_events = events(100_000, 1_000);

    blocking(&mut report, &server, &dsn, &data, blocking_events);
    batch(
        &mut report,
        &server,
        &dsn,
        &data,
        fapilog.as_ref(),
        batch_events,
    );
    startup(&mut report, &dsn, &data);
    let caller = caller_cost(&dsn);

    if !measuring() {
        println!(
            "smoke pass ({blocking_events} blocking and {batch_events} batch events, one run): \
             not a measurement. fapilog SKIPPED (it needs its Python virtualenv); \
             `cargo bench --bench compare` measures everything, fapilog included"
        );
        return;
    }
    report.notes.push(caller);
    report.context = context(&server, blocking_events, batch_events, &load_before);
    let markdown = report.markdown();
    println!("\n{markdown}");
    let title = format!(
        "pglog and references, median of {} runs, {}",
        runs(),
        chrono::Utc::now().format("%Y-%m-%d")
    );
    for (file, text) in [
        ("RESULTS.md", markdown),
        ("results.svg", report.svg(&title)),
    ] {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/").to_owned() + file;
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {path}: {e}"));
        println!("wrote {path}");
    }
}

fn blocking(
    report: &mut Report,
    server: &throwaway_pg::Server,
    dsn: &str,
    data: &ReferenceData,
    n: u64,
) {
    let results = rounds(vec![
        Box::new(|run| pglog_blocking(dsn, &format!("blocking1_{run}"), n, 1, true)),
        Box::new(|run| pgbench_insert(server, dsn, &format!("pgbench1_{run}"), data, n, 1)),
        Box::new(|run| pglog_blocking(dsn, &format!("blocking4_{run}"), n, 4, true)),
        Box::new(|run| pgbench_insert(server, dsn, &format!("pgbench4_{run}"), data, n, 4)),
        Box::new(|run| pglog_blocking(dsn, &format!("unnamed1_{run}"), n, 1, false)),
    ]);
    let names = [
        ("pglog blocking, 1 thread", true),
        ("pgbench -M prepared, 1 client", false),
        ("pglog blocking, 4 threads", true),
        ("pgbench -M prepared, 4 clients", false),
        ("pglog blocking, 1 thread, unnamed statements", true),
    ];
    let at: Vec<usize> = names
        .iter()
        .zip(&results)
        .map(|((name, pglog), runs)| report.rate(*name, runs, *pglog))
        .collect();
    report.ratios.push(Ratio {
        ours: at[0],
        reference: at[1],
        target: Some(0.9),
    });
    report.ratios.push(Ratio {
        ours: at[2],
        reference: at[3],
        target: None,
    });
    // What a session behind a transaction pooler pays, against the direct, prepared path.
    report.ratios.push(Ratio {
        ours: at[4],
        reference: at[0],
        target: None,
    });
}

/// Blocking mode, `threads` threads sharing one logger (and its pool of 4 sessions);
/// `prepared`: the default, else unnamed statements only.
fn pglog_blocking(dsn: &str, table: &str, events: u64, threads: u64, prepared: bool) -> f64 {
    let (logger, guard) = pglog::Builder::new()
        .dsn(dsn)
        .table(table)
        .prepared_statements(prepared)
        .build()
        .unwrap();
    let per_thread = events / threads;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let logger = &logger;
            scope.spawn(move || {
                for i in t * per_thread..(t + 1) * per_thread {
                    log_event(logger, i);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let stats = guard.stats();
    assert_eq!(stats.written, per_thread * threads, "{stats:?}");
    (per_thread * threads) as f64 / elapsed.as_secs_f64()
}

fn batch(
    report: &mut Report,
    server: &throwaway_pg::Server,
    dsn: &str,
    data: &ReferenceData,
    fapilog: Option<&Fapilog>,
    n: u64,
) {
    let mut systems: Vec<Box<dyn FnMut(usize) -> f64 + '_>> = vec![
        Box::new(|run| pglog_batch(dsn, &format!("batch_{run}"), n, true)),
        Box::new(|run| psql_copy(server, dsn, &format!("copy_{run}"), data, n)),
        Box::new(|run| pglog_batch(dsn, &format!("batch_unnamed_{run}"), n, false)),
    ];
    let url = server.url("bench");
    for (f, size) in fapilog
        .iter()
        .flat_map(|f| FAPILOG_BATCHES.map(|size| (*f, size)))
    {
        let url = url.clone();
        systems.push(Box::new(move |run| {
            f.write(&url, dsn, &format!("fapilog{size}_{run}"), data, n, size)
        }));
    }
    let results = rounds(systems);
    let ours = report.rate("pglog batch", &results[0], true);
    let copy = report.rate("psql \\copy", &results[1], false);
    let unnamed = report.rate("pglog batch, unnamed statements", &results[2], true);
    report.ratios.push(Ratio {
        ours,
        reference: copy,
        target: Some(0.8),
    });
    report.ratios.push(Ratio {
        ours: unnamed,
        reference: ours,
        target: None,
    });
    if fapilog.is_none() {
        return;
    }
    let best = results[3..].iter().map(|r| median(r)).fold(0.0, f64::max);
    for (size, runs) in FAPILOG_BATCHES.iter().zip(&results[3..]) {
        let name = format!(
            "fapilog {} PostgresSink, batch {}",
            Fapilog::VERSION,
            thousands(*size as f64)
        );
        let reference = report.rate(name, runs, false);
        report.ratios.push(Ratio {
            ours,
            reference,
            // The target is against fapilog at its best.
            target: (median(runs) == best).then_some(5.0),
        });
    }
    let copy_rate = report.rates[copy].events_per_s();
    if 5.0 * best > copy_rate {
        report.notes.push(format!(
            "5× fapilog at its best is {} events/s, more than `psql \\copy` of the same rows \
             reaches on this server ({}): one server backend's ingest rate for this table and \
             its indexes bounds any writer on one connection, pglog's batch mode included.",
            thousands(5.0 * best),
            thousands(copy_rate),
        ));
    }
    report.notes.push(format!(
        "Schemas. pglog (and the pgbench and \\copy references): {}. \
         fapilog's own table, which it creates: {}. fapilog stores its whole event \
         envelope in `event` (JSONB) and extracts columns from it.",
        describe_table(dsn, "batch_0"),
        describe_table(dsn, &format!("fapilog{}_0", FAPILOG_BATCHES[0])),
    ));
}

/// From `build()` until the guard's drop has committed the last event; `prepared`: the
/// default (`COPY`), else one multi-row `INSERT` per batch.
fn pglog_batch(dsn: &str, table: &str, n: u64, prepared: bool) -> f64 {
    create_table(dsn, table);
    let started = Instant::now();
    let (logger, guard) = pglog::Builder::new()
        .dsn(dsn)
        .table(table)
        .prepared_statements(prepared)
        .batch()
        .build()
        .unwrap();
    for i in 0..n {
        log_event(&logger, i);
    }
    drop(guard);
    let elapsed = started.elapsed();
    let stats = logger.stats();
    assert_eq!(stats.written, n, "every event must be a row: {stats:?}");
    n as f64 / elapsed.as_secs_f64()
}

fn startup(report: &mut Report, dsn: &str, data: &ReferenceData) {
    for table in ["first_blocking", "first_batch", "first_reference"] {
        create_table(dsn, table);
    }
    let first = rounds(vec![
        Box::new(|_| first_row(dsn, "first_blocking", false)),
        Box::new(|_| first_row(dsn, "first_batch", true)),
        Box::new(|_| connect_and_insert(dsn, "first_reference", data)),
    ]);
    let down = rounds(vec![
        Box::new(|_| init_database_down(false)),
        Box::new(|_| init_database_down(true)),
    ]);
    let reference = Some(("connect + INSERT (rust-postgres)", median(&first[2])));
    let max = |r: &[f64]| r.iter().copied().fold(0.0, f64::max);
    for (what, samples, reference, limit) in [
        (
            "build() to first row committed, blocking",
            &first[0],
            reference,
            None,
        ),
        (
            "build() to first row committed, batch",
            &first[1],
            reference,
            None,
        ),
        (
            "build() with the database down, blocking",
            &down[0],
            None,
            Some(0.2),
        ),
        (
            "build() with the database down, batch",
            &down[1],
            None,
            Some(0.2),
        ),
    ] {
        report.startup.push(Startup {
            what,
            median: median(samples),
            max: max(samples),
            reference,
            limit,
        });
    }
}

/// Seconds from `build()` until one event is committed (`flush` returns after the commit).
fn first_row(dsn: &str, table: &str, batch: bool) -> f64 {
    let started = Instant::now();
    let builder = pglog::Builder::new().dsn(dsn).table(table);
    let builder = if batch { builder.batch() } else { builder };
    let (logger, guard) = builder.build().unwrap();
    log_event(&logger, 0);
    guard.flush();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(guard.stats().written, 1, "{:?}", guard.stats());
    elapsed
}

/// Seconds `build()` takes when nothing listens on the port (the program then runs
/// degraded, events on stderr; pglog says so once there).
fn init_database_down(batch: bool) -> f64 {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let builder = pglog::Builder::new().dsn(format!(
        "host=127.0.0.1 port={port} user=nobody dbname=nothing"
    ));
    let builder = if batch { builder.batch() } else { builder };
    let started = Instant::now();
    let built = builder.build().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    drop(built);
    elapsed
}

/// Every batch-mode call timed on its own. The queue is large enough never to fill, so
/// this is the cost of rendering and queueing, not of waiting for the database.
fn caller_cost(dsn: &str) -> String {
    let calls = events(100_000, 2_000) as usize;
    let (logger, guard) = pglog::Builder::new()
        .dsn(dsn)
        .table("caller_cost")
        .batch()
        .queue_capacity(calls + 1)
        .build()
        .unwrap();
    let mut nanos = Vec::with_capacity(calls);
    for i in 0..calls as u64 {
        let started = Instant::now();
        log_event(&logger, i);
        nanos.push(started.elapsed().as_nanos() as u64);
    }
    drop(guard);
    assert_eq!(logger.stats().written, calls as u64, "{:?}", logger.stats());
    nanos.sort_unstable();
    let pct = |p: f64| Duration::from_nanos(nanos[((calls as f64 * p) as usize).min(calls - 1)]);
    format!(
        "Caller side of a batch-mode log call ({} calls timed one by one, queue never \
         full, writer running): median {:?}, p90 {:?}, p99 {:?}, p99.9 {:?}, max {:?}.",
        thousands(calls as f64),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
        Duration::from_nanos(nanos[calls - 1])
    )
}

fn context(
    server: &throwaway_pg::Server,
    blocking: u64,
    batch: u64,
    load_before: &str,
) -> Vec<String> {
    let settings = server
        .psql(
            "bench",
            "SELECT string_agg(name || ' = ' || setting || coalesce(unit, ''), ', ' ORDER BY name) \
             FROM pg_settings WHERE name IN ('fsync', 'full_page_writes', 'synchronous_commit', \
             'autovacuum', 'max_wal_size', 'checkpoint_timeout', 'shared_buffers', 'wal_level')",
        )
        .unwrap();
    let version = server.psql("bench", "SELECT version()").unwrap();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    vec![
        format!(
            "Date: {} UTC. pglog: {}.",
            chrono::Utc::now().format("%Y-%m-%d %H:%M"),
            revision()
        ),
        format!(
            "Machine: shared {cores}-core VM ({cpu}); other work may run beside the benchmark, \
             so every figure is the median of {} runs, and each round starts with a different \
             system. Load average (1, 5, 15 min) before: {load_before}; after: {}.",
            runs(),
            load_average()
        ),
        format!("Server: {version}, a throwaway cluster; every client connects over TCP to 127.0.0.1 as the superuser."),
        format!("Settings: {settings}. Commits do not wait for the disk (fsync off), so the rates measure the protocol and CPU, not the storage."),
        format!(
            "Events per run: blocking {} (4 threads or clients: {} each), batch and fapilog {}. \
             Batch mode with its defaults (batch size 1,000, queue 10,000, binary COPY).",
            thousands(blocking as f64),
            thousands((blocking / 4) as f64),
            thousands(batch as f64),
        ),
        "Timed: blocking and pgbench from the first to the last commit (connections made before); \
         batch mode from `build()` to the guard's drop having committed everything; `psql \\copy` from \
         starting psql to its exit; fapilog from its sink's `start()` to `stop()` returning \
         (Python's start-up and imports not counted; the table exists beforehand, as pglog's does)."
            .to_owned(),
        "Events/s: the median of the runs, and their range. Ratio: the median of pglog's rate \
         divided by its reference's in the same round (run seconds apart, so the VM's drifting \
         speed largely cancels out), and its range over the rounds."
            .to_owned(),
        "fapilog's `PostgresSink` is driven directly (`await sink.write(event)`), without fapilog's \
         logger pipeline in front of it: its best case."
            .to_owned(),
    ]
}

/// The commit measured, and whether the library's sources differ from it.
fn revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR")])
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => match git(&["status", "--porcelain", "--", "src"]) {
            Some(changes) if !changes.is_empty() => {
                format!("commit {commit} with uncommitted changes to src/")
            }
            _ => format!("commit {commit}"),
        },
        None => "not a git checkout".to_owned(),
    }
}
