//! What the sink's unit tests share.

use std::time::{Duration, Instant};

/// Waits (generously: a loaded machine may be slow) for another thread to bring `check`
/// about; fails naming `what` when it never does.
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
