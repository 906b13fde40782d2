//! The runner that wraps every executor with the same guarantees (see the
//! module docs of [`crate::executor`]).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::events::Activity;
use super::{BuildRequest, EventSink, Executor, Run, RunContext};
use crate::error::{Error, Result};
use crate::escape;
use crate::promotion::{BuildPolicy, PromotionMetadata};
use crate::result_root::{self, ResultRoot};
use tokio_util::sync::CancellationToken;

#[path = "runner_root.rs"]
mod root;
pub(super) use root::prepare_result_root;
use root::{keep_unfinished, remove_marker, remove_untouched};

/// How long a cancelled executor gets to stop by itself before its run is dropped.
pub const CANCEL_GRACE: Duration = Duration::from_secs(15);

/// Time limits of a run (`fruix build --timeout` and `--max-silent-time`, a
/// matrix's `timeout` and `max-silent-time`): past one, the run is stopped
/// as on cancellation and fails as [`Error::Timeout`], a system failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunLimits {
    /// The most the build may take, from its start to its end (its cleanup
    /// not counted).
    pub timeout: Option<Duration>,
    /// The most the build may go without an event: a log line, progress, a
    /// stage starting or ending (a hung `make` says nothing).
    pub max_silent: Option<Duration>,
}

/// Runs `executor` for `request` into `result_root` with the guarantees listed
/// in the module docs, and returns the validated result root.
///
/// `result_root` must not exist, or be an empty directory of this user's
/// (not a symlink to one); anything else there is refused before the
/// executor starts.
pub async fn run_executor(
    executor: Arc<dyn Executor>,
    request: BuildRequest,
    result_root: &Path,
    events: EventSink,
    cancel: CancellationToken,
) -> Result<ResultRoot> {
    run_executor_within(
        executor,
        request,
        result_root,
        events,
        cancel,
        RunLimits::default(),
    )
    .await
}

/// [`run_executor`] under `limits`.
pub async fn run_executor_within(
    executor: Arc<dyn Executor>,
    request: BuildRequest,
    result_root: &Path,
    events: EventSink,
    cancel: CancellationToken,
    limits: RunLimits,
) -> Result<ResultRoot> {
    request.check()?;
    executor.check_request(&request)?;
    let created = prepare_result_root(result_root)?;
    let (events, activity) = events.watched();
    let ctx = RunContext {
        request,
        result_root: result_root.to_path_buf(),
        events,
        // A limit that passes stops the run as the caller's cancel would.
        cancel: cancel.child_token(),
    };
    let result = run_prepared(executor.as_ref(), &ctx, limits, &activity).await;
    if let Err(e) = &result {
        // A request the executor refused before it wrote anything (a
        // work directory beside the root that is not fruix's) leaves no
        // root it made behind.
        let refused = created && matches!(e, Error::InvalidRequest { .. });
        if !(refused && remove_untouched(result_root)) {
            keep_unfinished(e, &ctx, executor.name());
        }
    }
    result
}

/// Runs `executor` in `ctx`, its result root prepared, to its validated
/// result root (see [`run_executor`]).
async fn run_prepared(
    executor: &dyn Executor,
    ctx: &RunContext,
    limits: RunLimits,
    activity: &Activity,
) -> Result<ResultRoot> {
    let (name, result_root) = (executor.name(), ctx.result_root.as_path());
    let mut run = catching(|| executor.start(ctx)).map_err(|caught| panicked(name, caught))?;
    let outcome = build_within(run.as_mut(), ctx, limits, activity, name)
        .await
        .map_err(|e| match e {
            // What the build was doing when it was stopped.
            Error::Timeout {
                what,
                limit,
                detail,
                log: None,
            } => Error::Timeout {
                what,
                limit,
                detail,
                log: Some(activity.log(result_root)),
            },
            e => e,
        });
    if let Err(caught) = catching(|| run.ended(&outcome)) {
        ctx.events.warn(panic_note(name, caught));
    }
    cleanup(run, ctx, name).await;
    outcome?;
    if ctx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let root = result_root::validate_with(result_root, true)?;
    check_agreement(executor, &ctx.request, root.metadata(), result_root)?;
    remove_marker(result_root, name)?;
    crate::fsutil::sync_dir(result_root)?;
    Ok(root)
}

/// Runs the build until it ends, is cancelled, or a limit passes; then (but
/// for its end) gives the executor [`CANCEL_GRACE`] to stop its process tree
/// by itself. A panic of the build (executor `name`'s) is a system failure.
async fn build_within(
    run: &mut (dyn Run + '_),
    ctx: &RunContext,
    limits: RunLimits,
    activity: &Activity,
    name: &str,
) -> Result<()> {
    let mut build = Unwound(run.build(ctx));
    let expired = tokio::select! {
        result = &mut build => return result.unwrap_or_else(|caught| Err(panicked(name, caught))),
        () = ctx.cancel.cancelled() => None,
        expired = expiry(limits, Instant::now(), activity) => {
            ctx.cancel.cancel();
            Some(expired)
        }
    };
    let ended = tokio::time::timeout(CANCEL_GRACE, &mut build).await;
    match (expired, ended) {
        // Whatever the stopped build says, the limit is why it ended.
        (Some(expired), _) => Err(expired),
        (None, Ok(Err(caught))) => Err(panicked(name, caught)),
        (None, Ok(Ok(Err(e)))) if !matches!(e, Error::Cancelled) => Err(e),
        (None, _) => Err(Error::Cancelled),
    }
}

/// Finishes `run` of executor `name` with its cleanup, which is never
/// cancelled: a stage it runs that fails while the run is cancelled
/// failed by itself ([`EventSink::in_cleanup`]). Its failure, or its
/// panic, is a warning.
async fn cleanup(run: Box<dyn Run + '_>, ctx: &RunContext, name: &str) {
    let cleaning = RunContext {
        events: ctx.events.in_cleanup(),
        ..ctx.clone()
    };
    match Unwound(run.cleanup(&cleaning)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => ctx.events.warn(format!(
            "cleanup of executor {name} failed: {}",
            cleanup_failure(&e)
        )),
        Err(caught) => ctx.events.warn(format!(
            "cleanup of executor {name} panicked: {}",
            caught.message()
        )),
    }
}

/// A cleanup's failure, for its warning: a step that failed is a step of
/// the cleanup, not a build step as [`Error::Build`] says.
fn cleanup_failure(e: &Error) -> String {
    match e {
        Error::Build { step, status, log } => format!(
            "step `{}` failed{}{}",
            escape::text(step),
            status
                .as_ref()
                .map(|s| format!(" ({})", escape::text(s)))
                .unwrap_or_default(),
            log.file_note()
        ),
        e => e.to_string(),
    }
}

/// A future of an executor's that ends with its panic ([`Caught`])
/// instead of unwinding through the runner (and fruix).
struct Unwound<F>(F);

impl<F: Future + Unpin> Future for Unwound<F> {
    type Output = std::result::Result<F::Output, Caught>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        // The runner never polls it again after a panic, and what the
        // executor left half-done is its cleanup's to release.
        match catching(|| Pin::new(inner).poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(caught) => Poll::Ready(Err(caught)),
        }
    }
}

thread_local! {
    /// How many catches of an executor's panics ([`catching`]) this thread
    /// is inside.
    static CATCHING: Cell<usize> = const { Cell::new(0) };
    /// Where the panic being caught on this thread happened, as the panic
    /// hook said ([`panic_is_caught`]).
    static CAUGHT_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// For a panic hook (the `fruix` binary's), told of a panic on this thread
/// at `location`: whether it is an executor's panic, which the runner
/// catches and reports itself (a system failure, or a warning, naming the
/// executor, the panic's message and `location`). Then the hook should say
/// nothing; any other panic is a crash, for the hook to report.
pub fn panic_is_caught(location: Option<&std::panic::Location<'_>>) -> bool {
    let caught = CATCHING.with(|depth| depth.get() > 0);
    if caught {
        CAUGHT_AT.with(|at| *at.borrow_mut() = location.map(ToString::to_string));
    }
    caught
}

/// An executor's panic, caught: what it panicked with, and where, when a
/// panic hook said ([`panic_is_caught`]).
struct Caught {
    payload: Box<dyn Any + Send>,
    at: Option<String>,
}

impl Caught {
    /// `MESSAGE (at FILE:LINE:COLUMN)`: what the panic said (`panic!`'s
    /// message), and where when known, escaped.
    fn message(&self) -> String {
        let payload = self.payload.as_ref();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = self
            .at
            .as_ref()
            .map(|at| format!(" (at {at})"))
            .unwrap_or_default();
        escape::text(&format!("{message}{at}")).to_string()
    }
}

/// Runs `f` (an executor's code), catching its panic; a panic hook is told
/// the panic is caught ([`panic_is_caught`]).
fn catching<R>(f: impl FnOnce() -> R) -> std::result::Result<R, Caught> {
    CATCHING.with(|depth| depth.set(depth.get() + 1));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|depth| depth.set(depth.get() - 1));
    result.map_err(|payload| Caught {
        payload,
        at: CAUGHT_AT.with(|at| at.borrow_mut().take()),
    })
}

/// The system failure of executor `name` that panicked.
fn panicked(name: &str, caught: Caught) -> Error {
    Error::system(panic_note(name, caught))
}

/// `executor NAME panicked: MESSAGE (at FILE:LINE:COLUMN)`.
fn panic_note(name: &str, caught: Caught) -> String {
    format!("executor {name} panicked: {}", caught.message())
}

/// The longest limit there is: a hundred years. A longer one (which no
/// clock could reach without overflowing) is no limit.
pub const MAX_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Ends once a limit of `limits` has passed (the build started at
/// `started`), as the error that says which; never without a limit (or
/// with one past [`MAX_LIMIT`]).
async fn expiry(limits: RunLimits, started: Instant, activity: &Activity) -> Error {
    let within = |limit: Duration| limit <= MAX_LIMIT;
    let limits = RunLimits {
        timeout: limits.timeout.filter(|l| within(*l)),
        max_silent: limits.max_silent.filter(|l| within(*l)),
    };
    loop {
        let total = limits.timeout.map(|limit| (started + limit, limit));
        let silent = limits
            .max_silent
            .map(|limit| (activity.last() + limit, limit));
        let Some(next) = total.into_iter().chain(silent).map(|(at, _)| at).min() else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        if let Some((_, limit)) = total.filter(|(at, _)| now >= *at) {
            return timed_out("the build", limit);
        }
        // An event since may have moved the silent deadline: look again.
        if let Some(limit) = limits.max_silent.filter(|l| now >= activity.last() + *l) {
            return timed_out("waiting for output from the build", limit);
        }
    }
}

fn timed_out(what: &str, limit: Duration) -> Error {
    Error::Timeout {
        what: what.to_string(),
        limit,
        detail: "; it was stopped".to_string(),
        log: None,
    }
}

/// Checks that `promotion.scm` agrees with the request and the executor:
/// the executor's name, the run id, the FreeBSD base, the build policy (its
/// `jobs` only when the caller gave them: else the machine that built chose
/// them, [`BuildRequest::jobs_per_machine`]), the source path and every
/// requested artifact.
///
/// `executor-version` is not compared with [`Executor::version`]: it names
/// what built at the build site, which for a guest running its own fruix
/// may be another version than this host's (see the [`Executor`] contract).
pub fn check_agreement(
    executor: &dyn Executor,
    request: &BuildRequest,
    m: &PromotionMetadata,
    root: &Path,
) -> Result<()> {
    let path = root.join(crate::promotion::PROMOTION_FILE);
    let mismatch = |field: &str, found: String, expected: String| Error::InvalidMetadata {
        path: path.clone(),
        field: field.to_string(),
        line: None,
        message: format!(
            "says {found}, but the request was {expected}; the executor wrote wrong metadata"
        ),
    };
    if m.executor != executor.name() {
        return Err(mismatch(
            "executor",
            m.executor.clone(),
            executor.name().to_string(),
        ));
    }
    if m.run_id != request.run_id {
        return Err(mismatch("run-id", m.run_id.clone(), request.run_id.clone()));
    }
    if m.freebsd_base != request.freebsd_base {
        return Err(mismatch(
            "freebsd-base",
            format!("{:?}", m.freebsd_base),
            format!("{:?}", request.freebsd_base),
        ));
    }
    let expected_policy = match request.jobs_per_machine {
        true => BuildPolicy {
            jobs: m.build_policy.jobs,
            ..request.policy.clone()
        },
        false => request.policy.clone(),
    };
    if m.build_policy != expected_policy {
        return Err(mismatch(
            "build-policy",
            format!("{:?}", m.build_policy),
            format!("{:?}", request.policy),
        ));
    }
    if m.source_store.path != request.source.path {
        return Err(mismatch(
            "source-store.path",
            m.source_store.path.clone(),
            request.source.path.clone(),
        ));
    }
    if let Some(missing) = request.artifacts.iter().find(|a| m.artifact(a).is_none()) {
        return Err(Error::InvalidMetadata {
            path,
            field: "artifacts".into(),
            line: None,
            message: format!("requested artifact {missing} is not in the result root"),
        });
    }
    Ok(())
}
