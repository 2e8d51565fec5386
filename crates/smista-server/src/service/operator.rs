//! `OperatorService`: the operator desktop's API.

use std::sync::Arc;

use smista_core::{LoginRequest, RequestedState, RoutingError, Skill};
use smista_proto::v1 as pb;
use smista_proto::v1::operator_service_server::OperatorService;
use tonic::{Request, Response, Status};

use crate::app::hub::Guarded;
use crate::app::Shared;
use crate::metrics::RpcTimer;
use crate::wire::bounds::Bounded;
use crate::wire::convert;
use crate::wire::error::client_error;

/// The operator desktop's service.
#[derive(Debug, Clone)]
pub struct OperatorSvc(pub Arc<Shared>);

impl OperatorSvc {
    /// Runs an engine call with the current time, publishes its events, waits until what it
    /// changed in the budget ledger is durable, times it.
    async fn call<T>(
        &self,
        method: &'static str,
        f: impl FnOnce(&Shared, smista_core::Millis, &mut Vec<smista_core::Event>) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let t = RpcTimer::start(method);
        let r = self.run(None, f).await;
        t.finish(&r);
        r.map(Response::new)
    }

    /// [`call`](Self::call) about one contact: the engine call and its publishing run in the
    /// contact's section, and the reply waits until the contact's state it reports is durable,
    /// also when this request changed nothing (a retry; see [`Shared::acknowledge`]).
    async fn call_about<T>(
        &self,
        method: &'static str,
        contact: &str,
        f: impl FnOnce(&Shared, smista_core::Millis, &mut Vec<smista_core::Event>) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let t = RpcTimer::start(method);
        let r = self.run(Some(contact), f).await;
        t.finish(&r);
        r.map(Response::new)
    }

    /// [`call`](Self::call) or [`call_about`](Self::call_about) without the timing.
    async fn run<T>(
        &self,
        contact: Option<&str>,
        f: impl FnOnce(&Shared, smista_core::Millis, &mut Vec<smista_core::Event>) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let s = &self.0;
        let now = s.clock.now();
        let Some(contact) = contact else {
            let mut events = Vec::new();
            let r = f(s, now, &mut events);
            let tickets = s.publish(&events, now);
            return match r {
                Ok(v) => s.persist(&crate::app::Published { events, tickets }).await.map(|()| v),
                Err(e) => Err(e),
            };
        };
        let (r, ev) = s.about(contact, now, |ev| f(s, now, ev));
        match r {
            Ok(v) => s.acknowledge(contact, &ev).await.map(|()| v),
            Err(e) => Err(e),
        }
    }
}

fn login_request(req: pb::LoginRequest) -> Result<LoginRequest, Status> {
    let skills = req
        .skills
        .into_iter()
        .map(|s| {
            let level = u8::try_from(s.level).map_err(|_| {
                Status::invalid_argument(format!(
                    "level {} of `{}` is not 1..=10",
                    s.level,
                    smista_core::error::clip(&s.name)
                ))
            })?;
            Ok(Skill { name: s.name, level })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let channels = req
        .channels
        .into_iter()
        .map(|c| {
            let ch = convert::channel(c.channel)?;
            let n = u8::try_from(c.max_concurrent)
                .map_err(|_| Status::invalid_argument(format!("max_concurrent {} is too large", c.max_concurrent)))?;
            Ok((ch, n))
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(LoginRequest {
        operator_id: req.operator_id,
        group: req.group,
        skills,
        channels,
        session_id: req.session_id,
        paused: None,
    })
}

#[tonic::async_trait]
impl OperatorService for OperatorSvc {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        request.get_ref().check_bounds()?;
        let principal = self.0.principal(&request)?;
        principal.check_operator(&request.get_ref().operator_id)?;
        if self.0.is_draining() {
            return Err(Status::unavailable("smista is shutting down; log in on another node"));
        }
        // The roster decides the group (and so who pays), and how far skills and channels go.
        let req = login_request(request.into_inner()).and_then(|r| self.0.roster.bind_login(r, &principal))?;
        self.0.roster.logging_in(&self.0, &req.operator_id);
        let req = Ok::<_, Status>(req).map(|mut r| {
            // A contact of theirs from before a restart may still be in service: no offer until
            // it ends (it is unknown to the engine, which would otherwise see them free).
            if self.0.recovered_with(&r.operator_id) > 0 {
                r.paused = Some(crate::app::RECOVERY_PAUSE.to_owned());
            }
            r
        });
        self.call("Login", |s, now, ev| {
            let req = req?;
            let queues = s.engine.login(&req, now, ev).map_err(client_error)?;
            // Once per session: a repeated Login finds them recovering already.
            if req.paused.is_some() && s.recovering.insert(req.operator_id.clone(), ()).is_none() {
                s.account_carried(&req.operator_id, now);
            }
            Ok(pb::LoginResponse {
                queues: queues.iter().map(|q| q.to_string()).collect(),
                in_service: s.recovered_of(&req.operator_id),
            })
        })
        .await
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let p = self.0.principal(&request)?;
        let req = request.get_ref();
        // A supervisor may force anyone out; a desk logs out only itself.
        if !(req.force && p.roles.has(crate::config::auth::Role::Supervisor)) {
            p.check_operator(&req.operator_id)?;
        }
        let req = request.into_inner();
        // Contacts carried across a restart are in service too: they block a plain logout, and a
        // forced one cancels them in service (with the consultations carried with them).
        let s = &self.0;
        if !req.force && s.recovered_with(&req.operator_id) > 0 {
            return Err(Status::failed_precondition(format!(
                "operator `{}` has contacts in service from before a restart: complete them or force the logout",
                smista_core::error::clip(&req.operator_id)
            )));
        }
        // In the sections of what the operator holds: a logout that cancels a contact in their
        // hands publishes after any request about it that was already changing it (a hand-over
        // to them), never between its engine call and its publishing.
        let t = RpcTimer::start("Logout");
        let now = s.clock.now();
        let held = s.engine.held_by(&req.operator_id);
        let ids: Vec<&str> = held.iter().map(|c| &**c).collect();
        let (r, published) = s.about_all(&ids, now, |ev| {
            s.engine.logout(&req.operator_id, req.force, now, ev).map_err(client_error)?;
            s.recovering.remove(&req.operator_id);
            Ok(pb::LogoutResponse {})
        });
        let r = match r {
            Ok(v) => s.persist(&published).await.map(|()| v),
            Err(e) => Err(e),
        };
        t.finish(&r);
        let r = Response::new(r?);
        if req.force {
            for c in s.recovered_of(&req.operator_id) {
                let now = s.clock.now();
                s.end_after_restart(&c, None, now, now).await?;
            }
        }
        Ok(r)
    }

    async fn set_state(&self, request: Request<pb::SetStateRequest>) -> Result<Response<pb::SetStateResponse>, Status> {
        self.0.principal(&request)?.check_operator(&request.get_ref().operator_id)?;
        let req = request.into_inner();
        if req.reason.len() > crate::wire::bounds::MAX_REASON || req.reason.chars().any(smista_core::error::is_hazard) {
            return Err(Status::invalid_argument("reason: at most 1 KiB, no control characters"));
        }
        let state = match pb::OperatorStatus::try_from(req.status) {
            Ok(pb::OperatorStatus::Available) => Ok(RequestedState::Available),
            Ok(pb::OperatorStatus::Paused) => self.0.accounting.desk_code(&req.reason).map(RequestedState::Paused),
            _ => Err(Status::invalid_argument("status must be AVAILABLE or PAUSED")),
        };
        let operator = req.operator_id.clone();
        let r = self
            .call("SetState", |s, now, ev| {
                let state = state?;
                if state == RequestedState::Available && s.recovered_with(&req.operator_id) > 0 {
                    return Err(Status::failed_precondition(format!(
                        "operator `{}` still has a contact from before the restart in service: complete it first",
                        req.operator_id
                    )));
                }
                // The server's roster_change pause holds until the session ends: neither
                // available again nor another pause code (it would account the rest as the
                // worker's break).
                if s.roster.is_ending(&req.operator_id) {
                    return Err(Status::failed_precondition(format!(
                        "operator `{}`: {}; complete the contacts in service first",
                        req.operator_id,
                        crate::app::roster::ROSTER_PAUSE
                    )));
                }
                s.recovering.remove(&req.operator_id);
                let st = s.engine.set_state(&req.operator_id, &state, now, ev).map_err(client_error)?;
                Ok(pb::SetStateResponse { status: convert::status_pb(st) as i32 })
            })
            .await?;
        // A repeat that found the change made answers once the first one's record is durable.
        if let Some(l) = &self.0.ledger {
            l.durable(&smista_ledger::Key::Operator(operator)).await.map_err(crate::wire::error::ledger_status)?;
        }
        Ok(r)
    }

    type WatchOffersStream = Guarded<pb::Offer>;

    async fn watch_offers(
        &self,
        request: Request<pb::WatchOffersRequest>,
    ) -> Result<Response<Self::WatchOffersStream>, Status> {
        let s = &self.0;
        let principal = s.principal(&request)?;
        principal.check_operator(&request.get_ref().operator_id)?;
        if s.is_draining() {
            // Its stream would outlive the drain: the desk must watch on the next node.
            return Err(Status::unavailable("smista is shutting down; watch offers on another node"));
        }
        let id = request.into_inner().operator_id;
        smista_core::validate_id("operator_id", &id).map_err(client_error)?;
        // One lookup, not a snapshot of every operator: 33,000 desks each opening a stream must
        // not cost 33,000 x 33,000.
        if !s.engine.is_logged_in(&id) {
            return Err(Status::not_found(format!("operator `{id}` is not logged in")));
        }
        let guard = s.gate.limits.open_stream(&principal)?;
        Ok(Response::new(s.board.watch(&id, s.clock.now(), guard)))
    }

    async fn accept_offer(
        &self,
        request: Request<pb::AcceptOfferRequest>,
    ) -> Result<Response<pb::AcceptOfferResponse>, Status> {
        self.0.principal(&request)?.check_operator(&request.get_ref().operator_id)?;
        let req = request.into_inner();
        self.call_about("AcceptOffer", &req.contact_id, |s, now, ev| {
            match s.engine.accept(&req.operator_id, &req.contact_id, now, ev) {
                Ok(()) => Ok(pb::AcceptOfferResponse {}),
                // A retried accept of a call that was already in service with this operator
                // when the process stopped (its hold was recovered): idempotent.
                Err(RoutingError::UnknownContact(_) | RoutingError::UnknownOperator(_))
                    if s.recovered(&req.contact_id).is_some_and(|h| h.operator == req.operator_id) =>
                {
                    Ok(pb::AcceptOfferResponse {})
                }
                Err(e) => Err(client_error(e)),
            }
        })
        .await
    }

    async fn decline_offer(
        &self,
        request: Request<pb::DeclineOfferRequest>,
    ) -> Result<Response<pb::DeclineOfferResponse>, Status> {
        self.0.principal(&request)?.check_operator(&request.get_ref().operator_id)?;
        let req = request.into_inner();
        self.call_about("DeclineOffer", &req.contact_id, |s, now, ev| {
            s.engine.decline(&req.operator_id, &req.contact_id, now, ev).map_err(client_error)?;
            Ok(pb::DeclineOfferResponse {})
        })
        .await
    }

    async fn complete_contact(
        &self,
        request: Request<pb::CompleteContactRequest>,
    ) -> Result<Response<pb::CompleteContactResponse>, Status> {
        self.0.principal(&request)?.check_operator(&request.get_ref().operator_id)?;
        let req = request.into_inner();
        let s = &self.0;
        let t = RpcTimer::start("CompleteContact");
        // When it ended, as the desk says (held to [acceptance, now] by the engine).
        let ended = |now: smista_core::Millis| s.clock.desk_ended(req.ended_unix_ms, now);
        let mut unknown = None;
        if s.recovered(&req.contact_id).is_none() {
            let r = self
                .run(Some(&req.contact_id), |s, now, ev| {
                    let c = s
                        .engine
                        .complete_at(&req.operator_id, &req.contact_id, req.wrap_up_ms, ended(now), now, ev)
                        .map_err(client_error)?;
                    Ok(pb::CompleteContactResponse { handle_ms: c.handle_ms, wrap_up_ms: c.wrap_up_ms })
                })
                .await;
            match r {
                Err(e) if e.code() == tonic::Code::NotFound => unknown = Some(e),
                other => {
                    t.finish(&other);
                    return other.map(Response::new);
                }
            }
        }
        // Unknown to the engine: a contact from before a restart (in service then, or settled);
        // otherwise the engine's own NOT_FOUND (unknown operator or contact) stands.
        let now = s.clock.now();
        let r = s.end_after_restart(&req.contact_id, Some(&req.operator_id), ended(now), now).await.and_then(|rec| {
            rec.map(|e| pb::CompleteContactResponse { handle_ms: e.handle_ms, wrap_up_ms: e.wrap_up_ms }).ok_or_else(
                || unknown.unwrap_or_else(|| Status::not_found(format!("unknown contact `{}`", req.contact_id))),
            )
        });
        t.finish(&r);
        r.map(Response::new)
    }

    async fn transfer_contact(
        &self,
        request: Request<pb::TransferContactRequest>,
    ) -> Result<Response<pb::TransferContactResponse>, Status> {
        self.0.principal(&request)?.check_operator(&request.get_ref().operator_id)?;
        let req = request.into_inner();
        let t = RpcTimer::start("TransferContact");
        let r = crate::service::transfer::transfer(&self.0, req).await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn consult_contact(
        &self,
        request: Request<pb::ConsultContactRequest>,
    ) -> Result<Response<pb::ConsultContactResponse>, Status> {
        self.0.principal(&request)?.check_operator(&request.get_ref().operator_id)?;
        let req = request.into_inner();
        let t = RpcTimer::start("ConsultContact");
        let r = crate::service::consult::consult(&self.0, req).await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn end_consultation(
        &self,
        request: Request<pb::EndConsultationRequest>,
    ) -> Result<Response<pb::EndConsultationResponse>, Status> {
        self.0.principal(&request)?.check_operator(&request.get_ref().operator_id)?;
        let req = request.into_inner();
        let t = RpcTimer::start("EndConsultation");
        let r = crate::service::consult::end(&self.0, req).await;
        t.finish(&r);
        r.map(Response::new)
    }
}
