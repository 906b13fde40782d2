//! Signed objects: keys made by `fruix store generate-key`, signatures made
//! by `--sign-with` and `store sign`, kept in the registry, shown by `store
//! info`, and valid over the object's fingerprint.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fruix_promote::sign::{fingerprint, verify, PublicKey};
use serde_json::Value;

use crate::util::{
    fruix, generate_key, promote_command, promote_report, run, run_failing, run_json, run_ok,
    sample_root,
};

/// A key pair `name` in `dir`: (secret key file, public key text).
pub fn key(dir: &Path, name: &str) -> (PathBuf, String) {
    let (secret, public) = (
        dir.join(format!("{name}.sec")),
        dir.join(format!("{name}.pub")),
    );
    let printed = run_ok(&mut generate_key(name, &secret, &public));
    assert_eq!(printed, std::fs::read_to_string(&public).unwrap());
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    (secret, printed)
}

pub fn info(store: &Path, path: &str) -> Value {
    let out = run_ok(
        fruix()
            .args(["store", "info", "--json", "--store"])
            .arg(store)
            .arg(path),
    );
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

/// Whether `info`'s signatures hold one valid for its fingerprint by `public`.
pub fn signed_by(info: &Value, public: &str) -> bool {
    let refs: Vec<PathBuf> = serde_json::from_value(info["references"].clone()).unwrap();
    let print = fingerprint(
        Path::new(info["path"].as_str().unwrap()),
        info["tree_signature"].as_str(),
        info["size"].as_u64().unwrap(),
        &refs,
    );
    let trusted = [PublicKey::parse(public).unwrap()];
    info["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| verify(&print, s.as_str().unwrap(), &trusted))
}

#[test]
fn promote_signs_with_its_key_and_store_sign_adds_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = key(dir.path(), "builder-1");
    let (_, other) = key(dir.path(), "builder-2");
    // Keys are never overwritten.
    let again = run(&mut generate_key("x", &secret, &dir.path().join("x.pub")));
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    let store = dir.path().join("store");
    let root = sample_root(dir.path(), "root");
    let report = promote_report(&store, &root, &["--sign-with", secret.to_str().unwrap()]);
    let bundle = info(&store, report["result_store"].as_str().unwrap());
    assert!(signed_by(&bundle, &public), "{bundle:#}");
    assert!(!signed_by(&bundle, &other), "only by builder-1");
    for artifact in report["artifacts"].as_object().unwrap().values() {
        let a = info(&store, artifact["store_path"].as_str().unwrap());
        assert!(signed_by(&a, &public), "{a:#}");
        assert_eq!(a["signatures"].as_array().unwrap().len(), 1);
    }
    // `store sign` adds another signer's signature (once, however often).
    let world = report["artifacts"]["world"]["store_path"].as_str().unwrap();
    let other_secret = dir.path().join("builder-2.sec");
    for _ in 0..2 {
        run_ok(
            fruix()
                .args(["store", "sign", "--secret-key"])
                .arg(&other_secret)
                .arg("--store")
                .arg(&store)
                .arg(world),
        );
    }
    let w = info(&store, world);
    assert_eq!(w["signatures"].as_array().unwrap().len(), 2, "{w:#}");
    assert!(signed_by(&w, &other));
    // Regression: a path refused after a valid one left the valid one
    // signed, though the command failed. Every path is checked first.
    let kernel = report["artifacts"]["kernel"]["store_path"]
        .as_str()
        .unwrap();
    let out = run(fruix()
        .args(["store", "sign", "--secret-key"])
        .arg(&other_secret)
        .arg("--store")
        .arg(&store)
        .args([kernel, "/etc"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let k = info(&store, kernel);
    assert!(!signed_by(&k, &other), "{k:#}");
    // FRUIX_SIGNING_KEY names the key for every promotion.
    let elsewhere = dir.path().join("store-2");
    let report = run_json(
        promote_command(&elsewhere, &root, &["--json", "--no-out-link"])
            .env("FRUIX_SIGNING_KEY", &secret),
    );
    let bundle = info(&elsewhere, report["result_store"].as_str().unwrap());
    assert!(signed_by(&bundle, &public), "{bundle:#}");
}

#[test]
fn an_unreadable_key_is_refused_before_anything_is_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sec");
    std::fs::write(&bad, "builder-1:not base64!\n").unwrap();
    let store = dir.path().join("store");
    let out = run(&mut promote_command(
        &store,
        &sample_root(dir.path(), "root"),
        &["--no-out-link", "--sign-with", bad.to_str().unwrap()],
    ));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not base64"),
        "{out:?}"
    );
    assert!(!store.exists(), "nothing was promoted");
}

/// The machines file of one machine, `builder-1`, served by `sshd`, whose
/// fruix signs with `secret` and is known to the host by `public`.
fn signing_machine(sshd: &crate::sshd::Sshd, dir: &Path, secret: &Path, public: &str) -> PathBuf {
    sshd.machines_file(
        dir,
        &format!(
            " (helper \"{}\")\n    (signing-key \"{}\") (guest-signing-key \"{}\")",
            env!("CARGO_BIN_EXE_fruix"),
            public.trim(),
            secret.display()
        ),
    )
}

/// `fruix build --executor guest-self-hosted` of the miniature tree on
/// machine `builder-1` of `machines`, into `dir/store`.
fn build_on_signing_machine(
    sshd: &crate::sshd::Sshd,
    machines: &Path,
    dir: &Path,
) -> std::process::Output {
    crate::util::require_tool("bmake", "bmake");
    let mut cmd = crate::util::fixture_build(fruix(), "guest-self-hosted", dir, "root");
    cmd.args(["--json", "--no-out-link", "--machines"])
        .arg(machines)
        .args(["--machine", "builder-1", "--config"])
        .arg(format!("guest_store={}", sshd.guest_store().display()));
    run(&mut cmd)
}

#[test]
fn a_result_signed_in_the_guest_is_promoted_with_the_machine_key_and_refused_with_another() {
    let sshd = crate::sshd::Sshd::trusted();
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = key(dir.path(), "builder-1");
    let (_, other) = key(dir.path(), "builder-1-old");
    // The machine's key: every promoted object carries its signature, made
    // in the guest over the fingerprint the host's registry has.
    let machines = signing_machine(&sshd, dir.path(), &secret, &public);
    let out = build_on_signing_machine(&sshd, &machines, dir.path());
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let store = dir.path().join("store");
    let bundle = info(&store, report["result_store"].as_str().unwrap());
    assert!(signed_by(&bundle, &public), "{bundle:#}");
    for artifact in report["artifacts"].as_object().unwrap().values() {
        let a = info(&store, artifact["store_path"].as_str().unwrap());
        assert!(signed_by(&a, &public), "{a:#}");
    }
    // The machines file names another key: nothing is promoted.
    let again = tempfile::tempdir().unwrap();
    let machines = signing_machine(&sshd, again.path(), &secret, &other);
    let out = build_on_signing_machine(&sshd, &machines, again.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("no valid signature"), "{stderr}");
    assert!(stderr.contains("nothing was promoted"), "{stderr}");
    assert!(crate::util::nothing_promoted(&again.path().join("store")));
}

/// Regression: a key file, or a trusted keys file, reached through a
/// symlink was refused as an untrusted metadata file is ("is a symlink"),
/// though the user named it: a key mounted from a Kubernetes secret
/// (`KEY -> ..data/KEY`) could not be used. Files the user names are read
/// through the symlinks of their path; what they reach must still be a
/// regular file.
#[test]
fn keys_mounted_as_symlinks_sign_and_are_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = key(dir.path(), "builder-1");
    // As a Kubernetes secret volume lays its files out.
    let mount = dir.path().join("mount");
    std::fs::create_dir_all(mount.join("..data")).unwrap();
    std::fs::rename(&secret, mount.join("..data/builder-1.sec")).unwrap();
    std::fs::write(mount.join("..data/trusted-keys"), &public).unwrap();
    let (linked_secret, linked_trust) = (mount.join("builder-1.sec"), mount.join("trusted-keys"));
    std::os::unix::fs::symlink("..data/builder-1.sec", &linked_secret).unwrap();
    std::os::unix::fs::symlink("..data/trusted-keys", &linked_trust).unwrap();
    let store = dir.path().join("store");
    let mut promote = promote_command(
        &store,
        &sample_root(dir.path(), "root"),
        &[
            "--json",
            "--no-out-link",
            "--sign-with",
            linked_secret.to_str().unwrap(),
        ],
    );
    let out = run(&mut promote);
    assert!(out.status.success(), "{out:?}");
    // The key is 0600: the link's own mode (0777) is no reason to warn.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("may be read by other users"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let world = report["artifacts"]["world"]["store_path"].as_str().unwrap();
    assert!(signed_by(&info(&store, world), &public));
    let archive = dir.path().join("archive");
    run_ok(&mut crate::util::store_export(&store, &archive, &[], world));
    // Into a store at the same path, which only a trusted key lets in.
    std::fs::rename(&store, dir.path().join("original")).unwrap();
    run_ok(
        crate::util::store_import(&store, &archive, &[])
            .arg("--trusted-keys-file")
            .arg(&linked_trust),
    );
    assert!(signed_by(&info(&store, world), &public));
    // What a link reaches is still held to a regular file: a FIFO is
    // refused at once, never waited on.
    let fifo = dir.path().join("fifo");
    fruix_core::testing::mkfifo(&fifo).unwrap();
    let to_fifo = dir.path().join("to-fifo");
    std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
    run_failing(
        crate::util::store_import(&store, &archive, &[])
            .arg("--trusted-keys-file")
            .arg(&to_fifo),
        2,
        &["is a FIFO, not a regular file"],
    );
}

/// Regression: `store generate-key` whose standard output could not be
/// written (`> /dev/full`) exited 3 but kept both key files, though the
/// public key was never printed, and the same command run again was
/// refused ("it already exists"). It fails (3) leaving neither file, with
/// or without `--json`; the same command then succeeds.
#[test]
fn generate_key_that_cannot_print_leaves_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = (dir.path().join("z1.sec"), dir.path().join("z1.pub"));
    for json in [false, true] {
        let mut cmd = generate_key("z1", &secret, &public);
        if json {
            cmd.arg("--json");
        }
        let full = std::fs::File::create("/dev/full").unwrap();
        let out = run(cmd.stdout(std::process::Stdio::from(full)));
        assert_eq!(out.status.code(), Some(3), "--json {json}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("No space left on device"),
            "{out:?}"
        );
        assert!(!secret.exists(), "--json {json}: the secret key stayed");
        assert!(!public.exists(), "--json {json}: the public key stayed");
    }
    let printed = run_ok(&mut generate_key("z1", &secret, &public));
    assert_eq!(printed, std::fs::read_to_string(&public).unwrap());
}
