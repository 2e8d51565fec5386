//! Assembles and runs the server: gRPC services, health, reflection, the routing tick, the
//! metrics endpoint, and the graceful shutdown sequence.

pub mod build;
pub mod failover;
pub mod routing;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;

use crate::config::Config;
use routing::serve_routing;

/// Why the server could not run.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The engine refused the configuration.
    #[error("configuration: {0}")]
    Config(#[from] smista_core::ConfigError),
    /// The budgets are invalid.
    #[error("budgets: {0}")]
    Budget(#[from] smista_core::book::BudgetError),
    /// The budget ledger could not be opened or read.
    #[error("ledger: {0}")]
    Ledger(#[from] smista_ledger::LedgerError),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Binding or reading an address failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Credentials, keys or certificates could not be loaded.
    #[error("security configuration: {0}")]
    Security(String),
    /// The roster could not be read (the roster file) or restored (the ledger).
    #[error("roster: {0}")]
    Roster(String),
    /// The data directory is another server's, or holds a symbolic link where a file belongs.
    #[error(transparent)]
    DataDir(#[from] crate::datadir::DataDirError),
    /// This node lost its group's leadership (it could not renew it in time, or another node
    /// holds it): it stopped routing.
    #[error("lost the leadership of the active/standby group: stopped routing; restart to rejoin as a standby")]
    LostLeadership,
    /// Another node fenced this one (it could not renew its budget leases, which were taken back).
    #[error("fenced by another node: its ledger writes were refused; restart to rejoin with a new epoch")]
    Fenced,
    /// Asked to listen beyond loopback without TLS and authentication, and without `--insecure`.
    #[error(
        "refusing to serve {0} without TLS and authentication: configure [tls] and [auth] (see README, \"Running it securely\"), listen on loopback, or pass --insecure"
    )]
    Insecure(SocketAddr),
    /// Asked to serve metrics beyond loopback without TLS and authentication (open mode), and
    /// without `--insecure`: they show budgets, spend and queues to whoever reaches the port.
    #[error(
        "refusing to serve metrics on {0} without TLS and authentication (they show budgets, spend and queues): configure [tls] and [auth] (see README, \"Running it securely\"), listen on loopback, or pass --insecure"
    )]
    InsecureMetrics(SocketAddr),
}

/// Listeners bound by the caller (so tests and the binary can use port 0 and learn the port).
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// Prometheus `/metrics`.
    pub metrics: TcpListener,
    /// Plaintext gRPC health only (`[server] health_addr`), when configured: the health protocol
    /// and nothing else, for probes that cannot speak TLS.
    pub health: Option<TcpListener>,
}

/// A listen address that could not be bound, naming it and where it was set.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {addr} ({origin}): {source}")]
pub struct BindError {
    /// `gRPC`, `metrics` or `gRPC health`.
    pub what: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// Where the address came from: a flag, a variable, a configuration key, or the default.
    pub origin: String,
    /// The cause (e.g. the address is in use).
    pub source: std::io::Error,
}

impl Listeners {
    /// Binds both addresses.
    pub async fn bind(grpc: SocketAddr, metrics: SocketAddr) -> Result<Listeners, BindError> {
        Self::bind_from(grpc, metrics, ("[server] grpc_addr".into(), "[server] metrics_addr".into())).await
    }

    /// Binds both addresses; an error names the address and `origins` (gRPC's, metrics'): where
    /// each was set.
    pub async fn bind_from(
        grpc: SocketAddr,
        metrics: SocketAddr,
        origins: (String, String),
    ) -> Result<Listeners, BindError> {
        let grpc = listen(grpc).map_err(|source| BindError { what: "gRPC", addr: grpc, origin: origins.0, source })?;
        let metrics = listen(metrics).map_err(|source| BindError {
            what: "metrics",
            addr: metrics,
            origin: origins.1,
            source,
        })?;
        Ok(Listeners { grpc, metrics, health: None })
    }

    /// Binds the health-only listener at `addr`; an error names `origin`: where it was set.
    pub async fn bind_health(&mut self, addr: SocketAddr, origin: String) -> Result<(), BindError> {
        let l = listen(addr).map_err(|source| BindError { what: "gRPC health", addr, origin, source })?;
        self.health = Some(l);
        Ok(())
    }

    /// The bound addresses (grpc, metrics).
    pub fn addrs(&self) -> Result<(SocketAddr, SocketAddr), std::io::Error> {
        Ok((self.grpc.local_addr()?, self.metrics.local_addr()?))
    }
}

/// Listens on `addr` with a backlog of 4,096 connections waiting for their accept (the kernel
/// may cap it: `net.core.somaxconn`); the usual 128 overflows when thousands of desks reconnect
/// at once, and a connection dropped from a full backlog looks open to its client.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(unix)]
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(4096)
}

/// Whether serving on `addr` with this configuration exposes an open or plaintext API beyond
/// loopback (an IPv4-mapped loopback address, `[::ffff:127.0.0.1]`, is loopback).
pub(crate) fn exposed(cfg: &Config, addr: SocketAddr) -> bool {
    !addr.ip().to_canonical().is_loopback() && (cfg.tls.is_none() || !cfg.auth.configured())
}

/// Refuses to serve an open or plaintext API (gRPC) or the metrics beyond loopback unless
/// `--insecure`; [`serve`] checks it first, and the binary before it says it is listening.
pub fn check_exposure(cfg: &Config, listeners: &Listeners) -> Result<(), ServeError> {
    let (grpc, metrics) = listeners.addrs()?;
    if cfg.server.insecure {
        return Ok(());
    }
    if exposed(cfg, grpc) {
        return Err(ServeError::Insecure(grpc));
    }
    if exposed(cfg, metrics) {
        return Err(ServeError::InsecureMetrics(metrics));
    }
    Ok(())
}

/// What keeps a second process off this server's ledger, held while it routes: the data
/// directory's lock (SQLite), or the node's advisory lock on PostgreSQL for a single server (the
/// nodes of a `[cluster]` are kept apart by their leases and fences).
#[derive(Debug)]
enum Exclusive {
    Dir(#[allow(dead_code)] crate::datadir::DataDirLock),
    Node(#[allow(dead_code)] Option<smista_ledger::NodeLock>),
    None,
}

async fn exclusive(cfg: &Config) -> Result<Exclusive, ServeError> {
    Ok(match cfg.ledger.target(&cfg.server.data_dir) {
        Some(smista_ledger::Target::Sqlite { path, .. }) => {
            let lock = crate::datadir::lock(&cfg.server.data_dir)?;
            crate::datadir::secure(&cfg.server.data_dir, &path)?;
            Exclusive::Dir(lock)
        }
        Some(t) if !cfg.cluster.failover && cfg.cluster.node_id.is_empty() => {
            Exclusive::Node(smista_ledger::NodeLock::take(&t, &cfg.cluster.node_id).await?)
        }
        _ => Exclusive::None,
    })
}

/// Runs until `shutdown` resolves, then drains: health goes NOT_SERVING, new offers get
/// UNAVAILABLE, streams end, and after `drain` the transport stops. With `[cluster] failover`
/// the node first waits as a standby until it is its group's active (see `failover.rs`).
pub async fn serve(
    cfg: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), ServeError> {
    check_exposure(cfg, &listeners)?;
    let claim = claim(cfg).await?;
    serve_claimed(cfg, listeners, claim, shutdown, drain).await
}

/// This process's claim on its ledger (see [`claim`]), held until it stops serving.
#[derive(Debug)]
pub struct Claim(#[allow(dead_code)] Exclusive);

/// Claims the ledger for this process, or says which process holds it: the data directory's
/// lock on SQLite, the node's advisory lock for a single server on PostgreSQL. The binary
/// claims before it says it listens.
pub async fn claim(cfg: &Config) -> Result<Claim, ServeError> {
    Ok(Claim(exclusive(cfg).await?))
}

impl Claim {
    /// Gives the ledger back now (dropping it does too, but a PostgreSQL session closes in the
    /// background, after `serve` has returned).
    pub async fn release(self) {
        if let Exclusive::Node(Some(lock)) = self.0 {
            lock.release().await;
        }
    }
}

/// [`serve`] with the ledger already claimed.
pub async fn serve_claimed(
    cfg: &Config,
    mut listeners: Listeners,
    claim: Claim,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), ServeError> {
    check_exposure(cfg, &listeners)?;
    if let (None, Some(addr)) = (&listeners.health, cfg.server.health_addr) {
        listeners.bind_health(addr, "[server] health_addr".into()).await?;
    }
    let served = if cfg.cluster.failover {
        crate::node::failover::run(cfg, listeners, shutdown, drain).await
    } else {
        serve_routing(cfg, listeners, shutdown, drain, None).await
    };
    // Released before returning: a server started next in this process finds the ledger free.
    claim.release().await;
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port in use is reported with the address and where it was set, not as a bare io error.
    #[tokio::test]
    async fn a_busy_address_is_named_with_its_origin() {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let e = Listeners::bind_from(any, addr, ("set by --grpc-addr".into(), "set by SMISTA_METRICS_ADDR".into()))
            .await
            .expect_err("in use");
        let text = ServeError::from(e).to_string();
        assert!(
            text.starts_with(&format!("cannot listen for metrics on {addr} (set by SMISTA_METRICS_ADDR): ")),
            "{text}"
        );
    }
}
