//! `smista-load`: drives a running smista over gRPC like a telephony platform plus an operator
//! floor, and reports what it measured.
//!
//! Arrivals are open-loop Poisson: each contact has an intended send time drawn in advance and its
//! offer latency is measured from that intended time, so a slow server shows as latency instead of
//! silently lowering the offered rate (no coordinated omission). Virtual operators log in, watch
//! their offers, accept at once, handle for a drawn time and complete. Callers hang up after a
//! drawn patience. Every contact's final outcome is read from `StreamEvents`.

pub mod citizen;
mod closed;
pub mod follow;
pub mod theory;
pub mod wallboards;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::offer_contact_response::Decision;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use smista_server::connect::{Bearer, Credentials};
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use closed::{floor, vs_floor, vs_idle, vs_pair, vs_wallboards};

/// A channel whose calls carry a bearer token (none against an open server).
type Authed = InterceptedService<Channel, Bearer>;

/// Which load to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// One queue, one skill: M/M/c, compared with Erlang C.
    Erlang,
    /// The demo contact centre's mix of service lines and operator groups.
    Mix,
    /// Demand above a budget ceiling (start smista with `benches/scenarios/loadtest.toml`:
    /// its `supplier` group is paid by a small budget).
    Budget,
    /// The highest offer rate whose p99 latency stays under `--p99-bound-us`.
    Max,
    /// Empty RPCs (`grpc.health.v1/Check`) as fast as possible: the transport's floor.
    Floor,
    /// One active/standby group (`--target a,b,c`): follow the active across a failover or a
    /// handover, offer again what had not ended, and count what a following client saw.
    Follow,
    /// Callers who cannot wait (callbacks instead of hang-ups) and consultations by
    /// appointment (start smista with `benches/scenarios/citizen.toml`).
    Citizen,
    /// Only `--wallboards` (and the scraper) for `--duration`: run beside another smista-load
    /// so that the readers' decoding does not share the measuring process.
    Wallboards,
}

/// Handle-time distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandleDist {
    /// Exponential with the given mean (M/M/c).
    Exponential,
    /// Lognormal with the given mean and a coefficient of variation of 1.
    Lognormal,
    /// Always the mean.
    Fixed,
}

/// What to run.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadConfig {
    /// The server; a comma-separated list drives several nodes at once, each with its share of
    /// `--rate` and its own operators, and reports spend per node.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Scenario.
    #[arg(long, value_enum, default_value = "erlang")]
    pub scenario: Scenario,
    /// Offers per second (mean of the Poisson arrivals).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Virtual operators.
    #[arg(long, default_value_t = 20)]
    pub operators: u32,
    /// Mean handle time, seconds.
    #[arg(long, default_value_t = 1.5)]
    pub aht: f64,
    /// Handle-time distribution.
    #[arg(long, value_enum, default_value = "exponential")]
    pub handle: HandleDist,
    /// Mean caller patience, seconds (exponential); 0: callers never hang up.
    #[arg(long, default_value_t = 0.0)]
    pub patience: f64,
    /// How long arrivals run, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Service-level threshold, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub sl_threshold: f64,
    /// Closed-loop callers for `floor` and `--vs-floor`.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Queue for `erlang`, `budget` and `max`.
    #[arg(long, default_value = "general")]
    pub queue: String,
    /// Operator group for `erlang`, `max` and `follow` (`budget` uses the budgeted `supplier`);
    /// a comma-separated list gives the desks its groups in turn.
    #[arg(long, default_value = "internal")]
    pub group: String,
    /// p99 bound for `max`, microseconds.
    #[arg(long, default_value_t = 1000)]
    pub p99_bound_us: u64,
    /// Also measure offers against empty RPCs, alternating, in the same run.
    #[arg(long)]
    pub vs_floor: bool,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of contact and operator ids, to keep runs apart on one server.
    #[arg(long, default_value = "load")]
    pub prefix: String,
    /// TLS roots, client certificate, and the platform's token (`--token-file`).
    #[command(flatten)]
    pub creds: Credentials,
    /// File holding a token with the supervisor and admin roles (snapshots, forced logouts).
    #[arg(long)]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The identity provider's signing key (PKCS#8 DER, e.g. `jwt-signing.pk8` from `smista
    /// dev-credentials`): each virtual desk gets its own token for its operator id.
    #[arg(long)]
    pub desk_signing_key: Option<std::path::PathBuf>,
    /// `iss` of the desk tokens.
    #[arg(long, default_value = "https://idp.smista.invalid")]
    pub jwt_issuer: String,
    /// `aud` of the desk tokens.
    #[arg(long, default_value = "smista")]
    pub jwt_audience: String,
    /// Also measure closed-loop offers against this second, plaintext and open server (same
    /// binary and configuration but for TLS and authentication), alternating rounds with
    /// `--target`: the cost of the trust boundary as a ratio measured in one run.
    #[arg(long)]
    pub vs_plain: Option<String>,
    /// Also measure closed-loop offers with this many idle `StreamEvents` subscribers filtered to
    /// `--idle-queue` (a queue without traffic) against none, alternating rounds in one run.
    #[arg(long, default_value_t = 0)]
    pub idle_subscribers: u32,
    /// The quiet queue the idle subscribers filter on.
    #[arg(long, default_value = "disability")]
    pub idle_queue: String,
    /// Also measure closed-loop offers against this second, open server (the same binary with
    /// another configuration, e.g. `[history] enabled = false`), alternating rounds with
    /// `--target`: `other_ratio` = target's offers/s over the other's, in one run.
    #[arg(long)]
    pub vs_other: Option<String>,
    /// After an open-loop run, read the server's interval report (`GetIntervalReport`) for the
    /// run's period and compare it, queue by queue, with this run's own counts: offered,
    /// answered, abandoned, diverted, in progress. Exact on a server no other client uses.
    #[arg(long)]
    pub check_report: bool,
    /// The server's metrics endpoint (e.g. `http://127.0.0.1:9464/metrics`): read before and
    /// after the run, for the server's CPU time per contact and its resident memory (Linux).
    #[arg(long)]
    pub server_metrics: Option<String>,
    /// Supervisors' wallboards: this many `StreamEvents` subscribers, half unfiltered and half
    /// filtered to `--wallboard-queue`, each reading every event, open while the contacts flow.
    #[arg(long, default_value_t = 0)]
    pub wallboards: u32,
    /// How late the wallboards accept events (`StreamEventsRequest.max_delay_ms`): a wallboard
    /// redrawing every second asks for a few hundred ms.
    #[arg(long, default_value_t = 250)]
    pub wallboard_delay_ms: u32,
    /// The queue of the filtered wallboards (default: `--queue`).
    #[arg(long, default_value = "")]
    pub wallboard_queue: String,
    /// While the wallboards are open, also scrape `--server-metrics` this often, ms (0: never),
    /// as Prometheus would.
    #[arg(long, default_value_t = 0)]
    pub scrape_interval_ms: u64,
    /// Also measure closed-loop offers with the `--wallboards` (and the scraper) against none,
    /// alternating rounds in one run.
    #[arg(long)]
    pub vs_wallboards: bool,
    /// With `--scenario follow`: list in the report the contacts whose completion was
    /// acknowledged (to check them one by one against the ledger).
    #[arg(long)]
    pub list_contacts: bool,
}

/// Contacts of one queue by how they ended, as counted by this run and by the server's report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueCounts {
    /// The queue the contacts were offered to.
    pub queue: String,
    /// Offered (decided by the server).
    pub offered: u64,
    /// Accepted by an operator (completed, or hung up in service).
    pub answered: u64,
    /// Hung up while waiting.
    pub abandoned: u64,
    /// Diverted.
    pub diverted: u64,
    /// Not ended.
    pub in_progress: u64,
}

/// `--check-report`: this run's own counts and the server's interval report for its period.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReportCheck {
    /// Per queue, as this run counted.
    pub mine: Vec<QueueCounts>,
    /// Per queue, as the report says.
    pub report: Vec<QueueCounts>,
    /// Whether they are equal.
    pub agrees: bool,
    /// The period read, Unix ms.
    pub from_unix_ms: u64,
    /// End of the period read (exclusive), Unix ms.
    pub to_unix_ms: u64,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
    /// Samples.
    pub count: u64,
}

fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        count: h.len(),
    }
}

/// Does every offered contact end exactly once?
#[derive(Debug, Clone, Default, Serialize)]
pub struct Consistency {
    /// Contacts that got a decision.
    pub contacts: u64,
    /// Of those, with exactly one final outcome.
    pub finished_once: u64,
    /// With no final outcome seen.
    pub missing: u64,
    /// With more than one.
    pub duplicated: u64,
}

/// Budget figures read from the server at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BudgetFigures {
    /// Budget id.
    pub budget: String,
    /// Ceiling, cents.
    pub ceiling_cents: i64,
    /// Settled, cents.
    pub settled_cents: i64,
    /// Reserved, cents.
    pub reserved_cents: i64,
    /// Overrun, cents.
    pub overrun_cents: i64,
    /// Paced allowance, cents.
    pub paced_allowance_cents: i64,
    /// Extra-budget diversions in the period.
    pub extra_budget_diversions: u64,
    /// The node that reported it (several nodes sharing budgets), else empty.
    pub node_id: String,
    /// That node's lease on the period (several nodes), else 0.
    pub lease_cents: i64,
}

/// The report, printed as a table and written as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Scenario run.
    pub scenario: String,
    /// Intended offers per second.
    pub target_rate: f64,
    /// Offers decided per second of arrivals.
    pub offers_per_second: f64,
    /// Offer RPC latency from intended send time.
    pub latency_us: Latency,
    /// Counts by decision and by final outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Diversions at decision, by reason (diversions after waiting, e.g. maximum wait, are the
    /// `diverted` outcomes beyond `decision_diverted`).
    pub divert_reasons: BTreeMap<String, u64>,
    /// Share of answered contacts that had to wait in a queue.
    pub p_wait: f64,
    /// Average speed of answer, seconds (answered contacts).
    pub asa_seconds: f64,
    /// Answered within the threshold / (answered + abandoned after it).
    pub service_level: f64,
    /// Abandoned / offered.
    pub abandon_rate: f64,
    /// Share of the operators' time during the arrivals spent on calls (each call's time clipped
    /// to that window; calls finished in the drain count for their part inside it).
    pub occupancy: f64,
    /// Every contact ends exactly once.
    pub consistency: Consistency,
    /// Virtual desks that were offered at least one contact (of `--operators`).
    pub desks_offered: u64,
    /// `--server-metrics`: the server's CPU time during the run per contact offered, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_contact: Option<f64>,
    /// The server's (CPU seconds, resident bytes) when arrivals began, after the desks logged in.
    #[serde(skip)]
    pub usage_at_arrivals: Option<(f64, f64)>,
    /// `--server-metrics`: the server's resident memory before the run's desks logged in, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_start_bytes: Option<f64>,
    /// `--server-metrics`: the server's resident memory at the end, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_bytes: Option<f64>,
    /// Budgets at the end.
    pub budgets: Vec<BudgetFigures>,
    /// Erlang C prediction (erlang scenario).
    pub theory: Option<theory::ErlangC>,
    /// Empty RPCs per second (floor, --vs-floor).
    pub floor_rps: Option<f64>,
    /// Closed-loop offers per second (--vs-floor).
    pub offer_rps: Option<f64>,
    /// offer_rps / floor_rps.
    pub ratio_to_floor: Option<f64>,
    /// All RPCs per second during the offer phase (offer plus accept and complete, or cancel).
    pub offer_phase_rpc_rps: Option<f64>,
    /// offer_phase_rpc_rps / floor_rps: the per-RPC cost of routing against an empty RPC.
    pub rpc_ratio_to_floor: Option<f64>,
    /// Closed-loop offers per second against `--target` (TLS and tokens) (--vs-plain).
    pub secure_offer_rps: Option<f64>,
    /// The same against the plaintext, open `--vs-plain` server.
    pub plain_offer_rps: Option<f64>,
    /// secure_offer_rps / plain_offer_rps.
    pub secure_ratio: Option<f64>,
    /// Closed-loop offers per second with no idle subscriber (--idle-subscribers).
    pub no_subscriber_offer_rps: Option<f64>,
    /// The same with the idle filtered subscribers connected.
    pub idle_subscriber_offer_rps: Option<f64>,
    /// idle_subscriber_offer_rps / no_subscriber_offer_rps.
    pub idle_subscriber_ratio: Option<f64>,
    /// `--wallboards`: what the subscribers and the scraper did during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wallboards: Option<wallboards::WallboardFigures>,
    /// `--vs-wallboards`: closed-loop offers per second with no wallboard.
    pub no_wallboard_offer_rps: Option<f64>,
    /// The same with the wallboards open and the scraper running.
    pub wallboard_offer_rps: Option<f64>,
    /// wallboard_offer_rps / no_wallboard_offer_rps.
    pub wallboard_ratio: Option<f64>,
    /// `--server-metrics`: the server's resident memory added per connected desk (logged in,
    /// `WatchOffers` open), bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_per_desk_bytes: Option<f64>,
    /// Highest rate meeting the p99 bound (max).
    pub max_rate: Option<f64>,
    /// Seconds the arrivals ran.
    pub elapsed_seconds: f64,
    /// `--vs-other`: closed-loop offers per second against `--target`.
    pub target_offer_rps: Option<f64>,
    /// `--vs-other`: the same against the other server.
    pub other_offer_rps: Option<f64>,
    /// target_offer_rps / other_offer_rps.
    pub other_ratio: Option<f64>,
    /// `--check-report`: this run's counts against the server's interval report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_check: Option<ReportCheck>,
    /// `follow`: what a client following the active saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow: Option<follow::FollowFigures>,
    /// `citizen`: callbacks, abandons avoided, appointments kept on time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citizen: Option<citizen::CitizenFigures>,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not reachable.
    #[error("cannot reach smista at {target}: {source}")]
    Unreachable {
        /// Target.
        target: String,
        /// Cause.
        source: tonic::transport::Error,
    },
    /// A setup RPC failed.
    #[error("{what}: {status}")]
    Rpc {
        /// What was being done.
        what: String,
        /// The status.
        status: tonic::Status,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

fn rpc(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> LoadError {
    let what = what.into();
    move |status| LoadError::Rpc { what, status }
}

#[derive(Debug, Default)]
struct Tracker {
    latency: Mutex<Option<Histogram<u64>>>,
    /// Contacts of this run (inserted before their offer is sent).
    mine: DashMap<String, Box<str>>,
    /// (queue offered to, final outcome) -> contacts, for `--check-report`.
    by_queue: Mutex<BTreeMap<(String, String), u64>>,
    decided: DashMap<String, u8>,
    finished: DashMap<String, u32>,
    waiting_for_answer: DashMap<String, oneshot::Sender<u64>>,
    outcomes: Mutex<BTreeMap<String, u64>>,
    reasons: Mutex<BTreeMap<String, u64>>,
    answered: AtomicU64,
    answered_after_queue: AtomicU64,
    /// Desks that were offered at least one contact.
    desks_offered: AtomicU64,
    answered_in_sl: AtomicU64,
    waited_ms_sum: AtomicU64,
    abandoned: AtomicU64,
    abandoned_after_sl: AtomicU64,
    busy_ms: AtomicU64,
    /// Each completed call's time with its virtual operator: (accepted, completed).
    busy: Mutex<Vec<(Instant, Instant)>>,
    offers: AtomicU64,
    /// Offer RPCs sent and not yet answered.
    in_flight: AtomicU64,
}

impl Tracker {
    fn count(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
        *map.lock().entry(key.to_owned()).or_default() += 1;
    }
}

/// Who the load generator is towards one server: the platform (offers, events), a supervisor
/// and admin (snapshot, forced logouts), and one desk per virtual operator.
#[derive(Clone, Debug, Default)]
struct Identity {
    platform: Bearer,
    admin: Bearer,
    /// Signing key and claims for desk tokens (None: an open server, no tokens).
    desk_key: Option<Arc<(Vec<u8>, smista_server::mint::Options)>>,
    desks: Arc<DashMap<String, Bearer>>,
}

impl Identity {
    fn from_config(cfg: &LoadConfig) -> Result<Identity, LoadError> {
        let platform = cfg.creds.bearer().map_err(LoadError::Usage)?;
        let admin = match &cfg.admin_token_file {
            Some(f) => {
                let t = std::fs::read_to_string(f).map_err(|e| LoadError::Usage(format!("{}: {e}", f.display())))?;
                Bearer::new(Some(&t)).map_err(LoadError::Usage)?
            }
            None => platform.clone(),
        };
        let desk_key = match &cfg.desk_signing_key {
            Some(f) => {
                let key = std::fs::read(f).map_err(|e| LoadError::Usage(format!("{}: {e}", f.display())))?;
                let mut o = smista_server::mint::Options::new(std::path::Path::new("."));
                o.issuer = cfg.jwt_issuer.clone();
                o.audience = cfg.jwt_audience.clone();
                Some(Arc::new((key, o)))
            }
            None => None,
        };
        Ok(Identity { platform, admin, desk_key, desks: Arc::new(DashMap::new()) })
    }

    fn desk(&self, operator: &str) -> Bearer {
        let Some(k) = &self.desk_key else { return Bearer::default() };
        if let Some(b) = self.desks.get(operator) {
            return b.clone();
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let token = smista_server::mint::token(&k.0, &k.1, &format!("desk-{operator}"), &["desk"], Some(operator), now)
            .ok()
            .and_then(|t| Bearer::new(Some(&t)).ok())
            .unwrap_or_default();
        self.desks.insert(operator.to_owned(), token.clone());
        token
    }
}

/// A small pool of channels, used round-robin, with the identities to call through them.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    channels: Arc<Vec<Channel>>,
    next: Arc<AtomicU64>,
    id: Identity,
}

impl Pool {
    async fn connect(target: &str, n: usize, creds: &Credentials, id: Identity) -> Result<Pool, LoadError> {
        let mut channels = Vec::with_capacity(n);
        for _ in 0..n {
            let ch = creds
                .endpoint(target)
                .map_err(|e| LoadError::Usage(format!("bad --target {target}: {e}")))?
                .connect_timeout(Duration::from_secs(3))
                .connect()
                .await
                .map_err(|source| LoadError::Unreachable { target: target.to_owned(), source })?;
            channels.push(ch);
        }
        Ok(Pool { channels: Arc::new(channels), next: Arc::new(AtomicU64::new(0)), id })
    }

    fn get(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.channels.len();
        self.channels[i].clone()
    }

    fn contacts(&self) -> ContactServiceClient<Authed> {
        ContactServiceClient::with_interceptor(self.get(), self.id.platform.clone())
    }

    fn admin(&self) -> AdminServiceClient<Authed> {
        AdminServiceClient::with_interceptor(self.get(), self.id.admin.clone())
    }

    fn supervisor_ops(&self) -> OperatorServiceClient<Authed> {
        OperatorServiceClient::with_interceptor(self.get(), self.id.admin.clone())
    }

    fn desk(&self, operator: &str) -> OperatorServiceClient<Authed> {
        OperatorServiceClient::with_interceptor(self.get(), self.id.desk(operator))
    }
}

/// The seed of random stream `k` of a run: arrivals are stream 0, operator `i` stream `i + 1`,
/// queue and patience draws the last. Streams must not share a seed: when operator 0 drew its
/// handle times from the same sequence as the arrival gaps, long services came right after long
/// gaps and short ones in bursts, and waits were a third of what M/M/1 predicts.
fn stream_seed(seed: u64, k: u64) -> u64 {
    // SplitMix64 of (seed, k): distinct, well-mixed seeds for distinct k.
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The server's CPU seconds and resident bytes, from its Prometheus endpoint `url`
/// (`http://host:port/metrics`, plain HTTP).
async fn server_usage(url: &str) -> Result<(f64, f64), LoadError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bad = |m: String| LoadError::Usage(format!("--server-metrics {url}: {m}"));
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("not an http:// URL".into()))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/metrics".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = tokio::net::TcpStream::connect(host).await.map_err(|e| bad(e.to_string()))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| bad(e.to_string()))?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.map_err(|e| bad(e.to_string()))?;
    let value = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (value("smista_process_cpu_seconds"), value("smista_process_resident_memory_bytes")) {
        (Some(c), Some(r)) => Ok((c, r)),
        _ => Err(bad("no smista_process_* gauges (the server reads them from /proc: Linux only)".into())),
    }
}

fn draw_exp(rng: &mut SmallRng, mean: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    -u.ln() * mean
}

fn draw_handle(rng: &mut SmallRng, dist: HandleDist, mean: f64) -> f64 {
    match dist {
        HandleDist::Fixed => mean,
        HandleDist::Exponential => draw_exp(rng, mean),
        HandleDist::Lognormal => {
            // CV = 1: sigma^2 = ln 2, mu = ln(mean) - sigma^2 / 2. Box-Muller for the normal.
            let s2 = std::f64::consts::LN_2;
            let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (mean.ln() - s2 / 2.0 + s2.sqrt() * z).exp()
        }
    }
}

/// Service lines of the demo configuration with their share of demand (for `mix`).
const MIX: [(&str, &str, f64); 5] = [
    ("pensions", "pensions", 0.30),
    ("naspi", "naspi", 0.25),
    ("family-allowance", "family", 0.20),
    ("isee", "isee", 0.15),
    ("disability", "disability", 0.10),
];

fn operator_setup(cfg: &LoadConfig, i: u32) -> (String, Vec<(String, u32)>) {
    match cfg.scenario {
        Scenario::Mix => {
            let groups = ["internal", "supplier-a", "supplier-b"];
            let a = MIX[i as usize % MIX.len()].1;
            let b = MIX[(i as usize + 1) % MIX.len()].1;
            (groups[i as usize % 3].to_owned(), vec![(a.to_owned(), 7), (b.to_owned(), 6), ("general".to_owned(), 5)])
        }
        Scenario::Budget => ("supplier".to_owned(), vec![(cfg.queue.clone(), 5)]),
        _ => {
            // A comma-separated `--group`: the desks take the groups in turn.
            let groups: Vec<&str> = cfg.group.split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
            let g = groups.get(i as usize % groups.len().max(1)).copied().unwrap_or_default();
            (g.to_owned(), vec![(cfg.queue.clone(), 5)])
        }
    }
}

/// Runs the scenario against every target of a comma-separated `--target` at once, each with its
/// share of `--rate`, its own operators and ids; returns each target's report (its budgets as
/// its node reports them: several nodes sharing a budget each show their own spend and lease).
pub async fn run_many(cfg: &LoadConfig, stop: Arc<AtomicBool>) -> Result<Vec<(String, Report)>, LoadError> {
    let targets: Vec<String> =
        cfg.target.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    if cfg.scenario == Scenario::Follow {
        return Ok(vec![(cfg.target.clone(), follow::run(cfg, targets, stop).await?)]);
    }
    if targets.len() <= 1 {
        return Ok(vec![(cfg.target.clone(), run(cfg, stop).await?)]);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let mut c = cfg.clone();
        c.target = t.clone();
        c.rate = cfg.rate / targets.len() as f64;
        c.prefix = format!("{}-n{i}", cfg.prefix);
        let stop = stop.clone();
        tasks.spawn(async move { (i, c.target.clone(), run(&c, stop).await) });
    }
    let mut out: Vec<(usize, String, Report)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, t, r) = done.map_err(|e| LoadError::Usage(format!("a target's run failed: {e}")))?;
        out.push((i, t, r?));
    }
    out.sort_by_key(|x| x.0);
    Ok(out.into_iter().map(|(_, t, r)| (t, r)).collect())
}

/// Runs a scenario and returns its report. `stop` ends arrivals early (Ctrl-C).
pub async fn run(cfg: &LoadConfig, stop: Arc<AtomicBool>) -> Result<Report, LoadError> {
    if cfg.rate <= 0.0 || cfg.duration <= 0.0 || cfg.aht <= 0.0 {
        return Err(LoadError::Usage("--rate, --duration and --aht must be positive".into()));
    }
    // Several connections, as real desks spread over them: one per 2,000 desks, at least 4.
    let connections = (cfg.operators as usize).div_ceil(2_000).max(4);
    let pool = Pool::connect(&cfg.target, connections, &cfg.creds, Identity::from_config(cfg)?).await?;
    let before = match &cfg.server_metrics {
        Some(url) => Some(server_usage(url).await?),
        None => None,
    };
    preflight(cfg, &pool).await?;
    let mut report = match cfg.scenario {
        Scenario::Floor => {
            let rps = floor(&pool, cfg.concurrency, Duration::from_secs_f64(cfg.duration), &stop).await;
            Report { scenario: "floor".into(), floor_rps: Some(rps), ..Report::default() }
        }
        Scenario::Max => max_rate(cfg, &pool, &stop).await?,
        Scenario::Follow => follow::run(cfg, vec![cfg.target.clone()], stop.clone()).await?,
        Scenario::Citizen => citizen::run(cfg, &pool, &stop).await?,
        Scenario::Wallboards => {
            let boards = wallboards::Wallboards::start(cfg, &pool).await?;
            let until = Instant::now() + Duration::from_secs_f64(cfg.duration);
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Report { scenario: "wallboards".into(), wallboards: Some(boards.finish().await), ..Report::default() }
        }
        _ => open_loop(cfg, &pool, cfg.rate, &stop, &cfg.prefix).await?,
    };
    if let (Some(url), Some((cpu0, rss0))) = (&cfg.server_metrics, before) {
        report.server_rss_start_bytes = Some(rss0);
        // CPU from the first arrival (the desks' logins are not the contacts' cost).
        let cpu0 = report.usage_at_arrivals.map_or(cpu0, |u| u.0);
        // The gauges refresh about once a second: let the last one catch the run's end.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let (cpu1, rss) = server_usage(url).await?;
        let contacts = report.consistency.contacts.max(1) as f64;
        report.server_cpu_us_per_contact = Some((cpu1 - cpu0) * 1e6 / contacts);
        report.server_rss_bytes = Some(rss);
    }
    if let (Some(start), Some((_, rss1))) = (report.server_rss_start_bytes, report.usage_at_arrivals) {
        report.server_rss_per_desk_bytes = Some((rss1 - start) / f64::from(cfg.operators.max(1)));
    }
    if cfg.vs_wallboards {
        if cfg.wallboards == 0 {
            return Err(LoadError::Usage("--vs-wallboards needs --wallboards N".into()));
        }
        let (none, with, figures) = vs_wallboards(cfg, &pool, &stop).await?;
        report.no_wallboard_offer_rps = Some(none);
        report.wallboard_offer_rps = Some(with);
        report.wallboard_ratio = Some(if none > 0.0 { with / none } else { 0.0 });
        report.wallboards.get_or_insert(figures);
    }
    if cfg.idle_subscribers > 0 {
        let (none, idle) = vs_idle(cfg, &pool, &stop).await?;
        report.no_subscriber_offer_rps = Some(none);
        report.idle_subscriber_offer_rps = Some(idle);
        report.idle_subscriber_ratio = Some(if none > 0.0 { idle / none } else { 0.0 });
    }
    if let Some(other) = &cfg.vs_other {
        let (this, that) = vs_pair(cfg, &pool, other, ("target", "other"), &stop).await?;
        report.target_offer_rps = Some(this);
        report.other_offer_rps = Some(that);
        report.other_ratio = Some(if that > 0.0 { this / that } else { 0.0 });
    }
    if let Some(plain) = &cfg.vs_plain {
        let (secure, open) = vs_pair(cfg, &pool, plain, ("TLS + tokens", "plaintext"), &stop).await?;
        report.secure_offer_rps = Some(secure);
        report.plain_offer_rps = Some(open);
        report.secure_ratio = Some(if open > 0.0 { secure / open } else { 0.0 });
    }
    if cfg.vs_floor && cfg.scenario != Scenario::Floor {
        let (floor_rps, offer_rps, rpc_rps) = vs_floor(cfg, &pool, &stop).await?;
        let ratio = |x: f64| if floor_rps > 0.0 { x / floor_rps } else { 0.0 };
        report.floor_rps = Some(floor_rps);
        report.offer_rps = Some(offer_rps);
        report.ratio_to_floor = Some(ratio(offer_rps));
        report.offer_phase_rpc_rps = Some(rpc_rps);
        report.rpc_ratio_to_floor = Some(ratio(rpc_rps));
    }
    Ok(report)
}

impl Scenario {
    /// The configuration a server needs for this scenario, as the command that starts it.
    #[must_use]
    pub fn server_command(self) -> &'static str {
        match self {
            Scenario::Mix => "smista serve (the embedded demo)",
            Scenario::Citizen => "smista serve --config benches/scenarios/citizen.toml",
            Scenario::Follow => "the active/standby group of benches/README.md (\"Failover\")",
            _ => "smista serve --config benches/scenarios/loadtest.toml",
        }
    }
}

/// Checks, through the server's snapshot, that it has what the scenario needs (its queues, a
/// budget for `budget`), so a run against the wrong configuration stops at once with the command
/// that starts the right one instead of failing on its first login.
async fn preflight(cfg: &LoadConfig, pool: &Pool) -> Result<(), LoadError> {
    let needs: Vec<&str> = match cfg.scenario {
        Scenario::Floor | Scenario::Follow | Scenario::Citizen | Scenario::Wallboards => return Ok(()),
        Scenario::Mix => MIX.iter().map(|m| m.0).collect(),
        Scenario::Erlang | Scenario::Max | Scenario::Budget => vec![cfg.queue.as_str()],
    };
    let snap = pool.admin().get_snapshot(pb::GetSnapshotRequest {}).await.map_err(rpc("snapshot"))?.into_inner();
    let have: Vec<&str> = snap.queues.iter().map(|q| q.name.as_str()).collect();
    let wrong = |what: String| {
        LoadError::Usage(format!(
            "{what}: the {:?} scenario needs a server started with `{}`",
            cfg.scenario,
            cfg.scenario.server_command()
        ))
    };
    if let Some(q) = needs.iter().find(|q| !have.contains(q)) {
        return Err(wrong(format!("the server at {} has no queue `{q}` (it has {})", cfg.target, have.join(", "))));
    }
    if cfg.scenario == Scenario::Budget && snap.budgets.is_empty() {
        return Err(wrong(format!("the server at {} has no budget", cfg.target)));
    }
    Ok(())
}

async fn login_operators(
    cfg: &LoadConfig,
    pool: &Pool,
    prefix: &str,
    n: u32,
    with_watch: bool,
    tracker: &Arc<Tracker>,
) -> Result<Vec<String>, LoadError> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-op-{i}");
        let (group, skills) = operator_setup(cfg, i);
        let mut ops = pool.desk(&id);
        ops.login(pb::LoginRequest {
            operator_id: id.clone(),
            group,
            skills: skills.into_iter().map(|(name, level)| pb::Skill { name, level }).collect(),
            channels: vec![],
            session_id: format!("{id}-desk"),
        })
        .await
        .map_err(|status| {
            if status.message().contains("unknown operator group") {
                LoadError::Usage(format!(
                    "login {id}: {}: the {:?} scenario needs a server started with `{}`",
                    status.message(),
                    cfg.scenario,
                    cfg.scenario.server_command()
                ))
            } else {
                LoadError::Rpc { what: format!("login {id}"), status }
            }
        })?;
        if with_watch {
            let mut stream = ops
                .watch_offers(pb::WatchOffersRequest { operator_id: id.clone() })
                .await
                .map_err(rpc(format!("watch offers of {id}")))?
                .into_inner();
            let (pool, tracker, id2) = (pool.clone(), tracker.clone(), id.clone());
            let (dist, aht) = (cfg.handle, cfg.aht);
            let mut rng = SmallRng::seed_from_u64(stream_seed(cfg.seed, 1 + u64::from(i)));
            tokio::spawn(async move {
                let mut first = true;
                while let Ok(Some(offer)) = stream.message().await {
                    if std::mem::take(&mut first) {
                        tracker.desks_offered.fetch_add(1, Ordering::Relaxed);
                    }
                    let handle = draw_handle(&mut rng, dist, aht);
                    let (pool, tracker, op) = (pool.clone(), tracker.clone(), id2.clone());
                    tokio::spawn(async move {
                        let mut ops = pool.desk(&op);
                        let c = offer.contact_id;
                        if ops
                            .accept_offer(pb::AcceptOfferRequest { operator_id: op.clone(), contact_id: c.clone() })
                            .await
                            .is_err()
                        {
                            return; // the caller hung up, or the offer went elsewhere
                        }
                        let accepted = Instant::now();
                        tokio::time::sleep(Duration::from_secs_f64(handle)).await;
                        let done = ops
                            .complete_contact(pb::CompleteContactRequest {
                                operator_id: op,
                                contact_id: c,
                                wrap_up_ms: 0,
                                ended_unix_ms: 0,
                            })
                            .await;
                        if let Ok(d) = done {
                            tracker.busy_ms.fetch_add(d.into_inner().handle_ms, Ordering::Relaxed);
                            tracker.busy.lock().push((accepted, Instant::now()));
                        }
                    });
                }
            });
        }
        ids.push(id);
    }
    Ok(ids)
}

async fn follow_events(
    pool: &Pool,
    tracker: Arc<Tracker>,
    sl_ms: u64,
) -> Result<tokio::task::JoinHandle<()>, LoadError> {
    let mut stream = pool
        .contacts()
        .stream_events(pb::StreamEventsRequest::default())
        .await
        .map_err(rpc("stream events"))?
        .into_inner();
    Ok(tokio::spawn(async move {
        use pb::contact_event::Kind;
        while let Ok(Some(ev)) = stream.message().await {
            // Contacts of other clients on the same server are ignored.
            let Some(queue) = tracker.mine.get(&ev.contact_id).map(|q| q.to_string()) else { continue };
            match ev.kind {
                Some(Kind::Accepted(a)) => {
                    tracker.answered.fetch_add(1, Ordering::Relaxed);
                    tracker.waited_ms_sum.fetch_add(a.waited_ms, Ordering::Relaxed);
                    if a.waited_ms <= sl_ms {
                        tracker.answered_in_sl.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some((_, tx)) = tracker.waiting_for_answer.remove(&ev.contact_id) {
                        let _ = tx.send(a.waited_ms);
                    }
                }
                Some(Kind::Finished(f)) => {
                    let outcome = pb::Outcome::try_from(f.outcome)
                        .map_or("unknown".into(), |o| short_name(o.as_str_name(), "OUTCOME_"));
                    *tracker.by_queue.lock().entry((queue.clone(), outcome.clone())).or_default() += 1;
                    Tracker::count(&tracker.outcomes, &outcome);
                    *tracker.finished.entry(ev.contact_id.clone()).or_default() += 1;
                    tracker.waiting_for_answer.remove(&ev.contact_id);
                }
                _ => {}
            }
        }
    }))
}

async fn open_loop(
    cfg: &LoadConfig,
    pool: &Pool,
    rate: f64,
    stop: &Arc<AtomicBool>,
    prefix: &str,
) -> Result<Report, LoadError> {
    let tracker = Arc::new(Tracker { latency: Mutex::new(Histogram::new(3).ok()), ..Tracker::default() });
    let sl_ms = (cfg.sl_threshold * 1000.0) as u64;
    let started_unix_ms = unix_now_ms();
    let ops = login_operators(cfg, pool, prefix, cfg.operators, true, &tracker).await?;
    // The server's usage once the desks are in: what the contacts cost is measured from here.
    let usage_at_arrivals = match &cfg.server_metrics {
        Some(url) => {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            Some(server_usage(url).await?)
        }
        None => None,
    };
    let events = follow_events(pool, tracker.clone(), sl_ms).await?;
    let boards = if cfg.wallboards > 0 { Some(wallboards::Wallboards::start(cfg, pool).await?) } else { None };
    let mut rng = SmallRng::seed_from_u64(stream_seed(cfg.seed, u64::MAX));
    let start = Instant::now();
    let horizon = Duration::from_secs_f64(cfg.duration);
    let mut arrivals = pace(start, horizon, rate, stream_seed(cfg.seed, 0), stop.clone());
    let mut n = 0u64;
    let mut last_progress = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    while let Some(at) = arrivals.recv().await {
        let id = format!("{prefix}-{}-c{n}", run_nonce());
        n += 1;
        let queue = match cfg.scenario {
            Scenario::Mix => {
                let x: f64 = rng.random();
                let mut acc = 0.0;
                MIX.iter()
                    .find(|(_, _, w)| {
                        acc += w;
                        x < acc
                    })
                    .map_or(MIX[0].0, |m| m.0)
                    .to_owned()
            }
            _ => cfg.queue.clone(),
        };
        let patience = (cfg.patience > 0.0).then(|| draw_exp(&mut rng, cfg.patience));
        // Counted in flight here, before the task first runs: the drain below must not see zero
        // while a caller that is spawned but not yet polled is about to send its offer.
        let answered = InFlight::new(tracker.clone());
        callers.spawn(caller(pool.clone(), tracker.clone(), answered, id, queue, at, patience, sl_ms));
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "[{:>5.1}s] offered {:>7}  answered {:>7}  in flight {:>5}",
                start.elapsed().as_secs_f64(),
                tracker.offers.load(Ordering::Relaxed),
                tracker.answered.load(Ordering::Relaxed),
                callers.len()
            );
        }
        while callers.try_join_next().is_some() {}
    }
    let elapsed = start.elapsed().as_secs_f64().min(cfg.duration).max(1e-9);
    // Drain: first every offer in flight gets its answer (aborting a caller mid-RPC would lose a
    // decision the server made), then operators finish what they hold, then the rest is ended.
    let answered_by = Instant::now() + Duration::from_secs(10);
    while tracker.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < answered_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let grace = Instant::now() + Duration::from_secs_f64((cfg.aht * 4.0 + 2.0).min(30.0));
    while Instant::now() < grace && unfinished(&tracker) > 0 && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    callers.abort_all();
    let mut contacts = pool.contacts();
    let leftovers: Vec<String> =
        tracker.decided.iter().filter(|e| !tracker.finished.contains_key(e.key())).map(|e| e.key().clone()).collect();
    for c in leftovers {
        let _ = contacts.cancel_contact(pb::CancelContactRequest { contact_id: c }).await;
    }
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle && unfinished(&tracker) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut admin = pool.admin();
    let snapshot = admin.get_snapshot(pb::GetSnapshotRequest {}).await.map_err(rpc("snapshot"))?.into_inner();
    let check = if cfg.check_report {
        Some(check_report(pool, &tracker, started_unix_ms.saturating_sub(1_000), unix_now_ms() + 1_000).await?)
    } else {
        None
    };
    let mut opsc = pool.supervisor_ops();
    for id in &ops {
        let _ = opsc.logout(pb::LogoutRequest { operator_id: id.clone(), force: true }).await;
    }
    // Close the event stream so later phases (--vs-floor) do not pay for it.
    events.abort();
    let boards = match boards {
        Some(b) => Some(b.finish().await),
        None => None,
    };
    let mut report = build_report(cfg, rate, &tracker, (start, elapsed), &snapshot);
    report.report_check = check;
    report.wallboards = boards;
    report.usage_at_arrivals = usage_at_arrivals;
    Ok(report)
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Reads the server's interval report for `[from, to)` (every page) and compares it with the
/// run's own per-queue counts.
async fn check_report(pool: &Pool, tracker: &Tracker, from: u64, to: u64) -> Result<ReportCheck, LoadError> {
    let mut mine: BTreeMap<String, QueueCounts> = BTreeMap::new();
    for ((queue, outcome), n) in tracker.by_queue.lock().iter() {
        let c =
            mine.entry(queue.clone()).or_insert_with(|| QueueCounts { queue: queue.clone(), ..QueueCounts::default() });
        c.offered += n;
        match outcome.as_str() {
            "completed" | "cancelled_in_service" => c.answered += n,
            "abandoned" => c.abandoned += n,
            "diverted" => c.diverted += n,
            _ => c.in_progress += n,
        }
    }
    // Decided contacts without a final outcome are in progress for this run too.
    for e in &tracker.decided {
        if !tracker.finished.contains_key(e.key()) {
            if let Some(q) = tracker.mine.get(e.key()) {
                let c = mine
                    .entry(q.to_string())
                    .or_insert_with(|| QueueCounts { queue: q.to_string(), ..QueueCounts::default() });
                c.offered += 1;
                c.in_progress += 1;
            }
        }
    }
    let mut report: BTreeMap<String, QueueCounts> = BTreeMap::new();
    let mut admin = pool.admin();
    let mut token = String::new();
    loop {
        let page = admin
            .get_interval_report(pb::GetIntervalReportRequest {
                from_unix_ms: from,
                to_unix_ms: to,
                interval_minutes: 60,
                page_size: 5000,
                page_token: token,
            })
            .await
            .map_err(rpc("interval report"))?
            .into_inner();
        for r in page.queues {
            let c = report
                .entry(r.queue.clone())
                .or_insert_with(|| QueueCounts { queue: r.queue.clone(), ..QueueCounts::default() });
            c.offered += r.offered;
            c.answered += r.answered;
            c.abandoned += r.abandoned;
            c.diverted += r.diverted;
            c.in_progress += r.in_progress;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let (mine, report): (Vec<QueueCounts>, Vec<QueueCounts>) =
        (mine.into_values().collect(), report.into_values().collect());
    Ok(ReportCheck { agrees: mine == report, mine, report, from_unix_ms: from, to_unix_ms: to })
}

/// One offer from the moment its caller is spawned until its decision is recorded (or its RPC
/// failed): the drain waits for none to be left before it may abort callers.
struct InFlight(Arc<Tracker>);

impl InFlight {
    fn new(tracker: Arc<Tracker>) -> Self {
        Self(tracker)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The Poisson arrival instants of an open-loop run, each sent when it is due. A dedicated thread
/// sleeps until each instant (the OS timer is precise to tens of microseconds, tokio's to a
/// millisecond), so the runtime never spins waiting and arrivals are not systematically late;
/// whatever lateness remains counts in the offer latency, which is measured from these instants.
fn pace(
    start: Instant,
    horizon: Duration,
    rate: f64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut t = 0.0;
        loop {
            t += draw_exp(&mut rng, 1.0 / rate);
            let at = start + Duration::from_secs_f64(t);
            if at > start + horizon || stop.load(Ordering::Relaxed) {
                return;
            }
            if let Some(lead) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(lead);
            }
            if tx.send(at).is_err() {
                return;
            }
        }
    });
    rx
}

/// `OUTCOME_COMPLETED` -> `completed`.
fn short_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_lowercase()
}

fn unfinished(t: &Tracker) -> usize {
    t.decided.iter().filter(|e| !t.finished.contains_key(e.key())).count()
}

#[allow(clippy::too_many_arguments)]
async fn caller(
    pool: Pool,
    tracker: Arc<Tracker>,
    answered: InFlight,
    id: String,
    queue: String,
    intended: Instant,
    patience: Option<f64>,
    sl_ms: u64,
) {
    let (tx, rx) = oneshot::channel();
    tracker.mine.insert(id.clone(), queue.as_str().into());
    tracker.waiting_for_answer.insert(id.clone(), tx);
    let mut contacts = pool.contacts();
    let r = contacts
        .offer_contact(pb::OfferContactRequest {
            contact_id: id.clone(),
            queue,
            channel: pb::Channel::Voice as i32,
            ..Default::default()
        })
        .await;
    let us = intended.elapsed().as_micros() as u64;
    if let Some(h) = tracker.latency.lock().as_mut() {
        let _ = h.record(us.max(1));
    }
    tracker.offers.fetch_add(1, Ordering::Relaxed);
    // `answered` is dropped once the decision is recorded below (on every path).
    let decision = match r {
        Ok(r) => r.into_inner().decision,
        Err(s) => {
            Tracker::count(&tracker.outcomes, &format!("error_{:?}", s.code()).to_lowercase());
            tracker.waiting_for_answer.remove(&id);
            return;
        }
    };
    let queued = match decision {
        Some(Decision::Assigned(_)) => {
            Tracker::count(&tracker.outcomes, "decision_assigned");
            false
        }
        Some(Decision::Queued(_)) => {
            Tracker::count(&tracker.outcomes, "decision_queued");
            true
        }
        Some(Decision::Diverted(d)) => {
            Tracker::count(&tracker.outcomes, "decision_diverted");
            Tracker::count(&tracker.reasons, &short_name(d.reason().as_str_name(), "DIVERT_REASON_"));
            tracker.decided.insert(id.clone(), 2);
            tracker.waiting_for_answer.remove(&id);
            return;
        }
        None => return,
    };
    tracker.decided.insert(id.clone(), u8::from(queued));
    drop(answered);
    match patience {
        None => {
            if rx.await.is_ok() && queued {
                tracker.answered_after_queue.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(p) => {
            let left = Duration::from_secs_f64(p).saturating_sub(intended.elapsed());
            match tokio::time::timeout(left, rx).await {
                Ok(Ok(_)) => {
                    if queued {
                        tracker.answered_after_queue.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    let r = contacts.cancel_contact(pb::CancelContactRequest { contact_id: id.clone() }).await;
                    if r.is_ok_and(|r| r.into_inner().outcome() == pb::Outcome::Abandoned) {
                        tracker.abandoned.fetch_add(1, Ordering::Relaxed);
                        if intended.elapsed().as_millis() as u64 > sl_ms {
                            tracker.abandoned_after_sl.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

/// The share of the operators' time in `[start, start + elapsed]` spent on calls: each call's
/// time with its operator clipped to that window. Calls finished during the drain after the
/// arrivals stopped count only for their part inside it, so occupancy stays a share (at most 1)
/// even when a run is stopped early with a backlog.
fn occupancy(busy: &[(Instant, Instant)], start: Instant, elapsed: f64, operators: u32) -> f64 {
    let end = start + Duration::from_secs_f64(elapsed);
    let inside: f64 = busy.iter().map(|&(a, c)| c.min(end).saturating_duration_since(a.max(start)).as_secs_f64()).sum();
    inside / (f64::from(operators.max(1)) * elapsed)
}

/// The budgets of a snapshot, as the report shows them.
fn budget_figures(snap: &pb::Snapshot) -> Vec<BudgetFigures> {
    snap.budgets
        .iter()
        .map(|b| BudgetFigures {
            budget: b.budget_id.clone(),
            ceiling_cents: b.ceiling_cents,
            settled_cents: b.settled_cents,
            reserved_cents: b.reserved_cents,
            overrun_cents: b.overrun_cents,
            paced_allowance_cents: b.paced_allowance_cents,
            extra_budget_diversions: b.extra_budget_diversions,
            node_id: snap.node_id.clone(),
            lease_cents: b.lease_cents,
        })
        .collect()
}

fn build_report(
    cfg: &LoadConfig,
    rate: f64,
    t: &Tracker,
    (start, elapsed): (Instant, f64),
    snap: &pb::Snapshot,
) -> Report {
    let answered = t.answered.load(Ordering::Relaxed);
    let offers = t.offers.load(Ordering::Relaxed);
    let abandoned = t.abandoned.load(Ordering::Relaxed);
    let after_sl = t.abandoned_after_sl.load(Ordering::Relaxed);
    let mut consistency = Consistency { contacts: t.decided.len() as u64, ..Consistency::default() };
    for e in &t.decided {
        match t.finished.get(e.key()).map(|n| *n) {
            None => consistency.missing += 1,
            Some(1) => consistency.finished_once += 1,
            Some(_) => consistency.duplicated += 1,
        }
    }
    let lat = t.latency.lock().as_ref().map(latency).unwrap_or_default();
    // Compare with Erlang C at the realised arrival rate and mean handle time: near high occupancy
    // P(wait) is very sensitive to the load actually offered.
    let completed = t.outcomes.lock().get("completed").copied().unwrap_or(0);
    let mean_handle =
        if completed > 0 { t.busy_ms.load(Ordering::Relaxed) as f64 / 1000.0 / completed as f64 } else { cfg.aht };
    let theory = (cfg.scenario == Scenario::Erlang)
        .then(|| theory::erlang_c(cfg.operators, offers as f64 / elapsed, mean_handle, cfg.sl_threshold))
        .flatten();
    Report {
        scenario: format!("{:?}", cfg.scenario).to_lowercase(),
        target_rate: rate,
        offers_per_second: offers as f64 / elapsed,
        latency_us: lat,
        outcomes: t.outcomes.lock().clone(),
        divert_reasons: t.reasons.lock().clone(),
        p_wait: if answered > 0 {
            t.answered_after_queue.load(Ordering::Relaxed) as f64 / answered as f64
        } else {
            0.0
        },
        asa_seconds: if answered > 0 {
            t.waited_ms_sum.load(Ordering::Relaxed) as f64 / answered as f64 / 1000.0
        } else {
            0.0
        },
        service_level: if answered + after_sl > 0 {
            t.answered_in_sl.load(Ordering::Relaxed) as f64 / (answered + after_sl) as f64
        } else {
            1.0
        },
        abandon_rate: if offers > 0 { abandoned as f64 / offers as f64 } else { 0.0 },
        occupancy: occupancy(&t.busy.lock(), start, elapsed, cfg.operators),
        consistency,
        desks_offered: t.desks_offered.load(Ordering::Relaxed),
        budgets: budget_figures(snap),
        theory,
        elapsed_seconds: elapsed,
        ..Report::default()
    }
}

/// A tag unique to this process, in every contact id: a server remembers finished contacts (for
/// idempotent retries), so a second run with the same ids would only replay old decisions.
/// Operator ids stay stable across runs, like a real floor's staff.
fn run_nonce() -> &'static str {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        format!("{:x}{:x}", t, std::process::id())
    })
}

/// Doubles the rate from `--rate` until p99 exceeds the bound, then bisects four times.
async fn max_rate(cfg: &LoadConfig, pool: &Pool, stop: &Arc<AtomicBool>) -> Result<Report, LoadError> {
    let (mut good, mut bad): (Option<(f64, Report)>, Option<f64>) = (None, None);
    let mut rate = cfg.rate;
    for step in 0..16 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let r = open_loop(cfg, pool, rate, stop, &format!("{}-max{step}", cfg.prefix)).await?;
        let ok = r.latency_us.p99 <= cfg.p99_bound_us && r.outcomes.keys().all(|k| !k.starts_with("error"));
        eprintln!("[max] {rate:.0}/s: p99 {} us -> {}", r.latency_us.p99, if ok { "within bound" } else { "over" });
        if ok {
            good = Some((rate, r));
        } else {
            bad = Some(rate);
        }
        rate = match (good.as_ref().map(|g| g.0), bad) {
            (Some(g), None) => g * 2.0,
            (None, Some(b)) => b / 2.0,
            (Some(g), Some(b)) if b / g > 1.1 => (g + b) / 2.0,
            _ => break,
        };
    }
    let (rate, mut report) = good.ok_or_else(|| LoadError::Usage("no rate met the p99 bound; lower --rate".into()))?;
    report.scenario = "max".into();
    report.max_rate = Some(rate);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_counts_only_the_time_inside_the_window() {
        let start = Instant::now();
        let at = |s: f64| start + Duration::from_secs_f64(s);
        // Two operators over 10 s: one call fully inside (5 s), one running past the end (2 s of
        // it inside).
        let busy = [(at(0.0), at(5.0)), (at(8.0), at(14.0))];
        assert!((occupancy(&busy, start, 10.0, 2) - 0.35).abs() < 1e-9);
        // A backlog drained after an early stop: both operators busy the whole window and long
        // after it. Occupancy is 1, not the 2.4 that total busy time / window gave.
        let backlog: Vec<_> = (0..20).map(|i| (at(f64::from(i) * 0.5), at(f64::from(i) * 0.5 + 0.5))).collect();
        let both: Vec<_> = backlog.iter().chain(backlog.iter()).copied().collect();
        assert!((occupancy(&both, start, 3.0, 2) - 1.0).abs() < 1e-9);
    }
}
