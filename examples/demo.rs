//! The main job end to end: log events with key-values at every level into PostgreSQL,
//! then read the rows back and print them.
//!
//! Uses `PGLOG_DSN` when it is set; otherwise starts a throwaway PostgreSQL server (the
//! test harness's), which is stopped and removed when the program ends. Configuration is
//! discovered as `pglog::init()` does, so the environment applies:
//!
//! ```sh
//! cargo run --features cli --example demo   # ends with `pglog tail`'s view
//! cargo run --example demo
//! PGLOG_BATCH=1 PGLOG_ECHO=warn cargo run --example demo      # batch mode, echo warnings
//! PGLOG_DSN=postgresql://me@/mydb?host=/var/run/postgresql cargo run --example demo
//! ```

use std::error::Error;

use log::LevelFilter;

fn main() -> Result<(), Box<dyn Error>> {
    let throwaway;
    let dsn = match std::env::var("PGLOG_DSN") {
        Ok(dsn) if !dsn.is_empty() => dsn,
        _ => {
            eprintln!("PGLOG_DSN is not set: starting a throwaway PostgreSQL server...");
            throwaway = throwaway_pg::Server::start()?;
            throwaway.create_database("demo")?
        }
    };
    // PGLOG_TABLE, when set, wins over the builder call below: read back from it then.
    let table = std::env::var("PGLOG_TABLE").unwrap_or_else(|_| "pglog_demo".to_owned());
    let table = table.as_str();

    let guard = pglog::Builder::discover()?
        .dsn(&dsn)
        .table(table)
        .level(LevelFilter::Trace)
        .try_init()?;
    log::error!(code = 503, retry = true; "upstream unavailable");
    log::warn!(free_mb = 412.5, disk = "/var"; "disk almost full");
    log::info!(user_id = 42, admin = false, func = "login", scope = "auth"; "user logged in");
    log::debug!(rows = 1_000u64, table; "batch loaded");
    log::trace!(step = "parse", bytes = 2048; "parsing input");
    guard.flush(); // in batch mode, returns once the queued events are committed
    let stats = guard.stats();
    drop(guard);

    println!(
        "{} events written, {} sent to stderr; reading them back from {table}:\n",
        stats.written, stats.fallback
    );
    let mut client = postgres::Client::connect(&dsn, postgres::NoTls)?;
    let query = format!(
        "SELECT to_char(timestamp AT TIME ZONE 'UTC', 'HH24:MI:SS.US'), level, event, \
         coalesce(func, ''), coalesce(scope, ''), data::text FROM \"{table}\" ORDER BY id DESC LIMIT 5"
    );
    let mut rows = client.query(&query, &[])?;
    rows.reverse();
    println!(
        "{:<15} {:<8} {:<22} {:<6} {:<6} data",
        "timestamp", "level", "event", "func", "scope"
    );
    for row in rows {
        let (ts, level, event, func, scope, data): (
            String,
            String,
            String,
            String,
            String,
            String,
        ) = (
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
        );
        println!("{ts:<15} {level:<8} {event:<22} {func:<6} {scope:<6} {data}");
    }
    tail(&dsn, table);
    Ok(())
}

/// The same events as `pglog tail` shows them (pglog's readable line, the one its
/// stderr lines and console echo use), when built with the `cli` feature.
#[cfg(feature = "cli")]
fn tail(dsn: &str, table: &str) {
    println!("\nand as `pglog tail -n 5 --table {table}` shows them:\n");
    let args = ["pglog", "tail", "-n", "5", "--dsn", dsn, "--table", table];
    let _ = pglog::__cli_run(args);
}

#[cfg(not(feature = "cli"))]
fn tail(_: &str, table: &str) {
    println!(
        "\n`cargo run --features cli --example demo` also shows them as the `pglog` command's \
         `pglog tail --table {table}` does"
    );
}
