//! The engine against queueing theory, without any transport: Poisson arrivals and exponential
//! handle times on one queue, operators who accept at once and have no wrap-up, simulated on the
//! engine's own clock. This is M/M/c, so the share of contacts that must wait and the mean wait
//! must match Erlang C. Seeded, so the result is deterministic; the tolerances are a few standard
//! errors of runs this long.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;

use smista_core::budget::Unlimited;
use smista_core::config::{EngineConfig, GroupConfig, QueueConfig};
use smista_core::{Channel, Decision, Engine, Event, LoginRequest, Millis, OfferRequest, Segment, Skill};

/// xorshift64*: enough randomness for a simulation, no dependency.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }
}

fn erlang_c(c: u32, a: f64) -> f64 {
    // Erlang B by recursion, then C.
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (f64::from(k) + a * b);
    }
    let rho = a / f64::from(c);
    b / (1.0 - rho * (1.0 - b))
}

type Due = BinaryHeap<Reverse<(u64, String, String)>>;

/// Accepts every offer in `ev` at `now` and schedules its completion; adds the waits of contacts
/// after the warm-up to `waited_sum`.
#[allow(clippy::too_many_arguments)]
fn serve(
    ev: &mut Vec<Event>,
    now: u64,
    rng: &mut Rng,
    due: &mut Due,
    e: &Engine,
    waited_sum: &mut u64,
    in_service: &mut HashSet<String>,
    warmup: u64,
    aht_s: f64,
    accepted: &mut Vec<(String, u64, u64)>,
) {
    let offers: Vec<(String, String, u64)> = ev
        .iter()
        .filter_map(|x| match x {
            Event::Offered { contact, operator, waited_ms, .. } => {
                Some((contact.to_string(), operator.to_string(), *waited_ms))
            }
            _ => None,
        })
        .collect();
    ev.clear();
    for (contact, op, w) in offers {
        if !in_service.insert(contact.clone()) {
            continue;
        }
        e.accept(&op, &contact, Millis(now), ev).expect("accept");
        accepted.push((contact.clone(), now, w));
        let idx: u64 = contact[1..].parse().unwrap_or(0);
        if idx >= warmup {
            *waited_sum += w;
        }
        let handle = (rng.exp(aht_s) * 1000.0).round().max(1.0) as u64;
        due.push(Reverse((now + handle, op, contact)));
    }
    ev.clear();
}

struct Run {
    p_wait: f64,
    mean_wait_s: f64,
    load: f64,
    /// Each queued contact after the warm-up: (the engine's estimate, the naive estimate, the
    /// wait it had), ms.
    estimates: Vec<(u64, u64, u64)>,
}

/// The naive estimate (what smista gave until issue 29): the position times the mean gap
/// between the last 64 acceptances, the time since the last one included.
fn naive_estimate(accepts: &std::collections::VecDeque<u64>, position: u32, now: u64) -> u64 {
    match (accepts.front(), accepts.back()) {
        (Some(first), Some(last)) if accepts.len() >= 2 => {
            u64::from(position) * (now.max(*last) - first).max(1) / (accepts.len() as u64 - 1)
        }
        _ => 0,
    }
}

/// Notes the acceptances `serve` made: their instants for the naive estimate, and for contacts
/// told an estimate, (engine's, naive, wait).
fn note(
    accepted: &mut Vec<(String, u64, u64)>,
    accepts: &mut std::collections::VecDeque<u64>,
    told: &mut std::collections::HashMap<String, (u64, u64)>,
    estimates: &mut Vec<(u64, u64, u64)>,
) {
    for (contact, at, w) in accepted.drain(..) {
        if accepts.len() == 64 {
            accepts.pop_front();
        }
        accepts.push_back(at);
        if let Some((mine, naive)) = told.remove(&contact) {
            estimates.push((mine, naive, w));
        }
    }
}

/// (median |estimate - wait| in ms, share within ±50% of the wait) of `pairs` (estimate, wait).
fn score(pairs: impl Iterator<Item = (u64, u64)>) -> (u64, f64) {
    let pairs: Vec<(u64, u64)> = pairs.collect();
    let mut errors: Vec<u64> = pairs.iter().map(|(e, w)| e.abs_diff(*w)).collect();
    errors.sort_unstable();
    let within = pairs.iter().filter(|(e, w)| 2 * e.abs_diff(*w) <= *w).count();
    (errors[errors.len() / 2], within as f64 / pairs.len() as f64)
}

fn simulate(c: u32, rate_per_s: f64, aht_s: f64, arrivals: u64, seed: u64) -> Run {
    let mut q = QueueConfig::new("line", &[("line", 1)]);
    q.offer_timeout_ms = 3_600_000;
    q.max_wait_ms = 0;
    let cfg = EngineConfig {
        queues: vec![q],
        groups: vec![GroupConfig { name: "staff".into(), supplier: None, budget: None }],
        max_operators: c + 8,
        finished_retention_ms: 60_000,
        sl_window_ms: 900_000,
    };
    let e = Engine::new(&cfg, Arc::new(Unlimited)).expect("valid config");
    let mut ev = Vec::new();
    for i in 0..c {
        let login = LoginRequest {
            operator_id: format!("op{i}"),
            group: "staff".into(),
            skills: vec![Skill { name: "line".into(), level: 5 }],
            channels: vec![],
            session_id: format!("d{i}"),
            paused: None,
        };
        e.login(&login, Millis(0), &mut ev).expect("login");
    }
    ev.clear();
    let mut rng = Rng(seed);
    // Completions due: (time, operator, contact).
    let mut due: Due = BinaryHeap::new();
    let mut in_service: HashSet<String> = HashSet::new();
    let (mut waited, mut wait_ms_sum, mut handle_ms_sum, mut completed) = (0u64, 0u64, 0u64, 0u64);
    let warmup = arrivals / 10;
    let mut next_arrival = 0.0f64;
    let mut n = 0u64;
    let mut accepted: Vec<(String, u64, u64)> = Vec::new();
    let mut accepts: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    // Queued contact -> (engine's estimate, naive estimate).
    let mut told: std::collections::HashMap<String, (u64, u64)> = std::collections::HashMap::new();
    let mut estimates = Vec::new();
    while n < arrivals {
        next_arrival += rng.exp(1.0 / rate_per_s) * 1000.0;
        let at = next_arrival.round() as u64;
        // Completions before this arrival first.
        while let Some(Reverse((t, _, _))) = due.peek() {
            if *t > at {
                break;
            }
            let Some(Reverse((t, op, contact))) = due.pop() else { break };
            let done = e.complete(&op, &contact, 0, Millis(t), &mut ev).expect("complete");
            in_service.remove(&contact);
            handle_ms_sum += done.handle_ms;
            completed += 1;
            serve(&mut ev, t, &mut rng, &mut due, &e, &mut wait_ms_sum, &mut in_service, warmup, aht_s, &mut accepted);
            note(&mut accepted, &mut accepts, &mut told, &mut estimates);
        }
        let id = format!("c{n}");
        let offer = OfferRequest {
            contact_id: id.clone(),
            queue: "line".into(),
            channel: Channel::Voice,
            priority: 0,
            language: String::new(),
            segment: Segment::General,
            max_patience_ms: 0,
            arrived: None,
            caller_key: String::new(),
        };
        let d = e.offer(&offer, Millis(at), &mut ev).expect("offer");
        match d {
            Decision::Queued { position, estimated_wait_ms, .. } if n >= warmup => {
                waited += 1;
                told.insert(id.clone(), (estimated_wait_ms, naive_estimate(&accepts, position, at)));
            }
            Decision::Diverted { reason, .. } => panic!("diverted: {reason:?}"),
            _ => {}
        }
        serve(&mut ev, at, &mut rng, &mut due, &e, &mut wait_ms_sum, &mut in_service, warmup, aht_s, &mut accepted);
        if n % 4096 == 0 {
            e.tick(Millis(at), &mut ev);
            serve(&mut ev, at, &mut rng, &mut due, &e, &mut wait_ms_sum, &mut in_service, warmup, aht_s, &mut accepted);
        }
        note(&mut accepted, &mut accepts, &mut told, &mut estimates);
        n += 1;
    }
    let counted = (arrivals - warmup) as f64;
    Run {
        p_wait: waited as f64 / counted,
        mean_wait_s: wait_ms_sum as f64 / 1000.0 / counted,
        load: rate_per_s * handle_ms_sum as f64 / 1000.0 / completed.max(1) as f64,
        estimates,
    }
}

#[test]
fn the_engine_behaves_as_m_m_c() {
    // The load-test shape: 70 operators, 40 contacts/s, 1.5 s mean handle (60 E, 86% busy).
    let (c, rate, aht) = (70u32, 40.0, 1.5);
    let r = simulate(c, rate, aht, 200_000, 0x5eed_1234);
    let a = rate * aht;
    let p = erlang_c(c, a);
    let mu_wait = p * aht / (f64::from(c) - a);
    eprintln!(
        "measured P(wait) {:.4}, mean wait {:.4} s, realised load {:.2} E; Erlang C {:.4}, {:.4} s at {a} E",
        r.p_wait, r.mean_wait_s, r.load, p, mu_wait
    );
    assert!((r.p_wait - p).abs() < 0.03, "P(wait) {} vs Erlang C {}", r.p_wait, p);
    assert!((r.mean_wait_s - mu_wait).abs() < 0.3 * mu_wait, "mean wait {} vs {}", r.mean_wait_s, mu_wait);
}

#[test]
fn estimated_waits_beat_the_naive_estimate_on_the_waits_contacts_then_have() {
    // Two loads: the load test's (86% busy) and a heavier one (95%), where queues are long.
    for (c, rate, aht, seed) in [(70u32, 40.0, 1.5, 0x5eed_1234), (20, 12.7, 1.5, 0xfeed_0001)] {
        let r = simulate(c, rate, aht, 100_000, seed);
        assert!(r.estimates.len() > 1000, "enough queued contacts: {}", r.estimates.len());
        assert!(r.estimates.iter().all(|(e, _, _)| *e > 0), "every operator works: an estimate for each");
        let (mine_err, mine_within) = score(r.estimates.iter().map(|(e, _, w)| (*e, *w)));
        let (naive_err, naive_within) = score(r.estimates.iter().map(|(_, n, w)| (*n, *w)));
        eprintln!(
            "{c} operators, {rate}/s: {} queued; median |error| {mine_err} ms vs naive {naive_err} ms, within ±50% {mine_within:.3} vs naive {naive_within:.3}",
            r.estimates.len()
        );
        assert!(mine_err < naive_err, "median error {mine_err} ms, naive {naive_err} ms");
        assert!(mine_within > naive_within, "within ±50% {mine_within}, naive {naive_within}");
    }
}
