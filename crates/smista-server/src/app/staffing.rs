//! Staffed time per operator group, for occupancy in the interval reports: from the operators'
//! status events, how long each group's operators were logged in, paused, and busy (a contact
//! in service, or wrap-up), in quarter hours of Unix time (they align with every interval of 15,
//! 30 or 60 minutes in the centre's zone, whose offsets are whole quarter hours).
//!
//! `occupancy = busy / (staffed - paused)`: of the time operators were ready to work, the share
//! they spent working. Updated in `Shared::publish` (outside the engine's critical sections);
//! flushed to the ledger's `staffing` table every few seconds and before a report is read.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use smista_core::{Event, OperatorStatus};

/// The bucket length, ms.
pub const QUARTER_MS: i64 = 900_000;

/// Time of one group in one quarter hour, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Staffed {
    /// Logged in.
    pub staffed_ms: i64,
    /// Of which paused.
    pub paused_ms: i64,
    /// Of which with a contact in service or in wrap-up.
    pub busy_ms: i64,
}

#[derive(Debug, Clone)]
struct Desk {
    group: Arc<str>,
    status: OperatorStatus,
    in_service: u32,
    since: i64,
}

/// The tracker.
#[derive(Debug, Default)]
pub struct Staffing {
    desks: DashMap<Arc<str>, Desk>,
    /// (quarter start, group) -> time not yet flushed.
    pending: Mutex<HashMap<(i64, Arc<str>), Staffed>>,
}

impl Staffing {
    /// Adds the time `d` spent from its `since` to `now` to the pending buckets.
    fn close(&self, d: &mut Desk, now: i64) {
        if now <= d.since || d.status == OperatorStatus::LoggedOut {
            d.since = d.since.max(now);
            return;
        }
        let busy = d.in_service > 0 || d.status == OperatorStatus::WrapUp;
        // Working counts as working, also after asking for a pause that starts when the call
        // ends: busy and paused never overlap, so occupancy stays at most 1.
        let paused = !busy && d.status == OperatorStatus::Paused;
        let mut p = self.pending.lock();
        let mut t = d.since;
        while t < now {
            let q = t - t.rem_euclid(QUARTER_MS);
            let end = (q + QUARTER_MS).min(now);
            let s = p.entry((q, d.group.clone())).or_default();
            s.staffed_ms += end - t;
            if paused {
                s.paused_ms += end - t;
            }
            if busy {
                s.busy_ms += end - t;
            }
            t = end;
        }
        d.since = now;
    }

    /// Follows what an engine call reported at `now` (Unix ms).
    pub fn apply(&self, events: &[Event], now: i64) {
        for e in events {
            match e {
                Event::OperatorStatus { operator, group, to, .. } => {
                    let mut d = self.desks.entry(operator.clone()).or_insert_with(|| Desk {
                        group: group.clone(),
                        status: OperatorStatus::LoggedOut,
                        in_service: 0,
                        since: now,
                    });
                    self.close(&mut d, now);
                    d.group = group.clone();
                    d.status = *to;
                    if *to == OperatorStatus::LoggedOut {
                        d.in_service = 0;
                    }
                }
                Event::Accepted { operator, .. } => {
                    if let Some(mut d) = self.desks.get_mut(&**operator) {
                        self.close(&mut d, now);
                        d.in_service += 1;
                    }
                }
                // A transferred leg ends the operator's contact; out of the centre, the
                // contact's `Finished` that follows is not a second end.
                Event::Finished { outcome: smista_core::Outcome::Transferred, .. } => {}
                Event::Transferred { operator, .. } | Event::Finished { operator: Some(operator), .. } => {
                    if let Some(mut d) = self.desks.get_mut(&**operator) {
                        self.close(&mut d, now);
                        d.in_service = d.in_service.saturating_sub(1);
                    }
                }
                _ => {}
            }
        }
    }

    /// Returns rows [`take`](Self::take) gave that could not be written.
    pub fn put_back(&self, rows: Vec<(i64, String, i64, i64, i64)>) {
        let mut p = self.pending.lock();
        for (q, g, staffed, paused, busy) in rows {
            let s = p.entry((q, Arc::from(g.as_str()))).or_default();
            s.staffed_ms += staffed;
            s.paused_ms += paused;
            s.busy_ms += busy;
        }
    }

    /// Everything accounted up to `now` (open segments closed there and reopened), taken out of
    /// the pending buckets: (quarter start, group, time).
    pub fn take(&self, now: i64) -> Vec<(i64, String, Staffed)> {
        for mut d in self.desks.iter_mut() {
            self.close(&mut d, now);
        }
        let mut p = self.pending.lock();
        p.drain().map(|((q, g), s)| (q, g.to_string(), s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smista_core::{Channel, Millis, Outcome, Segment};

    fn status(op: &str, from: OperatorStatus, to: OperatorStatus) -> Event {
        Event::OperatorStatus { operator: op.into(), group: "supplier-a".into(), from, to, reason: "".into() }
    }

    #[test]
    fn time_is_split_by_state_and_quarter_hour() {
        let s = Staffing::default();
        let q0 = 100 * QUARTER_MS;
        s.apply(&[status("op", OperatorStatus::LoggedOut, OperatorStatus::Available)], q0 + 600_000);
        // In service from 12:00 into the quarter until 3 minutes into the next one.
        s.apply(
            &[Event::Accepted {
                contact: "c".into(),
                queue: "q".into(),
                operator: "op".into(),
                channel: Channel::Voice,
                waited_ms: 0,
                held: false,
            }],
            q0 + 720_000,
        );
        s.apply(
            &[
                Event::Finished {
                    contact: "c".into(),
                    queue: "q".into(),
                    channel: Channel::Voice,
                    outcome: Outcome::Completed,
                    waited_ms: 0,
                    handle_ms: 360_000,
                    operator: Some("op".into()),
                    group: Some("supplier-a".into()),
                    wrap_up_ms: 60_000,
                    arrived: Millis(0),
                    segment: Segment::General,
                    charged: None,
                },
                status("op", OperatorStatus::Available, OperatorStatus::WrapUp),
            ],
            q0 + QUARTER_MS + 180_000,
        );
        s.apply(&[status("op", OperatorStatus::WrapUp, OperatorStatus::Paused)], q0 + QUARTER_MS + 240_000);
        s.apply(&[status("op", OperatorStatus::Paused, OperatorStatus::LoggedOut)], q0 + QUARTER_MS + 300_000);
        let mut got = s.take(q0 + 3 * QUARTER_MS);
        got.sort_by_key(|x| x.0);
        assert_eq!(
            got,
            vec![
                (q0, "supplier-a".into(), Staffed { staffed_ms: 300_000, paused_ms: 0, busy_ms: 180_000 }),
                (
                    q0 + QUARTER_MS,
                    "supplier-a".into(),
                    Staffed { staffed_ms: 300_000, paused_ms: 60_000, busy_ms: 240_000 }
                ),
            ]
        );
        assert!(s.take(q0 + 4 * QUARTER_MS).is_empty(), "logged out: nothing more");
    }
}
