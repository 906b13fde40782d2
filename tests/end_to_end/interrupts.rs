//! Ctrl-C, SIGTERM and SIGHUP at the moments a reviewer picked: each
//! cancels the work itself, which fails through its own failure path
//! (removing its temporaries and new pool entries), says so as every
//! failure is said (the JSON error object too, under `--json`) and exits
//! 130. Never a sleep: the signal goes once fruix is where the test wants
//! it (a line said, a file there), and a fanotify gate (see `race`) holds
//! fruix inside an `open` until it has said that it is cancelling.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use fruix_core::testing::conformance::processes_mentioning;
use fruix_promote::Store;

use crate::race::{Gate, LIMIT};
use crate::sshd::{bind_mounted_fruix, Sshd};
use crate::util::{
    fixture_build, fixture_source, fruix, held_local_build_cancelled, json_error, nothing_promoted,
    object_names, on_store, promote_command, promote_report, promoted_store, require_tool, run_ok,
    sample_root, spawn_reading_stderr, store_and_state, store_export, store_verify, verify_store,
    wait_until, Reading, FIXTURE_BUILD_FLAGS,
};

/// What fruix says once a signal cancelled a command without a live
/// display (a build's display says it its own way).
const CANCELLING: &str = "fruix: cancelling: ";

/// How long a cancelled command may take to end.
const ENDS: Duration = Duration::from_secs(120);

/// Sends `signal` to the thread of process `pid` that waits for signals
/// (named `signals`). Not to the process: the kernel may hand a signal sent
/// to a process to its main thread, and when that thread is the one a gate
/// holds inside an `open` (a wait no signal interrupts), the signal would
/// wait with it, and the gate for fruix to say it took the signal.
fn signal_thread(pid: u32, signal: libc::c_int) {
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    let find = || {
        std::fs::read_dir(&tasks)
            .unwrap()
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c == "signals\n")
            })
            .map(|t| {
                t.file_name()
                    .to_string_lossy()
                    .parse::<libc::pid_t>()
                    .unwrap()
            })
    };
    // A new thread names itself once it runs: the gate may hold fruix's
    // main thread before that.
    fruix_core::testing::wait_until("fruix's thread that waits for signals", || find().is_some());
    let tid = find().expect("found above");
    // SAFETY: tgkill(2) on a thread of the test's own child, not yet reaped.
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, pid as libc::pid_t, tid, signal) };
    assert_eq!(sent, 0, "tgkill: {}", std::io::Error::last_os_error());
}

/// A signal sent to fruix at the first open of a file, which is held
/// until fruix says it is cancelling: whatever fruix does after that
/// open, it does cancelled.
struct Interrupt {
    gate: Gate,
    /// The process to signal (the opener may be another: a copy's other
    /// side).
    pid: mpsc::Sender<u32>,
    /// Lets the open go on.
    go: mpsc::Sender<()>,
}

impl Interrupt {
    /// Sends `signal` at the first open of `path` by another process.
    fn at_open(path: &Path, signal: libc::c_int) -> Interrupt {
        let (pid, target) = mpsc::channel::<u32>();
        let (go, went) = mpsc::channel::<()>();
        let gate = Gate::new(path, move |_opener| {
            let pid = target.recv_timeout(LIMIT).expect("the command started");
            signal_thread(pid, signal);
            // Held until fruix has said it is cancelling (or the test failed).
            let _ = went.recv_timeout(LIMIT);
        });
        Interrupt { gate, pid, go }
    }

    /// Starts `cmd`, which gets SIGINT at its first open of `path`: it
    /// must be cancelled as [`Interrupt::cancelled`] says (`what`, `says`).
    fn ctrl_c_at_open(path: &Path, cmd: &mut Command, what: &str, says: &str) {
        let interrupt = Interrupt::at_open(path, libc::SIGINT);
        let reading = interrupt.spawn(cmd);
        interrupt.cancelled(reading, what, says);
    }

    /// Starts `cmd`, the process the signal goes to.
    fn spawn(&self, cmd: &mut Command) -> Reading {
        let mut reading = spawn_reading_stderr(cmd);
        self.pid.send(reading.child().id()).unwrap();
        reading
    }

    /// [`Interrupt::release_once_cancelling`]; then `reading` (`what`)
    /// must say `fruix: error: cancelled; SAYS`, end within [`ENDS`], and
    /// print the JSON error of exit 130 whose message contains `says`.
    fn cancelled(self, reading: Reading, what: &str, says: &str) {
        self.release_once_cancelling(&reading);
        reading.wait_for_line(&format!("fruix: error: cancelled; {says}"));
        let out = reading.finish(ENDS, what);
        json_error(&out, 130, says);
    }

    /// Waits for `reading` to say it is cancelling, then lets the open go
    /// on; checks that the signal went at that open.
    fn release_once_cancelling(self, reading: &Reading) {
        reading.wait_for_line(CANCELLING);
        self.go.send(()).unwrap();
        let report = self.gate.finish();
        assert!(report.attacked, "the open never came: {report:?}");
    }
}

/// The entries of `dir` whose names start with `.tmp-`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    fruix_core::testing::entries_starting_with(dir, ".tmp-")
}

/// Checks that `store` holds no object, no temporary, and no pool entry
/// (nor pool temporary).
fn left_empty(store: &Path) {
    assert_eq!(object_names(store), Vec::<String>::new());
    assert_eq!(temporaries(store), Vec::<PathBuf>::new());
    let pool = pool_entries(store);
    assert!(pool.is_empty(), "pool entries left: {pool:?}");
}

/// A copy of the miniature source tree at `dir/src`, which only this test
/// opens.
fn own_source(dir: &Path) -> PathBuf {
    let tree = dir.join("src");
    let status = Command::new("cp")
        .arg("-a")
        .arg(fixture_source())
        .arg(&tree)
        .status()
        .unwrap();
    assert!(status.success());
    tree
}

/// A file of the miniature source tree that only reading it into the store
/// opens (the build's checks read the Makefile and `newvers.sh`).
const SOURCE_FILE: &str = "sys/kern/init_main.c";

/// What a command waiting for the collector's lock says.
const WAITING_FOR_GC: &str = "fruix: waiting for the garbage collection";

/// Regression: SIGHUP (the terminal closing) killed fruix with nothing
/// cleaned up, while its make, in a session of its own, never got the
/// hangup and kept running. It cancels as SIGTERM does now.
#[test]
fn a_hangup_stops_a_build_and_its_make_as_sigterm_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_leftovers, _, _) = held_local_build_cancelled(d, &[], libc::SIGHUP, "fruix: cancelling");
    let left = processes_mentioning(d);
    assert!(left.is_empty(), "still running: {left:?}");
    assert!(d.join("root/.fruix-incomplete").exists());
    assert!(nothing_promoted(&d.join("store")));
}

/// Regression: Ctrl-C while `fruix build` promoted was ignored: the build
/// exited 0 with its report. It cancels the promotion now (nothing is
/// promoted, the root is kept for `native-build promote`), exit 130, with
/// the JSON error under `--json`.
#[test]
fn ctrl_c_while_a_build_promotes_cancels_the_promotion_and_keeps_the_root() {
    require_tool("bmake", "bmake");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (store, root, hold) = (d.join("store"), d.join("root"), d.join("hold"));
    let mut cmd = fixture_build(fruix(), "local", d, "root");
    cmd.args(["--jobs", "1", "--json", "--no-out-link"])
        .arg(format!("--make-flag=HOLD_UNTIL={}", hold.display()));
    let mut build = spawn_reading_stderr(&mut cmd);
    // The build holds (its source is in the store): the collector's lock
    // is taken, so the promotion will wait for it once the build is done.
    wait_until("the build holds", || d.join("hold.holding").exists());
    let lock = crate::util::hold_gc_lock(&store);
    std::fs::write(&hold, "").unwrap();
    build.wait_for_line(WAITING_FOR_GC);
    build.signal(libc::SIGINT);
    build.wait_for_line(CANCELLING);
    drop(lock);
    build.wait_for_line("fruix: error: cancelled; the result root");
    let out = build.finish(ENDS, "the build");
    json_error(
        &out,
        130,
        "promote it later with: fruix native-build promote",
    );
    // Regression: the kept root was only in the message; a cancelled
    // build's JSON error names it (`result_root`), here too.
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        error["error"]["result_root"],
        root.to_str().unwrap(),
        "{error}"
    );
    assert!(nothing_promoted(&store));
    assert_eq!(temporaries(&store), Vec::<PathBuf>::new());
    // The root is whole, and promotes.
    assert!(!root.join(".fruix-incomplete").exists());
    let report = promote_report(&store, &root, &[]);
    assert_eq!(
        report["artifacts"].as_object().unwrap().len(),
        4,
        "{report}"
    );
}

/// Regression: Ctrl-C while `fruix build` added its source (before its
/// handler was installed) killed it, leaving the promotion's temporaries
/// and a store it made. The source add is cancelled now: nothing is left.
#[test]
fn ctrl_c_while_a_build_adds_its_source_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = own_source(d);
    let mut cmd = fruix();
    cmd.args(["build", "--executor", "local", "--json", "--source"])
        .arg(&tree)
        .args(store_and_state(d))
        .args(FIXTURE_BUILD_FLAGS);
    let source_file = tree.join(SOURCE_FILE);
    Interrupt::ctrl_c_at_open(&source_file, &mut cmd, "the build", "nothing was built");
    assert!(
        !d.join("store").exists(),
        "the store the build made is gone"
    );
    assert!(!d.join("state/native-builds").exists(), "no run started");
}

/// The world's last file (of a result root's world, or of a world
/// object): the others may be in the pool by the time it is opened.
const LAST_WORLD_FILE: &str = "usr/include/sys/param.h";

/// A new store in `dir` and the sample result root `dir/root`, whose
/// promotion (`--json --no-out-link`) is started, to get `signal` at its
/// open of the world's last file. Returns the store, the root, the
/// interrupt and the promotion.
fn promotion_interrupted(
    dir: &Path,
    signal: libc::c_int,
) -> (PathBuf, PathBuf, Interrupt, Reading) {
    let store = dir.join("store");
    drop(Store::open(&store).unwrap());
    let root = sample_root(dir, "root");
    let file = root.join("artifacts/world").join(LAST_WORLD_FILE);
    let interrupt = Interrupt::at_open(&file, signal);
    let promote = interrupt.spawn(&mut promote_command(
        &store,
        &root,
        &["--json", "--no-out-link"],
    ));
    (store, root, interrupt, promote)
}

/// Regression: `native-build promote` had no cancellation: a signal killed
/// it, leaving `.tmp-promote-*` and pool entries until a later command
/// swept them. Cancelled now, it removes them itself.
#[test]
fn ctrl_c_while_promoting_leaves_no_temporary_and_no_pool_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root, interrupt, promote) = promotion_interrupted(dir.path(), libc::SIGTERM);
    interrupt.cancelled(promote, "the promotion", "nothing was promoted");
    left_empty(&store);
    verify_store(&store);
    promote_report(&store, &root, &[]);
}

/// Regression: `source add` had no cancellation (see above).
#[test]
fn ctrl_c_while_adding_a_source_leaves_no_temporary_and_no_pool_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    drop(Store::open(&store).unwrap());
    let tree = own_source(dir.path());
    let mut add = on_store(&["source", "add"], &["--json"], &store);
    add.arg(&tree);
    let source_file = tree.join(SOURCE_FILE);
    Interrupt::ctrl_c_at_open(
        &source_file,
        &mut add,
        "the source add",
        "nothing was added",
    );
    left_empty(&store);
}

/// Regression: `store verify` had no cancellation. Cancelled now, it
/// fails as cancelled (the JSON error, not a report calling objects it
/// did not finish checking corrupt).
#[test]
fn ctrl_c_while_verifying_fails_as_cancelled_reporting_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = promoted_store(dir.path());
    let mut verify = store_verify(&store, &["--json"]);
    let says = "the store was not changed";
    Interrupt::ctrl_c_at_open(&a_pool_entry(&store), &mut verify, "the verification", says);
    verify_store(&store);
}

/// Regression: `store gc` had no cancellation. Cancelled now, it stops
/// between two removals, says what it removed, and leaves a store that
/// verifies, which the next collection finishes.
#[test]
fn ctrl_c_while_collecting_stops_between_removals_and_says_what_went() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    // Referrers go first: the bundle, whose directory a removal opens.
    let bundle = PathBuf::from(report["result_store"].as_str().unwrap());
    let interrupt = Interrupt::at_open(&bundle, libc::SIGINT);
    let mut cmd = fruix();
    cmd.args(["store", "gc"])
        .args(crate::util::made_state(dir.path()));
    let gc = interrupt.spawn(&mut cmd);
    interrupt.release_once_cancelling(&gc);
    let error = gc.wait_for_line("fruix: error: cancelled; removed 1 object(s)");
    assert!(
        error.ends_with("run `fruix store gc` again to finish"),
        "{error}"
    );
    let out = gc.finish(ENDS, "the collection");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, format!("removed {}\n", bundle.display()));
    verify_store(&store);
    assert_eq!(object_names(&store).len(), 4);
    run_ok(
        fruix()
            .args(["store", "gc"])
            .args(crate::util::made_state(dir.path())),
    );
    assert_eq!(object_names(&store), Vec::<String>::new());
}

/// Regression: a second Ctrl-C exited at once, but under `--json` with
/// nothing on stdout. It prints the JSON error now, as every failure does.
/// The first Ctrl-C comes while fruix opens a file of the root, where a
/// gate holds it, cleaning up, until the second has come.
#[test]
fn a_second_ctrl_c_under_json_prints_the_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, interrupt, mut promote) = promotion_interrupted(dir.path(), libc::SIGINT);
    promote.wait_for_line(CANCELLING);
    signal_thread(promote.child().id(), libc::SIGINT);
    let out = promote.finish(ENDS, "the promotion");
    interrupt.go.send(()).unwrap();
    assert!(interrupt.gate.finish().attacked, "the open never came");
    json_error(
        &out,
        130,
        "cancelled again; exiting without finishing the cleanup",
    );
}

/// Regression: a command waiting for a lock another process holds (the
/// collector's, an object's) noticed Ctrl-C only once it had the lock. It
/// gives up at once now, cleaning up as any cancelled command does, while
/// the lock is still held: a promotion waiting for a collection, and a
/// collection waiting for a promotion.
#[test]
fn ctrl_c_while_waiting_for_a_lock_ends_the_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = promoted_store(dir.path());
    let lock = crate::util::hold_gc_lock(&store);
    let root = sample_root(dir.path(), "again");
    let mut promote = spawn_reading_stderr(&mut promote_command(
        &store,
        &root,
        &["--json", "--no-out-link"],
    ));
    promote.wait_for_line(WAITING_FOR_GC);
    promote.signal(libc::SIGINT);
    let out = promote.finish(ENDS, "the promotion");
    json_error(&out, 130, "nothing was promoted");
    assert_eq!(temporaries(&store), Vec::<PathBuf>::new());
    drop(lock);

    // As a promotion holds it (shared): a collection waits.
    let shared = std::fs::File::open(store.join(".fruix/gc.lock")).unwrap();
    shared.lock_shared().unwrap();
    let mut gc = spawn_reading_stderr(
        fruix()
            .args(["store", "gc", "--json"])
            .args(crate::util::made_state(dir.path())),
    );
    gc.wait_for_line("fruix: waiting for the promotions");
    gc.signal(libc::SIGINT);
    let out = gc.finish(ENDS, "the collection");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "cancelled", "{error}");
    drop(shared);
    verify_store(&store);
}

/// Regression: `store export --output --json`, cancelled, exited with
/// nothing on stdout.
#[test]
fn a_cancelled_export_under_json_prints_the_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let target = dir.path().join("out.arc");
    let lock = crate::util::hold_gc_lock(&store);
    let bundle = report["result_store"].as_str().unwrap();
    let mut export = spawn_reading_stderr(&mut store_export(&store, &target, &["--json"], bundle));
    export.wait_for_line(WAITING_FOR_GC);
    export.signal(libc::SIGTERM);
    let out = export.finish(ENDS, "the export");
    drop(lock);
    json_error(&out, 130, "cancelled; no archive was written");
    assert!(!target.exists());
}

/// Two stores at one path, as `store_copy` makes them: `dir/store` here,
/// and `dir/remote` on the other side, which a fruix in a mount namespace
/// of its own serves over a real `sshd` (see `store_copy`'s docs).
struct TwoStores {
    dir: tempfile::TempDir,
    sshd: Sshd,
    remote_program: PathBuf,
}

impl TwoStores {
    /// The sample result root's objects in the store `on` (`store` or
    /// `remote`), and an empty store on the other side. Returns the world
    /// object's name.
    fn new(on: &str) -> (TwoStores, String) {
        require_tool("unshare", "util-linux");
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = promoted_store(dir.path());
        if on == "remote" {
            std::fs::rename(&store, dir.path().join("remote")).unwrap();
            drop(Store::open(&store).unwrap());
        } else {
            drop(Store::open(&dir.path().join("remote")).unwrap());
        }
        let world = report["artifacts"]["world"]["store_path"].as_str().unwrap();
        let world = Path::new(world).file_name().unwrap().to_string_lossy();
        let remote_program = dir.path().join("remote-fruix");
        bind_mounted_fruix(&remote_program, "", &dir.path().join("remote"), &store);
        let t = TwoStores {
            dir,
            sshd: Sshd::trusted(),
            remote_program,
        };
        (t, world.into_owned())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `fruix store copy --json DIRECTION` of `object` (a name).
    fn copy(&self, direction: &str, object: &str) -> Command {
        let store = self.path("store");
        let flags: &[&str] = match direction {
            "--from" => &["--json", "--no-check-sigs"],
            _ => &["--json"],
        };
        let mut cmd = crate::util::ssh_store_copy(
            &self.sshd,
            flags,
            direction,
            &self.remote_program,
            &store,
            &store,
        );
        cmd.arg(store.join(object));
        cmd
    }
}

/// Regression: `store copy --from` had no cancellation: a signal killed it
/// mid-import, leaving the import's temporaries and pool entries here.
/// Cancelled now, the import keeps nothing.
#[test]
fn ctrl_c_while_copying_from_another_store_keeps_nothing_here() {
    let says = "nothing was copied; this store was not changed";
    ctrl_c_while_copying("remote", "--from", "store", says);
}

/// Regression: `store copy --to` had no cancellation either. Cancelled
/// now, it stops sending: the other side, told the archive ended, keeps
/// nothing of it.
#[test]
fn ctrl_c_while_copying_to_another_store_leaves_nothing_there() {
    let says = "the other store keeps no partial object";
    ctrl_c_while_copying("store", "--to", "remote", says);
}

/// `store copy DIRECTION` of the world object from the store `sender` to the
/// store `receiver` ([`TwoStores`]), which gets Ctrl-C as the sending side
/// opens the world's last file to send it, once the world's other files
/// are on the receiving side: the copy must be cancelled saying `says`
/// ([`Interrupt::cancelled`]), and the receiver keep nothing of it.
fn ctrl_c_while_copying(sender: &str, direction: &str, receiver: &str, says: &str) {
    let (t, world) = TwoStores::new(sender);
    let file = t.path(sender).join(&world).join(LAST_WORLD_FILE);
    Interrupt::ctrl_c_at_open(&file, &mut t.copy(direction, &world), "the copy", says);
    left_empty(&t.path(receiver));
}

/// Every entry of `store`'s pool, its temporaries too.
fn pool_entries(store: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store.join(".links"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// A pool entry of `store`: a file only reading an object's content opens.
pub(crate) fn a_pool_entry(store: &Path) -> PathBuf {
    pool_entries(store)
        .into_iter()
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .expect("a pool entry")
}

/// Regression: a second signal while a cancelled `store export --output`
/// cleaned up exited at once, leaving the archive's temporary
/// (`.NAME.tmp-PID-…`) beside the output for good, and naming it nowhere.
/// The fast exit removes it now, and says so. The first signal comes while
/// fruix opens an object's file for the archive, where a gate holds it
/// until the second has come: the temporary is there then.
#[test]
fn a_second_signal_during_an_export_removes_its_temporary_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("b.nar");
    let partial = || fruix_core::testing::entries_starting_with(&out_dir, ".b.nar.tmp-");
    let (pid, target_pid) = mpsc::channel::<u32>();
    let (went, go) = mpsc::channel::<()>();
    let (seen, partial_then) = mpsc::channel::<Vec<PathBuf>>();
    let gate = {
        let partial_dir = out_dir.clone();
        Gate::new(&a_pool_entry(&store), move |_opener| {
            let pid = target_pid.recv_timeout(LIMIT).expect("the export started");
            let made = fruix_core::testing::entries_starting_with(&partial_dir, ".b.nar.tmp-");
            seen.send(made).unwrap();
            signal_thread(pid, libc::SIGTERM);
            let _ = go.recv_timeout(LIMIT);
        })
    };
    let bundle = report["result_store"].as_str().unwrap();
    let mut export = spawn_reading_stderr(&mut store_export(
        &store,
        &target,
        &["--json", "--recursive"],
        bundle,
    ));
    pid.send(export.child().id()).unwrap();
    let made = partial_then.recv_timeout(LIMIT).expect("the gate opened");
    assert_eq!(
        made.len(),
        1,
        "the temporary is there at the open: {made:?}"
    );
    export.wait_for_line(CANCELLING);
    signal_thread(export.child().id(), libc::SIGINT);
    let out = export.finish(ENDS, "the export");
    went.send(()).unwrap();
    assert!(gate.finish().attacked, "the open never came");
    assert_eq!(partial(), Vec::<PathBuf>::new(), "{out:?}");
    assert!(!target.exists());
    json_error(
        &out,
        130,
        "cancelled again; exiting without finishing the cleanup; removed the unfinished archive",
    );
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.ends_with(&made[0].display().to_string()),
        "{message}"
    );
    verify_store(&store);
}

/// Regression: a cancelled `store gc --json` said what it removed only as
/// counts in its error message. The JSON error object now holds
/// `removed`, shaped as a whole collection's report: exactly the objects
/// that are gone.
#[test]
fn a_cancelled_collection_under_json_lists_what_it_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = promoted_store(dir.path());
    let before = object_names(&store);
    let bundle = PathBuf::from(report["result_store"].as_str().unwrap());
    let interrupt = Interrupt::at_open(&bundle, libc::SIGINT);
    let mut cmd = fruix();
    cmd.args(["store", "gc", "--json"])
        .args(crate::util::made_state(dir.path()));
    let gc = interrupt.spawn(&mut cmd);
    interrupt.release_once_cancelling(&gc);
    let out = gc.finish(ENDS, "the collection");
    json_error(&out, 130, "cancelled; removed 1 object(s)");
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed = &error["error"]["removed"];
    let listed: Vec<String> = removed["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("no removed objects in {error:#}"))
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_string())
        .collect();
    let after = object_names(&store);
    let gone: Vec<String> = before
        .iter()
        .filter(|n| !after.contains(n))
        .map(|n| store.join(n).display().to_string())
        .collect();
    assert_eq!(listed, gone, "{error:#}");
    assert_eq!(gone, vec![bundle.display().to_string()]);
    assert_eq!(removed["dry_run"], false, "{error:#}");
    verify_store(&store);
}
