//! Regression of the matrix review: one Ctrl-C (or a CI's SIGTERM) to the
//! process group of a `timeout` wrapping fruix reached fruix twice, once
//! directly and once as the copy `timeout` passes on, and the copy was
//! taken for a second Ctrl-C: fruix exited at once, "cancelled again",
//! leaving its work directory (a matrix run: no report.json). The copy a
//! parent forwards is one cancellation now, cleaned up as the first is.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use crate::util::*;

#[test]
fn a_ctrl_c_that_timeout_passes_on_too_is_one_cancellation() {
    let timeout = require_tool("timeout", "coreutils");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let make = crate::build_leftover_review::held_make(d);
    let state = d.join("state");
    let mut build = fixture_build_into(fruix(), "local", &d.join("store"), &state);
    build
        .args(FIXTURE_BUILD_FLAGS)
        .args(["--no-out-link", "--json", "--config"])
        .arg(format!("make={}", make.display()));
    let mut cmd = run_through(timeout, &["--foreground", "600"], &build);
    // SAFETY: setsid(2) only, between fork and exec: `timeout` and fruix
    // get a process group of their own, as a terminal's foreground job.
    unsafe {
        cmd.pre_exec(|| match libc::setsid() {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    let mut child = spawn_piped(&mut cmd);
    fruix_core::testing::wait_until("the build runs its first make step", || {
        assert!(child.try_wait().unwrap().is_none(), "the build ended");
        d.join("started").exists()
    });
    // The whole group, as a terminal's Ctrl-C: fruix gets it, and again
    // from `timeout`.
    // SAFETY: kill(2) of the process group this test started.
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    let out = wait_with_deadline(child, Duration::from_secs(120), "the build");
    let err = stderr_of_exit(&out, 130);
    assert!(!err.contains("cancelled again"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["kind"], "cancelled", "{json:#}");
    // Cleaned up: the build's work directory went (its result root stays,
    // unfinished, as a cancelled build's does).
    let works: Vec<_> = std::fs::read_dir(state.join("native-builds"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "work"))
        .collect();
    assert_eq!(works, Vec::<std::path::PathBuf>::new(), "{err}");
}
