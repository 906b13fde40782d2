//! Arguments of `fruix matrix ...`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use fruix_matrix::split::PipelineRun;

use super::{directory, parse_limit, ExecutorsFiles, ProgressArg, StateDirArg, StoreArg};

#[derive(Debug, Subcommand)]
pub enum MatrixCommand {
    /// Print the cells of a matrix file, where each may run, and which must agree; runs nothing.
    Plan(MatrixPlanArgs),
    /// Run every cell concurrently, promote each passed cell, and check agreement.
    Run(Box<MatrixRunArgs>),
    /// Run one cell, as `matrix run` would, and write its report cell-ID.json (one CI job per cell).
    RunCell(Box<MatrixRunCellArgs>),
    /// Merge cell reports (from run-cell) into report.json and junit.xml, checking agreement.
    Collect(Box<MatrixCollectArgs>),
    /// Write the matrix as a CI pipeline: a run-cell job per cell, then a collect job.
    Export(MatrixExportArgs),
}

/// A CI engine `matrix export` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    GithubActions,
    GitlabCi,
    Buildbot,
}

#[derive(Debug, Args)]
pub struct MatrixExportArgs {
    /// The matrix file (fruix-matrix ...), as the jobs find it: relative to the repository's root.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The CI engine.
    #[arg(long, value_name = "ENGINE", value_enum)]
    pub format: ExportFormat,
    /// Write the pipeline to FILE instead of stdout (- is stdout): a temporary renamed over it, so a FILE there must be a regular file or a symlink to one (the link is replaced); anything else is refused.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The fruix program on the runners.
    #[arg(long, value_name = "PROGRAM", default_value = "fruix")]
    pub fruix: String,
    /// An argument every run-cell job gets (repeat it: --run-cell-arg=--store --run-cell-arg=/frx/store).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub run_cell_arg: Vec<String>,
    /// An argument the collect job gets (repeat it).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub collect_arg: Vec<String>,
}

/// What `matrix run` and `matrix run-cell` build with.
#[derive(Debug, Args)]
pub struct MatrixRunWith {
    #[command(flatten)]
    pub executors: ExecutorsFiles,
    #[command(flatten)]
    pub store: StoreArg,
    #[command(flatten)]
    pub state: StateDirArg,
    /// The machines file (default: the matrix file's machines-file).
    #[arg(long, value_name = "FILE")]
    pub machines: Option<PathBuf>,
}

/// What `matrix run` and `matrix run-cell` show while cells run.
#[derive(Debug, Args)]
pub struct MatrixShowArgs {
    /// Show nothing of the cells running (no live view; no start, stage, warning or end lines).
    /// Stdout is as without --quiet (run: the table, each failed cell's error and log, agreement
    /// lines, report= and junit=; run-cell: cell=, status=, cell_report=); stderr still has
    /// fruix's warnings, notices (fail-fast, time limit, Ctrl-C) and errors.
    #[arg(long, short, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Stream every build log line, as CELL| LINE.
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub progress: ProgressArg,
}

#[derive(Debug, Args)]
// `--quiet` as run-cell prints: MatrixShowArgs' help describes `run` too.
#[command(mut_arg("quiet", |quiet| quiet.long_help(None::<&str>).help("Show nothing of the cell running (no live view; no start, stage, warning or end lines). Stdout is as without --quiet: a failed cell's error and log (the lines ID: ERROR and log: PATH), then cell=, status= and cell_report=; stderr still has fruix's warnings, the Ctrl-C notice and errors")))]
pub struct MatrixRunCellArgs {
    /// The matrix file (fruix-matrix ...).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The cell to run (its id, as `fruix matrix plan` lists it).
    #[arg(long, value_name = "ID")]
    pub cell: String,
    #[command(flatten)]
    pub with: MatrixRunWith,
    /// Where to write cell-ID.json and the cell's log, logs/ID.log (default: STATE_DIR/matrix/RUN_ID).
    /// Other cells' files there are kept: it may be shared with their jobs. This cell's files from
    /// an earlier run there are removed first, its results/ID link (a garbage collector root)
    /// included, so none outlives a run that fails. Held locked, shared with other run-cell jobs and
    /// collect: one a `matrix run` uses is refused (exit 2).
    #[arg(long, value_name = "DIR", value_parser = directory())]
    pub report_dir: Option<PathBuf>,
    /// The CI pipeline run this cell's job belongs to (GitLab CI's $CI_PIPELINE_ID, say), recorded
    /// in cell-ID.json: collect --pipeline-run ID then takes this run's reports only. 1 to 128
    /// letters, digits, `.`, `_` or `-`, the first a letter or digit.
    #[arg(long, value_name = "ID")]
    pub pipeline_run: Option<PipelineRun>,
    #[command(flatten)]
    pub show: MatrixShowArgs,
    /// Print the cell report (with its path) as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MatrixCollectArgs {
    /// The matrix file (fruix-matrix ...) the cells ran from.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Cell reports (cell-ID.json) to merge.
    #[arg(value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Also merge every cell-*.json below DIR (4 levels down at most).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// The store holding the cells' objects (copied with `store copy`, or shared): diverging artifacts are then compared file by file.
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Where to write report.json, junit.xml and the cells' logs (default: STATE_DIR/matrix/RUN_ID).
    #[arg(long, value_name = "DIR", value_parser = directory())]
    pub report_dir: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateDirArg,
    /// Compare the first differing files of diverging artifacts with this tool (needs --store).
    #[arg(long, value_name = "TOOL", value_enum, requires = "store")]
    pub diff: Option<DiffTool>,
    /// Collect only the reports of this CI pipeline run (run-cell --pipeline-run ID): a report of
    /// another run, left in a reused workspace, is not this run's; its cell is missing unless this
    /// run reported it. Without it, every report must be of one run.
    #[arg(long, value_name = "ID")]
    pub pipeline_run: Option<PipelineRun>,
    /// Print the report (report.json's content, with the paths of
    /// report.json and junit.xml) as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MatrixPlanArgs {
    /// The matrix file (fruix-matrix ...).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub executors: ExecutorsFiles,
    /// The machines file (default: the matrix file's machines-file).
    #[arg(long, value_name = "FILE")]
    pub machines: Option<PathBuf>,
    /// Print the cells as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A tool that compares differing files in depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffTool {
    Diffoscope,
}

#[derive(Debug, Args)]
pub struct MatrixRunArgs {
    /// The matrix file (fruix-matrix ...).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub with: MatrixRunWith,
    /// Where to write report.json, junit.xml, the cell logs and the results/ links (default:
    /// STATE_DIR/matrix/RUN_ID). A directory already there may hold only what fruix writes in a
    /// report directory (an earlier run's report): the run first removes all of it, the results/
    /// links included (their garbage collector roots then keep nothing), never following a symlink.
    /// One holding anything else is refused (exit 2), untouched. The run holds it locked: one
    /// another fruix matrix command uses (a run, run-cell jobs, collect) is refused (exit 2).
    #[arg(long, value_name = "DIR", value_parser = directory())]
    pub report_dir: Option<PathBuf>,
    /// At most N cells at once, 1 or more (overrides the file's max-parallel).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallel: Option<u32>,
    /// Stop the run once it has taken this long (e.g. 5h): running cells are cancelled and
    /// cleaned up, waiting ones never start, and the report is still written (exit 5). Set it
    /// below your CI job's own limit, which would kill fruix before it cleans up.
    #[arg(long, value_name = "DURATION", value_parser = parse_limit)]
    pub time_limit: Option<std::time::Duration>,
    /// Compare the first differing files of diverging artifacts with this tool.
    #[arg(long, value_name = "TOOL", value_enum)]
    pub diff: Option<DiffTool>,
    #[command(flatten)]
    pub show: MatrixShowArgs,
    /// Print the report (report.json's content, with the paths of
    /// report.json and junit.xml) as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}
