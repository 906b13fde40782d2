//! Regressions of a review of cancelled guest builds and of what a guest's
//! result root may hold at its top.
//!
//! - A cancelled host-initiated build removed its guest work directory but
//!   left its guest result root (`STATE/native-builds/RUN-ID`, still
//!   marked unfinished) in the guest, though a cancelled run's root is
//!   never imported; a guest-self-hosted build's helper removes its own.
//! - The import placed a `logs` that was a symlink (to `/etc`), or a file,
//!   and a `.fruix-signatures` symlink into the host's result root.
//! - A build cancelled while it ran said only `cancelled`, never naming the
//!   result root (and logs) it kept.
//! - A second Ctrl-C during a guest build's cleanup named nothing it left
//!   in the guest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::guest_import_cancel::holding_host_initiated_build;
use crate::ssh_import::import_refused;
use crate::sshd::Sshd;
use crate::util::{held_local_build_cancelled, wait_until, Leftovers};

/// How long a cancelled build may take to end.
const ENDS: Duration = Duration::from_secs(120);

/// The entries of the guest's `STATE/native-builds` of `sshd`.
fn guest_roots(sshd: &Sshd) -> Vec<PathBuf> {
    let dir = sshd.state_dir().join("native-builds");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    found.sort();
    found
}

/// Regression: Ctrl-C during a host-initiated build's world build left its
/// guest result root (marked unfinished) in the guest; only the work
/// directory next to it was removed. Both go now, and the host's message
/// names the host result root it kept.
#[test]
fn a_cancelled_host_initiated_build_leaves_nothing_in_the_guest() {
    let sshd = Sshd::trusted();
    let mark = sshd.dir.path().join("world-build-ran");
    let _leftovers = Leftovers(mark.clone());
    let (host, mut build) = holding_host_initiated_build(&sshd, &mark);
    wait_until("the world build runs", || mark.exists());
    // The guest result root and its work directory are there while it runs.
    assert_eq!(guest_roots(&sshd).len(), 2, "{:?}", guest_roots(&sshd));
    build.signal(libc::SIGINT);
    let said = build.wait_for_line("fruix: error: cancelled");
    let out = build.finish(ENDS, "the interrupted build");
    assert_eq!(out.status.code(), Some(130), "{said}");
    assert_eq!(
        guest_roots(&sshd),
        Vec::<PathBuf>::new(),
        "left in the guest"
    );
    let kept = host.path().join("r1");
    assert!(kept.join(".fruix-incomplete").is_file());
    assert!(
        said.contains(&format!("the result root {} was kept", kept.display())),
        "{said}"
    );
}

/// A build in the guest of `sshd` whose result root `tamper` (sh) changes
/// before it is imported: the import must be refused ([`import_refused`]),
/// saying `expected`. Returns the host directory.
fn refused_saying(sshd: &Sshd, tamper: &str, expected: &str) -> tempfile::TempDir {
    let (host, stderr) = import_refused(sshd, tamper, &[]);
    assert!(stderr.contains(expected), "{tamper}: {stderr}");
    host
}

/// Regression: a guest result root whose `logs` was a symlink (here to
/// `/etc`) was imported and placed in the host's result root. It is
/// refused as a hostile entry, as a symlink used as a directory is.
#[test]
fn a_guest_result_root_whose_logs_is_a_symlink_is_refused() {
    let host = refused_saying(
        &Sshd::trusted(),
        "rm -rf \"$ROOT/logs\" && ln -s /etc \"$ROOT/logs\"",
        "logs: guest archive entry refused: a symlink at the top of a result root",
    );
    assert!(host.path().join("r1/logs").symlink_metadata().is_err());
}

/// Regression: as above, for a `logs` that is a file and for a
/// `.fruix-signatures` symlink (the file a machine that signs at the build
/// site writes, which promotion reads).
#[test]
fn a_guest_result_root_whose_logs_is_a_file_or_with_a_top_symlink_is_refused() {
    let sshd = Sshd::trusted();
    for (tamper, expected) in [
        (
            "rm -rf \"$ROOT/logs\" && echo x > \"$ROOT/logs\"",
            "logs: guest archive entry refused: `logs` that is not a directory",
        ),
        (
            "ln -s /etc/passwd \"$ROOT/.fruix-signatures\"",
            ".fruix-signatures: guest archive entry refused: a symlink at the top",
        ),
    ] {
        refused_saying(&sshd, tamper, expected);
    }
}

/// Regression: a local build cancelled while make ran said only `fruix:
/// error: cancelled` (and `"message":"cancelled"` under `--json`): the
/// result root it kept, unfinished, and its logs were never named. Both
/// are said now, and are members of the JSON error object.
#[test]
fn a_build_cancelled_while_make_runs_names_the_result_root_and_logs_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_leftovers, said, out) =
        held_local_build_cancelled(d, &["--json"], libc::SIGINT, "fruix: error: cancelled");
    let (root, logs) = (d.join("root"), d.join("root/logs"));
    assert!(root.join(".fruix-incomplete").is_file());
    assert!(logs.join("buildworld.log").is_file());
    let expected = format!(
        "cancelled; the result root {} was kept, marked unfinished (it cannot be promoted); its logs are in {}",
        root.display(),
        logs.display()
    );
    assert_eq!(said, format!("fruix: error: {expected}"));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = &json["error"];
    assert_eq!(error["kind"], "cancelled", "{json}");
    assert_eq!(error["message"], expected.as_str(), "{json}");
    assert_eq!(error["result_root"], path_text(&root), "{json}");
    assert_eq!(error["logs"], path_text(&logs), "{json}");
}

fn path_text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Regression: a second Ctrl-C while a cancelled host-initiated build
/// removed what it made in the guest (a fast exit) named nothing left
/// there. It names the guest result root and work directory, with the
/// guest, as a fast exit cannot look whether they are still there. The
/// guest's `rm` of them holds (through `BASH_ENV`) once the test says so.
#[test]
fn a_second_ctrl_c_during_a_guest_cleanup_names_what_it_leaves_in_the_guest() {
    let sshd = Sshd::trusted_with("BASH_ENV={dir}/bash-env");
    let dir = sshd.dir.path();
    let (hold, cleaning) = (dir.join("hold-cleanup"), dir.join("cleaning"));
    std::fs::write(
        dir.join("bash-env"),
        format!(
            "if [ -e '{}' ]; then case \"$BASH_EXECUTION_STRING\" in *'rm -rf '*) : > '{c}'; exec tail -f '{c}' ;; esac; fi\n",
            hold.display(),
            c = cleaning.display()
        ),
    )
    .unwrap();
    let mark = dir.join("world-build-ran");
    let _leftovers = (Leftovers(mark.clone()), Leftovers(cleaning.clone()));
    let (_host, mut build) = holding_host_initiated_build(&sshd, &mark);
    wait_until("the world build runs", || mark.exists());
    let in_guest = guest_roots(&sshd);
    assert_eq!(in_guest.len(), 2, "{in_guest:?}");
    std::fs::write(&hold, "").unwrap();
    build.signal(libc::SIGINT);
    wait_until("the cleanup's rm runs in the guest", || cleaning.exists());
    build.signal(libc::SIGINT);
    let said = build.wait_for_line("cancelled again");
    let out = build.finish(ENDS, "the build cancelled twice");
    assert_eq!(out.status.code(), Some(130), "{said}");
    let [root, work] = &in_guest[..] else {
        unreachable!()
    };
    assert_eq!(
        work.as_os_str(),
        format!("{}.work", root.display()).as_str()
    );
    for (what, path) in [("result root", root), ("work directory", work)] {
        let left = format!(
            "; left the build's {what} in the guest {} on ",
            path.display()
        );
        assert!(said.contains(&left), "{left:?} in {said}");
    }
    assert_eq!(
        guest_roots(&sshd),
        in_guest,
        "the fast exit removes nothing"
    );
}
