//! The promotion pipeline: a validated result root into store objects.
//!
//! One pass: each artifact tree is read exactly once, through directory
//! descriptors that never follow a symlink, and every file's bytes are hashed
//! as they are written into the `.links` pool; the tree signature is computed
//! from what was written, and checked against the signature declared in
//! `promotion.scm`. Then the object's identity gives its name and, under the
//! object's lock, it is either found present (checked, never silently reused
//! when corrupt) or built from its manifest and the pool, and published.
//! Then the same for the run's result bundle. No store object changes before
//! every artifact has been read and checked, and a failure removes the pool
//! entries the promotion created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use fruix_core::escape;
use fruix_core::manifest::{open_beneath, open_dir, walk_fd, EntryKind, Progress, WalkOptions};
use fruix_core::promotion::{ArtifactEntry, PromotionMetadata};
use fruix_core::result_root::{self, ResultRoot};
use fruix_core::special_modes::{self, SpecialModes};
use fruix_core::TreeSignature;

use crate::bundle::{is_store_path, plan_bundle, prepare_bundle, store_references};
use crate::check::check_existing;
use crate::db::Registration;
use crate::error::{Error, Result};
pub(crate) use crate::ingest::{ingest_tree, owner_of, reader_of, Ingested, Reader, Tree};
use crate::object::{references_text, ObjectIdentity};
use crate::register::{self, object_files_size};
use crate::stage::build_artifact_object;
use crate::store::{
    Promotion, Store, TempObject, REFERENCES_FILE, RESERVED_NAMES, RESULT_METADATA_FILE,
};
use crate::verify::is_object_name;

/// What promotion created or found for one artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArtifactReport {
    /// The artifact object's absolute path in the store.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub store_path: PathBuf,
    /// The tree signature computed from what promotion read (when
    /// `promotion.scm` declares one, it is equal to it).
    pub tree_signature: TreeSignature,
    /// True when this promotion created the object, false when it was present.
    pub new: bool,
    /// The artifact's probe file, from `promotion.scm`: a path relative to
    /// the artifact tree (`boot/kernel/kernel`).
    #[serde(skip)]
    pub probe: String,
    /// The probe file's SHA-256, in hex; `None` when the tree has no
    /// regular file at that path.
    #[serde(skip)]
    pub probe_sha256: Option<String>,
}

/// What a promotion created or found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PromotionReport {
    /// The id of the promoted run (`20260405T213444Z`), from
    /// `promotion.scm`.
    pub run_id: String,
    /// The result bundle's absolute path in the store.
    #[serde(serialize_with = "fruix_core::escape::serialize_path")]
    pub result_store: PathBuf,
    /// True when the bundle was created by this promotion.
    pub result_new: bool,
    /// The link to the bundle, a garbage collector root, when one was made.
    #[serde(serialize_with = "fruix_core::escape::serialize_opt_path")]
    pub out_link: Option<PathBuf>,
    /// Each artifact's object, by artifact name.
    pub artifacts: BTreeMap<String, ArtifactReport>,
    /// Artifact names in the order of `promotion.scm`.
    #[serde(skip)]
    pub order: Vec<String>,
    /// SHA-256 (hex) of the `kernel` artifact's `boot/kernel/kernel`, when
    /// that artifact is present with that file as its probe.
    pub sha_kernel: Option<String>,
    /// SHA-256 (hex) of the `bootloader` artifact's `boot/loader` (or
    /// `boot/loader.efi`), when that artifact is present with that file as
    /// its probe.
    pub sha_loader: Option<String>,
    /// SHA-256 (hex) of the `headers` artifact's `usr/include/sys/param.h`,
    /// when that artifact is present with that file as its probe.
    pub sha_param: Option<String>,
}

impl PromotionReport {
    /// The summary as `key=value` lines; paths are escaped
    /// ([`fruix_core::escape::path`]), so a store path cannot forge a line.
    pub fn to_key_values(&self) -> String {
        let mut out = format!(
            "run_id={}\nresult_store={}\n",
            self.run_id,
            escape::path(&self.result_store)
        );
        for name in &self.order {
            out.push_str(&format!(
                "{name}_store={}\n",
                escape::path(&self.artifacts[name].store_path)
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
    /// Counters updated while reading and copying.
    pub progress: Option<&'a Progress>,
    /// Where to link the result bundle, registered as an indirect root
    /// before the promotion ends (a collection can never slip in between).
    pub out_link: Option<OutLink<'a>>,
}

/// A link to the result bundle and the state directory whose roots name it.
#[derive(Debug, Clone, Copy)]
pub struct OutLink<'a> {
    /// The state directory whose `gcroots/auto/` gets the indirect root
    /// (see [`crate::roots`]).
    pub state_dir: &'a Path,
    /// Where the symlink to the bundle goes (`./result`), made absolute. A
    /// symlink already there is replaced; anything else there is an error.
    pub link: &'a Path,
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

/// Reads artifact `a` of the result root once: every file is hashed while
/// its bytes are written into the pool, the manifest is written to the work
/// directory as it goes, and the tree signature is computed from what was
/// written. The declared signature, if any, must match it.
fn ingest_artifact(
    promotion: &Promotion<'_>,
    root: &ResultRoot,
    index: usize,
    a: &ArtifactEntry,
    special: &SpecialModes,
    progress: Option<&Progress>,
) -> Result<Ingested> {
    let root_dir = open_dir(root.path())?;
    let dir = open_beneath(&root_dir, root.path(), &a.path)?;
    // Root promoting a user's result root publishes only what that user
    // could read (a hard link to another user's file, which FreeBSD lets
    // a user make, is refused).
    let reader = Reader::for_user(owner_of(&root_dir)?.or(owner_of(&dir)?));
    let display = root.path().join(&a.path);
    let extra = special_modes::for_artifact(special, &a.path);
    let tree = Tree {
        display: &display,
        manifest: promotion.work_dir().join(format!("artifact-{index}.mtree")),
        extra_modes: Some(&extra),
        reserved: RESERVED_NAMES,
        probe: Some(&a.probe),
        exclude: None,
        leave_out_link: None,
        reader,
    };
    let ingested = ingest_tree(promotion, dir, tree, progress)?;
    if let Some(declared) = &a.tree_signature {
        if *declared != ingested.signature {
            return Err(fruix_core::Error::SignatureMismatch {
                path: display,
                expected: declared.to_string(),
                actual: ingested.signature.to_string(),
            }
            .into());
        }
    }
    Ok(ingested)
}

/// One artifact's planned store object.
pub(crate) struct Planned {
    pub(crate) report: ArtifactReport,
    pub(crate) name: String,
    identity: ObjectIdentity,
    metadata: String,
    manifest: PathBuf,
    pub(crate) size: u64,
}

pub(crate) fn plan_artifact(
    store: &Path,
    m: &PromotionMetadata,
    a: &ArtifactEntry,
    ingested: Ingested,
) -> Result<(String, Planned)> {
    let identity = ObjectIdentity {
        artifact: a.name.clone(),
        executor: m.executor.clone(),
        freebsd_base: m.freebsd_base.clone(),
        source_store: m.source_store.clone(),
        build_policy: m.build_policy.clone(),
        tree_signature: ingested.signature.clone(),
        stripped_modes: ingested.stripped,
    };
    let name = identity.store_name();
    let metadata = identity.to_scheme();
    // Never write metadata this fruix could not read back (its reader caps
    // the data a file may hold: thousands of setuid files would pass it).
    ObjectIdentity::from_text(&store.join(&name), &metadata)?;
    let report = ArtifactReport {
        store_path: store.join(&name),
        tree_signature: ingested.signature,
        new: false,
        probe: a.probe.clone(),
        probe_sha256: ingested.probe_sha256,
    };
    let planned = Planned {
        report,
        name,
        identity,
        metadata,
        manifest: ingested.manifest,
        size: ingested.size,
    };
    Ok((a.name.clone(), planned))
}

/// Checks an existing object (never silently reusing a corrupt one, and
/// replacing an unregistered directory that fails: see [`check_existing`]),
/// or builds the object in a temporary directory. The caller holds its lock.
fn prepare_artifact(
    store: &Store,
    references: &str,
    planned: &mut Planned,
) -> Result<Option<(TempObject, String)>> {
    if check_existing(store, &planned.report.store_path)? {
        return Ok(None);
    }
    planned.report.new = true;
    let temp = build_artifact_object(
        store,
        &planned.name,
        &planned.manifest,
        &planned.metadata,
        references,
    )?;
    Ok(Some((temp, planned.name.clone())))
}

/// How many regular files a promotion of `root` will read, and their bytes:
/// a structural walk of every artifact (no file is opened), so that a
/// progress display can show a rate and an estimated time left. Only an
/// estimate: what is promoted is what the one reading pass finds. Setting
/// `stop` (the promotion ended first) ends the walk with
/// [`fruix_core::Error::Cancelled`].
pub fn measure(root: &ResultRoot, stop: &AtomicBool) -> Result<(u64, u64)> {
    let root_dir = open_dir(root.path())?;
    let mut totals = (0, 0);
    for a in &root.metadata().artifacts {
        let dir = open_beneath(&root_dir, root.path(), &a.path)?;
        measure_into(dir, &root.path().join(&a.path), stop, &mut totals)?;
    }
    Ok(totals)
}

/// [`measure`] for a source tree, `dir`: how many regular files `source
/// add` will read in it, and their bytes (an estimate, as for a
/// promotion).
pub fn measure_tree(dir: &Path, stop: &AtomicBool) -> Result<(u64, u64)> {
    let mut totals = (0, 0);
    measure_into(open_dir(dir)?, dir, stop, &mut totals)?;
    Ok(totals)
}

/// Adds the regular files under `dir` (open on `fd`), and their bytes, to
/// `totals`: a structural walk, no file opened.
fn measure_into(
    fd: std::os::fd::OwnedFd,
    dir: &Path,
    stop: &AtomicBool,
    (files, bytes): &mut (u64, u64),
) -> Result<()> {
    let options = WalkOptions {
        skip_digests: true,
        ..WalkOptions::default()
    };
    walk_fd(fd, dir, &options, |w| {
        if stop.load(Ordering::Relaxed) {
            return Err(fruix_core::Error::Cancelled);
        }
        if let EntryKind::File { size, .. } = &w.entry.kind {
            *files += 1;
            *bytes += size;
        }
        Ok(())
    })?;
    Ok(())
}

/// [`fruix_core::Error::Cancelled`] once the work `progress` counts was
/// cancelled ([`Progress::cancel`]): the check at the boundaries of work
/// that does not walk.
pub(crate) fn check_cancelled(progress: Option<&Progress>) -> Result<()> {
    Ok(progress.map_or(Ok(()), Progress::check_cancelled)?)
}

/// The object of `store` that `path` (a path `promotion.scm` names beside
/// the artifacts) is, when it is a store path ([`is_store_path`]) in this
/// store: it must be a valid object there, or `gone` says why not. A store
/// path with a `.` or `..` component, or an empty one, is refused: it may
/// or may not lie in this store, and its bundle's `.references` would name
/// it as written.
fn in_this_store(
    store: &Store,
    path: &str,
    gone: impl FnOnce(PathBuf) -> Error,
) -> Result<Vec<String>> {
    if !is_store_path(path) {
        return Ok(Vec::new());
    }
    let plain = path[1..].split('/').all(|c| !matches!(c, "" | "." | ".."));
    if !plain {
        return Err(fruix_core::Error::UnsafePath {
            path: PathBuf::from(path),
            message: "a store path in promotion.scm must be plain: no `.`, `..` or empty component"
                .into(),
        }
        .into());
    }
    let path = Path::new(path);
    if path.parent() != Some(store.path()) {
        return Ok(Vec::new());
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !is_object_name(name.as_bytes()) || !store.is_valid(name)? {
        return Err(gone(path.to_path_buf()));
    }
    Ok(vec![name.to_string()])
}

/// [`Progress::set_phase`] of `progress`, if any.
pub(crate) fn set_phase(progress: Option<&Progress>, phase: &'static str) {
    if let Some(p) = progress {
        p.set_phase(phase);
    }
}

/// Promotes an already validated result root.
///
/// Every artifact is read once, into the pool, before the store's objects
/// change at all; then, under every object's lock, objects that are new are
/// built from their manifests and published together. A failure anywhere
/// removes the pool entries this promotion created (see [`Promotion`]).
/// Cancelled through `options.progress` ([`Progress::cancel`]) before its
/// objects are published, it fails so, with
/// [`fruix_core::Error::Cancelled`].
pub fn promote_validated(
    root: &ResultRoot,
    store: &Store,
    options: &PromoteOptions<'_>,
) -> Result<PromotionReport> {
    let m = root.metadata();
    // Special bits an import recorded instead of creating them on disk.
    let special = special_modes::read(root.path())?;
    let promotion = store.begin()?;
    // The source object it was built from, its builder's closure and its
    // development profile, when they name objects of this store, must be
    // there to be referenced (the GC lock, held from here, keeps them
    // until the registration).
    let source_refs = in_this_store(store, &m.source_store.path, |object| Error::SourceGone {
        object,
    })?;
    let mut around_refs = Vec::new();
    let around = [
        ("closure", &m.closure_path),
        ("development profile", &m.development_profile_path),
    ];
    for (field, path) in around {
        if let Some(path) = path {
            around_refs.extend(in_this_store(store, path, |object| Error::ReferenceGone {
                object,
                field,
            })?);
        }
    }
    // Artifacts are read concurrently so that one tree's directory listing
    // overlaps another's reading.
    let ingested = m
        .artifacts
        .par_iter()
        .enumerate()
        .map(|(i, a)| ingest_artifact(&promotion, root, i, a, &special, options.progress))
        .collect::<Result<Vec<_>>>()?;
    set_phase(options.progress, "checking or building the objects");
    let mut planned: BTreeMap<String, Planned> = m
        .artifacts
        .iter()
        .zip(ingested)
        .map(|(a, ingested)| plan_artifact(store.path(), m, a, ingested))
        .collect::<Result<_>>()?;
    let reports: BTreeMap<String, ArtifactReport> = planned
        .iter()
        .map(|(n, p)| (n.clone(), p.report.clone()))
        .collect();
    let bundle = plan_bundle(store.path(), m, &reports)?;
    // Cancelled once read (or while waiting for the locks, or building the
    // objects), nothing is published: the promotion fails, as any does,
    // removing what it made. Once publishing starts, it finishes.
    check_cancelled(options.progress)?;
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
    check_cancelled(options.progress)?;
    let references = references_text(store_references(&[&m.source_store.path]));
    let mut temps = planned
        .par_iter_mut()
        .map(|(_, p)| prepare_artifact(store, &references, p))
        .collect::<Result<Vec<_>>>()?;
    let some_existed = temps.iter().any(Option::is_none);
    // The bundle likewise (an unregistered one that names an artifact
    // replaced above fails its check, and is replaced too).
    let result_new = !check_existing(store, &store.path().join(&bundle.name))?;
    if result_new {
        temps.push(prepare_bundle(store, &bundle, &reports)?);
    }
    // The bundle's root is made before anything is published, under
    // temporary names: a state directory (or the link's directory) that
    // cannot take it, full, fails the promotion with nothing published.
    // Renaming them into place once the objects are registered takes no
    // room.
    let pending_root = options
        .out_link
        .as_ref()
        .map(|o| {
            let bundle_path = store.path().join(&bundle.name);
            crate::roots::prepare_indirect(o.state_dir, o.link, &bundle_path)
        })
        .transpose()?;
    // The point of no return: a cancellation from now on is too late.
    if let Some(progress) = options.progress {
        progress.commit()?;
    }
    let published = store.publish(temps.into_iter().flatten().collect())?;
    // Valid once registered: every artifact (one that existed may have been
    // published by a promotion killed before registering it), then the
    // bundle, in one transaction, still under every object's lock.
    let registered = {
        // Objects of this store, registered (checked above, under the same
        // GC lock), as the objects' `.references` name them.
        let mut registrations: Vec<Registration> = planned
            .values()
            .map(|p| Registration {
                record: register::artifact(&p.name, &p.identity, p.size, Some(&m.run_id)),
                references: source_refs.clone(),
            })
            .collect();
        let mut bundle_refs: Vec<String> = planned.values().map(|p| p.name.clone()).collect();
        bundle_refs.extend(source_refs);
        bundle_refs.extend(around_refs);
        bundle_refs.sort_unstable();
        bundle_refs.dedup();
        let bundle_size = object_files_size(
            &store.path().join(&bundle.name),
            &[RESULT_METADATA_FILE, REFERENCES_FILE],
        );
        registrations.push(Registration {
            record: register::bundle(&bundle.name, m, bundle_size),
            references: bundle_refs,
        });
        store.db().register(&registrations)
    };
    if let Err(e) = registered {
        // Published under these locks but never valid (the registry full):
        // taken back, as a failed promotion leaves no object.
        store.unpublish(&published);
        return Err(e);
    }
    // Still under the GC lock: the bundle is rooted before any collection
    // can see it unrooted.
    let out_link = pending_root
        .map(crate::roots::PendingRoot::finish)
        .transpose()?;
    promotion.succeed(some_existed);
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
        out_link,
        sha_kernel: probe("kernel", &["boot/kernel/kernel"]),
        sha_loader: probe("bootloader", &["boot/loader", "boot/loader.efi"]),
        sha_param: probe("headers", &["usr/include/sys/param.h"]),
        order: m.artifacts.iter().map(|a| a.name.clone()).collect(),
        artifacts,
    })
}
