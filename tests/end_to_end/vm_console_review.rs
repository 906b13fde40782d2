//! Regressions from a review of VM executors and the guest protocol
//! against a hostile or broken guest: a guest's console that cannot be
//! saved (a full disk) is said so, not taken for a guest that printed
//! nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::run;
use crate::vm::{machines, qemu_processes, vm_build_into, Vm};

/// A small tmpfs mounted at a directory, unmounted when dropped (whatever
/// the test's outcome).
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    /// Mounts a tmpfs of `size` (mount(8)'s `size=`) at `dir` (made).
    fn mount(dir: &Path, size: &str) -> SmallTmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount a tmpfs (this test runs as root)"
        );
        SmallTmpfs(dir.to_path_buf())
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Regression: with the result root on a full disk, the console's writes
/// failed unseen, `logs/console.log` stayed empty, and the boot timeout
/// said "its console is empty", blaming a guest that had printed its
/// lines. It says the console could not be saved, why, and quotes the
/// console's last lines from memory.
#[test]
fn a_console_on_a_full_disk_is_said_unsaved_and_quoted_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let full = SmallTmpfs::mount(&dir.path().join("full"), "8k");
    let file = machines(
        dir.path(),
        &[Vm {
            // Long enough for a loaded machine's guest to print its line
            // (`quiet`: it prints nothing before it) well before it.
            boot_timeout: 60,
            ..Vm::silent("silent")
        }],
    );
    let out = run(&mut vm_build_into(dir.path(), &file, "silent", "full/r"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(qemu_processes(dir.path()).is_empty(), "{stderr}");
    drop(full);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("the SSH banner of guest fruix-"),
        "{stderr}"
    );
    assert!(
        stderr.contains("its console could not be saved: No space left on device"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fruix-vm: not starting sshd (fruix.nossh)"),
        "the console's last lines are quoted from memory: {stderr}"
    );
    assert!(!stderr.contains("its console is empty"), "{stderr}");
}
