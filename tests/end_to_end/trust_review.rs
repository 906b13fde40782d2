//! Regressions from a review of trust: a trusted keys file that others may
//! write (or that another user owns) was used silently, a key file or
//! trusted keys file that is a FIFO or a directory was called a "metadata
//! file", and a key name could hold a bidi mark or an invisible character.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::signing::{info, key, signed_by};
use crate::util::{
    failed_with, fruix, json_error, key_name_refused, promote_report, run, run_ok, sample_root,
    store_export, store_import,
};

/// A store at `dir/store` holding nothing, and an archive `dir/archive` of
/// a `world` artifact signed by the key whose public text is returned (its
/// store moved away, so that the archive imports into `dir/store`).
/// Returns the archive, the artifact's path and the public key.
fn signed_archive(dir: &Path) -> (PathBuf, String, String) {
    let (secret, public) = key(dir, "builder-1");
    let store = dir.join("store");
    let report = promote_report(
        &store,
        &sample_root(dir, "root"),
        &["--sign-with", secret.to_str().unwrap()],
    );
    let world = report["artifacts"]["world"]["store_path"]
        .as_str()
        .unwrap()
        .to_string();
    let archive = dir.join("archive");
    run_ok(&mut store_export(&store, &archive, &[], &world));
    std::fs::rename(&store, dir.join("original")).unwrap();
    (archive, world, public)
}

/// Writes `text` to `path` with mode `mode` (whatever the umask).
fn write_with_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every command that reads a trusted keys file, given `trusted` by its
/// flag: an import, a copy from another store (refused before it
/// connects) and a serve (before it reads a request).
fn commands_trusting(dir: &Path, archive: &Path, trusted: &Path) -> Vec<std::process::Command> {
    let store = dir.join("store");
    let flag = ["--trusted-keys-file", trusted.to_str().unwrap()];
    let mut copy = fruix();
    copy.args(["store", "copy", "--from", "ssh://nobody@127.0.0.1:1"])
        .args(flag)
        .arg("--store")
        .arg(&store)
        .arg("/frx/store/nothing");
    let mut serve = fruix();
    serve
        .args(["store", "serve"])
        .args(flag)
        .arg("--store")
        .arg(&store)
        .stdin(std::process::Stdio::null());
    vec![store_import(&store, archive, &flag), copy, serve]
}

/// Each command of [`commands_trusting`] `trusted` refuses it (exit 2),
/// saying it cannot use it and `why`.
fn each_refuses(dir: &Path, archive: &Path, trusted: &Path, why: &[&str]) {
    let cannot = format!("cannot use the trusted keys file {}", trusted.display());
    let says: Vec<&str> = [cannot.as_str()]
        .into_iter()
        .chain(why.iter().copied())
        .collect();
    for mut command in commands_trusting(dir, archive, trusted) {
        failed_with(&format!("{command:?}"), &run(&mut command), 2, &says);
    }
}

/// Regression: a trusted keys file that its group or others may write was
/// used silently (any local user who could write it got objects into the
/// store). It is refused (exit 2) as OpenSSH's StrictModes refuses an
/// `authorized_keys`, saying how to fix it, under `--json` too, and
/// whether named by the flag or the environment.
#[test]
fn a_trusted_keys_file_others_may_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, world, public) = signed_archive(dir.path());
    let trusted = dir.path().join("trusted-keys");
    let store = dir.path().join("store");
    for (mode, writers) in [
        (0o666, "by its group and by others (mode 0666)"),
        (0o620, "by its group (mode 0620)"),
        (0o602, "by others (mode 0602)"),
    ] {
        write_with_mode(&trusted, &public, mode);
        let fix = format!("chmod go-w {}", trusted.display());
        each_refuses(dir.path(), &archive, &trusted, &[writers, &fix]);
        let mut from_env = store_import(&store, &archive, &["--json"]);
        from_env.env("FRUIX_TRUSTED_KEYS_FILE", &trusted);
        json_error(&run(&mut from_env), 2, "chmod go-w");
        assert!(!store.join(world.rsplit('/').next().unwrap()).exists());
    }
    // Writable by its owner alone, it is used.
    write_with_mode(&trusted, &public, 0o644);
    run_ok(&mut store_import(
        &store,
        &archive,
        &["--trusted-keys-file", trusted.to_str().unwrap()],
    ));
    assert!(signed_by(&info(&store, &world), &public));
}

/// Regression: a trusted keys file owned by another user (neither the one
/// running fruix nor root) was used. Run as root, as the other tests of
/// another user's files are: root owns what it writes.
#[test]
fn a_trusted_keys_file_another_user_owns_is_refused() {
    let dir = crate::util::dir_for_root_and_others("trusts another user's keys file");
    let (archive, _, public) = signed_archive(dir.path());
    let trusted = dir.path().join("trusted-keys");
    write_with_mode(&trusted, &public, 0o644);
    std::os::unix::fs::chown(&trusted, Some(12345), None).unwrap();
    let owner = "owned by user 12345, neither this user (0) nor root";
    each_refuses(dir.path(), &archive, &trusted, &[owner]);
    // Root's own is used.
    std::os::unix::fs::chown(&trusted, Some(0), None).unwrap();
    run_ok(&mut store_import(
        &dir.path().join("store"),
        &archive,
        &["--trusted-keys-file", trusted.to_str().unwrap()],
    ));
}

/// Regression: a trusted keys file in a directory another user may write
/// (or owns) was used, though that user could put another file in its
/// place between fruix's check of the file and its read. Such a directory
/// on the file's resolved path is refused (exit 2) as the file itself
/// would be; a sticky one (`/tmp`'s `1777`) is safe, and a symlink in an
/// unsafe directory to a file in a safe one is judged by where it leads.
#[test]
fn a_trusted_keys_file_in_a_directory_others_may_write_is_refused() {
    let dir =
        crate::util::dir_for_root_and_others("trusts a keys file in another user's directory");
    let (archive, world, public) = signed_archive(dir.path());
    let store = dir.path().join("store");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let trusted = keys.join("trusted-keys");
    write_with_mode(&trusted, &public, 0o644);
    let mode =
        |mode: u32| std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(mode)).unwrap();
    let named = format!("its directory {}", keys.display());
    for writable in [0o777, 0o775, 0o757] {
        mode(writable);
        let fix = format!("chmod go-w {}", keys.display());
        let shown = format!("(mode {writable:04o})");
        each_refuses(dir.path(), &archive, &trusted, &[&named, &shown, &fix]);
    }
    mode(0o755);
    std::os::unix::fs::chown(&keys, Some(12345), None).unwrap();
    let owner = "is owned by user 12345, neither this user (0) nor root";
    each_refuses(dir.path(), &archive, &trusted, &[&named, owner]);
    std::os::unix::fs::chown(&keys, Some(0), None).unwrap();
    assert!(!store.join(world.rsplit('/').next().unwrap()).exists());
    // Reached through a symlink in a directory anyone may write, the file
    // is judged by the directories it is in; a sticky one is safe.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&trusted, shared.join("link")).unwrap();
    mode(0o1777);
    run_ok(&mut store_import(
        &store,
        &archive,
        &["--trusted-keys-file", shared.join("link").to_str().unwrap()],
    ));
    assert!(signed_by(&info(&store, &world), &public));
}

/// Regression: a secret key file or a trusted keys file that was a FIFO or
/// a directory was refused saying "metadata files are regular files", and
/// the trusted keys file's refusals read differently (`cannot read the
/// trusted keys file PATH: it does not exist`, but `cannot read the trusted
/// keys file: PATH: is a FIFO`).
#[test]
fn key_files_that_are_not_regular_are_named_for_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    fruix_core::testing::mkfifo(&fifo).unwrap();
    let directory = dir.path().join("directory");
    std::fs::create_dir(&directory).unwrap();
    let store = dir.path().join("store");
    for (path, kind) in [(&fifo, "FIFO"), (&directory, "directory")] {
        let out = run(fruix()
            .args(["store", "sign", "--store"])
            .arg(&store)
            .arg("--secret-key")
            .arg(path)
            .arg("/frx/store/nothing"));
        let stderr = failed_with(
            "a secret key file that is no file",
            &out,
            2,
            &[&format!(
                "is a {kind}, not a regular file; give the path of a regular file as the secret key file"
            )],
        );
        assert!(!stderr.contains("metadata"), "{stderr}");
        let out = run(&mut store_import(
            &store,
            Path::new("/dev/null"),
            &["--trusted-keys-file", path.to_str().unwrap()],
        ));
        let stderr = failed_with(
            "a trusted keys file that is no file",
            &out,
            2,
            &[&format!(
                "cannot read the trusted keys file {}: it is a {kind}, not a regular file; give the path of a regular file as the trusted keys file",
                path.display()
            )],
        );
        assert!(!stderr.contains("metadata"), "{stderr}");
    }
    let missing = dir.path().join("missing");
    let out = run(&mut store_import(
        &store,
        Path::new("/dev/null"),
        &["--json", "--trusted-keys-file", missing.to_str().unwrap()],
    ));
    json_error(
        &out,
        2,
        &format!(
            "cannot read the trusted keys file {}: it does not exist",
            missing.display()
        ),
    );
}

/// Regression: a key name with a bidi mark (U+200E) or an invisible
/// character (U+200B, U+FEFF) was accepted: a refusal naming the key then
/// looked like one naming the key without it.
#[test]
fn a_key_name_with_a_bidi_mark_or_an_invisible_character_is_refused() {
    for name in ["k1\u{200e}", "k1\u{200b}", "k1\u{feff}", "k1\u{61c}"] {
        let stderr = key_name_refused(name, &["--name \"k1\\3", "format character"]);
        assert!(!stderr.contains(name), "{stderr}");
    }
}

/// Regression: an object signed by no key this store trusts was refused
/// only after its whole body had been read and written into the store's
/// staging (an untrusted peer could make a store read and write up to the
/// archive cap first). Refused at its header now: an archive cut off just
/// after it is refused as untrusted, not as ending in the middle.
#[test]
fn an_object_no_trusted_key_signed_is_refused_before_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, _, builder) = signed_archive(dir.path());
    let (_, other) = key(dir.path(), "someone-else");
    let bytes = std::fs::read(&archive).unwrap();
    let at = bytes
        .windows(b"\"signatures\"".len())
        .position(|w| w == b"\"signatures\"")
        .expect("the archive holds an object header");
    let header_end = at + bytes[at..].iter().position(|b| *b == b'\n').unwrap() + 1;
    assert!(bytes.len() > header_end + 16, "the object has a body");
    let cut = dir.path().join("cut");
    std::fs::write(&cut, &bytes[..header_end + 16]).unwrap();
    let store = dir.path().join("store");
    let out = run(&mut store_import(
        &store,
        &cut,
        &["--json", "--trusted-key", &other],
    ));
    json_error(&out, 4, "signed only by keys this store does not trust");
    // Trusting its signer, the same cut archive is read on, and found to
    // end in the middle of the object.
    let out = run(&mut store_import(
        &store,
        &cut,
        &["--json", "--trusted-key", &builder],
    ));
    json_error(&out, 4, "in the middle");
}
