//! Assembles and runs the server: gRPC services, health, reflection, the routing tick, the
//! metrics endpoint, and the graceful shutdown sequence.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use smista_core::book::BudgetBook;
use smista_core::Engine;
use smista_proto::v1::admin_service_server::AdminServiceServer;
use smista_proto::v1::contact_service_server::ContactServiceServer;
use smista_proto::v1::operator_service_server::OperatorServiceServer;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::config::{Config, LedgerKind};
use crate::service::admin::AdminSvc;
use crate::service::contact::ContactSvc;
use crate::service::operator::OperatorSvc;
use crate::service::Shared;
use smista_ledger::SqliteLedger;

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
}

/// Listeners bound by the caller (so tests and the binary can use port 0 and learn the port).
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// Prometheus `/metrics`.
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds both addresses.
    pub async fn bind(grpc: SocketAddr, metrics: SocketAddr) -> Result<Listeners, std::io::Error> {
        Ok(Listeners { grpc: TcpListener::bind(grpc).await?, metrics: TcpListener::bind(metrics).await? })
    }

    /// The bound addresses (grpc, metrics).
    pub fn addrs(&self) -> Result<(SocketAddr, SocketAddr), std::io::Error> {
        Ok((self.grpc.local_addr()?, self.metrics.local_addr()?))
    }
}

/// The routing state every service shares, built from the configuration: budget book (with its
/// durable ledger, from which a restart rebuilds the spend), engine, event log, offer board.
/// Streams end when `stop` flips to true. The services are thin wrappers around it
/// (`ContactSvc(shared.clone())`...), so benches can call them without a network.
pub async fn build_shared(cfg: &Config, stop: watch::Receiver<bool>) -> Result<Arc<Shared>, ServeError> {
    let clock = crate::service::Clock::default();
    let mut book = BudgetBook::new(&cfg.budgets, clock.epoch_unix_ms())?;
    let ledger = match cfg.ledger.kind {
        LedgerKind::Sqlite => {
            std::fs::create_dir_all(&cfg.server.data_dir)?;
            let path = cfg.server.data_dir.join(LEDGER_FILE);
            let ledger = Arc::new(SqliteLedger::open(&path).await?);
            let recovery = ledger.recovery().await?;
            book = book.with_sink(ledger.clone());
            let done = book.restore(&recovery, clock.now());
            for s in &done.skipped {
                tracing::warn!(what = %s, "ledger entry not restored");
            }
            tracing::info!(
                ledger = %path.display(),
                amendments = done.amendments,
                settled_cents = done.settled_cents,
                contacts_in_service = done.holds,
                "budgets restored from the ledger"
            );
            Some(ledger)
        }
        LedgerKind::None => {
            if !cfg.budgets.is_empty() {
                tracing::warn!("[ledger] kind = \"none\": budget spend is kept in memory only and lost on restart");
            }
            None
        }
    };
    let book = Arc::new(book);
    let engine = Arc::new(Engine::new(&cfg.engine_config(), book.clone())?);
    Ok(Arc::new(Shared::new(engine, book, ledger, clock, cfg, stop)))
}

/// The ledger's file name in the data directory.
pub const LEDGER_FILE: &str = "ledger.db";

/// Runs until `shutdown` resolves, then drains: health goes NOT_SERVING, new offers get
/// UNAVAILABLE, streams end, and after `drain` the transport stops.
pub async fn serve(
    cfg: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), ServeError> {
    let handle = crate::metrics::install().map_err(ServeError::Metrics)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = build_shared(cfg, stop_rx.clone()).await?;

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<ContactServiceServer<ContactSvc>>().await;
    reporter.set_serving::<OperatorServiceServer<OperatorSvc>>().await;
    reporter.set_serving::<AdminServiceServer<AdminSvc>>().await;
    reporter.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(smista_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let ticker = tokio::spawn(tick_loop(
        shared.clone(),
        Duration::from_millis(cfg.server.tick_ms),
        i64::try_from(cfg.ledger.recovered_hold_max_age_ms).unwrap_or(i64::MAX),
        stop_rx.clone(),
    ));
    let metrics_http = tokio::spawn(crate::metrics::serve_http(listeners.metrics, handle, stop_rx.clone()));

    let draining = shared.clone();
    let stop = async move {
        shutdown.await;
        tracing::info!(drain_ms = drain.as_millis() as u64, "shutting down: draining");
        draining.draining.store(true, Ordering::Release);
        reporter.set_not_serving::<ContactServiceServer<ContactSvc>>().await;
        reporter.set_not_serving::<OperatorServiceServer<OperatorSvc>>().await;
        reporter.set_not_serving::<AdminServiceServer<AdminSvc>>().await;
        reporter.set_service_status("", ServingStatus::NotServing).await;
        let _ = stop_tx.send(true);
        draining.board.close_all();
        tokio::time::sleep(drain).await;
    };

    // Small request/response messages: disable Nagle on every accepted connection (tonic's own
    // `tcp_nodelay` only applies when it binds the listener itself).
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listeners.grpc), |s| {
        s.and_then(|s| {
            s.set_nodelay(true)?;
            Ok(s)
        })
    });
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(ContactServiceServer::new(ContactSvc(shared.clone())))
        .add_service(OperatorServiceServer::new(OperatorSvc(shared.clone())))
        .add_service(AdminServiceServer::new(AdminSvc(shared.clone())))
        .serve_with_incoming_shutdown(incoming, stop)
        .await?;

    let _ = ticker.await;
    let _ = metrics_http.await;
    // Every acknowledged completion is already durable; commit what is still queued and close.
    if let Some(l) = &shared.ledger {
        l.close().await;
    }
    let now = shared.clock.now();
    let snap = shared.engine.snapshot(now);
    let waiting: u32 = snap.queues.iter().map(|q| q.waiting).sum();
    let in_service: u32 = snap.queues.iter().map(|q| q.in_service).sum();
    tracing::info!(waiting, in_service, last_event = shared.log.latest(), "stopped");
    Ok(())
}

/// Runs the engine's clock: offer time-outs, maximum waits, wrap-up ends, skill expansion; and
/// refreshes the gauges about once a second.
async fn tick_loop(shared: Arc<Shared>, period: Duration, hold_max_age_ms: i64, mut stop: watch::Receiver<bool>) {
    let mut iv = tokio::time::interval(period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let every = (1000 / period.as_millis().max(1)).max(1) as u64;
    let mut n = 0u64;
    let mut ev = Vec::new();
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            _ = stop.changed() => return,
        }
        let now = shared.clock.now();
        shared.engine.tick(now, &mut ev);
        shared.publish(&ev, now);
        ev.clear();
        if n % every == 0 {
            crate::metrics::refresh_gauges(&shared.engine, now);
            for h in shared.book.expire_recovered(now, hold_max_age_ms) {
                tracing::warn!(budget = %h.budget, queue = %h.queue, amount_cents = h.amount_cents, accepted_unix_ms = h.accepted_unix_ms, "no completion arrived for a contact recovered at restart: reservation released");
                shared.release_recovering(&h.operator, now);
            }
            crate::metrics::refresh_budget_gauges(&shared.book, now);
            crate::metrics::refresh_ledger(shared.ledger.as_deref(), &shared.book);
        }
        n += 1;
    }
}
