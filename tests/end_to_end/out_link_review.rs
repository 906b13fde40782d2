//! Regressions of the review of when `fruix build` finds that its out link
//! cannot be made: only once the whole build had run and been promoted,
//! when the link's directory was not writable by this user, or was the
//! current directory and had been removed. Both are refused (exit 2)
//! before anything is built now.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::util::*;

/// `cmd build` of the miniature tree by `local` into `dir/store` and
/// `dir/state`, with the tests' flags and the default out link
/// (`./result`).
fn build_linking_result(mut cmd: Command, dir: &Path) -> Command {
    cmd.args(["build", "--json", "--executor", "local", "--source"])
        .arg(fixture_source())
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(FIXTURE_BUILD_FLAGS);
    cmd
}

/// Checks that `out` was refused as a usage error whose JSON message holds
/// `says`, and that nothing was built in `dir/state`.
#[track_caller]
fn refused_before_building(out: &std::process::Output, dir: &Path, says: &str) {
    json_error(out, 2, says);
    let runs = dir.join("state/native-builds");
    let built = std::fs::read_dir(&runs).map_or(0, |d| d.count());
    assert_eq!(built, 0, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_build_whose_out_link_directory_is_not_writable_is_refused_before_it_runs() {
    let dir = dir_for_root_and_others("runs fruix as nobody in root's directory");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    // The current directory, root's, is where `./result` would go.
    let out = run(&mut build_linking_result(as_nobody(dir.path()), &home));
    let says = "--out-link result: the link cannot be made in . (Permission denied";
    refused_before_building(&out, &home, says);
}

#[test]
fn a_build_in_a_removed_current_directory_is_refused_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let mut cmd = build_linking_result(fruix(), dir.path());
    cmd.current_dir(&cwd);
    let gone = std::ffi::CString::new(cwd.to_str().unwrap()).unwrap();
    // SAFETY: rmdir(2) only, between fork and exec (after the chdir).
    unsafe {
        cmd.pre_exec(move || match libc::rmdir(gone.as_ptr()) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let out = run(&mut cmd);
    refused_before_building(&out, dir.path(), "the current directory is gone");
}
