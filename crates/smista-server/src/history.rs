//! The contact history, server side: the trail of every live contact (arrival, overflows, each
//! offer and what came of it) kept beside the engine from the events it reports, turned into a
//! contact detail record when the contact ends and handed to the ledger's group commit
//! ([`Ledger::ended`](smista_ledger::Ledger::ended)); the purge after the retention; the time
//! zone of the interval reports.
//!
//! Nothing here runs inside the engine's critical sections: trails are updated in
//! `Shared::publish`, after the engine call that reported the events, one map entry per live
//! contact.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use serde::Deserialize;
use smista_core::{DivertReason, Event, Fallback};
use smista_ledger::{ContactEnd, Detail, OfferOutcome, OfferRecord};

/// `[history]`: the contact history and its reports.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySection {
    /// Keep the contact history (on by default). Off, contacts are not followed and their end
    /// records are written only when no cost record tells how they ended (what idempotent
    /// replies after a restart need): no interval reports, no detail. For measuring what the
    /// history costs, and for a centre that keeps its records elsewhere.
    pub enabled: bool,
    /// Contact detail records older than this (by their end) are purged, days. 0 keeps them for
    /// ever.
    pub retention_days: u32,
    /// Keep the caller's keyed hash (`caller_key`) in the records (off by default: the records
    /// then hold no caller data at all).
    pub keep_caller_key: bool,
    /// The centre's time zone (IANA name): interval reports follow its wall clock.
    pub time_zone: String,
    /// Default interval of reports, minutes (a divisor of a day: 5, 10, 15, 20, 30, 60...).
    pub interval_minutes: u32,
    /// Callers who hang up within this wait are *short abandons*, counted apart, ms.
    pub short_abandon_ms: u64,
}

impl Default for HistorySection {
    fn default() -> Self {
        HistorySection {
            enabled: true,
            retention_days: 400,
            keep_caller_key: false,
            time_zone: "Europe/Rome".into(),
            interval_minutes: 30,
            short_abandon_ms: 5_000,
        }
    }
}

impl HistorySection {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        zone(&self.time_zone)?;
        if !(1..=1440).contains(&self.interval_minutes) || 1440 % self.interval_minutes != 0 {
            return Err(format!(
                "[history] interval_minutes = {}: must divide a day (5, 10, 15, 30, 60...)",
                self.interval_minutes
            ));
        }
        if self.short_abandon_ms > 3_600_000 {
            return Err("[history] short_abandon_ms: at most an hour".into());
        }
        Ok(())
    }
}

/// The IANA time zone `name` (from the database bundled in the binary, so a container without
/// `/usr/share/zoneinfo` reports in the right zone too).
pub fn zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(name).map_err(|e| format!("[history] time_zone `{name}`: {e}"))
}

/// A time zone as the report builder wants it.
#[derive(Debug, Clone)]
pub struct Tz(pub jiff::tz::TimeZone);

impl smista_core::report::Zone for Tz {
    fn offset_ms(&self, unix_ms: i64) -> i64 {
        jiff::Timestamp::from_millisecond(unix_ms).map_or(0, |t| i64::from(self.0.to_offset(t).seconds()) * 1000)
    }
}

impl Tz {
    /// `unix_ms` on this zone's wall clock, RFC 3339 with its offset (`2026-10-25T02:30:00+01:00`).
    #[must_use]
    pub fn format(&self, unix_ms: i64) -> String {
        jiff::Timestamp::from_millisecond(unix_ms)
            .map(|t| t.to_zoned(self.0.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
            .unwrap_or_default()
    }
}

/// What is known of a live contact beyond the engine's own record.
#[derive(Debug, Clone)]
struct Trail {
    arrived_unix_ms: i64,
    received_unix_ms: i64,
    first_queue: Arc<str>,
    overflows: Vec<Arc<str>>,
    offers: Vec<(Arc<str>, Arc<str>, OfferOutcome)>,
    answered_unix_ms: i64,
    caller_key: Box<str>,
}

/// The trails of live contacts and how to turn them into records.
#[derive(Debug, Default)]
pub struct History {
    enabled: bool,
    trails: DashMap<Arc<str>, Trail>,
    /// Group -> its supplier.
    suppliers: HashMap<String, String>,
    keep_caller_key: bool,
}

impl History {
    /// An empty history for groups `groups` (name, supplier).
    #[must_use]
    pub fn new(groups: &[smista_core::config::GroupConfig], cfg: &HistorySection) -> Self {
        let keep_caller_key = cfg.keep_caller_key;
        History {
            enabled: cfg.enabled,
            trails: DashMap::new(),
            suppliers: groups.iter().filter_map(|g| g.supplier.clone().map(|s| (g.name.clone(), s))).collect(),
            keep_caller_key,
        }
    }

    /// A contact offered to smista (before the engine routes it). A repeated offer of a live
    /// contact keeps its first trail.
    /// Returns whether this call started the trail.
    pub fn arrive(
        &self,
        contact: &str,
        queue: &str,
        arrived_unix_ms: i64,
        received_unix_ms: i64,
        caller_key: &str,
    ) -> bool {
        if !self.enabled || self.trails.contains_key(contact) {
            return false;
        }
        let mut created = false;
        self.trails.entry(Arc::from(contact)).or_insert_with(|| {
            created = true;
            Trail {
                arrived_unix_ms,
                received_unix_ms,
                first_queue: Arc::from(queue),
                overflows: Vec::new(),
                offers: Vec::new(),
                answered_unix_ms: 0,
                caller_key: if self.keep_caller_key { caller_key.into() } else { Box::default() },
            }
        });
        created
    }

    /// Forgets a contact's trail (its offer was refused before it was routed).
    pub fn forget(&self, contact: &str) {
        self.trails.remove(contact);
    }

    fn mark(&self, contact: &str, operator: &str, outcome: OfferOutcome) {
        if let Some(mut t) = self.trails.get_mut(contact) {
            if let Some(o) = t.offers.iter_mut().rev().find(|o| &*o.0 == operator) {
                o.2 = outcome;
            }
        }
    }

    /// Follows what an engine call reported; returns the records of the contacts that ended.
    /// `unix_ms` is when, and `to_unix` turns engine time into Unix ms.
    pub fn apply(
        &self,
        events: &[Event],
        unix_ms: i64,
        to_unix: impl Fn(smista_core::Millis) -> i64,
    ) -> Vec<ContactEnd> {
        let mut ended = Vec::new();
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::Offered { contact, operator, group, .. } => {
                    if let Some(mut t) = self.trails.get_mut(&**contact) {
                        t.offers.push((operator.clone(), group.clone(), OfferOutcome::Withdrawn));
                    }
                }
                Event::OfferDeclined { contact, operator, .. } => self.mark(contact, operator, OfferOutcome::Declined),
                Event::OfferTimedOut { contact, operator, .. } => self.mark(contact, operator, OfferOutcome::TimedOut),
                Event::Accepted { contact, operator, .. } => {
                    self.mark(contact, operator, OfferOutcome::Accepted);
                    if let Some(mut t) = self.trails.get_mut(&**contact) {
                        t.answered_unix_ms = unix_ms;
                    }
                }
                Event::Overflowed { contact, to, .. } => {
                    if let Some(mut t) = self.trails.get_mut(&**contact) {
                        t.overflows.push(to.clone());
                    }
                }
                Event::Finished {
                    contact,
                    queue,
                    channel,
                    outcome,
                    waited_ms,
                    handle_ms,
                    operator,
                    group,
                    wrap_up_ms,
                    arrived,
                    segment,
                    charged,
                } => {
                    // A diversion is reported just before its end, in the same batch.
                    let diverted: Option<(DivertReason, Fallback)> = events[..i].iter().rev().find_map(|d| match d {
                        Event::Diverted { contact: c, reason, fallback, .. } if c == contact => {
                            Some((*reason, *fallback))
                        }
                        _ => None,
                    });
                    if !self.enabled && charged.is_some() {
                        continue; // its cost record tells how it ended
                    }
                    let trail = self.trails.remove(&**contact).map(|(_, t)| t);
                    let group = group.as_deref().unwrap_or_default().to_owned();
                    let detail = Detail {
                        arrived_unix_ms: trail.as_ref().map_or_else(|| to_unix(*arrived), |t| t.arrived_unix_ms),
                        received_unix_ms: trail.as_ref().map_or(0, |t| t.received_unix_ms),
                        answered_unix_ms: trail.as_ref().map_or(0, |t| t.answered_unix_ms),
                        first_queue: trail.as_ref().map_or_else(|| queue.to_string(), |t| t.first_queue.to_string()),
                        overflows: trail
                            .as_ref()
                            .map_or_else(Vec::new, |t| t.overflows.iter().map(|q| q.to_string()).collect()),
                        segment: segment.as_str().to_owned(),
                        offers: trail.as_ref().map_or_else(Vec::new, |t| {
                            t.offers
                                .iter()
                                .map(|(op, g, o)| OfferRecord {
                                    operator: op.to_string(),
                                    group: g.to_string(),
                                    outcome: *o,
                                })
                                .collect()
                        }),
                        supplier: self.suppliers.get(&group).cloned().unwrap_or_default(),
                        group,
                        budget: charged.as_ref().map_or_else(String::new, |c| c.0.to_string()),
                        cost_cents: charged.as_ref().map_or(0, |c| c.1),
                        caller_key: trail.as_ref().map_or_else(String::new, |t| t.caller_key.to_string()),
                    };
                    ended.push(ContactEnd {
                        contact: contact.to_string(),
                        ended_unix_ms: unix_ms,
                        queue: queue.to_string(),
                        channel: *channel,
                        outcome: *outcome,
                        waited_ms: *waited_ms,
                        handle_ms: *handle_ms,
                        wrap_up_ms: *wrap_up_ms,
                        operator: operator.as_deref().unwrap_or_default().to_owned(),
                        diverted,
                        detail,
                    });
                }
                _ => {}
            }
        }
        ended
    }

    /// The supplier of `group` ("" for internal staff or an unknown group).
    #[must_use]
    pub fn supplier_of(&self, group: &str) -> String {
        self.suppliers.get(group).cloned().unwrap_or_default()
    }

    /// The live contacts: (arrival, first queue), for the reports' *in progress*.
    #[must_use]
    pub fn in_progress(&self) -> Vec<(i64, String)> {
        self.trails.iter().map(|t| (t.arrived_unix_ms, t.first_queue.to_string())).collect()
    }

    /// Live contacts followed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.trails.len()
    }

    /// Whether none is followed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.trails.is_empty()
    }
}

/// Deletes contact detail records older than `retention_days` (by their end): at start, then
/// hourly, in batches of 10,000 so that the group commit is never held up for long.
pub async fn purge_loop(
    ledger: Arc<smista_ledger::Ledger>,
    retention_days: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const BATCH: u32 = 10_000;
    loop {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let before = now - i64::from(retention_days) * 86_400_000;
        let mut purged = 0u64;
        loop {
            match ledger.purge_history(before, BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < u64::from(BATCH) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purging old contact records failed; retried in an hour");
                    break;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
        match ledger.purge_staffing(before).await {
            Ok(n) => purged += n,
            Err(e) => tracing::warn!(error = %e, "purging old staffed time failed; retried in an hour"),
        }
        if purged > 0 {
            tracing::info!(purged, retention_days, "old contact records and staffed time purged");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Writes the staffed time accounted so far to the ledger (what fails is kept for the next try).
pub async fn flush_staffing(
    s: &crate::service::Shared,
    ledger: &smista_ledger::Ledger,
) -> Result<(), smista_ledger::LedgerError> {
    let now = i64::try_from(s.clock.unix_ms(s.clock.now())).unwrap_or(i64::MAX);
    let rows: Vec<(i64, String, i64, i64, i64)> =
        s.staffing.take(now).into_iter().map(|(q, g, t)| (q, g, t.staffed_ms, t.paused_ms, t.busy_ms)).collect();
    if let Err(e) = ledger.add_staffing(&rows).await {
        s.staffing.put_back(rows);
        return Err(e);
    }
    Ok(())
}

/// Flushes the staffed time every 10 seconds, and once more at shutdown.
pub async fn staffing_loop(s: Arc<crate::service::Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(ledger) = s.ledger.clone() else { return };
    loop {
        let done = tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => false,
            _ = stop.changed() => true,
        };
        if let Err(e) = flush_staffing(&s, &ledger).await {
            tracing::warn!(error = %e, "staffed time not written; retried");
        }
        if done {
            return;
        }
    }
}

/// Longest period one report request may cover.
const MAX_REPORT_MS: u64 = 31 * 86_400_000;
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
    }
}

/// One page of `AdminService.GetIntervalReport` (see the proto): whole intervals from the page
/// token's instant, folded from the ledger's records and this node's contacts in progress.
pub async fn interval_page(
    s: &crate::service::Shared,
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
    let minutes = if req.interval_minutes == 0 { cfg.interval_minutes } else { req.interval_minutes };
    if !(1..=1440).contains(&minutes) || 1440 % minutes != 0 {
        return Err(Status::invalid_argument(format!("interval_minutes {minutes} does not divide a day")));
    }
    if req.to_unix_ms <= req.from_unix_ms || req.to_unix_ms - req.from_unix_ms > MAX_REPORT_MS {
        return Err(Status::invalid_argument("to_unix_ms must follow from_unix_ms, by at most 31 days"));
    }
    let size = match req.page_size {
        0 => 500,
        n @ 1..=5000 => n as usize,
        n => return Err(Status::invalid_argument(format!("page_size {n} is above 5000"))),
    };
    let (from, to) = (
        i64::try_from(req.from_unix_ms).map_err(|_| Status::invalid_argument("from_unix_ms out of range"))?,
        i64::try_from(req.to_unix_ms).map_err(|_| Status::invalid_argument("to_unix_ms out of range"))?,
    );
    let start = if req.page_token.is_empty() {
        from
    } else {
        match req.page_token.parse::<i64>() {
            Ok(t) if (from..to).contains(&t) => t,
            _ => return Err(Status::invalid_argument("page_token does not belong to this range")),
        }
    };
    let tz = Tz(zone(&cfg.time_zone).map_err(Status::internal)?);
    let interval_ms = i64::from(minutes) * 60_000;
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
    flush_staffing(s, ledger).await.map_err(crate::error::ledger_status)?;
    let first_quarter = start - start.rem_euclid(crate::staffing::QUARTER_MS);
    for (q, group, staffed, paused, busy) in
        ledger.staffing(first_quarter, end).await.map_err(crate::error::ledger_status)?
    {
        let supplier = s.history.supplier_of(&group);
        let ms = |x: i64| u64::try_from(x).unwrap_or(0);
        b.add_staffing(q, &group, &supplier, (ms(staffed), ms(paused), ms(busy)));
    }
    let mut cursor = None;
    loop {
        let page =
            ledger.history_page(start, end, cursor.as_ref(), FETCH).await.map_err(crate::error::ledger_status)?;
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

/// `AdminService.GetBudgetBurn` (see the proto): the current period's spend per local day.
pub async fn budget_burn(
    s: &crate::service::Shared,
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
    let quarters = ledger.spend_by_quarter_hour(budget, &view.period).await.map_err(crate::error::ledger_status)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use smista_core::report::{Builder, Record, Zone};

    /// 2026-03-29T01:00:00Z and 2026-10-25T01:00:00Z, the EU's change instants.
    const SPRING: i64 = 1_774_746_000_000;
    const AUTUMN: i64 = 1_792_890_000_000;
    const H: i64 = 3_600_000;

    #[test]
    fn rome_changes_its_clocks_on_the_days_the_eu_rule_says() {
        let rome = Tz(zone("Europe/Rome").expect("bundled tz database"));
        assert_eq!(rome.offset_ms(SPRING - 1), H);
        assert_eq!(rome.offset_ms(SPRING), 2 * H);
        assert_eq!(rome.offset_ms(AUTUMN - 1), 2 * H);
        assert_eq!(rome.offset_ms(AUTUMN), H);
        assert_eq!(rome.format(AUTUMN - H / 2), "2026-10-25T02:30:00+02:00");
        assert_eq!(rome.format(AUTUMN + H / 2), "2026-10-25T02:30:00+01:00");
        assert!(zone("Mars/Olympus").is_err());
    }

    #[test]
    fn a_day_of_half_hours_in_rome_has_46_or_50_rows_on_the_change_days() {
        let rome = Tz(zone("Europe/Rome").expect("zone"));
        // Local midnights: 29 March starts at 23:00Z the day before and lasts 23 h; 25 October
        // starts at 22:00Z the day before and lasts 25 h.
        for (midnight, hours) in [(SPRING - 2 * H, 23), (AUTUMN - 3 * H, 25)] {
            let mut b = Builder::new(1_800_000, &rome, Default::default(), 20_000, 5_000);
            for m in 0..hours * 60 {
                b.add(&Record {
                    arrived_unix_ms: midnight + m * 60_000,
                    first_queue: "naspi",
                    overflowed: false,
                    outcome: smista_core::Outcome::Abandoned,
                    diverted: None,
                    waited_ms: 1_000,
                    handle_ms: 0,
                    wrap_up_ms: 0,
                    group: "",
                    supplier: "",
                });
            }
            let (rows, _) = b.finish();
            assert_eq!(rows.len() as i64, hours * 2);
            assert!(rows.iter().all(|r| r.offered == 30));
            let labels: std::collections::BTreeSet<String> =
                rows.iter().map(|r| rome.format(r.start_unix_ms)).collect();
            assert_eq!(
                labels.len() as i64,
                hours * 2,
                "every interval's label is distinct (offsets tell the repeated hour apart)"
            );
        }
    }
}
