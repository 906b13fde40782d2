//! A machine's `parallel-builds` slots hold across the `fruix matrix run`
//! processes of one host sharing a state directory: with `parallel-builds
//! 1`, a second run's cell waits, saying so, until the first run's build on
//! the machine ends; Ctrl-C ends a run whose cell waits, promptly, the cell
//! never started.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::matrix::describe;
use crate::util::{fruix, spawn_reading_stderr, store_and_state, wait_until, Reading};

/// A build that holds its slot until told: it marks `marks/started-CELL`,
/// waits for `marks/release-CELL`, writes the four probe files, and marks
/// `marks/ended-CELL` (CELL from its make flag `CELL=...`).
const HOLD_SCRIPT: &str = concat!(
    r#"#!/bin/sh
set -eu
cell=$(printf '%s\n' "$FRUIX_MAKE_FLAGS" | sed -n 's/.*CELL=\([a-z0-9]*\).*/\1/p')
marks=$FRUIX_EXECUTOR_DIR/marks
: > "$marks/started-$cell"
while [ ! -e "$marks/release-$cell" ]; do sleep 0.05; done
"#,
    include_str!("../fixtures/external/null-artifacts.sh"),
    r#": > "$marks/ended-$cell"
"#
);

/// The executor (declared remote: its cells take the machine's slots; it
/// never connects to it), a machine of one slot, and one matrix file per
/// cell, `CELL.scm`, in `d`.
fn setup(d: &Path, cells: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::create_dir(d.join("marks")).unwrap();
    std::fs::write(d.join("src/Makefile"), "buildworld:\n").unwrap();
    std::fs::write(d.join("hold.sh"), HOLD_SCRIPT).unwrap();
    std::fs::set_permissions(d.join("hold.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        d.join("executors.scm"),
        fruix_core::testing::remote_executor_file(
            "slot-hold",
            "holds its build until told (test fixture)",
            "./hold.sh",
            300,
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("machines.scm"),
        r#"(fruix-machines
  (machine (name "solo") (host "127.0.0.1") (port 9) (user "root") (parallel-builds 1)))
"#,
    )
    .unwrap();
    for cell in cells {
        std::fs::write(
            d.join(format!("{cell}.scm")),
            format!(
                r#"(fruix-matrix
  (format-version 1)
  (source "src")
  (freebsd-version "15.0-STABLE")
  (machines-file "machines.scm")
  (axes (executor "slot-hold") (make-flag "CELL={cell}"))
  (jobs 1)
  (source-date-epoch 1775420084))
"#
            ),
        )
        .unwrap();
    }
}

/// `fruix matrix run CELL.scm` in `d`, into `report-CELL`, with the store
/// and state directory every run there shares.
fn matrix_run(d: &Path, cell: &str, report: &str) -> Command {
    let mut cmd = fruix();
    cmd.arg("--executors-file")
        .arg(d.join("executors.scm"))
        .args(["matrix", "run"])
        .arg(d.join(format!("{cell}.scm")))
        .args(store_and_state(d))
        .arg("--report-dir")
        .arg(d.join(report));
    cmd
}

/// The report `fruix matrix run` wrote into `d/report`.
fn report(d: &Path, report: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(d.join(report).join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Starts `cmd` (in `d`), whose build marks `cell`: it is waiting for the
/// slot of `solo` once it says so, its build not started.
fn waiting(cmd: &mut Command, d: &Path, cell: &str) -> Reading {
    let run = spawn_reading_stderr(cmd);
    let line = run.wait_for_line("waits for a build slot on solo");
    assert!(
        line.contains(
            "its only slot (parallel-builds 1) is held by another fruix process with this state directory"
        ),
        "{line}"
    );
    assert!(!d.join(format!("marks/started-{cell}")).exists());
    run
}

/// Regression: two `matrix run` processes sharing a state directory each
/// counted the slots of a machine in memory, so both built on a machine of
/// `parallel-builds 1` at once. Now the second one's cell waits, saying
/// so, until the first one's build ends (the machine's slot file is held
/// for the build); Ctrl-C ends a run waiting so at once, its cell never
/// started.
#[test]
fn a_machine_s_slots_hold_across_matrix_runs_sharing_a_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, &["a", "b"]);
    let first = spawn_reading_stderr(&mut matrix_run(d, "a", "report-a"));
    wait_until("the first run's build holds the slot", || {
        d.join("marks/started-a").exists()
    });

    // Ctrl-C while the cell waits: the run ends (exit 130), the cell never
    // started.
    let mut cancelled = waiting(&mut matrix_run(d, "b", "report-cancelled"), d, "b");
    cancelled.signal(libc::SIGINT);
    let out = cancelled.finish(Duration::from_secs(30), "the cancelled run");
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    let r = report(d, "report-cancelled");
    let cell = &r["cells"][0];
    assert_eq!(cell["status"], "cancelled", "{r:#}");
    assert_eq!(cell["attempts"], serde_json::json!([]), "{r:#}");
    assert_eq!(cell["error"], "never started", "{r:#}");
    assert!(!d.join("marks/started-b").exists());

    // The second run waits until the first one's build ends.
    let second = waiting(&mut matrix_run(d, "b", "report-b"), d, "b");
    std::fs::write(d.join("marks/release-a"), "").unwrap();
    wait_until("the second run's build starts", || {
        d.join("marks/started-b").exists()
    });
    assert!(
        d.join("marks/ended-a").exists(),
        "the second run's build started only once the first one's ended"
    );
    std::fs::write(d.join("marks/release-b"), "").unwrap();
    for (run, name) in [(first, "report-a"), (second, "report-b")] {
        let out = run.finish(Duration::from_secs(60), name);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let r = report(d, name);
        assert_eq!(r["cells"][0]["status"], "passed", "{r:#}");
        assert_eq!(r["cells"][0]["machine"], "solo", "{r:#}");
    }
    let r = report(d, "report-b");
    let log = std::fs::read_to_string(r["cells"][0]["log"].as_str().unwrap()).unwrap();
    assert!(
        log.contains("attempt 1 waits for a build slot on solo"),
        "{log}"
    );
}

/// `fruix build --json` of the slot-hold executor on machine `solo`, its
/// build marking `CELL`, with the store and state directory of the
/// matrix runs in `d`.
fn build_on_solo(d: &Path, cell: &str) -> Command {
    let mut cmd = fruix();
    cmd.arg("--executors-file")
        .arg(d.join("executors.scm"))
        .args(["build", "--executor", "slot-hold", "--source"])
        .arg(d.join("src"))
        .args(["--freebsd-version", "15.0-STABLE", "--jobs", "1"])
        .arg("--make-flag")
        .arg(format!("CELL={cell}"))
        .arg("--machines")
        .arg(d.join("machines.scm"))
        .args(["--machine", "solo", "--no-out-link", "--json"])
        .args(store_and_state(d));
    cmd
}

/// The one JSON value `out` printed on stdout (`--json` prints nothing
/// else there).
fn json_stdout(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)))
}

/// Regression: `fruix build --machine m` took none of m's slots, so a
/// build run beside a `matrix run` (with the same state directory)
/// overloaded m past its `parallel-builds`. Now it waits, saying so on
/// stderr (under `--json`, stdout holds its JSON only), until the matrix
/// run's build ends; Ctrl-C ends a build waiting so, never started.
#[test]
fn fruix_build_on_a_machine_waits_for_a_slot_a_matrix_run_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, &["a"]);
    let run = spawn_reading_stderr(&mut matrix_run(d, "a", "report-a"));
    wait_until("the matrix run's build holds the slot", || {
        d.join("marks/started-a").exists()
    });

    let run_dirs = || {
        let runs = std::fs::read_dir(d.join("state/native-builds")).unwrap();
        let mut names: Vec<_> = runs.map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    };
    let before = run_dirs();
    let mut cancelled = waiting(&mut build_on_solo(d, "c"), d, "c");
    cancelled.signal(libc::SIGINT);
    let out = cancelled.finish(Duration::from_secs(30), "the cancelled build");
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    let error = &json_stdout(&out)["error"]["message"];
    assert!(
        error
            .as_str()
            .is_some_and(|m| m.contains("cancelled while it waited for a build slot on solo")),
        "{}",
        describe(&out)
    );
    assert!(!d.join("marks/started-c").exists());
    assert_eq!(
        run_dirs(),
        before,
        "the cancelled build made no result root"
    );

    let build = waiting(&mut build_on_solo(d, "b"), d, "b");
    std::fs::write(d.join("marks/release-a"), "").unwrap();
    wait_until("the build starts", || d.join("marks/started-b").exists());
    assert!(
        d.join("marks/ended-a").exists(),
        "the build started only once the matrix run's build ended"
    );
    std::fs::write(d.join("marks/release-b"), "").unwrap();
    let out = build.finish(Duration::from_secs(60), "the build");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(json_stdout(&out).is_object(), "{}", describe(&out));
    let out = run.finish(Duration::from_secs(60), "the matrix run");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(report(d, "report-a")["cells"][0]["status"], "passed");
}
