//! The build inside the guest: what `fruix native-build self-hosted` runs for
//! `guest-self-hosted`, the build driver on that machine.

use std::path::PathBuf;

use async_trait::async_trait;
use fruix_core::executor::{Capabilities, Executor, Run, RunContext};
use fruix_core::Result;
use fruix_freebsd::work::work_dir_for;
use fruix_freebsd::Layout;

use super::{Mode, VERSION};
use crate::driver::{remove_work_dir, Driver};

/// The build that `fruix native-build self-hosted` runs inside the guest: the
/// build driver on that machine, recorded as executor `guest-self-hosted`.
#[derive(Debug, Clone)]
pub struct InGuestBuild {
    /// The make program.
    pub make: String,
}

impl Executor for InGuestBuild {
    fn name(&self) -> &str {
        Mode::SelfHosted.name()
    }

    fn version(&self) -> &str {
        VERSION
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            remote: false,
            signs_at_build_site: true,
            cancellable: true,
            target_arches: Vec::new(),
        }
    }

    fn start(&self, _ctx: &RunContext) -> Box<dyn Run + '_> {
        Box::new(InGuestRun { build: self })
    }
}

/// One in-guest build: its work directory follows from the result root.
struct InGuestRun<'a> {
    build: &'a InGuestBuild,
}

#[async_trait]
impl Run for InGuestRun<'_> {
    async fn build(&mut self, ctx: &RunContext) -> Result<()> {
        let driver = Driver {
            executor: Mode::SelfHosted.name().to_string(),
            executor_version: VERSION.to_string(),
            layout: Layout {
                make: self.build.make.clone(),
                source_dir: PathBuf::from(&ctx.request.source.path),
                work_dir: work_dir_for(&ctx.result_root, &ctx.request.run_id, None)?,
            },
        };
        driver.run(ctx).await.map(drop)
    }

    async fn cleanup(self: Box<Self>, ctx: &RunContext) -> Result<()> {
        let work = work_dir_for(&ctx.result_root, &ctx.request.run_id, None)?;
        remove_work_dir(&work).await
    }
}
