//! The module layering `src/lib.rs` states holds: every `crate::` reference in the library's
//! code points to a module in the same row or a row above, and no modules reach each other in a
//! circle (siblings inside a module directory included, like `inject/status.rs` and
//! `inject/workspace.rs` once did).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The rows of `src/lib.rs`'s list, top first.
const ROWS: &[&[&str]] = &[
    &["quantity", "names", "image", "yaml", "annotations", "certs"],
    &["status", "pod", "namespace"],
    &["config"],
    &["inject"],
    &["policy"],
    &["admission", "webhook"],
    &["cluster", "server", "cli"],
];

/// Module path (`inject::workspace`) -> the source of its code outside `#[cfg(test)]`.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { panic!("cannot read {}", dir.display()) };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(name);
                walk(&path, &p, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut p = prefix.to_vec();
                if !matches!(stem, "mod" | "lib" | "main") {
                    p.push(stem.to_owned());
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let code: String = text
                    .split("#[cfg(test)]")
                    .next()
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.insert(p.join("::"), code);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&support::repo_root().join("src"), &[], &mut out);
    out.remove(""); // lib.rs and main.rs: the declarations and the binary's entry point
    out
}

/// The deepest module `path` (segments after `crate::`) names.
fn resolve(path: &[&str], modules: &BTreeMap<String, String>) -> Option<String> {
    (1..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains_key(m))
}

/// Module -> the modules its code references (`crate::a::b`, `super::x`), ancestors and
/// descendants left out: a directory module re-exports its files, and they use what it shares.
fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, code) in modules {
        let parent: Vec<&str> = name.split("::").collect::<Vec<_>>().split_last().map(|(_, p)| p.to_vec()).unwrap_or_default();
        let mut targets = BTreeSet::new();
        for (marker, base) in [("crate::", Vec::new()), ("super::", parent.clone())] {
            for (i, _) in code.match_indices(marker) {
                if code[..i].ends_with("super::") || code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let rest = &code[i + marker.len()..];
                let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
                let mut path = base.clone();
                path.extend(rest[..end].split("::").filter(|s| !s.is_empty()));
                if let Some(target) = resolve(&path, modules) {
                    targets.insert(target);
                }
            }
        }
        let related = |t: &String| t == name || t.starts_with(&format!("{name}::")) || name.starts_with(&format!("{t}::"));
        out.insert(name.clone(), targets.into_iter().filter(|t| !related(t)).collect());
    }
    out
}

fn row(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or(module);
    ROWS.iter().position(|r| r.contains(&top))
}

#[test]
fn every_reference_points_up_or_sideways() {
    let modules = modules();
    let mut wrong = Vec::new();
    for (from, targets) in edges(&modules) {
        let Some(r) = row(&from) else {
            wrong.push(format!("{from} is in no row of src/lib.rs's layering: add it there and to ROWS"));
            continue;
        };
        for t in targets {
            if row(&t).is_some_and(|tr| tr > r) {
                wrong.push(format!("{from} (row {}) uses {t} (row {}), a row below it", r + 1, row(&t).map_or(0, |x| x + 1)));
            }
        }
    }
    assert!(wrong.is_empty(), "the layering in src/lib.rs does not hold:\n  {}", wrong.join("\n  "));
}

#[test]
fn no_modules_depend_on_each_other_in_a_circle() {
    let modules = modules();
    let graph = edges(&modules);
    // Depth-first search; a grey node met again closes a circle.
    fn visit<'a>(
        n: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|s| *s == n).unwrap_or(0);
                let mut c: Vec<String> = stack[from..].iter().map(|s| s.to_string()).collect();
                c.push(n.to_owned());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n, 1);
        stack.push(n);
        for t in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(t, g, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n, 2);
        None
    }
    // Two views: every file on its own (siblings such as `inject::status` and
    // `inject::workspace`), and every top-level module with all its files together.
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_owned();
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in &graph {
        let set = tops.entry(top(from)).or_default();
        set.extend(targets.iter().map(|t| top(t)).filter(|t| *t != top(from)));
    }
    for g in [&graph, &tops] {
        let mut state = BTreeMap::new();
        for n in g.keys() {
            if let Some(circle) = visit(n, g, &mut state, &mut Vec::new()) {
                panic!("modules depend on each other in a circle: {}", circle.join(" -> "));
            }
        }
    }
    // The check sees references at all: the decision uses the pod decoder and the status record.
    assert!(graph.get("inject::workspace").is_some_and(|t| t.contains("pod") && t.contains("status")), "{graph:?}");
}
