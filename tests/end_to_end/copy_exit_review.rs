//! Regressions from a review of how `store copy` fails when the other
//! side's `store serve` dies in the middle of an archive: a lost
//! connection (exit 3, which a retry may get past), not an archive refused
//! (exit 4), in either direction.
//!
//! The peer is the real `fruix store serve` (in a mount namespace of its
//! own, as in `store_copy`), run by a shell script that cuts its archive
//! short at a fixed byte count (`dd bs=1`, which passes each byte on at
//! once, where `head -c` keeps them in its stdio buffer), then ends as the
//! case says: no timing decides where the archive ends.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::sshd::{bind_mounted_fruix, script, Sshd};
use crate::util::{
    failed_with, listing, object_names, promoted_store, require_tool, run_ok, run_with_deadline,
    ssh_store_copy, store_export,
};

/// A store at `dir/store`, and another machine's at `dir/there` (seen at
/// the same path by its `store serve`): the sample objects are in one of
/// them, the other is empty.
struct Peer {
    dir: tempfile::TempDir,
    sshd: Sshd,
    /// The sample world artifact's path.
    world: PathBuf,
    /// The length of the world artifact's archive, as `store serve` sends
    /// it.
    archive_len: u64,
}

impl Peer {
    /// The sample objects here (`to`) or there (`from`).
    fn new(direction: &str) -> Peer {
        require_tool("unshare", "util-linux");
        require_tool("dd", "coreutils");
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = promoted_store(dir.path());
        let world = PathBuf::from(report["artifacts"]["world"]["store_path"].as_str().unwrap());
        let archive = dir.path().join("world.arc");
        run_ok(&mut store_export(&store, &archive, &[], &world));
        let archive_len = std::fs::metadata(&archive).unwrap().len();
        let there = dir.path().join("there");
        match direction {
            "--from" => {
                std::fs::rename(&store, &there).unwrap();
                std::fs::create_dir(&store).unwrap();
            }
            _ => std::fs::create_dir(&there).unwrap(),
        }
        Peer {
            dir,
            sshd: Sshd::trusted(),
            world,
            archive_len,
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A `--remote-program` (named `name`) whose shell line `pipeline`
    /// runs `store serve` of `dir/there`, written `$FRUIX` in it (without
    /// signature checks); the shell snippet `after` follows it.
    fn serving(&self, name: &str, pipeline: &str, after: &str) -> PathBuf {
        let fruix = self.dir.path().join(format!("{name}-fruix"));
        bind_mounted_fruix(&fruix, "", &self.dir.path().join("there"), &self.store());
        let program = self.dir.path().join(name);
        let pipeline = pipeline.replace(
            "$FRUIX",
            &format!("{} \"$@\" --no-check-sigs", fruix.display()),
        );
        script(&program, &format!("#!/bin/sh\n{pipeline}\n{after}\n"));
        program
    }

    /// `fruix store copy DIRECTION` of the world artifact with `program`
    /// serving the other store, within two minutes.
    fn copy(&self, direction: &str, program: &Path) -> Output {
        let store = self.store();
        let flags = ["--no-check-sigs"];
        let flags: &[&str] = if direction == "--from" { &flags } else { &[] };
        let mut cmd = ssh_store_copy(&self.sshd, flags, direction, program, &store, &store);
        cmd.arg(&self.world);
        run_with_deadline(&mut cmd, Duration::from_secs(120))
    }
}

/// A shell command passing the first `n` bytes of its input on as they
/// come.
fn first_bytes(n: u64) -> String {
    format!("dd bs=1 count={n} 2>/dev/null")
}

/// Shell commands passing the first two lines of their input on, each as
/// it comes.
const TWO_LINES: &str =
    "IFS= read -r a; printf '%s\\n' \"$a\"; IFS= read -r b; printf '%s\\n' \"$b\"";

/// What the remote command does once its archive is cut short: how it
/// ends, the copy's exit status then, and what its stderr says.
type Ending = (&'static str, &'static str, i32, &'static [&'static str]);

/// The ends of a remote command that cut its archive short: killed (its
/// shell too, the one whose end SSH reports), or exiting 9, is the other
/// side dying (exit 3); exiting 4, its own refusal (a corrupt object
/// there, as `store serve` exits then), stays one (exit 4).
const DIED: [Ending; 3] = [
    (
        "killed",
        "echo 'remote dying' >&2; kill -KILL $PPID $$",
        3,
        &["was killed by signal KILL", "remote dying"],
    ),
    (
        "exit status 9",
        "echo 'remote crashed' >&2; exit 9",
        3,
        &["ended with exit status 9", "remote crashed"],
    ),
    (
        "exit status 4",
        "echo 'object corrupt there' >&2; exit 4",
        4,
        &["ended with exit status 4", "object corrupt there"],
    ),
];

/// Regression: a `store serve` killed in the middle of the archive that
/// `copy --from` fetched failed the copy as an archive refused (exit 4:
/// "archive refused: the archive ends after N bytes"), telling CI not to
/// retry. Cut short by a remote that then died, it is a lost connection
/// (exit 3), with how the other side ended and its last stderr lines;
/// cut short by a remote that exited 0, the archive it claims whole is
/// refused (exit 4). Either way this store is left as it was (none).
#[test]
fn a_copy_from_a_peer_killed_in_the_middle_of_the_archive_fails_as_a_lost_connection() {
    let t = Peer::new("--from");
    // Past the answers to the hello and the export (under 100 bytes),
    // inside the archive.
    let cut = format!("$FRUIX | {}", first_bytes(100 + t.archive_len / 2));
    let clean: Ending = ("exit status 0", "exit 0", 4, &["archive refused"]);
    for (n, (what, after, status, says)) in DIED.into_iter().chain([clean]).enumerate() {
        let program = t.serving(&format!("cut-{n}"), &cut, after);
        let out = t.copy("--from", &program);
        let stderr = failed_with(what, &out, status, says);
        assert!(stderr.contains("the archive ends"), "{what}: {stderr}");
        assert!(stderr.contains("was not changed"), "{what}: {stderr}");
        assert_eq!(listing(&t.store()), Vec::<PathBuf>::new(), "{what}");
    }
}

/// `copy --to` agrees: a `store serve` that dies in the middle of the
/// archive it imports, before it answers, fails the copy as a lost
/// connection (exit 3), with how it ended and its last stderr lines; the
/// other store keeps nothing.
#[test]
fn a_copy_to_a_peer_killed_in_the_middle_of_the_archive_fails_as_a_lost_connection() {
    let t = Peer::new("--to");
    // Its input cut inside the archive (past the hello, valid and import
    // requests, under 300 bytes), its answers after the hello's and the
    // valid one's dropped (read a byte at a time by the shell): the
    // answer to its import is lost (it fails to write it), and it dies.
    let cut = format!(
        "{} | $FRUIX | {{ {TWO_LINES}; }}",
        first_bytes(300 + t.archive_len / 2)
    );
    for (n, (what, after, status, says)) in DIED[..2].iter().enumerate() {
        let program = t.serving(&format!("cut-{n}"), &cut, after);
        let out = t.copy("--to", &program);
        let stderr = failed_with(what, &out, *status, says);
        assert!(
            stderr.contains("in the middle of the session (import)"),
            "{what}: {stderr}"
        );
        let there = t.dir.path().join("there");
        assert_eq!(object_names(&there), Vec::<String>::new(), "{what}");
    }
}
