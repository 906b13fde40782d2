//! The store's own files (`.fruix`, its registry, `.lock`, `gc.lock`,
//! `.links`, `.locks`) as a store handed over from elsewhere may hold
//! them: symlinks are refused, never followed, whatever they point at is
//! left as it was; a registry that is not fruix's, or one emptied, is
//! refused rather than silently created anew; and `.fruix/reserved`, the
//! space kept so that `store gc` can run on a full disk.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::util::{
    json_error, object_names, promote_command, promote_quietly, run, run_ok, sample_root,
};

/// A store holding [`sample_root`]'s objects, in a fresh directory.
fn populated() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let root = sample_root(dir.path(), "good");
    run_ok(&mut promote_command(&store, &root, &["--quiet"]));
    (dir, store)
}

/// `fruix store list --json --store STORE`.
fn list(store: &Path) -> std::process::Output {
    run(crate::util::fruix()
        .args(["store", "list", "--json", "--store"])
        .arg(store))
}

/// Every entry of the store's own that fruix opens, replaced by a symlink
/// to a victim of the same type outside the store: `store list` (and a
/// promotion, which writes) exits 3 naming the entry, and the victim is
/// as it was.
#[test]
fn a_symlink_among_the_stores_own_files_is_refused_and_never_followed() {
    for (entry, dir) in [
        (".lock", false),
        (".fruix", true),
        (".fruix/db.sqlite", false),
        (".fruix/db.sqlite-wal", false),
        (".fruix/gc.lock", false),
        (".locks", true),
        (".links", true),
    ] {
        let (tmp, store) = populated();
        let victim = tmp.path().join("victim");
        let own = store.join(entry);
        // The victim is the entry itself, moved out: what a follower
        // would find usable.
        std::fs::rename(&own, &victim).unwrap();
        symlink(&victim, &own).unwrap();
        let before = crate::util::snapshot(&victim);
        let victim_bytes = (!dir).then(|| std::fs::read(&victim).unwrap());
        let out = list(&store);
        json_error(
            &out,
            3,
            "fruix never follows a symlink among its store's own files",
        );
        let says = String::from_utf8_lossy(&out.stdout);
        assert!(says.contains(entry), "{entry}: {says}");
        let root = sample_root(tmp.path(), "another");
        let out = run(&mut promote_command(&store, &root, &["--quiet"]));
        assert_eq!(out.status.code(), Some(3), "{entry}: {out:?}");
        assert_eq!(
            crate::util::snapshot(&victim),
            before,
            "{entry}: victim changed"
        );
        if let Some(bytes) = victim_bytes {
            assert_eq!(
                std::fs::read(&victim).unwrap(),
                bytes,
                "{entry}: victim written"
            );
        }
        // Put back, the store is whole again.
        std::fs::remove_file(&own).unwrap();
        std::fs::rename(&victim, &own).unwrap();
        assert_eq!(list(&store).status.code(), Some(0), "{entry}");
    }
}

/// A registry emptied (a truncated file, a deleted one) in a store that had
/// one is refused, saying what was lost and what to do; doing it (moving
/// `.fruix` away) registers the store's objects anew.
#[test]
fn an_emptied_registry_is_refused_until_fruix_is_moved_away() {
    let (tmp, store) = populated();
    let objects = object_names(&store);
    assert!(!objects.is_empty());
    let meta = store.join(".fruix");
    std::fs::write(meta.join("db.sqlite"), "").unwrap();
    for kept in ["db.sqlite-wal", "db.sqlite-shm"] {
        std::fs::remove_file(meta.join(kept)).unwrap();
    }
    let out = list(&store);
    json_error(
        &out,
        3,
        "its signatures, registration times and promoted runs are gone",
    );
    assert_eq!(
        std::fs::metadata(meta.join("db.sqlite")).unwrap().len(),
        0,
        "the refused registry was written"
    );
    std::fs::rename(&meta, tmp.path().join("old-fruix")).unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&list(&store).stdout).unwrap();
    let mut names: Vec<&str> = crate::util::strings_of(&listed, "name");
    names.sort();
    assert_eq!(
        names,
        objects.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

/// A SQLite database that is not fruix's (tables of its own, no schema
/// version) where the registry belongs is refused, and not changed.
#[test]
fn a_foreign_database_as_the_registry_is_refused_and_unchanged() {
    let (_tmp, store) = populated();
    let db = store.join(".fruix/db.sqlite");
    std::fs::remove_file(&db).unwrap();
    for kept in ["db.sqlite-wal", "db.sqlite-shm"] {
        std::fs::remove_file(store.join(".fruix").join(kept)).unwrap();
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE accounts (name TEXT); INSERT INTO accounts VALUES ('a');")
        .unwrap();
    drop(conn);
    let bytes = std::fs::read(&db).unwrap();
    json_error(&list(&store), 3, "not a fruix registry");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        bytes,
        "the foreign database was changed"
    );
}

/// Fills the filesystem holding `dir` with the file `dir/fill`, until a
/// write fails for want of space.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("fill")).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
}

/// Regression: on a full disk `store gc`, the way to free space, failed
/// (`database or disk is full`: SQLite needs room to record what goes).
/// Every store keeps `.fruix/reserved`, which a collection removes first,
/// as Nix's `gc-reserved-space`; the next command that finds room makes
/// it again.
#[test]
fn gc_runs_on_a_full_disk_thanks_to_the_reserved_space() {
    let dir = tempfile::tempdir().unwrap();
    let small = crate::util::SmallFilesystem::mount(dir.path().join("small"), "24m");
    let store = small.path.join("store");
    let root = sample_root(dir.path(), "root");
    promote_quietly(&store, &root);
    let reserved = store.join(".fruix/reserved");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    assert_eq!(size(&reserved), Some(8 << 20), "the reserve is made");
    fill(&small.path);
    let objects = object_names(&store);
    assert!(!objects.is_empty());
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let out = run(crate::util::fruix()
        .args(["store", "gc", "--json", "--store"])
        .arg(&store)
        .arg("--state-dir")
        .arg(dir.path().join("state")));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["objects"].as_array().map(Vec::len),
        Some(objects.len()),
        "{report}"
    );
    assert_eq!(object_names(&store), Vec::<String>::new());
    // Once there is room again, the reserve is back.
    std::fs::remove_file(small.path.join("fill")).unwrap();
    assert_eq!(list(&store).status.code(), Some(0));
    assert_eq!(size(&reserved), Some(8 << 20), "the reserve is made again");
}
