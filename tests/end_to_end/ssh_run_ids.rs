//! A guest's state directory and store shared by builds from several hosts
//! (two CI hosts sharing a build guest): each build gets a guest result root
//! of its own even when another build has taken its run id's name, and a
//! cancelled source upload leaves no temporary directory in the guest store.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use fruix_core::run_id::format_run_id;

use crate::sshd::{guest_build, Sshd};
use crate::util::{run, wait_until};

/// What stands in the guest state directory for another host's build.
const OTHER_HOST: &str = "built-by-another-host";

/// Takes, in the guest state directory of `sshd`, the guest result root
/// name of every run id from a few seconds ago to ten minutes from now, as
/// another host's builds would have: a directory holding [`OTHER_HOST`].
/// Whatever second a build started here takes as its run id, the name
/// `STATE/native-builds/RUN-ID` is not free. Returns the names taken.
fn take_run_ids_of_the_next_minutes(sshd: &Sshd) -> Vec<String> {
    let dir = sshd.state_dir().join("native-builds");
    std::fs::create_dir_all(&dir).unwrap();
    let now = SystemTime::now() - Duration::from_secs(5);
    (0..600)
        .map(|s| {
            let run_id = format_run_id(now + Duration::from_secs(s)).unwrap();
            std::fs::create_dir(dir.join(&run_id)).unwrap();
            std::fs::write(dir.join(&run_id).join(OTHER_HOST), "").unwrap();
            run_id
        })
        .collect()
}

/// The run id recorded in the result root `root`'s `promotion.scm`.
fn recorded_run_id(root: &Path) -> String {
    let promotion = std::fs::read_to_string(root.join("promotion.scm")).unwrap();
    promotion
        .split_once("(run-id \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(id, _)| id.to_string())
        .unwrap_or_else(|| panic!("no run id in {promotion}"))
}

/// The guest state directory's result roots not in `taken`.
fn new_guest_roots(sshd: &Sshd, taken: &[String]) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir(sshd.state_dir().join("native-builds"))
        .unwrap()
        .flatten()
        .filter(|e| !taken.contains(&e.file_name().to_string_lossy().into_owned()))
        .map(|e| e.path())
        .collect();
    roots.sort();
    roots
}

/// Two builds from two hosts into one guest state directory, whose run ids'
/// names another host's builds have taken: both succeed, each in a guest
/// result root of its own, `RUN-ID.N`, and the other builds' roots are left
/// as they were.
fn builds_sharing_a_guest_state_directory_get_roots_of_their_own(executor: &str) {
    let sshd = Sshd::trusted();
    let taken = take_run_ids_of_the_next_minutes(&sshd);
    let hosts = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut expected = Vec::new();
    for host in &hosts {
        let out = run(&mut guest_build(&sshd, executor, host.path(), "r1"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{executor}: {stderr}");
        expected.push(recorded_run_id(&host.path().join("r1")));
    }
    let roots = new_guest_roots(&sshd, &taken);
    assert_eq!(roots.len(), 2, "{executor}: {roots:?}");
    assert_ne!(roots[0], roots[1]);
    let mut seen = Vec::new();
    for root in &roots {
        let name = root.file_name().unwrap().to_string_lossy().into_owned();
        let run_id = recorded_run_id(root);
        assert!(
            name == format!("{run_id}.1") || name == format!("{run_id}.2"),
            "{executor}: guest root {name} of run {run_id}"
        );
        assert!(root.join("artifacts/world/bin/sh").is_file(), "{name}");
        assert!(!root.join(".fruix-incomplete").exists(), "{name}");
        seen.push(run_id);
    }
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "{executor}: one guest root per build");
    for run_id in &taken {
        let other = sshd.state_dir().join("native-builds").join(run_id);
        let entries: Vec<_> = std::fs::read_dir(&other)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(entries, [OTHER_HOST], "{executor}: {run_id} was changed");
    }
}

#[test]
fn host_initiated_builds_sharing_a_guest_state_directory_get_roots_of_their_own() {
    builds_sharing_a_guest_state_directory_get_roots_of_their_own("host-initiated");
}

#[test]
fn self_hosted_builds_sharing_a_guest_state_directory_get_roots_of_their_own() {
    builds_sharing_a_guest_state_directory_get_roots_of_their_own("guest-self-hosted");
}

/// The temporary directories of source uploads in the guest store.
fn upload_leftovers(sshd: &Sshd) -> Vec<PathBuf> {
    fruix_core::testing::entries_starting_with(&sshd.guest_store(), ".tmp-fruix-source.")
}

/// Regression: the guest's receiving shell removed its temporary directory
/// only on exit, and sh runs no EXIT trap when SIGTERM (which the kill loop
/// of a cancelled command sends) kills it.
#[test]
fn a_cancelled_source_upload_leaves_no_temporary_directory_in_the_guest_store() {
    let sshd = Sshd::trusted_with_bin();
    // The guest's tar says it is receiving, then waits as a slow upload
    // would, until it is stopped.
    sshd.guest_program(
        "tar",
        "#!/bin/sh\n: > \"$4/.receiving\"\nexec tail -f /dev/null\n",
    );
    let host = tempfile::tempdir().unwrap();
    let mut child = guest_build(&sshd, "host-initiated", host.path(), "r1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    wait_until("the guest receives the source", || {
        upload_leftovers(&sshd)
            .iter()
            .any(|tmp| tmp.join(".receiving").exists())
    });
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_eq!(upload_leftovers(&sshd), Vec::<PathBuf>::new(), "{stderr}");
}
