//! The `sftp-server` mode, driven by russh-sftp's client: in memory
//! against the handler, over a socket against the blocking stream, and
//! over pipes against the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use pinacle_supervisor::sftp;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::{RawSftpSession, SftpSession};
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client session with a server on an in-memory stream.
async fn session() -> SftpSession {
    let (client, server) = tokio::io::duplex(1 << 20);
    tokio::spawn(sftp::serve(server));
    SftpSession::new(client).await.unwrap()
}

fn status<T>(r: Result<T, SftpError>) -> StatusCode {
    match r {
        Err(SftpError::Status(s)) => s.status_code,
        Err(e) => panic!("expected an error status, got {e}"),
        Ok(_) => panic!("expected an error status, got success"),
    }
}

fn path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

/// Bytes that differ from chunk to chunk.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

async fn write_in_chunks(sftp: &SftpSession, file: &str, data: &[u8], chunk: usize) {
    let mut f = sftp.create(file).await.unwrap();
    for part in data.chunks(chunk) {
        f.write_all(part).await.unwrap();
    }
    f.flush().await.unwrap();
    f.shutdown().await.unwrap();
}

#[tokio::test]
async fn files_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sftp = session().await;
    let file = path(&dir, "data.bin");
    let data = pattern(3 * 1024 * 1024 + 12_345);

    write_in_chunks(&sftp, &file, &data, 100_000).await;
    assert_eq!(std::fs::read(&file).unwrap(), data);
    assert_eq!(sftp.read(file.as_str()).await.unwrap(), data);
    assert_eq!(sftp.metadata(file.as_str()).await.unwrap().size, Some(data.len() as u64));
    let md = sftp.symlink_metadata(file.as_str()).await.unwrap();
    assert!(md.is_regular() && !md.is_dir());

    // positional reads
    let mut f = sftp.open(file.as_str()).await.unwrap();
    let mut buf = vec![0u8; 10];
    tokio::io::AsyncSeekExt::seek(&mut f, std::io::SeekFrom::Start(1_000_000)).await.unwrap();
    f.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, data[1_000_000..1_000_010]);
    assert_eq!(f.metadata().await.unwrap().size, Some(data.len() as u64));
    f.shutdown().await.unwrap();

    // an empty file reads as empty
    let empty = path(&dir, "empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(sftp.read(empty.as_str()).await.unwrap().is_empty());
}

#[tokio::test]
async fn directories_list_rename_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let sftp = session().await;
    let sub = path(&dir, "sub");
    sftp.create_dir(sub.as_str()).await.unwrap();
    assert!(Path::new(&sub).is_dir());
    for i in 0..250 {
        std::fs::write(Path::new(&sub).join(format!("f{i:03}")), format!("{i}")).unwrap();
    }
    std::fs::create_dir(Path::new(&sub).join("inner")).unwrap();

    let entries: Vec<_> = sftp.read_dir(sub.as_str()).await.unwrap().collect();
    let names: BTreeSet<String> = entries.iter().map(|e| e.file_name()).collect();
    // (the client leaves out . and .., which the server lists)
    assert_eq!(entries.len(), 251, "250 files and a directory");
    assert!(names.contains("f000") && names.contains("f249"));
    let inner = entries.iter().find(|e| e.file_name() == "inner").unwrap();
    assert!(inner.file_type().is_dir());
    let f7 = entries.iter().find(|e| e.file_name() == "f007").unwrap();
    assert_eq!(f7.metadata().size, Some(1));

    // rename, which does not replace
    let (a, b) = (format!("{sub}/f001"), format!("{sub}/renamed"));
    sftp.rename(a.as_str(), b.as_str()).await.unwrap();
    assert!(!Path::new(&a).exists());
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "1");
    assert_eq!(status(sftp.rename(format!("{sub}/f002"), b.as_str()).await), StatusCode::Failure);
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "1");
    // a directory renames too
    sftp.rename(format!("{sub}/inner"), format!("{sub}/inner2")).await.unwrap();
    assert!(Path::new(&sub).join("inner2").is_dir());

    sftp.remove_file(b.as_str()).await.unwrap();
    assert!(!Path::new(&b).exists());
    assert_eq!(status(sftp.remove_file(b.as_str()).await), StatusCode::NoSuchFile);

    let (empty, full) = (path(&dir, "empty-dir"), sub.clone());
    sftp.create_dir(empty.as_str()).await.unwrap();
    sftp.remove_dir(empty.as_str()).await.unwrap();
    assert!(!Path::new(&empty).exists());
    assert_eq!(status(sftp.remove_dir(full.as_str()).await), StatusCode::Failure);
    assert_eq!(status(sftp.create_dir(full.as_str()).await), StatusCode::Failure);
    assert_eq!(status(sftp.read_dir(format!("{sub}/f003")).await), StatusCode::Failure);
    assert_eq!(status(sftp.read_dir(path(&dir, "missing")).await), StatusCode::NoSuchFile);
}

#[tokio::test]
async fn paths_resolve_against_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sftp = session().await;
    let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
    assert_eq!(sftp.canonicalize(".").await.unwrap(), cwd.display().to_string());
    assert_eq!(sftp.canonicalize("").await.unwrap(), cwd.display().to_string());
    let real = dir.path().canonicalize().unwrap();
    std::fs::create_dir(dir.path().join("x")).unwrap();
    assert_eq!(sftp.canonicalize(path(&dir, "x/../x/.")).await.unwrap(), real.join("x").display().to_string());
    // a name about to be created resolves through its directory
    assert_eq!(sftp.canonicalize(path(&dir, "x/new")).await.unwrap(), real.join("x/new").display().to_string());
    assert_eq!(status(sftp.canonicalize(path(&dir, "no/such")).await), StatusCode::NoSuchFile);
}

#[tokio::test]
async fn errors_come_back_as_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let sftp = session().await;
    assert_eq!(status(sftp.open(path(&dir, "missing")).await), StatusCode::NoSuchFile);
    assert_eq!(status(sftp.metadata(path(&dir, "missing")).await), StatusCode::NoSuchFile);
    assert_eq!(status(sftp.read_link(path(&dir, "missing")).await), StatusCode::NoSuchFile);
    assert_eq!(status(sftp.create(path(&dir, "missing/file")).await), StatusCode::NoSuchFile);
    // reading a directory's handle as a file
    let mut d = sftp.open(dir.path().display().to_string()).await.unwrap();
    let mut buf = [0u8; 4];
    assert!(d.read(&mut buf).await.is_err());

    // requests on handles that are not open
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(sftp::serve(server));
    let raw = RawSftpSession::new(client);
    raw.init().await.unwrap();
    for handle in ["", "12345", "not a handle", "-1", "99999999999999999999999"] {
        assert_eq!(status(raw.read(handle, 0, 10).await), StatusCode::Failure);
        assert_eq!(status(raw.write(handle, 0, vec![1, 2, 3]).await), StatusCode::Failure);
        assert_eq!(status(raw.close(handle).await), StatusCode::Failure);
        assert_eq!(status(raw.readdir(handle).await), StatusCode::Failure);
        assert_eq!(status(raw.fstat(handle).await), StatusCode::Failure);
    }
    // (an extended request's answer comes back as it is)
    let extended_status = |p| match p {
        Ok(russh_sftp::protocol::Packet::Status(s)) => s.status_code,
        other => panic!("expected a status, got {other:?}"),
    };
    assert_eq!(extended_status(raw.extended("no-such-extension@example.com", vec![1, 2]).await), StatusCode::OpUnsupported);
    assert_eq!(extended_status(raw.extended("posix-rename@openssh.com", vec![0, 0, 0, 9, 1]).await), StatusCode::BadMessage);
    // a file handle is no directory handle, nor the other way round
    let file = path(&dir, "f");
    std::fs::write(&file, b"abc").unwrap();
    let fh = raw.open(file.as_str(), OpenFlags::READ, FileAttributes::default()).await.unwrap().handle;
    assert_eq!(status(raw.readdir(fh.as_str()).await), StatusCode::Failure);
    let dh = raw.opendir(dir.path().display().to_string()).await.unwrap().handle;
    assert_eq!(status(raw.read(dh.as_str(), 0, 10).await), StatusCode::Failure);
    // reads past the end are EOF
    assert_eq!(raw.read(fh.as_str(), 0, 100).await.unwrap().data, b"abc");
    assert_eq!(status(raw.read(fh.as_str(), 3, 100).await), StatusCode::Eof);
    assert_eq!(status(raw.read(fh.as_str(), u64::MAX, 100).await), StatusCode::Eof);
    raw.close(fh.as_str()).await.unwrap();
    assert_eq!(status(raw.close(fh.as_str()).await), StatusCode::Failure);
}

#[tokio::test]
async fn open_honours_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let sftp = session().await;
    let file = path(&dir, "f");
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
    let attrs = FileAttributes { permissions: Some(0o600), ..Default::default() };
    let mut f = sftp.open_with_flags_and_attributes(file.as_str(), flags, attrs).await.unwrap();
    f.write_all(b"hello").await.unwrap();
    f.shutdown().await.unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    // exclusive creation of an existing file fails
    assert_eq!(status(sftp.open_with_flags(file.as_str(), flags).await), StatusCode::Failure);
    // append
    let mut f = sftp.open_with_flags(file.as_str(), OpenFlags::WRITE | OpenFlags::APPEND).await.unwrap();
    f.write_all(b" world").await.unwrap();
    f.shutdown().await.unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"hello world");
    // without truncation a write overwrites in place
    let mut f = sftp.open_with_flags(file.as_str(), OpenFlags::WRITE).await.unwrap();
    f.write_all(b"J").await.unwrap();
    f.shutdown().await.unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"Jello world");
    // truncation
    let mut f = sftp.open_with_flags(file.as_str(), OpenFlags::WRITE | OpenFlags::TRUNCATE).await.unwrap();
    f.write_all(b"new").await.unwrap();
    f.shutdown().await.unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"new");
    // a file opened to read cannot be written
    let mut f = sftp.open(file.as_str()).await.unwrap();
    let written = async {
        f.write_all(b"x").await?;
        f.flush().await
    };
    assert!(written.await.is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"new");
}

#[tokio::test]
async fn attributes_can_be_set() {
    let dir = tempfile::tempdir().unwrap();
    let sftp = session().await;
    let file = path(&dir, "f");
    std::fs::write(&file, b"0123456789").unwrap();
    let attrs = FileAttributes {
        size: Some(4),
        permissions: Some(0o640),
        atime: Some(1_000_000_000),
        mtime: Some(1_100_000_000),
        ..Default::default()
    };
    sftp.set_metadata(file.as_str(), attrs).await.unwrap();
    let md = std::fs::metadata(&file).unwrap();
    assert_eq!((md.len(), md.mode() & 0o777, md.atime(), md.mtime()), (4, 0o640, 1_000_000_000, 1_100_000_000));
    let seen = sftp.metadata(file.as_str()).await.unwrap();
    assert_eq!((seen.size, seen.mtime, seen.permissions.map(|p| p & 0o777)), (Some(4), Some(1_100_000_000), Some(0o640)));

    // the same through a handle
    let f = sftp.open_with_flags(file.as_str(), OpenFlags::WRITE).await.unwrap();
    f.set_metadata(FileAttributes { size: Some(2), permissions: Some(0o604), ..Default::default() }).await.unwrap();
    let md = std::fs::metadata(&file).unwrap();
    assert_eq!((md.len(), md.permissions().mode() & 0o777), (2, 0o604));
    let chmod = FileAttributes { permissions: Some(0o600), ..Default::default() };
    assert_eq!(status(sftp.set_metadata(path(&dir, "missing"), chmod).await), StatusCode::NoSuchFile);
}

#[tokio::test]
async fn links_follow_openssh() {
    let dir = tempfile::tempdir().unwrap();
    let sftp = session().await;
    std::fs::write(dir.path().join("target"), b"t").unwrap();
    let link = path(&dir, "link");
    // OpenSSH's order: the target first, then the link
    sftp.symlink("target", link.as_str()).await.unwrap();
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("target"));
    assert_eq!(sftp.read_link(link.as_str()).await.unwrap(), "target");
    assert!(sftp.symlink_metadata(link.as_str()).await.unwrap().is_symlink());
    assert_eq!(sftp.metadata(link.as_str()).await.unwrap().size, Some(1));
    assert!(sftp.hardlink(path(&dir, "target"), path(&dir, "hard")).await.unwrap());
    assert_eq!(std::fs::metadata(dir.path().join("hard")).unwrap().nlink(), 2);
    assert!(sftp.fs_info(dir.path().display().to_string()).await.unwrap().is_some_and(|s| s.blocks > 0));
    let home = std::env::var("HOME").unwrap_or_default();
    if !home.is_empty() && Path::new(&home).is_dir() {
        let expected = Path::new(&home).canonicalize().unwrap().display().to_string();
        assert_eq!(sftp.expand_path("~").await.unwrap(), Some(expected));
    }
}

#[tokio::test]
async fn open_handles_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(&dir, "f");
    std::fs::write(&file, b"x").unwrap();
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(sftp::serve(server));
    let raw = RawSftpSession::new(client);
    raw.init().await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..sftp::MAX_HANDLES {
        handles.push(raw.open(file.as_str(), OpenFlags::READ, FileAttributes::default()).await.unwrap().handle);
    }
    assert_eq!(status(raw.open(file.as_str(), OpenFlags::READ, FileAttributes::default()).await), StatusCode::Failure);
    assert_eq!(status(raw.opendir(dir.path().display().to_string()).await), StatusCode::Failure);
    raw.close(handles[0].as_str()).await.unwrap();
    raw.open(file.as_str(), OpenFlags::READ, FileAttributes::default()).await.unwrap();
}

#[tokio::test]
async fn garbage_ends_the_session_without_a_panic() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let served = tokio::spawn(sftp::serve(server));
    // an unknown packet type, a truncated open, a packet too long, noise
    client.write_all(&[0, 0, 0, 5, 99, 1, 2, 3, 4]).await.unwrap();
    client.write_all(&[0, 0, 0, 6, 3, 0, 0, 0, 1, 0xff]).await.unwrap();
    client.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    client.write_all(&pattern(10_000)).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answers = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answers)).await;
    assert!(drained.is_ok(), "the server did not close its end");
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap();
    // it answered the first two with a status
    assert!(answers.len() >= 9 && answers[4] == 101);
}

/// The stream the binary uses, on a non-blocking socket, in a thread of
/// its own as in the binary.
#[tokio::test]
async fn the_blocking_stream_serves_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    theirs.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let stream = sftp::BlockingStream::new(theirs.try_clone().unwrap(), theirs);
        rt.block_on(sftp::serve(stream));
    });
    ours.set_nonblocking(true).unwrap();
    let sftp = SftpSession::new(tokio::net::UnixStream::from_std(ours).unwrap()).await.unwrap();
    let file = path(&dir, "f");
    let data = pattern(5 * 1024 * 1024 + 1);
    write_in_chunks(&sftp, &file, &data, 300_000).await;
    assert_eq!(std::fs::read(&file).unwrap(), data);
    assert_eq!(sftp.read(file.as_str()).await.unwrap(), data);
    sftp.close().await.unwrap();
    drop(sftp);
    tokio::task::spawn_blocking(move || server.join().unwrap()).await.unwrap();
}

/// The binary's mode on pipes, in a working directory of its own.
#[tokio::test]
async fn the_binary_serves_stdin_and_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pinacle-supervisor"))
        .arg(pinacle_supervisor::modes::SFTP_SERVER)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stream = tokio::io::join(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let sftp = SftpSession::new(stream).await.unwrap();
    let real = dir.path().canonicalize().unwrap().display().to_string();
    assert_eq!(sftp.canonicalize(".").await.unwrap(), real);
    let data = pattern(4 * 1024 * 1024 + 3);
    write_in_chunks(&sftp, "relative.bin", &data, 200_000).await;
    assert_eq!(std::fs::read(dir.path().join("relative.bin")).unwrap(), data);
    assert_eq!(sftp.read("relative.bin").await.unwrap(), data);
    let names: Vec<String> = sftp.read_dir(".").await.unwrap().map(|e| e.file_name()).collect();
    assert!(names.contains(&"relative.bin".to_owned()));
    assert_eq!(status(sftp.open("missing").await), StatusCode::NoSuchFile);
    sftp.close().await.unwrap();
    drop(sftp);
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "{exit:?}");
}
