//! A cell's log file, `REPORT_DIR/logs/ID.log`: opened relative to the
//! `logs/` descriptor the run holds ([`ReportDir::logs`]), never through a
//! symlink, and written only when it is a regular file of one link.
//!
//! The report directory may be shared with other jobs, or hold what a CI
//! engine unpacked: a symlink (or a hard link to a file elsewhere, or a
//! FIFO) planted at a cell's log while the run goes on, after its
//! start-of-run cleanup, must not have the build log written elsewhere.
//!
//! [`ReportDir::logs`]: crate::report_dir::ReportDir::logs

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;

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

/// Appends `line` to cell `id`'s log in `logs`, as far as it can be.
pub fn append(logs: &OpenDir, id: &str, line: &str) {
    let _ = open(logs, id).and_then(|mut log| {
        writeln!(log, "{line}").map_err(|e| Error::io("write", logs.child(name(id).as_ref()), e))
    });
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
        append(&logs, "a", "one");
        append(&logs, "a", "two");
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
        append(&logs, "a", "leaked");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept\n");
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
