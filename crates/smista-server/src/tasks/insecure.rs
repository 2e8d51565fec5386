//! The hourly reminder that a server runs exposed without TLS and authentication.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

/// Repeats, every hour, that the server is exposed without TLS or authentication.
pub(crate) async fn warn_insecure(addr: SocketAddr, metrics: SocketAddr, mut stop: watch::Receiver<bool>) {
    loop {
        tracing::warn!(grpc = %addr, metrics = %metrics, "INSECURE: serving beyond loopback without TLS and authentication (--insecure)");
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
