//! The reports of a matrix run: `report.json`, the agreement check with
//! its file-by-file differences (and diffoscope's, on request), and the
//! table printed at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fruix_core::matrix::agreement::{compare, diff_manifests, FileDifference};
use fruix_promote::check::read_store_manifest;

use super::plan::MatrixPlan;
use super::runner::{CellRecord, CellStatus, PromotedArtifact};

/// How many differing paths are listed per pair of cells and artifact.
pub const MAX_DIFFERENCES: usize = 200;

/// How many differing files diffoscope is run on per pair and artifact.
pub const DIFFOSCOPE_FILES: usize = 3;

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

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The per-cell part of the report.
pub fn cell_reports(
    plan: &MatrixPlan,
    records: &[CellRecord],
    log: impl Fn(usize) -> PathBuf,
) -> Vec<CellReport> {
    plan.cells
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

/// Compares the artifacts of every group of passed cells that must agree;
/// with `diffoscope`, runs it on the first differing files, writing its
/// output under `report_dir/diffoscope/`.
pub fn agreement(
    plan: &MatrixPlan,
    cells: &[CellReport],
    diffoscope: bool,
    report_dir: &Path,
) -> Vec<AgreementReport> {
    let mut out = Vec::new();
    for group in plan.agreement_groups() {
        let members: Vec<(usize, BTreeMap<String, String>)> = group
            .iter()
            .filter(|i| cells[**i].status == CellStatus::Passed)
            .map(|i| {
                let signatures = cells[*i]
                    .artifacts
                    .iter()
                    .map(|(name, a)| (name.clone(), a.tree_signature.clone()))
                    .collect();
                (*i, signatures)
            })
            .collect();
        for comparison in compare(&members) {
            let artifact = comparison.artifact.clone();
            let mut report = AgreementReport {
                agree: comparison.agrees(),
                cells: comparison
                    .cells
                    .iter()
                    .map(|i| cells[*i].id.clone())
                    .collect(),
                signatures: comparison
                    .classes
                    .iter()
                    .flat_map(|(sig, members)| {
                        members.iter().map(|i| (cells[*i].id.clone(), sig.clone()))
                    })
                    .collect(),
                differences: Vec::new(),
                diffoscope: Vec::new(),
                artifact,
            };
            let reference = comparison.classes[0].1[0];
            for (_, class) in &comparison.classes[1..] {
                compare_pair(
                    &mut report,
                    &cells[reference],
                    &cells[class[0]],
                    diffoscope,
                    report_dir,
                );
            }
            out.push(report);
        }
    }
    out
}

/// Lists the differences of `report.artifact` between two cells.
fn compare_pair(
    report: &mut AgreementReport,
    first: &CellReport,
    second: &CellReport,
    diffoscope: bool,
    report_dir: &Path,
) {
    let pair = [first.id.clone(), second.id.clone()];
    let (Some(a), Some(b)) = (
        first.artifacts.get(&report.artifact),
        second.artifacts.get(&report.artifact),
    ) else {
        return;
    };
    let differences = match (
        read_store_manifest(&a.store_path),
        read_store_manifest(&b.store_path),
    ) {
        (Ok(x), Ok(y)) => diff_manifests(&x, &y),
        (Err(e), _) | (_, Err(e)) => {
            report.diffoscope.push(DiffoscopeReport {
                cells: pair,
                path: String::new(),
                output: None,
                status: format!("cannot read the manifests to compare: {e}"),
            });
            return;
        }
    };
    if diffoscope {
        let files = differences
            .iter()
            .filter(|d| d.change == "modified")
            .filter(|d| matches!((&d.first, &d.second), (Some(x), Some(y)) if x.kind == "file" && y.kind == "file"))
            .take(DIFFOSCOPE_FILES);
        for (n, d) in files.enumerate() {
            let relative = d.path.trim_start_matches("./");
            let output = report_dir.join("diffoscope").join(format!(
                "{}-{}-vs-{}-{}.txt",
                report.artifact,
                first.id,
                second.id,
                n + 1
            ));
            let status = run_diffoscope(
                &a.store_path.join(relative),
                &b.store_path.join(relative),
                &output,
            );
            report.diffoscope.push(DiffoscopeReport {
                cells: pair.clone(),
                path: d.path.clone(),
                output: output.exists().then_some(output),
                status,
            });
        }
    }
    report.differences.extend(
        differences
            .into_iter()
            .take(MAX_DIFFERENCES)
            .map(|difference| DifferenceReport {
                cells: pair.clone(),
                difference,
            }),
    );
}

/// The message given when diffoscope is asked for but not installed.
pub const DIFFOSCOPE_MISSING: &str =
    "diffoscope is not installed (Debian package diffoscope, or pip install diffoscope); the differing files are listed without diffoscope's comparison";

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn run_diffoscope(first: &Path, second: &Path, output: &Path) -> String {
    if !on_path("diffoscope") {
        return "not installed".into();
    }
    if let Some(dir) = output.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = match std::fs::File::create(output) {
        Ok(f) => f,
        Err(e) => return format!("cannot write {}: {e}", output.display()),
    };
    match std::process::Command::new("diffoscope")
        .arg(first)
        .arg(second)
        .stdout(file)
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.code() == Some(0) => "no differences".into(),
        Ok(s) if s.code() == Some(1) => "differences found".into(),
        Ok(s) => format!("diffoscope failed ({s})"),
        Err(e) => format!("cannot run diffoscope: {e}"),
    }
}

/// The table printed at the end of a run.
pub fn table(report: &Report) -> String {
    let rows: Vec<[String; 4]> = report
        .cells
        .iter()
        .map(|c| {
            let retries = if c.attempts.len() > 1 {
                format!(" ({} attempts)", c.attempts.len())
            } else {
                String::new()
            };
            [
                c.id.clone(),
                c.machine.clone().unwrap_or_else(|| "-".into()),
                format!("{}{retries}", c.status.as_str()),
                format!("{:.1}s", c.duration_s),
            ]
        })
        .collect();
    let header = ["CELL", "MACHINE", "STATUS", "TIME"].map(String::from);
    let widths: Vec<usize> = (0..4)
        .map(|k| {
            rows.iter()
                .chain([&header])
                .map(|r| r[k].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in [&header].into_iter().chain(&rows) {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for c in report.cells.iter().filter(|c| c.error.is_some()) {
        out.push_str(&format!(
            "{}: {}\n  log: {}\n",
            c.id,
            c.error.as_deref().unwrap_or_default(),
            c.log.display()
        ));
    }
    for a in &report.agreement {
        if a.agree {
            out.push_str(&format!(
                "agreement: {}: {} agree\n",
                a.artifact,
                a.cells.join(", ")
            ));
            continue;
        }
        out.push_str(&format!("DIVERGENCE: {}:", a.artifact));
        for (cell, sig) in &a.signatures {
            out.push_str(&format!(
                " {cell}={}",
                sig.as_deref().unwrap_or("(missing)")
            ));
        }
        out.push('\n');
        for d in &a.differences {
            out.push_str(&format!(
                "  {} vs {}: {} {}\n",
                d.cells[0], d.cells[1], d.difference.change, d.difference.path
            ));
        }
        for d in &a.diffoscope {
            out.push_str(&format!(
                "  diffoscope {}: {}{}\n",
                d.path,
                d.status,
                d.output
                    .as_ref()
                    .map(|o| format!(" ({})", o.display()))
                    .unwrap_or_default()
            ));
        }
    }
    for s in &report.machines_set_aside {
        out.push_str(&format!("machine {} set aside: {}\n", s.machine, s.reason));
    }
    out
}
