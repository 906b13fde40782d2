//! External executors through `fruix build`: the POSIX sh executors of
//! `tests/fixtures/external` build the miniature FreeBSD tree with bmake and
//! promote it, and each variant that fails on purpose (build failure, system
//! failure, a build hanging past its timeout, a collect leaving an invalid
//! root) gives its own outcome and exit status, with cleanup run every time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::{
    fixture_build, fixture_source, fruix, key_values, require_tool, run, run_failing, run_ok,
    strings_of,
};

/// The fixture executors file.
pub fn executors_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/external/executors.scm")
        .canonicalize()
        .expect("tests/fixtures/external/executors.scm exists")
}

/// A scratch directory for `fruix build` runs with one executor; the
/// default executors files are pointed into it (XDG_CONFIG_HOME), so only
/// what a test names is read.
pub struct ExecutorBuild {
    pub dir: tempfile::TempDir,
    pub executor: String,
}

impl ExecutorBuild {
    pub fn new(executor: &str) -> Self {
        require_tool("bmake", "bmake");
        require_tool("cc", "gcc");
        ExecutorBuild {
            dir: tempfile::tempdir().unwrap(),
            executor: executor.to_string(),
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn root(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Where cleanup appends FRUIX_OUTCOME (external executors).
    pub fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.cleanup"))
    }

    /// `fruix` with this test's config home.
    pub fn fruix(&self) -> Command {
        let mut cmd = fruix();
        cmd.env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        cmd
    }

    /// `fruix build` of the fixture into result root `name`.
    pub fn command(&self, name: &str, extra: &[&str]) -> Command {
        let mut cmd = self.fruix();
        cmd.arg("--executors-file").arg(executors_file());
        let mut cmd = fixture_build(cmd, &self.executor, self.dir.path(), name);
        cmd.args(["--jobs", "2"]).args(extra);
        cmd
    }

    /// `command` with the cleanup marker configured.
    pub fn external(&self, name: &str, extra: &[&str]) -> Command {
        let marker = format!("cleanup_marker={}", self.marker(name).display());
        let mut cmd = self.command(name, extra);
        cmd.args(["--config", &marker]);
        cmd
    }

    /// Outcomes cleanup recorded for run `name`, one per line.
    pub fn cleanups(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.marker(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Whether the store holds no object (a failed run promotes nothing).
    pub fn store_is_empty(&self) -> bool {
        crate::util::nothing_promoted(&self.store())
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Checks what every failed run leaves: the given exit status, cleanup run
/// once with `outcome`, the work directory gone, nothing promoted, and a
/// result root that `fruix native-build promote` refuses.
fn assert_failed_run(b: &ExecutorBuild, name: &str, out: &Output, status: i32, outcome: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(status), "{err}");
    assert_eq!(b.cleanups(name), [outcome], "cleanup ran once: {err}");
    assert!(err.contains("==> cleanup"), "cleanup is shown: {err}");
    assert!(
        !b.root(&format!("{name}.work")).exists(),
        "the work directory is removed"
    );
    assert!(out.stdout.is_empty(), "no summary for a failed run");
    assert!(b.store_is_empty(), "a failed run promotes nothing");
    let promote = run(b
        .fruix()
        .args(["native-build", "promote", "--store"])
        .arg(b.store())
        .arg(b.root(name)));
    assert_eq!(
        promote.status.code(),
        Some(4),
        "the root can never be promoted"
    );
}

#[test]
fn external_executor_builds_and_promotes_the_same_artifacts_as_local() {
    let b = ExecutorBuild::new("mini-sh");
    let mut cmd = b.external("r1", &["--json"]);
    let report: serde_json::Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
    assert_eq!(b.cleanups("r1"), ["success"]);
    assert!(!b.root("r1.work").exists(), "the work directory is removed");
    for (artifact, probe) in [
        ("world", "bin/sh"),
        ("kernel", "boot/kernel/kernel"),
        ("headers", "usr/include/sys/param.h"),
        ("bootloader", "boot/loader.efi"),
    ] {
        let path = PathBuf::from(
            report["artifacts"][artifact]["store_path"]
                .as_str()
                .unwrap(),
        );
        assert!(
            path.to_string_lossy()
                .ends_with(&format!("-fruix-native-{artifact}-15.0-STABLE-mini-sh")),
            "{}",
            path.display()
        );
        assert!(path.join(probe).is_file(), "{} has {probe}", path.display());
    }
    let promotion = std::fs::read_to_string(b.root("r1/promotion.scm")).unwrap();
    assert!(
        promotion.contains("(executor \"mini-sh\")")
            && promotion.contains("(executor-version \"1.0.0\")")
    );
    assert!(
        promotion.contains("(tree-signature \"sha256:"),
        "fruix signed the collected trees"
    );
    for stage in ["prepare", "build", "collect", "cleanup"] {
        assert!(
            b.root(&format!("r1/logs/{stage}.log")).is_file(),
            "logs/{stage}.log"
        );
    }
    run_ok(
        b.fruix()
            .args(["store", "verify", "--quiet", "--store"])
            .arg(b.store()),
    );

    // The external executor ends with the same artifact trees as the built-in one.
    let local = ExecutorBuild::new("local");
    let mut cmd = local.command("r1", &["--json", "--no-promote"]);
    run_ok(&mut cmd);
    for artifact in ["world", "kernel", "headers", "bootloader"] {
        let signature = |root: &Path| {
            let text = std::fs::read_to_string(root.join("promotion.scm")).unwrap();
            let after = text
                .split(&format!("(name {artifact})"))
                .nth(1)
                .unwrap()
                .to_string();
            after.split("tree-signature \"").nth(1).unwrap()[..71].to_string()
        };
        assert_eq!(
            signature(&b.root("r1")),
            signature(&local.root("r1")),
            "{artifact}: mini-sh and local agree"
        );
    }
}

#[test]
fn build_failure_status_is_a_build_failure() {
    let b = ExecutorBuild::new("mini-sh");
    let out = run(&mut b.external("r1", &["--make-flag", "FAIL_STEP=buildworld"]));
    let err = stderr(&out);
    assert!(
        err.contains("build step `build` failed (exit status 1)"),
        "{err}"
    );
    assert!(
        err.contains("deliberate failure"),
        "the log tail is printed: {err}"
    );
    assert!(
        err.contains(&b.root("r1/logs/build.log").display().to_string()),
        "{err}"
    );
    assert_failed_run(&b, "r1", &out, 1, "build-failure");
}

#[test]
fn system_failure_status_is_a_system_failure() {
    let b = ExecutorBuild::new("mini-sh-system-failure");
    let out = run(&mut b.external("r1", &[]));
    let err = stderr(&out);
    assert!(
        err.contains("system failure: external executor `mini-sh-system-failure`: stage build reported a system failure (exit status 75)"),
        "{err}"
    );
    assert!(err.contains("cannot reach builder-1.invalid"), "{err}");
    assert_failed_run(&b, "r1", &out, 3, "system-failure");
}

#[test]
fn a_build_hanging_past_its_timeout_is_stopped() {
    let b = ExecutorBuild::new("mini-sh-hang");
    let started = Instant::now();
    let out = run(&mut b.external("r1", &[]));
    let err = stderr(&out);
    assert!(
        err.contains("stage build timed out after 2s; its process group was stopped (SIGTERM, then SIGKILL after 1s)"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_failed_run(&b, "r1", &out, 3, "timeout");
    let left = fruix_core::testing::conformance::processes_mentioning(b.dir.path());
    assert!(left.is_empty(), "the hanging build survived: {left:#?}");
}

/// The processes still running with the test directory of `b` in their
/// command line or environment, once those on their way out are gone (a
/// bound on a condition: at most a few seconds); killed, so that a failing
/// test leaves none behind.
fn processes_left_by(b: &ExecutorBuild) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = fruix_core::testing::conformance::processes_mentioning(b.dir.path());
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left = fruix_core::testing::conformance::processes_mentioning(b.dir.path());
    }
    for process in &left {
        if let Some(pid) = process.split(':').next().and_then(|p| p.parse().ok()) {
            // SAFETY: kill(2) of a process just found running with this
            // test's directory in its environment.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    left
}

/// Regression: a stage that started a daemon (`setsid sleep 3336 &`, a
/// session of its own, still holding the stage's output) made fruix wait
/// for the stage's timeout and fail the build as timed out (exit 3),
/// leaving the daemon running with `FRUIX_RESULT_ROOT` in its environment.
/// The stage is judged by its own exit status, a moment after it; the
/// daemon is named in a warning and killed.
#[test]
fn a_stage_that_starts_a_daemon_ends_by_its_exit_status_and_the_daemon_is_killed() {
    let b = ExecutorBuild::new("mini-sh-daemon");
    let mut cmd = b.fruix();
    cmd.arg("--executors-file")
        .arg(executors_file().with_file_name("daemon.scm"));
    let mut cmd = fixture_build(cmd, "mini-sh-daemon", b.dir.path(), "r1");
    let marker = format!("cleanup_marker={}", b.marker("r1").display());
    cmd.args(["--jobs", "2", "--config", &marker]);
    let out = run(&mut cmd);
    let left = processes_left_by(&b);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(b.cleanups("r1"), ["success"]);
    // The stage exits at once; only the bounded wait for its output (2s)
    // and the daemon's kill come after.
    let collect = err
        .lines()
        .find_map(|l| l.strip_prefix("==> collect done in "))
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<f64>().ok());
    assert!(collect.is_some_and(|s| s < 15.0), "{collect:?}: {err}");
    let warning = err
        .lines()
        .find(|l| l.starts_with("fruix: warning: ") && l.contains("left its session"));
    assert!(
        warning.is_some_and(|w| w.contains("step collect ")
            && w.contains("`sleep 3336`")
            && w.contains("killed")),
        "{err}"
    );
    assert!(left.is_empty(), "the daemon survived: {left:#?}");
}

#[test]
fn collect_leaving_an_invalid_root_is_a_validation_failure() {
    let b = ExecutorBuild::new("mini-sh-invalid-root");
    let out = run(&mut b.external("r1", &[]));
    let err = stderr(&out);
    assert!(err.contains("not a valid result root"), "{err}");
    assert!(
        err.contains("artifacts/world/bin/sh: field `artifacts.world.probe`: probe file of artifact world is missing"),
        "{err}"
    );
    // Validation follows cleanup, so cleanup saw the stages succeed.
    assert_failed_run(&b, "r1", &out, 4, "success");
}

#[test]
fn executors_files_are_read_from_the_config_home_by_default() {
    let b = ExecutorBuild::new("mini-sh");
    let config = b.dir.path().join("config/fruix");
    std::fs::create_dir_all(&config).unwrap();
    let text = std::fs::read_to_string(executors_file()).unwrap().replace(
        "\"./",
        &format!("\"{}/", executors_file().parent().unwrap().display()),
    );
    std::fs::write(config.join("executors.scm"), text).unwrap();
    let list = run_ok(b.fruix().args(["executors", "list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("mini-sh ") && l.contains(" external ")),
        "{list}"
    );
}

#[test]
fn an_external_executor_named_like_a_built_in_is_an_error_naming_both() {
    let b = ExecutorBuild::new("local");
    let file = b.dir.path().join("executors.scm");
    std::fs::write(
        &file,
        "(fruix-executors (format-version 1)\n  (executor (name \"local\") (version \"1\") (description \"shadow\")\n    (build (command \"true\"))))\n",
    )
    .unwrap();
    for args in [
        vec!["executors", "list"],
        vec!["build", "--executor", "local", "--source", "/nonexistent"],
    ] {
        let twice = format!(
            "executor `local` is registered twice: by fruix-executors (built-in) and by {}:2 (external); rename one of them",
            file.display()
        );
        run_failing(
            b.fruix().arg("--executors-file").arg(&file).args(&args),
            2,
            &[&twice],
        );
    }
    run_failing(
        b.fruix().args([
            "--executors-file",
            "/nonexistent/executors.scm",
            "executors",
            "list",
        ]),
        2,
        &["/nonexistent/executors.scm: not found"],
    );
}

#[test]
fn list_and_describe_show_every_kind_of_executor() {
    let b = ExecutorBuild::new("local");
    let list = run_ok(
        b.fruix()
            .arg("--executors-file")
            .arg(executors_file())
            .args(["executors", "list"]),
    );
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "VERSION", "KIND", "DESCRIPTION"]);
    for (name, version, kind) in [
        ("local", "0.1.0", "built-in"),
        ("jail", "0.1.0", "plugin"),
        ("mini-sh", "1.0.0", "external"),
        ("mini-sh-hang", "1.0.0", "external"),
    ] {
        assert!(
            rows.iter().any(|r| r[..3] == [name, version, kind]),
            "{name} {version} {kind} missing:\n{list}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&run_ok(
        b.fruix()
            .args(["executors", "list", "--json", "--executors-file"])
            .arg(executors_file()),
    ))
    .unwrap();
    let mini = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "mini-sh")
        .unwrap();
    assert_eq!(mini["kind"], "external");
    assert_eq!(mini["version"], "1.0.0");
    assert!(mini["origin"]
        .as_str()
        .unwrap()
        .ends_with("executors.scm:6"));
    assert!(mini["description"].as_str().unwrap().contains("POSIX sh"));

    let describe = run_ok(
        b.fruix()
            .args(["executors", "describe", "mini-sh", "--executors-file"])
            .arg(executors_file()),
    );
    let kv = key_values(&describe.replace(": ", "="));
    assert_eq!(
        kv.get("kind").map(|k| k.trim()),
        Some("external"),
        "{describe}"
    );
    assert!(
        describe.contains("cleanup_marker") && describe.contains("cancellable:         true"),
        "{describe}"
    );
    let jail = run_ok(b.fruix().args(["executors", "describe", "jail", "--json"]));
    let jail: serde_json::Value = serde_json::from_str(&jail).unwrap();
    assert_eq!(jail["kind"], "plugin");
    assert_eq!(jail["origin"], "fruix-executor-jail");
    assert_eq!(
        strings_of(&jail["config_keys"], "name"),
        ["jail_root", "make", "runner"]
    );
    assert_eq!(jail["capabilities"]["cancellable"], true);

    let vm = run_ok(b.fruix().args(["executors", "describe", "vm"]));
    assert!(vm.contains("boots VMs:           true"), "{vm}");

    // Regression: what an executors file says was printed raw (a bidi
    // control in a description reorders the line on the terminal).
    let odd = b.store().with_file_name("odd.scm");
    std::fs::write(
        &odd,
        "(fruix-executors (format-version 1)\n  (executor (name \"odd\") (version \"1\") (description \"abc\u{202e}def\")\n    (config-key (name \"k\") (description \"x\u{202e}y\"))\n    (build (command \"./build.sh\"))))\n",
    )
    .unwrap();
    for command in [&["list"][..], &["describe", "odd"]] {
        let out = run_ok(
            b.fruix()
                .arg("--executors-file")
                .arg(&odd)
                .arg("executors")
                .args(command),
        );
        assert!(!out.contains('\u{202e}'), "{command:?}: {out}");
        assert!(out.contains("abc\\342\\200\\256def"), "{command:?}: {out}");
    }

    run_failing(
        b.fruix()
            .arg("--executors-file")
            .arg(executors_file())
            .args(["build", "--executor", "mini-shh", "--source"])
            .arg(fixture_source()),
        2,
        &[
            "unknown executor `mini-shh`; did you mean `mini-sh`? available executors:",
            "jail",
            "local",
            "mini-sh-hang",
        ],
    );
}

/// A build (result root `d/root`) by an external executor in `d` whose
/// build and cleanup stages each say they run (`d/building`, `d/cleaning`,
/// each a file written whole, holding the stage's pid), then wait.
pub(crate) fn slow_cleanup_build(d: &Path) -> Command {
    let stage = |name: &str, what: &str| {
        crate::sshd::script(
            &d.join(name),
            &format!("#!/bin/sh\necho $$ > \"$FRUIX_CONFIG_DIR/{what}.tmp\"\nmv \"$FRUIX_CONFIG_DIR/{what}.tmp\" \"$FRUIX_CONFIG_DIR/{what}\"\nexec sleep 600\n"),
        );
    };
    stage("build.sh", "building");
    stage("cleanup.sh", "cleaning");
    std::fs::write(
        d.join("executors.scm"),
        "(fruix-executors (format-version 1)\n  (executor (name \"slow-cleanup\") (version \"1\") (description \"its cleanup takes long (test)\")\n    (config-key (name \"dir\") (description \"where the stages say they run\"))\n    (build (command \"./build.sh\")) (cleanup (command \"./cleanup.sh\"))))\n",
    )
    .unwrap();
    let mut cmd = fruix();
    cmd.arg("--executors-file").arg(d.join("executors.scm"));
    let mut cmd = fixture_build(cmd, "slow-cleanup", d, "root");
    cmd.arg("--config").arg(format!("dir={}", d.display()));
    cmd
}

#[test]
fn a_second_signal_during_cleanup_exits_at_once() {
    // The first Ctrl-C or SIGTERM cancels and cleans up; a second one,
    // while a slow cleanup runs, is a person who wants out now.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cmd = slow_cleanup_build(d);
    let child = crate::util::spawn_piped(&mut cmd);
    let signal = |pid: u32| {
        // SAFETY: kill(2) on a process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
    };
    crate::util::wait_until("the build runs", || d.join("building").exists());
    signal(child.id());
    crate::util::wait_until("the cleanup runs", || d.join("cleaning").exists());
    signal(child.id());
    let out = crate::util::wait_with_deadline(child, Duration::from_secs(60), "the build");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("cancelled again"), "{err}");
    // It names what it leaves: the build's result root, unfinished.
    let root = d.canonicalize().unwrap().join("root");
    assert!(
        err.contains(&format!(
            "; left the build's result root, unfinished {}",
            root.display()
        )),
        "{err}"
    );
    // Regression: its work directory, left too, went unnamed.
    let work = root.with_file_name("root.work");
    assert!(work.join(".fruix-work").is_file(), "{err}");
    assert!(
        err.contains(&format!(
            "; left the build's work directory {}",
            work.display()
        )),
        "{err}"
    );
    // Regression: the cleanup stage fruix was running outlived it. What
    // runs is killed on the way out (SIGKILL: it cannot be waited for).
    let cleanup = std::fs::read_to_string(d.join("cleaning")).unwrap();
    let stat = format!("/proc/{}/stat", cleanup.trim());
    let alive = || {
        std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    crate::util::wait_until("the cleanup stage is killed", || !alive());
}
