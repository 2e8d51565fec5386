//! `[cluster]`: this node among several (failover and budget leases on PostgreSQL).

use serde::Deserialize;

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
