//! The environment as a source of settings: `PGLOG_*`, and stogger's `STOGGER_*` names,
//! as the declaration in [`super`] lists them.
//!
//! Reading goes through a [`Lookup`], so that tests pass a map instead of the real
//! environment.

use super::forms::Form;
use super::Config;
use crate::Error;

/// Looks an environment variable up; tests pass a map instead of the real environment.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The environment kept for later: pglog reads passwords and password files again at each
/// new connection.
pub(crate) type SharedEnv = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The real environment. An empty variable counts as unset, as a shell user expects of
/// `VAR= program`.
pub(crate) fn real_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The settings the environment gives, through `env`.
///
/// # Errors
///
/// A variable whose value its setting's form refuses; the message names the variable.
pub(crate) fn from_lookup(env: Lookup<'_>) -> Result<Config, Error> {
    Config::read_vars(&Vars(env))
}

pub(crate) struct Vars<'a>(Lookup<'a>);

impl Vars<'_> {
    /// The value of the first of `names` that is set, read as `F`; `key` names the
    /// setting in an error.
    pub fn read<F: Form>(
        &self,
        key: &'static str,
        names: &[&'static str],
    ) -> Result<Option<F::Value>, Error> {
        let Some((name, text)) = names
            .iter()
            .find_map(|name| (self.0)(name).map(|text| (*name, text)))
        else {
            return Ok(None);
        };
        F::parse(&text)
            .map(|form| Some(form.into_value()))
            .map_err(|why| Error::config(key, format!("{name}=`{text}`: {why}")))
    }
}

impl Config {
    /// The settings the environment gives: the variables in the table of [`Config`].
    ///
    /// When both a `PGLOG_*` and a `STOGGER_*` variable are set, the `PGLOG_*` one wins.
    /// Booleans are `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`, in any case;
    /// durations are whole milliseconds. An empty variable counts as unset. `RUST_LOG` is
    /// not read: it is often exported for other programs, and would silently change what
    /// lands in a shared table.
    ///
    /// # Errors
    ///
    /// A variable whose value is malformed or out of range; the message names the
    /// variable.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// // PGLOG_TABLE=nightly_logs
    /// let config = pglog::Config::from_env()?;
    /// assert_eq!(config.table.as_deref(), Some("nightly_logs"));
    /// # Ok::<(), pglog::Error>(())
    /// ```
    pub fn from_env() -> Result<Config, Error> {
        from_lookup(&real_env)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::env;
    use super::*;

    #[test]
    fn pglog_names_win_over_stoggers() {
        let c = from_lookup(&env(&[
            ("STOGGER_POSTGRES_DSN", "host=stogger"),
            ("PGLOG_DSN", "host=pglog"),
            ("STOGGER_POSTGRES_TABLE", "stogger_table"),
            ("STOGGER_ENABLE_POSTGRES", "1"),
            ("PGLOG_ENABLE", "false"),
        ]))
        .unwrap();
        assert_eq!(c.dsn, Some("host=pglog".into()));
        assert_eq!(c.table.as_deref(), Some("stogger_table"));
        assert_eq!(c.enable_postgres, Some(false));
        assert_eq!(from_lookup(&env(&[])).unwrap(), Config::default());
    }

    #[test]
    fn out_of_range_variables_name_the_variable_and_the_range() {
        for (name, value, range) in [
            ("PGLOG_QUEUE_CAPACITY", "1000000000", "1 to 10000000"),
            ("PGLOG_BATCH_SIZE", "9223372036854775807", "1 to 100000"),
            (
                "PGLOG_FLUSH_INTERVAL_MS",
                "18446744073709551615",
                "1 to 3600000 ms",
            ),
            ("PGLOG_STATEMENT_TIMEOUT_MS", "1", "10 to 3600000 ms"),
            (
                "PGLOG_QUEUE_BYTES",
                "99999999999999",
                "1024 to 17179869184 bytes",
            ),
        ] {
            let err = from_lookup(&env(&[(name, value)])).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(range), "{name}: {err}");
        }
    }

    #[test]
    fn malformed_variables_name_the_variable_and_what_is_accepted() {
        let err = |pairs: &[(&str, &str)]| from_lookup(&env(pairs)).unwrap_err().to_string();
        assert_eq!(
            err(&[("STOGGER_ENABLE_POSTGRES", "maybe")]),
            "invalid pglog setting `enable_postgres`: STOGGER_ENABLE_POSTGRES=`maybe`: \
             use 1, true, yes or on, or 0, false, no or off"
        );
        assert_eq!(
            err(&[("PGLOG_POOL_SIZE", "0")]),
            "invalid pglog setting `pool_size`: PGLOG_POOL_SIZE=`0`: 0 is out of range; use 1 to 1000"
        );
        assert!(err(&[("PGLOG_POOL_WAIT_MS", "1s")]).contains("PGLOG_POOL_WAIT_MS=`1s`"));
        assert!(err(&[("PGLOG_LEVEL", "verbose")]).contains("PGLOG_LEVEL=`verbose`"));
        assert!(err(&[("PGLOG_LOG", "x=y=z")]).contains("PGLOG_LOG=`x=y=z`"));
        assert_eq!(
            err(&[("PGLOG_OVERFLOW", "spill")]),
            "invalid pglog setting `overflow`: PGLOG_OVERFLOW=`spill`: `spill` is not an overflow \
             policy; use block or drop"
        );
    }
}
