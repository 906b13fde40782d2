//! The reports of a matrix run: `report.json` (this module's [`Report`]),
//! the agreement check with its file-by-file differences ([`agreement`](mod@agreement)),
//! `junit.xml` ([`junit`]), and the table printed at the end ([`table`](mod@table)).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::agreement::FileDifference;
use crate::expand::Cell;
use crate::runner::{CellRecord, CellStatus, PromotedArtifact};
use crate::split::PipelineRun;
use crate::{Error, Result};

pub mod agreement;
#[cfg(test)]
mod fixtures;
pub mod junit;
pub mod table;

pub use agreement::{agreement, diffoscope_installed, DIFFOSCOPE_MISSING};
pub use table::table;

/// The whole report, written as `report.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The matrix file, as an absolute path.
    pub matrix: PathBuf,
    /// Unix time, seconds.
    pub started_at: f64,
    /// Seconds the run took: for `matrix run`, from the start of the cells (the
    /// source object is added before) to the end of the agreement check; for
    /// `matrix collect`, from the earliest start of a cell to the latest end (0
    /// when no cell started).
    pub duration_s: f64,
    /// At most this many cells ran at once: the matrix file's `max-parallel`,
    /// or `--max-parallel` of `matrix run`; `null`: no limit.
    pub max_parallel: Option<u32>,
    /// Ctrl-C stopped the run.
    pub cancelled: bool,
    /// `--time-limit` of `matrix run`, in seconds; `null`: none (and after
    /// `collect`).
    pub time_limit_s: Option<f64>,
    /// The time limit passed before the cells ended: the run stopped, and
    /// the cells it cancelled say so.
    pub time_limit_reached: bool,
    /// The machines file the run read (absolute); `null`: none (and after
    /// `collect`). Its text as the run read and checked it is
    /// `machines.scm` in the report directory: every attempt read that
    /// copy, so an edit to the file during the run did not change it.
    pub machines_file: Option<PathBuf>,
    /// The CI pipeline run whose cell reports `collect --pipeline-run ID`
    /// took (reports of other runs were set aside); `null` when none was
    /// given (and after `matrix run`). `junit.xml` names it too, as the
    /// property `pipeline_run` of each suite.
    pub pipeline_run: Option<PipelineRun>,
    /// Every cell of the matrix, in expansion order, also those that never
    /// started (and, after `collect`, those without a report: `missing`).
    pub cells: Vec<CellReport>,
    /// One entry per artifact and group of cells that must agree
    /// (`agree-across`), over the group's passed cells; a group with fewer than
    /// two passed cells has none.
    pub agreement: Vec<AgreementReport>,
    /// The machines the run stopped using (in machines file order; after
    /// `collect`, each machine once, with the first reason a cell report gave).
    pub machines_set_aside: Vec<SetAside>,
}

/// How a run ended, in the order that decides its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every cell passed and every agreement held.
    Passed,
    /// Ctrl-C (or the caller's token) stopped the run.
    Cancelled,
    /// A cell did not pass: build or system failure, or cancelled by
    /// fail-fast.
    CellsFailed,
    /// Every cell passed, but cells that must agree diverged.
    Diverged,
}

impl Report {
    /// How the run ended: cancelled, then failed cells, then divergence.
    pub fn outcome(&self) -> Outcome {
        if self.cancelled {
            Outcome::Cancelled
        } else if self.cells.iter().any(|c| c.status != CellStatus::Passed) {
            Outcome::CellsFailed
        } else if self.agreement.iter().any(|a| !a.agree) {
            Outcome::Diverged
        } else {
            Outcome::Passed
        }
    }

    /// Writes `report.json` and `junit.xml` (naming this host) into `dir`;
    /// returns their paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let hostname = fruix_core::collect::host_name().unwrap_or_else(|_| "localhost".into());
        let json = dir.join("report.json");
        let xml = dir.join("junit.xml");
        let json_text = serde_json::to_string_pretty(self).expect("reports serialize") + "\n";
        // Written beside and renamed over, so that an entry already there
        // (a symlink among unpacked CI artifacts) is replaced, not followed.
        write_file(&json, json_text.as_bytes())?;
        let xml_text = junit::junit(self, &hostname)
            .to_string()
            .map_err(|e| write_error(&xml, std::io::Error::other(e)))?;
        write_file(&xml, xml_text.as_bytes())?;
        Ok((json, xml))
    }
}

/// A machine set aside during the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAside {
    /// The machine's name in the machines file.
    pub machine: String,
    /// Why it was set aside, with the attempt and the cell (by its id, escaped)
    /// that showed it: `unreachable after attempt 1 of cell remote-GENERIC`,
    /// `its guest did not come up for attempt 2 of cell remote-MINIMAL`.
    pub reason: String,
}

/// One cell of `report.json` (the `cell` of a cell report too): what it built,
/// how it ended, its attempts and what it promoted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellReport {
    /// The cell's id (`host-initiated-MINIMAL`): unique in the matrix, of
    /// `A-Z a-z 0-9 . _ -` only. It names the cell's log (`logs/ID.log`) and,
    /// once it passed, its result link (`results/ID`).
    pub id: String,
    /// The executor that built the cell (a name of the executor registry).
    pub executor: String,
    /// The kernel configuration built (`KERNCONF`).
    pub kernconf: String,
    /// The `TARGET_ARCH` built for.
    pub target_arch: String,
    /// The cell's own `make-flag` axis value; `null` when it has none. The
    /// matrix's `make-flags`, which every cell gets, are not repeated here.
    pub make_flag: Option<String>,
    /// Where the last attempt ran (a machine, or `local`), or the pinned
    /// machine of a cell that never started.
    pub machine: Option<String>,
    /// How the cell ended: `passed`, `build-failure`, `system-failure`,
    /// `cancelled` or `missing` ([`CellStatus`]).
    pub status: CellStatus,
    /// Seconds from the start of the first attempt to the end of the cell,
    /// retries and promotion included; 0 when the cell never started.
    pub duration_s: f64,
    /// When the first attempt started, Unix time in seconds; `null` when the
    /// cell never started.
    pub started_at: Option<f64>,
    /// When the cell ended (promotion included), Unix time in seconds; `null`
    /// when it was cancelled before it started, or is `missing`. A cell that no
    /// machine could take has one, but no `started_at`.
    pub finished_at: Option<f64>,
    /// Every attempt, in order (more than one when a system failure was
    /// retried); empty when the cell never started.
    pub attempts: Vec<AttemptReport>,
    /// The absolute store path of the result bundle the cell was promoted as;
    /// `null` unless the cell passed.
    pub result_store: Option<PathBuf>,
    /// The promoted artifacts by name (`world`, `kernel`, `headers`,
    /// `bootloader`): each one's store object and tree signature. Empty unless
    /// the cell passed.
    pub artifacts: BTreeMap<String, PromotedArtifact>,
    /// The key of the machine that signed the cell's objects where it built
    /// them, every signature recorded in the store (absent when it did not
    /// sign, or when some signature was not recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// The cell's objects (absolute store paths) that its machine signed
    /// where it built them, but whose signature the store did not record: it
    /// already held them with other references than those signed. They
    /// cannot be shared as the machine's (`signed_by` is absent then). Absent
    /// when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures_not_recorded: Vec<PathBuf>,
    /// The cell's log file; `null` for a cell that never started (it has
    /// none).
    pub log: Option<PathBuf>,
    /// Why the cell did not pass: the last attempt's error, `cannot run: ...`
    /// when no machine could take it, `promotion failed: ...`, `never started`,
    /// `retry cancelled: attempt N on MACHINE failed with a system failure:
    /// ...` when fail-fast or Ctrl-C stopped the run before the retry of a
    /// system failure (the cell is `cancelled`, and keeps its attempts and
    /// times), or why it is `missing`. `null` when it passed, and when it was
    /// cancelled while it ran.
    pub error: Option<String>,
}

impl CellReport {
    /// The report of `cell` that never ran: `status`, with `error`.
    pub fn unstarted(cell: &Cell, status: CellStatus, error: Option<String>) -> CellReport {
        CellReport {
            id: cell.id.clone(),
            executor: cell.executor.clone(),
            kernconf: cell.kernconf.clone(),
            target_arch: cell.target_arch.clone(),
            make_flag: cell.make_flag.clone(),
            machine: cell.machine.clone(),
            status,
            duration_s: 0.0,
            started_at: None,
            finished_at: None,
            attempts: Vec::new(),
            result_store: None,
            artifacts: BTreeMap::new(),
            signed_by: None,
            signatures_not_recorded: Vec::new(),
            log: None,
            error,
        }
    }
}

/// One attempt of a cell, in a cell's `attempts`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptReport {
    /// The attempt's number: 1 for the first, then one more for each retry.
    pub attempt: u32,
    /// Where it ran: a machine's name in the machines file, or `local` (the
    /// host that ran the matrix).
    pub machine: String,
    /// When it started, Unix time in seconds.
    pub started_at: f64,
    /// When its build ended, Unix time in seconds (promotion, which follows a
    /// passed build, is not included).
    pub finished_at: f64,
    /// How its build ended: `passed` (the cell's own `status` also says whether
    /// promotion did), `build-failure`, `system-failure` or `cancelled`.
    pub status: CellStatus,
    /// The attempt's error message; `null` when its build passed.
    pub error: Option<String>,
}

/// One artifact compared across cells that must agree.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgreementReport {
    /// The artifact's name (`world`, `kernel`, ...).
    pub artifact: String,
    /// The ids of the cells compared: the group's passed cells, in matrix
    /// order.
    pub cells: Vec<String>,
    /// Whether every compared cell has the same tree signature (a cell without
    /// the artifact disagrees).
    pub agree: bool,
    /// Each cell's tree signature (`null`: the cell has no such artifact).
    pub signatures: BTreeMap<String, Option<String>>,
    /// Paths in which the first cell's tree differs from each cell of
    /// another signature (at most
    /// [`MAX_DIFFERENCES`](agreement::MAX_DIFFERENCES) per pair).
    pub differences: Vec<DifferenceReport>,
    /// The pairs of cells whose files could not be listed, and why (no
    /// store given, objects not in it, unreadable manifests): such a pair
    /// has no `differences` and no `diffoscope` entries. Given with or
    /// without `--diff diffoscope`; empty when every pair was compared.
    pub not_compared: Vec<NotComparedReport>,
    /// diffoscope's comparisons of the first differing files of each pair
    /// (at most [`DIFFOSCOPE_FILES`](agreement::DIFFOSCOPE_FILES)), with
    /// `--diff diffoscope` only; each names the file it compared.
    pub diffoscope: Vec<DiffoscopeReport>,
}

/// One path in which two cells' trees of an artifact differ, an entry of
/// `differences`: `cells`, then the [`FileDifference`] fields (`path`,
/// `change`, `first`, `second`) inline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DifferenceReport {
    /// The two cells compared: `first` and `second` are theirs.
    pub cells: [String; 2],
    /// The path and both sides of it, written inline (there is no `difference`
    /// key).
    #[serde(flatten)]
    pub difference: FileDifference,
}

/// A pair of cells whose differing files could not be listed: an entry of
/// `not_compared`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NotComparedReport {
    /// The two cells, by id, as in `differences`.
    pub cells: [String; 2],
    /// Why, for a program: `no-store`, `not-in-store` or
    /// `unreadable-manifest` ([`NotCompared`]).
    pub reason: NotCompared,
    /// Why, for a person: what was missing, and what to do (`no store holds
    /// the objects to compare their files (give --store)`).
    pub message: String,
}

/// Why the files of a pair of cells were not compared: the `reason` of a
/// [`NotComparedReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotCompared {
    /// `no-store`: no store was given to read the objects from (`matrix
    /// collect` without `--store`).
    NoStore,
    /// `not-in-store`: an object is not directly in the store given (the
    /// cells promoted into another store).
    NotInStore,
    /// `unreadable-manifest`: the manifest of an object could not be read.
    UnreadableManifest,
}

/// One diffoscope comparison of a file in which two cells differ: an entry
/// of `diffoscope`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiffoscopeReport {
    /// The two cells, by id: the first cell of the artifact's first signature,
    /// then a cell of another signature.
    pub cells: [String; 2],
    /// The manifest path of the file compared (`./usr/lib/libc.so.7`).
    pub path: String,
    /// diffoscope's output, when it ran.
    pub output: Option<PathBuf>,
    /// What happened (`differences found`, `not installed`, ...).
    pub status: String,
}

/// Writes report file `path` atomically (see
/// [`write_atomic`](fruix_core::fsutil::write_atomic)); a failure is
/// [`Error::Report`] naming it.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    fruix_core::fsutil::write_atomic(path, bytes).map_err(|e| match e {
        fruix_core::Error::Io { source, .. } => write_error(path, source),
        e => e.into(),
    })
}

fn write_error(path: &Path, source: std::io::Error) -> Error {
    Error::Report {
        action: "write",
        path: path.to_path_buf(),
        source,
    }
}

/// Unix time in seconds (0 for a time before 1970).
pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A run's clock: the wall clock, read once when the run starts, and the
/// monotonic clock ([`Instant`]), read then and whenever something starts
/// or ends. Every time a report gives is the start's wall time plus the
/// monotonic time since ([`RunClock::unix`]), and every duration is
/// measured on the monotonic clock: the wall clock stepped back or forth
/// while the run went on (NTP, an operator) changes neither, and no end
/// comes before its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunClock {
    /// The wall clock when the run started.
    pub wall: SystemTime,
    /// The monotonic clock then.
    pub at: Instant,
}

impl RunClock {
    /// The clocks, read now.
    pub fn now() -> RunClock {
        RunClock {
            wall: SystemTime::now(),
            at: Instant::now(),
        }
    }

    /// `t` in Unix time, seconds: the start's wall time plus `t`'s
    /// monotonic time since the start (none for a `t` before it).
    pub fn unix(&self, t: Instant) -> f64 {
        unix_after(self.wall, t.saturating_duration_since(self.at))
    }

    /// Seconds from the start until now, on the monotonic clock.
    pub fn elapsed_s(&self) -> f64 {
        self.at.elapsed().as_secs_f64()
    }
}

/// `wall` plus `elapsed`, in Unix time: seconds (0 for a time before
/// 1970). Never less for a longer `elapsed`, whatever the wall clock did
/// meanwhile.
pub fn unix_after(wall: SystemTime, elapsed: Duration) -> f64 {
    wall.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(elapsed)
        .as_secs_f64()
}

/// The per-cell part of the report: `cells` with their `records` (in
/// matrix order), their times read on `clock`, and `log(i)` the log file
/// of cell `i`.
pub fn cell_reports(
    cells: &[Cell],
    records: &[CellRecord],
    clock: &RunClock,
    log: impl Fn(usize) -> PathBuf,
) -> Vec<CellReport> {
    cells
        .iter()
        .zip(records)
        .enumerate()
        .map(|(i, (cell, r))| {
            let started = r.attempts.first().map(|a| a.started);
            let promoted = r.promoted.clone().unwrap_or_default();
            CellReport {
                machine: r
                    .attempts
                    .last()
                    .map(|a| a.machine.clone())
                    .or_else(|| cell.machine.clone()),
                status: r.status,
                duration_s: match (started, r.finished) {
                    (Some(s), Some(f)) => f.saturating_duration_since(s).as_secs_f64(),
                    _ => 0.0,
                },
                started_at: started.map(|t| clock.unix(t)),
                finished_at: r.finished.map(|t| clock.unix(t)),
                attempts: r
                    .attempts
                    .iter()
                    .map(|a| AttemptReport {
                        attempt: a.attempt,
                        machine: a.machine.clone(),
                        started_at: clock.unix(a.started),
                        finished_at: clock.unix(a.finished),
                        status: a.status,
                        error: a.error.clone(),
                    })
                    .collect(),
                result_store: r.promoted.as_ref().map(|p| p.result_store.clone()),
                artifacts: promoted.artifacts,
                signed_by: promoted.signed_by,
                signatures_not_recorded: promoted.signatures_not_recorded,
                log: (!r.attempts.is_empty()).then(|| log(i)),
                error: r.error.clone(),
                ..CellReport::unstarted(cell, r.status, None)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::expand::cells;
    use crate::runner::{AttemptRecord, Promoted};

    /// A clock whose run started at the Unix epoch, so that a time `at`
    /// gives is its seconds since.
    fn epoch_clock() -> RunClock {
        RunClock {
            wall: UNIX_EPOCH,
            at: Instant::now(),
        }
    }

    /// `secs` seconds after the start of [`epoch_clock`]'s run `clock`.
    fn at(clock: &RunClock, secs: u64) -> Instant {
        clock.at + Duration::from_secs(secs)
    }

    #[test]
    fn cell_reports_follow_the_records() {
        let file = crate::testing::pinned_matrix();
        let cells = cells(&file).unwrap();
        let clock = &epoch_clock();
        let attempt = |n, machine: &str, status| AttemptRecord {
            attempt: n,
            machine: machine.into(),
            started: at(clock, 100 * u64::from(n)),
            finished: at(clock, 100 * u64::from(n) + 10),
            status,
            error: (status != CellStatus::Passed).then(|| "connection lost".into()),
        };
        let promoted = Promoted {
            result_store: "/store/r".into(),
            signed_by: None,
            signatures_not_recorded: vec!["/store/w".into()],
            artifacts: BTreeMap::from([(
                "world".to_string(),
                PromotedArtifact {
                    store_path: "/store/w".into(),
                    tree_signature: "sha256:w".into(),
                },
            )]),
        };
        let records = [
            CellRecord {
                status: CellStatus::Passed,
                attempts: vec![
                    attempt(1, "m1", CellStatus::SystemFailure),
                    attempt(2, "m2", CellStatus::Passed),
                ],
                promoted: Some(promoted),
                error: None,
                finished: Some(at(clock, 215)),
            },
            CellRecord::default(),
        ];
        let reports = cell_reports(&cells, &records, clock, |i| format!("/logs/{i}.log").into());
        let (retried, never) = (&reports[0], &reports[1]);
        assert_eq!(retried.id, "remote");
        assert_eq!(retried.machine.as_deref(), Some("m2"), "the last attempt's");
        assert_eq!(retried.duration_s, 115.0, "from the first start to the end");
        assert_eq!(
            (retried.started_at, retried.finished_at),
            (Some(100.0), Some(215.0))
        );
        assert_eq!(
            retried.attempts[0].error.as_deref(),
            Some("connection lost")
        );
        assert_eq!(retried.attempts[1].started_at, 200.0);
        assert_eq!(retried.result_store.as_deref(), Some(Path::new("/store/r")));
        assert_eq!(retried.artifacts["world"].tree_signature, "sha256:w");
        assert_eq!(retried.log.as_deref(), Some(Path::new("/logs/0.log")));
        assert_eq!(never.log, None, "a cell that never started has no log");
        assert_eq!(never.status, CellStatus::Cancelled);
        assert_eq!(never.machine.as_deref(), Some("m2"), "the pinned machine");
        assert_eq!((never.duration_s, never.started_at), (0.0, None));
        assert_eq!(never.error.as_deref(), Some("never started"));
        // report.json says which objects lack the machine's signature, and
        // a cell report carrying the list reads back.
        let json = serde_json::to_value(retried).unwrap();
        assert_eq!(
            json["signatures_not_recorded"],
            serde_json::json!(["/store/w"])
        );
        assert!(json.get("signed_by").is_none(), "{json}");
        let back: CellReport = serde_json::from_value(json).unwrap();
        assert_eq!(&back, retried);
        let json = serde_json::to_value(never).unwrap();
        assert!(json.get("signatures_not_recorded").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<CellReport>(json).unwrap(), *never);
    }

    /// The times of a cell report are the run's start in wall time plus
    /// what the monotonic clock measured since: whatever the wall clock
    /// read when the run started (even before 1970) and did afterwards
    /// (the report never reads it again), no end comes before its start,
    /// and the duration is the one measured.
    #[test]
    fn a_cell_reports_times_never_contradict_themselves() {
        let file = crate::testing::pinned_matrix();
        let cells = cells(&file).unwrap();
        let started = Instant::now();
        let record = |first: Duration, took: Duration| CellRecord {
            status: CellStatus::Passed,
            attempts: vec![AttemptRecord {
                attempt: 1,
                machine: "m1".into(),
                started: started + first,
                finished: started + first + took,
                status: CellStatus::Passed,
                error: None,
            }],
            promoted: None,
            error: None,
            finished: Some(started + first + took + Duration::from_millis(250)),
        };
        let walls = [
            UNIX_EPOCH + Duration::from_secs(1_775_424_884),
            UNIX_EPOCH + Duration::from_nanos(1_775_424_884_999_999_999),
            UNIX_EPOCH,
            UNIX_EPOCH - Duration::from_secs(3600),
        ];
        let spans = [
            (Duration::ZERO, Duration::ZERO),
            (Duration::from_nanos(1), Duration::from_nanos(1)),
            (Duration::from_secs(7), Duration::from_millis(3_500)),
        ];
        for wall in walls {
            let clock = RunClock { wall, at: started };
            for (first, took) in spans {
                let r = &cell_reports(&cells, &[record(first, took)], &clock, |_| "l".into())[0];
                let (s, f) = (r.started_at.unwrap(), r.finished_at.unwrap());
                let a = &r.attempts[0];
                assert!(s <= f && a.started_at <= a.finished_at, "{r:?}");
                assert_eq!(a.started_at, s, "{r:?}");
                assert!(a.finished_at <= f, "{r:?}");
                let measured = (took + Duration::from_millis(250)).as_secs_f64();
                assert_eq!(r.duration_s, measured, "{r:?}");
                assert_eq!(s, unix_after(wall, first), "{r:?}");
                assert!((f - s - measured).abs() < 1e-6, "{r:?}");
            }
        }
    }

    #[test]
    fn a_time_after_a_start_is_never_before_it() {
        let wall = UNIX_EPOCH + Duration::from_nanos(1_775_424_884_123_456_789);
        let mut last = unix_after(wall, Duration::ZERO);
        for nanos in [1, 2, 999, 1_000_000, 999_999_999, 86_400_000_000_000] {
            let t = unix_after(wall, Duration::from_nanos(nanos));
            assert!(t >= last, "{nanos}: {t} < {last}");
            last = t;
        }
        assert_eq!(
            unix_after(UNIX_EPOCH - Duration::from_secs(1), Duration::ZERO),
            0.0
        );
        assert_eq!(unix_after(UNIX_EPOCH, Duration::from_secs(5)), 5.0);
    }

    #[test]
    fn cancellation_then_failed_cells_then_divergence_decide_the_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let mut report = fixtures::report(dir.path());
        assert_eq!(report.outcome(), Outcome::CellsFailed);
        report.cancelled = true;
        assert_eq!(report.outcome(), Outcome::Cancelled);
        report.cancelled = false;
        report.cells.retain(|c| c.status == CellStatus::Passed);
        assert_eq!(report.outcome(), Outcome::Diverged);
        report.agreement.retain(|a| a.agree);
        assert_eq!(report.outcome(), Outcome::Passed);
    }

    #[test]
    fn report_json_carries_cells_agreement_and_machines_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let report = fixtures::report(dir.path());
        let (json, xml) = report.write(dir.path()).unwrap();
        assert_eq!(
            (json.file_name(), xml.file_name()),
            (Some("report.json".as_ref()), Some("junit.xml".as_ref()))
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["matrix"], "/ci/matrix.scm");
        assert_eq!(v["max_parallel"], 4);
        assert_eq!(v["cancelled"], false);
        assert_eq!(v["machines_file"], "/ci/machines.scm");
        assert_eq!(v.get("pipeline_run"), Some(&serde_json::Value::Null));
        let failed = &v["cells"][1];
        assert_eq!(failed["status"], "build-failure");
        assert_eq!(failed["make_flag"], serde_json::Value::Null);
        assert_eq!(
            failed["attempts"][0]["error"],
            "build step `buildworld` failed"
        );
        assert_eq!(
            v["cells"][0]["artifacts"]["world"]["tree_signature"],
            "sha256:w1"
        );
        let world = &v["agreement"][1];
        assert_eq!(world["agree"], false);
        assert_eq!(
            (&world["not_compared"], &world["diffoscope"]),
            (&serde_json::json!([]), &serde_json::json!([]))
        );
        assert_eq!(world["signatures"]["remote-GENERIC"], "sha256:w2");
        let d = &world["differences"][0];
        assert_eq!(
            d["cells"],
            serde_json::json!(["local-GENERIC", "remote-GENERIC"])
        );
        assert_eq!(
            (d["path"].as_str(), d["change"].as_str()),
            (Some("./stamp"), Some("modified"))
        );
        assert_eq!(
            (d["first"]["type"].as_str(), d["first"]["size"].as_u64()),
            (Some("file"), Some(3))
        );
        assert_eq!(v["machines_set_aside"][0]["machine"], "m1");
        let junit = std::fs::read_to_string(&xml).unwrap();
        assert!(junit.ends_with("</testsuites>\n"), "{junit:?}");
    }

    #[test]
    fn an_unwritable_report_directory_is_a_system_failure() {
        let dir = tempfile::tempdir().unwrap();
        let report = fixtures::report(dir.path());
        let e = report.write(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, Error::Report { .. }), "{e:?}");
        assert_eq!(e.failure(), fruix_core::Failure::System);
        assert!(e.to_string().starts_with("cannot write "), "{e}");
    }
}
