//! The build slot `fruix build --machine NAME` holds on its machine: one of
//! the machine's `parallel-builds` slot files beneath the state directory,
//! which the matrix's attempts hold too ([`fruix_matrix::host_slots`]).

use std::path::Path;

use fruix_core::escape;
use fruix_core::machines::Machine;
use fruix_matrix::cell::waiting_for_slot;
use fruix_matrix::host_slots::{self, HostSlot};
use tokio_util::sync::CancellationToken;

use crate::display::warning_line;
use crate::exit::{self, CliError, CliResult, Status};

/// Takes a slot of `machine` in `STATE_DIR/matrix/slots`, held until the
/// slot is dropped. While the other fruix processes of this host with
/// this state directory hold every one, it waits, saying so once on
/// stderr (stdout is the result's, JSON under `--json`). Cancelled while
/// it waits, it fails as cancelled: nothing was built.
pub async fn take(
    state_dir: &Path,
    machine: &Machine,
    cancel: &CancellationToken,
) -> CliResult<HostSlot> {
    let (name, slots) = (machine.name.as_str(), machine.parallel_builds);
    let waiting = || eprintln!("fruix: {}", warning_line(&waiting_for_slot(name, slots)));
    match host_slots::take(state_dir, name, slots, cancel, waiting).await {
        Ok(Some(slot)) => Ok(slot),
        Ok(None) => Err(CliError::new(
            Status::Cancelled,
            anyhow::anyhow!(
                "cancelled while it waited for a build slot on {}; nothing was built",
                escape::line(name)
            ),
        )),
        Err(e) => Err(CliError::new(
            exit::before_run(&e),
            anyhow::anyhow!("{e}; nothing was built"),
        )),
    }
}
