//! Regressions from the second review of `fruix source add`: what the
//! source object records (commit, dirtiness, version) is true of what it
//! stores, even of a tree changed while fruix read it; the version is never
//! read through a symlinked directory; symlinks that lead out of the tree
//! are said; a store or state directory that is the tree is refused; the
//! checkout's configuration cannot hide a change from fruix's git.
//!
//! A change "while fruix reads the tree" is made deterministically: a `git`
//! first on fruix's `PATH` runs the real git, then, once, right after the
//! command fruix runs before its walk (`status`, or `rev-parse` for a tree
//! that is no checkout), changes the tree. Without a re-check, the walk
//! then stores the changed tree under what git (or `newvers.sh`) said
//! before.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::sources::{checkout, git};
use crate::util::{fruix, json_error, listing, require_tool, run, verify_store};

/// `git add -A` and a commit in the repository `tree` made.
fn commit_all(tree: &Path) {
    git(tree, &["init", "-q"]);
    git(tree, &["add", "-A"]);
    git(tree, &["commit", "-q", "-m", "import"]);
}

/// `s` quoted for `sh`.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A directory holding a `git` that runs the real one, then, after the
/// first command whose third argument (fruix runs `git -C DIR COMMAND`) is
/// `command`, runs `change` with `sh`, once.
fn changing_git(dir: &Path, command: &str, change: &str) -> PathBuf {
    let real = require_tool("git", "git");
    let bin = dir.join("changing-git");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\n{} \"$@\"\ncode=$?\nif [ \"$3\" = {} ] && mkdir {} 2>/dev/null; then\n  {}\nfi\nexit $code\n",
        quoted(real.to_str().unwrap()),
        quoted(command),
        quoted(bin.join("changed").to_str().unwrap()),
        change
    );
    let git = bin.join("git");
    std::fs::write(&git, script).unwrap();
    std::fs::set_permissions(&git, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// `fruix source add --json TREE --store STORE`, with `bin` first on
/// `PATH` when given.
fn add(tree: &Path, store: &Path, bin: Option<&Path>) -> Output {
    let mut cmd = fruix();
    cmd.args(["source", "add", "--json", "--store"])
        .arg(store)
        .arg(tree);
    if let Some(bin) = bin {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin.to_path_buf()];
        paths.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths).unwrap());
    }
    run(&mut cmd)
}

/// The JSON a successful `out` printed, and its stderr.
fn added(out: &Output) -> (Value, String) {
    assert!(out.status.success(), "{out:?}");
    let json = serde_json::from_slice(&out.stdout).unwrap();
    (json, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Regression: git was asked (commit, status, ignored files) before the
/// walk and never again: a file changed between the two was stored in an
/// object that said "commit X, clean". git is asked again after the walk;
/// an answer that differs refuses the add (exit 4), leaving nothing.
#[test]
fn a_checkout_changed_after_git_answered_is_refused_not_called_clean() {
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src");
    commit_all(&tree);
    let makefile = tree.join("Makefile");
    let change = format!("echo '# changed' >> {}", quoted(makefile.to_str().unwrap()));
    let bin = changing_git(dir.path(), "status", &change);
    let store = dir.path().join("store");
    let out = add(&tree, &store, Some(&bin));
    assert!(bin.join("changed").exists(), "the tree was changed");
    json_error(&out, 4, "the tree changed while fruix was reading it");
    json_error(&out, 4, "git says otherwise of it now");
    assert!(!store.exists(), "a store was left");
    // Added again, nothing changing it: the dirty tree it is.
    let (json, _) = added(&add(&tree, &store, Some(&bin)));
    assert_eq!(json["dirty"], true, "{json}");
    verify_store(&store);
}

/// Regression: the version was read from `sys/conf/newvers.sh` before the
/// walk: one changed in between was stored in an object naming the
/// version it no longer declared. The version is read again from what was
/// stored; one that differs refuses the add (exit 4), leaving nothing.
#[test]
fn newvers_changed_before_the_walk_is_refused_not_recorded_stale() {
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src");
    // No checkout (an empty `.git`): fruix asks git only whether it is one.
    std::fs::create_dir(tree.join(".git")).unwrap();
    let newvers = tree.join("sys/conf/newvers.sh");
    let change = format!(
        "sed -i 's/^REVISION=.*/REVISION=\"99.9\"/' {}",
        quoted(newvers.to_str().unwrap())
    );
    let bin = changing_git(dir.path(), "rev-parse", &change);
    let store = dir.path().join("store");
    let out = add(&tree, &store, Some(&bin));
    assert!(bin.join("changed").exists(), "the tree was changed");
    let text = std::fs::read_to_string(&newvers).unwrap();
    assert!(text.contains("REVISION=\"99.9\""), "{text}");
    json_error(
        &out,
        4,
        "sys/conf/newvers.sh: it declares another version now",
    );
    json_error(&out, 4, "the tree changed while fruix was reading it");
    assert!(!store.exists(), "a store was left");
    let (json, _) = added(&add(&tree, &store, None));
    assert_eq!(json["version"], "99.9-STABLE", "{json}");
}

/// Regression: `newvers.sh` was opened by path, only its last component
/// not followed: with `sys` (or `sys/conf`) a symlink to another
/// directory, the object recorded the version of a file it does not hold.
/// A symlinked directory on the way is refused (exit 4, as a symlinked
/// `newvers.sh` is), leaving nothing.
#[test]
fn newvers_through_a_symlinked_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (link, target) in fruix_core::testing::newvers_outside(dir.path()) {
        let tree = checkout(dir.path(), &link.replace('/', "-"));
        std::fs::remove_dir_all(tree.join(link)).unwrap();
        std::os::unix::fs::symlink(&target, tree.join(link)).unwrap();
        let store = dir.path().join("store");
        let out = add(&tree, &store, None);
        let says = format!("{link}: is a symlink; fruix never follows symlinks in a source tree");
        json_error(&out, 4, &says);
        assert!(!store.exists(), "{link}: a store was left");
    }
}

/// Regression: symlinks leading out of the tree (absolute, or `..` above
/// its top, the tree's own links followed) were stored without a word: a
/// build reading through them reads what the object does not hold. They
/// are stored as they are (as Nix and Guix store them), and a warning on
/// stderr counts them and names the first, escaped.
#[test]
fn symlinks_leading_out_of_the_tree_are_stored_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src");
    let links = [
        ("\x1b[31mred", "/etc/passwd"),
        ("bin/up", "../../outside"),
        ("etc-link", "/etc"),
        ("via", "bin/up"),
        ("in", "bin"),
        ("bin/ok", "../Makefile"),
        ("bin/down-up", "../bin/../Makefile"),
        ("loop", "loop"),
    ];
    for (link, target) in links {
        std::fs::create_dir_all(tree.join(link).parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, tree.join(link)).unwrap();
    }
    let store = dir.path().join("store");
    let (json, stderr) = added(&add(&tree, &store, None));
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("fruix: warning:"))
        .collect();
    let [warning] = warnings[..] else {
        panic!("one warning: {stderr}");
    };
    assert!(
        warning.contains("4 symlinks lead out of the tree")
            && warning.contains(r"first \033[31mred"),
        "{warning}"
    );
    let object = Path::new(json["store_path"].as_str().unwrap());
    for (link, target) in links {
        assert_eq!(
            std::fs::read_link(object.join(link)).unwrap(),
            Path::new(target),
            "{link}"
        );
    }
    // None leading out: no warning.
    let plain = checkout(dir.path(), "plain");
    let (_, stderr) = added(&add(&plain, &store, None));
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// Regression: `source add DIR --store DIR` read fruix's own temporaries
/// into the source and failed as "the tree changed"; a state directory
/// that is the tree was read into it. Both are refused before anything is
/// made (exit 2).
#[test]
fn a_store_or_state_directory_that_is_the_tree_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src");
    let before = listing(&tree);
    let out = add(&tree, &tree, None);
    json_error(&out, 2, "is the store");
    assert_eq!(listing(&tree), before, "something was made");
    let store = dir.path().join("store");
    let mut cmd = fruix();
    cmd.env("FRUIX_STATE_DIR", &tree)
        .args(["source", "add", "--json", "--store"])
        .arg(&store)
        .arg(&tree);
    json_error(&run(&mut cmd), 2, "is the state directory");
    assert_eq!(listing(&tree), before, "something was made");
    assert!(!store.exists(), "a store was left");
}

/// Regression: `fruix build --source TREE --store TREE` made the store in
/// the tree (its `.fruix`, `.links`, `.locks`) before the source add
/// refused it. It is refused (exit 2) before anything is made.
#[test]
fn a_build_whose_store_is_its_source_tree_is_refused_before_making_it() {
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src");
    let before = listing(&tree);
    let mut cmd = fruix();
    cmd.args(["build", "--executor", "local", "--json", "--source"])
        .arg(&tree)
        .arg("--store")
        .arg(&tree)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--result-root")
        .arg(dir.path().join("root"));
    json_error(&run(&mut cmd), 2, "is the store");
    assert_eq!(listing(&tree), before, "something was made");
    assert!(!dir.path().join("root").exists(), "a result root was made");
}

/// Returns once a file made now has a later inode change time, in whole
/// seconds (what git compares), than `file`: a rewrite of `file` then
/// changes its change time as git sees it.
fn later_second_than(file: &Path) {
    use std::os::unix::fs::MetadataExt;
    let ctime = std::fs::metadata(file).unwrap().ctime();
    let probe = file.with_extension("probe");
    loop {
        std::fs::write(&probe, "").unwrap();
        let later = std::fs::metadata(&probe).unwrap().ctime() > ctime;
        std::fs::remove_file(&probe).unwrap();
        if later {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Regression: fruix's git read the checkout's configuration that hides
/// changes from `git status`: with `core.fileMode false` a new executable
/// bit, with `core.trustctime false` or `core.checkStat minimal` a
/// same-size rewrite whose modification time was set back, with
/// `core.symlinks false` a tracked link replaced by a file holding its
/// target, were all "clean" (the object holds them). fruix sets them back
/// to git's defaults.
#[test]
fn the_checkout_s_configuration_cannot_hide_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800);
    let rewrite = |tree: &Path| {
        let readme = tree.join("README.txt");
        let mut bytes = std::fs::read(&readme).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&readme, bytes).unwrap();
        let file = std::fs::File::options().write(true).open(&readme).unwrap();
        file.set_modified(old).unwrap();
    };
    type Change<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, &str, Change); 4] = [
        ("core.fileMode", "false", &|tree| {
            let mode = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(tree.join("Makefile"), mode).unwrap();
        }),
        ("core.trustctime", "false", &rewrite),
        ("core.checkStat", "minimal", &rewrite),
        ("core.symlinks", "false", &|tree| {
            std::fs::remove_file(tree.join("link")).unwrap();
            std::fs::write(tree.join("link"), "Makefile").unwrap();
        }),
    ];
    for (key, value, change) in cases {
        let tree = checkout(dir.path(), key);
        std::fs::write(tree.join("README.txt"), "a readme\n").unwrap();
        let readme = std::fs::File::options()
            .write(true)
            .open(tree.join("README.txt"))
            .unwrap();
        readme.set_modified(old).unwrap();
        std::os::unix::fs::symlink("Makefile", tree.join("link")).unwrap();
        commit_all(&tree);
        git(&tree, &["config", key, value]);
        later_second_than(&tree.join("README.txt"));
        change(&tree);
        let status = Command::new("git")
            .arg("-C")
            .arg(&tree)
            .args(["status", "--porcelain"])
            .output()
            .unwrap();
        assert!(status.stdout.is_empty(), "{key}: git status shows it");
        let (json, _) = added(&add(&tree, &dir.path().join("store"), None));
        assert_eq!(json["dirty"], true, "{key} {value}: {json}");
    }
}
