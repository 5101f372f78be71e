//! libpq's files, read as libpq reads them, so that pglog connects wherever `psql` does:
//!
//! - [`passfile`]: the password file, `~/.pgpass` or the one `PGPASSFILE` or the `passfile`
//!   parameter names (<https://www.postgresql.org/docs/current/libpq-pgpass.html>);
//! - [`service`]: the connection service file, `~/.pg_service.conf` and the system's
//!   `pg_service.conf`, which give a name to a set of connection parameters
//!   (<https://www.postgresql.org/docs/current/libpq-pgservice.html>).
//!
//! Both find their files through the environment variables libpq reads
//! (<https://www.postgresql.org/docs/current/libpq-envars.html>), passed in as a
//! [`Lookup`] so that tests give a map instead of the real environment. Neither logs nor
//! prints: pglog is the logger, and what to say about a file, and when, is the connection
//! path's decision. Messages never quote a file's text, which holds passwords.
//!
//! Where libpq ignores a file or a line, pglog ignores it too, so that what `psql` passes
//! over does not change where pglog connects. pglog is more lenient in one place: spaces
//! around `=` in a service file, which libpq (15) refuses as a syntax error.

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use crate::settings::Lookup;

pub(crate) mod passfile;
pub(crate) mod service;

/// The most a password file is read to; larger is refused (libpq streams it, but a
/// password file of megabytes is a mistake, and reading it at every connect would cost).
pub(crate) const PASSFILE_LIMIT: u64 = 16 << 20;
/// The most a service file, certificate or key file is read to.
pub(crate) const SMALL_FILE_LIMIT: u64 = 1 << 20;

/// Reads a configuration file whole, safely: only a regular file (a FIFO would block the
/// caller, a device like `/dev/zero` would never end), of at most `limit` bytes. It is
/// opened without blocking and checked after opening, so a file swapped for a FIFO
/// between a check and the open cannot block either.
pub(crate) fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} KiB", limit >> 10),
        )
    };
    if metadata.len() > limit {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    Ok(bytes)
}

/// The user's home directory, where libpq looks for `.pgpass` and `.pg_service.conf`.
///
/// Only `HOME`: libpq falls back to the passwd entry when `HOME` is unset, but a process
/// without `HOME` is rare (service managers, cron and containers set it), and reading the
/// passwd entry behind the [`Lookup`]'s back would make tests depend on the machine.
fn home_dir(env: Lookup<'_>) -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = scratch::Scratch::new("read-regular");
        let file = dir.write("small", "text", 0o600);
        assert_eq!(read_regular(&file, 10).unwrap(), b"text");
        let err = read_regular(&file, 3).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        for not_regular in ["/dev/zero", "/dev/null"] {
            let err = read_regular(Path::new(not_regular), 10).unwrap_err();
            assert_eq!(err.to_string(), "not a regular file");
        }
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = read_regular(&fifo, 10).unwrap_err();
        assert_eq!(err.to_string(), "not a regular file");
        assert!(read_regular(dir.path(), 10).is_err());
    }
}

#[cfg(test)]
pub(crate) mod scratch {
    //! A directory of its own per test, under the system's temp directory.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory, removed with what it holds when dropped. Its name has the process
    /// id and a counter, so parallel tests and parallel test runs do not share one.
    pub(crate) struct Scratch(PathBuf);

    impl Scratch {
        pub fn new(label: &str) -> Scratch {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("pglog-libpq-{label}-{}-{n}", std::process::id()));
            // A directory left by a killed run that had the same process id.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        /// Writes `name` in the directory with permissions `mode`; returns its path.
        pub fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            set_mode(&path, mode);
            path
        }
    }

    #[cfg(unix)]
    pub(crate) fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[cfg(not(unix))]
    pub(crate) fn set_mode(_: &Path, _: u32) {}

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
