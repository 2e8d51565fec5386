//! The budget ceiling: cost = tariff applied to handle time, the hard ceiling under random streams
//! and under concurrent admissions, reservation conservation, pacing that makes the money last,
//! the protected reserve, amendments with an audit trail, and the engine diverting extra-budget
//! contacts.

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use proptest::prelude::*;
use smista_core::book::{
    AmendedBy, AuditRecord, BudgetBook, BudgetConfig, ChannelTariff, CostRecord, HoldRecord, PacingConfig,
    PeriodConfig, PeriodTotals, RecoveredError, Recovery, SettlementSink, Tariff,
};
use smista_core::budget::{BudgetGate, FundingRequest, Settlement};
use smista_core::config::QueueConfig;
use smista_core::{Channel, Decision, DivertReason, Engine, Millis, Outcome, Segment};

const DAY: i64 = 86_400_000;

fn voice_tariff() -> Vec<ChannelTariff> {
    // 50 cents per call plus 1.5 cents per second, billed per started 10 seconds.
    vec![ChannelTariff {
        channel: Channel::Voice,
        tariff: Tariff { fee_per_contact_cents: 50, rate_per_second_centicents: 150, billing_increment_seconds: 10 },
    }]
}

fn budget(ceiling: i64, pacing: PacingConfig) -> BudgetConfig {
    BudgetConfig {
        id: "ccm".into(),
        ceiling_cents: ceiling,
        period: PeriodConfig::Fixed { start_unix_ms: 0, length_ms: 30 * DAY },
        tariffs: voice_tariff(),
        pacing,
        protected_reserve_bp: 0,
        protected_min_priority: None,
        protected_segments: vec![],
        default_handle_ms: 300_000,
        expected_handle: vec![],
        // These tests count admissions at the mean; long-call reservations have their own.
        tail_sigmas: 0.0,
        leg_fee: Default::default(),
    }
}

fn req<'a>(contact: &'a str, now: i64) -> FundingRequest<'a> {
    FundingRequest {
        budget: "ccm",
        contact_id: contact,
        queue: "pensions",
        channel: Channel::Voice,
        priority: 0,
        segment: Segment::General,
        now: Millis(now as u64),
    }
}

fn settle(b: &BudgetBook, contact: &str, handle_ms: u64, now: i64) {
    b.settle(&Settlement {
        budget: "ccm",
        contact_id: contact,
        queue: "pensions",
        group: "supplier-a",
        operator: "op-1",
        channel: Channel::Voice,
        handle_ms,
        accepted_at: Millis(now as u64),
        now: Millis(now as u64 + handle_ms),
        outcome: Outcome::Completed,
        repeat: false,
    });
}

#[test]
fn cost_is_the_tariff_applied_to_handle_time() {
    let t = voice_tariff()[0].tariff;
    assert_eq!(t.cost_cents(0), 50);
    assert_eq!(t.cost_cents(1), 50 + 15); // one started increment of 10 s at 1.5 c/s
    assert_eq!(t.cost_cents(10_000), 50 + 15);
    assert_eq!(t.cost_cents(10_001), 50 + 30);
    assert_eq!(t.cost_cents(300_000), 50 + 450);
    let odd = Tariff { fee_per_contact_cents: 0, rate_per_second_centicents: 1, billing_increment_seconds: 1 };
    assert_eq!(odd.cost_cents(1_000), 1, "a fraction of a cent rounds up");
}

proptest! {
    #[test]
    fn cost_is_monotone_and_bounded(a in 0u64..10_000_000, b in 0u64..10_000_000) {
        let t = voice_tariff()[0].tariff;
        let (lo, hi) = (a.min(b), a.max(b));
        prop_assert!(t.cost_cents(lo) <= t.cost_cents(hi));
        // Never more than one extra increment above the exact price.
        let exact = 50.0 + hi as f64 / 1000.0 * 1.5;
        prop_assert!((t.cost_cents(hi) as f64) <= exact + 15.0 + 1.0);
        prop_assert!((t.cost_cents(hi) as f64) >= exact - 1e-9);
    }

    /// Random streams of admissions, releases and settlements: every admission keeps
    /// settled + reserved within the ceiling, the settled total equals the sum of tariffs, and
    /// reservations return to zero when all contacts end.
    #[test]
    fn the_hard_ceiling_holds_and_money_is_conserved(
        ops in proptest::collection::vec((0u8..3, 0usize..30, 0u64..900_000), 1..300),
        ceiling in 0i64..20_000,
    ) {
        let book = BudgetBook::new(&[budget(ceiling, PacingConfig::None)], 0).unwrap();
        let mut open: Vec<String> = Vec::new();
        let mut expected_settled = 0i64;
        for (i, (kind, pick, handle)) in ops.iter().enumerate() {
            let now = i as i64 * 1000;
            match kind {
                0 => {
                    let id = format!("c{i}");
                    let before = book.views(Millis(now as u64))[0].clone();
                    if book.reserve(&req(&id, now)) {
                        let after = book.views(Millis(now as u64))[0].clone();
                        // The admission itself never crosses the ceiling.
                        let admitted = after.reserved_cents - before.reserved_cents;
                        // settled + reserved is what is committed (overruns included).
                        prop_assert!(admitted > 0 || voice_tariff()[0].tariff.cost_cents(300_000) == 0);
                        prop_assert!(
                            before.settled_cents + before.reserved_cents + admitted <= ceiling,
                            "admitted past the ceiling: {:?} + {}", before, admitted
                        );
                        open.push(id);
                    }
                }
                1 if !open.is_empty() => {
                    let id = open.swap_remove(pick % open.len());
                    book.release("ccm", &id);
                }
                2 if !open.is_empty() => {
                    let id = open.swap_remove(pick % open.len());
                    settle(&book, &id, *handle, now);
                    expected_settled += voice_tariff()[0].tariff.cost_cents(*handle);
                }
                _ => {}
            }
        }
        for id in open.drain(..) {
            book.release("ccm", &id);
        }
        let v = book.views(Millis(ops.len() as u64 * 1000))[0].clone();
        prop_assert_eq!(v.reserved_cents, 0);
        prop_assert_eq!(v.settled_cents, expected_settled);
        prop_assert_eq!(book.open_reservations(), 0);
    }
}

#[test]
fn concurrent_admissions_never_overspend() {
    // 4 threads race to reserve 500-cent contacts against a 100,000-cent ceiling.
    let book = Arc::new(BudgetBook::new(&[budget(100_000, PacingConfig::None)], 0).unwrap());
    let admitted = Arc::new(AtomicI64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (book, admitted) = (book.clone(), admitted.clone());
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    if book.reserve(&req(&format!("t{t}-{i}"), 0)) {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let v = book.views(Millis(0))[0].clone();
    let per_contact = voice_tariff()[0].tariff.cost_cents(300_000);
    assert_eq!(admitted.load(Ordering::SeqCst), 100_000 / per_contact, "exactly as many as fit");
    assert!(v.reserved_cents <= 100_000);
    assert_eq!(v.reserved_cents, admitted.load(Ordering::SeqCst) * per_contact);
}

#[test]
fn an_overrun_is_charged_and_reported_not_cut_off() {
    let book = BudgetBook::new(&[budget(10_000, PacingConfig::None)], 0).unwrap();
    assert!(book.reserve(&req("long", 0)));
    settle(&book, "long", 1_800_000, 0); // 30 minutes against 5 reserved
    let v = book.views(Millis(0))[0].clone();
    assert_eq!(v.settled_cents, 50 + 2_700);
    assert_eq!(v.overrun_cents, 50 + 2_700 - (50 + 450));
    assert_eq!(v.reserved_cents, 0);
}

/// The burn-down's projection: at the settled spend's average rate the money runs out when the
/// exposure reaches the ceiling, or lasts the period.
#[test]
fn the_money_runs_out_when_the_average_rate_says() {
    let book = BudgetBook::new(&[budget(10_000, PacingConfig::None)], 0).unwrap();
    assert_eq!(book.views(Millis(DAY as u64))[0].exhausted_at_unix_ms, None, "nothing settled: no projection");
    // 500 cents (a 300 s call) settled by the end of day 1 of 30: 500 a day, 9,500 left: 19 more
    // days, so day 20, before the end.
    assert!(book.reserve(&req("a", 0)));
    settle(&book, "a", 300_000, 0);
    let v = book.views(Millis(DAY as u64))[0].clone();
    assert_eq!(v.settled_cents, 500);
    assert_eq!(v.exhausted_at_unix_ms, Some(20 * DAY));
    assert_eq!((v.period_start_unix_ms, v.period_end_unix_ms), (0, 30 * DAY));
    // By day 25 the same spend lasts the period.
    assert_eq!(book.views(Millis(25 * DAY as u64))[0].exhausted_at_unix_ms, None);
    // The pacing's allowance is the ceiling without pacing; outside the period, none.
    assert_eq!(book.allowance_at("ccm", Millis(DAY as u64), 2 * DAY), Some(10_000));
    assert_eq!(book.allowance_at("ccm", Millis(DAY as u64), 31 * DAY), None);
    assert_eq!(book.allowance_at("nope", Millis(DAY as u64), DAY), None);
    let paced = BudgetBook::new(&[budget(30_000, PacingConfig::Even { lookahead_ms: 0 })], 0).unwrap();
    assert_eq!(paced.allowance_at("ccm", Millis(0), 10 * DAY), Some(10_000), "a third of the way, a third");
}

/// Demand above the budget, the same arrivals every day: unpaced money runs out in the first days
/// of the period; paced money lasts until the end and diversions are spread over it.
#[test]
fn pacing_makes_the_money_last_the_period() {
    let run = |pacing: PacingConfig| {
        let book = BudgetBook::new(&[budget(300_000, pacing)], 0).unwrap();
        let (mut first_refusal, mut last_admission) = (None, 0i64);
        let mut n = 0;
        for minute in 0..(30 * 24 * 60) {
            let now = minute as i64 * 60_000;
            // One call every 4 minutes, each settled at its expected 5 minutes.
            if minute % 4 != 0 {
                continue;
            }
            let id = format!("c{n}");
            n += 1;
            if book.reserve(&req(&id, now)) {
                last_admission = now;
                settle(&book, &id, 300_000, now);
            } else if first_refusal.is_none() {
                first_refusal = Some(now);
            }
        }
        (first_refusal.unwrap_or(i64::MAX), last_admission, book.views(Millis(30 * DAY as u64 - 1))[0].clone())
    };
    let (unpaced_refused, unpaced_last, unpaced) = run(PacingConfig::None);
    let (paced_refused, paced_last, paced) = run(PacingConfig::Even { lookahead_ms: 3_600_000 });
    assert!(
        unpaced_refused < 3 * DAY,
        "unpaced money should run out early, refused first at day {}",
        unpaced_refused / DAY
    );
    assert!(unpaced_last < 3 * DAY, "unpaced admitted until day {}", unpaced_last / DAY);
    assert!(paced_last > 29 * DAY, "paced money should last the period, last admission day {}", paced_last / DAY);
    assert!(paced_refused < 30 * DAY, "demand is above budget: some refusals must happen");
    for v in [unpaced, paced] {
        assert!(v.settled_cents <= 300_000, "settled {} above the ceiling", v.settled_cents);
        assert!(v.settled_cents > 290_000, "the budget should be nearly used: {}", v.settled_cents);
    }
}

#[test]
fn the_protected_reserve_keeps_room_for_vulnerable_citizens() {
    let mut cfg = budget(10_000, PacingConfig::None);
    cfg.protected_reserve_bp = 2_000; // 20% = 2,000 cents
    cfg.protected_segments = vec![Segment::Vulnerable];
    cfg.protected_min_priority = Some(50);
    let book = BudgetBook::new(&[cfg], 0).unwrap();
    let mut general = 0;
    while book.reserve(&req(&format!("g{general}"), 0)) {
        general += 1;
    }
    assert_eq!(general, 8_000 / 500, "general contacts stop at ceiling minus reserve");
    let mut vulnerable = req("v1", 0);
    vulnerable.segment = Segment::Vulnerable;
    assert!(book.reserve(&vulnerable), "a vulnerable citizen still gets through");
    let mut urgent = req("u1", 0);
    urgent.priority = 60;
    assert!(book.reserve(&urgent));
    let mut more = 0;
    loop {
        let id = format!("v-more-{more}");
        let mut r = req(&id, 0);
        r.segment = Segment::Vulnerable;
        if !book.reserve(&r) {
            break;
        }
        more += 1;
    }
    assert_eq!(general + 2 + more, 10_000 / 500, "the reserve is used up to the ceiling, never past it");
}

#[test]
fn amendments_are_audited_and_lowering_the_ceiling_stops_admissions_only() {
    let book = BudgetBook::new(&[budget(10_000, PacingConfig::None)], 1_000).unwrap();
    assert!(book.reserve(&req("a", 0)));
    assert!(book.reserve(&req("b", 0)));
    let v = book
        .amend(
            "ccm",
            Some(600),
            &[],
            &AmendedBy { actor: "dirigente-ccm", note: "", reason: "amendment 3/2026" },
            Millis(5),
        )
        .unwrap();
    assert_eq!(v.ceiling_cents, 600);
    assert!(!book.reserve(&req("c", 0)), "new admissions stop");
    settle(&book, "a", 60_000, 0); // calls in progress still complete and are charged
    assert!(book.views(Millis(0))[0].settled_cents > 0);
    let t = Tariff { fee_per_contact_cents: 60, rate_per_second_centicents: 150, billing_increment_seconds: 10 };
    book.amend(
        "ccm",
        None,
        &[ChannelTariff { channel: Channel::Voice, tariff: t }],
        &AmendedBy { actor: "dirigente-ccm", note: "", reason: "new fee" },
        Millis(6),
    )
    .unwrap();
    let trail = book.audit("ccm").unwrap();
    assert_eq!(trail.len(), 2);
    assert_eq!(
        (trail[0].field.as_str(), trail[0].old_value.as_str(), trail[0].new_value.as_str()),
        ("ceiling_cents", "10000", "600")
    );
    assert_eq!(trail[0].actor, "dirigente-ccm");
    assert_eq!(trail[0].at_unix_ms, 1_005);
    assert_eq!(trail[1].field, "tariff.voice");
    assert!(book.amend("ccm", Some(-1), &[], &AmendedBy { actor: "x", note: "", reason: "y" }, Millis(7)).is_err());
    assert!(book.amend("nope", Some(1), &[], &AmendedBy { actor: "x", note: "", reason: "y" }, Millis(7)).is_err());
    assert!(book.amend("ccm", Some(1), &[], &AmendedBy { actor: " ", note: "", reason: "y" }, Millis(7)).is_err());
}

#[test]
fn periods_roll_over_and_reservations_settle_against_their_own_period() {
    let book = BudgetBook::new(&[budget(900, PacingConfig::None)], 0).unwrap(); // one 500-cent call
    assert!(book.reserve(&req("late", 30 * DAY - 1)));
    assert!(!book.reserve(&req("more", 30 * DAY - 1)), "period full");
    assert!(book.reserve(&req("fresh", 30 * DAY)), "a new period has a new ceiling");
    settle(&book, "late", 300_000, 30 * DAY + 1);
    let v = book.views(Millis(30 * DAY as u64 + 2))[0].clone();
    assert_eq!(v.period, "P1");
    assert_eq!(v.settled_cents, 0, "the late call is charged to the period that admitted it");
    assert_eq!(v.reserved_cents, 500);
}

/// An engine whose `pensions` queue and `supplier-a` group are paid by budget `ccm` of `book`,
/// with supplier operators s1, s2 and s3 logged in at time 0.
fn supplier_engine(book: &Arc<BudgetBook>) -> (Engine, Vec<smista_core::Event>) {
    let mut q = QueueConfig::new("pensions", &[("pensions", 3)]);
    q.budget = Some("ccm".into());
    let mut config = config(vec![q]);
    config.groups[1].budget = Some("ccm".into());
    let e = Engine::new(&config, book.clone()).expect("valid config");
    let mut ev = vec![];
    for op in ["s1", "s2", "s3"] {
        e.login(&login(op, "supplier-a", &[("pensions", 5)]), t(0), &mut ev).expect("login");
    }
    (e, ev)
}

#[derive(Debug, Default)]
struct Sink(Mutex<Vec<CostRecord>>);
impl SettlementSink for Sink {
    fn record(&self, r: &CostRecord) {
        self.0.lock().push(r.clone());
    }
}

#[test]
fn the_engine_diverts_extra_budget_contacts_and_settles_the_rest() {
    let sink = Arc::new(Sink::default());
    let mut cfg = budget(1_000, PacingConfig::None); // two 5-minute calls
    cfg.period = PeriodConfig::Monthly;
    let book = Arc::new(BudgetBook::new(&[cfg], 1_780_000_000_000).unwrap().with_sink(sink.clone()));
    let (e, mut ev) = supplier_engine(&book);
    let mut assigned = vec![];
    for i in 0..3 {
        let id = format!("c{i}");
        match e.offer(&offer(&id, "pensions"), t(1), &mut ev).unwrap() {
            Decision::Assigned { operator, .. } => assigned.push((operator.to_string(), id)),
            Decision::Diverted { reason, .. } => assert_eq!(reason, DivertReason::ExtraBudget),
            d => panic!("unexpected {d:?}"),
        }
    }
    assert_eq!(assigned.len(), 2, "the third contact is extra budget");
    // The first is completed by its operator; the caller of the second hangs up in service,
    // which is charged the same way (the operator's time was spent) and recorded as such.
    for (i, (op, c)) in assigned.iter().enumerate() {
        e.accept(op, c, t(2), &mut ev).unwrap();
        if i == 0 {
            e.complete(op, c, 0, t(2 + 120_000), &mut ev).unwrap();
        } else {
            assert_eq!(e.cancel(c, t(2 + 120_000), &mut ev).unwrap(), Outcome::CancelledInService);
        }
    }
    let v = book.views(t(200_000))[0].clone();
    assert_eq!(v.reserved_cents, 0);
    assert_eq!(v.settled_cents, 2 * (50 + 180));
    let records = sink.0.lock().clone();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.cost_cents == 230 && r.handle_ms == 120_000 && r.period == "2026-05"));
    let outcomes: Vec<Outcome> = records.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Completed, Outcome::CancelledInService]);
    assert_eq!(book.open_reservations(), 0);
}

/// A completion that reaches the engine late (the desk retried through a failover) bills the
/// conversation up to the end the desk states, not up to when it got through; an end after "now"
/// or before the acceptance is held to them; the wrap-up starts when the completion arrives.
#[test]
fn a_late_completion_bills_up_to_the_stated_end_not_the_delay() {
    let sink = Arc::new(Sink::default());
    let mut cfg = budget(100_000, PacingConfig::None);
    cfg.period = PeriodConfig::Monthly;
    let book = Arc::new(BudgetBook::new(&[cfg], 1_780_000_000_000).unwrap().with_sink(sink.clone()));
    let (e, mut ev) = supplier_engine(&book);
    let mut assigned = vec![];
    for i in 0..3 {
        let id = format!("c{i}");
        if let Decision::Assigned { operator, .. } = e.offer(&offer(&id, "pensions"), t(1), &mut ev).unwrap() {
            assigned.push((operator.to_string(), id));
        }
    }
    assert_eq!(assigned.len(), 3);
    for (op, c) in &assigned {
        e.accept(op, c, t(2), &mut ev).unwrap();
    }
    // Ended after two minutes, reported 40 s later.
    let (op, c) = &assigned[0];
    let done = e.complete_at(op, c, 0, t(2 + 120_000), t(2 + 160_000), &mut ev).unwrap();
    assert_eq!(done.handle_ms, 120_000);
    // A stated end in the future is "now"; one before the acceptance is the acceptance.
    let (op, c) = &assigned[1];
    assert_eq!(e.complete_at(op, c, 0, t(2 + 999_000), t(2 + 60_000), &mut ev).unwrap().handle_ms, 60_000);
    let (op, c) = &assigned[2];
    assert_eq!(e.complete_at(op, c, 0, t(0), t(2 + 60_000), &mut ev).unwrap().handle_ms, 0);
    let records = sink.0.lock().clone();
    let handle: Vec<u64> = records.iter().map(|r| r.handle_ms).collect();
    assert_eq!(handle, [120_000, 60_000, 0]);
    assert_eq!(records[0].cost_cents, 230, "two minutes billed, not two minutes forty");
}

/// A sink that keeps what a durable ledger would: records, open holds, amendments.
#[derive(Debug, Default)]
struct Durable {
    records: Mutex<Vec<CostRecord>>,
    holds: Mutex<Vec<HoldRecord>>,
    amendments: Mutex<Vec<AuditRecord>>,
}

impl SettlementSink for Durable {
    fn record(&self, r: &CostRecord) {
        self.holds.lock().retain(|h| !(h.budget == r.budget && h.contact == r.contact));
        self.records.lock().push(r.clone());
    }
    fn hold(&self, h: &HoldRecord) {
        self.holds.lock().push(h.clone());
    }
    fn release(&self, budget: &str, contact: &str) {
        self.holds.lock().retain(|h| !(h.budget == budget && h.contact == contact));
    }
    fn amended(&self, a: &AuditRecord) {
        self.amendments.lock().push(a.clone());
    }
}

impl Durable {
    /// What a restart would read back.
    fn recovery(&self) -> Recovery {
        let records = self.records.lock();
        let mut periods: Vec<PeriodTotals> = Vec::new();
        for r in records.iter() {
            match periods.iter_mut().find(|p| p.budget == r.budget && p.period == r.period) {
                Some(p) => {
                    p.settled_cents += r.cost_cents;
                    p.overrun_cents += (r.cost_cents - r.reserved_cents).max(0);
                }
                None => periods.push(PeriodTotals {
                    budget: r.budget.clone(),
                    period: r.period.clone(),
                    settled_cents: r.cost_cents,
                    overrun_cents: (r.cost_cents - r.reserved_cents).max(0),
                }),
            }
        }
        Recovery { amendments: self.amendments.lock().clone(), periods, holds: self.holds.lock().clone() }
    }
}

#[test]
fn a_restart_rebuilds_spend_holds_and_amendments_from_the_durable_records() {
    const EPOCH: i64 = 1_780_000_000_000;
    let cfg = budget(1_500, PacingConfig::None); // three 5-minute calls of 500
    let sink = Arc::new(Durable::default());
    let book = Arc::new(BudgetBook::new(std::slice::from_ref(&cfg), EPOCH).unwrap().with_sink(sink.clone()));
    let (e, mut ev) = supplier_engine(&book);
    let mut assigned = vec![];
    for i in 0..3 {
        let Decision::Assigned { operator, .. } = e.offer(&offer(&format!("c{i}"), "pensions"), t(1), &mut ev).unwrap()
        else {
            panic!("c{i} not assigned")
        };
        assigned.push(operator.to_string());
    }
    // c0 completed (2 minutes: 230), c1 in service, c2 only offered.
    e.accept(&assigned[0], "c0", t(2), &mut ev).unwrap();
    e.accept(&assigned[1], "c1", t(2), &mut ev).unwrap();
    e.complete(&assigned[0], "c0", 0, t(2 + 120_000), &mut ev).unwrap();
    assert_eq!(sink.holds.lock().len(), 1, "only the contact in service is held");
    let raised = ChannelTariff {
        channel: Channel::Voice,
        tariff: Tariff { fee_per_contact_cents: 60, rate_per_second_centicents: 150, billing_increment_seconds: 10 },
    };
    book.amend(
        "ccm",
        Some(2_000),
        &[raised],
        &AmendedBy { actor: "ops@inps", note: "", reason: "amendment 3" },
        t(130_000),
    )
    .unwrap();

    // The process dies; a new one starts ten minutes later and reads the ledger back.
    let restart = EPOCH + 600_000;
    let sink2 = Arc::new(Durable::default());
    let book2 = BudgetBook::new(&[cfg], restart).unwrap().with_sink(sink2.clone());
    let done = book2.restore(&sink.recovery(), Millis(0));
    assert_eq!((done.amendments, done.holds, done.settled_cents), (2, 1, 230));
    assert!(done.skipped.is_empty(), "{:?}", done.skipped);
    let v = book2.views(Millis(0))[0].clone();
    assert_eq!((v.ceiling_cents, v.settled_cents, v.reserved_cents), (2_000, 230, 500));
    assert_eq!(book2.audit("ccm").unwrap().len(), 2);

    // Headroom is 2000 - 230 - 500 = 1270: two calls of 510 under the amended tariff, not three.
    let admitted = (0..3).filter(|i| book2.reserve(&req(&format!("n{i}"), 600_000))).count();
    assert_eq!(admitted, 2);

    // The contact in service completes after the restart, with its own operator only.
    assert_eq!(
        book2.complete_recovered("c1", Some("intruder"), Outcome::Completed, Millis(1_000)),
        Err(RecoveredError::OtherOperator { contact: "c1".into() })
    );
    let r = book2.complete_recovered("c1", Some(&assigned[1]), Outcome::Completed, Millis(1_000)).unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    let handle = (restart + 1_000 - (EPOCH + 2)) as u64;
    assert_eq!(r.handle_ms, handle);
    assert_eq!(r.cost_cents, raised.tariff.cost_cents(handle));
    assert_eq!(r.reserved_cents, 500);
    assert_eq!(sink2.records.lock().len(), 1, "the settlement goes to the new ledger");
    assert!(
        book2.complete_recovered("c1", Some(&assigned[1]), Outcome::Completed, Millis(2_000)).is_err(),
        "settled once"
    );
    let v = book2.views(Millis(2_000))[0].clone();
    assert_eq!(v.settled_cents, 230 + r.cost_cents);
    assert_eq!(v.reserved_cents, 2 * 510, "only the two new admissions remain reserved");
    assert!(v.settled_cents + v.reserved_cents <= v.ceiling_cents + v.overrun_cents);
}

#[test]
fn recovered_holds_without_a_completion_expire_and_free_their_money() {
    let cfg = budget(10_000, PacingConfig::None);
    let book = BudgetBook::new(&[cfg], 1_000_000).unwrap();
    let hold = |contact: &str, accepted: i64| HoldRecord {
        contact: contact.into(),
        budget: "ccm".into(),
        period: "P0".into(),
        amount_cents: 500,
        queue: "pensions".into(),
        group: "supplier-a".into(),
        operator: "s1".into(),
        channel: Channel::Voice,
        accepted_unix_ms: accepted,
        arrived_unix_ms: accepted,
    };
    let done = book.restore(
        &Recovery {
            holds: vec![hold("old", 0), hold("recent", 900_000), hold("gone", 1)],
            periods: vec![PeriodTotals {
                budget: "nobody".into(),
                period: "P0".into(),
                settled_cents: 5,
                overrun_cents: 0,
            }],
            amendments: vec![],
        },
        Millis(0),
    );
    assert_eq!(done.holds, 3);
    assert_eq!(done.skipped.len(), 1, "a budget no longer configured is reported, not applied");
    assert_eq!(book.views(Millis(0))[0].reserved_cents, 1_500);
    let expired = book.expire_recovered(Millis(0), 500_000);
    let mut gone: Vec<String> = expired.into_iter().map(|h| h.contact).collect();
    gone.sort();
    assert_eq!(gone, ["gone", "old"]);
    assert_eq!(book.views(Millis(0))[0].reserved_cents, 500);
    assert_eq!(book.recovered_count(), 1);
    assert!(book.recovered("recent").is_some());
}

#[test]
fn tariffs_in_audit_records_read_back() {
    let t = Tariff { fee_per_contact_cents: 60, rate_per_second_centicents: 150, billing_increment_seconds: 10 };
    assert_eq!(Tariff::parse(&t.to_string()), Some(t));
    assert_eq!(
        Tariff::parse("fee_per_contact_cents=-1 rate_per_second_centicents=1 billing_increment_seconds=1"),
        None
    );
    assert_eq!(Tariff::parse("nonsense"), None);
}

/// A day of a contract whose demand is far above its ceiling, simulated in steps of two seconds on the
/// book alone: `operators` supplier desks take a call whenever the budget admits one; handle
/// times are exponential (mean 300 s). Returns (recorded total, ceiling).
fn simulate_day(seed: u64, tail_sigmas: f64) -> (i64, i64) {
    let ceiling = 150_000; // about 300 calls of 500 cents
    let mut cfg = budget(ceiling, PacingConfig::None);
    cfg.tail_sigmas = tail_sigmas;
    let book = BudgetBook::new(&[cfg], 0).expect("valid budget");
    let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let operators = 40;
    let mut desks: Vec<Option<(String, i64, u64)>> = vec![None; operators]; // (contact, start, handle)
    let mut n = 0;
    let mut idle_for = 0;
    // Two-second steps (the server's exposure refresh runs every second; handle times are minutes).
    for t in 0..100_000i64 {
        let now = t * 2000;
        book.refresh_exposure(Millis(now as u64));
        let mut admitted = false;
        for d in desks.iter_mut() {
            if let Some((c, start, handle)) = d {
                if now >= *start + *handle as i64 {
                    let c = c.clone();
                    book.settle(&Settlement {
                        budget: "ccm",
                        contact_id: &c,
                        queue: "pensions",
                        group: "supplier-a",
                        operator: "op",
                        channel: Channel::Voice,
                        handle_ms: *handle,
                        accepted_at: Millis(*start as u64),
                        now: Millis(now as u64),
                        outcome: Outcome::Completed,
                        repeat: false,
                    });
                    *d = None;
                }
            }
            if d.is_none() {
                n += 1;
                let c = format!("c{n}");
                if book.reserve(&req(&c, now)) {
                    book.started(&smista_core::budget::Started {
                        budget: "ccm",
                        contact_id: &c,
                        queue: "pensions",
                        group: "supplier-a",
                        operator: "op",
                        channel: Channel::Voice,
                        arrived: Millis(now as u64),
                        now: Millis(now as u64),
                    });
                    let handle = (-(next().max(1e-12)).ln() * 300_000.0) as u64;
                    *d = Some((c, now, handle));
                    admitted = true;
                }
            }
        }
        idle_for = if admitted || desks.iter().any(Option::is_some) { 0 } else { idle_for + 1 };
        if idle_for > 10 {
            break;
        }
    }
    (book.views(Millis(0))[0].settled_cents, ceiling)
}

#[test]
fn near_the_ceiling_long_call_reservations_and_the_running_margin_keep_the_total_within_it() {
    // Twenty simulated days each way, deterministic (seeded). With the defaults (long-call
    // reservations near the ceiling, running overrun and a margin for calls in service counted
    // at admission) against reserving the mean only, as before.
    let run = |tail: f64| -> Vec<(i64, i64)> { (1..=20).map(|s| simulate_day(s, tail)).collect() };
    let over = |days: &[(i64, i64)]| days.iter().filter(|(t, c)| t > c).count();
    let worst_over = |days: &[(i64, i64)]| days.iter().map(|(t, c)| (t - c) as f64 / *c as f64).fold(0.0, f64::max);
    let worst_unused = |days: &[(i64, i64)]| days.iter().map(|(t, c)| (c - t) as f64 / *c as f64).fold(0.0, f64::max);
    let guarded = run(smista_core::book::TAIL_SIGMAS);
    let mean_only = run(0.0);
    println!(
        "guarded: {} of 20 days over the ceiling, worst {:.2}% over, worst {:.2}% unused; mean only: {} over, worst {:.2}% over",
        over(&guarded),
        100.0 * worst_over(&guarded),
        100.0 * worst_unused(&guarded),
        over(&mean_only),
        100.0 * worst_over(&mean_only)
    );
    assert!(over(&guarded) <= 1, "{guarded:?}");
    assert!(worst_over(&guarded) < 0.005, "{guarded:?}");
    assert!(worst_unused(&guarded) < 0.03, "the guard must not strand the money: {guarded:?}");
    assert!(over(&mean_only) > 3 * over(&guarded).max(1), "the guard must make a difference: {mean_only:?}");
}

/// The weekly pacing profile follows the centre's wall clock: with all the weight on Monday
/// 09:00-10:00 in Rome, nothing is allowed before the first Monday morning, a quarter by 09:30, half
/// from 10:00 until the next Monday 09:00 — which after the spring change (29 March 2026) is 07:00
/// UTC instead of 08:00 — and the whole of it from 10:00 that day.
#[test]
fn weekly_pacing_follows_the_centres_wall_clock_across_the_clock_change() {
    const HOUR: i64 = 3_600_000;
    // Monday 23 March 2026, 00:00 in Rome (CET, UTC+1).
    let monday = 1_774_220_400_000;
    let mut weights = vec![0u32; 168];
    weights[9] = 1_000; // Monday 09:00-10:00 local
    let mut cfg = budget(40_000, PacingConfig::Weekly { hour_weights: weights, lookahead_ms: 0 });
    cfg.period = PeriodConfig::Fixed { start_unix_ms: monday, length_ms: 14 * DAY };
    let book = BudgetBook::new_in(&[cfg], monday, Arc::new(smista_core::calendar::CentralEurope)).unwrap();
    let at = |unix: i64| book.allowance_at("ccm", Millis(0), unix).expect("in the period");
    // First Monday: 09:00 local is 08:00 UTC.
    assert_eq!(at(monday + 8 * HOUR + HOUR / 2), 0, "08:30 local, before the weighted hour");
    assert_eq!(at(monday + 9 * HOUR + HOUR / 2), 10_000, "09:30 local: half of the first of two hours");
    assert_eq!(at(monday + 10 * HOUR), 20_000, "10:00 local: the first Monday's share");
    // The second Monday (30 March) is on summer time: 09:00 local is 07:00 UTC, one hour earlier.
    let second = monday + 7 * DAY;
    assert_eq!(at(second + 8 * HOUR - 1), 20_000, "07:59 local, still the first Monday's share");
    assert_eq!(at(second + 8 * HOUR + HOUR / 2), 30_000, "09:30 local (07:30 UTC)");
    assert_eq!(at(second + 9 * HOUR), 40_000, "10:00 local (08:00 UTC): the whole ceiling");
}

#[test]
fn a_long_call_that_settles_is_not_counted_twice_until_the_next_refresh() {
    // A call reserved at its mean (500 cents) runs 20 minutes (50 + 1800 = 1850 cents): after
    // the refresh its running overrun (1350) and a tail margin are held back. Once it settles
    // its cost is committed; what the refresh counted for it is taken out at once, so the book
    // admits right away what the remaining money pays for, not a second later.
    let book = BudgetBook::new(&[budget(2_550, PacingConfig::None)], 0).expect("valid budget");
    assert!(book.reserve(&req("long", 0)));
    book.started(&smista_core::budget::Started {
        budget: "ccm",
        contact_id: "long",
        queue: "pensions",
        group: "supplier-a",
        operator: "op",
        channel: Channel::Voice,
        arrived: Millis(0),
        now: Millis(0),
    });
    let t = 1_200_000;
    book.refresh_exposure(Millis(t));
    assert!(!book.reserve(&req("refused", t as i64)), "the call in service holds the money back");
    settle(&book, "long", 1_200_000, 0);
    let v = book.views(Millis(t))[0].clone();
    assert_eq!(v.settled_cents, 1_850);
    // 2550 - 1850 leaves 700: one more call at the mean learned from the long one (7/8 of 300 s
    // and 1/8 of 1200 s: 412.5 s, 680 cents) fits, now.
    assert!(book.reserve(&req("next", t as i64)), "admitted at once: {v:?}");
    assert!(!book.reserve(&req("one-more", t as i64)), "and no more than the money pays for");
}
