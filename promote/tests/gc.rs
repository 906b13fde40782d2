//! Garbage collection with a state directory shared by several stores, and
//! with hostile entries planted in the store.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use fruix_core::testing::TestDir;
use fruix_promote::gc::{collect, GcOptions, GcReport};
use fruix_promote::roots;
use fruix_promote::{promote_native_build_result, OutLink, PromoteOptions, Store};

fn gc(store: &Store, state_dir: &Path) -> GcReport {
    collect(
        store,
        &GcOptions {
            state_dir: state_dir.to_path_buf(),
            dry_run: false,
            max_freed: None,
            keep_result_roots: true,
            older_than: Duration::from_secs(7 * 24 * 3600),
            progress: None,
        },
    )
    .unwrap()
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
