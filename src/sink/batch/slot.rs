//! The batch the writer holds, shared with [`Local::close`](super::Local): whoever
//! settles a row first counts it, the other finds it settled.

use std::sync::Arc;

use super::{Latch, Msg};
use crate::render::Row;
use crate::stats::{Counters, Outcome};
use crate::sync::Mutex;

/// The writer's batch, shared with [`Local::close`]. Rows `[..settled]` are counted;
/// `[settled..writing]` are being written (their fate is open); `[writing..]` are not.
#[derive(Default)]
pub(super) struct Slot {
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
    pub(super) fn collect<R>(&self, take: impl FnOnce(&mut Vec<Msg>) -> R) -> Option<R> {
        let mut state = self.state.lock();
        if state.given_up {
            return None;
        }
        Some(take(&mut state.collected))
    }

    /// Makes the collected rows the batch being written; returns them with the flush and
    /// stop requests collected with them. `None` when `close` gave up.
    #[allow(clippy::type_complexity)]
    pub(super) fn hold(&self) -> Option<(Arc<Vec<Row>>, Vec<Arc<Latch>>, Option<Arc<Latch>>)> {
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
    pub(super) fn writing(&self, n: usize) -> bool {
        let mut state = self.state.lock();
        state.writing = state.settled + n;
        !state.given_up
    }

    /// Nothing is being sent (between attempts). `false`: given up, stop.
    pub(super) fn not_writing(&self) -> bool {
        let mut state = self.state.lock();
        state.writing = state.settled;
        !state.given_up
    }

    /// Counts the next `n` rows as `how`, unless `close` settled them already.
    pub(super) fn settle(&self, n: usize, outcome: Outcome, counters: &Counters) -> bool {
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
            counters.settle(&rows[from..from + n], outcome);
        }
        true
    }

    /// After a panic: what was being sent is uncertain, the rest not written.
    pub(super) fn settle_rest(&self, counters: &Counters) {
        self.unsettled(counters, false);
    }

    /// `close` stops waiting: settles what is unsettled (see [`Slot::settle_rest`]) and
    /// tells the writer to stop. Returns (uncertain, not written).
    pub(super) fn give_up(&self, counters: &Counters) -> (usize, usize) {
        self.unsettled(counters, true)
    }

    pub(super) fn unsettled(&self, counters: &Counters, give_up: bool) -> (usize, usize) {
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
                    counters.settle_one(&row, Outcome::NotStored);
                    unwritten += 1;
                }
                Msg::Flush(latch) | Msg::Stop(latch) => latch.set(),
            }
        }
        let Some(rows) = rows else {
            return (0, unwritten);
        };
        counters.settle(&rows[settled..writing], Outcome::Uncertain);
        counters.settle(&rows[writing..], Outcome::NotStored);
        (writing - settled, unwritten + rows.len() - writing)
    }

    /// Rows held and not yet settled.
    pub(super) fn pending(&self) -> usize {
        let state = self.state.lock();
        state
            .rows
            .as_ref()
            .map_or(0, |rows| rows.len() - state.settled)
    }

    /// The batch is done; `false` if `close` gave up meanwhile.
    pub(super) fn release(&self) -> bool {
        let mut state = self.state.lock();
        state.rows = None;
        !state.given_up
    }
}
