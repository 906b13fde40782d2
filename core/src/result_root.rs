//! The normalized result root every executor ends with, and its validator.
//!
//! ```text
//! RESULT_ROOT/promotion.scm          the run's metadata
//! RESULT_ROOT/artifacts/world/       installed world (probe bin/sh)
//! RESULT_ROOT/artifacts/kernel/      boot/kernel/... (probe boot/kernel/kernel)
//! RESULT_ROOT/artifacts/headers/     usr/include/... (probe usr/include/sys/param.h)
//! RESULT_ROOT/artifacts/bootloader/  boot/loader, boot/loader.efi, ...
//! RESULT_ROOT/logs/                  build logs (optional)
//! ```
//!
//! [`validate`] checks a result root and reports every problem it finds, each
//! naming the file or field. Every artifact is a tree under `artifacts/` of
//! its own: two at one path, one inside another's tree, and one elsewhere
//! (`logs`) are refused. It never follows a symlink: an artifact path that
//! resolves outside the root through one is refused. A root that still carries
//! the [`INCOMPLETE_MARKER`] (an interrupted or failed run) never validates.
//! A root that cannot be read (permission denied, an I/O error) is not
//! invalid: the failure to read it is the error, a failure of the system
//! ([`Failure::System`]), never one of its problems.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Failure, Problem, Result};
use crate::escape;
use crate::fsutil::resolve_beneath;
use crate::promotion::{base_probes, ArtifactEntry, PromotionMetadata, PROMOTION_FILE};

/// Marker file present in a result root while its run is unfinished.
pub const INCOMPLETE_MARKER: &str = ".fruix-incomplete";

/// A result root that passed [`validate`].
#[derive(Debug, Clone)]
pub struct ResultRoot {
    root: PathBuf,
    metadata: PromotionMetadata,
}

impl ResultRoot {
    /// The result root directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Its `promotion.scm`.
    pub fn metadata(&self) -> &PromotionMetadata {
        &self.metadata
    }

    /// The directory of artifact `name`.
    pub fn artifact_dir(&self, name: &str) -> Option<PathBuf> {
        self.metadata
            .artifact(name)
            .map(|a| self.root.join(&a.path))
    }
}

/// Validates the result root at `root`; on failure the error lists every
/// problem, or is the failure to read it (see [`check`]).
pub fn validate(root: &Path) -> Result<ResultRoot> {
    validate_with(root, false)
}

/// Like [`validate`]; `allow_incomplete` ignores the [`INCOMPLETE_MARKER`]
/// (used by the executor runner just before it removes the marker).
pub fn validate_with(root: &Path, allow_incomplete: bool) -> Result<ResultRoot> {
    let (metadata, problems) = check(root, allow_incomplete)?;
    match metadata {
        Some(metadata) if problems.is_empty() => Ok(ResultRoot {
            root: root.to_path_buf(),
            metadata,
        }),
        _ => Err(invalid(root, problems)),
    }
}

/// How many problems an [`Error::InvalidResultRoot`] lists before saying
/// how many more were found (an `artifacts/` of a build gone wrong may
/// hold thousands of undeclared entries).
pub const LISTED_PROBLEMS: usize = 20;

/// The error of the result root `root` with `problems` (not empty): the
/// first [`LISTED_PROBLEMS`] of them, then one saying how many more.
pub fn invalid(root: &Path, mut problems: Vec<Problem>) -> Error {
    let more = problems.len().saturating_sub(LISTED_PROBLEMS);
    if more > 0 {
        problems.truncate(LISTED_PROBLEMS);
        problems.push(problem(
            PathBuf::new(),
            None,
            format!("and {more} more problems, not listed: fix these, then look again"),
        ));
    }
    Error::InvalidResultRoot {
        root: root.to_path_buf(),
        problems,
    }
}

fn problem(path: impl Into<PathBuf>, field: Option<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        field,
        line: None,
        message: message.into(),
    }
}

fn problem_from_error(e: Error) -> Problem {
    match e {
        Error::InvalidMetadata {
            path,
            field,
            line,
            message,
        } => Problem {
            line,
            ..problem(path, Some(field), message)
        },
        Error::Syntax {
            path,
            line,
            column,
            message,
        } => problem(
            path,
            None,
            format!("syntax error at line {line}, column {column}: {message}"),
        ),
        Error::UnsupportedFormatVersion {
            path,
            version,
            supported,
        } => problem(
            path,
            Some("format-version".into()),
            format!(
                "unsupported format-version {version}; this fruix reads format-version {supported}"
            ),
        ),
        Error::UnsafePath { path, message } => problem(path, None, message),
        Error::MetadataFile { path, problem: p } => problem(path, None, p.to_string()),
        Error::NotFound { path, .. } => problem(path, None, "does not exist"),
        other => problem(PathBuf::new(), None, other.to_string()),
    }
}

/// The problem of an artifact path that did not resolve, for `field`: a
/// path that does not exist is `missing`. A failure to read it is the
/// error ([`of_root`]).
fn unresolved(e: Error, field: Option<String>, missing: String) -> Result<Problem> {
    of_root(e, |e| match e {
        Error::NotFound { path, .. } => problem(path, field, missing),
        e => Problem {
            field,
            ..problem_from_error(e)
        },
    })
}

/// `e`, met checking a result root, as the root's problem (`as_problem`
/// says it), unless it is a failure of the system reading the root
/// ([`Failure::System`]: permission denied, an I/O error), which is
/// returned: the root could not be checked, which says nothing of it. A
/// name too long for the system (`ENAMETOOLONG`) is what the root's
/// metadata declares, and stays its problem.
fn of_root(e: Error, as_problem: impl FnOnce(Error) -> Problem) -> Result<Problem> {
    let declared = matches!(&e, Error::Io { source, .. }
        if source.kind() == std::io::ErrorKind::InvalidFilename);
    match e.failure() {
        Failure::System if !declared => Err(e),
        _ => Ok(as_problem(e)),
    }
}

/// Checks everything and returns the metadata (when readable) with all
/// problems. A failure to read the root (its directory, `promotion.scm`,
/// an artifact's directory or probe) is the error instead (see `of_root`).
pub fn check(
    root: &Path,
    allow_incomplete: bool,
) -> Result<(Option<PromotionMetadata>, Vec<Problem>)> {
    let mut problems = Vec::new();
    match fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            problems.push(problem(
                root,
                None,
                "is not a directory (a symlink or file cannot be a result root)",
            ));
            return Ok((None, problems));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            problems.push(problem(root, None, format!("cannot be read: {e}")));
            return Ok((None, problems));
        }
        Err(e) => return Err(Error::io("inspect", root, e)),
    }
    if !allow_incomplete && root.join(INCOMPLETE_MARKER).symlink_metadata().is_ok() {
        problems.push(problem(
            root.join(INCOMPLETE_MARKER),
            None,
            "the run that wrote this result root did not finish (interrupted or failed); it cannot be promoted: build again",
        ));
    }
    // The read itself refuses anything but a regular file (a FIFO, a device,
    // a symlink swapped in after this check) and a file over the size cap.
    let metadata = match resolve_beneath(root, PROMOTION_FILE) {
        Ok(path) => match PromotionMetadata::read(&path) {
            Ok(m) => Some(m),
            Err(e) => {
                problems.push(of_root(e, problem_from_error)?);
                None
            }
        },
        Err(e) => {
            problems.push(of_root(e, |e| match e {
                Error::NotFound { path, .. } => problem(
                    path,
                    None,
                    "is missing; every result root has a promotion.scm",
                ),
                e => problem_from_error(e),
            })?);
            None
        }
    };
    if let Some(m) = &metadata {
        check_artifacts(root, m, &mut problems)?;
    }
    Ok((metadata, problems))
}

fn check_artifacts(root: &Path, m: &PromotionMetadata, problems: &mut Vec<Problem>) -> Result<()> {
    for a in &m.artifacts {
        let field = |sub: &str| Some(format!("artifacts.{}.{sub}", a.name));
        if let Some(placed) = misplaced(a, m) {
            problems.push(problem(root.join(&a.path), field("path"), placed));
            continue;
        }
        let dir = match resolve_beneath(root, &a.path) {
            Ok(dir) if dir.is_dir() => dir,
            Ok(dir) => {
                problems.push(problem(dir, field("path"), "is not a directory"));
                continue;
            }
            Err(e) => {
                let missing = format!("artifact {} is missing: its tree does not exist", a.name);
                problems.push(unresolved(e, field("path"), missing)?);
                continue;
            }
        };
        if let Some(allowed) = base_probes(&a.name) {
            if !allowed.contains(&a.probe.as_str()) {
                problems.push(problem(
                    root.join(PROMOTION_FILE),
                    field("probe"),
                    format!(
                        "{} is not a probe of the {} artifact; use {}",
                        escape::quoted(&a.probe),
                        a.name,
                        allowed
                            .iter()
                            .map(|p| format!("{p:?}"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ));
                continue;
            }
        }
        match resolve_beneath(&dir, &a.probe) {
            Ok(probe) if probe.is_file() => {}
            Ok(probe) => problems.push(problem(
                probe,
                field("probe"),
                "probe is not a regular file",
            )),
            Err(e) => {
                let missing = format!("probe file of artifact {} is missing", a.name);
                problems.push(unresolved(e, field("probe"), missing)?);
            }
        }
    }
    check_undeclared(root, m, problems)
}

/// What is wrong with where artifact `a` of `m` is, if anything: every
/// artifact is a tree under `artifacts/` (as the layout above shows) of
/// its own, neither another's nor inside another's.
fn misplaced(a: &ArtifactEntry, m: &PromotionMetadata) -> Option<String> {
    if !a.path.starts_with(ARTIFACTS_DIR) {
        return Some(format!(
            "is not under {ARTIFACTS_DIR}; put every artifact's tree there ({ARTIFACTS_DIR}NAME)"
        ));
    }
    // One elsewhere has its own problem, which says enough.
    let mut others = m
        .artifacts
        .iter()
        .filter(|o| o.name != a.name && o.path.starts_with(ARTIFACTS_DIR));
    if let Some(same) = others.clone().find(|o| o.path == a.path) {
        return Some(format!(
            "is also artifact {}'s tree; each artifact has a tree of its own",
            same.name
        ));
    }
    others
        .find(|o| a.path.starts_with(&format!("{}/", o.path)))
        .map(|outer| {
            format!(
                "lies inside artifact {}'s tree; artifact trees must not nest",
                outer.name
            )
        })
}

/// Where every artifact's tree is, relative to the result root.
const ARTIFACTS_DIR: &str = "artifacts/";

/// Directories under `artifacts/` that promotion.scm does not declare:
/// listed through a descriptor (`artifacts` is never followed: one that
/// is no directory is the declared artifacts' problem), one problem each
/// for the first [`MAX_UNDECLARED`], then one counting the rest. A failure
/// to list it is the error ([`Failure::System`]), as for the rest of the
/// root.
fn check_undeclared(root: &Path, m: &PromotionMetadata, problems: &mut Vec<Problem>) -> Result<()> {
    let path = root.join("artifacts");
    let dir = match crate::manifest::open_dir(&path) {
        Ok(dir) => dir,
        Err(e) if e.failure() == Failure::System && !matches!(e, Error::NotFound { .. }) => {
            return Err(e)
        }
        Err(_) => return Ok(()),
    };
    let listing = rustix::fs::Dir::read_from(&dir)
        .map_err(|e| Error::io("read directory", &path, e.into()))?;
    let mut more = 0u64;
    for item in listing {
        let item = item.map_err(|e| Error::io("read directory", &path, e.into()))?;
        let name = item.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let relative = format!("artifacts/{}", String::from_utf8_lossy(name));
        let declared = m
            .artifacts
            .iter()
            .any(|a| a.path == relative || a.path.starts_with(&format!("{relative}/")));
        if declared {
            continue;
        }
        if more > 0 || problems.len() >= MAX_UNDECLARED {
            more += 1;
            continue;
        }
        problems.push(problem(
            path.join(OsStr::from_bytes(name)),
            Some("artifacts".into()),
            "is not declared in promotion.scm; declare it as an artifact or remove it",
        ));
    }
    if more > 0 {
        problems.push(problem(
            path,
            Some("artifacts".into()),
            format!("holds {more} more entries not declared in promotion.scm"),
        ));
    }
    Ok(())
}

/// Undeclared entries of `artifacts/` listed one by one, at most (a build
/// gone wrong may leave millions): the rest are counted.
const MAX_UNDECLARED: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::write_sample_result_root;
    use std::os::unix::fs::symlink;

    fn sample() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_sample_result_root(dir.path(), "local", "20260405T213444Z", false).unwrap();
        dir
    }

    fn problems(root: &Path) -> Vec<Problem> {
        match validate(root) {
            Err(Error::InvalidResultRoot { problems, .. }) => problems,
            other => panic!("expected InvalidResultRoot, got {other:?}"),
        }
    }

    #[test]
    fn a_problem_without_a_path_of_its_own_shows_none() {
        let io = Error::io(
            "inspect",
            "/r/promotion.scm",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        let shown = problem_from_error(io).to_string();
        assert!(
            shown.starts_with("failed to inspect /r/promotion.scm"),
            "{shown}"
        );
        let field = problem("/r", Some("artifacts".into()), "is empty").to_string();
        assert_eq!(field, "/r: field `artifacts`: is empty");
    }

    /// Undeclared entries past [`MAX_UNDECLARED`] are counted in one
    /// problem, not each kept (a build gone wrong may leave millions).
    #[test]
    fn undeclared_entries_past_the_cap_are_counted() {
        let dir = sample();
        for i in 0..MAX_UNDECLARED + 5 {
            fs::write(dir.path().join(format!("artifacts/stray-{i}")), b"").unwrap();
        }
        let Err(Error::InvalidResultRoot { problems, .. }) = check_only(dir.path()) else {
            panic!("refused");
        };
        assert_eq!(problems.len(), MAX_UNDECLARED + 1);
        let last = problems.last().unwrap().to_string();
        assert!(last.contains("holds 5 more entries not declared"), "{last}");
    }

    /// Every problem [`check`] finds, unbounded by [`invalid`]'s listing.
    fn check_only(root: &Path) -> Result<()> {
        match check(root, false)? {
            (_, problems) if problems.is_empty() => Ok(()),
            (_, problems) => Err(Error::InvalidResultRoot {
                root: root.to_path_buf(),
                problems,
            }),
        }
    }

    #[test]
    fn sample_root_validates() {
        let dir = sample();
        let root = validate(dir.path()).unwrap();
        assert_eq!(root.metadata().artifacts.len(), 4);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let dir = sample();
        fs::remove_file(dir.path().join("artifacts/world/bin/sh")).unwrap();
        fs::remove_dir_all(dir.path().join("artifacts/headers")).unwrap();
        fs::create_dir(dir.path().join("artifacts/lib32")).unwrap();
        let found = problems(dir.path());
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found
            .iter()
            .any(|p| p.path.ends_with("artifacts/world/bin/sh") && p.message.contains("probe")));
        assert!(found
            .iter()
            .any(|p| p.path.ends_with("artifacts/headers") && p.message.contains("missing")));
        assert!(found
            .iter()
            .any(|p| p.path.ends_with("artifacts/lib32") && p.message.contains("not declared")));
    }

    /// Regression: every undeclared entry of `artifacts/` was listed, so a
    /// build gone wrong could print thousands of lines.
    #[test]
    fn the_problems_listed_are_bounded_and_say_how_many_more() {
        let dir = sample();
        for n in 0..LISTED_PROBLEMS + 5 {
            fs::create_dir(dir.path().join(format!("artifacts/extra{n}"))).unwrap();
        }
        let found = problems(dir.path());
        assert_eq!(found.len(), LISTED_PROBLEMS + 1, "{found:#?}");
        let last = found.last().unwrap().to_string();
        assert_eq!(
            last,
            "and 5 more problems, not listed: fix these, then look again"
        );
    }

    /// `root`'s promotion.scm with artifact `lib32` at `path` added (probe
    /// `probe`), and the problems of the root found then.
    fn problems_with_lib32_at(root: &Path, path: &str, probe: &str) -> Vec<Problem> {
        let mut m = PromotionMetadata::read(&root.join(PROMOTION_FILE)).unwrap();
        m.artifacts.push(crate::promotion::ArtifactEntry {
            name: "lib32".into(),
            path: path.into(),
            probe: probe.into(),
            tree_signature: None,
        });
        m.write_to(root).unwrap();
        problems(root)
    }

    /// Regression: an artifact at the path of another was accepted (one
    /// tree promoted twice, under two names), though one inside another's
    /// tree was refused.
    #[test]
    fn two_artifacts_at_one_path_are_refused_like_nested_ones() {
        let dir = sample();
        let found = problems_with_lib32_at(dir.path(), "artifacts/world", "bin/sh");
        let said: Vec<String> = found.iter().map(ToString::to_string).collect();
        for (artifact, other) in [("lib32", "world"), ("world", "lib32")] {
            let expected = format!(
                "field `artifacts.{artifact}.path`: is also artifact {other}'s tree; each artifact has a tree of its own"
            );
            assert!(said.iter().any(|p| p.ends_with(&expected)), "{said:#?}");
        }
    }

    /// Regression: an artifact outside `artifacts/` was accepted, even
    /// `logs` (fruix's own logs promoted as an artifact).
    #[test]
    fn an_artifact_outside_artifacts_is_refused() {
        for (path, probe) in [
            ("logs", "build.log"),
            ("lib32", "bin/sh"),
            ("artifacts-old/lib32", "bin/sh"),
            ("artifacts", "world/bin/sh"),
        ] {
            let dir = sample();
            let tree = dir.path().join(path);
            fs::create_dir_all(tree.join(probe).parent().unwrap()).unwrap();
            fs::write(tree.join(probe), b"x").unwrap();
            let found = problems_with_lib32_at(dir.path(), path, probe);
            let expected = format!(
                "{}: field `artifacts.lib32.path`: is not under artifacts/; put every artifact's tree there (artifacts/NAME)",
                dir.path().join(path).display()
            );
            let said: Vec<String> = found.iter().map(ToString::to_string).collect();
            assert_eq!(said, [expected], "{path}");
        }
    }

    #[test]
    fn artifact_through_symlink_out_of_root_is_refused() {
        let dir = sample();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(outside.path().join("boot/kernel")).unwrap();
        fs::write(outside.path().join("boot/kernel/kernel"), b"k").unwrap();
        fs::remove_dir_all(dir.path().join("artifacts/kernel")).unwrap();
        symlink(outside.path(), dir.path().join("artifacts/kernel")).unwrap();
        let found = problems(dir.path());
        assert!(
            found
                .iter()
                .any(|p| p.path.ends_with("artifacts/kernel") && p.message.contains("symlink")),
            "{found:#?}"
        );
    }

    #[test]
    fn world_probe_must_be_bin_sh() {
        let dir = sample();
        let mut m = PromotionMetadata::read(&dir.path().join(PROMOTION_FILE)).unwrap();
        m.artifacts[0].probe = "usr/bin/sh".into();
        m.write_to(dir.path()).unwrap();
        let found = problems(dir.path());
        assert!(
            found
                .iter()
                .any(|p| p.field.as_deref() == Some("artifacts.world.probe")),
            "{found:#?}"
        );
    }

    #[test]
    fn unfinished_marker_blocks_validation() {
        let dir = sample();
        fs::write(dir.path().join(INCOMPLETE_MARKER), b"").unwrap();
        let found = problems(dir.path());
        assert!(found[0].message.contains("did not finish"), "{found:#?}");
        assert!(validate_with(dir.path(), true).is_ok());
    }

    #[test]
    fn malformed_promotion_is_a_problem_naming_the_line() {
        let dir = sample();
        fs::write(
            dir.path().join(PROMOTION_FILE),
            "(fruix-native-build-promotion\n (format-version 1)\n (run-id",
        )
        .unwrap();
        let found = problems(dir.path());
        assert!(found[0].message.contains("line 3"), "{found:#?}");
    }

    #[test]
    fn missing_promotion_is_a_problem() {
        let dir = sample();
        fs::remove_file(dir.path().join(PROMOTION_FILE)).unwrap();
        let found = problems(dir.path());
        assert!(
            found[0].path.ends_with(PROMOTION_FILE) && found[0].message.contains("missing"),
            "{found:#?}"
        );
    }
}
