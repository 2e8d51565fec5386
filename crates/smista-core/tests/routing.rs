//! Behaviour of the routing engine that contact-centre users rely on, scenario by scenario.

mod common;

use std::sync::Arc;

use common::*;
use smista_core::budget::CountingGate;
use smista_core::config::{ExpansionStep, QueueConfig, Strategy};
use smista_core::{
    Channel, Decision, DivertReason, Event, Fallback, OperatorStatus, Outcome, RequestedState, RoutingError,
};

fn pensions() -> QueueConfig {
    QueueConfig::new("pensions", &[("pensions", 5)])
}

#[test]
fn longest_idle_operator_gets_the_contact_and_the_next_waits() {
    let e = engine(vec![pensions()]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.login(&login("op2", "internal", &[("pensions", 5)]), t(10), &mut ev).unwrap();
    let d = e.offer(&offer("c1", "pensions"), t(100), &mut ev).unwrap();
    assert_eq!(assigned_to(&d), Some("op1"), "op1 has been idle longest");
    let d = e.offer(&offer("c2", "pensions"), t(110), &mut ev).unwrap();
    assert_eq!(assigned_to(&d), Some("op2"));
    let d = e.offer(&offer("c3", "pensions"), t(120), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { position: 1, .. }), "{d:?}");
    let d = e.offer(&offer("c4", "pensions"), t(130), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { position: 2, .. }), "{d:?}");
    assert_clean(&e, t(130));

    e.accept("op1", "c1", t(200), &mut ev).unwrap();
    ev.clear();
    let c = e.complete("op1", "c1", 0, t(60_200), &mut ev).unwrap();
    assert_eq!(c.handle_ms, 60_000);
    assert_eq!(offered(&ev), vec![("c3".into(), "op1".into())], "the oldest waiting contact goes next");
    assert_clean(&e, t(60_200));
}

#[test]
fn no_offer_during_wrap_up_or_pause() {
    let mut q = pensions();
    q.wrap_up_ms = 30_000;
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("c1", "pensions"), t(0), &mut ev).unwrap();
    e.accept("op1", "c1", t(1_000), &mut ev).unwrap();
    let c = e.complete("op1", "c1", 0, t(10_000), &mut ev).unwrap();
    assert_eq!(c.wrap_up_ms, 30_000);
    ev.clear();
    let d = e.offer(&offer("c2", "pensions"), t(11_000), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { .. }), "offered during wrap-up: {d:?}");
    e.tick(t(39_999), &mut ev);
    assert!(offered(&ev).is_empty(), "offered before wrap-up ended");
    e.tick(t(40_000), &mut ev);
    assert_eq!(offered(&ev), vec![("c2".into(), "op1".into())]);
    e.accept("op1", "c2", t(40_100), &mut ev).unwrap();
    e.complete("op1", "c2", 1, t(41_000), &mut ev).unwrap();

    // Paused: nothing is offered until available again.
    e.tick(t(42_000), &mut ev);
    assert_eq!(
        e.set_state("op1", &RequestedState::Paused("break".into()), t(42_000), &mut ev).unwrap(),
        OperatorStatus::Paused
    );
    ev.clear();
    let d = e.offer(&offer("c3", "pensions"), t(43_000), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { .. }));
    e.tick(t(100_000), &mut ev);
    assert!(offered(&ev).is_empty(), "paused operator got an offer");
    e.set_state("op1", &RequestedState::Available, t(100_001), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("c3".into(), "op1".into())]);
    assert_clean(&e, t(100_001));
}

#[test]
fn an_operator_logging_in_paused_gets_nothing_until_available() {
    let e = engine(vec![pensions()]);
    let mut ev = vec![];
    e.login(&login("op0", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.set_state("op0", &RequestedState::Paused("lunch".into()), t(1), &mut ev).unwrap();
    let d = e.offer(&offer("c2", "pensions"), t(2), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { .. }), "{d:?}");
    ev.clear();
    let mut req = login("op1", "internal", &[("pensions", 5)]);
    req.paused = Some("call from before a restart".into());
    e.login(&req, t(10), &mut ev).unwrap();
    assert!(offered(&ev).is_empty(), "offered at a paused login: {ev:?}");
    e.tick(t(20), &mut ev);
    assert!(offered(&ev).is_empty(), "offered while paused");
    let snap = e.snapshot(t(20));
    let op1 = snap.operators.iter().find(|o| o.id == "op1").unwrap();
    assert_eq!((op1.status, op1.pause_reason.as_str()), (OperatorStatus::Paused, "call from before a restart"));
    e.set_state("op1", &RequestedState::Available, t(30), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("c2".into(), "op1".into())]);
    assert_clean(&e, t(30));
}

#[test]
fn unanswered_offer_returns_to_head_and_pauses_the_operator() {
    let mut q = pensions();
    q.offer_timeout_ms = 10_000;
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("c1", "pensions"), t(0), &mut ev).unwrap();
    e.offer(&offer("c2", "pensions"), t(5), &mut ev).unwrap();
    e.login(&login("op2", "internal", &[("pensions", 5)]), t(1_000), &mut ev).unwrap();
    // op2 took c2; c1 is with op1, who does not answer.
    ev.clear();
    e.tick(t(10_000), &mut ev);
    assert!(ev.iter().any(
        |x| matches!(x, Event::OfferTimedOut { contact, operator, .. } if &**contact == "c1" && &**operator == "op1")
    ));
    let snap = e.snapshot(t(10_000));
    let op1 = snap.operators.iter().find(|o| o.id == "op1").unwrap();
    assert_eq!(op1.status, OperatorStatus::Paused);
    assert_eq!(op1.pause_reason, "no answer");
    assert_eq!(
        e.accept("op1", "c1", t(10_001), &mut ev).unwrap_err(),
        RoutingError::WrongState("contact `c1` is not offered to operator `op1`".into())
    );
    // c1 waits at the head: a new contact does not overtake it.
    e.offer(&offer("c3", "pensions"), t(10_002), &mut ev).unwrap();
    e.accept("op2", "c2", t(10_003), &mut ev).unwrap();
    ev.clear();
    e.complete("op2", "c2", 0, t(20_000), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("c1".into(), "op2".into())]);
    assert_clean(&e, t(20_000));
}

#[test]
fn declined_contact_goes_to_someone_else_never_back_to_the_decliner() {
    let e = engine(vec![pensions()]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    let d = e.offer(&offer("c1", "pensions"), t(10), &mut ev).unwrap();
    assert_eq!(assigned_to(&d), Some("op1"));
    ev.clear();
    e.decline("op1", "c1", t(20), &mut ev).unwrap();
    assert!(offered(&ev).is_empty(), "re-offered to the operator who declined");
    e.login(&login("op2", "internal", &[("pensions", 5)]), t(30), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("c1".into(), "op2".into())]);
    assert_clean(&e, t(30));
}

#[test]
fn one_voice_call_at_a_time_and_voice_blocks_chat() {
    let e = engine(vec![QueueConfig::new("chat", &[]), QueueConfig::new("voice", &[])]);
    let mut ev = vec![];
    let mut l = login("op1", "internal", &[]);
    l.channels = vec![(Channel::Voice, 1), (Channel::Chat, 3)];
    e.login(&l, t(0), &mut ev).unwrap();
    let d = e.offer(&offer("v1", "voice"), t(1), &mut ev).unwrap();
    assert_eq!(assigned_to(&d), Some("op1"));
    assert!(matches!(e.offer(&offer("v2", "voice"), t(2), &mut ev).unwrap(), Decision::Queued { .. }));
    let mut chat = offer("ch1", "chat");
    chat.channel = Channel::Chat;
    assert!(matches!(e.offer(&chat, t(3), &mut ev).unwrap(), Decision::Queued { .. }), "chat beside a voice call");
    e.accept("op1", "v1", t(4), &mut ev).unwrap();
    ev.clear();
    e.complete("op1", "v1", 0, t(5), &mut ev).unwrap();
    // Freed: the older voice contact v2 (arrived before ch1) wins; the chat must keep waiting.
    assert_eq!(offered(&ev), vec![("v2".into(), "op1".into())]);
    e.accept("op1", "v2", t(6), &mut ev).unwrap();
    ev.clear();
    e.complete("op1", "v2", 0, t(7), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("ch1".into(), "op1".into())]);
    for i in 2..=4 {
        let mut c = offer(&format!("ch{i}"), "chat");
        c.channel = Channel::Chat;
        let d = e.offer(&c, t(8 + i), &mut ev).unwrap();
        if i <= 3 {
            assert_eq!(assigned_to(&d), Some("op1"), "chat {i} within capacity 3");
        } else {
            assert!(matches!(d, Decision::Queued { .. }), "fourth chat beyond capacity");
        }
    }
    assert!(
        matches!(e.offer(&offer("v3", "voice"), t(20), &mut ev).unwrap(), Decision::Queued { .. }),
        "voice while chatting"
    );
    assert_clean(&e, t(20));
}

#[test]
fn higher_priority_first_and_aging_lets_old_contacts_through() {
    let mut q = pensions();
    q.aging_ms_per_level = 1_000; // one priority level per second of waiting
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.set_state("op1", &RequestedState::Paused("briefing".into()), t(0), &mut ev).unwrap();
    let mut low = offer("low", "pensions");
    low.priority = 0;
    e.offer(&low, t(0), &mut ev).unwrap();
    let mut high = offer("high", "pensions");
    high.priority = 5;
    e.offer(&high, t(2_000), &mut ev).unwrap(); // 5 levels vs 2 levels of aging: high first
    let mut high2 = offer("high2", "pensions");
    high2.priority = 5;
    e.offer(&high2, t(9_000), &mut ev).unwrap(); // low has aged 9 levels by now: low before high2
    e.set_state("op1", &RequestedState::Available, t(9_500), &mut ev).unwrap();
    let mut order = offered(&ev);
    for _ in 0..2 {
        let (c, _) = order.last().unwrap().clone();
        e.accept("op1", &c, t(9_600), &mut ev).unwrap();
        ev.clear();
        e.complete("op1", &c, 0, t(9_700), &mut ev).unwrap();
        order.extend(offered(&ev));
    }
    let order: Vec<_> = order.into_iter().map(|(c, _)| c).collect();
    assert_eq!(order, vec!["high", "low", "high2"]);
}

#[test]
fn max_wait_overflows_then_diverts_with_the_fallback() {
    let mut a = QueueConfig::new("naspi", &[("naspi", 5)]);
    a.max_wait_ms = 60_000;
    a.overflow = vec!["general".into()];
    let mut g = QueueConfig::new("general", &[("general", 1)]);
    g.max_wait_ms = 30_000;
    g.fallback = Fallback::CallbackBooking;
    let e = engine(vec![a, g]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("naspi", 5), ("general", 5)]), t(0), &mut ev).unwrap();
    e.set_state("op1", &RequestedState::Paused("meeting".into()), t(0), &mut ev).unwrap();
    assert!(matches!(e.offer(&offer("c1", "naspi"), t(0), &mut ev).unwrap(), Decision::Queued { .. }));
    ev.clear();
    e.tick(t(59_999), &mut ev);
    assert!(ev.is_empty());
    e.tick(t(60_000), &mut ev);
    assert!(ev
        .iter()
        .any(|x| matches!(x, Event::Overflowed { from, to, .. } if &**from == "naspi" && &**to == "general")));
    ev.clear();
    e.tick(t(90_000), &mut ev);
    assert!(
        ev.iter().any(|x| matches!(
            x,
            Event::Diverted { reason: DivertReason::MaxWait, fallback: Fallback::CallbackBooking, .. }
        )),
        "{ev:?}"
    );
    assert!(ev.iter().any(|x| matches!(x, Event::Finished { outcome: Outcome::Diverted, .. })));
    assert_eq!(e.live_contacts(), 0);
    assert_clean(&e, t(90_000));
}

#[test]
fn full_closed_and_unstaffed_queues_divert_with_a_precise_reason() {
    let mut q = pensions();
    q.max_length = 1;
    q.fallback = Fallback::Announcement;
    let e = engine(vec![q, QueueConfig::new("isee", &[("isee", 1)])]);
    let mut ev = vec![];
    let d = e.offer(&offer("c0", "isee"), t(0), &mut ev).unwrap();
    assert!(matches!(d, Decision::Diverted { reason: DivertReason::NoOperators, .. }), "{d:?}");
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.set_state("op1", &RequestedState::Paused("training".into()), t(0), &mut ev).unwrap();
    assert!(matches!(e.offer(&offer("c1", "pensions"), t(1), &mut ev).unwrap(), Decision::Queued { .. }));
    let d = e.offer(&offer("c2", "pensions"), t(2), &mut ev).unwrap();
    assert_eq!(
        d,
        Decision::Diverted {
            reason: DivertReason::QueueFull,
            fallback: Fallback::Announcement,
            queue: "pensions".into(),
            reopens: None,
        }
    );
    e.set_queue_open("pensions", false).unwrap();
    let d = e.offer(&offer("c3", "pensions"), t(3), &mut ev).unwrap();
    assert!(matches!(d, Decision::Diverted { reason: DivertReason::Closed, .. }));
    // Repeating a diverted offer returns the same decision.
    assert_eq!(
        e.offer(&offer("c2", "pensions"), t(4), &mut ev).unwrap(),
        Decision::Diverted {
            reason: DivertReason::QueueFull,
            fallback: Fallback::Announcement,
            queue: "pensions".into(),
            reopens: None,
        }
    );
    assert_clean(&e, t(4));
}

#[test]
fn skill_expansion_accepts_lower_levels_after_waiting() {
    let mut q = QueueConfig::new("disability", &[("disability", 8)]);
    q.expansion = vec![ExpansionStep { after_ms: 30_000, level_drop: 3 }];
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("junior", "internal", &[("disability", 5)]), t(0), &mut ev).unwrap();
    assert!(matches!(e.offer(&offer("c1", "disability"), t(0), &mut ev).unwrap(), Decision::Queued { .. }));
    e.tick(t(29_999), &mut ev);
    assert!(offered(&ev).is_empty());
    e.tick(t(30_000), &mut ev);
    assert_eq!(offered(&ev), vec![("c1".into(), "junior".into())]);
}

#[test]
fn language_wish_binds_until_the_first_expansion_step() {
    let mut q = pensions();
    q.expansion = vec![ExpansionStep { after_ms: 20_000, level_drop: 0 }];
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("it", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    let mut c = offer("c1", "pensions");
    c.language = "de".into();
    assert!(matches!(e.offer(&c, t(0), &mut ev).unwrap(), Decision::Queued { .. }));
    e.login(&login("de", "internal", &[("pensions", 5), ("de", 3)]), t(1_000), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("c1".into(), "de".into())]);
    e.accept("de", "c1", t(1_500), &mut ev).unwrap();
    let mut c2 = offer("c2", "pensions");
    c2.language = "de".into();
    e.offer(&c2, t(2_000), &mut ev).unwrap();
    ev.clear();
    e.tick(t(22_000), &mut ev);
    assert_eq!(offered(&ev), vec![("c2".into(), "it".into())]);
}

/// Fewest contacts (Asterisk's `fewestcalls`) and least talk time (FreeSWITCH's
/// `agent-with-least-talk-time`) share a shift's work out evenly: the operator free for the
/// longest time is passed over for one who has completed fewer contacts, or talked less, since
/// logging in; a new login starts from zero.
#[test]
fn fewest_contacts_and_least_talk_time_share_the_shift_out() {
    // a takes its calls (talk times in ms) on a line only it serves, then b on a line only b
    // serves: a is then free the longest. Who gets the next call on the line both serve?
    let next = |strategy: Strategy, a_calls: &[u64], b_calls: &[u64]| -> String {
        let mut q = pensions();
        q.strategy = strategy;
        let e = engine(vec![q, QueueConfig::new("line-a", &[("sa", 3)]), QueueConfig::new("line-b", &[("sb", 3)])]);
        let mut ev = vec![];
        e.login(&login("a", "internal", &[("pensions", 5), ("sa", 5)]), t(0), &mut ev).unwrap();
        e.login(&login("b", "internal", &[("pensions", 5), ("sb", 5)]), t(0), &mut ev).unwrap();
        let mut now = 10;
        for (op, talks) in [("a", a_calls), ("b", b_calls)] {
            for (i, talk) in talks.iter().enumerate() {
                let id = format!("{op}-{i}");
                let d = e.offer(&offer(&id, &format!("line-{op}")), t(now), &mut ev).unwrap();
                assert_eq!(assigned_to(&d), Some(op), "{strategy:?} {id}");
                e.accept(op, &id, t(now), &mut ev).unwrap();
                now += talk;
                e.complete(op, &id, 0, t(now), &mut ev).unwrap();
                now += 10;
            }
        }
        let d = e.offer(&offer("next", "pensions"), t(now + 1_000), &mut ev).unwrap();
        assigned_to(&d).expect("assigned").to_owned()
    };
    let (short_short, long) = (&[2_000, 2_000][..], &[60_000][..]);
    // a: two short calls, b: one long one.
    assert_eq!(next(Strategy::LongestIdle, short_short, long), "a");
    assert_eq!(next(Strategy::FewestContacts, short_short, long), "b", "b completed fewer");
    assert_eq!(next(Strategy::LeastTalkTime, short_short, long), "a", "a talked less");
    // a: one long call, b: two short ones.
    assert_eq!(next(Strategy::LongestIdle, long, short_short), "a");
    assert_eq!(next(Strategy::FewestContacts, long, short_short), "a", "a completed fewer");
    assert_eq!(next(Strategy::LeastTalkTime, long, short_short), "b", "b talked less");
    // A new login starts the count again.
    let mut q = pensions();
    q.strategy = Strategy::FewestContacts;
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("a", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    for (i, at) in [10u64, 20, 30].into_iter().enumerate() {
        let id = format!("w{i}");
        e.offer(&offer(&id, "pensions"), t(at), &mut ev).unwrap();
        e.accept("a", &id, t(at), &mut ev).unwrap();
        e.complete("a", &id, 0, t(at + 1), &mut ev).unwrap();
    }
    e.login(&login("b", "internal", &[("pensions", 5)]), t(40), &mut ev).unwrap();
    e.offer(&offer("v0", "pensions"), t(50), &mut ev).unwrap();
    e.accept("b", "v0", t(50), &mut ev).unwrap();
    e.complete("b", "v0", 0, t(51), &mut ev).unwrap();
    e.logout("a", false, t(60), &mut ev).unwrap();
    e.login(&login("a", "internal", &[("pensions", 5)]), t(70), &mut ev).unwrap();
    let d = e.offer(&offer("v1", "pensions"), t(80), &mut ev).unwrap();
    assert_eq!(assigned_to(&d), Some("a"), "a logged in again: 0 contacts against b's 1");
}

#[test]
fn strategies_pick_as_documented() {
    for (strategy, expect) in
        [(Strategy::LongestIdle, "a"), (Strategy::MostSkilled, "c"), (Strategy::LeastOccupied, "a")]
    {
        let mut q = pensions();
        q.strategy = strategy;
        let e = engine(vec![q]);
        let mut ev = vec![];
        e.login(&login("a", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
        e.login(&login("b", "internal", &[("pensions", 7)]), t(1), &mut ev).unwrap();
        e.login(&login("c", "internal", &[("pensions", 9)]), t(2), &mut ev).unwrap();
        let d = e.offer(&offer("x", "pensions"), t(10), &mut ev).unwrap();
        assert_eq!(assigned_to(&d), Some(expect), "{strategy:?}");
    }
    let mut q = pensions();
    q.strategy = Strategy::RoundRobin;
    let e = engine(vec![q]);
    let mut ev = vec![];
    for op in ["a", "b", "c"] {
        e.login(&login(op, "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    }
    let mut seen = vec![];
    for i in 0..6 {
        let id = format!("x{i}");
        let d = e.offer(&offer(&id, "pensions"), t(10 + i), &mut ev).unwrap();
        let op = assigned_to(&d).unwrap().to_owned();
        e.accept(&op, &id, t(10 + i), &mut ev).unwrap();
        e.complete(&op, &id, 0, t(10 + i), &mut ev).unwrap();
        seen.push(op);
    }
    assert_eq!(seen, vec!["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn internal_staff_first_when_the_queue_prefers_unbudgeted() {
    let mut q = pensions();
    q.prefer_unbudgeted = true;
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("sup", "supplier-a", &[("pensions", 9)]), t(0), &mut ev).unwrap();
    e.login(&login("int", "internal", &[("pensions", 5)]), t(100), &mut ev).unwrap();
    let d = e.offer(&offer("c1", "pensions"), t(200), &mut ev).unwrap();
    assert_eq!(assigned_to(&d), Some("int"), "internal staff before the longer-idle supplier");
    let d = e.offer(&offer("c2", "pensions"), t(300), &mut ev).unwrap();
    assert_eq!(assigned_to(&d), Some("sup"));
}

#[test]
fn extra_budget_contacts_never_reach_supplier_operators() {
    let gate = Arc::new(CountingGate::with_limits(&[("contract-a", 1)]));
    let mut q = pensions();
    q.budget = Some("contract-a".into());
    q.fallback = Fallback::CallbackBooking;
    let e = engine_with_gate(vec![q], gate.clone());
    let mut ev = vec![];
    e.login(&login("sup1", "supplier-a", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.login(&login("sup2", "supplier-a", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    let d = e.offer(&offer("c1", "pensions"), t(1), &mut ev).unwrap();
    assert!(assigned_to(&d).is_some());
    assert!(gate.holds("contract-a", "c1"));
    let d = e.offer(&offer("c2", "pensions"), t(2), &mut ev).unwrap();
    assert_eq!(
        d,
        Decision::Diverted {
            reason: DivertReason::ExtraBudget,
            fallback: Fallback::CallbackBooking,
            queue: "pensions".into(),
            reopens: None,
        }
    );

    // With internal staff logged in, an unfunded contact waits for them instead.
    e.login(&login("int", "internal", &[("pensions", 5)]), t(3), &mut ev).unwrap();
    e.set_state("int", &RequestedState::Paused("lunch".into()), t(3), &mut ev).unwrap();
    let d = e.offer(&offer("c3", "pensions"), t(4), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { .. }), "{d:?}");
    assert!(!gate.holds("contract-a", "c3"));
    ev.clear();
    e.tick(t(5), &mut ev);
    assert!(offered(&ev).is_empty(), "unfunded contact offered to a supplier operator: {ev:?}");
    e.set_state("int", &RequestedState::Available, t(6), &mut ev).unwrap();
    assert_eq!(offered(&ev), vec![("c3".into(), "int".into())]);

    // Completion settles c1; c3 handled by internal staff costs the budget nothing.
    let op1 = if e.accept("sup1", "c1", t(7), &mut ev).is_ok() {
        "sup1"
    } else {
        e.accept("sup2", "c1", t(7), &mut ev).unwrap();
        "sup2"
    };
    e.complete(op1, "c1", 0, t(100), &mut ev).unwrap();
    e.accept("int", "c3", t(101), &mut ev).unwrap();
    e.complete("int", "c3", 0, t(200), &mut ev).unwrap();
    assert_eq!(gate.settled(), 1);
    assert_eq!(gate.held(), 0);
    assert!(gate.violations().is_empty(), "{:?}", gate.violations());
    assert_clean(&e, t(200));
}

#[test]
fn bad_input_is_a_typed_error_never_a_panic() {
    let e = engine(vec![pensions()]);
    let mut ev = vec![];
    assert_eq!(e.offer(&offer("c1", "nope"), t(0), &mut ev).unwrap_err(), RoutingError::UnknownQueue("nope".into()));
    assert!(matches!(
        e.offer(&offer("", "pensions"), t(0), &mut ev).unwrap_err(),
        RoutingError::InvalidArgument { field: "contact_id", .. }
    ));
    let mut p = offer("c1", "pensions");
    p.priority = 101;
    assert!(matches!(e.offer(&p, t(0), &mut ev).unwrap_err(), RoutingError::InvalidArgument { field: "priority", .. }));
    assert!(matches!(
        e.offer(&offer(&"x".repeat(129), "pensions"), t(0), &mut ev).unwrap_err(),
        RoutingError::InvalidArgument { .. }
    ));
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    // The same desktop retrying is fine; another desktop is refused.
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(1), &mut ev).unwrap();
    let mut other = login("op1", "internal", &[("pensions", 5)]);
    other.session_id = "another-desk".into();
    assert_eq!(e.login(&other, t(2), &mut ev).unwrap_err(), RoutingError::AlreadyLoggedIn("op1".into()));
    assert_eq!(
        e.login(&login("op2", "ghost", &[]), t(0), &mut ev).unwrap_err(),
        RoutingError::UnknownGroup("ghost".into())
    );
    assert!(matches!(
        e.login(&login("op3", "internal", &[("pensions", 11)]), t(0), &mut ev).unwrap_err(),
        RoutingError::InvalidArgument { field: "skills.level", .. }
    ));
    let mut l = login("op4", "internal", &[]);
    l.channels = vec![(Channel::Voice, 2)];
    assert!(matches!(e.login(&l, t(0), &mut ev).unwrap_err(), RoutingError::InvalidArgument { .. }));
    assert_eq!(e.accept("ghost", "c1", t(0), &mut ev).unwrap_err(), RoutingError::UnknownOperator("ghost".into()));
    assert_eq!(e.accept("op1", "none", t(0), &mut ev).unwrap_err(), RoutingError::UnknownContact("none".into()));
    assert_eq!(e.cancel("none", t(0), &mut ev).unwrap_err(), RoutingError::UnknownContact("none".into()));
    assert!(matches!(e.complete("op1", "none", 0, t(0), &mut ev).unwrap_err(), RoutingError::UnknownContact(_)));
}

#[test]
fn repeated_requests_are_idempotent() {
    let e = engine(vec![pensions()]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    let d1 = e.offer(&offer("c1", "pensions"), t(1), &mut ev).unwrap();
    let d2 = e.offer(&offer("c1", "pensions"), t(2), &mut ev).unwrap();
    assert_eq!(d1, d2);
    assert_eq!(offered(&ev).len(), 1, "routed twice");
    e.accept("op1", "c1", t(3), &mut ev).unwrap();
    e.accept("op1", "c1", t(4), &mut ev).unwrap();
    let c1 = e.complete("op1", "c1", 0, t(10), &mut ev).unwrap();
    let c2 = e.complete("op1", "c1", 0, t(20), &mut ev).unwrap();
    assert_eq!(c1, c2);
    let finished = ev.iter().filter(|x| matches!(x, Event::Finished { .. })).count();
    assert_eq!(finished, 1);
    assert!(matches!(e.offer(&offer("c1", "pensions"), t(30), &mut ev).unwrap_err(), RoutingError::ContactFinished(_)));
    assert_eq!(e.cancel("c1", t(31), &mut ev).unwrap(), Outcome::Completed);
}

#[test]
fn logout_returns_pending_offers_and_refuses_with_calls_in_service() {
    let e = engine(vec![pensions()]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("c1", "pensions"), t(1), &mut ev).unwrap();
    e.logout("op1", false, t(2), &mut ev).unwrap();
    assert!(matches!(e.offer(&offer("c1", "pensions"), t(3), &mut ev).unwrap(), Decision::Queued { .. }));
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(4), &mut ev).unwrap();
    e.accept("op1", "c1", t(5), &mut ev).unwrap();
    assert!(matches!(e.logout("op1", false, t(6), &mut ev).unwrap_err(), RoutingError::WrongState(_)));
    e.logout("op1", true, t(7), &mut ev).unwrap();
    assert!(ev.iter().any(|x| matches!(x, Event::Finished { outcome: Outcome::CancelledInService, .. })));
    assert_clean(&e, t(7));
}

#[test]
fn a_timed_out_offer_keeps_the_contacts_maximum_wait() {
    let mut q = pensions();
    q.max_wait_ms = 600_000;
    q.offer_timeout_ms = 15_000;
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("c1", "pensions"), t(0), &mut ev).unwrap();
    ev.clear();
    e.tick(t(15_000), &mut ev);
    assert!(ev.iter().any(|x| matches!(x, Event::OfferTimedOut { .. })));
    ev.clear();
    e.tick(t(16_000), &mut ev);
    e.tick(t(599_999), &mut ev);
    assert!(!ev.iter().any(|x| matches!(x, Event::Diverted { .. })), "diverted before its maximum wait: {ev:?}");
    e.tick(t(600_000), &mut ev);
    assert!(ev.iter().any(|x| matches!(x, Event::Diverted { reason: DivertReason::MaxWait, .. })));
    assert_clean(&e, t(600_000));
}

#[test]
fn a_closed_line_diverts_with_its_own_fallback_instead_of_overflowing() {
    let mut p = pensions();
    p.overflow = vec!["general".into()];
    p.fallback = Fallback::Announcement;
    let e = engine(vec![p, QueueConfig::new("general", &[])]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.set_queue_open("pensions", false).unwrap();
    let d = e.offer(&offer("c1", "pensions"), t(1), &mut ev).unwrap();
    assert_eq!(
        d,
        Decision::Diverted {
            reason: DivertReason::Closed,
            fallback: Fallback::Announcement,
            queue: "pensions".into(),
            reopens: None
        }
    );
    // A closed queue further down a chain is skipped.
    e.set_queue_open("pensions", true).unwrap();
    e.set_queue_open("general", false).unwrap();
    e.set_state("op1", &RequestedState::Paused("x".into()), t(2), &mut ev).unwrap();
    assert!(matches!(e.offer(&offer("c2", "pensions"), t(3), &mut ev).unwrap(), Decision::Queued { .. }));
}

#[test]
fn a_newcomer_never_jumps_a_waiting_contact_when_a_wrap_up_ends() {
    let mut q = pensions();
    q.wrap_up_ms = 10_000;
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("c0", "pensions"), t(0), &mut ev).unwrap();
    e.accept("op1", "c0", t(0), &mut ev).unwrap();
    e.complete("op1", "c0", 0, t(0), &mut ev).unwrap(); // wrap-up until 10 s
    assert!(matches!(e.offer(&offer("waiting", "pensions"), t(5_000), &mut ev).unwrap(), Decision::Queued { .. }));
    // The wrap-up has ended but no tick has run yet: the newcomer must not take the operator.
    let d = e.offer(&offer("newcomer", "pensions"), t(10_050), &mut ev).unwrap();
    assert!(matches!(d, Decision::Queued { position: 2, .. }), "newcomer jumped the queue: {d:?}");
    ev.clear();
    e.tick(t(10_100), &mut ev);
    assert_eq!(offered(&ev), vec![("waiting".into(), "op1".into())]);
}

#[test]
fn a_pause_taken_during_wrap_up_does_not_cut_the_wrap_up_short() {
    let mut q = pensions();
    q.wrap_up_ms = 5_000;
    let e = engine(vec![q]);
    let mut ev = vec![];
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.offer(&offer("c1", "pensions"), t(0), &mut ev).unwrap();
    e.accept("op1", "c1", t(0), &mut ev).unwrap();
    e.complete("op1", "c1", 0, t(100), &mut ev).unwrap(); // wrap-up until 5.1 s
    e.set_state("op1", &RequestedState::Paused("coffee".into()), t(200), &mut ev).unwrap();
    e.offer(&offer("c2", "pensions"), t(300), &mut ev).unwrap();
    ev.clear();
    let st = e.set_state("op1", &RequestedState::Available, t(400), &mut ev).unwrap();
    assert_eq!(st, OperatorStatus::WrapUp, "back to the wrap-up, not available");
    assert!(offered(&ev).is_empty(), "offered during wrap-up after a pause");
    e.tick(t(5_099), &mut ev);
    assert!(offered(&ev).is_empty());
    e.tick(t(5_100), &mut ev);
    assert_eq!(offered(&ev), vec![("c2".into(), "op1".into())]);
}

#[test]
fn slots_of_logged_out_operators_are_reused_once_all_are_taken() {
    // 64 slots (common::config). Invented ids fill them, log out, and real operators still get in.
    let e = engine(vec![pensions()]);
    let mut ev = Vec::new();
    for round in 0..5 {
        for i in 0..64 {
            let id = format!("bogus-{round}-{i}");
            e.login(&login(&id, "internal", &[("pensions", 5)]), t(round), &mut ev).expect("a free or reclaimed slot");
            e.logout(&id, false, t(round), &mut ev).expect("logout");
        }
    }
    for i in 0..64 {
        e.login(&login(&format!("op-{i}"), "internal", &[("pensions", 5)]), t(10), &mut ev).expect("real operator");
    }
    // Every slot now holds a logged-in operator: the 65th is refused, nobody is evicted.
    let err = e.login(&login("op-64", "internal", &[("pensions", 5)]), t(10), &mut ev).unwrap_err();
    assert!(matches!(err, RoutingError::OperatorCapacity(64)), "{err:?}");
    // A reclaimed id is simply unknown, and may log in again when a slot frees up.
    assert!(matches!(e.logout("bogus-0-0", false, t(11), &mut ev), Err(RoutingError::UnknownOperator(_))));
    e.logout("op-3", false, t(11), &mut ev).expect("logout");
    e.login(&login("bogus-0-0", "internal", &[("pensions", 5)]), t(12), &mut ev).expect("the freed slot");
    // The reused slot serves its new operator, and the old one's requests cannot reach it.
    let d = e.offer(&offer("c1", "pensions"), t(13), &mut ev).expect("offer");
    let to = assigned_to(&d).expect("assigned").to_owned();
    assert!(matches!(e.accept("op-3", "c1", t(14), &mut ev), Err(RoutingError::UnknownOperator(_))));
    e.accept(&to, "c1", t(14), &mut ev).expect("accept by the assignee");
    assert_clean(&e, t(15));
}

#[test]
fn a_repeated_login_must_ask_for_the_same_group_skills_and_channels() {
    let e = engine(vec![pensions()]);
    let mut ev = Vec::new();
    let first = e.login(&login("op-1", "internal", &[("pensions", 5), ("isee", 3)]), t(0), &mut ev).expect("login");
    // Same session, same request (skills in another order): idempotent.
    let again = e.login(&login("op-1", "internal", &[("isee", 3), ("pensions", 5)]), t(1), &mut ev).expect("retry");
    assert_eq!(first, again);
    // Same session, another group: refused, not half applied.
    let err = e.login(&login("op-1", "supplier-a", &[("pensions", 5), ("isee", 3)]), t(2), &mut ev).unwrap_err();
    assert!(matches!(err, RoutingError::WrongState(_)), "{err:?}");
    let err = e.login(&login("op-1", "internal", &[("pensions", 6)]), t(2), &mut ev).unwrap_err();
    assert!(matches!(err, RoutingError::WrongState(_)), "{err:?}");
    let snap = e.snapshot(t(3));
    let op = snap.operators.iter().find(|o| o.id == "op-1").expect("listed");
    assert_eq!(&*op.group, "internal");
}

/// The estimated wait a queued contact is told (issue 29, item 4): its position times the
/// queue's time per contact (handle plus wrap-up, measured) shared among the operators working
/// on it; none (0) while nobody able to serve the queue works, and no growth on a stalled queue.
#[test]
fn estimated_waits_follow_the_working_operators_and_say_nothing_when_none_work() {
    let mut q = pensions();
    q.wrap_up_ms = 10_000;
    q.default_aht_ms = 300_000;
    let e = engine(vec![q]);
    let mut ev = vec![];
    let wait = |d: &Decision| match d {
        Decision::Queued { estimated_wait_ms, .. } => *estimated_wait_ms,
        other => panic!("not queued: {other:?}"),
    };
    e.login(&login("op1", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    e.login(&login("op2", "internal", &[("pensions", 5)]), t(0), &mut ev).unwrap();
    for c in ["c1", "c2"] {
        e.offer(&offer(c, "pensions"), t(100), &mut ev).unwrap();
    }
    // Before any completion: the configured handle time and the wrap-up, shared by two.
    let d = e.offer(&offer("c3", "pensions"), t(200), &mut ev).unwrap();
    assert_eq!(wait(&d), 310_000 / 2);
    // Measured: the first completion replaces the configured guess (20 s + 10 s wrap-up).
    e.accept("op1", "c1", t(1_000), &mut ev).unwrap();
    e.complete("op1", "c1", 0, t(21_000), &mut ev).unwrap();
    // op1 is in wrap-up (working); c3 leaves for op1 at the wrap-up's end, so c4 is first.
    let d = e.offer(&offer("c4", "pensions"), t(21_000), &mut ev).unwrap();
    assert_eq!(wait(&d), 2 * 30_000 / 2, "position 2 (c3 ahead), 30 s per contact, two operators");
    // A stalled queue: an hour on, nothing moved, the estimate does not grow with the stall.
    e.tick(t(21_500), &mut ev);
    let d = e.offer(&offer("c5", "pensions"), t(3_621_000), &mut ev).unwrap();
    let Decision::Queued { position, .. } = d else { panic!("{d:?}") };
    assert_eq!(wait(&d), u64::from(position) * 30_000 / 2, "{d:?}");
    // Both pause: nobody works on the queue, so no estimate rather than a made-up one.
    for op in ["op1", "op2"] {
        e.set_state(op, &RequestedState::Paused("break".into()), t(3_622_000), &mut ev).unwrap();
    }
    let d = e.offer(&offer("c6", "pensions"), t(3_622_000), &mut ev).unwrap();
    assert_eq!(wait(&d), 0, "no operator working: no estimate");
    e.set_state("op2", &RequestedState::Available, t(3_623_000), &mut ev).unwrap();
    let d = e.offer(&offer("c7", "pensions"), t(3_623_000), &mut ev).unwrap();
    assert!(wait(&d) > 0, "op2 is back: an estimate again");
    // Operators who take only chats do not shorten a call's wait, nor make one up.
    for i in 0..5 {
        let mut chat = login(&format!("chat{i}"), "internal", &[("pensions", 5)]);
        chat.channels = vec![(Channel::Chat, 3)];
        e.login(&chat, t(3_623_000), &mut ev).unwrap();
    }
    let d = e.offer(&offer("c9", "pensions"), t(3_623_000), &mut ev).unwrap();
    let Decision::Queued { position, .. } = d else { panic!("{d:?}") };
    assert_eq!(wait(&d), u64::from(position) * 30_000, "one voice operator: chat operators not counted: {d:?}");
    e.set_state("op2", &RequestedState::Paused("break".into()), t(3_624_000), &mut ev).unwrap();
    let d = e.offer(&offer("c10", "pensions"), t(3_624_000), &mut ev).unwrap();
    assert_eq!(wait(&d), 0, "nobody working takes calls: no estimate, whatever the chat operators");
}
