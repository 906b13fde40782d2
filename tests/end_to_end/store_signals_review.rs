//! `--json` with `--progress-every`: long store work (`store verify`,
//! `export`, `import`, `gc`) prints its counts on stderr at that interval
//! under `--json` too, as `source add` and builds do, and its stdout stays
//! one JSON document. Never a sleep: a gate (see `race`) holds fruix inside
//! an `open` of its work (or the test holds back its input) until a
//! progress line has come.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::interrupts::a_pool_entry;
use crate::race::{Gate, LIMIT};
use crate::util::{
    fruix, made_state, on_store, promoted_store, run_ok, spawn_reading_stderr, store_export,
    store_verify, Reading,
};

/// How long a command may take to end.
const ENDS: Duration = Duration::from_secs(120);

/// The interval the commands are given: short, so that a line comes soon
/// after the work is held.
const EVERY: &[&str] = &["--json", "--progress-every", "10ms"];

/// Checks that `reading` ends with status 0 and one JSON document (an
/// object) on its stdout.
fn one_json_document(reading: Reading, what: &str) -> serde_json::Value {
    let out = reading.finish(ENDS, what);
    assert_eq!(out.status.code(), Some(0), "{what}: {out:?}");
    // Fails on anything after the first document.
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON document ({e}): {out:?}"));
    assert!(value.is_object(), "{what}: {value}");
    value
}

/// Runs `cmd` (`what`) with its first open of `path` held until a line
/// `==> LABEL: ` has come on stderr while it was held; then checks its
/// stdout. Lines printed before the open (a slow start on a busy machine
/// runs past the interval) are passed over: the line must come while the
/// command is held, whatever the machine's speed.
fn shows_progress_while_held(path: &Path, label: &str, cmd: &mut Command, what: &str) {
    let (opened, wait_opened) = mpsc::channel::<()>();
    let (seen, wait_seen) = mpsc::channel::<()>();
    let gate = Gate::new(path, move |_opener| {
        let _ = opened.send(());
        // Held until the line came (or the test failed).
        let _ = wait_seen.recv_timeout(LIMIT);
    });
    let reading = spawn_reading_stderr(cmd);
    let held = wait_opened.recv_timeout(LIMIT);
    assert!(held.is_ok(), "{what}: the open never came");
    while reading.lines.try_recv().is_ok() {}
    let line = reading.wait_for_line(&format!("==> {label}: "));
    assert!(line.starts_with(&format!("==> {label}: ")), "{line}");
    seen.send(()).unwrap();
    assert!(gate.finish().attacked, "{what}: the open never came");
    one_json_document(reading, what);
}

/// Regression: `store verify --json --progress-every` printed no progress
/// (`--json` made it quiet), unlike `source add --json`.
#[test]
fn verify_under_json_prints_progress_on_stderr_and_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = promoted_store(dir.path());
    shows_progress_while_held(
        &a_pool_entry(&store),
        "verify",
        &mut store_verify(&store, EVERY),
        "the verification",
    );
}

/// Regression: `store export --output F --json --progress-every` printed
/// no progress either.
#[test]
fn export_under_json_prints_progress_on_stderr_and_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let bundle = report["result_store"].as_str().unwrap();
    let mut flags = EVERY.to_vec();
    flags.push("--recursive");
    shows_progress_while_held(
        &a_pool_entry(&store),
        "export",
        &mut store_export(&store, &dir.path().join("archive"), &flags, bundle),
        "the export",
    );
}

/// Regression: `store gc --json --progress-every` printed no progress.
/// Held at its first removal (the bundle, a referrer, goes first).
#[test]
fn gc_under_json_prints_progress_on_stderr_and_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let (_, report) = promoted_store(dir.path());
    let bundle = PathBuf::from(report["result_store"].as_str().unwrap());
    let mut cmd = fruix();
    cmd.args(["store", "gc"])
        .args(EVERY)
        .args(made_state(dir.path()));
    shows_progress_while_held(&bundle, "gc", &mut cmd, "the collection");
}

/// Regression: `store import --json --progress-every` printed no progress.
/// Its archive comes on stdin, which the test holds back until a progress
/// line has come; the store it goes to is new, at the exported one's path.
#[test]
fn import_under_json_prints_progress_on_stderr_and_one_json_document() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let archive = dir.path().join("archive");
    let bundle = report["result_store"].as_str().unwrap();
    run_ok(&mut store_export(
        &store,
        &archive,
        &["--recursive"],
        bundle,
    ));
    // Objects move between stores at one path: a new store takes it.
    std::fs::rename(&store, dir.path().join("exported")).unwrap();
    let mut cmd = on_store(&["store", "import"], EVERY, &store);
    cmd.args(["--no-check-sigs", "-"]).stdin(Stdio::piped());
    let mut reading = spawn_reading_stderr(&mut cmd);
    let mut input = reading.child().stdin.take().unwrap();
    reading.wait_for_line("==> import: ");
    input.write_all(&std::fs::read(&archive).unwrap()).unwrap();
    drop(input);
    let imported = one_json_document(reading, "the import");
    assert!(
        imported["imported"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{imported}"
    );
}
