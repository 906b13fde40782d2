//! The agreement part of the report: for each artifact of each group of
//! cells that must agree, the cells' tree signatures; on divergence, the
//! paths in which two store objects differ (read from their manifests) and,
//! on request, diffoscope's comparison of the first differing files.

use std::collections::BTreeMap;
use std::path::Path;

use fruix_promote::check::read_store_manifest;

use super::{AgreementReport, CellReport, DifferenceReport, DiffoscopeReport};
use crate::agreement::{compare, diff_manifests};
use crate::runner::CellStatus;

/// How many differing paths are listed per pair of cells and artifact.
pub const MAX_DIFFERENCES: usize = 200;

/// How many differing files diffoscope is run on per pair and artifact.
pub const DIFFOSCOPE_FILES: usize = 3;

/// Compares the artifacts of every group of passed cells that must agree;
/// with `diffoscope`, runs it on the first differing files, writing its
/// output under `report_dir/diffoscope/`.
pub fn agreement(
    groups: &[Vec<usize>],
    cells: &[CellReport],
    diffoscope: bool,
    report_dir: &Path,
) -> Vec<AgreementReport> {
    let mut out = Vec::new();
    for group in groups {
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

/// Whether diffoscope is on PATH.
pub fn diffoscope_installed() -> bool {
    on_path("diffoscope")
}

/// Whether `program` is on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn run_diffoscope(first: &Path, second: &Path, output: &Path) -> String {
    if !diffoscope_installed() {
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
