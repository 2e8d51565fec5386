//! The operations assets under `deploy/` against what they promise (issue 29, item 15): the Grafana
//! dashboard reads its data source through its `datasource` variable, every panel's query filters
//! on the declared variables for the labels its metrics carry (node = `instance`, `queue`,
//! `budget`, `group`), every variable is used, money is shown in euros apart from time, a panel
//! shows the active node; every alert rule links its runbook entry with an absolute
//! `runbook_url`, the entry exists, and the Kubernetes PrometheusRule carries the same rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The labels of every metric documented in `docs/metrics.md` (its tables' first and third
/// columns).
fn documented_labels() -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for line in read("docs/metrics.md").lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `smista_x` | type | labels | meaning |" splits into 6 cells, empty at both ends.
        if cells.len() < 6 {
            continue;
        }
        let Some(name) = cells[1].strip_prefix("`smista_").and_then(|n| n.strip_suffix('`')) else { continue };
        let labels = cells[3].split('`').skip(1).step_by(2).map(str::to_owned).collect();
        out.insert(format!("smista_{name}"), labels);
    }
    assert!(out.len() > 30, "docs/metrics.md: only {} metrics found", out.len());
    out
}

/// A metric selector in a PromQL expression: the name and its `label op "value"` matchers.
#[derive(Debug)]
struct Selector {
    name: String,
    matchers: Vec<(String, String, String)>,
}

/// Every `smista_*` or `up` selector of `expr` (a minimal reading: a name, then an optional
/// `{...}` with no braces in its values, which these queries do not use).
fn selectors(expr: &str) -> Vec<Selector> {
    let b = expr.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !word(b[i]) || (i > 0 && (word(b[i - 1]) || b[i - 1] == b'$')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && word(b[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if !name.starts_with("smista_") && name != "up" {
            continue;
        }
        let mut matchers = Vec::new();
        if b.get(i) == Some(&b'{') {
            let end = expr[i..].find('}').map(|e| i + e).unwrap_or_else(|| panic!("unclosed selector in `{expr}`"));
            for m in expr[i + 1..end].split(',').map(str::trim).filter(|m| !m.is_empty()) {
                let op_at = m.find(['=', '!']).unwrap_or_else(|| panic!("bad matcher `{m}` in `{expr}`"));
                let rest = &m[op_at..];
                let op_len =
                    if rest.starts_with("=~") || rest.starts_with("!~") || rest.starts_with("!=") { 2 } else { 1 };
                let value = rest[op_len..].trim().trim_matches('"');
                matchers.push((m[..op_at].trim().to_owned(), rest[..op_len].to_owned(), value.to_owned()));
            }
            i = end + 1;
        }
        out.push(Selector { name: name.to_owned(), matchers });
    }
    out
}

/// The documented family of a series name (histograms: `_bucket`, `_count`, `_sum` removed).
fn family<'a>(name: &'a str, doc: &BTreeMap<String, BTreeSet<String>>) -> Option<&'a str> {
    if doc.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s).filter(|b| doc.contains_key(*b)))
}

/// The template variables a string refers to: `$name`, `${name}` or `[[name]]`; Grafana's own
/// (`$__rate_interval`, `$__all`...) left out.
fn variables_in(s: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (i, _) in s.match_indices('$') {
        let rest = &s[i + 1..];
        let name: String = match rest.strip_prefix('{') {
            Some(r) => r.chars().take_while(|c| ident(*c)).collect(),
            None => rest.chars().take_while(|c| ident(*c)).collect(),
        };
        if !name.is_empty() && !name.starts_with("__") {
            out.insert(name);
        }
    }
    for part in s.split("[[").skip(1) {
        if let Some((name, _)) = part.split_once("]]") {
            out.insert(name.split(':').next().unwrap_or(name).to_owned());
        }
    }
    out
}

/// Every `"datasource"` object in `v`, with where it was found.
fn datasources<'a>(v: &'a Value, at: &str, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let here = format!("{at}/{k}");
                if k == "datasource" {
                    out.push((here.clone(), x));
                }
                datasources(x, &here, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                datasources(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The labels that have a dashboard variable of the same name, which every selector of a metric
/// carrying the label must filter on (`instance`: every metric, it is the node).
const FILTERED: [&str; 3] = ["queue", "budget", "group"];

#[test]
fn the_dashboard_reads_its_data_source_and_variables_everywhere() {
    let doc = documented_labels();
    let dash: Value = serde_json::from_str(&read("deploy/grafana/dashboards/smista.json")).expect("dashboard JSON");
    let mut problems = Vec::new();

    // The variables: a data source variable of type prometheus, and one per filtered label.
    let vars = dash["templating"]["list"].as_array().expect("templating.list");
    let declared: BTreeSet<String> = vars.iter().map(|v| s(v, "name").to_owned()).collect();
    match vars.iter().find(|v| s(v, "type") == "datasource") {
        Some(ds) if (s(ds, "name"), s(ds, "query")) == ("datasource", "prometheus") => {}
        Some(ds) => problems.push(format!("the data source variable: {ds}, want name datasource, query prometheus")),
        None => problems.push("no data source variable (type datasource)".into()),
    }
    for want in ["instance"].iter().chain(FILTERED.iter()) {
        if !declared.contains(*want) {
            problems.push(format!("no `{want}` variable"));
        }
    }

    // Every data source reference, in panels, targets and variables alike, is the variable.
    let mut refs = Vec::new();
    datasources(&dash, "", &mut refs);
    for (at, r) in &refs {
        if s(r, "uid") != "${datasource}" || s(r, "type") != "prometheus" {
            problems.push(format!("{at}: data source {r}, not {{type: prometheus, uid: ${{datasource}}}}"));
        }
    }

    // What refers to what: variables used by the panels and by the other variables.
    let mut used = BTreeSet::new();
    for v in vars {
        let name = s(v, "name");
        let query = v.get("query").map(|q| q.get("query").and_then(Value::as_str).or(q.as_str()).unwrap_or_default());
        let mut text = query.unwrap_or_default().to_owned();
        if let Some(d) = v.get("datasource") {
            text.push_str(&d.to_string());
        }
        for u in variables_in(&text) {
            if u == name {
                problems.push(format!("variable `{name}` refers to itself"));
            }
            used.insert(u);
        }
        if s(v, "type") == "query" {
            // A variable lists its own label's values: it filters on the others only.
            let at = format!("variable {name}");
            check_expr(&at, query.unwrap_or_default(), Some(name), &doc, &declared, &mut problems);
        }
    }

    let panels = dash["panels"].as_array().expect("panels");
    let mut reads_leader = false;
    for p in panels {
        let title = s(p, "title");
        let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or_default();
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel `{title}`: no query"));
        }
        if p.get("datasource").is_none() {
            problems.push(format!("panel `{title}`: no data source"));
        }
        let mut money = 0;
        for t in targets {
            if t.get("datasource").is_none() {
                problems.push(format!("panel `{title}` query {}: no data source", s(t, "refId")));
            }
            let expr = s(t, "expr");
            used.extend(variables_in(expr));
            used.extend(variables_in(&p["datasource"].to_string()));
            used.extend(variables_in(&t["datasource"].to_string()));
            check_expr(&format!("panel `{title}`"), expr, None, &doc, &declared, &mut problems);
            let names: Vec<String> = selectors(expr).into_iter().map(|x| x.name).collect();
            reads_leader |= names.iter().any(|n| n == "smista_leader" || n == "smista_leader_epoch");
            // Money in euros: a query reading cents divides by 100 and reads nothing but cents.
            if names.iter().any(|n| n.ends_with("_cents")) {
                money += 1;
                if !names.iter().all(|n| n.ends_with("_cents")) {
                    problems.push(format!("panel `{title}`: `{expr}` mixes cents with other units"));
                }
                if !expr.replace(' ', "").ends_with("/100") {
                    problems.push(format!("panel `{title}`: `{expr}` shows cents, not euros (divide by 100)"));
                }
            }
        }
        if money > 0 && (money != targets.len() || unit != "currencyEUR") {
            problems.push(format!(
                "panel `{title}`: money must have a panel of its own in unit currencyEUR (unit `{unit}`, {money} of {} queries read cents)",
                targets.len()
            ));
        }
        if money == 0 && unit.starts_with("currency") {
            problems.push(format!("panel `{title}`: unit {unit} on queries that read no cents"));
        }
    }
    if !reads_leader {
        problems.push("no panel shows the active node (smista_leader)".into());
    }
    for u in &used {
        if !declared.contains(u) {
            problems.push(format!("`${u}` is used but not declared"));
        }
    }
    for d in &declared {
        if !used.contains(d) {
            problems.push(format!("variable `{d}` is declared but no panel or variable uses it"));
        }
    }
    assert!(problems.is_empty(), "deploy/grafana/dashboards/smista.json:\n  {}", problems.join("\n  "));
}

/// One query: every metric is documented (no typo), every selector filters the node by
/// `instance=~"$instance"` and each filtered label its metric carries by its variable, and every
/// variable it names is declared. `own`: the label a variable's query lists, not filtered.
fn check_expr(
    at: &str,
    expr: &str,
    own: Option<&str>,
    doc: &BTreeMap<String, BTreeSet<String>>,
    declared: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    for v in variables_in(expr) {
        if !declared.contains(&v) {
            problems.push(format!("{at}: `${v}` is not a declared variable"));
        }
    }
    for sel in selectors(expr) {
        if sel.name == "up" {
            continue; // Prometheus's own series, per scrape target: the node list itself.
        }
        let Some(fam) = family(&sel.name, doc) else {
            problems.push(format!("{at}: `{}` is not a metric docs/metrics.md documents", sel.name));
            continue;
        };
        let mut need = vec!["instance"];
        need.extend(FILTERED.iter().filter(|l| doc[fam].contains(**l)));
        for label in need.into_iter().filter(|l| Some(*l) != own) {
            let want = (label.to_owned(), "=~".to_owned(), format!("${label}"));
            if !sel.matchers.contains(&want) {
                problems.push(format!("{at}: `{}` in `{expr}` is not filtered by {label}=~\"${label}\"", sel.name));
            }
        }
    }
}

/// The workspace's `repository` address (Cargo.toml), the base of every runbook link.
fn repository() -> String {
    read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("repository = \""))
        .and_then(|r| r.strip_suffix('"'))
        .expect("repository in Cargo.toml")
        .to_owned()
}

/// GitHub's anchor of a heading: lower case, blanks to `-`, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_links_its_runbook_entry_by_runbook_url() {
    let rules = read("deploy/prometheus/alerts.yml");
    let book = read("deploy/RUNBOOK.md");
    let anchors: BTreeSet<String> =
        book.lines().filter_map(|l| l.strip_prefix('#')).map(|h| anchor(h.trim_start_matches('#'))).collect();
    let base = format!("{}/blob/main/deploy/RUNBOOK.md#", repository());
    // Each rule's lines, from its `- alert:` to the next rule or group (a minimal YAML reading:
    // the file's rules are a flat list of mappings).
    let mut alerts: Vec<(String, Vec<&str>)> = Vec::new();
    for line in rules.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            alerts.push((name.trim().to_owned(), Vec::new()));
        } else if t.starts_with("- ") && !t.starts_with("- alert:") && line.len() - t.len() <= 4 {
            alerts.push((String::new(), Vec::new())); // a new group: no rule's lines
        } else if let Some((_, body)) = alerts.last_mut() {
            body.push(t);
        }
    }
    alerts.retain(|(n, _)| !n.is_empty());
    assert!(alerts.len() >= 20, "only {} alerts read from alerts.yml", alerts.len());
    let mut problems = Vec::new();
    for (name, body) in &alerts {
        let want = format!("{base}{}", name.to_lowercase());
        let urls: Vec<&str> =
            body.iter().filter_map(|l| l.strip_prefix("runbook_url:")).map(|u| u.trim().trim_matches('"')).collect();
        if urls != [want.as_str()] {
            problems.push(format!("{name}: runbook_url {urls:?}, want [{want}]"));
        }
        if body.iter().any(|l| l.starts_with("runbook:")) {
            problems.push(format!("{name}: a `runbook:` annotation (the convention is runbook_url)"));
        }
        if !anchors.contains(&name.to_lowercase()) {
            problems.push(format!("{name}: no `### {name}` entry in deploy/RUNBOOK.md"));
        }
    }
    assert!(problems.is_empty(), "deploy/prometheus/alerts.yml:\n  {}", problems.join("\n  "));

    // The Prometheus Operator's copy is generated from it (deploy/kubernetes/gen-prometheusrule).
    let generated = read("deploy/kubernetes/prometheusrule.yaml");
    let spec = generated.split_once("\nspec:\n").map(|(_, s)| s).expect("spec: in prometheusrule.yaml");
    let source = &rules[rules.find("\ngroups:").expect("groups:") + 1..];
    let indented: String =
        source.lines().map(|l| if l.is_empty() { "\n".to_owned() } else { format!("  {l}\n") }).collect();
    assert!(
        spec == indented,
        "deploy/kubernetes/prometheusrule.yaml is out of date: run sh deploy/kubernetes/gen-prometheusrule"
    );
}

#[test]
fn the_minimal_readers_read_what_they_should() {
    let sel =
        selectors(r#"sum by (le) (rate(smista_wait_seconds_bucket{instance=~"$instance", queue=~"$queue"}[5m])) / up"#);
    assert_eq!(sel.len(), 2);
    assert_eq!(sel[0].name, "smista_wait_seconds_bucket");
    assert_eq!(sel[0].matchers[1], ("queue".to_owned(), "=~".to_owned(), "$queue".to_owned()));
    assert_eq!(sel[1].name, "up");
    assert!(selectors("sum by (budget) (x)").is_empty());
    let vars = variables_in(r#"${datasource} $queue [[budget]] $__rate_interval"#);
    assert_eq!(vars.into_iter().collect::<Vec<_>>(), ["budget", "datasource", "queue"]);
    assert_eq!(anchor(" SmistaDown"), "smistadown");
    assert_eq!(anchor("Trust boundary"), "trust-boundary");
}
