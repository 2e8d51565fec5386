//! Closed-loop measurements, each a ratio taken in one run: offers against empty RPCs (the
//! transport's floor), with and without idle subscribers or wallboards, and one server against
//! another (TLS and tokens against plaintext, or another configuration).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smista_proto::v1 as pb;
use smista_proto::v1::offer_contact_response::Decision;

use super::connect::{Credentials, Identity, Pool};
use super::desks::login_operators;
use super::error::rpc;
use super::open_loop::run_nonce;
use super::tracker::Tracker;
use super::{wallboards, LoadConfig, LoadError};

/// Closed-loop empty RPCs with `concurrency` callers for `d`: requests per second.
pub(super) async fn floor(pool: &Pool, concurrency: u32, d: Duration, stop: &Arc<AtomicBool>) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + d;
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    for _ in 0..concurrency {
        let (pool, done, stop) = (pool.clone(), done.clone(), stop.clone());
        set.spawn(async move {
            let mut h = tonic_health::pb::health_client::HealthClient::new(pool.get());
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                if h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Closed-loop offers with `concurrency` callers for `d`, each offer a real one: an assigned
/// contact is accepted and completed by the caller acting as the operator, a queued one cancelled.
/// Returns (offers per second, all RPCs per second).
async fn closed_offers(pool: &Pool, cfg: &LoadConfig, round: u32, d: Duration, stop: &Arc<AtomicBool>) -> (f64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let rpcs = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + d;
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    for w in 0..cfg.concurrency {
        let (pool, done, stop, queue, prefix) =
            (pool.clone(), done.clone(), stop.clone(), cfg.queue.clone(), cfg.prefix.clone());
        let rpcs = rpcs.clone();
        set.spawn(async move {
            let mut c = pool.contacts();
            let mut n = 0u64;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                let id = format!("{prefix}-{}-vf{round}-{w}-{n}", run_nonce());
                n += 1;
                let r = c
                    .offer_contact(pb::OfferContactRequest {
                        contact_id: id.clone(),
                        queue: queue.clone(),
                        channel: pb::Channel::Voice as i32,
                        ..Default::default()
                    })
                    .await;
                let Ok(r) = r else { continue };
                done.fetch_add(1, Ordering::Relaxed);
                rpcs.fetch_add(1, Ordering::Relaxed);
                match r.into_inner().decision {
                    Some(Decision::Assigned(a)) => {
                        rpcs.fetch_add(2, Ordering::Relaxed);
                        let mut o = pool.desk(&a.operator_id);
                        let _ = o
                            .accept_offer(pb::AcceptOfferRequest {
                                operator_id: a.operator_id.clone(),
                                contact_id: id.clone(),
                            })
                            .await;
                        let _ = o
                            .complete_contact(pb::CompleteContactRequest {
                                operator_id: a.operator_id,
                                contact_id: id,
                                wrap_up_ms: 0,
                                ended_unix_ms: 0,
                            })
                            .await;
                    }
                    Some(Decision::Queued(_)) => {
                        rpcs.fetch_add(1, Ordering::Relaxed);
                        let _ = c.cancel_contact(pb::CancelContactRequest { contact_id: id }).await;
                    }
                    _ => {}
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let secs = start.elapsed().as_secs_f64();
    (done.load(Ordering::Relaxed) as f64 / secs, rpcs.load(Ordering::Relaxed) as f64 / secs)
}

/// Alternates floor and offer phases; returns the best of each (floor rps, offer rps, offer-phase
/// RPC rps).
pub(super) async fn vs_floor(
    cfg: &LoadConfig,
    pool: &Pool,
    stop: &Arc<AtomicBool>,
) -> Result<(f64, f64, f64), LoadError> {
    let tracker = Arc::new(Tracker::default());
    let ops =
        login_operators(cfg, pool, &format!("{}-vf", cfg.prefix), cfg.concurrency.max(1), false, &tracker).await?;
    let phase = Duration::from_secs(2);
    let (mut best_floor, mut best_offers, mut best_rpcs) = (0.0f64, 0.0f64, 0.0f64);
    for round in 0..3 {
        let f = floor(pool, cfg.concurrency, phase, stop).await;
        let (o, r) = closed_offers(pool, cfg, round, phase, stop).await;
        eprintln!("[vs-floor round {round}] floor {f:.0}/s, offers {o:.0}/s ({r:.0} RPC/s)");
        best_floor = best_floor.max(f);
        if o > best_offers {
            (best_offers, best_rpcs) = (o, r);
        }
    }
    let mut o = pool.supervisor_ops();
    for id in ops {
        let _ = o.logout(pb::LogoutRequest { operator_id: id, force: true }).await;
    }
    Ok((best_floor, best_offers, best_rpcs))
}

/// Alternates closed-loop offer rounds without and with `--idle-subscribers` event streams
/// filtered to the quiet `--idle-queue`; returns the best of each (offers per second).
pub(super) async fn vs_idle(cfg: &LoadConfig, pool: &Pool, stop: &Arc<AtomicBool>) -> Result<(f64, f64), LoadError> {
    let tracker = Arc::new(Tracker::default());
    let ops =
        login_operators(cfg, pool, &format!("{}-vi", cfg.prefix), cfg.concurrency.max(1), false, &tracker).await?;
    let phase = Duration::from_secs(2);
    let (mut best_none, mut best_idle) = (0.0f64, 0.0f64);
    for round in 0..3 {
        let (none, _) = closed_offers(pool, cfg, 300 + round, phase, stop).await;
        let mut streams = Vec::with_capacity(cfg.idle_subscribers as usize);
        for _ in 0..cfg.idle_subscribers {
            let s = pool
                .contacts()
                .stream_events(pb::StreamEventsRequest {
                    after_sequence: 0,
                    queues: vec![cfg.idle_queue.clone()],
                    after_epoch: 0,
                    max_delay_ms: 0,
                })
                .await
                .map_err(rpc("idle subscriber"))?;
            streams.push(s.into_inner());
        }
        let (idle, _) = closed_offers(pool, cfg, 400 + round, phase, stop).await;
        drop(streams);
        eprintln!(
            "[idle-subscribers round {round}] none {none:.0} offers/s, {} idle filtered {idle:.0} offers/s",
            cfg.idle_subscribers
        );
        best_none = best_none.max(none);
        best_idle = best_idle.max(idle);
    }
    let mut o = pool.supervisor_ops();
    for id in ops {
        let _ = o.logout(pb::LogoutRequest { operator_id: id, force: true }).await;
    }
    Ok((best_none, best_idle))
}

/// Alternates closed-loop offer rounds without and with `--wallboards` subscribers reading their
/// streams (and the scraper); returns the best of each (offers per second) and the last
/// round's wallboard figures.
pub(super) async fn vs_wallboards(
    cfg: &LoadConfig,
    pool: &Pool,
    stop: &Arc<AtomicBool>,
) -> Result<(f64, f64, wallboards::WallboardFigures), LoadError> {
    let tracker = Arc::new(Tracker::default());
    let ops =
        login_operators(cfg, pool, &format!("{}-vw", cfg.prefix), cfg.concurrency.max(1), false, &tracker).await?;
    let phase = Duration::from_secs(2);
    let (mut best_none, mut best_with, mut figures) = (0.0f64, 0.0f64, wallboards::WallboardFigures::default());
    for round in 0..3 {
        let (none, _) = closed_offers(pool, cfg, 500 + round, phase, stop).await;
        let boards = wallboards::Wallboards::start(cfg, pool).await?;
        let (with, _) = closed_offers(pool, cfg, 600 + round, phase, stop).await;
        figures = boards.finish().await;
        eprintln!(
            "[wallboards round {round}] none {none:.0} offers/s, {} wallboards {with:.0} offers/s ({} events read, {} scrapes)",
            cfg.wallboards, figures.events_received, figures.scrapes
        );
        best_none = best_none.max(none);
        best_with = best_with.max(with);
    }
    let mut o = pool.supervisor_ops();
    for id in ops {
        let _ = o.logout(pb::LogoutRequest { operator_id: id, force: true }).await;
    }
    Ok((best_none, best_with, figures))
}

/// Alternates closed-loop offer rounds against `--target` (`secure`) and the open server at
/// `plain`, printing them under `labels`; returns the best of each (offers per second).
pub(super) async fn vs_pair(
    cfg: &LoadConfig,
    secure: &Pool,
    plain: &str,
    labels: (&str, &str),
    stop: &Arc<AtomicBool>,
) -> Result<(f64, f64), LoadError> {
    let open = Pool::connect(plain, 4, &Credentials::default(), Identity::default()).await?;
    let tracker = Arc::new(Tracker::default());
    let n = cfg.concurrency.max(1);
    let ops_s = login_operators(cfg, secure, &format!("{}-vs", cfg.prefix), n, false, &tracker).await?;
    let ops_p = login_operators(cfg, &open, &format!("{}-vp", cfg.prefix), n, false, &tracker).await?;
    let phase = Duration::from_secs(2);
    let (mut best_s, mut best_p) = (0.0f64, 0.0f64);
    for round in 0..3 {
        let (s, _) = closed_offers(secure, cfg, 100 + round, phase, stop).await;
        let (p, _) = closed_offers(&open, cfg, 200 + round, phase, stop).await;
        eprintln!("[round {round}] {} {s:.0} offers/s, {} {p:.0} offers/s", labels.0, labels.1);
        best_s = best_s.max(s);
        best_p = best_p.max(p);
    }
    for (pool, ops) in [(secure, ops_s), (&open, ops_p)] {
        let mut o = pool.supervisor_ops();
        for id in ops {
            let _ = o.logout(pb::LogoutRequest { operator_id: id, force: true }).await;
        }
    }
    Ok((best_s, best_p))
}
