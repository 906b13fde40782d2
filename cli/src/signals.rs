//! Ctrl-C, SIGTERM and SIGHUP (the terminal closing): the first cancels what
//! runs (it cleans up and exits 130); a second, while that cleanup runs,
//! kills the build steps still running here, removes the files registered
//! to be removed at a fast exit and names those left ([`fruix_core::at_exit`]),
//! and exits at once with 130, its JSON error carrying what the command
//! registered for it ([`DetailsAtFastExit`]: a build's `result_root`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use fruix_core::at_exit::{self, Fate, Registered};
use fruix_core::manifest::{Cancelled, Progress};
use tokio_util::sync::CancellationToken;

use crate::exit::{CliError, CliResult, Status};

/// What a command without a live display says when a signal cancels it
/// (a build's display says [`crate::display::CANCELLING`] instead).
pub const CANCELLING: &str = "fruix: cancelling: stopping and cleaning up";

/// What a command says when a signal comes once its work has committed
/// ([`Progress::commit`]: a promotion publishing its objects): the work
/// finishes, and the command ends as it would have.
pub const TOO_LATE: &str =
    "fruix: too late to cancel: the promotion is publishing its objects, and finishes";

/// What a command says of the cancellation `cancelled`.
pub fn cancelling(cancelled: Cancelled) -> &'static str {
    match cancelled {
        Cancelled::Stopping => CANCELLING,
        Cancelled::TooLate => TOO_LATE,
    }
}

/// Runs `on_signal`, on a thread of its own, at the first SIGINT, SIGTERM
/// or SIGHUP from now on (the handlers are in place when this returns),
/// instead of letting the signal kill the process with nothing cleaned up.
/// A second signal after it exits at once with the cancelled status (said
/// as every failure is, in JSON too under `--json`): a person pressing
/// Ctrl-C again wants out.
pub fn on_cancel(on_signal: impl FnOnce() + Send + 'static) -> CliResult<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let system = |e: std::io::Error| {
        CliError::new(
            Status::SystemFailure,
            anyhow::anyhow!("cannot start the thread that watches for Ctrl-C and SIGTERM: {e}; the limit on processes and threads (ulimit -u) may be too low"),
        )
    };
    // Out of file descriptors, tokio fails (or panics) here: said as the
    // runtime's failure to start, never a bare error or a crash.
    // Its thread and the cancellation's.
    fruix_core::threads::can_start(2, "the signal handling")
        .map_err(|e| CliError::new(Status::SystemFailure, e))?;
    let (runtime, mut int, mut term, mut hup) = crate::starting_runtime(|| {
        let runtime = Background(Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?,
        ));
        let _entered = runtime.get().enter();
        let int = signal(SignalKind::interrupt())?;
        let term = signal(SignalKind::terminate())?;
        let hup = signal(SignalKind::hangup())?;
        drop(_entered);
        Ok((runtime, int, term, hup))
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut next = || {
                runtime.get().block_on(async {
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
            let on_signal = Arc::new(Mutex::new(Some(on_signal)));
            let taken = Arc::clone(&on_signal);
            let take = move || taken.lock().unwrap_or_else(|e| e.into_inner()).take();
            let spawned = std::thread::Builder::new()
                .name("cancel".into())
                .spawn(move || take().map(|f| f()));
            if spawned.is_err() {
                // No thread for it (a limit reached since): it runs here,
                // and a second signal is watched for once it is done.
                let f = on_signal.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(f) = f {
                    f();
                }
            }
            next();
            // What the first signal asked to stop does not outlive us.
            fruix_core::process::kill_running_steps();
            fast_exit("cancelled again; exiting without finishing the cleanup");
        })
        .map_err(system)?;
    Ok(())
}

/// A runtime that may be dropped anywhere, an async context included
/// (where dropping a tokio runtime panics): it is shut down without
/// waiting. The signal handling's, which a failure to start its thread
/// drops inside a build's runtime.
struct Background(Option<tokio::runtime::Runtime>);

impl Background {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("taken only when dropped")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
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
/// once both are done, or [`TOO_LATE`] when the work had committed.
pub fn cancel_work(progress: &Progress, also: impl FnOnce() + Send + 'static) -> CliResult<()> {
    let cancel = progress.canceller();
    on_cancel(move || {
        let cancelled = cancel();
        also();
        eprintln!("{}", cancelling(cancelled));
    })
}

/// Ends the lock waits of the command (see [`on_cancel`]) at the first
/// SIGINT, SIGTERM or SIGHUP, for a command whose only long wait is for a
/// lock another process holds (a collection, a repair): the wait gives up
/// and the command fails as cancelled (exit 130), saying so as every
/// failure is said. What it does once it holds its locks is short, and
/// finishes.
pub fn cancel_waits() -> CliResult<()> {
    on_cancel(|| {})
}

/// The stretch of a command that the first SIGINT, SIGTERM or SIGHUP ends
/// at once, exiting with the cancelled status and its message: work that
/// may block where no cancellation reaches (a write to a pipe no one
/// reads). Outside it the signal does what the command's handler does
/// otherwise (ending its lock waits), and the command ends, cancelled, by
/// itself. Whichever of the two ends the command says so, once.
#[derive(Clone, Default)]
pub struct ExitAtSignal(Arc<Mutex<Option<&'static str>>>);

impl ExitAtSignal {
    /// Runs `f`; a signal meanwhile ([`ExitAtSignal::exit_if_running`])
    /// exits at once, saying `message`.
    pub fn run<T>(&self, message: &'static str, f: impl FnOnce() -> T) -> T {
        *self.state() = Some(message);
        let out = f();
        // Never returns when the signal thread took it first: it exits.
        *self.state() = None;
        out
    }

    /// For the signal handler: exits (holding the state, so that
    /// [`ExitAtSignal::run`] cannot end meanwhile) if `run` runs.
    pub fn exit_if_running(&self) {
        let state = self.state();
        if let Some(message) = *state {
            fast_exit(message);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<&'static str>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes the files registered to be removed at a fast exit
/// ([`fruix_core::at_exit`]), then exits at once with the cancelled status,
/// saying `message`, what became of each (removed, or left and why), and
/// which of those registered to be left are there. The registry stays held
/// until the process is gone: no file is made or forgotten meanwhile.
fn fast_exit(message: &str) -> ! {
    let said = at_exit::with_registered(|files| {
        let mut said = message.to_string();
        for Registered { what, path, fate } in files {
            said.push_str(&fast_exit_fate(what, path, fate));
        }
        said
    });
    let details = fast_exit_details().as_ref().map(|d| d());
    crate::exit::exit_now(Status::Cancelled, &said, details.unwrap_or_default())
}

/// Members of the JSON error object, made when a fast exit says them.
type Details = Box<dyn Fn() -> serde_json::Map<String, serde_json::Value> + Send>;

/// What a fast exit adds to its JSON error object ([`DetailsAtFastExit`]).
static FAST_EXIT_DETAILS: Mutex<Option<Details>> = Mutex::new(None);

fn fast_exit_details() -> std::sync::MutexGuard<'static, Option<Details>> {
    FAST_EXIT_DETAILS.lock().unwrap_or_else(|e| e.into_inner())
}

/// While held, a fast exit (a second signal) adds the members that its
/// function makes then to its JSON error object: those the command's own
/// failure would have had (a cancelled build's `result_root` and `logs`).
/// One command holds one at a time.
#[must_use = "dropping it forgets the details at once"]
pub struct DetailsAtFastExit(());

impl DetailsAtFastExit {
    /// Makes `details` what a fast exit adds, until this is dropped.
    pub fn new(
        details: impl Fn() -> serde_json::Map<String, serde_json::Value> + Send + 'static,
    ) -> Self {
        *fast_exit_details() = Some(Box::new(details));
        DetailsAtFastExit(())
    }
}

impl Drop for DetailsAtFastExit {
    fn drop(&mut self) {
        *fast_exit_details() = None;
    }
}

/// What a fast exit does with `path` (`what`), to be `fate`, and says of
/// it: `; removed WHAT PATH`, `; left WHAT PATH` (`... on MACHINE`), or
/// nothing when it is not there.
fn fast_exit_fate(what: &str, path: &Path, fate: &Fate) -> String {
    let path_shown = fruix_core::escape::path(path);
    match fate {
        Fate::Removed => match std::fs::remove_file(path) {
            Ok(()) => format!("; removed {what} {path_shown}"),
            // Its owner removed it and was about to forget it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => format!("; left {what} {path_shown} (cannot remove it: {e})"),
        },
        Fate::Left => match path.symlink_metadata() {
            Ok(_) => format!("; left {what} {path_shown}"),
            Err(_) => String::new(),
        },
        Fate::LeftOn { machine } => {
            let machine = fruix_core::escape::text(machine);
            format!("; left {what} {path_shown} on {machine}")
        }
    }
}
