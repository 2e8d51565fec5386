//! One queue's runtime state: its waiting contacts per channel in routing order, the deadlines it
//! watches (maximum wait, offer time-out) and the counters behind service level and wait estimates.
//!
//! Each queue has its own lock; nothing here is shared between queues, so offers to different
//! queues never contend. Matching an operator to a contact takes at most one queue lock at a time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::config::{ExpansionStep, QueueConfig, Strategy, MAX_EXPANSION_STEPS};
use crate::hours::Hours;
use crate::idle::IdleIndex;
use crate::model::{Channel, Fallback, Segment};
use crate::operator::Session;
use crate::sl_window::{SlCounts, SlWindow};
use crate::time::Millis;

/// Routing order inside a queue: contacts returned after a decline or time-out first (class 0),
/// then by score (priority with aging, then arrival), then by arrival sequence.
///
/// With linear aging, `priority + wait / aging` orders two contacts of one queue the same way at
/// every instant, so the order is fixed at insertion: `neg_score = arrival - priority * aging`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct RankKey {
    pub(crate) class: u8,
    pub(crate) neg_score: i64,
    pub(crate) seq: u64,
}

/// A waiting contact, with what eligibility checks need without touching the contact table.
#[derive(Clone, Debug)]
pub(crate) struct Waiting {
    pub(crate) contact: Arc<str>,
    pub(crate) arrived: Millis,
    pub(crate) priority: u32,
    pub(crate) language: Arc<str>,
    pub(crate) declined: Vec<u32>,
    pub(crate) funding: Option<Arc<str>>,
    pub(crate) expiry: Option<(Millis, u64)>,
    pub(crate) segment: Segment,
    /// An appointment waiting for its booked operator: (slot, until when only they may take it).
    pub(crate) pinned: Option<(u32, Millis)>,
}

/// Parameters an admin may change at run time (read under the queue lock).
#[derive(Clone, Debug)]
pub(crate) struct Params {
    pub(crate) max_length: u32,
    pub(crate) max_wait_ms: u64,
    pub(crate) wrap_up_ms: u64,
    pub(crate) offer_timeout_ms: u64,
    pub(crate) fallback: Fallback,
}

/// The locked part of a queue.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) params: Params,
    pub(crate) waiting: [BTreeMap<RankKey, Waiting>; 4],
    /// (expires_at, seq) -> (channel, rank) for maximum wait / patience.
    pub(crate) expiry: BTreeMap<(Millis, u64), (Channel, RankKey)>,
    /// (deadline, seq) -> contact, for offers not yet accepted.
    pub(crate) offered: BTreeMap<(Millis, u64), Arc<str>>,
    /// (due, seq) -> contact, for callbacks waiting for their next attempt.
    pub(crate) parked: BTreeMap<(Millis, u64), Arc<str>>,
    /// The last sequence number handed out by [`State::next_seq`].
    seq: u64,
}

impl State {
    /// A number unique within this queue, increasing: the tie-breaker of ranks (first come,
    /// first served within a millisecond) and of deadline, expiry and due keys. Per queue, under
    /// its lock, rather than one counter for the engine that every arrival on every core would
    /// write (ranks are only ever compared within one queue).
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.iter().map(BTreeMap::len).sum()
    }

    /// 1-based position of `rank` among the channel's contacts. O(1) for the usual case of a
    /// contact joining at the tail.
    pub(crate) fn position(&self, ch: Channel, rank: &RankKey) -> u32 {
        let m = &self.waiting[ch.index()];
        let n = match m.last_key_value() {
            Some((last, _)) if last == rank => m.len(),
            _ => m.range(..=rank).count(),
        };
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// An operator who can serve the queue, as seen from the queue.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) slot: u32,
    pub(crate) gen: u8,
    /// Lowest (level - minimum) over the queue's skills; negative only within expansion reach.
    pub(crate) margin: i8,
    pub(crate) session: Arc<Session>,
}

/// A queue's figures and rule for one segment of its contacts.
#[derive(Debug)]
pub(crate) struct SegmentState {
    /// Priority levels added at arrival.
    pub(crate) boost: u32,
    /// Queue the segment's contacts are routed to instead.
    pub(crate) route_to: Option<u32>,
    /// Whether a rule names the segment (it then shows in snapshots and metrics).
    pub(crate) ruled: bool,
    pub(crate) sl_target: f64,
    pub(crate) sl_threshold_ms: u64,
    pub(crate) waiting: AtomicU32,
    pub(crate) sl_window: SlWindow,
}

/// Skill expansion steps in atomics, so eligibility checks read them without a lock: each step
/// is `after_ms << 8 | level_drop`. An admin's change stores the steps, then the count; a reader
/// racing with it may see a mix of old and new steps for that instant, which only changes who
/// may serve a contact, never capacity or uniqueness.
#[derive(Debug)]
struct Expansion {
    len: std::sync::atomic::AtomicU8,
    steps: [AtomicU64; MAX_EXPANSION_STEPS],
}

impl Expansion {
    fn new(steps: &[ExpansionStep]) -> Expansion {
        let e = Expansion { len: std::sync::atomic::AtomicU8::new(0), steps: Default::default() };
        e.set(steps);
        e
    }

    fn set(&self, steps: &[ExpansionStep]) {
        let n = steps.len().min(MAX_EXPANSION_STEPS);
        self.len.store(0, Ordering::Release);
        for (slot, s) in self.steps.iter().zip(&steps[..n]) {
            slot.store((s.after_ms.min(u64::MAX >> 8) << 8) | u64::from(s.level_drop), Ordering::Relaxed);
        }
        self.len.store(n as u8, Ordering::Release);
    }

    /// (after_ms, level_drop) in order.
    fn steps(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        let n = usize::from(self.len.load(Ordering::Acquire));
        self.steps[..n].iter().map(|s| {
            let v = s.load(Ordering::Relaxed);
            (v >> 8, (v & 0xFF) as u8)
        })
    }
}

/// How many completions the mean time per contact behind wait estimates weighs: a plain mean
/// of the first ones, then an exponentially weighted one (each new one counts 1/64).
const OCCUPANCY_WEIGHT: u64 = 64;
const OCCUPANCY_MASK: u64 = (1 << 56) - 1;

/// A queue at run time. Aligned to 128 bytes, so two queues never share a cache line (see
/// [`crate::operator::Slot`]).
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Queue {
    pub(crate) idx: u32,
    pub(crate) name: Arc<str>,
    /// Priority added to every contact of the queue (an admin may change it: it is not part of
    /// a waiting contact's rank, which orders contacts of one queue, only of comparisons across
    /// queues).
    priority: AtomicU32,
    pub(crate) aging_ms: u64,
    /// Required skills with minimum levels (an admin may change them: operators' margins are
    /// then recomputed).
    pub(crate) skills: RwLock<Vec<(String, u8)>>,
    /// Skill expansion steps (an admin may change them; read without a lock).
    expansion: Expansion,
    /// Operator selection strategy, as [`Strategy`]'s index (an admin may change it).
    strategy: std::sync::atomic::AtomicU8,
    pub(crate) prefer_unbudgeted: bool,
    pub(crate) budget: Option<Arc<str>>,
    /// Queues tried in order when this one is full or a contact waited too long (an admin may
    /// change them: read once per placement).
    overflow: RwLock<Arc<[u32]>>,
    pub(crate) sl_target: f64,
    pub(crate) sl_threshold_ms: u64,
    /// Whether an admin lets the queue take contacts (its hours apply on top).
    pub(crate) open: AtomicBool,
    /// Opening hours (none: always open).
    pub(crate) hours: RwLock<Option<Arc<Hours>>>,
    pub(crate) candidates: RwLock<Vec<Candidate>>,
    /// Of the candidates, those working (available, on contacts or in wrap-up; not paused) who
    /// can take a contact of each channel ([`Channel::index`]), as last counted
    /// ([`crate::Engine::count_working`]: every tick, and at logins, logouts and pauses).
    pub(crate) working: [AtomicU32; 4],
    /// How long an operator is taken per contact of this queue (handle plus wrap-up), ms, in the
    /// low 56 bits, and how many completions it weighs (up to [`OCCUPANCY_WEIGHT`]) in the top 8.
    occupancy: AtomicU64,
    /// Free operators by how long they have been free, for the longest-idle strategy. A hint
    /// with lazy deletion: entries are checked against the operator's word when read, and the
    /// claim itself is still the operator's CAS (see [`IdleIndex`]).
    pub(crate) idle: Mutex<IdleIndex>,
    pub(crate) rr_cursor: AtomicUsize,
    pub(crate) state: Mutex<State>,
    /// Contacts waiting (mirrors `state`, readable without the lock).
    pub(crate) waiting: AtomicU32,
    pub(crate) offered: AtomicU32,
    pub(crate) in_service: AtomicU32,
    pub(crate) answered: AtomicU64,
    pub(crate) answered_in_sl: AtomicU64,
    pub(crate) abandoned_after_sl: AtomicU64,
    /// The same three over the sliding window, for the live service level.
    pub(crate) sl_window: SlWindow,
    /// Per segment, by [`Segment::index`].
    pub(crate) segments: [SegmentState; 4],
    /// How long a hung-up caller's place is kept for a redial (0: not kept).
    pub(crate) resume_window_ms: u64,
    /// Delays before a callback's further attempts.
    pub(crate) callback_retry_ms: Vec<u64>,
    /// The priority a transferred contact waits with here, at least.
    pub(crate) transfer_priority: u32,
}

impl Queue {
    pub(crate) fn new(
        idx: u32,
        cfg: &QueueConfig,
        overflow: Vec<u32>,
        sl_window_ms: u64,
        queue_idx: impl Fn(&str) -> Option<u32>,
    ) -> Queue {
        let segments = Segment::ALL.map(|seg| {
            let rule = cfg.segments.iter().find(|r| r.segment == seg);
            SegmentState {
                boost: rule.map_or(0, |r| r.priority_boost),
                route_to: rule.and_then(|r| r.route_to.as_deref()).and_then(&queue_idx),
                ruled: rule.is_some(),
                sl_target: rule.and_then(|r| r.service_level_target).unwrap_or(cfg.service_level_target),
                sl_threshold_ms: rule
                    .and_then(|r| r.service_level_threshold_ms)
                    .unwrap_or(cfg.service_level_threshold_ms),
                waiting: AtomicU32::new(0),
                sl_window: SlWindow::new(sl_window_ms),
            }
        });
        Queue {
            segments,
            resume_window_ms: cfg.resume_window_ms,
            callback_retry_ms: cfg.callback_retry_ms.clone(),
            transfer_priority: cfg.transfer_priority,
            idx,
            name: Arc::from(cfg.name.as_str()),
            priority: AtomicU32::new(cfg.priority),
            aging_ms: if cfg.aging_ms_per_level == 0 { u64::from(u32::MAX) } else { cfg.aging_ms_per_level },
            skills: RwLock::new(cfg.skills.iter().map(|s| (s.skill.clone(), s.min_level)).collect()),
            expansion: Expansion::new(&cfg.expansion),
            strategy: std::sync::atomic::AtomicU8::new(cfg.strategy.index()),
            prefer_unbudgeted: cfg.prefer_unbudgeted,
            budget: cfg.budget.as_deref().map(Arc::from),
            overflow: RwLock::new(Arc::from(overflow)),
            sl_target: cfg.service_level_target,
            sl_threshold_ms: cfg.service_level_threshold_ms,
            open: AtomicBool::new(cfg.open),
            hours: RwLock::new(cfg.hours.as_ref().and_then(|h| Hours::parse(h).ok()).map(Arc::new)),
            candidates: RwLock::new(Vec::new()),
            working: Default::default(),
            // Before any completion: the configured handle time and the queue's wrap-up.
            occupancy: AtomicU64::new(cfg.default_aht_ms.saturating_add(cfg.wrap_up_ms).min(OCCUPANCY_MASK)),
            idle: Mutex::new(IdleIndex::default()),
            rr_cursor: AtomicUsize::new(0),
            state: Mutex::new(State {
                params: Params {
                    max_length: cfg.max_length,
                    max_wait_ms: cfg.max_wait_ms,
                    wrap_up_ms: cfg.wrap_up_ms,
                    offer_timeout_ms: cfg.offer_timeout_ms,
                    fallback: cfg.fallback,
                },
                waiting: Default::default(),
                expiry: BTreeMap::new(),
                offered: BTreeMap::new(),
                parked: BTreeMap::new(),
                seq: 0,
            }),
            waiting: AtomicU32::new(0),
            offered: AtomicU32::new(0),
            in_service: AtomicU32::new(0),
            answered: AtomicU64::new(0),
            answered_in_sl: AtomicU64::new(0),
            abandoned_after_sl: AtomicU64::new(0),
            sl_window: SlWindow::new(sl_window_ms),
        }
    }

    /// The queue's priority now.
    pub(crate) fn priority(&self) -> u32 {
        self.priority.load(Ordering::Relaxed)
    }

    /// Sets the queue's priority.
    pub(crate) fn set_priority(&self, p: u32) {
        self.priority.store(p, Ordering::Relaxed);
    }

    /// The selection strategy now.
    pub(crate) fn strategy(&self) -> Strategy {
        Strategy::from_index(self.strategy.load(Ordering::Relaxed))
    }

    /// Sets the selection strategy.
    pub(crate) fn set_strategy(&self, s: Strategy) {
        self.strategy.store(s.index(), Ordering::Relaxed);
    }

    /// The overflow chain now.
    pub(crate) fn overflow(&self) -> Arc<[u32]> {
        self.overflow.read().clone()
    }

    /// Replaces the overflow chain.
    pub(crate) fn set_overflow(&self, chain: Vec<u32>) {
        *self.overflow.write() = Arc::from(chain);
    }

    /// Replaces the expansion steps (at most [`MAX_EXPANSION_STEPS`], by increasing `after_ms`).
    pub(crate) fn set_expansion(&self, steps: &[ExpansionStep]) {
        self.expansion.set(steps);
    }

    /// The furthest any expansion step lowers the minimum level.
    pub(crate) fn max_drop(&self) -> i8 {
        self.expansion.steps().map(|(_, d)| d as i8).max().unwrap_or(0)
    }

    /// Levels below the minimum accepted after waiting `wait_ms`.
    pub(crate) fn level_drop(&self, wait_ms: u64) -> i8 {
        self.expansion.steps().take_while(|(after, _)| *after <= wait_ms).last().map_or(0, |(_, d)| d as i8)
    }

    /// Whether a contact's language wish still binds after waiting `wait_ms`.
    pub(crate) fn language_binds(&self, wait_ms: u64) -> bool {
        self.expansion.steps().next().is_none_or(|(after, _)| wait_ms < after)
    }

    /// An operator's margin on this queue, or `None` if they can never serve it.
    pub(crate) fn margin_for(&self, skills: &[(String, u8)]) -> Option<i8> {
        let mut margin: i8 = 9;
        for (name, min) in self.skills.read().iter() {
            let level = skills.iter().find(|(n, _)| n == name).map(|(_, l)| *l)?;
            margin = margin.min(level as i8 - *min as i8);
        }
        (margin >= -self.max_drop()).then_some(margin)
    }

    /// Whether a waiting contact may go to an operator with `margin` and skills `session`.
    pub(crate) fn eligible(&self, w: &Waiting, margin: i8, session: &Session, slot: u32, now: Millis) -> bool {
        let wait = now.since(w.arrived);
        if margin + self.level_drop(wait) < 0 || w.declined.contains(&slot) {
            return false;
        }
        if !w.language.is_empty() && self.language_binds(wait) {
            return session.skills.iter().any(|(n, _)| **n == *w.language);
        }
        true
    }

    /// Routing rank of a new entry.
    pub(crate) fn rank(&self, head: bool, arrived: Millis, priority: u32, seq: u64) -> RankKey {
        let boost = i64::from(priority).saturating_mul(i64::try_from(self.aging_ms).unwrap_or(i64::MAX));
        RankKey {
            class: u8::from(!head),
            neg_score: i64::try_from(arrived.0).unwrap_or(i64::MAX).saturating_sub(boost),
            seq,
        }
    }

    /// Effective priority in thousandths of a level at `now`, for comparing across queues.
    pub(crate) fn effective_priority(&self, rank: &RankKey, w: &Waiting, now: Millis) -> u64 {
        let aged =
            u64::from(self.priority() + w.priority) * 1000 + now.since(w.arrived).saturating_mul(1000) / self.aging_ms;
        if rank.class == 0 {
            aged + (1 << 50)
        } else {
            aged
        }
    }

    /// Estimated wait for a contact of `channel` at `position` (1-based): the queue's working
    /// operators who take that channel free one of their places every `occupancy ÷ working` on
    /// average, and this contact is served at the `position`-th (the Erlang C wait of a contact
    /// that finds `position - 1` ahead of it, with every server busy). 0 when no operator able
    /// to serve it is working: nothing honest can be said then.
    pub(crate) fn estimated_wait(&self, channel: Channel, position: u32) -> u64 {
        let working = u64::from(self.working[channel.index()].load(Ordering::Relaxed));
        if working == 0 {
            return 0;
        }
        let per_contact = self.occupancy.load(Ordering::Relaxed) & OCCUPANCY_MASK;
        (u64::from(position).saturating_mul(per_contact) / working).max(1)
    }

    /// The channel a queue-wide estimate (the snapshot's) is for: voice when anyone working takes
    /// voice, else the first channel someone working takes.
    pub(crate) fn main_channel(&self) -> Channel {
        Channel::ALL.into_iter().find(|c| self.working[c.index()].load(Ordering::Relaxed) > 0).unwrap_or(Channel::Voice)
    }

    /// Counts a completed contact's time with its operator (handle plus wrap-up) into the mean
    /// behind wait estimates. Lock-free: one compare-and-swap loop on the packed word.
    pub(crate) fn record_occupancy(&self, ms: u64) {
        let ms = ms.min(OCCUPANCY_MASK);
        let _ = self.occupancy.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            let (n, mean) = (w >> 56, w & OCCUPANCY_MASK);
            // The configured seed counts as nothing: the first completion replaces it.
            let n = (n + 1).min(OCCUPANCY_WEIGHT);
            let mean = if ms >= mean { mean + (ms - mean) / n } else { mean - (mean - ms) / n };
            Some((n << 56) | mean)
        });
    }

    /// Counts a contact of `segment` entering the waiting list.
    pub(crate) fn entered_waiting(&self, segment: Segment) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.segments[segment.index()].waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a contact of `segment` leaving the waiting list.
    pub(crate) fn left_waiting(&self, segment: Segment) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.segments[segment.index()].waiting.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn record_accept(&self, segment: Segment, waited_ms: u64, now: Millis) {
        let seg = &self.segments[segment.index()];
        let within = u64::from(waited_ms <= seg.sl_threshold_ms);
        seg.sl_window.record(now, now, SlCounts { answered: 1, within, abandoned_late: 0 });
        self.answered.fetch_add(1, Ordering::Relaxed);
        let within = waited_ms <= self.sl_threshold_ms;
        if within {
            self.answered_in_sl.fetch_add(1, Ordering::Relaxed);
        }
        self.sl_window.record(now, now, SlCounts { answered: 1, within: u64::from(within), abandoned_late: 0 });
    }

    /// Counts an abandonment after `waited_ms` at `now`.
    pub(crate) fn record_abandon(&self, segment: Segment, waited_ms: u64, now: Millis) {
        let seg = &self.segments[segment.index()];
        if waited_ms > seg.sl_threshold_ms {
            seg.sl_window.record(now, now, SlCounts { answered: 0, within: 0, abandoned_late: 1 });
        }
        if waited_ms > self.sl_threshold_ms {
            self.abandoned_after_sl.fetch_add(1, Ordering::Relaxed);
            self.sl_window.record(now, now, SlCounts { answered: 0, within: 0, abandoned_late: 1 });
        }
    }

    /// Share of contacts answered within the threshold over the sliding window, counting
    /// abandonments after it (1 with neither).
    pub(crate) fn service_level(&self, now: Millis) -> f64 {
        self.sl_window.totals(now).service_level()
    }
}
