//! Caller-side costs, with criterion: rendering one record, a call below the logger's
//! level, and a batch-mode call that queues an event.
//!
//! `cargo bench --bench micro`; under `cargo test` criterion runs each once.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use log::kv::Value;

fn render(c: &mut Criterion) {
    let kvs: [(&str, Value<'_>); 3] = [
        ("user_id", Value::from(42u64)),
        ("admin", Value::from(false)),
        ("user", Value::from("bench")),
    ];
    c.bench_function("render one record, 3 key-values", |b| {
        b.iter(|| {
            pglog::__render_for_bench(
                &log::Record::builder()
                    .args(format_args!("user {} logged in", black_box(42)))
                    .level(log::Level::Info)
                    .target("micro")
                    .module_path_static(Some("micro"))
                    .file_static(Some("benches/micro.rs"))
                    .line(Some(20))
                    .key_values(&kvs)
                    .build(),
            )
        })
    });
}

fn calls(c: &mut Criterion) {
    common::open_levels();
    let server = common::server();
    let dsn = server.create_database("micro").unwrap();

    let (quiet, _quiet_guard) = pglog::Builder::new()
        .dsn(&dsn)
        .table("disabled")
        .level(log::LevelFilter::Warn)
        .build()
        .unwrap();
    c.bench_function("info! call, logger at warn", |b| {
        b.iter(|| log::info!(logger: &quiet, user_id = black_box(42); "not logged"))
    });

    // Each sample logs into a queue with room for all of it, timed; then waits, untimed,
    // for the writer to commit it, so that the next sample starts with an empty queue
    // and the database is never what is measured.
    let capacity = 1 << 18;
    let (logger, guard) = pglog::Builder::new()
        .dsn(&dsn)
        .table("enqueue")
        .batch()
        .queue_capacity(capacity)
        .build()
        .unwrap();
    c.bench_function("batch-mode call (render + enqueue)", |b| {
        b.iter_custom(|iters| {
            assert!(iters <= capacity as u64, "a sample would fill the queue");
            let started = Instant::now();
            for i in 0..iters {
                common::log_event(&logger, i);
            }
            let elapsed = started.elapsed();
            guard.flush();
            elapsed
        })
    });
    drop(guard);
    let stats = logger.stats();
    assert_eq!(stats.fallback + stats.dropped, 0, "{stats:?}");
}

criterion_group! {
    name = micro;
    // Short: the render and level checks are nanoseconds, and every event of the
    // batch-mode sample is also written to the database between samples.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = render, calls
}
criterion_main!(micro);
