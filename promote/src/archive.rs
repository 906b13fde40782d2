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
//!   line, entries per object, objects per archive, signatures per object;
//! - names are object names of plain characters; paths are relative, in
//!   strict path order, without `.`, `..` or empty components, and never use
//!   the names reserved for an object's metadata; symlinks are created, never
//!   followed; the tree is built by [`build_object`] through directory
//!   descriptors;
//! - each file's bytes are hashed as they are written into the pool
//!   ([`Pool::ingest_stream`]) and must hash to what its line says; the
//!   tree's signature is computed from the lines and must be the one the
//!   metadata commits to, and the metadata must hash to the object's name;
//! - the archive must come from a store at this store's path (names and
//!   references name it, as in Nix); `.references` must be canonical
//!   (sorted, unique), and each reference into the store must be valid in
//!   it or come earlier in the archive: a store only ever holds closures;
//! - each object must carry a signature of its fingerprint (computed here,
//!   from this store's path, the computed tree signature and size, and the
//!   references) by a trusted key, unless [`Trust::check_signatures`] is off.
//!   Only signatures that verify with a trusted key are kept.
//!
//! An archive is imported whole or not at all: its objects are built in
//! temporary directories and published and registered together at the end,
//! under their locks, so a refused, cut-short or killed import leaves no
//! object behind (the promotion's journal removes its pool entries).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fruix_core::error::IoContext;
use fruix_core::manifest::{
    open_dir, open_file_beneath, parse_line, path_order, Entry, EntryKind, ManifestBuilder, Modes,
    Progress, SPECIAL_BITS,
};

use crate::bundle::{build_bundle_object, read_bundle_text};
use crate::check::{check_object, read_object_file, Depth};
use crate::db::{Kind, Registration};
use crate::error::{ArchiveProblem, Error, Result};
use crate::object::{object_hash, references_text, store_name, ObjectIdentity};
use crate::register;
use crate::sign::{fingerprint, verify, PublicKey};
use crate::source_identity::{SourceIdentity, SOURCE_METADATA_FILE};
use crate::stage::{build_object, ManifestLines};
use crate::store::{
    Store, TempObject, MANIFEST_FILE, OBJECT_METADATA_FILE, REFERENCES_FILE, RESULT_METADATA_FILE,
};

/// The first line of every archive.
pub const MAGIC: &str = "fruix-archive 1";
/// The line that ends an archive.
const END_ARCHIVE: &str = "end-archive";
/// The line that ends an object's tree.
const END_TREE: &str = "end";
/// Longest line read (a 4096-byte path and link target, fully escaped).
const MAX_LINE: u64 = 64 << 10;
/// Most signatures kept per object, and the longest one.
const MAX_SIGNATURES: usize = 64;
const MAX_SIGNATURE_BYTES: usize = 1024;

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
    pub objects: Vec<PathBuf>,
    /// Bytes written.
    pub bytes: u64,
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    /// Objects the import added to the store.
    pub imported: Vec<PathBuf>,
    /// Objects the store already had (their bodies were read and dropped).
    pub present: Vec<PathBuf>,
    /// Bytes read.
    pub bytes: u64,
}

/// `names` (registered objects of `store`) in archive order: every object
/// after the objects it references. With `recursive`, their whole closure.
pub fn export_order(store: &Store, names: &[String], recursive: bool) -> Result<Vec<String>> {
    let db = store.db();
    for name in names {
        if db.get(name)?.is_none() {
            return Err(Error::NotValid {
                path: store.path().join(name),
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
    Ok(order)
}

/// Writes the objects `names` of `store` (in [`export_order`]) to `out`.
pub fn export(
    store: &Store,
    names: &[String],
    out: impl Write,
    progress: Option<&Progress>,
) -> Result<ExportReport> {
    // Shared with promotions, exclusive to the collector: nothing exported
    // is collected meanwhile.
    let _gc = store.gc_lock(false)?;
    let mut out = Counting::new(BufWriter::with_capacity(1 << 20, out));
    let stdout = Path::new("the archive");
    let w = |r: io::Result<()>| r.with_path("write", stdout);
    w(writeln!(out, "{MAGIC}"))?;
    w(writeln!(out, "store {}", store.path().display()))?;
    let mut report = ExportReport::default();
    for name in names {
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
            signatures: store.db().signatures(name)?,
        };
        let json = serde_json::to_string(&header).expect("a header serialises");
        w(writeln!(out, "object {}", json.len()))?;
        w(writeln!(out, "{json}"))?;
        if record.kind != Kind::Bundle {
            write_tree(&mut out, &path, metadata_file, progress)?;
            w(writeln!(out, "{END_TREE}"))?;
        }
        report.objects.push(path);
    }
    w(writeln!(out, "{END_ARCHIVE}"))?;
    w(out.flush())?;
    report.bytes = out.count;
    Ok(report)
}

/// Writes the tree of `object` from its stored manifest: each line, and
/// after a file's line the file's bytes (opened beneath the object, never
/// followed). A file that is not the size its line says fails the export.
fn write_tree(
    out: &mut impl Write,
    object: &Path,
    metadata_file: &str,
    progress: Option<&Progress>,
) -> Result<()> {
    let root = open_dir(object)?;
    let mut lines = ManifestLines::open(&object.join(MANIFEST_FILE))?;
    let mut line = String::new();
    let w = |r: io::Result<()>| r.with_path("write", Path::new("the archive"));
    while let Some((entry, _)) = lines.next_entry()? {
        if [metadata_file, REFERENCES_FILE].contains(&&*String::from_utf8_lossy(&entry.path)) {
            continue;
        }
        line.clear();
        entry.render(Modes::Store, &mut line);
        w(out.write_all(line.as_bytes()))?;
        if let EntryKind::File { size, .. } = entry.kind {
            let display = object.join(OsStr::from_bytes(&entry.path));
            let file = open_file_beneath(&root, object, &entry.path)?;
            let copied = io::copy(&mut (&file).take(size), out).with_path("export", &display)?;
            if copied != size {
                return Err(Error::Corrupt {
                    object: object.to_path_buf(),
                    differences: vec![fruix_core::manifest::Difference::Modified {
                        path: entry.manifest_path(),
                        what: vec![format!("size {copied}, manifest says {size}")],
                    }],
                });
            }
            if let Some(p) = progress {
                p.add(size);
            }
        }
    }
    Ok(())
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

/// The archive stream, counted and capped at `max` bytes.
struct Capped<R> {
    inner: R,
    read: u64,
    max: u64,
}

impl<R: BufRead> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Capped<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.read > self.max {
            return Err(io::Error::other("over the byte cap"));
        }
        // One byte more than the cap may be read: that is how going over it shows.
        let room = usize::try_from(self.max - self.read + 1).unwrap_or(usize::MAX);
        let available = self.inner.fill_buf()?;
        let n = available.len().min(room);
        Ok(&available[..n])
    }
    fn consume(&mut self, n: usize) {
        self.read += n as u64;
        self.inner.consume(n);
    }
}

/// A refusal of the archive, about `object` if known.
fn refuse(object: Option<&str>, problem: ArchiveProblem, message: impl Into<String>) -> Error {
    Error::ArchiveRefused {
        object: object.map(str::to_string),
        problem,
        message: message.into(),
    }
}

/// One object ready to publish.
struct Pending {
    name: String,
    temp: TempObject,
    registration: Registration,
    signatures: Vec<String>,
}

/// How [`import`] reads.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions<'a> {
    pub trust: &'a Trust,
    pub limits: ArchiveLimits,
    pub progress: Option<&'a Progress>,
    /// Whether the archive must be the whole input: data after its last
    /// line refuses it. Otherwise reading stops after that line, and what
    /// follows is the caller's (`store serve` reads its next request).
    pub whole_input: bool,
}

/// Reads an archive from `input` into `store` (see the module docs).
pub fn import(
    store: &Store,
    input: impl BufRead,
    options: &ImportOptions<'_>,
) -> Result<ImportReport> {
    let ImportOptions {
        trust,
        ref limits,
        progress,
        whole_input,
    } = *options;
    let promotion = store.begin()?;
    let mut reader = Importer {
        store,
        input: Capped {
            inner: input,
            read: 0,
            max: limits.max_bytes,
        },
        limits,
        trust,
        progress,
        line: Vec::new(),
    };
    let first = reader.line(None)?;
    if first != MAGIC {
        return Err(refuse(
            None,
            ArchiveProblem::Malformed,
            format!(
                "it does not start with {MAGIC:?} (found {:?}): not a fruix archive, or another version",
                fruix_core::escape::text(&first)
            ),
        ));
    }
    let from = reader.line(None)?;
    let ours = store.path().to_string_lossy();
    match from.strip_prefix("store ") {
        Some(from) if from == ours => {}
        Some(from) => {
            return Err(refuse(
                None,
                ArchiveProblem::ForeignStore,
                format!(
                    "it holds objects of the store at {}, not of this one ({ours}): their names and references name that path, so they move only between stores at the same path",
                    fruix_core::escape::text(from)
                ),
            ))
        }
        None => {
            return Err(refuse(
                None,
                ArchiveProblem::Malformed,
                "its second line does not name its store",
            ))
        }
    }
    let mut pending: Vec<Pending> = Vec::new();
    let mut present: Vec<(String, Vec<String>)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut objects = 0u64;
    loop {
        let line = reader.line(None)?;
        if line == END_ARCHIVE {
            break;
        }
        objects += 1;
        if objects > limits.max_objects {
            return Err(refuse(
                None,
                ArchiveProblem::TooLarge,
                format!("it holds more than {} objects", limits.max_objects),
            ));
        }
        let header = reader.header(&line)?;
        let name = header.name.clone();
        if !seen.insert(name.clone()) {
            return Err(refuse(
                Some(&name),
                ArchiveProblem::Malformed,
                "the object appears twice",
            ));
        }
        let object = reader.object(header, &seen, &promotion)?;
        match object {
            Read1::Present(signatures) => present.push((name, signatures)),
            Read1::New(p) => pending.push(*p),
        }
    }
    if whole_input {
        let more = match reader.input.fill_buf() {
            Ok(rest) => !rest.is_empty(),
            Err(e) => return Err(reader.read_error(None, e)),
        };
        if more {
            return Err(refuse(
                None,
                ArchiveProblem::Malformed,
                format!("data follows the archive's last line ({END_ARCHIVE})"),
            ));
        }
    }
    let bytes = reader.input.read;
    publish(store, pending, present, promotion, bytes)
}

/// Publishes and registers what an import read, under the objects' locks
/// (taken in name order, as promotions take them).
fn publish(
    store: &Store,
    pending: Vec<Pending>,
    present: Vec<(String, Vec<String>)>,
    promotion: crate::store::Promotion<'_>,
    bytes: u64,
) -> Result<ImportReport> {
    let mut names: Vec<&str> = pending.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    let _locks = names
        .iter()
        .map(|n| store.lock_object(n))
        .collect::<Result<Vec<_>>>()?;
    let mut temps = Vec::new();
    let mut registrations = Vec::new();
    let mut signatures: Vec<(String, String)> = Vec::new();
    let mut report = ImportReport {
        bytes,
        ..ImportReport::default()
    };
    for p in pending {
        let path = store.path().join(&p.name);
        if path.symlink_metadata().is_ok() {
            // Published meanwhile (or left by a killed promotion): reuse it
            // only if it is intact.
            let check = check_object(&path, Depth::Structure, None)?;
            if !check.is_intact() {
                return Err(Error::Corrupt {
                    object: path,
                    differences: check.differences,
                });
            }
            report.present.push(path);
        } else {
            temps.push((p.temp, p.name.clone()));
            report.imported.push(path);
        }
        registrations.push(p.registration);
        signatures.extend(p.signatures.into_iter().map(|s| (p.name.clone(), s)));
    }
    for (name, sigs) in present {
        report.present.push(store.path().join(&name));
        signatures.extend(sigs.into_iter().map(|s| (name.clone(), s)));
    }
    store.publish(temps)?;
    let mut db = store.db();
    db.register(&registrations)?;
    for (name, signature) in signatures {
        db.add_signature(&name, &signature)?;
    }
    drop(db);
    promotion.succeed(!report.present.is_empty());
    Ok(report)
}

enum Read1 {
    /// The store has it: only its trusted signatures are added.
    Present(Vec<String>),
    New(Box<Pending>),
}

struct Importer<'a, R> {
    store: &'a Store,
    input: Capped<R>,
    limits: &'a ArchiveLimits,
    trust: &'a Trust,
    progress: Option<&'a Progress>,
    line: Vec<u8>,
}

/// What an object's metadata says it is.
struct Claimed {
    metadata_file: &'static str,
    tree_signature: Option<fruix_core::TreeSignature>,
    stripped: HashMap<String, u32>,
    registration: Registration,
    /// Store paths of a bundle's artifacts (they must be references).
    bundle_artifacts: Vec<(String, String)>,
}

impl<R: BufRead> Importer<'_, R> {
    /// The next line, without its newline.
    fn line(&mut self, object: Option<&str>) -> Result<String> {
        self.line.clear();
        let n = (&mut self.input)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| self.read_error(object, e))?;
        if n as u64 > MAX_LINE {
            return Err(refuse(
                object,
                ArchiveProblem::TooLarge,
                format!("a line is longer than {MAX_LINE} bytes"),
            ));
        }
        if self.line.pop() != Some(b'\n') {
            return Err(refuse(
                object,
                ArchiveProblem::Truncated,
                format!(
                    "the archive ends after {} bytes, in the middle of it",
                    self.input.read
                ),
            ));
        }
        String::from_utf8(std::mem::take(&mut self.line)).map_err(|_| {
            refuse(
                object,
                ArchiveProblem::Malformed,
                "a line is not UTF-8 (archive lines are ASCII)",
            )
        })
    }

    fn read_error(&self, object: Option<&str>, e: io::Error) -> Error {
        if self.input.read > self.input.max {
            return refuse(
                object,
                ArchiveProblem::TooLarge,
                format!("the archive is longer than {} bytes", self.input.max),
            );
        }
        fruix_core::Error::io("read", Path::new("the archive"), e).into()
    }

    /// Reads the header announced by `line` (`object LEN`).
    fn header(&mut self, line: &str) -> Result<Header> {
        let len: u64 = line
            .strip_prefix("object ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                refuse(
                    None,
                    ArchiveProblem::Malformed,
                    format!(
                        "expected `object LEN` or `{END_ARCHIVE}`, found {:?}",
                        fruix_core::escape::text(line)
                    ),
                )
            })?;
        if len > self.limits.max_header_bytes {
            return Err(refuse(
                None,
                ArchiveProblem::TooLarge,
                format!(
                    "an object header of {len} bytes is over the {}-byte cap",
                    self.limits.max_header_bytes
                ),
            ));
        }
        let mut json = Vec::with_capacity(len as usize + 1);
        let got = (&mut self.input)
            .take(len + 1)
            .read_to_end(&mut json)
            .map_err(|e| self.read_error(None, e))?;
        if got as u64 != len + 1 {
            return Err(refuse(
                None,
                ArchiveProblem::Truncated,
                "the archive ends in an object header",
            ));
        }
        if json.pop() != Some(b'\n') {
            return Err(refuse(
                None,
                ArchiveProblem::Malformed,
                "an object header is not followed by a newline",
            ));
        }
        let header: Header = serde_json::from_slice(&json).map_err(|e| {
            refuse(
                None,
                ArchiveProblem::Malformed,
                format!("an object header is not valid: {e}"),
            )
        })?;
        if !valid_name(&header.name) {
            return Err(refuse(
                None,
                ArchiveProblem::Malformed,
                format!(
                    "{:?} is not a store object name",
                    fruix_core::escape::text(&header.name)
                ),
            ));
        }
        Ok(header)
    }

    /// Reads one object (its header read): checks it, and builds it in a
    /// temporary directory unless the store has it.
    fn object(
        &mut self,
        header: Header,
        earlier: &HashSet<String>,
        promotion: &crate::store::Promotion<'_>,
    ) -> Result<Read1> {
        let name = header.name.as_str();
        let store = self.store;
        let references = self.references(name, &header.references, earlier)?;
        let claimed = claimed(store, &header, references.clone())?;
        if header.signatures.len() > MAX_SIGNATURES
            || header
                .signatures
                .iter()
                .any(|s| s.len() > MAX_SIGNATURE_BYTES)
        {
            return Err(refuse(
                Some(name),
                ArchiveProblem::TooLarge,
                format!("more than {MAX_SIGNATURES} signatures, or one over {MAX_SIGNATURE_BYTES} bytes"),
            ));
        }
        let is_present = store.is_valid(name)?;
        let (size, temp) = match header.kind {
            HeaderKind::Bundle => {
                let size = (header.metadata.len() + header.references.len()) as u64;
                let temp = if is_present {
                    None
                } else {
                    for (artifact, path) in &claimed.bundle_artifacts {
                        let plain = !matches!(artifact.as_str(), "" | "." | "..")
                            && artifact
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._+".contains(&b));
                        let target = Path::new(path);
                        let referenced = references.iter().any(|r| target == store.path().join(r));
                        if !plain || !referenced {
                            return Err(refuse(
                                Some(name),
                                ArchiveProblem::Malformed,
                                format!(
                                    "its artifact {:?} at {:?} is not a plain name for one of its references",
                                    fruix_core::escape::text(artifact),
                                    fruix_core::escape::text(path)
                                ),
                            ));
                        }
                    }
                    Some(build_bundle_object(
                        store,
                        name,
                        &header.metadata,
                        &header.references,
                        &claimed.bundle_artifacts,
                    )?)
                };
                (size, temp)
            }
            HeaderKind::Artifact | HeaderKind::Source => {
                let manifest = promotion
                    .work_dir()
                    .join(format!("{}.mtree", crate::pool::temp_name("import")));
                let journal = (!is_present).then(|| promotion.journal());
                let (signature, size) = self.tree(name, &claimed, &manifest, journal)?;
                if Some(&signature) != claimed.tree_signature.as_ref() {
                    return Err(refuse(
                        Some(name),
                        ArchiveProblem::Tampered,
                        format!(
                            "its tree signs as {signature}, but its metadata commits to {}",
                            claimed
                                .tree_signature
                                .as_ref()
                                .map_or("nothing", |s| s.as_str())
                        ),
                    ));
                }
                let temp = if is_present {
                    None
                } else {
                    Some(build_object(
                        store,
                        name,
                        &manifest,
                        (claimed.metadata_file, &header.metadata),
                        &header.references,
                    )?)
                };
                let _ = std::fs::remove_file(&manifest);
                (size, temp)
            }
        };
        let reference_paths: Vec<PathBuf> =
            references.iter().map(|r| store.path().join(r)).collect();
        let print = fingerprint(
            &store.path().join(name),
            claimed.tree_signature.as_ref().map(|s| s.as_str()),
            size,
            &reference_paths,
        );
        let trusted: Vec<String> = header
            .signatures
            .iter()
            .filter(|s| verify(&print, s, &self.trust.keys))
            .cloned()
            .collect();
        // An object the store has is not imported: nothing to refuse.
        if self.trust.check_signatures && trusted.is_empty() && !is_present {
            return Err(untrusted(name, &header.signatures, &self.trust.keys));
        }
        let Some(temp) = temp else {
            return Ok(Read1::Present(trusted));
        };
        let mut registration = claimed.registration;
        registration.record.size = size;
        Ok(Read1::New(Box::new(Pending {
            name: name.to_string(),
            temp,
            registration,
            signatures: trusted,
        })))
    }

    /// Checks a `.references` text: canonical, in this store, and each one
    /// valid or earlier in the archive. Returns the names.
    fn references(&self, name: &str, text: &str, earlier: &HashSet<String>) -> Result<Vec<String>> {
        let lines: Vec<&str> = text.lines().collect();
        if references_text(lines.iter().map(|l| l.to_string())) != text {
            return Err(refuse(
                Some(name),
                ArchiveProblem::Tampered,
                "its references are not sorted and unique, one per line: not as any store writes them",
            ));
        }
        let prefix = format!("{}/", self.store.path().display());
        let mut names = Vec::new();
        for line in lines {
            // A path outside the store (a source tree that was not a store
            // object) is recorded, as promotion records it, but is no
            // reference the registry holds.
            let Some(reference) = line.strip_prefix(&prefix) else {
                continue;
            };
            if !valid_name(reference) {
                return Err(refuse(
                    Some(name),
                    ArchiveProblem::Malformed,
                    format!(
                        "it references {:?}, which is not a store object name",
                        fruix_core::escape::text(line)
                    ),
                ));
            }
            if reference == name {
                return Err(refuse(
                    Some(name),
                    ArchiveProblem::Malformed,
                    "it references itself",
                ));
            }
            if !earlier.contains(reference) && !self.store.is_valid(reference)? {
                return Err(refuse(
                    Some(name),
                    ArchiveProblem::MissingReference,
                    format!("it references {line}, which neither the store nor the archive (before it) holds; export or copy with --recursive"),
                ));
            }
            names.push(reference.to_string());
        }
        Ok(names)
    }

    /// Reads an object's tree: writes its files into the pool (unless
    /// `discard`) and its store-manifest lines to `manifest`. Returns the
    /// tree's signature and its files' bytes.
    fn tree(
        &mut self,
        name: &str,
        claimed: &Claimed,
        manifest: &Path,
        journal: Option<&crate::pool::Journal>,
    ) -> Result<(fruix_core::TreeSignature, u64)> {
        let mut out = if journal.is_none() {
            None
        } else {
            Some(BufWriter::new(
                std::fs::File::create_new(manifest).with_path("create", manifest)?,
            ))
        };
        let mut builder = ManifestBuilder::new();
        let mut previous: Option<Vec<u8>> = None;
        let (mut entries, mut size, mut rendered) = (0u64, 0u64, String::new());
        let pool = self.store.pool();
        let bad = |message: String| refuse(Some(name), ArchiveProblem::Malformed, message);
        loop {
            let line = self.line(Some(name))?;
            if line == END_TREE {
                break;
            }
            entries += 1;
            if entries > self.limits.max_entries {
                return Err(refuse(
                    Some(name),
                    ArchiveProblem::TooLarge,
                    format!("its tree has more than {} entries", self.limits.max_entries),
                ));
            }
            let mut entry = parse_line(&line).map_err(|m| {
                bad(format!(
                    "bad tree line {:?}: {m}",
                    fruix_core::escape::text(&line)
                ))
            })?;
            check_entry(&entry, previous.as_deref(), claimed.metadata_file).map_err(bad)?;
            if let EntryKind::File {
                size: file_size,
                sha256,
            } = entry.kind
            {
                let display = self
                    .store
                    .path()
                    .join(name)
                    .join(OsStr::from_bytes(&entry.path));
                let got = match journal {
                    None => {
                        let copied =
                            io::copy(&mut (&mut self.input).take(file_size), &mut io::sink())
                                .map_err(|e| self.read_error(Some(name), e))?;
                        if copied != file_size {
                            return Err(refuse(
                                Some(name),
                                ArchiveProblem::Truncated,
                                "the archive ends in a file",
                            ));
                        }
                        sha256
                    }
                    Some(journal) => {
                        let store_mode = entry.mode & !SPECIAL_BITS;
                        pool.ingest_stream(
                            &mut self.input,
                            file_size,
                            store_mode,
                            journal,
                            &display,
                        )
                        .map_err(|e| match e {
                            Error::ArchiveRefused {
                                object: None,
                                problem,
                                message,
                            } => refuse(Some(name), problem, message),
                            other => other,
                        })?
                        .sha256
                    }
                };
                if got != sha256 {
                    return Err(refuse(
                        Some(name),
                        ArchiveProblem::Tampered,
                        format!(
                            "{} does not hash to what its line says (sha256 {}, not {})",
                            fruix_core::escape::path(&display),
                            hex::encode(got),
                            hex::encode(sha256)
                        ),
                    ));
                }
                size += file_size;
                if let Some(p) = self.progress {
                    p.add(file_size);
                }
            }
            if let Some(out) = &mut out {
                rendered.clear();
                entry.render(Modes::Store, &mut rendered);
                out.write_all(rendered.as_bytes())
                    .with_path("write", manifest)?;
            }
            if let Some(mode) = claimed.stripped.get(&entry.manifest_path()) {
                entry.mode = *mode;
            }
            builder.add(&entry);
            previous = Some(entry.path);
        }
        if previous.is_none() {
            return Err(bad("its tree is empty (not even a root directory)".into()));
        }
        if let Some(mut out) = out {
            out.flush().with_path("write", manifest)?;
        }
        Ok((builder.finish().0, size))
    }
}

/// Why no signature of `name` was accepted.
fn untrusted(name: &str, signatures: &[String], keys: &[PublicKey]) -> Error {
    let signers: Vec<&str> = signatures
        .iter()
        .filter_map(|s| s.split_once(':').map(|(k, _)| k))
        .collect();
    let message = if signatures.is_empty() {
        "it is not signed; sign it where it was built, or import with --no-check-sigs".to_string()
    } else if signers.iter().any(|s| keys.iter().any(|k| k.name == *s)) {
        format!(
            "its signature by {} does not verify: forged, or made for other content",
            signers.join(", ")
        )
    } else {
        format!(
            "it is signed only by keys this store does not trust ({}); trust one with --trusted-key or in the trusted-keys file",
            signers.join(", ")
        )
    };
    refuse(Some(name), ArchiveProblem::Untrusted, message)
}

/// Checks one tree entry against the one before it.
fn check_entry(
    entry: &Entry,
    previous: Option<&[u8]>,
    metadata_file: &str,
) -> std::result::Result<(), String> {
    let Some(previous) = previous else {
        return if entry.path.is_empty() && entry.kind == EntryKind::Directory {
            Ok(())
        } else {
            Err("its tree does not start with its root directory".into())
        };
    };
    if path_order(previous, &entry.path) != std::cmp::Ordering::Less {
        return Err(format!(
            "{} is out of order or repeated",
            fruix_core::escape::text(&entry.manifest_path())
        ));
    }
    for component in entry.path.split(|b| *b == b'/') {
        if component.is_empty()
            || component == b"."
            || component == b".."
            || component.len() > 255
            || component.contains(&0)
        {
            return Err(format!(
                "{} is not a plain relative path",
                fruix_core::escape::text(&entry.manifest_path())
            ));
        }
    }
    if [metadata_file, REFERENCES_FILE, MANIFEST_FILE]
        .iter()
        .any(|n| entry.path == n.as_bytes())
    {
        return Err(format!(
            "{} uses a name reserved for the object's metadata",
            fruix_core::escape::text(&entry.manifest_path())
        ));
    }
    if entry.path.len() > 4095 {
        return Err("a path is longer than 4095 bytes".into());
    }
    Ok(())
}

/// Whether `name` is a store object name of plain characters.
fn valid_name(name: &str) -> bool {
    name.len() <= 255
        && crate::verify::is_object_name(name.as_bytes())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._+".contains(&b))
}

/// What `header`'s metadata says; its name must be the one it gives.
fn claimed(store: &Store, header: &Header, references: Vec<String>) -> Result<Claimed> {
    let name = header.name.as_str();
    let path = store.path().join(name);
    let inconsistent = |gives: String| {
        refuse(
            Some(name),
            ArchiveProblem::Tampered,
            format!("its metadata names it {gives}: the metadata or the name was changed"),
        )
    };
    let claimed = match header.kind {
        HeaderKind::Artifact => {
            let identity =
                ObjectIdentity::from_text(&path.join(OBJECT_METADATA_FILE), &header.metadata)?;
            if identity.store_name() != name {
                return Err(inconsistent(identity.store_name()));
            }
            Claimed {
                metadata_file: OBJECT_METADATA_FILE,
                tree_signature: Some(identity.tree_signature.clone()),
                stripped: identity.stripped_modes.iter().cloned().collect(),
                registration: register::artifact(name, &identity, 0, None, references),
                bundle_artifacts: Vec::new(),
            }
        }
        HeaderKind::Source => {
            let identity =
                SourceIdentity::from_text(&path.join(SOURCE_METADATA_FILE), &header.metadata)?;
            if identity.store_name() != name {
                return Err(inconsistent(identity.store_name()));
            }
            Claimed {
                metadata_file: SOURCE_METADATA_FILE,
                tree_signature: Some(identity.tree_signature.clone()),
                stripped: HashMap::new(),
                registration: register::source(name, &identity, 0, references),
                bundle_artifacts: Vec::new(),
            }
        }
        HeaderKind::Bundle => {
            let summary = read_bundle_text(&path.join(RESULT_METADATA_FILE), &header.metadata)?;
            let gives = store_name(
                &object_hash(&header.metadata),
                "native-build-result",
                &summary.version,
                &summary.executor,
            );
            if gives != name {
                return Err(inconsistent(gives));
            }
            let bundle_artifacts = summary
                .artifacts
                .iter()
                .map(|a| (a.name.clone(), a.store_path.clone()))
                .collect();
            Claimed {
                metadata_file: RESULT_METADATA_FILE,
                tree_signature: None,
                stripped: HashMap::new(),
                registration: register::bundle_registration(name, summary, 0, references),
                bundle_artifacts,
            }
        }
    };
    // An identity's kind follows from its name (sources by their infix).
    let is_source = crate::store::is_source_name(name);
    if is_source != (header.kind == HeaderKind::Source) {
        return Err(refuse(
            Some(name),
            ArchiveProblem::Malformed,
            "its kind does not match its name",
        ));
    }
    Ok(claimed)
}
