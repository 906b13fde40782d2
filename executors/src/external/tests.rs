//! Tests of external executors: stages, environment, exit classes, timeouts and cancellation.
use super::*;
use fruix_core::executor::{run_executor, BuildRequest, Event, EventSink};
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
    let (sink, mut rx) = EventSink::channel();
    let cancel = CancellationToken::new();
    let result = run_executor(executor, request(), &dir.join("root"), sink, cancel).await;
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

#[tokio::test]
async fn a_failing_cleanup_is_a_warning_that_keeps_the_build_result() {
    let dir = tempfile::tempdir().unwrap();
    let stages = r#"(build (command "./build.sh")) (cleanup (command "./cleanup.sh"))"#;
    let ex = executor(
        dir.path(),
        stages,
        &[("build.sh", "exit 1"), ("cleanup.sh", "exit 2")],
    );
    let (result, events) = run(ex, dir.path()).await;
    assert_eq!(result.unwrap_err().failure(), Failure::Build);
    assert!(
        events.iter().any(|e| matches!(e, Event::Warning { message } if message.contains("stage cleanup reported a system failure"))),
        "{events:#?}"
    );
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
    let result = run_executor(
        ex,
        bad,
        &dir.path().join("root"),
        EventSink::discard(),
        CancellationToken::new(),
    )
    .await;
    let e = result.unwrap_err();
    assert!(
        matches!(e, Error::InvalidRequest { .. }) && e.to_string().contains("CFLAGS=-O2 -g"),
        "{e}"
    );
}
