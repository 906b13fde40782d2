//! A source directory made a source object: the FreeBSD version and branch
//! from its `sys/conf/newvers.sh` (or as given), its git commit and
//! dirtiness, and what is no part of the source left out: `.git`, ignored
//! build output, and fruix's own output in the tree (see [`LeftOut`]).
//! `fruix build`, `fruix source add` and every matrix use this, so that one
//! tree is one source object wherever it was checked out. What is said of
//! the tree before it is read (git's answer, the version) is checked again
//! against what was stored: a tree changed in between is refused.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fruix_core::escape;
use fruix_core::manifest::{changed, Progress};
use fruix_core::promotion::SourceStore;
use fruix_freebsd::checkout;
use fruix_freebsd::source::{branch_of, parse_newvers, read_newvers, NEWVERS};
use fruix_promote::check::Identity;
use fruix_promote::query::resolve_valid;
use fruix_promote::source::{
    add_source_rechecked, is_link_into_store, LinksLeavingTree, SourceAdd, SourceFacts,
    SourceReport, StoredTree,
};
use fruix_promote::store::{is_source_name, MANIFEST_FILE};
use fruix_promote::temp_roots::TempRoots;
use fruix_promote::verify::is_object_name;
use fruix_promote::Store;

/// The name a source object gets unless told otherwise, as in the reference.
pub const DEFAULT_SOURCE_NAME: &str = "default";

/// What fruix writes itself, besides the store, that may lie in a source
/// tree (a build run from inside its tree): left out of the source when it
/// does.
#[derive(Debug, Clone, Copy)]
pub enum OwnOutput<'a> {
    /// A state directory (result roots, roots), resolved as fruix resolves
    /// it to write into it.
    StateDir(&'a Path),
    /// An out-link, the link itself (fruix replaces it), not followed.
    OutLink(&'a Path),
    /// A matrix run's report directory (logs, result links, reports).
    ReportDir(&'a Path),
}

/// What fruix left out of a source tree as its own output: the store, the
/// state directory and the out-link when they lie in the tree, and every
/// symlink whose target lies in the store (an out-link of an earlier
/// build, whatever its name). None of it is read, and none of it makes a
/// checkout dirty, unless git tracks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// Paths relative to the tree, with what each is, in the order found.
    entries: Vec<(Vec<u8>, &'static str)>,
    paths: HashSet<Vec<u8>>,
}

/// How many left-out paths a note names; the rest are counted.
const NOTE_NAMES: usize = 8;

impl LeftOut {
    /// The store and `own`, where they lie in `dir` (canonical).
    fn own(store: &Store, dir: &Path, own: &[OwnOutput<'_>]) -> Self {
        let mut left_out = LeftOut::default();
        let mut found = vec![(relative_inside(dir, store.path(), true), "the store")];
        found.extend(own.iter().map(|own| match own {
            OwnOutput::StateDir(path) => (relative_inside(dir, path, true), "the state directory"),
            OwnOutput::OutLink(path) => (relative_inside(dir, path, false), "the out-link"),
            OwnOutput::ReportDir(path) => {
                (relative_inside(dir, path, true), "the report directory")
            }
        }));
        for (path, what) in found {
            if let Some(path) = path {
                left_out.push(path, what);
            }
        }
        left_out
    }

    fn push(&mut self, path: Vec<u8>, what: &'static str) {
        if self.paths.insert(path.clone()) {
            self.entries.push((path, what));
        }
    }

    /// Whether the relative `path` is left out.
    pub fn contains(&self, path: &[u8]) -> bool {
        self.paths.contains(path)
    }

    /// What fruix says of it, without its `fruix: note: ` prefix: the
    /// paths left out of `dir` and what each is; none when nothing was.
    pub fn note(&self, dir: &Path) -> Option<String> {
        if self.entries.is_empty() {
            return None;
        }
        let mut named: Vec<String> = self
            .entries
            .iter()
            .take(NOTE_NAMES)
            .map(|(path, what)| {
                let path = Path::new(OsStr::from_bytes(path));
                format!("{} ({what})", escape::path(path))
            })
            .collect();
        if self.entries.len() > NOTE_NAMES {
            named.push(format!("and {} more", self.entries.len() - NOTE_NAMES));
        }
        Some(format!(
            "left out of source {}, as fruix's own output: {}",
            escape::path(dir),
            named.join(", ")
        ))
    }
}

/// `path` relative to `dir` (canonical) when it is an entry in it (not
/// `dir` itself): `resolve`d whole (a directory fruix writes into), or
/// else its last component not followed (a link fruix replaces).
fn relative_inside(dir: &Path, path: &Path, resolve: bool) -> Option<Vec<u8>> {
    let path = std::path::absolute(path).ok()?;
    let resolved = match resolve {
        true => path.canonicalize().ok()?,
        false => path.parent()?.canonicalize().ok()?.join(path.file_name()?),
    };
    resolved.symlink_metadata().ok()?;
    let relative = resolved.strip_prefix(dir).ok()?.as_os_str().as_bytes();
    (!relative.is_empty()).then(|| relative.to_vec())
}

/// Refuses (before anything is made) a store, or a directory of `own`
/// (a state or report directory), that is the tree `dir` (canonical)
/// itself: fruix would read its own output into the source, and could
/// leave none of it out.
pub fn check_outside_tree(dir: &Path, store: &Path, own: &[OwnOutput<'_>]) -> crate::Result<()> {
    let dirs = own.iter().filter_map(|own| match own {
        OwnOutput::StateDir(path) => Some((*path, "the state directory")),
        OwnOutput::ReportDir(path) => Some((*path, "the report directory")),
        OwnOutput::OutLink(_) => None,
    });
    let is_tree = |path: &Path| {
        let path = std::path::absolute(path).and_then(|p| p.canonicalize());
        path.is_ok_and(|p| p == dir)
    };
    for (path, what) in [(store, "the store")].into_iter().chain(dirs) {
        if is_tree(path) {
            return Err(crate::Error::InvalidSource {
                path: dir.to_path_buf(),
                message: format!(
                    "source tree {} is {what} ({}): fruix would read its own output into the source; give {what} a directory of its own (inside the tree, it is left out)",
                    escape::path(dir),
                    escape::path(path)
                ),
            });
        }
    }
    Ok(())
}

/// A source directory added to the store.
#[derive(Debug, Clone)]
pub struct AddedSource {
    /// What the add found or made.
    pub report: SourceReport,
    /// What it left out of the tree as fruix's own output.
    pub left_out: LeftOut,
}

/// Adds the source tree at `dir` (canonical) to `store` as source object
/// `name`; `version` overrides what `newvers.sh` says. `own` is what this
/// command writes besides the store; it and the store are left out of the
/// tree where they lie in it, and so are the links into the store
/// ([`LeftOut`]).
pub fn add_source_dir(
    store: &Store,
    dir: &Path,
    name: &str,
    version: Option<&str>,
    own: &[OwnOutput<'_>],
    progress: Option<&Progress>,
    temp_roots: Option<&TempRoots>,
) -> fruix_promote::Result<AddedSource> {
    // A store object's metadata files are no part of any source: the user
    // meant the tree it was added from, or the store that holds it.
    let object_named = dir
        .file_name()
        .is_some_and(|n| is_object_name(n.as_encoded_bytes()));
    if object_named && dir.join(MANIFEST_FILE).symlink_metadata().is_ok() {
        return Err(fruix_promote::Error::StoreObjectAsSource {
            path: dir.to_path_buf(),
            store: store.path().to_path_buf(),
            here: dir.parent() == Some(store.path()),
        });
    }
    // Callers refuse it before they open the store (exit 2); this holds
    // for every other.
    check_outside_tree(dir, store.path(), own).map_err(|e| fruix_core::Error::InvalidRequest {
        message: e.to_string(),
    })?;
    let read_version = version.is_none();
    let version = match version {
        Some(v) => v.to_string(),
        None => read_newvers(dir)?.version,
    };
    let branch = branch_of(&version);
    if branch.is_empty() {
        return Err(fruix_promote::Error::InvalidFreebsdVersion {
            message: format!(
                "FreeBSD version {} names no branch: give REVISION-BRANCH (15.0-STABLE, 14.2-RELEASE)",
                fruix_core::escape::quoted(&version)
            ),
            version,
        });
    }
    // The paths known beforehand (git is not to look into them); the
    // links into the store are left out by the one reading walk, and git's
    // few reported paths are asked about one by one.
    let mut left_out = LeftOut::own(store, dir, own);
    let own_paths: Vec<Vec<u8>> = left_out.entries.iter().map(|(p, _)| p.clone()).collect();
    let git = checkout::inspect_leaving_out(dir, &own_paths)?;
    let fruix_s = |path: &[u8]| left_out.contains(path) || is_link_into_store(store, dir, path);
    let facts = SourceFacts {
        name: name.to_string(),
        branch,
        version,
        commit: git.commit.clone(),
        dirty: git.dirty(&fruix_s),
    };
    let excluded = |path: &[u8]| left_out.contains(path) || git.excludes(path);
    // What was said before the walk must hold of what it stored: a tree
    // changed in between (an editor saving, a `git pull`) is refused.
    let recheck = |stored: &StoredTree<'_>| -> fruix_promote::Result<()> {
        if read_version {
            let path = dir.join(NEWVERS);
            let stored = stored.read_file(NEWVERS)?;
            let said = stored.map(|b| parse_newvers(&path, &b)).transpose()?;
            if said.map(|n| n.version).as_ref() != Some(&facts.version) {
                return Err(changed(path, "it declares another version now").into());
            }
        }
        let again = checkout::inspect_leaving_out(dir, &own_paths)?;
        if !git.says_the_same(&again, &fruix_s) {
            let what =
                "git says otherwise of it now (its commit, a changed, untracked or ignored file)";
            return Err(changed(dir.to_path_buf(), what).into());
        }
        Ok(())
    };
    let add = SourceAdd {
        exclude: &excluded,
        progress,
        temp_roots,
        recheck: &recheck,
    };
    let report = add_source_rechecked(store, dir, &facts, &add)?;
    for link in &report.links_left_out {
        left_out.push(link.clone(), "a link into the store");
    }
    Ok(AddedSource { report, left_out })
}

impl AddedSource {
    /// What fruix says of the symlinks of the source that lead out of it
    /// (stored as they are), without its `fruix: warning: ` prefix; none
    /// when there are none.
    pub fn warning(&self, dir: &Path) -> Option<String> {
        let LinksLeavingTree { count, first } = &self.report.links_leaving_tree;
        let first = Path::new(OsStr::from_bytes(first.as_ref()?));
        let (links, lead) = match count {
            1 => ("symlink", "leads"),
            _ => ("symlinks", "lead"),
        };
        Some(format!(
            "source {}: {count} {links} {lead} out of the tree (absolute, or above its top), first {}: stored as they are, a build that reads through them reads what the source object does not hold",
            escape::path(dir),
            escape::path(first)
        ))
    }
}

/// [`source_object_leaving_out`] with nothing but the store and the links
/// into it left out: a matrix's source.
pub fn source_object(
    store: &Store,
    source: &Path,
    version: Option<&str>,
    progress: Option<&Progress>,
    temp_roots: &TempRoots,
) -> fruix_promote::Result<(SourceStore, Option<AddedSource>)> {
    source_object_leaving_out(store, source, version, &[], progress, temp_roots)
}

/// The source object a local build of `source` (canonical, checked) uses,
/// kept by `temp_roots` while the build runs:
/// `source` itself when it is a valid source object of `store` (`None`),
/// else the object `source` is added as (leaving out `own`, see
/// [`add_source_dir`]). The commit is the object's.
pub fn source_object_leaving_out(
    store: &Store,
    source: &Path,
    version: Option<&str>,
    own: &[OwnOutput<'_>],
    progress: Option<&Progress>,
    temp_roots: &TempRoots,
) -> fruix_promote::Result<(SourceStore, Option<AddedSource>)> {
    let in_store = source.parent() == Some(store.path())
        && source
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_source_name);
    if in_store {
        // The GC lock, shared, while the object is checked and kept.
        let _gc = store.gc_lock(false)?;
        let name = resolve_valid(store, source)?;
        // A corrupt object (a file changed since it was added) is said to
        // be so now, not blamed on the build after it ran.
        fruix_promote::check::check_reusable(source)?;
        temp_roots.add(&name)?;
        let commit = match Identity::read(source)? {
            Identity::Source(s) => s.facts.commit,
            Identity::Artifact(_) => None,
        };
        let used = SourceStore {
            tree_signature: None,
            path: source.to_string_lossy().into_owned(),
            commit,
        };
        return Ok((used, None));
    }
    let added = add_source_dir(
        store,
        source,
        DEFAULT_SOURCE_NAME,
        version,
        own,
        progress,
        Some(temp_roots),
    )?;
    let used = SourceStore {
        tree_signature: None,
        path: added.report.store_path.to_string_lossy().into_owned(),
        commit: added.report.identity.facts.commit.clone(),
    };
    Ok((used, Some(added)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::testing::{write_files, TestDir};
    use std::os::unix::fs::symlink;

    /// Regression: fruix's own output in a tree (a build run from inside
    /// it) became part of its source: each add was another object.
    #[test]
    fn fruix_s_own_output_in_the_tree_is_left_out() {
        let dir = TestDir::new();
        let tree = dir.path().canonicalize().unwrap().join("src");
        write_files(&tree, &[("Makefile", b"all:\n".as_slice(), 0o644)]).unwrap();
        let elsewhere = Store::open(&dir.join("elsewhere")).unwrap();
        let add = |store: &Store, own: &[OwnOutput<'_>]| {
            add_source_dir(
                store,
                &tree,
                "default",
                Some("15.0-STABLE"),
                own,
                None,
                None,
            )
            .unwrap()
        };
        let clean = add(&elsewhere, &[]);
        assert_eq!(clean.left_out, LeftOut::default());
        assert_eq!(clean.left_out.note(&tree), None);

        let store = Store::open(&tree.join("frx-store")).unwrap();
        write_files(&tree, &[("frx-state/root", b"x".as_slice(), 0o644)]).unwrap();
        let result = tree.join("result");
        symlink(store.path().join("0123-bundle"), &result).unwrap();
        symlink(store.path(), tree.join("old")).unwrap();
        let own = [
            OwnOutput::StateDir(&tree.join("frx-state")),
            OwnOutput::OutLink(&result),
        ];
        let added = add(&store, &own);
        assert_eq!(added.report.identity, clean.report.identity);
        let note = added.left_out.note(&tree).unwrap();
        assert!(
            note.ends_with(
                "frx-store (the store), frx-state (the state directory), \
                 result (the out-link), old (a link into the store)"
            ),
            "{note}"
        );
    }

    #[test]
    fn own_output_is_found_in_the_tree_only_and_an_out_link_is_not_followed() {
        let dir = TestDir::new();
        let tree = dir.path().canonicalize().unwrap().join("src");
        write_files(
            &tree,
            &[("state/f", b"".as_slice(), 0o644), ("bin/f", b"", 0o644)],
        )
        .unwrap();
        symlink(tree.join("state"), tree.join("via")).unwrap();
        symlink(tree.join("bin"), tree.join("result")).unwrap();
        let inside = |path: &Path, resolve| relative_inside(&tree, path, resolve);
        assert_eq!(inside(&tree.join("state"), true), Some(b"state".to_vec()));
        assert_eq!(inside(&tree.join("via"), true), Some(b"state".to_vec()));
        assert_eq!(
            inside(&tree.join("result"), false),
            Some(b"result".to_vec())
        );
        assert_eq!(
            inside(&tree.join("bin/../state"), true),
            Some(b"state".to_vec())
        );
        assert_eq!(inside(&tree.join("missing"), true), None);
        assert_eq!(inside(&tree, true), None);
        assert_eq!(inside(dir.path(), true), None);
    }

    #[test]
    fn a_note_names_the_first_paths_and_counts_the_rest() {
        let mut left_out = LeftOut::default();
        for i in 0..NOTE_NAMES + 3 {
            left_out.push(format!("l{i}").into_bytes(), "a link into the store");
        }
        left_out.push(b"l0".to_vec(), "a link into the store");
        let note = left_out.note(Path::new("/src")).unwrap();
        assert!(note.starts_with("left out of source /src, as fruix's own output: l0 ("));
        assert!(
            note.ends_with("l7 (a link into the store), and 3 more"),
            "{note}"
        );
    }
}
