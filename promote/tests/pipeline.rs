//! Tests of the promotion pipeline and the store against sample result roots.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use fruix_core::manifest::Difference;
use fruix_core::testing::TestDir;
use fruix_promote::query::list_store;
use fruix_promote::store::disk_usage;
use fruix_promote::verify::{object_paths, verify_object, verify_pool};
use fruix_promote::{promote_native_build_result, Error, PromoteOptions, PromotionReport, Store};

/// What these tests do in a [`TestDir`]: promote signed sample result roots
/// into its store and look at the store.
trait Fixture {
    /// The signed sample result root `r1` of the `local` executor.
    fn sample(&self) -> PathBuf;
    /// Promotes a new [`Fixture::sample`], which must succeed.
    fn promoted(&self) -> PromotionReport;
    fn promote(&self, root: &Path) -> Result<PromotionReport, Error>;
    /// Every path in the store with its mode and size, to compare snapshots.
    fn snapshot(&self) -> Vec<(PathBuf, u32, u64)>;
}

impl Fixture for TestDir {
    fn sample(&self) -> PathBuf {
        self.root("r1", "local", "20260405T213444Z", true)
    }
    fn promoted(&self) -> PromotionReport {
        self.promote(&self.sample()).unwrap()
    }
    fn promote(&self, root: &Path) -> Result<PromotionReport, Error> {
        let store = Store::open(&self.store()).unwrap();
        promote_native_build_result(root, &store, &PromoteOptions::default())
    }
    fn snapshot(&self) -> Vec<(PathBuf, u32, u64)> {
        let mut out: Vec<_> = walkdir_list(&self.store());
        out.retain(|(p, _, _)| !p.to_string_lossy().contains("/.locks/") && !p.ends_with(".lock"));
        out
    }
}

fn walkdir_list(dir: &Path) -> Vec<(PathBuf, u32, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let m = e.path().symlink_metadata().unwrap();
            out.push((e.path(), m.mode(), m.len()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn make_writable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Promotes the sample, runs `change` on its kernel object, and promotes
/// the sample again: returns the kernel object and what the second
/// promotion returned.
fn promoted_again_after_changing_the_kernel(
    change: impl FnOnce(&Path),
) -> (PathBuf, Result<PromotionReport, Error>) {
    let f = TestDir::new();
    let root = f.sample();
    let report = f.promote(&root).unwrap();
    let kernel = report.artifacts["kernel"].store_path.clone();
    change(&kernel);
    (kernel, f.promote(&root))
}

#[test]
fn summary_names_every_store_path_and_probe_hash() {
    let f = TestDir::new();
    let report = f.promoted();
    assert_eq!(report.run_id, "20260405T213444Z");
    assert_eq!(report.artifacts.len(), 4);
    let world = &report.artifacts["world"];
    let name = world.store_path.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        name.len(),
        40 + "-fruix-native-world-15.0-STABLE-local".len(),
        "{name}"
    );
    assert!(
        name.ends_with("-fruix-native-world-15.0-STABLE-local"),
        "{name}"
    );
    assert!(name[..40].bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(report
        .result_store
        .to_string_lossy()
        .ends_with("-fruix-native-build-result-15.0-STABLE-local"));
    let kv = report.to_key_values();
    assert!(kv.contains(&format!("world_store={}\n", world.store_path.display())));
    assert!(kv.contains("artifact_store_count=4\n"));
    let kernel_sha = hex_sha256(b"\x7fELF sample kernel\n");
    assert_eq!(report.sha_kernel.as_deref(), Some(kernel_sha.as_str()));
    assert!(kv.contains(&format!("sha_kernel={kernel_sha}\n")));
    assert!(report.artifacts.values().all(|a| a.new));
}

#[test]
fn the_summary_escapes_paths_so_none_can_forge_a_line() {
    let f = TestDir::new();
    let mut report = f.promoted();
    let world = report.artifacts.get_mut("world").unwrap();
    world.store_path = PathBuf::from("/s\nsha_kernel=forged/w");
    report.result_store = PathBuf::from("/s\nrun_id=forged/r");
    let kv = report.to_key_values();
    assert!(
        !kv.lines()
            .any(|l| l.starts_with("sha_kernel=forged") || l.starts_with("run_id=forged")),
        "{kv}"
    );
    assert!(
        kv.contains("world_store=/s\\nsha_kernel=forged/w\n"),
        "{kv}"
    );
    assert!(kv.contains("result_store=/s\\nrun_id=forged/r\n"), "{kv}");
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn objects_are_read_only_timestamped_and_without_setuid() {
    let f = TestDir::new();
    let report = f.promoted();
    let world = &report.artifacts["world"].store_path;
    for (path, mode, _) in walkdir_list(world) {
        let m = path.symlink_metadata().unwrap();
        if !m.file_type().is_symlink() {
            assert_eq!(
                mode & 0o7222,
                0,
                "{} is writable or special: {mode:o}",
                path.display()
            );
            assert_eq!(m.mtime(), 1, "{}", path.display());
        }
    }
    let su = world.join("usr/bin/su").metadata().unwrap();
    assert_eq!(su.mode() & 0o7777, 0o555);
    let metadata = fs::read_to_string(world.join(".fruix-native-build-object.scm")).unwrap();
    assert!(
        metadata.contains("(mode \"./usr/bin/su\" \"4555\")"),
        "{metadata}"
    );
    assert!(
        metadata.contains("(mode \"./var/tmp\" \"1555\")"),
        "{metadata}"
    );
    assert!(
        !metadata.contains("run-id") && !metadata.contains("jobs"),
        "{metadata}"
    );
    let bundle = &report.result_store;
    let link = fs::read_link(bundle.join("artifacts/world")).unwrap();
    assert_eq!(&link, world);
    let references = fs::read_to_string(bundle.join(".references")).unwrap();
    let mut expected: Vec<String> = report
        .artifacts
        .values()
        .map(|a| a.store_path.display().to_string())
        .collect();
    expected
        .push("/frx/store/12d7704362e95afc2697db63f168b878e082b372-freebsd-source-default".into());
    expected.sort();
    assert_eq!(
        references,
        expected
            .iter()
            .map(|p| format!("{p}\n"))
            .collect::<String>()
    );
}

/// Once every artifact is read, a display is told what comes next.
#[test]
fn a_promotion_says_when_it_builds_the_objects() {
    let f = TestDir::new();
    let root = f.sample();
    let store = Store::open(&f.store()).unwrap();
    let progress = fruix_core::manifest::Progress::default();
    let options = PromoteOptions {
        progress: Some(&progress),
        ..PromoteOptions::default()
    };
    assert_eq!(progress.phase(), None);
    promote_native_build_result(&root, &store, &options).unwrap();
    assert_eq!(progress.phase(), Some("checking or building the objects"));
}

#[test]
fn promoting_again_is_idempotent() {
    let f = TestDir::new();
    let root = f.sample();
    let first = f.promote(&root).unwrap();
    let snapshot = f.snapshot();
    let second = f.promote(&root).unwrap();
    assert_eq!(first.result_store, second.result_store);
    for (name, a) in &first.artifacts {
        assert_eq!(a.store_path, second.artifacts[name].store_path);
        assert!(!second.artifacts[name].new);
    }
    assert!(!second.result_new);
    assert_eq!(f.snapshot(), snapshot);
}

#[test]
fn identical_content_shares_artifacts_but_not_bundles() {
    let f = TestDir::new();
    let a = f.promoted();
    let b = f
        .promote(&f.root("r2", "local", "20260405T213445Z", true))
        .unwrap();
    assert_ne!(a.result_store, b.result_store);
    for (name, x) in &a.artifacts {
        assert_eq!(x.store_path, b.artifacts[name].store_path, "{name}");
    }
}

#[test]
fn identical_files_are_stored_once() {
    let f = TestDir::new();
    let big = vec![7u8; 4 << 20];
    let r1 = f.sample();
    let r2 = f.root("r2", "other-executor", "20260405T213445Z", true);
    for root in [&r1, &r2] {
        fs::write(root.join("artifacts/world/usr/big.bin"), &big).unwrap();
        let mut m = fruix_core::PromotionMetadata::read(&root.join("promotion.scm")).unwrap();
        m.artifacts[0].tree_signature = None;
        m.write_to(root).unwrap();
    }
    f.promote(&r1).unwrap();
    let before = disk_usage(&f.store());
    let second = f.promote(&r2).unwrap();
    let added = disk_usage(&f.store()) - before;
    assert!(
        second.artifacts["world"].new,
        "another executor is another artifact object"
    );
    assert!(
        added < 200 << 10,
        "second world cost {added} bytes; its 4 MiB file must be shared"
    );
}

#[test]
fn declared_signature_mismatch_changes_nothing() {
    let f = TestDir::new();
    let root = f.sample();
    f.promote(&f.root("r0", "local", "20260405T213443Z", true))
        .unwrap();
    let snapshot = f.snapshot();
    fs::write(
        root.join("artifacts/kernel/boot/kernel/kernel"),
        b"tampered",
    )
    .unwrap();
    let err = f.promote(&root).unwrap_err().to_string();
    assert!(
        err.contains("tree signature mismatch") && err.contains("artifacts/kernel"),
        "{err}"
    );
    assert_eq!(f.snapshot(), snapshot);
}

#[test]
fn fifo_in_an_artifact_changes_nothing() {
    let f = TestDir::new();
    let root = f.sample();
    let fifo = root.join("artifacts/world/etc/initctl");
    fruix_core::testing::mkfifo(&fifo).unwrap();
    let err = f.promote(&root).unwrap_err().to_string();
    assert!(err.contains("etc/initctl") && err.contains("FIFO"), "{err}");
    let objects = object_paths(&Store::open(&f.store()).unwrap()).unwrap();
    assert!(objects.is_empty(), "{objects:?}");
}

/// Regression: thousands of setuid files made an object identity that the
/// metadata reader (which caps a list at 4096 cells) then refused: fruix
/// wrote an object it could not read back. Now the promotion is refused and
/// changes nothing.
#[test]
fn identity_fruix_could_not_read_back_is_never_written() {
    let f = TestDir::new();
    let root = f.sample();
    let bin = root.join("artifacts/world/sbin");
    fs::create_dir_all(&bin).unwrap();
    for i in 0..4200 {
        let p = bin.join(format!("suid-{i}"));
        fs::write(&p, b"x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o4555)).unwrap();
    }
    let mut m = fruix_core::PromotionMetadata::read(&root.join("promotion.scm")).unwrap();
    m.artifacts[0].tree_signature = None;
    m.write_to(&root).unwrap();
    Store::open(&f.store()).unwrap();
    let snapshot = f.snapshot();
    let err = f.promote(&root).unwrap_err().to_string();
    assert!(err.contains("4096"), "{err}");
    assert_eq!(f.snapshot(), snapshot);
}

/// The progress display's measuring walk counts what a promotion reads, and
/// stops at its first entry once told to (the promotion ended first).
/// Adds the count and the size of the regular files below `dir` (walked
/// without following a symlink) to `totals`.
fn add_regular_files(dir: &Path, totals: &mut (u64, u64)) {
    for e in walkdir::WalkDir::new(dir) {
        let meta = e.unwrap().into_path().symlink_metadata().unwrap();
        if meta.is_file() {
            *totals = (totals.0 + 1, totals.1 + meta.len());
        }
    }
}

/// Checks that `measure` counts `expected` (some files) when not told to
/// stop, and is cancelled when told to before it begins.
#[track_caller]
fn assert_measures(
    measure: impl Fn(&AtomicBool) -> fruix_promote::Result<(u64, u64)>,
    expected: (u64, u64),
) {
    let (files, bytes) = measure(&AtomicBool::new(false)).unwrap();
    assert!(files > 0);
    assert_eq!((files, bytes), expected);
    match measure(&AtomicBool::new(true)) {
        Err(Error::Core(fruix_core::Error::Cancelled)) => {}
        other => panic!("expected Cancelled, got {other:?}"),
    }
}

#[test]
fn measuring_counts_the_files_and_stops_when_told() {
    let f = TestDir::new();
    let root = fruix_core::result_root::validate(&f.sample()).unwrap();
    let mut expected = (0, 0);
    for a in &root.metadata().artifacts {
        add_regular_files(&root.path().join(&a.path), &mut expected);
    }
    assert_measures(|stop| fruix_promote::measure(&root, stop), expected);
}

/// The same for a source tree (`source add`'s display), which it walks
/// without following a symlink.
#[test]
fn measuring_a_tree_counts_its_files_and_stops_when_told() {
    let f = TestDir::new();
    let tree = f.sample();
    std::os::unix::fs::symlink("/etc", tree.join("etc-link")).unwrap();
    let mut expected = (0, 0);
    add_regular_files(&tree, &mut expected);
    assert_measures(|stop| fruix_promote::measure_tree(&tree, stop), expected);
}

#[test]
fn reserved_names_are_refused() {
    let f = TestDir::new();
    let root = f.sample();
    fs::write(root.join("artifacts/headers/.references"), b"/etc\n").unwrap();
    let mut m = fruix_core::PromotionMetadata::read(&root.join("promotion.scm")).unwrap();
    m.artifacts[2].tree_signature = None;
    m.write_to(&root).unwrap();
    let err = f.promote(&root).unwrap_err().to_string();
    assert!(err.contains("reserved"), "{err}");
}

#[test]
fn verify_reports_changed_removed_and_added_files() {
    let f = TestDir::new();
    let report = f.promoted();
    let world = report.artifacts["world"].store_path.clone();
    assert!(verify_object(&world, None, None).ok);
    make_writable(&world.join("etc"));
    make_writable(&world.join("bin"));
    // A changed byte (content rewritten, then the timestamp put back).
    let motd = world.join("etc/motd");
    fs::set_permissions(&motd, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&motd, b"FreeBSD 15.0-STABLx\n").unwrap();
    fs::set_permissions(&motd, fs::Permissions::from_mode(0o444)).unwrap();
    fruix_promote::store::set_mtime(&motd).unwrap();
    fs::remove_file(world.join("bin/sh")).unwrap();
    fs::write(world.join("etc/extra"), b"x").unwrap();
    let v = verify_object(&world, None, None);
    assert!(!v.ok);
    let paths: Vec<String> = v.differences.iter().map(|d| d.to_string()).collect();
    assert!(
        v.differences.contains(&Difference::Missing {
            path: "./bin/sh".into()
        }),
        "{paths:?}"
    );
    assert!(
        v.differences.contains(&Difference::Extra {
            path: "./etc/extra".into()
        }),
        "{paths:?}"
    );
    assert!(
        v.differences
            .iter()
            .any(|d| matches!(d, Difference::Modified { path, what } if path == "./etc/motd" && what.contains(&"sha256".to_string()))),
        "{paths:?}"
    );
    // Regression: an extra file was reported both as extra and as modified.
    assert_eq!(
        v.differences
            .iter()
            .filter(|d| d.path() == "./etc/extra")
            .count(),
        1,
        "{paths:?}"
    );
}

/// With the pool verified first, an object file is trusted without reading it
/// only when it is the very inode of the sound pool entry its manifest line
/// names: a file linked to another entry, or a private copy, is checked.
#[test]
fn verify_with_the_pool_checks_files_that_are_not_their_own_pool_entry() {
    let f = TestDir::new();
    let report = f.promoted();
    let store = Store::open(&f.store()).unwrap();
    let world = report.artifacts["world"].store_path.clone();
    let verify = |store: &Store| {
        let pool = verify_pool(store, None, None).unwrap();
        assert!(pool.corrupt.is_empty(), "{:?}", pool.corrupt);
        verify_object(&world, Some(pool.verified(store)), None)
    };
    // What verify says of a bin/sh whose content is not the object's.
    let assert_sh_content_differs = || {
        let v = verify(&store);
        assert!(
            v.differences.iter().any(|d| matches!(d, Difference::Modified { path, what } if path == "./bin/sh" && what.contains(&"sha256".to_string()))),
            "{:?}",
            v.differences
        );
    };
    assert!(verify(&store).ok);
    make_writable(&world.join("bin"));
    let sh = world.join("bin/sh");
    let original = fs::read(&sh).unwrap();
    // A private copy with the right content is fine.
    fs::remove_file(&sh).unwrap();
    fs::write(&sh, &original).unwrap();
    fs::set_permissions(&sh, fs::Permissions::from_mode(0o555)).unwrap();
    fruix_promote::store::set_mtime(&sh).unwrap();
    assert!(verify(&store).ok);
    // A private copy with other bytes (same size, timestamp put back) is not.
    fs::set_permissions(&sh, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&sh, vec![b'Z'; original.len()]).unwrap();
    fs::set_permissions(&sh, fs::Permissions::from_mode(0o555)).unwrap();
    fruix_promote::store::set_mtime(&sh).unwrap();
    assert_sh_content_differs();
    // Nor is a hard link to another sound pool entry of the same mode and size.
    fs::remove_file(&sh).unwrap();
    let other = b"\x7fELF other shell!\n";
    assert_eq!(other.len(), original.len());
    let key = format!("{}-x", hex_sha256(other));
    fs::write(store.pool().path().join(&key), other).unwrap();
    fs::set_permissions(
        store.pool().path().join(&key),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    fs::hard_link(store.pool().path().join(&key), &sh).unwrap();
    fruix_promote::store::set_mtime(&sh).unwrap();
    assert_sh_content_differs();
}

#[test]
fn corrupt_existing_object_is_never_reused() {
    let (kernel, again) = promoted_again_after_changing_the_kernel(|kernel| {
        make_writable(&kernel.join("boot/kernel"));
        fs::remove_file(kernel.join("boot/kernel/if_em.ko")).unwrap();
    });
    match again {
        Err(Error::Corrupt {
            object,
            differences,
            more_differences: 0,
        }) => {
            assert_eq!(object, kernel);
            assert_eq!(
                differences,
                vec![Difference::Missing {
                    path: "./boot/kernel/if_em.ko".into()
                }]
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn concurrent_promotions_agree() {
    let f = TestDir::new();
    let root = f.sample();
    let store_dir = f.store();
    let reports: Vec<PromotionReport> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let store = Store::open(&store_dir).unwrap();
                    promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(reports
        .windows(2)
        .all(|w| w[0].result_store == w[1].result_store));
    assert_eq!(reports.iter().filter(|r| r.result_new).count(), 1);
    let store = Store::open(&store_dir).unwrap();
    for object in object_paths(&store).unwrap() {
        assert!(
            verify_object(&object, None, None).ok,
            "{}",
            object.display()
        );
    }
    assert_eq!(list_store(&store, &Default::default()).unwrap().len(), 5);
}

#[test]
fn store_list_names_artifact_version_executor_kernconf_run_and_size() {
    let f = TestDir::new();
    f.promote(&f.root("r1", "guest-self-hosted", "20260405T213444Z", true))
        .unwrap();
    let listed = list_store(&Store::open(&f.store()).unwrap(), &Default::default()).unwrap();
    let kernel = listed
        .iter()
        .find(|o| o.record.artifact.as_deref() == Some("kernel"))
        .unwrap();
    let r = &kernel.record;
    assert_eq!(r.freebsd_version.as_deref(), Some("15.0-STABLE"));
    assert_eq!(r.executor.as_deref(), Some("guest-self-hosted"));
    assert_eq!(r.kernconf.as_deref(), Some("GENERIC"));
    assert_eq!(r.run_id.as_deref(), Some("20260405T213444Z"));
    assert_eq!(r.size, 19 + 12);
    let bundle = listed
        .iter()
        .find(|o| o.record.kind == fruix_promote::db::Kind::Bundle)
        .unwrap();
    assert_eq!(
        (
            bundle.record.freebsd_version.as_deref(),
            bundle.record.executor.as_deref()
        ),
        (Some("15.0-STABLE"), Some("guest-self-hosted"))
    );
}

/// A store under a regular file is invalid input (it was "not writable",
/// a system failure); one where no directory can be made at all is not
/// writable. sysfs refuses every mkdir (EPERM), root's too, so neither
/// case depends on who runs the test.
#[test]
fn a_store_that_cannot_be_a_directory_or_be_made_is_a_clear_error() {
    let f = TestDir::new();
    fs::write(f.join("file"), b"").unwrap();
    let e = Store::open(&f.join("file/store")).unwrap_err();
    assert!(matches!(e, Error::StoreNotDirectory(_)), "{e:?}");
    assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
    let e = Store::open(Path::new("/sys/fruix-test-store")).unwrap_err();
    assert!(matches!(e, Error::StoreNotWritable { .. }), "{e:?}");
    assert_eq!(e.exit_status(), fruix_core::ExitStatus::SystemFailure);
}

#[test]
fn a_corrupt_object_error_counts_differences_beyond_those_it_lists() {
    use fruix_promote::check::MAX_DIFFERENCES;
    let extra = MAX_DIFFERENCES + 7;
    let (kernel, again) = promoted_again_after_changing_the_kernel(|kernel| {
        make_writable(kernel);
        for i in 0..extra {
            fs::write(kernel.join(format!("extra-{i:05}")), b"x").unwrap();
        }
        // Only the extra files differ.
        fruix_promote::store::set_mode(kernel, 0o555).unwrap();
        fruix_promote::store::set_mtime(kernel).unwrap();
    });
    let err = again.unwrap_err();
    let total = format!("({extra} difference(s): ");
    assert!(err.to_string().contains(&total), "{err}");
    match err {
        Error::Corrupt {
            object,
            differences,
            more_differences,
        } => {
            assert_eq!(object, kernel);
            assert_eq!(differences.len(), MAX_DIFFERENCES);
            assert_eq!(more_differences, 7);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Regression: a promotion reused a pool entry by its name alone, so a
/// visibly damaged one (bytes added, its mode changed) was linked into
/// every new object with that content, corrupt from birth. Such an entry
/// is replaced: the new object is sound, and the old object that links the
/// damaged inode stays as corrupt as it was.
#[test]
fn a_visibly_damaged_pool_entry_is_replaced_not_reused() {
    let f = TestDir::new();
    let first = f.promoted();
    let world = first.artifacts["world"].store_path.clone();
    let motd = world.join("etc/motd");
    let entry = {
        let store = Store::open(&f.store()).unwrap();
        let ino = fs::metadata(&motd).unwrap().ino();
        fs::read_dir(store.path().join(".links"))
            .unwrap()
            .flatten()
            .find(|e| e.metadata().unwrap().ino() == ino)
            .unwrap()
            .path()
    };
    fs::set_permissions(&entry, fs::Permissions::from_mode(0o644)).unwrap();
    let mut file = fs::OpenOptions::new().append(true).open(&entry).unwrap();
    std::io::Write::write_all(&mut file, b"damage\n").unwrap();
    drop(file);
    assert!(
        !verify_object(&world, None, None).ok,
        "the first is corrupt"
    );
    // Another executor's build of the same tree: a new world object with
    // the same files.
    let other = f.root("r2", "guest-self-hosted", "20260405T213444Z", true);
    let second = f.promote(&other).unwrap();
    let new_world = &second.artifacts["world"].store_path;
    assert_ne!(new_world, &world);
    assert!(
        verify_object(new_world, None, None).ok,
        "the new one is sound"
    );
    let store = Store::open(&f.store()).unwrap();
    let pool = verify_pool(&store, None, None).unwrap();
    assert!(pool.corrupt.is_empty(), "{:?}", pool.corrupt);
    assert!(
        !verify_object(&world, None, None).ok,
        "the first stays corrupt"
    );
}
