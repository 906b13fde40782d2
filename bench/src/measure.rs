//! Wall time and peak memory of one command, measured by the benchmark
//! re-executing itself as a small `--measure-child` process ([`measure`]).

use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The hidden mode in which a benchmark re-executes itself to run one
/// command ([`intercept`]).
pub const MEASURE_CHILD: &str = "--measure-child";

/// Runs the hidden `--measure-child PROGRAM [ARG...]` mode when this
/// process was started in it, returning its exit code; `None` otherwise.
/// Every benchmark that calls [`measure`] calls this first in `main`.
pub fn intercept() -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    (args.first().map(String::as_str) == Some(MEASURE_CHILD)).then(|| measure_child(&args[1..]))
}

/// Runs `cmd` and returns its wall time (seconds) and peak RSS (KiB).
///
/// Linux's `ru_maxrss` (from `wait4`) is not the child's own peak: a
/// child inherits its parent's high-water mark through `fork` (the
/// memory descriptor is copied with it) and `exec` folds the old memory's
/// peak into it (with `posix_spawn`, the parent's own memory). Spawned
/// from the benchmark, after it generated the tree, every command would
/// show the benchmark's peak. Reading `VmHWM` at exit does not work either:
/// a zombie's `/proc/PID/status` (after `waitid(WNOWAIT)`) has no `Vm*`
/// lines, and at a ptrace exit stop (`PTRACE_O_TRACEEXIT`) of the main
/// thread `VmHWM` read 16 kB when another thread had called
/// `exit_group` (tried on Linux 6.18). So the benchmark re-executes
/// itself (`--measure-child`, see [`intercept`]): a fresh exec that starts
/// small, spawns the command and reports its `wait4` time and `ru_maxrss`.
/// The command's peak is then exact whenever it exceeds that small
/// process's own peak ([`floor_kib`]).
pub fn measure(cmd: &Command) -> (f64, u64) {
    // Leave no dirty data of a previous command to flush on this one's time.
    let _ = Command::new("sync").status();
    let output = Command::new(std::env::current_exe().unwrap())
        .arg(MEASURE_CHILD)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        // Never a Nix daemon: nix-store runs on its private store.
        .env_remove("NIX_REMOTE")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "{cmd:?} failed");
    let text = String::from_utf8(output.stdout).unwrap();
    let (seconds, kib) = text.trim().split_once(' ').unwrap();
    (seconds.parse().unwrap(), kib.parse().unwrap())
}

/// The lowest peak [`measure`] can report (KiB): the measuring process's
/// own, measured on `true`.
pub fn floor_kib() -> u64 {
    measure(&Command::new("true")).1
}

/// `--measure-child PROGRAM [ARG...]`: runs the command with its output
/// discarded, then prints its wall time in seconds and peak RSS in KiB.
// The child is reaped by wait4 (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure_child(argv: &[String]) -> ExitCode {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("{MEASURE_CHILD} needs a command");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(rc, pid, "wait4 failed");
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        eprintln!("{argv:?} failed (wait status {status:#x})");
        return ExitCode::FAILURE;
    }
    println!("{seconds} {}", usage.ru_maxrss);
    ExitCode::SUCCESS
}
