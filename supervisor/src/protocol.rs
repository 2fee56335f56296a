//! The wire protocol between the host agent and the supervisor, over the
//! pod's control socket.
//!
//! Every message is a frame: one kind byte, a big-endian `u32` length and
//! that many payload bytes (at most [`MAX_FRAME`]). A connection carries one
//! request: the client sends a [`Request`] frame, the supervisor answers
//! with a [`Response`] frame, or for streams (exec, file transfer) with
//! data frames and a final [`FrameKind::Exit`] or [`FrameKind::End`].

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload of one frame.
pub const MAX_FRAME: usize = 1 << 20;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client → supervisor, first frame: a JSON [`Request`].
    Request = 1,
    /// Supervisor → client: a JSON [`Response`].
    Response = 2,
    /// Client → supervisor: bytes for the command's stdin (or the file).
    Stdin = 3,
    /// Client → supervisor: stdin is finished.
    StdinEnd = 4,
    /// Client → supervisor: JSON [`Control`] (resize, signal).
    Control = 5,
    /// Supervisor → client: output (a pty's whole output is stdout).
    Stdout = 6,
    Stderr = 7,
    /// Supervisor → client: JSON [`ExitStatus`]; the stream is over.
    Exit = 8,
    /// Supervisor → client: a file stream is over.
    End = 9,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        use FrameKind::*;
        Some(match b {
            1 => Request,
            2 => Response,
            3 => Stdin,
            4 => StdinEnd,
            5 => Control,
            6 => Stdout,
            7 => Stderr,
            8 => Exit,
            9 => End,
            _ => return None,
        })
    }
}

/// Protocol failures.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("control socket: unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("control socket: frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("control socket: bad message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("control socket: unexpected {0:?} frame")]
    Unexpected(FrameKind),
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, kind: FrameKind, payload: &[u8]) -> Result<(), ProtocolError> {
    if payload.len() > MAX_FRAME {
        return Err(ProtocolError::TooLarge(payload.len()));
    }
    let mut head = [0u8; 5];
    head[0] = kind as u8;
    head[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(payload).await?;
    w.flush().await?;
    Ok(())
}

/// Writes one frame with a JSON payload.
pub async fn write_json<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, kind: FrameKind, value: &T) -> Result<(), ProtocolError> {
    write_frame(w, kind, &serde_json::to_vec(value)?).await
}

/// Reads one frame; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(FrameKind, Vec<u8>)>, ProtocolError> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let kind = FrameKind::from_u8(head[0]).ok_or(ProtocolError::UnknownKind(head[0]))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((kind, payload)))
}

/// A request, with the pod's control secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub secret: String,
    #[serde(flatten)]
    pub op: Op,
}

/// What the agent asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Liveness and identity.
    Ping,
    /// Runs a command; streams output and ends with [`FrameKind::Exit`].
    Exec(ExecSpec),
    /// The managed processes and install steps.
    Status,
    /// The last bytes of a managed process's log.
    Logs { process: String, tail_bytes: u64 },
    /// A directory's entries.
    ListFiles { path: String },
    /// A file's bytes as [`FrameKind::Stdout`] frames, then [`FrameKind::End`].
    ReadFile { path: String },
    /// Replaces a file with the [`FrameKind::Stdin`] frames that follow
    /// (until [`FrameKind::StdinEnd`]); written to a temporary file and
    /// renamed, so readers never see half a file.
    WriteFile { path: String, mode: Option<u32> },
    /// TCP ports something listens on in the pod.
    Ports,
}

/// A command to run in the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// Extra `NAME=VALUE` variables on top of the pod's environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Run on a pseudo-terminal of this size (stdout then carries all output).
    #[serde(default)]
    pub tty: Option<WindowSize>,
    /// With `tty`: a terminal session that outlives the connection. The
    /// first connection with this id starts the command; when it drops,
    /// the command keeps running, and a later connection with the same id
    /// re-attaches to it, first receiving the recent output again.
    /// `[A-Za-z0-9_-]{1,64}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// Whether `id` is a valid terminal session id.
pub fn valid_session_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// In-band control of a running command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    Resize(WindowSize),
    /// Sends this signal number to the command (its process group).
    Signal(i32),
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, or 128 + the signal that killed it.
    pub code: i32,
    /// The signal that killed it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
}

/// A one-shot answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Error { code: ErrorCode, message: String },
    Pong { version: String, pid: u32, uptime_ms: u64 },
    Status { install: Vec<StepStatus>, processes: Vec<ProcessStatus> },
    Logs { data: String },
    Files { entries: Vec<FileEntry> },
    Ports { ports: Vec<ListeningPort> },
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    NotFound,
    Invalid,
    Failed,
}

/// One install step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStatus {
    pub name: String,
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
    pub exit_code: Option<i32>,
}

/// One managed process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub name: String,
    /// `waiting` (for install), `starting`, `running`, `backoff`, `exited`
    /// (will not restart) or `stopped`.
    pub state: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    /// The health check's last verdict, if the process has one.
    pub healthy: Option<bool>,
}

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    /// Seconds since the epoch.
    pub modified: i64,
}

/// A listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ListeningPort {
    pub port: u16,
    /// The address it is bound to (`0.0.0.0`, `127.0.0.1`, `::`...).
    pub address: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_json(&mut a, FrameKind::Request, &Request { secret: "s".into(), op: Op::Logs { process: "web".into(), tail_bytes: 10 } })
            .await
            .unwrap();
        write_frame(&mut a, FrameKind::Stdin, b"abc").await.unwrap();
        drop(a);
        let (kind, payload) = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(kind, FrameKind::Request);
        let req: Request = serde_json::from_slice(&payload).unwrap();
        assert_eq!(req.op, Op::Logs { process: "web".into(), tail_bytes: 10 });
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), (FrameKind::Stdin, b"abc".to_vec()));
        assert!(read_frame(&mut b).await.unwrap().is_none());

        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let _ = a.write_all(&[6, 0xff, 0xff, 0xff, 0xff]).await;
        });
        assert!(matches!(read_frame(&mut b).await, Err(ProtocolError::TooLarge(_))));
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let _ = a.write_all(&[77, 0, 0, 0, 0]).await;
        });
        assert!(matches!(read_frame(&mut b).await, Err(ProtocolError::UnknownKind(77))));
    }

    #[test]
    fn requests_have_a_readable_json_form() {
        let r = Request { secret: "k".into(), op: Op::Exec(ExecSpec { argv: vec!["sh".into()], tty: Some(WindowSize { rows: 24, cols: 80 }), ..Default::default() }) };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["op"], "exec");
        assert_eq!(v["tty"]["rows"], 24);
        let c: Control = serde_json::from_str(r#"{"resize":{"rows":40,"cols":120}}"#).unwrap();
        assert_eq!(c, Control::Resize(WindowSize { rows: 40, cols: 120 }));
    }
}
