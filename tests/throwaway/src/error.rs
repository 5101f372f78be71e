//! The crate's one error type.

use std::fmt;
use std::io;

/// Error returned by this crate: a human-readable message that includes the
/// relevant command output or server log tail.
#[derive(Debug)]
pub struct Error(pub(crate) String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// An I/O error with what was being done when it happened.
pub(crate) fn io_error(context: impl fmt::Display, err: io::Error) -> Error {
    Error(format!("{context}: {err}"))
}
