//! The batch writer's machinery against a fake store: batching, flush and stop, every
//! event counted once whatever happens, fairness, retries, halving and panics.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::fallback::capture;
use crate::sink::testing::eventually;
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
