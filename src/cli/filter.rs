//! The filters `tail` and `stats` share, and the SQL they become: every value a
//! parameter, every condition one an index serves (the level and timestamp btrees, the
//! GIN index on `data` for `--where` and `--pid`).

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::types::{ToSql, Type};

use super::Param;

/// Level words as writers of a shared table store them, by severity: stogger's five,
/// the other structlog method names stogger stores as levels (`critical`, `alert`;
/// `exception` becomes `error` there but other writers keep it), and the spellings
/// other writers use.
const LEVELS: &[(&str, u8)] = &[
    ("trace", 0),
    ("debug", 1),
    ("info", 2),
    ("notice", 2),
    ("warn", 3),
    ("warning", 3),
    ("error", 4),
    ("exception", 4),
    ("critical", 5),
    ("fatal", 5),
    ("alert", 6),
];

/// The severity of a stored level word (case ignored); an unknown word ranks as `info`.
pub(crate) fn severity(word: &str) -> u8 {
    let word = word.to_ascii_lowercase();
    LEVELS
        .iter()
        .find(|(w, _)| *w == word)
        .map_or(2, |(_, rank)| *rank)
}

/// The level words at `level` or more severe, for `level = ANY(...)`.
pub(crate) fn at_least(level: &str) -> Result<Vec<String>, String> {
    let wanted = level.to_ascii_lowercase();
    let Some((_, rank)) = LEVELS.iter().find(|(w, _)| *w == wanted) else {
        return Err(format!(
            "unknown level `{level}`; use trace, debug, info, warn (or warning), error, or \
             critical"
        ));
    };
    Ok(LEVELS
        .iter()
        .filter(|(_, r)| r >= rank)
        .map(|(w, _)| (*w).to_owned())
        .collect())
}

/// A point in time: RFC 3339 (`2026-11-22T08:00:00Z`), a date (midnight UTC), or a time
/// ago: a whole number and `s`, `m`, `h`, `d` or `w` (`10m`, `2h`, `3d`).
pub(crate) fn point_in_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Some(ago) = duration(text) {
        return Ok(now - ago);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(format!(
        "`{text}` is not a time: use a time ago (10m, 2h, 3d, 1w), a date (2026-11-22) or \
         RFC 3339 (2026-11-22T08:00:00Z)"
    ))
}

/// `10m`, `2h`...: a whole number and a unit of `s`, `m`, `h`, `d` or `w`.
pub(crate) fn duration(text: &str) -> Option<chrono::Duration> {
    let unit = text.chars().last()?;
    let number: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    if number < 0 {
        return None;
    }
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    // Beyond a thousand years is a typo, and would overflow the arithmetic.
    (number <= 365_000 * 86_400 / seconds).then(|| chrono::Duration::seconds(number * seconds))
}

/// The options that choose events.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct FilterArgs {
    /// This level and more severe: trace, debug, info, warn, error, critical
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<String>,
    /// Events from this time on: 10m, 2h, 3d, a date, or RFC 3339
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Events before this time (same forms as --since)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Events whose message contains TEXT
    #[arg(long, value_name = "TEXT")]
    pub event: Option<String>,
    /// Events of this scope
    #[arg(long)]
    pub scope: Option<String>,
    /// Events of this function
    #[arg(long)]
    pub func: Option<String>,
    /// Events of this process
    #[arg(long)]
    pub pid: Option<i64>,
    /// Events whose data has KEY equal to VALUE (42 matches the number and the string);
    /// repeat to require several
    #[arg(long = "where", value_name = "KEY=VALUE")]
    pub wheres: Vec<String>,
    /// Events whose message matches this regular expression (PostgreSQL's syntax; (?i)
    /// ignores case)
    #[arg(long, value_name = "REGEX")]
    pub grep: Option<String>,
}

/// The filters, checked and ready to become SQL.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Filters {
    pub levels: Option<Vec<String>>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub event: Option<String>,
    pub scope: Option<String>,
    pub func: Option<String>,
    /// Each `--where` and `--pid`: the `data` objects any of which `data` must contain.
    pub contains: Vec<Vec<String>>,
    pub grep: Option<String>,
}

impl FilterArgs {
    pub fn filters(&self, now: DateTime<Utc>) -> Result<Filters, String> {
        let mut contains = Vec::new();
        if let Some(pid) = self.pid {
            contains.push(vec![serde_json::json!({ "pid": pid }).to_string()]);
        }
        for pair in &self.wheres {
            contains.push(key_value(pair)?);
        }
        let filters = Filters {
            levels: self.level.as_deref().map(at_least).transpose()?,
            since: self
                .since
                .as_deref()
                .map(|t| point_in_time(t, now))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|t| point_in_time(t, now))
                .transpose()?,
            event: self.event.clone(),
            scope: self.scope.clone(),
            func: self.func.clone(),
            contains,
            grep: self.grep.clone(),
        };
        if let (Some(since), Some(until)) = (filters.since, filters.until) {
            if since >= until {
                return Err("--since is not before --until: no event can match".to_owned());
            }
        }
        Ok(filters)
    }
}

/// `KEY=VALUE` as the objects `data` may contain: the value as a string, and as the
/// number, boolean or null it spells.
fn key_value(pair: &str) -> Result<Vec<String>, String> {
    let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
        return Err(format!("--where `{pair}`: use KEY=VALUE, e.g. user_id=42"));
    };
    let mut objects = vec![serde_json::json!({ key: value }).to_string()];
    if let Ok(typed) = serde_json::from_str::<serde_json::Value>(value) {
        if typed.is_number() || typed.is_boolean() || typed.is_null() {
            objects.push(serde_json::json!({ key: typed }).to_string());
        }
    }
    Ok(objects)
}

/// A value set, as a query parameter.
fn opt<T: ToSql + Sync>(value: &Option<T>) -> Option<&(dyn ToSql + Sync)> {
    value.as_ref().map(|v| v as &(dyn ToSql + Sync))
}

impl Filters {
    /// The conditions, joined with AND (`TRUE` when there is none), with parameters
    /// numbered from `$first`, and the parameters.
    pub fn sql<'a>(&'a self, first: usize) -> (String, Vec<Param<'a>>) {
        let mut conditions = Vec::new();
        let mut params: Vec<Param<'a>> = Vec::new();
        {
            // A parameter's placeholder, `$n`, once the value is among the parameters.
            let mut bind = |value: &'a (dyn ToSql + Sync), ty: Type| {
                params.push((value, ty));
                format!("${}", first + params.len() - 1)
            };
            let optional: [(Option<&'a (dyn ToSql + Sync)>, &str, Type); 6] = [
                (opt(&self.levels), "level = ANY($)", Type::TEXT_ARRAY),
                (opt(&self.since), "timestamp >= $", Type::TIMESTAMPTZ),
                (opt(&self.until), "timestamp < $", Type::TIMESTAMPTZ),
                (opt(&self.event), "strpos(event, $) > 0", Type::TEXT),
                (opt(&self.scope), "scope = $", Type::TEXT),
                (opt(&self.func), "func = $", Type::TEXT),
            ];
            for (value, condition, ty) in optional {
                if let Some(value) = value {
                    conditions.push(condition.replace('$', &bind(value, ty)));
                }
            }
            for any in &self.contains {
                // `::jsonb` is no cast on a jsonb column (its GIN index serves), and reads
                // a json one.
                let alternatives: Vec<String> = any
                    .iter()
                    .map(|object| format!("data::jsonb @> {}::jsonb", bind(object, Type::TEXT)))
                    .collect();
                conditions.push(format!("({})", alternatives.join(" OR ")));
            }
            if let Some(grep) = &self.grep {
                conditions.push(format!("event ~ {}", bind(grep, Type::TEXT)));
            }
        }
        if conditions.is_empty() {
            conditions.push("TRUE".to_owned());
        }
        (conditions.join(" AND "), params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_level_selects_itself_and_every_more_severe_word() {
        assert_eq!(
            at_least("error").unwrap(),
            ["error", "exception", "critical", "fatal", "alert"]
        );
        assert_eq!(at_least("WARN").unwrap(), at_least("warning").unwrap());
        assert!(at_least("warning")
            .unwrap()
            .contains(&"critical".to_owned()));
        assert_eq!(at_least("trace").unwrap().len(), LEVELS.len());
        let err = at_least("loud").unwrap_err();
        assert!(err.contains("unknown level `loud`"), "{err}");
        assert_eq!(severity("CRITICAL"), 5);
        assert!(
            severity("alert") > severity("critical"),
            "stogger's `alert`"
        );
        assert_eq!(severity("exception"), severity("error"));
        assert_eq!(severity("something else"), severity("info"));
    }

    #[test]
    fn times_are_relative_dates_or_rfc_3339() {
        let at = |t: &str| point_in_time(t, now()).unwrap().to_rfc3339();
        assert_eq!(at("10m"), "2026-11-22T11:50:00+00:00");
        assert_eq!(at("2h"), "2026-11-22T10:00:00+00:00");
        assert_eq!(at("3d"), "2026-11-19T12:00:00+00:00");
        assert_eq!(at("1w"), "2026-11-15T12:00:00+00:00");
        assert_eq!(at("0s"), "2026-11-22T12:00:00+00:00");
        assert_eq!(at("2026-11-01"), "2026-11-01T00:00:00+00:00");
        assert_eq!(at("2026-11-01T08:00:00+02:00"), "2026-11-01T06:00:00+00:00");
        for bad in [
            "",
            "m",
            "-5m",
            "5y",
            "yesterday",
            "99999999999d",
            "2026-13-01",
        ] {
            let err = point_in_time(bad, now()).unwrap_err();
            assert!(err.contains("is not a time"), "{bad}: {err}");
        }
    }

    #[test]
    fn filters_become_parameters_never_sql_text() {
        let args = FilterArgs {
            level: Some("warn".into()),
            since: Some("1h".into()),
            event: Some("'; DROP TABLE x; --".into()),
            pid: Some(42),
            wheres: vec!["user_id=42".into(), "name=o'hara".into()],
            grep: Some("^user".into()),
            ..FilterArgs::default()
        };
        let filters = args.filters(now()).unwrap();
        let (sql, params) = filters.sql(2);
        assert_eq!(
            sql,
            "level = ANY($2) AND timestamp >= $3 AND strpos(event, $4) > 0 AND \
             (data::jsonb @> $5::jsonb) AND (data::jsonb @> $6::jsonb OR data::jsonb @> $7::jsonb) \
             AND (data::jsonb @> $8::jsonb) AND event ~ $9"
        );
        assert_eq!(params.len(), 8);
        assert!(!sql.contains("DROP"));
        assert_eq!(
            filters.contains,
            [
                vec![r#"{"pid":42}"#.to_owned()],
                vec![
                    r#"{"user_id":"42"}"#.to_owned(),
                    r#"{"user_id":42}"#.to_owned()
                ],
                vec![r#"{"name":"o'hara"}"#.to_owned()],
            ]
        );
        assert_eq!(Filters::default().sql(1).0, "TRUE");
    }

    #[test]
    fn where_values_spell_numbers_booleans_and_null_too() {
        assert_eq!(key_value("ok=true").unwrap().len(), 2);
        assert_eq!(key_value("v=null").unwrap().len(), 2);
        assert_eq!(key_value("v=1.5e3").unwrap().len(), 2);
        assert_eq!(key_value("v=abc").unwrap().len(), 1);
        assert_eq!(key_value("v=").unwrap(), [r#"{"v":""}"#]);
        assert_eq!(key_value("a=b=c").unwrap(), [r#"{"a":"b=c"}"#]);
        for bad in ["novalue", "=42"] {
            assert!(key_value(bad).unwrap_err().contains("KEY=VALUE"), "{bad}");
        }
    }

    #[test]
    fn an_empty_window_is_refused() {
        let args = FilterArgs {
            since: Some("1h".into()),
            until: Some("2h".into()),
            ..FilterArgs::default()
        };
        assert!(args.filters(now()).unwrap_err().contains("not before"));
    }
}
