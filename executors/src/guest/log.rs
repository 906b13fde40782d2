//! The host's log file of a stage run in the guest (`logs/STAGE.log` in the
//! result root): each line the guest sent, escaped as the terminal display
//! shows log lines ([`escape::line`]), so that reading the log (`cat`) can
//! never drive a terminal, and a line never shows as two.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use fruix_core::error::IoContext;
use fruix_core::{escape, Error, Result};

/// A log file being written; [`StageLog::close`] says whether every line
/// was written.
pub(super) struct StageLog {
    path: PathBuf,
    file: BufWriter<std::fs::File>,
    /// The first write that failed.
    failed: Option<std::io::Error>,
}

impl StageLog {
    /// Creates (or truncates) the log file `path`.
    pub(super) fn create(path: PathBuf) -> Result<StageLog> {
        let file = std::fs::File::create(&path).with_path("create log file", &path)?;
        Ok(StageLog {
            path,
            file: BufWriter::new(file),
            failed: None,
        })
    }

    /// Adds the guest's line `line`, escaped. After a failed write nothing
    /// more is written; [`StageLog::close`] reports the failure.
    pub(super) fn line(&mut self, line: &str) {
        if self.failed.is_none() {
            if let Err(e) = writeln!(self.file, "{}", escape::line(line)) {
                self.failed = Some(e);
            }
        }
    }

    /// Flushes the log; returns its path, or the first write that failed.
    pub(super) fn close(mut self) -> Result<PathBuf> {
        let flushed = self.file.flush();
        match self.failed.take().map_or(flushed, Err) {
            Ok(()) => Ok(self.path),
            Err(e) => Err(Error::io("write log file", &self.path, e)),
        }
    }
}

/// Removes the closed log `path` and its `logs/` directory, which nothing
/// else was written to: for a guest whose result root brings a `logs/` of
/// its own, which the import places only where there is none.
pub(super) fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).with_path("remove log file", path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::remove_dir(dir).with_path("remove logs directory", dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_line_is_escaped_as_the_display_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = StageLog::create(dir.path().join("step.log")).unwrap();
        log.line("\u{1b}]0;title\u{7}\u{1b}[31mred\nforged\tline \\n");
        log.line("plain");
        let path = log.close().unwrap();
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "\\033]0;title\\007\\033[31mred\\nforged\tline \\n\nplain\n"
        );
    }
}
