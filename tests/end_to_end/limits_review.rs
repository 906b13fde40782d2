//! Regressions of the review of fruix under resource limits: with few
//! threads allowed (`ulimit -u`, `RLIMIT_NPROC`, which counts threads),
//! `fruix build` hung for ever while tokio's runtime started (2 or 3), or
//! crashed (exit 101) where rayon's pool or the signal handling's thread
//! could not start (4 to 6). Each is a system failure now (exit 3), said
//! in JSON under `--json`, naming the limit.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use crate::util::*;

#[test]
fn a_build_with_too_few_threads_allowed_is_a_system_failure_naming_the_limit() {
    let dir = dir_for_root_and_others("runs fruix as nobody");
    let work = dir.path().join("w");
    std::fs::create_dir(&work).unwrap();
    rustix::fs::chown(
        &work,
        Some(rustix::process::Uid::from_raw(NOBODY)),
        Some(rustix::process::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    for limit in [2, 3, 4, 5] {
        let mut cmd = as_nobody(&work);
        cmd.args([
            "build",
            "--json",
            "--no-out-link",
            "--executor",
            "local",
            "--source",
        ])
        .arg(fixture_source())
        .arg("--store")
        .arg(work.join(format!("store{limit}")))
        .arg("--state-dir")
        .arg(work.join(format!("state{limit}")))
        .args(FIXTURE_BUILD_FLAGS);
        // SAFETY: setrlimit(2) only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                match libc::setrlimit(libc::RLIMIT_NPROC, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        let child = spawn_piped(&mut cmd);
        let what = format!("a build allowed {limit} threads");
        let out = wait_with_deadline(child, Duration::from_secs(60), &what);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{what}: no JSON ({e}): {err}"));
        assert_eq!(json["error"]["kind"], "system-failure", "{what}: {json:#}");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("(ulimit -u)"), "{what}: {json:#}");
    }
}
