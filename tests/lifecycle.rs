//! A table over time against a real server: partitions by day created with the table and
//! ahead of time, rows moved out of the default partition, retention by dropping
//! partitions and by batched deletes, several processes creating one partitioned table at
//! once, a role that may INSERT but not CREATE, a stogger table converted online while a
//! writer logs, stogger's own statements against a partitioned table, and a pg_partman
//! parent left to pg_partman.
//!
//! A maintenance pass runs at start and then hourly; the checks trigger one with the
//! guard's hidden `__maintain_now`, which returns once the pass ended.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use common::*;
use pglog::Partition;

fn main() {
    if let Some(program) = child_program() {
        match program.as_str() {
            "start_partitioned" => start_partitioned_program(),
            "insert_only" => insert_only_program(),
            "into_partman" => into_partman_program(),
            other => panic!("unknown child program {other}"),
        }
        return;
    }
    checks![
        partitioned_by_day_on_an_empty_database,
        an_existing_table_keeps_its_shape,
        week_and_month_partitions_are_named_by_their_start,
        retention_drops_whole_expired_partitions,
        a_drop_waits_briefly_for_writers_and_holds_them_up_as_briefly,
        retention_on_a_plain_table_deletes_in_batches,
        several_processes_create_one_set_of_partitions,
        a_role_that_may_only_insert_hears_once_what_the_owner_must_run,
        a_stogger_table_is_converted_while_a_writer_logs,
        stoggers_own_statements_work_on_a_partitioned_table,
        a_pg_partman_parent_is_written_to_and_left_to_pg_partman,
    ];
}

/// UTC's today, as pglog's partitions count days.
fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Noon UTC, `days` days before today.
fn noon_before(days: u64) -> DateTime<Utc> {
    let day = today() - chrono::Days::new(days);
    day.and_hms_opt(12, 0, 0).unwrap().and_utc()
}

fn suffix(day: NaiveDate) -> String {
    day.format("%Y%m%d").to_string()
}

/// The names of `table`'s partitions, sorted.
fn partitions(dsn: &str, table: &str) -> Vec<String> {
    connect(dsn)
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = to_regclass($1) ORDER BY 1",
            &[&quote_ident(table)],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The partitions pglog makes for `table` with the default one: `days` (offsets from
/// today, negative in the past), sorted as `partitions` sorts them.
fn expected_partitions(table: &str, days: impl IntoIterator<Item = i64>) -> Vec<String> {
    let mut names: Vec<String> = days
        .into_iter()
        .map(|d| {
            let day = today() + chrono::Duration::days(d);
            format!("{table}_p{}", suffix(day))
        })
        .collect();
    names.push(format!("{table}_default"));
    names.sort();
    names
}

fn is_partitioned(dsn: &str, table: &str) -> bool {
    connect(dsn)
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = to_regclass($1))",
            &[&quote_ident(table)],
        )
        .unwrap()
        .get(0)
}

/// The partition holding each row of `table`, by event.
fn placed(dsn: &str, table: &str) -> Vec<(String, String)> {
    connect(dsn)
        .query(
            &format!(
                "SELECT event, tableoid::regclass::text FROM {} ORDER BY timestamp",
                quote_ident(table)
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Inserts an event at `at` straight into `table`, as another program might.
fn insert_at(dsn: &str, table: &str, event: &str, at: DateTime<Utc>) {
    connect(dsn)
        .execute(
            &format!(
                "INSERT INTO {} (timestamp, level, event) VALUES ($1, 'info', $2)",
                quote_ident(table)
            ),
            &[&at, &event],
        )
        .unwrap();
}

fn count(dsn: &str, table: &str) -> i64 {
    connect(dsn)
        .query_one(&format!("SELECT count(*) FROM {}", quote_ident(table)), &[])
        .unwrap()
        .get(0)
}

fn partition_day(dsn: &str, table: &str) -> pglog::Builder {
    builder(dsn, table).partition(Partition::Day)
}

/// `PGLOG_PARTITION=day` on an empty database: a partitioned table with stogger's index
/// names, today's and the next three days' partitions and a default one; events land in
/// their day's partition, and a row outside every partition lands in the default one
/// until a maintenance pass gives its day a partition.
fn partitioned_by_day_on_an_empty_database() {
    open_levels();
    let dsn = fresh_db("byday");
    let (logger, guard) = partition_day(&dsn, "day_logs").build().unwrap();
    assert!(guard.stats().database_reachable);
    assert!(is_partitioned(&dsn, "day_logs"));
    assert_eq!(
        index_names(&dsn, "day_logs"),
        expected_indexes("day_logs"),
        "partitioned indexes on the parent"
    );
    assert_eq!(
        partitions(&dsn, "day_logs"),
        expected_partitions("day_logs", 0..=3)
    );
    let mut client = connect(&dsn);
    let key: String = client
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = 'day_logs'::regclass AND contype = 'p'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(key, "PRIMARY KEY (id, \"timestamp\")");
    // Each partition has its share of the four indexes (and the key's).
    let on_today: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indrelid = $1::text::regclass",
            &[&format!("day_logs_p{}", suffix(today()))],
        )
        .unwrap()
        .get(0);
    assert_eq!(on_today, 5);

    log::info!(logger: &logger, user = 7; "today");
    let (event, partition) = placed(&dsn, "day_logs").pop().unwrap();
    let at: DateTime<Utc> = client
        .query_one("SELECT timestamp FROM day_logs", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        (event.as_str(), partition),
        ("today", format!("day_logs_p{}", suffix(at.date_naive())))
    );

    let old = noon_before(5);
    insert_at(&dsn, "day_logs", "five days ago", old);
    let far = Utc::now() + chrono::Duration::days(400);
    insert_at(&dsn, "day_logs", "a clock far ahead", far);
    let before = placed(&dsn, "day_logs");
    assert!(before.contains(&("five days ago".into(), "day_logs_default".into())));

    guard.__maintain_now().unwrap();
    let after = placed(&dsn, "day_logs");
    assert_eq!(
        after,
        [
            (
                "five days ago".to_owned(),
                format!("day_logs_p{}", suffix(old.date_naive()))
            ),
            (
                "today".to_owned(),
                format!("day_logs_p{}", suffix(at.date_naive()))
            ),
            // Beyond the partitions made ahead: left in the default partition.
            (
                "a clock far ahead".to_owned(),
                "day_logs_default".to_owned()
            ),
        ]
    );
    assert_eq!(
        partitions(&dsn, "day_logs"),
        expected_partitions("day_logs", [-5, 0, 1, 2, 3])
    );
    assert_eq!(
        index_names(&dsn, "day_logs"),
        expected_indexes("day_logs"),
        "an adopted partition takes the parent's indexes, adds none to it"
    );
    // Idempotent: a second pass changes nothing.
    guard.__maintain_now().unwrap();
    assert_eq!(placed(&dsn, "day_logs"), after);
    assert_eq!(guard.stats().fallback, 0);
}

/// A plain table stays plain with `partition = day`, and a partitioned one keeps its
/// partitions when pglog starts again: pglog never changes an existing table's shape.
fn an_existing_table_keeps_its_shape() {
    open_levels();
    let dsn = fresh_db("keepshape");
    drop(builder(&dsn, "plain_logs").build().unwrap());
    let (logger, guard) = partition_day(&dsn, "plain_logs").build().unwrap();
    log::info!(logger: &logger, "into the plain table");
    assert_eq!(guard.stats().written, 1);
    assert!(!is_partitioned(&dsn, "plain_logs"));
    assert!(partitions(&dsn, "plain_logs").is_empty());
    assert_eq!(guard.__maintain_now(), Ok(()));
    assert!(!is_partitioned(&dsn, "plain_logs"));

    drop(partition_day(&dsn, "day_logs").build().unwrap());
    let first = partitions(&dsn, "day_logs");
    let (_, guard) = partition_day(&dsn, "day_logs")
        .partition(Partition::Month)
        .build()
        .unwrap();
    guard.__maintain_now().unwrap();
    assert_eq!(
        partitions(&dsn, "day_logs"),
        first,
        "the table's own period wins"
    );
}

/// A week's partition is named by its Monday, a month's by its year and month; both
/// start at midnight UTC.
fn week_and_month_partitions_are_named_by_their_start() {
    open_levels();
    let dsn = fresh_db("weekmonth");
    drop(
        builder(&dsn, "week_logs")
            .partition(Partition::Week)
            .build()
            .unwrap(),
    );
    drop(
        builder(&dsn, "month_logs")
            .partition(Partition::Month)
            .build()
            .unwrap(),
    );
    let monday = today() - chrono::Days::new(today().weekday().num_days_from_monday().into());
    let mut weeks: Vec<String> = (0..4)
        .map(|w| format!("week_logs_p{}", suffix(monday + chrono::Days::new(7 * w))))
        .chain(["week_logs_default".to_owned()])
        .collect();
    weeks.sort();
    assert_eq!(partitions(&dsn, "week_logs"), weeks);
    let first = today().with_day(1).unwrap();
    let mut months: Vec<String> = (0..4)
        .map(|m| {
            let start = first + chrono::Months::new(m);
            format!("month_logs_p{}", start.format("%Y%m"))
        })
        .chain(["month_logs_default".to_owned()])
        .collect();
    months.sort();
    assert_eq!(partitions(&dsn, "month_logs"), months);
    // The bounds as UTC shows them, whatever the server's time zone.
    let mut client = connect(&dsn);
    client.batch_execute("SET TimeZone = 'UTC'").unwrap();
    let bound: String = client
        .query_one(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = $1",
            &[&format!("month_logs_p{}", first.format("%Y%m"))],
        )
        .unwrap()
        .get(0);
    let next = (first + chrono::Months::new(1)).format("%Y-%m-%d");
    assert_eq!(
        bound,
        format!("FOR VALUES FROM ('{first} 00:00:00+00') TO ('{next} 00:00:00+00')")
    );
}

/// `retention_days = 7` over ten days of rows in day partitions: one pass drops the
/// partitions whose every row is older than the seventh whole day before today, and
/// deletes such rows from the default partition.
fn retention_drops_whole_expired_partitions() {
    open_levels();
    let dsn = fresh_db("dropold");
    let (_, guard) = partition_day(&dsn, "ret_logs").build().unwrap();
    for days in 0..10 {
        insert_at(&dsn, "ret_logs", &format!("day -{days}"), noon_before(days));
    }
    guard.__maintain_now().unwrap();
    assert_eq!(
        partitions(&dsn, "ret_logs"),
        expected_partitions("ret_logs", -9..=3),
        "every day's rows got their partition"
    );
    drop(guard);
    insert_at(&dsn, "ret_logs", "day -20", noon_before(20));

    let started = Instant::now();
    let (_, guard) = partition_day(&dsn, "ret_logs")
        .retention(7)
        .build()
        .unwrap();
    guard.__maintain_now().unwrap();
    println!(
        "  retention over partitions: start and two passes in {:?}",
        started.elapsed()
    );
    assert_eq!(
        partitions(&dsn, "ret_logs"),
        expected_partitions("ret_logs", -7..=3)
    );
    let kept: Vec<String> = placed(&dsn, "ret_logs").into_iter().map(|r| r.0).collect();
    let expected: Vec<String> = (0..=7).rev().map(|d| format!("day -{d}")).collect();
    assert_eq!(kept, expected);
    // Kept days keep their rows through later passes.
    guard.__maintain_now().unwrap();
    assert_eq!(placed(&dsn, "ret_logs").len(), 8);
}

/// Dropping a partition locks the parent against writers. Behind a write in flight, the
/// drop gives up after its lock wait (500 ms), and a writer queued behind the drop waits
/// no longer than that; the next pass drops the partition.
fn a_drop_waits_briefly_for_writers_and_holds_them_up_as_briefly() {
    open_levels();
    let dsn = fresh_db("lockwait");
    let (_, guard) = partition_day(&dsn, "busy_logs").build().unwrap();
    insert_at(&dsn, "busy_logs", "expired", noon_before(3));
    guard.__maintain_now().unwrap();
    drop(guard);
    let expired = format!("busy_logs_p{}", suffix(noon_before(3).date_naive()));
    assert!(partitions(&dsn, "busy_logs").contains(&expired));

    let mut in_flight = connect(&dsn);
    let mut tx = in_flight.transaction().unwrap();
    tx.execute(
        "INSERT INTO busy_logs (timestamp, level, event) VALUES (now(), 'info', 'in flight')",
        &[],
    )
    .unwrap();
    // Both the start pass and the pass asked for meet the write in flight.
    let (logger, guard) = partition_day(&dsn, "busy_logs")
        .retention(1)
        .build()
        .unwrap();
    let (pass, slowest) = std::thread::scope(|s| {
        let pass = s.spawn(|| {
            let started = Instant::now();
            (guard.__maintain_now(), started.elapsed())
        });
        // Writes meanwhile queue behind each drop while it waits.
        let mut slowest = Duration::ZERO;
        while !pass.is_finished() {
            let started = Instant::now();
            log::info!(logger: &logger, "while a drop waits");
            slowest = slowest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        (pass.join().unwrap(), slowest)
    });
    tx.commit().unwrap();
    println!(
        "  passes behind a write in flight gave up in {:?}; the slowest write meanwhile took {slowest:?}",
        pass.1
    );
    assert_eq!(pass.0, Err("Unfinished".to_owned()));
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert_eq!(guard.stats().fallback, 0);
    assert!(partitions(&dsn, "busy_logs").contains(&expired));
    guard.__maintain_now().unwrap();
    assert!(!partitions(&dsn, "busy_logs").contains(&expired));
}

/// Retention on a plain table: rows older than the first day kept are deleted in batches
/// of 5,000, each its own transaction, and nothing younger is touched.
fn retention_on_a_plain_table_deletes_in_batches() {
    open_levels();
    let dsn = fresh_db("plainret");
    let (_, guard) = builder(&dsn, "plain_logs").retention(7).build().unwrap();
    assert!(!is_partitioned(&dsn, "plain_logs"));
    // 12,000 expired rows over two days (three batches), 100 rows on each kept day.
    let mut client = connect(&dsn);
    let insert = "INSERT INTO plain_logs (timestamp, level, event) \
                  SELECT $1::timestamptz + (n || ' seconds')::interval, 'info', $2 \
                  FROM generate_series(1, $3::int) AS n";
    for (days, rows) in [(9, 6_000), (8, 6_000)] {
        client
            .execute(insert, &[&noon_before(days), &"expired", &rows])
            .unwrap();
    }
    for days in 0..=7 {
        client
            .execute(insert, &[&noon_before(days), &"kept", &100])
            .unwrap();
    }
    let started = Instant::now();
    guard.__maintain_now().unwrap();
    println!(
        "  retention on a plain table: 12,000 of 12,800 rows deleted in {:?}",
        started.elapsed()
    );
    let counts: Vec<(String, i64)> = client
        .query(
            "SELECT event, count(*) FROM plain_logs GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(counts, [("kept".to_owned(), 800)]);
    guard.__maintain_now().unwrap();
    assert_eq!(count(&dsn, "plain_logs"), 800);
}

/// Several processes start at once with `partition = day` on an empty database: each
/// starts without a notice, and the table has one set of partitions.
fn several_processes_create_one_set_of_partitions() {
    let dsn = fresh_db("racers");
    // Half in batch mode, whose writer thread does not take part in maintenance.
    let outputs: Vec<_> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..6)
            .map(|i| {
                let dsn = &dsn;
                s.spawn(move || {
                    run_child(
                        "start_partitioned",
                        &[
                            ("LIFECYCLE_DSN", dsn),
                            ("LIFECYCLE_TABLE", "raced_logs"),
                            ("PGLOG_BATCH", if i % 2 == 0 { "1" } else { "0" }),
                        ],
                    )
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for output in &outputs {
        assert_success(output);
        assert_no_notices(output);
    }
    assert!(is_partitioned(&dsn, "raced_logs"));
    assert_eq!(
        partitions(&dsn, "raced_logs"),
        expected_partitions("raced_logs", 0..=3)
    );
    assert_eq!(
        index_names(&dsn, "raced_logs"),
        expected_indexes("raced_logs")
    );
    assert_eq!(events(&dsn, "raced_logs").len(), 6);
}

fn start_partitioned_program() {
    let builder = partition_day(&env("LIFECYCLE_DSN"), &env("LIFECYCLE_TABLE"));
    let builder = if env("PGLOG_BATCH") == "1" {
        builder.batch()
    } else {
        builder
    };
    let (logger, guard) = builder.require_database(true).build().unwrap();
    log::set_max_level(log::LevelFilter::Info);
    log::info!(logger: &logger, "started");
    guard.flush();
    let stats = guard.stats();
    assert_eq!((stats.written, stats.fallback), (1, 0));
}

/// A role that may INSERT into a partitioned table but not create partitions: logging
/// works, and maintenance says once what the table's owner must run.
fn a_role_that_may_only_insert_hears_once_what_the_owner_must_run() {
    let dsn = fresh_db("insertonly");
    drop(partition_day(&dsn, "owned_logs").build().unwrap());
    let writer_dsn = insert_only_role(&dsn, "owned_logs");
    // A partition missing ahead, which the writer cannot create.
    let last = format!("owned_logs_p{}", suffix(today() + chrono::Days::new(3)));
    connect(&dsn)
        .batch_execute(&format!("DROP TABLE {}", quote_ident(&last)))
        .unwrap();
    let output = run_child(
        "insert_only",
        &[
            ("LIFECYCLE_DSN", &writer_dsn),
            ("LIFECYCLE_TABLE", "owned_logs"),
        ],
    );
    assert_success(&output);
    let notices = notices(&output);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("permission denied")
            && notices[0].contains("as the table's owner, run: CREATE TABLE")
            && notices[0].contains(&last),
        "{}",
        notices[0]
    );
    assert_eq!(events(&dsn, "owned_logs"), ["from the writer"]);
    assert!(!partitions(&dsn, "owned_logs").contains(&last));
}

fn insert_only_program() {
    let (logger, guard) = partition_day(&env("LIFECYCLE_DSN"), &env("LIFECYCLE_TABLE"))
        .build()
        .unwrap();
    log::set_max_level(log::LevelFilter::Info);
    log::info!(logger: &logger, "from the writer");
    assert_eq!(guard.stats().written, 1);
    // The start pass failed; so do the next, in silence.
    for _ in 0..2 {
        let failed = guard.__maintain_now().unwrap_err();
        assert!(failed.contains("permission denied"), "{failed}");
    }
}

/// stogger's table and indexes as stogger creates them (DESIGN.md's statements, written
/// here independently of pglog's own).
fn stogger_ddl(table: &str) -> String {
    let t = quote_ident(table);
    let idx = |suffix: &str| quote_ident(&format!("idx_{table}_{suffix}"));
    format!(
        "CREATE TABLE IF NOT EXISTS {t} (id BIGSERIAL PRIMARY KEY, timestamp TIMESTAMPTZ NOT NULL, \
         level TEXT NOT NULL, event TEXT NOT NULL, func TEXT, scope TEXT, \
         data JSONB NOT NULL DEFAULT '{{}}');
         CREATE INDEX IF NOT EXISTS {} ON {t} (timestamp DESC);
         CREATE INDEX IF NOT EXISTS {} ON {t} (level);
         CREATE INDEX IF NOT EXISTS {} ON {t} (event);
         CREATE INDEX IF NOT EXISTS {} ON {t} USING GIN (data);",
        idx("timestamp"),
        idx("level"),
        idx("event"),
        idx("data"),
    )
}

/// A stogger-created table with 10,000 rows over 30 days is converted to day partitions
/// while a writer with its own logger, a role that may only INSERT, logs all along:
/// every old and new row is there once, with distinct ids, the table is partitioned with
/// stogger's index names on the parent, and maintenance takes it over.
fn a_stogger_table_is_converted_while_a_writer_logs() {
    open_levels();
    let dsn = fresh_db("convert");
    let table = "stogger_logs";
    let mut client = connect(&dsn);
    client.batch_execute(&stogger_ddl(table)).unwrap();
    client
        .execute(
            "INSERT INTO stogger_logs (timestamp, level, event, data) \
             SELECT now() - (n || ' minutes')::interval * 4, 'info', 'old ' || n, \
                    jsonb_build_object('n', n) FROM generate_series(1, 10000) AS n",
            &[],
        )
        .unwrap();
    let writer_dsn = insert_only_role(&dsn, table);

    let stop = AtomicBool::new(false);
    let (conversion, took, written, fallback) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let (logger, guard) = builder(&writer_dsn, table).build().unwrap();
            let mut n = 0u64;
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Acquire) || n < 50 {
                let started = Instant::now();
                log::info!(logger: &logger, n = n; "live {n}");
                slowest = slowest.max(started.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            // After the swap, into the partitioned table.
            for m in 0..20 {
                log::info!(logger: &logger, "after {m}");
            }
            let stats = guard.stats();
            println!("  writer: {n} events during the conversion, the slowest took {slowest:?}");
            (stats.written, stats.fallback)
        });
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let conversion = builder(&dsn, table).convert_to_partitioned(Partition::Day);
        let took = started.elapsed();
        stop.store(true, Ordering::Release);
        let (written, fallback) = writer.join().unwrap();
        (conversion, took, written, fallback)
    });
    let conversion = conversion.unwrap();
    println!("  converted in {took:?}: {conversion:?}");
    let until = today() + chrono::Days::new(2);
    let old = format!("{table}_until{}", suffix(until));
    assert_eq!(conversion.table, format!("\"public\".\"{table}\""));
    assert_eq!(conversion.old_partition, format!("\"public\".\"{old}\""));
    assert_eq!(conversion.until, format!("{until} 00:00:00+00"));
    assert_eq!(fallback, 0, "no event left the table");

    assert!(is_partitioned(&dsn, table));
    assert_eq!(index_names(&dsn, table), expected_indexes(table));
    let mut expected = expected_partitions(table, 2..=5);
    expected.push(old.clone());
    expected.sort();
    assert_eq!(partitions(&dsn, table), expected);
    let (rows, ids, lives, afters): (i64, i64, i64, i64) = {
        let r = client
            .query_one(
                "SELECT count(*), count(DISTINCT id), count(DISTINCT event) FILTER (WHERE event LIKE 'live %'), \
                        count(*) FILTER (WHERE event LIKE 'after %') FROM stogger_logs",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(
        rows,
        10_000 + written as i64,
        "every old row and every written one"
    );
    assert_eq!(
        ids, rows,
        "ids stay distinct: the parent draws from the old sequence"
    );
    assert_eq!(lives + afters, written as i64);
    assert_eq!(afters, 20);
    let old_rows: i64 = client
        .query_one(
            "SELECT count(*) FROM stogger_logs WHERE event LIKE 'old %'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(old_rows, 10_000);
    let comment: String = client
        .query_one(
            "SELECT obj_description('stogger_logs'::regclass, 'pg_class')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        comment.starts_with("pglog: partitioned by day"),
        "{comment}"
    );
    // The sequence belongs to the parent: dropping the old partition one day keeps it.
    let sequence: String = client
        .query_one("SELECT pg_get_serial_sequence('stogger_logs', 'id')", &[])
        .unwrap()
        .get(0);
    assert_eq!(sequence, "public.stogger_logs_id_seq");

    // stogger starting against it afterwards changes nothing.
    client.batch_execute(&stogger_ddl(table)).unwrap();
    assert_eq!(index_names(&dsn, table), expected_indexes(table));
    assert_eq!(partitions(&dsn, table), expected);

    // Converting again is refused, saying why.
    let again = builder(&dsn, table)
        .convert_to_partitioned(Partition::Day)
        .unwrap_err()
        .to_string();
    assert!(again.contains("partitioned already"), "{again}");

    // Maintenance takes over: nothing to create (the bound's period on exist), and with
    // retention, nothing to drop in the old partition, whose range reaches today.
    let (_, guard) = partition_day(&dsn, table).retention(7).build().unwrap();
    guard.__maintain_now().unwrap();
    assert_eq!(partitions(&dsn, table), expected);
}

/// stogger's start-up statements (`CREATE TABLE IF NOT EXISTS`, its four `CREATE INDEX
/// IF NOT EXISTS`) and its INSERT, run against the table pglog created partitioned by
/// day: they succeed, create nothing, and the row lands in today's partition.
fn stoggers_own_statements_work_on_a_partitioned_table() {
    let dsn = fresh_db("stoggersql");
    let table = "shared_logs";
    drop(partition_day(&dsn, table).build().unwrap());
    let before = partitions(&dsn, table);
    let mut client = connect(&dsn);
    client.batch_execute(&stogger_ddl(table)).unwrap();
    let at = Utc::now();
    client
        .execute(
            "INSERT INTO shared_logs (timestamp, level, event, func, scope, data) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &at,
                &"info",
                &"from python",
                &"handler",
                &"web",
                &serde_json::json!({"user_id": 42, "code_module": "app.views"}),
            ],
        )
        .unwrap();
    assert!(is_partitioned(&dsn, table));
    assert_eq!(partitions(&dsn, table), before, "nothing created");
    assert_eq!(index_names(&dsn, table), expected_indexes(table));
    assert_eq!(
        placed(&dsn, table),
        [(
            "from python".to_owned(),
            format!("{table}_p{}", suffix(at.date_naive()))
        )]
    );
    let id: i64 = client
        .query_one("SELECT id FROM shared_logs", &[])
        .unwrap()
        .get(0);
    assert!(id > 0, "the id comes from the parent's sequence");
}

/// A parent created and managed by pg_partman 4.7 (Debian's `postgresql-15-partman`,
/// which `.ci/ensure-postgres` installs): native partitioning on `timestamp`, daily, with
/// pglog's columns and stogger's index names. pglog with `partition = day` and
/// `retention_days` writes into it, never creates or drops a partition (the list is the
/// same before and after its passes, though pg_partman's names are not pglog's and days
/// beyond retention exist), and says once that pg_partman manages it.
fn a_pg_partman_parent_is_written_to_and_left_to_pg_partman() {
    let dsn = fresh_db("partman");
    let table = "partman_logs";
    let mut client = connect(&dsn);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA partman;
             CREATE EXTENSION pg_partman SCHEMA partman;
             CREATE TABLE {t} (id BIGSERIAL, timestamp TIMESTAMPTZ NOT NULL, level TEXT NOT NULL, \
               event TEXT NOT NULL, func TEXT, scope TEXT, data JSONB NOT NULL DEFAULT '{{}}', \
               PRIMARY KEY (id, timestamp)) PARTITION BY RANGE (timestamp);
             CREATE INDEX {} ON {t} (timestamp DESC);
             CREATE INDEX {} ON {t} (level);
             CREATE INDEX {} ON {t} (event);
             CREATE INDEX {} ON {t} USING GIN (data);",
            quote_ident(&format!("idx_{table}_timestamp")),
            quote_ident(&format!("idx_{table}_level")),
            quote_ident(&format!("idx_{table}_event")),
            quote_ident(&format!("idx_{table}_data")),
            t = quote_ident(table),
        ))
        .expect("pg_partman installed (.ci/ensure-postgres installs postgresql-15-partman)");
    // pg_partman 4.7: create_parent(p_parent_table, p_control, p_type, p_interval, ...);
    // p_start_partition ten days back, so that days retention would drop exist.
    let start = (today() - chrono::Days::new(10)).to_string();
    client
        .execute(
            "SELECT partman.create_parent($1, 'timestamp', 'native', 'daily', \
             p_start_partition => $2)",
            &[&format!("public.{table}"), &start],
        )
        .unwrap();
    let before = partitions(&dsn, table);
    assert!(before.len() > 10, "{before:?}");
    // pg_partman's names (`<table>_p2026_11_22`), not pglog's (`<table>_p20261122`).
    assert!(
        before.contains(&format!("{table}_p{}", today().format("%Y_%m_%d"))),
        "{before:?}"
    );

    let output = run_child(
        "into_partman",
        &[("LIFECYCLE_DSN", &dsn), ("LIFECYCLE_TABLE", table)],
    );
    assert_success(&output);
    let notices = notices(&output);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("pg_partman manages it") && notices[0].contains("part_config"),
        "{}",
        notices[0]
    );
    assert_eq!(
        partitions(&dsn, table),
        before,
        "no partition created or dropped"
    );
    assert_eq!(events(&dsn, table), ["into pg_partman's table"]);
    let placed = placed(&dsn, table);
    assert_ne!(
        placed[0].1,
        format!("{table}_default"),
        "in pg_partman's day partition"
    );
}

fn into_partman_program() {
    let (logger, guard) = partition_day(&env("LIFECYCLE_DSN"), &env("LIFECYCLE_TABLE"))
        .retention(3)
        .build()
        .unwrap();
    log::set_max_level(log::LevelFilter::Info);
    log::info!(logger: &logger, "into pg_partman's table");
    assert_eq!(guard.stats().written, 1);
    // The start pass and two more: each leaves the table alone; one notice in all.
    for _ in 0..2 {
        guard.__maintain_now().unwrap();
    }
}
