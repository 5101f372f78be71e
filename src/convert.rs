//! Converting an existing plain table (stogger's, an older pglog's) into a table
//! partitioned by time, online, on a session of its own: an operator's one-off, run with
//! [`Builder::convert_to_partitioned`](crate::Builder::convert_to_partitioned).
//!
//! The statements and why they keep writers going are in [`crate::schema::convert`];
//! this module runs them, each within a bound: the steps that scan the table (index
//! builds, validating the bound) within [`SCAN_LIMIT`], the swap within [`SWAP_LIMIT`],
//! waiting at most [`LOCK_WAIT`] for its lock and trying again [`SWAP_TRIES`] times, so
//! that writers never queue behind it longer than that.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use crate::schema::convert::{conversion_bound, grant_sql};
use crate::schema::partitioned::qualified;
use crate::schema::period::{self, Span};
use crate::schema::{local_timeouts, quote_ident};
use crate::sink::session::Session;
use crate::sink::SessionConfig;
use crate::Error;

/// The longest a step that reads the whole table runs (an index built concurrently,
/// validating the bound): writers go on meanwhile.
pub(crate) const SCAN_LIMIT: Duration = Duration::from_secs(3600);
/// The longest the swap's transaction runs: it changes only the catalog.
const SWAP_LIMIT: Duration = Duration::from_secs(30);
/// The longest the swap, or adding the bound, waits for the table's lock; writers
/// arriving meanwhile wait behind it as long at most.
const LOCK_WAIT: Duration = Duration::from_millis(500);
/// How often a lock not had in time is asked for again, a second apart.
const SWAP_TRIES: u32 = 20;

/// What [`Builder::convert_to_partitioned`](crate::Builder::convert_to_partitioned) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Conversion {
    /// The table, as the catalog names it with its schema (`"public"."stogger_logs"`):
    /// now a partitioned table with stogger's index names, marked as pglog's.
    pub table: String,
    /// The old table, renamed: now the partition of every row before `until`.
    pub old_partition: String,
    /// The end of the old table's range, midnight UTC (`2026-11-24 00:00:00+00`); the
    /// partitions of the periods from it on, and a default one, exist.
    pub until: String,
}

/// What the catalog says of the table before converting it.
struct Found {
    schema: String,
    kind: String,
    is_partition: bool,
    has_children: bool,
    primary_key: Option<String>,
    sequence: Option<String>,
    owner: String,
    /// Whether an index named as the old table's unique key exists, and is valid.
    key_valid: Option<bool>,
}

const FIND_SQL: &str = "SELECT n.nspname::text, c.relkind::text, c.relispartition, \
     EXISTS (SELECT FROM pg_inherits i WHERE i.inhparent = c.oid), \
     (SELECT k.conname::text FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p'), \
     pg_get_serial_sequence(c.oid::regclass::text, 'id'), \
     pg_get_userbyid(c.relowner)::text, \
     (SELECT i.indisvalid FROM pg_class x JOIN pg_index i ON i.indexrelid = x.oid \
      WHERE x.relnamespace = c.relnamespace AND x.relname = $2) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)";

/// What the roles other than the owner may do with the table: the parent gets the same.
const GRANTS_SQL: &str = "SELECT a.privilege_type::text, \
     CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END, a.is_grantable \
     FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = to_regclass($1) AND a.grantee <> c.relowner";

/// Converts the table `config` names into one partitioned by `span`.
pub(crate) fn convert(config: SessionConfig, span: Span) -> Result<Conversion, Error> {
    let config = Arc::new(config);
    let table = &config.table;
    let shown = table.quoted();
    let failed = |what: &str, detail: &str| {
        Error::Conversion(format!(
            "cannot {what} of {shown} on {}: {detail}",
            config.target
        ))
    };
    let mut session = Session::open(&config)
        .map_err(|t| failed("open a session for the conversion", &t.detail))?;
    let key_name = table.old_index_name("key");
    let found = session
        .run(SWAP_LIMIT, async |client| {
            client
                .query_typed(FIND_SQL, &[(&shown, Type::TEXT), (&key_name, Type::TEXT)])
                .await
        })
        .map_err(|t| failed("read the catalog entry", &t.detail))?;
    let Some(row) = found.first() else {
        return Err(failed("find the table", "it does not exist"));
    };
    let found = Found {
        schema: row.get(0),
        kind: row.get(1),
        is_partition: row.get(2),
        has_children: row.get(3),
        primary_key: row.get(4),
        sequence: row.get(5),
        owner: row.get(6),
        key_valid: row.get(7),
    };
    refuse_other_shapes(&found).map_err(|why| failed("convert the table", &why))?;
    let schema = &found.schema;

    // Steps that scan: writers go on meanwhile. Each skips what exists, so that a
    // conversion interrupted here can simply be run again.
    for sql in table.create_index_concurrently_sql() {
        scan(&mut session, &sql).map_err(|d| failed("build stogger's indexes", &d))?;
    }
    if found.key_valid == Some(false) {
        // Left invalid by an interrupted build: IF NOT EXISTS would take it as done.
        let drop = format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {}",
            qualified(schema, &key_name)
        );
        scan(&mut session, &drop).map_err(|d| failed("drop an invalid index", &d))?;
    }
    scan(&mut session, &table.old_key_sql(schema))
        .map_err(|d| failed("build the unique index on (id, timestamp)", &d))?;
    let today = chrono::Utc::now().date_naive();
    let until = conversion_bound(span, today)
        .ok_or_else(|| failed("convert the table", "the calendar ends"))?;
    let bound = vec![table.add_bound_sql(schema, until)];
    locked(&mut session, &bound, None)
        .map_err(|d| failed("bound the rows by a CHECK constraint", &d))?;
    scan(&mut session, &table.validate_bound_sql(schema))
        .map_err(|d| failed("validate the bound (a row is newer than it?)", &d))?;

    // The swap: a moment under ACCESS EXCLUSIVE, run as the owner so that the owner
    // owns the parent and its partitions.
    let mut swap = vec![
        format!("SET LOCAL ROLE {}", quote_ident(&found.owner)),
        format!("SET LOCAL search_path TO {}", quote_ident(schema)),
    ];
    swap.extend(table.swap_sql(
        schema,
        span,
        until,
        found.primary_key.as_deref(),
        found.sequence.as_deref(),
    ));
    let grants_of = qualified(schema, &table.until_partition_name(until));
    locked(
        &mut session,
        &swap,
        Some((schema, table.name(), &grants_of)),
    )
    .map_err(|d| failed("swap in the partitioned table", &d))?;
    session.close();
    Ok(Conversion {
        table: qualified(schema, table.name()),
        old_partition: grants_of,
        until: period::literal(until).trim_matches('\'').to_owned(),
    })
}

fn refuse_other_shapes(found: &Found) -> Result<(), String> {
    match found.kind.as_str() {
        "p" => Err("it is partitioned already".to_owned()),
        "r" if found.is_partition => {
            Err("it is a partition of another table; convert its parent".to_owned())
        }
        "r" if found.has_children => Err(
            "it has inheritance children (partitioned by other means); their manager keeps it"
                .to_owned(),
        ),
        "r" => Ok(()),
        _ => Err("it is not a table".to_owned()),
    }
}

/// Runs one statement that may scan the table, outside any transaction (as `CREATE
/// INDEX CONCURRENTLY` demands).
fn scan(session: &mut Session, sql: &str) -> Result<(), String> {
    session
        .run(SCAN_LIMIT, async |client| client.batch_execute(sql).await)
        .map_err(|t| t.detail)
}

/// Runs `statements` in one transaction that waits at most [`LOCK_WAIT`] for a lock,
/// trying again up to [`SWAP_TRIES`] times. `grants`: the schema and name of the new
/// parent, and the old table whose grants it copies, read inside the transaction.
fn locked(
    session: &mut Session,
    statements: &[String],
    grants: Option<(&str, &str, &str)>,
) -> Result<(), String> {
    for _ in 0..SWAP_TRIES {
        let done = session
            .run(SWAP_LIMIT + Duration::from_secs(1), async |client| {
                let tx = client.transaction().await?;
                tx.batch_execute(&local_timeouts(SWAP_LIMIT, LOCK_WAIT))
                    .await?;
                for sql in statements {
                    match tx.batch_execute(sql).await {
                        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                            tx.rollback().await?;
                            return Ok(false);
                        }
                        other => other?,
                    }
                }
                if let Some((schema, parent, old)) = grants {
                    let rows = tx.query_typed(GRANTS_SQL, &[(&old, Type::TEXT)]).await?;
                    for row in rows {
                        let (privilege, grantee, grantable): (String, Option<String>, bool) =
                            (row.get(0), row.get(1), row.get(2));
                        if let Some(sql) =
                            grant_sql(schema, parent, &privilege, grantee.as_deref(), grantable)
                        {
                            tx.batch_execute(&sql).await?;
                        }
                    }
                }
                tx.commit().await?;
                Ok(true)
            })
            .map_err(|t| t.detail)?;
        if done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(format!(
        "the table's lock was not to be had within {} ms in {SWAP_TRIES} tries; writers or \
         a long transaction hold it: run the conversion again at a quieter time",
        LOCK_WAIT.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(kind: &str) -> Found {
        Found {
            schema: "public".into(),
            kind: kind.into(),
            is_partition: false,
            has_children: false,
            primary_key: None,
            sequence: None,
            owner: "app".into(),
            key_valid: None,
        }
    }

    #[test]
    fn only_a_plain_table_of_its_own_is_converted() {
        assert!(refuse_other_shapes(&found("r")).is_ok());
        assert!(refuse_other_shapes(&found("p"))
            .unwrap_err()
            .contains("partitioned already"));
        assert!(refuse_other_shapes(&found("v"))
            .unwrap_err()
            .contains("not a table"));
        let child = Found {
            is_partition: true,
            ..found("r")
        };
        assert!(refuse_other_shapes(&child).unwrap_err().contains("parent"));
        let parent = Found {
            has_children: true,
            ..found("r")
        };
        assert!(refuse_other_shapes(&parent)
            .unwrap_err()
            .contains("inheritance"));
    }
}
