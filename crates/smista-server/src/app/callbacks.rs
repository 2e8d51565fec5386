//! Callbacks booked for later (`ContactService.ScheduleCallback`): kept in memory and in the
//! ledger, offered on the CALLBACK channel by the tick when due. Due means: not before the time
//! asked, within the queue's opening hours, and for a contact diverted EXTRA_BUDGET not before
//! its budget's next period. At its time a booked callback is admitted like any contact; one
//! diverted again for money, hours or staff is booked again (next period, next opening, five
//! minutes later) instead of being lost, so it never reaches a supplier beyond the ceiling.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use smista_core::{Channel, Decision, DivertReason, Millis, OfferRequest, Segment};
use smista_ledger::ScheduledCallback;
use tonic::Status;

use crate::app::Shared;

/// The id a booked callback is offered under at its `try`-th offer (0 first): `<id>~cb1`,
/// `<id>~cb2`... (a diverted id cannot be offered again within the retention).
#[must_use]
pub fn callback_id(contact_id: &str, tries: u32) -> String {
    format!("{contact_id}~cb{}", tries + 1)
}

/// How long a booked callback that found nobody to take it waits before trying again.
const RETRY_MS: i64 = 300_000;
/// The furthest ahead a callback may be booked.
const MAX_AHEAD_MS: i64 = 366 * 86_400_000;

/// Booked callbacks not offered yet, by contact id.
#[derive(Debug, Default)]
pub struct Scheduled(Mutex<BTreeMap<String, ScheduledCallback>>);

impl Scheduled {
    /// Loads the ledger's (at start-up).
    pub fn restore(&self, list: Vec<ScheduledCallback>) {
        let mut g = self.0.lock();
        for c in list {
            g.insert(c.contact_id.clone(), c);
        }
    }

    /// Booked callbacks waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.lock().len()
    }

    /// Whether none waits.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn unix(shared: &Shared, t: Millis) -> i64 {
    i64::try_from(shared.clock.unix_ms(t)).unwrap_or(i64::MAX)
}

/// When a callback of `queue` asked for `at` (Unix ms) can be offered: the queue's next
/// opening, and with `for_money` its budget's next period.
fn due_from(shared: &Shared, queue: &str, at: i64, for_money: bool) -> Result<i64, Status> {
    let mut due = at;
    if for_money {
        if let Some(b) = shared.queue_budget.get(queue) {
            let now = shared.clock.now();
            if let Some(v) = shared.book.views(now).into_iter().find(|v| &v.id == b) {
                due = due.max(v.period_end_unix_ms);
            }
        }
    }
    let t = shared.clock.from_unix(due).unwrap_or_else(|| shared.clock.now());
    let open = shared.engine.next_opening(queue, t).map_err(crate::wire::error::client_error)?;
    Ok(open.map_or(due, |o| unix(shared, o).max(due)))
}

/// Books a callback (see the module docs). Returns (callback contact id, due Unix ms).
pub async fn schedule(
    shared: &Shared,
    contact_id: &str,
    queue: &str,
    segment: Segment,
    not_before_unix_ms: i64,
) -> Result<(String, i64), Status> {
    smista_core::validate_id("contact_id", contact_id).map_err(crate::wire::error::client_error)?;
    if contact_id.len() > 118 {
        return Err(Status::invalid_argument("contact_id: at most 118 bytes (the callback's id adds `~cbN`)"));
    }
    let now = unix(shared, shared.clock.now());
    if not_before_unix_ms > now + MAX_AHEAD_MS {
        return Err(Status::invalid_argument("not_before_unix_ms: more than a year ahead"));
    }
    if let Some(c) = shared.scheduled.0.lock().get(contact_id) {
        return Ok((callback_id(contact_id, c.tries), c.due_unix_ms));
    }
    let for_money = match shared.engine.diversion_of(contact_id) {
        Some(None) => {
            return Err(Status::failed_precondition(format!(
                "contact `{}` is live: ask RequestCallback to keep its place",
                smista_core::error::clip(contact_id)
            )))
        }
        Some(Some(r)) => r == DivertReason::ExtraBudget,
        None => false,
    };
    let due = due_from(shared, queue, not_before_unix_ms.max(now), for_money)?;
    let c = ScheduledCallback {
        contact_id: contact_id.to_owned(),
        queue: queue.to_owned(),
        segment,
        due_unix_ms: due,
        created_unix_ms: now,
        offered: false,
        tries: 0,
    };
    if let Some(l) = &shared.ledger {
        l.put_scheduled_callback(&c).await.map_err(crate::wire::error::ledger_status)?;
    }
    shared.scheduled.0.lock().entry(contact_id.to_owned()).or_insert(c);
    tracing::info!(queue = %queue, due_unix_ms = due, for_money, "callback booked");
    Ok((callback_id(contact_id, 0), due))
}

/// The tick's part: offers the booked callbacks that are due; books again those diverted for
/// money, hours or staff.
pub async fn drive(shared: &Shared, now: Millis) {
    let now_unix = unix(shared, now);
    let due: Vec<ScheduledCallback> = {
        let g = shared.scheduled.0.lock();
        if g.values().all(|c| c.due_unix_ms > now_unix) {
            return;
        }
        g.values().filter(|c| c.due_unix_ms <= now_unix).cloned().collect()
    };
    let mut ev = Vec::new();
    for mut c in due {
        let req = OfferRequest {
            contact_id: callback_id(&c.contact_id, c.tries),
            queue: c.queue.clone(),
            channel: Channel::Callback,
            priority: 0,
            language: String::new(),
            segment: c.segment,
            max_patience_ms: 0,
            arrived: None,
            caller_key: String::new(),
        };
        let received = now_unix;
        shared.history.arrive(&req.contact_id, &req.queue, received, received, "");
        let again = match shared.engine.offer(&req, now, &mut ev) {
            Ok(Decision::Diverted { reason, .. }) => match reason {
                DivertReason::ExtraBudget => due_from(shared, &c.queue, now_unix + 1, true).ok(),
                DivertReason::Closed => due_from(shared, &c.queue, now_unix + 1, false).ok(),
                _ => Some(now_unix + RETRY_MS),
            },
            Ok(d) => {
                crate::metrics::record_decision(&c.queue, Channel::Callback, &d);
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "booked callback not offered");
                None
            }
        };
        match again {
            Some(due) => {
                // It ended diverted as a contact; it lives on as a booking, under the same id
                // (a repeated offer within the retention would answer the diversion again).
                c.due_unix_ms = due.max(now_unix + RETRY_MS.min(60_000));
                c.tries += 1;
                tracing::info!(queue = %c.queue, due_unix_ms = c.due_unix_ms, "booked callback could not be served yet: booked again");
            }
            None => c.offered = true,
        }
        if let Some(l) = &shared.ledger {
            if let Err(e) = l.put_scheduled_callback(&c).await {
                tracing::warn!(error = %e, "booked callback's state not recorded in the ledger");
            }
        }
        let mut g = shared.scheduled.0.lock();
        if c.offered {
            g.remove(&c.contact_id);
        } else {
            g.insert(c.contact_id.clone(), c);
        }
    }
    shared.publish(&ev, now);
}
