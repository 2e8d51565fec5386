//! Consultations (warm transfers) and conferences. An operator in service keeps the caller and
//! asks a colleague — anyone of a queue, or one named operator through a queue — to talk first.
//!
//! The consultation is a contact of its own, under an id the desk chooses: offered like any
//! contact to the operators of the target queue (skills, hours, budget), marked with the contact
//! it is about and the operator who asked, never offered back to that operator. A supplier's
//! operator's consultation minutes are money like any minutes: the consultation is admitted
//! against the target queue's budget, and refused (nothing changed, the operator keeps the caller)
//! when nobody can take it. Accepted, both operators are busy. Then the first operator:
//! - **hands over** ([`ConsultAction::Transfer`]): their leg of the contact ends as a transfer
//!   (wrap-up, charged once) and the second carries on with the contact itself, under its own id;
//!   the second's leg of it started when they accepted the consultation, and runs on the
//!   consultation's reservation (one leg, one charge, from the consultation's acceptance to the
//!   contact's end); the consultation ends `TRANSFERRED` into the contact;
//! - **joins a conference** ([`ConsultAction::Conference`]): nothing ends; later the first leaves
//!   (a hand-over) or the second does (a cancel, or the second completes the consultation);
//! - **cancels** ([`ConsultAction::Cancel`]): the consultation ends, charged for the time talked,
//!   and the second is free at once (no wrap-up); one still waiting is withdrawn.
//!
//! The contact ending (completed, cancelled, a forced logout) ends its consultation with it. One
//! consultation at a time per contact; a blind transfer waits until it ends.

use super::*;
use crate::engine::transfer::{Next, TransferTarget};

/// What the first operator does with a consultation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsultAction {
    /// Hand the caller over: the first's leg ends, the second carries on with the contact.
    Transfer,
    /// The three talk together; nothing ends.
    Conference,
    /// The consultation ends; the second is free.
    Cancel,
}

/// What [`Engine::end_consultation`] did (a repeat answers the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsultEnd {
    /// The first operator's leg that ended (a hand-over).
    pub completion: Option<Completion>,
    /// The operator who carries on (a hand-over) or who is in the conference.
    pub second: Option<Arc<str>>,
}

/// A consultation's link to its contact.
#[derive(Clone, Debug)]
pub(super) struct ConsultOf {
    /// The contact it is about.
    pub(super) parent: Arc<str>,
    /// That contact's queue (where it is in service with the operator who asked).
    pub(super) parent_queue: Arc<str>,
    /// The operator who asked (by slot).
    pub(super) from: u32,
    /// The three are in a conference.
    pub(super) conference: bool,
}

/// A step of a consultation, as [`Event::Consultation`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsultStep {
    /// Asked for (the consultation waits or is offered).
    Requested,
    /// The second operator accepted: both are busy.
    Accepted,
    /// The three talk together.
    Conference,
    /// The first operator handed the caller over to the second.
    HandedOver,
    /// It ended without a hand-over (cancelled, completed by the second, or with its contact).
    Ended,
}

impl ConsultStep {
    /// Lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ConsultStep::Requested => "requested",
            ConsultStep::Accepted => "accepted",
            ConsultStep::Conference => "conference",
            ConsultStep::HandedOver => "handed_over",
            ConsultStep::Ended => "ended",
        }
    }
}

impl Engine {
    /// The event of a step of consultation `consultation` (whose link is `of`), asked of
    /// `to_queue`, with `to_operator` as the second.
    pub(super) fn consult_event(
        &self,
        of: &ConsultOf,
        consultation: &Arc<str>,
        to_queue: &Arc<str>,
        to_operator: Option<Arc<str>>,
        step: ConsultStep,
    ) -> Event {
        Event::Consultation {
            contact: of.parent.clone(),
            consultation: consultation.clone(),
            operator: self.operator_name(of.from),
            queue: of.parent_queue.clone(),
            to_queue: to_queue.clone(),
            to_operator,
            step,
        }
    }

    /// Operator `operator_id`, in service with `contact_id`, asks for a consultation
    /// `consultation_id` with `target` (a queue, or an operator through a queue; not out of the
    /// centre). Returns where the consultation stands: placed (queued or offered), or ended.
    /// Refused with [`RoutingError::TransferRefused`] when the target is closed, nobody else is
    /// logged in there, it is full, or its budget refuses with nobody else paid there: then
    /// nothing changed and the consultation id stays unused. Idempotent: a repeat answers where
    /// the consultation stands.
    pub fn consult_at(
        &self,
        operator_id: &str,
        contact_id: &str,
        consultation_id: &str,
        target: &TransferTarget,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Next, RoutingError> {
        validate_id("operator_id", operator_id)?;
        validate_id("contact_id", contact_id)?;
        validate_id("consultation_id", consultation_id)?;
        if consultation_id == contact_id {
            return Err(RoutingError::invalid("consultation_id", "is the contact's own id"));
        }
        let (Some(t), pin) = self.target_of(target)? else {
            return Err(RoutingError::invalid("target", "a consultation is with an operator of the centre"));
        };
        let idx = self.known_slot(operator_id)?;
        // A repeat: the consultation exists (live, or ended in this life).
        if let Some(answer) = self.consulted_before(idx, contact_id, consultation_id, t, now)? {
            return Ok(answer);
        }
        let Some((state, channel, segment, language, open, is_consult, cq)) = self.contacts.get(contact_id).map(|r| {
            (r.state, r.channel, r.segment, r.language.clone(), r.consult.clone(), r.consult_of.is_some(), r.queue)
        }) else {
            return Err(if self.finished_get(contact_id).is_some() {
                RoutingError::WrongState(format!("contact `{contact_id}` has already ended"))
            } else {
                RoutingError::UnknownContact(contact_id.to_owned())
            });
        };
        if !matches!(state, CState::InService { slot, .. } if slot == idx) {
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` is not in service with operator `{operator_id}`"
            )));
        }
        if is_consult {
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` is a consultation: only its first operator moves the caller on"
            )));
        }
        if let Some(k) = open.filter(|k| self.consult_open(k, contact_id)) {
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` is already in consultation `{}`: hand it over or cancel it first",
                crate::error::clip(&k)
            )));
        }
        let pinned = pin.map(|p| self.pin_for(idx, p, t, channel, now, "consults")).transpose()?;
        let tq = &self.queues[t as usize];
        if !self.is_open(tq, now) {
            return Err(RoutingError::TransferRefused { reason: DivertReason::Closed, queue: tq.name.to_string() });
        }
        self.target_takes(t, Some(idx), now)?;
        let kid: Arc<str> = Arc::from(consultation_id);
        if self.contacts.contains_key(consultation_id) || self.finished_get(consultation_id).is_some() {
            return Err(RoutingError::WrongState(format!(
                "contact id `{consultation_id}` is in use by another contact"
            )));
        }
        // The money, admitted before anything changes: refused with nobody else paid there, the
        // operator keeps the caller and the consultation id stays unused.
        let mut funding = None;
        if let Some(bt) = &tq.budget {
            let req = FundingRequest {
                budget: bt,
                contact_id: &kid,
                queue: &tq.name,
                channel,
                priority: tq.priority() + tq.transfer_priority,
                segment,
                now,
            };
            if self.gate.reserve(&req) {
                funding = Some(bt.clone());
            } else if !tq.candidates.read().iter().any(|c| c.slot != idx && c.session.budget.as_ref() != Some(bt)) {
                return Err(RoutingError::TransferRefused {
                    reason: DivertReason::ExtraBudget,
                    queue: tq.name.to_string(),
                });
            }
        }
        let unfund = || {
            if let Some(bt) = &funding {
                self.gate.release(bt, &kid);
            }
        };
        match self.contacts.entry(kid.clone()) {
            Entry::Occupied(_) => {
                unfund();
                return Err(RoutingError::WrongState(format!(
                    "contact id `{consultation_id}` is in use by another contact"
                )));
            }
            Entry::Vacant(v) => {
                v.insert(Contact {
                    queue: t,
                    entry_queue: t,
                    caller_key: None,
                    callback: None,
                    pinned,
                    appointment: false,
                    channel,
                    priority: tq.transfer_priority,
                    segment,
                    language,
                    arrived: now,
                    entered: now,
                    patience_ms: 0,
                    funding: funding.clone(),
                    declined: vec![idx],
                    state: CState::Arriving,
                    legs: Vec::new(),
                    // Its own contact for the tariff, until handed over (then its leg is the
                    // contact's, under the contact's fee rule).
                    paid: Vec::new(),
                    not_before: Millis(0),
                    answered: None,
                    consult: None,
                    consult_of: Some(Box::new(ConsultOf {
                        parent: Arc::from(contact_id),
                        parent_queue: self.queues[cq as usize].name.clone(),
                        from: idx,
                        conference: false,
                    })),
                });
            }
        }
        // Link it to its contact, which must still be in service with this operator (else the
        // consultation, not yet visible to anyone, is dropped).
        let linked = match self.contacts.get_mut(contact_id) {
            Some(mut rec) if matches!(rec.state, CState::InService { slot, .. } if slot == idx) => {
                rec.consult = Some(kid.clone());
                true
            }
            _ => false,
        };
        if !linked {
            self.contacts.remove(&kid);
            unfund();
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` is no longer in service with operator `{operator_id}`"
            )));
        }
        let parent_queue = self.queues[cq as usize].name.clone();
        out.push(Event::Consultation {
            contact: Arc::from(contact_id),
            consultation: kid.clone(),
            operator: self.operator_name(idx),
            queue: parent_queue,
            to_queue: tq.name.clone(),
            to_operator: pinned.map(|(s, _)| self.operator_name(s)),
            step: ConsultStep::Requested,
        });
        match self.place_arriving(&kid, &[t], now, out) {
            Decision::Diverted { reason, queue, .. } => {
                Err(RoutingError::TransferRefused { reason, queue: queue.to_string() })
            }
            d => Ok(Next::Placed(d)),
        }
    }

    /// Whether `k` is a live consultation of contact `parent`.
    pub(super) fn consult_open(&self, k: &str, parent: &str) -> bool {
        self.contacts.get(k).is_some_and(|r| r.consult_of.as_ref().is_some_and(|c| &*c.parent == parent))
    }

    /// A repeated [`Engine::consult_at`]: `None` if `consultation_id` is not known.
    fn consulted_before(
        &self,
        idx: u32,
        contact_id: &str,
        consultation_id: &str,
        t: u32,
        now: Millis,
    ) -> Result<Option<Next>, RoutingError> {
        let live = self.contacts.get(consultation_id).map(|r| (r.consult_of.clone(), r.entry_queue));
        let (of, queue) = match live {
            Some(x) => x,
            None => match self.finished_get(consultation_id) {
                Some(f) => (
                    f.consult_of.map(|b| {
                        let (parent, from) = *b;
                        Box::new(ConsultOf { parent, parent_queue: Arc::from(""), from, conference: false })
                    }),
                    f.queue,
                ),
                None => return Ok(None),
            },
        };
        match of {
            Some(c) if &*c.parent == contact_id && c.from == idx && queue == t => {}
            Some(c) if &*c.parent == contact_id && c.from == idx => {
                return Err(RoutingError::WrongState(format!(
                    "consultation `{consultation_id}` was asked of queue `{}`",
                    self.queues[queue as usize].name
                )))
            }
            _ => {
                return Err(RoutingError::WrongState(format!(
                    "contact id `{consultation_id}` is in use by another contact"
                )))
            }
        }
        let f = self.finished_get(consultation_id);
        if let Some(Finished { diverted: Some((reason, _)), queue, .. }) = f {
            return Err(RoutingError::TransferRefused { reason, queue: self.queues[queue as usize].name.to_string() });
        }
        Ok(self.standing(consultation_id, now))
    }

    /// Operator `operator_id` ends, or turns into a conference, consultation `consultation_id`
    /// of contact `contact_id` (see the module's documentation). A hand-over ends their leg at
    /// `ended` (held between its acceptance and `now`) with `wrap_up_ms` (or the queue's when 0).
    /// A hand-over or a conference needs the consultation accepted (`WrongState` before).
    /// Idempotent: a repeat answers the same; an action that contradicts what happened is
    /// `WrongState`.
    #[allow(clippy::too_many_arguments)]
    pub fn end_consultation(
        &self,
        operator_id: &str,
        contact_id: &str,
        consultation_id: &str,
        action: ConsultAction,
        wrap_up_ms: u64,
        ended: Millis,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<ConsultEnd, RoutingError> {
        validate_id("operator_id", operator_id)?;
        validate_id("contact_id", contact_id)?;
        validate_id("consultation_id", consultation_id)?;
        if wrap_up_ms > 3_600_000 {
            return Err(RoutingError::invalid("wrap_up_ms", "above one hour"));
        }
        let idx = self.known_slot(operator_id)?;
        let not_theirs = || {
            RoutingError::WrongState(format!(
                "`{consultation_id}` is not a consultation of contact `{contact_id}` by operator `{operator_id}`"
            ))
        };
        let Some((of, kstate)) = self.contacts.get(consultation_id).map(|r| (r.consult_of.clone(), r.state)) else {
            return self.ended_before(idx, contact_id, consultation_id, action);
        };
        let Some(of) = of.filter(|c| &*c.parent == contact_id && c.from == idx) else { return Err(not_theirs()) };
        let talking = match kstate {
            CState::InService { slot, .. } => Some(slot),
            _ => None,
        };
        match action {
            ConsultAction::Cancel => {
                // Withdrawn while waiting; ended at once (no wrap-up) while talking. The answer
                // says what happened, also when the second accepted, or the first handed over,
                // meanwhile.
                match self.cancel(consultation_id, now, out) {
                    Ok(Outcome::Transferred) => {
                        Err(RoutingError::WrongState(format!("consultation `{consultation_id}` was handed over")))
                    }
                    Ok(_) => {
                        let second = self
                            .finished_get(consultation_id)
                            .and_then(|f| f.completed_by)
                            .map(|s| self.operator_name(s));
                        Ok(ConsultEnd { completion: None, second })
                    }
                    Err(e) => Err(e),
                }
            }
            ConsultAction::Conference => {
                let Some(b) = talking else {
                    return Err(RoutingError::WrongState(format!(
                        "consultation `{consultation_id}` has not been accepted yet"
                    )));
                };
                let first_time = match self.contacts.get_mut(consultation_id) {
                    Some(mut r) if matches!(r.state, CState::InService { slot, .. } if slot == b) => {
                        let c = r.consult_of.as_mut().map(|c| !std::mem::replace(&mut c.conference, true));
                        c.unwrap_or(false)
                    }
                    _ => {
                        return Err(RoutingError::WrongState(format!(
                            "consultation `{consultation_id}` is no longer in service"
                        )))
                    }
                };
                if first_time {
                    let kq = self.contacts.get(consultation_id).map_or(0, |r| r.queue);
                    let to_queue = self.queues[kq as usize].name.clone();
                    let second = Some(self.operator_name(b));
                    out.push(self.consult_event(
                        &of,
                        &Arc::from(consultation_id),
                        &to_queue,
                        second,
                        ConsultStep::Conference,
                    ));
                }
                Ok(ConsultEnd { completion: None, second: Some(self.operator_name(b)) })
            }
            ConsultAction::Transfer => {
                if talking.is_none() {
                    return Err(RoutingError::WrongState(format!(
                        "consultation `{consultation_id}` has not been accepted yet"
                    )));
                }
                self.hand_over(idx, contact_id, consultation_id, wrap_up_ms, ended, now, out)
            }
        }
    }

    /// A repeated [`Engine::end_consultation`] of a consultation this engine no longer holds.
    fn ended_before(
        &self,
        idx: u32,
        contact_id: &str,
        consultation_id: &str,
        action: ConsultAction,
    ) -> Result<ConsultEnd, RoutingError> {
        let Some(f) = self.finished_get(consultation_id) else {
            return Err(RoutingError::UnknownContact(consultation_id.to_owned()));
        };
        match f.consult_of.as_deref() {
            Some((parent, from)) if &**parent == contact_id && *from == idx => {}
            // Ended in an earlier life (see `remember_ended`): the server answers from its records.
            None if f.completed_by.is_none() => return Err(RoutingError::UnknownContact(consultation_id.to_owned())),
            _ => {
                return Err(RoutingError::WrongState(format!(
                    "`{consultation_id}` is not a consultation of contact `{contact_id}` by this operator"
                )))
            }
        }
        let handed_over = f.outcome == Outcome::Transferred;
        let second = f.completed_by.map(|s| self.operator_name(s));
        match action {
            ConsultAction::Transfer if handed_over => {
                // The first's leg, as the contact (live or ended) records it.
                let leg = match self.contacts.get(contact_id) {
                    Some(r) => r.legs.iter().rev().find(|l| l.slot == idx).copied(),
                    None => {
                        self.finished_get(contact_id).and_then(|c| c.legs.iter().rev().find(|l| l.slot == idx).copied())
                    }
                };
                Ok(ConsultEnd { completion: leg.map(|l| l.completion), second })
            }
            ConsultAction::Cancel if !handed_over => Ok(ConsultEnd { completion: None, second }),
            _ if handed_over => {
                Err(RoutingError::WrongState(format!("consultation `{consultation_id}` was handed over")))
            }
            _ => Err(RoutingError::WrongState(format!("consultation `{consultation_id}` has ended"))),
        }
    }

    /// The hand-over: operator `idx`'s leg of `contact_id` ends as a transfer, and the operator
    /// in service with consultation `consultation_id` carries on with the contact (its leg dated
    /// from the consultation's acceptance, on the consultation's reservation).
    #[allow(clippy::too_many_arguments)]
    fn hand_over(
        &self,
        idx: u32,
        contact_id: &str,
        consultation_id: &str,
        wrap_up_ms: u64,
        ended: Millis,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<ConsultEnd, RoutingError> {
        // 1. The contact, held back from everyone else meanwhile (`Arriving`: a cancel is Busy
        //    and retried, a completion is refused), so neither side ends under our feet.
        let Some(cq) = self.contacts.get(contact_id).map(|r| r.queue) else {
            return Err(RoutingError::WrongState(format!("contact `{contact_id}` has already ended")));
        };
        let queue_wrap = self.queues[cq as usize].state.lock().params.wrap_up_ms;
        let (id, a_gen, a_accepted, channel, funding, paid) = {
            let Some(mut rec) = self.contacts.get_mut(contact_id) else {
                return Err(RoutingError::WrongState(format!("contact `{contact_id}` has already ended")));
            };
            let CState::InService { slot, gen, accepted_at } = rec.state else {
                return Err(RoutingError::WrongState(format!("contact `{contact_id}` is not in service")));
            };
            if slot != idx || rec.queue != cq || rec.consult.as_deref() != Some(consultation_id) {
                return Err(RoutingError::WrongState(format!(
                    "contact `{contact_id}` is not in consultation `{consultation_id}` with this operator"
                )));
            }
            rec.state = CState::Arriving;
            (rec.key().clone(), gen, accepted_at, rec.channel, rec.funding.clone(), rec.paid.clone())
        };
        let restore = |why: String| {
            if let Some(mut rec) = self.contacts.get_mut(contact_id) {
                rec.state = CState::InService { slot: idx, gen: a_gen, accepted_at: a_accepted };
            }
            Err(RoutingError::WrongState(why))
        };
        // 2. The consultation: in service with the second operator; it ends, merged into the
        //    contact.
        let kq = match self.contacts.get(consultation_id).map(|r| r.queue) {
            Some(q) => q,
            None => return restore(format!("consultation `{consultation_id}` has ended")),
        };
        let (b, b_gen, b_accepted, k_funding, kid, k_arrived) = {
            let Some(mut k) = self.contacts.get_mut(consultation_id) else {
                return restore(format!("consultation `{consultation_id}` has ended"));
            };
            let CState::InService { slot, gen, accepted_at } = k.state else {
                drop(k);
                return restore(format!("consultation `{consultation_id}` is not in service"));
            };
            if k.queue != kq {
                drop(k);
                return restore(format!("consultation `{consultation_id}` moved"));
            }
            // The second must still be logged in (the same session), checked and the contact put
            // in their hands under their slot's lock: a logout's transition comes before it
            // reads what they hold, so it either makes this hand-over fail here or finds the
            // contact in their hands (and cancels it).
            let kid = k.key().clone();
            {
                let mut held = self.slot(slot).held.lock();
                let w = self.slot(slot).word();
                if w.generation() != gen || w.status() == OperatorStatus::LoggedOut {
                    drop(held);
                    drop(k);
                    return restore(format!("the operator of consultation `{consultation_id}` logged out"));
                }
                for c in held.contacts.iter_mut() {
                    if *c == kid {
                        *c = id.clone();
                    }
                }
            }
            k.state = CState::Done;
            self.finished.insert(
                kid.clone(),
                Finished {
                    outcome: Outcome::Transferred,
                    queue: kq,
                    diverted: None,
                    completed_by: Some(slot),
                    completion: None,
                    legs: Vec::new(),
                    consult_of: Some(Box::new((id.clone(), idx))),
                },
            );
            (slot, gen, accepted_at, k.funding.take(), kid, k.arrived)
        };
        self.remove_done(&kid);
        // 3. Money: the first's leg settles on the contact's budget if it paid that operator
        //    (else its reservation is released); the consultation's reservation becomes the
        //    contact's, for the second's leg.
        let q = &self.queues[cq as usize];
        let session = self.slot(idx).session.lock().clone();
        let handle_ms = ended.min(now).max(a_accepted).since(a_accepted);
        let mut charged = None;
        if let Some(bud) = &funding {
            match session.as_ref().filter(|s| s.budget.as_ref() == Some(bud)) {
                Some(s) => {
                    charged = self
                        .gate
                        .settle(&Settlement {
                            budget: bud,
                            contact_id: &id,
                            queue: &q.name,
                            group: &s.group,
                            operator: &s.id,
                            channel,
                            handle_ms,
                            accepted_at: a_accepted,
                            now,
                            outcome: Outcome::Transferred,
                            repeat: paid.contains(bud),
                        })
                        .map(|cents| (bud.clone(), cents));
                }
                None => self.gate.release(bud, &id),
            }
        }
        // The second's leg of the contact, dated after the first's acceptance at least, so the
        // two legs' cost records never share a key.
        let b_accepted = b_accepted.max(a_accepted.plus(1));
        if let Some(bud) = &k_funding {
            self.gate.rename(bud, &kid, &id, b_accepted);
        }
        // 4. The first's leg ends like a transfer's (wrap-up before capacity).
        let wrap = if wrap_up_ms > 0 { wrap_up_ms } else { queue_wrap };
        let (t, completion) = self.end_leg(q, idx, a_gen, channel, &id, handle_ms, wrap, now);
        // 5. The contact is the second's, since they accepted the consultation.
        let arrived = {
            let Some(mut rec) = self.contacts.get_mut(contact_id) else {
                // Nobody ends an `Arriving` contact but its placer (us).
                debug_assert!(false, "a contact being handed over vanished");
                return Err(RoutingError::WrongState(format!("contact `{contact_id}` vanished")));
            };
            rec.state = CState::InService { slot: b, gen: b_gen, accepted_at: b_accepted };
            rec.queue = kq;
            rec.funding = k_funding;
            rec.consult = None;
            rec.not_before = rec.not_before.max(b_accepted.plus(1));
            if let Some((bud, _)) = &charged {
                if !rec.paid.contains(bud) {
                    rec.paid.push(bud.clone());
                }
            }
            rec.legs.push(Leg { slot: idx, completion, to: Some(kq), named: Some(b) });
            rec.arrived
        };
        let second = self.operator_name(b);
        out.push(Event::Transferred {
            contact: id.clone(),
            queue: q.name.clone(),
            channel,
            operator: session.as_ref().map_or_else(|| self.operator_name(idx), |s| s.id.clone()),
            group: session.as_ref().map_or_else(|| Arc::from(""), |s| s.group.clone()),
            to: Some(self.queues[kq as usize].name.clone()),
            to_operator: Some(second.clone()),
            accepted: a_accepted,
            arrived,
            pinned_until: None,
            handle_ms,
            wrap_up_ms: completion.wrap_up_ms,
            charged,
        });
        out.push(Event::Consultation {
            contact: id.clone(),
            consultation: kid.clone(),
            operator: self.operator_name(idx),
            queue: self.queues[kq as usize].name.clone(),
            to_queue: self.queues[kq as usize].name.clone(),
            to_operator: Some(second.clone()),
            step: ConsultStep::HandedOver,
        });
        // The consultation ends, merged into the contact: no operator's contact ends here (the
        // second goes on with the contact), no budget settles it.
        out.push(Event::Finished {
            contact: kid,
            queue: self.queues[kq as usize].name.clone(),
            channel,
            outcome: Outcome::Transferred,
            waited_ms: b_accepted.since(k_arrived),
            handle_ms: 0,
            operator: None,
            group: None,
            wrap_up_ms: 0,
            arrived: k_arrived,
            segment: self.contacts.get(contact_id).map_or(Segment::General, |r| r.segment),
            charged: None,
        });
        if let Some(s) = &session {
            self.status_event(s, t, out);
        }
        self.find_work(idx, now, out);
        Ok(ConsultEnd { completion: Some(completion), second: Some(second) })
    }

    /// Ends the consultation of a contact that just ended (its id, read from the contact before
    /// it ended): withdrawn if waiting, ended (charged for the time talked) if in service.
    pub(super) fn end_consult_with(&self, parent: &str, consult: Option<Arc<str>>, now: Millis, out: &mut Vec<Event>) {
        let Some(k) = consult.filter(|k| self.consult_open(k, parent)) else { return };
        let _ = self.cancel(&k, now, out);
    }

    /// The consultation of a contact, if it is one: the contact it is about and the operator
    /// who asked (for the desk's offer).
    #[must_use]
    pub fn consultation_of(&self, contact_id: &str) -> Option<(Arc<str>, Arc<str>)> {
        let of = self.contacts.get(contact_id)?.consult_of.clone()?;
        Some((of.parent, self.operator_name(of.from)))
    }

    /// The open consultation of a contact, if any: its id, and the operator it is in service
    /// with (`None` while it waits) and whether the three are in conference.
    #[must_use]
    pub fn open_consultation(&self, contact_id: &str) -> Option<(Arc<str>, Option<Arc<str>>, bool)> {
        let k = self.contacts.get(contact_id)?.consult.clone()?;
        let r = self.contacts.get(&k)?;
        let of = r.consult_of.as_ref().filter(|c| &*c.parent == contact_id)?;
        let second = match r.state {
            CState::InService { slot, .. } => Some(self.operator_name(slot)),
            _ => None,
        };
        Some((k.clone(), second, of.conference))
    }
}
