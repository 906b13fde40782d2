//! The `vm` executor's QEMU driver against emulators that are not QEMU
//! itself: a `qemu-system-x86_64` that is a wrapper script running the
//! real emulator without `exec` (as some packaged ones are), which fruix
//! must stop with the wrapper, and one that never greets on its QMP
//! socket, which the boot timeout bounds once, boot and wait for SSH
//! together.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use crate::util::{run, spawn_piped, spawn_silenced, wait_until};
use crate::vm::{
    cancelled_at_once, emulator, exit_within, initrd_ignoring_the_power_button, machines,
    qemu_processes, signal, vm_build, vm_build_into, wait_for_the_guest_s_network, Vm,
    WRONG_HOST_KEY,
};

/// Writes `dir/bin/qemu-system-x86_64`, a shell script with `body`, and
/// puts `dir/bin` first on `cmd`'s PATH.
fn emulator_on_path(cmd: &mut Command, dir: &Path, body: &str) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("qemu-system-x86_64");
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The PATH `vm_build` gave, else this process's.
    let path = cmd
        .get_envs()
        .find(|(k, _)| *k == "PATH")
        .and_then(|(_, v)| v.map(|v| v.to_os_string()))
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    let mut paths = vec![bin];
    paths.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(paths).unwrap());
}

/// A wrapper that runs the real emulator as its child, without `exec`.
fn wrapper() -> String {
    let real: PathBuf = emulator();
    format!(
        "# As some packaged wrappers do: no exec.\n'{}' \"$@\"",
        real.display()
    )
}

/// A build of the miniature tree on `vm` in `dir`, its emulator the
/// script `body` (see [`emulator_on_path`]).
fn build_with_emulator(dir: &Path, vm: Vm, body: &str) -> Command {
    let name = vm.name;
    let file = machines(dir, &[vm]);
    let mut cmd = vm_build(dir, &file, name);
    emulator_on_path(&mut cmd, dir, body);
    cmd
}

/// Waits up to `limit` for `child` (stderr piped) to exit: its status
/// (`None` when it had to be killed, with every qemu process of `dir`),
/// and its stderr.
fn finish_within(mut child: Child, limit: Duration, dir: &Path) -> (Option<ExitStatus>, String) {
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = exit_within(&mut child, limit, dir);
    (status, reader.join().unwrap())
}

/// Regression: Ctrl-C while a guest booted under a wrapper that does not
/// `exec` QEMU killed the wrapper alone: QEMU ran on, holding the
/// console's socket, and fruix hung for ever after its teardown (the
/// console's copying never ended, and the runtime waited for it). The
/// whole process group is killed: fruix exits at once, no qemu left.
#[test]
fn ctrl_c_under_a_wrapper_that_does_not_exec_qemu_stops_qemu_and_fruix_exits() {
    let dir = tempfile::tempdir().unwrap();
    let silent = Vm {
        boot_timeout: 600,
        shutdown_timeout: 120,
        ..Vm::silent("silent")
    };
    let mut child = spawn_silenced(&mut build_with_emulator(dir.path(), silent, &wrapper()));
    wait_for_the_guest_s_network(dir.path());
    // The wrapper and the emulator it runs.
    assert_eq!(qemu_processes(dir.path()).len(), 2);
    cancelled_at_once(&mut child, Duration::from_secs(60), dir.path());
    assert_eq!(qemu_processes(dir.path()), Vec::<i32>::new());
}

/// Regression: a fruix killed with SIGKILL while its guest ran under a
/// wrapper that does not `exec` QEMU left QEMU running for ever (the
/// kernel's death signal reaches the wrapper alone), and the next run
/// removed its work directory from under it. The next VM run beside it
/// quits that QEMU through its QMP socket, then removes the directory.
#[test]
fn a_qemu_a_killed_fruix_left_under_a_wrapper_is_quit_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let silent = || Vm {
        boot_timeout: 600,
        ..Vm::silent("silent")
    };
    let mut killed = spawn_silenced(&mut build_with_emulator(dir.path(), silent(), &wrapper()));
    wait_for_the_guest_s_network(dir.path());
    assert_eq!(qemu_processes(dir.path()).len(), 2);
    signal(killed.id() as i32, libc::SIGKILL);
    killed.wait().unwrap();
    // The wrapper dies with fruix; the emulator it runs does not.
    wait_until("the wrapper is gone", || {
        qemu_processes(dir.path()).len() == 1
    });
    // The next run, into another result root beside it: its emulator
    // fails at once, once the sweep is done.
    let file = machines(dir.path(), &[silent()]);
    let mut next = vm_build_into(dir.path(), &file, "silent", "next");
    emulator_on_path(&mut next, dir.path(), "exit 1");
    let out = run(&mut next);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("quit QEMU of guest fruix-"), "{stderr}");
    wait_until("the QEMU left running is gone", || {
        qemu_processes(dir.path()).is_empty()
    });
}

/// The same wrapper, a guest ignoring its power button: the hard stop at
/// the end of the shutdown timeout stops QEMU too, and fruix exits.
#[test]
fn the_hard_stop_after_the_shutdown_timeout_stops_qemu_under_a_wrapper() {
    let dir = tempfile::tempdir().unwrap();
    // The build fails once the guest answers (a wrong pinned host key).
    let deaf = Vm {
        host_key: WRONG_HOST_KEY.into(),
        initrd: initrd_ignoring_the_power_button(),
        shutdown_timeout: 2,
        ..Vm::new("deaf")
    };
    let child = spawn_piped(&mut build_with_emulator(dir.path(), deaf, &wrapper()));
    let (status, stderr) = finish_within(child, Duration::from_secs(300), dir.path());
    // A host key refused is the caller's configuration: exit 2.
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(stderr.contains("pinned"), "the guest came up: {stderr}");
    assert_eq!(qemu_processes(dir.path()), Vec::<i32>::new());
}

/// How long the stage `stage` took, as its `==> STAGE done in 1.5s` (or
/// `FAILED`) line in `stderr` says.
fn stage_took(stderr: &str, stage: &str) -> Duration {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(&format!("==> {stage} ")))
        .unwrap_or_else(|| panic!("no stage {stage}: {stderr}"));
    let seconds = line
        .rsplit(' ')
        .next()
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{line}"));
    Duration::from_secs_f64(seconds)
}

/// Regression: the boot timeout was given to QEMU's start (its QMP
/// greeting), then again, whole, to the wait for SSH: a QEMU that never
/// greeted ran twice the boot timeout, failing "after 5s" 10 s in. One
/// deadline, from the start of the boot, bounds both.
#[test]
fn a_qemu_that_never_greets_fails_once_its_boot_timeout_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let boot_timeout = 5;
    let vm = Vm {
        boot_timeout,
        shutdown_timeout: 1,
        ..Vm::new("mute")
    };
    // Neither greets on QMP nor exits: `sleep`, under a name saying
    // `qemu-system` in this directory (for `qemu_processes`).
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sleep = crate::util::require_tool("sleep", "coreutils");
    std::os::unix::fs::symlink(sleep, bin.join("qemu-system-x86_64-sleep")).unwrap();
    let mute = "exec \"$0\"-sleep 100000";
    let child = spawn_piped(&mut build_with_emulator(dir.path(), vm, mute));
    let (status, stderr) = finish_within(child, Duration::from_secs(120), dir.path());
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("timed out after {boot_timeout}s")),
        "{stderr}"
    );
    let limit = Duration::from_secs(boot_timeout.into());
    let booting = stage_took(&stderr, "vm-boot") + stage_took(&stderr, "vm-ssh");
    // The stages' lines round to a tenth of a second; the wait for SSH
    // ends at the deadline, or one banner poll (0.2 s) past it.
    assert!(
        booting >= limit - Duration::from_millis(100) && booting < limit + Duration::from_secs(1),
        "boot and wait for SSH took {booting:?}: {stderr}"
    );
    assert_eq!(qemu_processes(dir.path()), Vec::<i32>::new());
}
