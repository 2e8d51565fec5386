//! Matching: a contact looking for a free operator, an operator looking for the best waiting
//! contact, claims, takes and offers (the protocol at the top of `engine/mod.rs`).

use super::*;
use crate::idle::IdleEntry;

impl Engine {
    /// Finds an operator for a queued contact, as long as one can be claimed.
    /// Returns the assignment if this call made one.
    pub(super) fn dispatch_contact(
        &self,
        qi: u32,
        id: &Arc<str>,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Option<Decision> {
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
                let view = waiting_of(id, &rec, None);
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
    pub(super) fn pick_operator(
        &self,
        q: &Queue,
        w: &Waiting,
        ch: Channel,
        now: Millis,
        excluded_budgets: &[Arc<str>],
        excluded_slots: &[u32],
    ) -> Option<Candidate> {
        if q.strategy() == Strategy::LongestIdle {
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
            if excluded_slots.contains(&c.slot) || !self.can_serve(q, w, c.margin, &c.session, c.slot, now) {
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
            let key = match q.strategy() {
                Strategy::LongestIdle => (tier, idle, u64::from(c.slot)),
                Strategy::MostSkilled => (tier, (10 - i64::from(c.margin)).max(0) as u64, idle),
                Strategy::RoundRobin => (tier, ((i + n - rr) % n) as u64, 0),
                Strategy::LeastOccupied => {
                    (tier, u64::from(word.total_load()) * 1000 / u64::from(word.total_cap().max(1)), idle)
                }
                Strategy::FewestContacts => (tier, slot.completed().0, idle),
                Strategy::LeastTalkTime => (tier, slot.completed().1, idle),
            };
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, i));
            }
        }
        let (_, i) = best?;
        if q.strategy() == Strategy::RoundRobin {
            q.rr_cursor.store(i + 1, Ordering::Relaxed);
        }
        Some(cands[i].clone())
    }

    /// Longest-idle selection through the queue's free-operator index: the first entry that is
    /// still valid and can take `w` wins. Entries of operators who are busy, paused, logged out
    /// or freed again since (a newer entry exists) are dropped on the way.
    pub(super) fn pick_longest_idle(
        &self,
        q: &Queue,
        w: &Waiting,
        ch: Channel,
        now: Millis,
        excluded_budgets: &[Arc<str>],
        excluded_slots: &[u32],
    ) -> Option<Candidate> {
        let mut idle = q.idle.lock();
        let mut stale = Vec::new();
        let mut found = None;
        for (tier, e) in idle.iter() {
            let Some(word) = self.idle_entry_word(&e) else {
                stale.push((tier, e));
                continue;
            };
            let slot = self.slot(e.slot);
            if excluded_slots.contains(&e.slot) || !slot.can_take(word, ch) {
                continue;
            }
            // The session is read here, for the one entry that may win: the index holds none,
            // so freeing an operator writes no shared reference count.
            let Some(session) = slot.session.lock().clone().filter(|s| s.gen == e.gen) else {
                stale.push((tier, e));
                continue;
            };
            if !self.can_serve(q, w, e.margin, &session, e.slot, now)
                || refused_here(&session.budget, &w.funding, excluded_budgets)
            {
                continue;
            }
            found = Some(Candidate { slot: e.slot, gen: e.gen, margin: e.margin, session });
            break;
        }
        idle.remove(&stale);
        found
    }

    /// The operator's word, if a free-operator index entry still stands for an operator free to
    /// take work now: same session, not freed again since, available with room (one load of
    /// the word, the line a pick waits for). An operator in wrap-up is left out, and enters
    /// again when the wrap-up ends (the tick's `mark_free`): kept in, every pick walked past
    /// all the queue's operators in wrap-up (a third of a floor, with wrap-ups as long as calls).
    fn idle_entry_word(&self, e: &IdleEntry) -> Option<crate::operator::Word> {
        let slot = self.slot(e.slot);
        let word = slot.word();
        (word.generation() == e.gen
            && slot.free_since() == e.since
            && word.status() == OperatorStatus::Available
            && Self::may_work(word))
        .then_some(word)
    }

    /// Whether an operator word may take work now or later without anyone else acting: available
    /// or in wrap-up, with room on some channel.
    pub(super) fn may_work(word: crate::operator::Word) -> bool {
        matches!(word.status(), OperatorStatus::Available | OperatorStatus::WrapUp)
            && Channel::ALL.iter().any(|c| word.has_room(*c))
    }

    /// Enters a free operator in the tick's list of operators that may work and, when it is
    /// available (not in wrap-up), in the free-operator index of each longest-idle queue it serves.
    /// Whether it entered an index.
    pub(super) fn mark_free(&self, slot_idx: u32) -> bool {
        let slot = self.slot(slot_idx);
        let Some(session) = slot.session.lock().clone() else { return false };
        let word = slot.word();
        if word.generation() != session.gen || !Self::may_work(word) {
            return false;
        }
        self.free_bits.set(slot_idx);
        if word.status() == OperatorStatus::WrapUp {
            self.wrap_bits.set(slot_idx);
        }
        // In wrap-up: out of the index until the wrap-up ends (the tick marks it free again).
        if word.status() != OperatorStatus::Available {
            return false;
        }
        let since = slot.free_since();
        let mut entered = false;
        for &(qi, margin) in &session.queues {
            let q = &self.queues[qi as usize];
            if q.strategy() != Strategy::LongestIdle {
                continue;
            }
            entered = true;
            let tier = u8::from(q.prefer_unbudgeted && session.budget.is_some());
            let mut idle = q.idle.lock();
            idle.insert(tier, IdleEntry { since, slot: slot_idx, gen: session.gen, margin });
            idle.compact_if_due(|e| self.idle_entry_word(e).is_some());
        }
        entered
    }

    /// Turns a claimed operator and a waiting contact into an offer, if the contact is still
    /// waiting with rank `rank`. The operator's capacity must already be claimed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn take(
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
        q.left_waiting(w.segment);
        Ok(self.offer_locked(q, &mut st, &mut rec, id, session, slot, new_funding, now, out))
    }

    /// Asks the operator's budget to fund the contact, if it is not funded by it already.
    pub(super) fn fund_for(
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
            priority: q.priority() + rec.priority,
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
    pub(super) fn offer_locked(
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
        let deadline = (now.plus(st.params.offer_timeout_ms), st.next_seq());
        st.offered.insert(deadline, id.clone());
        q.offered.fetch_add(1, Ordering::Relaxed);
        rec.state = CState::Offered { slot, gen: session.gen, deadline };
        self.slot(slot).held.lock().contacts.push(id.clone());
        out.push(Event::Offered {
            contact: id.clone(),
            queue: q.name.clone(),
            operator: session.id.clone(),
            group: session.group.clone(),
            channel: rec.channel,
            priority: q.priority() + rec.priority,
            segment: rec.segment,
            language: rec.language.clone(),
            deadline: deadline.0,
            waited_ms: now.since(rec.arrived),
            callback: rec.callback.is_some(),
            consultation: rec.consult_of.as_ref().map(|c| (c.parent.clone(), self.operator_name(c.from))),
        });
        deadline.0
    }

    /// Gives a free operator the best waiting contacts it can take, across its queues, until its
    /// capacity is used or nothing eligible waits.
    ///
    /// Publish, then look, as the protocol at the top of `engine/mod.rs` says: an arriving
    /// contact finds a free operator of a longest-idle queue only through the queue's index, and
    /// the operator enters the index after its first look (so that a contact it takes at once
    /// never sees it there). A contact that was queued between that look and the entry looked
    /// in the index before the operator was in it; so, once in, the operator looks again
    /// whenever a queue it serves has contacts waiting. The index's lock orders the two sides:
    /// either the contact's look comes after the entry and finds the operator, or the entry
    /// comes after that look, and so after the contact was counted in `waiting`.
    pub(super) fn find_work(&self, slot_idx: u32, now: Millis, out: &mut Vec<Event>) {
        self.find_work_inner(slot_idx, now, out);
        // Whatever capacity is left is now visible to arriving contacts; then look again, until
        // a look takes nothing (what waits is not for this operator) or nothing waits.
        while self.mark_free(slot_idx) && self.work_waits(slot_idx) {
            let before = out.len();
            self.find_work_inner(slot_idx, now, out);
            if out.len() == before {
                return;
            }
        }
    }

    /// Whether a queue the operator in `slot_idx` serves has contacts waiting.
    fn work_waits(&self, slot_idx: u32) -> bool {
        let slot = self.slot(slot_idx);
        let queues: Vec<u32> =
            slot.session.lock().as_ref().map(|s| s.queues.iter().map(|(q, _)| *q).collect()).unwrap_or_default();
        queues.iter().any(|q| self.queues[*q as usize].waiting.load(Ordering::Relaxed) > 0)
    }

    pub(super) fn find_work_inner(&self, slot_idx: u32, now: Millis, out: &mut Vec<Event>) {
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
                        if !self.can_serve(q, w, margin, &session, slot_idx, now) {
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
}
