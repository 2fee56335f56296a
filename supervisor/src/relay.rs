//! `pinacle-supervisor tcp-connect HOST PORT` ([`crate::modes::TCP_CONNECT`]):
//! a TCP connection made from inside the pod, relayed over stdin and
//! stdout, for the SSH gateway's port forwarding (`localhost` is the pod's
//! own loopback).
//!
//! The relay copies stdin to the connection and the connection to stdout.
//! When stdin ends, the connection's write side is shut down (the peer
//! sees end of file and may still answer); when the connection's read side
//! ends, whatever has been read is flushed to stdout and the relay is done,
//! whether or not stdin has ended.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::process::ExitCode;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read at a time in each direction.
const CHUNK: usize = 64 * 1024;

/// Relays `input` to the connection's write half `to_peer` and its read
/// half `from_peer` to `output`, until `from_peer` ends.
///
/// When `input` ends (or fails), `to_peer` is shut down, which for a TCP
/// connection half-closes it. The relay returns once `from_peer` has ended
/// and everything read from it has been written to `output` and flushed;
/// an error reading `from_peer` or writing `output` ends it early with
/// that error. Errors on the way to the peer only stop that direction.
pub async fn relay<I, O, R, W>(mut input: I, mut output: O, mut from_peer: R, mut to_peer: W) -> io::Result<()>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let up = async {
        // the copy's outcome does not matter: either way the peer is told
        // that no more is coming
        let _ = pump(&mut input, &mut to_peer).await;
        let _ = to_peer.shutdown().await;
    };
    let down = async {
        let r = pump(&mut from_peer, &mut output).await;
        let _ = output.shutdown().await;
        r.map(|_| ())
    };
    tokio::pin!(up, down);
    let mut up_done = false;
    loop {
        tokio::select! {
            () = &mut up, if !up_done => up_done = true,
            r = &mut down => return r,
        }
    }
}

/// Copies `from` to `to` until `from` ends, flushing after every chunk;
/// returns the bytes copied.
async fn pump<R, W>(from: &mut R, to: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            to.flush().await?;
            return Ok(total);
        };
        to.write_all(chunk).await?;
        to.flush().await?;
        total = total.saturating_add(n as u64);
    }
}

/// The `tcp-connect` mode: `args` are the arguments after the mode's name
/// (HOST and PORT). Exits 0 when the relay ends, 1 when the connection
/// cannot be made, 2 on a bad command line.
pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let [host, port] = args.as_slice() else {
        eprintln!("usage: pinacle-supervisor {} HOST PORT", crate::modes::TCP_CONNECT);
        return ExitCode::from(2);
    };
    let Ok(port_number) = port.parse::<u16>() else {
        eprintln!("tcp-connect: invalid port {port:?}");
        return ExitCode::from(2);
    };
    let rt = match runtime(crate::modes::TCP_CONNECT) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = rt.block_on(async {
        // an IPv6 address may come in brackets, as in a URL
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        // `localhost` is the loopback whatever the pod's image says (many
        // have no /etc/hosts, and musl would then ask DNS)
        let connected = if bare.eq_ignore_ascii_case("localhost") || bare.eq_ignore_ascii_case("localhost.") {
            let loopback = [std::net::SocketAddr::from(([127, 0, 0, 1], port_number)), std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port_number))];
            tokio::net::TcpStream::connect(&loopback[..]).await
        } else {
            tokio::net::TcpStream::connect((bare, port_number)).await
        };
        let socket = match connected {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tcp-connect: cannot connect to {host}:{port}: {e}");
                return ExitCode::from(1);
            }
        };
        let _ = socket.set_nodelay(true);
        {
            use std::io::Write;
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(crate::modes::TCP_CONNECTED.as_bytes()).and_then(|_| err.flush());
        }
        let (from_peer, to_peer) = socket.into_split();
        if let Err(e) = relay(stdin(), stdout(), from_peer, to_peer).await {
            eprintln!("tcp-connect: {host}:{port}: {e}");
        }
        ExitCode::SUCCESS
    });
    // a read of stdin may still be blocked in tokio's thread pool; it must
    // not hold up the exit
    rt.shutdown_background();
    code
}

/// The single-threaded runtime a helper mode runs on; when it cannot be
/// made, says so on stderr and gives exit code 1.
pub(crate) fn runtime(mode: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("{mode}: cannot start: {e}");
        ExitCode::from(1)
    })
}

/// Stdin for the relay: polled directly when it is a pipe (what exec gives
/// a command without a terminal), else tokio's stdin.
pub(crate) fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    let pipe = io::stdin().as_fd().try_clone_to_owned().and_then(tokio::net::unix::pipe::Receiver::from_owned_fd);
    match pipe {
        Ok(p) => Box::new(p),
        Err(_) => Box::new(tokio::io::stdin()),
    }
}

/// Stdout for the relay, as [`stdin`].
pub(crate) fn stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    let pipe = io::stdout().as_fd().try_clone_to_owned().and_then(tokio::net::unix::pipe::Sender::from_owned_fd);
    match pipe {
        Ok(p) => Box::new(p),
        Err(_) => Box::new(tokio::io::stdout()),
    }
}
