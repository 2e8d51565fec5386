//! `AdminService`: supervisors and administrators.

use std::sync::Arc;

use smista_core::book::{BudgetView, ChannelTariff, Tariff};
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

fn budget_pb(s: &Shared, v: BudgetView) -> pb::BudgetSnapshot {
    let extra = s.extra_budget_diversions(&v.id, &v.period);
    pb::BudgetSnapshot {
        budget_id: v.id,
        period: v.period,
        ceiling_cents: v.ceiling_cents,
        settled_cents: v.settled_cents,
        reserved_cents: v.reserved_cents,
        paced_allowance_cents: v.paced_allowance_cents,
        overrun_cents: v.overrun_cents,
        extra_budget_diversions: extra,
    }
}

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
            budgets: s.book.views(now).into_iter().map(|v| budget_pb(s, v)).collect(),
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
        let t = RpcTimer::start("UpdateBudget");
        let r = self.0.authorize(&request).and_then(|()| {
            let req = request.get_ref();
            let tariffs = req
                .tariffs
                .iter()
                .map(|t| {
                    Ok(ChannelTariff {
                        channel: convert::channel(t.channel)?,
                        tariff: Tariff {
                            fee_per_contact_cents: t.fee_per_contact_cents,
                            rate_per_second_centicents: t.rate_per_second_centicents,
                            billing_increment_seconds: t.billing_increment_seconds,
                        },
                    })
                })
                .collect::<Result<Vec<_>, Status>>()?;
            let s = &self.0;
            let now = s.clock.now();
            let v = s
                .book
                .amend(&req.budget_id, req.ceiling_cents, &tariffs, &req.actor, &req.reason, now)
                .map_err(crate::error::budget_status)?;
            tracing::info!(budget = %req.budget_id, actor = %req.actor, reason = %req.reason, ceiling_cents = ?req.ceiling_cents, tariffs = tariffs.len(), "budget amended");
            crate::metrics::refresh_budget_gauges(&s.book, now);
            Ok(pb::UpdateBudgetResponse { budget: Some(budget_pb(s, v)) })
        });
        // Acknowledged once the amendment is durable: a restart re-applies it.
        let r = match (r, &self.0.ledger) {
            (Ok(v), Some(l)) => l
                .durable(&smista_ledger::Key::Budget(request.get_ref().budget_id.clone()))
                .await
                .map(|()| v)
                .map_err(crate::error::ledger_status),
            (r, _) => r,
        };
        t.finish(&r);
        r.map(Response::new)
    }

    async fn list_budget_audit(
        &self,
        request: Request<pb::ListBudgetAuditRequest>,
    ) -> Result<Response<pb::ListBudgetAuditResponse>, Status> {
        let t = RpcTimer::start("ListBudgetAudit");
        let r = self.0.book.audit(&request.get_ref().budget_id).map_err(crate::error::budget_status).map(|records| {
            pb::ListBudgetAuditResponse {
                records: records
                    .into_iter()
                    .map(|a| pb::BudgetAuditRecord {
                        timestamp_ms: u64::try_from(a.at_unix_ms).unwrap_or(0),
                        budget_id: a.budget,
                        actor: a.actor,
                        field: a.field,
                        old_value: a.old_value,
                        new_value: a.new_value,
                        reason: a.reason,
                    })
                    .collect(),
            }
        });
        t.finish(&r);
        r.map(Response::new)
    }
}
