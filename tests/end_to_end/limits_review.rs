//! Regressions of the review of fruix under resource limits: with few
//! threads allowed (`ulimit -u`, `RLIMIT_NPROC`, which counts threads),
//! `fruix build` hung for ever while tokio's runtime started (2 or 3), or
//! crashed (exit 101) where rayon's pool or the signal handling's thread
//! could not start (4 to 6). Each is a system failure now (exit 3), said
//! in JSON under `--json`, naming the limit. So is a write past the
//! limit on file sizes (`ulimit -f`), which `SIGXFSZ` ended (exit 153),
//! the registry's included (SQLite's "disk I/O error").

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
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
        limited(&mut cmd, libc::RLIMIT_NPROC, limit);
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

/// Runs `cmd` with `resource` limited to `limit` (soft and hard).
fn limited(cmd: &mut Command, resource: libc::__rlimit_resource_t, limit: u64) {
    // SAFETY: setrlimit(2) only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            match libc::setrlimit(resource, &lim) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
}

#[test]
fn an_export_past_the_file_size_limit_is_a_system_failure_leaving_nothing() {
    // Regression: SIGXFSZ killed every command writing past `ulimit -f`
    // (exit 153, no JSON), and an export left its temporary.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (store, _) = crate::mount_review::unrooted_build(d);
    let world = crate::mount_review::world_object(&store);
    let export = |out: &Path| {
        let mut cmd = fruix();
        cmd.args(["store", "export", "--json", "--store"])
            .arg(&store)
            .arg("-o")
            .arg(out)
            .arg(&world);
        cmd
    };
    let whole = run_json(&mut export(&d.join("whole.nar")));
    let bytes = whole["bytes"].as_u64().unwrap();
    // The store's database files are read and written too: the limit
    // must leave them be.
    let db_bytes = std::fs::read_dir(store.join(".fruix"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("db."))
        .map(|e| e.metadata().unwrap().len())
        .max()
        .unwrap();
    assert!(db_bytes < bytes / 2, "{db_bytes} {bytes}");
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut cmd = export(&out_dir.join("x.nar"));
    limited(&mut cmd, libc::RLIMIT_FSIZE, bytes / 2);
    let message = system_failure_naming(&mut cmd, "(ulimit -f)");
    assert_eq!(listing(&out_dir), Vec::<PathBuf>::new(), "{message}");
}

/// Regression: a registry that could not be written past `ulimit -f` (its
/// shared-memory file resized to 32 KiB, its log grown) was "disk I/O
/// error; ... is it full, or failing?", though SQLite saw `EFBIG`. The
/// system's error it saw is said now, naming the limit; nothing is
/// published, and the store verifies.
#[test]
fn a_registry_past_the_file_size_limit_names_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let first = sample_root_of(dir.path(), "first", "local");
    run_ok(&mut promote_command(&store, &first, &["--no-out-link"]));
    let before = object_names(&store);
    let second = sample_root_of(dir.path(), "second", "guest-self-hosted");
    let mut cmd = promote_command(&store, &second, &["--no-out-link", "--json"]);
    limited(&mut cmd, libc::RLIMIT_FSIZE, 8 * 1024);
    let message = system_failure_naming(&mut cmd, "(ulimit -f)");
    assert!(message.contains("db.sqlite"), "{message}");
    assert_eq!(object_names(&store), before);
    verify_store(&store);
}

/// Runs `cmd` (under `--json`), which must fail as a system failure (3),
/// said in JSON, its message naming `limit`; returns the message.
fn system_failure_naming(cmd: &mut Command, limit: &str) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {err}"));
    assert_eq!(json["error"]["kind"], "system-failure", "{json:#}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(limit), "{json:#}");
    message.to_owned()
}
