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

use dashmap::DashMap;
use serde::Deserialize;
use tokio::sync::watch;

use crate::service::Shared;

/// `[cluster]`: this node among several sharing budgets.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// This node's id, stable across its restarts (empty: a single node owning the budgets;
    /// set, with the PostgreSQL ledger: budgets are spent through leases).
    pub node_id: String,
    /// How long a lease lasts unless renewed, ms.
    pub lease_ttl_ms: u64,
    /// How often leases are checked and renewed, ms.
    pub lease_renew_ms: u64,
    /// The node asks for enough to cover its demand over this long, ms.
    pub lease_horizon_ms: u64,
    /// Smallest amount asked for at once, cents.
    pub lease_min_cents: i64,
    /// A lease expired for longer than this is taken back to what its node recorded, ms.
    pub reclaim_grace_ms: u64,
    /// Active/standby: the nodes of `group` share one configuration and one PostgreSQL, and
    /// exactly one of them routes at a time (see `failover.rs`). Off: every node with a
    /// `node_id` routes, sharing budgets through leases.
    pub failover: bool,
    /// The active/standby group: its leadership lease, and the identity under which its active
    /// writes the ledger (so a new active rebuilds what the previous one had in service).
    pub group: String,
    /// Where clients reach this node, told to them by a standby (empty: the gRPC address).
    pub advertise_addr: String,
    /// How long the leadership lease lasts unless renewed, ms. A dead active is replaced after
    /// about this long.
    pub leader_ttl_ms: u64,
    /// How often the active renews, and a standby tries to take over, ms.
    pub leader_renew_ms: u64,
    /// After a takeover, for this long a queue whose desks have not logged in again yet queues
    /// its contacts instead of diverting them NO_OPERATORS, ms.
    pub takeover_grace_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            node_id: String::new(),
            lease_ttl_ms: 5_000,
            lease_renew_ms: 250,
            lease_horizon_ms: 10_000,
            lease_min_cents: 1_000,
            reclaim_grace_ms: 2_000,
            failover: false,
            group: "smista".into(),
            advertise_addr: String::new(),
            leader_ttl_ms: 1_000,
            leader_renew_ms: 150,
            takeover_grace_ms: 15_000,
        }
    }
}

impl ClusterSection {
    /// Checks what a node needs to start (after `--node-id` and the like were applied):
    /// `Err((key, problem))`.
    pub fn check_identity(&self) -> Result<(), (String, String)> {
        self.validate()?;
        if self.failover && self.node_id.is_empty() {
            return Err((
                "cluster.node_id".into(),
                "active/standby needs each node's id (--node-id or SMISTA_NODE_ID)".into(),
            ));
        }
        Ok(())
    }

    /// Checks the section: `Err((key, problem))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, p: &str| Err((format!("cluster.{k}"), p.to_owned()));
        if self.node_id.len() > 64 || self.node_id.chars().any(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(c))) {
            return bad("node_id", "at most 64 characters of [A-Za-z0-9_.-]");
        }
        if self.lease_renew_ms == 0 || self.lease_ttl_ms < 4 * self.lease_renew_ms {
            return bad("lease_ttl_ms", "must be at least four renewal periods");
        }
        if self.lease_min_cents <= 0 || self.lease_horizon_ms == 0 {
            return bad("lease_min_cents", "must be positive");
        }
        if self.failover {
            if self.group.is_empty()
                || self.group.len() > 64
                || self.group.chars().any(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            {
                return bad("group", "1 to 64 characters of [A-Za-z0-9_.-]");
            }
            if self.leader_renew_ms == 0 || self.leader_ttl_ms < 4 * self.leader_renew_ms {
                return bad("leader_ttl_ms", "must be at least four renewal periods");
            }
            if self.advertise_addr.len() > 256 {
                return bad("advertise_addr", "at most 256 characters");
            }
        }
        Ok(())
    }
}

/// What the snapshot and metrics show of one budget's lease.
#[derive(Clone, Debug, Default)]
pub struct LeaseState {
    /// Current period.
    pub period: String,
    /// Granted to this node in the period.
    pub granted_cents: i64,
    /// Lease expiry, Unix ms.
    pub expires_unix_ms: i64,
    /// Last successful renewal, Unix ms (0: never).
    pub renewed_unix_ms: i64,
    /// Successful renewals.
    pub renewals: u64,
    /// Failed renewals.
    pub failures: u64,
    committed_before: i64,
    refusals_before: u64,
    /// Demand estimate, cents per ms (exponential average).
    rate: f64,
}

/// The leases of this node, by budget.
pub type Leases = DashMap<String, LeaseState>;

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

/// The lease of `budget` for the snapshot: (granted, ms since the last renewal).
#[must_use]
pub fn describe(leases: &Leases, budget: &str, now_unix_ms: i64) -> Option<(i64, u64)> {
    leases.get(budget).map(|s| (s.granted_cents, u64::try_from(now_unix_ms - s.renewed_unix_ms).unwrap_or(0)))
}
