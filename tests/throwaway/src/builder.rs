//! Configuring a server and bringing it up: directories, watchdog, `initdb`,
//! the configuration files, then `pg_ctl start` on a free port.

use std::net::TcpListener;
use std::sync::Mutex;

use crate::binaries::find_bindir;
use crate::conf::ConfFile;
use crate::dirs::Dirs;
use crate::error::{io_error, Error};
use crate::lifecycle::StartError;
use crate::os_user::OsUser;
use crate::server::{Server, State};

/// How many ports to try when the chosen one turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// Settings that this crate manages itself and that [`Builder::setting`] may
/// not override.
const MANAGED_SETTINGS: &[&str] = &["port", "unix_socket_directories"];

/// Configures a throwaway server before starting it.
///
/// ```no_run
/// let server = throwaway_pg::Builder::new()
///     .setting("log_min_messages", "warning")
///     .hba_lines(&["local all all trust", "host all all 127.0.0.1/32 trust"])
///     .start()?;
/// # Ok::<(), throwaway_pg::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    settings: Vec<(String, String)>,
    hba_lines: Option<Vec<String>>,
    ident_lines: Option<Vec<String>>,
}

impl Builder {
    /// A builder with the default configuration: trust authentication,
    /// `fsync=off`, `full_page_writes=off`, `max_connections=100`.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Adds a server setting, passed as `postgres -c name=value`. A later call
    /// with the same name replaces the earlier value; settings given here
    /// override the crate's defaults (e.g. `max_connections`). `port` and
    /// `unix_socket_directories` are managed by the crate and rejected by
    /// [`Builder::start`].
    pub fn setting(mut self, name: &str, value: &str) -> Builder {
        self.settings
            .retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
        self.settings.push((name.to_string(), value.to_string()));
        self
    }

    /// Replaces `pg_hba.conf` with exactly these lines after `initdb` (the
    /// default is initdb's all-`trust` configuration). Note that
    /// [`Server::psql`] connects as `postgres` over TCP to `127.0.0.1`
    /// without a password, so it only works if these lines allow that.
    /// [`Server::replace_hba`] changes them on a running server.
    pub fn hba_lines(mut self, lines: &[&str]) -> Builder {
        self.hba_lines = Some(to_strings(lines));
        self
    }

    /// Replaces `pg_ident.conf` with exactly these lines after `initdb` (the
    /// default has no maps): user name maps, `MAPNAME SYSTEM-USERNAME
    /// PG-USERNAME`, for `map=` options in [`Builder::hba_lines`].
    /// [`Server::replace_ident`] changes them on a running server.
    pub fn ident_lines(mut self, lines: &[&str]) -> Builder {
        self.ident_lines = Some(to_strings(lines));
        self
    }

    /// Initialises a fresh cluster and starts it; blocks until the server
    /// accepts connections. On failure everything created so far is removed
    /// and the error includes the tool output and/or the tail of the server
    /// log.
    pub fn start(self) -> Result<Server, Error> {
        self.check_settings()?;
        let bindir = find_bindir()?;
        let os_user = OsUser::for_this_process()?;
        let dirs = Dirs::create(os_user.as_ref())?;

        // From here on `server`'s Drop cleans up whatever exists.
        let mut server = Server {
            bindir,
            os_user,
            root_dir: dirs.root,
            data_dir: dirs.data,
            socket_dir: dirs.socket,
            log_file: dirs.log,
            port: 0,
            settings: self.settings,
            state: Mutex::new(State { running: false }),
            watchdog: None,
        };
        server.watchdog = Some(server.spawn_watchdog()?);
        server.initdb()?;
        if let Some(lines) = &self.hba_lines {
            server.replace_conf(ConfFile::Hba, lines)?;
        }
        if let Some(lines) = &self.ident_lines {
            server.replace_conf(ConfFile::Ident, lines)?;
        }
        start_on_a_free_port(server)
    }

    fn check_settings(&self) -> Result<(), Error> {
        for (name, _) in &self.settings {
            if MANAGED_SETTINGS
                .iter()
                .any(|managed| managed.eq_ignore_ascii_case(name))
            {
                return Err(Error(format!(
                    "setting `{name}` is managed by throwaway-pg and cannot be overridden"
                )));
            }
        }
        Ok(())
    }
}

fn to_strings(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| l.to_string()).collect()
}

/// Starts `server` on a port the kernel says is free, trying another if
/// someone took it between our check and the server's bind.
fn start_on_a_free_port(mut server: Server) -> Result<Server, Error> {
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        server.port = free_port()?;
        match server.pg_ctl_start() {
            Ok(()) => {
                server.lock_state().running = true;
                return Ok(server);
            }
            Err(StartError {
                error,
                port_in_use: true,
            }) => last_error = Some(error),
            Err(StartError { error, .. }) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| Error("could not start PostgreSQL".into())))
}

/// Binds port 0 on 127.0.0.1 to let the kernel pick a free port.
pub(crate) fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| io_error("could not bind 127.0.0.1:0 to pick a port", e))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| io_error("could not read the picked port", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn settings_and_hba() {
        let server = Builder::new()
            .setting("work_mem", "1234kB")
            .setting("max_connections", "30")
            .setting("application_name", "it's a test")
            .setting("max_connections", "20")
            .hba_lines(&["local all all trust", "host all all 127.0.0.1/32 reject"])
            .start()
            .unwrap();
        // TCP is rejected by the custom pg_hba.conf ...
        let err = server.psql("postgres", "SELECT 1").unwrap_err();
        assert!(err.to_string().contains("pg_hba.conf"), "{err}");
        // ... but the socket works.
        let output = Command::new(server.bindir().join("psql"))
            .args([
                "-X",
                "-At",
                "-c",
                "SHOW work_mem; SHOW max_connections; SHOW application_name",
                "-d",
            ])
            .arg(server.socket_dsn("postgres"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        // application_name is the client's here, so only check the others.
        let stdout = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(&lines[..2], ["1234kB", "20"]);

        let err = Builder::new().setting("port", "1").start().unwrap_err();
        assert!(err.to_string().contains("managed"), "{err}");
    }
}
