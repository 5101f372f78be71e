//! Setting pglog up: [`Builder`] and [`init`], the public face of the settings.
//!
//! A builder records what code sets; building resolves it with the other sources (see
//! [`crate::settings`]) and hands the result to [`crate::start`]. The calls of plain
//! settings (`pool_size`, `statement_timeout`, ...) are made from the declaration in
//! `settings`, with their docs; the calls here do more than record one value.

use std::sync::{Arc, OnceLock};

use log::LevelFilter;

use crate::settings::{self, file, filters, real_env, Config, Environment, SharedEnv};
use crate::start::{self, Handoff};
use crate::{Error, Guard, Logger, Overflow};

/// Sets up the logger from the configuration it discovers, installs it globally, and
/// returns its guard. Same as `Builder::discover()?.try_init()`; see
/// [`Builder::discover`] for where settings come from.
///
/// # Errors
///
/// A malformed setting, configuration file or environment variable, or a global logger
/// that is already installed. An unreachable database, or a `%PASSWORD%` the environment
/// does not fill, is not an error: events go to stderr, and a notice says why.
///
/// # Examples
///
/// ```no_run
/// // With `[tool.stogger] postgres_dsn = "postgresql://app:%PASSWORD%@db/ops"` in
/// // ./pyproject.toml and STOGGER_POSTGRES_PASSWORD in the environment:
/// let _guard = pglog::init()?;
/// log::info!(user_id = 42; "user logged in");
/// # Ok::<(), pglog::Error>(())
/// ```
pub fn init() -> Result<Guard, Error> {
    Builder::discover()?.try_init()
}

/// Configures a pglog logger.
///
/// [`Builder::new`] starts from plain defaults and reads no configuration file and none of
/// pglog's or libpq's variables; only what a connection needs as `psql` would find it: the
/// password a `%PASSWORD%` in the DSN asks for, and in the home directory `~/.pgpass`,
/// `~/.postgresql/` certificates and, for a DSN that names a service, the service files.
/// [`Builder::discover`] starts from the configuration file and lets the environment
/// override everything when the logger is built, builder calls included.
///
/// Every setting has a call of its own name; [`Config`] lists them all with their file
/// keys and environment variables. `Debug` never shows the DSN.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// let _guard = pglog::Builder::new()
///     .dsn("postgresql://app:%PASSWORD%@db.internal/ops")
///     .table("app_logs")
///     .level(log::LevelFilter::Debug)
///     .pool_wait(Duration::from_millis(250))
///     .try_init()?;
/// # Ok::<(), pglog::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Builder {
    /// What the configuration file set ([`Builder::discover`]), or the configuration
    /// [`Builder::from_config`] was given: below code.
    file: Config,
    /// What this builder's calls set.
    pub(crate) code: Config,
    /// Whether building reads the environment, above everything.
    environment: Environment,
}

impl Builder {
    /// Plain defaults: the local Unix socket as the current OS user, table
    /// `stogger_logs`, level `info`. No configuration file or variable is read (see
    /// [`Builder`] for what a connection still looks up, as libpq would).
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The defaults, overridden by every setting `config` has, and then by this
    /// builder's calls. Nothing is discovered, and the environment is not read.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let config = pglog::Config::from_file("/etc/nightly/logging.toml")?;
    /// let _guard = pglog::Builder::from_config(config).table("nightly_logs").try_init()?;
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn from_config(config: Config) -> Builder {
        Builder {
            file: config,
            ..Builder::new()
        }
    }

    /// A builder as [`init`] uses it, which discovers its configuration. Precedence,
    /// lowest to highest:
    ///
    /// 1. the defaults of [`Builder::new`];
    /// 2. the configuration file: the one `PGLOG_CONFIG` names, else `./pyproject.toml`
    ///    if it exists (`[tool.stogger]`, then `[tool.pglog]`; see
    ///    [`Config::from_file`]);
    /// 3. calls made on the returned builder;
    /// 4. the environment, read when the logger is built: `PGLOG_*` over `STOGGER_*` (see
    ///    [`Config::from_env`]).
    ///
    /// libpq's `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, `PGSSLMODE`,
    /// `PGAPPNAME` and `PGSSLROOTCERT` then fill whatever the DSN and settings leave out.
    ///
    /// # Errors
    ///
    /// A configuration file that `PGLOG_CONFIG` names but cannot be read, or one that is
    /// malformed; the message names the file, line and key.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// // PGLOG_TABLE, if set, still wins over the table given here.
    /// let _guard = pglog::Builder::discover()?.table("nightly_logs").try_init()?;
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn discover() -> Result<Builder, Error> {
        Ok(Builder {
            file: file::discover(&real_env)?,
            code: Config::default(),
            environment: Environment::Read,
        })
    }

    /// The most verbose level stored (default `Info`), for every module that
    /// [`filters`](Builder::filters) does not name. Replaces a bare level given earlier
    /// in `filters`, and a lower source's.
    pub fn level(mut self, level: LevelFilter) -> Builder {
        self.code.level = Some(level);
        self.code.filters = filters::layer(self.code.filters.take(), true, None);
        self
    }

    /// Per-module levels in `RUST_LOG` syntax, e.g. `info,my_tool::db=debug,hyper=warn`.
    /// Adds to directives given before (a configuration file's, say); later ones win per
    /// module, and a bare level sets the default as [`level`](Builder::level) does.
    pub fn filters(mut self, directives: impl Into<String>) -> Builder {
        self.code.filters =
            filters::layer(self.code.filters.take(), false, Some(directives.into()));
        self
    }

    /// Background batch mode: a log call renders the event and queues it, never touching
    /// the network; a writer thread stores queued events in batches with binary `COPY`.
    /// For programs that log more than a few thousand events a second, or cannot afford a
    /// round trip per log call (async programs included). Blocking mode, one `INSERT` per
    /// event on the caller's thread, is the default.
    ///
    /// Keep the [`Guard`]: dropping it writes what is queued (waiting at most
    /// [`flush_timeout`](Builder::flush_timeout)) and stops the writer.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let guard = pglog::Builder::new()
    ///     .dsn("postgresql://app@db.internal/ops")
    ///     .batch()
    ///     .overflow(pglog::Overflow::Drop)
    ///     .try_init()?;
    /// log::info!(rows = 42; "imported");
    /// guard.flush(); // returns once the event is committed
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn batch(mut self) -> Builder {
        self.code.batch = Some(true);
        self
    }

    /// What a log call does when the batch queue is full (default: wait at most 200 ms
    /// without progress, then write the event to stderr).
    pub fn overflow(mut self, overflow: Overflow) -> Builder {
        self.code.overflow = Some(overflow);
        if let Overflow::Block(wait) = overflow {
            self.code.overflow_wait = Some(wait);
        }
        self
    }

    /// Keep at least `days` whole UTC days of events before today and remove older ones,
    /// in the background (default: keep everything; 1 to 36,500). A table pglog
    /// partitioned loses whole partitions, a plain table rows in batches; a table
    /// pg_partman manages, or one partitioned by hand, is left to its manager. The
    /// setting is `retention_days` in files and `PGLOG_RETENTION_DAYS` in the
    /// environment.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let _guard = pglog::Builder::new()
    ///     .partition(pglog::Partition::Day)
    ///     .retention(30)
    ///     .try_init()?;
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn retention(mut self, days: u32) -> Builder {
        self.code.retention_days = Some(days);
        self
    }

    /// Builds the logger and its guard without installing anything globally.
    ///
    /// # Errors
    ///
    /// A setting out of its range, a malformed DSN, table name or filter, TLS demanded
    /// of a build without the `tls-rustls` feature, an unreadable root certificate, a
    /// malformed environment variable (for a builder from [`discover`](Builder::discover)),
    /// or (with [`require_database`](Builder::require_database)) a database that cannot
    /// be used.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let (logger, guard) = pglog::Builder::new().build()?;
    /// log::set_max_level(logger.filter());
    /// log::set_boxed_logger(Box::new(logger)).expect("no other logger installed");
    /// log::warn!("disk almost full");
    /// drop(guard);
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn build(self) -> Result<(Logger, Guard), Error> {
        self.build_in(Arc::new(real_env))
    }

    /// Builds with `env` as the environment.
    fn build_in(self, env: SharedEnv) -> Result<(Logger, Guard), Error> {
        let settings = settings::resolve(&self.file, &self.code, self.environment, &*env)?;
        start::build(settings, self.environment, &env)
    }

    /// Converts the configured table, a plain one (stogger's, or one pglog created
    /// without `partition`), into a table partitioned by `partition`, online, keeping
    /// every row; afterwards pglog's maintenance keeps its partitions (and retention) as
    /// for a table it created partitioned. An operator's one-off: run it once, from any
    /// program or a small tool, with the configuration the loggers use; loggers running
    /// meanwhile keep writing.
    ///
    /// The old table becomes the partition `<table>_until<YYYYMMDD>` of every row before
    /// the end of the period after today's (so that its rows need no copying); a new
    /// parent takes the table's name, stogger's four index names, the `id` sequence and
    /// the grants, with a default partition and the partitions from that bound on. The
    /// steps that read the whole table (stogger's indexes if missing, a unique index on
    /// `(id, timestamp)`, validating a `CHECK (timestamp < bound)`) run without blocking
    /// writers, within an hour each; the swap holds the table's lock for a moment (a
    /// catalog change, no scan), after waiting at most 500 ms for it, twenty tries a
    /// second apart. Until the swap, a row stamped after the bound is refused. Run it as
    /// the table's owner or a member of the owner's role (a superuser will do); not
    /// through a transaction pooler, which `CREATE INDEX CONCURRENTLY` does not survive.
    ///
    /// # Errors
    ///
    /// A setting the logger would refuse too, [`Partition::None`](crate::Partition),
    /// and [`Error::Conversion`] naming the step that failed: no such table, one
    /// partitioned already or of another shape, a missing privilege, a lock not had,
    /// a row newer than the bound. The table is left whole; running the conversion again
    /// goes on where it stopped.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let done = pglog::Builder::discover()?
    ///     .convert_to_partitioned(pglog::Partition::Day)?;
    /// println!("{} now partitioned; rows before {} in {}", done.table, done.until, done.old_partition);
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn convert_to_partitioned(
        self,
        partition: crate::Partition,
    ) -> Result<crate::Conversion, Error> {
        let env: SharedEnv = Arc::new(real_env);
        let settings = settings::resolve(&self.file, &self.code, self.environment, &*env)?;
        let span = partition.span().ok_or_else(|| {
            Error::config(
                "partition",
                "converting a table needs a period to partition by: day, week or month",
            )
        })?;
        let table = crate::schema::Table::new(&settings.table)?;
        let session = start::session_config(
            &settings,
            table,
            self.environment,
            &env,
            crate::sink::SessionSettings {
                create_table: false,
                partition,
                statement_timeout: crate::convert::SCAN_LIMIT,
                synchronous_commit: true,
                // No session settings: the long steps must not meet the logger's
                // statement_timeout; their bound is pglog's own.
                prepared_statements: false,
            },
        )?;
        crate::convert::convert(session, span)
    }

    /// Builds the logger, installs it as the global `log` logger, and returns its guard.
    ///
    /// # Errors
    ///
    /// Those of [`build`](Builder::build), and [`Error::AlreadyInitialized`] when a
    /// global logger is already installed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let _guard = pglog::Builder::new().table("nightly_logs").try_init()?;
    /// log::info!("started");
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn try_init(self) -> Result<Guard, Error> {
        // Claim the global logger first: building connects, creates the table and may
        // print notices, none of which a logger that cannot be installed should do.
        let slot = Arc::new(OnceLock::new());
        log::set_boxed_logger(Box::new(Handoff(Arc::clone(&slot))))?;
        let (logger, guard) = self.build()?;
        log::set_max_level(logger.filter());
        let _ = slot.set(logger);
        Ok(guard)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An environment with nothing set, so that these tests never read the real one.
    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn debug_never_shows_the_dsn() {
        let b = Builder::new().dsn("postgresql://app:hunter2@db/ops");
        let shown = format!("{b:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<set, not shown>"));
    }

    #[test]
    fn bad_values_are_named() {
        let err = |b: Builder| {
            b.build_in(Arc::new(no_env))
                .map(drop)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(Builder::new().pool_size(0)),
            "invalid pglog setting `pool_size`: 0 is out of range; use 1 to 1000"
        );
        assert_eq!(
            err(Builder::new().statement_timeout(Duration::ZERO)),
            "invalid pglog setting `statement_timeout`: 0ns is out of range; use 10 to 3600000 ms"
        );
        assert!(err(Builder::new().table("")).starts_with("invalid pglog setting `table`"));
        assert!(err(Builder::new().dsn("postgresql://x:y@h:port/db"))
            .starts_with("invalid pglog setting `dsn`"));
        assert!(err(Builder::new().filters("a=b=c")).starts_with("invalid pglog setting `filters`"));
    }

    #[test]
    fn settings_that_would_crash_are_refused_with_their_range() {
        let err = |b: Builder| {
            b.build_in(Arc::new(no_env))
                .map(drop)
                .unwrap_err()
                .to_string()
        };
        for (builder, key) in [
            (
                Builder::new().queue_capacity(1_000_000_000),
                "queue_capacity",
            ),
            (
                Builder::new().queue_capacity(usize::MAX / 2),
                "queue_capacity",
            ),
            (Builder::new().batch_size(1_000_000_000), "batch_size"),
            (Builder::new().batch_size(usize::MAX / 2), "batch_size"),
            (Builder::new().queue_bytes(usize::MAX), "queue_bytes"),
            (
                Builder::new().flush_interval(Duration::MAX),
                "flush_interval",
            ),
            (Builder::new().flush_timeout(Duration::MAX), "flush_timeout"),
            (Builder::new().pool_wait(Duration::MAX), "pool_wait"),
            (
                Builder::new().connect_timeout(Duration::MAX),
                "connect_timeout",
            ),
            (
                Builder::new().statement_timeout(Duration::MAX),
                "statement_timeout",
            ),
            (Builder::new().idle_timeout(Duration::MAX), "idle_timeout"),
            (
                Builder::new().overflow(Overflow::Block(Duration::MAX)),
                "overflow_wait",
            ),
            (Builder::new().pool_size(u32::MAX), "pool_size"),
            (
                Builder::new().max_event_bytes(usize::MAX),
                "max_event_bytes",
            ),
        ] {
            let message = err(builder.enable_postgres(false));
            assert!(
                message.starts_with(&format!("invalid pglog setting `{key}`"))
                    && message.contains(" to "),
                "{message}"
            );
        }
        // The smallest flush timeout is allowed: nothing then waits for the writer.
        assert!(Builder::new()
            .enable_postgres(false)
            .flush_timeout(Duration::from_nanos(1))
            .build_in(Arc::new(no_env))
            .is_ok());
    }

    #[test]
    fn stderr_only_needs_no_database() {
        use log::Log;
        let (logger, guard) = Builder::new()
            .enable_postgres(false)
            .dsn("host=/nonexistent")
            .require_database(true)
            .build_in(Arc::new(no_env))
            .unwrap();
        logger.log(
            &log::Record::builder()
                .level(log::Level::Warn)
                .args(format_args!("to stderr"))
                .build(),
        );
        let stats = guard.stats();
        assert_eq!((stats.written, stats.fallback), (0, 1));
        assert!(!stats.database_reachable);
    }

    #[test]
    fn an_unset_password_placeholder_still_tries_the_server() {
        // As stogger: an empty password, which trust or peer authentication never asks
        // for. Here nothing listens, so that is the error, not the password.
        use log::Log;
        let dsn = "postgresql://app:%PASSWORD%@127.0.0.1:1/ops";
        let (logger, guard) = Builder::new().dsn(dsn).build_in(Arc::new(no_env)).unwrap();
        logger.log(
            &log::Record::builder()
                .level(log::Level::Error)
                .args(format_args!("still told"))
                .build(),
        );
        assert_eq!(guard.stats().fallback, 1);
        let err = Builder::new()
            .dsn(dsn)
            .require_database(true)
            .build_in(Arc::new(no_env))
            .map(drop)
            .unwrap_err();
        assert!(matches!(err, Error::DatabaseUnavailable(_)), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        assert!(!err.to_string().contains("PGLOG_PASSWORD"), "{err}");
    }
}
