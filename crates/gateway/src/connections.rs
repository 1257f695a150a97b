//! Counting the agent gateway's open connections for the metrics
//! (`serviceradar_gateway_connections`).
//!
//! It exists because the gateway's RPCs are short calls on a long-lived
//! HTTP/2 connection that each agent keeps open: the number of open
//! connections on a replica is the number of agents connected to it, which
//! no RPC counter shows. Each accepted TCP connection is wrapped in a
//! `Counted` stream that adds one to the gauge and takes it away when the
//! connection is dropped (closed by either side, or refused by TLS).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The gauge of open connections to the agent gateway on this replica.
pub const CONNECTIONS: &str = "serviceradar_gateway_connections";

/// A connection counted in [`CONNECTIONS`] while it lives.
#[derive(Debug)]
pub(crate) struct Counted {
    inner: TcpStream,
}

impl Counted {
    /// Counts `inner` as open.
    pub(crate) fn new(inner: TcpStream) -> Self {
        metrics::gauge!(CONNECTIONS).increment(1.0);
        Self { inner }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS).decrement(1.0);
    }
}

/// Sets the gauge to zero so the series exists before the first agent.
pub(crate) fn describe() {
    metrics::gauge!(CONNECTIONS).increment(0.0);
}

impl Connected for Counted {
    // The same as a bare TCP stream's, so `Request::peer_certs` finds the
    // TLS connection info tonic wraps around it.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
