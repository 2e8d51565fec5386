//! Operator accounting through the server: pause reason codes (an unknown one is
//! INVALID_ARGUMENT and changes nothing), `status_since_unix_ms` on the wall clock, the operator
//! report's parts adding up to the logged-in time, and worker privacy: per-operator rows refused
//! (FAILED_PRECONDITION) unless `[privacy]` enables them, PERMISSION_DENIED without the
//! workforce role, and every read recorded in the privacy audit before it is answered.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smista_proto::v1 as pb;
use smista_server::config::auth::Role;
use smista_server::config::Config;
use support::{api_key, assigned, login, temp_dir, voice, with, Server};
use tonic::Code;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn config(data: &std::path::Path) -> Config {
    let mut cfg = Config::load(None).expect("demo");
    cfg.server.data_dir = data.to_owned();
    cfg.budgets[0].pacing = smista_core::book::PacingConfig::None;
    cfg.budgets[0].protected_reserve_bp = 0;
    cfg
}

fn pause(op: &str, code: &str) -> pb::SetStateRequest {
    pb::SetStateRequest { operator_id: op.into(), status: pb::OperatorStatus::Paused as i32, reason: code.into() }
}

fn available(op: &str) -> pb::SetStateRequest {
    pb::SetStateRequest { operator_id: op.into(), status: pb::OperatorStatus::Available as i32, reason: String::new() }
}

async fn operator(srv: &Server, op: &str) -> pb::OperatorSnapshot {
    let s = srv.admin().await.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot").into_inner();
    s.operators.into_iter().find(|o| o.operator_id == op).expect("operator in the snapshot")
}

fn report_req(from: u64, to: u64) -> pb::GetOperatorReportRequest {
    pb::GetOperatorReportRequest {
        from_unix_ms: from,
        to_unix_ms: to,
        interval_minutes: 15,
        page_size: 1,
        ..Default::default()
    }
}

/// Every page of the report.
async fn report(
    admin: &mut smista_proto::v1::admin_service_client::AdminServiceClient<tonic::transport::Channel>,
    req: pb::GetOperatorReportRequest,
    token: &str,
) -> Result<pb::GetOperatorReportResponse, tonic::Status> {
    let mut all = pb::GetOperatorReportResponse::default();
    let mut page_token = String::new();
    loop {
        let page =
            admin.get_operator_report(with(pb::GetOperatorReportRequest { page_token, ..req.clone() }, token)).await?;
        let page = page.into_inner();
        all.groups.extend(page.groups);
        all.operators.extend(page.operators);
        all.pause_reasons = page.pause_reasons;
        all.time_zone = page.time_zone;
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

fn parts(r: &pb::OperatorIntervalRow) -> u64 {
    r.available_ms + r.on_contact_ms.values().sum::<u64>() + r.wrap_up_ms + r.paused_ms.values().sum::<u64>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_since_is_on_the_wall_clock_to_the_second() {
    let srv = Server::start_in(config(&temp_dir("since"))).await;
    let mut o = srv.operators().await;
    o.login(login("op-1", "internal", &[("naspi", 6)])).await.expect("login");
    // Some engine time passes before the change, so that engine time and wall time differ by
    // more than the tolerance whatever the start-up took.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = now_ms();
    o.set_state(pause("op-1", "training")).await.expect("pause");
    let after = now_ms();
    let snap = operator(&srv, "op-1").await;
    assert!(
        snap.status_since_unix_ms + 1_000 >= before && snap.status_since_unix_ms <= after + 1_000,
        "status_since_unix_ms {} is not within a second of the change, between {before} and {after}",
        snap.status_since_unix_ms
    );
    assert!(snap.status_since_ms < 10 * 86_400_000, "the old field stays in engine time: {}", snap.status_since_ms);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_codes_are_checked_and_the_report_adds_up_per_group() {
    let data = temp_dir("accounting");
    let from = now_ms() - 3_600_000;
    let srv = Server::start_in(config(&data)).await;
    let mut o = srv.operators().await;
    let mut c = srv.contacts().await;
    o.login(login("op-1", "supplier-a", &[("naspi", 6)])).await.expect("login");
    o.login(login("op-2", "supplier-a", &[("isee", 6)])).await.expect("login");

    let e = o.set_state(pause("op-1", "coffee")).await.expect_err("unknown code");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(operator(&srv, "op-1").await.status, pb::OperatorStatus::Available as i32, "nothing changed");

    o.set_state(pause("op-1", "training")).await.expect("training");
    let snap = operator(&srv, "op-1").await;
    assert_eq!((snap.pause_reason.as_str(), snap.pause_label.as_str()), ("training", "Training"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another code while paused: the time is split there.
    o.set_state(pause("op-1", "lunch")).await.expect("lunch");
    let since = operator(&srv, "op-1").await;
    assert_eq!(since.pause_reason, "lunch");
    // The same pause again changes nothing: a desk cannot reset its time in status.
    tokio::time::sleep(Duration::from_millis(20)).await;
    o.set_state(pause("op-1", "lunch")).await.expect("lunch again");
    assert_eq!(operator(&srv, "op-1").await.status_since_unix_ms, since.status_since_unix_ms);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // An empty code is the first configured one.
    o.set_state(pause("op-2", "")).await.expect("default code");
    assert_eq!(operator(&srv, "op-2").await.pause_reason, "break");
    o.set_state(available("op-1")).await.expect("available");
    let d = c.offer_contact(voice("a-1", "naspi")).await.expect("offer").into_inner();
    assert_eq!(assigned(&d).as_deref(), Some("op-1"));
    o.decline_offer(pb::DeclineOfferRequest { operator_id: "op-1".into(), contact_id: "a-1".into() })
        .await
        .expect("decline");
    o.set_state(available("op-2")).await.expect("available");
    tokio::time::sleep(Duration::from_millis(50)).await;
    o.set_state(pause("op-1", "break")).await.expect("break");
    o.logout(pb::LogoutRequest { operator_id: "op-1".into(), force: true }).await.expect("logout");
    assert_eq!(operator(&srv, "op-1").await.pause_reason, "", "no stale reason once logged out");
    let d = c.offer_contact(voice("a-2", "isee")).await.expect("offer").into_inner();
    assert_eq!(assigned(&d).as_deref(), Some("op-2"));
    o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-2".into(), contact_id: "a-2".into() })
        .await
        .expect("accept");
    tokio::time::sleep(Duration::from_millis(50)).await;
    o.complete_contact(pb::CompleteContactRequest {
        operator_id: "op-2".into(),
        contact_id: "a-2".into(),
        wrap_up_ms: 100,
        ended_unix_ms: 0,
    })
    .await
    .expect("complete");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut admin = srv.admin().await;
    let r = report(&mut admin, report_req(from, now_ms() + 3_600_000), "").await.expect("report");
    assert_eq!(r.time_zone, "Europe/Rome");
    assert!(r.operators.is_empty(), "group totals only by default");
    assert!(r.pause_reasons.iter().any(|p| p.code == "lunch" && p.kind == pb::PauseKind::Break as i32));
    let rows: Vec<&pb::OperatorIntervalRow> = r.groups.iter().filter(|g| g.group == "supplier-a").collect();
    assert!(!rows.is_empty());
    for g in &rows {
        assert_eq!(parts(g), g.logged_in_ms, "the parts add up to the logged-in time: {g:?}");
        assert_eq!(g.supplier, "consortium-member-a");
    }
    let total = |f: &dyn Fn(&pb::OperatorIntervalRow) -> u64| rows.iter().map(|g| f(g)).sum::<u64>();
    for code in ["training", "lunch", "break"] {
        assert!(total(&|g| g.paused_ms.get(code).copied().unwrap_or(0)) > 0, "time paused for {code}: {rows:?}");
    }
    assert!(total(&|g| g.on_contact_ms.get("voice").copied().unwrap_or(0)) > 0, "{rows:?}");
    assert!(total(&|g| g.wrap_up_ms) > 0, "{rows:?}");
    assert_eq!(total(&|g| g.handled), 1);
    assert_eq!(total(&|g| g.declined), 1);
    assert!(rows.iter().any(|g| g.operators == 2));

    // Per-operator rows are not enabled here: refused, whoever asks.
    let mut per = report_req(from, now_ms());
    per.per_operator = true;
    per.purpose = "test".into();
    let e = report(&mut admin, per.clone(), "").await.expect_err("not enabled");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    srv.stop().await;

    // Enabled (under an agreement) after a restart: the first life's rows are read back,
    // and the read is audited.
    let mut cfg = config(&data);
    cfg.privacy.per_operator_reports = true;
    cfg.privacy.agreement = "Accordo sindacale 12/2026, art. 3".into();
    let srv = Server::start_in(cfg).await;
    let mut admin = srv.admin().await;
    per.purpose = String::new();
    let e = report(&mut admin, per.clone(), "").await.expect_err("a purpose is required");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    per.purpose = "invoice check".into();
    per.operators = vec!["op-2".into()];
    let r = report(&mut admin, per, "").await.expect("per-operator rows");
    assert!(!r.operators.is_empty() && r.operators.iter().all(|x| x.operator_id == "op-2"), "{:?}", r.operators);
    for x in &r.operators {
        assert_eq!(parts(x), x.logged_in_ms, "{x:?}");
    }
    assert_eq!(r.operators.iter().map(|x| x.handled).sum::<u64>(), 1);
    let reads = admin
        .list_operator_report_reads(pb::ListOperatorReportReadsRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .reads
        .into_iter()
        // The demo's live view is audited too (the snapshots above): not this report's reads.
        .filter(|x| x.purpose != smista_server::app::accounting::LIVE_PURPOSE)
        .collect::<Vec<_>>();
    // One record per page read, naming the operators whose rows that page returned.
    assert!(reads.iter().any(|x| x.operators == ["op-2"]), "{reads:?}");
    assert!(
        reads
            .iter()
            .all(|x| x.actor == "anonymous" && x.purpose == "invoice check" && x.operators.iter().all(|o| o == "op-2")),
        "{reads:?}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_operator_rows_need_the_workforce_role_and_every_read_is_audited() {
    let mut cfg = config(&temp_dir("privacy"));
    cfg.privacy.per_operator_reports = true;
    cfg.privacy.agreement = "Accordo sindacale 12/2026, art. 3".into();
    cfg.auth.api_keys = vec![
        api_key("sup", "sup-secret", Role::Supervisor, None),
        api_key("wfm", "wfm-secret", Role::Workforce, None),
        api_key("adm", "adm-secret", Role::Admin, None),
        api_key("desk", "desk-secret", Role::Desk, None),
    ];
    cfg.auth.api_keys[3].operator = Some("op-1".into());
    // The roster is not what this test is about: desks log in as they say.
    cfg.roster.mode = Some(smista_server::config::roster::RosterMode::Open);
    let srv = Server::start_in(cfg).await;
    let mut o = srv.operators().await;
    o.login(with(login("op-1", "internal", &[("naspi", 6)]), "desk-secret")).await.expect("login");
    o.set_state(with(pause("op-1", "briefing"), "desk-secret")).await.expect("pause");
    let mut admin = srv.admin().await;
    let (from, to) = (now_ms() - 600_000, now_ms() + 600_000);
    let mut per = report_req(from, to);
    per.per_operator = true;
    per.purpose = "shift planning".into();

    // Group totals: a supervisor and the workforce role alike.
    for token in ["sup-secret", "wfm-secret"] {
        let r = report(&mut admin, report_req(from, to), token).await.expect("group totals");
        assert!(r.groups.iter().any(|g| g.group == "internal" && g.paused_ms.contains_key("briefing")), "{r:?}");
    }
    // Per-operator rows: only the workforce role.
    for token in ["sup-secret", "adm-secret"] {
        let e = report(&mut admin, per.clone(), token).await.expect_err("no workforce role");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    let mut reads_made = 0;
    for _ in 0..2 {
        let r = report(&mut admin, pb::GetOperatorReportRequest { page_size: 5000, ..per.clone() }, "wfm-secret")
            .await
            .expect("per-operator rows");
        assert!(r.operators.iter().any(|x| x.operator_id == "op-1"));
        reads_made += 1;
    }
    // The audit: every read, for an admin only.
    let e = admin
        .list_operator_report_reads(with(pb::ListOperatorReportReadsRequest::default(), "wfm-secret"))
        .await
        .expect_err("not an admin");
    assert_eq!(e.code(), Code::PermissionDenied);
    let mut reads = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_operator_report_reads(with(
                pb::ListOperatorReportReadsRequest { page_size: 1, page_token: token },
                "adm-secret",
            ))
            .await
            .expect("audit")
            .into_inner();
        reads.extend(page.reads);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(reads.len(), reads_made, "one audit record per read, none for the refused ones: {reads:?}");
    for r in &reads {
        assert_eq!((r.actor.as_str(), r.purpose.as_str()), ("wfm", "shift planning"));
        assert_eq!(r.operators, ["op-1"]);
        assert!(r.at_unix_ms >= from);
    }
    srv.stop().await;
}

/// A contact in service when the server stopped, completed by its operator after the restart
/// (the Login reply lists it): the operator is on it until then — not paused "recovering" — and
/// it counts as handled (issue 28, found by the adversary run: handled 0, its time a pause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_carried_over_a_restart_is_time_on_contact_and_handled() {
    let data = temp_dir("carried");
    let from = now_ms() - 60_000;
    for internal in [false, true] {
        // A supplier's contact (a budget hold carries it) and an internal one (a service record).
        let (op, group, queue, skill) =
            if internal { ("op-101", "internal", "isee", "isee") } else { ("op-201", "supplier-a", "naspi", "naspi") };
        let contact = format!("carried-{op}");
        let srv = Server::start_in(config(&data)).await;
        let (mut o, mut c) = (srv.operators().await, srv.contacts().await);
        o.login(login(op, group, &[(skill, 6)])).await.expect("login");
        let d = c.offer_contact(voice(&contact, queue)).await.expect("offer").into_inner();
        assert_eq!(assigned(&d).as_deref(), Some(op));
        o.accept_offer(pb::AcceptOfferRequest { operator_id: op.into(), contact_id: contact.clone() })
            .await
            .expect("accept");
        srv.stop().await;

        let srv = Server::start_in(config(&data)).await;
        let mut o = srv.operators().await;
        let r = o.login(login(op, group, &[(skill, 6)])).await.expect("login again").into_inner();
        assert_eq!(r.in_service, std::slice::from_ref(&contact), "the Login reply lists the contact in service");
        // A repeated Login (the desk retrying) counts nothing twice.
        o.login(login(op, group, &[(skill, 6)])).await.expect("login retried");
        tokio::time::sleep(Duration::from_millis(600)).await;
        o.complete_contact(pb::CompleteContactRequest {
            operator_id: op.into(),
            contact_id: contact.clone(),
            wrap_up_ms: 0,
            ended_unix_ms: 0,
        })
        .await
        .expect("complete");
        o.logout(pb::LogoutRequest { operator_id: op.into(), force: false }).await.expect("logout");
        let mut admin = srv.admin().await;
        let r = report(&mut admin, report_req(from, now_ms() + 1_000), "").await.expect("report");
        let rows: Vec<&pb::OperatorIntervalRow> = r.groups.iter().filter(|g| g.group == group).collect();
        let total = |f: &dyn Fn(&pb::OperatorIntervalRow) -> u64| rows.iter().map(|g| f(g)).sum::<u64>();
        assert_eq!(total(&|g| g.handled), 1, "{group}: the completion after the restart is handled: {rows:?}");
        assert_eq!(total(&|g| g.paused_ms.get("recovering").copied().unwrap_or(0)), 0, "{group}: {rows:?}");
        assert!(total(&|g| g.on_contact_ms.get("voice").copied().unwrap_or(0)) >= 600, "{group}: {rows:?}");
        for g in &rows {
            assert_eq!(parts(g), g.logged_in_ms, "{g:?}");
        }
        srv.stop().await;
    }
}

/// The live snapshot names operators only where `[privacy] live_operator_view` allows it, and
/// then each principal's reading is in the privacy audit before it is answered (once per quarter
/// hour); otherwise it gives counts per group (issue 28, found by the adversary run: every
/// supervisor saw each operator's status, pause reason and time in status, unaudited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_snapshot_names_operators_only_where_allowed_and_audited() {
    for allowed in [false, true] {
        let mut cfg = config(&temp_dir("live-view"));
        cfg.privacy.live_operator_view = allowed;
        let srv = Server::start_in(cfg).await;
        let mut o = srv.operators().await;
        o.login(login("op-1", "supplier-a", &[("naspi", 6)])).await.expect("login");
        o.login(login("op-2", "supplier-a", &[("isee", 6)])).await.expect("login");
        o.set_state(pause("op-2", "training")).await.expect("pause");
        let mut admin = srv.admin().await;
        let snap = admin.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot").into_inner();
        let g = snap.operator_groups.iter().find(|g| g.group == "supplier-a").expect("the group's counts");
        assert_eq!(
            (g.supplier.as_str(), g.logged_in, g.available, g.paused, g.wrap_up, g.with_contacts),
            ("consortium-member-a", 2, 1, 1, 0, 0)
        );
        // Holding an offer, op-1 is no longer free for the next one.
        let d = srv.contacts().await.offer_contact(voice(&format!("g-{allowed}"), "naspi")).await.expect("offer");
        assert_eq!(assigned(&d.into_inner()).as_deref(), Some("op-1"));
        let snap = admin.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot").into_inner();
        let g = snap.operator_groups.iter().find(|g| g.group == "supplier-a").expect("the group's counts");
        assert_eq!((g.logged_in, g.available, g.with_contacts), (2, 0, 1), "{g:?}");
        let reads = || async {
            srv.admin()
                .await
                .list_operator_report_reads(pb::ListOperatorReportReadsRequest::default())
                .await
                .expect("audit")
                .into_inner()
                .reads
        };
        if !allowed {
            assert!(snap.operators.is_empty(), "no names without the configuration: {:?}", snap.operators);
            assert!(reads().await.is_empty());
        } else {
            assert_eq!(snap.operators.len(), 2);
            let audit = reads().await;
            assert_eq!(audit.len(), 1, "{audit:?}");
            assert_eq!(audit[0].operators, ["op-1", "op-2"]);
            assert!(audit[0].purpose.contains("live operator view"), "{audit:?}");
            // Read again at once: the quarter hour's record stands for it.
            admin.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot");
            assert_eq!(reads().await.len(), 1);
            // An operator it has not named yet this quarter hour is recorded when first shown.
            o.login(login("op-3", "supplier-a", &[("naspi", 6)])).await.expect("login");
            admin.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot");
            let audit = reads().await;
            assert_eq!(audit.len(), 2, "{audit:?}");
            assert_eq!(audit[1].operators, ["op-3"]);
        }
        srv.stop().await;
    }
}
