//! The budget ceiling through the server: extra-budget contacts are diverted with their queue's
//! fallback, the snapshot and /metrics show the budget, amendments are audited, and spend and
//! amendments survive a restart on the same data directory.

mod support;

use smista_core::book::PacingConfig;
use smista_proto::v1 as pb;
use support::*;
use tonic::transport::Channel;
use tonic::Code;

type Admin = smista_proto::v1::admin_service_client::AdminServiceClient<Channel>;

/// The `ccm-2026` budget as the snapshot shows it.
async fn contract(a: &mut Admin) -> pb::BudgetSnapshot {
    let snap = a.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot").into_inner();
    snap.budgets.into_iter().find(|b| b.budget_id == "ccm-2026").expect("budget in snapshot")
}

/// The audit trail of `ccm-2026`.
async fn audit(a: &mut Admin) -> pb::ListBudgetAuditResponse {
    a.list_budget_audit(pb::ListBudgetAuditRequest { budget_id: "ccm-2026".into(), ..Default::default() })
        .await
        .expect("audit")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_budget_contacts_never_reach_supplier_operators() {
    let mut cfg = smista_server::config::Config::load(None).expect("demo");
    // Room for two 5-minute voice calls (50 + 360 cents each), no pacing, no reserve, reserved
    // at the mean (long-call reservations near the ceiling have their own test in the core).
    let b = &mut cfg.budgets[0];
    b.ceiling_cents = 1_000;
    b.pacing = PacingConfig::None;
    b.protected_reserve_bp = 0;
    b.tail_sigmas = 0.0;
    cfg.server.data_dir = temp_dir("budget");
    let srv = Server::start_in(cfg.clone()).await;
    let mut c = srv.contacts().await;
    let mut o = srv.operators().await;
    let mut a = srv.admin().await;
    for op in ["sup-1", "sup-2", "sup-3"] {
        o.login(login(op, "supplier-a", &[("naspi", 6)])).await.expect("login");
    }
    let mut decisions = Vec::new();
    for i in 0..3 {
        decisions.push(c.offer_contact(voice(&format!("n-{i}"), "naspi")).await.expect("offer").into_inner());
    }
    assert!(assigned(&decisions[0]).is_some() && assigned(&decisions[1]).is_some());
    match &decisions[2].decision {
        Some(pb::offer_contact_response::Decision::Diverted(d)) => {
            assert_eq!(d.reason(), pb::DivertReason::ExtraBudget);
            assert_eq!(d.fallback(), pb::Fallback::SelfServiceIvr);
            assert_eq!(d.queue, "naspi");
        }
        other => panic!("expected an extra-budget diversion, got {other:?}"),
    }
    let bs = &contract(&mut a).await;
    assert_eq!(bs.ceiling_cents, 1_000);
    assert_eq!(bs.reserved_cents, 820);
    assert_eq!(bs.extra_budget_diversions, 1);

    // Raising the ceiling is a contract amendment: audited, and admissions resume.
    let e = a
        .update_budget(pb::UpdateBudgetRequest {
            budget_id: "ccm-2026".into(),
            ceiling_cents: Some(-5),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = a
        .update_budget(pb::UpdateBudgetRequest {
            budget_id: "nope".into(),
            ceiling_cents: Some(5),
            reason: "amendment 1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let r = a
        .update_budget(pb::UpdateBudgetRequest {
            budget_id: "ccm-2026".into(),
            ceiling_cents: Some(2_000),
            tariffs: vec![],
            actor: String::new(),
            note: "dirigente-ccm".into(),
            reason: "amendment 7/2026".into(),
        })
        .await
        .expect("amend")
        .into_inner();
    assert_eq!(r.budget.expect("budget").ceiling_cents, 2_000);
    let d = c.offer_contact(voice("n-3", "naspi")).await.expect("offer").into_inner();
    assert!(assigned(&d).is_some(), "admissions resume after the amendment: {d:?}");
    let trail = audit(&mut a).await;
    assert_eq!(trail.records.len(), 1);
    let rec = &trail.records[0];
    assert_eq!((rec.field.as_str(), rec.old_value.as_str(), rec.new_value.as_str()), ("ceiling_cents", "1000", "2000"));
    // The actor is the authenticated principal (anonymous on this open demo server); what the
    // client typed is only a note.
    assert_eq!((rec.actor.as_str(), rec.note.as_str()), ("anonymous", "dirigente-ccm"));

    // Completion settles the real cost.
    let op = assigned(&decisions[0]).expect("assigned");
    o.accept_offer(pb::AcceptOfferRequest { operator_id: op.clone(), contact_id: "n-0".into() }).await.expect("accept");
    o.complete_contact(pb::CompleteContactRequest {
        operator_id: op,
        contact_id: "n-0".into(),
        wrap_up_ms: 1,
        ended_unix_ms: 0,
    })
    .await
    .expect("complete");
    let bs = &contract(&mut a).await;
    assert_eq!(bs.settled_cents, 50 + 12, "a call of under 10 s costs the fee plus one 10-second increment");
    assert_eq!(bs.reserved_cents, 820);

    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let m = srv.scrape().await;
    for needle in [
        r#"smista_budget_ceiling_cents{budget="ccm-2026"} 2000"#,
        r#"smista_budget_reserved_cents{budget="ccm-2026"} 820"#,
        r#"smista_budget_settled_cents{budget="ccm-2026"} 62"#,
        r#"smista_diversions_total{queue="naspi",reason="extra_budget"} 1"#,
    ] {
        assert!(m.lines().any(|l| l.starts_with(needle)), "missing {needle} in\n{m}");
    }
    srv.stop().await;

    // A restart on the same data directory: the amended ceiling (not the configured one), the
    // settled spend and the audit trail come back from the ledger. Offers never accepted held
    // no money that must survive: the telephony platform re-offers those calls.
    let srv = Server::start_in(cfg).await;
    let mut a = srv.admin().await;
    let bs = &contract(&mut a).await;
    assert_eq!((bs.ceiling_cents, bs.settled_cents, bs.reserved_cents), (2_000, 62, 0));
    let trail = audit(&mut a).await;
    assert_eq!(trail.records.len(), 1);
    assert_eq!(trail.records[0].reason, "amendment 7/2026");
    srv.stop().await;
}

/// `BudgetSnapshot.extra_budget_diversions` and `refused_admissions` count the period, across a
/// restart (issue 29, item 2: both went back to 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periods_diversions_and_refusals_survive_a_restart() {
    let mut cfg = smista_server::config::Config::load(None).expect("demo");
    let b = &mut cfg.budgets[0];
    b.ceiling_cents = 0;
    b.pacing = PacingConfig::None;
    b.protected_reserve_bp = 0;
    cfg.server.data_dir = temp_dir("budget-counters");
    let srv = Server::start_in(cfg.clone()).await;
    let (mut c, mut o) = (srv.contacts().await, srv.operators().await);
    // pensions, not naspi: the other test counts naspi's diversions in the process's metrics.
    o.login(login("sup-1", "supplier-a", &[("pensions", 6)])).await.expect("login");
    for i in 0..3 {
        let d = c.offer_contact(voice(&format!("x-{i}"), "pensions")).await.expect("offer").into_inner();
        assert!(assigned(&d).is_none(), "no money: {d:?}");
    }
    let before = contract(&mut srv.admin().await).await;
    assert_eq!(before.extra_budget_diversions, 3, "{before:?}");
    assert!(before.refused_admissions >= 3, "{before:?}");
    srv.stop().await;

    let srv = Server::start_in(cfg).await;
    let after = contract(&mut srv.admin().await).await;
    assert_eq!(
        (after.extra_budget_diversions, after.refused_admissions),
        (before.extra_budget_diversions, before.refused_admissions),
        "{after:?}"
    );
    srv.stop().await;
}
