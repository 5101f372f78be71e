//! Throwaway PostgreSQL servers for tests, examples and benchmarks (written for
//! pglog's).
//!
//! [`Server::start`] (or [`Builder::start`]) initialises a fresh cluster with
//! `initdb`, starts it with `pg_ctl`, and makes it reachable over TCP on
//! `127.0.0.1` (a random free port) and over a private Unix socket directory
//! under `/tmp`. The superuser role is `postgres` and authentication is
//! `trust` unless [`Builder::hba_lines`] says otherwise; [`Builder::ident_lines`]
//! fills `pg_ident.conf`, and [`Server::replace_hba`],
//! [`Server::replace_ident`] and [`Server::write_data_file`] change a server's
//! files after it started. [`Pgbouncer`] puts a connection pooler in front of
//! one.
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
//! run as root; see [`Server::os_user`]. The user is `$THROWAWAY_PG_OSUSER`,
//! else `postgres` if it exists, else `nobody`.
//!
//! Binaries are looked up in `$THROWAWAY_PG_BINDIR`, then `pg_config --bindir`,
//! then the newest `/usr/lib/postgresql/*/bin`. pglog's `.ci/ensure-postgres`
//! installs them on Debian/Ubuntu.
//!
//! Both variables are also read under the names they had inside pglog,
//! `PGLOG_PG_BINDIR` and `PGLOG_PG_OSUSER`; the `THROWAWAY_PG_` name wins.
//!
//! Needs Linux (`/proc`), `/bin/sh`, `id`, `kill`, and `runuser` (util-linux)
//! when run as root.
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

mod binaries;
mod builder;
mod cleanup;
mod command;
mod conf;
mod dirs;
mod env;
mod error;
mod faults;
mod lifecycle;
mod os_user;
mod pgbouncer;
mod quote;
mod server;

pub use builder::Builder;
pub use error::Error;
pub use lifecycle::StopMode;
pub use pgbouncer::Pgbouncer;
pub use server::Server;
