//! The default sink: one INSERT per event, on the caller's thread, on a pooled session.
//!
//! While the database is known to be down the sink does not wait for the pool at all: it
//! takes a session only if the pool already has one (r2d2 keeps reconnecting in its own
//! threads), so a dead server costs an event microseconds, and writing resumes by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use r2d2::event::AcquireEvent;
use r2d2::{HandleError, HandleEvent, Pool, PooledConnection};

use super::session::{Manager, SessionConfig, SessionError};
use crate::error::chain;
use crate::fallback::{self, RateLimit};
use crate::render::Row;
use crate::stats::Counters;

/// How often the same kind of trouble may be reported on stderr.
const NOTICE_INTERVAL: Duration = Duration::from_secs(30);

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

impl Blocking {
    /// Builds the pool and waits, at most `connect_timeout`, for its first session, so
    /// that a reachable database is used from the first event and a broken one is
    /// reported at once.
    pub fn start(
        driver: postgres::Config,
        config: SessionConfig,
        pool: PoolSettings,
        counters: &Arc<Counters>,
    ) -> Blocking {
        let config = Arc::new(config);
        let health = Arc::new(Health::new(Arc::clone(counters)));
        let manager = Manager::new(driver, Arc::clone(&config));
        let pool_handle = Pool::builder()
            .max_size(pool.size)
            .min_idle(Some(1))
            // One round trip per event: a broken session shows itself on use instead.
            .test_on_check_out(false)
            // Bounds r2d2's reconnect backoff (it retries at up to half of this).
            .connection_timeout(pool.wait.max(Duration::from_millis(400)))
            .error_handler(Box::new(ErrorSink(Arc::clone(&health))))
            .event_handler(Box::new(ErrorSink(Arc::clone(&health))))
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
                self.health.went_down(&why, &self.config.table.quoted());
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let why = format!("no session with {} within {bound:?}", self.config.target);
        self.health.went_down(&why, &self.config.table.quoted());
    }

    /// Startup outcome: `Err` with the reason when the database is not usable now.
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
        if self.try_write(row) {
            Counters::add(&counters.written, 1);
        } else {
            Counters::add(&counters.fallback, 1);
            fallback::event(row);
        }
    }

    /// `true` when the row is committed; otherwise the caller sends it to the fallback.
    fn try_write(&self, row: &Row) -> bool {
        let Some(mut session) = self.checkout() else {
            return false;
        };
        match session.insert(row) {
            Ok(()) => {
                self.health.came_up(&self.config.table.quoted());
                true
            }
            Err(e) if e.is_closed() || session.is_closed() => {
                self.health.went_down(
                    &format!(
                        "lost the connection to {}: {}",
                        self.config.target,
                        chain(&e)
                    ),
                    &self.config.table.quoted(),
                );
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
        // Sessions the server closed while idle are discarded on return; skip them.
        for _ in 0..=self.pool.max_size() {
            let session = if self.health.is_up() {
                match self.pool.get_timeout(self.pool_wait) {
                    Ok(session) => session,
                    Err(e) => {
                        self.wait_failed(&e);
                        return None;
                    }
                }
            } else {
                self.pool.try_get()?
            };
            if !session.is_closed() {
                return Some(session);
            }
        }
        None
    }

    fn wait_failed(&self, e: &r2d2::Error) {
        if self.pool.state().connections == 0 {
            let why = self.health.last_error().unwrap_or_else(|| e.to_string());
            self.health.went_down(&why, &self.config.table.quoted());
        } else {
            self.busy_notice.notice(|| {
                format!(
                    "all {} pooled sessions stayed busy for {:?}; events that could not wait went to stderr \
                     (raise the pool size or the pool wait)",
                    self.pool.max_size(),
                    self.pool_wait
                )
            });
        }
    }
}

/// Whether the database is usable, and the last reason it was not.
struct Health {
    up: AtomicBool,
    last_error: Mutex<Option<String>>,
    counters: Arc<Counters>,
}

impl Health {
    fn new(counters: Arc<Counters>) -> Health {
        Health {
            up: AtomicBool::new(true),
            last_error: Mutex::new(None),
            counters,
        }
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Says once, per outage, that events now go to stderr.
    fn went_down(&self, why: &str, table: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            fallback::notice(&format!(
                "{why}; events go to stderr until {table} is writable again (pglog keeps retrying)"
            ));
        }
    }

    fn came_up(&self, table: &str) {
        if !self.up.load(Ordering::Relaxed) && !self.up.swap(true, Ordering::AcqRel) {
            *self.last_error.lock() = None;
            fallback::notice(&format!(
                "database reachable again; writing events to {table}"
            ));
        }
    }
}

/// r2d2 reports failed connection attempts here, from its own threads. Routing them to
/// `log` (r2d2's default) would feed the logger its own trouble.
#[derive(Debug)]
struct ErrorSink(Arc<Health>);

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl HandleError<SessionError> for ErrorSink {
    fn handle_error(&self, error: SessionError) {
        Counters::add(&self.0.counters.retries, 1);
        *self.0.last_error.lock() = Some(error.to_string());
    }
}

impl HandleEvent for ErrorSink {
    fn handle_acquire(&self, _: AcquireEvent) {
        // A reason recorded before this success is stale.
        *self.0.last_error.lock() = None;
    }
}
