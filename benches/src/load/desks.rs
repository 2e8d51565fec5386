//! The virtual operator floor: each desk's group and skills by scenario, its login, and (in an
//! open-loop run) its offers accepted at once, handled for a drawn time and completed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use smista_proto::v1 as pb;

use super::config::{LoadConfig, Scenario, MIX};
use super::connect::Pool;
use super::error::{rpc, LoadError};
use super::operator_check::unix_now_ms;
use super::random::{draw_handle, stream_seed};
use super::tracker::Tracker;

pub(super) fn operator_setup(cfg: &LoadConfig, i: u32) -> (String, Vec<(String, u32)>) {
    if i >= cfg.operators {
        // A second-level desk (`--second-operators`): internal staff of the second queue.
        return ("internal".to_owned(), vec![(cfg.second_queue.clone(), 5)]);
    }
    match cfg.scenario {
        Scenario::Mix => {
            let groups = ["internal", "supplier-a", "supplier-b"];
            let a = MIX[i as usize % MIX.len()].1;
            let b = MIX[(i as usize + 1) % MIX.len()].1;
            (groups[i as usize % 3].to_owned(), vec![(a.to_owned(), 7), (b.to_owned(), 6), ("general".to_owned(), 5)])
        }
        Scenario::Budget => ("supplier".to_owned(), vec![(cfg.queue.clone(), 5)]),
        _ => {
            // A comma-separated `--group`: the desks take the groups in turn.
            let groups: Vec<&str> = cfg.group.split(',').map(str::trim).filter(|g| !g.is_empty()).collect();
            let g = groups.get(i as usize % groups.len().max(1)).copied().unwrap_or_default();
            (g.to_owned(), vec![(cfg.queue.clone(), 5)])
        }
    }
}

pub(super) async fn login_operators(
    cfg: &LoadConfig,
    pool: &Pool,
    prefix: &str,
    n: u32,
    with_watch: bool,
    tracker: &Arc<Tracker>,
) -> Result<Vec<String>, LoadError> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-op-{i}");
        let (group, skills) = operator_setup(cfg, i);
        let mut ops = pool.desk(&id);
        // Each change of a desk is recorded with when its request left and when its reply came:
        // the server made it in between.
        let sent = unix_now_ms();
        ops.login(pb::LoginRequest {
            operator_id: id.clone(),
            group: group.clone(),
            skills: skills.into_iter().map(|(name, level)| pb::Skill { name, level }).collect(),
            channels: vec![],
            session_id: format!("{id}-desk"),
        })
        .await
        .map_err(|status| {
            if status.message().contains("unknown operator group") {
                LoadError::Usage(format!(
                    "login {id}: {}: the {:?} scenario needs a server started with `{}`",
                    status.message(),
                    cfg.scenario,
                    cfg.scenario.server_command()
                ))
            } else {
                LoadError::Rpc { what: format!("login {id}"), status }
            }
        })?;
        tracker.desks.login(&id, &group, sent, unix_now_ms());
        if with_watch {
            let mut stream = ops
                .watch_offers(pb::WatchOffersRequest { operator_id: id.clone() })
                .await
                .map_err(rpc(format!("watch offers of {id}")))?
                .into_inner();
            let (pool, tracker, id2) = (pool.clone(), tracker.clone(), id.clone());
            let second = i >= cfg.operators;
            let (dist, aht) = (cfg.handle, if second { cfg.second_aht } else { cfg.aht });
            let share = if second { 0.0 } else { cfg.transfer_share };
            let to = cfg.second_queue.clone();
            let mut rng = SmallRng::seed_from_u64(stream_seed(cfg.seed, 1 + u64::from(i)));
            tokio::spawn(async move {
                let mut first = true;
                while let Ok(Some(offer)) = stream.message().await {
                    if std::mem::take(&mut first) {
                        tracker.desks_offered.fetch_add(1, Ordering::Relaxed);
                    }
                    let handle = draw_handle(&mut rng, dist, aht);
                    let transfer = share > 0.0 && rand::Rng::random::<f64>(&mut rng) < share;
                    let (pool, tracker, op, to) = (pool.clone(), tracker.clone(), id2.clone(), to.clone());
                    tokio::spawn(async move {
                        let mut ops = pool.desk(&op);
                        let c = offer.contact_id;
                        let sent = unix_now_ms();
                        if ops
                            .accept_offer(pb::AcceptOfferRequest { operator_id: op.clone(), contact_id: c.clone() })
                            .await
                            .is_err()
                        {
                            return; // the caller hung up, or the offer went elsewhere
                        }
                        tracker.desks.accepted(&op, sent, unix_now_ms());
                        let accepted = Instant::now();
                        tokio::time::sleep(Duration::from_secs_f64(handle)).await;
                        let sent = unix_now_ms();
                        let done = if transfer {
                            // The first level hands the caller to the second.
                            ops.transfer_contact(pb::TransferContactRequest {
                                operator_id: op.clone(),
                                contact_id: c,
                                target: Some(pb::transfer_contact_request::Target::Queue(to)),
                                ended_unix_ms: 0,
                                wrap_up_ms: 0,
                            })
                            .await
                            .map(|r| {
                                let r = r.into_inner();
                                tracker.transfers.fetch_add(1, Ordering::Relaxed);
                                // The second leg had to wait: nobody of the queue was free.
                                if matches!(r.next, Some(pb::transfer_contact_response::Next::Queued(_))) {
                                    tracker.second.waited.fetch_add(1, Ordering::Relaxed);
                                }
                                tonic::Response::new(pb::CompleteContactResponse {
                                    handle_ms: r.handle_ms,
                                    wrap_up_ms: r.wrap_up_ms,
                                })
                            })
                        } else {
                            ops.complete_contact(pb::CompleteContactRequest {
                                operator_id: op.clone(),
                                contact_id: c,
                                wrap_up_ms: 0,
                                ended_unix_ms: 0,
                            })
                            .await
                        };
                        // Completed, or ended otherwise before (the caller hung up in service, a
                        // forced logout): this run learns it only now.
                        let replied = unix_now_ms();
                        tracker.desks.ended(&op, if done.is_ok() { sent } else { replied }, replied);
                        if let Ok(d) = done {
                            let d = d.into_inner();
                            tracker.wrap_up_ms_max.fetch_max(d.wrap_up_ms, Ordering::Relaxed);
                            let level = if second { &tracker.second } else { &tracker.first };
                            level.busy_ms.fetch_add(d.handle_ms, Ordering::Relaxed);
                            level.handled.fetch_add(1, Ordering::Relaxed);
                            level.busy.lock().push((accepted, Instant::now()));
                        }
                    });
                }
            });
        }
        ids.push(id);
    }
    Ok(ids)
}
