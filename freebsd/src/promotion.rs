//! Writing `promotion.scm` for a finished build: probes, tree signatures, and
//! metadata taken from the request.
//!
//! Executors that lay out `artifacts/<name>/` themselves (the build driver,
//! the jail plugin, external executors whose `collect` wrote no
//! `promotion.scm`) use [`write_promotion`], so that the metadata always
//! agrees with the request.

use std::path::Path;

use fruix_core::error::Problem;
use fruix_core::executor::BuildRequest;
use fruix_core::manifest::tree_signature;
use fruix_core::promotion::{
    base_probes, check_name, ArtifactEntry, PromotionMetadata, PROMOTION_FILE,
};
use fruix_core::{result_root, Error, Result};

use crate::probe::probe_in;

/// Who built the artifacts, as recorded in `promotion.scm`.
#[derive(Debug, Clone, Copy)]
pub struct Builder<'a> {
    /// The executor's name, written as `executor`: 1 to 64 characters from
    /// `A-Z a-z 0-9 . _ + -` starting with neither `.` nor `-`
    /// ([`fruix_core::promotion::check_name`]); [`write_promotion`] refuses
    /// any other, as validation of the result root would.
    pub executor: &'a str,
    /// The executor's version, written verbatim as `executor-version`.
    pub executor_version: &'a str,
    /// The host name of the machine (or jail, or guest) that built.
    pub host_name: &'a str,
}

/// The metadata of `request` built by `builder`, listing `artifacts`.
pub fn promotion_metadata(
    request: &BuildRequest,
    builder: Builder<'_>,
    artifacts: Vec<ArtifactEntry>,
) -> PromotionMetadata {
    PromotionMetadata {
        executor: builder.executor.to_string(),
        executor_version: builder.executor_version.to_string(),
        run_id: request.run_id.clone(),
        guest_host_name: builder.host_name.to_string(),
        closure_path: None,
        development_profile_path: None,
        freebsd_base: request.freebsd_base.clone(),
        source_store: request.source.clone(),
        build_policy: request.policy.clone(),
        artifacts,
    }
}

/// Signs `root/artifacts/<name>` for every artifact `request` asks for and
/// writes `root/promotion.scm` from the request, returning the metadata.
///
/// Blocking (it hashes every file); call it from a blocking task. A
/// requested artifact that is not a base artifact has no probe to choose and
/// is refused: its executor must write `promotion.scm` itself. A requested
/// artifact missing from `artifacts/` refuses the root, naming every one
/// missing ([`Error::InvalidResultRoot`]). Metadata the result root's
/// validation would refuse is never written: a bad executor name is
/// refused before any file is read, anything else unreadable before
/// `promotion.scm` is written ([`Error::InvalidMetadata`] naming the field).
pub fn write_promotion(
    root: &Path,
    request: &BuildRequest,
    builder: Builder<'_>,
) -> Result<PromotionMetadata> {
    let file = root.join(PROMOTION_FILE);
    check_name("executor", builder.executor).map_err(|message| Error::InvalidMetadata {
        path: file.clone(),
        field: "executor".into(),
        line: None,
        message,
    })?;
    check_collected(root, request)?;
    let mut artifacts = Vec::with_capacity(request.artifacts.len());
    for name in &request.artifacts {
        if base_probes(name).is_none() {
            return Err(Error::InvalidRequest {
                message: format!(
                    "artifact `{name}` is not a base artifact, so fruix cannot choose its probe; the executor must write promotion.scm itself"
                ),
            });
        }
        let path = format!("artifacts/{name}");
        let dir = root.join(&path);
        artifacts.push(ArtifactEntry {
            name: name.clone(),
            probe: probe_in(name, &dir),
            tree_signature: Some(tree_signature(&dir)?),
            path,
        });
    }
    let metadata = promotion_metadata(request, builder, artifacts);
    // Read back as validation will read it, before it is written.
    PromotionMetadata::parse(&file, &metadata.to_scheme())?;
    metadata.write_to(root)?;
    Ok(metadata)
}

/// Refuses the result root `root` when an artifact `request` asks for is
/// not a directory at `artifacts/NAME`: an [`Error::InvalidResultRoot`]
/// naming every one missing (the first
/// [`LISTED_PROBLEMS`](fruix_core::result_root::LISTED_PROBLEMS) of them,
/// then how many more).
fn check_collected(root: &Path, request: &BuildRequest) -> Result<()> {
    let problems: Vec<Problem> = request
        .artifacts
        .iter()
        .map(|name| (name, root.join("artifacts").join(name)))
        .filter(|(_, dir)| !dir.is_dir())
        .map(|(name, dir)| Problem {
            path: dir,
            field: None,
            line: None,
            message: format!(
                "is missing: collect did not put the requested artifact {name} there (each requested artifact goes at artifacts/NAME)"
            ),
        })
        .collect();
    match problems.is_empty() {
        true => Ok(()),
        false => Err(result_root::invalid(root, problems)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::executor::base_artifacts;
    use fruix_core::result_root::validate;
    use fruix_core::testing::write_sample_result_root;

    fn request(artifacts: Vec<String>) -> BuildRequest {
        fruix_core::testing::sample_request("x", artifacts)
    }

    const BUILDER: Builder<'static> = Builder {
        executor: "ext",
        executor_version: "2.1",
        host_name: "builder-9",
    };

    /// A result root whose artifacts are collected and that has no
    /// `promotion.scm` yet (in a temporary directory, kept alive by the
    /// first value).
    fn collected_root() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write_sample_result_root(&root, "x", "19700101T000000Z", false).unwrap();
        std::fs::remove_file(root.join("promotion.scm")).unwrap();
        (dir, root)
    }

    #[test]
    fn written_metadata_validates_and_follows_the_request() {
        let (_dir, root) = collected_root();
        let m = write_promotion(&root, &request(base_artifacts()), BUILDER).unwrap();
        let validated = validate(&root).unwrap();
        assert_eq!(validated.metadata(), &m);
        assert_eq!(
            (m.executor.as_str(), m.run_id.as_str()),
            ("ext", "20260405T213444Z")
        );
        assert_eq!(m.guest_host_name, "builder-9");
        assert!(m.artifacts.iter().all(|a| a.tree_signature.is_some()));
    }

    #[test]
    fn a_bad_executor_name_is_refused_before_anything_is_written() {
        let long = "e".repeat(65);
        for bad in ["", "-ext", ".ext", "ext/../x", "ext name", long.as_str()] {
            let (_dir, root) = collected_root();
            let builder = Builder {
                executor: bad,
                ..BUILDER
            };
            let e = write_promotion(&root, &request(base_artifacts()), builder).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidMetadata { field, .. } if field == "executor"),
                "{bad:?}: {e}"
            );
            assert!(!root.join("promotion.scm").exists(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_validation_would_refuse_is_never_written() {
        let (_dir, root) = collected_root();
        let mut request = request(base_artifacts());
        request.run_id = "run 1".into();
        let e = write_promotion(&root, &request, BUILDER).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidMetadata { field, .. } if field == "run-id"),
            "{e}"
        );
        assert!(!root.join("promotion.scm").exists());
    }

    /// Regression: `write_promotion` stopped at the first missing artifact
    /// (`artifacts/world: not found`), so the external executor listed
    /// them all in a check of its own. Every missing one is named, in one
    /// typed error.
    #[test]
    fn every_missing_artifact_is_named_in_one_error() {
        let (_dir, root) = collected_root();
        for gone in ["kernel", "bootloader"] {
            std::fs::remove_dir_all(root.join("artifacts").join(gone)).unwrap();
        }
        let e = write_promotion(&root, &request(base_artifacts()), BUILDER).unwrap_err();
        let Error::InvalidResultRoot { problems, .. } = &e else {
            panic!("{e:?}")
        };
        let missing: Vec<_> = problems.iter().map(|p| p.path.clone()).collect();
        assert_eq!(
            missing,
            ["kernel", "bootloader"].map(|a| root.join("artifacts").join(a)),
            "{e}"
        );
        for gone in ["kernel", "bootloader"] {
            let said = format!(
                "artifacts/{gone}: is missing: collect did not put the requested artifact {gone} there"
            );
            assert!(e.to_string().contains(&said), "{said}: {e}");
        }
        assert!(!root.join("promotion.scm").exists());
    }

    #[test]
    fn an_artifact_fruix_cannot_probe_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("artifacts/lib32")).unwrap();
        let e = write_promotion(dir.path(), &request(vec!["lib32".into()]), BUILDER).unwrap_err();
        assert!(matches!(e, Error::InvalidRequest { .. }), "{e}");
        assert!(
            e.to_string().contains("must write promotion.scm itself"),
            "{e}"
        );
    }
}
