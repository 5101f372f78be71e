//! What a maintenance pass does to the table, decided from what the catalog says of it:
//! pure, so that every case is tested without a server.
//!
//! pglog keeps the partitions of a table only when the table says pglog partitioned it
//! (its comment, [`marked_span`]) and pg_partman does not manage it: a table partitioned
//! by hand or by pg_partman is its manager's. Retention on a plain table deletes rows;
//! a plain table with inheritance children (pg_partman 4's trigger-based partitions, or
//! a DBA's) is left alone too, since its rows are spread over tables pglog does not know.

use chrono::NaiveDate;

use crate::schema::partitioned::{marked_span, AHEAD};
use crate::schema::period::{self, Period, Span};
use crate::schema::{Partition, Table};

/// What the catalog says of the table (as the search path finds it).
#[derive(Debug, Clone, Default)]
pub(crate) struct Found {
    pub schema: String,
    /// `pg_class.relkind`: `r` a plain table, `p` a partitioned one.
    pub kind: String,
    pub comment: Option<String>,
    /// The default partition's name.
    pub default: Option<String>,
    /// Partitions, or inheritance children of a plain table.
    pub children: Vec<String>,
    /// Listed in pg_partman's `part_config`, or pg_partman is installed and that could
    /// not be read (then pglog stays out of its way).
    pub partman: bool,
}

/// What is asked of maintenance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted {
    pub partition: Partition,
    pub retention_days: Option<u32>,
    /// UTC's today.
    pub today: NaiveDate,
}

/// What a pass does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing: no table, or nothing asked applies to it.
    Nothing,
    /// Nothing, and the operator should hear why once: what they asked for does not apply.
    Explain(String),
    /// Retention on a plain table: delete its rows older than `first_kept`.
    Trim { first_kept: NaiveDate },
    /// A table pglog partitioned.
    Keep(Keep),
}

/// The work on a table pglog partitioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keep {
    pub span: Span,
    /// The periods from today's on that lack a partition, in order.
    pub create: Vec<Period>,
    /// The partitions whose every day is older than the first day kept.
    pub drop: Vec<String>,
    /// The default partition, if the table has one.
    pub default: Option<String>,
    /// Retention's first day kept.
    pub first_kept: Option<NaiveDate>,
    /// The end of the last period created ahead: rows of the default partition before
    /// it (and not older than `first_kept`) get their partitions. Rows beyond it (a
    /// clock far ahead) stay in the default partition.
    pub horizon: Option<NaiveDate>,
}

pub(crate) fn plan(found: Option<&Found>, table: &Table, wanted: Wanted) -> Plan {
    let Some(found) = found else {
        return Plan::Nothing;
    };
    let first_kept = wanted
        .retention_days
        .and_then(|days| period::first_kept(wanted.today, days));
    let retention = wanted.retention_days.is_some();
    let name = table.quoted();
    if found.partman {
        return explain_if(
            retention,
            format!(
                "retention_days does not apply to {name}: pg_partman manages it (set its \
                 retention in pg_partman's part_config)"
            ),
        );
    }
    match found.kind.as_str() {
        "p" => match found.comment.as_deref().and_then(marked_span) {
            Some(span) => Plan::Keep(keep(found, table, span, first_kept, wanted.today)),
            None => explain_if(
                retention,
                format!(
                    "retention_days does not apply to {name}: it was partitioned by other \
                     means than pglog, which leaves its partitions to their manager"
                ),
            ),
        },
        "r" if !found.children.is_empty() => explain_if(
            retention,
            format!(
                "retention_days does not apply to {name}: it has inheritance children \
                 (partitioned by other means than pglog), which pglog leaves to their manager"
            ),
        ),
        "r" => match (wanted.partition.span(), first_kept) {
            (_, Some(first_kept)) => Plan::Trim { first_kept },
            (Some(span), None) => Plan::Explain(format!(
                "{name} exists as a plain table, so partition = {} does not apply: pglog \
                 partitions only a table it creates",
                span.word()
            )),
            (None, None) => Plan::Nothing,
        },
        _ => explain_if(
            retention,
            format!("retention_days does not apply to {name}: it is not a table"),
        ),
    }
}

fn explain_if(asked: bool, why: String) -> Plan {
    if asked {
        Plan::Explain(why)
    } else {
        Plan::Nothing
    }
}

fn keep(
    found: &Found,
    table: &Table,
    span: Span,
    first_kept: Option<NaiveDate>,
    today: NaiveDate,
) -> Keep {
    let existing: Vec<(String, Period)> = found
        .children
        .iter()
        .filter_map(|child| Some((child.clone(), table.period_of_partition(span, child)?)))
        .collect();
    // A converted table's old one: the partition of all time up to its bound.
    let converted: Vec<(String, NaiveDate)> = found
        .children
        .iter()
        .filter_map(|child| Some((child.clone(), table.until_of_partition(child)?)))
        .collect();
    let covered_until = converted.iter().map(|(_, until)| *until).max();
    let upcoming = Period::upcoming(span, today, AHEAD);
    let create = upcoming
        .iter()
        .filter(|period| !existing.iter().any(|(_, p)| p == *period))
        .filter(|period| covered_until.is_none_or(|until| period.start() >= until))
        .copied()
        .collect();
    let expired = |end: Option<NaiveDate>| matches!((end, first_kept), (Some(end), Some(kept)) if end <= kept);
    let drop = existing
        .iter()
        .filter(|(_, p)| expired(p.end()))
        .map(|(name, _)| name.clone())
        .chain(
            converted
                .iter()
                .filter(|(_, until)| expired(Some(*until)))
                .map(|(name, _)| name.clone()),
        )
        .collect();
    Keep {
        span,
        create,
        drop,
        default: found.default.clone(),
        first_kept,
        horizon: upcoming.last().and_then(|p| p.end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::period::tests::day;

    fn table() -> Table {
        Table::new("logs").unwrap()
    }

    fn wanted(partition: Partition, retention_days: Option<u32>) -> Wanted {
        Wanted {
            partition,
            retention_days,
            today: day("2026-11-22"),
        }
    }

    fn ours(children: &[&str]) -> Found {
        Found {
            schema: "public".into(),
            kind: "p".into(),
            comment: Some("pglog: partitioned by day; pglog creates and drops...".into()),
            default: Some("logs_default".into()),
            children: children.iter().map(|c| c.to_string()).collect(),
            partman: false,
        }
    }

    #[test]
    fn a_table_pglog_partitioned_gets_its_missing_periods_and_loses_expired_ones() {
        let found = ours(&[
            "logs_default",
            "logs_p20261110",
            "logs_p20261114",
            "logs_p20261115",
            "logs_p20261122",
            "logs_p20261123",
            "someone_elses",
        ]);
        let Plan::Keep(keep) = plan(Some(&found), &table(), wanted(Partition::Day, Some(7))) else {
            panic!("kept")
        };
        let created: Vec<String> = keep.create.iter().map(|p| p.suffix()).collect();
        assert_eq!(created, ["20261124", "20261125"]);
        // The 14th ends at the 15th, the first day kept: every day of it is older.
        assert_eq!(keep.drop, ["logs_p20261110", "logs_p20261114"]);
        assert_eq!(keep.first_kept, Some(day("2026-11-15")));
        assert_eq!(keep.horizon, Some(day("2026-11-26")));
        assert_eq!(keep.default.as_deref(), Some("logs_default"));
    }

    #[test]
    fn the_tables_period_wins_over_the_setting_and_nothing_is_dropped_without_retention() {
        let mut found = ours(&["logs_p20261116", "logs_p20261101"]);
        found.comment = Some("pglog: partitioned by week".into());
        let Plan::Keep(keep) = plan(Some(&found), &table(), wanted(Partition::Day, None)) else {
            panic!("kept")
        };
        assert_eq!(keep.span, Span::Week);
        let created: Vec<String> = keep.create.iter().map(|p| p.suffix()).collect();
        assert_eq!(created, ["20261123", "20261130", "20261207"]);
        assert!(keep.drop.is_empty());
    }

    #[test]
    fn a_week_or_month_is_dropped_only_when_all_of_it_is_expired() {
        let mut found = ours(&["logs_p202610", "logs_p202611"]);
        found.comment = Some("pglog: partitioned by month".into());
        let w = Wanted {
            today: day("2026-11-30"),
            ..wanted(Partition::Month, Some(30))
        };
        let Plan::Keep(keep) = plan(Some(&found), &table(), w) else {
            panic!("kept")
        };
        // First day kept: Oct 31st, inside October.
        assert!(keep.drop.is_empty(), "{keep:?}");
        let w = Wanted {
            today: day("2026-12-01"),
            ..w
        };
        let Plan::Keep(keep) = plan(Some(&found), &table(), w) else {
            panic!("kept")
        };
        assert_eq!(keep.drop, ["logs_p202610"]);
    }

    #[test]
    fn a_converted_tables_old_partition_covers_its_range_and_expires_whole() {
        let found = ours(&["logs_until20261124", "logs_p20261124", "logs_default"]);
        let Plan::Keep(keep) = plan(Some(&found), &table(), wanted(Partition::Day, Some(7))) else {
            panic!("kept")
        };
        let created: Vec<String> = keep.create.iter().map(|p| p.suffix()).collect();
        assert_eq!(
            created,
            ["20261125"],
            "today and tomorrow are the old table's"
        );
        assert!(keep.drop.is_empty());
        let later = Wanted {
            today: day("2026-12-01"),
            ..wanted(Partition::Day, Some(7))
        };
        let Plan::Keep(keep) = plan(Some(&found), &table(), later) else {
            panic!("kept")
        };
        assert_eq!(keep.drop, ["logs_until20261124"]);
    }

    #[test]
    fn a_plain_table_is_trimmed_with_retention_and_told_about_partitions() {
        let plain = Found {
            kind: "r".into(),
            ..Found::default()
        };
        assert_eq!(
            plan(Some(&plain), &table(), wanted(Partition::None, Some(7))),
            Plan::Trim {
                first_kept: day("2026-11-15")
            }
        );
        assert_eq!(
            plan(Some(&plain), &table(), wanted(Partition::None, None)),
            Plan::Nothing
        );
        let Plan::Explain(why) = plan(Some(&plain), &table(), wanted(Partition::Month, None))
        else {
            panic!("explained")
        };
        assert!(
            why.contains("plain table") && why.contains("partition = month"),
            "{why}"
        );
    }

    #[test]
    fn other_managers_tables_are_left_alone() {
        let mut partman = ours(&["logs_p20261122"]);
        partman.partman = true;
        let by_hand = Found {
            comment: Some("partitioned by the DBA".into()),
            ..ours(&["logs_p20261122"])
        };
        let inherited = Found {
            kind: "r".into(),
            children: vec!["logs_2026".into()],
            ..Found::default()
        };
        let view = Found {
            kind: "v".into(),
            ..Found::default()
        };
        for (found, says) in [
            (partman, "pg_partman"),
            (by_hand, "other means"),
            (inherited, "inheritance"),
            (view, "not a table"),
        ] {
            let explained = plan(Some(&found), &table(), wanted(Partition::Day, Some(7)));
            assert!(
                matches!(&explained, Plan::Explain(why) if why.contains(says)),
                "{explained:?}"
            );
            // Without retention asked for, nothing to say.
            assert_eq!(
                plan(Some(&found), &table(), wanted(Partition::Day, None)),
                Plan::Nothing
            );
        }
        assert_eq!(
            plan(None, &table(), wanted(Partition::Day, Some(1))),
            Plan::Nothing
        );
    }
}
