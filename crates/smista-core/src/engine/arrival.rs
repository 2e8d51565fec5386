//! A contact's arrival and end: offering (placement in a queue or its overflow chain, or a
//! diversion), the answers to repeated offers, cancellation, and the one place a contact finishes.

use super::*;

impl Engine {
    /// Routes a new contact and returns its decision. Idempotent on the contact id: repeating an
    /// offer returns the current decision and routes nothing twice.
    pub fn offer(&self, req: &OfferRequest, now: Millis, out: &mut Vec<Event>) -> Result<Decision, RoutingError> {
        self.offer_as(req, Kind::Plain, now, out)
    }

    /// Routes an appointment whose slot has started, as a contact at the head of its queue
    /// (ahead of ordinary traffic): for `grace_ms` only its booked `operator` may take it (if
    /// they are logged in; if not, any operator with the skill at once), then anyone who can.
    /// Idempotent on the contact id like [`Engine::offer`].
    pub fn offer_appointment(
        &self,
        req: &OfferRequest,
        operator: &str,
        grace_ms: u64,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Decision, RoutingError> {
        let slot = self
            .operator_ids
            .get(operator)
            .map(|r| *r.value())
            .filter(|&s| self.slot(s).session.lock().as_ref().is_some_and(|x| *x.id == *operator));
        self.offer_as(req, Kind::Appointment(slot.map(|s| (s, now.plus(grace_ms)))), now, out)
    }

    /// Keeps operator `operator_id` from ordinary offers until `until` (an appointment is due):
    /// only contacts pinned to them are offered to them meanwhile, also if they log in later.
    pub fn hold_operator(&self, operator_id: &str, until: Millis) {
        if validate_id("operator_id", operator_id).is_err() {
            return;
        }
        self.reserved.entry(Arc::from(operator_id)).and_modify(|u| *u = (*u).max(until.0)).or_insert(until.0);
        let Some(slot) = self.operator_ids.get(operator_id).map(|r| *r.value()) else { return };
        let s = self.slot(slot);
        // Under the session lock, so a slot handed to another operator id is not held.
        let session = s.session.lock();
        if session.as_ref().is_some_and(|x| *x.id == *operator_id) {
            s.reserved_until.fetch_max(until.0, Ordering::Relaxed);
        }
    }

    /// `offer`, of a contact of `kind`.
    pub(super) fn offer_as(
        &self,
        req: &OfferRequest,
        kind: Kind,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Decision, RoutingError> {
        validate_id("contact_id", &req.contact_id)?;
        if req.priority > MAX_PRIORITY {
            return Err(RoutingError::invalid("priority", format!("{} is above {MAX_PRIORITY}", req.priority)));
        }
        if req.language.len() > 64 {
            return Err(RoutingError::invalid("language", "longer than 64 bytes"));
        }
        if !req.language.is_empty() && !crate::config::valid_name(&req.language) {
            return Err(RoutingError::invalid(
                "language",
                "must be 1 to 64 characters of [A-Za-z0-9_.-] (a skill name)",
            ));
        }
        if req.max_patience_ms > crate::config::MAX_DURATION_MS {
            return Err(RoutingError::invalid("max_patience_ms", "above one day"));
        }
        let mut q0 = self.queue_idx(&req.queue)?;
        let rule = &self.queues[q0 as usize].segments[req.segment.index()];
        let mut boost = rule.boost;
        let leg = matches!(kind, Kind::Leg { .. });
        // A transferred leg goes where its operator sent it, at the target's transfer priority.
        match rule.route_to {
            Some(to) if !leg => q0 = to,
            _ if leg => boost = self.queues[q0 as usize].transfer_priority.saturating_sub(req.priority),
            _ => {}
        }
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
                            reopens: self.reopens_if(reason, f.queue, now),
                        }),
                        None => Err(RoutingError::ContactFinished(req.contact_id.clone())),
                    };
                }
                let mut arrived = req.arrived.map_or(now, |a| a.min(now));
                let mut priority = req.priority + boost;
                let keeps_key = self.queues[q0 as usize].resume_window_ms > 0 && !req.caller_key.is_empty();
                let caller_key = keeps_key.then(|| Arc::from(req.caller_key.as_str()));
                if let Some(place) = caller_key.as_ref().filter(|_| !leg).and_then(|k| self.resume_place(k, q0, now)) {
                    arrived = arrived.min(place.arrived);
                    priority = priority.max(place.priority);
                }
                let (pinned, appointment, paid, declined) = match kind {
                    Kind::Plain => (None, false, Vec::new(), Vec::new()),
                    Kind::Appointment(pin) => (pin, true, Vec::new(), Vec::new()),
                    Kind::Leg { pinned, paid, from } => (pinned, false, paid, from.into_iter().collect()),
                };
                v.insert(Contact {
                    queue: q0,
                    entry_queue: q0,
                    caller_key,
                    callback: (req.channel == Channel::Callback).then_some(0),
                    pinned,
                    appointment,
                    channel: req.channel,
                    priority,
                    segment: req.segment,
                    language: Arc::from(req.language.as_str()),
                    arrived,
                    entered: arrived,
                    patience_ms: req.max_patience_ms,
                    funding: None,
                    declined,
                    state: CState::Arriving,
                    legs: Vec::new(),
                    paid,
                    not_before: Millis(0),
                    answered: None,
                    consult: None,
                    consult_of: None,
                });
            }
        }
        let q = &self.queues[q0 as usize];
        let overflow = q.overflow();
        let mut chain = Vec::with_capacity(1 + overflow.len());
        chain.push(q0);
        chain.extend_from_slice(&overflow);
        Ok(self.place_arriving(&id, &chain, now, out))
    }

    /// Places an `Arriving` contact as an arrival in the first queue of `chain` that takes it (a
    /// new contact, or a transferred contact's next leg): offered at once if an operator is
    /// free, else queued; diverted with the fallback of the queue that decided if none takes it.
    /// The decision is the one made during this call: queued at placement, or assigned by this
    /// call's dispatch; what happens afterwards (maybe at once, on another thread) is an event.
    pub(super) fn place_arriving(&self, id: &Arc<str>, chain: &[u32], now: Millis, out: &mut Vec<Event>) -> Decision {
        match self.place(id, chain, now, out, true) {
            Ok((_, d @ Decision::Assigned { .. })) => d,
            Ok((qi, queued)) => match self.dispatch_contact(qi, id, now, out) {
                Some(assigned) => assigned,
                // Taken at once by an operator this call freed (see `place`): report the offer.
                None => match self.contacts.get(id).map(|r| r.state) {
                    Some(CState::Offered { slot, deadline, .. }) => Decision::Assigned {
                        operator: self.operator_name(slot),
                        queue: self.queues[qi as usize].name.clone(),
                        deadline: deadline.0,
                    },
                    _ => queued,
                },
            },
            Err((reason, qi)) => self.divert_arriving(id, qi, reason, now, out),
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
        let f = Finished {
            outcome,
            queue: qi,
            diverted,
            completed_by: None,
            completion: None,
            legs: Vec::new(),
            consult_of: None,
        };
        self.finished.insert(id, f);
    }

    /// Until `until`, queues with nobody logged in queue their contacts instead of diverting
    /// them NO_OPERATORS (a node that just took over waits for its desks to log in again).
    pub fn set_staff_grace(&self, until: Millis) {
        self.staff_grace_until.store(until.0, Ordering::Relaxed);
    }

    /// The decision a contact currently stands at.
    pub(super) fn current_decision(
        &self,
        id: &Arc<str>,
        qi: u32,
        state: CState,
        now: Millis,
    ) -> Result<Decision, RoutingError> {
        let q = &self.queues[qi as usize];
        match state {
            CState::Arriving => Err(RoutingError::Busy(id.to_string())),
            CState::Queued { rank } => {
                let st = q.state.lock();
                let ch = self.contacts.get(id).map(|r| r.channel);
                let position = ch.map_or(1, |ch| st.position(ch, &rank)).max(1);
                let estimated_wait_ms = q.estimated_wait(ch.unwrap_or(Channel::Voice), position);
                Ok(Decision::Queued { queue: q.name.clone(), position, estimated_wait_ms })
            }
            CState::Offered { slot, deadline, .. } => Ok(Decision::Assigned {
                operator: self.operator_name(slot),
                queue: q.name.clone(),
                deadline: deadline.0,
            }),
            CState::InService { slot, .. } => {
                Ok(Decision::Assigned { operator: self.operator_name(slot), queue: q.name.clone(), deadline: now })
            }
            // A callback between attempts: not in line (position 0) until its next attempt.
            CState::Parked { due } => {
                Ok(Decision::Queued { queue: q.name.clone(), position: 0, estimated_wait_ms: due.0.since(now) })
            }
            CState::Done => match self.finished_get(id) {
                Some(Finished { diverted: Some((reason, fallback)), queue, .. }) => Ok(Decision::Diverted {
                    reason,
                    fallback,
                    queue: self.queues[queue as usize].name.clone(),
                    reopens: self.reopens_if(reason, queue, now),
                }),
                _ => Err(RoutingError::ContactFinished(id.to_string())),
            },
        }
    }

    pub(super) fn operator_name(&self, slot: u32) -> Arc<str> {
        self.slot(slot).session.lock().as_ref().map_or_else(|| Arc::from(""), |s| s.id.clone())
    }

    /// Puts an `Arriving` contact in the first queue of `chain` that will take it. On refusal,
    /// returns the reason of the last queue that had operators (extra budget, full), or if none
    /// had, of the last queue of the chain. For a new `arrival`, a closed first queue is final.
    pub(super) fn place(
        &self,
        id: &Arc<str>,
        chain: &[u32],
        now: Millis,
        out: &mut Vec<Event>,
        arrival: bool,
    ) -> Result<(u32, Decision), (DivertReason, u32)> {
        let mut staffed = false;
        let mut last = (DivertReason::NoOperators, chain.first().copied().unwrap_or(0));
        let Some((channel, priority, segment, funded, appointment)) =
            self.contacts.get(id).map(|r| (r.channel, r.priority, r.segment, r.funding.is_some(), r.appointment))
        else {
            return Err(last);
        };
        for (i, &qi) in chain.iter().enumerate() {
            let q = &self.queues[qi as usize];
            if !self.is_open(q, now) {
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
            // Staffed: someone is logged in on the line; for an appointment, which has no maximum
            // wait, someone who can take its channel (a video appointment on a line of voice-only
            // desks would otherwise wait at the head of the line for nobody).
            let unstaffed = {
                let c = q.candidates.read();
                c.is_empty() || (appointment && !c.iter().any(|c| c.session.caps[channel.index()] > 0))
            };
            if unstaffed && now.0 >= self.staff_grace_until.load(Ordering::Relaxed) {
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
                    priority: q.priority() + priority,
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
            let channel = rec.channel;
            drop(rec);
            let estimated_wait_ms = q.estimated_wait(channel, position);
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
    pub(super) fn offer_unpublished(
        &self,
        q: &Queue,
        st: &mut State,
        rec: &mut Contact,
        id: &Arc<str>,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Decision, Option<u32>> {
        let view = waiting_of(id, rec, None);
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
    pub(super) fn enqueue_locked(
        &self,
        q: &Queue,
        st: &mut State,
        id: &Arc<str>,
        rec: &mut Contact,
        head: bool,
        now: Millis,
    ) -> u32 {
        let seq = st.next_seq();
        let rank = q.rank(head || rec.appointment, rec.arrived, rec.priority, seq);
        // A callback has no caller on the line: neither a maximum wait nor a patience applies.
        let live = rec.callback.is_none();
        let by_wait = (live && st.params.max_wait_ms > 0).then(|| rec.entered.plus(st.params.max_wait_ms));
        let by_patience = (live && rec.patience_ms > 0).then(|| rec.arrived.plus(rec.patience_ms));
        let expiry = match (by_wait, by_patience) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|at| (at.max(now), seq));
        if let Some(e) = expiry {
            st.expiry.insert(e, (rec.channel, rank));
        }
        st.waiting[rec.channel.index()].insert(rank, waiting_of(id, rec, expiry));
        q.entered_waiting(rec.segment);
        rec.state = CState::Queued { rank };
        st.position(rec.channel, &rank)
    }

    pub(super) fn divert_arriving(
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
        Decision::Diverted { reason, fallback, queue: q.name.clone(), reopens: self.reopens_if(reason, qi, now) }
    }

    /// The next opening of queue `qi` for a CLOSED diversion.
    fn reopens_if(&self, reason: DivertReason, qi: u32, now: Millis) -> Option<Millis> {
        (reason == DivertReason::Closed).then(|| self.reopens(&self.queues[qi as usize], now)).flatten()
    }

    /// Marks a contact finished (under its map entry), releases its budget reservation unless
    /// `settled_by` names the operator whose budget settles it, and records the outcome.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish(
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
        let waited_ms = match (rec.answered, handled) {
            // Answered once, by its first leg, however many legs followed.
            (Some(first), _) => first.since(rec.arrived),
            (None, Some((_, _, accepted_at))) => accepted_at.since(rec.arrived),
            (None, None) => now.since(rec.arrived),
        };
        // A consultation withdrawn is no caller lost.
        if outcome == Outcome::Abandoned && rec.consult_of.is_none() {
            q.record_abandon(rec.segment, waited_ms, now);
        }
        let session = handled.and_then(|(slot, _, _)| self.slot(slot).session.lock().clone());
        let operator = session.as_ref().map(|s| s.id.clone());
        let group = session.as_ref().map(|s| s.group.clone());
        let mut charged = None;
        if let Some(b) = rec.funding.take() {
            let paid_by_budget = session.filter(|s| s.budget.as_ref() == Some(&b));
            match (paid_by_budget, handled) {
                (Some(s), Some((_, c, accepted_at))) => {
                    charged = self
                        .gate
                        .settle(&Settlement {
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
                            repeat: rec.paid.contains(&b),
                        })
                        .map(|cents| (b.clone(), cents));
                }
                _ => self.gate.release(&b, id),
            }
        }
        rec.state = CState::Done;
        self.finished.insert(
            id.clone(),
            Finished {
                outcome,
                queue: rec.queue,
                diverted,
                completed_by: handled.map(|h| h.0),
                completion: handled.map(|h| h.1),
                legs: std::mem::take(&mut rec.legs),
                consult_of: rec.consult_of.as_ref().map(|c| Box::new((c.parent.clone(), c.from))),
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
            group,
            wrap_up_ms: handled.map_or(0, |h| h.1.wrap_up_ms),
            arrived: rec.arrived,
            segment: rec.segment,
            charged,
        });
        // A consultation that ends without a hand-over (see `consult.rs`).
        if let Some(c) = &rec.consult_of {
            let second = handled.map(|(slot, _, _)| self.operator_name(slot));
            out.push(self.consult_event(c, id, &q.name, second, consult::ConsultStep::Ended));
        }
    }

    pub(super) fn remove_done(&self, id: &Arc<str>) {
        self.contacts.remove_if(id, |_, r| r.state == CState::Done);
    }

    pub(super) fn finished_get(&self, id: &str) -> Option<Finished> {
        self.finished.get(id)
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
                CState::Queued { .. } | CState::Offered { .. } | CState::Parked { .. } => {
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
                                q.left_waiting(w.segment);
                            }
                        }
                        CState::Offered { slot, gen, deadline } => {
                            st.offered.remove(&deadline);
                            q.offered.fetch_sub(1, Ordering::Relaxed);
                            self.drop_held(slot, &id);
                            self.slot(slot).release(gen, rec.channel, now);
                            freed = Some(slot);
                        }
                        CState::Parked { due } => {
                            st.parked.remove(&due);
                        }
                        _ => {}
                    }
                    self.keep_place(&rec, now);
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
                    let consult = rec.consult.take();
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
                    self.end_consult_with(&id, consult, now, out);
                    self.find_work(slot, now, out);
                    return Ok(Outcome::CancelledInService);
                }
            }
        }
        Err(RoutingError::Busy(contact_id.to_owned()))
    }
}
