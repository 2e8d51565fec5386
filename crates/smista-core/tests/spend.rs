//! Random contact streams through the routing engine with the real budget book behind it (not a
//! test double): offers, hang-ups, logins, forced logouts, accepts, declines, completions and clock
//! advances that time offers out and divert contacts after their maximum wait, and transfers
//! from one leg to the next (the same budget's other line, a line of internal staff only, out of
//! the centre). After every step:
//! admitted spend never passes the ceiling, the durable sink holds exactly the contacts in service
//! with a budgeted operator, and its cost records add up to the settled total, one per leg, each
//! the tariff applied to its handle time (the per-contact fee once per contact). When every contact has ended, nothing is reserved and nothing held:
//! the reservation was released or settled on every path.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use proptest::prelude::*;
use smista_core::book::{
    BudgetBook, BudgetConfig, ChannelTariff, CostRecord, HoldRecord, PacingConfig, PeriodConfig, SettlementSink, Tariff,
};
use smista_core::config::QueueConfig;
use smista_core::{Channel, ConsultAction, ConsultStep, Engine, Event, Millis, Outcome, RoutingError, TransferTarget};

const TARIFF: Tariff =
    Tariff { fee_per_contact_cents: 50, rate_per_second_centicents: 150, billing_increment_seconds: 10 };

/// What a durable ledger would hold, checked as it is written.
#[derive(Debug, Default)]
struct Ledger {
    records: Mutex<Vec<CostRecord>>,
    holds: Mutex<HashMap<String, HoldRecord>>,
}

impl SettlementSink for Ledger {
    fn record(&self, r: &CostRecord) {
        self.holds.lock().remove(&r.contact);
        self.records.lock().push(r.clone());
    }
    fn hold(&self, h: &HoldRecord) {
        self.holds.lock().insert(h.contact.clone(), h.clone());
    }
    fn release(&self, _budget: &str, contact: &str) {
        self.holds.lock().remove(contact);
    }
    fn renamed(&self, _budget: &str, from: &str, to: &str) {
        let mut holds = self.holds.lock();
        if let Some(mut h) = holds.remove(from) {
            h.contact = to.to_owned();
            assert!(holds.insert(to.to_owned(), h).is_none(), "{to} held twice");
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Login {
        op: usize,
    },
    Logout {
        op: usize,
        force: bool,
    },
    Offer {
        contact: usize,
        priority: u32,
    },
    Cancel {
        contact: usize,
    },
    Accept {
        pick: usize,
    },
    Decline {
        pick: usize,
    },
    Complete {
        pick: usize,
    },
    Advance {
        ms: u64,
    },
    /// The operator moves the contact on: to `pensions` (0), to `consultancy` (1, the same
    /// budget's second line), to `helpdesk` (2, no budget: internal staff only) or out (3).
    Transfer {
        pick: usize,
        to: usize,
    },
    /// The operator asks for a consultation `k{id}` of `pensions` (0), `consultancy` (1) or
    /// `helpdesk` (2).
    Consult {
        pick: usize,
        to: usize,
        id: usize,
    },
    /// The first operator of an open consultation hands over (0), confers (1) or cancels (2).
    EndConsult {
        pick: usize,
        action: usize,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..OPERATORS.len()).prop_map(|op| Op::Login { op }),
        1 => (0..OPERATORS.len(), any::<bool>()).prop_map(|(op, force)| Op::Logout { op, force }),
        5 => (0..30usize, 0..=5u32).prop_map(|(contact, priority)| Op::Offer { contact, priority }),
        1 => (0..30usize).prop_map(|contact| Op::Cancel { contact }),
        4 => any::<usize>().prop_map(|pick| Op::Accept { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Decline { pick }),
        4 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        3 => (0..400_000u64).prop_map(|ms| Op::Advance { ms }),
        3 => (any::<usize>(), 0..4usize).prop_map(|(pick, to)| Op::Transfer { pick, to }),
        3 => (any::<usize>(), 0..3usize, 0..30usize).prop_map(|(pick, to, id)| Op::Consult { pick, to, id }),
        4 => (any::<usize>(), 0..3usize).prop_map(|(pick, action)| Op::EndConsult { pick, action }),
    ]
}

/// Weighted towards consultations: many operators in, calls taken, consultations asked for,
/// accepted, handed over, conferred, cancelled, with the ceiling near.
fn consult_heavy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..OPERATORS.len()).prop_map(|op| Op::Login { op }),
        1 => (0..OPERATORS.len(), Just(true)).prop_map(|(op, force)| Op::Logout { op, force }),
        4 => (0..30usize, 0..=5u32).prop_map(|(contact, priority)| Op::Offer { contact, priority }),
        1 => (0..30usize).prop_map(|contact| Op::Cancel { contact }),
        8 => any::<usize>().prop_map(|pick| Op::Accept { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        2 => (0..120_000u64).prop_map(|ms| Op::Advance { ms }),
        6 => (any::<usize>(), 0..3usize, 0..30usize).prop_map(|(pick, to, id)| Op::Consult { pick, to, id }),
        6 => (any::<usize>(), 0..3usize).prop_map(|(pick, action)| Op::EndConsult { pick, action }),
    ]
}

/// Supplier operators paid by the budget, and two internal ones.
const OPERATORS: [(&str, &str); 6] = [
    ("s0", "supplier-a"),
    ("s1", "supplier-a"),
    ("s2", "supplier-a"),
    ("s3", "supplier-a"),
    ("i0", "internal"),
    ("i1", "internal"),
];

fn setup(ceiling: i64, prefer_internal: bool) -> (Engine, Arc<BudgetBook>, Arc<Ledger>) {
    let ledger = Arc::new(Ledger::default());
    let budget = BudgetConfig {
        id: "ccm".into(),
        ceiling_cents: ceiling,
        period: PeriodConfig::Fixed { start_unix_ms: 0, length_ms: 365 * 86_400_000 },
        tariffs: vec![ChannelTariff { channel: Channel::Voice, tariff: TARIFF }],
        pacing: PacingConfig::None,
        protected_reserve_bp: 0,
        protected_min_priority: None,
        protected_segments: vec![],
        default_handle_ms: 300_000,
        expected_handle: vec![],
        tail_sigmas: smista_core::book::TAIL_SIGMAS,
        leg_fee: Default::default(),
    };
    let book = Arc::new(BudgetBook::new(&[budget], 0).expect("valid budget").with_sink(ledger.clone()));
    let mut q = QueueConfig::new("pensions", &[("pensions", 3)]);
    q.budget = Some("ccm".into());
    q.prefer_unbudgeted = prefer_internal;
    q.wrap_up_ms = 30_000;
    q.offer_timeout_ms = 60_000;
    q.max_wait_ms = 600_000;
    let mut consultancy = QueueConfig::new("consultancy", &[("consultancy", 3)]);
    consultancy.budget = Some("ccm".into());
    consultancy.prefer_unbudgeted = prefer_internal;
    consultancy.transfer_priority = 50;
    let helpdesk = QueueConfig::new("helpdesk", &[("helpdesk", 3)]);
    let mut cfg = config(vec![q, consultancy, helpdesk]);
    cfg.groups[1].budget = Some("ccm".into());
    // Longer than any run: a contact id is never reused for a new contact (which the engine
    // allows once it has forgotten the old one), so each id has one life to check.
    cfg.finished_retention_ms = 30 * 86_400_000;
    let e = Engine::new(&cfg, book.clone()).expect("valid config");
    (e, book, ledger)
}

/// What the events say: contacts offered and in service, with their operator, and final outcomes.
#[derive(Default)]
struct Seen {
    offered: Vec<(String, String)>,
    in_service: Vec<(String, String)>,
    outcomes: HashMap<String, Outcome>,
    /// Consultations: their contact and the operator who asked; open ones.
    consult_of: HashMap<String, String>,
    open: Vec<(String, String, String)>,
}

impl Seen {
    fn apply(&mut self, events: &[Event]) {
        for e in events {
            match e {
                Event::Offered { contact, operator, .. } => {
                    self.offered.push((contact.to_string(), operator.to_string()));
                }
                Event::OfferTimedOut { contact, .. } | Event::OfferDeclined { contact, .. } => {
                    self.offered.retain(|(c, _)| **c != **contact);
                }
                Event::Accepted { contact, operator, .. } => {
                    self.offered.retain(|(c, _)| **c != **contact);
                    self.in_service.push((contact.to_string(), operator.to_string()));
                }
                Event::Finished { contact, outcome, .. } => {
                    self.offered.retain(|(c, _)| **c != **contact);
                    self.in_service.retain(|(c, _)| **c != **contact);
                    self.outcomes.insert(contact.to_string(), *outcome);
                }
                Event::Transferred { contact, .. } => {
                    self.in_service.retain(|(c, _)| **c != **contact);
                }
                Event::Consultation { contact, consultation, operator, to_operator, step, .. } => match step {
                    ConsultStep::Requested => {
                        self.consult_of.insert(consultation.to_string(), contact.to_string());
                        self.open.push((consultation.to_string(), contact.to_string(), operator.to_string()));
                    }
                    ConsultStep::HandedOver => {
                        let second = to_operator.as_deref().unwrap_or_default();
                        self.in_service.push((contact.to_string(), second.to_owned()));
                        self.open.retain(|(k, ..)| **k != **consultation);
                    }
                    ConsultStep::Ended => self.open.retain(|(k, ..)| **k != **consultation),
                    ConsultStep::Accepted | ConsultStep::Conference => {}
                },
                _ => {}
            }
        }
    }
}

fn check(e: &Engine, book: &BudgetBook, ledger: &Ledger, seen: &Seen, now: Millis) -> Result<(), TestCaseError> {
    let audit = e.audit(now);
    prop_assert!(audit.is_empty(), "engine invariants: {:?}", audit);
    let v = book.views(now)[0].clone();
    prop_assert!(
        v.settled_cents + v.reserved_cents <= v.ceiling_cents + v.overrun_cents,
        "admitted spend past the ceiling: {:?}",
        v
    );
    let records = ledger.records.lock();
    prop_assert_eq!(records.iter().map(|r| r.cost_cents).sum::<i64>(), v.settled_cents, "records add up");
    for (i, r) in records.iter().enumerate() {
        // One fee per contact (the budget's `leg_fee = "once"`): its later legs pay their time.
        // A consultation not handed over is a contact of its own (its fee); one handed over is
        // the second operator's leg of the contact.
        let earlier = records[..i].iter().any(|o| o.contact == r.contact);
        let fee = if earlier { TARIFF.fee_per_contact_cents } else { 0 };
        prop_assert_eq!(r.cost_cents, TARIFF.cost_cents(r.handle_ms) - fee, "cost = tariff(handle time): {:?}", r);
        prop_assert!(r.group == "supplier-a", "only budgeted operators' contacts are charged: {:?}", r);
        let last = !records[i + 1..].iter().any(|o| o.contact == r.contact);
        if r.outcome != Outcome::Transferred || !last {
            // A leg that ended in a transfer says so; the contact's last charged leg tells how
            // it ended, unless it was transferred and has not been charged since.
            prop_assert!(
                r.outcome == Outcome::Transferred && !last || Some(&r.outcome) == seen.outcomes.get(&r.contact),
                "the record tells how its leg ended: {:?}",
                r
            );
        }
        prop_assert!(
            records.iter().filter(|o| o.contact == r.contact && o.accepted_unix_ms == r.accepted_unix_ms).count() == 1,
            "a leg charged twice: {:?}",
            r
        );
    }
    let mut held: Vec<String> = ledger.holds.lock().keys().cloned().collect();
    held.sort_unstable();
    let mut supplier_calls: Vec<String> =
        seen.in_service.iter().filter(|(_, op)| op.starts_with('s')).map(|(c, _)| c.clone()).collect();
    supplier_calls.sort_unstable();
    prop_assert_eq!(held, supplier_calls, "held = in service with a budgeted operator");
    Ok(())
}

fn run(ops: &[Op], ceiling: i64, prefer_internal: bool) -> Result<(), TestCaseError> {
    let (e, book, ledger) = setup(ceiling, prefer_internal);
    let mut seen = Seen::default();
    let mut now = Millis(1);
    let mut ev = Vec::new();
    for op in ops {
        ev.clear();
        match *op {
            Op::Login { op } => {
                let (id, group) = OPERATORS[op];
                let _ =
                    e.login(&login(id, group, &[("pensions", 5), ("consultancy", 5), ("helpdesk", 5)]), now, &mut ev);
            }
            Op::Logout { op, force } => {
                let _ = e.logout(OPERATORS[op].0, force, now, &mut ev);
            }
            Op::Offer { contact, priority } => {
                let mut req = offer(&format!("c{contact}"), "pensions");
                req.priority = priority;
                let _ = e.offer(&req, now, &mut ev);
            }
            Op::Cancel { contact } => {
                let _ = e.cancel(&format!("c{contact}"), now, &mut ev);
            }
            Op::Accept { pick } if !seen.offered.is_empty() => {
                let (c, o) = seen.offered[pick % seen.offered.len()].clone();
                e.accept(&o, &c, now, &mut ev).map_err(|err| TestCaseError::fail(format!("accept {c}: {err}")))?;
            }
            Op::Decline { pick } if !seen.offered.is_empty() => {
                let (c, o) = seen.offered[pick % seen.offered.len()].clone();
                e.decline(&o, &c, now, &mut ev).map_err(|err| TestCaseError::fail(format!("decline {c}: {err}")))?;
            }
            Op::Complete { pick } if !seen.in_service.is_empty() => {
                let (c, o) = seen.in_service[pick % seen.in_service.len()].clone();
                e.complete(&o, &c, 0, now, &mut ev)
                    .map_err(|err| TestCaseError::fail(format!("complete {c}: {err}")))?;
            }
            Op::Advance { ms } => {
                now = Millis(now.0 + ms);
                e.tick(now, &mut ev);
            }
            Op::Transfer { pick, to } if !seen.in_service.is_empty() => {
                let (c, o) = seen.in_service[pick % seen.in_service.len()].clone();
                let target = match to {
                    0 => TransferTarget::Queue("pensions".into()),
                    1 => TransferTarget::Queue("consultancy".into()),
                    2 => TransferTarget::Queue("helpdesk".into()),
                    _ => TransferTarget::External,
                };
                match e.transfer_at(&o, &c, &target, 0, now, now, &mut ev) {
                    Ok(_) => {}
                    // The next leg's budget refused: nothing changed, the operator keeps it.
                    Err(RoutingError::TransferRefused { .. }) => {
                        prop_assert!(ev.is_empty(), "a refused transfer changed something: {:?}", ev);
                    }
                    // A consultation is not transferred; nor is a contact in one.
                    Err(RoutingError::WrongState(_))
                        if seen.consult_of.contains_key(&c) || seen.open.iter().any(|(_, p, _)| *p == c) => {}
                    Err(err) => return Err(TestCaseError::fail(format!("transfer {c}: {err}"))),
                }
            }
            Op::Consult { pick, to, id } if !seen.in_service.is_empty() => {
                let (c, o) = seen.in_service[pick % seen.in_service.len()].clone();
                let target = TransferTarget::Queue(["pensions", "consultancy", "helpdesk"][to].into());
                let k = format!("k{id}");
                match e.consult_at(&o, &c, &k, &target, now, &mut ev) {
                    Ok(_) => {}
                    Err(RoutingError::InvalidArgument { .. }) if c == k => {}
                    Err(RoutingError::TransferRefused { .. }) => {
                        prop_assert!(ev.is_empty(), "a refused consultation changed something: {:?}", ev);
                    }
                    Err(RoutingError::WrongState(_)) => {}
                    Err(err) => return Err(TestCaseError::fail(format!("consult {c}: {err}"))),
                }
            }
            Op::EndConsult { pick, action } if !seen.open.is_empty() => {
                let (k, c, first) = seen.open[pick % seen.open.len()].clone();
                let a = [ConsultAction::Transfer, ConsultAction::Conference, ConsultAction::Cancel][action];
                let talking = seen.in_service.iter().any(|(x, _)| *x == k);
                match e.end_consultation(&first, &c, &k, a, 0, now, now, &mut ev) {
                    Ok(_) => {}
                    Err(RoutingError::WrongState(_)) if !talking && a != ConsultAction::Cancel => {}
                    Err(err) => return Err(TestCaseError::fail(format!("{a:?} of {k}: {err}"))),
                }
            }
            _ => {}
        }
        seen.apply(&ev);
        check(&e, &book, &ledger, &seen, now)?;
    }
    // Every caller hangs up and every operator leaves: every reservation must come back.
    ev.clear();
    for c in 0..30 {
        let _ = e.cancel(&format!("c{c}"), now, &mut ev);
        let _ = e.cancel(&format!("k{c}"), now, &mut ev);
    }
    for (id, _) in OPERATORS {
        let _ = e.logout(id, true, now, &mut ev);
    }
    now = Millis(now.0 + 1);
    e.tick(now, &mut ev);
    seen.apply(&ev);
    check(&e, &book, &ledger, &seen, now)?;
    let v = book.views(now)[0].clone();
    prop_assert_eq!(v.reserved_cents, 0, "reservations left after every contact ended: {:?}", v);
    prop_assert_eq!(book.open_reservations(), 0);
    prop_assert!(ledger.holds.lock().is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn spend_stays_under_the_ceiling_and_every_reservation_comes_back(
        ops in proptest::collection::vec(op_strategy(), 1..250),
        ceiling in 0i64..4_000,
        prefer_internal in any::<bool>(),
    ) {
        run(&ops, ceiling, prefer_internal)?;
    }

    #[test]
    fn consultations_are_charged_once_and_stay_under_the_ceiling(
        ops in proptest::collection::vec(consult_heavy(), 1..250),
        ceiling in 0i64..4_000,
        prefer_internal in any::<bool>(),
    ) {
        run(&ops, ceiling, prefer_internal)?;
    }
}
