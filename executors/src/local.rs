//! The `local` executor: runs the FreeBSD build driver on this machine.
//!
//! # Contract
//!
//! - The source tree is `request.source.path`, read in place; it must be an
//!   absolute path.
//! - Objects and install trees go to the run's work directory
//!   ([`fruix_freebsd::work::work_dir_for`]): next to the result root, or under the
//!   configured `work_dir`. The run's cleanup removes it, whatever the run
//!   did.
//! - Configuration (JSON object; unknown keys are refused):
//!   `make` (the make program, default [`crate::driver::default_make`]) and
//!   `work_dir` (an absolute directory for work directories).
//!
//! ```
//! let executor = fruix_executors::local::LocalConfig::default().executor().unwrap();
//! # use fruix_core::Executor;
//! assert_eq!(executor.name(), "local");
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use fruix_core::executor::{Capabilities, Executor, ExecutorConfig};
use fruix_core::{Error, Result};

use crate::driver::{self, DriverExecutor};

/// The registered name.
pub const NAME: &str = "local";

/// The executor version recorded in `promotion.scm`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Configuration of the `local` executor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// the make program to run (default: make on FreeBSD, bmake elsewhere)
    pub make: Option<String>,
    /// absolute directory for each run's object and install trees (default:
    /// next to the result root)
    pub work_dir: Option<PathBuf>,
}

impl ExecutorConfig for LocalConfig {
    const NAME: &'static str = NAME;
    const DESCRIPTION: &'static str = "builds FreeBSD base on this machine with make";

    fn capabilities() -> Capabilities {
        Capabilities::local()
    }

    fn build(self) -> Result<Arc<dyn Executor>> {
        Ok(Arc::new(self.executor()?))
    }
}

fruix_core::register_executor!(LocalConfig);

impl LocalConfig {
    /// Checks the configuration and makes the executor.
    pub fn executor(self) -> Result<DriverExecutor> {
        let invalid = |message: String| Error::InvalidConfig {
            executor: NAME.to_string(),
            message,
        };
        let make = self
            .make
            .unwrap_or_else(|| driver::default_make().to_string());
        if make.trim().is_empty() {
            return Err(invalid(
                "`make` is empty; name a make program (e.g. bmake) or leave the key out".into(),
            ));
        }
        if let Some(dir) = &self.work_dir {
            if !dir.is_absolute() {
                return Err(invalid(format!(
                    "`work_dir` {} is relative; give an absolute directory",
                    fruix_core::escape::path(dir)
                )));
            }
        }
        Ok(DriverExecutor {
            name: NAME,
            version: VERSION,
            make,
            work_dir: self.work_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::executor::ExecutorKind;
    use fruix_core::Registry;
    use serde_json::json;

    #[test]
    fn is_registered_and_configurable() {
        let registry = Registry::compiled().unwrap();
        let entry = registry.get(NAME).unwrap();
        assert_eq!(entry.kind, ExecutorKind::BuiltIn);
        assert_eq!(entry.origin, "fruix-executors");
        let executor = registry
            .create(NAME, json!({"make": "gmake", "work_dir": "/var/tmp"}))
            .unwrap();
        assert_eq!((executor.name(), executor.version()), (NAME, VERSION));
        let caps = executor.capabilities();
        assert!(!caps.remote && caps.signs_at_build_site && caps.cancellable);
        registry.create(NAME, serde_json::Value::Null).unwrap();
        // Keys and capabilities are known without a configuration.
        let keys: Vec<&str> = entry.config_keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(keys, ["make", "work_dir"]);
        assert!(entry.config_keys.iter().all(|k| !k.description.is_empty()));
        assert_eq!(entry.capabilities, caps);
    }

    #[test]
    fn bad_configuration_is_refused_with_the_reason() {
        let registry = Registry::compiled().unwrap();
        for (config, expected) in [
            (
                json!({"jobs": 4}),
                "unknown key `jobs`; the keys of local are `make`, `work_dir`",
            ),
            (json!({"make": ""}), "`make` is empty"),
            (json!({"work_dir": "tmp"}), "`work_dir` tmp is relative"),
        ] {
            let e = registry.create(NAME, config).unwrap_err();
            assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
            assert!(e.to_string().contains(expected), "{e}");
        }
    }

    #[test]
    fn default_make_is_bsd_make() {
        let executor = LocalConfig::default().executor().unwrap();
        assert_eq!(executor.make, driver::default_make());
    }
}
