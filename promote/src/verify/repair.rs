//! `fruix store verify --repair`: removing what a verification found
//! corrupt, and every object that refers to it, in an order that leaves
//! the store consistent wherever the repair is killed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{
    name_of, object_paths, references, verify_object, ObjectVerification, PoolVerification,
    ReferenceProblem, RegistryCheck,
};
use crate::bundle::read_bundle;
use crate::db::Kind;
use crate::error::Result;
use crate::store::entries::Reserve;
use crate::store::{Store, RESULT_METADATA_FILE};

/// What [`repair`] removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Repair {
    /// Objects removed because their verification failed.
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub removed_objects: Vec<PathBuf>,
    /// Corrupt pool entries removed (`STORE/.links/NAME`).
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub removed_pool_entries: Vec<PathBuf>,
    /// Result bundles removed because they name (or the registry says they
    /// refer to) an object that was removed or is missing.
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub removed_bundles: Vec<PathBuf>,
    /// Other intact objects removed because they refer, directly or through
    /// other removed objects, to an object that was removed or is missing
    /// (the artifacts built from a corrupt source object): a valid object's
    /// references are always valid.
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub removed_referrers: Vec<PathBuf>,
    /// Registered objects that were missing, unregistered.
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub unregistered: Vec<PathBuf>,
    /// References between valid objects the registry lacked, recorded
    /// ([`ReferenceFault::NotRecorded`](super::ReferenceFault::NotRecorded)).
    pub recorded_references: Vec<ReferenceProblem>,
}

/// Removes the corrupt objects and pool entries found by a verification,
/// then every registered object that refers, directly or not, to a removed
/// or missing object, and every result bundle whose artifact objects are not
/// all present. Runs while no other process or promotion uses the store (it
/// waits for them, giving up with [`fruix_core::Error::Cancelled`] once the
/// process is interrupted: see [`Store::exclusively`]).
///
/// First, the references `registry` found not recorded between objects
/// still valid are recorded
/// ([`ReferenceFault::NotRecorded`](super::ReferenceFault::NotRecorded)),
/// so that their referrers go with what they refer to. A reference to an
/// object the registry lacks
/// ([`ReferenceFault::NotRegistered`](super::ReferenceFault::NotRegistered))
/// removes nothing.
///
/// The corrupt pool entries go first. Then the registry forgets every
/// object that goes (and the missing objects) in one transaction, before
/// any directory is removed: when that fails, nothing but those pool
/// entries was removed. Then each directory is renamed to a hidden
/// temporary and removed ([`Store::remove_object`]), so a repair killed at
/// any point leaves no part of an object under an object's name, only
/// whole directories the registry does not name, which no promotion
/// registers before it has read them in full; one that cannot be renamed
/// is left unregistered, not valid, for `store gc`. A registered object
/// never lacks its directory or one of its references. (`repair_alone`
/// says why this order, kill point by kill point.)
///
/// What went meanwhile (a collection that ran between the verification and
/// the repair) is not removed again, nor listed; and each finding is
/// checked again once the store is held (a corrupt object or pool entry
/// read again, a missing object looked for): what a promotion or import
/// made anew, sound, meanwhile stays. The caller must not hold
/// the collector's lock ([`Store::gc_lock`]): a collection waiting for it
/// holds the store, which the repair waits for.
pub fn repair(
    store: &Store,
    objects: &[ObjectVerification],
    pool: &PoolVerification,
    registry: &RegistryCheck,
) -> Result<Repair> {
    store
        .exclusively(true, || repair_alone(store, objects, pool, registry))?
        .expect("waited for the store")
}

/// [`repair`], while the store is held exclusively.
fn repair_alone(
    store: &Store,
    objects: &[ObjectVerification],
    pool: &PoolVerification,
    registry: &RegistryCheck,
) -> Result<Repair> {
    // Made again when the repair ends (after `db` below is dropped).
    let _reserve = Reserve::release(store);
    // What the verification found may have changed since, while the
    // repair waited for the store: a collection removed it, and a promotion
    // or import made it anew, sound. So each finding is checked again, now
    // that no other process uses the store, and only what is still wrong
    // goes (a corrupt object or pool entry is read again: they are few).
    let still_corrupt: Vec<PathBuf> = objects
        .iter()
        .filter(|o| !o.ok && o.path.symlink_metadata().is_ok())
        .filter(|o| !verify_object(&o.path, None, None).ok)
        .map(|o| o.path.clone())
        .collect();
    let mut db = store.db();
    let recorded_references = references::record_references(&mut db, &registry.references)?;
    let mut still_registered = Vec::new();
    for path in &registry.missing {
        let missing = path.symlink_metadata().is_err();
        if missing && db.get(&name_of(path).unwrap_or_default())?.is_some() {
            still_registered.push(path.clone());
        }
    }
    let mut repair = Repair {
        removed_objects: still_corrupt,
        unregistered: still_registered,
        recorded_references,
        ..Repair::default()
    };
    // What goes: the corrupt and the missing objects, then, until nothing
    // more is added, every registered referrer of what goes and every
    // bundle naming an artifact that is gone or goes.
    let mut going: HashSet<String> = repair
        .removed_objects
        .iter()
        .chain(&repair.unregistered)
        .filter_map(|p| name_of(p))
        .collect();
    let mut todo: Vec<String> = going.iter().cloned().collect();
    loop {
        while let Some(name) = todo.pop() {
            for referrer in db.neighbours(&name, true)? {
                if !going.insert(referrer.clone()) {
                    continue;
                }
                let path = store.path().join(&referrer);
                match db.get(&referrer)?.map(|r| r.kind) {
                    Some(Kind::Bundle) => repair.removed_bundles.push(path),
                    _ => repair.removed_referrers.push(path),
                }
                todo.push(referrer);
            }
        }
        for bundle in object_paths(store)? {
            let Some(name) = name_of(&bundle) else {
                continue;
            };
            if going.contains(&name)
                || bundle
                    .join(RESULT_METADATA_FILE)
                    .symlink_metadata()
                    .is_err()
            {
                continue;
            }
            let complete = read_bundle(&bundle).is_ok_and(|b| {
                b.artifacts.iter().all(|a| {
                    let artifact = Path::new(&a.store_path);
                    name_of(artifact).is_some_and(|n| !going.contains(&n))
                        && artifact.symlink_metadata().is_ok()
                })
            });
            if !complete {
                going.insert(name.clone());
                repair.removed_bundles.push(bundle);
                todo.push(name);
            }
        }
        if todo.is_empty() {
            break;
        }
    }
    // What goes, in an order that leaves, whatever the point a repair is
    // killed at (`kill -9`), a registry naming only whole objects, and a
    // store in which no later command registers corrupt content as valid:
    // 1. The corrupt pool entries. Killed before or among them, nothing is
    //    unregistered yet: every corrupt object is still registered, `store
    //    verify` still reports it, and the next repair goes on. Removing an
    //    entry changes no object (each of an object's files is a link of
    //    its own to the inode), and only corrupt objects link a corrupt
    //    entry. From here on, no object a promotion builds anew links an
    //    entry this repair found corrupt: the promotion writes the content
    //    it reads into a new one.
    // 2. The registry forgets every object that goes, in one transaction
    //    (referrers with what they refer to). Failing, or killed before it
    //    commits, every object is still registered and in place.
    // 3. Each directory is renamed away (to a hidden temporary, which the
    //    next sweep or collection removes), whole, then removed. Killed
    //    here, those not renamed yet stay under their names, unregistered:
    //    no objects, which nothing vouches for. A promotion or a source add
    //    finding one reads it in full before it registers it, and replaces
    //    it when it fails ([`crate::check::check_existing`]); `store gc`
    //    removes them. One that cannot be renamed stays so, for `store gc`.
    // Renaming each directory away before the registry forgets it would
    // instead leave, killed in between, registered objects whose directory
    // is gone: a registry naming what is not there (to exports, copies, and
    // the bundles naming them), where an unregistered leftover names nothing.
    for p in &pool.corrupt {
        let Some(name) = p
            .path
            .file_name()
            .filter(|n| store.pool().inode_of(n).is_some())
        else {
            continue;
        };
        if store.pool().check_entry(name).is_ok() {
            // Made anew, sound, since it was found corrupt.
            continue;
        }
        store.pool().remove(name)?;
        repair.removed_pool_entries.push(p.path.clone());
    }
    let mut names: Vec<String> = going.into_iter().collect();
    names.sort();
    db.unregister(&names)?;
    drop(db);
    for list in [
        &mut repair.removed_objects,
        &mut repair.removed_bundles,
        &mut repair.removed_referrers,
    ] {
        list.sort();
        for path in list.iter() {
            let _ = store.remove_object(path, "repair");
        }
    }
    Ok(repair)
}
