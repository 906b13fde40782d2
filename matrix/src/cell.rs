//! The real [`CellRunner`]: each attempt runs the cell's executor through
//! `run_executor_within` (under the matrix's time limits) into a fresh
//! result root (`STATE_DIR/native-builds/RUN_ID`), writes the attempt's events to the cell's log file
//! (`REPORT_DIR/logs/CELL.log`, attempts one after another), and a passed
//! cell is promoted into the store. An [`Observer`] hears of every attempt
//! and event, for a live view.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fruix_core::executor::{run_executor_within, Event, EventReceiver, EventSink, Phase, Registry};
use fruix_core::result_root::ResultRoot;
use fruix_core::run_id::allocate_run_dir;
use fruix_core::{Error, Failure};
use fruix_promote::attest;
use fruix_promote::sign::PublicKey;
use fruix_promote::{promote_validated, PromoteOptions, Store};

use crate::cell_log::{self, CellLog, LogFailure};
use crate::host_slots::{self, HostSlot};
use crate::plan::MatrixPlan;
use crate::report_dir::ReportDir;
use crate::result_link::link_result;
use crate::runner::{
    BoxFuture, CellError, CellRecord, CellRunner, Job, Promoted, PromotedArtifact,
};
use crate::schedule::Placement;

/// How long a reachability probe of a machine may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a matrix run tells while it runs, cell by cell (the CLI's live
/// view). Cells are named by their ids.
pub trait Observer: Send + Sync {
    /// Cell `cell` starts attempt `attempt` on `machine` (a machine of the
    /// machines file, or `local`).
    fn attempt_started(&self, cell: &str, machine: &str, attempt: u32);
    /// An event of cell `cell`'s running attempt, sent during its build
    /// or its cleanup (`phase`): a stage of the cleanup, which is never
    /// cancelled, that fails once the run is cancelled failed by itself.
    fn event(&self, cell: &str, event: &Event, phase: Phase);
    /// Cell `cell`'s attempt ended; `failure`, when it failed, says how
    /// (`attempt 1 on m1: ... (system failure)`).
    fn attempt_ended(&self, cell: &str, failure: Option<&str>);
    /// Cell `cell` is finished (promotion included).
    fn cell_finished(&self, cell: &str, record: &CellRecord);
    /// Cell `cell`'s attempt waits for a build slot on `machine`: the
    /// other fruix processes of this host hold all of its `slots`
    /// ([`crate::host_slots`]). By default, a [`Event::Warning`] of the
    /// cell ([`waiting_for_slot`]).
    fn waiting_for_slot(&self, cell: &str, machine: &str, slots: u32) {
        let message = waiting_for_slot(machine, slots);
        self.event(cell, &Event::Warning { message }, Phase::Build);
    }
    /// The run's time limit passed: its running cells are being cancelled.
    fn time_limit_reached(&self, _limit: std::time::Duration) {}
    /// Cell `cell` failed for good, and fail-fast stops the run: its other
    /// running cells are being cancelled.
    fn fail_fast(&self, _cell: &str) {}
}

/// What says that an attempt waits for a build slot on `machine`, the
/// other fruix processes of this host holding all of its `slots` that it
/// does not (not escaped: as a [`Event::Warning`]'s message).
pub fn waiting_for_slot(machine: &str, slots: u32) -> String {
    let held = match slots {
        1 => "its only slot (parallel-builds 1) is held by another fruix process".to_string(),
        n => format!(
            "all {n} of its slots (parallel-builds {n}) are held, some by other fruix processes"
        ),
    };
    format!("waits for a build slot on {machine}: {held} with this state directory")
}

/// Runs cells with executors and promotes them.
pub struct ExecutorRunner {
    /// The checked matrix: the cells, their build requests and executor
    /// configurations, and the machines.
    pub plan: Arc<MatrixPlan>,
    /// Where each attempt's executor is created, from the cell's executor name
    /// and configuration.
    pub registry: Registry,
    /// The store passed cells are promoted into (and where the signatures of
    /// results signed by their machine are recorded).
    pub store: Arc<Store>,
    /// The state directory: each attempt's result root is a fresh
    /// `STATE_DIR/native-builds/RUN_ID`, and the `results/` links are
    /// registered as garbage-collector roots under its `gcroots/auto/`.
    pub state_dir: PathBuf,
    /// The report directory, locked for the run: the cells' logs go to
    /// its `logs/ID.log` ([`ExecutorRunner::log_path`], opened by
    /// [`cell_log::open`]), every attempt appended, and each passed cell's
    /// bundle is linked at `results/ID` ([`link_result`]).
    pub report_dir: Arc<ReportDir>,
    /// Told of every attempt, event and finished cell.
    pub observer: Arc<dyn Observer>,
    /// The first cell log that could not be written (its cell failed):
    /// the run fails with it once its report is written.
    pub log_failure: LogFailure,
}

impl ExecutorRunner {
    /// The log file of cell `i`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        let logs = self.report_dir.logs();
        logs.child(cell_log::name(&self.plan.cells[i].id).as_ref())
    }
}

fn system(message: impl Into<String>) -> CellError {
    CellError {
        failure: Failure::System,
        message: message.into(),
        machine_unavailable: false,
    }
}

/// A failed attempt's error: its class and message.
fn cell_error(e: &Error) -> CellError {
    CellError {
        failure: e.failure(),
        message: e.to_string(),
        machine_unavailable: matches!(e, Error::MachineUnavailable(_)),
    }
}

/// Writes `event` to a cell's log file (progress is not logged); `false`
/// once the log cannot be written.
fn log_event(log: &mut CellLog, event: &Event) -> bool {
    let line = match event {
        Event::StageStarted { stage } => format!("==> {stage}"),
        Event::Log { line, .. } => line.clone(),
        Event::Progress { .. } => return true,
        Event::StageFinished {
            stage,
            ok,
            elapsed_ms,
        } => format!(
            "==> {stage} {} in {:.1}s",
            if *ok { "done" } else { "FAILED" },
            *elapsed_ms as f64 / 1000.0
        ),
        Event::Warning { message } => format!("warning: {message}"),
    };
    log.line(&line)
}

/// The next event already queued in `rx`, with its phase; `None` when none
/// is (it never waits).
fn queued(rx: &mut EventReceiver) -> Option<(Event, Phase)> {
    rx.try_recv_with_phase().ok()
}

/// One attempt of a cell, its log file open.
struct Attempt {
    plan: Arc<MatrixPlan>,
    registry: Registry,
    state_dir: PathBuf,
    observer: Arc<dyn Observer>,
    job: Job,
    id: String,
    machine: String,
}

impl Attempt {
    /// Runs the cell's executor into a fresh result root, logging its
    /// events to `log` and telling the observer. A log that cannot be
    /// written cancels the build, and fails the attempt with its error.
    async fn run(&self, log: &mut CellLog) -> Result<ResultRoot, CellError> {
        let i = self.job.start.cell;
        let config = self.plan.executor_config(i, &self.job.start.placement);
        let executor = self
            .registry
            .create(&self.plan.cells[i].executor, config)
            .map_err(|e| CellError {
                failure: e.failure(),
                message: e.to_string(),
                machine_unavailable: false,
            })?;
        let (run_id, root) =
            allocate_run_dir(&self.state_dir.join("native-builds")).map_err(|e| cell_error(&e))?;
        log.line(&format!(
            "=== {}: attempt {} on {}: run id {run_id}, result root {}",
            self.id,
            self.job.start.attempt,
            self.machine,
            fruix_core::escape::path(&root)
        ));
        let cancel = self.job.cancel.child_token();
        if log.failure().is_some() {
            cancel.cancel();
        }
        let (events, mut rx) = EventSink::channel();
        let request = self.plan.request(i, run_id);
        let run = run_executor_within(
            executor,
            request,
            &root,
            events,
            cancel.clone(),
            self.plan.limits(),
        );
        tokio::pin!(run);
        let pass_on = |log: &mut CellLog, (event, phase): (Event, Phase)| {
            self.observer.event(&self.id, &event, phase);
            if !log_event(log, &event) {
                cancel.cancel();
            }
        };
        // Drain events while the executor runs; the channel closes when it
        // returns. Events still queued then (sent in the poll that returned,
        // the cleanup's last ones) follow, in order and with their phase,
        // to the log and the observer alike.
        let result = loop {
            tokio::select! {
                event = rx.recv_with_phase() => match event {
                    Some(event) => pass_on(log, event),
                    None => break (&mut run).await,
                },
                result = &mut run => {
                    while let Some(event) = queued(&mut rx) {
                        pass_on(log, event);
                    }
                    break result;
                }
            }
        };
        if let Err(e) = &result {
            if let Some(tail) = e.log().map(|l| &l.tail).filter(|t| !t.is_empty()) {
                log.line(&format!("--- last {} log lines ---", tail.len()));
                for line in tail {
                    log.line(line);
                }
            }
        }
        match log.failure() {
            Some(e) => Err(cell_error(&e)),
            None => result.map_err(|e| cell_error(&e)),
        }
    }
}

impl CellRunner for ExecutorRunner {
    /// The result root, and the machine that built it.
    type Built = (ResultRoot, String);

    /// A slot of the attempt's machine (`STATE_DIR/matrix/slots`). A wait
    /// is told to the observer and written to the cell's log; so is a
    /// failure to take one, as the attempt's.
    fn take_host_slot(&self, job: &Job) -> BoxFuture<Result<Option<HostSlot>, CellError>> {
        let Placement::Machine(machine) = &job.start.placement else {
            return Box::pin(async { Ok(None) });
        };
        let machines = self.plan.machines.as_ref();
        let Some(slots) = machines.and_then(|m| Some(m.get(machine).ok()?.parallel_builds)) else {
            return Box::pin(async { Ok(None) });
        };
        let machine = machine.clone();
        let (observer, state_dir) = (self.observer.clone(), self.state_dir.clone());
        let (cancel, report_dir) = (job.cancel.clone(), self.report_dir.clone());
        let log_failure = self.log_failure.clone();
        let (id, n) = (
            self.plan.cells[job.start.cell].id.clone(),
            job.start.attempt,
        );
        Box::pin(async move {
            let waiting = || {
                observer.waiting_for_slot(&id, &machine, slots);
                let says = fruix_core::escape::line(&waiting_for_slot(&machine, slots));
                let line = format!("=== {id}: attempt {n} {says}");
                if let Err(e) = cell_log::append(report_dir.logs(), &id, &line) {
                    log_failure.note(e);
                }
            };
            match host_slots::take(&state_dir, &machine, slots, &cancel, waiting).await {
                Ok(Some(slot)) => Ok(Some(slot)),
                Ok(None) => Err(CellError {
                    failure: Failure::Cancelled,
                    message: "cancelled while it waited for a build slot".into(),
                    machine_unavailable: false,
                }),
                Err(e) => {
                    let e = cell_error(&e);
                    let line = format!("=== {id}: attempt {n}: {e}");
                    if let Err(e) = cell_log::append(report_dir.logs(), &id, &line) {
                        log_failure.note(e);
                    }
                    observer.attempt_started(&id, &machine, n);
                    let line = format!("attempt {n} on {machine}: {e}");
                    observer.attempt_ended(&id, Some(&line));
                    Err(e)
                }
            }
        })
    }

    fn build(&self, job: Job) -> BoxFuture<Result<(ResultRoot, String), CellError>> {
        let (report_dir, log_failure) = (self.report_dir.clone(), self.log_failure.clone());
        // A cell built here from this store's source object must leave it
        // as it was (a remote cell's copy is the machine's own).
        let built_from = match (self.plan.remote[job.start.cell], &self.plan.source_object) {
            (false, Some(source)) => Some(std::path::PathBuf::from(&source.path)),
            _ => None,
        };
        let attempt = Attempt {
            plan: self.plan.clone(),
            registry: self.registry.clone(),
            state_dir: self.state_dir.clone(),
            observer: self.observer.clone(),
            id: self.plan.cells[job.start.cell].id.clone(),
            machine: job.start.placement.name().to_string(),
            job,
        };
        Box::pin(async move {
            let (id, n) = (&attempt.id, attempt.job.start.attempt);
            attempt.observer.attempt_started(id, &attempt.machine, n);
            let mut log = CellLog::open(report_dir.logs(), id).map_err(|e| cell_error(&e))?;
            let mut outcome = attempt.run(&mut log).await;
            if let Some(object) = built_from {
                let untouched = tokio::task::spawn_blocking(move || {
                    fruix_promote::source::check_source_untouched(&object)
                })
                .await
                .map_err(|e| system(format!("checking the source object failed: {e}")))?;
                if let Err(e) = untouched {
                    log.line(&format!("fruix: {e}"));
                    if outcome.is_ok() {
                        outcome = Err(CellError {
                            failure: e.failure(),
                            message: e.to_string(),
                            machine_unavailable: false,
                        });
                    }
                }
            }
            let ending = |outcome: &Result<ResultRoot, CellError>| match outcome {
                Ok(_) => "built".to_string(),
                Err(e) => e.to_string(),
            };
            log.line(&format!("=== {id}: attempt {n}: {}", ending(&outcome)));
            // A log cut short fails the attempt, whatever the build did.
            if let Some(e) = log.failure() {
                outcome = Err(cell_error(&e));
                log_failure.note(e);
            }
            let line = format!("attempt {n} on {}: {}", attempt.machine, ending(&outcome));
            attempt
                .observer
                .attempt_ended(id, outcome.is_err().then_some(line.as_str()));
            outcome.map(|root| (root, attempt.machine.clone()))
        })
    }

    fn promote(
        &self,
        cell: usize,
        (root, machine): (ResultRoot, String),
    ) -> BoxFuture<Result<Promoted, CellError>> {
        let store = self.store.clone();
        // A machine that signs where it builds must have signed every object
        // of its result with its key (checked before anything is promoted).
        let signer = match self.plan.signing_key(&machine).map(PublicKey::parse) {
            Some(Ok(key)) => Some(key),
            Some(Err(message)) => {
                return Box::pin(async move {
                    Err(CellError {
                        failure: Failure::Input,
                        message: format!("machine {machine}: signing-key: {message}"),
                        machine_unavailable: false,
                    })
                })
            }
            None => None,
        };
        // `REPORT_DIR/results/CELL` links the cell's bundle, a root as long
        // as the report is kept (like nix-build's `result-N`).
        let id = self.plan.cells[cell].id.clone();
        let (report_dir, state_dir) = (self.report_dir.clone(), self.state_dir.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let signed = match &signer {
                    Some(key) => Some(attest::check_result(&root, store.path(), key, &machine)?),
                    None => None,
                };
                // Held, shared, from the promotion until the link is a
                // root: no collection comes between.
                let gc = store.gc_lock(false)?;
                let report = promote_validated(&root, &store, &PromoteOptions::default())?;
                link_result(report_dir.path(), &state_dir, &id, &report.result_store)?;
                drop(gc);
                // An object the store already held with other references
                // than those the machine signed keeps no signature of it:
                // the cell is not `signed_by` the machine then, and says
                // which objects lack it.
                let (signed_by, not_recorded) = match (&signed, &signer) {
                    (Some(signed), Some(key)) => {
                        let unsigned = attest::record(&store, signed)?;
                        let signed_by = unsigned.is_empty().then(|| key.name.clone());
                        let paths = unsigned.iter().map(|(n, _)| store.path().join(n)).collect();
                        (signed_by, paths)
                    }
                    _ => (None, Vec::new()),
                };
                Ok::<_, fruix_promote::Error>((report, signed_by, not_recorded))
            })
            .await
            .map_err(|e| system(format!("promotion task failed: {e}")))?
            .map(|(report, signed_by, signatures_not_recorded)| Promoted {
                signed_by,
                signatures_not_recorded,
                result_store: report.result_store,
                artifacts: report
                    .artifacts
                    .into_iter()
                    .map(|(name, a)| {
                        (
                            name,
                            PromotedArtifact {
                                store_path: a.store_path,
                                tree_signature: a.tree_signature.to_string(),
                            },
                        )
                    })
                    .collect(),
            })
            .map_err(|e| CellError {
                failure: e.failure(),
                message: e.to_string(),
                machine_unavailable: false,
            })
        })
    }

    fn reachable(&self, machine: &str) -> BoxFuture<bool> {
        let machine = self
            .plan
            .machines
            .as_ref()
            .and_then(|m| m.get(machine).ok());
        // A virtual machine is booted for each build: there is nothing to
        // reach beforehand (a VM that cannot boot fails its cell with
        // `MachineUnavailable`, which sets it aside).
        if machine.is_some_and(|m| m.vm.is_some()) {
            return Box::pin(async { true });
        }
        let address = machine.map(|m| (m.target.host.clone(), m.target.port));
        Box::pin(async move {
            let Some(address) = address else {
                return false;
            };
            matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(address)).await,
                Ok(Ok(_))
            )
        })
    }

    fn cell_done(&self, cell: usize, record: &CellRecord) {
        self.observer
            .cell_finished(&self.plan.cells[cell].id, record);
    }

    fn time_limit_reached(&self, limit: std::time::Duration) {
        self.observer.time_limit_reached(limit);
    }

    fn fail_fast(&self, id: &str) {
        self.observer.fail_fast(id);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use fruix_core::executor::{Capabilities, ExecutorKind, RegistryEntry, Stream};
    use fruix_promote::sign::SecretKey;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::schedule::{Placement, Start};

    /// What an observer heard, in order.
    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl Heard {
        fn push(&self, what: String) {
            self.0.lock().unwrap().push(what);
        }
    }

    impl Observer for Heard {
        fn attempt_started(&self, cell: &str, machine: &str, attempt: u32) {
            self.push(format!("{cell}: attempt {attempt} on {machine}"));
        }
        fn event(&self, cell: &str, event: &Event, phase: Phase) {
            let what = match event {
                Event::Log { line, .. } => line.clone(),
                other => format!("{other:?}"),
            };
            let during = match phase {
                Phase::Build => "",
                Phase::Cleanup => " (in cleanup)",
            };
            self.push(format!("{cell}: {what}{during}"));
        }
        fn attempt_ended(&self, cell: &str, failure: Option<&str>) {
            self.push(format!("{cell}: ended, failed: {}", failure.is_some()));
        }
        fn cell_finished(&self, cell: &str, _record: &CellRecord) {
            self.push(format!("{cell}: finished"));
        }
    }

    /// The lines the `chatty` executor logs, then fails with a system
    /// failure: all at once, without awaiting, so that they are still
    /// queued when the executor returns.
    const LINES: [&str; 3] = ["line 1", "line 2", "line 3"];

    /// The `chatty` executor: its build logs [`LINES`] and fails with a
    /// system failure; its cleanup runs a stage `cleanup`, which fails.
    #[derive(Debug)]
    struct Chatty;

    #[async_trait::async_trait]
    impl fruix_core::executor::Run for Chatty {
        async fn build(&mut self, ctx: &fruix_core::executor::RunContext) -> Result<(), Error> {
            for line in LINES {
                ctx.events.log("build", Stream::Stdout, line);
            }
            Err(Error::system("the build machinery broke"))
        }

        async fn cleanup(
            self: Box<Self>,
            ctx: &fruix_core::executor::RunContext,
        ) -> Result<(), Error> {
            ctx.events.emit(Event::StageFinished {
                stage: "cleanup".into(),
                ok: false,
                elapsed_ms: 0,
            });
            Ok(())
        }
    }

    impl fruix_core::executor::Executor for Chatty {
        fn name(&self) -> &str {
            "chatty"
        }
        fn version(&self) -> &str {
            "0"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn start(
            &self,
            _ctx: &fruix_core::executor::RunContext,
        ) -> Box<dyn fruix_core::executor::Run + '_> {
            Box::new(Chatty)
        }
    }

    /// A runner in `dir` of a matrix of one cell, `chatty` on this host,
    /// with a machines file whose machine m1 signs with `key`.
    fn runner(dir: &Path, key: &SecretKey, observer: Arc<Heard>) -> ExecutorRunner {
        crate::testing::mini_source(dir);
        std::fs::write(
            dir.join("machines.scm"),
            format!(
                r#"(fruix-machines
  (machine (name "m1") (host "h1") (user "u")
           (signing-key "{}") (guest-signing-key "/etc/fruix/signing-key.sec")))"#,
                key.public_text().trim()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("matrix.scm"),
            r#"(fruix-matrix (format-version 1) (source "src") (machines-file "machines.scm")
  (axes (executor "chatty")))"#,
        )
        .unwrap();
        let mut registry = Registry::default();
        registry
            .add(RegistryEntry {
                name: "chatty".into(),
                description: String::new(),
                version: "0".into(),
                origin: "tests".into(),
                kind: ExecutorKind::BuiltIn,
                capabilities: Capabilities::default(),
                config_keys: Vec::new(),
                factory: Arc::new(|_| Ok(Arc::new(Chatty))),
            })
            .unwrap();
        let plan = MatrixPlan::load(&dir.join("matrix.scm"), None, None, &registry).unwrap();
        let report_dir = crate::create_report_dir(
            Some(&dir.join("report")),
            &dir.join("state"),
            crate::ReportDirUse::Whole,
        )
        .unwrap();
        ExecutorRunner {
            plan: Arc::new(plan),
            registry,
            store: Arc::new(Store::open(&dir.join("store")).unwrap()),
            state_dir: dir.join("state"),
            report_dir: Arc::new(report_dir),
            observer,
            log_failure: LogFailure::default(),
        }
    }

    fn key() -> SecretKey {
        SecretKey::generate("m1-key").unwrap()
    }

    /// A result root at `dir/NAME`, signed for `store` with `key` where it
    /// was built; its source names `source` (a path in the store or not).
    fn signed_root(dir: &Path, name: &str, source: &Path, key: &SecretKey) -> ResultRoot {
        let path = dir.join(name);
        let mut metadata = fruix_core::testing::write_sample_result_root(
            &path,
            "guest-self-hosted",
            "20260405T213444Z",
            true,
        )
        .unwrap();
        metadata.source_store.path = source.to_string_lossy().into_owned();
        metadata.write_to(&path).unwrap();
        let root = fruix_core::result_root::validate(&path).unwrap();
        attest::sign_result(&root, &dir.join("store"), key).unwrap();
        root
    }

    /// A signed result carries every signature of the machine's. One whose
    /// source names an object this store does not hold was promoted with
    /// the machine's signature of that reference not recorded (listed in
    /// `signatures_not_recorded`); it is refused now, as its objects would
    /// reference an object the store lacks.
    #[tokio::test]
    async fn a_signed_result_carries_every_signature_and_one_naming_a_missing_source_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = key();
        let runner = runner(d, &key, Arc::default());
        let store = runner.store.clone();
        let objects = |p: &Promoted| -> Vec<PathBuf> {
            let mut all: Vec<PathBuf> =
                p.artifacts.values().map(|a| a.store_path.clone()).collect();
            all.push(p.result_store.clone());
            all
        };
        let signed = |path: &Path| {
            let name = path.file_name().unwrap().to_str().unwrap();
            !store.db().signatures(name).unwrap().is_empty()
        };

        // Its source is not in the store: every signature is recorded.
        let root = signed_root(d, "plain", Path::new("/elsewhere/src"), &key);
        let promoted = runner.promote(0, (root, "m1".into())).await.unwrap();
        assert_eq!(promoted.signed_by.as_deref(), Some("m1-key"));
        assert_eq!(promoted.signatures_not_recorded, Vec::<PathBuf>::new());
        assert!(objects(&promoted).iter().all(|o| signed(o)));

        // Its source names an object this store does not hold: the machine
        // signed the reference, the registry has none.
        let source = store
            .path()
            .join("12d7704362e95afc2697db63f168b878e082b372-freebsd-source-default");
        let root = signed_root(d, "referencing", &source, &key);
        let e = runner.promote(0, (root, "m1".into())).await.unwrap_err();
        assert_eq!(e.failure, Failure::Input, "{e:?}");
        assert!(e.message.contains("is not in the store"), "{e:?}");
    }

    /// Regression: the events still queued when the executor returned were
    /// logged, but the observer (the live view) never heard of them. And
    /// the observer heard no phase: a stage of the cleanup that failed
    /// once the run was cancelled was shown `cancelled`, though cleanup is
    /// never cancelled.
    #[tokio::test]
    async fn events_queued_when_the_executor_returns_reach_the_observer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let heard = Arc::new(Heard::default());
        let runner = runner(dir.path(), &key(), heard.clone());
        let job = Job {
            start: Start {
                cell: 0,
                attempt: 1,
                placement: Placement::Local,
            },
            cancel: CancellationToken::new(),
        };
        let e = runner.build(job).await.unwrap_err();
        assert_eq!(e.failure, Failure::System, "{e:?}");
        let log = std::fs::read_to_string(runner.log_path(0)).unwrap();
        let logged: Vec<&str> = log.lines().filter(|l| LINES.contains(l)).collect();
        assert_eq!(logged, LINES, "{log}");
        let heard = heard.0.lock().unwrap();
        let mut expected = vec!["chatty: attempt 1 on local".to_string()];
        expected.extend(LINES.iter().map(|l| format!("chatty: {l}")));
        expected.push(
            r#"chatty: StageFinished { stage: "cleanup", ok: false, elapsed_ms: 0 } (in cleanup)"#
                .into(),
        );
        expected.push("chatty: ended, failed: true".into());
        assert_eq!(*heard, expected);
    }
}
