//! Signatures made where a result was built: the fingerprints planned from
//! a result root, without a store, are those of the objects promotion then
//! registers, and the host accepts the build site's signatures only with
//! the machine's key.

use fruix_core::result_root;
use fruix_core::testing::write_sample_result_root;
use fruix_promote::attest::{check_result, record, result_fingerprints, sign_result};
use fruix_promote::sign::{object_fingerprint, PublicKey, SecretKey};
use fruix_promote::{promote_native_build_result, PromoteOptions, Store};

#[test]
fn planned_fingerprints_are_those_of_the_promoted_objects_and_signatures_need_the_machine_key() {
    let dir = tempfile::tempdir().unwrap();
    let root_path = dir.path().join("root");
    // Signed, with a setuid file and a sticky directory (stripped modes).
    write_sample_result_root(&root_path, "guest-self-hosted", "20260405T213444Z", true).unwrap();
    let store_path = dir.path().join("store");
    let root = result_root::validate(&root_path).unwrap();
    let planned = result_fingerprints(&root, &store_path).unwrap();
    assert_eq!(planned.len(), 5, "four artifacts and the bundle");
    let key = SecretKey::generate("guest-1").unwrap();
    assert_eq!(sign_result(&root, &store_path, &key).unwrap(), 5);
    let public = PublicKey::parse(&key.public_text()).unwrap();
    let other = PublicKey::parse(&SecretKey::generate("guest-1").unwrap().public_text()).unwrap();
    let checked = check_result(&root, &store_path, &public, "m1").unwrap();
    let refused = check_result(&root, &store_path, &other, "m1").unwrap_err();
    assert!(
        refused.to_string().contains("no valid signature"),
        "{refused}"
    );
    // Another store path is another fingerprint.
    let elsewhere = check_result(&root, &dir.path().join("other"), &public, "m1").unwrap_err();
    assert!(
        elsewhere.to_string().contains("no valid signature"),
        "{elsewhere}"
    );

    let store = Store::open(&store_path).unwrap();
    let report =
        promote_native_build_result(&root_path, &store, &PromoteOptions::default()).unwrap();
    assert_eq!(
        planned.last().unwrap().0,
        report.result_store.file_name().unwrap().to_string_lossy()
    );
    for (name, print) in &planned {
        assert_eq!(&object_fingerprint(&store, name).unwrap(), print, "{name}");
    }
    assert!(record(&store, &checked).unwrap().is_empty());
    for (name, _) in &planned {
        assert_eq!(store.db().signatures(name).unwrap().len(), 1, "{name}");
    }

    // A tampered signatures file is refused; a missing one too.
    let file = root_path.join(".fruix-signatures");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("guest-1:", "guest-1:A", 1)).unwrap();
    assert!(check_result(&root, &store_path, &public, "m1").is_err());
    std::fs::remove_file(&file).unwrap();
    let missing = check_result(&root, &store_path, &public, "m1").unwrap_err();
    assert!(
        matches!(missing, fruix_promote::Error::UnsignedResult { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("did not sign"), "{missing}");
}

/// Regression: a build site's signature of an object that carries
/// [`MAX_SIGNATURES`] others already was dropped without a word. It is
/// reported as not recorded, full, beside one whose references in this
/// store differ from those signed.
#[test]
fn a_signature_not_recorded_says_why() {
    use fruix_promote::attest::{NotRecorded, Signed};
    use fruix_promote::sign::{sign_object, MAX_SIGNATURES};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write_sample_result_root(&root, "guest-self-hosted", "20260405T213444Z", true).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let report = promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
    let bundle = report.result_store.file_name().unwrap().to_str().unwrap();
    let world = report.artifacts["world"].store_path.file_name().unwrap();
    let world = world.to_str().unwrap();
    for i in 0..MAX_SIGNATURES {
        sign_object(
            &store,
            world,
            &SecretKey::generate(&format!("k{i}")).unwrap(),
        )
        .unwrap();
    }
    let guest = SecretKey::generate("guest-1").unwrap();
    let signed = |name: &str, fingerprint: String| Signed {
        name: name.to_string(),
        signature: guest.sign(&fingerprint),
        fingerprint,
    };
    let checked = [
        signed(world, object_fingerprint(&store, world).unwrap()),
        signed(bundle, "not the bundle's fingerprint".into()),
    ];
    assert_eq!(
        record(&store, &checked).unwrap(),
        [
            (world.to_string(), NotRecorded::Full),
            (bundle.to_string(), NotRecorded::Differs),
        ]
    );
    assert_eq!(store.db().signatures(world).unwrap().len(), MAX_SIGNATURES);
    assert!(store.db().signatures(bundle).unwrap().is_empty());
}
