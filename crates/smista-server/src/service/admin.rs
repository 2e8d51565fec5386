//! `AdminService`: supervisors and administrators.

use std::sync::Arc;

use smista_core::book::{BudgetView, ChannelTariff, Tariff};
use smista_core::config::{ExpansionStep, SkillRequirement, Strategy};
use smista_core::hours::HoursConfig;
use smista_core::OperatorUpdate;
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use crate::app::queues::QueueOverride;
use crate::app::Shared;
use crate::metrics::RpcTimer;
use crate::wire::bounds::Bounded;
use crate::wire::convert;
use crate::wire::error::client_error;

/// A wire strategy (UNSPECIFIED: unchanged).
fn strategy(v: i32) -> Result<Option<Strategy>, Status> {
    match pb::SelectionStrategy::try_from(v) {
        Ok(pb::SelectionStrategy::Unspecified) => Ok(None),
        Ok(pb::SelectionStrategy::LongestIdle) => Ok(Some(Strategy::LongestIdle)),
        Ok(pb::SelectionStrategy::MostSkilled) => Ok(Some(Strategy::MostSkilled)),
        Ok(pb::SelectionStrategy::RoundRobin) => Ok(Some(Strategy::RoundRobin)),
        Ok(pb::SelectionStrategy::LeastOccupied) => Ok(Some(Strategy::LeastOccupied)),
        Ok(pb::SelectionStrategy::FewestContacts) => Ok(Some(Strategy::FewestContacts)),
        Ok(pb::SelectionStrategy::LeastTalkTime) => Ok(Some(Strategy::LeastTalkTime)),
        Err(_) => Err(Status::invalid_argument(format!("unknown strategy {v}"))),
    }
}

/// The administrators' service.
#[derive(Debug, Clone)]
pub struct AdminSvc(pub Arc<Shared>);

fn budget_pb(s: &Shared, v: BudgetView) -> pb::BudgetSnapshot {
    let extra = s.extra_budget_diversions(&v.id, &v.period);
    let renewed_ago =
        crate::app::lease::describe(&s.leases, &v.id, s.clock.unix_ms(s.clock.now()) as i64).map_or(0, |(_, ago)| ago);
    pb::BudgetSnapshot {
        budget_id: v.id,
        period: v.period,
        ceiling_cents: v.ceiling_cents,
        settled_cents: v.settled_cents,
        reserved_cents: v.reserved_cents,
        paced_allowance_cents: v.paced_allowance_cents,
        overrun_cents: v.overrun_cents,
        extra_budget_diversions: extra,
        refused_admissions: v.refusals,
        lease_cents: v.lease_cents.unwrap_or(0),
        lease_renewed_ms_ago: renewed_ago,
        running_overrun_cents: v.running_overrun_cents,
        exposure_cents: v.exposure_cents,
        projected_cents: v.projected_cents,
        projected_exhaustion_unix_ms: v.exhausted_at_unix_ms.map_or(0, |t| u64::try_from(t).unwrap_or(0)),
    }
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    async fn get_snapshot(&self, request: Request<pb::GetSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let t = RpcTimer::start("GetSnapshot");
        let s = &self.0;
        let now = s.clock.now();
        // The stream position first: the snapshot reflects at least every event up to it.
        let last_event_sequence = s.log.latest();
        let snap = s.engine.snapshot(now);
        let operator_groups = crate::app::accounting::group_staffing(s, &snap.operators);
        let r = match crate::app::accounting::live_view(s, &request, &snap.operators).await {
            Ok(named) => Ok(pb::Snapshot {
                event_epoch: s.log.epoch(),
                last_event_sequence,
                timestamp_ms: s.clock.unix_ms(now),
                queues: snap.queues.iter().map(convert::queue_snapshot).collect(),
                operators: if named {
                    snap.operators
                        .iter()
                        .map(|o| {
                            let since = s.clock.unix_ms(smista_core::Millis(o.status_since_ms));
                            let label = if o.status == smista_core::OperatorStatus::Paused {
                                s.accounting.label(&o.pause_reason)
                            } else {
                                ""
                            };
                            convert::operator_snapshot(o, since, label)
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                operator_groups,
                budgets: s.book.views(now).into_iter().map(|v| budget_pb(s, v)).collect(),
                node_id: s.node_id.clone(),
            }),
            Err(e) => Err(e),
        };
        t.finish(&r);
        r.map(Response::new)
    }

    async fn set_queue_open(
        &self,
        request: Request<pb::SetQueueOpenRequest>,
    ) -> Result<Response<pb::SetQueueOpenResponse>, Status> {
        let t = RpcTimer::start("SetQueueOpen");
        let r = async {
            let p = self.0.principal(&request)?;
            let req = request.get_ref();
            self.0.engine.set_queue_open(&req.queue, req.open).map_err(client_error)?;
            let change = QueueOverride { open: Some(req.open), ..QueueOverride::default() };
            crate::app::queues::record(&self.0, &req.queue, &change, &p.name).await?;
            Ok(pb::SetQueueOpenResponse {})
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn update_queue(
        &self,
        request: Request<pb::UpdateQueueRequest>,
    ) -> Result<Response<pb::UpdateQueueResponse>, Status> {
        let t = RpcTimer::start("UpdateQueue");
        let r = async {
            request.get_ref().check_bounds()?;
            let p = self.0.principal(&request)?;
            let req = request.get_ref();
            let change = QueueOverride {
                open: None,
                max_length: req.max_length,
                max_wait_ms: req.max_wait_ms,
                wrap_up_ms: req.wrap_up_ms,
                offer_timeout_ms: req.offer_timeout_ms,
                fallback: convert::fallback_opt(req.fallback)?,
                priority: req.priority,
                strategy: strategy(req.strategy)?,
                skills: req.skills.as_ref().map(|s| {
                    s.skills
                        .iter()
                        .map(|k| SkillRequirement {
                            skill: k.name.clone(),
                            min_level: u8::try_from(k.level).unwrap_or(u8::MAX),
                        })
                        .collect()
                }),
                hours: req.hours.as_ref().map(|h| HoursConfig {
                    weekly: h.weekly.clone(),
                    national_holidays: h.national_holidays,
                    closed: h.closed.clone(),
                    open: h.open.clone(),
                }),
                always_open: req.clear_hours.then_some(true),
                overflow: req.overflow.as_ref().map(|o| o.queues.clone()),
                expansion: req.expansion.as_ref().map(|e| {
                    e.steps
                        .iter()
                        .map(|s| ExpansionStep {
                            after_ms: s.after_ms,
                            level_drop: u8::try_from(s.level_drop).unwrap_or(u8::MAX),
                        })
                        .collect()
                }),
            };
            if change.hours.is_some() && req.clear_hours {
                return Err(Status::invalid_argument("hours and clear_hours: set one"));
            }
            self.0.engine.update_queue(&req.queue, &change.update()).map_err(client_error)?;
            crate::app::queues::record(&self.0, &req.queue, &change, &p.name).await?;
            Ok(pb::UpdateQueueResponse {})
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn list_queue_audit(
        &self,
        request: Request<pb::ListQueueAuditRequest>,
    ) -> Result<Response<pb::ListQueueAuditResponse>, Status> {
        let t = RpcTimer::start("ListQueueAudit");
        let r = async {
            let req = request.get_ref();
            let Some(l) = &self.0.ledger else {
                return Err(Status::failed_precondition("no ledger: queue changes are not recorded"));
            };
            let rows = l.queue_audit(&req.queue).await.map_err(crate::wire::error::ledger_status)?;
            Ok(pb::ListQueueAuditResponse {
                records: rows
                    .into_iter()
                    .map(|a| pb::QueueAuditRecord {
                        queue: a.queue,
                        at_unix_ms: u64::try_from(a.at_unix_ms).unwrap_or(0),
                        actor: a.actor,
                        change: a.change,
                        old_settings: a.old_settings,
                        new_settings: a.new_settings,
                    })
                    .collect(),
            })
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn update_operator(
        &self,
        request: Request<pb::UpdateOperatorRequest>,
    ) -> Result<Response<pb::UpdateOperatorResponse>, Status> {
        let t = RpcTimer::start("UpdateOperator");
        let r = (|| {
            request.get_ref().check_bounds()?;
            let p = self.0.principal(&request)?;
            let req = request.get_ref();
            let mut u = OperatorUpdate {
                operator_id: req.operator_id.clone(),
                group: req.group.clone(),
                skills: req.skills.as_ref().map(|s| {
                    s.skills
                        .iter()
                        .map(|k| smista_core::Skill {
                            name: k.name.clone(),
                            level: u8::try_from(k.level).unwrap_or(u8::MAX),
                        })
                        .collect()
                }),
                channels: match &req.channels {
                    Some(c) => Some(
                        c.channels
                            .iter()
                            .map(|x| {
                                Ok((convert::channel(x.channel)?, u8::try_from(x.max_concurrent).unwrap_or(u8::MAX)))
                            })
                            .collect::<Result<Vec<_>, Status>>()?,
                    ),
                    None => None,
                },
            };
            // Within the roster entry only: the roster itself changes with PutRosterOperator.
            self.0.roster.check_update(&mut u)?;
            let now = self.0.clock.now();
            let mut ev = Vec::new();
            let queues = self.0.engine.update_operator(&u, now, &mut ev).map_err(client_error);
            self.0.publish(&ev, now);
            let queues = queues?;
            tracing::info!(principal = %p.name, operator = %req.operator_id, "operator updated");
            Ok(pb::UpdateOperatorResponse { queues: queues.iter().map(|q| q.to_string()).collect() })
        })();
        t.finish(&r);
        r.map(Response::new)
    }

    async fn update_budget(
        &self,
        request: Request<pb::UpdateBudgetRequest>,
    ) -> Result<Response<pb::UpdateBudgetResponse>, Status> {
        let t = RpcTimer::start("UpdateBudget");
        let r = request.get_ref().check_bounds().and_then(|()| self.0.principal(&request)).and_then(|p| {
            let req = request.get_ref();
            let s = &self.0;
            let b = &s.bounds;
            if req.reason.trim().is_empty() || req.reason.len() > crate::wire::bounds::MAX_REASON || req.reason.chars().any(smista_core::error::is_hazard)
            {
                return Err(Status::invalid_argument("reason: required, at most 1 KiB, no control characters"));
            }
            if req.note.len() > 64 * crate::wire::bounds::MAX_REASON || req.actor.len() > 64 * crate::wire::bounds::MAX_REASON {
                return Err(Status::invalid_argument("note too long"));
            }
            if let Some(c) = req.ceiling_cents {
                if !(0..=b.max_ceiling_cents).contains(&c) {
                    return Err(Status::invalid_argument(format!(
                        "ceiling_cents {c} is not 0..={} ([limits] max_ceiling_cents)",
                        b.max_ceiling_cents
                    )));
                }
            }
            for t in &req.tariffs {
                if t.fee_per_contact_cents > b.max_fee_per_contact_cents
                    || t.rate_per_second_centicents > b.max_rate_per_second_centicents
                {
                    return Err(Status::invalid_argument(format!(
                        "tariff above the configured maximum (fee {} cents, rate {} centicents/s)",
                        b.max_fee_per_contact_cents, b.max_rate_per_second_centicents
                    )));
                }
            }
            let note = crate::wire::bounds::sanitize_note(if req.note.is_empty() { &req.actor } else { &req.note });
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
            let now = s.clock.now();
            let v = s
                .book
                .amend(
                    &req.budget_id,
                    req.ceiling_cents,
                    &tariffs,
                    &smista_core::book::AmendedBy { actor: &p.name, note: &note, reason: &req.reason },
                    now,
                )
                .map_err(crate::wire::error::budget_status)?;
            // The reason and note in full are in the audit record; a log line quotes 128 bytes.
            tracing::info!(budget = %req.budget_id, principal = %p.name, note = %smista_core::error::clip(&note), reason = %smista_core::error::clip(&req.reason), ceiling_cents = ?req.ceiling_cents, tariffs = tariffs.len(), "budget amended");
            crate::metrics::refresh_budget_gauges(&s.book, now);
            Ok(pb::UpdateBudgetResponse { budget: Some(budget_pb(s, v)) })
        });
        // With several nodes, the shared pool's ceiling follows the amendment, so every node's
        // grants respect it.
        if let (Ok(_), Some(l), Some(c)) = (&r, &self.0.ledger, request.get_ref().ceiling_cents) {
            if !self.0.node_id.is_empty() && l.is_postgres() {
                let s = &self.0;
                let budget = &request.get_ref().budget_id;
                if let Some(period) = s.book.period_label(budget, s.clock.now()) {
                    if let Err(e) = l.set_pool_ceiling(budget, &period, c).await {
                        tracing::error!(budget = %budget, error = %e, "the shared pool's ceiling was not updated");
                    }
                }
            }
        }
        // Acknowledged once the amendment is durable: a restart re-applies it.
        let r = match (r, &self.0.ledger) {
            (Ok(v), Some(l)) => l
                .durable(&smista_ledger::Key::Budget(request.get_ref().budget_id.clone()))
                .await
                .map(|()| v)
                .map_err(crate::wire::error::ledger_status),
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
        let req = request.get_ref();
        let r = audit_page(&self.0, &req.budget_id, req.page_size, &req.page_token);
        t.finish(&r);
        r.map(Response::new)
    }

    async fn get_interval_report(
        &self,
        request: Request<pb::GetIntervalReportRequest>,
    ) -> Result<Response<pb::GetIntervalReportResponse>, Status> {
        let t = RpcTimer::start("GetIntervalReport");
        let r = crate::service::reports::interval_page(&self.0, request.get_ref()).await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn get_budget_burn(
        &self,
        request: Request<pb::GetBudgetBurnRequest>,
    ) -> Result<Response<pb::GetBudgetBurnResponse>, Status> {
        let t = RpcTimer::start("GetBudgetBurn");
        let r = crate::service::reports::budget_burn(&self.0, &request.get_ref().budget_id).await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn get_spend_report(
        &self,
        request: Request<pb::GetSpendReportRequest>,
    ) -> Result<Response<pb::GetSpendReportResponse>, Status> {
        let t = RpcTimer::start("GetSpendReport");
        let r = async {
            request.get_ref().check_bounds()?;
            crate::service::reports::spend(&self.0, request.get_ref()).await
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn get_operator_report(
        &self,
        request: Request<pb::GetOperatorReportRequest>,
    ) -> Result<Response<pb::GetOperatorReportResponse>, Status> {
        let t = RpcTimer::start("GetOperatorReport");
        let r = async {
            request.get_ref().check_bounds()?;
            let principal = self.0.principal(&request)?;
            crate::service::operator_report::operator_page(&self.0, &principal, request.get_ref()).await
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn list_operator_report_reads(
        &self,
        request: Request<pb::ListOperatorReportReadsRequest>,
    ) -> Result<Response<pb::ListOperatorReportReadsResponse>, Status> {
        let t = RpcTimer::start("ListOperatorReportReads");
        let r = crate::service::operator_report::reads_page(&self.0, request.get_ref()).await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn put_roster_operator(
        &self,
        request: Request<pb::PutRosterOperatorRequest>,
    ) -> Result<Response<pb::PutRosterOperatorResponse>, Status> {
        let t = RpcTimer::start("PutRosterOperator");
        let r = crate::service::roster::put(&self.0, &request).await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn retire_roster_operator(
        &self,
        request: Request<pb::RetireRosterOperatorRequest>,
    ) -> Result<Response<pb::RetireRosterOperatorResponse>, Status> {
        let t = RpcTimer::start("RetireRosterOperator");
        let r = crate::service::roster::retire(&self.0, &request).await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn list_roster(
        &self,
        request: Request<pb::ListRosterRequest>,
    ) -> Result<Response<pb::ListRosterResponse>, Status> {
        let t = RpcTimer::start("ListRoster");
        let r = crate::service::roster::list(&self.0, request.get_ref());
        t.finish(&r);
        r.map(Response::new)
    }

    async fn list_roster_audit(
        &self,
        request: Request<pb::ListRosterAuditRequest>,
    ) -> Result<Response<pb::ListRosterAuditResponse>, Status> {
        let t = RpcTimer::start("ListRosterAudit");
        let r = crate::service::roster::audit(&self.0, request.get_ref()).await;
        t.finish(&r);
        r.map(Response::new)
    }
}

/// Records of a budget's audit trail from `page_token` (an index into the trail, which only
/// grows), at most `page_size` (0: 100; at most 1000).
fn audit_page(
    s: &Shared,
    budget: &str,
    page_size: u32,
    page_token: &str,
) -> Result<pb::ListBudgetAuditResponse, Status> {
    let size = match page_size {
        0 => 100,
        n @ 1..=1000 => n as usize,
        n => return Err(Status::invalid_argument(format!("page_size {n} is above 1000"))),
    };
    let start = if page_token.is_empty() {
        0
    } else {
        page_token.parse::<usize>().map_err(|_| Status::invalid_argument("page_token does not parse"))?
    };
    let records = s.book.audit(budget).map_err(crate::wire::error::budget_status)?;
    if start > records.len() {
        return Err(Status::invalid_argument("page_token is beyond the trail"));
    }
    let end = (start + size).min(records.len());
    let next_page_token = if end < records.len() { end.to_string() } else { String::new() };
    Ok(pb::ListBudgetAuditResponse {
        records: records[start..end]
            .iter()
            .cloned()
            .map(|a| pb::BudgetAuditRecord {
                timestamp_ms: u64::try_from(a.at_unix_ms).unwrap_or(0),
                budget_id: a.budget,
                actor: a.actor,
                field: a.field,
                old_value: a.old_value,
                new_value: a.new_value,
                reason: a.reason,
                note: a.note,
            })
            .collect(),
        next_page_token,
    })
}
