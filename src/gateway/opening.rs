//! A new connection's opening bytes, read under a deadline before hyper-util's HTTP/1-or-2
//! detection sees them: that detection waits for the first bytes with no timeout, so a
//! silent connection would otherwise hold a permit and a descriptor for ever.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 client preface; detection reads up to its length.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Why a connection never got as far as a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unopened {
    /// It closed (or failed) first: a probe, a client that gave up.
    Closed,
    /// Still silent, or only part of the preface in, at the deadline.
    Silent,
}

/// Reads until the bytes read decide the protocol (they differ from the HTTP/2 preface, or
/// the whole preface is in), all within `deadline`. On an error the caller drops the
/// connection.
///
/// # Errors
/// [`Unopened`]: the peer closed first, or was still silent at the deadline.
pub async fn read<I>(mut io: I, deadline: Duration) -> Result<Prefixed<I>, Unopened>
where
    I: AsyncRead + Unpin,
{
    let mut head = Vec::with_capacity(H2_PREFACE.len());
    let reading = async {
        let mut buf = [0u8; 24];
        loop {
            let want = H2_PREFACE.len() - head.len();
            let n = io.read(&mut buf[..want]).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() == H2_PREFACE.len() || !H2_PREFACE.starts_with(&head) {
                return Some(());
            }
        }
    };
    match tokio::time::timeout(deadline, reading).await {
        Err(_) => return Err(Unopened::Silent),
        Ok(None) => return Err(Unopened::Closed),
        Ok(Some(())) => {}
    }
    Ok(Prefixed { head, at: 0, io })
}

/// A stream whose first bytes were already read: they are replayed before the rest.
pub struct Prefixed<I> {
    head: Vec<u8>,
    at: usize,
    io: I,
}

impl<I> Prefixed<I> {
    /// Whether the connection opened with the HTTP/2 preface (else it speaks HTTP/1).
    #[must_use]
    pub fn is_h2(&self) -> bool {
        self.head == H2_PREFACE
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.head.len() {
            let rest = &this.head[this.at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.head.len() {
                this.head = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn http1_opening_is_replayed_whole() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut p = read(b, Duration::from_secs(5)).await.unwrap();
        assert!(!p.is_h2());
        let mut got = [0u8; 16];
        p.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn silence_and_a_partial_preface_are_dropped() {
        let (_a, b) = tokio::io::duplex(64);
        assert_eq!(
            read(b, Duration::from_millis(50)).await.err(),
            Some(Unopened::Silent)
        );
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&H2_PREFACE[..5]).await.unwrap();
        assert_eq!(
            read(b, Duration::from_millis(50)).await.err(),
            Some(Unopened::Silent)
        );
    }

    #[tokio::test]
    async fn a_connection_closed_first_is_not_silent() {
        let (a, b) = tokio::io::duplex(64);
        drop(a);
        assert_eq!(
            read(b, Duration::from_secs(5)).await.err(),
            Some(Unopened::Closed)
        );
    }
}
