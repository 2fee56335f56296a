//! `pinacle-supervisor tcp-listen PORT` ([`crate::modes::TCP_LISTEN`]):
//! listens on the pod's loopback for the SSH gateway's remote forwarding
//! (`ssh -R PORT:HOST:HOSTPORT`), and carries every accepted connection
//! over stdin and stdout in [`crate::mux`] frames.
//!
//! Like OpenSSH's sshd with `GatewayPorts no`, it binds the loopback only
//! (127.0.0.1, and ::1 when the pod has it), whatever address the client
//! asked for: what runs in the pod can reach the forward, nothing outside
//! can. Port 0 picks a free port. Once bound it writes
//! [`crate::modes::TCP_LISTENING`] and the port on stderr. It exits when
//! stdin ends (the gateway is gone), which drops every connection.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::mux::{self, Decoder, FrameKind};

/// Connections open at once, at most; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a connection the gateway closed may take to write what was
/// queued for it before it is dropped.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
/// Bytes read from a connection at a time.
const CHUNK: usize = 32 * 1024;

/// What the gateway asks of one connection. A close is the end of this
/// queue: what was queued before it is still written, and a connection
/// that cannot finish that within [`CLOSE_GRACE`] is dropped.
enum ToSocket {
    Data(Vec<u8>),
    Eof,
}


/// Binds the loopback on `port` (0: any free port): IPv4, and IPv6 on the
/// same port when the pod has `::1`. Returns the listeners and the port.
pub async fn bind_loopback(port: u16) -> io::Result<(Vec<TcpListener>, u16)> {
    let v4 = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await?;
    let bound = v4.local_addr()?.port();
    let mut listeners = vec![v4];
    if let Ok(v6) = TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, bound)).await {
        listeners.push(v6);
    }
    Ok((listeners, bound))
}

async fn accept_any(listeners: &[TcpListener]) -> io::Result<(TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        for l in listeners {
            if let Poll::Ready(r) = l.poll_accept(cx) {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

/// Serves `listeners` until `input` ends or `output` fails: announces each
/// accepted connection on `output`, relays its bytes both ways in frames.
pub async fn serve<I, O>(listeners: Vec<TcpListener>, mut input: I, mut output: O) -> io::Result<()>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin + Send + 'static,
{
    // One writer owns the output, so frames never interleave; it runs on
    // its own so a connection waiting to be written never stops it.
    let (out, mut frames) = mpsc::channel::<Vec<u8>>(64);
    let mut writer = tokio::spawn(async move {
        while let Some(frame) = frames.recv().await {
            output.write_all(&frame).await?;
            // whatever else is ready goes in the same flush
            while let Ok(more) = frames.try_recv() {
                output.write_all(&more).await?;
            }
            output.flush().await?;
        }
        Ok::<_, io::Error>(())
    });
    let (done_tx, mut done) = mpsc::channel::<u32>(MAX_CONNECTIONS);
    let mut connections: HashMap<u32, (mpsc::Sender<ToSocket>, tokio::task::AbortHandle)> = HashMap::new();
    let mut next_id = 0u32;
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let result = loop {
        tokio::select! {
            written = &mut writer => break written.unwrap_or_else(|e| Err(io::Error::other(e))),
            Some(id) = done.recv() => {
                connections.remove(&id);
            }
            accepted = accept_any(&listeners) => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // out of descriptors, most likely: wait a little
                        eprintln!("tcp-listen: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if connections.len() >= MAX_CONNECTIONS {
                    continue; // dropped: closed at once
                }
                next_id = next_id.wrapping_add(1);
                let id = next_id;
                let _ = socket.set_nodelay(true);
                let (tx, rx) = mpsc::channel(32);
                if out.send(mux::encode(FrameKind::Open, id, &mux::open_payload(peer))).await.is_err() {
                    break Ok(());
                }
                let task = tokio::spawn(connection(id, socket, rx, out.clone(), done_tx.clone()));
                connections.insert(id, (tx, task.abort_handle()));
            }
            read = input.read(&mut buf) => {
                let n = match read {
                    Ok(0) => break Ok(()),
                    Ok(n) => n,
                    Err(e) => break Err(e),
                };
                decoder.push(&buf[..n]);
                loop {
                    let frame = match decoder.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                    };
                    let command = match frame.kind {
                        FrameKind::Data => ToSocket::Data(frame.payload),
                        FrameKind::Eof => ToSocket::Eof,
                        FrameKind::Close => {
                            // the gateway is done with it: the end of its
                            // queue, and a deadline
                            if let Some((_, task)) = connections.remove(&frame.id) {
                                tokio::spawn(async move {
                                    tokio::time::sleep(CLOSE_GRACE).await;
                                    task.abort();
                                });
                            }
                            continue;
                        }
                        FrameKind::Open => return Err(io::Error::new(io::ErrorKind::InvalidData, "only the listener opens connections")),
                    };
                    if let Some((tx, _)) = connections.get(&frame.id) {
                        // a connection that is gone drops what is sent to it
                        if tx.send(command).await.is_err() {
                            connections.remove(&frame.id);
                        }
                    }
                }
            }
        }
    };
    writer.abort();
    result
}

/// One accepted connection: its bytes go out as frames (read by a task
/// of its own, so a full socket one way never stops the other); the
/// gateway's frames come in on `commands`. Ends when both directions are
/// done, on an error, or when the gateway closes it; then says
/// [`FrameKind::Close`].
async fn connection(id: u32, socket: TcpStream, mut commands: mpsc::Receiver<ToSocket>, out: mpsc::Sender<Vec<u8>>, done: mpsc::Sender<u32>) {
    let (mut from_socket, mut to_socket) = socket.into_split();
    let reader_out = out.clone();
    // true when the socket ended cleanly (end of file sent on)
    // (a JoinSet: the reader is aborted when this returns)
    let mut reader = tokio::task::JoinSet::new();
    reader.spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from_socket.read(&mut buf).await {
                Ok(0) => return reader_out.send(mux::encode(FrameKind::Eof, id, b"")).await.is_ok(),
                Ok(n) => {
                    if reader_out.send(mux::encode_data(id, &buf[..n])).await.is_err() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    });
    let (mut read_done, mut writing) = (false, true);
    loop {
        tokio::select! {
            clean = reader.join_next(), if !read_done => {
                read_done = true;
                if !matches!(clean, Some(Ok(true))) || !writing {
                    break;
                }
            }
            command = commands.recv() => match command {
                Some(ToSocket::Data(d)) if writing => {
                    if to_socket.write_all(&d).await.is_err() {
                        break;
                    }
                }
                Some(ToSocket::Data(_)) => {}
                Some(ToSocket::Eof) => {
                    let _ = to_socket.shutdown().await;
                    writing = false;
                    if read_done {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    drop(reader);
    let _ = out.send(mux::encode(FrameKind::Close, id, b"")).await;
    let _ = done.send(id).await;
}

/// The `tcp-listen` mode: `args` are the arguments after the mode's name
/// (PORT). Exits 0 when stdin ends, 1 when the port cannot be bound (after
/// `tcp-listen: cannot listen on port PORT: <error>` on stderr), 2 on a bad
/// command line.
pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let [port] = args.as_slice() else {
        eprintln!("usage: pinacle-supervisor {} PORT", crate::modes::TCP_LISTEN);
        return ExitCode::from(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("tcp-listen: invalid port {port:?}");
        return ExitCode::from(2);
    };
    let rt = match crate::relay::runtime(crate::modes::TCP_LISTEN) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = rt.block_on(async {
        let (listeners, bound) = match bind_loopback(port).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tcp-listen: cannot listen on port {port}: {e}");
                return ExitCode::from(1);
            }
        };
        {
            use std::io::Write;
            let mut err = std::io::stderr().lock();
            // one write: stderr is unbuffered, and a line written in
            // pieces may reach the gateway in pieces
            let line = format!("{}{bound}\n", crate::modes::TCP_LISTENING);
            let _ = err.write_all(line.as_bytes()).and_then(|_| err.flush());
        }
        if let Err(e) = serve(listeners, crate::relay::stdin(), crate::relay::stdout()).await {
            eprintln!("tcp-listen: {e}");
        }
        ExitCode::SUCCESS
    });
    rt.shutdown_background();
    code
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::mux::Frame;

    async fn next(from: &mut (impl AsyncRead + Unpin), decoder: &mut Decoder) -> Frame {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = decoder.next_frame().unwrap() {
                return f;
            }
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), from.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "the listener's output ended");
            decoder.push(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn connections_are_announced_relayed_both_ways_and_closed() {
        let (listeners, port) = bind_loopback(0).await.unwrap();
        assert_ne!(port, 0);
        let (mut gateway, listener_end) = tokio::io::duplex(1 << 20);
        let (from_gateway, to_gateway) = tokio::io::split(listener_end);
        let served = tokio::spawn(serve(listeners, from_gateway, to_gateway));
        let mut decoder = Decoder::new();

        // two clients in the pod
        let mut a = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let open_a = next(&mut gateway, &mut decoder).await;
        assert_eq!(open_a.kind, FrameKind::Open);
        assert_eq!(mux::parse_open_payload(&open_a.payload), ("127.0.0.1".to_owned(), a.local_addr().unwrap().port()));
        let mut b = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let open_b = next(&mut gateway, &mut decoder).await;
        assert_ne!(open_a.id, open_b.id);

        // bytes from the gateway reach the right client, and back
        gateway.write_all(&mux::encode_data(open_b.id, b"to b")).await.unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"to b");
        a.write_all(b"from a").await.unwrap();
        let data = next(&mut gateway, &mut decoder).await;
        assert_eq!((data.kind, data.id, data.payload.as_slice()), (FrameKind::Data, open_a.id, &b"from a"[..]));

        // half-close: the client's end of file comes through, and it can
        // still be answered
        a.shutdown().await.unwrap();
        let eof = next(&mut gateway, &mut decoder).await;
        assert_eq!((eof.kind, eof.id), (FrameKind::Eof, open_a.id));
        gateway.write_all(&mux::encode_data(open_a.id, b"late")).await.unwrap();
        gateway.write_all(&mux::encode(FrameKind::Eof, open_a.id, b"")).await.unwrap();
        let mut rest = Vec::new();
        a.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"late");
        let close = next(&mut gateway, &mut decoder).await;
        assert_eq!((close.kind, close.id), (FrameKind::Close, open_a.id));

        // the gateway closes b: the client sees the connection end
        gateway.write_all(&mux::encode(FrameKind::Close, open_b.id, b"")).await.unwrap();
        let mut rest = Vec::new();
        let _ = b.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
        // frames for a closed connection are ignored
        gateway.write_all(&mux::encode_data(open_b.id, b"ignored")).await.unwrap();

        // the gateway goes: the listener stops and the port is free again
        drop(gateway);
        tokio::time::timeout(std::time::Duration::from_secs(10), served).await.unwrap().unwrap().unwrap();
        TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    }

    #[tokio::test]
    async fn garbage_from_the_gateway_stops_the_listener() {
        let (listeners, _) = bind_loopback(0).await.unwrap();
        let (mut gateway, listener_end) = tokio::io::duplex(4096);
        let (from_gateway, to_gateway) = tokio::io::split(listener_end);
        let served = tokio::spawn(serve(listeners, from_gateway, to_gateway));
        gateway.write_all(&[0xFF; 16]).await.unwrap();
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), served).await.unwrap().unwrap();
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
