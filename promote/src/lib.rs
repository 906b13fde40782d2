//! The shared promotion pipeline and the Fruix store.
//!
//! Every executor's result root converges here:
//! [`promote_native_build_result`] turns a validated result root into
//! immutable, content-identified store objects, one per artifact plus a
//! result bundle per run (see [`object`] for identities, [`store`] for the
//! on-disk layout and atomicity, [`verify`] for checking and listing).

pub mod error;
pub mod object;
pub mod pipeline;
pub mod store;
pub mod verify;

pub use error::{Error, Result};
pub use pipeline::{
    promote_native_build_result, promote_validated, ArtifactReport, PromoteOptions, PromotionReport,
};
pub use store::Store;
