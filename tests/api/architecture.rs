//! The module structure of `src/`, checked: layers only point down and no two files
//! import each other, directly or around a loop.
//!
//! The test reads every file under `src/` (the library crate; `main.rs` is a separate
//! crate that sees the library from outside), collects the `crate::`, `super::` and
//! `self::` paths it names (in `use` items, `{a, b}` groups included, and inline in code),
//! resolves each to the file of the module it names, and then fails on
//! - an edge from a file to a file of a higher layer in [`LAYERS`] (naming both files and
//!   the path that makes the edge), and
//! - any strongly connected component of more than one file (an import cycle), listing its
//!   files.
//!
//! Why a test and not a Cargo workspace whose crate boundaries make a back edge
//! impossible: the machine that builds this has two cores, and one crate compiles and
//! links once; a workspace of five or six crates adds a link and a metadata step per
//! crate to every test run, and moves `pub(crate)` items to `pub` across crate lines. The
//! test costs no build time and names the offending edge, which a compiler error about a
//! missing crate dependency does not.
//!
//! `cargo test --test integration architecture -- --nocapture` prints the figures
//! (files, edges, cycles).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Layers, lowest first, each with the module paths it holds. A file belongs to the
/// layer of the longest listed path that is a prefix of its module path (so
/// `saga::plan` is domain while `saga` is application); a file may import its own
/// layer and the layers below. Every module of the crate must be listed.
const LAYERS: &[(&str, &[&str])] = &[
    // Pure business rules: no I/O, no tonic, sqlx or serde_json. The saga's state
    // machine (`saga::plan`) is domain too: it decides, the engine acts.
    ("domain", &["domain", "saga::plan"]),
    // What every layer may use: configuration, the error type and its mapping,
    // shutdown, telemetry, the metric recorders, generated protos, transport helpers.
    (
        "kernel",
        &[
            "config",
            "error",
            "shutdown",
            "telemetry",
            "metrics",
            "proto",
            "transport",
            "wire",
        ],
    ),
    // Storage ports and their backends (chosen in startup), the bus, health of the
    // backends, the key store of crypto-shredding.
    (
        "storage",
        &["db", "redis_conn", "store", "bus", "health", "privacy"],
    ),
    // Commands, queries, the saga engine, projections, the relay, identity.
    ("application", &["app", "projections", "relay", "saga", "auth"]),
    // gRPC, REST, the /metrics endpoint, the request layers, the accept loop, the sibling stubs.
    (
        "transports",
        &[
            "grpc",
            "rest",
            "metrics::endpoint",
            "auth::layer",
            "ratelimit",
            "bounds",
            "serve",
            "stubs",
        ],
    ),
    // Wiring: builds every backend and service, runs them; the benchmark driver.
    ("startup", &["startup", "bench"]),
];

/// Edges the layer rule and the cycle rule let through for now: `(from, to, reason)`,
/// files relative to `src/`. The list may only shrink: an entry that no longer
/// matches an edge fails the test, so it is removed when its edge goes.
const ALLOWED: &[(&str, &str, &str)] = &[];

fn main_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// A source file of the library and the module path it defines (`store::cart::redis`).
struct SourceFile {
    rel: String,
    module: Vec<String>,
    text: String,
}

fn load_files() -> Vec<SourceFile> {
    let root = main_src();
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(&root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            if rel == "main.rs" {
                continue;
            }
            let mut module: Vec<String> = rel
                .trim_end_matches(".rs")
                .split('/')
                .map(str::to_owned)
                .collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            let text = fs::read_to_string(&path).expect("read source");
            out.push(SourceFile { rel, module, text });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out
}

/// The source with comments, string and char literals blanked out, so that a path in a
/// doc comment or a string is not read as an import.
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            let mut j = if c[i] == 'b' { i + 2 } else { i + 1 };
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            let mut j = if c[i] == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
            out.push_str("\"\"");
        } else if c[i] == '"' {
            i += 1;
            while c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' {
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
            out.push(' ');
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn tokens(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_alphabetic() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(c[start..i].iter().collect());
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push("::".to_owned());
            i += 2;
        } else if c[i].is_whitespace() {
            i += 1;
        } else {
            out.push(c[i].to_string());
            i += 1;
        }
    }
    out
}

/// Parses a path tree starting at `toks[*i]` (after a leading `crate`/`super`/`self`
/// has been consumed into `prefix`): `a::b::C`, `a::{b, c::{d, e}}`, `a::*`, `a as b`.
fn path_tree(toks: &[String], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        if toks.get(*i).map(String::as_str) != Some("::") {
            out.push(path);
            return;
        }
        *i += 1;
        match toks.get(*i).map(String::as_str) {
            Some("{") => {
                *i += 1;
                loop {
                    match toks.get(*i).map(String::as_str) {
                        Some("}") => {
                            *i += 1;
                            return;
                        }
                        Some(",") => *i += 1,
                        Some(seg) if is_ident(seg) => {
                            let mut sub = path.clone();
                            if seg != "self" {
                                sub.push(seg.to_owned());
                            }
                            *i += 1;
                            path_tree(toks, i, sub, out);
                            if toks.get(*i).map(String::as_str) == Some("as") {
                                *i += 2;
                            }
                        }
                        Some("*") => {
                            out.push(path.clone());
                            *i += 1;
                        }
                        _ => return,
                    }
                }
            }
            Some("*") => {
                *i += 1;
                out.push(path);
                return;
            }
            Some(seg) if is_ident(seg) => {
                path.push(seg.to_owned());
                *i += 1;
            }
            _ => {
                out.push(path);
                return;
            }
        }
    }
}

fn is_ident(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Every module path named in a file, resolved against the file's (inline) module: paths
/// that start with `crate`, `super` or `self`, and bare paths whose first segment is a
/// child module of the file or a module the file imported by name (`use crate::store;`
/// then `store::cart::CartStore`).
///
/// Each path comes with whether it is named in a `pub use` item (a re-export).
fn named_paths(file: &SourceFile, modules: &BTreeSet<Vec<String>>) -> Vec<(Vec<String>, bool)> {
    let toks = tokens(&strip(&file.text));
    let mut out = Vec::new();
    // Names that stand for a module in this file: its child modules, then imported ones.
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for w in toks.windows(3) {
        if w[0] == "mod" && (w[2] == ";" || w[2] == "{") {
            let mut m = file.module.clone();
            m.push(w[1].clone());
            aliases.insert(w[1].clone(), m);
        }
    }
    for pass in 0..2 {
        // Inline `mod name { .. }` blocks: (name, brace depth at which it closes).
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut i = 0;
        // Inside a `pub use .. ;` item.
        let mut reexport = false;
        while i < toks.len() {
            let t = toks[i].as_str();
            if t == "use" && i > 0 && (toks[i - 1] == "pub" || toks[i - 1] == ")") {
                reexport = true;
            } else if t == ";" {
                reexport = false;
            }
            let after_sep = i > 0 && (toks[i - 1] == "::" || toks[i - 1] == "$" || toks[i - 1] == ".");
            match t {
                "{" => {
                    depth += 1;
                    i += 1;
                }
                "}" => {
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                    depth = depth.saturating_sub(1);
                    i += 1;
                }
                "mod" if toks.get(i + 2).map(String::as_str) == Some("{") => {
                    inline.push((toks[i + 1].clone(), depth + 1));
                    i += 2;
                }
                "crate" | "super" | "self"
                    if !after_sep && toks.get(i + 1).map(String::as_str) == Some("::") =>
                {
                    let mut here = file.module.clone();
                    here.extend(inline.iter().map(|(n, _)| n.clone()));
                    let mut base = match t {
                        "crate" => Vec::new(),
                        "self" => here.clone(),
                        _ => {
                            let mut b = here.clone();
                            b.pop();
                            b
                        }
                    };
                    i += 1;
                    // `super::super::x`
                    while toks.get(i + 1).map(String::as_str) == Some("super") {
                        base.pop();
                        i += 2;
                    }
                    let mut found = Vec::new();
                    path_tree(&toks, &mut i, base, &mut found);
                    for p in found {
                        if pass == 0 && modules.contains(&p) && !p.is_empty() {
                            aliases.insert(p.last().expect("non-empty").clone(), p.clone());
                        }
                        if pass == 1 {
                            out.push((p, reexport));
                        }
                    }
                }
                _ if pass == 1
                    && !after_sep
                    && toks.get(i + 1).map(String::as_str) == Some("::")
                    && aliases.contains_key(t) =>
                {
                    let base = aliases[t].clone();
                    i += 1;
                    let mut found = Vec::new();
                    path_tree(&toks, &mut i, base, &mut found);
                    out.extend(found.into_iter().map(|p| (p, reexport)));
                }
                _ => i += 1,
            }
        }
    }
    out
}

/// The file-level import graph: file -> (file, first path that makes the edge).
struct Graph {
    files: Vec<String>,
    edges: BTreeMap<String, BTreeMap<String, String>>,
}

fn graph() -> Graph {
    let files = load_files();
    let by_module: BTreeMap<Vec<String>, String> =
        files.iter().map(|f| (f.module.clone(), f.rel.clone())).collect();
    let modules: BTreeSet<Vec<String>> = by_module.keys().cloned().collect();
    let named: Vec<Vec<(Vec<String>, bool)>> = files.iter().map(|f| named_paths(f, &modules)).collect();
    // What each file re-exports: the name a `pub use` gives the item -> the item's path.
    let mut reexports: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (file, paths) in files.iter().zip(&named) {
        for (path, reexport) in paths {
            if let Some(name) = path.last().filter(|_| *reexport && !modules.contains(path)) {
                reexports
                    .entry(file.rel.clone())
                    .or_default()
                    .insert(name.clone(), path.clone());
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (file, paths) in files.iter().zip(named) {
        let entry = edges.entry(file.rel.clone()).or_default();
        let own_layer = layer_of(&file.module);
        for (path, reexport) in paths {
            let Some((n, target)) = resolve(&path, &by_module, &reexports) else {
                continue;
            };
            // A parent re-exporting its child's item is the module's facade: the parent's
            // own code does not depend on the child through it. Not so when the child sits
            // in a higher layer: the re-export then hands the parent's users an upward item.
            let facade = reexport
                && n > file.module.len()
                && path.starts_with(&file.module)
                && layer_of(&module_of(&target)) <= own_layer;
            if target == file.rel || facade {
                continue;
            }
            entry
                .entry(target)
                .or_insert_with(|| format!("crate::{}", path.join("::")));
        }
    }
    Graph {
        files: files.into_iter().map(|f| f.rel).collect(),
        edges,
    }
}

/// The file that defines what `path` names, and how many segments of `path` name modules.
/// A path through a re-export (`crate::auth::AuthLayer` where `auth.rs` has
/// `pub use self::layer::AuthLayer`) resolves to the file that defines the item, so that a
/// re-export cannot hide an edge.
fn resolve(
    path: &[String],
    by_module: &BTreeMap<Vec<String>, String>,
    reexports: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
) -> Option<(usize, String)> {
    let mut path = path.to_vec();
    let mut first: Option<usize> = None;
    // Re-exports of re-exports, a few deep at most; a loop of them stops here too.
    for _ in 0..8 {
        let n = (1..=path.len())
            .rev()
            .find(|n| by_module.contains_key(&path[..*n]))?;
        let n_first = *first.get_or_insert(n);
        let target = by_module[&path[..n]].clone();
        let Some(item) = path.get(n) else {
            return Some((n_first, target));
        };
        match reexports.get(&target).and_then(|names| names.get(item)) {
            Some(real) if real.as_slice() != &path[..=n] => {
                let mut next = real.clone();
                next.extend_from_slice(&path[n + 1..]);
                path = next;
            }
            _ => return Some((n_first, target)),
        }
    }
    None
}

/// Tarjan's strongly connected components, those of more than one file.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        on_stack: BTreeSet<&'a str>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let succs: Vec<&'a str> =
            s.g.edges
                .get(v)
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
        for w in succs {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().expect("on stack");
                s.on_stack.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on_stack: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for f in &g.files {
        if !s.index.contains_key(f.as_str()) {
            visit(&mut s, f);
        }
    }
    s.out.sort_by_key(|c| std::cmp::Reverse(c.len()));
    s.out
}

#[test]
fn module_graph_figures() {
    let g = graph();
    let n_edges: usize = g.edges.values().map(BTreeMap::len).sum();
    let cyc = cycles(&g);
    println!(
        "files: {}, edges: {}, cycles: {}",
        g.files.len(),
        n_edges,
        cyc.len()
    );
    for c in &cyc {
        println!("cycle of {} files: {}", c.len(), c.join(" "));
    }
    if std::env::var_os("ARCH_EDGES").is_some() {
        for (from, to) in &g.edges {
            for (t, why) in to {
                println!("{from} -> {t}   ({why})");
            }
        }
    }
}

/// The layer index of `module` (a file's module path), or None when unlisted.
fn layer_of(module: &[String]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (index, (_, prefixes)) in LAYERS.iter().enumerate() {
        for prefix in *prefixes {
            let parts: Vec<&str> = prefix.split("::").collect();
            let matches = parts.len() <= module.len() && parts.iter().zip(module).all(|(p, m)| p == m);
            if matches && best.is_none_or(|(len, _)| parts.len() > len) {
                best = Some((parts.len(), index));
            }
        }
    }
    best.map(|(_, index)| index)
}

fn module_of(rel: &str) -> Vec<String> {
    let mut module: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if module.last().is_some_and(|m| m == "mod" || m == "lib") {
        module.pop();
    }
    module
}

fn allowed(from: &str, to: &str) -> bool {
    ALLOWED.iter().any(|(f, t, _)| *f == from && *t == to)
}

#[test]
fn every_file_is_in_a_layer() {
    let g = graph();
    let unlisted: Vec<&String> = g
        .files
        .iter()
        .filter(|f| *f != "lib.rs" && layer_of(&module_of(f)).is_none())
        .collect();
    assert!(unlisted.is_empty(), "files in no layer of LAYERS: {unlisted:?}");
}

#[test]
fn layers_only_point_down() {
    let g = graph();
    let mut upward = Vec::new();
    for (from, targets) in &g.edges {
        let Some(from_layer) = layer_of(&module_of(from)) else {
            continue;
        };
        for (to, path) in targets {
            let Some(to_layer) = layer_of(&module_of(to)) else {
                continue;
            };
            if to_layer > from_layer && !allowed(from, to) {
                upward.push(format!(
                    "{from} ({}) -> {to} ({}) through `{path}`",
                    LAYERS[from_layer].0, LAYERS[to_layer].0
                ));
            }
        }
    }
    assert!(upward.is_empty(), "upward edges:\n  {}", upward.join("\n  "));
}

#[test]
fn no_import_cycles() {
    let mut g = graph();
    for (from, to, _) in ALLOWED {
        if let Some(targets) = g.edges.get_mut(*from) {
            targets.remove(*to);
        }
    }
    let found: Vec<String> = cycles(&g)
        .iter()
        .map(|files| {
            let inside: BTreeSet<&String> = files.iter().collect();
            let edges: Vec<String> = files
                .iter()
                .flat_map(|from| {
                    g.edges[from]
                        .iter()
                        .filter(|(to, _)| inside.contains(to))
                        .map(move |(to, path)| format!("{from} -> {to} (`{path}`)"))
                })
                .collect();
            format!("{} files: {}", files.len(), edges.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "import cycles:\n  {}", found.join("\n  "));
}

#[test]
fn every_allowed_edge_still_exists() {
    let g = graph();
    let stale: Vec<_> = ALLOWED
        .iter()
        .filter(|(from, to, _)| !g.edges.get(*from).is_some_and(|t| t.contains_key(*to)))
        .map(|(from, to, _)| format!("{from} -> {to}"))
        .collect();
    assert!(
        stale.is_empty(),
        "ALLOWED lists edges that are gone (remove them): {stale:?}"
    );
}

#[test]
fn a_path_through_a_reexport_resolves_to_the_file_that_defines_the_item() {
    let path = |p: &str| p.split("::").map(str::to_owned).collect::<Vec<_>>();
    let by_module: BTreeMap<Vec<String>, String> = [
        ("auth", "auth.rs"),
        ("auth::layer", "auth/layer.rs"),
        ("startup", "startup.rs"),
    ]
    .into_iter()
    .map(|(m, f)| (path(m), f.to_owned()))
    .collect();
    // auth.rs: `pub use self::layer::AuthLayer;`
    let reexports = BTreeMap::from([(
        "auth.rs".to_owned(),
        BTreeMap::from([("AuthLayer".to_owned(), path("auth::layer::AuthLayer"))]),
    )]);
    assert_eq!(
        resolve(&path("auth::AuthLayer"), &by_module, &reexports),
        Some((1, "auth/layer.rs".to_owned())),
        "the re-export is followed to the defining file"
    );
    assert_eq!(
        resolve(&path("auth::Principal"), &by_module, &reexports),
        Some((1, "auth.rs".to_owned())),
        "an item the module defines itself stays there"
    );
    assert_eq!(
        resolve(&path("auth::layer::AuthLayer::new"), &by_module, &reexports),
        Some((2, "auth/layer.rs".to_owned()))
    );
}
