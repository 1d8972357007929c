//! Tidy checks over the workspace's source, run with the normal suite (the
//! way rust-analyzer's `xtask/src/tidy.rs` does): every `.rs` file opens with
//! a `//!` line saying what it is for, no two top-level modules of a crate
//! refer to each other through `crate::` (a file cycle), no status, reason or
//! event kind is typed as a literal into SQL text or code (each enum's
//! `as_str()` is the one source), no API error code is typed as a literal
//! outside its catalogue (`weft_core::ErrorCode`), one store file ends
//! attempts, and the API and SDK crates deny missing docs.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// File cycles being taken apart (none today); a new one fails
/// the check. Each entry is a sorted pair `(crate, module, module)`.
const KNOWN_CYCLES: &[(&str, &str, &str)] = &[];

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

/// The crates whose public items are an API others program against: the
/// wire types (their docs are the OpenAPI descriptions) and the SDK.
const DOCUMENTED_CRATES: &[&str] = &["weft-api", "weft-client", "weft-worker"];

#[test]
fn the_api_and_sdk_crates_deny_missing_docs() {
    let missing: Vec<&str> = DOCUMENTED_CRATES
        .iter()
        .copied()
        .filter(|name| {
            let lib = crates_dir().join(name).join("src/lib.rs");
            let text =
                fs::read_to_string(&lib).unwrap_or_else(|err| panic!("{}: {err}", lib.display()));
            !text
                .lines()
                .any(|line| line.trim() == "#![deny(missing_docs)]")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these crates' lib.rs must carry `#![deny(missing_docs)]`: {missing:?}"
    );
}

/// A file's text before its first `#[cfg(test)]` line: tests are exempt
/// from the vocabulary rules.
fn code_part(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |end| &text[..end])
}

/// The rules' offences in one file's code, `label:line: what` each:
/// a status or reason as an SQL string literal (`'running'`), an event kind
/// as a Rust string literal (`"step.completed"`) outside the enum's file,
/// an `UPDATE weft_attempts` outside the store's one writer of attempt ends.
fn vocabulary_offences(label: &str, text: &str, words: &[&str], kinds: &[&str]) -> Vec<String> {
    let kinds_home = label.ends_with("weft-core/src/event.rs");
    let attempts_writer = label.ends_with("weft-store/src/attempts.rs");
    let mut found = Vec::new();
    for (n, line) in code_part(text).lines().enumerate() {
        for word in words {
            if line.contains(&format!("'{word}'")) {
                found.push(format!(
                    "{label}:{}: '{word}' (use its enum's as_str())",
                    n + 1
                ));
            }
        }
        for kind in kinds {
            if !kinds_home && line.contains(&format!("\"{kind}\"")) {
                found.push(format!(
                    "{label}:{}: \"{kind}\" (use weft_core::EventKind)",
                    n + 1
                ));
            }
        }
        if !attempts_writer && line.contains("UPDATE weft_attempts") {
            found.push(format!(
                "{label}:{}: an attempt row changed outside weft-store/src/attempts.rs (end_attempts)",
                n + 1
            ));
        }
    }
    found
}

fn vocabulary() -> (Vec<&'static str>, Vec<&'static str>) {
    use weft_core::{AttemptStatus, EventKind, Reason, RunStatus, StepStatus};
    let mut words: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    words.extend(StepStatus::ALL.iter().map(|s| s.as_str()));
    words.extend(AttemptStatus::ALL.iter().map(|s| s.as_str()));
    words.extend(Reason::ALL.iter().map(|r| r.as_str()));
    words.sort_unstable();
    words.dedup();
    let kinds = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    (words, kinds)
}

#[test]
fn statuses_reasons_and_event_kinds_are_never_literals() {
    let (words, kinds) = vocabulary();
    let mut offences = Vec::new();
    let Ok(entries) = fs::read_dir(crates_dir()) else {
        panic!("cannot read crates/");
    };
    let mut n_files = 0;
    for entry in entries.flatten() {
        let mut files = Vec::new();
        rust_files(&entry.path().join("src"), &mut files);
        for file in files {
            n_files += 1;
            let text = fs::read_to_string(&file).unwrap_or_default();
            let label = file.display().to_string();
            offences.extend(vocabulary_offences(&label, &text, &words, &kinds));
        }
    }
    assert!(n_files > 20, "found only {n_files} files");
    assert!(
        offences.is_empty(),
        "statuses, reasons and event kinds come from their enums' as_str(), and only \
         weft-store/src/attempts.rs ends attempts (migrations and tests are exempt):\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_vocabulary_check_finds_what_it_must() {
    let (words, kinds) = vocabulary();
    let sample = "let a = \"SELECT 1 FROM weft_steps WHERE status = 'ready'\";\n\
                  let k = \"step.completed\";\n\
                  tx.execute(\"UPDATE weft_attempts SET status = $2\");\n\
                  let fine = format!(\"status = '{}'\", s.as_str());\n\
                  #[cfg(test)]\nlet exempt = \"run.failed 'failed'\";\n";
    let found = vocabulary_offences("crates/x/src/y.rs", sample, &words, &kinds);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].contains(":1: 'ready'"), "{found:?}");
    assert!(found[1].contains(":2: \"step.completed\""), "{found:?}");
    assert!(found[2].contains(":3: an attempt row"), "{found:?}");
    assert!(
        vocabulary_offences(
            "crates/weft-core/src/event.rs",
            "\"run.failed\"",
            &words,
            &kinds
        )
        .is_empty()
    );
}

/// The crates that answer with API error codes, or match on them, and can
/// name them from `weft_core::ErrorCode`. The SDK crates (weft-client,
/// weft-worker) depend on weft-api only: they receive codes as strings.
fn code_crates() -> Vec<PathBuf> {
    let sdk = ["weft-client", "weft-worker", "weft-api"];
    let Ok(entries) = fs::read_dir(crates_dir()) else {
        panic!("cannot read crates/");
    };
    entries
        .flatten()
        .filter(|e| !sdk.iter().any(|s| e.file_name() == *s))
        .map(|e| e.path().join("src"))
        .collect()
}

/// A file's API error codes typed as string literals (`"stale_lease"`),
/// `label:line: "code"` each; the catalogue's own file is their one home.
fn error_code_offences(label: &str, text: &str, codes: &[&str]) -> Vec<String> {
    if label.ends_with("weft-core/src/error_code.rs") {
        return Vec::new();
    }
    let mut found = Vec::new();
    for (n, line) in code_part(text).lines().enumerate() {
        for code in codes {
            if line.contains(&format!("\"{code}\"")) {
                found.push(format!(
                    "{label}:{}: \"{code}\" (use weft_core::ErrorCode)",
                    n + 1
                ));
            }
        }
    }
    found
}

fn error_codes() -> Vec<&'static str> {
    weft_core::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect()
}

#[test]
fn api_error_codes_are_never_literals() {
    let codes = error_codes();
    let mut offences = Vec::new();
    let mut n_files = 0;
    for src in code_crates() {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            n_files += 1;
            let text = fs::read_to_string(&file).unwrap_or_default();
            offences.extend(error_code_offences(
                &file.display().to_string(),
                &text,
                &codes,
            ));
        }
    }
    assert!(n_files > 20, "found only {n_files} files");
    assert!(
        offences.is_empty(),
        "API error codes come from the catalogue, weft_core::ErrorCode (tests are exempt):\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_error_code_check_finds_what_it_must() {
    let codes = error_codes();
    let sample = "return Err(ApiError::bad_request(\"invalid_query\", m));\n\
                  let fine = ErrorCode::StaleLease;\n\
                  let also_fine = \"stale lease\";\n\
                  #[cfg(test)]\nassert_eq!(code, \"stale_lease\");\n";
    let found = error_code_offences("crates/x/src/y.rs", sample, &codes);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains(":1: \"invalid_query\""), "{found:?}");
    assert!(
        error_code_offences(
            "crates/weft-core/src/error_code.rs",
            "X = \"stale_lease\"",
            &codes
        )
        .is_empty()
    );
}
