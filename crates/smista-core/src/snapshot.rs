//! Read-only views of the engine for supervisors and metrics, and admin updates.

use crate::model::{Fallback, OperatorStatus, Segment};

/// A view of all queues and operators at one moment (each queue read under its own lock).
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Queues in configuration order.
    pub queues: Vec<QueueSnapshot>,
    /// Operators who have logged in at least once.
    pub operators: Vec<OperatorSnapshot>,
}

/// One queue.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSnapshot {
    /// Name.
    pub name: String,
    /// Accepting new contacts.
    pub open: bool,
    /// Contacts waiting.
    pub waiting: u32,
    /// Contacts offered, not yet accepted.
    pub offered: u32,
    /// Contacts in service.
    pub in_service: u32,
    /// Longest current wait.
    pub oldest_wait_ms: u64,
    /// Answered within threshold / (answered + abandoned after threshold), over the sliding
    /// window (`EngineConfig::sl_window_ms`).
    pub service_level: f64,
    /// Target share.
    pub service_level_target: f64,
    /// Threshold.
    pub service_level_threshold_ms: u64,
    /// Estimated wait of a contact arriving now.
    pub estimated_wait_ms: u64,
    /// Logged-in operators able to serve the queue.
    pub operators_logged_in: u32,
    /// Contacts accepted by an operator, since start.
    pub answered: u64,
    /// Of those, accepted within the threshold.
    pub answered_within_threshold: u64,
    /// Contacts abandoned after waiting longer than the threshold.
    pub abandoned_after_threshold: u64,
    /// Per segment, for a queue with segment rules: each ruled segment and the general one.
    pub segments: Vec<SegmentSnapshot>,
}

/// One segment of a queue's contacts.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentSnapshot {
    /// The segment.
    pub segment: Segment,
    /// Its contacts waiting.
    pub waiting: u32,
    /// Its service level over the sliding window, against its own threshold (1 with nothing
    /// answered or abandoned late).
    pub service_level: f64,
    /// Its target share.
    pub service_level_target: f64,
    /// Its threshold.
    pub service_level_threshold_ms: u64,
}

/// One operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorSnapshot {
    /// Staff id.
    pub id: String,
    /// Group.
    pub group: String,
    /// Visible status.
    pub status: OperatorStatus,
    /// Pause reason, when paused.
    pub pause_reason: String,
    /// Contacts offered or in service.
    pub active_contacts: u32,
    /// Engine time of the last status change.
    pub status_since_ms: u64,
    /// In a consultation: the colleague it is with (empty while nobody has taken it, or none).
    pub consulting_with: String,
    /// That consultation is a conference.
    pub conference: bool,
}

/// Run-time changes to a queue; `None` keeps the current value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueUpdate {
    /// Most contacts waiting (0: unbounded).
    pub max_length: Option<u32>,
    /// Maximum wait (0: unbounded); applies to contacts queued from now on.
    pub max_wait_ms: Option<u64>,
    /// Wrap-up after each contact.
    pub wrap_up_ms: Option<u64>,
    /// Offer acceptance timeout.
    pub offer_timeout_ms: Option<u64>,
    /// Fallback for diverted contacts.
    pub fallback: Option<Fallback>,
    /// Priority added to the queue's contacts (0..=100).
    pub priority: Option<u32>,
    /// Operator selection strategy.
    pub strategy: Option<crate::config::Strategy>,
    /// Required skills (replacing all): operators' queues are recomputed at once.
    pub skills: Option<Vec<crate::config::SkillRequirement>>,
    /// Opening hours: `Some(None)` removes them (always open).
    pub hours: Option<Option<crate::hours::HoursConfig>>,
    /// Overflow chain (queue names, replacing all).
    pub overflow: Option<Vec<String>>,
    /// Skill expansion steps (replacing all): operators' queues are recomputed at once.
    pub expansion: Option<Vec<crate::config::ExpansionStep>>,
}
