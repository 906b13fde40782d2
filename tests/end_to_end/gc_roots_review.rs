//! Regressions of the review of which result roots `store gc` removes: a
//! root was taken for a promoted run's when its directory's name was a run
//! id the store had promoted, though run ids are unique within one state
//! directory only. A root is collected now only when it is the root of a
//! result bundle this store registered (what its `promotion.scm` says
//! matches the bundle), and never while it is unfinished.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::util::*;

/// `fruix build` of the miniature tree by `local`, into the store of `dir`
/// and its state directory `state`, with the tests' flags and `extra`.
fn build(dir: &Path, state: &str, extra: &[&str]) -> Command {
    let mut cmd = fixture_build_into(fruix(), "local", &dir.join("store"), &dir.join(state));
    cmd.args(FIXTURE_BUILD_FLAGS).arg("--quiet").args(extra);
    cmd
}

/// The entries of the directory `dir` (not below them), sorted.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
}

/// The run directories (not work directories) in `STATE/native-builds`,
/// sorted.
fn run_dirs(dir: &Path, state: &str) -> Vec<PathBuf> {
    entries(&dir.join(state).join("native-builds"))
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "work"))
        .collect()
}

/// A promoted build (no out link: nothing roots its bundle) in state
/// directory `sX` of `dir`; its result root and run id.
fn promoted_run(dir: &Path) -> (PathBuf, String) {
    run_ok(&mut build(dir, "sX", &["--no-out-link"]));
    let roots = run_dirs(dir, "sX");
    assert_eq!(roots.len(), 1, "{roots:?}");
    let run_id = roots[0].file_name().unwrap().to_str().unwrap().to_string();
    (roots[0].clone(), run_id)
}

/// A run promoted in state directory `sX` of `dir` ([`promoted_run`]), and
/// a build in `sY` (no out link) running `make` into a result root named
/// as that run: the root's path and the build, not started.
fn build_into_namesake(dir: &Path, make: &Path) -> (PathBuf, Command) {
    let (_, run_id) = promoted_run(dir);
    let root = dir.join("sY/native-builds").join(&run_id);
    let mut cmd = build(dir, "sY", &["--no-out-link", "--config"]);
    cmd.arg(format!("make={}", make.display()))
        .arg("--result-root")
        .arg(&root);
    (root, cmd)
}

/// `fruix store gc --json --older-than 0s` (and `flags`) on the store of
/// `dir` with state directory `state`.
fn gc(dir: &Path, state: &str, flags: &[&str]) -> Value {
    std::fs::create_dir_all(dir.join(state)).unwrap();
    let mut cmd = fruix();
    cmd.args(["store", "gc", "--json", "--older-than", "0s", "--store"])
        .arg(dir.join("store"))
        .arg("--state-dir")
        .arg(dir.join(state))
        .args(flags);
    run_json(&mut cmd)
}

/// Runs [`gc`] and checks that it removed (or would remove) no result
/// root.
#[track_caller]
fn gc_removes_no_root(dir: &Path, state: &str, flags: &[&str]) {
    let collected = gc(dir, state, flags);
    assert_eq!(collected["result_roots"], json!([]), "{collected:#}");
}

/// The logs a build left in `root`.
fn logs(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("logs"))
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Regression: a state directory's result root of a run that was not
/// promoted, named as a run another state directory sharing the store
/// promoted (run ids are unique within one state directory only; here
/// forced with `--result-root`), was removed by `store gc` as promoted,
/// logs and all. It is kept; the promoted root of the other state
/// directory still goes, by a collection under its own state directory.
#[test]
fn a_root_named_as_a_run_another_state_directory_promoted_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (promoted, run_id) = promoted_run(dir);
    // Another run, not promoted, whose root has the promoted run's name:
    // built with one more make flag, so its run is another even if the
    // two started in the same second.
    let other = dir.join("sY/native-builds").join(&run_id);
    let mut cmd = build(
        dir,
        "sY",
        &["--no-promote", "--make-flag=-DGC_ROOTS_REVIEW"],
    );
    run_ok(cmd.arg("--result-root").arg(&other));
    let other_logs = logs(&other);
    assert!(!other_logs.is_empty(), "{other:?}");

    // Its run's bundle registered, the other root is not its root.
    gc_removes_no_root(dir, "sY", &["--dry-run"]);
    // The promoted root goes under its own state directory (its bundle,
    // rooted nowhere, too).
    let collected = gc(dir, "sX", &[]);
    assert_eq!(
        collected["result_roots"],
        json!([promoted.to_str().unwrap()]),
        "{collected:#}"
    );
    assert!(!promoted.exists());
    // With the promoted run's bundle gone, the other root still stays.
    gc_removes_no_root(dir, "sY", &[]);
    assert_eq!(logs(&other), other_logs);
}

/// Regression (the review's case): a failed build's root, named as a run
/// that another state directory sharing the store promoted, with the same
/// request, was removed by `store gc`, its logs with it. A root marked
/// unfinished (`.fruix-incomplete`) is never collected.
#[test]
fn a_failed_builds_root_named_as_a_promoted_run_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let fail = require_tool("false", "coreutils");
    let (failed, mut cmd) = build_into_namesake(dir, &fail);
    let out = run(&mut cmd);
    assert!(!out.status.success(), "{out:?}");
    assert!(failed.join(".fruix-incomplete").exists(), "{out:?}");
    let left = entries(&failed);

    gc_removes_no_root(dir, "sY", &[]);
    assert_eq!(entries(&failed), left);
}

/// Regression: a collection removed the root of a build still running,
/// named as a run that another state directory sharing the store promoted,
/// and the build died (exit 3). A running build's root, marked unfinished
/// and its work directory locked, is kept, and the build finishes.
#[test]
fn a_running_builds_root_is_never_collected() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let make = crate::build_leftover_review::held_make(dir);
    let (running, mut cmd) = build_into_namesake(dir, &make);
    let mut child = spawn_silenced(&mut cmd);
    wait_until("the build runs its first make step", || {
        assert!(child.try_wait().unwrap().is_none(), "the build ended");
        dir.join("started").exists()
    });
    assert!(running.join(".fruix-incomplete").exists());

    gc_removes_no_root(dir, "sY", &[]);
    assert!(running.join(".fruix-incomplete").exists());
    std::fs::write(dir.join("go"), "go\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the build finished");
    assert!(running.join("promotion.scm").exists());
    assert!(!running.join(".fruix-incomplete").exists());
}

/// Regression: a promoted root that could not be removed (here, a
/// filesystem mounted in it) was reported as removed, exit 0, and nothing
/// said it was still there. It is said (a warning naming it), and left
/// out of `result_roots`.
#[test]
fn a_root_that_cannot_be_removed_is_said_and_not_counted() {
    require_tool("unshare", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = promoted_run(dir.path());
    let mounted = root.join("logs");
    assert!(mounted.is_dir());
    let script = "mount -t tmpfs none \"$1\" && shift && exec \"$@\"";
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&mounted)
        .arg(env!("CARGO_BIN_EXE_fruix"))
        .args(["store", "gc", "--json", "--older-than", "0s", "--store"])
        .arg(dir.path().join("store"))
        .arg("--state-dir")
        .arg(dir.path().join("sX"));
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["result_roots"], json!([]), "{report:#}");
    let said = format!("the result root {} could not be removed", root.display());
    assert!(stderr.contains(&said), "{stderr}");
    assert!(root.is_dir(), "{}", root.display());
}
