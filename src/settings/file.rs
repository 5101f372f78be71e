//! The configuration file as a source of settings: the file `PGLOG_CONFIG` names, else
//! `./pyproject.toml`, and in it `[tool.stogger]` (stogger's three keys) and
//! `[tool.pglog]` (every setting, under the file keys the declaration in [`super`] gives).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::env::Lookup;
use super::forms::{DsnText, Flag, Form, Text};
use super::Config;
use crate::Error;

/// The file [`discover`] reads from the current directory.
pub(crate) const PYPROJECT: &str = "pyproject.toml";
/// Names a configuration file to read instead of `pyproject.toml`.
pub(crate) const ENV_CONFIG: &str = "PGLOG_CONFIG";

impl Config {
    /// Reads the `[tool.stogger]` and `[tool.pglog]` sections of a TOML file, such as a
    /// `pyproject.toml` or a file of a tool's own. Other sections are ignored.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or parsed, an unknown key in `[tool.pglog]`, or a value
    /// of the wrong type; the message names the file, and the line and key at fault.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let config = pglog::Config::from_file("/etc/my-tool/logging.toml")?;
    /// let _guard = pglog::Builder::from_config(config).try_init()?;
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
            path: path.to_owned(),
            reason: format!("cannot read it: {e}"),
        })?;
        parse(&text).map_err(|reason| Error::ConfigFile {
            path: path.to_owned(),
            reason,
        })
    }
}

/// The parts of a `pyproject.toml` pglog reads; every other section is someone else's.
#[derive(Deserialize, Default)]
#[serde(default)]
struct File {
    tool: Tool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Tool {
    stogger: Stogger,
    pglog: Config,
}

/// stogger's section. Unknown keys are not refused: they may be settings of stogger
/// itself, which pglog has no business judging.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Stogger {
    enable_postgres: Option<Flag>,
    postgres_dsn: Option<DsnText>,
    postgres_table: Option<Text>,
}

/// The file [`discover`] reads, and whether `PGLOG_CONFIG` named it; `None` when there
/// is none.
pub(crate) fn location(env: Lookup<'_>) -> Option<(PathBuf, bool)> {
    if let Some(path) = env(ENV_CONFIG) {
        return Some((PathBuf::from(path), true));
    }
    // Absolute, so that a message about it says which directory the program ran in.
    let path = std::env::current_dir()
        .map(|dir| dir.join(PYPROJECT))
        .unwrap_or_else(|_| PathBuf::from(PYPROJECT));
    path.exists().then_some((path, false))
}

/// The file `PGLOG_CONFIG` names, else `./pyproject.toml` when it exists, else nothing.
pub(crate) fn discover(env: Lookup<'_>) -> Result<Config, Error> {
    let Some((path, named)) = location(env) else {
        return Ok(Config::default());
    };
    if named {
        return Config::from_file(&path).map_err(|e| match e {
            Error::ConfigFile { path, reason } => Error::ConfigFile {
                reason: format!(
                    "{reason} (named by {ENV_CONFIG}; point it at a TOML file or unset it)"
                ),
                path,
            },
            other => other,
        });
    }
    Config::from_file(path)
}

/// Parses a configuration file's text; the error says where and what, never quoting the
/// file's text (a DSN in it may hold a password).
pub(crate) fn parse(text: &str) -> Result<Config, String> {
    let file: File = toml::from_str(text).map_err(|e| describe_toml_error(text, &e))?;
    let Tool { stogger, pglog } = file.tool;
    let from_stogger = Config {
        enable_postgres: stogger.enable_postgres.map(Form::into_value),
        dsn: stogger.postgres_dsn.map(Form::into_value),
        table: stogger.postgres_table.map(Form::into_value),
        ..Config::default()
    };
    Ok(from_stogger.merge(pglog))
}

/// `line 4, key `pool_size` in [tool.pglog]: invalid type: ...`. toml's own `Display`
/// quotes the offending line, which may hold a password, so it is not used.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return message.to_owned();
    };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let mut place = format!("line {line_no}");
    // The key is what precedes `=` on the offending line, when the error lies after it.
    if let Some(eq) = line.find('=') {
        let key = line[..eq].trim();
        if !key.is_empty() && !key.starts_with('[') && !key.starts_with('#') {
            place.push_str(&format!(", key `{key}`"));
        }
    }
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['));
    match section {
        // A header line's own error (a bad header) is not "in" the previous section.
        Some(header) if !line.trim_start().starts_with('[') => {
            let header = header.split('#').next().unwrap_or(header).trim();
            format!("{place} in {header}: {message}")
        }
        _ => format!("{place}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stogger_section_maps_to_pglog_settings() {
        let c = parse(
            r#"
            [project]
            name = "svc"
            [tool.black]
            line-length = 100
            [tool.stogger]
            enable_postgres = true
            postgres_dsn = "postgresql://u:%PASSWORD%@db/ops"
            postgres_table = "svc_logs"
            console_level = "debug"   # stogger's own business
            "#,
        )
        .unwrap();
        assert_eq!(c.enable_postgres, Some(true));
        assert_eq!(c.dsn, Some("postgresql://u:%PASSWORD%@db/ops".into()));
        assert_eq!(c.table.as_deref(), Some("svc_logs"));
        assert_eq!(c.level, None);
    }

    #[test]
    fn pglogs_section_wins_over_stoggers() {
        let c = parse(
            r#"
            [tool.stogger]
            postgres_dsn = "host=stogger"
            postgres_table = "stogger_table"
            [tool.pglog]
            dsn = "host=pglog"
            "#,
        )
        .unwrap();
        assert_eq!(c.dsn, Some("host=pglog".into()));
        assert_eq!(c.table.as_deref(), Some("stogger_table"));
    }

    #[test]
    fn a_file_without_our_sections_is_empty_settings() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(
            parse("[project]\nname = 'x'\n[tool.ruff]\nx = 1\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn file_errors_name_line_key_and_section_without_quoting_the_file() {
        let err = |text: &str| parse(text).unwrap_err();
        let msg = err("[project]\nname = 'x'\n\n[tool.pglog]\npool_size = \"four\"\n");
        assert_eq!(
            msg,
            "line 5, key `pool_size` in [tool.pglog]: invalid type: string \"four\", expected a whole number from 1 to 1000"
        );
        let msg = err("[tool.pglog]\npool_sise = 4\n");
        assert!(
            msg.starts_with("line 2, key `pool_sise` in [tool.pglog]: unknown field `pool_sise`, expected one of"),
            "{msg}"
        );
        let msg = err("[tool.stogger]\nenable_postgres = \"yes\"\n");
        assert_eq!(
            msg,
            "line 2, key `enable_postgres` in [tool.stogger]: invalid type: string \"yes\", expected a boolean"
        );
        let msg = err("[tool.pglog]\npool_wait_ms = 0\n");
        assert_eq!(
            msg,
            "line 2, key `pool_wait_ms` in [tool.pglog]: 0 is out of range; use 1 to 3600000 ms"
        );
        let msg = err("[tool.pglog]\nqueue_capacity = 1000000000\n");
        assert!(msg.ends_with("out of range; use 1 to 10000000"), "{msg}");
        let msg = err("[tool.pglog]\nlevel = \"loud\"\n");
        assert!(
            msg.contains("key `level`") && msg.contains("use off, error, warn (or warning)"),
            "{msg}"
        );
        let msg = err("[tool.pglog]\nfilters = \"a=b=c\"\n");
        assert!(
            msg.contains("key `filters`") && msg.contains("RUST_LOG syntax"),
            "{msg}"
        );
        // A syntax error inside a DSN must not bring the DSN (and its password) along.
        let msg = err("[tool.stogger]\npostgres_dsn = \"postgresql://u:hunter2\\q@h/db\"\n");
        assert!(
            msg.starts_with("line 2, key `postgres_dsn` in [tool.stogger]:"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        let msg = err("[tool.pglog\n");
        assert!(msg.starts_with("line 1:"), "{msg}");
    }
}
