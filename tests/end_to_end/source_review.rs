//! Regressions from the review of `fruix source add` and `fruix build
//! --source DIR`: fruix's own output inside the tree it adds (the store, the
//! state directory, the out-link, links into the store) is left out, so one
//! tree stays one source object however often it is built from inside; the
//! git facts are the tree's own (never an enclosing repository's, even in a
//! checkout another user owns); every `.git`, at any depth, is left out;
//! group-shared (setgid) directories are accepted.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::sources::{checkout, git};
use crate::util::{
    dir_for_root_and_others, failed_with, fruix, on_store, require_tool, root_secret_linked_at,
    run, verify_store, FIXTURE_BUILD_FLAGS,
};

/// Makes `tree` a git repository with everything in it committed; returns
/// the commit.
fn commit_all(tree: &Path) -> String {
    git(tree, &["init", "-q"]);
    git(tree, &["add", "-A"]);
    git(tree, &["commit", "-q", "-m", "import"]);
    git(tree, &["rev-parse", "HEAD"])
}

/// A copy of the miniature source tree at `dir/name` ([`checkout`]), made
/// a git repository with everything committed: the tree and the commit.
fn committed_checkout(dir: &Path, name: &str) -> (PathBuf, String) {
    let tree = checkout(dir, name);
    let commit = commit_all(&tree);
    (tree, commit)
}

/// Runs `cmd`, which must succeed and print one JSON value on stdout;
/// returns it and the command's stderr.
fn json_and_stderr(cmd: &mut Command) -> (Value, String) {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{cmd:?} printed more than JSON on stdout ({e}): {out:?}"));
    (json, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `fruix source add --json DIR --store STORE`, run in `cwd`.
fn add_in(cwd: &Path, dir: &str, store: &Path) -> (Value, String) {
    json_and_stderr(
        fruix()
            .current_dir(cwd)
            .args(["source", "add", "--json", dir, "--store"])
            .arg(store),
    )
}

/// The store's source objects' names.
fn source_objects(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-freebsd-source-"))
        .collect();
    names.sort();
    names
}

/// The `fruix: note:` lines of `stderr`.
fn notes(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("fruix: note:"))
        .collect()
}

/// Regression: a build run from inside its source tree fed its own output
/// back into its source: the out-link `./result` (untracked, so the tree
/// was dirty too) made every build a new source object; a state directory
/// in the tree (whose result roots hold setgid directories) had the second
/// build refused; a store in the tree was copied into itself. The store,
/// the state directory, the out-link and any link into the store are left
/// out, said once in a note on stderr: three builds have one source object
/// and one world.
#[test]
fn building_from_inside_the_tree_leaves_fruix_s_own_output_out_of_the_source() {
    require_tool("bmake", "bmake");
    let dir = tempfile::tempdir().unwrap();
    let (tree, commit) = committed_checkout(dir.path(), "s");
    let store = tree.join("frx-store");
    let build = || {
        json_and_stderr(
            fruix()
                .current_dir(&tree)
                .args(["build", "--executor", "local", "--json", "--source", "."])
                .args(["--store", "./frx-store", "--state-dir", "./frx-state"])
                .args(FIXTURE_BUILD_FLAGS),
        )
    };
    let (first, _) = build();
    assert!(tree.join("result").symlink_metadata().is_ok());
    let (second, _) = build();
    // An out-link by another name, deeper down: a link into the store.
    let bundle = second["result_store"].as_str().unwrap();
    std::os::unix::fs::symlink(bundle, tree.join("bin/old-result")).unwrap();
    let (third, stderr) = build();
    for built in [&second, &third] {
        assert_eq!(
            built["artifacts"]["world"]["store_path"], first["artifacts"]["world"]["store_path"],
            "the same tree is the same world"
        );
    }
    let sources = source_objects(&store);
    assert_eq!(sources.len(), 1, "one source object: {sources:?}");
    let [note] = notes(&stderr)[..] else {
        panic!("one note: {stderr}");
    };
    for left_out in ["frx-store", "frx-state", "result", "bin/old-result"] {
        assert!(note.contains(left_out), "{left_out}: {note}");
    }

    // `source add` of the tree (with the same state directory as its
    // default) finds the object the builds used: a clean checkout.
    let (added, _) = json_and_stderr(
        fruix()
            .current_dir(&tree)
            .env("FRUIX_STATE_DIR", "./frx-state")
            .args(["source", "add", "--json", ".", "--store", "./frx-store"]),
    );
    assert_eq!(added["new"], false, "{added}");
    assert_eq!(added["commit"], commit);
    assert_eq!(added["dirty"], false);
    let object = store.join(&sources[0]);
    for left_out in ["frx-store", "frx-state", "result", "bin/old-result"] {
        assert!(
            object.join(left_out).symlink_metadata().is_err(),
            "{left_out} is in the source object"
        );
    }
    assert!(object.join("bin").is_dir());
    verify_store(&store);
}

/// Regression: `source add . --store ./frx-store` copied the store into
/// the source object, which grew with every add.
#[test]
fn a_store_inside_the_tree_is_not_added_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "s");
    let store = tree.join("frx-store");
    let (first, stderr) = add_in(&tree, ".", Path::new("./frx-store"));
    // The store is made before the tree is read: left out already.
    assert_eq!(notes(&stderr).len(), 1, "{stderr}");
    for _ in 0..2 {
        let (again, stderr) = add_in(&tree, ".", Path::new("./frx-store"));
        assert_eq!(again["store_path"], first["store_path"]);
        assert_eq!(again["new"], false);
        assert!(notes(&stderr)[0].contains("frx-store"), "{stderr}");
    }
    assert_eq!(source_objects(&store).len(), 1);
    // A copy without the store, into a store elsewhere: the same object.
    checkout(dir.path(), "clean");
    let (outside, stderr) = add_in(dir.path(), "clean", &dir.path().join("store"));
    assert!(notes(&stderr).is_empty(), "nothing left out: {stderr}");
    let name = |v: &Value| {
        let path = PathBuf::from(v["store_path"].as_str().unwrap());
        path.file_name().unwrap().to_owned()
    };
    assert_eq!(name(&outside), name(&first));
}

/// Regression: root could not add a checkout another user owns: git
/// refused it ("detected dubious ownership", exit 3). fruix names the
/// tree as safe for its own commands, and still turns off its filter
/// drivers, which git listed only once the tree was safe.
#[test]
fn a_checkout_another_user_owns_has_its_facts_and_runs_none_of_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, commit) = committed_checkout(dir.path(), "src");
    let ran = dir.path().join("ran");
    std::fs::write(tree.join(".git/info/attributes"), "* filter=evil\n").unwrap();
    let evil = format!("sh -c 'echo ran >> {}; cat'", ran.display());
    git(&tree, &["config", "filter.evil.clean", &evil]);
    git(&tree, &["config", "filter.evil.required", "true"]);
    // Written again with the same content: git status re-reads it.
    let makefile = std::fs::read(tree.join("Makefile")).unwrap();
    std::fs::write(tree.join("Makefile"), makefile).unwrap();
    let mut add = on_store(&["source", "add"], &["--json"], &dir.path().join("store"));
    // git's own switch for "owned by someone else" (as `chown -R nobody`
    // makes it for root).
    add.env("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1").arg(&tree);
    let (added, _) = json_and_stderr(&mut add);
    assert!(!ran.exists(), "a filter ran: {:?}", std::fs::read(&ran));
    assert_eq!(added["commit"], commit);
    assert_eq!(added["dirty"], false);
}

/// Regression: with `GIT_DIR` in the environment (fruix run from a git
/// hook, say), git read that repository, not the tree's.
#[test]
fn git_s_environment_does_not_name_another_repository() {
    let dir = tempfile::tempdir().unwrap();
    let (tree, commit) = committed_checkout(dir.path(), "src");
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("file"), "other\n").unwrap();
    let other_commit = commit_all(&other);
    let mut add = on_store(&["source", "add"], &["--json"], &dir.path().join("store"));
    add.env("GIT_DIR", other.join(".git"))
        .env("GIT_WORK_TREE", &other)
        .arg(&tree);
    let (added, _) = json_and_stderr(&mut add);
    assert_ne!(commit, other_commit);
    assert_eq!(added["commit"], commit);
    assert_eq!(added["dirty"], false);
}

/// Regression: a tree with an empty `.git/` inside another checkout got
/// that checkout's commit and dirtiness (git searched upwards).
#[test]
fn a_tree_with_a_broken_git_directory_inside_a_checkout_has_no_git_facts() {
    let dir = tempfile::tempdir().unwrap();
    let outer = dir.path().join("outer");
    std::fs::create_dir(&outer).unwrap();
    let tree = checkout(&outer, "src");
    commit_all(&outer);
    std::fs::create_dir(tree.join(".git")).unwrap();
    let (added, _) = add_in(dir.path(), "outer/src", &dir.path().join("store"));
    assert_eq!(added["commit"], Value::Null, "{added}");
    assert_eq!(added["dirty"], Value::Null, "{added}");
}

/// Regression: a nested repository's `.git` (and a `.git` file, as a
/// submodule's or a linked worktree's) was copied into the source object:
/// remote URLs with tokens, and an identity that changed whenever git
/// touched it.
#[test]
fn every_dot_git_at_any_depth_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src");
    let nested = tree.join("contrib/nested");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::write(nested.join("nested.c"), "int nested;\n").unwrap();
    commit_all(&nested);
    git(
        &nested,
        &["remote", "add", "origin", "https://token@example.org/r.git"],
    );
    std::fs::create_dir_all(tree.join("contrib/linked")).unwrap();
    std::fs::write(tree.join("contrib/linked/.git"), "gitdir: /elsewhere\n").unwrap();
    let (added, _) = add_in(dir.path(), "src", &dir.path().join("store"));
    let object = PathBuf::from(added["store_path"].as_str().unwrap());
    assert!(object.join("contrib/nested/nested.c").is_file());
    for git_entry in ["contrib/nested/.git", "contrib/linked/.git"] {
        assert!(
            object.join(git_entry).symlink_metadata().is_err(),
            "{git_entry} is in the object"
        );
    }
    // git touching the nested repository changes nothing.
    git(&nested, &["gc", "-q"]);
    let (again, _) = add_in(dir.path(), "src", &dir.path().join("store"));
    assert_eq!(again["store_path"], added["store_path"]);
}

/// Sets the mode of `path` to `mode`.
fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Regression: a setgid directory (as group-shared checkouts have)
/// refused the whole tree (exit 4). Directory modes are no part of a
/// source (stored 0555): the tree is the same source object as without
/// the bit. A setuid file is still refused, saying how to clear the bits.
#[test]
fn setgid_directories_are_accepted_and_special_files_are_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    checkout(dir.path(), "plain");
    let shared = checkout(dir.path(), "shared");
    for d in [&shared, &shared.join("bin")] {
        chmod(d, 0o2775);
    }
    chmod(&shared.join("sys"), 0o1777);
    let (plain, _) = add_in(dir.path(), "plain", &store);
    let (shared_added, _) = add_in(dir.path(), "shared", &store);
    assert_eq!(shared_added["store_path"], plain["store_path"]);
    verify_store(&store);

    let file = shared.join("Makefile");
    chmod(&file, 0o4755);
    let out: Output = run(fruix()
        .args(["source", "add", "--store"])
        .arg(&store)
        .arg(&shared));
    let expected = ["Makefile", "is setuid, setgid or sticky", "chmod ug-s,o-t"];
    failed_with("source add", &out, 4, &expected);
}

/// A matrix run from inside its tree, its store, state and report
/// directories in it, uses one source object run after run: the state and
/// report directories were read into the source (only the store and links
/// into it were left out), so each run named another source object.
#[test]
fn a_matrix_run_from_inside_its_tree_keeps_one_source_object() {
    require_tool("bmake", "bmake");
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src");
    std::fs::write(
        tree.join("matrix.scm"),
        "(fruix-matrix\n  (format-version 1)\n  (source \".\")\n  (make-flags \"-DNO_ROOT\")\n  (jobs 1)\n  (source-date-epoch 1775420084)\n  (axes (executor \"local\")))\n",
    )
    .unwrap();
    // The default report directory (in the state directory), then one of
    // its own in the tree, twice.
    for (run_number, report) in [(1, None), (2, Some("report")), (3, Some("report"))] {
        let mut cmd = fruix();
        cmd.current_dir(&tree)
            .args(["matrix", "run", "matrix.scm", "--quiet", "--store"])
            .args(["frx-store", "--state-dir", "frx-state"]);
        if let Some(report) = report {
            cmd.args(["--report-dir", report]);
        }
        let out = run(&mut cmd);
        assert!(out.status.success(), "run {run_number}: {out:?}");
        assert_eq!(
            source_objects(&tree.join("frx-store")).len(),
            1,
            "run {run_number}: another source object"
        );
    }
}

/// Regression: root adding a user's tree read everything in it, a hard
/// link to another user's private file included (FreeBSD lets a user make
/// one by default), into the store, which anyone may read. A file neither
/// the tree owner's nor readable by everyone is refused now (exit 4),
/// nothing added; one readable by everyone is taken.
#[test]
fn root_adding_a_user_s_tree_refuses_a_file_its_owner_could_not_read() {
    let dir = dir_for_root_and_others("adds another user's tree");
    let tree = checkout(dir.path(), "users");
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&tree)
        .status()
        .unwrap();
    assert!(status.success());
    let secret = root_secret_linked_at(dir.path(), "root's\n", &tree.join("bin/linked"));
    let store = dir.path().join("store");
    let add = |tree: &Path| {
        let mut cmd = fruix();
        cmd.args(["source", "add", "--quiet", "--store"])
            .arg(&store)
            .arg(tree);
        run(&mut cmd)
    };
    let stderr = failed_with(
        "a hard link to root's private file",
        &add(&tree),
        4,
        &["bin/linked", "cannot read", "user 65534"],
    );
    assert!(!stderr.contains("root's"), "{stderr}");
    assert!(!store.exists(), "nothing was added, and no store made");
    // Readable by everyone, it is no secret: taken.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = add(&tree);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(source_objects(&store).len(), 1);
}
