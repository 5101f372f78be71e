//! The unprivileged OS user the binaries run as when this process is root:
//! PostgreSQL (and pgbouncer) refuse to run as root, and tests in containers
//! often do.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env;
use crate::error::{io_error, Error};

/// The unprivileged user the binaries run as when we are root.
#[derive(Debug, Clone)]
pub(crate) struct OsUser {
    pub(crate) name: String,
    uid: u32,
    gid: u32,
    pub(crate) runuser: PathBuf,
}

impl OsUser {
    /// The user to run as if this process is root, `None` otherwise.
    pub(crate) fn for_this_process() -> Result<Option<OsUser>, Error> {
        if effective_uid_is_root() {
            OsUser::lookup().map(Some)
        } else {
            Ok(None)
        }
    }

    /// `$THROWAWAY_PG_OSUSER`, else `postgres` if it exists, else `nobody`.
    fn lookup() -> Result<OsUser, Error> {
        let var = env::OSUSER.name;
        let name = match env::OSUSER.get().map(|(_, name)| name.into_string()) {
            Some(Ok(name)) => name,
            _ if id_number("-u", "postgres").is_some() => "postgres".to_string(),
            _ => "nobody".to_string(),
        };
        let uid = id_number("-u", &name);
        let gid = id_number("-g", &name);
        let (Some(uid), Some(gid)) = (uid, gid) else {
            return Err(Error(format!(
                "running as root, so PostgreSQL must run as another OS user, \
                 but user {name:?} does not exist (set {var})"
            )));
        };
        if uid == 0 {
            return Err(Error(format!(
                "OS user {name:?} has uid 0; PostgreSQL refuses to run as root \
                 (set {var} to an unprivileged user)"
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

    /// Gives `path` to this user (and its primary group).
    pub(crate) fn chown(&self, path: &Path) -> Result<(), Error> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|e| {
            io_error(
                format_args!("could not chown {} to {}", path.display(), self.name),
                e,
            )
        })
    }
}

/// A command running `program` as `user` (through `runuser`), or as the
/// current user when there is none.
pub(crate) fn command_as(user: Option<&OsUser>, program: impl AsRef<OsStr>) -> Command {
    match user {
        Some(user) => {
            let mut cmd = Command::new(&user.runuser);
            cmd.arg("-u").arg(&user.name).arg("--").arg(program);
            cmd
        }
        None => Command::new(program),
    }
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
pub(crate) fn effective_uid_is_root() -> bool {
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
    let mut cmd = Command::new("id");
    cmd.arg(flag).arg(user);
    crate::command::answer(cmd)?.parse().ok()
}
