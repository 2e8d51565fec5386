//! Keeping this node's budget leases when several nodes share budgets on the PostgreSQL ledger
//! (`[cluster] node_id` set): the node spends locally and lock-free within its lease (the book's
//! limit), and this task renews the lease before it runs out, sized from the node's own recent
//! demand, gives back the unused part at shutdown, and cuts back the leases of nodes that stopped
//! renewing. See `smista_ledger::lease` for the statements and their invariant.
//!
//! If PostgreSQL cannot be reached the node keeps admitting within the lease it holds, and stops
//! (diverting EXTRA_BUDGET) once that lease is spent or is about to expire, whichever first:
//! after expiry another node may take the unused part back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::lease::LeaseState;
use crate::app::Shared;
use crate::config::cluster::ClusterSection;

/// Renews leases until `stop`, then gives back what was not spent.
pub async fn keep(shared: Arc<Shared>, cfg: ClusterSection, mut stop: watch::Receiver<bool>) {
    let Some(ledger) = shared.ledger.clone() else { return };
    let every = Duration::from_millis(cfg.lease_renew_ms);
    loop {
        renew(&shared, &ledger, &cfg).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
    }
    // Shutdown: keep what is committed (in-service holds included), give back the rest.
    let now = shared.clock.now();
    for n in shared.book.lease_needs(now) {
        let back = ledger.give_back_lease(&n.budget, &n.period, n.committed_cents);
        // Not waited for longer than a lease lasts: unanswered, it returns to the pool anyway.
        let back = tokio::time::timeout(Duration::from_millis(cfg.lease_ttl_ms), back)
            .await
            .unwrap_or_else(|_| Err(smista_ledger::LedgerError::Storage("no answer from the ledger".into())));
        match back {
            Ok(Some(l)) => {
                shared.book.set_lease(&n.budget, &n.period, now, l.granted_cents);
                tracing::info!(budget = %n.budget, kept_cents = l.granted_cents, "lease given back at shutdown");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(budget = %n.budget, error = %e, "lease not given back: it returns to the pool after expiry")
            }
        }
    }
}

async fn renew(shared: &Shared, ledger: &smista_ledger::Ledger, cfg: &ClusterSection) {
    let now = shared.clock.now();
    let unix = shared.clock.unix_ms(now) as i64;
    let ttl = cfg.lease_ttl_ms as i64;
    let views = shared.book.views(now);
    for n in shared.book.lease_needs(now) {
        let refusals = views.iter().find(|v| v.id == n.budget).map_or(0, |v| v.refusals);
        // The entry (its shard's write lock) is held only between awaits: `describe` reads it
        // synchronously on a worker thread, so a guard held across `acquire_lease` (which waits
        // as long as PostgreSQL does) would block every worker reading it, and then nothing
        // could poll the renewal that would release it (issue 25, fault 3). This task is the
        // only writer of `leases`, so what is copied out is still current when written back;
        // the write-back checks the period anyway.
        let (want, expires, admitting) = {
            let mut st = shared.leases.entry(n.budget.clone()).or_default();
            if st.period != n.period {
                *st = LeaseState {
                    period: n.period.clone(),
                    committed_before: n.committed_cents,
                    ..LeaseState::default()
                };
            }
            // Demand: what this node committed since the last round, plus a doubling while it
            // had to refuse (its lease was too small to show the real demand).
            let dt = cfg.lease_renew_ms.max(1) as f64;
            let grew = (n.committed_cents - st.committed_before).max(0) as f64 / dt;
            st.rate = 0.7 * st.rate + 0.3 * grew;
            let refused = refusals > st.refusals_before;
            st.committed_before = n.committed_cents;
            st.refusals_before = refusals;
            let mut target = ((st.rate * cfg.lease_horizon_ms as f64) as i64).max(cfg.lease_min_cents);
            if refused {
                target = target.max(2 * (n.lease_cents - n.committed_cents).max(cfg.lease_min_cents));
            }
            let headroom = n.lease_cents - n.committed_cents;
            let due = st.expires_unix_ms - unix < ttl / 2;
            let want = (due || headroom < target / 2).then(|| (target - headroom).max(0));
            (want, st.expires_unix_ms, st.granted_cents > n.committed_cents)
        };
        // A renewal PostgreSQL does not answer (a hung connection) is given up when this node
        // must stop admitting on the lease it holds, so the check below still runs in time.
        let lapse = (cfg.lease_renew_ms as i64) * 2;
        let patience = if admitting { (expires - lapse - unix).max(cfg.lease_renew_ms as i64) } else { ttl };
        let renewed = match want {
            Some(want) => Some(
                tokio::time::timeout(
                    Duration::from_millis(patience as u64),
                    ledger.acquire_lease(
                        &n.budget,
                        &n.period,
                        n.ceiling_cents,
                        n.allowance_cents,
                        want,
                        unix + ttl,
                        unix,
                    ),
                )
                .await
                .map_err(|_| format!("no answer from the ledger within {patience} ms"))
                .and_then(|r| r.map_err(|e| e.to_string())),
            ),
            None => None,
        };
        // The clock again: the renewal may have waited.
        let now_after = shared.clock.now();
        let unix_after = shared.clock.unix_ms(now_after) as i64;
        let (granted, renewed_unix_ms, expires) = {
            let mut st = shared.leases.entry(n.budget.clone()).or_default();
            if st.period != n.period {
                continue; // another period's state meanwhile (not with one renewing task)
            }
            match &renewed {
                Some(Ok(l)) => {
                    shared.book.set_lease(&n.budget, &n.period, now_after, l.granted_cents);
                    st.granted_cents = l.granted_cents;
                    st.expires_unix_ms = l.expires_unix_ms;
                    st.renewed_unix_ms = unix;
                    st.renewals += 1;
                }
                Some(Err(_)) => st.failures += 1,
                None => {}
            }
            // About to lapse without a renewal: stop admitting before another node may reclaim it.
            if st.expires_unix_ms - unix_after < lapse && st.granted_cents > n.committed_cents {
                shared.book.set_lease(&n.budget, &n.period, now_after, n.committed_cents);
                st.granted_cents = n.committed_cents;
                tracing::warn!(budget = %n.budget, "lease about to expire unrenewed: admissions on this node stop");
            }
            (st.granted_cents, st.renewed_unix_ms, st.expires_unix_ms)
        };
        match &renewed {
            Some(Ok(_)) => crate::metrics::lease_renewed(&n.budget, true),
            Some(Err(e)) => {
                crate::metrics::lease_renewed(&n.budget, false);
                tracing::warn!(budget = %n.budget, error = %e, lease_cents = n.lease_cents, "lease not renewed: admitting within the current lease");
            }
            None => {}
        }
        crate::metrics::lease_state(&n.budget, granted, unix_after - renewed_unix_ms);
        // Not waited for past the moment this node must stop admitting either (next round's
        // check), nor past one lease if nothing is admitted on it.
        let patience = if granted > n.committed_cents {
            (expires - lapse - unix_after).max(cfg.lease_renew_ms as i64)
        } else {
            ttl
        };
        let reclaim = ledger.reclaim_expired_leases(&n.budget, &n.period, unix_after - cfg.reclaim_grace_ms as i64);
        match tokio::time::timeout(Duration::from_millis(patience as u64), reclaim).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(budget = %n.budget, error = %e, "expired leases not reclaimed this round"),
            Err(_) => tracing::debug!(budget = %n.budget, "expired leases not reclaimed this round: no answer in time"),
        }
    }
}
