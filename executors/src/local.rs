//! The `local` executor: runs the FreeBSD build driver on this machine.
//!
//! # Contract
//!
//! - The source tree is `request.source.path`, read in place; it must be an
//!   absolute path.
//! - Objects and install trees go to the run's work directory
//!   ([`fruix_freebsd::work::work_dir_for`]): next to the result root, or under the
//!   configured `work_dir`. [`Executor::cleanup`] removes it, whatever the run
//!   did.
//! - Configuration (JSON object; unknown keys are refused):
//!   `make` (the make program, default [`crate::driver::default_make`]) and
//!   `work_dir` (an absolute directory for work directories).
//!
//! ```
//! let executor = fruix_executors::local::LocalConfig::default().build().unwrap();
//! # use fruix_core::Executor;
//! assert_eq!(executor.name(), "local");
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use fruix_core::executor::{
    parse_config, Capabilities, ConfigKey, Executor, ExecutorKind, ExecutorRegistration, RunContext,
};
use fruix_core::{Error, Result};
use fruix_freebsd::work::work_dir_for;
use fruix_freebsd::Layout;

use crate::driver::{self, Driver};

/// The registered name.
pub const NAME: &str = "local";

/// The executor version recorded in `promotion.scm`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Configuration of the `local` executor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The make program (a name looked up in `PATH`, or a path).
    pub make: Option<String>,
    /// The directory under which each run gets its work directory; absolute.
    pub work_dir: Option<PathBuf>,
}

impl LocalConfig {
    /// Checks the configuration and makes the executor.
    pub fn build(self) -> Result<LocalExecutor> {
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

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> &str {
        VERSION
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            remote: false,
            signs_at_build_site: true,
            cancellable: true,
            // FreeBSD's build cross-builds to any TARGET/TARGET_ARCH.
            target_arches: Vec::new(),
        }
    }

    async fn run(&self, ctx: &RunContext) -> Result<()> {
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
                make: self.make.clone(),
                source_dir,
                work_dir: self.work_dir(ctx)?,
            },
        };
        driver.run(ctx).await.map(drop)
    }

    async fn cleanup(&self, ctx: &RunContext) -> Result<()> {
        driver::remove_work_dir(&self.work_dir(ctx)?).await
    }
}

fn factory(config: serde_json::Value) -> Result<Arc<dyn Executor>> {
    let config: LocalConfig = parse_config(NAME, config)?;
    Ok(Arc::new(config.build()?))
}

inventory::submit! {
    ExecutorRegistration {
        name: NAME,
        description: "builds FreeBSD base on this machine with make",
        version: VERSION,
        origin: env!("CARGO_PKG_NAME"),
        kind: ExecutorKind::BuiltIn,
        config_keys: &[
            ConfigKey {
                name: "make",
                description: "the make program to run (default: make on FreeBSD, bmake elsewhere)",
            },
            ConfigKey {
                name: "work_dir",
                description: "absolute directory for each run's object and install trees (default: next to the result root)",
            },
        ],
        factory,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let executor = LocalConfig::default().build().unwrap();
        assert_eq!(executor.make, driver::default_make());
    }
}
