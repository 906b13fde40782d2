//! Tests of the runner and the registry, with an in-tree test executor.
use super::runner::prepare_result_root;
use super::*;
use crate::error::Error;
use crate::result_root::{ResultRoot, INCOMPLETE_MARKER};
use crate::testing::{run_limited, warnings, write_sample_result_root};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the in-tree test executor does when run.
#[derive(Debug, Clone, Copy, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Behaviour {
    Succeed,
    FailBuild,
    Hang,
    WrongRunId,
    /// Says a line every 100 ms for 3 s, then succeeds.
    Chatter,
    /// Succeeds, but removes the unfinished marker itself.
    RemoveMarker,
    /// Panics in its build.
    PanicInBuild,
    /// Succeeds, then panics in its cleanup.
    PanicInCleanup,
    /// Succeeds, then its cleanup fails as its cleanup step would.
    FailCleanup,
    /// Panics starting a run.
    PanicInStart,
    /// Succeeds, then panics when told how its build ended.
    PanicInEnded,
    /// Writes a valid root, removes the unfinished marker, then fails.
    LoseMarkerThenFail,
    /// Writes a valid root, removes the unfinished marker, says `hanging`,
    /// then hangs until it is cancelled.
    LoseMarkerThenHang,
    /// Succeeds, but replaces the unfinished marker with a directory.
    MarkerDirectory,
    /// Writes a valid root, replaces the unfinished marker with a
    /// directory, then fails.
    MarkerDirectoryThenFail,
}

/// Configuration of the in-tree test executor.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TestConfig {
    /// succeed, fail-build, hang, wrong-run-id, chatter, remove-marker,
    /// panic-in-build, panic-in-cleanup, fail-cleanup, panic-in-start,
    /// panic-in-ended, lose-marker-then-fail, lose-marker-then-hang,
    /// marker-directory or marker-directory-then-fail
    behaviour: Behaviour,
}

impl ExecutorConfig for TestConfig {
    const NAME: &'static str = "core-test";
    const DESCRIPTION: &'static str = "in-tree test executor of fruix-core";

    fn capabilities() -> Capabilities {
        Capabilities {
            cancellable: true,
            ..Capabilities::default()
        }
    }

    fn build(self) -> Result<Arc<dyn Executor>> {
        Ok(Arc::new(TestExecutor {
            behaviour: self.behaviour,
        }))
    }
}

crate::register_executor!(TestConfig);

static CLEANUPS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
struct TestExecutor {
    behaviour: Behaviour,
}

impl Executor for TestExecutor {
    fn name(&self) -> &str {
        TestConfig::NAME
    }
    fn version(&self) -> &str {
        "0.0.1"
    }
    fn capabilities(&self) -> Capabilities {
        TestConfig::capabilities()
    }
    fn start(&self, _ctx: &RunContext) -> Box<dyn Run + '_> {
        if let Behaviour::PanicInStart = self.behaviour {
            panic!("boom in start");
        }
        Box::new(TestRun {
            behaviour: self.behaviour,
            told: None,
        })
    }
}

/// One run of the test executor.
struct TestRun {
    behaviour: Behaviour,
    /// What the runner told it of its build's end ([`Run::ended`]).
    told: Option<String>,
}

/// The file beside the result root `root` where a test run's cleanup
/// writes what the runner told it of its build's end.
fn told_file(root: &std::path::Path) -> std::path::PathBuf {
    root.with_extension("told")
}

#[async_trait]
impl Run for TestRun {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        ctx.events
            .stage("build", async {
                ctx.events.log("build", Stream::Stdout, "building");
                if let Behaviour::Chatter = self.behaviour {
                    for n in 0..30 {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        ctx.events.log("build", Stream::Stdout, format!("line {n}"));
                    }
                }
                match self.behaviour {
                    Behaviour::PanicInBuild => panic!("boom\u{1b}[31m in build"),
                    Behaviour::FailBuild => return Err(failed_build()),
                    Behaviour::Hang => {
                        ctx.cancel.cancelled().await;
                        return Err(Error::Cancelled);
                    }
                    _ => {}
                }
                let run_id = match self.behaviour {
                    Behaviour::WrongRunId => "19700101T000000Z",
                    _ => ctx.request.run_id.as_str(),
                };
                let mut m = write_sample_result_root(&ctx.result_root, "core-test", run_id, true)?;
                m.build_policy = ctx.request.policy.clone();
                m.freebsd_base = ctx.request.freebsd_base.clone();
                m.write_to(&ctx.result_root)?;
                let marker = ctx.result_root.join(INCOMPLETE_MARKER);
                match self.behaviour {
                    Behaviour::RemoveMarker
                    | Behaviour::LoseMarkerThenFail
                    | Behaviour::LoseMarkerThenHang => std::fs::remove_file(&marker).unwrap(),
                    Behaviour::MarkerDirectory | Behaviour::MarkerDirectoryThenFail => {
                        std::fs::remove_file(&marker).unwrap();
                        std::fs::create_dir(&marker).unwrap();
                    }
                    _ => {}
                }
                match self.behaviour {
                    Behaviour::LoseMarkerThenFail | Behaviour::MarkerDirectoryThenFail => {
                        Err(failed_build())
                    }
                    Behaviour::LoseMarkerThenHang => {
                        ctx.events.log("build", Stream::Stdout, "hanging");
                        ctx.cancel.cancelled().await;
                        Err(Error::Cancelled)
                    }
                    _ => Ok(()),
                }
            })
            .await
    }
    fn ended(&mut self, result: &Result<()>) {
        if let Behaviour::PanicInEnded = self.behaviour {
            panic!("boom in ended");
        }
        self.told = Some(match result {
            Ok(()) => "ok".into(),
            Err(Error::Timeout { .. }) => "timeout".into(),
            Err(e) => format!("{:?}", e.failure()),
        });
    }

    async fn cleanup(self: Box<Self>, ctx: &RunContext) -> Result<()> {
        CLEANUPS.fetch_add(1, Ordering::SeqCst);
        if let Some(told) = &self.told {
            std::fs::write(told_file(&ctx.result_root), told).unwrap();
        }
        match self.behaviour {
            Behaviour::PanicInCleanup => panic!("boom in cleanup"),
            Behaviour::FailCleanup => Err(Error::Build {
                step: "cleanup".into(),
                status: Some("exit status 1".into()),
                log: crate::error::LogRef {
                    path: Some("/r/logs/cleanup.log".into()),
                    tail: vec!["rm: busy".into()],
                },
            }),
            _ => Ok(()),
        }
    }
}

/// The build failure of the test executor.
fn failed_build() -> Error {
    Error::Build {
        step: "buildworld".into(),
        status: Some("exit status 2".into()),
        log: crate::error::LogRef {
            path: None,
            tail: vec!["error".into()],
        },
    }
}

fn request() -> BuildRequest {
    crate::testing::sample_request("core-test", base_artifacts())
}

fn executor(behaviour: &str) -> Arc<dyn Executor> {
    Registry::compiled()
        .unwrap()
        .create("core-test", serde_json::json!({ "behaviour": behaviour }))
        .unwrap()
}

async fn run(
    behaviour: &str,
    cancel: CancellationToken,
) -> (Result<ResultRoot>, Vec<Event>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (events, mut rx) = EventSink::channel();
    let result = run_executor(
        executor(behaviour),
        request(),
        &dir.path().join("root"),
        events,
        cancel,
    )
    .await;
    let mut seen = Vec::new();
    while let Ok(e) = rx.try_recv() {
        seen.push(e);
    }
    (result, seen, dir)
}

#[test]
fn inventory_registration_is_found_by_name() {
    let registry = Registry::compiled().unwrap();
    let entry = registry.get("core-test").unwrap();
    assert_eq!(entry.description, "in-tree test executor of fruix-core");
    assert_eq!(executor("succeed").name(), "core-test");
}

#[test]
fn keys_and_capabilities_come_from_the_typed_config_without_one() {
    let registry = Registry::compiled().unwrap();
    let entry = registry.get("core-test").unwrap();
    assert_eq!(
        entry.config_keys,
        [ConfigKey {
            name: "behaviour".into(),
            description: "succeed, fail-build, hang, wrong-run-id, chatter, remove-marker, panic-in-build, panic-in-cleanup, fail-cleanup, panic-in-start, panic-in-ended, lose-marker-then-fail, lose-marker-then-hang, marker-directory or marker-directory-then-fail".into(),
        }]
    );
    assert!(entry.capabilities.cancellable);
    assert_eq!(entry.version, env!("CARGO_PKG_VERSION"));
}

#[test]
fn unknown_name_lists_the_registered_ones() {
    let err = Registry::compiled().unwrap().get("jial").unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown executor `jial`; available executors: core-test"),
        "{err}"
    );
}

#[test]
fn unknown_config_key_is_refused() {
    let err = Registry::compiled()
        .unwrap()
        .create(
            "core-test",
            serde_json::json!({ "behaviour": "succeed", "colour": "red" }),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown key `colour`; the keys of core-test are `behaviour`"),
        "{err}"
    );
}

#[test]
fn duplicate_name_names_both_sources() {
    let mut registry = Registry::compiled().unwrap();
    let mut twin = registry.get("core-test").unwrap().clone();
    twin.origin = "/etc/fruix/executors.scm".into();
    twin.kind = ExecutorKind::External;
    let err = registry.add(twin).unwrap_err().to_string();
    assert!(
        err.contains("fruix-core (built-in)")
            && err.contains("/etc/fruix/executors.scm (external)"),
        "{err}"
    );
}

#[tokio::test]
async fn successful_run_validates_and_clears_the_marker() {
    let (result, events, dir) = run("succeed", CancellationToken::new()).await;
    let root = result.unwrap();
    assert!(!dir.path().join("root").join(INCOMPLETE_MARKER).exists());
    assert_eq!(root.metadata().run_id, "20260405T213444Z");
    assert!(matches!(&events[0], Event::StageStarted { stage } if stage == "build"));
    assert!(matches!(&events[1], Event::Log { line, .. } if line == "building"));
    assert!(matches!(&events[2], Event::StageFinished { ok: true, .. }));
}

#[tokio::test]
async fn build_failure_keeps_the_marker_and_runs_cleanup() {
    let before = CLEANUPS.load(Ordering::SeqCst);
    let (result, _, dir) = run("fail-build", CancellationToken::new()).await;
    let err = result.unwrap_err();
    assert_eq!(err.failure(), crate::Failure::Build);
    assert!(dir.path().join("root").join(INCOMPLETE_MARKER).exists());
    assert!(CLEANUPS.load(Ordering::SeqCst) > before);
}

/// A sink, and a token cancelled once the run logs a line `at` takes: a
/// cancel that waits on what the run does, not on a delay.
fn cancelled_at(at: fn(&str) -> bool) -> (EventSink, CancellationToken) {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let (events, mut rx) = EventSink::channel();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if matches!(&event, Event::Log { line, .. } if at(line)) {
                trigger.cancel();
            }
        }
    });
    (events, cancel)
}

#[tokio::test]
async fn cancellation_stops_the_run_and_runs_cleanup() {
    let before = CLEANUPS.load(Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    // Cancelled once the build is under way (its first log line), not after a delay.
    let (events, cancel) = cancelled_at(|_| true);
    let result = run_executor(
        executor("hang"),
        request(),
        &dir.path().join("root"),
        events,
        cancel,
    )
    .await;
    assert!(matches!(result, Err(Error::Cancelled)));
    let root = dir.path().join("root");
    assert!(root.join(INCOMPLETE_MARKER).exists());
    assert!(CLEANUPS.load(Ordering::SeqCst) > before);
    let told = std::fs::read_to_string(told_file(&root)).unwrap();
    assert_eq!(told, "Cancelled");
}

#[tokio::test]
async fn metadata_disagreeing_with_the_request_is_refused() {
    let (result, _, _dir) = run("wrong-run-id", CancellationToken::new()).await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("run-id") && err.contains("19700101T000000Z"),
        "{err}"
    );
}

/// How a run of the succeeding executor into `root` is refused.
async fn refused(root: &std::path::Path) -> Error {
    run_executor(
        executor("succeed"),
        request(),
        root,
        EventSink::discard(),
        CancellationToken::new(),
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn existing_result_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("keep"), b"x").unwrap();
    let err = refused(&root).await;
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert!(root.join("keep").exists());
}

#[test]
fn result_root_is_private_to_its_user_whatever_it_was_created_with() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for name in ["made-by-run-id-allocation", "new"] {
        let root = dir.path().join(name);
        if name != "new" {
            std::fs::create_dir(&root).unwrap();
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        prepare_result_root(&root).unwrap();
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{name}");
    }
}

/// Regression: a symlink to an empty directory was taken for the empty
/// directory run id allocation makes: its target was made `0700`, the
/// unfinished marker was written into it, and the build ran there before
/// validation refused the root.
#[tokio::test]
async fn a_symlinked_result_root_is_refused_before_anything_is_written() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("root");
    std::os::unix::fs::symlink(&target, &root).unwrap();
    let err = refused(&root).await;
    assert!(
        matches!(&err, Error::UnsafePath { path, .. } if path == &root),
        "{err:?}"
    );
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    let entries: Vec<_> = std::fs::read_dir(&target).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
    assert!(std::fs::symlink_metadata(&root).unwrap().is_symlink());
    // The same refusal from the preparation alone, with a symlink to a
    // file and a dangling one.
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep").unwrap();
    for (name, to) in [
        ("to-file", file.clone()),
        ("dangling", dir.path().join("none")),
    ] {
        let link = dir.path().join(name);
        std::os::unix::fs::symlink(&to, &link).unwrap();
        let err = prepare_result_root(&link).unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{name}: {err:?}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    assert!(!dir.path().join("none").exists());
}

/// Regression: an empty directory of another user's at the result root was
/// taken (as root, fruix may open anyone's) and made `0700`: its owner could
/// then change the result root while fruix built and promoted it. It is
/// refused before anything is written.
#[tokio::test]
async fn another_users_empty_directory_is_refused_before_anything_is_written() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert!(
        rustix::process::geteuid().is_root(),
        "this test gives a directory to another user and needs root (run scripts/test.sh as root)"
    );
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&root, Some(NOBODY), Some(NOBODY)).unwrap_or_else(|e| {
        panic!("this test gives a directory to another user and needs root (run scripts/test.sh as root): {e}")
    });
    let err = refused(&root).await;
    assert!(
        matches!(&err, Error::UnsafePath { path, .. } if path == &root),
        "{err:?}"
    );
    let err = prepare_result_root(&root).unwrap_err();
    assert!(matches!(&err, Error::UnsafePath { .. }), "{err:?}");
    let meta = std::fs::symlink_metadata(&root).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o755);
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
    let entries: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
    assert!(entries.is_empty(), "{entries:?}");
}

/// Anything but an empty directory or nothing at the result root is
/// refused as existing, and left as it was.
#[test]
fn a_file_at_the_result_root_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::write(&root, b"keep").unwrap();
    let err = prepare_result_root(&root).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(std::fs::read(&root).unwrap(), b"keep");
}

/// `executor-version` names what built at the build site: a guest helper
/// of another fruix version than this host's builds a root the runner
/// accepts (see the `Executor` contract), while every other field of
/// [`check_agreement`] must agree.
#[test]
fn the_build_sites_version_is_recorded_not_compared() {
    let dir = tempfile::tempdir().unwrap();
    let request = request();
    let mut m = crate::testing::sample_metadata("core-test", &request.run_id);
    m.executor_version = "9.9.9".into();
    let ex = executor("succeed");
    assert_ne!(ex.version(), m.executor_version);
    check_agreement(ex.as_ref(), &request, &m, dir.path()).unwrap();
    m.executor = "local".into();
    let err = check_agreement(ex.as_ref(), &request, &m, dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidMetadata { field, .. } if field == "executor"),
        "{err:?}"
    );
}

/// A request without a job count lets the machine that builds choose
/// them: `promotion.scm` records its count, and only `jobs` may differ
/// from the request's policy. A request with a count must get it.
#[test]
fn the_jobs_are_the_build_machine_s_only_when_the_caller_gave_none() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor("succeed");
    let mut request = request();
    let mut m = crate::testing::sample_metadata("core-test", &request.run_id);
    m.build_policy.jobs = request.policy.jobs + 6;
    let policy_error = |request: &BuildRequest, m: &crate::promotion::PromotionMetadata| {
        let err = check_agreement(ex.as_ref(), request, m, dir.path()).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidMetadata { field, .. } if field == "build-policy"),
            "{err:?}"
        );
    };
    policy_error(&request, &m);
    request.jobs_per_machine = true;
    check_agreement(ex.as_ref(), &request, &m, dir.path()).unwrap();
    m.build_policy.kernconf = "MINIMAL".into();
    policy_error(&request, &m);
    // The machine that builds fixes the count in its request.
    let resolved = request.clone().with_jobs(12);
    assert_eq!(
        (resolved.policy.jobs, resolved.jobs_per_machine),
        (12, false)
    );
    assert_eq!(request.clone().with_jobs(0), request, "no count: unchanged");
    request.jobs_per_machine = false;
    assert_eq!(
        request.clone().with_jobs(12),
        request,
        "the caller's count stays"
    );
}

/// Regression: what `promotion.scm` records verbatim (branch, commit,
/// paths, kernconf, make flags) was not checked, so a control character in
/// it failed the build only at the end, when the written metadata did not
/// read back. It is refused before anything runs, naming the field.
#[test]
fn a_control_character_in_what_the_metadata_records_is_refused_up_front() {
    request().check().unwrap();
    let bad = "x\u{1b}[31m";
    type Set = fn(&mut BuildRequest, &str);
    let cases: [(&str, Set); 7] = [
        ("FreeBSD name", |r, v| r.freebsd_base.name = v.into()),
        ("FreeBSD branch", |r, v| r.freebsd_base.branch = v.into()),
        ("source path", |r, v| r.source.path = v.into()),
        ("source commit", |r, v| r.source.commit = Some(v.into())),
        ("source directory", |r, v| r.source_dir = Some(v.into())),
        ("kernconf", |r, v| r.policy.kernconf = v.into()),
        ("make flag", |r, v| r.policy.make_flags.push(v.into())),
    ];
    for (what, set) in cases {
        let mut r = request();
        set(&mut r, bad);
        match r.check() {
            Err(Error::InvalidRequest { message }) => {
                assert!(message.starts_with(what), "{what}: {message}");
                assert!(message.contains("\\033[31m"), "{what}: escaped: {message}");
            }
            other => panic!("{what}: {other:?}"),
        }
        // Tabs and newlines are control characters too.
        let mut r = request();
        set(&mut r, "a\nb");
        assert!(r.check().is_err(), "{what}: a newline");
    }
}

/// A request's `SOURCE_DATE_EPOCH` (from a matrix, an external caller) is
/// checked as the command line's is: 0 to the end of the year 9999.
#[test]
fn a_source_date_epoch_out_of_its_range_is_refused_up_front() {
    use crate::promotion::MAX_SOURCE_DATE_EPOCH;
    for (e, ok) in [
        (0, true),
        (MAX_SOURCE_DATE_EPOCH, true),
        (-1, false),
        (MAX_SOURCE_DATE_EPOCH + 1, false),
        (i64::MAX, false),
    ] {
        let mut r = request();
        r.policy.source_date_epoch = Some(e);
        match r.check() {
            Ok(()) => assert!(ok, "{e} taken"),
            Err(Error::InvalidRequest { message }) => {
                assert!(!ok, "{e}: {message}");
                assert!(message.contains("out of range"), "{message}");
            }
            other => panic!("{e}: {other:?}"),
        }
    }
}

/// A run of `behaviour` under `limits`, its cleanups counted.
async fn run_within(behaviour: &str, limits: RunLimits) -> (Result<ResultRoot>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let result = run_limited(
        executor(behaviour),
        request(),
        &dir.path().join("root"),
        limits,
    )
    .await;
    (result, dir)
}

#[tokio::test]
async fn a_run_past_a_limit_is_stopped_and_fails_as_a_timeout() {
    let ms = std::time::Duration::from_millis;
    let cases = [
        (
            RunLimits {
                timeout: Some(ms(200)),
                max_silent: None,
            },
            "the build",
        ),
        (
            RunLimits {
                timeout: None,
                max_silent: Some(ms(200)),
            },
            "waiting for output from the build",
        ),
    ];
    for (limits, says) in cases {
        let before = CLEANUPS.load(Ordering::SeqCst);
        // The hanging executor ends only when it is cancelled.
        let (result, dir) = run_within("hang", limits).await;
        match result {
            Err(e @ Error::Timeout { .. }) => {
                assert_eq!(e.failure(), crate::Failure::System);
                // What it was doing: its last lines (it wrote no log file).
                let log = e.log().unwrap();
                assert_eq!(
                    (&log.path, log.tail.as_slice()),
                    (&None, &["building".to_string()][..])
                );
                let message = e.to_string();
                assert!(
                    message.contains(&format!("{says} timed out after 0.2s; it was stopped")),
                    "{message}"
                );
            }
            other => panic!("{limits:?}: {other:?}"),
        }
        let root = dir.path().join("root");
        assert!(root.join(INCOMPLETE_MARKER).exists());
        assert!(CLEANUPS.load(Ordering::SeqCst) > before);
        // Regression: the run was told it was cancelled (the limit cancels
        // its token), so an external executor's cleanup saw
        // FRUIX_OUTCOME=cancelled. It is told why: the limit.
        let told = std::fs::read_to_string(told_file(&root)).unwrap();
        assert_eq!(told, "timeout", "{limits:?}");
    }
}

/// Regression: an executor that removed the unfinished marker itself made
/// the runner fail to remove it, an I/O failure of this host (exit 3). It
/// broke the contract: the root is refused as invalid.
#[tokio::test]
async fn an_executor_that_removes_the_unfinished_marker_is_refused() {
    let (result, _events, _dir) = run("remove-marker", CancellationToken::new()).await;
    match result {
        Err(e @ Error::InvalidResultRoot { .. }) => {
            assert_eq!(e.failure(), crate::Failure::Input);
            assert!(
                e.to_string()
                    .contains("executor core-test removed the unfinished marker"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The problems the validator finds in `root`, shown.
fn validation_problems(root: &std::path::Path) -> Vec<String> {
    match crate::result_root::validate(root) {
        Err(Error::InvalidResultRoot { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        other => panic!("{}: {other:?}", root.display()),
    }
}

/// Asserts that `root` is marked unfinished by a file, and that the
/// marker is all that keeps it from validating.
fn assert_marked_unfinished(root: &std::path::Path, case: &str) {
    let marker = root.join(INCOMPLETE_MARKER);
    assert!(marker.symlink_metadata().unwrap().is_file(), "{case}");
    let problems = validation_problems(root);
    assert_eq!(problems.len(), 1, "{case}: {problems:#?}");
    assert!(
        problems[0].contains("did not finish"),
        "{case}: {problems:#?}"
    );
}

/// Regression: a run that failed, was cancelled or timed out after its
/// executor had removed the unfinished marker left a root without it:
/// valid, and promotable by `fruix native-build promote`. The marker is
/// put back.
#[tokio::test]
async fn a_failed_run_puts_back_the_unfinished_marker_its_executor_removed() {
    let (result, _events, dir) = run("lose-marker-then-fail", CancellationToken::new()).await;
    assert_eq!(result.unwrap_err().failure(), crate::Failure::Build);
    assert_marked_unfinished(&dir.path().join("root"), "build failure");

    let limits = RunLimits {
        timeout: Some(std::time::Duration::from_millis(200)),
        max_silent: None,
    };
    let (result, dir) = run_within("lose-marker-then-hang", limits).await;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert_marked_unfinished(&dir.path().join("root"), "timeout");

    let dir = tempfile::tempdir().unwrap();
    // Cancelled once the marker is gone (the build says `hanging`).
    let (events, cancel) = cancelled_at(|line| line == "hanging");
    let root = dir.path().join("root");
    let result = run_executor(
        executor("lose-marker-then-hang"),
        request(),
        &root,
        events,
        cancel,
    )
    .await;
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert_marked_unfinished(&root, "cancelled");
}

/// Regression: an executor that replaced the unfinished marker with a
/// directory made the runner fail to remove it, a failure of this host
/// (exit 3). It broke the contract: the root is invalid, and stays
/// marked (anything at the marker's name keeps it from validating).
#[tokio::test]
async fn an_executor_that_replaces_the_unfinished_marker_is_refused() {
    let (result, events, dir) = run("marker-directory", CancellationToken::new()).await;
    let root = dir.path().join("root");
    match result {
        Err(e @ Error::InvalidResultRoot { .. }) => {
            assert_eq!(e.failure(), crate::Failure::Input);
            let expected = format!(
                "{}: executor core-test replaced the unfinished marker with a directory, which only fruix removes once the root is validated",
                root.join(INCOMPLETE_MARKER).display()
            );
            assert!(e.to_string().contains(&expected), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // The failure says it already.
    assert!(warnings(&events).is_empty(), "{events:?}");
    assert!(root.join(INCOMPLETE_MARKER).is_dir());
    let problems = validation_problems(&root);
    assert!(problems[0].contains("did not finish"), "{problems:#?}");
}

/// A failed run whose marker cannot be put back, because its executor
/// left a directory there, says so; the build's failure stands, and the
/// root does not validate.
#[tokio::test]
async fn a_failed_run_says_when_its_marker_cannot_be_put_back() {
    let (result, events, dir) = run("marker-directory-then-fail", CancellationToken::new()).await;
    assert_eq!(result.unwrap_err().failure(), crate::Failure::Build);
    let root = dir.path().join("root");
    let expected = format!(
        "executor core-test left a directory at {}, where fruix keeps the result root's unfinished marker: fruix leaves it there, and the root cannot be promoted while anything is there",
        root.join(INCOMPLETE_MARKER).display()
    );
    assert_eq!(warnings(&events), [expected.as_str()]);
    let problems = validation_problems(&root);
    assert!(problems[0].contains("did not finish"), "{problems:#?}");
}

/// Regression: a limit no clock can reach (`--timeout
/// 18446744073709551615s`) panicked adding it to the start, skipping the
/// cleanup. Past [`super::MAX_LIMIT`], a limit is none.
#[tokio::test]
async fn a_limit_past_any_clock_is_no_limit() {
    let huge = Some(std::time::Duration::MAX);
    let limits = RunLimits {
        timeout: huge,
        max_silent: huge,
    };
    let (result, _dir) = run_within("chatter", limits).await;
    result.unwrap();
}

#[tokio::test]
async fn output_keeps_a_run_under_its_silence_limit_but_not_under_its_timeout() {
    let secs = std::time::Duration::from_secs;
    // 3 s of a line every 100 ms: never 2 s silent.
    let silent = RunLimits {
        timeout: None,
        max_silent: Some(secs(2)),
    };
    let (result, _dir) = run_within("chatter", silent).await;
    result.unwrap();
    let total = RunLimits {
        timeout: Some(secs(1)),
        max_silent: Some(secs(2)),
    };
    let (result, _dir) = run_within("chatter", total).await;
    assert!(
        matches!(&result, Err(Error::Timeout { what, .. }) if what == "the build"),
        "{result:?}"
    );
}

/// Regression: an executor whose build panicked took fruix down with it:
/// Rust's panic message, exit status 101, no JSON object under `--json`,
/// and its cleanup never ran. The panic is a system failure naming the
/// executor, its message escaped, and cleanup runs, told of that failure.
#[tokio::test]
async fn a_build_that_panics_is_a_system_failure_and_is_still_cleaned_up() {
    let before = CLEANUPS.load(Ordering::SeqCst);
    let (result, _, dir) = run("panic-in-build", CancellationToken::new()).await;
    let e = result.unwrap_err();
    assert_eq!(e.failure(), crate::Failure::System, "{e}");
    assert!(matches!(e, Error::System { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "system failure: executor core-test panicked: boom\\033[31m in build"
    );
    let root = dir.path().join("root");
    assert!(root.join(INCOMPLETE_MARKER).exists());
    assert!(CLEANUPS.load(Ordering::SeqCst) > before);
    assert_eq!(std::fs::read_to_string(told_file(&root)).unwrap(), "System");
}

/// The panic hook of the `fruix` binary stays silent for a panic the
/// runner catches and reports itself, and the runner's failure says where
/// it happened, as the hook told it: here the hook's call is made by hand,
/// as the panic would (a test cannot install a process-wide hook). A panic
/// outside an executor is no one's but the hook's: a crash.
#[tokio::test]
async fn the_panic_hook_is_told_an_executor_s_panic_is_caught_and_where_it_was() {
    assert!(!super::panic_is_caught(None), "outside an executor");
    let told = Arc::new(std::sync::Mutex::new(None));
    let seen = told.clone();
    let executor = crate::testing::fn_executor("hooked", move |_| {
        let here = std::panic::Location::caller();
        *seen.lock().unwrap() = Some(super::panic_is_caught(Some(here)));
        panic!("boom")
    });
    let dir = tempfile::tempdir().unwrap();
    let result = run_executor(
        executor,
        crate::testing::sample_request("hooked", base_artifacts()),
        &dir.path().join("root"),
        EventSink::discard(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(*told.lock().unwrap(), Some(true), "inside its build");
    let e = result.unwrap_err().to_string();
    assert!(
        e.starts_with(
            "system failure: executor hooked panicked: boom (at core/src/executor/tests.rs:"
        ),
        "{e}"
    );
    assert!(!super::panic_is_caught(None), "after it");
}

/// A cleanup that panics is a cleanup failure: a warning, and the build's
/// result stands.
#[tokio::test]
async fn a_cleanup_that_panics_is_a_warning_and_the_result_stands() {
    let (result, events, _dir) = run("panic-in-cleanup", CancellationToken::new()).await;
    result.unwrap();
    assert_eq!(
        warnings(&events),
        ["cleanup of executor core-test panicked: boom in cleanup"]
    );
}

/// Regression: a cleanup failing as a step warned `cleanup of executor
/// rev failed: build step `cleanup` failed`: cleanup is no build step.
#[tokio::test]
async fn a_failed_cleanup_step_is_not_called_a_build_step() {
    let (result, events, _dir) = run("fail-cleanup", CancellationToken::new()).await;
    result.unwrap();
    assert_eq!(
        warnings(&events),
        ["cleanup of executor core-test failed: step `cleanup` failed (exit status 1); full log: /r/logs/cleanup.log"]
    );
}

/// A panic starting a run, or telling it how its build ended, is no crash
/// either: the first fails the run (nothing was acquired, so there is no
/// cleanup), the second is a warning, and cleanup still runs.
#[tokio::test]
async fn a_panic_starting_a_run_or_telling_it_its_end_is_no_crash() {
    let (result, _, dir) = run("panic-in-start", CancellationToken::new()).await;
    let e = result.unwrap_err();
    assert_eq!(
        e.to_string(),
        "system failure: executor core-test panicked: boom in start"
    );
    assert!(dir.path().join("root").join(INCOMPLETE_MARKER).exists());

    let before = CLEANUPS.load(Ordering::SeqCst);
    let (result, events, _dir) = run("panic-in-ended", CancellationToken::new()).await;
    result.unwrap();
    assert_eq!(
        warnings(&events),
        ["executor core-test panicked: boom in ended"]
    );
    assert!(CLEANUPS.load(Ordering::SeqCst) > before);
}
