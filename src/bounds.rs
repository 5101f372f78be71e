//! The allowed range of every numeric setting, in one table: values beyond it would
//! exhaust memory (a queue or batch of a billion events), overflow time arithmetic
//! (`Duration::MAX`), or make nothing work (a statement timeout of a microsecond).
//! Checked when a logger is built, whatever the source of the value, and when an
//! environment variable is read (so that the error names the variable).

use std::time::Duration;

use crate::Error;

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;
const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Count,
    Bytes,
    Millis,
}

/// One setting's range, inclusive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    pub unit: Unit,
}

pub(crate) const BOUNDS: &[Bound] = &[
    Bound {
        key: "pool_size",
        min: 1,
        max: 1_000,
        unit: Unit::Count,
    },
    Bound {
        key: "pool_wait",
        min: 1,
        max: HOUR,
        unit: Unit::Millis,
    },
    Bound {
        key: "connect_timeout",
        min: 10,
        max: HOUR,
        unit: Unit::Millis,
    },
    Bound {
        key: "statement_timeout",
        min: 10,
        max: HOUR,
        unit: Unit::Millis,
    },
    Bound {
        key: "idle_timeout",
        min: 1,
        max: DAY,
        unit: Unit::Millis,
    },
    Bound {
        key: "queue_capacity",
        min: 1,
        max: 10_000_000,
        unit: Unit::Count,
    },
    Bound {
        key: "queue_bytes",
        min: 1 << 10,
        max: 16 << 30,
        unit: Unit::Bytes,
    },
    Bound {
        key: "batch_size",
        min: 1,
        max: 100_000,
        unit: Unit::Count,
    },
    Bound {
        key: "flush_interval",
        min: 1,
        max: HOUR,
        unit: Unit::Millis,
    },
    Bound {
        key: "overflow_wait",
        min: 0,
        max: HOUR,
        unit: Unit::Millis,
    },
    // A flush timeout may be as short as a nanosecond: then nothing waits for the writer.
    Bound {
        key: "flush_timeout",
        min: 0,
        max: HOUR,
        unit: Unit::Millis,
    },
    Bound {
        key: "max_event_bytes",
        min: 1 << 10,
        max: 64 * MIB,
        unit: Unit::Bytes,
    },
];

fn bound(key: &str) -> &'static Bound {
    BOUNDS
        .iter()
        .find(|b| b.key == key)
        .unwrap_or_else(|| unreachable!("no bound for `{key}`"))
}

/// The range of `key`, in words.
pub(crate) fn range(key: &str) -> String {
    let b = bound(key);
    let unit = match b.unit {
        Unit::Count => "",
        Unit::Bytes => " bytes",
        Unit::Millis => " ms",
    };
    format!("{} to {}{unit}", b.min, b.max)
}

/// `value` (in the setting's unit) if it is within the range of `key`, else why not.
pub(crate) fn check_value(key: &str, value: u64) -> Result<u64, String> {
    let b = bound(key);
    if (b.min..=b.max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is out of range; use {}", range(key)))
    }
}

/// [`check_value`] as a configuration error naming `key`.
pub(crate) fn check(key: &'static str, value: u64) -> Result<(), Error> {
    check_value(key, value)
        .map(drop)
        .map_err(|why| Error::config(key, why))
}

/// A duration setting within the range of `key`, which is in milliseconds (a range that
/// starts at 0 takes durations below a millisecond too).
pub(crate) fn check_duration(key: &'static str, value: Duration) -> Result<(), Error> {
    let b = bound(key);
    let too_long = value > Duration::from_millis(b.max);
    let too_short = value < Duration::from_millis(b.min);
    if too_long || too_short {
        let shown = if value >= Duration::from_secs(u64::MAX / 2) {
            "an unbounded duration".to_owned()
        } else {
            format!("{value:?}")
        };
        return Err(Error::config(
            key,
            format!("{shown} is out of range; use {}", range(key)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_is_a_range() {
        for b in BOUNDS {
            assert!(b.min <= b.max, "{}", b.key);
        }
    }

    #[test]
    fn out_of_range_names_the_range() {
        assert_eq!(
            check("queue_capacity", 1_000_000_000)
                .unwrap_err()
                .to_string(),
            "invalid pglog setting `queue_capacity`: 1000000000 is out of range; use 1 to 10000000"
        );
        let err = check_duration("flush_interval", Duration::MAX)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("an unbounded duration") && err.contains("1 to 3600000 ms"),
            "{err}"
        );
        assert!(check_duration("flush_timeout", Duration::from_nanos(1)).is_ok());
        assert!(check_duration("statement_timeout", Duration::from_millis(1)).is_err());
    }
}
