//! The roster decides who an operator is (issue 28). The audits' scenario over real TLS with
//! minted tokens: op-201, a supplier-a operator, cannot log in as internal staff or as
//! supplier-b, so with the budget's ceiling reached no extra-budget contact reaches them, and
//! each supplier's ledger rows are the contacts its rostered operators completed. Then the
//! roster's life: changes through AdminService durable across restarts on both backends, audited
//! with old and new values, the configuration's precedence, narrowing at Login and
//! UpdateOperator, retirement, the identity provider's group claim, and two nodes sharing
//! PostgreSQL converging on concurrent edits.

mod support;

use smista_client::connect::Credentials;
use smista_client::mint::{self, Minted};
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use smista_server::config::roster::{OperatorConfig, RosterMode};
use smista_server::config::Config;
use support::{assigned, login, temp_dir, voice, Server};
use tonic::transport::Channel;
use tonic::{Code, Request};

/// A secure server on minted credentials (TLS, JWT desk tokens, API keys) and its roster.
struct Secure {
    srv: Server,
    m: Minted,
    data: std::path::PathBuf,
}

impl Secure {
    async fn start(operators: &[&str], tweak: impl FnOnce(&mut Config)) -> Secure {
        let dir = temp_dir("roster-creds");
        let mut opts = mint::Options::new(&dir);
        opts.operators = operators.iter().map(|o| (*o).to_owned()).collect();
        let m = mint::mint(&opts, smista_server::config::DEMO).expect("mint");
        let text = std::fs::read_to_string(&m.config).expect("minted config");
        let mut cfg = Config::parse(&text, "minted").expect("minted config parses");
        let data = temp_dir("roster-data");
        cfg.server.data_dir = data.clone();
        // Admission decided by the ceiling alone (the scenario is about who pays).
        cfg.budgets[0].pacing = smista_core::book::PacingConfig::None;
        cfg.budgets[0].protected_reserve_bp = 0;
        tweak(&mut cfg);
        let srv = Server::start_in(cfg).await;
        Secure { srv, m, data }
    }

    async fn channel(&self) -> Channel {
        let c = Credentials {
            ca: Some(self.m.ca.clone()),
            cert: None,
            key: None,
            token_file: None,
            tls_domain: Some("localhost".into()),
        };
        c.channel(&format!("https://{}", self.srv.grpc)).await.expect("TLS connect")
    }

    fn token(&self, name: &str) -> String {
        let f = match name {
            "admin" => self.m.admin_key.clone(),
            "platform" => self.m.platform_key_token.clone(),
            "supervisor" => self.m.supervisor_token.clone(),
            op => self.m.desk_tokens.iter().find(|(o, _)| o == op).expect("desk token").1.clone(),
        };
        std::fs::read_to_string(f).expect("token")
    }
}

fn with<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    r
}

/// Accepts and completes `contact` as `op`.
async fn handle(ops: &mut OperatorServiceClient<Channel>, op: &str, token: &str, contact: &str) {
    let ids = |op: &str| (op.to_owned(), contact.to_owned());
    let (o, c) = ids(op);
    ops.accept_offer(with(pb::AcceptOfferRequest { operator_id: o.clone(), contact_id: c.clone() }, token))
        .await
        .expect("accept");
    ops.complete_contact(with(
        pb::CompleteContactRequest { operator_id: o, contact_id: c, wrap_up_ms: 1, ended_unix_ms: 0 },
        token,
    ))
    .await
    .expect("complete");
}

/// Waits until `op` is available again (their 1 ms wrap-up over).
async fn available(admin: &mut AdminServiceClient<Channel>, sup: &str, op: &str) {
    for _ in 0..200 {
        let s = admin.get_snapshot(with(pb::GetSnapshotRequest {}, sup)).await.expect("snapshot").into_inner();
        if s.operators.iter().any(|o| o.operator_id == op && o.status == pb::OperatorStatus::Available as i32) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{op} never available again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplier_operator_cannot_choose_who_pays_for_their_work() {
    // op-101 internal, op-201 supplier-a, op-301 supplier-b: the minted roster's numbering.
    let s = Secure::start(&["op-101", "op-201", "op-301"], |_| {}).await;
    let ch = s.channel().await;
    let (sup, admin_key, platform) = (s.token("supervisor"), s.token("admin"), s.token("platform"));
    let mut ops = OperatorServiceClient::new(ch.clone());
    let mut contacts = ContactServiceClient::new(ch.clone());
    let mut admin = AdminServiceClient::new(ch.clone());
    let desk201 = s.token("op-201");

    // The audit: op-201 states another group. Refused, nothing logged in.
    for group in ["internal", "supplier-b"] {
        let e = ops.login(with(login("op-201", group, &[("pensions", 10)]), &desk201)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{group}: {e:?}");
        assert!(e.message().contains("supplier-a"), "the refusal names the roster's group: {}", e.message());
    }
    // Nor may a desk widen what the roster gives (a skill it lacks, a level above it).
    let e = ops.login(with(login("op-201", "supplier-a", &[("tax-agency", 5)]), &desk201)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let snap = admin.get_snapshot(with(pb::GetSnapshotRequest {}, &sup)).await.expect("snapshot").into_inner();
    assert!(snap.operators.iter().all(|o| o.operator_id != "op-201"), "a refused login logs nobody in");
    // An operator not on the roster has a desk token but may not log in.
    let e = ops.login(with(login("op-999", "internal", &[]), &desk201)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "another operator's desk: {e:?}");

    // Logged in as the roster says: op-201 naming supplier-a, op-301 naming no group (bound).
    ops.login(with(login("op-201", "supplier-a", &[("pensions", 10)]), &desk201)).await.expect("op-201");
    let desk301 = s.token("op-301");
    ops.login(with(login("op-301", "", &[("pensions", 5)]), &desk301)).await.expect("op-301 bound to its group");
    let snap = admin.get_snapshot(with(pb::GetSnapshotRequest {}, &sup)).await.expect("snapshot").into_inner();
    let group_of = |op: &str| snap.operators.iter().find(|o| o.operator_id == op).map(|o| o.group.clone());
    assert_eq!(group_of("op-201").as_deref(), Some("supplier-a"));
    assert_eq!(group_of("op-301").as_deref(), Some("supplier-b"));

    // Within budget the suppliers work, each paid for what it did.
    let mut done = std::collections::BTreeMap::<String, i64>::new();
    for i in 0..6 {
        let c = format!("call-{i}");
        let r = contacts.offer_contact(with(voice(&c, "pensions"), &platform)).await.expect("offer").into_inner();
        let op = assigned(&r).expect("a free supplier operator");
        let token = if op == "op-201" { &desk201 } else { &desk301 };
        handle(&mut ops, &op, token, &c).await;
        *done.entry(op.clone()).or_default() += 1;
        available(&mut admin, &sup, &op).await;
    }

    // The ceiling is reached: no extra-budget contact reaches a supplier's operator. Internal
    // staff (op-101) take what they can; the rest is diverted or waits, never offered to op-201.
    admin
        .update_budget(with(
            pb::UpdateBudgetRequest {
                budget_id: "ccm-2026".into(),
                ceiling_cents: Some(0),
                reason: "audit scenario: ceiling reached".into(),
                ..Default::default()
            },
            &admin_key,
        ))
        .await
        .expect("ceiling 0");
    let desk101 = s.token("op-101");
    ops.login(with(login("op-101", "internal", &[("pensions", 7)]), &desk101)).await.expect("internal staff");
    let mut internal = 0;
    for i in 0..8 {
        let c = format!("extra-{i}");
        let r = contacts.offer_contact(with(voice(&c, "pensions"), &platform)).await.expect("offer").into_inner();
        if let Some(op) = assigned(&r) {
            assert_eq!(op, "op-101", "an extra-budget contact was offered to a supplier's operator: {r:?}");
            handle(&mut ops, &op, &desk101, &c).await;
            internal += 1;
            available(&mut admin, &sup, &op).await;
        }
        // A supplier's desk trying again as internal staff is still refused.
        let e = ops.login(with(login("op-201", "internal", &[("pensions", 10)]), &desk201)).await.unwrap_err();
        assert!(matches!(e.code(), Code::PermissionDenied | Code::AlreadyExists), "{e:?}");
    }
    assert!(internal > 0, "internal staff took extra-budget contacts");
    let snap = admin.get_snapshot(with(pb::GetSnapshotRequest {}, &sup)).await.expect("snapshot").into_inner();
    for op in ["op-201", "op-301"] {
        let o = snap.operators.iter().find(|o| o.operator_id == op).expect("logged in");
        assert_eq!(o.active_contacts, 0, "{op} holds a contact past the ceiling");
    }
    s.srv.stop().await;

    // The ledger: each supplier's rows are the contacts its rostered operators completed, and
    // internal staff's work cost the budget nothing.
    let ledger = smista_ledger::Ledger::open_existing(&s.data.join("ledger.db")).await.expect("ledger");
    let mut by_group = std::collections::BTreeMap::<String, i64>::new();
    for r in ledger.report().await.expect("report") {
        *by_group.entry(r.operator_group).or_default() += r.contacts;
    }
    let expected: std::collections::BTreeMap<String, i64> =
        done.iter().map(|(op, n)| (if op == "op-201" { "supplier-a" } else { "supplier-b" }.to_owned(), *n)).collect();
    assert_eq!(by_group, expected, "ledger rows by group against the contacts each supplier's operators completed");
    ledger.close().await;
}

/// The demo with a ledger, in `required` mode with two rostered operators.
fn rostered(data: &std::path::Path, pg: Option<&str>) -> Config {
    let mut cfg = support::ledger_config(data, pg);
    cfg.roster.mode = Some(RosterMode::Required);
    cfg.roster.refresh_ms = 200;
    let op = |id: &str, group: &str, skills: &[(&str, u8)]| OperatorConfig {
        id: id.into(),
        name: format!("Operator {id}"),
        group: group.into(),
        skills: skills.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        channels: [("voice".to_owned(), 1), ("chat".to_owned(), 3)].into_iter().collect(),
        retired: false,
    };
    cfg.operators = vec![
        op("op-201", "supplier-a", &[("pensions", 7), ("naspi", 5)]),
        op("op-101", "internal", &[("pensions", 9)]),
    ];
    cfg
}

fn entry(id: &str, group: &str, skills: &[(&str, u32)]) -> pb::RosterOperator {
    pb::RosterOperator {
        operator_id: id.into(),
        display_name: format!("Operator {id}"),
        group: group.into(),
        skills: skills.iter().map(|(n, l)| pb::Skill { name: (*n).into(), level: *l }).collect(),
        channels: vec![pb::ChannelCapacity { channel: pb::Channel::Voice as i32, max_concurrent: 1 }],
        ..Default::default()
    }
}

async fn roster_of(a: &mut AdminServiceClient<Channel>) -> Vec<pb::RosterOperator> {
    a.list_roster(pb::ListRosterRequest { include_retired: true, ..Default::default() })
        .await
        .expect("list")
        .into_inner()
        .operators
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_changes_are_durable_audited_and_bind_logins_across_restarts() {
    for pg in support::backends("roster_restart") {
        let data = temp_dir("roster-restart");
        let srv = Server::start_in(rostered(&data, pg.as_deref())).await;
        let mut a = srv.admin().await;
        let mut ops = srv.operators().await;
        // The configuration's entries are on the roster, created by the configuration.
        let r = roster_of(&mut a).await;
        assert_eq!(
            r.iter().map(|o| (o.operator_id.as_str(), o.source.as_str())).collect::<Vec<_>>(),
            [("op-101", "config"), ("op-201", "config")]
        );
        // Not on the roster: refused in required mode, even on an open server.
        let e = ops.login(login("op-777", "internal", &[])).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        // op-201 logs in narrowed; UpdateOperator may narrow further but never widen or move.
        ops.login(login("op-201", "supplier-a", &[("pensions", 6)])).await.expect("narrowed login");
        let widen = |skills: &[(&str, u32)], group: Option<&str>| pb::UpdateOperatorRequest {
            operator_id: "op-201".into(),
            group: group.map(str::to_owned),
            skills: Some(pb::SkillSet {
                skills: skills.iter().map(|(n, l)| pb::Skill { name: (*n).into(), level: *l }).collect(),
            }),
            channels: None,
        };
        for (what, u) in [
            ("above the roster's level", widen(&[("pensions", 8)], None)),
            ("a skill the roster lacks", widen(&[("isee", 1)], None)),
            ("another group", widen(&[("pensions", 5)], Some("internal"))),
        ] {
            let e = a.update_operator(u).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        }
        a.update_operator(widen(&[("pensions", 7), ("naspi", 2)], Some("supplier-a"))).await.expect("narrowing");
        // An empty group names the roster's, as at Login (not an unknown group).
        a.update_operator(widen(&[("pensions", 7)], Some(""))).await.expect("the roster's group");
        // A look-alike id differing by a space is not a roster id.
        let e = a
            .put_roster_operator(pb::PutRosterOperatorRequest {
                operator: Some(entry("op-201 ", "supplier-a", &[("pensions", 4)])),
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "an id with a space: {e:?}");

        // An admin moves op-201 to supplier-b and lowers pensions: the session no longer fits,
        // so op-201 is logged out; the change is durable and audited with old and new values.
        let moved = a
            .put_roster_operator(pb::PutRosterOperatorRequest {
                operator: Some(entry("op-201", "supplier-b", &[("pensions", 4)])),
                expected_version: Some(1),
            })
            .await
            .expect("put")
            .into_inner()
            .operator
            .expect("entry");
        assert_eq!((moved.version, moved.source.as_str()), (2, "admin"));
        let e = a
            .put_roster_operator(pb::PutRosterOperatorRequest {
                operator: Some(entry("op-201", "internal", &[])),
                expected_version: Some(1),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Aborted, "a change on a stale version: {e:?}");
        let snap = a.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot").into_inner();
        let st = snap.operators.iter().find(|o| o.operator_id == "op-201").map(|o| o.status);
        assert_eq!(st, Some(pb::OperatorStatus::LoggedOut as i32), "the session under the old entry ended");
        // A new operator, and a retirement.
        a.put_roster_operator(pb::PutRosterOperatorRequest {
            operator: Some(entry("op-301", "supplier-b", &[("naspi", 6)])),
            expected_version: Some(0),
        })
        .await
        .expect("created");
        a.retire_roster_operator(pb::RetireRosterOperatorRequest { operator_id: "op-101".into() })
            .await
            .expect("retired");
        srv.stop().await;

        // Restarted with the same configuration: the admins' changes win over it.
        let srv = Server::start_in(rostered(&data, pg.as_deref())).await;
        let mut a = srv.admin().await;
        let mut ops = srv.operators().await;
        let r = roster_of(&mut a).await;
        let get = |id: &str| r.iter().find(|o| o.operator_id == id).cloned().expect(id);
        assert_eq!((get("op-201").group.as_str(), get("op-201").version), ("supplier-b", 2));
        assert!(get("op-101").retired, "the retirement survived the restart");
        assert_eq!(get("op-301").group, "supplier-b");
        let e = ops.login(login("op-101", "internal", &[])).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "a retired operator logs in: {e:?}");
        assert!(e.message().contains("retired"), "{}", e.message());
        let e = ops.login(login("op-201", "supplier-a", &[("pensions", 4)])).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "the old group after a restart: {e:?}");
        ops.login(login("op-201", "", &[])).await.expect("bound to the new entry");
        let trail = a
            .list_roster_audit(pb::ListRosterAuditRequest { operator_id: "op-201".into(), ..Default::default() })
            .await
            .expect("audit")
            .into_inner()
            .records;
        assert_eq!(
            trail.iter().map(|r| (r.change.as_str(), r.actor.as_str())).collect::<Vec<_>>(),
            [("created", "configuration"), ("updated", "anonymous")]
        );
        assert!(trail[1].old_value.contains("supplier-a") && trail[1].old_value.contains("pensions:7"), "{trail:?}");
        assert!(trail[1].new_value.contains("supplier-b") && trail[1].new_value.contains("pensions:4"), "{trail:?}");
        // Where each came from: from then on the admin's entry wins over the configuration.
        assert!(trail[1].old_value.contains("source = \"config\""), "{trail:?}");
        assert!(trail[1].new_value.contains("source = \"admin\""), "{trail:?}");
        srv.stop().await;

        // The configuration changes its own entries (op-201's is the admins' now): a new
        // version of op-101 reinstates them, and an operator it no longer lists is retired.
        let mut cfg = rostered(&data, pg.as_deref());
        cfg.operators.retain(|o| o.id == "op-101");
        cfg.operators[0].skills.insert("isee".into(), 3);
        let srv = Server::start_in(cfg.clone()).await;
        let mut a = srv.admin().await;
        let r = roster_of(&mut a).await;
        let get = |id: &str| r.iter().find(|o| o.operator_id == id).cloned().expect(id);
        assert_eq!(get("op-201").group, "supplier-b", "an admin's change wins over the configuration");
        assert!(get("op-101").retired, "an admin's retirement wins over the configuration");
        srv.stop().await;
        support::drop_backend(pg.as_deref()).await;
        let _ = std::fs::remove_dir_all(&data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_updates_and_retires_the_entries_it_set() {
    let data = temp_dir("roster-config");
    let srv = Server::start_in(rostered(&data, None)).await;
    srv.stop().await;
    let mut cfg = rostered(&data, None);
    cfg.operators.retain(|o| o.id == "op-201");
    cfg.operators[0].group = "supplier-b".into();
    let srv = Server::start_in(cfg).await;
    let mut a = srv.admin().await;
    let r = roster_of(&mut a).await;
    let get = |id: &str| r.iter().find(|o| o.operator_id == id).cloned().expect(id);
    assert_eq!((get("op-201").group.as_str(), get("op-201").version), ("supplier-b", 2));
    assert!(get("op-101").retired, "an operator the configuration no longer lists is retired");
    let trail = a.list_roster_audit(pb::ListRosterAuditRequest::default()).await.expect("audit").into_inner().records;
    let changes: Vec<_> = trail.iter().map(|r| (r.operator_id.as_str(), r.change.as_str(), r.actor.as_str())).collect();
    assert!(changes.contains(&("op-201", "updated", "configuration")), "{changes:?}");
    assert!(changes.contains(&("op-101", "retired", "configuration")), "{changes:?}");
    srv.stop().await;
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_token_carries_the_group_it_must_be_the_rosters() {
    let s = Secure::start(&["op-201", "op-202"], |c| {
        c.auth.jwt.as_mut().expect("minted JWT section").group_claim = Some("operator_group".into());
    })
    .await;
    let ops_ch = s.channel().await;
    let mut ops = OperatorServiceClient::new(ops_ch);
    let key = std::fs::read(&s.m.signing_key).expect("signing key");
    let opts = mint::Options::new(&s.data);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let token = |op: &str, group: Option<&str>| {
        let mut claims = serde_json::json!({
            "iss": opts.issuer, "aud": opts.audience, "sub": format!("desk-{op}"), "roles": ["desk"],
            "iat": now, "nbf": now - 60, "exp": now + 3600, "operator_id": op,
        });
        if let Some(g) = group {
            claims["operator_group"] = serde_json::Value::String(g.to_owned());
        }
        mint::sign_es256(&key, mint::KID, &claims).expect("token")
    };
    // The identity provider says internal, the roster supplier-a: refused, whatever the desk states.
    for stated in ["internal", "supplier-a", ""] {
        let e = ops.login(with(login("op-201", stated, &[]), &token("op-201", Some("internal")))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{stated}: {e:?}");
    }
    // A token without the claim: refused (the minted tokens carry none).
    let e = ops.login(with(login("op-201", "supplier-a", &[]), &s.token("op-201"))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("no operator group"), "{}", e.message());
    // The token and the roster agree: logged in.
    ops.login(with(login("op-201", "", &[]), &token("op-201", Some("supplier-a")))).await.expect("agreeing token");
    s.srv.stop().await;
}

/// Found by an adversary written from the proto: an operator retired or moved to another group
/// while holding a contact in service was only paused, and could make itself AVAILABLE again
/// and take new contacts under the old entry until the next refresh — in a loop, forever (16
/// contacts charged for a retired supplier operator in 30 s). Now AVAILABLE is refused until the
/// session ends, no new contact reaches them, and the session ends when the last one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_whose_entry_changed_mid_contact_takes_nothing_new() {
    let data = temp_dir("roster-mid-contact");
    let srv = Server::start_in(rostered(&data, None)).await;
    let mut a = srv.admin().await;
    let mut ops = srv.operators().await;
    let mut c = srv.contacts().await;
    ops.login(login("op-201", "supplier-a", &[("pensions", 7)])).await.expect("login");
    let r = c.offer_contact(voice("held", "pensions")).await.expect("offer").into_inner();
    assert_eq!(assigned(&r).as_deref(), Some("op-201"));
    ops.accept_offer(pb::AcceptOfferRequest { operator_id: "op-201".into(), contact_id: "held".into() })
        .await
        .expect("accept");
    for (what, change) in [("moved to supplier-b", true), ("retired", false)] {
        if change {
            a.put_roster_operator(pb::PutRosterOperatorRequest {
                operator: Some(entry("op-201", "supplier-b", &[("pensions", 7)])),
                expected_version: None,
            })
            .await
            .expect("put");
        } else {
            a.retire_roster_operator(pb::RetireRosterOperatorRequest { operator_id: "op-201".into() })
                .await
                .expect("retire");
        }
        let e = ops
            .set_state(pb::SetStateRequest {
                operator_id: "op-201".into(),
                status: pb::OperatorStatus::Available as i32,
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{what}: AVAILABLE is refused: {e:?}");
        // Nor may the desk swap the server's roster_change pause for a break of its own.
        let e = ops
            .set_state(pb::SetStateRequest {
                operator_id: "op-201".into(),
                status: pb::OperatorStatus::Paused as i32,
                reason: "break".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{what}: another pause is refused: {e:?}");
        let r = c.offer_contact(voice(&format!("new-{change}"), "pensions")).await.expect("offer").into_inner();
        assert_eq!(assigned(&r), None, "{what}: no new contact for op-201: {r:?}");
    }
    // The contact in hand is completed as usual; then the session is over.
    ops.complete_contact(pb::CompleteContactRequest {
        operator_id: "op-201".into(),
        contact_id: "held".into(),
        wrap_up_ms: 0,
        ended_unix_ms: 0,
    })
    .await
    .expect("complete");
    let mut ended = false;
    for _ in 0..50 {
        let snap = a.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot").into_inner();
        let st = snap.operators.iter().find(|o| o.operator_id == "op-201").map(|o| o.status);
        if st.is_none_or(|s| s == pb::OperatorStatus::LoggedOut as i32) {
            ended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ended, "the session ends once the last contact in hand does");
    srv.stop().await;
}
