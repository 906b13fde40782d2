//! The pipeline run a cell report belongs to, and how [`collect`] tells
//! this run's reports from those an earlier run left where it looks.
//!
//! A CI engine names each run of a pipeline: GitHub Actions'
//! `github.run_id` (shared by the attempts of one workflow run), GitLab
//! CI's `CI_PIPELINE_ID`, the build number of the Buildbot driver.
//! `run-cell --pipeline-run ID` records it in the cell report
//! ([`CellFile::pipeline_run`]), and `collect --pipeline-run ID` takes
//! only the reports of that run, and names it in its `report.json`
//! ([`Report::pipeline_run`]): a report of another run (or of none) is
//! set aside, and its cell, unless this run reported it, is `missing`
//! with an error naming the file set aside. That is what keeps a workspace
//! a self-hosted runner reuses from one pipeline run to the next from
//! passing an earlier run's report on as this run's, when this run's cell
//! job died before it wrote its own. Without `--pipeline-run`, collect
//! cannot tell runs apart: every report must then be of one run (or of
//! none, as older reports are), else it refuses them all.
//!
//! A pipeline run id read from a report is untrusted: it is a word of at
//! most [`MAX_PIPELINE_RUN_LEN`] ASCII letters, digits, `.`, `_` and `-`,
//! starting with a letter or digit ([`PipelineRun::new`]), so that it
//! prints as it is; a report giving anything else is refused.
//!
//! [`collect`]: super::collect
//! [`Report::pipeline_run`]: crate::report::Report::pipeline_run

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fruix_core::escape;

use super::{CellFile, CellReportProblem};

/// The longest pipeline run id, in bytes.
pub const MAX_PIPELINE_RUN_LEN: usize = 128;

/// The id of a CI engine's pipeline run (checked: [`PipelineRun::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PipelineRun(String);

impl PipelineRun {
    /// `id` as a pipeline run id: 1 to [`MAX_PIPELINE_RUN_LEN`] ASCII
    /// letters, digits, `.`, `_` and `-`, the first a letter or digit.
    /// The refusal does not repeat `id`, which the caller shows escaped if
    /// at all.
    pub fn new(id: &str) -> Result<PipelineRun, String> {
        let word = id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        let starts = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if word && starts && id.len() <= MAX_PIPELINE_RUN_LEN {
            Ok(PipelineRun(id.to_string()))
        } else {
            Err(format!(
                "is no pipeline run id, which is 1 to {MAX_PIPELINE_RUN_LEN} letters, digits, `.`, `_` or `-`, the first a letter or digit (the CI engine's id of the run, such as GitLab CI's $CI_PIPELINE_ID)"
            ))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PipelineRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PipelineRun {
    type Err = String;
    fn from_str(id: &str) -> Result<PipelineRun, String> {
        PipelineRun::new(id)
    }
}

impl TryFrom<String> for PipelineRun {
    type Error = String;
    fn try_from(id: String) -> Result<PipelineRun, String> {
        PipelineRun::new(&id)
    }
}

impl From<PipelineRun> for String {
    fn from(run: PipelineRun) -> String {
        run.0
    }
}

/// `pipeline run ID`, or `no pipeline run`.
fn named(run: Option<&PipelineRun>) -> String {
    match run {
        Some(run) => format!("pipeline run {run}"),
        None => "no pipeline run".into(),
    }
}

/// A report read, as far as its pipeline run goes: its path and its run.
#[derive(Debug)]
pub(super) struct RunOf {
    path: PathBuf,
    run: Option<PipelineRun>,
}

/// What [`collect`](super::collect) makes of each report's pipeline run.
#[derive(Debug)]
pub(super) enum Runs {
    /// `--pipeline-run ID`: reports of other runs are set aside, by the
    /// cell id they give.
    Only {
        /// The pipeline run collected.
        wanted: PipelineRun,
        /// The reports of other runs, by cell id.
        set_aside: HashMap<String, Vec<RunOf>>,
    },
    /// No `--pipeline-run`: every report must be of the first one's run.
    Same {
        /// The first report read, and its run.
        first: Option<RunOf>,
    },
}

impl Runs {
    /// Collects the reports of pipeline run `wanted`, or else of one run.
    pub(super) fn new(wanted: Option<PipelineRun>) -> Runs {
        match wanted {
            Some(wanted) => Runs::Only {
                wanted,
                set_aside: HashMap::new(),
            },
            None => Runs::Same { first: None },
        }
    }

    /// Whether `report`, read from `path`, is of the pipeline run
    /// collected; one that is not is set aside. Without `--pipeline-run`,
    /// a report of another run than the first one's is refused.
    pub(super) fn of_this_run(
        &mut self,
        path: &Path,
        report: &CellFile,
    ) -> Result<bool, CellReportProblem> {
        let run = report.pipeline_run.as_ref();
        match self {
            Runs::Only { wanted, set_aside } if run != Some(wanted) => {
                let aside = set_aside.entry(report.cell.id.clone()).or_default();
                aside.push(RunOf {
                    path: path.to_path_buf(),
                    run: run.cloned(),
                });
                Ok(false)
            }
            Runs::Only { .. } => Ok(true),
            Runs::Same { first: Some(first) } if first.run.as_ref() != run => {
                Err(CellReportProblem::SeveralPipelineRuns {
                    run: named(run),
                    other: escape::path(&first.path).cut_at(200).to_string(),
                    other_run: named(first.run.as_ref()),
                })
            }
            Runs::Same { first } => {
                first.get_or_insert_with(|| RunOf {
                    path: path.to_path_buf(),
                    run: run.cloned(),
                });
                Ok(true)
            }
        }
    }

    /// What the error of cell `id`, `missing`, says of the pipeline run:
    /// `of pipeline run ID ` (before `was collected`), and after it the
    /// reports of other runs that gave `id`, set aside (the first 3).
    pub(super) fn missing_note(&self, id: &str) -> (String, String) {
        const SHOWN: usize = 3;
        let Runs::Only { wanted, set_aside } = self else {
            return (String::new(), String::new());
        };
        let of = format!("of pipeline run {wanted} ");
        let Some(aside) = set_aside.get(id) else {
            return (of, String::new());
        };
        let shown: Vec<String> = aside
            .iter()
            .take(SHOWN)
            .map(|a| format!("{} ({})", escape::path(&a.path), named(a.run.as_ref())))
            .collect();
        let more = match aside.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        let after = format!(
            "; reports of other pipeline runs are not collected: {}{more}",
            shown.join(", ")
        );
        (of, after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_run_id_is_a_bounded_word() {
        for good in ["1", "4242-1", "nightly.2026_04", &"9".repeat(128)] {
            assert_eq!(PipelineRun::new(good).unwrap().as_str(), good);
        }
        let long = "9".repeat(129);
        for bad in ["", "-1", ".x", "a b", "a/b", "r\u{1b}[31m", "é", &long] {
            let refused = PipelineRun::new(bad).unwrap_err();
            assert!(refused.starts_with("is no pipeline run id"), "{refused}");
        }
        // Read from a report, as strictly.
        let read: Result<PipelineRun, _> = serde_json::from_str("\"a\\nb\"");
        assert!(read.is_err());
        assert_eq!(
            serde_json::to_string(&PipelineRun::new("42").unwrap()).unwrap(),
            "\"42\""
        );
    }
}
