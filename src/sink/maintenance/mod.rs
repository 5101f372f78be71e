//! Keeping the table in shape over time, off the hot path: partitions created ahead,
//! rows moved out of the default partition, expired partitions dropped, old rows of a
//! plain table deleted in batches.
//!
//! One named thread per process ("pglog-maintain"), started only when `partition` or
//! `retention_days` is set, runs a pass at start and then once an hour (a minute after a
//! pass the database's absence cut short, or one that ran out of time or waited too
//! long for a table lock). A thread of its own, in batch mode too: a pass
//! may take seconds, which the batch writer could not spend without letting its queue
//! fill. It opens a session of its own for each pass, so a pass never takes a session a
//! log call waits for. Processes take turns through an advisory lock they only ever
//! try ([`pass`]): a process that finds it held leaves the work to the holder.
//!
//! The thread is generic over [`Maintain`], so its timing and stopping are unit-tested
//! with a fake; the real pass is tested against a server.

mod pass;
pub(crate) mod plan;

pub(crate) use pass::Keeper;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fallback;
use crate::fork::Owner;
use crate::sync::{Condvar, Mutex};

/// How often a process runs a pass.
pub(crate) const EVERY: Duration = Duration::from_secs(3600);
/// How soon a pass the database's absence cut short, or one that could not finish, is
/// followed by another.
pub(crate) const RETRY: Duration = Duration::from_secs(60);
/// The longest a pass can take: its budget, and the last step it started.
pub(crate) const LONGEST_PASS: Duration =
    Duration::from_secs(pass::PASS_BUDGET.as_secs() + pass::STEP_LIMIT.as_secs() + 5);
/// How long stopping waits for a pass under way to end (it stops between steps); then
/// the thread is left to finish on its own, its transaction undone if the process exits.
const STOP_WAIT: Duration = Duration::from_millis(250);

/// One maintenance pass over the table.
pub(crate) trait Maintain: Send + Sync + 'static {
    /// Does what is due, checking `stop` between steps.
    fn pass(&self, stop: &AtomicBool) -> Pass;
}

/// How a pass went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Everything due is done (possibly nothing was).
    Done,
    /// Another process held the lock: it does the work.
    Busy,
    /// Part was done, and the pass ran out of time, was stopped, or waited too long for
    /// a table lock: the next pass, soon, goes on.
    Unfinished,
    /// A step failed (already reported, once). `soon`: the database was away or busy,
    /// worth another try before the hour is out.
    Failed { why: String, soon: bool },
}

/// How often passes run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub every: Duration,
    pub retry: Duration,
}

/// The maintenance thread of one process.
pub(crate) struct Maintenance<M: Maintain> {
    shared: Arc<Shared<M>>,
    owner: Owner,
    worker: Mutex<Option<JoinHandle<()>>>,
}

struct Shared<M> {
    keeper: M,
    timing: Timing,
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Passes asked for by [`Maintenance::run_now`] so far.
    asked: u64,
    /// The highest request a finished pass answered.
    answered: u64,
    last: Option<Pass>,
    /// The thread has ended.
    ended: bool,
}

impl<M: Maintain> Maintenance<M> {
    /// Starts the thread, which runs a first pass at once.
    pub fn start(keeper: M, timing: Timing) -> Maintenance<M> {
        let shared = Arc::new(Shared {
            keeper,
            timing,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let spawned = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("pglog-maintain".to_owned())
                .spawn(move || shared.run())
        };
        let worker = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                fallback::notice(&format!(
                    "cannot start the maintenance thread ({e}); partitions are not created \
                     ahead and retention does not run in this process"
                ));
                shared.state.lock().ended = true;
                None
            }
        };
        Maintenance {
            shared,
            owner: Owner::current(),
            worker: Mutex::new(worker),
        }
    }

    /// Runs a pass now and returns how it went, waiting at most `wait`; `None` when it
    /// did not end in time, or in a forked child (which has no maintenance thread).
    pub fn run_now(&self, wait: Duration) -> Option<Pass> {
        if !self.owner.is_current() {
            return None;
        }
        let deadline = Instant::now() + wait;
        let mut state = self.shared.state.lock();
        state.asked += 1;
        let ticket = state.asked;
        self.shared.changed.notify_all();
        while state.answered < ticket && !state.ended {
            let timed_out;
            (state, timed_out) = self.shared.changed.wait_until(state, deadline);
            if timed_out {
                return None;
            }
        }
        (state.answered >= ticket)
            .then(|| state.last.clone())
            .flatten()
    }

    /// Ends the thread: at once when it waits, after its current step when a pass is
    /// under way, waiting at most [`STOP_WAIT`] for that.
    pub fn stop(&self) {
        let Some(handle) = self.worker.lock().take() else {
            return;
        };
        // A forked child has not the thread: joining it would wait forever.
        if !self.owner.is_current() {
            std::mem::forget(handle);
            return;
        }
        self.shared.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + STOP_WAIT;
        let mut state = self.shared.state.lock();
        self.shared.changed.notify_all();
        while !state.ended {
            let timed_out;
            (state, timed_out) = self.shared.changed.wait_until(state, deadline);
            if timed_out {
                return;
            }
        }
        drop(state);
        let _ = handle.join();
    }
}

impl<M: Maintain> Drop for Maintenance<M> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<M: Maintain> Shared<M> {
    fn run(&self) {
        loop {
            let ticket = self.state.lock().asked;
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            // A panic must not end maintenance for the rest of the process's life.
            let outcome = catch_unwind(AssertUnwindSafe(|| self.keeper.pass(&self.stop)))
                .unwrap_or_else(|_| Pass::Failed {
                    why: "the maintenance pass panicked".to_owned(),
                    soon: false,
                });
            let wait = match outcome {
                Pass::Failed { soon: true, .. } | Pass::Unfinished => self.timing.retry,
                Pass::Done | Pass::Busy | Pass::Failed { .. } => self.timing.every,
            };
            let due = Instant::now() + wait;
            let mut state = self.state.lock();
            state.answered = ticket;
            state.last = Some(outcome);
            self.changed.notify_all();
            // Until the next pass is due, asked for, or the thread told to stop.
            while state.asked == state.answered && !self.stop.load(Ordering::Acquire) {
                let timed_out;
                (state, timed_out) = self.changed.wait_until(state, due);
                if timed_out {
                    break;
                }
            }
        }
        self.state.lock().ended = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::sink::testing::eventually;

    /// Counts its passes; each takes `takes` and answers `answer`.
    struct Fake {
        passes: AtomicUsize,
        takes: Duration,
        answer: Pass,
    }

    impl Maintain for Arc<Fake> {
        fn pass(&self, _: &AtomicBool) -> Pass {
            self.passes.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.takes);
            self.answer.clone()
        }
    }

    fn fake(takes: Duration, answer: Pass) -> Arc<Fake> {
        Arc::new(Fake {
            passes: AtomicUsize::new(0),
            takes,
            answer,
        })
    }

    const HOURLY: Timing = Timing {
        every: Duration::from_secs(3600),
        retry: Duration::from_secs(3600),
    };

    #[test]
    fn a_pass_runs_at_start_and_on_request() {
        let keeper = fake(Duration::ZERO, Pass::Done);
        let m = Maintenance::start(Arc::clone(&keeper), HOURLY);
        eventually("the first pass", || {
            keeper.passes.load(Ordering::SeqCst) == 1
        });
        assert_eq!(m.run_now(Duration::from_secs(5)), Some(Pass::Done));
        assert_eq!(keeper.passes.load(Ordering::SeqCst), 2);
        assert_eq!(m.run_now(Duration::from_secs(5)), Some(Pass::Done));
        assert_eq!(keeper.passes.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_request_during_a_pass_gets_a_pass_of_its_own() {
        let keeper = fake(Duration::from_millis(100), Pass::Busy);
        let m = Maintenance::start(Arc::clone(&keeper), HOURLY);
        eventually("the first pass began", || {
            keeper.passes.load(Ordering::SeqCst) == 1
        });
        // The pass under way began before the request: it does not answer it.
        assert_eq!(m.run_now(Duration::from_secs(5)), Some(Pass::Busy));
        assert_eq!(keeper.passes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn passes_repeat_at_their_interval_sooner_after_a_transient_failure() {
        let keeper = fake(
            Duration::ZERO,
            Pass::Failed {
                why: "away".into(),
                soon: true,
            },
        );
        let timing = Timing {
            every: Duration::from_secs(3600),
            retry: Duration::from_millis(10),
        };
        let _m = Maintenance::start(Arc::clone(&keeper), timing);
        eventually("retried soon", || keeper.passes.load(Ordering::SeqCst) >= 3);
        let keeper = fake(Duration::ZERO, Pass::Done);
        let timing = Timing {
            every: Duration::from_millis(10),
            retry: Duration::from_secs(3600),
        };
        let _m = Maintenance::start(Arc::clone(&keeper), timing);
        eventually("repeated", || keeper.passes.load(Ordering::SeqCst) >= 3);
    }

    #[test]
    fn stopping_is_prompt_when_idle_and_bounded_during_a_pass() {
        let keeper = fake(Duration::ZERO, Pass::Done);
        let m = Maintenance::start(Arc::clone(&keeper), HOURLY);
        eventually("the first pass", || {
            keeper.passes.load(Ordering::SeqCst) == 1
        });
        let started = Instant::now();
        m.stop();
        assert!(started.elapsed() < Duration::from_millis(200));
        assert_eq!(
            m.run_now(Duration::from_secs(1)),
            None,
            "no thread to run it"
        );

        let keeper = fake(Duration::from_secs(2), Pass::Done);
        let m = Maintenance::start(Arc::clone(&keeper), HOURLY);
        eventually("the first pass", || {
            keeper.passes.load(Ordering::SeqCst) == 1
        });
        let started = Instant::now();
        drop(m);
        assert!(started.elapsed() < STOP_WAIT + Duration::from_millis(100));
    }

    #[test]
    fn a_panicking_pass_fails_and_the_thread_carries_on() {
        struct Panics(AtomicUsize);
        impl Maintain for Arc<Panics> {
            fn pass(&self, _: &AtomicBool) -> Pass {
                self.0.fetch_add(1, Ordering::SeqCst);
                panic!("in a pass");
            }
        }
        let keeper = Arc::new(Panics(AtomicUsize::new(0)));
        let m = Maintenance::start(Arc::clone(&keeper), HOURLY);
        let failed = m.run_now(Duration::from_secs(5));
        assert!(
            matches!(failed, Some(Pass::Failed { soon: false, .. })),
            "{failed:?}"
        );
        assert!(m.run_now(Duration::from_secs(5)).is_some());
    }
}
