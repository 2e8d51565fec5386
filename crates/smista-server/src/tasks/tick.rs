//! The routing tick: the engine's clock (offer time-outs, maximum waits, wrap-up ends, skill
//! expansion, callbacks and appointments coming due) and the gauges' refresh.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::Shared;

/// Runs the engine's clock: offer time-outs, maximum waits, wrap-up ends, skill expansion; and
/// refreshes the gauges about once a second.
pub(crate) async fn tick_loop(
    shared: Arc<Shared>,
    period: Duration,
    hold_max_age_ms: i64,
    mut stop: watch::Receiver<bool>,
) {
    let mut iv = tokio::time::interval(period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let every = (1000 / period.as_millis().max(1)).max(1) as u64;
    let mut n = 0u64;
    let mut ev = Vec::new();
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            _ = stop.changed() => return,
        }
        let now = shared.clock.now();
        {
            // One section: a retry that finds a contact the tick ended waits until its end
            // record is queued (see `Sections`).
            let _section = shared.sections.global();
            shared.engine.tick(now, &mut ev);
            shared.publish(&ev, now);
        }
        ev.clear();
        crate::tasks::appointments::drive(&shared, now).await;
        crate::app::callbacks::drive(&shared, now).await;
        if n % every == 0 {
            crate::metrics::refresh_gauges(&shared.engine, now);
            for h in shared.book.expire_recovered(now, hold_max_age_ms) {
                tracing::warn!(budget = %h.budget, queue = %h.queue, amount_cents = h.amount_cents, accepted_unix_ms = h.accepted_unix_ms, "no completion arrived for a contact recovered at restart: reservation released");
                shared.account_carried_end(&h.operator, h.channel, None, now);
                shared.release_recovering(&h.operator, now);
            }
            for h in shared.expire_serving(now, hold_max_age_ms) {
                tracing::warn!(queue = %h.queue, accepted_unix_ms = h.accepted_unix_ms, "no completion arrived for an unbudgeted contact in service at restart: forgotten");
                shared.account_carried_end(&h.operator, h.channel, None, now);
                shared.release_recovering(&h.operator, now);
            }
            shared.book.refresh_exposure(now);
            crate::metrics::refresh_budget_gauges(&shared.book, now);
            crate::metrics::refresh_ledger(
                shared.ledger.as_deref(),
                shared.book.recovered_count() + shared.serving.len(),
            );
        }
        if n % (every * 60) == 0 {
            shared.gate.limits.housekeeping();
        }
        n += 1;
    }
}
