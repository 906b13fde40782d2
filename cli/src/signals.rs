//! Ctrl-C, SIGTERM and SIGHUP (the terminal closing): the first cancels what
//! runs (it cleans up and exits 130); a second, while that cleanup runs,
//! kills the build steps still running here and exits at once with 130.

use fruix_core::manifest::Progress;
use tokio_util::sync::CancellationToken;

use crate::exit::{CliError, CliResult, Status};

/// What a command without a live display says when a signal cancels it
/// (a build's display says [`crate::display::CANCELLING`] instead).
pub const CANCELLING: &str = "fruix: cancelling: stopping and cleaning up";

/// Runs `on_signal`, on a thread of its own, at the first SIGINT, SIGTERM
/// or SIGHUP from now on (the handlers are in place when this returns),
/// instead of letting the signal kill the process with nothing cleaned up.
/// A second signal after it exits at once with the cancelled status (said
/// as every failure is, in JSON too under `--json`): a person pressing
/// Ctrl-C again wants out.
pub fn on_cancel(on_signal: impl FnOnce() + Send + 'static) -> CliResult<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let system = |e: std::io::Error| CliError::new(Status::SystemFailure, e);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(system)?;
    let (mut int, mut term, mut hup) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::interrupt()).map_err(system)?,
            signal(SignalKind::terminate()).map_err(system)?,
            signal(SignalKind::hangup()).map_err(system)?,
        )
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut next = || {
                runtime.block_on(async {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                })
            };
            next();
            // Waits for another process's lock give up.
            fruix_core::interrupt::request();
            // The cleanup may take a while (a guest torn down): a second
            // signal is watched for meanwhile.
            std::thread::spawn(on_signal);
            next();
            // What the first signal asked to stop does not outlive us.
            fruix_core::process::kill_running_steps();
            crate::exit::exit_now(
                Status::Cancelled,
                "cancelled again; exiting without finishing the cleanup",
            );
        })
        .map_err(system)?;
    Ok(())
}

/// Cancels `cancel` at the first SIGINT, SIGTERM or SIGHUP (see
/// [`on_cancel`]). Saying so is left to the display, which knows where the
/// live line is.
pub fn watch_signals(cancel: CancellationToken) -> CliResult<()> {
    on_cancel(move || cancel.cancel())
}

/// Cancels the work `progress` counts ([`Progress::cancel`]: its walks and
/// loops fail with [`fruix_core::Error::Cancelled`], which removes what
/// they made), then runs `also` (which wakes what waits), at the first
/// SIGINT, SIGTERM or SIGHUP (see [`on_cancel`]), and says [`CANCELLING`]
/// once both are done.
pub fn cancel_work(progress: &Progress, also: impl FnOnce() + Send + 'static) -> CliResult<()> {
    let cancel = progress.canceller();
    on_cancel(move || {
        cancel();
        also();
        eprintln!("{CANCELLING}");
    })
}
