//! A build must leave the source object it builds from as it was: an
//! executor whose build writes into `FRUIX_SOURCE_STORE` (a forgotten
//! `MAKEOBJDIRPREFIX`, a careless script; as root the store's read-only
//! modes stop nothing) fails its run, naming the object and what changed,
//! and nothing is promoted; before, the run promoted, and the next build of
//! the same tree failed on the corrupt source object.

use std::path::{Path, PathBuf};

use crate::util::{fixture_build, fruix, json_error, nothing_promoted, require_tool, run};

/// The test fixture's external executors, copied into `dir` with one more,
/// `writes-source`: `mini-sh` whose build then adds a file to the source
/// object it built from. Returns the executors file.
fn executors_writing_the_source(dir: &Path) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/external");
    let copy = dir.join("executors");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&fixtures).unwrap().flatten() {
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let script = copy.join("build-writes-source.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nset -eu\n\"$FRUIX_EXECUTOR_DIR/build.sh\"\necho 'int polluted;' > \"$FRUIX_SOURCE_STORE/polluted.c\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = copy.join("writes-source.scm");
    std::fs::write(
        &file,
        r#"(fruix-executors
  (format-version 1)
  (executor
    (name "writes-source")
    (version "1.0.0")
    (description "mini-sh, whose build writes into its source (test fixture)")
    (prepare (command "./prepare.sh"))
    (build (command "./build-writes-source.sh") (timeout 900))
    (collect (command "./collect.sh"))
    (cleanup (command "./cleanup.sh"))))
"#,
    )
    .unwrap();
    file
}

#[test]
fn a_build_that_writes_into_its_source_object_fails_and_promotes_nothing() {
    require_tool("bmake", "bmake");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cmd = fruix();
    cmd.arg("--executors-file")
        .arg(executors_writing_the_source(d));
    let mut build = fixture_build(cmd, "writes-source", d, "root");
    let out = run(build.args(["--json", "--no-out-link"]));
    json_error(&out, 1, "the build wrote into its source object");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("extra: ./polluted.c"), "{stderr}");
    assert!(stderr.contains("fruix store verify --repair"), "{stderr}");
    assert!(nothing_promoted(&d.join("store")), "something was promoted");
}

/// The same in a matrix: the cell built here fails as a build failure
/// (never retried: another attempt writes the same), saying why, and is
/// not promoted.
#[test]
fn a_matrix_cell_that_writes_into_its_source_object_fails_as_a_build_failure() {
    let m = crate::matrix::Matrix::new("  (axes (executor \"writes-source\"))\n  (retries 1)");
    let mut cmd = fruix();
    cmd.arg("--executors-file")
        .arg(executors_writing_the_source(m.dir.path()))
        .args(["matrix", "run", "--json"])
        .arg(m.path("matrix.scm"))
        .args(crate::util::store_and_state(m.dir.path()))
        .arg("--report-dir")
        .arg(m.path("report"));
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(5), "a cell did not pass: {out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cell = &report["cells"][0];
    assert_eq!(cell["status"], "build-failure", "{report:#}");
    assert_eq!(
        cell["attempts"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
    assert!(
        cell["error"]
            .as_str()
            .is_some_and(|e| e.contains("the build wrote into its source object")),
        "{report:#}"
    );
    assert!(cell["result_store"].is_null(), "{report:#}");
}

/// Regression: a source object changed after it was added (bit rot, a hand
/// edit) was built from, and the build was then blamed for writing into it
/// (exit 1) after it had run. It is refused before the build starts, as the
/// corrupt object it is (exit 4, with the repair to run).
#[test]
fn a_corrupt_source_object_is_refused_before_the_build_starts() {
    use std::os::unix::fs::PermissionsExt;
    require_tool("bmake", "bmake");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let added = run(&mut crate::util::source_add(&d.join("store"), &["--quiet"]));
    assert!(added.status.success(), "{added:?}");
    let object = PathBuf::from(String::from_utf8(added.stdout).unwrap().trim());
    let file = object.join("usr.bin/uname/uname.c");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut text = std::fs::read(&file).unwrap();
    text.extend_from_slice(b"/* bit rot */\n");
    std::fs::write(&file, text).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let build = fixture_build(fruix(), "local", d, "root");
    // The build's source is the object, not the tree it was added from.
    let at = build
        .get_args()
        .position(|a| a == "--source")
        .expect("fixture_build gives --source");
    let mut args: Vec<std::ffi::OsString> = build.get_args().map(|a| a.to_owned()).collect();
    args[at + 1] = object.clone().into_os_string();
    let mut cmd = fruix();
    cmd.args(args).args(["--json", "--no-out-link"]);
    let out = run(&mut cmd);
    json_error(&out, 4, "usr.bin/uname/uname.c");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fruix store verify --repair"), "{stderr}");
    assert!(!stderr.contains("the build wrote into"), "{stderr}");
    assert!(!d.join("root").exists(), "the build ran");
}
