//! Active/standby on one PostgreSQL: three `smista serve` nodes of one group, driven by a
//! telephony platform and desks that follow the active node (on UNAVAILABLE or a broken
//! connection they try the next node, with back-off).
//!
//! - kill -9 of the active under load: a standby takes over; the time from the kill to the first
//!   offer accepted on the new active is printed; no acknowledged completion is lost, none is
//!   charged twice, no contact is accepted by two operators, every contact ends exactly once.
//! - the active cut off from PostgreSQL (its connections go through a proxy the test stops): it
//!   stops routing and exits before a standby takes over; nothing is charged twice.
//! - SIGTERM on the active under load: a planned handover, no contact lost, and the following
//!   clients never see an error.
//!
//! Needs `SMISTA_TEST_PG_URL` (set by `.ci/run`; required when `CI=true`).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use smista_proto::v1 as pb;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::offer_contact_response::Decision;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use support::{contract_toml, start_node, teardown, through, Proxy, Smista};
use tonic::transport::Channel;
use tonic::Code;

const DESKS: usize = 6;
const HANDLE: Duration = Duration::from_millis(60);

fn start(dir: &Path, node: &str, schema: &str, url: &str) -> Smista {
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
{}"#,
        contract_toml(100_000_000, "naspi", "max_wait_ms = 3600000\noffer_timeout_ms = 2000")
    );
    start_node(dir, node, &toml, url, &["--drain-ms", "200"])
}

/// Clients of every node, tried in turn: the one that answers is the active.
#[derive(Clone)]
struct Group {
    channels: Vec<Channel>,
    /// The node believed active.
    active: Arc<AtomicUsize>,
    /// Errors a caller would have seen (retries exhausted, or not retryable).
    surfaced: Arc<AtomicU64>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Group {
    fn new(addrs: &[String]) -> Group {
        let channels = addrs
            .iter()
            .map(|a| {
                Channel::from_shared(format!("http://{a}"))
                    .expect("uri")
                    .connect_timeout(Duration::from_millis(300))
                    .connect_lazy()
            })
            .collect();
        Group { channels, active: Arc::new(AtomicUsize::new(0)), surfaced: Arc::new(AtomicU64::new(0)) }
    }

    /// Runs `f` on the active node, following it: UNAVAILABLE (a standby, a draining or dead
    /// node) moves on to the next node after a short back-off, for up to 15 s. Returns the node
    /// that answered.
    async fn call<T, F, Fut>(&self, f: F) -> Result<(T, usize), tonic::Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut backoff = Duration::from_millis(10);
        loop {
            let raw = self.active.load(Ordering::Relaxed);
            let i = raw % self.channels.len();
            match f(self.channels[i].clone()).await {
                Ok(v) => return Ok((v, i)),
                // UNAVAILABLE, or the connection broke mid-call (the node died): every smista RPC
                // is idempotent, so the next node can be asked.
                Err(s)
                    if (s.code() == Code::Unavailable
                        || (s.code() == Code::Unknown && s.message().contains("transport error")))
                        && Instant::now() < deadline =>
                {
                    let _ = self.active.compare_exchange(raw, raw + 1, Ordering::Relaxed, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(s) => {
                    if s.code() == Code::Unavailable {
                        self.surfaced.fetch_add(1, Ordering::Relaxed);
                    }
                    if std::env::var_os("SMISTA_TEST_LOGS").is_some() {
                        println!("call to node-{i} failed: {:?} {}", s.code(), s.message());
                    }
                    return Err(s);
                }
            }
        }
    }
}

#[derive(Default)]
struct Books {
    /// contact -> arrival (Unix ms), for every contact offered and not known to have ended.
    open: Mutex<HashMap<String, u64>>,
    /// Contacts whose completion was acknowledged.
    completed: Mutex<HashSet<String>>,
    /// Contacts diverted.
    diverted: Mutex<HashSet<String>>,
    /// contact -> operators whose AcceptOffer succeeded.
    accepted_by: Mutex<HashMap<String, HashSet<String>>>,
    /// When the first offer was accepted on each node.
    first_accept: Mutex<HashMap<usize, Instant>>,
}

/// A desk following the active: logs in, watches, accepts, handles, completes; after a failover
/// it logs in again wherever the active now is and completes what it had in service there.
async fn desk(g: Group, op: String, books: Arc<Books>, stop: Arc<AtomicBool>) {
    let login = pb::LoginRequest {
        operator_id: op.clone(),
        group: "supplier".into(),
        skills: vec![pb::Skill { name: "naspi".into(), level: 5 }],
        channels: vec![],
        session_id: format!("{op}-desk"),
    };
    let mut in_service: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let logged = g
            .call(|ch| {
                let login = login.clone();
                async move { OperatorServiceClient::new(ch).login(login).await }
            })
            .await;
        let Ok((reply, node)) = logged else { continue };
        let ch = g.channels[node].clone();
        let mut o = OperatorServiceClient::new(ch);
        // Finish what was in service when the previous active went away: what this desk knows,
        // and what the server says it had (an acceptance whose reply was lost in the crash).
        let mut held: HashSet<String> = reply.into_inner().in_service.into_iter().collect();
        held.extend(in_service.take());
        for c in held {
            if !complete(&g, &op, &c, &books).await {
                in_service = Some(c);
            }
        }
        let Ok(stream) = o.watch_offers(pb::WatchOffersRequest { operator_id: op.clone() }).await else { continue };
        let mut stream = stream.into_inner();
        while !stop.load(Ordering::Relaxed) {
            let offer = match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                Err(_) => continue, // idle: check `stop`
                Ok(Ok(Some(offer))) => offer,
                Ok(_) => break, // the stream ended: the node went away or handed over
            };
            let c = offer.contact_id;
            let acc = o.accept_offer(pb::AcceptOfferRequest { operator_id: op.clone(), contact_id: c.clone() }).await;
            if acc.is_err() {
                continue;
            }
            books.accepted_by.lock().entry(c.clone()).or_default().insert(op.clone());
            books.first_accept.lock().entry(node).or_insert_with(Instant::now);
            tokio::time::sleep(HANDLE).await;
            if !complete(&g, &op, &c, &books).await {
                in_service = Some(c);
                break;
            }
        }
    }
}

/// Completes `c`, following the active; `false` if no node could take it now.
async fn complete(g: &Group, op: &str, c: &str, books: &Books) -> bool {
    let req = pb::CompleteContactRequest { operator_id: op.into(), contact_id: c.into(), wrap_up_ms: 1 };
    let r = g
        .call(|ch| {
            let req = req.clone();
            async move { OperatorServiceClient::new(ch).complete_contact(req).await }
        })
        .await;
    match r {
        Ok(_) => {
            books.completed.lock().insert(c.to_owned());
            books.open.lock().remove(c);
            true
        }
        // The operator is not logged in on the new active yet (it answers NOT_FOUND for an
        // unknown operator only if the contact is unknown too): retry after the next login.
        Err(_) => false,
    }
}

/// The telephony platform: offers contacts to the active until `until`; when the active changes
/// it offers again every contact not known to have ended, with its arrival time.
async fn platform(g: Group, books: Arc<Books>, until: Instant, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    let mut last_node = None;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("c{n}");
        let at = unix_ms();
        books.open.lock().insert(id.clone(), at);
        offer(&g, &books, &id, at, &mut last_node).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

async fn offer(g: &Group, books: &Arc<Books>, id: &str, at: u64, last_node: &mut Option<usize>) {
    let req = pb::OfferContactRequest {
        contact_id: id.into(),
        queue: "naspi".into(),
        channel: pb::Channel::Voice as i32,
        arrived_unix_ms: at,
        ..Default::default()
    };
    let r = g
        .call(|ch| {
            let req = req.clone();
            async move { ContactServiceClient::new(ch).offer_contact(req).await }
        })
        .await;
    let Ok((d, node)) = r else { return };
    if let Some(Decision::Diverted(_)) = d.into_inner().decision {
        books.diverted.lock().insert(id.to_owned());
        books.open.lock().remove(id);
    }
    if last_node.is_some_and(|l| l != node) {
        // A new active: what waited on the old one is gone from memory; offer it again, in
        // arrival order, with its arrival time (idempotent for contacts in service there).
        let mut again: Vec<(String, u64)> = books.open.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
        again.sort_by_key(|(_, at)| *at);
        *last_node = Some(node);
        for (c, at) in again {
            if c != id {
                Box::pin(offer(g, books, &c, at, last_node)).await;
            }
        }
    }
    *last_node = Some(node);
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

async fn ledger(url: &str, schema: &str) -> HashMap<String, i64> {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let rows: Vec<(String, i64)> =
        sqlx::query_as(&format!("SELECT contact_id, COUNT(*) FROM {schema}.cost_records GROUP BY contact_id"))
            .fetch_all(&pool)
            .await
            .expect("records");
    pool.close().await;
    rows.into_iter().collect()
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
    let g = Group::new(&addrs);
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
    let books = Arc::new(Books::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut desks = Vec::new();
    for d in 0..DESKS {
        desks.push(tokio::spawn(desk(g.clone(), format!("op-{d}"), books.clone(), stop.clone())));
    }
    let until = Instant::now() + Duration::from_secs(6);
    let plat = tokio::spawn(platform(g.clone(), books.clone(), until, stop.clone()));
    // A wallboard on the active's event stream.
    let mut board = ContactServiceClient::new(g.channels[0].clone())
        .stream_events(pb::StreamEventsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let seen =
        tokio::time::timeout(Duration::from_secs(5), board.message()).await.expect("event").expect("ok").expect("some");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let hit = Instant::now();
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
    let resumed = ContactServiceClient::new(g.channels[next].clone())
        .stream_events(pb::StreamEventsRequest {
            after_epoch: seen.epoch,
            after_sequence: seen.sequence,
            queues: vec![],
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
    let _ = plat.await;
    // Let the desks serve what is still waiting.
    let drain_until = Instant::now() + Duration::from_secs(10);
    while !books.open.lock().is_empty() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for d in desks {
        let _ = d.await;
    }
    proxy.restore();
    let took_over = books.first_accept.lock().get(&next).copied();
    if std::env::var_os("SMISTA_TEST_LOGS").is_some() {
        for (i, n) in nodes.iter().enumerate() {
            for l in n.log.try_iter() {
                println!("node-{i}: {l}");
            }
        }
    }
    let records = ledger(&url, &schema).await;
    let completed = books.completed.lock().clone();
    let diverted = books.diverted.lock().clone();
    let open = books.open.lock().clone();
    println!(
        "{tag}: node-{next} active {} ms after the {tag}, first offer accepted there after {} ms; {} completed, {} diverted, {} left open, {} errors surfaced",
        serving.duration_since(hit).as_millis(),
        took_over.map_or(-1, |t| t.duration_since(hit).as_millis() as i64),
        completed.len(),
        diverted.len(),
        open.len(),
        g.surfaced.load(Ordering::Relaxed)
    );
    for c in &completed {
        if records.get(c) != Some(&1) {
            let pool = sqlx::PgPool::connect(&url).await.expect("connect");
            let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(&format!(
                "SELECT operator_id, node_id, accepted_unix_ms, completed_unix_ms FROM {schema}.cost_records WHERE contact_id = $1"
            ))
            .bind(c)
            .fetch_all(&pool)
            .await
            .expect("rows");
            panic!(
                "acknowledged completion of {c} recorded {:?} times: {rows:?}; accepted by {:?}",
                records.get(c),
                books.accepted_by.lock().get(c)
            );
        }
    }
    assert!(records.values().all(|n| *n == 1), "no contact charged twice");
    for (c, ops) in books.accepted_by.lock().iter() {
        assert!(ops.len() == 1, "{c} accepted by {ops:?}");
    }
    assert!(completed.is_disjoint(&diverted));
    assert!(
        diverted.is_empty(),
        "contacts re-offered while desks log in again queue, they are not diverted: {diverted:?}"
    );
    assert!(open.is_empty(), "every contact ends exactly once; still open: {open:?}");
    assert!(!completed.is_empty() && took_over.is_some(), "the new active served");
    if trouble == Trouble::Term {
        assert_eq!(g.surfaced.load(Ordering::Relaxed), 0, "a planned handover shows no error to a following client");
        // `smista client` given every node (the first one gone, one a standby) reaches the active.
        let targets: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
        let out = Command::new(env!("CARGO_BIN_EXE_smista"))
            .args(["client", "--target", &targets.join(","), "offer", "by-cli", "naspi"])
            .output()
            .expect("smista client");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && (text.contains("Queued") || text.contains("Assigned")), "{out:?}");
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
