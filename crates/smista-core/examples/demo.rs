//! A few minutes in a social-security contact centre, routed by the core engine.
//!
//! Operators of an internal pool and two suppliers log in; citizens call the pensions, NASpI and
//! ISEE lines; the suppliers' budget funds a limited number of contacts, after which "extra budget"
//! contacts go to internal staff or are diverted to a callback booking. Prints every event, then a
//! summary. Run: `cargo run -p smista-core --example demo`.

use std::sync::Arc;

use smista_core::budget::CountingGate;
use smista_core::config::{EngineConfig, GroupConfig, QueueConfig};
use smista_core::{
    Channel, Decision, Engine, Event, Fallback, LoginRequest, Millis, OfferRequest, Outcome, Segment, Skill,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut pensions = QueueConfig::new("pensions", &[("pensions", 4)]);
    pensions.budget = Some("ccm-2026-11".into());
    pensions.prefer_unbudgeted = true;
    pensions.fallback = Fallback::CallbackBooking;
    pensions.wrap_up_ms = 20_000;
    let mut naspi = QueueConfig::new("naspi", &[("naspi", 4)]);
    naspi.budget = Some("ccm-2026-11".into());
    naspi.max_wait_ms = 120_000;
    naspi.fallback = Fallback::SelfServiceIvr;
    let isee = QueueConfig::new("isee", &[("isee", 2)]);
    let cfg = EngineConfig {
        queues: vec![pensions, naspi, isee],
        groups: vec![
            GroupConfig { name: "internal".into(), supplier: None, budget: None },
            GroupConfig { name: "supplier-a".into(), supplier: Some("a".into()), budget: Some("ccm-2026-11".into()) },
            GroupConfig { name: "supplier-b".into(), supplier: Some("b".into()), budget: Some("ccm-2026-11".into()) },
        ],
        max_operators: 16,
        finished_retention_ms: 600_000,
        sl_window_ms: 900_000,
    };
    // The budget funds three contacts at a time in this demo (the real ledger counts money).
    let gate = Arc::new(CountingGate::with_limits(&[("ccm-2026-11", 3)]));
    let engine = Engine::new(&cfg, gate.clone())?;
    let mut events = Vec::new();
    let operators = [
        ("int-01", "internal", vec![("pensions", 7), ("isee", 5)]),
        ("sup-a-01", "supplier-a", vec![("pensions", 5), ("naspi", 6)]),
        ("sup-a-02", "supplier-a", vec![("naspi", 8)]),
        ("sup-b-01", "supplier-b", vec![("pensions", 4), ("naspi", 4), ("isee", 3)]),
    ];
    for (id, group, skills) in &operators {
        let queues = engine.login(
            &LoginRequest {
                operator_id: (*id).into(),
                group: (*group).into(),
                skills: skills.iter().map(|(n, l)| Skill { name: (*n).into(), level: *l }).collect(),
                channels: vec![(Channel::Voice, 1)],
                session_id: format!("desk-{id}"),
                paused: None,
            },
            Millis(0),
            &mut events,
        )?;
        println!("{id:<9} logs in ({group}), serves {queues:?}");
    }
    let lines = ["pensions", "naspi", "pensions", "isee", "naspi", "pensions", "naspi", "pensions"];
    let mut now = Millis(1_000);
    let mut in_service: Vec<(String, String, Millis)> = Vec::new();
    let mut decisions = [0usize; 3];
    for n in 0..24 {
        now = now.plus(7_000);
        let id = format!("call-{n:03}");
        let req = OfferRequest {
            contact_id: id.clone(),
            queue: lines[n % lines.len()].into(),
            channel: Channel::Voice,
            priority: if n % 7 == 0 { 20 } else { 0 },
            language: String::new(),
            segment: if n % 7 == 0 { Segment::Vulnerable } else { Segment::General },
            max_patience_ms: 0,
            arrived: None,
            caller_key: String::new(),
        };
        let d = engine.offer(&req, now, &mut events)?;
        decisions[match d {
            Decision::Assigned { .. } => 0,
            Decision::Queued { .. } => 1,
            Decision::Diverted { .. } => 2,
        }] += 1;
        println!("{:>7.1}s {id} -> {d:?}", now.0 as f64 / 1000.0);
        // Operators accept every offer at once and talk for 40 s.
        loop {
            let offers: Vec<(String, String)> = events
                .drain(..)
                .filter_map(|e| match e {
                    Event::Offered { contact, operator, .. } => Some((operator.to_string(), contact.to_string())),
                    Event::Finished { contact, outcome: Outcome::Diverted, .. } => {
                        println!("          {contact} diverted");
                        None
                    }
                    _ => None,
                })
                .collect();
            if offers.is_empty() {
                break;
            }
            for (op, c) in offers {
                engine.accept(&op, &c, now, &mut events)?;
                in_service.push((op, c, now));
            }
        }
        let (done, keep): (Vec<_>, Vec<_>) = in_service.into_iter().partition(|(_, _, at)| now.since(*at) >= 40_000);
        in_service = keep;
        for (op, c, _) in done {
            let r = engine.complete(&op, &c, 0, now, &mut events)?;
            println!("          {op} completes {c} after {} s", r.handle_ms / 1000);
        }
        engine.tick(now, &mut events);
    }
    println!("\ndecisions: {} assigned, {} queued, {} diverted", decisions[0], decisions[1], decisions[2]);
    println!("budget reservations held: {}, contacts settled: {}", gate.held(), gate.settled());
    for q in engine.snapshot(now).queues {
        println!(
            "{:<9} waiting {:>2}  in service {:>2}  answered {:>2}  service level {:>5.1}%",
            q.name,
            q.waiting,
            q.in_service,
            q.answered,
            q.service_level * 100.0
        );
    }
    Ok(())
}
