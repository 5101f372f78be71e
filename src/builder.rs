//! Setting pglog up: [`Builder`] and [`init`].

use std::sync::Arc;
use std::time::Duration;

use log::LevelFilter;

use crate::fallback::RateLimit;
use crate::logger::{Core, Logger};
use crate::schema::Table;
use crate::sink::{Blocking, PoolSettings, SessionConfig, Sink};
use crate::stats::Counters;
use crate::{dsn, Error, Guard};

/// The table stogger-postgres writes to; sharing it is the point.
pub const DEFAULT_TABLE: &str = "stogger_logs";

/// Environment variables [`init`] reads.
const ENV_DSN: &str = "PGLOG_DSN";
const ENV_TABLE: &str = "PGLOG_TABLE";

/// Sets up the logger, installs it globally, and returns its guard. Reads the DSN from
/// `PGLOG_DSN` and the table from `PGLOG_TABLE`; anything unset keeps
/// [`Builder::new`]'s default.
///
/// # Errors
///
/// A malformed setting, or a global logger that is already installed. An unreachable
/// database is not an error: events go to stderr until it is back.
///
/// # Examples
///
/// ```no_run
/// let _guard = pglog::init()?;
/// log::info!(user_id = 42; "user logged in");
/// # Ok::<(), pglog::Error>(())
/// ```
pub fn init() -> Result<Guard, Error> {
    Builder::from_env().try_init()
}

/// Configures a pglog logger.
///
/// Starts from plain defaults (nothing is read from the environment): the local Unix
/// socket as the current OS user, table `stogger_logs`, level `info`.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// let _guard = pglog::Builder::new()
///     .dsn("postgresql://app@db.internal/ops")
///     .table("app_logs")
///     .level(log::LevelFilter::Debug)
///     .pool_wait(Duration::from_millis(250))
///     .try_init()?;
/// # Ok::<(), pglog::Error>(())
/// ```
#[derive(Clone)]
pub struct Builder {
    dsn: Option<String>,
    table: String,
    level: LevelFilter,
    create_table: bool,
    require_database: bool,
    pool_size: u32,
    pool_wait: Duration,
    connect_timeout: Duration,
    statement_timeout: Duration,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// Plain defaults; nothing is discovered from the environment.
    pub fn new() -> Builder {
        Builder {
            dsn: None,
            table: DEFAULT_TABLE.to_owned(),
            level: LevelFilter::Info,
            create_table: true,
            require_database: false,
            pool_size: 4,
            pool_wait: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(2),
        }
    }

    fn from_env() -> Builder {
        let mut builder = Builder::new();
        if let Some(dsn) = non_empty_env(ENV_DSN) {
            builder = builder.dsn(dsn);
        }
        if let Some(table) = non_empty_env(ENV_TABLE) {
            builder = builder.table(table);
        }
        builder
    }

    /// Where to connect: a `postgresql://` URL or `key=value` pairs, as libpq takes them.
    /// Without one, pglog connects over the local Unix socket as the current OS user.
    pub fn dsn(mut self, dsn: impl Into<String>) -> Builder {
        self.dsn = Some(dsn.into());
        self
    }

    /// The table to write to (default `stogger_logs`). Taken as one identifier, quoted:
    /// `a.b` names a table called `a.b` in the search path's first schema.
    pub fn table(mut self, table: impl Into<String>) -> Builder {
        self.table = table.into();
        self
    }

    /// The most verbose level stored (default `Info`).
    pub fn level(mut self, level: LevelFilter) -> Builder {
        self.level = level;
        self
    }

    /// Whether to create the table and its indexes when missing (default `true`).
    ///
    /// When they all exist pglog runs no DDL anyway; turn this off for a role that may
    /// only INSERT into a table someone else creates, so that a missing table is reported
    /// instead of attempted.
    pub fn create_table(mut self, create: bool) -> Builder {
        self.create_table = create;
        self
    }

    /// Makes [`build`](Builder::build) and [`try_init`](Builder::try_init) fail when the
    /// database is not usable at startup (default `false`: start degraded, log to stderr,
    /// and keep trying).
    pub fn require_database(mut self, require: bool) -> Builder {
        self.require_database = require;
        self
    }

    /// The most sessions pglog keeps open (default 4). Threads logging at once beyond this
    /// wait for a session, at most [`pool_wait`](Builder::pool_wait).
    pub fn pool_size(mut self, size: u32) -> Builder {
        self.pool_size = size;
        self
    }

    /// How long a log call may wait for a free session before its event goes to stderr
    /// (default 1 s).
    pub fn pool_wait(mut self, wait: Duration) -> Builder {
        self.pool_wait = wait;
        self
    }

    /// How long connecting may take, unless the DSN sets `connect_timeout` (default 3 s).
    /// [`build`](Builder::build) waits at most this long for the first session.
    pub fn connect_timeout(mut self, timeout: Duration) -> Builder {
        self.connect_timeout = timeout;
        self
    }

    /// The server-side bound on each statement pglog runs (default 2 s): a locked table or
    /// a stuck server cannot hold a log call longer than this.
    pub fn statement_timeout(mut self, timeout: Duration) -> Builder {
        self.statement_timeout = timeout;
        self
    }

    /// Builds the logger and its guard without installing anything globally.
    ///
    /// # Errors
    ///
    /// A malformed DSN or table name, a zero pool size or timeout, or (with
    /// [`require_database`](Builder::require_database)) a database that cannot be used.
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
        let table = Table::new(&self.table)?;
        if self.pool_size == 0 {
            return Err(Error::config("pool_size", "must be at least 1"));
        }
        for (key, value) in [
            ("pool_wait", self.pool_wait),
            ("connect_timeout", self.connect_timeout),
            ("statement_timeout", self.statement_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::config(key, "must be longer than zero"));
            }
        }
        let driver = dsn::parse(self.dsn.as_deref(), self.connect_timeout)?;
        let connect_timeout = driver
            .get_connect_timeout()
            .copied()
            .unwrap_or(self.connect_timeout);
        let session = SessionConfig {
            target: dsn::describe(&driver),
            table,
            create_table: self.create_table,
            statement_timeout: self.statement_timeout,
        };
        let pool = PoolSettings {
            size: self.pool_size,
            wait: self.pool_wait,
            connect_timeout,
        };
        let counters = Arc::new(Counters::default());
        let blocking = Blocking::start(driver, session, pool, &counters);
        if self.require_database {
            if let Some(why) = blocking.startup_error() {
                return Err(Error::DatabaseUnavailable(why));
            }
        }
        let core = Arc::new(Core {
            sink: Sink::Blocking(blocking),
            counters,
            panic_notice: RateLimit::new(Duration::from_secs(30)),
        });
        let filter = env_filter::Builder::new().filter_level(self.level).build();
        Ok((Logger::new(filter, Arc::clone(&core)), Guard::new(core)))
    }

    /// Builds the logger, installs it as the global `log` logger, and returns its guard.
    ///
    /// # Errors
    ///
    /// Those of [`build`](Builder::build), and [`Error::AlreadyInitialized`] when a
    /// global logger is already installed.
    pub fn try_init(self) -> Result<Guard, Error> {
        let (logger, guard) = self.build()?;
        let max = logger.filter();
        log::set_boxed_logger(Box::new(logger))?;
        log::set_max_level(max);
        Ok(guard)
    }
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The DSN may carry a password: show only whether one is set.
        f.debug_struct("Builder")
            .field("dsn", &self.dsn.as_ref().map(|_| "<set, not shown>"))
            .field("table", &self.table)
            .field("level", &self.level)
            .field("create_table", &self.create_table)
            .field("require_database", &self.require_database)
            .field("pool_size", &self.pool_size)
            .field("pool_wait", &self.pool_wait)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_dsn() {
        let b = Builder::new().dsn("postgresql://app:hunter2@db/ops");
        let shown = format!("{b:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<set, not shown>"));
    }

    #[test]
    fn bad_values_are_named() {
        let err = |b: Builder| b.build().map(drop).unwrap_err().to_string();
        assert_eq!(
            err(Builder::new().pool_size(0)),
            "invalid pglog setting `pool_size`: must be at least 1"
        );
        assert_eq!(
            err(Builder::new().statement_timeout(Duration::ZERO)),
            "invalid pglog setting `statement_timeout`: must be longer than zero"
        );
        assert!(err(Builder::new().table("")).starts_with("invalid pglog setting `table`"));
        assert!(err(Builder::new().dsn("postgresql://x:y@h:port/db"))
            .starts_with("invalid pglog setting `dsn`"));
    }
}
