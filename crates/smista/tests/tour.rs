//! The README's quick tour, and docs/citizen.md's transfer and consultation walk-throughs, run as
//! written: every `$ smista client ...` line of the section's first `text` block against a fresh
//! `smista serve`, each output compared with the lines the document shows under it. Only
//! durations may differ (a number before `ms`, `s` or `min`), so the documents cannot drift from
//! what the binary prints.

mod support;

use std::process::Command;

use support::Smista;

/// The (command, expected output lines) pairs of the first `text` block under `heading` of the
/// repository's file `doc`.
fn tour(doc: &str, heading: &str) -> Vec<(String, Vec<String>)> {
    let path = format!("{}/../../{doc}", env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(path).expect("the document");
    let section = readme.split(heading).nth(1).expect("the section");
    let block = section.split("```text\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a text block");
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("$ ") {
            Some(cmd) => steps.push((cmd.to_owned(), Vec::new())),
            None => steps.last_mut().expect("output after a command").1.push(line.to_owned()),
        }
    }
    steps
}

/// `line` with every number that counts ms, s or min replaced by `N`.
fn durations_blurred(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = j + d.len_utf8();
            chars.next();
        }
        let rest = &line[end..];
        let unit = [" ms", " s", " min"].iter().any(|u| {
            rest.strip_prefix(u).is_some_and(|after| after.chars().next().is_none_or(|n| !n.is_alphanumeric()))
        });
        out.push_str(if unit { "N" } else { &line[i..end] });
    }
    out
}

#[test]
fn the_readme_tour_runs_as_written_and_prints_what_the_readme_shows() {
    run(&tour("README.md", "## Quick tour"), "readme");
}

#[test]
fn the_transfer_walk_through_runs_as_written() {
    run(&tour("docs/citizen.md", "## From first level to second"), "transfer");
}

#[test]
fn the_consultation_walk_through_runs_as_written() {
    run(&tour("docs/citizen.md", "## Consultations and conferences"), "consult");
}

fn run(steps: &[(String, Vec<String>)], tag: &str) {
    assert!(steps.len() >= 10, "the tour has its steps: {steps:?}");
    let data = std::env::temp_dir().join(format!("smista-tour-{tag}-{}", std::process::id()));
    let server = Smista::start(&["--data-dir".as_ref(), data.as_os_str()]);
    let target = format!("http://{}", server.grpc);
    for (cmd, expected) in steps {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(args.first(), Some(&"smista"), "a tour line runs smista: {cmd}");
        assert_eq!(args.get(1), Some(&"client"), "a tour line is a client call: {cmd}");
        let out = Command::new(env!("CARGO_BIN_EXE_smista"))
            .args(&args[1..])
            .args(["--target", &target])
            .output()
            .expect("run smista client");
        let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .map(durations_blurred)
            .collect();
        let wanted: Vec<String> = expected.iter().map(|l| durations_blurred(l)).collect();
        assert_eq!(printed, wanted, "`{cmd}` printed something else than the README shows");
        let fails = expected.iter().any(|l| l.starts_with("error: "));
        assert_eq!(out.status.success(), !fails, "`{cmd}` exit status");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn only_durations_are_blurred() {
    assert_eq!(durations_blurred("#11   call-2 after waiting 2 s"), "#11   call-2 after waiting N s");
    assert_eq!(durations_blurred("handled in 13 ms, wrap-up 2 min 30 s"), "handled in N ms, wrap-up N min N s");
    assert_eq!(durations_blurred("position 1 of 2 seats, op-101"), "position 1 of 2 seats, op-101");
}
