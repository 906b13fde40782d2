//! Checking what a promotion, an import or a source add finds under an
//! object's name before it reuses it: a registered object structurally, a
//! directory the registry does not name (a leftover) in full, every file
//! hashed, since nothing vouches for it.

use std::collections::HashMap;
use std::path::Path;

use fruix_core::manifest::{Difference, EntryKind, SPECIAL_BITS};

use super::{check_object, read_store_manifest, Depth};
use crate::bundle::check_bundle;
use crate::error::{Error, Result};
use crate::pool::key;
use crate::store::{Store, RESULT_METADATA_FILE};

/// Whether `e`, from checking an object, says that the object is not what
/// its name and manifest say (corrupt, inconsistent, unreadable or unsafe
/// metadata), rather than that the system failed to read it or the work
/// was cancelled.
fn is_object_fault(e: &Error) -> bool {
    match e {
        Error::Corrupt { .. } | Error::Inconsistent { .. } => true,
        Error::Core(c) => c.failure() == fruix_core::Failure::Input,
        _ => false,
    }
}

/// Checks what a promotion (or an import, or a source add) finds under an
/// object's name before it reuses it, under the object's lock (and the
/// collector's, shared: no repair, collection or deletion runs, and only
/// a holder of the object's lock registers it, so whether the registry
/// names it cannot change meanwhile): `true` when an intact object is
/// there to reuse, `false` when nothing is there.
///
/// A registered object is checked as [`check_reusable`] does, structurally:
/// the registry vouches for it, and `store verify` reads it. It fails as
/// the check's error (say, [`Error::Corrupt`]): it is never replaced here,
/// but reported, for `store verify --repair`.
///
/// A directory the registry does not name is no object, and nothing
/// vouches for it: a repair, promotion or import killed half-way left it,
/// or a hand edit changed it. Registering it would make whatever it holds
/// valid, so its content is read in full, every file hashed, against its
/// manifest (`check_unregistered`); that read is the last before it is
/// registered. Its manifest must match the tree signature its metadata
/// commits to, and its metadata must hash to its name, which is the name
/// the caller computed from what it read: so it is checked against the
/// very manifest the caller computed. Only such leftovers pay this read,
/// never an object found registered. One that fails is removed
/// ([`Store::remove_object`]), saying so
/// ([`crate::warning::Warning::LeftoverRemoved`]), and `false` returned,
/// for the caller to build the object anew; unless a pool entry that
/// building it would link is corrupt too (`corrupt_pool_entries`): the
/// new object would hold the same corrupt content, so the leftover is left
/// as it is and this fails with [`Error::Corrupt`], saying to repair.
pub fn check_existing(store: &Store, object: &Path) -> Result<bool> {
    if object.symlink_metadata().is_err() {
        return Ok(false);
    }
    let name = object.file_name().unwrap_or_default().to_string_lossy();
    if store.is_valid(&name)? {
        check_reusable(object)?;
        return Ok(true);
    }
    let mut e = match check_unregistered(object) {
        Ok(()) => return Ok(true),
        Err(e) if !is_object_fault(&e) => return Err(e),
        Err(e) => e,
    };
    if let Error::Corrupt { differences, .. } = &mut e {
        if corrupt_pool_entries(store, object, differences)? {
            return Err(e);
        }
    }
    crate::warning::warn(crate::warning::Warning::LeftoverRemoved {
        object: object.to_path_buf(),
        problem: what_is_wrong(&e),
    });
    store.remove_object(object, "promote")?;
    Ok(false)
}

/// Checks an object that is already in the store before it is reused (by
/// a promotion, an import or a source add that finds it there), its
/// structure only ([`Depth::Structure`]): a corrupt one is
/// [`Error::Corrupt`], never silently reused. An object holding a
/// bundle's metadata file is checked as a result bundle
/// ([`check_bundle`]), as `store verify` tells them apart. Only for a
/// registered object: see [`check_existing`].
pub fn check_reusable(object: &Path) -> Result<()> {
    check_found(object, Depth::Structure)
}

/// [`check_reusable`] reading every file's content too
/// ([`Depth::Content`], each file hashed, the pool not trusted): for a
/// directory the registry does not name (see [`check_existing`]). A
/// bundle's check reads all it holds already.
fn check_unregistered(object: &Path) -> Result<()> {
    check_found(object, Depth::Content { pool: None })
}

/// Checks `object`, found in the store, to `depth` (a bundle as a bundle).
fn check_found(object: &Path, depth: Depth<'_>) -> Result<()> {
    if object.join(RESULT_METADATA_FILE).symlink_metadata().is_ok() {
        return check_bundle(object);
    }
    let check = check_object(object, depth, None)?;
    Error::corrupt_unless_intact(object, check.differences, check.more_differences)
}

/// What checking an object found wrong, as [`Error::Corrupt`] and
/// [`Error::Inconsistent`] say it but for what to do.
fn what_is_wrong(e: &Error) -> String {
    match e {
        Error::Corrupt {
            differences,
            more_differences,
            ..
        } => format!(
            "{} difference(s): {}",
            differences.len() as u64 + more_differences,
            differences
                .iter()
                .take(5)
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Error::Inconsistent { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

/// Whether a pool entry that an object built anew in place of the
/// unregistered `object` would link is corrupt: the pool entry of each
/// file that `differences` (from [`check_unregistered`], which trusted
/// `object`'s manifest) say was modified is read (a promotion only looks
/// at a pool entry's size and mode before it reuses it). Each such file's
/// difference then says so, naming the entry.
fn corrupt_pool_entries(
    store: &Store,
    object: &Path,
    differences: &mut [Difference],
) -> Result<bool> {
    let mut modified: HashMap<String, &mut Vec<String>> = differences
        .iter_mut()
        .filter_map(|d| match d {
            Difference::Modified { path, what } => Some((path.clone(), what)),
            _ => None,
        })
        .collect();
    let mut corrupt = false;
    if modified.is_empty() {
        return Ok(false);
    }
    for entry in read_store_manifest(object)? {
        let EntryKind::File { sha256, .. } = &entry.kind else {
            continue;
        };
        let Some(what) = modified.get_mut(&entry.manifest_path()) else {
            continue;
        };
        let key = key(sha256, entry.mode & !SPECIAL_BITS);
        if store.pool().inode_of(&key).is_none() {
            continue;
        }
        if let Err(problem) = store.pool().check_entry(&key) {
            // Shown escaped, as every difference is ([`Error::Corrupt`]).
            what.push(format!(
                "so is its pool entry {}, which a new object would link ({})",
                problem.path.display(),
                problem.message
            ));
            corrupt = true;
        }
    }
    Ok(corrupt)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use fruix_core::testing::TestDir;

    use super::*;
    use crate::store::MANIFEST_FILE;
    use crate::{promote_native_build_result, PromoteOptions, PromotionReport, Store};

    /// A result root promoted into a new store: the test directory
    /// holding both, the root, the store and the promotion's report.
    fn promoted() -> (TestDir, PathBuf, Store, PromotionReport) {
        let dir = TestDir::new();
        let root = dir.root("r1", "local", "20260405T213444Z", true);
        let store = Store::open(&dir.store()).unwrap();
        let report =
            promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
        (dir, root, store, report)
    }

    /// A bundle found in the store (left unregistered by a killed import,
    /// say) is checked as a bundle: read as an artifact, it failed for
    /// want of an artifact's metadata file, and could never be reused.
    #[test]
    fn a_bundle_found_in_the_store_is_checked_as_a_bundle() {
        let (_dir, _, _store, report) = promoted();
        let bundle = &report.result_store;
        check_reusable(bundle).unwrap();
        for artifact in report.artifacts.values() {
            check_reusable(&artifact.store_path).unwrap();
        }
        // Never silently reused when it holds what a bundle does not.
        std::fs::set_permissions(bundle, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bundle.join("extra"), "x").unwrap();
        let e = check_reusable(bundle).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    /// Regression: an object missing its manifest (as a repair killed
    /// half-way left one) failed its check with an I/O error, a system
    /// failure, and a promotion finding it unregistered failed every time.
    /// Registered, it is inconsistent (exit 4) and stays; unregistered, it
    /// is no object: it goes, and promotion builds the object anew.
    #[test]
    fn an_object_missing_its_manifest_is_replaced_only_when_unregistered() {
        let (_dir, root, store, report) = promoted();
        let world = &report.artifacts["world"].store_path;
        std::fs::set_permissions(world, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_file(world.join(MANIFEST_FILE)).unwrap();
        let e = check_existing(&store, world).unwrap_err();
        assert!(matches!(e, Error::Inconsistent { .. }), "{e}");
        assert_eq!(e.exit_status(), fruix_core::ExitStatus::PromotionFailure);
        assert!(
            e.to_string().contains(".fruix-manifest.mtree is missing"),
            "{e}"
        );
        assert!(world.is_dir(), "a registered object was removed");
        // As a repair leaves them: unregistered, referrers with what they refer to.
        let names = [&report.result_store, world]
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
        store.db().unregister(&names).unwrap();
        assert!(!check_existing(&store, world).unwrap());
        assert!(world.symlink_metadata().is_err(), "the leftover stayed");
        let again = promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
        assert!(again.artifacts["world"].new);
        assert!(check_existing(&store, world).unwrap());
        assert!(store.is_valid(&names[1]).unwrap());
    }

    /// Regression: a directory the registry does not name was reused after
    /// a structural check alone, so a file changed in place (its size,
    /// mode and mtime kept, as a killed repair's leftover may hold) was
    /// registered as valid. It is read in full: intact, it is reused;
    /// changed, it is replaced, unless the pool entry a new object would
    /// link is the same corrupt inode, which leaves it and refuses.
    #[test]
    fn an_unregistered_object_is_read_in_full_before_it_is_reused() {
        use sha2::{Digest, Sha256};
        use std::io::Write;
        let (_dir, root, store, report) = promoted();
        let world = &report.artifacts["world"].store_path;
        let names = [&report.result_store, world]
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
        store.db().unregister(&names).unwrap();
        assert!(check_existing(&store, world).unwrap(), "intact: reused");
        let motd = world.join("etc/motd");
        let original = std::fs::read(&motd).unwrap();
        let modified = std::fs::metadata(&motd).unwrap().modified().unwrap();
        let mut file = std::fs::OpenOptions::new().write(true).open(&motd).unwrap();
        file.write_all(&vec![b'!'; original.len()]).unwrap();
        file.set_modified(modified).unwrap();
        drop(file);
        check_reusable(world).expect("the structure is intact");
        let e = check_existing(&store, world).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("so is its pool entry"), "{e}");
        assert!(world.is_dir(), "left for the repair");
        // The pool entry gone, as a repair removes it: replaced.
        let entry = key(&Sha256::digest(&original).into(), 0o444);
        store.pool().remove(&entry).unwrap();
        assert!(!check_existing(&store, world).unwrap());
        assert!(world.symlink_metadata().is_err(), "the leftover stayed");
        let again = promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
        assert!(again.artifacts["world"].new);
        assert_eq!(std::fs::read(&motd).unwrap(), original);
        assert!(check_existing(&store, world).unwrap());
    }
}
