//! The server's request path without network: the gRPC service handlers called directly, with
//! request conversion, the engine, event publishing (metrics, offer board, event ring) and
//! response conversion — everything an RPC costs in smista's own code, none of the transport.
//!
//! Each iteration is one contact: OfferContact (ASSIGNED, 70 free operators in the load-test
//! configuration's `general` queue), AcceptOffer, CompleteContact (1 ms wrap-up; the tick ends
//! it). Compare with `routing/assign_cycle` (the engine alone) for the server layer's share.
//!
//! Run: `cargo bench -p smista-benches --bench request_path`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smista_proto::v1 as pb;
use smista_proto::v1::contact_service_server::ContactService;
use smista_proto::v1::offer_contact_response::Decision;
use smista_proto::v1::operator_service_server::OperatorService;
use smista_server::config::{Config, LedgerKind};
use smista_server::server::build_shared;
use smista_server::service::contact::ContactSvc;
use smista_server::service::operator::OperatorSvc;
use tonic::Request;

const OPERATORS: u32 = 70;

fn bench(c: &mut Criterion) {
    let text = include_str!("../scenarios/loadtest.toml");
    let mut cfg = Config::parse(text, "loadtest.toml").expect("valid config");
    // The `general` queue is served by internal staff: no budget, nothing for a ledger to write.
    cfg.ledger.kind = LedgerKind::None;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _ = smista_server::metrics::install();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shared = rt.block_on(build_shared(&cfg, stop_rx)).expect("shared state");
    let contacts = ContactSvc(shared.clone());
    let ops = OperatorSvc(shared.clone());
    rt.block_on(async {
        for i in 0..OPERATORS {
            ops.login(Request::new(pb::LoginRequest {
                operator_id: format!("op-{i}"),
                group: "internal".into(),
                skills: vec![pb::Skill { name: "general".into(), level: 5 }],
                channels: vec![],
                session_id: format!("desk-{i}"),
            }))
            .await
            .expect("login");
        }
    });
    let mut n = 0u64;
    let mut g = c.benchmark_group("request_path");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("offer_accept_complete", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    n += 1;
                    let id = format!("c{n}");
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
                        Some(Decision::Assigned(a)) => {
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
                            }))
                            .await
                            .expect("complete");
                        }
                        Some(Decision::Queued(_)) => {
                            contacts
                                .cancel_contact(Request::new(pb::CancelContactRequest { contact_id: id }))
                                .await
                                .expect("cancel");
                        }
                        other => panic!("unexpected decision {other:?}"),
                    }
                    // Wrap-ups end on the tick, as the server's tick loop would do.
                    if n % 64 == 0 {
                        let now = shared.clock.now();
                        let mut ev = Vec::new();
                        shared.engine.tick(now.plus(2), &mut ev);
                        shared.publish(&ev, now);
                    }
                }
                start.elapsed()
            })
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
