//! The other side's `fruix store serve` as `store copy` speaks to it: its
//! stdin, for the protocol's client to write, and its end, waited for once
//! its output ended (see [`fruix_promote::serve::ServingSide`]).

use std::io::{self, Write};
use std::time::Duration;

use fruix_core::bounded::Tail;
use fruix_executors::ssh::RemoteExit;
use fruix_promote::serve::ServingSide;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

/// How long the other side may take to end after its input ended.
pub(super) const SERVE_END: Duration = Duration::from_secs(30);

/// How the other side ended: its stderr's last lines, and its exit
/// (`None`: the channel closed without one, the connection lost).
type Ended = (Tail, Option<RemoteExit>);

/// The other side's `store serve`, as the protocol client speaks to it:
/// its stdin, and how it ended, once waited for.
pub(super) struct Serving<W> {
    pub(super) stdin: SyncIoBridge<W>,
    /// Whether its stdin was ended (end-of-file sent).
    pub(super) input_ended: bool,
    /// Ends when the channel closes
    /// ([`fruix_executors::ssh::RemoteStdio::finished`]).
    pub(super) finished: tokio::task::JoinHandle<Ended>,
    /// How it ended, once [`ServingSide::ended`] waited for it; `Some(None)`
    /// when it had not ended [`SERVE_END`] after its output did.
    pub(super) ended: Option<Option<Ended>>,
    /// Cancels the wait (Ctrl-C, `--timeout`).
    pub(super) cancel: CancellationToken,
}

impl<W: tokio::io::AsyncWrite + Unpin> Write for Serving<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stdin.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stdin.flush()
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> ServingSide for Serving<W> {
    fn end_input(&mut self) -> io::Result<()> {
        self.input_ended = true;
        self.stdin.flush()?;
        self.stdin.shutdown()
    }

    /// Waits (in `block_in_place`) for the channel to close, at most
    /// [`SERVE_END`]: the other side's output ended, so it is ending.
    fn ended(&mut self) -> fruix_promote::Result<()> {
        let (finished, cancel) = (&mut self.finished, &self.cancel);
        let waited = tokio::runtime::Handle::current().block_on(async {
            tokio::select! {
                ended = tokio::time::timeout(SERVE_END, finished) => Some(ended),
                () = cancel.cancelled() => None,
            }
        });
        let Some(waited) = waited else {
            return Err(fruix_core::Error::Cancelled.into());
        };
        let ended = waited.ok().map(|joined| joined.unwrap_or_default());
        let clean = exited_0(ended.as_ref());
        self.ended = Some(ended);
        if clean {
            return Ok(());
        }
        Err(
            fruix_core::Error::system("the other side did not end cleanly after its last answer")
                .into(),
        )
    }
}

impl<W> Serving<W> {
    /// Whether it was waited for, and did not end cleanly.
    pub(super) fn unclean(&self) -> bool {
        self.ended.as_ref().is_some_and(|e| !exited_0(e.as_ref()))
    }
}

/// Whether the other side ended as a server must: it exited 0.
fn exited_0(ended: Option<&Ended>) -> bool {
    matches!(ended, Some((_, Some(exit))) if exit.success())
}
