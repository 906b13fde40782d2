//! Store follow-ups: `store verify` on references the registry lacks, a
//! repair's wait for the store and a wait for a repair given up at Ctrl-C,
//! an import whose
//! registration fails leaving nothing behind however many objects it
//! published, and a result root this user may not read being a failure of
//! the system, not of the root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fruix_core::testing::write_sample_result_root;
use fruix_promote::{promote_native_build_result, PromoteOptions, Store};
use serde_json::{json, Value};

use crate::util::{
    failed_with, fruix, json_error, object_names, promote_report, promoted_store, require_tool,
    run, run_json, run_ok, sample_root, spawn_reading_stderr, store_import, store_verify,
    verify_store,
};

/// The JSON report `out` printed, after checking that it exited `status`.
fn report(out: &Output, status: i32) -> Value {
    assert_eq!(out.status.code(), Some(status), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {out:?}"))
}

/// A path as the JSON reports give it.
fn path_json(path: &Path) -> Value {
    path.to_str().unwrap().into()
}

/// `store verify --json`'s `references`: `object`'s reference to
/// `reference`, with `problem`.
fn reference_problem(object: &Path, reference: &Path, problem: &str) -> Value {
    json!([{
        "object": path_json(object),
        "reference": path_json(reference),
        "problem": problem,
    }])
}

/// The store path `key` of a promotion's JSON report names.
fn store_path(report: &Value, key: &[&str]) -> PathBuf {
    let value = key.iter().fold(report, |v, k| &v[k]);
    PathBuf::from(value.as_str().unwrap())
}

/// Regression: `store verify` said nothing of a registered object whose
/// `.references` name an object the registry lacks (a registry rebuilt
/// from the objects leaves out one it cannot read, and the references to
/// it). It reports it now (exit 4); `--repair` removes nothing for it and
/// says what to do, and once the object is valid again (a later promotion
/// registered it) records the reference the registry still lacks.
#[test]
fn verify_reports_references_the_registry_lacks_and_repair_removes_nothing_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let first = promote_report(&store, &sample_root(dir.path(), "r1"), &[]);
    let bundle = store_path(&first, &["result_store"]);
    let world = store_path(&first, &["artifacts", "world", "store_path"]);
    // The registry rebuilt from the objects (`.fruix` moved away) while
    // world's manifest could not be read: world is left out, and with it
    // the bundle's reference to it.
    let manifest = world.join(".fruix-manifest.mtree");
    let aside = dir.path().join("manifest");
    fs::rename(&manifest, &aside).unwrap();
    fs::rename(store.join(".fruix"), dir.path().join("old-registry")).unwrap();
    run_ok(fruix().args(["store", "list", "--store"]).arg(&store));
    fs::rename(&aside, &manifest).unwrap();
    fruix_promote::store::set_mtime(&world).unwrap();

    let dangling = reference_problem(&bundle, &world, "not-registered");
    let found = report(&run(&mut store_verify(&store, &["--json"])), 4);
    assert_eq!(found["references"], dangling, "{found:#}");
    assert_eq!(found["corrupt"], 0, "{found:#}");
    assert_eq!(
        found["unregistered"],
        json!([path_json(&world)]),
        "{found:#}"
    );

    let out = run(&mut store_verify(&store, &["--repair"]));
    let stderr = failed_with(
        "a repair of a dangling reference",
        &out,
        4,
        &["`fruix store delete`"],
    );
    assert!(stderr.contains("promote"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("DANGLING {}", bundle.display()))
            && stdout.contains(&format!("references {}", world.display())),
        "{stdout}"
    );
    assert!(
        bundle.is_dir() && world.is_dir(),
        "a repair removed something"
    );
    let repaired = report(&run(&mut store_verify(&store, &["--repair", "--json"])), 4);
    assert_eq!(repaired["references"], dangling, "{repaired:#}");

    // Another run with the same artifacts registers world again; the first
    // bundle's reference to it is still not recorded.
    let again = dir.path().join("r2");
    write_sample_result_root(&again, "guest-self-hosted", "20260406T000000Z", true).unwrap();
    promote_report(&store, &again, &[]);
    let unrecorded = reference_problem(&bundle, &world, "not-recorded");
    let found = report(&run(&mut store_verify(&store, &["--json"])), 4);
    assert_eq!(found["references"], unrecorded, "{found:#}");
    let repaired = report(&run(&mut store_verify(&store, &["--repair", "--json"])), 0);
    assert_eq!(repaired["repair"]["recorded_references"], unrecorded);
    assert_eq!(repaired["repair"]["removed_objects"], json!([]));
    verify_store(&store);
    let references = run_json(
        fruix()
            .args(["store", "query", "--references", "--json", "--store"])
            .arg(&store)
            .arg(&bundle),
    );
    assert!(
        references.to_string().contains(world.to_str().unwrap()),
        "{references}"
    );
}

/// Regression: `store verify --repair` waiting for the other processes
/// using the store to end blocked in flock(2), and Ctrl-C did not end the
/// wait. It says that it waits, and gives up at once at Ctrl-C (exit 130),
/// while the other process still uses the store, having changed nothing.
#[test]
fn ctrl_c_while_a_repair_waits_for_the_store_ends_the_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, promoted) = promoted_store(dir.path());
    // Registered, but gone: something to repair.
    let bundle = store_path(&promoted, &["result_store"]);
    fs::remove_dir_all(&bundle).unwrap();
    // Another process using the store holds its lock shared, as every
    // fruix command does.
    let user = fs::File::open(store.join(".lock")).unwrap();
    user.lock_shared().unwrap();
    let mut repair = spawn_reading_stderr(&mut store_verify(&store, &["--repair", "--json"]));
    repair.wait_for_line("fruix: waiting for the promotions");
    repair.signal(libc::SIGINT);
    let out = repair.finish(Duration::from_secs(30), "the repair");
    json_error(&out, 130, "the store was not changed");
    drop(user);
    let found = report(&run(&mut store_verify(&store, &["--json"])), 4);
    assert_eq!(found["missing"], json!([path_json(&bundle)]), "{found:#}");
    report(&run(&mut store_verify(&store, &["--repair", "--json"])), 0);
    verify_store(&store);
}

/// Regression: a command opening the store while a repair holds it alone
/// waited in flock(2), silently, and Ctrl-C did not end the wait. It says
/// what it waits for, gives up at Ctrl-C (exit 130), and goes on once the
/// repair ends.
#[test]
fn a_command_opening_the_store_during_a_repair_says_so_and_ctrl_c_ends_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = promoted_store(dir.path());
    // A repair holds the store's lock exclusively.
    let repair = fs::File::open(store.join(".lock")).unwrap();
    repair.lock().unwrap();
    let waits = "fruix: waiting for the store's repair";
    let mut cancelled = spawn_reading_stderr(&mut store_verify(&store, &["--json"]));
    cancelled.wait_for_line(waits);
    cancelled.signal(libc::SIGINT);
    let out = cancelled.finish(Duration::from_secs(30), "the verification");
    json_error(&out, 130, "cancelled");
    let waiting = spawn_reading_stderr(&mut store_verify(&store, &["--json"]));
    waiting.wait_for_line(waits);
    drop(repair);
    let out = waiting.finish(Duration::from_secs(30), "the verification");
    assert_eq!(report(&out, 0)["corrupt"], json!(0), "{out:?}");
}

/// More new objects than an import publishes under its locks at once.
const MANY_ROOTS: usize = 52;

/// Regression: an import of more than 256 new objects publishes them a
/// batch at a time, and when its registration failed only the last batch
/// was taken back: the earlier ones stayed, unregistered, until `store gc`.
/// Now nothing the import published stays, and the same import succeeds
/// once the registry accepts it.
#[test]
fn an_import_of_many_objects_whose_registration_fails_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    // 52 runs of executors of their own: 4 artifacts and a bundle each.
    let bundles: Vec<PathBuf> = {
        let store = Store::open(&store_dir).unwrap();
        (0..MANY_ROOTS)
            .map(|i| {
                let root = dir.path().join(format!("root-{i}"));
                write_sample_result_root(&root, &format!("exec-{i}"), "20260405T213444Z", true)
                    .unwrap();
                promote_native_build_result(&root, &store, &PromoteOptions::default())
                    .unwrap()
                    .result_store
            })
            .collect()
    };
    let archive = dir.path().join("many.arc");
    run_ok(
        fruix()
            .args(["store", "export", "--recursive", "--store"])
            .arg(&store_dir)
            .arg("--output")
            .arg(&archive)
            .args(&bundles),
    );
    let objects = object_names(&store_dir);
    assert_eq!(objects.len(), MANY_ROOTS * 5);
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    run_ok(
        fruix()
            .args(["store", "gc", "--store"])
            .arg(&store_dir)
            .arg("--state-dir")
            .arg(dir.path().join("state")),
    );
    assert_eq!(object_names(&store_dir), Vec::<String>::new());

    // The registry refuses every new object: a trigger, added once the
    // import has opened the registry (fruix refuses a registry carrying a
    // trigger when it opens it), before the import reads its archive from
    // stdin.
    let db_path = store_dir.join(".fruix/db.sqlite");
    let mut import = fruix();
    import
        .args(["store", "import", "--no-check-sigs", "--store"])
        .arg(&store_dir)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = import.spawn().unwrap();
    let fds = format!("/proc/{}/fd", child.id());
    crate::util::wait_until("the import has opened the registry", || {
        fs::read_dir(&fds)
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == db_path))
    });
    let db = rusqlite::Connection::open(&db_path).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON objects
         BEGIN SELECT RAISE(ABORT, 'the test refuses registering'); END;",
    )
    .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&fs::read(&archive).unwrap()).unwrap();
    }
    let out = crate::util::wait_with_deadline(child, Duration::from_secs(120), "the import");
    failed_with(
        "a refused registration",
        &out,
        3,
        &["the test refuses registering"],
    );
    let left = object_names(&store_dir);
    assert!(
        left.is_empty(),
        "{} object(s) left, such as {:?}",
        left.len(),
        left.first()
    );
    assert_eq!(hidden_leftovers(&store_dir), Vec::<PathBuf>::new());

    db.execute_batch("DROP TRIGGER refuse;").unwrap();
    drop(db);
    let imported = run_json(&mut store_import(
        &store_dir,
        &archive,
        &["--no-check-sigs", "--json"],
    ));
    assert_eq!(
        imported["imported"].as_array().unwrap().len(),
        objects.len()
    );
    assert_eq!(object_names(&store_dir), objects);
    verify_store(&store_dir);
}

/// The temporaries left in `store` (`.tmp-*`) and the pool entries (and
/// pool temporaries) in `STORE/.links`.
fn hidden_leftovers(store: &Path) -> Vec<PathBuf> {
    let mut left = fruix_core::testing::entries_starting_with(store, ".tmp-");
    left.extend(
        fs::read_dir(store.join(".links"))
            .unwrap()
            .flatten()
            .map(|e| e.path()),
    );
    left
}

/// Promotes `root` into a new store in `dir` as the unprivileged user
/// `nobody` (root reads every file whatever its mode), with `--json`.
fn promote_as_nobody(dir: &Path, root: &Path) -> Output {
    let setpriv = require_tool("setpriv", "util-linux");
    for d in [dir, root] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let store = dir.join("store");
    let _ = fs::create_dir(&store);
    fs::set_permissions(&store, fs::Permissions::from_mode(0o777)).unwrap();
    run(Command::new(setpriv)
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_fruix"))
        .args([
            "native-build",
            "promote",
            "--json",
            "--no-out-link",
            "--store",
        ])
        .arg(&store)
        .arg(root))
}

/// Regression: a result root this user may not read (its `promotion.scm`,
/// an artifact's directory) was refused as an invalid root (exit 4), while
/// the same denial on one of its files was a system failure (exit 3). The
/// root is not wrong; the user running fruix may not read it: exit 3,
/// naming the path and the permissions, and nothing promoted. A directory
/// it may not look into (`artifacts/`) is named itself, not the first
/// entry beneath it that could not be inspected (`artifacts/world`).
#[test]
fn a_result_root_this_user_may_not_read_is_a_system_failure() {
    let dir = tempfile::tempdir().unwrap();
    for (name, unreadable, mode) in [
        ("metadata", "promotion.scm", 0o600),
        ("artifact", "artifacts/kernel", 0o700),
        ("artifacts", "artifacts", 0o700),
    ] {
        let root = sample_root(dir.path(), name);
        let denied = root.join(unreadable);
        fs::set_permissions(&denied, fs::Permissions::from_mode(mode)).unwrap();
        let out = promote_as_nobody(dir.path(), &root);
        let stderr = failed_with(
            name,
            &out,
            3,
            &["Permission denied", "check the permissions"],
        );
        // The directory denied is named, not something beneath it.
        let named = format!("{}:", root.join(unreadable).display());
        assert!(stderr.contains(&named), "{name}: {stderr}");
        json_error(&out, 3, unreadable);
        let error: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(error["error"]["kind"], "system-failure", "{name}: {error}");
        assert_eq!(
            object_names(&dir.path().join("store")),
            Vec::<String>::new()
        );
    }
}
