//! A small pool of sessions, in the spirit of r2d2 (bounded waits, sessions checked on
//! checkout and discarded when broken, connections opened in the background) with what
//! a logger needs on top:
//!
//! - **No caller ever connects.** One connector thread per pool opens sessions, so a log
//!   call waits at most its pool wait, even for a server that takes the whole connect
//!   timeout to fail, and an attempt it stops waiting for is not wasted.
//! - **Background reconnects while the database is down** ([`Pool::keep_one`]), at a
//!   bounded cadence, so that writing resumes without an event paying for a connect.
//! - **Idle sessions are closed after the idle timeout**, the last one included: an idle
//!   program holds no server connection, and `pg_ctl stop -m smart` is not kept waiting.
//! - **A session is checked before it is lent** after any quiet ([`Pooled::check`]),
//!   within the caller's wait.
//!
//! A pool belongs to one process; see [`crate::fork`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex, MutexGuard};

use super::trouble::{Kind, Trouble};

/// First and longest pause between failed connection attempts.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_millis(500);
/// After a refused login or an untrusted certificate, which only an operator fixes: a
/// server that locks accounts after failed logins (or fail2ban) must not see a storm.
const REFUSED_RETRY: Duration = Duration::from_secs(5);

/// Opens sessions.
pub(crate) trait Connect: Send + Sync + 'static {
    type Session: Pooled;
    fn connect(&self) -> Result<Self::Session, Trouble>;
}

/// Whether an idle session can be lent.
#[derive(Debug)]
pub(crate) enum Check {
    Ready,
    /// Closed, broken or another process's: discard it and use another.
    Stale,
    /// It did not answer in time: the server may be frozen or unreachable.
    Silent(Trouble),
}

/// What the pool needs of a session.
pub(crate) trait Pooled: Send + 'static {
    /// Whether it was used so recently that it needs no check: called with the pool
    /// locked, so it must be cheap.
    fn fresh(&self) -> bool;
    /// Whether it can take a statement now; cheap, and never longer than `budget` (see
    /// [`Session::check`]).
    ///
    /// [`Session::check`]: super::session::Session::check
    fn check(&mut self, budget: Duration) -> Check;
    /// Whether a statement on it failed in a way that leaves it unusable.
    fn is_broken(&self) -> bool;
    /// Ends it.
    fn close(self);
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// Most sessions open at once.
    pub size: usize,
    /// A session idle this long is closed.
    pub idle_timeout: Duration,
}

/// Why [`Pool::get`] returned without a session.
#[derive(Debug)]
pub(crate) enum NoSession {
    /// Every session stayed lent out for the whole wait.
    Busy,
    /// A connection attempt failed while the caller waited.
    Failed(Trouble),
    /// A connection attempt was still under way when the wait ended.
    Connecting,
}

pub(crate) struct Pool<C: Connect> {
    inner: Arc<Inner<C>>,
}

struct Inner<C: Connect> {
    connect: C,
    settings: PoolSettings,
    state: Mutex<State<C::Session>>,
    /// Callers wait here: a session was returned or opened, or an attempt failed.
    available: Condvar,
    /// The connector waits here: a caller needs a session, `keep_one` changed, or the
    /// pool stops. Apart from `available`, so that returning a session (every event) does
    /// not wake the connector.
    work: Condvar,
}

struct State<S> {
    /// Idle sessions with the time they became idle; the last is the most recently used.
    idle: Vec<(S, Instant)>,
    /// Sessions in existence: idle, lent, and being opened.
    open: usize,
    /// Callers waiting for a session.
    waiting: usize,
    /// Open one session in the background even if nobody waits (the database is down).
    keep_one: bool,
    /// No connection attempt before this, after a failure.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Failed attempts so far; a waiter compares it to know one failed meanwhile.
    failures: u64,
    last_failure: Option<Trouble>,
    /// How long the last connection attempt took, if it succeeded.
    last_connect: Option<Duration>,
    stopped: bool,
}

impl<C: Connect> Pool<C> {
    /// A pool with no session yet, and its connector thread.
    pub fn start(connect: C, settings: PoolSettings) -> Pool<C> {
        let inner = Arc::new(Inner {
            connect,
            settings,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
                keep_one: false,
                retry_at: None,
                backoff: RETRY_MIN,
                failures: 0,
                last_failure: None,
                last_connect: None,
                stopped: false,
            }),
            available: Condvar::new(),
            work: Condvar::new(),
        });
        let worker = Arc::clone(&inner);
        let spawned = std::thread::Builder::new()
            .name("pglog-connect".to_owned())
            .spawn(move || worker.connector());
        if let Err(e) = spawned {
            let mut state = inner.state.lock();
            state.stopped = true;
            state.last_failure = Some(Trouble::new(
                super::trouble::Kind::Unreachable,
                format!("cannot start the connector thread: {e}"),
            ));
        }
        Pool { inner }
    }

    /// Lends a session: an idle one that is still usable, else one opened for this call
    /// by the connector, waiting at most `wait`. Fails at once when a connection attempt
    /// fails while no session exists, or an idle one does not answer.
    pub fn get(&self, wait: Duration) -> Result<Lease<'_, C>, NoSession> {
        let deadline = Instant::now() + wait;
        let inner = &*self.inner;
        let mut state = inner.state.lock();
        let failures = state.failures;
        state.waiting += 1;
        let outcome = loop {
            let session;
            (state, session) = self.take_idle(state, deadline);
            match session {
                Ok(Some(session)) => break Ok(session),
                Ok(None) => {}
                Err(trouble) => break Err(NoSession::Failed(trouble)),
            }
            // With sessions open elsewhere (lent to other threads), a failed attempt to
            // open one more is no outage: wait for one of them instead.
            if (state.failures != failures && state.open == 0) || state.stopped {
                break Err(NoSession::Failed(
                    state.last_failure.clone().unwrap_or_else(|| {
                        Trouble::new(super::trouble::Kind::Unreachable, "no connection")
                    }),
                ));
            }
            // Wakes the connector if this caller needs a new session.
            if state.waiting > state.idle.len() && state.open < inner.settings.size {
                inner.work.notify_one();
            }
            let timed_out;
            (state, timed_out) = inner.available.wait_until(state, deadline);
            if timed_out {
                let session;
                (state, session) = self.take_idle(state, deadline);
                match session {
                    Ok(Some(session)) => break Ok(session),
                    Ok(None) => {}
                    Err(trouble) => break Err(NoSession::Failed(trouble)),
                }
                break Err(if state.open < inner.settings.size {
                    NoSession::Connecting
                } else {
                    NoSession::Busy
                });
            }
        };
        state.waiting -= 1;
        outcome.map(|session| Lease {
            session: Some(session),
            pool: self,
        })
    }

    /// Waits, at most `wait`, until a session is open and idle, asking the connector for
    /// one if there is none. Checks nothing on the calling thread (which may be an async
    /// runtime's, where a session cannot be driven).
    pub fn warm(&self, wait: Duration) -> Result<(), NoSession> {
        let deadline = Instant::now() + wait;
        let inner = &*self.inner;
        let mut state = inner.state.lock();
        let failures = state.failures;
        state.waiting += 1;
        let outcome = loop {
            if !state.idle.is_empty() {
                break Ok(());
            }
            if state.failures != failures || state.stopped {
                break Err(NoSession::Failed(
                    state.last_failure.clone().unwrap_or_else(|| {
                        Trouble::new(super::trouble::Kind::Unreachable, "no connection")
                    }),
                ));
            }
            inner.work.notify_one();
            let timed_out;
            (state, timed_out) = inner.available.wait_until(state, deadline);
            if timed_out {
                break if state.idle.is_empty() {
                    Err(NoSession::Connecting)
                } else {
                    Ok(())
                };
            }
        };
        state.waiting -= 1;
        outcome
    }

    /// Pops idle sessions until a usable one turns up, closing the stale ones; checks run
    /// without the lock held, within what is left until `deadline`.
    #[allow(clippy::type_complexity)]
    fn take_idle<'g>(
        &'g self,
        mut state: MutexGuard<'g, State<C::Session>>,
        deadline: Instant,
    ) -> (
        MutexGuard<'g, State<C::Session>>,
        Result<Option<C::Session>, Trouble>,
    ) {
        while let Some((mut session, _)) = state.idle.pop() {
            if session.fresh() {
                return (state, Ok(Some(session)));
            }
            drop(state);
            let check = session.check(deadline.saturating_duration_since(Instant::now()));
            if let Check::Ready = check {
                return (self.inner.state.lock(), Ok(Some(session)));
            }
            session.close();
            state = self.inner.state.lock();
            state.open -= 1;
            // A dead session hints at a restart: let the connector replace it.
            self.inner.work.notify_one();
            if let Check::Silent(trouble) = check {
                return (state, Err(trouble));
            }
        }
        (state, Ok(None))
    }

    /// An idle, usable session if there is one; never waits, never connects.
    #[cfg(test)]
    fn try_get(&self) -> Option<Lease<'_, C>> {
        let (state, session) = self.take_idle(self.inner.state.lock(), Instant::now());
        drop(state);
        session.ok().flatten().map(|session| Lease {
            session: Some(session),
            pool: self,
        })
    }

    /// While `on`, the connector keeps one session open even when nobody asks for one,
    /// retrying at a bounded cadence: what the database does while it is down.
    pub fn keep_one(&self, on: bool) {
        let mut state = self.inner.state.lock();
        if state.keep_one != on {
            state.keep_one = on;
            self.inner.work.notify_one();
        }
    }

    /// Closes the idle sessions now (politely: the server sees a clean end), for a
    /// program about to exit; new ones are opened when needed.
    pub fn close_idle(&self) {
        let idle = {
            let mut state = self.inner.state.lock();
            let idle = std::mem::take(&mut state.idle);
            state.open -= idle.len();
            idle
        };
        idle.into_iter().for_each(|(session, _)| session.close());
    }

    /// Sessions open now (idle, lent or being opened).
    #[cfg(test)]
    pub fn open_sessions(&self) -> usize {
        self.inner.state.lock().open
    }

    /// Whether an idle session is ready to lend (unchecked).
    #[cfg(test)]
    pub fn has_idle(&self) -> bool {
        !self.inner.state.lock().idle.is_empty()
    }

    /// How long a probe may wait for a session: twice what the last connection attempt
    /// took if it succeeded (so that a session the connector is reopening is had), at most
    /// 50 ms; nothing when connecting fails or hangs.
    pub fn probe_wait(&self) -> Duration {
        const MOST: Duration = Duration::from_millis(50);
        self.inner
            .state
            .lock()
            .last_connect
            .map_or(Duration::ZERO, |took| (took * 2).min(MOST))
    }

    /// The last connection attempt's failure, if the last attempt failed.
    pub fn last_failure(&self) -> Option<Trouble> {
        self.inner.state.lock().last_failure.clone()
    }

    fn give_back(&self, session: C::Session) {
        let inner = &*self.inner;
        if session.is_broken() {
            inner.state.lock().open -= 1;
            session.close();
            // Someone waiting may need the connector to open another.
            inner.work.notify_one();
            return;
        }
        let mut state = inner.state.lock();
        state.idle.push((session, Instant::now()));
        if state.waiting > 0 {
            inner.available.notify_all();
        }
    }
}

impl<C: Connect> Drop for Pool<C> {
    fn drop(&mut self) {
        self.inner.state.lock().stopped = true;
        self.inner.work.notify_all();
        self.inner.available.notify_all();
    }
}

impl<C: Connect> Inner<C> {
    /// The connector thread: opens sessions on demand and while the database is down,
    /// and closes idle ones. Ends when the pool is dropped.
    fn connector(&self) {
        let mut state = self.state.lock();
        loop {
            if state.stopped {
                let idle = std::mem::take(&mut state.idle);
                state.open -= idle.len();
                drop(state);
                idle.into_iter().for_each(|(session, _)| session.close());
                return;
            }
            let now = Instant::now();
            let expired = self.expired(&mut state, now);
            if !expired.is_empty() {
                drop(state);
                expired.into_iter().for_each(Pooled::close);
                state = self.state.lock();
                continue;
            }
            let wanted = (state.waiting > state.idle.len() && state.open < self.settings.size)
                || (state.keep_one && state.open == 0);
            let due = state.retry_at.is_none_or(|at| at <= now);
            if wanted && due {
                state.open += 1;
                drop(state);
                let started = Instant::now();
                let result = self.connect.connect();
                let took = started.elapsed();
                state = self.state.lock();
                state.last_connect = result.is_ok().then_some(took);
                match result {
                    Ok(session) => {
                        state.idle.push((session, Instant::now()));
                        state.retry_at = None;
                        state.backoff = RETRY_MIN;
                        state.last_failure = None;
                    }
                    Err(trouble) => {
                        let pause = if matches!(trouble.kind, Kind::Login | Kind::Untrusted) {
                            REFUSED_RETRY
                        } else {
                            state.backoff
                        };
                        state.open -= 1;
                        state.failures += 1;
                        state.last_failure = Some(trouble);
                        state.retry_at = Some(Instant::now() + pause);
                        state.backoff = (state.backoff * 2).min(RETRY_MAX);
                    }
                }
                self.available.notify_all();
                continue;
            }
            // Sleep until an idle session expires, a retry is due, or something changes.
            let expiry = state
                .idle
                .iter()
                .map(|(_, since)| *since + self.settings.idle_timeout)
                .min();
            let retry = if wanted { state.retry_at } else { None };
            state = match expiry.into_iter().chain(retry).min() {
                Some(at) => self.work.wait_until(state, at).0,
                None => self.work.wait(state),
            };
        }
    }

    /// Takes the sessions idle longer than the idle timeout out of the pool.
    fn expired(&self, state: &mut State<C::Session>, now: Instant) -> Vec<C::Session> {
        let timeout = self.settings.idle_timeout;
        let mut expired = Vec::new();
        let mut i = 0;
        while i < state.idle.len() {
            if now.saturating_duration_since(state.idle[i].1) >= timeout {
                expired.push(state.idle.remove(i).0);
            } else {
                i += 1;
            }
        }
        state.open -= expired.len();
        expired
    }
}

/// A session lent by the pool; dropping it gives it back (or closes it when broken).
pub(crate) struct Lease<'p, C: Connect> {
    session: Option<C::Session>,
    pool: &'p Pool<C>,
}

impl<C: Connect> std::ops::Deref for Lease<'_, C> {
    type Target = C::Session;
    fn deref(&self) -> &C::Session {
        self.session
            .as_ref()
            .expect("a lease holds its session until dropped")
    }
}

impl<C: Connect> std::ops::DerefMut for Lease<'_, C> {
    fn deref_mut(&mut self) -> &mut C::Session {
        self.session
            .as_mut()
            .expect("a lease holds its session until dropped")
    }
}

impl<C: Connect> Drop for Lease<'_, C> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.give_back(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::eventually;
    use crate::sink::trouble::Kind;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Sessions that are plain numbers; the connector fails while `down` is set.
    #[derive(Default)]
    struct Fake {
        opened: AtomicUsize,
        closed: Arc<AtomicUsize>,
        down: AtomicBool,
        /// Sessions opened from now on report themselves unusable on checkout.
        stale: Arc<AtomicBool>,
        /// Idle sessions do not answer their check.
        silent: Arc<AtomicBool>,
    }

    struct FakeSession {
        closed: Arc<AtomicUsize>,
        stale: Arc<AtomicBool>,
        silent: Arc<AtomicBool>,
        broken: bool,
        id: usize,
    }

    impl Connect for Arc<Fake> {
        type Session = FakeSession;
        fn connect(&self) -> Result<FakeSession, Trouble> {
            if self.down.load(Ordering::SeqCst) {
                return Err(Trouble::new(Kind::Unreachable, "down"));
            }
            Ok(FakeSession {
                closed: Arc::clone(&self.closed),
                stale: Arc::clone(&self.stale),
                silent: Arc::clone(&self.silent),
                broken: false,
                id: self.opened.fetch_add(1, Ordering::SeqCst),
            })
        }
    }

    impl Pooled for FakeSession {
        fn fresh(&self) -> bool {
            false
        }
        fn check(&mut self, _: Duration) -> Check {
            if self.silent.load(Ordering::SeqCst) {
                Check::Silent(Trouble::new(Kind::Timeout, "no answer"))
            } else if self.stale.load(Ordering::SeqCst) {
                Check::Stale
            } else {
                Check::Ready
            }
        }
        fn is_broken(&self) -> bool {
            self.broken
        }
        fn close(self) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn pool(size: usize, idle_timeout: Duration) -> (Arc<Fake>, Pool<Arc<Fake>>) {
        let fake = Arc::new(Fake::default());
        let pool = Pool::start(Arc::clone(&fake), PoolSettings { size, idle_timeout });
        (fake, pool)
    }

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn sessions_are_opened_on_demand_and_reused_last_in_first_out() {
        let (fake, pool) = pool(4, LONG);
        assert_eq!(
            pool.open_sessions(),
            0,
            "nothing is opened before it is needed"
        );
        let a = pool.get(LONG).unwrap();
        let b = pool.get(LONG).unwrap();
        let (a_id, b_id) = (a.id, b.id);
        drop(a);
        drop(b);
        assert_eq!(
            pool.get(LONG).unwrap().id,
            b_id,
            "the most recently used first"
        );
        assert_eq!(fake.opened.load(Ordering::SeqCst), 2);
        assert_ne!(a_id, b_id);
    }

    #[test]
    fn the_size_bounds_the_sessions_and_a_full_pool_says_busy() {
        let (fake, pool) = pool(2, LONG);
        let _a = pool.get(LONG).unwrap();
        let _b = pool.get(LONG).unwrap();
        assert!(matches!(
            pool.get(Duration::from_millis(20)),
            Err(NoSession::Busy)
        ));
        assert_eq!(fake.opened.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_waiter_hears_of_a_failed_attempt_at_once() {
        let (fake, pool) = pool(2, LONG);
        fake.down.store(true, Ordering::SeqCst);
        let started = Instant::now();
        match pool.get(LONG) {
            Err(NoSession::Failed(t)) => assert_eq!(t.detail, "down"),
            other => panic!("{:?}", other.map(|l| l.id)),
        }
        assert!(started.elapsed() < LONG, "did not wait out the whole wait");
        assert!(pool.last_failure().is_some());
    }

    #[test]
    fn a_failed_extra_connect_is_no_outage_while_sessions_are_lent() {
        let (fake, pool) = pool(2, LONG);
        let first = pool.get(LONG).unwrap();
        fake.down.store(true, Ordering::SeqCst);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| pool.get(LONG).map(|lease| lease.id));
            eventually("the second connect failed", || {
                pool.last_failure().is_some()
            });
            let id = first.id;
            drop(first);
            assert_eq!(
                waiter.join().unwrap().ok(),
                Some(id),
                "it got the returned one"
            );
        });
    }

    #[test]
    fn a_silent_idle_session_fails_the_caller_at_once() {
        let (fake, pool) = pool(2, LONG);
        drop(pool.get(LONG).unwrap());
        fake.silent.store(true, Ordering::SeqCst);
        let started = Instant::now();
        assert!(matches!(pool.get(LONG), Err(NoSession::Failed(_))));
        assert!(started.elapsed() < LONG);
        assert_eq!(fake.closed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn unusable_and_broken_sessions_are_closed_not_lent() {
        let (fake, pool) = pool(2, LONG);
        drop(pool.get(LONG).unwrap());
        fake.stale.store(true, Ordering::SeqCst);
        assert!(
            pool.try_get().is_none(),
            "the stale idle session is not lent"
        );
        assert_eq!(fake.closed.load(Ordering::SeqCst), 1);
        assert_eq!(pool.open_sessions(), 0);
        fake.stale.store(false, Ordering::SeqCst);
        let mut lease = pool.get(LONG).unwrap();
        lease.broken = true;
        drop(lease);
        assert_eq!(
            fake.closed.load(Ordering::SeqCst),
            2,
            "a broken session is closed on return"
        );
        assert!(!pool.has_idle());
    }

    #[test]
    fn idle_sessions_are_closed_after_the_idle_timeout_the_last_one_too() {
        let (fake, pool) = pool(4, Duration::from_millis(30));
        let a = pool.get(LONG).unwrap();
        let b = pool.get(LONG).unwrap();
        drop((a, b));
        eventually("both idle sessions closed", || {
            fake.closed.load(Ordering::SeqCst) == 2
        });
        assert_eq!(pool.open_sessions(), 0);
    }

    #[test]
    fn while_down_one_session_is_reopened_in_the_background() {
        let (fake, pool) = pool(4, LONG);
        fake.down.store(true, Ordering::SeqCst);
        pool.keep_one(true);
        eventually("a few failed attempts", || {
            pool.last_failure().is_some() && fake.opened.load(Ordering::SeqCst) == 0
        });
        fake.down.store(false, Ordering::SeqCst);
        eventually("one session opened with nobody asking", || pool.has_idle());
        assert_eq!(pool.open_sessions(), 1, "only one");
        assert!(pool.try_get().is_some());
    }

    #[test]
    fn dropping_the_pool_closes_its_idle_sessions() {
        let (fake, pool) = pool(4, LONG);
        drop(pool.get(LONG).unwrap());
        drop(pool);
        eventually("the idle session closed", || {
            fake.closed.load(Ordering::SeqCst) == 1
        });
    }
}
