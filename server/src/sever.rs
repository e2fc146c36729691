//! Connections a leader cuts when it stops leading (docs/DESIGN.md §11.3).
//!
//! Ending the gRPC server's future leaves the connections it accepted running, and
//! with them Session and lease streams that decide without asking anyone. Each
//! connection a leader accepts is wrapped in [`Severable`]: once its [`Severance`]
//! is cut, every read and write fails, hyper drops the connection, and its clients
//! reconnect to whoever serves the address next (this replica as a standby, or the
//! new leader).

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::watch,
};
use tonic::transport::server::Connected;

/// Cuts every [`Severable`] made from it, at once and for good.
#[derive(Debug)]
pub struct Severance(Option<watch::Sender<bool>>);

impl Default for Severance {
    fn default() -> Self {
        Self(Some(watch::Sender::new(false)))
    }
}

impl Severance {
    /// One that never cuts, for a daemon on its own store: its connections pay
    /// nothing per read or write.
    pub fn never() -> Self {
        Self(None)
    }

    /// Wraps `inner` so that [`Severance::cut`] ends it.
    pub fn wrap<IO>(&self, inner: IO) -> Severable<IO> {
        let Some(sender) = &self.0 else {
            return Severable {
                inner,
                is_cut: false,
                cut_signal: None,
            };
        };
        let mut cut = sender.subscribe();
        let is_cut = *cut.borrow();
        Severable {
            inner,
            is_cut,
            cut_signal: Some(Box::pin(async move {
                let _ = cut.wait_for(|cut| *cut).await;
            })),
        }
    }

    /// Fails every wrapped connection's reads and writes from now on (nothing for
    /// [`Severance::never`]).
    pub fn cut(&self) {
        if let Some(sender) = &self.0 {
            sender.send_replace(true);
        }
    }
}

/// An I/O stream that fails once its [`Severance`] is cut.
pub struct Severable<IO> {
    inner: IO,
    is_cut: bool,
    /// Resolves when cut (or when the [`Severance`] is dropped: the server is gone);
    /// `None`: never cut.
    cut_signal: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl<IO: std::fmt::Debug> std::fmt::Debug for Severable<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Severable")
            .field("inner", &self.inner)
            .field("is_cut", &self.is_cut)
            .finish_non_exhaustive()
    }
}

impl<IO> Severable<IO> {
    /// Whether the cut has come; registers the task to be woken when it does.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.is_cut
            && let Some(signal) = &mut self.cut_signal
            && signal.as_mut().poll(cx).is_ready()
        {
            self.is_cut = true;
        }
        self.is_cut
    }
}

fn severed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "this replica stopped leading",
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for Severable<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Severable<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.poll_cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_cut(cx) {
            return Poll::Ready(Err(severed()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Severable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_cut_fails_a_pending_read_and_every_write_after() {
        let (near, mut far) = tokio::io::duplex(64);
        let severance = Severance::default();
        let mut wrapped = severance.wrap(near);
        wrapped.write_all(b"ping").await.expect("before the cut");
        let mut got = [0; 4];
        far.read_exact(&mut got).await.expect("delivered");
        assert_eq!(&got, b"ping");
        // A read waiting for the peer is woken by the cut, not by data.
        let reader = tokio::spawn(async move {
            let mut buf = [0; 1];
            let read = wrapped.read(&mut buf).await;
            (read.map_err(|e| e.kind()), wrapped)
        });
        tokio::task::yield_now().await;
        severance.cut();
        let (read, mut wrapped) = reader.await.expect("join");
        assert_eq!(read, Err(io::ErrorKind::ConnectionAborted));
        let write = wrapped.write_all(b"late").await.map_err(|e| e.kind());
        assert_eq!(write, Err(io::ErrorKind::ConnectionAborted));
        // A connection wrapped after the cut is born cut.
        let (near, _far2) = tokio::io::duplex(64);
        let mut late = severance.wrap(near);
        assert!(late.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn one_that_never_cuts_leaves_its_connections_alone() {
        let (near, mut far) = tokio::io::duplex(64);
        let severance = Severance::never();
        let mut wrapped = severance.wrap(near);
        severance.cut();
        wrapped.write_all(b"still").await.expect("not cut");
        let mut got = [0; 5];
        far.read_exact(&mut got).await.expect("delivered");
        assert_eq!(&got, b"still");
    }
}
