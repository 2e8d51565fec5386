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
    BudgetBook, BudgetConfig, ChannelTariff, CostRecord, HoldRecord, PacingConfig, PeriodConfig, PeriodTotals,
    Recovery, SettlementSink, Tariff,
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
    fn renamed(&self, _budget: &str, from: &str, to: &str, accepted_unix_ms: i64) {
        let mut holds = self.holds.lock();
        if let Some(mut h) = holds.remove(from) {
            h.contact = to.to_owned();
            h.accepted_unix_ms = accepted_unix_ms;
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
    /// The process dies: a new book restored from what the ledger holds and a new engine. What
    /// budgets' operators had in service is carried (their holds), ended or handed over later as
    /// the server does it; the rest was only in memory (the platform offers it again, under new
    /// ids here).
    Crash,
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
fn consult_heavy(crash: u32) -> impl Strategy<Value = Op> {
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
        crash => Just(Op::Crash),
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
    let book = Arc::new(BudgetBook::new(&[budget(ceiling)], 0).expect("valid budget").with_sink(ledger.clone()));
    let e = Engine::new(&engine_config(prefer_internal), book.clone()).expect("valid config");
    (e, book, ledger)
}

fn budget(ceiling: i64) -> BudgetConfig {
    BudgetConfig {
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
    }
}

fn engine_config(prefer_internal: bool) -> smista_core::config::EngineConfig {
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
    cfg
}

/// Whether the budget of `contact`'s recovered hold settled an earlier leg of it (the server
/// reads the same from the ledger: the per-contact fee's rule across legs).
fn earlier_leg(ledger: &Ledger, book: &BudgetBook, contact: &str) -> bool {
    let Some(h) = book.recovered(contact) else { return false };
    ledger.records.lock().iter().any(|r| r.contact == contact && r.budget == h.budget)
}

/// A new book after a crash: the ledger's settled totals per period and its holds.
fn restored(ledger: &Arc<Ledger>, ceiling: i64, now: Millis) -> Arc<BudgetBook> {
    let mut periods: HashMap<(String, String), (i64, i64)> = HashMap::new();
    for r in ledger.records.lock().iter() {
        let t = periods.entry((r.budget.clone(), r.period.clone())).or_default();
        t.0 += r.cost_cents;
        t.1 += (r.cost_cents - r.reserved_cents).max(0);
    }
    let recovery = Recovery {
        amendments: Vec::new(),
        periods: periods
            .into_iter()
            .map(|((budget, period), (settled_cents, overrun_cents))| PeriodTotals {
                budget,
                period,
                settled_cents,
                overrun_cents,
            })
            .collect(),
        holds: ledger.holds.lock().values().cloned().collect(),
    };
    let book = Arc::new(BudgetBook::new(&[budget(ceiling)], 0).expect("valid budget").with_sink(ledger.clone()));
    let done = book.restore(&recovery, now);
    assert!(done.skipped.is_empty(), "{:?}", done.skipped);
    book
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

fn check(
    e: &Engine,
    book: &BudgetBook,
    ledger: &Ledger,
    seen: &Seen,
    carried: &[(String, String)],
    now: Millis,
) -> Result<(), TestCaseError> {
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
        seen.in_service.iter().chain(carried).filter(|(_, op)| op.starts_with('s')).map(|(c, _)| c.clone()).collect();
    supplier_calls.sort_unstable();
    prop_assert_eq!(held, supplier_calls, "held = in service with a budgeted operator");
    Ok(())
}

fn run(ops: &[Op], ceiling: i64, prefer_internal: bool) -> Result<(), TestCaseError> {
    let (mut e, mut book, ledger) = setup(ceiling, prefer_internal);
    let mut seen = Seen::default();
    let mut now = Millis(1);
    let mut ev = Vec::new();
    // After a crash: what budgets' operators had in service (contact, operator), the
    // consultations carried with both sides (consultation, contact, first operator), and the
    // number of crashes so far (contact ids of each life are apart: `c3`, `c3e1`, ...).
    let mut carried: Vec<(String, String)> = Vec::new();
    let mut carried_consults: Vec<(String, String, String)> = Vec::new();
    let mut lives = 0usize;
    let id = |p: &str, n: usize, life: usize| if life == 0 { format!("{p}{n}") } else { format!("{p}{n}e{life}") };
    for op in ops {
        ev.clear();
        match *op {
            Op::Crash => {
                book = restored(&ledger, ceiling, now);
                e = Engine::new(&engine_config(prefer_internal), book.clone()).expect("valid config");
                lives += 1;
                carried = ledger.holds.lock().values().map(|h| (h.contact.clone(), h.operator.clone())).collect();
                carried.sort();
                let is_carried = |c: &str| carried.iter().any(|(x, _)| x == c);
                carried_consults.retain(|(k, c, _)| is_carried(k) && is_carried(c));
                for (k, c, first) in &seen.open {
                    if is_carried(k) && is_carried(c) {
                        carried_consults.push((k.clone(), c.clone(), first.clone()));
                    }
                }
                seen.offered.clear();
                seen.in_service.clear();
                seen.open.clear();
            }
            // A carried contact completed by its operator, after the crash (the server settles
            // its recovered hold); a carried contact's carried consultations end with it.
            Op::Complete { pick } if !carried.is_empty() && (pick % 2 == 1 || seen.in_service.is_empty()) => {
                let (c, o) = carried[pick % carried.len()].clone();
                let repeat = earlier_leg(&ledger, &book, &c);
                let rec = book
                    .end_recovered(&c, Some(&o), Outcome::Completed, now, repeat)
                    .map_err(|err| TestCaseError::fail(format!("complete carried {c}: {err}")))?;
                prop_assert_eq!(rec.outcome, Outcome::Completed);
                seen.outcomes.insert(c.clone(), Outcome::Completed);
                carried.retain(|(x, _)| *x != c);
                for (k, _, _) in carried_consults.iter().filter(|(_, p, _)| *p == c) {
                    if book.complete_recovered(k, None, Outcome::CancelledInService, now).is_ok() {
                        seen.outcomes.insert(k.clone(), Outcome::CancelledInService);
                    }
                    carried.retain(|(x, _)| x != k);
                }
                carried_consults.retain(|(k, p, _)| *p != c && *k != c);
            }
            // A carried consultation handed over (TRANSFER) or cancelled, as the server does it.
            Op::EndConsult { pick, action } if !carried_consults.is_empty() => {
                let (k, c, first) = carried_consults[pick % carried_consults.len()].clone();
                carried_consults.retain(|(x, _, _)| *x != k);
                if action == 0 {
                    let hc = book.recovered(&c).expect("the contact is carried");
                    let repeat = earlier_leg(&ledger, &book, &c);
                    book.end_recovered(&c, Some(&first), Outcome::Transferred, now, repeat)
                        .map_err(|err| TestCaseError::fail(format!("hand-over of carried {c}: {err}")))?;
                    let taken = book.take_recovered(&k).expect("the consultation is carried");
                    // The ledger's hand-over record moves the hold, dated after the first leg.
                    {
                        let mut holds = ledger.holds.lock();
                        let mut h = holds.remove(&k).expect("the consultation's hold");
                        h.contact = c.clone();
                        h.accepted_unix_ms = h.accepted_unix_ms.max(hc.accepted_unix_ms + 1);
                        holds.insert(c.clone(), h);
                    }
                    let second = taken.operator.clone();
                    book.hand_over_recovered(taken, &c, hc.accepted_unix_ms);
                    carried.retain(|(x, _)| *x != k && *x != c);
                    carried.push((c.clone(), second));
                    carried.sort();
                } else {
                    if book.complete_recovered(&k, None, Outcome::CancelledInService, now).is_ok() {
                        seen.outcomes.insert(k.clone(), Outcome::CancelledInService);
                    }
                    carried.retain(|(x, _)| *x != k);
                }
            }
            Op::Login { op } => {
                let (id, group) = OPERATORS[op];
                let _ =
                    e.login(&login(id, group, &[("pensions", 5), ("consultancy", 5), ("helpdesk", 5)]), now, &mut ev);
            }
            Op::Logout { op, force } => {
                let _ = e.logout(OPERATORS[op].0, force, now, &mut ev);
            }
            Op::Offer { contact, priority } => {
                let mut req = offer(&id("c", contact, lives), "pensions");
                req.priority = priority;
                let _ = e.offer(&req, now, &mut ev);
            }
            Op::Cancel { contact } => {
                let _ = e.cancel(&id("c", contact, lives), now, &mut ev);
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
            Op::Consult { pick, to, id: kid } if !seen.in_service.is_empty() => {
                let (c, o) = seen.in_service[pick % seen.in_service.len()].clone();
                let target = TransferTarget::Queue(["pensions", "consultancy", "helpdesk"][to].into());
                let k = id("k", kid, lives);
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
        check(&e, &book, &ledger, &seen, &carried, now)?;
    }
    // Every caller hangs up and every operator leaves: every reservation must come back.
    ev.clear();
    for n in 0..30 {
        let _ = e.cancel(&id("c", n, lives), now, &mut ev);
        let _ = e.cancel(&id("k", n, lives), now, &mut ev);
    }
    for (c, _) in std::mem::take(&mut carried) {
        let repeat = earlier_leg(&ledger, &book, &c);
        let rec = book.end_recovered(&c, None, Outcome::CancelledInService, now, repeat);
        prop_assert!(rec.is_ok(), "carried {c}: {rec:?}");
        seen.outcomes.insert(c, Outcome::CancelledInService);
    }
    for (id, _) in OPERATORS {
        let _ = e.logout(id, true, now, &mut ev);
    }
    now = Millis(now.0 + 1);
    e.tick(now, &mut ev);
    seen.apply(&ev);
    check(&e, &book, &ledger, &seen, &carried, now)?;
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
        ops in proptest::collection::vec(consult_heavy(1), 1..250),
        ceiling in 0i64..4_000,
        prefer_internal in any::<bool>(),
    ) {
        run(&ops, ceiling, prefer_internal)?;
    }

    /// A crash in the middle of a consultation (two supplier operators talking), then anything:
    /// the carried consultation handed over, cancelled or ended with its contact, more
    /// consultations and crashes; money for several calls at once.
    #[test]
    fn consultations_carried_across_crashes_are_charged_once(
        ops in proptest::collection::vec(consult_heavy(1), 1..300),
        ceiling in 2_000i64..20_000,
    ) {
        let mut all = vec![
            Op::Login { op: 0 },
            Op::Login { op: 1 },
            Op::Offer { contact: 0, priority: 0 },
            Op::Accept { pick: 0 },
            Op::Consult { pick: 0, to: 0, id: 0 },
            Op::Accept { pick: 0 },
            Op::Advance { ms: 30_000 },
            Op::Crash,
        ];
        all.extend(ops);
        run(&all, ceiling, false)?;
    }
}
