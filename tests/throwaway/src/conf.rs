//! Files in the data directory that tests change: `pg_hba.conf` and
//! `pg_ident.conf` replaced line by line, and files the server is told to
//! read (certificates, keys), written with the owner the server needs.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{io_error, Error};
use crate::Server;

/// The authentication files `initdb` writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ConfFile {
    Hba,
    Ident,
}

impl ConfFile {
    fn file_name(self) -> &'static str {
        match self {
            ConfFile::Hba => "pg_hba.conf",
            ConfFile::Ident => "pg_ident.conf",
        }
    }
}

impl Server {
    /// Replaces `pg_hba.conf` with exactly these lines, on a running or a
    /// stopped server (before the start, use [`crate::Builder::hba_lines`]).
    ///
    /// The new rules take effect at the next [`Server::restart`], which is
    /// the way to apply them: a reload (`pg_ctl reload`, `pg_reload_conf()`)
    /// is asynchronous, it signals the server and returns before the file is
    /// read again, so the next connection may still meet the old rules; a
    /// restart is done when done, it returns once the server accepts
    /// connections under the new ones. Replace all files first, then restart
    /// once.
    ///
    /// [`Server::psql`] connects as `postgres` over TCP to `127.0.0.1`
    /// without a password, so it only works if these lines allow that.
    pub fn replace_hba(&self, lines: &[&str]) -> Result<(), Error> {
        self.replace_conf(ConfFile::Hba, lines)
    }

    /// Replaces `pg_ident.conf` (user name maps, `MAPNAME SYSTEM-USERNAME
    /// PG-USERNAME`) with exactly these lines, on a running or a stopped
    /// server (before the start, use [`crate::Builder::ident_lines`]). Like
    /// [`Server::replace_hba`], it takes effect at the next
    /// [`Server::restart`].
    pub fn replace_ident(&self, lines: &[&str]) -> Result<(), Error> {
        self.replace_conf(ConfFile::Ident, lines)
    }

    /// Writes `contents` to the file `name` in the data directory (created or
    /// overwritten) with the permission bits `mode`, owned like the data
    /// directory by [`Server::os_user`] if there is one: for files the server
    /// reads as its own user, such as `server.crt` and `server.key`
    /// (PostgreSQL refuses a key that others may read: give it `0o600`).
    ///
    /// `name` is relative to the data directory and may not leave it.
    /// Settings that point the server at the file (`ssl_key_file`, …) take
    /// effect at the next [`Server::restart`]; see [`Server::replace_hba`].
    pub fn write_data_file(
        &self,
        name: &str,
        contents: impl AsRef<[u8]>,
        mode: u32,
    ) -> Result<(), Error> {
        let path = self.data_file_path(name)?;
        write_with_mode(&path, contents.as_ref(), mode)
            .map_err(|e| io_error(format_args!("could not write {}", path.display()), e))?;
        match &self.os_user {
            Some(user) => user.chown(&path),
            None => Ok(()),
        }
    }

    /// Replaces `file` with exactly `lines`.
    pub(crate) fn replace_conf(
        &self,
        file: ConfFile,
        lines: &[impl AsRef<str>],
    ) -> Result<(), Error> {
        let path = self.data_dir.join(file.file_name());
        let mut contents = lines
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<&str>>()
            .join("\n");
        contents.push('\n');
        // Truncate the existing file rather than replacing it, so that it
        // keeps initdb's owner and mode.
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut file| file.write_all(contents.as_bytes()))
            .map_err(|e| io_error(format_args!("could not write {}", path.display()), e))
    }

    fn data_file_path(&self, name: &str) -> Result<PathBuf, Error> {
        let relative = Path::new(name);
        let inside = !name.is_empty()
            && relative
                .components()
                .all(|part| matches!(part, Component::Normal(_)));
        if inside {
            Ok(self.data_dir.join(relative))
        } else {
            Err(Error(format!(
                "{name:?} does not name a file inside the data directory"
            )))
        }
    }
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    // Created with `mode` so that a key is never readable by others, not even
    // for a moment; set again because the umask narrows it at creation and an
    // existing file keeps its own.
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?
        .write_all(contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Builder;
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Output};

    /// psql over the Unix socket as `postgres`, where peer authentication
    /// applies.
    fn psql_over_socket(server: &Server) -> Output {
        Command::new(server.bindir().join("psql"))
            .args(["-X", "-At", "-c", "SELECT 1", "-d"])
            .arg(server.socket_dsn("postgres"))
            .output()
            .unwrap()
    }

    /// The OS user this process runs as, the one peer authentication sees.
    fn this_os_user() -> String {
        let output = Command::new("id").arg("-un").output().unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn replace_hba_takes_effect_at_restart() {
        let server = Server::start().unwrap();
        let hba = server.data_dir().join("pg_hba.conf");
        let before = fs::metadata(&hba).unwrap();
        server
            .replace_hba(&["local all all trust", "host all all 127.0.0.1/32 reject"])
            .unwrap();
        assert_eq!(
            fs::read_to_string(&hba).unwrap(),
            "local all all trust\nhost all all 127.0.0.1/32 reject\n"
        );
        let after = fs::metadata(&hba).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (before.uid(), before.gid(), before.mode())
        );
        assert_eq!(server.psql("postgres", "SELECT 1").unwrap(), "1");
        server.restart().unwrap();
        let err = server.psql("postgres", "SELECT 1").unwrap_err();
        assert!(err.to_string().contains("pg_hba.conf"), "{err}");
        let output = psql_over_socket(&server);
        assert!(output.status.success(), "{output:?}");
    }

    #[test]
    fn ident_lines_then_replace_ident() {
        let me = this_os_user();
        let server = Builder::new()
            .hba_lines(&[
                "local all all peer map=m",
                "host all all 127.0.0.1/32 trust",
            ])
            .ident_lines(&[&format!("m {me} postgres")])
            .start()
            .unwrap();
        let output = psql_over_socket(&server);
        assert!(output.status.success(), "{output:?}");
        server.replace_ident(&["m someone-else postgres"]).unwrap();
        server.restart().unwrap();
        let output = psql_over_socket(&server);
        assert!(!output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("Peer authentication failed"), "{stderr}");
    }

    #[test]
    fn write_data_file_sets_mode_and_owner() {
        let server = Server::start().unwrap();
        let data = fs::metadata(server.data_dir()).unwrap();
        let path = server.data_dir().join("server.key");
        for (contents, mode) in [("secret", 0o600), ("public", 0o644)] {
            server
                .write_data_file("server.key", contents, mode)
                .unwrap();
            let file = fs::metadata(&path).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), contents);
            assert_eq!(file.mode() & 0o777, mode);
            assert_eq!((file.uid(), file.gid()), (data.uid(), data.gid()));
        }
        for outside in ["", "/etc/passwd", "../server.log", "global/../../x"] {
            let err = server.write_data_file(outside, "x", 0o600).unwrap_err();
            assert!(
                err.to_string().contains("inside the data directory"),
                "{err}"
            );
        }
    }
}
