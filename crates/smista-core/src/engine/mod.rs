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
//! Lock order: a queue's lock, then a contact's map shard, then a queue's free-operator index
//! (`Queue::idle`; the arrival fast path picks under the first two), then an operator's
//! `held`/`session` mutex (a pick reads the winner's session under the index). Never two queue
//! locks, nor two indexes, at once. The budget gate may be called under these locks and must
//! not call back into the engine.
//!
//! Nothing is written by every operation on every core: maps have many more shards than cores
//! ([`MAP_SHARDS`]), sequence numbers are per queue under its lock (they only order one queue's
//! entries), and the memory of finished contacts is lock-free ([`FinishedGens`]). What two cores
//! still share is what they work on together: a queue's lock and free-operator index when both
//! route into one queue, an operator's slot when one core frees it and the other offers to it
//! (`benches/README.md`, "Lock-free in fact"). Slots and queues are aligned to 128 bytes, so
//! neighbours never share a cache line.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::{Mutex, MutexGuard};

use crate::budget::{BudgetGate, FundingRequest, Settlement, Started};
use crate::calendar::{CentralEurope, Zone};
use crate::config::{EngineConfig, Strategy, MAX_PRIORITY};
use crate::error::{ConfigError, RoutingError};
use crate::event::Event;
use crate::id::validate_id;
use crate::model::{
    Channel, Completion, Decision, DivertReason, Fallback, LoginRequest, OfferRequest, OperatorStatus, Outcome,
    RequestedState, Segment,
};
use crate::operator::{Session, Slot, SlotBits, Transition};
use crate::queue::{Candidate, Queue, RankKey, State, Waiting};
use crate::snapshot::{OperatorSnapshot, QueueSnapshot, Snapshot};
use crate::time::Millis;

mod arrival;
pub(crate) mod callback;
pub(crate) mod consult;
mod matching;
pub(crate) mod operators;
mod timers;
pub(crate) mod transfer;
mod views;

use consult::ConsultOf;
use transfer::Kind;

/// Bound on retries of one matching attempt; past it the contact simply stays queued and the next
/// operator event or tick picks it up.
const MAX_ATTEMPTS: usize = 32;
/// Bound on how deep an operator looks into one queue for an eligible contact.
const SCAN_LIMIT: usize = 256;

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
    /// A callback waiting for its next attempt, in its queue's `parked` list.
    Parked {
        due: (Millis, u64),
    },
    /// Finished; the record is about to be removed and the outcome is in `finished`.
    Done,
}

#[derive(Debug)]
struct Contact {
    queue: u32,
    /// The queue it arrived in (after a segment's `route_to`), for a resumed place.
    entry_queue: u32,
    /// The caller's keyed hash, kept only if the entry queue resumes places.
    caller_key: Option<Arc<str>>,
    /// A callback (requested by a waiting caller, or a CALLBACK contact): attempts made so far.
    callback: Option<u32>,
    /// An appointment: its booked operator's slot and until when only they may take it. An
    /// appointment always waits at the head of its queue.
    pinned: Option<(u32, Millis)>,
    /// An appointment (pinned or not any more): ranks at the head.
    appointment: bool,
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
    /// Legs that operators ended by transferring it (a repeated transfer answers the same).
    legs: Vec<Leg>,
    /// Budgets that settled a leg of it (the per-contact fee's rule across legs).
    paid: Vec<Arc<str>>,
    /// Its next leg's acceptance is dated no earlier than this: after its last leg's, so two
    /// legs never share the acceptance time that keys their cost records.
    not_before: Millis,
    /// When an operator first accepted it (its answer, for the service level and its wait: a
    /// transferred contact is answered once, by its first leg).
    answered: Option<Millis>,
    /// Its consultation, if one was asked for (open while that contact lives and names this one;
    /// see `consult.rs`).
    consult: Option<Arc<str>>,
    /// A consultation: the contact it is about and who asked.
    /// (Boxed: rare, and every contact carries the field.)
    consult_of: Option<Box<ConsultOf>>,
}

#[derive(Clone, Debug)]
struct Finished {
    outcome: Outcome,
    queue: u32,
    diverted: Option<(DivertReason, Fallback)>,
    completed_by: Option<u32>,
    completion: Option<Completion>,
    /// Its transferred legs (see [`Contact::legs`]).
    legs: Vec<Leg>,
    /// A consultation: the contact it was about and the slot of the operator who asked.
    consult_of: Option<Box<(Arc<str>, u32)>>,
}

/// A leg an operator ended by transferring its contact.
#[derive(Clone, Copy, Debug)]
struct Leg {
    /// The operator's slot.
    slot: u32,
    /// The leg's handle time and wrap-up.
    completion: Completion,
    /// Where it sent the contact: a queue, or out of the centre (`None`).
    to: Option<u32>,
    /// The operator it named, if any (by slot).
    named: Option<u32>,
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

/// Shards of each map: many more than cores, so two threads rarely want the same shard's lock
/// (DashMap's default is four per core: 8 on two cores, where two threads met on a shard in one
/// operation out of eight and the profile showed its lock's slow paths).
const MAP_SHARDS: usize = 128;

fn new_map<V>() -> Map<V> {
    Map::with_hasher_and_shard_amount(foldhash::fast::RandomState::default(), MAP_SHARDS)
}

/// Finished contacts are kept in two generations, swapped every half retention, so forgetting
/// them is O(1) and never scans. Lock-free, and nobody waits for a rotation: readers look in both
/// maps; a writer inserts into the current one (the one not being cleared) and checks that it
/// was not cleared meanwhile (else inserts again, into the new current), so an entry is never
/// dropped before half the retention.
#[derive(Debug)]
struct FinishedGens {
    maps: [Map<Finished>; 2],
    /// Even: `maps[(epoch / 2) % 2]` is current. Odd: a rotation is clearing the other map.
    epoch: AtomicU64,
}

impl FinishedGens {
    fn new() -> FinishedGens {
        FinishedGens { maps: [new_map(), new_map()], epoch: AtomicU64::new(0) }
    }

    fn get(&self, id: &str) -> Option<Finished> {
        let cur = ((self.epoch.load(Ordering::Acquire) / 2) % 2) as usize;
        self.maps[cur].get(id).or_else(|| self.maps[1 - cur].get(id)).map(|r| r.value().clone())
    }

    fn insert(&self, id: Arc<str>, f: Finished) {
        loop {
            // The map that is current (or, while a rotation clears the other, was current until
            // now): it is cleared only by the rotation after next, which starts at `base + 3`.
            let base = self.epoch.load(Ordering::Acquire) & !1;
            self.maps[((base / 2) % 2) as usize].insert(id.clone(), f.clone());
            if self.epoch.load(Ordering::Acquire) < base + 3 {
                return;
            }
        }
    }

    /// Forgets the older generation and makes its map the current one. One caller at a time
    /// (the engine's `last_rotation` CAS decides who).
    fn rotate(&self) {
        let e = self.epoch.fetch_add(1, Ordering::AcqRel);
        debug_assert_eq!(e % 2, 0, "one rotation at a time");
        let older = ((e / 2 + 1) % 2) as usize;
        self.maps[older].clear();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
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
    finished: FinishedGens,
    last_rotation: AtomicU64,
    retention_ms: u64,
    /// Until when (engine ms) a queue with nobody logged in still queues its contacts instead of
    /// diverting them NO_OPERATORS: the desks are reconnecting after a takeover.
    staff_grace_until: AtomicU64,
    gate: Arc<dyn BudgetGate>,
    /// Engine time `Millis(0)` on the wall clock, Unix ms (see [`Engine::with_calendar`]).
    epoch_unix_ms: i64,
    /// The centre's time zone, for opening hours.
    zone: Arc<dyn Zone>,
    /// Places kept for callers who hung up, by caller key (see `callback.rs`).
    redial: Mutex<callback::Redial>,
    /// Operators kept for an appointment, by id: until when (engine ms). Copied into their slot
    /// (`Slot::reserved_until`), also at a later login.
    reserved: Map<u64>,
    /// Operators that may be able to work (see [`SlotBits`]): what the tick visits when
    /// contacts wait.
    free_bits: SlotBits,
    /// Operators in wrap-up: what the tick visits always (to end the wrap-ups that are due).
    wrap_bits: SlotBits,
}

/// A slot's owner lock, held while a session starts.
type OwnerGuard<'a> = MutexGuard<'a, Option<Arc<str>>>;

/// Whether an operator paid by `payer` must be skipped for a contact funded by `funding`: its
/// budget needs to fund the contact and already refused during this matching attempt.
fn refused_here(payer: &Option<Arc<str>>, funding: &Option<Arc<str>>, refused: &[Arc<str>]) -> bool {
    payer.as_ref().is_some_and(|b| funding.as_ref() != Some(b) && refused.contains(b))
}

/// What eligibility checks need to know of a contact, as kept in its queue's waiting list.
fn waiting_of(id: &Arc<str>, rec: &Contact, expiry: Option<(Millis, u64)>) -> Waiting {
    Waiting {
        contact: id.clone(),
        arrived: rec.arrived,
        priority: rec.priority,
        language: rec.language.clone(),
        declined: rec.declined.clone(),
        funding: rec.funding.clone(),
        expiry,
        segment: rec.segment,
        pinned: rec.pinned,
    }
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
                Queue::new(i as u32, q, overflow, cfg.sl_window_ms, |n| queue_by_name.get(n).copied())
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
            operator_ids: new_map(),
            contacts: new_map(),
            finished: FinishedGens::new(),
            last_rotation: AtomicU64::new(0),
            retention_ms: cfg.finished_retention_ms,
            staff_grace_until: AtomicU64::new(0),
            gate,
            epoch_unix_ms: 0,
            zone: Arc::new(CentralEurope),
            redial: Mutex::new(callback::Redial::default()),
            reserved: new_map(),
            free_bits: SlotBits::new(cfg.max_operators as usize),
            wrap_bits: SlotBits::new(cfg.max_operators as usize),
        })
    }

    /// Sets the wall clock the engine reads opening hours on: engine time `Millis(0)` is
    /// `epoch_unix_ms`, local time is `zone`'s. Without it engine time is Unix time and the zone
    /// is [`CentralEurope`] (Europe/Rome's rule).
    #[must_use]
    pub fn with_calendar(mut self, epoch_unix_ms: i64, zone: Arc<dyn Zone>) -> Engine {
        self.epoch_unix_ms = epoch_unix_ms;
        self.zone = zone;
        self
    }

    /// Unix ms of engine time `now`.
    pub(super) fn unix(&self, now: Millis) -> i64 {
        self.epoch_unix_ms.saturating_add(i64::try_from(now.0).unwrap_or(i64::MAX))
    }

    /// Engine time of Unix ms `unix` (time zero if before the epoch).
    pub(super) fn engine_time(&self, unix: i64) -> Millis {
        Millis(u64::try_from(unix.saturating_sub(self.epoch_unix_ms)).unwrap_or(0))
    }

    /// Whether operator `slot` may take waiting contact `w` of `q`: the queue's rules (skills,
    /// expansion, language, declines), an appointment's pin to its booked operator, and an
    /// operator kept for an appointment taking nothing else.
    pub(super) fn can_serve(
        &self,
        q: &Queue,
        w: &Waiting,
        margin: i8,
        session: &Session,
        slot: u32,
        now: Millis,
    ) -> bool {
        let pinned_here = match w.pinned {
            // A pin to an operator who logged out holds nobody back.
            Some((s, until)) if now < until && self.slot(s).word().status() != OperatorStatus::LoggedOut => {
                if s != slot {
                    return false;
                }
                true
            }
            Some((s, _)) => s == slot,
            None => false,
        };
        if !pinned_here && self.slot(slot).reserved_until.load(Ordering::Relaxed) > now.0 {
            return false;
        }
        q.eligible(w, margin, session, slot, now)
    }

    /// Whether queue `q` takes contacts at `now`: an admin has it open and its hours do.
    pub(super) fn is_open(&self, q: &Queue, now: Millis) -> bool {
        q.open.load(Ordering::Acquire) && q.hours.read().as_ref().is_none_or(|h| h.is_open(self.unix(now), &*self.zone))
    }

    /// When a queue closed at `now` by its hours opens next (`None` if an admin closed it).
    pub(super) fn reopens(&self, q: &Queue, now: Millis) -> Option<Millis> {
        if !q.open.load(Ordering::Acquire) {
            return None;
        }
        self.hours_open_from(q, now)
    }

    /// The first instant at or after `at` at which `q`'s hours are open (`None`: the queue has
    /// no hours, or they do not open within a year).
    pub(super) fn hours_open_from(&self, q: &Queue, at: Millis) -> Option<Millis> {
        let hours = q.hours.read().clone()?;
        hours.next_open(self.unix(at), &*self.zone).map(|u| self.engine_time(u))
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

    pub(super) fn queue_idx(&self, name: &str) -> Result<u32, RoutingError> {
        self.queue_by_name.get(name).copied().ok_or_else(|| RoutingError::UnknownQueue(crate::error::clip(name)))
    }

    /// Counts `q`'s working operators (available, on contacts or in wrap-up; not paused or
    /// logged out) for its wait estimates: every tick, and for the queues of an operator who
    /// logs in, out, pauses or comes back. A pass over the queue's candidates, off the offer path.
    pub(crate) fn count_working(&self, q: &Queue) {
        let mut n = [0u32; 4];
        for c in q.candidates.read().iter() {
            let w = self.slot(c.slot).word();
            if w.generation() == c.gen && matches!(w.status(), OperatorStatus::Available | OperatorStatus::WrapUp) {
                for ch in Channel::ALL {
                    n[ch.index()] += u32::from(w.cap(ch) > 0);
                }
            }
        }
        for ch in Channel::ALL {
            q.working[ch.index()].store(n[ch.index()], Ordering::Relaxed);
        }
    }

    /// [`Engine::count_working`] for the queues `session` serves.
    pub(crate) fn count_working_for(&self, session: &Session) {
        for (qi, _) in &session.queues {
            self.count_working(&self.queues[*qi as usize]);
        }
    }

    pub(super) fn slot(&self, idx: u32) -> &Slot {
        &self.slots[idx as usize]
    }

    pub(super) fn status_event(&self, session: &Session, t: Option<Transition>, out: &mut Vec<Event>) {
        self.status_event_with(session, t, "", false, out);
    }

    /// [`status_event`](Self::status_event) of a transition that may pause: `reason` is the
    /// pause's reason (reported when the operator ends up PAUSED), and `reason_changed` reports
    /// a PAUSED -> PAUSED transition too (the reason is all that changed).
    pub(super) fn status_event_with(
        &self,
        session: &Session,
        t: Option<Transition>,
        reason: &str,
        reason_changed: bool,
        out: &mut Vec<Event>,
    ) {
        if let Some(t) = t {
            if t.from != t.to || reason_changed {
                out.push(Event::OperatorStatus {
                    operator: session.id.clone(),
                    group: session.group.clone(),
                    from: t.from,
                    to: t.to,
                    reason: if t.to == OperatorStatus::Paused { Arc::from(reason) } else { Arc::from("") },
                });
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Contacts
    // ----------------------------------------------------------------------------------------
}
