//! `OperatorService`: the operator desktop's API.

use std::sync::Arc;

use smista_core::{LoginRequest, RequestedState, Skill};
use smista_proto::v1 as pb;
use smista_proto::v1::operator_service_server::OperatorService;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{client_error, Shared};
use crate::convert;
use crate::metrics::RpcTimer;

/// The operator desktop's service.
#[derive(Debug, Clone)]
pub struct OperatorSvc(pub Arc<Shared>);

impl OperatorSvc {
    /// Runs an engine call with the current time, publishes its events, times it.
    fn call<T>(
        &self,
        method: &'static str,
        f: impl FnOnce(&Shared, smista_core::Millis, &mut Vec<smista_core::Event>) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let t = RpcTimer::start(method);
        let s = &self.0;
        let now = s.clock.now();
        let mut ev = Vec::new();
        let r = f(s, now, &mut ev);
        s.publish(&ev, now);
        t.finish(&r);
        r.map(Response::new)
    }
}

fn login_request(req: pb::LoginRequest) -> Result<LoginRequest, Status> {
    let skills = req
        .skills
        .into_iter()
        .map(|s| {
            let level = u8::try_from(s.level)
                .map_err(|_| Status::invalid_argument(format!("level {} of `{}` is not 1..=10", s.level, s.name)))?;
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
    Ok(LoginRequest { operator_id: req.operator_id, group: req.group, skills, channels, session_id: req.session_id })
}

#[tonic::async_trait]
impl OperatorService for OperatorSvc {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let req = login_request(request.into_inner());
        self.call("Login", |s, now, ev| {
            let queues = s.engine.login(&req?, now, ev).map_err(client_error)?;
            Ok(pb::LoginResponse { queues: queues.iter().map(|q| q.to_string()).collect() })
        })
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Result<Response<pb::LogoutResponse>, Status> {
        let req = request.into_inner();
        self.call("Logout", |s, now, ev| {
            s.engine.logout(&req.operator_id, req.force, now, ev).map_err(client_error)?;
            Ok(pb::LogoutResponse {})
        })
    }

    async fn set_state(&self, request: Request<pb::SetStateRequest>) -> Result<Response<pb::SetStateResponse>, Status> {
        let req = request.into_inner();
        let state = match pb::OperatorStatus::try_from(req.status) {
            Ok(pb::OperatorStatus::Available) => Ok(RequestedState::Available),
            Ok(pb::OperatorStatus::Paused) => Ok(RequestedState::Paused(req.reason)),
            _ => Err(Status::invalid_argument("status must be AVAILABLE or PAUSED")),
        };
        self.call("SetState", |s, now, ev| {
            let st = s.engine.set_state(&req.operator_id, &state?, now, ev).map_err(client_error)?;
            Ok(pb::SetStateResponse { status: convert::status_pb(st) as i32 })
        })
    }

    type WatchOffersStream = ReceiverStream<Result<pb::Offer, Status>>;

    async fn watch_offers(
        &self,
        request: Request<pb::WatchOffersRequest>,
    ) -> Result<Response<Self::WatchOffersStream>, Status> {
        let s = &self.0;
        let id = request.into_inner().operator_id;
        let snap_ok = s
            .engine
            .snapshot(s.clock.now())
            .operators
            .iter()
            .any(|o| o.id == id && o.status != smista_core::OperatorStatus::LoggedOut);
        if !snap_ok {
            return Err(Status::not_found(format!("operator `{id}` is not logged in")));
        }
        Ok(Response::new(s.board.watch(&id, s.clock.now())))
    }

    async fn accept_offer(
        &self,
        request: Request<pb::AcceptOfferRequest>,
    ) -> Result<Response<pb::AcceptOfferResponse>, Status> {
        let req = request.into_inner();
        self.call("AcceptOffer", |s, now, ev| {
            s.engine.accept(&req.operator_id, &req.contact_id, now, ev).map_err(client_error)?;
            Ok(pb::AcceptOfferResponse {})
        })
    }

    async fn decline_offer(
        &self,
        request: Request<pb::DeclineOfferRequest>,
    ) -> Result<Response<pb::DeclineOfferResponse>, Status> {
        let req = request.into_inner();
        self.call("DeclineOffer", |s, now, ev| {
            s.engine.decline(&req.operator_id, &req.contact_id, now, ev).map_err(client_error)?;
            Ok(pb::DeclineOfferResponse {})
        })
    }

    async fn complete_contact(
        &self,
        request: Request<pb::CompleteContactRequest>,
    ) -> Result<Response<pb::CompleteContactResponse>, Status> {
        let req = request.into_inner();
        self.call("CompleteContact", |s, now, ev| {
            let c =
                s.engine.complete(&req.operator_id, &req.contact_id, req.wrap_up_ms, now, ev).map_err(client_error)?;
            Ok(pb::CompleteContactResponse { handle_ms: c.handle_ms, wrap_up_ms: c.wrap_up_ms })
        })
    }
}
