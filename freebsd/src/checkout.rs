//! What a source directory is as a git checkout: the commit, whether the
//! worktree is dirty, and which paths `git status` would not show (ignored
//! build output such as `obj/`), so that a source object leaves them out.
//!
//! Git runs with the repository's hooks and file-system monitor turned off:
//! reading a checkout never runs code the checkout configures.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use fruix_core::{Error, Result};

/// A source directory's git facts; all empty for a directory that is not
/// the top of a git checkout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkout {
    /// The checked-out commit (none before the first commit).
    pub commit: Option<String>,
    /// Whether the worktree differs from the commit (untracked files count).
    pub dirty: Option<bool>,
    /// Paths relative to the top, as `git status` would not show them:
    /// ignored files, and ignored directories with a trailing `/`.
    pub ignored: HashSet<Vec<u8>>,
}

impl Checkout {
    /// Whether the relative `path` is left out of a source object: `.git`
    /// and what git ignores.
    pub fn excludes(&self, path: &[u8]) -> bool {
        if path == b".git" {
            return true;
        }
        if self.ignored.contains(path) {
            return true;
        }
        let mut dir = path.to_vec();
        dir.push(b'/');
        self.ignored.contains(&dir)
    }
}

/// `git -C dir ARGS` with hooks and fsmonitor off; its stdout, or why not.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"])
        .args(args)
        .output()
        .map_err(|e| {
            Error::system(format!(
                "{} is a git checkout, and git cannot run ({e}); install git, or add a copy without .git",
                dir.display()
            ))
        })?;
    if !out.status.success() {
        return Err(Error::system(format!(
            "git {} in {} failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// The git facts of `dir` (canonical): none unless it is the top of a
/// checkout (it has `.git`).
pub fn inspect(dir: &Path) -> Result<Checkout> {
    if std::fs::symlink_metadata(dir.join(".git")).is_err() {
        return Ok(Checkout::default());
    }
    let commit = git(dir, &["rev-parse", "--verify", "--quiet", "HEAD"])
        .ok()
        .map(|o| String::from_utf8_lossy(&o).trim().to_string())
        .filter(|c| !c.is_empty());
    let status = git(
        dir,
        &["status", "--porcelain=v1", "-z", "--untracked-files=all"],
    )?;
    let listing = git(
        dir,
        &[
            "ls-files",
            "-z",
            "--others",
            "--ignored",
            "--exclude-standard",
            "--directory",
        ],
    )?;
    let ignored = listing
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Checkout {
        commit,
        dirty: Some(!status.is_empty()),
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_git_ignored_files_and_ignored_directories_are_excluded() {
        let c = Checkout {
            ignored: ["obj/".as_bytes().to_vec(), b"a.o".to_vec()]
                .into_iter()
                .collect(),
            ..Checkout::default()
        };
        assert!(c.excludes(b".git"));
        assert!(c.excludes(b"obj"));
        assert!(c.excludes(b"a.o"));
        assert!(!c.excludes(b"sys"));
        assert!(!c.excludes(b"objects"));
    }

    #[test]
    fn a_plain_directory_has_no_git_facts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), Checkout::default());
    }
}
