//! Time partitions on paper: which period a day falls in, where periods start and end
//! (midnight UTC), and the partition names that carry their start.
//!
//! Pure: every function takes the day it works from, so tests need no clock. A name is
//! `<table>_p<YYYYMMDD>` for a day or a week (the Monday it starts), `<table>_p<YYYYMM>`
//! for a month: names that sort by time, and that a human reads as a date.

use chrono::{Datelike, Days, Months, NaiveDate};

/// How a table pglog creates is partitioned: not at all (stogger's plain table, the
/// default), or by ranges of `timestamp` of a day, a week (Monday to Sunday) or a
/// month, in UTC.
///
/// With a period set, a missing table is created partitioned by range on `timestamp`,
/// with the same columns and index names as the plain table, partitions for the current
/// and the next three periods, and a default partition (`<table>_default`) that takes
/// any row no partition covers. pglog creates partitions ahead and moves rows out of the
/// default partition in the background, at start and then hourly. An existing table is never
/// changed into another shape.
///
/// # Examples
///
/// ```no_run
/// let _guard = pglog::Builder::new()
///     .dsn("postgresql://app@db.internal/ops")
///     .partition(pglog::Partition::Day)
///     .retention(30) // keep at least 30 whole days; drop older partitions
///     .try_init()?;
/// # Ok::<(), pglog::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Partition {
    /// A plain table, as stogger creates it.
    #[default]
    None,
    /// One partition per UTC day.
    Day,
    /// One partition per week, Monday 00:00 UTC to the next Monday.
    Week,
    /// One partition per calendar month, in UTC.
    Month,
}

impl Partition {
    /// Its period, `None` for a plain table.
    pub(crate) fn span(self) -> Option<Span> {
        match self {
            Partition::None => None,
            Partition::Day => Some(Span::Day),
            Partition::Week => Some(Span::Week),
            Partition::Month => Some(Span::Month),
        }
    }

    /// `none`, `day`, `week` or `month`, in any case.
    pub(crate) fn from_word(word: &str) -> Option<Partition> {
        match word.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Partition::None),
            other => Span::from_word(other).map(Span::partition),
        }
    }
}

/// The length of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    Day,
    Week,
    Month,
}

impl Span {
    pub fn word(self) -> &'static str {
        match self {
            Span::Day => "day",
            Span::Week => "week",
            Span::Month => "month",
        }
    }

    pub fn from_word(word: &str) -> Option<Span> {
        [Span::Day, Span::Week, Span::Month]
            .into_iter()
            .find(|span| span.word() == word)
    }

    fn partition(self) -> Partition {
        match self {
            Span::Day => Partition::Day,
            Span::Week => Partition::Week,
            Span::Month => Partition::Month,
        }
    }

    /// The period that holds `day`.
    pub fn period_of(self, day: NaiveDate) -> Period {
        let start = match self {
            Span::Day => day,
            Span::Week => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
            Span::Month => day.with_day(1).unwrap_or(day),
        };
        Period { span: self, start }
    }

    /// The period a partition name's suffix (after `<table>_p`) stands for: digits only,
    /// a real date, and the start of a period. Anything else is not pglog's name.
    pub fn read_suffix(self, suffix: &str) -> Option<Period> {
        if !suffix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let start = match (self, suffix.len()) {
            (Span::Day | Span::Week, 8) => NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()?,
            (Span::Month, 6) => NaiveDate::parse_from_str(&format!("{suffix}01"), "%Y%m%d").ok()?,
            _ => return None,
        };
        let period = self.period_of(start);
        (period.start == start).then_some(period)
    }
}

/// One partition's range of time: from its start (included) to the next period's start
/// (excluded), at midnight UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Period {
    span: Span,
    start: NaiveDate,
}

impl Period {
    pub fn start(self) -> NaiveDate {
        self.start
    }

    /// The first day after it; `None` past the calendar's end (year 262143).
    pub fn end(self) -> Option<NaiveDate> {
        match self.span {
            Span::Day => self.start.checked_add_days(Days::new(1)),
            Span::Week => self.start.checked_add_days(Days::new(7)),
            Span::Month => self.start.checked_add_months(Months::new(1)),
        }
    }

    pub fn next(self) -> Option<Period> {
        self.end().map(|start| Period {
            span: self.span,
            start,
        })
    }

    /// The partition name's suffix, after `<table>_p`.
    pub fn suffix(self) -> String {
        match self.span {
            Span::Day | Span::Week => self.start.format("%Y%m%d").to_string(),
            Span::Month => self.start.format("%Y%m").to_string(),
        }
    }

    /// The period holding `today` and the `ahead` that follow it, as far as the
    /// calendar goes.
    pub fn upcoming(span: Span, today: NaiveDate, ahead: usize) -> Vec<Period> {
        std::iter::successors(Some(span.period_of(today)), |p| p.next())
            .take(ahead + 1)
            .collect()
    }
}

/// The longest partition suffix, `_p` and a day's date: what a partition's name adds to
/// the table's.
pub(crate) const LONGEST_SUFFIX: &str = "_p20261122";

/// Midnight UTC of `day` as an SQL `timestamptz` literal. Made from a date, never from
/// input, so it needs no quoting beyond its own.
pub(crate) fn literal(day: NaiveDate) -> String {
    format!("'{} 00:00:00+00'", day.format("%Y-%m-%d"))
}

/// The first day retention keeps: `days` whole days before `today` (today itself,
/// partly over, is kept too). `None` when that is before the calendar starts.
pub(crate) fn first_kept(today: NaiveDate, days: u32) -> Option<NaiveDate> {
    today.checked_sub_days(Days::new(u64::from(days)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `YYYY-MM-DD` as a date, for tests.
    pub(crate) fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn periods_start_at_the_day_the_monday_or_the_first() {
        let sunday = day("2026-11-22");
        assert_eq!(Span::Day.period_of(sunday).start(), sunday);
        assert_eq!(Span::Week.period_of(sunday).start(), day("2026-11-16"));
        assert_eq!(
            Span::Week.period_of(day("2026-11-16")).start(),
            day("2026-11-16")
        );
        assert_eq!(Span::Month.period_of(sunday).start(), day("2026-11-01"));
        assert_eq!(Span::Month.period_of(sunday).end(), Some(day("2026-12-01")));
        assert_eq!(
            Span::Month.period_of(day("2026-12-31")).end(),
            Some(day("2027-01-01"))
        );
        assert_eq!(Span::Week.period_of(sunday).end(), Some(day("2026-11-23")));
    }

    #[test]
    fn upcoming_periods_follow_each_other() {
        let got: Vec<String> = Period::upcoming(Span::Month, day("2026-11-22"), 3)
            .into_iter()
            .map(Period::suffix)
            .collect();
        assert_eq!(got, ["202611", "202612", "202701", "202702"]);
        let days = Period::upcoming(Span::Day, day("2028-02-28"), 2);
        let got: Vec<String> = days.into_iter().map(Period::suffix).collect();
        assert_eq!(got, ["20280228", "20280229", "20280301"]);
        // The calendar's end stops the list instead of wrapping or panicking.
        assert_eq!(Period::upcoming(Span::Day, NaiveDate::MAX, 3).len(), 1);
    }

    #[test]
    fn suffixes_read_back_only_when_they_are_pglogs() {
        for span in [Span::Day, Span::Week, Span::Month] {
            for period in Period::upcoming(span, day("2026-11-22"), 5) {
                assert_eq!(span.read_suffix(&period.suffix()), Some(period));
            }
        }
        // Not a period start, not a date, not digits, not the right length.
        assert_eq!(Span::Week.read_suffix("20261122"), None);
        assert_eq!(Span::Day.read_suffix("20261131"), None);
        assert_eq!(Span::Day.read_suffix("2026112a"), None);
        assert_eq!(Span::Day.read_suffix("+2026112"), None);
        assert_eq!(Span::Month.read_suffix("20261101"), None);
        assert_eq!(Span::Day.read_suffix("202611"), None);
        assert_eq!(Span::Day.read_suffix(""), None);
    }

    #[test]
    fn the_longest_suffix_is_a_days() {
        let longest = Period::upcoming(Span::Day, day("2026-11-22"), 0)[0].suffix();
        assert_eq!(format!("_p{longest}").len(), LONGEST_SUFFIX.len());
    }

    #[test]
    fn words_and_literals() {
        assert_eq!(Partition::from_word(" Week "), Some(Partition::Week));
        assert_eq!(Partition::from_word("none"), Some(Partition::None));
        assert_eq!(Partition::from_word("hour"), None);
        assert_eq!(Partition::Month.span().map(Span::word), Some("month"));
        assert_eq!(Partition::None.span(), None);
        assert_eq!(literal(day("2026-01-02")), "'2026-01-02 00:00:00+00'");
    }

    #[test]
    fn retention_keeps_whole_days_before_today() {
        assert_eq!(first_kept(day("2026-11-22"), 7), Some(day("2026-11-15")));
        assert_eq!(first_kept(NaiveDate::MIN, 1), None);
    }
}
