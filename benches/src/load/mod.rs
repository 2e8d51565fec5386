//! `smista-load`: drives a running smista over gRPC like a telephony platform plus an operator
//! floor, and reports what it measured.
//!
//! Arrivals are open-loop Poisson: each contact has an intended send time drawn in advance and its
//! offer latency is measured from that intended time, so a slow server shows as latency instead of
//! silently lowering the offered rate (no coordinated omission). Virtual operators log in, watch
//! their offers, accept at once, handle for a drawn time and complete, and may pause with reason
//! codes for drawn spells. Callers hang up after a drawn patience. Every contact's final outcome
//! is read from `StreamEvents`.

pub mod citizen;
mod closed;
mod config;
mod connect;
mod desks;
mod error;
pub mod follow;
mod max;
mod open_loop;
mod operator_check;
mod probe;
mod random;
mod report;
mod report_check;
pub mod theory;
mod tracker;
pub mod wallboards;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::{HandleDist, LoadConfig, Scenario};
pub use error::LoadError;
pub use operator_check::{GroupTimes, OperatorCheck};
pub use report::{BudgetFigures, Consistency, Latency, Report, SecondLevel, WaitEstimates};
pub use report_check::{QueueCounts, ReportCheck};

use closed::{floor, vs_floor, vs_idle, vs_pair, vs_wallboards};
use connect::{Identity, Pool};
use max::max_rate;
use open_loop::open_loop;
use probe::{preflight, server_usage};

/// Runs the scenario against every target of a comma-separated `--target` at once, each with its
/// share of `--rate`, its own operators and ids; returns each target's report (its budgets as
/// its node reports them: several nodes sharing a budget each show their own spend and lease).
pub async fn run_many(cfg: &LoadConfig, stop: Arc<AtomicBool>) -> Result<Vec<(String, Report)>, LoadError> {
    let targets: Vec<String> =
        cfg.target.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    if cfg.scenario == Scenario::Follow {
        return Ok(vec![(cfg.target.clone(), follow::run(cfg, targets, stop).await?)]);
    }
    if targets.len() <= 1 {
        return Ok(vec![(cfg.target.clone(), run(cfg, stop).await?)]);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let mut c = cfg.clone();
        c.target = t.clone();
        c.rate = cfg.rate / targets.len() as f64;
        c.prefix = format!("{}-n{i}", cfg.prefix);
        let stop = stop.clone();
        tasks.spawn(async move { (i, c.target.clone(), run(&c, stop).await) });
    }
    let mut out: Vec<(usize, String, Report)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, t, r) = done.map_err(|e| LoadError::Usage(format!("a target's run failed: {e}")))?;
        out.push((i, t, r?));
    }
    out.sort_by_key(|x| x.0);
    Ok(out.into_iter().map(|(_, t, r)| (t, r)).collect())
}

/// Runs a scenario and returns its report. `stop` ends arrivals early (Ctrl-C).
pub async fn run(cfg: &LoadConfig, stop: Arc<AtomicBool>) -> Result<Report, LoadError> {
    if cfg.rate <= 0.0 || cfg.duration <= 0.0 || cfg.aht <= 0.0 {
        return Err(LoadError::Usage("--rate, --duration and --aht must be positive".into()));
    }
    if !(0.0..=1.0).contains(&cfg.transfer_share) || (cfg.transfer_share > 0.0 && cfg.second_operators == 0) {
        return Err(LoadError::Usage(
            "--transfer-share is a share (0..=1), and needs --second-operators to take the transfers".into(),
        ));
    }
    // Several connections, as real desks spread over them: one per 2,000 desks, at least 4.
    let connections = (cfg.operators as usize).div_ceil(2_000).max(4);
    let pool = Pool::connect(&cfg.target, connections, &cfg.creds, Identity::from_config(cfg)?).await?;
    let before = match &cfg.server_metrics {
        Some(url) => Some(server_usage(url).await?),
        None => None,
    };
    preflight(cfg, &pool).await?;
    let mut report = match cfg.scenario {
        Scenario::Floor => {
            let rps = floor(&pool, cfg.concurrency, Duration::from_secs_f64(cfg.duration), &stop).await;
            Report { scenario: "floor".into(), floor_rps: Some(rps), ..Report::default() }
        }
        Scenario::Max => max_rate(cfg, &pool, &stop).await?,
        Scenario::Follow => follow::run(cfg, vec![cfg.target.clone()], stop.clone()).await?,
        Scenario::Citizen => citizen::run(cfg, &pool, &stop).await?,
        Scenario::Wallboards => {
            let boards = wallboards::Wallboards::start(cfg, &pool).await?;
            let until = Instant::now() + Duration::from_secs_f64(cfg.duration);
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Report { scenario: "wallboards".into(), wallboards: Some(boards.finish().await), ..Report::default() }
        }
        _ => open_loop(cfg, &pool, cfg.rate, &stop, &cfg.prefix).await?,
    };
    if let (Some(url), Some((cpu0, rss0))) = (&cfg.server_metrics, before) {
        report.server_rss_start_bytes = Some(rss0);
        // CPU from the first arrival (the desks' logins are not the contacts' cost).
        let cpu0 = report.usage_at_arrivals.map_or(cpu0, |u| u.0);
        // The gauges refresh about once a second: let the last one catch the run's end.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let (cpu1, rss) = server_usage(url).await?;
        let contacts = report.consistency.contacts.max(1) as f64;
        report.server_cpu_us_per_contact = Some((cpu1 - cpu0) * 1e6 / contacts);
        report.server_rss_bytes = Some(rss);
    }
    if let (Some(start), Some((_, rss1))) = (report.server_rss_start_bytes, report.usage_at_arrivals) {
        report.server_rss_per_desk_bytes = Some((rss1 - start) / f64::from(cfg.operators.max(1)));
    }
    if cfg.vs_wallboards {
        if cfg.wallboards == 0 {
            return Err(LoadError::Usage("--vs-wallboards needs --wallboards N".into()));
        }
        let (none, with, figures) = vs_wallboards(cfg, &pool, &stop).await?;
        report.no_wallboard_offer_rps = Some(none);
        report.wallboard_offer_rps = Some(with);
        report.wallboard_ratio = Some(if none > 0.0 { with / none } else { 0.0 });
        report.wallboards.get_or_insert(figures);
    }
    if cfg.idle_subscribers > 0 {
        let (none, idle) = vs_idle(cfg, &pool, &stop).await?;
        report.no_subscriber_offer_rps = Some(none);
        report.idle_subscriber_offer_rps = Some(idle);
        report.idle_subscriber_ratio = Some(if none > 0.0 { idle / none } else { 0.0 });
    }
    if let Some(other) = &cfg.vs_other {
        let (this, that) = vs_pair(cfg, &pool, other, ("target", "other"), &stop).await?;
        report.target_offer_rps = Some(this);
        report.other_offer_rps = Some(that);
        report.other_ratio = Some(if that > 0.0 { this / that } else { 0.0 });
    }
    if let Some(plain) = &cfg.vs_plain {
        let (secure, open) = vs_pair(cfg, &pool, plain, ("TLS + tokens", "plaintext"), &stop).await?;
        report.secure_offer_rps = Some(secure);
        report.plain_offer_rps = Some(open);
        report.secure_ratio = Some(if open > 0.0 { secure / open } else { 0.0 });
    }
    if cfg.vs_floor && cfg.scenario != Scenario::Floor {
        let (floor_rps, offer_rps, rpc_rps) = vs_floor(cfg, &pool, &stop).await?;
        let ratio = |x: f64| if floor_rps > 0.0 { x / floor_rps } else { 0.0 };
        report.floor_rps = Some(floor_rps);
        report.offer_rps = Some(offer_rps);
        report.ratio_to_floor = Some(ratio(offer_rps));
        report.offer_phase_rpc_rps = Some(rpc_rps);
        report.rpc_ratio_to_floor = Some(ratio(rpc_rps));
    }
    Ok(report)
}
