//! Background batch mode: callers render and enqueue; one named writer thread drains the
//! queue and writes batches, each with one statement.
//!
//! The writer blocks for the first event, then takes what is queued, up to the batch size
//! (and [`BATCH_BYTES`]), waiting at most the flush interval for more (natural batching:
//! the slower the database, the larger the batches). A flush request, the stop request
//! and an event at or above the flush level end a batch at once.
//!
//! # Every event accounted for
//!
//! An event is in the queue, in the writer's batch, or settled (counted as written, on
//! stderr, dropped, or uncertain). The batch the writer holds is shared with
//! [`Batch::close`] through a [`Slot`]: when the guard's drop stops waiting for the
//! writer, it takes the batch from the slot and sends it to stderr, the rows whose write
//! was under way counted as uncertain (they may yet be committed), the rest as fallback;
//! the writer, when its write returns, finds the batch taken and counts nothing. The slot's
//! lock makes each row counted exactly once, whoever gets there first.
//!
//! The writer is generic over a [`Store`], so this machinery is unit-tested with a fake;
//! the database implements it for real.

mod slot;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::LevelFilter;

use super::database::{Attempt, Database, Failure, Work};
use super::queue::{Limits, Queue, Refused, Took, Weigh};
use crate::fallback::{self, RateLimit, NOTICE_INTERVAL};
use crate::fork::Owner;
use crate::render::Row;
use crate::stats::{Counters, Outcome};
use crate::sync::{Condvar, Mutex, RwLock};
use slot::Slot;

/// What a log call does when the batch queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Wait for room, in arrival order, for as long as the writer keeps making progress;
    /// when it has taken nothing for this long, the event goes to stderr.
    Block(Duration),
    /// Discard the event at once and count it in [`Stats::dropped`](crate::Stats::dropped).
    Drop,
}

impl Default for Overflow {
    fn default() -> Overflow {
        Overflow::Block(Duration::from_millis(200))
    }
}

/// Batch mode's settings, as the builder gives them.
#[derive(Debug, Clone)]
pub(crate) struct BatchSettings {
    pub capacity: usize,
    /// The queue's bound in bytes (events are weighed by what they hold).
    pub queue_bytes: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub overflow: Overflow,
    /// Events at or above this level end a batch at once.
    pub flush_level: LevelFilter,
    /// The longest `flush` or the guard's drop waits for the writer.
    pub flush_timeout: Duration,
}

/// A batch also ends at about this many bytes of events: with the queue's byte bound it
/// caps memory (queue, batch, and the statement encoding the batch), whatever the events
/// weigh.
pub(crate) const BATCH_BYTES: usize = 8 << 20;

/// How many times a batch known not to be written is tried again before it goes to
/// stderr; the waits between are the database's probe backoff.
const BATCH_RETRIES: u32 = 3;
/// How many times one batch that timed out is tried again in halves, each with the whole
/// statement timeout: a batch up to four times too slow still lands, and a locked table
/// costs the writer at most three statement timeouts before the batch goes to stderr.
const HALVINGS: u32 = 2;

/// Where batches go: the database, or a fake in tests.
pub(crate) trait Store: Send + Sync + 'static {
    /// Writes `rows` with one statement, all or nothing; `forced` even while the database
    /// is marked down (a smaller batch after a timeout).
    fn write_batch(&self, rows: &[Row], forced: bool) -> Result<(), Failure>;
    /// Writes one row, after its batch was refused for its content.
    fn write_one(&self, row: &Row) -> Outcome;
    /// How long to wait before trying a failed database again.
    fn until_retry(&self) -> Duration;
}

impl Store for Database {
    fn write_batch(&self, rows: &[Row], forced: bool) -> Result<(), Failure> {
        let attempt = Attempt {
            work: Work::Batch,
            rows: rows.len(),
            forced,
        };
        self.run(attempt, |session, limit| session.insert_batch(rows, limit))
    }

    fn write_one(&self, row: &Row) -> Outcome {
        self.insert(row)
    }

    fn until_retry(&self) -> Duration {
        self.until_next_probe()
    }
}

// Nearly every message is a row: boxing it to shrink the rare others would cost an
// allocation per event.
#[allow(clippy::large_enum_variant)]
enum Msg {
    /// An event; `true` when it is urgent (at or above the flush level).
    Row(Row, bool),
    /// Set once everything queued before is settled.
    Flush(Arc<Latch>),
    /// Like `Flush`, then the writer exits.
    Stop(Arc<Latch>),
}

impl Weigh for Msg {
    fn weight(&self) -> usize {
        match self {
            Msg::Row(row, _) => row.weight(),
            Msg::Flush(_) | Msg::Stop(_) => 0,
        }
    }

    fn is_control(&self) -> bool {
        !matches!(self, Msg::Row(..))
    }

    fn wakes(&self) -> bool {
        !matches!(self, Msg::Row(_, false))
    }
}

/// A one-shot signal with a bounded wait.
#[derive(Default)]
struct Latch {
    set: Mutex<bool>,
    changed: Condvar,
}

impl Latch {
    fn set(&self) {
        *self.set.lock() = true;
        self.changed.notify_all();
    }

    /// `true` if set before `deadline`.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut set = self.set.lock();
        while !*set {
            let timed_out;
            (set, timed_out) = self.changed.wait_until(set, deadline);
            if timed_out {
                return *set;
            }
        }
        true
    }
}

pub(crate) struct Batch<S: Store = Database> {
    shared: Arc<Shared<S>>,
    /// The queue and writer thread of the process that started pglog: never replaced, so
    /// the hot path reads it without a lock.
    home: Arc<Local>,
    /// A forked child's own queue and writer, made on its first event (the parent's
    /// queue holds the parent's events, which the parent writes).
    child: RwLock<Option<Arc<Local>>>,
}

/// What the senders and every process's writer thread share: where batches go, the
/// settings, the counters and the notices.
struct Shared<S> {
    store: S,
    settings: BatchSettings,
    counters: Arc<Counters>,
    panic_notice: RateLimit,
    full_notice: RateLimit,
}

/// One process's queue, writer thread and the batch it holds.
struct Local {
    owner: Owner,
    queue: Queue<Msg>,
    slot: Slot,
    /// The most rows per statement now (see [`Shared::write_held`]).
    chunk: AtomicUsize,
    closed: AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// How long a forked child waits for the lock that replaces its parent's queue.
const FORK_PATIENCE: Duration = Duration::from_millis(50);

impl<S: Store> Batch<S> {
    /// Starts the writer thread. If the thread cannot be spawned, events go to stderr.
    pub fn start(store: S, settings: BatchSettings, counters: &Arc<Counters>) -> Batch<S> {
        let shared = Arc::new(Shared {
            store,
            settings,
            counters: Arc::clone(counters),
            panic_notice: RateLimit::new(NOTICE_INTERVAL),
            full_notice: RateLimit::new(NOTICE_INTERVAL),
        });
        let home = Local::start(&shared);
        Batch {
            shared,
            home,
            child: RwLock::new(None),
        }
    }

    /// This process's queue, if it has one yet.
    fn existing(&self) -> Option<Arc<Local>> {
        if self.home.owner.is_current() {
            return Some(Arc::clone(&self.home));
        }
        self.child
            .read()
            .as_ref()
            .filter(|local| local.owner.is_current())
            .cloned()
    }

    /// This process's queue: in a forked child, its own, made with its own writer
    /// thread on first use.
    fn local(&self) -> Option<Arc<Local>> {
        if let Some(local) = self.existing() {
            return Some(local);
        }
        let mut child = self.child.try_write_for(FORK_PATIENCE)?;
        if !child.as_ref().is_some_and(|local| local.owner.is_current()) {
            let fresh = Local::start(&self.shared);
            // A grandparent's queue and thread handle must not be dropped here.
            if let Some(stale) = child.replace(fresh) {
                std::mem::forget(stale);
            }
        }
        child.clone()
    }

    /// Events not yet settled: queued, or in the batch the writer holds.
    pub fn queue_depth(&self) -> usize {
        self.existing()
            .map_or(0, |local| local.queue.events() + local.slot.pending())
    }

    /// Queues `row`; never touches the network.
    #[inline]
    pub fn enqueue(&self, row: Row) {
        let shared = &*self.shared;
        if self.home.owner.is_current() {
            self.home.enqueue(shared, row);
            return;
        }
        match self.local() {
            Some(local) => local.enqueue(shared, row),
            None => shared.counters.settle_one(&row, Outcome::NotStored),
        }
    }

    /// Returns once everything queued before the call is committed or on stderr, or
    /// after the flush timeout.
    pub fn flush(&self) {
        let Some(local) = self.existing() else { return };
        if local.closed.load(Ordering::Acquire) {
            return;
        }
        let latch = Arc::new(Latch::default());
        if local.queue.try_push(Msg::Flush(Arc::clone(&latch))).is_ok() {
            latch.wait_until(Instant::now() + self.shared.settings.flush_timeout);
        }
    }

    /// Stops the writer after it has written what is queued, waiting at most the flush
    /// timeout; then whatever is not known to be committed goes to stderr, the writer's
    /// batch included. Later events go to stderr too.
    pub fn close(&self) {
        // A forked child that closes before logging gets a queue only to close it, so
        // that what it logs afterwards goes to stderr as after any close.
        if let Some(local) = self.local() {
            local.close(&self.shared);
        }
    }
}

impl Batch<Database> {
    pub fn database(&self) -> &Database {
        &self.shared.store
    }
}

impl<S: Store> Drop for Batch<S> {
    fn drop(&mut self) {
        self.close();
    }
}

impl Local {
    #[inline]
    fn enqueue<S: Store>(&self, shared: &Shared<S>, row: Row) {
        if self.closed.load(Ordering::Acquire) {
            shared.counters.settle_one(&row, Outcome::NotStored);
            return;
        }
        let urgent = row.level <= shared.settings.flush_level;
        let refused = match shared.settings.overflow {
            Overflow::Block(stall) => self.queue.push_waiting(Msg::Row(row, urgent), stall),
            Overflow::Drop => self.queue.try_push(Msg::Row(row, urgent)),
        };
        match refused {
            Ok(()) => {}
            Err(Refused::Closed(msg)) => shared.take_back(msg),
            Err(Refused::Full(msg)) => match shared.settings.overflow {
                Overflow::Block(stall) => {
                    shared.full_notice.notice(|| {
                        format!(
                            "the batch writer took nothing off its full queue for {stall:?}; \
                             events that could not wait went to stderr"
                        )
                    });
                    shared.take_back(msg);
                }
                Overflow::Drop => {
                    shared.counters.add_dropped();
                    shared.full_notice.notice(|| {
                        "the batch queue is full; dropping events (counted in the guard's stats)"
                            .to_owned()
                    });
                }
            },
        }
    }

    fn start<S: Store>(shared: &Arc<Shared<S>>) -> Arc<Local> {
        let settings = &shared.settings;
        let local = Arc::new(Local {
            owner: Owner::current(),
            queue: Queue::new(Limits {
                events: settings.capacity,
                bytes: settings.queue_bytes,
            }),
            slot: Slot::default(),
            chunk: AtomicUsize::new(settings.batch_size),
            closed: AtomicBool::new(false),
            worker: Mutex::new(None),
        });
        let spawned = {
            let (local, shared) = (Arc::clone(&local), Arc::clone(shared));
            std::thread::Builder::new()
                .name("pglog-writer".to_owned())
                .spawn(move || shared.run(&local))
        };
        match spawned {
            Ok(handle) => *local.worker.lock() = Some(handle),
            Err(e) => {
                fallback::notice(&format!(
                    "cannot start the writer thread ({e}); events go to stderr"
                ));
                local.closed.store(true, Ordering::Release);
                local.queue.close();
            }
        }
        local
    }

    fn close<S: Store>(&self, shared: &Shared<S>) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let timeout = shared.settings.flush_timeout;
        let latch = Arc::new(Latch::default());
        let deadline = Instant::now() + timeout;
        let stopped = self.queue.try_push(Msg::Stop(Arc::clone(&latch))).is_ok()
            && latch.wait_until(deadline);
        // Whatever arrived after the stop, or was still queued when the wait ended.
        let queued = self.queue.close();
        let leftover = queued.iter().filter(|m| matches!(m, Msg::Row(..))).count();
        for msg in queued {
            shared.take_back(msg);
        }
        if stopped {
            if let Some(handle) = self.worker.lock().take() {
                let _ = handle.join();
            }
            return;
        }
        let (uncertain, unwritten) = self.slot.give_up(&shared.counters);
        fallback::notice(&format!(
            "the batch writer did not finish within {timeout:?}; {} events went to stderr \
             ({leftover} queued, {unwritten} of its batch not yet written, {uncertain} being \
             written that may also be in the table)",
            leftover + unwritten + uncertain
        ));
    }
}

impl<S: Store> Shared<S> {
    /// Sends a message the queue will not take to where it belongs.
    fn take_back(&self, msg: Msg) {
        match msg {
            Msg::Row(row, _) => self.counters.settle_one(&row, Outcome::NotStored),
            Msg::Flush(latch) | Msg::Stop(latch) => latch.set(),
        }
    }

    fn run(&self, local: &Local) {
        let settings = &self.settings;
        let urgent = |msg: &Msg| matches!(msg, Msg::Row(_, true));
        loop {
            // Waits for the first message of a batch; then fills the batch for at most the
            // flush interval. Messages go straight from the queue into the slot, where
            // `close` finds them if it gives up meanwhile.
            if local.queue.wait(None) == Took::Closed {
                return;
            }
            let size = local
                .chunk
                .load(Ordering::Relaxed)
                .clamp(1, settings.batch_size);
            let deadline = Instant::now() + settings.flush_interval;
            let (mut items, mut bytes) = (0, 0);
            loop {
                let taken = local.slot.collect(|held| {
                    local.queue.take_now(
                        held,
                        size - items,
                        BATCH_BYTES.saturating_sub(bytes),
                        urgent,
                    )
                });
                let Some(taken) = taken else {
                    return; // given up on by `close`
                };
                (items, bytes) = (items + taken.items, bytes + taken.bytes);
                if taken.stop || items >= size || bytes >= BATCH_BYTES || Instant::now() >= deadline
                {
                    break;
                }
                // Sleeps until the batch can be filled (or a flush, a stop or an urgent
                // event arrives, or the interval ends): one wake-up per batch.
                if local.queue.wait_for(size - items, Some(deadline))
                    != (Took::Items { stop: false })
                {
                    break;
                }
            }
            let Some((rows, latches, stopping)) = local.slot.hold() else {
                return;
            };
            let carry_on = self.write(local, &rows);
            for latch in latches {
                latch.set();
            }
            if let Some(latch) = stopping {
                latch.set();
                return;
            }
            if !carry_on {
                return; // given up on by `close`
            }
        }
    }

    /// Writes the held `rows`; every row ends settled. `false` when `close` gave up on
    /// this writer meanwhile.
    fn write(&self, local: &Local, rows: &[Row]) -> bool {
        let slot = &local.slot;
        if !rows.is_empty() {
            // Nothing may kill the writer: a panic would leave every later event waiting
            // out the overflow bound. What was not settled goes to stderr.
            let outcome = catch_unwind(AssertUnwindSafe(|| self.write_held(local, rows)));
            if outcome.is_err() {
                self.panic_notice.notice(|| {
                    "the batch writer panicked; its batch was written to stderr".to_owned()
                });
                slot.settle_rest(&self.counters);
            }
        }
        slot.release()
    }

    /// Writes the held rows in chunks of at most the local chunk size, which halves when
    /// a chunk takes longer than the statement timeout and grows back as chunks succeed:
    /// a database slower than the event rate gets smaller statements that fit, instead of
    /// ever larger ones that all time out.
    fn write_held(&self, local: &Local, rows: &[Row]) {
        let slot = &local.slot;
        let most = self.settings.batch_size;
        let (mut at, mut attempts, mut halvings, mut forced) = (0, 0, 0, false);
        while at < rows.len() {
            let chunk = local.chunk.load(Ordering::Relaxed).clamp(1, most);
            let n = chunk.min(rows.len() - at);
            if !slot.writing(n) {
                return;
            }
            let result = self.store.write_batch(&rows[at..at + n], forced);
            forced = false;
            match result {
                Ok(()) => {
                    if !slot.settle(n, Outcome::Stored, &self.counters) {
                        return;
                    }
                    at += n;
                    attempts = 0;
                    local
                        .chunk
                        .store((chunk + chunk / 4 + 1).min(most), Ordering::Relaxed);
                }
                // Maybe too big for the statement timeout: try it in halves, even though
                // the timeout marked the database down.
                Err(Failure::Down {
                    maybe_done: false,
                    timed_out: true,
                }) if n > 1 && halvings < HALVINGS => {
                    halvings += 1;
                    forced = true;
                    local.chunk.store(n / 2, Ordering::Relaxed);
                    if !slot.not_writing() {
                        return;
                    }
                }
                // Known not written: worth another try once the database may be back.
                Err(Failure::Down {
                    maybe_done: false, ..
                }) if attempts < BATCH_RETRIES => {
                    attempts += 1;
                    self.counters.add_retry();
                    if !slot.not_writing() {
                        return;
                    }
                    std::thread::sleep(self.store.until_retry());
                }
                // One bad row fails the whole statement: write the rows one by one, so
                // that only the bad ones go to stderr.
                Err(Failure::Rejected(_)) => {
                    if !slot.not_writing() {
                        return;
                    }
                    for row in &rows[at..at + n] {
                        if !slot.writing(1) {
                            return;
                        }
                        let outcome = self.store.write_one(row);
                        if !slot.settle(1, outcome, &self.counters) {
                            return;
                        }
                    }
                    at += n;
                }
                // Sent and never answered: the rows may be in the table. A duplicate on
                // stderr beats a loss; writing them again could store them twice.
                Err(Failure::Down {
                    maybe_done: true, ..
                }) => {
                    if !slot.settle(n, Outcome::Uncertain, &self.counters) {
                        return;
                    }
                    at += n;
                }
                // The database is down: what is left goes to stderr now, so that the
                // queue keeps moving and callers do not wait for it.
                Err(Failure::Unavailable | Failure::Down { .. }) => {
                    slot.settle(rows.len() - at, Outcome::NotStored, &self.counters);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
