//! Active/standby (`[cluster] failover = true`): any number of `smista serve` nodes share one
//! configuration and one PostgreSQL; exactly one of them, the *active*, routes.
//!
//! Life of a node:
//! 1. **Standby.** It listens on its addresses but routes nothing: gRPC health answers
//!    NOT_SERVING for `smista.v1.ContactService`, `OperatorService` and `AdminService` (so a
//!    load balancer with gRPC health checks sends traffic to the active only), and every
//!    `smista.v1` call gets UNAVAILABLE with the active's advertised address in the
//!    `smista-active` metadata. Every `leader_renew_ms` it tries to take the group's leadership
//!    lease (`smista_ledger::Elector`).
//! 2. **Takeover.** Once it holds the lease it stops the standby listener and starts routing as
//!    a restarted node would: it opens the ledger under the group's identity (which moves that
//!    identity's epoch on and so fences every later write of the previous active), rebuilds the
//!    budgets and the contacts in service from the holds, and starts a new event-stream epoch.
//!    Desks log in again; the telephony platform offers again the contacts that were waiting,
//!    with their original arrival times. For `takeover_grace_ms` a queue whose desks have not
//!    logged in yet queues its contacts instead of diverting them NO_OPERATORS.
//! 3. **Active.** It renews the lease every `leader_renew_ms`. It counts the lease's time to
//!    live from *before* each renewal was sent, on its own monotonic clock; if no renewal has
//!    succeeded when that runs out (less one renewal period of margin) — the database is out of
//!    reach, or another node holds the lease — it stops routing at once and exits with an
//!    error, before the lease can have expired anywhere else. Its supervisor restarts it as a
//!    standby.
//! 4. **Handover.** On SIGTERM the active drains (offers are refused with UNAVAILABLE, desks'
//!    streams end so they reconnect to the next active), commits what its ledger holds, and then
//!    releases the lease, so a standby takes over at its next attempt instead of after expiry.

use std::future::Future;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use smista_ledger::Elector;
use smista_proto::v1::admin_service_server::AdminServiceServer;
use smista_proto::v1::appointment_service_server::AppointmentServiceServer;
use smista_proto::v1::contact_service_server::ContactServiceServer;
use smista_proto::v1::operator_service_server::OperatorServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Status;
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::edge::transport::Tls;
use crate::node::{Listeners, ServeError};
use crate::service::admin::AdminSvc;
use crate::service::appointment::AppointmentSvc;
use crate::service::contact::ContactSvc;
use crate::service::operator::OperatorSvc;

/// The metadata key naming the active node's address on a standby's UNAVAILABLE.
pub const ACTIVE_HEADER: &str = "smista-active";

/// Runs one node of an active/standby group until `shutdown` (see the module docs).
pub async fn run(
    cfg: &Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), ServeError> {
    let c = &cfg.cluster;
    let target = cfg
        .ledger
        .target(&cfg.server.data_dir)
        .ok_or_else(|| ServeError::Security("active/standby needs the PostgreSQL ledger".into()))?;
    let address =
        if c.advertise_addr.is_empty() { listeners.grpc.local_addr()?.to_string() } else { c.advertise_addr.clone() };
    let elector = Elector::connect(&target, &c.group, &c.node_id, &address).await?;
    let (term_tx, term) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = term_tx.send(true);
    });
    crate::metrics::set_leader(&c.group, None);
    let Some((epoch, sent)) = standby(cfg, &listeners, &elector, term.clone()).await? else {
        tracing::info!("stopped while standby");
        elector.close().await;
        return Ok(());
    };
    tracing::info!(group = %c.group, node = %c.node_id, epoch, "active: taking over");
    crate::metrics::set_leader(&c.group, Some(epoch));
    let (lost_tx, lost) = watch::channel(false);
    // Counted from before the winning attempt was sent, less a renewal period of margin.
    let leadership = crate::edge::leadership::Leadership::until(
        sent + Duration::from_millis(c.leader_ttl_ms) - Duration::from_millis(c.leader_renew_ms),
    );
    let keeper = tokio::spawn(keep(
        elector.clone(),
        c.group.clone(),
        epoch,
        leadership.clone(),
        Duration::from_millis(c.leader_ttl_ms),
        Duration::from_millis(c.leader_renew_ms),
        lost_tx,
    ));
    let mut stop_term = term.clone();
    let mut stop_lost = lost.clone();
    let stop = async move {
        tokio::select! {
            _ = stop_term.wait_for(|t| *t) => tracing::info!("handing over: draining, then releasing the leadership"),
            _ = stop_lost.wait_for(|l| *l) => {
                tracing::error!("leadership not renewed in time: this node stops routing now and exits; a standby takes over");
            }
        }
    };
    // Without the lease, waiting for requests stuck on an unreachable database would keep the
    // process (and its desks' connections) hanging: after the drain, stop hard. What was not
    // durable was not acknowledged.
    let mut lost_hard = lost.clone();
    let hard_stop = async move {
        let _ = lost_hard.wait_for(|l| *l).await;
        tokio::time::sleep(drain + Duration::from_millis(300)).await;
    };
    let active = crate::node::routing::Active {
        staff_grace: Duration::from_millis(c.takeover_grace_ms),
        leadership: leadership.clone(),
    };
    let served = tokio::select! {
        r = crate::node::routing::serve_routing(cfg, listeners, stop, drain, Some(active)) => r,
        () = hard_stop => Err(ServeError::LostLeadership),
    };
    keeper.abort();
    // Whatever happens next, this process answers nothing more as the active.
    leadership.revoke();
    crate::metrics::set_leader(&c.group, None);
    if *lost.borrow() {
        elector.close().await;
        return served.and(Err(ServeError::LostLeadership));
    }
    // Everything is committed (the ledger closed): let a standby take over now.
    match elector.release(epoch).await {
        Ok(()) => tracing::info!(epoch, "leadership released"),
        Err(e) => tracing::warn!(error = %e, "leadership not released: a standby takes over after its expiry"),
    }
    elector.close().await;
    served
}

/// Waits as a standby until this node takes the leadership (`Some(epoch, when the winning
/// attempt was sent)`) or `term` (`None`).
async fn standby(
    cfg: &Config,
    listeners: &Listeners,
    elector: &Elector,
    mut term: watch::Receiver<bool>,
) -> Result<Option<(i64, Instant)>, ServeError> {
    let c = &cfg.cluster;
    let handle = crate::metrics::install().map_err(ServeError::Metrics)?;
    let tls = match &cfg.tls {
        Some(t) => Some(Arc::new(Tls::new(t).map_err(ServeError::Security)?)),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics_http = tokio::spawn(crate::edge::metrics_http::serve_http(
        clone(&listeners.metrics)?,
        handle,
        crate::edge::metrics_http::HttpLimits::of(&cfg.limits),
        stop_rx.clone(),
    ));
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_not_serving::<ContactServiceServer<ContactSvc>>().await;
    reporter.set_not_serving::<OperatorServiceServer<OperatorSvc>>().await;
    reporter.set_not_serving::<AdminServiceServer<AdminSvc>>().await;
    reporter.set_not_serving::<AppointmentServiceServer<AppointmentSvc>>().await;
    // The process itself is healthy (liveness): only the routing services are not here.
    reporter.set_service_status("", ServingStatus::Serving).await;
    let (reflection, reflection_v1alpha) = crate::node::routing::reflection()?;
    let health_only = match &listeners.health {
        Some(l) => Some(crate::node::routing::serve_health(clone(l)?, health.clone(), &cfg.limits)),
        None => None,
    };
    let active = Arc::new(Mutex::new(String::new()));
    let lim = &cfg.limits;
    let incoming =
        crate::edge::transport::incoming(clone(&listeners.grpc)?, tls, crate::edge::transport::ConnLimits::of(lim));
    let mut stopped = stop_rx.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(StandbyLayer(active.clone()))
            .add_service(health)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }),
    );
    tracing::info!(group = %c.group, node = %c.node_id, "standby: waiting to take over");
    let every = Duration::from_millis(c.leader_renew_ms);
    let ttl = i64::try_from(c.leader_ttl_ms).unwrap_or(i64::MAX);
    let mut last_error_logged = Instant::now() - Duration::from_secs(60);
    let won = loop {
        let sent = Instant::now();
        match elector.try_acquire(ttl).await {
            Ok(Some(epoch)) => break Some((epoch, sent)),
            Ok(None) => {
                if let Ok(Some(l)) = elector.current().await {
                    let mut a = active.lock();
                    if *a != l.address {
                        tracing::info!(active = %l.node, address = %l.address, epoch = l.epoch, "the group's active node");
                        a.clone_from(&l.address);
                    }
                }
            }
            Err(e) => {
                if last_error_logged.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(error = %e, "standby: cannot reach the leadership lease");
                    last_error_logged = Instant::now();
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = term.wait_for(|t| *t) => break None,
        }
    };
    let _ = stop_tx.send(true);
    // The routing server takes the health listener over (connections wait in its backlog).
    if let Some(h) = health_only {
        h.stop().await;
    }
    // Open streams (a health Watch) must not hold the takeover up.
    if tokio::time::timeout(Duration::from_millis(200), server).await.is_err() {
        tracing::debug!("standby listener still had open streams: dropped");
    }
    let _ = metrics_http.await;
    Ok(won)
}

/// Renews the leadership of `epoch` until it fails for longer than the lease allows; then
/// revokes `leadership` and flips `lost`. Each success moves the leadership's end to the
/// renewal's send time plus the time to live, less one renewal period of margin.
async fn keep(
    elector: Elector,
    group: String,
    epoch: i64,
    leadership: Arc<crate::edge::leadership::Leadership>,
    ttl: Duration,
    every: Duration,
    lost: watch::Sender<bool>,
) {
    let mut last_ok = Instant::now();
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::time::sleep(every).await;
        let sent = Instant::now();
        // The lease runs from the database's clock when the statement ran, which is after
        // `sent`: counting from `sent`, less a renewal period of margin, is never late.
        let Some(valid_until) = leadership.valid_until().filter(|u| *u > sent) else {
            // Lapsed while this task was not running (the process was stopped): the calls
            // are already refused; another node may be the active by now.
            tracing::error!(epoch, "the leadership lapsed before it could be renewed (was the process stopped?)");
            leadership.revoke();
            let _ = lost.send(true);
            return;
        };
        // A renewal that has not answered by the deadline is as good as failed.
        match tokio::time::timeout(valid_until - sent, elector.renew(epoch, ttl_ms)).await {
            Ok(Ok(true)) => {
                leadership.extend(sent + ttl - every);
                last_ok = sent;
            }
            Ok(Ok(false)) => {
                tracing::error!(epoch, "another node holds the leadership now");
                leadership.revoke();
                let _ = lost.send(true);
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "leadership not renewed: retrying"),
            Err(_) => tracing::warn!("leadership renewal timed out"),
        }
        crate::metrics::leader_renew_age(&group, last_ok.elapsed());
        if !leadership.is_valid() {
            leadership.revoke();
            let _ = lost.send(true);
            return;
        }
    }
}

/// A second handle on a bound listener (the standby serves on it; the active takes the first).
fn clone(l: &TcpListener) -> Result<TcpListener, ServeError> {
    let fd = l.as_fd().try_clone_to_owned()?;
    Ok(TcpListener::from_std(std::net::TcpListener::from(fd))?)
}

/// Answers every `smista.v1` call on a standby with UNAVAILABLE naming the active's address.
#[derive(Clone, Debug)]
struct StandbyLayer(Arc<Mutex<String>>);

impl<S> tower::Layer<S> for StandbyLayer {
    type Service = StandbyService<S>;
    fn layer(&self, inner: S) -> StandbyService<S> {
        StandbyService { inner, active: self.0.clone() }
    }
}

#[derive(Clone, Debug)]
struct StandbyService<S> {
    inner: S,
    active: Arc<Mutex<String>>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for StandbyService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !req.uri().path().starts_with("/smista.v1.") {
            return Box::pin(self.inner.call(req));
        }
        let active = self.active.lock().clone();
        let mut status = Status::unavailable(if active.is_empty() {
            "standby node: no active node is known yet; retry on another node".to_owned()
        } else {
            format!("standby node: the active node is at {active}")
        });
        if let Ok(v) = active.parse() {
            if !active.is_empty() {
                status.metadata_mut().insert(ACTIVE_HEADER, v);
            }
        }
        Box::pin(async move { Ok(crate::edge::auth::refuse(req.into_body(), status).await) })
    }
}
