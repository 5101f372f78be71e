//! A server's directories: the root (data directory and `server.log`) under
//! the cargo target directory, and the socket directory under `/tmp`, where
//! the socket path stays short enough for `sun_path`.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{io_error, Error};
use crate::os_user::OsUser;

/// Per-process counter that makes directory names unique within a process.
pub(crate) static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directories of one server.
pub(crate) struct Dirs {
    pub(crate) root: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) socket: PathBuf,
}

impl Dirs {
    /// Creates `<base>/pglog-pg/<id>/data` and `/tmp/pgsock-<id>`, owned by
    /// the OS user if there is one. On error nothing is left behind.
    pub(crate) fn create(os_user: Option<&OsUser>) -> Result<Dirs, Error> {
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
