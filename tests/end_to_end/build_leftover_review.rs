//! Regressions of the review of what failed and killed builds and
//! promotions leave behind: a promotion whose root cannot be made, and
//! the work directories of killed builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// Creates empty files in `dir` until no inode is left.
fn use_every_inode(dir: &Path) {
    for n in 0.. {
        if let Err(e) = std::fs::write(dir.join(format!("filler-{n}")), "") {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return;
        }
    }
}

/// Regression: a promotion whose garbage-collector root could not be made
/// (a state directory with no free inode) failed with exit status 3 after
/// it had published and registered its objects, saying nothing of them.
/// The root is made before anything is published now: the failure leaves
/// the store as it was, and the same promotion succeeds once there is
/// room.
#[test]
fn a_root_that_cannot_be_made_fails_the_promotion_before_anything_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path(), "root");
    let (store, link) = (dir.path().join("store"), dir.path().join("result"));
    // A store that was there: one the promotion made goes whole anyway.
    run_ok(&mut source_add(&store, &[]));
    let before = object_names(&store);
    let state =
        SmallFilesystem::mount_with_options(dir.path().join("state"), "size=1m,nr_inodes=8");
    std::fs::create_dir_all(state.path.join("gcroots/auto")).unwrap();
    use_every_inode(&state.path);
    let mut promote = promote_linked(&store, &state.path, &link, &root, &["--json"]);
    let out = run(&mut promote);
    json_error(&out, 3, "No space left on device");
    assert_eq!(object_names(&store), before, "{out:?}");
    assert!(link.symlink_metadata().is_err(), "no link made");
    assert_eq!(
        std::fs::read_dir(state.path.join("gcroots/auto"))
            .unwrap()
            .count(),
        0,
        "no registration, no temporary"
    );
    for filler in std::fs::read_dir(&state.path).unwrap().flatten() {
        if filler.file_name().to_string_lossy().starts_with("filler-") {
            std::fs::remove_file(filler.path()).unwrap();
        }
    }
    let report = run_json(&mut promote);
    assert_eq!(report["out_link"], link.to_str().unwrap(), "{report:#}");
    assert!(object_names(&store).len() > before.len());
    verify_store(&store);
}

/// A make program that, on its first run, says so (the file `started`
/// in `dir`) and waits for a word on the FIFO `dir/go`: `go` runs bmake,
/// anything else fails.
pub fn held_make(dir: &Path) -> PathBuf {
    let bmake = require_tool("bmake", "bmake");
    let fifo = dir.join("go");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let script = dir.join("held-make");
    let started = dir.join("started");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ ! -e '{s}' ]; then\n  : > '{s}'\n  read word < '{f}'\n  [ \"$word\" = go ] || exit 1\nfi\nexec '{b}' \"$@\"\n",
            s = started.display(),
            f = fifo.display(),
            b = bmake.display()
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).unwrap();
    script
}

/// A build into the state directory of `dir`, held before its first make
/// step ([`held_make`]) until `dir/go` is written; returned once it is
/// held, with its work directory.
fn held_build(dir: &Path) -> (std::process::Child, PathBuf) {
    let make = held_make(dir);
    let mut cmd = fixture_build_into(fruix(), "local", &dir.join("store"), &dir.join("state"));
    cmd.args(FIXTURE_BUILD_FLAGS)
        .arg("--no-out-link")
        .arg("--config")
        .arg(format!("make={}", make.display()));
    let mut child = spawn_silenced(&mut cmd);
    wait_until("the build runs its first make step", || {
        assert!(child.try_wait().unwrap().is_none(), "the build ended");
        dir.join("started").exists()
    });
    (child, work_dirs(&dir.join("state")).remove(0))
}

/// The work directories in `STATE/native-builds`.
fn work_dirs(state: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(state.join("native-builds"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "work"))
        .collect();
    dirs.sort();
    dirs
}

/// Kills (SIGKILL) the held build `child`, then lets its held make step
/// end, failing.
fn kill_held(mut child: std::process::Child, dir: &Path) {
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::write(dir.join("go"), "stop\n").unwrap();
}

/// `fruix store gc --json` (with `flags`) on the store and state directory
/// of `dir`.
fn gc(dir: &Path, flags: &[&str]) -> serde_json::Value {
    let mut cmd = fruix();
    cmd.args(["store", "gc", "--json"])
        .args(flags)
        .args(store_and_state(dir));
    run_json(&mut cmd)
}

/// Regression: the work directory of a build killed with SIGKILL stayed in
/// `STATE/native-builds` forever. A collection removes it now, and says
/// so; that of a build still running it leaves.
#[test]
fn a_collection_removes_the_work_directory_of_a_killed_build_only() {
    let dir = tempfile::tempdir().unwrap();
    let (child, work) = held_build(dir.path());
    let report = gc(dir.path(), &[]);
    assert_eq!(report["work_dirs"], serde_json::json!([]), "{report:#}");
    assert!(
        work.join("obj").is_dir(),
        "a live build's work directory went"
    );
    kill_held(child, dir.path());
    let listed = gc(dir.path(), &["--dry-run"]);
    assert_eq!(
        listed["work_dirs"],
        serde_json::json!([work.to_str().unwrap()]),
        "{listed:#}"
    );
    assert!(work.is_dir(), "a dry run removed it");
    let report = gc(dir.path(), &[]);
    assert_eq!(
        report["work_dirs"],
        serde_json::json!([work.to_str().unwrap()]),
        "{report:#}"
    );
    assert!(
        work.symlink_metadata().is_err(),
        "the work directory stayed"
    );
}

/// Regression (review of the work-directory sweep): a state directory
/// whose `native-builds` cannot be read made `store gc` fail with exit 3
/// after it had collected, reporting nothing of what went. The sweep's
/// failure is a warning; the report is printed and gc exits 0.
#[test]
fn a_collection_whose_builds_directory_cannot_be_read_still_reports_what_went() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let added = run_json(&mut source_add(&store, &["--json"]));
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("native-builds"), "not a directory").unwrap();
    let out = run(on_store(&["store", "gc"], &["--json"], &store)
        .arg("--state-dir")
        .arg(&state));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["objects"][0]["path"], added["store_path"],
        "{report:#}"
    );
    assert_eq!(report["work_dirs"], serde_json::json!([]), "{report:#}");
    assert_eq!(
        report["warnings"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
    assert!(!Path::new(added["store_path"].as_str().unwrap()).exists());
}
