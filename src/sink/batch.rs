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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::LevelFilter;

use super::database::{Attempt, Database, Failure, Outcome, Work, NOTICE_INTERVAL};
use super::queue::{Limits, Queue, Refused, Took, Weigh};
use crate::fallback::{self, RateLimit};
use crate::fork::Owner;
use crate::render::Row;
use crate::stats::Counters;
use crate::sync::{Condvar, Mutex, RwLock};

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
    writer: Arc<Writer<S>>,
    /// The queue and writer thread of the process that started pglog: never replaced, so
    /// the hot path reads it without a lock.
    home: Arc<Local>,
    /// A forked child's own queue and writer, made on its first event (the parent's
    /// queue holds the parent's events, which the parent writes).
    child: RwLock<Option<Arc<Local>>>,
}

/// What every process's writer shares.
struct Writer<S> {
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
    /// The most rows per statement now (see [`Writer::write_held`]).
    chunk: AtomicUsize,
    closed: AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// How long a forked child waits for the lock that replaces its parent's queue.
const FORK_PATIENCE: Duration = Duration::from_millis(50);

impl<S: Store> Batch<S> {
    /// Starts the writer thread. If the thread cannot be spawned, events go to stderr.
    pub fn start(store: S, settings: BatchSettings, counters: &Arc<Counters>) -> Batch<S> {
        let writer = Arc::new(Writer {
            store,
            settings,
            counters: Arc::clone(counters),
            panic_notice: RateLimit::new(NOTICE_INTERVAL),
            full_notice: RateLimit::new(NOTICE_INTERVAL),
        });
        let home = Local::start(&writer);
        Batch {
            writer,
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
            let fresh = Local::start(&self.writer);
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
        let writer = &*self.writer;
        if self.home.owner.is_current() {
            self.home.enqueue(writer, row);
            return;
        }
        match self.local() {
            Some(local) => local.enqueue(writer, row),
            None => fallback::divert(&row, &writer.counters),
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
            latch.wait_until(Instant::now() + self.writer.settings.flush_timeout);
        }
    }

    /// Stops the writer after it has written what is queued, waiting at most the flush
    /// timeout; then whatever is not known to be committed goes to stderr, the writer's
    /// batch included. Later events go to stderr too.
    pub fn close(&self) {
        // A forked child that closes before logging gets a queue only to close it, so
        // that what it logs afterwards goes to stderr as after any close.
        if let Some(local) = self.local() {
            local.close(&self.writer);
        }
    }
}

impl Batch<Database> {
    pub fn database(&self) -> &Database {
        &self.writer.store
    }
}

impl<S: Store> Drop for Batch<S> {
    fn drop(&mut self) {
        self.close();
    }
}

impl Local {
    #[inline]
    fn enqueue<S: Store>(&self, writer: &Writer<S>, row: Row) {
        if self.closed.load(Ordering::Acquire) {
            fallback::divert(&row, &writer.counters);
            return;
        }
        let urgent = row.level <= writer.settings.flush_level;
        let refused = match writer.settings.overflow {
            Overflow::Block(stall) => self.queue.push_waiting(Msg::Row(row, urgent), stall),
            Overflow::Drop => self.queue.try_push(Msg::Row(row, urgent)),
        };
        match refused {
            Ok(()) => {}
            Err(Refused::Closed(msg)) => writer.take_back(msg),
            Err(Refused::Full(msg)) => match writer.settings.overflow {
                Overflow::Block(stall) => {
                    writer.full_notice.notice(|| {
                        format!(
                            "the batch writer took nothing off its full queue for {stall:?}; \
                             events that could not wait went to stderr"
                        )
                    });
                    writer.take_back(msg);
                }
                Overflow::Drop => {
                    Counters::add(&writer.counters.dropped, 1);
                    writer.full_notice.notice(|| {
                        "the batch queue is full; dropping events (counted in the guard's stats)"
                            .to_owned()
                    });
                }
            },
        }
    }

    fn start<S: Store>(writer: &Arc<Writer<S>>) -> Arc<Local> {
        let settings = &writer.settings;
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
            let (local, writer) = (Arc::clone(&local), Arc::clone(writer));
            std::thread::Builder::new()
                .name("pglog-writer".to_owned())
                .spawn(move || writer.run(&local))
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

    fn close<S: Store>(&self, writer: &Writer<S>) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let timeout = writer.settings.flush_timeout;
        let latch = Arc::new(Latch::default());
        let deadline = Instant::now() + timeout;
        let stopped = self.queue.try_push(Msg::Stop(Arc::clone(&latch))).is_ok()
            && latch.wait_until(deadline);
        // Whatever arrived after the stop, or was still queued when the wait ended.
        let queued = self.queue.close();
        let leftover = queued.iter().filter(|m| matches!(m, Msg::Row(..))).count();
        for msg in queued {
            writer.take_back(msg);
        }
        if stopped {
            if let Some(handle) = self.worker.lock().take() {
                let _ = handle.join();
            }
            return;
        }
        let (uncertain, unwritten) = self.slot.give_up(&writer.counters);
        fallback::notice(&format!(
            "the batch writer did not finish within {timeout:?}; {} events went to stderr \
             ({leftover} queued, {unwritten} of its batch not yet written, {uncertain} being \
             written that may also be in the table)",
            leftover + unwritten + uncertain
        ));
    }
}

impl<S: Store> Writer<S> {
    /// Sends a message the queue will not take to where it belongs.
    fn take_back(&self, msg: Msg) {
        match msg {
            Msg::Row(row, _) => fallback::divert(&row, &self.counters),
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
                    if !slot.settle(n, How::Written, &self.counters) {
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
                    Counters::add(&self.counters.retries, 1);
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
                        let how = match self.store.write_one(row) {
                            Outcome::Stored => How::Written,
                            Outcome::NotStored => How::Fallback,
                            Outcome::Uncertain => How::Uncertain,
                        };
                        if !slot.settle(1, how, &self.counters) {
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
                    if !slot.settle(n, How::Uncertain, &self.counters) {
                        return;
                    }
                    at += n;
                }
                // The database is down: what is left goes to stderr now, so that the
                // queue keeps moving and callers do not wait for it.
                Err(Failure::Unavailable | Failure::Down { .. }) => {
                    slot.settle(rows.len() - at, How::Fallback, &self.counters);
                    return;
                }
            }
        }
    }
}

/// How a range of rows was settled.
#[derive(Debug, Clone, Copy)]
enum How {
    Written,
    Fallback,
    Uncertain,
}

/// The writer's batch, shared with [`Local::close`]. Rows `[..settled]` are counted;
/// `[settled..writing]` are being written (their fate is open); `[writing..]` are not.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Messages taken off the queue for the next batch.
    collected: Vec<Msg>,
    rows: Option<Arc<Vec<Row>>>,
    settled: usize,
    writing: usize,
    /// `close` stopped waiting: it settled what was unsettled, and the writer stops.
    given_up: bool,
}

impl Slot {
    /// Runs `take` on the messages collected for the next batch, unless `close` gave up.
    fn collect<R>(&self, take: impl FnOnce(&mut Vec<Msg>) -> R) -> Option<R> {
        let mut state = self.state.lock();
        if state.given_up {
            return None;
        }
        Some(take(&mut state.collected))
    }

    /// Makes the collected rows the batch being written; returns them with the flush and
    /// stop requests collected with them. `None` when `close` gave up.
    #[allow(clippy::type_complexity)]
    fn hold(&self) -> Option<(Arc<Vec<Row>>, Vec<Arc<Latch>>, Option<Arc<Latch>>)> {
        let mut state = self.state.lock();
        if state.given_up {
            return None;
        }
        let mut rows = Vec::with_capacity(state.collected.len());
        let (mut latches, mut stopping) = (Vec::new(), None);
        for msg in state.collected.drain(..) {
            match msg {
                Msg::Row(row, _) => rows.push(row),
                Msg::Flush(latch) => latches.push(latch),
                Msg::Stop(latch) => stopping = Some(latch),
            }
        }
        let rows = Arc::new(rows);
        state.rows = Some(Arc::clone(&rows));
        state.settled = 0;
        state.writing = 0;
        Some((rows, latches, stopping))
    }

    /// The next `n` rows are about to be sent. `false`: given up, stop.
    fn writing(&self, n: usize) -> bool {
        let mut state = self.state.lock();
        state.writing = state.settled + n;
        !state.given_up
    }

    /// Nothing is being sent (between attempts). `false`: given up, stop.
    fn not_writing(&self) -> bool {
        let mut state = self.state.lock();
        state.writing = state.settled;
        !state.given_up
    }

    /// Counts the next `n` rows as `how`, unless `close` settled them already.
    fn settle(&self, n: usize, how: How, counters: &Counters) -> bool {
        let (rows, from) = {
            let mut state = self.state.lock();
            if state.given_up {
                return false;
            }
            let from = state.settled;
            state.settled += n;
            state.writing = state.settled;
            (state.rows.clone(), from)
        };
        if let Some(rows) = rows {
            let rows = &rows[from..from + n];
            match how {
                How::Written => Counters::add(&counters.written, n as u64),
                How::Fallback => rows.iter().for_each(|r| fallback::divert(r, counters)),
                How::Uncertain => rows
                    .iter()
                    .for_each(|r| fallback::divert_uncertain(r, counters)),
            }
        }
        true
    }

    /// After a panic: what was being sent is uncertain, the rest not written.
    fn settle_rest(&self, counters: &Counters) {
        self.unsettled(counters, false);
    }

    /// `close` stops waiting: settles what is unsettled (see [`Slot::settle_rest`]) and
    /// tells the writer to stop. Returns (uncertain, not written).
    fn give_up(&self, counters: &Counters) -> (usize, usize) {
        self.unsettled(counters, true)
    }

    fn unsettled(&self, counters: &Counters, give_up: bool) -> (usize, usize) {
        let (collected, rows, settled, writing) = {
            let mut state = self.state.lock();
            state.given_up |= give_up;
            // What was collected is only `close`'s to settle: the writer keeps it otherwise.
            let collected = if give_up {
                std::mem::take(&mut state.collected)
            } else {
                Vec::new()
            };
            let taken = (
                state.rows.clone(),
                state.settled,
                state.writing.max(state.settled),
            );
            if let Some(len) = state.rows.as_ref().map(|rows| rows.len()) {
                state.settled = len;
                state.writing = len;
            }
            (collected, taken.0, taken.1, taken.2)
        };
        let mut unwritten = 0;
        for msg in collected {
            match msg {
                Msg::Row(row, _) => {
                    fallback::divert(&row, counters);
                    unwritten += 1;
                }
                Msg::Flush(latch) | Msg::Stop(latch) => latch.set(),
            }
        }
        let Some(rows) = rows else {
            return (0, unwritten);
        };
        rows[settled..writing]
            .iter()
            .for_each(|r| fallback::divert_uncertain(r, counters));
        rows[writing..]
            .iter()
            .for_each(|r| fallback::divert(r, counters));
        (writing - settled, unwritten + rows.len() - writing)
    }

    /// Rows held and not yet settled.
    fn pending(&self) -> usize {
        let state = self.state.lock();
        state
            .rows
            .as_ref()
            .map_or(0, |rows| rows.len() - state.settled)
    }

    /// The batch is done; `false` if `close` gave up meanwhile.
    fn release(&self) -> bool {
        let mut state = self.state.lock();
        state.rows = None;
        !state.given_up
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::fallback::capture;
    use crate::sink::trouble::{Kind, Trouble};

    /// What the fake store answers to a batch.
    enum Answer {
        Ok,
        Fail(Failure),
        Panic,
        /// Waits until the latch is set (a frozen server), then succeeds.
        Hang(Arc<Latch>),
    }

    /// A store that answers as scripted (`Ok` when the script is empty) and records the
    /// batches it is given.
    #[derive(Default)]
    struct Fake {
        batches: Mutex<VecDeque<Answer>>,
        ones: Mutex<VecDeque<Outcome>>,
        seen: Mutex<Vec<usize>>,
        returned: AtomicUsize,
    }

    impl Store for Arc<Fake> {
        fn write_batch(&self, rows: &[Row], _forced: bool) -> Result<(), Failure> {
            self.seen.lock().push(rows.len());
            let answer = self.batches.lock().pop_front().unwrap_or(Answer::Ok);
            let result = match answer {
                Answer::Ok => Ok(()),
                Answer::Fail(failure) => Err(failure),
                Answer::Panic => panic!("the fake store panics"),
                Answer::Hang(latch) => {
                    latch.wait_until(Instant::now() + Duration::from_secs(30));
                    Ok(())
                }
            };
            self.returned.fetch_add(1, Ordering::SeqCst);
            result
        }

        fn write_one(&self, _: &Row) -> Outcome {
            self.ones.lock().pop_front().unwrap_or(Outcome::Stored)
        }

        fn until_retry(&self) -> Duration {
            Duration::from_millis(1)
        }
    }

    fn settings() -> BatchSettings {
        BatchSettings {
            capacity: 10_000,
            queue_bytes: 64 << 20,
            batch_size: 1000,
            flush_interval: Duration::from_secs(10),
            overflow: Overflow::Block(Duration::from_secs(10)),
            flush_level: LevelFilter::Error,
            flush_timeout: Duration::from_secs(10),
        }
    }

    fn start(
        settings: BatchSettings,
        answers: Vec<Answer>,
    ) -> (Arc<Fake>, Batch<Arc<Fake>>, Arc<Counters>) {
        let fake = Arc::new(Fake::default());
        fake.batches.lock().extend(answers);
        let counters = Arc::new(Counters::default());
        let batch = Batch::start(Arc::clone(&fake), settings, &counters);
        (fake, batch, counters)
    }

    /// A row whose message is `text` (unique per test, to find its stderr lines).
    fn row(text: &str, level: log::Level) -> Row {
        crate::render::render(
            &log::Record::builder()
                .args(format_args!("{text}"))
                .level(level)
                .build(),
            chrono::Utc::now(),
        )
    }

    fn push(batch: &Batch<Arc<Fake>>, text: &str, n: usize) {
        for _ in 0..n {
            batch.enqueue(row(text, log::Level::Info));
        }
    }

    /// (written, fallback, dropped, uncertain)
    fn counts(counters: &Counters) -> (u64, u64, u64, u64) {
        let s = counters.snapshot(0, true);
        (s.written, s.fallback, s.dropped, s.uncertain)
    }

    fn eventually(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn batches_end_at_their_size_and_at_a_flush() {
        let (fake, batch, counters) = start(
            BatchSettings {
                batch_size: 3,
                ..settings()
            },
            vec![],
        );
        push(&batch, "sizes", 7);
        batch.flush();
        assert_eq!(*fake.seen.lock(), [3, 3, 1]);
        assert_eq!(counts(&counters), (7, 0, 0, 0));
    }

    #[test]
    fn an_urgent_event_ends_its_batch_at_once() {
        let (fake, batch, counters) = start(settings(), vec![]);
        batch.enqueue(row("urgent", log::Level::Info));
        batch.enqueue(row("urgent", log::Level::Error));
        // The flush interval is 10 s: only the error level ends this batch now.
        eventually("the batch written", || {
            counters.snapshot(0, true).written == 2
        });
        assert_eq!(*fake.seen.lock(), [2]);
    }

    #[test]
    fn close_writes_what_is_queued_then_stops_and_refuses_later_events() {
        let (fake, batch, counters) = start(
            BatchSettings {
                batch_size: 10,
                ..settings()
            },
            vec![],
        );
        push(&batch, "close", 25);
        batch.close();
        assert_eq!(counts(&counters), (25, 0, 0, 0));
        assert_eq!(fake.seen.lock().iter().sum::<usize>(), 25);
        push(&batch, "after close", 2);
        assert_eq!(
            counts(&counters),
            (25, 2, 0, 0),
            "later events go to stderr"
        );
    }

    #[test]
    fn the_batch_being_written_goes_to_stderr_when_close_gives_up() {
        let release = Arc::new(Latch::default());
        let settings = BatchSettings {
            batch_size: 5,
            flush_timeout: Duration::from_millis(50),
            ..settings()
        };
        let (fake, batch, counters) = start(settings, vec![Answer::Hang(Arc::clone(&release))]);
        push(&batch, "in flight", 5);
        eventually("the writer is stuck in its write", || {
            fake.seen.lock().len() == 1
        });
        push(&batch, "in flight", 3);
        batch.close();
        // 5 being written (maybe committed later), 3 never taken.
        assert_eq!(counts(&counters), (0, 3, 0, 5));
        let unknown = capture::lines_with("in flight")
            .into_iter()
            .filter(|l| l.contains("\"pglog_outcome\":\"unknown\""))
            .count();
        assert_eq!(unknown, 5);
        assert_eq!(capture::lines_with("in flight").len(), 8);
        // The write then returns: it is not counted a second time.
        release.set();
        eventually("the write returned", || {
            fake.returned.load(Ordering::SeqCst) == 1
        });
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(counts(&counters), (0, 3, 0, 5));
    }

    #[test]
    fn a_flush_timeout_of_a_nanosecond_loses_nothing() {
        let settings = BatchSettings {
            batch_size: 7,
            flush_timeout: Duration::from_nanos(1),
            ..settings()
        };
        let (fake, batch, counters) = start(settings, vec![]);
        push(&batch, "nanosecond", 100);
        batch.close();
        let settled = |c: &Counters| {
            let (w, f, d, u) = counts(c);
            w + f + d + u
        };
        // Every event is settled when close returns, and never twice, whatever the
        // writer was doing.
        assert_eq!(settled(&counters), 100, "{:?}", counts(&counters));
        let returns = fake.returned.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            fake.returned.load(Ordering::SeqCst),
            returns,
            "the writer stopped"
        );
        assert_eq!(settled(&counters), 100);
    }

    #[test]
    fn rows_collected_for_the_next_batch_are_settled_when_close_gives_up() {
        let settings = BatchSettings {
            batch_size: 10,
            flush_timeout: Duration::from_nanos(1),
            ..settings()
        };
        let (_fake, batch, counters) = start(settings, vec![]);
        push(&batch, "collected", 3);
        // The writer takes them off the queue and waits (10 s) for the batch to fill.
        let local = batch.existing().expect("the writer runs");
        eventually("the rows collected", || local.queue.len() == 0);
        batch.close();
        let (w, f, d, u) = counts(&counters);
        assert_eq!(w + f + d + u, 3, "{:?}", (w, f, d, u));
    }

    #[test]
    fn a_refused_batch_is_written_row_by_row() {
        let refused = Failure::Rejected(Trouble::new(Kind::Rejected, "check constraint"));
        let (fake, batch, counters) = start(settings(), vec![Answer::Fail(refused)]);
        fake.ones.lock().extend([
            Outcome::Stored,
            Outcome::NotStored,
            Outcome::Uncertain,
            Outcome::Stored,
        ]);
        push(&batch, "row by row", 4);
        batch.flush();
        assert_eq!(counts(&counters), (2, 1, 0, 1));
    }

    #[test]
    fn an_unwritten_batch_is_retried_and_an_unanswered_one_is_not() {
        let down = || {
            Answer::Fail(Failure::Down {
                maybe_done: false,
                timed_out: false,
            })
        };
        let (fake, batch, counters) = start(settings(), vec![down(), down(), Answer::Ok]);
        push(&batch, "retried", 4);
        batch.flush();
        assert_eq!(counts(&counters), (4, 0, 0, 0), "written on the third try");
        assert_eq!(counters.snapshot(0, true).retries, 2);

        let (_, batch, counters) = start(settings(), vec![down(), down(), down(), down()]);
        push(&batch, "given up", 4);
        batch.flush();
        assert_eq!(
            counts(&counters),
            (0, 4, 0, 0),
            "to stderr after the retries"
        );

        let unanswered = Answer::Fail(Failure::Down {
            maybe_done: true,
            timed_out: true,
        });
        let (fake2, batch, counters) = start(settings(), vec![unanswered]);
        push(&batch, "unanswered", 4);
        batch.flush();
        assert_eq!(
            counts(&counters),
            (0, 0, 0, 4),
            "maybe stored: not written again"
        );
        assert_eq!(fake2.seen.lock().len(), 1);
        drop(fake);
    }

    #[test]
    fn a_batch_too_big_for_the_timeout_is_split_and_the_size_grows_back() {
        let too_big = || {
            Answer::Fail(Failure::Down {
                maybe_done: false,
                timed_out: true,
            })
        };
        let settings = BatchSettings {
            batch_size: 8,
            ..settings()
        };
        let (fake, batch, counters) = start(settings, vec![too_big(), too_big()]);
        push(&batch, "split", 8);
        batch.flush();
        assert_eq!(counts(&counters), (8, 0, 0, 0));
        // 8 and 4 time out; then 2 fits, and the size grows back: 3, then the last 3.
        assert_eq!(*fake.seen.lock(), [8, 4, 2, 3, 3]);
    }

    #[test]
    fn a_panicking_store_costs_its_batch_not_the_writer() {
        let (_, batch, counters) = start(settings(), vec![Answer::Panic]);
        push(&batch, "panic", 3);
        batch.flush();
        assert_eq!(
            counts(&counters),
            (0, 0, 0, 3),
            "its batch may have been sent"
        );
        push(&batch, "after the panic", 2);
        batch.flush();
        assert_eq!(counts(&counters), (2, 0, 0, 3), "the writer goes on");
    }

    #[test]
    fn the_drop_policy_counts_what_it_drops() {
        let release = Arc::new(Latch::default());
        let settings = BatchSettings {
            capacity: 3,
            batch_size: 1,
            overflow: Overflow::Drop,
            ..settings()
        };
        let (fake, batch, counters) = start(settings, vec![Answer::Hang(Arc::clone(&release))]);
        push(&batch, "dropped", 1);
        eventually("the writer is stuck", || fake.seen.lock().len() == 1);
        push(&batch, "dropped", 5);
        assert_eq!(counts(&counters).2, 2, "3 queued, 2 dropped");
        release.set();
        batch.flush();
        assert_eq!(counts(&counters), (4, 0, 2, 0));
    }

    #[test]
    fn senders_wait_their_turn_while_the_writer_progresses() {
        // A small queue and a writer slower than four senders: nobody is turned away,
        // because the writer keeps making progress.
        let settings = BatchSettings {
            capacity: 8,
            batch_size: 4,
            flush_interval: Duration::from_millis(1),
            overflow: Overflow::Block(Duration::from_millis(500)),
            ..settings()
        };
        let (_, batch, counters) = start(settings, vec![]);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| push(&batch, "fair", 500));
            }
        });
        batch.flush();
        assert_eq!(counts(&counters), (2000, 0, 0, 0));
    }

    #[test]
    fn every_event_is_counted_once_whatever_happens() {
        // A seeded mix of outcomes, batch sizes and give-ups: after close, and after the
        // writer has finished, written + fallback + dropped + uncertain = pushed.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..20 {
            let answers: Vec<Answer> = (0..next(6))
                .map(|_| match next(5) {
                    0 => Answer::Ok,
                    1 => Answer::Fail(Failure::Rejected(Trouble::new(Kind::Rejected, "x"))),
                    2 => Answer::Fail(Failure::Down {
                        maybe_done: next(2) == 0,
                        timed_out: next(2) == 0,
                    }),
                    3 => Answer::Fail(Failure::Unavailable),
                    _ => Answer::Panic,
                })
                .collect();
            let settings = BatchSettings {
                capacity: 1 + next(50) as usize,
                batch_size: 1 + next(20) as usize,
                flush_interval: Duration::from_millis(next(3)),
                flush_timeout: Duration::from_millis(next(20)),
                overflow: if next(2) == 0 {
                    Overflow::Drop
                } else {
                    Overflow::Block(Duration::from_millis(next(5)))
                },
                ..settings()
            };
            let (fake, batch, counters) = start(settings, answers);
            fake.ones.lock().extend(
                (0..100).map(|i| [Outcome::Stored, Outcome::NotStored, Outcome::Uncertain][i % 3]),
            );
            let pushed = 40 + next(200);
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| push(&batch, "invariant", pushed as usize / 2));
                }
            });
            batch.close();
            let total = |c: &Counters| {
                let (w, f, d, u) = counts(c);
                w + f + d + u
            };
            assert_eq!(
                total(&counters),
                pushed / 2 * 2,
                "round {round}: {:?}",
                counts(&counters)
            );
            std::thread::sleep(Duration::from_millis(5));
            assert_eq!(total(&counters), pushed / 2 * 2, "round {round}, later");
        }
    }
}
