//! Throwaway PostgreSQL servers for pglog's tests, examples and benchmarks.
//!
//! [`Server::start`] (or [`Builder::start`]) initialises a fresh cluster with
//! `initdb`, starts it with `pg_ctl`, and makes it reachable over TCP on
//! `127.0.0.1` (a random free port) and over a private Unix socket directory
//! under `/tmp`. The superuser role is `postgres` and authentication is
//! `trust` unless [`Builder::hba_lines`] says otherwise.
//!
//! Cleanup is layered:
//!
//! * dropping a [`Server`] stops it (`pg_ctl stop -m immediate`) and removes
//!   its data directory and socket directory;
//! * every server also gets a small detached watchdog (`sh`) that notices
//!   when the test process is gone (normal exit, panic, abort, `SIGKILL`)
//!   and then does the same cleanup. This is what cleans up the never-dropped
//!   per-process [`Server::shared`] instance.
//!
//! When the test runs as root (typical in containers), `initdb`, `pg_ctl` and
//! `postgres` are run through `runuser -u <user>` because PostgreSQL refuses to
//! run as root; see [`Server::os_user`].
//!
//! Binaries are looked up in `$PGLOG_PG_BINDIR`, then `pg_config --bindir`,
//! then the newest `/usr/lib/postgresql/*/bin`. `.ci/ensure-postgres`
//! installs them on Debian/Ubuntu.
//!
//! ```no_run
//! let server = throwaway_pg::Server::start()?;
//! let dsn = server.create_database("app")?;
//! assert_eq!(server.psql("app", "SELECT 1")?, "1");
//! println!("connect with {dsn}");
//! # Ok::<(), throwaway_pg::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

mod faults;
mod pgbouncer;

pub use pgbouncer::Pgbouncer;

const NOT_FOUND: &str = "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; \
run .ci/ensure-postgres (installs Debian's postgresql package) or set PGLOG_PG_BINDIR";

/// Name of the bootstrap superuser role created by `initdb -U`.
const SUPERUSER: &str = "postgres";
/// How many ports to try when the chosen one turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// How many lines of `server.log` to quote in start errors.
const LOG_TAIL_LINES: usize = 30;
/// `pg_ctl -t` (seconds): upper bound for every start/stop wait.
const PG_CTL_TIMEOUT: &str = "30";
/// Settings that this crate manages itself and that [`Builder::setting`] may
/// not override.
const MANAGED_SETTINGS: &[&str] = &["port", "unix_socket_directories"];

/// Per-process counter that makes directory names unique within a process.
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// The per-process server behind [`Server::shared`].
static SHARED: OnceLock<Server> = OnceLock::new();

/// Watchdog run as `sh -c WATCHDOG_SCRIPT pglog-pg-watchdog PID PG_CTL DATA
/// ROOT SOCKDIR USER RUNUSER`. It polls every 200 ms whether the test process
/// is still alive (and not a zombie); once it is gone it stops the server
/// immediately and removes the directories. `USER`/`RUNUSER` are empty when
/// the binaries run as the current user.
const WATCHDOG_SCRIPT: &str = r#"
exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
trap '' HUP INT
cd /
pid=$1 pg_ctl=$2 data=$3 root=$4 sock=$5 user=$6 runuser=$7
alive() {
    kill -0 "$pid" 2>/dev/null || return 1
    [ -r "/proc/$pid/status" ] || return 0
    while IFS= read -r line; do
        case $line in
            State:*"Z ("*|State:*"X ("*) return 1 ;;
            State:*) return 0 ;;
        esac
    done < "/proc/$pid/status"
    return 0
}
while alive; do sleep 0.2; done
# A test that froze the server (SIGSTOP) and died before thawing it: resume every process
# first, or the stop below would wait for them forever.
pm=$(head -n 1 "$data/postmaster.pid" 2>/dev/null)
if [ -n "$pm" ]; then
    kill -CONT "$pm" 2>/dev/null
    for stat in /proc/[0-9]*/stat; do
        read -r line < "$stat" 2>/dev/null || continue
        set -- $line
        [ "$4" = "$pm" ] && kill -CONT "$1" 2>/dev/null
    done
fi
if [ -f "$data/postmaster.pid" ]; then
    if [ -n "$user" ]; then
        "$runuser" -u "$user" -- "$pg_ctl" -D "$data" -m immediate -w -t 30 stop
    else
        "$pg_ctl" -D "$data" -m immediate -w -t 30 stop
    fi
fi
rm -rf -- "$root" "$sock"
"#;

/// Error returned by this crate: a human-readable message that includes the
/// relevant command output or server log tail.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn io_error(context: impl fmt::Display, err: io::Error) -> Error {
    Error(format!("{context}: {err}"))
}

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
    pub fn hba_lines(mut self, lines: &[&str]) -> Builder {
        self.hba_lines = Some(lines.iter().map(|l| l.to_string()).collect());
        self
    }

    /// Initialises a fresh cluster and starts it; blocks until the server
    /// accepts connections. On failure everything created so far is removed
    /// and the error includes the tool output and/or the tail of the server
    /// log.
    pub fn start(self) -> Result<Server, Error> {
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
        let bindir = find_bindir()?;
        let os_user = if effective_uid_is_root() {
            Some(OsUser::lookup()?)
        } else {
            None
        };
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
            server.write_hba(lines)?;
        }

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
}

/// A running (or stopped, see [`Server::stop`]) throwaway PostgreSQL server.
///
/// Dropping it stops the server and deletes its directories. Several servers
/// can run at once in one process; each has its own port and directories.
#[derive(Debug)]
pub struct Server {
    bindir: PathBuf,
    os_user: Option<OsUser>,
    /// `<target>/pglog-pg/<pid>-<counter>-<nanos>`: holds `data` and
    /// `server.log`.
    root_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    settings: Vec<(String, String)>,
    state: Mutex<State>,
    watchdog: Option<Child>,
}

#[derive(Debug)]
struct State {
    running: bool,
}

struct StartError {
    error: Error,
    port_in_use: bool,
}

impl Server {
    /// Starts a server with the default configuration; same as
    /// `Builder::new().start()`.
    pub fn start() -> Result<Server, Error> {
        Builder::new().start()
    }

    /// A per-process server shared by all callers, started on first use and
    /// never dropped (its watchdog stops it and removes its files once the
    /// process has exited).
    ///
    /// Tests sharing it should use their own databases
    /// ([`Server::create_database`]) and must not [`Server::stop`] it.
    ///
    /// # Panics
    ///
    /// Panics with the error message if the server cannot be started (this is
    /// meant for tests, where that is the most useful reaction).
    pub fn shared() -> &'static Server {
        SHARED.get_or_init(|| match Server::start() {
            Ok(server) => server,
            Err(err) => panic!("could not start the shared throwaway PostgreSQL server: {err}"),
        })
    }

    /// TCP port the server listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Private directory holding the server's Unix socket
    /// (`/tmp/pgsock-…`, mode 0700, owned by [`Server::os_user`] if any).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Directory holding the PostgreSQL binaries in use.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The OS user the server runs as (via `runuser`) when this process runs
    /// as root; `None` when the binaries run as the current user. Root's own
    /// processes can still read the data directory and use the socket.
    pub fn os_user(&self) -> Option<&str> {
        self.os_user.as_ref().map(|user| user.name.as_str())
    }

    /// Name of the superuser role (`postgres`).
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// libpq key/value connection string over TCP:
    /// `host=127.0.0.1 port=P user=postgres dbname=DB` (the database name is
    /// quoted if it needs to be).
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname={}",
            self.port,
            conninfo_value(dbname)
        )
    }

    /// Connection URL over TCP: `postgresql://postgres@127.0.0.1:P/DB` (the
    /// database name is percent-encoded if it needs to be).
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(dbname)
        )
    }

    /// libpq key/value connection string over the Unix socket:
    /// `host=<socket_dir> port=P user=postgres dbname=DB`.
    pub fn socket_dsn(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={}",
            conninfo_value(&self.socket_dir.to_string_lossy()),
            self.port,
            conninfo_value(dbname)
        )
    }

    /// Runs `CREATE DATABASE "name"` (the name is quoted as an identifier, so
    /// it is used verbatim) and returns [`Server::dsn`] for it.
    pub fn create_database(&self, name: &str) -> Result<String, Error> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )?;
        Ok(self.dsn(name))
    }

    /// Runs SQL through `psql -X -q -At -v ON_ERROR_STOP=1` as `postgres`
    /// over TCP, feeding `sql` on stdin (so it may contain several
    /// statements, or psql meta-commands).
    ///
    /// Returns psql's stdout without trailing newlines: unaligned,
    /// tuples-only, so `SELECT 1` gives `"1"` and multiple rows are separated
    /// by `\n` and columns by `|`. On failure the error includes psql's
    /// stderr. The connection attempt times out after 10 s
    /// (`PGCONNECT_TIMEOUT`); the SQL itself is not time-limited.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String, Error> {
        let bin = self.bindir.join("psql");
        let program = if bin.is_file() {
            bin
        } else {
            PathBuf::from("psql")
        };
        let mut cmd = Command::new(&program);
        cmd.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(self.port.to_string())
        .args(["-U", SUPERUSER, "-d"])
        .arg(psql_dbname_arg(dbname))
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGHOSTADDR")
        .env_remove("PGSERVICE")
        .env_remove("PGSSLMODE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| io_error(format_args!("could not run {}", program.display()), e))?;
        // Write stdin from another thread so that large inputs and outputs
        // cannot deadlock on full pipes.
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let input = sql.to_owned();
        let writer = std::thread::spawn(move || {
            // psql may exit early (ON_ERROR_STOP); a broken pipe is reported
            // through its exit status and stderr instead.
            let _ = stdin.write_all(input.as_bytes());
        });
        let output = child
            .wait_with_output()
            .map_err(|e| io_error("could not wait for psql", e))?;
        let _ = writer.join();
        if output.status.success() {
            let stdout = String::from_utf8_lossy(&output.stdout);
            Ok(stdout.trim_end_matches(['\n', '\r']).to_string())
        } else {
            Err(Error(format!(
                "psql on database {dbname:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            )))
        }
    }

    /// Stops the server with `pg_ctl stop -m <mode> -w` (`mode` is `smart`,
    /// `fast` or `immediate`), for fault-injection tests. The directories are
    /// kept, so [`Server::restart`] can start it again. Errors if the server
    /// is not running.
    pub fn stop(&self, mode: &str) -> Result<(), Error> {
        let mut state = self.lock_state();
        let result = run(self.pg_ctl_stop(mode), "pg_ctl stop");
        state.running = self.pg_ctl_status();
        result.map(drop)
    }

    /// Starts the server again on the same port and directories (after
    /// [`Server::stop`], or after it crashed) and waits until it accepts
    /// connections. If it is still running it is first stopped with `-m fast`,
    /// so this also works as a plain restart.
    pub fn restart(&self) -> Result<(), Error> {
        let mut state = self.lock_state();
        if self.pg_ctl_status() {
            run(self.pg_ctl_stop("fast"), "pg_ctl stop")?;
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

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A command running one of the PostgreSQL binaries, as the OS user if
    /// there is one.
    fn pg_command(&self, tool: &str) -> Command {
        let program = self.bindir.join(tool);
        let mut cmd = match &self.os_user {
            Some(user) => {
                let mut cmd = Command::new(&user.runuser);
                cmd.arg("-u").arg(&user.name).arg("--").arg(program);
                cmd
            }
            None => Command::new(program),
        };
        // The OS user may not be able to enter our working directory.
        cmd.current_dir("/").stdin(Stdio::null());
        cmd
    }

    fn spawn_watchdog(&self) -> Result<Child, Error> {
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

    fn initdb(&self) -> Result<(), Error> {
        let mut cmd = self.pg_command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync"]);
        run(cmd, "initdb").map(drop)
    }

    fn write_hba(&self, lines: &[String]) -> Result<(), Error> {
        let path = self.data_dir.join("pg_hba.conf");
        let mut contents = lines.join("\n");
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

    fn pg_ctl_start(&self) -> Result<(), StartError> {
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
    fn pg_ctl_stop(&self, mode: &str) -> Command {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t", PG_CTL_TIMEOUT, "stop"]);
        cmd
    }

    fn pg_ctl_status(&self) -> bool {
        let mut cmd = self.pg_command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).arg("status");
        cmd.output().is_ok_and(|out| out.status.success())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A frozen server (see `freeze`) would not stop.
        let _ = self.thaw();
        if self.data_dir.join("postmaster.pid").exists() {
            let _ = self.pg_ctl_stop("immediate").output();
        }
        let _ = fs::remove_dir_all(&self.root_dir);
        let _ = fs::remove_dir_all(&self.socket_dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// The unprivileged user the binaries run as when we are root.
#[derive(Debug, Clone)]
struct OsUser {
    name: String,
    uid: u32,
    gid: u32,
    runuser: PathBuf,
}

impl OsUser {
    fn lookup() -> Result<OsUser, Error> {
        let name = match std::env::var("PGLOG_PG_OSUSER") {
            Ok(name) if !name.is_empty() => name,
            _ if id_number("-u", "postgres").is_some() => "postgres".to_string(),
            _ => "nobody".to_string(),
        };
        let uid = id_number("-u", &name);
        let gid = id_number("-g", &name);
        let (Some(uid), Some(gid)) = (uid, gid) else {
            return Err(Error(format!(
                "running as root, so PostgreSQL must run as another OS user, \
                 but user {name:?} does not exist (set PGLOG_PG_OSUSER)"
            )));
        };
        if uid == 0 {
            return Err(Error(format!(
                "OS user {name:?} has uid 0; PostgreSQL refuses to run as root \
                 (set PGLOG_PG_OSUSER to an unprivileged user)"
            )));
        }
        let runuser = find_runuser().ok_or_else(|| {
            Error(
                "running as root, so PostgreSQL must run as another OS user, but `runuser` \
                 (util-linux) was not found; run .ci/ensure-postgres"
                    .to_string(),
            )
        })?;
        Ok(OsUser {
            name,
            uid,
            gid,
            runuser,
        })
    }

    fn chown(&self, path: &Path) -> Result<(), Error> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|e| {
            io_error(
                format_args!("could not chown {} to {}", path.display(), self.name),
                e,
            )
        })
    }
}

/// The directories of one server.
struct Dirs {
    root: PathBuf,
    data: PathBuf,
    log: PathBuf,
    socket: PathBuf,
}

impl Dirs {
    /// Creates `<base>/pglog-pg/<id>/data` and `/tmp/pgsock-<id>`, owned by
    /// the OS user if there is one. On error nothing is left behind.
    fn create(os_user: Option<&OsUser>) -> Result<Dirs, Error> {
        let pid = std::process::id();
        let parent = pglog_pg_dir(os_user)?;
        let (root, counter) = loop {
            let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
            let root = parent.join(format!("{pid}-{counter}-{}", nanos()));
            match fs::DirBuilder::new().mode(0o700).create(&root) {
                Ok(()) => break (root, counter),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(io_error(
                        format_args!("could not create {}", root.display()),
                        e,
                    ))
                }
            }
        };
        let data = root.join("data");
        let result = (|| {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&data)
                .map_err(|e| io_error(format_args!("could not create {}", data.display()), e))?;
            if let Some(user) = os_user {
                user.chown(&root)?;
                user.chown(&data)?;
            }
            create_socket_dir(pid, counter, os_user)
        })();
        match result {
            Ok(socket) => Ok(Dirs {
                log: root.join("server.log"),
                root,
                data,
                socket,
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&root);
                Err(e)
            }
        }
    }
}

fn create_socket_dir(pid: u32, counter: u64, os_user: Option<&OsUser>) -> Result<PathBuf, Error> {
    for _ in 0..100 {
        let path = PathBuf::from(format!(
            "/tmp/pgsock-{pid}-{counter}-{:08x}",
            random_u64() as u32
        ));
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                let result = fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                    .map_err(|e| io_error(format_args!("could not chmod {}", path.display()), e))
                    .and_then(|()| os_user.map_or(Ok(()), |user| user.chown(&path)));
                return match result {
                    Ok(()) => Ok(path),
                    Err(e) => {
                        let _ = fs::remove_dir(&path);
                        Err(e)
                    }
                };
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io_error(
                    format_args!("could not create {}", path.display()),
                    e,
                ))
            }
        }
    }
    Err(Error(
        "could not create a unique socket directory under /tmp".into(),
    ))
}

/// `<base>/pglog-pg`, created if needed. When the binaries run as another OS
/// user, every ancestor must be traversable by others; if the target dir is
/// not (say it lives under /root), fall back to the system temp dir.
fn pglog_pg_dir(os_user: Option<&OsUser>) -> Result<PathBuf, Error> {
    let mut candidates = Vec::new();
    if let Some(target) = target_dir() {
        candidates.push(target);
    }
    candidates.push(std::env::temp_dir());
    let mut problems = Vec::new();
    for base in candidates {
        let dir = base.join("pglog-pg");
        if let Err(e) = fs::create_dir_all(&dir) {
            problems.push(format!("could not create {}: {e}", dir.display()));
            continue;
        }
        if os_user.is_none() {
            return Ok(dir);
        }
        // Best effort: a restrictive umask must not lock the OS user out.
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
        match untraversable_ancestor(&dir) {
            None => return Ok(dir),
            Some(blocker) => problems.push(format!(
                "{} is not traversable by other users (needs o+x)",
                blocker.display()
            )),
        }
    }
    Err(Error(format!(
        "no usable directory for the PostgreSQL data directory: {}",
        problems.join("; ")
    )))
}

fn untraversable_ancestor(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|ancestor| fs::metadata(ancestor).is_ok_and(|md| md.mode() & 0o001 == 0))
        .map(Path::to_path_buf)
}

/// The cargo target directory, if we can tell.
fn target_dir() -> Option<PathBuf> {
    for var in ["CARGO_TARGET_TMPDIR", "CARGO_TARGET_DIR"] {
        if let Some(value) = std::env::var_os(var) {
            let path = PathBuf::from(value);
            // A relative CARGO_TARGET_DIR is relative to wherever cargo was
            // invoked, which we do not know.
            if path.is_absolute() {
                return Some(path);
            }
        }
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "target"))
        .map(Path::to_path_buf)
}

/// Finds the directory with `initdb`, `pg_ctl` and `postgres`.
fn find_bindir() -> Result<PathBuf, Error> {
    find_bindir_in(
        std::env::var_os("PGLOG_PG_BINDIR"),
        pg_config_bindir(),
        Path::new("/usr/lib/postgresql"),
    )
}

fn find_bindir_in(
    env: Option<OsString>,
    pg_config: Option<PathBuf>,
    debian_root: &Path,
) -> Result<PathBuf, Error> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = env.filter(|value| !value.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_initdb(&dir) {
            Ok(dir)
        } else {
            Err(Error(format!(
                "PGLOG_PG_BINDIR={} does not contain initdb; {NOT_FOUND}",
                dir.display()
            )))
        };
    }
    if let Some(dir) = pg_config.filter(|dir| has_initdb(dir)) {
        return Ok(dir);
    }
    let mut versions: Vec<(Vec<u64>, PathBuf)> = fs::read_dir(debian_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()?;
            let bin = entry.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| Error(NOT_FOUND.to_string()))
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

fn find_runuser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join("runuser"))
        .find(|candidate| candidate.is_file())
}

/// Whether the effective uid is 0, from `/proc/self/status` (falls back to
/// `id -u`).
fn effective_uid_is_root() -> bool {
    let from_proc = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1))
                .and_then(|euid| euid.parse::<u32>().ok())
        });
    let euid = from_proc.or_else(|| {
        let output = Command::new("id").arg("-u").output().ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    });
    euid == Some(0)
}

/// `id -u USER` / `id -g USER`.
fn id_number(flag: &str, user: &str) -> Option<u32> {
    let output = Command::new("id")
        .arg(flag)
        .arg(user)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// Binds port 0 on 127.0.0.1 to let the kernel pick a free port.
fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| io_error("could not bind 127.0.0.1:0 to pick a port", e))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| io_error("could not read the picked port", e))
}

fn run(mut cmd: Command, what: &str) -> Result<Output, Error> {
    let output = cmd
        .output()
        .map_err(|e| io_error(format_args!("could not run {what}"), e))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error(format!(
            "{what} failed ({}):\n{}",
            output.status,
            command_output(&output)
        )))
    }
}

fn command_output(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.trim_end().to_string()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn nanos() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(nanos());
    hasher.write_u64(COUNTER.load(Ordering::Relaxed));
    hasher.finish()
}

/// Quotes a word for `/bin/sh` if needed.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Quotes a libpq key/value connection string value if needed.
fn conninfo_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
    }
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Quotes an SQL identifier: `"name"` with `"` doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// psql treats a `-d` value containing `=` or starting with a URI prefix as a
/// connection string; pass such database names as `dbname='…'` instead.
fn psql_dbname_arg(dbname: &str) -> String {
    if dbname.contains('=')
        || dbname.starts_with("postgres://")
        || dbname.starts_with("postgresql://")
    {
        format!("dbname={}", conninfo_value_always_quoted(dbname))
    } else {
        dbname.to_string()
    }
}

fn conninfo_value_always_quoted(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn select_one() {
        let started = Instant::now();
        let server = Server::start().unwrap();
        eprintln!("server started in {} ms", started.elapsed().as_millis());
        assert_eq!(server.psql("postgres", "SELECT 1").unwrap(), "1");
        assert_eq!(server.superuser(), "postgres");
        assert!(server.is_running());
        assert!(server.data_dir().join("PG_VERSION").is_file());
        assert!(server.bindir().join("initdb").is_file());
        assert_eq!(
            server
                .psql("postgres", "SHOW fsync; SHOW max_connections")
                .unwrap(),
            "off\n100"
        );
        if effective_uid_is_root() {
            assert!(server.os_user().is_some());
        } else {
            assert_eq!(server.os_user(), None);
        }
        let port = server.port();
        assert_eq!(
            server.dsn("db"),
            format!("host=127.0.0.1 port={port} user=postgres dbname=db")
        );
        assert_eq!(
            server.url("db"),
            format!("postgresql://postgres@127.0.0.1:{port}/db")
        );
        assert_eq!(
            server.socket_dsn("db"),
            format!(
                "host={} port={port} user=postgres dbname=db",
                server.socket_dir().display()
            )
        );
        let err = server
            .psql("postgres", "SELECT * FROM missing")
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn create_database_and_socket_connection() {
        let server = Server::start().unwrap();
        let dsn = server.create_database("app").unwrap();
        assert_eq!(dsn, server.dsn("app"));
        assert_eq!(
            server.psql("app", "SELECT current_database()").unwrap(),
            "app"
        );
        let weird = "we\"ird db=1";
        server.create_database(weird).unwrap();
        assert_eq!(
            server.psql(weird, "SELECT current_database()").unwrap(),
            weird
        );
        assert!(server.url(weird).ends_with("/we%22ird%20db%3D1"));
        assert!(server.create_database("app").is_err());

        // Over the Unix socket, using socket_dsn as a conninfo string.
        let output = Command::new(server.bindir().join("psql"))
            .args([
                "-X",
                "-At",
                "-c",
                "SELECT current_database(), inet_server_addr() IS NULL",
                "-d",
            ])
            .arg(server.socket_dsn(weird))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("{weird}|t")
        );
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
        server.stop("fast").unwrap();
        assert!(!server.is_running());
        assert!(server.psql("postgres", "SELECT 1").is_err());
        assert!(server.stop("fast").is_err());
        server.restart().unwrap();
        assert!(server.is_running());
        assert_eq!(server.port(), port);
        assert_eq!(server.psql("postgres", "SELECT x FROM kept").unwrap(), "42");
        // Crash-like stop, then restart runs recovery.
        server.stop("immediate").unwrap();
        server.restart().unwrap();
        assert_eq!(server.psql("postgres", "SELECT x FROM kept").unwrap(), "42");
        // restart() on a running server is a plain restart.
        server.restart().unwrap();
        assert_eq!(server.psql("postgres", "SELECT x FROM kept").unwrap(), "42");
        assert!(server.server_log().contains("database system is ready"));
    }

    #[test]
    fn two_servers_at_once() {
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(Server::start);
            let b = scope.spawn(Server::start);
            (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
        });
        assert_ne!(a.port(), b.port());
        assert_ne!(a.data_dir(), b.data_dir());
        assert_ne!(a.socket_dir(), b.socket_dir());
        a.psql("postgres", "CREATE TABLE only_in_a ()").unwrap();
        assert!(b.psql("postgres", "SELECT * FROM only_in_a").is_err());
        drop(a);
        assert_eq!(b.psql("postgres", "SELECT 2").unwrap(), "2");
    }

    #[test]
    fn shared_is_shared() {
        let first = Server::shared();
        let second = Server::shared();
        assert!(std::ptr::eq(first, second));
        assert_eq!(first.port(), second.port());
        assert_eq!(first.psql("postgres", "SELECT 3").unwrap(), "3");
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

    #[test]
    fn bindir_lookup() {
        let missing = Path::new("/nonexistent/throwaway-pg");
        let err = find_bindir_in(None, None, missing).unwrap_err();
        assert_eq!(err.to_string(), NOT_FOUND);
        let err = find_bindir_in(Some("/nonexistent".into()), None, missing).unwrap_err();
        assert!(
            err.to_string().contains("PGLOG_PG_BINDIR=/nonexistent"),
            "{err}"
        );
        let real = find_bindir().unwrap();
        assert_eq!(
            find_bindir_in(Some(real.clone().into()), None, missing).unwrap(),
            real
        );
        assert_eq!(
            find_bindir_in(None, Some(real.clone()), missing).unwrap(),
            real
        );
        // The Debian layout: highest version with initdb wins.
        let tmp = std::env::temp_dir().join(format!("throwaway-pg-bindir-{}", std::process::id()));
        for version in ["9.6", "15", "16"] {
            fs::create_dir_all(tmp.join(version).join("bin")).unwrap();
        }
        fs::write(tmp.join("9.6/bin/initdb"), "").unwrap();
        fs::write(tmp.join("15/bin/initdb"), "").unwrap();
        let found = find_bindir_in(None, Some(missing.into()), &tmp);
        fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(found.unwrap(), tmp.join("15/bin"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(shell_quote("a=b"), "a=b");
        assert_eq!(shell_quote("x='it''s'"), r#"'x='\''it'\'''\''s'\'''"#);
        assert_eq!(conninfo_value("db"), "db");
        assert_eq!(conninfo_value("a b'c"), r"'a b\'c'");
        assert_eq!(conninfo_value(""), "''");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
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
                "tests::watchdog_child",
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
