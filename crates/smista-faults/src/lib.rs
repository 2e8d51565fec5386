//! A Jepsen-style fault harness for smista (issue 25, "Failover that loses nothing").
//!
//! A run starts real `smista serve` processes on one PostgreSQL (a fresh schema), each reaching
//! it through an in-process TCP proxy the harness can hang or reset; drives them with clients
//! that follow the proto's retry contract (a telephony platform, operator desks, a snapshot
//! reader), recording every call and reply in a [`history::History`]; injects one
//! [`run::Fault`]; stops the nodes with SIGTERM; and [`checker::check`]s the history against the
//! ledger's tables: lost completions, double acceptances, double charges, the ceiling, contacts
//! ended twice or not recorded, end records without arrival, frozen nodes, the failover time.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod history;
pub mod proxy;
pub mod run;

/// A harness failure (not a violation: those are in the verdict).
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<std::io::Error> for HarnessError {
    fn from(e: std::io::Error) -> Self {
        HarnessError(e.to_string())
    }
}

impl From<tonic::transport::Error> for HarnessError {
    fn from(e: tonic::transport::Error) -> Self {
        HarnessError(e.to_string())
    }
}

/// The `smista` binary: `explicit` if given, else `target/release/smista`, else
/// `target/debug/smista` (under `CARGO_TARGET_DIR` or the workspace's `target`), else next to
/// the running executable (`target/<profile>/` for a binary, its parent for a test).
#[must_use]
pub fn find_smista(explicit: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let mut candidates = vec![target.join("release/smista"), target.join("debug/smista")];
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            candidates.push(dir.join("smista"));
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}
