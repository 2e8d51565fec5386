//! The bodies of the report RPCs of `AdminService` (interval report, budget burn), folded from
//! the ledger's history page by page.

use crate::app::history::flush_staffing;
use crate::clock::zone;
use crate::clock::Tz;
use smista_core::DivertReason;
use tonic::Status;

/// Longest period one report request may cover.
const MAX_REPORT_MS: u64 = 31 * 86_400_000;

/// A report request's period and page, checked the same way for every paged report: intervals
/// that divide a day, a period of at most 31 days, at most 5,000 rows a page, a page token
/// inside the period.
pub(crate) struct Page {
    /// Rows wanted on the page.
    pub(crate) size: usize,
    /// End of the period, Unix ms.
    pub(crate) to: i64,
    /// Where this page starts, Unix ms.
    pub(crate) start: i64,
    /// The report's time zone.
    pub(crate) tz: Tz,
    /// Interval length, ms.
    pub(crate) interval_ms: i64,
}

/// [`Page`] of a request (`interval_minutes` 0: the configuration's).
pub(crate) fn page(
    cfg: &crate::config::history::HistorySection,
    interval_minutes: u32,
    from_unix_ms: u64,
    to_unix_ms: u64,
    page_size: u32,
    page_token: &str,
) -> Result<Page, Status> {
    let minutes = if interval_minutes == 0 { cfg.interval_minutes } else { interval_minutes };
    if !(1..=1440).contains(&minutes) || 1440 % minutes != 0 {
        return Err(Status::invalid_argument(format!("interval_minutes {minutes} does not divide a day")));
    }
    if to_unix_ms <= from_unix_ms || to_unix_ms - from_unix_ms > MAX_REPORT_MS {
        return Err(Status::invalid_argument("to_unix_ms must follow from_unix_ms, by at most 31 days"));
    }
    let size = match page_size {
        0 => 500,
        n @ 1..=5000 => n as usize,
        n => return Err(Status::invalid_argument(format!("page_size {n} is above 5000"))),
    };
    let (from, to) = (
        i64::try_from(from_unix_ms).map_err(|_| Status::invalid_argument("from_unix_ms out of range"))?,
        i64::try_from(to_unix_ms).map_err(|_| Status::invalid_argument("to_unix_ms out of range"))?,
    );
    let start = if page_token.is_empty() {
        from
    } else {
        match page_token.parse::<i64>() {
            Ok(t) if (from..to).contains(&t) => t,
            _ => return Err(Status::invalid_argument("page_token does not belong to this range")),
        }
    };
    let tz = Tz(zone(&cfg.time_zone).map_err(Status::internal)?);
    Ok(Page { size, to, start, tz, interval_ms: i64::from(minutes) * 60_000 })
}

/// Records read from the ledger per query while folding a page.
const FETCH: u32 = 5_000;

fn to_row(r: smista_core::report::QueueInterval, tz: &Tz) -> smista_proto::v1::QueueIntervalRow {
    smista_proto::v1::QueueIntervalRow {
        start_unix_ms: u64::try_from(r.start_unix_ms).unwrap_or(0),
        start_local: tz.format(r.start_unix_ms),
        asa_ms: r.asa_ms(),
        average_wait_ms: r.average_wait_ms(),
        aht_ms: r.aht_ms(),
        average_wrap_up_ms: r.average_wrap_up_ms(),
        service_level_offered: r.service_level_offered(),
        service_level_answered: r.service_level_answered(),
        extra_budget_diverted: r.diverted_by_reason.get(DivertReason::ExtraBudget.as_str()).copied().unwrap_or(0),
        queue: r.queue,
        threshold_ms: r.threshold_ms,
        offered: r.offered,
        answered: r.answered,
        answered_within: r.answered_within,
        abandoned: r.abandoned,
        short_abandoned: r.short_abandoned,
        abandoned_after_threshold: r.abandoned_after_threshold,
        diverted: r.diverted,
        overflowed: r.overflowed,
        in_progress: r.in_progress,
        diverted_by_reason: r.diverted_by_reason.into_iter().collect(),
        max_wait_ms: r.max_wait_ms,
        handled: r.handled,
        transferred_in: r.transferred_in,
        transferred_out: r.transferred_out,
        consultations: r.consultations,
    }
}

/// One page of `AdminService.GetIntervalReport` (see the proto): whole intervals from the page
/// token's instant, folded from the ledger's records and this node's contacts in progress.
pub async fn interval_page(
    s: &crate::app::Shared,
    req: &smista_proto::v1::GetIntervalReportRequest,
) -> Result<smista_proto::v1::GetIntervalReportResponse, tonic::Status> {
    use tonic::Status;
    let Some(ledger) = &s.ledger else {
        return Err(Status::failed_precondition("no history: [ledger] kind = \"none\" keeps no contact records"));
    };
    let cfg = &s.history_cfg;
    if !cfg.enabled {
        return Err(Status::failed_precondition("no history: [history] enabled = false"));
    }
    let Page { size, to, start, tz, interval_ms } =
        page(cfg, req.interval_minutes, req.from_unix_ms, req.to_unix_ms, req.page_size, &req.page_token)?;
    // Whole intervals, enough of them to fill about a page (every queue and group may have a row).
    let per_interval = (s.sl_thresholds.len() + s.history.suppliers.len() + 1).max(1);
    let n = (size / per_interval).max(1) as i64;
    let mut end = smista_core::report::interval_start(start, interval_ms, &tz);
    for _ in 0..n {
        end = smista_core::report::interval_start(end, interval_ms, &tz) + interval_ms;
        if end >= to {
            break;
        }
    }
    let end = end.min(to);
    let mut b = smista_core::report::Builder::new(
        interval_ms,
        &tz,
        s.sl_thresholds.clone(),
        smista_core::config::QueueConfig::new("", &[]).service_level_threshold_ms,
        cfg.short_abandon_ms,
    );
    // Staffed time: what this node has not written yet first, then every node's quarter hours.
    flush_staffing(s, ledger).await.map_err(crate::wire::error::ledger_status)?;
    let first_quarter = start - start.rem_euclid(crate::app::staffing::QUARTER_MS);
    for (q, group, staffed, paused, busy) in
        ledger.staffing(first_quarter, end).await.map_err(crate::wire::error::ledger_status)?
    {
        let supplier = s.history.supplier_of(&group);
        let ms = |x: i64| u64::try_from(x).unwrap_or(0);
        b.add_staffing(q, &group, &supplier, (ms(staffed), ms(paused), ms(busy)));
    }
    let mut cursor = None;
    loop {
        let page =
            ledger.history_page(start, end, cursor.as_ref(), FETCH).await.map_err(crate::wire::error::ledger_status)?;
        for e in &page {
            b.add(&smista_core::report::Record {
                arrived_unix_ms: e.detail.arrived_unix_ms,
                first_queue: if e.detail.first_queue.is_empty() { &e.queue } else { &e.detail.first_queue },
                overflowed: !e.detail.overflows.is_empty(),
                outcome: e.outcome,
                diverted: e.diverted.map(|d| d.0),
                waited_ms: e.waited_ms,
                handle_ms: e.handle_ms,
                wrap_up_ms: e.wrap_up_ms,
                group: &e.detail.group,
                supplier: &e.detail.supplier,
                transfers: &e.detail.transfers,
                consultation_of: &e.detail.consultation_of,
            });
        }
        match page.last() {
            Some(last) if page.len() == FETCH as usize => {
                cursor = Some(smista_ledger::HistoryCursor {
                    arrived_unix_ms: last.detail.arrived_unix_ms,
                    contact: last.contact.clone(),
                    ended_unix_ms: last.ended_unix_ms,
                });
            }
            _ => break,
        }
    }
    for (arrived, queue) in s.history.in_progress() {
        if (start..end).contains(&arrived) {
            b.add_in_progress(arrived, &queue);
        }
    }
    let (queues, groups) = b.finish();
    Ok(smista_proto::v1::GetIntervalReportResponse {
        queues: queues.into_iter().map(|r| to_row(r, &tz)).collect(),
        groups: groups
            .into_iter()
            .map(|g| smista_proto::v1::GroupIntervalRow {
                start_unix_ms: u64::try_from(g.start_unix_ms).unwrap_or(0),
                start_local: tz.format(g.start_unix_ms),
                aht_ms: g.aht_ms(),
                average_wrap_up_ms: if g.handled == 0 { 0.0 } else { g.wrap_up_ms as f64 / g.handled as f64 },
                occupancy: g.occupancy(),
                staffed_ms: g.staffed_ms,
                paused_ms: g.paused_ms,
                busy_ms: g.busy_ms,
                group: g.group,
                supplier: g.supplier,
                answered: g.answered,
                handled: g.handled,
            })
            .collect(),
        next_page_token: if end < to { end.to_string() } else { String::new() },
        time_zone: cfg.time_zone.clone(),
    })
}

/// `AdminService.GetSpendReport` (see the proto): the ledger's spend per budget, period, queue,
/// group and supplier.
pub async fn spend(
    s: &crate::app::Shared,
    req: &smista_proto::v1::GetSpendReportRequest,
) -> Result<smista_proto::v1::GetSpendReportResponse, tonic::Status> {
    use smista_proto::v1 as pb;
    let Some(ledger) = &s.ledger else {
        return Err(tonic::Status::failed_precondition("no ledger: [ledger] kind = \"none\" keeps no cost records"));
    };
    if !req.budget_id.is_empty() && !s.book.ids().any(|b| b == req.budget_id) {
        return Err(tonic::Status::not_found(format!("unknown budget `{}`", smista_core::error::clip(&req.budget_id))));
    }
    // A period label is digits, letters, '-', ':', '.' and '+' (2026-12, or a fixed period's start).
    if !req.period.chars().all(|c| c.is_ascii_alphanumeric() || "-:.+".contains(c)) {
        return Err(tonic::Status::invalid_argument(format!(
            "period: `{}` is not a period label (e.g. 2026-12)",
            smista_core::error::clip(&req.period)
        )));
    }
    let rows = ledger.report_of(&req.budget_id, &req.period).await.map_err(crate::wire::error::ledger_status)?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(pb::GetSpendReportResponse {
        rows: rows
            .into_iter()
            .map(|r| pb::SpendRow {
                supplier: s.history.supplier_of(&r.operator_group),
                budget_id: r.budget,
                period: r.period,
                queue: r.queue,
                group: r.operator_group,
                contacts: n(r.contacts),
                hung_up: n(r.hung_up),
                cost_cents: r.cost_cents,
                handle_ms: n(r.handle_ms),
            })
            .collect(),
    })
}

/// `AdminService.GetBudgetBurn` (see the proto): the current period's spend per local day.
pub async fn budget_burn(
    s: &crate::app::Shared,
    budget: &str,
) -> Result<smista_proto::v1::GetBudgetBurnResponse, tonic::Status> {
    use tonic::Status;
    let Some(ledger) = &s.ledger else {
        return Err(Status::failed_precondition("no ledger: [ledger] kind = \"none\" keeps no cost records"));
    };
    let now = s.clock.now();
    let view = s
        .book
        .views(now)
        .into_iter()
        .find(|v| v.id == budget)
        .ok_or_else(|| Status::not_found(format!("unknown budget `{}`", smista_core::error::clip(budget))))?;
    let tz = zone(&s.history_cfg.time_zone).map_err(Status::internal)?;
    let quarters =
        ledger.spend_by_quarter_hour(budget, &view.period).await.map_err(crate::wire::error::ledger_status)?;
    let now_unix = i64::try_from(s.clock.unix_ms(now)).unwrap_or(i64::MAX);
    let (start, end) = (view.period_start_unix_ms, view.period_end_unix_ms);
    let last = now_unix.min(end - 1);
    let ts = |ms: i64| jiff::Timestamp::from_millisecond(ms).map_err(|e| Status::internal(e.to_string()));
    let mut day = ts(start)?.to_zoned(tz.clone()).date();
    let mut days = Vec::new();
    let (mut cumulative, mut q) = (0i64, quarters.iter().peekable());
    loop {
        let day_start =
            day.to_zoned(tz.clone()).map_err(|e| Status::internal(e.to_string()))?.timestamp().as_millisecond();
        let from = day_start.max(start);
        if from > last {
            break;
        }
        let next = day.tomorrow().map_err(|e| Status::internal(e.to_string()))?;
        let day_end =
            next.to_zoned(tz.clone()).map_err(|e| Status::internal(e.to_string()))?.timestamp().as_millisecond();
        let to = day_end.min(end);
        let (mut spent, mut contacts) = (0i64, 0u64);
        while let Some((_, cents, n)) = q.next_if(|(at, ..)| *at < to) {
            spent += cents;
            contacts += u64::try_from(*n).unwrap_or(0);
        }
        cumulative += spent;
        days.push(smista_proto::v1::BudgetDay {
            date: day.to_string(),
            start_unix_ms: u64::try_from(from).unwrap_or(0),
            spent_cents: spent,
            contacts,
            cumulative_cents: cumulative,
            paced_allowance_cents: s.book.allowance_at(budget, now, to).unwrap_or(view.ceiling_cents),
        });
        day = next;
    }
    Ok(smista_proto::v1::GetBudgetBurnResponse {
        budget_id: budget.to_owned(),
        period: view.period,
        ceiling_cents: view.ceiling_cents,
        days,
        projected_exhaustion_unix_ms: view.exhausted_at_unix_ms.map_or(0, |t| u64::try_from(t).unwrap_or(0)),
        time_zone: s.history_cfg.time_zone.clone(),
        period_start_unix_ms: u64::try_from(start).unwrap_or(0),
        period_end_unix_ms: u64::try_from(end).unwrap_or(0),
    })
}
