//! Matrices: one FreeBSD base build across several executors,
//! configurations and build machines at once, and whether they agree.
//!
//! This is the pure part of `fruix matrix`; the runner that drives executors
//! concurrently lives in the CLI. Here:
//!
//! - [`file`] reads a matrix file (`(fruix-matrix ...)`) strictly: every
//!   error names its field and line.
//! - [`expand`] turns axes, `exclude` and `include` into cells with GitHub
//!   Actions' semantics (exclude first, then include), and gives each cell a
//!   readable, unique id.
//! - [`schedule`] decides where and when each cell runs: per-machine
//!   parallel-builds slots, fastest free machine first, machines set aside
//!   after they fail to connect, a global `max-parallel`, a slot limit for
//!   local cells, retries of system failures on another machine, and
//!   fail-fast.
//! - [`agreement`] groups the cells that must agree and lists the files in
//!   which two artifacts differ.
//!
//! ```
//! use fruix_core::matrix::{expand::cells, file::MatrixFile};
//! let text = r#"(fruix-matrix (format-version 1) (source "src")
//!   (axes (executor "local" "host-initiated") (kernconf "GENERIC" "MINIMAL"))
//!   (exclude ((executor "local") (kernconf "MINIMAL"))))"#;
//! let file = MatrixFile::parse(std::path::Path::new("/ci/matrix.scm"), text).unwrap();
//! let ids: Vec<String> = cells(&file).unwrap().into_iter().map(|c| c.id).collect();
//! assert_eq!(ids, ["local-GENERIC", "host-initiated-GENERIC", "host-initiated-MINIMAL"]);
//! ```

pub mod agreement;
pub mod expand;
pub mod file;
pub mod schedule;
