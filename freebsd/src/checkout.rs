//! What a source directory is as a git checkout: the commit, whether the
//! worktree is dirty, and which paths `git status` would not show (ignored
//! build output such as `obj/`), so that a source object leaves them out.
//!
//! Git runs with the repository's hooks, file-system monitor and filter
//! drivers turned off: reading a checkout never runs code the checkout
//! configures.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use fruix_core::{escape, Error, Result};

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

/// `git -C dir ARGS` with nothing the checkout configures able to run: its
/// stdout, or why not.
///
/// Hooks and the file-system monitor are turned off, and so is every filter
/// driver the repository's configuration names (`filter.NAME.clean`,
/// `.process`, `.smudge`, emptied, and not `required`): `git status` would
/// otherwise run a driver's command on each file it re-reads. The settings go
/// through `GIT_CONFIG_COUNT` (keys and values apart, as `-c` does them), which
/// override the repository's own.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let mut overrides = vec![
        ("core.fsmonitor".to_string(), "false"),
        ("core.hooksPath".to_string(), "/dev/null"),
    ];
    for driver in filter_drivers(dir)? {
        for (var, value) in [
            ("clean", ""),
            ("smudge", ""),
            ("process", ""),
            ("required", "false"),
        ] {
            overrides.push((format!("filter.{driver}.{var}"), value));
        }
    }
    run_git(dir, args, &overrides)
}

/// The names of the filter drivers `dir`'s configuration sets anything for
/// (its whole configuration: system, global, the repository's, includes).
fn filter_drivers(dir: &Path) -> Result<Vec<String>> {
    let keys = run_git(dir, &["config", "--null", "--name-only", "--list"], &[])?;
    let mut drivers: Vec<String> = keys
        .split(|b| *b == 0)
        .filter_map(|key| {
            let key = String::from_utf8_lossy(key);
            let rest = key.strip_prefix("filter.")?;
            Some(rest.rsplit_once('.')?.0.to_string())
        })
        .collect();
    drivers.sort();
    drivers.dedup();
    Ok(drivers)
}

/// `git -C dir ARGS` with `overrides` set as command-line configuration.
fn run_git(dir: &Path, args: &[&str], overrides: &[(String, &str)]) -> Result<Vec<u8>> {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir).args(args);
    command.env("GIT_CONFIG_COUNT", overrides.len().to_string());
    for (i, (key, value)) in overrides.iter().enumerate() {
        command.env(format!("GIT_CONFIG_KEY_{i}"), key);
        command.env(format!("GIT_CONFIG_VALUE_{i}"), value);
    }
    let out = command.output().map_err(|e| {
        Error::system(format!(
            "{} is a git checkout, and git cannot run ({e}); install git, or add a copy without .git",
            escape::path(dir)
        ))
    })?;
    if !out.status.success() {
        return Err(Error::system(format!(
            "git {} in {} failed: {}",
            args.join(" "),
            escape::path(dir),
            escape::text(String::from_utf8_lossy(&out.stderr).trim())
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
        // Not into submodules: their configuration names other drivers.
        &[
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--ignore-submodules=all",
        ],
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

    /// `git ARGS` in `dir`, which must succeed.
    fn git_ok(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.email=t@example.org", "-c", "user.name=t"])
            .args(args)
            .status()
            .expect("git must be installed for this test");
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn inspecting_a_checkout_runs_none_of_its_filter_drivers() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("src");
        std::fs::create_dir(&repo).unwrap();
        std::fs::write(repo.join("Makefile"), "all:\n").unwrap();
        git_ok(&repo, &["init", "-q"]);
        git_ok(&repo, &["add", "-A"]);
        git_ok(&repo, &["commit", "-qm", "init"]);
        std::fs::write(
            repo.join(".git/info/attributes"),
            "* filter=evil filter=ev.il\n* filter=ev.il\n",
        )
        .unwrap();
        let ran = dir.path().join("ran");
        for driver in ["evil", "ev.il"] {
            let command = format!("sh -c 'echo {driver} >> {}; cat'", ran.display());
            git_ok(
                &repo,
                &["config", &format!("filter.{driver}.clean"), &command],
            );
            git_ok(
                &repo,
                &["config", &format!("filter.{driver}.process"), &command],
            );
            git_ok(
                &repo,
                &["config", &format!("filter.{driver}.required"), "true"],
            );
        }
        // Re-written with the same content: git status must re-read it.
        std::fs::write(repo.join("Makefile"), "all:\n").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(repo.join(".git/index"))
            .unwrap()
            .set_modified(old)
            .unwrap();

        let checkout = inspect(&repo);
        assert!(
            !ran.exists(),
            "a filter ran: {:?}",
            std::fs::read_to_string(&ran)
        );
        let checkout = checkout.unwrap();
        assert!(checkout.commit.is_some());
        assert_eq!(checkout.dirty, Some(false));
    }

    #[test]
    fn a_plain_directory_has_no_git_facts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), Checkout::default());
    }
}
