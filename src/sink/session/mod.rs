//! One database session: a connection with its own small runtime, the statements pglog
//! needs, and a client-side bound on every one of them.
//!
//! # Bounds
//!
//! `statement_timeout` is enforced by the server, so it cannot fire while the server is
//! frozen or the network drops packets. Every request therefore runs under a timer: when
//! it passes, pglog sends a cancel request (on a fresh connection, as libpq's
//! `PQcancel` does) and listens [`CANCEL_GRACE`] longer. A canceled statement is known
//! not to have run; one that never answers may have run, is reported so
//! ([`Trouble::maybe_done`]), and its session is discarded.
//!
//! # Poolers
//!
//! Behind a transaction pooler (pgbouncer in transaction or statement mode, pgcat,
//! Supavisor, RDS Proxy) consecutive statements may run on different server connections,
//! shared with other programs. A named prepared statement would then run whatever that
//! other program prepared under the same name, and a session `SET` would change that
//! other program's session. So pglog uses named statements and session settings only on a
//! session it has proven to reach the server directly: the backend process id the server
//! announced at startup (in its cancel key) equals `pg_backend_pid()`. A pooler makes up
//! its own cancel keys, since a client of it is not tied to one backend. Every other
//! session uses one unnamed statement per write (Parse, Bind and Execute in one round
//! trip), with the statement timeout kept by the client alone.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::connect::{drive, Address, Broken, Drive, Endpoint, NoticeHandler};
use super::pool::Check;
use super::trouble::{Kind, Trouble};
use crate::fork::Owner;
use crate::render::Row;
use crate::schema::{self, Partition, Table};

mod wire;

use wire::{announced_pid, copy_rows, Data};

/// How long after a statement's bound the answer to the cancel request is awaited.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_millis(250);
/// A session idle at least this long is checked for a connection the server closed
/// meanwhile (restart, idle timeout) before it is used: no round trip, a few µs.
const CHECK_AFTER: Duration = Duration::from_millis(1);
/// A session idle at least this long is also pinged (one round trip) before use: a
/// network path can die without a word.
const PING_AFTER: Duration = Duration::from_secs(15);
/// No ping is worth sending with less time than this left.
const MIN_PING: Duration = Duration::from_millis(10);

/// What every session of one logger shares.
pub(crate) struct SessionConfig {
    pub endpoint: Endpoint,
    pub table: Table,
    pub create_table: bool,
    /// How a table pglog creates is partitioned.
    pub partition: Partition,
    pub statement_timeout: Duration,
    /// `false`: commits do not wait for the WAL flush (`synchronous_commit = off`).
    pub synchronous_commit: bool,
    /// Whether sessions proven direct may use named prepared statements and `COPY`.
    pub prepared_statements: bool,
    /// `user@host:port/db`, for messages.
    pub target: String,
    pub on_notice: Box<NoticeHandler>,
    /// Set once the table and indexes are known to exist, so later sessions skip the check.
    pub schema_ready: AtomicBool,
    /// Set once a session found the table usable: creating it after that means someone
    /// dropped it.
    table_seen: AtomicBool,
    sql: Sql,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("target", &self.target)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// The statements' text, made once from the table name.
struct Sql {
    insert: String,
    insert_many: String,
    copy: String,
}

/// Settings of [`SessionConfig::new`] that are plain values.
pub(crate) struct SessionSettings {
    pub create_table: bool,
    pub partition: Partition,
    pub statement_timeout: Duration,
    pub synchronous_commit: bool,
    pub prepared_statements: bool,
}

impl SessionConfig {
    pub fn new(
        endpoint: Endpoint,
        table: Table,
        target: String,
        settings: SessionSettings,
        on_notice: Box<NoticeHandler>,
    ) -> SessionConfig {
        let asynchronous = !settings.synchronous_commit;
        let sql = Sql {
            insert: table.insert_sql(asynchronous),
            insert_many: table.insert_many_sql(asynchronous),
            copy: table.copy_sql(),
        };
        SessionConfig {
            endpoint,
            table,
            create_table: settings.create_table,
            partition: settings.partition,
            statement_timeout: settings.statement_timeout,
            synchronous_commit: settings.synchronous_commit,
            prepared_statements: settings.prepared_statements,
            target,
            on_notice,
            schema_ready: AtomicBool::new(false),
            table_seen: AtomicBool::new(false),
            sql,
        }
    }
}

/// The connection proper, which must never be dropped by a forked child: dropping it
/// would close (and end) its parent's session.
struct Live {
    rt: Runtime,
    client: Client,
    driver: Box<dyn Drive>,
}

/// How this session writes.
enum Mode {
    /// Proven to reach the server itself: session settings and named statements, each
    /// prepared when first needed.
    Direct {
        insert: Option<Statement>,
        copy: Option<Statement>,
    },
    /// Possibly behind a pooler: one unnamed statement per write, nothing left behind.
    Pooled,
}

pub(crate) struct Session {
    live: Option<Live>,
    config: Arc<SessionConfig>,
    address: Address,
    owner: Owner,
    mode: Mode,
    /// `data`'s type: binary `jsonb` carries a version byte that `json` does not.
    data_type: Type,
    broken: bool,
    last_used: Instant,
}

impl Session {
    /// Connects and sets the session up: proves whether it is direct, sets its settings,
    /// creates the table when it is missing, and reads the `data` column's type. Each
    /// step is bounded.
    pub fn open(config: &Arc<SessionConfig>) -> Result<Session, Trouble> {
        let mut session = Session::connect(config)?;
        session.set_up()?;
        Ok(session)
    }

    /// Connects, and does nothing else: no session settings, no table check. For the
    /// `pglog` command, which reads the table (and may not write to it) and checks its
    /// shape itself. Its requests use unnamed statements, safe behind any pooler.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub fn open_for_reading(config: &Arc<SessionConfig>) -> Result<Session, Trouble> {
        Session::connect(config)
    }

    /// Whether this session reaches the server itself, not through a transaction pooler:
    /// the backend that announced itself at startup is the one answering now.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub fn is_direct(&mut self) -> Result<bool, Trouble> {
        self.proven_direct(self.set_up_limit())
    }

    /// The bound of each step of setting a session up.
    fn set_up_limit(&self) -> Duration {
        self.config
            .endpoint
            .limit()
            .max(self.config.statement_timeout)
    }

    fn connect(config: &Arc<SessionConfig>) -> Result<Session, Trouble> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| {
                Trouble::new(
                    Kind::Unreachable,
                    format!("cannot start an I/O runtime: {e}"),
                )
            })?;
        let opened = config.endpoint.open(&rt, &*config.on_notice)?;
        let session = Session {
            live: Some(Live {
                rt,
                client: opened.client,
                driver: opened.driver,
            }),
            config: Arc::clone(config),
            address: opened.address,
            owner: Owner::current(),
            mode: Mode::Pooled,
            data_type: Type::JSONB,
            broken: false,
            last_used: Instant::now(),
        };
        Ok(session)
    }

    fn set_up(&mut self) -> Result<(), Trouble> {
        let limit = self.set_up_limit();
        if self.config.prepared_statements && self.proven_direct(limit)? {
            let mut settings = format!(
                "SET statement_timeout = {}",
                self.config.statement_timeout.as_millis()
            );
            if !self.config.synchronous_commit {
                settings.push_str("; SET synchronous_commit = off");
            }
            self.run(limit, async |client| client.batch_execute(&settings).await)?;
            self.mode = Mode::Direct {
                insert: None,
                copy: None,
            };
        }
        let create = self.config.create_table;
        if create && !self.config.schema_ready.load(Ordering::Acquire) {
            self.ensure_table()?;
        }
        match self.inspect(limit) {
            // Dropped since it was last seen (a DBA's cleanup, a test reset).
            Err(trouble) if trouble.kind == Kind::NoTable && create => {
                self.ensure_table()?;
                self.inspect(limit)
            }
            other => other,
        }
    }

    /// Checks the table before anything is written to it, so that a missing table, a
    /// table of another shape or a missing grant is named when the session opens (and
    /// by `require_database` at startup), and learns the `data` column's type.
    fn inspect(&mut self, limit: Duration) -> Result<(), Trouble> {
        let table = self.config.table.quoted();
        let rows = self.run(limit, async |client| {
            client
                .query_typed(schema::INSPECT_SQL, &[(&table, Type::TEXT)])
                .await
        })?;
        let Some(row) = rows.first() else {
            return Ok(());
        };
        let (exists, missing, may_insert, data_type): (bool, Vec<String>, bool, Option<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if !exists {
            return Err(Trouble::new(Kind::NoTable, "relation does not exist"));
        }
        if !missing.is_empty() {
            return Err(Trouble::new(
                Kind::Shape,
                format!("it lacks the column(s) {}", missing.join(", ")),
            ));
        }
        if !may_insert {
            return Err(Trouble::new(
                Kind::Permission,
                "the role may not INSERT into it",
            ));
        }
        self.config.table_seen.store(true, Ordering::Release);
        self.data_type = match data_type.as_deref() {
            Some("json") => Type::JSON,
            _ => Type::JSONB,
        };
        Ok(())
    }

    /// Creates the table and its indexes if any is missing (see [`schema::ensure`]); says
    /// so when the table had been seen before, so it disappeared meanwhile.
    pub fn ensure_table(&mut self) -> Result<(), Trouble> {
        // A one-off, on the pool's thread: it may take what a connect may take.
        let limit = self
            .config
            .statement_timeout
            .max(self.config.endpoint.limit());
        let table = self.config.table.clone();
        let partition = self.config.partition;
        let created = self
            .run(limit, async |client| {
                schema::ensure(client, &table, partition, limit).await
            })
            .map_err(|trouble| match trouble.kind {
                // pgbouncer in statement mode ends the connection at a BEGIN.
                Kind::Lost => Trouble::new(
                    Kind::Refused,
                    format!(
                        "the connection closed as pglog began the transaction that creates the \
                         table ({}); behind a pooler in statement mode, which refuses \
                         transactions, create the table beforehand",
                        trouble.detail
                    ),
                ),
                _ => trouble,
            })?;
        self.config.schema_ready.store(true, Ordering::Release);
        if created && self.config.table_seen.load(Ordering::Acquire) {
            crate::fallback::notice(&format!(
                "table {} disappeared from {}; created it again",
                self.config.table.quoted(),
                self.config.target
            ));
        }
        Ok(())
    }

    /// Whether the backend that announced itself at startup is the one answering now.
    fn proven_direct(&mut self, limit: Duration) -> Result<bool, Trouble> {
        let ssl = self.config.endpoint.ssl_mode();
        let Some(live) = self.live.as_mut() else {
            return Ok(false);
        };
        // The cancel key is only readable from a request written in the clear.
        let announced = match ssl {
            SslMode::Disable | SslMode::Prefer => live.rt.block_on(async {
                tokio::time::timeout(limit, announced_pid(&live.client))
                    .await
                    .ok()
                    .flatten()
            }),
            _ => None,
        };
        let Some(announced) = announced else {
            return Ok(false);
        };
        let rows = self.run(limit, async |client| {
            client.query_typed("SELECT pg_backend_pid()", &[]).await
        })?;
        Ok(rows.first().map(|row| row.get::<_, i32>(0)) == Some(announced))
    }

    /// Used less than a moment ago, by this process, and not broken: no check needed
    /// (cheap enough to ask with the pool locked).
    pub fn fresh(&self) -> bool {
        !self.broken && self.last_used.elapsed() < CHECK_AFTER && self.owner.is_current()
    }

    /// Whether the session may take a statement now: not broken, owned by this process,
    /// not closed by the server meanwhile, and (after a long quiet) still answering a
    /// ping within `budget`.
    pub fn check(&mut self, budget: Duration) -> Check {
        if self.broken || self.live.is_none() || !self.owner.is_current() {
            return Check::Stale;
        }
        let idle = self.last_used.elapsed();
        if idle >= CHECK_AFTER && !self.still_open() {
            self.broken = true;
            return Check::Stale;
        }
        // A ping only when there is time for one: the caller's wait bounds it.
        let limit = budget.min(self.config.statement_timeout);
        if idle >= PING_AFTER && limit >= MIN_PING {
            let pinged = self.run_uncanceled(limit, async |client| client.simple_query("").await);
            if let Err(trouble) = pinged {
                self.broken = true;
                return if trouble.kind == Kind::Timeout {
                    Check::Silent(trouble)
                } else {
                    Check::Stale
                };
            }
        }
        Check::Ready
    }

    /// Reads what arrived while the session was idle: a server that closed it (restart,
    /// `idle_session_timeout`, a pooler's idle timeout) has said so by now.
    fn still_open(&mut self) -> bool {
        let Some(live) = self.live.as_mut() else {
            return false;
        };
        let on_notice = &*self.config.on_notice;
        let driver = &mut live.driver;
        live.rt.block_on(async {
            // Lets the runtime look at the socket once before the connection is polled.
            tokio::task::yield_now().await;
            std::future::poll_fn(|cx| loop {
                match driver.poll_message(cx) {
                    Poll::Ready(Some(Ok(tokio_postgres::AsyncMessage::Notice(notice)))) => {
                        on_notice(&notice)
                    }
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(false),
                    Poll::Pending => return Poll::Ready(true),
                }
            })
            .await
        })
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Marks the session for closing when it is given back.
    pub fn discard(&mut self) {
        self.broken = true;
    }

    /// Inserts one row, within `limit`.
    pub fn insert(&mut self, row: &Row, limit: Duration) -> Result<(), Trouble> {
        let data = Data {
            row,
            jsonb: self.data_type == Type::JSONB,
        };
        let level = row.level_word();
        let params: [&(dyn ToSql + Sync); 6] = [
            &row.timestamp,
            &level,
            &row.event,
            &row.func,
            &row.scope,
            &data,
        ];
        if let Mode::Direct { insert, .. } = &self.mode {
            let statement = match insert {
                Some(statement) => statement.clone(),
                None => {
                    let sql = self.config.sql.insert.clone();
                    let types = [
                        Type::TIMESTAMPTZ,
                        Type::TEXT,
                        Type::TEXT,
                        Type::TEXT,
                        Type::TEXT,
                        self.data_type.clone(),
                    ];
                    let statement = self
                        .run(limit, async |client| {
                            client.prepare_typed(&sql, &types).await
                        })
                        .map_err(Trouble::not_done)?;
                    if let Mode::Direct { insert, .. } = &mut self.mode {
                        *insert = Some(statement.clone());
                    }
                    statement
                }
            };
            return self
                .run(self.direct_limit(limit), async |client| {
                    client.execute(&statement, &params).await
                })
                .map(drop);
        }
        let types = [
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            self.data_type.clone(),
        ];
        let typed: [(&(dyn ToSql + Sync), Type); 6] =
            std::array::from_fn(|i| (params[i], types[i].clone()));
        let config = Arc::clone(&self.config);
        let sql = &config.sql.insert;
        self.run(limit, async |client| {
            client.execute_typed(sql, &typed).await
        })
        .map(drop)
    }

    /// Writes `rows` with one statement, all or nothing, within `limit`: binary `COPY` on
    /// a direct session, one multi-row `INSERT` of arrays otherwise.
    pub fn insert_batch(&mut self, rows: &[Row], limit: Duration) -> Result<(), Trouble> {
        let jsonb = self.data_type == Type::JSONB;
        if let Mode::Direct { copy, .. } = &self.mode {
            let statement = match copy {
                Some(statement) => statement.clone(),
                None => {
                    let sql = self.config.sql.copy.clone();
                    let statement = self
                        .run(limit, async |client| client.prepare(&sql).await)
                        .map_err(Trouble::not_done)?;
                    if let Mode::Direct { copy, .. } = &mut self.mode {
                        *copy = Some(statement.clone());
                    }
                    statement
                }
            };
            let copied = self
                .run(self.direct_limit(limit), async |client| {
                    copy_rows(client, statement, rows, jsonb).await
                })
                .map(drop);
            // The driver can lose its place in the protocol when a COPY fails before it
            // starts (its next request then reads the failed one's last answer).
            if copied.is_err() {
                self.broken = true;
            }
            return copied;
        }
        let timestamps: Vec<_> = rows.iter().map(|r| r.timestamp).collect();
        let levels: Vec<&str> = rows.iter().map(Row::level_word).collect();
        let events: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
        let funcs: Vec<Option<&str>> = rows.iter().map(|r| r.func.as_deref()).collect();
        let scopes: Vec<Option<&str>> = rows.iter().map(|r| r.scope.as_deref()).collect();
        let data: Vec<Data<'_>> = rows.iter().map(|row| Data { row, jsonb }).collect();
        let data_array = if jsonb {
            Type::JSONB_ARRAY
        } else {
            Type::JSON_ARRAY
        };
        let typed: [(&(dyn ToSql + Sync), Type); 6] = [
            (&timestamps, Type::TIMESTAMPTZ_ARRAY),
            (&levels, Type::TEXT_ARRAY),
            (&events, Type::TEXT_ARRAY),
            (&funcs, Type::TEXT_ARRAY),
            (&scopes, Type::TEXT_ARRAY),
            (&data, data_array),
        ];
        let config = Arc::clone(&self.config);
        let sql = &config.sql.insert_many;
        self.run(limit, async |client| {
            client.execute_typed(sql, &typed).await
        })
        .map(drop)
    }

    /// A direct session's server enforces the statement timeout itself: give its answer
    /// a moment to arrive before asking for a cancel.
    fn direct_limit(&self, limit: Duration) -> Duration {
        limit + Duration::from_millis(100)
    }

    /// Runs `request` within `limit` (see the module docs for what happens after it).
    pub(crate) fn run<T>(
        &mut self,
        limit: Duration,
        request: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, Trouble> {
        self.run_with(limit, true, request)
    }

    /// [`run`](Session::run) without the cancel request and its grace: for requests that
    /// change nothing (a ping), whose session is simply given up when they time out.
    fn run_uncanceled<T>(
        &mut self,
        limit: Duration,
        request: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, Trouble> {
        self.run_with(limit, false, request)
    }

    fn run_with<T>(
        &mut self,
        limit: Duration,
        cancel: bool,
        request: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, Trouble> {
        let Some(Live { rt, client, driver }) = self.live.as_mut().filter(|_| !self.broken) else {
            return Err(Trouble::new(Kind::Lost, "the session is closed"));
        };
        let token = client.cancel_token();
        let config = &self.config;
        let address = &self.address;
        let outcome = rt.block_on(async {
            let mut request = pin!(drive(&mut **driver, &*config.on_notice, request(client)));
            let grace = if cancel { CANCEL_GRACE } else { Duration::ZERO };
            finish(&mut request, limit, grace, async {
                if cancel {
                    config.endpoint.cancel(&token, address, CANCEL_GRACE).await;
                }
            })
            .await
        });
        self.after(outcome)
    }

    fn after<T>(&mut self, outcome: Result<T, Trouble>) -> Result<T, Trouble> {
        self.last_used = Instant::now();
        if let Err(trouble) = &outcome {
            // A session that lost its way, or whose statement may still be running, is
            // not used again.
            if trouble.maybe_done
                || matches!(trouble.kind, Kind::Lost | Kind::NotPostgres | Kind::Silent)
            {
                self.broken = true;
            }
        }
        outcome
    }

    /// Ends the session politely (a Terminate message), at most a moment.
    pub fn close(mut self) {
        if let Some(live) = self.live.take() {
            if !self.owner.is_current() {
                std::mem::forget(live);
                return;
            }
            let Live {
                rt,
                client,
                mut driver,
            } = live;
            // The driver sends Terminate once the client is gone, then ends.
            drop(client);
            if !self.broken {
                let on_notice = &*self.config.on_notice;
                rt.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_millis(100), async {
                        let pending = std::future::pending::<Result<(), tokio_postgres::Error>>();
                        let _ = drive(&mut *driver, on_notice, pending).await;
                    })
                    .await;
                });
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A forked child must not touch its parent's connection, not even to close it:
        // the socket and the runtime's event queue are shared with the parent.
        if let Some(live) = self.live.take() {
            if !self.owner.is_current() {
                std::mem::forget(live);
            }
        }
    }
}

/// Awaits `request` for `limit`; then sends `cancel` and awaits it `grace` more.
async fn finish<T>(
    request: &mut std::pin::Pin<
        &mut impl Future<Output = Result<Result<T, tokio_postgres::Error>, Broken>>,
    >,
    limit: Duration,
    grace: Duration,
    cancel: impl Future<Output = ()>,
) -> Result<T, Trouble> {
    let answered = match tokio::time::timeout(limit, request.as_mut()).await {
        Ok(answer) => answer,
        Err(_) => {
            let mut cancel = pin!(cancel);
            let mut cancel_done = false;
            let late = std::future::poll_fn(|cx| {
                if !cancel_done && cancel.as_mut().poll(cx).is_ready() {
                    cancel_done = true;
                }
                request.as_mut().poll(cx)
            });
            match tokio::time::timeout(grace, late).await {
                Ok(answer) => answer,
                Err(_) => {
                    return Err(Trouble::new(
                        Kind::Timeout,
                        format!("no answer within {:?}", limit + grace),
                    )
                    .maybe_done())
                }
            }
        }
    };
    match answered {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            let trouble = Trouble::from_statement(&e);
            // Without an answer from the server, a broken connection leaves the
            // statement's fate open.
            Err(if trouble.kind == Kind::Lost {
                trouble.maybe_done()
            } else {
                trouble
            })
        }
        Err(Broken::Connection(e)) => Err(Trouble::new(
            Kind::Lost,
            e.map_or_else(
                || "the server closed the connection".to_owned(),
                |e| crate::error::chain(&e),
            ),
        )
        .maybe_done()),
    }
}
