//! The databases the tests write to and read back: the shared throwaway server, fresh
//! databases, pglog builders aimed at them, rows, quoting.

use std::sync::atomic::{AtomicU32, Ordering};

pub use throwaway_pg::Server;

/// The server every test of this binary shares; started on first use, stopped when the
/// test process exits. Fails the test (never skips) when no server can be started.
pub fn server() -> &'static Server {
    Server::shared()
}

/// A new, empty database on the shared server; returns its DSN.
pub fn fresh_db(prefix: &str) -> String {
    server()
        .create_database(&unique(prefix))
        .expect("create a test database")
}

/// A new database on `server`, owned by `owner`; returns its name.
pub fn database(server: &Server, prefix: &str, owner: &str) -> String {
    let name = unique(prefix);
    server
        .psql(
            "postgres",
            &format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(&name),
                quote_ident(owner)
            ),
        )
        .expect("create database");
    name
}

/// A name unique in this process (and across processes, by the pid).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A plain client of the database `dsn` names, to set up a fault or read rows back.
pub fn connect(dsn: &str) -> postgres::Client {
    postgres::Client::connect(dsn, postgres::NoTls).expect("connect to the test server")
}

/// Makes the role `writer` able to INSERT into `table` (and draw its ids) and to create
/// nothing in the database `dsn` names; returns the DSN that logs in as it.
pub fn insert_only_role(dsn: &str, table: &str) -> String {
    let db = dsn.split("dbname=").nth(1).expect("a DSN with dbname=");
    connect(dsn)
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE writer LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             REVOKE CREATE ON SCHEMA public FROM PUBLIC;
             REVOKE CREATE ON DATABASE {} FROM PUBLIC;
             GRANT INSERT ON {table} TO writer;
             GRANT USAGE ON SEQUENCE {} TO writer;",
            quote_ident(db),
            quote_ident(&format!("{table}_id_seq")),
            table = quote_ident(table),
        ))
        .expect("make an insert-only role");
    dsn.replace("user=postgres", "user=writer")
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

/// Every row of `table`, oldest first.
pub fn rows(dsn: &str, table: &str) -> Vec<Stored> {
    let sql = format!(
        "SELECT level, event, func, scope, data FROM {} ORDER BY id",
        quote_ident(table)
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

/// The `event` column of every row of `table`, oldest first.
pub fn events(dsn: &str, table: &str) -> Vec<String> {
    rows(dsn, table).into_iter().map(|r| r.event).collect()
}

/// Whether `table` exists in the database `dsn` names.
pub fn table_exists(dsn: &str, table: &str) -> bool {
    connect(dsn)
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&quote_ident(table)])
        .unwrap()
        .get(0)
}

/// An SQL identifier, quoted (the tests' own, independent of pglog's).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal.
pub fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The names of `table`'s indexes other than its primary key, sorted.
pub fn index_names(dsn: &str, table: &str) -> Vec<String> {
    let mut names: Vec<String> = connect(dsn)
        .query(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass($1) AND NOT i.indisprimary ORDER BY 1",
            &[&quote_ident(table)],
        )
        .expect("list indexes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    names
}

/// The index names pglog (and stogger) give `table`, sorted.
pub fn expected_indexes(table: &str) -> Vec<String> {
    let mut names: Vec<String> = ["timestamp", "level", "event", "data"]
        .iter()
        .map(|s| format!("idx_{table}_{s}"))
        .collect();
    names.sort();
    names
}

/// The `application_name` of pglog's sessions in this test program, as an SQL literal:
/// pglog names them after the program that logs.
pub fn pglog_sessions() -> String {
    let exe = std::env::current_exe().expect("the test program's path");
    sql_literal(&exe.file_name().unwrap().to_string_lossy())
}
