//! Matrices on other CI engines: [`run_cell`] runs one cell of a matrix, as
//! `matrix run` would, and writes its self-contained report
//! (`cell-ID.json`, a [`CellFile`]); [`collect`] merges the cell reports of
//! a matrix into the `report.json` and `junit.xml` a whole run writes,
//! agreement included.
//!
//! A cell report carries the digest of the matrix file it ran from
//! (`sha256:` of its bytes): [`collect`] refuses a report of another
//! matrix file, a report that is not a cell report, a cell the matrix does
//! not have, a cell reported twice, a cell whose executor, kernconf,
//! target or make flag differ from the matrix's, a cell pinned to a
//! machine whose report names another machine (or an attempt on one), and
//! a cell listing an artifact whose name is not one promotion accepts
//! (artifact names become file names in the report directory), and a cell
//! giving a time no run gives (negative, or past the year 9999). Cell
//! reports are untrusted input: each is read bounded (at most
//! [`fruix_core::fsutil::MAX_METADATA_BYTES`]), never through a symlink,
//! and strictly (unknown fields are refused). A cell without a report is
//! reported as `missing`, never as passed.
//!
//! Logs travel beside their report: `DIR/cell-ID.json` and
//! `DIR/logs/ID.log`, as `run-cell --report-dir DIR` writes them. Collect
//! copies each log it finds there into its own report directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use fruix_core::dir::{OpenDir, TreeKind};
use fruix_core::escape;
use fruix_core::fsutil::{read_metadata_file, write_atomic, write_atomic_with};
use fruix_core::manifest::open_file_beneath;
use fruix_core::promotion::check_name;
use tokio_util::sync::CancellationToken;

use crate::cell::Observer;
use crate::expand::{cells, Cell};
use crate::file::MatrixFile;
use crate::plan::MatrixPlan;
use crate::report::{agreement, unix, CellReport, Report, SetAside};
use crate::run::{execute, Finished, RunSettings};
use crate::runner::CellStatus;
use crate::{Error, Result};

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
    /// Ctrl-C (or SIGTERM) stopped the cell.
    pub cancelled: bool,
    /// Machines set aside while the cell ran.
    pub machines_set_aside: Vec<SetAside>,
    /// The cell, as `report.json` lists it.
    pub cell: CellReport,
}

/// Why a cell report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CellReportProblem {
    /// Unreadable, too large, not a regular file, not JSON, or not a cell
    /// report of this format.
    #[error("not a readable fruix cell report: {0}")]
    Corrupt(String),
    /// Its matrix file digest is not the collected matrix file's.
    #[error("it is a cell of matrix file {matrix} ({found}), not of this one ({expected}); run-cell and collect must read the same matrix file")]
    OtherMatrix {
        /// The matrix file the report names (escaped, cut short).
        matrix: String,
        /// The digest (`sha256:HEX`) of the matrix file being collected.
        expected: String,
        /// The digest the report carries (escaped, cut short).
        found: String,
    },
    /// The matrix has no cell of its id (quoted).
    #[error("the matrix has no cell {0}")]
    UnknownCell(String),
    /// Another report was collected for the same cell.
    #[error("cell {cell} is also reported by {other}")]
    Duplicate {
        /// The cell's id (one of the matrix's).
        cell: String,
        /// The report collected for it first, its path escaped.
        other: String,
    },
    /// The cell differs from the matrix's cell of its id.
    #[error("its cell {cell} does not match the matrix's cell of that id: {field} differs")]
    Mismatch {
        /// The cell's id (one of the matrix's).
        cell: String,
        /// The first field that differs: `executor`, `kernconf`, `target-arch`,
        /// `make-flag`, or `machine` (a cell pinned to a machine whose report
        /// names another, or lists an attempt on another).
        field: &'static str,
    },
    /// A time of the cell (a duration, or a start or end) is no time a run
    /// gives: not a number, negative, or past [`MAX_UNIX_SECONDS`].
    #[error("its cell {cell} gives {value} as `{field}`, which is no time a run gives (seconds from 0 to {MAX_UNIX_SECONDS})")]
    BadTime {
        /// The cell's id (one of the matrix's).
        cell: String,
        /// The field: `duration_s`, `started_at`, `finished_at`, or an
        /// attempt's `attempts[N].started_at` or `.finished_at`.
        field: String,
        /// The value given, as Rust prints an `f64`.
        value: String,
    },
    /// The cell lists an artifact whose name no build gives (the message
    /// quotes it, escaped): artifact names end up in file names.
    #[error("its cell {cell} lists an invalid artifact: {message}")]
    InvalidArtifact {
        /// The cell's id (one of the matrix's).
        cell: String,
        /// Why the name is refused, with the name quoted and escaped.
        message: String,
    },
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

/// Runs the one cell of `plan` (see [`MatrixPlan::only`]) as a whole run
/// would (same executor setup, retries and log), and writes its report
/// `cell-ID.json` into the report directory.
pub async fn run_cell(
    plan: MatrixPlan,
    settings: RunSettings,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) -> Result<CellFinished> {
    let digest = plan.file.digest.clone();
    let report_dir = settings.report_dir.clone();
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
        cancelled: cancel.is_cancelled(),
        machines_set_aside: ran.set_aside,
        cell,
    };
    let path = report_dir.join(cell_file_name(&report.cell.id));
    let text = serde_json::to_string_pretty(&report).expect("cell reports serialize") + "\n";
    write_atomic(&path, text.as_bytes())?;
    Ok(CellFinished { report, path })
}

/// What [`collect`] merges.
pub struct CollectSettings {
    /// Cell reports named one by one.
    pub reports: Vec<PathBuf>,
    /// A directory searched for `cell-*.json` (at most [`MAX_FROM_DEPTH`]
    /// levels down; symlinks are not followed).
    pub from: Option<PathBuf>,
    /// The store holding the cells' objects, for the file-level diff of
    /// diverging artifacts.
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
}

/// Merges the cell reports of the matrix at `matrix` into its
/// `report.json` and `junit.xml`: cells in matrix order, a cell without a
/// report `missing`, agreement checked as a whole run checks it.
pub fn collect(matrix: &Path, settings: CollectSettings) -> Result<Finished> {
    let file = MatrixFile::read(matrix)?;
    let expected = cells(&file)?;
    let digest = &file.digest;
    let mut paths = settings.reports.clone();
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
        find_cell_reports(dir, 0, &mut paths)?;
    }
    let mut found: BTreeMap<usize, (PathBuf, CellFile)> = BTreeMap::new();
    for path in paths {
        let report =
            read_cell_report(&path, digest, &expected).map_err(|problem| Error::CellReport {
                path: path.clone(),
                problem,
            })?;
        let index = expected
            .iter()
            .position(|c| c.id == report.cell.id)
            .expect("checked by read_cell_report");
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
    let report_dir =
        crate::run::create_report_dir(settings.report_dir.as_deref(), &settings.state_dir)?;
    let logs = report_dir.join("logs");
    let mut set_aside: Vec<SetAside> = Vec::new();
    let mut reports = Vec::new();
    for (i, cell) in expected.iter().enumerate() {
        let Some((path, report)) = found.remove(&i) else {
            reports.push(missing(cell));
            continue;
        };
        for s in report.machines_set_aside {
            if !set_aside.iter().any(|x| x.machine == s.machine) {
                set_aside.push(s);
            }
        }
        let mut c = report.cell;
        c.log = c
            .log
            .and_then(|_| copy_log(&path, &c.id, &logs, MAX_COPIED_LOG));
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
        &report_dir,
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
        cells: reports,
        agreement,
        machines_set_aside: set_aside,
    };
    let (report_json, junit_xml) = report.write(&report_dir)?;
    Ok(Finished {
        report,
        report_json,
        junit_xml,
    })
}

/// Reads and checks the cell report at `path` against the matrix's
/// `digest` and `cells`.
fn read_cell_report(
    path: &Path,
    digest: &str,
    cells: &[Cell],
) -> std::result::Result<CellFile, CellReportProblem> {
    let text = read_metadata_file(path).map_err(|e| CellReportProblem::Corrupt(e.to_string()))?;
    let report: CellFile = serde_json::from_str(&text).map_err(|e| {
        CellReportProblem::Corrupt(escape::text(&e.to_string()).cut_at(300).to_string())
    })?;
    // What the report says is escaped before it is printed.
    if report.format != CELL_REPORT_FORMAT || report.format_version != CELL_REPORT_VERSION {
        return Err(CellReportProblem::Corrupt(format!(
            "format {} version {}, expected {CELL_REPORT_FORMAT:?} version {CELL_REPORT_VERSION}",
            escape::quoted(&report.format).cut_at(80),
            report.format_version
        )));
    }
    if report.matrix_digest != digest {
        return Err(CellReportProblem::OtherMatrix {
            matrix: escape::path(&report.matrix).cut_at(200).to_string(),
            expected: digest.into(),
            found: escape::text(&report.matrix_digest).cut_at(80).to_string(),
        });
    }
    let c = &report.cell;
    let Some(cell) = cells.iter().find(|x| x.id == c.id) else {
        return Err(CellReportProblem::UnknownCell(
            escape::quoted(&c.id).cut_at(80).to_string(),
        ));
    };
    let mismatch = |field| CellReportProblem::Mismatch {
        cell: c.id.clone(),
        field,
    };
    if c.executor != cell.executor {
        return Err(mismatch("executor"));
    }
    if c.kernconf != cell.kernconf {
        return Err(mismatch("kernconf"));
    }
    if c.target_arch != cell.target_arch {
        return Err(mismatch("target-arch"));
    }
    if c.make_flag != cell.make_flag {
        return Err(mismatch("make-flag"));
    }
    // A pinned cell runs on its machine only: the report must say so, and
    // every attempt must have run there (a cell not pinned may run anywhere).
    if let Some(pinned) = &cell.machine {
        if c.machine.as_ref() != Some(pinned) || c.attempts.iter().any(|a| a.machine != *pinned) {
            return Err(mismatch("machine"));
        }
    }
    if c.status == CellStatus::Missing {
        return Err(CellReportProblem::Corrupt(
            "a cell that ran cannot be missing".into(),
        ));
    }
    check_times(c)?;
    // Artifact names become file names (diffoscope's output): each must be
    // a name promotion accepts, as a cell that really ran reports it.
    for name in c.artifacts.keys() {
        check_name("artifact name", name).map_err(|message| {
            CellReportProblem::InvalidArtifact {
                cell: c.id.clone(),
                message,
            }
        })?;
    }
    Ok(report)
}

/// The latest time a cell report may give, in Unix seconds (and the
/// longest duration): the end of the year 9999, the last a JUnit timestamp
/// can name.
pub const MAX_UNIX_SECONDS: f64 = 253_402_300_799.0;

/// Checks that every time cell report `c` gives is one a run gives: a
/// number of seconds from 0 to [`MAX_UNIX_SECONDS`].
fn check_times(c: &CellReport) -> std::result::Result<(), CellReportProblem> {
    let mut times = vec![
        ("duration_s".to_string(), Some(c.duration_s)),
        ("started_at".to_string(), c.started_at),
        ("finished_at".to_string(), c.finished_at),
    ];
    for (i, a) in c.attempts.iter().enumerate() {
        times.push((format!("attempts[{i}].started_at"), Some(a.started_at)));
        times.push((format!("attempts[{i}].finished_at"), Some(a.finished_at)));
    }
    let bad = times
        .into_iter()
        .filter_map(|(field, t)| Some((field, t?)))
        .find(|(_, t)| !(0.0..=MAX_UNIX_SECONDS).contains(t));
    match bad {
        Some((field, value)) => Err(CellReportProblem::BadTime {
            cell: c.id.clone(),
            field,
            value: value.to_string(),
        }),
        None => Ok(()),
    }
}

/// Appends the `cell-*.json` files below `dir` to `out`, sorted, without
/// following symlinks.
fn find_cell_reports(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| fruix_core::Error::io("read", dir, e))?;
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(kind) = e.file_type() else { continue };
        let name = e.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() && depth < MAX_FROM_DEPTH {
            find_cell_reports(&e.path(), depth + 1, out)?;
        } else if kind.is_file() && name.starts_with("cell-") && name.ends_with(".json") {
            out.push(e.path());
        }
    }
    Ok(())
}

/// The most of a cell's log that `collect` copies: a longer log keeps its
/// last `MAX_COPIED_LOG` bytes (where a failure shows), after a line
/// saying how much was left out.
pub const MAX_COPIED_LOG: u64 = 256 << 20;

/// Copies the log of cell `id` that travels beside its report
/// (`DIR/logs/ID.log`) into `logs`, at most `max` bytes of it (its tail);
/// its new path, or `None` when there is none, or it cannot be copied
/// (nothing is left behind then). Below `DIR`, nothing is followed: `logs`
/// and the log are opened relative to their parent's descriptor with
/// `O_NOFOLLOW`, and the log's type is checked on its descriptor (a
/// symlink, a FIFO or a device is no log).
fn copy_log(report: &Path, id: &str, logs: &Path, max: u64) -> Option<PathBuf> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let dir = report.parent()?;
    let name = format!("{id}.log");
    let top = std::os::fd::OwnedFd::from(OpenDir::open(dir, TreeKind::READ).ok()?);
    let mut file = open_file_beneath(&top, dir, format!("logs/{name}").as_bytes()).ok()?;
    let target = logs.join(&name);
    // The cell ran into the report directory collect writes to: its log
    // is already there.
    if dir.join("logs").join(&name) == target {
        return Some(target);
    }
    let metadata = file.metadata().ok()?;
    let left_out = metadata.len().saturating_sub(max);
    // Written beside and renamed over: a `logs/ID.log` already there (a
    // symlink among unpacked artifacts, say) is replaced, never written
    // through; a failed copy leaves nothing.
    write_atomic_with(&target, |out| {
        if left_out > 0 {
            file.seek(SeekFrom::Start(left_out))?;
            writeln!(
                out,
                "[fruix matrix collect: the first {left_out} bytes of this log are left out]"
            )?;
        }
        std::io::copy(&mut (&mut file).take(max), out).map(drop)
    })
    .ok()?;
    Some(target)
}

/// The report of a cell no report was collected for.
fn missing(cell: &Cell) -> CellReport {
    let error = format!(
        "no cell report was collected for this cell ({})",
        cell_file_name(&cell.id)
    );
    CellReport::unstarted(cell, CellStatus::Missing, Some(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix() -> Vec<Cell> {
        let file = MatrixFile::parse(
            Path::new("/ci/matrix.scm"),
            r#"(fruix-matrix (format-version 1) (source "s")
  (axes (executor "local" "mini-sh") (kernconf "GENERIC" "MINIMAL")))"#,
        )
        .unwrap();
        cells(&file).unwrap()
    }

    /// A cell report of `cell`, written to `dir/cell-ID.json`.
    fn written(dir: &Path, cell: &Cell, edit: impl FnOnce(&mut CellFile)) -> PathBuf {
        let mut report = CellFile {
            format: CELL_REPORT_FORMAT.into(),
            format_version: CELL_REPORT_VERSION,
            matrix: "/ci/matrix.scm".into(),
            matrix_digest: "sha256:aa".into(),
            cancelled: false,
            machines_set_aside: Vec::new(),
            cell: CellReport {
                status: CellStatus::Passed,
                error: None,
                ..missing(cell)
            },
        };
        edit(&mut report);
        let path = dir.join(cell_file_name(&cell.id));
        std::fs::write(&path, serde_json::to_string(&report).unwrap()).unwrap();
        path
    }

    #[test]
    fn a_copied_log_keeps_its_tail_within_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("cells"), dir.path().join("report"));
        std::fs::create_dir_all(from.join("logs")).unwrap();
        std::fs::create_dir(&to).unwrap();
        let report = from.join("cell-c1.json");
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(from.join("logs/c1.log"), &log).unwrap();

        let whole = copy_log(&report, "c1", &to, log.len() as u64).unwrap();
        assert_eq!(std::fs::read_to_string(&whole).unwrap(), log);

        let cut = copy_log(&report, "c1", &to, 16).unwrap();
        let left_out = log.len() - 16;
        assert_eq!(
            std::fs::read_to_string(&cut).unwrap(),
            format!(
                "[fruix matrix collect: the first {left_out} bytes of this log are left out]\n{}",
                &log[left_out..]
            )
        );

        // A log that is a symlink is not followed, and nothing is written.
        std::fs::remove_file(&cut).unwrap();
        std::fs::remove_file(from.join("logs/c1.log")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.join("logs/c1.log")).unwrap();
        assert_eq!(copy_log(&report, "c1", &to, 16), None);
        assert!(!cut.exists());

        // A symlink where the copy goes is replaced, not written through.
        std::fs::remove_file(from.join("logs/c1.log")).unwrap();
        std::fs::write(from.join("logs/c1.log"), &log).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, &cut).unwrap();
        assert_eq!(copy_log(&report, "c1", &to, 1 << 20), Some(cut.clone()));
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
        assert_eq!(
            copy_log(&hostile.join("cell-c2.json"), "c2", &to, 1 << 20),
            None
        );
        assert!(!to.join("c2.log").exists());
        // A FIFO is no log, and is not waited on.
        std::fs::remove_file(hostile.join("logs")).unwrap();
        std::fs::create_dir(hostile.join("logs")).unwrap();
        fruix_core::testing::mkfifo(&hostile.join("logs/c2.log")).unwrap();
        assert_eq!(
            copy_log(&hostile.join("cell-c2.json"), "c2", &to, 1 << 20),
            None
        );
        assert!(!to.join("c2.log").exists());
    }

    #[test]
    fn a_report_directory_whose_logs_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (report, elsewhere) = (dir.path().join("report"), dir.path().join("elsewhere"));
        std::fs::create_dir_all(&report).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, report.join("logs")).unwrap();
        let e = crate::run::create_report_dir(Some(&report), dir.path()).unwrap_err();
        assert!(
            matches!(&e, Error::Core(fruix_core::Error::UnsafePath { .. })),
            "{e:?}"
        );
    }

    #[test]
    fn a_cell_report_must_match_the_matrix_and_its_cell() {
        let dir = tempfile::tempdir().unwrap();
        let cells = matrix();
        let check = |edit: fn(&mut CellFile)| {
            read_cell_report(&written(dir.path(), &cells[0], edit), "sha256:aa", &cells)
        };
        assert_eq!(check(|_| {}).unwrap().cell.id, "local-GENERIC");
        let mismatch = |field| {
            Err(CellReportProblem::Mismatch {
                cell: "local-GENERIC".into(),
                field,
            })
        };
        assert_eq!(
            check(|r| r.cell.kernconf = "MINIMAL".into()),
            mismatch("kernconf")
        );
        assert_eq!(
            check(|r| r.cell.executor = "mini-sh".into()),
            mismatch("executor")
        );
        assert_eq!(
            check(|r| r.cell.make_flag = Some("X=1".into())),
            mismatch("make-flag")
        );
        assert_eq!(
            check(|r| r.cell.id = "\u{1b}[2Jx".into()),
            Err(CellReportProblem::UnknownCell("\"\\033[2Jx\"".into()))
        );
        assert!(matches!(
            check(|r| r.matrix_digest = "sha256:bb".into()),
            Err(CellReportProblem::OtherMatrix { .. })
        ));
        assert!(matches!(
            check(|r| r.format_version = 2),
            Err(CellReportProblem::Corrupt(_))
        ));
        assert!(matches!(
            check(|r| r.cell.status = CellStatus::Missing),
            Err(CellReportProblem::Corrupt(_))
        ));
    }

    /// Regression: `collect` panicked (exit 101) on a cell report whose
    /// `duration_s` was negative, leaving `report.json` without
    /// `junit.xml`.
    #[test]
    fn a_cell_report_whose_times_are_no_times_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cells = matrix();
        let check = |edit: &dyn Fn(&mut CellFile)| {
            read_cell_report(&written(dir.path(), &cells[0], edit), "sha256:aa", &cells)
        };
        let bad = |field: &str, value: f64| {
            Err(CellReportProblem::BadTime {
                cell: "local-GENERIC".into(),
                field: field.into(),
                value: value.to_string(),
            })
        };
        assert_eq!(
            check(&|r| r.cell.duration_s = -1.0),
            bad("duration_s", -1.0)
        );
        assert_eq!(
            check(&|r| r.cell.duration_s = 1e300),
            bad("duration_s", 1e300)
        );
        assert_eq!(
            check(&|r| r.cell.started_at = Some(-5.0)),
            bad("started_at", -5.0)
        );
        assert_eq!(
            check(&|r| r.cell.finished_at = Some(MAX_UNIX_SECONDS * 2.0)),
            bad("finished_at", MAX_UNIX_SECONDS * 2.0)
        );
        let attempt = crate::report::AttemptReport {
            attempt: 1,
            machine: "local".into(),
            started_at: 1.0,
            finished_at: -2.0,
            status: CellStatus::Passed,
            error: None,
        };
        assert_eq!(
            check(&|r| r.cell.attempts = vec![attempt.clone()]),
            bad("attempts[0].finished_at", -2.0)
        );
        let fine = check(&|r| {
            r.cell.started_at = Some(0.0);
            r.cell.finished_at = Some(MAX_UNIX_SECONDS);
        });
        assert!(fine.is_ok(), "{fine:?}");
    }

    #[test]
    fn a_pinned_cell_s_report_must_name_its_machine() {
        let file = crate::testing::pinned_matrix();
        let cells = cells(&file).unwrap();
        let (free, pinned) = (&cells[0], &cells[1]);
        assert_eq!(pinned.machine.as_deref(), Some("m2"));
        let dir = tempfile::tempdir().unwrap();
        let attempt = |machine: &str| crate::report::AttemptReport {
            attempt: 1,
            machine: machine.into(),
            started_at: 1.0,
            finished_at: 2.0,
            status: CellStatus::Passed,
            error: None,
        };
        let check = |cell: &Cell, machine: Option<&str>, attempts: &[&str]| {
            let path = written(dir.path(), cell, |r| {
                r.cell.machine = machine.map(str::to_string);
                r.cell.attempts = attempts.iter().map(|m| attempt(m)).collect();
            });
            read_cell_report(&path, "sha256:aa", &cells).map(|r| r.cell.machine)
        };
        let mismatch = Err(CellReportProblem::Mismatch {
            cell: pinned.id.clone(),
            field: "machine",
        });
        assert_eq!(check(pinned, Some("m2"), &["m2"]), Ok(Some("m2".into())));
        assert_eq!(
            check(pinned, Some("m2"), &[]),
            Ok(Some("m2".into())),
            "never started"
        );
        assert_eq!(check(pinned, Some("m1"), &["m1"]), mismatch);
        assert_eq!(check(pinned, None, &[]), mismatch);
        assert_eq!(
            check(pinned, Some("m2"), &["m1", "m2"]),
            mismatch,
            "an attempt elsewhere"
        );
        assert_eq!(
            check(free, Some("m1"), &["m2", "m1"]),
            Ok(Some("m1".into())),
            "a cell not pinned may run anywhere"
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
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let matrix = d.join("matrix.scm");
        let text =
            r#"(fruix-matrix (format-version 1) (source "s") (axes (executor "local" "mini-sh")))"#;
        std::fs::write(&matrix, text).unwrap();
        let file = MatrixFile::read(&matrix).unwrap();
        let (digest, cells) = (file.digest.clone(), cells(&file).unwrap());
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
                reports: paths,
                from: None,
                store: Some(d.join("store")),
                report_dir: Some(d.join("report")),
                state_dir: d.join("state"),
                diffoscope: true,
            };
            let e = collect(&matrix, settings).unwrap_err();
            assert!(matches!(e, Error::CellReport { .. }), "{e:?}");
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage, "exit 2");
            assert!(e.to_string().contains("cell-local.json"), "{e}");
            assert_eq!(tree(d), before, "{name:?}: nothing is written");
        }
    }

    #[test]
    fn from_finds_cell_reports_in_job_directories_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["a/b", "c", "1/2/3/4/5/6"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
            std::fs::write(d.join(sub).join("cell-x.json"), "{}").unwrap();
        }
        std::fs::write(d.join("c/other.json"), "{}").unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("link")).unwrap();
        let mut found = Vec::new();
        find_cell_reports(d, 0, &mut found).unwrap();
        let found: Vec<_> = found
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            found,
            [
                PathBuf::from("a/b/cell-x.json"),
                PathBuf::from("c/cell-x.json")
            ]
        );
    }
}
