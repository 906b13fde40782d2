//! One module per `fruix` subcommand.

pub mod build;
pub mod executors;
pub mod promote;
pub mod store;
