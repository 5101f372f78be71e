//! Setting pglog up: [`Builder`] and [`init`].

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use log::LevelFilter;

use crate::bounds;
use crate::config::{self, Config, Lookup};
use crate::dsn::{self, Resolved};
use crate::fallback::{self, RateLimit};
use crate::logger::{Core, Logger};
use crate::schema::Table;
use crate::sink::{
    BatchSettings, Endpoint, NoticeHandler, Overflow, PoolSettings, SessionConfig, SessionSettings,
    Sink,
};
use crate::stats::Counters;
use crate::tls::{self, RootCert};
use crate::{Error, Guard};

/// The table stogger-postgres writes to; sharing it is the point.
pub const DEFAULT_TABLE: &str = "stogger_logs";

/// libpq's root certificate variable: used when no pglog setting names one.
const ENV_LIBPQ_ROOT_CERT: &str = "PGSSLROOTCERT";

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
/// [`Builder::new`] starts from plain defaults and reads nothing from files or the
/// environment, except the password a `%PASSWORD%` in its DSN asks for.
/// [`Builder::discover`] starts from the configuration file and lets the environment
/// override everything when the logger is built, builder calls included.
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
#[derive(Clone)]
pub struct Builder {
    enable_postgres: bool,
    dsn: Option<String>,
    table: String,
    level: LevelFilter,
    filters: Option<String>,
    create_table: bool,
    require_database: bool,
    pool_size: u32,
    pool_wait: Duration,
    connect_timeout: Duration,
    statement_timeout: Duration,
    idle_timeout: Duration,
    prepared_statements: bool,
    root_cert: Option<PathBuf>,
    batch: bool,
    batch_settings: BatchSettings,
    synchronous_commit: bool,
    echo: LevelFilter,
    flush_on_signal: bool,
    max_event_bytes: usize,
    /// Made by [`Builder::discover`]: the environment overrides the builder when it is
    /// built, and libpq's variables fill what the DSN leaves out.
    discovered: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder::new()
    }
}

impl Builder {
    /// Plain defaults: the local Unix socket as the current OS user, table
    /// `stogger_logs`, level `info`. Nothing is read from files or the environment, except
    /// the password that a `%PASSWORD%` in the DSN asks for.
    pub fn new() -> Builder {
        Builder {
            enable_postgres: true,
            dsn: None,
            table: DEFAULT_TABLE.to_owned(),
            level: LevelFilter::Info,
            filters: None,
            create_table: true,
            require_database: false,
            pool_size: 4,
            pool_wait: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            prepared_statements: true,
            root_cert: None,
            synchronous_commit: true,
            echo: LevelFilter::Off,
            flush_on_signal: false,
            max_event_bytes: crate::render::DEFAULT_MAX_EVENT_BYTES,
            batch: false,
            batch_settings: BatchSettings {
                capacity: 10_000,
                queue_bytes: 64 << 20,
                batch_size: 1_000,
                flush_interval: Duration::from_millis(100),
                overflow: Overflow::default(),
                flush_level: LevelFilter::Error,
                flush_timeout: Duration::from_secs(5),
            },
            discovered: false,
        }
    }

    /// Whether pglog's commits wait for the server to flush them to disk (default `true`).
    ///
    /// `false` sets `synchronous_commit = off` on pglog's own sessions only: each commit
    /// returns without waiting for its WAL flush, which makes a blocking log call several
    /// times cheaper on a server with real disk syncs. The trade-off: if the *server*
    /// crashes, the events of the last few hundred milliseconds (up to three times
    /// `wal_writer_delay`) may be lost even though their log calls returned; the database
    /// itself stays consistent. A crash of the program loses nothing either way.
    pub fn synchronous_commit(mut self, wait: bool) -> Builder {
        self.synchronous_commit = wait;
        self
    }

    /// Also writes events at or above `level` to stderr, in the fallback's readable
    /// format, whether or not the database is up (default `Off`). What a CLI tool wants
    /// on its terminal; an echoed event that cannot be stored is not printed twice.
    pub fn echo(mut self, level: LevelFilter) -> Builder {
        self.echo = level;
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
        self.batch = true;
        self
    }

    /// Most events a batch mode queue holds (default 10,000); see
    /// [`overflow`](Builder::overflow) for what happens when it is full. Memory stays
    /// bounded by this, whatever the database does.
    pub fn queue_capacity(mut self, capacity: usize) -> Builder {
        self.batch_settings.capacity = capacity;
        self
    }

    /// Most bytes of events the batch mode queue holds (default 64 MiB); events are
    /// weighed by what they hold (message, key-values, call site). With
    /// [`queue_capacity`](Builder::queue_capacity) it bounds memory whatever the events
    /// weigh: the overflow policy applies when either is reached. A batch also ends at
    /// 8 MiB, so memory stays under about this plus 16 MiB.
    pub fn queue_bytes(mut self, bytes: usize) -> Builder {
        self.batch_settings.queue_bytes = bytes;
        self
    }

    /// Most events written by one `COPY` in batch mode (default 1,000).
    pub fn batch_size(mut self, size: usize) -> Builder {
        self.batch_settings.batch_size = size;
        self
    }

    /// Longest the batch writer waits for a batch to fill before writing what it has
    /// (default 100 ms).
    pub fn flush_interval(mut self, interval: Duration) -> Builder {
        self.batch_settings.flush_interval = interval;
        self
    }

    /// What a log call does when the batch queue is full (default: wait at most 200 ms,
    /// then write the event to stderr).
    pub fn overflow(mut self, overflow: Overflow) -> Builder {
        self.batch_settings.overflow = overflow;
        self
    }

    /// Events at or above this level are written at once in batch mode, without waiting
    /// for the batch to fill (default `Error`; `Off` turns it off).
    pub fn flush_level(mut self, level: LevelFilter) -> Builder {
        self.batch_settings.flush_level = level;
        self
    }

    /// Longest [`Guard::flush`] and the guard's drop wait for the batch writer (default
    /// 5 s). On drop, what is still queued then goes to stderr.
    pub fn flush_timeout(mut self, timeout: Duration) -> Builder {
        self.batch_settings.flush_timeout = timeout;
        self
    }

    /// The most bytes kept of a message, and of each key-value (default 4 MiB): a longer
    /// one keeps its head and a note of its whole size (`… [N bytes; cut at
    /// max_event_bytes]`). One huge event then costs its write no more than any other,
    /// and cannot hold up the table (or memory) for the events after it.
    pub fn max_event_bytes(mut self, bytes: usize) -> Builder {
        self.max_event_bytes = bytes;
        self
    }

    /// On SIGTERM or SIGINT, write what batch mode holds (waiting at most the flush
    /// timeout; what cannot be written goes to stderr), then let the signal end the
    /// process as it would have (default `false`). Needs the `signals` cargo feature.
    ///
    /// Without it, SIGTERM and SIGINT (Ctrl-C) end the program as SIGKILL does, and batch
    /// mode loses what it still holds (see the README's "Signals, panics and exits").
    /// For programs that do not handle these signals themselves: one that does should
    /// drop the guard (or call [`Guard::flush`]) in its own handler instead.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let _guard = pglog::Builder::discover()?
    ///     .batch()
    ///     .flush_on_signal(true)
    ///     .try_init()?;
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn flush_on_signal(mut self, flush: bool) -> Builder {
        self.flush_on_signal = flush;
        self
    }

    /// The defaults, overridden by every setting `config` has. Nothing is discovered.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let config = pglog::Config::from_file("/etc/nightly/logging.toml")?;
    /// let _guard = pglog::Builder::from_config(config).table("nightly_logs").try_init()?;
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn from_config(config: Config) -> Builder {
        Builder::new().apply(config)
    }

    /// A builder as [`init`] uses it, which discovers its configuration. Precedence,
    /// lowest to highest:
    ///
    /// 1. the defaults of [`Builder::new`];
    /// 2. the configuration file: the one `PGLOG_CONFIG` names, else `./pyproject.toml`
    ///    if it exists (`[tool.stogger]`, then `[tool.pglog]`; see [`Config::discover`]);
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
        let mut builder = Builder::from_config(config::discover_file(&config::real_env)?);
        builder.discovered = true;
        Ok(builder)
    }

    fn apply(mut self, config: Config) -> Builder {
        let Config {
            enable_postgres,
            dsn,
            table,
            level,
            filters,
            create_table,
            require_database,
            pool_size,
            pool_wait_ms,
            connect_timeout_ms,
            statement_timeout_ms,
            idle_timeout_ms,
            prepared_statements,
            root_cert,
            batch,
            queue_capacity,
            queue_bytes,
            batch_size,
            flush_interval_ms,
            overflow,
            overflow_wait_ms,
            flush_level,
            flush_timeout_ms,
            synchronous_commit,
            echo,
            flush_on_signal,
            max_event_bytes,
        } = config;
        let ms = |v: std::num::NonZeroU64| Duration::from_millis(v.get());
        self.enable_postgres = enable_postgres.unwrap_or(self.enable_postgres);
        self.dsn = dsn.or(self.dsn);
        self.table = table.unwrap_or(self.table);
        // Level before filters: within one source, a bare level in `filters` wins.
        if let Some(level) = level {
            self = self.level(level);
        }
        if let Some(filters) = filters {
            self = self.filters(filters);
        }
        self.create_table = create_table.unwrap_or(self.create_table);
        self.require_database = require_database.unwrap_or(self.require_database);
        self.pool_size = pool_size.map_or(self.pool_size, |v| v.get());
        self.pool_wait = pool_wait_ms.map_or(self.pool_wait, ms);
        self.connect_timeout = connect_timeout_ms.map_or(self.connect_timeout, ms);
        self.statement_timeout = statement_timeout_ms.map_or(self.statement_timeout, ms);
        self.idle_timeout = idle_timeout_ms.map_or(self.idle_timeout, ms);
        self.prepared_statements = prepared_statements.unwrap_or(self.prepared_statements);
        self.root_cert = root_cert.or(self.root_cert);
        self.batch = batch.unwrap_or(self.batch);
        let settings = &mut self.batch_settings;
        settings.capacity = queue_capacity.map_or(settings.capacity, |v| v.get());
        settings.queue_bytes = queue_bytes.map_or(settings.queue_bytes, |v| v.get());
        settings.batch_size = batch_size.map_or(settings.batch_size, |v| v.get());
        settings.flush_interval = flush_interval_ms.map_or(settings.flush_interval, ms);
        settings.overflow = overflow.unwrap_or(settings.overflow);
        // The wait belongs to the blocking policy: it changes nothing under `drop`.
        if let (Some(wait), Overflow::Block(_)) = (overflow_wait_ms, settings.overflow) {
            settings.overflow = Overflow::Block(ms(wait));
        }
        settings.flush_level = flush_level.unwrap_or(settings.flush_level);
        settings.flush_timeout = flush_timeout_ms.map_or(settings.flush_timeout, ms);
        self.synchronous_commit = synchronous_commit.unwrap_or(self.synchronous_commit);
        self.echo = echo.unwrap_or(self.echo);
        self.flush_on_signal = flush_on_signal.unwrap_or(self.flush_on_signal);
        self.max_event_bytes = max_event_bytes.map_or(self.max_event_bytes, |v| v.get());
        self
    }

    /// Whether to write to PostgreSQL at all (default `true`). `false` writes every event
    /// to stderr only, as stogger does with `enable_postgres = false`.
    pub fn enable_postgres(mut self, enable: bool) -> Builder {
        self.enable_postgres = enable;
        self
    }

    /// Where to connect: a `postgresql://` URL or `key=value` pairs, as libpq takes them.
    /// Without one, pglog connects over the local Unix socket as the current OS user.
    ///
    /// `%PASSWORD%` in it is replaced by the value of `PGLOG_PASSWORD` (or else
    /// `STOGGER_POSTGRES_PASSWORD`), percent-encoded in a URL and quoted in `key=value`
    /// pairs, so that any character works. When neither is set, pglog says so on stderr
    /// and logs there.
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

    /// The most verbose level stored (default `Info`), for every module that
    /// [`filters`](Builder::filters) does not name. Replaces a bare level given earlier
    /// in `filters`.
    pub fn level(mut self, level: LevelFilter) -> Builder {
        self.level = level;
        self.filters = config::layer_filters(self.filters.take(), true, None);
        self
    }

    /// Per-module levels in `RUST_LOG` syntax, e.g. `info,my_tool::db=debug,hyper=warn`.
    /// Adds to directives given before (a configuration file's, say); later ones win per
    /// module, and a bare level sets the default as [`level`](Builder::level) does.
    pub fn filters(mut self, directives: impl Into<String>) -> Builder {
        self.filters = config::layer_filters(self.filters.take(), false, Some(directives.into()));
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
    /// and keep trying). Has no effect with [`enable_postgres(false)`](Builder::enable_postgres).
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

    /// The bound on each statement pglog runs (default 2 s): a locked table, a frozen
    /// server or a network that drops packets cannot hold a log call longer than this
    /// plus at most 350 ms (to let the server's own timeout answer, then to cancel the
    /// statement and hear back). A blocking log call waits at most
    /// [`pool_wait`](Builder::pool_wait) plus this plus 350 ms in all.
    pub fn statement_timeout(mut self, timeout: Duration) -> Builder {
        self.statement_timeout = timeout;
        self
    }

    /// How long a session may stay idle before pglog closes it (default 30 s). An idle
    /// program then holds no server connection (so `pg_ctl stop -m smart` is not kept
    /// waiting, nor a pooler's slot taken), at the price of one connect for its next event.
    pub fn idle_timeout(mut self, timeout: Duration) -> Builder {
        self.idle_timeout = timeout;
        self
    }

    /// Whether pglog may use named prepared statements, `COPY` and session settings on a
    /// session proven to reach the server directly (default `true`).
    ///
    /// Behind a transaction pooler (pgbouncer in transaction or statement mode, pgcat,
    /// Supavisor, RDS Proxy) these would be shared with other programs: a named
    /// statement could run another program's SQL, a setting would change its session. So
    /// pglog proves each session direct first (the backend that announced itself at
    /// startup is the one answering) and uses one unnamed statement per write on every
    /// other session, whatever this says. `false` uses unnamed statements everywhere:
    /// the same safety, at a small cost per event on direct connections (see the
    /// benchmarks) and without `COPY` in batch mode.
    pub fn prepared_statements(mut self, allow: bool) -> Builder {
        self.prepared_statements = allow;
        self
    }

    /// A PEM file with the certificate authorities that may sign the server's
    /// certificate. With it, TLS connections verify the certificate and that it names the
    /// host connected to (libpq's `verify-full`); without it, `sslmode=prefer` and
    /// `require` encrypt without authenticating the server, as in libpq. Needs the
    /// `tls-rustls` feature.
    pub fn root_cert(mut self, path: impl Into<PathBuf>) -> Builder {
        self.root_cert = Some(path.into());
        self
    }

    /// Builds the logger and its guard without installing anything globally.
    ///
    /// # Errors
    ///
    /// A malformed DSN, table name or filter, a zero pool size or timeout, TLS demanded
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
        let env: Lookup<'_> = &config::real_env;
        let builder = if self.discovered {
            self.apply(config::from_lookup(env)?)
        } else {
            self
        };
        builder.build_in(env)
    }

    /// Every numeric setting within its range (see [`crate::bounds`]).
    fn check_bounds(&self) -> Result<(), Error> {
        let b = &self.batch_settings;
        let size = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        bounds::check("pool_size", u64::from(self.pool_size))?;
        bounds::check("queue_capacity", size(b.capacity))?;
        bounds::check("queue_bytes", size(b.queue_bytes))?;
        bounds::check("batch_size", size(b.batch_size))?;
        bounds::check("max_event_bytes", size(self.max_event_bytes))?;
        for (key, value) in [
            ("pool_wait", self.pool_wait),
            ("connect_timeout", self.connect_timeout),
            ("statement_timeout", self.statement_timeout),
            ("idle_timeout", self.idle_timeout),
            ("flush_interval", b.flush_interval),
            ("flush_timeout", b.flush_timeout),
        ] {
            bounds::check_duration(key, value)?;
        }
        if b.flush_timeout.is_zero() {
            return Err(Error::config("flush_timeout", "must be longer than zero"));
        }
        if let Overflow::Block(wait) = b.overflow {
            bounds::check_duration("overflow_wait", wait)?;
        }
        Ok(())
    }

    /// Builds with `env` as the environment: all of `build` but reading the environment.
    fn build_in(self, env: Lookup<'_>) -> Result<(Logger, Guard), Error> {
        let table = Table::new(&self.table)?;
        self.check_bounds()?;
        fallback::settle_home();
        let filter = config::build_filter(self.level, self.filters.as_deref())
            .map_err(|why| Error::config("filters", why))?;
        if self.flush_on_signal && cfg!(not(feature = "signals")) {
            return Err(Error::config(
                "flush_on_signal",
                "needs pglog's `signals` cargo feature: enable it, or turn the setting off",
            ));
        }
        let counters = Arc::new(Counters::default());
        let sink = if self.enable_postgres {
            self.database_sink(table, env, &counters)?
        } else {
            Sink::Stderr
        };
        let core = Arc::new(Core {
            sink,
            counters,
            panic_notice: RateLimit::new(Duration::from_secs(30)),
            echo: self.echo,
            max_event_bytes: self.max_event_bytes,
            recursion_notice: RateLimit::new(Duration::MAX),
        });
        #[cfg(feature = "signals")]
        if self.flush_on_signal {
            crate::signals::install(&core)?;
        }
        Ok((Logger::new(filter, Arc::clone(&core)), Guard::new(core)))
    }

    fn database_sink(
        &self,
        table: Table,
        env: Lookup<'_>,
        counters: &Arc<Counters>,
    ) -> Result<Sink, Error> {
        let driver = match dsn::resolve(
            self.dsn.as_deref(),
            self.connect_timeout,
            env,
            self.discovered,
        )? {
            Resolved::Ready(driver) => *driver,
            Resolved::NoPassword(why) if self.require_database => {
                return Err(Error::DatabaseUnavailable(why))
            }
            Resolved::NoPassword(why) => {
                // The operator must act; the program goes on, logging to stderr.
                fallback::notice(&why);
                return Ok(Sink::Stderr);
            }
        };
        let libpq_root = if self.discovered {
            env(ENV_LIBPQ_ROOT_CERT).map(PathBuf::from)
        } else {
            None
        };
        let root_cert = match (&self.root_cert, &libpq_root) {
            (Some(path), _) => Some(RootCert {
                path,
                key: "root_cert",
                explicit: true,
            }),
            (None, Some(path)) => Some(RootCert {
                path,
                key: ENV_LIBPQ_ROOT_CERT,
                explicit: false,
            }),
            (None, None) => None,
        };
        let transport = tls::transport(&driver, root_cert)?;
        let connect_timeout = driver
            .get_connect_timeout()
            .copied()
            .unwrap_or(self.connect_timeout);
        let target = dsn::describe(&driver);
        let session = SessionConfig::new(
            Endpoint::new(driver, transport, connect_timeout),
            table,
            target,
            SessionSettings {
                create_table: self.create_table,
                statement_timeout: self.statement_timeout,
                synchronous_commit: self.synchronous_commit,
                prepared_statements: self.prepared_statements,
            },
            server_warnings(),
        );
        let pool = PoolSettings {
            size: self.pool_size as usize,
            idle_timeout: self.idle_timeout,
        };
        let batch = self.batch.then(|| self.batch_settings.clone());
        let sink = Sink::database(session, pool, self.pool_wait, batch, counters);
        if self.require_database {
            if let Some(why) = sink.startup_error() {
                return Err(Error::DatabaseUnavailable(why));
            }
        }
        Ok(sink)
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

/// The global logger [`Builder::try_init`] installs before it builds the real one, and
/// hands records to once it is built. Until then (or if building fails) the maximum level
/// stays off, so no record reaches it.
struct Handoff(Arc<OnceLock<Logger>>);

impl log::Log for Handoff {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.get().is_some_and(|logger| logger.enabled(metadata))
    }

    fn log(&self, record: &log::Record<'_>) {
        if let Some(logger) = self.0.get() {
            logger.log(record);
        }
    }

    fn flush(&self) {
        if let Some(logger) = self.0.get() {
            logger.flush();
        }
    }
}

/// The server's warnings, told to the operator (rate-limited). The driver's default
/// sends notices to `log`, that is, back into pglog.
fn server_warnings() -> Box<NoticeHandler> {
    let limit = RateLimit::new(Duration::from_secs(30));
    Box::new(move |notice: &tokio_postgres::error::DbError| {
        if notice.severity() == "WARNING" {
            limit.notice(|| format!("server warning: {}", notice.message()));
        }
    })
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The DSN may carry a password: show only whether one is set.
        f.debug_struct("Builder")
            .field("enable_postgres", &self.enable_postgres)
            .field("dsn", &self.dsn.as_ref().map(|_| "<set, not shown>"))
            .field("table", &self.table)
            .field("level", &self.level)
            .field("filters", &self.filters)
            .field("create_table", &self.create_table)
            .field("require_database", &self.require_database)
            .field("pool_size", &self.pool_size)
            .field("pool_wait", &self.pool_wait)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("prepared_statements", &self.prepared_statements)
            .field("root_cert", &self.root_cert)
            .field("synchronous_commit", &self.synchronous_commit)
            .field("echo", &self.echo)
            .field("flush_on_signal", &self.flush_on_signal)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("batch", &self.batch)
            .field("batch_settings", &self.batch_settings)
            .field("discovered", &self.discovered)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};

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
        let err = |b: Builder| b.build_in(&no_env).map(drop).unwrap_err().to_string();
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
        let err = |b: Builder| b.build_in(&no_env).map(drop).unwrap_err().to_string();
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
            .build_in(&no_env)
            .is_ok());
    }

    #[test]
    fn from_config_sets_every_setting() {
        let c = Config {
            enable_postgres: Some(false),
            dsn: Some("host=h".into()),
            table: Some("t".into()),
            level: Some(LevelFilter::Debug),
            filters: Some("a=trace".into()),
            create_table: Some(false),
            require_database: Some(true),
            pool_size: NonZeroU32::new(7),
            pool_wait_ms: NonZeroU64::new(70),
            connect_timeout_ms: NonZeroU64::new(700),
            statement_timeout_ms: NonZeroU64::new(7000),
            idle_timeout_ms: NonZeroU64::new(8000),
            prepared_statements: Some(false),
            root_cert: Some("/ca.pem".into()),
            batch: Some(true),
            queue_capacity: NonZeroUsize::new(9),
            queue_bytes: NonZeroUsize::new(4096),
            batch_size: NonZeroUsize::new(3),
            flush_interval_ms: NonZeroU64::new(11),
            overflow: Some(Overflow::default()),
            overflow_wait_ms: NonZeroU64::new(13),
            flush_level: Some(LevelFilter::Warn),
            flush_timeout_ms: NonZeroU64::new(17),
            synchronous_commit: Some(false),
            echo: Some(LevelFilter::Error),
            flush_on_signal: Some(true),
            max_event_bytes: NonZeroUsize::new(5000),
        };
        let b = Builder::from_config(c);
        assert!(!b.synchronous_commit);
        assert_eq!(b.echo, LevelFilter::Error);
        assert!(b.flush_on_signal);
        assert_eq!(b.max_event_bytes, 5000);
        assert!(!b.enable_postgres && !b.create_table && b.require_database);
        assert_eq!(b.dsn.as_deref(), Some("host=h"));
        assert_eq!(b.table, "t");
        assert_eq!(b.level, LevelFilter::Debug);
        assert_eq!(b.filters.as_deref(), Some("a=trace"));
        assert_eq!(b.pool_size, 7);
        assert_eq!(b.pool_wait, Duration::from_millis(70));
        assert_eq!(b.connect_timeout, Duration::from_millis(700));
        assert_eq!(b.statement_timeout, Duration::from_secs(7));
        assert_eq!(b.idle_timeout, Duration::from_secs(8));
        assert!(!b.prepared_statements);
        assert_eq!(b.root_cert, Some(PathBuf::from("/ca.pem")));
        assert!(b.batch);
        let s = &b.batch_settings;
        assert_eq!((s.capacity, s.batch_size, s.queue_bytes), (9, 3, 4096));
        assert_eq!(s.flush_interval, Duration::from_millis(11));
        assert_eq!(s.overflow, Overflow::Block(Duration::from_millis(13)));
        assert_eq!(s.flush_level, LevelFilter::Warn);
        assert_eq!(s.flush_timeout, Duration::from_millis(17));
        assert!(!b.discovered);
        // A wait without a policy keeps `drop` from a lower source.
        let wait_only = Config {
            overflow_wait_ms: NonZeroU64::new(5),
            ..Config::default()
        };
        let dropping = Builder::new().overflow(Overflow::Drop).apply(wait_only);
        assert_eq!(dropping.batch_settings.overflow, Overflow::Drop);
        // An empty config changes nothing.
        assert_eq!(
            format!("{:?}", Builder::from_config(Config::default())),
            format!("{:?}", Builder::new())
        );
    }

    #[test]
    fn builder_calls_sit_between_file_and_environment() {
        let file = Config {
            table: Some("file".into()),
            filters: Some("warn,a=debug".into()),
            pool_size: NonZeroU32::new(2),
            ..Config::default()
        };
        let env = Config {
            table: Some("env".into()),
            level: Some(LevelFilter::Trace),
            ..Config::default()
        };
        let b = Builder::from_config(file)
            .table("code")
            .pool_size(3)
            .filters("b=info")
            .apply(env);
        assert_eq!(b.table, "env");
        assert_eq!(b.pool_size, 3);
        assert_eq!(b.level, LevelFilter::Trace);
        assert_eq!(b.filters.as_deref(), Some("a=debug,b=info"));
    }

    #[test]
    fn stderr_only_needs_no_database() {
        use log::Log;
        let (logger, guard) = Builder::new()
            .enable_postgres(false)
            .dsn("host=/nonexistent")
            .require_database(true)
            .build_in(&no_env)
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
    fn an_unset_password_degrades_or_fails_as_asked() {
        use log::Log;
        let dsn = "postgresql://app:%PASSWORD%@127.0.0.1:1/ops";
        let (logger, guard) = Builder::new().dsn(dsn).build_in(&no_env).unwrap();
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
            .build_in(&no_env)
            .map(drop)
            .unwrap_err();
        assert!(matches!(err, Error::DatabaseUnavailable(_)), "{err}");
        assert!(err.to_string().contains("PGLOG_PASSWORD"), "{err}");
    }
}
