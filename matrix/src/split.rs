//! Matrices on other CI engines: [`run_cell`] runs one cell of a matrix, as
//! `matrix run` would, and writes its self-contained report
//! (`cell-ID.json`, a [`CellFile`]); [`collect`] merges the cell reports of
//! a matrix into the `report.json` and `junit.xml` a whole run writes,
//! agreement included.
//!
//! A cell report carries the digest of the matrix file it ran from
//! (`sha256:` of its bytes). [`collect`] refuses a report of another
//! matrix file, one that is not a cell report, and a cell reported twice;
//! what a report must say of its cell is checked in `check`
//! ([`CellReportProblem`] lists each refusal). Cell reports are untrusted
//! input: each is read bounded (at most
//! [`fruix_core::fsutil::MAX_METADATA_BYTES`]), never through a symlink
//! (below `--from` either: a symlink named like a cell report is refused,
//! and one to a directory is named in the error of every cell left
//! `missing`), and strictly (unknown fields are refused). With no report
//! at all there is nothing to collect, which is refused too. A cell
//! without a report is reported as `missing`, never as passed.
//!
//! A cell report may also name the CI pipeline run its job belonged to
//! (`run-cell --pipeline-run ID`): `collect --pipeline-run ID` then takes
//! only that run's reports, so that one an earlier run left in a reused
//! workspace never stands for this run's (see `pipeline_run`), and its
//! `report.json` names the run it collected ([`Report::pipeline_run`]).
//!
//! Logs travel beside their report: `DIR/cell-ID.json` and
//! `DIR/logs/ID.log`, as `run-cell --report-dir DIR` writes them. Collect
//! copies each log it finds there into its own report directory.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use fruix_core::dir::{OpenDir, TreeKind};
use fruix_core::escape;
use fruix_core::fsutil::{write_atomic, write_atomic_at};
use fruix_core::manifest::open_file_beneath;
use tokio_util::sync::CancellationToken;

use crate::cell::Observer;
use crate::expand::{cells, Cell};
use crate::file::MatrixFile;
use crate::plan::MatrixPlan;
use crate::report::{agreement, unix, CellReport, Report, SetAside};
use crate::report_dir::{create_report_dir, ReportDirUse};
use crate::run::{execute, Finished, RunSettings};
use crate::runner::CellStatus;
use crate::{Error, Result};

mod check;
mod pipeline_run;
mod store_check;

use check::{check_cell_file, read_cell_file};
pub use check::{CellReportProblem, MAX_UNIX_SECONDS};
use pipeline_run::Runs;
pub use pipeline_run::{PipelineRun, MAX_PIPELINE_RUN_LEN};
use store_check::check_against_store;

/// The `format` of a cell report.
pub const CELL_REPORT_FORMAT: &str = "fruix-matrix-cell";

/// The `format_version` of the cell reports this fruix writes and reads.
pub const CELL_REPORT_VERSION: u32 = 1;

/// How deep `collect --from DIR` looks for cell reports (CI engines put
/// each job's artifacts in a directory of its own).
pub const MAX_FROM_DEPTH: usize = 4;

/// A cell report: `cell-ID.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellFile {
    /// Always [`CELL_REPORT_FORMAT`].
    pub format: String,
    /// Always [`CELL_REPORT_VERSION`].
    pub format_version: u32,
    /// The matrix file, as the run named it (absolute).
    pub matrix: PathBuf,
    /// `sha256:HEX` of the matrix file's bytes.
    pub matrix_digest: String,
    /// The CI pipeline run the cell's job belonged to (`run-cell
    /// --pipeline-run`); absent without one, as in older reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<PipelineRun>,
    /// Ctrl-C (or SIGTERM) stopped the cell.
    pub cancelled: bool,
    /// Machines set aside while the cell ran.
    pub machines_set_aside: Vec<SetAside>,
    /// The cell, as `report.json` lists it.
    pub cell: CellReport,
}

/// The file name of cell `id`'s report.
pub fn cell_file_name(id: &str) -> String {
    format!("cell-{id}.json")
}

/// The file name of the copy of the machines file cell `id`'s attempts
/// read, beside its report ([`MatrixPlan::copy_machines`]): cells run
/// into one report directory do not share it.
pub fn machines_copy_name(id: &str) -> String {
    format!("cell-{id}.machines.scm")
}

/// A finished `run-cell`: the report, and where it was written.
#[derive(Debug, Clone)]
pub struct CellFinished {
    /// The cell report, as written.
    pub report: CellFile,
    /// Where it was written: `REPORT_DIR/cell-ID.json`.
    pub path: PathBuf,
}

/// Runs the one cell of `plan` (see [`MatrixPlan::load_cell`]) as a whole run
/// would (same executor setup, retries and log), and writes its report
/// `cell-ID.json` into the report directory, naming `pipeline_run`, the
/// CI pipeline run its job belongs to, when given.
pub async fn run_cell(
    plan: MatrixPlan,
    settings: RunSettings,
    pipeline_run: Option<PipelineRun>,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) -> Result<CellFinished> {
    let digest = plan.file.digest.clone();
    // Held (the report directory locked) until the cell report is written.
    let locked = settings.report_dir.clone();
    let matrix = std::path::absolute(&plan.file.path).unwrap_or(plan.file.path.clone());
    let copy = machines_copy_name(&plan.cells[0].id);
    let ran = execute(Arc::new(plan), settings, observer, cancel.clone(), &copy).await?;
    let cell = ran
        .cells
        .into_iter()
        .next()
        .expect("a plan of one cell reports one cell");
    let report = CellFile {
        format: CELL_REPORT_FORMAT.into(),
        format_version: CELL_REPORT_VERSION,
        matrix,
        matrix_digest: digest,
        pipeline_run,
        cancelled: cancel.is_cancelled(),
        machines_set_aside: ran.set_aside,
        cell,
    };
    let path = locked.path().join(cell_file_name(&report.cell.id));
    let text = serde_json::to_string_pretty(&report).expect("cell reports serialize") + "\n";
    let written = write_atomic(&path, text.as_bytes())
        .map(|()| (path, ()))
        .map_err(Error::from);
    let (path, ()) = crate::run::failed_log(ran.log_failure, written)?;
    drop(locked);
    Ok(CellFinished { report, path })
}

/// What [`collect`] merges.
pub struct CollectSettings {
    /// Cell reports named one by one.
    pub reports: Vec<PathBuf>,
    /// A directory searched for `cell-*.json` (at most [`MAX_FROM_DEPTH`]
    /// levels down; a symlink below it is never followed: one named like a
    /// cell report is refused, one to a directory named in the error of
    /// every cell left `missing`).
    pub from: Option<PathBuf>,
    /// The store holding the cells' objects, for the file-level diff of
    /// diverging artifacts. What a report says of an object directly in
    /// it is checked against the object (see `store_check`).
    pub store: Option<PathBuf>,
    /// Where `report.json`, `junit.xml` and the logs go: this directory,
    /// or a new `STATE_DIR/matrix/RUN_ID` when `None`. It is made only once
    /// the matrix file and the cell reports are read, so a refused collect
    /// makes none.
    pub report_dir: Option<PathBuf>,
    /// The state directory of the new report directory (`report_dir` `None`).
    pub state_dir: PathBuf,
    /// Run diffoscope on the first differing files of diverging artifacts
    /// (their objects must be in `store`), its output under
    /// `diffoscope/` in the report directory.
    pub diffoscope: bool,
    /// Collect only the reports of this CI pipeline run: a report of
    /// another run (or of none) is set aside, its cell `missing` unless
    /// this run reported it. Without it, every report must be of one run.
    /// The report names it ([`Report::pipeline_run`]).
    pub pipeline_run: Option<PipelineRun>,
}

/// Merges the cell reports of the matrix at `matrix` into its
/// `report.json` and `junit.xml`: cells in matrix order, a cell without a
/// report (of the pipeline run collected, when one is given) `missing`,
/// agreement checked as a whole run checks it.
pub fn collect(matrix: &Path, settings: CollectSettings) -> Result<Finished> {
    let file = MatrixFile::read(matrix)?;
    let expected = cells(&file)?;
    let digest = &file.digest;
    let Listing {
        reports: paths,
        unfollowed,
    } = to_collect(&settings)?;
    let mut runs = Runs::new(settings.pipeline_run.clone());
    let mut found: BTreeMap<usize, (PathBuf, CellFile)> = BTreeMap::new();
    for path in paths {
        let refused = |problem| Error::CellReport {
            path: path.clone(),
            problem,
        };
        let report = read_cell_file(&path).map_err(refused)?;
        if !runs.of_this_run(&path, &report).map_err(refused)? {
            continue;
        }
        check_cell_file(&report, digest, &expected, file.strategy.retries).map_err(refused)?;
        if let Some(store) = &settings.store {
            check_against_store(&report.cell, store).map_err(refused)?;
        }
        let index = expected
            .iter()
            .position(|c| c.id == report.cell.id)
            .expect("checked by check_cell_file");
        if let Some((other, _)) = found.get(&index) {
            return Err(Error::CellReport {
                path,
                problem: CellReportProblem::Duplicate {
                    cell: report.cell.id,
                    other: escape::path(other).to_string(),
                },
            });
        }
        found.insert(index, (path, report));
    }
    let locked = create_report_dir(
        settings.report_dir.as_deref(),
        &settings.state_dir,
        ReportDirUse::Shared,
    )?;
    let report_dir = locked.path();
    let logs = locked.logs();
    let mut warnings = Vec::new();
    let mut set_aside: Vec<SetAside> = Vec::new();
    let mut reports = Vec::new();
    for (i, cell) in expected.iter().enumerate() {
        let Some((path, report)) = found.remove(&i) else {
            reports.push(missing(cell, &runs, &unfollowed));
            continue;
        };
        for s in report.machines_set_aside {
            if !set_aside.iter().any(|x| x.machine == s.machine) {
                set_aside.push(s);
            }
        }
        let mut c = report.cell;
        c.log = match c.log {
            None => None,
            Some(_) => copy_log(&path, &c.id, logs, MAX_COPIED_LOG).unwrap_or_else(|why| {
                warnings.push(format!(
                    "{}: the log of cell {} is not copied: {why}",
                    escape::path(&path),
                    c.id
                ));
                None
            }),
        };
        reports.push(c);
    }
    let started = reports
        .iter()
        .filter_map(|c| c.started_at)
        .min_by(f64::total_cmp);
    let finished = reports
        .iter()
        .filter_map(|c| c.finished_at)
        .max_by(f64::total_cmp);
    let agreement = agreement(
        &crate::agreement::groups(&expected, &file.agree_across),
        &reports,
        settings.store.as_deref(),
        settings.diffoscope,
        report_dir,
    );
    let report = Report {
        matrix: std::path::absolute(&file.path).unwrap_or(file.path.clone()),
        started_at: started.unwrap_or_else(|| unix(SystemTime::now())),
        duration_s: match (started, finished) {
            (Some(s), Some(f)) => (f - s).max(0.0),
            _ => 0.0,
        },
        max_parallel: file.strategy.max_parallel,
        cancelled: false,
        time_limit_s: None,
        time_limit_reached: false,
        machines_file: None,
        pipeline_run: settings.pipeline_run,
        cells: reports,
        agreement,
        machines_set_aside: set_aside,
    };
    let (report_json, junit_xml) = report.write(report_dir)?;
    drop(locked);
    Ok(Finished {
        report,
        report_json,
        junit_xml,
        warnings,
    })
}

/// The cell reports to collect, and the symlinks to directories below
/// `--from`, which are not followed.
#[derive(Debug, Default)]
struct Listing {
    reports: Vec<PathBuf>,
    unfollowed: Vec<PathBuf>,
}

/// The cell reports of `settings`: those named, then those found below
/// `--from`, each file once (one named twice, or named and found below
/// `--from`, is one report). None is nothing to collect, refused as the
/// caller's mistake before anything is written.
fn to_collect(settings: &CollectSettings) -> Result<Listing> {
    let mut listing = Listing {
        reports: settings.reports.clone(),
        ..Listing::default()
    };
    if let Some(dir) = &settings.from {
        // What --from names is a missing input, not a failure to read.
        if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Err(Error::InvalidOption {
                option: "--from",
                message: format!(
                    "{} is not a directory; give the directory the cell reports were unpacked into",
                    escape::path(dir)
                ),
            });
        }
        find_cell_reports(dir, 0, &mut listing)?;
    }
    if listing.reports.is_empty() {
        return Err(match &settings.from {
            Some(dir) => Error::InvalidOption {
                option: "--from",
                message: format!(
                    "{}: no cell report (cell-*.json) found below it, {MAX_FROM_DEPTH} levels down at most{}; no cell job passed its report on, or they were unpacked elsewhere",
                    escape::path(dir),
                    not_followed(&listing.unfollowed)
                ),
            },
            None => Error::InvalidOption {
                option: "REPORT or --from",
                message: "is needed: nothing to collect; give cell reports (cell-ID.json) or --from DIR, the directory they were unpacked into".into(),
            },
        });
    }
    // The same file is known by its device and inode, whatever the path
    // (a symlink is its own file, and refused when read).
    let mut seen = HashSet::new();
    listing
        .reports
        .retain(|p| match std::fs::symlink_metadata(p) {
            Ok(m) => seen.insert((m.dev(), m.ino())),
            Err(_) => true,
        });
    Ok(listing)
}

/// `; symlinks to directories below --from are not followed: LINKS`,
/// naming the first of `links` (escaped); nothing when there are none.
fn not_followed(links: &[PathBuf]) -> String {
    const SHOWN: usize = 3;
    if links.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = links
        .iter()
        .take(SHOWN)
        .map(|l| escape::path(l).to_string())
        .collect();
    let more = match links.len().saturating_sub(SHOWN) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "; symlinks to directories below --from are not followed: {}{more}",
        shown.join(", ")
    )
}

/// What a `run-cell` report directory (one holding a cell report) holds
/// beside its reports and is no place for one: its cells' logs (copied by
/// [`copy_log`]'s own rules) and its links to their result bundles (never
/// read).
const REPORT_DIR_OWN: [&str; 2] = ["logs", "results"];

/// Whether `name` is the name of a cell report.
fn is_cell_report_name(name: &str) -> bool {
    name.starts_with("cell-") && name.ends_with(".json")
}

/// Adds the cell reports below `dir` (`cell-*.json`, at most
/// [`MAX_FROM_DEPTH`] levels down) to `listing`, sorted. Nothing is
/// followed: an entry named like a cell report is listed whatever it is,
/// so that reading it refuses a symlink (or a FIFO) as it refuses one
/// named on the command line; a symlink to a directory that would be
/// searched is listed as not followed (but a report directory's
/// [`REPORT_DIR_OWN`] entries, which are not searched).
fn find_cell_reports(dir: &Path, depth: usize, listing: &mut Listing) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| fruix_core::Error::io("read", dir, e))?;
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    let name = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().into_owned();
    let report_dir = entries.iter().any(|e| is_cell_report_name(&name(e)));
    for e in entries {
        let Ok(kind) = e.file_type() else { continue };
        let (name, path) = (name(&e), e.path());
        if report_dir && REPORT_DIR_OWN.contains(&name.as_str()) {
            continue;
        }
        if kind.is_dir() {
            if depth < MAX_FROM_DEPTH {
                find_cell_reports(&path, depth + 1, listing)?;
            }
        } else if is_cell_report_name(&name) {
            listing.reports.push(path);
        } else if kind.is_symlink() && depth < MAX_FROM_DEPTH && path.is_dir() {
            listing.unfollowed.push(path);
        }
    }
    Ok(())
}

/// The most of a cell's log that `collect` copies: a longer log keeps its
/// last `MAX_COPIED_LOG` bytes (where a failure shows), after a line
/// saying how much was left out.
pub const MAX_COPIED_LOG: u64 = 256 << 20;

/// Copies the log of cell `id` that travels beside its report
/// (`DIR/logs/ID.log`) into the open directory `logs` (the report
/// directory's, held since the collect took its lock: swapping it for a
/// symlink meanwhile sends nothing elsewhere), at most `max` bytes of it
/// (its tail): its new path, or `None` when there is none (no
/// `logs/ID.log`). Below `DIR`, nothing is followed: `logs` and the log are
/// opened relative to their parent's descriptor with `O_NOFOLLOW`, and the
/// log's type is checked on its descriptor. A log that is there but is not
/// copied (a symlink, a FIFO or a device is no log; a copy that fails
/// leaves nothing behind) is an error saying why, its path escaped.
fn copy_log(report: &Path, id: &str, logs: &OpenDir, max: u64) -> Result<Option<PathBuf>, String> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let dir = report.parent().unwrap_or(Path::new("."));
    let name = format!("{id}.log");
    let relative = format!("logs/{name}");
    let opened = OpenDir::open(dir, TreeKind::READ)
        .map(std::os::fd::OwnedFd::from)
        .and_then(|top| open_file_beneath(&top, dir, relative.as_bytes()));
    let mut file = match opened {
        Ok(file) => file,
        Err(fruix_core::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None)
        }
        Err(fruix_core::Error::Io { source, path, .. })
            if source.raw_os_error() == Some(libc::ELOOP) =>
        {
            return Err(format!(
                "{} is a symlink, which is never followed",
                escape::path(&path)
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    let target = logs.child(name.as_ref());
    // The cell ran into the report directory collect writes to: its log
    // is already there.
    if dir.join("logs").join(&name) == target {
        return Ok(Some(target));
    }
    let cannot =
        |e: &dyn std::fmt::Display| format!("cannot copy it to {}: {e}", escape::path(&target));
    let metadata = file.metadata().map_err(|e| cannot(&e))?;
    let left_out = metadata.len().saturating_sub(max);
    // Written beside and renamed over: a `logs/ID.log` already there (a
    // symlink among unpacked artifacts, say) is replaced, never written
    // through; a failed copy leaves nothing.
    write_atomic_at(logs.as_fd(), logs.path(), name.as_ref(), |out| {
        if left_out > 0 {
            file.seek(SeekFrom::Start(left_out))?;
            writeln!(
                out,
                "[fruix matrix collect: the first {left_out} bytes of this log are left out]"
            )?;
        }
        std::io::copy(&mut (&mut file).take(max), out).map(drop)
    })
    .map_err(|e| cannot(&e))?;
    Ok(Some(target))
}

/// The report of a cell no report (of the pipeline run collected) was
/// collected for; `runs` knows the reports of other runs set aside, and
/// `unfollowed` are the symlinks to directories below `--from`, where it
/// may be.
fn missing(cell: &Cell, runs: &Runs, unfollowed: &[PathBuf]) -> CellReport {
    let (of_run, set_aside) = runs.missing_note(&cell.id);
    let error = format!(
        "no cell report {of_run}was collected for this cell ({}){set_aside}{}",
        cell_file_name(&cell.id),
        not_followed(unfollowed)
    );
    CellReport::unstarted(cell, CellStatus::Missing, Some(error))
}

#[cfg(test)]
mod tests {
    use super::check::tests::{matrix, read_cell_report, written};
    use super::*;

    /// Regression: collect copied logs into `REPORT/logs` by path, so a
    /// `logs` swapped for a symlink while it ran had them written
    /// elsewhere. They go into the `logs/` it opened.
    #[test]
    fn a_log_is_copied_into_the_logs_directory_held_not_one_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("cells");
        std::fs::create_dir_all(from.join("logs")).unwrap();
        std::fs::write(from.join("logs/c1.log"), "the log\n").unwrap();
        let (logs, elsewhere) = (dir.path().join("logs"), dir.path().join("elsewhere"));
        std::fs::create_dir(&logs).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        let held = OpenDir::open(&logs, TreeKind::named("logs")).unwrap();
        std::fs::rename(&logs, dir.path().join("logs.old")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &logs).unwrap();
        copy_log(&from.join("cell-c1.json"), "c1", &held, 1 << 20).unwrap();
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        let copied = dir.path().join("logs.old/c1.log");
        assert_eq!(std::fs::read_to_string(copied).unwrap(), "the log\n");
    }

    #[test]
    fn a_copied_log_keeps_its_tail_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("cells"), dir.path().join("report"));
        std::fs::create_dir_all(from.join("logs")).unwrap();
        std::fs::create_dir(&to).unwrap();
        let to = OpenDir::open(&to, TreeKind::named("logs")).unwrap();
        let report = from.join("cell-c1.json");
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(from.join("logs/c1.log"), &log).unwrap();

        assert_eq!(copy_log(&report, "c0", &to, 16), Ok(None), "no log");
        let whole = copy_log(&report, "c1", &to, log.len() as u64)
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read_to_string(&whole).unwrap(), log);

        let cut = copy_log(&report, "c1", &to, 16).unwrap().unwrap();
        let left_out = log.len() - 16;
        assert_eq!(
            std::fs::read_to_string(&cut).unwrap(),
            format!(
                "[fruix matrix collect: the first {left_out} bytes of this log are left out]\n{}",
                &log[left_out..]
            )
        );

        // A log that is a symlink is not followed, and nothing is written:
        // the error says why.
        std::fs::remove_file(&cut).unwrap();
        std::fs::remove_file(from.join("logs/c1.log")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.join("logs/c1.log")).unwrap();
        assert_eq!(
            copy_log(&report, "c1", &to, 16),
            Err(format!(
                "{} is a symlink, which is never followed",
                from.join("logs/c1.log").display()
            ))
        );
        assert!(!cut.exists());

        // A symlink where the copy goes is replaced, not written through.
        std::fs::remove_file(from.join("logs/c1.log")).unwrap();
        std::fs::write(from.join("logs/c1.log"), &log).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, &cut).unwrap();
        assert_eq!(copy_log(&report, "c1", &to, 1 << 20), Ok(Some(cut.clone())));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&cut).unwrap(), log);

        // Regression: a `logs` beside the report that is a symlink was
        // followed, copying any file of the log's name into the report.
        let secret = dir.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("c2.log"), "SECRET").unwrap();
        let hostile = dir.path().join("hostile");
        std::fs::create_dir(&hostile).unwrap();
        std::os::unix::fs::symlink(&secret, hostile.join("logs")).unwrap();
        let refused = copy_log(&hostile.join("cell-c2.json"), "c2", &to, 1 << 20).unwrap_err();
        assert!(refused.contains("is a symlink"), "{refused}");
        assert!(!to.child("c2.log".as_ref()).exists());
        // A FIFO is no log, and is not waited on.
        std::fs::remove_file(hostile.join("logs")).unwrap();
        std::fs::create_dir(hostile.join("logs")).unwrap();
        fruix_core::testing::mkfifo(&hostile.join("logs/c2.log")).unwrap();
        let refused = copy_log(&hostile.join("cell-c2.json"), "c2", &to, 1 << 20).unwrap_err();
        assert!(refused.ends_with("is not a regular file"), "{refused}");
        assert!(!to.child("c2.log".as_ref()).exists());
    }

    /// Regression: a log beside its cell report that is a symlink was not
    /// copied, the cell's `log` became null, and nothing said why.
    #[test]
    fn a_log_that_is_not_copied_is_warned_about() {
        let (dir, matrix, digest, cells) = local_and_mini_sh();
        let d = dir.path();
        let job = d.join("job\u{1b}[31m");
        std::fs::create_dir_all(job.join("logs")).unwrap();
        let report = written(&job, &cells[0], |r| {
            r.matrix_digest = digest.clone();
            r.cell.log = Some("/runner/logs/local.log".into());
        });
        std::os::unix::fs::symlink("/etc/passwd", job.join("logs/local.log")).unwrap();
        let finished = collect(&matrix, collecting(d, vec![report], None)).unwrap();
        assert_eq!(finished.report.cells[0].log, None);
        let shown = escape::path(&job).to_string();
        assert!(shown.ends_with("job\\033[31m"), "{shown}");
        assert_eq!(
            finished.warnings,
            [format!(
                "{shown}/cell-local.json: the log of cell local is not copied: {shown}/logs/local.log is a symlink, which is never followed"
            )]
        );
        assert!(!d.join("report/logs/local.log").exists());
    }

    #[test]
    fn a_report_directory_whose_logs_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (report, elsewhere) = (dir.path().join("report"), dir.path().join("elsewhere"));
        std::fs::create_dir_all(&report).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, report.join("logs")).unwrap();
        let e = create_report_dir(Some(&report), dir.path(), ReportDirUse::Shared).unwrap_err();
        assert!(
            matches!(&e, Error::Core(fruix_core::Error::UnsafePath { .. })),
            "{e:?}"
        );
    }

    /// Every path below `dir`, sorted.
    fn tree(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        for sub in out.clone().iter().filter(|p| p.is_dir()) {
            out.extend(tree(sub));
        }
        out.sort();
        out
    }

    #[test]
    fn a_cell_report_with_an_artifact_name_that_is_a_path_is_refused() {
        let (dir, matrix, digest, cells) = local_and_mini_sh();
        let d = dir.path();
        std::fs::create_dir(d.join("report")).unwrap();
        let evil = d.join("x/evil").display().to_string();
        for name in [evil.as_str(), "../evil", "a/b", "..", ".x", ""] {
            let artifact = |n| crate::runner::PromotedArtifact {
                store_path: d.join(format!("store/o{n}")),
                tree_signature: format!("sha256:{n}"),
            };
            let paths: Vec<PathBuf> = (0..2)
                .map(|n| {
                    written(d, &cells[n], |r| {
                        r.matrix_digest = digest.clone();
                        r.cell.artifacts.insert(name.to_string(), artifact(n));
                    })
                })
                .collect();
            let problem = read_cell_report(&paths[0], &digest, &cells).unwrap_err();
            let CellReportProblem::InvalidArtifact { cell, message } = &problem else {
                panic!("{name:?}: {problem:?}");
            };
            assert_eq!(cell, "local");
            assert!(
                message.contains(&escape::quoted(name).to_string()),
                "{message}"
            );

            let before = tree(d);
            let settings = CollectSettings {
                store: Some(d.join("store")),
                diffoscope: true,
                ..collecting(d, paths, None)
            };
            let e = collect(&matrix, settings).unwrap_err();
            assert!(matches!(e, Error::CellReport { .. }), "{e:?}");
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage, "exit 2");
            assert!(e.to_string().contains("cell-local.json"), "{e}");
            assert_eq!(tree(d), before, "{name:?}: nothing is written");
        }
    }

    /// Regression: below `--from`, a symlink named like a cell report was
    /// skipped without a word (the cell was then reported `missing`),
    /// where one named on the command line is refused.
    #[test]
    fn from_finds_cell_reports_in_job_directories_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["a/b", "c", "1/2/3/4/5/6"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
            std::fs::write(d.join(sub).join("cell-x.json"), "{}").unwrap();
        }
        std::fs::write(d.join("c/other.json"), "{}").unwrap();
        // Links to what is no cell report, or below where --from looks,
        // are none of collect's business.
        std::os::unix::fs::symlink(d.join("c/other.json"), d.join("c/notes")).unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("1/2/3/4/deeper")).unwrap();
        // A report directory's links to its cells' result bundles, and its
        // logs, are its own, not searched.
        std::fs::create_dir(d.join("c/results")).unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("c/results/x")).unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("c/logs")).unwrap();
        // Elsewhere, a link to a directory is listed, never followed.
        std::os::unix::fs::symlink(d.join("a"), d.join("1/results")).unwrap();
        let relative = |found: &[PathBuf]| -> Vec<PathBuf> {
            let relative = |p: &PathBuf| p.strip_prefix(d).unwrap().to_path_buf();
            found.iter().map(relative).collect()
        };
        let mut listing = Listing::default();
        find_cell_reports(d, 0, &mut listing).unwrap();
        assert_eq!(
            relative(&listing.reports),
            [
                PathBuf::from("a/b/cell-x.json"),
                PathBuf::from("c/cell-x.json")
            ]
        );
        assert_eq!(relative(&listing.unfollowed), [PathBuf::from("1/results")]);

        // A symlink named like a cell report is listed, and reading it
        // refuses it, as a symlink named on the command line is.
        let cells = matrix();
        let report = written(d, &cells[0], |_| {});
        std::os::unix::fs::symlink(&report, d.join("a/cell-y.json")).unwrap();
        let mut listing = Listing::default();
        find_cell_reports(d, 0, &mut listing).unwrap();
        let link = &listing.reports[1];
        assert_eq!(link, &d.join("a/cell-y.json"));
        let problem = read_cell_report(link, "sha256:aa", &cells).unwrap_err();
        assert!(
            matches!(&problem, CellReportProblem::Corrupt(m) if m.contains("is a symlink")),
            "{problem:?}"
        );
    }

    /// A job directory below `--from` that is a symlink is not followed,
    /// and says so: in its cell's `missing` error, or as the reason
    /// nothing was found.
    #[test]
    fn a_symlinked_job_directory_is_named_not_followed() {
        let (dir, matrix, digest, cells) = local_and_mini_sh();
        let d = dir.path();
        for (n, job) in ["jobs/local", "elsewhere/mini-sh"].iter().enumerate() {
            std::fs::create_dir_all(d.join(job)).unwrap();
            written(&d.join(job), &cells[n], |r| {
                r.matrix_digest = digest.clone()
            });
        }
        let link = d.join("jobs/mini-sh");
        std::os::unix::fs::symlink(d.join("elsewhere/mini-sh"), &link).unwrap();
        let settings = collecting(d, Vec::new(), Some(d.join("jobs")));
        let finished = collect(&matrix, settings).unwrap();
        let missing = &finished.report.cells[1];
        assert_eq!(missing.status, CellStatus::Missing);
        assert_eq!(
            missing.error.as_deref(),
            Some(
                format!(
                    "no cell report was collected for this cell (cell-mini-sh.json); symlinks to directories below --from are not followed: {}",
                    link.display()
                )
                .as_str()
            )
        );

        std::fs::remove_dir_all(d.join("jobs/local")).unwrap();
        let settings = collecting(d, Vec::new(), Some(d.join("jobs")));
        let e = collect(&matrix, settings).unwrap_err();
        assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage, "exit 2");
        let says = format!("not followed: {}", link.display());
        assert!(e.to_string().contains(&says), "{e}");
    }

    /// A temporary directory holding `matrix.scm` of cells `local` and
    /// `mini-sh`: the directory, and the matrix's path, digest and cells.
    fn local_and_mini_sh() -> (tempfile::TempDir, PathBuf, String, Vec<Cell>) {
        let dir = tempfile::tempdir().unwrap();
        let matrix = dir.path().join("matrix.scm");
        let text =
            r#"(fruix-matrix (format-version 1) (source "s") (axes (executor "local" "mini-sh")))"#;
        std::fs::write(&matrix, text).unwrap();
        let file = MatrixFile::read(&matrix).unwrap();
        (dir, matrix, file.digest.clone(), cells(&file).unwrap())
    }

    /// What [`collect`] of `reports` and `from` gets: the report directory
    /// `DIR/report`, the state directory `DIR/state`.
    fn collecting(d: &Path, reports: Vec<PathBuf>, from: Option<PathBuf>) -> CollectSettings {
        CollectSettings {
            reports,
            from,
            store: None,
            report_dir: Some(d.join("report")),
            state_dir: d.join("state"),
            diffoscope: false,
            pipeline_run: None,
        }
    }

    /// Regression: with no cell report to collect (none named and no
    /// `--from`, or a `--from` holding none), `collect` reported every cell
    /// `missing` (exit 5), into a new directory of the state directory
    /// when no report directory was given.
    #[test]
    fn nothing_to_collect_is_refused_before_anything_is_written() {
        let (dir, matrix, ..) = local_and_mini_sh();
        let d = dir.path();
        std::fs::create_dir(d.join("empty")).unwrap();
        let before = tree(d);
        for from in [None, Some(d.join("empty"))] {
            let mut settings = collecting(d, Vec::new(), from.clone());
            settings.report_dir = None;
            let e = collect(&matrix, settings).unwrap_err();
            assert!(matches!(e, Error::InvalidOption { .. }), "{e:?}");
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage, "exit 2");
            let says = match from {
                None => "give cell reports (cell-ID.json) or --from DIR".to_string(),
                Some(empty) => format!("{}: no cell report (cell-*.json) found", empty.display()),
            };
            assert!(e.to_string().contains(&says), "{e}");
            assert_eq!(tree(d), before, "nothing is written");
        }
    }

    /// A cell report's pipeline run is untrusted: one that is no pipeline
    /// run id refuses the report (exit 2), however collect was asked; what
    /// it said is not shown raw.
    #[test]
    fn a_cell_report_naming_no_pipeline_run_id_is_refused() {
        let (dir, matrix, digest, cells) = local_and_mini_sh();
        let d = dir.path();
        let path = written(d, &cells[0], |r| r.matrix_digest = digest.clone());
        let text = std::fs::read_to_string(&path).unwrap();
        let bad = text.replacen('{', "{\"pipeline_run\": \"a\\u001b[31mb\",", 1);
        std::fs::write(&path, bad).unwrap();
        for wanted in [None, Some(PipelineRun::new("7").unwrap())] {
            let settings = CollectSettings {
                pipeline_run: wanted,
                ..collecting(d, vec![path.clone()], None)
            };
            let e = collect(&matrix, settings).unwrap_err();
            assert!(
                matches!(&e, Error::CellReport { problem: CellReportProblem::Corrupt(m), .. }
                    if m.contains("is no pipeline run id")),
                "{e:?}"
            );
            assert!(!e.to_string().contains('\u{1b}'), "{e}");
            assert!(!d.join("report").exists());
        }
    }

    /// Regression: the report of `collect --pipeline-run ID` did not say
    /// which pipeline run it collected; it is `null` without one.
    #[test]
    fn the_report_says_which_pipeline_run_was_collected() {
        let (dir, matrix, digest, cells) = local_and_mini_sh();
        let d = dir.path();
        let run = PipelineRun::new("4242-1").unwrap();
        let path = written(d, &cells[0], |r| {
            r.matrix_digest = digest.clone();
            r.pipeline_run = Some(run.clone());
        });
        let settings = CollectSettings {
            pipeline_run: Some(run.clone()),
            ..collecting(d, vec![path.clone()], None)
        };
        let finished = collect(&matrix, settings).unwrap();
        assert_eq!(finished.report.pipeline_run, Some(run));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&finished.report_json).unwrap()).unwrap();
        assert_eq!(json["pipeline_run"], "4242-1");
        assert_eq!(finished.report.cells[0].status, CellStatus::Passed);

        let (other, matrix, digest, cells) = local_and_mini_sh();
        let path = written(other.path(), &cells[0], |r| r.matrix_digest = digest);
        let finished = collect(&matrix, collecting(other.path(), vec![path], None)).unwrap();
        assert_eq!(finished.report.pipeline_run, None);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&finished.report_json).unwrap()).unwrap();
        assert_eq!(json.get("pipeline_run"), Some(&serde_json::Value::Null));
    }

    /// Regression: a cell report named and also found below `--from` was
    /// refused as reported twice, by itself.
    #[test]
    fn a_report_named_and_found_below_from_is_collected_once() {
        let (dir, matrix, digest, cells) = local_and_mini_sh();
        let d = dir.path();
        std::fs::create_dir_all(d.join("cells/job")).unwrap();
        let report = written(&d.join("cells/job"), &cells[0], |r| {
            r.matrix_digest = digest.clone();
        });
        let same = d.join("cells/job/../job/cell-local.json");
        let settings = collecting(d, vec![report.clone(), same], Some(d.join("cells")));
        let finished = collect(&matrix, settings).unwrap();
        let statuses: Vec<CellStatus> = finished.report.cells.iter().map(|c| c.status).collect();
        assert_eq!(statuses, [CellStatus::Passed, CellStatus::Missing]);

        // A copy is another report of the same cell.
        std::fs::create_dir(d.join("copy")).unwrap();
        std::fs::copy(&report, d.join("copy/cell-local.json")).unwrap();
        let settings = collecting(
            d,
            vec![d.join("copy/cell-local.json")],
            Some(d.join("cells")),
        );
        let e = collect(&matrix, settings).unwrap_err();
        assert!(
            matches!(&e, Error::CellReport { path, problem: CellReportProblem::Duplicate { other, .. } }
                if *path == report && *other == d.join("copy/cell-local.json").display().to_string()),
            "{e:?}"
        );
    }
}
