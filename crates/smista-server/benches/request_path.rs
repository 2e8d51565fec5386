//! The server's request path without network: the gRPC service handlers called directly, with
//! request conversion, the engine, event publishing (metrics, offer board, event ring) and
//! response conversion — everything an RPC costs in smista's own code, none of the transport.
//!
//! Each iteration is one contact: OfferContact (ASSIGNED, 70 free operators in the load-test
//! configuration's `general` queue), AcceptOffer, CompleteContact (1 ms wrap-up; the tick ends
//! it). Compare with `routing/assign_cycle` (the engine alone) for the server layer's share.
//! On one thread, and on two threads with a runtime each calling the same handlers (as two tokio
//! workers would): how the server's own code scales with cores (`common/request_path.rs`).
//!
//! Run: `cargo bench -p smista-server --bench request_path`.

// The allocator the `smista` binary runs on (jemalloc), declared by smista-benches for every
// bench and example that links it: measured without it the request path was 30% slower.
extern crate smista_benches as _;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[path = "common/request_path.rs"]
mod request_path;

use request_path::{request_state, run_requests};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let shared = rt.block_on(request_state());
    let mut g = c.benchmark_group("request_path/offer_accept_complete");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    // Each thread numbers its own contacts, continuing across criterion's runs.
    let mut next = [0u64; 2];
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::new("threads", threads), |b| {
            b.iter_custom(|iters| run_requests(&shared, &mut next[..threads], (iters / threads as u64).max(1)));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
