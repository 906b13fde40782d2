//! Root adding a user's tree publishes only what that user could read, as
//! the kernel decides it: the directories on the way count, and so do the
//! user's groups (a group-shared checkout).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::sources::checkout;
use crate::util::{dir_for_root_and_others, failed_with, fruix, run};

/// `nobody`, whose primary (and only) group on Debian is `nogroup`.
const NOBODY: &str = "65534:65534";
/// `daemon`, another user, in group `nogroup`.
const DAEMON_IN_NOGROUP: &str = "1:65534";

/// `chown -R OWNER PATH`.
fn chown(owner: &str, path: &Path) {
    let status = Command::new("chown")
        .args(["-R", owner])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown {owner} {}", path.display());
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `fruix source add --quiet --store STORE TREE`.
fn add(tree: &Path, store: &Path) -> Output {
    run(fruix()
        .args(["source", "add", "--quiet", "--store"])
        .arg(store)
        .arg(tree))
}

/// The store objects in `store` (its entries not starting with a dot).
fn objects(store: &Path) -> usize {
    std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count()
}

/// Regression: a file readable by everyone below another user's private
/// directory (mode 0700) in `nobody`'s tree was added, though `nobody`
/// could not reach it, and published in the store anyone may read. Now it
/// is refused (exit 4, nothing added); once the directory lets its owner
/// through (mode 0711), it is taken.
#[test]
fn a_file_below_a_directory_its_owner_cannot_enter_is_refused() {
    let dir = dir_for_root_and_others("adds another user's tree");
    let tree = checkout(dir.path(), "users");
    chown(NOBODY, &tree);
    let private = tree.join("bin/private");
    std::fs::create_dir(&private).unwrap();
    std::fs::write(private.join("notes"), "daemon's notes\n").unwrap();
    chmod(&private.join("notes"), 0o644);
    chown("1:1", &private);
    chmod(&private, 0o700);
    let store = dir.path().join("store");
    let stderr = failed_with(
        "a file below daemon's private directory",
        &add(&tree, &store),
        4,
        &[
            "bin/private/notes",
            "bin/private",
            "cannot enter",
            "user 65534",
        ],
    );
    assert!(!stderr.contains("daemon's notes"), "{stderr}");
    assert!(!store.exists(), "nothing was added, and no store made");
    chmod(&private, 0o711);
    let out = add(&tree, &store);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(objects(&store), 1);
}

/// Regression: in a group-shared checkout, a colleague's file that the
/// tree's owner reads through their group (mode 0660, group `nogroup`) was
/// refused as "not readable by everyone" (exit 4). It is taken; made
/// private to the colleague (0600), it is refused.
#[test]
fn a_colleague_s_file_the_owner_reads_through_their_group_is_taken() {
    let dir = dir_for_root_and_others("adds another user's tree");
    let tree = checkout(dir.path(), "shared");
    chown(NOBODY, &tree);
    chmod(&tree, 0o2775);
    let colleague = tree.join("bin/colleague.c");
    std::fs::write(&colleague, "int shared;\n").unwrap();
    chown(DAEMON_IN_NOGROUP, &colleague);
    chmod(&colleague, 0o660);
    let store = dir.path().join("store");
    let out = add(&tree, &store);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(objects(&store), 1);
    chmod(&colleague, 0o600);
    failed_with(
        "a colleague's private file",
        &add(&tree, &store),
        4,
        &["bin/colleague.c", "cannot read", "user 65534"],
    );
    assert_eq!(objects(&store), 1, "nothing more was added");
}
