//! Length-prefixed JSON messages on a byte stream.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::LinkError;

/// The largest message on a link (a host's pod list, a command's stdin).
pub const MAX_FRAME: usize = 64 << 20;

/// The bytes of `msg` as one frame.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, LinkError> {
    let json = serde_json::to_vec(msg)?;
    if json.len() > MAX_FRAME {
        return Err(LinkError::TooLarge(json.len()));
    }
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&u32::try_from(json.len()).map_err(|_| LinkError::TooLarge(json.len()))?.to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

pub(crate) async fn write<T: Serialize, W: AsyncWrite + Unpin + ?Sized>(w: &mut W, msg: &T) -> Result<(), LinkError> {
    w.write_all(&encode(msg)?).await?;
    w.flush().await?;
    Ok(())
}

/// The next message; `None` at a clean end of the stream.
pub(crate) async fn read<T: DeserializeOwned, R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<Option<T>, LinkError> {
    read_limited(r, MAX_FRAME).await
}

/// [`read`] of a message of at most `max` bytes; the buffer grows with
/// what arrives (a length announced is never allocated up front).
pub(crate) async fn read_limited<T: DeserializeOwned, R: AsyncRead + Unpin + ?Sized>(r: &mut R, max: usize) -> Result<Option<T>, LinkError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(LinkError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(len.min(64 << 10));
    let got = (&mut *r).take(len as u64).read_to_end(&mut buf).await?;
    if got < len {
        return Err(LinkError::Closed);
    }
    Ok(Some(serde_json::from_slice(&buf)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused_before_allocating() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write(&mut a, &serde_json::json!({"x": [1, 2, 3]})).await.unwrap();
        let got: Option<serde_json::Value> = read(&mut b).await.unwrap();
        assert_eq!(got, Some(serde_json::json!({"x": [1, 2, 3]})));
        // a length over the limit: refused without reading (or allocating) it
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(read::<serde_json::Value, _>(&mut b).await, Err(LinkError::TooLarge(_))));
        drop(a);
        assert!(read::<serde_json::Value, _>(&mut b).await.unwrap().is_none(), "a clean end is no message");
    }
}
