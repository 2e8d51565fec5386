//! Appointments as the routing sees them before their slot: a booked consultant is held back
//! from ordinary offers from `guard_ms` before the slot. Applied by the tick, and at once by a
//! booking or a move that falls inside the guard window already.

use super::Shared;

/// Holds every consultant whose appointment's guard window has begun by `now`.
pub fn hold_booked(shared: &Shared, now: smista_core::Millis) {
    let unix = i64::try_from(shared.clock.unix_ms(now)).unwrap_or(i64::MAX);
    for (operator, until) in shared.appointments.holds(unix) {
        if let Some(t) = shared.clock.from_unix(until) {
            shared.engine.hold_operator(&operator, t);
        }
    }
}
