//! The `tcp-connect` mode's relay against TCP listeners on 127.0.0.1: the
//! relay function on in-memory streams, then the binary on pipes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pinacle_supervisor::relay::relay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);

/// A listener that echoes each connection back until the client has
/// finished sending, then writes `bye` and closes: the `bye` can only
/// arrive if the relay half-closed the connection when its input ended.
async fn echo_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            socket.write_all(&buf[..n]).await.unwrap();
        }
        socket.write_all(b"bye").await.unwrap();
        socket.shutdown().await.unwrap();
    });
    (port, task)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + i / 509) as u8).collect()
}

#[tokio::test]
async fn bytes_round_trip_and_input_end_half_closes() {
    let (port, server) = echo_listener().await;
    let socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (from_peer, to_peer) = socket.into_split();
    let (mut input, input_end) = tokio::io::duplex(64 * 1024);
    let (output_end, mut output) = tokio::io::duplex(64 * 1024);
    let relayed = tokio::spawn(relay(input_end, output_end, from_peer, to_peer));

    let data = pattern(3 * 1024 * 1024 + 17);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(50_000) {
            input.write_all(chunk).await.unwrap();
        }
        // end of input: the relay shuts down the socket's write side
        drop(input);
    });
    let mut received = Vec::new();
    tokio::time::timeout(LIMIT, output.read_to_end(&mut received)).await.unwrap().unwrap();
    writer.await.unwrap();
    assert_eq!(received.len(), data.len() + 3);
    assert!(received[..data.len()] == data[..], "the echo differs");
    assert_eq!(&received[data.len()..], b"bye");
    tokio::time::timeout(LIMIT, relayed).await.unwrap().unwrap().unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn the_relay_ends_when_the_peer_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(b"hello and goodbye").await.unwrap();
    });
    let (from_peer, to_peer) = TcpStream::connect(("127.0.0.1", port)).await.unwrap().into_split();
    // input that never ends
    let (_input, input_end) = tokio::io::duplex(1024);
    let (output_end, mut output) = tokio::io::duplex(1024);
    let relayed = tokio::spawn(relay(input_end, output_end, from_peer, to_peer));
    let mut received = Vec::new();
    tokio::time::timeout(LIMIT, output.read_to_end(&mut received)).await.unwrap().unwrap();
    assert_eq!(received, b"hello and goodbye");
    tokio::time::timeout(LIMIT, relayed).await.unwrap().unwrap().unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn the_binary_relays_stdin_and_stdout() {
    let (port, server) = echo_listener().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinacle-supervisor"))
        .args([pinacle_supervisor::modes::TCP_CONNECT, "localhost", &port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = pattern(2 * 1024 * 1024 + 5);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&sent).await.unwrap();
        drop(stdin);
    });
    let mut received = Vec::new();
    let mut stdout = child.stdout.take().unwrap();
    tokio::time::timeout(LIMIT, stdout.read_to_end(&mut received)).await.unwrap().unwrap();
    writer.await.unwrap();
    assert_eq!(received.len(), data.len() + 3);
    assert!(received[..data.len()] == data[..], "the echo differs");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    assert_eq!(stderr, pinacle_supervisor::modes::TCP_CONNECTED, "connected, and said so first");
    let exit = tokio::time::timeout(LIMIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(exit.code(), Some(0));
    server.await.unwrap();
}

#[tokio::test]
async fn the_binary_reports_a_refused_connection() {
    // a port that was just free
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinacle-supervisor"))
        .args([pinacle_supervisor::modes::TCP_CONNECT, "127.0.0.1", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(LIMIT, out).await.unwrap().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("tcp-connect: cannot connect to 127.0.0.1:{port}: ")), "{stderr}");
    assert!(out.stdout.is_empty());

    let usage = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinacle-supervisor"))
        .args([pinacle_supervisor::modes::TCP_CONNECT, "127.0.0.1", "not-a-port"])
        .output()
        .await
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}
