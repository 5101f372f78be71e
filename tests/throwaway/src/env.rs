//! The environment variables the harness reads. Each is named for the harness
//! and still read under the name it had when the harness was part of pglog, so
//! that existing setups keep working; the new name wins.

use std::ffi::OsString;

/// One setting taken from the environment.
pub(crate) struct Var {
    /// The harness's name for it (`THROWAWAY_PG_…`), the one messages give.
    pub(crate) name: &'static str,
    /// The name it had inside pglog (`PGLOG_PG_…`), read when `name` is unset.
    legacy: &'static str,
}

/// Directory holding `initdb`, `pg_ctl` and `postgres`.
pub(crate) const BINDIR: Var = Var {
    name: "THROWAWAY_PG_BINDIR",
    legacy: "PGLOG_PG_BINDIR",
};

/// OS user the server runs as when the process is root.
pub(crate) const OSUSER: Var = Var {
    name: "THROWAWAY_PG_OSUSER",
    legacy: "PGLOG_PG_OSUSER",
};

impl Var {
    /// The value, with the name it was found under; an empty value counts as
    /// unset, as `${VAR:-}` does in `.ci/ensure-postgres`.
    pub(crate) fn get(&self) -> Option<(&'static str, OsString)> {
        self.get_from(std::env::var_os)
    }

    fn get_from(
        &self,
        lookup: impl Fn(&'static str) -> Option<OsString>,
    ) -> Option<(&'static str, OsString)> {
        [self.name, self.legacy].into_iter().find_map(|name| {
            lookup(name)
                .filter(|value| !value.is_empty())
                .map(|value| (name, value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(set: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            set.iter()
                .find(|(set_name, _)| *set_name == name)
                .map(|(_, value)| value.into())
        }
    }

    #[test]
    fn new_name_wins_and_legacy_name_is_a_fallback() {
        let both = [("THROWAWAY_PG_BINDIR", "/new"), ("PGLOG_PG_BINDIR", "/old")];
        assert_eq!(
            BINDIR.get_from(lookup(&both)),
            Some(("THROWAWAY_PG_BINDIR", "/new".into()))
        );
        let legacy = [("PGLOG_PG_OSUSER", "pg")];
        assert_eq!(
            OSUSER.get_from(lookup(&legacy)),
            Some(("PGLOG_PG_OSUSER", "pg".into()))
        );
        let new_empty = [("THROWAWAY_PG_OSUSER", ""), ("PGLOG_PG_OSUSER", "pg")];
        assert_eq!(
            OSUSER.get_from(lookup(&new_empty)),
            Some(("PGLOG_PG_OSUSER", "pg".into()))
        );
        assert_eq!(BINDIR.get_from(lookup(&[("PGLOG_PG_BINDIR", "")])), None);
        assert_eq!(BINDIR.get_from(lookup(&legacy)), None);
    }
}
