//! The CI short version of the fault harness: one short run (15 s of offers) per fault that
//! matters most, against the debug `smista` binary next to this test (built first if missing),
//! on the PostgreSQL of `SMISTA_TEST_PG_URL` (required when `CI=true`). Each run's history is
//! written to the temporary directory and named when a violation is found.

use std::path::PathBuf;
use std::time::Duration;

use smista_faults::run::{run, Fault, RunConfig};

/// One run at a time: each starts up to three servers with leases of about a second; two at
/// once on two cores would let the timing, not the code, decide.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pg_url() -> Option<String> {
    match std::env::var("SMISTA_TEST_PG_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must set SMISTA_TEST_PG_URL: the fault harness cannot be skipped there"
            );
            eprintln!("SMISTA_TEST_PG_URL is not set: fault harness skipped");
            None
        }
    }
}

/// `target/<profile>/smista` beside `target/<profile>/deps/<this test>`, built if missing.
fn smista() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let bin = profile_dir.join("smista");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--bin", "smista"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --bin smista");
        assert!(status.success(), "cargo build --bin smista failed");
    }
    assert!(bin.is_file(), "no smista binary at {}: run cargo build --bin smista", bin.display());
    bin
}

async fn short_run(fault: Fault) {
    let Some(pg_url) = pg_url() else { return };
    let _one_at_a_time = SERIAL.lock().await;
    let history = std::env::temp_dir().join(format!("smista-faults-{}-{}.jsonl", fault.name(), std::process::id()));
    let cfg = RunConfig {
        smista: smista(),
        pg_url,
        fault,
        nodes: 3,
        duration: Duration::from_secs(15),
        rate: 16.0,
        desks: 20,
        deadline: Duration::from_millis(800),
        run: 1,
        keep: false,
        work_dir: std::env::temp_dir().join("smista-faults-ci"),
        history: Some(history.clone()),
        verbose: true,
    };
    let report = run(&cfg).await.expect("the harness ran");
    let v = &report.verdict;
    println!("{}", v.line(fault.name(), 1));
    println!("{}\n{}", smista_faults::checker::Verdict::header(), v.row(fault.name(), 1));
    for n in &v.notes {
        println!("note: {n}");
    }
    assert!(v.offers > 100, "the platform offered: {}", v.offers);
    assert!(v.completions_acked > 50, "desks completed: {}", v.completions_acked);
    assert!(
        v.ok(),
        "{}\nhistory: {}\nnode logs: {:?} (schema {} dropped)",
        v.line(fault.name(), 1),
        history.display(),
        report.logs,
        report.schema
    );
    assert!(v.failover_ms.is_some(), "an offer was accepted after the fault");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_active_loses_nothing() {
    short_run(Fault::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_hanging_under_the_active_loses_nothing() {
    short_run(Fault::PgHang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_the_active_loses_nothing() {
    short_run(Fault::Sigstop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_node_cut_off_from_postgresql_loses_nothing() {
    short_run(Fault::LeaseCut).await;
}
