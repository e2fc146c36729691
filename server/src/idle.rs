//! Closing connections that say nothing (docs/DESIGN.md §7).
//!
//! A TCP connection that never completes its HTTP/2 preface, or goes silent after it,
//! holds a file descriptor forever: with `ulimit -n 256`, 300 such connections made
//! health checks fail. Each accepted connection is wrapped in [`IdleTimeout`]: it must
//! deliver the 24-byte HTTP/2 client preface (or, with TLS, its first bytes) within
//! `--handshake-timeout`, and after that must not be silent for longer than
//! `--idle-timeout`. A live client is never silent that long: the daemon sends HTTP/2
//! PINGs every `--http2-keepalive-interval` and a client answers each (a client that
//! does not answer within `--http2-keepalive-timeout` is closed by hyper).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`: 24 bytes.
const PREFACE_LEN: u64 = 24;

/// How long a connection may take to start, and to stay silent after.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Until the first [`PREFACE_LEN`] bytes have arrived, counted from the accept.
    pub handshake: Duration,
    /// Between two reads once the connection has started.
    pub idle: Duration,
}

/// An I/O stream that fails its reads with `TimedOut` once the peer has been silent
/// past its deadline, which makes hyper close the connection.
#[derive(Debug)]
pub struct IdleTimeout<IO> {
    inner: IO,
    timeouts: Timeouts,
    /// Bytes read so far (saturating); the handshake phase ends at [`PREFACE_LEN`].
    read: u64,
    deadline: Pin<Box<Sleep>>,
}

/// `now + after`, or a year from now when that does not fit (an absurd flag).
fn far_or(now: Instant, after: Duration) -> Instant {
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

impl<IO> IdleTimeout<IO> {
    /// Wraps a just-accepted connection.
    pub fn new(inner: IO, timeouts: Timeouts) -> Self {
        Self {
            inner,
            timeouts,
            read: 0,
            deadline: Box::pin(tokio::time::sleep_until(far_or(
                Instant::now(),
                timeouts.handshake,
            ))),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for IdleTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    this.read = this.read.saturating_add(n);
                    // Still in the handshake: the handshake deadline stands.
                    if this.read >= PREFACE_LEN {
                        this.deadline
                            .as_mut()
                            .reset(far_or(Instant::now(), this.timeouts.idle));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let (phase, after) = if this.read < PREFACE_LEN {
                        ("handshake", this.timeouts.handshake)
                    } else {
                        ("idle", this.timeouts.idle)
                    };
                    tracing::debug!(phase, ?after, "closing a silent connection");
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connection silent past its {phase} timeout ({after:?})"),
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<IO: Connected> Connected for IdleTimeout<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        handshake: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_fails_at_the_handshake_timeout() {
        let (_peer, ours) = duplex(64);
        let mut conn = IdleTimeout::new(ours, TIMEOUTS);
        let started = Instant::now();
        let err = conn.read(&mut [0u8; 8]).await.expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUTS.handshake);
    }

    #[tokio::test(start_paused = true)]
    async fn half_a_preface_does_not_start_the_connection() {
        let (mut peer, ours) = duplex(64);
        let mut conn = IdleTimeout::new(ours, TIMEOUTS);
        let started = Instant::now();
        peer.write_all(b"PRI * HTTP/2.0").await.expect("write");
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).await.expect("the half preface");
        assert_eq!(n, 14);
        let err = conn.read(&mut buf).await.expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUTS.handshake, "no extension");
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_preface_each_read_extends_the_idle_deadline() {
        let (mut peer, ours) = duplex(64);
        let mut conn = IdleTimeout::new(ours, TIMEOUTS);
        let mut buf = [0u8; 64];
        peer.write_all(&[0u8; 24]).await.expect("preface");
        assert_eq!(conn.read(&mut buf).await.expect("preface"), 24);
        // A read every 50 s keeps it open well past both timeouts.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(50)).await;
            peer.write_all(b"ping").await.expect("write");
            assert_eq!(conn.read(&mut buf).await.expect("alive"), 4);
        }
        let silent_from = Instant::now();
        let err = conn.read(&mut buf).await.expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(silent_from.elapsed(), TIMEOUTS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_timeout_is_a_far_deadline_not_a_panic() {
        let (mut peer, ours) = duplex(64);
        let endless = Timeouts {
            handshake: Duration::MAX,
            idle: Duration::MAX,
        };
        let mut conn = IdleTimeout::new(ours, endless);
        peer.write_all(&[0u8; 24]).await.expect("preface");
        assert_eq!(conn.read(&mut [0u8; 64]).await.expect("read"), 24);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_pass_through() {
        let (mut peer, ours) = duplex(64);
        let mut conn = IdleTimeout::new(ours, TIMEOUTS);
        conn.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        peer.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hello");
    }
}
