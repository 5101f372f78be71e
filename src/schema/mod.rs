//! The table: its name, the SQL text that creates and fills it, and creating it safely.
//!
//! The layout and index names are stogger-postgres's, so that Python and Rust programs
//! sharing a table create the same objects, not twins. A table pglog creates with a
//! [`Partition`] period is partitioned by range on `timestamp` with the same columns and
//! index names ([`partitioned`]); [`period`] says what its partitions cover.

pub(crate) mod convert;
pub(crate) mod partitioned;
pub(crate) mod period;

pub use period::Partition;

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::Error;

/// PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Index suffixes, stogger's: `idx_<table>_<suffix>`.
pub(crate) const INDEXES: [(&str, &str); 4] = [
    ("timestamp", "(timestamp DESC)"),
    ("level", "(level)"),
    ("event", "(event)"),
    ("data", "USING GIN (data)"),
];

/// The columns pglog writes, in the order of its INSERT and COPY parameters.
const COLUMNS: &str = "(\"timestamp\", \"level\", \"event\", \"func\", \"scope\", \"data\")";

/// What a session learns of the table before writing: whether it exists, the pglog
/// columns it lacks, whether this role may insert, and the `data` column's type.
pub(crate) const INSPECT_SQL: &str = "SELECT to_regclass($1) IS NOT NULL, \
     ARRAY(SELECT c FROM unnest(ARRAY['timestamp', 'level', 'event', 'func', 'scope', 'data']) AS c \
           WHERE NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = to_regclass($1) \
                             AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped)), \
     coalesce(has_table_privilege(to_regclass($1), 'INSERT'), false), \
     (SELECT format_type(a.atttypid, NULL) FROM pg_attribute a \
      WHERE a.attrelid = to_regclass($1) AND a.attname = 'data' AND a.attnum > 0 AND NOT a.attisdropped)";

/// Makes the statement's own commit skip the WAL flush wait, without touching the
/// session (`set_config(.., true)` lasts for the statement's implicit transaction).
const ASYNC_COMMIT: &str = "(SELECT set_config('synchronous_commit', 'off', true)) AS pglog_commit";

/// The most a name derived from the table's adds to it: an index name
/// (`idx_<table>_timestamp`), a partition's (`<table>_p20261122`), the default
/// partition's (`<table>_default`). It decides how long a table name may be.
const LONGEST_ADDITION: usize = max(
    "idx__timestamp".len(),
    max(period::LONGEST_SUFFIX.len(), "_default".len()),
);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// A validated table name with the SQL derived from it. A table name is data, never SQL
/// text: every identifier is quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Table {
    name: String,
}

impl Table {
    /// # Errors
    ///
    /// An empty name, one with a NUL byte, or one so long that PostgreSQL would truncate
    /// the index or partition names derived from it (and make them collide).
    pub fn new(name: &str) -> Result<Table, Error> {
        let max = MAX_IDENTIFIER_BYTES - LONGEST_ADDITION;
        if name.is_empty() {
            return Err(Error::config("table", "the table name is empty"));
        }
        if name.contains('\0') {
            return Err(Error::config("table", "the table name contains a NUL byte"));
        }
        if name.len() > max {
            return Err(Error::config(
                "table",
                format!(
                    "the table name is {} bytes; at most {max} fit, so that its index names \
                     (idx_<table>_timestamp...) and partition names stay within PostgreSQL's \
                     {MAX_IDENTIFIER_BYTES}-byte identifiers",
                    name.len()
                ),
            ));
        }
        Ok(Table {
            name: name.to_owned(),
        })
    }

    /// The name as the catalog holds it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as an SQL identifier, also accepted by `to_regclass`.
    pub fn quoted(&self) -> String {
        quote_ident(&self.name)
    }

    /// The key of the advisory lock that every pglog process takes before it changes the
    /// table's schema (creates it, its indexes or partitions, drops a partition), so
    /// that they take turns.
    pub fn lock_key(&self) -> String {
        format!("pglog schema {}", self.quoted())
    }

    pub fn index_names(&self) -> [String; 4] {
        INDEXES.map(|(suffix, _)| format!("idx_{}_{suffix}", self.name))
    }

    pub fn create_table_sql(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n  id BIGSERIAL PRIMARY KEY,\n  timestamp TIMESTAMPTZ NOT NULL,\n  \
             level TEXT NOT NULL,\n  event TEXT NOT NULL,\n  func TEXT,\n  scope TEXT,\n  \
             data JSONB NOT NULL DEFAULT '{{}}')",
            self.quoted()
        )
    }

    pub fn create_index_sql(&self) -> [String; 4] {
        self.index_sql("")
    }

    /// The index statements with `how` after `CREATE INDEX` (`CONCURRENTLY `, or none).
    fn index_sql(&self, how: &str) -> [String; 4] {
        let table = self.quoted();
        let names = self.index_names();
        std::array::from_fn(|i| {
            format!(
                "CREATE INDEX {how}IF NOT EXISTS {} ON {table} {}",
                quote_ident(&names[i]),
                INDEXES[i].1
            )
        })
    }

    /// One row. `asynchronous`: its commit does not wait for the WAL flush.
    pub fn insert_sql(&self, asynchronous: bool) -> String {
        let table = self.quoted();
        if asynchronous {
            format!(
                "INSERT INTO {table} {COLUMNS} SELECT $1, $2, $3, $4, $5, $6 FROM {ASYNC_COMMIT}"
            )
        } else {
            format!("INSERT INTO {table} {COLUMNS} VALUES ($1, $2, $3, $4, $5, $6)")
        }
    }

    /// Many rows in one statement: each parameter is an array holding one column.
    pub fn insert_many_sql(&self, asynchronous: bool) -> String {
        let table = self.quoted();
        let rows = "unnest($1, $2, $3, $4, $5, $6) AS u";
        if asynchronous {
            format!("INSERT INTO {table} {COLUMNS} SELECT u.* FROM {rows}, {ASYNC_COMMIT}")
        } else {
            format!("INSERT INTO {table} {COLUMNS} SELECT u.* FROM {rows}")
        }
    }

    pub fn copy_sql(&self) -> String {
        format!(
            "COPY {} {COLUMNS} FROM STDIN (FORMAT binary)",
            self.quoted()
        )
    }
}

/// The statement that bounds the rest of a transaction: each statement runs at most
/// `statement`, and waits at most `lock` for a lock (each at least 1 ms: 0 would mean
/// no bound at all).
pub(crate) fn local_timeouts(statement: Duration, lock: Duration) -> String {
    format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}",
        statement.as_millis().max(1),
        lock.as_millis().max(1)
    )
}

/// Quotes an identifier the way PostgreSQL's `quote_ident` does when quoting is needed.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the table and its indexes unless they all exist already; each statement waits
/// at most `limit`, for locks too. `true` when something was missing. A missing table
/// is created partitioned when `partition` says so ([`partitioned`]); an existing one
/// keeps its shape, whatever `partition` says.
///
/// When everything exists nothing but one catalog query runs, so a role that may only
/// INSERT can log into a table created by its owner. Otherwise the DDL runs under a
/// transaction-level advisory lock: concurrent `CREATE TABLE IF NOT EXISTS` from several
/// starting processes can otherwise fail with a unique violation in `pg_type`, and
/// several processes must not each create a set of partitions. Only unnamed statements
/// and transaction-local settings are used, so this is safe behind a transaction pooler
/// too.
pub(crate) async fn ensure(
    client: &mut Client,
    table: &Table,
    partition: Partition,
    limit: Duration,
) -> Result<bool, tokio_postgres::Error> {
    if is_complete(client, table).await? {
        return Ok(false);
    }
    match create(client, table, partition, limit).await {
        // A writer that does not take our lock (stogger in Python, say) raced us: what it
        // created is what we wanted, so one more pass settles it.
        Err(e) if is_creation_race(&e) => create(client, table, partition, limit).await,
        other => other,
    }
    .map(|()| true)
}

async fn is_complete(client: &Client, table: &Table) -> Result<bool, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT to_regclass($1) IS NOT NULL, \
                    ARRAY(SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                          WHERE i.indrelid = to_regclass($1))",
            &[(&table.quoted(), Type::TEXT)],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(false);
    };
    let exists: bool = row.get(0);
    let indexes: Vec<String> = row.get(1);
    Ok(exists
        && table
            .index_names()
            .iter()
            .all(|name| indexes.contains(name)))
}

async fn create(
    client: &mut Client,
    table: &Table,
    partition: Partition,
    limit: Duration,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(&local_timeouts(limit, limit)).await?;
    tx.query_typed(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[(&table.lock_key(), Type::TEXT)],
    )
    .await?;
    let exists: bool = tx
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&table.quoted(), Type::TEXT)],
        )
        .await?
        .get(0);
    match partition.span() {
        // UTC's today: partition bounds are midnights UTC.
        Some(span) if !exists => {
            let today = chrono::Utc::now().date_naive();
            for sql in table.create_partitioned_sql(span, today) {
                tx.batch_execute(&sql).await?;
            }
        }
        _ => tx.batch_execute(&table.create_table_sql()).await?,
    }
    for sql in table.create_index_sql() {
        tx.batch_execute(&sql).await?;
    }
    tx.commit().await
}

fn is_creation_race(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE || *c == SqlState::DUPLICATE_OBJECT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_sql_matches_stogger() {
        let t = Table::new("stogger_logs").unwrap();
        assert_eq!(
            t.create_table_sql(),
            "CREATE TABLE IF NOT EXISTS \"stogger_logs\" (\n  id BIGSERIAL PRIMARY KEY,\n  timestamp TIMESTAMPTZ NOT NULL,\n  \
             level TEXT NOT NULL,\n  event TEXT NOT NULL,\n  func TEXT,\n  scope TEXT,\n  data JSONB NOT NULL DEFAULT '{}')"
        );
        assert_eq!(
            t.create_index_sql(),
            [
                "CREATE INDEX IF NOT EXISTS \"idx_stogger_logs_timestamp\" ON \"stogger_logs\" (timestamp DESC)",
                "CREATE INDEX IF NOT EXISTS \"idx_stogger_logs_level\" ON \"stogger_logs\" (level)",
                "CREATE INDEX IF NOT EXISTS \"idx_stogger_logs_event\" ON \"stogger_logs\" (event)",
                "CREATE INDEX IF NOT EXISTS \"idx_stogger_logs_data\" ON \"stogger_logs\" USING GIN (data)",
            ]
        );
    }

    #[test]
    fn hostile_names_are_quoted_not_interpreted() {
        let t = Table::new(r#"x"; DROP TABLE users; --"#).unwrap();
        assert_eq!(t.quoted(), r#""x""; DROP TABLE users; --""#);
        assert!(t
            .insert_sql(false)
            .starts_with(r#"INSERT INTO "x""; DROP TABLE users; --" ("#));
        assert_eq!(t.index_names()[1], r#"idx_x"; DROP TABLE users; --_level"#);
        assert!(t.create_index_sql()[1].contains(r#""idx_x""; DROP TABLE users; --_level""#));
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        assert!(Table::new("").unwrap_err().to_string().contains("empty"));
        assert!(Table::new("a\0b").unwrap_err().to_string().contains("NUL"));
        let long = "x".repeat(50);
        let msg = Table::new(&long).unwrap_err().to_string();
        assert!(msg.contains("at most 49"), "{msg}");
        assert!(Table::new(&"x".repeat(49)).is_ok());
        assert_eq!(LONGEST_ADDITION, "idx__timestamp".len());
        // Bytes, not chars: PostgreSQL's limit is in bytes.
        assert!(Table::new(&"é".repeat(25)).is_err());
    }
}
