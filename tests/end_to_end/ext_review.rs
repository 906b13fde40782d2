//! Regressions of a review of external executors and the jail plugin:
//! what fruix does beside a result root, and what a stage inherits.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fruix_core::escape;

use crate::executors_external::ExecutorBuild;
use crate::util::{failed_with, fixture_build, listing, run, run_failing, run_ok};

/// A collect that leaves the four artifacts, each with its probe.
const COLLECT: &str = r#"a=$FRUIX_RESULT_ROOT/artifacts
mkdir -p "$a/world/bin" "$a/kernel/boot/kernel" "$a/headers/usr/include/sys" "$a/bootloader/boot"
for f in world/bin/sh kernel/boot/kernel/kernel headers/usr/include/sys/param.h bootloader/boot/loader; do
  echo x > "$a/$f"
done"#;

/// External executor `ev` of the review, declared in `DIR/ev/executors.scm`
/// of a scratch directory, its stages the scripts a test gives.
struct Ev {
    b: ExecutorBuild,
}

impl Ev {
    /// `ev` whose build, collect and cleanup run `build`, `collect` and
    /// `cleanup` (sh). Configuration keys: `out` (a directory for what a
    /// stage sees), `kill` (set: build kills fruix).
    fn new(build: &str, collect: &str, cleanup: &str) -> Ev {
        let b = ExecutorBuild::new("ev");
        let dir = b.dir.path().join("ev");
        std::fs::create_dir(&dir).unwrap();
        for (name, body) in [
            ("build.sh", build),
            ("collect.sh", collect),
            ("cleanup.sh", cleanup),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(
            dir.join("executors.scm"),
            r#"(fruix-executors (format-version 1)
 (executor (name "ev") (version "1.0") (description "review fixture") (term-grace 1)
  (config-key (name "out") (description "where stages write what they see"))
  (config-key (name "kill") (description "set: build kills fruix"))
  (build (command "./build.sh") (timeout 60))
  (collect (command "./collect.sh") (timeout 60))
  (cleanup (command "./cleanup.sh") (timeout 60))))"#,
        )
        .unwrap();
        Ev { b }
    }

    /// `fruix build --executor ev` into result root `name`, unpromoted.
    fn command(&self, name: &str, extra: &[&str]) -> Command {
        let mut cmd = self.b.fruix();
        cmd.arg("--executors-file")
            .arg(self.b.dir.path().join("ev/executors.scm"));
        let mut cmd = fixture_build(cmd, "ev", self.b.dir.path(), name);
        cmd.arg("--no-promote").args(extra);
        cmd
    }
}

/// Makes `ROOT.work` of result root `root` a directory of the user's with
/// work in it; returns the file.
fn users_work_dir(root: &Path) -> PathBuf {
    let work = PathBuf::from(format!("{}.work", root.display()));
    std::fs::create_dir_all(work.join("thesis")).unwrap();
    let file = work.join("thesis/chapter1.tex");
    std::fs::write(&file, "years of work").unwrap();
    file
}

/// Checks that `out` refused the run as invalid input (2), naming the work
/// directory of `root` escaped and what to do, and that `file` survived.
fn refused_keeping(out: &Output, root: &Path, file: &Path) {
    let dir = root.parent().unwrap().canonicalize().unwrap();
    let mut name = root.file_name().unwrap().to_owned();
    name.push(".work");
    let work = escape::path(&dir.join(name)).to_string();
    let stderr = failed_with(
        "a work directory of the user's",
        out,
        2,
        &[&work, "move it"],
    );
    assert_eq!(
        std::fs::read_to_string(file).unwrap_or_default(),
        "years of work",
        "the user's file survives: {stderr}"
    );
    // Regression: the refused run left the result root it had made, empty
    // but for its unfinished marker, in the user's way.
    assert!(root.symlink_metadata().is_err(), "{} left", root.display());
}

#[test]
fn a_work_directory_fruix_did_not_make_survives_and_the_build_exits_2() {
    // External executor; a result root name with an escape sequence.
    let ev = Ev::new("exit 0", COLLECT, "exit 0");
    let root = ev.b.root("my\x1b[31mout");
    let file = users_work_dir(&root);
    let out = run(&mut ev.command("my\x1b[31mout", &[]));
    refused_keeping(&out, &root, &file);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('\x1b'),
        "the path is escaped"
    );
    // The local executor and the jail plugin (direct runner) alike.
    for (executor, extra) in [("local", &[][..]), ("jail", &["--config", "runner=direct"])] {
        let b = ExecutorBuild::new(executor);
        let root = b.root("r1");
        let file = users_work_dir(&root);
        let out = run(&mut b.command("r1", extra));
        refused_keeping(&out, &root, &file);
    }
}

#[test]
fn a_work_directory_a_killed_fruix_left_is_replaced() {
    let build = r#"if [ -n "${FRUIX_CONFIG_KILL:-}" ]; then
  touch "$FRUIX_WORK_DIR/stale"
  kill -KILL "$PPID"
  exit 0
fi
if [ -e "$FRUIX_WORK_DIR/stale" ]; then echo "the stale work directory was kept" >&2; exit 2; fi"#;
    let ev = Ev::new(build, COLLECT, "exit 0");
    let out = run(&mut ev.command("r1", &["--config", "kill=1"]));
    assert_eq!(out.status.code(), None, "fruix was killed: {out:?}");
    let work = ev.b.root("r1.work");
    assert!(work.join("stale").exists(), "the killed run left its work");
    // The user removes the unfinished result root, not its work directory.
    std::fs::remove_dir_all(ev.b.root("r1")).unwrap();
    run_ok(&mut ev.command("r1", &[]));
    assert!(!work.exists(), "the work directory is removed");
}

#[test]
fn stages_see_only_the_fruix_variables_this_run_set() {
    let ev = Ev::new(
        r#"env | grep '^FRUIX_' | sort > "$FRUIX_CONFIG_OUT/build.env"; exit 1"#,
        "exit 0",
        r#"env | grep '^FRUIX_' | sort > "$FRUIX_CONFIG_OUT/cleanup.env""#,
    );
    let out_dir = ev.b.dir.path().join("seen");
    std::fs::create_dir(&out_dir).unwrap();
    let out = format!("out={}", out_dir.display());
    let mut cmd = ev.command("r1", &["--config", &out]);
    cmd.env("FRUIX_CONFIG_CSCRIPT", "/leftover/c_hang.sh")
        .env("FRUIX_CONFIG_NOT_DECLARED", "1")
        .env("FRUIX_CONFIG_KEY", "placeholder")
        .env("FRUIX_OUTCOME", "success")
        .env("FRUIX_STAGE", "prepare")
        .env("FRUIX_REQUEST_FILE", "/leftover/request.json");
    run_failing(&mut cmd, 1, &["build step `build` failed"]);
    let seen = |stage: &str| std::fs::read_to_string(out_dir.join(format!("{stage}.env"))).unwrap();
    let (build, cleanup) = (seen("build"), seen("cleanup"));
    for env in [&build, &cleanup] {
        for leftover in [
            "FRUIX_CONFIG_CSCRIPT=",
            "FRUIX_CONFIG_NOT_DECLARED=",
            "FRUIX_CONFIG_KEY=",
            "FRUIX_STAGE=prepare",
            "FRUIX_REQUEST_FILE=/leftover",
        ] {
            assert!(!env.contains(leftover), "{leftover} leaked into:\n{env}");
        }
        assert!(env.contains(&format!("FRUIX_CONFIG_OUT={}\n", out_dir.display())));
        // fruix's own settings, which no stage is documented to get, stay.
        assert!(env.contains("FRUIX_STORE="), "{env}");
    }
    assert!(!build.contains("FRUIX_OUTCOME"), "{build}");
    assert!(build.contains("FRUIX_STAGE=build\n"), "{build}");
    assert!(
        cleanup.contains("FRUIX_OUTCOME=build-failure\n"),
        "{cleanup}"
    );
}

/// `fruix executors list` with config home `dir/cfg`, and `args`.
fn executors_list(dir: &Path, args: &[&Path]) -> Command {
    let mut cmd = crate::util::fruix();
    cmd.env("XDG_CONFIG_HOME", dir.join("cfg"))
        .args(["executors", "list"]);
    for file in args {
        cmd.arg("--executors-file").arg(file);
    }
    cmd
}

#[test]
fn an_executors_file_named_twice_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cfg/fruix/executors.scm");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        r#"(fruix-executors (format-version 1)
 (executor (name "ok") (version "1") (description "d") (build (command "true"))))"#,
    )
    .unwrap();
    let link = dir.path().join("link.scm");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let listed = run_ok(&mut executors_list(dir.path(), &[&file, &link, &file]));
    assert_eq!(listed.matches("ok").count(), 1, "{listed}");
}

#[test]
fn a_symlink_loop_as_executors_file_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("loop1"), dir.path().join("loop2"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let shown = escape::path(&a).to_string();
    run_failing(
        &mut executors_list(dir.path(), &[&a]),
        2,
        &[&shown, "symlink", "executors file"],
    );
}

/// A jail root with an empty `usr/bin/make`, enough to pass its check.
fn fake_jail(b: &ExecutorBuild) -> PathBuf {
    let jail = b.dir.path().join("fakejail");
    std::fs::create_dir_all(jail.join("usr/bin")).unwrap();
    std::fs::write(jail.join("usr/bin/make"), "").unwrap();
    jail
}

#[test]
fn jail_mount_points_fruix_made_are_removed_when_setup_fails() {
    let b = ExecutorBuild::new("jail");
    let jail = fake_jail(&b);
    let before = listing(&jail);
    let config = format!("jail_root={}", jail.display());
    // No /sbin/mount off FreeBSD: the run fails at its first mount.
    run_failing(
        &mut b.command("r1", &["--config", &config]),
        3,
        &["mount-source"],
    );
    assert_eq!(listing(&jail), before, "the mount points made are removed");
    assert!(!b.root("r1.work").exists(), "the work directory is removed");
}

#[test]
fn jail_root_that_is_the_host_s_root_is_refused_as_configuration() {
    let b = ExecutorBuild::new("jail");
    let slash = b.dir.path().join("slash");
    std::os::unix::fs::symlink("/", &slash).unwrap();
    for (name, root) in [("r1", "/".to_string()), ("r2", slash.display().to_string())] {
        let config = format!("jail_root={root}");
        run_failing(
            &mut b.command(name, &["--config", &config]),
            2,
            &["`jail_root`", "the host's root"],
        );
    }
}

#[test]
fn jail_configuration_values_are_printed_escaped() {
    let b = ExecutorBuild::new("jail");
    let config = "jail_root=/nonexistent/x\x1b[31m\nfake";
    let stderr = run_failing(
        &mut b.command("r1", &["--config", config]),
        3,
        &["/nonexistent/x\\033[31m\\nfake has no usr/bin/make"],
    );
    assert!(!stderr.lines().any(|l| l.starts_with("fake")), "{stderr}");
    run_failing(
        &mut b.command("r2", &["--config", "jail_root="]),
        2,
        &["`jail_root` is empty"],
    );
}
