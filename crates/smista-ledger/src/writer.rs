//! Group commit: one writer task takes every write waiting in its queue and commits them in one
//! transaction, so many completions share one fsync (SQLite) or one commit round trip
//! (PostgreSQL). A failed commit is retried with back-off, never dropped, while the ledger is
//! open; its waiters wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use smista_core::book::{AuditRecord, CostRecord, HoldRecord};
use tokio::sync::{mpsc, oneshot, watch};

use crate::db::{with_db, Db};
use crate::{Key, LedgerError};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

#[derive(Debug)]
pub(crate) enum Op {
    Settle(CostRecord),
    Hold(HoldRecord),
    Release { budget: String, contact: String },
    Amend(AuditRecord),
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

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) errors: AtomicU64,
}

pub(crate) async fn group_commit(
    db: Db,
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
            match write_batch(&db, &batch, next_seq).await {
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
                            // Forget it first: a woken waiter must not still see it pending.
                            pending.remove_if(&key, |_, (s, _)| *s == seq);
                            let _ = tx.send(Some(true));
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
                            pending.remove_if(&key, |_, (s, _)| *s == seq);
                            let _ = tx.send(Some(false));
                        }
                    }
                }
            }
        }
    }
}

const INSERT_RECORD: &str = "INSERT INTO cost_records (budget_id, contact_id, period, queue, operator_group,
     operator_id, channel, accepted_unix_ms, completed_unix_ms, handle_ms, cost_cents, reserved_cents, outcome)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (budget_id, contact_id, accepted_unix_ms) DO NOTHING";
const DELETE_HOLD: &str = "DELETE FROM holds WHERE budget_id = ? AND contact_id = ?";
const INSERT_HOLD: &str = "INSERT INTO holds (budget_id, contact_id, period, amount_cents, queue, operator_group,
     operator_id, channel, accepted_unix_ms)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (budget_id, contact_id) DO NOTHING";
const INSERT_AMENDMENT: &str = "INSERT INTO amendments (seq, at_unix_ms, budget_id, actor, note, field, old_value,
     new_value, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
const INSERT_AMENDMENT_NUMBERED: &str = "INSERT INTO amendments (at_unix_ms, budget_id, actor, note, field,
     old_value, new_value, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";

/// Writes a batch in one transaction; returns, per write, whether it changed anything, and the
/// next amendment sequence number (SQLite; PostgreSQL numbers them itself).
async fn write_batch(db: &Db, batch: &[Job], mut seq: i64) -> Result<(Vec<bool>, i64), sqlx::Error> {
    let (record, delete_hold, hold) = (db.sql(INSERT_RECORD), db.sql(DELETE_HOLD), db.sql(INSERT_HOLD));
    let numbered = db.numbers_amendments();
    let amend = db.sql(if numbered { INSERT_AMENDMENT_NUMBERED } else { INSERT_AMENDMENT });
    with_db!(db, pool => {
        let mut tx = pool.begin().await?;
        let mut fresh = Vec::with_capacity(batch.len());
        for (op, _) in batch {
            let changed = match op {
                Op::Settle(r) => {
                    let done = sqlx::query(&record)
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
                    sqlx::query(&delete_hold).bind(&r.budget).bind(&r.contact).execute(&mut *tx).await?;
                    done.rows_affected() == 1
                }
                Op::Hold(h) => {
                    let done = sqlx::query(&hold)
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
                    let done = sqlx::query(&delete_hold).bind(budget).bind(contact).execute(&mut *tx).await?;
                    done.rows_affected() == 1
                }
                Op::Amend(a) => {
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
                    true
                }
            };
            fresh.push(changed);
        }
        tx.commit().await?;
        Ok((fresh, seq))
    })
}
