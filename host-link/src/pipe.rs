//! A byte stream over one HTTP/2 stream: what is written goes out as the
//! body this side sends, what the other side's body brings is read.

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use crate::LinkBody;

/// Bytes buffered per direction between the HTTP/2 stream and its user.
const BUFFER: usize = 256 << 10;

/// A body this side sends, fed by the returned sender (dropping it ends the body).
pub(crate) fn outgoing() -> (mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>, LinkBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed())
}

/// Joins a body this side sends (`tx`)
/// and the body it receives into one byte stream.
pub(crate) fn join(tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>, mut incoming: Incoming) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(BUFFER);
    let (mut from_user, mut to_user) = tokio::io::split(theirs);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from_user.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if tx.send(Ok(Frame::data(Bytes::copy_from_slice(&buf[..n])))).await.is_err() {
                break;
            }
        }
        // dropping `tx` ends the body: the other side reads an end of stream
    });
    tokio::spawn(async move {
        while let Some(frame) = incoming.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data() {
                if to_user.write_all(&data).await.is_err() {
                    return;
                }
            }
        }
        let _ = to_user.shutdown().await;
    });
    ours
}

/// One HTTP/2 stream of the link as a byte stream. (Reading and writing
/// the HTTP/2 stream directly, without the duplex buffer and its two
/// tasks, was tried: no faster, and dropping the request body with the
/// stream reset it before its last queued bytes were sent. The task that
/// reads the peer's body keeps it open until the peer ends it.)
pub type LinkStream = DuplexStream;
