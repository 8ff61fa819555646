//! Dependencies point one way: `room` never imports `session`, `bus` never imports `room` or
//! `session`, and the wire layer below them imports none of them. A `use` that brings a cycle
//! back fails here.
use std::path::{Path, PathBuf};

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
    files
}

/// Lines in `module` (a file or a directory under src/) that name any of `forbidden`.
fn imports(module: &str, forbidden: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let dir = src.join(module);
    let files = if dir.is_dir() {
        sources(&dir)
    } else {
        vec![src.join(format!("{module}.rs"))]
    };
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for name in forbidden {
                if code.contains(&format!("crate::{name}")) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn room_never_imports_session() {
    let found = imports("room", &["session", "http"]);
    assert!(found.is_empty(), "room reaches up:\n{}", found.join("\n"));
}

#[test]
fn bus_never_imports_room_or_session() {
    let found = imports("bus", &["room", "session", "http"]);
    assert!(found.is_empty(), "bus reaches up:\n{}", found.join("\n"));
}

#[test]
fn the_wire_layer_imports_none_of_the_layers_above() {
    let found = imports("wire", &["room", "session", "bus", "http", "media", "sfu"]);
    assert!(found.is_empty(), "wire reaches up:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_forbidden_import() {
    // The scanner itself works: session does import room, which is allowed, and must be seen.
    assert!(!imports("session", &["room"]).is_empty());
}
