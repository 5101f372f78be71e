//! PostgreSQL's binary COPY format, encoded directly: a batch becomes a few large
//! writes instead of a trip through the driver per row.
//!
//! Format (PostgreSQL documentation, "COPY", binary format): an 11-byte signature, a
//! 32-bit flags field and a 32-bit header-extension length; then per row a 16-bit field
//! count and, per field, a 32-bit length (-1 for NULL) and the value in the type's
//! binary form; then a 16-bit -1 as trailer. All integers are big-endian.

use chrono::{DateTime, TimeZone, Utc};

use crate::render::Row;

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// pglog's columns: timestamp, level, event, func, scope, data.
const FIELDS: i16 = 6;
/// JSONB's binary form starts with its format version.
pub(super) const JSONB_VERSION: u8 = 1;

pub(crate) fn header(out: &mut Vec<u8>) {
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0i32.to_be_bytes()); // no header extension
}

pub(crate) fn trailer(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i16).to_be_bytes());
}

/// Appends one row in the column order of [`Table::copy_sql`](crate::schema::Table::copy_sql);
/// `jsonb` when the `data` column is `jsonb` (its binary form has a version byte that
/// `json`'s, plain text, has not).
pub(crate) fn row(out: &mut Vec<u8>, row: &Row, jsonb: bool) {
    out.extend_from_slice(&FIELDS.to_be_bytes());
    field(out, |out| {
        out.extend_from_slice(&micros_since_2000(row.timestamp).to_be_bytes())
    });
    text(out, Some(row.level_word()));
    text(out, Some(&row.event));
    text(out, row.func.as_deref());
    text(out, row.scope.as_deref());
    field(out, |out| {
        if jsonb {
            out.push(JSONB_VERSION);
        }
        row.write_data(out);
    });
}

fn text(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => field(out, |out| out.extend_from_slice(value.as_bytes())),
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// Writes a length-prefixed field; the length is patched in once the value is written.
fn field(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out);
    // A field larger than 2 GiB cannot exist here: PostgreSQL caps values at 1 GB and
    // pglog's rows are built from in-memory strings.
    let len = i32::try_from(out.len() - at - 4).unwrap_or(i32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// `timestamptz`'s binary form: microseconds since 2000-01-01 00:00:00 UTC.
fn micros_since_2000(at: DateTime<Utc>) -> i64 {
    let epoch = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    (at - epoch).num_microseconds().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_trailer_are_postgres_signature() {
        let mut out = Vec::new();
        header(&mut out);
        trailer(&mut out);
        assert_eq!(out, b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0\xff\xff");
    }

    #[test]
    fn timestamps_count_microseconds_from_2000() {
        let at =
            Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap() + chrono::Duration::microseconds(5);
        assert_eq!(micros_since_2000(at), 1_000_005);
        let before = Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(micros_since_2000(before), -1_000_000);
    }

    #[test]
    fn a_row_has_six_length_prefixed_fields_and_nulls() {
        let record = log::Record::builder()
            .args(format_args!("hi"))
            .level(log::Level::Warn)
            .build();
        let at = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        let row = crate::render::render(&record, at);
        let mut out = Vec::new();
        super::row(&mut out, &row, true);
        let mut expected = vec![0, 6];
        expected.extend_from_slice(&8i32.to_be_bytes());
        expected.extend_from_slice(&0i64.to_be_bytes());
        expected.extend_from_slice(&7i32.to_be_bytes());
        expected.extend_from_slice(b"warning");
        expected.extend_from_slice(&2i32.to_be_bytes());
        expected.extend_from_slice(b"hi");
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(&out[..expected.len()], &expected[..]);
        let data_len =
            i32::from_be_bytes(out[expected.len()..expected.len() + 4].try_into().unwrap())
                as usize;
        let data = &out[expected.len() + 4..];
        assert_eq!(data.len(), data_len);
        assert_eq!(data[0], JSONB_VERSION);
        let json: serde_json::Value = serde_json::from_slice(&data[1..]).unwrap();
        assert_eq!(json["pid"], std::process::id());
        // A `json` column takes the text alone.
        let mut plain = Vec::new();
        super::row(&mut plain, &row, false);
        assert_eq!(plain.len(), out.len() - 1);
        assert_eq!(&plain[plain.len() - data_len + 1..], &data[1..]);
    }
}
