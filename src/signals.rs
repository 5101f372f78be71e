//! Flushing on SIGTERM and SIGINT (the `signals` feature, opt-in with
//! [`Builder::flush_on_signal`](crate::Builder::flush_on_signal)).
//!
//! Without it, SIGTERM and SIGINT end a program as SIGKILL does: destructors do not run,
//! so batch mode's queue is lost. With it, a thread waits for either signal, closes the
//! sink (what is queued is written, within the flush timeout; what cannot be goes to
//! stderr), and then lets the signal take its usual effect: the process ends as killed by
//! that signal, which is what shells and supervisors look at. A second signal while
//! closing ends the process at once.

use std::sync::{Arc, Weak};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use signal_hook::low_level::emulate_default_handler;

use crate::logger::Core;
use crate::Error;

/// Installs the handler for `core` (held weakly: it does not keep the logger alive).
///
/// # Errors
///
/// The signal handler cannot be registered, or its thread cannot start.
pub(crate) fn install(core: &Arc<Core>) -> Result<(), Error> {
    let failed = |e: std::io::Error| {
        Error::config(
            "flush_on_signal",
            format!("cannot watch SIGTERM and SIGINT: {e}"),
        )
    };
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(failed)?;
    let core: Weak<Core> = Arc::downgrade(core);
    std::thread::Builder::new()
        .name("pglog-signals".to_owned())
        .spawn(move || {
            let mut closing = false;
            for signal in signals.forever() {
                if closing {
                    end(signal);
                }
                closing = true;
                let core = core.clone();
                let closer = std::thread::Builder::new()
                    .name("pglog-signal-flush".to_owned())
                    .spawn(move || {
                        if let Some(core) = core.upgrade() {
                            core.sink.close();
                        }
                        end(signal);
                    });
                if closer.is_err() {
                    end(signal);
                }
            }
        })
        .map_err(failed)?;
    Ok(())
}

/// Ends the process as `signal`'s default action does.
fn end(signal: i32) -> ! {
    let _ = emulate_default_handler(signal);
    // Only if the signal could not be re-raised: the conventional status for it.
    std::process::exit(128 + signal)
}
