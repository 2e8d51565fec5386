//! Active/standby on one PostgreSQL: three `smista serve` nodes of one group under load from
//! `smista-load --scenario follow` given all three targets (the load generator's own code, run in
//! this process): a telephony platform and desks that follow the active node (on UNAVAILABLE or a
//! broken connection they try the node named in `smista-active`, else the next, with back-off),
//! offer again what had not ended, and count what they saw.
//!
//! - kill -9 of the active under load: a standby takes over; the time from the kill to the first
//!   offer accepted on the new active is printed; no acknowledged completion is lost, none is
//!   charged twice, no contact is accepted by two operators, every contact ends exactly once,
//!   waiting contacts offered again keep their order (no operator is offered a contact while an
//!   older one waits).
//! - the active cut off from PostgreSQL (its connections go through a proxy the test stops): it
//!   stops routing and exits before a standby takes over; nothing is charged twice.
//! - SIGTERM on the active under load: a planned handover, no contact lost, and the following
//!   clients never see an error.
//! - a rolling upgrade of two nodes (SIGTERM, restart in place, then the other): two handovers,
//!   nothing lost, no error seen.
//! - kill -9 of the active in the middle of a consultation: the desks find what each holds on the
//!   new active, the hand-over and its repeat work, each leg is charged once.
//!
//! Half the desks are internal staff no budget pays: what they have in service crosses a
//! takeover by its service record.
//!
//! Needs `SMISTA_TEST_PG_URL` (set by `.ci/run`; required when `CI=true`).

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use smista_benches::load::{run_many, LoadConfig};
use smista_proto::v1 as pb;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use support::{contract_toml, start_node, teardown, through, Proxy, Smista};
use tonic::transport::Channel;
use tonic::Code;

/// `smista-load`'s command line.
#[derive(Parser)]
struct Load {
    #[command(flatten)]
    load: LoadConfig,
}

/// `smista-load --scenario follow` on `targets`: 40 calls/s for `duration` seconds, six desks
/// (supplier and internal staff in turn) holding each call 60 ms.
fn load(targets: &[String], duration: &str, prefix: &str) -> Load {
    Load::parse_from([
        "smista-load",
        "--scenario",
        "follow",
        "--target",
        &targets.join(","),
        "--rate",
        "40",
        "--duration",
        duration,
        "--operators",
        "6",
        "--aht",
        "0.06",
        "--handle",
        "fixed",
        "--queue",
        "naspi",
        "--group",
        "supplier,internal",
        "--prefix",
        prefix,
        "--list-contacts",
    ])
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn start(dir: &Path, node: &str, schema: &str, url: &str) -> Smista {
    start_at(dir, node, schema, url, None)
}

/// [`start`], listening on `grpc` when given (a node restarted in place).
fn start_at(dir: &Path, node: &str, schema: &str, url: &str, grpc: Option<&str>) -> Smista {
    let toml = format!(
        r#"
[ledger]
kind = "postgres"
url = "set by SMISTA_LEDGER_URL"
schema = "{schema}"

[cluster]
node_id = "{node}"
failover = true
group = "main"
leader_ttl_ms = 1000
leader_renew_ms = 150

# Internal staff: no budget pays them, so what they have in service is carried across a
# takeover by its service record, not by a hold.
[[groups]]
name = "internal"
{}"#,
        contract_toml(100_000_000, "naspi", "max_wait_ms = 3600000\noffer_timeout_ms = 2000")
    );
    let mut args = vec!["--drain-ms", "200"];
    if let Some(a) = grpc {
        args.extend(["--grpc-addr", a]);
    }
    start_node(dir, node, &toml, url, &args)
}

/// Which node is active now (health of ContactService SERVING), waiting up to 20 s.
async fn active_node(nodes: &[Smista], skip: Option<usize>) -> (usize, Instant) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let Ok(ch) = Channel::from_shared(format!("http://{}", n.grpc)).expect("uri").connect().await else {
                continue;
            };
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            let r = h.check(tonic_health::pb::HealthCheckRequest { service: "smista.v1.ContactService".into() }).await;
            if r.is_ok_and(|r| r.into_inner().status == 1) {
                return (i, Instant::now());
            }
        }
        if Instant::now() >= deadline {
            for (i, n) in nodes.iter().enumerate() {
                for l in n.log.try_iter() {
                    println!("node-{i}: {l}");
                }
            }
            panic!("no active node");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the ledger holds: cost records per contact, completion end records per contact (contacts
/// no budget paid for), and the holds and service records left.
async fn ledger(url: &str, schema: &str) -> (HashMap<String, i64>, HashMap<String, i64>, i64) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let count = |table: &str, filter: &str| {
        format!("SELECT contact_id, COUNT(*) FROM {schema}.{table} {filter} GROUP BY contact_id")
    };
    let records: Vec<(String, i64)> =
        sqlx::query_as(&count("cost_records", "")).fetch_all(&pool).await.expect("records");
    let ends: Vec<(String, i64)> =
        sqlx::query_as(&count("contact_ends", "WHERE outcome = 'completed'")).fetch_all(&pool).await.expect("ends");
    let (holds,): (i64,) =
        sqlx::query_as(&format!("SELECT COUNT(*) FROM {schema}.holds")).fetch_one(&pool).await.expect("holds");
    pool.close().await;
    (records.into_iter().collect(), ends.into_iter().collect(), holds)
}

/// Checks every acknowledged completion of a follow run against the ledger (a supplier desk's is
/// charged once; internal staff's has no cost and is told by its end record) and that nothing is
/// charged twice; returns the holds and service records left.
async fn check_ledger(url: &str, schema: &str, f: &smista_benches::load::follow::FollowFigures) -> i64 {
    let (records, ends, holds) = ledger(url, schema).await;
    for c in &f.completed_ids {
        let told = match records.get(c) {
            Some(n) => *n == 1,
            None => ends.get(c) == Some(&1),
        };
        if !told {
            let pool = sqlx::PgPool::connect(url).await.expect("connect");
            let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(&format!(
                "SELECT operator_id, node_id, accepted_unix_ms, completed_unix_ms FROM {schema}.cost_records WHERE contact_id = $1"
            ))
            .bind(c)
            .fetch_all(&pool)
            .await
            .expect("rows");
            panic!(
                "acknowledged completion of {c} charged {:?} times ({rows:?}), {:?} end records",
                records.get(c),
                ends.get(c)
            );
        }
    }
    assert_eq!(f.completed_ids.len() as u64, f.completed);
    assert!(records.values().all(|n| *n == 1), "no contact charged twice");
    holds
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Trouble {
    Kill,
    Cut,
    Term,
}

async fn run(trouble: Trouble) {
    let Some(url) = smista_ledger::testing::pg_url("the failover test") else { return };
    let tag = format!("{trouble:?}").to_lowercase();
    let schema = smista_ledger::testing::schema_name(&format!("failover_{tag}"));
    let dir = std::env::temp_dir().join(format!("smista-failover-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (_, upstream) = through(&url, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let proxy = Proxy::start(upstream).await;
    let (cut_url, _) = through(&url, proxy.addr);
    // node-0 starts first and becomes the active; with `Cut` it reaches PostgreSQL through the proxy.
    let first = start(&dir, "node-0", &schema, if trouble == Trouble::Cut { &cut_url } else { &url });
    let mut nodes = vec![first];
    let (a0, _) = active_node(&nodes, None).await;
    assert_eq!(a0, 0);
    nodes.push(start(&dir, "node-1", &schema, &url));
    nodes.push(start(&dir, "node-2", &schema, &url));
    let addrs: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    // A standby routes nothing: its health says so, and a routing call names the active.
    let standby = Channel::from_shared(format!("http://{}", addrs[1])).expect("uri").connect().await.expect("connect");
    let health = tonic_health::pb::health_client::HealthClient::new(standby.clone())
        .check(tonic_health::pb::HealthCheckRequest { service: "smista.v1.ContactService".into() })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status, 2, "a standby is NOT_SERVING for ContactService");
    let refused = loop {
        let e = ContactServiceClient::new(standby.clone())
            .offer_contact(pb::OfferContactRequest {
                contact_id: "to-standby".into(),
                queue: "naspi".into(),
                channel: 1,
                ..Default::default()
            })
            .await
            .expect_err("a standby does not route");
        // It learns the active's address at its first attempt to take over.
        if e.metadata().get("smista-active").is_some() {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(refused.metadata().get("smista-active").and_then(|v| v.to_str().ok()), Some(addrs[0].as_str()));
    // smista-load follows the group.
    let targets: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let cli = load(&targets, "6", &tag);
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(async move { run_many(&cli.load, stop).await });
    // A wallboard on the active's event stream.
    let mut board = ContactServiceClient::new(Channel::from_shared(targets[0].clone()).expect("uri").connect_lazy())
        .stream_events(pb::StreamEventsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let seen =
        tokio::time::timeout(Duration::from_secs(5), board.message()).await.expect("event").expect("ok").expect("some");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (hit, hit_ms) = (Instant::now(), unix_ms());
    match trouble {
        Trouble::Kill => {
            let s = Command::new("kill").args(["-9", &nodes[0].child.id().to_string()]).status().expect("kill");
            assert!(s.success());
        }
        Trouble::Cut => proxy.cut(),
        Trouble::Term => {
            let s = Command::new("kill").args(["-TERM", &nodes[0].child.id().to_string()]).status().expect("term");
            assert!(s.success());
        }
    }
    let (next, serving) = active_node(&nodes, Some(0)).await;
    // The wallboard resumes on the new active: another epoch, so a precise resync status, never
    // a silent gap.
    let resumed = ContactServiceClient::new(Channel::from_shared(targets[next].clone()).expect("uri").connect_lazy())
        .stream_events(pb::StreamEventsRequest {
            after_epoch: seen.epoch,
            after_sequence: seen.sequence,
            queues: vec![],
            max_delay_ms: 0,
        })
        .await
        .expect_err("the old epoch's events are gone");
    assert_eq!(resumed.code(), Code::OutOfRange, "{resumed:?}");
    let now_epoch: u64 =
        resumed.metadata().get("smista-epoch").and_then(|v| v.to_str().ok()?.parse().ok()).expect("smista-epoch");
    assert!(now_epoch > seen.epoch, "the new active's epoch {now_epoch} follows {}", seen.epoch);
    drop(board);
    if trouble != Trouble::Kill {
        // The old active stops on its own: losing PostgreSQL, before its lease can expire
        // elsewhere; on SIGTERM, after handing over.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = nodes[0].child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "the old active went on");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status.success(), trouble == Trouble::Term, "exit status {status}");
    }
    let report = load.await.expect("load task").expect("load run").remove(0).1;
    proxy.restore();
    if std::env::var_os("SMISTA_TEST_LOGS").is_some() {
        for (i, n) in nodes.iter().enumerate() {
            for l in n.log.try_iter() {
                println!("node-{i}: {l}");
            }
        }
    }
    let f = report.follow.clone().expect("follow figures");
    let switch = f.switches.iter().find(|s| s.to == next).cloned();
    let took_over = switch.as_ref().and_then(|s| s.first_accept_unix_ms);
    println!(
        "{tag}: node-{next} active {} ms after the {tag}, first offer accepted there after {} ms; {} contacts, {} completed, {} diverted, {} left open, {} offered again, {} order inversions, {} resyncs, {} errors surfaced",
        serving.duration_since(hit).as_millis(),
        took_over.map_or(-1, |t| t as i64 - hit_ms as i64),
        f.contacts,
        f.completed,
        f.diverted,
        f.open,
        switch.as_ref().map_or(0, |s| s.offered_again),
        f.order_inversions,
        f.resyncs,
        f.surfaced_errors
    );
    let holds = check_ledger(&url, &schema, &f).await;
    assert_eq!(f.accepted_twice, 0, "no contact accepted by two operators");
    assert_eq!(holds, 0, "every contact ended: no hold or service record is left");
    assert_eq!(f.diverted, 0, "contacts offered again while desks log in again queue, they are not diverted");
    assert_eq!(f.open, 0, "every contact ends exactly once");
    assert_eq!(f.completed, f.contacts);
    assert_eq!(f.order_inversions, 0, "waiting contacts keep their order across the failover");
    assert!(f.resyncs >= 1, "smista-load's wallboard resynchronised on the new life");
    assert!(took_over.is_some(), "the new active served");
    // Following for up to 15 s hides a takeover of about a second from every client.
    assert_eq!(f.surfaced_errors, 0, "no error reaches a client that follows the active");
    if trouble == Trouble::Term {
        // `smista client` given every node (the first one gone, one a standby) reaches the active.
        let out = Command::new(env!("CARGO_BIN_EXE_smista"))
            .args(["client", "--target", &targets.join(","), "offer", "by-cli", "naspi"])
            .output()
            .expect("smista client");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && (text.starts_with("queued in ") || text.starts_with("assigned to ")),
            "{out:?}"
        );
    }
    teardown(nodes, &url, &schema, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_killed_under_load_is_replaced_by_a_standby() {
    run(Trouble::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_cut_off_from_postgresql_stops_routing_and_a_standby_takes_over() {
    run(Trouble::Cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_active_hands_over_without_losing_a_contact() {
    run(Trouble::Term).await;
}

/// A rolling upgrade of two nodes under load: SIGTERM on the active, restart it in place (a
/// standby now), then the same on the other. Two handovers, nothing lost, no error seen by the
/// following clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_of_two_nodes_drops_nothing() {
    let Some(url) = smista_ledger::testing::pg_url("the failover test") else { return };
    let schema = smista_ledger::testing::schema_name("failover_rolling");
    let dir = std::env::temp_dir().join(format!("smista-failover-rolling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut nodes = vec![start(&dir, "node-0", &schema, &url)];
    assert_eq!(active_node(&nodes, None).await.0, 0);
    nodes.push(start(&dir, "node-1", &schema, &url));
    let addrs: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let targets: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let cli = load(&targets, "9", "rolling");
    let load = tokio::spawn(async move { run_many(&cli.load, Arc::new(AtomicBool::new(false))).await });
    for (old, new) in [(0usize, 1usize), (1, 0)] {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let s = Command::new("kill").args(["-TERM", &nodes[old].child.id().to_string()]).status().expect("term");
        assert!(s.success());
        let (now_active, _) = active_node(&nodes, Some(old)).await;
        assert_eq!(now_active, new);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = nodes[old].child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "the old active went on");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(status.success(), "a handover exits 0: {status}");
        // The upgraded binary starts in place, as a standby.
        nodes[old] = start_at(&dir, &format!("node-{old}"), &schema, &url, Some(&addrs[old]));
    }
    let report = load.await.expect("load task").expect("load run").remove(0).1;
    let f = report.follow.clone().expect("follow figures");
    println!(
        "rolling: {} contacts, {} completed, {} left open, switches {:?}, {} order inversions, {} errors surfaced",
        f.contacts,
        f.completed,
        f.open,
        f.switches.iter().map(|s| (s.from, s.to, s.offered_again)).collect::<Vec<_>>(),
        f.order_inversions,
        f.surfaced_errors
    );
    let holds = check_ledger(&url, &schema, &f).await;
    assert_eq!(holds, 0, "no hold or service record left");
    assert_eq!(f.switches.len(), 2, "two handovers: {:?}", f.switches);
    assert_eq!(f.accepted_twice, 0);
    assert_eq!(f.open, 0);
    assert_eq!(f.completed, f.contacts);
    assert_eq!(f.order_inversions, 0);
    assert_eq!(f.surfaced_errors, 0, "a rolling upgrade shows no error to a following client");
    teardown(nodes, &url, &schema, &dir).await;
}

/// A paused active (SIGSTOP, a frozen VM) continued after another node took over must answer
/// nothing from memory, not even before its own renewal task has run: the calls sent to it
/// while it was stopped wait in its sockets and are read first thing after SIGCONT. Each gets
/// UNAVAILABLE (never an answer of the old leadership), and the node then exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_active_continued_after_a_takeover_answers_nothing() {
    let Some(url) = smista_ledger::testing::pg_url("the failover test") else { return };
    let schema = smista_ledger::testing::schema_name("failover_paused");
    let dir = std::env::temp_dir().join(format!("smista-failover-paused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut nodes = vec![start(&dir, "node-0", &schema, &url)];
    let (a0, _) = active_node(&nodes, None).await;
    assert_eq!(a0, 0);
    nodes.push(start(&dir, "node-1", &schema, &url));
    let old = Channel::from_shared(format!("http://{}", nodes[0].grpc)).expect("uri").connect().await.expect("connect");
    // Something in memory to answer from: a desk logged in, a contact offered.
    let mut desk = smista_proto::v1::operator_service_client::OperatorServiceClient::new(old.clone());
    desk.login(pb::LoginRequest {
        operator_id: "op-1".into(),
        group: "internal".into(),
        skills: vec![pb::Skill { name: "naspi".into(), level: 5 }],
        channels: vec![],
        session_id: "desk-op-1".into(),
    })
    .await
    .expect("login on the active");
    let offer = |id: &str| pb::OfferContactRequest {
        contact_id: id.into(),
        queue: "naspi".into(),
        channel: pb::Channel::Voice as i32,
        ..Default::default()
    };
    ContactServiceClient::new(old.clone()).offer_contact(offer("p-1")).await.expect("offer on the active");

    let pid = nodes[0].child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    // kill(2) returns once the signal is sent; on a busy machine the node may run on for a
    // moment, and a call answered then is answered under a valid leadership. Wait until the
    // kernel shows it stopped (state T).
    let stat = format!("/proc/{pid}/stat");
    let stopped = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&stat)
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('T')))
    {
        assert!(Instant::now() < stopped, "node-0 never stopped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Calls sent to the stopped node: they wait in its socket.
    let mut pending = Vec::new();
    for i in 0..8 {
        let ch = old.clone();
        let id = format!("p-{i}");
        pending.push(tokio::spawn(async move {
            let mut c = ContactServiceClient::new(ch.clone());
            let mut a = smista_proto::v1::admin_service_client::AdminServiceClient::new(ch);
            let o = c.offer_contact(offer(&id)).await.map(|_| ()).map_err(|s| s.code());
            let s = a.get_snapshot(pb::GetSnapshotRequest {}).await.map(|_| ()).map_err(|s| s.code());
            (o, s)
        }));
    }
    // node-1 takes over once the lease has expired.
    let (a1, _) = active_node(&nodes, Some(0)).await;
    assert_eq!(a1, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());
    for p in pending {
        let (o, s) = tokio::time::timeout(Duration::from_secs(10), p).await.expect("answered").expect("task");
        // A broken connection (the node exiting) is an answer of no leadership too.
        assert!(
            matches!(o, Err(Code::Unavailable | Code::Unknown | Code::Cancelled)),
            "offer answered by a lapsed active: {o:?}"
        );
        assert!(
            matches!(s, Err(Code::Unavailable | Code::Unknown | Code::Cancelled)),
            "snapshot answered by a lapsed active: {s:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = nodes[0].child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the lapsed active went on running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success(), "a node that lost its leadership exits with an error: {status}");
    teardown(nodes, &url, &schema, &dir).await;
}

/// A takeover in the middle of a consultation (both supplier operators talking): kill -9 of the
/// active, the desks log in on the new active and find what each holds, the first operator's
/// repeated ConsultContact answers where it stands, the hand-over works and its repeat answers
/// the same, the second completes the caller under its own id, and each leg is one cost record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_in_the_middle_of_a_consultation_loses_nothing_and_charges_each_leg_once() {
    use smista_proto::v1::operator_service_client::OperatorServiceClient;
    let Some(url) = smista_ledger::testing::pg_url("the failover test") else { return };
    let schema = smista_ledger::testing::schema_name("failover_consult");
    let dir = std::env::temp_dir().join(format!("smista-failover-consult-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut nodes = vec![start(&dir, "node-0", &schema, &url)];
    let (a0, _) = active_node(&nodes, None).await;
    assert_eq!(a0, 0);
    nodes.push(start(&dir, "node-1", &schema, &url));
    let login = |op: &str| pb::LoginRequest {
        operator_id: op.into(),
        group: "supplier".into(),
        skills: vec![pb::Skill { name: "naspi".into(), level: 5 }],
        channels: vec![],
        session_id: format!("desk-{op}"),
    };
    let ask = pb::ConsultContactRequest {
        operator_id: "op-1".into(),
        contact_id: "f-1".into(),
        consultation_id: "fk-1".into(),
        target: Some(pb::consult_contact_request::Target::Queue("naspi".into())),
    };
    let hand_over = pb::EndConsultationRequest {
        operator_id: "op-1".into(),
        contact_id: "f-1".into(),
        consultation_id: "fk-1".into(),
        action: pb::ConsultationAction::Transfer as i32,
        ended_unix_ms: 0,
        wrap_up_ms: 0,
    };
    let ch = Channel::from_shared(format!("http://{}", nodes[0].grpc)).expect("uri").connect().await.expect("connect");
    let mut desk = OperatorServiceClient::new(ch.clone());
    desk.login(login("op-1")).await.expect("login");
    let d = ContactServiceClient::new(ch.clone())
        .offer_contact(pb::OfferContactRequest {
            contact_id: "f-1".into(),
            queue: "naspi".into(),
            channel: pb::Channel::Voice as i32,
            ..Default::default()
        })
        .await
        .expect("offer")
        .into_inner();
    assert!(
        matches!(d.decision, Some(pb::offer_contact_response::Decision::Assigned(ref a)) if a.operator_id == "op-1")
    );
    desk.accept_offer(pb::AcceptOfferRequest { operator_id: "op-1".into(), contact_id: "f-1".into() })
        .await
        .expect("accept");
    desk.login(login("op-2")).await.expect("login");
    let r = desk.consult_contact(ask.clone()).await.expect("consult").into_inner();
    assert!(
        matches!(r.state, Some(pb::consult_contact_response::State::Assigned(ref a)) if a.operator_id == "op-2"),
        "{r:?}"
    );
    desk.accept_offer(pb::AcceptOfferRequest { operator_id: "op-2".into(), contact_id: "fk-1".into() })
        .await
        .expect("op-2 accepts the consultation");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = nodes[0].child.id().to_string();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().expect("kill").success());
    let (a1, _) = active_node(&nodes, Some(0)).await;
    assert_eq!(a1, 1);
    let ch = Channel::from_shared(format!("http://{}", nodes[1].grpc)).expect("uri").connect().await.expect("connect");
    let mut desk = OperatorServiceClient::new(ch.clone());
    // Each desk's in_service says what it holds (retrying while the new active settles in).
    let deadline = Instant::now() + Duration::from_secs(10);
    let l1 = loop {
        match desk.login(login("op-1")).await {
            Ok(l) => break l.into_inner(),
            Err(e) if Instant::now() < deadline && e.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("login on the new active: {e:?}"),
        }
    };
    assert_eq!(l1.in_service, vec!["f-1".to_owned()]);
    let l2 = desk.login(login("op-2")).await.expect("login").into_inner();
    assert_eq!(l2.in_service, vec!["fk-1".to_owned()]);
    let r = desk.consult_contact(ask).await.expect("repeat").into_inner();
    assert!(
        matches!(r.state, Some(pb::consult_contact_response::State::Assigned(ref a)) if a.operator_id == "op-2"),
        "{r:?}"
    );
    let h = desk.end_consultation(hand_over.clone()).await.expect("hand over").into_inner();
    assert_eq!(h.second_operator_id, "op-2");
    let again = desk.end_consultation(hand_over).await.expect("repeat").into_inner();
    assert_eq!(again, h, "a repeated hand-over answers the same");
    let l2 = desk.login(login("op-2")).await.expect("login").into_inner();
    assert_eq!(l2.in_service, vec!["f-1".to_owned()]);
    desk.complete_contact(pb::CompleteContactRequest {
        operator_id: "op-2".into(),
        contact_id: "f-1".into(),
        wrap_up_ms: 0,
        ended_unix_ms: 0,
    })
    .await
    .expect("op-2 completes the caller");

    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let legs: Vec<(String, String, String)> = sqlx::query_as(&format!(
        "SELECT contact_id, operator_id, outcome FROM {schema}.cost_records ORDER BY accepted_unix_ms"
    ))
    .fetch_all(&pool)
    .await
    .expect("records");
    let (holds,): (i64,) =
        sqlx::query_as(&format!("SELECT COUNT(*) FROM {schema}.holds")).fetch_one(&pool).await.expect("holds");
    pool.close().await;
    let want = [("f-1", "op-1", "transferred"), ("f-1", "op-2", "completed")]
        .map(|(c, o, x)| (c.to_owned(), o.to_owned(), x.to_owned()));
    assert_eq!(legs, want.to_vec(), "one cost record per leg, none for the consultation handed over");
    assert_eq!(holds, 0, "nothing held any more");
    teardown(nodes, &url, &schema, &dir).await;
}

/// docs/nodes.md's two-node block, run by bash as written (only the database's name is the
/// run's own, and a trap stops what it started): node-a serves, node-b is up as a standby, and
/// after `kill %1` node-b serves.
#[test]
fn the_guides_two_node_block_runs_as_written() {
    let Some(url) = smista_ledger::testing::pg_url("the guide's two-node block") else { return };
    let base = "postgres://postgres@127.0.0.1:5432/";
    if !url.starts_with(base) {
        eprintln!("SMISTA_TEST_PG_URL is not at {base}, which the guide's block names: skipped");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide = std::fs::read_to_string(root.join("docs/nodes.md")).expect("docs/nodes.md");
    let block = guide
        .split("Two nodes on one machine")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("\n```").next())
        .expect("the two-node block");
    let db = format!("smista_ha_{}", std::process::id());
    let script = format!(
        "trap 'kill $(jobs -p) 2>/dev/null; wait; dropdb -h 127.0.0.1 -U postgres --if-exists {db}' EXIT\n{}\nwait\n",
        block.replace("smista_ha", &db)
    );
    let bin = Path::new(env!("CARGO_BIN_EXE_smista")).parent().expect("bin dir").to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(&root)
        .env("PATH", path)
        .env_remove("SMISTA_LEDGER_URL")
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["SERVING", "SERVING", "NOT_SERVING", "SERVING"],
        "the block's health answers; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
