//! Commands running at the same time on one store: a `store gc --dry-run`
//! beside a promotion holding the collector's lock (it reads, so it does
//! not wait; a real collection does), and a second promotion of an object
//! another one is making (it says what it waits for, and Ctrl-C ends the
//! wait).

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use serde_json::Value;

use crate::util::{
    fruix, json_error, object_names, promote_command, promote_report, promoted_sample, sample_root,
    spawn_reading_stderr,
};

/// How long a command may take to end once nothing holds it.
const ENDS: Duration = Duration::from_secs(60);

/// What every notice of a lock wait starts with.
const WAITING: &str = "fruix: waiting for ";

/// `fruix store gc --json --store STORE --state-dir STATE ARGS`.
fn gc(store: &Path, state: &Path, args: &[&str]) -> Command {
    std::fs::create_dir_all(state).unwrap();
    let mut cmd = fruix();
    cmd.args(["store", "gc", "--json", "--store"])
        .arg(store)
        .arg("--state-dir")
        .arg(state)
        .args(args);
    cmd
}

/// The JSON report `out` printed, after checking that it succeeded.
fn report(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {out:?}"))
}

/// Runs `cmd` (`what`, for messages) to its end, failing as soon as it
/// says that it waits for a lock.
fn run_without_waiting(cmd: &mut Command, what: &str) -> Output {
    let reading = spawn_reading_stderr(cmd);
    loop {
        match reading.lines.recv_timeout(ENDS) {
            Ok(line) => assert!(!line.starts_with(WAITING), "{what} waited: {line}"),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("{what} did not end"),
        }
    }
    reading.finish(ENDS, what)
}

/// The paths of the objects a `store gc --json` report lists.
fn listed(report: &Value) -> Vec<&str> {
    let objects = report["objects"].as_array().expect("objects");
    let mut paths: Vec<&str> = objects
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    paths.sort_unstable();
    paths
}

/// Regression: `store gc --dry-run` took the collector's lock exclusively,
/// so anyone who may read the store (and so run a dry run) could stall
/// every promotion and collection by stopping one (Ctrl-Z). A dry run
/// holds it shared: it goes on while a promotion holds it, and removes
/// nothing; a real collection still waits, saying so.
#[test]
fn a_dry_run_of_gc_goes_on_while_a_promotion_holds_the_gc_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state) = (dir.path().join("store"), dir.path().join("state"));
    // Unrooted (no out-link): all garbage.
    promote_report(&store, &sample_root(dir.path(), "root"), &[]);
    let objects = object_names(&store);
    assert!(!objects.is_empty());
    // A promotion under way holds the collector's lock shared.
    let promotion = File::open(store.join(".fruix/gc.lock")).unwrap();
    promotion.lock_shared().unwrap();
    let out = run_without_waiting(&mut gc(&store, &state, &["--dry-run"]), "the dry run");
    let dry = report(&out);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(listed(&dry).len(), objects.len(), "{dry:#}");
    assert_eq!(object_names(&store), objects, "the dry run removed");
    let collection = spawn_reading_stderr(&mut gc(&store, &state, &[]));
    collection.wait_for_line(
        "fruix: waiting for the promotions, imports, exports and verifications using the store to end",
    );
    assert_eq!(object_names(&store), objects, "removed under a promotion");
    drop(promotion);
    let collected = report(&collection.finish(ENDS, "the collection"));
    assert_eq!(listed(&collected), listed(&dry));
    assert_eq!(object_names(&store), Vec::<String>::new());
}

/// What a promotion says while another one makes the same object.
const SAME_OBJECT: &str =
    "fruix: waiting for another promotion, import or `source add` of the same object to end";

/// Regression: a promotion of an object another promotion (or an import)
/// was making waited for its lock silently, and the wait looked like a
/// hang. It says what it waits for, goes on once the other one ends, and
/// gives up at Ctrl-C (exit 130, nothing promoted).
#[test]
fn a_promotion_waiting_for_the_same_object_says_so_and_ctrl_c_ends_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root, first) = promoted_sample(dir.path());
    let bundle = Path::new(first["result_store"].as_str().unwrap());
    let name = bundle.file_name().unwrap().to_str().unwrap();
    // Another promotion of the bundle holds its lock.
    let other = fs::OpenOptions::new()
        .write(true)
        .open(store.join(".locks").join(format!("{name}.lock")))
        .unwrap();
    other.lock().unwrap();
    let again = || promote_command(&store, &root, &["--json", "--no-out-link"]);
    let mut cancelled = spawn_reading_stderr(&mut again());
    cancelled.wait_for_line(SAME_OBJECT);
    cancelled.signal(libc::SIGINT);
    let out = cancelled.finish(ENDS, "the cancelled promotion");
    json_error(&out, 130, "nothing was promoted");
    let waiting = spawn_reading_stderr(&mut again());
    let line = waiting.wait_for_line(SAME_OBJECT);
    assert!(line.contains(name), "the lock is not named: {line}");
    drop(other);
    let second = report(&waiting.finish(ENDS, "the promotion"));
    assert_eq!(second["result_store"], first["result_store"]);
}

/// Regression: flock(2) queues nobody, so a collection waiting for the
/// promotions under way let every promotion that started meanwhile go
/// first: under a steady stream of overlapping promotions (a CI machine) it
/// never got in. A promotion that starts while a collection waits now waits
/// behind it, saying so (for a few seconds at most: see below), and both
/// end once the promotion under way has. (Which of the two then goes first
/// is a matter of those seconds: the unit test
/// `a_shared_gc_hold_waits_behind_a_waiting_collection_unless_nested`
/// checks the order.)
#[test]
fn a_promotion_started_while_a_collection_waits_goes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state) = (dir.path().join("store"), dir.path().join("state"));
    let root = sample_root(dir.path(), "root");
    // Unrooted (no out-link): all garbage.
    promote_report(&store, &root, &[]);
    let objects = object_names(&store);
    assert!(!objects.is_empty());
    // A promotion under way holds the collector's lock shared.
    let promotion = File::open(store.join(".fruix/gc.lock")).unwrap();
    promotion.lock_shared().unwrap();
    let collection = spawn_reading_stderr(&mut gc(&store, &state, &[]));
    collection.wait_for_line(
        "fruix: waiting for the promotions, imports, exports and verifications using the store to end",
    );
    let mut again = promote_command(&store, &root, &["--json", "--no-out-link"]);
    let later = spawn_reading_stderr(&mut again);
    let line = later.wait_for_line(QUEUED);
    assert!(line.contains("gc.lock"), "the lock is not named: {line}");
    assert_eq!(object_names(&store), objects, "removed under a promotion");
    drop(promotion);
    let collected = report(&collection.finish(ENDS, "the collection"));
    assert_eq!(listed(&collected).len(), objects.len(), "{collected:#}");
    report(&later.finish(ENDS, "the later promotion"));
}

/// What a command says while it waits behind a waiting collection.
const QUEUED: &str = "fruix: waiting for the garbage collection (or `store delete`) waiting for the store's users to go first";

/// Whether another process holds `lock` (flock), as far as an exclusive
/// try says.
fn held(lock: &Path) -> bool {
    let file = File::open(lock).unwrap();
    matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock))
}

/// Regression (found by review): with fair waits, `store export | store
/// import` on one store hung for good once a collection came to wait in
/// between. The export holds the collector's lock shared and waits for
/// the import to read its pipe; the collection, waiting for the export,
/// held the turnstile; the import waited there, behind the collection.
/// A shared hold waits behind a collection for a few seconds at most
/// (`TURNSTILE_PATIENCE`), saying so, then goes on: the pipe ends, and so
/// does the collection, which keeps the rooted object.
#[test]
fn an_export_piped_into_an_import_of_its_own_store_ends_while_a_collection_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state) = (dir.path().join("store"), dir.path().join("state"));
    // A source object larger than a pipe holds, rooted.
    let src = dir.path().join("src");
    crate::util::run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(crate::util::fixture_source())
            .arg(&src),
    );
    fs::write(src.join("big"), vec![7u8; 1 << 20]).unwrap();
    let added = crate::util::run_json(
        crate::util::on_store(&["source", "add"], &["--json"], &store).arg(&src),
    );
    let object = added["store_path"].as_str().unwrap().to_string();
    crate::util::run_ok(
        fruix()
            .args(["store", "add-root", "--store"])
            .arg(&store)
            .arg("--state-dir")
            .arg(&state)
            .arg(&object)
            .arg(dir.path().join("kept")),
    );
    let mut export = crate::util::spawn_piped(
        fruix()
            .args(["store", "export", "--store"])
            .arg(&store)
            .arg(&object),
    );
    let gc_lock = store.join(".fruix/gc.lock");
    fruix_core::testing::wait_until("the export holds the collector's lock", || held(&gc_lock));
    let collection = spawn_reading_stderr(&mut gc(&store, &state, &[]));
    collection.wait_for_line(
        "fruix: waiting for the promotions, imports, exports and verifications using the store to end",
    );
    let mut import = fruix();
    import
        .args(["store", "import", "--no-check-sigs", "--store"])
        .arg(&store)
        .arg("-")
        .stdin(export.stdout.take().unwrap());
    let importing = spawn_reading_stderr(&mut import);
    importing.wait_for_line(QUEUED);
    let imported = importing.finish(ENDS, "the import");
    assert!(imported.status.success(), "{imported:?}");
    let exported = crate::util::wait_with_deadline(export, ENDS, "the export");
    assert!(exported.status.success(), "{exported:?}");
    report(&collection.finish(ENDS, "the collection"));
    assert!(Path::new(&object).is_dir(), "the rooted object went");
}
