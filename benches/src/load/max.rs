//! `--scenario max`: the highest offer rate whose p99 latency stays under `--p99-bound-us`,
//! found with open-loop runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::config::LoadConfig;
use super::connect::Pool;
use super::error::LoadError;
use super::open_loop::open_loop;
use super::report::Report;

/// Doubles the rate from `--rate` until p99 exceeds the bound, then bisects four times.
pub(super) async fn max_rate(cfg: &LoadConfig, pool: &Pool, stop: &Arc<AtomicBool>) -> Result<Report, LoadError> {
    let (mut good, mut bad): (Option<(f64, Report)>, Option<f64>) = (None, None);
    let mut rate = cfg.rate;
    for step in 0..16 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let r = open_loop(cfg, pool, rate, stop, &format!("{}-max{step}", cfg.prefix)).await?;
        let ok = r.latency_us.p99 <= cfg.p99_bound_us && r.outcomes.keys().all(|k| !k.starts_with("error"));
        eprintln!("[max] {rate:.0}/s: p99 {} us -> {}", r.latency_us.p99, if ok { "within bound" } else { "over" });
        if ok {
            good = Some((rate, r));
        } else {
            bad = Some(rate);
        }
        rate = match (good.as_ref().map(|g| g.0), bad) {
            (Some(g), None) => g * 2.0,
            (None, Some(b)) => b / 2.0,
            (Some(g), Some(b)) if b / g > 1.1 => (g + b) / 2.0,
            _ => break,
        };
    }
    let (rate, mut report) = good.ok_or_else(|| LoadError::Usage("no rate met the p99 bound; lower --rate".into()))?;
    report.scenario = "max".into();
    report.max_rate = Some(rate);
    Ok(report)
}
