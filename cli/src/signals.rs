//! Ctrl-C, SIGTERM and SIGHUP (the terminal closing): the first cancels what
//! runs (it cleans up and exits 130); a second (not the copy a parent such
//! as `timeout` forwards of the first), while that cleanup runs,
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
/// Ctrl-C again wants out. But the copy a parent forwards of the same
/// signal ([`forwarded_copy`]: `timeout`, which gets a Ctrl-C or a CI's
/// SIGTERM to the process group too, passes it on) is not a second one.
pub fn on_cancel(on_signal: impl FnOnce() + Send + 'static) -> CliResult<()> {
    let system = |e: std::io::Error| {
        CliError::new(
            Status::SystemFailure,
            anyhow::anyhow!("cannot start the thread that watches for Ctrl-C and SIGTERM: {e}; the limit on processes and threads (ulimit -u) may be too low"),
        )
    };
    // Its thread and the cancellation's.
    fruix_core::threads::can_start(2, "the signal handling")
        .map_err(|e| CliError::new(Status::SystemFailure, e))?;
    let mut next = received().map_err(|e| {
        CliError::new(
            Status::SystemFailure,
            anyhow::anyhow!("cannot watch for Ctrl-C and SIGTERM: {e}"),
        )
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let first = next();
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
            let again = next();
            // No parent (pid 1 in a container): -1, which no sender is.
            let parent = rustix::process::getppid().map_or(-1, |p| p.as_raw_nonzero().get());
            if forwarded_copy(first, again, parent) {
                next();
            }
            // What the first signal asked to stop does not outlive us.
            fruix_core::process::kill_running_steps();
            fast_exit("cancelled again; exiting without finishing the cleanup");
        })
        .map_err(system)?;
    Ok(())
}

/// A signal as its handler saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Received {
    /// SIGINT, SIGTERM or SIGHUP.
    signal: i32,
    /// The process that sent it (`si_pid`); 0 when the kernel did (a
    /// terminal's Ctrl-C).
    sender: i32,
}

/// Whether `again`, received after `first`, is the same cancellation
/// twice: the same signal, one of them sent by this process's parent
/// `parent` and the other not. A Ctrl-C reaches the whole foreground
/// process group, a wrapper such as `timeout` in it included, which
/// passes its copy on; so does a CI's SIGTERM to the group. One copy is
/// taken as that; two signals from the same sender, or of two kinds, are
/// a second request.
fn forwarded_copy(first: Received, again: Received, parent: i32) -> bool {
    again.signal == first.signal && (first.sender == parent) != (again.sender == parent)
}

/// Puts handlers for SIGINT, SIGTERM and SIGHUP in place (through
/// `signal-hook-registry`, which tokio's signal streams share), each
/// writing what it received into a pipe, and returns what blocks for the
/// next of them, in the order they came.
fn received() -> std::io::Result<impl FnMut() -> Received> {
    use std::io::Read;
    use std::os::fd::IntoRawFd;
    let (mut reader, writer) = std::io::pipe()?;
    // A handler never blocks: a full pipe (8,192 signals unread) drops one.
    rustix::fs::fcntl_setfl(&writer, rustix::fs::OFlags::NONBLOCK)?;
    // Open for the process's life: a handler may run any time.
    let writer = writer.into_raw_fd();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the action makes one write(2), which is
        // async-signal-safe, of bytes on its stack, to a descriptor never
        // closed; reading `si_pid` of SIGINT, SIGTERM and SIGHUP (sent by
        // kill(2) or the kernel) is what the field is for. The registry
        // keeps errno as it was.
        unsafe {
            signal_hook_registry::register_sigaction(signal, move |info| {
                let sender = info.si_pid();
                let mut record = [0u8; 8];
                record[..4].copy_from_slice(&signal.to_ne_bytes());
                record[4..].copy_from_slice(&sender.to_ne_bytes());
                libc::write(writer, record.as_ptr().cast(), record.len());
            })?;
        }
    }
    Ok(move || {
        let mut record = [0u8; 8];
        loop {
            match reader.read_exact(&mut record) {
                Ok(()) => {
                    let [a, b, c, d, e, f, g, h] = record;
                    return Received {
                        signal: i32::from_ne_bytes([a, b, c, d]),
                        sender: i32::from_ne_bytes([e, f, g, h]),
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // The write end is never closed: no end, nor error, comes.
                Err(_) => std::thread::park(),
            }
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: i32 = 4242;

    fn got(signal: i32, sender: i32) -> Received {
        Received { signal, sender }
    }

    /// A Ctrl-C reaches fruix from the kernel and again through a
    /// `timeout` wrapping it (its parent), in either order: one
    /// cancellation. A second Ctrl-C, a signal of another kind, or two
    /// from the same sender (a test, a person's `kill`) are two.
    #[test]
    fn a_parents_copy_of_the_same_signal_is_no_second_one() {
        let (int, term) = (libc::SIGINT, libc::SIGTERM);
        assert!(forwarded_copy(got(int, 0), got(int, PARENT), PARENT));
        assert!(forwarded_copy(got(int, PARENT), got(int, 0), PARENT));
        assert!(forwarded_copy(got(term, 77), got(term, PARENT), PARENT));
        assert!(!forwarded_copy(got(int, 0), got(int, 0), PARENT));
        assert!(!forwarded_copy(got(int, PARENT), got(int, PARENT), PARENT));
        assert!(!forwarded_copy(got(int, 0), got(term, PARENT), PARENT));
        assert!(!forwarded_copy(got(int, 77), got(int, 78), PARENT));
    }
}
