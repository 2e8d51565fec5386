//! Three `smista serve` processes on one PostgreSQL ledger share one budget, driven at once with
//! demand far above the ceiling: the ledger's total for the period stays within the ceiling,
//! every acknowledged completion is recorded once, and the headroom left unused is printed. Then
//! the same with one node killed (-9) in the middle: its lease comes back to the others after
//! expiry, minus what it recorded, and still nothing passes the ceiling. And the same with one
//! node cut off from PostgreSQL (its connections go through a TCP proxy the test stops): it
//! stops admitting when its lease runs out, the others fence it and take its lease back, and
//! when PostgreSQL is reachable again its late writes are refused and it exits. And both in one
//! run: one node killed, another cut off, the last one standing takes both leases back. And a node
//! whose PostgreSQL hangs (connections open, nothing answered) keeps answering snapshots, which
//! read its lease, and stops on SIGTERM (issue 25: it froze for good).
//!
//! Needs `SMISTA_TEST_PG_URL` (set by `.ci/run`; required when `CI=true`).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::offer_contact_response::Decision;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use support::{contract_toml, start_node, teardown, through, Proxy, Smista};
use tonic::transport::Channel;

/// Fee 100 + 3600 s x 0.10 cents: what any contact shorter than an hour costs, and what it
/// reserves, so the ledger's total is exactly 460 x contacts.
const COST: i64 = 460;
const CEILING: i64 = COST * 240;
/// How long a desk handles a contact: spend is spread over a few seconds, so a node dies with
/// money leased, contacts in service and completions in flight.
const HANDLE: Duration = Duration::from_millis(80);
const DESKS: usize = 6;

fn pg_url() -> Option<String> {
    smista_ledger::testing::pg_url("the multi-node test")
}

fn start(dir: &Path, node: &str, schema: &str, url: &str) -> Smista {
    let toml = format!(
        r#"
[ledger]
kind = "postgres"
url = "set by SMISTA_LEDGER_URL"
schema = "{schema}"

[cluster]
node_id = "{node}"
lease_ttl_ms = 1200
lease_renew_ms = 100
lease_horizon_ms = 1000
lease_min_cents = {COST}
reclaim_grace_ms = 300
{}"#,
        contract_toml(CEILING, "naspi", "max_wait_ms = 2000")
    );
    start_node(dir, node, &toml, url, &[])
}

#[derive(Default)]
struct Tally {
    completed: AtomicU64,
    diverted: AtomicU64,
}

/// A node's floor: desks that accept and complete every offer, and a platform offering as fast as
/// it can until `until`. Every acknowledged completion is counted in `tally`.
async fn drive(ch: Channel, node: usize, until: Instant, tally: Arc<Tally>) {
    let mut tasks = Vec::new();
    for d in 0..DESKS {
        let ch = ch.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let op = format!("n{node}-op{d}");
            let mut o = OperatorServiceClient::new(ch);
            if o.login(pb::LoginRequest {
                operator_id: op.clone(),
                group: "supplier".into(),
                skills: vec![pb::Skill { name: "naspi".into(), level: 5 }],
                channels: vec![],
                session_id: format!("{op}-desk"),
            })
            .await
            .is_err()
            {
                return;
            }
            let Ok(stream) = o.watch_offers(pb::WatchOffersRequest { operator_id: op.clone() }).await else { return };
            let mut stream = stream.into_inner();
            while let Ok(Ok(Some(offer))) = tokio::time::timeout(Duration::from_secs(3), stream.message()).await {
                let c = offer.contact_id;
                if o.accept_offer(pb::AcceptOfferRequest { operator_id: op.clone(), contact_id: c.clone() })
                    .await
                    .is_err()
                {
                    continue;
                }
                tokio::time::sleep(HANDLE).await;
                let done = o
                    .complete_contact(pb::CompleteContactRequest {
                        operator_id: op.clone(),
                        contact_id: c,
                        wrap_up_ms: 1,
                        ended_unix_ms: 0,
                    })
                    .await;
                if done.is_ok() {
                    tally.completed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut c = ContactServiceClient::new(ch);
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let r = c
            .offer_contact(pb::OfferContactRequest {
                contact_id: format!("n{node}-c{n}"),
                queue: "naspi".into(),
                channel: pb::Channel::Voice as i32,
                ..Default::default()
            })
            .await;
        match r.map(|r| r.into_inner().decision) {
            Ok(Some(Decision::Diverted(_))) => {
                tally.diverted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(_) => break, // the node was killed
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn ledger_total(url: &str, schema: &str) -> (i64, i64) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let row: (i64, i64) = sqlx::query_as(&format!(
        "SELECT COUNT(*), CAST(COALESCE(SUM(cost_cents), 0) AS BIGINT) FROM {schema}.cost_records WHERE budget_id = 'contract'"
    ))
    .fetch_one(&pool)
    .await
    .expect("total");
    pool.close().await;
    row
}

/// The killed node's lease, and what it recorded (settled + held).
async fn dead_node(url: &str, schema: &str, node: &str) -> (i64, i64) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let row: (i64, i64) = sqlx::query_as(&format!(
        "SELECT (SELECT granted_cents FROM {schema}.budget_leases WHERE node_id = $1),
                CAST((SELECT COALESCE(SUM(cost_cents), 0) FROM {schema}.cost_records WHERE node_id = $1)
                   + (SELECT COALESCE(SUM(amount_cents), 0) FROM {schema}.holds WHERE node_id = $1) AS BIGINT)"
    ))
    .bind(node)
    .fetch_one(&pool)
    .await
    .expect("lease");
    pool.close().await;
    row
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trouble {
    None,
    /// node-1 is killed (-9).
    Kill,
    /// node-2 loses PostgreSQL, then gets it back.
    Cut,
    /// Both in one run: node-1 killed, then node-2 cut off.
    Both,
}

async fn node_epoch(url: &str, schema: &str, node: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let e: (i64,) = sqlx::query_as(&format!("SELECT epoch FROM {schema}.node_epochs WHERE node_id = $1"))
        .bind(node)
        .fetch_one(&pool)
        .await
        .expect("epoch");
    pool.close().await;
    e.0
}

/// One run at a time: each starts three servers whose leases live 1.2 s; four runs at once on
/// two cores made the timing, not the code, decide (a node starved past its lease).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(trouble: Trouble) {
    let Some(url) = pg_url() else { return };
    let _one_at_a_time = SERIAL.lock().await;
    let kill_one = matches!(trouble, Trouble::Kill | Trouble::Both);
    let cut_one = matches!(trouble, Trouble::Cut | Trouble::Both);
    let tag = match trouble {
        Trouble::None => "all",
        Trouble::Kill => "kill",
        Trouble::Cut => "cut",
        Trouble::Both => "both",
    };
    let schema = smista_ledger::testing::schema_name(&format!("nodes_{tag}"));
    let dir = std::env::temp_dir().join(format!("smista-nodes-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (_, upstream) = through(&url, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let proxy = Proxy::start(upstream).await;
    let (cut_url, _) = through(&url, proxy.addr);
    let mut nodes: Vec<Smista> = (0..3)
        .map(|i| {
            let u = if cut_one && i == 2 { &cut_url } else { &url };
            start(&dir, &format!("node-{i}"), &schema, u)
        })
        .collect();
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(if cut_one { 8 } else { 6 });
    let mut drivers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let ch = n.channel().await;
        drivers.push(tokio::spawn(drive(ch, i, until, tally.clone())));
    }
    if kill_one {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let status = Command::new("kill").args(["-9", &nodes[1].child.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }
    if cut_one {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let epoch_before = node_epoch(&url, &schema, "node-2").await;
        proxy.cut();
        // Longer than the lease (1.2 s) and the reclaim grace (0.3 s): the others fence node-2.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        proxy.restore();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = nodes[2].child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "node-2 went on after it was fenced");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(!status.success(), "a fenced node exits with an error");
        let log: Vec<String> = nodes[2].log.try_iter().collect();
        assert!(log.iter().any(|l| l.contains("fenced")), "node-2 says why it stopped: {log:?}");
        let after = node_epoch(&url, &schema, "node-2").await;
        println!("cut: node-2 fenced (epoch {epoch_before} -> {after}) and exited: {status}");
        assert!(after > epoch_before, "the others moved node-2's epoch on");
    }
    for d in drivers {
        let _ = d.await;
    }
    let (records, total) = ledger_total(&url, &schema).await;
    let completed = tally.completed.load(Ordering::Relaxed) as i64;
    println!(
        "{tag}: {records} contacts charged, {total} of {CEILING} cents ({:.1}% headroom unused), {} acknowledged completions, {} diverted",
        100.0 * (CEILING - total) as f64 / CEILING as f64,
        completed,
        tally.diverted.load(Ordering::Relaxed)
    );
    if total > CEILING {
        let pool = sqlx::PgPool::connect(&url).await.expect("connect");
        let per: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT node_id, COUNT(*), CAST(SUM(cost_cents) AS BIGINT) FROM {schema}.cost_records GROUP BY node_id ORDER BY node_id"
        ))
        .fetch_all(&pool)
        .await
        .expect("per node");
        let leases: Vec<(String, i64, i64, i64)> = sqlx::query_as(&format!(
            "SELECT node_id, granted_cents, expires_unix_ms, epoch FROM {schema}.budget_leases ORDER BY node_id"
        ))
        .fetch_all(&pool)
        .await
        .expect("leases");
        let epochs: Vec<(String, i64)> =
            sqlx::query_as(&format!("SELECT node_id, epoch FROM {schema}.node_epochs ORDER BY node_id"))
                .fetch_all(&pool)
                .await
                .expect("epochs");
        let pooled: Vec<(i64, i64)> =
            sqlx::query_as(&format!("SELECT ceiling_cents, granted_cents FROM {schema}.budget_pool"))
                .fetch_all(&pool)
                .await
                .expect("pool");
        for (i, n) in nodes.iter().enumerate() {
            for l in n.log.try_iter().filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("fenced")) {
                println!("node-{i}: {l}");
            }
        }
        panic!("the ledger's total {total} passed the ceiling {CEILING}: records {per:?}; leases {leases:?}; epochs {epochs:?}; pool {pooled:?}");
    }
    assert_eq!(total, records * COST);
    assert!(records >= completed, "an acknowledged completion is missing from the ledger: {records} < {completed}");
    assert!(tally.diverted.load(Ordering::Relaxed) > 0, "demand was above the ceiling: some contacts must be diverted");
    if trouble != Trouble::None {
        let victims = [(kill_one, "node-1"), (cut_one, "node-2")];
        for (_, victim) in victims.iter().filter(|v| v.0) {
            let (lease, used) = dead_node(&url, &schema, victim).await;
            println!("{tag} {victim}: lease cut back to {lease} cents, it recorded {used} (settled and in service)");
            assert_eq!(
                lease, used,
                "the lost node's lease came back to the pool, minus what it recorded (and no late write passed it)"
            );
        }
    } else {
        // Demand went on after the money ran out: nearly all of it was used.
        assert!(CEILING - total <= 3 * COST, "unused headroom {} with demand above the ceiling", CEILING - total);
    }
    teardown(nodes, &url, &schema, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_budget_without_passing_the_ceiling() {
    run(Trouble::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_run_gives_its_lease_back_after_expiry() {
    run(Trouble::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_postgresql_is_fenced_and_its_late_writes_refused() {
    run(Trouble::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_killed_and_another_cut_off_in_one_run_never_pass_the_ceiling() {
    run(Trouble::Both).await;
}

/// Issue 25, fault 3: the lease renewal held the lease map's entry (a shard write lock) across
/// its PostgreSQL call; with PostgreSQL hanging, a snapshot (which reads the lease) blocked a
/// worker thread on that lock, two blocked both, and nothing could poll the renewal that would
/// release it: the node answered nothing and ignored SIGTERM, for good. Here one node's
/// PostgreSQL connections hang for four seconds (open, silent) while the test asks that node for
/// snapshots without pause under load: every one must be answered within 2 s, during the hang
/// and after it, and SIGTERM must end the node. Leases live 6 s and are reclaimed only after 30
/// s more, so the hang (longer than half a lease: a renewal is due during it) fences nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_postgresql_hangs_keeps_answering_and_stops_on_sigterm() {
    let Some(url) = pg_url() else { return };
    let _one_at_a_time = SERIAL.lock().await;
    let schema = smista_ledger::testing::schema_name("nodes_hang");
    let dir = std::env::temp_dir().join(format!("smista-nodes-hang-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (_, upstream) = through(&url, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let proxy = Proxy::start(upstream).await;
    let (hung_url, _) = through(&url, proxy.addr);
    let config = |node: &str| {
        format!(
            r#"
[ledger]
kind = "postgres"
url = "set by SMISTA_LEDGER_URL"
schema = "{schema}"

[cluster]
node_id = "{node}"
lease_ttl_ms = 6000
lease_renew_ms = 100
lease_horizon_ms = 1000
lease_min_cents = {COST}
reclaim_grace_ms = 30000
{}"#,
            contract_toml(CEILING, "naspi", "max_wait_ms = 2000")
        )
    };
    let mut nodes = vec![
        start_node(&dir, "node-0", &config("node-0"), &url, &[]),
        start_node(&dir, "node-1", &config("node-1"), &hung_url, &[]),
    ];
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(8);
    let mut drivers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let ch = n.channel().await;
        drivers.push(tokio::spawn(drive(ch, i, until, tally.clone())));
    }
    // Snapshots of node-1 without pause from four connections until `polls_end`.
    let polls_end = Instant::now() + Duration::from_secs(7);
    let mut pollers = Vec::new();
    for _ in 0..4 {
        let mut admin = AdminServiceClient::new(nodes[1].channel().await);
        pollers.push(tokio::spawn(async move {
            let (mut answered, mut slowest, mut unanswered) = (0u32, Duration::ZERO, Vec::new());
            while Instant::now() < polls_end {
                let asked = Instant::now();
                match tokio::time::timeout(Duration::from_secs(2), admin.get_snapshot(pb::GetSnapshotRequest {})).await
                {
                    Ok(Ok(snap)) => {
                        assert!(!snap.into_inner().budgets.is_empty(), "the snapshot shows the budget");
                        answered += 1;
                        slowest = slowest.max(asked.elapsed());
                    }
                    Ok(Err(status)) => unanswered.push(format!("{status:?}")),
                    Err(_) => {
                        unanswered.push("no answer within 2 s".to_owned());
                        break; // a frozen node answers nothing more
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (answered, slowest, unanswered)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    proxy.hang();
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    proxy.resume();
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    let mut unanswered = Vec::new();
    for p in pollers {
        let (a, s, u) = p.await.expect("poller");
        answered += a;
        slowest = slowest.max(s);
        unanswered.extend(u);
    }
    println!("hang: {answered} snapshots answered, the slowest in {slowest:?}");
    assert!(unanswered.is_empty(), "node-1 left snapshots unanswered: {unanswered:?}");
    assert!(answered > 100, "node-1 answered only {answered} snapshots");
    assert!(nodes[1].child.try_wait().expect("wait").is_none(), "node-1 is still serving (not fenced)");
    let status = Command::new("kill").args(["-TERM", &nodes[1].child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = nodes[1].child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "node-1 did not stop within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("hang: node-1 stopped on SIGTERM: {status}");
    for d in drivers {
        let _ = d.await;
    }
    let (_, total) = ledger_total(&url, &schema).await;
    assert!(total <= CEILING, "the ledger's total {total} passed the ceiling {CEILING}");
    nodes.truncate(1);
    teardown(nodes, &url, &schema, &dir).await;
}
