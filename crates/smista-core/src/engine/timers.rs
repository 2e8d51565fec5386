//! The clock: offer time-outs, maximum waits, wrap-up ends, skill expansion, callbacks due for
//! their next attempt, places kept for a redial, and the rotation of the finished-contacts memory.

use super::*;

impl Engine {
    /// Advances time: expires offers (contact back at the head, operator paused "no answer"),
    /// overflows or diverts contacts past their maximum wait, ends wrap-ups, and matches operators
    /// freed by all that or by skill expansion. Call it often (the server does every 100 ms).
    pub fn tick(&self, now: Millis, out: &mut Vec<Event>) {
        self.rotate_finished(now);
        self.purge_places(now);
        self.reserved.retain(|_, until| *until > now.0);
        let mut redispatch: Vec<(u32, Arc<str>)> = Vec::new();
        let mut moving: Vec<(u32, Arc<str>)> = Vec::new();
        for q in &self.queues {
            self.count_working(q);
            let mut st = q.state.lock();
            for id in self.unpark_due(q, &mut st, now, out) {
                redispatch.push((q.idx, id));
            }
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
                    *operator_slot.pause_reason.lock() = crate::model::NO_ANSWER.to_owned();
                }
                self.drop_held(slot, &id);
                operator_slot.release(gen, rec.channel, now);
                let session = operator_slot.session.lock().clone();
                if let Some(s) = &session {
                    self.status_event_with(s, t, crate::model::NO_ANSWER, false, out);
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
                q.left_waiting(w.segment);
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
        // Only operators in wrap-up, and when contacts wait those that may work (available or
        // in wrap-up, with room), are visited: the tick's cost follows what can happen, not the
        // number of desks logged in.
        let n = (self.next_slot.load(Ordering::Relaxed) as usize).min(self.slots.len());
        for i in self.wrap_bits.set_slots(n) {
            let slot = self.slot(i);
            // Cleared first, set again if still in wrap-up: a concurrent set is never lost.
            self.wrap_bits.clear(i);
            let w = slot.word();
            if w.status() != OperatorStatus::WrapUp {
                continue;
            }
            if slot.wrap_until() > now {
                self.wrap_bits.set(i);
                continue;
            }
            let t = slot.transition(w.generation(), &[OperatorStatus::WrapUp], OperatorStatus::Available, None, now);
            if let Some(s) = slot.session.lock().clone() {
                self.status_event(&s, t, out);
            }
            // Free again: the longest-idle index, and a look for waiting work.
            self.mark_free(i);
            if slot.word().status() == OperatorStatus::WrapUp {
                self.wrap_bits.set(i);
            }
        }
        if !self.queues.iter().any(|q| q.waiting.load(Ordering::Relaxed) > 0) {
            return;
        }
        for i in self.free_bits.set_slots(n) {
            let slot = self.slot(i);
            // Cleared first, set again below if still free: a concurrent free is never lost.
            self.free_bits.clear(i);
            if !Self::may_work(slot.word()) {
                continue;
            }
            self.free_bits.set(i);
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

    pub(super) fn overflow_or_divert(&self, from: u32, id: &Arc<str>, now: Millis, out: &mut Vec<Event>) {
        let q = &self.queues[from as usize];
        let chain = q.overflow();
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

    pub(super) fn rotate_finished(&self, now: Millis) {
        let last = self.last_rotation.load(Ordering::Relaxed);
        if now.0 < last.saturating_add(self.retention_ms / 2) {
            return;
        }
        if self.last_rotation.compare_exchange(last, now.0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.finished.rotate();
        }
    }

    // ----------------------------------------------------------------------------------------
    // Administration and observation
    // ----------------------------------------------------------------------------------------
}
