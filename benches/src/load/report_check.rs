//! `--check-report`: after an open-loop run, the server's interval report for the run's period
//! against the run's own counts, queue by queue.

use std::collections::BTreeMap;

use serde::Serialize;
use smista_proto::v1 as pb;

use super::connect::Pool;
use super::error::{rpc, LoadError};
use super::tracker::Tracker;

/// Contacts of one queue by how they ended, as counted by this run and by the server's report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueCounts {
    /// The queue the contacts were offered to.
    pub queue: String,
    /// Offered (decided by the server).
    pub offered: u64,
    /// Accepted by an operator (completed, or hung up in service).
    pub answered: u64,
    /// Hung up while waiting.
    pub abandoned: u64,
    /// Diverted.
    pub diverted: u64,
    /// Not ended.
    pub in_progress: u64,
}

/// `--check-report`: this run's own counts and the server's interval report for its period.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReportCheck {
    /// Per queue, as this run counted.
    pub mine: Vec<QueueCounts>,
    /// Per queue, as the report says.
    pub report: Vec<QueueCounts>,
    /// Whether they are equal.
    pub agrees: bool,
    /// The period read, Unix ms.
    pub from_unix_ms: u64,
    /// End of the period read (exclusive), Unix ms.
    pub to_unix_ms: u64,
}

/// Reads the server's interval report for `[from, to)` (every page) and compares it with the
/// run's own per-queue counts.
pub(super) async fn check_report(pool: &Pool, tracker: &Tracker, from: u64, to: u64) -> Result<ReportCheck, LoadError> {
    let mut mine: BTreeMap<String, QueueCounts> = BTreeMap::new();
    for ((queue, outcome), n) in tracker.by_queue.lock().iter() {
        let c =
            mine.entry(queue.clone()).or_insert_with(|| QueueCounts { queue: queue.clone(), ..QueueCounts::default() });
        c.offered += n;
        match outcome.as_str() {
            "completed" | "cancelled_in_service" => c.answered += n,
            "abandoned" => c.abandoned += n,
            "diverted" => c.diverted += n,
            _ => c.in_progress += n,
        }
    }
    // Decided contacts without a final outcome are in progress for this run too.
    for e in &tracker.decided {
        if !tracker.finished.contains_key(e.key()) {
            if let Some(q) = tracker.mine.get(e.key()) {
                let c = mine
                    .entry(q.to_string())
                    .or_insert_with(|| QueueCounts { queue: q.to_string(), ..QueueCounts::default() });
                c.offered += 1;
                c.in_progress += 1;
            }
        }
    }
    let mut report: BTreeMap<String, QueueCounts> = BTreeMap::new();
    let mut admin = pool.admin();
    let mut token = String::new();
    loop {
        let page = admin
            .get_interval_report(pb::GetIntervalReportRequest {
                from_unix_ms: from,
                to_unix_ms: to,
                interval_minutes: 60,
                page_size: 5000,
                page_token: token,
            })
            .await
            .map_err(rpc("interval report"))?
            .into_inner();
        for r in page.queues {
            let c = report
                .entry(r.queue.clone())
                .or_insert_with(|| QueueCounts { queue: r.queue.clone(), ..QueueCounts::default() });
            c.offered += r.offered;
            c.answered += r.answered;
            c.abandoned += r.abandoned;
            c.diverted += r.diverted;
            c.in_progress += r.in_progress;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let (mine, report): (Vec<QueueCounts>, Vec<QueueCounts>) =
        (mine.into_values().collect(), report.into_values().collect());
    Ok(ReportCheck { agrees: mine == report, mine, report, from_unix_ms: from, to_unix_ms: to })
}
