//! `fruix matrix run-cell` and `fruix matrix collect`, the way a CI engine
//! runs a matrix: one job per cell, then one job that merges the cell
//! reports. The merged report must be the one `matrix run` writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::matrix::{describe, external_executors, names_in, Matrix};
use crate::util::{element_with, failed_with, fruix, run, spawn_reading_stderr, strings_of};

const DIVERGENCE: i32 = 6;
const MATRIX_FAILURE: i32 = 5;
const USAGE: i32 = 2;

/// `fruix matrix run-cell` of cell `id` of `m`, into store `store` and
/// report directory `report_dir` (both below the matrix's directory).
fn run_cell(m: &Matrix, id: &str, store: &str, report_dir: &str) -> Output {
    run_cell_with(m, id, store, report_dir, &[])
}

/// [`run_cell`] with `extra` arguments.
pub(crate) fn run_cell_with(
    m: &Matrix,
    id: &str,
    store: &str,
    report_dir: &str,
    extra: &[&str],
) -> Output {
    run(run_cell_command(m, id, store, report_dir).args(extra))
}

/// The command [`run_cell`] runs.
fn run_cell_command(m: &Matrix, id: &str, store: &str, report_dir: &str) -> Command {
    let mut cmd = fruix();
    cmd.arg("--executors-file")
        .arg(external_executors())
        .args(["matrix", "run-cell"])
        .arg(m.path("matrix.scm"))
        .args(["--cell", id, "--store"])
        .arg(m.path(store))
        .arg("--state-dir")
        .arg(m.path("state"))
        .arg("--report-dir")
        .arg(m.path(report_dir));
    cmd
}

/// `fruix matrix collect` of `m`, into report directory `dir`.
pub(crate) fn collect(m: &Matrix, dir: &str) -> Command {
    let mut cmd = fruix();
    cmd.args(["matrix", "collect"])
        .arg(m.path("matrix.scm"))
        .arg("--state-dir")
        .arg(m.path("state"))
        .arg("--report-dir")
        .arg(m.path(dir));
    cmd
}

/// What differs from run to run: the timings, and each cell's result
/// bundle, which records its run (run id, times, logs) and so is a new
/// object every run. (Artifacts are named by content and metadata alone.)
const PER_RUN: [&str; 4] = ["started_at", "finished_at", "duration_s", "result_store"];

/// `value` without what is [`PER_RUN`], with each `(from, to)` replaced in
/// its strings.
pub(crate) fn normalized(value: &Value, replace: &[(String, &str)]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !PER_RUN.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), normalized(v, replace)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| normalized(v, replace)).collect()),
        Value::String(s) => {
            let mut s = s.clone();
            for (from, to) in replace {
                s = s.replace(from.as_str(), to);
            }
            Value::String(s)
        }
        other => other.clone(),
    }
}

/// junit.xml without what is [`PER_RUN`] (its timing attributes and
/// `result_store:` lines), with each `(from, to)` replaced.
pub(crate) fn normalized_junit(xml: &str, replace: &[(String, &str)]) -> String {
    let mut xml: String = xml
        .lines()
        .filter(|l| !l.starts_with("result_store: "))
        .map(|l| format!("{l}\n"))
        .collect();
    for (from, to) in replace {
        xml = xml.replace(from.as_str(), to);
    }
    let mut out = String::new();
    let mut rest = xml.as_str();
    // Drop every time="..." and timestamp="..." attribute.
    while let Some(at) = ["time=\"", "timestamp=\""]
        .iter()
        .filter_map(|a| rest.find(a).map(|i| (i, a.len())))
        .min()
    {
        out.push_str(&rest[..at.0]);
        let after = &rest[at.0 + at.1..];
        rest = &after[after.find('"').expect("attributes are quoted") + 1..];
    }
    out.push_str(rest);
    out
}

/// The paths (`cells/0/log`) at which `a` and `b` differ, with both values.
pub(crate) fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (v, w) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differences(v, w, &format!("{at}/{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                differences(v, w, &format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!("{at}: {a} != {b}")),
        _ => {}
    }
}

pub(crate) fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub(crate) fn path_text(p: PathBuf) -> String {
    p.display().to_string()
}

#[test]
fn run_cell_for_every_cell_then_collect_gives_the_report_of_a_whole_run() {
    let m = Matrix::new(
        r#"  (axes (executor "local" "mini-sh") (kernconf "GENERIC" "MINIMAL"))
  (local-slots 2)"#,
    );
    let whole = m.run(&[]);
    assert_eq!(whole.status.code(), Some(0), "{}", describe(&whole));
    let ids = [
        "local-GENERIC",
        "local-MINIMAL",
        "mini-sh-GENERIC",
        "mini-sh-MINIMAL",
    ];
    // Store objects are named after their store's path too: the jobs use
    // a store at the same path, empty (the whole run's is moved away).
    std::fs::rename(m.path("store"), m.path("whole-run-store")).unwrap();
    // One "job" per cell, each with its own report directory (as a CI
    // engine's artifacts), all promoting into one store.
    for id in ids {
        let out = run_cell(&m, id, "store", &format!("job-{id}"));
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("cell={id}\nstatus=passed\n")),
            "{stdout}"
        );
        let cell = read_json(&m.path(&format!("job-{id}/cell-{id}.json")));
        assert_eq!(cell["format"], "fruix-matrix-cell");
        assert_eq!(cell["cell"]["id"], id);
        assert!(cell["matrix_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"));
        assert!(m.path(&format!("job-{id}/logs/{id}.log")).is_file());
    }
    let mut cmd = collect(&m, "collected");
    cmd.arg("--from")
        .arg(m.dir.path())
        .arg("--store")
        .arg(m.path("store"));
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let replace = |report: &str| vec![(path_text(m.path(report)), "REPORT")];
    let whole_json = normalized(&m.report(), &replace("report"));
    let collected = read_json(&m.path("collected/report.json"));
    for c in collected["cells"].as_array().unwrap() {
        assert!(
            Path::new(c["result_store"].as_str().unwrap()).is_dir(),
            "{c:#}"
        );
    }
    let mut differ = Vec::new();
    differences(
        &normalized(&collected, &replace("collected")),
        &whole_json,
        "",
        &mut differ,
    );
    assert!(
        differ.is_empty(),
        "collected and whole reports differ: {differ:#?}"
    );
    assert_eq!(collected["agreement"].as_array().unwrap().len(), 8);
    for id in ids {
        assert!(m.path(&format!("collected/logs/{id}.log")).is_file());
    }
    let junit = std::fs::read_to_string(m.path("collected/junit.xml")).unwrap();
    let (collected, whole) = (
        normalized_junit(&junit, &replace("collected")),
        normalized_junit(&m.junit(), &replace("report")),
    );
    let differ: Vec<(&str, &str)> = collected
        .lines()
        .zip(whole.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert!(differ.is_empty(), "junit.xml differs: {differ:#?}");
    assert_eq!(collected.lines().count(), whole.lines().count());
}

#[test]
fn a_divergence_is_shown_file_by_file_when_the_store_holds_the_cells_objects() {
    let m =
        Matrix::new(r#"  (axes (executor "local" "mini-sh") (make-flag "NONDETERMINISTIC=yes"))"#);
    for id in ["local", "mini-sh"] {
        let out = run_cell(&m, id, "store", "jobs");
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    let world = |report: &Value| -> Value {
        element_with(&report["agreement"], "artifact", "world").clone()
    };
    // With the store: the differing file is named.
    let mut cmd = collect(&m, "with-store");
    cmd.arg("--from")
        .arg(m.path("jobs"))
        .arg("--store")
        .arg(m.path("store"));
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(DIVERGENCE), "{}", describe(&out));
    let with = world(&read_json(&m.path("with-store/report.json")));
    assert_eq!(with["agree"], false);
    assert_eq!(
        strings_of(&with["differences"], "path"),
        ["./usr/share/misc/build-stamp"],
        "{with:#}"
    );
    // Without: the divergence, and why the files are not compared.
    let out = run(collect(&m, "without-store")
        .arg("--from")
        .arg(m.path("jobs")));
    assert_eq!(out.status.code(), Some(DIVERGENCE), "{}", describe(&out));
    let without = world(&read_json(&m.path("without-store/report.json")));
    assert_eq!(without["agree"], false);
    assert!(without["differences"].as_array().unwrap().is_empty());
    assert_eq!(without["diffoscope"], serde_json::json!([]), "{without:#}");
    let not_compared = &without["not_compared"][0];
    assert_eq!(
        (&not_compared["reason"], &not_compared["cells"]),
        (&"no-store".into(), &serde_json::json!(["local", "mini-sh"])),
        "{without:#}"
    );
    assert!(
        not_compared["message"]
            .as_str()
            .unwrap()
            .contains("give --store"),
        "{without:#}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  local vs mini-sh: files not compared: no store holds"),
        "{stdout}"
    );
}

/// Regression: a cell run again into its report directory kept the
/// `results/ID` link of its earlier pass when it then failed: a garbage
/// collector root still, and a passed cell's link beside a failed cell's
/// report. A cell's own entries are replaced; those of the other cells
/// run into the same directory are kept.
#[test]
fn a_cell_run_again_keeps_nothing_of_its_earlier_run_and_leaves_the_others() {
    let m = Matrix::new(r#"  (axes (executor "local" "mini-sh"))"#);
    for id in ["local", "mini-sh"] {
        let out = run_cell(&m, id, "store", "jobs");
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    assert_eq!(names_in(&m.path("jobs/results")), ["local", "mini-sh"]);
    let text = std::fs::read_to_string(m.path("matrix.scm")).unwrap();
    let failing = text.replace(
        r#"(make-flags "-DNO_ROOT")"#,
        r#"(make-flags "-DNO_ROOT" "FAIL_STEP=buildworld")"#,
    );
    assert_ne!(failing, text);
    std::fs::write(m.path("matrix.scm"), failing).unwrap();
    let out = run_cell(&m, "local", "store", "jobs");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(names_in(&m.path("jobs/results")), ["mini-sh"]);
    let report = read_json(&m.path("jobs/cell-local.json"));
    assert_eq!(report["cell"]["status"], "build-failure", "{report:#}");
    assert_eq!(
        names_in(&m.path("jobs")),
        ["cell-local.json", "cell-mini-sh.json", "logs", "results"]
    );
    assert_eq!(names_in(&m.path("jobs/logs")), ["local.log", "mini-sh.log"]);
}

#[test]
fn missing_foreign_and_corrupt_cell_reports_are_each_reported() {
    let m = Matrix::new(r#"  (axes (executor "local" "mini-sh"))"#);
    let out = run_cell(&m, "local", "store", "jobs");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = m.path("jobs/cell-local.json");

    // A missing cell: reported as missing, never as passed.
    let out = run(collect(&m, "one").arg(&report).arg("--json"));
    assert_eq!(
        out.status.code(),
        Some(MATRIX_FAILURE),
        "{}",
        describe(&out)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let missing = crate::matrix::cell(&json, "mini-sh");
    assert_eq!(missing["status"], "missing", "{missing:#}");
    assert!(
        missing["error"]
            .as_str()
            .unwrap()
            .contains("cell-mini-sh.json"),
        "{missing:#}"
    );
    assert_eq!(crate::matrix::cell(&json, "local")["status"], "passed");
    let junit = std::fs::read_to_string(m.path("one/junit.xml")).unwrap();
    assert!(junit.contains("type=\"missing\""), "{junit}");

    // A cell of another matrix file (the same cells, one more flag).
    let other = Matrix::new(
        r#"  (axes (executor "local" "mini-sh"))
  (retries 2)"#,
    );
    let out = run_cell(&other, "local", "store", "jobs");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let foreign = other.path("jobs/cell-local.json");
    let out = run(collect(&m, "foreign").arg(&foreign));
    assert_eq!(out.status.code(), Some(USAGE), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cell report {}", foreign.display()))
            && stderr.contains("run-cell and collect must read the same matrix file"),
        "{stderr}"
    );
    assert!(!m.path("foreign/report.json").exists());

    // Corrupt: cut short, and an unknown field.
    let text = std::fs::read_to_string(&report).unwrap();
    let cut = m.path("cut/cell-local.json");
    std::fs::create_dir_all(cut.parent().unwrap()).unwrap();
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let extra = m.path("extra/cell-local.json");
    std::fs::create_dir_all(extra.parent().unwrap()).unwrap();
    std::fs::write(&extra, text.replacen('{', "{\"\\u001b[31mred\": 1,", 1)).unwrap();
    for (corrupt, says) in [(&cut, "EOF while parsing"), (&extra, "unknown field")] {
        let out = run(collect(&m, "corrupt").arg(corrupt));
        assert_eq!(out.status.code(), Some(USAGE), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not a readable fruix cell report") && stderr.contains(says),
            "{stderr}"
        );
        assert!(!stderr.contains('\u{1b}'), "escaped: {stderr:?}");
    }

    // The same cell twice: two reports of it.
    let copy = m.path("copy/cell-local.json");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&report, &copy).unwrap();
    let out = run(collect(&m, "twice").arg(&report).arg(&copy));
    failed_with(
        "a cell reported twice",
        &out,
        USAGE,
        &[&format!(
            "cell report {}: cell local is also reported by {}",
            copy.display(),
            report.display()
        )],
    );
    // Regression: one report named twice, or named and found below
    // --from, was refused as reported twice, by itself.
    let out = run(collect(&m, "once")
        .arg(&report)
        .arg(m.path("jobs/../jobs/cell-local.json"))
        .arg("--from")
        .arg(m.path("jobs")));
    assert_eq!(
        out.status.code(),
        Some(MATRIX_FAILURE),
        "{}",
        describe(&out)
    );
    let once = read_json(&m.path("once/report.json"));
    assert_eq!(crate::matrix::cell(&once, "local")["status"], "passed");
    assert_eq!(crate::matrix::cell(&once, "mini-sh")["status"], "missing");

    // A symlink is not followed: named, or found below --from (where it
    // was skipped, its cell reported missing).
    let link = m.path("link/local/cell-local.json");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&report, &link).unwrap();
    let symlink = format!(
        "cell report {}: not a readable fruix cell report: ",
        link.display()
    );
    for from in [false, true] {
        let mut cmd = collect(&m, "link-report");
        match from {
            false => cmd.arg(&link),
            true => cmd.arg("--from").arg(m.path("link")),
        };
        failed_with(
            "a symlinked report",
            &run(&mut cmd),
            USAGE,
            &[&symlink, "is a symlink"],
        );
        assert!(!m.path("link-report").exists());
    }
    // A symlink to a directory below --from is not followed either: with
    // nothing else there, nothing is found, and the link is named.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(m.path("jobs"), m.path("link/jobs")).unwrap();
    let out = run(collect(&m, "link-report").arg("--from").arg(m.path("link")));
    let linked = format!(
        "symlinks to directories below --from are not followed: {}",
        m.path("link/jobs").display()
    );
    failed_with("a symlinked directory", &out, USAGE, &[&linked]);
    assert!(!m.path("link-report").exists());
}

/// Regression: `collect` merged cell reports that contradict themselves,
/// counting a cell `passed` whose last attempt failed.
#[test]
fn a_cell_report_that_contradicts_itself_is_refused() {
    let m = Matrix::new(r#"  (axes (executor "local"))"#);
    let out = run_cell(&m, "local", "store", "jobs");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = read_json(&m.path("jobs/cell-local.json"));
    let started = report["cell"]["started_at"].as_f64().unwrap();
    type Edit = fn(&mut Value, f64);
    let contradictions: [(&str, Edit, &str); 4] = [
        (
            "no attempt",
            |c, _| c["attempts"] = Value::Array(Vec::new()),
            "it is `passed` but lists no attempt",
        ),
        (
            "a failed last attempt",
            |c, _| c["attempts"][0]["status"] = "build-failure".into(),
            "it is `passed` but its last attempt is `build-failure`",
        ),
        (
            "an error",
            |c, _| c["error"] = "build step `buildworld` failed".into(),
            "it is `passed` but gives an `error`",
        ),
        (
            "an end before its start",
            |c, started| c["finished_at"] = (started - 10.0).into(),
            "`finished_at` (",
        ),
    ];
    for (what, edit, says) in contradictions {
        let mut changed = report.clone();
        edit(&mut changed["cell"], started);
        let path = m.path("edited/cell-local.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string(&changed).unwrap()).unwrap();
        let out = run(collect(&m, "collected").arg(&path));
        let prefix = format!(
            "cell report {}: its cell local contradicts itself: ",
            path.display()
        );
        failed_with(what, &out, USAGE, &[&prefix, says]);
        assert!(!m.path("collected").exists(), "{what}: nothing is written");
    }
    // The report as run-cell wrote it is merged.
    let out = run(collect(&m, "collected").arg(m.path("jobs/cell-local.json")));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// Regression: `collect` with no cell report to merge (none named and no
/// --from, or a --from holding none: every cell job failed to pass its
/// report on) reported every cell missing (exit 5), and without
/// --report-dir wrote a new report directory into the state directory.
#[test]
fn nothing_to_collect_is_a_usage_error_and_writes_nothing() {
    let m = Matrix::new(r#"  (axes (executor "local" "mini-sh"))"#);
    std::fs::create_dir_all(m.path("empty/job-1")).unwrap();
    let base = || {
        let mut cmd = fruix();
        cmd.args(["matrix", "collect"])
            .arg(m.path("matrix.scm"))
            .arg("--state-dir")
            .arg(m.path("state"));
        cmd
    };
    let out = run(&mut base());
    failed_with(
        "no report and no --from",
        &out,
        USAGE,
        &["nothing to collect; give cell reports (cell-ID.json) or --from DIR"],
    );
    let out = run(base().arg("--from").arg(m.path("empty")));
    let none = format!(
        "--from {}: no cell report (cell-*.json) found below it",
        m.path("empty").display()
    );
    failed_with("an empty --from", &out, USAGE, &[&none]);
    assert!(!m.path("state").exists(), "no report directory is made");
}

#[test]
fn run_cell_and_run_with_verbose_stream_every_log_line_after_its_cell() {
    let m = Matrix::new(r#"  (axes (executor "local"))"#);
    let out = run_cell_with(&m, "local", "store", "job", &["--verbose"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(m.path("job/logs/local.log")).unwrap();
    // The fixture's banner, as the cell's log has it.
    let banner = ">>> World build started";
    assert!(log.contains(banner), "{log}");
    assert!(stderr.contains(&format!("local| {banner}")), "{stderr}");
    assert!(
        stderr.contains("==> local: buildkernel done in "),
        "{stderr}"
    );
    let out = m.run(&["--verbose"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("local| {banner}")), "{stderr}");
    let out = m.run(&["--verbose", "--quiet"]);
    assert_eq!(out.status.code(), Some(USAGE), "{}", describe(&out));
}

/// Without a terminal, a cell's stage that has printed nothing for
/// `--progress-every` (here from its environment variable) says it is
/// still running; SIGTERM still stops the cell, reported cancelled.
#[test]
fn run_cell_says_a_silent_stage_is_still_running() {
    let m = Matrix::new(r#"  (axes (executor "local") (make-flag "HOLD_BUILD=yes"))"#);
    let id = "local";
    let mut cmd = run_cell_command(&m, id, "store", "job");
    let mut cell = spawn_reading_stderr(cmd.env("FRUIX_PROGRESS_EVERY", "1s"));
    let line = cell.wait_for_line(&format!("==> {id}: buildworld still running after "));
    assert!(
        line.ends_with("; last output: >>> HOLD_BUILD=yes: waiting to be interrupted"),
        "{line}"
    );
    cell.signal(libc::SIGTERM);
    let out = cell.finish(Duration::from_secs(60), "run-cell");
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    let cell = read_json(&m.path(&format!("job/cell-{id}.json")));
    assert_eq!(cell["cell"]["status"], "cancelled");
}

#[test]
fn run_cell_exits_as_the_cell_would_and_refuses_an_unknown_cell() {
    let m = Matrix::new(r#"  (axes (executor "local") (make-flag "FAIL_STEP=buildworld"))"#);
    let out = run_cell(&m, "local", "store", "jobs");
    // Without a terminal, each stage shows as it starts and ends (a CI log
    // shows where a long cell is), but no log line without --verbose.
    let stages = [
        "==> local: started on local\n",
        "==> local: buildworld\n",
        "==> local: buildworld FAILED in ",
        "==> local: build-failure",
    ];
    let stderr = failed_with("a build failure", &out, 1, &stages);
    assert!(!stderr.contains("local| "), "{stderr}");
    let cell = read_json(&m.path("jobs/cell-local.json"));
    assert_eq!(cell["cell"]["status"], "build-failure");
    let out = run_cell(&m, "nope", "store", "jobs");
    assert_eq!(out.status.code(), Some(USAGE), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--cell \"nope\" is not a cell of") && stderr.contains("its cells: local"),
        "{stderr}"
    );
}

/// Regression: a cell's times came from the wall clock, so that one
/// stepped back while the cell built (NTP, an operator) made run-cell
/// write a passed cell that ended before it started, with `duration_s`
/// 0, which collect refused as contradicting itself (exit 2). Durations
/// are measured on the monotonic clock now, and every time is the start
/// plus what it measured. libfaketime steps the wall clock (only) back an
/// hour once the cell's build holds (its make has made `go.holding`).
#[test]
fn a_wall_clock_stepped_back_while_a_cell_builds_leaves_its_report_consistent() {
    let libfaketime = Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1");
    assert!(
        libfaketime.is_file(),
        "{} is missing: install faketime",
        libfaketime.display()
    );
    let m = Matrix::new(r#"  (axes (executor "local") (make-flag "HOLD_UNTIL=DIR/go"))"#);
    let text = std::fs::read_to_string(m.path("matrix.scm")).unwrap();
    let dir = m.dir.path().display().to_string();
    std::fs::write(m.path("matrix.scm"), text.replace("DIR", &dir)).unwrap();
    let plan = m.plan(&mut fruix());
    let id = plan["cells"][0]["id"].as_str().unwrap().to_string();
    let offset = m.path("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let mut cmd = run_cell_command(&m, &id, "store", "job");
    cmd.env("LD_PRELOAD", libfaketime)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdin(std::process::Stdio::null());
    let cell = spawn_reading_stderr(&mut cmd);
    crate::util::wait_until("the cell's build holds", || m.path("go.holding").exists());
    std::fs::write(&offset, "-3600\n").unwrap();
    std::fs::write(m.path("go"), "").unwrap();
    let out = cell.finish(Duration::from_secs(300), "run-cell");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = read_json(&m.path(&format!("job/cell-{id}.json")));
    let c = &report["cell"];
    let time = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("{c:#}"));
    let (started, finished) = (time(&c["started_at"]), time(&c["finished_at"]));
    let attempt = &c["attempts"][0];
    assert!(started <= finished, "{c:#}");
    assert!(
        time(&attempt["started_at"]) <= time(&attempt["finished_at"]),
        "{c:#}"
    );
    assert!(time(&c["duration_s"]) > 0.0, "{c:#}");
    assert!(
        (finished - started - time(&c["duration_s"])).abs() < 0.01,
        "{c:#}"
    );
    // collect takes it.
    let out = run(collect(&m, "collected").arg(m.path(&format!("job/cell-{id}.json"))));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
