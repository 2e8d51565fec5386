//! Model-based property test: random interleavings of offers, cancels, logins, logouts, state
//! changes, accepts, declines, completions, transfers (to queues, to named operators, out of the
//! centre, and by the wrong operator), consultations (asked of a queue or a named operator, handed
//! over, turned into conferences, cancelled, ended by either side or with their contact), budget
//! refusals and clock advances. A simple
//! sequential reference model of every contact's and operator's lifecycle replays each event the
//! engine emits and rejects any transition the specification forbids; after every step the
//! engine's own audit must be clean; at the end every contact has exactly one outcome and every
//! budget reservation was released or settled exactly once.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use smista_core::budget::CountingGate;
use smista_core::config::{ExpansionStep, QueueConfig, Strategy as Pick};
use smista_core::{
    Channel, ConsultAction, ConsultStep, Decision, Engine, Event, Millis, Next, OperatorStatus, Outcome,
    RequestedState, RoutingError, TransferTarget,
};

#[derive(Clone, Debug)]
enum Op {
    Login {
        op: usize,
        group: usize,
        level: u8,
        chats: u8,
    },
    Logout {
        op: usize,
        force: bool,
    },
    Pause {
        op: usize,
    },
    Available {
        op: usize,
    },
    Offer {
        contact: usize,
        queue: usize,
        chat: bool,
        priority: u32,
        caller: u8,
    },
    Cancel {
        contact: usize,
    },
    Accept {
        pick: usize,
    },
    AcceptWrong {
        op: usize,
        contact: usize,
    },
    Decline {
        pick: usize,
    },
    Complete {
        pick: usize,
        wrap: u64,
    },
    Advance {
        ms: u64,
    },
    Refuse {
        on: bool,
    },
    RequestCallback {
        pick: usize,
    },
    Appointment {
        contact: usize,
        op: usize,
        grace: u64,
    },
    Hold {
        op: usize,
        ms: u64,
    },
    Update {
        op: usize,
        level: u8,
        chats: u8,
    },
    RequestCallbackAny {
        contact: usize,
    },
    CallbackUnanswered {
        pick: usize,
    },
    /// The operator serving a contact moves it on: to a queue (0..3), out (3) or to a named
    /// operator through a queue (4).
    Transfer {
        pick: usize,
        to: usize,
        op: usize,
        wrap: u64,
    },
    /// Someone tries to transfer a contact that may not be in their hands.
    TransferWrong {
        op: usize,
        contact: usize,
    },
    /// The operator serving a contact asks for consultation `k{id}`: of a queue (0..3) or of a
    /// named operator through `pensions` (3).
    Consult {
        pick: usize,
        to: usize,
        op: usize,
        id: usize,
    },
    /// The first operator of an open consultation hands over (0), joins a conference (1) or
    /// cancels (2); or the second operator completes it (3).
    EndConsult {
        pick: usize,
        action: usize,
        wrap: u64,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..6usize, 0..3usize, 1..=10u8, 0..=3u8).prop_map(|(op, group, level, chats)| Op::Login { op, group, level, chats }),
        1 => (0..6usize, any::<bool>()).prop_map(|(op, force)| Op::Logout { op, force }),
        1 => (0..6usize).prop_map(|op| Op::Pause { op }),
        2 => (0..6usize).prop_map(|op| Op::Available { op }),
        5 => (0..40usize, 0..3usize, any::<bool>(), 0..=10u32, 0..4u8).prop_map(|(contact, queue, chat, priority, caller)| Op::Offer { contact, queue, chat, priority, caller }),
        3 => any::<usize>().prop_map(|pick| Op::RequestCallback { pick }),
        2 => (0..40usize, 0..6usize, 0..30_000u64).prop_map(|(contact, op, grace)| Op::Appointment { contact, op, grace }),
        1 => (0..6usize, 0..60_000u64).prop_map(|(op, ms)| Op::Hold { op, ms }),
        1 => (0..6usize, 1..=10u8, 0..=3u8).prop_map(|(op, level, chats)| Op::Update { op, level, chats }),
        1 => (0..40usize).prop_map(|contact| Op::RequestCallbackAny { contact }),
        3 => any::<usize>().prop_map(|pick| Op::CallbackUnanswered { pick }),
        1 => (0..40usize).prop_map(|contact| Op::Cancel { contact }),
        4 => any::<usize>().prop_map(|pick| Op::Accept { pick }),
        1 => (0..6usize, 0..40usize).prop_map(|(op, contact)| Op::AcceptWrong { op, contact }),
        1 => any::<usize>().prop_map(|pick| Op::Decline { pick }),
        4 => (any::<usize>(), prop_oneof![Just(0u64), Just(1u64), 1..20_000u64]).prop_map(|(pick, wrap)| Op::Complete { pick, wrap }),
        3 => (0..25_000u64).prop_map(|ms| Op::Advance { ms }),
        1 => any::<bool>().prop_map(|on| Op::Refuse { on }),
        3 => (any::<usize>(), 0..5usize, 0..6usize, prop_oneof![Just(0u64), 1..20_000u64]).prop_map(|(pick, to, op, wrap)| Op::Transfer { pick, to, op, wrap }),
        1 => (0..6usize, 0..40usize).prop_map(|(op, contact)| Op::TransferWrong { op, contact }),
        3 => (any::<usize>(), 0..4usize, 0..6usize, 0..20usize).prop_map(|(pick, to, op, id)| Op::Consult { pick, to, op, id }),
        3 => (any::<usize>(), 0..4usize, prop_oneof![Just(0u64), 1..20_000u64]).prop_map(|(pick, action, wrap)| Op::EndConsult { pick, action, wrap }),
    ]
}

/// Weighted towards consultations: operators log in and take calls, ask for consultations, the
/// colleagues accept, and the first hands over, confers, cancels — with the contact ending,
/// forced logouts, budget refusals and time passing in between.
fn consult_heavy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, 0..3usize, 1..=10u8, 0..=1u8).prop_map(|(op, group, level, chats)| Op::Login { op, group, level, chats }),
        1 => (0..6usize, Just(true)).prop_map(|(op, force)| Op::Logout { op, force }),
        4 => (0..40usize, 0..3usize, Just(false), 0..=3u32, Just(0u8)).prop_map(|(contact, queue, chat, priority, caller)| Op::Offer { contact, queue, chat, priority, caller }),
        1 => (0..40usize).prop_map(|contact| Op::Cancel { contact }),
        8 => any::<usize>().prop_map(|pick| Op::Accept { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Decline { pick }),
        2 => (any::<usize>(), Just(0u64)).prop_map(|(pick, wrap)| Op::Complete { pick, wrap }),
        2 => (0..3_000u64).prop_map(|ms| Op::Advance { ms }),
        1 => any::<bool>().prop_map(|on| Op::Refuse { on }),
        1 => (any::<usize>(), 0..3usize, 0..6usize, Just(0u64)).prop_map(|(pick, to, op, wrap)| Op::Transfer { pick, to, op, wrap }),
        6 => (any::<usize>(), 0..4usize, 0..6usize, 0..20usize).prop_map(|(pick, to, op, id)| Op::Consult { pick, to, op, id }),
        6 => (any::<usize>(), 0..4usize, prop_oneof![Just(0u64), 1..5_000u64]).prop_map(|(pick, action, wrap)| Op::EndConsult { pick, action, wrap }),
    ]
}

const GROUPS: [&str; 3] = ["internal", "supplier-a", "supplier-b"];
const QUEUES: [&str; 3] = ["pensions", "naspi", "isee"];

fn queues() -> Vec<QueueConfig> {
    let mut p = QueueConfig::new("pensions", &[("pensions", 5)]);
    p.wrap_up_ms = 5_000;
    p.offer_timeout_ms = 8_000;
    p.max_wait_ms = 40_000;
    p.overflow = vec!["isee".into()];
    p.budget = Some("contract-a".into());
    p.expansion = vec![ExpansionStep { after_ms: 15_000, level_drop: 3 }];
    p.callback_retry_ms = vec![3_000, 20_000];
    p.resume_window_ms = 30_000;
    let mut n = QueueConfig::new("naspi", &[("naspi", 3)]);
    n.strategy = Pick::MostSkilled;
    n.max_length = 5;
    n.offer_timeout_ms = 12_000;
    n.prefer_unbudgeted = true;
    n.budget = Some("contract-b".into());
    let mut i = QueueConfig::new("isee", &[]);
    i.strategy = Pick::LeastOccupied;
    i.max_wait_ms = 60_000;
    i.offer_timeout_ms = 10_000;
    i.callback_retry_ms = vec![];
    i.resume_window_ms = 10_000;
    vec![p, n, i]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MContact {
    Waiting,
    Offered(usize, Channel),
    InService(usize, Channel),
    /// A callback between attempts.
    Parked,
    /// Transferred out of the centre; its end follows.
    Leaving,
    /// A consultation handed over: merged into its contact; its end follows.
    Merged,
    Finished(Outcome),
}

#[derive(Clone, Debug)]
struct MOperator {
    status: OperatorStatus,
    wrap_until: Millis,
    load: [u8; 4],
    caps: [u8; 4],
}

/// The reference model: what the specification allows, replayed from the engine's events.
#[derive(Default)]
struct Model {
    now: Millis,
    contacts: HashMap<String, MContact>,
    ops: HashMap<String, MOperator>,
    finished_events: HashMap<String, usize>,
    callbacks: std::collections::HashSet<String>,
    /// Open consultations: their contact and the operator who asked.
    consults: HashMap<String, (String, usize)>,
    /// Consultations that were handed over or ended (each once).
    consults_done: HashMap<String, usize>,
}

fn op_index(name: &str) -> usize {
    name.trim_start_matches("op").parse().expect("operator name")
}

impl Model {
    fn apply(&mut self, events: &[Event]) -> Result<(), String> {
        for ev in events {
            self.apply_one(ev).map_err(|e| format!("{e}\n  at event {ev:?}\n  events {events:#?}"))?;
        }
        Ok(())
    }

    fn apply_one(&mut self, ev: &Event) -> Result<(), String> {
        match ev {
            Event::Queued { contact, .. } => {
                let c = self.contacts.entry(contact.to_string()).or_insert(MContact::Waiting);
                if matches!(c, MContact::Finished(_) | MContact::InService(..)) {
                    return Err(format!("{contact} queued from {c:?}"));
                }
                *c = MContact::Waiting;
            }
            Event::Offered { contact, operator, channel, .. } => {
                // A new contact may be offered directly, without waiting first.
                let c = self.contacts.get(&**contact).copied();
                if !matches!(c, None | Some(MContact::Waiting)) {
                    return Err(format!("{contact} offered while {c:?}"));
                }
                if let Some((_, first)) = self.consults.get(&**contact) {
                    if *first == op_index(operator) {
                        return Err(format!("consultation {contact} offered to the operator who asked for it"));
                    }
                }
                let o = self.ops.get_mut(&**operator).ok_or("offer to unknown operator")?;
                if o.status != OperatorStatus::Available {
                    return Err(format!("{contact} offered to {operator} while {:?}", o.status));
                }
                let ch = channel.index();
                let total: u8 = o.load.iter().sum();
                let exclusive_busy = Channel::ALL.iter().any(|c| c.is_exclusive() && o.load[c.index()] > 0);
                let room = o.load[ch] < o.caps[ch] && if channel.is_exclusive() { total == 0 } else { !exclusive_busy };
                if !room {
                    return Err(format!(
                        "{contact} offered to {operator} without room: load {:?} caps {:?}",
                        o.load, o.caps
                    ));
                }
                o.load[ch] += 1;
                self.contacts.insert(contact.to_string(), MContact::Offered(op_index(operator), *channel));
            }
            Event::OfferTimedOut { contact, operator, .. } | Event::OfferDeclined { contact, operator, .. } => {
                let c = self.contacts.get(&**contact).copied();
                let Some(MContact::Offered(o, ch)) = c else { return Err(format!("{contact} returned while {c:?}")) };
                if o != op_index(operator) {
                    return Err(format!("{contact} returned by {operator} but offered to op{o}"));
                }
                self.ops.get_mut(&**operator).ok_or("unknown operator")?.load[ch.index()] -= 1;
                self.contacts.insert(contact.to_string(), MContact::Waiting);
            }
            Event::Accepted { contact, operator, .. } => {
                let c = self.contacts.get(&**contact).copied();
                let Some(MContact::Offered(o, ch)) = c else { return Err(format!("{contact} accepted while {c:?}")) };
                if o != op_index(operator) {
                    return Err(format!("{contact} accepted by {operator} but offered to op{o}"));
                }
                self.contacts.insert(contact.to_string(), MContact::InService(o, ch));
            }
            Event::Overflowed { contact, .. } | Event::Diverted { contact, .. } => {
                let c = self.contacts.get(&**contact).copied();
                // A callback whose retry the budget no longer funds is diverted from service.
                let callback_in_service =
                    matches!(c, Some(MContact::InService(..))) && self.callbacks.contains(&**contact);
                if !matches!(c, Some(MContact::Waiting) | None) && !callback_in_service {
                    return Err(format!("{contact} overflowed/diverted while {c:?}"));
                }
            }
            Event::Finished { contact, outcome, .. } => {
                *self.finished_events.entry(contact.to_string()).or_default() += 1;
                let c = self.contacts.get(&**contact).copied();
                let ok = matches!(
                    (c, outcome),
                    (None | Some(MContact::Waiting), Outcome::Diverted | Outcome::Abandoned)
                        | (Some(MContact::Offered(..)), Outcome::Abandoned)
                        | (Some(MContact::Parked), Outcome::Abandoned)
                        | (Some(MContact::InService(..)), Outcome::Completed | Outcome::CancelledInService)
                        | (Some(MContact::Leaving | MContact::Merged), Outcome::Transferred)
                ) || (self.callbacks.contains(&**contact)
                    && matches!(
                        (c, outcome),
                        (Some(MContact::InService(..)), Outcome::Unreachable | Outcome::Diverted)
                    ));
                if !ok {
                    return Err(format!("{contact} finished {outcome:?} from {c:?}"));
                }
                if let Some(MContact::Offered(o, ch) | MContact::InService(o, ch)) = c {
                    self.ops.get_mut(&format!("op{o}")).ok_or("unknown operator")?.load[ch.index()] -= 1;
                }
                self.contacts.insert(contact.to_string(), MContact::Finished(*outcome));
            }
            Event::CallbackRequested { contact, .. } => {
                let c = self.contacts.get(&**contact).copied();
                if c != Some(MContact::Waiting) {
                    return Err(format!("{contact} became a callback while {c:?}"));
                }
                self.callbacks.insert(contact.to_string());
            }
            Event::CallbackScheduled { contact, .. } => {
                let c = self.contacts.get(&**contact).copied();
                let Some(MContact::InService(o, ch)) = c else {
                    return Err(format!("{contact} parked while {c:?}"));
                };
                if !self.callbacks.contains(&**contact) {
                    return Err(format!("{contact} parked but is not a callback"));
                }
                self.ops.get_mut(&format!("op{o}")).ok_or("unknown operator")?.load[ch.index()] -= 1;
                self.contacts.insert(contact.to_string(), MContact::Parked);
            }
            Event::Transferred { contact, operator, to, .. } => {
                let c = self.contacts.get(&**contact).copied();
                let Some(MContact::InService(o, ch)) = c else {
                    return Err(format!("{contact} transferred while {c:?}"));
                };
                if o != op_index(operator) {
                    return Err(format!("{contact} transferred by {operator} but in service with op{o}"));
                }
                self.ops.get_mut(&**operator).ok_or("unknown operator")?.load[ch.index()] -= 1;
                let next = if to.is_some() { MContact::Waiting } else { MContact::Leaving };
                self.contacts.insert(contact.to_string(), next);
            }
            Event::Consultation { contact, consultation, operator, step, to_operator, .. } => {
                let c = self.contacts.get(&**contact).copied();
                let k = self.contacts.get(&**consultation).copied();
                let first = op_index(operator);
                match step {
                    ConsultStep::Requested => {
                        if !matches!(c, Some(MContact::InService(o, _)) if o == first) {
                            return Err(format!("{operator} asked for {consultation} about {contact} while {c:?}"));
                        }
                        if self.consults.values().any(|(p, _)| **p == **contact) {
                            return Err(format!("{contact} has two consultations open"));
                        }
                        if self.consults.insert(consultation.to_string(), (contact.to_string(), first)).is_some()
                            || self.contacts.contains_key(&**consultation)
                        {
                            return Err(format!("consultation id {consultation} reused"));
                        }
                    }
                    ConsultStep::Accepted | ConsultStep::Conference => {
                        let second = to_operator.as_deref().map(op_index);
                        if !matches!(k, Some(MContact::InService(o, _)) if Some(o) == second) {
                            return Err(format!("{consultation} {step:?} while {k:?}"));
                        }
                        if !matches!(c, Some(MContact::InService(o, _)) if o == first) {
                            return Err(format!("{consultation} {step:?} while its contact {contact} is {c:?}"));
                        }
                    }
                    ConsultStep::HandedOver => {
                        // The first's leg ended (its `Transferred` came just before): the contact
                        // is the second's now, on the consultation's capacity.
                        let Some(MContact::InService(b, ch)) = k else {
                            return Err(format!("{consultation} handed over while {k:?}"));
                        };
                        if Some(b) != to_operator.as_deref().map(op_index) || c != Some(MContact::Waiting) {
                            return Err(format!(
                                "{consultation} handed over to {to_operator:?}: {k:?}, {contact} {c:?}"
                            ));
                        }
                        self.contacts.insert(contact.to_string(), MContact::InService(b, ch));
                        self.contacts.insert(consultation.to_string(), MContact::Merged);
                        self.close_consult(consultation)?;
                    }
                    ConsultStep::Ended => {
                        if !matches!(k, Some(MContact::Finished(_))) {
                            return Err(format!("{consultation} ended while {k:?}"));
                        }
                        self.close_consult(consultation)?;
                    }
                }
            }
            Event::OperatorStatus { operator, from, to, .. } => {
                let o = self.ops.entry(operator.to_string()).or_insert(MOperator {
                    status: OperatorStatus::LoggedOut,
                    wrap_until: Millis(0),
                    load: [0; 4],
                    caps: [0; 4],
                });
                if o.status != *from {
                    return Err(format!("{operator} moved {from:?}->{to:?} but model has {:?}", o.status));
                }
                if *from == OperatorStatus::WrapUp && *to == OperatorStatus::Available && self.now < o.wrap_until {
                    return Err(format!(
                        "{operator} left wrap-up at {:?}, before its end {:?}",
                        self.now, o.wrap_until
                    ));
                }
                o.status = *to;
            }
        }
        Ok(())
    }

    fn close_consult(&mut self, k: &str) -> Result<(), String> {
        if self.consults.remove(k).is_none() {
            return Err(format!("consultation {k} closed but not open"));
        }
        let n = self.consults_done.entry(k.to_owned()).or_default();
        *n += 1;
        Ok(())
    }

    fn offered(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self
            .contacts
            .iter()
            .filter_map(|(c, s)| match s {
                MContact::Offered(o, _) => Some((c.clone(), *o)),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    fn in_service(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self
            .contacts
            .iter()
            .filter_map(|(c, s)| match s {
                MContact::InService(o, _) => Some((c.clone(), *o)),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let gate = Arc::new(CountingGate::with_limits(&[("contract-a", 4), ("contract-b", 3)]));
    let e: Engine = engine_with_gate(queues(), gate.clone());
    let mut m = Model::default();
    let mut now = Millis(0);
    let mut ev = Vec::new();
    for op in ops {
        ev.clear();
        if let Op::Advance { ms } = &op {
            m.now = now.plus(*ms);
        }
        let result: Result<(), RoutingError> = match &op {
            Op::Login { op, group, level, chats } => {
                let name = format!("op{op}");
                let mut l = login(&name, GROUPS[*group], &[("pensions", *level), ("naspi", 11 - *level)]);
                l.channels = vec![(Channel::Voice, 1)];
                if *chats > 0 {
                    l.channels.push((Channel::Chat, *chats));
                }
                let was_out = m.ops.get(&name).is_none_or(|o| o.status == OperatorStatus::LoggedOut);
                let r = e.login(&l, now, &mut ev).map(|_| ());
                if r.is_ok() && was_out {
                    let o = m.ops.entry(name).or_insert(MOperator {
                        status: OperatorStatus::LoggedOut,
                        wrap_until: Millis(0),
                        load: [0; 4],
                        caps: [0; 4],
                    });
                    o.caps = [1, 0, 0, *chats];
                    o.wrap_until = Millis(0); // a new session starts without wrap-up
                }
                r
            }
            Op::Logout { op, force } => e.logout(&format!("op{op}"), *force, now, &mut ev),
            Op::Pause { op } => {
                e.set_state(&format!("op{op}"), &RequestedState::Paused("break".into()), now, &mut ev).map(|_| ())
            }
            Op::Available { op } => {
                e.set_state(&format!("op{op}"), &RequestedState::Available, now, &mut ev).map(|_| ())
            }
            Op::Offer { contact, queue, chat, priority, caller } => {
                let mut o = offer(&format!("c{contact}"), QUEUES[*queue]);
                o.priority = *priority;
                if *caller > 0 {
                    o.caller_key = format!("key-{caller}");
                }
                if *chat {
                    o.channel = Channel::Chat;
                }
                match e.offer(&o, now, &mut ev) {
                    Ok(d) => {
                        // The decision must agree with the events.
                        m.apply(&ev).map_err(TestCaseError::fail)?;
                        let id = format!("c{contact}");
                        let st = m.contacts.get(&id).copied();
                        let consistent = match &d {
                            Decision::Assigned { operator, .. } => {
                                matches!(st, Some(MContact::Offered(o, _) | MContact::InService(o, _)) if o == op_index(operator))
                            }
                            Decision::Queued { position: 0, .. } => st == Some(MContact::Parked),
                            Decision::Queued { .. } => st == Some(MContact::Waiting),
                            Decision::Diverted { .. } => st == Some(MContact::Finished(Outcome::Diverted)),
                        };
                        prop_assert!(consistent, "decision {d:?} but model has {st:?}");
                        ev.clear();
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Cancel { contact } => e.cancel(&format!("c{contact}"), now, &mut ev).map(|_| ()),
            Op::Accept { pick } => {
                let offered = m.offered();
                if offered.is_empty() {
                    Ok(())
                } else {
                    let (c, o) = &offered[pick % offered.len()];
                    let r = e.accept(&format!("op{o}"), c, now, &mut ev);
                    prop_assert!(r.is_ok(), "accepting a pending offer failed: {r:?}");
                    r
                }
            }
            Op::AcceptWrong { op, contact } => {
                let c = format!("c{contact}");
                let expected_ok =
                    matches!(m.contacts.get(&c), Some(MContact::Offered(o, _) | MContact::InService(o, _)) if o == op);
                let r = e.accept(&format!("op{op}"), &c, now, &mut ev);
                prop_assert_eq!(r.is_ok(), expected_ok, "accept({}, {}) = {:?}", op, c, r);
                r
            }
            Op::Decline { pick } => {
                let offered = m.offered();
                if offered.is_empty() {
                    Ok(())
                } else {
                    let (c, o) = &offered[pick % offered.len()];
                    e.decline(&format!("op{o}"), c, now, &mut ev)
                }
            }
            Op::Complete { pick, wrap } => {
                let busy = m.in_service();
                if busy.is_empty() {
                    Ok(())
                } else {
                    let (c, o) = &busy[pick % busy.len()];
                    let r = e.complete(&format!("op{o}"), c, *wrap, now, &mut ev);
                    prop_assert!(r.is_ok(), "completing a contact in service failed: {r:?}");
                    if let (Ok(done), Some(mo)) = (&r, m.ops.get_mut(&format!("op{o}"))) {
                        mo.wrap_until = mo.wrap_until.max(now.plus(done.wrap_up_ms));
                    }
                    r.map(|_| ())
                }
            }
            Op::Advance { ms } => {
                now = now.plus(*ms);
                e.tick(now, &mut ev);
                Ok(())
            }
            Op::Refuse { on } => {
                gate.set_refuse_all(*on);
                Ok(())
            }
            Op::RequestCallback { pick } => {
                let mut waiting: Vec<_> =
                    m.contacts.iter().filter(|(_, s)| **s == MContact::Waiting).map(|(c, _)| c.clone()).collect();
                waiting.sort();
                if waiting.is_empty() {
                    Ok(())
                } else {
                    e.request_callback(&waiting[pick % waiting.len()], now, &mut ev).map(|_| ())
                }
            }
            Op::Appointment { contact, op, grace } => {
                let o = offer(&format!("c{contact}"), QUEUES[0]);
                e.offer_appointment(&o, &format!("op{op}"), *grace, now, &mut ev).map(|_| ())
            }
            Op::Update { op, level, chats } => {
                let name = format!("op{op}");
                let mut channels = vec![(Channel::Voice, 1)];
                if *chats > 0 {
                    channels.push((Channel::Chat, *chats));
                }
                let u = smista_core::OperatorUpdate {
                    operator_id: name.clone(),
                    skills: Some(vec![
                        smista_core::Skill { name: "pensions".into(), level: *level },
                        smista_core::Skill { name: "naspi".into(), level: 11 - *level },
                    ]),
                    channels: Some(channels),
                    group: None,
                };
                let r = e.update_operator(&u, now, &mut ev).map(|_| ());
                if r.is_ok() {
                    if let Some(mo) = m.ops.get_mut(&name) {
                        mo.caps = [1, 0, 0, *chats];
                    }
                }
                r
            }
            Op::Hold { op, ms } => {
                e.hold_operator(&format!("op{op}"), now.plus(*ms));
                Ok(())
            }
            Op::RequestCallbackAny { contact } => {
                let c = format!("c{contact}");
                let r = e.request_callback(&c, now, &mut ev);
                let waiting = matches!(m.contacts.get(&c), Some(MContact::Waiting | MContact::Parked));
                // A consultation is no caller to call back.
                let consult = m.consults.contains_key(&c) || m.consults_done.contains_key(&c);
                let waiting = waiting && !consult;
                let chat = matches!(m.contacts.get(&c), Some(MContact::Waiting)) && r.is_err();
                prop_assert!(
                    r.is_ok() == waiting || chat,
                    "request_callback({}) = {:?} while {:?}",
                    c,
                    r,
                    m.contacts.get(&c)
                );
                r.map(|_| ())
            }
            Op::CallbackUnanswered { pick } => {
                let busy: Vec<_> = m.in_service().into_iter().filter(|(c, _)| m.callbacks.contains(c)).collect();
                if busy.is_empty() {
                    Ok(())
                } else {
                    let (c, _) = &busy[pick % busy.len()];
                    let r = e.callback_unanswered(c, now, &mut ev);
                    prop_assert!(r.is_ok(), "an unanswered callback in service was refused: {r:?}");
                    r.map(|_| ())
                }
            }
            Op::Transfer { pick, to, op, wrap } => {
                let busy = m.in_service();
                if busy.is_empty() {
                    Ok(())
                } else {
                    let (c, o) = &busy[pick % busy.len()];
                    let target = match to {
                        0..=2 => TransferTarget::Queue(QUEUES[*to].into()),
                        3 => TransferTarget::External,
                        _ => TransferTarget::Operator {
                            operator: format!("op{op}"),
                            queue: QUEUES[0].into(),
                            timeout_ms: 10_000,
                        },
                    };
                    let r = e.transfer_at(&format!("op{o}"), c, &target, *wrap, now, now, &mut ev);
                    // Only the target's own state may refuse a transfer of a contact in service.
                    prop_assert!(
                        matches!(
                            r,
                            Ok(_)
                                | Err(RoutingError::TransferRefused { .. })
                                | Err(RoutingError::UnknownOperator(_))
                                | Err(RoutingError::WrongState(_))
                                | Err(RoutingError::InvalidArgument { .. })
                        ),
                        "transfer of a contact in service: {r:?}"
                    );
                    if let Err(RoutingError::WrongState(_) | RoutingError::InvalidArgument { .. }) = &r {
                        // Only about the named operator, or a consultation still open.
                        let consulting = m.consults.values().any(|(p, _)| p == c) || m.consults.contains_key(c);
                        prop_assert!(*to == 4 || consulting, "transfer to a queue: {r:?}");
                    }
                    if let (Ok(done), Some(mo)) = (&r, m.ops.get_mut(&format!("op{o}"))) {
                        mo.wrap_until = mo.wrap_until.max(now.plus(done.completion.wrap_up_ms));
                    }
                    r.map(|_| ())
                }
            }
            Op::Consult { pick, to, op, id } => {
                let busy: Vec<_> = m.in_service().into_iter().filter(|(c, _)| !m.consults.contains_key(c)).collect();
                if busy.is_empty() {
                    Ok(())
                } else {
                    let (c, o) = &busy[pick % busy.len()];
                    let k = format!("k{id}");
                    let known = m.contacts.contains_key(&k);
                    let open = m.consults.values().any(|(p, _)| p == c);
                    let target = match to {
                        0..=2 => TransferTarget::Queue(QUEUES[*to].into()),
                        _ => TransferTarget::Operator {
                            operator: format!("op{op}"),
                            queue: QUEUES[0].into(),
                            timeout_ms: 10_000,
                        },
                    };
                    let r = e.consult_at(&format!("op{o}"), c, &k, &target, now, &mut ev);
                    match &r {
                        Ok(Next::Placed(Decision::Queued { .. } | Decision::Assigned { .. })) => {
                            prop_assert!(!open || known, "a second consultation of {c} was let in: {r:?}");
                        }
                        Ok(other) => prop_assert!(known, "a new consultation answered {other:?}"),
                        Err(RoutingError::TransferRefused { .. } | RoutingError::UnknownOperator(_)) => {}
                        Err(RoutingError::WrongState(_) | RoutingError::InvalidArgument { .. }) => {
                            prop_assert!(known || open || *to == 3, "consult({c}, {k}) = {r:?}");
                        }
                        Err(_) => prop_assert!(false, "consult({c}, {k}) = {r:?}"),
                    }
                    r.map(|_| ())
                }
            }
            Op::EndConsult { pick, action, wrap } => {
                let mut open: Vec<_> = m.consults.iter().map(|(k, (c, o))| (k.clone(), c.clone(), *o)).collect();
                open.sort();
                if open.is_empty() {
                    Ok(())
                } else {
                    let (k, c, first) = &open[pick % open.len()];
                    let talking = matches!(m.contacts.get(k), Some(MContact::InService(..)));
                    let r = match action {
                        3 => match m.contacts.get(k).copied() {
                            Some(MContact::InService(b, _)) => {
                                e.complete(&format!("op{b}"), k, *wrap, now, &mut ev).map(|_| ())
                            }
                            _ => Ok(()),
                        },
                        _ => {
                            let a =
                                [ConsultAction::Transfer, ConsultAction::Conference, ConsultAction::Cancel][*action];
                            let r = e.end_consultation(&format!("op{first}"), c, k, a, *wrap, now, now, &mut ev);
                            if a == ConsultAction::Cancel || talking {
                                prop_assert!(r.is_ok(), "{a:?} of {k} ({c}) by op{first}: {r:?}");
                            } else {
                                prop_assert!(
                                    matches!(r, Err(RoutingError::WrongState(_))),
                                    "{a:?} of {k} not yet accepted: {r:?}"
                                );
                            }
                            if let (Ok(done), Some(mo)) = (&r, m.ops.get_mut(&format!("op{first}"))) {
                                let wrap_ms = done.completion.map_or(0, |c| c.wrap_up_ms);
                                mo.wrap_until = mo.wrap_until.max(now.plus(wrap_ms));
                            }
                            // A repeat answers the same.
                            if let Ok(done) = &r {
                                let mut again = Vec::new();
                                let r2 =
                                    e.end_consultation(&format!("op{first}"), c, k, a, *wrap, now, now, &mut again);
                                prop_assert_eq!(r2.as_ref().ok(), Some(done), "repeat of {:?} of {}", a, k);
                                prop_assert!(again.is_empty(), "a repeat emitted {:?}", again);
                            }
                            r.map(|_| ())
                        }
                    };
                    r
                }
            }
            Op::TransferWrong { op, contact } => {
                let c = format!("c{contact}");
                let in_hands = matches!(m.contacts.get(&c), Some(MContact::InService(o, _)) if o == op);
                let r =
                    e.transfer_at(&format!("op{op}"), &c, &TransferTarget::Queue("isee".into()), 0, now, now, &mut ev);
                if !in_hands {
                    prop_assert!(r.is_err() || ev.is_empty(), "transfer({}, {}) = {:?} emitted {:?}", op, c, r, ev);
                }
                if let (Ok(done), Some(mo)) = (&r, m.ops.get_mut(&format!("op{op}"))) {
                    mo.wrap_until = mo.wrap_until.max(now.plus(done.completion.wrap_up_ms));
                }
                r.map(|_| ())
            }
        };
        if let Err(err) = &result {
            // Errors must be typed refusals without side effects.
            prop_assert!(
                ev.is_empty() || matches!(err, RoutingError::WrongState(_)),
                "{op:?} failed with {err:?} yet emitted {ev:?}"
            );
        }
        m.apply(&ev).map_err(TestCaseError::fail)?;
        let audit = e.audit(now);
        prop_assert!(audit.is_empty(), "after {op:?}: {audit:#?}");
    }
    // Drain: every contact must end in exactly one outcome and every reservation must be returned.
    ev.clear();
    gate.set_refuse_all(false);
    let live: Vec<String> =
        m.contacts.iter().filter(|(_, s)| !matches!(s, MContact::Finished(_))).map(|(c, _)| c.clone()).collect();
    for c in &live {
        let r = e.cancel(c, now, &mut ev);
        prop_assert!(r.is_ok(), "cancel {c}: {r:?}");
    }
    for i in 0..6 {
        let _ = e.logout(&format!("op{i}"), true, now, &mut ev);
    }
    m.apply(&ev).map_err(TestCaseError::fail)?;
    prop_assert_eq!(e.live_contacts(), 0);
    for (c, s) in &m.contacts {
        prop_assert!(matches!(s, MContact::Finished(_)), "{c} left {s:?}");
        prop_assert_eq!(
            m.finished_events.get(c).copied(),
            Some(1),
            "{} finished {:?} times",
            c,
            m.finished_events.get(c)
        );
    }
    prop_assert!(m.consults.is_empty(), "consultations never closed: {:?}", m.consults);
    for (k, n) in &m.consults_done {
        prop_assert_eq!(*n, 1, "consultation {} closed {} times", k, n);
    }
    prop_assert_eq!(gate.held(), 0, "reservations left behind");
    prop_assert!(gate.violations().is_empty(), "{:?}", gate.violations());
    prop_assert!(e.audit(now).is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn engine_follows_the_lifecycle_model(ops in proptest::collection::vec(op_strategy(), 1..120)) {
        run(ops)?;
    }

    #[test]
    fn consultations_follow_the_lifecycle_model(ops in proptest::collection::vec(consult_heavy(), 1..120)) {
        run(ops)?;
    }
}
