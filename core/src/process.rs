//! Runs one command of a build (a make step, an external executor's stage,
//! a jail's command) as its own process group, with its output streamed line
//! by line to the run's events and to a log file.
//!
//! Every executor that starts processes uses this, so that cancellation,
//! time limits and leftover processes are handled once.
//!
//! # Contract
//!
//! - The child runs in a new session and process group (its pid is both
//!   ids), stdin is `/dev/null`, stdout and stderr are pipes. "Its group"
//!   below is that group and every process of its session too: `make -j`
//!   puts each job's shell in a process group of its own (the session's
//!   members come from `/proc` on Linux, from `pgrep -s` elsewhere). Every
//!   line, of either stream, in the order it arrives, goes to the events as
//!   [`Event::Log`] with the step's stage and stream, and to the step's log
//!   file.
//! - A line longer than [`MAX_LINE_BYTES`] keeps its first
//!   [`MAX_LINE_BYTES`] bytes and a note saying how many were dropped
//!   ([`crate::bounded`]): no output is held whole in memory.
//! - Output is read no faster than the run's events are taken: while more
//!   than [`MAX_QUEUED_BYTES`] of them wait unread, the child waits on its
//!   pipes (memory stays bounded, as with a slow terminal).
//! - When the child exits, any process it left in its group is killed, and the
//!   remaining output is read to its end: [`Ending::Exited`], with the
//!   child's own status. A pipe still held by a writer [`OUTPUT_GRACE`] after
//!   the exit is held by a process that left the session (`setsid`, a
//!   daemon's double fork), out of reach of that kill: the processes found
//!   holding it (in `/proc` on Linux; elsewhere none are found) get
//!   `SIGKILL`, through a pidfd opened before they are checked again (a
//!   process id that came to name another process since is never
//!   signalled), and their output is read for [`KILL_GRACE`] more; then the
//!   pipe is read no further (a holder left alive gets `SIGPIPE` at its next
//!   write). A warning says so, naming what it killed. A pipe whose writers
//!   are all gone is read to its end, however slowly the events are taken.
//! - On cancellation, or when the step's time limit passes, the whole group
//!   gets `SIGTERM`; if it is not gone within the grace period
//!   ([`TERM_GRACE`] unless configured), `SIGKILL`. The child is reaped and
//!   [`Ending::Cancelled`] or [`Ending::TimedOut`] returned once no process of
//!   the group is left alive (or [`KILL_GRACE`] after `SIGKILL`, for processes
//!   stuck in the kernel).
//! - If the future is dropped before the group is known to be gone, the group
//!   gets `SIGKILL` (the child is then reaped by tokio in the background).
//! - A program that cannot be started is [`Error::System`] naming it, with the
//!   caller's hint on what to do.
//!
//! [`run_build_step`] maps the ending the way a make step wants it: a non-zero
//! exit is [`Error::Build`] with the last [`TAIL_LINES`] lines.
//!
//! [`Event::Log`]: crate::executor::Event::Log
//! [`MAX_QUEUED_BYTES`]: crate::executor::MAX_QUEUED_BYTES

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, Signal};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::executor::{EventSink, RunContext, Stream};

#[path = "process_table.rs"]
mod table;

#[path = "process_output.rs"]
mod output;
#[path = "process_space.rs"]
mod space;
use output::{Output, StepLog};
pub use table::group_is_gone;
use table::{live_members, pipe_holders, Killed};

/// How many last lines of output a failed step reports.
pub const TAIL_LINES: usize = 20;

/// The longest line of a step's output kept whole; the rest of a longer one
/// is dropped, and the line says so.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How much of a pipe is read at once.
const READ_CHUNK: usize = 8 << 10;

/// How long a stopped step's process group gets to exit after `SIGTERM`.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for a process group to vanish after `SIGKILL`.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How long a step's output pipes may stay open once its leader exited,
/// before the processes holding them are looked for (see the module docs).
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// How often to look whether a process group is gone.
const POLL: Duration = Duration::from_millis(20);

/// One command to run: where its output goes and what stops it.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// The stage its log lines belong to (`buildworld`, `build`, ...).
    pub stage: &'a str,
    /// The log file (created, or truncated).
    pub log: &'a Path,
    /// Gets each output line as an
    /// [`Event::Log`](crate::executor::Event::Log) of `stage`; reading the
    /// pipes waits while it has no room ([`EventSink::room`]).
    pub events: &'a EventSink,
    /// Stops the step when cancelled.
    pub cancel: &'a CancellationToken,
    /// Stops the step when it runs longer.
    pub timeout: Option<Duration>,
    /// Time between `SIGTERM` and `SIGKILL` when the step is stopped.
    pub term_grace: Duration,
    /// What to do when the program cannot be started (install it, or which
    /// configuration key names it).
    pub hint: &'a str,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The program exited (or was killed by a signal) by itself.
    Exited(ExitStatus),
    /// It ran past its time limit and its process group was stopped.
    TimedOut(Duration),
    /// It was cancelled and its process group was stopped.
    Cancelled,
}

/// What [`run_step`] reports: how the step ended and its last output lines.
#[derive(Debug, Clone)]
pub struct Finished {
    /// How the step ended (exited, timed out, cancelled); the caller
    /// decides what is a failure, as [`run_build_step`] does.
    pub ending: Ending,
    /// The last [`TAIL_LINES`] lines of output, both streams, in order.
    pub tail: Vec<String>,
}

impl Finished {
    /// The step's log: the file at `path` and these last lines.
    pub fn log_ref(&self, path: &Path) -> crate::error::LogRef {
        crate::error::LogRef {
            path: Some(path.to_path_buf()),
            tail: self.tail.clone(),
        }
    }
}

/// Runs `command` as `step` (see the module docs).
pub async fn run_step(mut command: Command, step: &Step<'_>) -> Result<Finished> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid(2) and signal(2) are async-signal-safe and only
    // change the child.
    unsafe {
        command.pre_exec(|| {
            // fruix ignores SIGXFSZ (a write past `ulimit -f` is an error it
            // reports); a step gets the default its tools expect.
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            rustix::process::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut log = StepLog::create(step).await?;
    let (mut child, mut group) = spawn_retrying(&mut command, &STEPS)
        .await
        .map_err(|e| spawn_error(&program, step.hint, e))?
        .ok_or(Error::Cancelled)??;
    let ending = pump(&mut child, &mut group, &mut log, step).await;
    let flushed = log.flush().await;
    if STEPS.lock().closed {
        // Killed by a fast exit ([`kill_running_steps`]): the process is
        // exiting, naming what it leaves; what would run after the step
        // (removing its work directory, say) must not race that report.
        return std::future::pending().await;
    }
    let ending = ending?;
    flushed?;
    Ok(Finished {
        ending,
        tail: log.tail.into_lines(),
    })
}

/// Runs a build step of `ctx`'s run: a non-zero exit is [`Error::Build`]
/// (step, status, log path, last lines), or [`Error::System`] when a file
/// system it writes to is then nearly full (`process_space.rs`);
/// cancellation is [`Error::Cancelled`].
pub async fn run_build_step(
    command: Command,
    stage: &str,
    log: &Path,
    ctx: &RunContext,
    hint: &str,
) -> Result<()> {
    let step = Step {
        stage,
        log,
        events: &ctx.events,
        cancel: &ctx.cancel,
        timeout: None,
        term_grace: TERM_GRACE,
        hint,
    };
    let places = space::places(&command, &ctx.result_root);
    let finished = run_step(command, &step).await?;
    match finished.ending {
        Ending::Cancelled => Err(Error::Cancelled),
        Ending::Exited(status) if status.success() => Ok(()),
        Ending::Exited(status) => match space::nearly_full(&places) {
            // Out of room: free space and retry, a system failure.
            Some(full) => Err(Error::System {
                message: format!(
                    "build step `{stage}` failed ({}) while {full}; free space there and try again",
                    describe_status(status)
                ),
                log: Some(finished.log_ref(log)),
            }),
            None => Err(Error::Build {
                step: stage.to_string(),
                status: Some(describe_status(status)),
                log: finished.log_ref(log),
            }),
        },
        Ending::TimedOut(limit) => Err(Error::Timeout {
            what: format!("step {stage}"),
            limit,
            detail: "; it was stopped".into(),
            log: Some(finished.log_ref(log)),
        }),
    }
}

/// Copies the child's output to `log` until both pipes end and the child and
/// its group are gone, or until the step is stopped.
async fn pump(
    child: &mut Child,
    group: &mut ProcessGroup,
    log: &mut StepLog<'_>,
    step: &Step<'_>,
) -> Result<Ending> {
    let mut stdout = Output::new(child.stdout.take().expect("stdout is piped"));
    let mut stderr = Output::new(child.stderr.take().expect("stderr is piped"));
    let (mut out_open, mut err_open) = (true, true);
    let mut status = None;
    // Once the leader exited: when to look whether its pipes are still held.
    let (mut look_at, mut looked) = (None, false);
    let deadline = step.timeout.map(|t| Instant::now() + t);
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    while out_open || err_open || status.is_none() {
        tokio::select! {
            // Nothing more is read while the events wait unread: the child
            // then waits on its pipe, and memory stays bounded.
            read = paced(step.events, stdout.read()), if out_open => {
                out_open = log.take(read, Stream::Stdout, &mut stdout).await?;
            }
            read = paced(step.events, stderr.read()), if err_open => {
                err_open = log.take(read, Stream::Stderr, &mut stderr).await?;
            }
            exited = child.wait(), if status.is_none() => {
                status = Some(exited.map_err(|e| Error::system(format!("cannot wait for step {}: {e}", step.stage)))?);
                look_at = Some(Instant::now() + OUTPUT_GRACE);
                // Whatever the step left behind holds our pipes open.
                group.kill_remaining().await;
            }
            () = tokio::time::sleep_until(look_at.unwrap_or_else(Instant::now)), if look_at.is_some() => {
                let pipes = [(out_open, stdout.pipe.as_fd()), (err_open, stderr.pipe.as_fd())];
                let held = pipes.map(|(open, pipe)| open && is_held(pipe));
                look_at = None;
                if held.contains(&true) && !looked {
                    looked = true;
                    let pipes: Vec<_> = pipes.iter().zip(held).filter_map(|(&(_, pipe), h)| h.then_some(pipe)).collect();
                    // Once they are killed, their last output is read too.
                    look_at = kill_holders(step, &pipes).then(|| Instant::now() + KILL_GRACE);
                }
                // A held pipe is read no further (a last line without its
                // newline is kept); one whose writers are gone, to its end.
                if look_at.is_none() && held[0] {
                    out_open = log.take(Ok(0), Stream::Stdout, &mut stdout).await?;
                }
                if look_at.is_none() && held[1] {
                    err_open = log.take(Ok(0), Stream::Stderr, &mut stderr).await?;
                }
            }
            // Not during the bounded wait for held pipes: it ends anyway,
            // killing what holds them.
            () = step.cancel.cancelled(), if look_at.is_none() => {
                group.stop(child, step.term_grace).await;
                return Ok(Ending::Cancelled);
            }
            // Once the leader exited, its status is the step's.
            () = &mut expired, if status.is_none() => {
                // Said now: its grace may be long, and a cancel during it
                // ends the step as cancelled.
                step.events.warn(format!(
                    "step {} timed out after {}s; stopping it (SIGTERM, then SIGKILL {}s later)",
                    step.stage,
                    step.timeout.unwrap_or_default().as_secs_f64(),
                    step.term_grace.as_secs_f64()
                ));
                group.stop(child, step.term_grace).await;
                return Ok(Ending::TimedOut(step.timeout.unwrap_or_default()));
            }
        }
    }
    Ok(Ending::Exited(
        status.expect("the loop ends once the child exited"),
    ))
}

/// Whether a process still holds the writing end of `pipe`: no `POLLHUP` on
/// it yet (Linux and FreeBSD set it once every writer is gone, whether data
/// is left to read or not).
fn is_held(pipe: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::from_borrowed_fd(pipe, PollFlags::IN)];
    let _ = rustix::event::poll(&mut fds, Some(&Timespec::default()));
    !fds[0].revents().contains(PollFlags::HUP)
}

/// Kills the processes found holding `pipes` of `step`'s output after its
/// leader exited (processes that left its session), and warns; returns
/// whether it found any.
fn kill_holders(step: &Step<'_>, pipes: &[BorrowedFd<'_>]) -> bool {
    let mut holders = pipe_holders(pipes);
    // Through a pidfd, once it is sure to name the process found.
    holders.retain(|holder| holder.kill(pipes) != Killed::Gone);
    let named: Vec<String> = holders
        .iter()
        .map(|h| {
            format!(
                "{} `{}`",
                h.pid,
                crate::escape::bytes(&h.command).cut_at(200)
            )
        })
        .collect();
    let what = match named.as_slice() {
        [] => "could not find it to kill it (it may keep running until it writes there)".into(),
        _ => format!("killed {}", named.join(", ")),
    };
    step.events.warn(format!(
        "step {} exited, but its output is still held by what left its session (a daemon); fruix did not wait for it, and {what}",
        step.stage
    ));
    !holders.is_empty()
}

/// `read`, once `events` has room for what it will produce.
async fn paced<T>(events: &EventSink, read: impl std::future::Future<Output = T>) -> T {
    events.room().await;
    read.await
}

/// The process group of a step; sends `SIGKILL` to it when dropped before it
/// is known to be gone.
struct ProcessGroup {
    pgid: libc::pid_t,
    armed: bool,
    /// Where the group is noted while it runs.
    steps: &'static Steps,
}

/// The steps of a process ([`STEPS`]): a step is started and its group
/// noted under one lock, so that [`Steps::kill_all`] finds every step
/// started before it (one being started then included: it was noted only
/// after its spawn returned), and none starts after it.
struct Steps(std::sync::Mutex<Running>);

struct Running {
    /// The groups of the steps running that are not known to be gone.
    groups: Vec<libc::pid_t>,
    /// Set by [`Steps::kill_all`]: no step starts any more.
    closed: bool,
}

impl Steps {
    const fn new() -> Steps {
        Steps(std::sync::Mutex::new(Running {
            groups: Vec::new(),
            closed: false,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills every step still running, and lets no other step start.
    fn kill_all(&self) {
        let mut running = self.lock();
        running.closed = true;
        for &pgid in &running.groups {
            signal_group(pgid, Signal::KILL);
        }
    }
}

/// The steps of this process.
static STEPS: Steps = Steps::new();

/// Makes a write past the limit on file sizes (`ulimit -f`,
/// `RLIMIT_FSIZE`) fail with `EFBIG`, for fruix to report as the system
/// failure it is (with JSON under `--json`, and what was being written
/// removed), instead of `SIGXFSZ` killing the process (exit 153, nothing
/// said, temporaries left). For `main`, before any thread starts; the
/// steps [`run_step`] runs get the default back.
pub fn files_too_large_are_errors() {
    // SAFETY: signal(2) setting SIG_IGN, which no Rust code relies on.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Kills (`SIGKILL`) the process group and session of every step still
/// running in this process, and lets no other step start; a step it ends
/// never returns to its caller ([`run_step`] waits forever): for a process
/// about to exit without its cleanup (a second Ctrl-C), which would
/// otherwise leave them running.
pub fn kill_running_steps() {
    STEPS.kill_all();
}

/// Sends `signal` to group `pgid` and to the processes of its session in
/// groups of their own (make's jobs).
fn signal_group(pgid: libc::pid_t, signal: Signal) {
    // A group that is already gone gives ESRCH, which is what we want anyway.
    if let Some(group) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(group, signal);
    }
    for pid in live_members(pgid) {
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

impl ProcessGroup {
    /// The group `child` leads, noted in `running`, the locked state of
    /// `steps` (locked for the spawn).
    fn of(child: &Child, steps: &'static Steps, running: &mut Running) -> Result<ProcessGroup> {
        let pid = child
            .id()
            .and_then(|id| libc::pid_t::try_from(id).ok())
            .ok_or_else(|| Error::system("a step exited before its process id could be read"))?;
        running.groups.push(pid);
        Ok(ProcessGroup {
            pgid: pid,
            armed: true,
            steps,
        })
    }

    fn signal(&self, signal: Signal) {
        signal_group(self.pgid, signal);
    }

    /// The group is gone: nothing is left to kill.
    fn disarm(&mut self) {
        self.armed = false;
        self.steps.lock().groups.retain(|p| *p != self.pgid);
    }

    /// After the leader exited: kills what it left behind.
    async fn kill_remaining(&mut self) {
        if !group_is_gone(self.pgid) {
            self.signal(Signal::KILL);
            self.wait_gone(Instant::now() + KILL_GRACE).await;
        }
        self.disarm();
    }

    /// Terminates the group: `SIGTERM`, then `SIGKILL` after `grace`; reaps
    /// the leader.
    async fn stop(&mut self, leader: &mut Child, grace: Duration) {
        if !self.armed {
            // The leader exited and its group is already gone.
            return;
        }
        self.signal(Signal::TERM);
        let deadline = Instant::now() + grace;
        let exited = tokio::time::timeout_at(deadline, leader.wait())
            .await
            .is_ok();
        if !(exited && self.wait_gone(deadline).await) {
            self.signal(Signal::KILL);
            let _ = leader.wait().await;
            self.wait_gone(Instant::now() + KILL_GRACE).await;
        }
        self.disarm();
    }

    /// Waits until no process of the group is alive, or `deadline`; returns
    /// whether the group is gone.
    async fn wait_gone(&self, deadline: Instant) -> bool {
        loop {
            if group_is_gone(self.pgid) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::KILL);
            self.disarm();
        }
    }
}

/// Starts `command`, again when exec(2) said `ETXTBSY`: a script written
/// just before is busy while any process forked meanwhile (another thread's
/// child, between its fork and its exec) still holds it open to write, for
/// microseconds. At most [`SPAWN_TRIES`] times, 10 ms apart. Started and
/// noted in `steps` under its lock; `None` once [`Steps::kill_all`] ran
/// (nothing started).
async fn spawn_retrying(
    command: &mut Command,
    steps: &'static Steps,
) -> std::io::Result<Option<Result<(Child, ProcessGroup)>>> {
    let mut tries = 1;
    loop {
        let spawned = {
            let mut running = steps.lock();
            if running.closed {
                return Ok(None);
            }
            command.spawn().map(|child| {
                let group = ProcessGroup::of(&child, steps, &mut running);
                group.map(|group| (child, group))
            })
        };
        match spawned {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < SPAWN_TRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            spawned => return spawned.map(Some),
        }
    }
}

/// How many times [`spawn_retrying`] tries.
const SPAWN_TRIES: u32 = 50;

fn spawn_error(program: &str, hint: &str, e: std::io::Error) -> Error {
    // A program named in an executors file may hold a line break.
    let program = crate::escape::text(program);
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::system(format!(
            "program `{program}` was not found (not in PATH, or no such file); {hint}"
        )),
        _ => Error::system(format!("cannot start program `{program}`: {e}; {hint}")),
    }
}

/// `exit status N` or `killed by signal S`.
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
