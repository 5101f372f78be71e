//! Cleanup, in two layers: dropping a [`Server`] stops it and removes its
//! directories, and a detached watchdog does the same once the test process is
//! gone however it ended (panic, abort, `SIGKILL`), which is what cleans up
//! servers that are never dropped, such as [`Server::shared`].

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::error::{io_error, Error};
use crate::{Server, StopMode};

/// The watchdog, a `/bin/sh` script; its arguments are described at its top.
const WATCHDOG_SCRIPT: &str = include_str!("watchdog.sh");

impl Server {
    pub(crate) fn spawn_watchdog(&self) -> Result<Child, Error> {
        let (user, runuser) = match &self.os_user {
            Some(user) => (OsString::from(&user.name), user.runuser.clone().into()),
            None => (OsString::new(), OsString::new()),
        };
        Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("pglog-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(self.bindir.join("pg_ctl"))
            .arg(&self.data_dir)
            .arg(&self.root_dir)
            .arg(&self.socket_dir)
            .arg(user)
            .arg(runuser)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C aimed at the test must not kill it.
            .process_group(0)
            .spawn()
            .map_err(|e| io_error("could not spawn the cleanup watchdog (/bin/sh)", e))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A frozen server (see `freeze`) would not stop.
        let _ = self.thaw();
        if self.data_dir.join("postmaster.pid").exists() {
            let _ = self.pg_ctl_stop(StopMode::Immediate).output();
        }
        let _ = fs::remove_dir_all(&self.root_dir);
        let _ = fs::remove_dir_all(&self.socket_dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    /// Command-line arguments of all processes whose command line contains
    /// `needle`.
    fn processes_matching(needle: &str) -> Vec<String> {
        let own = std::process::id().to_string();
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_name() != own.as_str())
            .filter_map(|entry| fs::read(entry.path().join("cmdline")).ok())
            .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
            .filter(|cmdline| cmdline.contains(needle))
            .collect()
    }

    fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn drop_removes_directories() {
        let server = Server::start().unwrap();
        let data_dir = server.data_dir().to_path_buf();
        let root = data_dir.parent().unwrap().to_path_buf();
        let socket_dir = server.socket_dir().to_path_buf();
        assert!(data_dir.is_dir() && socket_dir.is_dir());
        assert!(socket_dir
            .join(format!(".s.PGSQL.{}", server.port()))
            .exists());
        let mode = fs::metadata(&socket_dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        drop(server);
        assert!(!root.exists(), "{} still exists", root.display());
        assert!(
            !socket_dir.exists(),
            "{} still exists",
            socket_dir.display()
        );
        assert!(processes_matching(&data_dir.to_string_lossy()).is_empty());
    }

    const CHILD_ENV: &str = "THROWAWAY_PG_WATCHDOG_CHILD";

    /// Runs only as a child of `watchdog_cleans_up_after_exit`: starts the
    /// shared server and a leaked (never dropped) one, then exits without
    /// running any destructors.
    #[test]
    fn watchdog_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let shared = Server::shared();
        let leaked = Server::start().unwrap();
        for server in [shared, &leaked] {
            println!("DATA={}", server.data_dir().display());
            println!("SOCK={}", server.socket_dir().display());
        }
        std::io::stdout().flush().unwrap();
        std::mem::forget(leaked);
        std::process::exit(0);
    }

    #[test]
    fn watchdog_cleans_up_after_exit() {
        // Also checks that the watchdog does not hold on to our stdout pipe:
        // `output()` would not return if it did.
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cleanup::tests::watchdog_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let paths: Vec<PathBuf> = stdout
            .lines()
            // The first line follows the harness's "test … " prefix.
            .filter_map(|line| {
                let (_, rest) = line.split_once("DATA=").or(line.split_once("SOCK="))?;
                Some(rest)
            })
            .map(PathBuf::from)
            .collect();
        assert_eq!(paths.len(), 4, "{stdout}");
        let gone = wait_until(Duration::from_secs(10), || {
            paths.iter().all(|path| {
                !path.exists() && processes_matching(&path.to_string_lossy()).is_empty()
            })
        });
        assert!(gone, "leftovers after the child exited: {paths:?}");
    }
}
