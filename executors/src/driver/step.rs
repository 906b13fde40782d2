//! Runs one build step (one make invocation) with the core's process runner
//! ([`fruix_core::process`]): its own process group, output streamed to
//! events and to its log file, the group stopped on cancellation.

use std::path::Path;

use fruix_core::executor::RunContext;
use fruix_core::process::run_build_step;
use fruix_core::Result;
use tokio::process::Command;

/// What to do when the make program cannot be started.
const MAKE_HINT: &str = "install BSD make (`make` on FreeBSD, the `bmake` package elsewhere) \
                         or set the executor's `make` configuration key";

/// Runs `command` as build step `stage`, logging to `log_path`.
pub(super) async fn run(
    command: Command,
    stage: &str,
    log_path: &Path,
    ctx: &RunContext,
) -> Result<()> {
    run_build_step(command, stage, log_path, ctx, MAKE_HINT).await
}
