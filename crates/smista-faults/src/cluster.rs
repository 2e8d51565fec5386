//! Real `smista serve` processes: their configuration, start, signals and restarts.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::proxy::{through, Proxy};
use crate::HarnessError;

/// Fee 100 + 3,600 s x 0.10 cents: what any contact shorter than an hour costs and reserves.
pub const COST_CENTS: i64 = 460;

/// How the nodes are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One active and standbys of one group (`[cluster] failover = true`).
    Failover,
    /// Every node active, sharing the budget by leases (`[cluster] node_id`).
    Lease,
    /// One node on PostgreSQL, no cluster.
    Single,
}

/// Leadership time to live of the failover topology (ms).
pub const LEADER_TTL_MS: u64 = 1_000;
/// Lease time to live of the lease topology (ms).
pub const LEASE_TTL_MS: u64 = 1_200;

/// The configuration every node of a run shares (its node id is given on the command line).
#[must_use]
pub fn config_toml(topology: Topology, schema: &str, ceiling_cents: i64) -> String {
    let cluster = match topology {
        Topology::Failover => format!(
            "[cluster]\nfailover = true\ngroup = \"faults\"\nleader_ttl_ms = {LEADER_TTL_MS}\nleader_renew_ms = 150\ntakeover_grace_ms = 15000\n"
        ),
        Topology::Lease => format!(
            "[cluster]\nlease_ttl_ms = {LEASE_TTL_MS}\nlease_renew_ms = 100\nlease_horizon_ms = 1000\nlease_min_cents = {COST_CENTS}\nreclaim_grace_ms = 300\n"
        ),
        Topology::Single => String::new(),
    };
    format!(
        r#"
[ledger]
kind = "postgres"
url = "set by SMISTA_LEDGER_URL"
schema = "{schema}"

{cluster}
[[budgets]]
id = "contract"
ceiling_cents = {ceiling_cents}
period = {{ kind = "fixed", start_unix_ms = 0, length_ms = 315360000000 }}
default_handle_ms = 300000
tariffs = [{{ channel = "voice", fee_per_contact_cents = 100, rate_per_second_centicents = 10, billing_increment_seconds = 3600 }}]

# A supplier paid by the budget, serving the budgeted queue.
[[groups]]
name = "supplier"
supplier = "acme"
budget = "contract"

# Internal staff no budget pays, serving their own queue.
[[groups]]
name = "internal"

[[queues]]
name = "naspi"
skills = [{{ skill = "naspi", min_level = 1 }}]
budget = "contract"
fallback = "callback_booking"
max_wait_ms = 3600000
offer_timeout_ms = 2000

[[queues]]
name = "pensions"
skills = [{{ skill = "pensions", min_level = 1 }}]
fallback = "self_service_ivr"
max_wait_ms = 3600000
offer_timeout_ms = 2000
"#
    )
}

/// Whether a node's process is running, and whether it is stopped (SIGSTOP).
#[derive(Debug, Default)]
pub struct NodeStatus {
    /// The process runs (started and not seen exited).
    pub running: AtomicBool,
    /// The process is stopped by SIGSTOP.
    pub stopped: AtomicBool,
    /// The harness keeps it down (killed, restarts later): the supervisor leaves it alone.
    pub held_down: AtomicBool,
}

impl NodeStatus {
    /// Running and not stopped.
    #[must_use]
    pub fn alive(&self) -> bool {
        self.running.load(Ordering::Acquire) && !self.stopped.load(Ordering::Acquire)
    }
}

/// One `smista serve` node and its proxy to PostgreSQL.
#[derive(Debug)]
pub struct Node {
    /// Its index in the run.
    pub idx: usize,
    /// Its node id (`node-<idx>`).
    pub name: String,
    /// Its gRPC address (fixed at the first start; restarts listen there again).
    pub addr: Mutex<String>,
    /// Its proxy to PostgreSQL.
    pub proxy: Proxy,
    /// Process state.
    pub status: Arc<NodeStatus>,
    child: Mutex<Option<Child>>,
    smista: PathBuf,
    config: PathBuf,
    data: PathBuf,
    log: PathBuf,
    url: String,
}

impl Node {
    /// A node of the run in `dir`, reaching PostgreSQL (`pg_url`) through a fresh proxy; not
    /// started yet.
    ///
    /// # Errors
    /// The proxy cannot listen.
    pub async fn new(idx: usize, dir: &Path, smista: &Path, config: &Path, pg_url: &str) -> Result<Node, HarnessError> {
        let (_, upstream) = through(pg_url, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let proxy = Proxy::start(upstream).await?;
        let (url, _) = through(pg_url, proxy.addr);
        let name = format!("node-{idx}");
        Ok(Node {
            idx,
            data: dir.join(&name),
            log: dir.join(format!("{name}.log")),
            name,
            addr: Mutex::new(String::new()),
            proxy,
            status: Arc::new(NodeStatus::default()),
            child: Mutex::new(None),
            smista: smista.to_owned(),
            config: config.to_owned(),
            url,
        })
    }

    /// Its gRPC address.
    #[must_use]
    pub fn addr(&self) -> String {
        self.addr.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Starts the process (on its former address if it had one) and waits up to 30 s for its
    /// start-up line. Blocking.
    ///
    /// # Errors
    /// It could not be spawned, or exited (or said nothing) before listening.
    pub fn start(&self) -> Result<(), HarnessError> {
        let prev = self.addr();
        let grpc = if prev.is_empty() { "127.0.0.1:0".to_owned() } else { prev.clone() };
        let mut child = Command::new(&self.smista)
            .arg("serve")
            .args(["--grpc-addr", &grpc, "--metrics-addr", "127.0.0.1:0", "--drain-ms", "200"])
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--node-id", &self.name])
            .env("SMISTA_LEDGER_URL", &self.url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| HarnessError(format!("spawn {}: {e}", self.smista.display())))?;
        let stderr = child.stderr.take().ok_or_else(|| HarnessError("no stderr".into()))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut log = std::io::BufWriter::new(log);
            let mut told = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                let _ = log.flush();
                if !told {
                    if let Some(rest) = line.split("grpc=").nth(1) {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                        told = true;
                    }
                }
            }
        });
        let pid = child.id();
        if let Ok(mut c) = self.child.lock() {
            *c = Some(child);
        }
        self.status.stopped.store(false, Ordering::Release);
        self.status.running.store(true, Ordering::Release);
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => {
                if let Ok(mut a) = self.addr.lock() {
                    *a = addr;
                }
                Ok(())
            }
            Err(_) => {
                self.kill9();
                Err(HarnessError(format!("{} (pid {pid}) did not start: see {}", self.name, self.log.display())))
            }
        }
    }

    /// The process id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok()?.as_ref().map(Child::id)
    }

    /// Sends `signal` (`-9`, `-TERM`, `-STOP`, `-CONT`) with the `kill` command.
    pub fn signal(&self, signal: &str) -> bool {
        let Some(pid) = self.pid() else { return false };
        match signal {
            "-STOP" => self.status.stopped.store(true, Ordering::Release),
            "-CONT" => self.status.stopped.store(false, Ordering::Release),
            _ => {}
        }
        Command::new("kill").args([signal, &pid.to_string()]).status().is_ok_and(|s| s.success())
    }

    /// SIGKILL and reap.
    pub fn kill9(&self) {
        self.signal("-9");
        if let Ok(mut c) = self.child.lock() {
            if let Some(mut ch) = c.take() {
                let _ = ch.kill();
                let _ = ch.wait();
            }
        }
        self.status.running.store(false, Ordering::Release);
    }

    /// Whether the process has exited (reaped then), with its status.
    pub fn exited(&self) -> Option<String> {
        let mut c = self.child.lock().ok()?;
        let ch = c.as_mut()?;
        match ch.try_wait() {
            Ok(Some(s)) => {
                *c = None;
                self.status.running.store(false, Ordering::Release);
                Some(s.to_string())
            }
            _ => None,
        }
    }

    /// Waits up to `timeout` for the process to exit; the exit status if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<String> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if self.pid().is_none() {
                return Some("not running".into());
            }
            if tokio::time::Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the process for the end of the run: SIGCONT (in case), SIGTERM, then SIGKILL after
    /// `grace`.
    pub async fn stop(&self, grace: Duration) -> Option<String> {
        self.pid()?;
        self.signal("-CONT");
        self.signal("-TERM");
        let s = self.wait_exit(grace).await;
        if s.is_none() {
            self.kill9();
        }
        s
    }

    /// Its log file.
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}
