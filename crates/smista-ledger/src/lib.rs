//! # smista-ledger
//!
//! The durable record of what the budgets paid: one row per settled contact (contact, budget,
//! period, queue, operator group, channel, times, handle time, cost), from which every total is
//! derived, so spend is auditable.
//!
//! - **Durable before acknowledged**: [`SqliteLedger::record`] returns only once the row is
//!   committed with `synchronous = FULL` in WAL mode.
//! - **Group commit**: a single writer task takes every record waiting in its channel and commits
//!   them in one transaction, so many completions share one fsync.
//! - **Idempotent**: the key is (budget, contact); recording a contact again charges nothing and
//!   reports that it was already there.
//! - **Portable schema**: [`SCHEMA`] is plain SQL that SQLite and PostgreSQL both accept, so a
//!   PostgreSQL backend (several nodes sharing a budget) can follow behind the same API.
//!
//! Not wired into the server yet: see the README's status.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use smista_core::book::CostRecord;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// The ledger's tables, valid for SQLite and PostgreSQL.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cost_records (
    budget_id          TEXT    NOT NULL,
    contact_id         TEXT    NOT NULL,
    period             TEXT    NOT NULL,
    queue              TEXT    NOT NULL,
    operator_group     TEXT    NOT NULL,
    channel            TEXT    NOT NULL,
    accepted_unix_ms   BIGINT  NOT NULL,
    completed_unix_ms  BIGINT  NOT NULL,
    handle_ms          BIGINT  NOT NULL,
    cost_cents         BIGINT  NOT NULL,
    reserved_cents     BIGINT  NOT NULL,
    PRIMARY KEY (budget_id, contact_id)
);
CREATE INDEX IF NOT EXISTS cost_records_by_period ON cost_records (budget_id, period);
";

/// Most records committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Why the ledger could not do something.
#[derive(Debug, Error)]
pub enum LedgerError {
    /// The database refused or failed.
    #[error("ledger storage: {0}")]
    Storage(#[from] sqlx::Error),
    /// The batch this record was in failed to commit; nothing of it was recorded.
    #[error("ledger commit failed: {0}")]
    Commit(String),
    /// The writer has stopped (the ledger is closing).
    #[error("the ledger writer has stopped")]
    Closed,
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
    /// Their cost, cents.
    pub cost_cents: i64,
    /// Handle time, ms.
    pub handle_ms: i64,
}

type Job = (CostRecord, oneshot::Sender<Result<bool, LedgerError>>);

/// The embedded ledger: one SQLite file in WAL mode.
#[derive(Debug)]
pub struct SqliteLedger {
    pool: SqlitePool,
    jobs: mpsc::Sender<Job>,
    commits: Arc<AtomicU64>,
    writer: tokio::task::JoinHandle<()>,
}

impl SqliteLedger {
    /// Opens (or creates) the ledger at `path` and starts its writer.
    pub async fn open(path: &Path) -> Result<SqliteLedger, LedgerError> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        let commits = Arc::new(AtomicU64::new(0));
        let writer = tokio::spawn(group_commit(pool.clone(), rx, commits.clone()));
        Ok(SqliteLedger { pool, jobs, commits, writer })
    }

    /// Records a settled contact and returns once it is durable: `true` if it was new, `false`
    /// if this (budget, contact) was already recorded (and is not charged again).
    pub async fn record(&self, r: CostRecord) -> Result<bool, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((r, tx)).await.map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Transactions committed so far (each may hold many records).
    #[must_use]
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
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

    /// Spend per budget, period, queue and operator group.
    pub async fn report(&self) -> Result<Vec<ReportRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT budget_id, period, queue, operator_group, COUNT(*) AS n, SUM(cost_cents) AS cost, SUM(handle_ms) AS handle
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
                    cost_cents: r.try_get("cost")?,
                    handle_ms: r.try_get("handle")?,
                })
            })
            .collect()
    }

    /// Stops accepting records, waits for the writer to commit what it has, closes the file.
    pub async fn close(self) {
        drop(self.jobs);
        let _ = self.writer.await;
        self.pool.close().await;
    }
}

async fn group_commit(pool: SqlitePool, mut rx: mpsc::Receiver<Job>, commits: Arc<AtomicU64>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        match write_batch(&pool, &batch).await {
            Ok(fresh) => {
                commits.fetch_add(1, Ordering::Relaxed);
                for ((_, reply), new) in batch.into_iter().zip(fresh) {
                    let _ = reply.send(Ok(new));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(LedgerError::Commit(msg.clone())));
                }
            }
        }
    }
}

async fn write_batch(pool: &SqlitePool, batch: &[Job]) -> Result<Vec<bool>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut fresh = Vec::with_capacity(batch.len());
    for (r, _) in batch {
        let done = sqlx::query(
            "INSERT INTO cost_records (budget_id, contact_id, period, queue, operator_group, channel,
                 accepted_unix_ms, completed_unix_ms, handle_ms, cost_cents, reserved_cents)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (budget_id, contact_id) DO NOTHING",
        )
        .bind(&r.budget)
        .bind(&r.contact)
        .bind(&r.period)
        .bind(&r.queue)
        .bind(&r.group)
        .bind(r.channel.as_str())
        .bind(r.accepted_unix_ms)
        .bind(r.completed_unix_ms)
        .bind(i64::try_from(r.handle_ms).unwrap_or(i64::MAX))
        .bind(r.cost_cents)
        .bind(r.reserved_cents)
        .execute(&mut *tx)
        .await?;
        fresh.push(done.rows_affected() == 1);
    }
    tx.commit().await?;
    Ok(fresh)
}
