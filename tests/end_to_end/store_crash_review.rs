//! Regressions of the review of what killed and failing store writers
//! leave, and of how the next command takes it: the sweep after a killed
//! writer leaves no pool entry that no object links; a store made by a
//! command that ran out of file descriptors goes again, and no such system
//! failure is blamed on permissions; an incomplete store is refused by a
//! reader, not silently made whole; a store on a read-only filesystem is
//! said to be that; a directory at a pool entry's name is repaired and
//! replaced; and a `.fruix/temproots` that is not a directory fails `store
//! verify` as it fails the commands that use it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::*;

/// `dir`'s names that start with `.tmp-`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// The pool entries of `store` that no object links (one link).
fn unlinked_pool_entries(store: &Path) -> Vec<String> {
    std::fs::read_dir(store.join(".links"))
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().unwrap().nlink() == 1)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Copies the tree `from` to `to`, every regular file given `trailer` at
/// its end: a source tree whose every file is new to a store.
fn copy_with_trailer(from: &Path, to: &Path, trailer: &str) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_with_trailer(&source, &target, trailer);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source).unwrap(), &target).unwrap();
        } else {
            let mut bytes = std::fs::read(&source).unwrap();
            bytes.extend_from_slice(trailer.as_bytes());
            std::fs::write(&target, bytes).unwrap();
        }
    }
}

/// Regression: after a `source add` killed (SIGKILL) while it built its
/// object, the next command's sweep removed the temporaries but kept the
/// pool entries the killed promotion made whenever it read the journal
/// before the half-built object (the entries still had two links), and
/// `store verify` then called the store fine. The kill comes once the
/// half-built object (its creation seen by inotify) holds most of the
/// tree; every round's tree is new content, and the store directory's
/// order of its temporaries (named after the process) differs by round.
#[test]
fn a_source_add_killed_while_building_leaves_no_unlinked_pool_entry() {
    use crate::race::Inotify;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    run_ok(&mut source_add(&store, &["--quiet"]));
    for round in 0..6 {
        let tree = dir.path().join(format!("tree-{round}"));
        copy_with_trailer(&fixture_source(), &tree, &format!("\n# round {round}\n"));
        let inotify = Inotify::new();
        let created = inotify.watch(&store, libc::IN_CREATE);
        let mut add = on_store(&["source", "add"], &["--quiet"], &store);
        let mut child = spawn_silenced(add.arg(&tree));
        let is_object = |e: &crate::race::Event| {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            e.wd == created && name.starts_with(".tmp-") && name.contains("-freebsd-source-")
        };
        let events = inotify.wait(is_object);
        let name = events.iter().find(|e| is_object(e)).unwrap().name.clone();
        let object = store.join(String::from_utf8(name).unwrap());
        // Its tree is linked in path order: `tools` comes last but one.
        while !object.join("tools").exists() && child.try_wait().unwrap().is_none() {
            std::thread::yield_now();
        }
        child.kill().unwrap();
        let _ = child.wait();
        // The next command, alone in the store, sweeps.
        run_ok(&mut on_store(&["store", "verify"], &["--quiet"], &store));
        assert_eq!(
            unlinked_pool_entries(&store),
            Vec::<String>::new(),
            "round {round}"
        );
        assert_eq!(temporaries(&store), Vec::<String>::new());
        assert_eq!(temporaries(&store.join(".links")), Vec::<String>::new());
    }
}

/// `cmd` run with at most `files` open file descriptors (`ulimit -n`).
fn with_file_limit(cmd: &Command, files: u32) -> Output {
    let limit = files.to_string();
    let script = "ulimit -n \"$1\" && shift && exec \"$@\"";
    run(&mut run_through("sh", &["-c", script, "sh", &limit], cmd))
}

/// Regression: a promotion into a new store that ran out of file
/// descriptors while opening its registry (`ulimit -n 12`) left the store
/// it made (`.fruix`, `.lock`, `.links`, `.locks`, no registry), and
/// running out elsewhere said the store "is not writable ... fix its
/// permissions" or "check that this user may read and write it". At every
/// limit, the promotion succeeds or fails as a system failure (3) that
/// names no permission, leaving no store.
#[test]
fn a_promotion_out_of_file_descriptors_leaves_no_store_and_blames_no_permission() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path(), "root");
    let state = dir.path().join("state");
    let mut outcomes = Vec::new();
    // Below 9, the process fails before it parses its arguments.
    for files in 9..=40 {
        let store = dir.path().join(format!("store-{files}"));
        let state = state.to_str().unwrap();
        let options = ["--json", "--no-out-link", "--state-dir", state];
        let cmd = promote_command(&store, &root, &options);
        let out = with_file_limit(&cmd, files);
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let failed = !out.status.success();
        outcomes.push((files, out.status.code(), failed && store.exists(), said));
    }
    let wrong: Vec<_> = outcomes
        .iter()
        .filter(|(_, code, store_left, said)| {
            !matches!(code, Some(0 | 3))
                || *store_left
                || said.contains("permissions")
                || said.contains("may read and write")
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(
        outcomes.iter().any(|(_, code, _, _)| *code == Some(3)),
        "no limit made the promotion fail: {outcomes:#?}"
    );
}

/// What a command making a store leaves when it fails or is killed before
/// its registry: `.fruix` (empty), `.lock`, `.links` and `.locks`.
fn incomplete_store(store: &Path) {
    for dir in [".fruix", ".links", ".locks"] {
        std::fs::create_dir_all(store.join(dir)).unwrap();
    }
    std::fs::write(store.join(".lock"), "").unwrap();
}

/// Regression: a store left incomplete (no registry, no pool entry, no
/// object) was taken by `store verify` and `store list` for an empty store
/// (exit 0), and made whole by them. Commands that only use a store refuse
/// it now, as invalid input, leaving it as it was; a promotion completes it.
#[test]
fn an_incomplete_store_is_refused_by_readers_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    incomplete_store(&store);
    let before = snapshot(&store);
    for words in [
        &["store", "list"][..],
        &["store", "verify"],
        &["store", "verify", "--repair"],
        &["store", "roots"],
    ] {
        let out = run(&mut on_store(words, &["--json"], &store));
        json_error(&out, 2, "is incomplete");
        assert_eq!(snapshot(&store), before, "{words:?} changed it");
    }
    // A store named relative is said absolute, as other store errors say it.
    let out =
        run(on_store(&["store", "list"], &["--json"], Path::new("store")).current_dir(dir.path()));
    json_error(&out, 2, &format!("store {} is incomplete", store.display()));
    let root = sample_root(dir.path(), "root");
    promote_quietly(&store, &root);
    run_ok(&mut on_store(&["store", "verify"], &["--quiet"], &store));
}

/// Regression: a store on a filesystem mounted read-only (its `-shm` file
/// gone) was refused by readers saying "this user may only read it ... run
/// any fruix store command on the store once as its owner", which root
/// already is; a writer said "fix its permissions". Both now say the
/// filesystem is mounted read-only.
#[test]
fn a_store_on_a_read_only_filesystem_is_said_to_be_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let mount = SmallFilesystem::mount(dir.path().join("ro"), "4m");
    let store = mount.path.join("store");
    let root = sample_root(dir.path(), "root");
    promote_quietly(&store, &root);
    std::fs::remove_file(store.join(".fruix/db.sqlite-shm")).unwrap();
    let remount = run(Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mount.path));
    assert!(remount.status.success(), "{remount:?}");
    let out = run(&mut on_store(&["store", "list"], &["--json"], &store));
    json_error(&out, 3, "mounted read-only");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("as its owner"),
        "{out:?}"
    );
    let other = sample_root(dir.path(), "other");
    let out = run(&mut promote_command(
        &store,
        &other,
        &["--json", "--no-out-link"],
    ));
    json_error(&out, 3, "mounted read-only");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("permissions"),
        "{out:?}"
    );
}

/// The pool key of `content` stored read-only (`<sha256>-r`).
fn read_only_key(content: &[u8]) -> String {
    use sha2::Digest;
    format!("{}-r", hex::encode(sha2::Sha256::digest(content)))
}

/// A directory, holding a read-only directory and a symlink to `outside`,
/// made at `store`'s pool entry `key`.
fn directory_at_entry(store: &Path, key: &str, outside: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let entry = store.join(".links").join(key);
    let _ = std::fs::remove_file(&entry);
    std::fs::create_dir_all(entry.join("sub")).unwrap();
    std::os::unix::fs::symlink(outside, entry.join("link")).unwrap();
    std::fs::set_permissions(entry.join("sub"), std::fs::Permissions::from_mode(0o555)).unwrap();
    entry
}

/// Regression: a directory at a pool entry's name could not be removed by
/// `store verify --repair` ("failed to remove ...: Is a directory"), and a
/// promotion needing that entry failed. The repair removes it (never
/// through the symlink in it), and a promotion replaces it.
#[test]
fn a_directory_at_a_pool_entry_is_repaired_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("kept"), "mine").unwrap();
    let store = dir.path().join("store");
    let root = sample_root(dir.path(), "root");
    promote_quietly(&store, &root);
    let motd = read_only_key(b"FreeBSD 15.0-STABLE\n");
    let entry = directory_at_entry(&store, &motd, &outside);
    let out = run(&mut on_store(&["store", "verify"], &["--json"], &store));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let corrupt = &report["pool"]["corrupt"][0];
    assert_eq!(corrupt["path"], entry.to_str().unwrap(), "{report:#}");
    run_ok(on_store(&["store", "verify"], &["--quiet"], &store).arg("--repair"));
    assert!(entry.symlink_metadata().is_err(), "the directory stayed");
    assert_eq!(std::fs::read(outside.join("kept")).unwrap(), b"mine");
    // A new store, whose first promotion needs that entry.
    let fresh = dir.path().join("fresh");
    let other = dir.path().join("other");
    fruix_core::testing::write_sample_result_root(&other, "local", "20260405T213444Z", false)
        .unwrap();
    std::fs::write(other.join("artifacts/world/etc/motd"), "other\n").unwrap();
    promote_quietly(&fresh, &other);
    let entry = directory_at_entry(&fresh, &motd, &outside);
    promote_quietly(&fresh, &root);
    assert!(entry.metadata().unwrap().is_file(), "not replaced");
    run_ok(&mut on_store(&["store", "verify"], &["--quiet"], &fresh));
    assert_eq!(std::fs::read(outside.join("kept")).unwrap(), b"mine");
}

/// Regression: `store verify` exited 0 on a store whose
/// `.fruix/temproots` is a regular file, while a build and `store gc` then
/// failed with exit status 3. Every command now refuses it the same way.
#[test]
fn a_temproots_that_is_no_directory_fails_verify_as_it_fails_gc() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let root = sample_root(dir.path(), "root");
    promote_quietly(&store, &root);
    let temp_roots = store.join(".fruix/temproots");
    let _ = std::fs::remove_dir_all(&temp_roots);
    std::fs::write(&temp_roots, "").unwrap();
    for words in [&["store", "verify"][..], &["store", "list"]] {
        let out = run(&mut on_store(words, &["--json"], &store));
        json_error(&out, 3, "temproots is a regular file, not a directory");
    }
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("gcroots")).unwrap();
    let flags = ["--json", "--state-dir", state.to_str().unwrap()];
    let mut gc = on_store(&["store", "gc"], &flags, &store);
    json_error(
        &run(&mut gc),
        3,
        "temproots is a regular file, not a directory",
    );
}

/// A promotion of a sample root into `small/store`, a tmpfs of at most
/// `inodes` inodes (`root` and the state directory and out-link are
/// outside it), run with `--json`.
fn promote_on_few_inodes(dir: &Path, root: &Path, inodes: u32) -> (SmallFilesystem, Output) {
    let small = SmallFilesystem::mount_with_options(
        dir.join(format!("small-{inodes}")),
        &format!("size=20m,nr_inodes={inodes}"),
    );
    let store = small.path.join("store");
    let (state, link) = (dir.join("state"), dir.join("res"));
    let out = run(&mut promote_linked(
        &store,
        &state,
        &link,
        root,
        &["--json"],
    ));
    (small, out)
}

/// Regression: a promotion that ran out of inodes while making a new
/// store's skeleton (`.lock`, `.links`, made when the store is opened) left
/// the store's directory (and `.lock`) behind, where one failing later left
/// nothing. It fails as a system failure (3) leaving the filesystem as it
/// was; with room, the same promotion succeeds.
#[test]
fn a_promotion_out_of_inodes_making_the_store_leaves_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path(), "root");
    // The tmpfs's root takes one inode; the store's directory another.
    for inodes in [2, 3] {
        let (small, out) = promote_on_few_inodes(dir.path(), &root, inodes);
        assert_eq!(out.status.code(), Some(3), "nr_inodes={inodes}: {out:?}");
        assert_eq!(
            listing(&small.path),
            Vec::<PathBuf>::new(),
            "nr_inodes={inodes}: {out:?}"
        );
        // With room, the same promotion succeeds.
        let remount = run(Command::new("mount")
            .args(["-o", "remount,nr_inodes=10000"])
            .arg(&small.path));
        assert!(remount.status.success(), "{remount:?}");
        let store = small.path.join("store");
        let (state, link) = (dir.path().join("state"), dir.path().join("res"));
        promote_linked_quietly(&store, &state, &link, &root);
        verify_store(&store);
        std::fs::remove_file(&link).unwrap();
    }
}

/// Regression: a promotion that ran out of inodes while it created the
/// store's registry was said to fail for want of file descriptors or
/// memory ("its permissions let this user read and write it, so the system
/// failed to open it"): it now says the device has no space (SQLite's
/// system error number, ENOSPC), still a system failure (3).
#[test]
fn running_out_of_inodes_making_the_registry_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path(), "root");
    for inodes in 6..=8 {
        let (_small, out) = promote_on_few_inodes(dir.path(), &root, inodes);
        json_error(&out, 3, "No space left on device");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            !said.contains("file descriptors") && !said.contains("memory"),
            "nr_inodes={inodes}: {said}"
        );
    }
}

/// Regression: `store export --output FILE` on a full disk said "failed to
/// write the archive: No space left on device", naming no file. It names
/// the file given (escaped), fails as a system failure (3), and leaves
/// nothing on the full disk; with room, the same export succeeds.
#[test]
fn an_export_to_a_full_disk_names_its_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let root = sample_root(dir.path(), "root");
    let report = promote_report(&store, &root, &[]);
    let bundle = report["result_store"].as_str().unwrap();
    let small = SmallFilesystem::mount(dir.path().join("small"), "8k");
    // A name that escaping changes: it is said as escaped.
    let archive = small.path.join("a\tb.arc");
    let out = run(&mut store_export(
        &store,
        &archive,
        &["--json", "--recursive"],
        bundle,
    ));
    json_error(
        &out,
        3,
        &format!(
            "failed to write {}: No space left on device",
            fruix_core::escape::path(&archive)
        ),
    );
    assert_eq!(listing(&small.path), Vec::<PathBuf>::new());
    drop(small);
    run_ok(&mut store_export(
        &store,
        &archive,
        &["--quiet", "--recursive"],
        bundle,
    ));
    assert!(std::fs::metadata(&archive).unwrap().len() > 8 << 10);
}

/// Writes the file `path` in 4 KiB chunks until its filesystem is full
/// (ENOSPC), as `dd if=/dev/zero of=PATH bs=4k` does.
fn fill_up(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => panic!("filling {}: nothing written", path.display()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// The allocated bytes of `store`'s `.fruix/reserved` (st_blocks * 512),
/// which must exist.
fn reserve_held(store: &Path) -> u64 {
    let reserved = store.join(".fruix/reserved");
    let meta = std::fs::symlink_metadata(&reserved)
        .unwrap_or_else(|e| panic!("the reserve {} is gone: {e}", reserved.display()));
    meta.blocks() * 512
}

/// A store `small/s` on a 12 MiB tmpfs holding two promotions of
/// different content, each with an out-link (`r1`, `r2`, outside it), the
/// second's removed: returns the store, the state directory, and the
/// second's result bundle, which no root keeps.
fn two_promotions_one_unrooted(dir: &Path, small: &SmallFilesystem) -> (PathBuf, PathBuf, PathBuf) {
    let store = small.path.join("s");
    let state = dir.join("st");
    let first = sample_root(dir, "rr1");
    let second = dir.join("rr2");
    fruix_core::testing::write_sample_result_root(&second, "local", "20260405T213444Z", false)
        .unwrap();
    std::fs::write(second.join("artifacts/world/etc/motd"), "other\n").unwrap();
    for (root, link) in [(&first, "r1"), (&second, "r2")] {
        promote_linked_quietly(&store, &state, &dir.join(link), root);
    }
    let bundle = std::fs::read_link(dir.join("r2")).unwrap();
    std::fs::remove_file(dir.join("r2")).unwrap();
    (store, state, bundle)
}

/// After `removing` (a deletion of the unrooted bundle, `delete_bundle`,
/// or a bounded collection) ran on a full disk, the reserve must still hold room, and it must be said when it is
/// not whole; the disk filled again by something else, `store gc` must
/// then still succeed, removing what no root keeps.
fn reserve_survives(dir: &Path, removing: &[&str], delete_bundle: bool) {
    let small = SmallFilesystem::mount(dir.join("m"), "12m");
    let (store, state, bundle) = two_promotions_one_unrooted(dir, &small);
    assert_eq!(reserve_held(&store), 8 << 20, "the reserve is made");
    fill_up(&small.path.join("filler"));
    let flags = ["--state-dir", state.to_str().unwrap()];
    let mut cmd = on_store(removing, &flags, &store);
    cmd.args(delete_bundle.then_some(&bundle));
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let held = reserve_held(&store);
    assert!(held > 0, "the reserve holds nothing");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        held == 8 << 20 || stderr.contains("the disk is nearly full"),
        "a partial reserve ({held} bytes) not said: {stderr}"
    );
    fill_up(&small.path.join("filler3"));
    let gc = run_json(&mut on_store(
        &["store", "gc"],
        &["--json", "--state-dir", state.to_str().unwrap()],
        &store,
    ));
    assert!(
        !gc["objects"].as_array().unwrap().is_empty(),
        "nothing collected: {gc:#}"
    );
    assert!(bundle.symlink_metadata().is_err(), "the bundle stayed");
    assert!(reserve_held(&store) > 0, "the reserve holds nothing");
    verify_store(&store);
}

/// Regression: a `store delete` on a full disk freed less than the
/// registry's write-ahead log grew, so the 8 MiB reserve no longer fit and
/// was removed without a word; once something else filled the disk, the
/// next `store gc` failed (exit 3, "database or disk is full"). The
/// reserve keeps what it could make (the log checkpointed first), and
/// says when it is not whole.
#[test]
fn a_deletion_on_a_full_disk_keeps_room_for_the_next_collection() {
    let dir = tempfile::tempdir().unwrap();
    // The unrooted bundle is deleted: gc then removes the rest of its run.
    reserve_survives(dir.path(), &["store", "delete"], true);
}

/// Regression: as [`a_deletion_on_a_full_disk_keeps_room_for_the_next_collection`],
/// with `store gc --max-freed 1`, which stops after one object.
#[test]
fn a_bounded_collection_on_a_full_disk_keeps_room_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    reserve_survives(dir.path(), &["store", "gc", "--max-freed", "1"], false);
}

/// Regression: `store verify --repair` on a full disk failed (exit 3,
/// "database or disk is full") though 8 MiB were reserved: it removes
/// objects as a collection does, and now releases the reserve first as
/// it does, and makes it again when it ends.
#[test]
fn a_repair_on_a_full_disk_uses_the_reserve() {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let small = SmallFilesystem::mount(dir.path().join("m"), "12m");
    let store = small.path.join("s");
    promote_quietly(&store, &sample_root(dir.path(), "root"));
    let mut entries: Vec<PathBuf> = std::fs::read_dir(store.join(".links"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.metadata().unwrap().len() > 0)
        .collect();
    entries.sort();
    let entry = entries.first().expect("a pool entry with content").clone();
    let mode = entry.metadata().unwrap().permissions().mode();
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode | 0o200)).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap();
    let first = std::fs::read(&entry).unwrap()[0];
    file.write_all_at(&[first ^ 0xff], 0).unwrap();
    drop(file);
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    assert_eq!(reserve_held(&store), 8 << 20, "the reserve is made");
    fill_up(&small.path.join("filler"));
    let out = run(&mut on_store(
        &["store", "verify", "--repair"],
        &["--json"],
        &store,
    ));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let repair = &report["repair"];
    assert_eq!(
        repair["removed_pool_entries"],
        serde_json::json!([entry.to_str().unwrap()]),
        "{report:#}"
    );
    assert!(
        !repair["removed_objects"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert!(
        entry.symlink_metadata().is_err(),
        "the corrupt entry stayed"
    );
    assert!(reserve_held(&store) > 0, "the reserve holds nothing");
    verify_store(&store);
}

/// The bytes free for this user on the filesystem of `path`.
fn free_bytes(path: &Path) -> u64 {
    let s = rustix::fs::statvfs(path).unwrap();
    s.f_bavail * s.f_frsize
}

/// Opening a store on a nearly full disk, with less room than the reserve
/// needs, must not grow the reserve into that room: a promotion that fits
/// there would then fail for want of it. A command that opens the store
/// makes the reserve whole, or leaves it as it was.
#[test]
fn opening_a_store_never_takes_a_nearly_full_disk_s_last_room() {
    let dir = tempfile::tempdir().unwrap();
    let small = SmallFilesystem::mount(dir.path().join("small"), "12m");
    let store = small.path.join("s");
    promote_quietly(&store, &sample_root(dir.path(), "rr1"));
    // No reserve (as in a store made before fruix kept one), and a disk
    // full but for 2 MiB.
    std::fs::remove_file(store.join(".fruix/reserved")).unwrap();
    let room = small.path.join("room");
    std::fs::write(&room, vec![1u8; 2 << 20]).unwrap();
    fill_up(&small.path.join("fill"));
    std::fs::remove_file(&room).unwrap();
    let free = free_bytes(&small.path);
    assert!(free >= 2 << 20, "{free}");
    run_ok(&mut on_store(&["store", "list"], &[], &store));
    assert_eq!(reserve_held(&store), 0, "the reserve took the last room");
    assert_eq!(free_bytes(&small.path), free);
}
