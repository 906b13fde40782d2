//! Source objects' identity: `<hash>-freebsd-source-<name>`, where `<hash>`
//! is the first 160 bits of the SHA-256 of the object's `.fruix-source.scm`.
//! That file holds what the tree is: its name, the FreeBSD version and
//! branch its `sys/conf/newvers.sh` declares, its tree signature, and, for
//! a git checkout, the commit and whether the worktree was dirty. Where the
//! tree sat (its path, the remote it was cloned from) is left out: two
//! checkouts of the same tree are one source object.

use std::path::Path;

use lexpr::Value;

use fruix_core::promotion::{check_name, check_name_within};
use fruix_core::sexp::{self, field, string_field, Writer};
use fruix_core::TreeSignature;

use crate::error::{Error, Result};
use crate::object::object_hash;

/// Head symbol of a source object's metadata.
pub const SOURCE_HEAD: &str = "fruix-source";
/// The metadata file at the top of a source object.
pub const SOURCE_METADATA_FILE: &str = ".fruix-source.scm";
/// What follows the hash in a source object's name.
pub const SOURCE_INFIX: &str = "-freebsd-source-";

/// The longest name a source object's store name leaves room for: a file
/// name is at most 255 bytes, of which the hash and the infix take the
/// rest.
pub const MAX_SOURCE_NAME_BYTES: usize = 255 - 40 - SOURCE_INFIX.len();

/// Refuses a source object's name its store name could not hold ([`check_name`]'s
/// rule, up to [`MAX_SOURCE_NAME_BYTES`]); the message names it as
/// `what`.
pub fn check_source_name(what: &str, name: &str) -> std::result::Result<(), String> {
    check_name_within(what, name, MAX_SOURCE_NAME_BYTES)
}

/// What a source tree is, besides its content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceFacts {
    /// `default` unless named.
    pub name: String,
    /// `REVISION-BRANCH` from `sys/conf/newvers.sh` (`15.0-STABLE`).
    pub version: String,
    /// The branch that version implies (`stable/15`).
    pub branch: String,
    /// The checked-out commit, for a git checkout.
    pub commit: Option<String>,
    /// Whether the worktree differed from that commit.
    pub dirty: Option<bool>,
}

impl SourceFacts {
    /// The facts of a tree that is no git checkout: its `name`, `version`
    /// and `branch`.
    pub fn without_checkout(name: &str, version: &str, branch: &str) -> Self {
        SourceFacts {
            name: name.into(),
            version: version.into(),
            branch: branch.into(),
            commit: None,
            dirty: None,
        }
    }

    /// Refuses facts a source object must not record: a name its store
    /// name could not hold ([`check_source_name`]) is an invalid request,
    /// and a version that is not a name a build accepts is
    /// [`Error::InvalidFreebsdVersion`].
    pub fn check(&self) -> Result<()> {
        check_source_name("source name", &self.name)
            .map_err(|message| fruix_core::Error::InvalidRequest { message })?;
        check_name("FreeBSD version", &self.version).map_err(|message| {
            Error::InvalidFreebsdVersion {
                version: self.version.clone(),
                message,
            }
        })
    }
}

/// What a source tree is: its facts and its content's signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceIdentity {
    /// What the caller said the tree is.
    #[serde(flatten)]
    pub facts: SourceFacts,
    /// The signature of the tree as read into the store.
    pub tree_signature: TreeSignature,
}

impl SourceIdentity {
    /// The metadata file's text; its hash names the object.
    pub fn to_scheme(&self) -> String {
        let mut w = Writer::new(SOURCE_HEAD);
        w.field(field("format-version", [Value::from(1)]));
        let facts = &self.facts;
        w.field(string_field("name", &facts.name));
        w.field(string_field("version", &facts.version));
        w.field(string_field("branch", &facts.branch));
        w.field(string_field("tree-signature", self.tree_signature.as_str()));
        if let Some(commit) = &facts.commit {
            w.field(string_field("commit", commit));
        }
        if let Some(dirty) = facts.dirty {
            w.field(field("dirty", [Value::Bool(dirty)]));
        }
        w.finish()
    }

    /// Parses a source object's metadata `text` (read from `path`).
    pub fn from_text(path: &Path, text: &str) -> Result<SourceIdentity> {
        Ok(sexp::read_record(path, text, SOURCE_HEAD, |r| {
            r.format_version(1)?;
            let name = r.string("name")?;
            let version = r.string("version")?;
            let branch = r.string("branch")?;
            let signature = r.string("tree-signature")?;
            let tree_signature = signature
                .parse()
                .map_err(|m: String| r.invalid("tree-signature", m))?;
            let commit = r.opt_string("commit")?;
            let dirty = r.opt_bool("dirty")?;
            let facts = SourceFacts {
                name,
                version,
                branch,
                commit,
                dirty,
            };
            Ok(SourceIdentity {
                facts,
                tree_signature,
            })
        })?)
    }

    /// The object's store name.
    pub fn store_name(&self) -> String {
        format!(
            "{}{SOURCE_INFIX}{}",
            object_hash(&self.to_scheme()),
            self.facts.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(commit: Option<&str>, dirty: Option<bool>) -> SourceIdentity {
        SourceIdentity {
            facts: SourceFacts {
                name: "default".into(),
                version: "15.0-STABLE".into(),
                branch: "stable/15".into(),
                commit: commit.map(str::to_string),
                dirty,
            },
            tree_signature: format!("sha256:{}", "ab".repeat(32)).parse().unwrap(),
        }
    }

    #[test]
    fn a_version_must_be_a_name_a_build_accepts() {
        for version in [
            "15.0-STABLE",
            "14.2-RELEASE-p3",
            "15.0-CURRENT",
            &"1".repeat(64),
        ] {
            let mut id = identity(None, None);
            id.facts.version = version.into();
            id.facts.check().unwrap();
            // The reader takes back what was accepted.
            let text = id.to_scheme();
            assert_eq!(
                SourceIdentity::from_text(Path::new("x"), &text).unwrap(),
                id
            );
        }
        let long = "1".repeat(65);
        for version in [
            "",
            "15.0\n(x)",
            "15.0\u{7f}",
            "15.0\u{85}",
            "15.0\u{2066}",
            "-15.0",
            "15.0 STABLE",
            &long,
        ] {
            let mut id = identity(None, None);
            id.facts.version = version.into();
            let e = id.facts.check().unwrap_err();
            assert!(
                matches!(&e, Error::InvalidFreebsdVersion { version: v, .. } if v == version),
                "{version:?}: {e:?}"
            );
            assert_eq!(e.exit_status(), fruix_core::ExitStatus::Usage);
            assert!(
                !e.to_string()
                    .contains(['\n', '\u{7f}', '\u{85}', '\u{2066}']),
                "{e}"
            );
        }
    }

    #[test]
    fn metadata_reads_back_and_names_the_object() {
        for id in [identity(None, None), identity(Some("0123abc"), Some(true))] {
            let text = id.to_scheme();
            assert_eq!(
                SourceIdentity::from_text(Path::new("x"), &text).unwrap(),
                id
            );
            let name = id.store_name();
            assert!(name.ends_with("-freebsd-source-default"), "{name}");
            assert_eq!(name.len(), 40 + SOURCE_INFIX.len() + "default".len());
        }
        assert_ne!(
            identity(Some("a"), Some(false)).store_name(),
            identity(Some("a"), Some(true)).store_name(),
            "a dirty tree is another source"
        );
    }
}
