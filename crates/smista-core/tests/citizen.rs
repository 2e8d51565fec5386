//! The citizen's side of routing: opening hours and holidays, segments, callbacks and resumed
//! places, appointments. One scenario per rule a citizen or the centre relies on.

mod common;

use std::sync::Arc;

use common::*;
use smista_core::calendar::{days_from_civil, to_unix, CentralEurope};
use smista_core::config::{QueueConfig, SegmentRule};
use smista_core::hours::HoursConfig;
use smista_core::{Decision, DivertReason, Engine, Millis, Segment};

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
