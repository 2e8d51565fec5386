//! The citizen who cannot wait: queued callbacks (virtual hold) and places kept for a redial.
//!
//! **Callbacks.** A waiting voice or video caller may ask to be called back
//! ([`Engine::request_callback`]); a contact offered on the CALLBACK channel (a web form) is a
//! callback from the start. A callback keeps its place: its rank in the queue is the one its
//! arrival and priority gave it, so it reaches the head exactly when the call would have, and
//! is then offered to an operator with `callback` set. Once the operator accepts, the platform
//! dials. If nobody answers, the platform reports it ([`Engine::callback_unanswered`]): the
//! operator is freed (no wrap-up, nothing charged), the contact leaves the line and is *parked*
//! until its next attempt, `callback_retry_ms[attempt - 1]` later (or at the queue's next
//! opening, if that falls outside its hours), when it goes back in line with its original rank.
//! When the schedule runs out it ends [`Outcome::Unreachable`]. A callback has no maximum wait
//! and no patience (nobody is on the line); cancelling it (the citizen withdrew) abandons it.
//! Its budget reservation is held from admission to its end, like a call's: an unanswered
//! attempt gives the money back and reserves it again at once, so the ceiling holds throughout
//! and a retry is never refused for money another contact took meanwhile, unless pacing moved
//! the allowance below it — then the callback ends diverted EXTRA_BUDGET with its queue's
//! fallback.
//!
//! **Redial.** On a queue with a `resume_window_ms`, a caller who hangs up while waiting (or
//! while being offered) leaves their place — arrival time and priority — under their caller key
//! (a keyed hash computed by the platform; the number itself never reaches smista) for that
//! window. A new contact with the same key arriving in the same queue within the window takes
//! the place over: it ranks as if it had arrived then. The key is forgotten when the window ends
//! (the tick purges it) or the place is taken, whichever comes first.

use std::collections::BTreeMap;

use super::*;

/// A place kept for a caller who hung up.
#[derive(Debug, Clone, Copy)]
pub(super) struct Place {
    pub(super) queue: u32,
    pub(super) arrived: Millis,
    pub(super) priority: u32,
    expires: (Millis, u64),
}

/// Places kept by caller key, with their expiries in order (the tick's work is what is due).
#[derive(Debug, Default)]
pub(super) struct Redial {
    by_key: HashMap<Arc<str>, Place>,
    by_expiry: BTreeMap<(Millis, u64), Arc<str>>,
    /// Tie-breaker of `by_expiry` keys.
    seq: u64,
}

/// What follows an unanswered callback attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackNext {
    /// Another attempt is scheduled: the contact goes back in line at `due` (engine time).
    Scheduled {
        /// Attempts made so far.
        attempts: u32,
        /// When it goes back in line.
        due: Millis,
    },
    /// No attempt is left: the contact ended UNREACHABLE.
    Unreachable,
    /// No attempt is left and the budget no longer funds one: ended diverted EXTRA_BUDGET.
    Unfunded,
}

impl Engine {
    /// A waiting caller chose to be called back. The contact keeps its place; its maximum wait
    /// and patience no longer apply. Idempotent: asking again answers the current decision.
    /// Only a queued voice or video contact can become a callback (`WrongState` otherwise:
    /// one already offered to an operator is being answered live).
    pub fn request_callback(
        &self,
        contact_id: &str,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<Decision, RoutingError> {
        validate_id("contact_id", contact_id)?;
        let Some((id, qi, state)) = self.contacts.get(contact_id).map(|r| (r.key().clone(), r.queue, r.state)) else {
            return Err(match self.finished_get(contact_id) {
                Some(_) => RoutingError::ContactFinished(contact_id.to_owned()),
                None => RoutingError::UnknownContact(contact_id.to_owned()),
            });
        };
        let q = &self.queues[qi as usize];
        let CState::Queued { rank } = state else {
            return match state {
                CState::Parked { .. } => self.current_decision(&id, qi, state, now),
                CState::Arriving => Err(RoutingError::Busy(contact_id.to_owned())),
                _ => Err(RoutingError::WrongState(format!(
                    "contact `{contact_id}` is no longer waiting: it is being answered by an operator"
                ))),
            };
        };
        let mut st = q.state.lock();
        let Some(mut rec) = self.contacts.get_mut(&id) else { return Err(RoutingError::Busy(contact_id.to_owned())) };
        if rec.state != state || rec.queue != qi {
            return Err(RoutingError::Busy(contact_id.to_owned()));
        }
        if rec.consult_of.is_some() {
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` is a consultation: only a caller can be called back"
            )));
        }
        if !matches!(rec.channel, Channel::Voice | Channel::Video | Channel::Callback) {
            return Err(RoutingError::WrongState(format!(
                "contact `{contact_id}` is a {} contact: only calls can be called back",
                rec.channel.as_str()
            )));
        }
        let position = st.position(rec.channel, &rank);
        if rec.callback.is_none() {
            rec.callback = Some(0);
            rec.patience_ms = 0;
            if let Some(w) = st.waiting[rec.channel.index()].get_mut(&rank) {
                if let Some(e) = w.expiry.take() {
                    st.expiry.remove(&e);
                }
            }
            out.push(Event::CallbackRequested { contact: id.clone(), queue: q.name.clone(), position });
        }
        Ok(Decision::Queued {
            queue: q.name.clone(),
            position,
            estimated_wait_ms: q.estimated_wait(rec.channel, position),
        })
    }

    /// The platform dialled a callback its operator accepted and nobody answered. The operator
    /// is freed at once (no wrap-up, nothing charged); the contact is parked until its next
    /// attempt, or ends UNREACHABLE when its queue's `callback_retry_ms` has no attempt left.
    /// Repeating the report answers the same (while the contact is parked or has ended).
    pub fn callback_unanswered(
        &self,
        contact_id: &str,
        now: Millis,
        out: &mut Vec<Event>,
    ) -> Result<CallbackNext, RoutingError> {
        validate_id("contact_id", contact_id)?;
        let Some((qi, state)) = self.contacts.get(contact_id).map(|r| (r.queue, r.state)) else {
            return match self.finished_get(contact_id) {
                Some(f) if f.outcome == Outcome::Unreachable => Ok(CallbackNext::Unreachable),
                Some(f) if f.diverted.is_some_and(|(r, _)| r == DivertReason::ExtraBudget) => {
                    Ok(CallbackNext::Unfunded)
                }
                Some(_) => Err(RoutingError::ContactFinished(contact_id.to_owned())),
                None => Err(RoutingError::UnknownContact(contact_id.to_owned())),
            };
        };
        let q = &self.queues[qi as usize];
        let mut st = q.state.lock();
        let Some(mut rec) = self.contacts.get_mut(contact_id) else {
            return Err(RoutingError::Busy(contact_id.to_owned()));
        };
        if rec.state != state || rec.queue != qi {
            return Err(RoutingError::Busy(contact_id.to_owned()));
        }
        let attempts = rec.callback.unwrap_or(0);
        let (slot, gen) = match (rec.callback, state) {
            (Some(_), CState::InService { slot, gen, .. }) => (slot, gen),
            (Some(_), CState::Parked { due }) => return Ok(CallbackNext::Scheduled { attempts, due: due.0 }),
            (None, _) => {
                return Err(RoutingError::WrongState(format!("contact `{contact_id}` is not a callback")));
            }
            _ => {
                return Err(RoutingError::WrongState(format!(
                    "callback `{contact_id}` is not in service: an operator must accept it before it is dialled"
                )));
            }
        };
        let id = rec.key().clone();
        // Nobody answered: a consultation about the call has nothing to talk about.
        let consult = rec.consult.take();
        q.in_service.fetch_sub(1, Ordering::Relaxed);
        self.drop_held(slot, &id);
        self.slot(slot).release(gen, rec.channel, now);
        let attempts = attempts + 1;
        rec.callback = Some(attempts);
        // The attempt cost nothing: its money goes back and is reserved again for the next one.
        let mut funded = true;
        if let Some(b) = rec.funding.take() {
            self.gate.release(&b, &id);
            let req = FundingRequest {
                budget: &b,
                contact_id: &id,
                queue: &q.name,
                channel: rec.channel,
                priority: q.priority() + rec.priority,
                segment: rec.segment,
                now,
            };
            if self.gate.reserve(&req) {
                rec.funding = Some(b);
            } else {
                funded = false;
            }
        }
        let next = match q.callback_retry_ms.get(attempts as usize - 1) {
            Some(_) if !funded => {
                let fallback = st.params.fallback;
                let reason = DivertReason::ExtraBudget;
                out.push(Event::Diverted {
                    contact: id.clone(),
                    queue: q.name.clone(),
                    channel: rec.channel,
                    reason,
                    fallback,
                });
                self.finish(&mut rec, &id, Outcome::Diverted, Some((reason, fallback)), None, now, out);
                CallbackNext::Unfunded
            }
            Some(&delay) => {
                let at = now.plus(delay);
                let due = (self.hours_open_from(q, at).unwrap_or(at), st.next_seq());
                st.parked.insert(due, id.clone());
                rec.state = CState::Parked { due };
                out.push(Event::CallbackScheduled { contact: id.clone(), queue: q.name.clone(), attempts, due: due.0 });
                CallbackNext::Scheduled { attempts, due: due.0 }
            }
            None => {
                self.finish(&mut rec, &id, Outcome::Unreachable, None, None, now, out);
                CallbackNext::Unreachable
            }
        };
        drop(rec);
        drop(st);
        self.remove_done(&id);
        self.end_consult_with(&id, consult, now, out);
        self.find_work(slot, now, out);
        Ok(next)
    }

    /// Puts the queue's parked callbacks that are due back in line, with their original rank;
    /// returns them for matching.
    pub(super) fn unpark_due(&self, q: &Queue, st: &mut State, now: Millis, out: &mut Vec<Event>) -> Vec<Arc<str>> {
        let mut back = Vec::new();
        while let Some((&due, _)) = st.parked.first_key_value() {
            if due.0 > now {
                break;
            }
            let Some((_, id)) = st.parked.pop_first() else { break };
            let Some(mut rec) = self.contacts.get_mut(&id) else { continue };
            if rec.state != (CState::Parked { due }) {
                continue;
            }
            let position = self.enqueue_locked(q, st, &id, &mut rec, false, now);
            drop(rec);
            out.push(Event::Queued { contact: id.clone(), queue: q.name.clone(), position });
            back.push(id);
        }
        back
    }

    /// Keeps the place of a caller who hung up while waiting or being offered, if their entry
    /// queue resumes places and they gave a caller key (not for callbacks: those withdrew).
    pub(super) fn keep_place(&self, rec: &Contact, now: Millis) {
        let Some(key) = rec.caller_key.clone() else { return };
        let window = self.queues[rec.entry_queue as usize].resume_window_ms;
        if window == 0 || rec.callback.is_some() {
            return;
        }
        let mut r = self.redial.lock();
        r.seq += 1;
        let expires = (now.plus(window), r.seq);
        let place = Place { queue: rec.entry_queue, arrived: rec.arrived, priority: rec.priority, expires };
        if let Some(old) = r.by_key.insert(key.clone(), place) {
            r.by_expiry.remove(&old.expires);
        }
        r.by_expiry.insert(expires, key);
    }

    /// Takes the place kept for `key` in queue `queue`, if its window is still open.
    pub(super) fn resume_place(&self, key: &Arc<str>, queue: u32, now: Millis) -> Option<Place> {
        let mut r = self.redial.lock();
        let place = *r.by_key.get(key)?;
        if place.queue != queue || place.expires.0 <= now {
            return None;
        }
        r.by_key.remove(key);
        r.by_expiry.remove(&place.expires);
        Some(place)
    }

    /// Forgets the places whose window has ended.
    pub(super) fn purge_places(&self, now: Millis) {
        let mut r = self.redial.lock();
        while let Some((&e, _)) = r.by_expiry.first_key_value() {
            if e.0 > now {
                break;
            }
            if let Some((_, key)) = r.by_expiry.pop_first() {
                r.by_key.remove(&key);
            }
        }
    }

    /// Caller keys currently kept for a redial (for tests: they must not outlive their window).
    #[must_use]
    pub fn places_kept(&self) -> usize {
        self.redial.lock().by_key.len()
    }
}
