//! A byte stream over one HTTP/2 stream: what is written goes out as the
//! body this side sends, what the other side's body brings is read. Reads
//! and writes go straight to the HTTP/2 stream: one copy each way (into a
//! frame on the way out, out of one on the way in), no task in between.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Body, Frame, Incoming};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::LinkBody;

/// The largest frame one write makes (HTTP/2 splits it further as the
/// peer's frame size and windows allow).
const MAX_WRITE: usize = 64 << 10;

/// Frames queued on the way out before writers wait.
const QUEUED_FRAMES: usize = 16;

type Outgoing = mpsc::Sender<Result<Frame<Bytes>, io::Error>>;

/// A body this side sends, fed by the returned sender (dropping it ends the body).
pub(crate) fn outgoing() -> (Outgoing, LinkBody) {
    let (tx, rx) = mpsc::channel(QUEUED_FRAMES);
    (tx, StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed())
}

/// Joins a body this side sends (`tx`) and the body it receives into one
/// byte stream.
pub(crate) fn join(tx: Outgoing, incoming: Incoming) -> LinkStream {
    LinkStream { tx: PollSender::new(tx), incoming, pending: Bytes::new(), ended: false }
}

/// One HTTP/2 stream of the link as a byte stream. Shutting it down ends
/// the body it sends; the other side's end of body reads as end of file.
pub struct LinkStream {
    tx: PollSender<Result<Frame<Bytes>, io::Error>>,
    incoming: Incoming,
    /// What the last frame brought that was not read yet.
    pending: Bytes,
    ended: bool,
}

impl AsyncRead for LinkStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.incoming).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // trailers carry nothing for a byte stream
                    if let Ok(data) = frame.into_data() {
                        self.pending = data;
                    }
                }
                // a reset stream ends like a closed one: the user sees the
                // end of the bytes (as a TCP connection's reset would)
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "the link's stream is closed");
        ready!(self.tx.poll_reserve(cx)).map_err(|_| closed())?;
        let n = buf.len().min(MAX_WRITE);
        self.tx.send_item(Ok(Frame::data(Bytes::copy_from_slice(&buf[..n])))).map_err(|_| closed())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // a queued frame is on its way: HTTP/2 sends it as soon as windows allow
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // without a sender the body ends: the other side reads an end of file
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}
