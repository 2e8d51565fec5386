//! The bodies of `AdminService.GetOperatorReport` and `ListOperatorReportReads`: operator
//! accounting folded per interval of the centre's wall clock from every node's state changes in
//! the ledger (`smista_core::accounting`), per group and supplier; per operator only where
//! `[privacy]` enables it, for the WORKFORCE role, each page's read recorded in the privacy
//! audit before it is returned (see docs/privacy.md).

use smista_core::accounting::Fold;
use smista_proto::v1 as pb;
use tonic::Status;

use super::reports::{page, Page};
use crate::app::Shared;
use crate::clock::Tz;
use crate::config::auth::Role;
use crate::config::pause::PauseKind;
use crate::edge::auth::Principal;

/// How far before a page the state each operator was in at its start is looked for: a state
/// that began earlier, with no change since, is not seen (no shift lasts two days).
pub const CARRY_MS: i64 = 2 * 86_400_000;

/// Most bytes of the stated purpose of a per-operator read.
const MAX_PURPOSE: usize = 256;

fn kind_pb(k: PauseKind) -> pb::PauseKind {
    match k {
        PauseKind::Break => pb::PauseKind::Break,
        PauseKind::Training => pb::PauseKind::Training,
        PauseKind::Meeting => pb::PauseKind::Meeting,
        PauseKind::Technical => pb::PauseKind::Technical,
        PauseKind::AfterCallWork => pb::PauseKind::AfterCallWork,
    }
}

fn row_pb(s: &Shared, tz: &Tz, r: smista_core::accounting::OperatorInterval) -> pb::OperatorIntervalRow {
    pb::OperatorIntervalRow {
        start_unix_ms: u64::try_from(r.start_unix_ms).unwrap_or(0),
        start_local: tz.format(r.start_unix_ms),
        supplier: s.history.supplier_of(&r.group),
        average_handle_ms: r.average_handle_ms(),
        on_contact_ms: r.on_contact_ms.iter().map(|(c, ms)| (c.as_str().to_owned(), *ms)).collect(),
        paused_ms: r.paused_ms.into_iter().collect(),
        group: r.group,
        operator_id: r.operator,
        operators: r.operators,
        logged_in_ms: r.logged_in_ms,
        available_ms: r.available_ms,
        wrap_up_ms: r.wrap_up_ms,
        handled: r.handled,
        declined: r.declined,
        timed_out: r.timed_out,
    }
}

/// Whether `principal` may read per-operator rows for `req` on this server: FAILED_PRECONDITION
/// where the configuration does not enable them, PERMISSION_DENIED without the WORKFORCE role,
/// INVALID_ARGUMENT for a missing purpose or a bad operator id.
fn check_per_operator(s: &Shared, principal: &Principal, req: &pb::GetOperatorReportRequest) -> Result<(), Status> {
    if !req.per_operator {
        if !req.operators.is_empty() || !req.purpose.is_empty() {
            return Err(Status::invalid_argument("operators and purpose go with per_operator"));
        }
        return Ok(());
    }
    if !s.privacy.per_operator_reports {
        return Err(Status::failed_precondition(
            "per-operator rows are not enabled on this server ([privacy] per_operator_reports = false): group and \
             supplier totals only (see docs/privacy.md)",
        ));
    }
    if !principal.roles.has(Role::Workforce) {
        crate::metrics::auth_failure("no_role");
        return Err(Status::permission_denied(format!(
            "principal `{}` does not hold the workforce role, which per-operator rows need",
            principal.name
        )));
    }
    if req.purpose.trim().is_empty()
        || req.purpose.len() > MAX_PURPOSE
        || req.purpose.chars().any(smista_core::error::is_hazard)
    {
        return Err(Status::invalid_argument(
            "purpose: why the per-operator rows are read, required, at most 256 bytes, no control characters",
        ));
    }
    for o in &req.operators {
        smista_core::validate_id("operators", o).map_err(crate::wire::error::client_error)?;
    }
    Ok(())
}

/// One page of `AdminService.GetOperatorReport` (see the proto).
pub async fn operator_page(
    s: &Shared,
    principal: &Principal,
    req: &pb::GetOperatorReportRequest,
) -> Result<pb::GetOperatorReportResponse, Status> {
    let Some(ledger) = &s.ledger else {
        return Err(Status::failed_precondition("no ledger: [ledger] kind = \"none\" keeps no operator accounting"));
    };
    let cfg = &s.history_cfg;
    if !cfg.enabled {
        return Err(Status::failed_precondition("no operator accounting: [history] enabled = false"));
    }
    check_per_operator(s, principal, req)?;
    let Page { size, to, start, tz, interval_ms } =
        page(cfg, req.interval_minutes, req.from_unix_ms, req.to_unix_ms, req.page_size, &req.page_token)?;
    // Whole intervals, enough to fill about a page (every group, and with per-operator rows
    // every operator, may have a row in each).
    let mut per_interval = s.history.suppliers.len() + 2;
    if req.per_operator {
        per_interval += if req.operators.is_empty() { s.accounting.desks() } else { req.operators.len() };
    }
    let n = (size / per_interval.max(1)).max(1) as i64;
    let mut end = smista_core::report::interval_start(start, interval_ms, &tz);
    for _ in 0..n {
        end = smista_core::accounting::next_interval(end, interval_ms, &tz);
        if end >= to {
            break;
        }
    }
    let end = end.min(to);
    let now = i64::try_from(s.clock.unix_ms(s.clock.now())).unwrap_or(i64::MAX);
    // This node's sign of life, committed after every change it queued before: they are read.
    ledger.alive(now).await.map_err(crate::wire::error::ledger_status)?;
    let history =
        ledger.operator_history(start, end, start - CARRY_MS).await.map_err(crate::wire::error::ledger_status)?;
    let mut fold = Fold::new(start, end.min(now), interval_ms, &tz);
    for one in history.chunk_by(|a, b| a.change.operator == b.change.operator) {
        fold.add(one);
    }
    let (operators, groups) = fold.finish();
    let operators: Vec<_> = if req.per_operator {
        operators.into_iter().filter(|r| req.operators.is_empty() || req.operators.contains(&r.operator)).collect()
    } else {
        Vec::new()
    };
    if req.per_operator {
        let mut read: Vec<String> = operators.iter().map(|r| r.operator.clone()).collect();
        read.sort();
        read.dedup();
        let record = smista_ledger::ReportRead {
            at_unix_ms: now,
            actor: principal.name.to_string(),
            operators: read,
            from_unix_ms: start,
            to_unix_ms: end,
            purpose: req.purpose.clone(),
            node: String::new(),
        };
        // Recorded before anything is returned: a read the audit does not hold never happens.
        ledger.record_report_read(&record).await.map_err(crate::wire::error::ledger_status)?;
        tracing::info!(actor = %principal.name, operators = record.operators.len(), "per-operator report read (audited)");
    }
    Ok(pb::GetOperatorReportResponse {
        groups: groups.into_iter().map(|r| row_pb(s, &tz, r)).collect(),
        operators: operators.into_iter().map(|r| row_pb(s, &tz, r)).collect(),
        next_page_token: if end < to { end.to_string() } else { String::new() },
        time_zone: cfg.time_zone.clone(),
        pause_reasons: s
            .accounting
            .reasons
            .iter()
            .map(|r| pb::PauseReason { code: r.code.clone(), label: r.label.clone(), kind: kind_pb(r.kind) as i32 })
            .collect(),
    })
}

/// `AdminService.ListOperatorReportReads` (see the proto).
pub async fn reads_page(
    s: &Shared,
    req: &pb::ListOperatorReportReadsRequest,
) -> Result<pb::ListOperatorReportReadsResponse, Status> {
    let Some(ledger) = &s.ledger else {
        return Err(Status::failed_precondition("no ledger: [ledger] kind = \"none\" keeps no audit"));
    };
    let size = match req.page_size {
        0 => 100,
        n @ 1..=1000 => n,
        n => return Err(Status::invalid_argument(format!("page_size {n} is above 1000"))),
    };
    let after = if req.page_token.is_empty() {
        None
    } else {
        Some(
            smista_ledger::ReadCursor::parse(&req.page_token)
                .ok_or_else(|| Status::invalid_argument("bad page_token"))?,
        )
    };
    let mut rows = ledger.report_reads(after.as_ref(), size + 1).await.map_err(crate::wire::error::ledger_status)?;
    let more = rows.len() > size as usize;
    rows.truncate(size as usize);
    let next_page_token = if more { rows.last().map(|(_, c)| c.token()).unwrap_or_default() } else { String::new() };
    Ok(pb::ListOperatorReportReadsResponse {
        reads: rows
            .into_iter()
            .map(|(r, _)| pb::OperatorReportRead {
                at_unix_ms: u64::try_from(r.at_unix_ms).unwrap_or(0),
                actor: r.actor,
                operators: r.operators,
                from_unix_ms: u64::try_from(r.from_unix_ms).unwrap_or(0),
                to_unix_ms: u64::try_from(r.to_unix_ms).unwrap_or(0),
                purpose: r.purpose,
                node_id: r.node,
            })
            .collect(),
        next_page_token,
    })
}
