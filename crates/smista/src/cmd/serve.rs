//! `smista serve`: the configuration (file or embedded demo) overridden by flags and
//! environment, logging, the listeners (refused beyond loopback when open), the claim on the
//! ledger, then `smista_server::node::serve_claimed` until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use smista_server::config::{Config, LogFormat};
use smista_server::node::{serve_claimed, Listeners};

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (default: the embedded demo).
    #[arg(long, env = "SMISTA_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// gRPC listen address; port 0 picks a free port.
    #[arg(long, env = "SMISTA_GRPC_ADDR")]
    pub(crate) grpc_addr: Option<SocketAddr>,
    /// Prometheus listen address; port 0 picks a free port.
    #[arg(long, env = "SMISTA_METRICS_ADDR")]
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Plaintext listen address serving only gRPC health, for probes that cannot speak TLS
    /// (Kubernetes' gRPC probes, container health checks): `[server] health_addr`.
    #[arg(long, env = "SMISTA_HEALTH_ADDR")]
    pub(crate) health_addr: Option<SocketAddr>,
    /// Directory for durable state.
    #[arg(long, env = "SMISTA_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "SMISTA_LOG_FORMAT", value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// Serve beyond loopback without TLS or authentication (logged as a warning every hour).
    #[arg(long, env = "SMISTA_INSECURE")]
    pub(crate) insecure: bool,
    /// How long to keep answering (with UNAVAILABLE for offers) after SIGTERM before stopping.
    #[arg(long, env = "SMISTA_DRAIN_MS", default_value_t = 500)]
    pub(crate) drain_ms: u64,
    /// Where budget spend is made durable (`[ledger] kind`): one configuration file for a
    /// single node on SQLite and for nodes sharing PostgreSQL (its URL in `SMISTA_LEDGER_URL`).
    #[arg(long, env = "SMISTA_LEDGER_KIND", value_enum)]
    pub(crate) ledger_kind: Option<smista_server::config::LedgerKind>,
    /// This node's id (`[cluster] node_id`), e.g. the pod's name: one configuration for all nodes.
    #[arg(long, env = "SMISTA_NODE_ID")]
    pub(crate) node_id: Option<String>,
    /// Where clients reach this node (`[cluster] advertise_addr`), told to them by a standby.
    #[arg(long, env = "SMISTA_ADVERTISE_ADDR")]
    pub(crate) advertise_addr: Option<String>,
}

/// `smista serve`.
pub(crate) fn run(args: ServeArgs) -> ExitCode {
    let mut cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let origin = |flag: Option<SocketAddr>, name: &str, key: &str, default: SocketAddr, now: SocketAddr| {
        let var = format!("SMISTA_{}", name.to_uppercase().replace('-', "_"));
        if flag.is_some() {
            if std::env::var_os(&var).is_some() {
                format!("set by {var}")
            } else {
                format!("set by --{name}")
            }
        } else if now != default {
            match &args.config {
                Some(p) => format!("set by {key} in {}", p.display()),
                None => format!("set by {key} in the embedded demo"),
            }
        } else {
            format!("the default; change it with --{name}, {var} or {key}")
        }
    };
    let defaults = smista_server::config::ServerSection::default();
    let origins = (
        origin(args.grpc_addr, "grpc-addr", "[server] grpc_addr", defaults.grpc_addr, cfg.server.grpc_addr),
        origin(
            args.metrics_addr,
            "metrics-addr",
            "[server] metrics_addr",
            defaults.metrics_addr,
            cfg.server.metrics_addr,
        ),
    );
    if let Some(a) = args.grpc_addr {
        cfg.server.grpc_addr = a;
    }
    if let Some(a) = args.metrics_addr {
        cfg.server.metrics_addr = a;
    }
    let health_origin = match (args.health_addr, &args.config) {
        (Some(_), _) if std::env::var_os("SMISTA_HEALTH_ADDR").is_some() => "set by SMISTA_HEALTH_ADDR".to_owned(),
        (Some(_), _) => "set by --health-addr".to_owned(),
        (None, Some(p)) => format!("set by [server] health_addr in {}", p.display()),
        (None, None) => "set by [server] health_addr in the embedded demo".to_owned(),
    };
    if let Some(a) = args.health_addr {
        cfg.server.health_addr = Some(a);
    }
    if let Some(d) = args.data_dir {
        cfg.server.data_dir = d;
    }
    if let Some(f) = args.log_format {
        cfg.server.log_format = f;
    }
    cfg.server.insecure = args.insecure;
    if let Some(n) = args.node_id {
        cfg.cluster.node_id = n;
    }
    if let Some(a) = args.advertise_addr {
        cfg.cluster.advertise_addr = a;
    }
    if let Err((key, problem)) = cfg.cluster.check_identity() {
        eprintln!("error: {key}: {problem}");
        return ExitCode::FAILURE;
    }
    if let Some(k) = args.ledger_kind {
        cfg.ledger.kind = k;
    }
    if let Ok(url) = std::env::var("SMISTA_LEDGER_URL") {
        cfg.ledger.url = url;
    }
    if cfg.ledger.kind == smista_server::config::LedgerKind::Postgres && cfg.ledger.url.is_empty() {
        eprintln!("error: ledger.url: the PostgreSQL ledger needs a connection URL: set SMISTA_LEDGER_URL");
        return ExitCode::FAILURE;
    }
    init_tracing(cfg.server.log_format);
    // Every connection is a descriptor: the default soft limit (often 1,024) is far below
    // `[limits] max_connections`.
    match smista_server::edge::transport::raise_fd_limit() {
        Some((before, after)) if after < u64::from(cfg.limits.max_connections) + 256 => tracing::warn!(
            before,
            after,
            max_connections = cfg.limits.max_connections,
            "open-files limit below [limits] max_connections: raise the hard limit (LimitNOFILE=, ulimit -Hn)"
        ),
        Some((before, after)) => tracing::info!(before, after, "open-files limit raised to the hard limit"),
        None => {}
    }
    if let Err(e) = smista_server::datadir::create_private(&cfg.server.data_dir) {
        tracing::error!(dir = %cfg.server.data_dir.display(), error = %e, "cannot create the data directory");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let mut listeners = Listeners::bind_from(cfg.server.grpc_addr, cfg.server.metrics_addr, origins).await?;
        if let Some(addr) = cfg.server.health_addr {
            listeners.bind_health(addr, health_origin).await?;
        }
        // An open server beyond loopback is refused before it says it listens.
        smista_server::node::check_exposure(&cfg, &listeners)?;
        // So is a second server on this one's ledger.
        let claim = smista_server::node::claim(&cfg).await?;
        let (grpc, metrics) = listeners.addrs()?;
        let health = match &listeners.health {
            Some(l) => l.local_addr()?.to_string(),
            None => "none".to_owned(),
        };
        tracing::info!(grpc = %grpc, metrics = %metrics, health = %health, config = %args.config.as_ref().map_or("embedded demo".into(), |p| p.display().to_string()), "smista listening");
        serve_claimed(&cfg, listeners, claim, shutdown_signal(), Duration::from_millis(args.drain_ms)).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "smista stopped with an error");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        // Every field escaped: a client-supplied value can never start a forged log line.
        LogFormat::Human => builder.fmt_fields(smista_server::logfmt::escaped_fields()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!(signal = "SIGINT", "signal received"),
        _ = term => tracing::info!(signal = "SIGTERM", "signal received"),
    }
}
