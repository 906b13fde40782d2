//! A passed cell's `results/ID` in its report directory: a link to its
//! result bundle, registered as an indirect garbage collector root (like
//! `nix-build`'s `result-N`), made by descriptor so that nothing found in
//! the report directory can send it elsewhere.
//!
//! A report directory may hold what a CI engine unpacked, or be shared
//! with other jobs: its `results` may be a symlink, or become one while the
//! run goes on. So the link is never made by path. The report directory is
//! opened (its own path followed: the caller chose it), its `results/` made
//! and opened beneath it with `O_NOFOLLOW | O_DIRECTORY` (a symlink there
//! is refused, as [`check_results_dir`] refuses one before any cell runs),
//! and the link is made as a temporary by `symlinkat(2)`, then renamed over
//! `ID` by `renameat(2)`, both relative to that descriptor: a `results`
//! swapped for a symlink in between changes nothing of where they go.
//!
//! The root is registered first, as `fruix_promote::roots::add_indirect`
//! registers a `./result`, by the same function
//! ([`register_indirect`]): its entry in `STATE_DIR/gcroots/auto/` names
//! the link's path. A link that cannot be made takes back a
//! registration made for it. The caller holds the store's garbage
//! collector lock from the promotion to the link, so no collection comes
//! between.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fruix_core::dir::OpenDir;
use fruix_core::manifest::stat;
use fruix_core::{Error, Result};
use fruix_promote::roots::register_indirect;
use rustix::fs::{AtFlags, FileType};

use crate::report_dir::{REPORT_DIR_TREE, RESULTS_DIR};

/// Refuses a `results` of report directory `report_dir` that is not a
/// directory (a symlink, say), before any cell runs: a passed cell's link
/// would be refused there ([`link_result`]) once it had been built.
pub fn check_results_dir(report_dir: &Path) -> Result<()> {
    let top = OpenDir::open(report_dir, REPORT_DIR_TREE)?;
    if top.lstat(OsStr::new(RESULTS_DIR))?.is_some() {
        top.open_beneath(RESULTS_DIR)?;
    }
    Ok(())
}

/// Links `bundle`, cell `id`'s result bundle, at `REPORT_DIR/results/ID`
/// (a symlink there is replaced; anything else there is an error), by
/// descriptor, and registers the link as an indirect root in `state_dir`;
/// returns the link's path. A `results` that is not a directory is an
/// [`Error::UnsafePath`]: nothing is written through it.
pub fn link_result(
    report_dir: &Path,
    state_dir: &Path,
    id: &str,
    bundle: &Path,
) -> Result<PathBuf> {
    let top = OpenDir::open(report_dir, REPORT_DIR_TREE)?;
    let results = top.create_beneath(RESULTS_DIR)?;
    link_in(&results, state_dir, id, bundle)
}

/// [`link_result`] into `results`, the open `results/` of a report
/// directory.
fn link_in(results: &OpenDir, state_dir: &Path, id: &str, bundle: &Path) -> Result<PathBuf> {
    let name = OsStr::new(id);
    let link = std::path::absolute(results.child(name))
        .map_err(|e| Error::io("resolve", results.child(name), e))?;
    let kind = results.lstat(name)?.map(|st| stat::file_type(&st));
    if kind.is_some_and(|k| k != FileType::Symlink) {
        return Err(Error::AlreadyExists {
            path: link,
            hint: "it is not a symlink, which fruix never replaces in a report directory's results/; remove it".into(),
        });
    }
    let (entry, registered) = register_indirect(state_dir, &link)?;
    let temp = format!(".{id}.fruix-tmp-{}", unique());
    let made = rustix::fs::symlinkat(bundle, results.as_fd(), &temp)
        .map_err(|e| Error::io("create symlink", results.child(temp.as_ref()), e.into()))
        .and_then(|()| {
            rustix::fs::renameat(results.as_fd(), &temp, results.as_fd(), name).map_err(|e| {
                let _ = rustix::fs::unlinkat(results.as_fd(), &temp, AtFlags::empty());
                Error::io("create symlink", &link, e.into())
            })
        });
    if let Err(e) = made {
        if !registered {
            let _ = std::fs::remove_file(&entry);
        }
        return Err(e);
    }
    Ok(link)
}

/// A suffix no other temporary of this process or another has at once:
/// the process id and a counter (cells are promoted concurrently).
fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use fruix_core::testing::sorted_names as names;

    use super::*;

    const NAME: &str =
        "0123456789abcdef0123456789abcdef01234567-fruix-native-build-result-15.0-STABLE-local";

    /// A report directory, a state directory, a store holding a bundle
    /// and a victim directory, in `d`.
    fn layout(d: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
        let (report, state, victim) = (d.join("report"), d.join("state"), d.join("victim"));
        let bundle = d.join("store").join(NAME);
        for dir in [&report, &state, &victim, &bundle] {
            std::fs::create_dir_all(dir).unwrap();
        }
        (report, state, bundle, victim)
    }

    #[test]
    fn a_result_link_is_a_registered_root_and_replaces_only_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let (report, state, bundle, _) = layout(dir.path());
        let link = link_result(&report, &state, "c1", &bundle).unwrap();
        assert_eq!(link, report.join("results/c1"));
        assert_eq!(std::fs::read_link(&link).unwrap(), bundle);
        let roots = fruix_promote::roots::list(&state, &dir.path().join("store")).unwrap();
        assert_eq!(roots.len(), 1, "{roots:?}");
        assert_eq!(
            (roots[0].link.as_path(), roots[0].object.as_deref()),
            (link.as_path(), Some(NAME))
        );
        // Again: the link is replaced, the root the same one.
        link_result(&report, &state, "c1", &bundle).unwrap();
        assert_eq!(names(&report.join("results")), ["c1"]);
        assert_eq!(names(&state.join("gcroots/auto")).len(), 1);
        // Anything else there is left alone, and no root stays for it.
        std::fs::create_dir(report.join("results/c2")).unwrap();
        let e = link_result(&report, &state, "c2", &bundle).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
        assert_eq!(names(&report.join("results")), ["c1", "c2"]);
        assert_eq!(names(&state.join("gcroots/auto")).len(), 1);
    }

    /// Regression: the link was made by path through `results/`, so a
    /// `results` that was a symlink sent it, and its temporary, into the
    /// directory it named.
    #[test]
    fn a_results_symlink_is_refused_and_nothing_is_written_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let (report, state, bundle, victim) = layout(dir.path());
        symlink(&victim, report.join("results")).unwrap();
        let e = link_result(&report, &state, "c1", &bundle).unwrap_err();
        assert!(
            matches!(&e, Error::UnsafePath { path, message }
                if *path == report.join("results") && message.contains("is a symlink")),
            "{e:?}"
        );
        let checked = check_results_dir(&report).unwrap_err();
        assert!(checked.to_string().contains("is a symlink"), "{checked}");
        assert_eq!(names(&victim), [] as [&str; 0]);
        assert!(!state.join("gcroots").exists(), "no root registered");
        // A `results` missing or a directory is fine.
        std::fs::remove_file(report.join("results")).unwrap();
        check_results_dir(&report).unwrap();
    }

    /// `results/` swapped for a symlink once it is open: the link still
    /// goes into the directory opened, never into the one the symlink
    /// names.
    #[test]
    fn a_results_swapped_for_a_symlink_once_open_does_not_redirect_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let (report, state, bundle, victim) = layout(dir.path());
        let top = OpenDir::open(&report, REPORT_DIR_TREE).unwrap();
        let results = top.create_beneath(RESULTS_DIR).unwrap();
        std::fs::rename(report.join("results"), dir.path().join("moved")).unwrap();
        symlink(&victim, report.join("results")).unwrap();
        link_in(&results, &state, "c1", &bundle).unwrap();
        assert_eq!(names(&victim), [] as [&str; 0]);
        assert_eq!(names(&dir.path().join("moved")), ["c1"]);
    }
}
