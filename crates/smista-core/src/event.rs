//! What happens to contacts and operators, returned as data by every engine operation so the
//! transport can publish it (event stream, operator offers, metrics) without the core doing IO.

use std::sync::Arc;

use crate::model::{Channel, DivertReason, Fallback, OperatorStatus, Outcome, Segment};
use crate::time::Millis;

/// One thing that happened. Contact and operator ids are shared strings; queue names too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A contact entered a queue (arrival, return after decline/time-out, or overflow).
    Queued {
        /// Contact.
        contact: Arc<str>,
        /// Queue.
        queue: Arc<str>,
        /// 1-based position at the time.
        position: u32,
    },
    /// A contact was offered to an operator.
    Offered {
        /// Contact.
        contact: Arc<str>,
        /// Queue it was taken from.
        queue: Arc<str>,
        /// Operator.
        operator: Arc<str>,
        /// The operator's group.
        group: Arc<str>,
        /// Channel.
        channel: Channel,
        /// Effective priority (queue + contact).
        priority: u32,
        /// Segment.
        segment: Segment,
        /// Language wish.
        language: Arc<str>,
        /// Accept deadline.
        deadline: Millis,
        /// Wait so far, in milliseconds.
        waited_ms: u64,
        /// An outbound callback: once the operator accepts, the platform dials the citizen.
        callback: bool,
        /// A consultation: the contact it is about and the operator who asks.
        consultation: Option<(Arc<str>, Arc<str>)>,
    },
    /// A waiting caller chose to be called back: the contact keeps its place (its arrival and
    /// priority), the platform drops the call, and it is offered as a callback at the head.
    CallbackRequested {
        /// Contact.
        contact: Arc<str>,
        /// Queue.
        queue: Arc<str>,
        /// 1-based position at the time.
        position: u32,
    },
    /// A callback's attempt went unanswered; the next one is scheduled.
    CallbackScheduled {
        /// Contact.
        contact: Arc<str>,
        /// Queue.
        queue: Arc<str>,
        /// Attempts made so far.
        attempts: u32,
        /// When it goes back in line (engine time; within the queue's opening hours).
        due: Millis,
    },
    /// The offer lapsed: the operator did not accept in time (and was paused "no answer") or
    /// logged out. The contact is back at the head of its queue.
    OfferTimedOut {
        /// Contact.
        contact: Arc<str>,
        /// Queue.
        queue: Arc<str>,
        /// Operator who did not answer.
        operator: Arc<str>,
    },
    /// The operator declined: contact back at the head of its queue.
    OfferDeclined {
        /// Contact.
        contact: Arc<str>,
        /// Queue.
        queue: Arc<str>,
        /// Operator.
        operator: Arc<str>,
    },
    /// The operator accepted: in service.
    Accepted {
        /// Contact.
        contact: Arc<str>,
        /// Queue.
        queue: Arc<str>,
        /// Operator.
        operator: Arc<str>,
        /// Channel.
        channel: Channel,
        /// Wait from arrival to acceptance.
        waited_ms: u64,
        /// Whether its budget holds a reservation for it (written to the ledger as a hold);
        /// `false` for a contact no budget pays this operator for (internal staff, a queue
        /// without a budget), which a durable server records as a service of no budget.
        held: bool,
    },
    /// Moved to the next queue of the overflow chain.
    Overflowed {
        /// Contact.
        contact: Arc<str>,
        /// Queue left.
        from: Arc<str>,
        /// Queue entered.
        to: Arc<str>,
    },
    /// Diverted (at arrival or after the maximum wait).
    Diverted {
        /// Contact.
        contact: Arc<str>,
        /// Queue whose policy decided.
        queue: Arc<str>,
        /// Channel.
        channel: Channel,
        /// Why.
        reason: DivertReason,
        /// What instead.
        fallback: Fallback,
    },
    /// The contact ended. Exactly one per contact.
    Finished {
        /// Contact.
        contact: Arc<str>,
        /// Last queue.
        queue: Arc<str>,
        /// Channel.
        channel: Channel,
        /// Outcome.
        outcome: Outcome,
        /// Wait from arrival until acceptance or end.
        waited_ms: u64,
        /// Handle time for completed contacts, else 0.
        handle_ms: u64,
        /// The operator who had it in service, if one did (completed, or hung up in service).
        operator: Option<Arc<str>>,
        /// That operator's group.
        group: Option<Arc<str>>,
        /// Wrap-up applied after a completion, else 0.
        wrap_up_ms: u64,
        /// When it arrived (its original arrival when offered again with one), engine time.
        arrived: Millis,
        /// Its segment.
        segment: Segment,
        /// The budget charged for it and the cents charged, if a budget settled it.
        charged: Option<(Arc<str>, i64)>,
    },
    /// An operator moved a contact in service on: their leg ended (like a completion: handle
    /// time, wrap-up, its budget charged) and the contact waits in `to` (for anyone of it, or
    /// for `to_operator` first), or left the centre (`to` is `None`; a `Finished` follows with
    /// outcome TRANSFERRED).
    Transferred {
        /// Contact.
        contact: Arc<str>,
        /// The queue of the leg that ended.
        queue: Arc<str>,
        /// Channel.
        channel: Channel,
        /// The operator whose leg ended.
        operator: Arc<str>,
        /// That operator's group.
        group: Arc<str>,
        /// The queue the next leg waits in; `None`: out of the centre.
        to: Option<Arc<str>>,
        /// The operator the next leg is for, if one was named.
        to_operator: Option<Arc<str>>,
        /// When the leg was accepted.
        accepted: Millis,
        /// When the contact first arrived (it keeps its place).
        arrived: Millis,
        /// Until when only `to_operator` may take it.
        pinned_until: Option<Millis>,
        /// The leg's handle time.
        handle_ms: u64,
        /// The wrap-up that started.
        wrap_up_ms: u64,
        /// The budget charged for the leg and the cents, if a budget settled it.
        charged: Option<(Arc<str>, i64)>,
    },
    /// A step of a consultation (see [`crate::ConsultStep`]): `operator` asked, about
    /// `contact`, for consultation `consultation` of `to_queue`.
    Consultation {
        /// The contact it is about.
        contact: Arc<str>,
        /// The consultation (a contact of its own).
        consultation: Arc<str>,
        /// The operator who asked (the first).
        operator: Arc<str>,
        /// The contact's queue.
        queue: Arc<str>,
        /// The queue the consultation was asked of.
        to_queue: Arc<str>,
        /// The second operator: named (requested), who accepted, who is in conference, who
        /// carries on, or who was in it when it ended (`None` while nobody took it).
        to_operator: Option<Arc<str>>,
        /// What happened.
        step: crate::ConsultStep,
    },
    /// An operator's status changed.
    OperatorStatus {
        /// Operator.
        operator: Arc<str>,
        /// Operator group.
        group: Arc<str>,
        /// Previous status.
        from: OperatorStatus,
        /// New status.
        to: OperatorStatus,
        /// Why paused, when `to` is PAUSED (the desk's reason code, or the engine's own: "no
        /// answer", or the server's at a login after a restart); empty otherwise. A paused
        /// operator who pauses again with another reason reports PAUSED -> PAUSED with it.
        reason: Arc<str>,
    },
}

impl Event {
    /// The contact the event is about, if any.
    #[must_use]
    pub fn contact(&self) -> Option<&Arc<str>> {
        match self {
            Event::Queued { contact, .. }
            | Event::Offered { contact, .. }
            | Event::OfferTimedOut { contact, .. }
            | Event::OfferDeclined { contact, .. }
            | Event::Accepted { contact, .. }
            | Event::Overflowed { contact, .. }
            | Event::Diverted { contact, .. }
            | Event::Finished { contact, .. }
            | Event::CallbackRequested { contact, .. }
            | Event::CallbackScheduled { contact, .. }
            | Event::Transferred { contact, .. }
            | Event::Consultation { contact, .. } => Some(contact),
            Event::OperatorStatus { .. } => None,
        }
    }

    /// The queue a contact event is reported under (for an overflow, the queue it left), if any.
    #[must_use]
    pub fn queue(&self) -> Option<&Arc<str>> {
        match self {
            Event::Queued { queue, .. }
            | Event::Offered { queue, .. }
            | Event::OfferTimedOut { queue, .. }
            | Event::OfferDeclined { queue, .. }
            | Event::Accepted { queue, .. }
            | Event::Diverted { queue, .. }
            | Event::Finished { queue, .. }
            | Event::CallbackRequested { queue, .. }
            | Event::CallbackScheduled { queue, .. }
            | Event::Transferred { queue, .. }
            | Event::Consultation { queue, .. } => Some(queue),
            Event::Overflowed { from, .. } => Some(from),
            Event::OperatorStatus { .. } => None,
        }
    }
}
