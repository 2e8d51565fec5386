//! Transfers: an operator in service moves a contact on — to a queue, to a named colleague
//! (through a queue), or out of the centre. The contact keeps its id, its arrival, its segment
//! and its caller key. The operator's leg ends like a completion (handle time, wrap-up, its
//! budget charged once); the next leg is admitted against the budget of the queue that will
//! handle it *before* the first ends, so a refusal changes nothing and the operator keeps the
//! caller; then it is placed like an arrival (skills, hours, budget), never offered back to the
//! operator who sent it.

use super::*;

/// The longest head start a named operator may be given.
pub const MAX_PIN_MS: u64 = 3_600_000;

/// Where an operator sends a contact in service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferTarget {
    /// Anyone who serves this queue.
    Queue(String),
    /// One operator, through `queue` (which they serve): offered to them only, for `timeout_ms`;
    /// then to anyone of `queue`.
    Operator {
        /// The operator.
        operator: String,
        /// The queue the contact waits in meanwhile, and afterwards.
        queue: String,
        /// How long only they may take it.
        timeout_ms: u64,
    },
    /// Out of the centre (a destination the platform dials): the contact ends TRANSFERRED.
    External,
}

impl TransferTarget {
    /// The queue it names (empty: out of the centre).
    #[must_use]
    pub fn queue(&self) -> &str {
        match self {
            TransferTarget::Queue(q) | TransferTarget::Operator { queue: q, .. } => q,
            TransferTarget::External => "",
        }
    }
}

/// What a transfer did (a repeated transfer answers the same leg).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The leg that ended: its handle time and the wrap-up that started.
    pub completion: Completion,
    /// Where the contact stands now.
    pub next: Next,
}

/// Where a transferred contact stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// In its next leg: queued or offered in the target queue, or diverted by the target's
    /// fallback (closed).
    Placed(Decision),
    /// Ended (out of the centre, or since then).
    Ended(Outcome),
}

/// An operator named first by a transfer or a consultation, and how long only they may take it.
pub(super) type Pin<'a> = (&'a str, u64);

/// How a contact enters a queue (see [`Engine::offer_as`]).
pub(crate) enum Kind {
    /// A new contact.
    Plain,
    /// An appointment whose slot started, pinned to its operator for a while.
    Appointment(Option<(u32, Millis)>),
    /// A transferred contact's next leg offered again after a restart (its transfer record):
    /// its pin to a named operator, the budgets that settled its earlier legs, the slot of the
    /// operator who sent it.
    Leg {
        /// Only this slot may take it until then.
        pinned: Option<(u32, Millis)>,
        /// Budgets that settled earlier legs.
        paid: Vec<Arc<str>>,
        /// Never offered back to this slot.
        from: Option<u32>,
    },
}

impl Engine {
    /// Operator `operator_id` moves contact `contact_id`, in service with them, to `target`.
    /// Their leg ends at `ended` (held between its acceptance and `now`, as
    /// [`Engine::complete_at`]) and its wrap-up (`wrap_up_ms`, or the queue's when 0) starts.
    /// Errors: the contact is not in this operator's hands (`WrongState`), an unknown target
    /// queue or operator, a named operator who does not serve the queue, and
    /// [`RoutingError::TransferRefused`] when the target cannot take it now (its budget
    /// refuses and nobody else there is paid otherwise, nobody is logged in, it is full): then
    /// nothing changed. A closed target queue is not refused: the contact gets its fallback.
    #[allow(clippy::too_many_arguments)]
    pub fn transfer_at(
        &self,
        operator_id: &str,
        contact_id: &str,
        target: &TransferTarget,
        wrap_up_ms: u64,
        ended: Millis,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Transfer, RoutingError> {
        validate_id("operator_id", operator_id)?;
        validate_id("contact_id", contact_id)?;
        if wrap_up_ms > 3_600_000 {
            return Err(RoutingError::invalid("wrap_up_ms", "above one hour"));
        }
        let (tq, pin) = self.target_of(target)?;
        let idx = self.known_slot(operator_id)?;
        // Where this request sends it, as a repeat of an earlier transfer must match.
        let named = pin.map(|(name, _)| self.operator_ids.get(name).map(|r| *r.value()));
        let asked = (tq, named);
        let Some((qi, state)) = self.contacts.get(contact_id).map(|r| (r.queue, r.state)) else {
            return self.transferred_before(idx, contact_id, asked, None, now);
        };
        match state {
            CState::InService { slot, .. } if slot == idx => {}
            _ => return self.transferred_before(idx, contact_id, asked, Some((qi, state)), now),
        }
        let (consulting, is_consult) =
            self.contacts.get(contact_id).map_or((None, false), |r| (r.consult.clone(), r.consult_of.is_some()));
        if is_consult {
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` is a consultation: only its first operator moves the caller on"
            )));
        }
        if let Some(k) = consulting.filter(|k| self.consult_open(k, contact_id)) {
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` is in consultation `{}`: hand it over or cancel it first",
                crate::error::clip(&k)
            )));
        }
        // The named operator: logged in, someone else, serving the queue on the channel.
        let pinned = match (pin, tq) {
            (Some(pin), Some(t)) => {
                let ch = self.contacts.get(contact_id).map_or(Channel::Voice, |r| r.channel);
                Some(self.pin_for(idx, pin, t, ch, now, "transfers")?)
            }
            _ => None,
        };
        // What the target can take, judged before the leg ends (the operator keeps the caller
        // on a refusal). A closed target is not refused: its fallback applies.
        let target_open = tq.is_some_and(|t| self.is_open(&self.queues[t as usize], now));
        if let Some(t) = tq {
            self.target_takes(t, Some(idx), now)?;
        }
        let queue_wrap = self.queues[qi as usize].state.lock().params.wrap_up_ms;
        let Some(mut rec) = self.contacts.get_mut(contact_id) else {
            return self.transferred_before(idx, contact_id, asked, None, now);
        };
        let CState::InService { slot, gen, accepted_at } = rec.state else {
            return Err(RoutingError::WrongState(format!("contact `{contact_id}` is no longer in service")));
        };
        if slot != idx || rec.queue != qi {
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` is in service with another operator"
            )));
        }
        let id = rec.key().clone();
        let q = &self.queues[qi as usize];
        let session = self.slot(slot).session.lock().clone();
        let handle_ms = ended.min(now).max(accepted_at).since(accepted_at);
        let leg_budget = rec.funding.clone();
        // The leg's budget settles it if it pays this operator; else its reservation is released.
        let leg_paid = leg_budget.clone().filter(|b| session.as_ref().is_some_and(|s| s.budget.as_ref() == Some(b)));
        let base = Settlement {
            budget: "",
            contact_id: &id,
            queue: &q.name,
            group: "",
            operator: "",
            channel: rec.channel,
            handle_ms,
            accepted_at,
            now,
            outcome: Outcome::Transferred,
            repeat: false,
        };
        let paid_before = rec.paid.clone();
        // The next leg's money, admitted before anything changes.
        let mut charged = None;
        let mut next_funding = None;
        let mut leg_done = false;
        let target_budget = tq.filter(|_| target_open).and_then(|t| self.queues[t as usize].budget.clone());
        if let (Some(t), Some(bt)) = (tq, &target_budget) {
            let tqueue = &self.queues[t as usize];
            // Someone else there whom another budget (or none) pays: not the operator who
            // transfers, who is never offered it back.
            let needed =
                !tqueue.candidates.read().iter().any(|c| c.slot != idx && c.session.budget.as_ref() != Some(bt));
            let req = FundingRequest {
                budget: bt,
                contact_id: &id,
                queue: &tqueue.name,
                channel: rec.channel,
                priority: tqueue.priority() + rec.priority.max(tqueue.transfer_priority),
                segment: rec.segment,
                now,
            };
            let funded = if leg_budget.as_ref() == Some(bt) {
                match (&leg_paid, &session) {
                    // The same budget pays this leg and the next: settle and reserve in one step.
                    (Some(b), Some(s)) => match self.gate.settle_and_reserve(
                        &Settlement {
                            budget: b,
                            group: &s.group,
                            operator: &s.id,
                            repeat: paid_before.contains(b),
                            ..base
                        },
                        &req,
                    ) {
                        Some(c) => {
                            charged = c.map(|cents| (b.clone(), cents));
                            leg_done = true;
                            true
                        }
                        None => false,
                    },
                    // Reserved on it but not paid by it (this operator is internal staff): the
                    // reservation carries over to the next leg.
                    _ => true,
                }
            } else {
                self.gate.reserve(&req)
            };
            if funded {
                next_funding = Some(bt.clone());
            } else if needed {
                return Err(RoutingError::TransferRefused {
                    reason: DivertReason::ExtraBudget,
                    queue: tqueue.name.to_string(),
                });
            }
        }

        // The leg ends: wrap-up starts before capacity is released, as in a completion.
        let external = tq.is_none();
        if !leg_done && !external {
            if let Some(b) = &leg_budget {
                match (&leg_paid, &session) {
                    (Some(_), Some(s)) => {
                        charged = self
                            .gate
                            .settle(&Settlement {
                                budget: b,
                                group: &s.group,
                                operator: &s.id,
                                repeat: paid_before.contains(b),
                                ..base
                            })
                            .map(|cents| (b.clone(), cents));
                    }
                    _ if next_funding.as_ref() != Some(b) => self.gate.release(b, &id),
                    _ => {}
                }
            }
        }
        if let Some((b, _)) = &charged {
            if !rec.paid.contains(b) {
                rec.paid.push(b.clone());
            }
        }
        let wrap = if wrap_up_ms > 0 { wrap_up_ms } else { queue_wrap };
        let (t, completion) = self.end_leg(q, slot, gen, rec.channel, &id, handle_ms, wrap, now);
        rec.legs.push(Leg { slot, completion, to: tq, named: pinned.map(|(s, _)| s) });
        out.push(Event::Transferred {
            contact: id.clone(),
            queue: q.name.clone(),
            channel: rec.channel,
            operator: session.as_ref().map_or_else(|| Arc::from(operator_id), |s| s.id.clone()),
            group: session.as_ref().map_or_else(|| Arc::from(""), |s| s.group.clone()),
            to: tq.map(|t| self.queues[t as usize].name.clone()),
            to_operator: pin.map(|(n, _)| Arc::from(n)),
            accepted: accepted_at,
            arrived: rec.arrived,
            pinned_until: pinned.map(|(_, until)| until),
            handle_ms,
            wrap_up_ms: completion.wrap_up_ms,
            charged: charged.clone(),
        });

        let next = match tq {
            None => {
                // Out of the centre: the contact ends with this leg (its budget settles it).
                self.finish(&mut rec, &id, Outcome::Transferred, None, Some((slot, completion, accepted_at)), now, out);
                drop(rec);
                self.remove_done(&id);
                Next::Ended(Outcome::Transferred)
            }
            Some(t) => {
                let tqueue = &self.queues[t as usize];
                rec.state = CState::Arriving;
                rec.queue = t;
                rec.entered = now;
                rec.priority = rec.priority.max(tqueue.transfer_priority);
                rec.pinned = pinned;
                rec.appointment = false;
                rec.declined = vec![slot];
                rec.funding = next_funding;
                rec.not_before = accepted_at.plus(1);
                drop(rec);
                Next::Placed(self.place_arriving(&id, &[t], now, out))
            }
        };
        if let Some(s) = &session {
            self.status_event(s, t, out);
        }
        self.find_work(slot, now, out);
        Ok(Transfer { completion, next })
    }

    /// A target's queue (`None`: out of the centre) and the operator it names with their head
    /// start, checked: a queue name of 1 to 128 bytes that exists, a well-formed operator id, a
    /// head start of at most [`MAX_PIN_MS`].
    pub(super) fn target_of<'t>(
        &self,
        target: &'t TransferTarget,
    ) -> Result<(Option<u32>, Option<Pin<'t>>), RoutingError> {
        let queue = |q: &str| {
            if q.is_empty() || q.len() > 128 {
                return Err(RoutingError::invalid("queue", "1 to 128 bytes"));
            }
            self.queue_idx(q)
        };
        Ok(match target {
            TransferTarget::Queue(q) => (Some(queue(q)?), None),
            TransferTarget::Operator { operator, queue: q, timeout_ms } => {
                validate_id("to_operator", operator)?;
                if *timeout_ms > MAX_PIN_MS {
                    return Err(RoutingError::invalid("timeout_ms", "above one hour"));
                }
                (Some(queue(q)?), Some((operator.as_str(), *timeout_ms)))
            }
            TransferTarget::External => (None, None),
        })
    }

    /// The slot of the operator a transfer or a consultation names (`pin`: their id and head
    /// start) and until when only they may take it: logged in, not the operator `idx` who
    /// `acts` (transfers, consults), serving queue `t` on `channel`.
    pub(super) fn pin_for(
        &self,
        idx: u32,
        (name, timeout_ms): Pin<'_>,
        t: u32,
        channel: Channel,
        now: Millis,
        acts: &str,
    ) -> Result<(u32, Millis), RoutingError> {
        let (tslot, session) = self.logged_in(name)?;
        if tslot == idx {
            return Err(RoutingError::invalid("to_operator", format!("is the operator who {acts}")));
        }
        if !session.queues.iter().any(|(q, _)| *q == t) || session.caps[channel.index()] == 0 {
            return Err(RoutingError::WrongState(format!(
                "operator `{}` does not take {} contacts of queue `{}`",
                crate::error::clip(name),
                channel.as_str(),
                self.queues[t as usize].name
            )));
        }
        Ok((tslot, now.plus(timeout_ms)))
    }

    /// Whether queue `t` can take a transferred contact now: closed is fine (its fallback
    /// applies); open, someone other than the transferring operator's slot `from` is logged in
    /// (or the takeover grace runs) and it is not full. Else [`RoutingError::TransferRefused`].
    pub(super) fn target_takes(&self, t: u32, from: Option<u32>, now: Millis) -> Result<(), RoutingError> {
        let q = &self.queues[t as usize];
        if !self.is_open(q, now) {
            return Ok(());
        }
        let refuse = |reason| Err(RoutingError::TransferRefused { reason, queue: q.name.to_string() });
        // Logged in there, other than the operator who transfers (never offered it back).
        let staffed = q.candidates.read().iter().any(|c| Some(c.slot) != from);
        if !staffed && now.0 >= self.staff_grace_until.load(Ordering::Relaxed) {
            return refuse(DivertReason::NoOperators);
        }
        let full = {
            let st = q.state.lock();
            st.len() >= st.params.max_length as usize
        };
        if full {
            return refuse(DivertReason::QueueFull);
        }
        Ok(())
    }

    /// [`Engine::transfer_at`]'s check of its target queue, for a contact this engine does not
    /// hold (one carried across a restart, which the server ends and offers again): unknown queue
    /// or a malformed name, nobody logged in there but `operator_id`, full.
    pub fn transfer_target_takes(&self, queue: &str, operator_id: &str, now: Millis) -> Result<(), RoutingError> {
        if queue.is_empty() || queue.len() > 128 {
            return Err(RoutingError::invalid("queue", "1 to 128 bytes"));
        }
        let t = self.queue_idx(queue)?;
        let from = self.operator_ids.get(operator_id).map(|r| *r.value());
        self.target_takes(t, from, now)
    }

    /// Where contact `contact_id` stands, as a repeated transfer reports it: its current decision
    /// if live, its end if this life remembers it; `None` if it does not know it.
    #[must_use]
    pub fn standing(&self, contact_id: &str, now: Millis) -> Option<Next> {
        if let Some((qi, state)) = self.contacts.get(contact_id).map(|r| (r.queue, r.state)) {
            let id: Arc<str> = Arc::from(contact_id);
            return Some(Next::Placed(self.current_decision(&id, qi, state, now).unwrap_or(Decision::Queued {
                queue: self.queues[qi as usize].name.clone(),
                position: 0,
                estimated_wait_ms: 0,
            })));
        }
        let f = self.finished_get(contact_id)?;
        Some(match f.diverted {
            Some((reason, fallback)) => Next::Placed(Decision::Diverted {
                reason,
                fallback,
                queue: self.queues[f.queue as usize].name.clone(),
                reopens: None,
            }),
            None => Next::Ended(f.outcome),
        })
    }

    /// The answer to a transfer of a contact that is not in this operator's hands: the same
    /// answer if they transferred it before to the same place (in this life), else why not.
    fn transferred_before(
        &self,
        idx: u32,
        contact_id: &str,
        (to, named): (Option<u32>, Option<Option<u32>>),
        live: Option<(u32, CState)>,
        now: Millis,
    ) -> Result<Transfer, RoutingError> {
        let (leg, finished) = match live {
            Some(_) => {
                (self.contacts.get(contact_id).and_then(|r| r.legs.iter().rev().find(|l| l.slot == idx).copied()), None)
            }
            None => match self.finished_get(contact_id) {
                Some(f) => (f.legs.iter().rev().find(|l| l.slot == idx).copied(), Some(f)),
                None => return Err(RoutingError::UnknownContact(contact_id.to_owned())),
            },
        };
        let Some(leg) = leg else {
            return Err(match (&finished, live) {
                // Ended in an earlier life: the server answers from its transfer record.
                (Some(f), _) if f.completed_by.is_none() && f.legs.is_empty() => {
                    RoutingError::UnknownContact(contact_id.to_owned())
                }
                (Some(_), _) => RoutingError::WrongState(format!(
                    "contact `{contact_id}` ended without being transferred by this operator"
                )),
                (None, _) => {
                    RoutingError::WrongState(format!("contact `{contact_id}` is not in service with this operator"))
                }
            });
        };
        // The same place: the same queue, and the same operator named (an unknown name matches
        // none).
        let same_named = match named {
            None => leg.named.is_none(),
            Some(slot) => slot.is_some() && slot == leg.named,
        };
        if leg.to != to || !same_named {
            let mut was = leg
                .to
                .map_or_else(|| "out of the centre".to_owned(), |q| format!("to `{}`", self.queues[q as usize].name));
            if let Some(s) = leg.named {
                was.push_str(&format!(" for `{}`", self.operator_name(s)));
            }
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` was already transferred by this operator, {was}"
            )));
        }
        let next = self.standing(contact_id, now).unwrap_or(Next::Ended(Outcome::Transferred));
        Ok(Transfer { completion: leg.completion, next })
    }

    /// Offers again, after a restart or a failover, the next leg of a contact an operator
    /// transferred (from its durable transfer record): into the queue it was sent to (`req.queue`),
    /// at that queue's transfer priority, for `pinned_to` first until `pinned_until` (if that
    /// operator is logged in), never to `from` (the operator who sent it), with `paid` the budgets
    /// that settled its earlier legs. Idempotent like [`Engine::offer`].
    pub fn offer_leg(
        &self,
        req: &OfferRequest,
        pinned_to: Option<(&str, Millis)>,
        from: Option<&str>,
        paid: &[String],
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Decision, RoutingError> {
        let slot_of = |name: &str| {
            self.operator_ids
                .get(name)
                .map(|r| *r.value())
                .filter(|&s| self.slot(s).session.lock().as_ref().is_some_and(|x| *x.id == *name))
        };
        let pinned = pinned_to.and_then(|(name, until)| slot_of(name).map(|s| (s, until)));
        let kind = Kind::Leg {
            pinned,
            paid: paid.iter().map(|b| Arc::from(b.as_str())).collect(),
            from: from.and_then(|name| self.operator_ids.get(name).map(|r| *r.value())),
        };
        self.offer_as(req, kind, now, out)
    }
}
