//! Which result roots in `STATE_DIR/native-builds/` a collection removes:
//! those of this store's promoted runs, older than `--older-than`.
//!
//! A root is its promoted run's when what the root itself records says
//! so, never its directory's name: run ids are unique within one state
//! directory only (they are the second a run started), so a root of
//! another state directory sharing the store, or one a build was told to
//! make with `--result-root`, may bear the name (or record the run id) of
//! a run this store promoted without being that run's. The rule:
//!
//! - a root marked unfinished ([`INCOMPLETE_MARKER`]: a build running,
//!   failed or interrupted), or whose work directory beside it
//!   (`ROOT.work`) holds a run lock ([`RUN_LOCK`]) some process holds (a
//!   build running), is never collected, whatever else holds;
//! - otherwise it is collected when its `promotion.scm` describes a result
//!   bundle registered in this store: a bundle of its run id whose
//!   metadata holds the run fields of its `promotion.scm` as the promotion
//!   pipeline writes them (executor and its version, run id, host name,
//!   closure and profile, FreeBSD base, source and build policy, byte for
//!   byte), and the same artifacts, in the same order, with the tree
//!   signatures its `promotion.scm` records. Promoting the root again
//!   would add nothing to the store: it is that bundle's root (or a copy
//!   of it, from an identical run in the same second);
//! - a collection (not a dry run) that finds a root describing a
//!   registered bundle writes the bundle's path into it ([`MARK`]) before
//!   anything is unregistered, so that once the bundle itself is collected
//!   a later collection still knows the root: a root whose mark names an
//!   object of this store that is no longer registered, and whose run id
//!   the store promoted, is collected too. A root whose bundle was
//!   collected before any collection under its state directory saw it
//!   (one under another state directory, whose roots did not keep it)
//!   cannot be told from another run's any more, and is kept.
//!
//! A root's age is its directory's modification time. One modified in the
//! future (a clock set back) is taken as modified now, with a warning
//! ([`Warning::ResultRootInFuture`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{self as rfs, Mode, OFlags};

use fruix_core::promotion::{PromotionMetadata, PROMOTION_FILE};
use fruix_core::result_root::INCOMPLETE_MARKER;
use fruix_core::sexp::{field, Writer};

use super::GcOptions;
use crate::bundle::{read_bundle_text, RESULT_HEAD};
use crate::check::read_object_file;
use crate::db::{Kind, ObjectRecord};
use crate::error::Result;
use crate::pipeline::check_cancelled;
use crate::store::{Store, RESULT_METADATA_FILE};
use crate::verify::is_object_name;
use crate::warning::{warn, Warning};

/// The file in a result root naming the bundle of this store a collection
/// found the root describes: the bundle's path, then a newline.
pub const MARK: &str = ".fruix-promoted";

/// The run lock a running build holds in its work directory
/// (`fruix_freebsd::work::RUN_LOCK`, which this crate does not depend on).
pub const RUN_LOCK: &str = ".fruix-run";

/// The result roots of `options.state_dir` that are this store's promoted
/// runs' (see the module documentation), sorted; `records` are the
/// registered objects, read before the collection unregisters any. A
/// collection that is not a dry run marks each root that describes a
/// registered bundle ([`MARK`]). Cancelled through `options.progress`, it
/// stops before the next root.
pub(super) fn promoted(
    store: &Store,
    records: &BTreeMap<String, ObjectRecord>,
    options: &GcOptions<'_>,
) -> Result<Vec<PathBuf>> {
    let dir = options.state_dir.join("native-builds");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let runs = store.db().promoted_runs()?;
    let mut bundles: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in records.values().filter(|r| r.kind == Kind::Bundle) {
        if let Some(run_id) = &r.run_id {
            bundles.entry(run_id).or_default().push(&r.name);
        }
    }
    let mut out = Vec::new();
    for entry in entries.flatten() {
        check_cancelled(options.progress)?;
        let root = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || unfinished(&root) {
            continue;
        }
        let Ok(m) = PromotionMetadata::read(&root.join(PROMOTION_FILE)) else {
            continue;
        };
        if !runs.contains(&m.run_id) {
            continue;
        }
        let described = bundles
            .get(m.run_id.as_str())
            .into_iter()
            .flatten()
            .map(|name| store.path().join(name))
            .find(|bundle| describes(bundle, &m));
        match described {
            Some(bundle) => {
                if !options.dry_run {
                    mark(&root, &bundle);
                }
                out.push(root);
            }
            None if marked_gone(&root, store, records) => out.push(root),
            None => {}
        }
    }
    out.sort();
    Ok(out)
}

/// Removes (unless a dry run) the roots `found` ([`promoted`]) older than
/// `options.older_than`, adding their paths to `removed`. A root found
/// unfinished now is left. Cancelled through `options.progress`, it stops
/// before the next one.
pub(super) fn collect(
    found: &[PathBuf],
    options: &GcOptions<'_>,
    removed: &mut Vec<PathBuf>,
) -> Result<()> {
    let now = SystemTime::now();
    for root in found {
        check_cancelled(options.progress)?;
        let Ok(modified) = fs::symlink_metadata(root).and_then(|m| m.modified()) else {
            continue;
        };
        let age = now.duration_since(modified).unwrap_or_else(|e| {
            warn(Warning::ResultRootInFuture {
                root: root.clone(),
                ahead: e.duration(),
            });
            std::time::Duration::ZERO
        });
        if age < options.older_than || unfinished(root) {
            continue;
        }
        if !options.dry_run {
            if let Err(e) = fruix_core::remove::remove_tree(root) {
                warn(Warning::ResultRootLeft {
                    root: root.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        }
        removed.push(root.clone());
    }
    Ok(())
}

/// Whether `root` is unfinished: it holds anything at
/// [`INCOMPLETE_MARKER`] (or that cannot be looked at), or a process holds
/// the [`RUN_LOCK`] of its work directory `ROOT.work`.
pub fn unfinished(root: &Path) -> bool {
    match fs::symlink_metadata(root.join(INCOMPLETE_MARKER)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => return true,
    }
    let mut work = root.as_os_str().to_owned();
    work.push(".work");
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    match rfs::open(Path::new(&work).join(RUN_LOCK), flags, Mode::empty()) {
        // Held exclusively by its run, or not lockable: taken as held.
        Ok(lock) => rfs::flock(&lock, rfs::FlockOperation::NonBlockingLockShared).is_err(),
        Err(_) => false,
    }
}

/// Whether the bundle at `bundle` is the one promoting a root with
/// metadata `m` makes: its metadata's run fields are `m`'s, as the
/// pipeline writes them, and its artifacts are `m`'s, in order, with the
/// tree signatures `m` records. One that cannot be read is not.
fn describes(bundle: &Path, m: &PromotionMetadata) -> bool {
    let Ok(text) = read_object_file(bundle, RESULT_METADATA_FILE) else {
        return false;
    };
    let Ok(summary) = read_bundle_text(&bundle.join(RESULT_METADATA_FILE), &text) else {
        return false;
    };
    let mut w = Writer::new(RESULT_HEAD);
    w.field(field("format-version", [lexpr::Value::from(1)]));
    m.write_run_fields(&mut w);
    let run = w.finish();
    let run = run.strip_suffix(")\n").unwrap_or(&run);
    let same_run = text
        .strip_prefix(run)
        .is_some_and(|rest| rest.starts_with("\n  (artifacts"));
    same_run
        && summary.artifacts.len() == m.artifacts.len()
        && summary.artifacts.iter().zip(&m.artifacts).all(|(b, a)| {
            b.name == a.name
                && a.tree_signature
                    .as_ref()
                    .is_none_or(|s| s.as_str() == b.tree_signature)
        })
}

/// Writes `bundle`'s path into `root`'s [`MARK`], unless it holds it
/// already: into a new file beside it, renamed over it, so that whatever
/// the root held under that name (a hard link to another file, a FIFO, a
/// symlink) is replaced, never written through or waited on. Relative to
/// the root's directory, opened without following a symlink. A root it
/// cannot write to is left unmarked (its bundle gone, it is then kept).
fn mark(root: &Path, bundle: &Path) {
    let text = format!("{}\n", bundle.display());
    let Ok(dir) = open_root(root) else {
        return;
    };
    if read_mark(&dir).as_deref() == Some(text.as_str()) {
        return;
    }
    let temp = format!("{MARK}.tmp-{}", std::process::id());
    // A temporary an earlier collection left (killed) goes first.
    let _ = rfs::unlinkat(&dir, temp.as_str(), rfs::AtFlags::empty());
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let written = rfs::openat(&dir, temp.as_str(), flags, Mode::from(0o644))
        .map_err(std::io::Error::from)
        .and_then(|fd| File::from(fd).write_all(text.as_bytes()))
        .and_then(|()| {
            rfs::renameat(&dir, temp.as_str(), &dir, MARK).map_err(std::io::Error::from)
        });
    if written.is_err() {
        let _ = rfs::unlinkat(&dir, temp.as_str(), rfs::AtFlags::empty());
    }
}

/// The result root `root`, opened as a directory without following a
/// symlink.
fn open_root(root: &Path) -> rustix::io::Result<std::os::fd::OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rfs::openat(rfs::CWD, root, flags, Mode::empty())
}

/// The text of the mark in the root open on `dir`: a regular file of at
/// most 4 KiB, never followed nor waited on (a FIFO is opened without
/// blocking, and refused by its type).
fn read_mark(dir: &std::os::fd::OwnedFd) -> Option<String> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, MARK, flags, Mode::empty()).ok()?;
    let file = File::from(fd);
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > 4096 {
        return None;
    }
    let mut text = String::new();
    file.take(4097).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Whether `root`'s [`MARK`] names an object of `store` that is no longer
/// registered (not in `records`): a bundle a collection found the root
/// describes, collected since.
fn marked_gone(root: &Path, store: &Store, records: &BTreeMap<String, ObjectRecord>) -> bool {
    let Some(text) = open_root(root).ok().and_then(|dir| read_mark(&dir)) else {
        return false;
    };
    let Some(path) = text.strip_suffix('\n').map(Path::new) else {
        return false;
    };
    let name = path.file_name().and_then(|n| n.to_str());
    path.parent() == Some(store.path())
        && name.is_some_and(|n| is_object_name(n.as_bytes()) && !records.contains_key(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::testing::TestDir;

    /// A sample result root of run `20260405T213444Z` promoted into a
    /// store: the root's metadata and the bundle's path.
    fn promoted(dir: &TestDir) -> (PromotionMetadata, PathBuf) {
        let store = Store::open(&dir.store()).unwrap();
        let root = dir.root("r", "local", "20260405T213444Z", true);
        let report =
            crate::promote_native_build_result(&root, &store, &Default::default()).unwrap();
        let m = PromotionMetadata::read(&root.join(PROMOTION_FILE)).unwrap();
        (m, report.result_store)
    }

    /// A bundle describes the root it was promoted from, signed or not,
    /// and no root whose run fields or artifacts differ.
    #[test]
    fn a_bundle_describes_only_the_run_and_artifacts_it_records() {
        let dir = TestDir::new();
        let (m, bundle) = promoted(&dir);
        assert!(describes(&bundle, &m));
        let mut unsigned = m.clone();
        unsigned
            .artifacts
            .iter_mut()
            .for_each(|a| a.tree_signature = None);
        assert!(describes(&bundle, &unsigned));
        let mut host = m.clone();
        host.guest_host_name.push('x');
        assert!(!describes(&bundle, &host));
        let mut run = m.clone();
        run.run_id = "20260405T213445Z".into();
        assert!(!describes(&bundle, &run));
        let mut other = m.clone();
        other.artifacts[0].tree_signature = other.artifacts[1].tree_signature.clone();
        assert!(!describes(&bundle, &other));
        let mut fewer = m.clone();
        fewer.artifacts.pop();
        assert!(!describes(&bundle, &fewer));
        assert!(!describes(&dir.join("no-bundle"), &m));
    }

    /// A root is unfinished while anything is at its marker, or while a
    /// process holds its work directory's run lock; a lock nobody holds
    /// is a dead run's.
    #[test]
    fn a_root_is_unfinished_while_marked_or_its_run_lock_is_held() {
        let dir = TestDir::new();
        let root = dir.join("run");
        fs::create_dir_all(&root).unwrap();
        assert!(!unfinished(&root));
        fs::create_dir(root.join(INCOMPLETE_MARKER)).unwrap();
        assert!(unfinished(&root));
        fs::remove_dir(root.join(INCOMPLETE_MARKER)).unwrap();
        fs::create_dir(dir.join("run.work")).unwrap();
        let lock = fs::File::create(dir.join("run.work").join(RUN_LOCK)).unwrap();
        assert!(!unfinished(&root));
        rfs::flock(&lock, rfs::FlockOperation::LockExclusive).unwrap();
        assert!(unfinished(&root));
        drop(lock);
        assert!(!unfinished(&root));
    }
    /// Regression: the mark was opened for writing in place, so a root
    /// holding a hard link under its name (to a pool entry, to any file of
    /// the filesystem) had that file overwritten by a collection run as
    /// root, and a FIFO under its name hung the collection, holding the
    /// store's lock, until it was killed. The mark is written beside and
    /// renamed over whatever was there.
    #[test]
    fn a_mark_replaces_what_the_root_held_under_its_name_never_writing_through_it() {
        let dir = TestDir::new();
        let root = dir.join("run");
        fs::create_dir_all(&root).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, b"not yours\n").unwrap();
        fs::hard_link(&victim, root.join(MARK)).unwrap();
        let bundle = dir.store().join("b");
        mark(&root, &bundle);
        assert_eq!(fs::read(&victim).unwrap(), b"not yours\n");
        let text = format!("{}\n", bundle.display());
        assert_eq!(fs::read_to_string(root.join(MARK)).unwrap(), text);
        fs::remove_file(root.join(MARK)).unwrap();
        rustix::fs::mknodat(
            rfs::CWD,
            root.join(MARK),
            rfs::FileType::Fifo,
            Mode::from(0o644),
            0,
        )
        .unwrap();
        let (done, marked) = std::sync::mpsc::channel();
        let (r, b) = (root.clone(), bundle.clone());
        std::thread::spawn(move || {
            mark(&r, &b);
            let _ = done.send(());
        });
        marked
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("marking a root holding a FIFO returns");
        assert_eq!(fs::read_to_string(root.join(MARK)).unwrap(), text);
        let names = fruix_core::testing::sorted_names(&root);
        assert_eq!(names, [MARK], "no temporary is left");
    }
}
