//! `fruix store verify` and `fruix store list`: checking and listing objects.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use fruix_core::error::IoContext;
use fruix_core::manifest::{Difference, EntryKind, Progress};
use fruix_core::sexp;

use crate::error::{Error, Result};
use crate::object::{check_object, object_hash, read_store_manifest};
use crate::store::{Store, OBJECT_METADATA_FILE, RESULT_METADATA_FILE};

/// The outcome of verifying one object.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectVerification {
    pub path: PathBuf,
    /// `artifact` or `result`.
    pub kind: &'static str,
    pub ok: bool,
    /// Modified, missing and extra files.
    pub differences: Vec<Difference>,
    /// Metadata problems (name, signature or links inconsistent).
    pub error: Option<String>,
}

/// Every object directory in the store (hidden entries left out), sorted.
pub fn object_paths(store: &Store) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = fs::read_dir(store.path())
        .with_path("read", store.path())?
        .flatten()
        .filter(|e| !e.file_name().as_bytes().starts_with(b"."))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// Verifies `object` fully: every file re-hashed and compared with the manifest,
/// the manifest with the tree signature, the metadata with the object's name.
pub fn verify_object(object: &Path, progress: Option<&Progress>) -> ObjectVerification {
    let is_bundle = object.join(RESULT_METADATA_FILE).symlink_metadata().is_ok();
    let kind = if is_bundle { "result" } else { "artifact" };
    let outcome = if is_bundle {
        check_bundle(object).map(|()| Vec::new())
    } else {
        check_object(object, true, progress).map(|(_, d)| d)
    };
    match outcome {
        Ok(differences) => ObjectVerification {
            path: object.to_path_buf(),
            kind,
            ok: differences.is_empty(),
            differences,
            error: None,
        },
        Err(e) => ObjectVerification {
            path: object.to_path_buf(),
            kind,
            ok: false,
            differences: Vec::new(),
            error: Some(e.to_string()),
        },
    }
}

/// Verifies several objects concurrently (see [`verify_object`]), in order.
pub fn verify_objects(objects: &[PathBuf], progress: Option<&Progress>) -> Vec<ObjectVerification> {
    use rayon::prelude::*;
    objects
        .par_iter()
        .map(|o| verify_object(o, progress))
        .collect()
}

/// Checks a result bundle: metadata hash matches the name, `artifacts/*`
/// symlinks point at the declared store paths, which exist.
pub fn check_bundle(bundle: &Path) -> Result<()> {
    let inconsistent = |message: String| Error::Inconsistent {
        object: bundle.to_path_buf(),
        message,
    };
    let meta_path = bundle.join(RESULT_METADATA_FILE);
    let text = fs::read_to_string(&meta_path).with_path("read", &meta_path)?;
    let name = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.starts_with(&object_hash(&text)) {
        return Err(inconsistent(
            "its metadata does not hash to its name".into(),
        ));
    }
    let declared: Vec<(String, String)> =
        sexp::read_record(&meta_path, &text, crate::pipeline::RESULT_HEAD, |r| {
            let children = r.children("artifacts", "artifact")?;
            let mut out = Vec::new();
            for mut c in children {
                let artifact = c.name("name")?;
                let store_path = c.string("store-path")?;
                let _ = (
                    c.string("tree-signature")?,
                    c.string("probe")?,
                    c.opt_string("probe-sha256")?,
                );
                c.finish()?;
                out.push((artifact, store_path));
            }
            for field in [
                "format-version",
                "executor",
                "executor-version",
                "run-id",
                "guest-host-name",
                "closure-path",
                "development-profile-path",
                "freebsd-base",
                "source-store",
                "build-policy",
            ] {
                r.raw(field)?;
            }
            Ok(out)
        })?;
    for (artifact, store_path) in declared {
        let link = bundle.join("artifacts").join(&artifact);
        let target = fs::read_link(&link).with_path("read symlink", &link)?;
        if target != Path::new(&store_path) {
            return Err(inconsistent(format!(
                "artifacts/{artifact} points to {}, not {store_path}",
                target.display()
            )));
        }
        if !Path::new(&store_path).join(OBJECT_METADATA_FILE).is_file() {
            return Err(inconsistent(format!(
                "artifact object {store_path} is missing"
            )));
        }
    }
    Ok(())
}

/// One line of `fruix store list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedObject {
    pub path: PathBuf,
    /// `artifact` or `result`.
    pub kind: &'static str,
    /// The artifact name (`world`...) or `result` for bundles.
    pub artifact: String,
    pub version: String,
    pub executor: String,
    /// Total size of the object's files in bytes (as in its manifest).
    pub size: u64,
}

/// Lists the store's objects.
pub fn list_store(store: &Store) -> Result<Vec<ListedObject>> {
    object_paths(store)?
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // <hash>-fruix-native-<artifact>-<version>-<executor> or ...-build-result-...
            let rest = name
                .get(41..)
                .and_then(|r| r.strip_prefix("fruix-native-"))
                .unwrap_or("");
            if path.join(RESULT_METADATA_FILE).is_file() {
                let (version, executor) =
                    split_version_executor(rest.strip_prefix("build-result-").unwrap_or(""));
                return Ok(ListedObject {
                    path,
                    kind: "result",
                    artifact: "result".into(),
                    version,
                    executor,
                    size: 0,
                });
            }
            let identity = crate::object::ObjectIdentity::read(&path.join(OBJECT_METADATA_FILE))?;
            let size = read_store_manifest(&path)?
                .iter()
                .map(|e| match e.kind {
                    EntryKind::File { size, .. } => size,
                    _ => 0,
                })
                .sum();
            Ok(ListedObject {
                path,
                kind: "artifact",
                artifact: identity.artifact,
                version: identity.freebsd_base.version,
                executor: identity.executor,
                size,
            })
        })
        .collect()
}

fn split_version_executor(rest: &str) -> (String, String) {
    // Versions look like 15.0-STABLE: the executor is what follows the version's
    // own dash-separated parts; split at the first dash after a dash-free word
    // that is followed by an uppercase word.
    let parts: Vec<&str> = rest.split('-').collect();
    match parts
        .iter()
        .position(|p| p.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
    {
        Some(i) if i > 0 => (parts[..i].join("-"), parts[i..].join("-")),
        _ => (rest.to_string(), String::new()),
    }
}
