//! The matrix loop: starts what the dispatcher allows, waits for whatever
//! ends first, retries, promotes, cancels.
//!
//! The loop knows nothing of executors: it drives a [`CellRunner`] (the real
//! one builds with executors and promotes into the store; tests use fakes),
//! and the scheduling decisions are [`crate::schedule`]'s.
//!
//! - Every attempt gets a child of one cancellation token. Fail-fast
//!   cancels it (running cells stop, waiting ones are cancelled); Ctrl-C
//!   cancels its parent, with the same effect. Either way the loop waits for
//!   every running cell to finish its cleanup before it returns, so that
//!   the reports say what finished. A cell whose system failure was to be
//!   retried ends cancelled, with its attempts and a `retry cancelled: ...`
//!   error, whether or not its retry had been queued yet.
//! - A [`TimeLimit`] on the whole run (`matrix run --time-limit`) stops it
//!   the same way once it passes; the cells it cancels say so.
//! - An attempt's slot is held from its start to its end; promotion of a
//!   built cell runs after the slot is freed. An attempt on a machine
//!   first takes a slot of it shared with the other fruix processes of
//!   this host ([`CellRunner::take_host_slot`]), waiting while they hold
//!   every one: its time starts once it has one, and one stopped while it
//!   waits never started. A machine whose guest did not
//!   come up ([`CellError::machine_unavailable`]) is set aside; after any
//!   other system failure on a machine the loop asks
//!   [`CellRunner::reachable`], and a machine that no longer accepts
//!   connections is set aside. The dispatcher also sets aside a machine on
//!   which [`crate::schedule::SYSTEM_FAILURES_IN_A_ROW`] attempts in a row
//!   failed with a system failure. The reason a machine is set aside ends
//!   with the error of the attempt that showed it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fruix_core::{escape, Failure};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::host_slots::HostSlot;
use crate::schedule::{AttemptOutcome, Dispatcher, Placement, Start, Step, Unusable, Verdict};

/// A boxed future, as the runner's methods return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Why an attempt or a promotion failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellError {
    /// The failure's class: it makes the cell's status, and only
    /// [`Failure::System`] is retried.
    pub failure: Failure,
    /// What went wrong, for people (usually the error's text): the attempt's
    /// `error`, and the cell's when it ends the cell.
    pub message: String,
    /// The attempt's machine could not be brought up (a guest that did not
    /// come up): the run sets it aside.
    pub machine_unavailable: bool,
}

/// The message, then the kind of failure: `... (system failure)`.
impl std::fmt::Display for CellError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.failure {
            Failure::Build => "build failure",
            Failure::System => "system failure",
            // A result root that does not validate, or the caller's
            // configuration (a host key, a private key) refused.
            Failure::Input => "invalid input",
            // A cancellation has no cause beyond itself: said once.
            Failure::Cancelled => return f.write_str("cancelled"),
        };
        write!(f, "{} ({kind})", self.message)
    }
}

/// A cell's final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellStatus {
    /// Built, and promoted into the store.
    Passed,
    /// The build failed, or gave a result that does not validate or promote:
    /// retrying will not help.
    BuildFailure,
    /// Machines, connections, disks or helpers failed, on every attempt.
    SystemFailure,
    /// Stopped by fail-fast or Ctrl-C, or never started.
    Cancelled,
    /// `fruix matrix collect` found no report of the cell (its job never
    /// ran, or its report was not passed on).
    Missing,
}

impl CellStatus {
    fn of(failure: Failure) -> CellStatus {
        match failure {
            Failure::System => CellStatus::SystemFailure,
            Failure::Cancelled => CellStatus::Cancelled,
            Failure::Build | Failure::Input => CellStatus::BuildFailure,
        }
    }

    /// The status as reports write it (`build-failure`).
    pub fn as_str(self) -> &'static str {
        match self {
            CellStatus::Passed => "passed",
            CellStatus::BuildFailure => "build-failure",
            CellStatus::SystemFailure => "system-failure",
            CellStatus::Cancelled => "cancelled",
            CellStatus::Missing => "missing",
        }
    }
}

/// One promoted artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotedArtifact {
    /// The artifact's object in the store, an absolute path.
    pub store_path: PathBuf,
    /// The artifact tree's signature (`sha256:` and 64 hex digits), as
    /// promotion computed it: what the agreement check compares.
    pub tree_signature: String,
}

/// What promotion of a cell made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Promoted {
    /// The result bundle's absolute path in the store.
    pub result_store: PathBuf,
    /// Each promoted artifact, by name (`world`, `kernel`, ...).
    pub artifacts: std::collections::BTreeMap<String, PromotedArtifact>,
    /// The key (its name) of the machine that signed every object where it
    /// was built, when the store recorded every one of those signatures.
    pub signed_by: Option<String>,
    /// The objects (absolute store paths) that the machine signed where it
    /// built them, but whose signature the store did not record: it already
    /// held them with other references than those signed. `signed_by` is
    /// `None` then. Empty when the machine does not sign.
    pub signatures_not_recorded: Vec<PathBuf>,
}

/// One attempt of a cell.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The attempt's number, 1 for the first.
    pub attempt: u32,
    /// The machine's name, or `local`.
    pub machine: String,
    /// When the attempt started, on the monotonic clock (a report gives it
    /// in wall time, [`crate::report::RunClock`]).
    pub started: Instant,
    /// When its build ended (promotion is not included).
    pub finished: Instant,
    /// How its build ended; [`CellStatus::Passed`] says nothing of promotion.
    pub status: CellStatus,
    /// The error's message; `None` when the build passed.
    pub error: Option<String>,
}

/// Everything the loop learned about a cell.
#[derive(Debug, Clone, PartialEq)]
pub struct CellRecord {
    /// The cell's status: [`CellStatus::Cancelled`] until the cell ends, which
    /// a cell that never started keeps.
    pub status: CellStatus,
    /// Its attempts, in order; empty when the cell never started.
    pub attempts: Vec<AttemptRecord>,
    /// What promotion made, once the cell passed.
    pub promoted: Option<Promoted>,
    /// Why the cell failed, when it did.
    pub error: Option<String>,
    /// When the cell ended (promotion included), on the monotonic clock.
    pub finished: Option<Instant>,
}

impl CellRecord {
    /// The status, and the error when the cell failed: `passed`,
    /// `build-failure: build step ...`.
    pub fn summary(&self) -> String {
        match &self.error {
            None => self.status.as_str().to_string(),
            Some(e) => format!("{}: {e}", self.status.as_str()),
        }
    }
}

impl Default for CellRecord {
    fn default() -> Self {
        CellRecord {
            status: CellStatus::Cancelled,
            attempts: Vec::new(),
            promoted: None,
            error: Some("never started".into()),
            finished: None,
        }
    }
}

/// One attempt to run, with its cancellation token.
#[derive(Debug, Clone)]
pub struct Job {
    /// The cell, the attempt's number, and where it runs (its slot is taken).
    pub start: Start,
    /// Cancelled by fail-fast or Ctrl-C: the attempt should stop, clean up and
    /// return an error of [`Failure::Cancelled`].
    pub cancel: CancellationToken,
}

/// What runs a cell's attempts and promotes its result.
pub trait CellRunner: Send + Sync + 'static {
    /// What a successful build leaves for promotion (a result root).
    type Built: Send + 'static;
    /// Takes what the attempt `job` needs beyond its slot in the run's
    /// pool, before its build and its time start: a slot of its machine
    /// shared with the other fruix processes of this host
    /// ([`crate::host_slots`]), waiting while they hold every one. The
    /// slot is held until the build ends. `Ok(None)`: none is needed (the
    /// default). An error of [`Failure::Cancelled`] says the run was
    /// stopped while it waited: the attempt never started.
    fn take_host_slot(&self, _job: &Job) -> BoxFuture<Result<Option<HostSlot>, CellError>> {
        Box::pin(async { Ok(None) })
    }
    /// Runs one attempt.
    fn build(&self, job: Job) -> BoxFuture<Result<Self::Built, CellError>>;
    /// Promotes what `build` made for `cell`.
    fn promote(&self, cell: usize, built: Self::Built) -> BoxFuture<Result<Promoted, CellError>>;
    /// Whether `machine` still accepts connections.
    fn reachable(&self, machine: &str) -> BoxFuture<bool>;
    /// Called when a cell is finished, with its record (for the live view).
    fn cell_done(&self, _cell: usize, _record: &CellRecord) {}
    /// Called once when the run's [`TimeLimit`] passes, before its running
    /// cells are cancelled.
    fn time_limit_reached(&self, _limit: Duration) {}
    /// Called once when cell `id` failed for good and fail-fast stops the
    /// run, before its other running cells are cancelled.
    fn fail_fast(&self, _id: &str) {}
}

/// A limit on a whole run: once it passes, the run stops as fail-fast
/// stops it, and the cells it cancels say why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimit {
    /// How long the run may take.
    pub limit: Duration,
    /// When it passes.
    pub deadline: tokio::time::Instant,
}

impl TimeLimit {
    /// A limit of `limit`, counted from now.
    pub fn from_now(limit: Duration) -> TimeLimit {
        // A limit past MAX_LIMIT cannot be added to a clock: it is one
        // that never passes.
        let limit = limit.min(fruix_core::executor::MAX_LIMIT);
        TimeLimit {
            limit,
            deadline: tokio::time::Instant::now() + limit,
        }
    }

    /// Why a cell it cancelled was cancelled: `the run's time limit of 2h
    /// was reached`.
    pub fn reason(&self) -> String {
        format!(
            "the run's time limit of {} was reached",
            humantime::format_duration(self.limit)
        )
    }
}

enum Done<B> {
    Built {
        start: Start,
        started: Instant,
        result: Result<B, CellError>,
        unusable: Option<Unusable>,
    },
    Promoted {
        cell: usize,
        result: Result<Promoted, CellError>,
    },
    /// Cancelled while it waited for a host slot: it never started.
    NotStarted { start: Start },
}

/// Ends the cells `waiting` that a stopped matrix will not start again: a
/// cell whose retry was queued ends with its retry cancelled; a cell that
/// never started keeps the record of one.
fn end_retries<R: CellRunner>(runner: &R, records: &mut [CellRecord], waiting: Vec<usize>) {
    for cell in waiting {
        let record = &mut records[cell];
        if !record.attempts.is_empty() {
            retry_cancelled(record);
            runner.cell_done(cell, record);
        }
    }
}

/// Ends a cell whose last attempt failed as one that is retried, but whose
/// retry fail-fast or Ctrl-C cancelled: it is cancelled, and its error says
/// what the retry was for. Like a cell cancelled while its retry ran, it is
/// no system failure: the run stopped it before it could try again.
fn retry_cancelled(record: &mut CellRecord) {
    record.status = CellStatus::Cancelled;
    record.error = Some(match record.attempts.last() {
        Some(a) => format!(
            "retry cancelled: attempt {} on {} failed with a system failure: {}",
            a.attempt,
            a.machine,
            a.error.as_deref().unwrap_or_default()
        ),
        None => "retry cancelled".into(),
    });
    record.finished = Some(Instant::now());
}

/// What a matrix run gives.
#[derive(Debug)]
pub struct RunOutcome {
    /// One record per cell, in the dispatcher's order.
    pub records: Vec<CellRecord>,
    /// The machines set aside, with why.
    pub set_aside: Vec<(String, String)>,
    /// The run's [`TimeLimit`] passed before its cells ended.
    pub time_limit_reached: bool,
}

/// Runs every cell of `dispatcher` through `runner`. Cancelling `cancel`
/// (Ctrl-C), or `time_limit` passing, stops the matrix as fail-fast does;
/// the loop still waits for running cells to end.
pub async fn run_cells<R: CellRunner>(
    runner: Arc<R>,
    mut dispatcher: Dispatcher,
    cells: usize,
    cancel: CancellationToken,
    time_limit: Option<TimeLimit>,
) -> RunOutcome {
    let attempts_token = cancel.child_token();
    let mut records = vec![CellRecord::default(); cells];
    let mut tasks: JoinSet<Done<R::Built>> = JoinSet::new();
    // Ctrl-C, the time limit or fail-fast stopped the run; why the cells
    // it cancelled were cancelled (Ctrl-C's need no reason), and whether
    // the time limit stopped it.
    let mut stopped_seen = false;
    let mut stop_reason: Option<String> = None;
    let mut time_limit_reached = false;
    let deadline = async {
        match time_limit {
            Some(t) => tokio::time::sleep_until(t.deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        if !stopped_seen && !cancel.is_cancelled() {
            if let Some(t) = time_limit.filter(|t| tokio::time::Instant::now() >= t.deadline) {
                runner.time_limit_reached(t.limit);
                stop_reason = Some(t.reason());
                time_limit_reached = true;
                attempts_token.cancel();
            }
        }
        if (cancel.is_cancelled() || stop_reason.is_some()) && !stopped_seen {
            stopped_seen = true;
            let waiting = dispatcher.stop();
            end_retries(&*runner, &mut records, waiting);
        }
        for step in dispatcher.dispatch() {
            match step {
                Step::Start(start) => {
                    let job = Job {
                        start: start.clone(),
                        cancel: attempts_token.child_token(),
                    };
                    let runner = runner.clone();
                    tasks.spawn(async move {
                        let slot = match runner.take_host_slot(&job).await {
                            Err(e) if e.failure == Failure::Cancelled => {
                                return Done::NotStarted { start };
                            }
                            slot => slot,
                        };
                        let started = Instant::now();
                        let result = match slot {
                            Ok(slot) => {
                                let result = runner.build(job).await;
                                drop(slot);
                                result
                            }
                            Err(e) => Err(e),
                        };
                        let unusable = match (&result, &start.placement) {
                            (Err(e), Placement::Machine(_)) if e.machine_unavailable => {
                                Some(Unusable::DidNotComeUp)
                            }
                            (Err(e), Placement::Machine(m)) if e.failure == Failure::System => {
                                (!runner.reachable(m).await).then_some(Unusable::Unreachable)
                            }
                            _ => None,
                        };
                        Done::Built {
                            start,
                            started,
                            result,
                            unusable,
                        }
                    });
                }
                Step::Fail { cell, reason } => {
                    let record = &mut records[cell];
                    record.status = CellStatus::SystemFailure;
                    record.error = Some(format!("cannot run: {reason}"));
                    record.finished = Some(Instant::now());
                    runner.cell_done(cell, record);
                }
            }
        }
        if dispatcher.stopped() {
            // Fail-fast stopped the run: a time limit passing while its
            // cells end stops nothing more.
            let waiting = dispatcher.stop();
            if let Some(id) = dispatcher.stopped_by().filter(|_| !stopped_seen) {
                // Said only when it cancels something: not for the last
                // cell, nor for `run-cell`'s only one.
                if !tasks.is_empty() || !waiting.is_empty() {
                    runner.fail_fast(id);
                }
                stop_reason = Some(format!("fail-fast: cell {} did not pass", escape::text(id)));
            }
            stopped_seen = true;
            attempts_token.cancel();
            end_retries(&*runner, &mut records, waiting);
        }
        if tasks.is_empty() && dispatcher.is_drained() {
            break;
        }
        let done = tokio::select! {
            joined = tasks.join_next(), if !tasks.is_empty() => match joined {
                Some(Ok(done)) => done,
                Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
                None => continue,
            },
            () = cancel.cancelled(), if !stopped_seen => continue,
            () = &mut deadline, if !stopped_seen => continue,
        };
        match done {
            Done::Built {
                start,
                started,
                result,
                unusable,
            } => {
                let outcome = match &result {
                    Ok(_) => AttemptOutcome::Passed,
                    Err(e) => AttemptOutcome::Failed {
                        failure: e.failure,
                        unusable,
                    },
                };
                let error = result.as_ref().err().map(|e| e.message.as_str());
                let verdict = dispatcher.finished_with_error(&start, outcome, error);
                let record = &mut records[start.cell];
                record.attempts.push(AttemptRecord {
                    attempt: start.attempt,
                    machine: start.placement.name().to_string(),
                    started,
                    finished: Instant::now(),
                    status: match &result {
                        Ok(_) => CellStatus::Passed,
                        Err(e) => CellStatus::of(e.failure),
                    },
                    error: result.as_ref().err().map(|e| e.message.clone()),
                });
                match (result, verdict) {
                    (Ok(built), _) => {
                        let runner = runner.clone();
                        let cell = start.cell;
                        tasks.spawn(async move {
                            let result = runner.promote(cell, built).await;
                            Done::Promoted { cell, result }
                        });
                    }
                    (Err(_), Verdict::Retry) => {}
                    (Err(_), Verdict::RetryCancelled) => {
                        retry_cancelled(record);
                        runner.cell_done(start.cell, record);
                    }
                    (Err(e), Verdict::Done) => {
                        record.status = CellStatus::of(e.failure);
                        // A cancelled cell's status says all there is,
                        // unless the time limit or fail-fast cancelled it.
                        record.error = match e.failure {
                            Failure::Cancelled => stop_reason.clone(),
                            _ => Some(e.message),
                        };
                        record.finished = Some(Instant::now());
                        runner.cell_done(start.cell, record);
                    }
                }
            }
            Done::NotStarted { start } => {
                let cancelled = AttemptOutcome::Failed {
                    failure: Failure::Cancelled,
                    unusable: None,
                };
                dispatcher.finished(&start, cancelled);
                end_retries(&*runner, &mut records, vec![start.cell]);
            }
            Done::Promoted { cell, result } => {
                let record = &mut records[cell];
                match result {
                    Ok(promoted) => {
                        record.status = CellStatus::Passed;
                        record.error = None;
                        record.promoted = Some(promoted);
                    }
                    Err(e) => {
                        record.status = CellStatus::of(e.failure);
                        record.error = Some(format!("promotion failed: {}", e.message));
                    }
                }
                record.finished = Some(Instant::now());
                runner.cell_done(cell, record);
            }
        }
    }
    if let Some(reason) = &stop_reason {
        for r in records.iter_mut().filter(|r| r.attempts.is_empty()) {
            if r.status == CellStatus::Cancelled {
                r.error = Some(format!("never started: {reason}"));
            }
        }
    }
    RunOutcome {
        records,
        set_aside: dispatcher.pool().set_aside_machines(),
        time_limit_reached,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cancellation_is_said_once() {
        let cancelled = error(Failure::Cancelled, "cancelled");
        assert_eq!(cancelled.to_string(), "cancelled");
        let lost = error(Failure::System, "connection lost");
        assert_eq!(lost.to_string(), "connection lost (system failure)");
        // Regression: a host key refused (the configuration's) was said
        // to be an "invalid result".
        let refused = error(Failure::Input, "host key refused");
        assert_eq!(refused.to_string(), "host key refused (invalid input)");
    }

    use super::*;
    use crate::schedule::fixtures::{machines, named};
    use crate::schedule::{Need, Pool};
    use tokio::sync::watch;

    /// A failure of kind `failure` saying `message`, which does not say
    /// its machine is unavailable.
    fn error(failure: Failure, message: &str) -> CellError {
        CellError {
            failure,
            message: message.into(),
            machine_unavailable: false,
        }
    }

    /// What the fake builds are doing.
    #[derive(Debug, Clone, Copy, Default)]
    struct Counts {
        running: u32,
        /// The most builds ever running at once.
        peak: u32,
        /// Builds waiting for cancellation.
        hanging: u32,
    }

    /// A fake pool: `down` machines fail every attempt with a system failure
    /// and refuse connections; `unbootable` machines accept connections but
    /// their guests never come up; cells in `failing` fail their build; with
    /// `hang`, every cell but the first waits for cancellation. Nothing
    /// sleeps: a build ends at its first await, or when cancelled.
    struct Fake {
        down: Vec<String>,
        unbootable: Vec<String>,
        failing: Vec<usize>,
        hang: bool,
        counts: watch::Sender<Counts>,
        /// The limits `time_limit_reached` was called with.
        time_limits: std::sync::Mutex<Vec<Duration>>,
        /// The cells `fail_fast` was called with.
        fail_fast_by: std::sync::Mutex<Vec<String>>,
        /// How long a hanging build takes to clean up once cancelled (in
        /// paused time: no test waits for it).
        cleanup: Duration,
    }

    impl CellRunner for Fake {
        type Built = ();
        fn build(&self, job: Job) -> BoxFuture<Result<(), CellError>> {
            let machine = job.start.placement.name().to_string();
            let down = self.down.contains(&machine);
            let unbootable = self.unbootable.contains(&machine);
            let fails = self.failing.contains(&job.start.cell);
            let hang = self.hang && job.start.cell > 0;
            self.counts.send_modify(|c| {
                c.running += 1;
                c.peak = c.peak.max(c.running);
                c.hanging += u32::from(hang);
            });
            let counts = self.counts.clone();
            let cleanup = self.cleanup;
            Box::pin(async move {
                let result = if hang {
                    job.cancel.cancelled().await;
                    tokio::time::sleep(cleanup).await;
                    Err(error(Failure::Cancelled, "cancelled"))
                } else {
                    // Let the other builds start before this one ends.
                    tokio::task::yield_now().await;
                    match (down || unbootable, fails) {
                        (true, _) => Err(CellError {
                            failure: Failure::System,
                            message: "connection refused".into(),
                            machine_unavailable: unbootable,
                        }),
                        (_, true) => Err(error(Failure::Build, "build step `buildworld` failed")),
                        _ => Ok(()),
                    }
                };
                counts.send_modify(|c| {
                    c.running -= 1;
                    c.hanging -= u32::from(hang);
                });
                result
            })
        }
        fn promote(&self, _cell: usize, _built: ()) -> BoxFuture<Result<Promoted, CellError>> {
            Box::pin(async { Ok(Promoted::default()) })
        }
        fn reachable(&self, machine: &str) -> BoxFuture<bool> {
            let up = !self.down.contains(&machine.to_string());
            Box::pin(async move { up })
        }
        fn time_limit_reached(&self, limit: Duration) {
            self.time_limits.lock().unwrap().push(limit);
        }
        fn fail_fast(&self, id: &str) {
            self.fail_fast_by.lock().unwrap().push(id.into());
        }
    }

    /// Cells on machines a (2 slots, faster) and b (2 slots).
    fn dispatcher(cells: usize, max_parallel: Option<u32>, fail_fast: bool) -> Dispatcher {
        let machines = machines(
            r#"(fruix-machines
  (machine (name "a") (host "h1") (user "u") (parallel-builds 2) (speed 2.0))
  (machine (name "b") (host "h2") (user "u") (parallel-builds 2)))"#,
        );
        let need = Need {
            remote: true,
            boots_vms: false,
            target_arch: "amd64".into(),
            pinned: None,
        };
        Dispatcher::new(
            Pool::new(&machines, 1, max_parallel),
            named(vec![need; cells]),
            1,
            fail_fast,
        )
    }

    fn fake(down: &[&str], failing: &[usize], hang: bool) -> Arc<Fake> {
        Arc::new(Fake {
            down: down.iter().map(|s| s.to_string()).collect(),
            unbootable: Vec::new(),
            failing: failing.to_vec(),
            hang,
            counts: watch::Sender::new(Counts::default()),
            time_limits: Default::default(),
            fail_fast_by: Default::default(),
            cleanup: Duration::ZERO,
        })
    }

    #[tokio::test]
    async fn cells_of_a_down_machine_are_retried_on_the_other_one() {
        cells_of_an_unusable_machine_are_retried_on_the_other_one(
            fake(&["a"], &[], false),
            "unreachable after attempt 1 of cell c",
        )
        .await;
    }

    #[tokio::test]
    async fn a_machine_whose_guest_does_not_come_up_is_set_aside_though_reachable() {
        let mut runner = fake(&[], &[], false);
        Arc::get_mut(&mut runner).unwrap().unbootable = vec!["a".into()];
        cells_of_an_unusable_machine_are_retried_on_the_other_one(
            runner,
            "its guest did not come up for attempt 1 of cell c",
        )
        .await;
    }

    /// Regression: with every machine unreachable, a cell none could take
    /// any more said only `cannot run: every machine that could build it
    /// was set aside` and why (`unreachable after attempt 1 of cell c0`),
    /// but not what the attempts that showed it said; nor did the reasons
    /// in the report.
    #[tokio::test]
    async fn a_cell_no_machine_can_take_says_what_each_machine_s_attempt_said() {
        let RunOutcome {
            records, set_aside, ..
        } = run_cells(
            fake(&["a", "b"], &[], false),
            dispatcher(2, Some(1), false),
            2,
            CancellationToken::new(),
            None,
        )
        .await;
        let tried: Vec<&str> = records[0]
            .attempts
            .iter()
            .map(|a| a.machine.as_str())
            .collect();
        assert_eq!(tried, ["a", "b"], "{records:?}");
        assert_eq!(
            set_aside,
            [
                (
                    "a".to_string(),
                    "unreachable after attempt 1 of cell c0: connection refused".to_string()
                ),
                (
                    "b".to_string(),
                    "unreachable after attempt 2 of cell c0: connection refused".to_string()
                ),
            ]
        );
        assert_eq!(
            records[1].summary(),
            "system-failure: cannot run: every machine that could build it was set aside: a (unreachable after attempt 1 of cell c0: connection refused); b (unreachable after attempt 2 of cell c0: connection refused)"
        );
    }

    /// Six cells, three at once, over a (faster, unusable as `runner` says)
    /// and b: a is set aside with `reason` after its first failures, and
    /// every cell passes on b.
    async fn cells_of_an_unusable_machine_are_retried_on_the_other_one(
        runner: Arc<Fake>,
        reason: &str,
    ) {
        let RunOutcome {
            records, set_aside, ..
        } = run_cells(
            runner.clone(),
            dispatcher(6, Some(3), false),
            6,
            CancellationToken::new(),
            None,
        )
        .await;
        assert_eq!(set_aside.len(), 1, "{set_aside:?}");
        assert_eq!(set_aside[0].0, "a");
        assert!(set_aside[0].1.starts_with(reason), "{set_aside:?}");
        assert!(
            records.iter().all(|r| r.status == CellStatus::Passed),
            "{records:?}"
        );
        let attempts: Vec<Vec<&str>> = records
            .iter()
            .map(|r| r.attempts.iter().map(|a| a.machine.as_str()).collect())
            .collect();
        let on_a = attempts.iter().flatten().filter(|m| **m == "a").count();
        assert!(
            (1..=2).contains(&on_a),
            "a is set aside after its first failures: {attempts:?}"
        );
        let retried = attempts.iter().filter(|a| **a == ["a", "b"]).count();
        assert_eq!(
            retried, on_a,
            "every cell that failed on a passed on b: {attempts:?}"
        );
        assert!(runner.counts.borrow().peak <= 3, "max-parallel 3");
    }

    /// Machines a (1 slot, faster) and b (1 slot). Cell 0 fails with a
    /// system failure on a (which stays reachable) and its retry waits for
    /// b, where cell 1 waits for cancellation; cell 2, pinned to a, starts
    /// only then. With `ctrl_c`, cell 2 cancels the run (as Ctrl-C does)
    /// and waits for cancellation; otherwise its build fails, and fail-fast
    /// stops the matrix. Nothing sleeps.
    struct RetryWaits {
        ctrl_c: Option<CancellationToken>,
        done: std::sync::Mutex<Vec<(usize, CellRecord)>>,
    }

    impl CellRunner for RetryWaits {
        type Built = ();
        fn build(&self, job: Job) -> BoxFuture<Result<(), CellError>> {
            let ctrl_c = self.ctrl_c.clone();
            Box::pin(async move {
                match (job.start.cell, ctrl_c) {
                    (0, _) => Err(error(Failure::System, "connection refused")),
                    (2, None) => Err(error(Failure::Build, "build step `buildworld` failed")),
                    (cell, ctrl_c) => {
                        if let (2, Some(ctrl_c)) = (cell, ctrl_c) {
                            ctrl_c.cancel();
                        }
                        job.cancel.cancelled().await;
                        Err(error(Failure::Cancelled, "cancelled"))
                    }
                }
            })
        }
        fn promote(&self, _cell: usize, _built: ()) -> BoxFuture<Result<Promoted, CellError>> {
            Box::pin(async { Ok(Promoted::default()) })
        }
        fn reachable(&self, _machine: &str) -> BoxFuture<bool> {
            Box::pin(async { true })
        }
        fn cell_done(&self, cell: usize, record: &CellRecord) {
            self.done.lock().unwrap().push((cell, record.clone()));
        }
    }

    /// Regression: a cell whose retry was waiting when fail-fast or Ctrl-C
    /// stopped the matrix kept the record of a cell that never started
    /// (`cancelled: never started`, no end, its attempt dropped from the
    /// live view's knowledge).
    #[tokio::test]
    async fn a_cell_stopped_before_its_retry_keeps_its_attempt_and_ends_cancelled() {
        for ctrl_c in [false, true] {
            let machines = machines(
                r#"(fruix-machines
  (machine (name "a") (host "h1") (user "u") (speed 2.0))
  (machine (name "b") (host "h2") (user "u")))"#,
            );
            let need = |pinned: Option<&str>| Need {
                remote: true,
                boots_vms: false,
                target_arch: "amd64".into(),
                pinned: pinned.map(str::to_string),
            };
            let dispatcher = Dispatcher::new(
                Pool::new(&machines, 1, None),
                named(vec![need(None), need(Some("b")), need(Some("a"))]),
                1,
                !ctrl_c,
            );
            let cancel = CancellationToken::new();
            let runner = Arc::new(RetryWaits {
                ctrl_c: ctrl_c.then(|| cancel.clone()),
                done: Default::default(),
            });
            let clock = crate::report::RunClock::now();
            let RunOutcome {
                records, set_aside, ..
            } = run_cells(runner.clone(), dispatcher, 3, cancel, None).await;
            assert!(set_aside.is_empty(), "a is reachable: {set_aside:?}");
            let retried = &records[0];
            assert_eq!(
                retried.status,
                CellStatus::Cancelled,
                "{ctrl_c}: {retried:?}"
            );
            let machines: Vec<(&str, CellStatus)> = retried
                .attempts
                .iter()
                .map(|a| (a.machine.as_str(), a.status))
                .collect();
            assert_eq!(machines, [("a", CellStatus::SystemFailure)], "{retried:?}");
            let error = retried.error.as_deref().unwrap_or_default();
            assert!(
                error.contains("connection refused"),
                "{ctrl_c}: the error says what the retry was for: {retried:?}"
            );
            assert!(
                retried
                    .finished
                    .is_some_and(|f| f >= retried.attempts[0].finished),
                "{retried:?}"
            );
            let report = &crate::report::cell_reports(
                &[crate::expand::Cell {
                    id: "c0".into(),
                    executor: "remote".into(),
                    kernconf: "GENERIC".into(),
                    target_arch: "amd64".into(),
                    make_flag: None,
                    machine: None,
                }],
                &records[..1],
                &clock,
                |_| "c0.log".into(),
            )[0];
            assert!(
                report
                    .started_at
                    .is_some_and(|s| s >= crate::report::unix(clock.wall))
                    && report.finished_at >= report.started_at,
                "{report:?}"
            );
            let done = runner.done.lock().unwrap();
            assert_eq!(
                done.iter().filter(|(cell, _)| *cell == 0).count(),
                1,
                "{ctrl_c}: the live view hears that cell 0 finished, once"
            );
            assert!(done.contains(&(0, retried.clone())), "{done:?}");
            assert_eq!(
                records[1].status,
                CellStatus::Cancelled,
                "ran and was stopped"
            );
            let last = if ctrl_c {
                CellStatus::Cancelled
            } else {
                CellStatus::BuildFailure
            };
            assert_eq!(records[2].status, last);
        }
    }

    /// Every attempt but cell 0's first waits for a host slot (another
    /// process holds them all) until the run is cancelled; cell 0's first
    /// attempt fails with a system failure, so its retry is one of them.
    struct WaitsForHostSlots {
        waiting: watch::Sender<u32>,
    }

    impl CellRunner for WaitsForHostSlots {
        type Built = ();
        fn take_host_slot(&self, job: &Job) -> BoxFuture<Result<Option<HostSlot>, CellError>> {
            if (job.start.cell, job.start.attempt) == (0, 1) {
                return Box::pin(async { Ok(None) });
            }
            let (cancel, waiting) = (job.cancel.clone(), self.waiting.clone());
            Box::pin(async move {
                waiting.send_modify(|n| *n += 1);
                cancel.cancelled().await;
                Err(error(
                    Failure::Cancelled,
                    "cancelled while it waited for a build slot",
                ))
            })
        }
        fn build(&self, job: Job) -> BoxFuture<Result<(), CellError>> {
            assert_eq!(
                (job.start.cell, job.start.attempt),
                (0, 1),
                "only it has a slot"
            );
            Box::pin(async { Err(error(Failure::System, "connection lost")) })
        }
        fn promote(&self, _cell: usize, _built: ()) -> BoxFuture<Result<Promoted, CellError>> {
            Box::pin(async { Ok(Promoted::default()) })
        }
        fn reachable(&self, _machine: &str) -> BoxFuture<bool> {
            Box::pin(async { true })
        }
    }

    /// An attempt cancelled while it waits for a host slot never started:
    /// a cell that never ran keeps no attempt (`never started`), and one
    /// whose retry waited ends with its retry cancelled, its first attempt
    /// kept.
    #[tokio::test]
    async fn an_attempt_cancelled_while_it_waits_for_a_host_slot_never_started() {
        let runner = Arc::new(WaitsForHostSlots {
            waiting: watch::Sender::new(0),
        });
        let cancel = CancellationToken::new();
        let mut waiting = runner.waiting.subscribe();
        let ctrl_c = cancel.clone();
        tokio::spawn(async move {
            waiting.wait_for(|n| *n == 2).await.unwrap();
            ctrl_c.cancel();
        });
        let RunOutcome { records, .. } =
            run_cells(runner, dispatcher(2, None, false), 2, cancel, None).await;
        let retried = &records[0];
        assert_eq!(retried.status, CellStatus::Cancelled, "{retried:?}");
        assert_eq!(retried.attempts.len(), 1, "{retried:?}");
        assert_eq!(
            retried.summary(),
            "cancelled: retry cancelled: attempt 1 on a failed with a system failure: connection lost"
        );
        assert!(records[1].attempts.is_empty(), "{records:?}");
        assert_eq!(records[1].summary(), "cancelled: never started");
    }

    /// Cell 0 fails with a system failure once cell 1's build failure has
    /// stopped the matrix (fail-fast): the attempt it would have been
    /// retried with is never started.
    struct FailsAfterFailFast {
        cell_1_done: watch::Sender<bool>,
        done: std::sync::Mutex<Vec<usize>>,
    }

    impl CellRunner for FailsAfterFailFast {
        type Built = ();
        fn build(&self, job: Job) -> BoxFuture<Result<(), CellError>> {
            let mut cell_1_done = self.cell_1_done.subscribe();
            Box::pin(async move {
                let failure = match job.start.cell {
                    0 => {
                        cell_1_done.wait_for(|done| *done).await.unwrap();
                        Failure::System
                    }
                    _ => Failure::Build,
                };
                Err(error(failure, "connection lost"))
            })
        }
        fn promote(&self, _cell: usize, _built: ()) -> BoxFuture<Result<Promoted, CellError>> {
            Box::pin(async { Ok(Promoted::default()) })
        }
        fn reachable(&self, _machine: &str) -> BoxFuture<bool> {
            Box::pin(async { true })
        }
        fn cell_done(&self, cell: usize, _record: &CellRecord) {
            self.done.lock().unwrap().push(cell);
            if cell == 1 {
                self.cell_1_done.send_replace(true);
            }
        }
    }

    /// A system failure that ends once the matrix is stopped ends its cell
    /// as one whose retry is cancelled, not as a system failure: whether
    /// the retry had been queued yet is a matter of timing.
    #[tokio::test]
    async fn a_system_failure_ending_after_fail_fast_ends_its_cell_cancelled() {
        let runner = Arc::new(FailsAfterFailFast {
            cell_1_done: watch::Sender::new(false),
            done: Default::default(),
        });
        let RunOutcome { records, .. } = run_cells(
            runner.clone(),
            dispatcher(2, None, true),
            2,
            CancellationToken::new(),
            None,
        )
        .await;
        assert_eq!(records[1].status, CellStatus::BuildFailure);
        let stopped = &records[0];
        assert_eq!(stopped.status, CellStatus::Cancelled, "{stopped:?}");
        assert_eq!(stopped.attempts.len(), 1, "not retried: {stopped:?}");
        assert_eq!(stopped.attempts[0].status, CellStatus::SystemFailure);
        assert!(
            stopped
                .error
                .as_deref()
                .is_some_and(|e| e.contains("connection lost")),
            "{stopped:?}"
        );
        assert_eq!(*runner.done.lock().unwrap(), [1, 0]);
    }

    /// Regression: `run-cell` (a matrix of one cell) said that the matrix
    /// fails fast, "cancelling its other cells", when its only cell
    /// failed. Fail-fast is announced only when it cancels something.
    #[tokio::test]
    async fn fail_fast_is_announced_only_when_it_cancels_cells() {
        for (cells, announced) in [(1, false), (2, true)] {
            let runner = fake(&[], &[0], true);
            let RunOutcome { records, .. } = run_cells(
                runner.clone(),
                dispatcher(cells, Some(2), true),
                cells,
                CancellationToken::new(),
                None,
            )
            .await;
            assert_eq!(records[0].status, CellStatus::BuildFailure);
            let said = runner.fail_fast_by.lock().unwrap().clone();
            let expected = if announced {
                vec!["c0".to_string()]
            } else {
                vec![]
            };
            assert_eq!(said, expected, "{cells} cell(s)");
        }
    }

    #[tokio::test]
    async fn fail_fast_cancels_running_and_waiting_cells() {
        let runner = fake(&[], &[0], true);
        let RunOutcome { records, .. } = run_cells(
            runner,
            dispatcher(6, Some(2), true),
            6,
            CancellationToken::new(),
            None,
        )
        .await;
        assert_eq!(records[0].status, CellStatus::BuildFailure);
        assert!(
            records[1..]
                .iter()
                .all(|r| r.status == CellStatus::Cancelled),
            "{records:?}"
        );
        assert_eq!(records[1].attempts.len(), 1, "cell 1 ran and was stopped");
        assert!(records[5].attempts.is_empty(), "cell 5 never started");
        // Regression: a cell fail-fast cancelled said only `cancelled`, and
        // its error was null, while the time limit's cells said why.
        assert_eq!(
            records[1].summary(),
            "cancelled: fail-fast: cell c0 did not pass"
        );
        assert_eq!(
            records[5].summary(),
            "cancelled: never started: fail-fast: cell c0 did not pass"
        );
    }

    #[tokio::test]
    async fn cancellation_stops_everything_and_still_returns_records() {
        let runner = fake(&[], &[], true);
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let mut counts = runner.counts.subscribe();
        // Cancel once cell 0 passed and its slot went to cell 4: cells 1 to 4
        // hang, cell 5 waits.
        tokio::spawn(async move {
            counts.wait_for(|c| c.hanging == 4).await.unwrap();
            trigger.cancel();
        });
        let RunOutcome { records, .. } =
            run_cells(runner, dispatcher(6, None, false), 6, cancel, None).await;
        assert_eq!(records[0].status, CellStatus::Passed);
        for r in &records[1..=4] {
            assert_eq!(r.status, CellStatus::Cancelled, "{r:?}");
            assert_eq!(r.attempts.len(), 1, "{r:?}");
            assert_eq!(r.summary(), "cancelled", "said once: {r:?}");
        }
        assert_eq!(records[5].status, CellStatus::Cancelled);
        assert!(records[5].attempts.is_empty(), "cell 5 never started");
    }

    /// Runs `cells` cells of `runner` (at most `max_parallel` at once)
    /// within `limit`, never cancelled otherwise.
    async fn within(
        runner: &Arc<Fake>,
        cells: usize,
        max_parallel: Option<u32>,
        limit: TimeLimit,
    ) -> RunOutcome {
        let dispatcher = dispatcher(cells, max_parallel, false);
        let cancel = CancellationToken::new();
        run_cells(runner.clone(), dispatcher, cells, cancel, Some(limit)).await
    }

    /// Time is paused: it moves to the limit once every running build
    /// waits for cancellation. Cells 0 and 1 start (max-parallel 2); cell 0
    /// passes and cell 2 takes its slot; 1 and 2 hang until the limit
    /// cancels them, and 3 to 5 never start.
    #[tokio::test(start_paused = true)]
    async fn the_time_limit_stops_the_run_and_its_cells_say_why() {
        let runner = fake(&[], &[], true);
        let limit = TimeLimit::from_now(Duration::from_secs(2 * 3600));
        let outcome = within(&runner, 6, Some(2), limit).await;
        assert!(outcome.time_limit_reached);
        assert!(tokio::time::Instant::now() >= limit.deadline);
        assert_eq!(*runner.time_limits.lock().unwrap(), [limit.limit]);
        let records = &outcome.records;
        assert_eq!(records[0].status, CellStatus::Passed);
        for r in &records[1..=2] {
            assert_eq!(r.attempts.len(), 1, "{r:?}");
            assert_eq!(
                r.summary(),
                "cancelled: the run's time limit of 2h was reached"
            );
        }
        for r in &records[3..] {
            assert!(r.attempts.is_empty(), "{r:?}");
            assert_eq!(
                r.summary(),
                "cancelled: never started: the run's time limit of 2h was reached"
            );
        }
        assert_eq!(runner.counts.borrow().running, 0, "every build ended");
    }

    /// Fail-fast stops the run before the limit passes, and its cancelled
    /// build takes past the limit to clean up: the limit changes nothing.
    /// The cells were cancelled by fail-fast, and the outcome does not say
    /// the limit stopped the run.
    #[tokio::test(start_paused = true)]
    async fn a_time_limit_passing_after_fail_fast_stopped_the_run_changes_nothing() {
        let runner = Arc::new(Fake {
            failing: vec![0],
            cleanup: Duration::from_secs(120),
            ..Arc::try_unwrap(fake(&[], &[], true)).ok().unwrap()
        });
        let limit = TimeLimit::from_now(Duration::from_secs(60));
        let dispatcher = dispatcher(4, Some(2), true);
        let cancel = CancellationToken::new();
        let outcome = run_cells(runner.clone(), dispatcher, 4, cancel, Some(limit)).await;
        assert!(
            tokio::time::Instant::now() > limit.deadline,
            "the limit passed"
        );
        assert!(!outcome.time_limit_reached, "{outcome:?}");
        assert!(runner.time_limits.lock().unwrap().is_empty());
        assert_eq!(outcome.records[0].status, CellStatus::BuildFailure);
        let fail_fast = "fail-fast: cell c0 did not pass";
        assert_eq!(
            outcome.records[1].summary(),
            format!("cancelled: {fail_fast}")
        );
        assert_eq!(
            outcome.records[3].summary(),
            format!("cancelled: never started: {fail_fast}")
        );
    }

    /// A limit that already passed when the loop starts lets no cell start.
    #[tokio::test(start_paused = true)]
    async fn a_time_limit_already_passed_starts_nothing() {
        let runner = fake(&[], &[], false);
        let limit = TimeLimit::from_now(Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(61)).await;
        let outcome = within(&runner, 3, None, limit).await;
        assert!(outcome.time_limit_reached);
        assert_eq!(runner.counts.borrow().peak, 0, "no build started");
        for r in &outcome.records {
            assert_eq!(
                r.summary(),
                "cancelled: never started: the run's time limit of 1m was reached"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_within_its_time_limit_is_not_stopped() {
        let runner = fake(&[], &[], false);
        let limit = TimeLimit::from_now(Duration::from_secs(60));
        let outcome = within(&runner, 6, Some(2), limit).await;
        assert!(!outcome.time_limit_reached);
        assert!(runner.time_limits.lock().unwrap().is_empty());
        assert!(
            outcome.records.iter().all(|r| r.summary() == "passed"),
            "{:?}",
            outcome.records
        );
    }
}
