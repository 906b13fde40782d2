//! Regression of the remote copy review: an object an export (or a copy,
//! or a `store serve` exporting for one) listed, then removed by a
//! `store gc` or `store delete` before the export took the collector's
//! lock, was said to be corrupt: "registered, but its directory is gone;
//! run `fruix store verify --repair`" (exit 4), though the store was
//! fine. It is said as removed meanwhile now, a retryable system failure
//! (3) asking to run the command again; and what a `store serve` session
//! answered its client is kept from collections until the session ends.

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
    fruix_core::remove::remove_tree(&store.join(name)).unwrap();
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

/// Regression: `store serve` answered `valid` (what the store holds, so
/// the copy `--to` sends only the rest) and `closure` unprotected: a
/// collection on the serving side before the import then removed what the
/// answer counted on, and the copy was refused (exit 4, "references ...,
/// which neither the store nor the archive holds"). What a session
/// answered is its temporary root now, until it ends.
#[test]
fn what_a_serve_session_answered_is_kept_from_collections_until_it_ends() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let root = sample_root(dir.path(), "root");
    let report = promote_report(&store, &root, &[]);
    let bundle = report["result_store"].as_str().unwrap();
    let world = report["artifacts"]["world"]["store_path"].as_str().unwrap();
    let name = |p: &str| {
        Path::new(p)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let mut serve = fruix()
        .args(["store", "serve", "--no-check-sigs", "--store"])
        .arg(&store)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = serve.stdin.take().unwrap();
    let mut answers = BufReader::new(serve.stdout.take().unwrap()).lines();
    let mut ask = |request: String| {
        writeln!(input, "{request}").unwrap();
        let answer = answers.next().unwrap().unwrap();
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()
    };
    ask(r#"{"op":"hello","version":1}"#.to_string());
    let valid = ask(format!(r#"{{"op":"valid","names":["{}"]}}"#, name(world)));
    assert_eq!(
        valid["ok"]["valid"],
        serde_json::json!([name(world)]),
        "{valid}"
    );
    let closure = ask(format!(
        r#"{{"op":"closure","names":["{}"]}}"#,
        name(bundle)
    ));
    assert_eq!(
        closure["ok"]["names"].as_array().map(Vec::len),
        Some(5),
        "{closure}"
    );
    // Nothing roots them but the session: a collection keeps them.
    let gc = |what: &str| {
        let out = run(fruix()
            .args(["store", "gc", "--json"])
            .args(made_state(dir.path())));
        assert!(out.status.success(), "{what}: {out:?}");
        object_names(&store)
    };
    assert_eq!(gc("during the session").len(), 5);
    drop(input);
    let out = wait_with_deadline(serve, Duration::from_secs(60), "store serve");
    assert!(out.status.success(), "{out:?}");
    // Its roots ended with it.
    assert_eq!(gc("after the session"), Vec::<String>::new());
    verify_store(&store);
}
