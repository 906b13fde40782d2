//! What a registry holds, checked against the schema this fruix makes at
//! its version before it is used or migrated: the tables and indexes of
//! [`MIGRATIONS`] up to that version, as fruix creates them, and nothing
//! else (no trigger, view or table of another program's).
//! A database another program wrote, or a registry altered (a trigger that
//! deletes every reference recorded), is refused and left as it is.

use std::path::Path;

use fruix_core::escape;
use rusqlite::Connection;

use super::{altered, db_error, MIGRATIONS};
use crate::error::Result;

/// One entry of `sqlite_master`: its type, name, table and SQL (none for
/// the indexes SQLite makes for a table's constraints).
type Entry = (String, String, String, Option<String>);

/// The entries of `sqlite_master` of `conn`, by type and name (indexes
/// last: a table's own go with it), but for the statistics `ANALYZE` keeps
/// (`sqlite_stat1`...), which change nothing fruix reads.
fn entries(conn: &Connection) -> rusqlite::Result<Vec<Entry>> {
    let mut stmt = conn.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_master
         WHERE NOT (type = 'table' AND name GLOB 'sqlite_stat[1-4]')
         ORDER BY type = 'index', type, name",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    rows.collect()
}

/// The entries of a registry that this fruix made at schema `version`
/// (1 to [`SCHEMA_VERSION`](super::SCHEMA_VERSION)): those of a database in
/// memory given the first `version` migrations.
fn expected(version: usize) -> rusqlite::Result<Vec<Entry>> {
    let conn = Connection::open_in_memory()?;
    for migration in &MIGRATIONS[..version] {
        conn.execute_batch(migration)?;
    }
    entries(&conn)
}

/// Refuses the registry at `path`, open on `conn`, whose schema version is
/// `version` (1 to [`SCHEMA_VERSION`](super::SCHEMA_VERSION)), unless its
/// schema is exactly the one this fruix makes at that version.
pub(super) fn check(conn: &Connection, path: &Path, version: usize) -> Result<()> {
    let found = entries(conn).map_err(|e| db_error(path, e))?;
    let expected = expected(version).map_err(|e| db_error(path, e))?;
    match difference(&found, &expected) {
        None => Ok(()),
        Some(difference) => Err(altered(
            path,
            &format!(
                "its schema is not the one fruix makes at its schema version {version}: {difference}"
            ),
        )),
    }
}

/// What first differs between the entries `found` and those `expected`,
/// for the message: one fruix never makes, one missing, or one made
/// otherwise.
fn difference(found: &[Entry], expected: &[Entry]) -> Option<String> {
    let named = |(kind, name, ..): &Entry| format!("{kind} {}", escape::quoted(name));
    let by_name = |entries: &[Entry], of: &Entry| {
        entries
            .iter()
            .find(|e| (&e.0, &e.1) == (&of.0, &of.1))
            .cloned()
    };
    if let Some(extra) = found.iter().find(|f| by_name(expected, f).is_none()) {
        return Some(format!("it has a {} that fruix never makes", named(extra)));
    }
    if let Some(missing) = expected.iter().find(|e| by_name(found, e).is_none()) {
        return Some(format!("its {} is missing", named(missing)));
    }
    found
        .iter()
        .find(|f| by_name(expected, f).as_ref() != Some(*f))
        .map(|changed| format!("its {} is not as fruix makes it", named(changed)))
}

#[cfg(test)]
mod tests {
    use super::super::SCHEMA_VERSION;
    use super::*;
    use crate::error::Error;

    /// A database of `dir` at schema `version`, as fruix makes it, with
    /// `sql` run on it; checked.
    fn checked(version: usize, sql: &str) -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let conn = Connection::open(&path).unwrap();
        for migration in &MIGRATIONS[..version] {
            conn.execute_batch(migration).unwrap();
        }
        conn.execute_batch(sql).unwrap();
        check(&conn, &path, version)
    }

    #[test]
    fn a_schema_as_fruix_makes_it_passes_at_every_version() {
        for version in 1..=SCHEMA_VERSION as usize {
            checked(version, "").unwrap();
        }
        // `ANALYZE` keeps statistics in tables of SQLite's own.
        checked(SCHEMA_VERSION as usize, "ANALYZE").unwrap();
    }

    #[test]
    fn a_schema_fruix_does_not_make_is_refused_saying_what_differs() {
        let version = SCHEMA_VERSION as usize;
        for (sql, says) in [
            (
                "CREATE TRIGGER evil AFTER INSERT ON refs BEGIN DELETE FROM refs; END",
                "it has a trigger \"evil\" that fruix never makes",
            ),
            (
                "CREATE VIEW v AS SELECT 1",
                "it has a view \"v\" that fruix never makes",
            ),
            (
                "CREATE TABLE settings (k, v)",
                "it has a table \"settings\"",
            ),
            (
                "DROP INDEX refs_reference",
                "its index \"refs_reference\" is missing",
            ),
            (
                "DROP TABLE signatures",
                "its table \"signatures\" is missing",
            ),
            (
                "ALTER TABLE objects ADD COLUMN note",
                "its table \"objects\" is not as fruix makes it",
            ),
        ] {
            let err = checked(version, sql).unwrap_err();
            assert!(matches!(err, Error::DatabaseUnreadable { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(says), "{sql}: {text}");
            assert!(text.contains("not a fruix registry"), "{text}");
        }
        // A registry at version 2 that says it is at version 1 has a table
        // too many.
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS {
            conn.execute_batch(migration).unwrap();
        }
        let err = check(&conn, dir.path(), 1).unwrap_err().to_string();
        assert!(
            err.contains("table \"signatures\" that fruix never makes"),
            "{err}"
        );
    }
}
