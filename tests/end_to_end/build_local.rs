//! `fruix build --executor local` on the miniature FreeBSD tree, end to end.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fruix_core::testing::conformance::processes_mentioning;

use crate::util::{
    failed_with, fixture_build, fixture_source, fruix, json_error, key_values, promote_command,
    require_tool, run, run_failing, run_ok, run_with_deadline, spawn_reading_stderr, wait_until,
};

struct Build {
    dir: tempfile::TempDir,
}

impl Build {
    fn new() -> Self {
        require_tool("bmake", "bmake");
        require_tool("cc", "gcc");
        Build {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn command(&self, name: &str, extra: &[&str]) -> Command {
        let mut cmd = fixture_build(fruix(), "local", self.dir.path(), name);
        cmd.args(extra);
        if !extra.contains(&"--jobs") {
            cmd.args(["--jobs", "2"]);
        }
        cmd
    }
    /// Checks that the result root `name` keeps its unfinished marker, and
    /// that promoting it is refused (exit 4).
    fn unpromotable(&self, name: &str) {
        let root = self.dir.path().join(name);
        assert!(root.join(".fruix-incomplete").exists(), "{name}: no marker");
        let promote = run(&mut promote_command(&self.store(), &root, &[]));
        assert_eq!(promote.status.code(), Some(4), "{name}: {promote:?}");
    }

    fn json(&self, name: &str, extra: &[&str]) -> serde_json::Value {
        let mut cmd = self.command(name, extra);
        cmd.arg("--json");
        serde_json::from_str(&run_ok(&mut cmd)).unwrap()
    }
}

fn signature(report: &serde_json::Value, artifact: &str) -> String {
    report["artifacts"][artifact]["tree_signature"]
        .as_str()
        .unwrap()
        .to_string()
}

fn store_path(report: &serde_json::Value, artifact: &str) -> PathBuf {
    PathBuf::from(
        report["artifacts"][artifact]["store_path"]
            .as_str()
            .unwrap(),
    )
}

#[test]
fn local_build_promotes_the_four_artifacts() {
    let b = Build::new();
    let kv = key_values(&run_ok(&mut b.command("r1", &[])));
    assert_eq!(kv["artifact_store_count"], "4");
    assert!(
        kv["world_store"].ends_with("-fruix-native-world-15.0-STABLE-local"),
        "{kv:?}"
    );
    for (artifact, probe) in [
        ("world", "bin/sh"),
        ("world", "METALOG"),
        ("kernel", "boot/kernel/kernel"),
        ("headers", "usr/include/sys/param.h"),
        ("bootloader", "boot/loader"),
        ("bootloader", "boot/loader.efi"),
    ] {
        let p = Path::new(&kv[&format!("{artifact}_store")]).join(probe);
        assert!(p.is_file(), "{} missing", p.display());
    }
    let bootloader = Path::new(&kv["bootloader_store"]);
    assert!(
        !bootloader.join("boot/kernel").exists(),
        "the bootloader never holds boot/kernel"
    );
    let kernel_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(Path::new(&kv["kernel_store"]).join("boot/kernel/kernel")).unwrap(),
        ))
    };
    assert_eq!(kv["sha_kernel"], kernel_sha);
    run_ok(
        fruix()
            .args(["store", "verify", "--quiet", "--store"])
            .arg(b.store()),
    );
    let logs = b.dir.path().join("r1/logs");
    for step in ["buildworld", "buildkernel", "installworld", "installkernel"] {
        assert!(
            logs.join(format!("{step}.log")).is_file(),
            "log of {step} missing"
        );
    }
}

#[test]
fn same_inputs_give_the_same_artifacts_and_kernconf_changes_only_the_kernel() {
    let b = Build::new();
    let first = b.json("r1", &[]);
    let second = b.json("r2", &["--jobs", "1"]);
    for artifact in ["world", "kernel", "headers", "bootloader"] {
        assert_eq!(
            store_path(&first, artifact),
            store_path(&second, artifact),
            "{artifact}"
        );
        assert_eq!(second["artifacts"][artifact]["new"], false);
    }
    assert_ne!(
        first["result_store"], second["result_store"],
        "each run has its own bundle"
    );
    let minimal = b.json("r3", &["--kernconf", "MINIMAL"]);
    assert_ne!(signature(&minimal, "kernel"), signature(&first, "kernel"));
    assert_eq!(signature(&minimal, "world"), signature(&first, "world"));
    assert_eq!(signature(&minimal, "headers"), signature(&first, "headers"));
}

#[test]
fn failing_step_is_a_build_failure_naming_the_step() {
    let b = Build::new();
    let out = run(&mut b.command("r1", &["--make-flag", "FAIL_STEP=buildkernel"]));
    let log = b.dir.path().join("r1/logs/buildkernel.log");
    failed_with(
        "a failing step (with its log tail and log path)",
        &out,
        1,
        &[
            "build step `buildkernel` failed",
            "deliberate failure",
            &log.display().to_string(),
        ],
    );
    assert!(out.stdout.is_empty());
    assert!(crate::util::nothing_promoted(&b.store()));
    b.unpromotable("r1");
}

#[test]
fn bad_input_is_refused_before_anything_runs() {
    let b = Build::new();
    run_failing(
        fruix()
            .args(["build", "--executor", "jail-typo", "--source"])
            .arg(fixture_source()),
        2,
        &["unknown executor `jail-typo`", "local"],
    );

    run_failing(
        fruix()
            .args(["build", "--executor", "local", "--source"])
            .arg(b.dir.path().join("nope")),
        2,
        &["nope"],
    );

    std::fs::create_dir(b.dir.path().join("exists")).unwrap();
    run_failing(&mut b.command("exists", &[]), 2, &["already exists"]);
}

#[test]
fn sigint_mid_build_stops_make_and_leaves_nothing_promotable() {
    let b = Build::new();
    let mut child = b
        .command("r1", &["--jobs", "1", "--make-flag=HOLD_BUILD=yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("fruix printed its stages").unwrap();
        if line.contains("==> buildworld") {
            break;
        }
    }
    wait_until("the build's make runs", || {
        !processes_mentioning(b.dir.path()).is_empty()
    });
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(20));
    let left = processes_mentioning(b.dir.path());
    assert!(left.is_empty(), "processes still running: {left:?}");
    // The root was made before make ran: it stays marked, unpromotable.
    b.unpromotable("r1");
}

/// Without a terminal (a CI log), a stage that has printed nothing for
/// `--progress-every` says it is still running, with the build's last line,
/// instead of hours of silence; the build goes on, and Ctrl-C still stops
/// it.
#[test]
fn a_silent_stage_says_it_is_still_running_without_a_terminal() {
    let b = Build::new();
    let flags = [
        "--jobs",
        "1",
        "--make-flag=HOLD_BUILD=yes",
        "--progress-every=1s",
    ];
    let mut build = spawn_reading_stderr(&mut b.command("r1", &flags));
    let line = build.wait_for_line("==> buildworld still running after ");
    assert!(
        line.ends_with("; last output: >>> HOLD_BUILD=yes: waiting to be interrupted"),
        "{line}"
    );
    // And again, a second later (nothing else was printed).
    build.wait_for_line("==> buildworld still running after ");
    build.signal(libc::SIGINT);
    let out = build.finish(Duration::from_secs(60), "the build");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
}

/// A build past `--timeout`, or silent for `--max-silent-time` (the
/// fixture's world build holds without a word), is stopped: a timeout (exit
/// 3, under `--json` an error of kind `system-failure`) that says which
/// limit passed, what the build said last and where its log is; no process
/// of it is left, and its root stays unpromotable.
#[test]
fn a_build_past_its_time_limit_is_stopped_as_a_timeout() {
    let b = Build::new();
    // The log's last lines come before the log's file; after a silence,
    // the last one is the last thing the build said.
    let said_last = "--- last";
    let silent_after = ">>> HOLD_BUILD=yes: waiting to be interrupted\n---";
    let cases = [
        (
            "total",
            "--timeout=5s",
            ["the build timed out after 5s; it was stopped", said_last],
        ),
        (
            "silent",
            "--max-silent-time=5s",
            [
                "waiting for output from the build timed out after 5s; it was stopped",
                silent_after,
            ],
        ),
    ];
    for (name, limit, says) in cases {
        let mut cmd = b.command(name, &["--jobs", "1", "--make-flag=HOLD_BUILD=yes", limit]);
        let out = run_with_deadline(cmd.arg("--json"), Duration::from_secs(120));
        json_error(&out, 3, says[0]);
        let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(error["error"]["kind"], "system-failure", "{error:#}");
        // Regression: unlike a cancelled build's, its error named neither
        // the root it kept nor its logs.
        let root = b.dir.path().join(name);
        assert_eq!(error["error"]["result_root"], root.to_str().unwrap());
        assert_eq!(error["error"]["logs"], root.join("logs").to_str().unwrap());
        let kept = format!(
            "the result root {} was kept, marked unfinished",
            root.display()
        );
        assert!(
            error["error"]["message"].as_str().unwrap().contains(&kept),
            "{error:#}"
        );
        let log = b.dir.path().join(name).join("logs/buildworld.log");
        let full_log = format!("; full log: {}", log.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        for expected in [says[1], said_last, &full_log] {
            assert!(
                stderr.contains(expected),
                "{name}: no {expected:?} in {stderr}"
            );
        }
        let left = processes_mentioning(b.dir.path());
        assert!(left.is_empty(), "{name}: processes still running: {left:?}");
        b.unpromotable(name);
    }
}
