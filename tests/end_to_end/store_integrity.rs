//! The store's promise under attack: every object holds exactly the content
//! its identity names, whatever a hostile result root does while it is being
//! promoted. Races are triggered deterministically (see [`crate::race`]), and
//! after every attack `fruix store verify` passes on the whole store, pool
//! included, and nothing outside the store changed.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fruix_core::testing::write_sample_result_root;

use crate::race::{exchange, Gate, Inotify, SharedMapping};
use crate::util::{
    corrupt_counts, dir_for_root_and_others, fruix, key_values, listing, root_secret_linked_at,
    run, run_ok, snapshot,
};

/// A promote command. Four worker threads whatever the machine, so that a
/// thread held by a gate never stops the others.
fn promote(root: &Path, store: &Path) -> Command {
    let mut cmd = fruix();
    cmd.env("RAYON_NUM_THREADS", "4")
        .args(["native-build", "promote", "--store"])
        .arg(store)
        .arg(root);
    cmd
}

/// A scratch directory with a sample result root in it (`root`, signed or
/// not) and the path of a store beside it (`store`, created empty).
fn scratch(sign: bool) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write_sample_result_root(&root, "local", "20261130T000000Z", sign).unwrap();
    // An existing store: a failed promotion must leave it as it was (one
    // it made itself it removes).
    let store = dir.path().join("store");
    fruix_promote::Store::open(&store).unwrap();
    (dir, root, store)
}

fn verify_store(store: &Path) -> Output {
    run(fruix()
        .args(["store", "verify", "--quiet", "--store"])
        .arg(store))
}

fn assert_store_verifies(store: &Path) {
    let out = verify_store(store);
    assert!(
        out.status.success(),
        "store verify failed after the attack:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pool entries with their link counts.
fn pool(store: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<_> = fs::read_dir(store.join(".links"))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().nlink(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Temporaries anywhere in the store or its pool.
fn temporaries(store: &Path) -> Vec<String> {
    [store.to_path_buf(), store.join(".links")]
        .iter()
        .flat_map(|d| fs::read_dir(d).unwrap().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// Store objects (visible, non-hidden entries).
fn objects(store: &Path) -> Vec<String> {
    fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Checks that a refused promotion left no object, pool entry or temporary.
fn assert_nothing_promoted(store: &Path) {
    assert!(objects(store).is_empty(), "{:?}", objects(store));
    assert!(
        pool(store).is_empty(),
        "pool entries left: {:?}",
        pool(store)
    );
    assert!(temporaries(store).is_empty(), "{:?}", temporaries(store));
}

/// The hash-then-copy race: a file rewritten through a shared writable
/// mapping (which changes neither its size nor its ctime) right after fruix
/// read it. fruix reads each file once and stores the bytes it hashed.
#[test]
fn mapping_writer_after_read_cannot_change_what_is_stored() {
    let (_dir, root, store) = scratch(true);
    let target = root.join("artifacts/world/bin/sh");
    let original = fs::read(&target).unwrap();
    let mut mapping = SharedMapping::new(&target);
    let inotify = Arc::new(Inotify::new());
    let wd = inotify.watch(&target, libc::IN_OPEN | libc::IN_CLOSE_NOWRITE);
    let opens = Arc::new(AtomicUsize::new(0));
    // usr/bin/su is read after bin/sh; its open is held until bin/sh has been
    // closed and rewritten, so the rewrite lands while fruix is mid-promotion.
    let (watcher, counted) = (Arc::clone(&inotify), Arc::clone(&opens));
    let gate = Gate::new(&root.join("artifacts/world/usr/bin/su"), move |_pid| {
        let seen = watcher.wait(|e| e.wd == wd && e.mask & libc::IN_CLOSE_NOWRITE != 0);
        let n = seen.iter().filter(|e| e.mask & libc::IN_OPEN != 0).count();
        counted.fetch_add(n, Ordering::SeqCst);
        mapping.write(&vec![b'X'; original.len()]);
    });
    let out = run_ok(&mut promote(&root, &store));
    let report = gate.finish();
    assert!(report.attacked, "the gate never saw fruix open usr/bin/su");
    assert_eq!(report.opens, 1, "fruix opened usr/bin/su once");
    let later = inotify
        .pending()
        .iter()
        .filter(|e| e.mask & libc::IN_OPEN != 0)
        .count();
    assert_eq!(
        opens.load(Ordering::SeqCst) + later,
        1,
        "fruix opens each file of the result root exactly once"
    );
    assert_eq!(
        fs::read(&target).unwrap(),
        vec![b'X'; b"\x7fELF sample shell\n".len()],
        "the attack rewrote the file in the result root"
    );
    let world = PathBuf::from(&key_values(&out)["world_store"]);
    assert_eq!(
        fs::read(world.join("bin/sh")).unwrap(),
        b"\x7fELF sample shell\n",
        "the store holds the bytes fruix hashed, not the rewrite"
    );
    assert_store_verifies(&store);
}

/// A directory swapped for a symlink (renameat2 RENAME_EXCHANGE) after its
/// parent was listed and before fruix opens it: fruix refuses to descend,
/// writes nothing outside the store and leaves nothing behind.
#[test]
fn directory_swapped_for_a_symlink_mid_walk_is_refused() {
    let (dir, root, store) = scratch(false);
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("keep"), b"outside the result root\n").unwrap();
    let a = root.join("artifacts/world/a");
    fs::create_dir_all(a.join("aaa")).unwrap();
    fs::write(a.join("aaa/f"), b"first\n").unwrap();
    fs::create_dir_all(a.join("sub/deeper")).unwrap();
    fs::write(a.join("sub/deeper/file"), b"inside\n").unwrap();
    symlink(&outside, a.join("sub-link")).unwrap();
    let outside_before = snapshot(&outside);
    // `a` is listed (sub is a directory then); fruix opens a/aaa before a/sub,
    // and that open is held until the names are exchanged.
    let (sub, link) = (a.join("sub"), a.join("sub-link"));
    let gate = Gate::new(&a.join("aaa"), move |_pid| exchange(&sub, &link));
    let out = run(&mut promote(&root, &store));
    let report = gate.finish();
    assert!(report.attacked, "the gate never saw fruix open a/aaa");
    assert_eq!(report.opens, 1, "fruix opened a/aaa once");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a/sub") && stderr.contains("changed while fruix was reading it"),
        "{stderr}"
    );
    assert_eq!(
        snapshot(&outside),
        outside_before,
        "nothing outside changed"
    );
    assert_nothing_promoted(&store);
    assert_store_verifies(&store);
}

/// Regression: an entry removed after its directory was listed (a symlink
/// gone before fruix reads it) failed as a system failure (exit 3, `failed
/// to read symlink`), which a matrix retries on another machine. It is the
/// tree changing under the walk, as a hostile build can make it: exit 4.
#[test]
fn an_entry_removed_mid_walk_is_a_changed_tree_not_a_system_failure() {
    let (_dir, root, store) = scratch(false);
    let a = root.join("artifacts/world/a");
    fs::create_dir_all(a.join("aaa")).unwrap();
    fs::write(a.join("aaa/f"), b"first\n").unwrap();
    symlink("aaa/f", a.join("link")).unwrap();
    // `a` is listed (with its link); fruix opens a/aaa before it reads the
    // link, and that open is held until the link is gone.
    let link = a.join("link");
    let gate = Gate::new(&a.join("aaa"), move |_pid| fs::remove_file(&link).unwrap());
    let out = run(&mut promote(&root, &store));
    let report = gate.finish();
    assert!(report.attacked, "the gate never saw fruix open a/aaa");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a/link") && stderr.contains("changed while fruix was reading it"),
        "{stderr}"
    );
    assert_nothing_promoted(&store);
    assert_store_verifies(&store);
}

/// `store verify` re-hashes the pool; `--repair` removes the corrupt object,
/// its pool entry and the bundle naming it; promoting again recreates correct
/// objects instead of hard-linking the corrupt pool file again.
#[test]
fn repair_removes_corrupt_pool_entries_and_promotion_recreates_them() {
    let (_dir, root, store) = scratch(true);
    let first = key_values(&run_ok(&mut promote(&root, &store)));
    let world = PathBuf::from(&first["world_store"]);
    let sh = world.join("bin/sh");
    fs::set_permissions(&sh, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&sh, b"\x7fELF trojan shell!\n").unwrap();
    fs::set_permissions(&sh, fs::Permissions::from_mode(0o555)).unwrap();

    let out = run(fruix()
        .args(["store", "verify", "--json", "--store"])
        .arg(&store));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(corrupt_counts(&report), (1, 1), "{report}");

    let out = run(fruix()
        .args(["store", "verify", "--repair", "--json", "--store"])
        .arg(&store));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed = |key: &str| report["repair"][key].as_array().unwrap().len();
    assert_eq!(
        (
            removed("removed_objects"),
            removed("removed_pool_entries"),
            removed("removed_bundles")
        ),
        (1, 1, 1),
        "{report}"
    );
    assert!(!world.exists());
    assert!(!Path::new(&first["result_store"]).exists());
    assert_store_verifies(&store);

    let again = key_values(&run_ok(&mut promote(&root, &store)));
    assert_eq!(again["world_store"], first["world_store"]);
    assert_eq!(fs::read(&sh).unwrap(), b"\x7fELF sample shell\n");
    assert_store_verifies(&store);
}

/// A promotion that fails after reading (declared signature mismatch) removes
/// the pool entries it created.
#[test]
fn failed_promotion_removes_the_pool_entries_it_created() {
    let (_dir, root, store) = scratch(true);
    fs::write(
        root.join("artifacts/kernel/boot/kernel/extra.ko"),
        b"unsigned\n",
    )
    .unwrap();
    let out = run(&mut promote(&root, &store));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tree signature mismatch"));
    assert_nothing_promoted(&store);
}

/// `kill -9` in the middle of a promotion leaves pool entries nothing links;
/// the next promotion removes them, with the killed one's work directory.
#[test]
fn leftovers_of_a_killed_promotion_are_removed_by_the_next() {
    let (dir, root, store) = scratch(true);
    fs::create_dir_all(store.join(".links")).unwrap();
    let inotify = Inotify::new();
    // A pool entry gets its name by a rename (IN_MOVED_TO).
    let links = inotify.watch(&store.join(".links"), libc::IN_MOVED_TO | libc::IN_CREATE);
    // Held in the open of usr/bin/su until another file has entered the pool;
    // then killed.
    let gate = Gate::new(&root.join("artifacts/world/usr/bin/su"), move |pid| {
        inotify.wait(|e| e.wd == links && !e.name.starts_with(b".tmp-"));
        // SAFETY: sending SIGKILL to the promotion we started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    });
    let killed = promote(&root, &store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let report = gate.finish();
    assert!(report.attacked);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed),
        Some(libc::SIGKILL)
    );
    let orphans: Vec<_> = pool(&store).into_iter().filter(|(_, n)| *n == 1).collect();
    assert!(
        !orphans.is_empty(),
        "the kill left no unlinked pool entry to clean up"
    );
    assert!(
        !temporaries(&store).is_empty(),
        "the kill left its work directory"
    );

    let other = dir.path().join("other");
    write_sample_result_root(&other, "host-initiated", "20261130T000001Z", true).unwrap();
    run_ok(&mut promote(&other, &store));
    assert!(temporaries(&store).is_empty(), "{:?}", temporaries(&store));
    let unlinked: Vec<_> = pool(&store).into_iter().filter(|(_, n)| *n < 2).collect();
    assert!(
        unlinked.is_empty(),
        "unlinked pool entries left: {unlinked:?}"
    );
    assert_store_verifies(&store);
}

/// `store verify` on something that is not a store object, or on a missing
/// store, is a usage error that names it, never "CORRUPT".
#[test]
fn verify_refuses_what_is_not_a_store_object() {
    let (dir, root, store) = scratch(true);
    let world = PathBuf::from(&key_values(&run_ok(&mut promote(&root, &store)))["world_store"]);
    let typo = world.with_file_name(format!("{}0", world.file_name().unwrap().to_string_lossy()));
    // A name an object could have, of no object here, is not in the store.
    let not_object = "not a store object";
    let cases = [
        (Path::new("/etc"), not_object),
        (&world.join("bin"), not_object),
        (&typo, ": not in the store "),
        (&root, not_object),
    ];
    for (path, says) in cases {
        let out = run(fruix()
            .args(["store", "verify", "--store"])
            .arg(&store)
            .arg(path));
        assert_eq!(out.status.code(), Some(2), "{}: {out:?}", path.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("CORRUPT"));
    }
    let missing = dir.path().join("no-such-store");
    let out = run(fruix().args(["store", "verify", "--store"]).arg(&missing));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store at"));
    assert!(!missing.exists(), "verify must not create a store");
    // Regression: an empty directory was made a store (`.fruix`, `.links`,
    // `.lock`, `.locks`) by any command that only reads one, export
    // included; it was no store, as a missing one is none. (`store serve`,
    // into which a client copies, makes one in an empty directory.)
    // Regression: so was a directory holding other things (`~` or `/tmp`
    // given as the store): only one holding `.fruix` or a store object
    // (a store from before the database) is a store.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let home = dir.path().join("home");
    fs::create_dir_all(home.join("sub")).unwrap();
    fs::write(home.join(".profile"), "x").unwrap();
    let name = "/0000000000000000000000000000000000000000-fruix-x";
    let output = dir.path().join("out.nar");
    let reads: [&[&str]; 6] = [
        &["list"],
        &["verify"],
        &["roots"],
        &["gc"],
        &["query", "--references", name],
        &["export", "-o", output.to_str().unwrap(), name],
    ];
    let link = dir.path().join("link");
    let writes: [&[&str]; 2] = [
        &["delete", name],
        &["add-root", name, link.to_str().unwrap()],
    ];
    for (args, at) in reads
        .iter()
        .chain(&writes)
        .flat_map(|a| [(a, &empty), (a, &home)])
    {
        let before = listing(at);
        let out = run(fruix()
            .arg("store")
            .args(*args)
            .arg("--store")
            .arg(at)
            .stdin(Stdio::null()));
        assert_eq!(out.status.code(), Some(2), "{args:?} {at:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no store at"), "{args:?} {at:?}: {stderr}");
        assert_eq!(listing(at), before, "{args:?} made entries in {at:?}");
    }
    assert!(!output.exists() && !link.exists());
    // A store from before the database (objects, no `.fruix`) is one.
    let legacy = dir.path().join("legacy");
    fs::create_dir_all(legacy.join(world.file_name().unwrap())).unwrap();
    run_ok(fruix().args(["store", "list", "--store"]).arg(&legacy));
    // An object named through a relative path is one.
    run_ok(
        fruix()
            .current_dir(&store)
            .args(["store", "verify", "--store", "."])
            .arg(world.file_name().unwrap()),
    );
}

/// Regression: a registry row naming `../victim` (or `/abs`, or a name
/// with a `/` past a valid prefix) made `store gc` remove that directory,
/// outside the store: registry names were joined to the store's path
/// unchecked. Every command reading such a row now refuses the registry
/// (exit 4, an inconsistent store), and nothing outside the store goes.
#[test]
fn a_registry_naming_paths_outside_the_store_is_refused_and_nothing_goes() {
    let (dir, _root, store) = scratch(false);
    let victim = dir.path().join("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("f"), "keep").unwrap();
    let escapes = [
        "../victim".to_string(),
        victim.display().to_string(),
        format!("{}-fruix-x/../../victim", "0".repeat(40)),
    ];
    for name in escapes {
        let db = rusqlite::Connection::open(store.join(".fruix/db.sqlite")).unwrap();
        db.execute("DELETE FROM objects", []).unwrap();
        db.execute(
            "INSERT INTO objects (name, kind, size, registered_at) VALUES (?1, 'artifact', 1, 0)",
            [&name],
        )
        .unwrap();
        drop(db);
        for args in [&["gc"][..], &["list"], &["verify"]] {
            let out = run(fruix().arg("store").args(args).arg("--store").arg(&store));
            assert_eq!(out.status.code(), Some(4), "{name} {args:?}: {out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("which is not a store object name"),
                "{name} {args:?}: {stderr}"
            );
        }
        assert_eq!(
            fs::read_to_string(victim.join("f")).unwrap(),
            "keep",
            "{name}"
        );
    }
}

/// Regression: a registration that failed (the registry full: SQLite says
/// `database or disk is full`) after the objects were published left them
/// in the store, unregistered, holding their pool entries, though the
/// promotion failed. They are taken back: nothing is left but the store as
/// it was. A trigger makes the registry refuse every registration, as a
/// full one does; it is added once the store is open (fruix refuses a
/// registry carrying a trigger when it opens it).
#[test]
fn a_registration_that_fails_takes_back_what_was_published() {
    let (_dir, root, store_dir) = scratch(false);
    let store = fruix_promote::Store::open(&store_dir).unwrap();
    let refuse = |on: bool| {
        let db = rusqlite::Connection::open(store_dir.join(".fruix/db.sqlite")).unwrap();
        db.execute_batch(if on {
            "CREATE TRIGGER full BEFORE INSERT ON objects BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;"
        } else {
            "DROP TRIGGER full;"
        })
        .unwrap();
    };
    refuse(true);
    let options = fruix_promote::PromoteOptions::default();
    let failed = fruix_promote::promote_native_build_result(&root, &store, &options).unwrap_err();
    assert!(
        failed.to_string().contains("database or disk is full"),
        "{failed}"
    );
    assert_eq!(
        failed.exit_status(),
        fruix_core::ExitStatus::SystemFailure,
        "{failed}"
    );
    assert_nothing_promoted(&store_dir);
    // Once the registry takes them, the same promotion succeeds.
    refuse(false);
    drop(store);
    crate::util::run_ok(&mut promote(&root, &store_dir));
    assert_store_verifies(&store_dir);
}

/// Regression: root promoting a user's result root read everything in it
/// into the store, which anyone may read: a hard link to another user's
/// private file (FreeBSD lets a user make one by default) was published
/// world-readable (`source add` refused it already). A file neither the
/// result root owner's nor readable by everyone is refused now (exit 4),
/// naming it, its content never shown, nothing promoted; one readable by
/// everyone is taken.
#[test]
fn root_promoting_a_user_s_result_root_refuses_a_file_its_owner_could_not_read() {
    let dir = dir_for_root_and_others("promotes another user's result root");
    let root = dir.path().join("users-root");
    write_sample_result_root(&root, "local", "20260405T213444Z", false).unwrap();
    let link = root.join("artifacts/world/linked");
    let secret = root_secret_linked_at(dir.path(), "root's secret\n", &link);
    let chown = Command::new("chown")
        .args(["-R", "-h", "65534:65534"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(chown.success());
    // The hard link's owner is the secret's: chown -R changed it too.
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&secret, Some(0), Some(0)).unwrap();
    let store = dir.path().join("store");
    let promote = || {
        run(fruix()
            .args([
                "native-build",
                "promote",
                "--no-out-link",
                "--quiet",
                "--store",
            ])
            .arg(&store)
            .arg(&root))
    };
    let out = promote();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for says in ["world/linked", "cannot read", "user 65534"] {
        assert!(stderr.contains(says), "{says}: {stderr}");
    }
    assert!(!stderr.contains("root's secret"), "{stderr}");
    assert!(!store.exists(), "nothing was promoted, and no store made");
    // Readable by everyone, it is no secret: taken.
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let out = promote();
    assert!(out.status.success(), "{out:?}");
}
