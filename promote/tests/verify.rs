//! `store verify` on result bundles: a bundle must hold exactly what
//! promotion wrote, reported as corruption (and repaired) like artifacts,
//! with untrusted link targets escaped; and every object is reported with
//! the kind names the registry uses.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fruix_core::manifest::Difference;
use fruix_core::testing::{mkfifo, write_sample_result_root, TestDir};
use fruix_promote::db::Kind;
use fruix_promote::store::{set_mode, set_mtime};
use fruix_promote::verify::{
    check_registry, object_paths, repair, verify_object, verify_objects, verify_pool,
    ObjectVerification, PoolVerification, RegistryCheck,
};
use fruix_promote::{promote_native_build_result, PromoteOptions, Store};

mod common;

/// Promotes the sample result root; returns the store and its bundle.
fn promoted(dir: &TestDir) -> (Store, PathBuf) {
    let store = Store::open(&dir.store()).unwrap();
    let root = dir.root("r1", "local", "20260405T213444Z", true);
    let report = promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
    (store, report.result_store)
}

/// Runs `change` in `dir` made writable, then makes it read-only again
/// with the store's timestamp, so that only `change` differs.
fn tamper(dir: &Path, change: impl FnOnce()) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    change();
    set_mode(dir, 0o555).unwrap();
    set_mtime(dir).unwrap();
}

/// Writes a store file `path` (mode 0444, store timestamp) holding `text`.
fn store_file(path: &Path, text: &str) {
    let _ = fs::remove_file(path);
    fs::write(path, text).unwrap();
    set_mode(path, 0o444).unwrap();
    set_mtime(path).unwrap();
}

/// Promotes the sample result root, runs `change` (given the bundle) with
/// the bundle's directory `within` made writable, and verifies the bundle,
/// which must be found corrupt.
fn verify_tampered(
    within: &str,
    change: impl FnOnce(&Path),
) -> (TestDir, Store, PathBuf, ObjectVerification) {
    let dir = TestDir::new();
    let (store, bundle) = promoted(&dir);
    tamper(&bundle.join(within), || change(&bundle));
    let v = verify_object(&bundle, None, None);
    let corrupt = !v.ok && (!v.differences.is_empty() || v.error.is_some());
    assert!(corrupt, "{v:?}");
    (dir, store, bundle, v)
}

#[test]
fn an_intact_bundle_verifies_as_a_bundle() {
    let dir = TestDir::new();
    let (_store, bundle) = promoted(&dir);
    let v = verify_object(&bundle, None, None);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.kind, Kind::Bundle);
    assert_eq!(serde_json::to_value(&v).unwrap()["kind"], "bundle");
}

#[test]
fn a_bundle_with_emptied_references_is_corrupt() {
    let (_dir, _store, _bundle, v) =
        verify_tampered("", |bundle| store_file(&bundle.join(".references"), ""));
    assert!(
        matches!(
            v.differences.as_slice(),
            [Difference::Modified { path, what }]
                if path == "./.references" && what.iter().any(|w| w.starts_with("size"))
        ),
        "{v:?}"
    );
}

#[test]
fn a_bundle_with_an_extra_file_is_corrupt_and_repair_removes_it() {
    let (_dir, store, bundle, v) =
        verify_tampered("", |bundle| store_file(&bundle.join("extra-file"), "x"));
    assert_eq!(
        v.differences,
        vec![Difference::Extra {
            path: "./extra-file".into()
        }]
    );
    let name = bundle.file_name().unwrap().to_str().unwrap().to_string();
    assert!(store.is_valid(&name).unwrap());
    let repaired = repair(
        &store,
        &[v],
        &PoolVerification::default(),
        &RegistryCheck::default(),
    )
    .unwrap();
    assert_eq!(repaired.removed_objects, vec![bundle.clone()]);
    assert!(bundle.symlink_metadata().is_err());
    assert!(!store.is_valid(&name).unwrap());
}

#[test]
fn an_extra_link_and_a_special_file_in_a_bundle_are_corrupt() {
    let dir = TestDir::new();
    let (_store, bundle) = promoted(&dir);
    let links = bundle.join("artifacts");
    tamper(&links, || {
        std::os::unix::fs::symlink("/etc", links.join("etc")).unwrap();
    });
    tamper(&bundle, || {
        fs::remove_file(bundle.join(".references")).unwrap();
        mkfifo(&bundle.join(".references")).unwrap();
    });
    let v = verify_object(&bundle, None, None);
    assert_eq!(
        v.differences,
        vec![
            Difference::Modified {
                path: "./.references".into(),
                what: vec!["type file -> special file".into()]
            },
            Difference::Extra {
                path: "./artifacts/etc".into()
            }
        ],
        "{v:?}"
    );
}

#[test]
fn a_retargeted_artifact_link_is_reported_escaped() {
    let forged = "/x\nok /frx/store/forged\x1b[2K";
    let (_dir, _store, _bundle, v) = verify_tampered("artifacts", |bundle| {
        let world = bundle.join("artifacts/world");
        fs::remove_file(&world).unwrap();
        std::os::unix::fs::symlink(forged, &world).unwrap();
        set_mtime(&world).unwrap();
    });
    let shown: Vec<String> = v
        .differences
        .iter()
        .map(|d| d.to_string())
        .chain(v.error.clone())
        .collect();
    assert!(
        shown.iter().any(|s| s.contains("forged")),
        "the target is named: {shown:?}"
    );
    for s in &shown {
        assert!(!s.contains('\n') && !s.contains('\x1b'), "{s:?}");
    }
}

/// Regression: a bundle whose metadata (and links) swapped two artifacts'
/// store paths, renamed to its new hash, verified: it then showed world's
/// tree signature for the kernel object. Each artifact must be the object
/// at its store path, by name and tree signature.
#[test]
fn a_bundle_whose_artifacts_are_not_the_objects_it_names_is_corrupt() {
    let dir = TestDir::new();
    let (_store, bundle) = promoted(&dir);
    let meta = bundle.join(fruix_promote::store::RESULT_METADATA_FILE);
    let text = fs::read_to_string(&meta).unwrap();
    let target = |name: &str| fs::read_link(bundle.join("artifacts").join(name)).unwrap();
    let (world, kernel) = (target("world"), target("kernel"));
    let (w, k) = (world.to_str().unwrap(), kernel.to_str().unwrap());
    let swapped = text.replace(w, "WORLD").replace(k, w).replace("WORLD", k);
    assert_ne!(swapped, text);
    let name = bundle.file_name().unwrap().to_str().unwrap();
    let forged = bundle.with_file_name(format!(
        "{}{}",
        fruix_promote::object::object_hash(&swapped),
        &name[40..]
    ));
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&bundle)
        .arg(&forged)
        .status()
        .unwrap();
    assert!(copied.success());
    tamper(&forged, || {
        store_file(&forged.join(meta.file_name().unwrap()), &swapped)
    });
    tamper(&forged.join("artifacts"), || {
        for (link, to) in [("world", &kernel), ("kernel", &world)] {
            let link = forged.join("artifacts").join(link);
            fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(to, &link).unwrap();
            set_mtime(&link).unwrap();
        }
    });
    let v = verify_object(&forged, None, None);
    assert!(!v.ok, "{v:?}");
    let error = v.error.unwrap_or_default();
    assert!(
        error.contains("artifact \"world\" is not what the bundle says")
            && error.contains("the object there is the artifact \"kernel\""),
        "{error}"
    );
    assert!(verify_object(&bundle, None, None).ok);
}

#[test]
fn a_source_object_is_reported_as_a_source() {
    let dir = TestDir::new();
    let store = Store::open(&dir.store()).unwrap();
    let source = store
        .path()
        .join("12d7704362e95afc2697db63f168b878e082b372-freebsd-source-default");
    fs::create_dir(&source).unwrap();
    let v = verify_object(&source, None, None);
    assert!(!v.ok);
    assert_eq!(v.kind, Kind::Source);
    assert_eq!(serde_json::to_value(&v).unwrap()["kind"], "source");
}

/// A source object added from a small tree, and the sample result root
/// (signed) rewritten to name it as its source: promoting it registers
/// artifacts and a bundle that reference the source.
fn promoted_from_a_source(dir: &TestDir) -> (Store, PathBuf, fruix_promote::PromotionReport) {
    let store = Store::open(&dir.store()).unwrap();
    let source = common::add_sample_source(
        &store,
        &dir.join("src"),
        &[
            ("Makefile", b"all:\n".as_slice(), 0o644),
            ("sys/conf/newvers.sh", b"REVISION=\"15.0\"\n", 0o755),
        ],
    )
    .store_path;
    let root = dir.join("r1");
    let mut metadata = write_sample_result_root(&root, "local", "20260405T213444Z", true).unwrap();
    metadata.source_store.path = source.to_string_lossy().into_owned();
    metadata.write_to(&root).unwrap();
    let report = promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
    (store, source, report)
}

/// Verifies the whole store as `fruix store verify` does.
fn verify_store(store: &Store) -> (Vec<ObjectVerification>, PoolVerification, RegistryCheck) {
    let registry = check_registry(store).unwrap();
    let pool = verify_pool(store, None, None).unwrap();
    let objects = verify_objects(
        &object_paths(store).unwrap(),
        Some(pool.verified(store)),
        None,
    )
    .unwrap();
    (objects, pool, registry)
}

#[test]
fn repairing_a_corrupt_source_removes_what_was_built_from_it() {
    let dir = TestDir::new();
    let (store, source, report) = promoted_from_a_source(&dir);
    let source_name = source.file_name().unwrap().to_str().unwrap().to_string();
    // The artifacts and the bundle are registered as referring to it.
    let mut referrers = store.db().neighbours(&source_name, true).unwrap();
    referrers.sort();
    let mut built: Vec<String> = report
        .artifacts
        .values()
        .map(|a| &a.store_path)
        .chain([&report.result_store])
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    built.sort();
    assert_eq!(referrers, built);
    tamper(&source, || store_file(&source.join("extra-file"), "x"));
    let (objects, pool, registry) = verify_store(&store);
    let corrupt: Vec<&PathBuf> = objects.iter().filter(|o| !o.ok).map(|o| &o.path).collect();
    assert_eq!(corrupt, [&source]);
    let repaired = repair(&store, &objects, &pool, &registry).unwrap();
    assert_eq!(repaired.removed_objects, vec![source.clone()]);
    let mut artifacts: Vec<PathBuf> = report
        .artifacts
        .values()
        .map(|a| a.store_path.clone())
        .collect();
    artifacts.sort();
    assert_eq!(artifacts.len(), 4);
    assert_eq!(repaired.removed_referrers, artifacts);
    assert_eq!(repaired.removed_bundles, vec![report.result_store.clone()]);
    assert!(repaired.unregistered.is_empty());
    let after = check_registry(&store).unwrap();
    assert!(after.missing.is_empty(), "{after:?}");
    assert!(after.unregistered.is_empty(), "{after:?}");
    assert!(store.db().names().unwrap().is_empty());
    assert!(object_paths(&store).unwrap().is_empty());
}

#[test]
fn repairing_a_missing_source_removes_what_was_built_from_it() {
    let dir = TestDir::new();
    let (store, source, report) = promoted_from_a_source(&dir);
    fruix_promote::store::remove_tree(&source);
    assert!(source.symlink_metadata().is_err());
    let (objects, pool, registry) = verify_store(&store);
    assert_eq!(registry.missing, vec![source.clone()]);
    let repaired = repair(&store, &objects, &pool, &registry).unwrap();
    assert!(repaired.removed_objects.is_empty(), "{repaired:?}");
    assert_eq!(repaired.unregistered, [source]);
    assert_eq!(repaired.removed_referrers.len(), 4, "{repaired:?}");
    assert_eq!(repaired.removed_bundles, [report.result_store]);
    let after = check_registry(&store).unwrap();
    assert!(
        after.missing.is_empty() && after.unregistered.is_empty(),
        "{after:?}"
    );
    assert!(store.db().names().unwrap().is_empty());
}

/// Regression: a bundle's `.references` names its builder's closure and
/// its development profile when they are objects of this store, but the
/// promotion registered only its artifacts and source: a collection could
/// remove the closure the bundle names, and `store verify` found the
/// references unrecorded. They are registered now; one that is not a valid
/// object of this store is refused, as a source that is not is.
#[test]
fn a_bundle_s_closure_and_profile_in_this_store_are_registered_references() {
    let dir = TestDir::new();
    let (store, source, _) = promoted_from_a_source(&dir);
    let added = |name: &str| {
        let files = [("Makefile", format!("{name}:\n").into_bytes(), 0o644)];
        let files: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|(p, c, m)| (*p, c.as_slice(), *m))
            .collect();
        common::add_sample_source(&store, &dir.join(name), &files).store_path
    };
    let (closure, profile) = (added("closure"), added("profile"));
    let root = dir.join("r2");
    let mut metadata = write_sample_result_root(&root, "local", "20260405T213445Z", true).unwrap();
    metadata.source_store.path = source.to_string_lossy().into_owned();
    metadata.closure_path = Some(closure.to_string_lossy().into_owned());
    metadata.development_profile_path = Some(profile.to_string_lossy().into_owned());
    metadata.write_to(&root).unwrap();
    let report = promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    let references = store
        .db()
        .neighbours(&name(&report.result_store), false)
        .unwrap();
    for object in [&closure, &profile, &source] {
        assert!(
            references.contains(&name(object)),
            "{object:?}: {references:?}"
        );
    }
    let (objects, _, _) = verify_store(&store);
    let problems = fruix_promote::verify::check_references(&store, &objects).unwrap();
    assert_eq!(problems, [], "every reference is recorded");

    // A closure named in this store that is no object of it.
    let root = dir.join("r3");
    let mut metadata = write_sample_result_root(&root, "local", "20260405T213446Z", true).unwrap();
    metadata.source_store.path = source.to_string_lossy().into_owned();
    let missing = store
        .path()
        .join(format!("{}-fruix-builder-closure", "0".repeat(40)));
    metadata.closure_path = Some(missing.to_string_lossy().into_owned());
    metadata.write_to(&root).unwrap();
    let before = object_paths(&store).unwrap();
    let e = promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap_err();
    assert!(
        matches!(&e, fruix_promote::Error::ReferenceGone { object, field: "closure" } if *object == missing),
        "{e}"
    );
    assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
    assert_eq!(object_paths(&store).unwrap(), before, "nothing promoted");

    // A store path in this store that no object could have (no object's
    // name), and one spelt with `..` (in this store or not, as read).
    let odd = store.path().join(format!("{}-profile", "0".repeat(40)));
    let dotted = format!(
        "{}/../elsewhere/{}-fruix-builder-closure",
        store.path().display(),
        "0".repeat(40)
    );
    for (closure, profile, status) in [
        (
            None,
            Some(odd.to_string_lossy().into_owned()),
            fruix_core::ExitStatus::Usage,
        ),
        (Some(dotted), None, fruix_core::ExitStatus::PromotionFailure),
    ] {
        let root = dir.join("r4");
        let _ = fs::remove_dir_all(&root);
        let run_id = "20260405T213447Z";
        let mut metadata = write_sample_result_root(&root, "local", run_id, true).unwrap();
        metadata.source_store.path = source.to_string_lossy().into_owned();
        metadata.closure_path = closure;
        metadata.development_profile_path = profile;
        metadata.write_to(&root).unwrap();
        let e = promote_native_build_result(&root, &store, &PromoteOptions::default());
        let e = e.unwrap_err();
        assert_eq!(e.exit_status(), status, "{e}");
        assert_eq!(
            object_paths(&store).unwrap(),
            before,
            "nothing promoted: {e}"
        );
    }
}

/// An artifact's `.references` rewritten together with its manifest line
/// (so that the manifest agrees) is found: the references must be what
/// the metadata implies, its source, as promotion writes them.
#[test]
fn references_rewritten_with_their_manifest_line_are_found() {
    use sha2::Digest;
    let dir = TestDir::new();
    let (_store, _source, report) = promoted_from_a_source(&dir);
    let world = report.artifacts["world"].store_path.clone();
    assert!(verify_object(&world, None, None).ok);
    let manifest = world.join(".fruix-manifest.mtree");
    let old = fs::read_to_string(world.join(".references")).unwrap();
    let line_of = |text: &str| {
        format!(
            "size={} sha256digest={}",
            text.len(),
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        )
    };
    let forged = "";
    let rewritten = fs::read_to_string(&manifest)
        .unwrap()
        .replace(&line_of(&old), &line_of(forged));
    assert_ne!(rewritten, fs::read_to_string(&manifest).unwrap());
    tamper(&world, || {
        store_file(&world.join(".references"), forged);
        store_file(&manifest, &rewritten);
    });
    let differences = verify_object(&world, None, None).differences;
    assert!(
        matches!(&differences[..], [Difference::Modified { path, what }]
            if path == "./.references"
                && what == &["references not those its metadata implies".to_string()]),
        "{differences:?}"
    );
}

/// Regression: the pool's listing made names lossy, so a stray file in
/// `.links` whose name is not UTF-8 was reported under another name
/// (`x\u{fffd}`), and a repair, looking for that name, left the file and
/// said it had removed what was corrupt. It is reported and removed by
/// its own name, byte for byte; the sound entries stay.
#[test]
fn a_stray_pool_file_whose_name_is_not_utf8_is_named_and_removed_exactly() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TestDir::new();
    let (store, _) = promoted(&dir);
    let links = store.path().join(".links");
    let stray = links.join(std::ffi::OsStr::from_bytes(b"x\xff"));
    fs::write(&stray, "stray").unwrap();
    let (objects, pool, registry) = verify_store(&store);
    assert!(objects.iter().all(|o| o.ok), "{objects:?}");
    let corrupt: Vec<&Path> = pool.corrupt.iter().map(|p| p.path.as_path()).collect();
    assert_eq!(corrupt, [stray.as_path()], "{pool:?}");
    let entries = fs::read_dir(&links).unwrap().count();
    let repaired = repair(&store, &objects, &pool, &registry).unwrap();
    assert_eq!(repaired.removed_pool_entries, vec![stray.clone()]);
    assert!(
        stray.symlink_metadata().is_err(),
        "the stray file is still there"
    );
    assert_eq!(fs::read_dir(&links).unwrap().count(), entries - 1);
    let (objects, pool, _) = verify_store(&store);
    assert!(
        objects.iter().all(|o| o.ok) && pool.corrupt.is_empty(),
        "{pool:?}"
    );
}
