//! libpq's password file, `~/.pgpass`: where it is, whether libpq would read it, and the
//! password it gives a connection
//! (<https://www.postgresql.org/docs/current/libpq-pgpass.html>).
//!
//! Each line is `hostname:port:database:username:password`; the first line whose four
//! first fields match the connection gives the password. A field that is exactly `*`
//! matches anything, and `\` makes the next character literal (`\:`, `\\`), in every field.
//! Lines starting with `#` are comments; a line with fewer than five fields matches
//! nothing. The password ends at the first unescaped `:`, so anything after it is ignored.
//!
//! A file that is not a plain file, or that group or others may read or write, is
//! ignored, as libpq ignores it: a password readable by others must not quietly keep
//! working. The caller gets the reason to say once; this module never prints.
//!
//! Passwords are secrets: nothing here shows them. [`Passfile`]'s `Debug` shows how many
//! lines it holds, and messages name the file, never its contents.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::settings::Lookup;

/// Names the password file when the `passfile` connection parameter does not.
pub(crate) const ENV_PASSFILE: &str = "PGPASSFILE";
/// The password file in the home directory, when neither names another.
const FILE_NAME: &str = ".pgpass";
/// The port a connection that names none goes to, and so the port a line must match.
pub(crate) const DEFAULT_PORT: u16 = 5432;
/// What a connection over the default Unix socket, or with no host, matches as. libpq
/// calls it `DefaultHost`: a `.pgpass` line for `localhost` serves the local socket too.
const LOCAL_HOST: &str = "localhost";

/// The password file libpq would read: the `passfile` connection parameter, else
/// `PGPASSFILE`, else `.pgpass` in `HOME`. An empty parameter counts as unset, as in
/// libpq. `None` when none is named and `HOME` is unset: there is no password file.
pub(crate) fn location(passfile: Option<&str>, env: Lookup<'_>) -> Option<PathBuf> {
    if let Some(path) = passfile.filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if let Some(path) = env(ENV_PASSFILE) {
        return Some(PathBuf::from(path));
    }
    super::home_dir(env).map(|home| home.join(FILE_NAME))
}

/// What reading a password file found.
#[derive(Debug)]
pub(crate) enum Read {
    /// There is no such file: no password from it, and nothing to say.
    Missing,
    /// libpq would not use the file; the reason names it and says what to change, to be
    /// said once. No password from it.
    Ignored(String),
    /// The file's lines, to look passwords up in.
    Found(Passfile),
}

/// Reads the password file at `path` as libpq would: missing is no password, and a file
/// that is not plain, that group or others may access, or that cannot be read is ignored
/// with a reason.
pub(crate) fn read(path: &Path) -> Read {
    // stat() first, as libpq does: opening a FIFO someone put there would block.
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Read::Missing,
        Err(e) => return unreadable(path, &e),
    };
    if let Some(reason) = refusal(path, &metadata) {
        return Read::Ignored(reason);
    }
    from_contents(path, super::read_regular(path, super::PASSFILE_LIMIT))
}

/// Why libpq would not read a file of this type and mode, if it would not.
fn refusal(path: &Path, metadata: &std::fs::Metadata) -> Option<String> {
    if !metadata.is_file() {
        return Some(format!(
            "password file {} is not a plain file, so it is ignored",
            quoted(path)
        ));
    }
    insecure(path, metadata)
}

#[cfg(unix)]
fn insecure(path: &Path, metadata: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "password file {path} has group or world access (mode {mode:04o}), so it is \
             ignored; permissions should be u=rw (0600) or less: chmod 0600 {path}",
            path = quoted(path),
        )
    })
}

/// Windows has no such mode bits; libpq checks nothing there either.
#[cfg(not(unix))]
fn insecure(_: &Path, _: &std::fs::Metadata) -> Option<String> {
    None
}

/// The outcome of reading the file's bytes; apart from [`read`] so that a read error can
/// be tested without a file that root cannot read.
fn from_contents(path: &Path, contents: io::Result<Vec<u8>>) -> Read {
    match contents {
        // Not UTF-8 (a Latin-1 password): the invalid bytes become U+FFFD, and the server
        // refuses the password, naming the user, where skipping the line would make a
        // later line apply or leave the connection without a password, both harder to
        // trace to this file.
        Ok(bytes) => Read::Found(Passfile::parse(&String::from_utf8_lossy(&bytes))),
        Err(e) => unreadable(path, &e),
    }
}

fn unreadable(path: &Path, error: &io::Error) -> Read {
    Read::Ignored(format!(
        "cannot read password file {}, so it is ignored: {error}",
        quoted(path)
    ))
}

/// `"path"`, as libpq's messages name files.
fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// A password file's lines, in file order. `Debug` shows only how many there are.
pub(crate) struct Passfile {
    entries: Vec<Entry>,
}

impl fmt::Debug for Passfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passfile")
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// One usable line: four patterns and the password.
struct Entry {
    host: Pattern,
    port: Pattern,
    dbname: Pattern,
    user: Pattern,
    password: String,
}

/// One of a line's first four fields.
enum Pattern {
    /// The field is exactly `*`.
    Any,
    /// Anything else, escapes resolved; matches only this text.
    Exactly(String),
}

impl Pattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exactly(text) => text == value,
        }
    }
}

impl Passfile {
    /// The usable lines of a password file's text. Comments, blank lines and lines with
    /// fewer than five fields are dropped; a trailing `\r` (a file written on Windows) is
    /// not part of the password.
    pub(crate) fn parse(text: &str) -> Passfile {
        let entries = text
            .split('\n')
            .map(|line| line.trim_end_matches('\r'))
            .filter(|line| !line.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        Passfile { entries }
    }

    /// The password of the first line that matches a connection to `host` (a host name,
    /// an address, or a Unix socket directory; empty when none is given) on `port`
    /// (`None`: the default, 5432) as `user` to `dbname`, the effective values after
    /// defaults.
    ///
    /// A connection with no host, or through `default_socket_dir`, matches as
    /// `localhost`, as libpq matches its compiled-in socket directory; any other socket
    /// directory must be written as is. The first matching line wins, also when its
    /// password is empty.
    pub(crate) fn lookup(
        &self,
        host: &str,
        port: Option<u16>,
        dbname: &str,
        user: &str,
        default_socket_dir: &str,
    ) -> Option<&str> {
        let host = if host.is_empty() || host == default_socket_dir {
            LOCAL_HOST
        } else {
            host
        };
        let port = port.unwrap_or(DEFAULT_PORT).to_string();
        self.entries
            .iter()
            .find(|entry| {
                entry.host.matches(host)
                    && entry.port.matches(&port)
                    && entry.dbname.matches(dbname)
                    && entry.user.matches(user)
            })
            .map(|entry| entry.password.as_str())
    }
}

/// A line's entry, or `None` when it ends before its fifth field. Blank lines end there.
fn parse_line(line: &str) -> Option<Entry> {
    let mut rest = line;
    Some(Entry {
        host: pattern(&mut rest)?,
        port: pattern(&mut rest)?,
        dbname: pattern(&mut rest)?,
        user: pattern(&mut rest)?,
        password: password(rest),
    })
}

/// The field at the start of `rest`, up to its first unescaped `:`, and `rest` moved past
/// that `:`; `None` when the line ends first.
fn pattern(rest: &mut &str) -> Option<Pattern> {
    // Only a whole field is a wildcard: `\*` and `*x` are text.
    if let Some(after) = rest.strip_prefix("*:") {
        *rest = after;
        return Some(Pattern::Any);
    }
    let mut text = String::new();
    let mut chars = rest.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            // A `\` at the end of the line escapes nothing: the field never ends.
            '\\' => text.push(chars.next()?.1),
            ':' => {
                *rest = &rest[at + 1..];
                return Some(Pattern::Exactly(text));
            }
            _ => text.push(c),
        }
    }
    None
}

/// The password: the rest of the line up to its first unescaped `:`, escapes resolved.
/// A `\` that ends the line is kept, as libpq keeps it.
fn password(rest: &str) -> String {
    let mut password = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => password.push(chars.next().unwrap_or('\\')),
            ':' => break,
            _ => password.push(c),
        }
    }
    password
}

#[cfg(test)]
mod tests {
    use super::super::scratch::Scratch;
    use super::*;
    use crate::settings::tests::env;

    const SOCKET_DIR: &str = "/var/run/postgresql";

    fn passfile(text: &str) -> Passfile {
        Passfile::parse(text)
    }

    /// The password for `host:port/dbname` as `user`, with the default socket directory
    /// above.
    fn find<'a>(
        file: &'a Passfile,
        host: &str,
        port: Option<u16>,
        dbname: &str,
        user: &str,
    ) -> Option<&'a str> {
        file.lookup(host, port, dbname, user, SOCKET_DIR)
    }

    #[test]
    fn location_is_the_parameter_then_pgpassfile_then_home() {
        let all = env(&[("PGPASSFILE", "/env/pgpass"), ("HOME", "/home/app")]);
        assert_eq!(
            location(Some("/param/pgpass"), &all),
            Some(PathBuf::from("/param/pgpass"))
        );
        assert_eq!(location(None, &all), Some(PathBuf::from("/env/pgpass")));
        // An empty parameter is unset, as libpq reads it.
        assert_eq!(location(Some(""), &all), Some(PathBuf::from("/env/pgpass")));
        let home = env(&[("HOME", "/home/app")]);
        assert_eq!(
            location(None, &home),
            Some(PathBuf::from("/home/app/.pgpass"))
        );
        assert_eq!(location(None, &env(&[])), None);
    }

    #[test]
    fn first_matching_line_wins() {
        let file = passfile(
            "db.internal:5432:ops:app:first\n\
             db.internal:5432:ops:app:second\n\
             *:*:*:*:fallback\n",
        );
        assert_eq!(
            find(&file, "db.internal", Some(5432), "ops", "app"),
            Some("first")
        );
        assert_eq!(
            find(&file, "other", Some(5432), "ops", "app"),
            Some("fallback")
        );
    }

    #[test]
    fn each_field_must_match() {
        let file = passfile("h:5433:ops:app:pw\n");
        assert_eq!(find(&file, "h", Some(5433), "ops", "app"), Some("pw"));
        assert_eq!(find(&file, "x", Some(5433), "ops", "app"), None);
        assert_eq!(find(&file, "h", Some(5432), "ops", "app"), None);
        assert_eq!(find(&file, "h", Some(5433), "dev", "app"), None);
        assert_eq!(find(&file, "h", Some(5433), "ops", "admin"), None);
        // Whole fields only: a prefix is not a match.
        assert_eq!(find(&file, "hh", Some(5433), "ops", "app"), None);
    }

    #[test]
    fn a_star_field_matches_anything_but_only_as_a_whole_field() {
        let file = passfile("*:*:ops:*:star\n");
        assert_eq!(find(&file, "h", Some(1), "ops", "anyone"), Some("star"));
        assert_eq!(find(&file, "h", Some(1), "dev", "anyone"), None);
        // `*x` and `\*` are text.
        let file = passfile("*x:5432:d:u:a\n\\*:5432:d:u:b\n");
        assert_eq!(find(&file, "h", None, "d", "u"), None);
        assert_eq!(find(&file, "*x", None, "d", "u"), Some("a"));
        assert_eq!(find(&file, "*", None, "d", "u"), Some("b"));
        // In the password, `*` is just a character.
        let file = passfile("h:5432:d:u:*\n");
        assert_eq!(find(&file, "h", None, "d", "u"), Some("*"));
    }

    #[test]
    fn escapes_work_in_every_field() {
        let file = passfile(r"a\:b:5432:d\\b:u\:x:p\:w\\d:ignored" /* no newline */);
        assert_eq!(find(&file, "a:b", None, r"d\b", "u:x"), Some(r"p:w\d"));
        // An escaped `:` does not end a field.
        assert_eq!(find(&file, "a", None, r"d\b", "u:x"), None);
        // Any escaped character is itself; a `\` that ends the password is kept.
        let file = passfile("\\h:5432:d:u:pw\\\n");
        assert_eq!(find(&file, "h", None, "d", "u"), Some("pw\\"));
    }

    #[test]
    fn the_password_ends_at_an_unescaped_colon() {
        let file = passfile("h:5432:d:u:secret:extra:fields\nh:5432:d:v:\n");
        assert_eq!(find(&file, "h", None, "d", "u"), Some("secret"));
        // Five fields with an empty password: a match, and an empty password.
        assert_eq!(find(&file, "h", None, "d", "v"), Some(""));
    }

    #[test]
    fn short_lines_comments_and_blank_lines_match_nothing() {
        let file = passfile(
            "# h:5432:d:u:commented\n\
             \n\
             h:5432:d:u\n\
             *:*:*\n\
             h:5432:d:u\\:\n\
             h:5432:d:u:real\n",
        );
        assert_eq!(find(&file, "h", None, "d", "u"), Some("real"));
        assert_eq!(format!("{file:?}"), "Passfile { entries: 1 }");
        // Only a `#` in the first column starts a comment.
        let file = passfile(" #:5432:d:u:pw\n");
        assert_eq!(find(&file, " #", None, "d", "u"), Some("pw"));
    }

    #[test]
    fn crlf_line_ends_are_not_part_of_the_password() {
        let file = passfile("h:5432:d:u:pw\r\nh:5432:d:v:other\r\n");
        assert_eq!(find(&file, "h", None, "d", "u"), Some("pw"));
        assert_eq!(find(&file, "h", None, "d", "v"), Some("other"));
    }

    #[test]
    fn the_default_socket_and_no_host_match_as_localhost() {
        let file = passfile("localhost:5432:d:u:local\n/tmp:5432:d:u:tmp\n");
        assert_eq!(find(&file, SOCKET_DIR, None, "d", "u"), Some("local"));
        assert_eq!(find(&file, "", None, "d", "u"), Some("local"));
        assert_eq!(find(&file, "localhost", None, "d", "u"), Some("local"));
        // Another socket directory is matched as written.
        assert_eq!(find(&file, "/tmp", None, "d", "u"), Some("tmp"));
        assert_eq!(find(&file, "/srv/pg", None, "d", "u"), None);
        // Which directory is the default is the caller's: with /tmp, /tmp is localhost.
        assert_eq!(file.lookup("/tmp", None, "d", "u", "/tmp"), Some("local"));
        assert_eq!(file.lookup(SOCKET_DIR, None, "d", "u", "/tmp"), None);
    }

    #[test]
    fn no_port_matches_5432() {
        let file = passfile("h:5432:d:u:default\nh:5433:d:u:other\n");
        assert_eq!(find(&file, "h", None, "d", "u"), Some("default"));
        assert_eq!(find(&file, "h", Some(5433), "d", "u"), Some("other"));
    }

    #[test]
    fn debug_never_shows_a_password() {
        let file = passfile("h:5432:d:u:hunter2\n*:*:*:*:hunter3\n");
        let shown = format!("{:?}", Read::Found(file));
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("entries: 2"), "{shown}");
    }

    #[test]
    fn a_private_file_is_read() {
        let dir = Scratch::new("pgpass");
        let path = dir.write(".pgpass", "h:5432:d:u:pw\n", 0o600);
        let Read::Found(file) = read(&path) else {
            panic!("{:?}", read(&path));
        };
        assert_eq!(find(&file, "h", None, "d", "u"), Some("pw"));
        // Less than 0600 is fine too.
        let path = dir.write("readonly", "h:5432:d:u:ro\n", 0o400);
        assert!(matches!(read(&path), Read::Found(_)), "{:?}", read(&path));
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_may_access_is_ignored_with_a_reason() {
        let dir = Scratch::new("pgpass");
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o610] {
            let path = dir.write(".pgpass", "h:5432:d:u:hunter2\n", mode);
            let Read::Ignored(reason) = read(&path) else {
                panic!("mode {mode:o}: {:?}", read(&path));
            };
            assert_eq!(
                reason,
                format!(
                    "password file \"{path}\" has group or world access (mode {mode:04o}), so \
                     it is ignored; permissions should be u=rw (0600) or less: chmod 0600 \
                     \"{path}\"",
                    path = path.display()
                )
            );
            assert!(!reason.contains("hunter2"), "{reason}");
        }
    }

    #[test]
    fn a_missing_file_is_no_password_and_nothing_to_say() {
        let dir = Scratch::new("pgpass");
        assert!(matches!(read(&dir.path().join("absent")), Read::Missing));
        // A missing directory too.
        assert!(matches!(
            read(&dir.path().join("absent/.pgpass")),
            Read::Missing
        ));
    }

    #[test]
    fn a_directory_is_not_a_plain_file() {
        let dir = Scratch::new("pgpass");
        let Read::Ignored(reason) = read(dir.path()) else {
            panic!("{:?}", read(dir.path()));
        };
        assert_eq!(
            reason,
            format!(
                "password file \"{}\" is not a plain file, so it is ignored",
                dir.path().display()
            )
        );
    }

    // Tests run as root, whom permissions do not stop, so a file mode cannot make a read
    // fail here. The error path is tested with the error handed in, and on Linux with a
    // plain 0600 file that no one can read from the start: /proc/self/mem.
    #[test]
    fn an_unreadable_file_is_ignored_with_a_reason() {
        let path = Path::new("/home/app/.pgpass");
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let Read::Ignored(reason) = from_contents(path, Err(denied)) else {
            panic!("a read error must not give a password file");
        };
        assert_eq!(
            reason,
            "cannot read password file \"/home/app/.pgpass\", so it is ignored: permission denied"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_read_error_from_the_system_is_ignored_with_a_reason() {
        // A regular file, mode 0600, whose first bytes (address 0) are never mapped.
        let path = Path::new("/proc/self/mem");
        let Read::Ignored(reason) = read(path) else {
            panic!("{:?}", read(path));
        };
        assert!(
            reason.starts_with("cannot read password file \"/proc/self/mem\", so it is ignored: "),
            "{reason}"
        );
    }

    #[test]
    fn a_file_not_in_utf8_still_matches_by_its_other_lines() {
        let dir = Scratch::new("pgpass");
        let path = dir.path().join(".pgpass");
        std::fs::write(&path, b"h:5432:d:latin:caf\xe9\nh:5432:d:u:pw\n").unwrap();
        super::super::scratch::set_mode(&path, 0o600);
        let Read::Found(file) = read(&path) else {
            panic!("{:?}", read(&path));
        };
        assert_eq!(find(&file, "h", None, "d", "u"), Some("pw"));
        assert_eq!(find(&file, "h", None, "d", "latin"), Some("caf\u{fffd}"));
    }
}
