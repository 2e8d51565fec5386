//! One server per ledger (issue 26, finding 6): a second `smista serve` on the same data
//! directory, or on the same PostgreSQL schema and node, refuses to start and names the process
//! that holds it, instead of admitting against the same ceiling from a second book. And a data
//! directory whose ledger is a symbolic link is refused without touching the link's target.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::Smista;

fn temp(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let d = std::env::temp_dir().join(format!("smista-exclusive-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).expect("dir");
    d
}

/// Runs a second `smista serve` with `args` that must exit at once with an error: its stderr.
fn refused(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smista"))
        .arg("serve")
        .args(["--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // A server that starts would run until killed: give it 30 s, then fail.
    for _ in 0..300 {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            assert!(!status.success(), "the second server exits with an error");
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!err.contains("smista listening"), "a refused server never says it listens: {err}");
            return err;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("a second server on the same ledger started");
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused_naming_the_first() {
    let dir = temp("dir");
    let data = dir.join("data");
    let first = Smista::start(&["--data-dir".as_ref(), data.as_os_str()]);
    let err = refused(&["--data-dir".as_ref(), data.as_os_str()], &[]);
    let pid = first.child.id().to_string();
    assert!(err.contains("in use by another smista") && err.contains(&format!("pid {pid}")), "{err}");
    drop(first);
    // Released with the process, even killed: a restart on the directory starts.
    let again = Smista::start(&["--data-dir".as_ref(), data.as_os_str()]);
    drop(again);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_ledger_that_is_a_symbolic_link_is_refused_and_its_target_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp("link");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "someone else's file").expect("victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::os::unix::fs::symlink(&victim, data.join("ledger.db")).expect("link");
    let err = refused(&["--data-dir".as_ref(), data.as_os_str()], &[]);
    assert!(err.contains("is a symbolic link"), "{err}");
    let mode = std::fs::metadata(&victim).expect("victim").permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the link's target keeps its rights");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "someone else's file");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_second_single_server_on_the_same_postgresql_schema_is_refused_naming_the_first() {
    let Some(url) = smista_ledger::testing::pg_url("exclusive") else { return };
    let schema = smista_ledger::testing::schema_name("exclusive");
    let dir = temp("pg");
    let demo = smista_server::config::DEMO.to_owned();
    let config = dir.join("smista.toml");
    std::fs::write(&config, format!("{demo}\n[ledger]\nkind = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\n"))
        .expect("config");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let env = [];
    let first =
        Smista::start_with_env(&["--config".as_ref(), config.as_os_str(), "--data-dir".as_ref(), a.as_os_str()], &env);
    let err = refused(&["--config".as_ref(), config.as_os_str(), "--data-dir".as_ref(), b.as_os_str()], &env);
    let pid = first.child.id().to_string();
    assert!(err.contains("is already served by smista pid") && err.contains(&format!("pid {pid} ")), "{err}");
    drop(first);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(smista_ledger::testing::drop_schema(&url, &schema));
    let _ = std::fs::remove_dir_all(dir);
}
