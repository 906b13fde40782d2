//! Regressions from a review of signatures: a store signed objects that no
//! import accepts (a key name too long for an import's cap on a signature,
//! more signatures on one object than its cap), an import recorded one
//! signature in many spellings, a store at a path that is not UTF-8 passed
//! for another, and smaller faults of `store sign`, `generate-key`, the
//! trusted-keys file and `FRUIX_SIGNING_KEY`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::signing::info;
use crate::util::{
    fruix, promote_command, promote_report, run, run_failing, run_json, run_ok, sample_root,
    store_export, store_import,
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
    let generate = |name: &str| {
        let mut cmd = fruix();
        cmd.args(["store", "generate-key", "--name", name, "--secret-key"])
            .arg(&secret)
            .arg("--public-key")
            .arg(&public);
        cmd
    };
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
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (bundle, world) = promoted(dir.path(), "root", &store);
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
    // A promotion's --sign-with is held to the same cap.
    run_failing(
        &mut promote_command(
            &store,
            &sample_root(dir.path(), "again"),
            &["--no-out-link", "--sign-with", last.to_str().unwrap()],
        ),
        2,
        &[&format!("{MOST_SIGNATURES} signatures")],
    );
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
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (_, world) = promoted(dir.path(), "root", &store);
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
    let stderr = crate::util::failed_with("spaced", &out, 4, &["archive refused"]);
    assert!(stderr.contains("NAME:BASE64"), "{stderr}");
}

#[test]
fn signing_one_path_twice_signs_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (_, world) = promoted(dir.path(), "root", &store);
    let (secret, _) = key_file(dir.path(), "builder-1");
    let printed = run_ok(&mut sign(&store, &secret, &[&world, &world]));
    assert_eq!(printed.lines().count(), 1, "{printed}");
    let printed = run_json(sign(&store, &secret, &[&world, &world]).arg("--json"));
    assert_eq!(printed.as_array().unwrap().len(), 1, "{printed}");
}

#[test]
fn an_archive_moves_only_between_stores_at_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &[u8]| dir.path().join(OsStr::from_bytes(name));
    let (odd, other) = (at(b"s\xfe"), at(b"s\xff"));
    // A signed object of a store at `s\xfe`, exported.
    let report = run_json(&mut promote_command(
        &odd,
        &sample_root(dir.path(), "root"),
        &["--json", "--no-out-link"],
    ));
    let world = Path::new(report["artifacts"]["world"]["store_path"].as_str().unwrap());
    let world = odd.join(world.file_name().unwrap());
    let (secret, public) = key_file(dir.path(), "builder-1");
    let mut signing = fruix();
    signing
        .args(["store", "sign", "--secret-key"])
        .arg(&secret)
        .arg("--store")
        .arg(&odd)
        .arg(&world);
    run_ok(&mut signing);
    let archive = dir.path().join("archive");
    run_ok(&mut store_export(&odd, &archive, &[], &world));
    std::fs::rename(&odd, dir.path().join("original")).unwrap();
    // Not an archive of the store at `s\xff`, which looked the same.
    let refused = |store: &Path, archive: &Path| {
        run_failing(
            &mut store_import(store, archive, &["--trusted-key", &public]),
            4,
            &["archive refused", "not of this one"],
        );
        assert!(!store.exists(), "a refused import leaves no store it made");
    };
    refused(&other, &archive);
    // Nor is one of the store at `s\u{fffd}`, which `s\xff` was taken for.
    let replacement = dir.path().join("s\u{fffd}");
    let (_, world) = promoted(dir.path(), "root-2", &replacement);
    let lossy = dir.path().join("lossy-archive");
    run_ok(&mut store_export(&replacement, &lossy, &[], &world));
    refused(&other, &lossy);
    // The store at `s\xfe` takes it back, its signature verified.
    run_ok(&mut store_import(
        &odd,
        &archive,
        &["--trusted-key", &public],
    ));
}

#[test]
fn a_trusted_keys_file_line_may_end_in_a_comment() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (_, world) = promoted(dir.path(), "root", &store);
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
    let stderr = crate::util::failed_with("FRUIX_SIGNING_KEY", &out, 2, &["FRUIX_SIGNING_KEY"]);
    assert!(stderr.contains("not base64"), "{stderr}");
}

/// A secret key file other users may read was used without a word (the
/// README says to keep it 0600, as `generate-key` makes it): signing goes
/// on, with a warning naming the file, its mode and the fix.
#[test]
fn a_secret_key_others_may_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (bundle, _) = promoted(dir.path(), "root", &store);
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
