//! The database side shared by both sinks: a pool of sessions per process, whether the
//! database is usable, and what to tell the operator.
//!
//! Every wait is bounded: a session is waited for at most `pool_wait` (connecting happens
//! on the pool's own thread), each statement at most `statement_timeout` plus
//! [`CANCEL_GRACE`]. So a blocking log call returns within
//! `pool_wait + statement_timeout + 350 ms` (3.35 s with the defaults), whatever the
//! server or the network does. Once the database has failed, callers stop paying for it:
//! [`Database::run`] refuses at once, the pool reconnects in the background, and one
//! caller at a time probes with a short bound ([`PROBE_LIMIT`]). A dead server thus
//! costs an event microseconds, and writing resumes by itself.
//!
//! After `fork()`, a child gets a pool of its own on first use; the parent's sessions
//! are neither used nor closed by the child (see [`crate::fork`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::health::{Admit, Health};
use super::pool::{Check, Connect, NoSession, Pool, PoolSettings, Pooled};
use super::session::{Session, SessionConfig, CANCEL_GRACE};
use super::trouble::{Kind, Trouble};
use crate::fallback::{self, RateLimit, NOTICE_INTERVAL};
use crate::fork::Owner;
use crate::render::Row;
use crate::stats::{Counters, Outcome};
use crate::sync::RwLock;

/// How long a probe of a failed database may take before it is canceled: a probe runs
/// on a caller's thread.
pub(crate) const PROBE_LIMIT: Duration = Duration::from_millis(50);
/// How long a forked child waits for the lock that replaces its parent's pool (only ever
/// contended if a parent thread held it at the instant of the fork).
const FORK_PATIENCE: Duration = Duration::from_millis(50);

/// Why [`Database::run`] did not store anything.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Nothing was tried: the database is known to be down, or no session came in time.
    Unavailable,
    /// The database (or the session) failed. `maybe_done`: the statement was sent and
    /// never answered, so its rows may be stored. `timed_out`: it took longer than its
    /// bound (a batch may fit when smaller).
    Down { maybe_done: bool, timed_out: bool },
    /// The server refused this statement for its content; nothing was stored, and
    /// other rows may pass.
    Rejected(Trouble),
}

/// Opens sessions for the pool; counts failed attempts.
struct Connector {
    config: Arc<SessionConfig>,
    counters: Arc<Counters>,
}

impl Connect for Connector {
    type Session = Session;

    fn connect(&self) -> Result<Session, Trouble> {
        Session::open(&self.config).inspect_err(|_| self.counters.add_retry())
    }
}

impl Pooled for Session {
    fn fresh(&self) -> bool {
        Session::fresh(self)
    }
    fn check(&mut self, budget: Duration) -> Check {
        Session::check(self, budget)
    }
    fn is_broken(&self) -> bool {
        Session::is_broken(self)
    }
    fn close(self) {
        Session::close(self)
    }
}

/// What one process has of the database.
struct Local {
    owner: Owner,
    pool: Pool<Connector>,
    health: Health,
    /// The current outage was announced, so its end is too.
    announced: AtomicBool,
    /// Statements that lost their session one after another.
    lost_in_a_row: AtomicU32,
}

pub(crate) struct Database {
    config: Arc<SessionConfig>,
    pool: PoolSettings,
    pool_wait: Duration,
    counters: Arc<Counters>,
    local: RwLock<Arc<Local>>,
    busy_notice: RateLimit,
    reject_notice: RateLimit,
    lost_notice: RateLimit,
    down_notice: RateLimit,
    /// How long each kind of write took lately, for the probe limit.
    typical: [Typical; 2],
}

/// What a statement writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Work {
    Insert = 0,
    Batch = 1,
}

/// One write attempt, as [`Database::run`] weighs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    pub work: Work,
    /// Rows it writes.
    pub rows: usize,
    /// Made even while the database is marked down (once, as a probe): the batch writer
    /// trying a smaller batch after a timeout.
    pub forced: bool,
}

impl Attempt {
    pub fn insert() -> Attempt {
        Attempt {
            work: Work::Insert,
            rows: 1,
            forced: false,
        }
    }
}

/// A moving average of durations (one eighth of each new one), in microseconds.
#[derive(Debug, Default)]
struct Typical(AtomicU64);

impl Typical {
    fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let old = self.0.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 7 + sample) / 8
        };
        self.0.store(new, Ordering::Relaxed);
    }

    fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

impl Database {
    /// Starts the pool and waits, at most the connect timeout, for its first session, so
    /// that a reachable database is used from the first event and a broken one is
    /// reported at once.
    pub fn start(
        config: SessionConfig,
        pool: PoolSettings,
        pool_wait: Duration,
        counters: &Arc<Counters>,
    ) -> Database {
        let config = Arc::new(config);
        let local = Database::new_local(&config, pool, counters);
        let db = Database {
            config,
            pool,
            pool_wait,
            counters: Arc::clone(counters),
            local: RwLock::new(local),
            busy_notice: RateLimit::new(NOTICE_INTERVAL),
            reject_notice: RateLimit::new(NOTICE_INTERVAL),
            lost_notice: RateLimit::new(NOTICE_INTERVAL),
            down_notice: RateLimit::new(NOTICE_INTERVAL),
            typical: Default::default(),
        };
        if let Some(local) = db.local() {
            let first = local.pool.warm(db.config.endpoint.limit() + CANCEL_GRACE);
            db.checked_out(&local, first).ok();
        }
        db
    }

    fn new_local(
        config: &Arc<SessionConfig>,
        pool: PoolSettings,
        counters: &Arc<Counters>,
    ) -> Arc<Local> {
        let connector = Connector {
            config: Arc::clone(config),
            counters: Arc::clone(counters),
        };
        Arc::new(Local {
            owner: Owner::current(),
            pool: Pool::start(connector, pool),
            health: Health::new(),
            announced: AtomicBool::new(false),
            lost_in_a_row: AtomicU32::new(0),
        })
    }

    /// This process's pool: in a forked child, a new one; the parent's is left alone
    /// (never used, never dropped, so never closed).
    fn local(&self) -> Option<Arc<Local>> {
        {
            let local = self.local.read();
            if local.owner.is_current() {
                return Some(Arc::clone(&local));
            }
        }
        let mut slot = self.local.try_write_for(FORK_PATIENCE)?;
        if !slot.owner.is_current() {
            let fresh = Database::new_local(&self.config, self.pool, &self.counters);
            std::mem::forget(std::mem::replace(&mut *slot, fresh));
        }
        Some(Arc::clone(&slot))
    }

    /// Startup outcome: the reason when the database is not usable now.
    pub fn startup_error(&self) -> Option<String> {
        let local = self.local()?;
        (!local.health.is_up()).then(|| {
            self.describe(
                &local
                    .health
                    .last()
                    .unwrap_or_else(|| Trouble::new(Kind::Unreachable, "unreachable")),
            )
        })
    }

    pub fn reachable(&self) -> bool {
        self.local().is_some_and(|local| local.health.is_up())
    }

    /// How long until a failed database may be probed again (zero when it is up).
    pub fn until_next_probe(&self) -> Duration {
        self.local()
            .map_or(Duration::ZERO, |local| local.health.until_next_probe())
    }

    /// What every session of this database shares.
    pub fn config(&self) -> &Arc<SessionConfig> {
        &self.config
    }

    pub fn table(&self) -> String {
        self.config.table.quoted()
    }

    /// Runs `op` on a session if the database may be used now, and learns from the
    /// outcome. `op` gets the bound for its statement: the statement timeout, or when
    /// this is a probe of a failed database, the [probe limit](Database::probe_limit).
    /// A table that disappeared is created again (when pglog may create it) and `op`
    /// tried once more.
    pub fn run<T>(
        &self,
        attempt: Attempt,
        mut op: impl FnMut(&mut Session, Duration) -> Result<T, Trouble>,
    ) -> Result<T, Failure> {
        let local = self.local().ok_or(Failure::Unavailable)?;
        let probing = match local.health.admit() {
            // The batch writer may insist on a smaller batch after a timeout: it tries
            // once more, as a probe would.
            Admit::Skip if attempt.forced => true,
            Admit::Skip => return Err(Failure::Unavailable),
            Admit::Probe => true,
            Admit::Write => false,
        };
        let mut session = if probing && !attempt.forced {
            // A probe waits for a session only as long as opening one took lately (the
            // pool reopens them in the background while the database is down): a connect
            // that hangs costs it nothing.
            local
                .pool
                .get(local.pool.probe_wait())
                .map_err(|_| Failure::Unavailable)?
        } else if probing {
            // A smaller batch after a timeout: the database answered, only slowly, and
            // the session that timed out is being replaced. Waiting as a write would
            // (pool_wait) keeps a slow connect from sending the batch to stderr.
            local
                .pool
                .get(self.pool_wait)
                .map_err(|_| Failure::Unavailable)?
        } else {
            self.checked_out(&local, local.pool.get(self.pool_wait))?
        };
        // A forced attempt asks whether a smaller batch fits the statement timeout: it gets
        // all of it.
        let limit = if probing && !attempt.forced {
            self.probe_limit(attempt)
        } else {
            self.config.statement_timeout
        };
        let started = Instant::now();
        let mut result = op(&mut session, limit);
        if matches!(&result, Err(t) if t.kind == Kind::NoTable && self.config.create_table) {
            // Dropped meanwhile (a DBA's cleanup, a test reset): a new session creates it
            // again as it opens, and says so.
            self.config
                .schema_ready
                .store(false, std::sync::atomic::Ordering::Release);
            session.discard();
            drop(session);
            if let Ok(mut fresh) = local.pool.get(self.pool_wait) {
                result = op(&mut fresh, limit);
            }
        }
        let took = started.elapsed();
        match result {
            Ok(value) => {
                local.lost_in_a_row.store(0, Ordering::Relaxed);
                let rows = u32::try_from(attempt.rows.max(1)).unwrap_or(u32::MAX);
                self.typical[attempt.work as usize].record(took / rows);
                if local.health.came_up() {
                    local.pool.keep_one(false);
                    if local.announced.swap(false, Ordering::AcqRel) {
                        fallback::notice(&format!(
                            "database reachable again; writing events to {}",
                            self.table()
                        ));
                    }
                }
                Ok(value)
            }
            // One session broke (its backend terminated, a restart under way): the pool
            // replaces it. A second in a row means the database is the trouble.
            Err(trouble)
                if trouble.kind == Kind::Lost
                    && !probing
                    && local.lost_in_a_row.fetch_add(1, Ordering::Relaxed) == 0 =>
            {
                self.lost_notice.notice(|| {
                    format!(
                        "{}; the session is replaced, its statement's events went to stderr",
                        self.describe(&trouble)
                    )
                });
                Err(Failure::Down {
                    maybe_done: trouble.maybe_done,
                    timed_out: false,
                })
            }
            Err(trouble) if trouble.kind.is_outage() => {
                self.went_down(
                    &local,
                    &trouble,
                    if probing { took } else { Duration::ZERO },
                );
                Err(Failure::Down {
                    maybe_done: trouble.maybe_done,
                    timed_out: trouble.kind == Kind::Timeout,
                })
            }
            Err(trouble) => Err(Failure::Rejected(trouble)),
        }
    }

    /// How long a probe may take before it is canceled: 50 ms, or four times what its
    /// rows would take at the pace of writes lately when that is longer (a table with a
    /// slow trigger must not look locked forever), at most the statement timeout.
    pub fn probe_limit(&self, attempt: Attempt) -> Duration {
        let rows = u32::try_from(attempt.rows.max(1)).unwrap_or(u32::MAX);
        let expected = self.typical[attempt.work as usize]
            .get()
            .saturating_mul(rows);
        expected
            .saturating_mul(4)
            .clamp(PROBE_LIMIT, self.config.statement_timeout.max(PROBE_LIMIT))
    }

    fn checked_out<T>(&self, local: &Local, got: Result<T, NoSession>) -> Result<T, Failure> {
        match got {
            Ok(session) => Ok(session),
            Err(NoSession::Failed(trouble)) => {
                self.went_down(local, &trouble, Duration::ZERO);
                Err(Failure::Down {
                    maybe_done: false,
                    timed_out: false,
                })
            }
            Err(NoSession::Connecting) => {
                let trouble = local.pool.last_failure().unwrap_or_else(|| {
                    Trouble::new(
                        Kind::Silent,
                        format!(
                            "no session within {:?}: connecting takes longer than that",
                            self.pool_wait
                        ),
                    )
                });
                self.went_down(local, &trouble, Duration::ZERO);
                Err(Failure::Down {
                    maybe_done: false,
                    timed_out: false,
                })
            }
            Err(NoSession::Busy) => {
                self.busy_notice.notice(|| {
                    format!(
                        "all {} sessions stayed busy for {:?}; events that could not wait went \
                         to stderr (raise the pool size or the pool wait)",
                        self.pool.size, self.pool_wait
                    )
                });
                Err(Failure::Unavailable)
            }
        }
    }

    /// Stores one row with one statement (a short one when probing); reports a row the
    /// database refuses, rate-limited: the next one may pass.
    pub fn insert(&self, row: &Row) -> Outcome {
        let result = self.run(Attempt::insert(), |session, limit| {
            session.insert(row, limit)
        });
        match result {
            Ok(()) => Outcome::Stored,
            Err(Failure::Rejected(trouble)) => {
                self.reject_notice
                    .notice(|| format!("{}; it was written to stderr", self.describe(&trouble)));
                Outcome::NotStored
            }
            Err(Failure::Down {
                maybe_done: true, ..
            }) => Outcome::Uncertain,
            Err(Failure::Unavailable | Failure::Down { .. }) => Outcome::NotStored,
        }
    }

    /// Ends this process's idle sessions cleanly (when the guard is dropped: the program
    /// is about to exit, and a pooler or the server log would otherwise see a dropped
    /// connection). Later events open new ones.
    pub fn close_idle(&self) {
        let Some(local) = self.local() else { return };
        // A session runs its own small runtime, which cannot be driven from inside an
        // async runtime's thread.
        if super::blocking::needs_own_thread() {
            std::thread::scope(|s| {
                let _ = std::thread::Builder::new()
                    .name("pglog-close".to_owned())
                    .spawn_scoped(s, || local.pool.close_idle());
            });
        } else {
            local.pool.close_idle();
        }
    }

    fn describe(&self, trouble: &Trouble) -> String {
        trouble.describe(&self.config.target, &self.table())
    }

    /// Records a failure. `probe_took`: how long the failed probe kept its caller; the
    /// next probe waits at least three times that, so probing costs callers at most a
    /// quarter of an outage.
    fn went_down(&self, local: &Local, trouble: &Trouble, probe_took: Duration) {
        local.pool.keep_one(true);
        // Outages are announced (and their end with them) at most once per interval: a
        // flapping database does not print a notice per flap.
        if local.health.went_down(trouble, probe_took * 3) && self.down_notice.allow() {
            local.announced.store(true, Ordering::Release);
            fallback::notice(&format!(
                "{}; events go to stderr until {} is writable again (pglog keeps retrying)",
                self.describe(trouble),
                self.table()
            ));
        }
    }
}
