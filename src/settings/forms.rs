//! How a setting's value is written outside code, and which values are allowed.
//!
//! A setting's *form* reads its value from a configuration file (through serde, so that
//! a bad value is reported at its line and key) and from an environment variable's text,
//! and checks a value given by code against the same range. Ranges live in the form's
//! type (`Count<u32, 1, 1_000>`), so the declaration in [`super`] is the only place that
//! states them: values beyond them would exhaust memory (a queue or batch of a billion
//! events), overflow time arithmetic (`Duration::MAX`) or make nothing work (a statement
//! timeout of a microsecond).

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::filters;
use crate::dsn::Dsn;
use crate::{Overflow, Partition};

/// How a setting is written in a file or a variable, and what values it allows.
pub(crate) trait Form: for<'de> Deserialize<'de> {
    /// The value code sets and the logger uses.
    type Value;

    /// Reads an environment variable's text; the error says what is accepted.
    fn parse(text: &str) -> Result<Self, String>;

    fn into_value(self) -> Self::Value;

    /// Whether a value set by code is allowed (file and environment values were checked
    /// when read).
    fn check(_value: &Self::Value) -> Result<(), String> {
        Ok(())
    }
}

/// `true`/`false` in a file; `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`, in
/// any case, in a variable.
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct Flag(bool);

impl Form for Flag {
    type Value = bool;

    fn parse(text: &str) -> Result<Flag, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Flag(true)),
            "0" | "false" | "no" | "off" => Ok(Flag(false)),
            _ => Err("use 1, true, yes or on, or 0, false, no or off".to_owned()),
        }
    }

    fn into_value(self) -> bool {
        self.0
    }
}

/// Text taken as it is (a table name, checked when the logger is built).
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct Text(String);

impl Form for Text {
    type Value = String;

    fn parse(text: &str) -> Result<Text, String> {
        Ok(Text(text.to_owned()))
    }

    fn into_value(self) -> String {
        self.0
    }
}

/// A DSN; checked, with its password, when the logger is built.
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct DsnText(Dsn);

impl Form for DsnText {
    type Value = Dsn;

    fn parse(text: &str) -> Result<DsnText, String> {
        Ok(DsnText(Dsn::from(text)))
    }

    fn into_value(self) -> Dsn {
        self.0
    }
}

/// A file's path.
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct Path(PathBuf);

impl Form for Path {
    type Value = PathBuf;

    fn parse(text: &str) -> Result<Path, String> {
        Ok(Path(PathBuf::from(text)))
    }

    fn into_value(self) -> PathBuf {
        self.0
    }
}

/// Deserializes a string and hands it to `parse`, so that file and variable accept the
/// same words and say the same when they do not.
fn from_word<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(de::Error::custom)
}

/// A level: `log`'s names in any case, and stogger's `warning`.
pub(crate) struct Level(LevelFilter);

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Level, D::Error> {
        from_word(d, Level::parse)
    }
}

impl Form for Level {
    type Value = LevelFilter;

    fn parse(text: &str) -> Result<Level, String> {
        filters::parse_level(text).map(Level)
    }

    fn into_value(self) -> LevelFilter {
        self.0
    }
}

/// Per-module directives in `RUST_LOG` syntax, checked by the parser that applies them.
pub(crate) struct Directives(String);

impl<'de> Deserialize<'de> for Directives {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Directives, D::Error> {
        from_word(d, Directives::parse)
    }
}

impl Form for Directives {
    type Value = String;

    fn parse(text: &str) -> Result<Directives, String> {
        filters::check(text).map(|()| Directives(text.to_owned()))
    }

    fn into_value(self) -> String {
        self.0
    }

    fn check(value: &String) -> Result<(), String> {
        filters::check(value)
    }
}

/// `block` (waiting as long as `overflow_wait` says) or `drop`.
pub(crate) struct Policy(Overflow);

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Policy, D::Error> {
        from_word(d, Policy::parse)
    }
}

impl Form for Policy {
    type Value = Overflow;

    fn parse(text: &str) -> Result<Policy, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "block" => Ok(Policy(Overflow::default())),
            "drop" => Ok(Policy(Overflow::Drop)),
            _ => Err(format!(
                "`{}` is not an overflow policy; use block or drop",
                text.trim()
            )),
        }
    }

    fn into_value(self) -> Overflow {
        self.0
    }
}

/// `none`, `day`, `week` or `month`.
pub(crate) struct Partitioning(Partition);

impl<'de> Deserialize<'de> for Partitioning {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Partitioning, D::Error> {
        from_word(d, Partitioning::parse)
    }
}

impl Form for Partitioning {
    type Value = Partition;

    fn parse(text: &str) -> Result<Partitioning, String> {
        Partition::from_word(text).map(Partitioning).ok_or_else(|| {
            format!(
                "`{}` is not a partition period; use none, day, week or month",
                text.trim()
            )
        })
    }

    fn into_value(self) -> Partition {
        self.0
    }
}

pub(crate) const HOUR: u64 = 3_600_000;
pub(crate) const DAY: u64 = 24 * HOUR;
pub(crate) const KIB: u64 = 1 << 10;
pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;

/// What a bounded whole number counts, for messages.
pub(crate) trait Unit {
    const SUFFIX: &'static str;
}

pub(crate) struct Things;
pub(crate) struct Bytes;
pub(crate) struct Days;

impl Unit for Things {
    const SUFFIX: &'static str = "";
}

impl Unit for Bytes {
    const SUFFIX: &'static str = " bytes";
}

impl Unit for Days {
    const SUFFIX: &'static str = " days";
}

/// `MIN to MAX` with the unit, for messages.
fn range_words(min: u64, max: u64, suffix: &str) -> String {
    format!("{min} to {max}{suffix}")
}

/// `value` if within `min..=max`, else why not.
fn within(value: u64, min: u64, max: u64, suffix: &str) -> Result<u64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{value} is out of range; use {}",
            range_words(min, max, suffix)
        ))
    }
}

/// Reads a whole number in a range from a file, whatever integer type the format uses.
struct Whole {
    min: u64,
    max: u64,
    suffix: &'static str,
}

impl<'de> Visitor<'de> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a whole number from {}",
            range_words(self.min, self.max, self.suffix)
        )
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        within(value, self.min, self.max, self.suffix).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(value), &self)),
        }
    }
}

/// Reads a whole number in a range from a variable's text.
fn parse_whole(text: &str, min: u64, max: u64, suffix: &str) -> Result<u64, String> {
    let value: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number, {}", range_words(min, max, suffix)))?;
    within(value, min, max, suffix)
}

/// A whole number of `U` (events, sessions, bytes) from `MIN` to `MAX`, held as a `T`.
pub(crate) struct Count<T, const MIN: u64, const MAX: u64, U = Things>(T, PhantomData<U>);

/// A number of bytes from `MIN` to `MAX`.
pub(crate) type ByteCount<const MIN: u64, const MAX: u64> = Count<usize, MIN, MAX, Bytes>;

impl<'de, T: TryFrom<u64>, const MIN: u64, const MAX: u64, U: Unit> Deserialize<'de>
    for Count<T, MIN, MAX, U>
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = d.deserialize_u64(Whole {
            min: MIN,
            max: MAX,
            suffix: U::SUFFIX,
        })?;
        Self::from_u64(value).map_err(de::Error::custom)
    }
}

impl<T: TryFrom<u64>, const MIN: u64, const MAX: u64, U> Count<T, MIN, MAX, U> {
    fn from_u64(value: u64) -> Result<Self, String> {
        T::try_from(value)
            .map(|v| Count(v, PhantomData))
            .map_err(|_| format!("{value} does not fit this platform"))
    }
}

impl<T, const MIN: u64, const MAX: u64, U: Unit> Form for Count<T, MIN, MAX, U>
where
    T: TryFrom<u64> + TryInto<u64> + Copy,
{
    type Value = T;

    fn parse(text: &str) -> Result<Self, String> {
        Self::from_u64(parse_whole(text, MIN, MAX, U::SUFFIX)?)
    }

    fn into_value(self) -> T {
        self.0
    }

    fn check(value: &T) -> Result<(), String> {
        let value = (*value).try_into().unwrap_or(u64::MAX);
        within(value, MIN, MAX, U::SUFFIX).map(drop)
    }
}

/// A duration from `MIN` to `MAX` milliseconds, written as whole milliseconds. A range
/// that starts at 0 takes durations below a millisecond from code (a flush timeout of a
/// nanosecond: nothing waits for the writer).
pub(crate) struct Millis<const MIN: u64, const MAX: u64>(Duration);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Millis<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ms = d.deserialize_u64(Whole {
            min: MIN,
            max: MAX,
            suffix: " ms",
        })?;
        Ok(Millis(Duration::from_millis(ms)))
    }
}

impl<const MIN: u64, const MAX: u64> Form for Millis<MIN, MAX> {
    type Value = Duration;

    fn parse(text: &str) -> Result<Self, String> {
        parse_whole(text, MIN, MAX, " ms").map(|ms| Millis(Duration::from_millis(ms)))
    }

    fn into_value(self) -> Duration {
        self.0
    }

    fn check(value: &Duration) -> Result<(), String> {
        if (Duration::from_millis(MIN)..=Duration::from_millis(MAX)).contains(value) {
            return Ok(());
        }
        let shown = if *value >= Duration::from_secs(u64::MAX / 2) {
            "an unbounded duration".to_owned()
        } else {
            format!("{value:?}")
        };
        Err(format!(
            "{shown} is out of range; use {}",
            range_words(MIN, MAX, " ms")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_boolean_spelling() {
        for yes in ["1", "true", "TRUE", "yes", "Yes", "on", "ON", " on "] {
            assert!(Flag::parse(yes).unwrap().into_value(), "{yes}");
        }
        for no in ["0", "false", "False", "no", "NO", "off", "Off"] {
            assert!(!Flag::parse(no).unwrap().into_value(), "{no}");
        }
        for bad in ["", "2", "y", "enabled", "truee"] {
            assert!(Flag::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn out_of_range_names_the_range() {
        type Capacity = Count<usize, 1, 10_000_000>;
        assert_eq!(
            Capacity::check(&1_000_000_000).unwrap_err(),
            "1000000000 is out of range; use 1 to 10000000"
        );
        assert_eq!(
            Capacity::parse("0").err().unwrap(),
            "0 is out of range; use 1 to 10000000"
        );
        assert!(Capacity::parse("ten").is_err());
        let err = Millis::<1, HOUR>::check(&Duration::MAX).unwrap_err();
        assert!(
            err.contains("an unbounded duration") && err.contains("1 to 3600000 ms"),
            "{err}"
        );
        assert!(Millis::<0, HOUR>::check(&Duration::from_nanos(1)).is_ok());
        assert!(Millis::<10, HOUR>::check(&Duration::from_millis(1)).is_err());
        assert_eq!(
            ByteCount::<KIB, GIB>::check(&1).unwrap_err(),
            "1 is out of range; use 1024 to 1073741824 bytes"
        );
    }

    #[test]
    fn a_partition_period_is_a_word() {
        let parse = |text| Partitioning::parse(text).map(Form::into_value);
        assert_eq!(parse("Day"), Ok(Partition::Day));
        assert_eq!(parse(" month "), Ok(Partition::Month));
        assert_eq!(parse("none"), Ok(Partition::None));
        assert_eq!(
            parse("hourly").unwrap_err(),
            "`hourly` is not a partition period; use none, day, week or month"
        );
    }

    #[test]
    fn a_policy_is_a_word() {
        assert_eq!(Policy::parse("Drop").unwrap().into_value(), Overflow::Drop);
        assert_eq!(
            Policy::parse("spill").err().unwrap(),
            "`spill` is not an overflow policy; use block or drop"
        );
    }
}
