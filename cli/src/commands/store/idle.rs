//! An idle limit on the byte streams to and from another machine: a read
//! that waits longer than the limit for its first byte, or a write that
//! waits that long for room, fails, so that a peer alive for SSH keepalives
//! but hung (a `store serve` that neither answers nor reads) cannot hang a
//! copy forever. A stream may also be cancelled (Ctrl-C): a read or write
//! waiting on the peer then fails at once.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// `inner`, whose reads (or writes) fail with [`io::ErrorKind::TimedOut`]
/// once one has waited `limit` without a byte (or without room for one).
/// Only time spent waiting counts: the clock starts when a read finds
/// nothing to take (a write no room), and stops when it can go on. Once one
/// timed out, every later read and write fails the same way, and
/// [`Stalled::fired`] says so.
pub struct IdleLimit<R> {
    inner: R,
    limit: Duration,
    /// Fires `limit` after the pending read started waiting, when `armed`.
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    stalled: Stalled,
    /// Once this is ready, reads, writes and flushes fail at once (see
    /// [`IdleLimit::cancelled_by`]).
    cancelled: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

/// Whether an [`IdleLimit`] timed out, for its owner once the reader is
/// gone (a reader's error may reach the owner as another error).
#[derive(Debug, Clone, Default)]
pub struct Stalled(Arc<AtomicBool>);

impl Stalled {
    /// Whether a read waited out its limit.
    pub fn fired(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A limit beyond this is as good as none (and keeps deadlines
/// representable).
const LONGEST: Duration = Duration::from_secs(100 * 365 * 86400);

impl<R> IdleLimit<R> {
    /// Wraps `inner`; must be called within a Tokio runtime (the clock).
    pub fn new(inner: R, limit: Duration) -> (IdleLimit<R>, Stalled) {
        let stalled = Stalled::default();
        (IdleLimit::sharing(inner, limit, &stalled), stalled)
    }

    /// Wraps `inner` under the same limit as another stream of the same
    /// peer: either timing out fires `stalled`, and stops both.
    pub fn sharing(inner: R, limit: Duration, stalled: &Stalled) -> IdleLimit<R> {
        let limit = limit.min(LONGEST);
        IdleLimit {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            armed: false,
            stalled: stalled.clone(),
            cancelled: None,
        }
    }

    /// The same stream, whose reads, writes and flushes fail once `cancel`
    /// is cancelled, even one waiting on the peer (a copy cancelled by
    /// Ctrl-C). A shutdown still goes through: it tells the peer the
    /// stream ended, which is how a peer importing learns that it must
    /// drop what it received.
    pub fn cancelled_by(mut self, cancel: &CancellationToken) -> IdleLimit<R> {
        self.cancelled = Some(Box::pin(cancel.clone().cancelled_owned()));
        self
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nothing moved for {}s", self.limit.as_secs_f64()),
        )
    }

    /// What the inner stream's `polled` becomes: passed on when ready (the
    /// clock stops), else pending until the clock, started now if it is
    /// not running, runs out.
    fn waited<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.limit;
            self.sleep.as_mut().reset(deadline);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = false;
                self.stalled.0.store(true, Ordering::SeqCst);
                Poll::Ready(Err(self.timed_out()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// `poll` of the inner stream, under the limit: refused once it was
    /// waited out, else [`IdleLimit::waited`].
    /// A `cancellable` poll fails at once once the stream is cancelled.
    fn guarded<T>(
        &mut self,
        cx: &mut Context<'_>,
        cancellable: bool,
        poll: impl FnOnce(Pin<&mut R>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        R: Unpin,
    {
        if self.stalled.fired() {
            return Poll::Ready(Err(self.timed_out()));
        }
        // Polled first, so that the cancellation wakes a wait.
        let cancelled = self.cancelled.as_mut().map(|c| c.as_mut().poll(cx));
        if cancellable && cancelled.is_some_and(|c| c.is_ready()) {
            return Poll::Ready(Err(io::Error::other("cancelled")));
        }
        let polled = poll(Pin::new(&mut self.inner), cx);
        self.waited(cx, polled)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleLimit<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut()
            .guarded(cx, true, |r, cx| r.poll_read(cx, buf))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for IdleLimit<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guarded(cx, true, |w, cx| w.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guarded(cx, true, AsyncWrite::poll_flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guarded(cx, false, AsyncWrite::poll_shutdown)
    }
}

/// A file descriptor read synchronously under the same limit: each read
/// first waits (`poll(2)`) at most `limit` for a byte, then reads what is
/// there, so it never blocks past the limit. For `store serve`, whose reads
/// come in pipe-sized pieces: a read through a Tokio file would hand each
/// piece to another thread and back.
pub struct PolledReader {
    fd: OwnedFd,
    limit: Duration,
    stalled: Stalled,
}

impl PolledReader {
    /// Reads `fd` under `limit`; timing out fires `stalled` (shared with the
    /// [`IdleLimit`] of the peer's other stream, which then stops too), as
    /// does the other stream's timing out this reader.
    pub fn sharing(fd: OwnedFd, limit: Duration, stalled: &Stalled) -> PolledReader {
        PolledReader {
            fd,
            limit: limit.min(LONGEST),
            stalled: stalled.clone(),
        }
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nothing moved for {}s", self.limit.as_secs_f64()),
        )
    }
}

impl io::Read for PolledReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        if self.stalled.fired() {
            return Err(self.timed_out());
        }
        let deadline = std::time::Instant::now() + self.limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let timeout = Timespec::try_from(left).map_err(io::Error::other)?;
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                // Readable, at its end, or failed: the read says which.
                Ok(n) if n > 0 => break,
                Ok(_) if left.is_zero() => {
                    self.stalled.0.store(true, Ordering::SeqCst);
                    return Err(self.timed_out());
                }
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            match rustix::io::read(&self.fd, &mut *buf) {
                Err(rustix::io::Errno::INTR) => {}
                read => return read.map_err(Into::into),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Fails the test rather than hanging it.
    async fn bounded<T>(work: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), work)
            .await
            .expect("the read neither ended nor timed out")
    }

    #[tokio::test]
    async fn a_read_that_waits_out_the_limit_times_out_and_every_later_one_too() {
        let (mut peer, stream) = tokio::io::duplex(64);
        let (mut reader, stalled) = IdleLimit::new(stream, Duration::from_millis(50));
        let mut buf = [0; 8];
        assert!(!stalled.fired());
        let e = bounded(reader.read(&mut buf)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(stalled.fired());
        // Bytes that come too late are not taken.
        peer.write_all(b"late").await.unwrap();
        let e = bounded(reader.read(&mut buf)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_write_that_waits_out_the_limit_for_room_stops_the_reader_too() {
        // A peer that never reads: 64 bytes of room, then none.
        let (_peer, stream) = tokio::io::duplex(64);
        let (_idle_peer, read_side) = tokio::io::duplex(64);
        let (mut reader, stalled) = IdleLimit::new(read_side, Duration::from_secs(3600));
        let mut writer = IdleLimit::sharing(stream, Duration::from_millis(50), &stalled);
        let e = bounded(writer.write_all(&[7; 1024])).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(stalled.fired());
        // The other stream of that peer is stopped too, without waiting.
        let e = bounded(reader.read(&mut [0; 8])).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_cancelled_stream_fails_a_waiting_read_at_once_but_still_shuts_down() {
        let (_peer, stream) = tokio::io::duplex(64);
        let cancel = CancellationToken::new();
        let (reader, stalled) = IdleLimit::new(stream, Duration::from_secs(3600));
        let mut reader = reader.cancelled_by(&cancel);
        let mut buf = [0; 8];
        {
            // A read waiting on a peer that sends nothing ends once cancelled.
            let read = reader.read(&mut buf);
            tokio::pin!(read);
            let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "{first:?}");
            cancel.cancel();
            let e = bounded(read).await.unwrap_err();
            assert_eq!(e.to_string(), "cancelled");
        }
        assert!(!stalled.fired(), "a cancellation is no timeout");
        // The end of the stream still reaches the peer.
        bounded(reader.shutdown()).await.unwrap();
        let e = bounded(reader.write_all(b"more")).await.unwrap_err();
        assert_eq!(e.to_string(), "cancelled");
    }

    #[tokio::test]
    async fn bytes_and_the_end_of_the_stream_pass_through() {
        let (mut peer, stream) = tokio::io::duplex(64);
        // The longest limit `--idle-timeout` takes arms no clock that overflows.
        let (mut reader, stalled) = IdleLimit::new(stream, Duration::from_secs(u64::MAX));
        // A read that is waiting when the bytes come.
        let writer = tokio::spawn(async move {
            peer.write_all(b"answer").await.unwrap();
        });
        let mut got = Vec::new();
        bounded(reader.read_to_end(&mut got)).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, b"answer");
        assert!(!stalled.fired());
    }

    fn polled(limit: Duration) -> (PolledReader, std::io::PipeWriter, Stalled) {
        let (read, write) = std::io::pipe().unwrap();
        let stalled = Stalled::default();
        let reader = PolledReader::sharing(OwnedFd::from(read), limit, &stalled);
        (reader, write, stalled)
    }

    #[test]
    fn a_polled_read_that_waits_out_the_limit_times_out_and_every_later_one_too() {
        let (mut reader, mut peer, stalled) = polled(Duration::from_millis(50));
        let e = reader.read(&mut [0; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(stalled.fired());
        peer.write_all(b"late").unwrap();
        let e = reader.read(&mut [0; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_polled_read_takes_what_is_there_then_the_end() {
        // The longest limit `--idle-timeout` takes overflows nothing.
        let (mut reader, mut peer, stalled) = polled(Duration::from_secs(u64::MAX));
        peer.write_all(b"answer").unwrap();
        drop(peer);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"answer");
        assert!(!stalled.fired());
    }

    #[test]
    fn a_polled_reader_stops_once_its_peer_s_other_stream_timed_out() {
        let (mut reader, mut peer, stalled) = polled(Duration::from_secs(3600));
        stalled.0.store(true, Ordering::SeqCst);
        peer.write_all(b"there").unwrap();
        let e = reader.read(&mut [0; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
