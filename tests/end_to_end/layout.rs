//! The workspace's shape, as issue 11 set it: every Rust module opens with a
//! `//!` line, and no source file holds more than 600 lines of code outside
//! its tests (a file past that mixes jobs and is split at its seams).

use std::path::{Path, PathBuf};

/// The most lines a source file may hold before its `#[cfg(test)]` module.
const MAX_SOURCE_LINES: usize = 600;

/// The workspace's folder.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Every `.rs` file of the workspace (not `target/`, nor hidden folders).
fn rust_files() -> Vec<PathBuf> {
    let root = root();
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() && !name.starts_with('.') && name != "target" {
                dirs.push(entry.path());
            } else if kind.is_file() && name.ends_with(".rs") {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    assert!(found.len() > 100, "the workspace was not found: {found:?}");
    found
}

/// Whether `path` is a file of tests only: below a `tests` folder of the
/// workspace, or named `tests.rs` or `*_tests.rs`.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || path
            .strip_prefix(root())
            .unwrap()
            .components()
            .any(|c| c.as_os_str() == "tests")
}

#[test]
fn every_rust_module_opens_with_a_doc_line() {
    let undocumented: Vec<PathBuf> = rust_files()
        .into_iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "no `//!` first line: {undocumented:#?}"
    );
}

#[test]
fn no_source_file_holds_more_than_600_lines_outside_its_tests() {
    let files = rust_files();
    let sources: Vec<&PathBuf> = files.iter().filter(|f| !is_test_file(f)).collect();
    assert!(sources.len() > 50, "{sources:?}");
    let long: Vec<(usize, &PathBuf)> = sources
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let lines = text
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]"))
                .count();
            (lines, f)
        })
        .filter(|(lines, _)| *lines > MAX_SOURCE_LINES)
        .collect();
    assert!(long.is_empty(), "past {MAX_SOURCE_LINES} lines: {long:#?}");
}
