//! `fruix store verify` as a reviewer found it: false corruption while a
//! garbage collection removed what it was reading, progress lines that
//! counted nothing during the pool pass and then the pool twice, and
//! `--json` paths given in the manifest's mtree encoding. Races and
//! progress are observed deterministically (see [`crate::race`]).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::race::{Gate, Inotify, LIMIT};
use crate::util::{
    corrupt_counts, fixture_source, fruix, made_state, object_names, run, run_ok,
    run_with_deadline, source_add, spawn_reading_stderr, store_verify, Reading,
};

/// Whether `name` in `STORE/.links` is a pool entry (not a temporary).
fn is_pool_entry(name: &str) -> bool {
    !name.starts_with('.')
}

/// The pool entries of `store`, in directory order (the order `verify`
/// reads them in), with their sizes.
fn pool_entries(store: &Path) -> Vec<(PathBuf, u64)> {
    fs::read_dir(store.join(".links"))
        .unwrap()
        .flatten()
        .filter(|e| is_pool_entry(&e.file_name().to_string_lossy()))
        .map(|e| (e.path(), e.metadata().unwrap().len()))
        .collect()
}

/// Waits for the next line of `gc`'s stderr that says it waits for the
/// store's users; false when its stderr ends first (it did not wait).
fn says_it_waits(gc: &Reading) -> bool {
    loop {
        match gc.lines.recv_timeout(LIMIT) {
            Ok(line) if line.contains("waiting for") => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A gate that, when fruix opens `entry`, starts `store gc` on the store
/// and state directory of `dir` ([`store_and_state`]) and holds the open
/// until the collection says it waits (or ends); the collection, and
/// whether it waited, come on the receiver.
fn gc_when_opened(entry: &Path, dir: &Path) -> (Gate, mpsc::Receiver<(Reading, bool)>) {
    let (tx, rx) = mpsc::channel();
    let where_ = made_state(dir);
    let gate = Gate::new(entry, move |_pid| {
        let gc = spawn_reading_stderr(fruix().args(["store", "gc", "--quiet"]).args(&where_));
        let waited = says_it_waits(&gc);
        tx.send((gc, waited)).unwrap();
    });
    (gate, rx)
}

/// Adds the tree `src` to `store` as a source object: its path.
fn add_source(store: &Path, src: &Path) -> PathBuf {
    let mut add = fruix();
    add.args(["source", "add", "--quiet", "--store"])
        .arg(store)
        .arg(src);
    PathBuf::from(run_ok(&mut add).trim())
}

/// A store holding three unrooted source objects (the miniature tree
/// under three names): `store gc` removes them all, and their pool entries.
fn store_of_unrooted_sources(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    for name in ["g1", "g2", "g3"] {
        run_ok(&mut source_add(&store, &["--name", name, "--quiet"]));
    }
    assert_eq!(object_names(&store).len(), 3);
    store
}

/// `verify` reported the pool entries and objects a concurrent `store gc`
/// removed as corrupt (exit 4, "cannot be opened: No such file or
/// directory"), and told the user to repair. It holds the collector's lock
/// shared while it reads, as Nix's `verifyStore` holds the GC lock: here a
/// collection started while verify reads a pool entry waits, saying so,
/// and removes the objects once verify is done.
#[test]
fn verify_alongside_gc_reports_no_false_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of_unrooted_sources(dir.path());
    let (entry, _) = pool_entries(&store).remove(0);
    // Verify is held opening a pool entry while a collection starts.
    let (gate, gc_rx) = gc_when_opened(&entry, dir.path());
    let out = run_with_deadline(&mut store_verify(&store, &["--json"]), LIMIT);
    let report = gate.finish();
    assert!(report.attacked, "verify never read {}", entry.display());
    let (gc, waited) = gc_rx.recv().unwrap();
    let gc = gc.finish(LIMIT, "store gc");
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify found corruption while store gc ran:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["corrupt"], 0, "{json}");
    assert_eq!(json["checked"], 3, "{json}");
    assert!(waited, "store gc did not wait for verify: {gc:?}");
    assert!(gc.status.success(), "{gc:?}");
    assert_eq!(object_names(&store), Vec::<String>::new(), "{gc:?}");
    assert!(pool_entries(&store).is_empty());
}

/// `verify --repair` alongside a collection: verify finds a corrupt pool
/// entry while holding the collector's lock, lets the waiting collection
/// run before it repairs (no deadlock: the repair waits for every other
/// process), and the repair then removes only what is still there.
#[test]
fn verify_repair_alongside_gc_neither_deadlocks_nor_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of_unrooted_sources(dir.path());
    let entries = pool_entries(&store);
    // A file of every source changed in place: its pool entry is corrupt.
    let (corrupt, _) = &entries[entries.len() - 1];
    fs::set_permissions(corrupt, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(corrupt, b"changed\n").unwrap();
    fs::set_permissions(corrupt, fs::Permissions::from_mode(0o444)).unwrap();
    let (entry, _) = &entries[0];
    let (gate, gc_rx) = gc_when_opened(entry, dir.path());
    let out = run_with_deadline(&mut store_verify(&store, &["--repair", "--json"]), LIMIT);
    assert!(gate.finish().attacked);
    let (gc, waited) = gc_rx.recv().unwrap();
    let gc = gc.finish(LIMIT, "store gc");
    assert!(waited, "store gc did not wait for verify: {gc:?}");
    assert!(gc.status.success(), "{gc:?}");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // What verify found is what the store held while it read it.
    assert_eq!(corrupt_counts(&json), (3, 1), "{json}");
    // The collection, which ran between, removed it all; the repair, nothing.
    for removed in ["removed_objects", "removed_pool_entries", "unregistered"] {
        assert_eq!(json["repair"][removed], serde_json::json!([]), "{json}");
    }
    assert_eq!(object_names(&store), Vec::<String>::new());
    assert!(pool_entries(&store).is_empty());
}

/// One `==> verify: N files, BYTES so far ...` line: N and BYTES.
fn parse_progress(line: &str) -> (u64, f64) {
    let rest = line
        .split_once("==> verify: ")
        .unwrap_or_else(|| panic!("not a progress line: {line}"))
        .1;
    let (files, rest) = rest.split_once(' ').unwrap();
    let (_, rest) = rest.split_once(", ").unwrap();
    let (bytes, _) = rest.split_once(" so far").unwrap();
    let (number, unit) = bytes.split_once(' ').unwrap();
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other} in {line}"),
    };
    (
        files.parse().unwrap(),
        number.parse::<f64>().unwrap() * scale,
    )
}

/// The progress verify shows while it is held: the second progress line
/// that starts in `stderr` (a file) after byte `from` (its length when the
/// hold began). The first such line may have been formatted before; the
/// second was formatted after the first was written, while verify was held.
fn progress_while_held(stderr: &Path, from: u64) -> (u64, f64, String) {
    let inotify = Inotify::new();
    inotify.watch(stderr, libc::IN_MODIFY);
    loop {
        let text = fs::read(stderr).unwrap();
        let from = from as usize;
        // Lines starting at or after `from`, complete.
        let start = match from {
            0 => 0,
            _ if text[from - 1] == b'\n' => from,
            _ => match text[from..].iter().position(|b| *b == b'\n') {
                Some(i) => from + i + 1,
                None => text.len(),
            },
        };
        let after = String::from_utf8_lossy(&text[start..]).into_owned();
        let complete: Vec<&str> = after
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n') && l.contains("==> verify: "))
            .collect();
        if let Some(line) = complete.get(1) {
            let (files, bytes) = parse_progress(line);
            return (files, bytes, line.to_string());
        }
        inotify.wait(|_| true);
    }
}

/// A copy of the miniature source tree at `to`.
fn copy_fixture(to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-R")
        .arg(fixture_source())
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Deterministic bytes, different for each `seed`.
fn content(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u64::from(seed) + 1;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

/// Verify's progress said `0 files, 0 B` through the whole pool pass (the
/// pool was counted a chunk at a time, after hashing it), then counted
/// every pool-linked file of the objects again (2.01 GiB of a 1.1 GiB
/// store). Held opening the last pool entry, it has counted every other
/// entry; held at the end of the only object, it has counted each entry
/// once and no more bytes than the pool holds.
#[test]
fn verify_progress_counts_what_it_hashes_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    copy_fixture(&src);
    fs::write(src.join("share/big1"), content(1, 3 << 20)).unwrap();
    fs::write(src.join("share/big2"), content(2, 2 << 20)).unwrap();
    let store = dir.path().join("store");
    let object = add_source(&store, &src);
    let entries = pool_entries(&store);
    let pool_bytes: u64 = entries.iter().map(|(_, size)| size).sum();
    assert!(pool_bytes > 5 << 20);
    let n = entries.len() as u64;

    let stderr = dir.path().join("verify.stderr");
    let (tx, rx) = mpsc::channel();
    let at = |gated: &'static str, stderr: PathBuf, tx: mpsc::Sender<_>| {
        move |_pid| {
            let from = fs::metadata(&stderr).unwrap().len();
            tx.send((gated, progress_while_held(&stderr, from)))
                .unwrap();
        }
    };
    let last_entry = Gate::new(
        &entries[entries.len() - 1].0,
        at("last entry", stderr.clone(), tx.clone()),
    );
    let object_end = Gate::new(
        &object.join(".references"),
        at("object end", stderr.clone(), tx),
    );
    let mut cmd = store_verify(&store, &["--progress-every", "10ms"]);
    // One worker: the pool is read in directory order.
    cmd.env("RAYON_NUM_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap());
    let status = cmd.status().unwrap();
    assert!(last_entry.finish().attacked && object_end.finish().attacked);
    assert!(status.success(), "{}", fs::read_to_string(&stderr).unwrap());
    let seen: std::collections::BTreeMap<_, _> = rx.iter().collect();
    let (files, bytes, ref line) = seen["last entry"];
    assert_eq!(files, n - 1, "held at the last pool entry: {seen:?}");
    // Each line says which phase it is in (the pool's and the objects'
    // looked the same).
    assert!(line.ends_with("; checking the pool\n"), "{line}");
    assert!(bytes > 0.0, "{seen:?}");
    let (end_files, end_bytes, ref line) = seen["object end"];
    assert!(line.ends_with("; checking the objects\n"), "{line}");
    assert_eq!(end_files, n, "each pool entry counted once: {seen:?}");
    assert!(
        end_bytes <= pool_bytes as f64 * 1.01,
        "{end_bytes} bytes counted of {pool_bytes} in the pool: {seen:?}"
    );
    assert!(end_bytes >= bytes, "{seen:?}");
}

/// `verify --json` gave a difference's path mtree-encoded
/// (`./evil\\033\\1332J\\012name`); JSON gives the path itself, and the
/// text output stays escaped for the terminal.
#[test]
fn verify_json_gives_a_corrupt_file_its_real_path() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    copy_fixture(&src);
    let name = b"evil\x1b[2J\nname";
    fs::write(src.join("share").join(OsStr::from_bytes(name)), b"fine\n").unwrap();
    let store = dir.path().join("store");
    let object = add_source(&store, &src);
    let share = object.join("share");
    rewrite_in(&share, &[name]);

    let out = run(&mut store_verify(&store, &["--json"]));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let differences = &json["objects"][0]["differences"];
    assert_eq!(differences[0]["change"], "modified", "{json}");
    assert_eq!(
        differences[0]["path"], "./share/evil\u{1b}[2J\nname",
        "{json}"
    );

    let out = run(&mut store_verify(&store, &[]));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains('\u{1b}'), "{stdout}");
    assert!(stdout.contains("evil\\033"), "{stdout}");
    assert!(
        stdout.lines().all(|l| !l.starts_with("name")),
        "a file name forged a line: {stdout}"
    );
}

/// The sample result root written into `root` beside the files a test put
/// in its world, all signed, promoted into `dir/store`: the store, and the
/// object holding `holds` at its top.
fn promoted_with(dir: &Path, root: &Path, holds: &OsStr) -> (PathBuf, PathBuf) {
    fruix_core::testing::write_sample_result_root(root, "local", "20260405T213444Z", true).unwrap();
    let store = dir.join("store");
    crate::util::promote_quietly(&store, root);
    let object = object_names(&store)
        .into_iter()
        .map(|n| store.join(n))
        .find(|o| o.join(holds).symlink_metadata().is_ok())
        .unwrap_or_else(|| panic!("no object holds {holds:?}"));
    (store, object)
}

/// Replaces each file `names` in the store directory `dir` with one
/// holding `changed` (a new inode: the pool's entry stays sound), as
/// store modes leave it; only the object's manifest can tell.
fn rewrite_in(dir: &Path, names: &[&[u8]]) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    for name in names {
        let file = dir.join(OsStr::from_bytes(name));
        fs::remove_file(&file).unwrap();
        fs::write(&file, b"changed\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o444)).unwrap();
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).unwrap();
}

/// `verify --json` showed two different corrupt files alike: one named
/// `\377x` (a backslash, then `377x`: valid UTF-8) and one named with the
/// byte 0xff then `x` (not UTF-8) both had the `path` `"./\\377x"`. Each
/// difference also gives its `manifest_path`, the entry's path as the
/// object's manifest spells it, which tells them apart.
#[test]
fn verify_json_tells_apart_files_whose_paths_show_alike() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let world = root.join("artifacts/world");
    fs::create_dir_all(&world).unwrap();
    let names: [&[u8]; 2] = [b"\\377x", b"\xffx"];
    for name in names {
        fs::write(world.join(OsStr::from_bytes(name)), b"fine\n").unwrap();
    }
    let (store, object) = promoted_with(dir.path(), &root, OsStr::from_bytes(names[1]));
    rewrite_in(&object, &names);

    let out = run(&mut store_verify(&store, &["--json"]));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let corrupt: Vec<&serde_json::Value> = json["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["ok"] == false)
        .collect();
    assert_eq!(corrupt.len(), 1, "{json}");
    let differences = corrupt[0]["differences"].as_array().unwrap();
    let mut shown: Vec<(&str, &str)> = differences
        .iter()
        .map(|d| {
            assert_eq!(d["change"], "modified", "{json}");
            (
                d["manifest_path"].as_str().unwrap_or("(none)"),
                d["path"].as_str().unwrap(),
            )
        })
        .collect();
    shown.sort();
    assert_eq!(
        shown,
        [("./\\134377x", "./\\377x"), ("./\\377x", "./\\377x")],
        "{json}"
    );
}

/// The names of an object's metadata files, which no artifact may hold at
/// its top.
const METADATA_NAMES: [&str; 3] = [
    ".references",
    ".fruix-manifest.mtree",
    ".fruix-native-build-object.scm",
];

/// The names of an object's metadata are reserved at the top of an
/// artifact only: there promote refuses them (exit 4, naming the file), as
/// verify would take such a file for the object's own metadata; in a
/// subdirectory they are ordinary files, promoted, and verified as such.
#[test]
fn metadata_names_are_refused_at_an_artifacts_top_only() {
    let dir = tempfile::tempdir().unwrap();
    for name in METADATA_NAMES {
        let root = dir.path().join(format!("top{name}"));
        let world = root.join("artifacts/world");
        fs::create_dir_all(&world).unwrap();
        fs::write(world.join(name), b"not metadata\n").unwrap();
        fruix_core::testing::write_sample_result_root(&root, "local", "20260405T213444Z", true)
            .unwrap();
        let store = dir.path().join(format!("store{name}"));
        let stderr = crate::util::promote_refused(
            name,
            &store,
            &root,
            &[name, "uses a name reserved for store object metadata"],
        );
        assert!(stderr.contains("artifacts/world/"), "{stderr}");
    }

    let root = dir.path().join("sub");
    let world = root.join("artifacts/world");
    fs::create_dir_all(world.join("sub")).unwrap();
    for name in METADATA_NAMES {
        fs::write(world.join("sub").join(name), name).unwrap();
    }
    let (store, object) = promoted_with(dir.path(), &root, OsStr::new("sub"));
    for name in METADATA_NAMES {
        assert_eq!(
            fs::read_to_string(object.join("sub").join(name)).unwrap(),
            name
        );
    }
    crate::util::verify_store(&store);
}
