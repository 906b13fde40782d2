//! Garbage collection with a state directory shared by several stores, and
//! with hostile entries planted in the store.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fruix_core::testing::TestDir;
use fruix_promote::gc::{collect, GcOptions, GcReport};
use fruix_promote::roots;
use fruix_promote::{promote_native_build_result, OutLink, PromoteOptions, Store};

fn gc(store: &Store, state_dir: &Path) -> GcReport {
    gc_as(store, state_dir, false)
}

/// Collects `store` under `state_dir`, made (empty: no roots) if it is not
/// there.
fn gc_as(store: &Store, state_dir: &Path, dry_run: bool) -> GcReport {
    fs::create_dir_all(state_dir).unwrap();
    collect(store, &options(state_dir, dry_run)).unwrap()
}

/// A store holding one promoted result root's objects, none of them
/// rooted (every object is dead), and its state directory (not made).
fn unrooted_store() -> (TestDir, Store, PathBuf) {
    let dir = TestDir::new();
    let state = dir.join("state");
    let store = Store::open(&dir.store()).unwrap();
    promote_native_build_result(
        &dir.root("r1", "local", "20260405T213444Z", true),
        &store,
        &PromoteOptions::default(),
    )
    .unwrap();
    (dir, store, state)
}

fn options(state_dir: &Path, dry_run: bool) -> GcOptions<'static> {
    GcOptions {
        state_dir: state_dir.to_path_buf(),
        dry_run,
        max_freed: None,
        keep_result_roots: true,
        older_than: Duration::from_secs(7 * 24 * 3600),
        progress: None,
    }
}

/// Regression: a collection (or a deletion) under a state directory that
/// is not there (a mistyped `--state-dir`, or a forgotten one whose default
/// was never made) found no roots and removed every object, without a word.
/// It is refused (exit 2), removing nothing, a dry run too.
#[test]
fn a_collection_under_a_state_directory_that_is_not_there_is_refused() {
    let dir = TestDir::new();
    let store = Store::open(&dir.store()).unwrap();
    let state = dir.join("state");
    let link = dir.join("result");
    let report = promote_native_build_result(
        &dir.root("r1", "local", "20260405T213444Z", true),
        &store,
        &PromoteOptions {
            out_link: Some(OutLink {
                link: &link,
                state_dir: &state,
            }),
            ..Default::default()
        },
    )
    .unwrap();
    let before = store.db().names().unwrap();
    let missing = dir.join("no-such-state");
    let file = dir.join("a-file");
    fs::write(&file, "").unwrap();
    for given in [&missing, &file] {
        for dry_run in [false, true] {
            let e = collect(&store, &options(given, dry_run)).unwrap_err();
            assert!(
                matches!(&e, fruix_promote::Error::NoStateDir { state_dir } if state_dir == given),
                "{e:?}"
            );
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
        }
        let names = [report
            .result_store
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()];
        let e = fruix_promote::gc::delete(&store, given, &names).unwrap_err();
        assert!(
            matches!(e, fruix_promote::Error::NoStateDir { .. }),
            "{e:?}"
        );
    }
    assert!(report.result_store.is_dir(), "the bundle went");
    assert_eq!(store.db().names().unwrap(), before);
}

#[test]
fn a_collection_leaves_the_roots_of_another_store_sharing_the_state_directory() {
    let dir = TestDir::new();
    let state = dir.join("state");
    let link = dir.join("result");
    let main = Store::open(&dir.store()).unwrap();
    let report = promote_native_build_result(
        &dir.root("r1", "local", "20260405T213444Z", true),
        &main,
        &PromoteOptions {
            progress: None,
            out_link: Some(OutLink {
                state_dir: &state,
                link: &link,
            }),
        },
    )
    .unwrap();
    let objects = main.db().names().unwrap();
    // `fruix store gc --store /tmp/scratch` with the same state directory.
    let scratch = Store::open(&dir.join("scratch")).unwrap();
    assert!(roots::list(&state, scratch.path()).unwrap().is_empty());
    let scratch_gc = gc(&scratch, &state);
    assert!(scratch_gc.dead_roots.is_empty(), "{scratch_gc:?}");
    assert!(scratch_gc.objects.is_empty(), "{scratch_gc:?}");
    // The out-link is still this store's root, and keeps everything.
    let ours = roots::list(&state, main.path()).unwrap();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0].link, link);
    let main_gc = gc(&main, &state);
    assert!(main_gc.objects.is_empty(), "{main_gc:?}");
    assert_eq!(main.db().names().unwrap(), objects);
    assert!(report.result_store.is_dir());
    // Once the out-link is gone, the root is dead for every store, and
    // either may remove it.
    fs::remove_file(&link).unwrap();
    let scratch_gc = gc(&scratch, &state);
    assert_eq!(scratch_gc.dead_roots, vec![link]);
    assert!(roots::list(&state, main.path()).unwrap().is_empty());
}

#[test]
fn a_symlink_in_the_store_is_removed_without_touching_what_it_points_to() {
    let dir = TestDir::new();
    let store = Store::open(&dir.store()).unwrap();
    let outside = dir.join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::set_permissions(outside.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o755)).unwrap();
    let planted = store
        .path()
        .join("0123456789abcdef0123456789abcdef01234567-fruix-native-world-15.0-STABLE-local");
    std::os::unix::fs::symlink(&outside, &planted).unwrap();
    let report = gc(&store, &dir.join("state"));
    assert_eq!(report.objects.len(), 1, "{report:?}");
    assert!(planted.symlink_metadata().is_err(), "the link is gone");
    for d in [&outside, &outside.join("sub")] {
        let mode = fs::metadata(d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "{}", d.display());
    }
}

#[test]
fn an_indirect_root_into_the_store_at_no_object_keeps_nothing_but_is_kept() {
    let dir = TestDir::new();
    let state = dir.join("state");
    let store = Store::open(&dir.store()).unwrap();
    // `--out-link` pointed at the store directory itself, and at a
    // non-object path inside it: both targets exist.
    let at_store = roots::add_indirect(&state, &dir.join("at-store"), store.path()).unwrap();
    let at_pool =
        roots::add_indirect(&state, &dir.join("at-pool"), &store.path().join(".links")).unwrap();
    let listed = roots::list(&state, store.path()).unwrap();
    let summary: Vec<(&Path, Option<&str>, bool)> = listed
        .iter()
        .map(|r| (r.link.as_path(), r.object.as_deref(), r.is_dead()))
        .collect();
    let mut expected = [
        (at_pool.as_path(), None, false),
        (at_store.as_path(), None, false),
    ];
    expected.sort();
    assert_eq!(summary, expected);
    let report = gc(&store, &state);
    assert!(report.dead_roots.is_empty(), "{report:?}");
    assert_eq!(roots::list(&state, store.path()).unwrap(), listed);
    // Once its link is gone, it is dead and goes.
    fs::remove_file(&at_store).unwrap();
    let report = gc(&store, &state);
    assert_eq!(report.dead_roots, vec![at_store]);
    let left: Vec<PathBuf> = roots::list(&state, store.path())
        .unwrap()
        .into_iter()
        .map(|r| r.link)
        .collect();
    assert_eq!(left, vec![at_pool]);
}

#[test]
fn a_dry_run_reports_the_pool_entries_the_collection_removes() {
    let (_dir, store, state) = unrooted_store();
    let mut entries: Vec<PathBuf> = fs::read_dir(store.pool().path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(entries.len() >= 2, "{entries:?}");
    // An unregistered object directory and a killed promotion's temporary
    // also link pool entries: the collection removes them too.
    let planted = store
        .path()
        .join("0123456789abcdef0123456789abcdef01234567-fruix-native-world-15.0-STABLE-local");
    let temporary = store.path().join(".tmp-promote-1-0");
    for (d, entry) in [(&planted, &entries[0]), (&temporary, &entries[1])] {
        fs::create_dir(d).unwrap();
        fs::hard_link(entry, d.join("file")).unwrap();
    }
    let dry = gc_as(&store, &state, true);
    let real = gc_as(&store, &state, false);
    assert_eq!(real.pool_entries, entries.len(), "{real:?}");
    assert!(real.pool_bytes > 0, "{real:?}");
    assert_eq!(
        (dry.pool_entries, dry.pool_bytes),
        (real.pool_entries, real.pool_bytes)
    );
    assert_eq!(dry.objects, real.objects);
    assert_eq!(dry.temporaries, real.temporaries);
    assert_eq!(fs::read_dir(store.pool().path()).unwrap().count(), 0);
}

/// Regression: a collection that stopped at `--max-freed` said what it
/// removed and the live objects it kept, not the dead ones it left: the
/// report counts them (`dead_left`), and the next collection removes them.
#[test]
fn a_collection_past_max_freed_counts_the_dead_objects_it_left() {
    let (_dir, store, state) = unrooted_store();
    fs::create_dir_all(&state).unwrap();
    let dead = store.db().names().unwrap().len();
    assert!(dead >= 2, "{dead}");
    let first = collect(
        &store,
        &GcOptions {
            max_freed: Some(1),
            ..options(&state, false)
        },
    )
    .unwrap();
    assert_eq!(first.objects.len(), 1, "{first:?}");
    assert_eq!(first.dead_left, dead - 1, "{first:?}");
    let rest = gc(&store, &state);
    assert_eq!((rest.objects.len(), rest.dead_left), (dead - 1, 0));
}

/// A store opened tentatively is removed, with the parents it made, unless
/// kept; a store that existed is never removed.
#[test]
fn a_tentatively_opened_store_is_removed_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a/b/store");
    let made = fruix_promote::Store::open_tentatively(&root).unwrap();
    assert!(made.is_new());
    assert!(made.path().join(".lock").is_file());
    drop(made);
    assert!(!dir.path().join("a").exists(), "the made parents stay");

    let kept = fruix_promote::Store::open_tentatively(&root)
        .unwrap()
        .keep();
    drop(kept);
    assert!(root.join(".lock").is_file(), "a kept store was removed");
    let existing = fruix_promote::Store::open_tentatively(&root).unwrap();
    assert!(!existing.is_new());
    drop(existing);
    assert!(
        root.join(".lock").is_file(),
        "an existing store was removed"
    );
}

/// The run id of the result roots of the tests below.
const RUN: &str = "20260405T213444Z";

/// A collection of `store` under `state` (made) that removes the promoted
/// result roots older than `older_than`.
fn gc_roots(store: &Store, state: &Path, older_than: Duration, dry_run: bool) -> GcReport {
    fs::create_dir_all(state).unwrap();
    let options = GcOptions {
        keep_result_roots: false,
        older_than,
        ..options(state, dry_run)
    };
    collect(store, &options).unwrap()
}

/// A signed sample result root of run [`RUN`] in `STATE/native-builds/NAME`,
/// its world holding one more file with `unique` when given (other
/// artifacts: another run's, of the same run id).
fn state_root(state: &Path, name: &str, unique: Option<&str>) -> PathBuf {
    let root = state.join("native-builds").join(name);
    if let Some(unique) = unique {
        fs::create_dir_all(root.join("artifacts/world/etc")).unwrap();
        fs::write(root.join("artifacts/world/etc/unique"), unique).unwrap();
    }
    fruix_core::testing::write_sample_result_root(&root, "local", RUN, true).unwrap();
    root
}

/// `from` copied to `to` (a result root: directories and regular files).
fn copy_root(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            fs::create_dir_all(&target).unwrap();
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Promotes `root` into `store`, linking nothing: nothing roots the
/// bundle.
fn promote_unrooted(root: &Path, store: &Store) -> PathBuf {
    promote_native_build_result(root, store, &PromoteOptions::default())
        .unwrap()
        .result_store
}

/// Regression: a collection took every directory of `STATE/native-builds`
/// named as a run the store promoted for that run's root, though run ids
/// are unique within one state directory only: the root of another run
/// with the same id, in another state directory sharing the store, went.
/// A root goes when it describes a bundle of the store, whatever its name.
#[test]
fn a_root_of_another_run_with_a_promoted_run_id_is_kept() {
    let dir = TestDir::new();
    let store = Store::open(&dir.store()).unwrap();
    let (sx, sy) = (dir.join("sX"), dir.join("sY"));
    let promoted = state_root(&sx, RUN, None);
    promote_unrooted(&promoted, &store);
    // Same run id, same run fields, other artifacts.
    let other = state_root(&sy, RUN, Some("only this run has this"));
    // A root of the promoted run, elsewhere, named as another run.
    let renamed = dir.join("sZ/native-builds/20260405T213445Z");
    copy_root(&promoted, &renamed);

    let dry = gc_roots(&store, &sy, Duration::ZERO, true);
    assert!(dry.result_roots.is_empty(), "{dry:?}");
    let collected = gc_roots(&store, &dir.join("sZ"), Duration::ZERO, true);
    assert_eq!(collected.result_roots, vec![renamed]);
    let collected = gc_roots(&store, &sx, Duration::ZERO, false);
    assert_eq!(collected.result_roots, vec![promoted.clone()]);
    assert!(!promoted.exists());
    let collected = gc_roots(&store, &sy, Duration::ZERO, false);
    assert!(collected.result_roots.is_empty(), "{collected:?}");
    assert!(other.join("promotion.scm").is_file());
}

/// Regression: a root marked unfinished (a build running, failed or
/// interrupted) was collected when its name was a promoted run's, and a
/// running build lost its root. Such a root is never collected, nor one
/// whose work directory's run lock a process holds; the same root,
/// finished, is.
#[test]
fn an_unfinished_root_is_never_collected() {
    use fruix_core::result_root::INCOMPLETE_MARKER;
    use fruix_promote::gc::result_roots::RUN_LOCK;
    let dir = TestDir::new();
    let store = Store::open(&dir.store()).unwrap();
    let state = dir.join("state");
    let root = state_root(&state, RUN, None);
    promote_unrooted(&root, &store);
    let marked = state.join("native-builds/marked");
    copy_root(&root, &marked);
    fs::write(marked.join(INCOMPLETE_MARKER), "").unwrap();
    fs::create_dir_all(state.join("native-builds/RUN.work")).unwrap();
    let locked = state.join("native-builds/RUN");
    copy_root(&root, &locked);
    let lock = fs::File::create(state.join("native-builds/RUN.work").join(RUN_LOCK)).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();

    let collected = gc_roots(&store, &state, Duration::ZERO, true);
    assert_eq!(collected.result_roots, vec![root.clone()]);
    drop(lock);
    let collected = gc_roots(&store, &state, Duration::ZERO, false);
    assert_eq!(collected.result_roots, vec![root, locked]);
    assert!(marked.join("promotion.scm").is_file());
}

/// What the warning hook of this test binary was told.
static TOLD: std::sync::Mutex<Vec<fruix_promote::warning::Warning>> =
    std::sync::Mutex::new(Vec::new());

fn record(warning: &fruix_promote::warning::Warning) {
    TOLD.lock().unwrap().push(warning.clone());
}

/// Regression: a promoted root modified in the future (a clock set back)
/// was never collected, and nothing said so. Its age is taken as 0, with
/// a warning: only `--older-than 0s` removes it.
#[test]
fn a_root_modified_in_the_future_counts_as_new_with_a_warning() {
    use fruix_promote::warning::Warning;
    fruix_promote::warning::set_warning_hook(record);
    let dir = TestDir::new();
    let store = Store::open(&dir.store()).unwrap();
    let state = dir.join("state");
    let root = state_root(&state, RUN, None);
    promote_unrooted(&root, &store);
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    fs::File::open(&root).unwrap().set_modified(later).unwrap();

    let kept = gc_roots(&store, &state, Duration::from_secs(1), true);
    assert!(kept.result_roots.is_empty(), "{kept:?}");
    let told: Vec<Warning> = TOLD.lock().unwrap().clone();
    let ahead = told.iter().find_map(|w| match w {
        Warning::ResultRootInFuture { root: r, ahead } if *r == root => Some(*ahead),
        _ => None,
    });
    let ahead = ahead.unwrap_or_else(|| panic!("no warning in {told:?}"));
    assert!(ahead > Duration::from_secs(3000), "{ahead:?}");
    let collected = gc_roots(&store, &state, Duration::ZERO, false);
    assert_eq!(collected.result_roots, vec![root]);
}

/// A root young enough to stay is marked with its bundle by the collection
/// that removes the bundle: a later one removes it though the bundle is
/// gone. A copy of it that no collection of its state directory marked
/// cannot be told from another run's any more, and stays.
#[test]
fn a_root_outlives_its_bundle_and_still_goes() {
    let dir = TestDir::new();
    let store = Store::open(&dir.store()).unwrap();
    let state = dir.join("state");
    let root = state_root(&state, RUN, None);
    let bundle = promote_unrooted(&root, &store);
    let unmarked = dir.join("other/native-builds").join(RUN);
    copy_root(&root, &unmarked);

    let week = Duration::from_secs(7 * 24 * 3600);
    let first = gc_roots(&store, &state, week, false);
    assert!(first.objects.iter().any(|o| o.path == bundle), "{first:?}");
    assert!(first.result_roots.is_empty(), "{first:?}");
    assert!(!bundle.exists());
    let second = gc_roots(&store, &state, Duration::ZERO, false);
    assert_eq!(second.result_roots, vec![root]);
    let other = gc_roots(&store, &dir.join("other"), Duration::ZERO, false);
    assert!(other.result_roots.is_empty(), "{other:?}");
    assert!(unmarked.join("promotion.scm").is_file());
}
