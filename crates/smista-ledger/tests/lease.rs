//! Budget leases on the real PostgreSQL ledger: random interleavings of three nodes taking,
//! renewing, spending, giving back, expiring and crashing never put the money granted above the
//! ceiling, the pool always equals the sum of the leases, a node never records more than it was
//! granted, and a dead node's lease comes back minus what it recorded. Nodes also write *late*
//! (a node cut off from PostgreSQL whose queued writes arrive after its lease expired): such a
//! write commits exactly when its node has not been fenced, and once fenced a node's grants and
//! writes are refused for good. Then a race: many grants at once never over-grant.
//!
//! Needs `SMISTA_TEST_PG_URL` (set by `.ci/run`; required when `CI=true`).

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};
use smista_core::book::CostRecord;
use smista_core::{Channel, Outcome};
use smista_ledger::{Ledger, LedgerError, Target};

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
    /// Node's write arrives whatever its lease's state (it was queued while PostgreSQL was out of
    /// reach): within what it was granted, but perhaps after its lease was taken back.
    Late(usize, i64),
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
        2 => (0..3usize, 1..2_000i64).prop_map(|(n, a)| Step::Late(n, a)),
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
            let schema = smista_ledger::testing::schema_name(&format!("lease_{k}"));
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
                            match nodes[n].acquire_lease("ccm", "P0", CEILING, CEILING, want, now + TTL, now).await {
                                Ok(l) => {
                                    assert!(!fenced(&nodes[n]).await, "a fenced node was granted a lease");
                                    granted[n] = l.granted_cents;
                                }
                                Err(LedgerError::Fenced(_)) => {
                                    assert!(fenced(&nodes[n]).await, "refused as fenced, yet its epoch is current");
                                }
                                Err(e) => panic!("grant: {e}"),
                            }
                        }
                        Step::Late(n, a) if alive[n] => {
                            let a = a.min(granted[n] - spent[n]);
                            if a > 0 {
                                n_rec += 1;
                                let was_fenced = fenced(&nodes[n]).await;
                                match nodes[n].record(cost(n, n_rec, a)).await {
                                    Ok(new) => {
                                        assert!(new && !was_fenced, "a fenced node's late write was committed");
                                        spent[n] += a;
                                    }
                                    Err(LedgerError::Fenced(_)) => {
                                        assert!(was_fenced, "a late write refused though the node was not fenced")
                                    }
                                    Err(e) => panic!("record: {e}"),
                                }
                            }
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

/// Whether another node has fenced `l` (its epoch in the database has moved on).
async fn fenced(l: &Ledger) -> bool {
    let epochs = l.node_epochs().await.expect("epochs");
    epochs.iter().any(|(id, e)| id == l.node() && *e != l.epoch())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grants_never_over_grant() {
    let Some(url) = pg_url() else { return };
    let schema = smista_ledger::testing::schema_name("lease_race");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_was_taken_back_is_fenced_until_it_restarts() {
    let Some(url) = pg_url() else { return };
    let schema = smista_ledger::testing::schema_name("lease_fence");
    let target = Target::Postgres { url: url.clone(), schema: Some(schema.clone()) };
    let a = Ledger::connect_as(&target, "node-a").await.expect("connect a");
    let b = Ledger::connect_as(&target, "node-b").await.expect("connect b");
    let mut a_fenced = a.fenced();
    // node-a takes 3,000 and records 1,000 of it; then it is cut off: its lease expires at 2,000.
    assert_eq!(
        a.acquire_lease("ccm", "P0", CEILING, CEILING, 3_000, 2_000, 1_000).await.expect("grant").added_cents,
        3_000
    );
    assert!(a.record(cost(0, 1, 1_000)).await.expect("record"));
    b.acquire_lease("ccm", "P0", CEILING, CEILING, 1_000, 10_000, 1_000).await.expect("grant b");
    // Before expiry nothing is taken back and node-a is not fenced.
    assert_eq!(b.reclaim_expired_leases("ccm", "P0", 1_500).await.expect("reclaim"), 0);
    assert!(a.record(cost(0, 2, 500)).await.expect("a late write before the fence commits"));
    // After expiry node-b fences node-a and takes back what it did not record.
    assert_eq!(b.reclaim_expired_leases("ccm", "P0", 2_500).await.expect("reclaim"), 1_500);
    // node-a's queued write (within the lease it had) now arrives: refused, and so is all else.
    match a.record(cost(0, 3, 700)).await {
        Err(LedgerError::Fenced(n)) => assert_eq!(n, "node-a"),
        other => panic!("a fenced node's write must be refused, got {other:?}"),
    }
    assert!(*a_fenced.wait_for(|f| *f).await.expect("fence signal"));
    assert!(matches!(a.durable(&smista_ledger::Key::Contact("n0-c1".into())).await, Err(LedgerError::Fenced(_))));
    assert!(matches!(
        a.acquire_lease("ccm", "P0", CEILING, CEILING, 1_000, 20_000, 3_000).await,
        Err(LedgerError::Fenced(_))
    ));
    assert_eq!(b.totals("ccm", "P0").await.expect("totals").cost_cents, 1_500, "only what committed before the fence");
    let leases = b.leases("ccm", "P0").await.expect("leases");
    assert_eq!(leases.iter().find(|l| l.0 == "node-a").map(|l| l.1), Some(1_500), "cut back to what it recorded");
    // Fencing again finds nothing to do; node-b is never fenced by its own reclaim.
    assert_eq!(b.reclaim_expired_leases("ccm", "P0", 2_500).await.expect("reclaim"), 0);
    assert!(b.record(cost(1, 1, 100)).await.expect("node-b writes on"));
    a.close().await;
    // node-a restarts: a new epoch, grants and writes again.
    let a2 = Ledger::connect_as(&target, "node-a").await.expect("restart a");
    assert!(a2.epoch() > a.epoch());
    assert!(
        a2.acquire_lease("ccm", "P0", CEILING, CEILING, 1_000, 30_000, 4_000).await.expect("grant").added_cents > 0
    );
    assert!(a2.record(cost(0, 4, 300)).await.expect("record after restart"));
    a2.close().await;
    b.close().await;
    drop_schema(&url, &schema).await;
}
