//! Group commit: one writer task takes every write waiting in its queue and commits them in one
//! transaction, so many completions share one fsync (SQLite) or one commit round trip
//! (PostgreSQL). A failed commit is retried with back-off, never dropped, while the ledger is
//! open; its waiters wait.
//!
//! **Fencing** (PostgreSQL, a node among several): every transaction first reads this node's
//! epoch in `node_epochs` with a share lock. If another node has fenced this one (it stopped
//! renewing its leases and they were taken back, see `lease.rs`), the epoch has moved on: the
//! batch is refused, and so is every later one, at once and for good — a write that arrives after
//! its money went back to the pool must never be committed. The share lock makes a fence and a
//! batch serialise: the batch either commits before the fence (and the reclaim that follows the
//! fence counts it) or sees the new epoch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use smista_core::book::{AuditRecord, CostRecord, HoldRecord};
use tokio::sync::{mpsc, oneshot, watch};

use crate::db::{with_db, Db};
use crate::{ContactEnd, Key, LedgerError};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

#[derive(Debug)]
pub(crate) enum Op {
    /// A cost record, with the contact's detail record when its end was in the same batch.
    Settle(CostRecord, Option<Box<ContactEnd>>),
    Hold(HoldRecord),
    Release {
        budget: String,
        contact: String,
    },
    Amend(AuditRecord),
    End(ContactEnd),
    /// An operator state change, numbered in this life of the node.
    State(smista_core::accounting::Change, i64),
    /// This life of the node was running at this instant (Unix ms).
    Alive(i64),
    /// An operator moved a contact on (its leg's service row ends with it).
    Transfer(TransferRecord),
    /// An operator asked for a consultation.
    Consult(ConsultRecord),
}

#[derive(Debug)]
pub(crate) enum Reply {
    None,
    Record(oneshot::Sender<Result<bool, LedgerError>>),
    Keyed(Key, u64, watch::Sender<Option<bool>>),
}

pub(crate) type Job = (Op, Reply);

/// The last write queued per key, until committed: its sequence number and a receiver that turns
/// `Some(true)` once it is committed (`Some(false)`: it never will be).
pub(crate) type Pending = DashMap<Key, (u64, watch::Receiver<Option<bool>>)>;

/// Why a batch was not committed.
#[derive(Debug)]
pub(crate) enum BatchError {
    /// The database failed: retry.
    Db(sqlx::Error),
    /// This node was fenced: never retry.
    Fenced,
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Db(e)
    }
}

/// Who writes: the node's id and, when several nodes share a PostgreSQL ledger, the epoch it
/// registered with (0: no fence) and where to say that it was fenced.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub(crate) node: String,
    pub(crate) epoch: i64,
    /// Whether batches check the epoch (PostgreSQL, under a node id).
    pub(crate) fence: bool,
    pub(crate) fenced: Arc<watch::Sender<bool>>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) errors: AtomicU64,
}

pub(crate) async fn group_commit(
    db: Db,
    me: Writer,
    mut rx: mpsc::UnboundedReceiver<Job>,
    counters: Arc<Counters>,
    pending: Arc<Pending>,
    last_error: Arc<Mutex<Option<String>>>,
    mut next_seq: i64,
) {
    while let Some(first) = rx.recv().await {
        // The waiters woken by the last commit usually submit their next write at once: let
        // them, so it joins this batch instead of waiting a whole commit for the next one (with
        // 64 completers this doubles the records per fsync).
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // A budgeted contact's end committed with its cost record rides in it (its detail goes
        // into the record's columns): one row per contact. The end's waiter is answered with
        // the batch.
        let covered = merge_ends(&mut batch);
        // Ends of contacts (their detail records), then operator state changes and signs of
        // life go last: they depend on nothing else in the batch, and each kind together makes
        // one statement. Interleaved with holds and records, every state change was a statement
        // of its own, and the closed loop's durable completions halved (issue 28's A/B).
        batch.sort_by_key(|(op, _)| match op {
            Op::End(_) => 1,
            Op::State(..) => 2,
            Op::Alive(_) => 3,
            _ => 0,
        });
        let mut backoff = Duration::from_millis(20);
        let outcome = loop {
            if *me.fenced.borrow() {
                break Err(LedgerError::Fenced(me.node.clone()));
            }
            match write_batch(&db, &me, &batch, next_seq).await {
                Ok(fresh) => break Ok(fresh),
                Err(BatchError::Fenced) => {
                    *last_error.lock() = Some(format!("node {} fenced by another node", me.node));
                    me.fenced.send_replace(true);
                    break Err(LedgerError::Fenced(me.node.clone()));
                }
                Err(BatchError::Db(e)) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    *last_error.lock() = Some(e.to_string());
                    // Keep trying while anyone may still submit; once closing, give up.
                    if rx.is_closed() {
                        break Err(LedgerError::Storage(e.to_string()));
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
                let replies =
                    batch.into_iter().map(|(_, r)| r).zip(fresh).chain(covered.into_iter().map(|r| (r, true)));
                for (reply, new) in replies {
                    match reply {
                        Reply::None => {}
                        Reply::Record(tx) => {
                            let _ = tx.send(Ok(new));
                        }
                        Reply::Keyed(key, seq, tx) => {
                            // Forget it first: a woken waiter must not still see it pending.
                            pending.remove_if(&key, |_, (s, _)| *s == seq);
                            let _ = tx.send(Some(true));
                        }
                    }
                }
            }
            Err(err) => {
                for reply in batch.into_iter().map(|(_, r)| r).chain(covered) {
                    match reply {
                        Reply::None => {}
                        Reply::Record(tx) => {
                            let _ = tx.send(Err(err.clone()));
                        }
                        Reply::Keyed(key, seq, tx) => {
                            pending.remove_if(&key, |_, (s, _)| *s == seq);
                            let _ = tx.send(Some(false));
                        }
                    }
                }
            }
        }
    }
}

/// This node's epoch, share-locked to the end of the transaction (only with `fence`, so on
/// PostgreSQL: SQLite has no fence and no `FOR SHARE`).
const FENCE: &str = "SELECT epoch FROM node_epochs WHERE node_id = $1 FOR SHARE";
const RECORD_COLUMNS: &str = "INSERT INTO cost_records (budget_id, contact_id, period, queue, operator_group,
     operator_id, channel, accepted_unix_ms, completed_unix_ms, handle_ms, cost_cents, reserved_cents, outcome, node_id,
     waited_ms, wrap_up_ms, arrived_unix_ms, received_unix_ms, answered_unix_ms, first_queue, overflows, segment, offers,
     supplier, caller_key, transfers, consultation_of)
     VALUES ";
const RECORD_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const RECORD_TAIL: &str = " ON CONFLICT (budget_id, contact_id, accepted_unix_ms) DO NOTHING
     RETURNING budget_id, contact_id, accepted_unix_ms";
const HOLD_COLUMNS: &str = "INSERT INTO holds (budget_id, contact_id, period, amount_cents, queue, operator_group,
     operator_id, channel, accepted_unix_ms, node_id, arrived_unix_ms) VALUES ";
const HOLD_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const HOLD_TAIL: &str = " ON CONFLICT (budget_id, contact_id) DO NOTHING RETURNING budget_id, contact_id";
const DELETE_HOLDS: &str = "DELETE FROM holds WHERE (budget_id, contact_id) IN (VALUES ";
const END_COLUMNS: &str = "INSERT INTO contact_ends (contact_id, ended_unix_ms, queue, channel, outcome, waited_ms,
     handle_ms, wrap_up_ms, operator_id, divert_reason, fallback, node_id, arrived_unix_ms, received_unix_ms,
     answered_unix_ms, first_queue, overflows, segment, offers, operator_group, supplier, budget_id, cost_cents,
     caller_key, transfers, consultation_of) VALUES ";
const END_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const END_TAIL: &str = " ON CONFLICT (contact_id, ended_unix_ms) DO NOTHING";
const STATE_COLUMNS: &str = "INSERT INTO operator_states (node_id, epoch, seq, operator_id, operator_group, at_unix_ms,
     fact, detail, value_ms) VALUES ";
const STATE_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
const STATE_TAIL: &str = " ON CONFLICT (node_id, epoch, seq) DO NOTHING";
/// A node life's durable state changes are signs of life too: a life that dies (kill -9) is
/// counted until the later of its last `Alive` and its last change, so no acknowledged change
/// falls after its end.
const ALIVE_AT_LEAST: &str = "INSERT INTO node_lives (node_id, epoch, seen_unix_ms) VALUES (?, ?, ?)
     ON CONFLICT (node_id, epoch) DO UPDATE SET seen_unix_ms = excluded.seen_unix_ms
     WHERE node_lives.seen_unix_ms < excluded.seen_unix_ms";
const INSERT_AMENDMENT: &str = "INSERT INTO amendments (seq, at_unix_ms, budget_id, actor, note, field, old_value,
     new_value, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
const INSERT_AMENDMENT_NUMBERED: &str = "INSERT INTO amendments (at_unix_ms, budget_id, actor, note, field,
     old_value, new_value, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";

/// `head` + `n` copies of `row` separated by commas + `tail`.
fn rows(head: &str, row: &str, n: usize, tail: &str) -> String {
    let mut s = String::with_capacity(head.len() + (row.len() + 2) * n + tail.len());
    s.push_str(head);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(row);
    }
    s.push_str(tail);
    s
}

/// Moves into its cost record the end of each contact settled in the same batch (same life: the
/// end's time is the record's completion); returns the replies of the ends so merged.
fn merge_ends(batch: &mut Vec<Job>) -> Vec<Reply> {
    let settled: std::collections::HashMap<(String, i64), usize> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, (op, _))| match op {
            Op::Settle(r, None) => Some(((r.contact.clone(), r.completed_unix_ms), i)),
            _ => None,
        })
        .collect();
    if settled.is_empty() {
        return Vec::new();
    }
    let mut covered = Vec::new();
    let mut kept = Vec::with_capacity(batch.len());
    let mut ends = Vec::new();
    for (i, job) in std::mem::take(batch).into_iter().enumerate() {
        match job {
            (Op::End(e), reply) if settled.contains_key(&(e.contact.clone(), e.ended_unix_ms)) => {
                ends.push((settled[&(e.contact.clone(), e.ended_unix_ms)], e, reply));
            }
            other => kept.push((i, other)),
        }
    }
    for (target, e, reply) in ends {
        if let Some((_, (Op::Settle(_, slot), _))) = kept.iter_mut().find(|(i, _)| *i == target) {
            *slot = Some(Box::new(e));
        }
        covered.push(reply);
    }
    *batch = kept.into_iter().map(|(_, j)| j).collect();
    covered
}

/// The kind of a run of consecutive writes of a batch, written as one statement.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Settle,
    Hold,
    Release,
    Amend,
    End,
    State,
    Alive,
    Transfer,
    Consult,
}

fn kind(op: &Op) -> Kind {
    match op {
        Op::Settle(..) => Kind::Settle,
        Op::Hold(_) => Kind::Hold,
        Op::Release { .. } => Kind::Release,
        Op::Amend(_) => Kind::Amend,
        Op::End(_) => Kind::End,
        Op::State(..) => Kind::State,
        Op::Alive(_) => Kind::Alive,
        Op::Transfer(_) => Kind::Transfer,
        Op::Consult(_) => Kind::Consult,
    }
}

/// Marks, in order, which writes of a run changed something: the first write of each key the
/// database reports as inserted; a repeat of it (in the same run or already stored) did not.
fn fresh_flags<K: Eq + std::hash::Hash>(keys: Vec<K>, mut inserted: std::collections::HashSet<K>) -> Vec<bool> {
    keys.into_iter().map(|k| inserted.remove(&k)).collect()
}

/// Writes a batch in one transaction, each run of consecutive writes of one kind as one
/// multi-row statement (their order across kinds kept: a hold and the settlement that ends it
/// may share a batch); returns, per write, whether it changed anything, and the next amendment
/// sequence number (SQLite; PostgreSQL numbers them itself).
async fn write_batch(db: &Db, me: &Writer, batch: &[Job], mut seq: i64) -> Result<(Vec<bool>, i64), BatchError> {
    use sqlx::Row;
    let node = me.node.as_str();
    let numbered = db.numbers_amendments();
    let amend = db.sql(if numbered { INSERT_AMENDMENT_NUMBERED } else { INSERT_AMENDMENT });
    let alive = db.sql(ALIVE_AT_LEAST);
    // The runs, and their statements, are built before the transaction starts. A run is cut
    // into chunks of power-of-two sizes (50 = 32 + 16 + 2), so that the same few statements
    // recur and stay in the connection's prepared-statement cache: preparing a fresh 50-row
    // INSERT on every commit cost more than the commit's fsync.
    let mut runs: Vec<(Kind, &[Job], String)> = Vec::new();
    let mut i = 0;
    while i < batch.len() {
        let k = kind(&batch[i].0);
        let mut j = i + 1;
        let single = matches!(k, Kind::Amend | Kind::Alive | Kind::Transfer | Kind::Consult);
        while j < batch.len() && kind(&batch[j].0) == k && !single {
            j += 1;
        }
        let n = 1usize << (usize::BITS - 1 - (j - i).leading_zeros());
        let j = i + n;
        let sql = match k {
            Kind::Settle => rows(RECORD_COLUMNS, RECORD_ROW, n, RECORD_TAIL),
            Kind::Hold => rows(HOLD_COLUMNS, HOLD_ROW, n, HOLD_TAIL),
            Kind::Release => rows(DELETE_HOLDS, "(?, ?)", n, ")"),
            Kind::Amend => String::new(),
            Kind::End => rows(END_COLUMNS, END_ROW, n, END_TAIL),
            Kind::State => rows(STATE_COLUMNS, STATE_ROW, n, STATE_TAIL),
            Kind::Alive => ALIVE_AT_LEAST.to_owned(),
            Kind::Transfer => INSERT_TRANSFER.to_owned(),
            Kind::Consult => INSERT_CONSULT.to_owned(),
        };
        runs.push((k, &batch[i..j], db.sql(&sql).into_owned()));
        i = j;
    }
    with_db!(db, pool => {
        let mut tx = pool.begin().await?;
        if me.fence {
            let row = sqlx::query(FENCE).bind(node).fetch_optional(&mut *tx).await?;
            let now: i64 = row.map(|r| r.try_get(0)).transpose()?.unwrap_or(-1);
            if now != me.epoch {
                return Err(BatchError::Fenced);
            }
        }
        let mut fresh = Vec::with_capacity(batch.len());
        for (k, run, sql) in &runs {
            match k {
                Kind::Settle => {
                    let recs: Vec<(&CostRecord, Option<&ContactEnd>)> = run
                        .iter()
                        .filter_map(|(op, _)| if let Op::Settle(r, e) = op { Some((r, e.as_deref())) } else { None })
                        .collect();
                    let mut q = sqlx::query(sql);
                    for (r, e) in &recs {
                        let d = e.map(|e| &e.detail);
                        q = q
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
                            .bind(node)
                            .bind(e.map_or(0, |e| i64::try_from(e.waited_ms).unwrap_or(i64::MAX)))
                            .bind(e.map_or(0, |e| i64::try_from(e.wrap_up_ms).unwrap_or(i64::MAX)))
                            .bind(d.map_or(0, |d| d.arrived_unix_ms))
                            .bind(d.map_or(0, |d| d.received_unix_ms))
                            .bind(d.map_or(0, |d| d.answered_unix_ms))
                            .bind(d.map_or("", |d| d.first_queue.as_str()))
                            .bind(d.map_or_else(String::new, |d| crate::encode_overflows(&d.overflows)))
                            .bind(d.map_or("", |d| d.segment.as_str()))
                            .bind(d.map_or_else(String::new, |d| crate::encode_offers(&d.offers)))
                            .bind(d.map_or("", |d| d.supplier.as_str()))
                            .bind(d.map_or("", |d| d.caller_key.as_str()))
                            .bind(d.map_or_else(String::new, |d| crate::encode_transfers(&d.transfers)))
                            .bind(d.map_or("", |d| d.consultation_of.as_str()));
                    }
                    let mut inserted = std::collections::HashSet::new();
                    for row in q.fetch_all(&mut *tx).await? {
                        let key: (String, String, i64) =
                            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                        inserted.insert(key);
                    }
                    // The settled contacts' holds go in the same transaction.
                    let del = db.sql(&rows(DELETE_HOLDS, "(?, ?)", recs.len(), ")")).into_owned();
                    let mut q = sqlx::query(&del);
                    for (r, _) in &recs {
                        q = q.bind(&r.budget).bind(&r.contact);
                    }
                    q.execute(&mut *tx).await?;
                    let keys =
                        recs.iter().map(|(r, _)| (r.budget.clone(), r.contact.clone(), r.accepted_unix_ms)).collect();
                    fresh.extend(fresh_flags(keys, inserted));
                }
                Kind::Hold => {
                    let holds: Vec<&HoldRecord> =
                        run.iter().filter_map(|(op, _)| if let Op::Hold(h) = op { Some(h) } else { None }).collect();
                    let mut q = sqlx::query(sql);
                    for h in &holds {
                        q = q
                            .bind(&h.budget)
                            .bind(&h.contact)
                            .bind(&h.period)
                            .bind(h.amount_cents)
                            .bind(&h.queue)
                            .bind(&h.group)
                            .bind(&h.operator)
                            .bind(h.channel.as_str())
                            .bind(h.accepted_unix_ms)
                            .bind(node)
                            .bind(h.arrived_unix_ms);
                    }
                    let mut inserted = std::collections::HashSet::new();
                    for row in q.fetch_all(&mut *tx).await? {
                        let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
                        inserted.insert(key);
                    }
                    let keys = holds.iter().map(|h| (h.budget.clone(), h.contact.clone())).collect();
                    fresh.extend(fresh_flags(keys, inserted));
                }
                Kind::Transfer => {
                    for (op, _) in run.iter() {
                        if let Op::Transfer(t) = op {
                            let r = sqlx::query(sql)
                                .bind(&t.contact)
                                .bind(t.at_unix_ms)
                                .bind(&t.from_operator)
                                .bind(&t.from_queue)
                                .bind(&t.to_queue)
                                .bind(&t.to_operator)
                                .bind(t.pinned_until_unix_ms)
                                .bind(i64::try_from(t.handle_ms).unwrap_or(i64::MAX))
                                .bind(i64::try_from(t.wrap_up_ms).unwrap_or(i64::MAX))
                                .bind(t.arrived_unix_ms)
                                .bind(t.paid.join(","))
                                .bind(node)
                                .bind(&t.consultation)
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query(&db.sql(END_SERVICE))
                                .bind(&t.contact)
                                .execute(&mut *tx)
                                .await?;
                            if !t.consultation.is_empty() && r.rows_affected() > 0 {
                                // A hand-over: the consultation's service row and budget hold are
                                // the contact's now, dated after the leg that ended.
                                sqlx::query(&db.sql(HAND_OVER))
                                    .bind(&t.contact)
                                    .bind(t.accepted_unix_ms)
                                    .bind(t.accepted_unix_ms)
                                    .bind(&t.consultation)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                            fresh.push(r.rows_affected() > 0);
                        }
                    }
                }
                Kind::Consult => {
                    for (op, _) in run.iter() {
                        if let Op::Consult(c) = op {
                            let r = sqlx::query(sql)
                                .bind(&c.consultation)
                                .bind(&c.contact)
                                .bind(&c.from_operator)
                                .bind(&c.to_queue)
                                .bind(&c.to_operator)
                                .bind(c.asked_unix_ms)
                                .bind(node)
                                .execute(&mut *tx)
                                .await?;
                            fresh.push(r.rows_affected() > 0);
                        }
                    }
                }
                Kind::Release => {
                    let mut q = sqlx::query(sql);
                    for (op, _) in run.iter() {
                        if let Op::Release { budget, contact } = op {
                            q = q.bind(budget).bind(contact);
                        }
                    }
                    q.execute(&mut *tx).await?;
                    // Nobody waits on a release's result.
                    fresh.extend(std::iter::repeat_n(true, run.len()));
                }
                Kind::End => {
                    let mut q = sqlx::query(sql);
                    for (op, _) in run.iter() {
                        if let Op::End(e) = op {
                            q = q
                                .bind(&e.contact)
                                .bind(e.ended_unix_ms)
                                .bind(&e.queue)
                                .bind(e.channel.as_str())
                                .bind(e.outcome.as_str())
                                .bind(i64::try_from(e.waited_ms).unwrap_or(i64::MAX))
                                .bind(i64::try_from(e.handle_ms).unwrap_or(i64::MAX))
                                .bind(i64::try_from(e.wrap_up_ms).unwrap_or(i64::MAX))
                                .bind(&e.operator)
                                .bind(e.diverted.map_or("", |d| d.0.as_str()))
                                .bind(e.diverted.map_or("", |d| d.1.as_str()))
                                .bind(node)
                                .bind(e.detail.arrived_unix_ms)
                                .bind(e.detail.received_unix_ms)
                                .bind(e.detail.answered_unix_ms)
                                .bind(&e.detail.first_queue)
                                .bind(crate::encode_overflows(&e.detail.overflows))
                                .bind(&e.detail.segment)
                                .bind(crate::encode_offers(&e.detail.offers))
                                .bind(&e.detail.group)
                                .bind(&e.detail.supplier)
                                .bind(&e.detail.budget)
                                .bind(e.detail.cost_cents)
                                .bind(&e.detail.caller_key)
                                .bind(crate::encode_transfers(&e.detail.transfers))
                                .bind(&e.detail.consultation_of);
                        }
                    }
                    q.execute(&mut *tx).await?;
                    // A contact that was in service with no budget paying for it had a service
                    // row (a hold of no budget): it ends here, in the same transaction.
                    let served: Vec<&str> = run
                        .iter()
                        .filter_map(|(op, _)| match op {
                            Op::End(e) if !e.operator.is_empty() => Some(e.contact.as_str()),
                            _ => None,
                        })
                        .collect();
                    if !served.is_empty() {
                        let del = db.sql(&rows(DELETE_HOLDS, "('', ?)", served.len(), ")")).into_owned();
                        let mut q = sqlx::query(&del);
                        for c in served {
                            q = q.bind(c);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    fresh.extend(std::iter::repeat_n(true, run.len()));
                }
                Kind::State => {
                    let mut q = sqlx::query(sql);
                    for (op, _) in run.iter() {
                        if let Op::State(c, seq) = op {
                            let (fact, detail, value) = c.fact.encode();
                            q = q
                                .bind(node)
                                .bind(me.epoch)
                                .bind(*seq)
                                .bind(&c.operator)
                                .bind(&c.group)
                                .bind(c.at_unix_ms)
                                .bind(fact)
                                .bind(detail)
                                .bind(value);
                        }
                    }
                    q.execute(&mut *tx).await?;
                    fresh.extend(std::iter::repeat_n(true, run.len()));
                }
                Kind::Alive => {
                    for (op, _) in run.iter() {
                        if let Op::Alive(at) = op {
                            sqlx::query(sql).bind(node).bind(me.epoch).bind(*at).execute(&mut *tx).await?;
                        }
                        fresh.push(true);
                    }
                }
                Kind::Amend => {
                    for (op, _) in run.iter() {
                        let Op::Amend(a) = op else { continue };
                        let q = sqlx::query(&amend);
                        let q = if numbered { q } else { q.bind(seq) };
                        q.bind(a.at_unix_ms)
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
                        fresh.push(true);
                    }
                }
            }
        }
        // The batch's state changes are this life's signs of life too (one statement).
        let last_state = batch.iter().filter_map(|(op, _)| match op {
            Op::State(c, _) => Some(c.at_unix_ms),
            _ => None,
        });
        if let Some(last) = last_state.max() {
            sqlx::query(&alive).bind(node).bind(me.epoch).bind(last).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok((fresh, seq))
    })
}

/// One transfer of a contact, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferRecord {
    /// The contact.
    pub contact: String,
    /// When the leg ended, Unix ms.
    pub at_unix_ms: i64,
    /// The operator whose leg ended.
    pub from_operator: String,
    /// The queue of that leg.
    pub from_queue: String,
    /// The queue the next leg waits in; empty: out of the centre.
    pub to_queue: String,
    /// The operator named for the next leg, if any.
    pub to_operator: String,
    /// Until when only `to_operator` may take it, Unix ms (0: no one named).
    pub pinned_until_unix_ms: i64,
    /// The leg's handle time.
    pub handle_ms: u64,
    /// The wrap-up that started.
    pub wrap_up_ms: u64,
    /// When the contact first arrived, Unix ms (it keeps its place).
    pub arrived_unix_ms: i64,
    /// The budgets that settled its legs so far (the per-contact fee across legs).
    pub paid: Vec<String>,
    /// A hand-over at the end of a consultation: the consultation's id (its operator carries on
    /// with the contact); empty for a blind transfer.
    pub consultation: String,
    /// A hand-over: when the ending leg was accepted, Unix ms (the next leg is dated after it).
    pub accepted_unix_ms: i64,
}

/// A consultation asked for (OperatorService.ConsultContact).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsultRecord {
    /// The consultation's id (a contact of its own).
    pub consultation: String,
    /// The contact it is about.
    pub contact: String,
    /// The operator who asked.
    pub from_operator: String,
    /// The queue it was asked of.
    pub to_queue: String,
    /// The operator named first, if any.
    pub to_operator: String,
    /// When, Unix ms.
    pub asked_unix_ms: i64,
}

pub(crate) const INSERT_CONSULT: &str = "INSERT INTO consultations (consultation_id, contact_id, from_operator,
     to_queue, to_operator, asked_unix_ms, node_id) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (consultation_id) DO NOTHING";
/// A hand-over moves the consultation's rows (its service row and its budget hold) to the
/// contact, its acceptance dated after the first operator's (`?` twice: that acceptance).
pub(crate) const HAND_OVER: &str = "UPDATE holds SET contact_id = ?,
     accepted_unix_ms = CASE WHEN accepted_unix_ms <= ? THEN ? + 1 ELSE accepted_unix_ms END
     WHERE contact_id = ?";

pub(crate) const INSERT_TRANSFER: &str = "INSERT INTO transfers (contact_id, at_unix_ms, from_operator, from_queue,
     to_queue, to_operator, pinned_until_unix_ms, handle_ms, wrap_up_ms, arrived_unix_ms, paid, node_id,
     consultation_id)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (contact_id, at_unix_ms) DO NOTHING";
/// The leg's service row (a hold of no budget) ends with the leg.
pub(crate) const END_SERVICE: &str = "DELETE FROM holds WHERE budget_id = '' AND contact_id = ?";
