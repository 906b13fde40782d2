//! What the database records about each object: from a promotion as it
//! publishes, or read back from the objects themselves (their metadata and
//! `.references`) for a store written before the database existed.

use std::path::Path;

use fruix_core::promotion::PromotionMetadata;

use crate::bundle::{read_bundle, BundleSummary};
use crate::check::{manifest_size, read_identity, read_object_file, Identity};
use crate::db::{Kind, ObjectRecord, Registration};
use crate::error::Result;
use crate::object::ObjectIdentity;
use crate::source_identity::SourceIdentity;
use crate::store::{REFERENCES_FILE, RESULT_METADATA_FILE};
use crate::verify::is_object_name;

/// Now, in Unix seconds. A system clock before 1970 gives 0: what is
/// registered then is recorded, silently, as registered at the epoch (the
/// registry's schema is left as it is). `fruix build` and `matrix run`
/// refuse such a clock before they promote anything, as it names no run
/// ([`fruix_core::run_id::format_run_id`]); other commands that register
/// (`store add`, an import) do not.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The names of the objects of the store at `store` among the absolute
/// `paths` (a `.references` file's lines); paths elsewhere are left out.
pub(crate) fn names_in_store<'a>(
    store: &Path,
    paths: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    paths
        .into_iter()
        .filter_map(|p| {
            let p = Path::new(p);
            let name = p.file_name()?.to_str()?;
            (p.parent() == Some(store) && is_object_name(name.as_bytes())).then(|| name.to_string())
        })
        .collect()
}

/// A record of `name`, registered now, that says nothing yet beyond its
/// kind and size.
fn record(name: &str, kind: Kind, size: u64) -> ObjectRecord {
    ObjectRecord {
        name: name.to_string(),
        kind,
        artifact: None,
        tree_signature: None,
        size,
        invalid_size: None,
        registered_at: now(),
        executor: None,
        run_id: None,
        freebsd_version: None,
        kernconf: None,
    }
}

/// An artifact object's record.
pub(crate) fn artifact(
    name: &str,
    identity: &ObjectIdentity,
    size: u64,
    run_id: Option<&str>,
) -> ObjectRecord {
    ObjectRecord {
        artifact: Some(identity.artifact.clone()),
        tree_signature: Some(identity.tree_signature.to_string()),
        executor: Some(identity.executor.clone()),
        run_id: run_id.map(str::to_string),
        freebsd_version: Some(identity.freebsd_base.version.clone()),
        kernconf: Some(identity.build_policy.kernconf.clone()),
        ..record(name, Kind::Artifact, size)
    }
}

/// A source object's record.
pub(crate) fn source(name: &str, identity: &SourceIdentity, size: u64) -> ObjectRecord {
    ObjectRecord {
        tree_signature: Some(identity.tree_signature.to_string()),
        freebsd_version: Some(identity.facts.version.clone()),
        ..record(name, Kind::Source, size)
    }
}

/// A result bundle's record.
pub(crate) fn bundle(name: &str, m: &PromotionMetadata, size: u64) -> ObjectRecord {
    let summary = BundleSummary {
        executor: m.executor.clone(),
        version: m.freebsd_base.version.clone(),
        run_id: m.run_id.clone(),
        kernconf: m.build_policy.kernconf.clone(),
        source: m.source_store.clone(),
        artifacts: Vec::new(),
        closure_path: m.closure_path.clone(),
        development_profile_path: m.development_profile_path.clone(),
    };
    bundle_record(name, summary, size)
}

/// A bundle's record from what its metadata says.
pub(crate) fn bundle_record(name: &str, b: BundleSummary, size: u64) -> ObjectRecord {
    ObjectRecord {
        executor: Some(b.executor),
        run_id: Some(b.run_id),
        freebsd_version: Some(b.version),
        kernconf: Some(b.kernconf),
        ..record(name, Kind::Bundle, size)
    }
}

/// The registrations of the objects in the store at `store`, read from
/// the objects (for a store written before the database). An object whose
/// metadata cannot be read is left out: unregistered, it is not valid, and
/// `store verify` and the garbage collector see it as such.
pub(crate) fn scan(store: &Path) -> Result<Vec<Registration>> {
    let mut out = Vec::new();
    for path in crate::verify::object_paths_in(store)? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Ok(registration) = read_registration(store, &path, name) {
            out.push(registration);
        }
    }
    // References to objects that are not there (or not readable) are
    // dropped: they could not be registered.
    let present: std::collections::HashSet<String> =
        out.iter().map(|r| r.record.name.clone()).collect();
    for r in &mut out {
        r.references.retain(|n| present.contains(n));
    }
    Ok(out)
}

/// One object's registration, read from the object.
pub(crate) fn read_registration(store: &Path, path: &Path, name: &str) -> Result<Registration> {
    let references_text = read_object_file(path, REFERENCES_FILE)?;
    let references = names_in_store(store, references_text.lines());
    let record = if path.join(RESULT_METADATA_FILE).symlink_metadata().is_ok() {
        let size = object_files_size(path, &[RESULT_METADATA_FILE, REFERENCES_FILE]);
        bundle_record(name, read_bundle(path)?, size)
    } else if let Identity::Source(identity) = Identity::read(path)? {
        source(name, &identity, manifest_size(path)?)
    } else {
        artifact(name, &read_identity(path)?, manifest_size(path)?, None)
    };
    Ok(Registration { record, references })
}

/// The sizes of `files` at the top of `object`, added up.
pub(crate) fn object_files_size(object: &Path, files: &[&str]) -> u64 {
    files
        .iter()
        .filter_map(|f| object.join(f).symlink_metadata().ok())
        .map(|m| m.len())
        .sum()
}
