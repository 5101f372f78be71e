//! SQL text of converting a plain table (stogger's, an older pglog's) into one partitioned
//! by time, online: pure, so that every statement is tested without a server.
//!
//! The plain table becomes the partition of all time up to a bound `until`; a new
//! partitioned parent takes its name, its index names, its sequence and its grants.
//! What needs a scan runs before, under locks that let writers go on:
//!
//! 1. the stogger indexes the table lacks, and a unique index on `(id, timestamp)` (the
//!    parent's primary key needs one on each partition), `CREATE INDEX CONCURRENTLY`;
//! 2. `CHECK (timestamp < until) NOT VALID` (a moment's lock, no scan), then `VALIDATE`
//!    (a scan under SHARE UPDATE EXCLUSIVE, which writers do not conflict with);
//! 3. the swap, one short transaction under ACCESS EXCLUSIVE: rename the table and its
//!    indexes, create the parent under the old name with stogger's index names, attach
//!    the old table (the validated CHECK proves the partition's bound, so PostgreSQL
//!    skips its scan, and the existing indexes become the parent's indexes' partitions
//!    instead of being built), add the default partition and those ahead, mark it.
//!
//! A writer blocked by the swap's lock resolves the table's name again once it has the
//! lock, so its INSERT or COPY lands in the new parent. Every name is quoted.

use chrono::NaiveDate;

use super::partitioned::qualified;
use super::period::{self, Span};
use super::{quote_ident, Table, INDEXES};

/// The CHECK constraint that bounds the old table's rows before it is attached; dropped
/// by the swap, where the partition's own bound replaces it.
pub(crate) const BOUND_CHECK: &str = "pglog_conversion_bound";

impl Table {
    /// The old table's name as a partition: `<table>_until20261124`, the day its range
    /// ends. Not a period partition's name (`_p...`), so maintenance never takes it for
    /// one period's partition.
    pub fn until_partition_name(&self, until: NaiveDate) -> String {
        format!("{}_until{}", self.name, until.format("%Y%m%d"))
    }

    /// The end of the range of a partition named as [`Table::until_partition_name`]
    /// names the old table of a conversion of this table.
    pub fn until_of_partition(&self, partition: &str) -> Option<NaiveDate> {
        let date = partition.strip_prefix(&self.name)?.strip_prefix("_until")?;
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        NaiveDate::parse_from_str(date, "%Y%m%d").ok()
    }

    /// The old table's index names once the parent has taken stogger's:
    /// `<table>_old_<suffix>`, and `<table>_old_key` for its unique `(id, timestamp)`.
    /// Short enough for any table name [`Table::new`] accepts.
    pub fn old_index_name(&self, suffix: &str) -> String {
        format!("{}_old_{suffix}", self.name)
    }

    /// The stogger indexes, built without blocking writers; skips those that exist.
    pub fn create_index_concurrently_sql(&self) -> [String; 4] {
        self.index_sql("CONCURRENTLY ")
    }

    /// The unique index on `(id, timestamp)` the parent's primary key will use on the
    /// old table, built without blocking writers.
    pub fn old_key_sql(&self, schema: &str) -> String {
        format!(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} (id, timestamp)",
            quote_ident(&self.old_index_name("key")),
            qualified(schema, &self.name)
        )
    }

    /// Bounds the plain table's rows by `until`: checked for new rows at once, for the
    /// rows already there by [`Table::validate_bound_sql`]. Drops a bound an earlier,
    /// interrupted conversion left.
    pub fn add_bound_sql(&self, schema: &str, until: NaiveDate) -> String {
        let table = qualified(schema, &self.name);
        let check = quote_ident(BOUND_CHECK);
        format!(
            "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}, ADD CONSTRAINT {check} \
             CHECK (timestamp < {}) NOT VALID",
            period::literal(until)
        )
    }

    pub fn validate_bound_sql(&self, schema: &str) -> String {
        format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            qualified(schema, &self.name),
            quote_ident(BOUND_CHECK)
        )
    }

    /// The swap, to run in one transaction holding the table's ACCESS EXCLUSIVE lock
    /// with the search path set to `schema` (the unqualified statements it shares with
    /// table creation then land there).
    ///
    /// `primary_key`: the old table's primary key constraint, whose name the parent's
    /// takes (`<table>_pkey`) and whose one-column uniqueness the parent cannot keep.
    /// `indexes`: which of stogger's index suffixes the old table has (all, after the
    /// concurrent step). `sequence`: the serial sequence of `id`, as the server quoted
    /// it, handed to the parent so that dropping the old partition one day keeps it.
    pub fn swap_sql(
        &self,
        schema: &str,
        span: Span,
        until: NaiveDate,
        primary_key: Option<&str>,
        sequence: Option<&str>,
    ) -> Vec<String> {
        let table = qualified(schema, &self.name);
        let old_name = self.until_partition_name(until);
        let old = qualified(schema, &old_name);
        let key = quote_ident(&self.old_index_name("key"));
        let mut sql = vec![format!("LOCK TABLE ONLY {table} IN ACCESS EXCLUSIVE MODE")];
        if let Some(pk) = primary_key {
            sql.push(format!(
                "ALTER TABLE {table} DROP CONSTRAINT {}",
                quote_ident(pk)
            ));
        }
        sql.push(format!(
            "ALTER TABLE {table} ADD CONSTRAINT {key} UNIQUE USING INDEX {key}"
        ));
        for ((suffix, _), name) in INDEXES.iter().zip(self.index_names()) {
            sql.push(format!(
                "ALTER INDEX IF EXISTS {} RENAME TO {}",
                qualified(schema, &name),
                quote_ident(&self.old_index_name(suffix))
            ));
        }
        sql.push(format!(
            "ALTER TABLE {table} RENAME TO {}",
            quote_ident(&old_name)
        ));
        // LIKE: the old table's columns, types, NOT NULLs and defaults (`id`'s nextval of
        // the same sequence, so that ids go on where they were), in its column order.
        sql.push(format!(
            "CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS, PRIMARY KEY (id, timestamp)) \
             PARTITION BY RANGE (timestamp)"
        ));
        if let Some(sequence) = sequence {
            sql.push(format!("ALTER SEQUENCE {sequence} OWNED BY {table}.id"));
        }
        sql.extend(self.create_index_sql());
        sql.push(format!(
            "ALTER TABLE {table} ATTACH PARTITION {old} FOR VALUES FROM (MINVALUE) TO ({})",
            period::literal(until)
        ));
        sql.push(format!(
            "ALTER TABLE {old} DROP CONSTRAINT {}",
            quote_ident(BOUND_CHECK)
        ));
        sql.extend(self.partitions_and_marker_sql(span, until));
        sql
    }
}

/// The end of the old table's range when converting on `today`: the end of the period
/// after today's, so that a writer whose clock runs up to a whole period ahead still
/// meets no CHECK violation before the swap, and the swap never attaches a range that
/// today's partition would overlap. `None` past the calendar's end.
pub(crate) fn conversion_bound(span: Span, today: NaiveDate) -> Option<NaiveDate> {
    span.period_of(today).next()?.end()
}

/// A `GRANT` giving the parent what a role had on the old table; `None` for a privilege
/// word pglog does not know (so that nothing but a keyword reaches the statement).
pub(crate) fn grant_sql(
    schema: &str,
    table: &str,
    privilege: &str,
    grantee: Option<&str>,
    grantable: bool,
) -> Option<String> {
    const KNOWN: [&str; 7] = [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
    ];
    let privilege = KNOWN.into_iter().find(|p| *p == privilege)?;
    let grantee = grantee.map_or_else(|| "PUBLIC".to_owned(), quote_ident);
    let option = if grantable { " WITH GRANT OPTION" } else { "" };
    Some(format!(
        "GRANT {privilege} ON {} TO {grantee}{option}",
        qualified(schema, table)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::period::tests::day;

    #[test]
    fn the_bound_leaves_a_whole_period_of_slack() {
        assert_eq!(
            conversion_bound(Span::Day, day("2026-11-22")),
            Some(day("2026-11-24"))
        );
        assert_eq!(
            conversion_bound(Span::Week, day("2026-11-22")),
            Some(day("2026-11-30"))
        );
        assert_eq!(
            conversion_bound(Span::Month, day("2026-11-30")),
            Some(day("2027-01-01"))
        );
    }

    #[test]
    fn the_swap_renames_creates_attaches_and_marks() {
        let t = Table::new("stogger_logs").unwrap();
        let until = day("2026-11-24");
        let sql = t.swap_sql(
            "public",
            Span::Day,
            until,
            Some("stogger_logs_pkey"),
            Some("public.stogger_logs_id_seq"),
        );
        let expected_start = [
            "LOCK TABLE ONLY \"public\".\"stogger_logs\" IN ACCESS EXCLUSIVE MODE",
            "ALTER TABLE \"public\".\"stogger_logs\" DROP CONSTRAINT \"stogger_logs_pkey\"",
            "ALTER TABLE \"public\".\"stogger_logs\" ADD CONSTRAINT \"stogger_logs_old_key\" \
             UNIQUE USING INDEX \"stogger_logs_old_key\"",
            "ALTER INDEX IF EXISTS \"public\".\"idx_stogger_logs_timestamp\" RENAME TO \
             \"stogger_logs_old_timestamp\"",
        ];
        assert_eq!(sql[..4], expected_start);
        assert!(sql.contains(
            &"ALTER TABLE \"public\".\"stogger_logs\" RENAME TO \"stogger_logs_until20261124\""
                .to_owned()
        ));
        assert!(sql.contains(
            &"ALTER SEQUENCE public.stogger_logs_id_seq OWNED BY \"public\".\"stogger_logs\".id"
                .to_owned()
        ));
        assert!(sql.contains(
            &"ALTER TABLE \"public\".\"stogger_logs\" ATTACH PARTITION \
              \"public\".\"stogger_logs_until20261124\" FOR VALUES FROM (MINVALUE) TO \
              ('2026-11-24 00:00:00+00')"
                .to_owned()
        ));
        // stogger's index names go to the parent, before the attach adopts the old ones.
        let attach = sql.iter().position(|s| s.contains("ATTACH")).unwrap();
        let index = sql
            .iter()
            .position(|s| s.starts_with("CREATE INDEX IF NOT EXISTS \"idx_stogger_logs_data\""))
            .unwrap();
        assert!(index < attach);
        // Periods from the bound on, then the marker.
        assert!(sql
            .iter()
            .any(|s| s.starts_with("CREATE TABLE \"stogger_logs_p20261124\" PARTITION OF")));
        assert!(!sql.iter().any(|s| s.contains("_p20261123")));
        assert!(sql
            .last()
            .unwrap()
            .starts_with("COMMENT ON TABLE \"stogger_logs\" IS 'pglog: partitioned by day;"));
    }

    #[test]
    fn every_name_derived_from_a_hostile_table_stays_quoted() {
        let t = Table::new(r#"x"; DROP TABLE users; --"#).unwrap();
        let until = day("2026-11-24");
        for sql in t
            .swap_sql("s\"", Span::Month, until, Some("p\"k"), None)
            .into_iter()
            .chain([
                t.old_key_sql("s\""),
                t.add_bound_sql("s\"", until),
                t.validate_bound_sql("s\""),
            ])
            .chain(t.create_index_concurrently_sql())
        {
            assert!(!sql.contains(r#"x"; DROP"#), "{sql}");
        }
        assert_eq!(
            grant_sql("public", "a\"b", "INSERT", Some("r\"w"), false).as_deref(),
            Some(r#"GRANT INSERT ON "public"."a""b" TO "r""w""#)
        );
        assert_eq!(grant_sql("public", "t", "DROP TABLE x", None, false), None);
        assert_eq!(
            grant_sql("public", "t", "SELECT", None, true).as_deref(),
            Some(r#"GRANT SELECT ON "public"."t" TO PUBLIC WITH GRANT OPTION"#)
        );
    }

    #[test]
    fn the_old_tables_name_reads_back_as_its_bound() {
        let t = Table::new("logs").unwrap();
        let name = t.until_partition_name(day("2026-11-24"));
        assert_eq!(name, "logs_until20261124");
        assert_eq!(t.until_of_partition(&name), Some(day("2026-11-24")));
        assert_eq!(t.until_of_partition("logs_until2026112"), None);
        assert_eq!(t.until_of_partition("logs_p20261124"), None);
        assert_eq!(t.until_of_partition("other_until20261124"), None);
    }

    #[test]
    fn derived_names_fit_any_accepted_table_name() {
        let t = Table::new(&"x".repeat(49)).unwrap();
        for name in [
            t.until_partition_name(day("2026-11-24")),
            t.old_index_name("timestamp"),
            t.old_index_name("key"),
        ] {
            assert!(name.len() <= 63, "{name}");
        }
    }
}
