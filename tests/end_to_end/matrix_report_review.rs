//! What a review of `fruix matrix collect` found: a cell report's tree
//! signatures are checked against the store collect compares in, a log
//! that is not copied is warned about, and an argument clap refuses is a
//! plain message in the `--json` error.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::matrix::{describe, Matrix};
use crate::matrix_split::{collect, run_cell_with};
use crate::util::run;

const USAGE: i32 = 2;
const DIVERGENCE: i32 = 6;

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

/// Runs each of the cells `ids` of `m` quietly, reporting into `jobs` and
/// promoting into `store`: each must succeed.
fn cells_run(m: &Matrix, ids: &[&str]) {
    for id in ids {
        let out = run_cell_with(m, id, "store", "jobs", &["--quiet"]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
}

/// `matrix collect` of `m` into `dir` of the cell reports in `from`,
/// checked against the matrix's store.
fn collected(m: &Matrix, dir: &str, from: &str) -> Output {
    run(collect(m, dir)
        .arg("--from")
        .arg(m.path(from))
        .arg("--store")
        .arg(m.path("store")))
}

/// [`collected`] into `dir` of the reports in `forged`, which must be
/// refused as a usage error; its stderr.
fn forged_refused(m: &Matrix, dir: &str) -> String {
    let out = collected(m, dir, "forged");
    assert_eq!(out.status.code(), Some(USAGE), "{}", describe(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Regression: with `--store`, a cell report edited to give another cell's
/// tree signature for its own object made a real divergence (exit 6) an
/// agreement (exit 0); and an artifact at `STORE/.fruix` was compared as a
/// store object (`unreadable-manifest ... store object is inconsistent`).
#[test]
fn collect_with_a_store_refuses_a_report_the_store_contradicts() {
    let m =
        Matrix::new(r#"  (axes (executor "local" "mini-sh") (make-flag "NONDETERMINISTIC=yes"))"#);
    cells_run(&m, &["local", "mini-sh"]);
    let out = collected(&m, "honest", "jobs");
    assert_eq!(out.status.code(), Some(DIVERGENCE), "{}", describe(&out));

    let local = read_json(&m.path("jobs/cell-local.json"));
    let theirs = local["cell"]["artifacts"]["world"]["tree_signature"].clone();
    let forged_report = m.path("forged/cell-mini-sh.json");
    std::fs::create_dir(m.path("forged")).unwrap();
    std::fs::copy(
        m.path("jobs/cell-local.json"),
        m.path("forged/cell-local.json"),
    )
    .unwrap();
    let mut forged = read_json(&m.path("jobs/cell-mini-sh.json"));
    let world = &mut forged["cell"]["artifacts"]["world"];
    let own = world["tree_signature"].clone();
    assert_ne!(own, theirs, "the worlds differ");
    let object = world["store_path"].as_str().unwrap().to_string();
    world["tree_signature"] = theirs.clone();
    write_json(&forged_report, &forged);
    let stderr = forged_refused(&m, "forged-out");
    let says = format!(
        "its cell mini-sh contradicts the store: its artifact \"world\" is {object}, whose tree signature is {}, but the report gives {}",
        own.as_str().unwrap(),
        theirs.as_str().unwrap()
    );
    assert!(stderr.contains(&says), "{stderr}");
    assert!(stderr.contains("cell-mini-sh.json"), "{stderr}");
    assert!(!m.path("forged-out").exists(), "nothing is written");

    // A name in the store directory that is no store object's.
    let not_an_object = m.path("store/.fruix");
    assert!(not_an_object.exists());
    forged["cell"]["artifacts"]["world"]["store_path"] = not_an_object.to_str().unwrap().into();
    forged["cell"]["artifacts"]["world"]["tree_signature"] = own.clone();
    write_json(&forged_report, &forged);
    let stderr = forged_refused(&m, "fruix-out");
    let says = format!(
        "its artifact \"world\" is {}, which is in the store {} but no store object's name",
        not_an_object.display(),
        m.path("store").display()
    );
    assert!(stderr.contains(&says), "{stderr}");
    assert!(!stderr.contains("inconsistent"), "{stderr}");

    // Another cell's object, of its own signature, is not this artifact's
    // store object when it is another artifact.
    let kernel = local["cell"]["artifacts"]["kernel"].clone();
    forged["cell"]["artifacts"]["world"] = kernel;
    write_json(&forged_report, &forged);
    let stderr = forged_refused(&m, "kernel-out");
    assert!(
        stderr.contains("its artifact \"world\" is ")
            && stderr.contains(", which is the artifact \"kernel\""),
        "{stderr}"
    );
}

/// Regression: a cell report pointing its artifact at another cell's
/// object of that artifact, with that object's true tree signature, made
/// the two cells agree: the object's kernel configuration is the other
/// cell's, and the report is refused (exit 2).
#[test]
fn collect_with_a_store_refuses_another_cell_s_object_for_an_artifact() {
    let m = Matrix::new(
        r#"  (axes (executor "local") (kernconf "GENERIC" "MINIMAL") (make-flag "NONDETERMINISTIC=yes"))"#,
    );
    cells_run(&m, &["local-GENERIC", "local-MINIMAL"]);
    std::fs::create_dir(m.path("forged")).unwrap();
    let generic = read_json(&m.path("jobs/cell-local-GENERIC.json"));
    write_json(&m.path("forged/cell-local-GENERIC.json"), &generic);
    let mut forged = read_json(&m.path("jobs/cell-local-MINIMAL.json"));
    let theirs = generic["cell"]["artifacts"]["world"].clone();
    assert_ne!(
        forged["cell"]["artifacts"]["world"], theirs,
        "the worlds differ"
    );
    forged["cell"]["artifacts"]["world"] = theirs.clone();
    write_json(&m.path("forged/cell-local-MINIMAL.json"), &forged);
    let stderr = forged_refused(&m, "forged-out");
    let says = format!(
        "its cell local-MINIMAL contradicts the store: its artifact \"world\" is {}, which was built with kernconf \"GENERIC\"",
        theirs["store_path"].as_str().unwrap()
    );
    assert!(stderr.contains(&says), "{stderr}");
    assert!(!m.path("forged-out").exists(), "nothing is written");
}

/// Regression: a log beside its cell report that was a symlink was not
/// copied, and the collected report's `log` was null without a word.
#[test]
fn a_symlinked_log_is_not_copied_and_collect_says_why() {
    let m = Matrix::new(r#"  (axes (executor "local"))"#);
    cells_run(&m, &["local"]);
    let log = m.path("jobs/logs/local.log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &log).unwrap();
    let out = run(collect(&m, "out").arg("--from").arg(m.path("jobs")));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let says = format!(
        "fruix: warning: {}: the log of cell local is not copied: {} is a symlink, which is never followed",
        m.path("jobs/cell-local.json").display(),
        log.display()
    );
    assert!(stderr.contains(&says), "{stderr}");
    let report = read_json(&m.path("out/report.json"));
    assert_eq!(report["cells"][0]["log"], Value::Null);
    assert!(!m.path("out/logs/local.log").exists());
}

/// Regression: the `--json` error of an argument clap refused held clap's
/// whole text (`error: invalid value ...`, then `For more information, try
/// '--help'.`).
#[test]
fn a_refused_argument_s_json_error_is_the_message_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rd5");
    std::fs::write(&file, "").unwrap();
    let out = run(crate::util::fruix()
        .args(["matrix", "collect", "m.scm", "--json", "--report-dir"])
        .arg(&file));
    assert_eq!(out.status.code(), Some(USAGE), "{}", describe(&out));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!(
            "invalid value '{0}' for '--report-dir <DIR>': {0} is not a directory (it is a regular file); give a directory, or a path where one can be made",
            file.display()
        )
    );
    // Stderr keeps clap's whole text.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("For more information, try '--help'."),
        "{stderr}"
    );
}
