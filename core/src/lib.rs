//! Fruix core contracts.
//!
//! Every Fruix executor, whatever it is, ends with the same *normalized result
//! root* ([`result_root`]) carrying `promotion.scm` ([`promotion`]); artifact
//! trees are identified by a content signature over an mtree(5) manifest
//! ([`manifest`]); and executors implement one small trait ([`executor`]) and are
//! found by name in a registry fed by `inventory`. The promotion pipeline
//! (`fruix-promote`) and the executors (`fruix-executors`) build on these.
//!
//! This crate has no CLI and no SSH: errors are typed ([`Error`]), and each
//! names the file or field it is about.

#![warn(missing_docs)]

pub mod at_exit;
pub mod bounded;
pub mod collect;
pub mod dir;
pub mod error;
pub mod escape;
pub mod executor;
pub mod exit_status;
pub mod fsutil;
pub mod host_key_text;
pub mod interrupt;
pub mod machines;
pub mod manifest;
pub mod process;
pub mod promotion;
pub mod remove;
pub mod result_root;
pub mod run_id;
pub mod sexp;
pub mod special_modes;
pub mod ssh_target;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod threads;
pub mod vm;

pub use error::{Error, Failure, LogRef, MetadataFileProblem, Problem, Result};
pub use executor::{BuildRequest, Event, EventSink, Executor, Registry, RunContext};
pub use exit_status::ExitStatus;
pub use manifest::TreeSignature;
pub use promotion::PromotionMetadata;
pub use result_root::ResultRoot;

/// Re-exported for [`register_executor!`], so that executor crates need not
/// depend on `inventory` themselves.
pub use inventory;
