//! Starts a real smista server in-process on ephemeral ports and gives clients for it.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use smista_server::config::Config;
use smista_server::node::{serve, Listeners};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub struct Server {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(Config::load(None).expect("demo config")).await
    }

    /// Starts a server with `cfg`, its data directory a fresh temporary one.
    pub async fn start_with(mut cfg: Config) -> Server {
        cfg.server.data_dir = temp_dir("server");
        Self::start_in(cfg).await
    }

    /// Starts a server with `cfg` as given (data directory included), ticking every 20 ms.
    pub async fn start_in(cfg: Config) -> Server {
        Self::start_ticking(cfg, 20).await
    }

    /// Starts a server with `cfg` as given, its routing tick every `tick_ms`.
    pub async fn start_ticking(mut cfg: Config, tick_ms: u64) -> Server {
        cfg.server.tick_ms = tick_ms;
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = Listeners::bind(any, any).await.expect("bind");
        let (grpc, metrics) = listeners.addrs().expect("addrs");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            serve(
                &cfg,
                listeners,
                async {
                    let _ = rx.await;
                },
                Duration::from_millis(50),
            )
            .await
            .expect("serve");
        });
        Server { grpc, metrics, stop: Some(tx), task: Some(task) }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc)).expect("uri").connect().await.expect("connect")
    }

    pub async fn contacts(&self) -> ContactServiceClient<Channel> {
        ContactServiceClient::new(self.channel().await)
    }

    pub async fn operators(&self) -> OperatorServiceClient<Channel> {
        OperatorServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// The interval report of the hour around now, in one interval (`GetIntervalReport`).
    pub async fn hour_report(&self) -> pb::GetIntervalReportResponse {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
        self.admin()
            .await
            .get_interval_report(pb::GetIntervalReportRequest {
                from_unix_ms: now - 3_600_000,
                to_unix_ms: now + 3_600_000,
                interval_minutes: 60,
                ..Default::default()
            })
            .await
            .expect("interval report")
            .into_inner()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t).await.expect("server stops").expect("server task");
        }
    }

    /// GET /metrics over a plain TCP connection.
    pub async fn scrape(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.metrics).await.expect("metrics connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }
}

/// `f` summed over queue `q`'s rows.
pub fn sum_of(rows: &[pb::QueueIntervalRow], q: &str, f: fn(&pb::QueueIntervalRow) -> u64) -> u64 {
    rows.iter().filter(|r| r.queue == q).map(f).sum()
}

pub fn voice(contact: &str, queue: &str) -> pb::OfferContactRequest {
    pb::OfferContactRequest {
        contact_id: contact.into(),
        queue: queue.into(),
        channel: pb::Channel::Voice as i32,
        ..Default::default()
    }
}

pub fn login(op: &str, group: &str, skills: &[(&str, u32)]) -> pb::LoginRequest {
    pb::LoginRequest {
        operator_id: op.into(),
        group: group.into(),
        skills: skills.iter().map(|(n, l)| pb::Skill { name: (*n).into(), level: *l }).collect(),
        channels: vec![],
        session_id: format!("desk-{op}"),
    }
}

pub fn assigned(r: &pb::OfferContactResponse) -> Option<String> {
    match &r.decision {
        Some(pb::offer_contact_response::Decision::Assigned(a)) => Some(a.operator_id.clone()),
        _ => None,
    }
}

/// The next message of a stream, failing the test after `secs`.
pub async fn next<T>(s: &mut tonic::Streaming<T>, secs: u64) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(secs), s.message())
        .await
        .expect("stream message in time")
        .expect("stream ok")
}

/// A fresh, empty directory under the system temp dir, unique to this process and call.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "smista-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The demo configuration (no ledger) with money for one supplier call in flight and no more:
/// no pacing, no reserve.
pub fn one_call_budget() -> Config {
    let mut cfg = Config::load(None).expect("demo");
    cfg.budgets[0].ceiling_cents = 1_000;
    cfg.budgets[0].pacing = smista_core::book::PacingConfig::None;
    cfg.budgets[0].protected_reserve_bp = 0;
    cfg
}

/// The demo configuration with its ledger as SQLite in `data` or, with `pg`, the PostgreSQL
/// schema `pg` at `SMISTA_TEST_PG_URL`; no pacing and no reserve on the budget (what the money
/// tests are about is the ledger, not admission).
pub fn ledger_config(data: &std::path::Path, pg: Option<&str>) -> Config {
    let mut cfg = Config::load(None).expect("demo");
    cfg.server.data_dir = data.to_owned();
    cfg.budgets[0].pacing = smista_core::book::PacingConfig::None;
    cfg.budgets[0].protected_reserve_bp = 0;
    if let Some(schema) = pg {
        cfg.ledger.kind = smista_server::config::LedgerKind::Postgres;
        cfg.ledger.url = std::env::var("SMISTA_TEST_PG_URL").expect("checked by the caller");
        cfg.ledger.schema = schema.to_owned();
    }
    cfg
}

/// The backends to run on: SQLite always (`None`), PostgreSQL (a fresh schema for `name`) when
/// `SMISTA_TEST_PG_URL` is set (required under CI).
pub fn backends(name: &str) -> Vec<Option<String>> {
    let mut v = vec![None];
    if smista_ledger::testing::pg_url(name).is_some() {
        v.push(Some(smista_ledger::testing::schema_name(name)));
    }
    v
}

/// Drops a test's PostgreSQL schema (nothing for SQLite).
pub async fn drop_backend(pg: Option<&str>) {
    let (Some(schema), Ok(url)) = (pg, std::env::var("SMISTA_TEST_PG_URL")) else { return };
    smista_ledger::testing::drop_schema(&url, schema).await;
}

/// `msg` with `authorization: Bearer <token>` (no header for an empty token).
pub fn with<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if !token.is_empty() {
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    }
    r
}

/// An API key `name` whose secret is `secret`, holding `role`, bound to desk `operator` if given.
pub fn api_key(
    name: &str,
    secret: &str,
    role: smista_server::config::auth::Role,
    operator: Option<&str>,
) -> smista_server::config::auth::ApiKey {
    let hash = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    smista_server::config::auth::ApiKey {
        name: name.into(),
        sha256: hash.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        roles: vec![role],
        operator: operator.map(Into::into),
    }
}
