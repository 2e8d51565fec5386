//! Clients that follow the proto's retry contract: a telephony platform, operator desks and a
//! snapshot reader, every call recorded in the history.
//!
//! The contract (contact.proto, operator.proto): on UNAVAILABLE or a broken call, retry the same
//! request on the node named in `smista-active`, else the next node, with back-off; a state change
//! whose reply was lost (time-out, UNAVAILABLE) is unknown and retried with the same ids until a
//! definitive answer; after the active changed, offer again every contact that has not ended with
//! its original `arrived_unix_ms`, and log in again (completing what `in_service` lists).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::offer_contact_response::Decision;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::cluster::NodeStatus;
use crate::history::{code_name, unix_ms, History, Kind, Op};

/// The clock of a run: when offers stop, when desks stop, when every retry gives up.
#[derive(Debug)]
pub struct Ctx {
    /// The history.
    pub history: History,
    /// The run's tag (prefix of contact ids and desk sessions).
    pub run: String,
    /// No new contact after this.
    pub stop: Instant,
    /// Desks take no new offer after this.
    pub desks_stop: Instant,
    /// Every retry gives up after this ("the run ends").
    pub give_up: Instant,
    /// Per-call deadline of state changes.
    pub deadline: Duration,
    /// Per-call deadline of reads.
    pub read_deadline: Duration,
}

/// A node as the clients see it.
#[derive(Debug)]
pub struct NodeRef {
    /// Its index in the run.
    pub node: usize,
    /// Its gRPC address.
    pub addr: String,
    /// A lazily connected channel (reconnects after restarts).
    pub channel: Channel,
    /// Its process state (for the `alive` flag of reads).
    pub status: Arc<NodeStatus>,
}

impl NodeRef {
    /// A node reached at `addr`.
    ///
    /// # Errors
    /// `addr` is not a valid address.
    pub fn new(node: usize, addr: String, status: Arc<NodeStatus>) -> Result<NodeRef, tonic::transport::Error> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(300))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(NodeRef { node, addr, channel, status })
    }
}

/// A contact the platform has not seen end.
#[derive(Debug, Clone)]
pub struct OpenContact {
    /// Its queue.
    pub queue: String,
    /// When it arrived (its first offer), Unix ms.
    pub arrived_unix_ms: u64,
    /// It got a definitive decision (queued or assigned) at least once.
    pub answered: bool,
}

/// The nodes one set of clients follows (all of them for active/standby, one for a lease node),
/// the contacts open there and the life of the active they last saw.
#[derive(Debug)]
pub struct Site {
    /// Its index (the lease node's, or 0).
    pub idx: usize,
    /// Its nodes.
    pub nodes: Vec<NodeRef>,
    hint: AtomicUsize,
    open: Mutex<HashMap<String, OpenContact>>,
    epoch: AtomicU64,
    generation: watch::Sender<u64>,
}

/// The answer to a state change.
#[derive(Debug)]
pub enum Reply<T> {
    /// OK, from the node at this position of the site.
    Ok(T, usize),
    /// A definitive error.
    Definitive(tonic::Status),
    /// Never answered definitively before the run ended.
    Unknown,
}

fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
    )
}

impl Site {
    /// A site of `nodes`.
    #[must_use]
    pub fn new(idx: usize, nodes: Vec<NodeRef>) -> Site {
        Site {
            idx,
            nodes,
            hint: AtomicUsize::new(0),
            open: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            generation: watch::channel(0).0,
        }
    }

    fn position(&self, addr: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    /// Calls `f` on the node the site believes active, following the retry contract until a
    /// definitive answer or `ctx.give_up`; every attempt is recorded from `template`.
    pub async fn call<T, F, Fut>(&self, ctx: &Ctx, template: &Op, mut f: F, describe: impl Fn(&T, &mut Op)) -> Reply<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let len = self.nodes.len();
        let mut backoff = Duration::from_millis(10);
        let mut at = self.hint.load(Ordering::Relaxed) % len;
        loop {
            let n = &self.nodes[at];
            let mut op = template.clone();
            op.kind = Kind::Call;
            op.node = n.node;
            op.start_ms = unix_ms();
            let alive = n.status.alive();
            let r = tokio::time::timeout(ctx.deadline, f(n.channel.clone())).await;
            op.end_ms = unix_ms();
            op.alive = alive && n.status.alive();
            let named = match r {
                Ok(Ok(resp)) => {
                    let v = resp.into_inner();
                    op.status = "OK".into();
                    describe(&v, &mut op);
                    ctx.history.record(op);
                    self.hint.store(at, Ordering::Relaxed);
                    return Reply::Ok(v, at);
                }
                Ok(Err(s)) => {
                    op.status = code_name(s.code()).into();
                    op.detail = s.message().chars().take(160).collect();
                    ctx.history.record(op);
                    if !retryable(s.code()) {
                        return Reply::Definitive(s);
                    }
                    s.metadata().get("smista-active").and_then(|v| v.to_str().ok()).and_then(|a| self.position(a))
                }
                Err(_) => {
                    op.status = "DEADLINE_EXCEEDED".into();
                    op.detail = "client-side deadline".into();
                    ctx.history.record(op);
                    None
                }
            };
            if Instant::now() >= ctx.give_up {
                return Reply::Unknown;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
            let hint = self.hint.load(Ordering::Relaxed) % len;
            at = named.unwrap_or(if hint == at { (at + 1) % len } else { hint });
        }
    }

    /// A snapshot named this epoch: a new one (the active changed or restarted) starts a new
    /// generation, which makes the platform offer again and the desks log in again.
    pub fn observe_epoch(&self, epoch: u64) {
        let prev = self.epoch.swap(epoch, Ordering::AcqRel);
        if prev != 0 && prev != epoch {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    fn ended(&self, contact: &str) {
        if let Ok(mut o) = self.open.lock() {
            o.remove(contact);
        }
    }

    fn answered(&self, contact: &str) {
        if let Ok(mut o) = self.open.lock() {
            if let Some(c) = o.get_mut(contact) {
                c.answered = true;
            }
        }
    }

    /// Contacts open now.
    #[must_use]
    pub fn open_contacts(&self) -> Vec<(String, OpenContact)> {
        self.open.lock().map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
    }
}

fn template(client: &str, rpc: &str, contact: &str, operator: &str) -> Op {
    Op { client: client.into(), rpc: rpc.into(), contact: contact.into(), operator: operator.into(), ..Op::default() }
}

/// Offers contact `id` (again, if `again`) until a definitive decision.
async fn offer(site: Arc<Site>, ctx: Arc<Ctx>, id: String, c: OpenContact, again: bool) {
    let req = pb::OfferContactRequest {
        contact_id: id.clone(),
        queue: c.queue.clone(),
        channel: pb::Channel::Voice as i32,
        arrived_unix_ms: c.arrived_unix_ms,
        ..Default::default()
    };
    let mut t = template(if again { "platform-again" } else { "platform" }, "OfferContact", &id, "");
    t.arrived_unix_ms = c.arrived_unix_ms;
    let reply = site
        .call(
            &ctx,
            &t,
            |ch| {
                let req = req.clone();
                async move { ContactServiceClient::new(ch).offer_contact(req).await }
            },
            |r: &pb::OfferContactResponse, op| {
                let (d, detail) = match &r.decision {
                    Some(Decision::Assigned(a)) => {
                        ("assigned", format!("{} deadline={}", a.operator_id, a.offer_deadline_ms))
                    }
                    Some(Decision::Queued(q)) => ("queued", format!("{} #{}", q.queue, q.position)),
                    Some(Decision::Diverted(v)) => {
                        ("diverted", pb::DivertReason::try_from(v.reason).map_or("?", |r| r.as_str_name()).to_owned())
                    }
                    None => ("none", String::new()),
                };
                op.decision = d.into();
                op.detail = detail;
            },
        )
        .await;
    match reply {
        Reply::Ok(r, _) => match r.decision {
            Some(Decision::Assigned(_) | Decision::Queued(_)) => site.answered(&id),
            _ => site.ended(&id),
        },
        // ALREADY_EXISTS: it ended; anything else definitive: not routed (stop offering it).
        Reply::Definitive(_) => site.ended(&id),
        Reply::Unknown => {}
    }
}

/// The telephony platform of `site`: `rate` contacts a second until `ctx.stop`, alternately to
/// the budgeted queue (`naspi`) and the internal staff's (`pensions`); each offer in its own task.
pub async fn platform(site: Arc<Site>, ctx: Arc<Ctx>, rate: f64) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    loop {
        tick.tick().await;
        if Instant::now() >= ctx.stop {
            break;
        }
        n += 1;
        let id = format!("{}-s{}-c{n}", ctx.run, site.idx);
        let c = OpenContact {
            queue: if n % 2 == 0 { "pensions" } else { "naspi" }.into(),
            arrived_unix_ms: unix_ms(),
            answered: false,
        };
        if let Ok(mut o) = site.open.lock() {
            o.insert(id.clone(), c.clone());
        }
        tasks.spawn(offer(site.clone(), ctx.clone(), id, c, false));
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Offers again every open contact each time the site sees a new life of its active node.
pub async fn reofferer(site: Arc<Site>, ctx: Arc<Ctx>) {
    let mut rx = site.generation.subscribe();
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(ctx.desks_stop) => return,
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (id, c) in site.open_contacts().into_iter().filter(|(_, c)| c.answered) {
            tasks.spawn(offer(site.clone(), ctx.clone(), id, c, true));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// One operator desk.
#[derive(Debug, Clone)]
pub struct Desk {
    /// Operator id.
    pub operator: String,
    /// Group (`supplier` or `internal`).
    pub group: String,
    /// Skill (its queue).
    pub skill: String,
    /// Shortest and longest hold (ms).
    pub hold_ms: (u64, u64),
}

impl Desk {
    fn client(&self) -> String {
        format!("desk:{}", self.operator)
    }

    /// Logs in (on the active, per the contract): the node's position and `in_service`.
    async fn login(&self, site: &Site, ctx: &Ctx) -> Option<(usize, Vec<String>)> {
        let req = pb::LoginRequest {
            operator_id: self.operator.clone(),
            group: self.group.clone(),
            skills: vec![pb::Skill { name: self.skill.clone(), level: 5 }],
            channels: vec![],
            session_id: format!("{}-{}", ctx.run, self.operator),
        };
        let t = template(&self.client(), "Login", "", &self.operator);
        let r = site
            .call(
                ctx,
                &t,
                |ch| {
                    let req = req.clone();
                    async move { OperatorServiceClient::new(ch).login(req).await }
                },
                |r: &pb::LoginResponse, op| op.in_service = r.in_service.clone(),
            )
            .await;
        match r {
            Reply::Ok(r, at) => Some((at, r.in_service)),
            _ => None,
        }
    }

    /// Completes `contact` until a definitive answer (logging in again when the node does not
    /// know the operator).
    async fn complete(&self, site: &Site, ctx: &Ctx, contact: &str) {
        let req = pb::CompleteContactRequest {
            operator_id: self.operator.clone(),
            contact_id: contact.into(),
            wrap_up_ms: 1,
            // The conversation ended now; every retry keeps saying so (operator.proto).
            ended_unix_ms: crate::history::unix_ms(),
        };
        let t = template(&self.client(), "CompleteContact", contact, &self.operator);
        for _ in 0..5 {
            let r = site
                .call(
                    ctx,
                    &t,
                    |ch| {
                        let req = req.clone();
                        async move { OperatorServiceClient::new(ch).complete_contact(req).await }
                    },
                    |r: &pb::CompleteContactResponse, op| op.detail = format!("handle_ms={}", r.handle_ms),
                )
                .await;
            match r {
                Reply::Ok(..) => {
                    site.ended(contact);
                    return;
                }
                Reply::Definitive(s) if s.code() == Code::NotFound => {
                    if self.login(site, ctx).await.is_none() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Accepts `contact` until a definitive answer; whether it is now in service with this desk.
    async fn accept(&self, site: &Site, ctx: &Ctx, contact: &str) -> bool {
        let req = pb::AcceptOfferRequest { operator_id: self.operator.clone(), contact_id: contact.into() };
        let t = template(&self.client(), "AcceptOffer", contact, &self.operator);
        let r = site
            .call(
                ctx,
                &t,
                |ch| {
                    let req = req.clone();
                    async move { OperatorServiceClient::new(ch).accept_offer(req).await }
                },
                |_: &pb::AcceptOfferResponse, _| {},
            )
            .await;
        match r {
            Reply::Ok(..) => true,
            // Not logged in there (a new active): the login says whether the acceptance took.
            Reply::Definitive(s) if s.code() == Code::NotFound => {
                self.login(site, ctx).await.is_some_and(|(_, l)| l.iter().any(|c| c == contact))
            }
            _ => false,
        }
    }

    /// The desk's life: log in, complete what is in service, watch offers, accept, hold,
    /// complete; again after every new life of the active or a silent stream.
    pub async fn run(self, site: Arc<Site>, ctx: Arc<Ctx>) {
        let mut gen = site.generation.subscribe();
        'desk: while Instant::now() < ctx.desks_stop {
            let Some((at, in_service)) = self.login(&site, &ctx).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            gen.borrow_and_update();
            for c in in_service {
                self.complete(&site, &ctx, &c).await;
            }
            let n = &site.nodes[at];
            let mut op = template(&self.client(), "WatchOffers", "", &self.operator);
            op.node = n.node;
            op.start_ms = unix_ms();
            let req = pb::WatchOffersRequest { operator_id: self.operator.clone() };
            let opened = tokio::time::timeout(
                ctx.read_deadline,
                OperatorServiceClient::new(n.channel.clone()).watch_offers(req),
            )
            .await;
            op.end_ms = unix_ms();
            op.alive = n.status.alive();
            let mut stream = match opened {
                Ok(Ok(s)) => {
                    op.status = "OK".into();
                    ctx.history.record(op);
                    s.into_inner()
                }
                Ok(Err(s)) => {
                    op.status = code_name(s.code()).into();
                    op.detail = s.message().chars().take(160).collect();
                    ctx.history.record(op);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(_) => {
                    op.status = "DEADLINE_EXCEEDED".into();
                    ctx.history.record(op);
                    continue;
                }
            };
            let mut quiet = Instant::now();
            loop {
                if Instant::now() >= ctx.desks_stop {
                    break 'desk;
                }
                tokio::select! {
                    m = tokio::time::timeout(Duration::from_millis(500), stream.message()) => match m {
                        Ok(Ok(Some(offer))) => {
                            quiet = Instant::now();
                            let c = offer.contact_id;
                            if self.accept(&site, &ctx, &c).await {
                                let hold = fastrand::u64(self.hold_ms.0..=self.hold_ms.1.max(self.hold_ms.0));
                                tokio::time::sleep(Duration::from_millis(hold)).await;
                                self.complete(&site, &ctx, &c).await;
                            }
                        }
                        Ok(Ok(None) | Err(_)) => break,
                        // A desk whose stream is silent checks in again (Login is a no-op on
                        // the active, UNAVAILABLE with the active's address elsewhere).
                        Err(_) => if quiet.elapsed() > Duration::from_secs(3) { break },
                    },
                    _ = gen.changed() => break,
                }
            }
        }
    }
}

/// Reads the snapshot of `site.nodes[at]` every 300 ms until the run ends: every time-out is
/// recorded (a live node that stops answering reads is frozen), and the event epoch tells the
/// site when its active changed.
pub async fn reader(site: Arc<Site>, ctx: Arc<Ctx>, at: usize) {
    let n = &site.nodes[at];
    while Instant::now() < ctx.give_up {
        let mut op = template("reader", "GetSnapshot", "", "");
        op.node = n.node;
        op.start_ms = unix_ms();
        let alive = n.status.alive();
        let r = tokio::time::timeout(
            ctx.read_deadline,
            AdminServiceClient::new(n.channel.clone()).get_snapshot(pb::GetSnapshotRequest {}),
        )
        .await;
        op.end_ms = unix_ms();
        op.alive = alive && n.status.alive();
        match r {
            Ok(Ok(s)) => {
                let s = s.into_inner();
                op.status = "OK".into();
                op.detail = format!("epoch={}", s.event_epoch);
                site.observe_epoch(s.event_epoch);
            }
            Ok(Err(s)) => {
                op.status = code_name(s.code()).into();
                op.detail = s.message().chars().take(120).collect();
            }
            Err(_) => {
                op.status = "DEADLINE_EXCEEDED".into();
                op.detail = "client-side deadline".into();
            }
        }
        // Refused reads of a node that is down or a standby say nothing: keep the history short.
        if op.status != "UNAVAILABLE" || op.alive {
            ctx.history.record(op);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
