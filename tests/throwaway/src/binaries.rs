//! Finding the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`):
//! `$THROWAWAY_PG_BINDIR`, then `pg_config --bindir`, then Debian's
//! `/usr/lib/postgresql/<version>/bin`, where several versions may sit side by
//! side and none of them is on `PATH`.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env;
use crate::Error;

/// What to say when no directory qualifies.
fn not_found() -> String {
    format!(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; \
         run .ci/ensure-postgres (installs Debian's postgresql package) or set {}",
        env::BINDIR.name
    )
}

/// Finds the directory with `initdb`, `pg_ctl` and `postgres`.
pub(crate) fn find_bindir() -> Result<PathBuf, Error> {
    find_bindir_in(
        env::BINDIR.get(),
        pg_config_bindir(),
        Path::new("/usr/lib/postgresql"),
    )
}

/// [`find_bindir`] with its inputs given: the variable (name and value) if
/// set, `pg_config`'s answer, and where Debian's versions live.
fn find_bindir_in(
    var: Option<(&str, OsString)>,
    pg_config: Option<PathBuf>,
    debian_root: &Path,
) -> Result<PathBuf, Error> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    // An explicit directory is used or refused, never silently skipped.
    if let Some((name, dir)) = var {
        let dir = PathBuf::from(dir);
        return if has_initdb(&dir) {
            Ok(dir)
        } else {
            Err(Error(format!(
                "{name}={} does not contain initdb; {}",
                dir.display(),
                not_found()
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
        .ok_or_else(|| Error(not_found()))
}

fn pg_config_bindir() -> Option<PathBuf> {
    let mut cmd = Command::new("pg_config");
    cmd.arg("--bindir");
    let dir = crate::command::answer(cmd)?;
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindir_lookup() {
        let missing = Path::new("/nonexistent/throwaway-pg");
        let err = find_bindir_in(None, None, missing).unwrap_err();
        assert_eq!(err.to_string(), not_found());
        assert!(
            err.to_string().ends_with("set THROWAWAY_PG_BINDIR"),
            "{err}"
        );
        // The message names the variable the directory came from.
        for name in ["THROWAWAY_PG_BINDIR", "PGLOG_PG_BINDIR"] {
            let var = Some((name, "/nonexistent".into()));
            let err = find_bindir_in(var, None, missing).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("{name}=/nonexistent does not contain initdb")),
                "{err}"
            );
        }
        let real = find_bindir().unwrap();
        let var = Some(("THROWAWAY_PG_BINDIR", real.clone().into()));
        assert_eq!(find_bindir_in(var, None, missing).unwrap(), real);
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
}
