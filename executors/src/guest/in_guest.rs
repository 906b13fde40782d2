//! The build inside the guest: what `fruix native-build self-hosted` runs for
//! `guest-self-hosted`, the build driver on that machine.

use super::{Mode, VERSION};
use crate::driver::DriverExecutor;

/// The build that `fruix native-build self-hosted` runs inside the guest:
/// the build driver on that machine with `make`, recorded as executor
/// `guest-self-hosted`.
pub fn in_guest_build(make: String) -> DriverExecutor {
    DriverExecutor {
        name: Mode::SelfHosted.name(),
        version: VERSION,
        make,
        work_dir: None,
    }
}
