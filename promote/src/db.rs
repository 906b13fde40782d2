//! The store's registry: a SQLite database (`STORE/.fruix/db.sqlite`, WAL
//! mode) of the valid objects and the references between them, in the
//! spirit of Nix's `ValidPaths` and `Refs` tables.
//!
//! An object is valid when it is registered: a directory in the store that
//! the database does not name (a promotion killed between publishing and
//! registering) is invisible to queries and removed by the garbage
//! collector. Registration happens right after an object is renamed into
//! place, under the same locks, in one transaction per promotion.
//!
//! The schema is versioned (`PRAGMA user_version`) and migrates forward; a
//! store written before the database existed is registered on first use by
//! reading every object's metadata and `.references`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{Error, Result};
use crate::sign::MAX_SIGNATURES;
use crate::verify::is_object_name;

mod busy;
mod open;
use open::db_error;
mod row;
mod schema;
use fruix_core::escape;
use row::{record, COLUMNS};

/// The store's metadata directory, which holds the database and the GC
/// lock.
pub const META_DIR: &str = ".fruix";
/// The database file in [`META_DIR`].
pub const DB_FILE: &str = "db.sqlite";
/// The schema this fruix writes.
pub const SCHEMA_VERSION: i64 = 2;
/// How long a writer waits for another process's transaction, saying so
/// (`busy`); the process's interrupt ends the wait before.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// The schema, version by version: entry `i` migrates from `i` to `i + 1`.
const MIGRATIONS: [&str; 2] = [
    include_str!("db/schema-1.sql"),
    include_str!("db/schema-2.sql"),
];

/// What kind of object a store path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// One artifact tree (world, kernel, headers, bootloader...).
    Artifact,
    /// A run's result bundle, naming its artifacts.
    Bundle,
    /// A FreeBSD source tree.
    Source,
}

impl Kind {
    /// The kind's name as the registry stores it and JSON shows it:
    /// `artifact`, `bundle` or `source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Artifact => "artifact",
            Kind::Bundle => "bundle",
            Kind::Source => "source",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "bundle" => Kind::Bundle,
            "source" => Kind::Source,
            _ => Kind::Artifact,
        }
    }
}

/// One registered object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectRecord {
    /// The object's name in the store (`<hash>-fruix-...`).
    pub name: String,
    /// Whether it is an artifact, a result bundle or a source.
    pub kind: Kind,
    /// The artifact's name (`world`...), for artifacts.
    pub artifact: Option<String>,
    /// The tree signature (`sha256:` and 64 hex digits) of an artifact or
    /// source; `None` for bundles.
    pub tree_signature: Option<String>,
    /// Bytes of content (the sum of its files' sizes); 0 when the
    /// registry holds no size ([`ObjectRecord::invalid_size`]).
    pub size: u64,
    /// What the registry holds in place of a size that no size can be (a
    /// negative number, or no integer: a hand edit), as text; `None` for a
    /// size. `store verify` reports it, and `--repair` rewrites it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_size: Option<String>,
    /// When it was registered (Unix seconds).
    pub registered_at: i64,
    /// The executor that built it, for artifacts and bundles.
    pub executor: Option<String>,
    /// The run that first registered it.
    pub run_id: Option<String>,
    /// The FreeBSD version (`15.0-STABLE`): the base built, or for a
    /// source the version its `newvers.sh` declares.
    pub freebsd_version: Option<String>,
    /// The kernel configuration of the build policy (`GENERIC`), for
    /// artifacts and bundles.
    pub kernconf: Option<String>,
}

impl ObjectRecord {
    /// The object's size, unless the registry's is invalid.
    pub fn valid_size(&self) -> Option<u64> {
        self.invalid_size.is_none().then_some(self.size)
    }
}

/// An object to register, with the names of the objects it references.
#[derive(Debug, Clone)]
pub struct Registration {
    /// What to record; an object already registered keeps its first record.
    pub record: ObjectRecord,
    /// The names (not paths) of the objects it references: each registered
    /// already or registered in the same call.
    pub references: Vec<String>,
}

/// Which objects [`Database::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only objects of this kind.
    pub kind: Option<Kind>,
    /// Only artifact objects of this artifact name (`world`...).
    pub artifact: Option<String>,
    /// Only objects whose record names this executor (artifacts, bundles).
    pub executor: Option<String>,
    /// Only objects whose record names this run: its bundle, and the
    /// artifacts that run first registered.
    pub run_id: Option<String>,
}

/// An open store database.
#[derive(Debug)]
pub struct Database {
    conn: Connection,
    path: PathBuf,
}

/// What to do about a registry fruix refuses as it is.
const RESTORE: &str = "restore it from a backup, or move the store's `.fruix` directory away (the next command registers the store's objects anew from their metadata) and run `fruix store verify`";

/// The refusal of the registry `path`, left as it is, for `why`: another
/// program's database, or fruix's altered (a trigger added, a negative
/// schema version).
fn altered(path: &Path, why: &str) -> Error {
    Error::DatabaseUnreadable {
        path: path.to_path_buf(),
        message: format!(
            "{why}: it is not a fruix registry, or it was altered, and fruix left it as it is; {RESTORE}"
        ),
    }
}

impl Database {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers `objects` in one transaction; an object already registered
    /// keeps its record. A reference to an object that is neither
    /// registered nor among `objects` is an error (nothing is registered).
    pub fn register(&mut self, objects: &[Registration]) -> Result<()> {
        self.register_signed(objects, &[])
    }

    /// [`Database::register`], with `signatures` (object name, `name:BASE64`)
    /// of registered objects in the same transaction: an import that fails
    /// registers neither, never objects without their signatures. An object
    /// keeps the signatures it has and gains these in order while it carries
    /// fewer than [`MAX_SIGNATURES`]; the others are not recorded.
    pub fn register_signed(
        &mut self,
        objects: &[Registration],
        signatures: &[(String, String)],
    ) -> Result<()> {
        // Past the point of no return: the objects are in place.
        self.write(busy::Interrupt::Ignored, |tx, path| {
            insert(tx, path, objects)?;
            for (name, signature) in signatures {
                insert_signature(tx, path, name, signature)?;
            }
            Ok(())
        })
    }

    /// Runs `f` in one write transaction, committed when `f` succeeds; a
    /// wait for other writers ends at the process's interrupt as
    /// `interrupt` says.
    fn write(
        &mut self,
        interrupt: busy::Interrupt,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &Path) -> Result<()>,
    ) -> Result<()> {
        let path = self.path.clone();
        let e = |e| db_error(&path, e);
        let ignored = interrupt == busy::Interrupt::Ignored;
        // Installed on this thread, which may not be the one that opened
        // the registry: the handler names the registry it waits for from
        // a thread-local.
        busy::install(&self.conn, interrupt).map_err(e)?;
        let written = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)
            .and_then(|tx| {
                f(&tx, &path)?;
                tx.commit().map_err(e)
            });
        let written = written.map_err(|e| self.system_error(e));
        if ignored {
            busy::install(&self.conn, busy::Interrupt::EndsWait).map_err(e)?;
        }
        written
    }

    /// The first column of every row `sql` selects, as strings.
    fn strings<T: FromIterator<String>>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<T> {
        let e = |e| db_error(&self.path, e);
        let mut stmt = self.conn.prepare_cached(sql).map_err(e)?;
        let rows = stmt.query_map(params, |r| r.get(0)).map_err(e)?;
        rows.collect::<rusqlite::Result<_>>().map_err(e)
    }

    /// The record of `name`, if it is registered.
    pub fn get(&self, name: &str) -> Result<Option<ObjectRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM objects WHERE name = ?1"),
                [name],
                record,
            )
            .optional()
            .map_err(|e| db_error(&self.path, e))
    }

    /// Registered objects matching `filter`, by name.
    pub fn list(&self, filter: &Filter) -> Result<Vec<ObjectRecord>> {
        let e = |e| db_error(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM objects
                 WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR artifact = ?2)
                   AND (?3 IS NULL OR executor = ?3) AND (?4 IS NULL OR run_id = ?4)
                 ORDER BY name"
            ))
            .map_err(e)?;
        let rows = stmt
            .query_map(
                params![
                    filter.kind.map(Kind::as_str),
                    filter.artifact,
                    filter.executor,
                    filter.run_id
                ],
                record,
            )
            .map_err(e)?;
        let records: Vec<ObjectRecord> = rows.collect::<rusqlite::Result<_>>().map_err(e)?;
        let names = records.iter().map(|r| r.name.clone()).collect();
        self.object_names(names)?;
        Ok(records)
    }

    /// `names`, read from the registry, if each is a store object name
    /// ([`is_object_name`]); else the registry is not fruix's writing: a
    /// name such as `../x` or `/x` would lead whatever joins it to the
    /// store's path (a collection removing it) out of the store.
    fn object_names(&self, names: Vec<String>) -> Result<Vec<String>> {
        match names.iter().find(|n| !is_object_name(n.as_bytes())) {
            None => Ok(names),
            Some(bad) => Err(Error::Inconsistent {
                object: self.path.clone(),
                message: format!(
                    "it registers {}, which is not a store object name; it was not written by fruix: move the store's .fruix directory away, and the next store command registers the store's objects anew",
                    escape::quoted(bad)
                ),
            }),
        }
    }

    /// The names of the objects `name` references (`referrers`: that
    /// reference it), sorted.
    pub fn neighbours(&self, name: &str, referrers: bool) -> Result<Vec<String>> {
        let sql = if referrers {
            "SELECT a.name FROM refs JOIN objects a ON a.id = refs.referrer
             JOIN objects b ON b.id = refs.reference WHERE b.name = ?1 ORDER BY a.name"
        } else {
            "SELECT b.name FROM refs JOIN objects a ON a.id = refs.referrer
             JOIN objects b ON b.id = refs.reference WHERE a.name = ?1 ORDER BY b.name"
        };
        self.object_names(self.strings(sql, [name])?)
    }

    /// The closure of `names`: them and everything they reference,
    /// transitively, sorted.
    pub fn closure(&self, names: &[String]) -> Result<Vec<String>> {
        let mut seen: std::collections::BTreeSet<String> = names.iter().cloned().collect();
        let mut todo: Vec<String> = names.to_vec();
        while let Some(name) = todo.pop() {
            for reference in self.neighbours(&name, false)? {
                if seen.insert(reference.clone()) {
                    todo.push(reference);
                }
            }
        }
        Ok(seen.into_iter().collect())
    }

    /// Records `signature` (`name:BASE64`) of the registered object `name`;
    /// returns whether the object carries it now: not when it carries
    /// [`MAX_SIGNATURES`] others (nothing is recorded).
    pub fn add_signature(&mut self, name: &str, signature: &str) -> Result<bool> {
        let signatures = [(name.to_string(), signature.to_string())];
        Ok(self.add_signatures(&signatures)?.is_none())
    }

    /// Records `signatures` (object name, `name:BASE64`) of registered
    /// objects in one transaction, all or none: when they would put an
    /// object over [`MAX_SIGNATURES`], none is recorded and that object's
    /// name is returned.
    pub fn add_signatures(&mut self, signatures: &[(String, String)]) -> Result<Option<String>> {
        let mut full = None;
        self.write(busy::Interrupt::EndsWait, |tx, path| {
            // Per object: the signatures it carries, and how many of
            // `signatures` are new to it.
            let mut added: HashMap<&str, (usize, HashSet<&str>)> = HashMap::new();
            for (name, signature) in signatures {
                let (count, has) = carried(tx, path, name, signature)?;
                let (carries, new) = added
                    .entry(name.as_str())
                    .or_insert((count, HashSet::new()));
                if !has && new.insert(signature.as_str()) && *carries + new.len() > MAX_SIGNATURES {
                    full = Some(name.clone());
                    return Ok(());
                }
            }
            for (name, signature) in signatures {
                insert_signature(tx, path, name, signature)?;
            }
            Ok(())
        })?;
        Ok(full)
    }

    /// The signatures of object `name`, sorted.
    pub fn signatures(&self, name: &str) -> Result<Vec<String>> {
        self.strings(
            "SELECT s.signature FROM signatures s JOIN objects o ON o.id = s.object
             WHERE o.name = ?1 ORDER BY s.signature",
            [name],
        )
    }

    /// The runs whose result bundle was ever registered.
    pub fn promoted_runs(&self) -> Result<std::collections::HashSet<String>> {
        self.strings("SELECT run_id FROM promoted_runs", [])
    }

    /// Every registered name.
    pub fn names(&self) -> Result<Vec<String>> {
        self.object_names(self.strings("SELECT name FROM objects ORDER BY name", [])?)
    }

    /// Unregisters `names` in one transaction. Referrers go with what they
    /// reference only when they are among `names` too: removing a still
    /// referenced object is an error, and nothing is unregistered.
    pub fn unregister(&mut self, names: &[String]) -> Result<()> {
        self.write(busy::Interrupt::EndsWait, |tx, path| {
            let e = |e| db_error(path, e);
            // Referrers first, so that no reference is left dangling.
            let mut unlink = tx
                .prepare_cached(
                    "DELETE FROM refs WHERE referrer = (SELECT id FROM objects WHERE name = ?1)",
                )
                .map_err(e)?;
            for name in names {
                unlink.execute([name]).map_err(e)?;
            }
            let mut delete = tx
                .prepare_cached("DELETE FROM objects WHERE name = ?1")
                .map_err(e)?;
            for name in names {
                delete.execute([name]).map_err(e)?;
            }
            Ok(())
        })
    }

    /// Copies the registry's write-ahead log into the database and
    /// truncates it (`PRAGMA wal_checkpoint(TRUNCATE)`), giving back the
    /// room it grew to: before the collector's reserve is made again, on a
    /// nearly full disk. A reader in the way leaves the log as it is.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| db_error(&self.path, e))
    }
}

/// How many signatures object `name` carries in `tx`, and whether
/// `signature` is one of them.
fn carried(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    name: &str,
    signature: &str,
) -> Result<(usize, bool)> {
    tx.prepare_cached(
        "SELECT COUNT(*), COALESCE(MAX(s.signature = ?2), 0)
         FROM signatures s JOIN objects o ON o.id = s.object WHERE o.name = ?1",
    )
    .and_then(|mut count| {
        count.query_row(params![name, signature], |row| {
            Ok((row.get::<_, i64>(0)? as usize, row.get::<_, bool>(1)?))
        })
    })
    .map_err(|e| db_error(path, e))
}

/// Records `signature` of the registered object `name` in `tx`, unless the
/// object carries [`MAX_SIGNATURES`] others.
fn insert_signature(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    name: &str,
    signature: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO signatures (object, signature)
         SELECT o.id, ?2 FROM objects o WHERE o.name = ?1
         AND (SELECT COUNT(*) FROM signatures s WHERE s.object = o.id) < ?3",
    )
    .and_then(|mut insert| insert.execute(params![name, signature, MAX_SIGNATURES as i64]))
    .map_err(|e| db_error(path, e))?;
    Ok(())
}

/// Registers `objects` inside `tx` (see [`Database::register`]).
fn insert(tx: &rusqlite::Transaction<'_>, path: &Path, objects: &[Registration]) -> Result<()> {
    let e = |e| db_error(path, e);
    let mut insert = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO objects (name, kind, artifact, tree_signature, size,
             registered_at, executor, run_id, freebsd_version, kernconf)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(e)?;
    for o in objects {
        let r = &o.record;
        insert
            .execute(params![
                r.name,
                r.kind.as_str(),
                r.artifact,
                r.tree_signature,
                i64::try_from(r.size).ok(),
                r.registered_at,
                r.executor,
                r.run_id,
                r.freebsd_version,
                r.kernconf
            ])
            .map_err(e)?;
    }
    // Runs whose bundle was registered stay known as promoted after the
    // bundle is collected: their result roots may go.
    let mut run = tx
        .prepare_cached("INSERT OR IGNORE INTO promoted_runs (run_id, promoted_at) VALUES (?1, ?2)")
        .map_err(e)?;
    for r in objects.iter().map(|o| &o.record) {
        if let (Kind::Bundle, Some(run_id)) = (r.kind, &r.run_id) {
            run.execute(params![run_id, r.registered_at]).map_err(e)?;
        }
    }
    let mut link = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO refs (referrer, reference)
             SELECT a.id, b.id FROM objects a, objects b WHERE a.name = ?1 AND b.name = ?2",
        )
        .map_err(e)?;
    for o in objects {
        for reference in &o.references {
            if link.execute(params![o.record.name, reference]).map_err(e)? == 0
                && !registered(tx, reference).map_err(e)?
            {
                return Err(Error::Inconsistent {
                    object: PathBuf::from(&o.record.name),
                    message: format!("references {reference}, which is not registered"),
                });
            }
        }
    }
    kept(tx, path, objects)
}

/// Checks, in `tx`, that the registry kept what [`insert`] wrote of
/// `objects`: each object, and each of its references. SQLite reports a
/// row inserted even when a trigger deleted it at once, and a registration
/// that claims what is not recorded would let a collection remove what an
/// object references.
fn kept(tx: &rusqlite::Transaction<'_>, path: &Path, objects: &[Registration]) -> Result<()> {
    let e = |e| db_error(path, e);
    let lost = |what: String| {
        altered(
            path,
            &format!("it did not keep {what}, just recorded (nothing was recorded)"),
        )
    };
    let mut recorded = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM refs JOIN objects a ON a.id = refs.referrer
             JOIN objects b ON b.id = refs.reference WHERE a.name = ?1 AND b.name = ?2)",
        )
        .map_err(e)?;
    for o in objects {
        let name = &o.record.name;
        if !registered(tx, name).map_err(e)? {
            return Err(lost(format!("the object {}", escape::quoted(name))));
        }
        for reference in &o.references {
            if !recorded
                .query_row(params![name, reference], |r| r.get::<_, bool>(0))
                .map_err(e)?
            {
                return Err(lost(format!(
                    "the reference of {} to {}",
                    escape::quoted(name),
                    escape::quoted(reference)
                )));
            }
        }
    }
    Ok(())
}

/// Whether `name` is registered (inside `tx`).
fn registered(tx: &rusqlite::Transaction<'_>, name: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM objects WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Object names, sorted as their short names are.
    const BUNDLE: &str = "1111111111111111111111111111111111111111-fruix-bundle";
    const SRC: &str = "2222222222222222222222222222222222222222-freebsd-source-src";
    const WORLD: &str = "3333333333333333333333333333333333333333-fruix-world";
    const W: &str = "4444444444444444444444444444444444444444-fruix-w";

    fn object(name: &str, kind: Kind, references: &[&str]) -> Registration {
        Registration {
            record: ObjectRecord {
                name: name.into(),
                kind,
                artifact: (kind == Kind::Artifact).then(|| "world".into()),
                tree_signature: None,
                size: 10,
                invalid_size: None,
                registered_at: 1,
                executor: Some("local".into()),
                run_id: Some("r1".into()),
                freebsd_version: None,
                kernconf: Some("GENERIC".into()),
            },
            references: references.iter().map(|r| r.to_string()).collect(),
        }
    }

    /// The registry's path in store `dir`, its directory made, for a
    /// registry file written by hand.
    fn registry_file(dir: &Path) -> PathBuf {
        let meta = dir.join(META_DIR);
        std::fs::create_dir_all(&meta).unwrap();
        meta.join(DB_FILE)
    }

    #[test]
    fn references_are_queried_both_ways_and_closed_over() {
        let dir = tempfile::tempdir().unwrap();
        let (mut db, created) = Database::open(dir.path(), || Ok(Vec::new())).unwrap();
        assert!(created);
        db.register(&[
            object(SRC, Kind::Source, &[]),
            object(WORLD, Kind::Artifact, &[SRC]),
            object(BUNDLE, Kind::Bundle, &[WORLD]),
        ])
        .unwrap();
        assert_eq!(db.neighbours(BUNDLE, false).unwrap(), [WORLD]);
        assert_eq!(db.neighbours(WORLD, true).unwrap(), [BUNDLE]);
        assert_eq!(db.closure(&[BUNDLE.into()]).unwrap(), [BUNDLE, SRC, WORLD]);
        let bundles = db
            .list(&Filter {
                kind: Some(Kind::Bundle),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(bundles.len(), 1);
        assert_eq!(db.get(WORLD).unwrap().unwrap().kind, Kind::Artifact);
        // Reopened: not created again, the records kept.
        drop(db);
        let (db, created) = Database::open(dir.path(), || Ok(Vec::new())).unwrap();
        assert!(!created);
        assert_eq!(db.names().unwrap(), [BUNDLE, SRC, WORLD]);
    }

    #[test]
    fn the_wal_files_outlive_the_connection_from_the_first_open() {
        // Readers who may not write the store need them.
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join(META_DIR);
        let kept = || ["-wal", "-shm"].map(|s| meta.join(format!("{DB_FILE}{s}")).exists());
        drop(Database::open(dir.path(), || Ok(Vec::new())).unwrap());
        assert_eq!(kept(), [true, true]);
        drop(Database::open(dir.path(), || Ok(Vec::new())).unwrap());
        assert_eq!(kept(), [true, true]);
        let db = Database::open_read_only(dir.path()).unwrap();
        assert!(db.get("nothing").unwrap().is_none());
    }

    #[test]
    fn a_database_read_only_is_refused_when_it_would_need_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let says = |e: Error| {
            assert!(matches!(e, Error::DatabaseUnreadable { .. }), "{e}");
            e.to_string()
        };
        let none = says(Database::open_read_only(dir.path()).unwrap_err());
        assert!(none.contains("there is none yet"), "{none}");
        drop(Database::open(dir.path(), || Ok(Vec::new())).unwrap());
        let path = dir.path().join(META_DIR).join(DB_FILE);
        // (A newer version is refused as such: `a_newer_schema_is_refused`.)
        let older = SCHEMA_VERSION - 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", older)
            .unwrap();
        let text = says(Database::open_read_only(dir.path()).unwrap_err());
        let expected =
            format!("not migrate it from schema version {older} to this fruix's {SCHEMA_VERSION}");
        assert!(text.contains(&expected), "{text}");
    }

    #[test]
    fn a_reference_to_an_unregistered_object_registers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut db, _) = Database::open(dir.path(), || Ok(Vec::new())).unwrap();
        let err = db
            .register(&[object(BUNDLE, Kind::Bundle, &["missing"])])
            .unwrap_err();
        assert!(matches!(err, Error::Inconsistent { .. }), "{err}");
        assert!(db.names().unwrap().is_empty());
        // Nor their signatures, recorded in the same transaction (an
        // import recorded them one by one after it, and could fail
        // between).
        db.register_signed(&[object(WORLD, Kind::Artifact, &[])], &[])
            .unwrap();
        let signatures = [(WORLD.to_string(), "k:sig".to_string())];
        db.register_signed(&[object(BUNDLE, Kind::Bundle, &["missing"])], &signatures)
            .unwrap_err();
        assert!(db.signatures(WORLD).unwrap().is_empty());
        db.register_signed(&[object(BUNDLE, Kind::Bundle, &[WORLD])], &signatures)
            .unwrap();
        assert_eq!(db.signatures(WORLD).unwrap(), ["k:sig"]);
    }

    /// Regression: nothing capped an object's signatures, and an export of
    /// one signed by 65 keys was refused by every import.
    #[test]
    fn an_object_carries_at_most_the_signatures_an_import_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut db, _) = Database::open(dir.path(), || Ok(Vec::new())).unwrap();
        let signature = |i: usize| format!("k{i}:sig");
        db.register_signed(
            &[
                object(WORLD, Kind::Artifact, &[]),
                object(W, Kind::Artifact, &[]),
            ],
            &(0..MAX_SIGNATURES - 1)
                .map(|i| (WORLD.to_string(), signature(i)))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        // Two new ones for an object with room for one: neither, nor the
        // other object's, in the same call.
        let batch = [
            (W.to_string(), signature(0)),
            (WORLD.to_string(), signature(100)),
            (WORLD.to_string(), signature(101)),
        ];
        assert_eq!(db.add_signatures(&batch).unwrap().as_deref(), Some(WORLD));
        assert!(db.signatures(W).unwrap().is_empty());
        assert_eq!(db.signatures(WORLD).unwrap().len(), MAX_SIGNATURES - 1);
        // One it carries already, named twice, and a new one: room enough.
        let batch = [
            (WORLD.to_string(), signature(0)),
            (WORLD.to_string(), signature(100)),
            (WORLD.to_string(), signature(100)),
        ];
        assert_eq!(db.add_signatures(&batch).unwrap(), None);
        assert_eq!(db.signatures(WORLD).unwrap().len(), MAX_SIGNATURES);
        // Full: one it carries is still no error, a new one is refused.
        assert!(db.add_signature(WORLD, &signature(0)).unwrap());
        assert!(!db.add_signature(WORLD, &signature(101)).unwrap());
        // An import's are recorded while there is room, the rest dropped.
        let imported: Vec<_> = (200..210).map(|i| (W.to_string(), signature(i))).collect();
        let more: Vec<_> = (300..310)
            .map(|i| (WORLD.to_string(), signature(i)))
            .collect();
        db.register_signed(&[], &[imported, more].concat()).unwrap();
        assert_eq!(db.signatures(W).unwrap().len(), 10);
        assert_eq!(db.signatures(WORLD).unwrap().len(), MAX_SIGNATURES);
        assert!(!db.signatures(WORLD).unwrap().contains(&signature(300)));
    }

    #[test]
    fn a_referenced_object_is_not_unregistered_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (mut db, _) = Database::open(dir.path(), || Ok(Vec::new())).unwrap();
        db.register(&[
            object(WORLD, Kind::Artifact, &[]),
            object(BUNDLE, Kind::Bundle, &[WORLD]),
        ])
        .unwrap();
        assert!(matches!(
            db.unregister(&[WORLD.into()]).unwrap_err(),
            Error::Database { .. }
        ));
        assert_eq!(db.names().unwrap(), [BUNDLE, WORLD]);
        db.unregister(&[WORLD.into(), BUNDLE.into()]).unwrap();
        assert!(db.names().unwrap().is_empty());
    }

    #[test]
    fn processes_opening_a_new_store_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || Database::open(&path, || Ok(Vec::new())).map(|(_, c)| c))
            })
            .collect();
        let created: Vec<bool> = threads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
        let (db, _) = Database::open(&path, || Ok(Vec::new())).unwrap();
        let mode: String = db
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_version_1_database_migrates_forward_keeping_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(registry_file(dir.path())).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute(
            "INSERT INTO objects (name, kind, size, registered_at) VALUES (?1, 'artifact', 1, 1)",
            [W],
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        let (mut db, created) = Database::open(dir.path(), || Ok(Vec::new())).unwrap();
        assert!(!created);
        assert_eq!(db.names().unwrap(), [W]);
        db.add_signature(W, "k:sig").unwrap();
        assert_eq!(db.signatures(W).unwrap(), ["k:sig"]);
        let version: i64 = db
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    /// Regression: SQLite's own words (`file is not a database`, `database
    /// or disk is full`) were all a damaged registry or a full disk said.
    /// What to do follows them, chosen by SQLite's error code.
    #[test]
    fn database_errors_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(registry_file(dir.path()), vec![b'x'; 8192]).unwrap();
        let err = Database::open(dir.path(), || Ok(Vec::new())).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("file is not a database")
                && text.contains("move the store's .fruix directory away"),
            "{text}"
        );
        let full = db_error(
            dir.path(),
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                None,
            ),
        );
        assert!(full
            .to_string()
            .ends_with("; free space on that filesystem and try again"));
        let busy = db_error(
            dir.path(),
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ),
        );
        // Regression: a registry locked too long said so with no advice.
        assert!(
            busy.to_string()
                .contains("; another process kept the registry locked"),
            "{busy}"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Database::open(dir.path(), || Ok(Vec::new())).unwrap());
        let conn = Connection::open(dir.path().join(META_DIR).join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        for err in [
            Database::open(dir.path(), || Ok(Vec::new())).unwrap_err(),
            Database::open_read_only(dir.path()).unwrap_err(),
        ] {
            assert!(err.to_string().contains("or a newer one"), "{err}");
            // An older fruix, not a corrupt store (it was exit 4, an
            // inconsistent object), nor a failure a retry gets past (it
            // was exit 3): the caller's choice of fruix, exit 2.
            let found = (SCHEMA_VERSION + 1) as u64;
            assert!(
                matches!(err, Error::Version { of: crate::error::Versioned::Registry, found: f, place: Some(_) } if f == found),
                "{err:?}"
            );
            assert_eq!(err.exit_status(), fruix_core::ExitStatus::Usage);
        }
    }

    /// Regression: a negative schema version indexed the migrations, and
    /// every store command panicked.
    #[test]
    fn a_negative_schema_version_is_refused_as_no_registry() {
        let dir = tempfile::tempdir().unwrap();
        drop(Database::open(dir.path(), || Ok(Vec::new())).unwrap());
        let file = dir.path().join(META_DIR).join(DB_FILE);
        for version in [-1, i64::from(i32::MIN)] {
            Connection::open(&file)
                .unwrap()
                .pragma_update(None, "user_version", version)
                .unwrap();
            for err in [
                Database::open(dir.path(), || Ok(Vec::new())).unwrap_err(),
                Database::open_read_only(dir.path()).unwrap_err(),
            ] {
                assert!(matches!(err, Error::DatabaseUnreadable { .. }), "{err:?}");
                assert!(err.to_string().contains("not a fruix registry"), "{err}");
            }
        }
    }

    /// Regression: a database of another program at version 1 was
    /// migrated (a `signatures` table added, its version set to 2) before
    /// it failed; one of this fruix's version is refused too, and each is
    /// left byte for byte as it was.
    #[test]
    fn a_foreign_database_with_a_version_is_refused_and_left_as_it_was() {
        for version in [1, SCHEMA_VERSION] {
            let dir = tempfile::tempdir().unwrap();
            let file = registry_file(dir.path());
            Connection::open(&file)
                .unwrap()
                .execute_batch(&format!(
                    "CREATE TABLE settings (k, v); PRAGMA user_version = {version};"
                ))
                .unwrap();
            let before = std::fs::read(&file).unwrap();
            let err = Database::open(dir.path(), || Ok(Vec::new())).unwrap_err();
            assert!(matches!(err, Error::DatabaseUnreadable { .. }), "{err:?}");
            assert!(err.to_string().contains("not a fruix registry"), "{err}");
            assert!(
                std::fs::read(&file).unwrap() == before,
                "{version}: changed"
            );
        }
    }

    /// A database at version 0 with tables of its own is not a fruix
    /// registry: it was adopted (fruix's tables created beside them).
    #[test]
    fn a_foreign_database_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let file = registry_file(dir.path());
        let conn = Connection::open(&file).unwrap();
        conn.execute_batch("CREATE TABLE theirs (x)").unwrap();
        drop(conn);
        let err = Database::open(dir.path(), || Ok(Vec::new())).unwrap_err();
        assert!(matches!(err, Error::DatabaseUnreadable { .. }), "{err:?}");
        assert!(err.to_string().contains("not a fruix registry"), "{err}");
        let conn = Connection::open(&file).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(tables, ["theirs"]);
    }

    /// A registry truncated to nothing (or deleted) in a store that had
    /// one was silently created anew, its signatures and runs gone; a new
    /// store (no `gc.lock` yet) still gets one.
    #[test]
    fn an_emptied_registry_is_refused_where_the_store_had_one() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join(META_DIR);
        let (mut db, created) = Database::open(dir.path(), || Ok(Vec::new())).unwrap();
        assert!(created, "a new store gets a registry");
        db.register(&[object(W, Kind::Artifact, &[])]).unwrap();
        drop(db);
        std::fs::write(meta.join(crate::store::GC_LOCK_FILE), "").unwrap();
        for (suffix, emptied) in [("", true), ("-wal", false), ("-shm", false)] {
            let file = meta.join(format!("{DB_FILE}{suffix}"));
            if emptied {
                std::fs::write(&file, "").unwrap();
            } else {
                let _ = std::fs::remove_file(&file);
            }
        }
        let refused = || {
            let err = Database::open(dir.path(), || Ok(Vec::new())).unwrap_err();
            assert!(matches!(err, Error::DatabaseUnreadable { .. }), "{err:?}");
            assert!(err.to_string().contains("signatures"), "{err}");
        };
        refused();
        std::fs::remove_file(meta.join(DB_FILE)).unwrap();
        refused();
        // Regression: the refusal of a deleted one made an empty file.
        assert!(
            meta.join(DB_FILE).symlink_metadata().is_err(),
            "the refusal made a registry file"
        );
    }

    /// The registry and SQLite's files beside it are never opened through
    /// a symlink: SQLite would write wherever it points.
    #[test]
    fn a_symlinked_registry_file_is_refused_and_its_target_untouched() {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let dir = tempfile::tempdir().unwrap();
            let meta = dir.path().join(META_DIR);
            std::fs::create_dir_all(&meta).unwrap();
            let target = dir.path().join("elsewhere");
            std::os::unix::fs::symlink(&target, meta.join(format!("{DB_FILE}{suffix}"))).unwrap();
            let err = Database::open(dir.path(), || Ok(Vec::new())).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::StoreEntry {
                        found: "symlink",
                        ..
                    }
                ),
                "{suffix}: {err:?}"
            );
            let err = Database::open_read_only(dir.path()).unwrap_err();
            assert!(matches!(err, Error::StoreEntry { .. }), "{suffix}: {err:?}");
            assert!(!target.exists(), "{suffix}: the symlink was followed");
        }
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(META_DIR)).unwrap();
        let err = Database::open(dir.path(), || Ok(Vec::new())).unwrap_err();
        assert!(matches!(err, Error::StoreEntry { .. }), "{err:?}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
