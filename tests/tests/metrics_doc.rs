//! `docs/metrics.md` against the code, both ways: every `smista_*` family a running server
//! exposes is documented there, with its type, its labels and (for closed sets) their values;
//! every metric documented there is a string literal of the server's sources, and every metric
//! name among those literals is documented (its own process: one recorder).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use smista_proto::v1 as pb;
use smista_server::config::Config;
use support::*;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What `docs/metrics.md` says.
struct Doc {
    /// Each metric's type and label names.
    metrics: BTreeMap<String, (String, BTreeSet<String>)>,
    /// The values of a label on a metric (backticked, outside parentheses): `None` when none are
    /// listed, names from the configuration.
    values: BTreeMap<(String, String), Option<BTreeSet<String>>>,
}

/// The `backticked` items of a table cell, in order.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// `cell` without what it says in parentheses.
fn outside_parentheses(cell: &str) -> String {
    let mut depth = 0usize;
    let mut out = String::new();
    for c in cell.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// A table row's cells.
fn cells(row: &str) -> Vec<&str> {
    row.trim().trim_start_matches('|').trim_end_matches('|').split('|').map(str::trim).collect()
}

fn read_doc() -> Doc {
    let text = std::fs::read_to_string(root().join("docs/metrics.md")).expect("docs/metrics.md");
    let mut metrics = BTreeMap::new();
    for row in text.lines().filter(|l| l.starts_with("| `smista_")) {
        let c = cells(row);
        assert_eq!(c.len(), 4, "a metric row has name, type, labels and meaning: {row}");
        let name = backticked(c[0]);
        assert_eq!(name.len(), 1, "one metric per row: {row}");
        assert!(["counter", "gauge", "histogram"].contains(&c[1]), "a Prometheus type: {row}");
        let labels: BTreeSet<String> = backticked(c[2]).into_iter().collect();
        let again = metrics.insert(name[0].clone(), (c[1].to_owned(), labels));
        assert!(again.is_none(), "{} is documented twice", name[0]);
    }
    assert!(!metrics.is_empty(), "docs/metrics.md has metric rows (| `smista_...` | type | labels | meaning |)");

    let section = text.split("\n## Labels\n").nth(1).expect("a Labels section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut values = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let c = cells(row);
        assert_eq!(c.len(), 3, "a label row has label, values and metrics: {row}");
        let label = backticked(c[0]);
        assert_eq!(label.len(), 1, "one label per row: {row}");
        let set: BTreeSet<String> = backticked(&outside_parentheses(c[1])).into_iter().collect();
        let set = (!set.is_empty()).then_some(set);
        for metric in backticked(c[2]) {
            let (_, labels) = metrics.get(&metric).unwrap_or_else(|| panic!("{metric} has labels but no row: {row}"));
            assert!(labels.contains(&label[0]), "{metric}'s row does not list the label `{}`", label[0]);
            let again = values.insert((label[0].clone(), metric.clone()), set.clone());
            assert!(again.is_none(), "the values of `{}` on {metric} are documented twice", label[0]);
        }
    }
    for (metric, (_, labels)) in &metrics {
        for label in labels {
            assert!(
                values.contains_key(&(label.clone(), metric.clone())),
                "the Labels section does not say which values `{label}` takes on {metric}"
            );
        }
    }
    Doc { metrics, values }
}

/// Every `.rs` file under `dir`, at any depth.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals `"smista_..."` (lower case, digits and underscores) of the server's
/// sources.
fn names_in_sources() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("crates/smista-server/src"), &mut files);
    assert!(!files.is_empty(), "the server's sources");
    let mut names = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for (i, _) in text.match_indices("\"smista_") {
            let rest = &text[i + 1..];
            let end = rest.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(0);
            if rest[end..].starts_with('"') {
                names.insert(rest[..end].to_owned());
            }
        }
    }
    names
}

#[test]
fn every_metric_documented_is_defined_in_the_server_and_every_one_defined_is_documented() {
    let doc = read_doc();
    let defined = names_in_sources();
    let undefined: Vec<&String> = doc.metrics.keys().filter(|m| !defined.contains(*m)).collect();
    assert!(
        undefined.is_empty(),
        "docs/metrics.md documents metrics that crates/smista-server/src does not define: {undefined:?}"
    );
    let undocumented: Vec<&String> = defined.iter().filter(|m| !doc.metrics.contains_key(*m)).collect();
    assert!(
        undocumented.is_empty(),
        "crates/smista-server/src defines metrics docs/metrics.md lacks: {undocumented:?}"
    );
}

/// One sample line of the exposition: its name and labels.
fn sample(line: &str) -> (String, Vec<(String, String)>) {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..name_end].to_owned();
    let mut labels = Vec::new();
    if line[name_end..].starts_with('{') {
        let mut chars = line[name_end + 1..].chars();
        loop {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            let key = key.trim_start_matches(',').trim().to_owned();
            if key.is_empty() || key.starts_with('}') {
                break;
            }
            assert_eq!(chars.next(), Some('"'), "a quoted label value: {line}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().expect("an escaped character")),
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key, value));
        }
    }
    (name, labels)
}

/// A budgeted supplier and internal staff, a queue with a segment rule and one nobody serves.
fn config() -> Config {
    Config::parse(
        r#"
[[budgets]]
id = "contract"
ceiling_cents = 1000000
period = { kind = "monthly" }
default_handle_ms = 300000
tariffs = [
  { channel = "voice", fee_per_contact_cents = 50, rate_per_second_centicents = 120, billing_increment_seconds = 10 },
]

[[groups]]
name = "internal"

[[groups]]
name = "supplier"
supplier = "acme"
budget = "contract"

[[queues]]
name = "pensions"
skills = [{ skill = "pensions", min_level = 4 }]
budget = "contract"
segments = [{ segment = "vulnerable", priority_boost = 20, service_level_threshold_ms = 10000 }]

[[queues]]
name = "isee"
skills = [{ skill = "isee", min_level = 4 }]
"#,
        "metrics_doc test",
    )
    .expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_a_running_server_exposes_is_documented_with_its_type_and_labels() {
    let doc = read_doc();
    let srv = Server::start_with(config()).await;
    let mut c = srv.contacts().await;
    let mut o = srv.operators().await;
    o.login(login("op-s", "supplier", &[("pensions", 7)])).await.expect("login");
    let r = c.offer_contact(voice("d-1", "pensions")).await.expect("offer").into_inner();
    assert_eq!(assigned(&r).as_deref(), Some("op-s"));
    o.accept_offer(pb::AcceptOfferRequest { operator_id: "op-s".into(), contact_id: "d-1".into() })
        .await
        .expect("accept");
    o.complete_contact(pb::CompleteContactRequest {
        operator_id: "op-s".into(),
        contact_id: "d-1".into(),
        wrap_up_ms: 1,
        ..Default::default()
    })
    .await
    .expect("complete");
    c.offer_contact(voice("d-2", "pensions")).await.expect("offer");
    c.cancel_contact(pb::CancelContactRequest { contact_id: "d-2".into() }).await.expect("cancel");
    c.offer_contact(voice("d-3", "isee")).await.expect("offer"); // nobody serves ISEE: diverted
    c.offer_contact(voice("d-4", "nope")).await.expect_err("an unknown queue"); // an RPC error
    srv.admin().await.get_snapshot(pb::GetSnapshotRequest {}).await.expect("snapshot");
    // Gauges refresh about once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let scraped = srv.scrape().await;
    srv.stop().await;
    let body = scraped.split("\r\n\r\n").nth(1).expect("an HTTP body");

    let mut types = BTreeMap::new();
    for line in body.lines().filter(|l| l.starts_with("# TYPE smista_")) {
        let mut words = line.split_whitespace().skip(2);
        let (name, ty) = (words.next().expect("a name"), words.next().expect("a type"));
        types.insert(name.to_owned(), ty.to_owned());
    }
    let mut problems = Vec::new();
    for (name, ty) in &types {
        match doc.metrics.get(name) {
            None => problems.push(format!("{name} ({ty}) is exposed but not documented")),
            Some((documented, _)) if documented != ty => {
                problems.push(format!("{name} is a {ty}, documented as a {documented}"));
            }
            Some(_) => {}
        }
    }
    for line in body.lines().filter(|l| l.starts_with("smista_")) {
        let (name, labels) = sample(line);
        let family = types.keys().find(|f| {
            name == **f
                || types[*f] == "histogram"
                    && ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_prefix(f.as_str()) == Some(s))
        });
        let Some(family) = family else {
            problems.push(format!("{name} has no # TYPE line"));
            continue;
        };
        let Some((_, documented)) = doc.metrics.get(family) else { continue };
        for (label, value) in labels {
            if label == "le" && name.ends_with("_bucket") {
                continue;
            }
            if !documented.contains(&label) {
                problems.push(format!("{family} has the label `{label}`, not documented: {line}"));
            } else if let Some(Some(set)) = doc.values.get(&(label.clone(), family.clone())) {
                if !set.contains(&value) {
                    problems.push(format!("{family}'s `{label}` is \"{value}\", not among the documented {set:?}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "docs/metrics.md against /metrics:\n{}", problems.join("\n"));

    // What this test drives shows, so the comparison above is not vacuous.
    for family in [
        "smista_offers_total",
        "smista_diversions_total",
        "smista_contacts_finished_total",
        "smista_wait_seconds",
        "smista_handle_seconds",
        "smista_queue_waiting",
        "smista_service_level_ratio",
        "smista_segment_waiting",
        "smista_operators",
        "smista_budget_ceiling_cents",
        "smista_ledger_commits_total",
        "smista_rpc_duration_seconds",
        "smista_rpc_errors_total",
    ] {
        assert!(types.contains_key(family), "{family} exposed:\n{body}");
    }
}
