//! What a review of a store two users wrote found: a user's `store gc` and
//! `store delete` said they removed root's objects, which only went to a
//! hidden temporary nobody could remove (exit 0), and a user's promotion
//! linking a pool entry root made failed with a bare "Operation not
//! permitted".

use std::path::PathBuf;
use std::process::Command;

use crate::util::{
    as_nobody, dir_for_root_and_others, fixture_source, object_names, promote_as_nobody, run,
    run_ok, sample_root, snapshot, source_add, stderr_of_exit, NOBODY,
};

/// A store and a state directory of [`NOBODY`]'s (in `dir`, theirs too)
/// holding nobody's objects of the sample result root, no root keeping
/// them, and root's source object of the miniature tree (`--name
/// rootsrc`), no root keeping it either. Returns the store, the state
/// directory, nobody's object names and root's source object's path.
struct SharedStore {
    dir: tempfile::TempDir,
    store: PathBuf,
    state: PathBuf,
    nobodys: Vec<String>,
    roots: PathBuf,
}

impl SharedStore {
    fn new() -> SharedStore {
        let dir = dir_for_root_and_others("writes into a store of nobody's as root");
        let (store, state) = (dir.path().join("store"), dir.path().join("state"));
        std::fs::create_dir(&state).unwrap();
        for path in [dir.path(), &state] {
            std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let root = sample_root(dir.path(), "root");
        let out = promote_as_nobody(dir.path(), &store, &root);
        stderr_of_exit(&out, 0);
        let nobodys = object_names(&store);
        assert!(!nobodys.is_empty());
        let path = run_ok(&mut source_add(&store, &["--quiet", "--name", "rootsrc"]));
        let roots = PathBuf::from(path.trim());
        assert_eq!(roots.parent(), Some(store.as_path()), "{path}");
        SharedStore {
            dir,
            store,
            state,
            nobodys,
            roots,
        }
    }

    /// `fruix WORDS --store STORE`, as [`NOBODY`].
    fn nobody(&self, words: &[&str]) -> Command {
        let mut cmd = as_nobody(self.dir.path());
        cmd.args(words).arg("--store").arg(&self.store);
        cmd
    }

    /// [`Self::nobody`] with `--state-dir STATE`.
    fn nobody_with_state(&self, words: &[&str]) -> Command {
        let mut cmd = self.nobody(words);
        cmd.arg("--state-dir").arg(&self.state);
        cmd
    }

    /// The names of the entries of the store that are hidden temporaries.
    fn temporaries(&self) -> Vec<String> {
        std::fs::read_dir(&self.store)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect()
    }

    /// Root's source object's name.
    fn roots_name(&self) -> String {
        self.roots
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

/// Regression: a user's `store gc` said it removed root's object (exit 0),
/// which it had only renamed to a `.tmp-gc-*` it could not remove, every
/// later collection counting it as `1 temporary`. Root's object stays
/// under its name and registered, said on stderr and in `--json`
/// (`refused`), and the collection fails (exit 3), nobody's own objects
/// removed.
#[test]
fn a_users_collection_leaves_roots_object_and_says_so() {
    let s = SharedStore::new();
    let out = run(&mut s.nobody_with_state(&["store", "gc", "--json"]));
    let stderr = stderr_of_exit(&out, 3);
    let roots = s.roots.to_str().unwrap();
    assert!(stderr.contains(roots), "{stderr}");
    assert!(stderr.contains("owned by uid 0"), "{stderr}");
    assert!(stderr.contains("as uid 0 or as root"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = report["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{report}");
    assert_eq!(refused[0]["path"], roots, "{report}");
    assert_eq!(refused[0]["owner"], 0, "{report}");
    assert_eq!(refused[0]["temporary"], false, "{report}");
    let removed = crate::util::strings_of(&report["objects"], "path");
    assert!(!removed.contains(&roots), "{report}");
    assert_eq!(removed.len(), s.nobodys.len(), "{report}");
    assert_eq!(report["temporaries"], 0, "{report}");
    assert_eq!(object_names(&s.store), vec![s.roots_name()]);
    assert_eq!(s.temporaries(), Vec::<String>::new());
    let listed = run_ok(&mut s.nobody(&["store", "list"]));
    assert!(listed.contains(&s.roots_name()), "{listed}");
    stderr_of_exit(&run(&mut s.nobody(&["store", "verify", "--quiet"])), 0);
    // The next collection says the same, and counts no temporary.
    let out = run(&mut s.nobody_with_state(&["store", "gc"]));
    let stderr = stderr_of_exit(&out, 3);
    assert!(stderr.contains(roots), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("removed 0 object(s)"), "{stdout}");
    assert!(stdout.contains(", 0 temporaries,"), "{stdout}");
    assert_eq!(s.temporaries(), Vec::<String>::new());
}

/// Regression: a temporary a user's collection could not remove (root's
/// `.tmp-gc-*`, left by an earlier version) was counted as removed on every
/// run (`1 temporary`, exit 0). It is said, not counted, and the collection
/// fails (exit 3).
#[test]
fn a_temporary_the_user_cannot_remove_is_said_not_counted() {
    use std::os::unix::fs::PermissionsExt;
    let s = SharedStore::new();
    let left = s.store.join(".tmp-gc-left");
    std::fs::create_dir(&left).unwrap();
    std::fs::write(left.join("file"), "root's").unwrap();
    std::fs::set_permissions(&left, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = run(&mut s.nobody_with_state(&["store", "gc", "--json"]));
    let stderr = stderr_of_exit(&out, 3);
    assert!(stderr.contains(left.to_str().unwrap()), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let temporary = crate::util::element_with(&report["refused"], "path", left.to_str().unwrap());
    assert_eq!(temporary["temporary"], true, "{report}");
    assert_eq!(temporary["owner"], 0, "{report}");
    assert_eq!(report["temporaries"], 0, "{report}");
    assert!(left.join("file").exists());
}

/// Regression: a user's `store delete` of root's object exited 0, the
/// object unregistered and left as a `.tmp-gc-*`. It fails (exit 3),
/// naming the object and its owner, and changes nothing.
#[test]
fn a_users_delete_of_roots_object_changes_nothing() {
    let s = SharedStore::new();
    let before = snapshot(&s.store);
    let out = run(s.nobody_with_state(&["store", "delete"]).arg(&s.roots));
    let stderr = stderr_of_exit(&out, 3);
    assert!(stderr.contains(s.roots.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("owned by uid 0"), "{stderr}");
    assert_eq!(snapshot(&s.store), before);
    let listed = run_ok(&mut s.nobody(&["store", "list"]));
    assert!(listed.contains(&s.roots_name()), "{listed}");
}

/// Regression: a user's `source add` linking pool entries root had made
/// failed with "failed to link from the store pool ...: Operation not
/// permitted": Linux's `fs.protected_hardlinks` forbids linking another
/// user's file. The entry and its owner are named, with what to do (exit 3).
#[test]
fn a_pool_entry_of_roots_is_named_when_it_cannot_be_linked() {
    let protected = std::fs::read_to_string("/proc/sys/fs/protected_hardlinks").unwrap();
    assert_eq!(
        protected.trim(),
        "1",
        "this test needs fs.protected_hardlinks=1"
    );
    let s = SharedStore::new();
    let out = run(s
        .nobody(&["source", "add", "--quiet", "--name", "mine"])
        .arg(fixture_source()));
    let stderr = stderr_of_exit(&out, 3);
    let pool = s.store.join(".links");
    assert!(
        stderr.contains(&format!("its entry {}/", pool.display())),
        "{stderr}"
    );
    assert!(stderr.contains("is owned by uid 0"), "{stderr}");
    assert!(stderr.contains("fs.protected_hardlinks"), "{stderr}");
    assert!(stderr.contains("chown -R"), "{stderr}");
}

/// Root's collection of the same store still removes everything, root's
/// objects and nobody's alike.
#[test]
fn roots_collection_removes_every_users_objects() {
    let s = SharedStore::new();
    let out = run(crate::util::fruix()
        .args(["store", "gc", "--quiet", "--store"])
        .arg(&s.store)
        .arg("--state-dir")
        .arg(&s.state));
    stderr_of_exit(&out, 0);
    assert_eq!(object_names(&s.store), Vec::<String>::new());
    assert_eq!(s.temporaries(), Vec::<String>::new());
}
