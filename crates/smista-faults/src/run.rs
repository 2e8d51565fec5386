//! One run: nodes up, clients on, one fault, nodes down, the ledger checked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use tokio::time::Instant;

use crate::checker::{check, read_ledger, Params, Verdict};
use crate::client::{platform, reader, reofferer, Ctx, Desk, NodeRef, Site};
use crate::cluster::{config_toml, Node, Topology, COST_CENTS, LEADER_TTL_MS};
use crate::history::{unix_ms, History, Kind, Op};
use crate::HarnessError;

/// The fault of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// SIGKILL the active, restart it later as a standby.
    Kill9,
    /// SIGSTOP the active for three leadership lifetimes, then SIGCONT.
    Sigstop,
    /// The active's PostgreSQL connections stop carrying bytes (sockets stay open), then resume.
    PgHang,
    /// The active's PostgreSQL connections are closed and refused, then allowed again.
    PgReset,
    /// SIGTERM the active (a planned handover), restart it.
    Sigterm,
    /// One node on PostgreSQL: kill -9 and restart in place.
    Restart,
    /// Lease topology: kill -9 one node, restart it later.
    LeaseKill,
    /// Lease topology: cut one node off PostgreSQL (reset), then restore.
    LeaseCut,
    /// No fault (a control run).
    None,
}

impl Fault {
    /// The name on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill9",
            Fault::Sigstop => "sigstop",
            Fault::PgHang => "pg-hang",
            Fault::PgReset => "pg-reset",
            Fault::Sigterm => "sigterm",
            Fault::Restart => "restart",
            Fault::LeaseKill => "lease-kill",
            Fault::LeaseCut => "lease-cut",
            Fault::None => "none",
        }
    }

    /// The topology it needs.
    #[must_use]
    pub fn topology(self) -> Topology {
        match self {
            Fault::Restart => Topology::Single,
            Fault::LeaseKill | Fault::LeaseCut => Topology::Lease,
            _ => Topology::Failover,
        }
    }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The `smista` binary.
    pub smista: PathBuf,
    /// PostgreSQL (the harness reaches it directly, the nodes through their proxies).
    pub pg_url: String,
    /// The fault.
    pub fault: Fault,
    /// Nodes (1 for `restart`).
    pub nodes: usize,
    /// Seconds of offers.
    pub duration: Duration,
    /// Contacts per second (over all nodes).
    pub rate: f64,
    /// Desks (over all nodes), half supplier, half internal staff.
    pub desks: usize,
    /// Per-call deadline of state changes.
    pub deadline: Duration,
    /// Run number (in ids and the table).
    pub run: usize,
    /// Keep the schema and the nodes' directory.
    pub keep: bool,
    /// Where the nodes' directories and logs go.
    pub work_dir: PathBuf,
    /// Write the history here.
    pub history: Option<PathBuf>,
    /// Print progress.
    pub verbose: bool,
}

/// The result of a run.
#[derive(Debug)]
pub struct RunReport {
    /// The checker's verdict.
    pub verdict: Verdict,
    /// The history.
    pub history: Vec<Op>,
    /// The schema used.
    pub schema: String,
    /// The nodes' logs.
    pub logs: Vec<PathBuf>,
}

async fn answers_reads(n: &Node) -> bool {
    let Ok(r) = NodeRef::new(n.idx, n.addr(), n.status.clone()) else { return false };
    let mut admin = AdminServiceClient::new(r.channel);
    let call = admin.get_snapshot(pb::GetSnapshotRequest {});
    matches!(tokio::time::timeout(Duration::from_millis(500), call).await, Ok(Ok(_)))
}

/// The node answering reads (the active), waiting up to `wait`.
async fn active(nodes: &[Arc<Node>], wait: Duration) -> Option<usize> {
    let end = Instant::now() + wait;
    loop {
        for n in nodes {
            if n.status.alive() && answers_reads(n).await {
                return Some(n.idx);
            }
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(n: &Arc<Node>) -> Result<(), HarnessError> {
    let n = n.clone();
    tokio::task::spawn_blocking(move || n.start()).await.map_err(|e| HarnessError(e.to_string()))?
}

fn event(history: &History, kind: Kind, node: usize, what: &str, detail: String) {
    let t = unix_ms();
    history.record(Op {
        kind,
        client: "harness".into(),
        node,
        rpc: what.into(),
        start_ms: t,
        end_ms: t,
        detail,
        ..Op::default()
    });
}

/// Restarts a node that exited on its own (fenced, lost leadership) a second later, as an
/// orchestrator would, until `until`.
async fn supervise(node: Arc<Node>, history: History, until: Instant) {
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if node.status.held_down.load(std::sync::atomic::Ordering::Acquire) {
            continue;
        }
        if let Some(status) = node.exited() {
            event(&history, Kind::Node, node.idx, "exited", status);
            tokio::time::sleep(Duration::from_secs(1)).await;
            if Instant::now() >= until {
                return;
            }
            match start(&node).await {
                Ok(()) => event(&history, Kind::Node, node.idx, "restarted", node.addr()),
                Err(e) => event(&history, Kind::Node, node.idx, "restart failed", e.0),
            }
        }
    }
}

/// Injects `fault` on the run's nodes and heals it.
async fn inject(fault: Fault, nodes: &[Arc<Node>], history: &History) {
    use std::sync::atomic::Ordering;
    let victim = match fault {
        Fault::None => return,
        Fault::LeaseKill => 1 % nodes.len(),
        Fault::LeaseCut => 2 % nodes.len(),
        Fault::Restart => 0,
        _ => active(nodes, Duration::from_secs(5)).await.unwrap_or(0),
    };
    let n = &nodes[victim];
    let name = fault.name();
    let pid = n.pid().map_or(String::new(), |p| format!("pid {p}"));
    match fault {
        Fault::Kill9 | Fault::LeaseKill | Fault::Restart => {
            n.status.held_down.store(true, Ordering::Release);
            event(history, Kind::Fault, victim, name, pid);
            n.kill9();
            tokio::time::sleep(Duration::from_secs(if fault == Fault::Restart { 1 } else { 3 })).await;
            let r = start(n).await;
            n.status.held_down.store(false, Ordering::Release);
            event(history, Kind::Heal, victim, name, format!("restarted: {r:?}"));
        }
        Fault::Sigstop => {
            event(history, Kind::Fault, victim, name, pid);
            n.signal("-STOP");
            tokio::time::sleep(Duration::from_millis(3 * LEADER_TTL_MS)).await;
            n.signal("-CONT");
            event(history, Kind::Heal, victim, name, "SIGCONT".into());
        }
        Fault::PgHang => {
            event(history, Kind::Fault, victim, name, pid);
            n.proxy.hang();
            tokio::time::sleep(Duration::from_secs(4)).await;
            n.proxy.restore();
            event(history, Kind::Heal, victim, name, "proxy forwards again".into());
        }
        Fault::PgReset | Fault::LeaseCut => {
            event(history, Kind::Fault, victim, name, pid);
            n.proxy.reset();
            tokio::time::sleep(Duration::from_secs(4)).await;
            n.proxy.restore();
            event(history, Kind::Heal, victim, name, "proxy accepts again".into());
        }
        Fault::Sigterm => {
            n.status.held_down.store(true, Ordering::Release);
            event(history, Kind::Fault, victim, name, pid);
            n.signal("-TERM");
            let status = n.wait_exit(Duration::from_secs(10)).await;
            event(history, Kind::Node, victim, "exited", format!("{status:?}"));
            if status.is_none() {
                n.kill9();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let r = start(n).await;
            n.status.held_down.store(false, Ordering::Release);
            event(history, Kind::Heal, victim, name, format!("restarted: {r:?}"));
        }
        Fault::None => {}
    }
}

/// One run: see the crate's documentation.
///
/// # Errors
/// The nodes could not be started or the ledger read; violations are in the verdict, not errors.
pub async fn run(cfg: &RunConfig) -> Result<RunReport, HarnessError> {
    let topology = cfg.fault.topology();
    let n_nodes = if topology == Topology::Single { 1 } else { cfg.nodes.max(2) };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tag = cfg.fault.name().replace('-', "_");
    let schema = format!("faults_{tag}_{}_{}_{}", std::process::id(), nanos % 1_000_000_000, cfg.run);
    let dir = cfg.work_dir.join(&schema);
    std::fs::create_dir_all(&dir)?;
    // Demand passes the ceiling at about 80% of the run: half the contacts are budgeted.
    let secs = cfg.duration.as_secs_f64();
    let ceiling_contacts = ((cfg.rate * secs * 0.4) as i64).max(8);
    let ceiling = ceiling_contacts * COST_CENTS;
    let config = dir.join("smista.toml");
    std::fs::write(&config, config_toml(topology, &schema, ceiling))?;
    let mut nodes = Vec::new();
    for i in 0..n_nodes {
        nodes.push(Arc::new(Node::new(i, &dir, &cfg.smista, &config, &cfg.pg_url).await?));
    }
    let logs: Vec<PathBuf> = nodes.iter().map(|n| n.log_path().to_owned()).collect();
    let history = History::default();
    let result = drive(cfg, topology, &nodes, &history, ceiling).await;
    // Nodes stopped by SIGTERM so they flush.
    for n in &nodes {
        n.signal("-CONT");
        n.proxy.restore();
    }
    let stops: Vec<_> = nodes
        .iter()
        .map(|n| {
            let n = n.clone();
            tokio::spawn(async move { n.stop(Duration::from_secs(10)).await })
        })
        .collect();
    for s in stops {
        let _ = s.await;
    }
    let outcome = match result {
        Ok(()) => read_ledger(&cfg.pg_url, &schema).await.map_err(|e| HarnessError(format!("reading the ledger: {e}"))),
        Err(e) => Err(e),
    };
    let ops = history.ops();
    if let Some(path) = &cfg.history {
        crate::history::write_ops(&ops, path)?;
    }
    if !cfg.keep {
        if let Ok(pool) = sqlx::PgPool::connect(&cfg.pg_url).await {
            let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await;
            pool.close().await;
        }
    }
    let ledger = outcome?;
    let params = Params {
        ceiling_cents: ceiling,
        frozen_grace_ms: 5_000,
        frozen_reads: 3,
        same_node_ok: topology == Topology::Single,
    };
    let verdict = check(&ops, &ledger, &params);
    if !cfg.keep && verdict.ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(RunReport { verdict, history: ops, schema, logs })
}

async fn drive(
    cfg: &RunConfig,
    topology: Topology,
    nodes: &[Arc<Node>],
    history: &History,
    ceiling: i64,
) -> Result<(), HarnessError> {
    let say = |s: String| {
        if cfg.verbose {
            eprintln!("[{}] {s}", cfg.fault.name());
        }
    };
    start(&nodes[0]).await?;
    if active(&nodes[..1], Duration::from_secs(20)).await.is_none() {
        return Err(HarnessError(format!("node-0 never answered: see {}", nodes[0].log_path().display())));
    }
    for n in &nodes[1..] {
        start(n).await?;
    }
    say(format!(
        "{} nodes up ({topology:?}): {:?}; ceiling {ceiling} cents",
        nodes.len(),
        nodes.iter().map(|n| n.addr()).collect::<Vec<_>>()
    ));
    let t0 = Instant::now();
    let stop = t0 + cfg.duration + Duration::from_millis(1_500);
    let ctx = Arc::new(Ctx {
        history: history.clone(),
        run: format!("r{}", cfg.run),
        stop,
        desks_stop: stop + Duration::from_secs(6),
        give_up: stop + Duration::from_secs(9),
        deadline: cfg.deadline,
        read_deadline: Duration::from_secs(1),
    });
    let sites: Vec<Arc<Site>> = if topology == Topology::Lease {
        nodes
            .iter()
            .map(|n| Ok(Arc::new(Site::new(n.idx, vec![NodeRef::new(n.idx, n.addr(), n.status.clone())?]))))
            .collect::<Result<_, tonic::transport::Error>>()?
    } else {
        let refs = nodes
            .iter()
            .map(|n| NodeRef::new(n.idx, n.addr(), n.status.clone()))
            .collect::<Result<Vec<_>, tonic::transport::Error>>()?;
        vec![Arc::new(Site::new(0, refs))]
    };
    let mut tasks = tokio::task::JoinSet::new();
    for n in nodes {
        tasks.spawn(supervise(n.clone(), history.clone(), ctx.give_up));
    }
    for site in &sites {
        for at in 0..site.nodes.len() {
            tasks.spawn(reader(site.clone(), ctx.clone(), at));
        }
        let per_site = (cfg.desks / sites.len()).max(2);
        for d in 0..per_site {
            let supplier = d % 2 == 0;
            let desk = Desk {
                operator: format!("s{}-op{d}", site.idx),
                group: if supplier { "supplier" } else { "internal" }.into(),
                skill: if supplier { "naspi" } else { "pensions" }.into(),
                hold_ms: (100, 400),
            };
            tasks.spawn(desk.run(site.clone(), ctx.clone()));
        }
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for site in &sites {
        tasks.spawn(platform(site.clone(), ctx.clone(), cfg.rate / sites.len() as f64));
        tasks.spawn(reofferer(site.clone(), ctx.clone()));
    }
    // The fault at a random moment between 30% and 50% of the run.
    let at = cfg.duration.mul_f64(0.3 + fastrand::f64() * 0.2);
    tokio::time::sleep_until(t0 + Duration::from_millis(1_500) + at).await;
    say(format!("injecting {} at {:.1} s", cfg.fault.name(), at.as_secs_f64()));
    inject(cfg.fault, nodes, history).await;
    say("healed".into());
    let drained = tokio::time::timeout_at(ctx.give_up + Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        say("clients still busy after the run: aborted".into());
        tasks.abort_all();
    }
    Ok(())
}
