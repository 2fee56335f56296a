//! Remote forwarding (`ssh -R PORT:HOST:HOSTPORT`), when the gateway is
//! started with it allowed: the pod's supervisor listens on the pod's
//! loopback ([`pinacle_supervisor::modes::TCP_LISTEN`]) and every
//! connection made to it inside the pod becomes a `forwarded-tcpip` channel
//! back to the client, which connects it to HOST:HOSTPORT on its side.
//!
//! One supervisor exec per forward carries all its connections in
//! [`pinacle_supervisor::mux`] frames. Each connection has a task per
//! direction, so a full window one way never stops the other, and the SSH
//! connection's own loop is never held up by a forward. The connections of
//! one forward share that stream, though, with no flow control per
//! connection: one whose reader (the client's side or the pod's) stops
//! reading holds up the others of the same forward until it is read again
//! (on the way into the pod, a program that never reads stalls the forward
//! until the client cancels it or leaves).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pinacle_api::policy::Action;
use pinacle_api::AppState;
use pinacle_supervisor::client::{ExecEvent, ExecInput};
use pinacle_supervisor::mux::{self, Decoder, FrameKind};
use pinacle_supervisor::protocol::ExecSpec;
use russh::server::Handle;
use russh::ChannelMsg;
use tokio::sync::mpsc;

use crate::channels::{audit, STDIN_STALL};
use crate::Login;

/// Remote forwards one connection may hold at once.
pub const MAX_FORWARDS_PER_CONNECTION: usize = 16;
/// How long the pod's listener has to bind its port.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client has to accept a forwarded connection.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections of one forward open at once, at most (the pod's listener
/// keeps to the same number; a pod that opens more is closed).
pub const MAX_CONNECTIONS_PER_FORWARD: usize = pinacle_supervisor::listen::MAX_CONNECTIONS;

/// The forwards of one SSH connection, by the address and port the client
/// asked for (the allocated port when it asked for 0, as OpenSSH cancels
/// by). Dropping it (the connection ended) stops them all.
#[derive(Default)]
pub(crate) struct RemoteForwards {
    running: HashMap<(String, u32), tokio::task::JoinHandle<()>>,
}

impl RemoteForwards {
    /// Forgets forwards that ended on their own (the pod restarted, or its
    /// listener went).
    fn prune(&mut self) {
        self.running.retain(|_, task| !task.is_finished());
    }

    pub fn len(&mut self) -> usize {
        self.prune();
        self.running.len()
    }

    pub fn contains(&mut self, address: &str, port: u32) -> bool {
        self.prune();
        self.running.contains_key(&(address.to_owned(), port))
    }

    pub fn insert(&mut self, address: String, port: u32, task: tokio::task::JoinHandle<()>) {
        self.running.insert((address, port), task);
    }

    /// Stops a forward; false when there is none.
    pub fn cancel(&mut self, address: &str, port: u32) -> bool {
        match self.running.remove(&(address.to_owned(), port)) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

impl Drop for RemoteForwards {
    fn drop(&mut self) {
        for task in self.running.values() {
            task.abort();
        }
    }
}

/// Reads the port from the listener's "listening" line.
fn listening_port(stderr: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(stderr).ok()?;
    text.strip_prefix(pinacle_supervisor::modes::TCP_LISTENING)?.lines().next()?.trim().parse().ok()
}

/// Waits for the listener's first line on stderr (which may come in
/// pieces): the port it bound, or why it could not. Frames that come
/// before it (stdout and stderr travel apart) are kept in `early`.
async fn listening(events: &mut mpsc::Receiver<ExecEvent>, early: &mut Vec<u8>) -> Result<u16, String> {
    let mut line = Vec::new();
    loop {
        match events.recv().await {
            Some(ExecEvent::Stderr(piece)) => {
                line.extend_from_slice(&piece);
                if line.contains(&b'\n') || line.len() > 4096 {
                    return listening_port(&line).ok_or_else(|| String::from_utf8_lossy(&line).trim().to_owned());
                }
            }
            Some(ExecEvent::Stdout(bytes)) if early.len() < 1 << 20 => early.extend_from_slice(&bytes),
            Some(ExecEvent::Stdout(_)) => return Err("the pod's listener sent too much before it was listening".to_owned()),
            Some(ExecEvent::Exit(_)) | None => return Err(format!("the pod's listener exited: {}", String::from_utf8_lossy(&line).trim())),
        }
    }
}

/// Starts a forward: the pod listens on its loopback `port` (0: any), and
/// the returned task carries its connections to the client as
/// `forwarded-tcpip` channels naming `address` and the bound port. The
/// error is for the log (the client only hears "no").
pub(crate) async fn start(state: AppState, login: Arc<Login>, handle: Handle, address: String, port: u16) -> Result<(u16, tokio::task::JoinHandle<()>), String> {
    let (pod, client) = state.host_registry.pod_supervisor(&login.principal, &login.pod_key, Action::Exec).await.map_err(|e| e.message)?;
    let spec = ExecSpec {
        argv: vec![pinacle_supervisor::paths::BINARY.into(), pinacle_supervisor::modes::TCP_LISTEN.into(), port.to_string()],
        cwd: Some("/".into()),
        ..Default::default()
    };
    let (input, mut events) = client.exec(spec).await.map_err(|e| format!("the pod's supervisor did not answer: {e}"))?;
    let mut early = Vec::new();
    let bound = tokio::time::timeout(LISTEN_TIMEOUT, listening(&mut events, &mut early))
        .await
        .map_err(|_| "the pod's listener did not start".to_owned())??;
    let target = format!("pod:{} ({}) remote forward of port {bound} from {} via {}", pod.id, pod.name, login.peer, login.via);
    audit(&state, &login, "ssh.session.start", &target).await;
    state.metrics.ssh_sessions.get_or_create(&pinacle_api::metrics::KindLabels { kind: "remote-forward".into() }).inc();
    tracing::info!(pod = %pod.name, user = %login.principal.user_name, port = bound, "SSH remote forward started");
    let task = tokio::spawn(async move {
        let started = Instant::now();
        // the task is aborted when the client cancels or leaves: the audit
        // of its end runs apart, when this guard is dropped
        let _end = EndAudit { state: state.clone(), login: login.clone(), target: format!("pod:{} ({}) remote forward of port {bound} from {}", pod.id, pod.name, login.peer), started };
        demux(handle, address, bound, input, events, early).await;
    });
    Ok((bound, task))
}

/// Writes `ssh.session.end` for a forward when dropped.
struct EndAudit {
    state: AppState,
    login: Arc<Login>,
    target: String,
    started: Instant,
}

impl Drop for EndAudit {
    fn drop(&mut self) {
        let (state, login) = (self.state.clone(), self.login.clone());
        let target = format!("{} ended after {} ms", self.target, self.started.elapsed().as_millis());
        // (no runtime: the process is ending, and the audit with it)
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { audit(&state, &login, "ssh.session.end", &target).await });
        }
    }
}

/// What the pod sends one connection.
enum FromPod {
    Data(Vec<u8>),
    Eof,
}

/// Reads the listener's frames and hands each connection's to its task,
/// until the listener ends (or the task is aborted, which drops the exec
/// and so ends the listener). `early` holds bytes that came before.
async fn demux(handle: Handle, address: String, port: u16, input: mpsc::Sender<ExecInput>, mut events: mpsc::Receiver<ExecEvent>, early: Vec<u8>) {
    let mut decoder = Decoder::new();
    decoder.push(&early);
    let mut connections: HashMap<u32, mpsc::Sender<FromPod>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the pod's listener sent garbage; stopping the forward");
                    return;
                }
            };
            let message = match frame.kind {
                FrameKind::Open => {
                    if connections.contains_key(&frame.id) {
                        tracing::warn!(id = frame.id, "the pod's listener reused a connection id; stopping the forward");
                        return;
                    }
                    if connections.len() >= MAX_CONNECTIONS_PER_FORWARD {
                        to_pod(&input, mux::encode(FrameKind::Close, frame.id, b"")).await;
                        continue;
                    }
                    let (tx, rx) = mpsc::channel(32);
                    connections.insert(frame.id, tx);
                    let origin = mux::parse_open_payload(&frame.payload);
                    tasks.spawn(connection(handle.clone(), address.clone(), port, origin, frame.id, rx, input.clone()));
                    continue;
                }
                FrameKind::Close => {
                    connections.remove(&frame.id);
                    continue;
                }
                FrameKind::Data => FromPod::Data(frame.payload),
                FrameKind::Eof => FromPod::Eof,
            };
            if let Some(tx) = connections.get(&frame.id) {
                if tx.send(message).await.is_err() {
                    connections.remove(&frame.id);
                }
            }
        }
        // reap finished connection tasks as we go
        while tasks.try_join_next().is_some() {}
        match events.recv().await {
            Some(ExecEvent::Stdout(bytes)) => decoder.push(&bytes),
            Some(ExecEvent::Stderr(b)) => tracing::debug!(message = %String::from_utf8_lossy(&b).trim(), "remote forward listener"),
            Some(ExecEvent::Exit(_)) | None => return,
        }
    }
}

/// Sends a frame to the pod's listener; false when it stayed unread for
/// [`STDIN_STALL`] or the listener is gone.
async fn to_pod(input: &mpsc::Sender<ExecInput>, frame: Vec<u8>) -> bool {
    matches!(tokio::time::timeout(STDIN_STALL, input.send(ExecInput::Stdin(frame))).await, Ok(Ok(())))
}

/// One connection made in the pod: opens its channel to the client and
/// relays both ways until either side closes it, a task per direction.
async fn connection(handle: Handle, address: String, port: u16, origin: (String, u16), id: u32, mut from_pod: mpsc::Receiver<FromPod>, input: mpsc::Sender<ExecInput>) {
    let opened = tokio::time::timeout(OPEN_TIMEOUT, handle.channel_open_forwarded_tcpip(address, u32::from(port), origin.0, u32::from(origin.1))).await;
    let channel = match opened {
        Ok(Ok(c)) => c,
        failed => {
            let why = failed.map_or_else(|_| "no answer".to_owned(), |r| r.err().map(|e| e.to_string()).unwrap_or_default());
            tracing::info!(port, why, "the client did not take a forwarded connection");
            to_pod(&input, mux::encode(FrameKind::Close, id, b"")).await;
            return;
        }
    };
    let (mut rx, tx) = channel.split();
    // pod → client: waits on the client's window, never on the way in
    // (a JoinSet: stopped with this task, even when aborted)
    let mut down = tokio::task::JoinSet::new();
    down.spawn(async move {
        while let Some(message) = from_pod.recv().await {
            match message {
                FromPod::Data(d) => {
                    if tx.data_bytes(Bytes::from(d)).await.is_err() {
                        return;
                    }
                }
                FromPod::Eof => {
                    let _ = tx.eof().await;
                }
            }
        }
        // the pod closed the connection
        let _ = tx.eof().await;
        let _ = tx.close().await;
    });
    // client → pod
    let mut down_done = false;
    loop {
        tokio::select! {
            // the pod's side is done: wait for the client's close
            _ = down.join_next(), if !down_done => down_done = true,
            message = rx.wait() => match message {
                Some(ChannelMsg::Data { data }) if !to_pod(&input, mux::encode_data(id, &data)).await => break,
                Some(ChannelMsg::Eof) if !to_pod(&input, mux::encode(FrameKind::Eof, id, b"")).await => break,
                Some(ChannelMsg::Close) | None => break,
                _ => {}
            },
        }
    }
    // the client closed the channel (or left): what is still on its way to
    // it is not wanted, and a send waiting on its window would wait forever
    drop(down);
    to_pod(&input, mux::encode(FrameKind::Close, id, b"")).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_listening_line_gives_the_port() {
        assert_eq!(listening_port(b"tcp-listen: listening on 41234\n"), Some(41234));
        assert_eq!(listening_port(b"tcp-listen: cannot listen on port 80: Address in use\n"), None);
        assert_eq!(listening_port(b"tcp-listen: listening on 99999\n"), None);
    }

    #[tokio::test]
    async fn the_listening_line_may_come_in_pieces() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.send(ExecEvent::Stdout(b"frames".to_vec())).await.unwrap();
        for piece in ["tcp-listen: listening on ", "412", "34\n"] {
            tx.send(ExecEvent::Stderr(piece.as_bytes().to_vec())).await.unwrap();
        }
        let mut early = Vec::new();
        assert_eq!(listening(&mut rx, &mut early).await, Ok(41234));
        assert_eq!(early, b"frames", "frames before the line are kept");
        tx.send(ExecEvent::Stderr(b"tcp-listen: cannot listen on port 80: in use\n".to_vec())).await.unwrap();
        assert_eq!(listening(&mut rx, &mut early).await, Err("tcp-listen: cannot listen on port 80: in use".to_owned()));
        drop(tx);
        assert!(listening(&mut rx, &mut early).await.unwrap_err().contains("exited"));
    }
}
