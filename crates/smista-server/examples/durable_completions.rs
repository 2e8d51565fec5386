//! Durable completions through the whole server: `CONTACTS` supplier operators each accept one
//! budgeted voice contact, then 64 concurrent desks complete them over gRPC. Every
//! CompleteContact is acknowledged only once its cost record is committed (SQLite, WAL,
//! synchronous=FULL, group commit). The same run with `[ledger] kind = "none"` gives the cost of
//! durability, measured side by side.
//!
//! Run: `cargo run --release -p smista-server --example durable_completions`.

// The allocator the `smista` binary runs on (jemalloc), declared by smista-benches for every
// bench and example that links it: measured without it the request path was 30% slower.
extern crate smista_benches as _;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smista_proto::v1 as pb;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::offer_contact_response::Decision;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use smista_server::config::{Config, LedgerKind};
use smista_server::node::{serve, Listeners};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

const CONTACTS: usize = 20_000;
const DESKS: usize = 64;

const CONFIG: &str = r#"
[[budgets]]
id = "contract"
ceiling_cents = 100000000000
period = { kind = "monthly" }
tariffs = [{ channel = "voice", fee_per_contact_cents = 50, rate_per_second_centicents = 120, billing_increment_seconds = 10 }]

[[groups]]
name = "supplier"
budget = "contract"

[[queues]]
name = "pensions"
skills = [{ skill = "pensions", min_level = 1 }]
budget = "contract"
offer_timeout_ms = 600000
"#;

async fn run(kind: LedgerKind, data: std::path::PathBuf) -> Result<(f64, u64), Box<dyn std::error::Error>> {
    let mut cfg = Config::parse(CONFIG, "durable_completions")?;
    cfg.server.data_dir = data;
    cfg.ledger.kind = kind;
    cfg.engine.max_operators = CONTACTS as u32 + 10;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = Listeners::bind(any, any).await?;
    let (grpc, _) = listeners.addrs()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = serve(
            &cfg,
            listeners,
            async {
                let _ = stop_rx.await;
            },
            Duration::from_millis(10),
        )
        .await;
    });
    let ch = Channel::from_shared(format!("http://{grpc}"))?.connect().await?;
    let mut ops = OperatorServiceClient::new(ch.clone());
    let mut contacts = ContactServiceClient::new(ch.clone());
    let mut pairs = Vec::with_capacity(CONTACTS);
    for i in 0..CONTACTS {
        ops.login(pb::LoginRequest {
            operator_id: format!("op-{i}"),
            group: "supplier".into(),
            skills: vec![pb::Skill { name: "pensions".into(), level: 5 }],
            channels: vec![],
            session_id: format!("desk-{i}"),
        })
        .await?;
        let id = format!("call-{i}");
        let d = contacts
            .offer_contact(pb::OfferContactRequest {
                contact_id: id.clone(),
                queue: "pensions".into(),
                channel: pb::Channel::Voice as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        let Some(Decision::Assigned(a)) = d.decision else { return Err(format!("{id} not assigned").into()) };
        ops.accept_offer(pb::AcceptOfferRequest { operator_id: a.operator_id.clone(), contact_id: id.clone() }).await?;
        pairs.push((a.operator_id, id));
    }
    let gate = Arc::new(Semaphore::new(DESKS));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(CONTACTS);
    for (op, id) in pairs {
        let permit = gate.clone().acquire_owned().await?;
        let mut ops = OperatorServiceClient::new(ch.clone());
        tasks.push(tokio::spawn(async move {
            let r = ops
                .complete_contact(pb::CompleteContactRequest {
                    operator_id: op,
                    contact_id: id,
                    wrap_up_ms: 0,
                    ended_unix_ms: 0,
                })
                .await;
            drop(permit);
            r.is_ok()
        }));
    }
    let mut ok = 0u64;
    for t in tasks {
        ok += u64::from(t.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    server.await?;
    Ok((ok as f64 / secs, ok))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = smista_server::metrics::install();
    let dir = std::env::temp_dir().join(format!("smista-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (durable, n1) = run(LedgerKind::Sqlite, dir.join("sqlite")).await?;
    let (memory, n2) = run(LedgerKind::None, dir.join("none")).await?;
    println!("{n1} completions, {DESKS} concurrent desks, one server, same run:");
    println!("  durable (SQLite, synchronous=FULL, group commit): {durable:>8.0} completions/s");
    println!("  in memory ([ledger] kind = \"none\"):               {memory:>8.0} completions/s");
    println!("  ratio durable / in memory: {:.2}", durable / memory);
    if n1 != n2 {
        return Err(format!("only {n1} and {n2} of {CONTACTS} completions succeeded").into());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
