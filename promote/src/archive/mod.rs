//! Archives of store objects: what `fruix store export` writes and
//! `fruix store import` and `fruix store copy` read, as untrusted input.
//!
//! # Format (version 1)
//!
//! ```text
//! fruix-archive 1\n
//! store STORE_PATH\n
//! object LEN\n  HEADER (LEN bytes of JSON)\n  BODY     one per object, references first
//! ...
//! end-archive\n
//! ```
//!
//! A header names the object and carries its metadata file's text, its
//! `.references` text and its signatures (see [`crate::sign`]). The body of
//! an artifact or source object is its tree: one store-manifest line per
//! entry in path order (`./usr/bin/cc type=file mode=0555 size=N
//! sha256digest=...`), each file's line followed by exactly its `size`
//! bytes, then `end\n`. A result bundle has no body: its tree (links to its
//! artifacts) follows from its metadata. The stream is self-delimiting, so
//! `fruix store serve` reads one from a connection and answers after it.
//!
//! # Import
//!
//! Everything an archive says is checked before the store changes, and
//! nothing it says is trusted:
//!
//! - every size is capped ([`ArchiveLimits`]): the whole stream, a header, a
//!   line, entries per object, objects per archive, signatures per object
//!   ([`MAX_SIGNATURES`], each within [`MAX_SIGNATURE_BYTES`]: what a store
//!   lets its objects carry);
//!   directories nest at most [`MAX_DEPTH`](fruix_core::manifest::MAX_DEPTH)
//!   deep, as deep as a walk of the store (`store verify`) accepts;
//! - names are object names of plain characters; paths are relative, in
//!   strict path order, without `.`, `..` or empty components, and never use
//!   the names reserved for an object's metadata; each entry lies in the
//!   directory the tree declared last on its path; modes are store modes,
//!   with setuid, setgid or sticky bits only where the metadata lists them as
//!   stripped; symlink targets are not empty, hold no NUL and fit
//!   `PATH_MAX`; symlinks are created, never followed; the tree is built by
//!   [`build_object`](crate::stage::build_object) through directory
//!   descriptors;
//! - each file's bytes are hashed as they are written into the pool
//!   ([`Pool::ingest_stream`](crate::pool::Pool::ingest_stream)) and must hash to what its line says; the
//!   tree's signature is computed from the lines and must be the one the
//!   metadata commits to, and the metadata must hash to the object's name;
//! - the archive must come from a store at this store's path (names and
//!   references name it, as in Nix), the same bytes: the `store` line
//!   spells a path that is not UTF-8 as fingerprints do ([`exact_path_text`]);
//!   `.references` must be canonical
//!   (sorted, unique) and be what the metadata implies (a bundle's
//!   artifacts, source, closure and profile; an artifact's source when that
//!   is a store path; a source's nothing), and each reference into the store must be valid in
//!   it or come earlier in the archive: a store only ever holds closures;
//! - each object must carry a signature of its fingerprint (computed here,
//!   from this store's path, the computed tree signature and size, and the
//!   references) by a trusted key, unless [`Trust::check_signatures`] is off.
//!   Only signatures that verify with a trusted key are kept, each in its
//!   one spelling and once ([`canonical_signatures`]): a signature with
//!   white space around it is none. A store that has the object keeps its
//!   signatures and gains the archive's while it carries fewer than
//!   [`MAX_SIGNATURES`].
//!
//! An archive is imported whole or not at all: its objects are built in
//! temporary directories, every check passes before any is published, and
//! they are then published a batch at a time under their locks and
//! registered together at the end (`publish`), so a refused or cut-short
//! import leaves no object behind (the promotion's journal removes its pool
//! entries). `store copy --from` imports with the set of objects it asked
//! for: any other object, or one missing, refuses the archive.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fruix_core::manifest::{open_dir, EntryKind, FilesBeneath, Modes, Progress};

use crate::check::read_object_file;
use crate::db::Kind;
use crate::error::{Error, Result};
use crate::sign::{
    canonical_signatures, exact_path_text, PublicKey, MAX_SIGNATURES, MAX_SIGNATURE_BYTES,
};
use crate::source_identity::SOURCE_METADATA_FILE;
use crate::stage::ManifestLines;
use crate::store::{
    Store, MANIFEST_FILE, OBJECT_METADATA_FILE, REFERENCES_FILE, RESULT_METADATA_FILE,
};

mod hashing;
mod import;
mod publish;
mod rules;
mod tree;

pub use import::import;
pub(crate) use import::import_for_copy;

/// How [`import`] reads.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions<'a> {
    /// The keys whose signatures count, and whether each object needs one.
    pub trust: &'a Trust,
    /// Caps on the archive; going over one refuses it.
    pub limits: ArchiveLimits,
    /// Counts the bytes of each file body read from the archive. Once it
    /// is cancelled ([`Progress::cancel`]), the import fails with
    /// [`fruix_core::Error::Cancelled`] at its next tree entry, or at a
    /// failed read (a reader that stops for the cancellation), keeping
    /// nothing; an archive read to its end is published.
    pub progress: Option<&'a Progress>,
    /// Whether the archive must be the whole input: data after its last
    /// line refuses it. Otherwise reading stops after that line, and what
    /// follows is the caller's (`store serve` reads its next request).
    pub whole_input: bool,
}

impl<'a> ImportOptions<'a> {
    /// Options trusting `trust`, with the default caps, no progress, and
    /// reading stopping after the archive's last line.
    pub fn new(trust: &'a Trust) -> Self {
        ImportOptions {
            trust,
            limits: ArchiveLimits::default(),
            progress: None,
            whole_input: false,
        }
    }
}

/// The version of the archive format this fruix writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The first line of every archive: `fruix-archive` and
/// [`FORMAT_VERSION`].
pub const MAGIC: &str = "fruix-archive 1";
/// The first line of an archive of any version, before the version.
const MAGIC_WORD: &str = "fruix-archive ";
/// The line that ends an archive.
const END_ARCHIVE: &str = "end-archive";
/// The line that ends an object's tree.
const END_TREE: &str = "end";
/// Longest line read (a 4096-byte path and link target, fully escaped).
const MAX_LINE: u64 = 64 << 10;

/// Caps on what an archive may make the importer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Bytes of the whole stream.
    pub max_bytes: u64,
    /// Objects in one archive.
    pub max_objects: u64,
    /// Entries of one object's tree.
    pub max_entries: u64,
    /// Bytes of one object's header (its metadata and references included).
    pub max_header_bytes: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_bytes: 256 << 30,
            max_objects: 1_000_000,
            max_entries: 10_000_000,
            max_header_bytes: 4 << 20,
        }
    }
}

/// Whom an import trusts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The trusted public keys. Only the signatures that verify with one of
    /// them are kept in the store, whether or not `check_signatures` is on.
    pub keys: Vec<PublicKey>,
    /// Whether every object needs a signature by one of `keys`
    /// (`--no-check-sigs` turns it off).
    pub check_signatures: bool,
}

/// One object's header.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    kind: HeaderKind,
    /// The text of the object's metadata file.
    metadata: String,
    /// The text of its `.references`.
    references: String,
    signatures: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum HeaderKind {
    Artifact,
    Source,
    Bundle,
}

impl From<Kind> for HeaderKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Artifact => HeaderKind::Artifact,
            Kind::Source => HeaderKind::Source,
            Kind::Bundle => HeaderKind::Bundle,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ExportReport {
    /// The objects written, in archive order.
    #[serde(serialize_with = "fruix_core::escape::serialize_paths")]
    pub objects: Vec<PathBuf>,
    /// Bytes written.
    pub bytes: u64,
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    /// Objects the import added to the store.
    #[serde(
        serialize_with = "fruix_core::escape::serialize_paths",
        deserialize_with = "crate::serve::capped"
    )]
    pub imported: Vec<PathBuf>,
    /// Objects the store already had (their bodies were read, hashed and
    /// dropped).
    #[serde(
        serialize_with = "fruix_core::escape::serialize_paths",
        deserialize_with = "crate::serve::capped"
    )]
    pub present: Vec<PathBuf>,
    /// Bytes read.
    pub bytes: u64,
}

/// `names` (registered objects of `store`) in archive order: every object
/// after the objects it references. With `recursive`, their whole closure.
/// A name that is no store object name (`<hash>-fruix-...`, one plain
/// component) is [`Error::NotAStoreObject`], before any path is looked at:
/// names may come from a `store serve` client. A name the store does not
/// hold is [`Error::NotInStore`] ([`Error::NotValid`] when its directory is
/// there, unregistered).
pub fn export_order(store: &Store, names: &[String], recursive: bool) -> Result<Vec<String>> {
    if let Some(name) = names.iter().find(|n| !rules::valid_name(n)) {
        return Err(Error::NotAStoreObject {
            path: PathBuf::from(name),
            store: store.path().to_path_buf(),
        });
    }
    let db = store.db();
    for name in names {
        if db.get(name)?.is_none() {
            let path = store.path().join(name);
            // A directory the registry does not name is there, but not valid.
            return Err(match path.symlink_metadata() {
                Ok(_) => Error::NotValid { path },
                Err(_) => Error::NotInStore {
                    path,
                    store: store.path().to_path_buf(),
                    remote: false,
                },
            });
        }
    }
    let wanted: HashSet<String> = if recursive {
        db.closure(names)?.into_iter().collect()
    } else {
        names.iter().cloned().collect()
    };
    // Depth-first, references first; `wanted` bounds the walk.
    let mut order = Vec::new();
    let mut done = HashSet::new();
    let mut sorted: Vec<&String> = wanted.iter().collect();
    sorted.sort();
    for root in sorted {
        let mut stack = vec![(root.clone(), false)];
        while let Some((name, expanded)) = stack.pop() {
            if done.contains(&name) {
                continue;
            }
            if expanded {
                done.insert(name.clone());
                order.push(name);
                continue;
            }
            stack.push((name.clone(), true));
            for reference in db.neighbours(&name, false)?.into_iter().rev() {
                if wanted.contains(&reference) && !done.contains(&reference) {
                    stack.push((reference, false));
                }
            }
        }
    }
    // The registry is asked again there (what a collection removed).
    drop(db);
    check_present(store, &order)?;
    Ok(order)
}

/// Checks that each of `names` (registered objects of `store`) is a
/// directory in the store (never followed), before anything of an archive
/// is written: one registered whose directory is gone is
/// [`Error::Inconsistent`], as `store verify` finds it, not an I/O failure
/// after the archive's first objects; one no longer registered was
/// collected or deleted since it was listed ([`Error::RemovedMeanwhile`]).
fn check_present(store: &Store, names: &[String]) -> Result<()> {
    for name in names {
        let object = store.path().join(name);
        let gone = match object.symlink_metadata() {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => "its directory is gone: something else is in its place",
            Err(e) if e.kind() == io::ErrorKind::NotFound => "its directory is gone",
            Err(e) => return Err(fruix_core::Error::io("inspect", &object, e).into()),
        };
        if store.db().get(name)?.is_none() {
            return Err(Error::RemovedMeanwhile { object });
        }
        return Err(not_present(object, gone));
    }
    Ok(())
}

/// [`Error::Inconsistent`] for `object`, registered, whose directory is not
/// there as `gone` says.
fn not_present(object: PathBuf, gone: &str) -> Error {
    Error::Inconsistent {
        object,
        message: format!(
            "registered, but {gone}; run `fruix store verify --repair`, then export or copy again"
        ),
    }
}

/// Writes the objects `names` of `store` (in [`export_order`]) to `out`.
/// Cancelled through `progress` ([`Progress::cancel`]), it fails with
/// [`fruix_core::Error::Cancelled`] at its next object or tree entry, or
/// at a failed write (a writer that stops for the cancellation), and never
/// ends the archive. A failed write is said of "the archive"; one to a
/// file is said of that file with [`export_to_file`].
pub fn export(
    store: &Store,
    names: &[String],
    out: impl Write,
    progress: Option<&Progress>,
) -> Result<ExportReport> {
    export_to_file(store, names, out, Path::new("the archive"), progress)
}

/// [`export`] to `out`, the file `archive`: a failed write names it
/// (`store export --output FILE` on a full disk).
pub fn export_to_file(
    store: &Store,
    names: &[String],
    out: impl Write,
    archive: &Path,
    progress: Option<&Progress>,
) -> Result<ExportReport> {
    // Shared with promotions, exclusive to the collector: nothing exported
    // is collected meanwhile.
    let _gc = store.gc_lock(false)?;
    check_present(store, names)?;
    let mut out = Counting::new(BufWriter::with_capacity(1 << 20, out));
    let mut buffer = Vec::new();
    let w = |r: io::Result<()>| written(r, archive, progress);
    w(writeln!(out, "{MAGIC}"))?;
    w(writeln!(out, "store {}", exact_path_text(store.path())))?;
    let mut report = ExportReport::default();
    for name in names {
        crate::pipeline::check_cancelled(progress)?;
        let path = store.path().join(name);
        let record = store
            .db()
            .get(name)?
            .ok_or_else(|| Error::NotValid { path: path.clone() })?;
        let metadata_file = match record.kind {
            Kind::Artifact => OBJECT_METADATA_FILE,
            Kind::Source => SOURCE_METADATA_FILE,
            Kind::Bundle => RESULT_METADATA_FILE,
        };
        let header = Header {
            name: name.clone(),
            kind: record.kind.into(),
            metadata: read_object_file(&path, metadata_file)?,
            references: read_object_file(&path, REFERENCES_FILE)?,
            // Only what an import reads (a registry written before the caps
            // may hold more, or other spellings).
            signatures: canonical_signatures(&store.db().signatures(name)?),
        };
        let json = serde_json::to_string(&header).expect("a header serialises");
        w(writeln!(out, "object {}", json.len()))?;
        w(writeln!(out, "{json}"))?;
        if record.kind != Kind::Bundle {
            write_tree(
                &mut out,
                &path,
                metadata_file,
                archive,
                &mut buffer,
                progress,
            )?;
            w(writeln!(out, "{END_TREE}"))?;
        }
        report.objects.push(path);
    }
    // A cancelled export never ends its archive: its reader refuses it.
    crate::pipeline::check_cancelled(progress)?;
    w(writeln!(out, "{END_ARCHIVE}"))?;
    w(out.flush())?;
    report.bytes = out.count;
    Ok(report)
}

/// Writes the tree of `object` to `out` (the archive `archive`, which a
/// failed write names) from its stored manifest: each line, and
/// after a file's line the file's bytes (opened beneath the object, never
/// followed), hashed as they are written ([`hashing::copy_hashed`], through
/// `buffer`). A file that is not the size its line says, or does not hash
/// to its digest, fails the export ([`Error::Corrupt`]) once its bytes are
/// written: the archive is never ended, so that its reader refuses it.
fn write_tree(
    out: &mut impl Write,
    object: &Path,
    metadata_file: &str,
    archive: &Path,
    buffer: &mut Vec<u8>,
    progress: Option<&Progress>,
) -> Result<()> {
    let root = open_dir(object)?;
    let mut files = FilesBeneath::new(&root, object);
    let mut lines = ManifestLines::open(&object.join(MANIFEST_FILE))?;
    let mut line = String::new();
    let w = |r: io::Result<()>| written(r, archive, progress);
    while let Some((entry, _)) = lines.next_entry()? {
        crate::pipeline::check_cancelled(progress)?;
        if [metadata_file, REFERENCES_FILE]
            .map(str::as_bytes)
            .contains(&&*entry.path)
        {
            continue;
        }
        line.clear();
        entry.render(Modes::Store, &mut line);
        w(out.write_all(line.as_bytes()))?;
        if let EntryKind::File { size, sha256 } = entry.kind {
            let display = object.join(OsStr::from_bytes(&entry.path));
            let file = files.open(&entry.path)?;
            let (copied, digest) =
                hashing::copy_hashed(&file, size, out, buffer, &display, archive, progress)?;
            // A file grown since it was stored has more than its line says.
            let now = if copied < size {
                copied
            } else {
                file.metadata()
                    .map_err(|e| failed(e, progress, "export", &display))?
                    .len()
            };
            let what = if now != size {
                format!("size {now}, manifest says {size}")
            } else if digest != sha256 {
                format!(
                    "sha256 {}, manifest says {}",
                    hex::encode(digest),
                    hex::encode(sha256)
                )
            } else {
                if let Some(p) = progress {
                    p.add(size);
                }
                continue;
            };
            return Err(Error::Corrupt {
                object: object.to_path_buf(),
                differences: vec![fruix_core::manifest::Difference::Modified {
                    path: entry.manifest_path(),
                    what: vec![what],
                }],
                more_differences: 0,
            });
        }
    }
    Ok(())
}

/// The outcome of a write of the archive `archive` (see [`failed`]).
fn written(r: io::Result<()>, archive: &Path, progress: Option<&Progress>) -> Result<()> {
    r.map_err(|e| failed(e, progress, "write", archive))
}

/// What the failure `e` of `action` on `path` is: the export cancelled
/// when it was (the writer stopped for it), else an I/O failure.
fn failed(e: io::Error, progress: Option<&Progress>, action: &'static str, path: &Path) -> Error {
    match crate::pipeline::check_cancelled(progress) {
        Err(cancelled) => cancelled,
        Ok(()) => fruix_core::Error::io(action, path, e).into(),
    }
}

/// A writer that counts what it writes.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W> Counting<W> {
    fn new(inner: W) -> Self {
        Counting { inner, count: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use fruix_core::testing::TestDir;

    use super::*;
    use crate::{promote_native_build_result, PromoteOptions};

    /// The sample result root promoted: its store, and the world
    /// artifact's name.
    fn promoted() -> (TestDir, Store, String) {
        let dir = TestDir::new();
        let root = dir.root("r1", "local", "20260405T213444Z", true);
        let store = Store::open(&dir.store()).unwrap();
        let report =
            promote_native_build_result(&root, &store, &PromoteOptions::default()).unwrap();
        let world = &report.artifacts["world"].store_path;
        let name = world.file_name().unwrap().to_str().unwrap().to_string();
        (dir, store, name)
    }

    /// The first regular file of `object`'s tree (not its metadata).
    fn a_file(object: &Path) -> PathBuf {
        walkdir::WalkDir::new(object)
            .sort_by_file_name()
            .into_iter()
            .flatten()
            .filter(|e| e.depth() > 1 && e.file_type().is_file())
            .map(|e| e.into_path())
            .next()
            .expect("a file in the object's tree")
    }

    /// Rewrites `file` (read-only in the store) with `change`.
    fn tamper(file: &Path, change: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = std::fs::read(file).unwrap();
        change(&mut bytes);
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        // In place: the pool's link to it changes too, as a user's would.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(file)
            .unwrap();
        out.write_all(&bytes).unwrap();
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444)).unwrap();
    }

    /// The differences of an [`Error::Corrupt`] about `object`; panics on
    /// any other error.
    fn corrupt(e: Error, object: &Path) -> Vec<String> {
        match e {
            Error::Corrupt {
                object: found,
                differences,
                ..
            } if found == object => differences.iter().map(|d| d.to_string()).collect(),
            other => panic!("not corrupt at {}: {other}", object.display()),
        }
    }

    /// Regression: an archive of another format version was refused as
    /// malformed input (exit 4), "not a fruix archive, or another
    /// version". It is said to be of another version (exit 2), typed;
    /// what only looks like one (`01`, `x`) is still no archive.
    #[test]
    fn an_archive_of_another_format_version_is_said_to_be_one() {
        assert_eq!(MAGIC, format!("{MAGIC_WORD}{FORMAT_VERSION}"));
        let (dir, store, world) = promoted();
        let mut archive = Vec::new();
        export(&store, std::slice::from_ref(&world), &mut archive, None).unwrap();
        let rest = &archive[MAGIC.len()..];
        let trust = crate::archive::Trust::default();
        let options = ImportOptions::new(&trust);
        let with_first = |first: &str| [first.as_bytes(), rest].concat();
        let other = FORMAT_VERSION + 1;
        drop(store);
        std::fs::rename(dir.store(), dir.join("there")).unwrap();
        let here = Store::open(&dir.store()).unwrap();
        let e = import(
            &here,
            &with_first(&format!("{MAGIC_WORD}{other}"))[..],
            &options,
        );
        let e = e.unwrap_err();
        assert!(
            matches!(e, Error::Version { of: crate::error::Versioned::Archive, found, place: None } if found == u64::from(other)),
            "{e:?}"
        );
        assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
        assert!(e.to_string().contains("the store was not changed"), "{e}");
        for first in [
            "fruix-archive 01",
            "fruix-archive x",
            "fruix-archive ",
            "tar",
        ] {
            let e = import(&here, &with_first(first)[..], &options).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::ArchiveRefused {
                        problem: crate::error::ArchiveProblem::Malformed,
                        ..
                    }
                ),
                "{first}: {e:?}"
            );
        }
        let e = import(&here, &with_first(MAGIC)[..], &options);
        assert_eq!(e.unwrap().imported.len(), 1);
    }

    /// Regression: a file grown since it was stored was exported cut to
    /// its recorded size, and one changed in place (same size) with its
    /// new bytes and its old digest: the export succeeded. Each file's
    /// bytes are hashed as they are written, and its size checked exactly.
    #[test]
    fn a_file_that_changed_since_it_was_stored_fails_the_export() {
        type Change = fn(&mut Vec<u8>);
        let cases: [(&str, Change, &str); 3] = [
            ("grown", |b| b.extend_from_slice(b"more"), "size"),
            ("changed in place", |b| b[0] ^= 1, "sha256"),
            ("shrunk", |b| b.truncate(b.len() - 1), "size"),
        ];
        for (what, change, says) in cases {
            let (_dir, store, name) = promoted();
            let object = store.path().join(&name);
            let file = a_file(&object);
            tamper(&file, change);
            let e = export(&store, &[name], &mut Vec::new(), None).unwrap_err();
            assert_eq!(
                e.exit_status(),
                fruix_core::ExitStatus::PromotionFailure,
                "{what}"
            );
            let differences = corrupt(e, &object);
            let shown = format!("./{}", file.strip_prefix(&object).unwrap().display());
            assert!(
                differences.len() == 1 && differences[0].contains(&shown),
                "{what}: {differences:?}"
            );
            assert!(differences[0].contains(says), "{what}: {differences:?}");
        }
    }

    /// Regression: an object registered but whose directory is gone failed
    /// the export as an I/O error (exit 3), after the archive's first
    /// bytes were written. It is found before anything is written, as
    /// `store verify` finds it: registered, its directory gone (exit 4).
    #[test]
    fn a_registered_object_whose_directory_is_gone_fails_before_anything_is_written() {
        let (dir, store, name) = promoted();
        let object = store.path().join(&name);
        std::fs::rename(&object, dir.join("gone")).unwrap();
        let e = export_order(&store, std::slice::from_ref(&name), true).unwrap_err();
        assert_eq!(
            e.exit_status(),
            fruix_core::ExitStatus::PromotionFailure,
            "{e}"
        );
        assert!(e.to_string().contains("its directory is gone"), "{e}");
        assert!(e.to_string().contains("fruix store verify --repair"), "{e}");
        let mut out = Vec::new();
        let e = export(&store, &[name], &mut out, None).unwrap_err();
        assert!(e.to_string().contains("its directory is gone"), "{e}");
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    }
}
