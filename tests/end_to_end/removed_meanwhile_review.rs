//! Regression of the remote copy review: an object an export (or a copy,
//! or a `store serve` exporting for one) listed, then removed by a
//! `store gc` or `store delete` before the export took the collector's
//! lock, was said to be corrupt: "registered, but its directory is gone;
//! run `fruix store verify --repair`" (exit 4), though the store was
//! fine. It is said as removed meanwhile now, a retryable system failure
//! (3) asking to run the command again.

use std::path::Path;
use std::time::Duration;

use crate::util::*;

/// Unregisters object `name` of `store` and removes its directory, as a
/// collection does (the registry first).
fn collect_by_hand(store: &Path, name: &str) {
    let conn = rusqlite::Connection::open(store.join(".fruix/db.sqlite")).unwrap();
    conn.busy_timeout(Duration::from_secs(60)).unwrap();
    let id = "(SELECT id FROM objects WHERE name = ?1)";
    for sql in [
        format!("DELETE FROM refs WHERE referrer = {id} OR reference = {id}"),
        "DELETE FROM signatures WHERE object = (SELECT id FROM objects WHERE name = ?1)"
            .to_string(),
        "DELETE FROM objects WHERE name = ?1".to_string(),
    ] {
        conn.execute(&sql, [name]).unwrap();
    }
    drop(conn);
    let object = store.join(name);
    run_ok(
        std::process::Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&object),
    );
    std::fs::remove_dir_all(&object).unwrap();
}

#[test]
fn an_export_of_an_object_collected_after_it_was_listed_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let root = sample_root(dir.path(), "root");
    let report = promote_report(&store, &root, &[]);
    let world = report["artifacts"]["world"]["store_path"].as_str().unwrap();
    let name = Path::new(world)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    // The export lists its objects, then waits for the collector's lock.
    let lock = hold_gc_lock(&store);
    let export = spawn_reading_stderr(
        fruix()
            .args(["store", "export", "--json", "--store"])
            .arg(&store)
            .arg("--output")
            .arg(dir.path().join("out.arc"))
            .arg(world),
    );
    export.wait_for_line("fruix: waiting for the garbage collection");
    collect_by_hand(&store, &name);
    drop(lock);
    let out = export.finish(Duration::from_secs(120), "the export");
    let err = stderr_of_exit(&out, 3);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("removed from the store by a `store gc` or `store delete`"),
        "{json:#}"
    );
    assert!(!err.contains("verify --repair"), "{err}");
    assert!(!dir.path().join("out.arc").exists());
}
