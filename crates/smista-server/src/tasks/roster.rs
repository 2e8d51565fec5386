//! The roster's refresh: every `[roster] refresh_ms` a node re-reads the roster from the ledger
//! and applies what other nodes sharing it changed (`app::roster::refresh`), and tries again to
//! log out operators whose entry changed while they had contacts in service. With the ledger out
//! of reach it keeps its last roster, says so, and tries again at the next round.

use std::sync::Arc;
use std::time::Duration;

/// Refreshes the roster every `every` until `stop` flips.
pub async fn refresh_loop(s: Arc<crate::app::Shared>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        match crate::app::roster::refresh(&s).await {
            Ok(n) => {
                if failing {
                    tracing::info!("roster read from the ledger again");
                }
                failing = false;
                if n > 0 {
                    tracing::info!(entries = n, "roster changes from other nodes applied");
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "the roster cannot be read from the ledger: the last one read stays in force; retried");
                }
                failing = true;
            }
        }
    }
}
