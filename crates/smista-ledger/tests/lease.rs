//! Budget leases on the real PostgreSQL ledger: random interleavings of three nodes taking,
//! renewing, spending, giving back, expiring and crashing never put the money granted above the
//! ceiling, the pool always equals the sum of the leases, a node never records more than it was
//! granted, and a dead node's lease comes back minus what it recorded. Then a race: many grants
//! at once never over-grant.
//!
//! Needs `SMISTA_TEST_PG_URL` (set by `.ci/run`; required when `CI=true`).

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use smista_core::book::CostRecord;
use smista_core::{Channel, Outcome};
use smista_ledger::{Ledger, Target};

const CEILING: i64 = 10_000;
const TTL: i64 = 1_000;

use smista_ledger::testing::drop_schema;

fn pg_url() -> Option<String> {
    smista_ledger::testing::pg_url("the lease tests")
}

fn cost(node: usize, n: u64, cents: i64) -> CostRecord {
    CostRecord {
        contact: format!("n{node}-c{n}"),
        budget: "ccm".into(),
        period: "P0".into(),
        queue: "pensions".into(),
        group: "supplier-a".into(),
        operator: format!("op-{node}"),
        channel: Channel::Voice,
        accepted_unix_ms: 1,
        completed_unix_ms: 2,
        handle_ms: 1,
        cost_cents: cents,
        reserved_cents: cents,
        outcome: Outcome::Completed,
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Node asks for more (0: renew only).
    Acquire(usize, i64),
    /// Node spends part of what it holds and has not spent.
    Spend(usize, i64),
    /// Node gives back what it holds beyond what it spent.
    GiveBack(usize),
    /// Time passes.
    Advance(i64),
    /// Node dies: it never renews again.
    Crash(usize),
    /// Node reclaims the others' expired leases.
    Reclaim(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 0..4_000i64).prop_map(|(n, w)| Step::Acquire(n, w)),
        4 => (0..3usize, 1..2_000i64).prop_map(|(n, a)| Step::Spend(n, a)),
        1 => (0..3usize).prop_map(Step::GiveBack),
        2 => (1..800i64).prop_map(Step::Advance),
        1 => (0..3usize).prop_map(Step::Crash),
        2 => (0..3usize).prop_map(Step::Reclaim),
    ]
}

#[test]
fn random_interleavings_never_grant_or_record_beyond_the_ceiling() {
    let Some(url) = pg_url() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut runner = TestRunner::new(PtConfig { cases: 24, failure_persistence: None, ..PtConfig::default() });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&prop::collection::vec(step(), 1..40), |steps| {
            let k = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let schema = format!("t_lease_{}_{k}", std::process::id());
            rt.block_on(async {
                let target = Target::Postgres { url: url.clone(), schema: Some(schema.clone()) };
                let mut nodes = Vec::new();
                for n in 0..3 {
                    nodes.push(Ledger::connect_as(&target, &format!("node-{n}")).await.expect("connect"));
                }
                let mut spent = [0i64; 3];
                let mut granted = [0i64; 3];
                let mut alive = [true; 3];
                let mut now = 1_000i64;
                let mut n_rec = 0u64;
                for s in &steps {
                    match *s {
                        Step::Acquire(n, want) if alive[n] => {
                            let l = nodes[n]
                                .acquire_lease("ccm", "P0", CEILING, CEILING, want, now + TTL, now)
                                .await
                                .expect("grant");
                            granted[n] = l.granted_cents;
                        }
                        Step::Spend(n, a) if alive[n] => {
                            // A node spends only within its lease, and only while it is valid.
                            let lease = nodes[n].leases("ccm", "P0").await.expect("leases");
                            let valid = lease.iter().any(|(id, _, exp)| *id == format!("node-{n}") && *exp > now);
                            let a = a.min(granted[n] - spent[n]);
                            if valid && a > 0 {
                                n_rec += 1;
                                assert!(nodes[n].record(cost(n, n_rec, a)).await.expect("record"));
                                spent[n] += a;
                            }
                        }
                        Step::GiveBack(n) if alive[n] => {
                            if let Some(l) = nodes[n].give_back_lease("ccm", "P0", spent[n]).await.expect("give back") {
                                granted[n] = l.granted_cents;
                                assert_eq!(granted[n], spent[n]);
                            }
                        }
                        Step::Advance(ms) => now += ms,
                        Step::Crash(n) => alive[n] = false,
                        Step::Reclaim(n) if alive[n] => {
                            nodes[n].reclaim_expired_leases("ccm", "P0", now).await.expect("reclaim");
                        }
                        _ => {}
                    }
                    // The invariants, read back from the database after every step.
                    if let Some(pool) = nodes[0].pool("ccm", "P0").await.expect("pool") {
                        let leases = nodes[0].leases("ccm", "P0").await.expect("leases");
                        let sum: i64 = leases.iter().map(|l| l.1).sum();
                        assert_eq!(pool.granted_cents, sum, "the pool is the sum of the leases");
                        assert!(sum <= CEILING, "granted {sum} > ceiling");
                        let settled = nodes[0].totals("ccm", "P0").await.expect("totals").cost_cents;
                        assert!(settled <= CEILING, "recorded {settled} > ceiling");
                        for (id, g, _) in &leases {
                            let n: usize = id.trim_start_matches("node-").parse().expect("node id");
                            assert!(spent[n] <= *g, "{id} recorded {} beyond its lease {g}", spent[n]);
                            if !alive[n] && *g < granted[n] {
                                assert_eq!(*g, spent[n], "a dead node's lease is cut back to what it recorded");
                            }
                        }
                    }
                }
                for l in nodes {
                    l.close().await;
                }
                drop_schema(&url, &schema).await;
            });
            Ok(())
        })
        .expect("invariants hold");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grants_never_over_grant() {
    let Some(url) = pg_url() else { return };
    let schema = format!("t_lease_race_{}", std::process::id());
    let target = Target::Postgres { url: url.clone(), schema: Some(schema.clone()) };
    let mut tasks = Vec::new();
    for n in 0..12 {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let l = Arc::new(Ledger::connect_as(&target, &format!("node-{n}")).await.expect("connect"));
            let mut got = 0;
            for _ in 0..20 {
                got +=
                    l.acquire_lease("ccm", "P0", CEILING, CEILING, 97, i64::MAX, 0).await.expect("grant").added_cents;
            }
            got
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    let l = Ledger::connect_as(&target, "observer").await.expect("connect");
    let pool = l.pool("ccm", "P0").await.expect("pool").expect("exists");
    assert_eq!(total, pool.granted_cents, "what the nodes were told they got is what the pool granted");
    assert_eq!(pool.granted_cents, CEILING, "12 x 20 x 97 asked far beyond the ceiling: all of it, no more");
    l.close().await;
    drop_schema(&url, &schema).await;
}
