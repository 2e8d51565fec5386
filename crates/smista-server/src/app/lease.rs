//! This node's budget leases as the services read them: what each lease grants and when it was
//! last renewed. `tasks::lease` keeps them (see there for the renewal and its failure modes).

use dashmap::DashMap;

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
    pub(crate) committed_before: i64,
    pub(crate) refusals_before: u64,
    /// Demand estimate, cents per ms (exponential average).
    pub(crate) rate: f64,
}

/// The leases of this node, by budget.
pub type Leases = DashMap<String, LeaseState>;

/// The lease of `budget` for the snapshot: (granted, ms since the last renewal).
#[must_use]
pub fn describe(leases: &Leases, budget: &str, now_unix_ms: i64) -> Option<(i64, u64)> {
    leases.get(budget).map(|s| (s.granted_cents, u64::try_from(now_unix_ms - s.renewed_unix_ms).unwrap_or(0)))
}
