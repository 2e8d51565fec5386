//! `ContactService`: the telephony platform's API.

use std::pin::Pin;
use std::sync::Arc;

use smista_core::{CallbackNext, OfferRequest, Outcome};
use smista_proto::v1 as pb;
use smista_proto::v1::contact_service_server::ContactService;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::app::Shared;
use crate::metrics::{record_decision, RpcTimer};
use crate::wire::convert;
use crate::wire::error::client_error;

/// The telephony platform's service.
#[derive(Debug, Clone)]
pub struct ContactSvc(pub Arc<Shared>);

#[tonic::async_trait]
impl ContactService for ContactSvc {
    async fn offer_contact(
        &self,
        request: Request<pb::OfferContactRequest>,
    ) -> Result<Response<pb::OfferContactResponse>, Status> {
        let t = RpcTimer::start("OfferContact");
        let r = self.offer(request.into_inner()).await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn cancel_contact(
        &self,
        request: Request<pb::CancelContactRequest>,
    ) -> Result<Response<pb::CancelContactResponse>, Status> {
        let t = RpcTimer::start("CancelContact");
        let s = &self.0;
        let id = &request.get_ref().contact_id;
        let now = s.clock.now();
        let r = if s.recovered(id).is_some() {
            // In service when the process stopped: the caller hung up.
            s.end_after_restart(id, None, now, now)
                .await
                .map(|rec| rec.map_or(Outcome::CancelledInService, |r| r.outcome))
        } else {
            let (r, ev) = s.about(id, now, |ev| s.engine.cancel(id, now, ev).map_err(client_error));
            match r {
                Ok(o) => s.acknowledge(id, &ev).await.map(|()| o),
                // Unknown to the engine: settled before a restart? Its record tells how it ended.
                Err(e) if e.code() == tonic::Code::NotFound => match s.end_after_restart(id, None, now, now).await {
                    Ok(Some(rec)) => Ok(rec.outcome),
                    Ok(None) => Err(e),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        };
        let r = r.map(|o| pb::CancelContactResponse { outcome: convert::outcome_pb(o) as i32 });
        t.finish(&r);
        r.map(Response::new)
    }

    async fn request_callback(
        &self,
        request: Request<pb::RequestCallbackRequest>,
    ) -> Result<Response<pb::RequestCallbackResponse>, Status> {
        let t = RpcTimer::start("RequestCallback");
        let s = &self.0;
        let now = s.clock.now();
        let mut ev = Vec::new();
        let r = s.engine.request_callback(&request.get_ref().contact_id, now, &mut ev).map_err(client_error);
        s.publish(&ev, now);
        let r = r.map(|d| {
            let queued = match convert::decision(String::new(), &d, now, &s.clock).decision {
                Some(pb::offer_contact_response::Decision::Queued(q)) => Some(q),
                _ => None,
            };
            pb::RequestCallbackResponse { queued }
        });
        t.finish(&r);
        r.map(Response::new)
    }

    async fn callback_unanswered(
        &self,
        request: Request<pb::CallbackUnansweredRequest>,
    ) -> Result<Response<pb::CallbackUnansweredResponse>, Status> {
        use pb::callback_unanswered_response::Next;
        let t = RpcTimer::start("CallbackUnanswered");
        let s = &self.0;
        let now = s.clock.now();
        let id = &request.get_ref().contact_id;
        let (r, ev) = s.about(id, now, |ev| s.engine.callback_unanswered(id, now, ev).map_err(client_error));
        let r = match r {
            Ok(next) => s.acknowledge(id, &ev).await.map(|()| match next {
                CallbackNext::Scheduled { attempts, due } => {
                    Next::Retry(pb::CallbackRetry { attempts, due_unix_ms: s.clock.unix_ms(due) })
                }
                CallbackNext::Unreachable => Next::Ended(pb::Outcome::Unreachable as i32),
                CallbackNext::Unfunded => Next::Ended(pb::Outcome::Diverted as i32),
            }),
            Err(e) => Err(e),
        };
        let r = r.map(|next| pb::CallbackUnansweredResponse { next: Some(next) });
        t.finish(&r);
        r.map(Response::new)
    }

    async fn schedule_callback(
        &self,
        request: Request<pb::ScheduleCallbackRequest>,
    ) -> Result<Response<pb::ScheduleCallbackResponse>, Status> {
        let t = RpcTimer::start("ScheduleCallback");
        let req = request.into_inner();
        let r = async {
            let segment = convert::segment(req.segment)?;
            let not_before = i64::try_from(req.not_before_unix_ms)
                .map_err(|_| Status::invalid_argument("not_before_unix_ms out of range"))?;
            let (id, due) =
                crate::app::callbacks::schedule(&self.0, &req.contact_id, &req.queue, segment, not_before).await?;
            Ok(pb::ScheduleCallbackResponse { callback_contact_id: id, due_unix_ms: u64::try_from(due).unwrap_or(0) })
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    type StreamEventsStream = Pin<Box<dyn Stream<Item = Result<pb::ContactEvent, Status>> + Send + 'static>>;

    /// Served over the network by [`crate::service::events`], which sends each event's bytes as
    /// encoded once for every reader; this form (decoded messages) is for callers in process.
    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let events = crate::service::events::open(&self.0, request)?;
        let decoded = events.map(|r| {
            r.and_then(|wire| {
                prost::Message::decode(wire).map_err(|e| Status::internal(format!("event not decodable: {e}")))
            })
        });
        Ok(Response::new(Box::pin(decoded)))
    }
}

impl ContactSvc {
    /// Offers a contact. A decision that ends it (DIVERTED), or reports it in service (a repeat
    /// of an accepted contact), is answered once that is durable: a platform told "diverted"
    /// never offers it again, so its end record must outlive this node.
    async fn offer(&self, req: pb::OfferContactRequest) -> Result<pb::OfferContactResponse, Status> {
        let s = &self.0;
        if s.is_draining() {
            return Err(Status::unavailable("smista is shutting down; offer the contact elsewhere"));
        }
        if let Some(l) = &s.limiter {
            if l.check().is_err() {
                crate::metrics::rate_limited("offer");
                return Err(Status::resource_exhausted("offer rate above the server's configured limit"));
            }
        }
        if req.caller_key.len() > smista_core::error::MAX_QUOTED {
            return Err(Status::invalid_argument("caller_key longer than 128 bytes"));
        }
        s.gate.limits.check_caller(&req.caller_key)?;
        let channel = convert::channel(req.channel)?;
        let segment = convert::segment(req.segment)?;
        let now = s.clock.now();
        let arrived = s.clock.arrival(req.arrived_unix_ms, now)?;
        let offer = OfferRequest {
            contact_id: req.contact_id,
            queue: req.queue,
            channel,
            priority: req.priority,
            language: req.language,
            segment,
            max_patience_ms: req.max_patience_ms,
            arrived,
            caller_key: req.caller_key.clone(),
        };
        // In service when the process stopped (its hold or service record was recovered from
        // the ledger): the engine does not know it, and must not route it to a second
        // operator. The answer is the one a re-offer got before the restart.
        if let Some(h) = s.recovered(&offer.contact_id) {
            let d = smista_core::Decision::Assigned {
                operator: h.operator.as_str().into(),
                queue: h.queue.as_str().into(),
                deadline: now,
            };
            return Ok(convert::decision(offer.contact_id, &d, now, &s.clock));
        }
        let received = i64::try_from(s.clock.unix_ms(now)).unwrap_or(i64::MAX);
        let arrived_unix = offer.arrived.map_or(received, |a| i64::try_from(s.clock.unix_ms(a)).unwrap_or(received));
        let (r, ev) = s.about(&offer.contact_id, now, |ev| {
            let traced = s.history.arrive(&offer.contact_id, &offer.queue, arrived_unix, received, &req.caller_key);
            // Transferred into a queue before this life began: its next leg goes there.
            let leg = s.transfers.get(&offer.contact_id).map(|t| t.clone());
            let r = match leg {
                Some(t) => {
                    let leg_offer = OfferRequest {
                        queue: t.to_queue.clone(),
                        arrived: s.clock.from_unix(t.arrived_unix_ms).or(offer.arrived),
                        ..offer.clone()
                    };
                    let pinned = (!t.to_operator.is_empty())
                        .then(|| s.clock.from_unix(t.pinned_until_unix_ms).map(|u| (t.to_operator.as_str(), u)))
                        .flatten();
                    s.engine.offer_leg(&leg_offer, pinned, Some(&t.from_operator), &t.paid, now, ev)
                }
                None => s.engine.offer(&offer, now, ev),
            }
            .map_err(client_error);
            // A repeated offer (or a refused one) routes nothing: no trail to keep.
            if traced && !ev.iter().any(|e| e.contact().is_some_and(|c| **c == *offer.contact_id)) {
                s.history.forget(&offer.contact_id);
            }
            r
        });
        let d = r?;
        if matches!(d, smista_core::Decision::Diverted { .. } | smista_core::Decision::Assigned { .. }) {
            s.acknowledge(&offer.contact_id, &ev).await?;
        }
        record_decision(&offer.queue, channel, &d);
        Ok(convert::decision(offer.contact_id, &d, now, &s.clock))
    }
}
