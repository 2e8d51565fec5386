//! Shared helpers of the core's integration tests.
#![allow(dead_code, missing_docs, unreachable_pub)]

use std::sync::Arc;

use smista_core::budget::{BudgetGate, CountingGate, Unlimited};
use smista_core::config::{EngineConfig, GroupConfig, QueueConfig};
use smista_core::{Channel, Decision, Engine, Event, LoginRequest, Millis, OfferRequest, Segment, Skill};

pub fn groups() -> Vec<GroupConfig> {
    vec![
        GroupConfig { name: "internal".into(), supplier: None, budget: None },
        GroupConfig { name: "supplier-a".into(), supplier: Some("a".into()), budget: Some("contract-a".into()) },
        GroupConfig { name: "supplier-b".into(), supplier: Some("b".into()), budget: Some("contract-b".into()) },
    ]
}

pub fn config(queues: Vec<QueueConfig>) -> EngineConfig {
    EngineConfig { queues, groups: groups(), max_operators: 64, finished_retention_ms: 600_000, sl_window_ms: 900_000 }
}

pub fn engine(queues: Vec<QueueConfig>) -> Engine {
    Engine::new(&config(queues), Arc::new(Unlimited)).expect("valid config")
}

pub fn engine_with_gate(queues: Vec<QueueConfig>, gate: Arc<CountingGate>) -> Engine {
    let gate: Arc<dyn BudgetGate> = gate;
    Engine::new(&config(queues), gate).expect("valid config")
}

pub fn offer(id: &str, queue: &str) -> OfferRequest {
    OfferRequest {
        contact_id: id.into(),
        queue: queue.into(),
        channel: Channel::Voice,
        priority: 0,
        language: String::new(),
        segment: Segment::General,
        max_patience_ms: 0,
        arrived: None,
        caller_key: String::new(),
    }
}

pub fn login(id: &str, group: &str, skills: &[(&str, u8)]) -> LoginRequest {
    LoginRequest {
        operator_id: id.into(),
        group: group.into(),
        skills: skills.iter().map(|(n, l)| Skill { name: (*n).into(), level: *l }).collect(),
        channels: vec![],
        session_id: format!("desk-{id}"),
        paused: None,
    }
}

pub fn assigned_to(d: &Decision) -> Option<&str> {
    match d {
        Decision::Assigned { operator, .. } => Some(operator),
        _ => None,
    }
}

pub fn offered(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Offered { contact, operator, .. } => Some((contact.to_string(), operator.to_string())),
            _ => None,
        })
        .collect()
}

pub fn t(ms: u64) -> Millis {
    Millis(ms)
}

pub fn assert_clean(e: &Engine, now: Millis) {
    let v = e.audit(now);
    assert!(v.is_empty(), "invariant violations: {v:#?}");
}
