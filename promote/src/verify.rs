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
    let declared = read_bundle_text(&meta_path, &text)?;
    for BundleArtifact {
        name: artifact,
        store_path,
        ..
    } in declared.artifacts
    {
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

/// What a result bundle says about one artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BundleArtifact {
    pub name: String,
    pub store_path: String,
    pub tree_signature: String,
}

/// The parts of a result bundle's metadata that tools look at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BundleSummary {
    pub executor: String,
    pub version: String,
    pub run_id: String,
    pub artifacts: Vec<BundleArtifact>,
}

/// Reads a result bundle's `.fruix-native-build-result.scm`.
pub fn read_bundle(bundle: &Path) -> Result<BundleSummary> {
    let path = bundle.join(RESULT_METADATA_FILE);
    let text = fs::read_to_string(&path).with_path("read", &path)?;
    read_bundle_text(&path, &text)
}

fn read_bundle_text(path: &Path, text: &str) -> Result<BundleSummary> {
    let summary = sexp::read_record(path, text, crate::pipeline::RESULT_HEAD, |r| {
        let mut artifacts = Vec::new();
        for mut c in r.children("artifacts", "artifact")? {
            artifacts.push(BundleArtifact {
                name: c.name("name")?,
                store_path: c.string("store-path")?,
                tree_signature: c.string("tree-signature")?,
            });
            c.string("probe")?;
            c.opt_string("probe-sha256")?;
            c.finish()?;
        }
        let version = fruix_core::promotion::read_base(r.record("freebsd-base")?)?.version;
        let summary = BundleSummary {
            executor: r.string("executor")?,
            version,
            run_id: r.string("run-id")?,
            artifacts,
        };
        for field in [
            "format-version",
            "executor-version",
            "guest-host-name",
            "closure-path",
            "development-profile-path",
            "source-store",
            "build-policy",
        ] {
            r.raw(field)?;
        }
        Ok(summary)
    })?;
    Ok(summary)
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
    /// Total size of the artifact's files in bytes (as in its manifest); 0 for bundles.
    pub size: u64,
}

/// Lists the store's objects.
pub fn list_store(store: &Store) -> Result<Vec<ListedObject>> {
    object_paths(store)?
        .into_iter()
        .map(|path| {
            if path.join(RESULT_METADATA_FILE).is_file() {
                let bundle = read_bundle(&path)?;
                return Ok(ListedObject {
                    path,
                    kind: "result",
                    artifact: "result".into(),
                    version: bundle.version,
                    executor: bundle.executor,
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
