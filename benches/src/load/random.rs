//! The run's random draws: one independent seeded stream per use, exponential and handle-time
//! draws, and the Poisson arrival instants of an open-loop run, each sent when it is due.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::config::HandleDist;

/// The seed of random stream `k` of a run: arrivals are stream 0, operator `i` stream `i + 1`,
/// queue and patience draws the last. Streams must not share a seed: when operator 0 drew its
/// handle times from the same sequence as the arrival gaps, long services came right after long
/// gaps and short ones in bursts, and waits were a third of what M/M/1 predicts.
pub(super) fn stream_seed(seed: u64, k: u64) -> u64 {
    // SplitMix64 of (seed, k): distinct, well-mixed seeds for distinct k.
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn draw_exp(rng: &mut SmallRng, mean: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    -u.ln() * mean
}

pub(super) fn draw_handle(rng: &mut SmallRng, dist: HandleDist, mean: f64) -> f64 {
    match dist {
        HandleDist::Fixed => mean,
        HandleDist::Exponential => draw_exp(rng, mean),
        HandleDist::Lognormal => {
            // CV = 1: sigma^2 = ln 2, mu = ln(mean) - sigma^2 / 2. Box-Muller for the normal.
            let s2 = std::f64::consts::LN_2;
            let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (mean.ln() - s2 / 2.0 + s2.sqrt() * z).exp()
        }
    }
}

/// The Poisson arrival instants of an open-loop run, each sent when it is due. A dedicated thread
/// sleeps until each instant (the OS timer is precise to tens of microseconds, tokio's to a
/// millisecond), so the runtime never spins waiting and arrivals are not systematically late;
/// whatever lateness remains counts in the offer latency, which is measured from these instants.
pub(super) fn pace(
    start: Instant,
    horizon: Duration,
    rate: f64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> tokio::sync::mpsc::UnboundedReceiver<Instant> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut t = 0.0;
        loop {
            t += draw_exp(&mut rng, 1.0 / rate);
            let at = start + Duration::from_secs_f64(t);
            if at > start + horizon || stop.load(Ordering::Relaxed) {
                return;
            }
            if let Some(lead) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(lead);
            }
            if tx.send(at).is_err() {
                return;
            }
        }
    });
    rx
}
