//! The ledger's conformance suite, run against both backends: what it acknowledged survives
//! reopening, a repeated settlement is not charged twice while every life of a re-used contact id
//! is kept, concurrent completions share commits, and totals, recovery and reports derive from the
//! records.
//!
//! SQLite runs always. PostgreSQL runs when `SMISTA_TEST_PG_URL` is set (`.ci/run` sets it to the
//! machine's server), each test in a schema of its own; with the variable set, an unreachable
//! server fails the tests, it does not skip them.

use smista_core::book::{AuditRecord, CostRecord, HoldRecord, SettlementSink};
use smista_core::{Channel, Outcome};
use smista_ledger::{ContactEnd, Detail, HistoryCursor, Key, Ledger, OfferOutcome, OfferRecord, Target, Totals};

/// Where one test's ledger lives.
struct Backend {
    target: Target,
}

impl Backend {
    fn sqlite(name: &str) -> Backend {
        Backend { target: Target::Sqlite { path: temp_db(name), create: true } }
    }

    fn postgres(name: &str) -> Option<Backend> {
        let url = smista_ledger::testing::pg_url(name)?;
        let schema = smista_ledger::testing::schema_name(name);
        Some(Backend { target: Target::Postgres { url, schema: Some(schema) } })
    }

    async fn open(&self) -> Ledger {
        Ledger::connect(&self.target)
            .await
            .expect("the ledger opens (with SMISTA_TEST_PG_URL set, PostgreSQL must be reachable)")
    }

    /// Drops a PostgreSQL test schema.
    async fn cleanup(&self) {
        if let Target::Postgres { url, schema: Some(s) } = &self.target {
            smista_ledger::testing::drop_schema(url, s).await;
        }
    }
}

/// Runs each named test body against SQLite and against PostgreSQL.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::sqlite(stringify!($name))).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(b) = super::Backend::postgres(stringify!($name)) else { return };
                    let target = b.target.clone();
                    super::$name(b).await;
                    super::Backend { target }.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    acknowledged_records_survive_reopening_and_are_never_charged_twice,
    every_life_of_a_reused_contact_id_is_kept_apart,
    concurrent_completions_share_commits_and_all_become_durable,
    the_report_groups_spend_by_budget_period_queue_and_supplier,
    recovery_reads_back_holds_totals_and_amendments_as_the_sink_left_them,
    how_a_contact_ended_survives_reopening_with_its_detail,
    the_history_reads_by_arrival_in_pages_and_purges_by_end,
    a_budgeted_contacts_detail_rides_in_its_cost_record,
    staffed_time_adds_up_per_quarter_and_group_and_is_purged,
    appointments_and_availability_survive_reopening,
    queue_changes_and_booked_callbacks_survive_reopening,
    roster_rows_are_versioned_audited_and_survive_reopening,
    concurrent_roster_changes_never_overwrite_each_other_unseen,
    operator_state_changes_are_durable_carried_into_a_period_and_purged,
    per_operator_reads_are_audited_and_listed_in_pages,
);

fn record(contact: &str, queue: &str, group: &str, cost: i64) -> CostRecord {
    CostRecord {
        contact: contact.into(),
        budget: "ccm-2026".into(),
        period: "2026-11".into(),
        queue: queue.into(),
        group: group.into(),
        operator: "op-1".into(),
        channel: Channel::Voice,
        accepted_unix_ms: 1_795_000_000_000,
        completed_unix_ms: 1_795_000_180_000,
        handle_ms: 180_000,
        cost_cents: cost,
        reserved_cents: 410,
        outcome: Outcome::Completed,
    }
}

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("smista-ledger-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("ledger.db")
}

async fn acknowledged_records_survive_reopening_and_are_never_charged_twice(b: Backend) {
    let l = b.open().await;
    assert!(l.record(record("c1", "pensions", "supplier-a", 266)).await.expect("record"));
    let hung_up = CostRecord { outcome: Outcome::CancelledInService, ..record("c2", "naspi", "supplier-b", 300) };
    assert!(l.record(hung_up.clone()).await.expect("record"));
    assert!(!l.record(record("c1", "pensions", "supplier-a", 266)).await.expect("repeat"), "repeat is not new");
    l.close().await;

    let l = b.open().await;
    assert_eq!(l.settled("c2").await.expect("read"), Some(hung_up), "the record reads back whole, outcome too");
    assert_eq!(l.totals("ccm-2026", "2026-11").await.expect("totals"), Totals { contacts: 2, cost_cents: 566 });
    assert!(!l.record(record("c2", "naspi", "supplier-b", 300)).await.expect("repeat after restart"));
    assert_eq!(l.totals("ccm-2026", "2026-11").await.expect("totals").cost_cents, 566);
    assert_eq!(l.totals("ccm-2026", "2026-12").await.expect("totals"), Totals::default());
    l.close().await;
}

async fn every_life_of_a_reused_contact_id_is_kept_apart(b: Backend) {
    let l = b.open().await;
    let first = record("c1", "pensions", "supplier-a", 266);
    let second = CostRecord {
        accepted_unix_ms: first.accepted_unix_ms + 86_400_000,
        ..record("c1", "pensions", "supplier-a", 80)
    };
    assert!(l.record(first.clone()).await.expect("record"));
    assert!(l.record(second.clone()).await.expect("a second life of the same id is recorded"));
    assert!(!l.record(second.clone()).await.expect("replay"), "a replay of either life charges nothing");
    assert!(!l.record(first).await.expect("replay"));
    assert_eq!(l.totals("ccm-2026", "2026-11").await.expect("totals"), Totals { contacts: 2, cost_cents: 346 });
    assert_eq!(l.settled("c1").await.expect("read"), Some(second), "the latest life answers a replayed completion");
    let r = l.recovery().await.expect("recovery");
    assert_eq!(r.periods[0].settled_cents, 346, "a restart rebuilds both lives");
    l.close().await;
}

async fn concurrent_completions_share_commits_and_all_become_durable(b: Backend) {
    let l = std::sync::Arc::new(b.open().await);
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
    l.close().await;
    let l = b.open().await;
    assert_eq!(l.totals("ccm-2026", "2026-11").await.expect("totals"), Totals { contacts: 2_000, cost_cents: 200_000 });
    l.close().await;
}

async fn the_report_groups_spend_by_budget_period_queue_and_supplier(b: Backend) {
    let l = b.open().await;
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

fn hold(contact: &str) -> HoldRecord {
    HoldRecord {
        contact: contact.into(),
        budget: "ccm-2026".into(),
        period: "2026-11".into(),
        amount_cents: 410,
        queue: "pensions".into(),
        group: "supplier-a".into(),
        operator: "op-1".into(),
        channel: Channel::Voice,
        accepted_unix_ms: 1_795_000_000_000,
        arrived_unix_ms: 1_794_999_940_000,
    }
}

async fn recovery_reads_back_holds_totals_and_amendments_as_the_sink_left_them(b: Backend) {
    let l = b.open().await;
    // Three contacts go into service; one completes (with an overrun), one is taken away.
    for c in ["c1", "c2", "c3"] {
        SettlementSink::hold(&l, &hold(c));
    }
    let mut done = record("c1", "pensions", "supplier-a", 500);
    done.reserved_cents = 410;
    SettlementSink::record(&l, &done);
    SettlementSink::release(&l, "ccm-2026", "c2");
    let amendment = |field: &str, new: &str| AuditRecord {
        at_unix_ms: 1,
        budget: "ccm-2026".into(),
        actor: "ops".into(),
        note: "M. Rossi, ufficio contratti".into(),
        field: field.into(),
        old_value: "x".into(),
        new_value: new.into(),
        reason: "amendment 3".into(),
    };
    SettlementSink::amended(&l, &amendment("ceiling_cents", "900"));
    SettlementSink::amended(&l, &amendment("ceiling_cents", "800"));
    // Waiting on the last write of each key waits for everything before it.
    l.durable(&Key::Contact("c1".into())).await.expect("durable");
    l.durable(&Key::Budget("ccm-2026".into())).await.expect("durable");
    assert_eq!(l.pending(), 0, "committed writes leave no waiter behind");
    l.close().await;

    let l = b.open().await;
    let r = l.recovery().await.expect("recovery");
    assert_eq!(r.holds, vec![hold("c3")], "settled and released contacts hold nothing");
    assert_eq!(r.periods.len(), 1);
    assert_eq!((r.periods[0].settled_cents, r.periods[0].overrun_cents), (500, 90));
    let news: Vec<&str> = r.amendments.iter().map(|a| a.new_value.as_str()).collect();
    assert_eq!(news, ["900", "800"], "amendments come back in the order they were made");
    assert_eq!((r.amendments[0].actor.as_str(), r.amendments[0].note.as_str()), ("ops", "M. Rossi, ufficio contratti"));
    let settled = l.settled("c1").await.expect("lookup").expect("c1 settled");
    assert_eq!((settled.cost_cents, settled.operator.as_str()), (500, "op-1"));
    assert!(l.settled("c3").await.expect("lookup").is_none());
    // Amendment numbering continues after a reopen.
    SettlementSink::amended(&l, &amendment("ceiling_cents", "700"));
    l.durable(&Key::Budget("ccm-2026".into())).await.expect("durable");
    let news: Vec<String> = l.recovery().await.expect("recovery").amendments.into_iter().map(|a| a.new_value).collect();
    assert_eq!(news, ["900", "800", "700"]);
    l.close().await;
}

#[tokio::test]
async fn a_report_never_creates_a_sqlite_ledger() {
    let path = temp_db("missing");
    assert!(matches!(
        Ledger::open_existing(&path.with_extension("nope")).await,
        Err(smista_ledger::LedgerError::Missing(_))
    ));
}

/// SQLite only: ledger files written by earlier versions (PostgreSQL ledgers start at this one).
#[tokio::test]
async fn a_ledger_written_before_the_outcome_and_note_columns_opens_and_keeps_its_records() {
    let path = temp_db("migrate");
    {
        // The cost_records table as smista wrote it before outcomes were recorded.
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.expect("create");
        sqlx::raw_sql(
            "CREATE TABLE cost_records (budget_id TEXT NOT NULL, contact_id TEXT NOT NULL, period TEXT NOT NULL,
                queue TEXT NOT NULL, operator_group TEXT NOT NULL, operator_id TEXT NOT NULL, channel TEXT NOT NULL,
                accepted_unix_ms BIGINT NOT NULL, completed_unix_ms BIGINT NOT NULL, handle_ms BIGINT NOT NULL,
                cost_cents BIGINT NOT NULL, reserved_cents BIGINT NOT NULL, PRIMARY KEY (budget_id, contact_id));
             INSERT INTO cost_records VALUES ('ccm-2026', 'old', '2026-11', 'pensions', 'supplier-a', 'op-1',
                'voice', 1795000000000, 1795000180000, 180000, 266, 410);
             CREATE TABLE amendments (seq BIGINT NOT NULL PRIMARY KEY, at_unix_ms BIGINT NOT NULL,
                budget_id TEXT NOT NULL, actor TEXT NOT NULL, field TEXT NOT NULL, old_value TEXT NOT NULL,
                new_value TEXT NOT NULL, reason TEXT NOT NULL);
             INSERT INTO amendments VALUES (1, 1795000000000, 'ccm-2026', 'typed by a client', 'ceiling_cents',
                '100', '200', 'amendment 1');
             CREATE TABLE contact_ends (contact_id TEXT NOT NULL, ended_unix_ms BIGINT NOT NULL, queue TEXT NOT NULL,
                channel TEXT NOT NULL, outcome TEXT NOT NULL, waited_ms BIGINT NOT NULL, handle_ms BIGINT NOT NULL,
                wrap_up_ms BIGINT NOT NULL, operator_id TEXT NOT NULL, divert_reason TEXT NOT NULL,
                fallback TEXT NOT NULL, node_id TEXT NOT NULL DEFAULT '', PRIMARY KEY (contact_id, ended_unix_ms));
             INSERT INTO contact_ends VALUES ('gone', 1795000001000, 'naspi', 'voice', 'abandoned', 4000, 0, 0, '',
                '', '', '');",
        )
        .execute(&pool)
        .await
        .expect("old schema");
        pool.close().await;
    }
    let l = Ledger::open(&path).await.expect("open migrates");
    // An end record from before the history's detail columns: kept, its detail unknown.
    let gone = l.end_of("gone").await.expect("read").expect("the old end record is kept");
    assert_eq!((gone.outcome, gone.detail), (Outcome::Abandoned, Detail::default()));
    let old = l.settled("old").await.expect("read").expect("the old record is kept");
    assert_eq!((old.cost_cents, old.outcome), (266, Outcome::Completed));
    let a = &l.recovery().await.expect("recovery").amendments[0];
    assert_eq!((a.actor.as_str(), a.note.as_str(), a.new_value.as_str()), ("typed by a client", "", "200"));
    let hung_up = CostRecord { outcome: Outcome::CancelledInService, ..record("new", "pensions", "supplier-a", 100) };
    assert!(l.record(hung_up.clone()).await.expect("record"));
    assert_eq!(l.totals("ccm-2026", "2026-11").await.expect("totals"), Totals { contacts: 2, cost_cents: 366 });
    // The old key was (budget, contact): a second life of "old" is now kept apart.
    let again = CostRecord {
        contact: "old".into(),
        accepted_unix_ms: 1_795_100_000_000,
        ..record("old", "pensions", "supplier-a", 50)
    };
    assert!(l.record(again).await.expect("record"));
    l.close().await;
    let l = Ledger::open(&path).await.expect("reopening a migrated ledger changes nothing");
    assert_eq!(l.settled("new").await.expect("read"), Some(hung_up));
    assert_eq!(l.totals("ccm-2026", "2026-11").await.expect("totals"), Totals { contacts: 3, cost_cents: 416 });
    l.close().await;
}

fn end(contact: &str, outcome: Outcome, at: i64) -> ContactEnd {
    ContactEnd {
        contact: contact.into(),
        ended_unix_ms: at,
        queue: "naspi".into(),
        channel: Channel::Voice,
        outcome,
        waited_ms: 4_000,
        handle_ms: if outcome == Outcome::Completed { 90_000 } else { 0 },
        wrap_up_ms: if outcome == Outcome::Completed { 5_000 } else { 0 },
        operator: if outcome == Outcome::Completed { "staff-1".into() } else { String::new() },
        diverted: (outcome == Outcome::Diverted)
            .then_some((smista_core::DivertReason::NoOperators, smista_core::Fallback::CallbackBooking)),
        detail: Detail {
            arrived_unix_ms: at - 100_000,
            received_unix_ms: at - 99_000,
            answered_unix_ms: if outcome == Outcome::Completed { at - 95_000 } else { 0 },
            first_queue: "general".into(),
            overflows: vec!["naspi".into()],
            segment: "vulnerable".into(),
            offers: vec![
                OfferRecord { operator: "staff,2".into(), group: "internal".into(), outcome: OfferOutcome::TimedOut },
                OfferRecord { operator: "staff-1".into(), group: "internal".into(), outcome: OfferOutcome::Accepted },
            ],
            group: "internal".into(),
            supplier: String::new(),
            budget: String::new(),
            cost_cents: 0,
            caller_key: String::new(),
            transfers: vec![("naspi".into(), "consultancy".into()), ("consultancy".into(), String::new())],
            consultation_of: String::new(),
        },
    }
}

async fn how_a_contact_ended_survives_reopening_with_its_detail(b: Backend) {
    let l = b.open().await;
    l.ended(end("gone", Outcome::Abandoned, 1_000_000));
    l.ended(end("staff", Outcome::Completed, 2_000_000));
    // A budgeted completion: its cost record and its end queued together, as the server does;
    // the end record names the budget and the cost too.
    SettlementSink::record(&l, &record("paid", "naspi", "supplier-a", 266));
    let mut paid = end("paid", Outcome::Completed, 3_000_000);
    paid.detail.budget = "ccm-2026".into();
    paid.detail.cost_cents = 266;
    paid.detail.supplier = "acme".into();
    l.ended(paid.clone());
    for c in ["gone", "staff", "paid"] {
        l.durable(&Key::Contact(c.into())).await.expect("durable");
    }
    // A second life of "gone", later.
    l.ended(end("gone", Outcome::Diverted, 9_000_000));
    l.durable(&Key::Contact("gone".into())).await.expect("durable");
    l.close().await;

    let l = b.open().await;
    assert_eq!(l.end_of("gone").await.expect("read").map(|e| e.outcome), Some(Outcome::Diverted), "latest life");
    assert_eq!(l.end_of("staff").await.expect("read"), Some(end("staff", Outcome::Completed, 2_000_000)), "whole");
    assert_eq!(l.end_of("never").await.expect("read"), None);
    assert!(l.settled("paid").await.expect("read").is_some());
    assert_eq!(l.end_of("paid").await.expect("read"), Some(paid), "every life has its detail record");
    l.close().await;
}

async fn the_history_reads_by_arrival_in_pages_and_purges_by_end(b: Backend) {
    let l = b.open().await;
    // 25 contacts arriving a second apart (ended 100 s after arrival), and a second life of c3.
    for i in 0..25i64 {
        l.ended(end(&format!("c{i:02}"), Outcome::Completed, 1_100_000 + i * 1_000));
    }
    let mut again = end("c03", Outcome::Abandoned, 1_150_000);
    again.detail.arrived_unix_ms = 1_003_000;
    l.ended(again);
    for i in 0..25 {
        l.durable(&Key::Contact(format!("c{i:02}"))).await.expect("durable");
    }
    // Arrivals in [1_005_000, 1_020_000): c05..c19, read 4 at a time.
    let (mut seen, mut cursor) = (Vec::new(), None);
    loop {
        let page = l.history_page(1_005_000, 1_020_000, cursor.as_ref(), 4).await.expect("page");
        let Some(last) = page.last() else { break };
        cursor = Some(HistoryCursor {
            arrived_unix_ms: last.detail.arrived_unix_ms,
            contact: last.contact.clone(),
            ended_unix_ms: last.ended_unix_ms,
        });
        seen.extend(page.iter().map(|e| e.contact.clone()));
    }
    let want: Vec<String> = (5..20).map(|i| format!("c{i:02}")).collect();
    assert_eq!(seen, want, "each record once, in arrival order");
    // Both lives of c03 arrived at 1_003_000.
    let c03 = l.history_page(1_003_000, 1_003_001, None, 10).await.expect("page");
    assert_eq!(c03.iter().map(|e| e.outcome).collect::<Vec<_>>(), vec![Outcome::Completed, Outcome::Abandoned]);
    // A record whose arrival is unknown (0, as older versions wrote for contacts in service
    // across a restart) that ended late: the retention counts from its end, so it stays.
    let mut unknown = end("u01", Outcome::Completed, 1_200_000);
    unknown.detail.arrived_unix_ms = 0;
    l.ended(unknown);
    l.durable(&Key::Contact("u01".into())).await.expect("durable");
    // Purge what ended before 1_110_000, in batches of 3.
    let mut purged = 0;
    loop {
        let n = l.purge_history(1_110_000, 3).await.expect("purge");
        purged += n;
        if n < 3 {
            break;
        }
    }
    assert_eq!(purged, 10, "c00..c09 (the second life of c03 ended later)");
    let left = l.history_page(0, i64::MAX, None, 100).await.expect("page");
    assert_eq!(left.len(), 17);
    assert_eq!(left[0].contact, "u01", "kept although its arrival is 0");
    assert_eq!((left[1].contact.as_str(), left[1].outcome), ("c03", Outcome::Abandoned));
    assert_eq!(left[2].contact, "c10");
    l.close().await;
}

async fn a_budgeted_contacts_detail_rides_in_its_cost_record(b: Backend) {
    let l = b.open().await;
    // As the server does: the cost record from the book, then the contact's end, same instant.
    let r = record("merged", "naspi", "supplier-a", 266);
    let mut e = end("merged", Outcome::Completed, r.completed_unix_ms);
    e.queue = r.queue.clone();
    e.handle_ms = r.handle_ms;
    e.operator = r.operator.clone();
    e.detail.group = r.group.clone();
    e.detail.supplier = "acme".into();
    e.detail.budget = r.budget.clone();
    e.detail.cost_cents = r.cost_cents;
    for i in 0..20 {
        // Twenty more, so that some ends are committed with their records and some may not be.
        let mut ri = record(&format!("m{i}"), "naspi", "supplier-a", 266);
        ri.completed_unix_ms += i;
        let mut ei = e.clone();
        ei.contact = ri.contact.clone();
        ei.ended_unix_ms = ri.completed_unix_ms;
        SettlementSink::record(&l, &ri);
        l.ended(ei);
    }
    SettlementSink::record(&l, &r);
    l.ended(e.clone());
    l.durable(&Key::Contact("merged".into())).await.expect("durable");
    for i in 0..20 {
        l.durable(&Key::Contact(format!("m{i}"))).await.expect("durable");
    }
    l.close().await;

    let l = b.open().await;
    assert_eq!(l.end_of("merged").await.expect("read"), Some(e.clone()), "its detail, wherever it is kept");
    assert!(l.settled("merged").await.expect("read").is_some());
    // Exactly one detail record per contact in the history, merged or not.
    let all = l.history_page(e.detail.arrived_unix_ms, e.detail.arrived_unix_ms + 1, None, 100).await.expect("page");
    let mut ids: Vec<String> = all.iter().map(|x| x.contact.clone()).collect();
    ids.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("m{i}")).chain(["merged".to_owned()]).collect();
    want.sort();
    assert_eq!(ids, want);
    assert!(all
        .iter()
        .all(|x| x.detail.cost_cents == 266 && x.detail.budget == "ccm-2026" && x.detail.offers.len() == 2));
    assert_eq!(l.totals("ccm-2026", "2026-11").await.expect("totals"), Totals { contacts: 21, cost_cents: 21 * 266 });
    l.close().await;
}

async fn staffed_time_adds_up_per_quarter_and_group_and_is_purged(b: Backend) {
    let l = b.open().await;
    let q: i64 = 1_800_000_000_000; // a quarter hour's start
    l.add_staffing(&[(q, "internal".into(), 600_000, 60_000, 300_000), (q, "supplier-a".into(), 900_000, 0, 0)])
        .await
        .expect("add");
    // Added to, not replaced.
    l.add_staffing(&[(q, "internal".into(), 300_000, 0, 200_000), (q + 900_000, "internal".into(), 1_000, 0, 0)])
        .await
        .expect("add");
    let rows = l.staffing(q, q + 1_800_000).await.expect("read");
    assert_eq!(
        rows,
        vec![
            (q, "internal".to_owned(), 900_000, 60_000, 500_000),
            (q, "supplier-a".to_owned(), 900_000, 0, 0),
            (q + 900_000, "internal".to_owned(), 1_000, 0, 0),
        ]
    );
    assert_eq!(l.staffing(q + 900_000, q + 1_800_000).await.expect("read").len(), 1);
    assert_eq!(l.purge_staffing(q + 900_000).await.expect("purge"), 2);
    assert_eq!(l.staffing(0, i64::MAX).await.expect("read").len(), 1);
    l.close().await;
}

async fn appointments_and_availability_survive_reopening(b: Backend) {
    use smista_core::appointments::{Appointment, AppointmentState, Availability};
    let l = b.open().await;
    let block = Availability {
        operator: "op-anna".into(),
        queue: "consultancy".into(),
        start_unix_ms: 1_800_000_000_000,
        end_unix_ms: 1_800_003_600_000,
        display_name: "Dott.ssa Anna".into(),
    };
    l.put_availability(&block).await.expect("availability");
    let mut a = Appointment {
        id: "appt-1".into(),
        queue: "consultancy".into(),
        operator: "op-anna".into(),
        display_name: "Dott.ssa Anna".into(),
        start_unix_ms: 1_800_000_000_000,
        end_unix_ms: 1_800_001_800_000,
        channel: smista_core::Channel::Video,
        segment: smista_core::Segment::Intermediary,
        recording: false,
        state: AppointmentState::Booked,
        for_contact: "call-7".into(),
    };
    l.put_appointment(&a, 1).await.expect("appointment");
    a.start_unix_ms += 1_800_000;
    a.end_unix_ms += 1_800_000;
    l.put_appointment(&a, 2).await.expect("moved");
    l.close().await;
    let l = b.open().await;
    assert_eq!(l.availability(0).await.expect("read"), vec![block.clone()]);
    assert_eq!(l.appointments(0).await.expect("read"), vec![a.clone()], "one row per appointment, as last written");
    // A booked appointment is read back even when it ended long ago (it never started).
    assert_eq!(l.appointments(i64::MAX).await.expect("read").len(), 1);
    a.state = AppointmentState::Cancelled;
    l.put_appointment(&a, 3).await.expect("cancelled");
    assert!(l.appointments(i64::MAX).await.expect("read").is_empty());
    l.delete_availability("op-anna", block.start_unix_ms).await.expect("delete");
    assert!(l.availability(0).await.expect("read").is_empty());
    l.close().await;
}

async fn queue_changes_and_booked_callbacks_survive_reopening(b: Backend) {
    let l = b.open().await;
    let change = |old: &'static str, settings: &'static str, at, actor: &'static str, change: &'static str| {
        smista_ledger::QueueChange { queue: "pensions", old_settings: old, settings, at_unix_ms: at, actor, change }
    };
    l.record_queue_change(&change("", "priority = 3\n", 10, "admin-1", "priority = 3\n")).await.expect("change");
    let closing = change("priority = 3\n", "open = false\npriority = 3\n", 20, "admin-2", "open = false\n");
    l.record_queue_change(&closing).await.expect("change");
    // The same change at the same instant is recorded once.
    l.record_queue_change(&closing).await.expect("again");
    let cb = smista_ledger::ScheduledCallback {
        contact_id: "c2".into(),
        queue: "pensions".into(),
        segment: smista_core::Segment::Vulnerable,
        due_unix_ms: 1_000,
        created_unix_ms: 500,
        offered: false,
        tries: 0,
    };
    l.put_scheduled_callback(&cb).await.expect("book");
    l.close().await;
    let l = b.open().await;
    assert_eq!(
        l.queue_settings().await.expect("read"),
        vec![("pensions".to_owned(), "open = false\npriority = 3\n".to_owned())]
    );
    let audit = l.queue_audit("").await.expect("audit");
    assert_eq!(audit.len(), 2);
    assert_eq!((audit[1].at_unix_ms, audit[1].actor.as_str()), (20, "admin-2"));
    // Each record holds the queue's settings before and after the change.
    assert_eq!((audit[0].old_settings.as_str(), audit[0].new_settings.as_str()), ("", "priority = 3\n"));
    assert_eq!(
        (audit[1].old_settings.as_str(), audit[1].new_settings.as_str()),
        ("priority = 3\n", "open = false\npriority = 3\n")
    );
    assert_eq!(l.queue_audit("naspi").await.expect("audit").len(), 0);
    assert_eq!(l.scheduled_callbacks().await.expect("read"), vec![cb.clone()]);
    l.put_scheduled_callback(&smista_ledger::ScheduledCallback { offered: true, tries: 1, ..cb })
        .await
        .expect("offered");
    assert!(l.scheduled_callbacks().await.expect("read").is_empty());
    l.close().await;
}

fn roster_row(id: &str, group: &str, version: i64, retired: bool) -> smista_ledger::RosterRow {
    smista_ledger::RosterRow {
        operator_id: id.into(),
        display_name: format!("Operator {id}"),
        group: group.into(),
        skills: "pensions:7;naspi:5".into(),
        channels: "voice:1;chat:3".into(),
        retired,
        source: "admin".into(),
        version,
        updated_unix_ms: 1_000 * version,
    }
}

fn roster_audit(id: &str, version: i64, change: &str, old: &str, new: &str) -> smista_ledger::RosterAudit {
    smista_ledger::RosterAudit {
        operator_id: id.into(),
        version,
        at_unix_ms: 1_000 * version,
        actor: "admin-console".into(),
        change: change.into(),
        old_value: old.into(),
        new_value: new.into(),
    }
}

async fn roster_rows_are_versioned_audited_and_survive_reopening(b: Backend) {
    use smista_ledger::RosterWrite;
    let l = b.open().await;
    let v1 = roster_row("op-201", "supplier-a", 1, false);
    let created = roster_audit("op-201", 1, "created", "", "group = \"supplier-a\"");
    assert_eq!(l.put_roster(&v1, None, &created).await.expect("create"), RosterWrite::Written);
    // Created twice: the second is a conflict and writes nothing, audit included.
    assert_eq!(l.put_roster(&v1, None, &created).await.expect("again"), RosterWrite::Conflict);
    let v2 = roster_row("op-201", "supplier-b", 2, false);
    let moved = roster_audit("op-201", 2, "updated", "group = \"supplier-a\"", "group = \"supplier-b\"");
    assert_eq!(l.put_roster(&v2, Some(1), &moved).await.expect("update"), RosterWrite::Written);
    // A change naming a version that is no longer the row's is refused.
    let stale = roster_row("op-201", "internal", 2, false);
    assert_eq!(
        l.put_roster(&stale, Some(1), &roster_audit("op-201", 2, "updated", "", "")).await.expect("stale"),
        RosterWrite::Conflict
    );
    let v3 = roster_row("op-201", "supplier-b", 3, true);
    let retired = roster_audit("op-201", 3, "retired", "retired = false", "retired = true");
    assert_eq!(l.put_roster(&v3, Some(2), &retired).await.expect("retire"), RosterWrite::Written);
    l.put_roster(&roster_row("op-101", "internal", 1, false), None, &roster_audit("op-101", 1, "created", "", "x"))
        .await
        .expect("another");
    l.close().await;

    let l = b.open().await;
    let rows = l.roster().await.expect("read");
    assert_eq!(rows, vec![roster_row("op-101", "internal", 1, false), v3.clone()], "by id, the latest version");
    assert_eq!(l.roster_entry("op-201").await.expect("one"), Some(v3));
    assert_eq!(l.roster_entry("op-999").await.expect("none"), None);
    let trail = l.roster_audit("op-201", 0, 100).await.expect("audit");
    assert_eq!(trail, vec![created, moved.clone(), retired], "every change once, old and new values kept");
    assert_eq!(l.roster_audit("", 0, 100).await.expect("all").len(), 4);
    assert_eq!(l.roster_audit("op-201", 1, 1).await.expect("page"), vec![moved], "paged by position");
    l.close().await;
}

async fn concurrent_roster_changes_never_overwrite_each_other_unseen(b: Backend) {
    // Two openings of one ledger (two nodes sharing PostgreSQL, or two pools on one SQLite file).
    let (a, z) = (b.open().await, b.open().await);
    a.put_roster(&roster_row("op-7", "internal", 1, false), None, &roster_audit("op-7", 1, "created", "", "internal"))
        .await
        .expect("create");
    // Both change version 1 at once, many times over: each change that is written was made on the
    // version it replaced; the loser re-reads and tries again on the newer one.
    async fn edit(l: &Ledger, group: &'static str) {
        use smista_ledger::RosterWrite;
        let mut written = 0;
        while written < 10 {
            let cur = l.roster_entry("op-7").await.expect("read").expect("row");
            let next = smista_ledger::RosterRow { group: group.into(), version: cur.version + 1, ..cur.clone() };
            let audit = roster_audit("op-7", next.version, "updated", &cur.group, group);
            match l.put_roster(&next, Some(cur.version), &audit).await {
                Ok(RosterWrite::Written) => written += 1,
                Ok(RosterWrite::Conflict) => {}
                // SQLite: two pools on one file may find it busy; try again.
                Err(e) => assert!(e.to_string().contains("locked") || e.to_string().contains("busy"), "{e}"),
            }
        }
    }
    tokio::join!(edit(&a, "supplier-a"), edit(&z, "supplier-b"));
    let (ra, rz) = (a.roster().await.expect("a"), z.roster().await.expect("z"));
    assert_eq!(ra, rz, "both see one row");
    assert_eq!(ra[0].version, 21, "every change written on top of the one before");
    let trail = a.roster_audit("op-7", 0, 1000).await.expect("audit");
    assert_eq!(trail.len(), 21);
    for w in trail.windows(2) {
        assert_eq!(w[1].old_value, w[0].new_value, "each change's old value is what the one before left");
    }
    a.close().await;
    z.close().await;
}

fn change(op: &str, at: i64, fact: smista_core::accounting::Fact) -> smista_core::accounting::Change {
    smista_core::accounting::Change { operator: op.into(), group: "supplier-a".into(), at_unix_ms: at, fact }
}

async fn operator_state_changes_are_durable_carried_into_a_period_and_purged(b: Backend) {
    use smista_core::accounting::{Activity, Fact};
    let t0: i64 = 1_800_000_000_000;
    let l = b.open().await;
    l.operator_changed(change("op-2", t0 - 200_000, Fact::State(Activity::Available)));
    l.operator_changed(change("op-2", t0 - 100_000, Fact::State(Activity::Paused("break".into()))));
    l.operator_changed(change("op-2", t0 - 90_000, Fact::Declined));
    l.operator_changed(change("op-1", t0, Fact::State(Activity::Available)));
    l.operator_changed(change("op-1", t0 + 10, Fact::State(Activity::OnContact(Channel::Voice))));
    l.operator_changed(change("op-1", t0 + 20, Fact::Handled { channel: Channel::Voice, handle_ms: 10 }));
    l.durable(&Key::Operator("op-1".into())).await.expect("durable");
    l.alive(t0 + 30).await.expect("a sign of life");
    // A change acknowledged after the last sign of life (the node then dies): durable, so it is
    // a sign of life too (issue 28, found by the adversary run: it fell after the life's end).
    l.operator_changed(change("op-1", t0 + 35, Fact::State(Activity::Paused("lunch".into()))));
    l.durable(&Key::Operator("op-1".into())).await.expect("durable");
    l.close().await;

    // A new life of the node: the first life's states last until its last sign of life or
    // its last change, whichever is later.
    let l = b.open().await;
    let got = l.operator_history(t0 - 50_000, t0 + 1_000, t0 - 1_000_000).await.expect("read");
    let facts: Vec<(&str, i64, &Fact, i64)> =
        got.iter().map(|r| (r.change.operator.as_str(), r.change.at_unix_ms, &r.change.fact, r.alive_until)).collect();
    assert_eq!(
        facts,
        vec![
            ("op-1", t0, &Fact::State(Activity::Available), t0 + 35),
            ("op-1", t0 + 10, &Fact::State(Activity::OnContact(Channel::Voice)), t0 + 35),
            ("op-1", t0 + 20, &Fact::Handled { channel: Channel::Voice, handle_ms: 10 }, t0 + 35),
            ("op-1", t0 + 35, &Fact::State(Activity::Paused("lunch".into())), t0 + 35),
            // Before the period: only the state op-2 was in at its start (not a count).
            ("op-2", t0 - 100_000, &Fact::State(Activity::Paused("break".into())), t0 + 35),
        ]
    );
    assert!(got.iter().all(|r| r.change.group == "supplier-a"));
    // This life's own changes run on (it still runs).
    l.operator_changed(change("op-1", t0 + 40, Fact::State(Activity::LoggedOut)));
    l.durable(&Key::Operator("op-1".into())).await.expect("durable");
    let got = l.operator_history(t0 + 36, t0 + 1_000, t0 - 1_000_000).await.expect("read");
    let op1: Vec<(i64, i64)> =
        got.iter().filter(|r| r.change.operator == "op-1").map(|r| (r.change.at_unix_ms, r.alive_until)).collect();
    assert_eq!(op1, vec![(t0 + 35, t0 + 35), (t0 + 40, i64::MAX)], "the carried state, then the logout");
    // Purged by time, in batches.
    assert_eq!(l.purge_operator_states(t0, 2).await.expect("purge"), 2);
    assert_eq!(l.purge_operator_states(t0, 2).await.expect("purge"), 1);
    let left = l.operator_history(0, i64::MAX, 0).await.expect("read");
    assert_eq!(left.len(), 5, "only op-1's changes are left: {left:?}");
    assert!(left.iter().all(|r| r.change.operator == "op-1"));
    l.close().await;
}

async fn per_operator_reads_are_audited_and_listed_in_pages(b: Backend) {
    let l = b.open().await;
    for i in 0..3i64 {
        l.record_report_read(&smista_ledger::ReportRead {
            at_unix_ms: 1_000 + i,
            actor: format!("jwt:wfm-{i}"),
            operators: vec!["op-101".into(), format!("op-20{i}")],
            from_unix_ms: 10,
            to_unix_ms: 20,
            purpose: "invoice check, supplier-a 2026-11".into(),
            node: String::new(),
        })
        .await
        .expect("audited");
    }
    l.close().await;
    let l = b.open().await;
    let first = l.report_reads(None, 2).await.expect("page");
    assert_eq!(first.iter().map(|(r, _)| r.actor.as_str()).collect::<Vec<_>>(), ["jwt:wfm-0", "jwt:wfm-1"]);
    assert_eq!(first[1].0.operators, ["op-101", "op-201"]);
    assert_eq!(first[1].0.purpose, "invoice check, supplier-a 2026-11");
    let token = first[1].1.token();
    let cursor = smista_ledger::ReadCursor::parse(&token).expect("token");
    let rest = l.report_reads(Some(&cursor), 2).await.expect("page");
    assert_eq!(rest.iter().map(|(r, _)| r.actor.as_str()).collect::<Vec<_>>(), ["jwt:wfm-2"]);
    assert_eq!((rest[0].0.from_unix_ms, rest[0].0.to_unix_ms), (10, 20));
    l.close().await;
}
