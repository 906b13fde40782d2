//! What an archive's objects must be: their names, their metadata's
//! claims, their signatures; and the capped stream they are read from.

use std::collections::HashMap;
use std::io::{self, BufRead, Read};

use super::{FORMAT_VERSION, MAGIC, MAGIC_WORD};
use crate::bundle::{implied_references, read_bundle_text, store_references};
use crate::db::ObjectRecord;
use crate::error::{ArchiveProblem, Error, Result};
use crate::object::{object_hash, references_text, store_name, ObjectIdentity};
use crate::register;
use crate::sign::{canonical_signatures, PublicKey};
use crate::source_identity::{SourceIdentity, SOURCE_METADATA_FILE};
use crate::store::{OBJECT_METADATA_FILE, RESULT_METADATA_FILE};

use super::import::Importer;
use super::*;

/// The archive stream, counted and capped at `max` bytes.
pub(super) struct Capped<R> {
    pub(super) inner: R,
    pub(super) read: u64,
    pub(super) max: u64,
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
pub(super) fn refuse(
    object: Option<&str>,
    problem: ArchiveProblem,
    message: impl Into<String>,
) -> Error {
    Error::ArchiveRefused {
        object: object.map(str::to_string),
        problem,
        message: message.into(),
    }
}

/// Checks an archive's first line, `first`: [`MAGIC`]. One of another
/// version of the format is said as such ([`Error::Version`]), not as a
/// stream that is no archive.
pub(super) fn check_first_line(first: &str) -> Result<()> {
    let version = first
        .strip_prefix(MAGIC_WORD)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok());
    match version {
        _ if first == MAGIC => Ok(()),
        Some(found) if found != u64::from(FORMAT_VERSION) => Err(Error::Version {
            of: crate::error::Versioned::Archive,
            found,
            place: None,
        }),
        _ => Err(refuse(
            None,
            ArchiveProblem::Malformed,
            format!(
                "it does not start with {MAGIC:?} (found {}): not a fruix archive",
                fruix_core::escape::quoted(first)
            ),
        )),
    }
}

/// What an object's metadata says it is.
pub(super) struct Claimed {
    pub(super) metadata_file: &'static str,
    pub(super) tree_signature: Option<fruix_core::TreeSignature>,
    pub(super) stripped: HashMap<String, u32>,
    pub(super) record: ObjectRecord,
    /// Store paths of a bundle's artifacts (they must be references).
    pub(super) bundle_artifacts: Vec<(String, String)>,
    /// A bundle's `.references` text, as its metadata implies it.
    pub(super) bundle_references: Option<String>,
}

/// Whom an import's refusals speak to: what they advise depends on where
/// the archive came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// The user of this machine (`store import`, `store copy --from`), who
    /// may trust keys or skip the signature check here.
    Here,
    /// The user of a `store copy --to` on another machine, whose copy this
    /// store (served by `store serve`) checks with its own trusted keys:
    /// that user can neither skip the check nor pass keys.
    CopyTo,
}

impl<R> Importer<'_, R> {
    /// Why none of the signatures `texts` of `name` was accepted, advising
    /// the importer's audience.
    pub(super) fn untrusted(&self, name: &str, texts: &[String]) -> Error {
        untrusted(name, texts, &self.trust.keys, self.audience)
    }
}

/// Why no signature of `name` was accepted by `keys`, advising `audience`.
fn untrusted(name: &str, texts: &[String], keys: &[PublicKey], audience: Audience) -> Error {
    let signatures = canonical_signatures(texts);
    let signers: Vec<&str> = signatures
        .iter()
        .filter_map(|s| s.split_once(':').map(|(k, _)| k))
        .collect();
    // Key names come from the archive: escaped.
    let named = signers
        .iter()
        .map(|s| fruix_core::escape::text(s).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let sign = match audience {
        Audience::Here => "sign it where it was built, or import with --no-check-sigs",
        Audience::CopyTo => "sign it where it was built, with a key in the other machine's trusted keys (a copy --to is checked with them, and cannot skip the check)",
    };
    let message = if texts.is_empty() {
        format!("it is not signed; {sign}")
    } else if signatures.is_empty() {
        format!("none of its signatures is in the form signatures are written in (NAME:BASE64 of 64 bytes, with nothing around it); {sign}")
    } else if signers.iter().any(|s| keys.iter().any(|k| k.name == *s)) {
        format!("its signature by {named} does not verify: forged, or made for other content")
    } else {
        match audience {
            Audience::Here => format!(
                "it is signed only by keys this store does not trust ({named}); trust one with --trusted-key or in the trusted-keys file"
            ),
            Audience::CopyTo => format!(
                "it is signed only by keys the other machine does not trust ({named}); add one to the other machine's trusted keys (its /etc/fruix/trusted-keys, or the file FRUIX_TRUSTED_KEYS_FILE names for its `store serve`)"
            ),
        }
    };
    refuse(Some(name), ArchiveProblem::Untrusted, message)
}

/// The refusal of what follows an archive's last line (`rest`), quoting
/// its first bytes escaped (a remote shell's goodbye shows as itself);
/// `None` when nothing follows.
pub(super) fn trailing(rest: &[u8]) -> Option<String> {
    const SHOWN: usize = 64;
    let shown = String::from_utf8_lossy(&rest[..rest.len().min(SHOWN)]);
    let more = if rest.len() > SHOWN { " ..." } else { "" };
    (!rest.is_empty()).then(|| {
        format!(
            "data follows the archive's last line ({END_ARCHIVE}): {}{more}",
            fruix_core::escape::quoted(&shown)
        )
    })
}

/// Whether `name` is a store object name (of plain characters).
pub(super) fn valid_name(name: &str) -> bool {
    crate::verify::is_object_name(name.as_bytes())
}

/// What `header`'s metadata says; its name must be the one it gives.
pub(super) fn claimed(header: &Header) -> Result<Claimed> {
    let name = header.name.as_str();
    // Messages name the metadata where the archive has it: nothing of the
    // object is in the store.
    let path = Path::new(name);
    let refused = |e: crate::Error| {
        refuse(
            Some(name),
            ArchiveProblem::Malformed,
            format!("its metadata is refused: {e}"),
        )
    };
    let inconsistent = |gives: String| {
        refuse(
            Some(name),
            ArchiveProblem::Tampered,
            format!("its metadata names it {gives}: the metadata or the name was changed"),
        )
    };
    let plain = |metadata_file, tree_signature, record| Claimed {
        metadata_file,
        tree_signature,
        stripped: HashMap::new(),
        record,
        bundle_artifacts: Vec::new(),
        bundle_references: None,
    };
    let (gives, claimed) = match header.kind {
        HeaderKind::Artifact => {
            let identity =
                ObjectIdentity::from_text(&path.join(OBJECT_METADATA_FILE), &header.metadata)
                    .map_err(refused)?;
            let claimed = Claimed {
                stripped: identity.stripped_modes.iter().cloned().collect(),
                ..plain(
                    OBJECT_METADATA_FILE,
                    Some(identity.tree_signature.clone()),
                    register::artifact(name, &identity, 0, None),
                )
            };
            (identity.store_name(), claimed)
        }
        HeaderKind::Source => {
            let identity =
                SourceIdentity::from_text(&path.join(SOURCE_METADATA_FILE), &header.metadata)
                    .map_err(refused)?;
            let claimed = plain(
                SOURCE_METADATA_FILE,
                Some(identity.tree_signature.clone()),
                register::source(name, &identity, 0),
            );
            (identity.store_name(), claimed)
        }
        HeaderKind::Bundle => {
            let summary = read_bundle_text(&path.join(RESULT_METADATA_FILE), &header.metadata)
                .map_err(refused)?;
            let gives = store_name(
                &object_hash(&header.metadata),
                "native-build-result",
                &summary.version,
                &summary.executor,
            );
            let bundle_artifacts = summary
                .artifacts
                .iter()
                .map(|a| (a.name.clone(), a.store_path.clone()))
                .collect();
            let claimed = Claimed {
                bundle_artifacts,
                bundle_references: Some(implied_references(&summary)),
                ..plain(
                    RESULT_METADATA_FILE,
                    None,
                    register::bundle_record(name, summary, 0),
                )
            };
            (gives, claimed)
        }
    };
    if gives != name {
        return Err(inconsistent(gives));
    }
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

/// The `.references` text of an artifact or source whose header is
/// `header` (its metadata already read by `claimed`), as promotion writes
/// it: an artifact's source path when that is a store path, a source's
/// nothing.
pub(super) fn implied_object_references(store: &Store, header: &Header) -> Result<String> {
    Ok(match header.kind {
        HeaderKind::Artifact => {
            let path = store.path().join(&header.name).join(OBJECT_METADATA_FILE);
            let identity = ObjectIdentity::from_text(&path, &header.metadata)?;
            references_text(store_references(&[&identity.source_store.path]))
        }
        HeaderKind::Source | HeaderKind::Bundle => String::new(),
    })
}

/// Whether one of the signatures `texts` is by a key named like one of
/// `keys` (its bytes not yet checked).
pub(super) fn names_a_trusted_key(texts: &[String], keys: &[PublicKey]) -> bool {
    canonical_signatures(texts)
        .iter()
        .filter_map(|s| s.split_once(':').map(|(name, _)| name))
        .any(|name| keys.iter().any(|k| k.name == name))
}
