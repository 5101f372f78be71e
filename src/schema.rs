//! The table: its name, the SQL text that creates and fills it, and creating it safely.
//!
//! The layout and index names are stogger-postgres's, so that Python and Rust programs
//! sharing a table create the same objects, not twins.

use postgres::error::SqlState;
use postgres::Client;

use crate::Error;

/// PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Index suffixes, stogger's: `idx_<table>_<suffix>`.
const INDEXES: [(&str, &str); 4] = [
    ("timestamp", "(timestamp DESC)"),
    ("level", "(level)"),
    ("event", "(event)"),
    ("data", "USING GIN (data)"),
];

/// The columns pglog writes, in the order of its INSERT and COPY parameters.
const COLUMNS: &str = "(\"timestamp\", \"level\", \"event\", \"func\", \"scope\", \"data\")";

/// The longest index name decides how long a table name may be.
const LONGEST_SUFFIX: usize = "timestamp".len();

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
    /// the index names derived from it (and make them collide).
    pub fn new(name: &str) -> Result<Table, Error> {
        let max = MAX_IDENTIFIER_BYTES - "idx__".len() - LONGEST_SUFFIX;
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
                     (idx_<table>_timestamp...) stay within PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte identifiers",
                    name.len()
                ),
            ));
        }
        Ok(Table {
            name: name.to_owned(),
        })
    }

    /// The name as an SQL identifier, also accepted by `to_regclass`.
    pub fn quoted(&self) -> String {
        quote_ident(&self.name)
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
        let table = self.quoted();
        let names = self.index_names();
        std::array::from_fn(|i| {
            format!(
                "CREATE INDEX IF NOT EXISTS {} ON {table} {}",
                quote_ident(&names[i]),
                INDEXES[i].1
            )
        })
    }

    pub fn insert_sql(&self) -> String {
        format!(
            "INSERT INTO {} {COLUMNS} VALUES ($1, $2, $3, $4, $5, $6)",
            self.quoted()
        )
    }

    pub fn copy_sql(&self) -> String {
        format!(
            "COPY {} {COLUMNS} FROM STDIN (FORMAT binary)",
            self.quoted()
        )
    }
}

/// Quotes an identifier the way PostgreSQL's `quote_ident` does when quoting is needed.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the table and its indexes unless they all exist already.
///
/// When everything exists nothing but one catalog query runs, so a role that may only
/// INSERT can log into a table created by its owner. Otherwise the DDL runs under a
/// transaction-level advisory lock: concurrent `CREATE TABLE IF NOT EXISTS` from several
/// starting processes can otherwise fail with a unique violation in `pg_type`.
pub(crate) fn ensure(client: &mut Client, table: &Table) -> Result<(), postgres::Error> {
    if is_complete(client, table)? {
        return Ok(());
    }
    match create(client, table) {
        // A writer that does not take our lock (stogger in Python, say) raced us: what it
        // created is what we wanted, so one more pass settles it.
        Err(e) if is_creation_race(&e) => create(client, table),
        other => other,
    }
}

fn is_complete(client: &mut Client, table: &Table) -> Result<bool, postgres::Error> {
    let row = client.query_one(
        "SELECT to_regclass($1) IS NOT NULL, \
                ARRAY(SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                      WHERE i.indrelid = to_regclass($1))",
        &[&table.quoted()],
    )?;
    let exists: bool = row.get(0);
    let indexes: Vec<String> = row.get(1);
    Ok(exists
        && table
            .index_names()
            .iter()
            .all(|name| indexes.contains(name)))
}

fn create(client: &mut Client, table: &Table) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("pglog schema {}", table.quoted())],
    )?;
    tx.batch_execute(&table.create_table_sql())?;
    for sql in table.create_index_sql() {
        tx.batch_execute(&sql)?;
    }
    tx.commit()
}

fn is_creation_race(e: &postgres::Error) -> bool {
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
            .insert_sql()
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
        // Bytes, not chars: PostgreSQL's limit is in bytes.
        assert!(Table::new(&"é".repeat(25)).is_err());
    }
}
