//! `fruix matrix plan`, `run`, `run-cell`, `collect` and `export`: arguments into
//! `fruix_matrix` calls, then the plan, the live view, the table and the
//! exit status.

use std::sync::Arc;

use fruix_core::at_exit::AtExit;
use fruix_core::escape;
use fruix_core::executor::Registry;
use fruix_matrix::expand::Cell;
use fruix_matrix::report::{diffoscope_installed, table, DIFFOSCOPE_MISSING};
use fruix_matrix::runner::CellStatus;
use fruix_matrix::split::CollectSettings;
use fruix_matrix::{create_report_dir, Finished, MatrixPlan, Outcome, ReportDirUse, RunSettings};
use fruix_promote::Store;
use tokio_util::sync::CancellationToken;

use crate::args::{
    DiffTool, ExportFormat, MatrixCollectArgs, MatrixExportArgs, MatrixPlanArgs, MatrixRunArgs,
    MatrixRunCellArgs, MatrixRunWith, MatrixShowArgs,
};
use crate::defaults;
use crate::display::{json_path, print_json, to_json, Mode};
use crate::exit::{from_matrix, CliResult, Status};
use crate::live::Live;

pub fn plan(args: MatrixPlanArgs, registry: &Registry) -> CliResult {
    let plan = MatrixPlan::load(&args.file, args.machines.as_deref(), None, registry)
        .map_err(from_matrix)?;
    let groups = plan.agreement_groups();
    if args.json {
        let strategy = &plan.file.strategy;
        print_json(&PlanReport {
            cells: plan
                .cells
                .iter()
                .enumerate()
                .map(|(i, cell)| PlannedCell {
                    cell,
                    runs_on: plan.placement_text(i),
                })
                .collect(),
            must_agree: groups
                .iter()
                .map(|g| g.iter().map(|i| plan.cells[*i].id.as_str()).collect())
                .collect(),
            max_parallel: strategy.max_parallel,
            fail_fast: strategy.fail_fast,
            retries: strategy.retries,
            jobs: plan.file.build.jobs,
        })?;
        return Ok(Status::Success);
    }
    let width = plan.cells.iter().map(|c| c.id.len()).max().unwrap_or(0);
    // Each value escaped: a machines file's names may hold what the matrix
    // file may not (a format character, say).
    for (i, c) in plan.cells.iter().enumerate() {
        let flags = plan.build_options(i).policy.make_flags.join(" ");
        println!(
            "{:width$}  {} {} {} [{}] on {}",
            c.id,
            escape::text(&c.executor),
            escape::text(&c.kernconf),
            escape::text(&c.target_arch),
            escape::text(&flags),
            escape::text(&plan.placement_text(i))
        );
    }
    for g in &groups {
        let ids: Vec<&str> = g.iter().map(|i| plan.cells[*i].id.as_str()).collect();
        println!("must agree: {}", ids.join(", "));
    }
    println!(
        "{} cell{}; max-parallel {}; fail-fast {}; retries {}; jobs {}",
        plan.cells.len(),
        if plan.cells.len() == 1 { "" } else { "s" },
        plan.file
            .strategy
            .max_parallel
            .map_or("unlimited".to_string(), |m| m.to_string()),
        plan.file.strategy.fail_fast,
        plan.file.strategy.retries,
        plan.file.build.jobs.map_or_else(
            || "the CPUs of each machine that builds".to_string(),
            |j| j.to_string()
        )
    );
    Ok(Status::Success)
}

/// What `matrix plan --json` prints: the cells, each with where it may
/// run, the groups of cell ids that must agree, the strategy, and the
/// file's `jobs` (`null`: the CPUs of each machine that builds).
#[derive(serde::Serialize)]
struct PlanReport<'a> {
    cells: Vec<PlannedCell<'a>>,
    must_agree: Vec<Vec<&'a str>>,
    max_parallel: Option<u32>,
    fail_fast: bool,
    retries: u32,
    jobs: Option<u32>,
}

/// A cell of [`PlanReport`]: its fields, and `runs_on`.
#[derive(serde::Serialize)]
struct PlannedCell<'a> {
    #[serde(flatten)]
    cell: &'a Cell,
    runs_on: String,
}

pub async fn run(args: MatrixRunArgs, registry: Registry) -> CliResult {
    let plan = MatrixPlan::load(
        &args.file,
        args.with.machines.as_deref(),
        args.max_parallel,
        &registry,
    )
    .map_err(from_matrix)?;
    let diffoscope = args.diff == Some(DiffTool::Diffoscope);
    if diffoscope && !diffoscope_installed() {
        eprintln!("fruix: warning: {DIFFOSCOPE_MISSING}");
    }
    let report_dir = (args.report_dir.as_deref(), ReportDirUse::Whole);
    let mut s = Session::start(&args.with, report_dir, &args.show, registry)?;
    s.settings.diffoscope = diffoscope;
    s.settings.time_limit = args.time_limit;
    let finished = fruix_matrix::run(Arc::new(plan), s.settings, s.live, s.cancel)
        .await
        .map_err(from_matrix)?;
    drop(s.at_exit);
    print_finished(&finished, args.json)
}

/// What `run` and `run-cell` set up before cells run: the store, the
/// report directory, Ctrl-C and SIGTERM, and the live view.
struct Session {
    settings: RunSettings,
    live: Arc<Live>,
    cancel: CancellationToken,
    /// The report directory, named by a fast exit (a second Ctrl-C) until
    /// the run has written its report.
    at_exit: AtExit,
}

impl Session {
    /// Sets up a run with `with`, into `report_dir` used as it says,
    /// without diffoscope or a time limit.
    fn start(
        with: &MatrixRunWith,
        (report_dir, using): (Option<&std::path::Path>, ReportDirUse),
        show: &MatrixShowArgs,
        registry: Registry,
    ) -> Result<Session, crate::exit::CliError> {
        let mode = Mode::unless_quiet(show.quiet);
        let (store, state) = (&with.store, &with.state);
        defaults::announce(mode, Some(&store.store), Some(&state.state_dir));
        // Before the store is opened: a wait for its repair gives up at
        // the first signal.
        let cancel = CancellationToken::new();
        crate::signals::watch_signals(cancel.clone())?;
        // A store made here is removed again if the report directory
        // cannot be made.
        let store = Store::open_tentatively(&store.store)
            .map_err(crate::exit::from_promote_saying("no cell was run"))?;
        let report_dir =
            create_report_dir(report_dir, &state.state_dir, using).map_err(from_matrix)?;
        let at_exit = AtExit::left("the run's report directory, unfinished", report_dir.path());
        let store = Arc::new(store.keep());
        let live = Arc::new(Live::new(mode, show.verbose));
        Live::keep_saying_still_running(&live);
        tokio::spawn({
            let (live, cancel) = (live.clone(), cancel.clone());
            async move {
                cancel.cancelled().await;
                live.cancelling();
            }
        });
        Ok(Session {
            settings: RunSettings {
                registry,
                store,
                state_dir: state.state_dir.clone(),
                report_dir: Arc::new(report_dir),
                diffoscope: false,
                time_limit: None,
            },
            live,
            cancel,
            at_exit,
        })
    }
}

/// Prints a whole report (the table, or `--json`), and its warnings on
/// stderr; the status it ends with.
fn print_finished(finished: &Finished, json: bool) -> CliResult {
    for warning in &finished.warnings {
        eprintln!("fruix: warning: {warning}");
    }
    if json {
        let mut report = to_json(&finished.report)?;
        report["report_json"] = json_path(&finished.report_json);
        report["junit_xml"] = json_path(&finished.junit_xml);
        println!("{report}");
    } else {
        print!("{}", table(&finished.report));
        println!(
            "report={}\njunit={}",
            escape::path(&finished.report_json),
            escape::path(&finished.junit_xml)
        );
    }
    Ok(match finished.report.outcome() {
        Outcome::Passed => Status::Success,
        Outcome::Cancelled => Status::Cancelled,
        Outcome::CellsFailed => Status::MatrixFailure,
        Outcome::Diverged => Status::Divergence,
    })
}

pub async fn run_cell(args: MatrixRunCellArgs, registry: Registry) -> CliResult {
    let plan = MatrixPlan::load_cell(
        &args.file,
        args.with.machines.as_deref(),
        &registry,
        &args.cell,
    )
    .map_err(from_matrix)?;
    let report_dir = (args.report_dir.as_deref(), ReportDirUse::Shared);
    let s = Session::start(&args.with, report_dir, &args.show, registry)?;
    let finished =
        fruix_matrix::split::run_cell(plan, s.settings, args.pipeline_run, s.live, s.cancel)
            .await
            .map_err(from_matrix)?;
    drop(s.at_exit);
    let cell = &finished.report.cell;
    if args.json {
        let mut report = to_json(&finished.report)?;
        report["cell_report"] = json_path(&finished.path);
        println!("{report}");
    } else {
        print!("{}", table::cell_error(cell));
        println!(
            "cell={}\nstatus={}\ncell_report={}",
            cell.id,
            cell.status.as_str(),
            escape::path(&finished.path)
        );
    }
    // The cell's status: a result refused when validated or promoted is a
    // build failure there (retrying will not help), where a build exits 4.
    Ok(match cell.status {
        CellStatus::Passed => Status::Success,
        CellStatus::BuildFailure => Status::BuildFailure,
        CellStatus::SystemFailure => Status::SystemFailure,
        CellStatus::Cancelled => Status::Cancelled,
        CellStatus::Missing => Status::MatrixFailure,
    })
}

pub fn collect(args: MatrixCollectArgs) -> CliResult {
    let diffoscope = args.diff == Some(DiffTool::Diffoscope);
    if diffoscope && !diffoscope_installed() {
        eprintln!("fruix: warning: {DIFFOSCOPE_MISSING}");
    }
    let settings = CollectSettings {
        reports: args.reports,
        from: args.from,
        store: args.store.map(|s| std::path::absolute(&s).unwrap_or(s)),
        // Made once the matrix file and the reports are read.
        report_dir: args.report_dir,
        state_dir: args.state.state_dir,
        diffoscope,
        pipeline_run: args.pipeline_run,
    };
    let finished = fruix_matrix::split::collect(&args.file, settings).map_err(from_matrix)?;
    print_finished(&finished, args.json)
}

pub fn export(args: MatrixExportArgs) -> CliResult {
    use fruix_matrix::export::{check_executors, export, ExportOptions, Format};
    let format = match args.format {
        ExportFormat::GithubActions => Format::GithubActions,
        ExportFormat::GitlabCi => Format::GitlabCi,
        ExportFormat::Buildbot => Format::Buildbot,
    };
    let options = ExportOptions {
        fruix: args.fruix,
        run_cell_args: args.run_cell_arg,
        collect_args: args.collect_arg,
    };
    // This host may not be where the cells run, but a key no runner's
    // executor takes is refused here, and an executor this fruix does not
    // know is warned about: the runners must know it (an executors file).
    let file = fruix_matrix::file::MatrixFile::read(&args.file).map_err(from_matrix)?;
    let registry =
        Registry::compiled().map_err(|e| crate::exit::CliError::new(Status::Usage, e))?;
    for unknown in check_executors(&file, &registry).map_err(from_matrix)? {
        eprintln!(
            "fruix: warning: {unknown}; unless the runners' fruix knows it (from an executors file), its cells' jobs will be refused"
        );
    }
    let text = export(&args.file, format, &options).map_err(from_matrix)?;
    match args.output.as_deref() {
        Some(path) if path.as_os_str() != "-" => write_pipeline(path, &text)?,
        _ => print!("{text}"),
    }
    Ok(Status::Success)
}

/// Writes pipeline `text` to `path` atomically: a temporary renamed over
/// its name. What is there already is replaced only when it is a regular
/// file, or a symlink to one (the link itself is replaced, never written
/// through); anything else (a device, a FIFO, a directory, a symlink to
/// one of those or to nothing) is refused (usage, 2) and left alone.
fn write_pipeline(path: &std::path::Path, text: &str) -> Result<(), crate::exit::CliError> {
    use rustix::fs::{statat, AtFlags, FileType};
    use std::os::fd::AsFd;
    let refuse = |what: &str| {
        crate::exit::CliError::new(
            Status::Usage,
            anyhow::anyhow!(
                "refusing to write the pipeline to {}: {what}, which fruix replaces only when it is a regular file; give a file's path, or - for standard output",
                escape::path(path)
            ),
        )
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path.file_name().ok_or_else(|| refuse("it names no file"))?;
    let dir_fd = std::fs::File::open(dir)
        .map_err(|e| crate::exit::output_file("open the directory of", path, e, ""))?;
    let kind =
        |flags| statat(dir_fd.as_fd(), name, flags).map(|st| FileType::from_raw_mode(st.st_mode));
    match kind(AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) | Ok(FileType::RegularFile) => {}
        Ok(FileType::Symlink) => {
            match kind(AtFlags::empty()) {
                Ok(FileType::RegularFile) if !through_procfs(path) => {}
                Ok(FileType::RegularFile) => return Err(refuse(
                    "it is a symlink into /proc (another process's open file, as /dev/stdout is)",
                )),
                Ok(_) => return Err(refuse("it is a symlink to something other than a file")),
                Err(e) => {
                    return Err(refuse(&format!(
                        "it is a symlink that cannot be followed ({e})"
                    )))
                }
            }
        }
        Ok(_) => return Err(refuse("it is not a regular file")),
        Err(e) => return Err(crate::exit::output_file("inspect", path, e.into(), "")),
    }
    fruix_core::fsutil::write_atomic_at(dir_fd.as_fd(), dir, name, |file| {
        std::io::Write::write_all(file, text.as_bytes())
    })
    .map_err(|e| from_matrix(e.into()))
}

/// Whether following the symlink at `path` leads through procfs (such as
/// `/dev/stdout`, a link to `/proc/self/fd/1`): what is there is an open
/// file of a process, and a rename over the link's name would replace a
/// system's link, never write to that file. Too many links is refused
/// alike.
fn through_procfs(path: &std::path::Path) -> bool {
    #[cfg(target_os = "linux")]
    let on_procfs = |dir: &std::path::Path| {
        rustix::fs::statfs(dir).is_ok_and(|fs| fs.f_type == rustix::fs::PROC_SUPER_MAGIC)
    };
    #[cfg(not(target_os = "linux"))]
    let on_procfs = |_: &std::path::Path| false;
    let mut hop = path.to_path_buf();
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&hop) else {
            return false;
        };
        let dir = hop.parent().unwrap_or(std::path::Path::new("/"));
        hop = dir.join(target);
        if hop.parent().is_some_and(on_procfs) {
            return true;
        }
    }
    true
}
