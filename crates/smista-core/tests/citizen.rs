//! The citizen's side of routing: opening hours and holidays, segments, callbacks and resumed
//! places, appointments. One scenario per rule a citizen or the centre relies on.

mod common;

use std::sync::Arc;

use common::*;
use smista_core::calendar::{days_from_civil, to_unix, CentralEurope};
use smista_core::config::{QueueConfig, SegmentRule};
use smista_core::hours::HoursConfig;
use smista_core::{CallbackNext, Channel, Decision, DivertReason, Engine, Millis, Outcome, Segment};

const H: i64 = 3_600_000;
/// Engine time zero: 2026-12-01 00:00 UTC.
const EPOCH: i64 = 1_796_083_200_000;

/// Engine time of a local time in Rome.
fn rome(y: i64, m: u32, d: u32, hh: i64, mm: i64) -> Millis {
    let unix = to_unix(days_from_civil(y, m, d) * 24 * H + hh * H + mm * 60_000, &CentralEurope);
    Millis(u64::try_from(unix - EPOCH).expect("after the epoch"))
}

fn office_hours(mut q: QueueConfig) -> QueueConfig {
    q.hours = Some(HoursConfig { weekly: vec!["mon-fri 08:00-18:00".into()], ..HoursConfig::default() });
    q
}

fn rome_engine(queues: Vec<QueueConfig>) -> Engine {
    engine(queues).with_calendar(EPOCH, Arc::new(CentralEurope))
}

#[test]
fn the_epoch_is_the_first_of_december() {
    assert_eq!(days_from_civil(2026, 12, 1) * 24 * H, EPOCH);
}

#[test]
fn a_closed_queue_diverts_with_its_next_opening() {
    let e = rome_engine(vec![office_hours(QueueConfig::new("pensions", &[("pensions", 5)]))]);
    let mut ev = vec![];
    let closed = |id: &str, at: Millis, ev: &mut Vec<_>| match e.offer(&offer(id, "pensions"), at, ev) {
        Ok(Decision::Diverted { reason: DivertReason::Closed, reopens, .. }) => reopens,
        other => panic!("{id}: expected CLOSED, got {other:?}"),
    };
    // Christmas (a Friday), then St Stephen and a Sunday: open again on Monday 28 at 08:00.
    assert_eq!(closed("xmas", rome(2026, 12, 25, 10, 0), &mut ev), Some(rome(2026, 12, 28, 8, 0)));
    // Epiphany 2027, a Wednesday.
    assert_eq!(closed("epiphany", rome(2027, 1, 6, 10, 0), &mut ev), Some(rome(2027, 1, 7, 8, 0)));
    // Friday evening before the clocks go forward and Easter Monday: Tuesday 30 March at 08:00
    // summer time, 06:00 UTC.
    let friday = rome(2027, 3, 26, 19, 0);
    let tuesday = closed("easter", friday, &mut ev).expect("opens");
    assert_eq!(tuesday, rome(2027, 3, 30, 8, 0));
    assert_eq!(i64::try_from(tuesday.0).unwrap() + EPOCH, days_from_civil(2027, 3, 30) * 24 * H + 6 * H);
    assert_eq!(closed("easter-monday", rome(2027, 3, 29, 12, 0), &mut ev), Some(tuesday));
    // Friday 29 October 2027 after closing, across the change back and All Saints (Monday):
    // Tuesday 2 November at 08:00 winter time, 07:00 UTC.
    let next = closed("autumn", rome(2027, 10, 29, 18, 0), &mut ev).expect("opens");
    assert_eq!(i64::try_from(next.0).unwrap() + EPOCH, days_from_civil(2027, 11, 2) * 24 * H + 7 * H);
    // A repeated offer answers the same diversion, with the opening computed again.
    assert_eq!(closed("xmas", rome(2026, 12, 25, 11, 0), &mut ev), Some(rome(2026, 12, 28, 8, 0)));
    // An admin closure has no announced reopening; it applies on top of the hours.
    e.set_queue_open("pensions", false).unwrap();
    assert_eq!(closed("admin", rome(2026, 12, 28, 9, 0), &mut ev), None);
    assert_clean(&e, rome(2027, 11, 2, 9, 0));
}

#[test]
fn closing_time_stops_arrivals_not_the_contacts_already_waiting() {
    let e = rome_engine(vec![office_hours(QueueConfig::new("pensions", &[("pensions", 5)]))]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), rome(2026, 12, 28, 8, 0), &mut ev).unwrap();
    let d = e.offer(&offer("c1", "pensions"), rome(2026, 12, 28, 17, 58), &mut ev).unwrap();
    assert_eq!(assigned_to(&d), Some("op1"));
    let d = e.offer(&offer("c2", "pensions"), rome(2026, 12, 28, 17, 59), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { .. }), "{d:?}");
    let d = e.offer(&offer("c3", "pensions"), rome(2026, 12, 28, 18, 0), &mut ev).unwrap();
    assert!(matches!(d, Decision::Diverted { reason: DivertReason::Closed, .. }), "{d:?}");
    // The caller who got in before closing is still answered.
    e.accept("op1", "c1", rome(2026, 12, 28, 17, 58), &mut ev).unwrap();
    ev.clear();
    e.complete("op1", "c1", 0, rome(2026, 12, 28, 18, 5), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("c2".into(), "op1".into())]);
    let snap = e.snapshot(rome(2026, 12, 28, 18, 5));
    assert!(!snap.queues[0].open, "the snapshot shows the queue closed by its hours");
    assert_clean(&e, rome(2026, 12, 28, 18, 5));
}

fn with_segments(mut q: QueueConfig) -> QueueConfig {
    q.segments = vec![
        SegmentRule {
            segment: Segment::Vulnerable,
            priority_boost: 20,
            service_level_threshold_ms: Some(10_000),
            service_level_target: Some(0.9),
            route_to: None,
        },
        SegmentRule {
            segment: Segment::Intermediary,
            priority_boost: 0,
            service_level_threshold_ms: None,
            service_level_target: None,
            route_to: Some("patronati".into()),
        },
    ];
    q
}

fn segment_offer(id: &str, queue: &str, segment: Segment) -> smista_core::OfferRequest {
    smista_core::OfferRequest { segment, ..offer(id, queue) }
}

#[test]
fn a_vulnerable_caller_waiting_behind_ordinary_ones_is_answered_first() {
    let e = engine(vec![
        with_segments(QueueConfig::new("pensions", &[("pensions", 5)])),
        QueueConfig::new("patronati", &[("patronati", 5)]),
    ]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("busy", "pensions"), t(0), &mut ev).unwrap();
    for i in 0..3 {
        let d = e.offer(&offer(&format!("g{i}"), "pensions"), t(1_000 + i), &mut ev).unwrap();
        assert!(matches!(d, Decision::Queued { .. }), "{d:?}");
    }
    // Five minutes later a vulnerable caller arrives: a boost of 20 levels at 60 s per level
    // outweighs the ordinary callers' five minutes.
    let d = e.offer(&segment_offer("v", "pensions", Segment::Vulnerable), t(300_000), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { position: 1, .. }), "the vulnerable caller goes first: {d:?}");
    let snap = e.snapshot(t(300_000));
    let segs = &snap.queues[0].segments;
    let of = |s: Segment| segs.iter().find(|x| x.segment == s).expect("segment shown");
    assert_eq!((of(Segment::Vulnerable).waiting, of(Segment::General).waiting), (1, 3));
    assert_eq!(of(Segment::Vulnerable).service_level_threshold_ms, 10_000);
    assert_eq!(of(Segment::General).service_level_threshold_ms, 20_000);
    e.accept("op1", "busy", t(300_001), &mut ev).unwrap();
    ev.clear();
    e.complete("op1", "busy", 0, t(310_000), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("v".into(), "op1".into())]);
    e.accept("op1", "v", t(310_001), &mut ev).unwrap();
    // Answered after 10 s: outside the vulnerable segment's 10-second threshold, within the
    // queue's 20 seconds.
    let snap = e.snapshot(t(310_001));
    let v = snap.queues[0].segments.iter().find(|x| x.segment == Segment::Vulnerable).expect("shown");
    assert_eq!((v.waiting, v.service_level), (0, 0.0));
    ev.clear();
    e.complete("op1", "v", 0, t(320_000), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("g0".into(), "op1".into())], "then the ordinary callers, in order");
    assert_clean(&e, t(320_000));
}

#[test]
fn intermediaries_are_routed_to_their_own_queue() {
    let e = engine(vec![
        with_segments(QueueConfig::new("pensions", &[("pensions", 5)])),
        QueueConfig::new("patronati", &[("patronati", 5)]),
    ]);
    let mut ev = vec![];
    e.login(&login("citizens", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.login(&login("desk-p", "internal", &[("patronati", 5)]), t(1), &mut ev).unwrap();
    let d = e.offer(&segment_offer("p1", "pensions", Segment::Intermediary), t(10), &mut ev).unwrap();
    match &d {
        Decision::Assigned { operator, queue, .. } => assert_eq!((&**operator, &**queue), ("desk-p", "patronati")),
        other => panic!("{other:?}"),
    }
    let d = e.offer(&offer("c1", "pensions"), t(20), &mut ev).unwrap();
    assert_eq!(assigned_to(&d), Some("citizens"));
    assert_clean(&e, t(20));
}

#[test]
fn segment_rules_are_checked() {
    let mut bad = with_segments(QueueConfig::new("pensions", &[("pensions", 5)]));
    bad.segments[1].route_to = Some("nowhere".into());
    let err = smista_core::Engine::new(&config(vec![bad]), Arc::new(smista_core::budget::Unlimited)).unwrap_err();
    assert_eq!(err.key, "queues[0].segments[1].route_to");
    let mut bad = QueueConfig::new("pensions", &[("pensions", 5)]);
    bad.segments = with_segments(QueueConfig::new("x", &[])).segments;
    bad.segments[1].segment = Segment::Vulnerable;
    bad.segments[1].route_to = None;
    let err = smista_core::Engine::new(&config(vec![bad]), Arc::new(smista_core::budget::Unlimited)).unwrap_err();
    assert_eq!(
        (err.key.as_str(), err.problem.as_str()),
        ("queues[0].segments[1].segment", "`vulnerable` has two rules")
    );
}

fn callback_queue() -> QueueConfig {
    let mut q = QueueConfig::new("pensions", &[("pensions", 5)]);
    q.max_wait_ms = 60_000;
    q.callback_retry_ms = vec![120_000];
    q
}

fn callbacks(ev: &[smista_core::Event]) -> Vec<(String, bool)> {
    ev.iter()
        .filter_map(|e| match e {
            smista_core::Event::Offered { contact, callback, .. } => Some((contact.to_string(), *callback)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_callback_keeps_its_place_among_calls() {
    let e = engine(vec![callback_queue()]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("busy", "pensions"), t(0), &mut ev).unwrap();
    e.accept("op1", "busy", t(1), &mut ev).unwrap();
    e.offer(&offer("first", "pensions"), t(1_000), &mut ev).unwrap();
    e.offer(&offer("cb", "pensions"), t(2_000), &mut ev).unwrap();
    e.offer(&offer("third", "pensions"), t(3_000), &mut ev).unwrap();
    // The second caller asks to be called back: they keep position 2.
    let d = e.request_callback("cb", t(10_000), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { position: 2, .. }), "{d:?}");
    assert_eq!(e.request_callback("cb", t(10_001), &mut ev).unwrap(), d, "asking again changes nothing");
    // The queue's one-minute maximum wait diverts the live callers, not the callback.
    ev.clear();
    e.tick(t(70_000), &mut ev);
    let diverted: Vec<_> = ev
        .iter()
        .filter_map(|x| match x {
            smista_core::Event::Diverted { contact, .. } => Some(contact.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(diverted, vec!["first".to_owned(), "third".to_owned()]);
    ev.clear();
    e.complete("op1", "busy", 0, t(80_000), &mut ev).unwrap();
    assert_eq!(callbacks(&ev), vec![("cb".into(), true)], "offered as an outbound callback");
    assert_clean(&e, t(80_000));
}

#[test]
fn a_callback_offered_in_order_with_calls_that_arrived_later() {
    let e = engine(vec![QueueConfig::new("pensions", &[("pensions", 5)])]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("busy", "pensions"), t(0), &mut ev).unwrap();
    e.accept("op1", "busy", t(1), &mut ev).unwrap();
    e.offer(&offer("cb", "pensions"), t(1_000), &mut ev).unwrap();
    e.request_callback("cb", t(1_500), &mut ev).unwrap();
    e.offer(&offer("later", "pensions"), t(2_000), &mut ev).unwrap();
    ev.clear();
    e.complete("op1", "busy", 0, t(5_000), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("cb".into(), "op1".into())], "the callback's place came first");
    assert_clean(&e, t(5_000));
}

#[test]
fn an_unanswered_callback_is_retried_then_ends_unreachable() {
    let e = engine(vec![callback_queue()]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.login(&login("op2", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("busy1", "pensions"), t(0), &mut ev).unwrap();
    e.offer(&offer("busy2", "pensions"), t(0), &mut ev).unwrap();
    e.offer(&offer("cb", "pensions"), t(1_000), &mut ev).unwrap();
    e.request_callback("cb", t(2_000), &mut ev).unwrap();
    e.accept("op1", "busy1", t(3_000), &mut ev).unwrap();
    e.complete("op1", "busy1", 0, t(4_000), &mut ev).unwrap();
    e.accept("op1", "cb", t(5_000), &mut ev).unwrap();
    // Calling back before the operator accepted is refused (nobody has dialled).
    assert!(e.callback_unanswered("busy2", t(5_000), &mut ev).is_err(), "not a callback");
    ev.clear();
    let next = e.callback_unanswered("cb", t(20_000), &mut ev).unwrap();
    assert_eq!(next, CallbackNext::Scheduled { attempts: 1, due: t(140_000) });
    assert_eq!(e.callback_unanswered("cb", t(20_001), &mut ev).unwrap(), next, "a repeated report answers the same");
    let d = e.offer(&offer("cb", "pensions"), t(21_000), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { position: 0, estimated_wait_ms: 119_000, .. }), "{d:?}");
    // op1 is free at once, without wrap-up.
    assert_eq!(e.snapshot(t(20_000)).operators.iter().find(|o| o.id == "op1").map(|o| o.active_contacts), Some(0));
    // Nothing is offered until the retry is due; then it goes back in line.
    e.tick(t(139_999), &mut ev);
    assert!(callbacks(&ev).is_empty());
    e.tick(t(140_000), &mut ev);
    assert_eq!(callbacks(&ev), vec![("cb".into(), true)]);
    let to = offered(&ev)[0].1.clone();
    e.accept(&to, "cb", t(141_000), &mut ev).unwrap();
    ev.clear();
    assert_eq!(e.callback_unanswered("cb", t(150_000), &mut ev).unwrap(), CallbackNext::Unreachable);
    assert!(ev.iter().any(|x| matches!(x, smista_core::Event::Finished { outcome: Outcome::Unreachable, .. })));
    assert_eq!(e.cancel("cb", t(150_001), &mut ev).unwrap(), Outcome::Unreachable, "ended once, for good");
    assert_eq!(e.callback_unanswered("cb", t(150_002), &mut ev).unwrap(), CallbackNext::Unreachable);
    assert_clean(&e, t(150_002));
}

#[test]
fn a_retry_outside_opening_hours_waits_for_the_next_opening() {
    let mut q = office_hours(callback_queue());
    q.callback_retry_ms = vec![3_600_000];
    let e = rome_engine(vec![q]);
    let mut ev = vec![];
    let at = |h, m| rome(2026, 12, 4, h, m); // a Friday
    let mut desk = login("op1", "internal", &[("pensions", 5)]);
    desk.channels = vec![(smista_core::Channel::Voice, 1), (smista_core::Channel::Callback, 1)];
    e.login(&desk, at(8, 0), &mut ev).unwrap();
    e.offer(&offer("cb", "pensions"), at(17, 0), &mut ev).unwrap();
    e.accept("op1", "cb", at(17, 1), &mut ev).unwrap();
    // A CALLBACK-channel contact needs no request; here it is a voice call in service already.
    assert!(e.callback_unanswered("cb", at(17, 2), &mut ev).is_err());
    e.complete("op1", "cb", 0, at(17, 3), &mut ev).unwrap();
    let web = smista_core::OfferRequest { channel: smista_core::Channel::Callback, ..offer("web", "pensions") };
    e.offer(&web, at(17, 30), &mut ev).unwrap();
    e.accept("op1", "web", at(17, 31), &mut ev).unwrap();
    // One hour after 17:32 is 18:32, after closing: the retry waits for Monday 08:00.
    let next = e.callback_unanswered("web", at(17, 32), &mut ev).unwrap();
    assert_eq!(next, CallbackNext::Scheduled { attempts: 1, due: rome(2026, 12, 7, 8, 0) });
    assert_clean(&e, at(17, 32));
}

#[test]
fn a_redial_within_the_window_resumes_the_place_and_after_it_does_not() {
    let mut q = QueueConfig::new("pensions", &[("pensions", 5)]);
    q.resume_window_ms = 120_000;
    let e = engine(vec![q]);
    let mut ev = vec![];
    let keyed = |id: &str, key: &str| smista_core::OfferRequest { caller_key: key.into(), ..offer(id, "pensions") };
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("busy", "pensions"), t(0), &mut ev).unwrap();
    e.accept("op1", "busy", t(1), &mut ev).unwrap();
    e.offer(&keyed("first-try", "k-anna"), t(1_000), &mut ev).unwrap();
    e.offer(&offer("other", "pensions"), t(5_000), &mut ev).unwrap();
    // Anna hangs up and calls again a minute later: she is back ahead of `other`.
    assert_eq!(e.cancel("first-try", t(30_000), &mut ev).unwrap(), Outcome::Abandoned);
    assert_eq!(e.places_kept(), 1);
    let d = e.offer(&keyed("second-try", "k-anna"), t(90_000), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { position: 1, .. }), "resumed: {d:?}");
    assert_eq!(e.places_kept(), 0, "a place is taken once");
    // She hangs up again; this time she calls back after the window: a new place at the end.
    e.cancel("second-try", t(100_000), &mut ev).unwrap();
    e.tick(t(220_000), &mut ev);
    assert_eq!(e.places_kept(), 0, "the key is forgotten when the window ends");
    let d = e.offer(&keyed("third-try", "k-anna"), t(230_000), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { position: 2, .. }), "not resumed: {d:?}");
    // Without a key, or on a queue without the rule, nothing is kept.
    e.cancel("other", t(231_000), &mut ev).unwrap();
    assert_eq!(e.places_kept(), 0);
    assert_clean(&e, t(231_000));
}

#[test]
fn a_queue_without_the_redial_rule_keeps_no_caller_key() {
    let e = engine(vec![QueueConfig::new("pensions", &[("pensions", 5)])]);
    let mut ev = vec![];
    let keyed = |id: &str| smista_core::OfferRequest { caller_key: "k-anna".into(), ..offer(id, "pensions") };
    e.offer(&keyed("a"), t(0), &mut ev).unwrap();
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&keyed("b"), t(1_000), &mut ev).unwrap();
    e.cancel("b", t(2_000), &mut ev).unwrap();
    assert_eq!(e.places_kept(), 0);
}

mod appointments {
    use super::*;
    use smista_core::appointments::{
        AppointmentBook, AppointmentError, AppointmentRules, AppointmentState, Availability, Booking,
    };
    use smista_core::Channel;

    const SLOT: i64 = 1_800_000;

    fn consultancy() -> QueueConfig {
        let mut q = QueueConfig::new("consultancy", &[("pensions", 7)]);
        q.appointments = Some(AppointmentRules { slot_ms: SLOT as u64, guard_ms: 300_000, grace_ms: 120_000 });
        q
    }

    fn book_for(queues: &[QueueConfig]) -> AppointmentBook {
        AppointmentBook::new(config(queues.to_vec()).appointment_rules())
    }

    /// A consultant's desk: voice and video (web meetings).
    fn desk(op: &str) -> smista_core::LoginRequest {
        let mut l = login(op, "internal", &[("pensions", 8)]);
        l.channels = vec![(Channel::Voice, 1), (Channel::Video, 1)];
        l
    }

    fn block(op: &str, start: i64, end: i64) -> Availability {
        Availability {
            operator: op.into(),
            queue: "consultancy".into(),
            start_unix_ms: start,
            end_unix_ms: end,
            display_name: format!("Dr. {op}"),
        }
    }

    fn booking(id: &str, op: Option<&str>, start: i64) -> Booking {
        Booking {
            id: id.into(),
            queue: "consultancy".into(),
            operator: op.map(Into::into),
            start_unix_ms: start,
            channel: Channel::Video,
            segment: smista_core::Segment::General,
            recording: false,
            for_contact: String::new(),
        }
    }

    /// Drives the engine the way the server does each tick: holds, then due appointments.
    fn drive(e: &Engine, book: &AppointmentBook, now: Millis, ev: &mut Vec<smista_core::Event>) {
        let unix = i64::try_from(now.0).expect("fits");
        for (op, until) in book.holds(unix) {
            e.hold_operator(&op, Millis(u64::try_from(until).expect("fits")));
        }
        for a in book.due(unix) {
            let req = smista_core::OfferRequest { channel: a.channel, ..offer(&a.id, &a.queue) };
            e.offer_appointment(&req, &a.operator, 120_000, now, ev).expect("appointment offered");
        }
    }

    #[test]
    fn slots_bookings_and_their_refusals() {
        let book = book_for(&[consultancy()]);
        let now = 1_000_000;
        let nine = 10_000_000;
        book.publish(block("op-anna", nine, nine + 2 * SLOT), now).expect("publish");
        book.publish(block("op-bruno", nine, nine + SLOT), now).expect("publish");
        assert_eq!(book.free_slots("consultancy", None, nine, nine + 4 * SLOT, now).unwrap().len(), 3);
        let a = book.book(&booking("a1", Some("op-anna"), nine), now).expect("booked");
        assert_eq!((a.display_name.as_str(), a.end_unix_ms, a.recording), ("Dr. op-anna", nine + SLOT, false));
        assert_eq!(book.book(&booking("a1", Some("op-anna"), nine), now).unwrap(), a, "idempotent");
        // Overlapping booking, unknown operator, past slot, misaligned slot, no appointments.
        assert!(matches!(book.book(&booking("a2", Some("op-anna"), nine), now), Err(AppointmentError::Unavailable(_))));
        assert!(matches!(
            book.book(&booking("a3", Some("op-zeno"), nine), now),
            Err(AppointmentError::UnknownOperator(_))
        ));
        assert!(matches!(book.book(&booking("a4", None, now - 1), now), Err(AppointmentError::Invalid { .. })));
        assert!(matches!(
            book.book(&booking("a5", Some("op-anna"), nine + 60_000), now),
            Err(AppointmentError::Unavailable(_))
        ));
        let mut other = booking("a6", None, nine);
        other.queue = "pensions".into();
        assert!(matches!(book.book(&other, now), Err(AppointmentError::NoAppointments(_))));
        assert!(matches!(book.book(&booking("a1", Some("op-bruno"), nine), now), Err(AppointmentError::Conflict(_))));
        // Anyone free: op-bruno is the one left at nine.
        let b = book.book(&booking("b1", None, nine), now).expect("booked");
        assert_eq!(b.operator, "op-bruno");
        assert!(matches!(book.book(&booking("c1", None, nine), now), Err(AppointmentError::Unavailable(_))));
        // Move and cancel.
        let moved = book.move_to("a1", nine + SLOT, None, now).expect("moved");
        assert_eq!(moved.start_unix_ms, nine + SLOT);
        assert_eq!(book.free_slots("consultancy", Some("op-anna"), nine, nine + 4 * SLOT, now).unwrap().len(), 1);
        assert!(book.withdraw("op-anna", nine).is_err(), "a block with bookings cannot be withdrawn");
        assert_eq!(book.cancel("a1").unwrap().state, AppointmentState::Cancelled);
        assert_eq!(book.cancel("a1").unwrap().state, AppointmentState::Cancelled, "idempotent");
        assert!(book.withdraw("op-anna", nine).unwrap().is_some());
        // Availability that overlaps the operator's own block is refused.
        assert!(book.publish(block("op-bruno", nine + 60_000, nine + SLOT + 60_000), now).is_err());
    }

    #[test]
    fn a_booked_contact_is_offered_at_its_slot_to_its_operator_before_ordinary_traffic() {
        let e = engine(vec![consultancy()]);
        let book = book_for(&[consultancy()]);
        let mut ev = vec![];
        let nine = 10_000_000;
        book.publish(block("op-anna", nine, nine + 2 * SLOT), 0).unwrap();
        book.book(&booking("appt-1", Some("op-anna"), nine), 0).unwrap();
        e.login(&desk("op-anna"), t(0), &mut ev).unwrap();
        e.login(&desk("op-carlo"), t(1), &mut ev).unwrap();
        // Four minutes before the slot: op-anna is held, so ordinary callers go to op-carlo
        // or wait.
        drive(&e, &book, Millis(nine as u64 - 240_000), &mut ev);
        let d = e.offer(&offer("c1", "consultancy"), Millis(nine as u64 - 230_000), &mut ev).unwrap();
        assert_eq!(assigned_to(&d), Some("op-carlo"), "{d:?}");
        let d = e.offer(&offer("c2", "consultancy"), Millis(nine as u64 - 220_000), &mut ev).unwrap();
        assert!(matches!(d, Decision::Queued { .. }), "op-anna is kept for her appointment: {d:?}");
        // At the slot the appointment goes to op-anna, although c2 has waited longer.
        ev.clear();
        drive(&e, &book, Millis(nine as u64), &mut ev);
        assert_eq!(offered(&ev), vec![("appt-1".into(), "op-anna".into())]);
        assert_eq!(book.get("appt-1").unwrap().state, AppointmentState::Started);
        assert_clean(&e, Millis(nine as u64));
    }

    #[test]
    fn an_absent_operator_s_appointment_goes_to_another_skilled_operator() {
        let e = engine(vec![consultancy()]);
        let book = book_for(&[consultancy()]);
        let mut ev = vec![];
        let nine = 10_000_000;
        book.publish(block("op-anna", nine, nine + SLOT), 0).unwrap();
        book.publish(block("op-dario", nine, nine + SLOT), 0).unwrap();
        book.book(&booking("appt-anna", Some("op-anna"), nine), 0).unwrap();
        book.book(&booking("appt-dario", Some("op-dario"), nine), 0).unwrap();
        // op-anna never logged in; op-dario is logged in but busy with a call.
        e.login(&desk("op-dario"), t(0), &mut ev).unwrap();
        e.login(&desk("op-carlo"), t(1), &mut ev).unwrap();
        let d = e.offer(&offer("busy", "consultancy"), t(2), &mut ev).unwrap();
        assert_eq!(assigned_to(&d), Some("op-dario"));
        e.accept("op-dario", "busy", t(3), &mut ev).unwrap();
        ev.clear();
        drive(&e, &book, Millis(nine as u64), &mut ev);
        // The absent operator's appointment goes to op-carlo at once; op-dario's waits for them.
        let got = offered(&ev);
        assert!(got.contains(&("appt-anna".into(), "op-carlo".into())), "{got:?}");
        assert!(!got.iter().any(|(c, _)| c == "appt-dario"), "{got:?}");
        // op-carlo finishes; op-dario is still busy past the grace: op-carlo takes it.
        e.accept("op-carlo", "appt-anna", Millis(nine as u64 + 1_000), &mut ev).unwrap();
        e.complete("op-carlo", "appt-anna", 0, Millis(nine as u64 + 60_000), &mut ev).unwrap();
        ev.clear();
        e.tick(Millis(nine as u64 + 100_000), &mut ev);
        assert!(offered(&ev).is_empty(), "within the grace only op-dario may take it");
        e.tick(Millis(nine as u64 + 120_000), &mut ev);
        assert_eq!(offered(&ev), vec![("appt-dario".into(), "op-carlo".into())]);
        assert_clean(&e, Millis(nine as u64 + 120_000));
    }
}

mod runtime_control {
    use super::*;
    use smista_core::config::{SkillRequirement, Strategy};
    use smista_core::snapshot::QueueUpdate;
    use smista_core::{Channel, OperatorUpdate, Skill};

    #[test]
    fn an_operator_s_skills_channels_and_group_change_without_a_logout() {
        let e =
            engine(vec![QueueConfig::new("pensions", &[("pensions", 5)]), QueueConfig::new("naspi", &[("naspi", 5)])]);
        let mut ev = vec![];
        e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
        let mut away = login("op2", "internal", &[("naspi", 5)]);
        away.paused = Some("training".into());
        e.login(&away, t(0), &mut ev).unwrap();
        let d = e.offer(&offer("n1", "naspi"), t(10), &mut ev).unwrap();
        assert!(matches!(d, Decision::Queued { .. }));
        // Given the naspi skill, op1 is offered the waiting naspi call at once.
        ev.clear();
        let upd = OperatorUpdate {
            operator_id: "op1".into(),
            skills: Some(vec![Skill { name: "pensions".into(), level: 5 }, Skill { name: "naspi".into(), level: 6 }]),
            ..OperatorUpdate::default()
        };
        let queues = e.update_operator(&upd, t(20), &mut ev).unwrap();
        assert_eq!(queues.iter().map(|q| &**q).collect::<Vec<_>>(), ["pensions", "naspi"]);
        assert_eq!(offered(&ev), vec![("n1".into(), "op1".into())]);
        // The group cannot change while a contact is in hand.
        let regroup =
            OperatorUpdate { operator_id: "op1".into(), group: Some("supplier-a".into()), ..OperatorUpdate::default() };
        assert!(matches!(e.update_operator(&regroup, t(21), &mut ev), Err(smista_core::RoutingError::WrongState(_))));
        e.accept("op1", "n1", t(22), &mut ev).unwrap();
        e.complete("op1", "n1", 0, t(30), &mut ev).unwrap();
        e.update_operator(&regroup, t(31), &mut ev).unwrap();
        assert_eq!(e.snapshot(t(31)).operators[0].group, "supplier-a");
        // Two chats at once instead of voice: two chat contacts are offered together.
        let chats = OperatorUpdate {
            operator_id: "op1".into(),
            channels: Some(vec![(Channel::Chat, 2)]),
            ..OperatorUpdate::default()
        };
        e.update_operator(&chats, t(32), &mut ev).unwrap();
        ev.clear();
        let chat = |id: &str| smista_core::OfferRequest { channel: Channel::Chat, ..offer(id, "pensions") };
        assert_eq!(assigned_to(&e.offer(&chat("chat-1"), t(40), &mut ev).unwrap()), Some("op1"));
        assert_eq!(assigned_to(&e.offer(&chat("chat-2"), t(41), &mut ev).unwrap()), Some("op1"));
        assert!(matches!(e.offer(&offer("voice", "pensions"), t(42), &mut ev).unwrap(), Decision::Queued { .. }));
        // Bad input and unknown operators are refused, changing nothing.
        let bad = OperatorUpdate {
            operator_id: "op1".into(),
            skills: Some(vec![Skill { name: "pensions".into(), level: 11 }]),
            ..OperatorUpdate::default()
        };
        assert!(matches!(
            e.update_operator(&bad, t(43), &mut ev),
            Err(smista_core::RoutingError::InvalidArgument { .. })
        ));
        let ghost = OperatorUpdate { operator_id: "nobody".into(), ..OperatorUpdate::default() };
        assert!(matches!(
            e.update_operator(&ghost, t(43), &mut ev),
            Err(smista_core::RoutingError::UnknownOperator(_))
        ));
        assert_clean(&e, t(43));
    }

    #[test]
    fn queue_priority_skills_strategy_and_hours_change_at_run_time() {
        let e = rome_engine(vec![
            QueueConfig::new("pensions", &[("pensions", 5)]),
            QueueConfig::new("naspi", &[("naspi", 5)]),
        ]);
        let mut ev = vec![];
        let now = rome(2026, 12, 2, 10, 0);
        e.login(&login("op1", "internal", &[("pensions", 5), ("naspi", 5)]), now, &mut ev).unwrap();
        e.offer(&offer("busy", "pensions"), now, &mut ev).unwrap();
        e.accept("op1", "busy", now, &mut ev).unwrap();
        e.offer(&offer("p1", "pensions"), now.plus(1_000), &mut ev).unwrap();
        e.offer(&offer("n1", "naspi"), now.plus(2_000), &mut ev).unwrap();
        // naspi's priority goes up: its caller is answered first, and the pensions order holds.
        e.update_queue("naspi", &QueueUpdate { priority: Some(10), ..QueueUpdate::default() }).unwrap();
        ev.clear();
        e.complete("op1", "busy", 0, now.plus(3_000), &mut ev).unwrap();
        assert_eq!(offered(&ev), vec![("n1".into(), "op1".into())]);
        // pensions now needs level 7: op1 no longer serves it (p1 waits), and the strategy
        // and hours change too.
        let upd = QueueUpdate {
            skills: Some(vec![SkillRequirement { skill: "pensions".into(), min_level: 7 }]),
            strategy: Some(Strategy::MostSkilled),
            hours: Some(Some(HoursConfig { weekly: vec!["mon-fri 08:00-09:00".into()], ..HoursConfig::default() })),
            ..QueueUpdate::default()
        };
        e.update_queue("pensions", &upd).unwrap();
        e.accept("op1", "n1", now.plus(3_001), &mut ev).unwrap();
        ev.clear();
        e.complete("op1", "n1", 0, now.plus(4_000), &mut ev).unwrap();
        assert!(offered(&ev).is_empty(), "op1's level is below the new minimum: {ev:?}");
        let d = e.offer(&offer("late", "pensions"), now.plus(5_000), &mut ev).unwrap();
        assert!(matches!(d, Decision::Diverted { reason: DivertReason::Closed, .. }), "{d:?}");
        // Bad hours are refused with the entry named, changing nothing.
        let bad = QueueUpdate {
            hours: Some(Some(HoursConfig { weekly: vec!["mon 9-17".into()], ..HoursConfig::default() })),
            ..QueueUpdate::default()
        };
        let err = e.update_queue("naspi", &bad).unwrap_err();
        assert!(err.to_string().contains("`9` is not a time"), "{err}");
        e.update_queue("pensions", &QueueUpdate { hours: Some(None), ..QueueUpdate::default() }).unwrap();
        // An expansion step of two levels after one second lets op1 (level 5) serve pensions
        // again; an overflow to naspi must name another configured queue.
        let bad = QueueUpdate { overflow: Some(vec!["pensions".into()]), ..QueueUpdate::default() };
        assert!(e.update_queue("pensions", &bad).is_err());
        let bad = QueueUpdate { overflow: Some(vec!["nope".into()]), ..QueueUpdate::default() };
        assert!(e.update_queue("pensions", &bad).is_err());
        let steps = vec![
            smista_core::config::ExpansionStep { after_ms: 5_000, level_drop: 1 },
            smista_core::config::ExpansionStep { after_ms: 1_000, level_drop: 2 },
        ];
        let bad = QueueUpdate { expansion: Some(steps), ..QueueUpdate::default() };
        assert!(e.update_queue("pensions", &bad).is_err(), "steps must increase");
        let upd = QueueUpdate {
            expansion: Some(vec![smista_core::config::ExpansionStep { after_ms: 1_000, level_drop: 2 }]),
            overflow: Some(vec!["naspi".into()]),
            ..QueueUpdate::default()
        };
        e.update_queue("pensions", &upd).unwrap();
        ev.clear();
        e.tick(now.plus(5_500), &mut ev);
        assert_eq!(offered(&ev), vec![("p1".into(), "op1".into())], "expanded to op1's level after a second");
        // Open again (no hours), and op1 serves pensions through the expansion: queued.
        let d = e.offer(&offer("later", "pensions"), now.plus(6_000), &mut ev).unwrap();
        assert!(matches!(d, Decision::Queued { .. }), "{d:?}");
        assert_clean(&e, now.plus(6_000));
    }
}

/// A video appointment whose consultant is logged in for voice only (and nobody on the line can
/// take video) cannot wait for an operator who will never come: it is diverted NO_OPERATORS at
/// its slot, so the platform can rebook it, instead of waiting at the head of the line forever.
/// With a video-capable consultant it is offered at once.
#[test]
fn a_video_appointment_nobody_can_take_is_diverted_not_left_waiting() {
    let q = QueueConfig::new("consultancy", &[("pensions", 7)]);
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("cons-1", "internal", &[("pensions", 8)]), t(0), &mut ev).unwrap();
    let mut req = offer("appt-1", "consultancy");
    req.channel = Channel::Video;
    let d = e.offer_appointment(&req, "cons-1", 120_000, t(1_000), &mut ev).unwrap();
    assert!(matches!(d, Decision::Diverted { reason: DivertReason::NoOperators, .. }), "voice-only consultant: {d:?}");
    // Logged in for video too, the consultant gets the next one.
    e.logout("cons-1", false, t(2_000), &mut ev).unwrap();
    let mut l = login("cons-1", "internal", &[("pensions", 8)]);
    l.channels = vec![(Channel::Voice, 1), (Channel::Video, 1)];
    e.login(&l, t(3_000), &mut ev).unwrap();
    req.contact_id = "appt-2".into();
    let d = e.offer_appointment(&req, "cons-1", 120_000, t(4_000), &mut ev).unwrap();
    assert_eq!(assigned_to(&d), Some("cons-1"));
}
