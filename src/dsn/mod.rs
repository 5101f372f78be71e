//! Turning a DSN into a driver configuration as libpq would (the `%PASSWORD%`
//! placeholder, services, libpq's environment variables, TLS parameters, local defaults),
//! and describing it without its password.

mod params;
mod password;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::Host;

use params::{is_url, key_values, named_by, percent_encode, quote_value, Params};
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
    // libpq never uses TLS over a Unix socket, whatever sslmode says; the server would
    // refuse it, and `sslmode=require` would fail for nothing (each address of a mixed
    // list is handled as it is opened).
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
    driver.ssl_mode(tls.mode.driver());
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
                named_by("sslmode", from),
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
    let sslrootcert = params.take("sslrootcert");
    let roots = match (root_cert, sslrootcert) {
        (Some(path), _) => Some(tls::Named {
            value: tls::Roots::File(path.to_owned()),
            by: "root_cert",
        }),
        (None, Some((value, from))) if value == "system" => Some(tls::Named {
            value: tls::Roots::System,
            by: named_by("sslrootcert", from),
        }),
        (None, Some((path, from))) => Some(tls::Named {
            value: tls::Roots::File(PathBuf::from(path)),
            by: named_by("sslrootcert", from),
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
                by: named_by(key, from),
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
                named_by("gssencmode", from),
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
                named_by("client_encoding", from),
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
mod tests;
