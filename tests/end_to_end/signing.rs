//! Signed objects: keys made by `fruix store generate-key`, signatures made
//! by `--sign-with` and `store sign`, kept in the registry, shown by `store
//! info`, and valid over the object's fingerprint.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fruix_promote::sign::{fingerprint, verify, PublicKey};
use serde_json::Value;

use crate::util::{fruix, run, run_ok, sample_root};

/// A key pair `name` in `dir`: (secret key file, public key text).
pub fn key(dir: &Path, name: &str) -> (PathBuf, String) {
    let (secret, public) = (
        dir.join(format!("{name}.sec")),
        dir.join(format!("{name}.pub")),
    );
    let printed = run_ok(
        fruix()
            .args(["store", "generate-key", "--name", name, "--secret-key"])
            .arg(&secret)
            .arg("--public-key")
            .arg(&public),
    );
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
    let again = run(fruix()
        .args(["store", "generate-key", "--name", "x", "--secret-key"])
        .arg(&secret)
        .arg("--public-key")
        .arg(dir.path().join("x.pub")));
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    let store = dir.path().join("store");
    let root = sample_root(dir.path(), "root");
    let report: Value = serde_json::from_str(&run_ok(
        fruix()
            .args([
                "native-build",
                "promote",
                "--json",
                "--no-out-link",
                "--sign-with",
            ])
            .arg(&secret)
            .arg("--store")
            .arg(&store)
            .arg(&root),
    ))
    .unwrap();
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
}

#[test]
fn an_unreadable_key_is_refused_before_anything_is_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.sec");
    std::fs::write(&bad, "builder-1:not base64!\n").unwrap();
    let store = dir.path().join("store");
    let out = run(fruix()
        .args(["native-build", "promote", "--no-out-link", "--sign-with"])
        .arg(&bad)
        .arg("--store")
        .arg(&store)
        .arg(sample_root(dir.path(), "root")));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not base64"),
        "{out:?}"
    );
    assert!(!store.exists(), "nothing was promoted");
}
