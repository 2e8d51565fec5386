//! `--scenario follow`: the load of a telephony platform and an operator floor in front of an
//! active/standby group. The comma-separated `--target` list is one group (not one run per node):
//! the load follows whichever node is active, across a kill, a cut or a planned handover.
//!
//! Every call goes to the node believed active. UNAVAILABLE (a standby, a draining node, a node
//! that is gone: connection refused) or a connection broken mid-call moves on to the node the
//! refusal names in its `smista-active` metadata, else to the next one, with back-off, for up to
//! 15 s; every smista RPC may be replayed (the proto's retry contract). Desks log in again wherever
//! the active now is and first finish what they had in service (what they remember, and what the
//! login's `in_service` says). When offers start succeeding on another node, the platform offers
//! again every contact not known to have ended, oldest first, with its arrival time. A wallboard
//! follows `StreamEvents` across lives: a stale epoch's OUT_OF_RANGE makes it resynchronise from
//! a snapshot and stream on from there.
//!
//! The accounting is the client's own (each node's event stream ends with its life): contacts
//! offered, acknowledged completions, diversions, contacts accepted by two operators, contacts
//! still open at the end, errors a following client could not hide, and *order inversions*: an
//! operator offered a contact while an older one waited in the same queue on the same node and
//! still waited [`REORDER_MS`] later (one queue, one skill, one priority: the oldest must go
//! first, also for contacts offered again with their arrival time after a failover).
//!
//! Callers do not hang up in this scenario.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::offer_contact_response::Decision;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::connect::Identity;
use super::desks::operator_setup;
use super::open_loop::run_nonce;
use super::random::{draw_handle, pace, stream_seed};
use super::report::latency;
use super::{Consistency, LoadConfig, LoadError, Report};

/// Events of operations that run at the same instant on different server threads may be
/// published in either order: an offer of a newer contact counts as an order inversion only if
/// an older contact of the same queue is still waiting this long (event time) after it.
pub const REORDER_MS: u64 = 100;

/// How long one call keeps following before its error is surfaced.
const FOLLOW_FOR: Duration = Duration::from_secs(15);

/// One change of active node, seen by the platform's offers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Switch {
    /// The node that answered offers before (index into `targets`).
    pub from: usize,
    /// The node that answers now.
    pub to: usize,
    /// The last offer answered by `from`, Unix ms.
    pub last_offer_before_unix_ms: u64,
    /// The first offer answered by `to`, Unix ms.
    pub first_offer_unix_ms: u64,
    /// The first offer accepted by an operator on `to` after the switch, Unix ms.
    pub first_accept_unix_ms: Option<u64>,
    /// Contacts offered again to `to` because they had not ended.
    pub offered_again: u64,
}

/// What a following client saw across the group's changes of active node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowFigures {
    /// The group, as given.
    pub targets: Vec<String>,
    /// Distinct contacts offered.
    pub contacts: u64,
    /// Contacts whose completion was acknowledged.
    pub completed: u64,
    /// Contacts diverted.
    pub diverted: u64,
    /// Contacts not known to have ended when the run stopped (should be 0).
    pub open: u64,
    /// Contacts accepted by two different operators (must be 0).
    pub accepted_twice: u64,
    /// Operators offered a contact while an older one waited on the same node, and still waited
    /// [`REORDER_MS`] later (must be 0).
    pub order_inversions: u64,
    /// Errors a following client could not hide: UNAVAILABLE after following for 15 s, or any
    /// other failure of an offer or a completion.
    pub surfaced_errors: u64,
    /// Times the wallboard had to resynchronise (a stale epoch after a failover).
    pub resyncs: u64,
    /// Changes of active node.
    pub switches: Vec<Switch>,
    /// With `--list-contacts`: the contacts whose completion was acknowledged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub completed_ids: Vec<String>,
}

/// The nodes of the group, with the one believed active.
#[derive(Clone)]
struct Group {
    targets: Arc<Vec<String>>,
    channels: Arc<Vec<Channel>>,
    active: Arc<AtomicUsize>,
    id: Identity,
    surfaced: Arc<AtomicU64>,
}

impl Group {
    fn new(cfg: &LoadConfig, targets: Vec<String>) -> Result<Group, LoadError> {
        let mut channels = Vec::with_capacity(targets.len());
        for t in &targets {
            let ep = cfg.creds.endpoint(t).map_err(|e| LoadError::Usage(format!("bad --target {t}: {e}")))?;
            channels.push(ep.connect_timeout(Duration::from_millis(300)).connect_lazy());
        }
        Ok(Group {
            targets: Arc::new(targets),
            channels: Arc::new(channels),
            active: Arc::new(AtomicUsize::new(0)),
            id: Identity::from_config(cfg)?,
            surfaced: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The target a refusal names as active (`smista-active`, the node's advertised address).
    fn named(&self, s: &Status) -> Option<usize> {
        let v = s.metadata().get("smista-active")?.to_str().ok()?;
        self.targets.iter().position(|t| t.trim_start_matches("http://").trim_start_matches("https://") == v)
    }

    /// Runs `f` on the active node, following it; returns the answer and the node that gave it.
    async fn call<T, F, Fut>(&self, f: F) -> Result<(T, usize), Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + FOLLOW_FOR;
        let mut backoff = Duration::from_millis(10);
        loop {
            let raw = self.active.load(Ordering::Relaxed);
            let i = raw % self.channels.len();
            match f(self.channels[i].clone()).await {
                Ok(v) => return Ok((v, i)),
                Err(s) if follows(&s) && Instant::now() < deadline => {
                    let next = match self.named(&s) {
                        Some(n) if n != i => n,
                        _ => raw + 1,
                    };
                    let _ = self.active.compare_exchange(raw, next, Ordering::Relaxed, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err(s) => return Err(s),
            }
        }
    }

    fn contacts(&self, ch: Channel) -> ContactServiceClient<super::connect::Authed> {
        ContactServiceClient::with_interceptor(ch, self.id.platform.clone())
    }

    fn desk(&self, ch: Channel, op: &str) -> OperatorServiceClient<super::connect::Authed> {
        OperatorServiceClient::with_interceptor(ch, self.id.desk(op))
    }
}

/// Whether a failed call is one to follow to another node: UNAVAILABLE, or the connection broke
/// under it. tonic reports a connection that died mid-call as CANCELLED, as UNKNOWN ("transport
/// error"), or, when the peer's HTTP/2 session ends abruptly, as INTERNAL "h2 protocol error";
/// smista itself never answers CANCELLED or UNKNOWN, nor INTERNAL with that text.
fn follows(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Cancelled | Code::Unknown)
        || (s.code() == Code::Internal && s.message().contains("h2 protocol error"))
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Default)]
struct Books {
    /// Every contact of the run -> its arrival, Unix ms.
    arrival: Mutex<HashMap<String, u64>>,
    /// Contacts not known to have ended -> arrival.
    open: Mutex<HashMap<String, u64>>,
    completed: Mutex<Vec<String>>,
    diverted: Mutex<HashSet<String>>,
    accepted_by: Mutex<HashMap<String, HashSet<String>>>,
    /// Per node, the Unix ms of each accepted offer, in order.
    accepts: Mutex<HashMap<usize, Vec<u64>>>,
    /// The node of the last answered offer and when.
    last_offer: Mutex<Option<(usize, u64)>>,
    switches: Mutex<Vec<Switch>>,
    inversions: AtomicU64,
    resyncs: AtomicU64,
    /// Offers not yet answered (the drain waits for none).
    in_flight: AtomicU64,
    latency: Mutex<Option<Histogram<u64>>>,
    handle_ms: AtomicU64,
}

impl Books {
    fn ended(&self, c: &str) -> bool {
        !self.open.lock().contains_key(c)
    }
}

/// Runs the follow scenario against the group `targets`.
pub async fn run(cfg: &LoadConfig, targets: Vec<String>, stop: Arc<AtomicBool>) -> Result<Report, LoadError> {
    if cfg.rate <= 0.0 || cfg.duration <= 0.0 || cfg.aht <= 0.0 {
        return Err(LoadError::Usage("--rate, --duration and --aht must be positive".into()));
    }
    let g = Group::new(cfg, targets)?;
    let books = Arc::new(Books { latency: Mutex::new(Histogram::new(3).ok()), ..Books::default() });
    let done = Arc::new(AtomicBool::new(false));
    let (following_tx, following) = watch::channel(None);
    let board = tokio::spawn(wallboard(g.clone(), books.clone(), cfg.queue.clone(), following_tx, done.clone()));
    let mut desks = Vec::new();
    for i in 0..cfg.operators {
        let op = format!("{}-op-{i}", cfg.prefix);
        let rng = SmallRng::seed_from_u64(stream_seed(cfg.seed, 1 + u64::from(i)));
        desks.push(tokio::spawn(desk(g.clone(), cfg.clone(), i, op, rng, books.clone(), done.clone())));
    }
    let start = Instant::now();
    let mut arrivals = pace(start, Duration::from_secs_f64(cfg.duration), cfg.rate, stream_seed(cfg.seed, 0), stop);
    let mut n = 0u64;
    let mut callers = tokio::task::JoinSet::new();
    let (sweeps, mut to_sweep) = mpsc::unbounded_channel();
    let platform = Platform { g: g.clone(), books: books.clone(), queue: cfg.queue.clone(), following, sweeps };
    let sweeper = {
        let p = platform.clone();
        tokio::spawn(async move {
            while let Some((node, k)) = to_sweep.recv().await {
                p.sweep(node, k).await;
            }
        })
    };
    while let Some(at) = arrivals.recv().await {
        let id = format!("{}-{}-f{n}", cfg.prefix, run_nonce());
        n += 1;
        let arrived = unix_ms();
        books.arrival.lock().insert(id.clone(), arrived);
        books.open.lock().insert(id.clone(), arrived);
        books.in_flight.fetch_add(1, Ordering::SeqCst);
        let p = platform.clone();
        callers.spawn(async move {
            p.offer(&id, arrived, Some(at)).await;
            p.books.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
        while callers.try_join_next().is_some() {}
    }
    let elapsed = start.elapsed().as_secs_f64().min(cfg.duration).max(1e-9);
    while callers.join_next().await.is_some() {}
    // Let the desks serve what still waits (re-offers after a late switch included).
    let drain = Instant::now() + Duration::from_secs_f64((cfg.aht * 20.0).clamp(10.0, 60.0));
    while (!books.open.lock().is_empty() || books.in_flight.load(Ordering::SeqCst) > 0) && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    sweeper.abort();
    for d in desks {
        let _ = d.await;
    }
    let _ = board.await;
    let snapshot = g
        .call(|ch| {
            let mut a = AdminServiceClient::with_interceptor(ch, g.id.admin.clone());
            async move { a.get_snapshot(pb::GetSnapshotRequest {}).await }
        })
        .await
        .ok()
        .map(|(s, _)| s.into_inner());
    Ok(report(cfg, &g, &books, elapsed, snapshot))
}

#[derive(Clone)]
struct Platform {
    g: Group,
    books: Arc<Books>,
    queue: String,
    /// The node the wallboard streams from.
    following: watch::Receiver<Option<usize>>,
    /// Switches to sweep: (node, index in `switches`).
    sweeps: mpsc::UnboundedSender<(usize, usize)>,
}

impl Platform {
    /// Offers `id` (arrived at `arrived`, Unix ms) to the active node and records the decision.
    /// The first offer answered by another node starts a sweep that offers again every contact
    /// not known to have ended.
    async fn offer(&self, id: &str, arrived: u64, intended: Option<Instant>) -> Option<usize> {
        let req = pb::OfferContactRequest {
            contact_id: id.into(),
            queue: self.queue.clone(),
            channel: pb::Channel::Voice as i32,
            arrived_unix_ms: arrived,
            ..Default::default()
        };
        let r = self
            .g
            .call(|ch| {
                let (mut c, req) = (self.g.contacts(ch), req.clone());
                async move { c.offer_contact(req).await }
            })
            .await;
        if let Some(at) = intended {
            if let Some(h) = self.books.latency.lock().as_mut() {
                let _ = h.record((at.elapsed().as_micros() as u64).max(1));
            }
        }
        let (d, node) = match r {
            Ok(x) => x,
            // Offered again, a contact that ended meanwhile (its completion crossed the sweep)
            // answers ALREADY_EXISTS: the contract's answer, not an error.
            Err(s) if s.code() == Code::AlreadyExists && intended.is_none() => return None,
            Err(s) => {
                if self.g.surfaced.fetch_add(1, Ordering::Relaxed) < 10 {
                    eprintln!("[follow] offer of {id} failed: {:?} {}", s.code(), s.message());
                }
                return None;
            }
        };
        if let Some(Decision::Diverted(_)) = d.into_inner().decision {
            self.books.diverted.lock().insert(id.to_owned());
            self.books.open.lock().remove(id);
        }
        let now = unix_ms();
        let switched = {
            let mut last = self.books.last_offer.lock();
            let from = last.filter(|(n, _)| *n != node);
            *last = Some((node, now));
            from
        };
        if let Some((from, before)) = switched {
            let mut s = self.books.switches.lock();
            s.push(Switch {
                from,
                to: node,
                last_offer_before_unix_ms: before,
                first_offer_unix_ms: now,
                ..Switch::default()
            });
            let _ = self.sweeps.send((node, s.len() - 1));
        }
        Some(node)
    }

    /// After switch `k` to `node`: offers again, oldest first and with their arrival times, the
    /// contacts not known to have ended (those in service there are answered ASSIGNED to their
    /// operator, the others queue in their place).
    async fn sweep(&self, node: usize, k: usize) {
        // Start once the wallboard follows the new life, so its order check sees these queue.
        let mut following = self.following.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), following.wait_for(|f| *f == Some(node))).await;
        let mut again: Vec<(u64, String)> = self.books.open.lock().iter().map(|(c, at)| (*at, c.clone())).collect();
        again.sort();
        let mut n = 0;
        for (at, c) in again {
            if self.books.ended(&c) {
                continue;
            }
            self.books.in_flight.fetch_add(1, Ordering::SeqCst);
            let _ = self.offer(&c, at, None).await;
            self.books.in_flight.fetch_sub(1, Ordering::SeqCst);
            n += 1;
        }
        if let Some(s) = self.books.switches.lock().get_mut(k) {
            s.offered_again = n;
        }
    }
}

/// A virtual voice desk following the active: logs in, finishes what it held, watches, accepts,
/// handles for a drawn time, completes; after a failover it logs in again wherever the active is.
async fn desk(
    g: Group,
    cfg: LoadConfig,
    i: u32,
    op: String,
    mut rng: SmallRng,
    books: Arc<Books>,
    done: Arc<AtomicBool>,
) {
    let (group, skills) = operator_setup(&cfg, i);
    let login = pb::LoginRequest {
        operator_id: op.clone(),
        group,
        skills: skills.into_iter().map(|(name, level)| pb::Skill { name, level }).collect(),
        channels: vec![],
        session_id: format!("{op}-desk"),
    };
    let mut in_service: Option<String> = None;
    while !done.load(Ordering::Relaxed) {
        let logged = g
            .call(|ch| {
                let (mut o, login) = (g.desk(ch, &op), login.clone());
                async move { o.login(login).await }
            })
            .await;
        let Ok((reply, node)) = logged else { continue };
        let mut o = g.desk(g.channels[node].clone(), &op);
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
        while !done.load(Ordering::Relaxed) {
            let offer = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                Err(_) => continue, // idle: check `done`
                Ok(Ok(Some(offer))) => offer,
                Ok(_) => break, // the stream ended: the node went away or handed over
            };
            let c = offer.contact_id;
            let acc = o.accept_offer(pb::AcceptOfferRequest { operator_id: op.clone(), contact_id: c.clone() }).await;
            if acc.is_err() {
                continue;
            }
            books.accepted_by.lock().entry(c.clone()).or_default().insert(op.clone());
            books.accepts.lock().entry(node).or_default().push(unix_ms());
            let handle = draw_handle(&mut rng, cfg.handle, cfg.aht);
            tokio::time::sleep(Duration::from_secs_f64(handle)).await;
            if !complete(&g, &op, &c, &books).await {
                in_service = Some(c);
                break;
            }
        }
    }
}

/// Completes `c`, following the active; `false` if no node could take it now.
async fn complete(g: &Group, op: &str, c: &str, books: &Books) -> bool {
    let req =
        pb::CompleteContactRequest { operator_id: op.into(), contact_id: c.into(), wrap_up_ms: 0, ended_unix_ms: 0 };
    let r = g
        .call(|ch| {
            let (mut o, req) = (g.desk(ch, op), req.clone());
            async move { o.complete_contact(req).await }
        })
        .await;
    match r {
        Ok((d, _)) => {
            if books.open.lock().remove(c).is_some() {
                books.completed.lock().push(c.to_owned());
                books.handle_ms.fetch_add(d.into_inner().handle_ms, Ordering::Relaxed);
            }
            true
        }
        // Not logged in on the new active yet (its contact unknown there until the platform
        // offers it again), or no node answers: retried after the next login.
        Err(_) => false,
    }
}

/// Follows `StreamEvents` of `queue` on the active node across lives, counting order inversions.
async fn wallboard(
    g: Group,
    books: Arc<Books>,
    queue: String,
    following: watch::Sender<Option<usize>>,
    done: Arc<AtomicBool>,
) {
    use pb::contact_event::Kind;
    let (mut epoch, mut seq) = (0u64, 0u64);
    // This life's contacts waiting and not yet offered: (arrival, id).
    let mut waiting: BTreeSet<(u64, String)> = BTreeSet::new();
    // Offers of a newer contact while older ones waited: (deadline, those older ones).
    let mut suspects: Vec<(u64, Vec<(u64, String)>)> = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let opened = g
            .call(|ch| {
                let mut c = g.contacts(ch);
                let req = pb::StreamEventsRequest {
                    after_epoch: epoch,
                    after_sequence: seq,
                    queues: vec![queue.clone()],
                    max_delay_ms: 0,
                };
                async move { c.stream_events(req).await }
            })
            .await;
        let (stream, node) = match opened {
            Ok(x) => x,
            Err(s) if s.code() == Code::OutOfRange => {
                // Another life: its events before now are not ours to see; start from a snapshot.
                books.resyncs.fetch_add(1, Ordering::Relaxed);
                let snap = g
                    .call(|ch| {
                        let mut a = AdminServiceClient::with_interceptor(ch, g.id.admin.clone());
                        async move { a.get_snapshot(pb::GetSnapshotRequest {}).await }
                    })
                    .await;
                if let Ok((s, _)) = snap {
                    let s = s.into_inner();
                    (epoch, seq) = (s.event_epoch, s.last_event_sequence);
                    waiting.clear();
                    suspects.clear();
                }
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = following.send(Some(node));
        let mut stream = stream.into_inner();
        while !done.load(Ordering::Relaxed) {
            let ev = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                Err(_) => continue,
                Ok(Ok(Some(ev))) => ev,
                Ok(_) => break,
            };
            if ev.epoch != epoch {
                waiting.clear();
                suspects.clear();
            }
            (epoch, seq) = (ev.epoch, ev.sequence);
            let known = books.arrival.lock().get(&ev.contact_id).copied();
            if let Some(arrived) = known {
                let key = (arrived, ev.contact_id);
                match ev.kind {
                    Some(Kind::Queued(_)) => {
                        waiting.insert(key);
                    }
                    Some(Kind::Offered(_)) => {
                        waiting.remove(&key);
                        let older: Vec<(u64, String)> =
                            waiting.range(..(arrived, String::new())).take(8).cloned().collect();
                        if !older.is_empty() {
                            suspects.push((ev.timestamp_ms + REORDER_MS, older));
                        }
                    }
                    Some(_) => {
                        waiting.remove(&key);
                    }
                    None => {}
                }
            }
            // A newer contact offered while older ones waited is an inversion if one of them is
            // still waiting REORDER_MS later.
            suspects.retain_mut(|(deadline, older)| {
                older.retain(|k| waiting.contains(k));
                if older.is_empty() {
                    return false;
                }
                if ev.timestamp_ms > *deadline {
                    books.inversions.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                true
            });
        }
        let _ = following.send(None);
    }
}

fn report(cfg: &LoadConfig, g: &Group, books: &Books, elapsed: f64, snap: Option<pb::Snapshot>) -> Report {
    let contacts = books.arrival.lock().len() as u64;
    let completed = books.completed.lock().clone();
    let diverted = books.diverted.lock().len() as u64;
    let open = books.open.lock().len() as u64;
    let accepts = books.accepts.lock().clone();
    let mut switches = books.switches.lock().clone();
    for s in &mut switches {
        s.first_accept_unix_ms =
            accepts.get(&s.to).and_then(|a| a.iter().copied().find(|t| *t >= s.last_offer_before_unix_ms));
    }
    let mut outcomes = std::collections::BTreeMap::new();
    outcomes.insert("completed".to_owned(), completed.len() as u64);
    outcomes.insert("diverted".to_owned(), diverted);
    let follow = FollowFigures {
        targets: g.targets.to_vec(),
        contacts,
        completed: completed.len() as u64,
        diverted,
        open,
        accepted_twice: books.accepted_by.lock().values().filter(|ops| ops.len() > 1).count() as u64,
        order_inversions: books.inversions.load(Ordering::Relaxed),
        surfaced_errors: g.surfaced.load(Ordering::Relaxed),
        resyncs: books.resyncs.load(Ordering::Relaxed),
        switches,
        completed_ids: if cfg.list_contacts { completed.clone() } else { Vec::new() },
    };
    let busy_s = books.handle_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    Report {
        scenario: "follow".into(),
        target_rate: cfg.rate,
        offers_per_second: contacts as f64 / elapsed,
        latency_us: books.latency.lock().as_ref().map(latency).unwrap_or_default(),
        outcomes,
        occupancy: (busy_s / (f64::from(cfg.operators.max(1)) * elapsed)).min(1.0),
        consistency: Consistency {
            contacts,
            finished_once: completed.len() as u64 + diverted,
            missing: open,
            duplicated: 0,
        },
        budgets: snap.as_ref().map(super::report::budget_figures).unwrap_or_default(),
        elapsed_seconds: elapsed,
        follow: Some(follow),
        ..Report::default()
    }
}
