//! The `vm` executor with a real QEMU guest: the small Linux guest
//! `scripts/vm-image.sh` builds from Debian packages (a cloud kernel,
//! busybox, dropbear), booted under TCG. These tests cover the guest's life
//! around a build: the pinned host key, the boot timeout quoting the
//! console, Ctrl-C, and that no qemu process is ever left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{fixture_build, fruix, run, wait_until};

/// The guest image (built once, then reused).
fn image() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/vm-image");
    if !dir.join(".complete").exists() {
        let status = Command::new("bash")
            .arg(root.join("scripts/vm-image.sh"))
            .arg(&dir)
            .status()
            .expect("bash runs scripts/vm-image.sh");
        assert!(status.success(), "scripts/vm-image.sh failed");
    }
    dir
}

/// A machines file in `dir` with one VM machine `name` booting the guest
/// image, its kernel command line `append`, its host key `host_key`.
fn machines(dir: &Path, name: &str, append: &str, host_key: &str, boot_timeout: u32) -> PathBuf {
    machines_with(dir, name, append, host_key, boot_timeout, 2)
}

/// [`machines`] with the machine's shutdown timeout.
fn machines_with(
    dir: &Path,
    name: &str,
    append: &str,
    host_key: &str,
    boot_timeout: u32,
    shutdown_timeout: u32,
) -> PathBuf {
    let image = image();
    let file = dir.join("machines.scm");
    std::fs::write(
        &file,
        format!(
            "(fruix-machines\n  (machine (name {name:?}) (user \"root\") (private-key {:?})\n    (vm (driver qemu) (kernel {:?}) (initrd {:?}) (append {append:?})\n        (memory 512) (accel tcg) (boot-timeout {boot_timeout}) (shutdown-timeout {shutdown_timeout})\n        (host-key {host_key:?}))))\n",
            image.join("id_ed25519").display().to_string(),
            image.join("vmlinuz").display().to_string(),
            image.join("initrd.img").display().to_string(),
        ),
    )
    .unwrap();
    file
}

/// The guest's pinned host key.
fn host_key() -> String {
    let text = std::fs::read_to_string(image().join("host_ed25519.pub")).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `fruix build --executor vm` of the miniature tree on `machine`, with
/// the image's emulator on PATH when it had to be unpacked.
fn vm_build(dir: &Path, machines: &Path, machine: &str) -> Command {
    crate::util::require_tool("bmake", "bmake");
    let mut cmd = fixture_build(fruix(), "vm", dir, "root");
    cmd.arg("--machines")
        .arg(machines)
        .args(["--machine", machine]);
    with_emulator(&mut cmd);
    cmd
}

/// Puts the image's emulator on `cmd`'s PATH when it had to be unpacked;
/// else the installed one must be there.
fn with_emulator(cmd: &mut Command) {
    let bin = image().join("bin");
    if bin.is_dir() {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", bin.display()));
    } else {
        crate::util::require_tool("qemu-system-x86_64", "qemu-system-x86");
    }
}

/// Starts a build on a guest that never opens SSH (so that the build waits
/// for it until stopped), with the machine's `shutdown_timeout`.
fn start_on_silent_guest(dir: &Path, shutdown_timeout: u32) -> std::process::Child {
    let file = machines_with(
        dir,
        "silent",
        "console=ttyS0 quiet fruix.nossh",
        &host_key(),
        600,
        shutdown_timeout,
    );
    vm_build(dir, &file, "silent")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The pids of qemu processes whose command line names `marker` (a test's
/// own directory: its guests' console files are there).
fn qemu_processes(marker: &Path) -> Vec<i32> {
    let marker = marker.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("qemu-system") && cmdline.contains(&marker)).then_some(pid)
        })
        .collect()
}

#[test]
fn a_wrong_pinned_host_key_is_refused_and_the_guest_is_torn_down() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    let file = machines(dir.path(), "vm1", "console=ttyS0 quiet", wrong, 120);
    let out = run(&mut vm_build(dir.path(), &file, "vm1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("vm-ssh done"),
        "the guest came up: {stderr}"
    );
    assert!(
        stderr.contains("pinned") && stderr.contains("SHA256:"),
        "{stderr}"
    );
    assert!(stderr.contains("vm-teardown"), "{stderr}");
    assert!(qemu_processes(dir.path()).is_empty());
    assert!(crate::util::nothing_promoted(&dir.path().join("store")));
}

#[test]
fn a_guest_that_never_opens_ssh_fails_after_the_boot_timeout_quoting_its_console() {
    let dir = tempfile::tempdir().unwrap();
    let file = machines(
        dir.path(),
        "silent",
        "console=ttyS0 quiet fruix.nossh",
        &host_key(),
        20,
    );
    let out = run(&mut vm_build(dir.path(), &file, "silent"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the SSH banner of guest fruix-"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fruix-vm: not starting sshd (fruix.nossh)"),
        "the console is quoted: {stderr}"
    );
    assert!(qemu_processes(dir.path()).is_empty());
}

#[test]
fn ctrl_c_while_the_guest_boots_leaves_no_qemu_process_within_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    // A long shutdown timeout: after Ctrl-C the guest is not waited for.
    let mut child = start_on_silent_guest(dir.path(), 120);
    // Once the guest's console says it is up, fruix is waiting for SSH
    // (the guest's files are beside the result root, in `.RUN_ID.vm`).
    wait_until("the guest's network is up", || {
        std::fs::read_dir(dir.path()).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("console.log"))
                    .is_ok_and(|c| c.contains("fruix-vm: network up"))
            })
        })
    });
    assert!(!qemu_processes(dir.path()).is_empty(), "the guest runs");
    // SAFETY: kill(2) on our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let signalled = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "cancelled");
    assert!(qemu_processes(dir.path()).is_empty());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "teardown took {:?}",
        signalled.elapsed()
    );
}

#[test]
fn a_matrix_cell_on_a_vm_machine_boots_it_and_runs_the_inner_mode_in_it() {
    let m = crate::matrix::Matrix::new(
        "  (machines-file \"machines.scm\")\n  (axes (executor \"vm\"))\n  (retries 0)\n  (config (vm (inner \"host-initiated\")))",
    );
    machines(m.dir.path(), "vm1", "console=ttyS0 quiet", &host_key(), 120);
    let mut cmd = m.command(&[]);
    with_emulator(&mut cmd);
    let out = run(&mut cmd);
    // The guest has no mtree, which receiving the source object needs: the
    // cell fails there, in the guest, after booting it and connecting with
    // its pinned host key. (A guest that can build is the next step.)
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        crate::matrix::describe(&out)
    );
    let report = m.report();
    let cell = crate::matrix::cell(&report, "vm");
    assert_eq!(cell["machine"], "vm1", "{cell:#}");
    assert!(
        cell["error"]
            .as_str()
            .unwrap()
            .contains("mtree is missing in the guest"),
        "{cell:#}"
    );
    assert!(report["machines_set_aside"].as_array().unwrap().is_empty());
    assert!(qemu_processes(m.dir.path()).is_empty());
}

#[test]
fn a_fruix_killed_outright_leaves_no_qemu_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_on_silent_guest(dir.path(), 2);
    wait_until("the guest runs", || !qemu_processes(dir.path()).is_empty());
    // SIGKILL: fruix cannot tear anything down; the kernel stops the guest.
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("no qemu process is left", || {
        qemu_processes(dir.path()).is_empty()
    });
}
