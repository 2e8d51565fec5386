//! `OperatorService.TransferContact`: an operator moves a contact in service on. The engine ends
//! the leg and places the next one (`smista_core::Engine::transfer_at`); `Shared::publish` hands
//! the leg's cost record and the transfer record to the ledger; the reply waits until both are
//! durable. A repeated transfer the engine no longer knows (after a restart or a failover) is
//! answered from the transfer record; a contact carried across a restart (its hold or service
//! record) is ended by the server and its next leg offered as the platform's offer would.

use smista_core::book::HoldRecord;
use smista_core::{Millis, Next, OfferRequest, Outcome, RoutingError, TransferTarget};
use smista_ledger::TransferRecord;
use smista_proto::v1 as pb;
use tonic::Status;

use crate::app::Shared;
use crate::wire::convert;
use crate::wire::error::client_error;

/// Longest `TransferOut.destination` accepted (it is never stored).
const MAX_DESTINATION: usize = 128;

/// A named operator as a target (TransferContact's and ConsultContact's).
pub(crate) fn named(o: &pb::TransferToOperator) -> TransferTarget {
    TransferTarget::Operator { operator: o.operator_id.clone(), queue: o.queue.clone(), timeout_ms: o.timeout_ms }
}

/// Serves one TransferContact (the caller's principal was checked).
pub async fn transfer(s: &Shared, req: pb::TransferContactRequest) -> Result<pb::TransferContactResponse, Status> {
    use pb::transfer_contact_request::Target;
    let target = match &req.target {
        Some(Target::Queue(q)) => TransferTarget::Queue(q.clone()),
        Some(Target::Operator(o)) => named(o),
        Some(Target::External(x)) => {
            if x.destination.len() > MAX_DESTINATION || x.destination.chars().any(smista_core::error::is_hazard) {
                return Err(Status::invalid_argument(format!(
                    "external.destination: at most {MAX_DESTINATION} bytes, no control or invisible characters"
                )));
            }
            TransferTarget::External
        }
        None => return Err(Status::invalid_argument("target: name a queue, an operator or external")),
    };
    let now = s.clock.now();
    // When the leg ended, as the desk says (held to [acceptance, now] by the engine).
    let ended = s.clock.desk_ended(req.ended_unix_ms, now);
    if let Some(h) = s.recovered(&req.contact_id) {
        if h.operator != req.operator_id {
            return Err(Status::failed_precondition(format!(
                "contact `{}` is in service with another operator",
                smista_core::error::clip(&req.contact_id)
            )));
        }
        return carried(s, &req, &target, h, ended, now).await;
    }
    let (r, published) = s.about(&req.contact_id, now, |ev| {
        s.engine.transfer_at(&req.operator_id, &req.contact_id, &target, req.wrap_up_ms, ended, now, ev)
    });
    match r {
        Ok(t) => {
            s.acknowledge(&req.contact_id, &published).await?;
            Ok(response(s, t.completion.handle_ms, t.completion.wrap_up_ms, t.next, now))
        }
        // Not this life's transfer: maybe one made before a restart or a failover, repeated (the
        // operator not logged in again yet, the contact unknown, or offered again since).
        Err(e @ (RoutingError::UnknownContact(_) | RoutingError::UnknownOperator(_) | RoutingError::WrongState(_))) => {
            match earlier(s, &req, &target, now).await? {
                Some(reply) => Ok(reply),
                None => Err(client_error(e)),
            }
        }
        Err(e) => Err(client_error(e)),
    }
}

/// The answer to a transfer repeated after a restart or a failover, from its transfer record:
/// the same leg, and where the contact stands now (`None`: no such transfer on record).
async fn earlier(
    s: &Shared,
    req: &pb::TransferContactRequest,
    target: &TransferTarget,
    now: Millis,
) -> Result<Option<pb::TransferContactResponse>, Status> {
    let Some(ledger) = &s.ledger else { return Ok(None) };
    let Some(record) =
        ledger.transfer_of(&req.contact_id, &req.operator_id).await.map_err(crate::wire::error::ledger_status)?
    else {
        return Ok(None);
    };
    let named = match target {
        TransferTarget::Operator { operator, .. } => operator.as_str(),
        _ => "",
    };
    if record.to_queue != target.queue() || record.to_operator != named {
        let mut was = if record.to_queue.is_empty() {
            "out of the centre".to_owned()
        } else {
            format!("to `{}`", record.to_queue)
        };
        if !record.to_operator.is_empty() {
            was.push_str(&format!(" for `{}`", record.to_operator));
        }
        return Err(Status::failed_precondition(format!(
            "contact `{}` was already transferred by this operator, {was}",
            smista_core::error::clip(&req.contact_id)
        )));
    }
    let next = match s.engine.standing(&req.contact_id, now) {
        Some(n) => n,
        None => match ledger.end_of(&req.contact_id).await.map_err(crate::wire::error::ledger_status)? {
            // Ended since the transfer (this life has not met it): how.
            Some(end) if end.ended_unix_ms >= record.at_unix_ms => match end.diverted {
                Some((reason, fallback)) => Next::Placed(smista_core::Decision::Diverted {
                    reason,
                    fallback,
                    queue: end.queue.as_str().into(),
                    reopens: None,
                }),
                None => Next::Ended(end.outcome),
            },
            _ if record.to_queue.is_empty() => Next::Ended(Outcome::Transferred),
            // Waiting to be offered again by the platform: its place is not known yet.
            _ => Next::Placed(smista_core::Decision::Queued {
                queue: record.to_queue.as_str().into(),
                position: 0,
                estimated_wait_ms: 0,
            }),
        },
    };
    Ok(Some(response(s, record.handle_ms, record.wrap_up_ms, next, now)))
}

/// A transfer of a contact carried across a restart or a takeover: this life did not route it,
/// so the server ends its leg (as CompleteContact of it would, with outcome TRANSFERRED), records
/// the transfer, and places the next leg as the platform's offer of it would after a restart.
/// The target is checked first (known, staffed, not full), so those refusals change nothing;
/// its budget admits the next leg at placement, after the leg ended, so a carried contact the
/// target's budget cannot fund gets the target's fallback rather than staying with its operator.
async fn carried(
    s: &Shared,
    req: &pb::TransferContactRequest,
    target: &TransferTarget,
    h: HoldRecord,
    ended: Millis,
    now: Millis,
) -> Result<pb::TransferContactResponse, Status> {
    let Some(ledger) = &s.ledger else { return Err(Status::unavailable("no ledger")) };
    let to = target.queue().to_owned();
    let pin = match target {
        TransferTarget::Operator { operator, timeout_ms, .. } => {
            if *timeout_ms > smista_core::MAX_PIN_MS {
                return Err(Status::invalid_argument("timeout_ms: above one hour"));
            }
            if !s.engine.is_logged_in(operator) {
                return Err(Status::not_found(format!(
                    "operator `{}` is not logged in",
                    smista_core::error::clip(operator)
                )));
            }
            Some((operator.clone(), now.plus(*timeout_ms)))
        }
        _ => None,
    };
    if !to.is_empty() {
        s.engine.transfer_target_takes(&to, &req.operator_id, now).map_err(client_error)?;
    }
    let unix = |m: Millis| i64::try_from(s.clock.unix_ms(m)).unwrap_or(i64::MAX);
    let arrived_unix_ms = if h.arrived_unix_ms > 0 { h.arrived_unix_ms } else { h.accepted_unix_ms };
    let mut record = TransferRecord {
        contact: req.contact_id.clone(),
        at_unix_ms: unix(now),
        from_operator: req.operator_id.clone(),
        from_queue: h.queue.clone(),
        to_queue: to.clone(),
        to_operator: pin.as_ref().map(|(o, _)| o.clone()).unwrap_or_default(),
        pinned_until_unix_ms: pin.as_ref().map_or(0, |(_, until)| unix(*until)),
        handle_ms: 0,
        wrap_up_ms: 0,
        arrived_unix_ms,
        paid: if h.budget.is_empty() { Vec::new() } else { vec![h.budget.clone()] },
        consultation: String::new(),
        accepted_unix_ms: h.accepted_unix_ms,
    };
    if !to.is_empty() {
        // Before the leg ends: an offer of it racing this transfer goes where it is sent.
        s.transfers.insert(req.contact_id.clone(), record.clone());
    }
    let ends = to.is_empty();
    // The leg's end on the stream: its handle time as `end_carried` will count it.
    let handle_ms = u64::try_from(unix(ended).saturating_sub(h.accepted_unix_ms)).unwrap_or(0);
    let event = smista_core::Event::Transferred {
        contact: req.contact_id.as_str().into(),
        queue: h.queue.as_str().into(),
        channel: h.channel,
        operator: req.operator_id.as_str().into(),
        group: h.group.as_str().into(),
        to: (!to.is_empty()).then(|| to.as_str().into()),
        to_operator: pin.as_ref().map(|(o, _)| o.as_str().into()),
        accepted: s.clock.from_unix(h.accepted_unix_ms).unwrap_or(now),
        arrived: s.clock.from_unix(arrived_unix_ms).unwrap_or(now),
        pinned_until: pin.as_ref().map(|(_, until)| *until),
        handle_ms,
        wrap_up_ms: 0,
        charged: None,
    };
    let prelude = if ends { std::slice::from_ref(&event) } else { &[] };
    let Some(end) =
        s.end_carried(&req.contact_id, Some(&req.operator_id), Outcome::Transferred, ended, now, ends, prelude).await?
    else {
        s.transfers.remove(&req.contact_id);
        // Ended meanwhile by a concurrent request: answer as a repeated transfer would.
        return match earlier(s, req, target, now).await? {
            Some(reply) => Ok(reply),
            None => Err(Status::failed_precondition(format!(
                "contact `{}` ended meanwhile",
                smista_core::error::clip(&req.contact_id)
            ))),
        };
    };
    record.handle_ms = end.handle_ms;
    ledger.transferred(record.clone());
    if !ends {
        // Followers of the stream see the leg end as for a contact this life routed (out of
        // the centre, `end_carried` tells it with the contact's end).
        s.log.publish(&[event], now, s.clock.unix_ms(now));
    }
    if to.is_empty() {
        ledger
            .durable(&smista_ledger::Key::Contact(req.contact_id.clone()))
            .await
            .map_err(crate::wire::error::ledger_status)?;
        return Ok(response(s, end.handle_ms, 0, Next::Ended(Outcome::Transferred), now));
    }
    s.transfers.insert(req.contact_id.clone(), record.clone());
    let offer = OfferRequest {
        contact_id: req.contact_id.clone(),
        queue: to,
        channel: h.channel,
        priority: 0,
        language: String::new(),
        segment: smista_core::Segment::General,
        max_patience_ms: 0,
        arrived: s.clock.from_unix(arrived_unix_ms),
        caller_key: String::new(),
    };
    let received = unix(now);
    let (r, published) = s.about(&req.contact_id, now, |ev| {
        s.history.arrive(&req.contact_id, &h.queue, arrived_unix_ms, received, "");
        s.history.transferred(&req.contact_id, &h.queue, &offer.queue);
        let pinned = pin.as_ref().map(|(o, until)| (o.as_str(), *until));
        s.engine.offer_leg(&offer, pinned, Some(&req.operator_id), &record.paid, now, ev)
    });
    let d = r.map_err(client_error)?;
    s.acknowledge(&req.contact_id, &published).await?;
    Ok(response(s, end.handle_ms, 0, Next::Placed(d), now))
}

/// The reply: the leg's figures and where the contact stands.
fn response(s: &Shared, handle_ms: u64, wrap_up_ms: u64, next: Next, now: Millis) -> pb::TransferContactResponse {
    use pb::offer_contact_response::Decision as D;
    use pb::transfer_contact_response::Next as N;
    let next = match next {
        Next::Ended(o) => N::Ended(convert::outcome_pb(o) as i32),
        Next::Placed(d) => match convert::decision(String::new(), &d, now, &s.clock).decision {
            Some(D::Assigned(a)) => N::Assigned(a),
            Some(D::Queued(q)) => N::Queued(q),
            Some(D::Diverted(d)) => N::Diverted(d),
            None => N::Ended(pb::Outcome::Unspecified as i32),
        },
    };
    pb::TransferContactResponse { handle_ms, wrap_up_ms, next: Some(next) }
}
