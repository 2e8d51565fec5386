//! kill -9 in the middle of a load of completions, then a restart on the same data directory:
//! no acknowledged completion is lost, replayed completions are not charged twice, and the
//! reservations of contacts still in service at the crash keep counting against the ceiling.
//!
//! Every contact costs exactly the same (one billing increment of an hour covers any handle time
//! here), so the expected totals are exact: `COST` per contact.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::offer_contact_response::Decision;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use support::{contract_toml, Smista};
use tonic::transport::Channel;

/// Contacts in service when the completions start.
const CONTACTS: usize = 400;
/// Fee 100 + 3600 s x 0.10 cents: the cost of any contact shorter than an hour.
const COST: i64 = 460;
/// Room for exactly two more contacts beyond the ones in service (and half of one: the margin
/// admission keeps for the calls in service running past an hour).
const CEILING: i64 = COST * (CONTACTS as i64 + 2) + COST / 2;

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("crash.toml");
    std::fs::write(&path, contract_toml(CEILING, "pensions", "offer_timeout_ms = 600000")).expect("write config");
    path
}

fn start(config: &Path, data: &Path) -> Smista {
    Smista::start(&["--config".as_ref(), config.as_os_str(), "--data-dir".as_ref(), data.as_os_str()])
}

async fn budget(admin: &mut AdminServiceClient<Channel>) -> pb::BudgetSnapshot {
    let snap = admin.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot").into_inner();
    snap.budgets.into_iter().find(|b| b.budget_id == "contract").expect("budget in snapshot")
}

async fn status_of(admin: &mut AdminServiceClient<Channel>, operator: &str) -> pb::OperatorStatus {
    let snap = admin.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot").into_inner();
    snap.operators.iter().find(|o| o.operator_id == operator).expect("operator in snapshot").status()
}

async fn login(ops: &mut OperatorServiceClient<Channel>, id: &str) {
    ops.login(pb::LoginRequest {
        operator_id: id.into(),
        group: "supplier".into(),
        skills: vec![pb::Skill { name: "pensions".into(), level: 5 }],
        channels: vec![],
        session_id: format!("desk-{id}"),
    })
    .await
    .expect("login");
}

async fn offer(contacts: &mut ContactServiceClient<Channel>, id: &str) -> Decision {
    contacts
        .offer_contact(pb::OfferContactRequest {
            contact_id: id.into(),
            queue: "pensions".into(),
            channel: pb::Channel::Voice as i32,
            ..Default::default()
        })
        .await
        .expect("offer")
        .into_inner()
        .decision
        .expect("a decision")
}

fn complete(operator: &str, contact: &str) -> pb::CompleteContactRequest {
    pb::CompleteContactRequest {
        operator_id: operator.into(),
        contact_id: contact.into(),
        wrap_up_ms: 0,
        ended_unix_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_completions_loses_no_acknowledged_money() {
    let dir = std::env::temp_dir().join(format!("smista-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = config(&dir);
    let data = dir.join("data");

    // --- First life: CONTACTS contacts accepted by as many supplier operators.
    let mut first = start(&cfg, &data);
    let ch = first.channel().await;
    let mut contacts = ContactServiceClient::new(ch.clone());
    let mut ops = OperatorServiceClient::new(ch.clone());
    let mut admin = AdminServiceClient::new(ch.clone());
    let mut pairs = Vec::new();
    for i in 0..CONTACTS {
        login(&mut ops, &format!("op-{i}")).await;
        let contact = format!("call-{i}");
        let Decision::Assigned(a) = offer(&mut contacts, &contact).await else { panic!("call-{i} not assigned") };
        ops.accept_offer(pb::AcceptOfferRequest { operator_id: a.operator_id.clone(), contact_id: contact.clone() })
            .await
            .expect("accept");
        pairs.push((a.operator_id, contact));
    }
    let b = budget(&mut admin).await;
    assert_eq!((b.settled_cents, b.reserved_cents), (0, COST * CONTACTS as i64));

    // Completions from 16 concurrent desks; SIGKILL once a quarter of them are acknowledged.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let mut desks = Vec::new();
    for lane in 0..16 {
        let mine: Vec<(String, String)> = pairs.iter().skip(lane).step_by(16).cloned().collect();
        let mut ops = OperatorServiceClient::new(ch.clone());
        let acked = acked.clone();
        let killed = killed.clone();
        desks.push(tokio::spawn(async move {
            for (op, contact) in mine {
                if killed.load(Ordering::Acquire) {
                    return;
                }
                if ops.complete_contact(complete(&op, &contact)).await.is_ok() {
                    acked.lock().insert(contact);
                } else {
                    return; // the server died under us: this one is not acknowledged
                }
            }
        }));
    }
    while acked.lock().len() < CONTACTS / 4 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first.child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let at_kill = acked.lock().len();
    killed.store(true, Ordering::Release);
    let _ = first.child.wait();
    for d in desks {
        let _ = d.await;
    }
    let acked: HashSet<String> = acked.lock().clone();
    eprintln!("killed with {at_kill} of {CONTACTS} completions acknowledged ({} by the end)", acked.len());
    assert!(acked.len() < CONTACTS, "the kill came after every completion: the test proved nothing");

    // --- Second life, same data directory.
    let second = start(&cfg, &data);
    let ch = second.channel().await;
    let mut contacts = ContactServiceClient::new(ch.clone());
    let mut ops = OperatorServiceClient::new(ch.clone());
    let mut admin = AdminServiceClient::new(ch.clone());
    let b = budget(&mut admin).await;
    assert!(b.settled_cents >= COST * acked.len() as i64, "an acknowledged completion was lost: {b:?}");
    assert_eq!(b.settled_cents % COST, 0);
    assert_eq!(
        b.settled_cents + b.reserved_cents,
        COST * CONTACTS as i64,
        "every contact in service at the crash is either settled or still reserved: {b:?}"
    );

    // An operator whose contact from before the crash is still in service logs in paused: the
    // fresh engine does not know that contact and would otherwise offer them a second call.
    // (The last contact of the last desk: its completion was never sent. An unacknowledged one
    // may have been committed just before the kill.)
    let (busy_op, busy_contact) = pairs.last().cloned().expect("contacts");
    assert!(!acked.contains(&busy_contact), "the kill came after the last desk's last completion");
    // Its desk never got the acknowledgement of some accept? A retry is idempotent.
    ops.accept_offer(pb::AcceptOfferRequest { operator_id: busy_op.clone(), contact_id: busy_contact.clone() })
        .await
        .expect("a retried accept of a recovered call");
    login(&mut ops, &busy_op).await;
    assert_eq!(status_of(&mut admin, &busy_op).await, pb::OperatorStatus::Paused);
    let refused = ops
        .set_state(pb::SetStateRequest {
            operator_id: busy_op.clone(),
            status: pb::OperatorStatus::Available as i32,
            reason: String::new(),
        })
        .await
        .expect_err("available while a recovered call is in service");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // Contacts in service before the crash still count: only two new ones fit under the ceiling.
    for i in 0..5 {
        login(&mut ops, &format!("new-{i}")).await;
    }
    let mut admitted = Vec::new();
    let mut extra_budget = 0;
    for i in 0..5 {
        match offer(&mut contacts, &format!("after-{i}")).await {
            Decision::Assigned(_) => admitted.push(format!("after-{i}")),
            Decision::Diverted(d) if d.reason == pb::DivertReason::ExtraBudget as i32 => extra_budget += 1,
            other => panic!("unexpected decision {other:?}"),
        }
    }
    assert_eq!((admitted.len(), extra_budget), (2, 3), "reservations recovered from the ledger must count");
    for c in &admitted {
        contacts.cancel_contact(pb::CancelContactRequest { contact_id: c.clone() }).await.expect("cancel");
    }

    // The caller of another call from before the crash (the last desk's second-to-last: its
    // completion was never sent either) hangs up: settled, and recorded as a hang-up in
    // service, which a replayed cancel reads back from the ledger.
    let (_, hung_up) = pairs[CONTACTS - 1 - 16].clone();
    assert!(!acked.contains(&hung_up));
    for attempt in ["cancel", "replayed cancel"] {
        let r = contacts.cancel_contact(pb::CancelContactRequest { contact_id: hung_up.clone() }).await.expect(attempt);
        assert_eq!(r.into_inner().outcome(), pb::Outcome::CancelledInService, "{attempt}");
    }

    // The desks replay every completion they have no acknowledgement for, and a few they have.
    let mut replayed_acked = 0;
    for (op, contact) in &pairs {
        if *contact == hung_up {
            continue;
        }
        if !acked.contains(contact) {
            let r = ops.complete_contact(complete(op, contact)).await.expect("replayed completion");
            assert_eq!(r.into_inner().wrap_up_ms, 0);
        } else if replayed_acked < 20 {
            ops.complete_contact(complete(op, contact)).await.expect("repeated completion is idempotent");
            replayed_acked += 1;
        }
    }
    assert_eq!(
        status_of(&mut admin, &busy_op).await,
        pb::OperatorStatus::Available,
        "available again once {busy_contact} is completed"
    );
    // A completion claimed by the wrong operator is refused, not charged.
    let (_, some_contact) = &pairs[0];
    let wrong = ops.complete_contact(complete("op-nobody", some_contact)).await.expect_err("wrong operator");
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition);

    let b = budget(&mut admin).await;
    assert_eq!((b.settled_cents, b.reserved_cents), (COST * CONTACTS as i64, 0), "{b:?}");
    assert!(b.settled_cents + b.reserved_cents <= b.ceiling_cents);

    // The records agree: one per contact, as `smista ledger report` shows.
    drop(second);
    let out = Command::new(env!("CARGO_BIN_EXE_smista"))
        .args(["ledger", "report", "--format", "json"])
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("smista ledger report");
    assert!(out.status.success(), "report failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("\"contacts\":{CONTACTS}")), "{text}");
    assert!(text.contains(&format!("\"cost_cents\":{}", COST * CONTACTS as i64)), "{text}");
    assert!(text.contains("\"supplier\":\"acme\""), "{text}");
    assert!(text.contains("\"hung_up\":1,"), "the hang-up is told apart: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}
