//! Garbage collection and deletion of store objects.
//!
//! A collection holds the store's GC lock exclusively, so no promotion runs
//! meanwhile (promotions hold it shared from their first pool entry to
//! their registration): nothing a promotion is about to link or reference
//! can go. (A dry run, which removes nothing, holds it shared: see
//! [`collect`].) Then:
//!
//! 1. the live objects are the closure of the roots (see [`crate::roots`])
//!    through the registry's references (a state directory that is not
//!    there is refused, as a mistyped `--state-dir`: its roots would keep
//!    nothing);
//! 2. every other registered object is dead, ordered referrers first (a
//!    prefix of that order never leaves a reference dangling, which is how
//!    `--max-freed` stops early), and directories the registry does not
//!    name are garbage too, even one a root names: each is what a killed
//!    process left (a promotion, an import, a repair), no valid object;
//! 3. the dead are unregistered in one transaction, then each directory is
//!    renamed to a hidden temporary (it disappears at once) and removed;
//! 4. pool entries no object links any more, temporaries of killed
//!    promotions, dead indirect roots, and the result roots of this store's
//!    promoted runs older than a limit go too: a root is its promoted
//!    run's when what it records describes a bundle of this store, never
//!    by its name, and one unfinished (a build running) never goes (see
//!    [`result_roots`], which finds them before anything is unregistered).
//!
//! Killed at any point, it leaves a store that `store verify` accepts:
//! every registered object is whole, and what is left over (unregistered
//! directories, hidden temporaries, unlinked pool entries) is garbage the
//! next collection removes. Cancelled (Ctrl-C; see [`collect_into`]), it
//! stops between two removals, leaving the same, and says what it removed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fruix_core::error::IoContext;
use fruix_core::manifest::Progress;

use crate::db::{Kind, ObjectRecord};
use crate::error::{Error, Result};
use crate::pipeline::check_cancelled;
use crate::pool::TEMP_PREFIX;
use crate::roots::{self, Root};
use crate::store::entries::Reserve;
use crate::store::Store;
use crate::temp_roots;
use crate::verify::object_paths;

pub mod result_roots;
mod sweep;

use sweep::{collect_pool, GoingLinks};

/// What a collection may do.
#[derive(Debug, Clone)]
pub struct GcOptions<'a> {
    /// The state directory holding `gcroots/` and `native-builds/`.
    pub state_dir: PathBuf,
    /// Only say what would go, holding the GC lock shared: what a
    /// promotion running meanwhile is about to register may be listed (see
    /// [`collect`]).
    pub dry_run: bool,
    /// Stop once this many bytes (estimated from the objects' sizes) are
    /// freed.
    pub max_freed: Option<u64>,
    /// Keep promoted result roots in the state directory.
    pub keep_result_roots: bool,
    /// Promoted result roots older than this go (unless kept).
    pub older_than: Duration,
    /// Counts removed objects (as files) and their bytes, for a display;
    /// cancelling it ([`Progress::cancel`]) stops the collection (see
    /// [`collect_into`]).
    pub progress: Option<&'a Progress>,
}

/// One object a collection removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    /// The object's path in the store.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub path: PathBuf,
    /// `None` for a directory the registry did not name.
    pub kind: Option<Kind>,
    /// Bytes of content, as the registry records them; 0 for a directory
    /// the registry did not name, or a record whose size is invalid.
    pub size: u64,
}

/// An object or temporary a collection left, because this process could
/// not remove it (another user's: [`Error::NotOwner`]; a removal that
/// failed), or because an object left so references it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    /// Its path in the store.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub path: PathBuf,
    /// Whether it is a hidden temporary, not an object.
    pub temporary: bool,
    /// Its owner's uid, when it is left as another user's.
    pub owner: Option<u32>,
    /// Why it is left, as a message says it (naming it).
    pub reason: String,
}

impl Refused {
    pub(crate) fn new(path: PathBuf, temporary: bool, why: &Error) -> Refused {
        let owner = match why {
            Error::NotOwner { owner, .. } => Some(*owner),
            _ => None,
        };
        let reason = why.to_string();
        Refused {
            path,
            temporary,
            owner,
            reason,
        }
    }
}

/// What a collection removed (or, with `dry_run`, would remove).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    /// Whether nothing was removed ([`GcOptions::dry_run`]).
    pub dry_run: bool,
    /// The objects removed: registered ones, referrers first, then
    /// directories the registry did not name.
    pub objects: Vec<Removed>,
    /// Bytes of the removed objects' content.
    pub object_bytes: u64,
    /// Pool entries removed because no object links them (a dry run
    /// counts those no object would link once what it lists is removed).
    pub pool_entries: usize,
    /// Bytes on disk of the removed pool entries.
    pub pool_bytes: u64,
    /// Hidden temporaries removed from the store and its pool, left there
    /// by killed processes.
    pub temporaries: usize,
    /// The links of the dead indirect roots whose `gcroots/auto` entry was
    /// removed.
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub dead_roots: Vec<PathBuf>,
    /// The promoted result roots removed from `STATE_DIR/native-builds/`.
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub result_roots: Vec<PathBuf>,
    /// Live objects kept.
    pub kept: usize,
    /// Dead objects left because `--max-freed` was reached
    /// ([`GcOptions::max_freed`]): the next collection removes them.
    pub dead_left: usize,
    /// What could not be removed: neither removed nor counted; still
    /// registered if it was. A dry run lists none: it lists what is
    /// garbage, whoever may remove it.
    pub refused: Vec<Refused>,
}

/// The names the live roots point at: the objects they keep alive, those
/// of them that are registered (a directory the registry does not name is
/// no object, and goes whatever names it).
fn rooted(roots: &[Root]) -> Vec<String> {
    roots.iter().filter_map(|r| r.object.clone()).collect()
}

/// `dead` ordered so that every object comes before the objects it
/// references (referrers first); ties by name.
fn referrers_first(store: &Store, dead: &BTreeSet<String>) -> Result<Vec<String>> {
    let db = store.db();
    // How many dead referrers each dead object still waits for.
    let mut waiting: BTreeMap<&str, usize> = dead.iter().map(|n| (n.as_str(), 0)).collect();
    let mut references: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for name in dead {
        let refs: Vec<String> = db
            .neighbours(name, false)?
            .into_iter()
            .filter(|r| dead.contains(r))
            .collect();
        for r in &refs {
            *waiting.get_mut(r.as_str()).expect("dead") += 1;
        }
        references.insert(name, refs);
    }
    let mut ready: BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut out = Vec::with_capacity(dead.len());
    while let Some(name) = ready.pop_first() {
        out.push(name.to_string());
        for r in &references[name] {
            let n = waiting.get_mut(r.as_str()).expect("dead");
            *n -= 1;
            if *n == 0 {
                ready.insert(dead.get(r).expect("dead").as_str());
            }
        }
    }
    Ok(out)
}

/// The bytes `record` says its object holds: 0 when its size is invalid
/// (a hand edit, which `store verify` reports), so it counts for nothing.
fn size_of(record: &ObjectRecord) -> u64 {
    record.valid_size().unwrap_or(0)
}

/// Removes object directory `path`: renamed to a hidden temporary first,
/// so it disappears at once, then removed (see [`Store::remove_object`]).
fn remove_object(store: &Store, path: &Path) -> Result<()> {
    store.remove_object(path, "gc")
}

/// Collects garbage in `store` (see the module documentation).
///
/// A dry run ([`GcOptions::dry_run`]) removes nothing, and holds the GC
/// lock shared, as promotions do: a user who may only read the store can
/// run one, and stopping it (Ctrl-Z) stalls no promotion nor collection.
/// Running beside promotions, it may list as removable an object that a
/// promotion running at the same time is about to register (and count
/// that promotion's hidden temporaries and new pool entries).
pub fn collect(store: &Store, options: &GcOptions<'_>) -> Result<GcReport> {
    let mut report = GcReport::default();
    collect_into(store, options, &mut report)?;
    Ok(report)
}

/// [`collect`], saying in `report` what it removed, whether it finishes or
/// fails. Cancelled through [`GcOptions::progress`] ([`Progress::cancel`]),
/// it stops before its next removal and fails with
/// [`fruix_core::Error::Cancelled`]: the store is as a killed collection
/// leaves it (see the module documentation), and `report` holds what was
/// removed until then. A dry run holds the GC lock shared (see
/// [`collect`]).
pub fn collect_into(store: &Store, options: &GcOptions<'_>, report: &mut GcReport) -> Result<()> {
    let cancelled = || check_cancelled(options.progress);
    state_dir_there(&options.state_dir)?;
    let _gc = store.gc_lock(!options.dry_run)?;
    let _reserve = (!options.dry_run).then(|| Reserve::release(store));
    // Each removal asks it: read once, then again only when it changes.
    let _mounts = fruix_core::remove::keep_mount_table();
    let roots = roots::list(&options.state_dir, store.path())?;
    *report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    let mut rooted = rooted(&roots);
    rooted.extend(temp_roots::live(store.path(), !options.dry_run)?);
    let live: HashSet<String> = store.db().closure(&rooted)?.into_iter().collect();
    let records: BTreeMap<String, ObjectRecord> = store
        .db()
        .list(&Default::default())?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    report.kept = live.iter().filter(|n| records.contains_key(*n)).count();
    // Before anything is unregistered: a root is told by its bundle, and
    // marked (even those kept) for when its bundle is gone.
    let promoted_roots = result_roots::promoted(store, &records, options)?;
    let dead: BTreeSet<String> = records
        .keys()
        .filter(|n| !live.contains(*n))
        .cloned()
        .collect();
    let mut order = referrers_first(store, &dead)?;
    if let Some(max) = options.max_freed {
        let mut freed = 0;
        let keep = order
            .iter()
            .take_while(|n| {
                let go = freed < max;
                freed += size_of(&records[*n]);
                go
            })
            .count();
        report.dead_left = order.len() - keep;
        order.truncate(keep);
    }
    // Directories the registry does not name, rooted or not. Under the
    // exclusive GC lock, no promotion, import or source add is between
    // publishing an object and registering it (each holds the lock shared
    // from its first pool entry until its objects are registered), and no
    // repair runs (it holds the store alone): each is what a killed process
    // left, no valid object. A root naming one keeps nothing, and is dead
    // once it goes; promoting its result root again recreates it. What is
    // not named as an object is no leftover of fruix's: left alone. (A dry
    // run, under the shared lock, may list one a promotion is about to
    // register.)
    let unregistered: Vec<PathBuf> = object_paths(store)?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !records.contains_key(n))
        })
        .collect();
    // A dry run lists what is garbage, whoever may remove it.
    let order = match options.dry_run {
        true => order,
        false => store.removable(order, &mut report.refused)?,
    };
    cancelled()?;
    if !options.dry_run {
        store.db().unregister(&order)?;
    }
    // What a dry run would remove, for the pool entries it would unlink.
    let mut going = Vec::new();
    for name in &order {
        cancelled()?;
        let path = store.path().join(name);
        if options.dry_run {
            going.push(path.clone());
        } else {
            remove_object(store, &path)?;
        }
        report.object_bytes += size_of(&records[name]);
        if let Some(p) = options.progress {
            p.add(size_of(&records[name]));
        }
        report.objects.push(Removed {
            path,
            kind: Some(records[name].kind),
            size: size_of(&records[name]),
        });
    }
    let stop_early = options
        .max_freed
        .is_some_and(|max| report.object_bytes >= max);
    if !stop_early {
        for path in unregistered {
            cancelled()?;
            if options.dry_run {
                going.push(path.clone());
            } else if let Err(e) = store.may_remove(&path) {
                report.refused.push(Refused::new(path, false, &e));
                continue;
            } else {
                remove_object(store, &path)?;
            }
            report.objects.push(Removed {
                path,
                kind: None,
                size: 0,
            });
        }
        cancelled()?;
        let temporaries = collect_temporaries(store, options.dry_run, &mut report.refused)?;
        report.temporaries += temporaries.len();
        if options.dry_run {
            going.extend(temporaries);
        }
    }
    let going = match options.dry_run {
        true => GoingLinks::of(store, &going, options.progress)?,
        false => GoingLinks::default(),
    };
    collect_pool(store, options.dry_run, &going, options.progress, report)?;
    cancelled()?;
    for root in roots.iter().filter(|r| r.is_dead() && r.indirect) {
        if let Some(entry) = &root.auto_entry {
            if !options.dry_run {
                match fs::remove_file(entry) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        crate::warning::warn(crate::warning::Warning::DeadRootLeft {
                            entry: entry.clone(),
                            reason: e.to_string(),
                        });
                        continue;
                    }
                    _ => {}
                }
            }
            report.dead_roots.push(root.link.clone());
        }
    }
    if !options.keep_result_roots {
        result_roots::collect(&promoted_roots, options, &mut report.result_roots)?;
    }
    Ok(())
}

/// Removes the store's hidden temporaries: under the exclusive GC lock no
/// promotion runs, so every one was left by a killed process. Returns
/// the paths of those removed (or, a dry run, that would be); those it may
/// not or could not remove go to `refused`.
fn collect_temporaries(
    store: &Store,
    dry_run: bool,
    refused: &mut Vec<Refused>,
) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(store.path())
        .with_path("read", store.path())?
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            let removed = match dry_run {
                true => Ok(()),
                false => store.may_remove(&path).and_then(|()| {
                    fruix_core::remove::remove_tree(&path)
                        .map_err(|e| fruix_core::Error::io("remove", &path, e).into())
                }),
            };
            match removed {
                Ok(()) => out.push(path),
                Err(e) => refused.push(Refused::new(path, true, &e)),
            }
        }
    }
    Ok(out)
}

/// Refuses, before the GC lock is waited for, a state directory that is
/// not a directory ([`Error::NoStateDir`]): its roots could keep nothing,
/// so a mistyped or forgotten `--state-dir` would let every object go.
fn state_dir_there(state_dir: &Path) -> Result<()> {
    match fs::metadata(state_dir) {
        Ok(m) if m.is_dir() => Ok(()),
        _ => Err(Error::NoStateDir {
            state_dir: state_dir.to_path_buf(),
        }),
    }
}

/// Deletes the objects `names` (and nothing else): refused, with nothing
/// deleted, when a root keeps one alive or an object not being deleted
/// references one.
pub fn delete(store: &Store, state_dir: &Path, names: &[String]) -> Result<Vec<PathBuf>> {
    state_dir_there(state_dir)?;
    let _gc = store.gc_lock(true)?;
    let _reserve = Reserve::release(store);
    let _mounts = fruix_core::remove::keep_mount_table();
    let roots = roots::list(state_dir, store.path())?;
    let deleting: BTreeSet<String> = names.iter().cloned().collect();
    let in_use = store.db().closure(&temp_roots::live(store.path(), true)?)?;
    if let Some(used) = in_use.iter().find(|n| deleting.contains(*n)) {
        return Err(Error::StillReferenced {
            object: store.path().join(used),
            by: "a running build or promotion (a temporary root)".into(),
        });
    }
    for root in &roots {
        let Some(object) = &root.object else { continue };
        let closure = store.db().closure(std::slice::from_ref(object))?;
        if let Some(kept) = closure.iter().find(|n| deleting.contains(*n)) {
            return Err(Error::StillReferenced {
                object: store.path().join(kept),
                by: format!("the root {}", root.link.display()),
            });
        }
    }
    for name in &deleting {
        if let Some(referrer) = store
            .db()
            .neighbours(name, true)?
            .into_iter()
            .find(|r| !deleting.contains(r))
        {
            return Err(Error::StillReferenced {
                object: store.path().join(name),
                by: store.path().join(referrer).display().to_string(),
            });
        }
    }
    let order = referrers_first(store, &deleting)?;
    for name in &order {
        store.may_remove(&store.path().join(name))?;
    }
    store.db().unregister(&order)?;
    let mut out = Vec::new();
    for name in order {
        let path = store.path().join(&name);
        remove_object(store, &path)?;
        out.push(path);
    }
    collect_pool(
        store,
        false,
        &GoingLinks::default(),
        None,
        &mut GcReport::default(),
    )?;
    Ok(out)
}
