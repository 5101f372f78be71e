//! The database side shared by both sinks: the pool of sessions, whether the database
//! is usable, when to try it again, and what to tell the operator.
//!
//! Every wait is bounded: a session is waited for at most `pool_wait`, each statement at
//! most `statement_timeout`. Once the database has failed (unreachable, lost connection,
//! or a statement that timed out behind a lock), callers stop paying for it: [`run`]
//! refuses at once, and one caller at a time probes the database after a backoff, taking a
//! session only if the pool already holds one (r2d2 reconnects in its own threads) and
//! waiting for locks only briefly. A dead server thus costs an event microseconds, and
//! writing resumes by itself.
//!
//! [`run`]: Database::run

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use postgres::error::{DbError, SqlState};
use r2d2::event::AcquireEvent;
use r2d2::{HandleError, HandleEvent, Pool, PooledConnection};

use super::session::{Manager, Session, SessionConfig, SessionError};
use crate::error::chain;
use crate::fallback::{self, RateLimit};
use crate::render::Row;
use crate::stats::Counters;

/// How often the same kind of trouble may be reported on stderr.
pub(crate) const NOTICE_INTERVAL: Duration = Duration::from_secs(30);
/// First and longest pause between probes of a failed database.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a probe of a failed database may wait for a lock on the table.
pub(crate) const PROBE_LOCK_WAIT: Duration = Duration::from_millis(50);
/// Longest pause between r2d2's attempts to reconnect to a database that is down.
const RECONNECT_CADENCE: Duration = Duration::from_millis(200);

/// Pool settings, as the builder gives them.
pub(crate) struct PoolSettings {
    pub size: u32,
    pub wait: Duration,
    pub connect_timeout: Duration,
}

/// Why [`Database::run`] did not store anything.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The database is known to be down, or no session could be had in time.
    Unavailable,
    /// The connection broke or a statement timed out; the database is now marked down.
    Lost,
    /// The database is there but refused this statement (a constraint, a trigger...):
    /// other rows may still pass.
    Rejected(postgres::Error),
}

pub(crate) struct Database {
    pool: Pool<Manager>,
    pool_wait: Duration,
    health: Arc<Health>,
    config: Arc<SessionConfig>,
    busy_notice: RateLimit,
    reject_notice: RateLimit,
}

impl Database {
    /// Builds the pool and waits, at most `connect_timeout`, for its first session, so
    /// that a reachable database is used from the first event and a broken one is
    /// reported at once.
    pub fn start(
        mut driver: postgres::Config,
        config: SessionConfig,
        settings: PoolSettings,
        counters: &Arc<Counters>,
    ) -> Database {
        // The driver's default sends server notices to `log`, that is, back to us.
        let server_notice = Arc::new(RateLimit::new(NOTICE_INTERVAL));
        driver.notice_callback(move |notice: DbError| {
            if notice.severity() == "WARNING" {
                server_notice.notice(|| format!("server warning: {}", notice.message()));
            }
        });
        let config = Arc::new(config);
        let health = Arc::new(Health::new(Arc::clone(counters)));
        let manager = Manager::new(driver, Arc::clone(&config));
        let pool = Pool::builder()
            .max_size(settings.size)
            .min_idle(Some(1))
            // One round trip per event: a broken session shows itself on use instead.
            .test_on_check_out(false)
            // pglog always passes its own wait to `get_timeout`; this only caps r2d2's
            // reconnect backoff (half of it), so a restarted server is found quickly.
            .connection_timeout(RECONNECT_CADENCE * 2)
            .error_handler(Box::new(PoolEvents(Arc::clone(&health))))
            .event_handler(Box::new(PoolEvents(Arc::clone(&health))))
            .build_unchecked(manager);
        let db = Database {
            pool,
            pool_wait: settings.wait,
            health,
            config,
            busy_notice: RateLimit::new(NOTICE_INTERVAL),
            reject_notice: RateLimit::new(NOTICE_INTERVAL),
        };
        db.await_first_session(settings.connect_timeout);
        db
    }

    fn await_first_session(&self, bound: Duration) {
        // A failed attempt is only recorded by r2d2, never returned: poll for either outcome.
        let deadline = Instant::now() + bound + Duration::from_millis(100);
        while Instant::now() < deadline {
            if self.pool.state().idle_connections > 0 {
                return;
            }
            if let Some(why) = self.health.last_error() {
                self.went_down(&why);
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.went_down(&format!(
            "no session with {} within {bound:?}",
            self.config.target
        ));
    }

    /// Startup outcome: the reason when the database is not usable now.
    pub fn startup_error(&self) -> Option<String> {
        (!self.health.is_up()).then(|| {
            self.health
                .last_error()
                .unwrap_or_else(|| "unreachable".to_owned())
        })
    }

    pub fn reachable(&self) -> bool {
        self.health.is_up()
    }

    /// How long until a failed database may be probed again (zero when it is up).
    pub fn until_next_probe(&self) -> Duration {
        self.health.until_next_probe()
    }

    pub fn table(&self) -> String {
        self.config.table.quoted()
    }

    /// Runs `op` on a session if the database may be used now, and learns from the
    /// outcome. `op` is told whether this is a probe of a failed database, in which case
    /// it must not wait for locks longer than [`PROBE_LOCK_WAIT`].
    pub fn run<T>(
        &self,
        op: impl FnOnce(&mut Session, bool) -> Result<T, postgres::Error>,
    ) -> Result<T, Failure> {
        let probing = match self.health.admit() {
            Admit::Skip => return Err(Failure::Unavailable),
            Admit::Probe => true,
            Admit::Write => false,
        };
        let mut session = if probing {
            self.pool.try_get().ok_or(Failure::Unavailable)?
        } else {
            self.checkout()?
        };
        if session.is_closed() {
            // Closed while idle (server restarted): r2d2 discards it on return.
            self.went_down(&format!("lost the connection to {}", self.config.target));
            return Err(Failure::Lost);
        }
        match op(&mut session, probing) {
            Ok(value) => {
                if self.health.came_up() {
                    fallback::notice(&format!(
                        "database reachable again; writing events to {}",
                        self.table()
                    ));
                }
                Ok(value)
            }
            Err(e) if e.is_closed() || session.is_closed() => {
                let why = format!(
                    "lost the connection to {}: {}",
                    self.config.target,
                    chain(&e)
                );
                self.went_down(&why);
                Err(Failure::Lost)
            }
            Err(e)
                if e.code() == Some(&SqlState::QUERY_CANCELED)
                    || e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) =>
            {
                self.went_down(&format!(
                    "writing to {} took longer than the statement timeout ({}); is the table locked?",
                    self.table(),
                    chain(&e)
                ));
                Err(Failure::Lost)
            }
            Err(e) => Err(Failure::Rejected(e)),
        }
    }

    /// Stores one row with one INSERT (when probing, one that waits for locks only
    /// briefly); `false` when the caller must send it to the fallback. A row the
    /// database refuses is reported, rate-limited: the next one may pass.
    pub fn insert(&self, row: &Row) -> bool {
        let result = self.run(|session, probing| {
            if probing {
                session.probe_insert(row, PROBE_LOCK_WAIT)
            } else {
                session.insert(row)
            }
        });
        match result {
            Ok(()) => true,
            Err(Failure::Rejected(e)) => {
                self.reject_notice.notice(|| {
                    format!(
                        "could not store an event in {}: {}; it was written to stderr",
                        self.table(),
                        chain(&e)
                    )
                });
                false
            }
            Err(Failure::Unavailable | Failure::Lost) => false,
        }
    }

    fn checkout(&self) -> Result<PooledConnection<Manager>, Failure> {
        match self.pool.get_timeout(self.pool_wait) {
            Ok(session) => Ok(session),
            Err(e) if self.pool.state().connections == 0 => {
                let why = self.health.last_error().unwrap_or_else(|| e.to_string());
                self.went_down(&why);
                Err(Failure::Lost)
            }
            Err(_) => {
                self.busy_notice.notice(|| {
                    format!(
                        "all {} pooled sessions stayed busy for {:?}; events that could not wait \
                         went to stderr (raise the pool size or the pool wait)",
                        self.pool.max_size(),
                        self.pool_wait
                    )
                });
                Err(Failure::Unavailable)
            }
        }
    }

    fn went_down(&self, why: &str) {
        if self.health.went_down() {
            fallback::notice(&format!(
                "{why}; events go to stderr until {} is writable again (pglog keeps retrying)",
                self.table()
            ));
        }
    }
}

/// Whether a write may use the database now.
enum Admit {
    /// The database works: wait (boundedly) for a session.
    Write,
    /// The database failed and the backoff is over: try once, without waiting.
    Probe,
    /// The database failed recently: straight to stderr.
    Skip,
}

/// Whether the database is usable, when to try it again, and the last reason it failed.
struct Health {
    up: AtomicBool,
    /// While down: no attempt before this many milliseconds after `start`.
    retry_at: AtomicU64,
    backoff_ms: AtomicU64,
    start: Instant,
    last_error: Mutex<Option<String>>,
    counters: Arc<Counters>,
}

impl Health {
    fn new(counters: Arc<Counters>) -> Health {
        Health {
            up: AtomicBool::new(true),
            retry_at: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(BACKOFF_MIN.as_millis() as u64),
            start: Instant::now(),
            last_error: Mutex::new(None),
            counters,
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn admit(&self) -> Admit {
        if self.is_up() {
            return Admit::Write;
        }
        let (now, at) = (self.now_ms(), self.retry_at.load(Ordering::Acquire));
        if now < at {
            return Admit::Skip;
        }
        // One caller wins the probe; the others keep going to stderr.
        let next = now + self.backoff_ms.load(Ordering::Relaxed);
        match self
            .retry_at
            .compare_exchange(at, next, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Skip,
        }
    }

    fn until_next_probe(&self) -> Duration {
        let at = self.retry_at.load(Ordering::Acquire);
        Duration::from_millis(at.saturating_sub(self.now_ms()))
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Records a failure; `true` when this starts an outage (the caller says so once).
    fn went_down(&self) -> bool {
        let first = self.up.swap(false, Ordering::AcqRel);
        let backoff = if first {
            BACKOFF_MIN
        } else {
            let doubled = self.backoff_ms.load(Ordering::Relaxed).saturating_mul(2);
            Duration::from_millis(doubled).min(BACKOFF_MAX)
        };
        self.backoff_ms
            .store(backoff.as_millis() as u64, Ordering::Relaxed);
        self.retry_at.store(
            self.now_ms() + backoff.as_millis() as u64,
            Ordering::Release,
        );
        first
    }

    /// Records a success; `true` when this ends an outage.
    fn came_up(&self) -> bool {
        if self.is_up() || self.up.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.backoff_ms
            .store(BACKOFF_MIN.as_millis() as u64, Ordering::Relaxed);
        *self.last_error.lock() = None;
        true
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// r2d2 reports failed connection attempts here, from its own threads. Routing them to
/// `log` (r2d2's default) would feed the logger its own trouble.
#[derive(Debug)]
struct PoolEvents(Arc<Health>);

impl HandleError<SessionError> for PoolEvents {
    fn handle_error(&self, error: SessionError) {
        Counters::add(&self.0.counters.retries, 1);
        *self.0.last_error.lock() = Some(error.to_string());
    }
}

impl HandleEvent for PoolEvents {
    fn handle_acquire(&self, _: AcquireEvent) {
        // A reason recorded before this success is stale.
        *self.0.last_error.lock() = None;
    }
}
