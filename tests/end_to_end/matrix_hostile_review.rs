//! Regressions of a hostile review of `fruix matrix`: `export -o` at what
//! is not a regular file, cell logs through planted symlinks, two runs
//! sharing one report directory, and format characters in what a matrix
//! prints.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Output, Stdio};

use crate::matrix::{describe, Matrix};
use crate::util::{failed_with, fruix, run, store_and_state, wait_until};

/// `fruix matrix export matrix.scm --format gitlab-ci -o OUTPUT` in `m`'s
/// directory, not run.
fn export_command(m: &Matrix, output: &str) -> std::process::Command {
    let mut cmd = fruix();
    cmd.current_dir(m.dir.path())
        .args([
            "matrix",
            "export",
            "matrix.scm",
            "--format",
            "gitlab-ci",
            "-o",
        ])
        .arg(output);
    cmd
}

/// [`export_command`], run.
fn export_to(m: &Matrix, output: &str) -> Output {
    run(&mut export_command(m, output))
}

/// Whether `path` is a FIFO (not following a symlink).
fn is_fifo(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// Regression: `export -o PATH` renamed its temporary over whatever was at
/// PATH: a FIFO, a device, or (through a symlink) `/dev/stdout` became a
/// regular file. Now anything but a regular file, or a symlink to one, is
/// refused (exit 2) and left as it was; `-o -` is standard output.
#[test]
fn export_output_refuses_what_is_not_a_regular_file() {
    let m = Matrix::new(r#"  (axes (executor "local") (kernconf "GENERIC" "MINIMAL"))"#);
    let fifo = m.path("fifo");
    fruix_core::testing::mkfifo(&fifo).unwrap();
    std::os::unix::fs::symlink(&fifo, m.path("to-fifo")).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd/1", m.path("to-proc")).unwrap();
    std::os::unix::fs::symlink(m.path("nowhere"), m.path("dangling")).unwrap();
    std::fs::create_dir(m.path("dir")).unwrap();
    for name in ["fifo", "to-fifo", "to-proc", "dangling", "dir"] {
        let out = export_to(&m, name);
        failed_with(
            name,
            &out,
            2,
            &[&format!("refusing to write the pipeline to {name}: ")],
        );
    }
    assert!(is_fifo(&fifo), "the FIFO is left alone");
    for link in ["to-fifo", "to-proc", "dangling"] {
        assert!(
            std::fs::symlink_metadata(m.path(link)).is_ok_and(|m| m.is_symlink()),
            "{link} is left alone"
        );
    }
    assert!(!m.path("nowhere").exists());
    // A symlink into /proc is refused even when the open file it names is
    // a regular file (as /dev/stdout is, redirected to a file).
    let stdout_file = std::fs::File::create(m.path("stdout")).unwrap();
    let out = export_command(&m, "to-proc")
        .stdout(stdout_file)
        .output()
        .unwrap();
    failed_with("to-proc, stdout a file", &out, 2, &["symlink into /proc"]);
    assert!(std::fs::symlink_metadata(m.path("to-proc")).is_ok_and(|m| m.is_symlink()));
    assert_eq!(std::fs::read_to_string(m.path("stdout")).unwrap(), "");
    // A symlink to a regular file is replaced (the link, not its target).
    std::fs::write(m.path("old.yml"), "old").unwrap();
    std::os::unix::fs::symlink("old.yml", m.path("to-file")).unwrap();
    let out = export_to(&m, "to-file");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(m.path("old.yml")).unwrap(), "old");
    let written = std::fs::read_to_string(m.path("to-file")).unwrap();
    assert!(written.contains("local-MINIMAL"), "{written}");
    // `-o -` is standard output, and writes no file named `-`.
    let out = export_to(&m, "-");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), written);
    assert!(!m.path("-").exists());
}

/// The make flag of a cell whose build holds until the test makes `go`
/// (having made `go.holding`) in a [`held_matrix`]'s directory.
const HELD: &str = "\"HOLD_UNTIL=DIR/go\"";

/// A matrix of two `local` cells run one at a time, the values of its
/// `make-flag` axis `flags` ([`HELD`], and `"A=1"`, which builds at once).
/// Returns it and its cells' ids, in order.
fn held_matrix(flags: [&str; 2]) -> (Matrix, [String; 2]) {
    let m = Matrix::new(&format!(
        "  (axes (executor \"local\") (make-flag {} {}))\n  (max-parallel 1)",
        flags[0], flags[1]
    ));
    let text = std::fs::read_to_string(m.path("matrix.scm")).unwrap();
    let dir = m.dir.path().display().to_string();
    std::fs::write(m.path("matrix.scm"), text.replace("DIR", &dir)).unwrap();
    let plan = m.plan(&mut fruix());
    let id = |i: usize| plan["cells"][i]["id"].as_str().unwrap().to_string();
    let ids = [id(0), id(1)];
    (m, ids)
}

/// Starts `m`'s run (reports in `report/`), its output piped.
fn spawn_run(m: &Matrix) -> std::process::Child {
    m.command(&[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Lets the held cell of a [`held_matrix`] run go on, and waits for
/// the run to end.
fn let_go(m: &Matrix, child: std::process::Child) -> Output {
    std::fs::write(m.path("go"), "").unwrap();
    crate::util::wait_with_deadline(child, std::time::Duration::from_secs(300), "fruix")
}

/// Regression: a cell's log was opened by path, following symlinks: a
/// symlink planted at `logs/ID.log` while the run went on (after its
/// start-of-run cleanup) had the whole build log appended to its target
/// outside the report directory. Now the log is opened beneath `logs/`'s
/// descriptor without following a symlink, and the cell fails instead.
#[test]
fn a_symlink_planted_at_a_cell_s_log_during_a_run_is_not_written_through() {
    let (m, [first, second]) = held_matrix([HELD, "\"A=1\""]);
    let child = spawn_run(&m);
    wait_until("the first cell holds", || m.path("go.holding").exists());
    std::fs::write(m.path("outside"), "outside\n").unwrap();
    let log = m.path(&format!("report/logs/{second}.log"));
    std::os::unix::fs::symlink(m.path("outside"), &log).unwrap();
    let out = let_go(&m, child);
    assert_eq!(
        std::fs::read_to_string(m.path("outside")).unwrap(),
        "outside\n",
        "nothing is written through the symlink: {}",
        describe(&out)
    );
    let report = m.report();
    let cells = report["cells"].as_array().unwrap();
    let status = |id: &str| cells.iter().find(|c| c["id"] == id).unwrap()["status"].clone();
    assert_eq!(status(&first), "passed", "{report:#}");
    assert_ne!(status(&second), "passed", "{report:#}");
    let error = cells.iter().find(|c| c["id"] == *second).unwrap()["error"].to_string();
    assert!(error.contains("symlink"), "{error}");
}

/// Regression: `logs/` swapped for a symlink to another directory while
/// the run went on had the later cells' logs written there. Now the logs
/// go into the `logs/` the run opened, wherever it is.
#[test]
fn logs_swapped_for_a_symlink_during_a_run_are_not_written_through() {
    let (m, [_, second]) = held_matrix([HELD, "\"A=1\""]);
    let child = spawn_run(&m);
    wait_until("the first cell holds", || m.path("go.holding").exists());
    std::fs::create_dir(m.path("elsewhere")).unwrap();
    std::fs::rename(m.path("report/logs"), m.path("report/logs-moved")).unwrap();
    std::os::unix::fs::symlink(m.path("elsewhere"), m.path("report/logs")).unwrap();
    let out = let_go(&m, child);
    assert_eq!(
        std::fs::read_dir(m.path("elsewhere")).unwrap().count(),
        0,
        "nothing is written through the symlink: {}",
        describe(&out)
    );
    let moved = m.path(&format!("report/logs-moved/{second}.log"));
    assert!(
        std::fs::read_to_string(&moved).is_ok_and(|log| log.contains("attempt 1")),
        "{}",
        describe(&out)
    );
}

/// Regression: two `matrix run`s into one report directory corrupted
/// each other: the second's start-of-run cleanup removed the first's
/// `results/` links (its garbage collector roots) and logs while it ran.
/// Now a run holds the directory locked; a second run, or a cell run,
/// is refused at once (exit 2), and the first run's report is whole.
#[test]
fn a_second_run_into_a_report_directory_in_use_is_refused() {
    let (m, [first, second]) = held_matrix(["\"A=1\"", HELD]);
    let child = spawn_run(&m);
    let link = m.path(&format!("report/results/{first}"));
    let linked = || std::fs::symlink_metadata(&link).is_ok_and(|m| m.is_symlink());
    // The first cell is promoted while the second builds.
    wait_until("the first cell is linked and the second holds", || {
        linked() && m.path("go.holding").exists()
    });
    let deadline = std::time::Duration::from_secs(60);
    let out = crate::util::run_with_deadline(&mut m.command(&[]), deadline);
    let in_use = "is in use by another fruix matrix command";
    failed_with("a second run", &out, 2, &[in_use]);
    let mut run_cell = fruix();
    run_cell
        .arg("--executors-file")
        .arg(crate::matrix::external_executors())
        .args(["matrix", "run-cell"])
        .arg(m.path("matrix.scm"))
        .args(["--cell", &second])
        .args(store_and_state(m.dir.path()))
        .arg("--report-dir")
        .arg(m.path("report"));
    let out = crate::util::run_with_deadline(&mut run_cell, deadline);
    failed_with("a cell run", &out, 2, &[in_use]);
    assert!(linked(), "the first run's result link is kept");
    let out = let_go(&m, child);
    assert!(m.path("report/report.json").exists(), "{}", describe(&out));
    let report = m.report();
    for id in [&first, &second] {
        let c = crate::matrix::cell(&report, id);
        assert_eq!(c["status"], "passed", "{c:#}");
        assert_eq!(c["attempts"].as_array().unwrap().len(), 1, "{c:#}");
        let log = std::fs::read_to_string(m.path(&format!("report/logs/{id}.log"))).unwrap();
        assert_eq!(log.matches("=== ").count(), 2, "one attempt: {log}");
    }
    assert!(linked());
}

/// Regression: format characters (U+202E reverses what a terminal shows
/// after it) were printed raw by `matrix plan`. A matrix file may not hold
/// one where cells show it (refused, exit 2, escaped in the error); a
/// machines file's machine name, which may, is shown escaped.
#[test]
fn format_characters_are_refused_in_a_matrix_file_and_escaped_in_the_plan() {
    let m = Matrix::new("  (axes (executor \"local\") (kernconf \"GEN\u{202e}ERIC\"))");
    let out = run(fruix().args(["matrix", "plan"]).arg(m.path("matrix.scm")));
    let stderr = failed_with(
        "a kernconf with U+202E",
        &out,
        2,
        &[r#""GEN\342\200\256ERIC" is not a valid kernconf"#],
    );
    assert!(!stderr.contains('\u{202e}'), "{stderr}");
    let m =
        Matrix::new("  (machines-file \"machines.scm\")\n  (axes (executor \"host-initiated\"))");
    // The plan checks that the key of the machine its cell uses opens.
    let key = m.path("id_ed25519");
    std::fs::write(&key, "a key\n").unwrap();
    std::fs::write(
        m.path("machines.scm"),
        format!("(fruix-machines\n  (machine (name \"m\u{202e}1\") (host \"10.0.0.1\") (user \"root\")\n    (private-key {:?}) (host-key \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA000000000000000000000000000000000000000001\")))\n", key.display().to_string()),
    )
    .unwrap();
    let out = run(fruix().args(["matrix", "plan"]).arg(m.path("matrix.scm")));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r"on machine m\342\200\2561"), "{stdout}");
    assert!(!stdout.contains('\u{202e}'), "{stdout}");
}
