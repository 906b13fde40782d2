//! Regressions of a review of `--json` failures: an SSH identity that cannot
//! be used is the caller's configuration (exit 2, never retried by a
//! matrix), a build from a source object whose directory is gone is the
//! store's inconsistency (exit 4, as `store verify` says), and a second
//! Ctrl-C keeps the cancelled build's `result_root` in its JSON error.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::matrix::{describe, Matrix};
use crate::sshd::Sshd;
use crate::util::{
    fixture_source, fruix, run, run_ok, run_with_deadline, source_add, wait_until,
    wait_with_deadline, FIXTURE_BUILD_FLAGS,
};

/// A name with a control character, as a hostile or careless one may be:
/// messages must show it escaped.
const FORGED: &str = "key\nFORGED";

/// The identity files that cannot be used, each with what it is: one that
/// is not there, a directory, and a file that is no private key (all named
/// with [`FORGED`]).
fn unusable_identities(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let missing = dir.join(format!("missing-{FORGED}"));
    let directory = dir.join(format!("directory-{FORGED}"));
    std::fs::create_dir(&directory).unwrap();
    let junk = dir.join(format!("junk-{FORGED}"));
    std::fs::write(&junk, "not a key\n").unwrap();
    vec![
        ("a missing identity", missing),
        ("a directory as the identity", directory),
        ("a file that is no key as the identity", junk),
    ]
}

/// Checks that `out` is the JSON usage error (exit 2) of an identity that
/// cannot be used, naming `identity` escaped and where it comes from.
fn refused_as_usage(what: &str, out: &Output, identity: &Path) {
    assert_eq!(out.status.code(), Some(2), "{what}: {}", describe(out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: no JSON error ({e}): {}", describe(out)));
    let error = &json["error"];
    assert_eq!(error["kind"], "usage", "{what}: {json:#}");
    let message = error["message"].as_str().unwrap();
    let name = identity.file_name().unwrap().to_str().unwrap();
    assert!(
        message.contains(&name.replace('\n', "\\n")) && !message.contains(name),
        "{what}: the identity is named, escaped: {message}"
    );
    assert!(message.contains("--identity"), "{what}: {message}");
    assert!(message.contains("`private-key`"), "{what}: {message}");
}

/// Regression: `store copy --identity` of a file that is missing, a
/// directory, or no key failed as a system failure (exit 3), where every
/// other key file the caller names is a usage error (exit 2).
#[test]
fn store_copy_with_an_unusable_identity_is_a_usage_error() {
    let sshd = Sshd::trusted();
    let dir = tempfile::tempdir().unwrap();
    let object = format!("{}-fruix-world", "0".repeat(40));
    for (what, identity) in unusable_identities(dir.path()) {
        let mut copy = fruix();
        copy.args(["store", "copy", "--json", "--identity"])
            .arg(&identity)
            .arg("--known-hosts")
            .arg(sshd.known_hosts())
            .arg("--from")
            .arg(format!("ssh://{}", sshd.guest()))
            .arg("--no-check-sigs")
            .arg("--store")
            .arg(dir.path().join("store"))
            .arg(&object);
        let out = run_with_deadline(&mut copy, Duration::from_secs(60));
        refused_as_usage(what, &out, &identity);
    }
}

/// The arguments of a `host-initiated` build of the miniature tree in the
/// guest of `sshd`, into `dir`, authenticating with `identity`.
fn guest_build_args(sshd: &Sshd, dir: &Path, identity: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["build", "--json", "--executor", "host-initiated"]
        .map(OsString::from)
        .into();
    args.extend(["--source".into(), fixture_source().into()]);
    args.extend(sshd.guest_options());
    args.extend(["--identity".into(), identity.into()]);
    args.extend(["--no-promote".into(), "--store".into()]);
    args.push(dir.join("store").into());
    args.push("--state-dir".into());
    args.push(dir.join("state").into());
    args.extend(FIXTURE_BUILD_FLAGS.map(OsString::from));
    args
}

/// Regression: `build --identity` of a key file that cannot be used
/// failed as a system failure (exit 3).
#[test]
fn a_guest_build_with_an_unusable_identity_is_a_usage_error() {
    let sshd = Sshd::trusted();
    let dir = tempfile::tempdir().unwrap();
    for (what, identity) in unusable_identities(dir.path()) {
        let mut build = fruix();
        build.args(guest_build_args(&sshd, dir.path(), &identity));
        let out = run_with_deadline(&mut build, Duration::from_secs(120));
        refused_as_usage(what, &out, &identity);
    }
}

/// Regression: a machines file whose `private-key` was misspelt made each
/// attempt of a matrix cell fail as a system failure: the cell was
/// retried, and its machine set aside. It is the configuration's mistake:
/// one attempt, no machine set aside. (A missing key is now refused before
/// any cell runs, see matrix_plan_review; a file that is no key is found
/// only when it is decoded, by the attempt.)
#[test]
fn a_misspelt_private_key_is_not_retried_nor_sets_the_machine_aside() {
    let sshd = Sshd::start();
    let m = Matrix::new(
        "  (machines-file \"machines.scm\")\n  (axes (executor \"host-initiated\"))\n  (retries 1)",
    );
    let machines = sshd.machines_file(m.dir.path(), "");
    let key = sshd.identity().display().to_string();
    let text = std::fs::read_to_string(&machines).unwrap();
    assert!(text.contains(&key), "{text}");
    std::fs::write(format!("{key}-misspelt"), "not a key\n").unwrap();
    std::fs::write(&machines, text.replace(&key, &format!("{key}-misspelt"))).unwrap();
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    let report = m.report();
    let cell = &report["cells"][0];
    let attempts = cell["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "not retried: {report:#}");
    assert_ne!(cell["status"], "system-failure", "{report:#}");
    assert!(
        cell["error"]
            .as_str()
            .unwrap()
            .contains(&format!("cannot use identity {key}-misspelt")),
        "{report:#}"
    );
    assert_eq!(
        report["machines_set_aside"],
        serde_json::json!([]),
        "{report:#}"
    );
}

/// Regression: `build --source` of a registered source object whose
/// directory is gone said the source was missing (exit 2), where `store
/// info`, `export` and `copy` of it say the store is inconsistent and how
/// to repair it (exit 4), as `store verify` reports it.
#[test]
fn a_build_from_a_source_object_whose_directory_is_gone_says_the_store_is_inconsistent() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let added = run_ok(source_add(&store, &["--quiet"]).arg("--json"));
    let added: serde_json::Value = serde_json::from_str(&added).unwrap();
    let object = PathBuf::from(added["store_path"].as_str().unwrap());
    assert!(object.is_dir(), "{added:#}");
    fruix_core::remove::remove_tree(&object).unwrap();
    let mut build = fruix();
    build
        .args(["build", "--json", "--executor", "local", "--source"])
        .arg(&object)
        .arg("--store")
        .arg(&store)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--no-out-link")
        .args(FIXTURE_BUILD_FLAGS);
    let out = run_with_deadline(&mut build, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["kind"], "promotion-failure", "{json:#}");
    assert_eq!(json["error"]["exit_status"], 4, "{json:#}");
    // What the user is told: the store's state, and the repair.
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("store object is inconsistent: registered, but its directory is gone")
            && message.contains("fruix store verify --repair"),
        "{json:#}"
    );
    // `store info` says the same of it.
    let info = run(fruix()
        .args(["store", "info", "--json", "--store"])
        .arg(&store)
        .arg(&object));
    assert_eq!(info.status.code(), Some(4), "{}", describe(&info));
}

/// Regression: the check above opened the store for every refused source,
/// a misspelt directory anywhere included, and so waited while another
/// command held the store's lock (a repair, a sweep), writing the store's
/// own files on the way. Only a source missing where an object of the
/// store would be is looked up: a misspelt one is refused at once (exit
/// 2), the store's lock held meanwhile.
#[test]
fn a_misspelt_source_is_refused_without_waiting_for_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    run_ok(&mut source_add(&store, &["--quiet"]));
    let held = dir.path().join("held");
    // Killed and reaped however the test ends.
    struct Holder(std::process::Child);
    impl Drop for Holder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = Holder(
        std::process::Command::new(crate::util::require_tool("flock", "util-linux"))
            .arg("-x")
            .arg(store.join(".lock"))
            .arg("-c")
            .arg(format!("touch '{}' && exec sleep 600", held.display()))
            .spawn()
            .unwrap(),
    );
    wait_until("the store's lock is held", || held.exists());
    let mut build = fruix();
    build
        .args(["build", "--json", "--executor", "local", "--source"])
        .arg(dir.path().join("misspelt"))
        .arg("--store")
        .arg(&store)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--no-out-link");
    let out = run_with_deadline(&mut build, Duration::from_secs(120));
    drop(holder);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("misspelt"), "{stderr}");
    assert!(!stderr.contains("waiting for"), "{stderr}");
}

/// Regression: a second Ctrl-C during a build's cleanup, under `--json`,
/// named the result root it left only in the error's message: the error
/// object had no `result_root`, which the first Ctrl-C's has.
#[test]
fn a_second_ctrl_c_keeps_the_result_root_in_the_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cmd = crate::executors_external::slow_cleanup_build(d);
    cmd.arg("--json");
    let child = crate::util::spawn_piped(&mut cmd);
    let interrupt = |pid: u32| {
        // SAFETY: kill(2) on a process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
    };
    wait_until("the build runs", || d.join("building").exists());
    interrupt(child.id());
    wait_until("the cleanup runs", || d.join("cleaning").exists());
    interrupt(child.id());
    let out = wait_with_deadline(child, Duration::from_secs(60), "the build");
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON error ({e}): {}", describe(&out)));
    let error = &json["error"];
    assert_eq!(error["kind"], "cancelled", "{json:#}");
    let root = d.canonicalize().unwrap().join("root");
    assert_eq!(error["result_root"], root.to_str().unwrap(), "{json:#}");
    // `logs` is there exactly when the root has its logs.
    let logs = root.join("logs");
    let expected = match logs.is_dir() {
        true => serde_json::json!(logs.to_str().unwrap()),
        false => serde_json::Value::Null,
    };
    assert_eq!(error["logs"], expected, "{json:#}");
}
