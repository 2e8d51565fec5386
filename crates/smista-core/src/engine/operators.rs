//! Operators: slots, login and logout, states, and what a desk does with an offer (accept,
//! decline, complete).

use super::*;
use crate::model::Skill;

impl Engine {
    /// The slot of an operator id this engine has seen (logged in or not): `UnknownOperator`
    /// otherwise.
    pub(super) fn known_slot(&self, operator_id: &str) -> Result<u32, RoutingError> {
        self.operator_ids
            .get(operator_id)
            .map(|r| *r.value())
            .ok_or_else(|| RoutingError::UnknownOperator(operator_id.to_owned()))
    }

    pub(super) fn drop_held(&self, slot: u32, id: &Arc<str>) {
        self.slot(slot).held.lock().contacts.retain(|c| c != id);
    }

    // ----------------------------------------------------------------------------------------
    // Operators
    // ----------------------------------------------------------------------------------------

    /// The slot of operator `id`, allocating one on first login, with its owner lock held. Retries
    /// when the slot found in the map was reclaimed for another id in between.
    pub(super) fn owned_slot(&self, id: &Arc<str>) -> Result<(u32, OwnerGuard<'_>), RoutingError> {
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
    pub(super) fn allocate_slot(&self, id: &Arc<str>) -> Result<u32, RoutingError> {
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

    pub(super) fn logged_in(&self, operator_id: &str) -> Result<(u32, Arc<Session>), RoutingError> {
        validate_id("operator_id", operator_id)?;
        let idx = self.known_slot(operator_id)?;
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

    /// Whether `operator_id` is logged in now (O(1): no snapshot).
    #[must_use]
    pub fn is_logged_in(&self, operator_id: &str) -> bool {
        self.logged_in(operator_id).is_ok()
    }

    /// The queues an operator with `skills` serves, with their margin on each.
    pub(super) fn queues_for(&self, skills: &[(String, u8)]) -> Vec<(u32, i8)> {
        self.queues.iter().filter_map(|q| q.margin_for(skills).map(|m| (q.idx, m))).collect()
    }

    /// Changes a logged-in operator's skills, channel capacities or group without a logout; it
    /// takes effect at their next offer (contacts in hand stay with them). A capacity may not drop
    /// below the contacts in hand on its channel, and the group may change only while they hold
    /// no contact (its budget would pay what the old one funded). Returns the queues they now
    /// serve.
    pub fn update_operator(
        &self,
        u: &OperatorUpdate,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Vec<Arc<str>>, RoutingError> {
        validate_id("operator_id", &u.operator_id)?;
        let skills = u.skills.as_deref().map(parse_skills).transpose()?;
        let caps = u.channels.as_deref().map(parse_caps).transpose()?;
        let group = match &u.group {
            Some(g) => Some(self.groups.get(g).ok_or_else(|| RoutingError::UnknownGroup(crate::error::clip(g)))?),
            None => None,
        };
        let (idx, old) = self.logged_in(&u.operator_id)?;
        let slot = self.slot(idx);
        if let Some(g) = group {
            if *g.name != *old.group && slot.word().total_load() > 0 {
                return Err(RoutingError::WrongState(format!(
                    "operator `{}` holds contacts: the group (and the budget paying them) can change once they are done",
                    u.operator_id
                )));
            }
        }
        let skills = skills.unwrap_or_else(|| old.skills.clone());
        let caps = caps.unwrap_or(old.caps);
        let new = Session {
            group: group.map_or_else(|| old.group.clone(), |g| g.name.clone()),
            budget: group.map_or_else(|| old.budget.clone(), |g| g.budget.clone()),
            queues: self.queues_for(&skills),
            skills,
            caps,
            ..(*old).clone()
        };
        match slot.set_caps(old.gen, caps) {
            None => return Err(RoutingError::UnknownOperator(u.operator_id.clone())),
            Some(false) => {
                return Err(RoutingError::WrongState(format!(
                    "operator `{}` holds more contacts than the new capacities allow: change them once those end",
                    u.operator_id
                )))
            }
            Some(true) => {}
        }
        let names = new.queues.iter().map(|(q, _)| self.queues[*q as usize].name.clone()).collect();
        self.reinstall(idx, &old, new);
        self.find_work(idx, now, out);
        Ok(names)
    }

    /// Replaces the session of slot `idx` (same login) with `new`: in the slot, in every queue's
    /// candidates, in the free-operator index.
    pub(super) fn reinstall(&self, idx: u32, old: &Session, new: Session) {
        let slot = self.slot(idx);
        let new = Arc::new(new);
        {
            let mut s = slot.session.lock();
            let w = slot.word();
            let current = s.as_ref().is_some_and(|x| x.gen == old.gen && x.id == old.id);
            if !current || w.status() == OperatorStatus::LoggedOut || w.generation() != old.gen {
                return;
            }
            *s = Some(new.clone());
        }
        for q in &self.queues {
            let margin = new.queues.iter().find(|(qi, _)| *qi == q.idx).map(|(_, m)| *m);
            {
                let mut c = q.candidates.write();
                c.retain(|c| c.slot != idx);
                if let Some(margin) = margin {
                    c.push(Candidate { slot: idx, gen: new.gen, margin, session: new.clone() });
                }
            }
            q.idle.lock().retain(|e| e.slot != idx);
            self.count_working(q);
        }
        self.mark_free(idx);
    }

    /// Logs an operator in; returns the queues they can serve. Idempotent for the same session id.
    pub fn login(&self, req: &LoginRequest, now: Millis, out: &mut Vec<Event>) -> Result<Vec<Arc<str>>, RoutingError> {
        validate_id("operator_id", &req.operator_id)?;
        validate_id("session_id", &req.session_id)?;
        let group =
            self.groups.get(&req.group).ok_or_else(|| RoutingError::UnknownGroup(crate::error::clip(&req.group)))?;
        let skills = parse_skills(&req.skills)?;
        let caps = parse_caps(&req.channels)?;
        let id: Arc<str> = Arc::from(req.operator_id.as_str());
        let queues = self.queues_for(&skills);
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
        {
            let mut installed = slot.session.lock();
            // A hold for an appointment of this operator (set before they logged in) applies;
            // one of a previous owner of the slot does not.
            slot.reserved_until.store(self.reserved.get(&*id).map_or(0, |u| *u), Ordering::Relaxed);
            *installed = Some(session.clone());
        }
        for (qi, margin) in &queues {
            let mut c = self.queues[*qi as usize].candidates.write();
            c.retain(|c| c.slot != idx);
            c.push(Candidate { slot: idx, gen, margin: *margin, session: session.clone() });
        }
        drop(owner);
        self.count_working_for(&session);
        let reason = req.paused.as_deref().unwrap_or("");
        self.status_event_with(
            &session,
            Some(Transition { from: OperatorStatus::LoggedOut, to: first }),
            reason,
            false,
            out,
        );
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
        self.count_working_for(&session);
        self.logged_out.lock().push_back(idx);
        // Contacts kept for this operator (an appointment, a transfer to them by name) are
        // anyone's now (see `can_serve`): offer them to whoever is free.
        for (qi, _) in &session.queues {
            let pinned: Vec<Arc<str>> = {
                let st = self.queues[*qi as usize].state.lock();
                st.waiting
                    .iter()
                    .flat_map(|w| w.values().take(SCAN_LIMIT))
                    .filter(|w| w.pinned.is_some_and(|(s, until)| s == idx && now < until))
                    .map(|w| w.contact.clone())
                    .collect()
            };
            for c in pinned {
                self.dispatch_contact(*qi, &c, now, out);
            }
        }
        // What they hold now: read after the transition, so a contact handed to them meanwhile
        // (a consultation's hand-over checks they are logged in, under this lock) is here.
        let held: Vec<Arc<str>> = slot.held.lock().contacts.clone();
        for c in held {
            // A contact being handed over is `Arriving` for a moment: its cancel is Busy, retried.
            for _ in 0..10_000 {
                let Some((qi, state)) = self.contacts.get(&c).map(|r| (r.queue, r.state)) else { break };
                match state {
                    CState::Offered { slot: s, .. } if s == idx => {
                        self.return_offer(qi, &c, idx, false, now, out);
                    }
                    CState::InService { slot: s, .. } if s == idx => {
                        if let Err(RoutingError::Busy(_)) = self.cancel(&c, now, out) {
                            std::thread::yield_now();
                            continue;
                        }
                    }
                    CState::Arriving => {
                        std::thread::yield_now();
                        continue;
                    }
                    _ => {}
                }
                break;
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
                self.count_working_for(&session);
                self.find_work(idx, now, out);
            }
            RequestedState::Paused(reason) => {
                if reason.len() > 64 || reason.chars().any(crate::error::is_hazard) {
                    return Err(RoutingError::invalid("reason", "at most 64 printable characters"));
                }
                // The same pause again changes nothing (its start stays where it was).
                if slot.word().status() == OperatorStatus::Paused && *slot.pause_reason.lock() == *reason {
                    return Ok(slot.visible_status());
                }
                let t = slot.transition(
                    session.gen,
                    &[OperatorStatus::Available, OperatorStatus::WrapUp, OperatorStatus::Paused],
                    OperatorStatus::Paused,
                    None,
                    now,
                );
                let before = std::mem::replace(&mut *slot.pause_reason.lock(), reason.clone());
                let changed = t.is_some_and(|t| t.from == OperatorStatus::Paused) && before != *reason;
                self.status_event_with(&session, t, reason, changed, out);
                self.count_working_for(&session);
            }
        }
        Ok(slot.visible_status())
    }

    pub(super) fn offered_to(&self, operator_id: &str, contact_id: &str) -> Result<OfferRef, RoutingError> {
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
        // A later leg of a transferred contact is dated after the one before (see `not_before`).
        let now = now.max(rec.not_before);
        let waited_ms = now.since(rec.arrived);
        // A contact is answered once in the service level: a callback's later attempts (after
        // one went unanswered) do not count again, as its history record does not.
        // A transferred contact's later legs are not answers again either (its first leg was).
        // A consultation is no caller: not in the service level.
        if rec.callback.unwrap_or(0) == 0 && rec.answered.is_none() && rec.consult_of.is_none() {
            q.record_accept(rec.segment, waited_ms, now);
        }
        // A callback is answered by the attempt the citizen picks up, not by its first.
        if rec.callback.is_none() {
            rec.answered.get_or_insert(now);
        }
        rec.state = CState::InService { slot, gen, accepted_at: now };
        let held = rec.funding.as_ref().filter(|b| session.budget.as_ref() == Some(*b)).is_some_and(|b| {
            self.gate.started(&Started {
                budget: b,
                contact_id: &id,
                queue: &q.name,
                group: &session.group,
                operator: &session.id,
                channel: rec.channel,
                arrived: rec.arrived,
                now,
            })
        });
        out.push(Event::Accepted {
            contact: id.clone(),
            queue: q.name.clone(),
            operator: session.id.clone(),
            channel: rec.channel,
            waited_ms,
            held,
        });
        if let Some(c) = &rec.consult_of {
            out.push(self.consult_event(c, &id, &q.name, Some(session.id.clone()), consult::ConsultStep::Accepted));
        }
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
    pub(super) fn return_offer(
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
            // The operator it was kept for passed it on (declined, or did not answer): anyone may
            // take it now.
            if rec.pinned.is_some_and(|(s, _)| s == slot) {
                rec.pinned = None;
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
        self.complete_at(operator_id, contact_id, wrap_up_ms, now, now, out)
    }

    /// [`complete`](Self::complete) of a contact that ended at `ended` (the desk's word for when
    /// the conversation ended, kept on its retries): the handle time, and so the cost, run to
    /// `ended`, held between the acceptance and `now`, so a completion that reached us late (a
    /// failover, a restart, a desk retrying through an outage) does not bill the delay. The
    /// wrap-up starts `now`.
    pub fn complete_at(
        &self,
        operator_id: &str,
        contact_id: &str,
        wrap_up_ms: u64,
        ended: Millis,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Completion, RoutingError> {
        validate_id("operator_id", operator_id)?;
        validate_id("contact_id", contact_id)?;
        if wrap_up_ms > 3_600_000 {
            return Err(RoutingError::invalid("wrap_up_ms", "above one hour"));
        }
        let idx = self.known_slot(operator_id)?;
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
        let handle_ms = ended.min(now).max(accepted_at).since(accepted_at);
        let (t, completion) = self.end_leg(q, slot, gen, rec.channel, &id, handle_ms, wrap, now);
        let consult = rec.consult.take();
        self.finish(&mut rec, &id, Outcome::Completed, None, Some((slot, completion, accepted_at)), now, out);
        drop(rec);
        self.remove_done(&id);
        self.end_consult_with(&id, consult, now, out);
        if let Some(s) = &session {
            self.status_event(s, t, out);
        }
        self.find_work(slot, now, out);
        Ok(completion)
    }

    /// Ends operator `slot`'s leg of contact `id` (in service in `q`, handled `handle_ms`): its
    /// wrap-up (`wrap` ms) starts before its capacity is released, so no offer slips in between
    /// — a completion during a wrap-up extends it, never shortens it; a paused operator stays
    /// paused — and the queue's and the operator's figures count it. Returns the operator's
    /// transition, if any, and the leg's completion. The contact's own state is the caller's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn end_leg(
        &self,
        q: &Queue,
        slot: u32,
        gen: u8,
        channel: Channel,
        id: &Arc<str>,
        handle_ms: u64,
        wrap: u64,
        now: Millis,
    ) -> (Option<Transition>, Completion) {
        let operator_slot = self.slot(slot);
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
        let completion = Completion { handle_ms, wrap_up_ms: wrap_applied };
        q.in_service.fetch_sub(1, Ordering::Relaxed);
        self.drop_held(slot, id);
        operator_slot.count_completed(handle_ms);
        q.record_occupancy(handle_ms.saturating_add(wrap_applied));
        operator_slot.release(gen, channel, now);
        (t, completion)
    }

    // ----------------------------------------------------------------------------------------
    // Time
    // ----------------------------------------------------------------------------------------
}

/// What [`Engine::update_operator`] changes; `None` keeps the current value.
#[derive(Clone, Debug, Default)]
pub struct OperatorUpdate {
    /// The operator.
    pub operator_id: String,
    /// Another operator group.
    pub group: Option<String>,
    /// New skills with levels (replacing all).
    pub skills: Option<Vec<Skill>>,
    /// New channel capacities (replacing all; empty means one voice contact).
    pub channels: Option<Vec<(Channel, u8)>>,
}

/// The most skills an operator may hold (a Login or an update with more is refused before any
/// per-skill work).
pub const MAX_SKILLS: usize = 64;

/// Checked skills, sorted by name. Bounded first, then one pass and a sort: a hostile request
/// costs at most [`MAX_SKILLS`] checks.
fn parse_skills(given: &[Skill]) -> Result<Vec<(String, u8)>, RoutingError> {
    if given.len() > MAX_SKILLS {
        return Err(RoutingError::invalid("skills", format!("at most {MAX_SKILLS} skills ({} given)", given.len())));
    }
    let mut skills: Vec<(String, u8)> = Vec::with_capacity(given.len());
    for s in given {
        if !crate::config::valid_name(&s.name) {
            return Err(RoutingError::invalid(
                "skills.name",
                format!("`{}` is not a valid skill name", crate::error::clip(&s.name)),
            ));
        }
        if !(1..=10).contains(&s.level) {
            return Err(RoutingError::invalid(
                "skills.level",
                format!("level {} of `{}` is not 1..=10", s.level, crate::error::clip(&s.name)),
            ));
        }
        skills.push((s.name.clone(), s.level));
    }
    skills.sort_unstable();
    if let Some(w) = skills.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(RoutingError::invalid("skills", format!("skill `{}` given twice", w[0].0)));
    }
    Ok(skills)
}

/// Checked channel capacities; none given means one voice contact.
fn parse_caps(channels: &[(Channel, u8)]) -> Result<[u8; 4], RoutingError> {
    let mut caps = [0u8; 4];
    if channels.len() > caps.len() {
        return Err(RoutingError::invalid(
            "channels",
            format!("at most {} channels ({} given)", caps.len(), channels.len()),
        ));
    }
    if channels.is_empty() {
        caps[Channel::Voice.index()] = 1;
    }
    for (ch, n) in channels {
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
    Ok(caps)
}
