//! Routing decisions per second with 3,300 operators and 40 queues, on one thread and on two.
//!
//! - `assign_cycle`: offer -> ASSIGNED to a free operator -> accept -> complete. Every iteration
//!   is one routing decision plus the two operator events that free the operator again, so the
//!   engine's state stays bounded however long criterion runs.
//! - `queue_cycle`: every operator paused; offer -> QUEUED -> cancel.
//! - `offers`: offer decisions alone, timed in batches of 1,000 offers; between batches (untimed)
//!   every assigned contact is accepted and completed and every queued one cancelled. With 3,300
//!   free operators most decisions are ASSIGNED.
//!
//! Each thread draws its contacts' queues from its own generator and numbers its contacts and
//! its clock itself (`smista_benches::scaling`): nothing in the timed loop is shared between
//! threads but the engine. For the ratio of two threads to one measured in alternating rounds
//! (robust to this machine's drift), run `cargo run --release -p smista-server --example
//! scaling`.
//!
//! Run: `cargo bench -p smista-benches --bench routing`. Throughput is printed as elements/s,
//! one element being one offer decision (with its follow-up operations).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smista_benches::scaling::{engine, run_cycles, run_offers, Lane};

fn lanes(threads: u64, start: u64) -> Vec<Lane> {
    (0..threads).map(|t| Lane::new(t, start)).collect()
}

fn bench(c: &mut Criterion) {
    {
        let e = engine(false);
        let mut g = c.benchmark_group("routing/offers/3300ops-40queues");
        g.throughput(Throughput::Elements(1));
        g.measurement_time(Duration::from_secs(5));
        let mut ls = lanes(2, 0);
        for threads in [1u64, 2] {
            g.bench_function(BenchmarkId::new("threads", threads), |b| {
                b.iter_custom(|iters| {
                    let per_batch = 1_000 / threads;
                    let batches = iters.div_ceil(per_batch * threads).max(1);
                    let took = run_offers(&e, &mut ls[..threads as usize], batches, per_batch);
                    // Both lanes' clocks go on from the later one.
                    let n = ls.iter().map(|l| l.n).max().unwrap_or(0);
                    ls.iter_mut().for_each(|l| l.n = n);
                    // Criterion counts `iters` elements: scale the time of the offers made.
                    took.mul_f64(iters as f64 / (batches * per_batch * threads) as f64)
                });
            });
        }
        g.finish();
    }
    for (name, paused) in [("assign_cycle", false), ("queue_cycle", true)] {
        let e = engine(paused);
        let mut g = c.benchmark_group(format!("routing/{name}/3300ops-40queues"));
        g.throughput(Throughput::Elements(1));
        g.measurement_time(Duration::from_secs(5));
        // Lanes continue across criterion's runs: ids are never reused, the clock never goes back.
        let mut ls = lanes(2, 0);
        for threads in [1u64, 2] {
            g.bench_function(BenchmarkId::new("threads", threads), |b| {
                b.iter_custom(|iters| {
                    let took = run_cycles(&e, &mut ls[..threads as usize], (iters / threads).max(1));
                    let n = ls.iter().map(|l| l.n).max().unwrap_or(0);
                    ls.iter_mut().for_each(|l| l.n = n);
                    took
                });
            });
        }
        g.finish();
        let audit = e.audit(smista_core::Millis(u64::MAX / 2));
        assert!(audit.iter().all(|v| v.contains("idles")), "bench left the engine inconsistent: {audit:?}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
