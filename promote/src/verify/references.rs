//! Checking an object's `.references` against the references the registry
//! records for it, and recording those it lacks between valid objects.
//!
//! The registry only ever records a reference between two registered
//! objects. A reference it lacks is no corruption of the object: a registry
//! rebuilt from the objects (a store from before the registry, or its
//! `.fruix` moved away) leaves out an object it cannot read and the
//! references to it, and promotions before they refused a source object the
//! registry lacked registered artifacts without the reference to it. But
//! garbage collection follows the registry's references: a referenced
//! object it does not see referenced may go while its referrer stays.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::check::read_object_file;
use crate::db::{Database, Registration};
use crate::error::Result;
use crate::register::names_in_store;
use crate::store::{Store, REFERENCES_FILE};

use super::{name_of, ObjectVerification};

/// What the registry lacks of a reference an object's `.references` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceFault {
    /// The object referenced (a dangling reference): it is not valid, and
    /// its directory may be gone. [`super::repair`] removes nothing for it:
    /// the object referenced must be made valid again (its result root
    /// promoted again, its source tree added again, or the object imported
    /// or copied), or the referrer deleted (`store delete`) if it is not
    /// needed.
    NotRegistered,
    /// The reference itself, between two registered objects: a collection
    /// would not keep the object referenced for its referrer.
    /// [`super::repair`] records it.
    NotRecorded,
}

/// A reference of a registered object that the registry does not hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReferenceProblem {
    /// The referring object, registered and intact.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub object: PathBuf,
    /// The object its `.references` names.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub reference: PathBuf,
    /// What the registry lacks.
    pub problem: ReferenceFault,
}

/// The references into the store that the `.references` of each intact,
/// registered object of `verified` names and the registry does not record
/// for it. The caller holds the collector's lock, as for verifying.
pub fn check_references(
    store: &Store,
    verified: &[ObjectVerification],
) -> Result<Vec<ReferenceProblem>> {
    let db = store.db();
    let mut problems = Vec::new();
    for v in verified.iter().filter(|v| v.ok) {
        let Some(name) = name_of(&v.path) else {
            continue;
        };
        if db.get(&name)?.is_none() {
            continue;
        }
        let text = read_object_file(&v.path, REFERENCES_FILE)?;
        let recorded: HashSet<String> = db.neighbours(&name, false)?.into_iter().collect();
        for reference in names_in_store(store.path(), text.lines()) {
            if recorded.contains(&reference) {
                continue;
            }
            let problem = match db.get(&reference)? {
                Some(_) => ReferenceFault::NotRecorded,
                None => ReferenceFault::NotRegistered,
            };
            problems.push(ReferenceProblem {
                object: v.path.clone(),
                reference: store.path().join(reference),
                problem,
            });
        }
    }
    Ok(problems)
}

/// Records, in one transaction, the references of `problems` that are
/// [`ReferenceFault::NotRecorded`] and still between two registered objects
/// (each referrer is registered again with them; its record stays as it
/// was). Returns those recorded.
pub(super) fn record_references(
    db: &mut Database,
    problems: &[ReferenceProblem],
) -> Result<Vec<ReferenceProblem>> {
    let mut recorded = Vec::new();
    let mut registrations = Vec::new();
    for p in problems
        .iter()
        .filter(|p| p.problem == ReferenceFault::NotRecorded)
    {
        let (Some(object), Some(reference)) = (name_of(&p.object), name_of(&p.reference)) else {
            continue;
        };
        let (Some(record), true) = (db.get(&object)?, db.get(&reference)?.is_some()) else {
            continue;
        };
        registrations.push(Registration {
            record,
            references: vec![reference],
        });
        recorded.push(p.clone());
    }
    if !registrations.is_empty() {
        db.register(&registrations)?;
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Kind, ObjectRecord, DB_FILE, META_DIR};

    const BUNDLE: &str = "1111111111111111111111111111111111111111-fruix-bundle";
    const WORLD: &str = "3333333333333333333333333333333333333333-fruix-world";

    fn registration(name: &str, kind: Kind) -> Registration {
        Registration {
            record: ObjectRecord {
                name: name.into(),
                kind,
                artifact: None,
                tree_signature: None,
                size: 1,
                invalid_size: None,
                registered_at: 1,
                executor: None,
                run_id: None,
                freebsd_version: None,
                kernconf: None,
            },
            references: Vec::new(),
        }
    }

    /// Regression: with a trigger that deletes every reference inserted
    /// (added to the registry by another process once this one had it
    /// open), `store verify --repair` listed the references it recorded,
    /// though none was: the next verify found them missing again, and a
    /// collection would remove what they keep.
    #[test]
    fn references_the_registry_does_not_keep_are_not_claimed_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut db, _) = Database::open(dir.path(), || Ok(Vec::new())).unwrap();
        db.register(&[
            registration(WORLD, Kind::Artifact),
            registration(BUNDLE, Kind::Bundle),
        ])
        .unwrap();
        rusqlite::Connection::open(dir.path().join(META_DIR).join(DB_FILE))
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER evil AFTER INSERT ON refs BEGIN
                 DELETE FROM refs WHERE referrer = NEW.referrer AND reference = NEW.reference;
                 END;",
            )
            .unwrap();
        let problem = ReferenceProblem {
            object: dir.path().join(BUNDLE),
            reference: dir.path().join(WORLD),
            problem: ReferenceFault::NotRecorded,
        };
        let err = record_references(&mut db, &[problem]).unwrap_err();
        assert!(
            matches!(err, crate::error::Error::DatabaseUnreadable { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("did not keep the reference"),
            "{err}"
        );
        assert!(db.neighbours(BUNDLE, false).unwrap().is_empty());
    }
}
