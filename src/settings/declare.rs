//! What one declaration of the settings (in [`super`]) becomes.
//!
//! Each entry reads
//!
//! ```text
//! /// What it does, for the `Config` field and the builder call (default ...).
//! name: Value = default; Form, file_key, ["PGLOG_VARIABLE", ...], setter;
//! ```
//!
//! and gives, with nothing else to write:
//!
//! - the field `name: Option<Value>` of the public [`Config`](crate::Config) (what
//!   one source set), with its doc, and a row of the table in `Config`'s docs;
//! - the key `file_key` of the `[tool.pglog]` section, read through `Form` (so a bad
//!   value is reported at its line and key, with the allowed range);
//! - the environment variables, first set wins, read through `Form` (so a bad value
//!   names its variable);
//! - the check of a value set by code against `Form`'s range, naming `name`;
//! - the field `name: Value` of the resolved [`Settings`](super::Settings), `default`
//!   where no source set it; a setting declared without `= default` is an
//!   `Option<Value>` there;
//! - with `setter` = `plain` or `into`, the builder call `Builder::name(value)`, taking
//!   the value, or anything `Into` it; `custom` settings have hand-written calls in
//!   `builder.rs`.

/// See the module docs.
macro_rules! declare {
    (
        $(#[$config_meta:meta])*
        pub struct Config;
        $(
            $(#[doc = $doc:literal])*
            $name:ident: $value:ty $(= $default:expr)?;
                $form:ty, $file:ident, [$($var:literal),*], $setter:ident;
        )*
    ) => {
        $(#[$config_meta])*
        ///
        /// | field | key in `[tool.pglog]` | environment (first set wins) |
        /// |---|---|---|
        $(
            #[doc = concat!(
                "| [`", stringify!($name), "`](Config::", stringify!($name), ") | `",
                stringify!($file), "` | ", $("`", $var, "` ",)* "|"
            )]
        )*
        #[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
        #[serde(from = "InFile")]
        #[non_exhaustive]
        pub struct Config {
            $(
                $(#[doc = $doc])*
                pub $name: Option<$value>,
            )*
        }

        /// [`Config`] as a file writes it: the same settings under their file keys, each
        /// read through its form.
        #[derive(Default, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub(crate) struct InFile {
            $($file: Option<$form>,)*
        }

        impl From<InFile> for Config {
            fn from(file: InFile) -> Config {
                Config {
                    $($name: file.$file.map(Form::into_value),)*
                }
            }
        }

        impl Config {
            /// Every setting `over` has, else `self`'s; no special rule applied.
            fn or_else(self, over: Config) -> Config {
                Config {
                    $($name: over.$name.or(self.$name),)*
                }
            }

            /// Every value set is within its range; the error names the setting.
            fn check(&self) -> Result<(), Error> {
                $(
                    if let Some(value) = &self.$name {
                        <$form as Form>::check(value)
                            .map_err(|why| Error::config(stringify!($name), why))?;
                    }
                )*
                Ok(())
            }

            /// The names of the settings this source set, in declaration order.
            #[allow(dead_code)] // the `pglog` command's doctor
            pub(crate) fn set_names(&self) -> Vec<&'static str> {
                let mut names = Vec::new();
                $(
                    if self.$name.is_some() {
                        names.push(stringify!($name));
                    }
                )*
                names
            }

            /// The settings the environment gives, through `vars`.
            fn read_vars(vars: &env::Vars<'_>) -> Result<Config, Error> {
                Ok(Config {
                    $($name: vars.read::<$form>(stringify!($name), &[$($var),*])?,)*
                })
            }
        }

        /// Every setting with its value: the one the highest source set, else the
        /// default.
        #[derive(Debug, Clone)]
        pub(crate) struct Settings {
            $(pub $name: $crate::settings::declare::resolved!(type $value $(, $default)?),)*
        }

        impl Settings {
            /// Every setting's name and value as `Debug` shows it (a DSN: not shown).
            #[allow(dead_code)] // the `pglog` command's doctor
            pub(crate) fn shown(&self) -> Vec<(&'static str, String)> {
                vec![$((stringify!($name), format!("{:?}", self.$name)),)*]
            }

            fn from_merged(merged: Config) -> Settings {
                Settings {
                    $($name: $crate::settings::declare::resolved!(
                        value merged.$name $(, $default)?
                    ),)*
                }
            }
        }

        /// Every setting's name, file key and variables, for tests and tools.
        #[allow(dead_code)]
        pub(crate) const KEYS: &[(&str, &str, &[&str])] = &[
            $((stringify!($name), stringify!($file), &[$($var),*]),)*
        ];

        impl crate::Builder {
            $(
                $crate::settings::declare::setter!($setter, $name, $value, $(#[doc = $doc])*);
            )*
        }
    };
}

/// A builder call setting one value, or nothing for a `custom` setting.
macro_rules! setter {
    (plain, $name:ident, $value:ty, $(#[$doc:meta])*) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $value) -> crate::Builder {
            self.code.$name = Some(value);
            self
        }
    };
    (into, $name:ident, $value:ty, $(#[$doc:meta])*) => {
        $(#[$doc])*
        pub fn $name(mut self, value: impl Into<$value>) -> crate::Builder {
            self.code.$name = Some(value.into());
            self
        }
    };
    (custom, $name:ident, $value:ty, $(#[$doc:meta])*) => {};
}

/// A resolved setting's type (without a default, an `Option` of the value), or its value
/// (the value set, else the default).
macro_rules! resolved {
    (type $value:ty) => { Option<$value> };
    (type $value:ty, $default:expr) => { $value };
    (value $set:expr) => { $set };
    (value $set:expr, $default:expr) => { $set.unwrap_or_else(|| $default) };
}

pub(crate) use {declare, resolved, setter};
