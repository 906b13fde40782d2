//! The real [`CellRunner`]: each attempt runs the cell's executor through
//! `run_executor` into a fresh result root (`STATE_DIR/native-builds/RUN_ID`),
//! writes the attempt's events to the cell's log file
//! (`REPORT_DIR/logs/CELL.log`, attempts one after another), and a passed
//! cell is promoted into the store.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fruix_core::executor::{run_executor, Event, EventSink, Registry};
use fruix_core::result_root::ResultRoot;
use fruix_core::run_id::allocate_run_dir;
use fruix_core::{Error, Failure};
use fruix_promote::{promote_validated, PromoteOptions, Store};

use super::live::Live;
use super::plan::MatrixPlan;
use super::runner::{
    BoxFuture, CellError, CellRecord, CellRunner, Job, Promoted, PromotedArtifact,
};

/// How long a reachability probe of a machine may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs cells with executors and promotes them.
pub struct ExecutorRunner {
    pub plan: Arc<MatrixPlan>,
    pub registry: Registry,
    pub store: Arc<Store>,
    pub state_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub live: Arc<Live>,
}

impl ExecutorRunner {
    /// The log file of cell `i`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.logs_dir.join(format!("{}.log", self.plan.cells[i].id))
    }
}

fn system(message: impl Into<String>) -> CellError {
    CellError {
        failure: Failure::System,
        message: message.into(),
    }
}

/// The error of a failed attempt, with a build failure's last log lines.
fn cell_error(e: &Error) -> CellError {
    CellError {
        failure: e.failure(),
        message: e.to_string(),
    }
}

/// Renders an event as a log file line.
fn log_line(event: &Event) -> String {
    match event {
        Event::StageStarted { stage } => format!("==> {stage}"),
        Event::Log { line, .. } => line.clone(),
        Event::Progress { .. } => String::new(),
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
    }
}

impl CellRunner for ExecutorRunner {
    type Built = ResultRoot;

    fn build(&self, job: Job) -> BoxFuture<Result<ResultRoot, CellError>> {
        let i = job.start.cell;
        let plan = self.plan.clone();
        let registry = self.registry.clone();
        let state_dir = self.state_dir.clone();
        let log_path = self.log_path(i);
        let live = self.live.clone();
        Box::pin(async move {
            let id = plan.cells[i].id.clone();
            let machine = job.start.placement.name().to_string();
            live.started(&id, &machine, job.start.attempt);
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| system(format!("cannot open log {}: {e}", log_path.display())))?;
            let config = plan.executor_config(i, &job.start.placement);
            let outcome = async {
                let executor = registry
                    .create(&plan.cells[i].executor, config)
                    .map_err(|e| cell_error(&e))?;
                let (run_id, root) = allocate_run_dir(&state_dir.join("native-builds"))
                    .map_err(|e| cell_error(&e))?;
                let _ = writeln!(
                    log,
                    "=== {id}: attempt {} on {machine}: run id {run_id}, result root {}",
                    job.start.attempt,
                    root.display()
                );
                let (events, mut rx) = EventSink::channel();
                let request = plan.request(i, run_id);
                let run = run_executor(executor, request, &root, events, job.cancel.clone());
                tokio::pin!(run);
                // Drain events while the executor runs; the channel closes
                // when it returns.
                let result = loop {
                    tokio::select! {
                        event = rx.recv() => match event {
                            Some(event) => {
                                live.event(&id, &event);
                                let line = log_line(&event);
                                if !line.is_empty() {
                                    let _ = writeln!(log, "{line}");
                                }
                            }
                            None => break (&mut run).await,
                        },
                        result = &mut run => {
                            while let Ok(event) = rx.try_recv() {
                                let line = log_line(&event);
                                if !line.is_empty() {
                                    let _ = writeln!(log, "{line}");
                                }
                            }
                            break result;
                        }
                    }
                };
                result.map_err(|e| {
                    if let Error::Build { tail, .. } = &e {
                        let _ = writeln!(log, "--- last {} log lines ---", tail.len());
                        for line in tail {
                            let _ = writeln!(log, "{line}");
                        }
                    }
                    cell_error(&e)
                })
            }
            .await;
            let ending = match &outcome {
                Ok(_) => "built".to_string(),
                Err(e) => format!("{} ({})", e.message, failure_word(e.failure)),
            };
            let _ = writeln!(log, "=== {id}: attempt {}: {ending}", job.start.attempt);
            let line = format!("attempt {} on {machine}: {ending}", job.start.attempt);
            live.finished(&id, outcome.is_err().then_some(line.as_str()));
            outcome
        })
    }

    fn promote(&self, _cell: usize, root: ResultRoot) -> BoxFuture<Result<Promoted, CellError>> {
        let store = self.store.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                promote_validated(&root, &store, &PromoteOptions::default())
            })
            .await
            .map_err(|e| system(format!("promotion task failed: {e}")))?
            .map(|report| Promoted {
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
            })
        })
    }

    fn reachable(&self, machine: &str) -> BoxFuture<bool> {
        let address = self
            .plan
            .machines
            .as_ref()
            .and_then(|m| m.get(machine).ok())
            .map(|m| (m.host.clone(), m.port));
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
        let id = &self.plan.cells[cell].id;
        let line = match &record.error {
            None => record.status.as_str().to_string(),
            Some(e) => format!("{}: {e}", record.status.as_str()),
        };
        self.live.finished(id, Some(&line));
    }
}

fn failure_word(f: Failure) -> &'static str {
    match f {
        Failure::Build => "build failure",
        Failure::System => "system failure",
        Failure::Input => "invalid result",
        Failure::Cancelled => "cancelled",
    }
}
