//! The periodic tick's cost against the size of the floor: `tick` with 330, 3,300 and 33,000
//! logged-in operators, every one busy with a call in service and 200 contacts waiting in 40
//! queues, with nothing due (no offer time-out, wrap-up end, maximum wait or expansion). A tick
//! whose cost grows with the operators logged in is what the server pays every 100 ms.
//!
//! Run: `cargo bench -p smista-benches --bench tick`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use smista_benches::{centre, voice_offer};
use smista_core::budget::Unlimited;
use smista_core::{Decision, Engine, Millis};

const QUEUES: usize = 40;
const WAITING: usize = 200;

/// A floor of `operators` desks, each with an accepted call, and `WAITING` contacts queued.
fn busy_floor(operators: usize) -> Engine {
    let (cfg, logins) = centre(QUEUES, operators);
    let e = Engine::new(&cfg, Arc::new(Unlimited)).expect("valid config");
    let mut ev = Vec::new();
    for l in &logins {
        e.login(l, Millis(0), &mut ev).expect("login");
    }
    let queues: Vec<String> = e.queue_names().map(str::to_owned).collect();
    let mut n = 0usize;
    let mut waiting = 0usize;
    while waiting < WAITING {
        let id = format!("c{n}");
        let d = e.offer(&voice_offer(id.clone(), queues[n % queues.len()].clone()), Millis(1), &mut ev).expect("offer");
        match d {
            Decision::Assigned { operator, .. } => e.accept(&operator, &id, Millis(1), &mut ev).expect("accept"),
            Decision::Queued { .. } => waiting += 1,
            Decision::Diverted { .. } => {}
        }
        n += 1;
        ev.clear();
    }
    e
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("tick/nothing_due");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);
    for operators in [330, 3_300, 33_000] {
        let e = busy_floor(operators);
        let mut ev = Vec::new();
        let mut now = 2u64;
        g.bench_function(BenchmarkId::new("operators", operators), |b| {
            b.iter(|| {
                now += 1;
                e.tick(Millis(now), &mut ev);
                black_box(ev.len());
                ev.clear();
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
