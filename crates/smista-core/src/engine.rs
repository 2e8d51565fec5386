//! The routing engine: matches contacts with operators, concurrently, without a global lock.
//!
//! # How matching stays correct under concurrency
//!
//! There are two ways a contact meets an operator: a contact arrives and looks for a free operator
//! ([`Engine::dispatch_contact`]), or an operator frees up and looks for the best waiting contact
//! ([`Engine::find_work`]). Both follow the same protocol:
//!
//! 1. *publish first*: the contact is inserted in its queue, or the operator's capacity is freed,
//!    before looking at the other side, so of two racing threads at least one sees the other
//!    (no lost wake-up);
//! 2. *claim the operator* with one CAS on its state word ([`crate::operator`]) — the only way an
//!    operator gets work, and it fails if the operator is paused, in wrap-up, logged out or full;
//! 3. *take the contact* under its queue's lock, only if it is still waiting with the same rank;
//! 4. if the take fails, *release the claim and look for work for that operator again*, since a
//!    contact that saw the operator busy during the claim may be waiting for it.
//!
//! Every offer carries a deadline, so a claim that became an offer always ends: accepted, declined,
//! timed out (contact back at the head of its queue, operator paused), cancelled or logged out.
//!
//! Lock order: a queue's lock, then a contact's map shard, then an operator's `held`/`session`
//! mutex. Never two queue locks at once. The budget gate may be called under these locks and must
//! not call back into the engine.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::budget::{BudgetGate, FundingRequest, Settlement, Started};
use crate::config::{EngineConfig, Strategy, MAX_PRIORITY};
use crate::error::{ConfigError, RoutingError};
use crate::event::Event;
use crate::model::{
    Channel, Completion, Decision, DivertReason, Fallback, LoginRequest, OfferRequest, OperatorStatus, Outcome,
    RequestedState, Segment,
};
use crate::operator::{Session, Slot, Transition};
use crate::queue::{Candidate, Queue, RankKey, State, Waiting};
use crate::snapshot::{OperatorSnapshot, QueueSnapshot, Snapshot};
use crate::time::Millis;

/// Bound on retries of one matching attempt; past it the contact simply stays queued and the next
/// operator event or tick picks it up.
const MAX_ATTEMPTS: usize = 32;
/// Bound on how deep an operator looks into one queue for an eligible contact.
const SCAN_LIMIT: usize = 256;
/// Longest accepted identifier, in bytes.
const MAX_ID_LEN: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CState {
    /// Being placed in a queue (arrival or overflow); not visible to matching.
    Arriving,
    Queued {
        rank: RankKey,
    },
    Offered {
        slot: u32,
        gen: u8,
        deadline: (Millis, u64),
    },
    InService {
        slot: u32,
        gen: u8,
        accepted_at: Millis,
    },
    /// Finished; the record is about to be removed and the outcome is in `finished`.
    Done,
}

#[derive(Debug)]
struct Contact {
    queue: u32,
    channel: Channel,
    priority: u32,
    segment: Segment,
    language: Arc<str>,
    arrived: Millis,
    entered: Millis,
    patience_ms: u64,
    funding: Option<Arc<str>>,
    declined: Vec<u32>,
    state: CState,
}

#[derive(Clone, Debug)]
struct Finished {
    outcome: Outcome,
    queue: u32,
    diverted: Option<(DivertReason, Fallback)>,
    completed_by: Option<u32>,
    completion: Option<Completion>,
}

/// The best contact an operator found so far while looking for work.
struct Pick {
    eff: u64,
    wait: u64,
    qi: u32,
    rank: RankKey,
    ch: Channel,
    contact: Arc<str>,
}

/// Why a take did not turn into an offer.
enum Missed {
    /// The contact is no longer waiting with that rank.
    Gone,
    /// The operator's budget refused to fund it.
    Unfunded(Arc<str>),
}

/// A contact as seen by an operator acting on it.
struct OfferRef {
    idx: u32,
    session: Arc<Session>,
    id: Arc<str>,
    qi: u32,
    state: CState,
}

#[derive(Debug)]
struct Group {
    name: Arc<str>,
    budget: Option<Arc<str>>,
}

/// Concurrent map keyed by contact or operator id. foldhash with a per-process random seed: several
/// times faster than SipHash on short ids, still seeded against collision flooding by callers
/// who choose the ids.
type Map<V> = DashMap<Arc<str>, V, foldhash::fast::RandomState>;

/// Finished contacts are kept in two generations, swapped every half retention, so forgetting
/// them is O(1) and never scans.
#[derive(Debug)]
struct FinishedGens {
    current: Map<Finished>,
    previous: Map<Finished>,
}

/// The routing engine. Cheap to share (`Arc<Engine>`); every method takes `&self`.
#[derive(Debug)]
pub struct Engine {
    queues: Vec<Queue>,
    queue_by_name: HashMap<String, u32>,
    groups: HashMap<String, Group>,
    slots: Box<[Slot]>,
    next_slot: AtomicU32,
    /// Slots whose operator logged out, oldest first: reused for new operator ids once every
    /// slot has been handed out (see `allocate_slot`).
    logged_out: Mutex<VecDeque<u32>>,
    operator_ids: Map<u32>,
    contacts: Map<Contact>,
    finished: RwLock<FinishedGens>,
    last_rotation: AtomicU64,
    retention_ms: u64,
    /// Until when (engine ms) a queue with nobody logged in still queues its contacts instead of
    /// diverting them NO_OPERATORS: the desks are reconnecting after a takeover.
    staff_grace_until: AtomicU64,
    seq: AtomicU64,
    gate: Arc<dyn BudgetGate>,
}

/// A slot's owner lock, held while a session starts.
type OwnerGuard<'a> = MutexGuard<'a, Option<Arc<str>>>;

/// Whether an operator paid by `payer` must be skipped for a contact funded by `funding`: its
/// budget needs to fund the contact and already refused during this matching attempt.
fn refused_here(payer: &Option<Arc<str>>, funding: &Option<Arc<str>>, refused: &[Arc<str>]) -> bool {
    payer.as_ref().is_some_and(|b| funding.as_ref() != Some(b) && refused.contains(b))
}

/// What eligibility checks need to know of a contact, as kept in its queue's waiting list.
fn waiting_of(q: &Queue, id: &Arc<str>, rec: &Contact, expiry: Option<(Millis, u64)>) -> Waiting {
    Waiting {
        contact: id.clone(),
        arrived: rec.arrived,
        priority: q.priority + rec.priority,
        language: rec.language.clone(),
        declined: rec.declined.clone(),
        funding: rec.funding.clone(),
        expiry,
    }
}

/// Checks an id the API receives (contact, operator, session): non-empty, at most 128 bytes, no
/// control characters. The one rule, used by the engine and by the server before it quotes an id.
pub fn validate_id(field: &'static str, s: &str) -> Result<(), RoutingError> {
    if s.is_empty() {
        return Err(RoutingError::invalid(field, "must not be empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(RoutingError::invalid(field, format!("longer than {MAX_ID_LEN} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(RoutingError::invalid(field, "contains control characters"));
    }
    Ok(())
}

impl Engine {
    /// Builds an engine from a validated configuration.
    pub fn new(cfg: &EngineConfig, gate: Arc<dyn BudgetGate>) -> Result<Engine, ConfigError> {
        cfg.validate()?;
        let queue_by_name: HashMap<String, u32> =
            cfg.queues.iter().enumerate().map(|(i, q)| (q.name.clone(), i as u32)).collect();
        let queues = cfg
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let overflow = q.overflow.iter().filter_map(|n| queue_by_name.get(n).copied()).collect();
                Queue::new(i as u32, q, overflow)
            })
            .collect();
        let groups = cfg
            .groups
            .iter()
            .map(|g| {
                (g.name.clone(), Group { name: Arc::from(g.name.as_str()), budget: g.budget.as_deref().map(Arc::from) })
            })
            .collect();
        let slots = (0..cfg.max_operators).map(|_| Slot::default()).collect();
        Ok(Engine {
            queues,
            queue_by_name,
            groups,
            slots,
            next_slot: AtomicU32::new(0),
            logged_out: Mutex::new(VecDeque::new()),
            operator_ids: Map::default(),
            contacts: Map::default(),
            finished: RwLock::new(FinishedGens { current: Map::default(), previous: Map::default() }),
            last_rotation: AtomicU64::new(0),
            retention_ms: cfg.finished_retention_ms,
            staff_grace_until: AtomicU64::new(0),
            seq: AtomicU64::new(1),
            gate,
        })
    }

    /// Queue names, in configuration order.
    pub fn queue_names(&self) -> impl Iterator<Item = &str> {
        self.queues.iter().map(|q| &*q.name)
    }

    /// Contacts currently live (arriving, queued, offered or in service).
    #[must_use]
    pub fn live_contacts(&self) -> usize {
        self.contacts.len()
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn queue_idx(&self, name: &str) -> Result<u32, RoutingError> {
        self.queue_by_name.get(name).copied().ok_or_else(|| RoutingError::UnknownQueue(crate::error::clip(name)))
    }

    fn slot(&self, idx: u32) -> &Slot {
        &self.slots[idx as usize]
    }

    fn status_event(&self, session: &Session, t: Option<Transition>, out: &mut Vec<Event>) {
        if let Some(t) = t {
            if t.from != t.to {
                out.push(Event::OperatorStatus {
                    operator: session.id.clone(),
                    group: session.group.clone(),
                    from: t.from,
                    to: t.to,
                });
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Contacts
    // ----------------------------------------------------------------------------------------

    /// Routes a new contact and returns its decision. Idempotent on the contact id: repeating an
    /// offer returns the current decision and routes nothing twice.
    pub fn offer(&self, req: &OfferRequest, now: Millis, out: &mut Vec<Event>) -> Result<Decision, RoutingError> {
        validate_id("contact_id", &req.contact_id)?;
        if req.priority > MAX_PRIORITY {
            return Err(RoutingError::invalid("priority", format!("{} is above {MAX_PRIORITY}", req.priority)));
        }
        if req.language.len() > 64 {
            return Err(RoutingError::invalid("language", "longer than 64 bytes"));
        }
        if req.max_patience_ms > crate::config::MAX_DURATION_MS {
            return Err(RoutingError::invalid("max_patience_ms", "above one day"));
        }
        let q0 = self.queue_idx(&req.queue)?;
        let id: Arc<str> = Arc::from(req.contact_id.as_str());
        match self.contacts.entry(id.clone()) {
            Entry::Occupied(e) => {
                let state = e.get().state;
                let qi = e.get().queue;
                drop(e);
                return self.current_decision(&id, qi, state, now);
            }
            Entry::Vacant(v) => {
                if let Some(f) = self.finished_get(&id) {
                    drop(v);
                    return match f.diverted {
                        Some((reason, fallback)) => Ok(Decision::Diverted {
                            reason,
                            fallback,
                            queue: self.queues[f.queue as usize].name.clone(),
                        }),
                        None => Err(RoutingError::ContactFinished(req.contact_id.clone())),
                    };
                }
                let arrived = req.arrived.map_or(now, |a| a.min(now));
                v.insert(Contact {
                    queue: q0,
                    channel: req.channel,
                    priority: req.priority,
                    segment: req.segment,
                    language: Arc::from(req.language.as_str()),
                    arrived,
                    entered: arrived,
                    patience_ms: req.max_patience_ms,
                    funding: None,
                    declined: Vec::new(),
                    state: CState::Arriving,
                });
            }
        }
        let q = &self.queues[q0 as usize];
        let mut chain = Vec::with_capacity(1 + q.overflow.len());
        chain.push(q0);
        chain.extend_from_slice(&q.overflow);
        // The decision is the one made during this call: queued at placement, or assigned by this
        // call's dispatch. What happens afterwards (maybe at once, on another thread) is an event.
        match self.place(&id, &chain, now, out, true) {
            Ok((_, d @ Decision::Assigned { .. })) => Ok(d),
            Ok((qi, queued)) => match self.dispatch_contact(qi, &id, now, out) {
                Some(assigned) => Ok(assigned),
                // Taken at once by an operator this call freed (see `place`): report the offer.
                None => match self.contacts.get(&id).map(|r| r.state) {
                    Some(CState::Offered { slot, deadline, .. }) => Ok(Decision::Assigned {
                        operator: self.operator_name(slot),
                        queue: self.queues[qi as usize].name.clone(),
                        deadline: deadline.0,
                    }),
                    _ => Ok(queued),
                },
            },
            Err((reason, qi)) => Ok(self.divert_arriving(&id, qi, reason, now, out)),
        }
    }

    /// Remembers a contact that ended in an earlier life of this node (read back from the
    /// ledger at start-up) as one that ended in this life, for the retention window: offering it
    /// again answers as it did then (its diversion, or ALREADY_EXISTS), cancelling it answers its
    /// outcome. Its completion is not known here (no operator slot): CompleteContact of it is
    /// UnknownContact, which the server answers from the ledger. Ignored for a contact this
    /// life knows.
    pub fn remember_ended(
        &self,
        contact_id: &str,
        queue: &str,
        outcome: Outcome,
        diverted: Option<(DivertReason, Fallback)>,
    ) {
        let Ok(qi) = self.queue_idx(queue) else { return };
        let id: Arc<str> = Arc::from(contact_id);
        if self.contacts.contains_key(&id) || self.finished_get(contact_id).is_some() {
            return;
        }
        let f = Finished { outcome, queue: qi, diverted, completed_by: None, completion: None };
        self.finished.read().current.insert(id, f);
    }

    /// Until `until`, queues with nobody logged in queue their contacts instead of diverting
    /// them NO_OPERATORS (a node that just took over waits for its desks to log in again).
    pub fn set_staff_grace(&self, until: Millis) {
        self.staff_grace_until.store(until.0, Ordering::Relaxed);
    }

    /// The decision a contact currently stands at.
    fn current_decision(&self, id: &Arc<str>, qi: u32, state: CState, now: Millis) -> Result<Decision, RoutingError> {
        let q = &self.queues[qi as usize];
        match state {
            CState::Arriving => Err(RoutingError::Busy(id.to_string())),
            CState::Queued { rank } => {
                let st = q.state.lock();
                let ch = self.contacts.get(id).map(|r| r.channel);
                let position = ch.map_or(1, |ch| st.position(ch, &rank)).max(1);
                Ok(Decision::Queued {
                    queue: q.name.clone(),
                    position,
                    estimated_wait_ms: q.estimated_wait(&st, position, now),
                })
            }
            CState::Offered { slot, deadline, .. } => Ok(Decision::Assigned {
                operator: self.operator_name(slot),
                queue: q.name.clone(),
                deadline: deadline.0,
            }),
            CState::InService { slot, .. } => {
                Ok(Decision::Assigned { operator: self.operator_name(slot), queue: q.name.clone(), deadline: now })
            }
            CState::Done => match self.finished_get(id) {
                Some(Finished { diverted: Some((reason, fallback)), queue, .. }) => {
                    Ok(Decision::Diverted { reason, fallback, queue: self.queues[queue as usize].name.clone() })
                }
                _ => Err(RoutingError::ContactFinished(id.to_string())),
            },
        }
    }

    fn operator_name(&self, slot: u32) -> Arc<str> {
        self.slot(slot).session.lock().as_ref().map_or_else(|| Arc::from(""), |s| s.id.clone())
    }

    /// Puts an `Arriving` contact in the first queue of `chain` that will take it. On refusal,
    /// returns the reason of the last queue that had operators (extra budget, full), or if none
    /// had, of the last queue of the chain. For a new `arrival`, a closed first queue is final.
    fn place(
        &self,
        id: &Arc<str>,
        chain: &[u32],
        now: Millis,
        out: &mut Vec<Event>,
        arrival: bool,
    ) -> Result<(u32, Decision), (DivertReason, u32)> {
        let mut staffed = false;
        let mut last = (DivertReason::NoOperators, chain.first().copied().unwrap_or(0));
        let Some((channel, priority, segment, funded)) =
            self.contacts.get(id).map(|r| (r.channel, r.priority, r.segment, r.funding.is_some()))
        else {
            return Err(last);
        };
        for (i, &qi) in chain.iter().enumerate() {
            let q = &self.queues[qi as usize];
            if !q.open.load(Ordering::Acquire) {
                if !staffed {
                    last = (DivertReason::Closed, qi);
                }
                // A closed line is closed: its callers get its fallback, not another line.
                // A closed queue further down a chain is just skipped.
                if i == 0 && arrival {
                    return Err(last);
                }
                continue;
            }
            if q.candidates.read().is_empty() && now.0 >= self.staff_grace_until.load(Ordering::Relaxed) {
                if !staffed {
                    last = (DivertReason::NoOperators, qi);
                }
                continue;
            }
            let mut reserved = None;
            if let (false, Some(b)) = (funded, &q.budget) {
                let req = FundingRequest {
                    budget: b,
                    contact_id: id,
                    queue: &q.name,
                    channel,
                    priority: q.priority + priority,
                    segment,
                    now,
                };
                let other_payer = || q.candidates.read().iter().any(|c| c.session.budget != q.budget);
                if self.gate.reserve(&req) {
                    reserved = Some(b.clone());
                } else if !other_payer() {
                    last = (DivertReason::ExtraBudget, qi);
                    staffed = true;
                    continue;
                }
            }
            let mut st = q.state.lock();
            if st.len() >= st.params.max_length as usize {
                drop(st);
                if let Some(b) = reserved {
                    self.gate.release(&b, id);
                }
                last = (DivertReason::QueueFull, qi);
                staffed = true;
                continue;
            }
            let Some(mut rec) = self.contacts.get_mut(id) else {
                drop(st);
                if let Some(b) = reserved {
                    self.gate.release(&b, id);
                }
                return Err(last);
            };
            debug_assert_eq!(rec.state, CState::Arriving);
            rec.queue = qi;
            rec.entered = now;
            if reserved.is_some() {
                rec.funding = reserved;
            }
            // Fast path: the contact is not published yet, so nobody else can take it; if an
            // operator can be claimed now, offer directly. Otherwise publish, then look (dispatch).
            let mut revisit = None;
            if arrival {
                match self.offer_unpublished(q, &mut st, &mut rec, id, now, out) {
                    Ok(d) => return Ok((qi, d)),
                    Err(slot) => revisit = slot,
                }
            }
            let position = self.enqueue_locked(q, &mut st, id, &mut rec, false, now);
            drop(rec);
            let estimated_wait_ms = q.estimated_wait(&st, position, now);
            drop(st);
            if let Some(slot) = revisit {
                self.find_work(slot, now, out);
            }
            out.push(Event::Queued { contact: id.clone(), queue: q.name.clone(), position });
            return Ok((qi, Decision::Queued { queue: q.name.clone(), position, estimated_wait_ms }));
        }
        Err(last)
    }

    /// The arrival fast path: claims a free operator for a contact that is in no waiting list
    /// yet and offers it directly. `None` when no operator could be claimed and funded; the
    /// caller then publishes the contact in its queue.
    fn offer_unpublished(
        &self,
        q: &Queue,
        st: &mut State,
        rec: &mut Contact,
        id: &Arc<str>,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Decision, Option<u32>> {
        let view = waiting_of(q, id, rec, None);
        let c = self.pick_operator(q, &view, rec.channel, now, &[], &[]).ok_or(None)?;
        if !self.slot(c.slot).try_claim(c.gen, rec.channel) {
            return Err(None);
        }
        let Ok(new_funding) = self.fund_for(q, id, rec, &c.session, now) else {
            // Released; the caller must look for work for this operator once the queue lock is
            // dropped, since a contact may have seen them busy meanwhile.
            self.slot(c.slot).release(c.gen, rec.channel, now);
            return Err(Some(c.slot));
        };
        let deadline = self.offer_locked(q, st, rec, id, &c.session, c.slot, new_funding, now, out);
        Ok(Decision::Assigned { operator: c.session.id.clone(), queue: q.name.clone(), deadline })
    }

    /// Inserts the contact of `rec` in `q` (whose lock is held); returns its position.
    fn enqueue_locked(
        &self,
        q: &Queue,
        st: &mut State,
        id: &Arc<str>,
        rec: &mut Contact,
        head: bool,
        now: Millis,
    ) -> u32 {
        let seq = self.next_seq();
        let rank = q.rank(head, rec.arrived, q.priority + rec.priority, seq);
        let by_wait = (st.params.max_wait_ms > 0).then(|| rec.entered.plus(st.params.max_wait_ms));
        let by_patience = (rec.patience_ms > 0).then(|| rec.arrived.plus(rec.patience_ms));
        let expiry = match (by_wait, by_patience) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|at| (at.max(now), seq));
        if let Some(e) = expiry {
            st.expiry.insert(e, (rec.channel, rank));
        }
        st.waiting[rec.channel.index()].insert(rank, waiting_of(q, id, rec, expiry));
        q.waiting.fetch_add(1, Ordering::Relaxed);
        rec.state = CState::Queued { rank };
        st.position(rec.channel, &rank)
    }

    fn divert_arriving(
        &self,
        id: &Arc<str>,
        qi: u32,
        reason: DivertReason,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Decision {
        let q = &self.queues[qi as usize];
        let fallback = q.state.lock().params.fallback;
        if let Some(mut rec) = self.contacts.get_mut(id) {
            rec.queue = qi;
            let channel = rec.channel;
            out.push(Event::Diverted { contact: id.clone(), queue: q.name.clone(), channel, reason, fallback });
            self.finish(&mut rec, id, Outcome::Diverted, Some((reason, fallback)), None, now, out);
        }
        self.remove_done(id);
        Decision::Diverted { reason, fallback, queue: q.name.clone() }
    }

    /// Marks a contact finished (under its map entry), releases its budget reservation unless
    /// `settled_by` names the operator whose budget settles it, and records the outcome.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        rec: &mut Contact,
        id: &Arc<str>,
        outcome: Outcome,
        diverted: Option<(DivertReason, Fallback)>,
        handled: Option<(u32, Completion, Millis)>,
        now: Millis,
        out: &mut Vec<Event>,
    ) {
        let q = &self.queues[rec.queue as usize];
        let waited_ms = match handled {
            Some((_, _, accepted_at)) => accepted_at.since(rec.arrived),
            None => now.since(rec.arrived),
        };
        if outcome == Outcome::Abandoned && waited_ms > q.sl_threshold_ms {
            q.abandoned_after_sl.fetch_add(1, Ordering::Relaxed);
        }
        let session = handled.and_then(|(slot, _, _)| self.slot(slot).session.lock().clone());
        let operator = session.as_ref().map(|s| s.id.clone());
        if let Some(b) = rec.funding.take() {
            let paid_by_budget = session.filter(|s| s.budget.as_ref() == Some(&b));
            match (paid_by_budget, handled) {
                (Some(s), Some((_, c, accepted_at))) => self.gate.settle(&Settlement {
                    budget: &b,
                    contact_id: id,
                    queue: &q.name,
                    group: &s.group,
                    operator: &s.id,
                    channel: rec.channel,
                    handle_ms: c.handle_ms,
                    accepted_at,
                    now,
                    outcome,
                }),
                _ => self.gate.release(&b, id),
            }
        }
        rec.state = CState::Done;
        self.finished.read().current.insert(
            id.clone(),
            Finished {
                outcome,
                queue: rec.queue,
                diverted,
                completed_by: handled.map(|h| h.0),
                completion: handled.map(|h| h.1),
            },
        );
        out.push(Event::Finished {
            contact: id.clone(),
            queue: q.name.clone(),
            channel: rec.channel,
            outcome,
            waited_ms,
            handle_ms: handled.map_or(0, |h| h.1.handle_ms),
            operator,
            wrap_up_ms: handled.map_or(0, |h| h.1.wrap_up_ms),
        });
    }

    fn remove_done(&self, id: &Arc<str>) {
        self.contacts.remove_if(id, |_, r| r.state == CState::Done);
    }

    fn finished_get(&self, id: &str) -> Option<Finished> {
        let f = self.finished.read();
        f.current.get(id).or_else(|| f.previous.get(id)).map(|r| r.value().clone())
    }

    /// Finds an operator for a queued contact, as long as one can be claimed.
    /// Returns the assignment if this call made one.
    fn dispatch_contact(&self, qi: u32, id: &Arc<str>, now: Millis, out: &mut Vec<Event>) -> Option<Decision> {
        let q = &self.queues[qi as usize];
        let mut excluded_budgets: Vec<Arc<str>> = Vec::new();
        let mut excluded_slots: Vec<u32> = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let (rank, ch, view) = {
                let rec = self.contacts.get(id)?;
                let CState::Queued { rank } = rec.state else { return None };
                if rec.queue != qi {
                    return None;
                }
                let view = waiting_of(q, id, &rec, None);
                (rank, rec.channel, view)
            };
            let c = self.pick_operator(q, &view, ch, now, &excluded_budgets, &excluded_slots)?;
            let slot = self.slot(c.slot);
            if !slot.try_claim(c.gen, ch) {
                excluded_slots.push(c.slot);
                continue;
            }
            match self.take(q, id, rank, &c.session, c.slot, now, out) {
                Ok(deadline) => {
                    return Some(Decision::Assigned { operator: c.session.id.clone(), queue: q.name.clone(), deadline })
                }
                Err(Missed::Unfunded(b)) => excluded_budgets.push(b),
                Err(Missed::Gone) => {}
            }
            slot.release(c.gen, ch, now);
            self.find_work(c.slot, now, out);
        }
        None
    }

    /// The best operator able to take `w` now, by the queue's strategy; does not claim.
    fn pick_operator(
        &self,
        q: &Queue,
        w: &Waiting,
        ch: Channel,
        now: Millis,
        excluded_budgets: &[Arc<str>],
        excluded_slots: &[u32],
    ) -> Option<Candidate> {
        if q.strategy == Strategy::LongestIdle {
            return self.pick_longest_idle(q, w, ch, now, excluded_budgets, excluded_slots);
        }
        let cands = q.candidates.read();
        let n = cands.len();
        if n == 0 {
            return None;
        }
        let rr = q.rr_cursor.load(Ordering::Relaxed) % n;
        let mut best: Option<((u8, u64, u64), usize)> = None;
        for (i, c) in cands.iter().enumerate() {
            if excluded_slots.contains(&c.slot) || !q.eligible(w, c.margin, &c.session, c.slot, now) {
                continue;
            }
            let slot = self.slot(c.slot);
            let word = slot.word();
            if word.generation() != c.gen || !slot.can_take(word, ch) {
                continue;
            }
            if refused_here(&c.session.budget, &w.funding, excluded_budgets) {
                continue;
            }
            let tier = u8::from(q.prefer_unbudgeted && c.session.budget.is_some());
            let idle = slot.free_since();
            let key = match q.strategy {
                Strategy::LongestIdle => (tier, idle, u64::from(c.slot)),
                Strategy::MostSkilled => (tier, (10 - i64::from(c.margin)).max(0) as u64, idle),
                Strategy::RoundRobin => (tier, ((i + n - rr) % n) as u64, 0),
                Strategy::LeastOccupied => {
                    (tier, u64::from(word.total_load()) * 1000 / u64::from(word.total_cap().max(1)), idle)
                }
            };
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, i));
            }
        }
        let (_, i) = best?;
        if q.strategy == Strategy::RoundRobin {
            q.rr_cursor.store(i + 1, Ordering::Relaxed);
        }
        Some(cands[i].clone())
    }

    /// Longest-idle selection through the queue's free-operator index: the first entry that is
    /// still valid and can take `w` wins. Entries of operators who are busy, paused, logged out
    /// or freed again since (a newer entry exists) are dropped on the way.
    fn pick_longest_idle(
        &self,
        q: &Queue,
        w: &Waiting,
        ch: Channel,
        now: Millis,
        excluded_budgets: &[Arc<str>],
        excluded_slots: &[u32],
    ) -> Option<Candidate> {
        let mut idle = q.idle.lock();
        let mut stale: Vec<crate::queue::IdleKey> = Vec::new();
        let mut found = None;
        for (key, c) in idle.iter() {
            let slot = self.slot(c.slot);
            let word = slot.word();
            if word.generation() != c.gen || slot.free_since() != key.1 || !Self::may_work(word) {
                stale.push(*key);
                continue;
            }
            if excluded_slots.contains(&c.slot)
                || !slot.can_take(word, ch)
                || !q.eligible(w, c.margin, &c.session, c.slot, now)
            {
                continue;
            }
            if refused_here(&c.session.budget, &w.funding, excluded_budgets) {
                continue;
            }
            found = Some(c.clone());
            break;
        }
        for k in stale {
            idle.remove(&k);
        }
        found
    }

    /// Whether an operator word may take work now or later without anyone else acting: available
    /// or in wrap-up, with room on some channel.
    fn may_work(word: crate::operator::Word) -> bool {
        matches!(word.status(), OperatorStatus::Available | OperatorStatus::WrapUp)
            && Channel::ALL.iter().any(|c| word.has_room(*c))
    }

    /// Enters a free operator in the free-operator index of each longest-idle queue it serves.
    fn mark_free(&self, slot_idx: u32) {
        let slot = self.slot(slot_idx);
        let Some(session) = slot.session.lock().clone() else { return };
        let word = slot.word();
        if word.generation() != session.gen || !Self::may_work(word) {
            return;
        }
        let since = slot.free_since();
        for &(qi, margin) in &session.queues {
            let q = &self.queues[qi as usize];
            if q.strategy != Strategy::LongestIdle {
                continue;
            }
            let tier = u8::from(q.prefer_unbudgeted && session.budget.is_some());
            q.idle.lock().insert(
                (tier, since, slot_idx, session.gen),
                Candidate { slot: slot_idx, gen: session.gen, margin, session: session.clone() },
            );
        }
    }

    /// Turns a claimed operator and a waiting contact into an offer, if the contact is still
    /// waiting with rank `rank`. The operator's capacity must already be claimed.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &self,
        q: &Queue,
        id: &Arc<str>,
        rank: RankKey,
        session: &Arc<Session>,
        slot: u32,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Millis, Missed> {
        let mut st = q.state.lock();
        let Some(mut rec) = self.contacts.get_mut(id) else { return Err(Missed::Gone) };
        match rec.state {
            CState::Queued { rank: r } if r == rank && rec.queue == q.idx => {}
            _ => return Err(Missed::Gone),
        }
        let ch = rec.channel;
        // Funding by the operator's budget is asked here, under the queue lock with the contact
        // still waiting, so two operators racing for one contact never both hold a reservation.
        let new_funding = self.fund_for(q, id, &rec, session, now)?;
        let Some(w) = st.waiting[ch.index()].remove(&rank) else {
            debug_assert!(false, "queued contact missing from its queue");
            if let Some(b) = new_funding {
                self.gate.release(&b, id);
            }
            return Err(Missed::Gone);
        };
        if let Some(e) = w.expiry {
            st.expiry.remove(&e);
        }
        q.waiting.fetch_sub(1, Ordering::Relaxed);
        Ok(self.offer_locked(q, &mut st, &mut rec, id, session, slot, new_funding, now, out))
    }

    /// Asks the operator's budget to fund the contact, if it is not funded by it already.
    fn fund_for(
        &self,
        q: &Queue,
        id: &Arc<str>,
        rec: &Contact,
        session: &Session,
        now: Millis,
    ) -> Result<Option<Arc<str>>, Missed> {
        let Some(b) = &session.budget else { return Ok(None) };
        if rec.funding.as_ref() == Some(b) {
            return Ok(None);
        }
        let req = FundingRequest {
            budget: b,
            contact_id: id,
            queue: &q.name,
            channel: rec.channel,
            priority: q.priority + rec.priority,
            segment: rec.segment,
            now,
        };
        if self.gate.reserve(&req) {
            Ok(Some(b.clone()))
        } else {
            Err(Missed::Unfunded(b.clone()))
        }
    }

    /// Makes the contact of `rec` (not in any waiting list, queue lock held) an offer to the
    /// claimed operator `slot`; returns the accept deadline.
    #[allow(clippy::too_many_arguments)]
    fn offer_locked(
        &self,
        q: &Queue,
        st: &mut State,
        rec: &mut Contact,
        id: &Arc<str>,
        session: &Session,
        slot: u32,
        new_funding: Option<Arc<str>>,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Millis {
        if let Some(b) = new_funding {
            if let Some(old) = rec.funding.replace(b) {
                self.gate.release(&old, id);
            }
        }
        let deadline = (now.plus(st.params.offer_timeout_ms), self.next_seq());
        st.offered.insert(deadline, id.clone());
        q.offered.fetch_add(1, Ordering::Relaxed);
        rec.state = CState::Offered { slot, gen: session.gen, deadline };
        self.slot(slot).held.lock().contacts.push(id.clone());
        out.push(Event::Offered {
            contact: id.clone(),
            queue: q.name.clone(),
            operator: session.id.clone(),
            channel: rec.channel,
            priority: q.priority + rec.priority,
            segment: rec.segment,
            language: rec.language.clone(),
            deadline: deadline.0,
            waited_ms: now.since(rec.arrived),
        });
        deadline.0
    }

    /// Gives a free operator the best waiting contacts it can take, across its queues, until its
    /// capacity is used or nothing eligible waits.
    fn find_work(&self, slot_idx: u32, now: Millis, out: &mut Vec<Event>) {
        self.find_work_inner(slot_idx, now, out);
        // Whatever capacity is left is now visible to arriving contacts.
        self.mark_free(slot_idx);
    }

    fn find_work_inner(&self, slot_idx: u32, now: Millis, out: &mut Vec<Event>) {
        let slot = self.slot(slot_idx);
        let Some(session) = slot.session.lock().clone() else { return };
        let mut excluded_budgets: Vec<Arc<str>> = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let word = slot.word();
            if word.generation() != session.gen {
                return;
            }
            let channels: Vec<Channel> = Channel::ALL.into_iter().filter(|c| slot.can_take(word, *c)).collect();
            if channels.is_empty() {
                return;
            }
            let mut best: Option<Pick> = None;
            for &(qi, margin) in &session.queues {
                let q = &self.queues[qi as usize];
                if q.waiting.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let st = q.state.lock();
                for &ch in &channels {
                    for (rank, w) in st.waiting[ch.index()].iter().take(SCAN_LIMIT) {
                        if !q.eligible(w, margin, &session, slot_idx, now) {
                            continue;
                        }
                        if refused_here(&session.budget, &w.funding, &excluded_budgets) {
                            continue;
                        }
                        let eff = q.effective_priority(rank, w, now);
                        let wait = now.since(w.arrived);
                        if best.as_ref().is_none_or(|b| (eff, wait) > (b.eff, b.wait)) {
                            best = Some(Pick { eff, wait, qi, rank: *rank, ch, contact: w.contact.clone() });
                        }
                        break;
                    }
                }
            }
            let Some(Pick { qi, rank, ch, contact, .. }) = best else { return };
            if !slot.try_claim(session.gen, ch) {
                continue;
            }
            let q = &self.queues[qi as usize];
            match self.take(q, &contact, rank, &session, slot_idx, now, out) {
                Ok(_) => {}
                Err(missed) => {
                    if let Missed::Unfunded(b) = missed {
                        excluded_budgets.push(b);
                    }
                    slot.release(session.gen, ch, now);
                }
            }
        }
    }

    /// The caller hung up (or the platform gave up). Returns the contact's final outcome;
    /// idempotent.
    pub fn cancel(&self, contact_id: &str, now: Millis, out: &mut Vec<Event>) -> Result<Outcome, RoutingError> {
        validate_id("contact_id", contact_id)?;
        for _ in 0..MAX_ATTEMPTS {
            let Some((id, qi, state)) = self.contacts.get(contact_id).map(|r| (r.key().clone(), r.queue, r.state))
            else {
                return self
                    .finished_get(contact_id)
                    .map(|f| f.outcome)
                    .ok_or_else(|| RoutingError::UnknownContact(contact_id.to_owned()));
            };
            let q = &self.queues[qi as usize];
            match state {
                CState::Arriving => return Err(RoutingError::Busy(contact_id.to_owned())),
                CState::Done => continue,
                CState::Queued { .. } | CState::Offered { .. } => {
                    let mut st = q.state.lock();
                    let Some(mut rec) = self.contacts.get_mut(&id) else { continue };
                    if rec.state != state || rec.queue != qi {
                        continue;
                    }
                    let mut freed = None;
                    match state {
                        CState::Queued { rank } => {
                            if let Some(w) = st.waiting[rec.channel.index()].remove(&rank) {
                                if let Some(e) = w.expiry {
                                    st.expiry.remove(&e);
                                }
                                q.waiting.fetch_sub(1, Ordering::Relaxed);
                            }
                        }
                        CState::Offered { slot, gen, deadline } => {
                            st.offered.remove(&deadline);
                            q.offered.fetch_sub(1, Ordering::Relaxed);
                            self.drop_held(slot, &id);
                            self.slot(slot).release(gen, rec.channel, now);
                            freed = Some(slot);
                        }
                        _ => {}
                    }
                    self.finish(&mut rec, &id, Outcome::Abandoned, None, None, now, out);
                    drop(rec);
                    drop(st);
                    self.remove_done(&id);
                    if let Some(slot) = freed {
                        self.find_work(slot, now, out);
                    }
                    return Ok(Outcome::Abandoned);
                }
                CState::InService { slot, gen, accepted_at } => {
                    let Some(mut rec) = self.contacts.get_mut(&id) else { continue };
                    if rec.state != state {
                        continue;
                    }
                    let completion = Completion { handle_ms: now.since(accepted_at), wrap_up_ms: 0 };
                    q.in_service.fetch_sub(1, Ordering::Relaxed);
                    self.drop_held(slot, &id);
                    self.slot(slot).release(gen, rec.channel, now);
                    self.finish(
                        &mut rec,
                        &id,
                        Outcome::CancelledInService,
                        None,
                        Some((slot, completion, accepted_at)),
                        now,
                        out,
                    );
                    drop(rec);
                    self.remove_done(&id);
                    self.find_work(slot, now, out);
                    return Ok(Outcome::CancelledInService);
                }
            }
        }
        Err(RoutingError::Busy(contact_id.to_owned()))
    }

    fn drop_held(&self, slot: u32, id: &Arc<str>) {
        self.slot(slot).held.lock().contacts.retain(|c| c != id);
    }

    // ----------------------------------------------------------------------------------------
    // Operators
    // ----------------------------------------------------------------------------------------

    /// The slot of operator `id`, allocating one on first login, with its owner lock held. Retries
    /// when the slot found in the map was reclaimed for another id in between.
    fn owned_slot(&self, id: &Arc<str>) -> Result<(u32, OwnerGuard<'_>), RoutingError> {
        loop {
            let known = self.operator_ids.get(&**id).map(|r| *r.value());
            let idx = match known {
                Some(i) => i,
                None => {
                    let fresh = self.allocate_slot(id)?;
                    let existing = match self.operator_ids.entry(id.clone()) {
                        Entry::Vacant(v) => {
                            v.insert(fresh);
                            None
                        }
                        Entry::Occupied(e) => Some(*e.get()),
                    };
                    if let Some(i) = existing {
                        // A concurrent first login of the same id won: give the slot back.
                        *self.slot(fresh).owner.lock() = None;
                        self.logged_out.lock().push_front(fresh);
                        i
                    } else {
                        fresh
                    }
                }
            };
            let owner = self.slot(idx).owner.lock();
            if owner.as_deref() == Some(&**id) {
                return Ok((idx, owner));
            }
        }
    }

    /// A slot for a new operator id: a never-used one while there are, then the one whose
    /// operator logged out longest ago (its id is forgotten: it gets a slot again at its next
    /// login). `OperatorCapacity` when every slot holds a logged-in operator.
    fn allocate_slot(&self, id: &Arc<str>) -> Result<u32, RoutingError> {
        let idx = self.next_slot.fetch_add(1, Ordering::Relaxed);
        if (idx as usize) < self.slots.len() {
            *self.slot(idx).owner.lock() = Some(id.clone());
            return Ok(idx);
        }
        self.next_slot.fetch_sub(1, Ordering::Relaxed);
        loop {
            let Some(idx) = self.logged_out.lock().pop_front() else {
                return Err(RoutingError::OperatorCapacity(self.slots.len() as u32));
            };
            let slot = self.slot(idx);
            let mut owner = slot.owner.lock();
            let w = slot.word();
            // Logged in again since (its logout is queued again when it ends), or still holding
            // a contact: not free.
            if w.status() != OperatorStatus::LoggedOut || w.total_load() != 0 || !slot.held.lock().contacts.is_empty() {
                continue;
            }
            if let Some(old) = owner.replace(id.clone()) {
                self.operator_ids.remove_if(&*old, |_, v| *v == idx);
            }
            return Ok(idx);
        }
    }

    fn logged_in(&self, operator_id: &str) -> Result<(u32, Arc<Session>), RoutingError> {
        validate_id("operator_id", operator_id)?;
        let idx = self
            .operator_ids
            .get(operator_id)
            .map(|r| *r.value())
            .ok_or_else(|| RoutingError::UnknownOperator(operator_id.to_owned()))?;
        let slot = self.slot(idx);
        let session =
            slot.session.lock().clone().ok_or_else(|| RoutingError::UnknownOperator(operator_id.to_owned()))?;
        let w = slot.word();
        // `*session.id != *operator_id`: the slot was reclaimed for another id after this one
        // logged out, between the map lookup and here.
        if w.status() == OperatorStatus::LoggedOut || w.generation() != session.gen || *session.id != *operator_id {
            return Err(RoutingError::UnknownOperator(operator_id.to_owned()));
        }
        Ok((idx, session))
    }

    /// Logs an operator in; returns the queues they can serve. Idempotent for the same session id.
    pub fn login(&self, req: &LoginRequest, now: Millis, out: &mut Vec<Event>) -> Result<Vec<Arc<str>>, RoutingError> {
        validate_id("operator_id", &req.operator_id)?;
        validate_id("session_id", &req.session_id)?;
        let group =
            self.groups.get(&req.group).ok_or_else(|| RoutingError::UnknownGroup(crate::error::clip(&req.group)))?;
        let mut skills: Vec<(String, u8)> = Vec::with_capacity(req.skills.len());
        for s in &req.skills {
            if !crate::config::valid_name(&s.name) {
                return Err(RoutingError::invalid(
                    "skills.name",
                    format!("`{}` is not a valid skill name", crate::error::clip(&s.name)),
                ));
            }
            if !(1..=10).contains(&s.level) {
                return Err(RoutingError::invalid(
                    "skills.level",
                    format!("level {} of `{}` is not 1..=10", s.level, s.name),
                ));
            }
            if skills.iter().any(|(n, _)| *n == s.name) {
                return Err(RoutingError::invalid("skills", format!("skill `{}` given twice", s.name)));
            }
            skills.push((s.name.clone(), s.level));
        }
        let mut caps = [0u8; 4];
        if req.channels.is_empty() {
            caps[Channel::Voice.index()] = 1;
        }
        for (ch, n) in &req.channels {
            if *n == 0 || *n > ch.max_capacity() {
                return Err(RoutingError::invalid(
                    "channels.max_concurrent",
                    format!("{} for {} is not 1..={}", n, ch.as_str(), ch.max_capacity()),
                ));
            }
            if caps[ch.index()] != 0 {
                return Err(RoutingError::invalid("channels", format!("{} given twice", ch.as_str())));
            }
            caps[ch.index()] = *n;
        }
        let id: Arc<str> = Arc::from(req.operator_id.as_str());
        skills.sort_unstable();
        let queues: Vec<(u32, i8)> =
            self.queues.iter().filter_map(|q| q.margin_for(&skills).map(|m| (q.idx, m))).collect();
        let names: Vec<Arc<str>> = queues.iter().map(|(q, _)| self.queues[*q as usize].name.clone()).collect();
        // The slot's owner lock is held until the session is visible: a reclaim (see
        // `allocate_slot`) cannot hand the slot to another id meanwhile.
        let (idx, owner) = self.owned_slot(&id)?;
        let slot = self.slot(idx);
        let Some(gen) = slot.start_session(caps, now) else {
            let current = slot.session.lock().clone();
            let logged_out = slot.word().status() == OperatorStatus::LoggedOut;
            return match current {
                Some(s) if !logged_out && s.session_id == req.session_id => {
                    // A retry of the same login must ask for the same thing; a different group,
                    // skills or capacities under the same session would be answered with one
                    // set and routed with the other.
                    if *s.group != *group.name || s.skills != skills || s.caps != caps {
                        Err(RoutingError::WrongState(format!(
                            "operator `{}` is logged in with another group, skills or channels in this session: log out first",
                            req.operator_id
                        )))
                    } else {
                        Ok(names)
                    }
                }
                _ if logged_out => Err(RoutingError::Busy(req.operator_id.clone())),
                _ => Err(RoutingError::AlreadyLoggedIn(req.operator_id.clone())),
            };
        };
        // Paused before anyone can see the session, so no offer slips in first.
        let first = match &req.paused {
            Some(reason) => {
                slot.transition(gen, &[OperatorStatus::Available], OperatorStatus::Paused, None, now);
                *slot.pause_reason.lock() = reason.clone();
                OperatorStatus::Paused
            }
            None => {
                slot.pause_reason.lock().clear();
                OperatorStatus::Available
            }
        };
        let session = Arc::new(Session {
            id: id.clone(),
            group: group.name.clone(),
            budget: group.budget.clone(),
            session_id: req.session_id.clone(),
            gen,
            queues: queues.clone(),
            skills,
            caps,
        });
        *slot.session.lock() = Some(session.clone());
        for (qi, margin) in &queues {
            let mut c = self.queues[*qi as usize].candidates.write();
            c.retain(|c| c.slot != idx);
            c.push(Candidate { slot: idx, gen, margin: *margin, session: session.clone() });
        }
        drop(owner);
        self.status_event(&session, Some(Transition { from: OperatorStatus::LoggedOut, to: first }), out);
        if first == OperatorStatus::Available {
            self.find_work(idx, now, out);
        }
        Ok(names)
    }

    /// Logs an operator out. Offers not yet accepted go back to their queues; contacts in
    /// service block the logout unless `force`, which ends them as cancelled in service.
    pub fn logout(
        &self,
        operator_id: &str,
        force: bool,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<(), RoutingError> {
        let (idx, session) = match self.logged_in(operator_id) {
            Ok(x) => x,
            Err(RoutingError::UnknownOperator(_)) if self.operator_ids.contains_key(operator_id) => return Ok(()),
            Err(e) => return Err(e),
        };
        let slot = self.slot(idx);
        let held: Vec<Arc<str>> = slot.held.lock().contacts.clone();
        if !force {
            let in_service = held.iter().any(|c| {
                self.contacts.get(c).is_some_and(|r| matches!(r.state, CState::InService { slot, .. } if slot == idx))
            });
            if in_service {
                return Err(RoutingError::WrongState(format!(
                    "operator `{operator_id}` has contacts in service: complete them or force the logout"
                )));
            }
        }
        let t = slot.transition(
            session.gen,
            &[OperatorStatus::Available, OperatorStatus::Paused, OperatorStatus::WrapUp],
            OperatorStatus::LoggedOut,
            None,
            now,
        );
        self.status_event(&session, t, out);
        for (qi, _) in &session.queues {
            self.queues[*qi as usize].candidates.write().retain(|c| c.slot != idx);
        }
        self.logged_out.lock().push_back(idx);
        for c in held {
            let Some((qi, state)) = self.contacts.get(&c).map(|r| (r.queue, r.state)) else { continue };
            match state {
                CState::Offered { slot: s, .. } if s == idx => {
                    self.return_offer(qi, &c, idx, false, now, out);
                }
                CState::InService { slot: s, .. } if s == idx => {
                    let _ = self.cancel(&c, now, out);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Pauses an operator or makes them available. Returns the status now visible (a wrap-up in
    /// progress stays until it ends).
    pub fn set_state(
        &self,
        operator_id: &str,
        state: &RequestedState,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<OperatorStatus, RoutingError> {
        let (idx, session) = self.logged_in(operator_id)?;
        let slot = self.slot(idx);
        match state {
            RequestedState::Available => {
                // Back from a pause taken during a wrap-up that is still running: the wrap-up
                // resumes (AVAILABLE never cuts a wrap-up short).
                let back_to = if slot.wrap_until() > now { OperatorStatus::WrapUp } else { OperatorStatus::Available };
                let t = slot.transition(session.gen, &[OperatorStatus::Paused], back_to, None, now);
                if t.is_none() && slot.word().status() == OperatorStatus::WrapUp && slot.wrap_until() <= now {
                    let t =
                        slot.transition(session.gen, &[OperatorStatus::WrapUp], OperatorStatus::Available, None, now);
                    self.status_event(&session, t, out);
                }
                if t.is_some() {
                    slot.pause_reason.lock().clear();
                }
                self.status_event(&session, t, out);
                self.find_work(idx, now, out);
            }
            RequestedState::Paused(reason) => {
                if reason.len() > 64 || reason.chars().any(char::is_control) {
                    return Err(RoutingError::invalid("reason", "at most 64 printable characters"));
                }
                let t = slot.transition(
                    session.gen,
                    &[OperatorStatus::Available, OperatorStatus::WrapUp, OperatorStatus::Paused],
                    OperatorStatus::Paused,
                    None,
                    now,
                );
                *slot.pause_reason.lock() = reason.clone();
                self.status_event(&session, t, out);
            }
        }
        Ok(slot.visible_status())
    }

    fn offered_to(&self, operator_id: &str, contact_id: &str) -> Result<OfferRef, RoutingError> {
        let (idx, session) = self.logged_in(operator_id)?;
        validate_id("contact_id", contact_id)?;
        let Some((id, qi, state)) = self.contacts.get(contact_id).map(|r| (r.key().clone(), r.queue, r.state)) else {
            return Err(if self.finished_get(contact_id).is_some() {
                RoutingError::WrongState(format!("contact `{contact_id}` has already finished"))
            } else {
                RoutingError::UnknownContact(contact_id.to_owned())
            });
        };
        Ok(OfferRef { idx, session, id, qi, state })
    }

    /// The operator accepts an offer. Idempotent.
    pub fn accept(
        &self,
        operator_id: &str,
        contact_id: &str,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<(), RoutingError> {
        let OfferRef { idx, session, id, qi, state } = self.offered_to(operator_id, contact_id)?;
        match state {
            CState::InService { slot, .. } if slot == idx => return Ok(()),
            CState::Offered { slot, .. } if slot == idx => {}
            _ => {
                return Err(RoutingError::WrongState(format!(
                    "contact `{contact_id}` is not offered to operator `{operator_id}`"
                )))
            }
        }
        let q = &self.queues[qi as usize];
        let mut st = q.state.lock();
        let Some(mut rec) = self.contacts.get_mut(&id) else {
            return Err(RoutingError::WrongState(format!("contact `{contact_id}` has already finished")));
        };
        let CState::Offered { slot, gen, deadline } = rec.state else {
            return Err(RoutingError::WrongState(format!("the offer of `{contact_id}` is no longer pending")));
        };
        if slot != idx || rec.queue != qi {
            return Err(RoutingError::WrongState(format!("the offer of `{contact_id}` is no longer pending")));
        }
        st.offered.remove(&deadline);
        q.offered.fetch_sub(1, Ordering::Relaxed);
        q.in_service.fetch_add(1, Ordering::Relaxed);
        let waited_ms = now.since(rec.arrived);
        q.record_accept(&mut st, waited_ms, now);
        rec.state = CState::InService { slot, gen, accepted_at: now };
        if let Some(b) = rec.funding.as_ref().filter(|b| session.budget.as_ref() == Some(*b)) {
            self.gate.started(&Started {
                budget: b,
                contact_id: &id,
                queue: &q.name,
                group: &session.group,
                operator: &session.id,
                channel: rec.channel,
                now,
            });
        }
        out.push(Event::Accepted {
            contact: id.clone(),
            queue: q.name.clone(),
            operator: session.id.clone(),
            channel: rec.channel,
            waited_ms,
        });
        Ok(())
    }

    /// The operator declines an offer: the contact returns to the head of its queue and will not
    /// be offered to this operator again.
    pub fn decline(
        &self,
        operator_id: &str,
        contact_id: &str,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<(), RoutingError> {
        let OfferRef { idx, id, qi, state, .. } = self.offered_to(operator_id, contact_id)?;
        match state {
            CState::Offered { slot, .. } if slot == idx => {}
            CState::Queued { .. } | CState::Arriving => {
                // Already returned (a repeated decline, or the offer timed out meanwhile).
                return Ok(());
            }
            _ => {
                return Err(RoutingError::WrongState(format!(
                    "contact `{contact_id}` is not offered to operator `{operator_id}`"
                )))
            }
        }
        if !self.return_offer(qi, &id, idx, true, now, out) {
            return Err(RoutingError::WrongState(format!("the offer of `{contact_id}` is no longer pending")));
        }
        Ok(())
    }

    /// Takes a pending offer back from operator `idx` and requeues the contact at the head.
    fn return_offer(
        &self,
        qi: u32,
        id: &Arc<str>,
        idx: u32,
        declined: bool,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> bool {
        let q = &self.queues[qi as usize];
        let operator = self.operator_name(idx);
        {
            let mut st = q.state.lock();
            let Some(mut rec) = self.contacts.get_mut(id) else { return false };
            let CState::Offered { slot, gen, deadline } = rec.state else { return false };
            if slot != idx || rec.queue != qi {
                return false;
            }
            st.offered.remove(&deadline);
            q.offered.fetch_sub(1, Ordering::Relaxed);
            self.drop_held(slot, id);
            self.slot(slot).release(gen, rec.channel, now);
            if declined {
                rec.declined.push(slot);
            }
            let position = self.enqueue_locked(q, &mut st, id, &mut rec, true, now);
            out.push(if declined {
                Event::OfferDeclined { contact: id.clone(), queue: q.name.clone(), operator }
            } else {
                Event::OfferTimedOut { contact: id.clone(), queue: q.name.clone(), operator }
            });
            out.push(Event::Queued { contact: id.clone(), queue: q.name.clone(), position });
        }
        self.dispatch_contact(qi, id, now, out);
        self.find_work(idx, now, out);
        true
    }

    /// The operator finishes a contact in service. Starts the wrap-up (`wrap_up_ms`, or the
    /// queue's when 0). Idempotent: a repeated completion returns the first one's figures.
    pub fn complete(
        &self,
        operator_id: &str,
        contact_id: &str,
        wrap_up_ms: u64,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Completion, RoutingError> {
        validate_id("operator_id", operator_id)?;
        validate_id("contact_id", contact_id)?;
        if wrap_up_ms > 3_600_000 {
            return Err(RoutingError::invalid("wrap_up_ms", "above one hour"));
        }
        let idx = self
            .operator_ids
            .get(operator_id)
            .map(|r| *r.value())
            .ok_or_else(|| RoutingError::UnknownOperator(operator_id.to_owned()))?;
        let already = || match self.finished_get(contact_id) {
            Some(f) if f.completed_by == Some(idx) && f.outcome == Outcome::Completed => {
                Ok(f.completion.unwrap_or(Completion { handle_ms: 0, wrap_up_ms: 0 }))
            }
            // Completed in an earlier life (see `remember_ended`): by whom, the ledger knows.
            Some(f) if f.completed_by.is_none() && f.outcome == Outcome::Completed => {
                Err(RoutingError::UnknownContact(contact_id.to_owned()))
            }
            Some(_) => Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` ended without being completed by `{operator_id}`"
            ))),
            None => Err(RoutingError::UnknownContact(contact_id.to_owned())),
        };
        // Read the queue's wrap-up before taking the contact's entry (lock order: queue first).
        let Some(qi) = self.contacts.get(contact_id).map(|r| r.queue) else { return already() };
        let queue_wrap = self.queues[qi as usize].state.lock().params.wrap_up_ms;
        let Some(mut rec) = self.contacts.get_mut(contact_id) else { return already() };
        let CState::InService { slot, gen, accepted_at } = rec.state else {
            return Err(RoutingError::WrongState(format!("contact `{contact_id}` is not in service")));
        };
        if slot != idx {
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` is in service with another operator"
            )));
        }
        let id = rec.key().clone();
        let q = &self.queues[rec.queue as usize];
        let wrap = if wrap_up_ms > 0 { wrap_up_ms } else { queue_wrap };
        let session = self.slot(slot).session.lock().clone();
        let operator_slot = self.slot(slot);
        // Wrap-up starts before capacity is released, so no offer slips in between. A completion
        // during a wrap-up extends it, never shortens it; a paused operator stays paused.
        let (t, wrap_applied) = if wrap > 0 {
            let until = match operator_slot.word().status() {
                OperatorStatus::WrapUp => operator_slot.wrap_until().max(now.plus(wrap)),
                _ => now.plus(wrap),
            };
            match operator_slot.transition(
                gen,
                &[OperatorStatus::Available, OperatorStatus::WrapUp],
                OperatorStatus::WrapUp,
                Some(until),
                now,
            ) {
                Some(t) => (Some(t), until.since(now)),
                None => (None, 0),
            }
        } else {
            (None, 0)
        };
        let completion = Completion { handle_ms: now.since(accepted_at), wrap_up_ms: wrap_applied };
        q.in_service.fetch_sub(1, Ordering::Relaxed);
        self.drop_held(slot, &id);
        operator_slot.release(gen, rec.channel, now);
        self.finish(&mut rec, &id, Outcome::Completed, None, Some((slot, completion, accepted_at)), now, out);
        drop(rec);
        self.remove_done(&id);
        if let Some(s) = &session {
            self.status_event(s, t, out);
        }
        self.find_work(slot, now, out);
        Ok(completion)
    }

    // ----------------------------------------------------------------------------------------
    // Time
    // ----------------------------------------------------------------------------------------

    /// Advances time: expires offers (contact back at the head, operator paused "no answer"),
    /// overflows or diverts contacts past their maximum wait, ends wrap-ups, and matches operators
    /// freed by all that or by skill expansion. Call it often (the server does every 100 ms).
    pub fn tick(&self, now: Millis, out: &mut Vec<Event>) {
        self.rotate_finished(now);
        let mut redispatch: Vec<(u32, Arc<str>)> = Vec::new();
        let mut moving: Vec<(u32, Arc<str>)> = Vec::new();
        for q in &self.queues {
            let mut st = q.state.lock();
            while let Some((&dkey, _)) = st.offered.first_key_value() {
                if dkey.0 > now {
                    break;
                }
                let Some((_, id)) = st.offered.pop_first() else { break };
                let Some(mut rec) = self.contacts.get_mut(&id) else { continue };
                let CState::Offered { slot, gen, deadline } = rec.state else { continue };
                if deadline != dkey {
                    continue;
                }
                q.offered.fetch_sub(1, Ordering::Relaxed);
                let operator_slot = self.slot(slot);
                // Pause first so the freed capacity cannot be offered to them again.
                let t = operator_slot.transition(
                    gen,
                    &[OperatorStatus::Available, OperatorStatus::WrapUp],
                    OperatorStatus::Paused,
                    None,
                    now,
                );
                if t.is_some() {
                    *operator_slot.pause_reason.lock() = "no answer".to_owned();
                }
                self.drop_held(slot, &id);
                operator_slot.release(gen, rec.channel, now);
                let session = operator_slot.session.lock().clone();
                if let Some(s) = &session {
                    self.status_event(s, t, out);
                }
                let position = self.enqueue_locked(q, &mut st, &id, &mut rec, true, now);
                out.push(Event::OfferTimedOut {
                    contact: id.clone(),
                    queue: q.name.clone(),
                    operator: session.map_or_else(|| Arc::from(""), |s| s.id.clone()),
                });
                out.push(Event::Queued { contact: id.clone(), queue: q.name.clone(), position });
                redispatch.push((q.idx, id));
            }
            while let Some((&ekey, _)) = st.expiry.first_key_value() {
                if ekey.0 > now {
                    break;
                }
                let Some((_, (ch, rank))) = st.expiry.pop_first() else { break };
                let Some(w) = st.waiting[ch.index()].remove(&rank) else { continue };
                q.waiting.fetch_sub(1, Ordering::Relaxed);
                if let Some(mut rec) = self.contacts.get_mut(&w.contact) {
                    rec.state = CState::Arriving;
                    moving.push((q.idx, w.contact));
                }
            }
        }
        for (from, id) in moving {
            self.overflow_or_divert(from, &id, now, out);
        }
        for (qi, id) in redispatch {
            self.dispatch_contact(qi, &id, now, out);
        }
        let n = (self.next_slot.load(Ordering::Relaxed) as usize).min(self.slots.len());
        for i in 0..n as u32 {
            let slot = self.slot(i);
            let w = slot.word();
            if w.status() == OperatorStatus::WrapUp && slot.wrap_until() <= now {
                let t =
                    slot.transition(w.generation(), &[OperatorStatus::WrapUp], OperatorStatus::Available, None, now);
                if let Some(s) = slot.session.lock().clone() {
                    self.status_event(&s, t, out);
                }
                self.mark_free(i);
            }
            if slot.visible_status() != OperatorStatus::Available {
                continue;
            }
            let has_room = Channel::ALL.iter().any(|c| slot.can_take(slot.word(), *c));
            let work_waits = slot.session.lock().as_ref().is_some_and(|s| {
                s.queues.iter().any(|(q, _)| self.queues[*q as usize].waiting.load(Ordering::Relaxed) > 0)
            });
            if has_room && work_waits {
                self.find_work(i, now, out);
            }
        }
    }

    fn overflow_or_divert(&self, from: u32, id: &Arc<str>, now: Millis, out: &mut Vec<Event>) {
        let q = &self.queues[from as usize];
        let chain = q.overflow.clone();
        match self.place(id, &chain, now, out, false) {
            Ok((to, _)) => {
                out.push(Event::Overflowed {
                    contact: id.clone(),
                    from: q.name.clone(),
                    to: self.queues[to as usize].name.clone(),
                });
                self.dispatch_contact(to, id, now, out);
            }
            Err(_) => {
                self.divert_arriving(id, from, DivertReason::MaxWait, now, out);
            }
        }
    }

    fn rotate_finished(&self, now: Millis) {
        let last = self.last_rotation.load(Ordering::Relaxed);
        if now.0 < last.saturating_add(self.retention_ms / 2) {
            return;
        }
        if self.last_rotation.compare_exchange(last, now.0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            let mut f = self.finished.write();
            let current = std::mem::take(&mut f.current);
            f.previous = current;
        }
    }

    // ----------------------------------------------------------------------------------------
    // Administration and observation
    // ----------------------------------------------------------------------------------------

    /// Opens or closes a queue for new contacts.
    pub fn set_queue_open(&self, queue: &str, open: bool) -> Result<(), RoutingError> {
        let qi = self.queue_idx(queue)?;
        self.queues[qi as usize].open.store(open, Ordering::Release);
        Ok(())
    }

    /// Changes a queue's run-time parameters; `None` keeps a value.
    pub fn update_queue(&self, queue: &str, update: &crate::snapshot::QueueUpdate) -> Result<(), RoutingError> {
        let qi = self.queue_idx(queue)?;
        crate::config::check_queue_bounds(
            update.max_length,
            update.max_wait_ms,
            update.wrap_up_ms,
            update.offer_timeout_ms,
        )
        .map_err(|(field, problem)| RoutingError::invalid(field, problem))?;
        let mut st = self.queues[qi as usize].state.lock();
        let p = &mut st.params;
        if let Some(v) = update.max_length {
            p.max_length = v;
        }
        if let Some(v) = update.max_wait_ms {
            p.max_wait_ms = v;
        }
        if let Some(v) = update.wrap_up_ms {
            p.wrap_up_ms = v;
        }
        if let Some(v) = update.offer_timeout_ms {
            p.offer_timeout_ms = v;
        }
        if let Some(v) = update.fallback {
            p.fallback = v;
        }
        Ok(())
    }

    /// Logged-in operators by activity — `idle` (available, nothing in hand), `busy` (available
    /// with contacts offered or in service), `paused`, `wrap_up` — without allocating (for metrics).
    #[must_use]
    pub fn operator_counts(&self) -> [(&'static str, u32); 4] {
        let mut counts = [("idle", 0), ("busy", 0), ("paused", 0), ("wrap_up", 0)];
        let n = (self.next_slot.load(Ordering::Relaxed) as usize).min(self.slots.len());
        for slot in &self.slots[..n] {
            let k = match slot.visible_status() {
                OperatorStatus::Available if slot.word().total_load() == 0 => 0,
                OperatorStatus::Available => 1,
                OperatorStatus::Paused => 2,
                OperatorStatus::WrapUp => 3,
                OperatorStatus::LoggedOut => continue,
            };
            counts[k].1 += 1;
        }
        counts
    }

    /// A view of every queue and operator.
    #[must_use]
    pub fn snapshot(&self, now: Millis) -> Snapshot {
        let queues = self
            .queues
            .iter()
            .map(|q| {
                let st = q.state.lock();
                let oldest =
                    st.waiting.iter().flat_map(|m| m.values()).map(|w| now.since(w.arrived)).max().unwrap_or(0);
                let waiting = st.len() as u32;
                let estimated_wait_ms = q.estimated_wait(&st, waiting + 1, now);
                drop(st);
                QueueSnapshot {
                    name: q.name.to_string(),
                    open: q.open.load(Ordering::Acquire),
                    waiting,
                    offered: q.offered.load(Ordering::Relaxed),
                    in_service: q.in_service.load(Ordering::Relaxed),
                    oldest_wait_ms: oldest,
                    service_level: q.service_level(),
                    service_level_target: q.sl_target,
                    service_level_threshold_ms: q.sl_threshold_ms,
                    estimated_wait_ms,
                    operators_logged_in: q.candidates.read().len() as u32,
                    answered: q.answered.load(Ordering::Relaxed),
                    answered_within_threshold: q.answered_in_sl.load(Ordering::Relaxed),
                    abandoned_after_threshold: q.abandoned_after_sl.load(Ordering::Relaxed),
                }
            })
            .collect();
        let n = (self.next_slot.load(Ordering::Relaxed) as usize).min(self.slots.len());
        let operators = self.slots[..n]
            .iter()
            .filter_map(|slot| {
                let session = slot.session.lock().clone()?;
                let w = slot.word();
                Some(OperatorSnapshot {
                    id: session.id.to_string(),
                    group: session.group.to_string(),
                    status: slot.visible_status(),
                    pause_reason: slot.pause_reason.lock().clone(),
                    active_contacts: u32::from(w.total_load()),
                    status_since_ms: slot.status_since(),
                })
            })
            .collect();
        Snapshot { queues, operators }
    }

    /// Checks the engine's invariants and returns every violation found. Meant for tests and
    /// debugging; it locks queues one at a time, so call it when no operation runs concurrently.
    ///
    /// Checked: each operator's per-channel load equals the contacts offered to or served by it;
    /// no operator holds more than its capacity or an exclusive contact beside another; every live
    /// contact is in exactly one place; no available operator with room idles while a contact it
    /// could take waits.
    #[must_use]
    pub fn audit(&self, now: Millis) -> Vec<String> {
        let mut v = Vec::new();
        let n = (self.next_slot.load(Ordering::Relaxed) as usize).min(self.slots.len());
        let mut load: HashMap<u32, [u8; 4]> = HashMap::new();
        let mut held_expected: HashMap<u32, Vec<Arc<str>>> = HashMap::new();
        let mut queued_expected: HashMap<(u32, RankKey), Arc<str>> = HashMap::new();
        let mut offered_expected = 0usize;
        for r in self.contacts.iter() {
            match r.state {
                CState::Offered { slot, .. } | CState::InService { slot, .. } => {
                    load.entry(slot).or_default()[r.channel.index()] += 1;
                    held_expected.entry(slot).or_default().push(r.key().clone());
                    if matches!(r.state, CState::Offered { .. }) {
                        offered_expected += 1;
                    }
                }
                CState::Queued { rank } => {
                    queued_expected.insert((r.queue, rank), r.key().clone());
                }
                CState::Arriving | CState::Done => {
                    v.push(format!("contact {} left in transient state {:?}", r.key(), r.state))
                }
            }
        }
        for (i, slot) in self.slots[..n].iter().enumerate() {
            let i = i as u32;
            let w = slot.word();
            let expect = load.get(&i).copied().unwrap_or_default();
            for ch in Channel::ALL {
                if w.load(ch) != expect[ch.index()] {
                    v.push(format!(
                        "operator slot {i}: {} load {} but {} contacts",
                        ch.as_str(),
                        w.load(ch),
                        expect[ch.index()]
                    ));
                }
                if w.load(ch) > w.cap(ch) {
                    v.push(format!("operator slot {i}: {} load above capacity", ch.as_str()));
                }
                if ch.is_exclusive() && w.load(ch) > 0 && w.total_load() > 1 {
                    v.push(format!("operator slot {i}: exclusive {} beside other contacts", ch.as_str()));
                }
            }
            let mut held = slot.held.lock().contacts.clone();
            let mut exp = held_expected.remove(&i).unwrap_or_default();
            held.sort();
            exp.sort();
            if held != exp {
                v.push(format!("operator slot {i}: holds {held:?} but contacts say {exp:?}"));
            }
        }
        let mut offered_seen = 0usize;
        for q in &self.queues {
            let st = q.state.lock();
            if st.len() != q.waiting.load(Ordering::Relaxed) as usize {
                v.push(format!(
                    "queue {}: waiting counter {} but {} entries",
                    q.name,
                    q.waiting.load(Ordering::Relaxed),
                    st.len()
                ));
            }
            if st.offered.len() != q.offered.load(Ordering::Relaxed) as usize {
                v.push(format!("queue {}: offered counter mismatch", q.name));
            }
            offered_seen += st.offered.len();
            for m in &st.waiting {
                for (rank, w) in m {
                    match queued_expected.remove(&(q.idx, *rank)) {
                        Some(c) if c == w.contact => {}
                        _ => {
                            v.push(format!("queue {}: entry for {} not matched by a queued contact", q.name, w.contact))
                        }
                    }
                }
            }
            let expiring = st.waiting.iter().flat_map(|m| m.values()).filter(|w| w.expiry.is_some()).count();
            if expiring != st.expiry.len() {
                v.push(format!(
                    "queue {}: {} expiry entries for {} expiring contacts",
                    q.name,
                    st.expiry.len(),
                    expiring
                ));
            }
        }
        if offered_seen != offered_expected {
            v.push(format!("{offered_seen} offer deadlines for {offered_expected} offered contacts"));
        }
        for ((qi, _), c) in queued_expected {
            v.push(format!("contact {c} queued in {} but absent from it", self.queues[qi as usize].name));
        }
        // No idle operator while a contact it can take waits (budget permitting).
        for (i, slot) in self.slots[..n].iter().enumerate() {
            let i = i as u32;
            let Some(session) = slot.session.lock().clone() else { continue };
            let w = slot.word();
            if w.generation() != session.gen || w.status() != OperatorStatus::Available {
                continue;
            }
            for &(qi, margin) in &session.queues {
                let q = &self.queues[qi as usize];
                let st = q.state.lock();
                for ch in Channel::ALL {
                    if !slot.can_take(w, ch) {
                        continue;
                    }
                    let fundable =
                        |f: &Option<Arc<str>>| session.budget.is_none() || f.as_ref() == session.budget.as_ref();
                    if let Some(c) = st.waiting[ch.index()]
                        .values()
                        .find(|x| q.eligible(x, margin, &session, i, now) && fundable(&x.funding))
                    {
                        v.push(format!("operator {} idles while {} waits in {}", session.id, c.contact, q.name));
                    }
                }
            }
        }
        v
    }
}
