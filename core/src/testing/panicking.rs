//! `panicking-test`, a registered executor whose build panics: with the
//! `testing` feature (which `cargo test` turns on in the `fruix` binary
//! its end-to-end tests run), it shows how fruix reports an executor that
//! panics.

use std::sync::Arc;

use crate::error::Result;
use crate::executor::{Capabilities, Executor, ExecutorConfig};

/// Its registered name.
pub const NAME: &str = "panicking-test";

/// What its build panics with.
pub const MESSAGE: &str = "a test executor panicking in its build";

/// Configuration of `panicking-test`: none.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PanickingConfig {}

impl ExecutorConfig for PanickingConfig {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str =
        "test executor of fruix-core's `testing` feature: its build panics";

    fn capabilities() -> Capabilities {
        Capabilities::default()
    }

    fn build(self) -> Result<Arc<dyn Executor>> {
        Ok(super::fn_executor(NAME, |_| panic!("{MESSAGE}")))
    }
}

crate::register_executor!(PanickingConfig);
