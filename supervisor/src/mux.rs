//! The framing that [`crate::modes::TCP_LISTEN`] speaks on stdin and
//! stdout: many TCP connections over one byte stream.
//!
//! A frame is `kind (1 byte) | connection id (u32, big endian) | payload
//! length (u32, big endian) | payload`. The listener numbers the
//! connections it accepts; ids are never reused within one run.
//!
//! | kind | from | payload | meaning |
//! | --- | --- | --- | --- |
//! | [`FrameKind::Open`] | listener | `IP PORT` of the connecting peer | a connection was accepted |
//! | [`FrameKind::Data`] | both | bytes | bytes for the other end |
//! | [`FrameKind::Eof`] | both | empty | no more bytes from this side |
//! | [`FrameKind::Close`] | both | empty | the connection is gone (or must go) |
//!
//! Frames for an id the receiver does not know (one it closed already)
//! are ignored. Payloads are at most [`MAX_PAYLOAD`] bytes.

use thiserror::Error;

/// The longest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 9;

/// What a frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Open = 1,
    Data = 2,
    Eof = 3,
    Close = 4,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Open,
            2 => FrameKind::Data,
            3 => FrameKind::Eof,
            4 => FrameKind::Close,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub id: u32,
    pub payload: Vec<u8>,
}

/// A stream that is not made of frames.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame payload of {0} bytes is over the limit of {MAX_PAYLOAD}")]
    TooLong(usize),
}

/// Encodes one frame. Payloads longer than [`MAX_PAYLOAD`] must be split
/// by the caller ([`encode_data`] does).
pub fn encode(kind: FrameKind, id: u32, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(kind as u8);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Encodes `data` as one or more [`FrameKind::Data`] frames, in one buffer.
pub fn encode_data(id: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + HEADER_LEN * (data.len() / MAX_PAYLOAD + 1));
    for chunk in data.chunks(MAX_PAYLOAD) {
        out.extend_from_slice(&encode(FrameKind::Data, id, chunk));
    }
    out
}

/// Reassembles frames from a byte stream read in arbitrary pieces.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf` (consumed bytes are dropped
    /// once per [`Decoder::push`], not once per frame).
    start: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if the bytes so far hold one. An error
    /// means the stream is not this protocol; stop reading it.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let rest = &self.buf[self.start..];
        let Some(header) = rest.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let kind = FrameKind::from_byte(header[0]).ok_or(FrameError::UnknownKind(header[0]))?;
        let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start += HEADER_LEN + len;
        Ok(Some(Frame { kind, id, payload }))
    }

    /// Bytes held that do not make a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// The payload of a [`FrameKind::Open`] frame: the connecting peer.
pub fn open_payload(peer: std::net::SocketAddr) -> Vec<u8> {
    format!("{} {}", peer.ip(), peer.port()).into_bytes()
}

/// Reads an [`open_payload`]; anything unreadable gives `("", 0)`, which
/// is only ever shown to the client.
pub fn parse_open_payload(payload: &[u8]) -> (String, u16) {
    let text = String::from_utf8_lossy(payload);
    match text.split_once(' ') {
        Some((ip, port)) if ip.parse::<std::net::IpAddr>().is_ok() => (ip.to_owned(), port.parse().unwrap_or(0)),
        _ => (String::new(), 0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn frames_survive_any_split_of_the_stream() {
        let mut stream = encode(FrameKind::Open, 7, b"127.0.0.1 40000");
        stream.extend(encode_data(7, &vec![0xAB; MAX_PAYLOAD + 10]));
        stream.extend(encode(FrameKind::Eof, 7, b""));
        stream.extend(encode(FrameKind::Close, 7, b""));
        for piece in [1, 2, 9, 10, 1000, stream.len()] {
            let mut d = Decoder::new();
            let mut frames = Vec::new();
            for chunk in stream.chunks(piece) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    frames.push(f);
                }
            }
            let kinds: Vec<_> = frames.iter().map(|f| (f.kind, f.id, f.payload.len())).collect();
            assert_eq!(
                kinds,
                [(FrameKind::Open, 7, 15), (FrameKind::Data, 7, MAX_PAYLOAD), (FrameKind::Data, 7, 10), (FrameKind::Eof, 7, 0), (FrameKind::Close, 7, 0)],
                "read {piece} bytes at a time"
            );
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_huge_allocation() {
        let mut d = Decoder::new();
        d.push(&[9, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind(9)));
        let mut d = Decoder::new();
        d.push(&[2, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(u32::MAX as usize)));
    }

    #[test]
    fn the_peer_is_read_back_or_left_blank() {
        let peer: std::net::SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(parse_open_payload(&open_payload(peer)), ("::1".to_owned(), 5000));
        assert_eq!(parse_open_payload(b"not an address"), (String::new(), 0));
        assert_eq!(parse_open_payload(b"10.0.0.1 99999"), ("10.0.0.1".to_owned(), 0));
    }
}
