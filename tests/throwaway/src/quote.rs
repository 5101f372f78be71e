//! Quoting for the languages the harness writes in: `/bin/sh` words (the
//! `pg_ctl -o` string), libpq `key=value` values, URL path segments and SQL
//! identifiers.

/// Quotes a word for `/bin/sh` if needed.
pub(crate) fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Quotes a libpq key/value connection string value if needed.
pub(crate) fn conninfo_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        value.to_string()
    } else {
        conninfo_value_always_quoted(value)
    }
}

fn conninfo_value_always_quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
pub(crate) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Quotes an SQL identifier: `"name"` with `"` doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// psql treats a `-d` value containing `=` or starting with a URI prefix as a
/// connection string; pass such database names as `dbname='…'` instead.
pub(crate) fn psql_dbname_arg(dbname: &str) -> String {
    if dbname.contains('=')
        || dbname.starts_with("postgres://")
        || dbname.starts_with("postgresql://")
    {
        format!("dbname={}", conninfo_value_always_quoted(dbname))
    } else {
        dbname.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(shell_quote("a=b"), "a=b");
        assert_eq!(shell_quote("x='it''s'"), r#"'x='\''it'\'''\''s'\'''"#);
        assert_eq!(conninfo_value("db"), "db");
        assert_eq!(conninfo_value("a b'c"), r"'a b\'c'");
        assert_eq!(conninfo_value(""), "''");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
        assert_eq!(psql_dbname_arg("app"), "app");
        assert_eq!(psql_dbname_arg("a=b"), "dbname='a=b'");
    }
}
