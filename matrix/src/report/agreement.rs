//! The agreement part of the report: for each artifact of each group of
//! cells that must agree, the cells' tree signatures; on divergence, the
//! paths in which two store objects differ (read from their manifests) and,
//! on request, diffoscope's comparison of the first differing files.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use fruix_core::dir::{OpenDir, TreeKind};
use fruix_core::escape;
use fruix_core::fsutil::write_atomic_at;
use fruix_promote::check::read_store_manifest;

use super::{
    AgreementReport, CellReport, DifferenceReport, DiffoscopeReport, NotCompared, NotComparedReport,
};
use crate::agreement::{compare, diff_manifests};
use crate::runner::CellStatus;

/// How many differing paths are listed per pair of cells and artifact.
pub const MAX_DIFFERENCES: usize = 200;

/// How many differing files diffoscope is run on per pair and artifact.
pub const DIFFOSCOPE_FILES: usize = 3;

/// Compares the artifacts of every group of passed cells that must agree;
/// with `diffoscope`, runs it on the first differing files, writing its
/// output under `report_dir/diffoscope/`. The differing files are listed
/// from the objects' manifests when both objects are in `store` (its
/// direct entries; never a path elsewhere that a report names).
pub fn agreement(
    groups: &[Vec<usize>],
    cells: &[CellReport],
    store: Option<&Path>,
    diffoscope: bool,
    report_dir: &Path,
) -> Vec<AgreementReport> {
    let mut out = Vec::new();
    for group in groups {
        let members: Vec<(usize, BTreeMap<String, String>)> = group
            .iter()
            .filter(|i| cells[**i].status == CellStatus::Passed)
            .map(|i| {
                let signatures = cells[*i]
                    .artifacts
                    .iter()
                    .map(|(name, a)| (name.clone(), a.tree_signature.clone()))
                    .collect();
                (*i, signatures)
            })
            .collect();
        for comparison in compare(&members) {
            let artifact = comparison.artifact.clone();
            let mut report = AgreementReport {
                agree: comparison.agrees(),
                cells: comparison
                    .cells
                    .iter()
                    .map(|i| cells[*i].id.clone())
                    .collect(),
                signatures: comparison
                    .classes
                    .iter()
                    .flat_map(|(sig, members)| {
                        members.iter().map(|i| (cells[*i].id.clone(), sig.clone()))
                    })
                    .collect(),
                differences: Vec::new(),
                not_compared: Vec::new(),
                diffoscope: Vec::new(),
                artifact,
            };
            let reference = comparison.classes[0].1[0];
            for (_, class) in &comparison.classes[1..] {
                compare_pair(
                    &mut report,
                    (&cells[reference], &cells[class[0]]),
                    store,
                    diffoscope,
                    report_dir,
                );
            }
            out.push(report);
        }
    }
    out
}

/// Lists the differences of `report.artifact` between two cells.
fn compare_pair(
    report: &mut AgreementReport,
    (first, second): (&CellReport, &CellReport),
    store: Option<&Path>,
    diffoscope: bool,
    report_dir: &Path,
) {
    let pair = [first.id.clone(), second.id.clone()];
    let (Some(a), Some(b)) = (
        first.artifacts.get(&report.artifact),
        second.artifacts.get(&report.artifact),
    ) else {
        return;
    };
    // A direct entry of the store: `STORE/..` has the store as its parent
    // too, but no file name.
    let in_store =
        |p: &Path| store.is_some_and(|s| p.parent() == Some(s) && p.file_name().is_some());
    let manifests = if !in_store(&a.store_path) || !in_store(&b.store_path) {
        Err(match store {
            Some(s) => (
                NotCompared::NotInStore,
                format!(
                    "the objects are not in the store {} to compare their files",
                    s.display()
                ),
            ),
            None => (
                NotCompared::NoStore,
                "no store holds the objects to compare their files (give --store)".into(),
            ),
        })
    } else {
        read_store_manifest(&a.store_path)
            .and_then(|x| Ok((x, read_store_manifest(&b.store_path)?)))
            .map_err(|e| {
                (
                    NotCompared::UnreadableManifest,
                    format!("cannot read the manifests to compare: {e}"),
                )
            })
    };
    let differences = match manifests {
        Ok((x, y)) => diff_manifests(&x, &y),
        Err((reason, message)) => {
            report.not_compared.push(NotComparedReport {
                cells: pair,
                reason,
                message,
            });
            return;
        }
    };
    if diffoscope {
        let files = differences
            .iter()
            .filter(|d| d.change == "modified")
            .filter(|d| matches!((&d.first, &d.second), (Some(x), Some(y)) if x.kind == "file" && y.kind == "file"))
            .take(DIFFOSCOPE_FILES);
        for (n, d) in files.enumerate() {
            let relative = d.path.trim_start_matches("./");
            let Some(output) =
                diffoscope_output(report_dir, &report.artifact, &first.id, &second.id, n + 1)
            else {
                report.diffoscope.push(DiffoscopeReport {
                    cells: pair.clone(),
                    path: d.path.clone(),
                    output: None,
                    status: UNUSABLE_NAMES.into(),
                });
                continue;
            };
            let (status, written) = run_diffoscope(
                &a.store_path.join(relative),
                &b.store_path.join(relative),
                report_dir,
                &output,
            );
            report.diffoscope.push(DiffoscopeReport {
                cells: pair.clone(),
                path: d.path.clone(),
                output: written.then_some(output),
                status,
            });
        }
    }
    report.differences.extend(
        differences
            .into_iter()
            .take(MAX_DIFFERENCES)
            .map(|difference| DifferenceReport {
                cells: pair.clone(),
                difference,
            }),
    );
}

/// The status of a comparison whose artifact or cell names cannot make
/// its output's file name.
pub const UNUSABLE_NAMES: &str =
    "not run: the artifact or cell names are not usable in a file name";

/// The file `report_dir/diffoscope/ARTIFACT-FIRST-vs-SECOND-N.txt` that
/// diffoscope's `n`th comparison of `artifact` between cells `first` and
/// `second` is written to; `None` unless each name is a single normal path
/// component (so the file is in that directory whatever the names are,
/// checked or not by whoever read them).
pub fn diffoscope_output(
    report_dir: &Path,
    artifact: &str,
    first: &str,
    second: &str,
    n: usize,
) -> Option<PathBuf> {
    let name = format!("{artifact}-{first}-vs-{second}-{n}.txt");
    let usable = [artifact, first, second, &name]
        .into_iter()
        .all(is_file_name);
    usable.then(|| report_dir.join(DIFFOSCOPE_DIR).join(name))
}

/// Whether `s` is one normal path component: not empty, `.` or `..`, and
/// without `/` or NUL.
fn is_file_name(s: &str) -> bool {
    let mut components = Path::new(s).components();
    matches!(components.next(), Some(Component::Normal(c)) if c == s)
        && components.next().is_none()
        && !s.contains('\0')
}

/// The message given when diffoscope is asked for but not installed.
pub const DIFFOSCOPE_MISSING: &str =
    "diffoscope is not installed (Debian package diffoscope, or pip install diffoscope); the differing files are listed without diffoscope's comparison";

/// Whether diffoscope is on PATH.
pub fn diffoscope_installed() -> bool {
    on_path("diffoscope")
}

/// Whether `program` is on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// The directory of diffoscope's output in a report directory.
pub const DIFFOSCOPE_DIR: &str = "diffoscope";

/// Runs diffoscope on `first` and `second`, its output into `output` (in
/// `report_dir`'s [`DIFFOSCOPE_DIR`]): how it went, and whether `output`
/// was written.
fn run_diffoscope(first: &Path, second: &Path, report_dir: &Path, output: &Path) -> (String, bool) {
    if !diffoscope_installed() {
        return ("not installed".into(), false);
    }
    let cannot =
        |e: &dyn std::fmt::Display| (format!("cannot write {}: {e}", escape::path(output)), false);
    // The report directory may be where a CI engine unpacked artifacts:
    // `diffoscope/` is made or opened without following a symlink, and the
    // output written beside and renamed into it.
    let dir = match OpenDir::open(report_dir, TreeKind::named("a report directory"))
        .and_then(|d| d.create_beneath(DIFFOSCOPE_DIR))
    {
        Ok(dir) => dir,
        Err(e) => return cannot(&e),
    };
    let Some(name) = output.file_name() else {
        return cannot(&"names no file");
    };
    let mut ran = None;
    let written = write_atomic_at(dir.as_fd(), dir.path(), name, |file| {
        ran = Some(
            std::process::Command::new("diffoscope")
                .arg(first)
                .arg(second)
                .stdout(file.try_clone()?)
                .stderr(std::process::Stdio::null())
                .status(),
        );
        Ok(())
    });
    let status = match ran {
        Some(Ok(s)) if s.code() == Some(0) => "no differences".into(),
        Some(Ok(s)) if s.code() == Some(1) => "differences found".into(),
        Some(Ok(s)) => format!("diffoscope failed ({s})"),
        Some(Err(e)) => format!("cannot run diffoscope: {e}"),
        None => String::new(),
    };
    match written {
        Ok(()) => (status, true),
        Err(e) => cannot(&e),
    }
}

#[cfg(test)]
mod tests {
    use fruix_core::manifest::{Entry, EntryKind, Modes, MANIFEST_HEADER};
    use fruix_promote::store::MANIFEST_FILE;
    use sha2::Digest;

    use super::*;
    use crate::report::fixtures::cell;
    use crate::runner::PromotedArtifact;

    fn entry(path: &str, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            mode,
            kind,
        }
    }

    fn file(path: &str, content: &[u8]) -> Entry {
        let kind = EntryKind::File {
            size: content.len() as u64,
            sha256: sha2::Sha256::digest(content).into(),
        };
        entry(path, kind, 0o444)
    }

    /// A store object under `dir` whose manifest lists the root directory
    /// and `files`.
    fn object(dir: &Path, name: &str, files: &[Entry]) -> PathBuf {
        let object = dir.join(name);
        std::fs::create_dir(&object).unwrap();
        let mut manifest = MANIFEST_HEADER.to_string();
        entry("", EntryKind::Directory, 0o555).render(Modes::Store, &mut manifest);
        for f in files {
            f.render(Modes::Store, &mut manifest);
        }
        std::fs::write(object.join(MANIFEST_FILE), manifest).unwrap();
        object
    }

    /// A temporary directory holding an empty store directory `store`;
    /// the store's path.
    fn temporary_store() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        (dir, store)
    }

    /// A temporary store holding two worlds that differ in `./stamp` alone.
    struct DivergingWorlds {
        dir: tempfile::TempDir,
        store: PathBuf,
        w1: PathBuf,
        w2: PathBuf,
    }

    fn diverging_worlds() -> DivergingWorlds {
        let (dir, store) = temporary_store();
        let w1 = object(&store, "w1", &[file("stamp", b"one")]);
        let w2 = object(&store, "w2", &[file("stamp", b"two")]);
        DivergingWorlds { dir, store, w1, w2 }
    }

    /// A passed cell with `artifacts`: (name, store object, signature).
    fn passed(dir: &Path, id: &str, artifacts: &[(&str, &Path, &str)]) -> CellReport {
        let mut c = cell(id, CellStatus::Passed, dir);
        for (name, store_path, signature) in artifacts {
            c.artifacts.insert(
                name.to_string(),
                PromotedArtifact {
                    store_path: store_path.to_path_buf(),
                    tree_signature: signature.to_string(),
                },
            );
        }
        c
    }

    #[test]
    fn diverging_artifacts_list_their_differing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let world1 = object(d, "w1", &[file("bin/sh", b"sh"), file("stamp", b"one")]);
        let world2 = object(d, "w2", &[file("bin/sh", b"sh"), file("stamp", b"three")]);
        let kernel = object(d, "k", &[file("kernel", b"k")]);
        let mut failed = passed(d, "mini-MINIMAL", &[("world", &world2, "sha256:w3")]);
        failed.status = CellStatus::BuildFailure;
        let cells = [
            passed(
                d,
                "local-GENERIC",
                &[
                    ("kernel", &kernel, "sha256:k"),
                    ("world", &world1, "sha256:w1"),
                ],
            ),
            passed(
                d,
                "remote-GENERIC",
                &[
                    ("kernel", &kernel, "sha256:k"),
                    ("world", &world2, "sha256:w2"),
                ],
            ),
            failed,
        ];
        let out = agreement(&[vec![0, 1, 2]], &cells, Some(d), false, d);
        let artifacts: Vec<(&str, bool)> =
            out.iter().map(|a| (a.artifact.as_str(), a.agree)).collect();
        assert_eq!(artifacts, [("kernel", true), ("world", false)]);
        let world = &out[1];
        assert_eq!(
            world.cells,
            ["local-GENERIC", "remote-GENERIC"],
            "failed cells are left out"
        );
        assert_eq!(
            world.signatures["remote-GENERIC"].as_deref(),
            Some("sha256:w2")
        );
        let paths: Vec<(&str, &str)> = world
            .differences
            .iter()
            .map(|d| (d.difference.path.as_str(), d.difference.change))
            .collect();
        assert_eq!(paths, [("./stamp", "modified")]);
        assert_eq!(
            world.differences[0].cells,
            ["local-GENERIC", "remote-GENERIC"]
        );
        assert!(world.diffoscope.is_empty(), "diffoscope was not asked for");
        assert!(out[0].differences.is_empty());
    }

    #[test]
    fn a_missing_artifact_diverges_and_an_unreadable_manifest_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let gone = d.join("gone");
        let cells = [
            passed(
                d,
                "local-GENERIC",
                &[("kernel", &gone, "sha256:k1"), ("world", &gone, "sha256:w")],
            ),
            passed(d, "remote-GENERIC", &[("kernel", &gone, "sha256:k2")]),
        ];
        let out = agreement(&[vec![0, 1]], &cells, Some(d), false, d);
        let (kernel, world) = (&out[0], &out[1]);
        assert!(!world.agree, "an artifact one cell lacks is a divergence");
        assert_eq!(world.signatures["remote-GENERIC"], None);
        assert!(world.differences.is_empty() && world.not_compared.is_empty());
        assert!(!kernel.agree);
        assert_eq!(kernel.not_compared.len(), 1, "{kernel:?}");
        assert_eq!(
            kernel.not_compared[0].reason,
            NotCompared::UnreadableManifest
        );
        assert!(
            kernel.not_compared[0]
                .message
                .starts_with("cannot read the manifests to compare"),
            "{kernel:?}"
        );
        assert!(
            agreement(&[vec![0]], &cells, Some(d), false, d).is_empty(),
            "one cell compares with none"
        );
    }

    #[test]
    fn objects_outside_the_given_store_are_never_read() {
        let DivergingWorlds { dir, store, w1, .. } = diverging_worlds();
        let d = dir.path();
        let elsewhere = object(d, "w2", &[file("stamp", b"two")]);
        let cells = [
            passed(d, "local-GENERIC", &[("world", &w1, "sha256:w1")]),
            passed(d, "remote-GENERIC", &[("world", &elsewhere, "sha256:w2")]),
        ];
        // `STORE/..` has the store as its parent, but is not in it.
        let parent = passed(
            d,
            "mini-GENERIC",
            &[("world", &store.join(".."), "sha256:w3")],
        );
        std::fs::write(d.join(MANIFEST_FILE), "").unwrap();
        let out = agreement(
            &[vec![0, 2]],
            &[&cells[..], &[parent]].concat(),
            Some(&store),
            false,
            d,
        );
        let refused = &out[0].not_compared;
        assert!(
            refused
                .first()
                .is_some_and(|r| r.reason == NotCompared::NotInStore),
            "{out:?}"
        );
        for (store, expected) in [
            (Some(store.as_path()), NotCompared::NotInStore),
            (None, NotCompared::NoStore),
        ] {
            let out = agreement(&[vec![0, 1]], &cells, store, false, d);
            assert!(!out[0].agree);
            assert!(out[0].differences.is_empty(), "{out:?}");
            assert_eq!(out[0].not_compared[0].reason, expected, "{out:?}");
        }
    }

    /// Regression: a pair whose files could not be compared was noted as an
    /// entry of `diffoscope` with an empty `path`, as if diffoscope had
    /// compared a file: the note is `not_compared`, with why as a `reason`
    /// a consumer can match, and `diffoscope` lists only diffoscope's runs.
    #[test]
    fn a_pair_whose_files_are_not_compared_says_why_apart_from_diffoscope() {
        let DivergingWorlds { dir, store, w1, w2 } = diverging_worlds();
        let d = dir.path();
        let elsewhere = object(d, "w3", &[file("stamp", b"three")]);
        let unreadable = store.join("w4");
        std::fs::create_dir(&unreadable).unwrap();
        let pair = |second: &Path| {
            [
                passed(d, "local-GENERIC", &[("world", &w1, "sha256:w1")]),
                passed(d, "remote-GENERIC", &[("world", second, "sha256:w2")]),
            ]
        };
        let cases = [
            (&w2, None, "no-store", "give --store"),
            (
                &elsewhere,
                Some(store.as_path()),
                "not-in-store",
                "not in the store",
            ),
            (
                &unreadable,
                Some(store.as_path()),
                "unreadable-manifest",
                "cannot read",
            ),
        ];
        for (second, store, reason, said) in cases {
            let out = agreement(&[vec![0, 1]], &pair(second), store, true, d);
            let json = serde_json::to_value(&out[0]).unwrap();
            assert_eq!(json["diffoscope"], serde_json::json!([]), "{json:#}");
            let not_compared = &json["not_compared"];
            assert_eq!(not_compared.as_array().map(Vec::len), Some(1), "{json:#}");
            assert_eq!(
                not_compared[0]["cells"],
                serde_json::json!(["local-GENERIC", "remote-GENERIC"])
            );
            assert_eq!(not_compared[0]["reason"], reason, "{json:#}");
            let message = not_compared[0]["message"].as_str().unwrap_or_default();
            assert!(message.contains(said), "{json:#}");
        }
        // Compared: no note, and diffoscope's entries name a file.
        let out = agreement(&[vec![0, 1]], &pair(&w2), Some(&store), true, d);
        let json = serde_json::to_value(&out[0]).unwrap();
        assert_eq!(json["not_compared"], serde_json::json!([]), "{json:#}");
        assert_eq!(json["diffoscope"][0]["path"], "./stamp", "{json:#}");
    }

    #[test]
    fn diffoscope_outputs_stay_in_the_report_directory_whatever_the_names() {
        let dir = Path::new("/r");
        assert_eq!(
            diffoscope_output(dir, "world", "local-GENERIC", "remote-GENERIC", 2),
            Some(PathBuf::from(
                "/r/diffoscope/world-local-GENERIC-vs-remote-GENERIC-2.txt"
            ))
        );
        for name in ["/tmp/x/evil", "../evil", "a/b", "..", ".", "", "a/", "a\0b"] {
            assert_eq!(diffoscope_output(dir, name, "a", "b", 1), None, "{name:?}");
            assert_eq!(diffoscope_output(dir, "w", name, "b", 1), None, "{name:?}");
            assert_eq!(diffoscope_output(dir, "w", "a", name, 1), None, "{name:?}");
        }
    }

    #[test]
    fn diffoscope_never_writes_outside_the_report_directory() {
        let DivergingWorlds { dir, store, w1, w2 } = diverging_worlds();
        let d = dir.path();
        let evil = d.join("evil");
        let name = evil.to_str().unwrap();
        let cells = [
            passed(d, "local-GENERIC", &[(name, &w1, "sha256:w1")]),
            passed(d, "remote-GENERIC", &[(name, &w2, "sha256:w2")]),
        ];
        let report_dir = d.join("report");
        let out = agreement(&[vec![0, 1]], &cells, Some(&store), true, &report_dir);
        assert_eq!(out[0].diffoscope.len(), 1, "{out:?}");
        let run = &out[0].diffoscope[0];
        assert_eq!((run.status.as_str(), &run.output), (UNUSABLE_NAMES, &None));
        assert_eq!(run.path, "./stamp");
        assert!(
            !report_dir.exists()
                && !d
                    .join("evil-local-GENERIC-vs-remote-GENERIC-1.txt")
                    .exists()
        );
    }
}
