//! libpq's connection service file: a name for a set of connection parameters, so that
//! `service=ops` (or `PGSERVICE=ops`) stands for a host, port, database, user and TLS
//! settings kept in one place
//! (<https://www.postgresql.org/docs/current/libpq-pgservice.html>).
//!
//! The file is INI-like:
//!
//! ```text
//! # comment
//! [ops]
//! host=db.internal
//! port=5433
//! ```
//!
//! Two files are searched, the per-user one (`PGSERVICEFILE`, else `~/.pg_service.conf`)
//! and then the system's (`pg_service.conf` in `PGSYSCONFDIR`). The first file that has
//! the service gives all of it: libpq does not merge a service across files. Only the
//! lines of the service read are checked, as in libpq, so a mistake in another service
//! does not stop this one.
//!
//! Whitespace around keys and values is trimmed; libpq trims only the line's ends and
//! refuses `host = h`, so pglog reads every file libpq reads, and that one too.
//!
//! Keys are handed back as written, not checked against libpq's keywords: which of them
//! pglog honours, and how it refuses the others, is the connection path's decision.

use std::io;
use std::path::{Path, PathBuf};

use crate::settings::Lookup;
use crate::Error;

/// Names the per-user service file instead of `~/.pg_service.conf`.
pub(crate) const ENV_SERVICEFILE: &str = "PGSERVICEFILE";
/// Names the directory of the system's service file.
pub(crate) const ENV_SYSCONFDIR: &str = "PGSYSCONFDIR";
/// The system's directory when `PGSYSCONFDIR` is unset: libpq's compiled-in sysconfdir,
/// `pg_config --sysconfdir`. Debian's and Ubuntu's libpq is built with this one; an
/// upstream build uses `<prefix>/etc`. pglog has no libpq to ask, so it takes Debian's.
pub(crate) const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";
/// The per-user file in the home directory.
const USER_FILE: &str = ".pg_service.conf";
/// The system's file in the sysconfdir.
const SYSTEM_FILE: &str = "pg_service.conf";
/// The key that would name another service from inside a service.
const SERVICE_KEY: &str = "service";

/// The parameters of service `name`, in file order, from the first file that defines it.
/// A key given twice keeps its first value, as in libpq.
///
/// # Errors
///
/// The service is in no file (the message lists the files searched), `PGSERVICEFILE`
/// names a file that does not exist, a file cannot be read, or a line of the service is
/// not `key=value` or names another service. Messages name the file and line, never
/// quoting a line, which may hold a password.
pub(crate) fn lookup(name: &str, env: Lookup<'_>) -> Result<Vec<(String, String)>, Error> {
    let mut searched = Vec::new();
    for candidate in candidates(env) {
        let (path, required) = match candidate {
            Candidate::File(path) => (path, false),
            Candidate::Required(path) => (path, true),
            Candidate::NoUserFile => {
                searched.push(format!(
                    "no per-user file (neither {ENV_SERVICEFILE} nor HOME is set)"
                ));
                continue;
            }
        };
        let text = match super::read_regular(&path, super::SMALL_FILE_LIMIT) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if required {
                    return Err(fault(format!(
                        "service file {} not found (named by {ENV_SERVICEFILE}; point it at \
                         a file or unset it)",
                        quoted(&path)
                    )));
                }
                searched.push(format!("{} (does not exist)", quoted(&path)));
                continue;
            }
            Err(e) => {
                return Err(fault(format!(
                    "cannot read service file {}: {e}",
                    quoted(&path)
                )))
            }
        };
        match section(&text, name) {
            Ok(Some(parameters)) => return Ok(parameters),
            Ok(None) => searched.push(quoted(&path)),
            Err(why) => {
                return Err(fault(format!("service file {}, {why}", quoted(&path))));
            }
        }
    }
    Err(fault(format!(
        "definition of service \"{name}\" not found; searched {}. Define [{name}] in one of \
         them, or set {ENV_SERVICEFILE} or {ENV_SYSCONFDIR} to where it is defined",
        searched.join(" and ")
    )))
}

fn fault(reason: String) -> Error {
    Error::config("service", reason)
}

/// `"path"`, as libpq's messages name files.
fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// A file to search, in order.
enum Candidate {
    /// Searched when it exists.
    File(PathBuf),
    /// Named by `PGSERVICEFILE`: libpq reports it missing instead of passing over it.
    Required(PathBuf),
    /// Without `PGSERVICEFILE` and `HOME`, there is no per-user file; said in a
    /// not-found message so that it does not look as if `~` had been searched.
    NoUserFile,
}

/// The per-user file, then the system's.
fn candidates(env: Lookup<'_>) -> [Candidate; 2] {
    let user = match env(ENV_SERVICEFILE) {
        Some(path) => Candidate::Required(PathBuf::from(path)),
        None => super::home_dir(env).map_or(Candidate::NoUserFile, |home| {
            Candidate::File(home.join(USER_FILE))
        }),
    };
    let sysconfdir = env(ENV_SYSCONFDIR).unwrap_or_else(|| DEFAULT_SYSCONFDIR.to_owned());
    let system = Candidate::File(Path::new(&sysconfdir).join(SYSTEM_FILE));
    [user, system]
}

/// The parameters of section `[name]` of a service file's text, `None` when it has no
/// such section. Only the first `[name]` is read, as libpq reads it. The error says
/// `line N: what`, without the line's text.
fn section(text: &[u8], name: &str) -> Result<Option<Vec<(String, String)>>, String> {
    let mut found: Option<Vec<(String, String)>> = None;
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = raw.trim_ascii();
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        if let Some(header) = line.strip_prefix(b"[") {
            if found.is_some() {
                break;
            }
            // libpq compares the name as written, and ignores what follows the `]`.
            let section = header
                .iter()
                .position(|&b| b == b']')
                .map(|end| &header[..end]);
            if section == Some(name.as_bytes()) {
                found = Some(Vec::new());
            }
            continue;
        }
        let Some(parameters) = found.as_mut() else {
            continue;
        };
        let (key, value) = parameter(line).map_err(|why| format!("line {}: {why}", index + 1))?;
        if !parameters.iter().any(|(known, _)| *known == key) {
            parameters.push((key, value));
        }
    }
    Ok(found)
}

/// libpq's words for a `service` key inside a service, and what to do instead.
const NESTED: &str = "nested service specifications not supported: a service cannot name \
                      another service; copy that service's parameters here instead";

/// A `key=value` line of the service read. The value runs from the `=` to the end of the
/// line, as libpq reads it (`password= x` keeps its space). pglog also takes the
/// `key = value` style libpq refuses: when the key is followed by spaces, so is the `=`,
/// and both sides are trimmed.
fn parameter(line: &[u8]) -> Result<(String, String), &'static str> {
    if line.starts_with(b"ldap") {
        return Err("LDAP lookups of a service are not supported by pglog; \
                    write the service's parameters in the file instead");
    }
    let Ok(line) = std::str::from_utf8(line) else {
        return Err("not valid UTF-8; write the file in UTF-8");
    };
    let Some((key, value)) = line.split_once('=') else {
        return Err("expected key=value");
    };
    let spaced = key.ends_with(|c: char| c.is_ascii_whitespace());
    let key = key.trim_ascii();
    let value = if spaced {
        value.trim_ascii()
    } else {
        value.trim_ascii_end()
    };
    if key.is_empty() {
        return Err("expected key=value, found nothing before the `=`");
    }
    if key == SERVICE_KEY {
        return Err(NESTED);
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::super::scratch::Scratch;
    use super::*;
    use crate::settings::tests::env;

    /// Pairs as `lookup` returns them, from `&str`s.
    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The message of a lookup that must fail.
    fn error(name: &str, vars: &[(&str, &str)]) -> String {
        match lookup(name, &env(vars)) {
            Ok(found) => panic!("service {name} found: {found:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A home directory and a sysconfdir, each with its file when given text.
    struct Files {
        dir: Scratch,
    }

    impl Files {
        fn new(user: Option<&str>, system: Option<&str>) -> Files {
            let dir = Scratch::new("service");
            for sub in ["home", "etc"] {
                std::fs::create_dir(dir.path().join(sub)).unwrap();
            }
            if let Some(text) = user {
                dir.write(&format!("home/{USER_FILE}"), text, 0o644);
            }
            if let Some(text) = system {
                dir.write(&format!("etc/{SYSTEM_FILE}"), text, 0o644);
            }
            Files { dir }
        }

        fn home(&self) -> String {
            self.dir.path().join("home").display().to_string()
        }

        fn etc(&self) -> String {
            self.dir.path().join("etc").display().to_string()
        }

        fn user_file(&self) -> String {
            format!("{}/{USER_FILE}", self.home())
        }

        fn system_file(&self) -> String {
            format!("{}/{SYSTEM_FILE}", self.etc())
        }

        /// Looks `name` up with HOME and PGSYSCONFDIR pointing here.
        fn lookup(&self, name: &str) -> Result<Vec<(String, String)>, Error> {
            lookup(
                name,
                &env(&[("HOME", &self.home()), ("PGSYSCONFDIR", &self.etc())]),
            )
        }

        fn error(&self, name: &str) -> String {
            error(
                name,
                &[("HOME", &self.home()), ("PGSYSCONFDIR", &self.etc())],
            )
        }
    }

    #[test]
    fn a_service_gives_its_parameters_in_file_order() {
        let files = Files::new(
            Some(
                "# comment\n\
                 [other]\n\
                 host=elsewhere\n\
                 \n\
                 [ops]\n\
                 host=db.internal\n\
                 # a comment inside\n\
                 port=5433\n\
                 dbname=ops\n\
                 \n\
                 [after]\n\
                 user=someone\n",
            ),
            None,
        );
        assert_eq!(
            files.lookup("ops").unwrap(),
            pairs(&[("host", "db.internal"), ("port", "5433"), ("dbname", "ops")])
        );
        // The last section ends at the end of the file.
        assert_eq!(
            files.lookup("after").unwrap(),
            pairs(&[("user", "someone")])
        );
    }

    #[test]
    fn whitespace_around_lines_keys_and_values_is_trimmed() {
        let files = Files::new(
            Some("  [ops]  \r\n\thost = db.internal \r\n  port =\t5433\r\n user =app=1 \r\npassword= lead\n"),
            None,
        );
        // A value runs to the end of the line: a second `=` is part of it; without a
        // space before the `=`, a leading space is the value's, as in libpq.
        assert_eq!(
            files.lookup("ops").unwrap(),
            pairs(&[
                ("host", "db.internal"),
                ("port", "5433"),
                ("user", "app=1"),
                ("password", " lead")
            ])
        );
    }

    #[test]
    fn section_names_are_compared_as_written() {
        let files = Files::new(
            Some("[Ops]\nhost=upper\n[ ops ]\nhost=spaced\n[ops] # note\nhost=right\n[ops\nhost=open\n"),
            None,
        );
        assert_eq!(files.lookup("ops").unwrap(), pairs(&[("host", "right")]));
        assert_eq!(files.lookup("Ops").unwrap(), pairs(&[("host", "upper")]));
    }

    #[test]
    fn a_key_given_twice_keeps_its_first_value() {
        let files = Files::new(Some("[ops]\nhost=first\nport=1\nhost=second\n"), None);
        assert_eq!(
            files.lookup("ops").unwrap(),
            pairs(&[("host", "first"), ("port", "1")])
        );
    }

    #[test]
    fn an_empty_section_is_a_definition() {
        let files = Files::new(Some("[ops]\n[next]\n"), Some("[ops]\nhost=system\n"));
        assert_eq!(files.lookup("ops").unwrap(), pairs(&[]));
    }

    #[test]
    fn the_user_file_wins_and_services_are_not_merged() {
        let files = Files::new(
            Some("[ops]\nhost=user-host\n"),
            Some("[ops]\nhost=system-host\nport=5433\n[shared]\nhost=s\n"),
        );
        // No port from the system file: the user file's service is the whole service.
        assert_eq!(
            files.lookup("ops").unwrap(),
            pairs(&[("host", "user-host")])
        );
        // A service only the system file defines comes from there.
        assert_eq!(files.lookup("shared").unwrap(), pairs(&[("host", "s")]));
    }

    #[test]
    fn the_system_file_serves_when_there_is_no_user_file() {
        let files = Files::new(None, Some("[ops]\nhost=system-host\n"));
        assert_eq!(
            files.lookup("ops").unwrap(),
            pairs(&[("host", "system-host")])
        );
        // And without HOME at all.
        let found = lookup("ops", &env(&[("PGSYSCONFDIR", &files.etc())])).unwrap();
        assert_eq!(found, pairs(&[("host", "system-host")]));
    }

    #[test]
    fn pgservicefile_replaces_the_file_in_home() {
        let files = Files::new(Some("[ops]\nhost=home\n"), Some("[ops]\nhost=system\n"));
        let named = files.dir.write("named.conf", "[ops]\nhost=named\n", 0o644);
        let vars = [
            ("HOME", files.home()),
            ("PGSYSCONFDIR", files.etc()),
            ("PGSERVICEFILE", named.display().to_string()),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            lookup("ops", &env(&vars)).unwrap(),
            pairs(&[("host", "named")])
        );
        // The system file still comes after it.
        let message = error("missing", &vars);
        assert!(
            message.contains(&format!(
                "searched \"{}\" and \"{}\"",
                named.display(),
                files.system_file()
            )),
            "{message}"
        );
        assert!(!message.contains(&files.user_file()), "{message}");
    }

    #[test]
    fn a_missing_pgservicefile_is_an_error() {
        let files = Files::new(None, Some("[ops]\nhost=system\n"));
        let absent = files.dir.path().join("absent.conf");
        let message = error(
            "ops",
            &[
                ("PGSYSCONFDIR", &files.etc()),
                ("PGSERVICEFILE", &absent.display().to_string()),
            ],
        );
        assert_eq!(
            message,
            format!(
                "invalid pglog setting `service`: service file \"{}\" not found (named by \
                 PGSERVICEFILE; point it at a file or unset it)",
                absent.display()
            )
        );
    }

    #[test]
    fn pgsysconfdir_defaults_to_debians_sysconfdir() {
        let files = Files::new(None, None);
        let message = error("pglog-test-undefined", &[("HOME", &files.home())]);
        assert!(
            message.contains("\"/etc/postgresql-common/pg_service.conf\""),
            "{message}"
        );
    }

    #[test]
    fn not_found_says_which_files_were_searched() {
        let files = Files::new(Some("[other]\nhost=h\n"), None);
        assert_eq!(
            files.error("ops"),
            format!(
                "invalid pglog setting `service`: definition of service \"ops\" not found; \
                 searched \"{}\" and \"{}\" (does not exist). Define [ops] in one of them, or \
                 set PGSERVICEFILE or PGSYSCONFDIR to where it is defined",
                files.user_file(),
                files.system_file(),
            )
        );
        let message = error("ops", &[("PGSYSCONFDIR", &files.etc())]);
        assert!(
            message.contains(
                "searched no per-user file (neither PGSERVICEFILE nor HOME is set) and \""
            ),
            "{message}"
        );
    }

    #[test]
    fn a_nested_service_is_an_error() {
        let files = Files::new(Some("[ops]\nhost=h\n service = other\n"), None);
        assert_eq!(
            files.error("ops"),
            format!(
                "invalid pglog setting `service`: service file \"{}\", line 3: nested service \
                 specifications not supported: a service cannot name another service; copy \
                 that service's parameters here instead",
                files.user_file()
            )
        );
    }

    #[test]
    fn a_malformed_line_names_its_number_and_not_its_text() {
        let files = Files::new(Some("# servers\n[ops]\nhost=h\npassword hunter2\n"), None);
        let message = files.error("ops");
        assert_eq!(
            message,
            format!(
                "invalid pglog setting `service`: service file \"{}\", line 4: expected \
                 key=value",
                files.user_file()
            )
        );
        assert!(!message.contains("hunter2"), "{message}");
        let files = Files::new(Some("[ops]\n=hunter2\n"), None);
        let message = files.error("ops");
        assert!(
            message.ends_with("line 2: expected key=value, found nothing before the `=`"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn other_services_are_not_checked() {
        // libpq reads only the service asked for; a broken neighbour does not stop it.
        let files = Files::new(
            Some(
                "garbage before any section\n[broken]\nnot a parameter\nservice=x\n[ops]\nhost=h\n",
            ),
            None,
        );
        assert_eq!(files.lookup("ops").unwrap(), pairs(&[("host", "h")]));
    }

    #[test]
    fn a_line_of_the_service_that_is_not_utf8_is_an_error() {
        let files = Files::new(None, None);
        let path = files.dir.path().join("home").join(USER_FILE);
        std::fs::write(&path, b"[other]\nhost=caf\xe9\n[ops]\npassword=caf\xe9\n").unwrap();
        let message = files.error("ops");
        assert!(
            message.ends_with("line 4: not valid UTF-8; write the file in UTF-8"),
            "{message}"
        );
    }

    #[test]
    fn ldap_lines_are_refused() {
        let files = Files::new(
            Some("[ops]\nldap://ldap.internal/dc=example?uniqueMember?one\n"),
            None,
        );
        assert!(
            files.error("ops").ends_with(
                "line 2: LDAP lookups of a service are not supported by pglog; write the \
                 service's parameters in the file instead"
            ),
            "{}",
            files.error("ops")
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        // Tests run as root, whom permissions do not stop: a directory where the file
        // should be makes the read fail instead.
        let files = Files::new(None, None);
        std::fs::create_dir(files.user_file()).unwrap();
        let message = files.error("ops");
        assert!(
            message.starts_with(&format!(
                "invalid pglog setting `service`: cannot read service file \"{}\": ",
                files.user_file()
            )),
            "{message}"
        );
    }
}
