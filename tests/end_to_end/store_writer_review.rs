//! Regressions from the review of the commands that write a store: a
//! writer given a directory that holds no store, warnings printed beside
//! the live line, and `store verify` comparing the registry with the
//! objects.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

/// A directory standing for `~`: an ordinary file in it, and no store.
fn home_with_a_file(dir: &Path) -> PathBuf {
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("notes.txt"), "mine\n").unwrap();
    home
}

/// Runs `cmd`, which writes a store into `home`: it must be refused as
/// invalid input (exit 2) naming `home`, and leave `home` as it was.
fn refused_leaving_home(what: &str, mut cmd: Command, home: &Path) {
    let before = listing(home);
    let out = run_with_deadline(&mut cmd, std::time::Duration::from_secs(120));
    let stderr = failed_with(
        what,
        &out,
        2,
        &[
            "holds other things but no store",
            &home.display().to_string(),
        ],
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert_eq!(listing(home), before, "{what} wrote into {home:?}");
}

/// Regression: `--store ~` (a directory holding the user's files but no
/// store) given to a command that writes a store made one there, among
/// the user's files (`.fruix`, `.links`, `.locks`, `.lock`, and the
/// objects). Every writer now refuses it as invalid input (exit 2), naming
/// the directory, and leaves it as it was.
#[test]
fn a_writer_refuses_a_directory_that_holds_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_a_file(dir.path());
    let root = sample_root(dir.path(), "root");
    refused_leaving_home(
        "native-build promote",
        promote_command(&home, &root, &["--no-out-link"]),
        &home,
    );
    let mut build = fixture_build_into(fruix(), "local", &home, &dir.path().join("state"));
    build.args(FIXTURE_BUILD_FLAGS).arg("--no-out-link");
    refused_leaving_home("build", build, &home);
    refused_leaving_home("source add", source_add(&home, &[]), &home);
    // An archive from a real store, imported into the directory.
    let store = dir.path().join("store");
    let report = promote_report(&store, &root, &[]);
    let result = report["result_store"].as_str().unwrap();
    let archive = dir.path().join("result.nar");
    run_ok(&mut store_export(
        &store,
        &archive,
        &["--recursive"],
        result,
    ));
    refused_leaving_home(
        "store import",
        store_import(&home, &archive, &["--no-check-sigs"]),
        &home,
    );
    // An empty directory, or a missing one, still gets a store.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for store in [empty, dir.path().join("missing/store")] {
        promote_report(&store, &root, &[]);
        verify_store(&store);
    }
}

/// Regression: the warning of a promotion that removes a leftover (a
/// directory under an object's name the registry does not name, which
/// fails its check) was printed by the store itself, through the live
/// progress line. It now goes through the command, which prints it above
/// that line: still on stderr, exactly once, naming the leftover, and
/// never on stdout, which holds the JSON report alone.
#[test]
fn a_removed_leftover_is_warned_of_once_on_stderr() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (store, root, report) = promoted_sample(dir.path());
    let world = PathBuf::from(report["artifacts"]["world"]["store_path"].as_str().unwrap());
    let bundle = report["result_store"].as_str().unwrap();
    // What a repair killed once it unregistered the world leaves, changed:
    // its manifest gone.
    let db = rusqlite::Connection::open(store.join(".fruix/db.sqlite")).unwrap();
    for object in [Path::new(bundle), &world] {
        let name = object.file_name().unwrap().to_str().unwrap();
        let deleted = db
            .execute("DELETE FROM objects WHERE name = ?1", [name])
            .unwrap();
        assert_eq!(deleted, 1, "{name} was registered");
    }
    drop(db);
    std::fs::set_permissions(&world, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(world.join(".fruix-manifest.mtree")).unwrap();
    let out = run(&mut promote_command(
        &store,
        &root,
        &["--json", "--no-out-link"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(again["artifacts"]["world"]["new"], true, "{again:#}");
    // The world, and the bundle, whose world was missing then.
    for leftover in [&world, Path::new(bundle)] {
        let says = format!("fruix: warning: {} is not registered", leftover.display());
        assert_eq!(stderr.matches(&says).count(), 1, "{stderr}");
    }
    assert_eq!(stderr.matches("removing it").count(), 2, "{stderr}");
    verify_store(&store);
}

/// Sets `column` of object `name`'s row in `store`'s registry to `value`
/// (SQL), as a hand edit would.
fn edit_registry(store: &Path, name: &str, column: &str, value: &str) {
    let db = rusqlite::Connection::open(store.join(".fruix/db.sqlite")).unwrap();
    let sql = format!("UPDATE objects SET {column} = {value} WHERE name = ?1");
    assert_eq!(db.execute(&sql, [name]).unwrap(), 1, "{name} is registered");
}

/// The name of the store object at the JSON path `path`.
fn name_at(path: &serde_json::Value) -> String {
    let path = Path::new(path.as_str().unwrap());
    path.file_name().unwrap().to_str().unwrap().to_string()
}

/// Regression: `store verify` checked each object's content but not the
/// registry's record of it, so a record edited by hand (a tree signature,
/// an executor, a negative size) passed, and `store list` and `info`
/// showed the negative size as 16 EiB. Verify now reports each field that
/// disagrees with the object (exit 4, in --json `records`), `--repair`
/// rewrites the record from the object, and a later verify is clean; an
/// invalid size shows as such.
#[test]
fn verify_reports_and_repairs_a_registry_record_that_disagrees_with_its_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let report = promote_report(&store, &sample_root(dir.path(), "root"), &[]);
    let world = name_at(&report["artifacts"]["world"]["store_path"]);
    let kernel = name_at(&report["artifacts"]["kernel"]["store_path"]);
    let bundle = name_at(&report["result_store"]);
    let zeros = format!("'sha256:{}'", "0".repeat(64));
    edit_registry(&store, &world, "tree_signature", &zeros);
    edit_registry(&store, &kernel, "executor", "'evil'");
    edit_registry(&store, &bundle, "size", "-5");
    // An invalid size is shown so, never wrapped to 16 EiB.
    let list = run_ok(&mut on_store(&["store", "list"], &[], &store));
    assert!(!list.contains("EiB"), "{list}");
    assert!(list.contains("invalid (-5 in the registry"), "{list}");
    let info = run_json(on_store(&["store", "info"], &["--json"], &store).arg(store.join(&bundle)));
    assert_eq!(info[0]["invalid_size"], "-5", "{info:#}");
    assert_eq!(info[0]["size"], 0, "{info:#}");
    // Verify names each field, in text and in JSON, and fails.
    let out = run(&mut store_verify(&store, &[]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    failed_with(
        "store verify",
        &out,
        4,
        &["tree-signature", "executor", "size"],
    );
    for name in [&world, &kernel, &bundle] {
        assert!(
            stdout.contains(&format!("MISMATCH {}", store.join(name).display())),
            "{stdout}"
        );
    }
    let out = run(&mut store_verify(&store, &["--json"]));
    assert_eq!(out.status.code(), Some(4));
    let verified: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut found: Vec<(String, String)> = verified["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                name_at(&m["object"]),
                m["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    let mut expected = vec![
        (world.clone(), "tree-signature".to_string()),
        (kernel.clone(), "executor".to_string()),
        (bundle.clone(), "size".to_string()),
    ];
    expected.sort();
    assert_eq!(found, expected, "{verified:#}");
    // The repair rewrites the records from the objects, and removes none.
    let out = run(&mut store_verify(&store, &["--json", "--repair"]));
    let repaired: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{repaired:#}");
    assert_eq!(
        repaired["repair"]["rewritten_records"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{repaired:#}"
    );
    assert_eq!(repaired["repair"]["removed_objects"], serde_json::json!([]));
    verify_store(&store);
    let list = run_ok(&mut on_store(&["store", "list"], &[], &store));
    assert!(!list.contains("invalid"), "{list}");
    let info = run_json(on_store(&["store", "info"], &["--json"], &store).arg(store.join(&bundle)));
    assert!(info[0]["size"].as_u64().is_some_and(|s| s > 0), "{info:#}");
    assert_eq!(info[0].get("invalid_size"), None, "{info:#}");
}

/// Regression: `store verify PATH` checked a directory the registry does
/// not name as if it were valid (`ok`, exit 0), which `store gc` then
/// removes, and refused a registered object whose directory is gone as
/// not in the store (exit 2). Named objects are reported as a whole-store
/// check reports them: `unregistered` (not checked, not an error) and
/// `MISSING` (exit 4).
#[test]
fn verify_reports_a_named_object_as_the_whole_store_check_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let report = promote_report(&store, &sample_root(dir.path(), "root"), &[]);
    let world = report["artifacts"]["world"]["store_path"].clone();
    let kernel = report["artifacts"]["kernel"]["store_path"].clone();
    // The world unregistered (its bundle first, which references it).
    let db = rusqlite::Connection::open(store.join(".fruix/db.sqlite")).unwrap();
    for object in [&report["result_store"], &world] {
        let deleted = db
            .execute("DELETE FROM objects WHERE name = ?1", [name_at(object)])
            .unwrap();
        assert_eq!(deleted, 1);
    }
    drop(db);
    // `store verify --json OBJECT`, which must exit `status`: its report.
    let verified = |object: &serde_json::Value, status: i32| {
        let out = run(&mut store_verify(
            &store,
            &["--json", object.as_str().unwrap()],
        ));
        assert_eq!(out.status.code(), Some(status), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let json = verified(&world, 0);
    assert_eq!(json["unregistered"], serde_json::json!([world]), "{json:#}");
    assert_eq!(json["checked"], 0, "{json:#}");
    // A registered object whose directory is gone.
    let gone = PathBuf::from(kernel.as_str().unwrap());
    let writable = Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(&gone)
        .status();
    assert!(writable.unwrap().success());
    std::fs::remove_dir_all(&gone).unwrap();
    let json = verified(&kernel, 4);
    assert_eq!(json["missing"], serde_json::json!([kernel]), "{json:#}");
    // Any command naming it says the same, not "not in the store" (exit 2).
    let archive = dir.path().join("archive");
    let kernel = kernel.as_str().unwrap();
    let mut info = on_store(&["store", "info"], &["--json"], &store);
    info.arg(kernel);
    for mut cmd in [info, store_export(&store, &archive, &["--json"], kernel)] {
        let out = run(&mut cmd);
        json_error(&out, 4, "registered, but its directory is gone");
    }
    assert!(!archive.exists());
}
