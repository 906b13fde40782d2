//! Checking the registry's record of each intact object against what the
//! object says of itself (its metadata, which its name commits to, and its
//! content's size), and rewriting a record that disagrees.
//!
//! The registry is what queries, listings, signatures and collections
//! read: a record changed by hand (a tree signature, an executor, a
//! negative size) would have them tell something the object does not
//! hold. The object, checked against its name, is the authority, so a
//! repair rewrites the record from it rather than removing a sound object.

use std::path::PathBuf;

use crate::db::{Database, Kind, ObjectRecord};
use crate::error::Result;
use crate::register::read_registration;
use crate::store::Store;

use super::{name_of, ObjectVerification};

/// A field of a registry record that its object can contradict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordField {
    /// `artifact`, `bundle` or `source`.
    Kind,
    /// The artifact's name.
    Artifact,
    /// The tree signature.
    TreeSignature,
    /// The bytes of content.
    Size,
    /// The executor that built it.
    Executor,
    /// A bundle's run (an artifact's record names the run that first
    /// registered it, which the object does not say).
    RunId,
    /// The FreeBSD version.
    FreebsdVersion,
    /// The kernel configuration.
    Kernconf,
}

impl RecordField {
    /// The field's name, as the registry's column and JSON call it.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordField::Kind => "kind",
            RecordField::Artifact => "artifact",
            RecordField::TreeSignature => "tree-signature",
            RecordField::Size => "size",
            RecordField::Executor => "executor",
            RecordField::RunId => "run-id",
            RecordField::FreebsdVersion => "freebsd-version",
            RecordField::Kernconf => "kernconf",
        }
    }
}

/// A field of an intact object's registry record that disagrees with the
/// object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordMismatch {
    /// The object, registered and intact.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub object: PathBuf,
    /// The field that disagrees.
    pub field: RecordField,
    /// What the registry records (`None`: nothing).
    pub registered: Option<String>,
    /// What the object says.
    pub actual: Option<String>,
}

/// `record`'s size as text: what the registry holds, valid or not.
fn size_text(record: &ObjectRecord) -> Option<String> {
    Some(
        record
            .invalid_size
            .clone()
            .unwrap_or(record.size.to_string()),
    )
}

/// The fields of `registered` that disagree with `actual`, the record
/// read from the object.
fn mismatches(
    registered: &ObjectRecord,
    actual: &ObjectRecord,
) -> Vec<(RecordField, [Option<String>; 2])> {
    let text = |s: &Option<String>| s.clone();
    let mut fields = vec![
        (
            RecordField::Kind,
            [
                Some(registered.kind.as_str().into()),
                Some(actual.kind.as_str().into()),
            ],
        ),
        (
            RecordField::Artifact,
            [text(&registered.artifact), text(&actual.artifact)],
        ),
        (
            RecordField::TreeSignature,
            [
                text(&registered.tree_signature),
                text(&actual.tree_signature),
            ],
        ),
        (
            RecordField::Size,
            [size_text(registered), size_text(actual)],
        ),
        (
            RecordField::Executor,
            [text(&registered.executor), text(&actual.executor)],
        ),
        (
            RecordField::FreebsdVersion,
            [
                text(&registered.freebsd_version),
                text(&actual.freebsd_version),
            ],
        ),
        (
            RecordField::Kernconf,
            [text(&registered.kernconf), text(&actual.kernconf)],
        ),
    ];
    if actual.kind == Kind::Bundle {
        fields.push((
            RecordField::RunId,
            [text(&registered.run_id), text(&actual.run_id)],
        ));
    }
    fields.retain(|(_, [r, a])| r != a);
    fields
}

/// The record the registry should hold of the intact object at `object`
/// (named `name`), read from the object; `None` when it cannot be read
/// (its verification says why).
fn record_of(store: &Store, object: &std::path::Path, name: &str) -> Option<ObjectRecord> {
    read_registration(store.path(), object, name)
        .ok()
        .map(|r| r.record)
}

/// The fields of the registry's records of the intact, registered objects
/// of `verified` that disagree with the objects. The caller holds the
/// collector's lock, as for verifying.
pub fn check_records(
    store: &Store,
    verified: &[ObjectVerification],
) -> Result<Vec<RecordMismatch>> {
    let mut found = Vec::new();
    for v in verified.iter().filter(|v| v.ok) {
        let Some(name) = name_of(&v.path) else {
            continue;
        };
        let Some(registered) = store.db().get(&name)? else {
            continue;
        };
        let Some(actual) = record_of(store, &v.path, &name) else {
            continue;
        };
        for (field, [registered, actual]) in mismatches(&registered, &actual) {
            found.push(RecordMismatch {
                object: v.path.clone(),
                field,
                registered,
                actual,
            });
        }
    }
    Ok(found)
}

/// `store verify --repair`'s first step: rewrites, in one transaction,
/// the records of the objects of `found` ([`check_records`]) still
/// registered (and readable) from the objects, which their names vouch
/// for; returns the mismatches the registry no longer has once rewritten
/// (a registry that does not keep the write is not claimed repaired). Runs
/// while no other process uses the store, as [`super::repair`] does (the
/// caller must not hold the collector's lock).
pub fn rewrite_records(store: &Store, found: &[RecordMismatch]) -> Result<Vec<RecordMismatch>> {
    if found.is_empty() {
        return Ok(Vec::new());
    }
    store
        .exclusively(true, || rewrite_alone(store, &mut store.db(), found))?
        .expect("waited for the store")
}

/// [`rewrite_records`], while the store is held exclusively.
fn rewrite_alone(
    store: &Store,
    db: &mut Database,
    found: &[RecordMismatch],
) -> Result<Vec<RecordMismatch>> {
    let mut objects: Vec<&PathBuf> = found.iter().map(|m| &m.object).collect();
    objects.dedup();
    let mut records = Vec::new();
    for object in objects {
        let Some(name) = name_of(object) else {
            continue;
        };
        if let (Some(_), Some(actual)) = (db.get(&name)?, record_of(store, object, &name)) {
            records.push(actual);
        }
    }
    if records.is_empty() {
        return Ok(Vec::new());
    }
    db.rewrite(&records)?;
    let mut fixed = Vec::new();
    for actual in &records {
        let Some(now) = db.get(&actual.name)? else {
            continue;
        };
        let left = mismatches(&now, actual);
        fixed.extend(
            found
                .iter()
                .filter(|m| name_of(&m.object).as_deref() == Some(&actual.name))
                .filter(|m| left.iter().all(|(f, _)| *f != m.field))
                .cloned(),
        );
    }
    Ok(fixed)
}
