//! Signatures made where a result was built: a guest-self-hosted helper
//! holding its machine's key signs, in the guest, the fingerprints of the
//! objects that promoting its result root into the host's store will make,
//! and writes them to `RESULT_ROOT/.fruix-signatures`. The host computes the
//! same fingerprints from the imported result root, checks every signature
//! against the machine's public key before promoting anything, and records
//! them once the objects are registered (when their fingerprints in the
//! registry are the ones signed).
//!
//! Planning needs no store and reads no file content beyond the probes: the
//! tree signatures are those `promotion.scm` declares (promotion checks them
//! against what it reads), and sizes and special bits come from a structural
//! walk. The artifacts' reference to their source object is assumed
//! registered on the host: the host adds the source object to its store
//! before the build.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use fruix_core::error::IoContext;
use fruix_core::manifest::{
    open_beneath, open_dir, open_file_beneath, walk_fd, EntryKind, WalkOptions, SPECIAL_BITS,
};
use fruix_core::result_root::ResultRoot;
use fruix_core::special_modes;

use crate::bundle::plan_bundle;
use crate::error::{Error, Result};
use crate::pipeline::{plan_artifact, Ingested};
use crate::register::names_in_store;
use crate::sign::{fingerprint, verify, PublicKey, SecretKey};
use crate::stage::read_small_at;

/// The signatures file in a result root: `NAME SIGNATURE` lines.
pub const RESULT_SIGNATURES_FILE: &str = ".fruix-signatures";

/// Largest signatures file read (a result has a handful of objects).
const MAX_SIGNATURES_FILE: u64 = 64 << 10;

/// The objects promoting `root` into a store at `store` makes, each with its
/// fingerprint (see [`crate::sign`]), artifacts first, then the bundle.
pub fn result_fingerprints(root: &ResultRoot, store: &Path) -> Result<Vec<(String, String)>> {
    let m = root.metadata();
    let special = special_modes::read(root.path())?;
    let root_dir = open_dir(root.path())?;
    let source_refs = names_in_store(store, [m.source_store.path.as_str()]);
    let source_paths: Vec<PathBuf> = source_refs.iter().map(|n| store.join(n)).collect();
    let mut out = Vec::new();
    let mut reports = BTreeMap::new();
    for a in &m.artifacts {
        let display = root.path().join(&a.path);
        let signature = a.tree_signature.clone().ok_or_else(|| {
            Error::Core(fruix_core::Error::system(format!(
                "{}: the artifact is not signed in promotion.scm; sign the result root first",
                fruix_core::escape::path(&display)
            )))
        })?;
        let dir = open_beneath(&root_dir, root.path(), &a.path)?;
        let extra = special_modes::for_artifact(&special, &a.path);
        let (mut size, mut stripped, mut probe) = (0, Vec::new(), false);
        let options = WalkOptions {
            skip_digests: true,
            extra_modes: Some(&extra),
            ..WalkOptions::default()
        };
        walk_fd(dir, &display, &options, |w| {
            if w.entry.mode & SPECIAL_BITS != 0 {
                stripped.push((w.entry.manifest_path(), w.entry.mode));
            }
            if let EntryKind::File { size: s, .. } = w.entry.kind {
                size += s;
                probe |= w.entry.path == a.probe.as_bytes();
            }
            Ok(())
        })?;
        let probe_sha256 = if probe {
            let dir = open_beneath(&root_dir, root.path(), &a.path)?;
            let mut file = open_file_beneath(&dir, &display, a.probe.as_bytes())?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0; 1 << 16];
            loop {
                let n = file
                    .read(&mut buf)
                    .with_path("read", display.join(&a.probe))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Some(hex::encode(hasher.finalize()))
        } else {
            None
        };
        let ingested = Ingested {
            signature,
            probe_sha256,
            stripped,
            manifest: PathBuf::new(),
            size,
            links_left_out: Vec::new(),
        };
        let (artifact, planned) = plan_artifact(store, m, a, ingested)?;
        out.push((
            planned.name.clone(),
            fingerprint(
                &store.join(&planned.name),
                Some(planned.report.tree_signature.as_str()),
                planned.size,
                &source_paths,
            ),
        ));
        reports.insert(artifact, planned.report);
    }
    let bundle = plan_bundle(store, m, &reports)?;
    let mut references: Vec<PathBuf> = reports.values().map(|r| r.store_path.clone()).collect();
    references.extend(source_paths.iter().cloned());
    out.push((
        bundle.name.clone(),
        fingerprint(
            &store.join(&bundle.name),
            None,
            (bundle.text.len() + bundle.references.len()) as u64,
            &references,
        ),
    ));
    Ok(out)
}

/// Signs the objects of `root` (see [`result_fingerprints`]) with `key` and
/// writes the signatures to its [`RESULT_SIGNATURES_FILE`]. Returns how many.
pub fn sign_result(root: &ResultRoot, store: &Path, key: &SecretKey) -> Result<usize> {
    let prints = result_fingerprints(root, store)?;
    let text: String = prints
        .iter()
        .map(|(name, print)| format!("{name} {}\n", key.sign(print)))
        .collect();
    let path = root.path().join(RESULT_SIGNATURES_FILE);
    std::fs::write(&path, text).with_path("write", &path)?;
    Ok(prints.len())
}

/// Checks the signatures in `root`'s [`RESULT_SIGNATURES_FILE`] (untrusted:
/// read without following a symlink, capped) against `key`: every object
/// promoting `root` into `store` makes must carry a valid one. Returns them
/// with the fingerprints they sign.
pub fn check_result(
    root: &ResultRoot,
    store: &Path,
    key: &PublicKey,
    machine: &str,
) -> Result<Vec<Signed>> {
    let display = root.path().join(RESULT_SIGNATURES_FILE);
    let refused = |message: String| Error::UnsignedResult {
        path: display.clone(),
        machine: machine.to_string(),
        key: key.name.clone(),
        message,
    };
    let dir = open_dir(root.path())?;
    let bytes = match read_small_at(
        dir.as_fd(),
        RESULT_SIGNATURES_FILE,
        &display,
        MAX_SIGNATURES_FILE,
    ) {
        Ok(bytes) => bytes,
        Err(Error::Core(fruix_core::Error::Io { source, .. }))
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Err(refused(
                "the guest did not sign it (no signatures file)".into(),
            ))
        }
        Err(e) => return Err(e),
    };
    let text = String::from_utf8(bytes).map_err(|_| refused("a file that is not UTF-8".into()))?;
    let mut signatures: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        let (name, signature) = line.split_once(' ').ok_or_else(|| {
            refused(format!(
                "a line that is not `NAME SIGNATURE`: {}",
                fruix_core::escape::quoted(line)
            ))
        })?;
        signatures.entry(name).or_default().push(signature);
    }
    let trusted = std::slice::from_ref(key);
    let mut out = Vec::new();
    for (name, print) in result_fingerprints(root, store)? {
        let signature = signatures
            .get(name.as_str())
            .and_then(|sigs| sigs.iter().find(|s| verify(&print, s, trusted)))
            .ok_or_else(|| {
                refused(format!(
                    "no valid signature of {name} (signed by another key, or for other content)"
                ))
            })?;
        out.push(Signed {
            name,
            fingerprint: print,
            signature: signature.to_string(),
        });
    }
    Ok(out)
}

/// A signature checked by [`check_result`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The name of the store object promotion will make.
    pub name: String,
    /// Its fingerprint, computed on this side from the result root (see
    /// [`crate::sign`]).
    pub fingerprint: String,
    /// The signature (`name:BASE64`) from the signatures file that verifies
    /// `fingerprint` with the machine's key.
    pub signature: String,
}

/// Why a checked signature of a promoted object was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecorded {
    /// The object's fingerprint in the registry is not the one signed (the
    /// store held it already, with other references).
    Differs,
    /// The object carries [`MAX_SIGNATURES`](crate::sign::MAX_SIGNATURES)
    /// others already.
    Full,
}

impl NotRecorded {
    /// Why, for a warning naming the object.
    pub fn why(self) -> &'static str {
        match self {
            NotRecorded::Differs => {
                "its references in this store are not those the build site signed"
            }
            NotRecorded::Full => "it carries as many signatures as an object may already",
        }
    }
}

/// Records checked signatures of promoted objects whose fingerprint in the
/// registry is the one signed; returns the names of those left unsigned,
/// with why.
pub fn record(store: &crate::Store, signed: &[Signed]) -> Result<Vec<(String, NotRecorded)>> {
    let mut unsigned = Vec::new();
    for s in signed {
        if crate::sign::object_fingerprint(store, &s.name)? != s.fingerprint {
            unsigned.push((s.name.clone(), NotRecorded::Differs));
        } else if !store.db().add_signature(&s.name, &s.signature)? {
            unsigned.push((s.name.clone(), NotRecorded::Full));
        }
    }
    Ok(unsigned)
}
