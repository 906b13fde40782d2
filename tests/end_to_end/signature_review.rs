//! Regressions from a review of signatures: a store signed objects that no
//! import accepts (a key name too long for an import's cap on a signature,
//! more signatures on one object than its cap), an import recorded one
//! signature in many spellings, a store at a path that is not UTF-8 passed
//! for another, and smaller faults of `store sign`, `generate-key`, the
//! trusted-keys file and `FRUIX_SIGNING_KEY`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::signing::info;
use crate::util::{
    failed_with, fruix, generate_key, promote_command, promote_report, run, run_failing, run_json,
    run_ok, run_with_deadline, sample_root, store_export, store_import,
};
use fruix_core::testing::edit_header;
use fruix_promote::sign::SecretKey;

/// The longest key name: a signature, `NAME:` and 88 base64 characters,
/// fits the import's 1024-byte cap on one.
const LONGEST_KEY_NAME: usize = 1024 - 1 - 88;

/// The most signatures an object carries (an import refuses more).
const MOST_SIGNATURES: usize = 64;

/// Promotes a sample result root `dir/root` into `store`; returns the
/// bundle's path and the `world` artifact's.
fn promoted(dir: &Path, root: &str, store: &Path) -> (String, String) {
    let report = promote_report(store, &sample_root(dir, root), &[]);
    let world = report["artifacts"]["world"]["store_path"].as_str().unwrap();
    (
        report["result_store"].as_str().unwrap().to_string(),
        world.to_string(),
    )
}

/// A temporary directory whose `store` holds the sample result root
/// `root`'s objects. Returns the directory, the store, and the bundle's
/// path and the `world` artifact's.
fn promoted_lab() -> (tempfile::TempDir, PathBuf, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (bundle, world) = promoted(dir.path(), "root", &store);
    (dir, store, bundle, world)
}

/// Writes a new key `name` to `dir/name.sec`; returns that file and the
/// public key's text.
fn key_file(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = SecretKey::generate(name).unwrap();
    let path = dir.join(format!("{name}.sec"));
    std::fs::write(&path, key.to_text()).unwrap();
    (path, key.public_text().trim_end().to_string())
}

/// `fruix store sign --secret-key KEY --store STORE PATHS...`.
fn sign(store: &Path, key: &Path, paths: &[&str]) -> std::process::Command {
    let mut cmd = fruix();
    cmd.args(["store", "sign", "--secret-key"])
        .arg(key)
        .arg("--store")
        .arg(store)
        .args(paths);
    cmd
}

/// The signatures `store info` shows of `path`.
fn signatures(store: &Path, path: &str) -> Vec<String> {
    serde_json::from_value(info(store, path)["signatures"].clone()).unwrap()
}

/// Exports the closure of `path` from `dir/store` to `dir/NAME`, then moves
/// the store to `dir/NAME.store`, so that the archive imports into a new
/// store at `dir/store`. Returns the archive.
fn exported(dir: &Path, path: &str, name: &str) -> PathBuf {
    let store = dir.join("store");
    let archive = dir.join(name);
    run_ok(&mut store_export(&store, &archive, &["--recursive"], path));
    std::fs::rename(&store, dir.join(format!("{name}.store"))).unwrap();
    archive
}

#[test]
fn a_key_name_too_long_for_an_importable_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = (dir.path().join("x.sec"), dir.path().join("x.pub"));
    let generate = |name: &str| generate_key(name, &secret, &public);
    let long = "a".repeat(LONGEST_KEY_NAME + 1);
    run_failing(
        &mut generate(&long),
        2,
        &[
            &format!("{} bytes long", LONGEST_KEY_NAME + 1),
            &format!("cap of {LONGEST_KEY_NAME}"),
        ],
    );
    assert!(!secret.exists() && !public.exists());
    // The longest name makes signatures that export and import.
    let longest = "b".repeat(LONGEST_KEY_NAME);
    let printed = run_ok(&mut generate(&longest));
    assert_eq!(printed, std::fs::read_to_string(&public).unwrap());
    let store = dir.path().join("store");
    let (_, world) = promoted(dir.path(), "root", &store);
    run_ok(&mut sign(&store, &secret, &[&world]));
    let archive = exported(dir.path(), &world, "archive");
    run_ok(&mut store_import(
        &store,
        &archive,
        &["--trusted-key", printed.trim()],
    ));
    let signed = signatures(&store, &world);
    assert_eq!(signed.len(), 1, "{signed:?}");
    assert!(signed[0].starts_with(&format!("{longest}:")));
}

#[test]
fn an_empty_key_name_is_said_to_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    run_failing(
        fruix()
            .args(["store", "generate-key", "--name", "", "--secret-key"])
            .arg(dir.path().join("x.sec"))
            .arg("--public-key")
            .arg(dir.path().join("x.pub")),
        2,
        &["--name \"\": it is empty"],
    );
}

#[test]
fn no_object_carries_more_signatures_than_an_import_accepts() {
    let (dir, store, bundle, world) = promoted_lab();
    let keys: Vec<(PathBuf, String)> = (0..=MOST_SIGNATURES)
        .map(|i| key_file(dir.path(), &format!("k{i}")))
        .collect();
    for (secret, _) in &keys[..MOST_SIGNATURES] {
        run_ok(&mut sign(&store, secret, &[&world]));
    }
    assert_eq!(signatures(&store, &world).len(), MOST_SIGNATURES);
    // One more is refused, naming the cap; one already there is no more.
    let (last, _) = &keys[MOST_SIGNATURES];
    run_failing(
        &mut sign(&store, last, &[&world]),
        2,
        &[
            &format!("{MOST_SIGNATURES} signatures"),
            "no signature was added",
        ],
    );
    run_ok(&mut sign(&store, &keys[0].0, &[&world]));
    // All or nothing: the bundle, which had room, was not signed either.
    run_failing(&mut sign(&store, last, &[&bundle, &world]), 2, &["world"]);
    assert!(signatures(&store, &bundle).is_empty());
    // A promotion's --sign-with is held to the same cap; the promotion
    // itself stands, and the message says so (it said only that the
    // object was full, as if nothing had been done).
    let unsigned = |name: &str, flag: &str| {
        let flags = ["--no-out-link", "--sign-with", last.to_str().unwrap(), flag];
        run_with_deadline(
            &mut promote_command(&store, &sample_root(dir.path(), name), &flags),
            Duration::from_secs(60),
        )
    };
    let out = unsigned("again", "--quiet");
    failed_with(
        "an unsigned promotion",
        &out,
        2,
        &[
            &format!("the result was promoted as {bundle}, but not signed: "),
            &format!("{MOST_SIGNATURES} signatures"),
        ],
    );
    // What was promoted is printed still (it was not: the error alone).
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("result_store={bundle}\n")),
        "{stdout}"
    );
    // Under --json, the error object carries the promotion's report.
    let out = unsigned("again-json", "--json");
    assert_eq!(out.status.code(), Some(2));
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["error"]["kind"], "usage", "{said}");
    let report = &said["error"]["promoted"];
    assert_eq!(report["result_store"], bundle.as_str(), "{said}");
    assert_eq!(report["artifacts"]["world"]["store_path"], world.as_str());
    assert_eq!(signatures(&store, &world).len(), MOST_SIGNATURES);
    // What the store signed, another store imports, with every signature.
    let archive = exported(dir.path(), &world, "archive");
    let trusted = dir.path().join("trusted-keys");
    let lines: Vec<&str> = keys.iter().map(|(_, public)| public.as_str()).collect();
    std::fs::write(&trusted, lines.join("\n")).unwrap();
    let import = || {
        let flags = ["--trusted-keys-file", trusted.to_str().unwrap()];
        run_ok(&mut store_import(&store, &archive, &flags));
        signatures(&store, &world)
    };
    assert_eq!(import().len(), MOST_SIGNATURES);
    // A store that has the object already, signed by the last key, keeps
    // its signature and adds the archive's while there is room.
    std::fs::rename(&store, dir.path().join("imported")).unwrap();
    promoted(dir.path(), "root-2", &store);
    assert!(signatures(&store, &world).is_empty());
    run_ok(&mut sign(&store, last, &[&world]));
    let last_signature = signatures(&store, &world).remove(0);
    let kept = import();
    assert_eq!(kept.len(), MOST_SIGNATURES, "{kept:?}");
    assert!(kept.contains(&last_signature), "{kept:?}");
    assert!(last_signature.starts_with(&format!("k{MOST_SIGNATURES}:")));
}

#[test]
fn an_import_keeps_one_spelling_of_a_signature_and_no_other() {
    let (dir, store, _, world) = promoted_lab();
    let (secret, public) = key_file(dir.path(), "builder-1");
    let signed = run_json(sign(&store, &secret, &[&world]).arg("--json"));
    let signature = signed[0]["signature"].as_str().unwrap().to_string();
    // The sample's world references no object: it is the archive's only.
    assert_eq!(info(&store, &world)["references"], serde_json::json!([]));
    let archive = std::fs::read(exported(dir.path(), &world, "archive")).unwrap();
    let import = |what: &str, signatures: Vec<String>| {
        let edited = edit_header(&archive, "-fruix-native-world-", |h| {
            h["signatures"] = signatures.into();
        });
        let file = dir.path().join(what);
        std::fs::write(&file, edited).unwrap();
        if store.exists() {
            std::fs::rename(&store, dir.path().join(format!("{what}.store"))).unwrap();
        }
        run(&mut store_import(
            &store,
            &file,
            &["--trusted-key", &public],
        ))
    };
    let variants = vec![
        format!(" {signature}\n"),
        signature.clone(),
        format!("{signature}\u{85}"),
        signature.clone(),
    ];
    let out = import("variants", variants);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(signatures(&store, &world), std::slice::from_ref(&signature));
    // A signature with white space around it is no signature: alone, it
    // leaves the object unsigned.
    let out = import("spaced", vec![format!(" {signature}\n")]);
    crate::util::failed_with("spaced", &out, 4, &["archive refused", "NAME:BASE64"]);
}

#[test]
fn signing_one_path_twice_signs_it_once() {
    let (dir, store, _, world) = promoted_lab();
    let (secret, _) = key_file(dir.path(), "builder-1");
    let printed = run_ok(&mut sign(&store, &secret, &[&world, &world]));
    assert_eq!(printed.lines().count(), 1, "{printed}");
    let printed = run_json(sign(&store, &secret, &[&world, &world]).arg("--json"));
    assert_eq!(printed.as_array().unwrap().len(), 1, "{printed}");
}

/// An archive names its store's path: it moves only to a store at the
/// same path. One from the store at `s\u{fffd}` (which a lossy reading of
/// `s\xff` gives) is refused by the store at `s\xff`, which no command
/// opens (its path is not UTF-8: exit 2, nothing made), and by a store at
/// another path (exit 4); the store it came from takes it back, its
/// signature verified.
#[test]
fn an_archive_moves_only_between_stores_at_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join(OsStr::from_bytes(b"s\xff"));
    let replacement = dir.path().join("s\u{fffd}");
    let (_, world) = promoted(dir.path(), "root", &replacement);
    let (secret, public) = key_file(dir.path(), "builder-1");
    run_ok(&mut sign(&replacement, &secret, &[&world]));
    let archive = dir.path().join("archive");
    run_ok(&mut store_export(&replacement, &archive, &[], &world));
    std::fs::rename(&replacement, dir.path().join("original")).unwrap();
    let import = |store: &Path| store_import(store, &archive, &["--trusted-key", &public]);
    run_failing(&mut import(&odd), 2, &["s\\377", "is not UTF-8"]);
    assert!(!odd.exists(), "a refused import made {odd:?}");
    let other = dir.path().join("s");
    run_failing(
        &mut import(&other),
        4,
        &["archive refused", "not of this one"],
    );
    assert!(!other.exists(), "a refused import leaves no store it made");
    run_ok(&mut import(&replacement));
    assert!(Path::new(&world).is_dir());
}

#[test]
fn a_trusted_keys_file_line_may_end_in_a_comment() {
    let (dir, store, _, world) = promoted_lab();
    let (secret, public) = key_file(dir.path(), "builder#1");
    run_ok(&mut sign(&store, &secret, &[&world]));
    let archive = exported(dir.path(), &world, "archive");
    let trusted = dir.path().join("trusted-keys");
    let import = |text: String| {
        std::fs::write(&trusted, text).unwrap();
        store_import(
            &store,
            &archive,
            &["--trusted-keys-file", trusted.to_str().unwrap()],
        )
    };
    run_failing(
        &mut import(format!("{public} and more\n")),
        2,
        &["trusted-keys:1:", "# comment"],
    );
    run_ok(&mut import(format!(
        "# builders\n\n  {public}\t# builder one, since 2026\n"
    )));
    assert_eq!(signatures(&store, &world).len(), 1);
}

#[test]
fn a_bad_key_from_the_environment_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sec");
    std::fs::write(&bad, "builder-1:not base64!\n").unwrap();
    let out = run(promote_command(
        &dir.path().join("store"),
        &sample_root(dir.path(), "root"),
        &["--no-out-link"],
    )
    .env("FRUIX_SIGNING_KEY", &bad));
    crate::util::failed_with(
        "FRUIX_SIGNING_KEY",
        &out,
        2,
        &["FRUIX_SIGNING_KEY", "not base64"],
    );
}

/// A secret key file other users may read was used without a word (the
/// README says to keep it 0600, as `generate-key` makes it): signing goes
/// on, with a warning naming the file, its mode and the fix.
#[test]
fn a_secret_key_others_may_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store, bundle, _) = promoted_lab();
    let (key, _) = key_file(dir.path(), "builder-1");
    let warns = |mode: u32| -> bool {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = run(&mut sign(&store, &key, &[&bundle]));
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        stderr.contains(&format!(
            "secret key {} may be read by other users (mode {mode:04o}); make it readable by its owner alone: chmod 600",
            key.display()
        ))
    };
    assert!(warns(0o644), "no warning for 0644");
    assert!(warns(0o640), "no warning for 0640");
    assert!(!warns(0o600), "a warning for 0600");
}
