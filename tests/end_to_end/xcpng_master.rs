//! The XCP-ng pool master as a [`Host`] over a real OpenSSH `sshd` on
//! 127.0.0.1 ([`Sshd`]): its own key and pinned host key, a command's whole
//! stdout (up to a cap, beyond it an error), and a command given up on
//! stopped on the master before the next one starts, and a lost connection
//! made anew for the next command.

use std::time::Duration;

use fruix_core::ssh_target::SshTarget;
use fruix_core::Error;
use fruix_executors::ssh::remote::OUTPUT_TAIL_LINES;
use fruix_executors::vm::driver::Host;
use fruix_executors::vm::master::{SshHost, MASTER_STDOUT_MAX_BYTES};
use tokio_util::sync::CancellationToken;

use crate::sshd::{keygen, Sshd};

/// The master as the `vm` executor makes it of `sshd`: the authorized key
/// as its `master-key`, its host key pinned as `master-host-key`.
fn master(sshd: &Sshd) -> SshHost {
    SshHost::new(target(sshd), Some(sshd.identity()), Some(sshd.host_key()))
}

fn target(sshd: &Sshd) -> SshTarget {
    SshTarget::parse(&sshd.guest()).unwrap()
}

fn words(argv: &[&str]) -> Vec<String> {
    argv.iter().map(|w| w.to_string()).collect()
}

/// Regression: only the last 20 lines of a command's stdout came back from
/// the master (after a note), so a parser of longer `xe` output would have
/// read a cut list without knowing it.
#[tokio::test]
async fn the_master_gives_a_command_s_whole_stdout_and_a_tail_of_its_stderr() {
    let sshd = Sshd::start();
    let master = master(&sshd);
    let out = master.run(&words(&["seq", "1", "5000"])).await.unwrap();
    assert!(out.success(), "{out:?}");
    let expected: String = (1..=5000).map(|i| format!("{i}\n")).collect();
    assert!(
        out.stdout == expected,
        "{} bytes, {} lines, starting {:?}",
        out.stdout.len(),
        out.stdout.lines().count(),
        out.stdout.chars().take(60).collect::<String>()
    );

    // stderr stays a tail: the last lines, after a note.
    let out = master
        .run(&words(&["sh", "-c", "seq 1 100 >&2; exit 3"]))
        .await
        .unwrap();
    assert_eq!(out.status, 3);
    let last: Vec<&str> = out.stderr.lines().rev().take(OUTPUT_TAIL_LINES).collect();
    let expected: Vec<String> = (81..=100).rev().map(|i| i.to_string()).collect();
    assert_eq!(last, expected);
    assert!(
        out.stderr.lines().count() <= OUTPUT_TAIL_LINES + 1,
        "{}",
        out.stderr
    );
}

/// More stdout than the cap is an error, not a silent cut: the command is
/// stopped (an endless one too) and nothing of its output is returned.
#[tokio::test]
async fn more_stdout_than_the_cap_is_an_error_and_stops_the_command() {
    let sshd = Sshd::start();
    let master = master(&sshd);
    // Endless: only stopping it ends the run.
    let ran = tokio::time::timeout(
        Duration::from_secs(60),
        master.run(&words(&["yes", "xe-output"])),
    )
    .await
    .expect("an endless command over the cap is stopped");
    let e = ran.unwrap_err();
    assert!(matches!(e, Error::System { .. }), "{e:?}");
    assert!(
        e.to_string().contains(&MASTER_STDOUT_MAX_BYTES.to_string()),
        "{e}"
    );
    // Exactly at the cap is still whole.
    let at_cap = format!("head -c {MASTER_STDOUT_MAX_BYTES} /dev/zero | tr '\\0' '\\n'");
    let out = master.run(&words(&["sh", "-c", &at_cap])).await.unwrap();
    assert!(out.success(), "{:?}", out.stderr);
    assert!(
        out.stdout.len() == MASTER_STDOUT_MAX_BYTES && out.stdout.bytes().all(|b| b == b'\n'),
        "{} bytes",
        out.stdout.len()
    );
}

/// Whether process `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// A command given up on is stopped on the master before `run_until`
/// returns, so that the next command (the forced `xe vm-shutdown` after
/// a clean one ran past its grace) never runs beside it.
#[tokio::test]
async fn a_command_given_up_on_is_stopped_on_the_master_before_run_until_returns() {
    let sshd = Sshd::start();
    let master = master(&sshd);
    let pid_file = sshd.dir.path().join("pid");
    let script = format!(
        "echo $$ > {}.tmp; mv {0}.tmp {0}; exec sleep 1000",
        pid_file.display()
    );
    let cancel = CancellationToken::new();
    let argv = words(&["sh", "-c", &script]);
    let run = master.run_until(&argv, &cancel);
    tokio::pin!(run);
    // Give up once the command runs (its pid written).
    let written = pid_file.clone();
    let written = tokio::task::spawn_blocking(move || {
        crate::util::wait_until("the command runs", || written.exists())
    });
    tokio::select! {
        out = &mut run => panic!("the command ended by itself: {out:?}"),
        waited = written => waited.unwrap(),
    }
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    cancel.cancel();
    assert_eq!(run.await.unwrap(), None);
    assert!(!alive(pid), "the command {pid} still runs on the master");
}

/// The master's host key is pinned: another key is refused.
#[tokio::test]
async fn a_master_with_another_host_key_is_refused() {
    let sshd = Sshd::start();
    let other = tempfile::tempdir().unwrap();
    keygen(&other.path().join("k"));
    let key = std::fs::read_to_string(other.path().join("k.pub")).unwrap();
    let key: String = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let master = SshHost::new(target(&sshd), Some(sshd.identity()), Some(key));
    let e = master.run(&words(&["true"])).await.unwrap_err();
    assert!(e.to_string().contains("HAS CHANGED"), "{e}");
}

/// A key the master does not take is refused, naming the field that sets
/// it (the machine's `private-key` is the guest's, not the master's).
#[tokio::test]
async fn a_refused_master_key_names_the_master_key_field() {
    let sshd = Sshd::start();
    let other = tempfile::tempdir().unwrap();
    keygen(&other.path().join("k"));
    let master = SshHost::new(
        target(&sshd),
        Some(other.path().join("k")),
        Some(sshd.host_key()),
    );
    let e = master.run(&words(&["true"])).await.unwrap_err();
    assert!(matches!(e, Error::System { .. }), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("refused authentication") && message.contains("`master-key`"),
        "{message}"
    );
}

/// Regression: the master's connection was made once for good, so after it
/// was lost every later command failed: the whole teardown, leaving the
/// guest running. The command after the one that lost it connects anew.
#[tokio::test]
async fn the_command_after_a_lost_connection_connects_anew() {
    let sshd = Sshd::start();
    let master = master(&sshd);
    assert!(master.run(&words(&["true"])).await.unwrap().success());
    // Kills the sshd process that serves this connection: the first sshd
    // among the command's ancestors (the listener is further up).
    let cut = r#"p=$$
while [ "$p" -gt 1 ]; do
  case $(ps -o comm= -p "$p") in sshd*) kill -9 "$p"; exit 0;; esac
  p=$(ps -o ppid= -p "$p" | tr -d ' ')
done
exit 1"#;
    let lost = tokio::time::timeout(
        Duration::from_secs(60),
        master.run(&words(&["sh", "-c", cut])),
    )
    .await
    .expect("a lost connection ends the command");
    let e = lost.unwrap_err();
    assert!(matches!(e, Error::ConnectionLost { .. }), "{e:?}");
    let out = master.run(&words(&["echo", "again"])).await.unwrap();
    assert_eq!(out.stdout, "again\n");
}
