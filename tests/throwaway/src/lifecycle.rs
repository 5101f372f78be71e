//! Running the server's tools: `initdb`, and `pg_ctl` to start, stop, restart
//! and ask about the server, as the OS user when there is one.

use std::fmt;
use std::fs;
use std::process::{Command, Stdio};
use std::str::FromStr;

use crate::command::{command_output, run, tail};
use crate::error::{io_error, Error};
use crate::os_user::command_as;
use crate::quote::shell_quote;
use crate::server::{Server, SUPERUSER};

/// How many lines of `server.log` to quote in start errors.
const LOG_TAIL_LINES: usize = 30;
/// `pg_ctl -t` (seconds): upper bound for every start/stop wait.
const PG_CTL_TIMEOUT: &str = "30";

/// How [`Server::stop`] shuts the server down: `pg_ctl stop -m <mode>`.
///
/// Displays (and parses from) the word `pg_ctl -m` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopMode {
    /// `smart`: refuses new connections, waits until every client has
    /// disconnected, then shuts down cleanly.
    Smart,
    /// `fast`: disconnects every client (rolling back its open transaction)
    /// and shuts down cleanly.
    Fast,
    /// `immediate`: ends every server process without a clean shutdown, as a
    /// crash does; the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    /// The word `pg_ctl -m` takes: `smart`, `fast` or `immediate`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

impl fmt::Display for StopMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StopMode {
    type Err = Error;

    /// `smart`, `fast` or `immediate`, as [`StopMode::as_str`] gives them.
    fn from_str(word: &str) -> Result<StopMode, Error> {
        [StopMode::Smart, StopMode::Fast, StopMode::Immediate]
            .into_iter()
            .find(|mode| mode.as_str() == word)
            .ok_or_else(|| {
                Error(format!(
                    "unknown stop mode {word:?}: expected smart, fast or immediate"
                ))
            })
    }
}

/// A failed `pg_ctl start`, and whether another try on another port may do
/// better.
pub(crate) struct StartError {
    pub(crate) error: Error,
    pub(crate) port_in_use: bool,
}

impl Server {
    /// Stops the server with `pg_ctl stop -m <mode> -w`, for fault-injection
    /// tests. The directories are kept, so [`Server::restart`] can start it
    /// again. Errors if the server is not running.
    pub fn stop(&self, mode: StopMode) -> Result<(), Error> {
        let mut state = self.lock_state();
        let result = run(self.pg_ctl_stop(mode), "pg_ctl stop");
        state.running = self.pg_ctl_status();
        result.map(drop)
    }

    /// Starts the server again on the same port and directories (after
    /// [`Server::stop`], or after it crashed) and waits until it accepts
    /// connections. If it is still running it is first stopped with
    /// [`StopMode::Fast`], so this also works as a plain restart.
    pub fn restart(&self) -> Result<(), Error> {
        let mut state = self.lock_state();
        if self.pg_ctl_status() {
            run(self.pg_ctl_stop(StopMode::Fast), "pg_ctl stop")?;
        }
        let result = self.pg_ctl_start().map_err(|e| e.error);
        state.running = result.is_ok() || self.pg_ctl_status();
        result
    }

    /// Whether the server is currently running (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        let mut state = self.lock_state();
        state.running = self.pg_ctl_status();
        state.running
    }

    /// Contents of the server log (`server.log` next to the data directory);
    /// empty if it does not exist yet.
    pub fn server_log(&self) -> String {
        fs::read(&self.log_file)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// A command running one of the PostgreSQL binaries, as the OS user if
    /// there is one.
    fn pg_command(&self, tool: &str) -> Command {
        let mut cmd = command_as(self.os_user.as_ref(), self.bindir.join(tool));
        // The OS user may not be able to enter our working directory.
        cmd.current_dir("/").stdin(Stdio::null());
        cmd
    }

    pub(crate) fn initdb(&self) -> Result<(), Error> {
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync"]);
        run(cmd, "initdb").map(drop)
    }

    /// The `pg_ctl -o` string: shell words (pg_ctl runs postgres through
    /// `/bin/sh`), later settings overriding earlier ones.
    fn postgres_options(&self) -> String {
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            ("port".into(), self.port.to_string()),
            (
                "unix_socket_directories".into(),
                self.socket_dir.to_string_lossy().into_owned(),
            ),
            ("fsync".into(), "off".into()),
            ("full_page_writes".into(), "off".into()),
            ("max_connections".into(), "100".into()),
        ];
        for (name, value) in &self.settings {
            settings.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
            settings.push((name.clone(), value.clone()));
        }
        settings
            .iter()
            .map(|(name, value)| format!("-c {}", shell_quote(&format!("{name}={value}"))))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub(crate) fn pg_ctl_start(&self) -> Result<(), StartError> {
        let log_offset = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0) as usize;
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", PG_CTL_TIMEOUT, "-o"])
            .arg(self.postgres_options())
            .arg("start");
        let output = cmd.output().map_err(|e| StartError {
            error: io_error("could not run pg_ctl start", e),
            port_in_use: false,
        })?;
        if output.status.success() {
            return Ok(());
        }
        let log = fs::read(&self.log_file).unwrap_or_default();
        let new_log = String::from_utf8_lossy(log.get(log_offset..).unwrap_or_default());
        let port_in_use = new_log.contains("Address already in use")
            || new_log.contains("could not create any TCP/IP sockets");
        Err(StartError {
            error: Error(format!(
                "pg_ctl start (port {}) failed ({}):\n{}\n--- last lines of {} ---\n{}",
                self.port,
                output.status,
                command_output(&output),
                self.log_file.display(),
                tail(&new_log, LOG_TAIL_LINES)
            )),
            port_in_use,
        })
    }

    /// `pg_ctl stop` in `mode`, waiting (boundedly) until the server is gone.
    pub(crate) fn pg_ctl_stop(&self, mode: StopMode) -> Command {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-m",
            mode.as_str(),
            "-w",
            "-t",
            PG_CTL_TIMEOUT,
            "stop",
        ]);
        cmd
    }

    fn pg_ctl_status(&self) -> bool {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).arg("status");
        cmd.output().is_ok_and(|out| out.status.success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Builder;
    use std::path::PathBuf;

    #[test]
    fn stop_modes_are_pg_ctl_words() {
        for (mode, word) in [
            (StopMode::Smart, "smart"),
            (StopMode::Fast, "fast"),
            (StopMode::Immediate, "immediate"),
        ] {
            assert_eq!(mode.to_string(), word);
            assert_eq!(word.parse::<StopMode>().unwrap(), mode);
        }
        let err = "Fast".parse::<StopMode>().unwrap_err();
        assert!(err.to_string().contains("unknown stop mode"), "{err}");
    }

    #[test]
    fn stop_and_restart_keep_data() {
        let server = Server::start().unwrap();
        let port = server.port();
        server
            .psql(
                "postgres",
                "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)",
            )
            .unwrap();
        server.stop(StopMode::Fast).unwrap();
        assert!(!server.is_running());
        assert!(server.psql("postgres", "SELECT 1").is_err());
        assert!(server.stop(StopMode::Fast).is_err());
        server.restart().unwrap();
        assert!(server.is_running());
        assert_eq!(server.port(), port);
        assert_eq!(server.psql("postgres", "SELECT x FROM kept").unwrap(), "42");
        // Crash-like stop, then restart runs recovery.
        server.stop(StopMode::Immediate).unwrap();
        server.restart().unwrap();
        assert_eq!(server.psql("postgres", "SELECT x FROM kept").unwrap(), "42");
        // restart() on a running server is a plain restart.
        server.restart().unwrap();
        assert_eq!(server.psql("postgres", "SELECT x FROM kept").unwrap(), "42");
        assert!(server.server_log().contains("database system is ready"));
    }

    #[test]
    fn start_failure_reports_log_and_cleans_up() {
        let err = Builder::new()
            .setting("shared_buffers", "not-a-size")
            .start()
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("pg_ctl start"), "{message}");
        assert!(message.contains("shared_buffers"), "{message}");
        // The message names the log file; its directory is gone already.
        let log = message
            .split("--- last lines of ")
            .nth(1)
            .and_then(|rest| rest.split(" ---").next())
            .map(PathBuf::from)
            .expect(&message);
        assert!(!log.parent().unwrap().exists(), "{message}");
    }
}
