//! Background batch mode: callers render and enqueue; one named writer thread drains the
//! queue and writes batches with binary COPY.
//!
//! The worker blocks for the first event, then takes what is queued, up to the batch
//! size, waiting at most the flush interval for more (natural batching: the slower the
//! database, the larger the batches). A flush request, the stop request and an event at
//! or above the flush level end a batch at once. Memory stays bounded by the queue
//! capacity whatever the database does: while it is down, batches go to stderr instead
//! of piling up.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};
use log::LevelFilter;
use parking_lot::{Condvar, Mutex};

use parking_lot::RwLock;

use super::database::{Database, Failure, Outcome, NOTICE_INTERVAL};
use crate::fallback::{self, RateLimit};
use crate::fork::Owner;
use crate::render::Row;
use crate::stats::Counters;

/// What a log call does when the batch queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Wait at most this long for room; then the event goes to stderr.
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
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub overflow: Overflow,
    /// Events at or above this level end a batch at once.
    pub flush_level: LevelFilter,
    /// The longest `flush` or the guard's drop waits for the writer.
    pub flush_timeout: Duration,
}

/// How many times a batch that lost its connection is tried again before it goes to
/// stderr; the waits between are the database's probe backoff.
const BATCH_RETRIES: u32 = 3;

enum Msg {
    Row(Row),
    /// Answer once everything queued before is committed or on stderr.
    Flush(Sender<()>),
    /// Like `Flush`, then the writer exits.
    Stop(Sender<()>),
}

pub(crate) struct Batch {
    writer: Arc<Writer>,
    /// This process's queue and writer thread; a forked child makes its own (the
    /// parent's queue holds the parent's events, which the parent writes).
    local: RwLock<Arc<Queue>>,
}

/// What every process's writer shares.
struct Writer {
    db: Database,
    panic_notice: RateLimit,
    full_notice: RateLimit,
    counters: Arc<Counters>,
    settings: BatchSettings,
}

/// One process's queue and writer thread.
struct Queue {
    owner: Owner,
    tx: Sender<Msg>,
    /// Kept to take back what the writer leaves behind when it stops or is too slow.
    rx: Receiver<Msg>,
    closed: AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Senders waiting for room sleep on `room_freed`; the writer signals it whenever it
    /// has taken messages off the queue.
    room: Mutex<()>,
    room_freed: Condvar,
}

/// How long a forked child waits for the lock that replaces its parent's queue.
const FORK_PATIENCE: Duration = Duration::from_millis(50);

impl Batch {
    /// Starts the writer thread. If the thread cannot be spawned, events go to stderr.
    pub fn start(db: Database, settings: BatchSettings, counters: &Arc<Counters>) -> Batch {
        let writer = Arc::new(Writer {
            db,
            panic_notice: RateLimit::new(NOTICE_INTERVAL),
            full_notice: RateLimit::new(NOTICE_INTERVAL),
            counters: Arc::clone(counters),
            settings,
        });
        let queue = Queue::start(&writer);
        Batch {
            writer,
            local: RwLock::new(queue),
        }
    }

    pub fn database(&self) -> &Database {
        &self.writer.db
    }

    /// This process's queue: in a forked child, a new one with its own writer thread.
    fn queue(&self) -> Option<Arc<Queue>> {
        {
            let queue = self.local.read();
            if queue.owner.is_current() {
                return Some(Arc::clone(&queue));
            }
        }
        let mut slot = self.local.try_write_for(FORK_PATIENCE)?;
        if !slot.owner.is_current() {
            let fresh = Queue::start(&self.writer);
            // The parent's queue, channel and thread handle must not be dropped here.
            std::mem::forget(std::mem::replace(&mut *slot, fresh));
        }
        Some(Arc::clone(&slot))
    }

    pub fn queue_depth(&self) -> usize {
        self.queue().map_or(0, |queue| queue.tx.len())
    }

    /// Queues `row`; never touches the network.
    pub fn enqueue(&self, row: Row) {
        let writer = &*self.writer;
        let Some(queue) = self.queue() else {
            fallback::divert(&row, &writer.counters);
            return;
        };
        queue.enqueue(writer, row);
    }

    /// Returns once everything queued before the call is committed or on stderr, or
    /// after the flush timeout.
    pub fn flush(&self) {
        if let Some(queue) = self.queue() {
            queue.flush(&self.writer);
        }
    }

    /// Stops the writer after it has written what is queued, waiting at most the flush
    /// timeout; whatever is left then goes to stderr. Later events go to stderr too.
    pub fn close(&self) {
        if let Some(queue) = self.queue() {
            queue.close(&self.writer);
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.close();
    }
}

impl Queue {
    fn start(writer: &Arc<Writer>) -> Arc<Queue> {
        let (tx, rx) = bounded(writer.settings.capacity);
        let queue = Arc::new(Queue {
            owner: Owner::current(),
            tx,
            rx,
            closed: AtomicBool::new(false),
            worker: Mutex::new(None),
            room: Mutex::new(()),
            room_freed: Condvar::new(),
        });
        let spawned = {
            let (queue, writer) = (Arc::clone(&queue), Arc::clone(writer));
            std::thread::Builder::new()
                .name("pglog-writer".to_owned())
                .spawn(move || writer.run(&queue))
        };
        match spawned {
            Ok(handle) => *queue.worker.lock() = Some(handle),
            Err(e) => {
                fallback::notice(&format!(
                    "cannot start the writer thread ({e}); events go to stderr"
                ));
                queue.closed.store(true, Ordering::Release);
            }
        }
        queue
    }

    fn enqueue(&self, writer: &Writer, row: Row) {
        let counters = &*writer.counters;
        if self.closed.load(Ordering::Acquire) {
            fallback::divert(&row, counters);
            return;
        }
        match writer.settings.overflow {
            Overflow::Block(wait) => match self.send_within(Msg::Row(row), wait) {
                Ok(()) => {}
                Err(msg) => {
                    writer.full_notice.notice(|| {
                        format!("the batch queue stayed full for {wait:?}; events that could not wait went to stderr")
                    });
                    self.take_back(writer, msg);
                }
            },
            Overflow::Drop => match self.tx.try_send(Msg::Row(row)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    Counters::add(&counters.dropped, 1);
                    writer.full_notice
                        .notice(|| "the batch queue is full; dropping events (counted in the guard's stats)".to_owned());
                }
                Err(TrySendError::Disconnected(msg)) => self.take_back(writer, msg),
            },
        }
        // Closed while we were sending: the writer may be gone, so nothing may stay queued.
        if self.closed.load(Ordering::Acquire) {
            self.drain(writer);
        }
    }

    /// Sends without blocking when there is room (the common case); otherwise waits for
    /// the writer to take a batch, at most `wait`.
    ///
    /// crossbeam's own blocking send would wake a waiting sender for every message the
    /// writer takes: on two cores that ping-pong costs a context switch per event. Here
    /// the writer wakes waiting senders once per batch it takes.
    #[allow(
        clippy::result_large_err,
        reason = "the message comes back only when the queue is full; boxing it would cost every event an allocation"
    )]
    fn send_within(&self, msg: Msg, wait: Duration) -> Result<(), Msg> {
        let mut msg = match self.tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => msg,
        };
        let deadline = Instant::now() + wait;
        // Held from the failed attempt to the wait, so the writer's wake-up cannot fall
        // between them.
        let mut room = self.room.lock();
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(m)) => msg = m,
                Err(TrySendError::Disconnected(m)) => return Err(m),
            }
            if self.room_freed.wait_until(&mut room, deadline).timed_out() {
                return self.tx.try_send(msg).map_err(TrySendError::into_inner);
            }
        }
    }

    fn flush(&self, writer: &Writer) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let (ack, done) = bounded(1);
        let deadline = Instant::now() + writer.settings.flush_timeout;
        if self.tx.send_deadline(Msg::Flush(ack), deadline).is_ok() {
            let _ = done.recv_deadline(deadline);
        }
    }

    fn close(&self, writer: &Writer) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let flush_timeout = writer.settings.flush_timeout;
        let (ack, done) = bounded(1);
        let deadline = Instant::now() + flush_timeout;
        let stopped = self.tx.send_deadline(Msg::Stop(ack), deadline).is_ok()
            && done.recv_deadline(deadline).is_ok();
        self.drain(writer);
        if stopped {
            if let Some(handle) = self.worker.lock().take() {
                let _ = handle.join();
            }
        } else {
            fallback::notice(&format!(
                "the writer did not finish within {flush_timeout:?}; what was still queued went to stderr"
            ));
        }
    }

    fn drain(&self, writer: &Writer) {
        while let Ok(msg) = self.rx.try_recv() {
            self.take_back(writer, msg);
        }
    }

    fn take_back(&self, writer: &Writer, msg: Msg) {
        match msg {
            Msg::Row(row) => fallback::divert(&row, &writer.counters),
            Msg::Flush(ack) | Msg::Stop(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

impl Writer {
    fn run(&self, queue: &Queue) {
        let rx = &queue.rx;
        let size = self.settings.batch_size;
        let mut batch = Vec::with_capacity(size);
        let mut acks = Vec::new();
        // Blocks for the first message of each batch; ends when every sender is gone.
        while let Ok(first) = rx.recv() {
            let deadline = Instant::now() + self.settings.flush_interval;
            let mut stop = None;
            let mut urgent = false;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Row(row) => {
                        urgent |= row.level <= self.settings.flush_level;
                        batch.push(row);
                    }
                    Msg::Flush(ack) => acks.push(ack),
                    Msg::Stop(ack) => stop = Some(ack),
                }
                if batch.len() >= size || !acks.is_empty() || stop.is_some() {
                    break;
                }
                next = match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Empty) if !urgent => rx.recv_deadline(deadline).ok(),
                    Err(_) => None,
                };
            }
            // Senders may refill the queue while this batch is written.
            {
                let _room = queue.room.lock();
                queue.room_freed.notify_all();
            }
            // Nothing may kill the writer: a panic would leave every later event waiting
            // out the overflow bound. The batch goes to stderr: a COPY that panicked was
            // rolled back with its transaction (in the row-by-row retry a row could end
            // up in both places, which beats losing it).
            if catch_unwind(AssertUnwindSafe(|| self.write(&mut batch))).is_err() {
                self.panic_notice.notice(|| {
                    "the batch writer panicked; its batch was written to stderr".to_owned()
                });
                for row in batch.drain(..) {
                    fallback::divert(&row, &self.counters);
                }
            }
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            if let Some(ack) = stop {
                let _ = ack.send(());
                return;
            }
        }
    }

    /// Writes and empties `batch`: every row ends in the table or on stderr.
    fn write(&self, batch: &mut Vec<Row>) {
        if batch.is_empty() {
            return;
        }
        let limit = self.db.statement_timeout();
        let mut attempts = 0;
        let outcome = loop {
            // A probe from here may take the full statement timeout: it holds up no caller.
            let result = self.db.run(|session, _| session.insert_batch(batch, limit));
            match result {
                // Known not written: worth another try once the database may be back.
                Err(Failure::Down { maybe_done: false }) if attempts < BATCH_RETRIES => {
                    attempts += 1;
                    Counters::add(&self.counters.retries, 1);
                    std::thread::sleep(self.db.until_next_probe());
                }
                other => break other,
            }
        };
        match outcome {
            Ok(()) => Counters::add(&self.counters.written, batch.len() as u64),
            // One bad row fails the whole statement: write the rows one by one, so that
            // only the bad ones go to stderr.
            Err(Failure::Rejected(_)) => {
                for row in batch.iter() {
                    self.write_one(row);
                }
            }
            // Sent and never answered: the rows may be in the table. A duplicate on
            // stderr beats a loss; writing them again could store them twice.
            Err(Failure::Down { maybe_done: true }) => {
                for row in batch.iter() {
                    fallback::divert_uncertain(row, &self.counters);
                }
            }
            Err(Failure::Unavailable | Failure::Down { maybe_done: false }) => {
                for row in batch.iter() {
                    fallback::divert(row, &self.counters);
                }
            }
        }
        batch.clear();
    }

    fn write_one(&self, row: &Row) {
        match self.db.insert(row) {
            Outcome::Stored => Counters::add(&self.counters.written, 1),
            Outcome::NotStored => fallback::divert(row, &self.counters),
            Outcome::Uncertain => fallback::divert_uncertain(row, &self.counters),
        }
    }
}
