//! Store objects: identity metadata, building, and checking.
//!
//! An artifact object is named `<hash>-fruix-native-<artifact>-<version>-<executor>`
//! where `<hash>` is the first 160 bits (40 hex digits) of the SHA-256 of its
//! `.fruix-native-build-object.scm`. That file holds exactly what determines the
//! artifact's content: artifact name, executor, FreeBSD base, source store,
//! build policy without `jobs`, the tree signature, and the setuid/setgid/sticky
//! bits stripped in the store. Run-specific facts (run id, host, executor
//! version, times) live only in the result bundle.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use lexpr::Value;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use fruix_core::error::IoContext;
use fruix_core::manifest::{
    self, diff_entries, path_order, Difference, Entry, EntryKind, ManifestBuilder, Modes,
    WalkOptions, Walked, MANIFEST_HEADER, SPECIAL_BITS,
};
use fruix_core::promotion::{
    base_value, policy_value_with, read_base, read_policy_with, read_source, source_value,
    BuildPolicy, FreebsdBase, SourceStore,
};
use fruix_core::sexp::{self, field, string_field, Writer};
use fruix_core::TreeSignature;

use crate::error::{Error, Result};
use crate::store::{
    is_reserved, set_mode, set_mtime, Store, TempObject, MANIFEST_FILE, OBJECT_METADATA_FILE,
    REFERENCES_FILE, RESERVED_NAMES, STORE_MTIME,
};

/// Head symbol of an artifact object's metadata.
pub const OBJECT_HEAD: &str = "fruix-native-build-object";

/// What determines an artifact object's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    pub artifact: String,
    pub executor: String,
    pub freebsd_base: FreebsdBase,
    pub source_store: SourceStore,
    /// The build policy; `jobs` is never part of an identity.
    pub build_policy: BuildPolicy,
    pub tree_signature: TreeSignature,
    /// Manifest paths whose setuid/setgid/sticky bits the store stripped, with
    /// their canonical modes.
    pub stripped_modes: Vec<(String, u32)>,
}

impl ObjectIdentity {
    /// The metadata file's text; its hash names the object.
    pub fn to_scheme(&self) -> String {
        let mut w = Writer::new(OBJECT_HEAD);
        w.field(field("format-version", [Value::from(1)]));
        w.field(string_field("artifact", &self.artifact));
        w.field(string_field("executor", &self.executor));
        w.field(base_value(&self.freebsd_base));
        w.field(source_value(&self.source_store));
        w.field(policy_value_with(&self.build_policy, false));
        w.field(string_field("tree-signature", self.tree_signature.as_str()));
        if !self.stripped_modes.is_empty() {
            w.list_field(
                "stripped-modes",
                self.stripped_modes.iter().map(|(path, mode)| {
                    field(
                        "mode",
                        [
                            Value::string(path.as_str()),
                            Value::string(format!("{mode:04o}")),
                        ],
                    )
                }),
            );
        }
        w.finish()
    }

    /// Reads an object's metadata file.
    pub fn read(path: &Path) -> Result<ObjectIdentity> {
        let text = fs::read_to_string(path).with_path("read", path)?;
        let identity = sexp::read_record(path, &text, OBJECT_HEAD, |r| {
            let version = r.integer("format-version")?;
            if version != 1 {
                return Err(fruix_core::Error::UnsupportedFormatVersion {
                    path: path.to_path_buf(),
                    version,
                    supported: 1,
                });
            }
            let artifact = r.string("artifact")?;
            let executor = r.string("executor")?;
            let freebsd_base = read_base(r.record("freebsd-base")?)?;
            let source_store = read_source(r.record("source-store")?)?;
            let build_policy = read_policy_with(r.record("build-policy")?, false)?;
            let signature = r.string("tree-signature")?;
            let tree_signature = signature
                .parse()
                .map_err(|m: String| r.error("tree-signature", None, m))?;
            let mut stripped_modes = Vec::new();
            if let Some((line, values)) = r.raw("stripped-modes")? {
                for value in values {
                    let parsed = value.as_cons().and_then(|c| {
                        let items: Vec<&Value> = c.list_iter().collect();
                        match items.as_slice() {
                            [head, p, m] if head.as_symbol() == Some("mode") => Some((
                                p.as_str()?.to_string(),
                                u32::from_str_radix(m.as_str()?, 8).ok()?,
                            )),
                            _ => None,
                        }
                    });
                    stripped_modes.push(parsed.ok_or_else(|| {
                        r.error(
                            "stripped-modes",
                            Some(line),
                            format!("expected (mode \"PATH\" \"MODE\"), found {value}"),
                        )
                    })?);
                }
            }
            Ok(ObjectIdentity {
                artifact,
                executor,
                freebsd_base,
                source_store,
                build_policy,
                tree_signature,
                stripped_modes,
            })
        })?;
        Ok(identity)
    }

    /// The object's store name.
    pub fn store_name(&self) -> String {
        store_name(
            &object_hash(&self.to_scheme()),
            &format!("native-{}", self.artifact),
            &self.freebsd_base.version,
            &self.executor,
        )
    }
}

/// The first 160 bits of the SHA-256 of `text`, as 40 hex digits.
pub fn object_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..20])
}

/// `<hash>-fruix-<kind>-<version>-<executor>`.
pub fn store_name(hash: &str, kind: &str, version: &str, executor: &str) -> String {
    format!("{hash}-fruix-{kind}-{version}-{executor}")
}

/// The `.references` text: sorted, unique store paths, one per line.
pub fn references_text(paths: impl IntoIterator<Item = String>) -> String {
    let mut paths: Vec<String> = paths.into_iter().collect();
    paths.sort();
    paths.dedup();
    paths.iter().map(|p| format!("{p}\n")).collect()
}

/// The manifest stored in an object: the tree in store modes, plus entries for
/// the object's own metadata files, so that `mtree -f MANIFEST -p OBJECT`
/// checks the whole object and finds nothing extra.
pub fn store_manifest_text(entries: &[Entry], metadata: &str, references: &str) -> String {
    let mut lines: Vec<(Vec<u8>, String)> = entries
        .iter()
        .map(|e| {
            let mut line = String::new();
            e.render(Modes::Store, &mut line);
            (e.path.clone(), line)
        })
        .collect();
    for (name, content) in [
        (OBJECT_METADATA_FILE, metadata),
        (REFERENCES_FILE, references),
    ] {
        lines.push((
            name.as_bytes().to_vec(),
            format!(
                "./{name} type=file mode=0444 size={} sha256digest={}\n",
                content.len(),
                hex::encode(Sha256::digest(content.as_bytes()))
            ),
        ));
    }
    lines.push((
        MANIFEST_FILE.as_bytes().to_vec(),
        format!("./{MANIFEST_FILE} type=file mode=0444\n"),
    ));
    lines.sort_by(|a, b| path_order(&a.0, &b.0));
    let mut text = String::from(MANIFEST_HEADER);
    for (_, line) in lines {
        text.push_str(&line);
    }
    text
}

/// Reads an object's stored manifest, leaving out its metadata entries.
pub fn read_store_manifest(object: &Path) -> Result<Vec<Entry>> {
    let path = object.join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).with_path("read", &path)?;
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty()
            || line.starts_with('#')
            || RESERVED_NAMES
                .iter()
                .any(|n| line.starts_with(&format!("./{n} ")))
        {
            continue;
        }
        let entry =
            manifest::parse_line(line).map_err(|message| fruix_core::Error::InvalidMetadata {
                path: path.clone(),
                field: "manifest".into(),
                line: Some(i + 1),
                message,
            })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// The canonical signature of store-mode `entries` with `stripped` bits restored.
pub fn signature_with_stripped(entries: &[Entry], stripped: &[(String, u32)]) -> TreeSignature {
    let mut builder = ManifestBuilder::new();
    for entry in entries {
        let path = entry.manifest_path();
        match stripped.iter().find(|(p, _)| *p == path) {
            Some((_, mode)) => builder.add(&Entry {
                mode: *mode,
                ..entry.clone()
            }),
            None => builder.add(entry),
        }
    }
    builder.finish().0
}

/// Modes the store strips from `entries` (setuid, setgid, sticky).
pub fn stripped_modes(entries: &[Entry]) -> Vec<(String, u32)> {
    entries
        .iter()
        .filter(|e| e.mode & SPECIAL_BITS != 0)
        .map(|e| (e.manifest_path(), e.mode))
        .collect()
}

/// Builds artifact object `name` from the walked tree in a temporary
/// directory, ready for [`Store::publish`]. The caller holds the object's lock
/// and has checked it does not exist.
pub fn build_artifact_object(
    store: &Store,
    name: &str,
    walked: &[Walked],
    metadata: &str,
    references: &str,
) -> Result<TempObject> {
    let temp = store.temp_dir(name)?;
    let pooled: Vec<Option<PathBuf>> = walked
        .par_iter()
        .map(|w| match w.entry.kind {
            EntryKind::File { .. } => store.pool_insert(w).map(Some),
            _ => Ok(None),
        })
        .collect::<Result<_>>()?;
    let root = temp.path();
    for (w, pooled) in walked.iter().zip(&pooled) {
        if w.entry.path.is_empty() {
            continue;
        }
        let target = root.join(OsStr::from_bytes(&w.entry.path));
        match &w.entry.kind {
            EntryKind::Directory => fs::create_dir(&target).with_path("create", &target)?,
            EntryKind::Symlink { target: link } => {
                symlink(OsStr::from_bytes(link), &target).with_path("create symlink", &target)?
            }
            EntryKind::File { .. } => {
                link_from_pool(pooled.as_deref().expect("files are pooled"), &target)?
            }
        }
    }
    let manifest = store_manifest_text(
        &walked.iter().map(|w| w.entry.clone()).collect::<Vec<_>>(),
        metadata,
        references,
    );
    for (file, content) in [
        (OBJECT_METADATA_FILE, metadata),
        (REFERENCES_FILE, references),
        (MANIFEST_FILE, manifest.as_str()),
    ] {
        let path = root.join(file);
        fs::write(&path, content).with_path("write", &path)?;
        set_mode(&path, 0o444)?;
        set_mtime(&path)?;
    }
    for w in walked.iter().rev().filter(|w| !w.entry.path.is_empty()) {
        let path = root.join(OsStr::from_bytes(&w.entry.path));
        match w.entry.kind {
            EntryKind::Directory => {
                set_mode(&path, 0o555)?;
                set_mtime(&path)?;
            }
            EntryKind::Symlink { .. } => set_mtime(&path)?,
            EntryKind::File { .. } => {}
        }
    }
    Ok(temp)
}

fn link_from_pool(pooled: &Path, target: &Path) -> Result<()> {
    match fs::hard_link(pooled, target) {
        Ok(()) => Ok(()),
        // Too many links to one pool inode: keep a private copy instead.
        Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {
            fs::copy(pooled, target).with_path("copy", target)?;
            let mode = fs::metadata(pooled)
                .with_path("inspect", pooled)?
                .permissions();
            fs::set_permissions(target, mode).with_path("set mode of", target)?;
            set_mtime(target)
        }
        Err(e) => Err(fruix_core::Error::io("link from the store pool", target, e).into()),
    }
}

/// Walks an object's tree (metadata files left out), with or without digests.
pub fn walk_object(
    object: &Path,
    digests: bool,
    progress: Option<&manifest::Progress>,
) -> Result<Vec<(Entry, i64)>> {
    let mut out = Vec::new();
    manifest::walk(
        object,
        &WalkOptions {
            skip_top_level: &RESERVED_NAMES,
            progress,
            skip_digests: !digests,
            extra_modes: None,
        },
        |w| {
            use std::os::unix::fs::MetadataExt;
            out.push((w.entry.clone(), w.metadata.mtime()));
            Ok(())
        },
    )?;
    Ok(out)
}

/// Checks an object against its own metadata and manifest. `full` re-hashes
/// every file; otherwise types, sizes, modes, symlink targets and timestamps
/// are compared (a write to a file changes its timestamp). Returns the
/// differences found; inconsistent metadata is an error.
pub fn check_object(
    object: &Path,
    full: bool,
    progress: Option<&manifest::Progress>,
) -> Result<(ObjectIdentity, Vec<Difference>)> {
    let identity = ObjectIdentity::read(&object.join(OBJECT_METADATA_FILE))?;
    let name = object
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if identity.store_name() != name {
        return Err(Error::Inconsistent {
            object: object.to_path_buf(),
            message: format!(
                "its metadata hashes to {}, not to its name",
                identity.store_name()
            ),
        });
    }
    let mut expected = read_store_manifest(object)?;
    if signature_with_stripped(&expected, &identity.stripped_modes) != identity.tree_signature {
        return Err(Error::Inconsistent {
            object: object.to_path_buf(),
            message: "its manifest does not match its tree signature".into(),
        });
    }
    let walked = walk_object(object, full, progress)?;
    let mut differences = Vec::new();
    let actual: Vec<Entry> = walked
        .iter()
        .map(|(entry, mtime)| {
            if *mtime != STORE_MTIME && matches!(entry.kind, EntryKind::File { .. }) {
                differences.push(Difference::Modified {
                    path: entry.manifest_path(),
                    what: vec![format!("mtime {mtime} (content may have been changed)")],
                });
            }
            entry.clone()
        })
        .collect();
    if !full {
        for e in &mut expected {
            if let EntryKind::File { sha256, .. } = &mut e.kind {
                *sha256 = [0; 32];
            }
        }
    }
    let mut found = diff_entries(&expected, &actual, Modes::Store);
    found.append(&mut differences);
    found.sort_by(|a, b| a.path().cmp(b.path()));
    found.dedup();
    Ok((identity, found))
}

/// True when `entries` hold one of the reserved metadata names at the top.
pub fn has_reserved_name(entries: &[Walked]) -> Option<&Walked> {
    entries.iter().find(|w| is_reserved(&w.entry))
}
