//! Sources as store objects, as users run them: one tree checked out twice
//! is one source object and gives the same artifacts; a git checkout's
//! commit and dirtiness are recorded; ignored build output is left out.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{
    fixture_source, fruix, json_error, require_tool, run, run_json, run_ok, run_with_deadline,
    source_add, store_and_state, verify_store,
};

/// A copy of the miniature FreeBSD tree at `dir/name`.
pub(crate) fn checkout(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("cp")
        .arg("-a")
        .arg(fixture_source())
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// `git ARGS` in `repo`, with a fixed identity and no global
/// configuration; its stdout, trimmed.
pub(crate) fn git(repo: &Path, args: &[&str]) -> String {
    require_tool("git", "git");
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            // No global configuration: a file that is not there.
            .env("GIT_CONFIG_GLOBAL", "/nonexistent/gitconfig"),
    )
    .trim()
    .to_string()
}

/// Makes `tree` a git checkout with one commit, whose `.gitignore` ignores
/// `obj/`; returns the commit.
fn commit_all(tree: &Path) -> String {
    std::fs::write(tree.join(".gitignore"), "obj/\n").unwrap();
    git(tree, &["init", "-q"]);
    git(tree, &["add", "-A"]);
    git(tree, &["commit", "-q", "-m", "import"]);
    git(tree, &["rev-parse", "HEAD"])
}

/// `fruix build --executor local --source SOURCE` into `dir`'s store, as JSON.
fn build(dir: &Path, source: &Path, link: &str) -> Value {
    run_json(
        fruix()
            .args(["build", "--executor", "local", "--json", "--source"])
            .arg(source)
            .args(store_and_state(dir))
            .arg("--out-link")
            .arg(dir.join(link))
            .args(["--source-date-epoch", "1775420084", "--make-flag=-DNO_ROOT"]),
    )
}

/// `fruix COMMAND --json --store DIR/store OPERAND`, as JSON.
fn json_on(dir: &Path, command: [&str; 2], operand: impl AsRef<OsStr>) -> Value {
    run_json(
        fruix()
            .args(command)
            .args(["--json", "--store"])
            .arg(dir.join("store"))
            .arg(operand),
    )
}

/// `fruix source add SOURCE --json` into `dir`'s store.
fn add(dir: &Path, source: &Path) -> Value {
    json_on(dir, ["source", "add"], source)
}

/// [`add`]: the store path of the source object it made.
fn added_object(dir: &Path, source: &Path) -> String {
    add(dir, source)["store_path"].as_str().unwrap().to_string()
}

fn info(dir: &Path, path: &str) -> Value {
    json_on(dir, ["store", "info"], path)[0].clone()
}

#[test]
fn two_checkouts_of_one_tree_give_the_same_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let a = build(dir.path(), &checkout(dir.path(), "a"), "result-a");
    let b = build(dir.path(), &checkout(dir.path(), "elsewhere-b"), "result-b");
    for artifact in ["world", "kernel", "headers", "bootloader"] {
        assert_eq!(
            a["artifacts"][artifact]["store_path"], b["artifacts"][artifact]["store_path"],
            "{artifact}"
        );
    }
    // One source object, referenced by both bundles.
    let source = add(dir.path(), &checkout(dir.path(), "c"));
    assert_eq!(source["new"], false, "the same tree is already there");
    let path = source["store_path"].as_str().unwrap();
    assert!(path.ends_with("-freebsd-source-default"), "{path}");
    let referrers = run_ok(
        fruix()
            .args(["store", "query", "--referrers"])
            .args(store_and_state(dir.path()))
            .arg(path),
    );
    for bundle in [&a["result_store"], &b["result_store"]] {
        assert!(referrers.contains(bundle.as_str().unwrap()), "{referrers}");
    }
    verify_store(&dir.path().join("store"));
}

#[test]
fn a_git_checkout_records_its_commit_and_leaves_ignored_output_out() {
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src");
    let commit = commit_all(&tree);
    // Build output git ignores: not part of the source.
    std::fs::create_dir_all(tree.join("obj/amd64")).unwrap();
    std::fs::write(tree.join("obj/amd64/kernel.o"), b"not source").unwrap();
    let source = add(dir.path(), &tree);
    assert_eq!(source["commit"], commit);
    assert_eq!(source["dirty"], false);
    let path = source["store_path"].as_str().unwrap();
    assert!(!Path::new(path).join("obj").exists());
    assert!(!Path::new(path).join(".git").exists());
    assert!(Path::new(path).join(".gitignore").exists());
    let text = std::fs::read_to_string(Path::new(path).join(".fruix-source.scm")).unwrap();
    assert!(text.contains(&format!("(commit \"{commit}\")")), "{text}");
    assert_eq!(info(dir.path(), path)["commit"], commit);
    // The build records it in the bundle too.
    let built = build(dir.path(), &tree, "result");
    let bundle = built["result_store"].as_str().unwrap();
    assert_eq!(info(dir.path(), bundle)["commit"], commit);
    let metadata =
        std::fs::read_to_string(Path::new(bundle).join(".fruix-native-build-result.scm")).unwrap();
    assert!(
        metadata.contains(path) && metadata.contains(&commit),
        "{metadata}"
    );
}

#[test]
fn a_dirty_worktree_is_flagged_and_is_another_source() {
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src");
    commit_all(&tree);
    let clean = add(dir.path(), &tree);
    std::fs::write(tree.join("Makefile.local"), b"# local change\n").unwrap();
    let dirty = add(dir.path(), &tree);
    assert_eq!(dirty["dirty"], true);
    assert_eq!(dirty["new"], true);
    assert_ne!(clean["store_path"], dirty["store_path"]);
    assert_eq!(
        info(dir.path(), dirty["store_path"].as_str().unwrap())["dirty"],
        true
    );
}

/// The store's source objects.
fn sources_in(store: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("-freebsd-source-default"))
        .collect()
}

#[test]
fn a_running_build_keeps_its_source_from_collections() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src");
    let store = dir.path().join("store");
    let mut child = fruix()
        .args(["build", "--executor", "local", "--verbose", "--source"])
        .arg(&tree)
        .args(store_and_state(dir.path()))
        .args(["--make-flag=-DNO_ROOT", "--make-flag=HOLD_BUILD=yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the build's log").unwrap();
        if line.contains("HOLD_BUILD=yes: waiting to be interrupted") {
            break;
        }
    }
    let source = sources_in(&store);
    assert_eq!(source.len(), 1, "{source:?}");
    // No root names it, but the running build does (a temporary root).
    let gc = |extra: &[&str]| {
        crate::util::run(
            fruix()
                .args(["store"])
                .args(extra)
                .args(crate::util::made_state(dir.path())),
        )
    };
    assert!(gc(&["gc", "--quiet"]).status.success());
    assert!(source[0].exists(), "a running build's source was collected");
    let refused = gc(&["delete", source[0].to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("a running build"));
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    // The build is gone and promoted nothing: its source goes now.
    assert!(gc(&["gc", "--quiet"]).status.success());
    assert!(sources_in(&store).is_empty());
}

/// Regression: `build` refused a source directory whose name holds control
/// characters (no metadata records that name), though `source add` took it.
#[test]
fn a_source_directory_named_with_control_characters_builds() {
    let dir = tempfile::tempdir().unwrap();
    let tree = checkout(dir.path(), "src\nnl\u{1b}[31mred");
    let report = build(dir.path(), &tree, "result");
    let object = added_object(dir.path(), &tree);
    let metadata = std::fs::read_to_string(
        Path::new(report["result_store"].as_str().unwrap()).join(".fruix-native-build-result.scm"),
    )
    .unwrap();
    assert!(
        metadata.contains(&object),
        "built from its source object: {metadata}"
    );
}

/// Regression: a source object of another store given as a source failed
/// as an invalid tree (exit 4), telling the user to rename its metadata
/// file. It is a usage error that says what to give instead.
#[test]
fn another_store_s_source_object_is_refused_as_a_source_saying_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let object = added_object(dir.path(), &checkout(dir.path(), "src"));
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let expected = ["is a store object, not a source tree", "fruix store copy"];
    let out = crate::util::run(
        fruix()
            .args(["build", "--executor", "local", "--source", &object])
            .args(store_and_state(&elsewhere)),
    );
    crate::util::failed_with("build", &out, 2, &expected);
    let out = crate::util::run(
        fruix()
            .args(["source", "add", &object, "--store"])
            .arg(elsewhere.join("store")),
    );
    crate::util::failed_with("source add", &out, 2, &expected);
    assert!(!elsewhere.join("store").exists(), "no store was made");
}

/// Regression: `source add` of a source object of its own store told the
/// user to give "a source object of this store", what they had given. It
/// says the object is there already, and how to build from it.
#[test]
fn adding_a_source_object_of_this_store_says_it_is_there_already() {
    let dir = tempfile::tempdir().unwrap();
    let object = added_object(dir.path(), &checkout(dir.path(), "src"));
    let out = crate::util::run(
        fruix()
            .args(["source", "add", &object, "--store"])
            .arg(dir.path().join("store")),
    );
    let expected = [
        "it is in this store already",
        &format!("fruix build --source {object}"),
    ];
    crate::util::failed_with("source add", &out, 2, &expected);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("fruix store copy"), "{stderr}");
}

#[test]
fn a_matrix_source_may_be_a_source_object() {
    let dir = tempfile::tempdir().unwrap();
    let source = add(dir.path(), &checkout(dir.path(), "src"));
    let object = source["store_path"].as_str().unwrap();
    let matrix = dir.path().join("matrix.scm");
    std::fs::write(
        &matrix,
        format!(
            "(fruix-matrix\n  (format-version 1)\n  (source {object:?})\n  (make-flags \"-DNO_ROOT\")\n  (jobs 1)\n  (source-date-epoch 1775420084)\n  (axes (executor \"local\")))\n"
        ),
    )
    .unwrap();
    let out = crate::util::run(
        fruix()
            .args(["matrix", "run", "--json"])
            .arg(&matrix)
            .args(store_and_state(dir.path())),
    );
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bundle = report["cells"][0]["result_store"].as_str().unwrap();
    let metadata =
        std::fs::read_to_string(Path::new(bundle).join(".fruix-native-build-result.scm")).unwrap();
    assert!(metadata.contains(object), "{metadata}");
    assert_eq!(
        sources_in(&dir.path().join("store")).len(),
        1,
        "no second source object"
    );
}

#[test]
fn repairing_a_corrupt_source_removes_what_was_built_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let built = build(dir.path(), &checkout(dir.path(), "a"), "result-a");
    let store = dir.path().join("store");
    let [source] = sources_in(&store).try_into().unwrap();
    // Corrupt the source behind fruix's back (the tests run as root).
    std::fs::write(source.join("Makefile"), "tampered\n").unwrap();
    let out = run_ok(
        fruix()
            .args(["store", "verify", "--repair", "--store"])
            .arg(&store),
    );
    let removed = |what: &str, path: &str| format!("removed {what} {path}\n");
    assert!(
        out.contains(&removed("object", source.to_str().unwrap())),
        "{out}"
    );
    for artifact in ["world", "kernel", "headers", "bootloader"] {
        let path = built["artifacts"][artifact]["store_path"].as_str().unwrap();
        assert!(
            out.contains(&removed("object built from a removed object", path)),
            "{artifact}: {out}"
        );
    }
    let bundle = built["result_store"].as_str().unwrap();
    assert!(out.contains(&removed("result bundle", bundle)), "{out}");
    assert!(crate::util::object_names(&store).is_empty());
    verify_store(&store);
}

/// Regression: `source add` read the tree's makefile and `newvers.sh`
/// whole, through symlinks: a FIFO there hung it. Both are read as
/// metadata is (never followed, never blocking, at most 1 MiB): refused
/// at once, leaving no source object.
#[test]
fn a_fifo_as_newvers_or_makefile_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for (name, status) in [("sys/conf/newvers.sh", 4), ("Makefile", 2)] {
        let tree = checkout(dir.path(), &name.replace('/', "-"));
        std::fs::remove_file(tree.join(name)).unwrap();
        fruix_core::testing::mkfifo(&tree.join(name)).unwrap();
        let mut cmd = fruix();
        cmd.args(["source", "add", "--json", "--store"])
            .arg(dir.path().join("store"))
            .arg(&tree);
        let out = run_with_deadline(&mut cmd, Duration::from_secs(60));
        json_error(&out, status, "is a FIFO");
        assert!(
            !dir.path().join("store").exists(),
            "{name}: a store was left"
        );
    }
}

/// Regression: a build run with `--no-promote` keeps no root on its
/// source, so a `store gc` removed the source object; promoting the result
/// root later then succeeded, its objects naming a source the store no
/// longer had (and no registered reference to it). The promotion is
/// refused now, saying what to do; done, the source is referenced again.
#[test]
fn promoting_after_the_source_was_collected_is_refused_until_it_is_added_again() {
    require_tool("bmake", "bmake");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = checkout(d, "tree");
    let root = d.join("root");
    run_ok(
        fruix()
            .args([
                "build",
                "--executor",
                "local",
                "--no-promote",
                "--quiet",
                "--source",
            ])
            .arg(&tree)
            .args(store_and_state(d))
            .arg("--result-root")
            .arg(&root)
            .args(["--source-date-epoch", "1775420084", "--make-flag=-DNO_ROOT"]),
    );
    run_ok(
        fruix()
            .args(["store", "gc", "--quiet"])
            .args(crate::util::made_state(d)),
    );
    assert!(
        sources_in(&d.join("store")).is_empty(),
        "the source was collected"
    );
    let promote = || {
        let mut cmd = fruix();
        cmd.args(["native-build", "promote", "--json", "--no-out-link"])
            .args(store_and_state(d))
            .arg(&root);
        cmd
    };
    let out = crate::util::run(&mut promote());
    json_error(
        &out,
        2,
        "the source object this result root was built from is not in the store",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("fruix source add"));
    let added = add(d, &tree);
    let report = run_json(&mut promote());
    let references = run_json(
        fruix()
            .args(["store", "query", "--json", "--references"])
            .args(store_and_state(d))
            .arg(report["result_store"].as_str().unwrap()),
    );
    assert!(
        references
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == &added["store_path"]),
        "{references} {added}"
    );
}

/// Regression: a `--name` of 186 to 199 bytes passed its check, then failed
/// (exit 3, "store … is not writable: File name too long"): the object's
/// lock and temporary names were longer than a file name can be. And a
/// name of characters a store name cannot have (`é`, a space) was added,
/// making a store `store verify` then called inconsistent. Every name the
/// check lets through is added now; the others are refused, as usage.
#[test]
fn a_source_name_is_what_a_store_name_can_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let longest = "a".repeat(199);
    let report = run_json(&mut source_add(&store, &["--json", "--name", &longest]));
    let path = report["store_path"].as_str().unwrap();
    assert!(
        path.ends_with(&format!("-freebsd-source-{longest}")),
        "{path}"
    );
    assert_eq!(Path::new(path).file_name().unwrap().len(), 255);
    verify_store(&store);
    let rule = "is not usable in a store name: use 1 to 199 characters from A-Z a-z 0-9 . _ + -, not starting with . or -";
    for name in [&"a".repeat(200), "été", "a b", ".hidden", "-x", "a/b"] {
        let out = run(&mut source_add(&store, &[&format!("--name={name}")]));
        crate::util::failed_with(name, &out, 2, &["--name ", rule]);
    }
    assert_eq!(crate::util::object_names(&store).len(), 1);
}
