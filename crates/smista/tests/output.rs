//! What the binary says, and how it stops, when things around it go wrong (issue 29, item 14):
//! standard output closed by its reader (`smista client snapshot | head -1`) ends every printing
//! subcommand quietly with status 141, never a panic; a client with no server names the address
//! and the reason; a start on PostgreSQL logs no NOTICE of its schema's `IF NOT EXISTS`.

mod support;

use std::process::{Command, Output, Stdio};

use support::Smista;

const SMISTA: &str = env!("CARGO_BIN_EXE_smista");

/// The write end of a pipe whose reader has already gone: a child writing its first line to it
/// gets EPIPE, whatever the timing. The reader is a child of its own (`smista --version`, which
/// never reads its standard input), waited for before the pipe is handed on.
fn closed_pipe() -> Stdio {
    let mut reader = Command::new(SMISTA)
        .arg("--version")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the reader");
    let write_end = reader.stdin.take().expect("the pipe's write end");
    reader.wait().expect("the reader exits");
    Stdio::from(write_end)
}

/// Runs `smista args...` with its standard output closed by its reader.
fn with_stdout_closed(args: &[&str]) -> Output {
    Command::new(SMISTA)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .expect("run smista")
}

#[test]
fn every_subcommand_that_prints_stops_quietly_when_its_reader_has_gone() {
    let dir = std::env::temp_dir().join(format!("smista-output-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let data = dir.join("data");
    let server = Smista::start(&["--data-dir".as_ref(), data.as_os_str()]);
    let target = format!("http://{}", server.grpc);
    let creds = dir.join("creds");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../smista-server/demo.toml");
    let (from, to) = ("2026-03-01", "2026-03-02");
    let runs: Vec<Vec<&str>> = vec![
        vec!["client", "--target", &target, "snapshot"],
        vec!["client", "--target", &target, "--json", "snapshot"],
        vec!["client", "--target", &target, "health"],
        vec!["client", "--target", &target, "login", "op-1", "internal", "--skill", "pensions=5"],
        vec!["report", "intervals", "--target", &target, "--from", from, "--to", to, "--interval", "1h"],
        vec!["report", "intervals", "--target", &target, "--from", from, "--to", to, "--format", "csv"],
        vec!["check-config", demo],
        vec!["dev-credentials", "--out", creds.to_str().expect("utf-8 path")],
    ];
    for args in &runs {
        let out = with_stdout_closed(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace") && stderr.trim().is_empty(),
            "smista {}: a closed standard output must end it quietly, not with\n{stderr}",
            args.join(" ")
        );
        assert_eq!(
            out.status.code(),
            Some(141),
            "smista {}: the status of a closed pipe (128 + SIGPIPE)",
            args.join(" ")
        );
    }
    // The ledger the server wrote, read after it stopped.
    drop(server);
    let out = with_stdout_closed(&["ledger", "report", "--data-dir", data.to_str().expect("utf-8 path")]);
    assert!(out.stderr.is_empty(), "ledger report: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(141), "ledger report");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_without_a_server_says_where_it_tried_and_why() {
    // A port nobody listens on: one the system just gave out, closed again.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let target = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["client", "--target", &target, "snapshot"],
        vec!["client", "--target", &target, "health"],
        vec!["report", "intervals", "--target", &target, "--from", "2026-01-01", "--to", "2026-01-02"],
    ] {
        let out = Command::new(SMISTA).args(&args).stdin(Stdio::null()).output().expect("run smista");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "smista {}: {stderr}", args.join(" "));
        assert!(
            stderr.contains(&format!("cannot connect to {target}: tcp connect error: Connection refused")),
            "smista {}: the error must name the address and the reason, not only \"transport error\":\n{stderr}",
            args.join(" ")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_on_postgresql_logs_no_notices() {
    let Some(url) = smista_ledger::testing::pg_url("a_start_on_postgresql_logs_no_notices") else { return };
    let schema = smista_ledger::testing::schema_name("notices");
    let dir = std::env::temp_dir().join(format!("smista-notices-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = format!(
        "[ledger]\nkind = \"postgres\"\nurl = \"set by SMISTA_LEDGER_URL\"\nschema = \"{schema}\"\n{}",
        support::contract_toml(100_000, "pensions", "")
    );
    // The first start creates the schema, the second finds it, the third finds it at an older
    // version (as after an upgrade) and migrates it: none may log what PostgreSQL says of the
    // tables, indexes and columns that already exist (sqlx logs its notices at INFO: 68-88 lines).
    for start in ["first", "second", "after-an-upgrade"] {
        if start == "after-an-upgrade" {
            let pool = sqlx::PgPool::connect(&url).await.expect("connect");
            sqlx::query(&format!("UPDATE {schema}.schema_version SET version = 1"))
                .execute(&pool)
                .await
                .expect("set the schema's version back");
            pool.close().await;
        }
        let mut node = support::start_node(&dir, start, &toml, &url, &[]);
        // The ledger opens (and migrates) after the listening line, then the budgets are
        // restored from it.
        let mut lines = node.startup.clone();
        while !lines.last().is_some_and(|l| l.contains("budgets restored from the ledger")) {
            lines.push(node.log.recv_timeout(std::time::Duration::from_secs(30)).expect("the ledger opened"));
        }
        let _ = Command::new("kill").args(["-TERM", &node.child.id().to_string()]).status();
        let _ = node.child.wait();
        lines.extend(node.log.iter()); // to the end of its standard error
        let notices: Vec<&String> =
            lines.iter().filter(|l| l.contains("sqlx::postgres::notice") || l.contains(", skipping")).collect();
        assert!(notices.is_empty(), "the {start} start logged {} PostgreSQL notices:\n{notices:#?}", notices.len());
    }
    smista_ledger::testing::drop_schema(&url, &schema).await;
    let _ = std::fs::remove_dir_all(&dir);
}
