//! One module per `fruix` subcommand.

pub mod build;
pub mod docs;
pub mod executors;
pub mod matrix;
pub mod promote;
pub mod self_hosted;
pub mod source;
pub mod store;
