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
use smista_proto::v1::appointment_service_server::AppointmentServiceServer;
use smista_proto::v1::contact_service_server::ContactServiceServer;
use smista_proto::v1::operator_service_server::OperatorServiceServer;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::auth::{AuthLayer, Authenticator, Gate};
use crate::config::Config;
use crate::limits::Limits;
use crate::service::admin::AdminSvc;
use crate::service::appointment::AppointmentSvc;
use crate::service::contact::ContactSvc;
use crate::service::operator::OperatorSvc;
use crate::service::Shared;
use crate::transport::Tls;
use smista_ledger::Ledger;

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

/// The routing state every service shares, built from the configuration: budget book (with its
/// durable ledger, from which a restart rebuilds the spend), engine, event log, offer board.
/// Streams end when `stop` flips to true. The services are thin wrappers around it
/// (`ContactSvc(shared.clone())`...), so benches can call them without a network.
pub async fn build_shared(cfg: &Config, stop: watch::Receiver<bool>) -> Result<Arc<Shared>, ServeError> {
    let clock = crate::service::Clock::default();
    let zone: Arc<dyn smista_core::calendar::Zone> =
        Arc::new(crate::history::Tz(crate::history::zone(&cfg.engine.time_zone).map_err(|e| {
            ServeError::Config(smista_core::ConfigError { key: "engine.time_zone".into(), problem: e })
        })?));
    let mut book = BudgetBook::new_in(&cfg.budgets, clock.epoch_unix_ms(), zone.clone())?;
    // Contacts that were in service with an operator no budget paid for it (service records).
    let mut serving = Vec::new();
    let ledger = match cfg.ledger.target(&cfg.server.data_dir) {
        Some(target) => {
            if let smista_ledger::Target::Sqlite { path, .. } = &target {
                crate::datadir::secure(&cfg.server.data_dir, path)?;
            }
            let ledger = Arc::new(Ledger::connect_as(&target, &cfg.ledger_identity()).await?);
            let mut recovery = ledger.recovery().await?;
            (serving, recovery.holds) = recovery.holds.into_iter().partition(|h| h.budget.is_empty());
            book = book.with_sink(ledger.clone());
            if cfg.leased() {
                // Nothing is admitted on a budget until this node holds a lease on it.
                book = book.leased();
            }
            let done = book.restore(&recovery, clock.now());
            for s in &done.skipped {
                tracing::warn!(what = %s, "ledger entry not restored");
            }
            tracing::info!(
                ledger = %describe(&target),
                amendments = done.amendments,
                settled_cents = done.settled_cents,
                contacts_in_service = done.holds,
                unbudgeted_in_service = serving.len(),
                "budgets restored from the ledger"
            );
            Some(ledger)
        }
        None => {
            if !cfg.budgets.is_empty() {
                tracing::warn!("[ledger] kind = \"none\": budget spend is kept in memory only and lost on restart");
            }
            None
        }
    };
    let book = Arc::new(book);
    let engine = Arc::new(Engine::new(&cfg.engine_config(), book.clone())?.with_calendar(clock.epoch_unix_ms(), zone));
    if let Some(l) = &ledger {
        // Contacts that ended within the retention window before this start: remembered as in
        // the life that ended them, so a repeated offer does not route them again.
        let retention = i64::try_from(cfg.engine.finished_retention_ms).unwrap_or(i64::MAX);
        let since = i64::try_from(clock.unix_ms(clock.now())).unwrap_or(i64::MAX).saturating_sub(retention);
        let ended = l.recently_ended(since).await?;
        for e in &ended {
            engine.remember_ended(&e.contact, &e.queue, e.outcome, e.diverted);
        }
        tracing::info!(contacts = ended.len(), "recently ended contacts remembered from the ledger");
        // The live service level's window, rebuilt from the contact history (answers and late
        // abandons of this node's records within it).
        let now = clock.now();
        let since = i64::try_from(clock.unix_ms(now)).unwrap_or(i64::MAX)
            - i64::try_from(cfg.engine.sl_window_ms).unwrap_or(i64::MAX);
        let mut seeded = 0usize;
        for e in l.ended_since(since).await? {
            let (at, answered) = if e.detail.answered_unix_ms >= since {
                (e.detail.answered_unix_ms, true)
            } else if e.outcome == smista_core::Outcome::Abandoned {
                (e.ended_unix_ms, false)
            } else {
                continue;
            };
            if let Some(at) = clock.from_unix(at) {
                seeded += usize::from(engine.seed_service_level(&e.queue, at, now, e.waited_ms, answered));
            }
        }
        tracing::info!(
            contacts = seeded,
            window_ms = cfg.engine.sl_window_ms,
            "live service level rebuilt from the history"
        );
    }
    let gate = Arc::new(Gate {
        auth: Authenticator::new(&cfg.auth).map_err(ServeError::Security)?,
        limits: Arc::new(Limits::new(&cfg.limits)),
    });
    let shared = Shared::new(engine, book, ledger, clock, cfg, gate, stop);
    for h in serving {
        shared.serving.insert(h.contact.clone(), h);
    }
    if let Some(l) = &shared.ledger {
        // Bookings and availability survive a restart: those not over by a day ago, and every
        // booking not started yet (a slot missed while the node was down starts at once).
        let since = i64::try_from(shared.clock.unix_ms(shared.clock.now())).unwrap_or(i64::MAX) - 86_400_000;
        let (availability, appointments) = (l.availability(since).await?, l.appointments(since).await?);
        tracing::info!(blocks = availability.len(), appointments = appointments.len(), "appointments restored");
        shared.appointments.restore(availability, appointments);
    }
    crate::queues::restore(&shared).await?;
    if let Some(l) = &shared.ledger {
        shared.scheduled.restore(l.scheduled_callbacks().await?);
    }
    Ok(Arc::new(shared))
}

/// A ledger target for the log, without the password of a URL.
fn describe(t: &smista_ledger::Target) -> String {
    match t {
        smista_ledger::Target::Sqlite { path, .. } => path.display().to_string(),
        smista_ledger::Target::Postgres { url, schema } => {
            let host = url.rsplit('@').next().unwrap_or(url);
            format!("postgres {host} schema {}", schema.as_deref().unwrap_or("(default)"))
        }
    }
}

/// Whether serving on `addr` with this configuration exposes an open or plaintext API beyond
/// loopback (an IPv4-mapped loopback address, `[::ffff:127.0.0.1]`, is loopback).
fn exposed(cfg: &Config, addr: SocketAddr) -> bool {
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

/// The ledger's file name in the data directory.
pub const LEDGER_FILE: &str = "ledger.db";

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
        crate::failover::run(cfg, listeners, shutdown, drain).await
    } else {
        serve_routing(cfg, listeners, shutdown, drain, None).await
    };
    // Released before returning: a server started next in this process finds the ledger free.
    claim.release().await;
    served
}

/// What a node that took over an active/standby group's leadership routes with.
#[derive(Debug, Clone)]
pub(crate) struct Active {
    /// For this long, queues whose desks have not logged in again queue instead of diverting.
    pub(crate) staff_grace: Duration,
    /// The leadership: no call is answered, and no reply frame sent, after it lapses.
    pub(crate) leadership: Arc<crate::leadership::Leadership>,
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
        "trust boundary"
    );
    let reloader = tokio::spawn(reload_loop(tls.clone(), shared.clone(), stop_rx.clone()));
    let leases =
        cfg.leased().then(|| tokio::spawn(crate::lease::keep(shared.clone(), cfg.cluster.clone(), stop_rx.clone())));

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
    let metrics_http = tokio::spawn(crate::metrics::serve_http(
        listeners.metrics,
        handle,
        crate::metrics::HttpLimits::of(&cfg.limits),
        stop_rx.clone(),
    ));
    if cfg.history.enabled {
        tokio::spawn(crate::history::staffing_loop(shared.clone(), stop_rx.clone()));
    }
    if let (Some(ledger), days @ 1..) = (shared.ledger.clone(), cfg.history.retention_days) {
        tokio::spawn(crate::history::purge_loop(ledger, days, stop_rx.clone()));
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
    let incoming = crate::transport::incoming(listeners.grpc, tls, crate::transport::ConnLimits::of(lim));
    let keepalive = (lim.keepalive_interval_ms > 0).then(|| Duration::from_millis(lim.keepalive_interval_ms));
    tonic::transport::Server::builder()
        .max_concurrent_streams(lim.max_streams_per_connection)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_millis(lim.keepalive_timeout_ms)))
        .timeout(Duration::from_millis(lim.request_timeout_ms))
        .http2_max_header_list_size(64 * 1024)
        .layer(AuthLayer(shared.gate.clone()))
        .layer(crate::leadership::LeaderLayer(active.map(|a| a.leadership)))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(crate::events_route::ContactRoutes::new(ContactSvc(shared.clone())))
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
    limits: &crate::limits::LimitsSection,
) -> AbortOnDrop {
    let limits = crate::transport::ConnLimits::of(limits);
    AbortOnDrop(Some(tokio::spawn(async move {
        let incoming = crate::transport::incoming(listener, None, limits);
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
        {
            // One section: a retry that finds a contact the tick ended waits until its end
            // record is queued (see `Sections`).
            let _section = shared.sections.global();
            shared.engine.tick(now, &mut ev);
            shared.publish(&ev, now);
        }
        ev.clear();
        crate::service::appointment::drive(&shared, now).await;
        crate::callbacks::drive(&shared, now).await;
        if n % every == 0 {
            crate::metrics::refresh_gauges(&shared.engine, now);
            for h in shared.book.expire_recovered(now, hold_max_age_ms) {
                tracing::warn!(budget = %h.budget, queue = %h.queue, amount_cents = h.amount_cents, accepted_unix_ms = h.accepted_unix_ms, "no completion arrived for a contact recovered at restart: reservation released");
                shared.release_recovering(&h.operator, now);
            }
            for h in shared.expire_serving(now, hold_max_age_ms) {
                tracing::warn!(queue = %h.queue, accepted_unix_ms = h.accepted_unix_ms, "no completion arrived for an unbudgeted contact in service at restart: forgotten");
                shared.release_recovering(&h.operator, now);
            }
            shared.book.refresh_exposure(now);
            crate::metrics::refresh_budget_gauges(&shared.book, now);
            crate::metrics::refresh_ledger(
                shared.ledger.as_deref(),
                shared.book.recovered_count() + shared.serving.len(),
            );
        }
        if n % (every * 60) == 0 {
            shared.gate.limits.housekeeping();
        }
        n += 1;
    }
}

/// Reloads certificates, keys and the JWKS on SIGHUP or when a certificate file changes. Open
/// connections keep the configuration they were accepted with; a failed reload keeps the current
/// one and is logged and counted.
async fn reload_loop(tls: Option<Arc<Tls>>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
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

/// Repeats, every hour, that the server is exposed without TLS or authentication.
async fn warn_insecure(addr: SocketAddr, metrics: SocketAddr, mut stop: watch::Receiver<bool>) {
    loop {
        tracing::warn!(grpc = %addr, metrics = %metrics, "INSECURE: serving beyond loopback without TLS and authentication (--insecure)");
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
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
