//! # smista-ledger
//!
//! The durable record of what the budgets paid: one row per settled contact (contact, budget,
//! period, queue, operator group, channel, times, handle time, cost, outcome), from which every
//! total is derived, so spend is auditable. Beside it, the *holds* (reservations of contacts in
//! service with a budgeted operator) and the contract *amendments*, so a restart rebuilds the
//! budgets: see [`Ledger::recovery`].
//!
//! Two backends behind one API ([`Target`]): an embedded SQLite file (the default, one node) and
//! PostgreSQL (several nodes sharing budgets). The statements are the same; see `db.rs`.
//!
//! - **Durable before acknowledged**: every write is committed (SQLite: `synchronous = FULL` in
//!   WAL mode; PostgreSQL: a synchronous commit) before its waiter is told ([`Ledger::record`],
//!   [`Ledger::durable`]).
//! - **Group commit**: a single writer task takes every write waiting in its queue and commits
//!   them in one transaction (`writer.rs`).
//! - **Idempotent, and every life of a contact id apart**: a cost record's key is (budget,
//!   contact, time of acceptance). Recording the same settlement again charges nothing and
//!   reports that it was already there; a contact id re-used after its contact ended and was
//!   forgotten (retention, restart) is a new life with its own record, so the ledger and the
//!   in-memory totals never differ.
//!
//! - **How every contact ended, and its detail** (the contact history): one detail record
//!   ([`ContactEnd`]) per life of every contact — in its cost record's columns when it has one
//!   committed in the same batch, else a row of `contact_ends` — so a request about a finished
//!   contact gets the same answer after a restart as before it, and the interval reports read
//!   what happened (`history.rs`). Contacts in service with staff no budget pays leave a
//!   *service record* (a hold of no budget) so a restart knows who has them.
//!
//! The ledger plugs into the budget book as its [`SettlementSink`]: the book's calls only queue a
//! write (they run inside routing operations and must not block); the server then waits, outside
//! the engine, for [`Ledger::durable`] before it acknowledges the RPC.

#![forbid(unsafe_code)]

mod accounting;
mod appointments;
mod counters;
mod db;
mod history;
mod leader;
mod lease;
mod node_lock;
mod roster;
pub mod testing;
mod transfers;
mod writer;

pub use accounting::{ReadCursor, ReportRead};
pub use appointments::{QueueAudit, QueueChange, ScheduledCallback};
pub use counters::BudgetCounters;

pub use db::{schema, Target};
pub use history::{
    encode_offers, encode_overflows, encode_transfers, Detail, HistoryCursor, OfferOutcome, OfferRecord,
};
pub use leader::{Elector, Leadership};
pub use lease::{Lease, Pool};
pub use node_lock::NodeLock;
pub use roster::{RosterAudit, RosterRow, RosterWrite};
pub use transfers::{ConsultRecord, TransferRecord};

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use smista_core::book::{AuditRecord, CostRecord, HoldRecord, PeriodTotals, Recovery, SettlementSink};
use smista_core::{Channel, DivertReason, Fallback, Outcome};
use sqlx::Row;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use db::{with_db, Db};
use writer::{Counters, Job, Op, Pending, Reply, Writer};

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
    /// Another node fenced this one (it had stopped renewing its leases, which were taken back):
    /// none of its writes will ever be committed again. The process must restart to rejoin.
    #[error("node `{0}` was fenced by another node: its ledger writes are refused; restart it to rejoin")]
    Fenced(String),
    /// Another process serves this node on this ledger (see [`NodeLock`]).
    #[error("{0}")]
    InUse(String),
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

/// One queued write, to wait for on its own ([`Ledger::durable_ticket`]).
#[derive(Debug, Clone)]
pub struct Ticket(watch::Receiver<Option<bool>>);

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

/// How a contact's life ended, with its detail: its *contact detail record* (see
/// [`Ledger::ended`] and the `history` module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactEnd {
    /// Contact id.
    pub contact: String,
    /// When it ended, Unix ms.
    pub ended_unix_ms: i64,
    /// Its last queue.
    pub queue: String,
    /// Channel.
    pub channel: Channel,
    /// Outcome.
    pub outcome: Outcome,
    /// Wait from arrival until acceptance or end, ms.
    pub waited_ms: u64,
    /// Handle time, ms (0 unless handled).
    pub handle_ms: u64,
    /// Wrap-up applied after a completion, ms.
    pub wrap_up_ms: u64,
    /// The operator who had it in service ("" if none did).
    pub operator: String,
    /// Why it was diverted, and where to, if it was.
    pub diverted: Option<(DivertReason, Fallback)>,
    /// The rest of its detail record: arrival, path, offers, group, supplier, cost.
    pub detail: Detail,
}

/// A contact that ended recently, for a restart to remember (see [`Ledger::recently_ended`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentEnd {
    /// Contact id.
    pub contact: String,
    /// Its last queue.
    pub queue: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Why it was diverted, and where to, if it was.
    pub diverted: Option<(DivertReason, Fallback)>,
}

/// What a waiter is waiting for: the writes about one contact, or one budget's amendments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// Holds and records of a contact.
    Contact(String),
    /// Amendments of a budget.
    Budget(String),
    /// State changes of an operator (their accounting).
    Operator(String),
    /// This life of the node's sign of life, and everything queued before it.
    Node,
}

/// The durable ledger, on SQLite or PostgreSQL.
#[derive(Debug)]
pub struct Ledger {
    db: Db,
    write_db: Db,
    /// This node's id in a shared ledger ("" alone).
    node: String,
    /// This life's number in `node_epochs` (one more at every opening).
    epoch: i64,
    /// Turns true, for good, once the node is fenced.
    fenced: Arc<watch::Sender<bool>>,
    jobs: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    /// Set when closing starts: [`Ledger::durable`] answers `Closed` from then on.
    closed: std::sync::atomic::AtomicBool,
    pending: Arc<Pending>,
    seq: AtomicU64,
    counters: Arc<Counters>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Ledger {
    /// Opens (or creates) the SQLite ledger at `path` and starts its writer.
    pub async fn open(path: &Path) -> Result<Ledger, LedgerError> {
        Self::connect(&Target::Sqlite { path: path.to_owned(), create: true }).await
    }

    /// Opens an existing SQLite ledger (for reports); [`LedgerError::Missing`] if there is none.
    pub async fn open_existing(path: &Path) -> Result<Ledger, LedgerError> {
        Self::connect(&Target::Sqlite { path: path.to_owned(), create: false }).await
    }

    /// Opens the ledger at `target` (creating its tables) and starts its writer.
    pub async fn connect(target: &Target) -> Result<Ledger, LedgerError> {
        Self::connect_as(target, "").await
    }

    /// [`connect`](Self::connect) for node `node` of several sharing the ledger: its records and
    /// holds carry the node's id, and it may take budget leases ([`Ledger::acquire_lease`]).
    ///
    /// On PostgreSQL the node registers a new *epoch* (one more than its last), which fences any
    /// earlier process that ran under the same id: from now on only this one's writes commit.
    pub async fn connect_as(target: &Target, node: &str) -> Result<Ledger, LedgerError> {
        let (db, write_db) = db::open(target).await?;
        // Every opening is a new life of the node: its epoch (also the event stream's epoch).
        let register = db.sql(
            "INSERT INTO node_epochs (node_id, epoch) VALUES (?, 1)
             ON CONFLICT (node_id) DO UPDATE SET epoch = node_epochs.epoch + 1 RETURNING epoch",
        );
        let epoch: i64 = with_db!(&db, p => sqlx::query(&register)
        .bind(node)
        .fetch_one(p)
        .await?
        .try_get(0)?);
        // The fence matters where several processes write: PostgreSQL, under a node id.
        let fence = matches!(db, Db::Postgres(_)) && !node.is_empty();
        let fenced = Arc::new(watch::Sender::new(false));
        let next_seq: i64 = with_db!(&db, p => sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM amendments")
            .fetch_one(p)
            .await?
            .try_get("s")?);
        let (jobs, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let last_error = Arc::new(Mutex::new(None));
        let pending = Arc::new(DashMap::new());
        let me = Writer { node: node.to_owned(), epoch, fence, fenced: fenced.clone() };
        let writer = tokio::spawn(writer::group_commit(
            write_db.clone(),
            me,
            rx,
            counters.clone(),
            pending.clone(),
            last_error.clone(),
            next_seq + 1,
        ));
        Ok(Ledger {
            db,
            write_db,
            node: node.to_owned(),
            epoch,
            fenced,
            jobs: Mutex::new(Some(jobs)),
            closed: std::sync::atomic::AtomicBool::new(false),
            pending,
            seq: AtomicU64::new(1),
            counters,
            writer: Mutex::new(Some(writer)),
            last_error,
        })
    }

    /// Whether this ledger is on PostgreSQL.
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
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
        self.check_fence()?;
        let (tx, rx) = oneshot::channel();
        self.send((Op::Settle(r, None), Reply::Record(tx)))?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Queues `op` and remembers it as the last write about `key`.
    fn submit(&self, key: Key, op: Op) -> Ticket {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        self.pending.insert(key.clone(), (seq, rx.clone()));
        if self.send((op, Reply::Keyed(key.clone(), seq, tx))).is_err() {
            // Closed: the dropped sender makes waiters see `Closed`; nothing more to do here.
            self.pending.remove_if(&key, |_, (s, _)| *s == seq);
        }
        Ticket(rx)
    }

    /// Waits until the one write `ticket` stands for is durable — not the later writes about
    /// the same key, which [`Ledger::durable`] would wait for too (an operator's next change,
    /// made while the reply about this one waits, must not hold that reply for another commit).
    /// Errors as [`Ledger::durable`].
    pub async fn durable_ticket(&self, ticket: Ticket) -> Result<(), LedgerError> {
        self.check_fence()?;
        let mut rx = ticket.0;
        let committed = rx.wait_for(Option::is_some).await.map(|v| *v == Some(true)).unwrap_or(false);
        self.check_fence()?;
        if committed {
            Ok(())
        } else {
            Err(LedgerError::Closed)
        }
    }

    /// Waits until every write queued so far about `key` is durable. Returns at once if none is
    /// pending; [`LedgerError::Closed`] if the ledger closed first; [`LedgerError::Fenced`] once
    /// the node is fenced, even with nothing pending (what it answers can no longer be made
    /// durable, so it acknowledges nothing more).
    pub async fn durable(&self, key: &Key) -> Result<(), LedgerError> {
        self.check_fence()?;
        let Some(rx) = self.pending.get(key).map(|e| e.1.clone()) else { return Ok(()) };
        self.durable_ticket(Ticket(rx)).await
    }

    /// Fenced, or closing: nothing more can be made durable, so nothing more may be
    /// acknowledged — also for a key whose write already failed and is pending no more.
    fn check_fence(&self) -> Result<(), LedgerError> {
        if *self.fenced.borrow() {
            Err(LedgerError::Fenced(self.node.clone()))
        } else if self.closed.load(Ordering::Acquire) {
            Err(LedgerError::Closed)
        } else {
            Ok(())
        }
    }

    /// Turns true, for good, when another node fences this one (see [`LedgerError::Fenced`]).
    #[must_use]
    pub fn fenced(&self) -> watch::Receiver<bool> {
        self.fenced.subscribe()
    }

    /// The epoch this node registered with: one more at every opening of the ledger by it.
    #[must_use]
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Queues the end of a contact's life (any outcome) with its detail: its contact detail
    /// record, one per life of every contact, budgeted or not. [`Ledger::durable`] of the
    /// contact waits for it.
    pub fn ended(&self, e: ContactEnd) {
        self.submit(Key::Contact(e.contact.clone()), Op::End(e));
    }

    /// Queues the *service record* of a contact accepted by an operator no budget pays for it
    /// (internal staff, a queue without a budget): a hold of no budget (`budget` empty, amount
    /// 0), so that after a restart or a takeover it is known to be in service with `operator`
    /// (it comes back in [`Recovery::holds`] with an empty budget) and is never routed to a
    /// second operator. Its end record ([`Ledger::ended`]) removes it in the same transaction.
    /// [`Ledger::durable`] of the contact waits for it.
    pub fn serving(&self, h: HoldRecord) {
        debug_assert!(h.budget.is_empty() && h.amount_cents == 0);
        self.submit(Key::Contact(h.contact.clone()), Op::Hold(h));
    }

    /// How `contact`'s latest life ended, from its detail record: its end record, or the cost
    /// record that carries its detail (none for a cost record written without one, by an older
    /// smista; see [`Ledger::settled`]).
    pub async fn end_of(&self, contact: &str) -> Result<Option<ContactEnd>, LedgerError> {
        let sql = self.db.sql(&history::latest_of_sql()).into_owned();
        with_db!(&self.db, p => {
            let row = sqlx::query(&sql).bind(contact).bind(contact).fetch_optional(p).await?;
            row.as_ref().map(history::end_from_row).transpose()
        })
    }

    /// The contacts this node's records say ended since `since_unix_ms`, the latest life of
    /// each id first (a leg an operator transferred inside the centre is not an end: its cost
    /// record carries no detail record): a restart remembers them (`Engine::remember_ended`) so that requests about
    /// them get the answers they got before it.
    pub async fn recently_ended(&self, since_unix_ms: i64) -> Result<Vec<RecentEnd>, LedgerError> {
        let sql = self.db.sql(
            "SELECT contact_id, queue, outcome, '' AS divert_reason, '' AS fallback, completed_unix_ms AS at
             FROM cost_records WHERE completed_unix_ms >= ? AND node_id = ?
                  AND (outcome <> 'transferred' OR arrived_unix_ms > 0)
             UNION ALL
             SELECT contact_id, queue, outcome, divert_reason, fallback, ended_unix_ms AS at
             FROM contact_ends WHERE ended_unix_ms >= ? AND node_id = ?
             ORDER BY at DESC",
        );
        with_db!(&self.db, p => {
            let rows = sqlx::query(&sql)
                .bind(since_unix_ms)
                .bind(&self.node)
                .bind(since_unix_ms)
                .bind(&self.node)
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(RecentEnd {
                        contact: r.try_get("contact_id")?,
                        queue: r.try_get("queue")?,
                        outcome: outcome(&r.try_get::<String, _>("outcome")?)?,
                        diverted: diversion(&r.try_get::<String, _>("divert_reason")?, &r.try_get::<String, _>("fallback")?),
                    })
                })
                .collect()
        })
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
        let sql = self.db.sql(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(cost_cents), 0) AS BIGINT) AS cost
             FROM cost_records WHERE budget_id = ? AND period = ?",
        );
        with_db!(&self.db, p => {
            let row = sqlx::query(&sql).bind(budget).bind(period).fetch_one(p).await?;
            Ok(Totals { contacts: row.try_get("n")?, cost_cents: row.try_get("cost")? })
        })
    }

    /// `budget`'s spend in `period` per quarter hour of completion, from every node's cost
    /// records: (quarter-hour start, cents, contacts), in order (for burn-down reports).
    pub async fn spend_by_quarter_hour(&self, budget: &str, period: &str) -> Result<Vec<(i64, i64, i64)>, LedgerError> {
        let sql = self.db.sql(
            "SELECT (completed_unix_ms / 900000) * 900000 AS q, CAST(SUM(cost_cents) AS BIGINT) AS cost, COUNT(*) AS n
             FROM cost_records WHERE budget_id = ? AND period = ? GROUP BY q ORDER BY q",
        );
        with_db!(&self.db, p => {
            sqlx::query(&sql)
                .bind(budget)
                .bind(period)
                .fetch_all(p)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("q")?, r.try_get("cost")?, r.try_get("n")?)))
                .collect()
        })
    }

    /// The settled record of `contact`'s latest life, if any (for an idempotent completion after
    /// a restart).
    pub async fn settled(&self, contact: &str) -> Result<Option<CostRecord>, LedgerError> {
        let sql = self.db.sql("SELECT * FROM cost_records WHERE contact_id = ? ORDER BY accepted_unix_ms DESC LIMIT 1");
        with_db!(&self.db, p => {
            let row = sqlx::query(&sql).bind(contact).fetch_optional(p).await?;
            row.map(|r| cost_record(&r)).transpose()
        })
    }

    /// Every cost record of `contact`, one per leg a budget paid, in order of acceptance.
    pub async fn cost_records_of(&self, contact: &str) -> Result<Vec<CostRecord>, LedgerError> {
        let sql = self.db.sql("SELECT * FROM cost_records WHERE contact_id = ? ORDER BY accepted_unix_ms");
        with_db!(&self.db, p => {
            let rows = sqlx::query(&sql).bind(contact).fetch_all(p).await?;
            rows.iter().map(cost_record).collect()
        })
    }

    /// What a restart needs to rebuild the budgets: amendments in order, settled totals per
    /// budget and period (with overrun), and the holds of contacts still in service — of this
    /// node's records only, when several nodes share the ledger (each spends within its lease).
    pub async fn recovery(&self) -> Result<Recovery, LedgerError> {
        let periods_sql = self.db.sql(
            "SELECT budget_id, period, CAST(SUM(cost_cents) AS BIGINT) AS settled,
                    CAST(SUM(CASE WHEN cost_cents > reserved_cents THEN cost_cents - reserved_cents ELSE 0 END)
                         AS BIGINT) AS overrun
             FROM cost_records WHERE node_id = ? GROUP BY budget_id, period ORDER BY budget_id, period",
        );
        let holds_sql = self.db.sql("SELECT * FROM holds WHERE node_id = ? ORDER BY accepted_unix_ms");
        with_db!(&self.db, p => {
            let amendments = sqlx::query("SELECT * FROM amendments ORDER BY seq")
                .fetch_all(p)
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
            let periods = sqlx::query(&periods_sql)
            .bind(&self.node)
            .fetch_all(p)
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
            let holds = sqlx::query(&holds_sql)
                .bind(&self.node)
                .fetch_all(p)
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
                        arrived_unix_ms: r.try_get("arrived_unix_ms")?,
                    })
                })
                .collect::<Result<Vec<_>, LedgerError>>()?;
            Ok(Recovery { amendments, periods, holds })
        })
    }

    /// Spend per budget, period, queue and operator group.
    pub async fn report(&self) -> Result<Vec<ReportRow>, LedgerError> {
        self.report_of("", "").await
    }

    /// [`Ledger::report`] of one budget and one period (an empty one: every).
    pub async fn report_of(&self, budget: &str, period: &str) -> Result<Vec<ReportRow>, LedgerError> {
        let sql = self.db.sql(
            "SELECT budget_id, period, queue, operator_group, COUNT(*) AS n,
                    CAST(SUM(CASE WHEN outcome = 'cancelled_in_service' THEN 1 ELSE 0 END) AS BIGINT) AS hung_up,
                    CAST(SUM(cost_cents) AS BIGINT) AS cost, CAST(SUM(handle_ms) AS BIGINT) AS handle
             FROM cost_records WHERE (? = '' OR budget_id = ?) AND (? = '' OR period = ?)
             GROUP BY budget_id, period, queue, operator_group
             ORDER BY budget_id, period, queue, operator_group",
        );
        with_db!(&self.db, p => {
            let rows = sqlx::query(&sql)
                .bind(budget)
                .bind(budget)
                .bind(period)
                .bind(period)
                .fetch_all(p)
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
        })
    }

    /// Stops accepting writes, waits for the writer to commit what it has, closes the pool.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        drop(self.jobs.lock().take());
        let writer = self.writer.lock().take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        self.write_db.close().await;
        self.db.close().await;
    }
}

impl SettlementSink for Ledger {
    fn record(&self, r: &CostRecord) {
        self.submit(Key::Contact(r.contact.clone()), Op::Settle(r.clone(), None));
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

fn outcome(name: &str) -> Result<Outcome, LedgerError> {
    Outcome::parse(name).ok_or_else(|| LedgerError::Corrupt(format!("unknown outcome `{name}`")))
}

fn diversion(reason: &str, fallback: &str) -> Option<(DivertReason, Fallback)> {
    Some((DivertReason::parse(reason)?, Fallback::parse(fallback)?))
}

fn channel(name: &str) -> Result<Channel, LedgerError> {
    Channel::parse(name).ok_or_else(|| LedgerError::Corrupt(format!("unknown channel `{name}`")))
}

/// A `cost_records` row.
fn cost_record<'r, R>(r: &'r R) -> Result<CostRecord, LedgerError>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
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
}
