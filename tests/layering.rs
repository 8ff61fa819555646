//! The layers hold: the crates depend one way (protocol, core, SFU, server, load tools), and the module import graph inside every crate has no cycles.
//!
//! The compiler refuses an upward import between crates; this test computes the graph of `use`
//! paths between the modules of each crate (a file is a module) and fails on any cycle, and on
//! the edges that once made cycles. `docs/architecture.md` describes the layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A crate's source directory and the name its modules are reached by (`crate`).
const CRATES: [&str; 6] = [
    "src",
    "signaling/src",
    "crates/core/src",
    "crates/sfu/src",
    "crates/load/src",
    "crates/store/src",
];

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `a::b` for `src/a/b.rs` and `src/a/b/mod.rs`; `` (the crate root) for `lib.rs`/`main.rs`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments, string literals and `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in code_lines(text) {
        let code = line.split("//").next().unwrap_or("");
        let mut in_string = false;
        for c in code.chars() {
            if c == '"' {
                in_string = !in_string;
            } else if !in_string {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// Every path the code names from `crate::`, `super::` or `self::`, as absolute module paths
/// (items included; resolved against the modules that exist later). `use a::{b, c::d}` expands.
fn paths_named(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            // Inside a longer path (`super::super::`, `a::crate_x`) it was read with its start.
            let before = &bytes[..at];
            if before
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b':')
            {
                continue;
            }
            // The base module: the crate root, this module, or its parent (repeated `super::`).
            let mut base: Vec<String> = match start {
                "crate::" => Vec::new(),
                _ => here.to_vec(),
            };
            let mut rest = &code[at..];
            loop {
                if let Some(r) = rest.strip_prefix("crate::") {
                    rest = r;
                } else if let Some(r) = rest.strip_prefix("self::") {
                    // `self` in a file module is the module itself.
                    rest = r;
                } else if let Some(r) = rest.strip_prefix("super::") {
                    // `super` of module a::b (a/b.rs or a/b/mod.rs) is a.
                    base.pop();
                    rest = r;
                } else {
                    break;
                }
            }
            for tail in expand(rest) {
                let mut path = base.clone();
                path.extend(tail);
                found.push(path);
            }
        }
    }
    found
}

/// `a::b::C` -> [[a, b, C]]; `{a::B, c}` -> [[a, B], [c]] (one level of braces).
fn expand(rest: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> Vec<String> {
        let mut segs = Vec::new();
        for seg in s.split("::") {
            let name: String = seg
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                break;
            }
            let whole = name.len() == seg.trim().len();
            segs.push(name);
            if !whole {
                break;
            }
        }
        segs
    };
    if let Some(inner) = rest.strip_prefix('{') {
        let end = inner.find('}').unwrap_or(inner.len());
        inner[..end]
            .split(',')
            .map(ident)
            .filter(|p| !p.is_empty())
            .collect()
    } else {
        vec![ident(rest)]
    }
}

/// The import graph of one crate: module -> modules it names. A module naming its own
/// descendants is containment, not an import, and is left out.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(src);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        if name.ends_with("tests.rs") {
            continue; // test-only modules
        }
        let here = module_of(src, file);
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let from = here.join("::");
        edges.entry(from.clone()).or_default();
        for path in paths_named(&code, &here) {
            // The deepest existing module the path starts with.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p))
                .unwrap_or_default();
            if target.starts_with(&here) {
                continue;
            }
            edges
                .entry(from.clone())
                .or_default()
                .insert(target.join("::"));
        }
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

fn render(edges: &BTreeMap<String, BTreeSet<String>>) -> String {
    edges
        .iter()
        .map(|(from, to)| {
            let to: Vec<&str> = to.iter().map(String::as_str).collect();
            format!(
                "  {} -> {}",
                if from.is_empty() { "crate" } else { from },
                to.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_crate_has_an_import_cycle() {
    for krate in CRATES {
        let edges = graph(&Path::new(ROOT).join(krate));
        let found = cycles(&edges);
        assert!(
            found.is_empty(),
            "{krate}: import cycles {found:?}\nthe graph:\n{}",
            render(&edges)
        );
    }
}

/// Edges that once closed cycles; each must stay gone.
#[test]
fn the_removed_edges_stay_removed() {
    let server = graph(&Path::new(ROOT).join("src"));
    // (from, to): `from` is one module (exactly), `to` a module and everything under it.
    let forbidden = [
        // Sessions forward media through `session::MediaForwarder`, not the cluster's relay.
        ("session", "cluster"),
        // Media glue replies through the outbox, below sessions.
        ("media", "session"),
        // The cluster delivers through the `SessionSink` seam, not the concrete hub.
        ("cluster", "session"),
        ("cluster::link", "session"),
        // Node messages are defined in the protocol; the relay uses them, not the reverse.
        ("cluster::protocol", "cluster::relay"),
        // Metrics read what they are handed, never the edge.
        ("metrics", "http"),
    ];
    let mut seen = Vec::new();
    for (from, to) in forbidden {
        for t in server.get(from).into_iter().flatten() {
            if t == to || t.starts_with(&format!("{to}::")) {
                seen.push(format!("{from} -> {t}"));
            }
        }
    }
    assert!(
        seen.is_empty(),
        "removed edges are back:\n{}",
        seen.join("\n")
    );
    // The worker hands connections to ICE-TCP through `sfu::link`; it never names `tcp`.
    let sfu = graph(&Path::new(ROOT).join("crates/sfu/src"));
    let back: Vec<String> = sfu
        .iter()
        .filter(|(module, _)| module.as_str() == "worker" || module.starts_with("worker::"))
        .flat_map(|(module, targets)| {
            targets
                .iter()
                .filter(|t| t.as_str() == "tcp")
                .map(move |t| format!("{module} -> {t}"))
        })
        .collect();
    assert!(
        back.is_empty(),
        "the SFU worker imports tcp again: {back:?}"
    );
}

/// The crates' dependencies point one way, and the server carries no load-tool code.
#[test]
fn crates_depend_one_way() {
    let manifest = |path: &str| std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap();
    let deps = |text: &str| -> Vec<String> {
        let mut in_deps = false;
        let mut names = Vec::new();
        for line in text.lines() {
            if line.starts_with('[') {
                in_deps = line.trim() == "[dependencies]";
                continue;
            }
            if in_deps {
                if let Some((name, _)) = line.split_once('=') {
                    let name = name.trim().trim_end_matches(".workspace");
                    if !name.is_empty() && !name.starts_with('#') {
                        names.push(name.to_string());
                    }
                }
            }
        }
        names
    };
    let signaling = deps(&manifest("signaling/Cargo.toml"));
    assert!(
        signaling.iter().all(|d| !d.starts_with("convene")),
        "{signaling:?}"
    );
    let core = deps(&manifest("crates/core/Cargo.toml"));
    for upward in [
        "convene",
        "convene-sfu",
        "redis",
        "str0m",
        "tokio-tungstenite",
        "hyper",
        "sqlx",
        "convene-store",
    ] {
        assert!(
            !core.iter().any(|d| d == upward),
            "core depends on {upward}"
        );
    }
    // The store knows tables, not rooms or the server.
    let store = deps(&manifest("crates/store/Cargo.toml"));
    for upward in ["convene", "convene-core", "convene-sfu", "redis", "axum"] {
        assert!(
            !store.iter().any(|d| d == upward),
            "store depends on {upward}"
        );
    }
    let sfu = deps(&manifest("crates/sfu/Cargo.toml"));
    for upward in ["convene", "convene-core", "redis", "axum"] {
        assert!(!sfu.iter().any(|d| d == upward), "sfu depends on {upward}");
    }
    let server = deps(&manifest("Cargo.toml"));
    assert!(!server
        .iter()
        .any(|d| d == "hdrhistogram" || d == "convene-load"));
    assert!(
        !Path::new(ROOT).join("src/load").exists(),
        "load code in the server"
    );
}

#[test]
fn the_check_sees_a_cycle() {
    // The graph builder and the cycle finder work on a crate made for the purpose.
    let dir = std::env::temp_dir().join(format!("layering-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a; mod b;\n").unwrap();
    std::fs::write(dir.join("a/mod.rs"), "mod c;\nuse crate::b::Thing;\n").unwrap();
    std::fs::write(dir.join("a/c.rs"), "use super::super::b::{Other, x::Y};\n").unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "// crate::a is a comment\nuse crate::a::c::Z;\n",
    )
    .unwrap();
    let edges = graph(&dir);
    assert_eq!(edges["a"], BTreeSet::from(["b".to_string()]));
    assert_eq!(edges["b"], BTreeSet::from(["a::c".to_string()]));
    assert_eq!(
        cycles(&edges),
        vec![vec!["a::c".to_string(), "b".to_string()]]
    );
    std::fs::write(dir.join("b.rs"), "use crate::a::c::Z; // none back\n").unwrap();
    std::fs::write(dir.join("a/c.rs"), "pub struct Z;\n").unwrap();
    assert!(cycles(&graph(&dir)).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Lines of `text` before its `#[cfg(test)] mod` (tests sit at the end of a file).
fn code_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len())
        .find(|&i| {
            lines[i].trim_start().starts_with("#[cfg(test)]")
                && lines
                    .get(i + 1)
                    .is_some_and(|next| next.trim_start().starts_with("mod "))
        })
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// Each `fn` in `lines` with its length in lines, braces in strings, chars and comments aside.
fn function_lengths(lines: &[&str]) -> Vec<(usize, usize, String)> {
    let clean: Vec<String> = lines
        .iter()
        .map(|l| {
            let l = l.replace("'{'", "").replace("'}'", "");
            code_of(&l)
        })
        .collect();
    let mut found = Vec::new();
    for (start, line) in clean.iter().enumerate() {
        let t = line.trim_start();
        let t = t.strip_prefix("pub ").unwrap_or(t);
        let t = if t.starts_with("pub(") {
            t.split_once(") ").map_or(t, |(_, rest)| rest)
        } else {
            t
        };
        let t = t.strip_prefix("async ").unwrap_or(t);
        if !t.starts_with("fn ") {
            continue;
        }
        let (mut depth, mut opened) = (0i64, false);
        for (end, l) in clean.iter().enumerate().skip(start) {
            if !opened && l.trim_end().ends_with(';') && !l.contains('{') {
                break; // a declaration without a body
            }
            for c in l.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                found.push((start + 1, end - start + 1, t.chars().take(50).collect()));
                break;
            }
        }
    }
    found
}

/// Files do one job: no source file over 900 lines and no function over 150, tests aside.
#[test]
fn files_and_functions_stay_small() {
    let mut over = Vec::new();
    for krate in CRATES {
        for file in sources(&Path::new(ROOT).join(krate)) {
            if file.to_string_lossy().ends_with("tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let lines = code_lines(&text);
            if lines.len() > 900 {
                over.push(format!("{}: {} lines", file.display(), lines.len()));
            }
            for (at, len, name) in function_lengths(&lines) {
                if len > 150 {
                    over.push(format!("{}:{at}: {name}: {len} lines", file.display()));
                }
            }
        }
    }
    assert!(over.is_empty(), "too big:\n{}", over.join("\n"));
}

#[test]
fn the_size_check_counts_functions() {
    let text = "fn a() {\n    let s = \"}\";\n    let c = '}';\n}\n\npub(crate) async fn b(\n    x: u8,\n) -> u8 {\n    x\n}\nfn decl();\n";
    let lengths = function_lengths(&code_lines(text));
    let summary: Vec<(usize, usize)> = lengths.iter().map(|(at, len, _)| (*at, *len)).collect();
    assert_eq!(summary, vec![(1, 4), (6, 5)]);
}
