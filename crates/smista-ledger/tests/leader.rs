//! The active/standby lease on the real PostgreSQL: one holder at a time, a new epoch at every
//! change of holder, expiry on the database's clock, release for a planned handover, and a race
//! of many standbys for an expired lease won by exactly one.
//!
//! Needs `SMISTA_TEST_PG_URL` (set by `.ci/run`; required when `CI=true`).

use std::sync::Arc;
use std::time::Duration;

use smista_ledger::testing::drop_schema;
use smista_ledger::{Elector, Target};

fn pg_url() -> Option<String> {
    smista_ledger::testing::pg_url("the leadership tests")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_at_a_time_with_a_new_epoch_at_every_change() {
    let Some(url) = pg_url() else { return };
    let schema = smista_ledger::testing::schema_name("leader");
    let target = Target::Postgres { url: url.clone(), schema: Some(schema.clone()) };
    let a = Elector::connect(&target, "main", "node-a", "10.0.0.1:50051").await.expect("a");
    let b = Elector::connect(&target, "main", "node-b", "10.0.0.2:50051").await.expect("b");
    let other = Elector::connect(&target, "other", "node-b", "10.0.0.2:50051").await.expect("other group");
    assert_eq!(a.current().await.expect("read"), None);
    let e1 = a.try_acquire(5_000).await.expect("acquire").expect("a is active");
    assert_eq!(b.try_acquire(5_000).await.expect("acquire"), None, "a valid lease is not taken");
    assert!(other.try_acquire(5_000).await.expect("acquire").is_some(), "groups are independent");
    assert!(a.renew(e1, 5_000).await.expect("renew"));
    assert!(!b.renew(e1, 5_000).await.expect("renew"), "only the holder renews");
    let cur = b.current().await.expect("read").expect("held");
    assert_eq!((cur.node.as_str(), cur.epoch, cur.address.as_str(), cur.live), ("node-a", e1, "10.0.0.1:50051", true));

    // A planned handover: released, taken at once, with a new epoch; the old holder cannot renew.
    a.release(e1).await.expect("release");
    assert!(!b.current().await.expect("read").expect("row").live);
    let e2 = b.try_acquire(5_000).await.expect("acquire").expect("b takes over");
    assert!(e2 > e1);
    assert!(!a.renew(e1, 5_000).await.expect("renew"), "the old active learns it lost the lease");
    assert_eq!(a.try_acquire(5_000).await.expect("acquire"), None);

    // Expiry: b stops renewing (it died); after the time to live a takes over.
    assert!(b.renew(e2, 150).await.expect("short renew"));
    assert_eq!(a.try_acquire(5_000).await.expect("acquire"), None, "not before expiry");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.renew(e2, 5_000).await.expect("renew"), "an expired lease is not renewed: it may be taken");
    let e3 = a.try_acquire(5_000).await.expect("acquire").expect("a takes over after expiry");
    assert!(e3 > e2);
    for e in [&a, &b, &other] {
        e.close().await;
    }
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_standbys_racing_for_the_lease_elect_exactly_one() {
    let Some(url) = pg_url() else { return };
    let schema = smista_ledger::testing::schema_name("leader_race");
    let target = Target::Postgres { url: url.clone(), schema: Some(schema.clone()) };
    // Connected before the race, and a lease long enough that it cannot expire while the others
    // are still trying (a 100 ms lease did on a loaded machine: five winners in one round, each
    // after the previous one's lease had lapsed).
    let mut electors = Vec::new();
    for n in 0..8 {
        electors.push(Arc::new(Elector::connect(&target, "main", &format!("node-{n}"), "x:1").await.expect("connect")));
    }
    for round in 0..5 {
        let barrier = Arc::new(tokio::sync::Barrier::new(electors.len()));
        let mut tasks = Vec::new();
        for e in &electors {
            let (e, barrier) = (e.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                e.try_acquire(1_000).await.expect("acquire")
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.expect("task").is_some());
        }
        assert_eq!(winners, 1, "round {round}: exactly one standby wins an expired lease");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    for e in electors {
        e.close().await;
    }
    drop_schema(&url, &schema).await;
}
