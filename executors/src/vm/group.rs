//! An emulator run as fruix's child leading a process group of its own,
//! which is what fruix stops: the child may be a wrapper script that runs
//! the real emulator as its own child rather than `exec` it (as some
//! packaged `qemu-system-x86_64` are), and killing the child alone would
//! leave that emulator running, its guest up and its console socket open.
//! So every hard stop sends SIGKILL to the whole group, and so does
//! finding the child gone by itself: what remains of its group then is
//! the guest, orphaned.
//!
//! The group's id is the child's pid, which names no other process or
//! group while the child is not reaped (its zombie holds the pid), nor
//! while any process of the group remains. A hard stop therefore signals
//! the group before it reaps the child; a child that exits by itself is
//! reaped first, its group signalled right after (then any process left
//! holds the id) and never again.

use rustix::process::{kill_process_group, Pid, Signal};

/// The emulator's process, leader of its own group (spawned with
/// `process_group(0)`); dropping it kills the group.
#[derive(Debug)]
pub(super) struct GroupLeader {
    child: tokio::process::Child,
    /// The group's id, until the group has been killed.
    group: Option<Pid>,
}

impl GroupLeader {
    /// `child`, spawned as the leader of a new process group. (A child
    /// that is not, as some tests' are, is the only process stopped: no
    /// group has its pid as id while it lives, and signalling one fails.)
    pub(super) fn new(child: tokio::process::Child) -> Self {
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw);
        GroupLeader { child, group }
    }

    /// Whether the child still runs. Once it is found gone, what remains
    /// of its group is killed.
    pub(super) fn running(&mut self) -> bool {
        if matches!(self.child.try_wait(), Ok(None)) {
            return true;
        }
        self.kill_group();
        false
    }

    /// Waits for the child to exit, then kills what remains of its group.
    pub(super) async fn wait(&mut self) {
        let _ = self.child.wait().await;
        self.kill_group();
    }

    /// Stops the emulator hard: SIGKILL to every process of its group, the
    /// child's pid still held, then the child reaped. The emulator's other
    /// processes are reaped by whoever inherits them; their files (the
    /// console socket) close as they die.
    pub(super) async fn kill(&mut self) {
        self.kill_group();
        // A no-op for a child that is gone; killing also reaps it.
        let _ = self.child.kill().await;
    }

    /// SIGKILL to the group, once.
    fn kill_group(&mut self) {
        if let Some(group) = self.group.take() {
            // Fails when no process of it is left: nothing to kill.
            let _ = kill_process_group(group, Signal::KILL);
        }
    }
}

impl Drop for GroupLeader {
    /// Kills the group (the child's own `kill_on_drop` reaps the child).
    fn drop(&mut self) {
        // A child reaped had its group killed then; its pid is no longer
        // held.
        if self.child.id().is_some() {
            self.kill_group();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::vm::driver::poll;

    /// Waits, at most 10 s, for the process `pid` to be gone (or a zombie).
    async fn gone(pid: i32) -> bool {
        poll(
            Duration::from_secs(10),
            Duration::from_millis(10),
            || async move { !alive(pid) },
        )
        .await
    }

    /// Whether the process `pid` is there, not a zombie.
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    /// Kills the process `pid` when dropped: a test that fails leaves no
    /// `sleep` behind.
    struct Killed(i32);

    impl Drop for Killed {
        fn drop(&mut self) {
            if alive(self.0) {
                let _ = rustix::process::kill_process(Pid::from_raw(self.0).unwrap(), Signal::KILL);
            }
        }
    }

    /// A shell in a group of its own that runs `sleep` without `exec` (as
    /// a wrapper script runs its emulator), printing the sleep's pid: the
    /// leader, and the pid of its child.
    async fn wrapper() -> (GroupLeader, Killed) {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "sleep 100000 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(out)
            .read_line(&mut line)
            .await
            .unwrap();
        (
            GroupLeader::new(child),
            Killed(line.trim().parse().unwrap()),
        )
    }

    /// Regression: a hard stop killed the wrapper alone; the emulator it
    /// ran went on.
    #[tokio::test]
    async fn a_hard_stop_kills_the_wrapper_s_child_too() {
        let (mut leader, inner) = wrapper().await;
        assert!(leader.running());
        assert!(alive(inner.0));
        tokio::time::timeout(Duration::from_secs(10), leader.kill())
            .await
            .unwrap();
        // Reaped by whoever inherited it (pid 1, or a subreaper), if ever.
        assert!(gone(inner.0).await, "the wrapper's child runs on");
        assert!(!leader.running());
    }

    /// A leader found gone by itself takes what remains of its group with
    /// it.
    #[tokio::test]
    async fn a_leader_found_gone_takes_its_group_with_it() {
        let (mut leader, inner) = wrapper().await;
        let pid = leader.child.id().unwrap() as i32;
        rustix::process::kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL).unwrap();
        leader.wait().await;
        assert!(!leader.running());
        assert!(gone(inner.0).await, "the wrapper's child runs on");
    }

    /// Dropped, the leader takes its group with it.
    #[tokio::test]
    async fn a_dropped_leader_takes_its_group_with_it() {
        let (leader, inner) = wrapper().await;
        drop(leader);
        assert!(gone(inner.0).await, "the wrapper's child runs on");
    }
}
