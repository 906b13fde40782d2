//! What to build: the build request every executor gets.

use crate::error::{Error, Result};
use crate::promotion::{
    check_name, source_date_epoch_range, BuildPolicy, FreebsdBase, SourceStore,
    MAX_SOURCE_DATE_EPOCH,
};

/// The most make jobs a build takes (`make -jN`): `fruix build --jobs` and
/// a matrix file's `jobs` refuse more.
pub const MAX_JOBS: u32 = 4096;

/// The number of make jobs when none is given: the number of CPUs this
/// process may use.
pub fn default_jobs() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// What to build. Carries everything `promotion.scm` needs from the caller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildRequest {
    /// The run id (a UTC timestamp like `20260405T213444Z`).
    pub run_id: String,
    /// The FreeBSD base to build, with `target` and `target_arch` set
    /// (they become `TARGET` and `TARGET_ARCH` of the make steps).
    pub freebsd_base: FreebsdBase,
    /// The source tree: what the artifacts' identity names (a source
    /// object's store path, or a path on the machine that builds).
    pub source: SourceStore,
    /// Where the source tree is on the machine that builds, when not at
    /// `source.path` (a guest's copy of a source object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_dir: Option<String>,
    /// How to build: jobs, kernel configuration, make flags,
    /// `SOURCE_DATE_EPOCH`.
    pub policy: BuildPolicy,
    /// The caller gave no job count: `policy.jobs` is this host's CPU
    /// count, and an executor that builds on another machine uses that
    /// machine's instead ([`BuildRequest::with_jobs`]). `promotion.scm`
    /// records the count the build used.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub jobs_per_machine: bool,
    /// The artifacts requested, in order (usually the base four).
    pub artifacts: Vec<String>,
}

impl BuildRequest {
    /// The request as the machine that builds runs it: with `jobs` (that
    /// machine's CPU count) when the caller gave no job count, else as it
    /// is.
    pub fn with_jobs(mut self, jobs: u32) -> BuildRequest {
        if self.jobs_per_machine && jobs > 0 {
            self.policy.jobs = jobs;
            self.jobs_per_machine = false;
        }
        self
    }

    /// Where the builder reads the source tree.
    pub fn source_dir(&self) -> &str {
        self.source_dir.as_deref().unwrap_or(&self.source.path)
    }

    /// Checks the request's names and values before anything runs.
    pub fn check(&self) -> Result<()> {
        let invalid = |message: String| Error::InvalidRequest { message };
        check_name("run id", &self.run_id).map_err(invalid)?;
        check_name("FreeBSD version", &self.freebsd_base.version).map_err(invalid)?;
        check_name("target", &self.freebsd_base.target).map_err(invalid)?;
        check_name("target architecture", &self.freebsd_base.target_arch).map_err(invalid)?;
        if self.artifacts.is_empty() {
            return Err(invalid("no artifact requested".into()));
        }
        for a in &self.artifacts {
            check_name("artifact name", a).map_err(invalid)?;
        }
        if self.policy.jobs == 0 {
            return Err(invalid("jobs must be at least 1".into()));
        }
        if let Some(e) = self.policy.source_date_epoch {
            if !(0..=MAX_SOURCE_DATE_EPOCH).contains(&e) {
                return Err(invalid(source_date_epoch_range(e)));
            }
        }
        if self.policy.kernconf.is_empty() || self.policy.kernconf.contains(['/', ' ']) {
            return Err(invalid(format!(
                "kernconf {} is not a kernel configuration name",
                crate::escape::quoted(&self.policy.kernconf)
            )));
        }
        // What promotion.scm records verbatim is refused now, not after the
        // whole build, when its reader would refuse it.
        let base = &self.freebsd_base;
        let source = &self.source;
        let texts = [
            ("FreeBSD name", Some(&base.name)),
            ("FreeBSD branch", Some(&base.branch)),
            ("source path", Some(&source.path)),
            ("source commit", source.commit.as_ref()),
            ("source directory", self.source_dir.as_ref()),
            ("kernconf", Some(&self.policy.kernconf)),
        ];
        let flags = self
            .policy
            .make_flags
            .iter()
            .map(|f| ("make flag", Some(f)));
        for (what, value) in texts.into_iter().chain(flags) {
            if let Some(value) = value {
                crate::sexp::check_text(what, value).map_err(invalid)?;
            }
        }
        Ok(())
    }
}

/// The four artifacts of the FreeBSD base set, in their usual order.
pub fn base_artifacts() -> Vec<String> {
    crate::promotion::BASE_ARTIFACTS
        .iter()
        .map(|(name, _)| name.to_string())
        .collect()
}
