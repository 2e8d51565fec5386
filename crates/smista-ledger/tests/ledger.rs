//! The SQLite ledger: what it acknowledged survives reopening, a repeated contact is not charged
//! twice, concurrent completions share commits, and totals and reports derive from the records.

use smista_core::book::CostRecord;
use smista_core::Channel;
use smista_ledger::{SqliteLedger, Totals};

fn record(contact: &str, queue: &str, group: &str, cost: i64) -> CostRecord {
    CostRecord {
        contact: contact.into(),
        budget: "ccm-2026".into(),
        period: "2026-11".into(),
        queue: queue.into(),
        group: group.into(),
        channel: Channel::Voice,
        accepted_unix_ms: 1_795_000_000_000,
        completed_unix_ms: 1_795_000_180_000,
        handle_ms: 180_000,
        cost_cents: cost,
        reserved_cents: 410,
    }
}

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("smista-ledger-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("ledger.db")
}

#[tokio::test]
async fn acknowledged_records_survive_reopening_and_are_never_charged_twice() {
    let path = temp_db("reopen");
    let l = SqliteLedger::open(&path).await.expect("open");
    assert!(l.record(record("c1", "pensions", "supplier-a", 266)).await.expect("record"));
    assert!(l.record(record("c2", "naspi", "supplier-b", 300)).await.expect("record"));
    assert!(!l.record(record("c1", "pensions", "supplier-a", 266)).await.expect("repeat"), "repeat is not new");
    l.close().await;

    let l = SqliteLedger::open(&path).await.expect("reopen");
    assert_eq!(l.totals("ccm-2026", "2026-11").await.expect("totals"), Totals { contacts: 2, cost_cents: 566 });
    assert!(!l.record(record("c2", "naspi", "supplier-b", 300)).await.expect("repeat after restart"));
    assert_eq!(l.totals("ccm-2026", "2026-11").await.expect("totals").cost_cents, 566);
    assert_eq!(l.totals("ccm-2026", "2026-12").await.expect("totals"), Totals::default());
    l.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_completions_share_commits_and_all_become_durable() {
    let path = temp_db("group");
    let l = std::sync::Arc::new(SqliteLedger::open(&path).await.expect("open"));
    let mut tasks = Vec::new();
    for t in 0..50 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                l.record(record(&format!("t{t}-c{i}"), "pensions", "supplier-a", 100)).await.expect("record");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let commits = l.commits();
    assert!(commits < 2_000, "2,000 concurrent completions took {commits} commits: no grouping");
    let l = std::sync::Arc::try_unwrap(l).expect("sole owner");
    l.close().await;
    let l = SqliteLedger::open(&path).await.expect("reopen");
    assert_eq!(l.totals("ccm-2026", "2026-11").await.expect("totals"), Totals { contacts: 2_000, cost_cents: 200_000 });
    l.close().await;
}

#[tokio::test]
async fn the_report_groups_spend_by_budget_period_queue_and_supplier() {
    let path = temp_db("report");
    let l = SqliteLedger::open(&path).await.expect("open");
    for (c, q, g, cost) in
        [("a", "pensions", "supplier-a", 100), ("b", "pensions", "supplier-a", 150), ("c", "naspi", "supplier-b", 70)]
    {
        l.record(record(c, q, g, cost)).await.expect("record");
    }
    let rows = l.report().await.expect("report");
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].queue.as_str(), rows[0].contacts, rows[0].cost_cents), ("naspi", 1, 70));
    assert_eq!(
        (rows[1].queue.as_str(), rows[1].operator_group.as_str(), rows[1].contacts, rows[1].cost_cents),
        ("pensions", "supplier-a", 2, 250)
    );
    assert_eq!(rows[1].handle_ms, 360_000);
    l.close().await;
}
