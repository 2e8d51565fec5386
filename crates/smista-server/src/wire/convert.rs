//! Conversions between the wire types of `smista.v1` and the core's types. Wire enums arrive as
//! `i32`: unknown numbers and required `*_UNSPECIFIED` values become INVALID_ARGUMENT here.

use smista_core::snapshot::{OperatorSnapshot, QueueSnapshot};
use smista_core::{Channel, Decision, DivertReason, Event, Fallback, Millis, OperatorStatus, Outcome, Segment};
use smista_proto::v1 as pb;
use tonic::Status;

/// A required channel.
pub fn channel(v: i32) -> Result<Channel, Status> {
    match pb::Channel::try_from(v) {
        Ok(pb::Channel::Voice) => Ok(Channel::Voice),
        Ok(pb::Channel::Video) => Ok(Channel::Video),
        Ok(pb::Channel::Callback) => Ok(Channel::Callback),
        Ok(pb::Channel::Chat) => Ok(Channel::Chat),
        Ok(pb::Channel::Unspecified) => Err(Status::invalid_argument("channel is required")),
        Err(_) => Err(Status::invalid_argument(format!("unknown channel {v}"))),
    }
}

/// A segment; UNSPECIFIED reads as GENERAL.
pub fn segment(v: i32) -> Result<Segment, Status> {
    match pb::Segment::try_from(v) {
        Ok(pb::Segment::Unspecified | pb::Segment::General) => Ok(Segment::General),
        Ok(pb::Segment::Vulnerable) => Ok(Segment::Vulnerable),
        Ok(pb::Segment::Intermediary) => Ok(Segment::Intermediary),
        Ok(pb::Segment::Urgent) => Ok(Segment::Urgent),
        Err(_) => Err(Status::invalid_argument(format!("unknown segment {v}"))),
    }
}

/// An optional fallback (UNSPECIFIED: keep).
pub fn fallback_opt(v: i32) -> Result<Option<Fallback>, Status> {
    match pb::Fallback::try_from(v) {
        Ok(pb::Fallback::Unspecified) => Ok(None),
        Ok(pb::Fallback::SelfServiceIvr) => Ok(Some(Fallback::SelfServiceIvr)),
        Ok(pb::Fallback::CallbackBooking) => Ok(Some(Fallback::CallbackBooking)),
        Ok(pb::Fallback::InternalPool) => Ok(Some(Fallback::InternalPool)),
        Ok(pb::Fallback::Announcement) => Ok(Some(Fallback::Announcement)),
        Err(_) => Err(Status::invalid_argument(format!("unknown fallback {v}"))),
    }
}

/// Core channel to wire.
#[must_use]
pub fn channel_pb(c: Channel) -> pb::Channel {
    match c {
        Channel::Voice => pb::Channel::Voice,
        Channel::Video => pb::Channel::Video,
        Channel::Callback => pb::Channel::Callback,
        Channel::Chat => pb::Channel::Chat,
    }
}

/// Core segment to wire.
#[must_use]
pub fn segment_pb(s: Segment) -> pb::Segment {
    match s {
        Segment::General => pb::Segment::General,
        Segment::Vulnerable => pb::Segment::Vulnerable,
        Segment::Intermediary => pb::Segment::Intermediary,
        Segment::Urgent => pb::Segment::Urgent,
    }
}

fn reason_pb(r: DivertReason) -> pb::DivertReason {
    match r {
        DivertReason::ExtraBudget => pb::DivertReason::ExtraBudget,
        DivertReason::QueueFull => pb::DivertReason::QueueFull,
        DivertReason::Closed => pb::DivertReason::Closed,
        DivertReason::NoOperators => pb::DivertReason::NoOperators,
        DivertReason::MaxWait => pb::DivertReason::MaxWait,
    }
}

fn fallback_pb(f: Fallback) -> pb::Fallback {
    match f {
        Fallback::SelfServiceIvr => pb::Fallback::SelfServiceIvr,
        Fallback::CallbackBooking => pb::Fallback::CallbackBooking,
        Fallback::InternalPool => pb::Fallback::InternalPool,
        Fallback::Announcement => pb::Fallback::Announcement,
    }
}

/// Core outcome to wire.
#[must_use]
pub fn outcome_pb(o: Outcome) -> pb::Outcome {
    match o {
        Outcome::Completed => pb::Outcome::Completed,
        Outcome::Diverted => pb::Outcome::Diverted,
        Outcome::Abandoned => pb::Outcome::Abandoned,
        Outcome::CancelledInService => pb::Outcome::CancelledInService,
        Outcome::Unreachable => pb::Outcome::Unreachable,
        Outcome::Transferred => pb::Outcome::Transferred,
    }
}

/// Core operator status to wire.
#[must_use]
pub fn status_pb(s: OperatorStatus) -> pb::OperatorStatus {
    match s {
        OperatorStatus::LoggedOut => pb::OperatorStatus::LoggedOut,
        OperatorStatus::Available => pb::OperatorStatus::Available,
        OperatorStatus::Paused => pb::OperatorStatus::Paused,
        OperatorStatus::WrapUp => pb::OperatorStatus::WrapUp,
    }
}

/// A decision as the wire response.
#[must_use]
pub fn decision(
    contact_id: String,
    d: &Decision,
    now: Millis,
    clock: &crate::clock::Clock,
) -> pb::OfferContactResponse {
    use pb::offer_contact_response::Decision as D;
    let decision = match d {
        Decision::Assigned { operator, queue, deadline } => D::Assigned(pb::Assigned {
            operator_id: operator.to_string(),
            queue: queue.to_string(),
            offer_deadline_ms: deadline.since(now),
        }),
        Decision::Queued { queue, position, estimated_wait_ms } => D::Queued(pb::Queued {
            queue: queue.to_string(),
            position: *position,
            estimated_wait_ms: *estimated_wait_ms,
        }),
        Decision::Diverted { reason, fallback, queue, reopens } => D::Diverted(pb::Diverted {
            reason: reason_pb(*reason) as i32,
            fallback: fallback_pb(*fallback) as i32,
            queue: queue.to_string(),
            reopens_unix_ms: reopens.map_or(0, |t| clock.unix_ms(t)),
        }),
    };
    pb::OfferContactResponse { contact_id, decision: Some(decision) }
}

/// A contact event for the stream (without its sequence, set by the hub). `None` for operator
/// events, which are not contact events.
#[must_use]
pub fn contact_event(e: &Event, now: Millis, unix_ms: u64) -> Option<pb::ContactEvent> {
    use pb::contact_event::Kind;
    let (contact, queue, kind) = match e {
        Event::Queued { contact, queue, position } => {
            (contact, queue, Kind::Queued(pb::EventQueued { position: *position }))
        }
        Event::Offered { contact, queue, operator, deadline, callback, .. } => (
            contact,
            queue,
            Kind::Offered(pb::EventOffered {
                operator_id: operator.to_string(),
                offer_deadline_ms: deadline.since(now),
                callback: *callback,
            }),
        ),
        Event::CallbackRequested { contact, queue, position } => {
            (contact, queue, Kind::CallbackRequested(pb::EventCallbackRequested { position: *position }))
        }
        Event::CallbackScheduled { contact, queue, attempts, due } => (
            contact,
            queue,
            Kind::CallbackScheduled(pb::EventCallbackScheduled {
                attempts: *attempts,
                due_unix_ms: unix_ms + due.since(now),
            }),
        ),
        Event::OfferTimedOut { contact, queue, operator } => {
            (contact, queue, Kind::OfferTimedOut(pb::EventOfferTimedOut { operator_id: operator.to_string() }))
        }
        Event::OfferDeclined { contact, queue, operator } => {
            (contact, queue, Kind::OfferDeclined(pb::EventOfferDeclined { operator_id: operator.to_string() }))
        }
        Event::Accepted { contact, queue, operator, waited_ms, .. } => (
            contact,
            queue,
            Kind::Accepted(pb::EventAccepted { operator_id: operator.to_string(), waited_ms: *waited_ms }),
        ),
        Event::Overflowed { contact, from, to } => (
            contact,
            from,
            Kind::Overflowed(pb::EventOverflowed { from_queue: from.to_string(), to_queue: to.to_string() }),
        ),
        Event::Diverted { contact, queue, reason, fallback, .. } => (
            contact,
            queue,
            Kind::Diverted(pb::EventDiverted {
                reason: reason_pb(*reason) as i32,
                fallback: fallback_pb(*fallback) as i32,
            }),
        ),
        Event::Finished { contact, queue, outcome, handle_ms, .. } => (
            contact,
            queue,
            Kind::Finished(pb::EventFinished { outcome: outcome_pb(*outcome) as i32, handle_ms: *handle_ms }),
        ),
        Event::Transferred { contact, queue, operator, to, to_operator, handle_ms, .. } => (
            contact,
            queue,
            Kind::Transferred(pb::EventTransferred {
                operator_id: operator.to_string(),
                to_queue: to.as_deref().unwrap_or("").to_owned(),
                to_operator_id: to_operator.as_deref().unwrap_or("").to_owned(),
                handle_ms: *handle_ms,
            }),
        ),
        Event::Consultation { contact, consultation, operator, queue, to_queue, to_operator, step } => (
            contact,
            queue,
            Kind::Consultation(pb::EventConsultation {
                consultation_id: consultation.to_string(),
                operator_id: operator.to_string(),
                to_operator_id: to_operator.as_deref().unwrap_or("").to_owned(),
                step: consult_step_pb(*step) as i32,
                to_queue: to_queue.to_string(),
            }),
        ),
        Event::OperatorStatus { .. } => return None,
    };
    Some(pb::ContactEvent {
        sequence: 0,
        epoch: 0,
        timestamp_ms: unix_ms,
        contact_id: contact.to_string(),
        queue: queue.to_string(),
        kind: Some(kind),
    })
}

/// A consultation's step on the wire.
#[must_use]
pub fn consult_step_pb(s: smista_core::ConsultStep) -> pb::ConsultationStep {
    use smista_core::ConsultStep as S;
    match s {
        S::Requested => pb::ConsultationStep::Requested,
        S::Accepted => pb::ConsultationStep::Accepted,
        S::Conference => pb::ConsultationStep::Conference,
        S::HandedOver => pb::ConsultationStep::HandedOver,
        S::Ended => pb::ConsultationStep::Ended,
    }
}

/// An `Offered` event as the operator desktop's offer.
#[must_use]
pub fn offer(e: &Event, now: Millis) -> Option<(String, Millis, pb::Offer)> {
    let Event::Offered {
        contact,
        queue,
        operator,
        channel,
        priority,
        segment,
        language,
        deadline,
        waited_ms,
        callback,
        consultation,
        group: _,
    } = e
    else {
        return None;
    };
    Some((
        operator.to_string(),
        *deadline,
        pb::Offer {
            contact_id: contact.to_string(),
            queue: queue.to_string(),
            channel: channel_pb(*channel) as i32,
            priority: *priority,
            segment: segment_pb(*segment) as i32,
            language: language.to_string(),
            offer_deadline_ms: deadline.since(now),
            waited_ms: *waited_ms,
            callback: *callback,
            consultation: consultation.as_ref().map(|(contact, from)| pb::ConsultationOf {
                contact_id: contact.to_string(),
                from_operator_id: from.to_string(),
            }),
        },
    ))
}

/// A queue snapshot on the wire.
#[must_use]
pub fn queue_snapshot(q: &QueueSnapshot) -> pb::QueueSnapshot {
    pb::QueueSnapshot {
        name: q.name.clone(),
        open: q.open,
        waiting: q.waiting,
        offered: q.offered,
        in_service: q.in_service,
        oldest_wait_ms: q.oldest_wait_ms,
        service_level: q.service_level,
        service_level_target: q.service_level_target,
        service_level_threshold_ms: q.service_level_threshold_ms,
        estimated_wait_ms: q.estimated_wait_ms,
        operators_logged_in: q.operators_logged_in,
        segments: q
            .segments
            .iter()
            .map(|s| pb::SegmentSnapshot {
                segment: segment_pb(s.segment) as i32,
                waiting: s.waiting,
                service_level: s.service_level,
                service_level_target: s.service_level_target,
                service_level_threshold_ms: s.service_level_threshold_ms,
            })
            .collect(),
    }
}

/// An operator snapshot on the wire: `since_unix_ms` is its `status_since_ms` on the wall
/// clock, `pause_label` the label of its pause reason's code.
#[must_use]
pub fn operator_snapshot(o: &OperatorSnapshot, since_unix_ms: u64, pause_label: &str) -> pb::OperatorSnapshot {
    pb::OperatorSnapshot {
        operator_id: o.id.clone(),
        group: o.group.clone(),
        status: status_pb(o.status) as i32,
        pause_reason: o.pause_reason.clone(),
        active_contacts: o.active_contacts,
        status_since_ms: o.status_since_ms,
        status_since_unix_ms: since_unix_ms,
        pause_label: pause_label.to_owned(),
        consulting_with: o.consulting_with.clone(),
        conference: o.conference,
    }
}
