//! From build options to a [`BuildRequest`]: the source tree checked, its
//! FreeBSD version and branch, the TARGET of a TARGET_ARCH, the default job
//! count. `fruix build` and every matrix cell build their requests here; the
//! FreeBSD rules themselves are [`fruix_freebsd::source`]'s.
//!
//! ```
//! use fruix_matrix::request::{branch_of, target_of};
//! assert_eq!(branch_of("14.2-RELEASE"), "releng/14.2");
//! assert_eq!(target_of("aarch64"), "arm64");
//! ```

use std::path::{Path, PathBuf};

pub use fruix_core::executor::default_jobs;
use fruix_core::executor::{base_artifacts, BuildRequest};
use fruix_core::promotion::{BuildPolicy, FreebsdBase, SourceStore};
use fruix_freebsd::source::check_source_tree;
pub use fruix_freebsd::source::{branch_of, target_of};
use fruix_promote::verify::gone_object;

use crate::{Error, Result};

/// What a build request is made of, but for its run id.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    /// The FreeBSD base, with `target` and `target_arch` set ([`with_arch`]).
    pub freebsd_base: FreebsdBase,
    /// The source the build reads: a source object's store path, or a directory
    /// (on this host, or with the matrix's `remote-source` on the build
    /// machine), and the commit to record.
    pub source: SourceStore,
    /// How to build: the kernel configuration, make flags, make jobs and
    /// `SOURCE_DATE_EPOCH`.
    pub policy: BuildPolicy,
    /// No job count was given: `policy.jobs` is this host's, and a build on
    /// another machine uses that machine's CPU count
    /// ([`BuildRequest::jobs_per_machine`]).
    pub jobs_per_machine: bool,
}

impl BuildOptions {
    /// The request for run `run_id`, building the four base artifacts.
    pub fn request(&self, run_id: String) -> BuildRequest {
        BuildRequest {
            source_dir: None,
            run_id,
            freebsd_base: self.freebsd_base.clone(),
            source: self.source.clone(),
            policy: self.policy.clone(),
            jobs_per_machine: self.jobs_per_machine,
            artifacts: base_artifacts(),
        }
    }
}

/// The FreeBSD base built from the source tree at `source`: its name and
/// version from `version` or `sys/conf/newvers.sh`, its branch from
/// `branch` or the version. `target` and `target_arch` are left empty, to
/// be set per build by [`with_arch`]. `give_version` tells the user how to
/// give the version when `newvers.sh` cannot be read (`pass
/// --freebsd-version`).
pub fn freebsd_base(
    source: &Path,
    version: Option<&str>,
    branch: Option<&str>,
    give_version: &str,
) -> Result<FreebsdBase> {
    let (name, version) = match version {
        Some(v) => ("FreeBSD".to_string(), v.to_string()),
        None => read_newvers(source, give_version)?,
    };
    let branch = branch.map_or_else(|| branch_of(&version), str::to_string);
    if branch.is_empty() {
        return Err(Error::UnknownVersion {
            path: source.to_path_buf(),
            message: format!(
                "FreeBSD version {} names no branch: give REVISION-BRANCH (15.0-STABLE, 14.2-RELEASE), or the branch itself (--freebsd-branch, a matrix file's freebsd-branch)",
                fruix_core::escape::quoted(&version)
            ),
        });
    }
    Ok(FreebsdBase {
        name,
        version,
        branch,
        target: String::new(),
        target_arch: String::new(),
    })
}

/// `base` for `target_arch`, with `target` or else the TARGET of that arch.
pub fn with_arch(base: &FreebsdBase, target_arch: &str, target: Option<&str>) -> FreebsdBase {
    FreebsdBase {
        target: target.unwrap_or_else(|| target_of(target_arch)).to_string(),
        target_arch: target_arch.to_string(),
        ..base.clone()
    }
}

/// The canonical path of `source`, if it is a FreeBSD source tree
/// ([`check_source_tree`]).
pub fn check_source(source: &Path) -> Result<PathBuf> {
    let invalid = |path: &Path, message: String| Error::InvalidSource {
        path: path.to_path_buf(),
        message,
    };
    // A path that leads nowhere is the caller's; a failure of this host
    // (too many open files, no memory) is not.
    let dir = std::fs::canonicalize(source).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EACCES | libc::ENAMETOOLONG) => {
            invalid(
                source,
                format!(
                    "source {}: {e}; give an existing FreeBSD source tree",
                    fruix_core::escape::path(source)
                ),
            )
        }
        _ => Error::Core(fruix_core::Error::io("resolve", source, e)),
    })?;
    // Its own words: no build request is at fault here (`source add`). Only
    // the tree's own faults are the caller's: an I/O failure of this host
    // while reading it (too many open files, an I/O error) stays a system
    // failure.
    check_source_tree(&dir).map_err(|e| match e {
        fruix_core::Error::InvalidRequest { message } => invalid(&dir, message),
        e if e.failure() == fruix_core::Failure::System => Error::Core(e),
        e => invalid(&dir, e.to_string()),
    })?;
    Ok(dir)
}

/// [`check_source`] of a source given for a build into the store at
/// `store`: one naming an object the store registers but whose directory
/// is gone is the store's inconsistency, said as every command that names
/// such an object says it ([`gone_object`]'s
/// [`fruix_promote::Error::Inconsistent`], in [`Error::Source`]), not a
/// missing tree. The store is opened only for a refused source that is
/// missing where an object of it would be, never for any other mistake (a
/// misspelt directory is refused at once, even while the store is locked).
pub fn check_source_in_store(source: &Path, store: &Path) -> Result<PathBuf> {
    check_source(source).map_err(|e| match gone_object(store, source) {
        Some(gone) => Error::Source(Box::new(gone)),
        None => e,
    })
}

/// The FreeBSD name and version (`REVISION-BRANCH`) the source's
/// `sys/conf/newvers.sh` declares; the error ends with `give_version`.
pub fn read_newvers(source: &Path, give_version: &str) -> Result<(String, String)> {
    let newvers =
        fruix_freebsd::source::read_newvers(source).map_err(|e| Error::UnknownVersion {
            path: source.to_path_buf(),
            message: format!(
                "cannot tell the FreeBSD version of {}: {e}; {give_version}",
                fruix_core::escape::path(source)
            ),
        })?;
    Ok((newvers.name, newvers.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVE: &str = "pass --freebsd-version";

    fn tree(makefile: &str, newvers: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Makefile"), makefile).unwrap();
        if let Some(newvers) = newvers {
            std::fs::create_dir_all(dir.path().join("sys/conf")).unwrap();
            std::fs::write(dir.path().join("sys/conf/newvers.sh"), newvers).unwrap();
        }
        dir
    }

    #[test]
    fn a_missing_source_is_named_escaped() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"evil\x1b[31m\nforged=line\xff");
        let e = check_source(&dir.path().join(name))
            .unwrap_err()
            .to_string();
        assert!(e.contains("evil\\033[31m\\nforged=line\\377: "), "{e}");
    }

    #[test]
    fn the_version_comes_from_newvers_unless_given() {
        let src = tree(
            "buildworld:\n",
            Some("TYPE=\"FreeBSD\"\nREVISION=\"15.0\"\nBRANCH=\"STABLE\"\n"),
        );
        let base = freebsd_base(src.path(), None, None, GIVE).unwrap();
        assert_eq!(
            (
                base.name.as_str(),
                base.version.as_str(),
                base.branch.as_str()
            ),
            ("FreeBSD", "15.0-STABLE", "stable/15")
        );
        let base = freebsd_base(src.path(), Some("14.2-RELEASE"), Some("mine"), GIVE).unwrap();
        // Regression: a version without a branch recorded the branch "".
        let e = freebsd_base(src.path(), Some("bogus"), None, GIVE).unwrap_err();
        assert!(matches!(e, Error::UnknownVersion { .. }), "{e:?}");
        assert!(e.to_string().contains("\"bogus\" names no branch"), "{e}");
        let mine = freebsd_base(src.path(), Some("bogus"), Some("mine"), GIVE).unwrap();
        assert_eq!(mine.branch, "mine");
        assert_eq!(
            (base.version.as_str(), base.branch.as_str()),
            ("14.2-RELEASE", "mine")
        );
        let arm = with_arch(&base, "aarch64", None);
        assert_eq!(
            (arm.target.as_str(), arm.target_arch.as_str()),
            ("arm64", "aarch64")
        );
        assert_eq!(with_arch(&base, "aarch64", Some("x")).target, "x");
        let bare = tree("buildworld:\n", None);
        let e = freebsd_base(bare.path(), None, None, GIVE).unwrap_err();
        assert!(matches!(e, Error::UnknownVersion { .. }), "{e:?}");
        assert!(e.to_string().contains("pass --freebsd-version"), "{e}");
    }

    #[test]
    fn a_source_must_be_a_tree_that_knows_buildworld() {
        let src = tree("buildworld:\n", None);
        assert_eq!(
            check_source(src.path()).unwrap(),
            src.path().canonicalize().unwrap()
        );
        let other = tree("all:\n", None);
        let e = check_source(other.path()).unwrap_err();
        assert!(e.to_string().contains("does not mention buildworld"), "{e}");
        // No build request is at fault (`source add` said there was).
        assert!(!e.to_string().contains("build request"), "{e}");
        let e = check_source(&src.path().join("missing")).unwrap_err();
        assert!(matches!(e, Error::InvalidSource { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("give an existing FreeBSD source tree"),
            "{e}"
        );
        let e = check_source(&src.path().join("Makefile")).unwrap_err();
        assert!(matches!(e, Error::InvalidSource { .. }), "{e:?}");
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
}
