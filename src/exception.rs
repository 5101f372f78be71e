//! Errors logged as key-values, stored in stogger's keys as well as the caller's:
//! `exception_msg` (the error's `Display`), `exception_class` (its type name where Rust
//! knows it) and `exception_traceback` (the error, then its `source()` chain one cause per
//! line, then a backtrace when the error carries one).
//!
//! `log` hands pglog an error as `&(dyn Error + 'static)`: its concrete type is gone,
//! so [`ErrorValue::from_dyn`] names it only when it is one of the types in [`known`]
//! (the standard library's, and a few of pglog's dependencies). [`error_value`] takes
//! the error while its type is still known and records the type's name.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

use crate::render::{display_capped, storable, DEFAULT_MAX_EVENT_BYTES};

/// The key of the error's `Display`.
pub(crate) const MSG_KEY: &str = "exception_msg";
/// The key of the error's type name.
pub(crate) const CLASS_KEY: &str = "exception_class";
/// The key of the error and its causes, one per line, and its backtrace.
pub(crate) const TRACEBACK_KEY: &str = "exception_traceback";
/// The three keys, in the order they are written.
pub(crate) const KEYS: [&str; 3] = [MSG_KEY, CLASS_KEY, TRACEBACK_KEY];
/// `exception_class` for an error whose concrete type pglog cannot see (it came through
/// `log`'s `err:err` capture and is none of the [`known`] types): what Rust calls it.
pub(crate) const UNKNOWN_CLASS: &str = "dyn std::error::Error";
/// How many causes are followed: a `source()` chain may be long, or even loop.
const MAX_CAUSES: usize = 64;
/// Starts each cause's line in the traceback.
pub(crate) const CAUSE_PREFIX: &str = "caused by: ";
/// Starts the continuation lines of a message that spans several lines.
const CONTINUATION: &str = "  ";
/// Separates the causes from the backtrace (after an empty line), as Rust's panic
/// message does.
const BACKTRACE_HEADER: &str = "stack backtrace:";

/// An error as pglog stores it, with its type name: made by [`error_value`] where the
/// error's type is known, so that `exception_class` can name it.
///
/// It is a snapshot (the messages of the error and of its causes, formatted when it is
/// made), so it is `'static` and `log` can hand it to pglog as an error:
///
/// ```
/// # use std::io;
/// let e = io::Error::new(io::ErrorKind::NotFound, "config.toml missing");
/// log::error!(err:err = pglog::error_value(&e); "cannot start");
/// ```
///
/// Any error logged with `err:err = e` fills the same keys; only its class may be
/// unknown then (see [`from_dyn`](ErrorValue::from_dyn)). An error that carries a
/// backtrace (`anyhow`'s, when `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` is set) keeps it
/// in `exception_traceback` when given to [`backtrace`](ErrorValue::backtrace):
///
/// ```
/// # fn load() -> anyhow::Result<()> { Ok(()) }
/// if let Err(e) = load() {
///     let value = pglog::ErrorValue::from_dyn(e.as_ref())
///         .class("myapp::LoadError")
///         .backtrace(e.backtrace());
///     log::error!(err:err = value; "load failed");
/// }
/// ```
#[derive(Clone)]
pub struct ErrorValue {
    class: Option<Cow<'static, str>>,
    message: String,
    source: Option<Box<ErrorValue>>,
    backtrace: Option<String>,
}

/// The value to log for `error`, naming its type in `exception_class` (see
/// [`ErrorValue`]): `log::error!(err:err = pglog::error_value(&e); "...")`.
///
/// The standard library's errors are named as Rust programmers write them
/// (`std::io::Error`); others by [`std::any::type_name`] (`myapp::config::ConfigError`).
pub fn error_value<E: StdError + 'static>(error: &E) -> ErrorValue {
    let mut value = ErrorValue::from_dyn(error);
    if value.class.is_none() {
        value.class = Some(Cow::Borrowed(std::any::type_name::<E>()));
    }
    value
}

impl ErrorValue {
    /// The value for an error whose type is not known here (a `Box<dyn Error>`,
    /// `anyhow::Error::as_ref`): its class is named only when it is one of the standard
    /// library's errors, else set by [`class`](ErrorValue::class).
    pub fn from_dyn(error: &(dyn StdError + 'static)) -> ErrorValue {
        ErrorValue::capture(error, DEFAULT_MAX_EVENT_BYTES)
    }

    /// Names the error's class, for `exception_class`.
    #[must_use]
    pub fn class(mut self, name: impl Into<Cow<'static, str>>) -> ErrorValue {
        self.class = Some(name.into());
        self
    }

    /// Keeps `backtrace` in `exception_traceback` when it was captured (it is empty
    /// unless `RUST_BACKTRACE` or `RUST_LIB_BACKTRACE` asked for backtraces).
    #[must_use]
    pub fn backtrace(mut self, backtrace: &Backtrace) -> ErrorValue {
        if backtrace.status() == BacktraceStatus::Captured {
            self.backtrace = Some(backtrace.to_string());
        }
        self
    }

    /// The snapshot of `error` and its causes, each message kept up to `max_bytes`.
    pub(crate) fn capture(error: &(dyn StdError + 'static), max_bytes: usize) -> ErrorValue {
        if let Some(value) = error.downcast_ref::<ErrorValue>() {
            return value.clone();
        }
        let mut causes = Vec::new();
        let mut next = error.source();
        while let Some(cause) = next {
            if causes.len() == MAX_CAUSES {
                causes.push(ErrorValue::text(format!(
                    "… more causes, not followed (pglog follows {MAX_CAUSES})"
                )));
                break;
            }
            if let Some(value) = cause.downcast_ref::<ErrorValue>() {
                causes.push(value.clone());
                break;
            }
            causes.push(ErrorValue::one(cause, max_bytes));
            next = cause.source();
        }
        let mut value = ErrorValue::one(error, max_bytes);
        value.source = causes.into_iter().rev().fold(None, |source, mut cause| {
            if cause.source.is_none() {
                cause.source = source;
            }
            Some(Box::new(cause))
        });
        value
    }

    /// `error` alone, without its causes.
    fn one(error: &(dyn StdError + 'static), max_bytes: usize) -> ErrorValue {
        ErrorValue {
            class: known(error).map(Cow::Borrowed),
            ..ErrorValue::text(display_capped(error, max_bytes))
        }
    }

    fn text(message: String) -> ErrorValue {
        ErrorValue {
            class: None,
            message,
            source: None,
            backtrace: None,
        }
    }

    /// The error and its causes, outermost first.
    fn chain(&self) -> impl Iterator<Item = &ErrorValue> {
        std::iter::successors(Some(self), |e| e.source.as_deref())
    }
}

impl fmt::Display for ErrorValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for ErrorValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorValue")
            .field("class", &self.class)
            .field("message", &self.message)
            .field("source", &self.source)
            .field("backtrace", &self.backtrace.is_some())
            .finish()
    }
}

impl StdError for ErrorValue {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// What one event stores in stogger's keys, each value storable (no NUL) and within
/// the event's size limit; `None` where the caller set the key himself.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exception {
    pub msg: Option<String>,
    pub class: Option<String>,
    pub traceback: Option<String>,
}

impl Exception {
    /// The keys for `error`, each kept up to `max_bytes`.
    pub fn of(error: &(dyn StdError + 'static), max_bytes: usize) -> Exception {
        let value = ErrorValue::capture(error, max_bytes);
        let class = value.class.as_deref().unwrap_or(UNKNOWN_CLASS);
        Exception {
            msg: Some(storable(value.message.clone())),
            class: Some(storable(cap(class.to_owned(), max_bytes))),
            traceback: Some(storable(cap(traceback(&value), max_bytes))),
        }
    }

    /// Forgets the keys the caller set himself: his values are stored instead.
    pub fn without(&mut self, key: &str) {
        match key {
            MSG_KEY => self.msg = None,
            CLASS_KEY => self.class = None,
            TRACEBACK_KEY => self.traceback = None,
            _ => {}
        }
    }

    /// The heap memory it holds.
    pub fn weight(&self) -> usize {
        [&self.msg, &self.class, &self.traceback]
            .into_iter()
            .map(|text| text.as_ref().map_or(0, String::capacity))
            .sum()
    }

    /// The keys to store, in order.
    pub fn members(&self) -> impl Iterator<Item = (&'static str, &str)> {
        KEYS.into_iter()
            .zip([&self.msg, &self.class, &self.traceback])
            .filter_map(|(key, text)| text.as_deref().map(|text| (key, text)))
    }
}

/// `exception_traceback`: the error's message, then one line per cause (`caused by: `),
/// a message's further lines indented, then the backtrace if there is one:
///
/// ```text
/// loading configuration
/// caused by: reading /etc/app/config.toml
/// caused by: No such file or directory (os error 2)
///
/// stack backtrace:
///    0: ...
/// ```
fn traceback(value: &ErrorValue) -> String {
    let mut text = String::with_capacity(
        value.chain().map(|e| e.message.len() + 16).sum::<usize>()
            + value.backtrace.as_ref().map_or(0, |b| b.len() + 24),
    );
    for (i, error) in value.chain().enumerate() {
        if i > 0 {
            text.push('\n');
            text.push_str(CAUSE_PREFIX);
        }
        for (j, line) in error.message.split('\n').enumerate() {
            if j > 0 {
                text.push('\n');
                text.push_str(CONTINUATION);
            }
            text.push_str(line);
        }
    }
    if let Some(backtrace) = &value.backtrace {
        text.push_str("\n\n");
        text.push_str(BACKTRACE_HEADER);
        text.push('\n');
        text.push_str(backtrace.trim_end());
    }
    text
}

/// What a readable line adds to the message of an event with an error: the error and
/// its causes, read from its `traceback`, each after `: ` (as `anyhow` prints `{:#}`):
/// `: loading configuration: reading /etc/app/config.toml: No such file or directory`.
///
/// Built from the stored traceback alone, so that `pglog replay` can take it off again.
pub(crate) fn chain_suffix(traceback: &str) -> String {
    let mut suffix = String::with_capacity(traceback.len().min(4096) + 8);
    for line in traceback.split('\n') {
        if line.is_empty() {
            break; // the backtrace follows
        }
        if let Some(more) = line.strip_prefix(CONTINUATION) {
            suffix.push('\n');
            suffix.push_str(more);
        } else {
            suffix.push_str(": ");
            suffix.push_str(line.strip_prefix(CAUSE_PREFIX).unwrap_or(line));
        }
    }
    suffix
}

/// Keeps the head of `text` up to `max_bytes`, with a note of its whole size.
fn cap(text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    display_capped(&text, max_bytes)
}

/// The name of `error`'s type when it is one of these, as a Rust programmer writes it.
fn known(error: &(dyn StdError + 'static)) -> Option<&'static str> {
    macro_rules! names {
        ($($t:ty),* $(,)?) => {
            $(
                if error.is::<$t>() {
                    return Some(stringify!($t));
                }
            )*
        };
    }
    if error.is::<crate::Error>() {
        return Some("pglog::Error");
    }
    names!(
        std::io::Error,
        std::fmt::Error,
        std::num::ParseIntError,
        std::num::ParseFloatError,
        std::num::TryFromIntError,
        std::str::ParseBoolError,
        std::str::Utf8Error,
        std::string::FromUtf8Error,
        std::string::FromUtf16Error,
        std::char::ParseCharError,
        std::char::CharTryFromError,
        std::net::AddrParseError,
        std::env::VarError,
        std::ffi::NulError,
        std::time::SystemTimeError,
        std::array::TryFromSliceError,
        std::sync::mpsc::RecvError,
        std::sync::mpsc::RecvTimeoutError,
        std::sync::mpsc::TryRecvError,
        std::thread::AccessError,
        serde_json::Error,
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_errors_are_named_as_written() {
        let parse = "x".parse::<u8>().unwrap_err();
        assert_eq!(
            error_value(&parse).class.as_deref(),
            Some("std::num::ParseIntError")
        );
        let io = std::io::Error::other("disk full");
        assert_eq!(
            ErrorValue::from_dyn(&io).class.as_deref(),
            Some("std::io::Error")
        );
        let config = crate::Error::config("table", "empty");
        assert_eq!(
            ErrorValue::from_dyn(&config).class.as_deref(),
            Some("pglog::Error")
        );
        let boxed: Box<dyn StdError> = "plain".into();
        assert_eq!(ErrorValue::from_dyn(&*boxed).class, None);
        assert_eq!(
            ErrorValue::from_dyn(&*boxed)
                .class("app::Plain")
                .class
                .as_deref(),
            Some("app::Plain")
        );
    }

    #[test]
    fn the_value_is_an_error_with_the_same_chain() {
        let io = std::io::Error::other("disk full");
        let outer = ErrorValue::text("saving".to_owned());
        let mut value = outer.clone();
        value.source = Some(Box::new(ErrorValue::from_dyn(&io)));
        let copy = error_value(&value);
        let mut chain = vec![copy.to_string()];
        let mut next = copy.source();
        while let Some(cause) = next {
            chain.push(cause.to_string());
            next = cause.source();
        }
        assert_eq!(chain, ["saving", "disk full"]);
        let keys = Exception::of(&copy, 1 << 20);
        assert_eq!(
            keys.traceback.as_deref(),
            Some("saving\ncaused by: disk full")
        );
        // The cause that is itself a value keeps its class.
        assert_eq!(
            copy.source.unwrap().class.as_deref(),
            Some("std::io::Error")
        );
    }

    #[test]
    fn a_captured_backtrace_follows_the_causes() {
        let io = std::io::Error::other("disk full");
        let value = error_value(&io).backtrace(&Backtrace::force_capture());
        let keys = Exception::of(&value, 1 << 20);
        let traceback = keys.traceback.unwrap();
        assert!(
            traceback.starts_with("disk full\n\nstack backtrace:\n"),
            "{traceback:.200}"
        );
        assert!(traceback.contains("a_captured_backtrace_follows_the_causes"));
        assert_eq!(chain_suffix(&traceback), ": disk full");
        // A backtrace that was not captured is not kept.
        let value = error_value(&io).backtrace(&Backtrace::disabled());
        assert_eq!(value.backtrace, None);
    }
}
