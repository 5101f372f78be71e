//! Where settings come from besides code: a configuration file (`pyproject.toml`'s
//! `[tool.stogger]` and `[tool.pglog]` sections, or the file `PGLOG_CONFIG` names) and the
//! environment (`PGLOG_*`, and stogger's `STOGGER_*`).
//!
//! Everything here is pure except the two functions that read the real file system and
//! environment; the parsing and merging take the text or a lookup function, so they are
//! tested without either.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use log::LevelFilter;
use serde::{Deserialize, Deserializer};

use crate::{Error, Overflow};

/// The file [`Config::discover`] reads from the current directory.
pub(crate) const PYPROJECT: &str = "pyproject.toml";
/// Names a configuration file to read instead of `pyproject.toml`.
pub(crate) const ENV_CONFIG: &str = "PGLOG_CONFIG";

/// Looks an environment variable up; tests pass a map instead of the real environment.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The real environment. An empty variable counts as unset, as a shell user expects of
/// `VAR= program`.
pub(crate) fn real_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// pglog's settings as a configuration file or the environment gives them.
///
/// Every field is optional: an unset field keeps what a lower-precedence source (or the
/// default) says. Sources, lowest to highest precedence: defaults < configuration file <
/// builder calls < environment; [`Builder::discover`](crate::Builder::discover) and
/// [`init`](crate::init) apply them in that order.
///
/// In a file, these are the keys of the `[tool.pglog]` section; the section rejects
/// unknown keys, so that a typo is reported instead of ignored. Durations are whole
/// milliseconds. The type implements serde's `Deserialize`, so a tool can embed it in its
/// own configuration file and hand it to [`Builder::from_config`](crate::Builder::from_config).
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
/// let builder = pglog::Builder::from_config(tool.log);
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// `false` writes every event to stderr only, as stogger does (default `true`).
    pub enable_postgres: Option<bool>,
    /// Where to connect: a `postgresql://` URL or libpq `key=value` pairs; `%PASSWORD%`
    /// in it is replaced by the password from the environment.
    pub dsn: Option<String>,
    /// The table to write to (default `stogger_logs`).
    pub table: Option<String>,
    /// The most verbose level stored: `off`, `error`, `warn` (or stogger's `warning`),
    /// `info`, `debug`, `trace` (default `info`).
    #[serde(deserialize_with = "level_field")]
    pub level: Option<LevelFilter>,
    /// Per-module directives in `RUST_LOG` syntax, e.g. `info,my_tool::db=debug`. A bare
    /// level among them sets the default level, as `level` does.
    #[serde(deserialize_with = "filters_field")]
    pub filters: Option<String>,
    /// Create the table and its indexes when missing (default `true`).
    pub create_table: Option<bool>,
    /// Fail at startup when the database is unusable (default `false`).
    pub require_database: Option<bool>,
    /// Sessions kept open (default 4).
    pub pool_size: Option<NonZeroU32>,
    /// Longest a log call waits for a free session, in milliseconds (default 1000).
    pub pool_wait_ms: Option<NonZeroU64>,
    /// Longest a connection attempt takes, in milliseconds, unless the DSN sets
    /// `connect_timeout` (default 3000).
    pub connect_timeout_ms: Option<NonZeroU64>,
    /// Bound on every statement, in milliseconds (default 2000).
    pub statement_timeout_ms: Option<NonZeroU64>,
    /// A session idle this long is closed, in milliseconds (default 30,000).
    pub idle_timeout_ms: Option<NonZeroU64>,
    /// Use named prepared statements and `COPY` on sessions proven to reach the server
    /// directly (default `true`; see
    /// [`Builder::prepared_statements`](crate::Builder::prepared_statements)).
    pub prepared_statements: Option<bool>,
    /// A PEM file with the certificate authorities that may sign the server's
    /// certificate; with it, the certificate and host name are verified (needs the
    /// `tls-rustls` feature).
    pub root_cert: Option<PathBuf>,
    /// `true` for background batch mode, `false` for blocking mode (the default).
    pub batch: Option<bool>,
    /// Most events the batch mode queue holds (default 10,000).
    pub queue_capacity: Option<NonZeroUsize>,
    /// Most bytes of events the batch mode queue holds (default 64 MiB).
    pub queue_bytes: Option<NonZeroUsize>,
    /// Most events one `COPY` writes in batch mode (default 1,000).
    pub batch_size: Option<NonZeroUsize>,
    /// Longest the batch writer waits for a batch to fill, in milliseconds (default 100).
    pub flush_interval_ms: Option<NonZeroU64>,
    /// What a log call does when the batch queue is full: `"block"` (wait at most
    /// `overflow_wait_ms`, then write the event to stderr; the default) or `"drop"`
    /// (discard and count it).
    #[serde(deserialize_with = "overflow_field")]
    pub overflow: Option<Overflow>,
    /// With `overflow = "block"`, the longest wait for room, in milliseconds (default 200).
    pub overflow_wait_ms: Option<NonZeroU64>,
    /// Events at or above this level are written at once in batch mode (default `error`).
    #[serde(deserialize_with = "level_field")]
    pub flush_level: Option<LevelFilter>,
    /// Longest a flush, or the guard's drop, waits for the batch writer, in milliseconds
    /// (default 5000).
    pub flush_timeout_ms: Option<NonZeroU64>,
    /// `false` lets the server acknowledge pglog's commits before they reach disk
    /// (default `true`; see [`Builder::synchronous_commit`](crate::Builder::synchronous_commit)).
    pub synchronous_commit: Option<bool>,
    /// Events at or above this level are also written to stderr, readable, whether or
    /// not the database is up (default `off`).
    #[serde(deserialize_with = "level_field")]
    pub echo: Option<LevelFilter>,
    /// On SIGTERM or SIGINT, write what batch mode holds before the process ends
    /// (default `false`; needs the `signals` cargo feature).
    pub flush_on_signal: Option<bool>,
    /// The most bytes kept of a message, and of each key-value (default 4 MiB).
    pub max_event_bytes: Option<NonZeroUsize>,
}

impl Config {
    /// What [`init`](crate::init) uses: the configuration file, overridden by the
    /// environment.
    ///
    /// The file is the one `PGLOG_CONFIG` names, or else `pyproject.toml` in the current
    /// directory if there is one. From it pglog reads `[tool.stogger]` (`enable_postgres`,
    /// `postgres_dsn`, `postgres_table`; other keys there are stogger's business and
    /// ignored) and `[tool.pglog]` (this type's keys), the latter winning where both set
    /// a value. Then the environment, see [`Config::from_env`].
    ///
    /// # Errors
    ///
    /// A file `PGLOG_CONFIG` names that cannot be read, a file that is not valid TOML or
    /// has an unknown key or a wrongly typed value in `[tool.pglog]` (the message names
    /// the file, line and key), or a malformed environment variable.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let config = pglog::Config::discover()?;
    /// println!("logging to table {:?}", config.table.as_deref().unwrap_or(pglog::DEFAULT_TABLE));
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn discover() -> Result<Config, Error> {
        Ok(discover_file(&real_env)?.merge(from_lookup(&real_env)?))
    }

    /// Reads the `[tool.stogger]` and `[tool.pglog]` sections of a TOML file, such as a
    /// `pyproject.toml` or a file of a tool's own. Other sections are ignored.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or parsed, an unknown key in `[tool.pglog]`, or a value
    /// of the wrong type; the message names the file, and the line and key at fault.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let config = pglog::Config::from_file("/etc/my-tool/logging.toml")?;
    /// let _guard = pglog::Builder::from_config(config).try_init()?;
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
            path: path.to_owned(),
            reason: format!("cannot read it: {e}"),
        })?;
        parse_file(&text).map_err(|reason| Error::ConfigFile {
            path: path.to_owned(),
            reason,
        })
    }

    /// The settings the environment gives.
    ///
    /// | setting | variable (wins) | stogger's variable |
    /// |---|---|---|
    /// | `enable_postgres` | `PGLOG_ENABLE` | `STOGGER_ENABLE_POSTGRES` |
    /// | `dsn` | `PGLOG_DSN` | `STOGGER_POSTGRES_DSN` |
    /// | `table` | `PGLOG_TABLE` | `STOGGER_POSTGRES_TABLE` |
    /// | `level` | `PGLOG_LEVEL` | |
    /// | `filters` | `PGLOG_LOG` | |
    /// | `create_table` | `PGLOG_CREATE_TABLE` | |
    /// | `require_database` | `PGLOG_REQUIRE_DATABASE` | |
    /// | `pool_size` | `PGLOG_POOL_SIZE` | |
    /// | `pool_wait_ms` | `PGLOG_POOL_WAIT_MS` | |
    /// | `connect_timeout_ms` | `PGLOG_CONNECT_TIMEOUT_MS` | |
    /// | `statement_timeout_ms` | `PGLOG_STATEMENT_TIMEOUT_MS` | |
    /// | `idle_timeout_ms` | `PGLOG_IDLE_TIMEOUT_MS` | |
    /// | `prepared_statements` | `PGLOG_PREPARED_STATEMENTS` | |
    /// | `root_cert` | `PGLOG_SSLROOTCERT` | |
    /// | `batch` | `PGLOG_BATCH` | |
    /// | `queue_capacity` | `PGLOG_QUEUE_CAPACITY` | |
    /// | `queue_bytes` | `PGLOG_QUEUE_BYTES` | |
    /// | `batch_size` | `PGLOG_BATCH_SIZE` | |
    /// | `flush_interval_ms` | `PGLOG_FLUSH_INTERVAL_MS` | |
    /// | `overflow` | `PGLOG_OVERFLOW` | |
    /// | `overflow_wait_ms` | `PGLOG_OVERFLOW_WAIT_MS` | |
    /// | `flush_level` | `PGLOG_FLUSH_LEVEL` | |
    /// | `flush_timeout_ms` | `PGLOG_FLUSH_TIMEOUT_MS` | |
    /// | `synchronous_commit` | `PGLOG_SYNCHRONOUS_COMMIT` | |
    /// | `echo` | `PGLOG_ECHO` | |
    /// | `flush_on_signal` | `PGLOG_FLUSH_ON_SIGNAL` | |
    /// | `max_event_bytes` | `PGLOG_MAX_EVENT_BYTES` | |
    ///
    /// When both a `PGLOG_*` and a `STOGGER_*` variable are set, the `PGLOG_*` one wins.
    /// Booleans are `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`, in any case.
    /// An empty variable counts as unset. `RUST_LOG` is not read: it is often exported
    /// for other programs, and would silently change what lands in a shared table.
    ///
    /// # Errors
    ///
    /// A variable whose value is malformed; the message names the variable.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// // PGLOG_TABLE=nightly_logs
    /// let config = pglog::Config::from_env()?;
    /// assert_eq!(config.table.as_deref(), Some("nightly_logs"));
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn from_env() -> Result<Config, Error> {
        from_lookup(&real_env)
    }

    /// `self` overridden by every setting `over` has.
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
        Config {
            enable_postgres: over.enable_postgres.or(self.enable_postgres),
            dsn: over.dsn.or(self.dsn),
            table: over.table.or(self.table),
            level: over.level.or(self.level),
            filters: layer_filters(self.filters, over.level.is_some(), over.filters),
            create_table: over.create_table.or(self.create_table),
            require_database: over.require_database.or(self.require_database),
            pool_size: over.pool_size.or(self.pool_size),
            pool_wait_ms: over.pool_wait_ms.or(self.pool_wait_ms),
            connect_timeout_ms: over.connect_timeout_ms.or(self.connect_timeout_ms),
            statement_timeout_ms: over.statement_timeout_ms.or(self.statement_timeout_ms),
            idle_timeout_ms: over.idle_timeout_ms.or(self.idle_timeout_ms),
            prepared_statements: over.prepared_statements.or(self.prepared_statements),
            root_cert: over.root_cert.or(self.root_cert),
            batch: over.batch.or(self.batch),
            queue_capacity: over.queue_capacity.or(self.queue_capacity),
            queue_bytes: over.queue_bytes.or(self.queue_bytes),
            batch_size: over.batch_size.or(self.batch_size),
            flush_interval_ms: over.flush_interval_ms.or(self.flush_interval_ms),
            overflow: over.overflow.or(self.overflow),
            overflow_wait_ms: over.overflow_wait_ms.or(self.overflow_wait_ms),
            flush_level: over.flush_level.or(self.flush_level),
            flush_timeout_ms: over.flush_timeout_ms.or(self.flush_timeout_ms),
            synchronous_commit: over.synchronous_commit.or(self.synchronous_commit),
            echo: over.echo.or(self.echo),
            flush_on_signal: over.flush_on_signal.or(self.flush_on_signal),
            max_event_bytes: over.max_event_bytes.or(self.max_event_bytes),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The DSN may carry a password: show only whether one is set.
        f.debug_struct("Config")
            .field("enable_postgres", &self.enable_postgres)
            .field("dsn", &self.dsn.as_ref().map(|_| "<set, not shown>"))
            .field("table", &self.table)
            .field("level", &self.level)
            .field("filters", &self.filters)
            .field("create_table", &self.create_table)
            .field("require_database", &self.require_database)
            .field("pool_size", &self.pool_size)
            .field("pool_wait_ms", &self.pool_wait_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("prepared_statements", &self.prepared_statements)
            .field("root_cert", &self.root_cert)
            .field("batch", &self.batch)
            .field("queue_capacity", &self.queue_capacity)
            .field("queue_bytes", &self.queue_bytes)
            .field("batch_size", &self.batch_size)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("overflow", &self.overflow)
            .field("overflow_wait_ms", &self.overflow_wait_ms)
            .field("flush_level", &self.flush_level)
            .field("flush_timeout_ms", &self.flush_timeout_ms)
            .field("synchronous_commit", &self.synchronous_commit)
            .field("echo", &self.echo)
            .field("flush_on_signal", &self.flush_on_signal)
            .field("max_event_bytes", &self.max_event_bytes)
            .finish()
    }
}

// --- the configuration file -------------------------------------------------------------

/// The parts of a `pyproject.toml` pglog reads; every other section is someone else's.
#[derive(Deserialize, Default)]
#[serde(default)]
struct File {
    tool: Tool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Tool {
    stogger: Stogger,
    pglog: Config,
}

/// stogger's section. Unknown keys are not refused: they may be settings of stogger
/// itself, which pglog has no business judging.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Stogger {
    enable_postgres: Option<bool>,
    postgres_dsn: Option<String>,
    postgres_table: Option<String>,
}

/// The file `PGLOG_CONFIG` names, else `./pyproject.toml` when it exists, else nothing.
pub(crate) fn discover_file(env: Lookup<'_>) -> Result<Config, Error> {
    if let Some(path) = env(ENV_CONFIG) {
        return Config::from_file(&path).map_err(|e| match e {
            Error::ConfigFile { path, reason } => Error::ConfigFile {
                reason: format!(
                    "{reason} (named by {ENV_CONFIG}; point it at a TOML file or unset it)"
                ),
                path,
            },
            other => other,
        });
    }
    // Absolute, so that a message about it says which directory the program ran in.
    let path = std::env::current_dir()
        .map(|dir| dir.join(PYPROJECT))
        .unwrap_or_else(|_| PathBuf::from(PYPROJECT));
    if path.exists() {
        Config::from_file(path)
    } else {
        Ok(Config::default())
    }
}

/// Parses a configuration file's text; the error says where and what, never quoting the
/// file's text (a DSN in it may hold a password).
pub(crate) fn parse_file(text: &str) -> Result<Config, String> {
    let file: File = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
    let Tool { stogger, pglog } = file.tool;
    let from_stogger = Config {
        enable_postgres: stogger.enable_postgres,
        dsn: stogger.postgres_dsn,
        table: stogger.postgres_table,
        ..Config::default()
    };
    Ok(from_stogger.merge(pglog))
}

/// `line 4, key `pool_size` in [tool.pglog]: invalid type: ...`. toml's own `Display`
/// quotes the offending line, which may hold a password, so it is not used.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return message.to_owned();
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let mut place = format!("line {line_no}");
    // The key is what precedes `=` on the offending line, when the error lies after it.
    if let Some(eq) = line.find('=') {
        let key = line[..eq].trim();
        if !key.is_empty() && !key.starts_with('[') && !key.starts_with('#') {
            place.push_str(&format!(", key `{key}`"));
        }
    }
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['));
    match section {
        // A header line's own error (a bad header) is not "in" the previous section.
        Some(header) if !line.trim_start().starts_with('[') => {
            let header = header.split('#').next().unwrap_or(header).trim();
            format!("{place} in {header}: {message}")
        }
        _ => format!("{place}: {message}"),
    }
}

fn level_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LevelFilter>, D::Error> {
    let text = String::deserialize(d)?;
    parse_level(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn overflow_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Overflow>, D::Error> {
    let text = String::deserialize(d)?;
    parse_overflow(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn filters_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    check_filters(&text)
        .map(|()| Some(text))
        .map_err(serde::de::Error::custom)
}

// --- values, wherever they come from ----------------------------------------------------

/// `log`'s level names in any case, and stogger's `warning`.
pub(crate) fn parse_level(text: &str) -> Result<LevelFilter, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("warning") {
        return Ok(LevelFilter::Warn);
    }
    LevelFilter::from_str(text).map_err(|_| {
        format!("`{text}` is not a level; use off, error, warn (or warning), info, debug or trace")
    })
}

/// The filter for a default `level` and `RUST_LOG`-style directives; a bare level among
/// them replaces `level`.
pub(crate) fn build_filter(
    level: LevelFilter,
    directives: Option<&str>,
) -> Result<env_filter::Filter, String> {
    let mut builder = env_filter::Builder::new();
    builder.filter_level(level);
    if let Some(spec) = directives {
        builder.try_parse(spec).map_err(|e| {
            format!("{e}; expected directives such as `info,my_tool::db=debug` (RUST_LOG syntax)")
        })?;
    }
    Ok(builder.build())
}

/// Checks `RUST_LOG`-style directives with the parser that will apply them.
pub(crate) fn check_filters(spec: &str) -> Result<(), String> {
    build_filter(LevelFilter::Info, Some(spec)).map(drop)
}

/// The directives of a lower source (`low`) under those of a higher one (`high`).
///
/// Directives accumulate and the later win per module, so the higher source's come
/// last. When the higher source sets `level`, the lower ones' bare levels (`warn` in
/// `warn,a=debug`) go: that level replaces their default.
pub(crate) fn layer_filters(
    low: Option<String>,
    high_sets_level: bool,
    high: Option<String>,
) -> Option<String> {
    let low = match low {
        Some(spec) if high_sets_level => Some(without_default_level(&spec)),
        other => other,
    };
    match (low, high) {
        (Some(low), Some(high)) => Some(join_filters(&low, &high)),
        (low, high) => high.or(low),
    }
    .filter(|spec| !spec.is_empty())
}

/// `modules/regex` of a `RUST_LOG` spec: the message regex applies to all of it.
fn split_regex(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('/') {
        Some((modules, regex)) => (modules, Some(regex)),
        None => (spec, None),
    }
}

fn join_filters(low: &str, high: &str) -> String {
    let (low_modules, low_regex) = split_regex(low);
    let (high_modules, high_regex) = split_regex(high);
    let modules: Vec<&str> = [low_modules, high_modules]
        .into_iter()
        .filter(|m| !m.trim().is_empty())
        .collect();
    let mut spec = modules.join(",");
    if let Some(regex) = high_regex.or(low_regex) {
        spec.push('/');
        spec.push_str(regex);
    }
    spec
}

fn without_default_level(spec: &str) -> String {
    let (modules, regex) = split_regex(spec);
    let mut kept: String = modules
        .split(',')
        .filter(|d| !d.trim().is_empty() && parse_level(d).is_err())
        .collect::<Vec<_>>()
        .join(",");
    if let Some(regex) = regex {
        kept.push('/');
        kept.push_str(regex);
    }
    kept
}

/// `block` (with the default wait; `overflow_wait_ms` sets another) or `drop`.
pub(crate) fn parse_overflow(text: &str) -> Result<Overflow, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "block" => Ok(Overflow::default()),
        "drop" => Ok(Overflow::Drop),
        _ => Err(format!(
            "`{}` is not an overflow policy; use block or drop",
            text.trim()
        )),
    }
}

pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("use 1, true, yes or on, or 0, false, no or off".to_owned()),
    }
}

fn parse_non_zero<T: FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| "expected a whole number greater than zero".to_owned())
}

/// A whole number within the range of the setting `bound` (see [`crate::bounds`]).
fn parse_bounded<T: FromStr>(bound: &'static str) -> impl Fn(&str) -> Result<T, String> {
    move |text| {
        let value: u64 = text
            .trim()
            .parse()
            .map_err(|_| format!("expected a whole number, {}", crate::bounds::range(bound)))?;
        crate::bounds::check_value(bound, value)?;
        parse_non_zero(text)
    }
}

// --- the environment --------------------------------------------------------------------

/// The settings the environment gives, through `env`.
pub(crate) fn from_lookup(env: Lookup<'_>) -> Result<Config, Error> {
    let vars = Vars(env);
    Ok(Config {
        enable_postgres: vars.parsed(
            "enable_postgres",
            &["PGLOG_ENABLE", "STOGGER_ENABLE_POSTGRES"],
            parse_bool,
        )?,
        dsn: vars.text(&["PGLOG_DSN", "STOGGER_POSTGRES_DSN"]),
        table: vars.text(&["PGLOG_TABLE", "STOGGER_POSTGRES_TABLE"]),
        level: vars.parsed("level", &["PGLOG_LEVEL"], parse_level)?,
        filters: vars.parsed("filters", &["PGLOG_LOG"], |s| {
            check_filters(s).map(|()| s.to_owned())
        })?,
        create_table: vars.parsed("create_table", &["PGLOG_CREATE_TABLE"], parse_bool)?,
        require_database: vars.parsed(
            "require_database",
            &["PGLOG_REQUIRE_DATABASE"],
            parse_bool,
        )?,
        pool_size: vars.parsed(
            "pool_size",
            &["PGLOG_POOL_SIZE"],
            parse_bounded("pool_size"),
        )?,
        pool_wait_ms: vars.parsed(
            "pool_wait_ms",
            &["PGLOG_POOL_WAIT_MS"],
            parse_bounded("pool_wait"),
        )?,
        connect_timeout_ms: vars.parsed(
            "connect_timeout_ms",
            &["PGLOG_CONNECT_TIMEOUT_MS"],
            parse_bounded("connect_timeout"),
        )?,
        statement_timeout_ms: vars.parsed(
            "statement_timeout_ms",
            &["PGLOG_STATEMENT_TIMEOUT_MS"],
            parse_bounded("statement_timeout"),
        )?,
        idle_timeout_ms: vars.parsed(
            "idle_timeout_ms",
            &["PGLOG_IDLE_TIMEOUT_MS"],
            parse_bounded("idle_timeout"),
        )?,
        prepared_statements: vars.parsed(
            "prepared_statements",
            &["PGLOG_PREPARED_STATEMENTS"],
            parse_bool,
        )?,
        root_cert: vars.text(&["PGLOG_SSLROOTCERT"]).map(PathBuf::from),
        batch: vars.parsed("batch", &["PGLOG_BATCH"], parse_bool)?,
        queue_capacity: vars.parsed(
            "queue_capacity",
            &["PGLOG_QUEUE_CAPACITY"],
            parse_bounded("queue_capacity"),
        )?,
        queue_bytes: vars.parsed(
            "queue_bytes",
            &["PGLOG_QUEUE_BYTES"],
            parse_bounded("queue_bytes"),
        )?,
        batch_size: vars.parsed(
            "batch_size",
            &["PGLOG_BATCH_SIZE"],
            parse_bounded("batch_size"),
        )?,
        flush_interval_ms: vars.parsed(
            "flush_interval_ms",
            &["PGLOG_FLUSH_INTERVAL_MS"],
            parse_bounded("flush_interval"),
        )?,
        overflow: vars.parsed("overflow", &["PGLOG_OVERFLOW"], parse_overflow)?,
        overflow_wait_ms: vars.parsed(
            "overflow_wait_ms",
            &["PGLOG_OVERFLOW_WAIT_MS"],
            parse_bounded("overflow_wait"),
        )?,
        flush_level: vars.parsed("flush_level", &["PGLOG_FLUSH_LEVEL"], parse_level)?,
        flush_timeout_ms: vars.parsed(
            "flush_timeout_ms",
            &["PGLOG_FLUSH_TIMEOUT_MS"],
            parse_bounded("flush_timeout"),
        )?,
        synchronous_commit: vars.parsed(
            "synchronous_commit",
            &["PGLOG_SYNCHRONOUS_COMMIT"],
            parse_bool,
        )?,
        echo: vars.parsed("echo", &["PGLOG_ECHO"], parse_level)?,
        flush_on_signal: vars.parsed("flush_on_signal", &["PGLOG_FLUSH_ON_SIGNAL"], parse_bool)?,
        max_event_bytes: vars.parsed(
            "max_event_bytes",
            &["PGLOG_MAX_EVENT_BYTES"],
            parse_bounded("max_event_bytes"),
        )?,
    })
}

struct Vars<'a>(Lookup<'a>);

impl Vars<'_> {
    /// The first of `names` that is set, with its name.
    fn first(&self, names: &[&'static str]) -> Option<(&'static str, String)> {
        names
            .iter()
            .find_map(|name| (self.0)(name).map(|value| (*name, value)))
    }

    fn text(&self, names: &[&'static str]) -> Option<String> {
        self.first(names).map(|(_, value)| value)
    }

    fn parsed<T>(
        &self,
        key: &'static str,
        names: &[&'static str],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Error> {
        self.first(names)
            .map(|(name, value)| {
                parse(&value).map_err(|why| Error::config(key, format!("{name}=`{value}`: {why}")))
            })
            .transpose()
    }
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

    fn nz32(n: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(n)
    }

    fn nz64(n: u64) -> Option<NonZeroU64> {
        NonZeroU64::new(n)
    }

    #[test]
    fn stogger_section_maps_to_pglog_settings() {
        let c = parse_file(
            r#"
            [project]
            name = "svc"
            [tool.black]
            line-length = 100
            [tool.stogger]
            enable_postgres = true
            postgres_dsn = "postgresql://u:%PASSWORD%@db/ops"
            postgres_table = "svc_logs"
            console_level = "debug"   # stogger's own business
            "#,
        )
        .unwrap();
        assert_eq!(c.enable_postgres, Some(true));
        assert_eq!(c.dsn.as_deref(), Some("postgresql://u:%PASSWORD%@db/ops"));
        assert_eq!(c.table.as_deref(), Some("svc_logs"));
        assert_eq!(c.level, None);
    }

    #[test]
    fn pglog_section_has_every_key_and_wins_over_stoggers() {
        let c = parse_file(
            r#"
            [tool.stogger]
            postgres_dsn = "host=stogger"
            postgres_table = "stogger_table"
            [tool.pglog]
            dsn = "host=pglog"
            enable_postgres = false
            level = "Warning"
            filters = "my_tool::db=debug"
            create_table = false
            require_database = true
            pool_size = 8
            pool_wait_ms = 250
            connect_timeout_ms = 1500
            statement_timeout_ms = 900
            idle_timeout_ms = 1200
            prepared_statements = false
            root_cert = "/etc/ssl/db-ca.pem"
            batch = true
            queue_capacity = 500
            queue_bytes = 100000
            batch_size = 50
            flush_interval_ms = 20
            overflow = "drop"
            overflow_wait_ms = 30
            flush_level = "warning"
            flush_timeout_ms = 4000
            synchronous_commit = false
            echo = "warn"
            flush_on_signal = true
            max_event_bytes = 2048
            "#,
        )
        .unwrap();
        let mut want = Config {
            enable_postgres: Some(false),
            dsn: Some("host=pglog".into()),
            table: Some("stogger_table".into()),
            level: Some(LevelFilter::Warn),
            filters: Some("my_tool::db=debug".into()),
            create_table: Some(false),
            require_database: Some(true),
            ..Config::default()
        };
        want.pool_size = nz32(8);
        want.pool_wait_ms = nz64(250);
        want.connect_timeout_ms = nz64(1500);
        want.statement_timeout_ms = nz64(900);
        want.idle_timeout_ms = nz64(1200);
        want.prepared_statements = Some(false);
        want.root_cert = Some("/etc/ssl/db-ca.pem".into());
        want.batch = Some(true);
        want.queue_capacity = NonZeroUsize::new(500);
        want.queue_bytes = NonZeroUsize::new(100_000);
        want.batch_size = NonZeroUsize::new(50);
        want.flush_interval_ms = nz64(20);
        want.overflow = Some(Overflow::Drop);
        want.overflow_wait_ms = nz64(30);
        want.flush_level = Some(LevelFilter::Warn);
        want.flush_timeout_ms = nz64(4000);
        want.synchronous_commit = Some(false);
        want.echo = Some(LevelFilter::Warn);
        want.flush_on_signal = Some(true);
        want.max_event_bytes = NonZeroUsize::new(2048);
        assert_eq!(c, want);
    }

    #[test]
    fn a_file_without_our_sections_is_empty_settings() {
        assert_eq!(parse_file("").unwrap(), Config::default());
        assert_eq!(
            parse_file("[project]\nname = 'x'\n[tool.ruff]\nx = 1\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn file_errors_name_line_key_and_section_without_quoting_the_file() {
        let err = |text: &str| parse_file(text).unwrap_err();
        let msg = err("[project]\nname = 'x'\n\n[tool.pglog]\npool_size = \"four\"\n");
        assert_eq!(
            msg,
            "line 5, key `pool_size` in [tool.pglog]: invalid type: string \"four\", expected a nonzero u32"
        );
        let msg = err("[tool.pglog]\npool_sise = 4\n");
        assert!(
            msg.starts_with("line 2, key `pool_sise` in [tool.pglog]: unknown field `pool_sise`, expected one of"),
            "{msg}"
        );
        let msg = err("[tool.stogger]\nenable_postgres = \"yes\"\n");
        assert_eq!(
            msg,
            "line 2, key `enable_postgres` in [tool.stogger]: invalid type: string \"yes\", expected a boolean"
        );
        let msg = err("[tool.pglog]\npool_wait_ms = 0\n");
        assert!(
            msg.contains("key `pool_wait_ms`") && msg.contains("nonzero"),
            "{msg}"
        );
        let msg = err("[tool.pglog]\nlevel = \"loud\"\n");
        assert!(
            msg.contains("key `level`") && msg.contains("use off, error, warn (or warning)"),
            "{msg}"
        );
        let msg = err("[tool.pglog]\nfilters = \"a=b=c\"\n");
        assert!(
            msg.contains("key `filters`") && msg.contains("RUST_LOG syntax"),
            "{msg}"
        );
        // A syntax error inside a DSN must not bring the DSN (and its password) along.
        let msg = err("[tool.stogger]\npostgres_dsn = \"postgresql://u:hunter2\\q@h/db\"\n");
        assert!(
            msg.starts_with("line 2, key `postgres_dsn` in [tool.stogger]:"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        let msg = err("[tool.pglog\n");
        assert!(msg.starts_with("line 1:"), "{msg}");
    }

    #[test]
    fn environment_overrides_and_pglog_names_win_over_stoggers() {
        let c = from_lookup(&env(&[
            ("STOGGER_POSTGRES_DSN", "host=stogger"),
            ("PGLOG_DSN", "host=pglog"),
            ("STOGGER_POSTGRES_TABLE", "stogger_table"),
            ("STOGGER_ENABLE_POSTGRES", "Off"),
            ("PGLOG_LEVEL", "debug"),
            ("PGLOG_LOG", "warn,my_tool=trace"),
            ("PGLOG_CREATE_TABLE", "no"),
            ("PGLOG_REQUIRE_DATABASE", "YES"),
            ("PGLOG_POOL_SIZE", "2"),
            ("PGLOG_POOL_WAIT_MS", "100"),
            ("PGLOG_CONNECT_TIMEOUT_MS", "200"),
            ("PGLOG_STATEMENT_TIMEOUT_MS", "300"),
            ("PGLOG_IDLE_TIMEOUT_MS", "400"),
            ("PGLOG_PREPARED_STATEMENTS", "no"),
            ("PGLOG_SSLROOTCERT", "/ca.pem"),
            ("PGLOG_BATCH", "true"),
            ("PGLOG_QUEUE_CAPACITY", "64"),
            ("PGLOG_QUEUE_BYTES", "65536"),
            ("PGLOG_BATCH_SIZE", "8"),
            ("PGLOG_FLUSH_INTERVAL_MS", "5"),
            ("PGLOG_OVERFLOW", "Block"),
            ("PGLOG_OVERFLOW_WAIT_MS", "7"),
            ("PGLOG_FLUSH_LEVEL", "off"),
            ("PGLOG_FLUSH_TIMEOUT_MS", "900"),
            ("PGLOG_SYNCHRONOUS_COMMIT", "off"),
            ("PGLOG_ECHO", "error"),
            ("PGLOG_FLUSH_ON_SIGNAL", "1"),
            ("PGLOG_MAX_EVENT_BYTES", "4096"),
        ]))
        .unwrap();
        assert_eq!(c.dsn.as_deref(), Some("host=pglog"));
        assert_eq!(c.table.as_deref(), Some("stogger_table"));
        assert_eq!(c.enable_postgres, Some(false));
        assert_eq!(c.level, Some(LevelFilter::Debug));
        assert_eq!(c.filters.as_deref(), Some("warn,my_tool=trace"));
        assert_eq!(c.create_table, Some(false));
        assert_eq!(c.require_database, Some(true));
        assert_eq!(c.pool_size, nz32(2));
        assert_eq!(c.pool_wait_ms, nz64(100));
        assert_eq!(c.connect_timeout_ms, nz64(200));
        assert_eq!(c.statement_timeout_ms, nz64(300));
        assert_eq!(c.idle_timeout_ms, nz64(400));
        assert_eq!(c.prepared_statements, Some(false));
        assert_eq!(c.root_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.batch, Some(true));
        assert_eq!(c.queue_capacity, NonZeroUsize::new(64));
        assert_eq!(c.queue_bytes, NonZeroUsize::new(65536));
        assert_eq!(c.batch_size, NonZeroUsize::new(8));
        assert_eq!(c.flush_interval_ms, nz64(5));
        assert_eq!(c.overflow, Some(Overflow::default()));
        assert_eq!(c.overflow_wait_ms, nz64(7));
        assert_eq!(c.flush_level, Some(LevelFilter::Off));
        assert_eq!(c.flush_timeout_ms, nz64(900));
        assert_eq!(c.synchronous_commit, Some(false));
        assert_eq!(c.echo, Some(LevelFilter::Error));
        assert_eq!(c.flush_on_signal, Some(true));
        assert_eq!(c.max_event_bytes, NonZeroUsize::new(4096));
        let both = from_lookup(&env(&[
            ("STOGGER_ENABLE_POSTGRES", "1"),
            ("PGLOG_ENABLE", "false"),
        ]))
        .unwrap();
        assert_eq!(both.enable_postgres, Some(false));
        assert_eq!(from_lookup(&env(&[])).unwrap(), Config::default());
    }

    #[test]
    fn every_boolean_spelling() {
        for yes in ["1", "true", "TRUE", "yes", "Yes", "on", "ON", " on "] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
        }
        for no in ["0", "false", "False", "no", "NO", "off", "Off"] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
        }
        for bad in ["", "2", "y", "enabled", "truee"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn out_of_range_variables_name_the_variable_and_the_range() {
        for (name, value, range) in [
            ("PGLOG_QUEUE_CAPACITY", "1000000000", "1 to 10000000"),
            ("PGLOG_BATCH_SIZE", "9223372036854775807", "1 to 100000"),
            (
                "PGLOG_FLUSH_INTERVAL_MS",
                "18446744073709551615",
                "1 to 3600000 ms",
            ),
            ("PGLOG_STATEMENT_TIMEOUT_MS", "1", "10 to 3600000 ms"),
            (
                "PGLOG_QUEUE_BYTES",
                "99999999999999",
                "1024 to 17179869184 bytes",
            ),
        ] {
            let err = from_lookup(&env(&[(name, value)])).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(range), "{name}: {err}");
        }
    }

    #[test]
    fn malformed_variables_name_the_variable_and_what_is_accepted() {
        let err = |pairs: &[(&str, &str)]| from_lookup(&env(pairs)).unwrap_err().to_string();
        assert_eq!(
            err(&[("STOGGER_ENABLE_POSTGRES", "maybe")]),
            "invalid pglog setting `enable_postgres`: STOGGER_ENABLE_POSTGRES=`maybe`: \
             use 1, true, yes or on, or 0, false, no or off"
        );
        assert_eq!(
            err(&[("PGLOG_POOL_SIZE", "0")]),
            "invalid pglog setting `pool_size`: PGLOG_POOL_SIZE=`0`: 0 is out of range; use 1 to 1000"
        );
        assert!(err(&[("PGLOG_POOL_WAIT_MS", "1s")]).contains("PGLOG_POOL_WAIT_MS=`1s`"));
        assert!(err(&[("PGLOG_LEVEL", "verbose")]).contains("PGLOG_LEVEL=`verbose`"));
        assert!(err(&[("PGLOG_LOG", "x=y=z")]).contains("PGLOG_LOG=`x=y=z`"));
        assert_eq!(
            err(&[("PGLOG_OVERFLOW", "spill")]),
            "invalid pglog setting `overflow`: PGLOG_OVERFLOW=`spill`: `spill` is not an overflow \
             policy; use block or drop"
        );
    }

    #[test]
    fn merge_takes_the_higher_value_setting_by_setting() {
        let low = parse_file(
            "[tool.pglog]\ntable = \"low\"\npool_size = 3\nlevel = \"debug\"\nfilters = \"a=info\"\n",
        )
        .unwrap();
        let high = from_lookup(&env(&[("PGLOG_TABLE", "high"), ("PGLOG_LOG", "b=trace")])).unwrap();
        let merged = low.merge(high);
        assert_eq!(merged.table.as_deref(), Some("high"));
        assert_eq!(merged.pool_size, nz32(3));
        assert_eq!(merged.level, Some(LevelFilter::Debug));
        // Directives accumulate; the higher source's come last and win per module.
        assert_eq!(merged.filters.as_deref(), Some("a=info,b=trace"));
    }

    #[test]
    fn a_higher_level_replaces_lower_default_levels_but_keeps_their_modules() {
        let low = Some("warn,a=debug".to_owned());
        assert_eq!(
            layer_filters(low.clone(), true, None).as_deref(),
            Some("a=debug")
        );
        assert_eq!(
            layer_filters(low.clone(), false, Some("b=trace".into())).as_deref(),
            Some("warn,a=debug,b=trace")
        );
        assert_eq!(
            layer_filters(low, true, Some("info".into())).as_deref(),
            Some("a=debug,info")
        );
        assert_eq!(
            layer_filters(Some("a=info/low".into()), false, Some("b=info".into())).as_deref(),
            Some("a=info,b=info/low")
        );
        assert_eq!(
            layer_filters(Some("a=info/low".into()), true, Some("b=info/high".into())).as_deref(),
            Some("a=info,b=info/high")
        );
        assert_eq!(
            layer_filters(None, true, Some("x".into())).as_deref(),
            Some("x")
        );
        // Everything a layer can produce still parses.
        check_filters("a=info,b=info/high").unwrap();
    }

    #[test]
    fn env_level_beats_a_files_bare_level() {
        let file = parse_file("[tool.pglog]\nfilters = \"warn,a=debug\"\n").unwrap();
        let env = from_lookup(&env(&[("PGLOG_LEVEL", "trace")])).unwrap();
        let merged = file.merge(env);
        assert_eq!(merged.level, Some(LevelFilter::Trace));
        assert_eq!(merged.filters.as_deref(), Some("a=debug"));
    }

    #[test]
    fn filters_refine_the_default_level_per_module() {
        use log::{Level, Metadata};
        let enabled = |filter: &env_filter::Filter, target: &str, level: Level| {
            filter.enabled(&Metadata::builder().target(target).level(level).build())
        };
        let f = build_filter(LevelFilter::Info, Some("noisy=warn,my_tool::db=trace")).unwrap();
        assert!(enabled(&f, "my_tool", Level::Info));
        assert!(!enabled(&f, "my_tool", Level::Debug));
        assert!(enabled(&f, "my_tool::db::pool", Level::Trace));
        assert!(!enabled(&f, "noisy::x", Level::Info));
        assert_eq!(f.filter(), LevelFilter::Trace);
        let bare = build_filter(LevelFilter::Info, Some("debug")).unwrap();
        assert!(enabled(&bare, "any", Level::Debug));
        assert!(build_filter(LevelFilter::Info, Some("a=b=c")).is_err());
    }

    #[test]
    fn levels_accept_stoggers_words() {
        assert_eq!(parse_level("warning"), Ok(LevelFilter::Warn));
        assert_eq!(parse_level("WARN"), Ok(LevelFilter::Warn));
        assert_eq!(parse_level("off"), Ok(LevelFilter::Off));
        assert_eq!(parse_level("Trace"), Ok(LevelFilter::Trace));
        assert!(parse_level("critical").is_err());
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
