//! Result bundles: one per promotion, naming the run's artifact objects.
//!
//! A bundle `<hash>-fruix-native-build-result-<version>-<executor>` holds the
//! whole promotion metadata (`.fruix-native-build-result.scm`, whose hash
//! names it), `.references`, and `artifacts/<name>` symlinks to the artifact
//! objects. This module writes, reads and checks bundles.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use lexpr::Value;

use fruix_core::error::IoContext;
use fruix_core::escape;
use fruix_core::promotion::PromotionMetadata;
use fruix_core::sexp::{self, field, string_field, Writer};

use crate::bundle_tree::artifact_claim_mismatch;
pub use crate::bundle_tree::BundleCheck;
use crate::check::read_object_file;
use crate::error::{Error, Result};
use crate::object::{object_hash, references_text, store_name, ObjectIdentity};
use crate::pipeline::ArtifactReport;
use crate::store::{
    set_mode, set_mtime, Store, TempObject, OBJECT_METADATA_FILE, REFERENCES_FILE,
    RESULT_METADATA_FILE,
};

/// Head symbol of a result bundle's metadata.
pub const RESULT_HEAD: &str = "fruix-native-build-result";

/// The store paths among `candidates` (see [`is_store_path`]).
pub(crate) fn store_references(candidates: &[&str]) -> Vec<String> {
    candidates
        .iter()
        .filter(|p| is_store_path(p))
        .map(|p| p.to_string())
        .collect()
}

/// Whether `path` names a store object: an absolute path whose last component
/// starts with 40 hex digits and a dash.
pub fn is_store_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    path.starts_with('/')
        && name.len() > 41
        && name.as_bytes()[40] == b'-'
        && name[..40].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The bundle's metadata text.
pub fn bundle_text(m: &PromotionMetadata, artifacts: &BTreeMap<String, ArtifactReport>) -> String {
    let mut w = Writer::new(RESULT_HEAD);
    w.field(field("format-version", [Value::from(1)]));
    m.write_run_fields(&mut w);
    w.list_field(
        "artifacts",
        m.artifacts.iter().map(|a| {
            let r = &artifacts[&a.name];
            let mut items = vec![
                field("name", [Value::symbol(a.name.as_str())]),
                string_field("store-path", &r.store_path.to_string_lossy()),
                string_field("tree-signature", r.tree_signature.as_str()),
                string_field("probe", &a.probe),
            ];
            if let Some(sha) = &r.probe_sha256 {
                items.push(string_field("probe-sha256", sha));
            }
            field("artifact", items)
        }),
    );
    w.finish()
}

/// The run's result bundle, planned.
pub(crate) struct PlannedBundle {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) references: String,
}

pub(crate) fn plan_bundle(
    store: &Path,
    m: &PromotionMetadata,
    artifacts: &BTreeMap<String, ArtifactReport>,
) -> Result<PlannedBundle> {
    let text = bundle_text(m, artifacts);
    let name = store_name(
        &object_hash(&text),
        "native-build-result",
        &m.freebsd_base.version,
        &m.executor,
    );
    // Never write metadata this fruix could not read back.
    read_bundle_text(&store.join(&name).join(RESULT_METADATA_FILE), &text)?;
    let references = bundle_references(
        artifacts
            .values()
            .map(|a| a.store_path.to_string_lossy().into_owned()),
        &m.source_store.path,
        m.closure_path.as_deref(),
        m.development_profile_path.as_deref(),
    );
    Ok(PlannedBundle {
        name,
        text,
        references,
    })
}

/// The `.references` text of the bundle whose metadata says `declared`.
pub(crate) fn implied_references(declared: &BundleSummary) -> String {
    bundle_references(
        declared.artifacts.iter().map(|a| a.store_path.clone()),
        &declared.source.path,
        declared.closure_path.as_deref(),
        declared.development_profile_path.as_deref(),
    )
}

/// A bundle's `.references` text: its artifacts' store paths, and its
/// source, closure and development profile when they are store paths.
fn bundle_references(
    artifacts: impl IntoIterator<Item = String>,
    source: &str,
    closure: Option<&str>,
    profile: Option<&str>,
) -> String {
    let mut referenced: Vec<String> = artifacts.into_iter().collect();
    referenced.extend(store_references(&[
        source,
        closure.unwrap_or(""),
        profile.unwrap_or(""),
    ]));
    references_text(referenced)
}

/// Checks an existing bundle, or builds it in a temporary directory. The
/// caller holds its lock.
pub(crate) fn prepare_bundle(
    store: &Store,
    bundle: &PlannedBundle,
    artifacts: &BTreeMap<String, ArtifactReport>,
) -> Result<Option<(TempObject, String)>> {
    let path = store.path().join(&bundle.name);
    if path.symlink_metadata().is_ok() {
        check_bundle(&path)?;
        return Ok(None);
    }
    let links: Vec<(String, String)> = artifacts
        .iter()
        .map(|(a, r)| (a.clone(), r.store_path.to_string_lossy().into_owned()))
        .collect();
    let temp = build_bundle_object(
        store,
        &bundle.name,
        &bundle.text,
        &bundle.references,
        &links,
    )?;
    Ok(Some((temp, bundle.name.clone())))
}

/// Builds result bundle `name` in a temporary directory: its metadata
/// `text`, its `references`, and `artifacts/NAME` linking to each artifact's
/// store path. The caller holds its lock and has checked it does not exist.
pub(crate) fn build_bundle_object(
    store: &Store,
    name: &str,
    text: &str,
    references: &str,
    artifacts: &[(String, String)],
) -> Result<TempObject> {
    let temp = store.temp_dir(name)?;
    let dir = temp.path();
    let links = dir.join("artifacts");
    std::fs::create_dir(&links).with_path("create", &links)?;
    for (artifact, store_path) in artifacts {
        let link = links.join(artifact);
        symlink(store_path, &link).with_path("create symlink", &link)?;
        set_mtime(&link)?;
    }
    set_mode(&links, 0o555)?;
    set_mtime(&links)?;
    for (file, content) in [(RESULT_METADATA_FILE, text), (REFERENCES_FILE, references)] {
        let p = dir.join(file);
        std::fs::write(&p, content).with_path("write", &p)?;
        set_mode(&p, 0o444)?;
        set_mtime(&p)?;
    }
    Ok(temp)
}

/// Checks a result bundle (see [`check_bundle_tree`]); differences are
/// [`Error::Corrupt`].
pub fn check_bundle(bundle: &Path) -> Result<()> {
    let check = check_bundle_tree(bundle)?;
    Error::corrupt_unless_intact(bundle, check.differences, check.more_differences)
}

/// Checks a result bundle: its metadata must hash to its name, and it must
/// hold exactly what promotion writes (see [`crate::bundle_tree`]).
/// Inconsistent metadata and a missing artifact object are errors;
/// differences are returned.
pub fn check_bundle_tree(bundle: &Path) -> Result<BundleCheck> {
    let inconsistent = |message: String| Error::Inconsistent {
        object: bundle.to_path_buf(),
        message,
    };
    let meta_path = bundle.join(RESULT_METADATA_FILE);
    let text = read_object_file(bundle, RESULT_METADATA_FILE)?;
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
    let references = implied_references(&declared);
    let links: Vec<(&str, &str)> = declared
        .artifacts
        .iter()
        .map(|a| (a.name.as_str(), a.store_path.as_str()))
        .collect();
    let check = crate::bundle_tree::compare(bundle, &text, &references, &links)?;
    for artifact in &declared.artifacts {
        let store_path = &artifact.store_path;
        let object = Path::new(store_path);
        let object_metadata = object.join(OBJECT_METADATA_FILE);
        if !fs::symlink_metadata(&object_metadata).is_ok_and(|m| m.is_file()) {
            return Err(inconsistent(format!(
                "artifact object {} is missing",
                escape::text(store_path)
            )));
        }
        // The object there must be the artifact the bundle says it is.
        let mismatch = ObjectIdentity::from_text(
            &object_metadata,
            &read_object_file(object, OBJECT_METADATA_FILE)?,
        )
        .map(|identity| {
            let name = object.file_name().unwrap_or_default().to_string_lossy();
            crate::register::artifact(&name, &identity, 0, None)
        })
        .map_or_else(
            |_| Some("the object there is no artifact object".to_string()),
            |record| artifact_claim_mismatch(artifact, Some(&record)),
        );
        if let Some(mismatch) = mismatch {
            return Err(inconsistent(format!(
                "artifact {} is not what the bundle says: {mismatch}",
                escape::quoted(&artifact.name)
            )));
        }
    }
    Ok(check)
}

/// What a result bundle says about one artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BundleArtifact {
    /// The artifact's name (`world`, `kernel`...), also the name of its
    /// `artifacts/` link in the bundle.
    pub name: String,
    /// The artifact object's absolute path in the store, where the link
    /// points.
    pub store_path: String,
    /// The artifact's tree signature as the metadata records it (read as
    /// text, not checked to be `sha256:` and 64 hex digits).
    pub tree_signature: String,
}

/// The parts of a result bundle's metadata that tools look at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BundleSummary {
    /// The executor that built the run (also the last part of the
    /// bundle's name).
    pub executor: String,
    /// The FreeBSD version built (`15.0-STABLE`), from `freebsd-base`.
    pub version: String,
    /// The id of the run it records (`20260405T213444Z`), from
    /// `promotion.scm`.
    pub run_id: String,
    /// The kernel configuration of the build policy (`GENERIC`).
    pub kernconf: String,
    /// The source the run built (a source object's path, and its commit).
    pub source: fruix_core::promotion::SourceStore,
    /// The run's artifacts, in the order of its `promotion.scm`.
    pub artifacts: Vec<BundleArtifact>,
    /// The store path of the builder's closure, when the run names one.
    pub closure_path: Option<String>,
    /// The store path of the development profile, when the run names one.
    pub development_profile_path: Option<String>,
}

/// Reads a result bundle's `.fruix-native-build-result.scm`.
pub fn read_bundle(bundle: &Path) -> Result<BundleSummary> {
    let text = read_object_file(bundle, RESULT_METADATA_FILE)?;
    read_bundle_text(&bundle.join(RESULT_METADATA_FILE), &text)
}

pub(crate) fn read_bundle_text(path: &Path, text: &str) -> Result<BundleSummary> {
    let summary = sexp::read_record(path, text, RESULT_HEAD, |r| {
        let mut artifacts = Vec::new();
        for mut c in r.children("artifacts", "artifact")? {
            let name = c.name("name")?;
            // Each names a link in the bundle's `artifacts/`.
            if artifacts.iter().any(|a: &BundleArtifact| a.name == name) {
                return Err(c.invalid(
                    "name",
                    format!("artifact {} is listed twice", escape::quoted(&name)),
                ));
            }
            artifacts.push(BundleArtifact {
                name,
                store_path: c.string("store-path")?,
                tree_signature: c.string("tree-signature")?,
            });
            c.string("probe")?;
            c.opt_string("probe-sha256")?;
            c.finish()?;
        }
        let version = fruix_core::promotion::read_base(r.record("freebsd-base")?)?.version;
        let kernconf =
            fruix_core::promotion::read_policy_with(r.record("build-policy")?, true)?.kernconf;
        let source = fruix_core::promotion::read_source(r.record("source-store")?)?;
        let summary = BundleSummary {
            executor: r.string("executor")?,
            version,
            run_id: r.string("run-id")?,
            kernconf,
            source,
            artifacts,
            closure_path: r.opt_string("closure-path")?,
            development_profile_path: r.opt_string("development-profile-path")?,
        };
        for field in ["format-version", "executor-version", "guest-host-name"] {
            r.raw(field)?;
        }
        Ok(summary)
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use fruix_core::testing::{invalid_metadata, sample_metadata};

    use super::*;

    /// The bundle text of the sample run, its artifacts at made-up store
    /// paths.
    fn sample_text() -> String {
        let m = sample_metadata("local", "20260405T213444Z");
        let artifacts = m
            .artifacts
            .iter()
            .map(|a| {
                let report = ArtifactReport {
                    store_path: PathBuf::from(format!("/frx/store/{}-{}", "0".repeat(40), a.name)),
                    tree_signature: format!("sha256:{}", "0".repeat(64)).parse().unwrap(),
                    new: true,
                    probe: a.probe.clone(),
                    probe_sha256: None,
                };
                (a.name.clone(), report)
            })
            .collect();
        bundle_text(&m, &artifacts)
    }

    /// An artifact listed twice would be linked twice in `artifacts/`: an
    /// import then failed making the second link (an I/O error, exit 3).
    /// Every reader of bundles refuses it as invalid metadata.
    #[test]
    fn a_bundle_listing_an_artifact_twice_is_refused_when_read() {
        let text = sample_text();
        let path = Path::new("b").join(RESULT_METADATA_FILE);
        assert_eq!(read_bundle_text(&path, &text).unwrap().artifacts.len(), 4);
        let start = text.find("(artifact ").expect("an artifact");
        // One artifact a line, as promotion writes them.
        let end = start + text[start..].find('\n').unwrap();
        let doubled = format!("{}\n{}", &text[..end], &text[start..]);
        let read = read_bundle_text(&path, &doubled).map_err(|e| match e {
            Error::Core(e) => e,
            other => panic!("not a core error: {other}"),
        });
        let (field, _, message) = invalid_metadata(read);
        assert_eq!(field, "artifacts[1].name");
        assert!(message.ends_with("is listed twice"), "{message}");
    }
}
