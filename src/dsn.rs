//! Turning a DSN into a driver configuration, and describing it without its password.

use std::time::Duration;

use crate::Error;

/// Parses `dsn` (URL or `key=value` form). With no DSN, connects like `psql` would on a
/// database host: over the local Unix socket as the current OS user.
///
/// # Errors
///
/// A DSN the driver cannot parse; the message never repeats the DSN, which may hold a
/// password.
pub(crate) fn parse(
    dsn: Option<&str>,
    connect_timeout: Duration,
) -> Result<postgres::Config, Error> {
    let mut config = match dsn {
        Some(dsn) => dsn.parse::<postgres::Config>().map_err(|e| {
            Error::config(
                "dsn",
                format!(
                    "cannot parse the DSN ({}); expected postgresql://user:password@host:port/dbname \
                     or key=value pairs such as `host=/var/run/postgresql dbname=app`",
                    crate::error::chain(&e)
                ),
            )
        })?,
        None => local_socket_default(),
    };
    if config.get_hosts().is_empty() {
        config.host(default_socket_dir());
    }
    if config.get_user().is_none() {
        config.user(&os_user());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("pglog");
    }
    Ok(config)
}

fn local_socket_default() -> postgres::Config {
    let mut config = postgres::Config::new();
    config.host(default_socket_dir());
    config
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

fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "postgres".to_owned())
}

/// `user@host:port/dbname`, for messages. Never includes the password.
pub(crate) fn describe(config: &postgres::Config) -> String {
    use postgres::config::Host;
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

    const T: Duration = Duration::from_secs(3);

    #[test]
    fn url_and_key_value_forms_parse() {
        let url = parse(Some("postgresql://app:secret@db.internal:6432/ops"), T).unwrap();
        assert_eq!(describe(&url), "app@db.internal:6432/ops");
        let kv = parse(Some("host=/tmp port=5433 user=app dbname=ops"), T).unwrap();
        assert_eq!(describe(&kv), "app@/tmp:5433/ops");
        assert_eq!(kv.get_connect_timeout(), Some(&T));
        assert_eq!(kv.get_application_name(), Some("pglog"));
    }

    #[test]
    fn dsn_settings_win_over_defaults() {
        let c = parse(
            Some("host=h user=u connect_timeout=9 application_name=tool"),
            T,
        )
        .unwrap();
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
            let msg = parse(Some(bad), T).unwrap_err().to_string();
            assert!(
                msg.starts_with("invalid pglog setting `dsn`: cannot parse the DSN"),
                "{msg}"
            );
            assert!(msg.contains("expected postgresql://"), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn no_dsn_means_local_socket() {
        let c = parse(None, T).unwrap();
        assert!(matches!(c.get_hosts(), [postgres::config::Host::Unix(_)]));
        assert!(c.get_user().is_some());
    }
}
