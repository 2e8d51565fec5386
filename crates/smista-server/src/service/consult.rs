//! `OperatorService.ConsultContact` and `EndConsultation`: an operator keeps a caller and asks a
//! colleague first (`smista_core::Engine::consult_at`, `end_consultation`). The consultation's
//! record goes to the ledger before ConsultContact answers; a hand-over's transfer record moves
//! the consultation's service row and budget hold to the contact in the same transaction as the
//! first operator's leg ends (see `smista_ledger`'s writer). A repeat the engine no longer knows
//! (after a restart or a failover) is answered from those records; a consultation carried across
//! a restart (both operators were talking) is ended, or handed over, by the server.

use std::sync::Arc;

use smista_core::book::HoldRecord;
use smista_core::{ConsultAction, ConsultStep, Event, Millis, Next, Outcome, RoutingError, TransferTarget};
use smista_ledger::{ConsultRecord, TransferRecord};
use smista_proto::v1 as pb;
use tonic::Status;

use crate::app::Shared;
use crate::wire::convert;
use crate::wire::error::{client_error, ledger_status};

/// Serves one ConsultContact (the caller's principal was checked).
pub async fn consult(s: &Shared, req: pb::ConsultContactRequest) -> Result<pb::ConsultContactResponse, Status> {
    use pb::consult_contact_request::Target;
    let target = match &req.target {
        Some(Target::Queue(q)) => TransferTarget::Queue(q.clone()),
        Some(Target::Operator(o)) => crate::service::transfer::named(o),
        None => return Err(Status::invalid_argument("target: name a queue or an operator")),
    };
    let now = s.clock.now();
    if s.recovered(&req.contact_id).is_some() {
        // A repeat of one asked before the restart answers where it stands.
        if let Some(record) = asked_before(s, &req.operator_id, &req.contact_id, &req.consultation_id).await? {
            return repeated(s, &req, &target, &record, now).await;
        }
        return Err(Status::failed_precondition(format!(
            "contact `{}` is carried from before a restart or failover: complete it or transfer it \
             (a consultation needs a contact this node routed)",
            smista_core::error::clip(&req.contact_id)
        )));
    }
    let (r, published) = s.about(&req.contact_id, now, |ev| {
        s.engine.consult_at(&req.operator_id, &req.contact_id, &req.consultation_id, &target, now, ev)
    });
    match r {
        Ok(next) => {
            let asked = published.events.iter().any(|e| {
                matches!(e, Event::Consultation { consultation, step: ConsultStep::Requested, .. }
                    if **consultation == *req.consultation_id)
            });
            if let (true, Some(ledger)) = (asked, &s.ledger) {
                let (queue, to_operator) = match &target {
                    TransferTarget::Queue(q) => (q.clone(), String::new()),
                    TransferTarget::Operator { operator, queue, .. } => (queue.clone(), operator.clone()),
                    TransferTarget::External => (String::new(), String::new()),
                };
                ledger.consulted(ConsultRecord {
                    consultation: req.consultation_id.clone(),
                    contact: req.contact_id.clone(),
                    from_operator: req.operator_id.clone(),
                    to_queue: queue,
                    to_operator,
                    asked_unix_ms: unix(s, now),
                });
            }
            // The consultation's record (keyed by its id) and whatever its placement changed.
            s.acknowledge(&req.consultation_id, &published).await?;
            Ok(consult_response(s, next, now))
        }
        Err(e @ (RoutingError::UnknownContact(_) | RoutingError::UnknownOperator(_) | RoutingError::WrongState(_))) => {
            match asked_before(s, &req.operator_id, &req.contact_id, &req.consultation_id).await? {
                Some(record) => repeated(s, &req, &target, &record, now).await,
                None => Err(client_error(e)),
            }
        }
        Err(RoutingError::TransferRefused { reason, queue }) => Err(Status::failed_precondition(format!(
            "consultation of queue `{}` refused ({}): the contact stays with its operator",
            smista_core::error::clip(&queue),
            reason.as_str()
        ))),
        Err(e) => Err(client_error(e)),
    }
}

/// A ConsultContact repeated after its consultation was asked for (in an earlier life, or
/// ended since): where it stands, if asked of the same queue.
async fn repeated(
    s: &Shared,
    req: &pb::ConsultContactRequest,
    target: &TransferTarget,
    record: &ConsultRecord,
    now: Millis,
) -> Result<pb::ConsultContactResponse, Status> {
    if record.to_queue != target.queue() {
        return Err(Status::failed_precondition(format!(
            "consultation `{}` was asked of queue `{}`",
            smista_core::error::clip(&req.consultation_id),
            record.to_queue
        )));
    }
    Ok(consult_response(s, standing(s, &req.consultation_id, now).await?, now))
}

/// Serves one EndConsultation (the caller's principal was checked).
pub async fn end(s: &Shared, req: pb::EndConsultationRequest) -> Result<pb::EndConsultationResponse, Status> {
    let action = match pb::ConsultationAction::try_from(req.action) {
        Ok(pb::ConsultationAction::Transfer) => ConsultAction::Transfer,
        Ok(pb::ConsultationAction::Conference) => ConsultAction::Conference,
        Ok(pb::ConsultationAction::Cancel) => ConsultAction::Cancel,
        _ => return Err(Status::invalid_argument("action: TRANSFER, CONFERENCE or CANCEL")),
    };
    for (field, id) in
        [("operator_id", &req.operator_id), ("contact_id", &req.contact_id), ("consultation_id", &req.consultation_id)]
    {
        smista_core::validate_id(field, id).map_err(client_error)?;
    }
    let now = s.clock.now();
    let ended = s.clock.desk_ended(req.ended_unix_ms, now);
    if let Some(hk) = s.recovered(&req.consultation_id) {
        return carried(s, &req, action, hk, ended, now).await;
    }
    // The contact and its consultation both change (a hand-over, a cancel): no other request
    // about either publishes between (a forced logout cancelling the contact just handed over
    // must come after the hand-over, on the stream and in the ledger).
    let (r, published) = s.about_all(&[&req.contact_id, &req.consultation_id], now, |ev| {
        s.engine.end_consultation(
            &req.operator_id,
            &req.contact_id,
            &req.consultation_id,
            action,
            req.wrap_up_ms,
            ended,
            now,
            ev,
        )
    });
    match r {
        Ok(done) => {
            s.acknowledge(&req.contact_id, &published).await?;
            let c = done.completion.unwrap_or(smista_core::Completion { handle_ms: 0, wrap_up_ms: 0 });
            Ok(pb::EndConsultationResponse {
                handle_ms: c.handle_ms,
                wrap_up_ms: c.wrap_up_ms,
                second_operator_id: done.second.as_deref().unwrap_or("").to_owned(),
            })
        }
        // The engine does not know it (this life): a repeat after a restart or a failover, or a
        // consultation lost at one. (A WrongState is this life's answer and stands.)
        Err(e @ (RoutingError::UnknownContact(_) | RoutingError::UnknownOperator(_))) => {
            match ended_before(s, &req, action).await? {
                Some(reply) => Ok(reply),
                None => Err(client_error(e)),
            }
        }
        Err(e) => Err(client_error(e)),
    }
}

fn unix(s: &Shared, m: Millis) -> i64 {
    i64::try_from(s.clock.unix_ms(m)).unwrap_or(i64::MAX)
}

/// The record of consultation `consultation`, if `operator` asked for it about `contact`;
/// FAILED_PRECONDITION if the id names another consultation.
async fn asked_before(
    s: &Shared,
    operator: &str,
    contact: &str,
    consultation: &str,
) -> Result<Option<ConsultRecord>, Status> {
    let Some(ledger) = &s.ledger else { return Ok(None) };
    let Some(r) = ledger.consultation(consultation).await.map_err(ledger_status)? else { return Ok(None) };
    if r.contact != contact || r.from_operator != operator {
        return Err(Status::failed_precondition(format!(
            "`{}` is not a consultation of contact `{}` by operator `{}`",
            smista_core::error::clip(consultation),
            smista_core::error::clip(contact),
            smista_core::error::clip(operator)
        )));
    }
    Ok(Some(r))
}

/// Where a consultation stands, for a repeated ConsultContact: in this life's engine, carried
/// across a restart (taken by its operator), ended (its end record), or lost at a restart before
/// anyone took it (ABANDONED).
async fn standing(s: &Shared, consultation: &str, now: Millis) -> Result<Next, Status> {
    if let Some(n) = s.engine.standing(consultation, now) {
        return Ok(n);
    }
    if let Some(h) = s.recovered(consultation) {
        return Ok(Next::Placed(smista_core::Decision::Assigned {
            operator: Arc::from(h.operator.as_str()),
            queue: Arc::from(h.queue.as_str()),
            deadline: now,
        }));
    }
    let Some(ledger) = &s.ledger else { return Ok(Next::Ended(Outcome::Abandoned)) };
    if ledger.handed_over(consultation).await.map_err(ledger_status)?.is_some() {
        return Ok(Next::Ended(Outcome::Transferred));
    }
    Ok(Next::Ended(match ledger.end_of(consultation).await.map_err(ledger_status)? {
        Some(end) => end.outcome,
        None => Outcome::Abandoned,
    }))
}

fn consult_response(s: &Shared, next: Next, now: Millis) -> pb::ConsultContactResponse {
    use pb::consult_contact_response::State;
    use pb::offer_contact_response::Decision as D;
    let state = match next {
        Next::Ended(o) => State::Ended(convert::outcome_pb(o) as i32),
        Next::Placed(d) => match convert::decision(String::new(), &d, now, &s.clock).decision {
            Some(D::Assigned(a)) => State::Assigned(a),
            Some(D::Queued(q)) => State::Queued(q),
            // A consultation is refused, never diverted: only a race with the target's state
            // ends one diverted (a repeat then answers it ended).
            Some(D::Diverted(_)) | None => State::Ended(pb::Outcome::Diverted as i32),
        },
    };
    pb::ConsultContactResponse { state: Some(state) }
}

/// The answer to an EndConsultation this life's engine does not know (a repeat after a
/// restart or a failover, or a consultation lost at a restart), from the records: `None` if no
/// such consultation is on record.
async fn ended_before(
    s: &Shared,
    req: &pb::EndConsultationRequest,
    action: ConsultAction,
) -> Result<Option<pb::EndConsultationResponse>, Status> {
    let Some(ledger) = &s.ledger else { return Ok(None) };
    if asked_before(s, &req.operator_id, &req.contact_id, &req.consultation_id).await?.is_none() {
        return Ok(None);
    }
    let clip = smista_core::error::clip(&req.consultation_id);
    if let Some(t) = ledger.handed_over(&req.consultation_id).await.map_err(ledger_status)? {
        return match action {
            ConsultAction::Transfer => Ok(Some(pb::EndConsultationResponse {
                handle_ms: t.handle_ms,
                wrap_up_ms: t.wrap_up_ms,
                second_operator_id: t.to_operator,
            })),
            _ => Err(Status::failed_precondition(format!("consultation `{clip}` was handed over"))),
        };
    }
    let second = match ledger.end_of(&req.consultation_id).await.map_err(ledger_status)? {
        Some(end) => end.operator,
        None => String::new(),
    };
    match action {
        ConsultAction::Cancel => {
            Ok(Some(pb::EndConsultationResponse { handle_ms: 0, wrap_up_ms: 0, second_operator_id: second }))
        }
        _ => Err(Status::failed_precondition(format!("consultation `{clip}` has ended"))),
    }
}

/// EndConsultation of a consultation carried across a restart or a takeover (its operator was
/// talking): the server ends it (CANCEL), or hands the contact over (TRANSFER: the first
/// operator's carried leg ends as a transfer, and the transfer record moves the consultation's
/// rows to the contact), or has nothing to do (CONFERENCE: the three talk on; a conference is
/// not on record, so after a restart it is a consultation again).
async fn carried(
    s: &Shared,
    req: &pb::EndConsultationRequest,
    action: ConsultAction,
    hk: HoldRecord,
    ended: Millis,
    now: Millis,
) -> Result<pb::EndConsultationResponse, Status> {
    let Some(ledger) = &s.ledger else { return Err(Status::unavailable("no ledger")) };
    let Some(record) = asked_before(s, &req.operator_id, &req.contact_id, &req.consultation_id).await? else {
        return Err(Status::failed_precondition(format!(
            "`{}` is not a consultation of contact `{}`",
            smista_core::error::clip(&req.consultation_id),
            smista_core::error::clip(&req.contact_id)
        )));
    };
    let second = hk.operator.clone();
    match action {
        ConsultAction::Conference => {
            Ok(pb::EndConsultationResponse { handle_ms: 0, wrap_up_ms: 0, second_operator_id: second })
        }
        ConsultAction::Cancel => {
            let consult = Event::Consultation {
                contact: Arc::from(req.contact_id.as_str()),
                consultation: Arc::from(req.consultation_id.as_str()),
                operator: Arc::from(req.operator_id.as_str()),
                queue: Arc::from(s.recovered(&req.contact_id).map_or(record.to_queue.clone(), |h| h.queue).as_str()),
                to_queue: Arc::from(hk.queue.as_str()),
                to_operator: Some(Arc::from(second.as_str())),
                step: ConsultStep::Ended,
            };
            if s.end_carried(&req.consultation_id, None, Outcome::CancelledInService, now, now, true, &[])
                .await?
                .is_some()
            {
                s.log.publish(&[consult], now, s.clock.unix_ms(now));
            }
            Ok(pb::EndConsultationResponse { handle_ms: 0, wrap_up_ms: 0, second_operator_id: second })
        }
        ConsultAction::Transfer => {
            let Some(hc) = s.recovered(&req.contact_id).filter(|h| h.operator == req.operator_id) else {
                return Err(Status::failed_precondition(format!(
                    "contact `{}` is not in service with operator `{}`",
                    smista_core::error::clip(&req.contact_id),
                    smista_core::error::clip(&req.operator_id)
                )));
            };
            // The consultation is claimed first (its operator cannot end it meanwhile), then the
            // first operator's leg ends; if that contact ended meanwhile, the claim is undone.
            let Some(taken) = s.take_carried(&req.consultation_id) else {
                return Err(Status::failed_precondition(format!(
                    "consultation `{}` ended meanwhile",
                    smista_core::error::clip(&req.consultation_id)
                )));
            };
            let end = s
                .end_carried(&req.contact_id, Some(&req.operator_id), Outcome::Transferred, ended, now, false, &[])
                .await;
            let end = match end {
                Ok(Some(end)) => end,
                other => {
                    s.put_back_carried(taken);
                    other?;
                    return Err(Status::failed_precondition(format!(
                        "contact `{}` ended meanwhile",
                        smista_core::error::clip(&req.contact_id)
                    )));
                }
            };
            let arrived_unix_ms = if hc.arrived_unix_ms > 0 { hc.arrived_unix_ms } else { hc.accepted_unix_ms };
            ledger.transferred(TransferRecord {
                contact: req.contact_id.clone(),
                at_unix_ms: unix(s, now),
                from_operator: req.operator_id.clone(),
                from_queue: hc.queue.clone(),
                to_queue: record.to_queue.clone(),
                to_operator: second.clone(),
                pinned_until_unix_ms: 0,
                handle_ms: end.handle_ms,
                wrap_up_ms: 0,
                arrived_unix_ms,
                paid: if hc.budget.is_empty() { Vec::new() } else { vec![hc.budget.clone()] },
                consultation: req.consultation_id.clone(),
                accepted_unix_ms: hc.accepted_unix_ms,
            });
            // The consultation ends, merged into the contact: its detail record (no cost: its
            // money is the contact's leg now), counted as a consultation.
            let mut detail = s.recovered_detail(&taken, None, req.contact_id.clone());
            detail.budget = String::new();
            ledger.ended(smista_ledger::ContactEnd {
                contact: req.consultation_id.clone(),
                ended_unix_ms: unix(s, now),
                queue: hk.queue.clone(),
                channel: hk.channel,
                outcome: Outcome::Transferred,
                waited_ms: 0,
                handle_ms: 0,
                wrap_up_ms: 0,
                operator: String::new(),
                diverted: None,
                detail,
            });
            // The consultation's operator carries on with the contact, in memory as on disk.
            s.hand_over_carried(taken, &req.contact_id, hc.accepted_unix_ms);
            ledger.durable(&smista_ledger::Key::Contact(req.contact_id.clone())).await.map_err(ledger_status)?;
            let contact: Arc<str> = Arc::from(req.contact_id.as_str());
            let kid: Arc<str> = Arc::from(req.consultation_id.as_str());
            let accepted = s.clock.from_unix(hc.accepted_unix_ms).unwrap_or(now);
            let arrived = s.clock.from_unix(arrived_unix_ms).unwrap_or(now);
            let events = [
                Event::Transferred {
                    contact: contact.clone(),
                    queue: Arc::from(hc.queue.as_str()),
                    channel: hc.channel,
                    operator: Arc::from(req.operator_id.as_str()),
                    group: Arc::from(hc.group.as_str()),
                    to: Some(Arc::from(hk.queue.as_str())),
                    to_operator: Some(Arc::from(second.as_str())),
                    accepted,
                    arrived,
                    pinned_until: None,
                    handle_ms: end.handle_ms,
                    wrap_up_ms: 0,
                    charged: None,
                },
                Event::Consultation {
                    contact,
                    consultation: kid.clone(),
                    operator: Arc::from(req.operator_id.as_str()),
                    queue: Arc::from(hk.queue.as_str()),
                    to_queue: Arc::from(hk.queue.as_str()),
                    to_operator: Some(Arc::from(second.as_str())),
                    step: ConsultStep::HandedOver,
                },
                // The consultation ends, merged into the contact (its one `finished`).
                Event::Finished {
                    contact: kid,
                    queue: Arc::from(hk.queue.as_str()),
                    channel: hk.channel,
                    outcome: Outcome::Transferred,
                    waited_ms: 0,
                    handle_ms: 0,
                    operator: None,
                    group: None,
                    wrap_up_ms: 0,
                    arrived: s.clock.from_unix(hk.accepted_unix_ms).unwrap_or(now),
                    segment: smista_core::Segment::General,
                    charged: None,
                },
            ];
            s.log.publish(&events, now, s.clock.unix_ms(now));
            Ok(pb::EndConsultationResponse { handle_ms: end.handle_ms, wrap_up_ms: 0, second_operator_id: second })
        }
    }
}
