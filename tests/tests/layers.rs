//! The house rules of the source tree, read from the files themselves (ARCHITECTURE.md, "The
//! layer rule"):
//!
//! - no import cycle between the top-level modules of any crate (a top-level module is
//!   `src/x.rs` or `src/x/`; it imports `y` when any of its files names `crate::y`, or `super::y`
//!   from a top-level file);
//! - in `smista-server`, every import runs down the layers listed in [`SERVER_LAYERS`];
//! - no dependency cycle between the workspace's crates, dev-dependencies included, and the
//!   load generator (`benches`) does not depend on the server;
//! - no source file over 1,000 lines.
//!
//! `SMISTA_LAYERS_ROOT=/path/to/another/checkout cargo test -p smista-tests --test layers --
//! --nocapture` prints the same report for another tree (how the figures before the layering
//! were taken).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `smista-server`'s layers, lowest first: a module imports modules of its own layer or below.
const SERVER_LAYERS: &[&[&str]] = &[
    &["config", "clock", "logfmt", "datadir", "metrics"],
    &["wire"],
    &["edge"],
    &["app"],
    &["service", "tasks"],
    &["node"],
];

/// Longest source file, in lines.
const MAX_LINES: usize = 1_000;

fn root() -> PathBuf {
    match std::env::var_os("SMISTA_LAYERS_ROOT") {
        Some(r) => PathBuf::from(r),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source roots of the workspace's crates: `(crate folder, its src/)`.
fn crate_roots(root: &Path) -> Vec<(String, PathBuf)> {
    let mut roots = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("crates")) {
        for e in entries.flatten() {
            let src = e.path().join("src");
            if src.is_dir() {
                roots.push((e.file_name().to_string_lossy().into_owned(), src));
            }
        }
    }
    for extra in ["benches", "tests"] {
        if root.join(extra).join("src").is_dir() {
            roots.push((extra.to_owned(), root.join(extra).join("src")));
        }
    }
    roots.sort();
    roots
}

/// The text with `//` comments (doc comments included) removed, line by line.
fn code_of(text: &str) -> String {
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// The first path segment of every `prefix::` path in `code`, `prefix::{a, b::c}` groups included.
fn heads_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        // `a::crate::x` or `foo_crate::x` is not ours.
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level entries of the group: split on commas at brace depth 0.
            let mut depth = 0usize;
            let mut entry = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(entry.trim()));
                        entry.clear();
                        continue;
                    }
                    _ => {}
                }
                entry.push(c);
            }
            out.insert(ident(entry.trim()));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// A crate's top-level modules and what each imports among them.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src).expect("under src");
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts[0] == "bin" {
            continue;
        }
        let (top, depth) = if parts.len() == 1 {
            let name = parts[0].trim_end_matches(".rs").to_owned();
            if name == "lib" || name == "main" {
                continue;
            }
            (name, 1)
        } else {
            (parts[0].clone(), if parts.last().is_some_and(|p| p == "mod.rs") { parts.len() - 1 } else { parts.len() })
        };
        let code = code_of(&std::fs::read_to_string(f).expect("read a source file"));
        let mut refs = heads_after(&code, "crate::");
        if depth == 1 {
            refs.extend(heads_after(&code, "super::"));
        }
        graph.entry(top).or_default().extend(refs);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (m, refs) in &mut graph {
        refs.retain(|r| modules.contains(r) && r != m);
    }
    graph
}

/// The strongly connected components of more than one node (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, n: &'a str) {
        let i = t.index.len();
        t.index.insert(n, i);
        t.low.insert(n, i);
        t.stack.push(n);
        t.on.insert(n);
        let g = t.g;
        for w in g.get(n).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let ln = t.low.get_mut(n).expect("visited");
                *ln = (*ln).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let ln = t.low.get_mut(n).expect("visited");
                *ln = (*ln).min(iw);
            }
        }
        if t.low[n] == t.index[n] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == n {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for n in graph.keys() {
        if !t.index.contains_key(n.as_str()) {
            visit(&mut t, n);
        }
    }
    t.out
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let mut found = Vec::new();
    for (krate, src) in crate_roots(&root()) {
        let c = cycles(&module_graph(&src));
        let modules: usize = c.iter().map(Vec::len).sum();
        println!("{krate}: {} cycle(s), {modules} module(s) in them {c:?}", c.len());
        found.extend(c.into_iter().map(|c| format!("{krate}: {}", c.join(" <-> "))));
    }
    assert!(found.is_empty(), "import cycles between top-level modules:\n{}", found.join("\n"));
}

#[test]
fn the_server_imports_only_down_its_layers() {
    let src = root().join("crates/smista-server/src");
    if !src.join("node").is_dir() {
        println!("no layered smista-server under {}", src.display());
        return;
    }
    let layer_of = |m: &str| SERVER_LAYERS.iter().position(|l| l.contains(&m));
    let graph = module_graph(&src);
    let mut wrong = Vec::new();
    for (m, refs) in &graph {
        let Some(lm) = layer_of(m) else {
            wrong.push(format!("`{m}` is in no layer: add it to SERVER_LAYERS and ARCHITECTURE.md"));
            continue;
        };
        for r in refs {
            if layer_of(r).is_some_and(|lr| lr > lm) {
                wrong.push(format!("`{m}` imports `{r}`, a layer above it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The `smista-*` dependencies (normal, dev and build) a Cargo.toml names.
fn workspace_deps(manifest: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_deps = l.contains("dependencies");
            continue;
        }
        if in_deps && l.starts_with("smista") {
            let name: String = l.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn no_dependency_cycle_between_crates_and_the_load_generator_needs_no_server() {
    let root = root();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut manifests: Vec<PathBuf> =
        crate_roots(&root).into_iter().map(|(_, src)| src.join("../Cargo.toml")).collect();
    manifests.retain(|m| m.exists());
    for m in manifests {
        let text = std::fs::read_to_string(&m).expect("a manifest");
        let name = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("name = \""))
            .and_then(|n| n.split('"').next())
            .expect("a package name")
            .to_owned();
        graph.insert(name, workspace_deps(&text));
    }
    let c = cycles(&graph);
    println!("crates: {graph:?}\ncycles: {c:?}");
    assert!(c.is_empty(), "dependency cycles between crates (dev-dependencies count): {c:?}");
    let benches = graph.get("smista-benches").expect("the benches crate");
    assert!(!benches.contains("smista-server"), "smista-benches depends on smista-server: {benches:?}");
}

#[test]
fn no_source_file_over_a_thousand_lines() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["crates", "benches", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.strip_prefix(&root).unwrap_or(f).display()))
        })
        .collect();
    long.sort();
    println!("{} source files; over {MAX_LINES} lines: {long:?}", files.len());
    assert!(long.is_empty(), "source files over {MAX_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn the_reader_finds_grouped_and_nested_imports() {
    let code = "use crate::{a, b::{c, d}, e as f};\nuse crate::g::h;\nlet x = foo_crate::z; super::y();";
    let heads = heads_after(code, "crate::");
    assert_eq!(heads, ["a", "b", "e", "g"].into_iter().map(String::from).collect());
    assert_eq!(heads_after(code, "super::"), ["y"].into_iter().map(String::from).collect());
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), ["b".to_owned()].into()),
        ("b".to_owned(), ["a".to_owned()].into()),
        ("c".to_owned(), ["a".to_owned()].into()),
    ]
    .into();
    assert_eq!(cycles(&g), vec![vec!["a".to_owned(), "b".to_owned()]]);
}
