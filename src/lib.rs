//! PostgreSQL as the backend of the [`log`] facade: every record becomes a row, with the
//! message, level and time in columns and every key-value, typed, in a JSONB column.
//!
//! # How to use
//!
//! ```no_run
//! fn main() -> Result<(), pglog::Error> {
//!     let _guard = pglog::Builder::new()
//!         .dsn("postgresql://app@db.internal/ops")
//!         .level(log::LevelFilter::Info)
//!         .try_init()?;
//!     log::info!(user_id = 42, admin = false; "user logged in");
//!     Ok(()) // dropping the guard flushes
//! }
//! ```
//!
//! Each event is one row of a table shaped like stogger-postgres's (the Python logger), so
//! Python and Rust programs can share it:
//!
//! | column | from the record |
//! |---|---|
//! | `timestamp` | the time of the log call, UTC, microseconds |
//! | `level` | `error`, `warning`, `info`, `debug` or `trace` |
//! | `event` | the formatted message |
//! | `func`, `scope` | the key-values `func` and `scope`; without a `scope` key-value, the thread's current [`scope`] |
//! | `data` | every other key-value with its JSON type, `code_module`, `code_file`, `code_lineno`, `pid`, and `target` when it is not the module path |
//!
//! An error logged as a key-value (`log::error!(err:err = e; "...")`) also fills stogger's
//! `exception_msg`, `exception_class` and `exception_traceback` (its `source()` chain); see
//! [`ErrorValue`] to name its type and keep its backtrace.
//!
//! # Configuration
//!
//! [`init`] reads what stogger reads: `pyproject.toml`'s `[tool.stogger]` (and pglog's own
//! `[tool.pglog]`) in the current directory, or the file `PGLOG_CONFIG` names, then the
//! environment (`PGLOG_*` over `STOGGER_*`), which wins. `%PASSWORD%` in a DSN is replaced
//! by `PGLOG_PASSWORD` or `STOGGER_POSTGRES_PASSWORD`, encoded for the DSN. See
//! [`Builder::discover`] for the order and [`Config`] for every key.
//!
//! ```no_run
//! // ./pyproject.toml:
//! //   [tool.stogger]
//! //   postgres_dsn = "postgresql://app:%PASSWORD%@db.internal/ops"
//! //   postgres_table = "app_logs"
//! let _guard = pglog::init()?;
//! # Ok::<(), pglog::Error>(())
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tls-rustls` | no | TLS to the database through rustls: `sslmode=prefer`/`require`, and [`Builder::root_cert`] to verify the server |
//! | `signals` | no | [`Builder::flush_on_signal`]: on SIGTERM or SIGINT, write what batch mode holds, then end as the signal would (signal-hook) |
//! | `cli` | no | the `pglog` command: `tail`, `stats`, `doctor`, `prune`, `replay` (see the README) |
//!
//! # Blocking or batch mode
//!
//! By default a log call writes its event with one `INSERT` on a pooled session and
//! returns once it is committed. [`Builder::batch`] switches to a background writer: a
//! log call only renders and queues (well under a microsecond), and a writer thread
//! stores the queue in batches with binary `COPY`. [`Guard::flush`] returns once what
//! was queued before it is committed; dropping the guard writes what is left.
//!
//! # When the database is away
//!
//! Logging never crashes, hangs or silently loses an event. An unreachable database at
//! startup is not an error: pglog says so once on stderr, writes events there as readable
//! lines, and resumes writing rows by itself when the database is back. Every wait
//! (connecting, waiting for a pooled session, each statement) is bounded by pglog's own
//! timers, also when the server is frozen or the network drops packets: a blocking log
//! call returns within `pool_wait + statement_timeout + 350 ms`. pglog is safe behind
//! transaction poolers (pgbouncer) and across `fork()`; see the README.

// The README's examples are compiled as doc tests, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod builder;
#[cfg(feature = "cli")]
mod cli;
mod convert;
mod dsn;
mod error;
mod exception;
mod fallback;
mod fork;
mod guard;
mod libpq; // ~/.pgpass and pg_service.conf, read as libpq reads them
mod logger;
mod render;
mod schema;
mod scope;
mod settings;
#[cfg(feature = "signals")]
mod signals;
mod sink;
mod start;
mod stats;
mod sync;
mod tls;

pub use builder::{init, Builder};
pub use convert::Conversion;
pub use dsn::Dsn;
pub use error::Error;
pub use exception::{error_value, ErrorValue};
pub use guard::Guard;
pub use log;
pub use logger::Logger;
pub use schema::Partition;
pub use scope::{scope, Scope};
pub use settings::{Config, DEFAULT_TABLE};
pub use sink::Overflow;
pub use stats::Stats;

/// Not part of the API: the `pglog` command with these arguments (the program's name
/// first), as `src/bin/pglog.rs` and the demo run it (feature `cli`).
#[cfg(feature = "cli")]
#[doc(hidden)]
pub fn __cli_run<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    cli::run(args)
}

/// Not part of the API: lets `benches/` time rendering alone.
#[doc(hidden)]
pub fn __render_for_bench(record: &log::Record<'_>) -> impl Sized {
    render::render(record, chrono::Utc::now())
}
