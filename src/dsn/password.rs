//! The password of a connection, looked up each time a session is opened, as libpq does:
//! a password rotated in `~/.pgpass`, in a service file or in the environment takes
//! effect at the next reconnect, without restarting the program.

use crate::fallback::RateLimit;
use crate::libpq::{passfile, service};
use crate::settings::SharedEnv;

use super::{PASSWORD_VARS, PLACEHOLDER};

/// Where a connection's password comes from, first found wins: the DSN's `%PASSWORD%`
/// (from [`PASSWORD_VARS`]) or its own password, the service's, `PGPASSWORD` (when libpq's
/// variables are read), the password file (`passfile`, `PGPASSFILE` or `~/.pgpass`).
pub(crate) struct Password {
    /// The DSN's own password; empty (stogger's `user:@` form) counts as none.
    own: Option<String>,
    /// The DSN said `%PASSWORD%`.
    placeholder: bool,
    service: Option<String>,
    passfile: Option<String>,
    libpq_env: bool,
    env: SharedEnv,
    /// Said once: the password file was ignored (readable by others, unreadable).
    passfile_notice: RateLimit,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Password")
            .field("own", &self.own.as_ref().map(|_| "<set, not shown>"))
            .field("placeholder", &self.placeholder)
            .field("service", &self.service)
            .field("passfile", &self.passfile)
            .finish_non_exhaustive()
    }
}

/// Who a connection is for, as the password file matches it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct For<'a> {
    /// The host as written (a name, an address, or a socket directory).
    pub host: &'a str,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

impl Password {
    pub fn new(
        own: Option<String>,
        placeholder: bool,
        service: Option<String>,
        passfile: Option<String>,
        libpq_env: bool,
        env: SharedEnv,
    ) -> Password {
        Password {
            own,
            placeholder,
            service,
            passfile,
            libpq_env,
            env,
            passfile_notice: RateLimit::once(),
        }
    }

    /// No password from anywhere but the (empty) environment: for tests of other parts.
    #[cfg(test)]
    pub fn none() -> Password {
        Password::new(
            None,
            false,
            None,
            None,
            false,
            std::sync::Arc::new(|_: &str| None),
        )
    }

    /// The password for a new connection, read now; `None`: send none.
    pub fn lookup(&self, to: For<'_>) -> Option<String> {
        self.find(to).map(|(password, _)| password)
    }

    /// The password for a new connection and where it was found (a variable's name, "the
    /// DSN", a service, `PGPASSWORD`, a password file), for the `pglog` command's doctor.
    pub fn find(&self, to: For<'_>) -> Option<(String, String)> {
        let env = &*self.env;
        let nonempty = |p: Option<String>, from: &dyn Fn() -> String| {
            p.filter(|p| !p.is_empty()).map(|p| (p, from()))
        };
        let from_dsn = if self.placeholder {
            PASSWORD_VARS
                .iter()
                .find_map(|name| env(name).map(|p| (p, (*name).to_owned())))
        } else {
            self.own.clone().map(|p| (p, "the DSN".to_owned()))
        };
        from_dsn
            .filter(|(p, _)| !p.is_empty())
            .or_else(|| {
                let name = self.service.as_deref()?;
                let params = service::lookup(name, env).ok()?;
                nonempty(
                    params
                        .into_iter()
                        .find(|(k, _)| k == "password")
                        .map(|(_, v)| v),
                    &|| format!("service {name}"),
                )
            })
            .or_else(|| {
                nonempty(self.libpq_env.then(|| env("PGPASSWORD")).flatten(), &|| {
                    "PGPASSWORD".to_owned()
                })
            })
            .or_else(|| {
                let path = self.passfile()?;
                self.in_passfile(to)
                    .map(|p| (p, format!("password file {}", path.display())))
            })
    }

    /// The password file to read: PGPASSFILE only when libpq's variables are read;
    /// `~/.pgpass` always, as psql.
    fn passfile(&self) -> Option<std::path::PathBuf> {
        let env = |name: &str| {
            (self.libpq_env || name == "HOME")
                .then(|| (self.env)(name))
                .flatten()
        };
        passfile::location(self.passfile.as_deref(), &env)
    }

    fn in_passfile(&self, to: For<'_>) -> Option<String> {
        let path = self.passfile()?;
        match passfile::read(&path) {
            passfile::Read::Found(file) => file
                .lookup(
                    to.host,
                    Some(to.port),
                    to.dbname,
                    to.user,
                    super::default_socket_dir(),
                )
                .map(str::to_owned),
            passfile::Read::Missing => None,
            passfile::Read::Ignored(why) => {
                self.passfile_notice.notice(|| why);
                None
            }
        }
    }

    /// Where [`lookup`](Password::lookup) looks, for the message when it found nothing.
    pub fn searched(&self) -> String {
        let mut places = Vec::new();
        if self.placeholder {
            places.push(format!("{} and {}", PASSWORD_VARS[0], PASSWORD_VARS[1]));
        }
        if let Some(name) = &self.service {
            places.push(format!("service {name:?}"));
        }
        if self.libpq_env {
            places.push("PGPASSWORD".to_owned());
        }
        match self.passfile() {
            Some(path) => places.push(format!("the password file {}", path.display())),
            None => places.push("no password file (HOME is not set)".to_owned()),
        }
        places.join(", ")
    }

    /// Why the server may have asked in vain, for the notice about a refused login.
    pub fn hint(&self) -> Option<String> {
        let env = &*self.env;
        (self.placeholder && PASSWORD_VARS.iter().all(|name| env(name).is_none())).then(|| {
            format!(
                "the DSN contains {PLACEHOLDER} but neither {} nor {} is set; set one of them \
                 to the database password",
                PASSWORD_VARS[0], PASSWORD_VARS[1]
            )
        })
    }
}
