//! The error type returned by [`Builder::try_init`](crate::Builder::try_init) and friends.

use std::fmt;
use std::path::PathBuf;

/// Why pglog could not be set up.
///
/// Only a bad configuration value or file, a global logger that is already set, or (when the
/// user asked for it with [`Builder::require_database`](crate::Builder::require_database))
/// an unusable database are errors. Everything that goes wrong later is handled inside
/// the logger: events go to stderr and the logger keeps trying.
///
/// Messages never contain a password.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is unusable; `key` names the setting to change.
    InvalidConfig {
        /// The setting at fault, e.g. `dsn` or `table`.
        key: &'static str,
        /// What is wrong with it and what would be accepted.
        reason: String,
    },
    /// A configuration file cannot be read, is not valid TOML, or has an unknown key or a
    /// value of the wrong type.
    ConfigFile {
        /// The file at fault.
        path: PathBuf,
        /// Where in it (line, key, section) and what is wrong. Never quotes the file.
        reason: String,
    },
    /// A global logger was already installed (by pglog or another crate).
    AlreadyInitialized(log::SetLoggerError),
    /// The database could not be used at startup and
    /// [`Builder::require_database`](crate::Builder::require_database) was set.
    DatabaseUnavailable(String),
    /// [`Builder::convert_to_partitioned`](crate::Builder::convert_to_partitioned) could
    /// not convert the table: which step failed, why, and what to do about it. A step
    /// that failed left the table as it was (the swap is one transaction); running the
    /// conversion again goes on where it stopped.
    Conversion(String),
}

impl Error {
    pub(crate) fn config(key: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidConfig {
            key,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { key, reason } => {
                write!(f, "invalid pglog setting `{key}`: {reason}")
            }
            Error::ConfigFile { path, reason } => {
                write!(
                    f,
                    "invalid pglog configuration file {}: {reason}",
                    path.display()
                )
            }
            Error::AlreadyInitialized(_) => f.write_str(
                "a global logger is already installed; use Builder::build to compose loggers",
            ),
            Error::DatabaseUnavailable(why) => {
                write!(f, "database required at startup but unusable: {why}")
            }
            Error::Conversion(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::AlreadyInitialized(e) => Some(e),
            _ => None,
        }
    }
}

impl From<log::SetLoggerError> for Error {
    fn from(e: log::SetLoggerError) -> Error {
        Error::AlreadyInitialized(e)
    }
}

/// An error with all its causes, `outer: inner: innermost`. The driver's errors say only
/// "db error" or "error connecting to server" at the top; the useful part is below.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[test]
    fn chain_shows_every_cause() {
        let parse = "host=h port=notaport"
            .parse::<tokio_postgres::Config>()
            .unwrap_err();
        assert_eq!(
            chain(&parse),
            "invalid connection string: invalid value for option `port`"
        );
    }
}
