//! `fruix matrix`: one FreeBSD base build across executors, configurations
//! and build machines at once, every result promoted, and a check that the
//! execution modes converge.
//!
//! The pure parts (matrix file, expansion, scheduling policy, agreement)
//! are in [`fruix_core::matrix`]. Here:
//!
//! - [`plan`] checks a matrix file against this fruix before anything runs;
//! - [`runner`] is the concurrent loop (retries, fail-fast, Ctrl-C);
//! - [`cell`] runs one attempt with its executor and promotes a built cell;
//! - [`live`] shows one line per running cell on a terminal;
//! - [`report`] and [`junit`] write `report.json`, `junit.xml` and the table.

pub mod cell;
pub mod junit;
pub mod live;
pub mod plan;
pub mod report;
pub mod runner;
