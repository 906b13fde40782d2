//! What a cell report must be for [`collect`](super::collect) to merge it:
//! a cell report of this matrix file, of one of its cells as the matrix
//! describes it, with times a run gives, artifact names promotion accepts,
//! and nothing that contradicts the rest of it (a `passed` cell whose last
//! attempt failed, an end before its start).

use std::path::Path;

use fruix_core::escape;
use fruix_core::fsutil::read_metadata_file;
use fruix_core::promotion::check_name;

use super::{CellFile, CELL_REPORT_FORMAT, CELL_REPORT_VERSION};
use crate::expand::Cell;
use crate::report::CellReport;
use crate::runner::CellStatus;

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
    /// Without `--pipeline-run`, reports of several pipeline runs (or some
    /// of one and some of none) were found: collect cannot tell which run
    /// is this one.
    #[error("it is of {run}, and {other} of {other_run}: reports of several pipeline runs, of which collect cannot tell this run's; give collect --pipeline-run ID, the id run-cell was given")]
    SeveralPipelineRuns {
        /// This report's run: `pipeline run ID`, or `no pipeline run`.
        run: String,
        /// The report read first, its path escaped.
        other: String,
        /// Its run, as `run` says it.
        other_run: String,
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
    /// The cell says two things no run says together: `passed` without a
    /// passed last attempt, or with an error; an end before its start; a
    /// `machine` that is not where its last attempt ran; attempts numbered
    /// out of order, or more than the matrix's `retries` allow.
    #[error("its cell {cell} contradicts itself: {message}")]
    Inconsistent {
        /// The cell's id (one of the matrix's).
        cell: String,
        /// What contradicts what, naming the fields (values escaped).
        message: String,
    },
    /// An artifact the cell names in the store `collect --store` was given
    /// is not what the report says: no store object's name, or an object
    /// of another artifact or tree signature (see `store_check`).
    #[error("its cell {cell} contradicts the store: {message}")]
    ContradictsStore {
        /// The cell's id (one of the matrix's).
        cell: String,
        /// The artifact, its store path, and what the store says of it
        /// against what the report says (values escaped).
        message: String,
    },
}

/// The latest time a cell report may give, in Unix seconds (and the
/// longest duration): the end of the year 9999, the last a JUnit timestamp
/// can name.
pub const MAX_UNIX_SECONDS: f64 = 253_402_300_799.0;

/// Reads the cell report at `path`: a cell report of this format, whose
/// pipeline run (if any) is a pipeline run id. What it says of a matrix is
/// not checked yet: a report of another pipeline run may be set aside
/// unchecked ([`check_cell_file`] checks it against the matrix).
pub(super) fn read_cell_file(path: &Path) -> Result<CellFile, CellReportProblem> {
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
    Ok(report)
}

/// Checks cell report `report` against the matrix's `digest`, `cells` and
/// `retries`.
pub(super) fn check_cell_file(
    report: &CellFile,
    digest: &str,
    cells: &[Cell],
    retries: u32,
) -> Result<(), CellReportProblem> {
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
    check_cell(c, cell)?;
    if c.status == CellStatus::Missing {
        return Err(CellReportProblem::Corrupt(
            "a cell that ran cannot be missing".into(),
        ));
    }
    check_times(c)?;
    check_attempts(c, retries)?;
    check_consistency(c, cell)?;
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
    Ok(())
}

/// Checks that cell report `c` is the matrix's `cell`: the same executor,
/// kernconf, target and make flag, and a pinned cell's machine.
fn check_cell(c: &CellReport, cell: &Cell) -> Result<(), CellReportProblem> {
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
    Ok(())
}

/// Checks that every time cell report `c` gives is one a run gives: a
/// number of seconds from 0 to [`MAX_UNIX_SECONDS`], no end before its
/// start.
fn check_times(c: &CellReport) -> Result<(), CellReportProblem> {
    // Each span's start and end, named as the report names them.
    let mut spans = vec![(
        ("started_at".to_string(), c.started_at),
        ("finished_at".to_string(), c.finished_at),
    )];
    for (i, a) in c.attempts.iter().enumerate() {
        spans.push((
            (format!("attempts[{i}].started_at"), Some(a.started_at)),
            (format!("attempts[{i}].finished_at"), Some(a.finished_at)),
        ));
    }
    let duration = ("duration_s".to_string(), Some(c.duration_s));
    let bad = std::iter::once(&duration)
        .chain(spans.iter().flat_map(|(start, end)| [start, end]))
        .filter_map(|(field, t)| Some((field, (*t)?)))
        .find(|(_, t)| !(0.0..=MAX_UNIX_SECONDS).contains(t));
    if let Some((field, value)) = bad {
        return Err(CellReportProblem::BadTime {
            cell: c.id.clone(),
            field: field.clone(),
            value: value.to_string(),
        });
    }
    for ((s, start), (f, end)) in &spans {
        if let (Some(start), Some(end)) = (start, end) {
            if end < start {
                let message = format!("`{f}` ({end}) is before `{s}` ({start})");
                return Err(inconsistent(c, message));
            }
        }
    }
    Ok(())
}

/// Checks that cell report `c` numbers its attempts as a run does: 1, 2...
/// in order, at most `retries` + 1 of them (a run retries only that often).
fn check_attempts(c: &CellReport, retries: u32) -> Result<(), CellReportProblem> {
    let most = retries as usize + 1;
    if c.attempts.len() > most {
        return Err(inconsistent(
            c,
            format!(
                "it lists {} attempts, but the matrix's `retries` ({retries}) allows {most} at most",
                c.attempts.len()
            ),
        ));
    }
    let out_of_order = c
        .attempts
        .iter()
        .enumerate()
        .find(|(i, a)| a.attempt as usize != i + 1);
    if let Some((i, a)) = out_of_order {
        return Err(inconsistent(
            c,
            format!(
                "`attempts[{i}].attempt` is {}, but a run numbers its attempts 1, 2... in order",
                a.attempt
            ),
        ));
    }
    Ok(())
}

/// Checks that cell report `c` (of the matrix's `cell`) says what a run
/// says together: a `passed` cell's last attempt passed and it has no
/// error; its `machine` is where its last attempt ran (the pinned machine,
/// or none, when it never started).
fn check_consistency(c: &CellReport, cell: &Cell) -> Result<(), CellReportProblem> {
    let last = c.attempts.last();
    if c.status == CellStatus::Passed {
        match last {
            None => return Err(inconsistent(c, "it is `passed` but lists no attempt")),
            Some(a) if a.status != CellStatus::Passed => {
                return Err(inconsistent(
                    c,
                    format!(
                        "it is `passed` but its last attempt is `{}`",
                        a.status.as_str()
                    ),
                ))
            }
            Some(_) if c.error.is_some() => {
                return Err(inconsistent(c, "it is `passed` but gives an `error`"))
            }
            Some(_) => {}
        }
    }
    let ran_on = last.map(|a| &a.machine).or(cell.machine.as_ref());
    if c.machine.as_ref() != ran_on {
        let name = |m: Option<&String>| match m {
            Some(m) => escape::quoted(m).cut_at(80).to_string(),
            None => "none".into(),
        };
        let place = match last {
            Some(_) => "its last attempt ran on",
            None => "it lists no attempt, so it names",
        };
        return Err(inconsistent(
            c,
            format!(
                "its `machine` is {} but {place} {}",
                name(c.machine.as_ref()),
                name(ran_on)
            ),
        ));
    }
    Ok(())
}

/// [`CellReportProblem::Inconsistent`] of cell report `c`.
fn inconsistent(c: &CellReport, message: impl Into<String>) -> CellReportProblem {
    CellReportProblem::Inconsistent {
        cell: c.id.clone(),
        message: message.into(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::expand::cells;
    use crate::file::MatrixFile;
    use crate::report::AttemptReport;

    /// Reads and checks the cell report at `path` against the matrix's
    /// `digest` and `cells` (of `retries` 1, the default), as
    /// [`collect`](crate::split::collect) does a report of the pipeline
    /// run it collects.
    pub(crate) fn read_cell_report(
        path: &Path,
        digest: &str,
        cells: &[Cell],
    ) -> Result<CellFile, CellReportProblem> {
        let report = read_cell_file(path)?;
        check_cell_file(&report, digest, cells, 1)?;
        Ok(report)
    }

    /// The cells of `/ci/matrix.scm`: `local` and `mini-sh` by `GENERIC`
    /// and `MINIMAL`.
    pub(crate) fn matrix() -> Vec<Cell> {
        let file = MatrixFile::parse(
            Path::new("/ci/matrix.scm"),
            r#"(fruix-matrix (format-version 1) (source "s")
  (axes (executor "local" "mini-sh") (kernconf "GENERIC" "MINIMAL")))"#,
        )
        .unwrap();
        cells(&file).unwrap()
    }

    /// Attempt 1 of a cell on `machine`, with `status`, from 1 s to 2 s.
    pub(crate) fn attempt(machine: &str, status: CellStatus) -> AttemptReport {
        AttemptReport {
            attempt: 1,
            machine: machine.into(),
            started_at: 1.0,
            finished_at: 2.0,
            status,
            error: None,
        }
    }

    /// A report of `cell` passed in one attempt (on its pinned machine,
    /// else `local`), changed by `edit`, written to `dir/cell-ID.json`.
    pub(crate) fn written(dir: &Path, cell: &Cell, edit: impl FnOnce(&mut CellFile)) -> PathBuf {
        let machine = cell.machine.clone().unwrap_or_else(|| "local".into());
        let mut report = CellFile {
            format: CELL_REPORT_FORMAT.into(),
            format_version: CELL_REPORT_VERSION,
            matrix: "/ci/matrix.scm".into(),
            matrix_digest: "sha256:aa".into(),
            pipeline_run: None,
            cancelled: false,
            machines_set_aside: Vec::new(),
            cell: CellReport {
                machine: Some(machine.clone()),
                duration_s: 1.0,
                started_at: Some(1.0),
                finished_at: Some(2.0),
                attempts: vec![attempt(&machine, CellStatus::Passed)],
                ..CellReport::unstarted(cell, CellStatus::Passed, None)
            },
        };
        edit(&mut report);
        let path = dir.join(super::super::cell_file_name(&cell.id));
        std::fs::write(&path, serde_json::to_string(&report).unwrap()).unwrap();
        path
    }

    /// Reads and checks a report of [`matrix`]'s first cell, `local-GENERIC`,
    /// that [`written`] wrote with `edit`.
    fn check_edited(edit: impl FnOnce(&mut CellFile)) -> Result<CellFile, CellReportProblem> {
        let dir = tempfile::tempdir().unwrap();
        let cells = matrix();
        read_cell_report(&written(dir.path(), &cells[0], edit), "sha256:aa", &cells)
    }

    #[test]
    fn a_cell_report_must_match_the_matrix_and_its_cell() {
        assert_eq!(check_edited(|_| {}).unwrap().cell.id, "local-GENERIC");
        let mismatch = |field| {
            Err(CellReportProblem::Mismatch {
                cell: "local-GENERIC".into(),
                field,
            })
        };
        assert_eq!(
            check_edited(|r| r.cell.kernconf = "MINIMAL".into()),
            mismatch("kernconf")
        );
        assert_eq!(
            check_edited(|r| r.cell.executor = "mini-sh".into()),
            mismatch("executor")
        );
        assert_eq!(
            check_edited(|r| r.cell.make_flag = Some("X=1".into())),
            mismatch("make-flag")
        );
        assert_eq!(
            check_edited(|r| r.cell.id = "\u{1b}[2Jx".into()),
            Err(CellReportProblem::UnknownCell("\"\\033[2Jx\"".into()))
        );
        assert!(matches!(
            check_edited(|r| r.matrix_digest = "sha256:bb".into()),
            Err(CellReportProblem::OtherMatrix { .. })
        ));
        assert!(matches!(
            check_edited(|r| r.format_version = 2),
            Err(CellReportProblem::Corrupt(_))
        ));
        assert!(matches!(
            check_edited(|r| r.cell.status = CellStatus::Missing),
            Err(CellReportProblem::Corrupt(_))
        ));
    }

    /// Regression: `collect` panicked (exit 101) on a cell report whose
    /// `duration_s` was negative, leaving `report.json` without
    /// `junit.xml`.
    #[test]
    fn a_cell_report_whose_times_are_no_times_is_refused() {
        let bad = |field: &str, value: f64| {
            Err(CellReportProblem::BadTime {
                cell: "local-GENERIC".into(),
                field: field.into(),
                value: value.to_string(),
            })
        };
        assert_eq!(
            check_edited(|r| r.cell.duration_s = -1.0),
            bad("duration_s", -1.0)
        );
        assert_eq!(
            check_edited(|r| r.cell.duration_s = 1e300),
            bad("duration_s", 1e300)
        );
        assert_eq!(
            check_edited(|r| r.cell.started_at = Some(-5.0)),
            bad("started_at", -5.0)
        );
        assert_eq!(
            check_edited(|r| r.cell.finished_at = Some(MAX_UNIX_SECONDS * 2.0)),
            bad("finished_at", MAX_UNIX_SECONDS * 2.0)
        );
        let attempt = AttemptReport {
            finished_at: -2.0,
            ..attempt("local", CellStatus::Passed)
        };
        assert_eq!(
            check_edited(|r| r.cell.attempts = vec![attempt.clone()]),
            bad("attempts[0].finished_at", -2.0)
        );
        let fine = check_edited(|r| {
            r.cell.started_at = Some(0.0);
            r.cell.finished_at = Some(MAX_UNIX_SECONDS);
        });
        assert!(fine.is_ok(), "{fine:?}");
    }

    /// Regression: `collect` merged a cell report that `passed` without
    /// an attempt, or after a failed one, or with an error, or that ended
    /// before it started, and counted the cell as passed.
    #[test]
    fn a_cell_report_that_contradicts_itself_is_refused() {
        let says = |message: &str| {
            Err(CellReportProblem::Inconsistent {
                cell: "local-GENERIC".into(),
                message: message.into(),
            })
        };
        assert!(check_edited(|_| {}).is_ok());
        assert_eq!(
            check_edited(|r| r.cell.attempts.clear()),
            says("it is `passed` but lists no attempt")
        );
        assert_eq!(
            check_edited(|r| r.cell.attempts[0].status = CellStatus::BuildFailure),
            says("it is `passed` but its last attempt is `build-failure`")
        );
        assert_eq!(
            check_edited(|r| {
                let failed = AttemptReport {
                    attempt: 2,
                    ..attempt("local", CellStatus::SystemFailure)
                };
                r.cell.attempts.push(failed);
            }),
            says("it is `passed` but its last attempt is `system-failure`")
        );
        assert_eq!(
            check_edited(|r| r.cell.error = Some("build step `buildworld` failed".into())),
            says("it is `passed` but gives an `error`")
        );
        assert_eq!(
            check_edited(|r| r.cell.finished_at = Some(0.5)),
            says("`finished_at` (0.5) is before `started_at` (1)")
        );
        assert_eq!(
            check_edited(|r| r.cell.attempts[0].started_at = 3.0),
            says("`attempts[0].finished_at` (2) is before `attempts[0].started_at` (3)")
        );
        assert_eq!(
            check_edited(|r| r.cell.machine = Some("m\u{1b}1".into())),
            says("its `machine` is \"m\\0331\" but its last attempt ran on \"local\"")
        );
        // A failed cell's last attempt may have passed (its promotion
        // failed); a cell that never started names no machine.
        let promotion_failed = check_edited(|r| {
            r.cell.status = CellStatus::BuildFailure;
            r.cell.error = Some("promotion failed: disk full".into());
        });
        assert!(promotion_failed.is_ok(), "{promotion_failed:?}");
        let unstarted = CellReport::unstarted(
            &matrix()[0],
            CellStatus::Cancelled,
            Some("never started".into()),
        );
        let never_started = |machine: Option<&str>| {
            check_edited(|r| {
                r.cell = unstarted.clone();
                r.cell.machine = machine.map(str::to_string);
            })
        };
        assert!(never_started(None).is_ok());
        assert_eq!(
            never_started(Some("local")),
            says("its `machine` is \"local\" but it lists no attempt, so it names none")
        );
    }

    /// Regression: a cell report whose only attempt was numbered 99 (of a
    /// matrix of `retries` 1) was collected, as was one listing more
    /// attempts than a run makes.
    #[test]
    fn a_cell_report_whose_attempts_no_run_numbers_so_is_refused() {
        let says = |message: &str| {
            Err(CellReportProblem::Inconsistent {
                cell: "local-GENERIC".into(),
                message: message.into(),
            })
        };
        let numbered = |numbers: &[u32]| {
            check_edited(|r| {
                r.cell.attempts = numbers
                    .iter()
                    .map(|n| AttemptReport {
                        attempt: *n,
                        ..attempt("local", CellStatus::SystemFailure)
                    })
                    .collect();
                r.cell.attempts.last_mut().unwrap().status = CellStatus::Passed;
            })
        };
        assert!(numbered(&[1]).is_ok());
        assert!(numbered(&[1, 2]).is_ok(), "retries 1: two attempts");
        assert_eq!(
            numbered(&[99]),
            says("`attempts[0].attempt` is 99, but a run numbers its attempts 1, 2... in order")
        );
        assert_eq!(
            numbered(&[0]),
            says("`attempts[0].attempt` is 0, but a run numbers its attempts 1, 2... in order")
        );
        assert_eq!(
            numbered(&[2, 1]),
            says("`attempts[0].attempt` is 2, but a run numbers its attempts 1, 2... in order")
        );
        assert_eq!(
            numbered(&[1, 2, 3]),
            says("it lists 3 attempts, but the matrix's `retries` (1) allows 2 at most")
        );
        // A matrix that retries more takes more.
        let dir = tempfile::tempdir().unwrap();
        let cells = matrix();
        let path = written(dir.path(), &cells[0], |r| {
            r.cell.attempts = (1..=3)
                .map(|n| AttemptReport {
                    attempt: n,
                    ..attempt("local", CellStatus::Passed)
                })
                .collect();
        });
        let report = read_cell_file(&path).unwrap();
        assert!(check_cell_file(&report, "sha256:aa", &cells, 2).is_ok());
        assert!(check_cell_file(&report, "sha256:aa", &cells, 1).is_err());
    }

    #[test]
    fn a_pinned_cell_s_report_must_name_its_machine() {
        let file = crate::testing::pinned_matrix();
        let cells = cells(&file).unwrap();
        let (free, pinned) = (&cells[0], &cells[1]);
        assert_eq!(pinned.machine.as_deref(), Some("m2"));
        let dir = tempfile::tempdir().unwrap();
        let check = |cell: &Cell, machine: Option<&str>, attempts: &[&str]| {
            let path = written(dir.path(), cell, |r| {
                r.cell.machine = machine.map(str::to_string);
                r.cell.attempts = (1..)
                    .zip(attempts)
                    .map(|(n, m)| AttemptReport {
                        attempt: n,
                        ..attempt(m, CellStatus::Passed)
                    })
                    .collect();
                if attempts.is_empty() {
                    r.cell.status = CellStatus::Cancelled;
                }
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
}
