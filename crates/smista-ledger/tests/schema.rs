//! Schema versions on PostgreSQL (issue 25, faults 4 and 5): opening a ledger whose schema is
//! current runs no DDL, so it waits for no other session's transaction (a takeover waited 4.7 s
//! behind the cut-off active's open transaction) and cannot deadlock with a running writer (a
//! standby restarting during a takeover died of `deadlock detected`); a ledger of an older
//! version is migrated once, by one opener, under locks it waits for only briefly, and gives up
//! with a clear error when it cannot get them.
//!
//! Needs `SMISTA_TEST_PG_URL` (set by `.ci/run`; required when `CI=true`); each test in a schema
//! of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smista_core::book::{CostRecord, HoldRecord, SettlementSink};
use smista_core::{Channel, Outcome};
use smista_ledger::{Key, Ledger, Target};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Long enough for any opening on a loaded machine; an opening stuck behind a lock never ends.
const PATIENCE: Duration = Duration::from_secs(30);

struct Pg {
    url: String,
    schema: String,
    target: Target,
}

impl Pg {
    fn new(name: &str) -> Option<Pg> {
        let url = smista_ledger::testing::pg_url(name)?;
        let schema = smista_ledger::testing::schema_name(name);
        let target = Target::Postgres { url: url.clone(), schema: Some(schema.clone()) };
        Some(Pg { url, schema, target })
    }

    /// A pool of `n` connections working in the test's schema (created if missing).
    async fn pool(&self, n: u32) -> PgPool {
        let admin = PgPool::connect(&self.url).await.expect("connect");
        sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema)).execute(&admin).await.expect("schema");
        admin.close().await;
        let opts: PgConnectOptions = self.url.parse().expect("url");
        PgPoolOptions::new()
            .max_connections(n)
            .connect_with(opts.options([("search_path", self.schema.as_str())]))
            .await
            .expect("pool")
    }

    async fn connect(&self, node: &str) -> Ledger {
        tokio::time::timeout(PATIENCE, Ledger::connect_as(&self.target, node))
            .await
            .unwrap_or_else(|_| panic!("{node}: opening the ledger did not end within {PATIENCE:?}"))
            .unwrap_or_else(|e| panic!("{node}: the ledger opens: {e}"))
    }

    async fn cleanup(&self) {
        smista_ledger::testing::drop_schema(&self.url, &self.schema).await;
    }
}

/// The tables as smista wrote them before the contact history and before versions were recorded
/// (`git show c951890:crates/smista-ledger/src/db.rs`), with a cost record, an end record and a
/// hold in them.
const OLD_SCHEMA: &str = "
CREATE TABLE cost_records (
    budget_id TEXT NOT NULL, contact_id TEXT NOT NULL, period TEXT NOT NULL, queue TEXT NOT NULL,
    operator_group TEXT NOT NULL, operator_id TEXT NOT NULL, channel TEXT NOT NULL,
    accepted_unix_ms BIGINT NOT NULL, completed_unix_ms BIGINT NOT NULL, handle_ms BIGINT NOT NULL,
    cost_cents BIGINT NOT NULL, reserved_cents BIGINT NOT NULL,
    outcome TEXT NOT NULL DEFAULT 'completed', node_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (contact_id, budget_id, accepted_unix_ms)
);
CREATE INDEX cost_records_by_period ON cost_records (budget_id, period);
CREATE INDEX cost_records_by_completion ON cost_records (completed_unix_ms);
CREATE TABLE holds (
    budget_id TEXT NOT NULL, contact_id TEXT NOT NULL, period TEXT NOT NULL, amount_cents BIGINT NOT NULL,
    queue TEXT NOT NULL, operator_group TEXT NOT NULL, operator_id TEXT NOT NULL, channel TEXT NOT NULL,
    accepted_unix_ms BIGINT NOT NULL, node_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (budget_id, contact_id)
);
CREATE TABLE amendments (
    seq BIGSERIAL PRIMARY KEY, at_unix_ms BIGINT NOT NULL, budget_id TEXT NOT NULL, actor TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '', field TEXT NOT NULL, old_value TEXT NOT NULL, new_value TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE budget_pool (
    budget_id TEXT NOT NULL, period TEXT NOT NULL, ceiling_cents BIGINT NOT NULL,
    granted_cents BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (budget_id, period)
);
CREATE TABLE budget_leases (
    budget_id TEXT NOT NULL, period TEXT NOT NULL, node_id TEXT NOT NULL, granted_cents BIGINT NOT NULL,
    expires_unix_ms BIGINT NOT NULL, renewed_unix_ms BIGINT NOT NULL, epoch BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_id, period, node_id)
);
CREATE TABLE contact_ends (
    contact_id TEXT NOT NULL, ended_unix_ms BIGINT NOT NULL, queue TEXT NOT NULL, channel TEXT NOT NULL,
    outcome TEXT NOT NULL, waited_ms BIGINT NOT NULL, handle_ms BIGINT NOT NULL, wrap_up_ms BIGINT NOT NULL,
    operator_id TEXT NOT NULL, divert_reason TEXT NOT NULL, fallback TEXT NOT NULL,
    node_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (contact_id, ended_unix_ms)
);
CREATE INDEX contact_ends_by_time ON contact_ends (ended_unix_ms);
CREATE TABLE leaders (
    grp TEXT NOT NULL PRIMARY KEY, node_id TEXT NOT NULL, epoch BIGINT NOT NULL,
    expires_unix_ms BIGINT NOT NULL, address TEXT NOT NULL
);
CREATE TABLE node_epochs (node_id TEXT NOT NULL PRIMARY KEY, epoch BIGINT NOT NULL);
INSERT INTO cost_records VALUES ('ccm-2026', 'old', '2026-11', 'pensions', 'supplier-a', 'op-1', 'voice',
    1795000000000, 1795000180000, 180000, 266, 410, 'completed', 'node-a');
INSERT INTO contact_ends VALUES ('gone', 1795000200000, 'pensions', 'voice', 'abandoned', 30000, 0, 0, '',
    '', '', 'node-a');
INSERT INTO holds VALUES ('ccm-2026', 'held', '2026-11', 410, 'pensions', 'supplier-a', 'op-2', 'voice',
    1795000100000, 'node-a');
";

fn record(contact: &str) -> CostRecord {
    CostRecord {
        contact: contact.into(),
        budget: "ccm-2026".into(),
        period: "2026-11".into(),
        queue: "pensions".into(),
        group: "supplier-a".into(),
        operator: "op-1".into(),
        channel: Channel::Voice,
        accepted_unix_ms: 1_795_000_000_000,
        completed_unix_ms: 1_795_000_180_000,
        handle_ms: 180_000,
        cost_cents: 300,
        reserved_cents: 410,
        outcome: Outcome::Completed,
    }
}

/// The schema's recorded version, and whether `holds` has the newest step's column.
async fn version(pool: &PgPool) -> (i64, bool) {
    let v: (i64,) = sqlx::query_as("SELECT version FROM schema_version").fetch_one(pool).await.expect("version");
    let col: (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'holds' AND column_name = 'arrived_unix_ms')",
    )
    .fetch_one(pool)
    .await
    .expect("columns");
    (v.0, col.0)
}

/// What a ledger that opened is good for: writing, reading back, recovering (as node `node`).
async fn usable(l: &Ledger, contact: &str) {
    assert!(l.record(record(contact)).await.expect("record"), "a new record is charged");
    assert_eq!(l.settled(contact).await.expect("read").expect("the record is there").cost_cents, 300);
}

/// Issue 25, fault 4: a node opening a current ledger while another session's transaction is
/// open, idle, with rows written (and so locks held) in the tables the old start-up altered. The
/// opening must end while that transaction is still open: before, its `ALTER TABLE ... ADD
/// COLUMN IF NOT EXISTS` waited for it (for ever, here: the blocker commits only afterwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_current_ledger_waits_for_no_other_transaction() {
    let Some(pg) = Pg::new("schema_current") else { return };
    let first = pg.connect("node-a").await;
    usable(&first, "before").await;
    SettlementSink::hold(
        &first,
        &HoldRecord {
            contact: "in-service".into(),
            budget: "ccm-2026".into(),
            period: "2026-11".into(),
            amount_cents: 410,
            queue: "pensions".into(),
            group: "supplier-a".into(),
            operator: "op-2".into(),
            channel: Channel::Voice,
            accepted_unix_ms: 1_795_000_100_000,
            arrived_unix_ms: 1_795_000_040_000,
        },
    );
    first.durable(&Key::Contact("in-service".into())).await.expect("durable");
    first.close().await;

    // The cut-off active: a transaction that wrote to cost_records, contact_ends and holds (row
    // locks, and the tables' ROW EXCLUSIVE locks) and then went quiet without ending.
    let pool = pg.pool(2).await;
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::raw_sql(
        "UPDATE cost_records SET cost_cents = cost_cents WHERE contact_id = 'before';
         INSERT INTO cost_records (budget_id, contact_id, period, queue, operator_group, operator_id, channel,
            accepted_unix_ms, completed_unix_ms, handle_ms, cost_cents, reserved_cents)
         VALUES ('ccm-2026', 'late', '2026-11', 'pensions', 'supplier-a', 'op-1', 'voice', 1, 2, 1, 460, 460);
         INSERT INTO contact_ends (contact_id, ended_unix_ms, queue, channel, outcome, waited_ms, handle_ms,
            wrap_up_ms, operator_id, divert_reason, fallback)
         VALUES ('late', 2, 'pensions', 'voice', 'completed', 0, 1, 0, 'op-1', '', '');
         UPDATE holds SET amount_cents = amount_cents WHERE contact_id = 'in-service';",
    )
    .execute(&mut *blocker)
    .await
    .expect("the blocker writes");

    // The takeover: opens, recovers, writes — all while the blocker's transaction is open.
    let second = pg.connect("node-b").await;
    let r = second.recovery().await.expect("recovery");
    assert!(r.holds.is_empty(), "node-b recovers its own holds only (it has none)");
    usable(&second, "after").await;
    let (v, arrived) = version(&pool).await;
    assert!(v >= 2 && arrived, "the ledger is at the current version ({v}) with holds.arrived_unix_ms");
    // The blocker was open all along, and still works.
    sqlx::query("SELECT 1").execute(&mut *blocker).await.expect("the blocker's transaction is still open");
    blocker.commit().await.expect("commit");
    second.close().await;
    pool.close().await;
    pg.cleanup().await;
}

/// A group commit as an active writes under load, the way fault 5 saw it: cost records first,
/// then (a moment later, same transaction) the end records; then a pause. Every error kept.
async fn busy_writer(pool: PgPool, stop: Arc<AtomicBool>) -> (u32, Vec<String>) {
    let (mut n, mut errors) = (0u32, Vec::new());
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let r = async {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO cost_records (budget_id, contact_id, period, queue, operator_group, operator_id,
                    channel, accepted_unix_ms, completed_unix_ms, handle_ms, cost_cents, reserved_cents)
                 VALUES ('ccm-2026', $1, '2026-11', 'pensions', 'supplier-a', 'op-1', 'voice', 1, 2, 1, 460, 460)",
            )
            .bind(format!("w{n}"))
            .execute(&mut *tx)
            .await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            sqlx::query(
                "INSERT INTO contact_ends (contact_id, ended_unix_ms, queue, channel, outcome, waited_ms,
                    handle_ms, wrap_up_ms, operator_id, divert_reason, fallback)
                 VALUES ($1, 2, 'pensions', 'voice', 'completed', 0, 1, 0, 'op-1', '', '')",
            )
            .bind(format!("w{n}"))
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = r {
            errors.push(e.to_string());
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    (n, errors)
}

/// Issue 25, fault 5: nodes opening an old ledger at once while its active writes. One migrates,
/// the others wait for it and find the schema current; nobody dies of `deadlock detected`,
/// neither an opening nor the writer, and every node ends with a usable ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_openings_of_an_old_ledger_under_writes_migrate_it_once_without_deadlock() {
    let Some(pg) = Pg::new("schema_race") else { return };
    let pool = pg.pool(4).await;
    sqlx::raw_sql(OLD_SCHEMA).execute(&pool).await.expect("old schema");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(busy_writer(pool.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut openings = Vec::new();
    for node in ["node-a", "node-b", "node-c"] {
        let target = pg.target.clone();
        openings.push(tokio::spawn(async move {
            let l = tokio::time::timeout(PATIENCE, Ledger::connect_as(&target, node)).await;
            (node, l)
        }));
    }
    let mut ledgers = Vec::new();
    for o in openings {
        let (node, l) = o.await.expect("task");
        match l {
            Ok(Ok(l)) => ledgers.push((node, l)),
            Ok(Err(e)) => panic!("{node} could not open the ledger: {e}"),
            Err(_) => panic!("{node}: opening did not end within {PATIENCE:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let (writes, errors) = writer.await.expect("writer");
    assert!(errors.is_empty(), "the writer failed while the ledger was migrated: {errors:?}");
    assert!(writes > 3, "the writer went on ({writes} transactions)");
    for (node, l) in &ledgers {
        usable(l, &format!("{node}-after")).await;
        assert_eq!(l.settled("old").await.expect("read").expect("the old record").cost_cents, 266);
    }
    let (v, arrived) = version(&pool).await;
    assert!(v >= 2 && arrived, "the ledger is at the current version ({v}) with holds.arrived_unix_ms");
    let rows: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM schema_version").fetch_one(&pool).await.expect("rows");
    assert_eq!(rows.0, 1, "one version row");
    for (_, l) in ledgers {
        l.close().await;
    }
    pool.close().await;
    pg.cleanup().await;
}

/// A ledger written before versions were recorded (and before the contact history and the
/// holds' arrival) upgrades: its records, end records and holds read back, the new columns have
/// their defaults, and the next opening finds it current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_ledger_upgrades_and_keeps_its_records() {
    let Some(pg) = Pg::new("schema_old") else { return };
    let pool = pg.pool(2).await;
    sqlx::raw_sql(OLD_SCHEMA).execute(&pool).await.expect("old schema");
    let l = pg.connect("node-a").await;
    let old = l.settled("old").await.expect("read").expect("the old record is kept");
    assert_eq!((old.cost_cents, old.outcome), (266, Outcome::Completed));
    let gone = l.end_of("gone").await.expect("read").expect("the old end record is kept");
    assert_eq!(gone.outcome, Outcome::Abandoned);
    let r = l.recovery().await.expect("recovery");
    assert_eq!(r.holds.len(), 1, "node-a's hold is recovered: {:?}", r.holds);
    assert_eq!((r.holds[0].contact.as_str(), r.holds[0].arrived_unix_ms), ("held", 0), "unknown arrival: 0");
    usable(&l, "new").await;
    l.close().await;
    let (v, arrived) = version(&pool).await;
    assert!(v >= 2 && arrived, "the ledger is at the current version ({v}) with holds.arrived_unix_ms");
    let l = pg.connect("node-a").await;
    assert_eq!(l.settled("new").await.expect("read").expect("kept").cost_cents, 300);
    l.close().await;
    pool.close().await;
    pg.cleanup().await;
}

/// An old ledger whose tables another session keeps locked (an open transaction that wrote a
/// hold) cannot be migrated: the opening tries a bounded number of times and then fails, saying
/// why, instead of waiting for ever (or deadlocking); once the transaction ends it opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_cannot_get_its_locks_gives_up_with_a_clear_error() {
    let Some(pg) = Pg::new("schema_locked") else { return };
    let pool = pg.pool(2).await;
    sqlx::raw_sql(OLD_SCHEMA).execute(&pool).await.expect("old schema");
    let mut blocker = pool.begin().await.expect("begin");
    sqlx::query("UPDATE holds SET amount_cents = amount_cents WHERE contact_id = 'held'")
        .execute(&mut *blocker)
        .await
        .expect("the blocker writes");
    let e = match tokio::time::timeout(Duration::from_secs(60), Ledger::connect_as(&pg.target, "node-a")).await {
        Ok(Ok(_)) => panic!("the ledger was migrated under another transaction's locks"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("the opening waited for the locks without end"),
    };
    assert!(e.contains("could not get the locks"), "the error says why: {e}");
    blocker.rollback().await.expect("rollback");
    let l = pg.connect("node-a").await;
    usable(&l, "new").await;
    l.close().await;
    pool.close().await;
    pg.cleanup().await;
}

/// A takeover does not wait for a stopped active (SIGSTOP, a paused VM) that was inside a
/// transaction: the active's writer holds the fence's share lock on its `node_epochs` row for
/// the whole transaction, and the takeover moves that row's epoch on. Played here by a session set
/// up as the ledger's own (`testing::ledger_session`) that takes the fence's lock and goes silent
/// for longer than the test's patience; PostgreSQL must end it (`idle_in_transaction_session_timeout`)
/// so the new active's opening goes through. Found by the fault harness: one SIGSTOP run in
/// twenty waited 3.2 s, until SIGCONT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_does_not_wait_for_a_stopped_active_inside_a_transaction() {
    let Some(pg) = Pg::new("schema_stopped") else { return };
    let old = pg.connect("group-a").await;
    let stopped = smista_ledger::testing::ledger_session(&pg.url, &pg.schema).await.expect("session");
    let mut tx = stopped.begin().await.expect("begin");
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM node_epochs WHERE node_id = $1 FOR SHARE")
        .bind("group-a")
        .fetch_one(&mut *tx)
        .await
        .expect("the fence's share lock");
    // The active is stopped here, for longer than the opening below may take.
    let silent = tokio::spawn(async move {
        tokio::time::sleep(PATIENCE * 2).await;
        tx.commit().await
    });
    let new = pg.connect("group-a").await;
    let now: i64 = sqlx::query_scalar("SELECT epoch FROM node_epochs WHERE node_id = $1")
        .bind("group-a")
        .fetch_one(&pg.pool(1).await)
        .await
        .expect("epoch");
    assert_eq!(now, epoch + 1, "the takeover moved the epoch on");
    silent.abort();
    drop(new);
    drop(old);
    pg.cleanup().await;
}
