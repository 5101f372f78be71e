//! Pooled database sessions: connecting, per-session setup, creating the table once, and
//! the INSERT prepared once per connection so that an event costs one round trip.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::{Json, Type};
use postgres::{Client, NoTls, Statement};
use r2d2::ManageConnection;
use r2d2_postgres::PostgresConnectionManager;

use crate::render::Row;
use crate::schema::{self, Table};

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
}

impl Session {
    pub fn insert(&mut self, row: &Row) -> Result<(), postgres::Error> {
        self.client
            .execute(
                &self.insert,
                &[
                    &row.timestamp,
                    &row.level_word(),
                    &row.event,
                    &row.func,
                    &row.scope,
                    &Json(&row.data),
                ],
            )
            .map(drop)
    }

    /// Inserts without waiting for locks beyond `lock_wait`: how a failed database is
    /// tried again, so that a probe of a locked table costs milliseconds, not the
    /// statement timeout. Four round trips; probes are rare.
    pub fn probe_insert(&mut self, row: &Row, lock_wait: Duration) -> Result<(), postgres::Error> {
        let mut tx = self.client.transaction()?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {}",
            lock_wait.as_millis().max(1)
        ))?;
        tx.execute(
            &self.insert,
            &[
                &row.timestamp,
                &row.level_word(),
                &row.event,
                &row.func,
                &row.scope,
                &Json(&row.data),
            ],
        )?;
        tx.commit()
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
    /// `user@host:port/db`, for messages.
    pub target: String,
}

/// Opens sessions for r2d2: the stock postgres manager, plus our setup.
pub(crate) struct Manager {
    connect: PostgresConnectionManager<NoTls>,
    config: Arc<SessionConfig>,
    insert_sql: String,
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

impl Manager {
    pub fn new(driver: postgres::Config, config: Arc<SessionConfig>) -> Manager {
        Manager {
            connect: PostgresConnectionManager::new(driver, NoTls),
            insert_sql: config.table.insert_sql(),
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
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}",
                config.statement_timeout.as_millis()
            ))
            .map_err(fail(Stage::Setup))?;
        if config.create_table && !self.schema_ready.load(Ordering::Acquire) {
            schema::ensure(&mut client, &config.table).map_err(fail(Stage::Schema))?;
            self.schema_ready.store(true, Ordering::Release);
        }
        let insert = client
            .prepare_typed(&self.insert_sql, &INSERT_TYPES)
            .map_err(fail(Stage::Prepare))?;
        Ok(Session { client, insert })
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
