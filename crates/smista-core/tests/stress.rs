//! Several threads hammer one engine with offers, cancels, accepts, declines, completions, state
//! changes, logins and ticks. A monitor thread watches that no operator ever holds more than its
//! capacity (two voice contacts) while it runs; afterwards the engine's audit is clean, every
//! contact finished exactly once and every budget reservation came back. A second case runs
//! four times more threads than this machine's two cores, with the engine forgetting finished
//! contacts every few engine milliseconds (its lock-free two-generation memory rotating hundreds
//! of times under the writers): a contact cancelled is answered as finished, never routed again.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use dashmap::DashMap;
use parking_lot::Mutex;
use smista_core::budget::CountingGate;
use smista_core::config::QueueConfig;
use smista_core::{Decision, Event, Millis, RequestedState, RoutingError};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const OPS_PER_THREAD: usize = 3;

#[test]
fn concurrent_hammering_keeps_every_invariant() {
    hammer(4, 600_000, 20_000, false);
}

#[test]
fn eight_threads_with_the_finished_memory_rotating_keep_every_invariant() {
    hammer(8, 200, 10_000, true);
}

/// `threads` workers of `steps` steps each; finished contacts remembered `retention_ms`. With
/// `ticker`, one thread of its own advances the clock and ticks (the workers only read the
/// clock), so that every rotation of the engine's memory happens at a time no worker has passed.
fn hammer(threads: usize, retention_ms: u64, steps: usize, ticker: bool) {
    let mut a = QueueConfig::new("pensions", &[("pensions", 3)]);
    a.offer_timeout_ms = 50;
    a.wrap_up_ms = 5;
    a.max_wait_ms = 400;
    a.overflow = vec!["general".into()];
    a.budget = Some("contract-a".into());
    let mut g = QueueConfig::new("general", &[]);
    g.offer_timeout_ms = 80;
    g.max_length = 30;
    let gate = Arc::new(CountingGate::with_limits(&[("contract-a", 6)]));
    let mut cfg = config(vec![a, g]);
    cfg.finished_retention_ms = retention_ms;
    let e = Arc::new(smista_core::Engine::new(&cfg, gate.clone()).expect("valid config"));
    let refused_again = Arc::new(AtomicU64::new(0));
    // Whether contacts that finished long ago may be forgotten during the run.
    let forgets = retention_ms < 60_000;
    let clock = Arc::new(AtomicU64::new(1));
    let offers: Arc<DashMap<String, Vec<String>>> = Arc::new(DashMap::new());
    let log: Arc<Mutex<Vec<Event>>> = Arc::new(Mutex::new(Vec::new()));
    let decided: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));

    let record = |offers: &DashMap<String, Vec<String>>, log: &Mutex<Vec<Event>>, ev: &mut Vec<Event>| {
        for x in ev.iter() {
            if let Event::Offered { contact, operator, .. } = x {
                offers.entry(operator.to_string()).or_default().push(contact.to_string());
            }
        }
        log.lock().append(ev);
    };

    let monitor = {
        let e = e.clone();
        let stop = stop.clone();
        let clock = clock.clone();
        std::thread::spawn(move || {
            let mut samples = 0;
            while !stop.load(Ordering::Relaxed) {
                let snap = e.snapshot(Millis(clock.load(Ordering::Relaxed)));
                for o in &snap.operators {
                    // Operators log in with one voice slot only: never two contacts at once.
                    assert!(o.active_contacts <= 1, "operator {} holds {} contacts", o.id, o.active_contacts);
                }
                samples += 1;
            }
            samples
        })
    };

    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (e, clock, offers, log, decided, refused_again) =
                (e.clone(), clock.clone(), offers.clone(), log.clone(), decided.clone(), refused_again.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((t as u64 + 1) * 0x1234_5678));
                let mut ev = Vec::new();
                let mine: Vec<String> = (0..OPS_PER_THREAD).map(|i| format!("t{t}op{i}")).collect();
                let groups = ["internal", "supplier-a"];
                for (i, op) in mine.iter().enumerate() {
                    let now = Millis(clock.load(Ordering::Relaxed));
                    e.login(&login(op, groups[i % 2], &[("pensions", 5)]), now, &mut ev).expect("login");
                }
                record(&offers, &log, &mut ev);
                let mut next_contact = 0u64;
                let mut my_contacts: Vec<String> = Vec::new();
                let mut recent: std::collections::VecDeque<(String, u64)> = std::collections::VecDeque::new();
                for _ in 0..steps {
                    let now = if ticker {
                        Millis(clock.load(Ordering::Acquire))
                    } else {
                        Millis(clock.fetch_add(rng.below(2), Ordering::Relaxed))
                    };
                    let op = &mine[rng.below(mine.len() as u64) as usize];
                    let r: Result<(), RoutingError> = match rng.below(100) {
                        0..=29 => {
                            let id = format!("t{t}c{next_contact}");
                            next_contact += 1;
                            let q = if rng.below(3) == 0 { "general" } else { "pensions" };
                            let d = e.offer(&offer(&id, q), now, &mut ev);
                            if let Ok(d) = &d {
                                decided.lock().push(id.clone());
                                if !matches!(d, Decision::Diverted { .. }) {
                                    my_contacts.push(id);
                                }
                            }
                            d.map(|_| ())
                        }
                        30..=36 => match my_contacts.get(rng.below(my_contacts.len().max(1) as u64) as usize) {
                            Some(c) => {
                                let r = e.cancel(c, now, &mut ev).map(|_| ());
                                // Finished by this call (not answered from memory of an earlier end).
                                if ev.iter().any(|x| matches!(x, Event::Finished { contact, .. } if **contact == **c)) {
                                    recent.push_back((c.clone(), now.0));
                                }
                                // A contact that finished less than a quarter of the retention
                                // ago, offered again, is answered as finished (whatever rotations
                                // of the engine's memory ran since), never routed a second time.
                                let again = Millis(clock.load(Ordering::Relaxed));
                                while recent.front().is_some_and(|(_, at)| at + retention_ms / 4 < again.0) {
                                    recent.pop_front();
                                }
                                if let Some((old, _)) = recent.front() {
                                    match e.offer(&offer(old, "pensions"), again, &mut ev) {
                                        Err(RoutingError::ContactFinished(_)) | Ok(Decision::Diverted { .. }) => {
                                            refused_again.fetch_add(1, Ordering::Relaxed);
                                        }
                                        other => panic!("{old} finished, then offered again: {other:?}"),
                                    }
                                }
                                r
                            }
                            None => Ok(()),
                        },
                        37..=59 => {
                            let c = offers.get_mut(op).and_then(|mut v| v.pop());
                            match c {
                                Some(c) => {
                                    let r = e.accept(op, &c, now, &mut ev);
                                    if r.is_ok() {
                                        offers.entry(format!("{op}/busy")).or_default().push(c);
                                    }
                                    r
                                }
                                None => Ok(()),
                            }
                        }
                        60..=62 => match offers.get_mut(op).and_then(|mut v| v.pop()) {
                            Some(c) => e.decline(op, &c, now, &mut ev),
                            None => Ok(()),
                        },
                        63..=84 => match offers.get_mut(&format!("{op}/busy")).and_then(|mut v| v.pop()) {
                            Some(c) => e.complete(op, &c, 0, now, &mut ev).map(|_| ()),
                            None => Ok(()),
                        },
                        85..=88 => e.set_state(op, &RequestedState::Paused("break".into()), now, &mut ev).map(|_| ()),
                        89..=94 => e.set_state(op, &RequestedState::Available, now, &mut ev).map(|_| ()),
                        _ => {
                            if !ticker {
                                e.tick(now, &mut ev);
                            }
                            Ok(())
                        }
                    };
                    match r {
                        Ok(()) | Err(RoutingError::WrongState(_) | RoutingError::Busy(_)) => {}
                        // Finished longer ago than the retention: forgotten, as documented.
                        Err(RoutingError::UnknownContact(_)) if forgets => {}
                        Err(other) => panic!("unexpected error {other:?}"),
                    }
                    record(&offers, &log, &mut ev);
                }
            })
        })
        .collect();
    let ticking = Arc::new(AtomicBool::new(ticker));
    let clock_thread = {
        let (e, clock, offers, log, ticking) = (e.clone(), clock.clone(), offers.clone(), log.clone(), ticking.clone());
        std::thread::spawn(move || {
            let mut ev = Vec::new();
            while ticking.load(Ordering::Relaxed) {
                let now = Millis(clock.fetch_add(1, Ordering::AcqRel) + 1);
                e.tick(now, &mut ev);
                record(&offers, &log, &mut ev);
                std::thread::yield_now();
            }
        })
    };
    for w in workers {
        w.join().expect("worker panicked");
    }
    ticking.store(false, Ordering::Relaxed);
    clock_thread.join().expect("ticker panicked");
    stop.store(true, Ordering::Relaxed);
    let samples = monitor.join().expect("monitor saw an operator over capacity");
    assert!(samples > 0);

    // Quiesce: let every offer time out, then end everything.
    let mut ev = Vec::new();
    let mut now = Millis(clock.load(Ordering::Relaxed));
    assert!(e.audit(now).iter().all(|v| v.contains("idles")), "{:#?}", e.audit(now));
    now = now.plus(10_000);
    e.tick(now, &mut ev);
    let ids: Vec<String> = decided.lock().clone();
    for c in &ids {
        match e.cancel(c, now, &mut ev) {
            Ok(_) => {}
            Err(RoutingError::UnknownContact(_)) if forgets => {}
            Err(other) => panic!("cancel of {c} at quiescence: {other:?}"),
        }
    }
    for t in 0..threads {
        for i in 0..OPS_PER_THREAD {
            e.logout(&format!("t{t}op{i}"), true, now, &mut ev).expect("logout");
        }
    }
    log.lock().append(&mut ev);
    assert_clean(&e, now);
    assert_eq!(e.live_contacts(), 0);
    let mut finished: HashMap<String, usize> = HashMap::new();
    for x in log.lock().iter() {
        if let Event::Finished { contact, .. } = x {
            *finished.entry(contact.to_string()).or_default() += 1;
        }
    }
    for c in &ids {
        assert_eq!(finished.get(c), Some(&1), "{c} finished {:?} times", finished.get(c));
    }
    assert_eq!(finished.len(), ids.len(), "finished events for contacts never decided");
    assert_eq!(gate.held(), 0);
    assert!(gate.violations().is_empty(), "{:?}", gate.violations());
    assert!(refused_again.load(Ordering::Relaxed) > 0, "no contact was offered again after it finished");
}

/// A hand-over racing a forced logout of either operator, or the first operator's cancel of the
/// same consultation, on two threads, many times: whatever the order, the caller ends up in the
/// hands of a logged-in operator or ended (never with a logged-out one), the cancel answers what
/// happened (never "nobody had taken it" once the consultation was accepted, never OK after a
/// hand-over), the audit is clean and every reservation comes back.
#[test]
fn a_hand_over_racing_a_forced_logout_or_a_cancel_leaves_nobody_stuck() {
    use smista_core::{ConsultAction, TransferTarget};
    let mut naspi = QueueConfig::new("naspi", &[("naspi", 3)]);
    naspi.budget = Some("contract-a".into());
    let isee = QueueConfig::new("isee", &[("isee", 3)]);
    let gate = Arc::new(CountingGate::with_limits(&[("contract-a", 100)]));
    let e = Arc::new(engine_with_gate(vec![naspi, isee], gate.clone()));
    let mut now = Millis(1);
    let mut ev = Vec::new();
    for round in 0..600u32 {
        let (c, k) = (format!("c{round}"), format!("k{round}"));
        let race = round % 3;
        e.login(&login("a", "supplier-a", &[("naspi", 5)]), now, &mut ev).expect("login a");
        e.login(&login("b", "supplier-a", &[("isee", 5)]), now, &mut ev).expect("login b");
        e.offer(&offer(&c, "naspi"), now, &mut ev).expect("offer");
        e.accept("a", &c, now, &mut ev).expect("a accepts");
        e.consult_at("a", &c, &k, &TransferTarget::Queue("isee".into()), now, &mut ev).expect("consult");
        e.accept("b", &k, now, &mut ev).expect("b accepts");
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (e1, b1, c1, k1) = (e.clone(), barrier.clone(), c.clone(), k.clone());
        let hand = std::thread::spawn(move || {
            let mut out = Vec::new();
            b1.wait();
            e1.end_consultation("a", &c1, &k1, ConsultAction::Transfer, 0, now, now, &mut out)
        });
        let (e2, b2, c2, k2) = (e.clone(), barrier.clone(), c.clone(), k.clone());
        let other = std::thread::spawn(move || {
            let mut out = Vec::new();
            b2.wait();
            match race {
                0 => e2.logout("b", true, now, &mut out).map(|_| None),
                1 => e2.logout("a", true, now, &mut out).map(|_| None),
                _ => e2.end_consultation("a", &c2, &k2, ConsultAction::Cancel, 0, now, now, &mut out).map(Some),
            }
        });
        let handed = hand.join().expect("hand-over thread");
        let other = other.join().expect("other thread");
        if race == 2 {
            match (&handed, &other) {
                (Ok(_), Ok(_)) => panic!("round {round}: both the hand-over and the cancel answered OK"),
                (Err(_), Ok(Some(done))) => {
                    assert_eq!(done.second.as_deref(), Some("b"), "round {round}: the cancel names who was in it")
                }
                (Ok(_), Err(RoutingError::WrongState(_))) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        // Where the caller is: with a logged-in operator, or ended; never with a logged-out one.
        let snap = e.snapshot(now);
        for o in &snap.operators {
            if o.status == smista_core::OperatorStatus::LoggedOut {
                assert_eq!(o.active_contacts, 0, "round {round}: {} logged out holding a contact", o.id);
            }
        }
        let audit = e.audit(now);
        assert!(audit.is_empty(), "round {round}: {audit:?}");
        // Clean up for the next round.
        for who in ["a", "b"] {
            let _ = e.logout(who, true, now, &mut ev);
        }
        let _ = e.cancel(&c, now, &mut ev);
        assert!(matches!(e.cancel(&k, now, &mut ev), Ok(_) | Err(RoutingError::UnknownContact(_))));
        now = now.plus(10);
        e.tick(now, &mut ev);
        ev.clear();
    }
    assert_eq!(e.live_contacts(), 0);
    assert_eq!(gate.held(), 0, "reservations left behind");
    assert!(gate.violations().is_empty(), "{:?}", gate.violations());
}
