//! The batch-mode queue: bounded in events and in bytes, fair when full, and never
//! refusing the control messages (flush, stop) that must keep their place in line.
//!
//! - **Bounds.** An item is admitted while the queue holds fewer than `events` items and
//!   its bytes fit under `bytes`; an item larger than the byte bound alone is admitted
//!   into an empty queue, so that it can still make progress. Memory is allocated as items
//!   arrive, never for the whole capacity up front.
//! - **Fairness.** Producers that find the queue full wait in arrival order: the first in
//!   line takes the first room the consumer frees, and a newcomer does not overtake the
//!   line even when there is room. A waiting producer gives up only when the consumer has
//!   taken nothing for the whole stall bound, not when others took the room first.
//! - **Cost.** One uncontended lock per item; the consumer is woken only when it waits,
//!   and takes everything it may in one go, waking waiting producers once per take.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex, MutexGuard};

/// What an item costs the queue.
pub(crate) trait Weigh {
    /// Approximate heap bytes held (0 for control messages, which are never refused).
    fn weight(&self) -> usize;
    /// Control messages bypass the bounds and end a take after them.
    fn is_control(&self) -> bool;
    /// Whether a consumer waiting for a fuller queue must be woken for this item at once
    /// (control messages, urgent events).
    fn wakes(&self) -> bool {
        self.is_control()
    }
}

/// Why an item was not queued; it comes back.
#[derive(Debug)]
pub(crate) enum Refused<T> {
    /// No room (and, when waiting, the consumer made no progress for the stall bound).
    Full(T),
    /// The queue is closed.
    Closed(T),
}

/// What a [`Queue::take`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Took {
    /// Items were taken; `stop`: the last one was a control message or urgent.
    Items { stop: bool },
    /// Nothing came before the deadline.
    TimedOut,
    /// The queue is closed and empty.
    Closed,
}

/// What one [`Queue::take_now`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    pub items: usize,
    pub bytes: usize,
    /// It stopped after a control message or an urgent item.
    pub stop: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub events: usize,
    pub bytes: usize,
}

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    /// The consumer waits here for items.
    arrived: Condvar,
    /// Producers waiting for room wait here.
    freed: Condvar,
}

struct State<T> {
    items: VecDeque<T>,
    /// Items that are not control messages.
    events: usize,
    /// Bytes of the items held.
    bytes: usize,
    limits: Limits,
    /// Tickets of producers waiting for room, first come first served.
    line: VecDeque<u64>,
    next_ticket: u64,
    /// When the consumer last took something (or the queue was made).
    progress: Instant,
    /// How many items the waiting consumer waits for (0: it is not waiting).
    consumer_wants: usize,
    /// Queued items that wake a waiting consumer at once.
    wakers: usize,
    closed: bool,
}

impl<T> State<T> {
    fn fits(&self, weight: usize) -> bool {
        self.items.is_empty()
            || (self.items.len() < self.limits.events
                && self.bytes.saturating_add(weight) <= self.limits.bytes)
    }
}

impl<T: Weigh> Queue<T> {
    pub fn new(limits: Limits) -> Queue<T> {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                events: 0,
                bytes: 0,
                limits,
                line: VecDeque::new(),
                next_ticket: 0,
                progress: Instant::now(),
                consumer_wants: 0,
                wakers: 0,
                closed: false,
            }),
            arrived: Condvar::new(),
            freed: Condvar::new(),
        }
    }

    /// Queues `item` if there is room now and nobody is waiting for room before it.
    pub fn try_push(&self, item: T) -> Result<(), Refused<T>> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(Refused::Closed(item));
        }
        let (control, weight) = (item.is_control(), item.weight());
        if !control && (!state.line.is_empty() || !state.fits(weight)) {
            return Err(Refused::Full(item));
        }
        self.admit(&mut state, item, weight);
        Ok(())
    }

    /// Queues `item`, waiting in line for room for as long as the consumer keeps taking
    /// items; gives up when it has taken nothing for `stall`.
    #[inline]
    pub fn push_waiting(&self, item: T, stall: Duration) -> Result<(), Refused<T>> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(Refused::Closed(item));
        }
        let weight = item.weight();
        if item.is_control() || (state.line.is_empty() && state.fits(weight)) {
            self.admit(&mut state, item, weight);
            return Ok(());
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.line.push_back(ticket);
        let started = Instant::now();
        loop {
            if state.closed {
                self.leave_line(&mut state, ticket);
                return Err(Refused::Closed(item));
            }
            if state.line.front() == Some(&ticket) && state.fits(weight) {
                state.line.pop_front();
                self.admit(&mut state, item, weight);
                // The next in line may fit too.
                if !state.line.is_empty() {
                    self.freed.notify_all();
                }
                return Ok(());
            }
            let deadline = state.progress.max(started) + stall;
            if Instant::now() >= deadline {
                self.leave_line(&mut state, ticket);
                return Err(Refused::Full(item));
            }
            state = self.freed.wait_until(state, deadline).0;
        }
    }

    fn leave_line(&self, state: &mut State<T>, ticket: u64) {
        state.line.retain(|t| *t != ticket);
        // Whoever was behind may be first now.
        self.freed.notify_all();
    }

    fn admit(&self, state: &mut MutexGuard<'_, State<T>>, item: T, weight: usize) {
        state.bytes += weight;
        state.events += usize::from(!item.is_control());
        let wakes = item.wakes();
        state.wakers += usize::from(wakes);
        state.items.push_back(item);
        // The consumer sleeps until it can fill what it waits for: one wake-up per batch,
        // not per item (it shares this lock with every producer).
        if state.consumer_wants > 0 && (wakes || state.items.len() >= state.consumer_wants) {
            self.arrived.notify_one();
        }
    }

    /// Moves items into `out`, oldest first: as many as are queued, up to `max_items`
    /// items and about `max_bytes` bytes (at least one item), stopping after a control
    /// message or an item `urgent` picks. Waits until `until` for the first one when
    /// there is none (`None`: as long as it takes).
    #[cfg(test)]
    pub fn take(
        &self,
        out: &mut Vec<T>,
        max_items: usize,
        max_bytes: usize,
        until: Option<Instant>,
        urgent: impl Fn(&T) -> bool,
    ) -> Took {
        match self.wait(until) {
            Took::Items { .. } => Took::Items {
                stop: self.take_now(out, max_items, max_bytes, urgent).stop,
            },
            other => other,
        }
    }

    /// Waits until there is something to take (`Items`), `until` passes, or the queue is
    /// closed and empty; takes nothing.
    pub fn wait(&self, until: Option<Instant>) -> Took {
        self.wait_for(1, until)
    }

    /// Waits until `want` items are queued (or one that [wakes](Weigh::wakes) it),
    /// `until` passes, or the queue is closed; takes nothing. `Items` when there is
    /// anything to take by then.
    pub fn wait_for(&self, want: usize, until: Option<Instant>) -> Took {
        let want = want.max(1);
        let mut state = self.state.lock();
        loop {
            let ready = state.items.len() >= want || state.wakers > 0;
            if ready {
                return Took::Items { stop: false };
            }
            if state.closed {
                return if state.items.is_empty() {
                    Took::Closed
                } else {
                    Took::Items { stop: false }
                };
            }
            state.consumer_wants = want;
            let timed_out;
            (state, timed_out) = match until {
                Some(deadline) => self.arrived.wait_until(state, deadline),
                None => (self.arrived.wait(state), false),
            };
            state.consumer_wants = 0;
            if timed_out {
                return if state.items.is_empty() {
                    Took::TimedOut
                } else {
                    Took::Items { stop: false }
                };
            }
        }
    }

    /// Like `take` without waiting: takes what is there (maybe nothing), up to
    /// `max_items` items and about `max_bytes` bytes (at least one item), stopping after
    /// a control message or an item `urgent` picks.
    pub fn take_now(
        &self,
        out: &mut Vec<T>,
        max_items: usize,
        max_bytes: usize,
        urgent: impl Fn(&T) -> bool,
    ) -> Taken {
        let mut state = self.state.lock();
        let (mut taken, mut bytes, mut stop) = (0, 0, false);
        while taken < max_items {
            let Some(front) = state.items.front() else {
                break;
            };
            let weight = front.weight();
            if taken > 0 && bytes + weight > max_bytes {
                break;
            }
            let item = state.items.pop_front().expect("the front exists");
            state.bytes -= weight;
            state.events -= usize::from(!item.is_control());
            state.wakers -= usize::from(item.wakes());
            (taken, bytes) = (taken + 1, bytes + weight);
            stop = item.is_control() || urgent(&item);
            out.push(item);
            if stop {
                break;
            }
        }
        if taken > 0 {
            state.progress = Instant::now();
            if !state.line.is_empty() {
                self.freed.notify_all();
            }
        }
        Taken {
            items: taken,
            bytes,
            stop,
        }
    }

    /// Closes the queue and returns what it still held; later pushes are refused.
    pub fn close(&self) -> Vec<T> {
        let mut state = self.state.lock();
        state.closed = true;
        state.bytes = 0;
        state.events = 0;
        state.wakers = 0;
        self.freed.notify_all();
        self.arrived.notify_all();
        state.items.drain(..).collect()
    }

    /// Items held now, control messages included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// Items held now that are not control messages (events, in batch mode).
    pub fn events(&self) -> usize {
        self.state.lock().events
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Producers waiting for room now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.state.lock().line.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing::eventually;
    use std::sync::Arc;

    /// An item of `.0` bytes; `.1` marks a control message.
    #[derive(Debug, PartialEq)]
    struct Item(usize, bool, u32);

    impl Weigh for Item {
        fn weight(&self) -> usize {
            self.0
        }
        fn is_control(&self) -> bool {
            self.1
        }
    }

    fn item(bytes: usize, id: u32) -> Item {
        Item(bytes, false, id)
    }

    fn queue(events: usize, bytes: usize) -> Arc<Queue<Item>> {
        Arc::new(Queue::new(Limits { events, bytes }))
    }

    fn take_all(q: &Queue<Item>) -> Vec<u32> {
        let mut out = Vec::new();
        while q.len() > 0 {
            q.take(
                &mut out,
                usize::MAX,
                usize::MAX,
                Some(Instant::now()),
                |_| false,
            );
        }
        out.into_iter().map(|i| i.2).collect()
    }

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn bounded_in_events_and_in_bytes() {
        let q = queue(3, 100);
        assert!(q.try_push(item(10, 1)).is_ok());
        assert!(q.try_push(item(10, 2)).is_ok());
        assert!(q.try_push(item(10, 3)).is_ok());
        assert!(
            matches!(q.try_push(item(1, 4)), Err(Refused::Full(_))),
            "event bound"
        );
        take_all(&q);
        assert!(q.try_push(item(60, 5)).is_ok());
        assert!(
            matches!(q.try_push(item(50, 6)), Err(Refused::Full(_))),
            "byte bound"
        );
        assert!(q.try_push(item(40, 7)).is_ok());
        assert_eq!(q.bytes(), 100);
    }

    #[test]
    fn an_item_larger_than_the_byte_bound_fits_an_empty_queue_only() {
        let q = queue(10, 100);
        assert!(q.try_push(item(500, 1)).is_ok());
        assert!(matches!(q.try_push(item(500, 2)), Err(Refused::Full(_))));
        take_all(&q);
        assert!(q.try_push(item(500, 3)).is_ok());
    }

    #[test]
    fn control_messages_are_never_refused_and_end_a_take() {
        let q = queue(1, 10);
        q.try_push(item(1, 1)).unwrap();
        q.try_push(Item(0, true, 2)).unwrap();
        q.try_push(item(1, 3)).unwrap_err();
        let mut out = Vec::new();
        q.push_waiting(Item(0, true, 4), Duration::ZERO).unwrap();
        assert_eq!(
            q.take(&mut out, 10, 100, None, |_| false),
            Took::Items { stop: true },
            "stopped at the control"
        );
        assert_eq!(out.iter().map(|i| i.2).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn a_take_stops_at_the_item_or_byte_limit_and_after_an_urgent_item() {
        let q = queue(100, 1000);
        for id in 0..6 {
            q.try_push(item(10, id)).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(
            q.take(&mut out, 2, 1000, None, |_| false),
            Took::Items { stop: false }
        );
        assert_eq!(out.len(), 2);
        q.take(&mut out, 10, 25, None, |_| false);
        assert_eq!(out.len(), 4, "two more fit in 25 bytes");
        assert_eq!(
            q.take(&mut out, 10, 1000, None, |i| i.2 == 4),
            Took::Items { stop: true }
        );
        assert_eq!(out.last().unwrap().2, 4);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn take_waits_until_its_deadline_for_a_first_item() {
        let q = queue(10, 100);
        let mut out = Vec::new();
        let started = Instant::now();
        let deadline = Some(started + Duration::from_millis(20));
        assert_eq!(
            q.take(&mut out, 10, 100, deadline, |_| false),
            Took::TimedOut
        );
        assert!(out.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(20));
        let producer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                q.try_push(item(1, 7)).unwrap();
            })
        };
        q.take(&mut out, 10, 100, None, |_| false);
        assert_eq!(out[0].2, 7);
        producer.join().unwrap();
    }

    #[test]
    fn waiting_producers_are_served_in_arrival_order() {
        let q = queue(1, 1000);
        q.try_push(item(1, 0)).unwrap();
        let mut producers = Vec::new();
        for id in 1..=5 {
            let q2 = Arc::clone(&q);
            producers.push(std::thread::spawn(move || {
                q2.push_waiting(item(1, id), LONG).is_ok()
            }));
            eventually("the producer waits", || q.waiting() == id as usize);
        }
        // A newcomer does not overtake the line, even when room appears.
        let mut order = Vec::new();
        for _ in 0..6 {
            let mut out = Vec::new();
            eventually("an item to take", || q.len() == 1);
            q.take(&mut out, 1, 1000, None, |_| false);
            order.extend(out.into_iter().map(|i| i.2));
            if q.waiting() > 0 {
                assert!(matches!(q.try_push(item(1, 99)), Err(Refused::Full(_))));
            }
        }
        assert!(producers.into_iter().all(|p| p.join().unwrap()));
        assert_eq!(order, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_waiter_gives_up_only_when_the_consumer_stalls() {
        let q = queue(1, 1000);
        q.try_push(item(1, 0)).unwrap();
        let stall = Duration::from_millis(200);
        let waiter = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let started = Instant::now();
                (q.push_waiting(item(1, 1), stall).is_ok(), started.elapsed())
            })
        };
        // The consumer keeps taking, but others refill the room first each time: the
        // waiter is first in line, so it gets the room.
        eventually("the waiter waits", || q.waiting() == 1);
        let mut out = Vec::new();
        q.take(&mut out, 1, 1000, None, |_| false);
        let (ok, _) = waiter.join().unwrap();
        assert!(ok, "served as soon as the consumer made room");

        // Now the consumer stalls: the waiter gives up after `stall`, not before.
        let waiter = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let started = Instant::now();
                let refused = matches!(q.push_waiting(item(1, 2), stall), Err(Refused::Full(_)));
                (refused, started.elapsed())
            })
        };
        let (refused, waited) = waiter.join().unwrap();
        assert!(refused);
        assert!(waited >= stall, "{waited:?}");
        assert_eq!(q.waiting(), 0, "it left the line");
    }

    #[test]
    fn progress_extends_a_waiters_patience() {
        let q = queue(1, 1000);
        q.try_push(item(1, 0)).unwrap();
        let stall = Duration::from_millis(150);
        // Two waiters; the consumer frees one slot every 100 ms, so the second waits
        // about 200 ms in all, longer than `stall`, yet never a whole `stall` without
        // progress.
        let waiters: Vec<_> = (1..=2)
            .map(|id| {
                let q2 = Arc::clone(&q);
                let w = std::thread::spawn(move || q2.push_waiting(item(1, id), stall).is_ok());
                eventually("in line", || q.waiting() == id as usize);
                w
            })
            .collect();
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(100));
            let mut out = Vec::new();
            q.take(&mut out, 1, 1000, None, |_| false);
        }
        assert!(waiters.into_iter().all(|w| w.join().unwrap()));
    }

    #[test]
    fn close_returns_what_is_held_and_refuses_later_pushes_and_waiters() {
        let q = queue(1, 1000);
        q.try_push(item(1, 0)).unwrap();
        let waiter = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                matches!(q.push_waiting(item(1, 1), LONG), Err(Refused::Closed(_)))
            })
        };
        eventually("in line", || q.waiting() == 1);
        let held = q.close();
        assert_eq!(held.len(), 1);
        assert!(
            waiter.join().unwrap(),
            "the waiter is told, not left waiting"
        );
        assert!(matches!(q.try_push(item(1, 2)), Err(Refused::Closed(_))));
        assert_eq!(q.bytes(), 0);
        let mut out = Vec::new();
        assert_eq!(
            q.take(&mut out, 1, 1, None, |_| false),
            Took::Closed,
            "a consumer is not left waiting"
        );
    }
}
