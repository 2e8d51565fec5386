//! The roster across nodes sharing one PostgreSQL ledger (issue 28):
//!
//! - an active/standby pair: roster changes made on the active (a group moved, an operator
//!   created, one retired) survive a kill -9 of the active; the standby that takes over serves
//!   them, with their audit records holding the old and new entries, and refuses the retired
//!   operator and the old group at Login;
//! - two nodes routing at once: concurrent edits of one operator on both converge on the same
//!   entry on both, every change written on top of the one before and in the audit trail; a
//!   retirement on one node reaches the other (its Login refused, its session ended) within the
//!   refresh;
//! - `smista check-config` reports a roster file's error with its file, line and column.
//!
//! The cluster tests need `SMISTA_TEST_PG_URL` (set by `.ci/run`; required when `CI=true`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use support::{contract_toml, start_node, teardown, Smista};
use tonic::transport::Channel;
use tonic::Code;

/// The roster part of every node's configuration: required, refreshed every 200 ms.
const ROSTER: &str = r#"
[roster]
mode = "required"
refresh_ms = 200

[[groups]]
name = "internal"

[[operators]]
id = "op-201"
name = "Operator 201"
group = "supplier"
skills = { naspi = 7 }

[[operators]]
id = "op-101"
name = "Operator 101"
group = "internal"
skills = { naspi = 9 }
"#;

/// Starts `node` on `schema`: of the active/standby group `main` with `failover`, else a node
/// routing beside the others (budgets through leases).
fn start(dir: &Path, node: &str, schema: &str, url: &str, failover: bool) -> Smista {
    let cluster = if failover {
        format!("node_id = \"{node}\"\nfailover = true\ngroup = \"main\"\nleader_ttl_ms = 1000\nleader_renew_ms = 150")
    } else {
        format!("node_id = \"{node}\"")
    };
    let toml = format!(
        "[ledger]\nkind = \"postgres\"\nurl = \"set by SMISTA_LEDGER_URL\"\nschema = \"{schema}\"\n\n[cluster]\n{cluster}\n{ROSTER}{}",
        contract_toml(100_000_000, "naspi", "")
    );
    start_node(dir, node, &toml, url, &["--drain-ms", "200"])
}

async fn channel(n: &Smista) -> Option<Channel> {
    Channel::from_shared(format!("http://{}", n.grpc)).expect("uri").connect().await.ok()
}

/// Which node is active now (health of ContactService SERVING), waiting up to 20 s.
async fn active_node(nodes: &[Smista], skip: Option<usize>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let Some(ch) = channel(n).await else { continue };
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            let r = h.check(tonic_health::pb::HealthCheckRequest { service: "smista.v1.ContactService".into() }).await;
            if r.is_ok_and(|r| r.into_inner().status == 1) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no active node");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn login(op: &str, group: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        operator_id: op.into(),
        group: group.into(),
        skills: vec![],
        channels: vec![],
        session_id: format!("desk-{op}"),
    }
}

fn entry(id: &str, group: &str, naspi: u32) -> pb::RosterOperator {
    pb::RosterOperator {
        operator_id: id.into(),
        display_name: format!("Operator {id}"),
        group: group.into(),
        skills: vec![pb::Skill { name: "naspi".into(), level: naspi }],
        ..Default::default()
    }
}

async fn roster(a: &mut AdminServiceClient<Channel>) -> Vec<pb::RosterOperator> {
    a.list_roster(pb::ListRosterRequest { include_retired: true, ..Default::default() })
        .await
        .expect("list")
        .into_inner()
        .operators
}

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("smista-roster-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_changes_survive_a_failover_with_their_audit() {
    let Some(url) = smista_ledger::testing::pg_url("the roster failover test") else { return };
    let schema = smista_ledger::testing::schema_name("roster_failover");
    let dir = dir("failover");
    let mut nodes = vec![start(&dir, "node-0", &schema, &url, true)];
    assert_eq!(active_node(&nodes, None).await, 0);
    nodes.push(start(&dir, "node-1", &schema, &url, true));
    let ch = channel(&nodes[0]).await.expect("connect");
    let mut a = AdminServiceClient::new(ch.clone());
    a.put_roster_operator(pb::PutRosterOperatorRequest {
        operator: Some(entry("op-201", "internal", 4)),
        expected_version: Some(1),
    })
    .await
    .expect("moved");
    a.put_roster_operator(pb::PutRosterOperatorRequest {
        operator: Some(entry("op-301", "supplier", 6)),
        expected_version: Some(0),
    })
    .await
    .expect("created");
    a.retire_roster_operator(pb::RetireRosterOperatorRequest { operator_id: "op-101".into() }).await.expect("retired");
    let before = roster(&mut a).await;

    let s = Command::new("kill").args(["-9", &nodes[0].child.id().to_string()]).status().expect("kill");
    assert!(s.success());
    assert_eq!(active_node(&nodes, Some(0)).await, 1, "the standby took over");
    let ch = channel(&nodes[1]).await.expect("connect");
    let mut a = AdminServiceClient::new(ch.clone());
    assert_eq!(roster(&mut a).await, before, "the new active serves the roster the old one acknowledged");
    let mut ops = OperatorServiceClient::new(ch.clone());
    let e = ops.login(login("op-101", "internal")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "a retired operator logs in after the failover: {e:?}");
    let e = ops.login(login("op-201", "supplier")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "the old group after the failover: {e:?}");
    ops.login(login("op-201", "")).await.expect("bound to the new entry");
    ops.login(login("op-301", "supplier")).await.expect("created before the failover");
    let trail = a
        .list_roster_audit(pb::ListRosterAuditRequest { operator_id: "op-201".into(), ..Default::default() })
        .await
        .expect("audit")
        .into_inner()
        .records;
    let last = trail.last().expect("records");
    assert_eq!((last.change.as_str(), last.actor.as_str(), last.version), ("updated", "anonymous", 2));
    assert!(last.old_value.contains("group = \"supplier\"") && last.old_value.contains("naspi:7"), "{last:?}");
    assert!(last.new_value.contains("group = \"internal\"") && last.new_value.contains("naspi:4"), "{last:?}");
    teardown(nodes, &url, &schema, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_roster_edits_on_two_nodes_converge() {
    let Some(url) = smista_ledger::testing::pg_url("the roster convergence test") else { return };
    let schema = smista_ledger::testing::schema_name("roster_converge");
    let dir = dir("converge");
    let nodes = vec![start(&dir, "node-a", &schema, &url, false), start(&dir, "node-b", &schema, &url, false)];
    let (ca, cb) = (channel(&nodes[0]).await.expect("a"), channel(&nodes[1]).await.expect("b"));
    // Both edit op-201 at once, 10 times each, naming no version: every edit lands, in turn.
    let edits = |ch: Channel, group: &'static str| {
        tokio::spawn(async move {
            let mut a = AdminServiceClient::new(ch);
            for level in 1..=10 {
                a.put_roster_operator(pb::PutRosterOperatorRequest {
                    operator: Some(entry("op-201", group, level)),
                    expected_version: None,
                })
                .await
                .expect("edit");
            }
        })
    };
    let (x, y) = (edits(ca.clone(), "supplier"), edits(cb.clone(), "internal"));
    x.await.expect("a's edits");
    y.await.expect("b's edits");
    let (mut a, mut b) = (AdminServiceClient::new(ca.clone()), AdminServiceClient::new(cb.clone()));
    // Converged within the refresh: the same entry on both, the latest version.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (ra, rb) = loop {
        let (ra, rb) = (roster(&mut a).await, roster(&mut b).await);
        if ra == rb || Instant::now() > deadline {
            break (ra, rb);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ra, rb, "the two nodes hold different rosters");
    let op = ra.iter().find(|o| o.operator_id == "op-201").expect("op-201");
    let trail = a
        .list_roster_audit(pb::ListRosterAuditRequest { operator_id: "op-201".into(), ..Default::default() })
        .await
        .expect("audit")
        .into_inner()
        .records;
    // Created by the configuration (by the node that started first; the other found it as its
    // configuration says), then every edit of both nodes, each on top of the one before.
    assert_eq!(op.version, trail.len() as u64, "{trail:?}");
    assert_eq!(trail.len(), 21, "{trail:?}");
    for w in trail.windows(2) {
        assert_eq!(w[1].old_value, w[0].new_value, "a change written over one it did not see");
        assert_eq!(w[1].version, w[0].version + 1);
    }
    assert_eq!(op.skills[0].level, 10, "the last edit of each node is level 10: {op:?}");

    // A retirement on node a reaches node b: its Login refused, the session there ended.
    let mut ob = OperatorServiceClient::new(cb.clone());
    let group = op.group.clone();
    ob.login(login("op-201", &group)).await.expect("op-201 on node b");
    a.retire_roster_operator(pb::RetireRosterOperatorRequest { operator_id: "op-201".into() }).await.expect("retire");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snap = b.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot").into_inner();
        let out = snap
            .operators
            .iter()
            .find(|o| o.operator_id == "op-201")
            .is_some_and(|o| o.status == pb::OperatorStatus::LoggedOut as i32);
        if out {
            break;
        }
        assert!(Instant::now() < deadline, "node b kept a retired operator logged in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = ob.login(login("op-201", &group)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "node b lets a retired operator log in: {e:?}");
    teardown(nodes, &url, &schema, &dir).await;
}

/// `smista check-config` reads the roster file too: an error names the file, the line and the
/// column, and the command fails; a good file is counted.
#[test]
fn check_config_reports_a_roster_file_error_with_its_line() {
    let dir = dir("check");
    let csv = dir.join("roster.csv");
    let cfg = dir.join("smista.toml");
    let toml = format!("{}\n[roster]\nfile = \"{}\"\n", smista_server::config::DEMO, csv.display());
    std::fs::write(&cfg, toml).expect("config");
    let check = || Command::new(env!("CARGO_BIN_EXE_smista")).arg("check-config").arg(&cfg).output().expect("run");
    std::fs::write(&csv, "id,name,group,skills,channels,status\nop-201,A,supplier-a,pensions:7,,active\n# note\nop-202,B,supplier-a,pensions:11,,active\n")
        .expect("csv");
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("{}:4: column `skills`", csv.display())), "{err}");
    std::fs::write(&csv, "id,name,group,skills,channels,status\nop-201,A,supplier-a,pensions:7,,active\n")
        .expect("csv");
    let out = check();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("1 rostered operators, roster open"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
