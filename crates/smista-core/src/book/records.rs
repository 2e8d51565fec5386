//! What the book reports and writes down: a budget's totals ([`BudgetView`]) and lease position
//! ([`LeaseNeed`]), the cost, hold and audit records the durable ledger keeps, and the
//! [`SettlementSink`] contract through which it receives them.

use crate::model::{Channel, Outcome};

/// Who changes a budget, and why (see [`BudgetBook::amend`](super::BudgetBook::amend)).
#[derive(Clone, Copy, Debug)]
pub struct AmendedBy<'a> {
    /// The authenticated principal.
    pub actor: &'a str,
    /// The client's free text.
    pub note: &'a str,
    /// The amendment's reference.
    pub reason: &'a str,
}

/// A change to a budget (contract amendment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// When, Unix ms.
    pub at_unix_ms: i64,
    /// Budget.
    pub budget: String,
    /// Who: the authenticated principal that made the change.
    pub actor: String,
    /// Free text the client gave with the change (e.g. the person's name at the admin console);
    /// never trusted as the actor.
    pub note: String,
    /// Which value, e.g. `ceiling_cents` or `tariff.voice`.
    pub field: String,
    /// Before.
    pub old_value: String,
    /// After.
    pub new_value: String,
    /// Why.
    pub reason: String,
}

/// A budget's totals in its current period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetView {
    /// Budget id.
    pub id: String,
    /// Period label (`2026-11`, or the start of a fixed period).
    pub period: String,
    /// Ceiling.
    pub ceiling_cents: i64,
    /// Cost of completed contacts.
    pub settled_cents: i64,
    /// Expected cost reserved by contacts admitted and not yet ended.
    pub reserved_cents: i64,
    /// What general (unprotected) contacts may commit by now under pacing.
    pub paced_allowance_cents: i64,
    /// Cost charged beyond reservations.
    pub overrun_cents: i64,
    /// Admissions refused (extra budget) this period.
    pub refusals: u64,
    /// This node's lease on the period when several nodes share the budget (`None`: no lease).
    pub lease_cents: Option<i64>,
    /// What calls in service cost by now beyond their reservations.
    pub running_overrun_cents: i64,
    /// The live exposure: settled + reserved + running overrun. Admission keeps it within the
    /// limit.
    pub exposure_cents: i64,
    /// Projected spend at the end of the period: the exposure plus the settled spend's average
    /// rate since the period began over what is left of it (the exposure alone in its first
    /// minute). Admission stops at the ceiling, so a projection above it means extra-budget
    /// diversions ahead.
    pub projected_cents: i64,
    /// When the money runs out at the settled spend's average rate since the period began:
    /// the instant the exposure reaches the ceiling (now if it has), Unix ms; `None` if it lasts
    /// the period (or nothing has been settled yet).
    pub exhausted_at_unix_ms: Option<i64>,
    /// The period's bounds, Unix ms.
    pub period_start_unix_ms: i64,
    /// End of the period (exclusive), Unix ms.
    pub period_end_unix_ms: i64,
}

/// What a settled contact cost, for the durable ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostRecord {
    /// Contact.
    pub contact: String,
    /// Budget.
    pub budget: String,
    /// Period label.
    pub period: String,
    /// Queue.
    pub queue: String,
    /// Operator group.
    pub group: String,
    /// The operator who handled it.
    pub operator: String,
    /// Channel.
    pub channel: Channel,
    /// Accepted, Unix ms.
    pub accepted_unix_ms: i64,
    /// Completed, Unix ms.
    pub completed_unix_ms: i64,
    /// Handle time.
    pub handle_ms: u64,
    /// Cost charged.
    pub cost_cents: i64,
    /// What had been reserved.
    pub reserved_cents: i64,
    /// How the contact ended: completed, or the caller hung up while in service.
    pub outcome: Outcome,
}

/// A reservation of a contact in service with an operator its budget pays: written down so a
/// completion that arrives after a restart settles against it, and so the money stays committed
/// meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRecord {
    /// Contact.
    pub contact: String,
    /// Budget.
    pub budget: String,
    /// Period label of the reservation.
    pub period: String,
    /// Amount reserved, cents.
    pub amount_cents: i64,
    /// Queue.
    pub queue: String,
    /// Operator group.
    pub group: String,
    /// The operator handling it.
    pub operator: String,
    /// Channel.
    pub channel: Channel,
    /// Accepted, Unix ms.
    pub accepted_unix_ms: i64,
    /// When the contact arrived (its original arrival after a failover), Unix ms; 0 only in a
    /// hold written by a version that did not record it.
    pub arrived_unix_ms: i64,
}

/// Receives what must outlive the process (the durable ledger implements it). Calls come from
/// inside routing operations and must not block: a durable sink queues the write and lets the
/// caller wait for it outside the engine.
pub trait SettlementSink: Send + Sync + std::fmt::Debug {
    /// One settled contact; it also ends the contact's hold, if any.
    fn record(&self, r: &CostRecord);
    /// A funded contact went into service with an operator its budget pays.
    fn hold(&self, _h: &HoldRecord) {}
    /// A hold ended without a settlement.
    fn release(&self, _budget: &str, _contact: &str) {}
    /// A started hold moved to another contact: a consultation's, handed over to its contact
    /// (see [`crate::budget::BudgetGate::rename`]). A sink that writes the hand-over itself (the
    /// server's ledger, in one transaction with the first operator's transfer) ignores it.
    /// `accepted_unix_ms` is the hold's acceptance from then on (after the first leg's).
    fn renamed(&self, _budget: &str, _from: &str, _to: &str, _accepted_unix_ms: i64) {}
    /// A contract amendment.
    fn amended(&self, _a: &AuditRecord) {}
}

/// A budget's lease position on this node (see
/// [`BudgetBook::lease_needs`](super::BudgetBook::lease_needs)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseNeed {
    /// Budget.
    pub budget: String,
    /// Current period.
    pub period: String,
    /// When it ends, Unix ms.
    pub period_end_unix_ms: i64,
    /// What this node has committed in it (settled + reserved + running overrun).
    pub committed_cents: i64,
    /// The lease this node holds (cumulative grant).
    pub lease_cents: i64,
    /// The ceiling.
    pub ceiling_cents: i64,
    /// What the budget's rules (pacing, protected reserve) allow committed in all by now: the
    /// cap a grant must respect across every node.
    pub allowance_cents: i64,
}
