//! The build inside the guest: what `fruix native-build self-hosted` runs for
//! `guest-self-hosted`, the build driver on that machine.

use fruix_core::executor::{Capabilities, Executor, Run, RunContext};

use super::{Mode, VERSION};
use crate::driver::DriverRun;

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
        Capabilities::local()
    }

    fn start(&self, _ctx: &RunContext) -> Box<dyn Run + '_> {
        Box::new(DriverRun {
            executor: Mode::SelfHosted.name(),
            executor_version: VERSION,
            make: &self.make,
            work_dir: None,
        })
    }
}
