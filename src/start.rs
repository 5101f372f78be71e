//! Building a logger from resolved settings: the DSN and TLS, the sink, the logger's core
//! and the signal handler.

use std::sync::{Arc, OnceLock};

use crate::dsn::{self, Resolved};
use crate::fallback::{self, RateLimit};
use crate::logger::{Core, Logger};
use crate::schema::Table;
use crate::settings::{filters, Environment, Settings, SharedEnv};
use crate::sink::{
    BatchSettings, Endpoint, NoticeHandler, PoolSettings, SessionConfig, SessionSettings, Sink,
};
use crate::{tls, Error, Guard};

/// The logger and guard `settings` describe. `environment` says whether libpq's
/// variables fill what the settings leave out; `env` is the environment (read for the
/// password in any case).
///
/// # Errors
///
/// A malformed table name, filter or DSN, TLS the build cannot give, or a database that
/// `require_database` demands and cannot be used.
pub(crate) fn build(
    settings: Settings,
    environment: Environment,
    env: &SharedEnv,
) -> Result<(Logger, Guard), Error> {
    let table = Table::new(&settings.table)?;
    let filter = filters::build(settings.level, settings.filters.as_deref())
        .map_err(|why| Error::config("filters", why))?;
    fallback::settle_home();
    let sink = if settings.enable_postgres {
        database_sink(&settings, table, environment, env)?
    } else {
        Sink::stderr()
    };
    let core = Arc::new(Core {
        sink,
        panic_notice: RateLimit::new(fallback::NOTICE_INTERVAL),
        echo: settings.echo,
        max_event_bytes: settings.max_event_bytes,
        recursion_notice: RateLimit::once(),
    });
    #[cfg(feature = "signals")]
    if settings.flush_on_signal {
        crate::signals::install(&core)?;
    }
    Ok((Logger::new(filter, Arc::clone(&core)), Guard::new(core)))
}

fn database_sink(
    settings: &Settings,
    table: Table,
    environment: Environment,
    env: &SharedEnv,
) -> Result<Sink, Error> {
    let session = session_config(
        settings,
        table,
        environment,
        env,
        SessionSettings {
            create_table: settings.create_table,
            partition: settings.partition,
            statement_timeout: settings.statement_timeout,
            synchronous_commit: settings.synchronous_commit,
            prepared_statements: settings.prepared_statements,
        },
    )?;
    let pool = PoolSettings {
        size: settings.pool_size as usize,
        idle_timeout: settings.idle_timeout,
    };
    let batch = settings.batch.then_some(BatchSettings {
        capacity: settings.queue_capacity,
        queue_bytes: settings.queue_bytes,
        batch_size: settings.batch_size,
        flush_interval: settings.flush_interval,
        overflow: settings.overflow,
        flush_level: settings.flush_level,
        flush_timeout: settings.flush_timeout,
    });
    let sink = Sink::database(
        session,
        pool,
        settings.pool_wait,
        batch,
        settings.retention_days,
    );
    if settings.require_database {
        if let Some(why) = sink.startup_error() {
            return Err(Error::DatabaseUnavailable(why));
        }
    }
    Ok(sink)
}

/// How sessions reach `settings`' database and what they do there: the DSN resolved
/// (password, TLS) as libpq would, with `session`'s settings. Also serves the conversion
/// to a partitioned table, which opens a session of its own.
///
/// # Errors
///
/// A malformed DSN, or TLS the build cannot give.
pub(crate) fn session_config(
    settings: &Settings,
    table: Table,
    environment: Environment,
    env: &SharedEnv,
    session: SessionSettings,
) -> Result<SessionConfig, Error> {
    let dsn = settings.dsn.as_ref().map(|dsn| dsn.as_str());
    let Resolved {
        driver,
        tls,
        password,
    } = dsn::resolve(
        dsn,
        settings.root_cert.as_deref(),
        settings.connect_timeout,
        env,
        environment == Environment::Read,
    )?;
    let transport = tls::transport(&tls)?;
    let connect_timeout = driver
        .get_connect_timeout()
        .copied()
        .unwrap_or(settings.connect_timeout);
    let target = dsn::describe(&driver);
    Ok(SessionConfig::new(
        Endpoint::new(driver, password, transport, tls.describe(), connect_timeout),
        table,
        target,
        session,
        server_warnings(),
    ))
}

/// The global logger [`Builder::try_init`](crate::Builder::try_init) installs before it
/// builds the real one, and hands records to once it is built. Until then (or if
/// building fails) the maximum level stays off, so no record reaches it.
pub(crate) struct Handoff(pub Arc<OnceLock<Logger>>);

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
    let limit = RateLimit::new(fallback::NOTICE_INTERVAL);
    Box::new(move |notice: &tokio_postgres::error::DbError| {
        if notice.severity() == "WARNING" {
            limit.notice(|| format!("server warning: {}", notice.message()));
        }
    })
}
