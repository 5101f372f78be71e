//! Blocking mode against a real PostgreSQL server: schema, typed rows, privileges, bounds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use log::LevelFilter;

#[test]
fn creates_the_table_and_stoggers_indexes_idempotently() {
    let dsn = fresh_db("schema");
    for _ in 0..2 {
        let (logger, guard) = builder(&dsn, "stogger_logs").build().unwrap();
        assert!(guard.stats().database_reachable);
        drop((logger, guard));
    }
    assert_eq!(
        index_names(&dsn, "stogger_logs"),
        expected_indexes("stogger_logs")
    );
    let mut client = connect(&dsn);
    let columns: Vec<(String, String, String)> = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
             WHERE table_name = 'stogger_logs' ORDER BY ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [
        ("id", "bigint", "NO"),
        ("timestamp", "timestamp with time zone", "NO"),
        ("level", "text", "NO"),
        ("event", "text", "NO"),
        ("func", "text", "YES"),
        ("scope", "text", "YES"),
        ("data", "jsonb", "NO"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(columns, expected);
    let gin: String = client
        .query_one(
            "SELECT am.amname::text FROM pg_class c JOIN pg_am am ON am.oid = c.relam WHERE c.relname = 'idx_stogger_logs_data'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(gin, "gin");
}

#[test]
fn every_field_lands_with_its_type() {
    open_levels();
    let dsn = fresh_db("typed");
    let (logger, guard) = builder(&dsn, "typed_logs").build().unwrap();
    let tags = vec!["a", "b"];
    log::warn!(logger: &logger, user_id = 42, ratio = 0.25, admin = true, name = "ada", tags:serde = tags,
        missing = Option::<u8>::None, func = "login", scope = "auth"; "user {} logged in", "ada");
    log::log!(logger: &logger, target: "audit", log::Level::Info, "from another target");
    drop(guard);

    let rows = rows(&dsn, "typed_logs");
    assert_eq!(rows.len(), 2);
    let r = &rows[0];
    assert_eq!(
        (r.level.as_str(), r.event.as_str()),
        ("warning", "user ada logged in")
    );
    assert_eq!(
        (r.func.as_deref(), r.scope.as_deref()),
        (Some("login"), Some("auth"))
    );
    let d = &r.data;
    assert_eq!(d["user_id"], serde_json::json!(42));
    assert_eq!(d["ratio"], serde_json::json!(0.25));
    assert_eq!(d["admin"], serde_json::json!(true));
    assert_eq!(d["name"], serde_json::json!("ada"));
    assert_eq!(d["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(d["missing"], serde_json::Value::Null);
    assert_eq!(d["code_module"], serde_json::json!(module_path!()));
    assert_eq!(d["code_file"], serde_json::json!(file!()));
    assert!(d["code_lineno"].is_u64());
    assert_eq!(d["pid"], serde_json::json!(std::process::id()));
    assert!(d.get("func").is_none() && d.get("scope").is_none() && d.get("target").is_none());
    assert_eq!(rows[1].data["target"], serde_json::json!("audit"));

    // Typed in the database too: JSON operators see numbers and booleans.
    let (n, b): (String, String) = {
        let row = connect(&dsn)
            .query_one("SELECT jsonb_typeof(data->'user_id'), jsonb_typeof(data->'admin') FROM typed_logs ORDER BY id LIMIT 1", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((n.as_str(), b.as_str()), ("number", "boolean"));
}

#[test]
fn timestamp_is_the_call_time_in_utc_microseconds() {
    open_levels();
    let dsn = fresh_db("ts");
    let (logger, guard) = builder(&dsn, "ts_logs").build().unwrap();
    let before = chrono::Utc::now();
    log::info!(logger: &logger, "tick");
    let after = chrono::Utc::now();
    drop(guard);
    let ts: chrono::DateTime<chrono::Utc> = connect(&dsn)
        .query_one("SELECT timestamp FROM ts_logs", &[])
        .unwrap()
        .get(0);
    assert!(
        ts >= before - chrono::Duration::microseconds(1) && ts <= after,
        "{before} <= {ts} <= {after}"
    );
    assert_eq!(ts.timestamp_subsec_nanos() % 1000, 0);
}

#[test]
fn level_filter_applies() {
    open_levels();
    let dsn = fresh_db("filter");
    let (logger, guard) = builder(&dsn, "f").level(LevelFilter::Warn).build().unwrap();
    assert_eq!(logger.filter(), LevelFilter::Warn);
    log::info!(logger: &logger, "dropped by the filter");
    log::warn!(logger: &logger, "kept");
    drop(guard);
    let rows = rows(&dsn, "f");
    assert_eq!(
        rows.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
        ["kept"]
    );
}

#[test]
fn hostile_table_names_are_data_not_sql() {
    open_levels();
    let dsn = fresh_db("hostile");
    let table = r#"logs"; DROP TABLE victim; --"#;
    connect(&dsn)
        .batch_execute("CREATE TABLE victim (x int)")
        .unwrap();
    let (logger, guard) = builder(&dsn, table).build().unwrap();
    log::info!(logger: &logger, "it's \"quoted\"; DROP TABLE victim; --");
    drop(guard);
    assert_eq!(
        rows(&dsn, table)[0].event,
        "it's \"quoted\"; DROP TABLE victim; --"
    );
    assert_eq!(index_names(&dsn, table), expected_indexes(table));
    connect(&dsn)
        .batch_execute("SELECT * FROM victim")
        .expect("victim survives");
}

/// A role that may only INSERT logs into a table its owner created: pglog runs no DDL
/// when everything exists, with or without table creation turned on.
#[test]
fn insert_only_role_logs_into_an_existing_table() {
    open_levels();
    let dsn = fresh_db("insertonly");
    let (_, owner_guard) = builder(&dsn, "shared_logs").build().unwrap();
    drop(owner_guard);
    let writer_dsn = insert_only_role(&dsn, "shared_logs");
    for create in [true, false] {
        let (logger, guard) = builder(&writer_dsn, "shared_logs")
            .create_table(create)
            .build()
            .unwrap();
        log::info!(logger: &logger, create; "from the insert-only role");
        assert_eq!(guard.stats().written, 1, "create_table({create})");
        assert_eq!(guard.stats().fallback, 0);
    }
    assert_eq!(rows(&dsn, "shared_logs").len(), 2);

    // The same role cannot create a missing table: it starts degraded, events go to stderr.
    let (logger, guard) = builder(&writer_dsn, "missing_logs").build().unwrap();
    assert!(!guard.stats().database_reachable);
    log::info!(logger: &logger, "goes to stderr");
    assert_eq!((guard.stats().written, guard.stats().fallback), (0, 1));
}

#[test]
fn unreachable_database_starts_degraded_and_fast() {
    open_levels();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dsn = format!("host=127.0.0.1 port={closed_port} user=postgres dbname=nowhere");
    let started = Instant::now();
    let (logger, guard) = builder(&dsn, "t")
        .build()
        .expect("an unreachable database is not an error");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "init took {:?}",
        started.elapsed()
    );
    assert!(!guard.stats().database_reachable);
    let started = Instant::now();
    for i in 0..100 {
        log::info!(logger: &logger, i; "to stderr");
    }
    // Degraded events do not each pay for a connection attempt.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "100 events took {:?}",
        started.elapsed()
    );
    let stats = guard.stats();
    assert_eq!((stats.written, stats.fallback), (0, 100));

    let err = builder(&dsn, "t")
        .require_database(true)
        .build()
        .map(drop)
        .unwrap_err();
    assert!(matches!(err, pglog::Error::DatabaseUnavailable(_)), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{closed_port}")),
        "{err}"
    );
}

/// With one pooled session held by a write stuck behind a table lock, a second log call
/// waits at most `pool_wait`, then its event goes to stderr; nothing is lost.
#[test]
fn pool_wait_is_bounded() {
    open_levels();
    let dsn = fresh_db("pool");
    let (logger, guard) = builder(&dsn, "pool_logs")
        .pool_size(1)
        .pool_wait(Duration::from_millis(200))
        .statement_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut locker = connect(&dsn);
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE pool_logs IN ACCESS EXCLUSIVE MODE")
        .unwrap();

    std::thread::scope(|s| {
        let stuck = s.spawn(|| log::info!(logger: &logger, "waits for the lock"));
        // Until the first call holds the only session, the second could take it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lock_waiter_present(&dsn) {
            assert!(
                Instant::now() < deadline,
                "the first insert never blocked on the lock"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        log::info!(logger: &logger, "cannot get a session");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(5),
            "waited {waited:?}"
        );
        assert_eq!(guard.stats().fallback, 1);
        tx.commit().unwrap();
        stuck.join().unwrap();
    });
    let stats = guard.stats();
    assert_eq!((stats.written, stats.fallback), (1, 1));
    assert_eq!(rows(&dsn, "pool_logs")[0].event, "waits for the lock");
}

fn lock_waiter_present(dsn: &str) -> bool {
    let n: i64 = connect(dsn)
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO%'",
            &[],
        )
        .unwrap()
        .get(0);
    n > 0
}

/// A trigger records the setting inside pglog's own session: the only place it is seen.
#[test]
fn synchronous_commit_off_applies_to_pglogs_sessions() {
    open_levels();
    let dsn = fresh_db("synccommit");
    let (_, guard) = builder(&dsn, "sc_logs").build().unwrap();
    drop(guard);
    connect(&dsn)
        .batch_execute(
            "CREATE FUNCTION record_sc() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN NEW.data := NEW.data || jsonb_build_object('sc', current_setting('synchronous_commit'));
             RETURN NEW; END $$;
             CREATE TRIGGER record_sc BEFORE INSERT ON sc_logs FOR EACH ROW EXECUTE FUNCTION record_sc();",
        )
        .unwrap();
    for wait in [true, false] {
        let (logger, guard) = builder(&dsn, "sc_logs")
            .synchronous_commit(wait)
            .build()
            .unwrap();
        log::info!(logger: &logger, wait; "event");
        assert_eq!(guard.stats().written, 1);
    }
    let settings: Vec<_> = rows(&dsn, "sc_logs")
        .iter()
        .map(|r| r.data["sc"].clone())
        .collect();
    assert_eq!(
        settings,
        [serde_json::json!("on"), serde_json::json!("off")]
    );
}

#[test]
fn scopes_fill_the_scope_column_of_their_thread() {
    open_levels();
    let dsn = fresh_db("scopes");
    let (logger, guard) = builder(&dsn, "scope_logs").build().unwrap();
    log::info!(logger: &logger, "before");
    {
        let _import = pglog::scope("import");
        log::info!(logger: &logger, "in import");
        {
            let _rows = pglog::scope("rows");
            log::info!(logger: &logger, "nested");
            log::info!(logger: &logger, scope = "explicit"; "key-value wins");
        }
        log::info!(logger: &logger, "back in import");
        std::thread::scope(|s| {
            s.spawn(|| log::info!(logger: &logger, "other thread"));
        });
    }
    log::info!(logger: &logger, "after");
    drop(guard);
    let got: Vec<(String, Option<String>)> = rows(&dsn, "scope_logs")
        .into_iter()
        .map(|r| (r.event, r.scope))
        .collect();
    let want = [
        ("before", None),
        ("in import", Some("import")),
        ("nested", Some("rows")),
        ("key-value wins", Some("explicit")),
        ("back in import", Some("import")),
        ("other thread", None),
        ("after", None),
    ];
    let want: Vec<(String, Option<String>)> = want
        .iter()
        .map(|(e, s)| (e.to_string(), s.map(str::to_owned)))
        .collect();
    assert_eq!(got, want);
}
