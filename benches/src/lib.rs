//! smista's measuring tools: fixtures for the criterion benches (a contact centre of a given
//! size) and the `smista-load` load generator ([`load`]).

pub mod load;
pub mod scaling;

/// Every bench, example and the load generator run on the allocator the `smista` binary uses
/// (a global allocator declared in a library applies to whatever links it).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use smista_core::config::{EngineConfig, GroupConfig, QueueConfig};
use smista_core::{Channel, LoginRequest, OfferRequest, Segment, Skill};

/// A centre with `queues` service lines (`line-0`..), each needing skill `s-<i>` at level 3, and
/// `operators` operators with three consecutive skills at level 5, spread over an internal pool
/// and two suppliers (no capped budget, so the bench measures routing alone).
#[must_use]
pub fn centre(queues: usize, operators: usize) -> (EngineConfig, Vec<LoginRequest>) {
    let qs = (0..queues)
        .map(|i| {
            let name = format!("line-{i}");
            let skill = format!("s-{i}");
            QueueConfig::new(&name, &[(skill.as_str(), 3)])
        })
        .collect();
    let groups = ["internal", "supplier-a", "supplier-b"]
        .into_iter()
        .map(|g| GroupConfig { name: g.into(), supplier: None, budget: None })
        .collect();
    let cfg = EngineConfig {
        queues: qs,
        groups,
        max_operators: u32::try_from(operators).unwrap_or(u32::MAX).max(1),
        finished_retention_ms: 60_000,
        sl_window_ms: 900_000,
    };
    let logins = (0..operators)
        .map(|o| LoginRequest {
            operator_id: format!("op-{o}"),
            group: ["internal", "supplier-a", "supplier-b"][o % 3].into(),
            skills: (0..3).map(|k| Skill { name: format!("s-{}", (o + k) % queues), level: 5 }).collect(),
            channels: vec![(Channel::Voice, 1)],
            session_id: format!("desk-{o}"),
            paused: None,
        })
        .collect();
    (cfg, logins)
}

/// A voice offer to `queue`.
#[must_use]
pub fn voice_offer(id: String, queue: String) -> OfferRequest {
    OfferRequest {
        contact_id: id,
        queue,
        channel: Channel::Voice,
        priority: 0,
        language: String::new(),
        segment: Segment::General,
        max_patience_ms: 0,
        arrived: None,
        caller_key: String::new(),
    }
}
