//! No lost wake-up between an operator freeing up and a contact arriving for it, on the default
//! strategy (longest idle, where arrivals find free operators through the queue's free-operator
//! index). Eight queues of one operator each; in every round, two threads released together by a
//! barrier race on one pair: one completes the operator's contact (no wrap-up) while the other
//! offers its queue a new contact. Whatever the interleaving, the new contact must be offered
//! by one of the two calls: if
//! the engine's own tick, run afterwards at the same instant, is what offers it, the contact was
//! waiting while its operator was free — until the next tick, in a server 100 ms to 1 s.

mod common;

use std::sync::{Arc, Barrier};

use common::*;
use smista_core::config::QueueConfig;
use smista_core::{Decision, Event};

const PAIRS: usize = 8;

fn offered_ids(events: &[Event]) -> Vec<String> {
    offered(events).into_iter().map(|(c, _)| c).collect()
}

#[test]
fn a_contact_arriving_as_its_operator_frees_up_is_offered_at_once() {
    let rounds: usize = std::env::var("SMISTA_WAKEUP_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let queues: Vec<QueueConfig> = (0..PAIRS)
        .map(|i| {
            let mut q = QueueConfig::new(&format!("line-{i}"), &[(&format!("s-{i}"), 3)]);
            q.offer_timeout_ms = 3_600_000;
            q
        })
        .collect();
    let e = Arc::new(engine(queues));
    let now = t(1_000);
    let mut ev = Vec::new();
    // Each operator starts with a contact in service.
    for i in 0..PAIRS {
        e.login(&login(&format!("op-{i}"), "internal", &[(&format!("s-{i}"), 5)]), now, &mut ev).expect("login");
        let d = e.offer(&offer(&format!("c0-{i}"), &format!("line-{i}")), now, &mut ev).expect("offer");
        assert_eq!(assigned_to(&d), Some(format!("op-{i}").as_str()));
        e.accept(&format!("op-{i}"), &format!("c0-{i}"), now, &mut ev).expect("accept");
    }
    let contact = |round: usize| format!("c{}-{}", round / PAIRS + 1, round % PAIRS);
    let previous = |round: usize| format!("c{}-{}", round / PAIRS, round % PAIRS);
    let start = Arc::new(Barrier::new(2));
    let done = Arc::new(Barrier::new(2));
    let checked = Arc::new(Barrier::new(2));
    let (e2, start2, done2, checked2) = (e.clone(), start.clone(), done.clone(), checked.clone());
    // The caller: offers round r's contact to its pair's queue, then reports what its call saw.
    let caller = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for round in 0..rounds {
            let mut out = Vec::new();
            start2.wait();
            // A delay that sweeps the offer across the completer's path, round after round.
            for _ in 0..(round * 7) % 200 {
                std::hint::spin_loop();
            }
            let d = e2.offer(&offer(&contact(round), &format!("line-{}", round % PAIRS)), now, &mut out);
            assert!(matches!(d, Ok(Decision::Assigned { .. } | Decision::Queued { .. })), "{d:?}");
            seen.push(offered_ids(&out));
            done2.wait();
            checked2.wait();
        }
        seen
    });
    // This thread: completes the pair's previous contact at the same moment, then checks.
    let mut freed_saw = Vec::new();
    let mut ticked_saw = Vec::new();
    for round in 0..rounds {
        let i = round % PAIRS;
        let mut out = Vec::new();
        start.wait();
        e.complete(&format!("op-{i}"), &previous(round), 0, now, &mut out).expect("complete");
        done.wait();
        freed_saw.push(offered_ids(&out));
        let mut ticked = Vec::new();
        e.tick(now, &mut ticked);
        ticked_saw.push(offered_ids(&ticked));
        e.accept(&format!("op-{i}"), &contact(round), now, &mut ev).expect("every new contact is offered");
        checked.wait();
    }
    let arrived_saw = caller.join().expect("caller");
    assert_clean(&e, now);
    let mut lost = Vec::new();
    for round in 0..rounds {
        let by_calls = freed_saw[round].iter().chain(&arrived_saw[round]).filter(|c| **c == contact(round)).count();
        let by_tick = ticked_saw[round].iter().filter(|c| **c == contact(round)).count();
        assert_eq!(by_calls + by_tick, 1, "{} offered {by_calls} + {by_tick} times", contact(round));
        if by_tick == 1 {
            lost.push(contact(round));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {rounds} contacts waited while their operator was free, until the tick: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}
