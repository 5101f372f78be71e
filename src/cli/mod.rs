//! The `pglog` command (feature `cli`): read, follow, chart, check and repair the log
//! table from the terminal.
//!
//! It reads the configuration exactly as [`init`](crate::init) does (the file, then the
//! environment, libpq's variables, password files and services), with `--dsn` and
//! `--table` over everything, and reaches the server through pglog's own connection code:
//! every wait bounded, TLS as configured, unnamed statements only (safe behind any
//! pooler). It never prints a password.
//!
//! Subcommands: [`tail`] (newest events, `-f` to follow), [`stats`] (counts per level
//! over time as a chart), [`doctor`] (configuration with its sources, and every check
//! with its fix), [`prune`] (retention on demand) and [`replay`] (stderr lines back into
//! the table, idempotent).

mod doctor;
mod filter;
mod prune;
mod replay;
mod show;
mod stats;
mod tail;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_postgres::types::{ToSql, Type};

use crate::schema::Table;
use crate::settings::{self, file, real_env, Config, Environment, Settings, SharedEnv};
use crate::sink::session::Session;
use crate::sink::trouble::Trouble;
use crate::sink::{SessionConfig, SessionSettings};
use crate::{start, Partition};

/// Read, follow, chart, check and repair pglog's log table.
///
/// The database and table come from the configuration a program using `pglog::init()`
/// reads: `PGLOG_CONFIG` or ./pyproject.toml ([tool.stogger], [tool.pglog]), then the
/// environment (PGLOG_*, STOGGER_*, and libpq's PGHOST, PGUSER, ~/.pgpass...).
#[derive(Parser, Debug)]
#[command(name = "pglog", version, max_term_width = 100)]
struct Cli {
    /// Connect here instead (a postgresql:// URL or key=value pairs; %PASSWORD% works)
    #[arg(long, global = true, value_name = "DSN")]
    dsn: Option<String>,
    /// Read this table instead of the configured one
    #[arg(long, global = true, value_name = "NAME")]
    table: Option<String>,
    /// Colours: on a terminal unless NO_COLOR is set (auto), always, or never
    #[arg(long, global = true, value_enum, default_value_t = Colour::Auto)]
    color: Colour,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The newest events, oldest first; -f follows new ones
    Tail(tail::Args),
    /// Counts per level over time, as a chart, and the most frequent events
    Stats(stats::Args),
    /// The configuration with where each value came from, and every check with its fix
    Doctor,
    /// Removes events older than a number of days (partitions dropped, or batched deletes)
    Prune(prune::Args),
    /// Loads events pglog wrote to stderr back into the table, each once
    Replay(replay::Args),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Colour {
    Auto,
    Always,
    Never,
}

/// A command's failure: the message (printed after `pglog: `) and the exit code.
pub(crate) struct Failure {
    pub message: String,
    pub code: u8,
}

impl<T: Into<String>> From<T> for Failure {
    fn from(message: T) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

/// The `pglog` command with `args` (the program's name first); `src/bin/pglog.rs` calls
/// it with the process's arguments.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    anstream::ColorChoice::write_global(match cli.color {
        Colour::Auto => anstream::ColorChoice::Auto,
        Colour::Always => anstream::ColorChoice::Always,
        Colour::Never => anstream::ColorChoice::Never,
    });
    let outcome = Context::load(cli.dsn, cli.table).and_then(|context| match cli.command {
        Command::Tail(args) => tail::run(&context, &args),
        Command::Stats(args) => stats::run(&context, &args),
        Command::Doctor => doctor::run(&context),
        Command::Prune(args) => prune::run(&context, &args),
        Command::Replay(args) => replay::run(&context, &args),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                show::error(&failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}

/// The configuration as `pglog::init()` resolves it, with the command line's overrides.
pub(crate) struct Context {
    pub settings: Settings,
    pub env: SharedEnv,
    /// The configuration file read, if any: its path and text (for the doctor's origins).
    pub file: Option<(PathBuf, String)>,
    pub file_config: Config,
    pub env_config: Config,
    /// What `--dsn` and `--table` set.
    pub flags: Config,
}

impl Context {
    fn load(dsn: Option<String>, table: Option<String>) -> Result<Context, Failure> {
        let env: SharedEnv = Arc::new(real_env);
        let location = file::location(&*env);
        let file_config = file::discover(&*env).map_err(|e| e.to_string())?;
        let file = location.and_then(|(path, _)| {
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path, text))
        });
        let env_config = settings::env::from_lookup(&*env).map_err(|e| e.to_string())?;
        let flags = Config {
            dsn: dsn.map(Into::into),
            table: table.clone(),
            ..Config::default()
        };
        let mut settings =
            settings::resolve(&file_config, &Config::default(), Environment::Read, &*env)
                .map_err(|e| e.to_string())?;
        if let Some(dsn) = &flags.dsn {
            settings.dsn = Some(dsn.clone());
        }
        if let Some(table) = table {
            settings.table = table;
        }
        Ok(Context {
            settings,
            env,
            file,
            file_config,
            env_config,
            flags,
        })
    }

    pub fn table(&self) -> Result<Table, Failure> {
        Table::new(&self.settings.table).map_err(|e| e.to_string().into())
    }

    /// How sessions reach the configured database, as a logger's do; `create_table`
    /// off: the command never creates the table.
    pub fn session_config(&self) -> Result<Arc<SessionConfig>, Failure> {
        start::session_config(
            &self.settings,
            self.table()?,
            Environment::Read,
            &self.env,
            SessionSettings {
                create_table: false,
                partition: Partition::None,
                statement_timeout: self.settings.statement_timeout,
                synchronous_commit: true,
                prepared_statements: false,
            },
        )
        .map(Arc::new)
        .map_err(|e| e.to_string().into())
    }

    /// A session for reading, or a message saying where it could not connect and why.
    pub fn connect(&self) -> Result<Db, Failure> {
        let config = self.session_config()?;
        Db::open(Arc::clone(&config)).map_err(|trouble| {
            format!("cannot connect to {}: {}", config.target, trouble.detail).into()
        })
    }
}

/// A session of the command's: every request within [`QUERY_LIMIT`], on unnamed
/// statements.
pub(crate) struct Db {
    pub session: Session,
    pub config: Arc<SessionConfig>,
}

/// The longest one of the command's queries runs (a chart over a large table may read
/// much of it); the operator can interrupt sooner.
pub(crate) const QUERY_LIMIT: Duration = Duration::from_secs(300);

/// A query parameter with its type, as `query_typed` takes it.
pub(crate) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

impl Db {
    /// Connects, for reading (see [`Session::open_for_reading`]).
    pub fn open(config: Arc<SessionConfig>) -> Result<Db, Trouble> {
        let session = Session::open_for_reading(&config)?;
        Ok(Db { session, config })
    }

    pub fn query(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<tokio_postgres::Row>, String> {
        self.session
            .run(QUERY_LIMIT, async |client| {
                client.query_typed(sql, params).await
            })
            .map_err(|trouble| trouble.detail)
    }

    pub fn target(&self) -> &str {
        &self.config.target
    }
}
