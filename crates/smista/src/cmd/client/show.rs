//! How `smista client` prints what the server answered: a readable line for people by default,
//! or one JSON object per answer (`--json`) for scripts. Durations read as people say them
//! ("15 s", "2 min 30 s"); enum values lose their proto prefix ("extra budget").

use serde_json::{json, Value};
use smista_proto::v1 as pb;
use smista_proto::v1::offer_contact_response::Decision;

/// `ms` as people read it: "350 ms" below a second, else seconds, minutes and hours, rounded to
/// the second.
#[must_use]
pub(crate) fn duration(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms} ms");
    }
    let s = (ms + 500) / 1_000;
    match (s / 3_600, (s % 3_600) / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// A proto enum value's name without its prefix, lower case, words apart:
/// `DIVERT_REASON_EXTRA_BUDGET` -> "extra budget".
#[must_use]
pub(crate) fn words(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_lowercase().replace('_', " ")
}

fn outcome(v: i32) -> String {
    pb::Outcome::try_from(v).map_or_else(|_| format!("outcome {v}"), |o| words(o.as_str_name(), "OUTCOME_"))
}

fn reason(v: i32) -> String {
    pb::DivertReason::try_from(v).map_or_else(|_| format!("reason {v}"), |r| words(r.as_str_name(), "DIVERT_REASON_"))
}

fn fallback(v: i32) -> String {
    pb::Fallback::try_from(v).map_or_else(|_| format!("fallback {v}"), |f| words(f.as_str_name(), "FALLBACK_"))
}

/// An error status as `not found: unknown queue ...`: the code in words, then the message, then
/// what caused it on this side if anything did (a connection lost during the call: tonic's
/// message alone may say only "transport error").
#[must_use]
pub(crate) fn status(s: &tonic::Status) -> String {
    let code = format!("{:?}", s.code());
    let mut words = String::new();
    for (i, c) in code.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            words.push(' ');
        }
        words.extend(c.to_lowercase());
    }
    let mut text = if s.message().is_empty() { words } else { format!("{words}: {}", s.message()) };
    if let Some(cause) = std::error::Error::source(s) {
        let cause = smista_client::connect::causes(cause);
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// An offer's decision.
#[must_use]
/// "estimated wait 2 min 30 s", or what 0 means: no operator works on the queue.
pub(crate) fn estimated_wait(ms: u64) -> String {
    if ms == 0 {
        "no wait estimate (no operator working on the queue)".to_owned()
    } else {
        format!("estimated wait {}", duration(ms))
    }
}

pub(crate) fn decision(d: Option<&Decision>) -> (String, Value) {
    match d {
        Some(Decision::Assigned(a)) => (
            format!("assigned to {} ({}), to accept within {}", a.operator_id, a.queue, duration(a.offer_deadline_ms)),
            json!({"decision": "assigned", "operator_id": a.operator_id, "queue": a.queue, "offer_deadline_ms": a.offer_deadline_ms}),
        ),
        Some(Decision::Queued(q)) => (
            format!("queued in {} at position {}, {}", q.queue, q.position, estimated_wait(q.estimated_wait_ms)),
            json!({"decision": "queued", "queue": q.queue, "position": q.position, "estimated_wait_ms": q.estimated_wait_ms}),
        ),
        Some(Decision::Diverted(v)) => {
            let reopens = if v.reopens_unix_ms > 0 {
                format!(", reopens at {} (Unix ms)", v.reopens_unix_ms)
            } else {
                String::new()
            };
            (
                format!("diverted ({}) to {}{reopens}", reason(v.reason), fallback(v.fallback)),
                json!({"decision": "diverted", "queue": v.queue, "reason": reason(v.reason), "fallback": fallback(v.fallback), "reopens_unix_ms": v.reopens_unix_ms}),
            )
        }
        None => ("no decision".into(), json!({"decision": null})),
    }
}

/// A contact event, as one line: `#12  call-2  pensions  offered to op-101 (15 s to accept)`.
#[must_use]
pub(crate) fn event(e: &pb::ContactEvent) -> (String, Value) {
    use pb::contact_event::Kind;
    let (what, detail) = match &e.kind {
        Some(Kind::Queued(q)) => {
            (format!("queued at position {}", q.position), json!({"kind": "queued", "position": q.position}))
        }
        Some(Kind::Offered(o)) => (
            format!(
                "offered to {} ({} to accept){}",
                o.operator_id,
                duration(o.offer_deadline_ms),
                if o.callback { ", a callback" } else { "" }
            ),
            json!({"kind": "offered", "operator_id": o.operator_id, "offer_deadline_ms": o.offer_deadline_ms, "callback": o.callback}),
        ),
        Some(Kind::OfferTimedOut(o)) => (
            format!("offer to {} timed out", o.operator_id),
            json!({"kind": "offer_timed_out", "operator_id": o.operator_id}),
        ),
        Some(Kind::OfferDeclined(o)) => {
            (format!("declined by {}", o.operator_id), json!({"kind": "offer_declined", "operator_id": o.operator_id}))
        }
        Some(Kind::Accepted(a)) => (
            format!("accepted by {} after waiting {}", a.operator_id, duration(a.waited_ms)),
            json!({"kind": "accepted", "operator_id": a.operator_id, "waited_ms": a.waited_ms}),
        ),
        Some(Kind::Overflowed(o)) => (
            format!("overflowed from {} to {}", o.from_queue, o.to_queue),
            json!({"kind": "overflowed", "from_queue": o.from_queue, "to_queue": o.to_queue}),
        ),
        Some(Kind::Diverted(d)) => (
            format!("diverted ({}) to {}", reason(d.reason), fallback(d.fallback)),
            json!({"kind": "diverted", "reason": reason(d.reason), "fallback": fallback(d.fallback)}),
        ),
        Some(Kind::Finished(f)) => (
            format!("finished: {}", outcome(f.outcome)),
            json!({"kind": "finished", "outcome": outcome(f.outcome), "handle_ms": f.handle_ms}),
        ),
        Some(Kind::CallbackRequested(c)) => (
            format!("callback requested, kept at position {}", c.position),
            json!({"kind": "callback_requested", "position": c.position}),
        ),
        Some(Kind::CallbackScheduled(c)) => (
            format!("callback attempt {} unanswered, next at {} (Unix ms)", c.attempts, c.due_unix_ms),
            json!({"kind": "callback_scheduled", "attempts": c.attempts, "due_unix_ms": c.due_unix_ms}),
        ),
        Some(Kind::Transferred(t)) => (
            match (t.to_queue.as_str(), t.to_operator_id.as_str()) {
                ("", _) => format!("transferred out of the centre by {}", t.operator_id),
                (q, "") => format!("transferred by {} to {q}", t.operator_id),
                (q, o) => format!("transferred by {} to {o} through {q}", t.operator_id),
            },
            json!({"kind": "transferred", "operator_id": t.operator_id, "to_queue": t.to_queue, "to_operator_id": t.to_operator_id, "handle_ms": t.handle_ms}),
        ),
        Some(Kind::Consultation(c)) => {
            let step = pb::ConsultationStep::try_from(c.step)
                .map_or_else(|_| "?".into(), |s| words(s.as_str_name(), "CONSULTATION_STEP_"));
            let with = if c.to_operator_id.is_empty() { String::new() } else { format!(" with {}", c.to_operator_id) };
            (
                format!(
                    "consultation {} asked by {} of {}{with}: {step}",
                    c.consultation_id, c.operator_id, c.to_queue
                ),
                json!({"kind": "consultation", "consultation_id": c.consultation_id, "operator_id": c.operator_id, "to_operator_id": c.to_operator_id, "to_queue": c.to_queue, "step": step}),
            )
        }
        None => ("(an event of a kind this client does not know)".into(), json!({"kind": null})),
    };
    let mut v = json!({"sequence": e.sequence, "epoch": e.epoch, "timestamp_ms": e.timestamp_ms, "contact_id": e.contact_id, "queue": e.queue});
    if let (Some(o), Value::Object(d)) = (v.as_object_mut(), detail) {
        o.extend(d);
    }
    (format!("#{:<4} {:<10} {:<12} {what}", e.sequence, e.contact_id, e.queue), v)
}

/// An offer pushed to a desk.
#[must_use]
pub(crate) fn offer(o: &pb::Offer) -> (String, Value) {
    let channel = pb::Channel::try_from(o.channel).map_or_else(|_| "?".into(), |c| words(c.as_str_name(), "CHANNEL_"));
    let about = o.consultation.as_ref().map_or_else(String::new, |c| {
        format!(", a consultation about {} asked by {}", c.contact_id, c.from_operator_id)
    });
    (
        format!(
            "offer {} from {} ({channel}{}{about}), to accept within {}",
            o.contact_id,
            o.queue,
            if o.callback { ", a callback" } else { "" },
            duration(o.offer_deadline_ms)
        ),
        json!({"contact_id": o.contact_id, "queue": o.queue, "channel": channel, "callback": o.callback, "offer_deadline_ms": o.offer_deadline_ms,
               "consultation_of": o.consultation.as_ref().map(|c| json!({"contact_id": c.contact_id, "from_operator_id": c.from_operator_id}))}),
    )
}

/// The final outcome of a contact.
#[must_use]
pub(crate) fn outcome_line(v: i32) -> (String, Value) {
    (format!("outcome: {}", outcome(v)), json!({"outcome": outcome(v)}))
}

/// An operator's status.
#[must_use]
pub(crate) fn operator_status(v: i32) -> String {
    pb::OperatorStatus::try_from(v)
        .map_or_else(|_| format!("status {v}"), |s| words(s.as_str_name(), "OPERATOR_STATUS_"))
}

/// A transfer's answer: `transferred after 2 min 5 s (wrap-up 10 s); queued at position 3 of
/// consultancy, about 4 min`.
#[must_use]
pub(crate) fn transferred(r: &pb::TransferContactResponse) -> (String, Value) {
    use pb::offer_contact_response::Decision as D;
    use pb::transfer_contact_response::Next;
    let leg = format!("transferred after {} (wrap-up {})", duration(r.handle_ms), duration(r.wrap_up_ms));
    let (next, value) = match &r.next {
        Some(Next::Queued(q)) => decision(Some(&D::Queued(q.clone()))),
        Some(Next::Assigned(a)) => decision(Some(&D::Assigned(a.clone()))),
        Some(Next::Diverted(d)) => decision(Some(&D::Diverted(d.clone()))),
        Some(Next::Ended(o)) => (format!("ended: {}", outcome(*o)), json!({"ended": outcome(*o)})),
        None => ("where it stands is not known".into(), json!({})),
    };
    let mut v = json!({"handle_ms": r.handle_ms, "wrap_up_ms": r.wrap_up_ms});
    if let (Some(o), Value::Object(d)) = (v.as_object_mut(), value) {
        o.extend(d);
    }
    (format!("{leg}; {next}"), v)
}

/// A consultation's answer: where it stands.
#[must_use]
pub(crate) fn consulting(r: &pb::ConsultContactResponse) -> (String, Value) {
    use pb::consult_contact_response::State;
    use pb::offer_contact_response::Decision as D;
    let (what, value) = match &r.state {
        Some(State::Queued(q)) => decision(Some(&D::Queued(q.clone()))),
        Some(State::Assigned(a)) => decision(Some(&D::Assigned(a.clone()))),
        Some(State::Ended(o)) => (format!("ended: {}", outcome(*o)), json!({"ended": outcome(*o)})),
        None => ("where it stands is not known".into(), json!({})),
    };
    (format!("consultation {what}"), value)
}

/// An appointment: `appt-1 consultancy with op-anna (Dott.ssa Anna) at 1800000000000 (Unix ms), booked`.
#[must_use]
pub(crate) fn appointment(a: &pb::Appointment) -> (String, Value) {
    let state = pb::AppointmentState::try_from(a.state)
        .map_or_else(|_| format!("state {}", a.state), |s| words(s.as_str_name(), "APPOINTMENT_STATE_"));
    let from = if a.for_contact_id.is_empty() { String::new() } else { format!(", from call {}", a.for_contact_id) };
    (
        format!(
            "{} {} with {} ({}) at {} (Unix ms), {state}{from}",
            a.appointment_id, a.queue, a.operator_id, a.display_name, a.start_unix_ms
        ),
        json!({"appointment_id": a.appointment_id, "queue": a.queue, "operator_id": a.operator_id,
               "display_name": a.display_name, "start_unix_ms": a.start_unix_ms, "end_unix_ms": a.end_unix_ms,
               "state": state, "for_contact_id": a.for_contact_id}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(350), "350 ms");
        assert_eq!(duration(14_929), "15 s");
        assert_eq!(duration(150_000), "2 min 30 s");
        assert_eq!(duration(120_000), "2 min");
        assert_eq!(duration(3_900_000), "1 h 5 min");
    }

    #[test]
    fn errors_name_the_code_in_words() {
        let s = tonic::Status::not_found("unknown queue `nope`");
        assert_eq!(status(&s), "not found: unknown queue `nope`");
        assert_eq!(status(&tonic::Status::failed_precondition("")), "failed precondition");
    }
}
