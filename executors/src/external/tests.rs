//! Tests of external executors: stages, environment, exit classes, timeouts and cancellation.
use super::*;
use fruix_core::executor::{run_executor, BuildRequest, Event, EventSink, RunLimits};
use fruix_core::testing::{run_limited, warnings};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Writes `scripts` (name, body) as executable sh scripts and an
/// executors file declaring executor `t` with `stages` (extra fields).
fn executor(dir: &Path, stages: &str, scripts: &[(&str, &str)]) -> Arc<dyn Executor> {
    for (name, body) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let text = format!(
        "(fruix-executors (format-version 1)\n (executor (name \"t\") (version \"0.1\") (description \"test\")\n  (config-key (name \"marker\") (description \"cleanup marker\"))\n  {stages}))"
    );
    let path = dir.join("executors.scm");
    std::fs::write(&path, text).unwrap();
    let spec = file::read_file(&path).unwrap().remove(0);
    let marker = dir.join("marker");
    Arc::new(
        ExternalExecutor::new(
            Arc::new(spec),
            serde_json::json!({ "marker": marker.to_str().unwrap() }),
        )
        .unwrap(),
    )
}

const CLEANUP: &str = r#"(cleanup (command "./cleanup.sh"))"#;
const CLEANUP_SH: (&str, &str) = (
    "cleanup.sh",
    r#"echo "$FRUIX_OUTCOME" >> "$FRUIX_CONFIG_MARKER""#,
);

/// Executor `t`, in a fresh directory returned with it, whose build (with
/// `fields` after its command, such as a timeout) runs `body`, and whose
/// cleanup appends FRUIX_OUTCOME to the marker.
fn build_then_cleanup(fields: &str, body: &str) -> (tempfile::TempDir, Arc<dyn Executor>) {
    let dir = tempfile::tempdir().unwrap();
    let stages = format!(r#"(build (command "./build.sh"){fields}) {CLEANUP}"#);
    let executor = executor(dir.path(), &stages, &[("build.sh", body), CLEANUP_SH]);
    (dir, executor)
}

fn request() -> BuildRequest {
    fruix_core::testing::sample_request("t", vec!["headers".into()])
}

/// Runs `executor` on [`request`] into `dir/root`, uncancelled: its result
/// and every event it sent.
async fn run(
    executor: Arc<dyn Executor>,
    dir: &Path,
) -> (Result<fruix_core::ResultRoot>, Vec<Event>) {
    run_request(executor, request(), dir).await
}

/// Runs `executor` on `request` into `dir/root`, uncancelled: its result
/// and every event it sent.
async fn run_request(
    executor: Arc<dyn Executor>,
    request: BuildRequest,
    dir: &Path,
) -> (Result<fruix_core::ResultRoot>, Vec<Event>) {
    let (sink, mut rx) = EventSink::channel();
    let cancel = CancellationToken::new();
    let result = run_executor(executor, request, &dir.join("root"), sink, cancel).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (result, events)
}

fn marker(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("marker")).unwrap_or_default()
}

#[tokio::test]
async fn stages_get_the_request_and_fruix_signs_what_collect_left() {
    let dir = tempfile::tempdir().unwrap();
    let build = r#"env | grep '^FRUIX_' | sort > "$FRUIX_WORK_DIR/env"; cp "$FRUIX_WORK_DIR/env" "$FRUIX_RESULT_ROOT/logs/env.txt""#;
    let collect = r#"mkdir -p "$FRUIX_RESULT_ROOT/artifacts/headers/usr/include/sys" && echo '#define X 1' > "$FRUIX_RESULT_ROOT/artifacts/headers/usr/include/sys/param.h""#;
    let stages =
        format!(r#"(build (command "./build.sh")) (collect (command "./collect.sh")) {CLEANUP}"#);
    let ex = executor(
        dir.path(),
        &stages,
        &[("build.sh", build), ("collect.sh", collect), CLEANUP_SH],
    );
    let (result, events) = run(ex, dir.path()).await;
    let root = result.unwrap();
    let m = root.metadata();
    assert_eq!(
        (m.executor.as_str(), m.executor_version.as_str()),
        ("t", "0.1")
    );
    assert!(m.artifacts[0].tree_signature.is_some());
    let env = std::fs::read_to_string(root.path().join("logs/env.txt")).unwrap();
    let root_path = dir.path().canonicalize().unwrap().join("root");
    for expected in [
        "FRUIX_STAGE=build".to_string(),
        "FRUIX_RUN_ID=20260405T213444Z".into(),
        format!("FRUIX_RESULT_ROOT={}", root_path.display()),
        format!("FRUIX_WORK_DIR={}.work", root_path.display()),
        "FRUIX_KERNCONF=GENERIC".into(),
        "FRUIX_TARGET_ARCH=amd64".into(),
        "FRUIX_JOBS=2".into(),
        "FRUIX_JOBS_PER_MACHINE=0".into(),
        "FRUIX_MAKE_FLAGS=-DNO_ROOT".into(),
        "FRUIX_SOURCE_DATE_EPOCH=1775420084".into(),
        "FRUIX_ARTIFACTS=headers".into(),
        "FRUIX_BUILD_FAILURE_EXIT_CODE=1".into(),
        "FRUIX_SYSTEM_FAILURE_EXIT_CODE=2".into(),
        format!(
            "FRUIX_CONFIG_MARKER={}",
            dir.path().join("marker").display()
        ),
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing from:\n{env}"
        );
    }
    let stages: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::StageStarted { stage } => Some(stage.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(stages, ["build", "collect", "sign", "cleanup"]);
    assert_eq!(marker(dir.path()), "success\n");
    assert!(
        !dir.path().join("root.work").exists(),
        "the work directory is removed"
    );
}

#[tokio::test]
async fn exit_statuses_tell_build_from_system_failures() {
    for (code, expected_failure, outcome, says) in [
        (
            1,
            Failure::Build,
            "build-failure",
            "build step `build` failed (exit status 1)",
        ),
        (
            2,
            Failure::System,
            "system-failure",
            "stage build reported a system failure (exit status 2)",
        ),
        (
            9,
            Failure::System,
            "system-failure",
            "neither its build-failure status (1) nor its system-failure status (2)",
        ),
    ] {
        let body = format!("echo step one; echo broken >&2; exit {code}");
        let (dir, ex) = build_then_cleanup("", &body);
        let (result, _) = run(ex, dir.path()).await;
        let e = result.unwrap_err();
        assert_eq!(e.failure(), expected_failure, "exit {code}: {e}");
        assert_eq!(marker(dir.path()), format!("{outcome}\n"));
        assert!(e.to_string().contains(says), "exit {code}: {e}");
        // Every failed stage carries its log. Lines from stdout and stderr
        // arrive through two pipes: their relative order is not defined,
        // only that both are kept.
        let log = e.log().expect("a failed stage carries its log");
        let mut tail = log.tail.clone();
        tail.sort();
        assert_eq!(tail, ["broken", "step one"], "exit {code}");
        assert!(
            log.path.as_ref().is_some_and(|p| p.is_file()),
            "exit {code}"
        );
    }
}

#[tokio::test]
async fn a_stage_past_its_timeout_is_stopped_and_cleanup_runs() {
    let (dir, ex) = build_then_cleanup(" (timeout 0.5)", "echo working; sleep 600");
    let started = Instant::now();
    let (result, _) = run(ex, dir.path()).await;
    let e = result.unwrap_err();
    assert_eq!(e.failure(), Failure::System);
    assert!(
        e.to_string().contains("stage build timed out after 0.5s"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(marker(dir.path()), "timeout\n");
}

/// Regression (exit 1): a cleanup exiting with the build-failure status
/// warned that "build step `cleanup` failed".
#[tokio::test]
async fn a_failing_cleanup_is_a_warning_that_keeps_the_build_result() {
    for (code, says) in [
        (
            1,
            "cleanup of executor t failed: step `cleanup` failed (exit status 1)",
        ),
        (2, "stage cleanup reported a system failure"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let stages = r#"(build (command "./build.sh")) (cleanup (command "./cleanup.sh"))"#;
        let cleanup = format!("exit {code}");
        let ex = executor(
            dir.path(),
            stages,
            &[("build.sh", "exit 1"), ("cleanup.sh", &cleanup)],
        );
        let (result, events) = run(ex, dir.path()).await;
        assert_eq!(result.unwrap_err().failure(), Failure::Build);
        assert!(
            events.iter().any(|e| matches!(e, Event::Warning { message } if message.contains(says) && !message.contains("build step"))),
            "exit {code}: {events:#?}"
        );
    }
}

#[tokio::test]
async fn cancellation_stops_the_stage_and_cleanup_still_runs() {
    let (dir, ex) = build_then_cleanup("", "echo started; sleep 600");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let (sink, mut rx) = EventSink::channel();
    // Cancelled once the stage runs (its first output line), not after a delay.
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if matches!(&event, Event::Log { line, .. } if line == "started") {
                trigger.cancel();
            }
        }
    });
    let result = run_executor(ex, request(), &dir.path().join("root"), sink, cancel).await;
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert_eq!(marker(dir.path()), "cancelled\n");
}

#[tokio::test]
async fn unknown_configuration_keys_are_refused_naming_the_declared_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("executors.scm");
    std::fs::write(&path, r#"(fruix-executors (format-version 1) (executor (name "t") (version "1") (description "d") (config-key (name "image") (description "i")) (build (command "true"))))"#).unwrap();
    let spec = Arc::new(file::read_file(&path).unwrap().remove(0));
    let e = ExternalExecutor::new(spec.clone(), serde_json::json!({"imag": "x"})).unwrap_err();
    assert!(
        e.to_string()
            .contains("unknown key `imag`; this executor declares: image"),
        "{e}"
    );
    let e = ExternalExecutor::new(spec, serde_json::json!({"image": ["x"]})).unwrap_err();
    assert!(
        e.to_string()
            .contains("must be a string, number or boolean"),
        "{e}"
    );
}

/// Regression: the refused key and value were printed as they were (a
/// newline in a key forged a `fruix: error:` line) and never cut.
#[test]
fn refused_configuration_keys_and_values_are_shown_escaped_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("executors.scm");
    std::fs::write(&path, r#"(fruix-executors (format-version 1) (executor (name "t") (version "1") (description "d") (config-key (name "image") (description "i")) (build (command "true"))))"#).unwrap();
    let spec = Arc::new(file::read_file(&path).unwrap().remove(0));
    let refused = |config| {
        ExternalExecutor::new(spec.clone(), config)
            .unwrap_err()
            .to_string()
    };
    let e = refused(serde_json::json!({"x\nfruix: error: FORGED\u{202e}": 1}));
    assert!(
        e.contains("unknown key `x\\nfruix: error: FORGED\\342\\200\\256`;"),
        "{e}"
    );
    let e = refused(serde_json::json!({"image": ["\u{202e}", "y".repeat(3000)]}));
    assert!(e.contains("got [\"\\342\\200\\256\",\"yyy"), "{e}");
    assert!(e.ends_with("…[1986 more bytes cut]"), "{e}");
    let e = refused(serde_json::json!("\u{202e}"));
    assert!(
        e.contains("expected an object of keys, got \"\\342\\200\\256\""),
        "{e}"
    );
    assert!(!e.contains(['\n', '\u{202e}']), "{e}");
}

#[test]
fn every_documented_variable_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let ex = ExternalExecutor::new(
        Arc::new(
            file::parse(
                &dir.path().join("executors.scm"),
                r#"(fruix-executors (format-version 1) (executor (name "t") (version "1") (description "d") (build (command "true"))))"#,
            )
            .unwrap()
            .remove(0),
        ),
        serde_json::Value::Null,
    )
    .unwrap();
    let ctx = RunContext {
        request: request(),
        result_root: dir.path().to_path_buf(),
        events: EventSink::discard(),
        cancel: CancellationToken::new(),
    };
    let env = ex.environment(&ctx, dir.path()).unwrap();
    // Set per stage, per cleanup, and per configuration value.
    let elsewhere = ["FRUIX_STAGE", "FRUIX_OUTCOME", "FRUIX_CONFIG_KEY"];
    for (name, _) in ENVIRONMENT.iter().filter(|(n, _)| !elsewhere.contains(n)) {
        assert!(env.iter().any(|(k, _)| k == name), "{name} is not set");
    }
    assert_eq!(env.len(), ENVIRONMENT.len() - elsewhere.len());
}

#[tokio::test]
async fn make_flags_with_white_space_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path(), r#"(build (command "true"))"#, &[]);
    let mut bad = request();
    bad.policy.make_flags = vec!["CFLAGS=-O2 -g".into()];
    let (result, _) = run_request(ex, bad, dir.path()).await;
    let e = result.unwrap_err();
    assert!(
        matches!(e, Error::InvalidRequest { .. }) && e.to_string().contains("CFLAGS=-O2 -g"),
        "{e}"
    );
}

/// Regression: a run stopped by `--timeout` or `--max-silent-time` (the
/// runner cancels its token) told cleanup `FRUIX_OUTCOME=cancelled`; only
/// a stage's own timeout gave `timeout`.
#[tokio::test]
async fn a_run_past_a_run_level_limit_tells_cleanup_timeout() {
    let half = Some(Duration::from_millis(500));
    for limits in [
        RunLimits {
            timeout: half,
            max_silent: None,
        },
        RunLimits {
            timeout: None,
            max_silent: half,
        },
    ] {
        let (dir, ex) = build_then_cleanup("", "echo started; sleep 600");
        let result = run_limited(ex, request(), &dir.path().join("root"), limits).await;
        assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
        assert_eq!(marker(dir.path()), "timeout\n", "{limits:?}");
    }
}

/// Regression: a collect that exits 0 but collects nothing told cleanup
/// `FRUIX_OUTCOME=invalid` (the README: the stages succeeded, so
/// `success`; the root is judged after cleanup), and the error named only
/// the first missing artifact. It lists every one.
#[tokio::test]
async fn a_collect_that_collects_nothing_lists_every_missing_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let stages =
        format!(r#"(build (command "true")) (collect (command "./collect.sh")) {CLEANUP}"#);
    let ex = executor(
        dir.path(),
        &stages,
        &[("collect.sh", "echo nothing to collect"), CLEANUP_SH],
    );
    let mut request = request();
    request.artifacts = fruix_core::executor::base_artifacts();
    let (result, _) = run_request(ex, request, dir.path()).await;
    let e = result.unwrap_err();
    let Error::InvalidResultRoot { problems, .. } = &e else {
        panic!("{e:?}")
    };
    let missing: Vec<_> = problems
        .iter()
        .map(|p| p.path.strip_prefix(dir.path().join("root")).unwrap())
        .collect();
    assert_eq!(
        missing,
        ["world", "kernel", "headers", "bootloader"].map(|a| Path::new("artifacts").join(a)),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("artifacts/bootloader: is missing: collect did not put the requested artifact bootloader there"),
        "{e}"
    );
    assert_eq!(marker(dir.path()), "success\n");
}

/// A stage whose prepare runs `script`, then a build, and whose cleanup
/// appends FRUIX_OUTCOME to the marker and says a line.
fn prepare_then_cleanup(script: &str) -> (tempfile::TempDir, Arc<dyn Executor>) {
    let dir = tempfile::tempdir().unwrap();
    let stages =
        format!(r#"(prepare (command "./prepare.sh")) (build (command "true")) {CLEANUP}"#);
    let cleanup = format!("echo cleaning up; {}", CLEANUP_SH.1);
    let ex = executor(
        dir.path(),
        &stages,
        &[("prepare.sh", script), ("cleanup.sh", &cleanup)],
    );
    (dir, ex)
}

/// Regression: a stage that replaced `logs/` with a symlink stopped the
/// cleanup command from running (fruix refuses to write `cleanup.log`
/// through it, and skipped the command), though cleanup always runs. It
/// runs, its output only shown, and nothing is written through the link.
#[tokio::test]
async fn a_stage_replacing_logs_with_a_symlink_does_not_stop_cleanup() {
    let (dir, ex) = prepare_then_cleanup(
        r#"elsewhere="$(dirname "$FRUIX_CONFIG_MARKER")/elsewhere"; mkdir "$elsewhere"; rm -rf "$FRUIX_RESULT_ROOT/logs"; ln -s "$elsewhere" "$FRUIX_RESULT_ROOT/logs""#,
    );
    let (result, events) = run(ex, dir.path()).await;
    let e = result.unwrap_err();
    assert!(matches!(e, Error::UnsafePath { .. }), "{e:?}");
    // The stages did not all run: fruix refused what prepare left.
    assert_eq!(marker(dir.path()), "invalid\n");
    let written: Vec<_> = std::fs::read_dir(dir.path().join("elsewhere"))
        .unwrap()
        .collect();
    assert!(written.is_empty(), "{written:?}");
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Log { stage, line, .. } if stage == "cleanup" && line == "cleaning up")
        ),
        "the cleanup's output is shown: {events:#?}"
    );
    let warned = warnings(&events);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(
        warned[0].starts_with("the log of the cleanup of executor `t` is not kept:")
            && warned[0].contains("logs: is not a directory"),
        "{warned:#?}"
    );
    assert!(!dir.path().join("root.work").exists());
}

/// A stage that removes the result root itself: cleanup still runs, in
/// the work directory it had.
#[tokio::test]
async fn a_stage_removing_the_result_root_does_not_stop_cleanup() {
    let (dir, ex) = prepare_then_cleanup(r#"rm -rf "$FRUIX_RESULT_ROOT""#);
    let (result, _) = run(ex, dir.path()).await;
    assert!(result.is_err());
    assert_eq!(marker(dir.path()), "system-failure\n");
    assert!(!dir.path().join("root.work").exists());
}

/// Regression (data loss): a `ROOT.work` fruix did not make was removed
/// with everything in it. It is refused as the request's input, kept, and
/// no stage runs in it, cleanup included.
#[tokio::test]
async fn a_work_directory_fruix_did_not_make_is_kept_and_no_stage_runs() {
    let (dir, ex) = build_then_cleanup("", "exit 0");
    let work = dir.path().join("root.work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("thesis.tex"), "years of work").unwrap();
    let (result, events) = run(ex, dir.path()).await;
    let e = result.unwrap_err();
    assert!(matches!(e, Error::InvalidRequest { .. }), "{e:?}");
    assert!(e.to_string().contains("move it away"), "{e}");
    assert_eq!(marker(dir.path()), "", "cleanup did not run");
    assert_eq!(
        std::fs::read_to_string(work.join("thesis.tex")).unwrap(),
        "years of work"
    );
    assert_eq!(warnings(&events), Vec::<&str>::new());
}

/// A stage that removes its work directory's marker leaves a directory
/// fruix can no longer tell is its own: kept, with a warning. One that
/// removes the whole work directory still gets a cleanup, in a new one.
#[tokio::test]
async fn a_work_directory_a_stage_unmarked_is_kept_with_a_warning() {
    let (dir, ex) = build_then_cleanup("", r#"rm "$FRUIX_WORK_DIR/.fruix-work"; exit 1"#);
    let (result, events) = run(ex, dir.path()).await;
    assert_eq!(result.unwrap_err().failure(), Failure::Build);
    assert_eq!(marker(dir.path()), "build-failure\n");
    let warned = warnings(&events);
    assert!(
        warned.len() == 1 && warned[0].contains("was left in place"),
        "{warned:#?}"
    );
    assert!(dir.path().join("root.work").is_dir());
    let (dir, ex) = build_then_cleanup("", r#"rm -rf "$FRUIX_WORK_DIR"; exit 1"#);
    let (result, events) = run(ex, dir.path()).await;
    assert_eq!(result.unwrap_err().failure(), Failure::Build);
    assert_eq!(marker(dir.path()), "build-failure\n");
    assert_eq!(warnings(&events), Vec::<&str>::new());
    assert!(!dir.path().join("root.work").exists());
}
