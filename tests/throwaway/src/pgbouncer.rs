//! A real pgbouncer in front of a throwaway server, for tests of what a connection
//! pooler does to its clients (Debian's `pgbouncer` package; `.ci/ensure-postgres`
//! installs it).
//!
//! Like the server, it runs as the unprivileged OS user when the tests run as root
//! (pgbouncer refuses to run as root), trusts every login as `postgres`, listens on a
//! free port on 127.0.0.1, and is stopped when dropped or when the test process dies.

use std::fs;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::builder::free_port;
use crate::dirs::COUNTER;
use crate::error::{io_error, Error};
use crate::os_user::command_as;
use crate::quote::conninfo_value;
use crate::server::SUPERUSER;
use crate::Server;

/// A running pgbouncer; dropping it stops it.
#[derive(Debug)]
pub struct Pgbouncer {
    port: u16,
    dir: PathBuf,
    child: Child,
    watchdog: Option<Child>,
}

/// Stops pgbouncer (by its pid file) once the test process `PID` is gone.
const WATCHDOG_SCRIPT: &str = r#"
exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
trap '' HUP INT
pid=$1 pidfile=$2 dir=$3
while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
[ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null
sleep 0.5
rm -rf -- "$dir"
"#;

impl Pgbouncer {
    /// Starts pgbouncer in front of `server` with `pool_mode` (`session`,
    /// `transaction` or `statement`) and `pool_size` server connections per database
    /// and user, and waits until it accepts connections.
    pub fn start(server: &Server, pool_mode: &str, pool_size: u32) -> Result<Pgbouncer, Error> {
        let program = find_pgbouncer()?;
        let dir = server.root_dir.join(format!(
            "pgbouncer-{}",
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir)
            .map_err(|e| io_error(format_args!("could not create {}", dir.display()), e))?;
        let port = free_port()?;
        let ini = dir.join("pgbouncer.ini");
        let pidfile = dir.join("pgbouncer.pid");
        write(
            &dir.join("userlist.txt"),
            &format!("\"{SUPERUSER}\" \"\"\n"),
        )?;
        write(
            &ini,
            &format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={pg_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = {pool_mode}\n\
                 default_pool_size = {pool_size}\n\
                 max_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {log}\n\
                 pidfile = {pid}\n",
                pg_port = server.port(),
                users = dir.join("userlist.txt").display(),
                log = dir.join("pgbouncer.log").display(),
                pid = pidfile.display(),
            ),
        )?;
        if let Some(user) = &server.os_user {
            user.chown(&dir)?;
            for file in ["pgbouncer.ini", "userlist.txt"] {
                user.chown(&dir.join(file))?;
            }
        }
        let mut cmd = command_as(server.os_user.as_ref(), &program);
        cmd.arg(&ini)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| io_error(format_args!("could not run {}", program.display()), e))?;
        let watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("pglog-pgbouncer-watchdog")
            .arg(std::process::id().to_string())
            .arg(&pidfile)
            .arg(&dir)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok();
        let mut bouncer = Pgbouncer {
            port,
            dir,
            child,
            watchdog,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = bouncer.child.try_wait() {
                return Err(Error(format!(
                    "pgbouncer exited at start ({status}):\n{}",
                    bouncer.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error(format!(
                    "pgbouncer did not listen within 10 s:\n{}",
                    bouncer.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(bouncer)
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq `key=value` DSN for `dbname` through pgbouncer, as the superuser.
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={}",
            self.port,
            conninfo_value(dbname)
        )
    }

    /// pgbouncer's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = Command::new("kill").arg("-TERM").arg(pid.trim()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text)
        .map_err(|e| io_error(format_args!("could not write {}", path.display()), e))
}

fn find_pgbouncer() -> Result<PathBuf, Error> {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("pgbouncer"));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error(
        "pgbouncer not found; run .ci/ensure-postgres (installs Debian's pgbouncer package)".into(),
    ))
}
