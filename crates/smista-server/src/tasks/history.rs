//! The history's background work: purging records past their retention (contact records,
//! staffed time, operator state records), and writing the staffed time accounted in memory and
//! this node's sign of life to the ledger every 10 seconds.

use std::sync::Arc;

use crate::app::history::flush_staffing;

/// Rows deleted per statement: small enough that the group commit is never held up for long.
const BATCH: u32 = 10_000;

/// The Unix ms before which records older than `retention_days` lie, now.
fn cutoff(retention_days: u32) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    now - i64::from(retention_days) * 86_400_000
}

/// Calls `purge(before, BATCH)` until a batch comes back short; a failure is logged (naming
/// `what`) and left for the next hour. `None` when `stop` flipped meanwhile.
async fn in_batches<F, Fut>(
    mut purge: F,
    before: i64,
    what: &str,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Option<u64>
where
    F: FnMut(i64, u32) -> Fut,
    Fut: std::future::Future<Output = Result<u64, smista_ledger::LedgerError>>,
{
    let mut purged = 0u64;
    loop {
        match purge(before, BATCH).await {
            Ok(n) => {
                purged += n;
                if n < u64::from(BATCH) {
                    return Some(purged);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "purging old {what} failed; retried in an hour");
                return Some(purged);
            }
        }
        if *stop.borrow() {
            return None;
        }
    }
}

/// Waits an hour; `false` when `stop` flips first.
async fn an_hour(stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => true,
        _ = stop.changed() => false,
    }
}

/// Deletes contact detail records older than `retention_days` (by their end), and staffed time
/// as old: at start, then hourly, in batches.
pub async fn purge_loop(
    ledger: Arc<smista_ledger::Ledger>,
    retention_days: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let before = cutoff(retention_days);
        let Some(mut purged) = in_batches(|b, n| ledger.purge_history(b, n), before, "contact records", &stop).await
        else {
            return;
        };
        match ledger.purge_staffing(before).await {
            Ok(n) => purged += n,
            Err(e) => tracing::warn!(error = %e, "purging old staffed time failed; retried in an hour"),
        }
        if purged > 0 {
            tracing::info!(purged, retention_days, "old contact records and staffed time purged");
        }
        if !an_hour(&mut stop).await {
            return;
        }
    }
}

/// Deletes operator state records (the per-operator accounting) older than
/// `[privacy] operator_retention_days`: at start, then hourly, in batches.
pub async fn operator_purge_loop(
    ledger: Arc<smista_ledger::Ledger>,
    retention_days: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let before = cutoff(retention_days);
        let what = "operator state records";
        let Some(purged) = in_batches(|b, n| ledger.purge_operator_states(b, n), before, what, &stop).await else {
            return;
        };
        if purged > 0 {
            tracing::info!(purged, retention_days, "old operator state records purged");
        }
        if !an_hour(&mut stop).await {
            return;
        }
    }
}

/// Flushes the staffed time and the budgets' counters every 10 seconds, and once more at
/// shutdown; records this node's sign of life with them (operators of a node that stopped count
/// as logged in until then).
pub async fn staffing_loop(s: Arc<crate::app::Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(ledger) = s.ledger.clone() else { return };
    loop {
        let done = tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => false,
            _ = stop.changed() => true,
        };
        if let Err(e) = flush_staffing(&s, &ledger).await {
            tracing::warn!(error = %e, "staffed time not written; retried");
        }
        if let Err(e) = ledger.save_budget_counters(&s.budget_counters(s.clock.now())).await {
            tracing::warn!(error = %e, "budget counters not written; retried");
        }
        let now = i64::try_from(s.clock.unix_ms(s.clock.now())).unwrap_or(i64::MAX);
        if let Err(e) = ledger.alive(now).await {
            tracing::warn!(error = %e, "sign of life not written; retried");
        }
        if done {
            return;
        }
    }
}
