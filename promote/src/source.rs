//! Source objects: a source tree copied into the store with the same
//! one-pass rules as promotion (every file hashed as it is written into the
//! pool, the object built from the manifest of what was written), named by
//! its [`SourceIdentity`]. Adding an unchanged tree again finds its object,
//! checks it, and creates nothing.
//!
//! The caller supplies what the tree is (name, FreeBSD version and branch,
//! git commit and dirtiness) and which paths to leave out (ignored build
//! output, fruix's own output in the tree): this crate knows nothing of
//! FreeBSD or git. It leaves out the links into the store itself, as the
//! one reading walk meets them ([`points_into_store`]), and says which it
//! left out ([`SourceReport::links_left_out`]), and which links lead out
//! of the tree, stored as they are ([`SourceReport::links_leaving_tree`]).
//! The caller checks its facts against what was stored before the object
//! is named ([`add_source_rechecked`]). A directory's mode is no part of a
//! source: setuid, setgid and sticky bits are accepted on directories
//! (a group-shared checkout's) and refused on files.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use fruix_core::error::{IoContext, MetadataFileProblem};
use fruix_core::escape;
use fruix_core::fsutil::read_optional_regular_file;
use fruix_core::manifest::{
    encode_into, open_beneath, open_dir, parse_line, Entry, EntryKind, Exclude, ManifestBuilder,
    Progress,
};
use fruix_core::TreeSignature;

use crate::check::{check_existing, check_object, Depth};
use crate::db::Registration;
use crate::error::Result;
use crate::pipeline::{check_cancelled, ingest_tree, reader_of, set_phase, Ingested, Tree};
use crate::pool::{key, Pool};
pub use crate::source_identity::SourceFacts;
use crate::source_identity::{SourceIdentity, SOURCE_METADATA_FILE};
use crate::stage::build_object;
use crate::store::{Store, SOURCE_RESERVED_NAMES};
use crate::temp_roots::TempRoots;

/// What adding a source found or made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceReport {
    /// The source object's absolute path in the store.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub store_path: PathBuf,
    /// Whether this call created the object.
    pub new: bool,
    /// The identity that names the object: the caller's facts and the
    /// tree signature of what was read.
    #[serde(flatten)]
    pub identity: SourceIdentity,
    /// The bytes of its files.
    pub size: u64,
    /// The symlinks of the tree whose target lies in the store (out-links
    /// of earlier builds, whatever their names), left out of the object:
    /// paths relative to the tree, in path order.
    #[serde(skip)]
    pub links_left_out: Vec<Vec<u8>>,
    /// The symlinks of the object that lead out of it (stored as they are,
    /// as Nix and Guix store them).
    #[serde(skip)]
    pub links_leaving_tree: LinksLeavingTree,
}

/// The symlinks of a source tree whose target lies outside the tree: an
/// absolute target, or one whose `..` climb above the tree's top, through
/// the tree's own links (`a -> b/..` where `b -> ../..`). A build reading
/// through them reads what the object's identity does not cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinksLeavingTree {
    /// How many there are.
    pub count: u64,
    /// The first, in path order, relative to the tree.
    pub first: Option<Vec<u8>>,
}

/// Adds the tree at `dir` (leaving out the paths `exclude` names, and the
/// links into the store) to `store` as a source object described by
/// `facts`. Facts the object
/// must not record ([`SourceFacts::check`]) are refused before anything
/// is written.
pub fn add_source(
    store: &Store,
    dir: &Path,
    facts: &SourceFacts,
    exclude: &Exclude<'_>,
    progress: Option<&Progress>,
    temp_roots: Option<&TempRoots>,
) -> Result<SourceReport> {
    let add = SourceAdd {
        exclude,
        progress,
        temp_roots,
        recheck: &|_| Ok(()),
    };
    add_source_rechecked(store, dir, facts, &add)
}

/// Checks, once the tree is read and before its object is named, that
/// `facts` hold of what was stored ([`StoredTree`]): a fact learnt before
/// the walk (the git commit, a version read from a file) may no longer
/// hold of a tree that changed since. An error refuses the add; nothing
/// is left.
pub type Recheck<'a> = dyn Fn(&StoredTree<'_>) -> Result<()> + 'a;

/// How [`add_source_rechecked`] reads a tree, and what it checks after.
pub struct SourceAdd<'a> {
    /// The paths left out (ignored build output, fruix's own output).
    pub exclude: &'a Exclude<'a>,
    /// Counts (and cancels) the reading.
    pub progress: Option<&'a Progress>,
    /// Keeps the object while a build uses it.
    pub temp_roots: Option<&'a TempRoots>,
    /// Checks the facts against what was stored.
    pub recheck: &'a Recheck<'a>,
}

/// [`add_source`], calling `add.recheck` once the tree is read.
pub fn add_source_rechecked(
    store: &Store,
    dir: &Path,
    facts: &SourceFacts,
    add: &SourceAdd<'_>,
) -> Result<SourceReport> {
    let SourceAdd {
        exclude,
        progress,
        temp_roots,
        recheck,
    } = *add;
    facts.check()?;
    let promotion = store.begin()?;
    let opened = open_dir(dir)?;
    let tree = Tree {
        display: dir,
        manifest: promotion.work_dir().join("source.mtree"),
        extra_modes: None,
        reserved: SOURCE_RESERVED_NAMES,
        probe: None,
        exclude: Some(exclude),
        leave_out_link: Some(&|target| points_into_store(store, target)),
        reader: reader_of(&opened)?,
    };
    let ingested = ingest_tree(&promotion, opened, tree, progress)?;
    let stored = StoredTree {
        display: dir,
        manifest: &ingested.manifest,
        pool: store.pool(),
    };
    recheck(&stored)?;
    let links_leaving_tree = stored.links_leaving_tree()?;
    let tree_signature = if ingested.stripped.is_empty() {
        ingested.signature.clone()
    } else {
        signature_in_store_modes(dir, &ingested)?
    };
    let identity = SourceIdentity {
        facts: facts.clone(),
        tree_signature,
    };
    let name = identity.store_name();
    let store_path = store.path().join(&name);
    let _lock = store.lock_object(&name)?;
    // Cancelled once read, nothing is published (see
    // [`crate::promote_validated`]).
    check_cancelled(progress)?;
    // What is there under its name is checked (an intact object is
    // reused; an unregistered directory that fails its check, left by a
    // command killed half-way or a registry rebuilt without it, is
    // replaced, as promotion replaces one).
    if store_path.symlink_metadata().is_ok() {
        set_phase(progress, "checking the source object already in the store");
    }
    let new = !check_existing(store, &store_path)?;
    if new {
        set_phase(progress, "building the source object");
    }
    let mut published = Vec::new();
    if new {
        let temp = build_object(
            store,
            &name,
            &ingested.manifest,
            (SOURCE_METADATA_FILE, &identity.to_scheme()),
            "",
        )?;
        check_cancelled(progress)?;
        published = store.publish(vec![(temp, name.clone())])?;
    }
    let registered = store.db().register(&[Registration {
        record: crate::register::source(&name, &identity, ingested.size),
        references: Vec::new(),
    }]);
    if let Err(e) = registered {
        // Never valid: taken back (see `Store::unpublish`).
        store.unpublish(&published);
        return Err(e);
    }
    // Still under the GC lock: a build about to read the object keeps it.
    if let Some(roots) = temp_roots {
        roots.add(
            &store_path
                .file_name()
                .expect("an object name")
                .to_string_lossy(),
        )?;
    }
    promotion.succeed(!new);
    Ok(SourceReport {
        store_path,
        new,
        identity,
        size: ingested.size,
        links_left_out: ingested.links_left_out,
        links_leaving_tree,
    })
}

/// A source tree as the one reading walk stored it, its object not named
/// yet: what a [`Recheck`] checks the facts against.
pub struct StoredTree<'a> {
    /// Names the tree in messages.
    display: &'a Path,
    /// The manifest of what was stored (store modes).
    manifest: &'a Path,
    pool: &'a Pool,
}

impl StoredTree<'_> {
    /// The entries of the manifest whose line `keep` accepts, parsed.
    fn entries(&self, keep: &dyn Fn(&str) -> bool) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        self.each_entry(keep, &mut |entry| entries.push(entry))?;
        Ok(entries)
    }

    /// Hands `take` each entry whose manifest line `keep` keeps, parsed, as
    /// the manifest is read: memory is one line's, whatever the tree's size.
    fn each_entry(&self, keep: &dyn Fn(&str) -> bool, take: &mut dyn FnMut(Entry)) -> Result<()> {
        let manifest = self.manifest;
        let lines = BufReader::new(File::open(manifest).with_path("open", manifest)?);
        for line in lines.lines() {
            let line = line.with_path("read", manifest)?;
            if keep(&line) {
                let entry = parse_line(&line).map_err(|m| {
                    fruix_core::Error::system(format!("{}: {m}", escape::path(manifest)))
                })?;
                take(entry);
            }
        }
        Ok(())
    }

    /// The bytes stored of the file at `relative` (slash-separated) in the
    /// tree, read from the pool (where no symlink is followed), as
    /// metadata is read (at most 1 MiB); `None` when the walk stored
    /// nothing there (a directory on the way was a symlink, which the walk
    /// stores as it is). A symlink or directory stored there is
    /// [`fruix_core::Error::MetadataFile`].
    pub fn read_file(&self, relative: &str) -> Result<Option<Vec<u8>>> {
        let mut named = String::from("./");
        encode_into(relative.as_bytes(), &mut named);
        named.push(' ');
        let found = self.entries(&|line| line.starts_with(&named))?;
        let Some(entry) = found.into_iter().next() else {
            return Ok(None);
        };
        let path = self.display.join(relative);
        let refused = |problem| fruix_core::Error::MetadataFile {
            path: path.clone(),
            problem,
        };
        let EntryKind::File { sha256, .. } = entry.kind else {
            return Err(refused(match entry.kind {
                EntryKind::Symlink { .. } => MetadataFileProblem::Symlink,
                _ => MetadataFileProblem::NotRegular {
                    kind: "directory",
                    named: None,
                },
            })
            .into());
        };
        let pooled = self.pool.path().join(key(&sha256, entry.mode));
        Ok(Some(read_optional_regular_file(&pooled)?.ok_or_else(
            || {
                fruix_core::Error::system(format!(
                    "{}: its content is missing from the pool ({})",
                    escape::path(&path),
                    escape::path(&pooled)
                ))
            },
        )?))
    }

    /// The symlinks stored that lead out of the tree.
    fn links_leaving_tree(&self) -> Result<LinksLeavingTree> {
        // Every entry parsed, the links alone kept (memory grows with the
        // links, not the tree): its kind, not its line's text, says a link.
        let mut links = Vec::new();
        self.each_entry(&|_| true, &mut |entry| {
            if let EntryKind::Symlink { target } = entry.kind {
                links.push((entry.path, target));
            }
        })?;
        let targets: HashMap<&[u8], &[u8]> = links
            .iter()
            .map(|(path, target)| (&path[..], &target[..]))
            .collect();
        let mut leaving = LinksLeavingTree::default();
        for (path, _) in &links {
            if leaves_tree(path, &targets) {
                leaving.count += 1;
                leaving.first.get_or_insert_with(|| path.clone());
            }
        }
        Ok(leaving)
    }
}

/// How many links [`leaves_tree`] follows before it takes a target for a
/// loop, which leads nowhere (the kernel's own limit is about as many).
const MAX_LINKS_FOLLOWED: usize = 40;

/// Whether the symlink at `link` (relative to the tree) leads out of the
/// tree whose symlinks are `targets` (by relative path): an absolute
/// target, or `..` above the top, the tree's links on the way followed
/// (each against the directory that holds it, as the kernel does).
fn leaves_tree(link: &[u8], targets: &HashMap<&[u8], &[u8]>) -> bool {
    let components = |path: &'_ [u8]| -> Vec<Vec<u8>> {
        path.split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .map(<[u8]>::to_vec)
            .collect()
    };
    let mut dir = components(link);
    dir.pop();
    let mut pending = components(targets[link]);
    pending.reverse();
    let mut target = targets[link];
    let mut followed = 0;
    loop {
        if target.starts_with(b"/") {
            return true;
        }
        let Some(next) = pending.pop() else {
            return false;
        };
        if next == b".." {
            if dir.pop().is_none() {
                return true;
            }
            continue;
        }
        dir.push(next);
        let Some(&linked) = targets.get(&dir.join(&b'/')[..]) else {
            continue;
        };
        followed += 1;
        if followed > MAX_LINKS_FOLLOWED {
            return false;
        }
        dir.pop();
        pending.extend(components(linked).into_iter().rev());
        target = linked;
    }
}

/// The signature of a source tree some of whose directories carry
/// setuid, setgid or sticky bits (a group-shared checkout's setgid
/// directories): the signature of its manifest in store modes, which is
/// the tree as stored (every directory 0555). A directory's mode is no
/// part of a source; a file with such bits is refused
/// ([`fruix_core::Error::UnsafePath`]), saying how to clear them.
fn signature_in_store_modes(dir: &Path, ingested: &Ingested) -> Result<TreeSignature> {
    let special: HashSet<&str> = ingested.stripped.iter().map(|(p, _)| p.as_str()).collect();
    let manifest = &ingested.manifest;
    let lines = BufReader::new(File::open(manifest).with_path("open", manifest)?);
    let mut builder = ManifestBuilder::new();
    for line in lines.lines() {
        let line = line.with_path("read", manifest)?;
        let entry = parse_line(&line)
            .map_err(|m| fruix_core::Error::system(format!("{}: {m}", escape::path(manifest))))?;
        let listed = line.split(' ').next().is_some_and(|p| special.contains(p));
        if listed && entry.kind != EntryKind::Directory {
            return Err(fruix_core::Error::UnsafePath {
                path: dir.join(OsStr::from_bytes(&entry.path)),
                message: "is setuid, setgid or sticky, which no file of a source tree may be \
                    (a directory may): clear the bits (`chmod ug-s,o-t` on the file, or \
                    `chmod -R ug-s,o-t` on the tree) and add the source again"
                    .into(),
            }
            .into());
        }
        builder.add(&entry);
    }
    Ok(builder.finish().0)
}

/// Whether a symlink with `target` points into `store`: an absolute path
/// in the store directory, with no `..`, as the out-link of an earlier
/// build does. A source leaves such links out.
pub fn points_into_store(store: &Store, target: &[u8]) -> bool {
    let target = Path::new(OsStr::from_bytes(target));
    let up = target.components().any(|c| c == Component::ParentDir);
    target.starts_with(store.path()) && !up
}

/// Whether the entry at `path` (relative) of the tree at `dir` is a symlink
/// that [`points_into_store`], read without following any symlink on the
/// way: what a caller asks of the few paths git reports, to tell whether
/// the source left them out.
pub fn is_link_into_store(store: &Store, dir: &Path, path: &[u8]) -> bool {
    let (parent, name) = match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    };
    let Ok(parent) = std::str::from_utf8(parent) else {
        return false;
    };
    let Ok(root) = open_dir(dir) else {
        return false;
    };
    let parent = match parent.is_empty() {
        true => root,
        false => match open_beneath(&root, dir, parent) {
            Ok(fd) => fd,
            Err(_) => return false,
        },
    };
    rustix::fs::readlinkat(&parent, OsStr::from_bytes(name), Vec::new())
        .is_ok_and(|target| points_into_store(store, target.as_bytes()))
}

/// Checks that a build left the source object `object` it built from as
/// it was: [`Error::SourceWritten`] when a file was written (its mtime is
/// no longer the store's), added, removed or changed type or mode. The
/// check walks the object's structure, reading no file: about as long as
/// `find` over the tree.
///
/// [`Error::SourceWritten`]: crate::Error::SourceWritten
pub fn check_source_untouched(object: &Path) -> Result<()> {
    let check = check_object(object, Depth::Structure, None)?;
    if check.is_intact() {
        return Ok(());
    }
    Err(crate::Error::SourceWritten {
        object: object.to_path_buf(),
        differences: check.differences,
        more_differences: check.more_differences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::testing::{write_files, TestDir};
    use fruix_core::ExitStatus;

    /// Everything under `dir`, but the registry (`.fruix`, whose SQLite
    /// files come and go).
    fn contents(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
            .into_iter()
            .map(|e| e.unwrap().into_path())
            .filter(|p| !p.starts_with(dir.join(".fruix")))
            .collect();
        out.sort();
        out
    }

    /// Regression: a version with a control character was written into
    /// the object's metadata, whose reader refuses it (`store verify` then
    /// called the object corrupt); an unbounded one was written too.
    #[test]
    fn a_version_its_metadata_cannot_hold_is_refused_before_anything_is_written() {
        let dir = TestDir::new();
        let store = Store::open(&dir.store()).unwrap();
        let tree = dir.join("src");
        write_files(&tree, &[("Makefile", b"all:\n".as_slice(), 0o644)]).unwrap();
        let before = contents(store.path());
        let long = "1".repeat(65);
        for version in ["15.0\n(x)", "15.0-STABLE\u{1b}[31m", "15.0\u{202e}", &long] {
            let facts = SourceFacts::without_checkout("default", version, "stable/15");
            let e = add_source(&store, &tree, &facts, &|_| false, None, None).unwrap_err();
            assert_eq!(e.exit_status(), ExitStatus::Usage, "{version:?}: {e}");
            assert_eq!(contents(store.path()), before, "{version:?}");
        }
    }

    /// A tree with `Makefile` and `bin/ls.c` at `dir/name`.
    fn small_tree(dir: &TestDir, name: &str) -> PathBuf {
        let tree = dir.join(name);
        let files = [
            ("Makefile", b"all:\n".as_slice(), 0o644),
            ("bin/ls.c", b"int main;\n".as_slice(), 0o644),
        ];
        write_files(&tree, &files).unwrap();
        tree
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Regression: a setgid directory (as a group-shared checkout has)
    /// refused the whole tree. Directory modes are no part of a source
    /// (stored 0555): the tree is the object the same tree without the
    /// bits is, and it checks whole. A special file is still refused,
    /// saying how to clear its bits.
    #[test]
    fn special_bits_on_directories_are_no_part_of_a_source() {
        let dir = TestDir::new();
        let store = Store::open(&dir.store()).unwrap();
        let facts = SourceFacts::without_checkout("default", "15.0-STABLE", "stable/15");
        let add = |tree: &Path| add_source(&store, tree, &facts, &|_| false, None, None);
        let plain = add(&small_tree(&dir, "plain")).unwrap();
        let shared = small_tree(&dir, "shared");
        chmod(&shared, 0o2775);
        chmod(&shared.join("bin"), 0o3777);
        let report = add(&shared).unwrap();
        assert_eq!(report.store_path, plain.store_path);
        assert_eq!(report.identity, plain.identity);
        let check = check_object(&report.store_path, Depth::Content { pool: None }, None);
        assert!(check.unwrap().is_intact());

        let before = contents(store.path());
        chmod(&shared.join("bin/ls.c"), 0o4755);
        let e = add(&shared).unwrap_err();
        let message = e.to_string();
        for says in ["bin/ls.c", "setuid, setgid or sticky", "chmod ug-s,o-t"] {
            assert!(message.contains(says), "{says}: {message}");
        }
        assert_eq!(contents(store.path()), before, "nothing new");
    }

    /// Regression: an unregistered directory under a source object's name
    /// that failed its check (a registry rebuilt without it, say) made
    /// every add of the tree fail as corrupt or inconsistent, and `store
    /// verify --repair` left it (it is no object); promotion replaces such
    /// a directory. So does `source add` now; a registered one that fails
    /// is still refused.
    #[test]
    fn an_unregistered_directory_that_fails_its_check_is_replaced() {
        let dir = TestDir::new();
        let store = Store::open(&dir.store()).unwrap();
        let tree = small_tree(&dir, "src");
        let facts = SourceFacts::without_checkout("default", "15.0-STABLE", "stable/15");
        let add = || add_source(&store, &tree, &facts, &|_| false, None, None);
        let first = add().unwrap();
        let object = first.store_path.clone();
        let name = object.file_name().unwrap().to_str().unwrap().to_string();
        crate::store::set_mode(&object, 0o755).unwrap();
        std::fs::remove_file(object.join(SOURCE_METADATA_FILE)).unwrap();
        let e = add().unwrap_err();
        assert_eq!(
            e.exit_status(),
            ExitStatus::PromotionFailure,
            "registered: {e}"
        );
        store.db().unregister(std::slice::from_ref(&name)).unwrap();
        let again = add().unwrap();
        assert!(again.new, "built anew");
        assert_eq!(again.store_path, object);
        assert!(store.is_valid(&name).unwrap());
        let check = check_object(&object, Depth::Content { pool: None }, None);
        assert!(check.unwrap().is_intact());
    }

    /// Links leading out of a tree are told by their targets, the tree's
    /// own links on the way followed against the directory holding each.
    #[test]
    fn a_link_leaves_the_tree_when_absolute_or_above_its_top() {
        let links: [(&[u8], &[u8]); 9] = [
            (b"abs", b"/etc"),
            (b"bin/up", b"../../x"),
            (b"bin/ok", b"../Makefile"),
            (b"bin/top", b".."),
            (b"via", b"bin/up/y"),
            (b"above", b"bin/top/.."),
            (b"inside", b"bin/./ok"),
            (b"loop", b"loop"),
            (b"to-abs", b"abs"),
        ];
        let targets: HashMap<&[u8], &[u8]> = links.into_iter().collect();
        let leaving: Vec<&[u8]> = links
            .iter()
            .map(|(link, _)| *link)
            .filter(|link| leaves_tree(link, &targets))
            .collect();
        let expected: [&[u8]; 5] = [b"abs", b"bin/up", b"via", b"above", b"to-abs"];
        assert_eq!(leaving, expected);
    }

    /// Out-links of earlier builds, whatever their names, are the links
    /// whose targets lie in the store (by its path, with no `..`): the
    /// reading walk leaves them out and says which, and the object is the
    /// tree without them. One asked about by path is told the same way.
    #[test]
    fn the_links_into_the_store_are_left_out_where_the_walk_goes() {
        let dir = TestDir::new();
        let store = Store::open(&dir.store()).unwrap();
        let plain = small_tree(&dir, "plain");
        std::os::unix::fs::symlink("/elsewhere", plain.join("bin/elsewhere")).unwrap();
        std::os::unix::fs::symlink("ls.c", plain.join("bin/relative")).unwrap();
        let escaping = store.path().join("../elsewhere");
        std::os::unix::fs::symlink(&escaping, plain.join("bin/escaping")).unwrap();
        let tree = small_tree(&dir, "src");
        let inside = store.path().join("0123-x");
        let links: [(&str, &Path); 6] = [
            ("result", &inside),
            ("bin/old-result", store.path()),
            ("bin/elsewhere", Path::new("/elsewhere")),
            ("bin/relative", Path::new("ls.c")),
            ("bin/escaping", &escaping),
            ("skipped/result", &inside),
        ];
        for (link, target) in links {
            std::fs::create_dir_all(tree.join(link).parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, tree.join(link)).unwrap();
        }
        let facts = SourceFacts::without_checkout("default", "15.0-STABLE", "stable/15");
        let skipped = |p: &[u8]| p == b"skipped";
        let progress = Progress::default();
        let report = add_source(&store, &tree, &facts, &skipped, Some(&progress), None).unwrap();
        assert_eq!(progress.phase(), Some("building the source object"));
        assert_eq!(
            report.links_left_out,
            [b"bin/old-result".to_vec(), b"result".to_vec()]
        );
        let progress = Progress::default();
        let without = add_source(&store, &plain, &facts, &|_| false, Some(&progress), None);
        let without = without.unwrap();
        assert_eq!(report.store_path, without.store_path);
        let phase = Some("checking the source object already in the store");
        assert_eq!(progress.phase(), phase, "the object was there");
        assert!(without.links_left_out.is_empty());
        let told: Vec<&str> = ["result", "bin/old-result", "bin/elsewhere", "bin/relative"]
            .into_iter()
            .chain([
                "bin/escaping",
                "skipped/result",
                "bin/ls.c",
                "missing/result",
            ])
            .filter(|p| is_link_into_store(&store, &tree, p.as_bytes()))
            .collect();
        assert_eq!(told, ["result", "bin/old-result", "skipped/result"]);
    }
}
