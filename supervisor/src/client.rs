//! The host agent's side of the control socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::protocol::{read_frame, write_frame, write_json, Control, ExecSpec, ExitStatus, FrameKind, Op, ProtocolError, Request, Response};

/// How long connecting and one-shot answers may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of talking to a supervisor.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the pod's supervisor is not reachable at {path}: {why}")]
    Unreachable { path: String, why: String },
    #[error("the pod's supervisor refused: {0}")]
    Refused(String),
    #[error("the pod's supervisor did not answer in time")]
    Timeout,
    #[error("the pod's supervisor closed the connection")]
    Closed,
}

/// A byte stream to a pod's supervisor, after the request was sent.
pub trait SupervisorStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> SupervisorStream for T {}

/// An open connection to a supervisor, boxed.
pub type BoxedStream = Box<dyn SupervisorStream>;

/// What [`Connector::open`] returns.
pub type OpenFuture<'a> = Pin<Box<dyn Future<Output = Result<BoxedStream, ClientError>> + Send + 'a>>;

/// How a client reaches a supervisor: through its socket on the same host
/// ([`SocketConnector`]), or through a host agent's connection to the
/// control plane (the host link).
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Connects and sends the request for `op` (authenticated as the
    /// connector knows how); the stream then carries `op`'s answer and,
    /// for streaming operations, its input.
    fn open(&self, op: Op) -> OpenFuture<'_>;

    /// The socket on this host, for a socket connector.
    fn socket(&self) -> Option<&Path> {
        None
    }
}

/// A supervisor's control socket on this host and the pod's secret.
#[derive(Debug, Clone)]
pub struct SocketConnector {
    socket: PathBuf,
    secret: String,
}

impl SocketConnector {
    async fn connect(&self, op: Op) -> Result<UnixStream, ClientError> {
        let unreachable = |why: String| ClientError::Unreachable { path: self.socket.display().to_string(), why };
        // A socket address holds at most 107 bytes of path; a deep data
        // directory goes through the directory's descriptor instead.
        let (_fd, path) = crate::socket_to_connect(&self.socket).map_err(|e| unreachable(e.to_string()))?;
        let mut stream = tokio::time::timeout(CALL_TIMEOUT, UnixStream::connect(&path))
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|e| unreachable(e.to_string()))?;
        write_json(&mut stream, FrameKind::Request, &Request { secret: self.secret.clone(), op }).await?;
        Ok(stream)
    }
}

impl Connector for SocketConnector {
    fn open(&self, op: Op) -> OpenFuture<'_> {
        Box::pin(async move { Ok(Box::new(self.connect(op).await?) as BoxedStream) })
    }

    fn socket(&self) -> Option<&Path> {
        Some(&self.socket)
    }
}

/// A pod's supervisor: its socket on this host, or any other [`Connector`].
#[derive(Debug, Clone)]
pub struct SupervisorClient {
    connector: Arc<dyn Connector>,
}

/// What an exec sends the supervisor while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    StdinEnd,
    Control(Control),
}

/// What an exec produces, in order; [`ExecEvent::Exit`] is last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
}

impl SupervisorClient {
    /// The supervisor behind `socket` on this host.
    pub fn new(socket: impl Into<PathBuf>, secret: impl Into<String>) -> Self {
        Self::with_connector(Arc::new(SocketConnector { socket: socket.into(), secret: secret.into() }))
    }

    /// The supervisor `connector` reaches.
    pub fn with_connector(connector: Arc<dyn Connector>) -> Self {
        Self { connector }
    }

    /// The supervisor's socket, when it is on this host.
    pub fn socket(&self) -> Option<&Path> {
        self.connector.socket()
    }

    /// Connects and sends the request for `op`: the stream then carries its
    /// answer (and, for streaming operations, its input).
    pub async fn open(&self, op: Op) -> Result<BoxedStream, ClientError> {
        self.connector.open(op).await
    }

    async fn connect(&self, op: Op) -> Result<BoxedStream, ClientError> {
        self.connector.open(op).await
    }

    /// A one-shot request and its answer; an error answer becomes
    /// [`ClientError::Refused`].
    pub async fn call(&self, op: Op) -> Result<Response, ClientError> {
        let mut stream = self.connect(op).await?;
        let frame = tokio::time::timeout(CALL_TIMEOUT, read_frame(&mut stream)).await.map_err(|_| ClientError::Timeout)??;
        match frame {
            Some((FrameKind::Response, payload)) => match serde_json::from_slice::<Response>(&payload).map_err(ProtocolError::from)? {
                Response::Error { message, .. } => Err(ClientError::Refused(message)),
                other => Ok(other),
            },
            Some((kind, _)) => Err(ProtocolError::Unexpected(kind).into()),
            None => Err(ClientError::Closed),
        }
    }

    /// Waits until the supervisor answers, for at most `within`.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.call(Op::Ping).await {
                Ok(_) => return Ok(()),
                Err(e @ ClientError::Refused(_)) => return Err(e),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Starts a command. Send input on the returned sender (dropping it
    /// ends stdin); events arrive on the receiver, [`ExecEvent::Exit`] last.
    pub async fn exec(&self, spec: ExecSpec) -> Result<(mpsc::Sender<ExecInput>, mpsc::Receiver<ExecEvent>), ClientError> {
        let stream = self.connect(Op::Exec(spec)).await?;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (in_tx, mut in_rx) = mpsc::channel::<ExecInput>(64);
        let (out_tx, out_rx) = mpsc::channel::<ExecEvent>(64);
        // The connection stays open until the output side is done: closing
        // it tells the supervisor the caller left, which ends the command.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut done_rx = done_rx;
            loop {
                let input = tokio::select! {
                    input = in_rx.recv() => input,
                    _ = &mut done_rx => return,
                };
                let Some(input) = input else { break };
                let sent = match input {
                    ExecInput::Stdin(data) => {
                        let mut ok = Ok(());
                        for chunk in data.chunks(crate::protocol::MAX_FRAME) {
                            ok = write_frame(&mut writer, FrameKind::Stdin, chunk).await;
                            if ok.is_err() {
                                break;
                            }
                        }
                        ok
                    }
                    ExecInput::StdinEnd => write_frame(&mut writer, FrameKind::StdinEnd, &[]).await,
                    ExecInput::Control(c) => write_json(&mut writer, FrameKind::Control, &c).await,
                };
                if sent.is_err() {
                    return;
                }
            }
            let _ = write_frame(&mut writer, FrameKind::StdinEnd, &[]).await;
            let _ = done_rx.await;
        });
        tokio::spawn(async move {
            let _done = done_tx;
            loop {
                let frame = tokio::select! {
                    frame = read_frame(&mut reader) => frame,
                    // the caller dropped the receiver: leave, which ends the command
                    _ = out_tx.closed() => return,
                };
                let event = match frame {
                    Ok(Some((FrameKind::Stdout, data))) => ExecEvent::Stdout(data),
                    Ok(Some((FrameKind::Stderr, data))) => ExecEvent::Stderr(data),
                    Ok(Some((FrameKind::Exit, payload))) => match serde_json::from_slice::<ExitStatus>(&payload) {
                        Ok(status) => ExecEvent::Exit(status),
                        Err(_) => ExecEvent::Exit(ExitStatus { code: 255, signal: None }),
                    },
                    Ok(Some((FrameKind::Response, payload))) => {
                        // a refusal before the command started
                        let message = match serde_json::from_slice::<Response>(&payload) {
                            Ok(Response::Error { message, .. }) => message,
                            _ => "unexpected answer".into(),
                        };
                        let _ = out_tx.send(ExecEvent::Stderr(format!("pinacle: {message}\n").into_bytes())).await;
                        ExecEvent::Exit(ExitStatus { code: 126, signal: None })
                    }
                    _ => ExecEvent::Exit(ExitStatus { code: 255, signal: None }),
                };
                let last = matches!(event, ExecEvent::Exit(_));
                if out_tx.send(event).await.is_err() || last {
                    return;
                }
            }
        });
        Ok((in_tx, out_rx))
    }

    /// A file's bytes.
    pub async fn read_file(&self, path: &str, limit: usize) -> Result<Vec<u8>, ClientError> {
        let mut reader = self.open_file(path).await?;
        let mut data = Vec::new();
        while let Some(chunk) = reader.next_chunk().await? {
            if data.len() + chunk.len() > limit {
                return Err(ClientError::Refused(format!("{path} is larger than {limit} bytes")));
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }

    /// Starts reading a file: its bytes come chunk by chunk (at most
    /// [`crate::protocol::MAX_FRAME`] each), so a caller holds one chunk at a
    /// time. A refusal (no such file) comes with the first chunk.
    pub async fn open_file(&self, path: &str) -> Result<FileReader, ClientError> {
        let stream = self.connect(Op::ReadFile { path: path.to_owned() }).await?;
        Ok(FileReader { stream, done: false })
    }

    /// Starts replacing a file: write its bytes in pieces, then
    /// [`FileWriter::finish`]. Dropped before that, the file is left as it
    /// was (the supervisor removes what it received).
    pub async fn create_file(&self, path: &str, mode: Option<u32>) -> Result<FileWriter, ClientError> {
        let stream = self.connect(Op::WriteFile { path: path.to_owned(), mode }).await?;
        Ok(FileWriter { stream })
    }

    /// Replaces a file's contents.
    pub async fn write_file(&self, path: &str, data: &[u8], mode: Option<u32>) -> Result<(), ClientError> {
        let mut writer = self.create_file(path, mode).await?;
        writer.write(data).await?;
        writer.finish().await
    }
}

/// A file being read ([`SupervisorClient::open_file`]).
pub struct FileReader {
    stream: BoxedStream,
    done: bool,
}

impl FileReader {
    /// The next piece of the file; `None` once it is all read.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let frame = tokio::time::timeout(CALL_TIMEOUT, read_frame(&mut self.stream)).await.map_err(|_| ClientError::Timeout)??;
        match frame {
            Some((FrameKind::Stdout, chunk)) => Ok(Some(chunk)),
            Some((FrameKind::End, _)) => {
                self.done = true;
                Ok(None)
            }
            Some((FrameKind::Response, payload)) => {
                self.done = true;
                Err(match serde_json::from_slice::<Response>(&payload).map_err(ProtocolError::from)? {
                    Response::Error { message, .. } => ClientError::Refused(message),
                    _ => ClientError::Closed,
                })
            }
            Some((kind, _)) => Err(ProtocolError::Unexpected(kind).into()),
            None => Err(ClientError::Closed),
        }
    }
}

/// A file being replaced ([`SupervisorClient::create_file`]).
pub struct FileWriter {
    stream: BoxedStream,
}

impl FileWriter {
    /// Sends the next bytes of the file (any length; framed here).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(crate::protocol::MAX_FRAME) {
            tokio::time::timeout(CALL_TIMEOUT, write_frame(&mut self.stream, FrameKind::Stdin, chunk)).await.map_err(|_| ClientError::Timeout)??;
        }
        Ok(())
    }

    /// Ends the file: the supervisor puts it in place and answers.
    pub async fn finish(mut self) -> Result<(), ClientError> {
        write_frame(&mut self.stream, FrameKind::StdinEnd, &[]).await?;
        match tokio::time::timeout(CALL_TIMEOUT, read_frame(&mut self.stream)).await.map_err(|_| ClientError::Timeout)?? {
            Some((FrameKind::Response, payload)) => match serde_json::from_slice::<Response>(&payload).map_err(ProtocolError::from)? {
                Response::Ok => Ok(()),
                Response::Error { message, .. } => Err(ClientError::Refused(message)),
                _ => Err(ClientError::Closed),
            },
            Some((kind, _)) => Err(ProtocolError::Unexpected(kind).into()),
            None => Err(ClientError::Closed),
        }
    }
}
