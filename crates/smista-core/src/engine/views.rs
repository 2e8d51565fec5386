//! What admins change and supervisors read: queue opening and parameters, counts, snapshots,
//! and the consistency audit.

use super::*;
use crate::snapshot::SegmentSnapshot;

impl Engine {
    /// The first instant at or after `at` at which `queue` is open by its hours (`at` itself
    /// for a queue without hours; `None` if its hours never open within a year).
    pub fn next_opening(&self, queue: &str, at: Millis) -> Result<Option<Millis>, RoutingError> {
        let q = &self.queues[self.queue_idx(queue)? as usize];
        if q.hours.read().is_none() {
            return Ok(Some(at));
        }
        Ok(self.hours_open_from(q, at).map(|t| t.max(at)))
    }

    /// How a contact stands, for booking a callback after it: `Some(None)` live, `Some(Some(r))`
    /// ended diverted with reason `r`, `None` otherwise (ended another way, or unknown).
    #[must_use]
    pub fn diversion_of(&self, contact_id: &str) -> Option<Option<DivertReason>> {
        if self.contacts.contains_key(contact_id) {
            return Some(None);
        }
        self.finished_get(contact_id).and_then(|f| f.diverted).map(|(r, _)| Some(r))
    }

    /// Whether contact `contact_id` is in service with operator `operator_id` now (accepted by
    /// them in this life, not ended or transferred since).
    #[must_use]
    pub fn in_service_with(&self, operator_id: &str, contact_id: &str) -> bool {
        let Ok((idx, _)) = self.logged_in(operator_id) else { return false };
        self.contacts.get(contact_id).is_some_and(|r| matches!(r.state, CState::InService { slot, .. } if slot == idx))
    }

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
        if update.priority.is_some_and(|p| p > MAX_PRIORITY) {
            return Err(RoutingError::invalid("priority", "must be 0..=100"));
        }
        let skills = match &update.skills {
            Some(list) => {
                crate::config::check_skills(list)
                    .map_err(|(field, problem)| RoutingError::invalid("skills", format!("{field}: {problem}")))?;
                let mut v: Vec<(String, u8)> = Vec::with_capacity(list.len());
                for s in list {
                    if v.iter().any(|(n, _)| *n == s.skill) {
                        return Err(RoutingError::invalid("skills", format!("skill `{}` given twice", s.skill)));
                    }
                    v.push((s.skill.clone(), s.min_level));
                }
                Some(v)
            }
            None => None,
        };
        let hours = match &update.hours {
            Some(Some(h)) => Some(Some(Arc::new(
                crate::hours::Hours::parse(h)
                    .map_err(|e| RoutingError::InvalidArgument { field: "hours", problem: e })?,
            ))),
            Some(None) => Some(None),
            None => None,
        };
        let overflow = match &update.overflow {
            Some(names) => {
                let mut chain = Vec::with_capacity(names.len());
                for n in names {
                    let i = self.queue_idx(n).map_err(|_| {
                        RoutingError::invalid("overflow", format!("unknown queue `{}`", crate::error::clip(n)))
                    })?;
                    if i == qi {
                        return Err(RoutingError::invalid("overflow", "a queue cannot overflow to itself"));
                    }
                    chain.push(i);
                }
                Some(chain)
            }
            None => None,
        };
        if let Some(steps) = &update.expansion {
            crate::config::check_expansion(steps)
                .map_err(|(field, problem)| RoutingError::invalid("expansion", format!("{field}: {problem}")))?;
        }
        let q = &self.queues[qi as usize];
        if let Some(chain) = overflow {
            q.set_overflow(chain);
        }
        if let Some(p) = update.priority {
            q.set_priority(p);
        }
        if let Some(h) = hours {
            *q.hours.write() = h;
        }
        if let Some(s) = update.strategy {
            q.set_strategy(s);
            if s == Strategy::LongestIdle {
                // The free-operator index of the queue is filled from now on: seed it.
                let n = (self.next_slot.load(Ordering::Relaxed) as usize).min(self.slots.len());
                for i in 0..n as u32 {
                    self.mark_free(i);
                }
            }
        }
        let regroup = skills.is_some() || update.expansion.is_some();
        if let Some(v) = skills {
            *q.skills.write() = v;
        }
        if let Some(steps) = &update.expansion {
            q.set_expansion(steps);
        }
        if regroup {
            self.recompute_queues();
        }
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

    /// Recomputes every logged-in operator's queues after a queue's skills changed.
    fn recompute_queues(&self) {
        let n = (self.next_slot.load(Ordering::Relaxed) as usize).min(self.slots.len());
        for i in 0..n as u32 {
            let Some(old) = self.slot(i).session.lock().clone() else { continue };
            let queues = self.queues_for(&old.skills);
            if queues != old.queues {
                let new = Session { queues, ..(*old).clone() };
                self.reinstall(i, &old, new);
            }
        }
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

    /// Counts, in `queue`'s live service level and its `segment`'s, a contact answered
    /// (`answered`) or abandoned after waiting `waited_ms` at `at` (a restart rebuilding the
    /// windows from the contact history), as a live answer or abandon would count. Returns
    /// `false` for an unknown queue.
    pub fn seed_service_level(
        &self,
        queue: &str,
        segment: Segment,
        at: Millis,
        now: Millis,
        waited_ms: u64,
        answered: bool,
    ) -> bool {
        let Some(q) = self.queues.iter().find(|q| &*q.name == queue) else { return false };
        let seg = &q.segments[segment.index()];
        for (window, threshold) in [(&q.sl_window, q.sl_threshold_ms), (&seg.sl_window, seg.sl_threshold_ms)] {
            let within = waited_ms <= threshold;
            let add = if answered {
                crate::sl_window::SlCounts { answered: 1, within: u64::from(within), abandoned_late: 0 }
            } else if !within {
                crate::sl_window::SlCounts { answered: 0, within: 0, abandoned_late: 1 }
            } else {
                continue;
            };
            window.record(at, now, add);
        }
        true
    }

    /// The queues' part of [`Engine::snapshot`], without the operators (for metrics: no cost
    /// per logged-in operator).
    #[must_use]
    pub fn queue_views(&self, now: Millis) -> Vec<QueueSnapshot> {
        self.queues
            .iter()
            .map(|q| {
                let st = q.state.lock();
                let oldest =
                    st.waiting.iter().flat_map(|m| m.values()).map(|w| now.since(w.arrived)).max().unwrap_or(0);
                let waiting = st.len() as u32;
                let estimated_wait_ms = q.estimated_wait(q.main_channel(), waiting + 1);
                drop(st);
                QueueSnapshot {
                    name: q.name.to_string(),
                    open: self.is_open(q, now),
                    waiting,
                    offered: q.offered.load(Ordering::Relaxed),
                    in_service: q.in_service.load(Ordering::Relaxed),
                    oldest_wait_ms: oldest,
                    service_level: q.service_level(now),
                    service_level_target: q.sl_target,
                    service_level_threshold_ms: q.sl_threshold_ms,
                    estimated_wait_ms,
                    operators_logged_in: q.candidates.read().len() as u32,
                    answered: q.answered.load(Ordering::Relaxed),
                    answered_within_threshold: q.answered_in_sl.load(Ordering::Relaxed),
                    abandoned_after_threshold: q.abandoned_after_sl.load(Ordering::Relaxed),
                    segments: segment_views(q, now),
                }
            })
            .collect()
    }

    /// A view of every queue and operator.
    #[must_use]
    pub fn snapshot(&self, now: Millis) -> Snapshot {
        let queues = self.queue_views(now);
        let n = (self.next_slot.load(Ordering::Relaxed) as usize).min(self.slots.len());
        let operators = self.slots[..n]
            .iter()
            .filter_map(|slot| {
                let session = slot.session.lock().clone()?;
                let w = slot.word();
                let held = slot.held.lock().contacts.clone();
                let (consulting_with, conference) = held.iter().find_map(|c| self.consulting(c)).unwrap_or_default();
                Some(OperatorSnapshot {
                    id: session.id.to_string(),
                    group: session.group.to_string(),
                    status: slot.visible_status(),
                    // A reason only while paused (a logged-out operator's last one is stale).
                    pause_reason: if slot.visible_status() == OperatorStatus::Paused {
                        slot.pause_reason.lock().clone()
                    } else {
                        String::new()
                    },
                    active_contacts: u32::from(w.total_load()),
                    status_since_ms: slot.status_since(),
                    consulting_with: consulting_with.to_string(),
                    conference,
                })
            })
            .collect();
        Snapshot { queues, operators }
    }

    /// The contacts offered to or in service with operator `operator_id` (empty if not logged
    /// in): what a logout of theirs would give back or cancel.
    #[must_use]
    pub fn held_by(&self, operator_id: &str) -> Vec<Arc<str>> {
        let Some(idx) = self.operator_ids.get(operator_id).map(|r| *r.value()) else { return Vec::new() };
        let held = self.slot(idx).held.lock().contacts.clone();
        held
    }

    /// Whom the operator holding contact `c` consults, if `c` is in a consultation: the operator
    /// who asked (`c` is the consultation) or the one who took it (`c` is the contact; empty
    /// while nobody has), and whether the three are in conference.
    fn consulting(&self, c: &str) -> Option<(Arc<str>, bool)> {
        let (of, consult, state) = self.contacts.get(c).map(|r| (r.consult_of.clone(), r.consult.clone(), r.state))?;
        if let Some(of) = of {
            // Only once taken: an operator merely offered the consultation is in none.
            if !matches!(state, CState::InService { .. }) {
                return None;
            }
            return Some((self.operator_name(of.from), of.conference));
        }
        let (_, second, conference) = consult.and_then(|_| self.open_consultation(c))?;
        Some((second.unwrap_or_else(|| Arc::from("")), conference))
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
        let mut parked_expected: HashMap<(u32, (Millis, u64)), Arc<str>> = HashMap::new();
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
                CState::Parked { due } => {
                    parked_expected.insert((r.queue, due), r.key().clone());
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
            for (due, c) in &st.parked {
                if parked_expected.remove(&(q.idx, *due)).as_ref() != Some(c) {
                    v.push(format!("queue {}: parked {c} not matched by a parked contact", q.name));
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
        for ((qi, _), c) in parked_expected {
            v.push(format!("contact {c} parked in {} but absent from it", self.queues[qi as usize].name));
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
                        .find(|x| self.can_serve(q, x, margin, &session, i, now) && fundable(&x.funding))
                    {
                        v.push(format!("operator {} idles while {} waits in {}", session.id, c.contact, q.name));
                    }
                }
            }
        }
        v
    }
}

/// The per-segment figures of a queue with segment rules (each ruled segment and the general one).
fn segment_views(q: &Queue, now: Millis) -> Vec<SegmentSnapshot> {
    if !q.segments.iter().any(|s| s.ruled) {
        return Vec::new();
    }
    Segment::ALL
        .into_iter()
        .zip(&q.segments)
        .filter(|(seg, s)| s.ruled || *seg == Segment::General)
        .map(|(segment, s)| SegmentSnapshot {
            segment,
            waiting: s.waiting.load(Ordering::Relaxed),
            service_level: s.sl_window.totals(now).service_level(),
            service_level_target: s.sl_target,
            service_level_threshold_ms: s.sl_threshold_ms,
        })
        .collect()
}
