//! Helpers shared by the integration tests, by concept: the databases tests write to and
//! read back ([`db`]), programs run as child processes ([`child`]), the accounting of
//! every event ([`accounting`]), and servers with special authentication ([`servers`]).
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

pub mod accounting;
pub mod child;
pub mod db;
pub mod servers;

pub use accounting::*;
pub use child::*;
pub use db::*;
pub use servers::*;

/// Runs the listed checks with [`run_checks`], each named after its function; a check
/// may carry attributes (`#[cfg(...)]`).
#[macro_export]
macro_rules! checks {
    ($($(#[$attr:meta])* $check:ident),* $(,)?) => {
        $crate::common::run_checks(&[
            $($(#[$attr])* (stringify!($check), $check as fn()),)*
        ])
    };
}
