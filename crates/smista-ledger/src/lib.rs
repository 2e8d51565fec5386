//! # smista-ledger
//!
//! The durable record of what the budgets paid: one row per settled contact (contact, budget,
//! period, queue, operator group, channel, times, handle time, cost, outcome), from which every
//! total is derived, so spend is auditable. Beside it, the *holds* (reservations of contacts in service
//! with a budgeted operator) and the contract *amendments*, so a restart rebuilds the budgets:
//! see [`SqliteLedger::recovery`].
//!
//! - **Durable before acknowledged**: every write is committed with `synchronous = FULL` in WAL
//!   mode before its waiter is told ([`SqliteLedger::record`], [`SqliteLedger::durable`]).
//! - **Group commit**: a single writer task takes every write waiting in its queue and commits
//!   them in one transaction, so many completions share one fsync. A failed commit is retried
//!   (with back-off) rather than dropped: a write accepted here is never silently lost while the
//!   process lives, and its waiters wait.
//! - **Idempotent**: a settled contact's key is (budget, contact); recording it again charges
//!   nothing and reports that it was already there.
//! - **Portable schema**: [`SCHEMA`] is plain SQL that SQLite and PostgreSQL both accept, so a
//!   PostgreSQL backend (several nodes sharing a budget) can follow behind the same API.
//!
//! The ledger plugs into the budget book as its [`SettlementSink`]: the book's calls only queue a
//! write (they run inside routing operations and must not block); the server then waits, outside
//! the engine, for [`SqliteLedger::durable`] before it acknowledges the RPC.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use smista_core::book::{AuditRecord, CostRecord, HoldRecord, PeriodTotals, Recovery, SettlementSink};
use smista_core::{Channel, Outcome};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

/// The ledger's tables, valid for SQLite and PostgreSQL.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cost_records (
    budget_id          TEXT    NOT NULL,
    contact_id         TEXT    NOT NULL,
    period             TEXT    NOT NULL,
    queue              TEXT    NOT NULL,
    operator_group     TEXT    NOT NULL,
    operator_id        TEXT    NOT NULL,
    channel            TEXT    NOT NULL,
    accepted_unix_ms   BIGINT  NOT NULL,
    completed_unix_ms  BIGINT  NOT NULL,
    handle_ms          BIGINT  NOT NULL,
    cost_cents         BIGINT  NOT NULL,
    reserved_cents     BIGINT  NOT NULL,
    outcome            TEXT    NOT NULL DEFAULT 'completed',
    PRIMARY KEY (budget_id, contact_id)
);
CREATE INDEX IF NOT EXISTS cost_records_by_period ON cost_records (budget_id, period);
CREATE INDEX IF NOT EXISTS cost_records_by_contact ON cost_records (contact_id);
CREATE TABLE IF NOT EXISTS holds (
    budget_id          TEXT    NOT NULL,
    contact_id         TEXT    NOT NULL,
    period             TEXT    NOT NULL,
    amount_cents       BIGINT  NOT NULL,
    queue              TEXT    NOT NULL,
    operator_group     TEXT    NOT NULL,
    operator_id        TEXT    NOT NULL,
    channel            TEXT    NOT NULL,
    accepted_unix_ms   BIGINT  NOT NULL,
    PRIMARY KEY (budget_id, contact_id)
);
CREATE TABLE IF NOT EXISTS amendments (
    seq                BIGINT  NOT NULL PRIMARY KEY,
    at_unix_ms         BIGINT  NOT NULL,
    budget_id          TEXT    NOT NULL,
    actor              TEXT    NOT NULL,
    note               TEXT    NOT NULL DEFAULT '',
    field              TEXT    NOT NULL,
    old_value          TEXT    NOT NULL,
    new_value          TEXT    NOT NULL,
    reason             TEXT    NOT NULL
);
";

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Why the ledger could not do something.
#[derive(Debug, Error, Clone)]
pub enum LedgerError {
    /// The database refused or failed.
    #[error("ledger storage: {0}")]
    Storage(String),
    /// No ledger file where one was expected.
    #[error("no ledger at {0}")]
    Missing(String),
    /// A stored value cannot be read back.
    #[error("ledger data: {0}")]
    Corrupt(String),
    /// The writer has stopped (the ledger is closing) before the write was committed.
    #[error("the ledger writer has stopped")]
    Closed,
}

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        LedgerError::Storage(e.to_string())
    }
}

/// Totals of one budget in one period, derived from the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Contacts settled.
    pub contacts: i64,
    /// Their cost, cents.
    pub cost_cents: i64,
}

/// One line of the spend report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// Budget.
    pub budget: String,
    /// Period.
    pub period: String,
    /// Queue.
    pub queue: String,
    /// Operator group (supplier team).
    pub operator_group: String,
    /// Contacts settled.
    pub contacts: i64,
    /// Of those, the ones whose caller hung up while in service (charged like the others: the
    /// operator's time was spent).
    pub hung_up: i64,
    /// Their cost, cents.
    pub cost_cents: i64,
    /// Handle time, ms.
    pub handle_ms: i64,
}

/// Counters of the writer, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerStats {
    /// Transactions committed.
    pub commits: u64,
    /// Writes committed (records, holds, releases, amendments).
    pub writes: u64,
    /// Failed commit attempts (each retried).
    pub errors: u64,
}

/// What a waiter is waiting for: the writes about one contact, or one budget's amendments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// Holds and records of a contact.
    Contact(String),
    /// Amendments of a budget.
    Budget(String),
}

#[derive(Debug)]
enum Op {
    Settle(CostRecord),
    Hold(HoldRecord),
    Release { budget: String, contact: String },
    Amend(AuditRecord),
}

#[derive(Debug)]
enum Reply {
    None,
    Record(oneshot::Sender<Result<bool, LedgerError>>),
    Keyed(Key, u64, watch::Sender<Option<bool>>),
}

type Job = (Op, Reply);

/// The last write queued per key, until committed: its sequence number and a receiver that turns
/// `Some(true)` once it is committed (`Some(false)`: it never will be).
type Pending = DashMap<Key, (u64, watch::Receiver<Option<bool>>)>;

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
}

/// The embedded ledger: one SQLite file in WAL mode.
#[derive(Debug)]
pub struct SqliteLedger {
    pool: SqlitePool,
    jobs: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    pending: Arc<Pending>,
    seq: AtomicU64,
    counters: Arc<Counters>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl SqliteLedger {
    /// Opens (or creates) the ledger at `path` and starts its writer.
    pub async fn open(path: &Path) -> Result<SqliteLedger, LedgerError> {
        Self::open_with(path, true).await
    }

    /// Opens an existing ledger (for reports); [`LedgerError::Missing`] if there is none.
    pub async fn open_existing(path: &Path) -> Result<SqliteLedger, LedgerError> {
        if !path.is_file() {
            return Err(LedgerError::Missing(path.display().to_string()));
        }
        Self::open_with(path, false).await
    }

    async fn open_with(path: &Path, create: bool) -> Result<SqliteLedger, LedgerError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        // Schema and migrations on a connection of their own, closed before the pool opens: a
        // pooled connection that prepared a statement before an ALTER TABLE would describe the
        // old columns and then read rows of the new ones (sqlx panics on the extra column).
        // (A pool of one rather than a bare connection: futures holding `&mut SqliteConnection`
        // across awaits are not provably `Send`, and the server spawns this one.)
        let setup = SqlitePoolOptions::new().max_connections(1).connect_with(opts.clone()).await?;
        sqlx::raw_sql(SCHEMA).execute(&setup).await?;
        migrate(&setup).await?;
        setup.close().await;
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        let next_seq: i64 =
            sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM amendments").fetch_one(&pool).await?.try_get("s")?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let last_error = Arc::new(Mutex::new(None));
        let pending = Arc::new(DashMap::new());
        let writer = tokio::spawn(group_commit(
            pool.clone(),
            rx,
            counters.clone(),
            pending.clone(),
            last_error.clone(),
            next_seq + 1,
        ));
        Ok(SqliteLedger {
            pool,
            jobs: Mutex::new(Some(jobs)),
            pending,
            seq: AtomicU64::new(1),
            counters,
            writer: Mutex::new(Some(writer)),
            last_error,
        })
    }

    fn send(&self, job: Job) -> Result<(), LedgerError> {
        match &*self.jobs.lock() {
            Some(tx) => tx.send(job).map_err(|_| LedgerError::Closed),
            None => Err(LedgerError::Closed),
        }
    }

    /// Records a settled contact and returns once it is durable: `true` if it was new, `false`
    /// if this (budget, contact) was already recorded (and is not charged again).
    pub async fn record(&self, r: CostRecord) -> Result<bool, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.send((Op::Settle(r), Reply::Record(tx)))?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Queues `op` and remembers it as the last write about `key`.
    fn submit(&self, key: Key, op: Op) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        self.pending.insert(key.clone(), (seq, rx));
        if self.send((op, Reply::Keyed(key.clone(), seq, tx))).is_err() {
            // Closed: the dropped sender makes waiters see `Closed`; nothing more to do here.
            self.pending.remove_if(&key, |_, (s, _)| *s == seq);
        }
    }

    /// Waits until every write queued so far about `key` is durable. Returns at once if none is
    /// pending; [`LedgerError::Closed`] if the ledger closed first.
    pub async fn durable(&self, key: &Key) -> Result<(), LedgerError> {
        let Some(mut rx) = self.pending.get(key).map(|e| e.1.clone()) else { return Ok(()) };
        let committed = rx.wait_for(Option::is_some).await.map(|v| *v == Some(true)).unwrap_or(false);
        if committed {
            Ok(())
        } else {
            Err(LedgerError::Closed)
        }
    }

    /// Writes waiting to be committed, by key.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Transactions committed so far (each may hold many records).
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.counters.commits.load(Ordering::Relaxed)
    }

    /// The writer's counters.
    #[must_use]
    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
        }
    }

    /// The last commit error, if the writer is retrying one.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Totals of `budget` in `period`, from the records.
    pub async fn totals(&self, budget: &str, period: &str) -> Result<Totals, LedgerError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(cost_cents), 0) AS cost FROM cost_records WHERE budget_id = ? AND period = ?",
        )
        .bind(budget)
        .bind(period)
        .fetch_one(&self.pool)
        .await?;
        Ok(Totals { contacts: row.try_get("n")?, cost_cents: row.try_get("cost")? })
    }

    /// The settled record of `contact`, if any (for an idempotent completion after a restart).
    pub async fn settled(&self, contact: &str) -> Result<Option<CostRecord>, LedgerError> {
        let row = sqlx::query("SELECT * FROM cost_records WHERE contact_id = ? LIMIT 1")
            .bind(contact)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(CostRecord {
                contact: r.try_get("contact_id")?,
                budget: r.try_get("budget_id")?,
                period: r.try_get("period")?,
                queue: r.try_get("queue")?,
                group: r.try_get("operator_group")?,
                operator: r.try_get("operator_id")?,
                channel: channel(&r.try_get::<String, _>("channel")?)?,
                accepted_unix_ms: r.try_get("accepted_unix_ms")?,
                completed_unix_ms: r.try_get("completed_unix_ms")?,
                handle_ms: u64::try_from(r.try_get::<i64, _>("handle_ms")?).unwrap_or(0),
                cost_cents: r.try_get("cost_cents")?,
                reserved_cents: r.try_get("reserved_cents")?,
                outcome: outcome(&r.try_get::<String, _>("outcome")?)?,
            })
        })
        .transpose()
    }

    /// What a restart needs to rebuild the budgets: amendments in order, settled totals per
    /// budget and period (with overrun), and the holds of contacts still in service.
    pub async fn recovery(&self) -> Result<Recovery, LedgerError> {
        let amendments = sqlx::query("SELECT * FROM amendments ORDER BY seq")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(AuditRecord {
                    at_unix_ms: r.try_get("at_unix_ms")?,
                    budget: r.try_get("budget_id")?,
                    actor: r.try_get("actor")?,
                    note: r.try_get("note")?,
                    field: r.try_get("field")?,
                    old_value: r.try_get("old_value")?,
                    new_value: r.try_get("new_value")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?;
        let periods = sqlx::query(
            "SELECT budget_id, period, SUM(cost_cents) AS settled,
                    SUM(CASE WHEN cost_cents > reserved_cents THEN cost_cents - reserved_cents ELSE 0 END) AS overrun
             FROM cost_records GROUP BY budget_id, period ORDER BY budget_id, period",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(PeriodTotals {
                budget: r.try_get("budget_id")?,
                period: r.try_get("period")?,
                settled_cents: r.try_get("settled")?,
                overrun_cents: r.try_get("overrun")?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
        let holds = sqlx::query("SELECT * FROM holds ORDER BY accepted_unix_ms")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(HoldRecord {
                    contact: r.try_get("contact_id")?,
                    budget: r.try_get("budget_id")?,
                    period: r.try_get("period")?,
                    amount_cents: r.try_get("amount_cents")?,
                    queue: r.try_get("queue")?,
                    group: r.try_get("operator_group")?,
                    operator: r.try_get("operator_id")?,
                    channel: channel(&r.try_get::<String, _>("channel")?)?,
                    accepted_unix_ms: r.try_get("accepted_unix_ms")?,
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?;
        Ok(Recovery { amendments, periods, holds })
    }

    /// Spend per budget, period, queue and operator group.
    pub async fn report(&self) -> Result<Vec<ReportRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT budget_id, period, queue, operator_group, COUNT(*) AS n,
                    SUM(CASE WHEN outcome = 'cancelled_in_service' THEN 1 ELSE 0 END) AS hung_up,
                    SUM(cost_cents) AS cost, SUM(handle_ms) AS handle
             FROM cost_records GROUP BY budget_id, period, queue, operator_group
             ORDER BY budget_id, period, queue, operator_group",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReportRow {
                    budget: r.try_get("budget_id")?,
                    period: r.try_get("period")?,
                    queue: r.try_get("queue")?,
                    operator_group: r.try_get("operator_group")?,
                    contacts: r.try_get("n")?,
                    hung_up: r.try_get("hung_up")?,
                    cost_cents: r.try_get("cost")?,
                    handle_ms: r.try_get("handle")?,
                })
            })
            .collect()
    }

    /// Stops accepting writes, waits for the writer to commit what it has, closes the file.
    pub async fn close(&self) {
        drop(self.jobs.lock().take());
        let writer = self.writer.lock().take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        self.pool.close().await;
    }
}

impl SettlementSink for SqliteLedger {
    fn record(&self, r: &CostRecord) {
        self.submit(Key::Contact(r.contact.clone()), Op::Settle(r.clone()));
    }

    fn hold(&self, h: &HoldRecord) {
        self.submit(Key::Contact(h.contact.clone()), Op::Hold(h.clone()));
    }

    fn release(&self, budget: &str, contact: &str) {
        // Nobody waits for a release: if it is lost in a crash the hold is recovered and expires.
        let _ = self.send((Op::Release { budget: budget.to_owned(), contact: contact.to_owned() }, Reply::None));
    }

    fn amended(&self, a: &AuditRecord) {
        self.submit(Key::Budget(a.budget.clone()), Op::Amend(a.clone()));
    }
}

/// Brings a ledger written by an earlier smista up to [`SCHEMA`] (columns added since; their
/// defaults describe the old rows truthfully). Idempotent.
async fn migrate(pool: &SqlitePool) -> Result<(), LedgerError> {
    let has = |table: &'static str, column: &'static str| async move {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM pragma_table_info(?) WHERE name = ?")
            .bind(table)
            .bind(column)
            .fetch_one(pool)
            .await?
            .try_get("n")?;
        Ok::<bool, LedgerError>(n > 0)
    };
    if !has("amendments", "note").await? {
        // Before the column the actor was whatever the client typed, and there was no note.
        sqlx::query("ALTER TABLE amendments ADD COLUMN note TEXT NOT NULL DEFAULT ''").execute(pool).await?;
    }
    if !has("cost_records", "outcome").await? {
        // Ledgers before the column settled only contacts their operator completed or whose
        // caller hung up in service, without telling which: `completed` is what they reported.
        sqlx::query("ALTER TABLE cost_records ADD COLUMN outcome TEXT NOT NULL DEFAULT 'completed'")
            .execute(pool)
            .await?;
    }
    Ok(())
}

fn outcome(name: &str) -> Result<Outcome, LedgerError> {
    Outcome::parse(name).ok_or_else(|| LedgerError::Corrupt(format!("unknown outcome `{name}`")))
}

fn channel(name: &str) -> Result<Channel, LedgerError> {
    Channel::parse(name).ok_or_else(|| LedgerError::Corrupt(format!("unknown channel `{name}`")))
}

async fn group_commit(
    pool: SqlitePool,
    mut rx: mpsc::UnboundedReceiver<Job>,
    counters: Arc<Counters>,
    pending: Arc<Pending>,
    last_error: Arc<Mutex<Option<String>>>,
    mut next_seq: i64,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(20);
        let outcome = loop {
            match write_batch(&pool, &batch, next_seq).await {
                Ok(fresh) => break Ok(fresh),
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    *last_error.lock() = Some(e.to_string());
                    // Keep trying while anyone may still submit; once closing, give up.
                    if rx.is_closed() {
                        break Err(e);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        };
        match outcome {
            Ok((fresh, seq)) => {
                next_seq = seq;
                *last_error.lock() = None;
                counters.commits.fetch_add(1, Ordering::Relaxed);
                counters.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                for ((_, reply), new) in batch.into_iter().zip(fresh) {
                    match reply {
                        Reply::None => {}
                        Reply::Record(tx) => {
                            let _ = tx.send(Ok(new));
                        }
                        Reply::Keyed(key, seq, tx) => {
                            let _ = tx.send(Some(true));
                            pending.remove_if(&key, |_, (s, _)| *s == seq);
                        }
                    }
                }
            }
            Err(e) => {
                let err = LedgerError::Storage(e.to_string());
                for (_, reply) in batch {
                    match reply {
                        Reply::None => {}
                        Reply::Record(tx) => {
                            let _ = tx.send(Err(err.clone()));
                        }
                        Reply::Keyed(key, seq, tx) => {
                            let _ = tx.send(Some(false));
                            pending.remove_if(&key, |_, (s, _)| *s == seq);
                        }
                    }
                }
            }
        }
    }
}

/// Writes a batch in one transaction; returns, per write, whether it changed anything, and the
/// next amendment sequence number.
async fn write_batch(pool: &SqlitePool, batch: &[Job], mut seq: i64) -> Result<(Vec<bool>, i64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut fresh = Vec::with_capacity(batch.len());
    for (op, _) in batch {
        let changed = match op {
            Op::Settle(r) => {
                let done = sqlx::query(
                    "INSERT INTO cost_records (budget_id, contact_id, period, queue, operator_group, operator_id,
                         channel, accepted_unix_ms, completed_unix_ms, handle_ms, cost_cents, reserved_cents,
                         outcome)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (budget_id, contact_id) DO NOTHING",
                )
                .bind(&r.budget)
                .bind(&r.contact)
                .bind(&r.period)
                .bind(&r.queue)
                .bind(&r.group)
                .bind(&r.operator)
                .bind(r.channel.as_str())
                .bind(r.accepted_unix_ms)
                .bind(r.completed_unix_ms)
                .bind(i64::try_from(r.handle_ms).unwrap_or(i64::MAX))
                .bind(r.cost_cents)
                .bind(r.reserved_cents)
                .bind(r.outcome.as_str())
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM holds WHERE budget_id = ? AND contact_id = ?")
                    .bind(&r.budget)
                    .bind(&r.contact)
                    .execute(&mut *tx)
                    .await?;
                done.rows_affected() == 1
            }
            Op::Hold(h) => {
                let done = sqlx::query(
                    "INSERT INTO holds (budget_id, contact_id, period, amount_cents, queue, operator_group,
                         operator_id, channel, accepted_unix_ms)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (budget_id, contact_id) DO NOTHING",
                )
                .bind(&h.budget)
                .bind(&h.contact)
                .bind(&h.period)
                .bind(h.amount_cents)
                .bind(&h.queue)
                .bind(&h.group)
                .bind(&h.operator)
                .bind(h.channel.as_str())
                .bind(h.accepted_unix_ms)
                .execute(&mut *tx)
                .await?;
                done.rows_affected() == 1
            }
            Op::Release { budget, contact } => {
                let done = sqlx::query("DELETE FROM holds WHERE budget_id = ? AND contact_id = ?")
                    .bind(budget)
                    .bind(contact)
                    .execute(&mut *tx)
                    .await?;
                done.rows_affected() == 1
            }
            Op::Amend(a) => {
                sqlx::query(
                    "INSERT INTO amendments (seq, at_unix_ms, budget_id, actor, note, field, old_value, new_value, reason)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(seq)
                .bind(a.at_unix_ms)
                .bind(&a.budget)
                .bind(&a.actor)
                .bind(&a.note)
                .bind(&a.field)
                .bind(&a.old_value)
                .bind(&a.new_value)
                .bind(&a.reason)
                .execute(&mut *tx)
                .await?;
                seq += 1;
                true
            }
        };
        fresh.push(changed);
    }
    tx.commit().await?;
    Ok((fresh, seq))
}
