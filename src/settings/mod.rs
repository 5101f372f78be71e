//! Every setting, declared once, and how the sources of their values combine.
//!
//! A value comes from the defaults, a configuration file ([`file`]), builder calls (code)
//! or the environment ([`env`]), lowest to highest precedence. Each source's values are a
//! [`Config`]: the file's and the environment's are read through the setting's form
//! ([`forms`]), which checks them on the way in; the builder records what code set in
//! one. [`resolve`] merges the sources, checks every value against its range, and gives
//! the [`Settings`] the logger is built from.
//!
//! The declaration below is the only place a setting's name, type, default, range, file
//! key and variables are written; [`declare`] turns it into the `Config` field, the file
//! key, the variables, the range check, the resolved field and the builder call.

pub(crate) mod declare;
pub(crate) mod env;
pub(crate) mod file;
pub(crate) mod filters;
pub(crate) mod forms;

use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use self::declare::declare;
use self::forms::{
    ByteCount, Count, Days, Directives, DsnText, Flag, Form, Level, Millis, Partitioning, Path,
    Policy, Text, DAY, GIB, HOUR, KIB, MIB,
};
use crate::dsn::Dsn;
use crate::{Error, Overflow, Partition};

pub(crate) use env::{real_env, Lookup, SharedEnv};

/// The table stogger-postgres writes to; sharing it is the point.
pub const DEFAULT_TABLE: &str = "stogger_logs";

declare! {
    /// pglog's settings as one source gives them: a configuration file, the environment,
    /// or a tool's own configuration.
    ///
    /// Every field is optional: an unset field keeps what a lower-precedence source (or
    /// the default) says. Sources, lowest to highest precedence: defaults < configuration
    /// file < builder calls < environment; [`Builder::discover`](crate::Builder::discover)
    /// and [`init`](crate::init) apply them in that order.
    ///
    /// In a file, these are the keys of the `[tool.pglog]` section (below); the section
    /// rejects unknown keys, so that a typo is reported instead of ignored, and a value
    /// out of its range is reported at its line. Durations are whole milliseconds there
    /// and in the environment. The type implements serde's `Deserialize`, so a tool can
    /// embed it in its own configuration file and hand it to
    /// [`Builder::from_config`](crate::Builder::from_config).
    ///
    /// `Debug` never shows the DSN, which may hold a password.
    ///
    /// # Examples
    ///
    /// A tool embedding pglog's settings in its own TOML file:
    ///
    /// ```
    /// #[derive(serde::Deserialize)]
    /// struct ToolConfig {
    ///     name: String,
    ///     log: pglog::Config,
    /// }
    ///
    /// let tool: ToolConfig = toml::from_str(
    ///     r#"
    ///     name = "nightly"
    ///     [log]
    ///     dsn = "postgresql://app:%PASSWORD%@db.internal/ops"
    ///     table = "nightly_logs"
    ///     filters = "info,nightly::db=debug"
    ///     pool_wait_ms = 250
    ///     "#,
    /// )?;
    /// assert_eq!(tool.log.table.as_deref(), Some("nightly_logs"));
    /// assert_eq!(tool.log.pool_wait, Some(std::time::Duration::from_millis(250)));
    /// let builder = pglog::Builder::from_config(tool.log);
    /// # Ok::<(), toml::de::Error>(())
    /// ```
    pub struct Config;

    /// Whether to write to PostgreSQL at all (default `true`). `false` writes every event
    /// to stderr only, as stogger does with `enable_postgres = false`.
    enable_postgres: bool = true;
        Flag, enable_postgres, ["PGLOG_ENABLE", "STOGGER_ENABLE_POSTGRES"], plain;

    /// Where to connect: a `postgresql://` URL or `key=value` pairs, as libpq takes them.
    /// Without one, pglog connects over the local Unix socket as the current OS user.
    ///
    /// `%PASSWORD%` in it is replaced by the value of `PGLOG_PASSWORD` (or else
    /// `STOGGER_POSTGRES_PASSWORD`), percent-encoded in a URL and quoted in `key=value`
    /// pairs, so that any character works. When neither is set, pglog says so on stderr
    /// and logs there.
    dsn: Dsn;
        DsnText, dsn, ["PGLOG_DSN", "STOGGER_POSTGRES_DSN"], into;

    /// The table to write to (default `stogger_logs`). Taken as one identifier, quoted:
    /// `a.b` names a table called `a.b` in the search path's first schema.
    table: String = DEFAULT_TABLE.to_owned();
        Text, table, ["PGLOG_TABLE", "STOGGER_POSTGRES_TABLE"], into;

    /// The most verbose level stored (default `info`), for every module that `filters`
    /// does not name: `off`, `error`, `warn` (or stogger's `warning`), `info`, `debug`,
    /// `trace`.
    level: LevelFilter = LevelFilter::Info;
        Level, level, ["PGLOG_LEVEL"], custom;

    /// Per-module levels in `RUST_LOG` syntax, e.g. `info,my_tool::db=debug`. A bare level
    /// among them sets the default level, as `level` does.
    filters: String;
        Directives, filters, ["PGLOG_LOG"], custom;

    /// Whether to create the table and its indexes when missing (default `true`).
    ///
    /// When they all exist pglog runs no DDL anyway; turn this off for a role that may
    /// only INSERT into a table someone else creates, so that a missing table is reported
    /// instead of attempted.
    create_table: bool = true;
        Flag, create_table, ["PGLOG_CREATE_TABLE"], plain;

    /// How a table pglog creates is partitioned: `none` (a plain table, stogger's; the
    /// default), or by `day`, `week` or `month` of `timestamp`, in UTC (see
    /// [`Partition`]). An existing table keeps its shape. With a period, pglog creates
    /// partitions ahead and moves rows out of the default partition in the background, at
    /// start and then hourly.
    partition: Partition = Partition::None;
        Partitioning, partition, ["PGLOG_PARTITION"], plain;

    /// Keep at least this many whole UTC days of events before today, and remove what is
    /// older (default: keep everything; 1 to 36,500 days). On a table pglog partitioned,
    /// whole partitions are dropped once their last day is that old; on a plain table,
    /// rows are deleted in batches of 5,000. In the background, at start and then hourly;
    /// a table pg_partman manages, or one partitioned by hand, is left to its manager.
    /// The builder call is [`retention`](crate::Builder::retention).
    retention_days: u32;
        Count<u32, 1, 36_500, Days>, retention_days, ["PGLOG_RETENTION_DAYS"], custom;

    /// Makes [`build`](crate::Builder::build) and [`try_init`](crate::Builder::try_init)
    /// fail when the database is not usable at startup (default `false`: start degraded,
    /// log to stderr, and keep trying). Has no effect when `enable_postgres` is off.
    require_database: bool = false;
        Flag, require_database, ["PGLOG_REQUIRE_DATABASE"], plain;

    /// The most sessions pglog keeps open (default 4, at most 1,000). Threads logging at
    /// once beyond this wait for a session, at most `pool_wait`.
    pool_size: u32 = 4;
        Count<u32, 1, 1_000>, pool_size, ["PGLOG_POOL_SIZE"], plain;

    /// How long a log call may wait for a free session before its event goes to stderr
    /// (default 1 s; 1 ms to an hour).
    pool_wait: Duration = Duration::from_secs(1);
        Millis<1, HOUR>, pool_wait_ms, ["PGLOG_POOL_WAIT_MS"], plain;

    /// How long connecting may take, unless the DSN sets `connect_timeout` (default 3 s;
    /// 10 ms to an hour). [`build`](crate::Builder::build) waits at most this long for the
    /// first session.
    connect_timeout: Duration = Duration::from_secs(3);
        Millis<10, HOUR>, connect_timeout_ms, ["PGLOG_CONNECT_TIMEOUT_MS"], plain;

    /// The bound on each statement pglog runs (default 2 s; 10 ms to an hour): a locked
    /// table, a frozen server or a network that drops packets cannot hold a log call
    /// longer than this plus at most 350 ms (to let the server's own timeout answer, then
    /// to cancel the statement and hear back). A blocking log call waits at most
    /// `pool_wait` plus this plus 350 ms in all.
    statement_timeout: Duration = Duration::from_secs(2);
        Millis<10, HOUR>, statement_timeout_ms, ["PGLOG_STATEMENT_TIMEOUT_MS"], plain;

    /// How long a session may stay idle before pglog closes it (default 30 s; 1 ms to a
    /// day). An idle program then holds no server connection (so `pg_ctl stop -m smart`
    /// is not kept waiting, nor a pooler's slot taken), at the price of one connect for
    /// its next event.
    idle_timeout: Duration = Duration::from_secs(30);
        Millis<1, DAY>, idle_timeout_ms, ["PGLOG_IDLE_TIMEOUT_MS"], plain;

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
    prepared_statements: bool = true;
        Flag, prepared_statements, ["PGLOG_PREPARED_STATEMENTS"], plain;

    /// A PEM file with the certificate authorities that may sign the server's
    /// certificate. With it, TLS connections verify the certificate and that it names the
    /// host connected to (libpq's `verify-full`); without it, `sslmode=prefer` and
    /// `require` encrypt without authenticating the server, as in libpq. Needs the
    /// `tls-rustls` feature. When the environment is read and this is not set, libpq's
    /// `PGSSLROOTCERT` is used as libpq uses it.
    root_cert: PathBuf;
        Path, root_cert, ["PGLOG_SSLROOTCERT"], into;

    /// Background batch mode (default `false`: blocking mode, one `INSERT` per event on
    /// the caller's thread).
    batch: bool = false;
        Flag, batch, ["PGLOG_BATCH"], custom;

    /// Most events the batch mode queue holds (default 10,000; at most 10,000,000); see
    /// `overflow` for what happens when it is full. Memory stays bounded by this, whatever
    /// the database does.
    queue_capacity: usize = 10_000;
        Count<usize, 1, 10_000_000>, queue_capacity, ["PGLOG_QUEUE_CAPACITY"], plain;

    /// Most bytes of events the batch mode queue holds (default 64 MiB; 1 KiB to 16 GiB);
    /// events are weighed by what they hold (message, key-values, call site). With
    /// `queue_capacity` it bounds memory whatever the events weigh: the overflow policy
    /// applies when either is reached. A batch also ends at 8 MiB, so memory stays under
    /// about this plus 16 MiB.
    queue_bytes: usize = 64 << 20;
        ByteCount<KIB, { 16 * GIB }>, queue_bytes, ["PGLOG_QUEUE_BYTES"], plain;

    /// Most events written by one statement in batch mode (default 1,000; at most
    /// 100,000).
    batch_size: usize = 1_000;
        Count<usize, 1, 100_000>, batch_size, ["PGLOG_BATCH_SIZE"], plain;

    /// Longest the batch writer waits for a batch to fill before writing what it has
    /// (default 100 ms; 1 ms to an hour).
    flush_interval: Duration = Duration::from_millis(100);
        Millis<1, HOUR>, flush_interval_ms, ["PGLOG_FLUSH_INTERVAL_MS"], plain;

    /// What a log call does when the batch queue is full: `block` (wait for room for as
    /// long as the writer makes progress, at most `overflow_wait` without any, then write
    /// the event to stderr; the default) or `drop` (discard and count it).
    overflow: Overflow = Overflow::default();
        Policy, overflow, ["PGLOG_OVERFLOW"], custom;

    /// With `overflow = block`, the longest wait without progress (default 200 ms; up to
    /// an hour; 0 does not wait).
    overflow_wait: Duration;
        Millis<0, HOUR>, overflow_wait_ms, ["PGLOG_OVERFLOW_WAIT_MS"], custom;

    /// Events at or above this level are written at once in batch mode, without waiting
    /// for the batch to fill (default `error`; `off` turns it off).
    flush_level: LevelFilter = LevelFilter::Error;
        Level, flush_level, ["PGLOG_FLUSH_LEVEL"], plain;

    /// Longest [`Guard::flush`](crate::Guard::flush) and the guard's drop wait for the
    /// batch writer (default 5 s; up to an hour; 0 does not wait). On drop, what is not
    /// written by then goes to stderr.
    flush_timeout: Duration = Duration::from_secs(5);
        Millis<0, HOUR>, flush_timeout_ms, ["PGLOG_FLUSH_TIMEOUT_MS"], plain;

    /// Whether pglog's commits wait for the server to flush them to disk (default `true`).
    ///
    /// `false` sets `synchronous_commit = off` on pglog's own sessions only: each commit
    /// returns without waiting for its WAL flush, which makes a blocking log call several
    /// times cheaper on a server with real disk syncs. The trade-off: if the *server*
    /// crashes, the events of the last few hundred milliseconds (up to three times
    /// `wal_writer_delay`) may be lost even though their log calls returned; the database
    /// itself stays consistent. A crash of the program loses nothing either way.
    synchronous_commit: bool = true;
        Flag, synchronous_commit, ["PGLOG_SYNCHRONOUS_COMMIT"], plain;

    /// Also writes events at or above this level to stderr, in the fallback's readable
    /// format, whether or not the database is up (default `off`). What a CLI tool wants
    /// on its terminal; an echoed event that cannot be stored is not printed twice.
    echo: LevelFilter = LevelFilter::Off;
        Level, echo, ["PGLOG_ECHO"], plain;

    /// On SIGTERM or SIGINT, write what batch mode holds (waiting at most the flush
    /// timeout; what cannot be written goes to stderr), then let the signal end the
    /// process as it would have (default `false`). Needs the `signals` cargo feature.
    ///
    /// Without it, SIGTERM and SIGINT (Ctrl-C) end the program as SIGKILL does, and batch
    /// mode loses what it still holds (see the README's "Signals, panics and exits").
    /// For programs that do not handle these signals themselves: one that does should
    /// drop the guard (or call [`Guard::flush`](crate::Guard::flush)) in its own handler
    /// instead.
    flush_on_signal: bool = false;
        Flag, flush_on_signal, ["PGLOG_FLUSH_ON_SIGNAL"], plain;

    /// The most bytes kept of a message, and of each key-value (default 4 MiB; 1 KiB to
    /// 64 MiB): a longer one keeps its head and a note of its whole size (`… [N bytes;
    /// cut at max_event_bytes]`). One huge event then costs its write no more than any
    /// other, and cannot hold up the table (or memory) for the events after it.
    max_event_bytes: usize = 4 << 20;
        ByteCount<KIB, { 64 * MIB }>, max_event_bytes, ["PGLOG_MAX_EVENT_BYTES"], plain;
}

impl Config {
    /// `self` overridden by every setting `over` has.
    ///
    /// Filter directives accumulate rather than replace: `over`'s come after `self`'s and
    /// win per module, and when `over` sets `level`, the bare levels among `self`'s
    /// directives give way to it.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut file = pglog::Config::default();
    /// file.table = Some("from_file".into());
    /// file.create_table = Some(false);
    /// let mut env = pglog::Config::default();
    /// env.table = Some("from_env".into());
    /// let merged = file.merge(env);
    /// assert_eq!(merged.table.as_deref(), Some("from_env"));
    /// assert_eq!(merged.create_table, Some(false));
    /// ```
    pub fn merge(self, over: Config) -> Config {
        let filters = filters::layer(
            self.filters.clone(),
            over.level.is_some(),
            over.filters.clone(),
        );
        Config {
            filters,
            ..self.or_else(over)
        }
    }
}

/// Where a builder's values come from besides code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Environment {
    /// Nothing is read but the password a `%PASSWORD%` asks for.
    #[default]
    Ignored,
    /// pglog's variables override every other source; libpq's (`PGHOST`, ...,
    /// `PGSSLROOTCERT`) fill what the settings and the DSN leave out.
    Read,
}

/// The settings from every source: `file` < `code` < the environment, when `environment`
/// says to read it (through `env`). Every value is checked against its range.
///
/// # Errors
///
/// A malformed variable (naming it), or a value out of its range (naming the setting).
pub(crate) fn resolve(
    file: &Config,
    code: &Config,
    environment: Environment,
    env: Lookup<'_>,
) -> Result<Settings, Error> {
    let mut merged = file.clone().merge(code.clone());
    if environment == Environment::Read {
        merged = merged.merge(env::from_lookup(env)?);
    }
    // The wait belongs to the blocking policy, whichever source gave each: a policy
    // given with its wait (`Overflow::Block(wait)` in code or a `Config`) sets both.
    if let Some(Overflow::Block(wait)) = merged.overflow {
        merged.overflow_wait.get_or_insert(wait);
    }
    merged.check()?;
    let mut settings = Settings::from_merged(merged);
    if let (Overflow::Block(_), Some(wait)) = (settings.overflow, settings.overflow_wait) {
        settings.overflow = Overflow::Block(wait);
    }
    if settings.flush_on_signal && cfg!(not(feature = "signals")) {
        return Err(Error::config(
            "flush_on_signal",
            "needs pglog's `signals` cargo feature: enable it, or turn the setting off",
        ));
    }
    Ok(settings)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    /// An environment holding only `pairs`, for tests that must not read the real one.
    pub(crate) fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn resolved(file: &Config, code: &Config, pairs: &[(&str, &str)]) -> Settings {
        resolve(file, code, Environment::Read, &env(pairs)).unwrap()
    }

    /// A value of every setting, as a file writes it, and as the environment does.
    fn every_setting() -> (String, Vec<(&'static str, &'static str)>) {
        let values: &[(&str, &str, &str)] = &[
            ("enable_postgres", "false", "false"),
            ("dsn", "\"host=h\"", "host=h"),
            ("table", "\"t\"", "t"),
            ("level", "\"debug\"", "debug"),
            ("filters", "\"a=trace\"", "a=trace"),
            ("create_table", "false", "off"),
            ("partition", "\"week\"", "week"),
            ("retention_days", "7", "7"),
            ("require_database", "true", "yes"),
            ("pool_size", "7", "7"),
            ("pool_wait", "70", "70"),
            ("connect_timeout", "700", "700"),
            ("statement_timeout", "7000", "7000"),
            ("idle_timeout", "8000", "8000"),
            ("prepared_statements", "false", "0"),
            ("root_cert", "\"/ca.pem\"", "/ca.pem"),
            ("batch", "true", "1"),
            ("queue_capacity", "9", "9"),
            ("queue_bytes", "4096", "4096"),
            ("batch_size", "3", "3"),
            ("flush_interval", "11", "11"),
            ("overflow", "\"block\"", "block"),
            ("overflow_wait", "13", "13"),
            ("flush_level", "\"warn\"", "warn"),
            ("flush_timeout", "17", "17"),
            ("synchronous_commit", "false", "off"),
            ("echo", "\"error\"", "error"),
            ("flush_on_signal", "false", "no"),
            ("max_event_bytes", "5000", "5000"),
        ];
        assert_eq!(
            values.iter().map(|v| v.0).collect::<Vec<_>>(),
            KEYS.iter().map(|k| k.0).collect::<Vec<_>>(),
            "a value for every declared setting"
        );
        let mut text = "[tool.pglog]\n".to_owned();
        let mut vars = Vec::new();
        for ((_, in_file, in_env), (_, key, names)) in values.iter().zip(KEYS) {
            text.push_str(&format!("{key} = {in_file}\n"));
            vars.push((names[0], *in_env));
        }
        (text, vars)
    }

    /// What [`every_setting`] sets, resolved.
    fn assert_every_setting(s: &Settings) {
        assert!(!s.enable_postgres && !s.create_table && s.require_database);
        assert_eq!(s.dsn, Some(Dsn::from("host=h")));
        assert_eq!(s.table, "t");
        assert_eq!(s.level, LevelFilter::Debug);
        assert_eq!(s.filters.as_deref(), Some("a=trace"));
        assert_eq!(s.pool_size, 7);
        assert_eq!(s.pool_wait, Duration::from_millis(70));
        assert_eq!(s.connect_timeout, Duration::from_millis(700));
        assert_eq!(s.statement_timeout, Duration::from_secs(7));
        assert_eq!(s.idle_timeout, Duration::from_secs(8));
        assert!(!s.prepared_statements);
        assert_eq!(s.root_cert, Some(PathBuf::from("/ca.pem")));
        assert!(s.batch);
        assert_eq!(
            (s.queue_capacity, s.batch_size, s.queue_bytes),
            (9, 3, 4096)
        );
        assert_eq!(s.flush_interval, Duration::from_millis(11));
        assert_eq!(s.overflow, Overflow::Block(Duration::from_millis(13)));
        assert_eq!(s.flush_level, LevelFilter::Warn);
        assert_eq!(s.flush_timeout, Duration::from_millis(17));
        assert!(!s.synchronous_commit && !s.flush_on_signal);
        assert_eq!(s.echo, LevelFilter::Error);
        assert_eq!(s.max_event_bytes, 5000);
        assert_eq!((s.partition, s.retention_days), (Partition::Week, Some(7)));
    }

    #[test]
    fn every_setting_from_a_file_and_from_the_environment() {
        let (text, vars) = every_setting();
        let from_file = file::parse(&text).unwrap();
        assert_every_setting(&resolved(&from_file, &Config::default(), &[]));
        assert_every_setting(&resolved(&Config::default(), &Config::default(), &vars));
        // The environment wins over code, code over the file.
        let code = crate::Builder::new().table("code").pool_size(3).code;
        let s = resolved(&from_file, &code, &[("PGLOG_TABLE", "env")]);
        assert_eq!((s.table.as_str(), s.pool_size), ("env", 3));
    }

    #[test]
    fn nothing_set_is_the_defaults() {
        let s = resolved(&Config::default(), &Config::default(), &[]);
        assert!(s.enable_postgres && s.create_table && !s.require_database && !s.batch);
        assert_eq!(s.dsn, None);
        assert_eq!(s.table, DEFAULT_TABLE);
        assert_eq!((s.level, s.filters), (LevelFilter::Info, None));
        assert_eq!((s.pool_size, s.pool_wait), (4, Duration::from_secs(1)));
        assert_eq!(s.overflow, Overflow::Block(Duration::from_millis(200)));
        assert_eq!(s.max_event_bytes, 4 << 20);
        assert_eq!((s.partition, s.retention_days), (Partition::None, None));
    }

    #[test]
    fn the_overflow_wait_follows_its_policy_from_any_source() {
        let file = file::parse("[tool.pglog]\noverflow = \"drop\"\n").unwrap();
        let wait_only = [("PGLOG_OVERFLOW_WAIT_MS", "5")];
        // A wait without a policy keeps `drop` from a lower source.
        assert_eq!(
            resolved(&file, &Config::default(), &wait_only).overflow,
            Overflow::Drop
        );
        let code = crate::Builder::new()
            .overflow(Overflow::Block(Duration::from_secs(1)))
            .code;
        let file = file::parse("[tool.pglog]\noverflow_wait_ms = 30\n").unwrap();
        assert_eq!(
            resolved(&file, &code, &[]).overflow,
            Overflow::Block(Duration::from_secs(1)),
            "code's wait over the file's"
        );
        assert_eq!(
            resolved(&file, &code, &wait_only).overflow,
            Overflow::Block(Duration::from_millis(5)),
            "the environment's over code's"
        );
    }

    #[test]
    fn a_level_replaces_lower_bare_levels_but_keeps_their_modules() {
        let file = file::parse("[tool.pglog]\nfilters = \"warn,a=debug\"\n").unwrap();
        let s = resolved(&file, &Config::default(), &[("PGLOG_LEVEL", "trace")]);
        assert_eq!(s.level, LevelFilter::Trace);
        assert_eq!(s.filters.as_deref(), Some("a=debug"));
        let code = crate::Builder::new().table("code").filters("b=info").code;
        let s = resolved(&file, &code, &[("PGLOG_LOG", "c=trace")]);
        assert_eq!(s.filters.as_deref(), Some("warn,a=debug,b=info,c=trace"));
    }

    #[test]
    fn code_values_are_checked_and_named() {
        let err = |code: crate::Builder| {
            resolve(
                &Config::default(),
                &code.code,
                Environment::Ignored,
                &env(&[]),
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            err(crate::Builder::new().pool_size(0)),
            "invalid pglog setting `pool_size`: 0 is out of range; use 1 to 1000"
        );
        assert_eq!(
            err(crate::Builder::new().statement_timeout(Duration::ZERO)),
            "invalid pglog setting `statement_timeout`: 0ns is out of range; use 10 to 3600000 ms"
        );
        assert!(
            err(crate::Builder::new().overflow(Overflow::Block(Duration::MAX)))
                .starts_with("invalid pglog setting `overflow_wait`")
        );
        assert_eq!(
            err(crate::Builder::new().retention(0)),
            "invalid pglog setting `retention_days`: 0 is out of range; use 1 to 36500 days"
        );
    }

    #[test]
    fn debug_never_shows_the_dsn() {
        let c = Config {
            dsn: Some("postgresql://app:hunter2@db/ops".into()),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<set, not shown>"));
    }
}
