//! The working tree stays clean after the documented commands (issue 29, item 12): what they
//! leave behind (development credentials with their private keys, the default data directory,
//! the Python client's virtualenv and stubs) is ignored by the repository's `.gitignore`, wherever
//! the docs run them: the root, or `clients/python` as its README does. Run in a scratch git
//! repository holding only that `.gitignore`: `git status` there must list nothing else.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SMISTA: &str = env!("CARGO_BIN_EXE_smista");

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "core.excludesFile=/dev/null"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git (the test needs it on PATH)");
    assert!(out.status.success(), "git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn smista(dir: &Path, args: &[&str]) {
    let out = Command::new(SMISTA).args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run smista");
    assert!(out.status.success(), "smista {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// The `--out` directories the docs mint development credentials into, by the directory their
/// commands run in (`clients/python/README.md`'s from `clients/python`, the others' from the root).
fn documented_outs() -> Vec<(&'static str, String)> {
    let mut docs = vec![("", root().join("README.md")), ("clients/python", root().join("clients/python/README.md"))];
    for d in ["docs", "deploy", "deploy/kubernetes"] {
        for e in std::fs::read_dir(root().join(d)).expect("read a docs directory").flatten() {
            if e.path().extension().is_some_and(|x| x == "md") {
                docs.push(("", e.path()));
            }
        }
    }
    let mut outs = Vec::new();
    for (cwd, doc) in docs {
        let text = std::fs::read_to_string(&doc).expect("read a doc");
        for rest in text.split("dev-credentials --out ").skip(1) {
            let out = rest.split(|c: char| c.is_whitespace() || c == '`').next().unwrap_or_default();
            // Absolute paths (/tmp/...) and $(mktemp -d) are outside the tree by themselves.
            if !out.starts_with('/') && !out.starts_with('$') && !out.starts_with('"') {
                outs.push((cwd, out.to_owned()));
            }
        }
    }
    outs
}

#[test]
fn the_documented_commands_leave_the_working_tree_clean() {
    let outs = documented_outs();
    assert!(
        outs.iter().any(|(cwd, o)| cwd.is_empty() && o == "./dev-creds")
            && outs.iter().any(|(cwd, _)| *cwd == "clients/python"),
        "the README and clients/python/README.md mint into ./dev-creds: found {outs:?}"
    );
    let tree = std::env::temp_dir().join(format!("smista-clean-tree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    let python = tree.join("clients/python");
    std::fs::create_dir_all(&python).expect("scratch tree");
    git(&tree, &["init", "-q"]);
    std::fs::copy(root().join(".gitignore"), tree.join(".gitignore")).expect("copy .gitignore");

    for (cwd, out) in &outs {
        smista(&tree.join(cwd), &["dev-credentials", "--out", out]);
    }
    // Without --out: its default directory, in both places.
    smista(&tree, &["dev-credentials"]);
    smista(&python, &["dev-credentials", "--operators", "py-op-1"]);
    // `smista serve` with its default data directory (./smista-data), in both places: the
    // directory and the ledger appear once it listens.
    for dir in [&tree, &python] {
        let mut cmd = Command::new(SMISTA);
        cmd.args(["serve", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"]).current_dir(dir);
        drop(support::Smista::spawn(cmd));
        assert!(dir.join("smista-data").is_dir(), "serve made no ./smista-data in {}", dir.display());
    }
    // clients/python/README.md: `python3 -m venv .venv`, `./generate.sh` (stubs into ./gen, and
    // Python's byte code when they are imported). What a venv holds is laid out, not installed.
    for f in [".venv/pyvenv.cfg", ".venv/bin/python3", "gen/smista/v1/routing_pb2.py", "gen/smista/__pycache__/x.pyc"] {
        let path = python.join(f);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, "").expect("write");
    }

    let untracked: Vec<String> = git(&tree, &["status", "--porcelain", "--untracked-files=all"])
        .lines()
        .map(str::to_owned)
        .filter(|l| l != "?? .gitignore")
        .collect();
    let _ = std::fs::remove_dir_all(&tree);
    assert!(untracked.is_empty(), "the documented commands leave files git would add:\n{}", untracked.join("\n"));
}
