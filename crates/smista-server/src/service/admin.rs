//! `AdminService`: supervisors and administrators.

use std::sync::Arc;

use smista_core::snapshot::QueueUpdate;
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::{client_error, Shared};
use crate::convert;
use crate::metrics::RpcTimer;

/// The administrators' service.
#[derive(Debug, Clone)]
pub struct AdminSvc(pub Arc<Shared>);

const NO_LEDGER: &str = "budget administration needs the budget ledger, which this build does not have yet";

#[tonic::async_trait]
impl AdminService for AdminSvc {
    async fn get_snapshot(&self, _request: Request<pb::GetSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let t = RpcTimer::start("GetSnapshot");
        let s = &self.0;
        let now = s.clock.now();
        let snap = s.engine.snapshot(now);
        let r = Ok(pb::Snapshot {
            timestamp_ms: s.clock.unix_ms(now),
            queues: snap.queues.iter().map(convert::queue_snapshot).collect(),
            operators: snap.operators.iter().map(convert::operator_snapshot).collect(),
            budgets: Vec::new(),
        });
        t.finish(&r);
        r.map(Response::new)
    }

    async fn set_queue_open(
        &self,
        request: Request<pb::SetQueueOpenRequest>,
    ) -> Result<Response<pb::SetQueueOpenResponse>, Status> {
        let t = RpcTimer::start("SetQueueOpen");
        let r = self.0.authorize(&request).and_then(|()| {
            let req = request.get_ref();
            self.0.engine.set_queue_open(&req.queue, req.open).map_err(client_error)?;
            tracing::info!(queue = %req.queue, open = req.open, "queue opened or closed");
            Ok(pb::SetQueueOpenResponse {})
        });
        t.finish(&r);
        r.map(Response::new)
    }

    async fn update_queue(
        &self,
        request: Request<pb::UpdateQueueRequest>,
    ) -> Result<Response<pb::UpdateQueueResponse>, Status> {
        let t = RpcTimer::start("UpdateQueue");
        let r = self.0.authorize(&request).and_then(|()| {
            let req = request.get_ref();
            let update = QueueUpdate {
                max_length: req.max_length,
                max_wait_ms: req.max_wait_ms,
                wrap_up_ms: req.wrap_up_ms,
                offer_timeout_ms: req.offer_timeout_ms,
                fallback: convert::fallback_opt(req.fallback)?,
            };
            self.0.engine.update_queue(&req.queue, &update).map_err(client_error)?;
            tracing::info!(queue = %req.queue, ?update, "queue updated");
            Ok(pb::UpdateQueueResponse {})
        });
        t.finish(&r);
        r.map(Response::new)
    }

    async fn update_budget(
        &self,
        request: Request<pb::UpdateBudgetRequest>,
    ) -> Result<Response<pb::UpdateBudgetResponse>, Status> {
        self.0.authorize(&request)?;
        Err(Status::unimplemented(NO_LEDGER))
    }

    async fn list_budget_audit(
        &self,
        _request: Request<pb::ListBudgetAuditRequest>,
    ) -> Result<Response<pb::ListBudgetAuditResponse>, Status> {
        Err(Status::unimplemented(NO_LEDGER))
    }
}
