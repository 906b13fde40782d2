//! A registry record as the database holds it, and as [`Database`] reads
//! and rewrites it: a size that is none (a hand edit) is kept as text, never
//! wrapped.

use rusqlite::params;

use fruix_core::escape;

use super::{busy, db_error, Database, Kind, ObjectRecord};
use crate::error::Result;

impl Database {
    /// Rewrites the records of registered objects with `records` (by
    /// name), in one transaction: all but when they were registered, and
    /// the run that first registered an artifact (which its object does
    /// not say: kept when `run_id` is `None`).
    pub fn rewrite(&mut self, records: &[ObjectRecord]) -> Result<()> {
        self.write(busy::Interrupt::EndsWait, |tx, path| {
            let mut update = tx
                .prepare_cached(
                    "UPDATE objects SET kind = ?2, artifact = ?3, tree_signature = ?4, size = ?5,
                     executor = ?6, run_id = COALESCE(?7, run_id), freebsd_version = ?8,
                     kernconf = ?9 WHERE name = ?1",
                )
                .map_err(|e| db_error(path, e))?;
            for r in records {
                let size = i64::try_from(r.size).ok();
                update
                    .execute(params![
                        r.name,
                        r.kind.as_str(),
                        r.artifact,
                        r.tree_signature,
                        size,
                        r.executor,
                        r.run_id,
                        r.freebsd_version,
                        r.kernconf
                    ])
                    .map_err(|e| db_error(path, e))?;
            }
            Ok(())
        })
    }
}

/// The columns [`record`] reads, in order.
pub(super) const COLUMNS: &str = "name, kind, artifact, tree_signature, size, registered_at, executor, run_id, freebsd_version, kernconf";

/// The record in row `r`, of the columns [`COLUMNS`].
pub(super) fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectRecord> {
    use rusqlite::types::ValueRef;
    let (size, invalid_size) = match r.get_ref(4)? {
        ValueRef::Integer(n) if n >= 0 => (n as u64, None),
        ValueRef::Integer(n) => (0, Some(n.to_string())),
        ValueRef::Real(x) => (0, Some(x.to_string())),
        ValueRef::Text(t) => (0, Some(escape::bytes(t).to_string())),
        ValueRef::Blob(_) => (0, Some("a blob".to_string())),
        ValueRef::Null => (0, Some("NULL".to_string())),
    };
    Ok(ObjectRecord {
        name: r.get(0)?,
        kind: Kind::parse(&r.get::<_, String>(1)?),
        artifact: r.get(2)?,
        tree_signature: r.get(3)?,
        size,
        invalid_size,
        registered_at: r.get(5)?,
        executor: r.get(6)?,
        run_id: r.get(7)?,
        freebsd_version: r.get(8)?,
        kernconf: r.get(9)?,
    })
}
