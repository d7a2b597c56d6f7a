//! The layering of the code: sinks never use sources and sources never use sinks; what both need
//! (wire formats, the `Http` hop's headers) is in `src/codec/`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the source tree is readable") {
        let path = entry.expect("readable dir entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out
}

/// Lines of the Rust files under `src/DIR` naming `crate::OTHER` (or `super::OTHER` from the top
/// of DIR), as `file:line: text`.
fn uses(dir: &str, other: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let files = rust_files(&root);
    assert!(files.len() > 3, "{} holds the {dir} modules", root.display());
    let needles = [format!("crate::{other}"), format!("super::{other}::"), format!("super::super::{other}")];
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source file");
        for (i, line) in text.lines().enumerate() {
            if needles.iter().any(|n| line.contains(n.as_str())) {
                found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn sinks_do_not_use_sources() {
    let found = uses("sink", "source");
    assert!(found.is_empty(), "sinks using sources (move what they share to src/codec/):\n{}", found.join("\n"));
}

#[test]
fn sources_do_not_use_sinks() {
    let found = uses("source", "sink");
    assert!(found.is_empty(), "sources using sinks (move what they share to src/codec/):\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_use() {
    // Negative control: the same scan finds the sources' use of the channel module.
    assert!(!uses("source", "channel").is_empty());
}
