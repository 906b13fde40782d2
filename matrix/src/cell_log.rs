//! A cell's log file, `REPORT_DIR/logs/ID.log`: opened relative to the
//! `logs/` descriptor the run holds ([`ReportDir::logs`]), never through a
//! symlink, and written only when it is a regular file of one link.
//!
//! The report directory may be shared with other jobs, or hold what a CI
//! engine unpacked: a symlink (or a hard link to a file elsewhere, or a
//! FIFO) planted at a cell's log while the run goes on, after its
//! start-of-run cleanup, must not have the build log written elsewhere.
//!
//!
//! A write that fails (a full disk, say) is never ignored: a log cut
//! short fails its cell as a system failure, as `fruix build` fails at
//! its first log write that fails, and the run with it ([`CellLog`],
//! [`LogFailure`]).
//!
//! [`ReportDir::logs`]: crate::report_dir::ReportDir::logs

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fruix_core::dir::{is_symlink_refusal, OpenDir};
use fruix_core::{Error, Result};
use rustix::fs::{FileType, Mode, OFlags};

/// The name of cell `id`'s log in `logs/`.
pub fn name(id: &str) -> String {
    format!("{id}.log")
}

/// Opens cell `id`'s log in `logs` for appending, creating it: a symlink
/// there, or anything but a regular file of one link, is an
/// [`Error::UnsafePath`], and nothing is written to it.
pub fn open(logs: &OpenDir, id: &str) -> Result<File> {
    let name = name(id);
    let path = logs.child(OsStr::new(&name));
    let unsafe_path = |message: &str| Error::UnsafePath {
        path: path.clone(),
        message: message.into(),
    };
    // O_NONBLOCK: a FIFO without a reader fails at once (ENXIO) instead
    // of hanging the run; it changes nothing for a regular file.
    let flags = OFlags::WRONLY
        | OFlags::APPEND
        | OFlags::CREATE
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(logs, &name, flags, Mode::from(0o644)).map_err(|e| match e {
        e if is_symlink_refusal(e) => {
            unsafe_path("is a symlink; fruix never writes a cell's log through one")
        }
        e => Error::io("open log", &path, e.into()),
    })?;
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("inspect", &path, e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(unsafe_path(
            "is not a regular file; fruix writes a cell's log only into a file of its own",
        ));
    }
    if st.st_nlink != 1 {
        return Err(unsafe_path(
            "has other hard links; fruix writes a cell's log only into a file of its own",
        ));
    }
    Ok(File::from(fd))
}

/// Appends `line` to cell `id`'s log in `logs`.
pub fn append(logs: &OpenDir, id: &str, line: &str) -> Result<()> {
    let mut log = CellLog::open(logs, id)?;
    log.line(line);
    log.failure().map_or(Ok(()), Err)
}

/// A cell's log, open for an attempt ([`open`]): each line written whole.
/// The first write that fails is kept ([`CellLog::failure`]), and nothing
/// is written after it.
#[derive(Debug)]
pub struct CellLog {
    file: File,
    path: PathBuf,
    failed: Option<io::Error>,
}

impl CellLog {
    /// Opens cell `id`'s log in `logs` ([`open`]).
    pub fn open(logs: &OpenDir, id: &str) -> Result<CellLog> {
        Ok(CellLog {
            file: open(logs, id)?,
            path: logs.child(OsStr::new(&name(id))),
            failed: None,
        })
    }

    /// Appends `line` and a newline; `false` once a write has failed
    /// (this one or an earlier one), and then nothing is written.
    pub fn line(&mut self, line: &str) -> bool {
        if self.failed.is_none() {
            if let Err(e) = self.file.write_all(format!("{line}\n").as_bytes()) {
                self.failed = Some(e);
            }
        }
        self.failed.is_none()
    }

    /// The first write that failed, as an [`Error::Io`] (`failed to write
    /// log file PATH: ...`, a system failure); `None` while all succeeded.
    pub fn failure(&self) -> Option<Error> {
        let e = self.failed.as_ref()?;
        let copy = match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        };
        Some(Error::io("write log file", &self.path, copy))
    }
}

/// The first cell log of a run that could not be written, shared by its
/// attempts: the run fails with it once its report is written.
#[derive(Debug, Clone, Default)]
pub struct LogFailure(Arc<Mutex<Option<Error>>>);

impl LogFailure {
    /// Keeps `e` unless a failure is kept already.
    pub fn note(&self, e: Error) {
        let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }

    /// The failure kept, taken out.
    pub fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fruix_core::dir::TreeKind;
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    fn logs() -> (tempfile::TempDir, OpenDir) {
        let dir = tempfile::tempdir().unwrap();
        let logs = OpenDir::open(dir.path(), TreeKind::READ).unwrap();
        (dir, logs)
    }

    #[test]
    fn a_log_is_created_and_appended_to() {
        let (dir, logs) = logs();
        append(&logs, "a", "one").unwrap();
        append(&logs, "a", "two").unwrap();
        let text = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
        assert_eq!(text, "one\ntwo\n");
    }

    /// Regression: a symlink planted at a cell's log had the build log
    /// appended to its target.
    #[test]
    fn a_symlink_at_a_log_is_refused_and_not_written_through() {
        let (dir, logs) = logs();
        let target = dir.path().join("outside");
        std::fs::write(&target, "kept\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("a.log")).unwrap();
        let e = open(&logs, "a").unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        assert!(append(&logs, "a", "leaked").is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept\n");
    }

    /// Regression: a write that failed (a full disk) was ignored, and the
    /// log cut short without a word. The first failure is kept, said as
    /// the log's, and nothing is written after it.
    #[test]
    fn a_write_that_fails_is_kept_and_ends_the_writing() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut log = CellLog {
            file,
            path: "/r/logs/a.log".into(),
            failed: None,
        };
        assert!(log.failure().is_none());
        assert!(!log.line("one"));
        assert!(!log.line("two"));
        let e = log.failure().unwrap();
        assert_eq!(e.failure(), fruix_core::Failure::System);
        let said = e.to_string();
        assert!(
            said.starts_with("failed to write log file /r/logs/a.log: No space left on device"),
            "{said}"
        );
        let kept = LogFailure::default();
        kept.note(e);
        kept.note(Error::system("later"));
        assert!(kept.take().unwrap().to_string().contains("a.log"));
        assert!(kept.take().is_none());
    }

    /// A hard link to a file elsewhere, or a FIFO, is no log of its own.
    #[test]
    fn a_hard_link_or_a_fifo_at_a_log_is_refused() {
        let (dir, logs) = logs();
        let target = dir.path().join("outside");
        std::fs::write(&target, "kept\n").unwrap();
        std::fs::hard_link(&target, dir.path().join("a.log")).unwrap();
        assert!(matches!(open(&logs, "a"), Err(Error::UnsafePath { .. })));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept\n");
        let fifo = dir.path().join("b.log");
        fruix_core::testing::mkfifo(&fifo).unwrap();
        // With no reader, the open fails at once instead of waiting.
        assert!(open(&logs, "b").is_err());
        // With a reader, the FIFO is refused by type.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert!(matches!(open(&logs, "b"), Err(Error::UnsafePath { .. })));
        let mut got = Vec::new();
        let _ = reader.read_to_end(&mut got);
        assert!(got.is_empty());
    }
}
