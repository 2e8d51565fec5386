//! The request-path workload, shared by the `request_path` bench and the `scaling` example: the
//! server's shared state on `benches/scenarios/loadtest.toml` without a ledger, and contacts
//! driven through the gRPC handlers with no network in between.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Operators logged in for the request-path workload (the load-test configuration's `general`
/// queue, internal staff: no budget, nothing for a ledger to write).
pub(crate) const REQUEST_OPERATORS: u32 = 70;

/// The server's shared state on `benches/scenarios/loadtest.toml` without a ledger, with
/// [`REQUEST_OPERATORS`] operators logged in to `general`. Needs a Tokio runtime to build.
pub(crate) async fn request_state() -> Arc<smista_server::app::Shared> {
    use smista_proto::v1 as pb;
    use smista_proto::v1::operator_service_server::OperatorService;
    let text = include_str!("../../../../benches/scenarios/loadtest.toml");
    let mut cfg = smista_server::config::Config::parse(text, "loadtest.toml").expect("valid config");
    cfg.ledger.kind = smista_server::config::LedgerKind::None;
    let _ = smista_server::metrics::install();
    // Nothing ever stops the benches' state: the sender lives as long as the process.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    std::mem::forget(stop_tx);
    let shared = smista_server::node::build::build_shared(&cfg, stop_rx).await.expect("shared state");
    let ops = smista_server::service::operator::OperatorSvc(shared.clone());
    for i in 0..REQUEST_OPERATORS {
        ops.login(tonic::Request::new(pb::LoginRequest {
            operator_id: format!("op-{i}"),
            group: "internal".into(),
            skills: vec![pb::Skill { name: "general".into(), level: 5 }],
            channels: vec![],
            session_id: format!("desk-{i}"),
        }))
        .await
        .expect("login");
    }
    shared
}

/// `iters` contacts of thread `t` through the gRPC handlers (no network), numbered from `from`:
/// OfferContact, AcceptOffer, CompleteContact with 1 ms of wrap-up (or CancelContact if
/// queued); ticks every `tick_every` so wrap-ups end as the server's tick loop would end them.
/// Returns the last number used.
pub(crate) async fn request_cycles(
    shared: &Arc<smista_server::app::Shared>,
    t: usize,
    from: u64,
    iters: u64,
    tick_every: u64,
) -> u64 {
    use smista_proto::v1 as pb;
    use smista_proto::v1::contact_service_server::ContactService;
    use smista_proto::v1::offer_contact_response::Decision as Wire;
    use smista_proto::v1::operator_service_server::OperatorService;
    use tonic::Request;
    let contacts = smista_server::service::contact::ContactSvc(shared.clone());
    let ops = smista_server::service::operator::OperatorSvc(shared.clone());
    let mut n = from;
    for _ in 0..iters {
        n += 1;
        let id = format!("t{t}-c{n}");
        let r = contacts
            .offer_contact(Request::new(pb::OfferContactRequest {
                contact_id: id.clone(),
                queue: "general".into(),
                channel: pb::Channel::Voice as i32,
                ..Default::default()
            }))
            .await
            .expect("offer")
            .into_inner();
        match r.decision {
            Some(Wire::Assigned(a)) => {
                ops.accept_offer(Request::new(pb::AcceptOfferRequest {
                    operator_id: a.operator_id.clone(),
                    contact_id: id.clone(),
                }))
                .await
                .expect("accept");
                ops.complete_contact(Request::new(pb::CompleteContactRequest {
                    operator_id: a.operator_id,
                    contact_id: id,
                    wrap_up_ms: 1,
                    ended_unix_ms: 0,
                }))
                .await
                .expect("complete");
            }
            Some(Wire::Queued(_)) => {
                contacts
                    .cancel_contact(Request::new(pb::CancelContactRequest { contact_id: id }))
                    .await
                    .expect("cancel");
            }
            other => panic!("unexpected decision {other:?}"),
        }
        if n % tick_every == 0 {
            let now = shared.clock.now();
            let mut ev = Vec::new();
            shared.engine.tick(now.plus(2), &mut ev);
            shared.publish(&ev, now);
        }
    }
    n
}

/// `per_thread` request-path contacts on each of `next.len()` threads, each a current-thread
/// runtime of its own (as a tokio worker would be), started together; the wall time. `next`
/// holds where each thread's numbering goes on.
pub(crate) fn run_requests(shared: &Arc<smista_server::app::Shared>, next: &mut [u64], per_thread: u64) -> Duration {
    let threads = next.len();
    let barrier = Arc::new(Barrier::new(threads + 1));
    // Tick often enough that at most half the operators are in wrap-up between ticks.
    let tick_every = (u64::from(REQUEST_OPERATORS) / 2 / threads as u64).max(1);
    let handles: Vec<_> = next
        .iter()
        .enumerate()
        .map(|(t, &from)| {
            let (shared, barrier) = (shared.clone(), barrier.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                barrier.wait();
                rt.block_on(request_cycles(&shared, t, from, per_thread, tick_every))
            })
        })
        .collect();
    barrier.wait();
    let begun = Instant::now();
    for (slot, h) in next.iter_mut().zip(handles) {
        *slot = h.join().expect("bench thread");
    }
    begun.elapsed()
}
