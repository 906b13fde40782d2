//! The executor conformance suite: the contract of
//! [`Executor`], checked against any executor.
//!
//! Like `object_store`'s integration suite, it is a set of plain async
//! functions that take the pieces and panic with a message saying what the
//! executor did wrong. An executor's own tests describe how to make it
//! succeed, fail a build, fail as a system, and run long enough to be
//! cancelled (one [`Case`] each), and call [`Suite::run`]:
//!
//! ```ignore
//! #[tokio::test]
//! async fn local_executor_conforms() {
//!     let dir = tempfile::tempdir().unwrap();
//!     Suite {
//!         success: Case::new(local(), request(&[])),
//!         build_failure: Case::new(local(), request(&["FAIL_STEP=buildworld"])),
//!         system_failure: Case::new(local_with_make("no-such-make"), request(&[])),
//!         cancellation: Case::new(local(), request(&[])),
//!     }
//!     .run(dir.path())
//!     .await;
//! }
//! ```
//!
//! Every case runs through [`run_executor`] with the executor wrapped in an
//! [`ObservedExecutor`], which counts `build` and `cleanup` calls. The checks:
//!
//! - success: the result root passes the validator (marker removed), and
//!   `promotion.scm` agrees with the request and the executor
//!   ([`check_agreement`]);
//! - a failing build is [`Failure::Build`] ([`Error::Build`] naming the step),
//!   a machine or helper that cannot be reached is [`Failure::System`], and
//!   both leave a root that never validates;
//! - cancellation (at the first log line) returns [`Error::Cancelled`]
//!   promptly, leaves no process that mentions the result root, and no task
//!   that still holds the run's event sink;
//! - in every case, cleanup runs exactly once, after `run` returned, and the
//!   events are in order ([`check_event_order`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Failure, Result};
use crate::executor::{
    run_executor, BuildRequest, Capabilities, Event, EventSink, Executor, Run, RunContext,
};
use crate::promotion::PromotionMetadata;
use crate::result_root::{self, ResultRoot, INCOMPLETE_MARKER};
use crate::special_modes::artifact_signature;

/// How long a cancelled executor may take to return after cancellation.
pub const CANCEL_BOUND: Duration = Duration::from_secs(10);

/// When no log line arrives, the cancellation case is cancelled this long
/// after it started.
pub const CANCEL_FALLBACK: Duration = Duration::from_secs(5);

/// One scenario: an executor and the request to run it with.
#[derive(Debug, Clone)]
pub struct Case {
    /// The executor under test, configured for this scenario (a missing
    /// program or an unreachable machine for the system failure).
    pub executor: Arc<dyn Executor>,
    /// The request to run; it must pass [`BuildRequest::check`] and the
    /// executor's `check_request`, or the case fails before the executor runs.
    pub request: BuildRequest,
}

impl Case {
    /// The case of running `executor` on `request`.
    pub fn new(executor: Arc<dyn Executor>, request: BuildRequest) -> Case {
        Case { executor, request }
    }
}

/// The cases an executor gives the suite.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Builds successfully.
    pub success: Case,
    /// A build step fails (for make-based executors, `FAIL_STEP=buildworld`
    /// in the make flags does it on the miniature source tree).
    pub build_failure: Case,
    /// The machine (or helper program) cannot be reached.
    pub system_failure: Case,
    /// Runs long enough to be cancelled at its first log line.
    pub cancellation: Case,
}

impl Suite {
    /// Runs every check, each case into its own result root under `dir`.
    pub async fn run(self, dir: &Path) {
        let root = produces_a_valid_root(&self.success, &dir.join("success")).await;
        check_agreement(self.success.executor.as_ref(), &self.success.request, &root);
        build_failure_is_a_build_failure(&self.build_failure, &dir.join("build-failure")).await;
        unreachable_is_a_system_failure(&self.system_failure, &dir.join("system-failure")).await;
        cancellation_stops_the_work_and_cleans_up(&self.cancellation, &dir.join("cancellation"))
            .await;
    }
}

/// Wraps an executor and counts its runs' `build` and `cleanup` calls.
#[derive(Debug)]
pub struct ObservedExecutor {
    inner: Arc<dyn Executor>,
    runs: AtomicUsize,
    cleanups: AtomicUsize,
    running: AtomicBool,
    cleanup_while_running: AtomicBool,
}

impl ObservedExecutor {
    /// Wraps `inner`, with every count at zero.
    pub fn new(inner: Arc<dyn Executor>) -> ObservedExecutor {
        ObservedExecutor {
            inner,
            runs: AtomicUsize::new(0),
            cleanups: AtomicUsize::new(0),
            running: AtomicBool::new(false),
            cleanup_while_running: AtomicBool::new(false),
        }
    }

    /// How many times a run's `build` was called.
    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    /// How many times `cleanup` was called.
    pub fn cleanups(&self) -> usize {
        self.cleanups.load(Ordering::SeqCst)
    }

    /// Whether `cleanup` was called while `run` had not returned.
    pub fn cleaned_up_while_running(&self) -> bool {
        self.cleanup_while_running.load(Ordering::SeqCst)
    }
}

/// Clears the running flag when `run` returns or is dropped.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Executor for ObservedExecutor {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> &str {
        self.inner.version()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn start(&self, ctx: &RunContext) -> Box<dyn Run + '_> {
        Box::new(ObservedRun {
            observer: self,
            inner: self.inner.start(ctx),
        })
    }
}

/// A run of an [`ObservedExecutor`], counting its calls.
struct ObservedRun<'a> {
    observer: &'a ObservedExecutor,
    inner: Box<dyn Run + 'a>,
}

#[async_trait]
impl Run for ObservedRun<'_> {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        let o = self.observer;
        o.runs.fetch_add(1, Ordering::SeqCst);
        o.running.store(true, Ordering::SeqCst);
        let _running = Running(&o.running);
        self.inner.build(ctx).await
    }

    fn ended(&mut self, result: &Result<()>) {
        self.inner.ended(result);
    }

    async fn cleanup(self: Box<Self>, ctx: &RunContext) -> Result<()> {
        let o = self.observer;
        o.cleanups.fetch_add(1, Ordering::SeqCst);
        if o.running.load(Ordering::SeqCst) {
            o.cleanup_while_running.store(true, Ordering::SeqCst);
        }
        self.inner.cleanup(ctx).await
    }
}

/// One observed run of a case.
#[derive(Debug)]
pub struct Observed {
    /// The result root the case ran into.
    pub root: PathBuf,
    /// What [`run_executor`] returned.
    pub result: Result<ResultRoot>,
    /// Every event, in the order sent; empty when the channel did not
    /// close within 5 seconds of the return (see `events_closed`).
    pub events: Vec<Event>,
    /// The wrapper the executor ran in, with its call counts.
    pub executor: Arc<ObservedExecutor>,
    /// When the run was cancelled, if it was.
    pub cancelled_at: Option<Instant>,
    /// When `run_executor` returned.
    pub returned_at: Instant,
    /// Whether the event channel closed soon after `run_executor` returned
    /// (nothing of the run still holds the event sink).
    pub events_closed: bool,
}

impl Observed {
    /// Panics with the events when the run does not satisfy the checks
    /// every run must: cleanup exactly once, after `run`, events in order.
    fn check_common(&self, case: &str) {
        let name = self.executor.name().to_string();
        assert_eq!(
            self.executor.runs(),
            1,
            "executor {name}, case {case}: run was called {} times",
            self.executor.runs()
        );
        assert_eq!(
            self.executor.cleanups(),
            1,
            "executor {name}, case {case}: cleanup must run exactly once per run, whatever run returned; it ran {} times",
            self.executor.cleanups()
        );
        assert!(
            !self.executor.cleaned_up_while_running(),
            "executor {name}, case {case}: cleanup ran while run had not returned"
        );
        if let Err(message) = check_event_order(&self.events) {
            panic!(
                "executor {name}, case {case}: events out of order: {message}\nevents: {:#?}",
                self.events
            );
        }
        assert!(
            self.events_closed,
            "executor {name}, case {case}: something of the run still holds its event sink after run_executor returned (a task or process left running?)"
        );
    }

    fn describe(&self) -> String {
        match &self.result {
            Ok(root) => format!("a valid result root at {}", root.path().display()),
            Err(e) => format!("error ({:?}): {e}", e.failure()),
        }
    }
}

/// When to cancel a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelAt {
    Never,
    FirstLog,
}

/// Runs `case` into `root` through [`run_executor`], observing it.
async fn observe(case: &Case, root: &Path, at: CancelAt) -> Observed {
    let executor = Arc::new(ObservedExecutor::new(case.executor.clone()));
    let cancel = CancellationToken::new();
    let cancelled_at = Arc::new(Mutex::new(None));
    let trigger = |cancel: &CancellationToken, when: &Mutex<Option<Instant>>| {
        let mut when = when.lock().expect("not poisoned");
        if when.is_none() {
            *when = Some(Instant::now());
            cancel.cancel();
        }
    };
    let (sink, mut rx) = EventSink::channel();
    let collector = {
        let (cancel, when) = (cancel.clone(), cancelled_at.clone());
        tokio::spawn(async move {
            let mut events = Vec::new();
            while let Some(event) = rx.recv().await {
                if at == CancelAt::FirstLog && matches!(event, Event::Log { .. }) {
                    trigger(&cancel, &when);
                }
                events.push(event);
            }
            events
        })
    };
    let fallback = (at == CancelAt::FirstLog).then(|| {
        let (cancel, when) = (cancel.clone(), cancelled_at.clone());
        tokio::spawn(async move {
            tokio::time::sleep(CANCEL_FALLBACK).await;
            trigger(&cancel, &when);
        })
    });
    let result = run_executor(executor.clone(), case.request.clone(), root, sink, cancel).await;
    let returned_at = Instant::now();
    if let Some(f) = fallback {
        f.abort();
    }
    let (events, events_closed) =
        match tokio::time::timeout(Duration::from_secs(5), collector).await {
            Ok(joined) => (joined.expect("the event collector does not panic"), true),
            Err(_) => (Vec::new(), false),
        };
    let cancelled_at = *cancelled_at.lock().expect("not poisoned");
    Observed {
        root: root.to_path_buf(),
        result,
        events,
        executor,
        cancelled_at,
        returned_at,
        events_closed,
    }
}

/// Runs the success case: the result must pass the validator with its
/// unfinished marker removed. Returns the validated root.
pub async fn produces_a_valid_root(case: &Case, root: &Path) -> ResultRoot {
    let run = observe(case, root, CancelAt::Never).await;
    let name = case.executor.name();
    let validated = match &run.result {
        Ok(r) => r.clone(),
        Err(e) => panic!(
            "executor {name}: the success case failed: {e}\nevents: {:#?}",
            run.events
        ),
    };
    run.check_common("success");
    assert!(
        !root.join(INCOMPLETE_MARKER).exists(),
        "executor {name}: the unfinished marker is still in {}",
        root.display()
    );
    if let Err(e) = result_root::validate(root) {
        panic!("executor {name}: the result root does not validate on its own: {e}");
    }
    assert!(
        run.events
            .iter()
            .any(|e| matches!(e, Event::StageStarted { .. })),
        "executor {name}: a successful run reported no stage"
    );
    validated
}

/// Checks that `root`'s `promotion.scm` agrees with `request` and names
/// `executor` with its version; that it lists exactly the requested
/// artifacts; and that declared tree signatures match the trees.
///
/// The version check is stricter than [`run_executor`]'s, which leaves
/// `executor-version` to the build site: a suite's build site runs the
/// software of this build (for `guest-self-hosted`, the same `fruix` as
/// the guest helper), so the two must agree there.
pub fn check_agreement(executor: &dyn Executor, request: &BuildRequest, root: &ResultRoot) {
    let name = executor.name();
    let on_disk = root.path().join(crate::promotion::PROMOTION_FILE);
    let m = PromotionMetadata::read(&on_disk)
        .unwrap_or_else(|e| panic!("executor {name}: promotion.scm cannot be read back: {e}"));
    let same = |field: &str, found: String, expected: String| {
        assert_eq!(
            found, expected,
            "executor {name}: promotion.scm field {field} disagrees with the request"
        );
    };
    same("executor", m.executor.clone(), name.to_string());
    same(
        "executor-version",
        m.executor_version.clone(),
        executor.version().to_string(),
    );
    same("run-id", m.run_id.clone(), request.run_id.clone());
    same(
        "freebsd-base",
        format!("{:?}", m.freebsd_base),
        format!("{:?}", request.freebsd_base),
    );
    // The build site may add the tree signature of a checkout it has of
    // its own (a request that names no signature); path and commit agree.
    let recorded = crate::promotion::SourceStore {
        tree_signature: request
            .source
            .tree_signature
            .clone()
            .or(m.source_store.tree_signature.clone()),
        ..request.source.clone()
    };
    same(
        "source-store",
        format!("{:?}", m.source_store),
        format!("{:?}", recorded),
    );
    same(
        "build-policy",
        format!("{:?}", m.build_policy),
        format!("{:?}", request.policy),
    );
    let mut listed: Vec<_> = m.artifacts.iter().map(|a| a.name.clone()).collect();
    let mut wanted = request.artifacts.clone();
    listed.sort();
    wanted.sort();
    assert_eq!(
        listed, wanted,
        "executor {name}: promotion.scm must list exactly the requested artifacts"
    );
    for a in &m.artifacts {
        if let Some(declared) = &a.tree_signature {
            let actual = artifact_signature(root.path(), &a.path).unwrap_or_else(|e| {
                panic!("executor {name}: artifact {} cannot be signed: {e}", a.name)
            });
            assert_eq!(
                declared, &actual,
                "executor {name}: the declared tree signature of {} does not match its tree",
                a.name
            );
        }
    }
}

/// Checks what every failed run must leave: the marker, and a root that
/// never validates.
fn check_unpromotable(run: &Observed, case: &str) {
    let name = run.executor.name();
    if run.root.exists() {
        assert!(
            run.root.join(INCOMPLETE_MARKER).exists(),
            "executor {name}, case {case}: a failed run removed the unfinished marker"
        );
        assert!(
            result_root::validate(&run.root).is_err(),
            "executor {name}, case {case}: a failed run left a root that validates"
        );
    }
}

/// Runs the build-failure case: it must fail as [`Error::Build`] naming the
/// step, with a stage that finished as failed.
pub async fn build_failure_is_a_build_failure(case: &Case, root: &Path) {
    let run = observe(case, root, CancelAt::Never).await;
    let name = case.executor.name();
    match &run.result {
        Err(Error::Build { step, .. }) => assert!(
            !step.is_empty(),
            "executor {name}: a build failure must name its step"
        ),
        _ => panic!(
            "executor {name}: a failing build must be reported as a build failure (Error::Build), got {}\nevents: {:#?}",
            run.describe(),
            run.events
        ),
    }
    assert_eq!(run.result.as_ref().unwrap_err().failure(), Failure::Build);
    assert!(
        run.events
            .iter()
            .any(|e| matches!(e, Event::StageFinished { ok: false, .. })),
        "executor {name}: no stage finished as failed in a failed build"
    );
    run.check_common("build-failure");
    check_unpromotable(&run, "build-failure");
}

/// Runs the system-failure case (an unreachable machine or helper): it must
/// fail with [`Failure::System`].
pub async fn unreachable_is_a_system_failure(case: &Case, root: &Path) {
    let run = observe(case, root, CancelAt::Never).await;
    let name = case.executor.name();
    let failure = run.result.as_ref().err().map(Error::failure);
    assert_eq!(
        failure,
        Some(Failure::System),
        "executor {name}: an unreachable machine must be reported as a system failure, got {}\nevents: {:#?}",
        run.describe(),
        run.events
    );
    run.check_common("system-failure");
    check_unpromotable(&run, "system-failure");
}

/// Runs the cancellation case, cancelling it at its first log line (or
/// [`CANCEL_FALLBACK`] after it started): it must return
/// [`Error::Cancelled`] within [`CANCEL_BOUND`], run cleanup, and leave no
/// process whose command line or environment mentions the result root.
pub async fn cancellation_stops_the_work_and_cleans_up(case: &Case, root: &Path) {
    let run = observe(case, root, CancelAt::FirstLog).await;
    let name = case.executor.name();
    let Some(cancelled_at) = run.cancelled_at else {
        panic!(
            "executor {name}: the cancellation case ended ({}) before it could be cancelled; give it a longer build",
            run.describe()
        );
    };
    assert!(
        matches!(run.result, Err(Error::Cancelled)),
        "executor {name}: a cancelled run must return Error::Cancelled, got {}",
        run.describe()
    );
    let took = run.returned_at.duration_since(cancelled_at);
    assert!(
        took <= CANCEL_BOUND,
        "executor {name}: the run took {took:?} to stop after cancellation (at most {CANCEL_BOUND:?})"
    );
    let left = processes_mentioning(root);
    assert!(
        left.is_empty(),
        "executor {name}: processes of the cancelled run are still alive: {left:#?}"
    );
    run.check_common("cancellation");
    check_unpromotable(&run, "cancellation");
}

/// Checks that events are in order: each stage's start comes before its log
/// lines and progress, which come before its end; stages nest (a stage ends
/// before the stage it started in), and every stage that started ended.
/// Warnings may come at any time.
pub fn check_event_order(events: &[Event]) -> std::result::Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        match event {
            Event::StageStarted { stage } => open.push(stage),
            Event::Log { stage, .. } | Event::Progress { stage, .. } => {
                if open.last() != Some(&stage.as_str()) {
                    return Err(format!(
                        "event {i}: output of stage {stage} while the open stages are {open:?}"
                    ));
                }
            }
            Event::StageFinished { stage, .. } => {
                if open.pop() != Some(stage.as_str()) {
                    return Err(format!(
                        "event {i}: stage {stage} finished but it is not the innermost open stage"
                    ));
                }
            }
            Event::Warning { .. } => {}
        }
    }
    match open.as_slice() {
        [] => Ok(()),
        still => Err(format!("stages {still:?} started but never finished")),
    }
}

mod processes;
pub use processes::processes_mentioning;

#[cfg(test)]
mod tests;
