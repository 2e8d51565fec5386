//! The report, printed as a table and written as JSON: latency percentiles, outcomes,
//! consistency, budgets, and an open-loop run's figures built from what it counted.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use smista_proto::v1 as pb;

use super::config::{LoadConfig, Scenario};
use super::report_check::ReportCheck;
use super::tracker::Tracker;
use super::{citizen, follow, theory, wallboards};

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
    /// Samples.
    pub count: u64,
}

pub(super) fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        count: h.len(),
    }
}

/// Does every offered contact end exactly once?
#[derive(Debug, Clone, Default, Serialize)]
pub struct Consistency {
    /// Contacts that got a decision.
    pub contacts: u64,
    /// Of those, with exactly one final outcome.
    pub finished_once: u64,
    /// With no final outcome seen.
    pub missing: u64,
    /// With more than one.
    pub duplicated: u64,
}

/// Budget figures read from the server at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BudgetFigures {
    /// Budget id.
    pub budget: String,
    /// Ceiling, cents.
    pub ceiling_cents: i64,
    /// Settled, cents.
    pub settled_cents: i64,
    /// Reserved, cents.
    pub reserved_cents: i64,
    /// Overrun, cents.
    pub overrun_cents: i64,
    /// Paced allowance, cents.
    pub paced_allowance_cents: i64,
    /// Extra-budget diversions in the period.
    pub extra_budget_diversions: u64,
    /// The node that reported it (several nodes sharing budgets), else empty.
    pub node_id: String,
    /// That node's lease on the period (several nodes), else 0.
    pub lease_cents: i64,
}

/// The second level of a run with transfers (`--transfer-share`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SecondLevel {
    /// Its queue.
    pub queue: String,
    /// Its operators.
    pub operators: u32,
    /// Transfers the first level made.
    pub transfers: u64,
    /// Per second of arrivals.
    pub transfers_per_second: f64,
    /// Second legs accepted.
    pub answered: u64,
    /// Share of them that had to queue (no operator of the queue free at the transfer).
    pub p_wait: f64,
    /// Their average wait from the transfer, seconds.
    pub asa_seconds: f64,
    /// Share accepted within the threshold of their transfer.
    pub service_level: f64,
    /// The second-level operators' occupancy during the arrivals.
    pub occupancy: f64,
    /// Mean handle time of the second legs, seconds.
    pub mean_handle_seconds: f64,
    /// Erlang C for the second level at the realised transfer rate and handle time.
    pub theory: Option<theory::ErlangC>,
}

/// The report, printed as a table and written as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Scenario run.
    pub scenario: String,
    /// Intended offers per second.
    pub target_rate: f64,
    /// Offers decided per second of arrivals.
    pub offers_per_second: f64,
    /// Offer RPC latency from intended send time.
    pub latency_us: Latency,
    /// Counts by decision and by final outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Diversions at decision, by reason (diversions after waiting, e.g. maximum wait, are the
    /// `diverted` outcomes beyond `decision_diverted`).
    pub divert_reasons: BTreeMap<String, u64>,
    /// Share of answered contacts that had to wait in a queue.
    pub p_wait: f64,
    /// Average speed of answer, seconds (answered contacts).
    pub asa_seconds: f64,
    /// Answered within the threshold / (answered + abandoned after it).
    pub service_level: f64,
    /// Abandoned / offered.
    pub abandon_rate: f64,
    /// Share of the operators' time during the arrivals spent on calls (each call's time clipped
    /// to that window; calls finished in the drain count for their part inside it).
    pub occupancy: f64,
    /// Every contact ends exactly once.
    pub consistency: Consistency,
    /// Virtual desks that were offered at least one contact (of `--operators`).
    pub desks_offered: u64,
    /// `--server-metrics`: the server's CPU time during the run per contact offered, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_contact: Option<f64>,
    /// The server's (CPU seconds, resident bytes) when arrivals began, after the desks logged in.
    #[serde(skip)]
    pub usage_at_arrivals: Option<(f64, f64)>,
    /// `--server-metrics`: the server's resident memory before the run's desks logged in, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_start_bytes: Option<f64>,
    /// `--server-metrics`: the server's resident memory at the end, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_bytes: Option<f64>,
    /// Budgets at the end.
    pub budgets: Vec<BudgetFigures>,
    /// Erlang C prediction (erlang scenario).
    pub theory: Option<theory::ErlangC>,
    /// The second level (`--transfer-share`): the legs the first level transferred.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_level: Option<SecondLevel>,
    /// Empty RPCs per second (floor, --vs-floor).
    pub floor_rps: Option<f64>,
    /// Closed-loop offers per second (--vs-floor).
    pub offer_rps: Option<f64>,
    /// offer_rps / floor_rps.
    pub ratio_to_floor: Option<f64>,
    /// All RPCs per second during the offer phase (offer plus accept and complete, or cancel).
    pub offer_phase_rpc_rps: Option<f64>,
    /// offer_phase_rpc_rps / floor_rps: the per-RPC cost of routing against an empty RPC.
    pub rpc_ratio_to_floor: Option<f64>,
    /// Closed-loop offers per second against `--target` (TLS and tokens) (--vs-plain).
    pub secure_offer_rps: Option<f64>,
    /// The same against the plaintext, open `--vs-plain` server.
    pub plain_offer_rps: Option<f64>,
    /// secure_offer_rps / plain_offer_rps.
    pub secure_ratio: Option<f64>,
    /// Closed-loop offers per second with no idle subscriber (--idle-subscribers).
    pub no_subscriber_offer_rps: Option<f64>,
    /// The same with the idle filtered subscribers connected.
    pub idle_subscriber_offer_rps: Option<f64>,
    /// idle_subscriber_offer_rps / no_subscriber_offer_rps.
    pub idle_subscriber_ratio: Option<f64>,
    /// `--wallboards`: what the subscribers and the scraper did during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wallboards: Option<wallboards::WallboardFigures>,
    /// `--vs-wallboards`: closed-loop offers per second with no wallboard.
    pub no_wallboard_offer_rps: Option<f64>,
    /// The same with the wallboards open and the scraper running.
    pub wallboard_offer_rps: Option<f64>,
    /// wallboard_offer_rps / no_wallboard_offer_rps.
    pub wallboard_ratio: Option<f64>,
    /// `--server-metrics`: the server's resident memory added per connected desk (logged in,
    /// `WatchOffers` open), bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_rss_per_desk_bytes: Option<f64>,
    /// Highest rate meeting the p99 bound (max).
    pub max_rate: Option<f64>,
    /// Seconds the arrivals ran.
    pub elapsed_seconds: f64,
    /// `--vs-other`: closed-loop offers per second against `--target`.
    pub target_offer_rps: Option<f64>,
    /// `--vs-other`: the same against the other server.
    pub other_offer_rps: Option<f64>,
    /// target_offer_rps / other_offer_rps.
    pub other_ratio: Option<f64>,
    /// `--check-report`: this run's counts against the server's interval report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_check: Option<ReportCheck>,
    /// `--check-operators`: the run's record of its desks' time against the operator report.
    pub operator_check: Option<super::operator_check::OperatorCheck>,
    /// `follow`: what a client following the active saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow: Option<follow::FollowFigures>,
    /// `citizen`: callbacks, abandons avoided, appointments kept on time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citizen: Option<citizen::CitizenFigures>,
    /// Why the run's figures cannot be compared with the theory it prints (the server's queue
    /// is not the M/M/c one the scenario assumes), one line each.
    pub warnings: Vec<String>,
    /// How far the estimated wait told at offer was from the wait each queued contact then had,
    /// per queue (contacts answered after queuing).
    pub wait_estimates: Vec<WaitEstimates>,
}

/// The estimated waits a queue gave against the waits its contacts had.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WaitEstimates {
    /// The queue.
    pub queue: String,
    /// Contacts answered after queuing with an estimate.
    pub estimated: u64,
    /// Contacts answered after queuing whose offer gave no estimate (0).
    pub without_estimate: u64,
    /// Median of |estimate - wait|, seconds.
    pub median_abs_error_s: f64,
    /// Share of estimates within ±50% of the wait: |estimate - wait| <= wait / 2.
    pub within_half: f64,
    /// Mean estimate, seconds.
    pub mean_estimate_s: f64,
    /// Mean wait of the same contacts, seconds.
    pub mean_wait_s: f64,
}

/// Per queue, from (queue, estimate ms, wait ms); queues in name order.
pub(super) fn wait_estimates(samples: &[(Box<str>, u64, u64)]) -> Vec<WaitEstimates> {
    let mut by_queue: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for (q, e, w) in samples {
        by_queue.entry(q).or_default().push((*e, *w));
    }
    by_queue
        .into_iter()
        .map(|(queue, v)| {
            let with: Vec<(u64, u64)> = v.iter().copied().filter(|(e, _)| *e > 0).collect();
            let mut errors: Vec<u64> = with.iter().map(|(e, w)| e.abs_diff(*w)).collect();
            errors.sort_unstable();
            let n = with.len() as f64;
            let mean = |f: fn(&(u64, u64)) -> u64| {
                if with.is_empty() {
                    0.0
                } else {
                    with.iter().map(f).sum::<u64>() as f64 / n / 1000.0
                }
            };
            WaitEstimates {
                queue: queue.to_owned(),
                estimated: with.len() as u64,
                without_estimate: (v.len() - with.len()) as u64,
                median_abs_error_s: errors.get(errors.len() / 2).map_or(0.0, |e| *e as f64 / 1000.0),
                within_half: if with.is_empty() {
                    0.0
                } else {
                    with.iter().filter(|(e, w)| 2 * e.abs_diff(*w) <= *w).count() as f64 / n
                },
                mean_estimate_s: mean(|(e, _)| *e),
                mean_wait_s: mean(|(_, w)| *w),
            }
        })
        .collect()
}

/// The share of the operators' time in `[start, start + elapsed]` spent on calls: each call's
/// time with its operator clipped to that window. Calls finished during the drain after the
/// arrivals stopped count only for their part inside it, so occupancy stays a share (at most 1)
/// even when a run is stopped early with a backlog.
fn occupancy(busy: &[(Instant, Instant)], start: Instant, elapsed: f64, operators: u32) -> f64 {
    let end = start + Duration::from_secs_f64(elapsed);
    let inside: f64 = busy.iter().map(|&(a, c)| c.min(end).saturating_duration_since(a.max(start)).as_secs_f64()).sum();
    inside / (f64::from(operators.max(1)) * elapsed)
}

/// The budgets of a snapshot, as the report shows them.
pub(super) fn budget_figures(snap: &pb::Snapshot) -> Vec<BudgetFigures> {
    snap.budgets
        .iter()
        .map(|b| BudgetFigures {
            budget: b.budget_id.clone(),
            ceiling_cents: b.ceiling_cents,
            settled_cents: b.settled_cents,
            reserved_cents: b.reserved_cents,
            overrun_cents: b.overrun_cents,
            paced_allowance_cents: b.paced_allowance_cents,
            extra_budget_diversions: b.extra_budget_diversions,
            node_id: snap.node_id.clone(),
            lease_cents: b.lease_cents,
        })
        .collect()
}

/// The second level of a run with `--transfer-share`: its legs' waits from their transfer, and
/// Erlang C at the transfers' realised rate. By Burke's theorem the departures of an M/M/c queue
/// are Poisson at its arrival rate, so the legs a random share of them sends on arrive as Poisson
/// too: the second queue is M/M/c2 with lambda2 = lambda * share.
fn second_level(cfg: &LoadConfig, t: &Tracker, (start, elapsed): (Instant, f64)) -> Option<SecondLevel> {
    if cfg.transfer_share <= 0.0 {
        return None;
    }
    let l = &t.second;
    let transfers = t.transfers.load(Ordering::Relaxed);
    let answered = l.answered.load(Ordering::Relaxed);
    let handled = l.handled.load(Ordering::Relaxed);
    let per = |x: u64| if answered > 0 { x as f64 / answered as f64 } else { 0.0 };
    let mean_handle =
        if handled > 0 { l.busy_ms.load(Ordering::Relaxed) as f64 / 1000.0 / handled as f64 } else { cfg.second_aht };
    let rate = transfers as f64 / elapsed;
    Some(SecondLevel {
        queue: cfg.second_queue.clone(),
        operators: cfg.second_operators,
        transfers,
        transfers_per_second: rate,
        answered,
        p_wait: per(l.waited.load(Ordering::Relaxed)),
        asa_seconds: per(l.waited_ms_sum.load(Ordering::Relaxed)) / 1000.0,
        service_level: if answered > 0 { per(l.answered_in_sl.load(Ordering::Relaxed)) } else { 1.0 },
        occupancy: occupancy(&l.busy.lock(), start, elapsed, cfg.second_operators),
        mean_handle_seconds: mean_handle,
        theory: theory::erlang_c(cfg.second_operators, rate, mean_handle, cfg.sl_threshold),
    })
}

pub(super) fn build_report(
    cfg: &LoadConfig,
    rate: f64,
    t: &Tracker,
    (start, elapsed): (Instant, f64),
    snap: &pb::Snapshot,
) -> Report {
    let answered = t.answered.load(Ordering::Relaxed);
    let offers = t.offers.load(Ordering::Relaxed);
    let abandoned = t.abandoned.load(Ordering::Relaxed);
    let after_sl = t.abandoned_after_sl.load(Ordering::Relaxed);
    let mut consistency = Consistency { contacts: t.decided.len() as u64, ..Consistency::default() };
    for e in &t.decided {
        match t.finished.get(e.key()).map(|n| *n) {
            None => consistency.missing += 1,
            Some(1) => consistency.finished_once += 1,
            Some(_) => consistency.duplicated += 1,
        }
    }
    let lat = t.latency.lock().as_ref().map(latency).unwrap_or_default();
    // Compare with Erlang C at the realised arrival rate and mean handle time: near high occupancy
    // P(wait) is very sensitive to the load actually offered.
    let handled = t.first.handled.load(Ordering::Relaxed);
    let mean_handle =
        if handled > 0 { t.first.busy_ms.load(Ordering::Relaxed) as f64 / 1000.0 / handled as f64 } else { cfg.aht };
    let theory = (cfg.scenario == Scenario::Erlang)
        .then(|| theory::erlang_c(cfg.operators, offers as f64 / elapsed, mean_handle, cfg.sl_threshold))
        .flatten();
    let mut warnings = Vec::new();
    if cfg.scenario == Scenario::Erlang {
        let wrap = t.wrap_up_ms_max.load(Ordering::Relaxed);
        if wrap > 0 {
            warnings.push(format!(
                "queue `{}` gives a wrap-up of {:.1} s after each contact, which Erlang C does not model: P(wait) and waits are not comparable (start the server with `{}`)",
                cfg.queue,
                wrap as f64 / 1000.0,
                cfg.scenario.server_command()
            ));
        }
        let diverted = t.reasons.lock().values().sum::<u64>();
        if diverted > 0 {
            warnings.push(format!(
                "{diverted} contacts were diverted ({:?}), which Erlang C does not model (start the server with `{}`)",
                t.reasons.lock(),
                cfg.scenario.server_command()
            ));
        }
    }
    Report {
        scenario: format!("{:?}", cfg.scenario).to_lowercase(),
        target_rate: rate,
        offers_per_second: offers as f64 / elapsed,
        latency_us: lat,
        outcomes: t.outcomes.lock().clone(),
        divert_reasons: t.reasons.lock().clone(),
        p_wait: if answered > 0 {
            t.answered_after_queue.load(Ordering::Relaxed) as f64 / answered as f64
        } else {
            0.0
        },
        asa_seconds: if answered > 0 {
            t.waited_ms_sum.load(Ordering::Relaxed) as f64 / answered as f64 / 1000.0
        } else {
            0.0
        },
        service_level: if answered + after_sl > 0 {
            t.answered_in_sl.load(Ordering::Relaxed) as f64 / (answered + after_sl) as f64
        } else {
            1.0
        },
        abandon_rate: if offers > 0 { abandoned as f64 / offers as f64 } else { 0.0 },
        occupancy: occupancy(&t.first.busy.lock(), start, elapsed, cfg.operators),
        second_level: second_level(cfg, t, (start, elapsed)),
        consistency,
        desks_offered: t.desks_offered.load(Ordering::Relaxed),
        budgets: budget_figures(snap),
        theory,
        elapsed_seconds: elapsed,
        wait_estimates: wait_estimates(&t.estimates.lock()),
        warnings,
        ..Report::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_estimates_are_scored_per_queue_without_counting_missing_ones() {
        let s: Vec<(Box<str>, u64, u64)> = vec![
            ("a".into(), 1000, 1000), // exact
            ("a".into(), 1400, 1000), // within half
            ("a".into(), 4000, 1000), // 3 s off
            ("a".into(), 0, 9000),    // no estimate
            ("b".into(), 500, 2000),  // 1.5 s off, not within half
        ];
        let w = wait_estimates(&s);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].queue.as_str(), w[0].estimated, w[0].without_estimate), ("a", 3, 1));
        assert!((w[0].median_abs_error_s - 0.4).abs() < 1e-9, "{w:?}");
        assert!((w[0].within_half - 2.0 / 3.0).abs() < 1e-9, "{w:?}");
        assert!((w[0].mean_wait_s - 1.0).abs() < 1e-9, "{w:?}");
        assert_eq!((w[1].estimated, w[1].within_half), (1, 0.0));
        assert!((w[1].median_abs_error_s - 1.5).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn occupancy_counts_only_the_time_inside_the_window() {
        let start = Instant::now();
        let at = |s: f64| start + Duration::from_secs_f64(s);
        // Two operators over 10 s: one call fully inside (5 s), one running past the end (2 s of
        // it inside).
        let busy = [(at(0.0), at(5.0)), (at(8.0), at(14.0))];
        assert!((occupancy(&busy, start, 10.0, 2) - 0.35).abs() < 1e-9);
        // A backlog drained after an early stop: both operators busy the whole window and long
        // after it. Occupancy is 1, not the 2.4 that total busy time / window gave.
        let backlog: Vec<_> = (0..20).map(|i| (at(f64::from(i) * 0.5), at(f64::from(i) * 0.5 + 0.5))).collect();
        let both: Vec<_> = backlog.iter().chain(backlog.iter()).copied().collect();
        assert!((occupancy(&both, start, 3.0, 2) - 1.0).abs() < 1e-9);
    }
}
