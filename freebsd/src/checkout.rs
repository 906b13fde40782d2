//! What a source directory is as a git checkout: the commit, whether the
//! worktree is dirty, and which paths `git status` would not show (ignored
//! build output such as `obj/`), so that a source object leaves them out.
//!
//! Git reads the tree and nothing else, and runs nothing it configures:
//! - it is asked about the tree alone: `GIT_DIR`, `GIT_WORK_TREE` and the
//!   other variables naming a repository are removed, discovery stops at
//!   the tree's parent (`GIT_CEILING_DIRECTORIES`), and a tree whose top
//!   git does not say is the tree itself (an empty `.git` inside another
//!   checkout, a `core.worktree` elsewhere) has no git facts;
//! - it writes nothing (`GIT_OPTIONAL_LOCKS=0`: `git status` leaves the
//!   index as it was);
//! - the tree is a safe directory for it (`safe.directory`), so that root
//!   reads the facts of a checkout a user owns;
//! - the repository's hooks, file-system monitor and filter drivers are
//!   turned off, and so are the settings that would hide a change from
//!   `git status` (`core.fileMode`, `core.trustctime`...: see
//!   `TRUST_NOTHING`).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use fruix_core::{escape, Error, Result};

/// The variables that name a repository, its index or configuration
/// (`git rev-parse --local-env-vars`): removed, so that git reads the
/// tree's own repository whatever fruix's environment says (fruix run from
/// a git hook has `GIT_DIR`).
const REPOSITORY_VARIABLES: [&str; 15] = [
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_CONFIG",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_PARAMETERS",
    "GIT_DIR",
    "GIT_GRAFT_FILE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_OBJECT_DIRECTORY",
    "GIT_PREFIX",
    "GIT_REPLACE_REF_BASE",
    "GIT_SHALLOW_FILE",
    "GIT_WORK_TREE",
];

/// The checkout's settings that would let `git status` call a changed
/// file unchanged, set back to git's defaults for fruix's own commands:
/// - `core.fileMode`: false ignores a changed executable bit, which the
///   source object stores;
/// - `core.trustctime` and `core.checkStat`: false or `minimal` ignore the
///   inode change time, the one time a rewrite that restores the
///   modification time (`touch -r`) cannot set back;
/// - `core.symlinks`: false takes a regular file holding a tracked link's
///   target for the link;
/// - `core.ignoreStat`: true marks the files git writes assume-unchanged,
///   never looked at again (those already marked are compared anyway);
/// - `core.untrackedCache`: a cache of untracked files that trusts
///   directories' modification times, which anyone can set back.
const TRUST_NOTHING: [(&str, &str); 6] = [
    ("core.fileMode", "true"),
    ("core.trustctime", "true"),
    ("core.checkStat", "default"),
    ("core.symlinks", "true"),
    ("core.ignoreStat", "false"),
    ("core.untrackedCache", "false"),
];

/// A source directory's git facts; all empty for a directory that is not
/// the top of a git checkout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkout {
    /// The checked-out commit (none before the first commit).
    pub commit: Option<String>,
    /// Paths relative to the top, as `git status` would not show them:
    /// ignored files, and ignored directories with a trailing `/`.
    pub ignored: HashSet<Vec<u8>>,
    /// What git says of the worktree; none unless a checkout.
    worktree: Option<Worktree>,
}

/// What `git status` and the index say of a checkout's worktree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Worktree {
    /// A tracked file differs from the commit (changed, removed, unmerged,
    /// or one git is told not to look at that differs from the index), or
    /// lies in a path left out.
    changed: bool,
    /// The untracked paths, directories with a trailing `/`.
    untracked: Vec<Vec<u8>>,
    /// The tracked symlinks.
    tracked_links: Vec<Vec<u8>>,
}

impl Checkout {
    /// Whether the relative `path` is left out of a source object: every
    /// `.git` at any depth (a nested repository's, a submodule's or linked
    /// worktree's `.git` file) and what git ignores.
    pub fn excludes(&self, path: &[u8]) -> bool {
        let dot_git = path == b".git" || path.ends_with(b"/.git");
        dot_git || self.ignored.contains(path) || self.ignored.contains(&[path, b"/"].concat())
    }

    /// Whether the worktree differs from the commit (none for a tree that
    /// is no checkout), once the relative paths `left_out` names are left
    /// out of it: a tracked file that differs or is left out, or an
    /// untracked entry that is not left out.
    pub fn dirty(&self, left_out: &dyn Fn(&[u8]) -> bool) -> Option<bool> {
        let w = self.worktree.as_ref()?;
        Some(
            w.changed
                || w.untracked.iter().any(|p| !left_out(p))
                || w.tracked_links.iter().any(|p| left_out(p)),
        )
    }

    /// Whether `again`, git asked again about the same tree, says what
    /// this answer said: the same commit, the same ignored paths and the
    /// same changes, untracked paths `left_out` names aside (fruix's own
    /// output, such as the out-link of a build that ended meanwhile).
    pub fn says_the_same(&self, again: &Checkout, left_out: &dyn Fn(&[u8]) -> bool) -> bool {
        let said = |c: &Checkout| {
            let w = c.worktree.as_ref()?;
            let untracked = w.untracked.iter().filter(|p| !left_out(p)).cloned();
            Some((
                w.changed,
                w.tracked_links.clone(),
                untracked.collect::<Vec<_>>(),
            ))
        };
        self.commit == again.commit && self.ignored == again.ignored && said(self) == said(again)
    }
}

/// git, asked about one tree (see the module documentation).
struct Git<'a> {
    dir: &'a Path,
    /// Configuration given as on the command line (`GIT_CONFIG_COUNT`,
    /// keys and values apart, as `-c` does them): over the repository's.
    overrides: Vec<(String, OsString)>,
}

impl<'a> Git<'a> {
    /// git in `dir`, a safe directory, with hooks and the file-system
    /// monitor turned off.
    fn new(dir: &'a Path) -> Self {
        let overrides = [
            ("safe.directory", dir.as_os_str()),
            ("core.fsmonitor", OsStr::new("false")),
            ("core.hooksPath", OsStr::new("/dev/null")),
        ]
        .into_iter()
        .chain(TRUST_NOTHING.map(|(key, value)| (key, OsStr::new(value))));
        Git {
            dir,
            overrides: overrides
                .map(|(key, value)| (key.to_string(), value.to_os_string()))
                .collect(),
        }
    }

    /// This git with every filter driver the configuration names turned
    /// off (`filter.NAME.clean`, `.process`, `.smudge` emptied, and not
    /// `required`): `git status` would otherwise run a driver's command on
    /// each file it re-reads. The names come from the whole configuration
    /// (system, global, the repository's, includes), listed with the tree
    /// safe: git ignores the repository's configuration of a tree it does
    /// not trust.
    fn without_filters(mut self) -> Result<Self> {
        let keys = self.run(&["config", "--null", "--name-only", "--list"], b"")?;
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
        for driver in drivers {
            for (var, value) in [
                ("clean", ""),
                ("smudge", ""),
                ("process", ""),
                ("required", "false"),
            ] {
                let key = format!("filter.{driver}.{var}");
                self.overrides.push((key, value.into()));
            }
        }
        Ok(self)
    }

    /// Whether git takes the tree for the top of its worktree.
    fn is_top(&self) -> Result<bool> {
        let out = self.output(&["rev-parse", "--show-toplevel"], b"")?;
        let top = out.stdout.strip_suffix(b"\n").unwrap_or(&out.stdout);
        Ok(out.status.success() && top == self.dir.as_os_str().as_bytes())
    }

    /// `git -C DIR ARGS` with `input` on its stdin, which must succeed:
    /// its stdout.
    fn run<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Result<Vec<u8>> {
        let out = self.output(args, input)?;
        if !out.status.success() {
            let args: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
            return Err(Error::system(format!(
                "git {} in {} failed: {}",
                escape::text(&args.join(" ")),
                escape::path(self.dir),
                escape::text(String::from_utf8_lossy(&out.stderr).trim())
            )));
        }
        Ok(out.stdout)
    }

    /// `git -C DIR ARGS` with `input` on its stdin: its output, or why git
    /// could not run.
    fn output<S: AsRef<OsStr>>(&self, args: &[S], input: &[u8]) -> Result<Output> {
        let mut command = Command::new("git");
        for var in REPOSITORY_VARIABLES {
            command.env_remove(var);
        }
        command.env("GIT_OPTIONAL_LOCKS", "0");
        if let Some(parent) = self.dir.parent() {
            command.env("GIT_CEILING_DIRECTORIES", parent);
        }
        command.env("GIT_CONFIG_COUNT", self.overrides.len().to_string());
        for (i, (key, value)) in self.overrides.iter().enumerate() {
            command.env(format!("GIT_CONFIG_KEY_{i}"), key);
            command.env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        command.arg("-C").arg(self.dir).args(args);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cannot_run = |e: std::io::Error| {
            Error::system(format!(
                "{} is a git checkout, and git cannot run ({e}); install git, or add a copy without .git",
                escape::path(self.dir)
            ))
        };
        let mut child = command.spawn().map_err(cannot_run)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        std::thread::scope(|s| {
            // A git that exits without reading it all closes the pipe:
            // what it said is its answer.
            s.spawn(move || stdin.write_all(input));
            child.wait_with_output()
        })
        .map_err(cannot_run)
    }
}

/// `-- .` and a pathspec leaving out each of `left_out` (relative paths).
fn pathspec(left_out: &[Vec<u8>]) -> Vec<OsString> {
    let mut spec = vec![OsString::from("--"), OsString::from(".")];
    for path in left_out {
        let mut exclude = OsString::from(":(exclude,literal)");
        exclude.push(OsStr::from_bytes(path));
        spec.push(exclude);
    }
    spec
}

/// `fixed` followed by `more`.
fn args(fixed: &[&str], more: &[OsString]) -> Vec<OsString> {
    fixed
        .iter()
        .map(OsString::from)
        .chain(more.iter().cloned())
        .collect()
}

/// Whether the relative `path` is `dir` or lies in it.
fn is_in(path: &[u8], dir: &[u8]) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
}

/// A tracked entry as `git ls-files -s -v` lists it.
struct Tracked<'i> {
    /// `H`; `S` for skip-worktree; lowercase for assume-unchanged.
    tag: u8,
    mode: &'i [u8],
    object: &'i [u8],
    path: &'i [u8],
}

/// The entries of `git ls-files -z -s -v` output.
fn tracked(index: &[u8]) -> impl Iterator<Item = Tracked<'_>> {
    index.split(|b| *b == 0).filter_map(|record| {
        let tab = record.iter().position(|b| *b == b'\t')?;
        let mut info = record[..tab].split(|b| *b == b' ');
        let tag = *info.next()?.first()?;
        Some(Tracked {
            tag,
            mode: info.next()?,
            object: info.next()?,
            path: &record[tab + 1..],
        })
    })
}

/// Whether `git status --porcelain=v1 -z` output lists a tracked change,
/// and the untracked paths it lists.
fn read_status(status: &[u8]) -> (bool, Vec<Vec<u8>>) {
    let (mut changed, mut untracked) = (false, Vec::new());
    let mut records = status.split(|b| *b == 0).filter(|r| !r.is_empty());
    while let Some(record) = records.next() {
        match (record.get(..2), record.get(3..)) {
            (Some(b"??"), Some(path)) => untracked.push(path.to_vec()),
            (code, _) => {
                changed = true;
                // A rename or copy: the next record is where it came from.
                if code.is_some_and(|c| c.contains(&b'R') || c.contains(&b'C')) {
                    records.next();
                }
            }
        }
    }
    (changed, untracked)
}

/// Whether a tracked file git is told not to look at (`hidden`: flagged
/// skip-worktree or assume-unchanged, which `git status` trusts) differs
/// from its index entry: gone, no longer a regular file, its executable
/// bit or its content (as `git hash-object` reads it) changed. Only those
/// files are read; anything but a regular file counts as differing.
fn hidden_differ(git: &Git<'_>, hidden: &[Tracked<'_>]) -> Result<bool> {
    if hidden.is_empty() {
        return Ok(false);
    }
    let mut paths = Vec::new();
    for entry in hidden {
        let executable = match entry.mode {
            b"100644" => false,
            b"100755" => true,
            _ => return Ok(true),
        };
        let file = git.dir.join(OsStr::from_bytes(entry.path));
        let Ok(meta) = file.symlink_metadata() else {
            return Ok(true);
        };
        let mode = meta.permissions().mode();
        if !meta.is_file() || (mode & 0o100 != 0) != executable || entry.path.contains(&b'\n') {
            return Ok(true);
        }
        paths.extend_from_slice(entry.path);
        paths.push(b'\n');
    }
    let out = git.run(&["hash-object", "--stdin-paths"], &paths)?;
    let hashes: Vec<&[u8]> = out
        .split(|b| *b == b'\n')
        .filter(|h| !h.is_empty())
        .collect();
    Ok(hashes.len() != hidden.len() || hashes.iter().zip(hidden).any(|(h, e)| *h != e.object))
}

/// The git facts of `dir` (canonical): none unless it is the top of a
/// checkout (it has `.git`, and git says its worktree's top is `dir`).
pub fn inspect(dir: &Path) -> Result<Checkout> {
    inspect_leaving_out(dir, &[])
}

/// [`inspect`], for a tree of which the relative paths `left_out` (what
/// fruix wrote itself: its store, its state directory) are no part: git
/// does not look into them, and a tracked file among them makes the tree
/// dirty.
pub fn inspect_leaving_out(dir: &Path, left_out: &[Vec<u8>]) -> Result<Checkout> {
    if std::fs::symlink_metadata(dir.join(".git")).is_err() {
        return Ok(Checkout::default());
    }
    let git = Git::new(dir);
    if !git.is_top()? {
        return Ok(Checkout::default());
    }
    let git = git.without_filters()?;
    let commit = git
        .run(&["rev-parse", "--verify", "--quiet", "HEAD"], b"")
        .ok()
        .map(|o| String::from_utf8_lossy(&o).trim().to_string())
        .filter(|c| !c.is_empty());
    let spec = pathspec(left_out);
    // Not into submodules: their configuration names other drivers.
    let status = [
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
        "--ignore-submodules=all",
    ];
    let (mut changed, untracked) = read_status(&git.run(&args(&status, &spec), b"")?);
    let index = git.run(&["ls-files", "-z", "-s", "-v"], b"")?;
    let mut hidden = Vec::new();
    let mut tracked_links = Vec::new();
    for entry in tracked(&index) {
        changed |= left_out.iter().any(|dir| is_in(entry.path, dir));
        if entry.mode == b"120000" {
            tracked_links.push(entry.path.to_vec());
        }
        if entry.tag != b'H' {
            hidden.push(entry);
        }
    }
    changed = changed || hidden_differ(&git, &hidden)?;
    let ignored = [
        "ls-files",
        "-z",
        "--others",
        "--ignored",
        "--exclude-standard",
        "--directory",
    ];
    let listing = git.run(&args(&ignored, &spec), b"")?;
    let ignored = listing
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    Ok(Checkout {
        commit,
        ignored,
        worktree: Some(Worktree {
            changed,
            untracked,
            tracked_links,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dot_git_ignored_files_and_ignored_directories_are_excluded() {
        let c = Checkout {
            ignored: ["obj/".as_bytes().to_vec(), b"a.o".to_vec()]
                .into_iter()
                .collect(),
            ..Checkout::default()
        };
        assert!(c.excludes(b".git"));
        assert!(c.excludes(b"contrib/nested/.git"));
        assert!(!c.excludes(b"contrib/nested.git"));
        assert!(!c.excludes(b".gitignore"));
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
        let repo = committed(dir.path(), "src");
        // A file git status does not look at, which fruix compares.
        git_ok(&repo, &["update-index", "--skip-worktree", "README.md"]);
        std::fs::write(
            repo.join(".git/info/attributes"),
            "* filter=evil filter=ev.il\n* filter=ev.il\n",
        )
        .unwrap();
        let ran = dir.path().join("ran");
        for driver in ["evil", "ev.il"] {
            let command = format!("sh -c 'echo {driver} >> {}; cat'", ran.display());
            for (var, value) in [
                ("clean", &*command),
                ("process", &command),
                ("required", "true"),
            ] {
                git_ok(&repo, &["config", &format!("filter.{driver}.{var}"), value]);
            }
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
        assert_eq!(checkout.dirty(&|_| false), Some(false));
    }

    /// A checkout at `dir/name` with `Makefile` and `README.md` committed.
    fn committed(dir: &Path, name: &str) -> std::path::PathBuf {
        let repo = dir.join(name);
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("Makefile"), "all:\n").unwrap();
        std::fs::write(repo.join("README.md"), "readme\n").unwrap();
        git_ok(&repo, &["init", "-q"]);
        git_ok(&repo, &["add", "-A"]);
        git_ok(&repo, &["commit", "-qm", "init"]);
        repo
    }

    /// Regression: `git status` refreshed the checkout's index (a write
    /// outside the store) when a tracked file had been touched.
    #[test]
    fn inspecting_a_checkout_leaves_its_index_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let repo = committed(dir.path(), "src");
        // Touched: its stat data is no longer the index's.
        std::fs::write(repo.join("Makefile"), "all:\n").unwrap();
        let index = repo.join(".git/index");
        let modified = || index.metadata().unwrap().modified().unwrap();
        let (bytes, mtime) = (std::fs::read(&index).unwrap(), modified());
        let checkout = inspect(&repo).unwrap();
        assert_eq!(checkout.dirty(&|_| false), Some(false));
        assert_eq!(modified(), mtime);
        assert!(
            std::fs::read(&index).unwrap() == bytes,
            "the index was written"
        );
    }

    /// Regression: a tree with an empty or broken `.git` inside another
    /// checkout got that checkout's commit and dirtiness (git searched
    /// upwards); so would a checkout whose worktree is set elsewhere.
    #[test]
    fn a_tree_that_is_not_its_own_worktree_has_no_git_facts() {
        let dir = tempfile::tempdir().unwrap();
        let outer = committed(dir.path(), "outer");
        let inner = outer.join("inner");
        std::fs::create_dir_all(inner.join(".git")).unwrap();
        assert_eq!(inspect(&inner).unwrap(), Checkout::default());
        std::fs::remove_dir(inner.join(".git")).unwrap();
        std::fs::write(inner.join(".git"), "not a gitdir\n").unwrap();
        assert_eq!(inspect(&inner).unwrap(), Checkout::default());
        assert!(inspect(&outer).unwrap().commit.is_some());
        let elsewhere = dir.path().to_str().unwrap();
        git_ok(&outer, &["config", "core.worktree", elsewhere]);
        assert_eq!(inspect(&outer).unwrap(), Checkout::default());
    }

    /// Regression: a change to a file flagged skip-worktree or
    /// assume-unchanged was hidden (`git status` trusts the flags): the
    /// tree was called clean at its commit. Flagged files are compared.
    #[test]
    fn a_change_hidden_from_git_status_makes_the_tree_dirty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for flag in ["--skip-worktree", "--assume-unchanged"] {
            let repo = committed(dir.path(), flag.trim_start_matches('-'));
            git_ok(&repo, &["update-index", flag, "README.md"]);
            let readme = repo.join("README.md");
            let dirty = || inspect(&repo).unwrap().dirty(&|_| false);
            assert_eq!(dirty(), Some(false), "{flag}: flagged, unchanged");
            std::fs::write(&readme, "readme\nevil\n").unwrap();
            assert_eq!(dirty(), Some(true), "{flag}: changed");
            std::fs::write(&readme, "readme\n").unwrap();
            let executable = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(&readme, executable).unwrap();
            assert_eq!(dirty(), Some(true), "{flag}: made executable");
            std::fs::remove_file(&readme).unwrap();
            assert_eq!(dirty(), Some(true), "{flag}: removed");
        }
    }

    /// What a source leaves out (fruix's store, state directory and
    /// out-links in the tree) is no change: git does not look into it, an
    /// untracked link left out is no change; a tracked one is.
    #[test]
    fn paths_left_out_are_no_change_unless_tracked() {
        let dir = tempfile::tempdir().unwrap();
        let repo = committed(dir.path(), "src");
        std::fs::create_dir_all(repo.join("frx-store/obj")).unwrap();
        std::fs::write(repo.join("frx-store/obj/file"), "x").unwrap();
        std::os::unix::fs::symlink("/frx/store/x", repo.join("result")).unwrap();
        let own = [b"frx-store".to_vec()];
        let checkout = inspect_leaving_out(&repo, &own).unwrap();
        assert_eq!(checkout.dirty(&|p| p == b"result"), Some(false));
        assert_eq!(
            checkout.dirty(&|_| false),
            Some(true),
            "result is untracked"
        );
        assert_eq!(
            inspect(&repo).unwrap().dirty(&|p| p == b"result"),
            Some(true)
        );
        git_ok(&repo, &["add", "result"]);
        git_ok(&repo, &["commit", "-qm", "link"]);
        let checkout = inspect_leaving_out(&repo, &own).unwrap();
        assert_eq!(checkout.dirty(&|_| false), Some(false));
        assert_eq!(
            checkout.dirty(&|p| p == b"result"),
            Some(true),
            "a tracked link"
        );
        git_ok(&repo, &["add", "-f", "frx-store/obj/file"]);
        git_ok(&repo, &["commit", "-qm", "file"]);
        let checkout = inspect_leaving_out(&repo, &own).unwrap();
        assert_eq!(
            checkout.dirty(&|_| false),
            Some(true),
            "a tracked file left out"
        );
    }

    #[test]
    fn a_plain_directory_has_no_git_facts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), Checkout::default());
    }
}
