//! `fruix store verify PATH...` as a scale review found it: an object
//! named several times was checked as many times (`"checked":8` for one
//! object named eight times), and the pool entries of the objects named
//! were gathered into memory all at once. They are now gathered a run at
//! a time (memory is checked structurally by the unit tests of
//! `fruix_promote::verify`); here the real binary still finds what is
//! corrupt or missing in an object named, and checks a repeated one once.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::util::{fruix, run, run_ok, store_verify};

/// A source tree of six files: three plain ones alike (`a`, `b`, `c`), one
/// executable alike in content (`e`), one other (`d`) and its `Makefile`:
/// four pool entries, one of them linked three times.
fn tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    for name in ["a", "b", "c", "e"] {
        fs::write(src.join(name), "same\n").unwrap();
    }
    fs::write(src.join("d"), "other\n").unwrap();
    fs::write(src.join("Makefile"), "buildworld:\n").unwrap();
    fs::set_permissions(src.join("e"), fs::Permissions::from_mode(0o755)).unwrap();
    src
}

/// Adds `src` to `store` under `name` as a source object: its path.
fn add(store: &Path, src: &Path, name: &str) -> PathBuf {
    let mut add = fruix();
    add.args([
        "source",
        "add",
        "--quiet",
        "--freebsd-version",
        "15.0-STABLE",
    ])
    .args(["--name", name, "--store"])
    .arg(store)
    .arg(src);
    PathBuf::from(run_ok(&mut add).trim())
}

/// `store verify --json` of `paths` in `store`: its exit status and report.
fn verify_json(store: &Path, paths: &[&Path]) -> (Option<i32>, serde_json::Value) {
    let out = run(store_verify(store, &["--json"]).args(paths));
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (out.status.code(), report)
}

/// The paths of the objects a report lists, in its order.
fn objects(report: &serde_json::Value) -> Vec<String> {
    report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_string())
        .collect()
}

/// Regression: an object named again (however spelt) was checked again;
/// it is checked once, where it is first named, and `checked` counts the
/// distinct objects.
#[test]
fn an_object_named_again_is_checked_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let src = tree(dir.path());
    let one = add(&store, &src, "one");
    fs::write(src.join("d"), "changed\n").unwrap();
    let two = add(&store, &src, "two");
    let name = one.file_name().unwrap();
    let spelt_otherwise = store.join("..").join("store").join(name);

    let (status, report) = verify_json(&store, &[&one, &one, &spelt_otherwise, &one]);
    assert_eq!(status, Some(0), "{report}");
    assert_eq!(report["checked"], 1, "{report}");
    assert_eq!(objects(&report), [one.display().to_string()], "{report}");
    assert_eq!(report["pool"]["checked"], 4, "{report}");

    let (status, report) = verify_json(&store, &[&two, &one, &two, &one]);
    assert_eq!(status, Some(0), "{report}");
    assert_eq!(report["checked"], 2, "{report}");
    let listed = [two.display().to_string(), one.display().to_string()];
    assert_eq!(objects(&report), listed, "{report}");
    // `same` plain and executable, `other`, `changed` and the `Makefile`.
    assert_eq!(report["pool"]["checked"], 5, "{report}");

    let text = run_ok(store_verify(&store, &[]).args([&one, &one]));
    assert!(text.contains("1 object(s) checked, 0 corrupt"), "{text}");

    // Registered, its directory gone: reported missing once.
    fs::set_permissions(&two, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir_all(&two).unwrap();
    let (status, report) = verify_json(&store, &[&two, &one, &two]);
    assert_eq!(status, Some(4), "{report}");
    assert_eq!(report["missing"], serde_json::json!([two]), "{report}");
    assert_eq!(objects(&report), [one.display().to_string()], "{report}");
}

/// An object named still finds its corrupt pool entry (linked three times,
/// reported once) and its missing file, as the whole store's check does.
#[test]
fn a_named_object_finds_its_corrupt_pool_entry_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let object = add(&store, &tree(dir.path()), "one");
    let shared = object.join("a");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&shared, "tampered\n").unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(&object, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(object.join("d")).unwrap();
    fs::set_permissions(&object, fs::Permissions::from_mode(0o555)).unwrap();

    let (status, named) = verify_json(&store, &[&object, &object]);
    assert_eq!(status, Some(4), "{named}");
    assert_eq!(
        (named["checked"].clone(), named["corrupt"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(named["pool"]["checked"], 4, "{named}");
    let corrupt = named["pool"]["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 1, "{named}");
    let differences = named["objects"][0]["differences"].as_array().unwrap();
    let listed = |kind: &str, path: &str| {
        differences
            .iter()
            .any(|d| d["change"] == kind && d["path"] == path)
    };
    assert!(listed("missing", "./d"), "{named}");
    for path in ["./a", "./b", "./c"] {
        assert!(listed("modified", path), "{named}");
    }

    let (status, whole) = verify_json(&store, &[]);
    assert_eq!(status, Some(4), "{whole}");
    assert_eq!(whole["pool"]["corrupt"], named["pool"]["corrupt"]);
    assert_eq!(whole["objects"], named["objects"]);
}
