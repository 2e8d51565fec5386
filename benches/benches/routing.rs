//! Routing decisions per second with 3,300 operators and 40 queues, on one thread and on two.
//!
//! - `assign_cycle`: offer -> ASSIGNED to a free operator -> accept -> complete. Every iteration
//!   is one routing decision plus the two operator events that free the operator again, so the
//!   engine's state stays bounded however long criterion runs.
//! - `queue_cycle`: every operator paused; offer -> QUEUED -> cancel.
//!
//! - `offers`: offer decisions alone, timed in batches of 1,000 offers; between batches (untimed)
//!   every assigned contact is accepted and completed and every queued one cancelled. With 3,300
//!   free operators most decisions are ASSIGNED.
//!
//! Run: `cargo bench -p smista-benches --bench routing`. Throughput is printed as elements/s,
//! one element being one offer decision (with its follow-up operations).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smista_benches::{centre, voice_offer};
use smista_core::budget::Unlimited;
use smista_core::{Decision, Engine, Millis, RequestedState};

const QUEUES: usize = 40;
const OPERATORS: usize = 3_300;

fn engine(paused: bool) -> Arc<Engine> {
    let (cfg, logins) = centre(QUEUES, OPERATORS);
    let e = Engine::new(&cfg, Arc::new(Unlimited)).expect("valid config");
    let mut ev = Vec::new();
    for l in &logins {
        e.login(l, Millis(0), &mut ev).expect("login");
        if paused {
            e.set_state(&l.operator_id, &RequestedState::Paused("bench".into()), Millis(0), &mut ev).expect("pause");
        }
    }
    Arc::new(e)
}

/// One offer decision, then whatever brings the engine back to its starting state.
fn cycle(e: &Engine, n: u64, thread: u64, ev: &mut Vec<smista_core::Event>, queues: &[String]) {
    let id = format!("t{thread}-c{n}");
    let q = &queues[(n as usize) % queues.len()];
    let now = Millis(n);
    let d = e.offer(&voice_offer(id.clone(), q.clone()), now, ev).expect("offer");
    match &d {
        Decision::Assigned { operator, .. } => {
            e.accept(operator, &id, now, ev).expect("accept");
            e.complete(operator, &id, 1, now, ev).expect("complete");
        }
        Decision::Queued { .. } => {
            e.cancel(&id, now, ev).expect("cancel");
        }
        Decision::Diverted { .. } => {}
    }
    black_box(&d);
    // The server ticks every 100 ms; here every 1,024 cycles, so finished contacts are forgotten.
    if n % 1024 == 0 {
        e.tick(now, ev);
    }
    ev.clear();
}

fn run_threads(e: &Arc<Engine>, threads: u64, iters: u64, counter: &Arc<AtomicU64>) -> Duration {
    let queues: Arc<Vec<String>> = Arc::new(e.queue_names().map(str::to_owned).collect());
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let e = e.clone();
            let queues = queues.clone();
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut ev = Vec::with_capacity(16);
                for _ in 0..iters / threads {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    cycle(&e, n, t, &mut ev, &queues);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("bench thread");
    }
    start.elapsed()
}

/// Times `batch`-offer batches on `threads` threads; cleanup between batches is not timed.
fn offers_only(e: &Arc<Engine>, threads: u64, iters: u64, counter: &Arc<AtomicU64>) -> Duration {
    const BATCH: u64 = 1_000;
    let queues: Arc<Vec<String>> = Arc::new(e.queue_names().map(str::to_owned).collect());
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let per_thread = (BATCH / threads).min((iters - done).div_ceil(threads)).max(1);
        let barrier = Arc::new(std::sync::Barrier::new(threads as usize));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (e, queues, counter, barrier) = (e.clone(), queues.clone(), counter.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let reqs: Vec<_> = (0..per_thread)
                        .map(|_| {
                            let n = counter.fetch_add(1, Ordering::Relaxed);
                            (n, voice_offer(format!("t{t}-o{n}"), queues[(n as usize) % queues.len()].clone()))
                        })
                        .collect();
                    let mut ev = Vec::with_capacity(16 * per_thread as usize);
                    let mut decided = Vec::with_capacity(reqs.len());
                    barrier.wait();
                    let start = Instant::now();
                    for (n, r) in &reqs {
                        decided.push(e.offer(r, Millis(*n), &mut ev).expect("offer"));
                    }
                    let elapsed = start.elapsed();
                    for ((n, r), d) in reqs.iter().zip(decided) {
                        let now = Millis(*n);
                        match black_box(d) {
                            Decision::Assigned { operator, .. } => {
                                e.accept(&operator, &r.contact_id, now, &mut ev).expect("accept");
                                e.complete(&operator, &r.contact_id, 1, now, &mut ev).expect("complete");
                            }
                            Decision::Queued { .. } => {
                                let _ = e.cancel(&r.contact_id, now, &mut ev);
                            }
                            Decision::Diverted { .. } => {}
                        }
                        ev.clear();
                    }
                    elapsed
                })
            })
            .collect();
        let slowest = handles.into_iter().map(|h| h.join().expect("bench thread")).max().unwrap_or_default();
        total += slowest;
        done += per_thread * threads;
        e.tick(Millis(counter.load(Ordering::Relaxed)), &mut Vec::new());
    }
    total
}

fn bench(c: &mut Criterion) {
    {
        let e = engine(false);
        let counter = Arc::new(AtomicU64::new(1));
        let mut g = c.benchmark_group("routing/offers/3300ops-40queues");
        g.throughput(Throughput::Elements(1));
        g.measurement_time(Duration::from_secs(5));
        for threads in [1, 2] {
            g.bench_function(BenchmarkId::new("threads", threads), |b| {
                b.iter_custom(|iters| offers_only(&e, threads, iters, &counter));
            });
        }
        g.finish();
    }
    for (name, paused) in [("assign_cycle", false), ("queue_cycle", true)] {
        let e = engine(paused);
        let counter = Arc::new(AtomicU64::new(1));
        let mut g = c.benchmark_group(format!("routing/{name}/3300ops-40queues"));
        g.throughput(Throughput::Elements(1));
        g.measurement_time(Duration::from_secs(5));
        g.bench_function(BenchmarkId::new("threads", 1), |b| {
            let queues: Vec<String> = e.queue_names().map(str::to_owned).collect();
            let mut ev = Vec::with_capacity(16);
            b.iter(|| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                cycle(&e, n, 0, &mut ev, &queues);
            });
        });
        g.bench_function(BenchmarkId::new("threads", 2), |b| {
            b.iter_custom(|iters| run_threads(&e, 2, iters.max(2), &counter));
        });
        g.finish();
        let audit = e.audit(Millis(u64::MAX / 2));
        assert!(audit.iter().all(|v| v.contains("idles")), "bench left the engine inconsistent: {audit:?}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
