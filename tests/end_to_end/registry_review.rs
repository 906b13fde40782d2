//! Regressions of the registry review: a registry locked by another
//! process (readers do not wait, a wait says so and ends at the first
//! signal), and registries that are not fruix's (a negative schema
//! version, foreign or altered schemas, a missing file, a FIFO or a
//! directory) refused and left as they were; what `store delete` says of an
//! object a running build uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::util::{
    fixture_source, fruix, made_state, on_store, promote_command, promote_report, run,
    run_with_deadline, sample_root, sample_root_of, source_add, spawn_reading_stderr, verify_store,
};

/// A store at `dir/store` holding the miniature source tree as its one
/// object (no root keeps it), and that object's path.
fn store_with_source(dir: &Path) -> (PathBuf, PathBuf) {
    let store = dir.join("store");
    let out = run(&mut source_add(&store, &["--json"]));
    assert!(out.status.success(), "{out:?}");
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let object = PathBuf::from(added["store_path"].as_str().unwrap());
    (store, object)
}

/// The registry of `store`.
fn registry(store: &Path) -> PathBuf {
    store.join(".fruix/db.sqlite")
}

/// A connection of this test to the registry of `store`, waiting for
/// fruix's transactions.
fn connect(store: &Path) -> Connection {
    let conn = Connection::open(registry(store)).unwrap();
    conn.busy_timeout(Duration::from_secs(60)).unwrap();
    conn
}

/// Holds the registry of `store` for writing (`BEGIN IMMEDIATE`, as a
/// `sqlite3` session in a transaction does) until dropped.
fn hold_registry(store: &Path) -> Connection {
    let conn = connect(store);
    conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO promoted_runs VALUES ('held', 1);")
        .unwrap();
    conn
}

/// `fruix store WORDS --store STORE --json ARGS`.
fn store_json(store: &Path, words: &[&str], args: &[&std::ffi::OsStr]) -> std::process::Command {
    let words: Vec<&str> = ["store"].iter().chain(words).copied().collect();
    let mut cmd = on_store(&words, &["--json"], store);
    cmd.args(args);
    cmd
}

/// The JSON error object a failed `--json` command printed.
fn json_error(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON error ({e}): {out:?}"))["error"]
        .clone()
}

/// Regression: every store command opened the registry with `BEGIN
/// IMMEDIATE` (a write lock) to read its schema version, so `store list`,
/// `info` and `query` by the store's owner waited 120 s for any other
/// writer, then failed; a user who could only read the store was answered
/// at once. Readers do not wait for a writer.
#[test]
fn readers_answer_while_another_process_writes_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (store, object) = store_with_source(dir.path());
    let _held = hold_registry(&store);
    let commands: [(&[&str], Vec<&std::ffi::OsStr>); 3] = [
        (&["list"], vec![]),
        (&["info"], vec![object.as_os_str()]),
        (&["query", "--requisites"], vec![object.as_os_str()]),
    ];
    for (words, args) in commands {
        let out = run_with_deadline(
            &mut store_json(&store, words, &args),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{words:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(object.file_name().unwrap().to_str().unwrap()),
            "{words:?}: {text}"
        );
    }
}

/// Starts `cmd`, which must wait for the registry held by this test: it
/// says so once on stderr, then `signal` ends the wait and the command
/// (exit 130, a JSON error saying it was cancelled). Returns its stderr
/// lines after the notice.
fn cancelled_while_waiting(cmd: &mut std::process::Command, signal: libc::c_int) -> String {
    let mut waiting = spawn_reading_stderr(cmd);
    let said = waiting.wait_for_line("waiting for the store's registry");
    waiting.signal(signal);
    let out = waiting.finish(
        Duration::from_secs(60),
        "the command waiting for the registry",
    );
    assert_eq!(out.status.code(), Some(130), "{said}\n{out:?}");
    let error = json_error(&out);
    assert_eq!(error["kind"], "cancelled", "{error:#}");
    assert!(
        error["message"].as_str().unwrap().contains("cancelled"),
        "{error:#}"
    );
    said
}

/// Regression: a command that writes the registry (here `store delete`)
/// while another process held it for writing waited 120 s, said nothing,
/// and went on waiting after Ctrl-C, SIGTERM or SIGHUP (exit 3 at the
/// end). The wait says so, naming the registry, and the first signal ends
/// it: cancelled (exit 130), nothing deleted.
#[test]
fn a_write_waiting_for_the_registry_says_so_and_ends_at_the_first_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, object) = store_with_source(dir.path());
    let state = made_state(dir.path());
    let held = hold_registry(&store);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let mut cmd = fruix();
        cmd.args(["store", "delete", "--json"])
            .args(&state)
            .arg(&object);
        let said = cancelled_while_waiting(&mut cmd, signal);
        assert!(
            said.contains(&registry(&store).display().to_string()),
            "{said}"
        );
    }
    drop(held);
    assert!(object.is_dir(), "a cancelled delete removed the object");
    let listed = run(&mut store_json(&store, &["list"], &[]));
    assert!(
        String::from_utf8_lossy(&listed.stdout)
            .contains(object.file_name().unwrap().to_str().unwrap()),
        "{listed:?}"
    );
}

/// A promotion waiting for the registry to register what it published is
/// past its point of no return: the first signal says it is too late to
/// cancel, and the promotion finishes once the registry is free (giving up
/// there would take back what it published, though it said it finishes).
#[test]
fn a_registration_waiting_for_the_registry_finishes_after_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    promote_report(&store, &sample_root(dir.path(), "first"), &[]);
    let held = hold_registry(&store);
    let root = sample_root_of(dir.path(), "second", "other-executor");
    let mut promoting = spawn_reading_stderr(&mut promote_command(
        &store,
        &root,
        &["--json", "--no-out-link"],
    ));
    promoting.wait_for_line("waiting for the store's registry");
    promoting.signal(libc::SIGINT);
    promoting.wait_for_line("too late to cancel");
    drop(held);
    let out = promoting.finish(Duration::from_secs(60), "the promotion");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listed = run(&mut store_json(&store, &["list"], &[]));
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("other-executor"),
        "{listed:?}"
    );
    verify_store(&store);
}

/// A registry that needs a migration is written, so opening it waits for
/// a writer as a write does: saying so, and cancelled by the first signal
/// with the registry left at its version.
#[test]
fn a_migration_waiting_for_the_registry_says_so_and_ends_at_the_first_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with_source(dir.path());
    let conn = connect(&store);
    conn.execute_batch("DROP TABLE signatures; PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);
    let held = hold_registry(&store);
    cancelled_while_waiting(&mut store_json(&store, &["list"], &[]), libc::SIGINT);
    drop(held);
    let version: i64 = connect(&store)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1, "a cancelled migration changed the registry");
}

/// Checks that `store list`, `store gc` and `store verify` each refuse the
/// registry of `store` (exit 3, a typed JSON error holding `says`, never a
/// panic) and leave its file byte for byte as it was.
fn refused_unchanged(store: &Path, state: &[std::ffi::OsString], says: &str, case: &str) {
    let before = std::fs::read(registry(store)).unwrap();
    for words in [&["list"][..], &["gc"], &["verify"]] {
        let mut cmd = store_json(store, words, &[]);
        if words == ["gc"] {
            cmd.args(&state[2..]);
        }
        let out = run_with_deadline(&mut cmd, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(3), "{case}: {words:?}: {out:?}");
        let error = json_error(&out);
        assert_eq!(error["kind"], "system-failure", "{case}: {error:#}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{case}: {words:?}: {message}");
        assert!(
            message.contains("move the store's `.fruix` directory away"),
            "{case}: {message}"
        );
    }
    let after = std::fs::read(registry(store)).unwrap();
    assert!(before == after, "{case}: the refused registry was changed");
}

/// Regression: `PRAGMA user_version = -1` made every store command panic
/// (exit 101, no JSON error): the version indexed the migrations.
#[test]
fn a_negative_schema_version_is_refused_as_not_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with_source(dir.path());
    let state = made_state(dir.path());
    for version in [-1, i64::from(i32::MIN)] {
        let conn = connect(&store);
        conn.pragma_update(None, "user_version", version).unwrap();
        drop(conn);
        refused_unchanged(&store, &state, "not a fruix registry", &version.to_string());
    }
}

/// Regression: only a database at version 0 had its schema checked. One
/// of another program at version 1 was migrated (a `signatures` table
/// added, its version set to 2) before a raw `no such table: objects`; one
/// at version 2 failed the same way; and a registry carrying a trigger (one
/// that deletes every reference recorded) was used as it was, `store
/// verify --repair` then claiming references recorded that were not. Each
/// is refused, untouched.
#[test]
fn a_registry_whose_schema_is_not_this_fruixs_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with_source(dir.path());
    let state = made_state(dir.path());
    let pristine = dir.path().join("pristine.sqlite");
    connect(&store)
        .execute("VACUUM INTO ?1", [pristine.to_str().unwrap()])
        .unwrap();
    let foreign =
        |version: i64| format!("CREATE TABLE settings (k, v); PRAGMA user_version = {version};");
    let cases = [
        ("a foreign database at version 1", foreign(1), true),
        ("a foreign database at version 2", foreign(2), true),
        (
            "a trigger",
            "CREATE TRIGGER evil AFTER INSERT ON refs BEGIN DELETE FROM refs WHERE referrer = NEW.referrer AND reference = NEW.reference; END;".into(),
            false,
        ),
        (
            "a view",
            "CREATE VIEW names AS SELECT name FROM objects;".into(),
            false,
        ),
        ("a table of its own", "CREATE TABLE extra (x);".into(), false),
        ("an index missing", "DROP INDEX refs_reference;".into(), false),
        (
            "a column added",
            "ALTER TABLE objects ADD COLUMN note TEXT;".into(),
            false,
        ),
    ];
    for (case, sql, replaces) in cases {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", registry(&store).display()));
        }
        if !replaces {
            std::fs::copy(&pristine, registry(&store)).unwrap();
        }
        let conn = Connection::open(registry(&store)).unwrap();
        conn.execute_batch(&sql).unwrap();
        drop(conn);
        refused_unchanged(&store, &state, "not a fruix registry", case);
        let conn = Connection::open(registry(&store)).unwrap();
        let signatures: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'signatures'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(signatures, i64::from(!replaces), "{case}: migrated");
    }
}

/// Regression: a registry deleted in a store that had one was refused,
/// but the refusal left a new, empty `db.sqlite` behind.
#[test]
fn a_missing_registry_is_refused_and_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = store_with_source(dir.path());
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(format!("{}{suffix}", registry(&store).display())).unwrap();
    }
    let out = run(&mut store_json(&store, &["list"], &[]));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let message = json_error(&out)["message"].as_str().unwrap().to_string();
    assert!(message.contains("or was missing"), "{message}");
    assert!(
        registry(&store).symlink_metadata().is_err(),
        "the refusal made a registry file"
    );
}

/// Regression: a FIFO or a directory where the registry is was refused,
/// with a message about symlinks (`fruix never follows a symlink among its
/// store's own files`).
#[test]
fn a_fifo_or_directory_registry_is_named_for_what_it_is() {
    for found in ["FIFO", "directory"] {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = store_with_source(dir.path());
        for suffix in ["", "-wal", "-shm"] {
            std::fs::remove_file(format!("{}{suffix}", registry(&store).display())).unwrap();
        }
        match found {
            "FIFO" => rustix::fs::mknodat(
                rustix::fs::CWD,
                registry(&store),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap(),
            _ => std::fs::create_dir(registry(&store)).unwrap(),
        }
        let out = run_with_deadline(
            &mut store_json(&store, &["list"], &[]),
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(3), "{found}: {out:?}");
        let message = json_error(&out)["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(&format!("is a {found}, not a regular file")),
            "{message}"
        );
        assert!(!message.contains("symlink"), "{found}: {message}");
    }
}

/// Regression: `store delete` of the source object a running build uses
/// (a temporary root keeps it) said `still in use by a running build or
/// promotion (a temporary root); delete that first`: no one can delete a
/// temporary root.
#[test]
fn deleting_what_a_running_build_uses_says_to_wait_for_it() {
    use std::io::{BufRead, BufReader};
    crate::util::require_tool("bmake", "bmake");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let state = made_state(dir.path());
    let mut build = fruix()
        .args(["build", "--executor", "local", "--verbose", "--source"])
        .arg(fixture_source())
        .args(&state)
        .arg("--result-root")
        .arg(dir.path().join("root"))
        .args(["--make-flag=-DNO_ROOT", "--make-flag=HOLD_BUILD=yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stopped = StopOnDrop(build.id() as libc::pid_t);
    let mut lines = BufReader::new(build.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the build's log").unwrap();
        if line.contains("HOLD_BUILD=yes: waiting to be interrupted") {
            break;
        }
    }
    let source = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-freebsd-source-default"))
        .expect("the build's source object");
    let mut cmd = fruix();
    cmd.args(["store", "delete"]).args(&state).arg(&source);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a running build"), "{stderr}");
    assert!(!stderr.contains("delete that first"), "{stderr}");
    assert!(
        stderr.contains("the build or promotion using it ended"),
        "{stderr}"
    );
    drop(stopped);
    assert_eq!(build.wait().unwrap().code(), Some(130));
}

/// Sends SIGINT to the process when dropped (a failed test leaves no
/// build running).
struct StopOnDrop(libc::pid_t);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling this test's own child, not yet reaped.
        unsafe { libc::kill(self.0, libc::SIGINT) };
    }
}

/// Regression: the registry's write-ahead log, kept when the last
/// connection closes, was never emptied but by `store gc`: it grew by
/// about 11 KB an object (133 MB at 10,000 objects), and every command
/// read it whole when it opened the store. Now every command leaves it
/// empty (and there: a user who may only read the store needs it).
#[test]
fn every_command_leaves_the_registrys_log_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let wal = dir.path().join("store/.fruix/db.sqlite-wal");
    for (i, executor) in ["local", "host-initiated", "guest-self-hosted"]
        .iter()
        .enumerate()
    {
        let root = sample_root_of(dir.path(), &format!("root-{i}"), executor);
        let out = run(&mut promote_command(&store, &root, &["--no-out-link"]));
        assert!(out.status.success(), "{out:?}");
        let size = std::fs::metadata(&wal).map(|m| m.len());
        assert_eq!(size.ok(), Some(0), "the log after promotion {i}");
    }
    let out = run(fruix().args(["store", "list", "--store"]).arg(&store));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).ok(), Some(0));
    verify_store(&store);
}
