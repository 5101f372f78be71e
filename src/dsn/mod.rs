//! Turning a DSN into a driver configuration as libpq would (the `%PASSWORD%`
//! placeholder, services, libpq's environment variables, TLS parameters, local defaults),
//! and describing it without its password.

mod params;
mod password;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::Host;

use params::{is_url, key_values, percent_encode, quote_value, Params};
pub(crate) use password::{For, Password};

use crate::settings::{Lookup, SharedEnv};
use crate::{tls, Error};

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

/// libpq's environment variables and the parameters they stand for. Each fills its
/// parameter when neither the DSN nor its service sets it.
pub(crate) const LIBPQ_VARS: [(&str, &str); 17] = [
    ("PGHOST", "host"),
    ("PGHOSTADDR", "hostaddr"),
    ("PGPORT", "port"),
    ("PGDATABASE", "dbname"),
    ("PGUSER", "user"),
    ("PGPASSFILE", "passfile"),
    ("PGAPPNAME", "application_name"),
    ("PGOPTIONS", "options"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
    ("PGTARGETSESSIONATTRS", "target_session_attrs"),
    ("PGLOADBALANCEHOSTS", "load_balance_hosts"),
    ("PGCHANNELBINDING", "channel_binding"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGSSLCERT", "sslcert"),
    ("PGSSLKEY", "sslkey"),
    ("PGSSLNEGOTIATION", "sslnegotiation"),
];

/// Where a DSN leads: the driver's configuration (without a password: that is looked up
/// for each new connection), what TLS must check, and where the password comes from.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub driver: tokio_postgres::Config,
    pub tls: tls::Wanted,
    pub password: Password,
}

/// Resolves `dsn` as libpq would.
///
/// `%PASSWORD%` stands for the password in [`PASSWORD_VARS`] (or none, as in stogger). A
/// `service` (or, with `libpq_env`, `PGSERVICE`) fills what the DSN leaves out from the
/// service file; with `libpq_env`, libpq's variables ([`LIBPQ_VARS`]) then fill what is
/// still missing. The rest is chosen as libpq would on a database host: the local Unix
/// socket (`/var/run/postgresql` where it exists, else `/tmp`), the OS user, a database
/// named after the user, the program's name as `application_name`. `root_cert` is
/// pglog's own setting, which wins over `sslrootcert`.
///
/// # Errors
///
/// A DSN, service or variable that is malformed or names what pglog cannot honour; the
/// message names the parameter and never repeats a password.
pub(crate) fn resolve(
    dsn: Option<&str>,
    root_cert: Option<&Path>,
    connect_timeout: Duration,
    env: &SharedEnv,
    libpq_env: bool,
) -> Result<Resolved, Error> {
    let (mut params, placeholder) = match dsn {
        Some(dsn) => parse_with_placeholder(dsn, &**env)?,
        None => (Params::default(), false),
    };
    // The DSN's own password; a service's or libpq's is looked up at each connection.
    let own_password = params.take("password").map(|(value, _)| value);
    let service = params
        .take("service")
        .map(|(name, _)| name)
        .or_else(|| libpq_env.then(|| env("PGSERVICE")).flatten());
    if let Some(name) = &service {
        for (key, value) in crate::libpq::service::lookup(name, &**env)? {
            params.fill(&key, value, "service");
        }
    }
    if libpq_env {
        for (var, key) in LIBPQ_VARS {
            if let Some(value) = env(var) {
                params.fill(key, value, var);
            }
        }
    }
    params.take("password");
    let home = env("HOME").map(PathBuf::from);
    libpq_spellings(&mut params)?;
    let tls = tls_wanted(&mut params, root_cert, home.as_deref())?;
    let password = Password::new(
        own_password,
        placeholder,
        service,
        params.take("passfile").map(|(path, _)| path),
        libpq_env,
        Arc::clone(env),
    );
    reject_unsupported(&params)?;
    let mut driver = params.to_driver()?;
    let hosts = driver.get_hosts().len().max(driver.get_hostaddrs().len());
    let ports = driver.get_ports().len();
    if ports > 1 && ports != hosts {
        return Err(Error::config(
            params.origin("port"),
            format!("{ports} port numbers for {hosts} hosts; give one port, or one per host"),
        ));
    }
    defaults(&mut driver, &params, connect_timeout);
    driver.ssl_mode(tls.mode.driver());
    // libpq never uses TLS over a Unix socket, whatever sslmode says; the server would
    // refuse it, and `sslmode=require` would fail for nothing.
    let local_only = driver.get_hostaddrs().is_empty()
        && driver
            .get_hosts()
            .iter()
            .all(|h| matches!(h, Host::Unix(_)));
    let tls = if local_only {
        tls::Wanted {
            mode: tls::Mode::Disable,
            ..tls
        }
    } else {
        tls
    };
    if local_only {
        driver.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    Ok(Resolved {
        driver,
        tls,
        password,
    })
}

/// The DSN's parameters, `%PASSWORD%` stood in for by [`Password`]: whether it was there.
///
/// # Errors
///
/// `%PASSWORD%` anywhere but in the password: it would put the password where messages
/// and the server's log show it (a user name, a database name).
fn parse_with_placeholder(dsn: &str, env: Lookup<'_>) -> Result<(Params, bool), Error> {
    if !dsn.contains(PLACEHOLDER) {
        return Ok((Params::parse(dsn)?, false));
    }
    // A marker no real password holds, encoded for the DSN's form, tells where the
    // placeholder stood once the DSN is parsed.
    let marker = "\u{1}pglog-password\u{1}";
    let params = Params::parse(&substitute_password(dsn, marker))?;
    if let Some((key, _)) = params
        .iter()
        .find(|(key, value)| *key != "password" && value.contains(marker))
    {
        return Err(Error::config(
            "dsn",
            format!(
                "{PLACEHOLDER} stands for the password only, but the DSN has it in `{key}`; \
                 write postgresql://user:{PLACEHOLDER}@host/db or password={PLACEHOLDER}"
            ),
        ));
    }
    match params.get("password") {
        Some(password) if password == marker => Ok((params, true)),
        // Inside a longer password: replaced as it stands, once.
        _ => {
            let now = PASSWORD_VARS
                .iter()
                .find_map(|name| env(name))
                .unwrap_or_default();
            Ok((Params::parse(&substitute_password(dsn, &now))?, false))
        }
    }
}

/// `sslmode` and the certificates, taken out of `params` (the driver refuses most of them).
fn tls_wanted(
    params: &mut Params,
    root_cert: Option<&Path>,
    home: Option<&Path>,
) -> Result<tls::Wanted, Error> {
    let mode = match params.take("sslmode") {
        Some((text, from)) => tls::Mode::parse(&text).ok_or_else(|| {
            Error::config(
                if from == "dsn" { "sslmode" } else { from },
                format!(
                    "`{text}` is not an sslmode; use disable, allow, prefer, require, verify-ca \
                     or verify-full"
                ),
            )
        })?,
        None => tls::Mode::Prefer,
    };
    let in_home = |name: &str| {
        home.map(|h| h.join(".postgresql").join(name))
            .filter(|p| p.exists())
    };
    let by = |from: &'static str, key: &'static str| if from == "dsn" { key } else { from };
    let sslrootcert = params.take("sslrootcert");
    let roots = match (root_cert, sslrootcert) {
        (Some(path), _) => Some(tls::Named {
            value: tls::Roots::File(path.to_owned()),
            by: "root_cert",
        }),
        (None, Some((value, from))) if value == "system" => Some(tls::Named {
            value: tls::Roots::System,
            by: by(from, "sslrootcert"),
        }),
        (None, Some((path, from))) => Some(tls::Named {
            value: tls::Roots::File(PathBuf::from(path)),
            by: by(from, "sslrootcert"),
        }),
        (None, None) => in_home("root.crt").map(|path| tls::Named {
            value: tls::Roots::File(path),
            by: "~/.postgresql/root.crt",
        }),
    };
    // libpq checks against a root file under `require` only when the file exists; the
    // `verify-*` modes demand it (and say so when it cannot be read).
    let roots = roots.filter(|r| match (&r.value, mode) {
        (tls::Roots::File(path), tls::Mode::Require | tls::Mode::Prefer | tls::Mode::Allow) => {
            r.by == "root_cert" || path.exists()
        }
        _ => true,
    });
    let named =
        |key: &'static str, default: &str, given: Option<(String, &'static str)>| match given {
            Some((path, from)) => Some(tls::Named {
                value: PathBuf::from(path),
                by: by(from, key),
            }),
            None => in_home(default).map(|value| tls::Named {
                value,
                by: if key == "sslcert" {
                    "~/.postgresql/postgresql.crt"
                } else {
                    "~/.postgresql/postgresql.key"
                },
            }),
        };
    let cert = named("sslcert", "postgresql.crt", params.take("sslcert"));
    let key = named("sslkey", "postgresql.key", params.take("sslkey"));
    // As libpq: a client certificate whose file does not exist is simply not sent.
    let client = match (cert.filter(|c| c.value.exists()), key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (Some(cert), None) => {
            return Err(Error::config(
                "sslkey",
                format!(
                    "the client certificate {} has no private key: set sslkey (or PGSSLKEY), \
                     or put it in ~/.postgresql/postgresql.key",
                    cert.value.display()
                ),
            ))
        }
        (None, _) => None,
    };
    Ok(tls::Wanted {
        mode,
        pglog_root: root_cert.is_some(),
        roots,
        client,
    })
}

/// libpq parameters the driver knows by another name or not at all, though their meaning
/// is plain: `keepalives_count`, `fallback_application_name`, a UTF-8 `client_encoding`
/// (the only one pglog speaks), and those listed inside.
fn libpq_spellings(params: &mut Params) -> Result<(), Error> {
    if let Some((count, from)) = params.take("keepalives_count") {
        params.fill("keepalives_retries", count, from);
    }
    if let Some((name, from)) = params.take("fallback_application_name") {
        params.fill("application_name", name, from);
    }
    // Parameters whose libpq meaning pglog already has: no GSSAPI encryption to disable
    // or prefer, rustls always sends SNI and negotiates TLS 1.2 or 1.3, compression is
    // gone from TLS. `requiressl=1` is the old spelling of `sslmode=require`.
    for key in [
        "sslcompression",
        "sslsni",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
    ] {
        params.take(key);
    }
    if let Some((mode, from)) = params.take("gssencmode") {
        if mode == "require" {
            return Err(Error::config(
                if from == "dsn" { "gssencmode" } else { from },
                "GSSAPI encryption is not supported; use TLS (sslmode)",
            ));
        }
    }
    if let Some((required, from)) = params.take("requiressl") {
        if required == "1" {
            params.fill("sslmode", "require".to_owned(), from);
        }
    }
    // libpq 14's finer session kinds, as near as the driver gets: a primary takes writes,
    // a standby does not; `prefer-standby` takes whichever answers.
    if let Some((attrs, from)) = params.take("target_session_attrs") {
        let near = match attrs.as_str() {
            "primary" => "read-write",
            "standby" => "read-only",
            "prefer-standby" => "any",
            other => other,
        };
        params.fill("target_session_attrs", near.to_owned(), from);
    }
    if let Some((encoding, from)) = params.take("client_encoding") {
        let utf8 = ["utf8", "utf-8", "unicode", "auto"];
        if !utf8.contains(&encoding.to_ascii_lowercase().as_str()) {
            return Err(Error::config(
                if from == "dsn" {
                    "client_encoding"
                } else {
                    from
                },
                format!("pglog speaks UTF-8 only, not `{encoding}`; remove the setting"),
            ));
        }
    }
    Ok(())
}

/// libpq parameters pglog does not honour, refused with the reason rather than the
/// driver's "unknown option".
fn reject_unsupported(params: &Params) -> Result<(), Error> {
    const UNSUPPORTED: [(&str, &str); 4] = [
        (
            "sslpassword",
            "encrypted client keys are not supported; decrypt the key with `openssl pkey`",
        ),
        ("sslcrl", "certificate revocation lists are not checked"),
        ("sslcrldir", "certificate revocation lists are not checked"),
        ("krbsrvname", "Kerberos authentication is not supported"),
    ];
    for (key, why) in UNSUPPORTED {
        if params.has(key) {
            return Err(Error::config("dsn", format!("the DSN sets `{key}`: {why}")));
        }
    }
    Ok(())
}

/// What libpq would choose for what is still unset.
fn defaults(driver: &mut tokio_postgres::Config, params: &Params, connect_timeout: Duration) {
    if driver.get_hosts().is_empty() && driver.get_hostaddrs().is_empty() {
        driver.host(default_socket_dir());
    }
    if driver.get_user().is_none() {
        driver.user(os_user());
    }
    if driver.get_connect_timeout().is_none() {
        driver.connect_timeout(connect_timeout);
    }
    if driver.get_application_name().is_none() {
        driver.application_name(program_name());
    }
    // Keepalives are on (libpq's default too), but the OS waits two hours of quiet before
    // its first probe; pglog asks for earlier ones so that a vanished peer or a dropped
    // NAT entry is noticed on an idle session, unless the DSN says otherwise.
    if !params.has("keepalives_idle") {
        driver.keepalives_idle(KEEPALIVE_IDLE);
    }
    if !params.has("keepalives_interval") {
        driver.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if !params.has("keepalives_retries") {
        driver.keepalives_retries(KEEPALIVE_RETRIES);
    }
}

/// The program's name, so that `pg_stat_activity` shows which tool is logging.
fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| std::env::args().next())
        .unwrap_or_else(|| "pglog".to_owned())
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
        // Left for the parser to report; substituting into text we cannot read could only
        // put the password into its error message.
        None => dsn.to_owned(),
    }
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

    fn shared(vars: &[(&str, &str)]) -> SharedEnv {
        Arc::new(env(vars))
    }

    fn resolved(dsn: Option<&str>, vars: &[(&str, &str)], libpq_env: bool) -> Resolved {
        resolve(dsn, None, T, &shared(vars), libpq_env).unwrap()
    }

    fn error(dsn: Option<&str>, vars: &[(&str, &str)], libpq_env: bool) -> String {
        resolve(dsn, None, T, &shared(vars), libpq_env)
            .unwrap_err()
            .to_string()
    }

    /// The driver configuration as a connection to the first host would use it.
    fn connecting(resolved: &Resolved) -> tokio_postgres::Config {
        let mut config = resolved.driver.clone();
        let host = match &config.get_hosts()[0] {
            Host::Tcp(name) => name.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        };
        let user = config.get_user().unwrap().to_owned();
        let dbname = config.get_dbname().unwrap_or(&user).to_owned();
        let to = For {
            host: &host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            dbname: &dbname,
            user: &user,
        };
        if let Some(password) = resolved.password.lookup(to) {
            config.password(password);
        }
        config
    }

    fn ready(dsn: Option<&str>, vars: &[(&str, &str)], libpq_env: bool) -> tokio_postgres::Config {
        connecting(&resolved(dsn, vars, libpq_env))
    }

    fn plain(dsn: &str) -> tokio_postgres::Config {
        ready(Some(dsn), &[], false)
    }

    /// A scratch directory for files the DSN names.
    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pglog-dsn-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn private_file(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn url_and_key_value_forms_parse() {
        let url = plain("postgresql://app:secret@db.internal:6432/ops");
        assert_eq!(describe(&url), "app@db.internal:6432/ops");
        let kv = plain("host=/tmp port=5433 user=app dbname=ops");
        assert_eq!(describe(&kv), "app@/tmp:5433/ops");
        assert_eq!(kv.get_connect_timeout(), Some(&T));
        // The program's name, so that pg_stat_activity tells which tool logs.
        assert_eq!(kv.get_application_name(), Some(program_name().as_str()));
        assert!(!program_name().is_empty());
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
            let msg = error(Some(bad), &[], false);
            assert!(
                msg.starts_with("invalid pglog setting `dsn`: cannot parse the DSN"),
                "{msg}"
            );
            assert!(msg.contains("expected postgresql://"), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        assert_eq!(
            error(Some("host=h sslmode=verify_full"), &[], false),
            "invalid pglog setting `sslmode`: `verify_full` is not an sslmode; use disable, \
             allow, prefer, require, verify-ca or verify-full"
        );
        assert_eq!(
            error(Some("host=h sslpassword=x"), &[], false),
            "invalid pglog setting `dsn`: the DSN sets `sslpassword`: encrypted client keys \
             are not supported; decrypt the key with `openssl pkey`"
        );
    }

    #[test]
    fn no_dsn_means_local_socket_as_the_os_user() {
        let c = ready(None, &[], false);
        assert!(matches!(c.get_hosts(), [Host::Unix(_)]));
        assert_eq!(c.get_user(), Some(whoami::username().unwrap().as_str()));
        assert_eq!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
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
        // In the query string too.
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
    fn an_unset_placeholder_means_no_password_as_in_stogger() {
        let r = resolved(Some("postgresql://u:%PASSWORD%@db/ops"), &[], false);
        assert_eq!(connecting(&r).get_password(), None);
        let hint = r.password.hint().unwrap();
        assert!(
            hint.contains("PGLOG_PASSWORD") && hint.contains("STOGGER_POSTGRES_PASSWORD"),
            "{hint}"
        );
        let r = resolved(
            Some("postgresql://u:%PASSWORD%@db/ops"),
            &[("PGLOG_PASSWORD", "pw")],
            false,
        );
        assert_eq!(r.password.hint(), None);
        assert!(!format!("{r:?}").contains("pw\""), "{r:?}");
    }

    #[test]
    fn malformed_key_value_dsn_keeps_the_password_out_of_the_error() {
        let msg = error(
            Some("host=db password='%PASSWORD% unterminated"),
            &[("PGLOG_PASSWORD", "hunter2")],
            false,
        );
        assert!(msg.contains("unterminated"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
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
            ("PGOPTIONS", "-c work_mem=8MB"),
            ("PGCONNECT_TIMEOUT", "7"),
            ("PGTARGETSESSIONATTRS", "read-write"),
        ];
        let r = resolved(None, &vars, true);
        let c = connecting(&r);
        assert_eq!(
            c.get_hosts(),
            [Host::Unix("/run/pg".into()), Host::Tcp("db2".into())]
        );
        assert_eq!(c.get_ports(), [5433, 5434]);
        assert_eq!(c.get_user(), Some("envuser"));
        assert_eq!(c.get_dbname(), Some("envdb"));
        assert_eq!(c.get_password(), Some(&b"envpw"[..]));
        assert_eq!(c.get_application_name(), Some("envapp"));
        assert_eq!(c.get_options(), Some("-c work_mem=8MB"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(
            c.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        assert_eq!(r.tls.mode, tls::Mode::Require);

        let r = resolved(
            Some("host=db port=6000 user=u dbname=d password=p application_name=a sslmode=prefer"),
            &vars,
            true,
        );
        let c = connecting(&r);
        assert_eq!(describe(&c), "u@db:6000/d");
        assert_eq!(c.get_password(), Some(&b"p"[..]));
        assert_eq!(c.get_application_name(), Some("a"));
        assert_eq!(r.tls.mode, tls::Mode::Prefer);

        let c = ready(
            Some("postgresql://u:@db:5432/d?sslmode=disable"),
            &vars,
            true,
        );
        assert_eq!(c.get_password(), Some(&b"envpw"[..]), "empty means none");
        // As in libpq, a URL without a port leaves it to PGPORT.
        let c = ready(Some("postgresql://u@db/d"), &[("PGPORT", "6000")], true);
        assert_eq!(c.get_ports(), [6000]);

        // Without libpq_env (Builder::new), none of them is read.
        let c = ready(None, &vars, false);
        assert_ne!(c.get_user(), Some("envuser"));
        assert_eq!(c.get_password(), None);
    }

    #[test]
    fn malformed_libpq_variables_are_named() {
        assert_eq!(
            error(None, &[("PGPORT", "54x")], true),
            "invalid pglog setting `PGPORT`: invalid value for option `port` (from PGPORT)"
        );
        assert!(error(None, &[("PGSSLMODE", "verify")], true)
            .starts_with("invalid pglog setting `PGSSLMODE`: `verify` is not an sslmode"));
    }

    #[test]
    fn tls_parameters_come_from_the_dsn_the_environment_or_pglog() {
        let r = resolved(
            Some("postgresql://u@db/d?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=/nonexistent.crt"),
            &[],
            false,
        );
        assert_eq!(r.tls.mode, tls::Mode::VerifyFull);
        assert_eq!(
            r.tls.roots,
            Some(tls::Named {
                value: tls::Roots::File("/ca.pem".into()),
                by: "sslrootcert"
            })
        );
        assert_eq!(
            r.tls.client, None,
            "a missing client certificate is not sent"
        );
        assert_eq!(
            r.driver.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let r = resolved(
            Some("host=db sslmode=verify-full sslrootcert=system"),
            &[],
            false,
        );
        assert_eq!(r.tls.roots.unwrap().value, tls::Roots::System);
        let vars = [("PGSSLROOTCERT", "/env-ca.pem"), ("PGSSLMODE", "verify-ca")];
        let r = resolved(Some("host=db"), &vars, true);
        assert_eq!(r.tls.mode, tls::Mode::VerifyCa);
        assert_eq!(r.tls.roots.as_ref().unwrap().by, "PGSSLROOTCERT");
        // pglog's own setting wins over libpq's.
        let r = resolve(
            Some("host=db sslrootcert=/dsn-ca.pem"),
            Some(Path::new("/mine.pem")),
            T,
            &shared(&vars),
            true,
        )
        .unwrap();
        assert_eq!(
            r.tls.roots,
            Some(tls::Named {
                value: tls::Roots::File("/mine.pem".into()),
                by: "root_cert"
            })
        );
        assert!(r.tls.pglog_root);
        // A client certificate that exists needs its key.
        let dir = scratch("cert");
        let cert = dir.join("client.crt");
        std::fs::write(&cert, "x").unwrap();
        let msg = error(
            Some(&format!("host=db sslcert={}", cert.display())),
            &[],
            false,
        );
        assert!(
            msg.starts_with("invalid pglog setting `sslkey`: the client certificate"),
            "{msg}"
        );
        let r = resolved(
            Some("host=db"),
            &[
                ("PGSSLCERT", cert.to_str().unwrap()),
                ("PGSSLKEY", "/k.key"),
            ],
            true,
        );
        let (c, k) = r.tls.client.unwrap();
        assert_eq!((c.by, k.by), ("PGSSLCERT", "PGSSLKEY"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_service_fills_what_the_dsn_leaves_out() {
        let dir = scratch("service");
        let file = dir.join("services.conf");
        private_file(
            &file,
            "[logs]\nhost=svc-host\nport=6543\ndbname=svcdb\nuser=svcuser\npassword=svcpw\nsslmode=require\n",
        );
        let vars = [("PGSERVICEFILE", file.to_str().unwrap())];
        let r = resolved(Some("service=logs dbname=mine"), &vars, false);
        let c = connecting(&r);
        assert_eq!(describe(&c), "svcuser@svc-host:6543/mine");
        assert_eq!(c.get_password(), Some(&b"svcpw"[..]));
        assert_eq!(r.tls.mode, tls::Mode::Require);
        // PGSERVICE names it when libpq's variables are read.
        let vars = [
            ("PGSERVICEFILE", file.to_str().unwrap()),
            ("PGSERVICE", "logs"),
        ];
        let c = ready(Some("postgresql:///other"), &vars, true);
        assert_eq!(describe(&c), "svcuser@svc-host:6543/other");
        // The service's password is read again for each connection.
        let r = resolved(Some("service=logs"), &vars, false);
        private_file(&file, "[logs]\nhost=svc-host\npassword=rotated\n");
        assert_eq!(connecting(&r).get_password(), Some(&b"rotated"[..]));
        let msg = error(Some("service=nope"), &vars, false);
        assert!(msg.contains("\"nope\""), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_password_file_is_read_for_each_connection() {
        let dir = scratch("pgpass");
        let file = dir.join("pgpass");
        private_file(&file, "db:5432:ops:app:first\n*:*:*:other:x\n");
        let vars = [("PGPASSFILE", file.to_str().unwrap())];
        let r = resolved(Some("postgresql://app@db/ops"), &vars, true);
        assert_eq!(connecting(&r).get_password(), Some(&b"first"[..]));
        private_file(&file, "db:5432:ops:app:second\n");
        assert_eq!(connecting(&r).get_password(), Some(&b"second"[..]));
        // The DSN's `passfile`, and libpq's order: PGPASSWORD before the file.
        let r = resolved(
            Some(&format!(
                "host=db user=app dbname=ops passfile={}",
                file.display()
            )),
            &[("PGPASSWORD", "env")],
            true,
        );
        assert_eq!(connecting(&r).get_password(), Some(&b"env"[..]));
        let r = resolved(
            Some(&format!(
                "host=db user=app dbname=ops passfile={}",
                file.display()
            )),
            &[],
            false,
        );
        assert_eq!(connecting(&r).get_password(), Some(&b"second"[..]));
        // ~/.pgpass by default.
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        private_file(&home.join(".pgpass"), "*:*:*:app:fromhome\n");
        let c = ready(
            Some("host=db user=app"),
            &[("HOME", home.to_str().unwrap())],
            false,
        );
        assert_eq!(c.get_password(), Some(&b"fromhome"[..]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stoggers_socket_form_and_unix_sockets_skip_tls() {
        let r = resolved(
            Some("postgresql://app:@/ops?host=/var/run/postgresql&sslmode=require"),
            &[],
            false,
        );
        let c = connecting(&r);
        assert_eq!(c.get_hosts(), [Host::Unix("/var/run/postgresql".into())]);
        assert_eq!(c.get_user(), Some("app"));
        assert_eq!(c.get_dbname(), Some("ops"));
        assert_eq!(c.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
        assert_eq!(r.tls.mode, tls::Mode::Disable);
        let tcp = plain("postgresql://app@db/ops?sslmode=require");
        assert_eq!(tcp.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
    }

    #[test]
    fn the_placeholder_stands_for_the_password_only() {
        for dsn in [
            "postgresql://%PASSWORD%@db/ops",
            "postgresql://u@db/%PASSWORD%",
            "host=db user=%PASSWORD%",
        ] {
            let msg = error(Some(dsn), &[("PGLOG_PASSWORD", "SECRETplace")], false);
            assert!(msg.contains("stands for the password only"), "{msg}");
            assert!(!msg.contains("SECRET"), "{msg}");
        }
    }

    #[test]
    fn ports_must_pair_with_hosts() {
        assert_eq!(
            error(Some("host=a port=1,2"), &[], false),
            "invalid pglog setting `dsn`: 2 port numbers for 1 hosts; give one port, or one \
             per host"
        );
        let me = whoami::username().unwrap();
        assert_eq!(
            describe(&plain("host=a,b port=7")),
            format!("{me}@a:7,b:7/{me}")
        );
    }

    #[test]
    fn parameters_psql_takes_are_taken() {
        let r = resolved(
            Some(
                "host=db gssencmode=disable sslcompression=0 sslsni=1 \
                 ssl_min_protocol_version=TLSv1.2 requiressl=1 target_session_attrs=primary",
            ),
            &[],
            false,
        );
        assert_eq!(r.tls.mode, tls::Mode::Require);
        assert_eq!(
            r.driver.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        assert!(error(Some("host=db gssencmode=require"), &[], false).contains("GSSAPI"));
        // A root file that does not exist is not checked under require, as in libpq.
        let missing = "sslrootcert=/nonexistent.pem";
        let r = resolved(
            Some(&format!("host=db sslmode=require {missing}")),
            &[],
            false,
        );
        assert_eq!(r.tls.roots, None);
        let r = resolved(
            Some(&format!("host=db sslmode=verify-ca {missing}")),
            &[],
            false,
        );
        assert!(r.tls.roots.is_some());
    }

    #[test]
    fn libpqs_own_spellings_are_understood() {
        let c =
            plain("host=db keepalives_count=7 fallback_application_name=tool client_encoding=UTF8");
        assert_eq!(c.get_keepalives_retries(), Some(7));
        assert_eq!(c.get_application_name(), Some("tool"));
        let c = plain("host=db application_name=mine fallback_application_name=tool");
        assert_eq!(c.get_application_name(), Some("mine"));
        assert_eq!(
            error(Some("host=db client_encoding=LATIN1"), &[], false),
            "invalid pglog setting `client_encoding`: pglog speaks UTF-8 only, not `LATIN1`; \
             remove the setting"
        );
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
}
