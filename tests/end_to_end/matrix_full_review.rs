//! What a review of failures that must leave nothing behind found in
//! `fruix matrix run`, `fruix man --dir` and the commands that read a
//! source tree: a cell log cut short by a full disk fails its cell and
//! the run, a `man --dir` that fails takes back what it wrote (and a
//! killed one's temporaries are removed by the next), and running out of
//! file descriptors is a system failure that says what was being done.

use std::ffi::OsStr;
use std::process::{Command, Output};

use fruix_core::testing::sorted_names as names;
use serde_json::Value;

use crate::matrix::{cell, describe, Matrix};
use crate::util::{fixture_source, fruix, run, SmallFilesystem};

const SYSTEM_FAILURE: i32 = 3;

/// The JSON error of `out`, which must have exited with `status`.
fn json_error(out: &Output, status: i32) -> Value {
    assert_eq!(out.status.code(), Some(status), "{}", describe(out));
    let json: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)));
    json["error"].clone()
}

/// The message of a JSON error.
fn message(error: &Value) -> &str {
    error["message"].as_str().unwrap()
}

/// Regression: with its `logs/` on a full filesystem, `matrix run` cut
/// each cell's log at what fit, ignored the failed writes, and reported the
/// cells passed (exit 0). Now the cell fails as a system failure saying
/// which log could not be written, and the run fails with it (exit 3, a
/// JSON error), after writing its report, which says why.
#[test]
fn a_cell_log_on_a_full_disk_fails_the_cell_and_the_run() {
    let m = Matrix::new(r#"  (axes (executor "local"))"#);
    let logs = m.path("report/logs");
    let small = SmallFilesystem::mount(logs.clone(), "8k");
    let out = run(&mut m.command(&["--json"]));
    let error = json_error(&out, SYSTEM_FAILURE);
    let log = logs.join("local.log");
    let said = format!("failed to write log file {}: ", log.display());
    assert!(message(&error).contains(&said), "{error:#}");
    assert!(
        message(&error).contains("No space left on device"),
        "{error:#}"
    );
    let report = m.path("report/report.json");
    assert!(
        message(&error).contains(&format!("the report {} says", report.display())),
        "{error:#}"
    );
    let report = m.report();
    let local = cell(&report, "local");
    assert_eq!(local["status"], "system-failure", "{local:#}");
    assert!(
        local["error"].as_str().unwrap().contains(&said),
        "{local:#}"
    );
    assert!(local["artifacts"].as_object().is_none_or(|a| a.is_empty()));
    drop(small);

    // The whole report directory full: the report cannot be written
    // either, and the error says both.
    let m = Matrix::new(r#"  (axes (executor "local"))"#);
    let small = SmallFilesystem::mount(m.path("full"), "8k");
    let out = run(&mut m.command_reporting_to("full/report", &["--json"]));
    let error = json_error(&out, SYSTEM_FAILURE);
    let log = small.path.join("report/logs/local.log");
    assert!(
        message(&error).contains(&format!("failed to write log file {}: ", log.display())),
        "{error:#}"
    );
    assert!(
        message(&error).contains("the report could not be written either"),
        "{error:#}"
    );
}

/// Runs `CMD man --dir DIR`, which must fail as a system failure; returns
/// its output.
fn man_dir_failing(mut cmd: Command, dir: impl AsRef<OsStr>) -> Output {
    let out = run(cmd.args(["man", "--dir"]).arg(dir));
    assert_eq!(
        out.status.code(),
        Some(SYSTEM_FAILURE),
        "{}",
        describe(&out)
    );
    out
}

/// Regression: `man --dir` on a full disk left the pages it had written,
/// and the directory it had made, and said nothing of them. Now it removes
/// what it made, and says so.
#[test]
fn man_dir_on_a_full_disk_removes_what_it_wrote() {
    let top = tempfile::tempdir().unwrap();
    // 33 pages of a block each do not fit in 64k.
    let small = SmallFilesystem::mount(top.path().join("fs"), "64k");
    let made = small.path.join("made/man1");
    let out = man_dir_failing(fruix(), &made);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("page(s) this run had made"), "{stderr}");
    assert!(
        stderr.contains(&format!("removed {}, which it made", made.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "removed {}, which it made",
            small.path.join("made").display()
        )),
        "{stderr}"
    );
    assert_eq!(names(&small.path), Vec::<String>::new());

    // A directory that was there keeps what it held, and only that.
    let there = small.path.join("there");
    std::fs::create_dir(&there).unwrap();
    std::fs::write(there.join("notes"), "mine\n").unwrap();
    man_dir_failing(fruix(), &there);
    assert_eq!(names(&there), ["notes"]);
    assert_eq!(
        std::fs::read_to_string(there.join("notes")).unwrap(),
        "mine\n"
    );
}

/// Regression: `man --dir x/../keep_empty/sub` on a full disk counted
/// every ancestor missing from the path as written (`x/..`,
/// `x/../keep_empty`) as one it had made, so removed `keep_empty`, which
/// was there before, and tried to remove the working directory. Now it
/// removes only the directories its own mkdir made (`sub` and `x`),
/// deepest first.
#[test]
fn man_dir_through_dot_dot_removes_only_the_directories_it_made() {
    let top = tempfile::tempdir().unwrap();
    let small = SmallFilesystem::mount(top.path().join("fs"), "64k");
    std::fs::create_dir(small.path.join("keep_empty")).unwrap();
    let mut in_fs = fruix();
    in_fs.current_dir(&small.path);
    let out = man_dir_failing(in_fs, "x/../keep_empty/sub");
    assert_eq!(names(&small.path), ["keep_empty"], "{}", describe(&out));
    assert_eq!(names(&small.path.join("keep_empty")), Vec::<String>::new());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    for made in ["x/../keep_empty/sub", "x"] {
        let made = small.path.join(made);
        assert!(
            stderr.contains(&format!("removed {}, which it made", made.display())),
            "{}: {stderr}",
            made.display()
        );
    }
    assert_eq!(stderr.matches("which it made").count(), 2, "{stderr}");
}

/// Regression: a `fruix man --dir` killed while it wrote left
/// `.PAGE.tmp-PID-HEX` temporaries that no later run removed. The next
/// run removes those of its own pages whose process is gone, and nothing
/// else: not a live process's, not a name of another shape, not a
/// directory.
#[test]
fn man_dir_removes_the_temporaries_a_killed_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let live_pid = std::process::id();
    let leftover = format!(".fruix-store.1.tmp-{gone_pid}-15aee50d12");
    let kept = [
        format!(".fruix-store.1.tmp-{live_pid}-15aee50d12"),
        format!(".fruix-store.1.tmp-{gone_pid}-15aee50d12.keep"),
        format!(".fruix-no-such-page.1.tmp-{gone_pid}-15aee50d12"),
        format!(".fruix-store.1.tmp-{gone_pid}-15aee50d"),
        "fruix-store.1.tmp".to_string(),
    ];
    for name in std::iter::once(&leftover).chain(&kept) {
        std::fs::write(dir.path().join(name), "partial").unwrap();
    }
    let a_directory = format!(".fruix.1.tmp-{gone_pid}-15aee50d12");
    std::fs::create_dir(dir.path().join(&a_directory)).unwrap();
    let out = run(fruix().args(["man", "--dir"]).arg(dir.path()));
    assert!(out.status.success(), "{}", describe(&out));
    let names = names(dir.path());
    assert!(!names.contains(&leftover), "{names:?}");
    for name in kept.iter().chain([&a_directory]) {
        assert!(names.contains(name), "{name} in {names:?}");
    }
    assert!(names.iter().any(|n| n == "fruix-store.1"), "{names:?}");
}

/// `fruix ARGS` (as [`fruix`] runs it) under `ulimit -n limit`.
fn with_open_files(limit: u32, args: &[&std::ffi::OsStr]) -> Output {
    let fruix = fruix();
    let mut sh = Command::new("sh");
    if let Some(dir) = fruix.get_current_dir() {
        sh.current_dir(dir);
    }
    for (key, value) in fruix.get_envs() {
        if let Some(value) = value {
            sh.env(key, value);
        }
    }
    sh.arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$@\""))
        .arg("sh")
        .arg(fruix.get_program())
        .args(args);
    run(&mut sh)
}

/// Regression: `source add` out of file descriptors (`ulimit -n 12`) was
/// refused as a usage error (2), "failed to open SRC/Makefile: Too many
/// open files", as if the tree were at fault: the source check turned
/// every error into a refused source. A failure of this host is no usage
/// error at any limit, and where the source check meets it, a system
/// failure (3) naming the path.
#[test]
fn source_add_out_of_file_descriptors_is_no_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture_source();
    let (mut statuses, mut naming_the_source) = (Vec::new(), Vec::new());
    for limit in 4..=24 {
        let store = dir.path().join(format!("store-{limit}"));
        let out = with_open_files(
            limit,
            &[
                "source".as_ref(),
                "add".as_ref(),
                source.as_os_str(),
                "--store".as_ref(),
                store.as_os_str(),
                "--json".as_ref(),
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.contains(&format!("failed to open {}", source.display())) {
            naming_the_source.push((limit, out.status.code()));
        }
        // Every failure says what could not be done, never the bare error.
        let bare = stdout.contains(r#""message":"Too many open files"#);
        statuses.push((limit, out.status.code(), bare));
    }
    // A system failure or a success at every limit: no usage error, and
    // no crash (tokio panicked out of descriptors while setting up signal
    // handling, exit 101).
    let wrong: Vec<_> = statuses
        .iter()
        .filter(|(_, s, bare)| !matches!(s, Some(0) | Some(SYSTEM_FAILURE)) || *bare)
        .collect();
    assert!(wrong.is_empty(), "at {wrong:?}");
    assert!(!naming_the_source.is_empty(), "{statuses:?}");
    let not_system: Vec<_> = naming_the_source
        .iter()
        .filter(|(_, s)| *s != Some(SYSTEM_FAILURE))
        .collect();
    assert!(not_system.is_empty(), "{not_system:?}");
}

/// Regression: a build out of file descriptors before its async runtime
/// could start crashed with tokio's panic (exit 101), or said only "Too
/// many open files (os error 24)". It is a system failure that says what
/// could not start.
#[test]
fn a_runtime_that_cannot_start_is_a_system_failure_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture_source();
    let mut said = 0;
    for limit in 4..=10 {
        let (store, state) = (dir.path().join("store"), dir.path().join("state"));
        let out = with_open_files(
            limit,
            &[
                "build".as_ref(),
                "--executor".as_ref(),
                "local".as_ref(),
                "--source".as_ref(),
                source.as_os_str(),
                "--store".as_ref(),
                store.as_os_str(),
                "--state-dir".as_ref(),
                state.as_os_str(),
                "--no-out-link".as_ref(),
                "--json".as_ref(),
            ],
        );
        let error = json_error(&out, SYSTEM_FAILURE);
        if message(&error).starts_with("cannot start the async runtime") {
            said += 1;
        }
    }
    assert!(said > 0, "no limit stopped the runtime's start");
}
