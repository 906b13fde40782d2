//! An idle limit on a byte stream read from another machine: a read that
//! waits longer than the limit for its first byte fails, so that a peer
//! alive for SSH keepalives but silent (a hung `store serve`) cannot hang a
//! copy forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `inner`, whose reads fail with [`io::ErrorKind::TimedOut`] once one has
/// waited `limit` without a byte. Only time spent waiting in a read counts:
/// the clock starts when a read finds nothing to take, and stops when bytes
/// (or the end of the stream) arrive. Once a read timed out, every later
/// read fails the same way, and [`Stalled::fired`] says so.
pub struct IdleLimit<R> {
    inner: R,
    limit: Duration,
    /// Fires `limit` after the pending read started waiting, when `armed`.
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    stalled: Stalled,
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
        let limit = limit.min(LONGEST);
        let stalled = Stalled::default();
        let reader = IdleLimit {
            inner,
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            armed: false,
            stalled: stalled.clone(),
        };
        (reader, stalled)
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nothing came for {}s", self.limit.as_secs_f64()),
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleLimit<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.stalled.fired() {
            return Poll::Ready(Err(this.timed_out()));
        }
        if let Poll::Ready(read) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            this.armed = false;
            return Poll::Ready(read);
        }
        if !this.armed {
            this.armed = true;
            let deadline = Instant::now() + this.limit;
            this.sleep.as_mut().reset(deadline);
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.armed = false;
                this.stalled.0.store(true, Ordering::SeqCst);
                Poll::Ready(Err(this.timed_out()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
