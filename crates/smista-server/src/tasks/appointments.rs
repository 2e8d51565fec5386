//! The tick's part for appointments: booked operators held back from ordinary offers before
//! their slots, and appointments whose slot started turned into contacts.

use smista_core::OfferRequest;

use crate::app::Shared;

/// The tick's part: keeps booked operators from ordinary offers from `guard_ms` before their
/// slots, and turns appointments whose slot started into contacts (made durable as started).
pub async fn drive(shared: &Shared, now: smista_core::Millis) {
    crate::app::appointments::hold_booked(shared, now);
    let unix = i64::try_from(shared.clock.unix_ms(now)).unwrap_or(i64::MAX);
    let due = shared.appointments.due(unix);
    if due.is_empty() {
        return;
    }
    let mut ev = Vec::new();
    for a in &due {
        let grace = shared.appointments.rules(&a.queue).map_or(0, |r| r.grace_ms);
        let req = OfferRequest {
            contact_id: a.id.clone(),
            queue: a.queue.clone(),
            channel: a.channel,
            priority: 0,
            language: String::new(),
            segment: a.segment,
            max_patience_ms: 0,
            arrived: shared.clock.from_unix(a.start_unix_ms),
            caller_key: String::new(),
        };
        let received = i64::try_from(shared.clock.unix_ms(now)).unwrap_or(i64::MAX);
        shared.history.arrive(&a.id, &a.queue, a.start_unix_ms.min(received), received, "");
        match shared.engine.offer_appointment(&req, &a.operator, grace, now, &mut ev) {
            Ok(d) => crate::metrics::record_decision(&a.queue, a.channel, &d),
            Err(e) => tracing::warn!(appointment = %a.id, error = %e, "appointment not routed at its slot"),
        }
        if let Some(l) = &shared.ledger {
            if let Err(e) = l.put_appointment(a, unix).await {
                tracing::warn!(appointment = %a.id, error = %e, "appointment's start not recorded in the ledger");
            }
        }
    }
    shared.publish(&ev, now);
}
