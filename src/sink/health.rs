//! Whether the database is usable, when to try it again, and the last reason it failed.
//!
//! Once the database has failed, writers stop paying for it: [`Health::admit`] sends
//! them straight to the fallback, except one writer at a time that probes after a
//! backoff (50 ms, doubling, at most [`BACKOFF_MAX`]). Lock-free on the hot path: an
//! event on a healthy database costs one atomic load here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sync::Mutex;

use super::trouble::Trouble;

/// First and longest pause between probes of a failed database. Short enough that
/// writing resumes within about half a second of the database's return.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Whether a write may use the database now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// The database works: wait (boundedly) for a session.
    Write,
    /// The database failed and the backoff is over: try once, without waiting.
    Probe,
    /// The database failed recently: straight to the fallback.
    Skip,
}

pub(crate) struct Health {
    up: AtomicBool,
    /// While down: no probe before this many milliseconds after `start`.
    retry_at: AtomicU64,
    backoff_ms: AtomicU64,
    start: Instant,
    last: Mutex<Option<Trouble>>,
}

impl Health {
    pub fn new() -> Health {
        Health {
            up: AtomicBool::new(true),
            retry_at: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(millis(BACKOFF_MIN)),
            start: Instant::now(),
            last: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.start.elapsed())
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn admit(&self) -> Admit {
        self.admit_at(self.now_ms())
    }

    fn admit_at(&self, now: u64) -> Admit {
        if self.is_up() {
            return Admit::Write;
        }
        let at = self.retry_at.load(Ordering::Acquire);
        if now < at {
            return Admit::Skip;
        }
        // One caller wins the probe; the others keep going to the fallback.
        let next = now + self.backoff_ms.load(Ordering::Relaxed);
        match self
            .retry_at
            .compare_exchange(at, next, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Skip,
        }
    }

    /// How long until a failed database may be probed again (zero when it is up).
    pub fn until_next_probe(&self) -> Duration {
        let at = self.retry_at.load(Ordering::Acquire);
        Duration::from_millis(at.saturating_sub(self.now_ms()))
    }

    /// Why the database failed last, while it is down.
    pub fn last(&self) -> Option<Trouble> {
        self.last.lock().clone()
    }

    /// Records a failure; `true` when this starts an outage (the caller says so once).
    /// The next probe comes after the backoff, and not before `pause`.
    pub fn went_down(&self, why: &Trouble, pause: Duration) -> bool {
        self.went_down_at(self.now_ms(), why, pause)
    }

    fn went_down_at(&self, now: u64, why: &Trouble, pause: Duration) -> bool {
        *self.last.lock() = Some(why.clone());
        let first = self.up.swap(false, Ordering::AcqRel);
        let backoff = if first {
            millis(BACKOFF_MIN)
        } else {
            (self.backoff_ms.load(Ordering::Relaxed) * 2).min(millis(BACKOFF_MAX))
        };
        self.backoff_ms.store(backoff, Ordering::Relaxed);
        self.retry_at
            .store(now + backoff.max(millis(pause)), Ordering::Release);
        first
    }

    /// Records a success; `true` when this ends an outage.
    pub fn came_up(&self) -> bool {
        if self.is_up() || self.up.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.backoff_ms
            .store(millis(BACKOFF_MIN), Ordering::Relaxed);
        *self.last.lock() = None;
        true
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::trouble::Kind;

    fn lost() -> Trouble {
        Trouble::new(Kind::Lost, "gone")
    }

    #[test]
    fn up_admits_every_write() {
        let h = Health::new();
        assert_eq!(h.admit_at(0), Admit::Write);
        assert!(!h.came_up(), "already up: no recovery notice");
    }

    #[test]
    fn down_skips_until_the_backoff_then_admits_one_probe() {
        let h = Health::new();
        assert!(
            h.went_down_at(1000, &lost(), Duration::ZERO),
            "the first failure starts an outage"
        );
        assert!(
            !h.went_down_at(1000, &lost(), Duration::ZERO),
            "later ones do not"
        );
        // The second failure doubled the backoff to 100 ms.
        assert_eq!(h.admit_at(1050), Admit::Skip);
        assert_eq!(h.admit_at(1100), Admit::Probe);
        assert_eq!(h.admit_at(1100), Admit::Skip, "one probe at a time");
        assert_eq!(h.last().unwrap().detail, "gone");
        // A failed probe that took long pushes the next one further out.
        h.went_down_at(2000, &lost(), Duration::from_millis(900));
        assert_eq!(h.admit_at(2899), Admit::Skip);
        assert_eq!(h.admit_at(2900), Admit::Probe);
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_and_resets_on_success() {
        let h = Health::new();
        let mut now = 0;
        for _ in 0..20 {
            h.went_down_at(now, &lost(), Duration::ZERO);
            now += 1;
        }
        assert_eq!(h.backoff_ms.load(Ordering::Relaxed), millis(BACKOFF_MAX));
        assert!(h.came_up());
        assert!(h.last().is_none());
        assert!(h.went_down_at(now, &lost(), Duration::ZERO));
        assert_eq!(h.backoff_ms.load(Ordering::Relaxed), millis(BACKOFF_MIN));
    }
}
