//! `pinacle-supervisor sftp-server` ([`crate::modes::SFTP_SERVER`]): an
//! SFTP server (protocol version 3, as OpenSSH speaks it) on stdin and
//! stdout, for the SSH gateway's `sftp` subsystem (and so `scp`, which
//! uses SFTP).
//!
//! It serves the pod's file system as the process's user; relative paths
//! are taken from the process's working directory, which is what
//! `realpath(".")` gives. Beside the version 3 requests it offers
//! OpenSSH's extensions `posix-rename`, `hardlink`, `fsync`, `statvfs`,
//! `fstatvfs`, `limits` (which lets OpenSSH's client move 255 KiB per
//! request instead of 32 KiB) and `expand-path` (for `~` in `scp` paths).
//!
//! The protocol framing is [`russh_sftp`]'s; this module is the
//! [`Handler`] that does the work ([`Server`]) and the stream it runs on in
//! the binary ([`BlockingStream`]). Requests are handled one at a time, in
//! order, with plain blocking system calls: the mode's process serves a
//! single client and has nothing else to do meanwhile.
//!
//! Two things follow OpenSSH rather than the letter of the draft: in
//! `SSH_FXP_SYMLINK` the first path is the link's target and the second
//! the link (the fields `russh_sftp` calls `linkpath` and `targetpath`);
//! and `SSH_FXP_RENAME` refuses to replace an existing file (use
//! `posix-rename@openssh.com` for that, as OpenSSH's client does).
//! File names that are not UTF-8 cannot be named over this protocol
//! implementation and are listed with their invalid bytes replaced.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File, Metadata, ReadDir};
use std::future::{ready, Future};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::libc;
use nix::sys::stat::UtimensatFlags;
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File as Entry, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use russh_sftp::server::{Config, Handler, StatusReply};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest request accepted, as OpenSSH's server (256 KiB).
pub const MAX_PACKET: u32 = 256 * 1024;
/// The most data one read returns, and the most one write should carry
/// (advertised with `limits@openssh.com`); leaves room for the header.
pub const MAX_DATA: u32 = MAX_PACKET - 1024;
/// Open files and directories at once, per session.
pub const MAX_HANDLES: usize = 1024;
/// Directory entries per `SSH_FXP_NAME` answer to a read of a directory.
const DIR_BATCH: usize = 100;

const POSIX_RENAME: &str = "posix-rename@openssh.com";
const HARDLINK: &str = "hardlink@openssh.com";
const FSYNC: &str = "fsync@openssh.com";
const STATVFS: &str = "statvfs@openssh.com";
const FSTATVFS: &str = "fstatvfs@openssh.com";
const LIMITS: &str = "limits@openssh.com";
const EXPAND_PATH: &str = "expand-path@openssh.com";

/// The `sftp-server` mode: serves stdin and stdout until the client closes
/// stdin, then exits 0.
pub fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sftp-server: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let stdin = io::stdin().as_fd().try_clone_to_owned();
    let stdout = io::stdout().as_fd().try_clone_to_owned();
    let (stdin, stdout) = match (stdin, stdout) {
        (Ok(i), Ok(o)) => (File::from(i), File::from(o)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("sftp-server: no stdin or stdout: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(serve(BlockingStream::new(stdin, stdout)));
    ExitCode::SUCCESS
}

/// Serves one SFTP session on `stream` with a fresh [`Server`], and
/// returns when it is over: the stream reached its end or failed.
pub async fn serve<S>(stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // russh_sftp runs the session in a task of its own and returns at
    // once; the task drops the stream when the session ends, and with it
    // the sender, which wakes the receiver.
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let stream = Session { stream, _done: done };
    russh_sftp::server::run_with_config(stream, Server::new(), Config { max_client_packet_len: MAX_PACKET }).await;
    let _ = ended.await;
}

/// A stream that holds a sender until it is dropped (see [`serve`]).
struct Session<S> {
    stream: S,
    _done: tokio::sync::oneshot::Sender<()>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Session<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Session<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// The stream

/// Input buffered ahead of the protocol's reads.
const READ_BUFFER: usize = 64 * 1024;
/// Responses gathered before they are written.
const WRITE_BUFFER: usize = 64 * 1024;

/// A reader and a writer (stdin and stdout) as one stream for
/// [`russh_sftp`], doing blocking system calls: each poll finishes its work
/// before it returns, so this is for a runtime whose only work is this
/// stream (as in [`main`]); it would stall any other task.
///
/// Input is read ahead in 64 KiB buffers. Responses are gathered and
/// written together: a flush is put off while requests that have already
/// arrived are waiting to be handled, and all that is pending goes out
/// before the stream waits for more input (so the client never waits for
/// answers it has earned). Large writes go straight through, in one
/// `writev` with what was pending. An error either way ends the stream: it
/// reads as end of file from then on.
pub struct BlockingStream<R, W: Write> {
    reader: R,
    writer: W,
    input: Box<[u8]>,
    start: usize,
    end: usize,
    output: Vec<u8>,
    failed: bool,
}

impl<R: Read + AsFd, W: Write + AsFd> BlockingStream<R, W> {
    /// A stream that reads `reader` and writes `writer`; either may be in
    /// non-blocking mode (the stream then waits for it with `poll`).
    pub fn new(reader: R, writer: W) -> Self {
        Self {
            reader,
            writer,
            input: vec![0u8; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            output: Vec::with_capacity(WRITE_BUFFER),
            failed: false,
        }
    }

    /// Writes out the gathered responses.
    fn write_pending(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let r = write_all_blocking(&mut self.writer, &self.output, &[]);
        self.output.clear();
        r
    }

    fn read_into(&mut self, buf: &mut ReadBuf<'_>) {
        if self.start == self.end {
            if self.failed {
                return;
            }
            // about to wait for input: the client gets its answers first
            if self.write_pending().is_err() {
                self.failed = true;
                return;
            }
            if buf.remaining() >= self.input.len() {
                // a large read (the body of a write request) goes straight
                // into the caller's buffer
                match read_blocking(&mut self.reader, buf.initialize_unfilled()) {
                    Ok(n) => buf.advance(n),
                    Err(_) => self.failed = true,
                }
                return;
            }
            match read_blocking(&mut self.reader, &mut self.input) {
                Ok(n) => (self.start, self.end) = (0, n),
                Err(_) => {
                    self.failed = true;
                    return;
                }
            }
        }
        let Some(ready) = self.input.get(self.start..self.end) else { return };
        let n = ready.len().min(buf.remaining());
        if let Some(chunk) = ready.get(..n) {
            buf.put_slice(chunk);
            self.start += n;
        }
    }

    fn write_from(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let r = if data.len() >= WRITE_BUFFER / 2 {
            // large (file data): out now, with whatever was pending
            let r = write_all_blocking(&mut self.writer, &self.output, data);
            self.output.clear();
            r
        } else if self.output.len() + data.len() > WRITE_BUFFER {
            let r = self.write_pending();
            self.output.extend_from_slice(data);
            r
        } else {
            self.output.extend_from_slice(data);
            Ok(())
        };
        match r {
            Ok(()) => Ok(data.len()),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn flush_now(&mut self) -> io::Result<()> {
        let r = self.write_pending();
        if r.is_err() {
            self.failed = true;
        }
        r
    }
}

impl<R: Read + AsFd + Unpin, W: Write + AsFd + Unpin> AsyncRead for BlockingStream<R, W> {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.get_mut().read_into(buf);
        Poll::Ready(Ok(()))
    }
}

impl<R: Read + AsFd + Unpin, W: Write + AsFd + Unpin> AsyncWrite for BlockingStream<R, W> {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(self.get_mut().write_from(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // requests already here are answered first (see the type's docs)
        if this.start < this.end && this.output.len() < WRITE_BUFFER / 2 && !this.failed {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(this.flush_now())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().flush_now())
    }
}

impl<R, W: Write> Drop for BlockingStream<R, W> {
    fn drop(&mut self) {
        if !self.failed && !self.output.is_empty() {
            let _ = self.writer.write_all(&self.output);
        }
    }
}

/// Waits until `fd` is ready for `events` (for a descriptor in
/// non-blocking mode).
fn wait_for(fd: BorrowedFd<'_>, events: nix::poll::PollFlags) -> io::Result<()> {
    let mut fds = [nix::poll::PollFd::new(fd, events)];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn read_blocking<R: Read + AsFd>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(reader.as_fd(), nix::poll::PollFlags::POLLIN)?,
            r => return r,
        }
    }
}

/// Writes all of `a` then all of `b`, in as few `writev` calls as it takes.
fn write_all_blocking<W: Write + AsFd>(writer: &mut W, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = match writer.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(writer.as_fd(), nix::poll::PollFlags::POLLOUT)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if n < a.len() {
            a = a.get(n..).unwrap_or_default();
        } else {
            b = b.get(n - a.len()..).unwrap_or_default();
            a = &[];
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The server

type Reply<T> = Result<T, StatusReply>;

/// An open file or directory.
enum Open {
    File(File),
    Dir(Dir),
}

/// A directory being listed.
struct Dir {
    path: PathBuf,
    entries: ReadDir,
    /// How many of `.` and `..` have been listed.
    dots: u8,
    /// The listing failed or ended.
    done: bool,
}

/// The SFTP request handler: one per session, holding its open files and
/// directories.
pub struct Server {
    handles: HashMap<u64, Open>,
    next_handle: u64,
    names: Names,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server with nothing open.
    pub fn new() -> Self {
        Self { handles: HashMap::new(), next_handle: 1, names: Names::default() }
    }

    fn insert(&mut self, open: Open) -> Reply<String> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message("too many open handles"));
        }
        let key = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        self.handles.insert(key, open);
        Ok(key.to_string())
    }

    fn get(&self, handle: &str) -> Reply<&Open> {
        handle.parse::<u64>().ok().and_then(|k| self.handles.get(&k)).ok_or_else(invalid_handle)
    }

    fn file(&self, handle: &str) -> Reply<&File> {
        match self.get(handle)? {
            Open::File(f) => Ok(f),
            Open::Dir(_) => Err(invalid_handle()),
        }
    }

    fn do_open(&mut self, id: u32, filename: &str, flags: OpenFlags, attrs: &FileAttributes) -> Reply<Handle> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message("too many open handles"));
        }
        let write = flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND);
        // creation flags as OpenSSH passes them to open(2), whatever the
        // access mode
        let mut custom = 0;
        if flags.contains(OpenFlags::CREATE) {
            custom |= libc::O_CREAT;
            if flags.contains(OpenFlags::EXCLUDE) {
                custom |= libc::O_EXCL;
            }
        }
        if flags.contains(OpenFlags::TRUNCATE) {
            custom |= libc::O_TRUNC;
        }
        let file = fs::OpenOptions::new()
            .read(flags.contains(OpenFlags::READ) || !write)
            .write(write)
            .append(flags.contains(OpenFlags::APPEND))
            .custom_flags(custom)
            .mode(attrs.permissions.map_or(0o666, |p| p & 0o7777))
            .open(filename)
            .map_err(io_error)?;
        Ok(Handle { id, handle: self.insert(Open::File(file))? })
    }

    fn do_read(&self, id: u32, handle: &str, offset: u64, len: u32) -> Reply<Data> {
        let file = self.file(handle)?;
        if i64::try_from(offset).is_err() {
            // past the end of any file
            return Err(StatusReply::new(StatusCode::Eof));
        }
        let len = len.min(MAX_DATA) as usize;
        let mut data = vec![0u8; len];
        let mut n = 0;
        while n < len {
            let Some(rest) = data.get_mut(n..) else { break };
            match file.read_at(rest, offset.saturating_add(n as u64)) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // a pipe or the like: read what comes
                Err(e) if e.raw_os_error() == Some(libc::ESPIPE) && n == 0 => {
                    n = read_some(file, &mut data).map_err(io_error)?;
                    break;
                }
                Err(_) if n > 0 => break,
                Err(e) => return Err(io_error(e)),
            }
        }
        if n == 0 {
            return Err(StatusReply::new(StatusCode::Eof));
        }
        data.truncate(n);
        Ok(Data { id, data })
    }

    fn do_write(&self, id: u32, handle: &str, offset: u64, data: &[u8]) -> Reply<Status> {
        let file = self.file(handle)?;
        match file.write_all_at(data, offset) {
            Err(e) if e.raw_os_error() == Some(libc::ESPIPE) => {
                let mut f = file;
                f.write_all(data).map_err(io_error)?;
            }
            r => r.map_err(io_error)?,
        }
        Ok(ok(id))
    }

    fn do_fstat(&self, id: u32, handle: &str) -> Reply<Attrs> {
        let md = match self.get(handle)? {
            Open::File(f) => f.metadata(),
            Open::Dir(d) => fs::metadata(&d.path),
        };
        Ok(Attrs { id, attrs: attrs_of(&md.map_err(io_error)?) })
    }

    fn do_fsetstat(&self, id: u32, handle: &str, attrs: &FileAttributes) -> Reply<Status> {
        match self.get(handle)? {
            Open::File(f) => set_attrs(Target::File(f), attrs),
            Open::Dir(d) => set_attrs(Target::Path(&d.path), attrs),
        }
        .map_err(io_error)?;
        Ok(ok(id))
    }

    fn do_opendir(&mut self, id: u32, path: &str) -> Reply<Handle> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message("too many open handles"));
        }
        let entries = fs::read_dir(path).map_err(io_error)?;
        let dir = Dir { path: PathBuf::from(path), entries, dots: 0, done: false };
        Ok(Handle { id, handle: self.insert(Open::Dir(dir))? })
    }

    fn do_readdir(&mut self, id: u32, handle: &str) -> Reply<Name> {
        let key = handle.parse::<u64>().map_err(|_| invalid_handle())?;
        let Some(Open::Dir(dir)) = self.handles.get_mut(&key) else { return Err(invalid_handle()) };
        let now = unix_now();
        let mut files = Vec::new();
        while dir.dots < 2 {
            let name = if dir.dots == 0 { "." } else { ".." };
            dir.dots += 1;
            if let Ok(md) = fs::metadata(dir.path.join(name)) {
                files.push(entry(name.to_owned(), &md, &mut self.names, now));
            }
        }
        while files.len() < DIR_BATCH && !dir.done {
            match dir.entries.next() {
                Some(Ok(e)) => {
                    // lstat, as ls -l: a link is listed as a link; an entry
                    // gone meanwhile is left out
                    let Ok(md) = e.metadata() else { continue };
                    let name = e.file_name().to_string_lossy().into_owned();
                    files.push(entry(name, &md, &mut self.names, now));
                }
                Some(Err(e)) => {
                    dir.done = true;
                    if files.is_empty() {
                        return Err(io_error(e));
                    }
                }
                None => dir.done = true,
            }
        }
        if files.is_empty() {
            return Err(StatusReply::new(StatusCode::Eof));
        }
        Ok(Name { id, files })
    }

    fn do_extended(&mut self, id: u32, request: &str, data: &[u8]) -> Reply<Packet> {
        let mut args = Args(data);
        match request {
            POSIX_RENAME => {
                let (from, to) = (args.string()?, args.string()?);
                fs::rename(from, to).map_err(io_error)?;
                Ok(ok(id).into())
            }
            HARDLINK => {
                let (from, to) = (args.string()?, args.string()?);
                fs::hard_link(from, to).map_err(io_error)?;
                Ok(ok(id).into())
            }
            FSYNC => {
                self.file(args.string()?)?.sync_all().map_err(io_error)?;
                Ok(ok(id).into())
            }
            STATVFS => {
                let st = nix::sys::statvfs::statvfs(args.string()?).map_err(|e| io_error(e.into()))?;
                Ok(ExtendedReply { id, data: statvfs_reply(&st) }.into())
            }
            FSTATVFS => {
                let st = nix::sys::statvfs::fstatvfs(self.file(args.string()?)?).map_err(|e| io_error(e.into()))?;
                Ok(ExtendedReply { id, data: statvfs_reply(&st) }.into())
            }
            LIMITS => {
                let limits = [u64::from(MAX_PACKET), u64::from(MAX_DATA), u64::from(MAX_DATA), MAX_HANDLES as u64];
                Ok(ExtendedReply { id, data: limits.iter().flat_map(|v| v.to_be_bytes()).collect() }.into())
            }
            EXPAND_PATH => {
                let path = expand_tilde(args.string()?)?;
                let resolved = resolve(&path).map_err(io_error)?;
                Ok(one_name(id, path_string(resolved)).into())
            }
            _ => Err(StatusReply::new(StatusCode::OpUnsupported)),
        }
    }
}

impl Handler for Server {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusReply::new(StatusCode::OpUnsupported)
    }

    fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> impl Future<Output = Result<Version, Self::Error>> + Send {
        let mut version = Version::new();
        for (name, v) in
            [(POSIX_RENAME, "1"), (HARDLINK, "1"), (FSYNC, "1"), (STATVFS, "2"), (FSTATVFS, "2"), (LIMITS, "1"), (EXPAND_PATH, "1")]
        {
            version.extensions.insert(name.to_owned(), v.to_owned());
        }
        ready(Ok(version))
    }

    fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> impl Future<Output = Result<Handle, Self::Error>> + Send {
        ready(self.do_open(id, &filename, pflags, &attrs))
    }

    fn close(&mut self, id: u32, handle: String) -> impl Future<Output = Result<Status, Self::Error>> + Send {
        let closed = handle.parse::<u64>().ok().and_then(|k| self.handles.remove(&k));
        ready(match closed {
            Some(_) => Ok(ok(id)),
            None => Err(invalid_handle()),
        })
    }

    fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<Data, Self::Error>> + Send {
        ready(self.do_read(id, &handle, offset, len))
    }

    fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<Status, Self::Error>> + Send {
        ready(self.do_write(id, &handle, offset, &data))
    }

    fn lstat(&mut self, id: u32, path: String) -> impl Future<Output = Result<Attrs, Self::Error>> + Send {
        ready(fs::symlink_metadata(path).map(|md| Attrs { id, attrs: attrs_of(&md) }).map_err(io_error))
    }

    fn fstat(&mut self, id: u32, handle: String) -> impl Future<Output = Result<Attrs, Self::Error>> + Send {
        ready(self.do_fstat(id, &handle))
    }

    fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> impl Future<Output = Result<Status, Self::Error>> + Send {
        ready(set_attrs(Target::Path(Path::new(&path)), &attrs).map(|()| ok(id)).map_err(io_error))
    }

    fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> impl Future<Output = Result<Status, Self::Error>> + Send {
        ready(self.do_fsetstat(id, &handle, &attrs))
    }

    fn opendir(&mut self, id: u32, path: String) -> impl Future<Output = Result<Handle, Self::Error>> + Send {
        ready(self.do_opendir(id, &path))
    }

    fn readdir(&mut self, id: u32, handle: String) -> impl Future<Output = Result<Name, Self::Error>> + Send {
        ready(self.do_readdir(id, &handle))
    }

    fn remove(&mut self, id: u32, filename: String) -> impl Future<Output = Result<Status, Self::Error>> + Send {
        ready(fs::remove_file(filename).map(|()| ok(id)).map_err(io_error))
    }

    fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> impl Future<Output = Result<Status, Self::Error>> + Send {
        let mode = attrs.permissions.map_or(0o777, |p| p & 0o7777);
        ready(fs::DirBuilder::new().mode(mode).create(path).map(|()| ok(id)).map_err(io_error))
    }

    fn rmdir(&mut self, id: u32, path: String) -> impl Future<Output = Result<Status, Self::Error>> + Send {
        ready(fs::remove_dir(path).map(|()| ok(id)).map_err(io_error))
    }

    fn realpath(&mut self, id: u32, path: String) -> impl Future<Output = Result<Name, Self::Error>> + Send {
        ready(resolve(Path::new(&path)).map(|p| one_name(id, path_string(p))).map_err(io_error))
    }

    fn stat(&mut self, id: u32, path: String) -> impl Future<Output = Result<Attrs, Self::Error>> + Send {
        ready(fs::metadata(path).map(|md| Attrs { id, attrs: attrs_of(&md) }).map_err(io_error))
    }

    fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> impl Future<Output = Result<Status, Self::Error>> + Send {
        ready(rename_no_replace(Path::new(&oldpath), Path::new(&newpath)).map(|()| ok(id)).map_err(io_error))
    }

    fn readlink(&mut self, id: u32, path: String) -> impl Future<Output = Result<Name, Self::Error>> + Send {
        ready(fs::read_link(path).map(|p| one_name(id, path_string(p))).map_err(io_error))
    }

    /// OpenSSH's order: `linkpath` carries the target, `targetpath` the
    /// link to create.
    fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> impl Future<Output = Result<Status, Self::Error>> + Send {
        ready(std::os::unix::fs::symlink(linkpath, targetpath).map(|()| ok(id)).map_err(io_error))
    }

    fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<Packet, Self::Error>> + Send {
        ready(self.do_extended(id, &request, &data))
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn ok(id: u32) -> Status {
    // no message: nothing shows it, and it costs nothing
    Status { id, status_code: StatusCode::Ok, error_message: String::new(), language_tag: String::new() }
}

fn invalid_handle() -> StatusReply {
    StatusCode::Failure.with_message("invalid handle")
}

/// An error as a status: no such file, permission denied, or a failure
/// with the system's description.
fn io_error(e: io::Error) -> StatusReply {
    match e.kind() {
        io::ErrorKind::NotFound => StatusReply::new(StatusCode::NoSuchFile),
        io::ErrorKind::PermissionDenied => StatusReply::new(StatusCode::PermissionDenied),
        _ => {
            let message = match e.raw_os_error() {
                Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
                None => e.to_string(),
            };
            match e.raw_os_error() {
                Some(libc::ENOSYS | libc::EOPNOTSUPP) => StatusCode::OpUnsupported.with_message(message),
                _ => StatusCode::Failure.with_message(message),
            }
        }
    }
}

fn read_some(mut file: &File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

fn attrs_of(md: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(md.size()),
        uid: Some(md.uid()),
        user: None,
        gid: Some(md.gid()),
        group: None,
        permissions: Some(md.mode()),
        atime: Some(unix_u32(md.atime())),
        mtime: Some(unix_u32(md.mtime())),
    }
}

/// A time for the protocol's 32-bit fields.
fn unix_u32(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// What `setstat` or `fsetstat` changes.
#[derive(Clone, Copy)]
enum Target<'a> {
    Path(&'a Path),
    File(&'a File),
}

/// Applies `attrs` in OpenSSH's order: size, permissions, times, owner.
fn set_attrs(target: Target<'_>, attrs: &FileAttributes) -> io::Result<()> {
    if let Some(size) = attrs.size {
        match target {
            Target::Path(p) => {
                let len = i64::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
                nix::unistd::truncate(p, len)?;
            }
            Target::File(f) => f.set_len(size)?,
        }
    }
    if let Some(mode) = attrs.permissions {
        let perms = fs::Permissions::from_mode(mode & 0o7777);
        match target {
            Target::Path(p) => fs::set_permissions(p, perms)?,
            Target::File(f) => f.set_permissions(perms)?,
        }
    }
    if attrs.atime.is_some() || attrs.mtime.is_some() {
        let time = |t: Option<u32>| t.map_or(TimeSpec::UTIME_OMIT, |t| TimeSpec::new(t.into(), 0));
        let (atime, mtime) = (time(attrs.atime), time(attrs.mtime));
        match target {
            Target::Path(p) => nix::sys::stat::utimensat(None, p, &atime, &mtime, UtimensatFlags::FollowSymlink)?,
            Target::File(f) => nix::sys::stat::futimens(f.as_raw_fd(), &atime, &mtime)?,
        }
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        let (uid, gid) = (attrs.uid.map(Uid::from_raw), attrs.gid.map(Gid::from_raw));
        match target {
            Target::Path(p) => nix::unistd::chown(p, uid, gid)?,
            Target::File(f) => nix::unistd::fchown(f.as_raw_fd(), uid, gid)?,
        }
    }
    Ok(())
}

/// `path` made absolute, through symbolic links; the last component need
/// not exist (where a file is about to be created).
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    match fs::canonicalize(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return Err(e) };
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            Ok(fs::canonicalize(parent)?.join(name))
        }
        r => r,
    }
}

/// `~` and `~user` at the start of `path` replaced by a home directory.
fn expand_tilde(path: &str) -> Reply<PathBuf> {
    let Some(rest) = path.strip_prefix('~') else { return Ok(PathBuf::from(path)) };
    let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let home = if user.is_empty() {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| nix::unistd::User::from_uid(Uid::current()).ok().flatten().map(|u| u.dir))
    } else {
        nix::unistd::User::from_name(user).ok().flatten().map(|u| u.dir)
    };
    let home = home.ok_or_else(|| StatusCode::NoSuchFile.with_message("no such user or home directory"))?;
    Ok(if tail.is_empty() { home } else { home.join(tail) })
}

/// `SSH_FXP_RENAME` as OpenSSH does it: a regular file is linked to the
/// new name then unlinked from the old (so an existing file is never
/// replaced, without a race); other files, or where links do not work,
/// are renamed if nothing has the new name.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    let no_replace = || match fs::symlink_metadata(to) {
        Ok(_) => Err(io::Error::from_raw_os_error(libc::EEXIST)),
        Err(_) => fs::rename(from, to),
    };
    if !fs::symlink_metadata(from)?.is_file() {
        return no_replace();
    }
    match fs::hard_link(from, to) {
        Ok(()) => {
            if let Err(e) = fs::remove_file(from) {
                let _ = fs::remove_file(to);
                return Err(e);
            }
            Ok(())
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV | libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EMLINK)) => {
            no_replace()
        }
        Err(e) => Err(e),
    }
}

fn path_string(p: PathBuf) -> String {
    p.into_os_string().into_string().unwrap_or_else(|s| s.to_string_lossy().into_owned())
}

/// An answer naming one path (realpath, readlink): its long name is the
/// path too, and no attributes, as OpenSSH.
fn one_name(id: u32, path: String) -> Name {
    Name { id, files: vec![Entry { filename: path.clone(), longname: path, attrs: FileAttributes::default() }] }
}

/// The arguments of an extended request: SSH strings one after another.
struct Args<'a>(&'a [u8]);

impl<'a> Args<'a> {
    fn string(&mut self) -> Reply<&'a str> {
        let bad = || StatusReply::new(StatusCode::BadMessage);
        let (len, rest) = self.0.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_be_bytes(*len) as usize;
        let (s, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
        self.0 = rest;
        std::str::from_utf8(s).map_err(|_| bad())
    }
}

/// The answer to `statvfs@openssh.com`: eleven 64-bit numbers.
// the fields' C types are 64 bits wide on some systems only
#[allow(clippy::useless_conversion)]
fn statvfs_reply(st: &nix::sys::statvfs::Statvfs) -> Vec<u8> {
    use nix::sys::statvfs::FsFlags;
    let mut flags = 0u64;
    if st.flags().contains(FsFlags::ST_RDONLY) {
        flags |= 1;
    }
    if st.flags().contains(FsFlags::ST_NOSUID) {
        flags |= 2;
    }
    let fields = [
        u64::from(st.block_size()),
        u64::from(st.fragment_size()),
        u64::from(st.blocks()),
        u64::from(st.blocks_free()),
        u64::from(st.blocks_available()),
        u64::from(st.files()),
        u64::from(st.files_free()),
        u64::from(st.files_available()),
        u64::from(st.filesystem_id()),
        flags,
        u64::from(st.name_max()),
    ];
    fields.iter().flat_map(|v| v.to_be_bytes()).collect()
}

// ---------------------------------------------------------------------------
// Listings

/// User and group names by id, looked up once each.
#[derive(Default)]
struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn user(&mut self, uid: u32) -> &str {
        self.users.entry(uid).or_insert_with(|| match nix::unistd::User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(u)) => u.name,
            _ => uid.to_string(),
        })
    }

    fn group(&mut self, gid: u32) -> &str {
        self.groups.entry(gid).or_insert_with(|| match nix::unistd::Group::from_gid(Gid::from_raw(gid)) {
            Ok(Some(g)) => g.name,
            _ => gid.to_string(),
        })
    }
}

fn entry(filename: String, md: &Metadata, names: &mut Names, now: i64) -> Entry {
    let longname = long_name(&filename, md, names, now);
    Entry { filename, longname, attrs: attrs_of(md) }
}

/// A line of `ls -l`, as OpenSSH's server writes it (times in UTC):
/// `-rw-r--r--    1 user     group        1234 Jan  2 03:04 name`.
fn long_name(name: &str, md: &Metadata, names: &mut Names, now: i64) -> String {
    let mut s = String::with_capacity(64 + name.len());
    push_mode(&mut s, md.mode());
    let _ = write!(s, "  {:>3} {:<8}", md.nlink(), names.user(md.uid()));
    let _ = write!(s, " {:<8} {:>8} ", names.group(md.gid()), md.size());
    push_date(&mut s, md.mtime(), now);
    s.push(' ');
    s.push_str(name);
    s
}

/// The ten characters of `ls -l`'s mode column.
fn push_mode(s: &mut String, mode: u32) {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        libc::S_IFREG => '-',
        _ => '?',
    };
    s.push(kind);
    let bit = |b: u32, c: char| if mode & b != 0 { c } else { '-' };
    let exec = |x: u32, special: u32, set: char, unset: char| match (mode & x != 0, mode & special != 0) {
        (true, true) => set,
        (false, true) => unset,
        (true, false) => 'x',
        (false, false) => '-',
    };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(exec(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(exec(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(exec(0o001, 0o1000, 't', 'T'));
}

/// `Jan  2 03:04` for the last six months, else `Jan  2  2006`.
fn push_date(s: &mut String, t: i64, now: i64) {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (year, month, day) = civil_from_days(t.div_euclid(86_400));
    let secs = t.rem_euclid(86_400);
    let month = month.checked_sub(1).and_then(|m| MONTHS.get(m as usize)).unwrap_or(&"???");
    let recent = t <= now && now.saturating_sub(t) < 365 * 86_400 / 2;
    let _ = if recent {
        write!(s, "{month} {day:>2} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
    } else {
        write!(s, "{month} {day:>2}  {year}")
    };
}

/// (year, month 1-12, day 1-31) of a day counted from 1970-01-01
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let mut s = String::new();
        push_date(&mut s, 1_700_000_000, 1_700_000_100);
        assert_eq!(s, "Nov 14 22:13");
        s.clear();
        push_date(&mut s, 1_136_214_245, 1_700_000_000);
        assert_eq!(s, "Jan  2  2006");
        s.clear();
        push_date(&mut s, i64::MIN, 0);
        push_date(&mut s, i64::MAX, 0);
    }

    #[test]
    fn modes_read_as_ls_does() {
        let mode = |m: u32| {
            let mut s = String::new();
            push_mode(&mut s, m);
            s
        };
        assert_eq!(mode(0o100644), "-rw-r--r--");
        assert_eq!(mode(0o040755), "drwxr-xr-x");
        assert_eq!(mode(0o120777), "lrwxrwxrwx");
        assert_eq!(mode(0o104755), "-rwsr-xr-x");
        assert_eq!(mode(0o041777), "drwxrwxrwt");
        assert_eq!(mode(0o102644), "-rw-r-Sr--");
    }

    #[test]
    fn extended_arguments_are_checked() {
        let mut a = Args(b"\0\0\0\x03abc\0\0\0\x01d");
        assert_eq!(a.string().ok(), Some("abc"));
        assert_eq!(a.string().ok(), Some("d"));
        assert!(a.string().is_err());
        assert!(Args(b"\0\0\0\x09abc").string().is_err());
        assert!(Args(b"\xff\xff\xff\xffabc").string().is_err());
        assert!(Args(b"\0\0\0\x01\xff").string().is_err());
    }
}
