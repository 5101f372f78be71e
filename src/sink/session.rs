//! Pooled database sessions: connecting, per-session setup, creating the table once, and
//! the INSERT prepared once per connection so that an event costs one round trip.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres::error::SqlState;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};
use r2d2::ManageConnection;
use r2d2_postgres::PostgresConnectionManager;

use super::copy;
use crate::render::Row;
use crate::schema::{self, Table};
use crate::tls::Transport;
use std::io::Write as _;

/// Parameter types of the INSERT, in column order.
const INSERT_TYPES: [Type; 6] = [
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
];

/// A connection with its prepared INSERT.
pub(crate) struct Session {
    client: Client,
    insert: Statement,
    /// `COPY ... FROM STDIN`, prepared too: saves a round trip per batch.
    copy: Statement,
}

/// The INSERT's and COPY's parameters for `row`, in column order.
fn with_params<T>(row: &Row, f: impl FnOnce(&[&(dyn ToSql + Sync)]) -> T) -> T {
    let level = row.level_word();
    let data = Data(row);
    f(&[
        &row.timestamp,
        &level,
        &row.event,
        &row.func,
        &row.scope,
        &data,
    ])
}

/// The `data` column, serialized from the row (through a small buffer: measured cheaper
/// than writing through `BytesMut`'s `io::Write` adapter).
#[derive(Debug)]
struct Data<'a>(&'a Row);

impl ToSql for Data<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            // JSONB's binary form: a version byte, then the JSON text.
            out.put_u8(copy::JSONB_VERSION);
        }
        let mut text = Vec::with_capacity(256);
        self.0.write_data(&mut text);
        out.extend_from_slice(&text);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

fn lock_timeout_sql(wait: Duration) -> String {
    format!("SET LOCAL lock_timeout = {}", wait.as_millis().max(1))
}

impl Session {
    pub fn insert(&mut self, row: &Row) -> Result<(), postgres::Error> {
        let insert = &self.insert;
        let client = &mut self.client;
        with_params(row, |params| client.execute(insert, params).map(drop))
    }

    /// Inserts without waiting for locks beyond `lock_wait`: how a failed database is
    /// tried again, so that a probe of a locked table costs milliseconds, not the
    /// statement timeout. Four round trips; probes are rare.
    pub fn probe_insert(&mut self, row: &Row, lock_wait: Duration) -> Result<(), postgres::Error> {
        let mut tx = self.client.transaction()?;
        tx.batch_execute(&lock_timeout_sql(lock_wait))?;
        with_params(row, |params| tx.execute(&self.insert, params))?;
        tx.commit()
    }

    /// Writes `rows` with one binary COPY, all or nothing. With `lock_wait` (a probe), in
    /// a transaction that waits for locks at most that long.
    pub fn copy(
        &mut self,
        rows: &[Row],
        lock_wait: Option<Duration>,
    ) -> Result<u64, postgres::Error> {
        // The driver sends what it is given as it comes: hand it chunks of this size.
        const CHUNK: usize = 256 * 1024;
        let mut tx = self.client.transaction()?;
        if let Some(wait) = lock_wait {
            tx.batch_execute(&lock_timeout_sql(wait))?;
        }
        let mut writer = tx.copy_in(&self.copy)?;
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        copy::header(&mut buf);
        for row in rows {
            copy::row(&mut buf, row);
            if buf.len() >= CHUNK {
                // An I/O error here is the connection's; `finish` reports the cause.
                if writer.write_all(&buf).is_err() {
                    break;
                }
                buf.clear();
            }
        }
        copy::trailer(&mut buf);
        let _ = writer.write_all(&buf);
        let written = writer.finish()?;
        tx.commit()?;
        Ok(written)
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// What a session needs to know to set itself up.
#[derive(Debug)]
pub(crate) struct SessionConfig {
    pub table: Table,
    pub create_table: bool,
    pub statement_timeout: Duration,
    /// `false`: `synchronous_commit = off` on pglog's sessions.
    pub synchronous_commit: bool,
    /// `user@host:port/db`, for messages.
    pub target: String,
    /// Plain or TLS, as `sslmode` and the root certificate say.
    pub transport: Transport,
}

/// Opens sessions for r2d2: the stock postgres manager, plus our setup.
pub(crate) struct Manager {
    connect: Connector,
    config: Arc<SessionConfig>,
    insert_sql: String,
    copy_sql: String,
    /// Set once the table and indexes are known to exist, so later sessions skip the check.
    schema_ready: AtomicBool,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The driver config holds the password: never print it.
        f.debug_struct("Manager")
            .field("target", &self.config.target)
            .finish_non_exhaustive()
    }
}

/// The stock postgres manager for the transport in use; it is generic over the TLS
/// connector, so each transport has its own.
enum Connector {
    Plain(PostgresConnectionManager<NoTls>),
    #[cfg(feature = "tls-rustls")]
    Rustls(PostgresConnectionManager<tokio_postgres_rustls::MakeRustlsConnect>),
}

impl Connector {
    fn new(driver: postgres::Config, transport: &Transport) -> Connector {
        match transport {
            Transport::Plain => Connector::Plain(PostgresConnectionManager::new(driver, NoTls)),
            #[cfg(feature = "tls-rustls")]
            Transport::Rustls(tls) => {
                Connector::Rustls(PostgresConnectionManager::new(driver, tls.clone()))
            }
        }
    }

    fn connect(&self) -> Result<Client, postgres::Error> {
        match self {
            Connector::Plain(manager) => manager.connect(),
            #[cfg(feature = "tls-rustls")]
            Connector::Rustls(manager) => manager.connect(),
        }
    }
}

impl Manager {
    pub fn new(driver: postgres::Config, config: Arc<SessionConfig>) -> Manager {
        Manager {
            connect: Connector::new(driver, &config.transport),
            insert_sql: config.table.insert_sql(),
            copy_sql: config.table.copy_sql(),
            config,
            schema_ready: AtomicBool::new(false),
        }
    }
}

impl ManageConnection for Manager {
    type Connection = Session;
    type Error = SessionError;

    fn connect(&self) -> Result<Session, SessionError> {
        let config = &self.config;
        let fail = |stage| {
            move |source| SessionError {
                stage,
                source,
                config: Arc::clone(config),
            }
        };
        let mut client = self.connect.connect().map_err(fail(Stage::Connect))?;
        let mut setup = format!(
            "SET statement_timeout = {}",
            config.statement_timeout.as_millis()
        );
        if !config.synchronous_commit {
            setup.push_str("; SET synchronous_commit = off");
        }
        client.batch_execute(&setup).map_err(fail(Stage::Setup))?;
        if config.create_table && !self.schema_ready.load(Ordering::Acquire) {
            schema::ensure(&mut client, &config.table).map_err(fail(Stage::Schema))?;
            self.schema_ready.store(true, Ordering::Release);
        }
        let insert = client
            .prepare_typed(&self.insert_sql, &INSERT_TYPES)
            .map_err(fail(Stage::Prepare))?;
        let copy = client
            .prepare(&self.copy_sql)
            .map_err(fail(Stage::Prepare))?;
        Ok(Session {
            client,
            insert,
            copy,
        })
    }

    fn is_valid(&self, session: &mut Session) -> Result<(), SessionError> {
        session
            .client
            .simple_query("")
            .map(drop)
            .map_err(|source| SessionError {
                stage: Stage::Connect,
                source,
                config: Arc::clone(&self.config),
            })
    }

    fn has_broken(&self, session: &mut Session) -> bool {
        session.client.is_closed()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Connect,
    Setup,
    Schema,
    Prepare,
}

/// Why a session could not be opened, worded for the operator who has to fix it.
#[derive(Debug)]
pub(crate) struct SessionError {
    pub stage: Stage,
    pub source: postgres::Error,
    config: Arc<SessionConfig>,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (target, table) = (&self.config.target, self.config.table.quoted());
        let e = crate::error::chain(&self.source);
        // A table of another shape fails in CREATE INDEX or in PREPARE, whichever
        // comes first: name the cause, not the stage.
        let wrong_shape = matches!(
            self.source.code(),
            Some(c) if *c == SqlState::UNDEFINED_COLUMN || *c == SqlState::DATATYPE_MISMATCH
        );
        match self.stage {
            _ if wrong_shape => write!(
                f,
                "cannot insert into table {table} on {target}: {e}; the table needs pglog's columns \
                 (timestamp timestamptz, level text, event text, func text, scope text, data jsonb): \
                 alter it, or log to another table"
            ),
            Stage::Connect => write!(f, "cannot connect to {target}: {e}"),
            Stage::Setup => write!(f, "cannot set up a session on {target}: {e}"),
            Stage::Schema => write!(
                f,
                "cannot create table {table} or its indexes on {target}: {e}; create them as the \
                 table's owner, or turn table creation off for a role that may only INSERT"
            ),
            Stage::Prepare => write!(f, "cannot insert into table {table} on {target}: {e}"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
