//! The history's background work: purging records past their retention (contact records,
//! staffed time, operator state records), and writing the staffed time accounted in memory and
//! this node's sign of life to the ledger every 10 seconds.

use std::sync::Arc;

use crate::app::history::flush_staffing;

/// Deletes contact detail records older than `retention_days` (by their end): at start, then
/// hourly, in batches of 10,000 so that the group commit is never held up for long.
pub async fn purge_loop(
    ledger: Arc<smista_ledger::Ledger>,
    retention_days: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const BATCH: u32 = 10_000;
    loop {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let before = now - i64::from(retention_days) * 86_400_000;
        let mut purged = 0u64;
        loop {
            match ledger.purge_history(before, BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < u64::from(BATCH) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purging old contact records failed; retried in an hour");
                    break;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
        match ledger.purge_staffing(before).await {
            Ok(n) => purged += n,
            Err(e) => tracing::warn!(error = %e, "purging old staffed time failed; retried in an hour"),
        }
        if purged > 0 {
            tracing::info!(purged, retention_days, "old contact records and staffed time purged");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Deletes operator state records (the per-operator accounting) older than
/// `[privacy] operator_retention_days`: at start, then hourly, in batches of 10,000.
pub async fn operator_purge_loop(
    ledger: Arc<smista_ledger::Ledger>,
    retention_days: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const BATCH: u32 = 10_000;
    loop {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let before = now - i64::from(retention_days) * 86_400_000;
        let mut purged = 0u64;
        loop {
            match ledger.purge_operator_states(before, BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < u64::from(BATCH) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purging old operator state records failed; retried in an hour");
                    break;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
        if purged > 0 {
            tracing::info!(purged, retention_days, "old operator state records purged");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Flushes the staffed time every 10 seconds, and once more at shutdown; records this node's
/// sign of life with it (operators of a node that stopped count as logged in until then).
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
        let now = i64::try_from(s.clock.unix_ms(s.clock.now())).unwrap_or(i64::MAX);
        if let Err(e) = ledger.alive(now).await {
            tracing::warn!(error = %e, "sign of life not written; retried");
        }
        if done {
            return;
        }
    }
}
