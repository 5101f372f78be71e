//! A throwaway server as its users see it: where it is, how to connect, and
//! running SQL through psql. Starting it is [`crate::Builder`]'s job, stopping
//! and restarting [`crate::lifecycle`]'s, removing it [`crate::cleanup`]'s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::error::{io_error, Error};
use crate::os_user::OsUser;
use crate::quote::{conninfo_value, percent_encode, psql_dbname_arg, quote_ident};
use crate::Builder;

/// Name of the bootstrap superuser role created by `initdb -U`.
pub(crate) const SUPERUSER: &str = "postgres";

/// The per-process server behind [`Server::shared`].
static SHARED: OnceLock<Server> = OnceLock::new();

/// A running (or stopped, see [`Server::stop`]) throwaway PostgreSQL server.
///
/// Dropping it stops the server and deletes its directories. Several servers
/// can run at once in one process; each has its own port and directories.
#[derive(Debug)]
pub struct Server {
    pub(crate) bindir: PathBuf,
    pub(crate) os_user: Option<OsUser>,
    /// `<target>/pglog-pg/<pid>-<counter>-<nanos>`: holds `data` and
    /// `server.log`.
    pub(crate) root_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) socket_dir: PathBuf,
    pub(crate) log_file: PathBuf,
    pub(crate) port: u16,
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) state: Mutex<State>,
    pub(crate) watchdog: Option<Child>,
}

/// What [`Server::is_running`] last found, updated under the lock by every
/// start and stop so that they do not interleave.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) running: bool,
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

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os_user::effective_uid_is_root;
    use std::time::Instant;

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
}
