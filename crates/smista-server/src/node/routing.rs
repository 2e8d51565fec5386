//! Serves the routing API while this node may: the one place that assembles the gRPC services
//! (authentication, leadership fence, the four `smista.v1` services, health, reflection), the
//! metrics endpoint and the background tasks, and the graceful shutdown sequence.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use smista_proto::v1::admin_service_server::AdminServiceServer;
use smista_proto::v1::appointment_service_server::AppointmentServiceServer;
use smista_proto::v1::contact_service_server::ContactServiceServer;
use smista_proto::v1::operator_service_server::OperatorServiceServer;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use super::build::build_shared;
use super::exposed;
use super::{Listeners, ServeError};
use crate::config::Config;
use crate::edge::auth::AuthLayer;
use crate::edge::transport::Tls;
use crate::service::admin::AdminSvc;
use crate::service::appointment::AppointmentSvc;
use crate::service::contact::ContactSvc;
use crate::service::operator::OperatorSvc;
use crate::tasks::insecure::warn_insecure;
use crate::tasks::reload::reload_loop;
use crate::tasks::tick::tick_loop;
use tokio::net::TcpListener;

/// What a node that took over an active/standby group's leadership routes with.
#[derive(Debug, Clone)]
pub(crate) struct Active {
    /// For this long, queues whose desks have not logged in again queue instead of diverting.
    pub(crate) staff_grace: Duration,
    /// The leadership: no call is answered, and no reply frame sent, after it lapses.
    pub(crate) leadership: Arc<crate::edge::leadership::Leadership>,
}

/// Routes until `shutdown` resolves, then drains (see [`serve`]).
pub(crate) async fn serve_routing(
    cfg: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
    active: Option<Active>,
) -> Result<(), ServeError> {
    let (grpc_addr, metrics_addr) = listeners.addrs()?;
    // Refused without --insecure by `serve`; with it, said every hour.
    let insecure = exposed(cfg, grpc_addr) || exposed(cfg, metrics_addr);
    let handle = crate::metrics::install().map_err(ServeError::Metrics)?;
    crate::metrics::set_insecure(insecure);
    let tls = match &cfg.tls {
        Some(t) => Some(Arc::new(Tls::new(t).map_err(ServeError::Security)?)),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = build_shared(cfg, stop_rx.clone()).await?;
    if let Some(a) = &active {
        shared.engine.set_staff_grace(shared.clock.now().plus(a.staff_grace.as_millis() as u64));
    }
    if insecure {
        tokio::spawn(warn_insecure(grpc_addr, metrics_addr, stop_rx.clone()));
    }
    tracing::info!(
        tls = tls.is_some(),
        mutual_tls = cfg.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
        open = shared.gate.auth.is_open(),
        api_keys = cfg.auth.api_keys.len(),
        jwt = cfg.auth.jwt.is_some(),
        roster = shared.roster.mode().as_str(),
        "trust boundary"
    );
    if cfg.auth.configured() && shared.roster.mode() == crate::config::roster::RosterMode::Open {
        tracing::warn!("[roster] mode = \"open\" with [auth]: operators not on the roster log in with the group, skills and channels their desk states (and so choose who pays); see docs/roster.md");
    }
    let reloader = tokio::spawn(reload_loop(tls.clone(), shared.clone(), stop_rx.clone()));
    let leases = cfg
        .leased()
        .then(|| tokio::spawn(crate::tasks::lease::keep(shared.clone(), cfg.cluster.clone(), stop_rx.clone())));

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<ContactServiceServer<ContactSvc>>().await;
    reporter.set_serving::<OperatorServiceServer<OperatorSvc>>().await;
    reporter.set_serving::<AdminServiceServer<AdminSvc>>().await;
    reporter.set_serving::<AppointmentServiceServer<AppointmentSvc>>().await;
    reporter.set_service_status("", ServingStatus::Serving).await;
    let (reflection, reflection_v1alpha) = reflection()?;
    // Serves through the drain below; stopped at the end (or dropped on an early return).
    let health_only = listeners.health.map(|l| serve_health(l, health.clone(), &cfg.limits));

    let ticker = tokio::spawn(tick_loop(
        shared.clone(),
        Duration::from_millis(cfg.server.tick_ms),
        i64::try_from(cfg.ledger.recovered_hold_max_age_ms).unwrap_or(i64::MAX),
        stop_rx.clone(),
    ));
    let metrics_http = tokio::spawn(crate::edge::metrics_http::serve_http(
        listeners.metrics,
        handle,
        crate::edge::metrics_http::HttpLimits::of(&cfg.limits),
        stop_rx.clone(),
    ));
    if cfg.history.enabled {
        tokio::spawn(crate::tasks::history::staffing_loop(shared.clone(), stop_rx.clone()));
    }
    if shared.ledger.is_some() {
        let every = Duration::from_millis(cfg.roster.refresh_ms);
        tokio::spawn(crate::tasks::roster::refresh_loop(shared.clone(), every, stop_rx.clone()));
    }
    if let (Some(ledger), days @ 1..) = (shared.ledger.clone(), cfg.history.retention_days) {
        tokio::spawn(crate::tasks::history::purge_loop(ledger, days, stop_rx.clone()));
    }
    if cfg.privacy.per_operator_reports {
        tracing::info!(agreement = %cfg.privacy.agreement, "per-operator reports enabled (workforce role, every read audited)");
    }
    if let Some(ledger) = shared.ledger.clone() {
        let days = cfg.privacy.operator_retention_days;
        tokio::spawn(crate::tasks::history::operator_purge_loop(ledger, days, stop_rx.clone()));
    }

    let draining = shared.clone();
    let fence = shared.ledger.as_ref().map(|l| l.fenced());
    let was_fenced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fenced_flag = was_fenced.clone();
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            () = wait_fenced(fence) => {
                // Another node took this one's leases back while it was out of reach: nothing it
                // writes will be committed, so it must not route (or acknowledge) anything more.
                tracing::error!("fenced by another node: this node stops routing now and exits; restart it to rejoin");
                fenced_flag.store(true, Ordering::Release);
            }
        }
        tracing::info!(drain_ms = drain.as_millis() as u64, "shutting down: draining");
        draining.draining.store(true, Ordering::Release);
        reporter.set_not_serving::<ContactServiceServer<ContactSvc>>().await;
        reporter.set_not_serving::<OperatorServiceServer<OperatorSvc>>().await;
        reporter.set_not_serving::<AdminServiceServer<AdminSvc>>().await;
        reporter.set_not_serving::<AppointmentServiceServer<AppointmentSvc>>().await;
        reporter.set_service_status("", ServingStatus::NotServing).await;
        let _ = stop_tx.send(true);
        draining.board.close_all();
        tokio::time::sleep(drain).await;
    };

    // Nagle is disabled on every accepted connection (small request/response messages).
    let lim = &cfg.limits;
    let incoming = crate::edge::transport::incoming(listeners.grpc, tls, crate::edge::transport::ConnLimits::of(lim));
    let keepalive = (lim.keepalive_interval_ms > 0).then(|| Duration::from_millis(lim.keepalive_interval_ms));
    tonic::transport::Server::builder()
        .max_concurrent_streams(lim.max_streams_per_connection)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_millis(lim.keepalive_timeout_ms)))
        .timeout(Duration::from_millis(lim.request_timeout_ms))
        .http2_max_header_list_size(64 * 1024)
        .layer(crate::edge::decode::DecodeErrorLayer)
        .layer(AuthLayer(shared.gate.clone()))
        .layer(crate::edge::leadership::LeaderLayer(active.map(|a| a.leadership)))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(crate::service::events::ContactRoutes::new(ContactSvc(shared.clone())))
        .add_service(OperatorServiceServer::new(OperatorSvc(shared.clone())))
        .add_service(AdminServiceServer::new(AdminSvc(shared.clone())))
        .add_service(AppointmentServiceServer::new(AppointmentSvc(shared.clone())))
        .serve_with_incoming_shutdown(incoming, stop)
        .await?;

    let _ = ticker.await;
    let _ = metrics_http.await;
    let _ = reloader.await;
    if let Some(l) = leases {
        let _ = l.await;
    }
    // Every acknowledged completion is already durable; commit what is still queued and close.
    if let Some(l) = &shared.ledger {
        l.close().await;
    }
    let now = shared.clock.now();
    let snap = shared.engine.snapshot(now);
    let waiting: u32 = snap.queues.iter().map(|q| q.waiting).sum();
    let in_service: u32 = snap.queues.iter().map(|q| q.in_service).sum();
    tracing::info!(waiting, in_service, last_event = shared.log.latest(), "stopped");
    if let Some(h) = health_only {
        h.stop().await;
    }
    if was_fenced.load(Ordering::Acquire) {
        return Err(ServeError::Fenced);
    }
    Ok(())
}

/// The reflection services, v1 and v1alpha (grpcurl and GUIs newer and older, Python's
/// grpcio-reflection), describing smista's services and the health protocol.
pub(crate) fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ServeError,
> {
    let described = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(smista_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((described().build_v1()?, described().build_v1alpha()?))
}

/// A task that stops when this is dropped, or (waiting until it has) with [`AbortOnDrop::stop`].
pub(crate) struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    /// Stops the task and returns once it is gone (what it held, e.g. a listener, is closed).
    pub(crate) async fn stop(mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Serves only the gRPC health protocol on `listener`, in plaintext and without authentication,
/// until the returned guard is dropped: the `[server] health_addr` listener for probes that
/// cannot speak TLS. It answers what `health` answers on the main port (the same reporter),
/// nothing else; probes see NOT_SERVING through a drain, as long as the guard lives. Its
/// connections are bounded as the main port's are (`[limits]`: caps, the deadline from accept to
/// the HTTP/2 preface).
pub(crate) fn serve_health(
    listener: TcpListener,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    limits: &crate::config::limits::LimitsSection,
) -> AbortOnDrop {
    let limits = crate::edge::transport::ConnLimits::of(limits);
    AbortOnDrop(Some(tokio::spawn(async move {
        let incoming = crate::edge::transport::incoming(listener, None, limits);
        if let Err(e) = tonic::transport::Server::builder()
            .timeout(Duration::from_secs(10))
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "the gRPC health listener stopped");
        }
    })))
}

/// Resolves once the ledger says this node was fenced (never without a ledger).
async fn wait_fenced(fence: Option<watch::Receiver<bool>>) {
    if let Some(mut rx) = fence {
        if rx.wait_for(|f| *f).await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}
