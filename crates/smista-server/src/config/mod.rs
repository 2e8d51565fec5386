//! The server's configuration: one TOML file (or the embedded demo), overridden by environment
//! variables and flags (see `main.rs`).
//!
//! ```toml
//! [server]               # all optional
//! grpc_addr = "127.0.0.1:50051"
//! metrics_addr = "127.0.0.1:9464"
//! health_addr = "0.0.0.0:50052"   # optional: plaintext gRPC health only, for probes (see below)
//! data_dir = "./smista-data"
//! log_format = "human"   # or "json"
//! tick_ms = 100          # how often time-based routing runs
//! event_flush_ms = 10    # StreamEvents readers are woken at most this often (0: at each event)
//! max_offers_per_second = 0   # 0: no limit; above it OfferContact gets RESOURCE_EXHAUSTED
//!
//! [tls]                  # optional: gRPC over TLS (see transport::TlsSection)
//! cert_file = "server.pem"
//! key_file = "server.key"
//! client_ca_file = "ca.pem"      # optional: mutual TLS
//!
//! [auth]                 # optional: without it the server is open (loopback only, or --insecure)
//! [auth.jwt]             # JWTs of the identity provider (see auth::JwtSection)
//! [[auth.api_keys]]      # static keys, stored as SHA-256 (see auth::ApiKey)
//! [[auth.client_certs]]  # client certificate subject -> principal (see auth::CertRule)
//!
//! [limits]               # optional: every bound the server keeps (see limits::LimitsSection)
//! max_connections = 20000
//! max_connections_per_address = 1024   # per client IP (desks behind one NAT share one)
//! handshake_timeout_ms = 10000         # from accept: TLS, HTTP/2 preface, first SETTINGS
//! metrics_max_connections = 64         # the metrics port: connections in all,
//! metrics_max_connections_per_address = 16   # per client IP,
//! metrics_request_timeout_ms = 5000    # and one request, read and answered
//!
//! [cluster]              # optional: several nodes (see lease::ClusterSection)
//! node_id = "node-a"     # with kind = "postgres": budgets are spent through leases
//! failover = true        # or: active/standby, one node of `group` routes (see failover.rs)
//!
//! [ledger]               # optional: where budget spend is made durable
//! kind = "sqlite"        # <data_dir>/ledger.db; "postgres" (several nodes sharing budgets);
//!                        # "none" keeps spend in memory only (not durable)
//! url = ""               # postgres: connection URL (or SMISTA_LEDGER_URL; keep passwords out of files)
//! schema = ""            # postgres: schema holding the tables (default: the server's search path)
//! recovered_hold_max_age_ms = 14400000   # see LedgerSection
//!
//! [history]              # optional: the contact history (see history::HistorySection)
//! enabled = true
//! retention_days = 400   # detail records purged after this (0: never)
//! keep_caller_key = false
//! time_zone = "Europe/Rome"
//! interval_minutes = 30
//! short_abandon_ms = 5000
//!
//! [engine]               # optional
//! max_operators = 20000
//! finished_retention_ms = 600000
//! sl_window_ms = 900000  # window of the live service level
//! time_zone = "Europe/Rome"   # opening hours, monthly budget periods, hour-of-week pacing
//!
//! [[groups]]             # operator groups; `budget` names the capped budget paying them
//! [roster]               # optional: who each operator is (see roster::RosterSection, docs/roster.md)
//! mode = "required"      # "open": unknown operators log in as they state; default: required with [auth]
//! file = "roster.csv"    # the HR/WFM export: id,name,group,skills,channels,status
//! [[operators]]          # rostered operators inline (see roster::OperatorConfig)
//! [[queues]]             # service lines: see smista_core::config::QueueConfig
//! [[pause_reasons]]      # optional: codes desks pause with (see pause::PauseReason)
//! code = "break"
//! label = "Break"
//! kind = "break"         # or training, meeting, technical, after_call_work
//!
//! [privacy]              # optional: per-operator reports (see privacy::PrivacySection)
//! per_operator_reports = false   # true needs `agreement`, the union agreement's reference
//! agreement = ""
//! operator_retention_days = 93   # operator state records purged after this
//! [[budgets]]            # capped budgets: see smista_core::book::BudgetConfig
//! ```

pub mod auth;
pub mod cluster;
pub mod history;
pub mod limits;
pub mod pause;
pub mod privacy;
pub mod roster;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use smista_core::book::BudgetConfig;
use smista_core::config::{EngineConfig, GroupConfig, QueueConfig};
use thiserror::Error;

/// The ledger's file name in the data directory.
pub const LEDGER_FILE: &str = "ledger.db";

/// The embedded demo configuration, used when no file is given.
pub const DEMO: &str = include_str!("../../demo.toml");

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// gRPC listen address (port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// Prometheus listen address (port 0 picks a free port).
    pub metrics_addr: SocketAddr,
    /// Optional second listener serving only the gRPC health protocol (`grpc.health.v1`), in
    /// plaintext whatever `[tls]` says: for probes that cannot speak TLS (Kubernetes' native gRPC
    /// probes, container health checks). It reveals only whether each service is SERVING, never
    /// routing state, so it is allowed beyond loopback without `--insecure`.
    pub health_addr: Option<SocketAddr>,
    /// Where durable state lives.
    pub data_dir: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// Period of the routing clock tick, in milliseconds (10..=1000).
    pub tick_ms: u64,
    /// `StreamEvents` readers are woken at once when an event follows a quiet spell, and at most
    /// once per this many milliseconds while events keep coming, each time with everything
    /// published since (0..=1000; 0: woken by every publish, on the publishing thread).
    pub event_flush_ms: u64,
    /// Admission limit on OfferContact, for the whole server (0: none).
    pub max_offers_per_second: u32,
    /// Serve without TLS or authentication on a non-loopback address (set by `--insecure`, not
    /// by the file).
    #[serde(skip)]
    pub insecure: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            health_addr: None,
            data_dir: PathBuf::from("./smista-data"),
            log_format: LogFormat::Human,
            tick_ms: 100,
            event_flush_ms: 10,
            max_offers_per_second: 0,
            insecure: false,
        }
    }
}

/// Which ledger backend stores budget spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// SQLite file `ledger.db` in the data directory (WAL, group commit).
    #[default]
    Sqlite,
    /// A PostgreSQL database (`url`), which several nodes may share.
    Postgres,
    /// Nothing durable: spend lives in memory and is lost on restart (benchmarks, demos).
    None,
}

/// `[ledger]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSection {
    /// Backend.
    pub kind: LedgerKind,
    /// A contact found in service at restart keeps its reservation until its completion arrives,
    /// or until this long after it was accepted (its completion is then presumed lost and the
    /// reservation released).
    pub recovered_hold_max_age_ms: u64,
    /// PostgreSQL connection URL (`kind = "postgres"`); `SMISTA_LEDGER_URL` overrides it.
    pub url: String,
    /// PostgreSQL schema for the tables (empty: the server's search path).
    pub schema: String,
}

impl Default for LedgerSection {
    fn default() -> Self {
        LedgerSection {
            kind: LedgerKind::Sqlite,
            recovered_hold_max_age_ms: 4 * 3_600_000,
            url: String::new(),
            schema: String::new(),
        }
    }
}

impl LedgerSection {
    /// Where the ledger lives, for a server whose data directory is `data_dir` (`None`: no
    /// ledger).
    #[must_use]
    pub fn target(&self, data_dir: &std::path::Path) -> Option<smista_ledger::Target> {
        match self.kind {
            LedgerKind::None => None,
            LedgerKind::Sqlite => {
                Some(smista_ledger::Target::Sqlite { path: data_dir.join(crate::config::LEDGER_FILE), create: true })
            }
            LedgerKind::Postgres => Some(smista_ledger::Target::Postgres {
                url: self.url.clone(),
                schema: (!self.schema.is_empty()).then(|| self.schema.clone()),
            }),
        }
    }
}

/// `[engine]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Most distinct operator ids.
    pub max_operators: u32,
    /// How long finished contacts are remembered for idempotent retries.
    pub finished_retention_ms: u64,
    /// The window of the live service level, ms (15 minutes by default).
    pub sl_window_ms: u64,
    /// The centre's IANA time zone: queues' opening hours, monthly budget periods and
    /// hour-of-week pacing follow its wall clock.
    pub time_zone: String,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            max_operators: 20_000,
            finished_retention_ms: 600_000,
            sl_window_ms: 900_000,
            time_zone: "Europe/Rome".into(),
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerSection,
    /// `[engine]`.
    #[serde(default)]
    pub engine: EngineSection,
    /// `[ledger]`.
    #[serde(default)]
    pub ledger: LedgerSection,
    /// `[[groups]]`.
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// `[[queues]]`.
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    /// `[[budgets]]`: capped budgets (see smista_core::book::BudgetConfig).
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    /// `[tls]`.
    #[serde(default)]
    pub tls: Option<crate::config::tls::TlsSection>,
    /// `[auth]`.
    #[serde(default)]
    pub auth: crate::config::auth::AuthSection,
    /// `[limits]`.
    #[serde(default)]
    pub limits: crate::config::limits::LimitsSection,
    /// `[cluster]`.
    #[serde(default)]
    pub cluster: crate::config::cluster::ClusterSection,
    /// `[history]`.
    #[serde(default)]
    pub history: crate::config::history::HistorySection,
    /// `[[pause_reasons]]`: the codes desks pause with (empty: the built-in set).
    #[serde(default)]
    pub pause_reasons: Vec<crate::config::pause::PauseReason>,
    /// `[privacy]`.
    #[serde(default)]
    pub privacy: crate::config::privacy::PrivacySection,
    /// `[roster]`.
    #[serde(default)]
    pub roster: crate::config::roster::RosterSection,
    /// `[[operators]]`: rostered operators, inline.
    #[serde(default)]
    pub operators: Vec<crate::config::roster::OperatorConfig>,
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key of the wrong type or unknown (the message names it).
    #[error("{origin}: {message}")]
    Parse {
        /// File name or "embedded demo".
        origin: String,
        /// toml's message, with line and column.
        message: String,
    },
    /// Parsed, but inconsistent (e.g. an overflow to an unknown queue).
    #[error("{origin}: {source}")]
    Invalid {
        /// File name or "embedded demo".
        origin: String,
        /// The offending key and problem.
        source: smista_core::ConfigError,
    },
    /// The roster file (`[roster] file`) cannot be read or has an error (its line and column).
    #[error("{0}")]
    Roster(#[from] crate::config::roster::CsvError),
}

impl Config {
    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigFileError> {
        let cfg: Config = toml::from_str(text)
            .map_err(|e| ConfigFileError::Parse { origin: origin.to_owned(), message: e.to_string() })?;
        cfg.validate().map_err(|source| ConfigFileError::Invalid { origin: origin.to_owned(), source })?;
        Ok(cfg)
    }

    /// Reads `path`, or the embedded demo when `None`.
    pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigFileError> {
        match path {
            None => Config::parse(DEMO, "embedded demo"),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|source| ConfigFileError::Read { path: p.to_owned(), source })?;
                Config::parse(&text, &p.display().to_string())
            }
        }
    }

    /// The roster as the configuration states it: `[[operators]]`, then the `[roster] file`
    /// (read now; an operator in both is an error).
    pub fn roster_entries(&self) -> Result<Vec<crate::config::roster::RosterEntry>, ConfigFileError> {
        let mut out = Vec::new();
        for o in &self.operators {
            // Checked by `validate`.
            if let Ok(e) = o.entry() {
                out.push(e);
            }
        }
        if let Some(f) = &self.roster.file {
            for (line, e) in crate::config::roster::read_csv(f, &self.groups)? {
                if out.iter().any(|x: &crate::config::roster::RosterEntry| x.id == e.id) {
                    return Err(ConfigFileError::Roster(crate::config::roster::CsvError {
                        file: f.display().to_string(),
                        line,
                        problem: format!("column `id`: operator `{}` is also in [[operators]]", e.id),
                    }));
                }
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Whether this node spends budgets through leases: a node id with the PostgreSQL ledger,
    /// several nodes routing at once (not active/standby, where the active owns the budgets).
    #[must_use]
    pub fn leased(&self) -> bool {
        self.ledger.kind == LedgerKind::Postgres && !self.cluster.node_id.is_empty() && !self.cluster.failover
    }

    /// Whom this node's ledger writes are recorded under: its `node_id` (leases), or in
    /// active/standby its group (`group:<name>`, which no node id can be), so that each new active
    /// rebuilds what the previous one had in service and fences its late writes.
    #[must_use]
    pub fn ledger_identity(&self) -> String {
        if self.cluster.failover {
            format!("group:{}", self.cluster.group)
        } else {
            self.cluster.node_id.clone()
        }
    }

    /// The pause reasons desks may use: `[[pause_reasons]]`, or the built-in set without any.
    #[must_use]
    pub fn desk_pause_reasons(&self) -> Vec<crate::config::pause::PauseReason> {
        if self.pause_reasons.is_empty() {
            crate::config::pause::builtin()
        } else {
            self.pause_reasons.clone()
        }
    }

    /// The routing engine's part.
    #[must_use]
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            queues: self.queues.clone(),
            groups: self.groups.clone(),
            max_operators: self.engine.max_operators,
            finished_retention_ms: self.engine.finished_retention_ms,
            sl_window_ms: self.engine.sl_window_ms,
        }
    }

    fn validate(&self) -> Result<(), smista_core::ConfigError> {
        let bad = |key: &str, problem: &str| smista_core::ConfigError { key: key.into(), problem: problem.into() };
        if self.server.event_flush_ms > 1000 {
            return Err(bad("server.event_flush_ms", "must be 0..=1000"));
        }
        if !(10..=1000).contains(&self.server.tick_ms) {
            return Err(bad("server.tick_ms", "must be 10..=1000"));
        }
        self.auth.validate().map_err(|(k, p)| bad(&k, &p))?;
        if self.ledger.kind == LedgerKind::Postgres && self.ledger.url.is_empty() {
            return Err(bad("ledger.url", "kind = \"postgres\" needs a connection URL (or SMISTA_LEDGER_URL)"));
        }
        self.limits.validate().map_err(|(k, p)| bad(&k, &p))?;
        self.cluster.validate().map_err(|(k, p)| bad(&k, &p))?;
        self.history.validate().map_err(|p| bad("history", &p))?;
        crate::config::pause::validate(&self.pause_reasons).map_err(|(k, p)| bad(&k, &p))?;
        self.privacy.validate().map_err(|(k, p)| bad(&k, &p))?;
        if !(100..=60_000).contains(&self.roster.refresh_ms) {
            return Err(bad("roster.refresh_ms", "must be 100..=60000"));
        }
        for (i, o) in self.operators.iter().enumerate() {
            let e = o.entry().map_err(|(k, p)| bad(&format!("operators[{i}].{k}"), &p))?;
            e.check(&self.groups).map_err(|(k, p)| bad(&format!("operators[{i}].{k}"), &p))?;
            if let Some(j) = self.operators[..i].iter().position(|x| x.id == o.id) {
                return Err(bad(
                    &format!("operators[{i}].id"),
                    &format!("operator `{}` is already operators[{j}]", o.id),
                ));
            }
        }
        jiff::tz::TimeZone::get(&self.engine.time_zone).map_err(|e| {
            bad("engine.time_zone", &format!("`{}` is not an IANA time zone: {e}", self.engine.time_zone))
        })?;
        if self.cluster.failover && self.ledger.kind != LedgerKind::Postgres {
            return Err(bad("cluster.failover", "active/standby needs [ledger] kind = \"postgres\""));
        }
        if !self.auth.client_certs.is_empty() && self.tls.as_ref().is_none_or(|t| t.client_ca_file.is_none()) {
            return Err(bad("auth.client_certs", "client certificates need [tls] client_ca_file"));
        }
        let known = |b: &str| self.budgets.iter().any(|x| x.id == b);
        for (i, g) in self.groups.iter().enumerate() {
            if let Some(b) = &g.budget {
                if !known(b) {
                    return Err(bad(&format!("groups[{i}].budget"), &format!("no [[budgets]] entry with id `{b}`")));
                }
            }
        }
        for (i, q) in self.queues.iter().enumerate() {
            if let Some(b) = &q.budget {
                if !known(b) {
                    return Err(bad(&format!("queues[{i}].budget"), &format!("no [[budgets]] entry with id `{b}`")));
                }
                if !self.groups.iter().any(|g| g.budget.as_ref() == Some(b)) {
                    return Err(bad(
                        &format!("queues[{i}].budget"),
                        &format!("no operator group is paid by budget `{b}`"),
                    ));
                }
            }
        }
        for (i, b) in self.budgets.iter().enumerate() {
            b.validate(&format!("budgets[{i}]")).map_err(|e| match e {
                smista_core::book::BudgetError::Invalid { key, problem } => bad(&key, &problem),
                other => bad(&format!("budgets[{i}]"), &other.to_string()),
            })?;
            if self.budgets[..i].iter().any(|x| x.id == b.id) {
                return Err(bad(&format!("budgets[{i}].id"), &format!("duplicate budget `{}`", b.id)));
            }
        }
        self.engine_config().validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_valid() {
        let c = Config::load(None).expect("demo parses");
        assert_eq!(c.queues.len(), 7);
        assert!(c.queues.iter().any(|q| q.appointments.is_some()));
        assert!(c.groups.iter().any(|g| g.budget.is_none()));
    }

    #[test]
    fn errors_name_the_offending_key() {
        let e = Config::parse("[[queues]]\nname = \"a\"\nmax_wait = 3\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("max_wait") && e.contains("t.toml"), "{e}");
        let e = Config::parse("[[queues]]\nname = \"a\"\noverflow = [\"zzz\"]\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("queues[0].overflow[0]") && e.contains("zzz"), "{e}");
        let e = Config::parse("[server]\ntick_ms = 0\n[[queues]]\nname = \"a\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("server.tick_ms"), "{e}");
        let e = Config::parse("[[queues]]\nname = \"a\"\nbudget = \"nobody\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("queues[0].budget"), "{e}");
        let bad_budget = "[[groups]]\nname = \"s\"\nbudget = \"b\"\n[[budgets]]\nid = \"b\"\nceiling_cents = -1\nperiod = { kind = \"monthly\" }\n[[queues]]\nname = \"a\"\n";
        let e = Config::parse(bad_budget, "t.toml").unwrap_err().to_string();
        assert!(e.contains("budgets[0].ceiling_cents"), "{e}");
    }
}
