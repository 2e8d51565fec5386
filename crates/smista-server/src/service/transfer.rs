//! `OperatorService.TransferContact`: an operator moves a contact in service on. The engine ends
//! the leg and places the next one (`smista_core::Engine::transfer_at`); `Shared::publish` hands
//! the leg's cost record and the transfer record to the ledger; the reply waits until both are
//! durable. A repeated transfer the engine no longer knows (after a restart or a failover) is
//! answered from the transfer record.

use smista_core::{Next, RoutingError, TransferTarget};
use smista_proto::v1 as pb;
use tonic::Status;

use crate::app::Shared;
use crate::wire::convert;
use crate::wire::error::client_error;

/// Longest `TransferOut.destination` accepted (it is never stored).
const MAX_DESTINATION: usize = 128;

/// Serves one TransferContact (the caller's principal was checked).
pub async fn transfer(s: &Shared, req: pb::TransferContactRequest) -> Result<pb::TransferContactResponse, Status> {
    use pb::transfer_contact_request::Target;
    let target = match req.target {
        Some(Target::Queue(q)) => TransferTarget::Queue(q),
        Some(Target::Operator(o)) => {
            TransferTarget::Operator { operator: o.operator_id, queue: o.queue, timeout_ms: o.timeout_ms }
        }
        Some(Target::External(x)) => {
            if x.destination.len() > MAX_DESTINATION {
                return Err(Status::invalid_argument(format!(
                    "external.destination: at most {MAX_DESTINATION} bytes ({} given)",
                    x.destination.len()
                )));
            }
            TransferTarget::External
        }
        None => return Err(Status::invalid_argument("target: name a queue, an operator or external")),
    };
    let now = s.clock.now();
    // When the leg ended, as the desk says (held to [acceptance, now] by the engine).
    let ended = match req.ended_unix_ms {
        0 => now,
        unix => s.clock.from_unix(i64::try_from(unix).unwrap_or(i64::MAX)).map_or(now, |t| t.min(now)),
    };
    if let Some(h) = s.recovered(&req.contact_id) {
        // In service across a restart or a takeover: this life did not route it, so it has no
        // leg to end and place; the desk completes it (the caller can be transferred by the
        // platform as a new contact).
        return Err(Status::failed_precondition(format!(
            "contact `{}` was carried across a restart with operator `{}`: complete it; a transfer needs a \
             contact routed in this node's life",
            smista_core::error::clip(&req.contact_id),
            smista_core::error::clip(&h.operator)
        )));
    }
    let (r, published) = s.about(&req.contact_id, now, |ev| {
        s.engine.transfer_at(&req.operator_id, &req.contact_id, &target, req.wrap_up_ms, ended, now, ev)
    });
    match r {
        Ok(t) => {
            s.acknowledge(&req.contact_id, &published).await?;
            Ok(response(s, t.completion.handle_ms, t.completion.wrap_up_ms, Some(t.next), now))
        }
        Err(e @ (RoutingError::UnknownContact(_) | RoutingError::UnknownOperator(_))) => {
            // Unknown to this life (the contact, or the operator who has not logged in again):
            // a transfer made before a restart or a failover, repeated.
            let Some(ledger) = &s.ledger else { return Err(client_error(e)) };
            let Some(record) = ledger
                .transfer_of(&req.contact_id, &req.operator_id)
                .await
                .map_err(crate::wire::error::ledger_status)?
            else {
                return Err(client_error(e));
            };
            let asked = match &target {
                TransferTarget::Queue(q) | TransferTarget::Operator { queue: q, .. } => q.as_str(),
                TransferTarget::External => "",
            };
            if record.to_queue != asked {
                let was = if record.to_queue.is_empty() {
                    "out of the centre".to_owned()
                } else {
                    format!("to `{}`", record.to_queue)
                };
                return Err(Status::failed_precondition(format!(
                    "contact `{}` was already transferred by this operator, {was}",
                    smista_core::error::clip(&req.contact_id)
                )));
            }
            let next =
                if record.to_queue.is_empty() { Some(Next::Ended(smista_core::Outcome::Transferred)) } else { None };
            let mut out = response(s, record.handle_ms, record.wrap_up_ms, next, now);
            if out.next.is_none() {
                out.next = Some(pb::transfer_contact_response::Next::Queued(pb::Queued {
                    queue: record.to_queue,
                    position: 0,
                    estimated_wait_ms: 0,
                }));
            }
            Ok(out)
        }
        Err(e) => Err(client_error(e)),
    }
}

/// The reply: the leg's figures and where the contact stands (`None`: filled by the caller).
fn response(
    s: &Shared,
    handle_ms: u64,
    wrap_up_ms: u64,
    next: Option<Next>,
    now: smista_core::Millis,
) -> pb::TransferContactResponse {
    use pb::offer_contact_response::Decision as D;
    use pb::transfer_contact_response::Next as N;
    let next = next.map(|n| match n {
        Next::Ended(o) => N::Ended(convert::outcome_pb(o) as i32),
        Next::Placed(d) => match convert::decision(String::new(), &d, now, &s.clock).decision {
            Some(D::Assigned(a)) => N::Assigned(a),
            Some(D::Queued(q)) => N::Queued(q),
            Some(D::Diverted(d)) => N::Diverted(d),
            None => N::Ended(pb::Outcome::Unspecified as i32),
        },
    });
    pb::TransferContactResponse { handle_ms, wrap_up_ms, next }
}
