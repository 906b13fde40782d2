//! Writing `promotion.scm` for artifact trees an executor collected into a
//! result root: probes, tree signatures, and metadata taken from the request.
//!
//! Executors that lay out `artifacts/<name>/` themselves (the build driver,
//! external executors whose `collect` wrote no `promotion.scm`, plugins) use
//! this so that the metadata always agrees with the request.

use std::path::Path;

use crate::error::{Error, Result};
use crate::executor::BuildRequest;
use crate::manifest::tree_signature;
use crate::promotion::{base_probes, ArtifactEntry, PromotionMetadata};

/// The probe of artifact `name` in `dir`: the first of the core's allowed
/// probes that is a regular file there, else the first allowed one
/// (validation then reports it missing). Empty for non-base artifacts.
pub fn probe_for(name: &str, dir: &Path) -> String {
    let probes = base_probes(name).unwrap_or_default();
    probes
        .iter()
        .find(|p| dir.join(p).symlink_metadata().is_ok_and(|m| m.is_file()))
        .or(probes.first())
        .map(|p| p.to_string())
        .unwrap_or_default()
}

/// This machine's host name.
pub fn host_name() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(Error::system(format!(
            "cannot read this machine's host name: {}",
            std::io::Error::last_os_error()
        )));
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Who built the artifacts, as recorded in `promotion.scm`.
#[derive(Debug, Clone, Copy)]
pub struct Builder<'a> {
    pub executor: &'a str,
    pub executor_version: &'a str,
    /// The host name of the machine (or jail, or guest) that built.
    pub host_name: &'a str,
}

/// Signs `root/artifacts/<name>` for every artifact `request` asks for and
/// writes `root/promotion.scm` from the request, returning the metadata.
///
/// Blocking (it hashes every file); call it from a blocking task. A
/// requested artifact that is not a base artifact has no probe to choose and
/// is refused: its executor must write `promotion.scm` itself.
pub fn write_promotion(
    root: &Path,
    request: &BuildRequest,
    builder: Builder<'_>,
) -> Result<PromotionMetadata> {
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
        if !dir.is_dir() {
            return Err(Error::NotFound {
                path: dir,
                hint: format!("the executor did not collect the requested artifact `{name}`"),
            });
        }
        artifacts.push(ArtifactEntry {
            name: name.clone(),
            probe: probe_for(name, &dir),
            tree_signature: Some(tree_signature(&dir)?),
            path,
        });
    }
    let metadata = PromotionMetadata {
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
    };
    metadata.write_to(root)?;
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::base_artifacts;
    use crate::result_root::validate;
    use crate::testing::{sample_metadata, write_sample_result_root};

    fn request(artifacts: Vec<String>) -> BuildRequest {
        let m = sample_metadata("x", "20260405T213444Z");
        BuildRequest {
            run_id: m.run_id,
            freebsd_base: m.freebsd_base,
            source: m.source_store,
            policy: m.build_policy,
            artifacts,
        }
    }

    #[test]
    fn bootloader_probe_prefers_loader_then_loader_efi() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("boot")).unwrap();
        assert_eq!(probe_for("bootloader", dir.path()), "boot/loader");
        std::fs::write(dir.path().join("boot/loader.efi"), "").unwrap();
        assert_eq!(probe_for("bootloader", dir.path()), "boot/loader.efi");
        std::fs::write(dir.path().join("boot/loader"), "").unwrap();
        assert_eq!(probe_for("bootloader", dir.path()), "boot/loader");
    }

    #[test]
    fn host_name_is_not_empty() {
        assert!(!host_name().unwrap().is_empty());
    }

    #[test]
    fn written_metadata_validates_and_follows_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write_sample_result_root(&root, "x", "19700101T000000Z", false).unwrap();
        std::fs::remove_file(root.join("promotion.scm")).unwrap();
        let builder = Builder {
            executor: "ext",
            executor_version: "2.1",
            host_name: "builder-9",
        };
        let m = write_promotion(&root, &request(base_artifacts()), builder).unwrap();
        let validated = validate(&root).unwrap();
        assert_eq!(validated.metadata(), &m);
        assert_eq!(
            (m.executor.as_str(), m.run_id.as_str()),
            ("ext", "20260405T213444Z")
        );
        assert!(m.artifacts.iter().all(|a| a.tree_signature.is_some()));
    }

    #[test]
    fn a_missing_artifact_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let builder = Builder {
            executor: "ext",
            executor_version: "2.1",
            host_name: "h",
        };
        let e = write_promotion(dir.path(), &request(vec!["kernel".into()]), builder).unwrap_err();
        assert!(
            e.to_string()
                .contains("did not collect the requested artifact `kernel`"),
            "{e}"
        );
        let e = write_promotion(dir.path(), &request(vec!["lib32".into()]), builder).unwrap_err();
        assert!(
            e.to_string().contains("must write promotion.scm itself"),
            "{e}"
        );
    }
}
