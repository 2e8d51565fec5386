//! The open-loop run (`erlang`, `mix`, `budget`, and each step of `max`): Poisson arrivals,
//! each caller's offer timed from its intended send time, patience and hang-up, every contact's
//! final outcome read from `StreamEvents`, then the drain and the report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use smista_proto::v1 as pb;
use smista_proto::v1::offer_contact_response::Decision;
use tokio::sync::oneshot;

use super::config::{LoadConfig, Scenario, MIX};
use super::connect::Pool;
use super::desks::login_operators;
use super::error::{rpc, LoadError};
use super::operator_check::{self, pauser};
use super::probe::server_usage;
use super::random::{draw_exp, pace, stream_seed};
use super::report::{build_report, Report};
use super::report_check::check_report;
use super::tracker::{unfinished, Tracker};
use super::wallboards;

async fn follow_events(
    pool: &Pool,
    tracker: Arc<Tracker>,
    sl_ms: u64,
) -> Result<tokio::task::JoinHandle<()>, LoadError> {
    let mut stream = pool
        .contacts()
        .stream_events(pb::StreamEventsRequest::default())
        .await
        .map_err(rpc("stream events"))?
        .into_inner();
    Ok(tokio::spawn(async move {
        use pb::contact_event::Kind;
        while let Ok(Some(ev)) = stream.message().await {
            // Contacts of other clients on the same server are ignored.
            let Some(queue) = tracker.mine.get(&ev.contact_id).map(|q| q.to_string()) else { continue };
            match ev.kind {
                Some(Kind::Transferred(t)) if !t.to_queue.is_empty() => {
                    tracker.second_waiting.insert(ev.contact_id.clone(), ev.timestamp_ms);
                }
                Some(Kind::Accepted(_)) if tracker.second_waiting.contains_key(&ev.contact_id) => {
                    // A second leg: its wait runs from the transfer, not from the arrival.
                    if let Some((_, at)) = tracker.second_waiting.remove(&ev.contact_id) {
                        let waited = ev.timestamp_ms.saturating_sub(at);
                        let l = &tracker.second;
                        l.answered.fetch_add(1, Ordering::Relaxed);
                        l.waited_ms_sum.fetch_add(waited, Ordering::Relaxed);
                        l.answered_in_sl.fetch_add(u64::from(waited <= sl_ms), Ordering::Relaxed);
                    }
                }
                Some(Kind::Accepted(a)) => {
                    tracker.answered.fetch_add(1, Ordering::Relaxed);
                    tracker.waited_ms_sum.fetch_add(a.waited_ms, Ordering::Relaxed);
                    if a.waited_ms <= sl_ms {
                        tracker.answered_in_sl.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some((_, tx)) = tracker.waiting_for_answer.remove(&ev.contact_id) {
                        let _ = tx.send(a.waited_ms);
                    }
                }
                Some(Kind::Finished(f)) => {
                    let outcome = pb::Outcome::try_from(f.outcome)
                        .map_or("unknown".into(), |o| short_name(o.as_str_name(), "OUTCOME_"));
                    *tracker.by_queue.lock().entry((queue.clone(), outcome.clone())).or_default() += 1;
                    Tracker::count(&tracker.outcomes, &outcome);
                    *tracker.finished.entry(ev.contact_id.clone()).or_default() += 1;
                    tracker.waiting_for_answer.remove(&ev.contact_id);
                }
                _ => {}
            }
        }
    }))
}

pub(super) async fn open_loop(
    cfg: &LoadConfig,
    pool: &Pool,
    rate: f64,
    stop: &Arc<AtomicBool>,
    prefix: &str,
) -> Result<Report, LoadError> {
    let tracker = Arc::new(Tracker { latency: Mutex::new(Histogram::new(3).ok()), ..Tracker::default() });
    let sl_ms = (cfg.sl_threshold * 1000.0) as u64;
    let started_unix_ms = unix_now_ms();
    let ops = login_operators(cfg, pool, prefix, cfg.operators + cfg.second_operators, true, &tracker).await?;
    let pausing = Arc::new(AtomicBool::new(false));
    let mut pausers = tokio::task::JoinSet::new();
    if cfg.pause_every > 0.0 {
        for (i, op) in ops.iter().enumerate() {
            let clock = tracker.clone();
            let (c, p, op, stop) = (cfg.clone(), pool.clone(), op.clone(), pausing.clone());
            pausers.spawn(async move { pauser(c, p, op, i as u64, clock, stop).await });
        }
    }
    // The server's usage once the desks are in: what the contacts cost is measured from here.
    let usage_at_arrivals = match &cfg.server_metrics {
        Some(url) => {
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            Some(server_usage(url).await?)
        }
        None => None,
    };
    let events = follow_events(pool, tracker.clone(), sl_ms).await?;
    let boards = if cfg.wallboards > 0 { Some(wallboards::Wallboards::start(cfg, pool).await?) } else { None };
    let mut rng = SmallRng::seed_from_u64(stream_seed(cfg.seed, u64::MAX));
    let start = Instant::now();
    let horizon = Duration::from_secs_f64(cfg.duration);
    let mut arrivals = pace(start, horizon, rate, stream_seed(cfg.seed, 0), stop.clone());
    let mut n = 0u64;
    let mut last_progress = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    while let Some(at) = arrivals.recv().await {
        let id = format!("{prefix}-{}-c{n}", run_nonce());
        n += 1;
        let queue = match cfg.scenario {
            Scenario::Mix => {
                let x: f64 = rng.random();
                let mut acc = 0.0;
                MIX.iter()
                    .find(|(_, _, w)| {
                        acc += w;
                        x < acc
                    })
                    .map_or(MIX[0].0, |m| m.0)
                    .to_owned()
            }
            _ => cfg.queue.clone(),
        };
        let patience = (cfg.patience > 0.0).then(|| draw_exp(&mut rng, cfg.patience));
        // Counted in flight here, before the task first runs: the drain below must not see zero
        // while a caller that is spawned but not yet polled is about to send its offer.
        let answered = InFlight::new(tracker.clone());
        callers.spawn(caller(pool.clone(), tracker.clone(), answered, id, queue, at, patience, sl_ms));
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "[{:>5.1}s] offered {:>7}  answered {:>7}  in flight {:>5}",
                start.elapsed().as_secs_f64(),
                tracker.offers.load(Ordering::Relaxed),
                tracker.answered.load(Ordering::Relaxed),
                callers.len()
            );
        }
        while callers.try_join_next().is_some() {}
    }
    let elapsed = start.elapsed().as_secs_f64().min(cfg.duration).max(1e-9);
    // Pauses end with the arrivals: the desks take what is still waiting.
    pausing.store(true, Ordering::Relaxed);
    while pausers.join_next().await.is_some() {}
    // Drain: first every offer in flight gets its answer (aborting a caller mid-RPC would lose a
    // decision the server made), then operators finish what they hold, then the rest is ended.
    let answered_by = Instant::now() + Duration::from_secs(10);
    while tracker.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < answered_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let grace = Instant::now() + Duration::from_secs_f64((cfg.aht * 4.0 + 2.0).min(30.0));
    while Instant::now() < grace && unfinished(&tracker) > 0 && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    callers.abort_all();
    let mut contacts = pool.contacts();
    let leftovers: Vec<String> =
        tracker.decided.iter().filter(|e| !tracker.finished.contains_key(e.key())).map(|e| e.key().clone()).collect();
    for c in leftovers {
        let _ = contacts.cancel_contact(pb::CancelContactRequest { contact_id: c }).await;
    }
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle && unfinished(&tracker) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut admin = pool.admin();
    let snapshot = admin.get_snapshot(pb::GetSnapshotRequest {}).await.map_err(rpc("snapshot"))?.into_inner();
    let check = if cfg.check_report {
        Some(check_report(pool, &tracker, started_unix_ms.saturating_sub(1_000), unix_now_ms() + 1_000).await?)
    } else {
        None
    };
    let mut opsc = pool.supervisor_ops();
    for id in &ops {
        let sent = operator_check::unix_now_ms();
        if opsc.logout(pb::LogoutRequest { operator_id: id.clone(), force: true }).await.is_ok() {
            tracker.desks.logout(id, sent, operator_check::unix_now_ms());
        }
    }
    let operators = if cfg.check_operators {
        let (from, to) = (i64::try_from(started_unix_ms).unwrap_or(0) - 1_000, operator_check::unix_now_ms() + 1_000);
        Some(operator_check::check_operators(pool, &tracker.desks, from, to, cfg.tick_ms).await?)
    } else {
        None
    };
    // Close the event stream so later phases (--vs-floor) do not pay for it.
    events.abort();
    let boards = match boards {
        Some(b) => Some(b.finish().await),
        None => None,
    };
    let mut report = build_report(cfg, rate, &tracker, (start, elapsed), &snapshot);
    report.report_check = check;
    report.operator_check = operators;
    report.wallboards = boards;
    report.usage_at_arrivals = usage_at_arrivals;
    Ok(report)
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One offer from the moment its caller is spawned until its decision is recorded (or its RPC
/// failed): the drain waits for none to be left before it may abort callers.
struct InFlight(Arc<Tracker>);

impl InFlight {
    fn new(tracker: Arc<Tracker>) -> Self {
        tracker.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(tracker)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `OUTCOME_COMPLETED` -> `completed`.
fn short_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_lowercase()
}

#[allow(clippy::too_many_arguments)]
async fn caller(
    pool: Pool,
    tracker: Arc<Tracker>,
    answered: InFlight,
    id: String,
    queue: String,
    intended: Instant,
    patience: Option<f64>,
    sl_ms: u64,
) {
    let (tx, rx) = oneshot::channel();
    tracker.mine.insert(id.clone(), queue.as_str().into());
    tracker.waiting_for_answer.insert(id.clone(), tx);
    let mut contacts = pool.contacts();
    let r = contacts
        .offer_contact(pb::OfferContactRequest {
            contact_id: id.clone(),
            queue: queue.clone(),
            channel: pb::Channel::Voice as i32,
            ..Default::default()
        })
        .await;
    let us = intended.elapsed().as_micros() as u64;
    if let Some(h) = tracker.latency.lock().as_mut() {
        let _ = h.record(us.max(1));
    }
    tracker.offers.fetch_add(1, Ordering::Relaxed);
    // `answered` is dropped once the decision is recorded below (on every path).
    let decision = match r {
        Ok(r) => r.into_inner().decision,
        Err(s) => {
            Tracker::count(&tracker.outcomes, &format!("error_{:?}", s.code()).to_lowercase());
            tracker.waiting_for_answer.remove(&id);
            return;
        }
    };
    let (queued, estimate) = match decision {
        Some(Decision::Assigned(_)) => {
            Tracker::count(&tracker.outcomes, "decision_assigned");
            (false, 0)
        }
        Some(Decision::Queued(q)) => {
            Tracker::count(&tracker.outcomes, "decision_queued");
            (true, q.estimated_wait_ms)
        }
        Some(Decision::Diverted(d)) => {
            Tracker::count(&tracker.outcomes, "decision_diverted");
            Tracker::count(&tracker.reasons, &short_name(d.reason().as_str_name(), "DIVERT_REASON_"));
            tracker.decided.insert(id.clone(), 2);
            tracker.waiting_for_answer.remove(&id);
            return;
        }
        None => return,
    };
    tracker.decided.insert(id.clone(), u8::from(queued));
    drop(answered);
    let answered_after_queue = |waited_ms: u64| {
        if queued {
            tracker.answered_after_queue.fetch_add(1, Ordering::Relaxed);
            tracker.estimates.lock().push((queue.as_str().into(), estimate, waited_ms));
        }
    };
    match patience {
        None => {
            if let Ok(waited_ms) = rx.await {
                answered_after_queue(waited_ms);
            }
        }
        Some(p) => {
            let left = Duration::from_secs_f64(p).saturating_sub(intended.elapsed());
            match tokio::time::timeout(left, rx).await {
                Ok(Ok(waited_ms)) => answered_after_queue(waited_ms),
                Ok(Err(_)) => {}
                Err(_) => {
                    let r = contacts.cancel_contact(pb::CancelContactRequest { contact_id: id.clone() }).await;
                    if r.is_ok_and(|r| r.into_inner().outcome() == pb::Outcome::Abandoned) {
                        tracker.abandoned.fetch_add(1, Ordering::Relaxed);
                        if intended.elapsed().as_millis() as u64 > sl_ms {
                            tracker.abandoned_after_sl.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

/// A tag unique to this process, in every contact id: a server remembers finished contacts (for
/// idempotent retries), so a second run with the same ids would only replay old decisions.
/// Operator ids stay stable across runs, like a real floor's staff.
pub(super) fn run_nonce() -> &'static str {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NONCE.get_or_init(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        format!("{:x}{:x}", t, std::process::id())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain waits while a caller is in flight: its count must rise at spawn and fall when
    /// its decision is recorded, never wrap below zero (a wrapped count made every open-loop run
    /// wait the whole drain time).
    #[test]
    fn a_caller_counts_in_flight_from_spawn_to_decision() {
        let t = Arc::new(Tracker::default());
        let a = InFlight::new(t.clone());
        let b = InFlight::new(t.clone());
        assert_eq!(t.in_flight.load(Ordering::SeqCst), 2);
        drop(a);
        assert_eq!(t.in_flight.load(Ordering::SeqCst), 1);
        drop(b);
        assert_eq!(t.in_flight.load(Ordering::SeqCst), 0);
    }
}
