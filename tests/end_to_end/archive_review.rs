//! Regressions from an attacker's review of `fruix store import`: a bundle
//! left in the store unregistered is checked as a bundle and reused (and two
//! imports of one archive both succeed); a tree nested deeper than a walk
//! accepts, an empty symlink target and a bundle listing one artifact twice
//! are refused; a refused import leaves an empty directory empty. Empty
//! standard input, or a directory as standard input, is said as such.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use fruix_core::manifest::{parse_line, ManifestBuilder};
use fruix_core::testing::{edit_header, object_at};
use fruix_promote::object::{object_hash, ObjectIdentity};

use crate::util::{
    failed_with, fruix, json_error, promote_report, promoted_store, run_json, run_ok,
    run_with_deadline, sample_root, snapshot, spawn_piped, store_export, store_import,
    verify_store, wait_with_deadline,
};

/// Exports the closure of a sample result root's bundle (unsigned) from
/// `dir/store`, which is then moved to `dir/original` so that the archive
/// imports into a new store at `dir/store`. Returns the archive's bytes and
/// the bundle's path.
fn exported(dir: &Path) -> (Vec<u8>, String) {
    let store = dir.join("store");
    let report = promote_report(&store, &sample_root(dir, "root"), &[]);
    let bundle = report["result_store"].as_str().unwrap().to_string();
    let archive = dir.join("archive");
    run_ok(&mut store_export(
        &store,
        &archive,
        &["--recursive"],
        &bundle,
    ));
    std::fs::rename(&store, dir.join("original")).unwrap();
    (std::fs::read(&archive).unwrap(), bundle)
}

/// Imports `archive` into `store` without signature checks, within a
/// minute.
fn import(dir: &Path, store: &Path, archive: &[u8]) -> Output {
    let file = dir.join("to-import");
    std::fs::write(&file, archive).unwrap();
    run_with_deadline(
        &mut store_import(store, &file, &["--json", "--no-check-sigs"]),
        Duration::from_secs(60),
    )
}

/// Checks that importing `archive` into `dir/store` is refused as invalid
/// input (exit 4, saying each of `expected`) and changes nothing.
fn refused(dir: &Path, what: &str, archive: &[u8], expected: &[&str]) {
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let before = snapshot(&store);
    let file = dir.join("refused");
    std::fs::write(&file, archive).unwrap();
    let out = run_with_deadline(
        &mut store_import(&store, &file, &["--no-check-sigs"]),
        Duration::from_secs(60),
    );
    failed_with(what, &out, 4, expected);
    assert_eq!(snapshot(&store), before, "{what} changed the store");
}

/// `archive` up to its kernel artifact, then that artifact with the tree
/// `lines` (directories and symlinks only) and metadata that commits to it,
/// as anyone can make it without a trusted key; the archive ends there.
fn crafted_kernel(archive: &[u8], lines: &[String]) -> Vec<u8> {
    let (start, mut header) = object_at(archive, "-fruix-native-kernel-");
    let mut identity =
        ObjectIdentity::from_text(Path::new("m"), header["metadata"].as_str().unwrap()).unwrap();
    let mut builder = ManifestBuilder::new();
    for line in lines {
        builder.add(&parse_line(line).unwrap());
    }
    identity.tree_signature = builder.finish().0;
    identity.stripped_modes = Vec::new();
    header["name"] = identity.store_name().into();
    header["metadata"] = identity.to_scheme().into();
    let json = serde_json::to_string(&header).unwrap();
    let mut out = archive[..start].to_vec();
    out.extend_from_slice(format!("object {}\n{json}\n", json.len()).as_bytes());
    for line in lines {
        out.extend_from_slice(format!("{line}\n").as_bytes());
    }
    out.extend_from_slice(b"end\nend-archive\n");
    out
}

/// The tree lines of directories nested `depth` deep: `.`, `./d`,
/// `./d/d`...
fn nested(depth: usize) -> Vec<String> {
    let mut lines = vec![". type=dir mode=0555".to_string()];
    let mut path = ".".to_string();
    for _ in 0..depth {
        path.push_str("/d");
        lines.push(format!("{path} type=dir mode=0555"));
    }
    lines
}

/// A bundle directory that is there but not registered (left by a killed
/// import or promotion, or by another import of the same archive) is
/// checked as a bundle and reused: importing the archive again always
/// failed (exit 3), reading it as an artifact whose metadata file it lacks.
#[test]
fn an_unregistered_bundle_in_the_store_is_checked_as_a_bundle_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, bundle) = exported(dir.path());
    let store = dir.path().join("store");
    let first = import(dir.path(), &store, &archive);
    assert!(first.status.success(), "{first:?}");
    let name = Path::new(&bundle).file_name().unwrap().to_str().unwrap();
    let db = rusqlite::Connection::open(store.join(".fruix/db.sqlite")).unwrap();
    db.execute_batch(&format!(
        "PRAGMA foreign_keys=ON; \
         DELETE FROM refs WHERE referrer = (SELECT id FROM objects WHERE name = '{name}'); \
         DELETE FROM objects WHERE name = '{name}';"
    ))
    .unwrap();
    drop(db);
    let again = import(dir.path(), &store, &archive);
    assert!(again.status.success(), "{again:?}");
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(
        report["present"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| *p == bundle),
        "{report:#}"
    );
    let info = run_json(
        fruix()
            .args(["store", "info", "--json", "--store"])
            .arg(&store)
            .arg(&bundle),
    );
    assert_eq!(info[0]["kind"], "bundle", "{info:#}");
    verify_store(&store);

    // Two imports of one archive at once, into a new store: the second to
    // publish finds the first's objects, the bundle among them.
    std::fs::rename(&store, dir.path().join("imported")).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, &archive).unwrap();
    std::fs::write(&b, &archive).unwrap();
    let imports =
        [&a, &b].map(|file| spawn_piped(&mut store_import(&store, file, &["--no-check-sigs"])));
    for child in imports {
        let out = wait_with_deadline(child, Duration::from_secs(60), "an import");
        assert!(out.status.success(), "{out:?}");
    }
    verify_store(&store);
}

/// `store verify` calls a tree nested deeper than 256 directories corrupt
/// (`--repair` would remove it and its referrers): the import refuses it,
/// and still takes one exactly that deep.
#[test]
fn a_tree_nested_deeper_than_a_walk_accepts_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, _) = exported(dir.path());
    let store = dir.path().join("store");
    let deepest = import(dir.path(), &store, &crafted_kernel(&archive, &nested(256)));
    assert!(deepest.status.success(), "{deepest:?}");
    verify_store(&store);
    std::fs::rename(&store, dir.path().join("deepest")).unwrap();
    refused(
        dir.path(),
        "257 directories deep",
        &crafted_kernel(&archive, &nested(257)),
        &[
            "nested deeper than 256 directories",
            "the store was not changed",
        ],
    );
}

/// No system creates a symlink with an empty target: the import refused
/// it only when creating it, as a system failure (exit 3).
#[test]
fn a_symlink_with_an_empty_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, _) = exported(dir.path());
    let tree = [". type=dir mode=0555", "./l type=link link="].map(String::from);
    refused(
        dir.path(),
        "an empty link target",
        &crafted_kernel(&archive, &tree),
        &["./l has an empty target", "the store was not changed"],
    );
}

/// A bundle whose metadata lists one artifact twice (renamed to its new
/// hash) failed as a system failure (exit 3) when its second link was made.
#[test]
fn a_bundle_listing_an_artifact_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, _) = exported(dir.path());
    let doubled = edit_header(&archive, "native-build-result", |h| {
        let text = h["metadata"].as_str().unwrap().to_string();
        let start = text.find("(artifact ").expect("an artifact");
        // One artifact a line, as promotion writes them.
        let end = start + text[start..].find('\n').unwrap();
        let text = format!("{}\n{}", &text[..end], &text[start..]);
        let name = h["name"].as_str().unwrap();
        h["name"] = format!("{}{}", object_hash(&text), &name[40..]).into();
        h["metadata"] = text.into();
    });
    refused(
        dir.path(),
        "an artifact listed twice",
        &doubled,
        &["is listed twice"],
    );
}

/// A refused import into an empty directory left the store it initialised
/// there (`.fruix/db.sqlite`, `.links`, `.locks`, `.lock`) while saying
/// that the store was not changed.
#[test]
fn a_refused_import_leaves_an_empty_directory_empty() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("e");
    std::fs::create_dir(&empty).unwrap();
    let out = import(dir.path(), &empty, b"garbage\n");
    failed_with("garbage", &out, 4, &[]);
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the store was not changed"),
        "{error:#}"
    );
    let left: Vec<_> = std::fs::read_dir(&empty).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Regression: `store import DIR` failed as a system failure (exit 3,
/// "failed to read the archive: Is a directory"): it is the caller's
/// mistake, exit 2, naming the path, and nothing made.
#[test]
fn an_archive_that_is_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let into = dir.path().join("other");
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let out = run_with_deadline(
        &mut store_import(&into, &folder, &[]),
        Duration::from_secs(60),
    );
    let named = folder.display().to_string();
    failed_with("a directory", &out, 2, &[&named, "is a directory"]);
    assert!(!into.exists(), "no store made");
}

/// Regression: `store export --output -` first wrote a file named `-`,
/// then was refused, while `store import -` reads standard input and
/// `matrix export -o -` writes standard output. It is standard output: the
/// same archive as without `--output`, and no file named `-`. With
/// `--json`, whose report goes to standard output too, it is refused (exit
/// 2), nothing written.
#[test]
fn an_export_to_output_dash_goes_to_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let bundle = report["result_store"].as_str().unwrap();
    let before = snapshot(&store);
    let work = tempfile::tempdir().unwrap();
    let exported = |flags: &[&str]| {
        let mut export = fruix();
        export
            .current_dir(work.path())
            .args(["store", "export", "-r", "--store"])
            .arg(&store)
            .args(flags)
            .arg(bundle);
        run_with_deadline(&mut export, Duration::from_secs(60))
    };
    let plain = exported(&[]);
    assert!(plain.status.success(), "{plain:?}");
    let dash = exported(&["--output", "-"]);
    assert!(dash.status.success(), "{dash:?}");
    assert!(!dash.stdout.is_empty());
    assert_eq!(dash.stdout, plain.stdout, "the same archive");
    assert!(!work.path().join("-").exists(), "a file named -");
    let out = exported(&["-o", "-", "--json"]);
    failed_with("--json -o -", &out, 2, &["--json", "--output -"]);
    json_error(&out, 2, "--json with --output -");
    assert!(!work.path().join("-").exists(), "a file named -");
    assert_eq!(snapshot(&store), before);
}

/// Regression: an import of empty standard input said the archive "ends
/// after 0 bytes, in the middle of it"; one whose standard input is a
/// directory (`< DIR`) was a system failure (exit 3, "Is a directory").
#[test]
fn an_import_of_no_input_or_of_a_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let import = |stdin: std::fs::File| {
        let mut cmd = fruix();
        cmd.args(["store", "import", "--json", "--store"])
            .arg(&store)
            .stdin(stdin);
        cmd.output().unwrap()
    };
    let out = import(std::fs::File::open("/dev/null").unwrap());
    json_error(&out, 4, "the archive is empty (no input");
    let out = import(std::fs::File::open(dir.path()).unwrap());
    json_error(
        &out,
        2,
        "standard input is a directory; give an archive file",
    );
    assert!(!store.exists(), "a store was left");
}
