//! Turning a DSN into a driver configuration (the `%PASSWORD%` placeholder, libpq's
//! environment variables, local defaults), and describing it without its password.

use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};

use crate::settings::Lookup;
use crate::Error;

/// Where to connect, as given: a `postgresql://` URL or libpq `key=value` pairs, which
/// may hold a password or the `%PASSWORD%` placeholder. `Debug` never shows it.
///
/// # Examples
///
/// ```
/// let dsn = pglog::Dsn::from("postgresql://app:hunter2@db.internal/ops");
/// assert_eq!(format!("{dsn:?}"), "Dsn(<set, not shown>)");
/// assert_eq!(dsn.as_str(), "postgresql://app:hunter2@db.internal/ops");
/// ```
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Dsn(String);

impl Dsn {
    /// The DSN as given, password included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for Dsn {
    fn from(dsn: String) -> Dsn {
        Dsn(dsn)
    }
}

impl From<&str> for Dsn {
    fn from(dsn: &str) -> Dsn {
        Dsn(dsn.to_owned())
    }
}

impl From<&String> for Dsn {
    fn from(dsn: &String) -> Dsn {
        Dsn(dsn.clone())
    }
}

impl From<std::borrow::Cow<'_, str>> for Dsn {
    fn from(dsn: std::borrow::Cow<'_, str>) -> Dsn {
        Dsn(dsn.into_owned())
    }
}

impl std::fmt::Debug for Dsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dsn(<set, not shown>)")
    }
}

/// Replaced in a DSN by the password from the environment.
pub(crate) const PLACEHOLDER: &str = "%PASSWORD%";

/// Where the password for [`PLACEHOLDER`] comes from, first set wins.
pub(crate) const PASSWORD_VARS: [&str; 2] = ["PGLOG_PASSWORD", "STOGGER_POSTGRES_PASSWORD"];

/// TCP keepalive probes: after this much quiet, then this often, this many times.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// What a DSN came to.
#[derive(Debug)]
pub(crate) enum Resolved {
    Ready(Box<tokio_postgres::Config>),
    /// The DSN asks for a password the environment does not give; says what to set.
    NoPassword(String),
}

/// Turns `dsn` into a driver configuration.
///
/// `%PASSWORD%` is replaced by the password from `env`, encoded for the DSN's form. With
/// `libpq_env`, libpq's variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`,
/// `PGPASSWORD`, `PGSSLMODE`, `PGAPPNAME`) fill what the DSN leaves out. What is still
/// missing is chosen as libpq would on a database host: the local Unix socket
/// (`/var/run/postgresql` where it exists, else `/tmp`), the OS user, a database named
/// after the user.
///
/// # Errors
///
/// A DSN the driver cannot parse, or a malformed libpq variable; the message never
/// repeats the DSN, which may hold a password.
pub(crate) fn resolve(
    dsn: Option<&str>,
    connect_timeout: Duration,
    env: Lookup<'_>,
    libpq_env: bool,
) -> Result<Resolved, Error> {
    let mut config = match dsn {
        Some(dsn) if dsn.contains(PLACEHOLDER) => {
            let Some(password) = PASSWORD_VARS.iter().find_map(|name| env(name)) else {
                return Ok(Resolved::NoPassword(format!(
                    "the DSN contains {PLACEHOLDER} but neither {} nor {} is set; set one of them \
                     to the database password. Until then events go to stderr",
                    PASSWORD_VARS[0], PASSWORD_VARS[1]
                )));
            };
            parse(&substitute_password(dsn, &password))?
        }
        Some(dsn) => parse(dsn)?,
        None => tokio_postgres::Config::new(),
    };
    if libpq_env {
        fill_from_libpq_env(
            &mut config,
            dsn.is_some_and(|d| sets_key(d, "sslmode")),
            env,
        )?;
    }
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        config.host(default_socket_dir());
    }
    if config.get_user().is_none() {
        config.user(os_user());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("pglog");
    }
    // Keepalives are on (libpq's default too), but the OS waits two hours of quiet before
    // its first probe; pglog asks for earlier ones so that a vanished peer or a dropped
    // NAT entry is noticed on an idle session, unless the DSN says otherwise.
    let sets = |key| dsn.is_some_and(|d| sets_key(d, key));
    if !sets("keepalives_idle") {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if !sets("keepalives_interval") {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if !sets("keepalives_retries") && !sets("keepalives_count") {
        config.keepalives_retries(KEEPALIVE_RETRIES);
    }
    // libpq never uses TLS over a Unix socket, whatever sslmode says; the server would
    // refuse it, and `sslmode=require` would fail for nothing.
    let local_only = config.get_hostaddrs().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, Host::Unix(_)));
    if local_only {
        config.ssl_mode(SslMode::Disable);
    }
    Ok(Resolved::Ready(Box::new(config)))
}

fn parse(dsn: &str) -> Result<tokio_postgres::Config, Error> {
    dsn.parse::<tokio_postgres::Config>().map_err(|e| {
        let cause = crate::error::chain(&e);
        let hint = if cause.contains("`sslmode`") {
            "; pglog takes sslmode disable, prefer or require, and verifies the server's \
             certificate when given a root certificate (root_cert)"
        } else {
            ""
        };
        Error::config(
            "dsn",
            format!(
                "cannot parse the DSN ({cause}{hint}); expected postgresql://user:password@host:port/dbname \
                 or key=value pairs such as `host=/var/run/postgresql dbname=app`"
            ),
        )
    })
}

fn is_url(dsn: &str) -> bool {
    dsn.starts_with("postgresql://") || dsn.starts_with("postgres://")
}

/// Replaces every `%PASSWORD%` in `dsn` so that the driver reads back exactly `password`:
/// percent-encoded in a URL, quoted and escaped in `key=value` pairs.
pub(crate) fn substitute_password(dsn: &str, password: &str) -> String {
    if is_url(dsn) {
        return dsn.replace(PLACEHOLDER, &percent_encode(password));
    }
    match key_values(dsn) {
        Some(pairs) => pairs
            .iter()
            .map(|(key, value)| {
                format!(
                    "{key}={}",
                    quote_value(&value.replace(PLACEHOLDER, password))
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        // Left for the driver to report; substituting into text we cannot read could only
        // put the password into its error message.
        None => dsn.to_owned(),
    }
}

/// Everything but RFC 3986's unreserved characters, as `%XX` per UTF-8 byte.
fn percent_encode(text: &str) -> String {
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

fn quote_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

/// The pairs of a libpq `key=value` string, values unquoted and unescaped, by the
/// grammar the driver parses; `None` when it is malformed.
fn key_values(dsn: &str) -> Option<Vec<(String, String)>> {
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
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
            if value.is_empty() {
                return None;
            }
        }
        pairs.push((key, value));
    }
}

/// Whether the DSN itself sets `key`. Only needed where the parsed configuration cannot
/// tell "set to the default" from "not set" (`sslmode`).
fn sets_key(dsn: &str, key: &str) -> bool {
    if is_url(dsn) {
        dsn.split_once('?').is_some_and(|(_, query)| {
            query
                .split('&')
                .any(|param| param.split('=').next() == Some(key))
        })
    } else {
        key_values(dsn).is_some_and(|pairs| pairs.iter().any(|(k, _)| k == key))
    }
}

/// libpq's environment fills what the DSN leaves out, and only that.
fn fill_from_libpq_env(
    config: &mut tokio_postgres::Config,
    dsn_sets_sslmode: bool,
    env: Lookup<'_>,
) -> Result<(), Error> {
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        if let Some(hosts) = env("PGHOST") {
            for host in hosts.split(',') {
                config.host(host.trim());
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(ports) = env("PGPORT") {
            for port in ports.split(',') {
                let port = port.trim().parse().map_err(|_| {
                    Error::config("PGPORT", format!("`{port}` is not a port number"))
                })?;
                config.port(port);
            }
        }
    }
    if config.get_user().is_none() {
        if let Some(user) = env("PGUSER") {
            config.user(&user);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(dbname) = env("PGDATABASE") {
            config.dbname(&dbname);
        }
    }
    // stogger's socket form `postgresql://user:@/db` gives an empty password: no password.
    if config.get_password().is_none_or(<[u8]>::is_empty) {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_application_name().is_none() {
        if let Some(name) = env("PGAPPNAME") {
            config.application_name(&name);
        }
    }
    if !dsn_sets_sslmode {
        if let Some(mode) = env("PGSSLMODE") {
            // The driver's parser decides which modes exist, so both routes agree.
            let parsed = parse(&format!("sslmode={}", quote_value(&mode))).map_err(|_| {
                Error::config(
                    "PGSSLMODE",
                    format!(
                        "`{mode}` is not a mode pglog supports; use disable, prefer or require"
                    ),
                )
            })?;
            config.ssl_mode(parsed.get_ssl_mode());
        }
    }
    Ok(())
}

/// Debian and most distributions put the socket here; upstream's default is /tmp.
fn default_socket_dir() -> &'static str {
    const DEBIAN: &str = "/var/run/postgresql";
    if std::path::Path::new(DEBIAN).is_dir() {
        DEBIAN
    } else {
        "/tmp"
    }
}

/// The effective user's name, as libpq takes it (not `$USER`, which `sudo` may keep).
fn os_user() -> String {
    whoami::username().unwrap_or_else(|_| "postgres".to_owned())
}

/// `user@host:port/dbname`, for messages. Never includes the password.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    format!(
        "{}@{}/{}",
        config.get_user().unwrap_or("?"),
        hosts.join(","),
        config.get_dbname().or(config.get_user()).unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tests::env;

    const T: Duration = Duration::from_secs(3);
    /// The issue's example: every character that means something in a URL or a
    /// `key=value` string.
    const NASTY: &str = r#"p@ss:w/rd %2F?#&'"x"#;

    fn ready(dsn: Option<&str>, vars: &[(&str, &str)], libpq_env: bool) -> tokio_postgres::Config {
        match resolve(dsn, T, &env(vars), libpq_env).unwrap() {
            Resolved::Ready(config) => *config,
            Resolved::NoPassword(why) => panic!("{why}"),
        }
    }

    fn plain(dsn: &str) -> tokio_postgres::Config {
        ready(Some(dsn), &[], false)
    }

    #[test]
    fn url_and_key_value_forms_parse() {
        let url = plain("postgresql://app:secret@db.internal:6432/ops");
        assert_eq!(describe(&url), "app@db.internal:6432/ops");
        let kv = plain("host=/tmp port=5433 user=app dbname=ops");
        assert_eq!(describe(&kv), "app@/tmp:5433/ops");
        assert_eq!(kv.get_connect_timeout(), Some(&T));
        assert_eq!(kv.get_application_name(), Some("pglog"));
    }

    #[test]
    fn dsn_settings_win_over_defaults() {
        let c = plain("host=h user=u connect_timeout=9 application_name=tool");
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(9)));
        assert_eq!(c.get_application_name(), Some("tool"));
    }

    #[test]
    fn malformed_dsn_says_what_to_fix_and_hides_the_password() {
        for bad in [
            "postgresql://app:hunter2@host:notaport/db",
            "host=h password=hunter2 bogus_option=1",
            "host='unterminated hunter2",
        ] {
            let msg = resolve(Some(bad), T, &env(&[]), false)
                .unwrap_err()
                .to_string();
            assert!(
                msg.starts_with("invalid pglog setting `dsn`: cannot parse the DSN"),
                "{msg}"
            );
            assert!(msg.contains("expected postgresql://"), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        let msg = resolve(Some("host=h sslmode=verify-full"), T, &env(&[]), false)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("pglog takes sslmode disable, prefer or require"),
            "{msg}"
        );
    }

    #[test]
    fn no_dsn_means_local_socket_as_the_os_user() {
        let c = plain_none();
        assert!(matches!(c.get_hosts(), [Host::Unix(_)]));
        assert_eq!(c.get_user(), Some(whoami::username().unwrap().as_str()));
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
    }

    fn plain_none() -> tokio_postgres::Config {
        ready(None, &[], false)
    }

    #[test]
    fn password_is_percent_encoded_in_urls() {
        let dsn = "postgresql://app:%PASSWORD%@db:5432/ops?application_name=x";
        let text = substitute_password(dsn, NASTY);
        assert_eq!(
            text,
            "postgresql://app:p%40ss%3Aw%2Frd%20%252F%3F%23%26%27%22x@db:5432/ops?application_name=x"
        );
        let c = ready(Some(dsn), &[("PGLOG_PASSWORD", NASTY)], false);
        assert_eq!(c.get_password(), Some(NASTY.as_bytes()));
        assert_eq!(describe(&c), "app@db:5432/ops");
        // In the query string too, and more than once.
        let c = ready(
            Some("postgresql://app@db/ops?password=%PASSWORD%"),
            &[("STOGGER_POSTGRES_PASSWORD", NASTY)],
            false,
        );
        assert_eq!(c.get_password(), Some(NASTY.as_bytes()));
        let unicode = "pässwörd ✓";
        let c = ready(Some(dsn), &[("PGLOG_PASSWORD", unicode)], false);
        assert_eq!(c.get_password(), Some(unicode.as_bytes()));
    }

    #[test]
    fn password_is_quoted_in_key_value_pairs() {
        for dsn in [
            "host=db user=app password=%PASSWORD% dbname=ops",
            "host=db user=app password='%PASSWORD%' dbname=ops",
            "host=db user=app password = %PASSWORD%",
            "  host=db\tuser=app   password=%PASSWORD%  ",
        ] {
            let c = ready(Some(dsn), &[("PGLOG_PASSWORD", NASTY)], false);
            assert_eq!(c.get_password(), Some(NASTY.as_bytes()), "{dsn}");
            assert_eq!(c.get_user(), Some("app"), "{dsn}");
            assert_eq!(c.get_hosts(), [Host::Tcp("db".into())], "{dsn}");
        }
        // Around other text, and with backslashes already in the DSN.
        let c = ready(
            Some(r"host=db password='pre\'%PASSWORD%\\post' application_name=a\ b"),
            &[("PGLOG_PASSWORD", r"x\y'z")],
            false,
        );
        assert_eq!(c.get_password(), Some(r"pre'x\y'z\post".as_bytes()));
        assert_eq!(c.get_application_name(), Some("a b"));
    }

    #[test]
    fn pglog_password_wins_over_stoggers() {
        let c = ready(
            Some("host=db password=%PASSWORD%"),
            &[("STOGGER_POSTGRES_PASSWORD", "s"), ("PGLOG_PASSWORD", "p")],
            false,
        );
        assert_eq!(c.get_password(), Some(&b"p"[..]));
    }

    #[test]
    fn missing_password_names_both_variables() {
        match resolve(
            Some("postgresql://u:%PASSWORD%@db/ops"),
            T,
            &env(&[]),
            false,
        )
        .unwrap()
        {
            Resolved::NoPassword(why) => {
                assert!(
                    why.contains("PGLOG_PASSWORD") && why.contains("STOGGER_POSTGRES_PASSWORD"),
                    "{why}"
                );
                assert!(why.contains("%PASSWORD%"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_key_value_dsn_keeps_the_password_out_of_the_error() {
        let msg = resolve(
            Some("host='db password=%PASSWORD%"),
            T,
            &env(&[("PGLOG_PASSWORD", "hunter2")]),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("unterminated"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn key_value_tokens_follow_the_drivers_grammar() {
        assert_eq!(
            key_values(r"a=1  b = 'x y' c='it\'s' d=back\\slash e=\ lead"),
            Some(vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "it's".into()),
                ("d".into(), r"back\slash".into()),
                ("e".into(), " lead".into()),
            ])
        );
        assert_eq!(key_values(""), Some(vec![]));
        assert_eq!(key_values("a"), None);
        assert_eq!(key_values("a="), None);
        assert_eq!(key_values("a='x"), None);
        assert_eq!(key_values("=x"), None);
    }

    #[test]
    fn libpq_variables_fill_only_what_the_dsn_leaves_out() {
        let vars = [
            ("PGHOST", "/run/pg,db2"),
            ("PGPORT", "5433,5434"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
            ("PGPASSWORD", "envpw"),
            ("PGAPPNAME", "envapp"),
            ("PGSSLMODE", "require"),
        ];
        let c = ready(None, &vars, true);
        assert_eq!(
            c.get_hosts(),
            [Host::Unix("/run/pg".into()), Host::Tcp("db2".into())]
        );
        assert_eq!(c.get_ports(), [5433, 5434]);
        assert_eq!(c.get_user(), Some("envuser"));
        assert_eq!(c.get_dbname(), Some("envdb"));
        assert_eq!(c.get_password(), Some(&b"envpw"[..]));
        assert_eq!(c.get_application_name(), Some("envapp"));
        assert_eq!(c.get_ssl_mode(), SslMode::Require);

        let c = ready(
            Some("host=db port=6000 user=u dbname=d password=p application_name=a sslmode=prefer"),
            &vars,
            true,
        );
        assert_eq!(describe(&c), "u@db:6000/d");
        assert_eq!(c.get_password(), Some(&b"p"[..]));
        assert_eq!(c.get_application_name(), Some("a"));
        assert_eq!(c.get_ssl_mode(), SslMode::Prefer);

        let c = ready(Some("postgresql://u:@db/d?sslmode=disable"), &vars, true);
        assert_eq!(c.get_password(), Some(&b"envpw"[..]), "empty means none");
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        assert_eq!(c.get_ports(), [5432], "a URL host brings its port");

        // Without libpq_env (Builder::new), none of them is read.
        let c = ready(None, &vars, false);
        assert_ne!(c.get_user(), Some("envuser"));
        assert_eq!(c.get_password(), None);
    }

    #[test]
    fn malformed_libpq_variables_are_named() {
        let err =
            |vars: &[(&str, &str)]| resolve(None, T, &env(vars), true).unwrap_err().to_string();
        assert_eq!(
            err(&[("PGPORT", "54x")]),
            "invalid pglog setting `PGPORT`: `54x` is not a port number"
        );
        assert!(
            err(&[("PGSSLMODE", "verify-full")]).starts_with("invalid pglog setting `PGSSLMODE`")
        );
    }

    #[test]
    fn stoggers_socket_form_and_unix_sockets_skip_tls() {
        let c = plain("postgresql://app:@/ops?host=/var/run/postgresql&sslmode=require");
        assert_eq!(c.get_hosts(), [Host::Unix("/var/run/postgresql".into())]);
        assert_eq!(c.get_user(), Some("app"));
        assert_eq!(c.get_dbname(), Some("ops"));
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        let tcp = plain("postgresql://app@db/ops?sslmode=require");
        assert_eq!(tcp.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn multi_host_dsns_pass_through() {
        let c = plain("postgresql://u@a:5000,b:5001/d?target_session_attrs=read-write");
        assert_eq!(describe(&c), "u@a:5000,b:5001/d");
        assert_eq!(
            c.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
    }

    #[test]
    fn sslmode_is_seen_in_both_forms() {
        assert!(sets_key(
            "postgresql://u@h/d?a=1&sslmode=disable",
            "sslmode"
        ));
        assert!(!sets_key("postgresql://u@h/d?a=1", "sslmode"));
        assert!(sets_key("host=h sslmode='require'", "sslmode"));
        assert!(!sets_key("host=h application_name=sslmode", "sslmode"));
    }
}
