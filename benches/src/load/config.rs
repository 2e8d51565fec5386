//! What `smista-load` runs: the scenarios, the handle-time distributions and the command line
//! ([`LoadConfig`]), with the demo centre's service lines that `mix` offers to.

use serde::Serialize;

use super::connect::Credentials;

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
    /// Virtual desks of an open-loop run pause now and then: the mean time between a desk's
    /// pauses, seconds (exponential; 0: they never pause).
    #[arg(long, default_value_t = 0.0)]
    pub pause_every: f64,
    /// The mean length of a pause, seconds (exponential).
    #[arg(long, default_value_t = 1.0)]
    pub pause_mean: f64,
    /// The reason codes desks pause with, comma-separated, drawn at random (codes of the
    /// server's `[[pause_reasons]]`; these three are in its built-in set).
    #[arg(long, default_value = "break,training,meeting")]
    pub pause_codes: String,
    /// After an open-loop run, log the desks out and compare this run's own record of their time
    /// per group (logged in, available, on contacts, paused per code) with the server's operator
    /// report (`GetOperatorReport`) for the run's period: every figure within the bounds the
    /// run's timestamps allow (each change between its request and its reply), give or take
    /// `--tick-ms`. On a server no other client uses, with callers who never hang up in service.
    #[arg(long)]
    pub check_operators: bool,
    /// The server's `[server] tick_ms`: the tolerance of `--check-operators`.
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,
    /// Share of the handled first-level contacts their operator transfers to `--second-queue`
    /// (TransferContact) instead of completing (0..=1; `erlang` only).
    #[arg(long, default_value_t = 0.0)]
    pub transfer_share: f64,
    /// The second-level queue transferred contacts wait in.
    #[arg(long, default_value = "consult")]
    pub second_queue: String,
    /// Second-level operators (serving only `--second-queue`), beside the `--operators`.
    #[arg(long, default_value_t = 0)]
    pub second_operators: u32,
    /// Mean handle time at the second level, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub second_aht: f64,
}

/// Service lines of the demo configuration with their share of demand (for `mix`).
pub(super) const MIX: [(&str, &str, f64); 5] = [
    ("pensions", "pensions", 0.30),
    ("naspi", "naspi", 0.25),
    ("family-allowance", "family", 0.20),
    ("isee", "isee", 0.15),
    ("disability", "disability", 0.10),
];
