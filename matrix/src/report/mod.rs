//! The reports of a matrix run: `report.json` (this module's [`Report`]),
//! the agreement check with its file-by-file differences ([`agreement`]),
//! `junit.xml` ([`junit`]), and the table printed at the end ([`table`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::agreement::FileDifference;
use crate::expand::Cell;
use crate::runner::{CellRecord, CellStatus, PromotedArtifact};
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
    pub matrix: PathBuf,
    /// Unix time, seconds.
    pub started_at: f64,
    pub duration_s: f64,
    pub max_parallel: Option<u32>,
    /// Ctrl-C stopped the run.
    pub cancelled: bool,
    pub cells: Vec<CellReport>,
    pub agreement: Vec<AgreementReport>,
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
        std::fs::write(&json, json_text).map_err(|e| write_error(&json, e))?;
        let xml_text = junit::junit(self, &hostname)
            .to_string()
            .map_err(|e| write_error(&xml, std::io::Error::other(e)))?
            + "\n";
        std::fs::write(&xml, xml_text).map_err(|e| write_error(&xml, e))?;
        Ok((json, xml))
    }
}

/// A machine set aside during the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetAside {
    pub machine: String,
    pub reason: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CellReport {
    pub id: String,
    pub executor: String,
    pub kernconf: String,
    pub target_arch: String,
    pub make_flag: Option<String>,
    /// Where the last attempt ran (a machine, or `local`), or the pinned
    /// machine of a cell that never started.
    pub machine: Option<String>,
    pub status: CellStatus,
    pub duration_s: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub attempts: Vec<AttemptReport>,
    pub result_store: Option<PathBuf>,
    pub artifacts: BTreeMap<String, PromotedArtifact>,
    pub log: PathBuf,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptReport {
    pub attempt: u32,
    pub machine: String,
    pub started_at: f64,
    pub finished_at: f64,
    pub status: CellStatus,
    pub error: Option<String>,
}

/// One artifact compared across cells that must agree.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgreementReport {
    pub artifact: String,
    pub cells: Vec<String>,
    pub agree: bool,
    /// Each cell's tree signature (`null`: the cell has no such artifact).
    pub signatures: BTreeMap<String, Option<String>>,
    /// Paths in which the first cell's tree differs from each cell of
    /// another signature.
    pub differences: Vec<DifferenceReport>,
    pub diffoscope: Vec<DiffoscopeReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DifferenceReport {
    /// The two cells compared: `first` and `second` are theirs.
    pub cells: [String; 2],
    #[serde(flatten)]
    pub difference: FileDifference,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DiffoscopeReport {
    pub cells: [String; 2],
    pub path: String,
    /// diffoscope's output, when it ran.
    pub output: Option<PathBuf>,
    /// What happened (`differences found`, `not installed`, ...).
    pub status: String,
}

fn write_error(path: &Path, source: std::io::Error) -> Error {
    Error::Report {
        action: "write",
        path: path.to_path_buf(),
        source,
    }
}

/// Unix time in seconds.
pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The per-cell part of the report: `cells` with their `records` (in
/// matrix order), and `log(i)` the log file of cell `i`.
pub fn cell_reports(
    cells: &[Cell],
    records: &[CellRecord],
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
                id: cell.id.clone(),
                executor: cell.executor.clone(),
                kernconf: cell.kernconf.clone(),
                target_arch: cell.target_arch.clone(),
                make_flag: cell.make_flag.clone(),
                machine: r
                    .attempts
                    .last()
                    .map(|a| a.machine.clone())
                    .or_else(|| cell.machine.clone()),
                status: r.status,
                duration_s: match (started, r.finished) {
                    (Some(s), Some(f)) => f.duration_since(s).unwrap_or_default().as_secs_f64(),
                    _ => 0.0,
                },
                started_at: started.map(unix),
                finished_at: r.finished.map(unix),
                attempts: r
                    .attempts
                    .iter()
                    .map(|a| AttemptReport {
                        attempt: a.attempt,
                        machine: a.machine.clone(),
                        started_at: unix(a.started),
                        finished_at: unix(a.finished),
                        status: a.status,
                        error: a.error.clone(),
                    })
                    .collect(),
                result_store: r.promoted.as_ref().map(|p| p.result_store.clone()),
                artifacts: promoted.artifacts,
                log: log(i),
                error: r.error.clone(),
            }
        })
        .collect()
}
