//! Importing an archive: reading it object by object, checking each, and
//! publishing them all at the end (see the module docs of [`super`]).

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use fruix_core::manifest::Progress;

use crate::bundle::{build_bundle_object, read_bundle_text};
use crate::bundle_tree::artifact_claim_mismatch;
use crate::db::{ObjectRecord, Registration};
use crate::error::{ArchiveProblem, Error, Result};
use crate::object::references_text;
use crate::sign::{canonical_signatures, exact_path_text, fingerprint, verify};
use crate::stage::build_object;
use crate::store::{Store, TempObject, RESULT_METADATA_FILE};

use super::publish::publish;
use super::rules::{
    check_first_line, claimed, implied_object_references, names_a_trusted_key, refuse, trailing,
    valid_name, Audience, Capped,
};
use super::*;

/// One object ready to publish.
pub(super) struct Pending {
    pub(super) name: String,
    pub(super) temp: TempObject,
    pub(super) registration: Registration,
    pub(super) signatures: Vec<String>,
}

/// The objects read so far, by name: the record of each one the store
/// lacks (`None`: the store has it, and its registry has the record).
type Earlier = HashMap<String, Option<ObjectRecord>>;

/// Reads an archive from `input` into `store` (see the module docs).
pub fn import(
    store: &Store,
    input: impl BufRead,
    options: &ImportOptions<'_>,
) -> Result<ImportReport> {
    import_objects(store, input, options, Audience::Here, None, || Ok(()))
}

/// [`import`] for `store serve`, its refusals said to a `store copy --to`.
pub(crate) fn import_for_copy(
    store: &Store,
    input: impl BufRead,
    options: &ImportOptions<'_>,
) -> Result<ImportReport> {
    import_objects(store, input, options, Audience::CopyTo, None, || Ok(()))
}

impl ImportOptions<'_> {
    /// Reads an archive from `input` into `store` as [`import`] does, when
    /// it must hold exactly the objects `expected` (those `store copy
    /// --from` asked the other store for): each object's name is checked as
    /// its header is read, so that an object not asked for, or one asked
    /// for that the archive lacks, refuses it before anything is published
    /// (a name in `expected` that is no store object name, before anything
    /// is read). Once the archive ended (with [`ImportOptions::whole_input`],
    /// the input), an error of `ended` (its sender did not end cleanly)
    /// fails the import, before anything is published.
    pub fn import_expected(
        &self,
        store: &Store,
        input: impl BufRead,
        expected: &BTreeSet<String>,
        ended: impl FnOnce() -> Result<()>,
    ) -> Result<ImportReport> {
        import_objects(store, input, self, Audience::Here, Some(expected), ended)
    }
}

/// [`import`], its refusals said to `audience`, of only the objects
/// `expected` when it is given, `ended` called before publishing.
fn import_objects(
    store: &Store,
    input: impl BufRead,
    options: &ImportOptions<'_>,
    audience: Audience,
    expected: Option<&BTreeSet<String>>,
    ended: impl FnOnce() -> Result<()>,
) -> Result<ImportReport> {
    if let Some(name) = expected.into_iter().flatten().find(|n| !valid_name(n)) {
        return Err(refuse(
            None,
            ArchiveProblem::Malformed,
            format!(
                "{} was asked for, which is not a store object name",
                fruix_core::escape::quoted(name)
            ),
        ));
    }
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
        audience,
        line: Vec::new(),
    };
    check_first_line(&reader.line(None)?)?;
    // The same bytes, a path that is not UTF-8 too (see [`exact_path_text`]).
    let ours = exact_path_text(store.path());
    let from = reader.line(None)?;
    match from.strip_prefix("store ") {
        Some(from) if from == ours => {}
        Some(from) => {
            return Err(refuse(
                None,
                ArchiveProblem::ForeignStore,
                format!(
                    "it holds objects of the store at {}, not of this one ({}): their names and references name that path, so they move only between stores at the same path",
                    fruix_core::escape::text(from),
                    fruix_core::escape::text(&ours)
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
    let mut earlier = Earlier::new();
    let mut objects = 0u64;
    loop {
        let line = reader.line(None)?;
        if line == END_ARCHIVE {
            break;
        }
        crate::pipeline::check_cancelled(progress)?;
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
        if expected.is_some_and(|e| !e.contains(&name)) {
            return Err(refuse(
                Some(&name),
                ArchiveProblem::Malformed,
                "the object was not asked for",
            ));
        }
        if earlier.contains_key(&name) {
            return Err(refuse(
                Some(&name),
                ArchiveProblem::Malformed,
                "the object appears twice",
            ));
        }
        let object = reader.object(header, &earlier, &promotion)?;
        match object {
            Read1::Present(signatures) => {
                earlier.insert(name.clone(), None);
                present.push((name, signatures));
            }
            Read1::New(p) => {
                earlier.insert(name, Some(p.registration.record.clone()));
                pending.push(*p);
            }
        }
    }
    if let Some(name) = expected
        .into_iter()
        .flatten()
        .find(|n| !earlier.contains_key(*n))
    {
        return Err(refuse(
            Some(name),
            ArchiveProblem::Malformed,
            "the object was asked for, but the archive ends without it",
        ));
    }
    let more = whole_input.then(|| reader.input.fill_buf().map(trailing));
    let more = more.transpose().map_err(|e| reader.read_error(None, e))?;
    if let Some(said) = more.flatten() {
        return Err(refuse(None, ArchiveProblem::Malformed, said));
    }
    ended()?;
    let bytes = reader.input.read;
    publish(store, pending, present, promotion, bytes)
}

pub(super) enum Read1 {
    /// The store has it: only its trusted signatures are added.
    Present(Vec<String>),
    New(Box<Pending>),
}

pub(super) struct Importer<'a, R> {
    pub(super) store: &'a Store,
    pub(super) input: Capped<R>,
    pub(super) limits: &'a ArchiveLimits,
    pub(super) trust: &'a Trust,
    pub(super) progress: Option<&'a Progress>,
    /// Whom a refusal speaks to.
    pub(super) audience: Audience,
    pub(super) line: Vec<u8>,
}

impl<R: BufRead> Importer<'_, R> {
    /// The next line, without its newline.
    pub(super) fn line(&mut self, object: Option<&str>) -> Result<String> {
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
                match self.input.read {
                    0 => "the archive is empty (no input: a fruix archive starts with its header line)"
                        .to_string(),
                    n => format!("the archive ends after {n} bytes, in the middle of it"),
                },
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

    /// What a failed read of the archive is: the import cancelled (the
    /// reader stopped for it: see [`ImportOptions::progress`]), over the
    /// cap, or an I/O failure.
    pub(super) fn read_error(&self, object: Option<&str>, e: io::Error) -> Error {
        if let Err(cancelled) = crate::pipeline::check_cancelled(self.progress) {
            return cancelled;
        }
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
    pub(super) fn header(&mut self, line: &str) -> Result<Header> {
        let len: u64 = line
            .strip_prefix("object ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                refuse(
                    None,
                    ArchiveProblem::Malformed,
                    format!(
                        "expected `object LEN` or `{END_ARCHIVE}`, found {}",
                        fruix_core::escape::quoted(line)
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
                format!(
                    "an object header is not valid: {}",
                    fruix_core::escape::text(&e.to_string())
                ),
            )
        })?;
        if !valid_name(&header.name) {
            return Err(refuse(
                None,
                ArchiveProblem::Malformed,
                format!(
                    "{} is not a store object name",
                    fruix_core::escape::quoted(&header.name)
                ),
            ));
        }
        Ok(header)
    }

    /// Reads one object (its header read): checks it, and builds it in a
    /// temporary directory unless the store has it.
    pub(super) fn object(
        &mut self,
        header: Header,
        earlier: &Earlier,
        promotion: &crate::store::Promotion<'_>,
    ) -> Result<Read1> {
        let name = header.name.as_str();
        let store = self.store;
        let references = self.references(name, &header.references, earlier)?;
        let claimed = claimed(&header)?;
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
        // An object that must be signed, and none of whose signatures names
        // a trusted key, is refused before its body is read: an untrusted
        // peer cannot make this store read and write it first. (A
        // signature naming a trusted key is verified once the body gave
        // the object's size, which the fingerprint holds.)
        if self.trust.check_signatures
            && !is_present
            && !names_a_trusted_key(&header.signatures, &self.trust.keys)
        {
            return Err(self.untrusted(name, &header.signatures));
        }
        let (size, temp) = match header.kind {
            HeaderKind::Bundle => {
                if claimed.bundle_references.as_ref() != Some(&header.references) {
                    return Err(refuse(
                        Some(name),
                        ArchiveProblem::Tampered,
                        "its references are not those its metadata names (its artifacts, source, closure and development profile)",
                    ));
                }
                let size = (header.metadata.len() + header.references.len()) as u64;
                let temp = if is_present {
                    None
                } else {
                    self.bundle_artifacts(name, &header.metadata, &references, earlier)?;
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
                // Lines outside the store are no registered reference, so
                // they are not in the fingerprint: the metadata must fix them.
                if implied_object_references(store, &header)? != header.references {
                    return Err(refuse(
                        Some(name),
                        ArchiveProblem::Tampered,
                        "its references are not those its metadata implies (an artifact's source when that is a store path, a source's none)",
                    ));
                }
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
        let trusted: Vec<String> = canonical_signatures(&header.signatures)
            .into_iter()
            .filter(|s| verify(&print, s, &self.trust.keys))
            .collect();
        // An object the store has is not imported: nothing to refuse.
        if self.trust.check_signatures && trusted.is_empty() && !is_present {
            return Err(self.untrusted(name, &header.signatures));
        }
        let Some(temp) = temp else {
            return Ok(Read1::Present(trusted));
        };
        let registration = Registration {
            record: ObjectRecord {
                size,
                invalid_size: None,
                ..claimed.record
            },
            references,
        };
        Ok(Read1::New(Box::new(Pending {
            name: name.to_string(),
            temp,
            registration,
            signatures: trusted,
        })))
    }

    /// Checks a `.references` text: canonical, in this store, and each one
    /// valid or earlier in the archive. Returns the names.
    pub(super) fn references(
        &self,
        name: &str,
        text: &str,
        earlier: &Earlier,
    ) -> Result<Vec<String>> {
        let refused = |problem, message: String| Err(refuse(Some(name), problem, message));
        let lines: Vec<&str> = text.lines().collect();
        if references_text(lines.iter().map(|l| l.to_string())) != text {
            return refused(
                ArchiveProblem::Tampered,
                "its references are not sorted and unique, one per line: not as any store writes them".into(),
            );
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
                return refused(
                    ArchiveProblem::Malformed,
                    format!(
                        "it references {}, which is not a store object name",
                        fruix_core::escape::quoted(line)
                    ),
                );
            }
            if reference == name {
                return refused(ArchiveProblem::Malformed, "it references itself".into());
            }
            if !earlier.contains_key(reference) && !self.store.is_valid(reference)? {
                return refused(
                    ArchiveProblem::MissingReference,
                    format!(
                        "it references {}, which neither the store nor the archive (before it) holds; export or copy with --recursive",
                        fruix_core::escape::text(line)
                    ),
                );
            }
            names.push(reference.to_string());
        }
        Ok(names)
    }

    /// Checks the artifacts a bundle's metadata (`metadata`, of bundle
    /// `name`) names: each must be a plain name for one of its
    /// `references`, and that object must be the artifact it claims, by
    /// its name and tree signature, as its record says (the store's, or
    /// the one read `earlier` in the archive).
    fn bundle_artifacts(
        &self,
        name: &str,
        metadata: &str,
        references: &[String],
        earlier: &Earlier,
    ) -> Result<()> {
        let store = self.store;
        let summary = read_bundle_text(
            &store.path().join(name).join(RESULT_METADATA_FILE),
            metadata,
        )?;
        for artifact in &summary.artifacts {
            let plain = !matches!(artifact.name.as_str(), "" | "." | "..")
                && artifact
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._+".contains(&b));
            let target = Path::new(&artifact.store_path);
            let referenced = references.iter().find(|r| target == store.path().join(r));
            let (true, Some(reference)) = (plain, referenced) else {
                return Err(refuse(
                    Some(name),
                    ArchiveProblem::Malformed,
                    format!(
                        "its artifact {} at {} is not a plain name for one of its references",
                        fruix_core::escape::quoted(&artifact.name),
                        fruix_core::escape::quoted(&artifact.store_path)
                    ),
                ));
            };
            let record = match earlier.get(reference) {
                Some(Some(record)) => Some(record.clone()),
                _ => store.db().get(reference)?,
            };
            if let Some(mismatch) = artifact_claim_mismatch(artifact, record.as_ref()) {
                return Err(refuse(
                    Some(name),
                    ArchiveProblem::Tampered,
                    format!(
                        "its artifact {} at {} is not what its metadata claims: {mismatch}",
                        fruix_core::escape::quoted(&artifact.name),
                        fruix_core::escape::text(&artifact.store_path)
                    ),
                ));
            }
        }
        Ok(())
    }
}
