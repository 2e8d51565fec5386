//! The domain vocabulary: channels, segments, outcomes, diversions, and the requests and decisions
//! the engine exchanges with its callers.

use std::sync::Arc;

use crate::time::Millis;

/// The medium of a contact. Operator capacity is counted per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Inbound phone call; exclusive (blocks every other channel on the operator).
    Voice,
    /// Video call / web meeting; exclusive.
    Video,
    /// Outbound callback; exclusive.
    Callback,
    /// Text chat; several may run at once on one operator.
    Chat,
}

impl Channel {
    /// All channels, in index order.
    pub const ALL: [Channel; 4] = [Channel::Voice, Channel::Video, Channel::Callback, Channel::Chat];

    /// Dense index 0..4.
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Exclusive channels need an operator with nothing else in hand, and block all other work.
    #[must_use]
    pub fn is_exclusive(self) -> bool {
        !matches!(self, Channel::Chat)
    }

    /// Highest concurrency an operator may declare for the channel.
    #[must_use]
    pub fn max_capacity(self) -> u8 {
        if self.is_exclusive() {
            1
        } else {
            8
        }
    }

    /// Lower-case name, used in metrics labels and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Video => "video",
            Channel::Callback => "callback",
            Channel::Chat => "chat",
        }
    }

    /// The channel named `name` (its [`as_str`](Channel::as_str) form).
    #[must_use]
    pub fn parse(name: &str) -> Option<Channel> {
        [Channel::Voice, Channel::Video, Channel::Callback, Channel::Chat].into_iter().find(|c| c.as_str() == name)
    }
}

/// Who the citizen is, as far as routing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// An ordinary citizen.
    #[default]
    General,
    /// Elderly or digitally excluded.
    Vulnerable,
    /// A patronato or accredited intermediary.
    Intermediary,
    /// A case flagged urgent.
    Urgent,
}

impl Segment {
    /// Every segment, in index order.
    pub const ALL: [Segment; 4] = [Segment::General, Segment::Vulnerable, Segment::Intermediary, Segment::Urgent];

    /// Index 0..4 (for per-segment arrays).
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Segment::General => "general",
            Segment::Vulnerable => "vulnerable",
            Segment::Intermediary => "intermediary",
            Segment::Urgent => "urgent",
        }
    }

    /// The segment named `name` ([`Segment::as_str`]).
    #[must_use]
    pub fn parse(name: &str) -> Option<Segment> {
        Segment::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// Why a contact was not routed to an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DivertReason {
    /// The budget cannot fund it and no unbudgeted operator can take it.
    ExtraBudget,
    /// The queue and its overflow chain are full.
    QueueFull,
    /// The queue is closed.
    Closed,
    /// No operator who could serve the queue is logged in.
    NoOperators,
    /// Maximum wait reached and the overflow chain is exhausted.
    MaxWait,
}

impl DivertReason {
    /// Lower-case name, used as a metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DivertReason::ExtraBudget => "extra_budget",
            DivertReason::QueueFull => "queue_full",
            DivertReason::Closed => "closed",
            DivertReason::NoOperators => "no_operators",
            DivertReason::MaxWait => "max_wait",
        }
    }

    /// The reason named by [`DivertReason::as_str`], as written in the ledger.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [
            DivertReason::ExtraBudget,
            DivertReason::QueueFull,
            DivertReason::Closed,
            DivertReason::NoOperators,
            DivertReason::MaxWait,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }
}

/// What the telephony platform should do with a diverted contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Self-service IVR.
    #[default]
    SelfServiceIvr,
    /// Callback booking.
    CallbackBooking,
    /// Internal staff pool outside smista.
    InternalPool,
    /// A clear announcement.
    Announcement,
}

impl Fallback {
    /// Lower-case name, as in the configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::SelfServiceIvr => "self_service_ivr",
            Fallback::CallbackBooking => "callback_booking",
            Fallback::InternalPool => "internal_pool",
            Fallback::Announcement => "announcement",
        }
    }

    /// The fallback named by [`Fallback::as_str`].
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [Fallback::SelfServiceIvr, Fallback::CallbackBooking, Fallback::InternalPool, Fallback::Announcement]
            .into_iter()
            .find(|f| f.as_str() == name)
    }
}

/// The final outcome of a contact. Every contact ends in exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Handled and completed by an operator.
    Completed,
    /// Diverted.
    Diverted,
    /// Cancelled before an operator accepted.
    Abandoned,
    /// Cancelled while in service, never completed.
    CancelledInService,
    /// A callback whose every attempt went unanswered (the queue's `callback_retry_ms`
    /// schedule ran out).
    Unreachable,
    /// Sent out of the centre by its operator (a blind transfer to an external destination the
    /// platform dials): the contact's last leg ended with that operator.
    Transferred,
}

impl Outcome {
    /// Lower-case name, used as a metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Diverted => "diverted",
            Outcome::Abandoned => "abandoned",
            Outcome::CancelledInService => "cancelled_in_service",
            Outcome::Unreachable => "unreachable",
            Outcome::Transferred => "transferred",
        }
    }

    /// The outcome named by [`Outcome::as_str`], as written in the ledger.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        [
            Outcome::Completed,
            Outcome::Diverted,
            Outcome::Abandoned,
            Outcome::CancelledInService,
            Outcome::Unreachable,
            Outcome::Transferred,
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
    }
}

/// What an operator is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperatorStatus {
    /// Not logged in.
    LoggedOut,
    /// Ready for offers on free channel slots.
    Available,
    /// Paused; no offers.
    Paused,
    /// After-call work; no offers until it ends.
    WrapUp,
}

impl OperatorStatus {
    /// Lower-case name, used as a metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorStatus::LoggedOut => "logged_out",
            OperatorStatus::Available => "available",
            OperatorStatus::Paused => "paused",
            OperatorStatus::WrapUp => "wrap_up",
        }
    }
}

/// A skill with a level 1..=10.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skill {
    /// Skill name (e.g. `pensions`, `naspi`, `de`).
    pub name: String,
    /// Level 1 (novice) ..= 10 (expert).
    pub level: u8,
}

/// A new contact to route.
#[derive(Clone, Debug)]
pub struct OfferRequest {
    /// Idempotency key chosen by the platform.
    pub contact_id: String,
    /// Requested queue name.
    pub queue: String,
    /// Channel.
    pub channel: Channel,
    /// Business priority 0..=100.
    pub priority: u32,
    /// Language skill the contact needs (empty: none).
    pub language: String,
    /// Segment.
    pub segment: Segment,
    /// Longest wait the caller should be given (0: the queue's maximum wait).
    pub max_patience_ms: u64,
    /// When the contact first arrived, if before this offer (a contact offered again after a
    /// failover keeps its place); a time after `now` is read as `now`.
    pub arrived: Option<Millis>,
    /// Keyed hash of the caller's number, computed by the platform (empty: unknown). Kept only
    /// by queues with a `resume_window_ms`, only for that window after a hang-up, to give a
    /// caller who rings again their place back.
    pub caller_key: String,
}

/// The routing decision for an offered contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Offered to an operator, who must accept by `deadline`.
    Assigned {
        /// The operator.
        operator: Arc<str>,
        /// The queue it was taken from.
        queue: Arc<str>,
        /// Accept deadline.
        deadline: Millis,
    },
    /// Waiting in a queue.
    Queued {
        /// The queue.
        queue: Arc<str>,
        /// 1-based position among the queue's contacts of the same channel.
        position: u32,
        /// Estimated wait in milliseconds.
        estimated_wait_ms: u64,
    },
    /// Will not reach an operator.
    Diverted {
        /// Why.
        reason: DivertReason,
        /// What to do instead.
        fallback: Fallback,
        /// The queue whose policy decided.
        queue: Arc<str>,
        /// For a queue closed by its opening hours ([`DivertReason::Closed`]): when it opens
        /// next (engine time), for the announcement. `None` otherwise, or when an admin closed
        /// it, or it does not open within a year.
        reopens: Option<Millis>,
    },
}

/// An operator logging in.
#[derive(Clone, Debug)]
pub struct LoginRequest {
    /// Staff id.
    pub operator_id: String,
    /// Operator group from the configuration.
    pub group: String,
    /// Skills with levels.
    pub skills: Vec<Skill>,
    /// Channel capacities; empty means one voice contact.
    pub channels: Vec<(Channel, u8)>,
    /// Desktop session id, for idempotent retries.
    pub session_id: String,
    /// Start paused with this reason instead of available: no offer until the operator asks for
    /// AVAILABLE.
    pub paused: Option<String>,
}

/// The pause reason the engine gives an operator who let an offer time out.
pub const NO_ANSWER: &str = "no answer";

/// The state an operator asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestedState {
    /// Ready for offers.
    Available,
    /// Paused with a reason.
    Paused(String),
}

/// What `complete` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Milliseconds from acceptance to completion.
    pub handle_ms: u64,
    /// Wrap-up applied (0 when none).
    pub wrap_up_ms: u64,
}
