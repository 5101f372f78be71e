//! A DSN as libpq reads it, in either form: a `postgresql://` URL or `key=value` pairs,
//! both turned into one list of libpq parameters. In that form a service file, libpq's
//! environment variables and pglog's defaults can fill what the DSN leaves out, and pglog
//! can take the parameters it handles itself (TLS verification, client certificates, the
//! password file, services) before the driver, which refuses them, parses the rest.

use crate::Error;

/// libpq parameters, in the order given; a key appears at most once. Each remembers
/// where it came from (`dsn`, `service`, or a variable's name), for messages.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Params(Vec<Param>);

#[derive(Clone, PartialEq, Eq)]
struct Param {
    key: String,
    value: String,
    from: &'static str,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets (`password`, `sslpassword`): keys only.
        f.debug_list()
            .entries(self.0.iter().map(|p| &p.key))
            .finish()
    }
}

impl Params {
    /// Reads a DSN in either form.
    ///
    /// # Errors
    ///
    /// A malformed DSN, named by what is wrong; the message never repeats the DSN.
    pub fn parse(dsn: &str) -> Result<Params, Error> {
        let pairs = if is_url(dsn) {
            url_params(dsn)?
        } else {
            key_values(dsn).ok_or_else(|| {
                malformed("a `key=value` pair is incomplete or a quote is unterminated")
            })?
        };
        let mut params = Params::default();
        for (key, value) in pairs {
            // libpq: a later setting of the same key wins.
            match params.0.iter_mut().find(|p| p.key == key) {
                Some(param) => param.value = value,
                None => params.0.push(Param {
                    key,
                    value,
                    from: "dsn",
                }),
            }
        }
        Ok(params)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).map(|p| p.value.as_str())
    }

    pub fn has(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// Where `key` came from: `dsn`, `service` or a variable's name.
    pub fn origin(&self, key: &str) -> &'static str {
        self.find(key).map_or("dsn", |p| p.from)
    }

    fn find(&self, key: &str) -> Option<&Param> {
        self.0.iter().find(|p| p.key == key)
    }

    /// Sets `key` from `from` unless it is set already.
    pub fn fill(&mut self, key: &str, value: String, from: &'static str) {
        if !self.has(key) {
            self.0.push(Param {
                key: key.to_owned(),
                value,
                from,
            });
        }
    }

    /// Takes `key` out, with where it came from.
    pub fn take(&mut self, key: &str) -> Option<(String, &'static str)> {
        let at = self.0.iter().position(|p| p.key == key)?;
        let param = self.0.remove(at);
        Some((param.value, param.from))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|p| (p.key.as_str(), p.value.as_str()))
    }

    /// The driver's configuration from these parameters, all of which it must know.
    ///
    /// # Errors
    ///
    /// An unknown key or a value the driver refuses, named by its key only.
    pub fn to_driver(&self) -> Result<tokio_postgres::Config, Error> {
        let text = self
            .0
            .iter()
            .map(|p| format!("{}={}", p.key, quote_value(&p.value)))
            .collect::<Vec<_>>()
            .join(" ");
        text.parse::<tokio_postgres::Config>().map_err(|e| {
            let chain = crate::error::chain(&e);
            let cause = chain
                .strip_prefix("invalid connection string: ")
                .unwrap_or(&chain);
            // The driver names the key in backquotes; say where that key came from.
            let key = cause.split('`').nth(1).unwrap_or_default();
            match self.origin(key) {
                "dsn" => malformed(cause),
                from => Error::config(from, format!("{cause} (from {from})")),
            }
        })
    }
}

/// The setting a message about `key` names: the variable (or `service`) its value came
/// from, else the DSN parameter itself.
pub(crate) fn named_by(key: &'static str, from: &'static str) -> &'static str {
    if from == "dsn" {
        key
    } else {
        from
    }
}

fn malformed(cause: &str) -> Error {
    Error::config(
        "dsn",
        format!(
            "cannot parse the DSN ({cause}); expected postgresql://user:password@host:port/dbname \
             or key=value pairs such as `host=/var/run/postgresql dbname=app`"
        ),
    )
}

pub(crate) fn is_url(dsn: &str) -> bool {
    dsn.starts_with("postgresql://") || dsn.starts_with("postgres://")
}

/// libpq's URL form: `postgresql://[user[:password]@][host[:port][,...]][/dbname][?k=v&...]`,
/// every part percent-decoded; hosts and their ports become `host` and `port` lists.
fn url_params(dsn: &str) -> Result<Vec<(String, String)>, Error> {
    let rest = dsn.split_once("://").map_or(dsn, |(_, rest)| rest);
    let mut pairs = Vec::new();
    // As libpq: the user part is what comes before an `@` that precedes any `/`; it may
    // hold a `?` or `#` (an `@` in a password must be encoded).
    let rest = match rest.find(['@', '/']) {
        Some(at) if rest.as_bytes()[at] == b'@' => {
            let userinfo = &rest[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".to_owned(), decode(user, "user name")?));
            }
            if let Some(password) = password {
                pairs.push(("password".to_owned(), decode(password, "password")?));
            }
            &rest[at + 1..]
        }
        _ => rest,
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (hosts, dbname) = rest.split_once('/').unwrap_or((rest, ""));
    if !hosts.is_empty() {
        let (mut names, mut ports) = (Vec::new(), Vec::new());
        for spec in hosts.split(',') {
            let (name, port) = split_host_port(spec)?;
            names.push(decode(name, "host")?);
            ports.push(port.to_owned());
        }
        // `postgresql://:5433/db`: a port without a host leaves the host to PGHOST or the
        // default socket, as in libpq.
        if names.iter().any(|n| !n.is_empty()) {
            pairs.push(("host".to_owned(), names.join(",")));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".to_owned(), ports.join(",")));
        }
    }
    if !dbname.is_empty() {
        pairs.push(("dbname".to_owned(), decode(dbname, "database name")?));
    }
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| malformed("a URL parameter has no `=`"))?;
        let key = decode(key, "parameter name")?;
        let value = decode(value, "parameter value")?;
        // libpq's compatibility with JDBC URLs.
        if key == "ssl" && value == "true" {
            pairs.push(("sslmode".to_owned(), "require".to_owned()));
        } else {
            pairs.push((key, value));
        }
    }
    Ok(pairs)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(spec: &str) -> Result<(&str, &str), Error> {
    if let Some(v6) = spec.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| malformed("an IPv6 address lacks its `]`"))?;
        return match after {
            "" => Ok((addr, "")),
            _ => after
                .strip_prefix(':')
                .map(|port| (addr, port))
                .ok_or_else(|| malformed("unexpected text after an IPv6 address")),
        };
    }
    Ok(spec.split_once(':').unwrap_or((spec, "")))
}

/// Percent-decoding; `what` names the part for the error (never its text).
fn decode(text: &str, what: &str) -> Result<String, Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| malformed(&format!("invalid percent-encoding in the {what}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| malformed(&format!("the {what} is not UTF-8")))
}

/// Everything but RFC 3986's unreserved characters, as `%XX` per UTF-8 byte.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub(crate) fn quote_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

/// The pairs of a libpq `key=value` string, values unquoted and unescaped, by the
/// grammar the driver parses; `None` when it is malformed.
pub(crate) fn key_values(dsn: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = dsn.chars().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        if chars.peek().is_none() {
            return Some(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip_space(&mut chars);
        if key.is_empty() || chars.next() != Some('=') {
            return None;
        }
        skip_space(&mut chars);
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\'' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            // An empty value (`password=` at the end) is empty, as libpq reads it.
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(dsn: &str) -> Vec<(String, String)> {
        Params::parse(dsn)
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn urls_become_libpq_parameters() {
        assert_eq!(
            pairs("postgresql://app:p%40ss@db.internal:6432/ops?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"),
            p(&[
                ("user", "app"),
                ("password", "p@ss"),
                ("host", "db.internal"),
                ("port", "6432"),
                ("dbname", "ops"),
                ("sslmode", "verify-full"),
                ("sslrootcert", "/etc/ca.pem"),
            ])
        );
        assert_eq!(
            pairs("postgres://u@a:5000,[::1]:5001,b/d"),
            p(&[
                ("user", "u"),
                ("host", "a,::1,b"),
                ("port", "5000,5001,"),
                ("dbname", "d")
            ])
        );
        // stogger's socket form: an empty password, no host.
        assert_eq!(
            pairs("postgresql://app:@/ops?host=/var/run/postgresql"),
            p(&[
                ("user", "app"),
                ("password", ""),
                ("dbname", "ops"),
                ("host", "/var/run/postgresql")
            ])
        );
        assert_eq!(
            pairs("postgresql://%2Frun%2Fpg/d?ssl=true"),
            p(&[("host", "/run/pg"), ("dbname", "d"), ("sslmode", "require")])
        );
        assert_eq!(pairs("postgresql://"), p(&[]));
        // libpq's user part may hold `?` and `#`; a port may come without a host.
        assert_eq!(
            pairs("postgresql://qm:1234?dor=3@h/d"),
            p(&[
                ("user", "qm"),
                ("password", "1234?dor=3"),
                ("host", "h"),
                ("dbname", "d")
            ])
        );
        assert_eq!(
            pairs("postgresql://:5433/d"),
            p(&[("port", "5433"), ("dbname", "d")])
        );
    }

    #[test]
    fn a_later_key_wins_in_both_forms() {
        assert_eq!(pairs("a=1 b=2 a=3"), p(&[("a", "3"), ("b", "2")]));
        assert_eq!(pairs("postgresql:///d?dbname=e"), p(&[("dbname", "e")]));
    }

    #[test]
    fn malformed_urls_say_what_without_the_text() {
        for dsn in [
            "postgresql://u:p%zz@h/d",
            "postgresql://h/d?sslmode",
            "postgresql://[::1/d",
            "postgresql://u:%FF@h/d",
        ] {
            let msg = Params::parse(dsn).unwrap_err().to_string();
            assert!(msg.starts_with("invalid pglog setting `dsn`"), "{msg}");
            assert!(!msg.contains("zz") && !msg.contains("%FF"), "{msg}");
        }
    }

    #[test]
    fn debug_shows_keys_only() {
        let params = Params::parse("user=u password=hunter2").unwrap();
        assert_eq!(format!("{params:?}"), r#"["user", "password"]"#);
    }

    #[test]
    fn to_driver_round_trips_awkward_values() {
        let mut params = Params::default();
        params.fill("password", r#"p@ss:w/rd %2F?#&'"x\"#.to_owned(), "dsn");
        params.fill("host", "/run/pg,db".to_owned(), "PGHOST");
        let config = params.to_driver().unwrap();
        assert_eq!(config.get_password(), Some(&br#"p@ss:w/rd %2F?#&'"x\"#[..]));
        assert_eq!(config.get_hosts().len(), 2);
        params.fill("sslrootcert", "x".to_owned(), "dsn");
        let msg = params.to_driver().unwrap_err().to_string();
        assert!(msg.contains("unknown option `sslrootcert`"), "{msg}");
        let mut params = Params::default();
        params.fill("port", "54x".to_owned(), "PGPORT");
        let msg = params.to_driver().unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid pglog setting `PGPORT`: invalid value for option `port` (from PGPORT)"
        );
    }

    #[test]
    fn key_value_tokens_follow_the_drivers_grammar() {
        assert_eq!(
            key_values(r"a=1  b = 'x y' c='it\'s' d=back\\slash e=\ lead"),
            Some(p(&[
                ("a", "1"),
                ("b", "x y"),
                ("c", "it's"),
                ("d", r"back\slash"),
                ("e", " lead"),
            ]))
        );
        assert_eq!(key_values(""), Some(vec![]));
        assert_eq!(key_values("a"), None);
        assert_eq!(key_values("a="), Some(p(&[("a", "")])));
        assert_eq!(key_values("a='x"), None);
        assert_eq!(key_values("=x"), None);
    }
}
