//! SQL text of a table partitioned by time: creating it, and the statements that keep its
//! partitions (create ahead, move rows out of the default partition, drop, trim).
//!
//! Every name is quoted, a partition's too: it is the table's name (data) with a suffix.
//! Time bounds are literals made from dates ([`period::literal`]), never from input.
//! Maintenance statements name relations with their schema, so that a search path that
//! differs from the creator's cannot point them at another table.

use chrono::NaiveDate;

use super::period::{self, Period, Span};
use super::{quote_ident, Table};

/// How many periods after the current one get their partition ahead of time: with day
/// partitions and hourly maintenance, three days of slack before rows would go to the
/// default partition.
pub(crate) const AHEAD: usize = 3;

/// The start of the comment that marks a table whose partitions pglog keeps; a table
/// without it (partitioned by hand, by pg_partman) is left to its manager.
const MARKER: &str = "pglog: partitioned by ";

/// Rows deleted per transaction by retention on a plain table (or a default partition).
pub(crate) const TRIM_BATCH: u32 = 5_000;

impl Table {
    /// The partition taking rows no other partition covers.
    pub fn default_partition_name(&self) -> String {
        format!("{}_default", self.name)
    }

    pub fn partition_name(&self, period: Period) -> String {
        format!("{}_p{}", self.name, period.suffix())
    }

    /// The period of a partition named as pglog names this table's partitions of `span`.
    pub fn period_of_partition(&self, span: Span, partition: &str) -> Option<Period> {
        let suffix = partition.strip_prefix(&self.name)?.strip_prefix("_p")?;
        span.read_suffix(suffix)
    }

    /// The statements that create the table partitioned by `span` with the default
    /// partition and the partitions from `today`'s period on ([`AHEAD`]), marked as
    /// pglog's. Its indexes come after, as for the plain table; on the parent they are
    /// partitioned indexes, made on every partition.
    ///
    /// The primary key holds `timestamp` because PostgreSQL demands that a unique key
    /// include the partition key.
    pub fn create_partitioned_sql(&self, span: Span, today: NaiveDate) -> Vec<String> {
        let table = self.quoted();
        // No IF NOT EXISTS: a plain table created meanwhile by a writer that does not
        // take pglog's lock (stogger) must fail this, not be taken for partitioned.
        let mut sql = vec![format!(
            "CREATE TABLE {table} (\n  id BIGSERIAL,\n  timestamp TIMESTAMPTZ NOT NULL,\n  \
             level TEXT NOT NULL,\n  event TEXT NOT NULL,\n  func TEXT,\n  scope TEXT,\n  \
             data JSONB NOT NULL DEFAULT '{{}}',\n  PRIMARY KEY (id, timestamp)\n) \
             PARTITION BY RANGE (timestamp)"
        )];
        sql.extend(self.partitions_and_marker_sql(span, today));
        sql
    }

    /// What makes a partitioned parent pglog's: its default partition, the partitions
    /// of the period holding `first` and the [`AHEAD`] after it, and the marker comment.
    /// Names are unqualified: the caller's search path (or the CREATE before) decides.
    pub fn partitions_and_marker_sql(&self, span: Span, first: NaiveDate) -> Vec<String> {
        let table = self.quoted();
        let mut sql = vec![format!(
            "CREATE TABLE {} PARTITION OF {table} DEFAULT",
            quote_ident(&self.default_partition_name())
        )];
        for period in Period::upcoming(span, first, AHEAD) {
            let Some(end) = period.end() else { break };
            sql.push(format!(
                "CREATE TABLE {} PARTITION OF {table} FOR VALUES FROM ({}) TO ({})",
                quote_ident(&self.partition_name(period)),
                period::literal(period.start()),
                period::literal(end)
            ));
        }
        sql.push(format!(
            "COMMENT ON TABLE {table} IS '{MARKER}{}; pglog creates and drops its partitions \
             (remove this comment to manage them otherwise)'",
            span.word()
        ));
        sql
    }

    /// The statements that give `period` its partition in the table's `schema`, moving
    /// the rows the default partition holds for it (PostgreSQL refuses a partition whose
    /// rows sit in the default one): create the partition as a table of its own, move
    /// the rows, attach it. Run in one transaction, so that no reader sees a row twice
    /// or not at all. Attaching locks the parent only against schema changes (SHARE
    /// UPDATE EXCLUSIVE), where creating a partition in place would lock out writers.
    ///
    /// `default`: the default partition's name, if the table has one.
    pub fn adopt_sql(&self, schema: &str, default: Option<&str>, period: Period) -> Vec<String> {
        let Some(end) = period.end() else {
            return Vec::new();
        };
        let (from, to) = (period::literal(period.start()), period::literal(end));
        let parent = qualified(schema, &self.name);
        let partition = qualified(schema, &self.partition_name(period));
        // The default partition's column order, so that its rows insert as they come.
        let like = default.map_or_else(|| parent.clone(), |d| qualified(schema, d));
        let mut sql = vec![format!(
            "CREATE TABLE {partition} (LIKE {like} INCLUDING DEFAULTS)"
        )];
        if default.is_some() {
            sql.push(format!(
                "WITH moved AS (DELETE FROM ONLY {like} WHERE timestamp >= {from} AND \
                 timestamp < {to} RETURNING *) INSERT INTO {partition} SELECT * FROM moved"
            ));
        }
        sql.push(format!(
            "ALTER TABLE {parent} ATTACH PARTITION {partition} FOR VALUES FROM ({from}) TO ({to})"
        ));
        sql
    }

    /// What the table's owner runs to give `period` its partition when the default
    /// partition holds none of its rows: the one statement, for a notice.
    pub fn partition_of_sql(&self, schema: &str, period: Period) -> String {
        let end = period
            .end()
            .map_or_else(|| "MAXVALUE".to_owned(), period::literal);
        format!(
            "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({end})",
            qualified(schema, &self.partition_name(period)),
            qualified(schema, &self.name),
            period::literal(period.start())
        )
    }
}

/// The earliest row of the default partition between `from` (if any) and `to`: the
/// next period to give its partition. Through the partition's timestamp index.
pub(crate) fn earliest_in_sql(
    schema: &str,
    default: &str,
    from: Option<NaiveDate>,
    to: NaiveDate,
) -> String {
    let from = from.map_or_else(|| "'-infinity'".to_owned(), period::literal);
    format!(
        "SELECT min(timestamp) FROM ONLY {} WHERE timestamp >= {from} AND timestamp < {}",
        qualified(schema, default),
        period::literal(to)
    )
}

/// Deletes up to [`TRIM_BATCH`] rows older than `first_kept` from `relation` (the
/// plain table or a default partition): oldest first through the timestamp index,
/// addressed by their `ctid`, so that one statement is short and locks only the rows
/// it deletes. `ONLY`: a table's inheritance children are not its rows.
pub(crate) fn trim_sql(schema: &str, relation: &str, first_kept: NaiveDate) -> String {
    let relation = qualified(schema, relation);
    format!(
        "DELETE FROM ONLY {relation} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ONLY {relation} \
         WHERE timestamp < {} ORDER BY timestamp LIMIT {TRIM_BATCH}))",
        period::literal(first_kept)
    )
}

pub(crate) fn drop_sql(schema: &str, partition: &str) -> String {
    format!("DROP TABLE IF EXISTS {}", qualified(schema, partition))
}

/// The period of the partitions of a table pglog partitioned, read from its comment.
pub(crate) fn marked_span(comment: &str) -> Option<Span> {
    let word: String = comment
        .strip_prefix(MARKER)?
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    Span::from_word(&word)
}

/// `"schema"."name"`.
pub(crate) fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::period::tests::day;

    #[test]
    fn creation_makes_the_parent_its_default_and_the_periods_ahead_then_marks_it() {
        let t = Table::new("logs").unwrap();
        let sql = t.create_partitioned_sql(Span::Day, day("2026-11-22"));
        assert!(sql[0].starts_with("CREATE TABLE \"logs\" (\n  id BIGSERIAL,\n"));
        assert!(sql[0].ends_with("PRIMARY KEY (id, timestamp)\n) PARTITION BY RANGE (timestamp)"));
        assert_eq!(
            sql[1],
            "CREATE TABLE \"logs_default\" PARTITION OF \"logs\" DEFAULT"
        );
        assert_eq!(
            sql[2],
            "CREATE TABLE \"logs_p20261122\" PARTITION OF \"logs\" FOR VALUES \
             FROM ('2026-11-22 00:00:00+00') TO ('2026-11-23 00:00:00+00')"
        );
        assert_eq!(sql.len(), 2 + AHEAD + 1 + 1);
        assert!(sql[2 + AHEAD].contains("\"logs_p20261125\""));
        let comment = sql.last().unwrap();
        assert!(comment.starts_with("COMMENT ON TABLE \"logs\" IS 'pglog: partitioned by day;"));
        let text = comment.split('\'').nth(1).unwrap();
        assert_eq!(marked_span(text), Some(Span::Day));
    }

    #[test]
    fn the_marker_is_read_strictly() {
        assert_eq!(
            marked_span("pglog: partitioned by month"),
            Some(Span::Month)
        );
        assert_eq!(
            marked_span("pglog: partitioned by week; x"),
            Some(Span::Week)
        );
        assert_eq!(marked_span("pglog: partitioned by hour"), None);
        assert_eq!(marked_span("partitioned by day"), None);
        assert_eq!(marked_span("pglog: partitioned by days"), None);
    }

    #[test]
    fn adopting_moves_the_defaults_rows_then_attaches() {
        let t = Table::new("logs").unwrap();
        let period = Span::Month.period_of(day("2026-11-22"));
        let sql = t.adopt_sql("public", Some("logs_default"), period);
        assert_eq!(
            sql,
            [
                "CREATE TABLE \"public\".\"logs_p202611\" (LIKE \"public\".\"logs_default\" INCLUDING DEFAULTS)",
                "WITH moved AS (DELETE FROM ONLY \"public\".\"logs_default\" WHERE timestamp >= \
                 '2026-11-01 00:00:00+00' AND timestamp < '2026-12-01 00:00:00+00' RETURNING *) \
                 INSERT INTO \"public\".\"logs_p202611\" SELECT * FROM moved",
                "ALTER TABLE \"public\".\"logs\" ATTACH PARTITION \"public\".\"logs_p202611\" \
                 FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')",
            ]
        );
        // Without a default partition there is nothing to move.
        let sql = t.adopt_sql("public", None, period);
        assert_eq!(sql.len(), 2);
        assert!(sql[0].contains("(LIKE \"public\".\"logs\" INCLUDING DEFAULTS)"));
    }

    #[test]
    fn partition_names_read_back_for_their_table_only() {
        let t = Table::new("logs").unwrap();
        let period = Span::Day.period_of(day("2026-11-22"));
        assert_eq!(t.partition_name(period), "logs_p20261122");
        assert_eq!(
            t.period_of_partition(Span::Day, "logs_p20261122"),
            Some(period)
        );
        assert_eq!(t.period_of_partition(Span::Day, "logs_default"), None);
        assert_eq!(t.period_of_partition(Span::Day, "other_p20261122"), None);
        assert_eq!(t.period_of_partition(Span::Month, "logs_p20261122"), None);
    }

    #[test]
    fn hostile_names_stay_quoted_in_every_statement() {
        let t = Table::new(r#"x"; DROP TABLE users; --"#).unwrap();
        let period = Span::Day.period_of(day("2026-11-22"));
        let quoted = r#""x""; DROP TABLE users; --_p20261122""#;
        for sql in t
            .create_partitioned_sql(Span::Day, day("2026-11-22"))
            .into_iter()
            .chain(t.adopt_sql("s\"", Some(r#"x"; DROP TABLE users; --_default"#), period))
        {
            assert!(!sql.contains(r#"x"; DROP"#), "{sql}");
        }
        assert!(t.adopt_sql("public", None, period)[0].contains(quoted));
        assert!(trim_sql("s\"", "a\"b", day("2026-11-22")).contains(r#""s"""."a""b""#));
        assert_eq!(
            drop_sql("public", "a\"b"),
            r#"DROP TABLE IF EXISTS "public"."a""b""#
        );
    }

    #[test]
    fn trimming_deletes_a_bounded_batch_oldest_first() {
        let sql = trim_sql("public", "logs", day("2026-11-15"));
        assert_eq!(
            sql,
            "DELETE FROM ONLY \"public\".\"logs\" WHERE ctid = ANY(ARRAY(SELECT ctid FROM ONLY \
             \"public\".\"logs\" WHERE timestamp < '2026-11-15 00:00:00+00' ORDER BY timestamp \
             LIMIT 5000))"
        );
    }
}
