//! Regressions of a review of the executors, through `fruix build` of an
//! external executor `rev` written for each test: what its cleanup is
//! told (`FRUIX_OUTCOME`), that it always runs, and how fruix words the
//! lines about it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::{fixture_build, fruix, run, spawn_piped, wait_until, wait_with_deadline};

/// The cleanup every `rev` gets unless a test gives its own: it appends
/// `FRUIX_OUTCOME` to `outcomes` in the test's directory.
const CLEANUP: (&str, &str) = (
    "cleanup.sh",
    r#"echo "rev: cleaning up after $FRUIX_OUTCOME"; echo "$FRUIX_OUTCOME" >> "$FRUIX_CONFIG_DIR/outcomes""#,
);

/// A build that says a line, then hangs until it is stopped.
const HANG: (&str, &str) = ("build.sh", "echo building; exec sleep 600");

/// Executor `rev` of one test, in a directory of its own.
struct Rev {
    dir: tempfile::TempDir,
}

impl Rev {
    /// Writes `scripts` (name, sh body) and an executors file declaring
    /// `rev` with `stages` (its stage records, commands such as
    /// `./build.sh`).
    fn new(stages: &str, scripts: &[(&str, &str)]) -> Rev {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in scripts {
            crate::sshd::script(&dir.path().join(name), &format!("#!/bin/sh\n{body}\n"));
        }
        std::fs::write(
            dir.path().join("executors.scm"),
            format!("(fruix-executors (format-version 1)\n  (executor (name \"rev\") (version \"1\") (description \"written by a test\")\n    (config-key (name \"dir\") (description \"the test's directory\"))\n    {stages}))\n"),
        )
        .unwrap();
        Rev { dir }
    }

    /// A path in the test's directory.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `fruix build --executor rev` into result root `root`, with `extra`.
    fn build(&self, extra: &[&str]) -> Command {
        let mut cmd = test_executor_build(self.dir.path(), "rev");
        cmd.args(extra);
        cmd
    }

    /// What cleanup was told, once per run.
    fn outcomes(&self) -> Vec<String> {
        outcomes(self.dir.path())
    }
}

/// `fruix build --executor NAME` of the miniature tree into result root
/// `dir/root`, NAME declared by `dir/executors.scm` (and no executors file
/// of the user's), its configuration key `dir` the test's directory.
pub(crate) fn test_executor_build(dir: &Path, name: &str) -> Command {
    let mut cmd = fruix();
    cmd.env("XDG_CONFIG_HOME", dir.join("config"))
        .arg("--executors-file")
        .arg(dir.join("executors.scm"));
    let mut cmd = fixture_build(cmd, name, dir, "root");
    cmd.arg("--config").arg(format!("dir={}", dir.display()));
    cmd
}

/// What the cleanup of a [`test_executor_build`] in `dir` was told, once
/// per run (the lines its cleanup appended to `dir/outcomes`).
pub(crate) fn outcomes(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("outcomes"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Regression: a build stopped by `--timeout` or `--max-silent-time` told
/// its cleanup `FRUIX_OUTCOME=cancelled` (the limit cancels the run), though
/// the README lists `timeout`; only a stage's own timeout gave it.
#[test]
fn a_build_past_a_run_level_limit_tells_cleanup_timeout() {
    for limit in ["--timeout", "--max-silent-time"] {
        let rev = Rev::new(
            r#"(build (command "./build.sh")) (cleanup (command "./cleanup.sh"))"#,
            &[HANG, CLEANUP],
        );
        let out = run(&mut rev.build(&[limit, "2s"]));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{limit}: {err}");
        assert!(err.contains("timed out after 2s"), "{limit}: {err}");
        assert_eq!(rev.outcomes(), ["timeout"], "{limit}: {err}");
    }
}

/// Regression: a collect that exits 0 having collected nothing told its
/// cleanup `FRUIX_OUTCOME=invalid` (the README: the stages succeeded, so
/// `success`; the root is judged after cleanup), and the error named only
/// the first missing artifact (`artifacts/world: not found`), though the
/// README says every problem found is listed.
#[test]
fn a_collect_that_collects_nothing_is_listed_whole_and_cleanup_sees_success() {
    let rev = Rev::new(
        r#"(build (command "true")) (collect (command "./collect.sh")) (cleanup (command "./cleanup.sh"))"#,
        &[("collect.sh", "echo collected nothing"), CLEANUP],
    );
    let out = run(&mut rev.build(&[]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("not a valid result root"), "{err}");
    for artifact in ["world", "kernel", "headers", "bootloader"] {
        let missing = format!(
            "root/artifacts/{artifact}: is missing: collect did not put the requested artifact {artifact} there"
        );
        assert!(err.contains(&missing), "{missing}: {err}");
    }
    assert_eq!(rev.outcomes(), ["success"], "{err}");
}

/// Regression: a prepare stage that replaced `logs/` with a symlink kept
/// the cleanup command from running (fruix refuses to write `cleanup.log`
/// through the link, and skipped the command with a warning that cleanup
/// failed), though cleanup always runs. It runs, its output only shown,
/// and nothing is written through the link.
#[test]
fn a_stage_replacing_logs_with_a_symlink_does_not_stop_cleanup() {
    let rev = Rev::new(
        r#"(prepare (command "./prepare.sh")) (build (command "true")) (cleanup (command "./cleanup.sh"))"#,
        &[
            (
                "prepare.sh",
                r#"rm -rf "$FRUIX_RESULT_ROOT/logs"; ln -s "$FRUIX_CONFIG_DIR/elsewhere" "$FRUIX_RESULT_ROOT/logs""#,
            ),
            CLEANUP,
        ],
    );
    std::fs::create_dir(rev.path("elsewhere")).unwrap();
    let out = run(&mut rev.build(&["--verbose"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("logs: is not a directory"), "{err}");
    // The stages did not all run: fruix refused what prepare left.
    assert_eq!(rev.outcomes(), ["invalid"], "{err}");
    assert!(
        err.contains("rev: cleaning up after invalid"),
        "its output is shown: {err}"
    );
    assert!(
        err.contains("fruix: warning: the log of the cleanup of executor `rev` is not kept: "),
        "{err}"
    );
    assert!(!err.contains("cleanup of executor rev failed"), "{err}");
    let written: Vec<_> = std::fs::read_dir(rev.path("elsewhere")).unwrap().collect();
    assert!(written.is_empty(), "written through the link: {written:?}");
    assert!(
        !rev.path("root.work").exists(),
        "the work directory is removed"
    );
}

/// Regression: a cleanup exiting with the build-failure status warned
/// `warning: cleanup of executor rev failed: build step 'cleanup' failed`:
/// cleanup is no build step, and fruix's warnings start with `fruix:`.
#[test]
fn a_failing_cleanup_is_a_fruix_warning_that_calls_it_no_build_step() {
    let rev = Rev::new(
        r#"(build (command "./build.sh")) (cleanup (command "./cleanup.sh"))"#,
        &[("build.sh", "exit 1"), ("cleanup.sh", "echo busy; exit 1")],
    );
    let out = run(&mut rev.build(&[]));
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the build's failure stands: {err}"
    );
    let warning = format!(
        "fruix: warning: cleanup of executor rev failed: step `cleanup` failed (exit status 1); full log: {}",
        rev.path("root/logs/cleanup.log").display()
    );
    assert!(err.lines().any(|l| l == warning), "{warning}: {err}");
    assert!(!err.contains("build step `cleanup`"), "{err}");
}

/// Regression: after `--timeout`, a Ctrl-C while cleanup ran showed `==>
/// cleanup cancelled in 10.0s`, though cleanup, which is never cancelled,
/// ran to its own timeout. The run's failure is its timeout (exit 3: the
/// Ctrl-C came once the build had ended, and stopped nothing), and the
/// cleanup is shown as what it did: it failed.
#[test]
fn a_ctrl_c_during_the_cleanup_after_a_timeout_does_not_call_it_cancelled() {
    let rev = Rev::new(
        r#"(build (command "./build.sh")) (cleanup (command "./cleanup.sh") (timeout 3))"#,
        &[
            HANG,
            (
                "cleanup.sh",
                r#"echo "$FRUIX_OUTCOME" >> "$FRUIX_CONFIG_DIR/outcomes"; touch "$FRUIX_CONFIG_DIR/cleaning"; exec sleep 600"#,
            ),
        ],
    );
    let child = spawn_piped(&mut rev.build(&["--timeout", "2s"]));
    wait_until("the cleanup runs", || rev.path("cleaning").exists());
    // SAFETY: kill(2) on a process this test started, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = wait_with_deadline(child, Duration::from_secs(60), "the build");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(rev.outcomes(), ["timeout"], "{err}");
    let at = |says: &str| {
        lines
            .iter()
            .position(|l| l.contains(says))
            .unwrap_or_else(|| panic!("no line saying {says:?}: {err}"))
    };
    // The Ctrl-C was seen while the cleanup ran.
    assert!(
        at("fruix: cancelling") < at("==> cleanup FAILED in"),
        "{err}"
    );
    assert!(!err.contains("cleanup cancelled"), "{err}");
}
