//! The shared promotion pipeline and the Fruix store.
//!
//! Every executor's result root converges here:
//! [`promote_native_build_result`] turns a validated result root into
//! immutable, content-identified store objects, one per artifact plus a
//! result bundle per run. See [`pipeline`] for the one-pass promotion,
//! [`pool`] for the `.links` content pool, [`object`] for identities,
//! [`stage`] for building objects, [`bundle`] and [`bundle_tree`] for result
//! bundles, [`check`] for checking objects, [`store`] for the on-disk layout
//! and atomicity, [`verify`] for verifying and repairing, [`db`] for the
//! registry of valid objects, [`roots`], [`temp_roots`] and [`gc`] for
//! garbage collection, [`query`] for questions about objects, [`source`]
//! and [`source_identity`] for source objects, [`sign`] for signatures, and
//! [`archive`] and [`serve`] for moving objects between stores, and
//! [`attest`] for signatures made where a result was built; [`warning`]
//! carries the store's warnings to the command using it.

#![warn(missing_docs)]

pub mod archive;
pub mod attest;
pub mod bundle;
pub mod bundle_tree;
pub mod check;
pub mod db;
pub mod error;
pub mod gc;
mod ingest;
pub mod object;
pub mod pipeline;
pub mod pool;
pub mod query;
pub(crate) mod register;
pub mod roots;
pub mod serve;
pub mod sign;
pub mod source;
pub mod source_identity;
pub mod stage;
pub mod store;
pub mod temp_roots;
mod tree_reader;
pub mod verify;
pub mod warning;

pub use error::{Error, Result};
pub use pipeline::{
    measure, measure_tree, promote_native_build_result, promote_validated, ArtifactReport, OutLink,
    PromoteOptions, PromotionReport,
};
pub use store::Store;
