//! The promotion pipeline: a validated result root into store objects.
//!
//! For each artifact: walk and hash the tree (in parallel), check the
//! signature declared in `promotion.scm`, derive the object's identity, and
//! under the object's lock either find it present (checked, never silently
//! reused when corrupt) or build it from the `.links` pool and publish it.
//! Then the same for the run's result bundle. Nothing in the store changes
//! before the input has been fully checked.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use lexpr::Value;

use fruix_core::error::IoContext;
use fruix_core::manifest::{self, EntryKind, ManifestBuilder, Progress, WalkOptions, Walked};
use fruix_core::promotion::{
    base_value, policy_value_with, source_value, ArtifactEntry, PromotionMetadata,
};
use fruix_core::result_root::{self, ResultRoot};
use fruix_core::sexp::{field, string_field, Writer};
use fruix_core::special_modes::{self, SpecialModes};
use fruix_core::TreeSignature;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::object::{
    build_artifact_object, check_object, has_reserved_name, object_hash, references_text,
    store_name, stripped_modes, ObjectIdentity,
};
use crate::store::{set_mode, set_mtime, Store, TempObject, REFERENCES_FILE, RESULT_METADATA_FILE};

/// Head symbol of a result bundle's metadata.
pub const RESULT_HEAD: &str = "fruix-native-build-result";

/// What promotion created or found for one artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArtifactReport {
    pub store_path: PathBuf,
    pub tree_signature: TreeSignature,
    /// True when this promotion created the object, false when it was present.
    pub new: bool,
    /// The artifact's probe file and its SHA-256.
    #[serde(skip)]
    pub probe: String,
    #[serde(skip)]
    pub probe_sha256: Option<String>,
}

/// What a promotion created or found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PromotionReport {
    pub run_id: String,
    pub result_store: PathBuf,
    /// True when the bundle was created by this promotion.
    pub result_new: bool,
    pub artifacts: BTreeMap<String, ArtifactReport>,
    /// Artifact names in the order of `promotion.scm`.
    #[serde(skip)]
    pub order: Vec<String>,
    /// SHA-256 of `boot/kernel/kernel`, `boot/loader` (or `boot/loader.efi`)
    /// and `usr/include/sys/param.h`, when those artifacts are present.
    pub sha_kernel: Option<String>,
    pub sha_loader: Option<String>,
    pub sha_param: Option<String>,
}

impl PromotionReport {
    /// The summary as `key=value` lines.
    pub fn to_key_values(&self) -> String {
        let mut out = format!(
            "run_id={}\nresult_store={}\n",
            self.run_id,
            self.result_store.display()
        );
        for name in &self.order {
            out.push_str(&format!(
                "{name}_store={}\n",
                self.artifacts[name].store_path.display()
            ));
        }
        out.push_str(&format!("artifact_store_count={}\n", self.artifacts.len()));
        for (key, value) in [
            ("sha_kernel", &self.sha_kernel),
            ("sha_loader", &self.sha_loader),
            ("sha_param", &self.sha_param),
        ] {
            if let Some(v) = value {
                out.push_str(&format!("{key}={v}\n"));
            }
        }
        out
    }
}

/// Options for [`promote_native_build_result`].
#[derive(Debug, Default)]
pub struct PromoteOptions<'a> {
    /// Counters updated while hashing and copying.
    pub progress: Option<&'a Progress>,
}

/// Validates `result_root` and promotes it into `store`.
pub fn promote_native_build_result(
    result_root: &Path,
    store: &Store,
    options: &PromoteOptions<'_>,
) -> Result<PromotionReport> {
    let root = result_root::validate(result_root)?;
    promote_validated(&root, store, options)
}

struct Walk {
    walked: Vec<Walked>,
    signature: TreeSignature,
    probe_sha256: Option<String>,
}

fn walk_artifact(
    dir: &Path,
    probe: &str,
    extra_modes: &HashMap<Vec<u8>, u32>,
    progress: Option<&Progress>,
) -> Result<Walk> {
    let mut walked = Vec::new();
    let mut builder = ManifestBuilder::new();
    manifest::walk(
        dir,
        &WalkOptions {
            progress,
            extra_modes: Some(extra_modes),
            ..WalkOptions::default()
        },
        |w| {
            builder.add(&w.entry);
            walked.push(Walked {
                entry: w.entry.clone(),
                full_path: w.full_path.clone(),
                metadata: w.metadata.clone(),
            });
            Ok(())
        },
    )?;
    let probe_sha256 = walked
        .iter()
        .find(|w| w.entry.path == probe.as_bytes())
        .and_then(|w| match &w.entry.kind {
            EntryKind::File { sha256, .. } => Some(hex::encode(sha256)),
            _ => None,
        });
    Ok(Walk {
        walked,
        signature: builder.finish().0,
        probe_sha256,
    })
}

/// Walks and hashes one artifact tree and checks it may become a store object.
fn check_artifact(
    dir: &Path,
    a: &ArtifactEntry,
    special: &SpecialModes,
    progress: Option<&Progress>,
) -> Result<Walk> {
    let walk = walk_artifact(
        dir,
        &a.probe,
        &special_modes::for_artifact(special, &a.path),
        progress,
    )?;
    if let Some(declared) = &a.tree_signature {
        if *declared != walk.signature {
            return Err(fruix_core::Error::SignatureMismatch {
                path: dir.to_path_buf(),
                expected: declared.to_string(),
                actual: walk.signature.to_string(),
            }
            .into());
        }
    }
    if let Some(reserved) = has_reserved_name(&walk.walked) {
        return Err(fruix_core::Error::UnsafePath {
            path: reserved.full_path.clone(),
            message: "uses a name reserved for store object metadata; rename or remove it".into(),
        }
        .into());
    }
    Ok(walk)
}

/// One artifact's planned store object.
struct Planned {
    report: ArtifactReport,
    name: String,
    metadata: String,
    walked: Vec<Walked>,
}

fn plan_artifact(
    store: &Store,
    m: &PromotionMetadata,
    a: &ArtifactEntry,
    walk: Walk,
) -> (String, Planned) {
    let entries: Vec<_> = walk.walked.iter().map(|w| w.entry.clone()).collect();
    let identity = ObjectIdentity {
        artifact: a.name.clone(),
        executor: m.executor.clone(),
        freebsd_base: m.freebsd_base.clone(),
        source_store: m.source_store.clone(),
        build_policy: m.build_policy.clone(),
        tree_signature: walk.signature.clone(),
        stripped_modes: stripped_modes(&entries),
    };
    let name = identity.store_name();
    let report = ArtifactReport {
        store_path: store.path().join(&name),
        tree_signature: walk.signature,
        new: false,
        probe: a.probe.clone(),
        probe_sha256: walk.probe_sha256,
    };
    let planned = Planned {
        report,
        name,
        metadata: identity.to_scheme(),
        walked: walk.walked,
    };
    (a.name.clone(), planned)
}

/// Checks an existing object (never silently reusing a corrupt one), or
/// builds the object in a temporary directory. The caller holds its lock.
fn prepare_artifact(
    store: &Store,
    references: &str,
    planned: &mut Planned,
) -> Result<Option<(TempObject, String)>> {
    let path = &planned.report.store_path;
    if path.symlink_metadata().is_ok() {
        let (_, differences) = check_object(path, false, None)?;
        if !differences.is_empty() {
            return Err(Error::Corrupt {
                object: path.clone(),
                differences,
            });
        }
        return Ok(None);
    }
    planned.report.new = true;
    let temp = build_artifact_object(
        store,
        &planned.name,
        &planned.walked,
        &planned.metadata,
        references,
    )?;
    Ok(Some((temp, planned.name.clone())))
}

/// Promotes an already validated result root.
pub fn promote_validated(
    root: &ResultRoot,
    store: &Store,
    options: &PromoteOptions<'_>,
) -> Result<PromotionReport> {
    let m = root.metadata();
    // Special bits an import recorded instead of creating them on disk.
    let special = special_modes::read(root.path())?;
    // Check every artifact before the store changes at all. Artifacts are
    // walked concurrently so that one tree's directory scan overlaps another's
    // hashing.
    let walks = m
        .artifacts
        .par_iter()
        .map(|a| check_artifact(&root.path().join(&a.path), a, &special, options.progress))
        .collect::<Result<Vec<_>>>()?;
    let mut planned: BTreeMap<String, Planned> = m
        .artifacts
        .iter()
        .zip(walks)
        .map(|(a, walk)| plan_artifact(store, m, a, walk))
        .collect();
    let reports: BTreeMap<String, ArtifactReport> = planned
        .iter()
        .map(|(n, p)| (n.clone(), p.report.clone()))
        .collect();
    let bundle = plan_bundle(m, &reports);
    // Every lock, in one global order (no deadlock between promotions), is
    // held until every new object is published together.
    let mut names: Vec<&str> = planned.values().map(|p| p.name.as_str()).collect();
    names.push(&bundle.name);
    names.sort_unstable();
    names.dedup();
    let _locks = names
        .iter()
        .map(|n| store.lock_object(n))
        .collect::<Result<Vec<_>>>()?;
    let references = references_text(store_references(&[&m.source_store.path]));
    let mut temps = planned
        .par_iter_mut()
        .map(|(_, p)| prepare_artifact(store, &references, p))
        .collect::<Result<Vec<_>>>()?;
    let result_new = match prepare_bundle(store, &bundle, &reports)? {
        Some(temp) => {
            temps.push(Some(temp));
            true
        }
        None => false,
    };
    store.publish(temps.into_iter().flatten().collect())?;
    let result_store = store.path().join(&bundle.name);
    let artifacts: BTreeMap<String, ArtifactReport> =
        planned.into_iter().map(|(n, p)| (n, p.report)).collect();
    let probe = |artifact: &str, probes: &[&str]| {
        artifacts
            .get(artifact)
            .filter(|a| probes.contains(&a.probe.as_str()))
            .and_then(|a| a.probe_sha256.clone())
    };
    Ok(PromotionReport {
        run_id: m.run_id.clone(),
        result_store,
        result_new,
        sha_kernel: probe("kernel", &["boot/kernel/kernel"]),
        sha_loader: probe("bootloader", &["boot/loader", "boot/loader.efi"]),
        sha_param: probe("headers", &["usr/include/sys/param.h"]),
        order: m.artifacts.iter().map(|a| a.name.clone()).collect(),
        artifacts,
    })
}

/// The store paths among `candidates` (see [`is_store_path`]).
fn store_references(candidates: &[&str]) -> Vec<String> {
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
    w.field(string_field("executor", &m.executor));
    w.field(string_field("executor-version", &m.executor_version));
    w.field(string_field("run-id", &m.run_id));
    w.field(string_field("guest-host-name", &m.guest_host_name));
    if let Some(p) = &m.closure_path {
        w.field(string_field("closure-path", p));
    }
    if let Some(p) = &m.development_profile_path {
        w.field(string_field("development-profile-path", p));
    }
    w.field(base_value(&m.freebsd_base));
    w.field(source_value(&m.source_store));
    w.field(policy_value_with(&m.build_policy, true));
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
struct PlannedBundle {
    name: String,
    text: String,
    references: String,
}

fn plan_bundle(
    m: &PromotionMetadata,
    artifacts: &BTreeMap<String, ArtifactReport>,
) -> PlannedBundle {
    let text = bundle_text(m, artifacts);
    let name = store_name(
        &object_hash(&text),
        "native-build-result",
        &m.freebsd_base.version,
        &m.executor,
    );
    let mut referenced: Vec<String> = artifacts
        .values()
        .map(|a| a.store_path.to_string_lossy().into_owned())
        .collect();
    referenced.extend(store_references(&[
        m.source_store.path.as_str(),
        m.closure_path.as_deref().unwrap_or(""),
        m.development_profile_path.as_deref().unwrap_or(""),
    ]));
    PlannedBundle {
        name,
        text,
        references: references_text(referenced),
    }
}

/// Checks an existing bundle, or builds it in a temporary directory. The
/// caller holds its lock.
fn prepare_bundle(
    store: &Store,
    bundle: &PlannedBundle,
    artifacts: &BTreeMap<String, ArtifactReport>,
) -> Result<Option<(TempObject, String)>> {
    let path = store.path().join(&bundle.name);
    if path.symlink_metadata().is_ok() {
        crate::verify::check_bundle(&path)?;
        return Ok(None);
    }
    let temp = store.temp_dir(&bundle.name)?;
    let dir = temp.path();
    let links = dir.join("artifacts");
    std::fs::create_dir(&links).with_path("create", &links)?;
    for (artifact, report) in artifacts {
        let link = links.join(artifact);
        symlink(&report.store_path, &link).with_path("create symlink", &link)?;
        set_mtime(&link)?;
    }
    set_mode(&links, 0o555)?;
    set_mtime(&links)?;
    for (file, content) in [
        (RESULT_METADATA_FILE, bundle.text.as_str()),
        (REFERENCES_FILE, bundle.references.as_str()),
    ] {
        let p = dir.join(file);
        std::fs::write(&p, content).with_path("write", &p)?;
        set_mode(&p, 0o444)?;
        set_mtime(&p)?;
    }
    Ok(Some((temp, bundle.name.clone())))
}
