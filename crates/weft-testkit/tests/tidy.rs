//! Tidy checks over the workspace's source, run with the normal suite (the
//! way rust-analyzer's `xtask/src/tidy.rs` does): every `.rs` file opens with
//! a `//!` line saying what it is for, and no two top-level modules of a
//! crate refer to each other through `crate::` (a file cycle).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// File cycles that exist today and are being taken apart; a new one fails
/// the check. Each entry is a sorted pair `(crate, module, module)`.
const KNOWN_CYCLES: &[(&str, &str, &str)] = &[
    ("weft-server", "dashboard", "routes"),
    ("weft-telemetry", "spans", "traces"),
];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc_line() {
    let mut files = Vec::new();
    rust_files(&crates_dir(), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|path| {
            let text = fs::read_to_string(path).unwrap_or_default();
            !text.trim_start_matches('\u{feff}').starts_with("//!")
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "these files must open with a `//!` line saying what they are for:\n{}",
        missing.join("\n")
    );
}

/// The top-level module a file under `src/` belongs to (`src/a.rs` and
/// `src/a/b.rs` are both `a`); `None` for the crate root.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The modules a file names through `crate::name`, including each first
/// segment of a grouped import (`use crate::{a::X, b};`).
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (index, _) in text.match_indices("crate::") {
        let before = text[..index].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[index + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_heads(group));
        } else if let Some(name) = leading_identifier(rest) {
            found.insert(name);
        }
    }
    found
}

fn leading_identifier(text: &str) -> Option<String> {
    let name: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The first segment of each item of a `{...}` group, up to its closing brace.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut item_start = true;
    for (index, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if c.is_whitespace() => {}
            _ if item_start && depth == 0 => {
                item_start = false;
                if let Some(name) = leading_identifier(&group[index..]) {
                    heads.push(name);
                }
            }
            _ => {}
        }
    }
    heads
}

#[test]
fn no_file_cycles_within_a_crate() {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(crates_dir()) else {
        panic!("cannot read crates/");
    };
    for entry in entries.flatten() {
        let krate = entry.file_name().to_string_lossy().into_owned();
        let src = entry.path().join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(from) = top_module(&src, file) else {
                continue;
            };
            let text = fs::read_to_string(file).unwrap_or_default();
            for to in crate_references(&text) {
                if to != from && modules.contains(&to) {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
        for (from, tos) in &edges {
            for to in tos {
                if from < to && edges.get(to).is_some_and(|back| back.contains(from)) {
                    found.push((krate.clone(), from.clone(), to.clone()));
                }
            }
        }
    }
    let new: Vec<_> = found
        .iter()
        .filter(|(k, a, b)| {
            !KNOWN_CYCLES
                .iter()
                .any(|(kk, aa, bb)| k == kk && a == aa && b == bb)
        })
        .collect();
    assert!(
        new.is_empty(),
        "modules that refer to each other (move the shared part into one of them or a third module): {new:?}"
    );
    let gone: Vec<_> = KNOWN_CYCLES
        .iter()
        .filter(|(k, a, b)| {
            !found
                .iter()
                .any(|(kk, aa, bb)| k == kk && a == aa && b == bb)
        })
        .collect();
    assert!(
        gone.is_empty(),
        "these cycles are gone: take them off KNOWN_CYCLES: {gone:?}"
    );
}

#[test]
fn crate_references_ignore_longer_identifiers() {
    let refs = crate_references(
        "use crate::routes::x; let y = mycrate::other; crate::db::Row;\n\
         use crate::{\n    lease::{A, B},\n    claim,\n    Error,\n};",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["claim", "db", "lease", "routes"].map(str::to_owned)
    );
}
