//! The default sink: one INSERT per event, on the caller's thread, on a pooled session.
//!
//! Every wait is bounded: a log call waits at most `pool_wait` for a session and
//! `statement_timeout` for its INSERT. Once the database has failed (unreachable, lost
//! connection, or a statement that timed out behind a lock), the sink stops paying for
//! it: events go straight to stderr, and one caller at a time probes the database after a
//! backoff, taking a session only if the pool already holds one (r2d2 reconnects in its
//! own threads). A dead server thus costs an event microseconds, and writing resumes by
//! itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use postgres::error::{DbError, SqlState};
use r2d2::event::AcquireEvent;
use r2d2::{HandleError, HandleEvent, Pool, PooledConnection};

use super::session::{Manager, SessionConfig, SessionError};
use crate::error::chain;
use crate::fallback::{self, RateLimit};
use crate::render::Row;
use crate::stats::Counters;

/// How often the same kind of trouble may be reported on stderr.
const NOTICE_INTERVAL: Duration = Duration::from_secs(30);
/// First and longest pause between probes of a failed database.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a probe of a failed database may wait for a lock on the table.
const PROBE_LOCK_WAIT: Duration = Duration::from_millis(50);
/// Longest pause between r2d2's attempts to reconnect to a database that is down.
const RECONNECT_CADENCE: Duration = Duration::from_millis(200);

pub(crate) struct Blocking {
    pool: Pool<Manager>,
    pool_wait: Duration,
    health: Arc<Health>,
    config: Arc<SessionConfig>,
    busy_notice: RateLimit,
    event_notice: RateLimit,
}

/// Pool settings, as the builder gives them.
pub(crate) struct PoolSettings {
    pub size: u32,
    pub wait: Duration,
    pub connect_timeout: Duration,
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

impl Blocking {
    /// Builds the pool and waits, at most `connect_timeout`, for its first session, so
    /// that a reachable database is used from the first event and a broken one is
    /// reported at once.
    pub fn start(
        mut driver: postgres::Config,
        config: SessionConfig,
        pool: PoolSettings,
        counters: &Arc<Counters>,
    ) -> Blocking {
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
        let pool_handle = Pool::builder()
            .max_size(pool.size)
            .min_idle(Some(1))
            // One round trip per event: a broken session shows itself on use instead.
            .test_on_check_out(false)
            // pglog always passes its own wait to `get_timeout`; this only caps r2d2's
            // reconnect backoff (half of it), so a restarted server is found quickly.
            .connection_timeout(RECONNECT_CADENCE * 2)
            .error_handler(Box::new(PoolEvents(Arc::clone(&health))))
            .event_handler(Box::new(PoolEvents(Arc::clone(&health))))
            .build_unchecked(manager);
        let sink = Blocking {
            pool: pool_handle,
            pool_wait: pool.wait,
            health,
            config,
            busy_notice: RateLimit::new(NOTICE_INTERVAL),
            event_notice: RateLimit::new(NOTICE_INTERVAL),
        };
        sink.await_first_session(pool.connect_timeout);
        sink
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

    pub fn database_reachable(&self) -> bool {
        self.health.is_up()
    }

    pub fn write(&self, row: &Row, counters: &Counters) {
        let stored = if on_runtime_thread() {
            // The sync client starts a runtime of its own, which panics inside another
            // one; a plain thread has none. Costs a thread spawn per event: async programs
            // are better served by batch mode.
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("pglog-offload".to_owned())
                    .spawn_scoped(s, || self.try_write(row))
                    .map(|handle| handle.join().unwrap_or(false))
                    .unwrap_or(false)
            })
        } else {
            self.try_write(row)
        };
        if stored {
            Counters::add(&counters.written, 1);
        } else {
            Counters::add(&counters.fallback, 1);
            fallback::event(row);
        }
    }

    /// `true` when the row is committed; otherwise the caller sends it to the fallback.
    fn try_write(&self, row: &Row) -> bool {
        let admit = self.health.admit();
        let mut session = match admit {
            Admit::Skip => return false,
            Admit::Probe => match self.pool.try_get() {
                Some(session) => session,
                None => return false,
            },
            Admit::Write => match self.checkout() {
                Some(session) => session,
                None => return false,
            },
        };
        if session.is_closed() {
            // Closed while idle (server restarted): r2d2 discards it on return.
            self.went_down(&format!("lost the connection to {}", self.config.target));
            return false;
        }
        let result = match admit {
            Admit::Probe => session.probe_insert(row, PROBE_LOCK_WAIT),
            _ => session.insert(row),
        };
        match result {
            Ok(()) => {
                if self.health.came_up() {
                    fallback::notice(&format!(
                        "database reachable again; writing events to {}",
                        self.config.table.quoted()
                    ));
                }
                true
            }
            Err(e) if e.is_closed() || session.is_closed() => {
                self.went_down(&format!(
                    "lost the connection to {}: {}",
                    self.config.target,
                    chain(&e)
                ));
                false
            }
            Err(e)
                if e.code() == Some(&SqlState::QUERY_CANCELED)
                    || e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) =>
            {
                self.went_down(&format!(
                    "writing to {} took longer than the statement timeout ({}); is the table locked?",
                    self.config.table.quoted(),
                    chain(&e)
                ));
                false
            }
            Err(e) => {
                // The database is there but refused this event; the next one may pass.
                self.event_notice.notice(|| {
                    format!(
                        "could not store an event in {}: {}; it was written to stderr",
                        self.config.table.quoted(),
                        chain(&e)
                    )
                });
                false
            }
        }
    }

    fn checkout(&self) -> Option<PooledConnection<Manager>> {
        match self.pool.get_timeout(self.pool_wait) {
            Ok(session) => Some(session),
            Err(e) if self.pool.state().connections == 0 => {
                let why = self.health.last_error().unwrap_or_else(|| e.to_string());
                self.went_down(&why);
                None
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
                None
            }
        }
    }

    fn went_down(&self, why: &str) {
        if self.health.went_down() {
            fallback::notice(&format!(
                "{why}; events go to stderr until {} is writable again (pglog keeps retrying)",
                self.config.table.quoted()
            ));
        }
    }
}

fn on_runtime_thread() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
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
