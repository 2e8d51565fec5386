//! Memory per waiting contact: queues 1,000,000 voice contacts (40 queues, 3,300 operators all
//! paused) in the routing engine and reports the growth of the resident set per contact.
//!
//! Run: `cargo run --release -p smista-benches --example queue_memory` (Linux: reads /proc).

use std::sync::Arc;

use smista_benches::{centre, voice_offer};
use smista_core::budget::Unlimited;
use smista_core::{Decision, Engine, Millis, RequestedState};

const CONTACTS: usize = 1_000_000;

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (cfg, logins) = centre(40, 3_300);
    let e = Engine::new(&cfg, Arc::new(Unlimited))?;
    let mut ev = Vec::new();
    for l in &logins {
        e.login(l, Millis(0), &mut ev)?;
        e.set_state(&l.operator_id, &RequestedState::Paused("memory".into()), Millis(0), &mut ev)?;
    }
    let queues: Vec<String> = e.queue_names().map(str::to_owned).collect();
    // Ids like a telephony platform's: a UUID-sized string.
    let ids: Vec<String> = (0..CONTACTS).map(|i| format!("{i:08x}-6c1e-4d2a-9b7f-{i:012x}")).collect();
    let reqs: Vec<_> =
        ids.into_iter().enumerate().map(|(i, id)| voice_offer(id, queues[i % queues.len()].clone())).collect();
    let before = rss_bytes().ok_or("cannot read /proc/self/statm")?;
    for (i, r) in reqs.iter().enumerate() {
        let d = e.offer(r, Millis(1 + i as u64 / 1000), &mut ev)?;
        if !matches!(d, Decision::Queued { .. }) {
            return Err(format!("contact {i} was not queued: {d:?}").into());
        }
        ev.clear();
    }
    let after = rss_bytes().ok_or("cannot read /proc/self/statm")?;
    println!(
        "{CONTACTS} contacts waiting: resident set grew {:.1} MiB, {:.0} bytes per waiting contact (ids of {} bytes)",
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / CONTACTS as f64,
        reqs[0].contact_id.len()
    );
    Ok(())
}
