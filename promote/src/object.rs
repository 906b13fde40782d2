//! Store objects: identity metadata and names (see [`crate::stage`] for building
//! objects and [`crate::check`] for checking them).
//!
//! An artifact object is named `<hash>-fruix-native-<artifact>-<version>-<executor>`
//! where `<hash>` is the first 160 bits (40 hex digits) of the SHA-256 of its
//! `.fruix-native-build-object.scm`. That file holds exactly what determines the
//! artifact's content: artifact name, executor, FreeBSD base, source store,
//! build policy without `jobs`, the tree signature, and the setuid/setgid/sticky
//! bits stripped in the store. Run-specific facts (run id, host, executor
//! version, times) live only in the result bundle.

use std::path::Path;

use lexpr::Value;
use sha2::{Digest, Sha256};

use fruix_core::promotion::{
    base_value, policy_value_with, read_base, read_policy_with, read_source, source_value,
    BuildPolicy, FreebsdBase, SourceStore,
};
use fruix_core::sexp::{self, field, string_field, Writer};
use fruix_core::TreeSignature;

use crate::error::Result;

/// Head symbol of an artifact object's metadata.
pub const OBJECT_HEAD: &str = "fruix-native-build-object";

/// What determines an artifact object's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    /// The artifact's name in `promotion.scm` (`world`, `kernel`...); it
    /// also names the object (`native-<artifact>`).
    pub artifact: String,
    /// The executor that built it, from `promotion.scm`; the last part of
    /// the object's name.
    pub executor: String,
    /// The FreeBSD base built, from `promotion.scm`; its `version` is in the
    /// object's name.
    pub freebsd_base: FreebsdBase,
    /// The source tree the run built from, as `promotion.scm` records it.
    pub source_store: SourceStore,
    /// The build policy; `jobs` is never part of an identity.
    pub build_policy: BuildPolicy,
    /// The signature of the artifact tree as built, special bits included
    /// (the store's copy lacks them; see `stripped_modes`).
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

    /// Parses an object's metadata file `text` (read from `path`).
    pub fn from_text(path: &Path, text: &str) -> Result<ObjectIdentity> {
        let identity = sexp::read_record(path, text, OBJECT_HEAD, |r| {
            r.format_version(1)?;
            let artifact = r.string("artifact")?;
            let executor = r.string("executor")?;
            let freebsd_base = read_base(r.record("freebsd-base")?)?;
            let source_store = read_source(r.record("source-store")?)?;
            let build_policy = read_policy_with(r.record("build-policy")?, false)?;
            let signature = r.string("tree-signature")?;
            let tree_signature = signature
                .parse()
                .map_err(|m: String| r.invalid("tree-signature", m))?;
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
