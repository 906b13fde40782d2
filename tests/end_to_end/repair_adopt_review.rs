//! Regressions from a review of the store's recovery after a killed repair:
//! the unregistered directories a `store verify --repair` killed half-way
//! leaves under objects' names were adopted by the next promotion after a
//! structural check alone, and registered as valid with corrupt content.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fruix_core::testing::{entries_starting_with, TestDir};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::race::{Gate, LIMIT};
use crate::util::{promote_command, run, spawn_silenced, store_verify, wait_with_deadline};

/// The `etc/shells` every world of these tests holds: one pool entry, which
/// the tests corrupt.
const SHELLS: &[u8] = b"/bin/sh\n/bin/csh\n/bin/tcsh\n";

/// What the tests write over [`SHELLS`] in place: as many bytes.
const EVIL: &[u8] = b"EVIL!EVIL!EVIL!EVIL!EVIL!E\n";

/// Result roots promoted into one store, whose worlds differ (each its own
/// `etc/motd`) but share [`SHELLS`].
struct Lab {
    dir: TestDir,
    roots: Vec<PathBuf>,
    /// Each root's world object, in the roots' order.
    worlds: Vec<PathBuf>,
    /// Each root's result bundle, in the roots' order.
    bundles: Vec<PathBuf>,
}

impl Lab {
    /// `n` result roots, each promoted into a new store.
    fn promoted(n: usize) -> Lab {
        let dir = TestDir::new();
        let mut lab = Lab {
            roots: Vec::new(),
            worlds: Vec::new(),
            bundles: Vec::new(),
            dir,
        };
        for i in 0..n {
            let run_id = format!("20260405T2134{:02}Z", 40 + i);
            let root = lab.dir.root(&format!("root{i}"), "local", &run_id, false);
            let world = root.join("artifacts/world");
            fs::write(world.join("etc/shells"), SHELLS).unwrap();
            fs::write(world.join("etc/motd"), format!("world {i}\n")).unwrap();
            let report = lab.promote_ok(&root);
            lab.worlds
                .push(path_in(&report["artifacts"]["world"]["store_path"]));
            lab.bundles.push(path_in(&report["result_store"]));
            lab.roots.push(root);
        }
        lab
    }

    fn store(&self) -> PathBuf {
        self.dir.store()
    }

    /// `fruix native-build promote --json --no-out-link ROOT`.
    fn promote(&self, root: &Path) -> Output {
        run(&mut promote_command(
            &self.store(),
            root,
            &["--json", "--no-out-link"],
        ))
    }

    /// Promotes `root`, which must succeed; returns its report.
    fn promote_ok(&self, root: &Path) -> Value {
        let out = self.promote(root);
        assert!(out.status.success(), "{}", shown(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `fruix store verify --json FLAGS`: its exit status and report.
    fn verify(&self, flags: &[&str]) -> (Option<i32>, Value) {
        let flags = [&["--json"], flags].concat();
        let out = run(&mut store_verify(&self.store(), &flags));
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}): {}", shown(&out)));
        (out.status.code(), report)
    }

    /// The pool entry of [`SHELLS`] (mode 0644 in the roots: `-r`).
    fn shells_entry(&self) -> PathBuf {
        let key = format!("{}-r", hex::encode(Sha256::digest(SHELLS)));
        self.store().join(".links").join(key)
    }

    /// Corrupts the pool entry of [`SHELLS`] in place, and with it every
    /// world's `etc/shells` (the same inode), as a failing disk or a hand
    /// edit would: the same size, mode and modification time, so that only
    /// reading the content tells.
    fn corrupt_shells(&self) {
        use std::io::Write;
        assert_eq!(EVIL.len(), SHELLS.len());
        let entry = self.shells_entry();
        let modified = fs::metadata(&entry).unwrap().modified().unwrap();
        let mut file = fs::OpenOptions::new().write(true).open(&entry).unwrap();
        file.write_all(EVIL).unwrap();
        file.set_modified(modified).unwrap();
        drop(file);
        let (status, report) = self.verify(&[]);
        assert_eq!(status, Some(4), "{report:#}");
        let corrupt: Vec<&str> = report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["ok"] == false)
            .map(|o| o["path"].as_str().unwrap())
            .collect();
        let mut worlds: Vec<&str> = self.worlds.iter().map(|w| w.to_str().unwrap()).collect();
        worlds.sort();
        assert_eq!(corrupt, worlds, "{report:#}");
        assert_eq!(report["pool"]["corrupt"].as_array().unwrap().len(), 1);
    }

    /// Removes the registry's rows of every world and bundle, with SQLite,
    /// leaving their directories where they are: what a repair killed after
    /// it unregistered them, before it removed their directories, leaves.
    fn unregister_worlds_and_bundles(&self) {
        let db = rusqlite::Connection::open(self.store().join(".fruix/db.sqlite")).unwrap();
        db.execute_batch("PRAGMA foreign_keys=ON").unwrap();
        for object in self.bundles.iter().chain(&self.worlds) {
            let name = object.file_name().unwrap().to_str().unwrap();
            let deleted = db
                .execute("DELETE FROM objects WHERE name = ?1", [name])
                .unwrap();
            assert_eq!(deleted, 1, "{name} was registered");
        }
    }

    /// Promotes every root again: each must succeed, making its world anew
    /// (saying so, naming it, when its world is among `leftovers`: it
    /// replaced the unregistered directory at its name); then the store
    /// must verify clean, every world holding [`SHELLS`].
    fn promoted_again_clean(&self, leftovers: &[PathBuf]) {
        for (root, world) in self.roots.iter().zip(&self.worlds) {
            let out = self.promote(root);
            assert!(out.status.success(), "{}", shown(&out));
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["artifacts"]["world"]["new"], true, "{report:#}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let says = format!("warning: {} ", world.display());
            let warned = leftovers.contains(world);
            assert_eq!(stderr.contains(&says), warned, "{says}: {stderr}");
        }
        let (status, report) = self.verify(&[]);
        assert_eq!(status, Some(0), "{report:#}");
        let found = [
            &report["corrupt"],
            &report["pool"]["corrupt"],
            &report["unregistered"],
        ];
        assert_eq!(found, [&json!(0), &json!([]), &json!([])], "{report:#}");
        for world in &self.worlds {
            assert_eq!(fs::read(world.join("etc/shells")).unwrap(), SHELLS);
        }
        let temporaries = entries_starting_with(&self.store(), ".tmp-");
        assert!(temporaries.is_empty(), "temporaries left: {temporaries:?}");
    }
}

/// The path a JSON report gives.
fn path_in(value: &Value) -> PathBuf {
    PathBuf::from(value.as_str().unwrap())
}

/// A command's status, stdout and stderr, for a failed assertion.
fn shown(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Regression: after a repair killed once it had unregistered the corrupt
/// worlds (their directories still in place), `store verify --repair`
/// removed the corrupt pool entry and exited 0, `store verify` exited 0
/// (the worlds merely "unregistered"), and promoting the result roots
/// again adopted each world after a structural check alone (size and
/// mtime unchanged): registered as valid with `EVIL!...` as its
/// `etc/shells`, which the next `store verify` found corrupt (exit 4). A
/// directory the registry does not name is now checked in full before it
/// is registered; failing, it is replaced, with a warning naming it.
#[test]
fn promotion_never_registers_the_corrupt_leftovers_of_a_killed_repair() {
    let lab = Lab::promoted(2);
    lab.corrupt_shells();
    lab.unregister_worlds_and_bundles();
    let (status, report) = lab.verify(&["--repair"]);
    assert_eq!(status, Some(0), "{report:#}");
    assert_eq!(
        report["repair"]["removed_pool_entries"],
        json!([lab.shells_entry()]),
        "{report:#}"
    );
    let (status, report) = lab.verify(&[]);
    assert_eq!(status, Some(0), "{report:#}");
    let mut leftovers: Vec<&PathBuf> = lab.worlds.iter().chain(&lab.bundles).collect();
    leftovers.sort();
    assert_eq!(report["unregistered"], json!(leftovers), "{report:#}");
    lab.promoted_again_clean(&lab.worlds);
}

/// The same leftovers while the corrupt pool entry their `etc/shells` is
/// (the same inode) is still there, as a repair of an earlier fruix,
/// which removed pool entries last, left them: building the world anew
/// would link that entry again (it has the right size and mode, which is
/// all a promotion looks at), and register the corrupt content as valid.
/// The promotion fails instead (exit 4), naming the leftover and the pool
/// entry and saying to repair; it registers nothing. After the repair, it
/// succeeds.
#[test]
fn a_leftover_whose_pool_entry_is_corrupt_too_is_refused_until_repaired() {
    let lab = Lab::promoted(1);
    lab.corrupt_shells();
    lab.unregister_worlds_and_bundles();
    let out = lab.promote(&lab.roots[0]);
    assert_eq!(out.status.code(), Some(4), "{}", shown(&out));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    let entry = lab.shells_entry();
    for says in [
        lab.worlds[0].to_str().unwrap(),
        entry.to_str().unwrap(),
        "fruix store verify --repair",
    ] {
        assert!(message.contains(says), "{says}: {message}");
    }
    let (status, report) = lab.verify(&[]);
    assert_eq!(status, Some(4), "{report:#}");
    assert_eq!(
        report["corrupt"], 0,
        "nothing corrupt registered: {report:#}"
    );
    let (status, report) = lab.verify(&["--repair"]);
    assert_eq!(status, Some(0), "{report:#}");
    lab.promoted_again_clean(&lab.worlds);
}

/// Arms a gate on the directory `dir` of `object` that kills (SIGKILL)
/// the first process to open it once `object` has left its name (renamed
/// away to be removed); every earlier open (a verification's walk) is let
/// through, the gate armed again first. `gates` keeps every gate armed;
/// Regression: `store import` of an archive holding the objects a killed
/// repair left unregistered under their names adopted them after a
/// structural check alone, registering the corrupt world as valid. An
/// import now reads such a directory in full, as a promotion does, and
/// replaces it when it fails.
#[test]
fn an_import_never_registers_the_corrupt_leftovers_of_a_killed_repair() {
    let lab = Lab::promoted(1);
    let archive = lab.dir.join("archive");
    let out = run(&mut crate::util::store_export(
        &lab.store(),
        &archive,
        &["--recursive"],
        &lab.bundles[0],
    ));
    assert!(out.status.success(), "{}", shown(&out));
    lab.corrupt_shells();
    lab.unregister_worlds_and_bundles();
    let (status, report) = lab.verify(&["--repair"]);
    assert_eq!(status, Some(0), "{report:#}");
    let out = run(&mut crate::util::store_import(
        &lab.store(),
        &archive,
        &["--json", "--no-check-sigs"],
    ));
    assert!(out.status.success(), "{}", shown(&out));
    let (status, report) = lab.verify(&[]);
    assert_eq!(status, Some(0), "{report:#}");
    assert_eq!(fs::read(lab.worlds[0].join("etc/shells")).unwrap(), SHELLS);
}

/// `killed` is set once the kill is sent.
fn kill_on_removal(
    dir: PathBuf,
    object: PathBuf,
    gates: Arc<Mutex<Vec<Gate>>>,
    killed: Arc<AtomicBool>,
) {
    let keep = Arc::clone(&gates);
    let gate = Gate::new(&dir.clone(), move |pid| {
        if object.symlink_metadata().is_ok() {
            kill_on_removal(dir, object, gates, killed);
            return;
        }
        // SAFETY: signalling the process the gate holds in `open`.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        killed.store(true, Ordering::SeqCst);
    });
    keep.lock().unwrap().push(gate);
}

/// Regression (the review's own scenario): five result roots whose worlds
/// share a corrupt pool entry; `store verify --repair` killed while it
/// removes the first world, the other four still under their names,
/// unregistered. Promoting the roots again linked the corrupt pool entry
/// (a repair removed pool entries last) into the world built anew and
/// adopted the four leftovers after a structural check: all five
/// registered as valid, corrupt. A repair now removes the corrupt pool
/// entries before it unregisters anything, and a promotion checks an
/// unregistered directory in full before it registers it.
#[test]
fn the_commands_after_a_killed_repair_leave_no_corrupt_object_registered() {
    let lab = Lab::promoted(5);
    lab.corrupt_shells();
    let mut worlds = lab.worlds.clone();
    worlds.sort();
    let first = worlds[0].clone();
    let gates = Arc::new(Mutex::new(Vec::new()));
    let killed = Arc::new(AtomicBool::new(false));
    kill_on_removal(
        first.join("usr"),
        first.clone(),
        Arc::clone(&gates),
        Arc::clone(&killed),
    );
    let child = spawn_silenced(&mut store_verify(&lab.store(), &["--repair"]));
    let out = wait_with_deadline(child, LIMIT, "store verify --repair");
    let gates: Vec<Gate> = std::mem::take(&mut *gates.lock().unwrap());
    for gate in gates {
        gate.finish();
    }
    assert!(killed.load(Ordering::SeqCst), "the repair never removed it");
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    // Killed while removing the first world: the others are leftovers.
    assert!(first.symlink_metadata().is_err(), "{first:?}");
    assert!(worlds[1..].iter().all(|w| w.is_dir()), "{worlds:?}");
    // Going on without repairing again, as the README allows.
    lab.promoted_again_clean(&worlds[1..]);
}
