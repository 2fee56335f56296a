//! The in-pod supervisor: the pod's first process.
//!
//! It runs the pod's install steps, then its processes, restarting them
//! with backoff when they crash and checking their health; it keeps each
//! process's log (a file and a ring buffer in memory); and it serves the
//! host agent on a Unix socket in a directory the agent shares with the
//! pod: exec with or without a pseudo-terminal, files, process status,
//! listening ports. Every request carries the pod's control secret.
//!
//! This library holds what both sides share: the [`protocol`], the
//! [`config`] the agent writes, the agent's [`client`], and the pure parts
//! of the supervisor (backoff, log ring, `/proc/net/tcp` parsing). The
//! binary (`src/main.rs`) is the supervisor itself; it is built as a static
//! executable so that it runs in any image.
//!
//! The same binary has helper [`modes`], run inside the pod through exec
//! for the SSH gateway: an SFTP server ([`sftp`]) and a TCP relay
//! ([`relay`]), both on stdin and stdout.

pub mod alloc;
pub mod client;
pub mod config;
pub mod listen;
pub mod memory;
pub mod mux;
pub mod protocol;
pub mod relay;
pub mod sftp;

use std::collections::VecDeque;
use std::time::Duration;

/// Where the supervisor finds its binary, configuration and socket inside
/// the pod.
pub mod paths {
    /// The supervisor binary (a read-only bind mount).
    pub const BINARY: &str = "/.pinacle/bin/pinacle-supervisor";
    /// The configuration and secret (a read-only bind mount).
    pub const CONFIG_DIR: &str = "/.pinacle/etc";
    /// `supervisor.json` in [`CONFIG_DIR`].
    pub const CONFIG_FILE: &str = "supervisor.json";
    /// The control secret in [`CONFIG_DIR`] (mode 0400).
    pub const SECRET_FILE: &str = "secret";
    /// Where the socket lives (a writable bind mount shared with the host).
    pub const RUN_DIR: &str = "/.pinacle/run";
    /// The control socket's name in [`RUN_DIR`]; per-process log files
    /// are in `logs/` beside it.
    pub const SOCKET: &str = "supervisor.sock";
}

/// The binary's helper modes: its first argument picks one, and the rest
/// of the command line is the mode's own. Each talks over stdin and stdout
/// and is meant to be run inside the pod through exec, e.g. with
/// `argv = [paths::BINARY, modes::SFTP_SERVER]`.
pub mod modes {
    /// `pinacle-supervisor sftp-server`: an SFTP (version 3) server on
    /// stdin and stdout, serving the pod's files as the process's user,
    /// with relative paths taken from its working directory. It exits 0
    /// when the client closes stdin. See [`crate::sftp`].
    pub const SFTP_SERVER: &str = "sftp-server";
    /// `pinacle-supervisor tcp-connect HOST PORT`: connects to HOST:PORT
    /// from inside the pod and relays stdin to the connection and the
    /// connection to stdout. Once connected it writes [`TCP_CONNECTED`]
    /// on stderr, before any data, so the caller knows the connection
    /// exists before it accepts a forward. A failed connection exits 1
    /// after `tcp-connect: cannot connect to HOST:PORT: <error>` on stderr;
    /// otherwise the mode exits 0. See [`crate::relay`].
    pub const TCP_CONNECT: &str = "tcp-connect";
    /// The line [`TCP_CONNECT`] writes on stderr once it is connected.
    pub const TCP_CONNECTED: &str = "tcp-connect: connected\n";
    /// `pinacle-supervisor tcp-listen PORT`: listens on the pod's loopback
    /// (port 0: any free port) for `ssh -R`, writes [`TCP_LISTENING`] and
    /// the port on stderr once bound, then carries the connections it
    /// accepts over stdin and stdout in [`crate::mux`] frames. It exits 1
    /// after `tcp-listen: cannot listen on port PORT: <error>` when the port
    /// cannot be bound, 0 when stdin ends. See [`crate::listen`].
    pub const TCP_LISTEN: &str = "tcp-listen";
    /// What [`TCP_LISTEN`] writes on stderr before the port it bound.
    pub const TCP_LISTENING: &str = "tcp-listen: listening on ";
}

/// Restart delays: 250 ms doubling to 30 s; a process that ran for
/// [`STABLE_AFTER`] counts as healthy again and starts over.
pub fn restart_delay(consecutive_failures: u32) -> Duration {
    const BASE_MS: u64 = 250;
    const MAX_MS: u64 = 30_000;
    let factor = 1u64.checked_shl(consecutive_failures.min(16)).unwrap_or(u64::MAX);
    Duration::from_millis(BASE_MS.saturating_mul(factor).min(MAX_MS))
}

/// How long a process must run before its failure count resets.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The last `capacity` bytes written, for `logs` without reading files.
#[derive(Debug, Clone)]
pub struct LogRing {
    capacity: usize,
    buf: VecDeque<u8>,
}

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, buf: VecDeque::with_capacity(capacity.min(1 << 16)) }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let bytes = if bytes.len() > self.capacity { &bytes[bytes.len() - self.capacity..] } else { bytes };
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.capacity);
        self.buf.drain(..overflow);
        self.buf.extend(bytes);
    }

    /// The last `n` bytes (all if fewer).
    pub fn tail(&self, n: usize) -> Vec<u8> {
        let skip = self.buf.len().saturating_sub(n);
        self.buf.iter().skip(skip).copied().collect()
    }
}

/// Listening sockets in the text of `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn listening_ports(proc_net_tcp: &str, v6: bool) -> Vec<protocol::ListeningPort> {
    let mut out = Vec::new();
    for line in proc_net_tcp.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st ...; state 0A is LISTEN
        let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else { continue };
        if *state != "0A" {
            continue;
        }
        let Some((addr, port)) = local.split_once(':') else { continue };
        let Ok(port) = u16::from_str_radix(port, 16) else { continue };
        let address = if v6 { parse_v6(addr) } else { parse_v4(addr) };
        if let Some(address) = address {
            out.push(protocol::ListeningPort { port, address });
        }
    }
    out
}

fn parse_v4(hex: &str) -> Option<String> {
    let n = u32::from_str_radix(hex, 16).ok()?;
    // the kernel prints the address as a host-order (little-endian) word
    Some(std::net::Ipv4Addr::from(n.swap_bytes()).to_string())
}

fn parse_v6(hex: &str) -> Option<String> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, word) in (0..4).map(|i| &hex[i * 8..i * 8 + 8]).enumerate() {
        let w = u32::from_str_radix(word, 16).ok()?.swap_bytes();
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
    }
    Some(std::net::Ipv6Addr::from(bytes).to_string())
}

/// A path for binding or connecting to the socket at `path` that fits in a
/// socket address (107 bytes): `path` itself, or for a deeper one, the
/// socket's name under `/proc/self/fd/N` of its directory (keep the
/// returned `File` open while using the path).
pub fn socket_address(path: &std::path::Path) -> std::io::Result<(Option<std::fs::File>, std::path::PathBuf)> {
    use std::os::fd::AsRawFd;
    if path.as_os_str().len() < 100 {
        return Ok((None, path.to_path_buf()));
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a socket path"));
    };
    let dir = std::fs::File::open(parent)?;
    let short = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    Ok((Some(dir), short))
}

/// Where to connect to the socket at `path`, which sits in a directory the
/// pod can write to: the socket is opened without following a symbolic
/// link (`O_PATH | O_NOFOLLOW`) and must be a socket; the connection then
/// goes through `/proc/self/fd/N` of that very file, so a pod cannot send
/// the agent to another socket of the host by swapping the name for a link.
/// Keep the returned descriptor open while connecting.
pub fn socket_to_connect(path: &std::path::Path) -> std::io::Result<(std::os::fd::OwnedFd, std::path::PathBuf)> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::{fstat, Mode, SFlag};
    use std::os::fd::AsRawFd;
    let (_dir, short) = socket_address(path)?;
    let fd = nix::fcntl::open(&short, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).map_err(std::io::Error::from)?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let st = fstat(fd.as_raw_fd()).map_err(std::io::Error::from)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not a socket", path.display())));
    }
    let via = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    Ok((fd, via))
}

/// Compares secrets in time independent of where they differ.
pub fn secrets_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delays_double_up_to_a_cap() {
        assert_eq!(restart_delay(0), Duration::from_millis(250));
        assert_eq!(restart_delay(1), Duration::from_millis(500));
        assert_eq!(restart_delay(4), Duration::from_secs(4));
        assert_eq!(restart_delay(7), Duration::from_secs(30));
        assert_eq!(restart_delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn the_log_ring_keeps_the_last_bytes() {
        let mut r = LogRing::new(8);
        r.push(b"hello ");
        r.push(b"world");
        assert_eq!(r.tail(100), b"lo world");
        assert_eq!(r.tail(5), b"world");
        r.push(b"0123456789abc");
        assert_eq!(r.tail(100), b"56789abc");
    }

    #[test]
    fn listening_ports_come_from_proc_net_tcp() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
                   1: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
                   2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        let ports = listening_ports(tcp, false);
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].port, ports[0].address.as_str()), (8080, "0.0.0.0"));
        assert_eq!((ports[1].port, ports[1].address.as_str()), (3000, "127.0.0.1"));
        let tcp6 = "header\n   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0\n\
                    1: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A 0 0 0 0 0 0\n";
        let ports = listening_ports(tcp6, true);
        assert_eq!((ports[0].port, ports[0].address.as_str()), (8081, "::"));
        assert_eq!((ports[1].port, ports[1].address.as_str()), (8082, "::1"));
        assert!(listening_ports("garbage\nmore garbage here x y z\n", false).is_empty());
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(secrets_match("abc", "abc"));
        assert!(!secrets_match("abc", "abd"));
        assert!(!secrets_match("abc", "abcd"));
    }
}
