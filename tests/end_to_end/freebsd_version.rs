//! `--freebsd-version` values a source object's metadata cannot hold are
//! refused before anything is written. A version with a control character
//! was written into the object's `.fruix-source.scm`, whose reader refuses
//! it: `store verify` then called the new object corrupt.

use std::path::{Path, PathBuf};

use crate::util::{failed_with, fixture_source, fruix, listing, run};

/// Versions a source object's metadata (or a build) cannot carry: control
/// characters, a bidirectional-text control, 65 bytes, and (a regression:
/// its branch was recorded as "") one that names no branch.
fn refused_versions() -> Vec<String> {
    vec![
        "bogus".into(),
        "15.0\n(x)".into(),
        "15.0-STABLE\u{1b}[31m".into(),
        "15.0-STABLE\u{202e}".into(),
        "1".repeat(65),
    ]
}

/// An empty scratch directory inside a new temporary directory.
fn work() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    (dir, work)
}

#[test]
fn source_add_refuses_a_freebsd_version_its_metadata_cannot_hold_and_makes_no_store() {
    let (_dir, work) = work();
    for version in refused_versions() {
        let out = run(fruix()
            .args(["source", "add", "--quiet", "--store"])
            .arg(work.join("store"))
            .args(["--freebsd-version", &version])
            .arg(fixture_source()));
        let says: &[&str] = match version.as_str() {
            "bogus" => &["\"bogus\" names no branch"],
            _ => &[],
        };
        failed_with(&format!("{version:?}"), &out, 2, says);
        assert!(out.stdout.is_empty(), "{version:?}: {out:?}");
        assert_eq!(listing(&work), Vec::<PathBuf>::new(), "{version:?}");
    }
}

#[test]
fn build_refuses_a_freebsd_version_its_source_object_cannot_hold_and_makes_no_store() {
    let (_dir, work) = work();
    for version in refused_versions() {
        let out = run(fruix()
            .args(["build", "--quiet", "--executor", "local", "--source"])
            .arg(fixture_source())
            .arg("--store")
            .arg(work.join("store"))
            .arg("--state-dir")
            .arg(work.join("state"))
            .args(["--freebsd-version", &version]));
        failed_with(&format!("{version:?}"), &out, 2, &[]);
        assert_eq!(listing(&work), Vec::<PathBuf>::new(), "{version:?}");
    }
}

/// A refused version leaves a store that exists as it was: no object,
/// no temporary, no pool entry.
#[test]
fn a_refused_freebsd_version_leaves_an_existing_store_as_it_was() {
    let (_dir, work) = work();
    let store = work.join("store");
    let add = |version: &str| {
        run(fruix()
            .args(["source", "add", "--quiet", "--store"])
            .arg(&store)
            .args(["--freebsd-version", version])
            .arg(fixture_source()))
    };
    let out = add("15.0-STABLE");
    assert!(out.status.success(), "{out:?}");
    let before = contents(&store);
    failed_with("a newline", &add("15.0\n(x)"), 2, &[]);
    assert_eq!(contents(&store), before);
}

/// Everything under `store` but its registry (`.fruix`, whose SQLite files
/// come and go as it is opened).
fn contents(store: &Path) -> Vec<PathBuf> {
    let registry = store.join(".fruix");
    listing(store)
        .into_iter()
        .filter(|p| !p.starts_with(&registry))
        .collect()
}
