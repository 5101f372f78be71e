//! One maintenance pass against the server: read the catalog, [`plan`](super::plan), and
//! run the steps.
//!
//! # Bounds and turns
//!
//! Each step is one transaction that first tries the table's advisory lock
//! (`pg_try_advisory_xact_lock`, the lock that table creation takes): a step that does
//! not get it ends the pass, whose work the holder is doing. A transaction-level lock,
//! so that nothing outlives the transaction behind a transaction pooler. Each
//! statement waits at most [`LOCK_WAIT`] for a table lock, so that writers queued behind
//! a DDL statement (dropping a partition locks the parent) wait no longer than that,
//! and runs at most [`STEP_LIMIT`]; a lock not had in time ends the pass as busy. No
//! step starts after [`PASS_BUDGET`].
//!
//! # Failures
//!
//! A failure the operator must fix (a role that may INSERT but not CREATE, say) is
//! reported once, with what the table's owner can run instead; logging carries on. The
//! database's absence is the sinks' to report: a pass it cuts short is tried again
//! within a minute.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use super::plan::{plan, Found, Keep, Plan, Wanted};
use super::{Maintain, Pass};
use crate::fallback::RateLimit;
use crate::schema::partitioned::{drop_sql, earliest_in_sql, qualified, trim_sql, TRIM_BATCH};
use crate::schema::period::{self, Period};
use crate::schema::{local_timeouts, Table};
use crate::sink::session::{Session, SessionConfig};
use crate::sink::trouble::{Kind, Trouble};

/// The longest a maintenance statement waits for a lock on a table.
pub(crate) const LOCK_WAIT: Duration = Duration::from_millis(500);
/// The longest one step (one transaction) runs.
pub(crate) const STEP_LIMIT: Duration = Duration::from_secs(30);
/// No step starts once a pass has run this long; the rest waits for the next pass.
pub(crate) const PASS_BUDGET: Duration = Duration::from_secs(60);
/// The pause between two batches of retention's deletes, leaving the server's I/O to
/// others.
const TRIM_PAUSE: Duration = Duration::from_millis(100);
/// Time the server's own statement timeout gets to answer before the client's bound.
const SERVER_FIRST: Duration = Duration::from_secs(1);

/// What catalog reading needs: the table, its schema, its kind, its comment, its default
/// partition, its partitions or inheritance children, and pg_partman's schema if the
/// extension is installed.
const FIND_SQL: &str =
    "SELECT n.nspname::text, c.relkind::text, obj_description(c.oid, 'pg_class'), \
     (SELECT d.relname::text FROM pg_partitioned_table p JOIN pg_class d ON d.oid = p.partdefid \
      WHERE p.partrelid = c.oid), \
     ARRAY(SELECT k.relname::text FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid \
           WHERE i.inhparent = c.oid ORDER BY 1), \
     (SELECT e.nspname::text FROM pg_extension x JOIN pg_namespace e ON e.oid = x.extnamespace \
      WHERE x.extname = 'pg_partman') \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)";

/// The real [`Maintain`]: passes over the logger's table on a session of their own.
pub(crate) struct Keeper {
    config: Arc<SessionConfig>,
    retention_days: Option<u32>,
    failure_notice: RateLimit,
    explain_notice: RateLimit,
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Done: for a trim, the rows deleted; for a partition, 1 when it was made, 0 when
    /// it existed.
    Done(u64),
    /// Not done, and the pass ends so: [`Pass::Busy`] when another process holds the
    /// advisory lock (it does the work), [`Pass::Unfinished`] when a table lock was not
    /// had in time (writers are busy: the next pass tries again soon).
    Halt(Pass),
}

/// A step that failed: what it tried, and what the table's owner can run instead.
struct Failed {
    trouble: Trouble,
    tried: String,
    instead: String,
}

impl Keeper {
    pub fn new(config: Arc<SessionConfig>, retention_days: Option<u32>) -> Keeper {
        Keeper {
            config,
            retention_days,
            failure_notice: RateLimit::once(),
            explain_notice: RateLimit::once(),
        }
    }

    fn wanted(&self) -> Wanted {
        Wanted {
            partition: self.config.partition,
            retention_days: self.retention_days,
            today: Utc::now().date_naive(),
        }
    }

    /// What the catalog says of the table (`None`: it does not exist), read on
    /// `session`: for the `pglog` command's doctor and prune.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub fn inspect(&self, session: &mut Session) -> Result<Option<Found>, String> {
        self.find(session)
            .map_err(|f| format!("cannot {}: {}", f.tried, f.trouble.detail))
    }

    /// What a pass would do now, without doing it, and the table's schema: for the
    /// `pglog` command's `prune --dry-run` and report.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub fn preview(&self, session: &mut Session) -> Result<(Plan, String), String> {
        let found = self.inspect(session)?;
        let schema = found.as_ref().map(|f| f.schema.clone()).unwrap_or_default();
        Ok((
            plan(found.as_ref(), &self.config.table, self.wanted()),
            schema,
        ))
    }

    fn run(&self, session: &mut Session, stop: &AtomicBool) -> Result<Pass, Failed> {
        let found = self.find(session)?;
        let wanted = self.wanted();
        let mut turn = Turn {
            session,
            table: &self.config.table,
            key: self.config.table.lock_key(),
            schema: found.as_ref().map(|f| f.schema.clone()).unwrap_or_default(),
            stop,
            deadline: Instant::now() + PASS_BUDGET,
        };
        match plan(found.as_ref(), &self.config.table, wanted) {
            Plan::Nothing => Ok(Pass::Done),
            Plan::Explain(why) => {
                self.explain_notice.notice(|| why);
                Ok(Pass::Done)
            }
            Plan::Trim { first_kept } => turn.trim(self.config.table.name(), first_kept),
            Plan::Keep(keep) => turn.keep(&keep),
        }
    }

    /// The table as the catalog has it; `None` when it does not exist.
    fn find(&self, session: &mut Session) -> Result<Option<Found>, Failed> {
        let table = self.config.table.quoted();
        let rows = session
            .run(STEP_LIMIT, async |client| {
                client.query_typed(FIND_SQL, &[(&table, Type::TEXT)]).await
            })
            .map_err(|trouble| Failed {
                trouble,
                tried: format!("read the catalog entry of {table}"),
                instead: String::new(),
            })?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let mut found = Found {
            schema: row.get(0),
            kind: row.get(1),
            comment: row.get(2),
            default: row.get(3),
            children: row.get(4),
            partman: false,
        };
        if let Some(partman) = row.get::<_, Option<String>>(5) {
            let parent = format!("{}.{}", found.schema, self.config.table.name());
            let sql = format!(
                "SELECT EXISTS (SELECT FROM {}.part_config WHERE parent_table = $1)",
                crate::schema::quote_ident(&partman)
            );
            // pg_partman's configuration out of this role's reach: stay out of its way.
            found.partman = session
                .run(STEP_LIMIT, async |client| {
                    client.query_typed(&sql, &[(&parent, Type::TEXT)]).await
                })
                .map_or(true, |rows| rows.first().is_some_and(|r| r.get(0)));
        }
        Ok(Some(found))
    }

    /// Reports a failure once, unless the connection failed (the sinks report that);
    /// `soon` when a retry may succeed without anyone's help.
    fn failed(&self, failed: Failed) -> Pass {
        let Failed {
            trouble,
            tried,
            instead,
        } = failed;
        let away = connection_failed(trouble.kind);
        if !away {
            self.failure_notice.notice(|| {
                let mut text = format!(
                    "table maintenance cannot {tried} on {}: {}; logging goes on without it",
                    self.config.target, trouble.detail
                );
                if !instead.is_empty() {
                    text.push_str(&format!("; as the table's owner, run: {instead}"));
                }
                text
            });
        }
        Pass::Failed {
            why: format!("cannot {tried}: {}", trouble.detail),
            soon: away || trouble.kind == Kind::Timeout,
        }
    }
}

impl Maintain for Keeper {
    fn pass(&self, stop: &AtomicBool) -> Pass {
        // The sinks open sessions the same way, and report what stops them.
        let mut session = match Session::open(&self.config) {
            Ok(session) => session,
            Err(trouble) => {
                return Pass::Failed {
                    why: format!("cannot open a session: {}", trouble.detail),
                    soon: true,
                }
            }
        };
        let pass = self
            .run(&mut session, stop)
            .unwrap_or_else(|failed| self.failed(failed));
        session.close();
        pass
    }
}

/// Whether the connection, not the statement, failed: the sinks report that. A refusal
/// is the statement's here (a pooler in statement mode refusing the transaction, a
/// standby refusing the DDL): sessions opened, or a pass would not have begun.
fn connection_failed(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Unreachable
            | Kind::Silent
            | Kind::NotPostgres
            | Kind::Untrusted
            | Kind::Login
            | Kind::Lost
    )
}

/// One pass's steps, on one session, within one budget.
struct Turn<'a> {
    session: &'a mut Session,
    table: &'a Table,
    key: String,
    schema: String,
    stop: &'a AtomicBool,
    deadline: Instant,
}

impl Turn<'_> {
    /// Whether another step may start.
    fn may_go_on(&self) -> bool {
        !self.stop.load(Ordering::Acquire) && Instant::now() < self.deadline
    }

    fn keep(&mut self, keep: &Keep) -> Result<Pass, Failed> {
        for &period in &keep.create {
            if !self.may_go_on() {
                return Ok(Pass::Unfinished);
            }
            if let Step::Halt(pass) = self.adopt(keep.default.as_deref(), period)? {
                return Ok(pass);
            }
        }
        for partition in &keep.drop {
            if !self.may_go_on() {
                return Ok(Pass::Unfinished);
            }
            if let Step::Halt(pass) = self.drop_partition(partition)? {
                return Ok(pass);
            }
        }
        let Some(default) = keep.default.as_deref() else {
            return Ok(Pass::Done);
        };
        if let Some(first_kept) = keep.first_kept {
            let pass = self.trim(default, first_kept)?;
            if pass != Pass::Done {
                return Ok(pass);
            }
        }
        let Some(horizon) = keep.horizon else {
            return Ok(Pass::Done);
        };
        // The default partition's rows between the first day kept and the horizon, period
        // by period, earliest first.
        while let Some(earliest) = self.earliest(default, keep.first_kept, horizon)? {
            if !self.may_go_on() {
                return Ok(Pass::Unfinished);
            }
            let period = keep.span.period_of(earliest.date_naive());
            match self.adopt(Some(default), period)? {
                Step::Halt(pass) => return Ok(pass),
                // A partition of that name that does not cover its period (made by
                // hand): asking again would find the same row.
                Step::Done(0) => break,
                Step::Done(_) => {}
            }
        }
        Ok(Pass::Done)
    }

    /// Gives `period` its partition, with the rows the default partition holds for it;
    /// `Done(0)` when a partition of its name exists already.
    fn adopt(&mut self, default: Option<&str>, period: Period) -> Result<Step, Failed> {
        let partition = qualified(&self.schema, &self.table.partition_name(period));
        let statements = self.table.adopt_sql(&self.schema, default, period);
        let instead = self.table.partition_of_sql(&self.schema, period);
        self.step(
            format!("create partition {partition}"),
            instead,
            async |tx| {
                let exists: bool = tx
                    .query_typed_one(
                        "SELECT to_regclass($1) IS NOT NULL",
                        &[(&partition, Type::TEXT)],
                    )
                    .await?
                    .get(0);
                if exists {
                    return Ok(0);
                }
                for sql in &statements {
                    tx.batch_execute(sql).await?;
                }
                Ok(1)
            },
        )
    }

    fn drop_partition(&mut self, partition: &str) -> Result<Step, Failed> {
        let sql = drop_sql(&self.schema, partition);
        self.step(
            format!(
                "drop the expired partition {}",
                qualified(&self.schema, partition)
            ),
            sql.clone(),
            async |tx| tx.batch_execute(&sql).await.map(|()| 0),
        )
    }

    /// Deletes the rows of `relation` (the plain table or the default partition) older
    /// than `first_kept`, a batch per transaction with a pause between, until none is
    /// left or the pass's time is up.
    fn trim(&mut self, relation: &str, first_kept: NaiveDate) -> Result<Pass, Failed> {
        let sql = trim_sql(&self.schema, relation, first_kept);
        let shown = qualified(&self.schema, relation);
        let cutoff = period::literal(first_kept);
        loop {
            if !self.may_go_on() {
                return Ok(Pass::Unfinished);
            }
            let step = self.step(
                format!("delete the rows of {shown} older than {cutoff}"),
                format!(
                    "DELETE FROM {shown} WHERE timestamp < {cutoff} (or grant DELETE on it to \
                     pglog's role)"
                ),
                async |tx| tx.execute_typed(&sql, &[]).await,
            )?;
            match step {
                Step::Halt(pass) => return Ok(pass),
                Step::Done(n) if n < u64::from(TRIM_BATCH) => return Ok(Pass::Done),
                Step::Done(_) => std::thread::sleep(TRIM_PAUSE),
            }
        }
    }

    /// The earliest row of the default partition from `from` to `to`.
    fn earliest(
        &mut self,
        default: &str,
        from: Option<NaiveDate>,
        to: NaiveDate,
    ) -> Result<Option<DateTime<Utc>>, Failed> {
        let sql = earliest_in_sql(&self.schema, default, from, to);
        self.session
            .run(STEP_LIMIT, async |client| {
                client.query_typed_one(&sql, &[]).await
            })
            .map(|row| row.get(0))
            .map_err(|trouble| Failed {
                trouble,
                tried: format!(
                    "read the default partition {}",
                    qualified(&self.schema, default)
                ),
                instead: String::new(),
            })
    }

    /// Runs `body` in a transaction of its own once it has the table's advisory lock.
    /// For a failure: what was `tried`, and what the owner can run `instead`.
    fn step(
        &mut self,
        tried: String,
        instead: String,
        body: impl AsyncFnOnce(&Transaction<'_>) -> Result<u64, tokio_postgres::Error>,
    ) -> Result<Step, Failed> {
        let key = &self.key;
        self.session
            .run(STEP_LIMIT + SERVER_FIRST, async |client| {
                in_turn(client, key, body).await
            })
            .map_err(|trouble| Failed {
                trouble,
                tried,
                instead,
            })
    }
}

/// `body` in a transaction holding the advisory lock `key`, with pglog's bounds; halted
/// when the lock, or a table lock `body` needs, is not to be had now.
async fn in_turn(
    client: &mut Client,
    key: &str,
    body: impl AsyncFnOnce(&Transaction<'_>) -> Result<u64, tokio_postgres::Error>,
) -> Result<Step, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(&local_timeouts(STEP_LIMIT, LOCK_WAIT))
        .await?;
    let ours: bool = tx
        .query_typed_one(
            "SELECT pg_try_advisory_xact_lock(hashtext($1))",
            &[(&key, Type::TEXT)],
        )
        .await?
        .get(0);
    if !ours {
        tx.rollback().await?;
        return Ok(Step::Halt(Pass::Busy));
    }
    match body(&tx).await {
        Ok(n) => {
            tx.commit().await?;
            Ok(Step::Done(n))
        }
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            tx.rollback().await?;
            Ok(Step::Halt(Pass::Unfinished))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_fits_the_pass_and_waits_briefly_for_locks() {
        assert!(STEP_LIMIT < PASS_BUDGET);
        assert!(LOCK_WAIT < STEP_LIMIT);
        // Writers queued behind a DDL statement wait less than a log call's bound.
        assert!(LOCK_WAIT < Duration::from_secs(1));
    }

    #[test]
    fn only_a_statements_failure_is_maintenances_to_report() {
        for kind in [Kind::Unreachable, Kind::Silent, Kind::Lost, Kind::Login] {
            assert!(connection_failed(kind), "{kind:?}");
        }
        for kind in [
            Kind::Permission,
            Kind::Refused,
            Kind::Timeout,
            Kind::Rejected,
            Kind::NoTable,
        ] {
            assert!(!connection_failed(kind), "{kind:?}");
        }
    }
}
