//! A whole matrix run: the report directory, every cell run and promoted,
//! the agreement checked, `report.json` and `junit.xml` written.

use std::path::PathBuf;
use std::sync::Arc;

use fruix_core::executor::Registry;
use fruix_promote::temp_roots::TempRoots;
use fruix_promote::Store;
use tokio_util::sync::CancellationToken;

use crate::cell::{ExecutorRunner, Observer};
use crate::plan::MatrixPlan;
use crate::report::{agreement, cell_reports, CellReport, Report, RunClock, SetAside};
use crate::report_dir::{clear_cell, ReportDir};
use crate::runner::{run_cells, TimeLimit};
use crate::{Error, Result};

/// Where a run works and what it builds with.
pub struct RunSettings {
    /// The executors the cells name are looked up and created here.
    pub registry: Registry,
    /// The store passed cells are promoted into.
    pub store: Arc<Store>,
    /// Result roots go to `STATE_DIR/native-builds/RUN_ID`.
    pub state_dir: PathBuf,
    /// From [`create_report_dir`](crate::create_report_dir), locked until
    /// the run has written its report.
    pub report_dir: Arc<ReportDir>,
    /// Compare the first differing files of diverging artifacts with
    /// diffoscope.
    pub diffoscope: bool,
    /// How long the run may take, counted from its start (adding the
    /// source included): once it passes, the run stops as fail-fast stops
    /// it. `None`: no limit.
    pub time_limit: Option<std::time::Duration>,
}

/// A finished run: its report, and where it was written.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The report, as written.
    pub report: Report,
    /// The path of `report.json` in the report directory.
    pub report_json: PathBuf,
    /// The path of `junit.xml`, beside `report.json`.
    pub junit_xml: PathBuf,
    /// What went wrong without stopping it, each to show as a warning
    /// (escaped): `collect`'s logs it could not copy.
    pub warnings: Vec<String>,
}

/// The name of a run's copy of its machines file in its report directory
/// ([`MatrixPlan::copy_machines`]).
pub const MACHINES_COPY: &str = "machines.scm";

/// Runs every cell of `plan` (see [`crate::runner`]), compares the
/// artifacts of the cells that must agree, and writes the reports.
/// Cancelling `cancel` (Ctrl-C) stops the matrix; the reports are still
/// written for what finished.
pub async fn run(
    plan: Arc<MatrixPlan>,
    settings: RunSettings,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) -> Result<Finished> {
    let diffoscope = settings.diffoscope;
    // Held (the report directory locked) until the report is written.
    let locked = settings.report_dir.clone();
    let report_dir = locked.path();
    let store = settings.store.path().to_path_buf();
    let ran = execute(
        plan.clone(),
        settings,
        observer,
        cancel.clone(),
        MACHINES_COPY,
    )
    .await?;
    let agreement = agreement(
        &plan.agreement_groups(),
        &ran.cells,
        Some(&store),
        diffoscope,
        report_dir,
    );
    let report = Report {
        matrix: std::path::absolute(&plan.file.path).unwrap_or(plan.file.path.clone()),
        started_at: ran.clock.unix(ran.clock.at),
        duration_s: ran.clock.elapsed_s(),
        max_parallel: plan.file.strategy.max_parallel,
        cancelled: cancel.is_cancelled(),
        time_limit_s: ran.time_limit.map(|t| t.as_secs_f64()),
        time_limit_reached: ran.time_limit_reached,
        machines_file: plan.machines.as_ref().map(|m| m.path.clone()),
        pipeline_run: None,
        cells: ran.cells,
        agreement,
        machines_set_aside: ran.set_aside,
    };
    let written = report.write(report_dir);
    let (report_json, junit_xml) = failed_log(ran.log_failure, written)?;
    drop(locked);
    Ok(Finished {
        report,
        report_json,
        junit_xml,
        warnings: Vec::new(),
    })
}

/// What running a plan's cells gave.
pub(crate) struct Ran {
    /// The run's clock, read as its cells started to run.
    pub clock: RunClock,
    pub cells: Vec<CellReport>,
    pub set_aside: Vec<SetAside>,
    pub time_limit: Option<std::time::Duration>,
    pub time_limit_reached: bool,
    /// The first cell log that could not be written: the run fails with
    /// it ([`failed_log`]).
    pub log_failure: Option<fruix_core::Error>,
}

/// What writing a run's report gave, `written` (its first element the
/// report's path), unless a cell log could not be written (`log_failure`):
/// then an [`Error::CellLog`], saying where the report is, or why it is
/// not.
pub(crate) fn failed_log<T: AsRef<std::path::Path>, U>(
    log_failure: Option<fruix_core::Error>,
    written: Result<(T, U)>,
) -> Result<(T, U)> {
    match log_failure {
        None => written,
        Some(e) => Err(Error::CellLog {
            source: Box::new(e),
            report: written
                .map(|(path, _)| path.as_ref().to_path_buf())
                .map_err(|e| e.to_string()),
        }),
    }
}

/// Runs every cell of `plan` and promotes each passed one: the part of a
/// run that [`run`] and [`crate::split::run_cell`] share. Every attempt
/// reads the machines file as the plan checked it: a copy, `machines_copy`
/// in the report directory ([`MatrixPlan::copy_machines`]).
pub(crate) async fn execute(
    plan: Arc<MatrixPlan>,
    settings: RunSettings,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
    machines_copy: &str,
) -> Result<Ran> {
    let time_limit = settings.time_limit.map(TimeLimit::from_now);
    // A cell run again keeps nothing of its earlier run: not its log, nor
    // the result link of a pass it may not repeat.
    for cell in &plan.cells {
        clear_cell(settings.report_dir.path(), &cell.id)?;
    }
    let mut plan = Arc::unwrap_or_clone(plan);
    plan.copy_machines(&settings.report_dir.path().join(machines_copy))?;
    // Cells build one source object, added once: they compare like with
    // like, whatever directory the matrix names, and a guest executor sends
    // it to its machine (unless the file names a `remote-source` there). A
    // temporary root keeps it while the cells run.
    let temp_roots =
        Arc::new(TempRoots::create(settings.store.path()).map_err(|e| Error::Source(Box::new(e)))?);
    let uses_object = plan.remote.iter().any(|r| !r) || plan.file.remote_source.is_none();
    if uses_object && plan.source_object.is_none() {
        let (store, source) = (settings.store.clone(), plan.source.clone());
        // A matrix run from inside its tree leaves out its own output.
        let state_dir = settings.state_dir.clone();
        let report_dir = settings.report_dir.path().to_path_buf();
        // The version the cells record (the file's `freebsd-version`, else
        // `newvers.sh`), as `fruix build --freebsd-version` gives it.
        let version = plan.freebsd_base.version.clone();
        let roots = temp_roots.clone();
        let (object, _) = tokio::task::spawn_blocking(move || {
            let own = [
                crate::sources::OwnOutput::StateDir(&state_dir),
                crate::sources::OwnOutput::ReportDir(&report_dir),
            ];
            crate::sources::source_object_leaving_out(
                &store,
                &source,
                Some(&version),
                &own,
                None,
                &roots,
            )
        })
        .await
        .map_err(|e| {
            Error::Core(fruix_core::Error::system(format!(
                "adding the source failed: {e}"
            )))
        })?
        .map_err(|e| Error::Source(Box::new(e)))?;
        plan.source_object = Some(object);
    }
    let plan = Arc::new(plan);
    let runner = Arc::new(ExecutorRunner {
        plan: plan.clone(),
        registry: settings.registry,
        store: settings.store,
        state_dir: settings.state_dir,
        report_dir: settings.report_dir.clone(),
        observer,
        log_failure: Default::default(),
    });
    let clock = RunClock::now();
    let outcome = run_cells(
        runner.clone(),
        plan.dispatcher(),
        plan.cells.len(),
        cancel.clone(),
        time_limit,
    )
    .await;
    let cells = cell_reports(&plan.cells, &outcome.records, &clock, |i| {
        runner.log_path(i)
    });
    Ok(Ran {
        clock,
        cells,
        set_aside: outcome
            .set_aside
            .into_iter()
            .map(|(machine, reason)| SetAside { machine, reason })
            .collect(),
        time_limit: time_limit.map(|t| t.limit),
        time_limit_reached: outcome.time_limit_reached,
        log_failure: runner.log_failure.take(),
    })
}
