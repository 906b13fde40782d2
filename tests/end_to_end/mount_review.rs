//! Regressions of the review of what removals do to a file system mounted
//! inside what they remove: `store gc` emptied a directory bind-mounted in
//! a result root or a store object (it removed through the mount point, as
//! `rm -rf` without `--one-file-system` does), and made it mode 0700. A
//! tree with a mount in it is refused now, with nothing of it removed.
//! And a build step (make) failing on a full file system was a build
//! failure (exit 1); it is a system failure now (exit 3: free space, then
//! retry), judged from the file system, a real tmpfs here. A dead root's
//! registration on a read-only mount was reported removed.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// A mount(2) call: `source`, `target`, file system type, flags and data.
struct Mount {
    source: Option<CString>,
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
    data: Option<CString>,
}

/// `path` as a C string.
fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// A bind mount of `source` at `target`.
fn bind(source: &Path, target: &Path) -> Mount {
    Mount {
        source: Some(c_path(source)),
        target: c_path(target),
        fstype: None,
        flags: libc::MS_BIND,
        data: None,
    }
}

/// A tmpfs of `size` at `target`.
fn tmpfs(target: &Path, size: &str) -> Mount {
    Mount {
        source: Some(CString::from(c"tmpfs")),
        target: c_path(target),
        fstype: Some(CString::from(c"tmpfs")),
        flags: 0,
        data: Some(CString::new(format!("size={size}")).unwrap()),
    }
}

/// Makes `cmd` run in a mount namespace of its own (private: nothing
/// leaks to the machine's), with `mounts` made there first, in order.
/// Needs root (the tests run as root).
fn in_mount_namespace(cmd: &mut Command, mounts: Vec<Mount>) {
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: between fork and exec the closure makes only system calls
    // (unshare, mount) on strings made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| match r {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            let (none, private) = (std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE);
            check(libc::mount(none, c"/".as_ptr(), none, private, none.cast()))?;
            for m in &mounts {
                let data = ptr(&m.data).cast();
                check(libc::mount(
                    ptr(&m.source),
                    m.target.as_ptr(),
                    ptr(&m.fstype),
                    m.flags,
                    data,
                ))?;
            }
            Ok(())
        });
    }
}

/// A build of the miniature tree by `local` into `dir/store` and
/// `dir/state`, promoted, with no out link (nothing roots it: its objects
/// and result root are all garbage); the store and state directory.
pub(crate) fn unrooted_build(dir: &Path) -> (PathBuf, PathBuf) {
    let (store, state) = (dir.join("store"), dir.join("state"));
    let mut build = fixture_build_into(fruix(), "local", &store, &state);
    build
        .args(FIXTURE_BUILD_FLAGS)
        .args(["--quiet", "--no-out-link"]);
    run_ok(&mut build);
    (store, state)
}

/// The world artifact's object in `store`.
pub(crate) fn world_object(store: &Path) -> PathBuf {
    std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("-native-world-"))
        .expect("the world object")
}

#[test]
fn a_step_failing_on_a_nearly_full_file_system_is_a_system_failure() {
    require_tool("stat", "coreutils");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    std::fs::create_dir(&state).unwrap();
    // A make that fills the file system of the state directory (the
    // result root's and the work directory's) to 4 MiB short of full, as
    // a compiler would, then fails; and one that only fails.
    let filling = d.join("filling-make");
    crate::sshd::script(
        &filling,
        &format!(
            "#!/bin/sh
set -e
free=$(stat -f -c '%a * %S' {s} | xargs expr)
head -c $((free - 4194304)) /dev/zero > {s}/filler
echo 'cc: No space left on device' >&2
exit 2
",
            s = state.display()
        ),
    );
    let failing = d.join("failing-make");
    crate::sshd::script(
        &failing,
        "#!/bin/sh
echo 'cc: error: no such member' >&2
exit 2
",
    );
    let build = |make: &Path| {
        let mut cmd = fixture_build_into(fruix(), "local", &d.join("store"), &state);
        cmd.args(FIXTURE_BUILD_FLAGS)
            .args(["--json", "--no-out-link", "--config"])
            .arg(format!("make={}", make.display()));
        in_mount_namespace(&mut cmd, vec![tmpfs(&state, "64m")]);
        cmd.output().unwrap()
    };
    let out = build(&filling);
    let err = String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {err}"));
    assert_eq!(out.status.code(), Some(3), "{json:#}\n{err}");
    assert_eq!(json["error"]["kind"], "system-failure", "{json:#}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    let says = "build step `buildworld` failed (exit status 2) while the file system holding";
    assert!(message.contains(says), "{json:#}");
    assert!(message.contains("is nearly full"), "{json:#}");
    // The same failure with room to spare is the build's.
    let out = build(&failing);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    assert_eq!(json["error"]["kind"], "build-failure", "{json:#}");
}

#[test]
fn a_dead_root_registration_that_cannot_be_removed_is_not_counted_as_removed() {
    // Regression: `store gc` listed a dead root as removed whatever
    // unlinking its registration did.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (store, state) = (d.join("store"), d.join("state"));
    let link = d.join("result");
    let mut build = fixture_build_into(fruix(), "local", &store, &state);
    build
        .args(FIXTURE_BUILD_FLAGS)
        .arg("--quiet")
        .arg("--out-link")
        .arg(&link);
    run_ok(&mut build);
    std::fs::remove_file(&link).unwrap();
    let auto = state.join("gcroots/auto");
    let registered = listing(&auto);
    assert_eq!(registered.len(), 1, "{registered:?}");
    let mut gc = fruix();
    gc.args(["store", "gc", "--json", "--older-than", "0s", "--store"])
        .arg(&store)
        .arg("--state-dir")
        .arg(&state);
    // `gcroots/auto` read-only, in the namespace gc runs in.
    let read_only = Mount {
        flags: libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
        source: None,
        ..bind(&auto, &auto)
    };
    in_mount_namespace(&mut gc, vec![bind(&auto, &auto), read_only]);
    let out = gc.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {err}"));
    assert_eq!(report["dead_roots"], serde_json::json!([]), "{report:#}");
    assert_eq!(listing(&auto), registered, "{err}");
    let says = format!(
        "the dead root's registration {} could not be removed (Read-only file system",
        registered[0].display()
    );
    assert!(err.contains(&says), "{err}");
}

/// The first directory below `dir` (depth first, sorted).
fn some_directory_below(dir: &Path) -> PathBuf {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_dir()))
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no directory in {}", dir.display()))
}

/// A directory of one file, `precious`, to bind-mount somewhere.
fn precious(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("precious"), name).unwrap();
    p
}

#[test]
fn gc_refuses_a_result_root_and_an_object_with_a_file_system_mounted_inside() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (store, state) = unrooted_build(d);
    let runs = std::fs::read_dir(state.join("native-builds")).unwrap();
    let roots: Vec<PathBuf> = runs
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none())
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    let in_root = some_directory_below(&roots[0].join("artifacts"));
    let object = world_object(&store);
    let in_object = some_directory_below(&object);
    let (a, b) = (precious(d, "a"), precious(d, "b"));
    let mut gc = fruix();
    gc.args(["store", "gc", "--json", "--older-than", "0s", "--store"])
        .arg(&store)
        .arg("--state-dir")
        .arg(&state);
    in_mount_namespace(&mut gc, vec![bind(&a, &in_root), bind(&b, &in_object)]);
    let out = gc.output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    // What is mounted is untouched: its file there, its mode as it was.
    for (mounted, name) in [(&a, "a"), (&b, "b")] {
        let kept = std::fs::read_to_string(mounted.join("precious"));
        assert_eq!(kept.ok().as_deref(), Some(name), "{report}\n{err}");
    }
    // Neither tree was touched, and the failure says why, naming the
    // mount point.
    assert!(roots[0].join("promotion.scm").is_file(), "{report}\n{err}");
    assert!(object.is_dir(), "{report}\n{err}");
    let says = |p: &Path| format!("a file system is mounted at {}", p.display());
    assert!(report.contains(&says(&in_object)), "{report}\n{err}");
    assert!(err.contains(&says(&in_root)), "{report}\n{err}");
    assert_eq!(out.status.code(), Some(3), "{report}\n{err}");
}

/// Regression: a store whose file system filled up while its registry was
/// written said SQLite's "disk I/O error"; the file system is asked, and
/// it says no space is left.
#[test]
fn a_registry_write_on_a_full_file_system_says_no_space_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let mut add = fruix();
    add.args(["source", "add", "--json", "--store"])
        .arg(&store)
        .arg(fixture_source());
    in_mount_namespace(&mut add, vec![tmpfs(&store, "64k")]);
    let out = add.output().unwrap();
    json_error(&out, 3, "No space left on device");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("disk I/O error"), "{said}");
}
