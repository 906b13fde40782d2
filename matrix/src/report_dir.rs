//! The report directory of a run: made, and cleared of what an earlier run
//! left in it.
//!
//! What fruix writes in a report directory is its own, and nothing else
//! is: `report.json`, `junit.xml` and `machines.scm` (`matrix run`,
//! `collect`), `cell-ID.json` and `cell-ID.machines.scm` (`run-cell`),
//! `logs/ID.log`, `results/ID` (the link to a passed cell's result bundle,
//! registered as an indirect garbage collector root), `diffoscope/*.txt`,
//! and the temporaries a killed atomic write leaves beside each
//! (`.NAME.tmp-*`; in `results/`, links too).
//!
//! `matrix run` has its report directory to itself
//! ([`ReportDirUse::Whole`]): before its cells start, it removes all of that,
//! so that the directory holds its report and nothing of an earlier run's (a
//! cell that passed then but not now keeps no `results/` link; a cell no
//! longer in the matrix keeps no log). A directory holding anything else
//! is refused before anything is made or removed: it is no report
//! directory, and may be the wrong one. `run-cell` shares its directory
//! with the other cells' jobs, and `collect` with what a CI engine unpacked
//! ([`ReportDirUse::Shared`]): a cell run removes its own cell's entries
//! only ([`clear_cell`]), and `collect` removes nothing.
//!
//! A command holds its report directory locked while it uses it
//! ([`ReportDir`]): `matrix run` exclusively, `run-cell` and `collect`
//! shared, so that a second run cannot remove what a running one writes,
//! while the cell jobs of one pipeline still share their directory.
//!
//! Removing a `results/ID` link kills its root, as removing `./result`
//! does: it keeps nothing alive any more, and the next `store gc` removes
//! its registration.
//!
//! Nothing is followed: entries are listed, inspected and removed relative
//! to their directory's descriptor, `logs/`, `results/` and `diffoscope/`
//! opened without following a symlink. A symlink among the entries is
//! removed itself, never what it names; one where `logs/`, `results/` or
//! `diffoscope/` belongs is left alone.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use fruix_core::dir::{OpenDir, TreeKind};
use fruix_core::escape;
use fruix_core::manifest::stat;
use fruix_core::run_id::allocate_run_dir;
use rustix::fs::{AtFlags, FileType};

use crate::report::agreement::DIFFOSCOPE_DIR;
use crate::run::MACHINES_COPY;
use crate::split::{cell_file_name, machines_copy_name};
use crate::{Error, Result};

/// The directory of the cells' logs, `logs/ID.log`.
pub const LOGS_DIR: &str = "logs";
/// The directory of the passed cells' result links, `results/ID`.
pub const RESULTS_DIR: &str = "results";

/// A report directory, as the refusal of a symlink in it names it.
pub(crate) const REPORT_DIR_TREE: TreeKind = TreeKind::named("a report directory");

/// How a command uses a report directory that is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportDirUse {
    /// `matrix run`: the directory is the run's own. What fruix wrote there
    /// before is removed first; a directory holding anything else is
    /// refused.
    Whole,
    /// `run-cell` and `collect`: other cells' reports, or the artifacts a
    /// CI engine unpacked, may share the directory; nothing is removed
    /// here (a cell run replaces its own entries: [`clear_cell`]).
    Shared,
}

/// A report directory in use: its absolute path, its `logs/` open, and
/// the lock that keeps it to this command while the value lives.
///
/// The lock is an advisory `flock(2)` on the report directory itself (no
/// file is added to it): exclusive for [`ReportDirUse::Whole`] (`matrix
/// run`, which removes what an earlier run wrote), shared for
/// [`ReportDirUse::Shared`] (`run-cell` jobs and `collect`, which share the
/// directory with one another). A command that cannot take it is refused
/// at once, before anything in the directory is written or removed.
#[derive(Debug)]
pub struct ReportDir {
    path: PathBuf,
    /// `logs/`, opened beneath the report directory without following a
    /// symlink: every cell's log is opened relative to it
    /// ([`crate::cell_log`]), so that a `logs` swapped for a symlink while
    /// the run goes on sends nothing elsewhere.
    logs: OpenDir,
    /// The report directory, open and locked.
    _locked: OpenDir,
}

impl ReportDir {
    /// The report directory's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its `logs/`, open.
    pub fn logs(&self) -> &OpenDir {
        &self.logs
    }
}

/// Creates the report directory, `report_dir` or else a new
/// `STATE_DIR/matrix/RUN_ID`, with its `logs/`, and locks it for `using`
/// ([`ReportDir`]). For a [`ReportDirUse::Whole`] run, an existing
/// `report_dir` is then cleared of an earlier run's report, or refused when
/// it holds anything fruix does not write.
pub fn create_report_dir(
    report_dir: Option<&Path>,
    state_dir: &Path,
    using: ReportDirUse,
) -> Result<ReportDir> {
    let dir = match report_dir {
        Some(dir) => std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
        None => allocate_run_dir(&state_dir.join("matrix"))?.1,
    };
    std::fs::create_dir_all(&dir).map_err(|source| Error::Report {
        action: "create report directory",
        path: dir.clone(),
        source,
    })?;
    let locked = lock(&dir, using)?;
    // A `results` where no passed cell could be linked is refused before
    // anything is written or removed.
    crate::result_link::check_results_dir(&dir)?;
    if using == ReportDirUse::Whole {
        clear_earlier_run(&dir)?;
    }
    // Logs are written and copied into it: a `logs` that is a symlink
    // (among unpacked CI artifacts, say) would send them elsewhere.
    let logs = dir.join(LOGS_DIR);
    if std::fs::symlink_metadata(&logs).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(fruix_core::Error::UnsafePath {
            path: logs,
            message: "is a symlink; fruix writes a report's logs only into a directory of its own"
                .into(),
        }
        .into());
    }
    let logs = locked.create_beneath(LOGS_DIR)?;
    Ok(ReportDir {
        path: dir,
        logs,
        _locked: locked,
    })
}

/// Opens report directory `dir` and locks it for `using` (see
/// [`ReportDir`]); one that another command holds is refused
/// ([`Error::InvalidOption`]).
fn lock(dir: &Path, using: ReportDirUse) -> Result<OpenDir> {
    use rustix::fs::FlockOperation;
    let top = open_report_dir(dir)?;
    let operation = match using {
        ReportDirUse::Whole => FlockOperation::NonBlockingLockExclusive,
        ReportDirUse::Shared => FlockOperation::NonBlockingLockShared,
    };
    match rustix::fs::flock(&top, operation) {
        Ok(()) => Ok(top),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::ReportDirInUse {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(Error::Report {
            action: "lock report directory",
            path: dir.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// Removes what fruix wrote in report directory `dir` for cell `id`:
/// `cell-ID.json`, `cell-ID.machines.scm`, `logs/ID.log` and the
/// `results/ID` link, so that a cell run again keeps nothing of its
/// earlier run, whatever this one gives.
pub fn clear_cell(dir: &Path, id: &str) -> Result<()> {
    let top = open_report_dir(dir)?;
    for name in [cell_file_name(id), machines_copy_name(id)] {
        remove_if(&top, name.as_ref(), is_file)?;
    }
    for (subdir, name) in [
        (Subdir::Logs, format!("{id}.log")),
        (Subdir::Results, id.to_string()),
    ] {
        if let Some(dir) = open_subdir(&top, subdir)? {
            remove_if(&dir, name.as_ref(), |kind| subdir.wrote(&name, kind))?;
        }
    }
    Ok(())
}

/// A subdirectory fruix writes in a report directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subdir {
    /// `logs/`: the cells' logs.
    Logs,
    /// `results/`: the passed cells' result links.
    Results,
    /// `diffoscope/`: diffoscope's outputs.
    Diffoscope,
}

impl Subdir {
    /// The subdirectory named `name`, if fruix writes one.
    fn named(name: &str) -> Option<Subdir> {
        [Subdir::Logs, Subdir::Results, Subdir::Diffoscope]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// Its name in the report directory.
    fn name(self) -> &'static str {
        match self {
            Subdir::Logs => LOGS_DIR,
            Subdir::Results => RESULTS_DIR,
            Subdir::Diffoscope => DIFFOSCOPE_DIR,
        }
    }

    /// Whether its entry `name`, of type `kind`, is one fruix writes: a
    /// log (`*.log`), a result link (any link), an output (`*.txt`), or
    /// the temporary of one.
    fn wrote(self, name: &str, kind: FileType) -> bool {
        let suffix = match self {
            Subdir::Results => return kind == FileType::Symlink,
            Subdir::Logs => ".log",
            Subdir::Diffoscope => ".txt",
        };
        is_file(kind) && temporary_of(name).unwrap_or(name).ends_with(suffix)
    }
}

/// What an entry at the top of a report directory is to fruix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopEntry {
    /// A file fruix writes (or the temporary of one).
    File,
    /// A subdirectory fruix writes, a directory.
    Subdir(Subdir),
    /// A symlink where a subdirectory belongs: left alone (`logs` is
    /// refused by [`create_report_dir`], and the others are opened without
    /// following a symlink when written).
    LinkedSubdir,
    /// Not fruix's.
    Foreign,
}

/// What entry `name`, of type `kind`, at the top of a report directory is.
fn top_entry(name: &OsStr, kind: FileType) -> TopEntry {
    let Some(name) = name.to_str() else {
        return TopEntry::Foreign;
    };
    let written = |n: &str| {
        ["report.json", "junit.xml", MACHINES_COPY].contains(&n)
            || n.strip_prefix("cell-")
                .is_some_and(|id| id.ends_with(".json") || id.ends_with(".machines.scm"))
    };
    match (Subdir::named(name), kind) {
        (Some(subdir), FileType::Directory) => TopEntry::Subdir(subdir),
        (Some(_), FileType::Symlink) => TopEntry::LinkedSubdir,
        (None, kind) if is_file(kind) && written(temporary_of(name).unwrap_or(name)) => {
            TopEntry::File
        }
        _ => TopEntry::Foreign,
    }
}

/// The name whose atomic write's temporary `name` is (`.NAME.tmp-*`, or
/// `.NAME.fruix-tmp-*` for a result link).
fn temporary_of(name: &str) -> Option<&str> {
    let hidden = name.strip_prefix('.')?;
    [".tmp-", ".fruix-tmp-"]
        .into_iter()
        .find_map(|mark| hidden.rsplit_once(mark))
        .map(|(of, _)| of)
}

/// A file fruix writes: a regular file, or a symlink where one was
/// planted (removed itself, never followed).
fn is_file(kind: FileType) -> bool {
    matches!(kind, FileType::RegularFile | FileType::Symlink)
}

/// Removes what an earlier run wrote in report directory `dir`, after
/// checking that it holds nothing else ([`Error::InvalidOption`] naming
/// the first other entry when it does; then nothing is removed).
fn clear_earlier_run(dir: &Path) -> Result<()> {
    let top = open_report_dir(dir)?;
    let mut found = Vec::new();
    for name in top.entries()? {
        let Some(kind) = kind_of(&top, &name)? else {
            continue;
        };
        match top_entry(&name, kind) {
            TopEntry::Foreign => return Err(not_a_report_dir(dir, &name)),
            entry => found.push((name, entry)),
        }
    }
    for (name, entry) in found {
        match entry {
            TopEntry::File => remove_if(&top, &name, is_file)?,
            TopEntry::Subdir(subdir) => clear_subdir(&top, subdir)?,
            TopEntry::LinkedSubdir | TopEntry::Foreign => {}
        }
    }
    Ok(())
}

/// Removes what fruix wrote in `subdir` of the report directory `top`.
fn clear_subdir(top: &OpenDir, subdir: Subdir) -> Result<()> {
    let Some(dir) = open_subdir(top, subdir)? else {
        return Ok(());
    };
    for name in dir.entries()? {
        let text = name.to_string_lossy();
        remove_if(&dir, &name, |kind| subdir.wrote(&text, kind))?;
    }
    Ok(())
}

/// The refusal of report directory `dir`, which holds `name`.
fn not_a_report_dir(dir: &Path, name: &OsStr) -> Error {
    Error::InvalidOption {
        option: "--report-dir",
        message: format!(
            "{} holds {}, which fruix does not write in a report directory; give a new or empty directory, or one an earlier `fruix matrix run` wrote (its report is then replaced)",
            escape::path(dir),
            escape::path(Path::new(name))
        ),
    }
}

/// Opens report directory `dir` (a symlink at `dir` itself followed: the
/// caller chose it).
fn open_report_dir(dir: &Path) -> Result<OpenDir> {
    Ok(OpenDir::open(dir, REPORT_DIR_TREE)?)
}

/// Opens `subdir` of a report directory without following a symlink;
/// `None` when it is missing, or is not a directory (a symlink there is
/// left alone).
fn open_subdir(top: &OpenDir, subdir: Subdir) -> Result<Option<OpenDir>> {
    match kind_of(top, subdir.name().as_ref())? {
        Some(FileType::Directory) => Ok(Some(top.open_beneath(subdir.name())?)),
        _ => Ok(None),
    }
}

/// The type of entry `name` of `dir`, not following a symlink; `None`
/// when there is none.
fn kind_of(dir: &OpenDir, name: &OsStr) -> Result<Option<FileType>> {
    Ok(dir.lstat(name)?.map(|st| stat::file_type(&st)))
}

/// Removes entry `name` of `dir` (a symlink itself, never what it names)
/// when its type is `removable`; a missing entry is fine.
fn remove_if(dir: &OpenDir, name: &OsStr, removable: impl Fn(FileType) -> bool) -> Result<()> {
    if !kind_of(dir, name)?.is_some_and(removable) {
        return Ok(());
    }
    match rustix::fs::unlinkat(dir.as_fd(), name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::Report {
            action: "remove",
            path: dir.child(name),
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// The names below `dir`, relative and sorted (not through symlinks).
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    todo.push(e.path());
                }
                let name = e.path().strip_prefix(dir).unwrap().to_owned();
                out.push(name.to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }

    /// Writes each of `files` (relative to `dir`, its parents made).
    fn write(dir: &Path, files: &[&str]) {
        for f in files {
            let path = dir.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, f).unwrap();
        }
    }

    #[test]
    fn what_fruix_writes_at_the_top_of_a_report_directory_is_known() {
        let (file, dir, link) = (
            FileType::RegularFile,
            FileType::Directory,
            FileType::Symlink,
        );
        for (name, kind, expected) in [
            ("report.json", file, TopEntry::File),
            ("junit.xml", link, TopEntry::File),
            ("machines.scm", file, TopEntry::File),
            ("cell-local-GENERIC.json", file, TopEntry::File),
            ("cell-local.machines.scm", file, TopEntry::File),
            (".report.json.tmp-12-0abc", file, TopEntry::File),
            (".cell-local.json.tmp-12-0abc", file, TopEntry::File),
            ("logs", dir, TopEntry::Subdir(Subdir::Logs)),
            ("results", link, TopEntry::LinkedSubdir),
            ("diffoscope", dir, TopEntry::Subdir(Subdir::Diffoscope)),
            ("report.json", dir, TopEntry::Foreign),
            ("logs", file, TopEntry::Foreign),
            ("notes.txt", file, TopEntry::Foreign),
            (".notes.txt.tmp-1", file, TopEntry::Foreign),
            ("cell-local.txt", file, TopEntry::Foreign),
            (".git", dir, TopEntry::Foreign),
        ] {
            assert_eq!(top_entry(name.as_ref(), kind), expected, "{name}");
        }
        for (subdir, name, kind, expected) in [
            (Subdir::Logs, "local.log", file, true),
            (Subdir::Logs, ".local.log.tmp-1-2", file, true),
            (Subdir::Logs, "notes.txt", file, false),
            (Subdir::Logs, "old.log", dir, false),
            (Subdir::Results, "local", link, true),
            (Subdir::Results, ".local.fruix-tmp-1-2", link, true),
            (Subdir::Results, "local", file, false),
            (Subdir::Diffoscope, "world-a-vs-b-1.txt", file, true),
            (Subdir::Diffoscope, "notes.md", file, false),
        ] {
            assert_eq!(subdir.wrote(name, kind), expected, "{subdir:?} {name}");
        }
    }

    #[test]
    fn a_whole_run_removes_what_an_earlier_run_wrote_and_follows_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let (report, victim) = (dir.path().join("report"), dir.path().join("victim"));
        write(&victim, &["a.log", "b.txt", "c/d.log"]);
        write(
            &report,
            &[
                "report.json",
                ".junit.xml.tmp-1-2",
                "cell-x.json",
                "cell-x.machines.scm",
                "logs/x.log",
                "logs/notes.txt",
                "results/kept-file",
                "diffoscope/w-a-vs-b-1.txt",
            ],
        );
        symlink(victim.join("a.log"), report.join("logs/linked.log")).unwrap();
        symlink(victim.join("c"), report.join("logs/dir.log")).unwrap();
        symlink(&victim, report.join("results/x")).unwrap();
        std::fs::create_dir(report.join("logs/subdir.log")).unwrap();
        let before = tree(&victim);
        let made = create_report_dir(Some(&report), dir.path(), ReportDirUse::Whole).unwrap();
        assert_eq!(made.path(), report);
        assert_eq!(
            tree(&report),
            [
                "diffoscope",
                "logs",
                "logs/notes.txt",
                "logs/subdir.log",
                "results",
                "results/kept-file"
            ]
        );
        assert_eq!(tree(&victim), before);
        // A symlink where a subdirectory belongs is not followed: its
        // target keeps what fruix would have removed from the directory.
        let report = dir.path().join("linked");
        std::fs::create_dir(&report).unwrap();
        symlink(&victim, report.join("diffoscope")).unwrap();
        create_report_dir(Some(&report), dir.path(), ReportDirUse::Whole).unwrap();
        assert_eq!(tree(&victim), before);
        assert_eq!(tree(&report), ["diffoscope", "logs"]);
        // A `results` symlink, where a passed cell's link would be refused,
        // is refused before anything is removed or written.
        std::fs::remove_dir(report.join("logs")).unwrap();
        symlink(&victim, report.join("results")).unwrap();
        let refused = create_report_dir(Some(&report), dir.path(), ReportDirUse::Whole);
        assert!(
            matches!(
                &refused,
                Err(Error::Core(fruix_core::Error::UnsafePath { path, .. }))
                    if *path == report.join("results")
            ),
            "{refused:?}"
        );
        assert_eq!(tree(&victim), before);
        assert_eq!(tree(&report), ["diffoscope", "results"]);
    }

    #[test]
    fn a_directory_holding_anything_else_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report");
        write(&report, &["report.json", "logs/x.log", "notes.txt"]);
        let before = tree(&report);
        let e = create_report_dir(Some(&report), dir.path(), ReportDirUse::Whole).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidOption { option: "--report-dir", message } if message.contains("holds notes.txt")),
            "{e:?}"
        );
        assert_eq!(e.failure(), fruix_core::Failure::Input);
        assert_eq!(tree(&report), before);
        // Shared, nothing is removed or refused.
        create_report_dir(Some(&report), dir.path(), ReportDirUse::Shared).unwrap();
        assert_eq!(tree(&report), before);
        // A new directory, and an empty one, are fine.
        for new in ["new", "empty"] {
            let path = dir.path().join(new);
            if new == "empty" {
                std::fs::create_dir(&path).unwrap();
            }
            create_report_dir(Some(&path), dir.path(), ReportDirUse::Whole).unwrap();
            assert_eq!(tree(&path), ["logs"]);
        }
    }

    #[test]
    fn a_cell_s_entries_are_cleared_and_no_other_cell_s() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path();
        write(
            report,
            &[
                "cell-a.json",
                "cell-a.machines.scm",
                "cell-b.json",
                "logs/a.log",
                "logs/b.log",
            ],
        );
        std::fs::create_dir(report.join("results")).unwrap();
        for id in ["a", "b"] {
            symlink("/nonexistent", report.join("results").join(id)).unwrap();
        }
        clear_cell(report, "a").unwrap();
        assert_eq!(
            tree(report),
            ["cell-b.json", "logs", "logs/b.log", "results", "results/b"]
        );
    }

    /// Regression: two runs into one report directory corrupted each
    /// other, the second's cleanup removing the first's logs and result
    /// links. A run has the directory to itself; cell runs and `collect`
    /// share it with one another only.
    #[test]
    fn a_report_directory_in_use_is_refused_to_a_whole_run() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report");
        let create = |using| create_report_dir(Some(&report), dir.path(), using);
        let refused = |e: Error| {
            assert!(
                matches!(&e, Error::ReportDirInUse { path } if *path == report),
                "{e}"
            );
        };
        let run = create(ReportDirUse::Whole).unwrap();
        write(&report, &["report.json", "logs/a.log"]);
        refused(create(ReportDirUse::Whole).unwrap_err());
        refused(create(ReportDirUse::Shared).unwrap_err());
        assert_eq!(tree(&report), ["logs", "logs/a.log", "report.json"]);
        drop(run);
        let cell = create(ReportDirUse::Shared).unwrap();
        let other_cell = create(ReportDirUse::Shared).unwrap();
        refused(create(ReportDirUse::Whole).unwrap_err());
        drop((cell, other_cell));
        create(ReportDirUse::Whole).unwrap();
        assert_eq!(tree(&report), ["logs"]);
    }
}
