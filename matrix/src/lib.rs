//! Fruix build matrices: one FreeBSD base build across several executors,
//! configurations and build machines at once, every passed cell promoted,
//! and a check that the execution modes agree.
//!
//! `fruix matrix plan` and `fruix matrix run` are thin edges over this
//! crate. From file to report:
//!
//! - [`file`](mod@file) reads a matrix file (`(fruix-matrix ...)`) strictly: every
//!   error names its field and line. [`axis`] lists what cells vary in.
//! - [`expand`] turns axes, `exclude` and `include` into cells with GitHub
//!   Actions' semantics (exclude first, then include), and gives each cell a
//!   readable, unique id.
//! - [`plan`] checks a matrix against this fruix before anything runs
//!   (executors, their configuration, machines, the source) and makes each
//!   cell's build request through [`request`], which `fruix build` shares.
//! - [`schedule`] decides where and when each cell runs: per-machine
//!   parallel-builds slots, fastest free machine first, machines set aside
//!   after they fail to connect, a global `max-parallel`, a slot limit for
//!   local cells, retries of system failures on another machine, and
//!   fail-fast. It is pure: a whole run can be simulated. [`host_slots`]
//!   makes a machine's slots hold across the fruix processes of a host
//!   that share a state directory (lock files).
//! - [`runner`] is the concurrent loop over a [`runner::CellRunner`] (with
//!   Ctrl-C and fail-fast cancellation); [`cell`] is the real runner, which
//!   builds each attempt with its executor (found through the registry) and
//!   promotes a built cell into the store, telling an [`cell::Observer`].
//! - [`agreement`] groups the cells that must agree and lists the files in
//!   which two artifacts differ; [`report`] writes `report.json`,
//!   `junit.xml` and the table.
//! - [`run`](mod@run) ties these together for one run, into a report
//!   directory that [`report_dir`] makes and clears of an earlier run's
//!   report, and where [`result_link`] links each passed cell's result
//!   bundle, by descriptor.
//! - [`export`] writes a matrix as a GitHub Actions, GitLab CI or Buildbot
//!   pipeline of `run-cell` jobs and a `collect` job.
//! - [`split`] runs one cell anywhere (`run-cell`, for a CI engine's job)
//!   and merges the cells' reports into a whole run's (`collect`).
//!
//! ```
//! use fruix_matrix::{expand::cells, file::MatrixFile};
//! let text = r#"(fruix-matrix (format-version 1) (source "src")
//!   (axes (executor "local" "host-initiated") (kernconf "GENERIC" "MINIMAL"))
//!   (exclude ((executor "local") (kernconf "MINIMAL"))))"#;
//! let file = MatrixFile::parse(std::path::Path::new("/ci/matrix.scm"), text).unwrap();
//! let ids: Vec<String> = cells(&file).unwrap().into_iter().map(|c| c.id).collect();
//! assert_eq!(ids, ["local-GENERIC", "host-initiated-GENERIC", "host-initiated-MINIMAL"]);
//! ```

#![warn(missing_docs)]

pub mod agreement;
pub mod axis;
pub mod cell;
pub mod cell_log;
pub mod error;
pub mod expand;
pub mod export;
mod export_args;
mod export_buildbot;
mod export_yaml;
pub mod file;
pub mod host_slots;
pub mod plan;
pub mod report;
pub mod report_dir;
pub mod request;
pub mod result_link;
pub mod run;
pub mod runner;
pub mod schedule;
pub mod sources;
pub mod split;
#[cfg(test)]
mod testing;

pub use error::{Error, Result};
pub use plan::MatrixPlan;
pub use report::{Outcome, Report};
pub use report_dir::{create_report_dir, ReportDir, ReportDirUse};
pub use run::{run, Finished, RunSettings};
