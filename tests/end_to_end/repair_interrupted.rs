//! A `store verify --repair` killed while it removes objects, and the
//! leftovers of one killed before it renamed each object away first (part
//! of an object left under its name, unregistered): promotion replaces an
//! unregistered directory that fails its check, `store gc` removes one
//! even when a root names it, and a registered object missing its manifest
//! is reported as inconsistent (exit 4), not as a failure of the system.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fruix_core::testing::{entries_starting_with, TestDir};
use serde_json::{json, Value};

use crate::race::{Gate, LIMIT};
use crate::util::{
    fruix, promote_linked, run, run_json, run_ok, spawn_reading_stderr, spawn_silenced,
    wait_with_deadline,
};

/// The link the tests' promotions make: a root of the result bundle.
const LINK: &str = "result";

/// `fruix store SUBCOMMAND --store STORE --state-dir STATE ARGS`.
fn store_command(lab: &TestDir, subcommand: &str, args: &[&str]) -> Command {
    let mut cmd = fruix();
    cmd.args(["store", subcommand, "--store"])
        .arg(lab.store())
        .args(args);
    if ["roots", "gc"].contains(&subcommand) {
        cmd.arg("--state-dir").arg(lab.join("state"));
    }
    cmd
}

/// `fruix native-build promote --json` of `root`, linked at [`LINK`].
fn promote_command(lab: &TestDir, root: &Path) -> Command {
    promote_linked(
        &lab.store(),
        &lab.join("state"),
        &lab.join(LINK),
        root,
        &["--json"],
    )
}

/// A new lab with a sample result root promoted into its store. Returns
/// the lab, the root, and the world object and result bundle the
/// promotion made.
fn promoted_lab() -> (TestDir, PathBuf, PathBuf, PathBuf) {
    let lab = TestDir::new();
    let root = lab.root("root", "local", "20260405T213444Z", false);
    let report = promote(&lab, &root);
    let path = |v: &Value| PathBuf::from(v.as_str().unwrap());
    let world = path(&report["artifacts"]["world"]["store_path"]);
    (lab, root, world, path(&report["result_store"]))
}

/// Promotes `root`, which must succeed; returns the report.
fn promote(lab: &TestDir, root: &Path) -> Value {
    run_json(&mut promote_command(lab, root))
}

/// Promotes `root` again, which makes its world object anew; then the
/// store must be clean ([`verified_clean`]). Returns the report.
fn world_made_anew(lab: &TestDir, root: &Path) -> Value {
    let again = promote(lab, root);
    assert_eq!(again["artifacts"]["world"]["new"], true, "{again:#}");
    verified_clean(lab);
    again
}

/// Makes `path` writable by its owner (store directories and files are not).
fn writable(path: &Path) {
    let mode = path.symlink_metadata().unwrap().permissions().mode();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o200)).unwrap();
}

/// Appends `bytes` to the store file `file`, as one corrupting it would.
fn append(file: &Path, bytes: &[u8]) {
    use std::io::Write;
    writable(file);
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    f.write_all(bytes).unwrap();
}

/// `cp -a FROM TO`.
fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status();
    assert!(status.unwrap().success(), "cp -a {from:?} {to:?}");
}

/// Removes `name` (a file or a tree) from the store directory `dir`.
fn remove_from(dir: &Path, name: &str) {
    writable(dir);
    let path = dir.join(name);
    match path.symlink_metadata().unwrap().is_dir() {
        true => std::fs::remove_dir_all(&path).unwrap(),
        false => std::fs::remove_file(&path).unwrap(),
    }
}

/// Puts the copy `saved` back at `object`, but for `missing` (files or
/// trees in it): as a repair killed half-way used to leave it.
fn put_back_without(saved: &Path, object: &Path, missing: &[&str]) {
    copy_tree(saved, object);
    for name in missing {
        remove_from(object, name);
    }
}

/// `store verify --json` finds nothing corrupt, missing or unregistered,
/// and the store holds no hidden temporary.
fn verified_clean(lab: &TestDir) {
    let report = run_json(&mut store_command(lab, "verify", &["--json"]));
    let found = [
        &report["corrupt"],
        &report["missing"],
        &report["unregistered"],
    ];
    assert_eq!(found, [&json!(0), &json!([]), &json!([])], "{report:#}");
    let temporaries = entries_starting_with(&lab.store(), ".tmp-");
    assert!(temporaries.is_empty(), "temporaries left: {temporaries:?}");
}

/// Corrupts a file of the world object and runs `store verify --repair`,
/// which removes the world object and the bundle naming it. Returns copies
/// of both made before (`saved/world`, `saved/bundle`), to put back as a
/// repair killed half-way used to leave them.
fn repaired_keeping_copies(lab: &TestDir, world: &Path, bundle: &Path) -> (PathBuf, PathBuf) {
    let saved = lab.join("saved");
    std::fs::create_dir(&saved).unwrap();
    let copies = (saved.join("world"), saved.join("bundle"));
    copy_tree(world, &copies.0);
    copy_tree(bundle, &copies.1);
    append(&world.join("etc/motd"), b"corrupt\n");
    run_ok(&mut store_command(lab, "verify", &["--repair", "--quiet"]));
    assert!(
        !world.exists() && !bundle.exists(),
        "the repair removed them"
    );
    copies
}

/// Regression: a repair removed each corrupt object where it was, so one
/// killed meanwhile (the removal of a big world takes seconds) left part of
/// it under its name, unregistered. Promoting the result root again then
/// failed, and a root kept the part from `store gc`. A repair now renames
/// each object to a hidden temporary before removing it.
#[test]
fn a_repair_killed_while_removing_an_object_leaves_no_part_of_it_under_its_name() {
    let (lab, root, world, _) = promoted_lab();
    // Unreadable metadata: verify finds the object inconsistent without
    // walking its tree, so the first to open its `usr` is the removal.
    append(&world.join(".fruix-native-build-object.scm"), b")");
    let gate = Gate::new(&world.join("usr"), |pid| {
        // SAFETY: signalling the process the gate holds in `open`.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    });
    let child = spawn_silenced(&mut store_command(&lab, "verify", &["--repair"]));
    let out = wait_with_deadline(child, LIMIT, "store verify --repair");
    assert!(gate.finish().attacked, "the repair never removed the world");
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    assert!(
        world.symlink_metadata().is_err(),
        "part of the world object stayed under its name"
    );
    assert!(
        !entries_starting_with(&lab.store(), ".tmp-repair-").is_empty(),
        "the world object was renamed to a hidden temporary"
    );
    // The next command alone in the store sweeps the temporary; the
    // promotion recreates what the repair removed.
    world_made_anew(&lab, &root);
}

/// Regression: an unregistered world object without its manifest (what a
/// repair killed half-way left) made every promotion of its result root
/// fail with "failed to open .../.fruix-manifest.mtree" (exit 3). An
/// unregistered directory is no object: promotion replaces it.
#[test]
fn promotion_replaces_the_unregistered_leftovers_of_a_killed_repair() {
    let (lab, root, world, bundle) = promoted_lab();
    let (saved_world, saved_bundle) = repaired_keeping_copies(&lab, &world, &bundle);
    put_back_without(&saved_world, &world, &[".fruix-manifest.mtree", "bin"]);
    put_back_without(&saved_bundle, &bundle, &["artifacts"]);
    // Not valid: reported as unregistered, which is no error.
    let verify = run_json(&mut store_command(&lab, "verify", &["--json"]));
    let mut leftovers = vec![bundle.clone(), world.clone()];
    leftovers.sort();
    assert_eq!(verify["unregistered"], json!(leftovers), "{verify:#}");
    let again = world_made_anew(&lab, &root);
    assert_eq!(again["result_new"], true, "{again:#}");
}

/// Regression: a registered object missing its manifest failed the
/// promotion that found it with "failed to open ..." (exit 3, a system
/// failure). It is an inconsistent object (exit 4), left for `store verify
/// --repair`; promotion never replaces a registered object.
#[test]
fn a_registered_object_missing_its_manifest_is_inconsistent_not_a_system_failure() {
    let (lab, root, world, _) = promoted_lab();
    remove_from(&world, ".fruix-manifest.mtree");
    let out = run(&mut promote_command(&lab, &root));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("store object is inconsistent: .fruix-manifest.mtree is missing"),
        "{stderr}"
    );
    assert!(world.is_dir(), "a registered object was replaced");
    run_ok(&mut store_command(&lab, "verify", &["--repair", "--quiet"]));
    world_made_anew(&lab, &root);
}

/// Regression: `store gc` kept an unregistered bundle (what a repair killed
/// half-way left) because a root named it, and removed the artifacts it
/// names; `store verify` said gc would remove it. An unregistered
/// directory is not valid, whatever names it: gc removes it, and the root
/// is dead.
#[test]
fn gc_removes_an_unregistered_directory_even_when_a_root_names_it() {
    let (lab, root, world, bundle) = promoted_lab();
    let (_, saved_bundle) = repaired_keeping_copies(&lab, &world, &bundle);
    put_back_without(&saved_bundle, &bundle, &["artifacts"]);
    let roots = run_json(&mut store_command(&lab, "roots", &["--json"]));
    assert_eq!(
        roots[0]["dead"], false,
        "its link names the bundle: {roots:#}"
    );
    let verify = run_json(&mut store_command(&lab, "verify", &["--json"]));
    assert_eq!(verify["unregistered"], json!([bundle]), "{verify:#}");
    let gc = run_json(&mut store_command(&lab, "gc", &["--json"]));
    let removed = gc["objects"].as_array().unwrap();
    assert!(
        removed.contains(&json!({"path": bundle, "kind": null, "size": 0})),
        "{gc:#}"
    );
    assert!(!bundle.exists(), "gc kept the unregistered bundle");
    let roots = run_json(&mut store_command(&lab, "roots", &["--json"]));
    assert_eq!(roots[0]["dead"], true, "{roots:#}");
    let again = promote(&lab, &root);
    assert_eq!(again["result_new"], true, "{again:#}");
    verified_clean(&lab);
    let roots = run_json(&mut store_command(&lab, "roots", &["--json"]));
    assert_eq!(roots[0]["dead"], false, "{roots:#}");
}

/// Regression: a repair that waited for the store (another process using
/// it) removed what its verification had found corrupt, by name, even
/// when a collection had removed it meanwhile and a promotion had made it
/// anew, sound: a rooted result bundle, its world object and a pool entry
/// went. Each finding is checked again once the repair holds the store:
/// nothing sound is removed.
#[test]
fn a_repair_removes_nothing_made_anew_sound_while_it_waited() {
    let (lab, root, world, bundle) = promoted_lab();
    append(&world.join("etc/motd"), b"corrupt\n");
    std::fs::remove_file(lab.join(LINK)).unwrap();
    // Another process uses the store: the repair waits for it.
    let user = std::fs::File::open(lab.store().join(".lock")).unwrap();
    user.lock_shared().unwrap();
    let repair = spawn_reading_stderr(&mut store_command(&lab, "verify", &["--repair", "--json"]));
    repair.wait_for_line("fruix: waiting for the promotions");
    // Meanwhile a collection removes the corrupt closure, no longer
    // rooted, and a promotion makes it anew, sound and rooted.
    run_ok(&mut store_command(&lab, "gc", &[]));
    assert!(!world.exists() && !bundle.exists(), "collected");
    promote(&lab, &root);
    assert!(world.exists() && bundle.exists(), "made anew");
    drop(user);
    let out = repair.finish(Duration::from_secs(60), "the repair");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for removed in [
        "removed_objects",
        "removed_bundles",
        "removed_referrers",
        "removed_pool_entries",
        "unregistered",
    ] {
        assert_eq!(report["repair"][removed], json!([]), "{report:#}");
    }
    assert!(world.exists() && bundle.exists(), "a repair removed them");
    verified_clean(&lab);
    let roots = run_json(&mut store_command(&lab, "roots", &["--json"]));
    assert_eq!(
        roots[0]["object"],
        json!(bundle.to_str().unwrap()),
        "{roots:#}"
    );
}
