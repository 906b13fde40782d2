//! A step's output: its pipes, read in chunks and split into bounded lines
//! ([`Output`]), and its log file, events and last lines ([`StepLog`]).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter};

use super::{Step, MAX_LINE_BYTES, READ_CHUNK, TAIL_LINES};
use crate::bounded::{LineSplitter, Tail};
use crate::error::{Error, IoContext, Result};
use crate::executor::Stream;

/// One output pipe of a step, read in chunks and split into lines of at
/// most [`MAX_LINE_BYTES`].
pub(super) struct Output<R> {
    pub(super) pipe: R,
    chunk: Box<[u8]>,
    lines: LineSplitter,
}

impl<R: AsyncRead + Unpin> Output<R> {
    pub(super) fn new(pipe: R) -> Self {
        Output {
            pipe,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            lines: LineSplitter::new(MAX_LINE_BYTES, None),
        }
    }

    /// Reads the next chunk (cancel-safe: nothing is read unless it
    /// completes).
    pub(super) async fn read(&mut self) -> std::io::Result<usize> {
        self.pipe.read(&mut self.chunk).await
    }

    /// The lines completed by the `n` bytes just read; at the end (`n` is
    /// 0), the last line if it has no newline.
    pub(super) fn split(&mut self, n: usize) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        match n {
            0 => self.lines.finish(|l| lines.push(l.to_vec())),
            n => self
                .lines
                .push(&self.chunk[..n], |l| lines.push(l.to_vec())),
        }
        lines
    }
}

/// A step's log: the file, the events, and the last lines.
pub(super) struct StepLog<'a> {
    step: &'a Step<'a>,
    file: BufWriter<tokio::fs::File>,
    pub(super) tail: Tail,
}

impl<'a> StepLog<'a> {
    /// The step's log file, new: whatever is at its name (a symlink or a
    /// hard link a stage planted there, to a file fruix running as root
    /// would truncate) is removed, never written through, and the file is
    /// made anew (`O_EXCL`, `O_NOFOLLOW`). Anything else there (a FIFO, a
    /// directory) is refused as [`Error::UnsafePath`], input (exit 4).
    pub(super) async fn create(step: &'a Step<'a>) -> Result<StepLog<'a>> {
        // Only a file or a link is replaced: a device, a FIFO or a
        // directory at the name is refused, never removed. It is what the
        // run left (a stage's doing), the same at every try: input, not a
        // failure of this host.
        match tokio::fs::symlink_metadata(step.log).await {
            Ok(m) if m.is_file() || m.is_symlink() => tokio::fs::remove_file(step.log)
                .await
                .with_path("replace log file", step.log)?,
            Ok(m) => {
                return Err(Error::UnsafePath {
                    path: step.log.to_path_buf(),
                    message: format!(
                        "is a {}, not a log file: fruix makes each step's log anew, and never writes into nor removes anything else there; remove it",
                        crate::fsutil::file_type_name(m.file_type())
                    ),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("replace log file", step.log, e)),
        }
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(step.log)
            .await
            .with_path("create log file", step.log)?;
        Ok(StepLog {
            step,
            file: BufWriter::new(file),
            tail: Tail::new(TAIL_LINES),
        })
    }

    /// Handles the result of one read of `output`: logs the lines it
    /// completed. Returns whether the stream is still open.
    pub(super) async fn take<R: AsyncRead + Unpin>(
        &mut self,
        read: std::io::Result<usize>,
        stream: Stream,
        output: &mut Output<R>,
    ) -> Result<bool> {
        let n = read.map_err(|e| {
            Error::system(format!(
                "cannot read the output of step {}: {e}",
                self.step.stage
            ))
        })?;
        for line in output.split(n) {
            self.line(stream, &line).await?;
        }
        Ok(n > 0)
    }

    async fn line(&mut self, stream: Stream, bytes: &[u8]) -> Result<()> {
        let text = crate::escape::utf8_or_octal(bytes);
        let text = text.trim_end_matches(['\n', '\r']);
        // The file is read with `cat` and `less`: what the build printed
        // cannot drive the terminal from it either.
        self.file
            .write_all(format!("{}\n", crate::escape::line(text)).as_bytes())
            .await
            .with_path("write log file", self.step.log)?;
        self.tail.push(text);
        self.step.events.log(self.step.stage, stream, text);
        Ok(())
    }

    pub(super) async fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .await
            .with_path("write log file", self.step.log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Failure;
    use crate::executor::EventSink;
    use tokio_util::sync::CancellationToken;

    /// Regression: a FIFO or a directory a stage left at a step's log
    /// file was a failure of this host (exit 3, "a retry may succeed"),
    /// though it fails the same way every time. It is what the run left,
    /// refused as input (exit 4), and left where it is.
    #[tokio::test]
    async fn what_is_at_a_log_file_but_a_file_is_refused_as_input() {
        let dir = tempfile::tempdir().unwrap();
        let (events, cancel) = (EventSink::discard(), CancellationToken::new());
        for kind in ["FIFO", "directory"] {
            let log = dir.path().join(format!("{kind}.log"));
            match kind {
                "FIFO" => crate::testing::mkfifo(&log).unwrap(),
                _ => std::fs::create_dir(&log).unwrap(),
            }
            let step = Step {
                stage: "collect",
                log: &log,
                events: &events,
                cancel: &cancel,
                timeout: None,
                term_grace: crate::process::TERM_GRACE,
                hint: "",
            };
            let Err(e) = StepLog::create(&step).await else {
                panic!("{kind}: accepted");
            };
            assert_eq!(e.failure(), Failure::Input, "{kind}: {e}");
            let expected = format!(
                "{}: is a {kind}, not a log file: fruix makes each step's log anew, and never writes into nor removes anything else there; remove it",
                log.display()
            );
            assert_eq!(e.to_string(), expected);
            assert!(log.symlink_metadata().is_ok(), "{kind}: left where it is");
        }
    }
}
