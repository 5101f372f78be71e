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

use super::database::{Database, Failure, NOTICE_INTERVAL, PROBE_LOCK_WAIT};
use crate::fallback::{self, RateLimit};
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
    tx: Sender<Msg>,
    /// Kept to take back what the writer leaves behind when it stops or is too slow.
    rx: Receiver<Msg>,
    closed: AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
    writer: Arc<Writer>,
    full_notice: RateLimit,
}

/// The writer thread's side.
struct Writer {
    db: Database,
    /// Senders waiting for room sleep on `room_freed`; the writer signals it whenever it
    /// has taken messages off the queue.
    room: Mutex<()>,
    room_freed: Condvar,
    panic_notice: RateLimit,
    counters: Arc<Counters>,
    settings: BatchSettings,
}

impl Batch {
    /// Starts the writer thread. If the thread cannot be spawned, events go to stderr.
    pub fn start(db: Database, settings: BatchSettings, counters: &Arc<Counters>) -> Batch {
        let (tx, rx) = bounded(settings.capacity);
        let writer = Arc::new(Writer {
            db,
            room: Mutex::new(()),
            room_freed: Condvar::new(),
            panic_notice: RateLimit::new(NOTICE_INTERVAL),
            counters: Arc::clone(counters),
            settings,
        });
        let worker = {
            let (rx, writer) = (rx.clone(), Arc::clone(&writer));
            std::thread::Builder::new()
                .name("pglog-writer".to_owned())
                .spawn(move || writer.run(&rx))
        };
        let batch = Batch {
            tx,
            rx,
            closed: AtomicBool::new(false),
            worker: Mutex::new(None),
            writer,
            full_notice: RateLimit::new(NOTICE_INTERVAL),
        };
        match worker {
            Ok(handle) => *batch.worker.lock() = Some(handle),
            Err(e) => {
                fallback::notice(&format!(
                    "cannot start the writer thread ({e}); events go to stderr"
                ));
                batch.closed.store(true, Ordering::Release);
            }
        }
        batch
    }

    pub fn database(&self) -> &Database {
        &self.writer.db
    }

    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    /// Queues `row`; never touches the network.
    pub fn enqueue(&self, row: Row) {
        let counters = &*self.writer.counters;
        if self.closed.load(Ordering::Acquire) {
            fallback::divert(&row, counters);
            return;
        }
        match self.writer.settings.overflow {
            Overflow::Block(wait) => match self.send_within(Msg::Row(row), wait) {
                Ok(()) => {}
                Err(msg) => {
                    self.full_notice.notice(|| {
                        format!("the batch queue stayed full for {wait:?}; events that could not wait went to stderr")
                    });
                    self.take_back(msg);
                }
            },
            Overflow::Drop => match self.tx.try_send(Msg::Row(row)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    Counters::add(&counters.dropped, 1);
                    self.full_notice
                        .notice(|| "the batch queue is full; dropping events (counted in the guard's stats)".to_owned());
                }
                Err(TrySendError::Disconnected(msg)) => self.take_back(msg),
            },
        }
        // Closed while we were sending: the writer may be gone, so nothing may stay queued.
        if self.closed.load(Ordering::Acquire) {
            self.drain();
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
        let mut room = self.writer.room.lock();
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(m)) => msg = m,
                Err(TrySendError::Disconnected(m)) => return Err(m),
            }
            if self
                .writer
                .room_freed
                .wait_until(&mut room, deadline)
                .timed_out()
            {
                return self.tx.try_send(msg).map_err(TrySendError::into_inner);
            }
        }
    }

    /// Returns once everything queued before the call is committed or on stderr, or
    /// after the flush timeout.
    pub fn flush(&self) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let (ack, done) = bounded(1);
        let deadline = Instant::now() + self.writer.settings.flush_timeout;
        if self.tx.send_deadline(Msg::Flush(ack), deadline).is_ok() {
            let _ = done.recv_deadline(deadline);
        }
    }

    /// Stops the writer after it has written what is queued, waiting at most the flush
    /// timeout; whatever is left then goes to stderr. Later events go to stderr too.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let flush_timeout = self.writer.settings.flush_timeout;
        let (ack, done) = bounded(1);
        let deadline = Instant::now() + flush_timeout;
        let stopped = self.tx.send_deadline(Msg::Stop(ack), deadline).is_ok()
            && done.recv_deadline(deadline).is_ok();
        self.drain();
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

    fn drain(&self) {
        while let Ok(msg) = self.rx.try_recv() {
            self.take_back(msg);
        }
    }

    fn take_back(&self, msg: Msg) {
        match msg {
            Msg::Row(row) => fallback::divert(&row, &self.writer.counters),
            Msg::Flush(ack) | Msg::Stop(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.close();
    }
}

impl Writer {
    fn run(&self, rx: &Receiver<Msg>) {
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
                let _room = self.room.lock();
                self.room_freed.notify_all();
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
        let mut attempts = 0;
        let outcome = loop {
            let result = self
                .db
                .run(|session, probing| session.copy(batch, probing.then_some(PROBE_LOCK_WAIT)));
            match result {
                Err(Failure::Lost) if attempts < BATCH_RETRIES => {
                    attempts += 1;
                    Counters::add(&self.counters.retries, 1);
                    std::thread::sleep(self.db.until_next_probe());
                }
                other => break other,
            }
        };
        match outcome {
            Ok(_) => Counters::add(&self.counters.written, batch.len() as u64),
            // One bad row fails the whole COPY: write the rows one by one, so that only
            // the bad ones go to stderr.
            Err(Failure::Rejected(_)) => {
                for row in batch.iter() {
                    self.write_one(row);
                }
            }
            Err(Failure::Unavailable | Failure::Lost) => {
                for row in batch.iter() {
                    fallback::divert(row, &self.counters);
                }
            }
        }
        batch.clear();
    }

    fn write_one(&self, row: &Row) {
        if self.db.insert(row) {
            Counters::add(&self.counters.written, 1);
        } else {
            fallback::divert(row, &self.counters);
        }
    }
}
