//! Certificate, key and JWKS reloads, on SIGHUP or when a certificate file changes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::Shared;
use crate::edge::transport::Tls;

/// Reloads certificates, keys and the JWKS on SIGHUP or when a certificate file changes. Open
/// connections keep the configuration they were accepted with; a failed reload keeps the current
/// one and is logged and counted.
pub(crate) async fn reload_loop(tls: Option<Arc<Tls>>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let poll = tls.as_ref().map_or(Duration::from_secs(3600), |t| t.poll());
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        let asked = tokio::select! {
            _ = stop.changed() => return,
            _ = hangup => true,
            _ = tokio::time::sleep(poll) => false,
        };
        if !asked && !tls.as_ref().is_some_and(|t| t.changed()) {
            continue;
        }
        let r = match &tls {
            Some(t) => t.reload(),
            None => Ok(()),
        }
        .and_then(|()| shared.gate.auth.reload());
        crate::metrics::tls_reloaded(r.is_ok());
        match r {
            Ok(()) => tracing::info!(signal = asked, "certificates, keys and JWKS reloaded"),
            Err(e) => tracing::error!(error = %e, "reload failed: the previous certificates and keys stay in use"),
        }
    }
}
