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

use async_trait::async_trait;
use fruix_core::executor::{Capabilities, Executor, ExecutorConfig, Run, RunContext};
use fruix_core::{Error, Result};
use fruix_freebsd::work::work_dir_for;
use fruix_freebsd::Layout;

use crate::driver::{self, Driver};

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
        Capabilities {
            remote: false,
            signs_at_build_site: true,
            cancellable: true,
            // FreeBSD's build cross-builds to any TARGET/TARGET_ARCH.
            target_arches: Vec::new(),
        }
    }

    fn build(self) -> Result<Arc<dyn Executor>> {
        Ok(Arc::new(self.executor()?))
    }
}

fruix_core::register_executor!(LocalConfig);

impl LocalConfig {
    /// Checks the configuration and makes the executor.
    pub fn executor(self) -> Result<LocalExecutor> {
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
                    dir.display()
                )));
            }
        }
        Ok(LocalExecutor {
            make,
            work_dir: self.work_dir,
        })
    }
}

/// Builds on this machine with the build driver.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    make: String,
    work_dir: Option<PathBuf>,
}

impl LocalExecutor {
    fn work_dir(&self, ctx: &RunContext) -> Result<PathBuf> {
        work_dir_for(
            &ctx.result_root,
            &ctx.request.run_id,
            self.work_dir.as_deref(),
        )
    }
}

impl Executor for LocalExecutor {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> &str {
        VERSION
    }

    fn capabilities(&self) -> Capabilities {
        LocalConfig::capabilities()
    }

    fn start(&self, _ctx: &RunContext) -> Box<dyn Run + '_> {
        Box::new(LocalRun { executor: self })
    }
}

/// One run of [`LocalExecutor`]: its work directory is derived from the
/// run's result root, so the run needs no state of its own.
struct LocalRun<'a> {
    executor: &'a LocalExecutor,
}

#[async_trait]
impl Run for LocalRun<'_> {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        let source_dir = PathBuf::from(&ctx.request.source.path);
        if !source_dir.is_absolute() {
            return Err(Error::InvalidRequest {
                message: format!(
                    "source path {} is relative; give the absolute path of the source tree",
                    source_dir.display()
                ),
            });
        }
        let driver = Driver {
            executor: NAME.to_string(),
            executor_version: VERSION.to_string(),
            layout: Layout {
                make: self.executor.make.clone(),
                source_dir,
                work_dir: self.executor.work_dir(ctx)?,
            },
        };
        driver.run(ctx).await.map(drop)
    }

    async fn cleanup(self: Box<Self>, ctx: &RunContext) -> Result<()> {
        driver::remove_work_dir(&self.executor.work_dir(ctx)?).await
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
            (json!({"jobs": 4}), "unknown field `jobs`"),
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
