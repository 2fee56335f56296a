//! The crate's layering, checked on its own sources (ARCHITECTURE.md,
//! "api"): its modules import each other without circles, and only the
//! HTTP edge (routes, GraphQL, the proxy's pod routes, the web assets and
//! the error's JSON shape) uses the HTTP server's types.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that serve HTTP.
const HTTP_EDGE: [&str; 5] = ["routes", "graphql", "proxy_routes", "web_assets", "error"];

/// What only the HTTP edge may name: a server's requests, answers, routers.
const HTTP_SERVER_TYPES: [&str; 8] =
    ["axum::extract", "axum::response", "axum::routing", "axum::middleware", "axum::Router", "axum::Json", "axum::body", "IntoResponse"];

/// Every module's code (`a::b` for `src/a/b.rs` or `src/a/b/mod.rs`), its
/// comments and unit tests left out.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let module = if prefix.is_empty() { name.clone() } else { format!("{prefix}::{name}") };
                walk(&path, &module, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match (prefix, name.as_str()) {
                    ("", "lib") => continue,
                    (p, "mod") => p.to_owned(),
                    ("", n) => n.to_owned(),
                    (p, n) => format!("{p}::{n}"),
                };
                let text = std::fs::read_to_string(&path).unwrap();
                // unit tests come last in every file
                let code = match text.find("#[cfg(test)]\nmod tests") {
                    Some(i) => &text[..i],
                    None => &text[..],
                };
                let code: String = code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
                out.insert(module, code);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "", &mut out);
    out
}

fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The module a path after `crate::` names (`a::b::C` → `a::b` when that
/// is a module, else `a`); names re-exported at the root go to their home.
fn module_of(path: &str, modules: &BTreeMap<String, String>) -> Option<String> {
    let first = ident(path);
    let root = match first {
        "AppState" | "AdminToken" => "state",
        "ApiError" => "error",
        "router" => "routes",
        other => other,
    };
    if !modules.contains_key(root) {
        return None;
    }
    let rest = &path[first.len()..];
    if let Some(next) = rest.strip_prefix("::") {
        let second = format!("{root}::{}", ident(next));
        if modules.contains_key(&second) {
            return Some(second);
        }
    }
    Some(root.to_owned())
}

/// The parts of a `{a, b::c, d::{e, f}}` group, top level only.
fn group_parts(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(group[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(group[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Module → the modules it names.
fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (module, code) in modules {
        let mut deps = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let after = &code[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let mut depth = 1;
                let end = group
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '{' => 1,
                            '}' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(group.len(), |(i, _)| i);
                deps.extend(group_parts(&group[..end]).into_iter().filter_map(|p| module_of(p, modules)));
            } else {
                deps.extend(module_of(after, modules));
            }
        }
        // `super::` in a submodule names its parent
        if let Some((parent, _)) = module.rsplit_once("::") {
            if code.contains("super::") {
                deps.insert(parent.to_owned());
            }
        }
        deps.remove(module);
        graph.insert(module.clone(), deps);
    }
    graph
}

fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let (mut seen, mut todo) = (BTreeSet::new(), vec![from.to_owned()]);
    while let Some(m) = todo.pop() {
        for d in graph.get(&m).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

/// Groups of modules that import each other, directly or around a circle.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach: BTreeMap<_, _> = graph.keys().map(|m| (m.clone(), reachable(graph, m))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (m, r) in &reach {
        if !r.contains(m) || found.iter().any(|c| c.contains(m)) {
            continue;
        }
        found.push(graph.keys().filter(|o| r.contains(*o) && reach[*o].contains(m)).cloned().collect());
    }
    found
}

#[test]
fn the_modules_import_each_other_without_circles() {
    let modules = modules();
    assert!(modules.contains_key("state") && modules.contains_key("routes::pods"), "read the crate's sources");
    let graph = imports(&modules);
    // the reader sees what it should: a few known imports
    assert!(graph["routes::pods"].contains("service"), "{:?}", graph["routes::pods"]);
    assert!(graph["state"].contains("service"), "{:?}", graph["state"]);
    let found = circles(&graph);
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> =
                c.iter().map(|m| format!("{m} -> {:?}", graph[m].iter().filter(|d| c.contains(*d)).collect::<Vec<_>>())).collect();
            edges.join("; ")
        })
        .collect();
    assert!(found.is_empty(), "modules in an import circle (move what the lower one needs down, see ARCHITECTURE.md): {shown:#?}");
}

#[test]
fn the_reader_finds_circles() {
    let modules: BTreeMap<String, String> = [
        ("a", "use crate::{b::X, c};"),
        ("b", "fn f() { crate::a::g() }"),
        ("c", "use crate::ApiError;"),
        ("error", ""),
        ("d", "use crate::d::e::Y;"),
        ("d::e", "use super::Z;"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let graph = imports(&modules);
    assert_eq!(graph["a"], ["b", "c"].into_iter().map(String::from).collect());
    assert_eq!(graph["c"], ["error"].into_iter().map(String::from).collect());
    let found = circles(&graph);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.contains(&["a", "b"].into_iter().map(String::from).collect()));
    assert!(found.contains(&["d", "d::e"].into_iter().map(String::from).collect()));
}

/// The composition root: where the services are assembled.
const STATE: &str = "state";

#[test]
fn only_the_http_edge_reaches_services_through_the_state() {
    // Services are structs given their dependencies; only what serves
    // requests (and the state itself) takes the assembled whole.
    let graph = imports(&modules());
    let mut through_state: Vec<&String> = graph
        .iter()
        .filter(|(m, deps)| deps.contains(STATE) && !HTTP_EDGE.contains(&m.split("::").next().unwrap_or_default()))
        .map(|(m, _)| m)
        .collect();
    through_state.sort();
    assert!(through_state.is_empty(), "modules outside the HTTP edge that take the whole AppState (give them their dependencies instead): {through_state:?}");
    assert!(graph["routes::pods"].contains(STATE), "the reader sees the edge's use of the state");
}

#[test]
fn only_the_http_edge_serves_http() {
    let offenders: Vec<String> = modules()
        .into_iter()
        .filter(|(m, _)| !HTTP_EDGE.contains(&m.split("::").next().unwrap_or_default()))
        .flat_map(|(m, code)| HTTP_SERVER_TYPES.iter().filter(|t| code.contains(*t)).map(|t| format!("{m}: {t}")).collect::<Vec<_>>())
        .collect();
    assert!(offenders.is_empty(), "HTTP server types outside the HTTP edge: {offenders:#?}");
}
