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
