//! Root adding a user's tree publishes only what that user could read, as
//! the kernel decides it: the directories on the way count, and so do the
//! user's groups (a group-shared checkout).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::sources::checkout;
use crate::util::{dir_for_root_and_others, failed_with, fruix, require_tool, run};

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
/// is refused (exit 4, nothing added), checked on the descriptor the walk
/// reads the directory through (a check by path could be passed by a
/// directory swapped in between); once the directory lets its owner list
/// and enter it (mode 0755), it is taken; one they could enter but not
/// list (0711) is refused as well, its names being no more theirs to read.
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
        &["bin/private", "cannot list and enter", "user 65534"],
    );
    assert!(!stderr.contains("daemon's notes"), "{stderr}");
    assert!(!store.exists(), "nothing was added, and no store made");
    chmod(&private, 0o711);
    failed_with(
        "daemon's directory nobody may enter but not list",
        &add(&tree, &store),
        4,
        &["bin/private", "mode 0711", "cannot list and enter"],
    );
    chmod(&private, 0o755);
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

/// Regression: an ACL was not read: a colleague's file readable by
/// everyone but denied to the tree's owner by an ACL (`setfacl -m
/// u:nobody:-`) was published. fruix does not evaluate ACLs: another
/// user's entry carrying one is refused (exit 4); without it, taken.
#[test]
fn another_user_s_file_carrying_an_acl_is_refused() {
    let setfacl = require_tool("setfacl", "acl");
    let dir = dir_for_root_and_others("adds another user's tree");
    let tree = checkout(dir.path(), "acl");
    chown(NOBODY, &tree);
    let denied = tree.join("bin/denied.c");
    std::fs::write(&denied, "int denied;\n").unwrap();
    chown("1:1", &denied);
    chmod(&denied, 0o644);
    let status = Command::new(&setfacl)
        .args(["-m", "u:nobody:-"])
        .arg(&denied)
        .status()
        .unwrap();
    assert!(status.success(), "setfacl");
    let store = dir.path().join("store");
    failed_with(
        "daemon's file with an ACL denying nobody",
        &add(&tree, &store),
        4,
        &["bin/denied.c", "carries an access ACL", "setfacl -b"],
    );
    assert!(!store.exists(), "nothing was added, and no store made");
    let status = Command::new(&setfacl)
        .arg("-b")
        .arg(&denied)
        .status()
        .unwrap();
    assert!(status.success(), "setfacl -b");
    let out = add(&tree, &store);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(objects(&store), 1);
}
