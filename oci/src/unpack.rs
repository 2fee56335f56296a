//! Applying layer tarballs onto one flattened root filesystem, safely.
//!
//! Every path from a layer (entry names, hard-link targets, whiteouts) is
//! resolved *inside* the root: `..` in an entry name refuses the layer; leading
//! `/` is dropped; symlinks met on the way (placed by this or earlier layers) are
//! followed as if the root were `/` (an absolute target restarts at the root,
//! `..` stops at the root), so nothing is ever created, linked, removed or
//! re-timed outside the root. The last component of an entry is never followed:
//! whatever is there is replaced (a directory is kept when the entry is a
//! directory). Block and character devices and FIFOs are skipped; extended
//! attributes (file capabilities included) are not applied.
//!
//! Whiteouts: `.wh.NAME` removes NAME as left by the lower layers, and
//! `.wh..wh..opq` empties its directory of what the lower layers put there;
//! entries of the same layer are never hidden by its own whiteouts, whatever
//! their order in the tarball. Whiteout files themselves are never written.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use tar::EntryType;

/// Prefix of a whiteout entry's file name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The opaque-directory marker's file name.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The most symlinks followed while resolving one path (Linux's own limit).
const MAX_SYMLINK_FOLLOWS: usize = 40;

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// A local I/O error (disk full included).
    #[error("{path}: {source}")]
    Io {
        /// What was being written.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// An entry that would leave the root, or is otherwise refused.
    #[error("entry `{path}` {reason}")]
    Unsafe {
        /// The entry's name in the layer.
        path: String,
        /// Why.
        reason: String,
    },
    /// Not a readable (gzip, zstd or plain) tarball.
    #[error("{0}")]
    Malformed(String),
}

fn ioe(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a classified entry name means.
#[derive(Debug, PartialEq, Eq)]
pub enum EntryKind<'a> {
    /// The root itself (`./`, `/`): skipped.
    Root,
    /// An ordinary entry at `parent/name`.
    Plain {
        /// Components of the parent directory.
        parent: Vec<&'a OsStr>,
        /// The entry's own name.
        name: &'a OsStr,
    },
    /// `.wh.NAME`: remove `parent/NAME` from the lower layers.
    Whiteout {
        /// Components of the directory.
        parent: Vec<&'a OsStr>,
        /// The name to remove.
        name: &'a OsStr,
    },
    /// `.wh..wh..opq`: hide the lower layers' contents of `dir`.
    Opaque {
        /// Components of the directory.
        dir: Vec<&'a OsStr>,
    },
    /// Other `.wh..wh.*` (AUFS metadata): skipped.
    AufsMeta,
}

/// Splits an entry name into components (dropping empty ones, `.` and a leading
/// `/`) and classifies whiteouts. `..` anywhere is refused.
pub fn classify(path: &[u8]) -> Result<EntryKind<'_>, String> {
    let mut comps: Vec<&OsStr> = Vec::new();
    for c in path.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("contains `..`".to_string()),
            c => comps.push(OsStr::from_bytes(c)),
        }
    }
    let Some(name) = comps.pop() else {
        return Ok(EntryKind::Root);
    };
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER.as_bytes() {
        return Ok(EntryKind::Opaque { dir: comps });
    }
    if bytes.starts_with(b".wh..wh.") {
        return Ok(EntryKind::AufsMeta);
    }
    if let Some(target) = bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if target.is_empty() || target == b"." || target == b".." {
            return Err("is a whiteout of nothing".to_string());
        }
        return Ok(EntryKind::Whiteout {
            parent: comps,
            name: OsStr::from_bytes(target),
        });
    }
    Ok(EntryKind::Plain {
        parent: comps,
        name,
    })
}

/// Resolves `comps` as a directory path inside `root`, following symlinks within
/// the root. With `create`, missing directories are made (mode 0755) and
/// non-directories in the way are replaced by directories; without, a missing
/// or non-directory component gives `Ok(None)`. The result is a real directory
/// path under `root` whose every component is a real directory.
pub fn resolve_dir(
    root: &Path,
    comps: &[&OsStr],
    create: bool,
) -> Result<Option<PathBuf>, UnpackError> {
    let mut pending: Vec<OsString> = comps.iter().rev().map(|c| c.to_os_string()).collect();
    let mut cur = root.to_path_buf();
    let mut depth = 0usize;
    let mut follows = 0usize;
    while let Some(c) = pending.pop() {
        let b = c.as_bytes();
        if b.is_empty() || b == b"." {
            continue;
        }
        if b == b".." {
            if depth > 0 {
                cur.pop();
                depth -= 1;
            }
            continue;
        }
        let next = cur.join(&c);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                follows += 1;
                if follows > MAX_SYMLINK_FOLLOWS {
                    return Err(UnpackError::Unsafe {
                        path: next.to_string_lossy().into_owned(),
                        reason: "has too many levels of symbolic links".to_string(),
                    });
                }
                let target = fs::read_link(&next).map_err(ioe(&next))?;
                let tb = target.as_os_str().as_bytes();
                if tb.starts_with(b"/") {
                    cur = root.to_path_buf();
                    depth = 0;
                }
                for part in tb.split(|x| *x == b'/').rev() {
                    pending.push(OsStr::from_bytes(part).to_os_string());
                }
            }
            Ok(m) if m.is_dir() => {
                cur = next;
                depth += 1;
            }
            Ok(_) => {
                if !create {
                    return Ok(None);
                }
                fs::remove_file(&next).map_err(ioe(&next))?;
                make_dir(&next)?;
                cur = next;
                depth += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !create {
                    return Ok(None);
                }
                make_dir(&next)?;
                cur = next;
                depth += 1;
            }
            Err(e) => return Err(ioe(&next)(e)),
        }
    }
    Ok(Some(cur))
}

fn make_dir(p: &Path) -> Result<(), UnpackError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o755).create(p).map_err(ioe(p))
}

/// Removes whatever is at `p` without following a symlink there.
fn remove_any(p: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(ioe(p)),
        Ok(_) => fs::remove_file(p).map_err(ioe(p)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ioe(p)(e)),
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The largest tar metadata entry accepted (GNU long name/link, PAX header).
/// The tar crate reads these whole into memory; real ones are a few hundred bytes.
pub const MAX_TAR_METADATA: u64 = 1 << 20;

/// A pass-through reader that follows the tar stream's block structure (as the
/// tar crate does) and fails before the tar crate would buffer a metadata entry
/// larger than [`MAX_TAR_METADATA`]: without it, one layer could make the
/// unpacker allocate as much memory as the layer is large.
pub struct TarGuard<R> {
    inner: R,
    state: GuardState,
    /// A PAX `size` waiting for the next file entry.
    pax_size: Option<u64>,
}

enum GuardState {
    /// Collecting a 512-byte header.
    Header(Vec<u8>),
    /// Passing `n` bytes of entry data and padding.
    Skip(u64),
    /// Collecting a local PAX header's records (`remaining` more bytes), then `pad`.
    Pax {
        buf: Vec<u8>,
        remaining: u64,
        pad: u64,
    },
    /// Collecting a GNU sparse extension block; `data` bytes follow the last one.
    SparseExt { buf: Vec<u8>, data: u64 },
    /// After the end-of-archive block (the tar crate stops reading there).
    Done,
}

impl<R> TarGuard<R> {
    /// Guards `inner`, which must be at the start of a tar stream.
    pub fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            state: GuardState::Header(Vec::with_capacity(512)),
            pax_size: None,
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            match &mut self.state {
                GuardState::Done => return Ok(()),
                GuardState::Skip(n) => {
                    let k = (*n).min(data.len() as u64);
                    *n -= k;
                    data = &data[k as usize..];
                    if *n == 0 {
                        self.state = GuardState::Header(Vec::with_capacity(512));
                    }
                }
                GuardState::Header(buf) => {
                    let k = (512 - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    if buf.len() == 512 {
                        let header = std::mem::take(buf);
                        self.state = self.on_header(&header)?;
                    }
                }
                GuardState::Pax {
                    buf,
                    remaining,
                    pad,
                } => {
                    let k = (*remaining).min(data.len() as u64);
                    buf.extend_from_slice(&data[..k as usize]);
                    *remaining -= k;
                    data = &data[k as usize..];
                    if *remaining == 0 {
                        self.pax_size = pax_size(buf);
                        self.state = match *pad {
                            0 => GuardState::Header(Vec::with_capacity(512)),
                            p => GuardState::Skip(p),
                        };
                    }
                }
                GuardState::SparseExt { buf, data: size } => {
                    let k = (512 - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    if buf.len() == 512 {
                        let size = *size;
                        self.state = if buf[504] != 0 {
                            GuardState::SparseExt {
                                buf: Vec::with_capacity(512),
                                data: size,
                            }
                        } else {
                            skip_or_header(round_block(size)?)
                        };
                    }
                }
            }
        }
        Ok(())
    }

    fn on_header(&mut self, h: &[u8]) -> Result<GuardState, String> {
        if h.iter().all(|b| *b == 0) {
            return Ok(GuardState::Done);
        }
        let sum: u32 = h[..148]
            .iter()
            .chain(&h[156..])
            .map(|b| u32::from(*b))
            .sum::<u32>()
            + 8 * 32;
        if tar_number(&h[148..156]) != Some(u64::from(sum)) {
            return Err("archive header checksum mismatch".to_string());
        }
        let size = tar_number(&h[124..136]).ok_or("bad size field in a tar header")?;
        let kind = h[156];
        match kind {
            b'L' | b'K' | b'x' | b'g' => {
                if size > MAX_TAR_METADATA {
                    return Err(format!(
                        "a tar metadata entry (type {}) of {size} bytes (at most {MAX_TAR_METADATA} accepted)",
                        kind as char
                    ));
                }
                let padded = round_block(size)?;
                if kind == b'x' {
                    Ok(GuardState::Pax {
                        buf: Vec::with_capacity(size as usize),
                        remaining: size,
                        pad: padded - size,
                    })
                } else {
                    Ok(skip_or_header(padded))
                }
            }
            _ => {
                let size = self.pax_size.take().unwrap_or(size);
                if kind == b'S' && h[482] != 0 {
                    Ok(GuardState::SparseExt {
                        buf: Vec::with_capacity(512),
                        data: size,
                    })
                } else {
                    Ok(skip_or_header(round_block(size)?))
                }
            }
        }
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n])
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidData, m))?;
        Ok(n)
    }
}

fn skip_or_header(n: u64) -> GuardState {
    if n == 0 {
        GuardState::Header(Vec::with_capacity(512))
    } else {
        GuardState::Skip(n)
    }
}

fn round_block(n: u64) -> Result<u64, String> {
    n.checked_add(511)
        .map(|x| x & !511)
        .ok_or_else(|| "tar entry size overflows".to_string())
}

/// A tar numeric field: octal text, or base-256 when the top bit is set (as the tar crate reads them).
fn tar_number(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        let tail = f.get(f.len().checked_sub(8)?..)?;
        return Some(u64::from_be_bytes(tail.try_into().ok()?));
    }
    let text = std::str::from_utf8(f).ok()?;
    let text = text.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
    let text = text.split('\0').next()?;
    u64::from_str_radix(text.trim(), 8).ok()
}

/// The `size` record of PAX extension data, as the tar crate reads it (the
/// first one; none after a malformed record).
fn pax_size(data: &[u8]) -> Option<u64> {
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        let record = rest.get(..len)?;
        rest = &rest[len..];
        let kv = record.get(space + 1..)?.strip_suffix(b"\n")?;
        let eq = kv.iter().position(|b| *b == b'=')?;
        if &kv[..eq] == b"size" {
            return std::str::from_utf8(&kv[eq + 1..]).ok()?.parse().ok();
        }
    }
    None
}

/// A zstd stream of any number of frames (skippable ones, as zstd:chunked
/// writes, are skipped). Memory is bounded by ruzstd's window limit (128 MiB).
pub struct ZstdFrames<R: BufRead> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    /// Decodes `source`.
    pub fn new(source: R) -> ZstdFrames<R> {
        ZstdFrames {
            source,
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_frame {
                if self.decoder.can_collect() > 0 {
                    return self.decoder.read(buf);
                }
                if self.decoder.is_finished() {
                    self.in_frame = false;
                    continue;
                }
                self.decoder
                    .decode_blocks(
                        &mut self.source,
                        ruzstd::decoding::BlockDecodingStrategy::UptoBlocks(1),
                    )
                    .map_err(io::Error::other)?;
                continue;
            }
            if self.source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => self.in_frame = true,
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let want = u64::from(length);
                    let skipped = io::copy(&mut (&mut self.source).take(want), &mut io::sink())?;
                    if skipped != want {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "truncated skippable zstd frame",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// Applies layers, in order, onto one root directory.
pub struct Unpacker {
    root: PathBuf,
    preserve_owner: bool,
    /// Directory mtimes to restore at the end (keyed by path relative to root).
    dir_times: HashMap<PathBuf, FileTime>,
    /// Entries skipped (devices, FIFOs, unknown types).
    pub skipped: u64,
    /// Copy buffer for file contents (large writes: fewer system calls).
    buf: Vec<u8>,
}

impl Unpacker {
    /// An unpacker for `root` (which must exist). Ownership is preserved when
    /// running as root (as the host agent does); otherwise files belong to the caller.
    pub fn new(root: PathBuf) -> Unpacker {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        Unpacker {
            root,
            preserve_owner: euid == 0,
            dir_times: HashMap::new(),
            skipped: 0,
            buf: Vec::new(),
        }
    }

    /// Applies one layer blob (gzip- or zstd-compressed or plain tar, detected
    /// from its first bytes) read from `reader`.
    pub fn apply_layer<R: Read>(&mut self, reader: R) -> Result<(), UnpackError> {
        let mut buf = BufReader::with_capacity(1 << 20, reader);
        let head = buf
            .fill_buf()
            .map_err(|e| UnpackError::Malformed(format!("cannot read the layer: {e}")))?;
        let zstd_frame = head.starts_with(&ZSTD_MAGIC);
        let skippable =
            head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18];
        if zstd_frame || skippable {
            self.apply_tar(ZstdFrames::new(buf))
        } else if head.starts_with(&[0x1f, 0x8b]) {
            self.apply_tar(flate2::bufread::MultiGzDecoder::new(buf))
        } else {
            self.apply_tar(buf)
        }
    }

    fn apply_tar<R: Read>(&mut self, reader: R) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(TarGuard::new(reader));
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(self.preserve_owner);
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(true);
        // Paths created by this layer: its own whiteouts never hide them.
        let mut this_layer: HashSet<PathBuf> = HashSet::new();
        let entries = archive
            .entries()
            .map_err(|e| UnpackError::Malformed(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| tar_error(&self.root, e))?;
            let path_bytes = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&path_bytes).into_owned();
            let unsafe_entry = |reason: String| UnpackError::Unsafe {
                path: shown.clone(),
                reason,
            };
            let kind = classify(&path_bytes).map_err(&unsafe_entry)?;
            match kind {
                EntryKind::Root | EntryKind::AufsMeta => continue,
                EntryKind::Opaque { dir } => {
                    let Some(d) = resolve_dir(&self.root, &dir, true)? else {
                        continue;
                    };
                    let listing = fs::read_dir(&d).map_err(ioe(&d))?;
                    for child in listing {
                        let child = child.map_err(ioe(&d))?.path();
                        if !this_layer.contains(&child) {
                            remove_any(&child)?;
                        }
                    }
                }
                EntryKind::Whiteout { parent, name } => {
                    if let Some(d) = resolve_dir(&self.root, &parent, false)? {
                        let target = d.join(name);
                        if !this_layer.contains(&target) {
                            remove_any(&target)?;
                        }
                    }
                }
                EntryKind::Plain { parent, name } => {
                    let et = entry.header().entry_type();
                    match et {
                        EntryType::Char | EntryType::Block | EntryType::Fifo => {
                            self.skipped += 1;
                            continue;
                        }
                        EntryType::Regular
                        | EntryType::Continuous
                        | EntryType::Directory
                        | EntryType::Symlink
                        | EntryType::Link => {}
                        _ => {
                            self.skipped += 1;
                            continue;
                        }
                    }
                    let Some(d) = resolve_dir(&self.root, &parent, true)? else {
                        continue;
                    };
                    let dst = d.join(name);
                    match fs::symlink_metadata(&dst) {
                        Ok(m) if m.is_dir() && et == EntryType::Directory => {}
                        Ok(_) => remove_any(&dst)?,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(ioe(&dst)(e)),
                    }
                    if et == EntryType::Link {
                        let target =
                            entry
                                .link_name_bytes()
                                .map(|b| b.into_owned())
                                .ok_or_else(|| {
                                    unsafe_entry("is a hard link without a target".into())
                                })?;
                        let src = match classify(&target) {
                            Ok(EntryKind::Plain { parent, name }) => {
                                resolve_dir(&self.root, &parent, false)?.map(|p| p.join(name))
                            }
                            Ok(_) => None,
                            Err(reason) => {
                                return Err(unsafe_entry(format!("links to a path that {reason}")))
                            }
                        };
                        let src = src
                            .filter(|s| fs::symlink_metadata(s).is_ok_and(|m| !m.is_dir()))
                            .ok_or_else(|| {
                                unsafe_entry(format!(
                                    "is a hard link to `{}`, which is not a file in the image",
                                    String::from_utf8_lossy(&target)
                                ))
                            })?;
                        fs::hard_link(&src, &dst).map_err(ioe(&dst))?;
                    } else if matches!(et, EntryType::Regular | EntryType::Continuous) {
                        self.write_file(&mut entry, &dst)?;
                    } else {
                        entry.unpack(&dst).map_err(|e| tar_error(&dst, e))?;
                        if et == EntryType::Directory {
                            if let (Ok(rel), Ok(mtime)) =
                                (dst.strip_prefix(&self.root), entry.header().mtime())
                            {
                                self.dir_times.insert(
                                    rel.to_path_buf(),
                                    FileTime::from_unix_time(mtime.min(i64::MAX as u64) as i64, 0),
                                );
                            }
                        }
                    }
                    this_layer.insert(dst);
                }
            }
        }
        Ok(())
    }

    /// Writes a regular file's contents at `dst` (which does not exist), then
    /// its owner, mode (after the owner: chown clears setuid bits) and mtime, as
    /// the tar crate does, but copying in 1 MiB pieces.
    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dst: &Path,
    ) -> Result<(), UnpackError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let header = entry.header();
        let field = |what: &str, e: io::Error| {
            UnpackError::Malformed(format!("bad {what} for `{}`: {e}", dst.display()))
        };
        let mode = header.mode().map_err(|e| field("mode", e))? & 0o7777;
        let uid = header.uid().map_err(|e| field("uid", e))?;
        let gid = header.gid().map_err(|e| field("gid", e))?;
        let mtime = header.mtime().map_err(|e| field("mtime", e))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dst)
            .map_err(ioe(dst))?;
        if self.buf.is_empty() {
            self.buf = vec![0; 1 << 20];
        }
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(tar_error(dst, e)),
            };
            f.write_all(&self.buf[..n]).map_err(ioe(dst))?;
        }
        if self.preserve_owner {
            let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
                return Err(UnpackError::Malformed(format!(
                    "owner {uid}:{gid} of `{}` is out of range",
                    dst.display()
                )));
            };
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(ioe(dst))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(ioe(dst))?;
        // As the tar crate: mtime 0 becomes 1 (some tools mistake 0 for "unset").
        let t = FileTime::from_unix_time(mtime.clamp(1, i64::MAX as u64) as i64, 0);
        filetime::set_file_handle_times(&f, Some(t), Some(t)).map_err(ioe(dst))?;
        Ok(())
    }

    /// Restores directory mtimes (writing into a directory changes its mtime).
    /// Each path is resolved again inside the root, so a directory a later layer
    /// replaced with a symlink is never followed out of the root.
    pub fn finish(self) -> Result<(), UnpackError> {
        for (rel, mtime) in &self.dir_times {
            let comps: Vec<&OsStr> = rel.iter().collect();
            if let Some(p) = resolve_dir(&self.root, &comps, false)? {
                if p.strip_prefix(&self.root).ok() == Some(rel.as_path()) {
                    filetime::set_symlink_file_times(&p, *mtime, *mtime).map_err(ioe(&p))?;
                }
            }
        }
        Ok(())
    }
}

/// Disk space taken by the tree at `root` (allocated blocks of everything in it,
/// hard-linked files once), without following symlinks.
pub fn disk_usage(root: &Path) -> Result<u64, UnpackError> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(ioe(&dir))? {
            let entry = entry.map_err(ioe(&dir))?;
            let path = entry.path();
            let m = fs::symlink_metadata(&path).map_err(ioe(&path))?;
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total = total.saturating_add(m.blocks().saturating_mul(512));
            if m.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(total)
}

/// The tar crate wraps I/O errors in its own type but keeps the kind: disk-full
/// errors stay recognisable; anything else that is not an OS error is a
/// malformed archive.
fn tar_error(path: &Path, e: io::Error) -> UnpackError {
    if crate::error::is_disk_full(&e) || e.raw_os_error().is_some() {
        return UnpackError::Io {
            path: path.to_path_buf(),
            source: e,
        };
    }
    match e.kind() {
        io::ErrorKind::PermissionDenied
        | io::ErrorKind::NotFound
        | io::ErrorKind::AlreadyExists => UnpackError::Io {
            path: path.to_path_buf(),
            source: e,
        },
        _ => UnpackError::Malformed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain<'a>(parent: &[&'a str], name: &'a str) -> EntryKind<'a> {
        EntryKind::Plain {
            parent: parent.iter().map(|s| OsStr::new(*s)).collect(),
            name: OsStr::new(name),
        }
    }

    #[test]
    fn classifies_names_and_whiteouts() {
        assert_eq!(classify(b"./"), Ok(EntryKind::Root));
        assert_eq!(classify(b"/"), Ok(EntryKind::Root));
        assert_eq!(classify(b"./etc/passwd"), Ok(plain(&["etc"], "passwd")));
        assert_eq!(classify(b"/etc//x/"), Ok(plain(&["etc"], "x")));
        assert_eq!(
            classify(b"a/b/.wh.c"),
            Ok(EntryKind::Whiteout {
                parent: vec![OsStr::new("a"), OsStr::new("b")],
                name: OsStr::new("c")
            })
        );
        assert_eq!(
            classify(b"a/.wh..wh..opq"),
            Ok(EntryKind::Opaque {
                dir: vec![OsStr::new("a")]
            })
        );
        assert_eq!(
            classify(b".wh..wh.plnk/1"),
            Ok(plain(&[".wh..wh.plnk"], "1"))
        );
        assert_eq!(classify(b".wh..wh.aufs"), Ok(EntryKind::AufsMeta));
        assert!(classify(b"../escape").is_err());
        assert!(classify(b"a/../../b").is_err());
        assert!(classify(b"a/.wh...").is_err());
        assert!(classify(b"a/.wh.").is_err());
    }

    #[test]
    fn resolve_dir_follows_symlinks_inside_the_root_only() -> Result<(), Box<dyn std::error::Error>>
    {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("usr/bin"))?;
        std::os::unix::fs::symlink("usr/bin", root.join("bin"))?;
        std::os::unix::fs::symlink("/", root.join("up"))?;
        std::os::unix::fs::symlink("../../../../..", root.join("usr/dots"))?;
        std::os::unix::fs::symlink("loop", root.join("loop"))?;
        let r = |p: &[&str], create| {
            let c: Vec<&OsStr> = p.iter().map(OsStr::new).collect();
            resolve_dir(&root, &c, create)
        };
        assert_eq!(r(&["bin"], false)?, Some(root.join("usr/bin")));
        assert_eq!(r(&["up", "usr"], false)?, Some(root.join("usr")));
        assert_eq!(r(&["usr", "dots", "tmp"], true)?, Some(root.join("tmp")));
        assert!(root.join("tmp").is_dir());
        assert!(!tmp.path().join("tmp").exists());
        assert_eq!(r(&["missing"], false)?, None);
        assert!(matches!(
            r(&["loop"], true),
            Err(UnpackError::Unsafe { .. })
        ));
        fs::write(root.join("file"), b"x")?;
        assert_eq!(r(&["file"], false)?, None);
        assert_eq!(r(&["file", "sub"], true)?, Some(root.join("file/sub")));
        Ok(())
    }

    fn hdr() -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h
    }

    fn layer(
        build: impl FnOnce(&mut tar::Builder<Vec<u8>>) -> io::Result<()>,
    ) -> io::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b)?;
        b.into_inner()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> io::Result<()> {
        let mut h = hdr();
        h.set_entry_type(EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_000_000);
        b.append_data(&mut h, path, data)
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) -> io::Result<()> {
        let mut h = hdr();
        h.set_entry_type(EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_mtime(1_000_000);
        b.append_data(&mut h, path, io::empty())
    }

    #[test]
    fn whiteouts_hide_lower_layers_but_not_their_own() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("root");
        fs::create_dir(&root)?;
        let mut u = Unpacker::new(root.clone());
        u.apply_layer(io::Cursor::new(layer(|b| {
            dir(b, "a")?;
            file(b, "a/gone", b"1")?;
            file(b, "a/kept", b"1")?;
            dir(b, "o")?;
            file(b, "o/old", b"1")?;
            dir(b, "o/olddir")?;
            file(b, "o/olddir/x", b"1")
        })?))?;
        u.apply_layer(io::Cursor::new(layer(|b| {
            file(b, "a/.wh.gone", b"")?;
            // Same-layer file first, then the opaque marker: the file survives.
            file(b, "o/new", b"2")?;
            file(b, "o/.wh..wh..opq", b"")?;
            file(b, "o/.wh.new", b"")?;
            file(b, "missing/.wh.x", b"")
        })?))?;
        u.finish()?;
        assert!(!root.join("a/gone").exists());
        assert!(root.join("a/kept").exists());
        assert!(!root.join("a/.wh.gone").exists());
        assert!(!root.join("o/old").exists());
        assert!(!root.join("o/olddir").exists());
        assert_eq!(fs::read(root.join("o/new"))?, b"2");
        assert!(!root.join("o/.wh..wh..opq").exists());
        assert!(!root.join("missing").exists());
        Ok(())
    }

    #[test]
    fn hostile_entries_never_leave_the_root() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir(&root)?;
        fs::create_dir(&outside)?;
        fs::write(outside.join("secret"), b"s")?;
        let mut u = Unpacker::new(root.clone());
        // A symlink to the outside directory, then writes through it.
        let data = layer(|b| {
            let mut h = hdr();
            h.set_entry_type(EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, "evil", &outside)?;
            file(b, "evil/planted", b"x")?;
            file(b, "evil/.wh.secret", b"")?;
            let mut l = hdr();
            l.set_entry_type(EntryType::Link);
            l.set_size(0);
            b.append_link(&mut l, "hard", outside.join("secret"))
        })?;
        let r = u.apply_layer(io::Cursor::new(data));
        // The hard link's target resolves inside the root, where it does not exist.
        assert!(matches!(r, Err(UnpackError::Unsafe { .. })), "{r:?}");
        assert!(!outside.join("planted").exists());
        assert!(outside.join("secret").exists());
        let inner = root.join(outside.strip_prefix("/")?);
        assert_eq!(fs::read(inner.join("planted"))?, b"x");

        // `..` refuses the layer.
        let mut raw = hdr();
        raw.set_entry_type(EntryType::Regular);
        raw.set_size(1);
        raw.set_mode(0o644);
        raw.as_gnu_mut().ok_or("gnu")?.name[..9].copy_from_slice(b"../escape");
        raw.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&raw, &b"x"[..])?;
        let r = Unpacker::new(root.clone()).apply_layer(io::Cursor::new(b.into_inner()?));
        assert!(matches!(r, Err(UnpackError::Unsafe { .. })), "{r:?}");
        assert!(!tmp.path().join("escape").exists());
        Ok(())
    }

    #[test]
    fn gzip_layers_and_modes_and_devices() -> Result<(), Box<dyn std::error::Error>> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("root");
        fs::create_dir(&root)?;
        let data = layer(|b| {
            let mut h = hdr();
            h.set_entry_type(EntryType::Regular);
            h.set_size(2);
            h.set_mode(0o4755);
            h.set_mtime(1_234_567);
            b.append_data(&mut h, "bin/suid", &b"#!"[..])?;
            let mut f = hdr();
            f.set_entry_type(EntryType::Fifo);
            f.set_size(0);
            b.append_data(&mut f, "fifo", io::empty())
        })?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data)?;
        let mut u = Unpacker::new(root.clone());
        u.apply_layer(io::Cursor::new(gz.finish()?))?;
        assert_eq!(u.skipped, 1);
        u.finish()?;
        let m = fs::metadata(root.join("bin/suid"))?;
        assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
        assert_eq!(
            FileTime::from_last_modification_time(&m).unix_seconds(),
            1_234_567
        );
        assert!(!root.join("fifo").exists());
        let bad_zstd = [0x28u8, 0xb5, 0x2f, 0xfd, 0, 0];
        assert!(matches!(
            Unpacker::new(root.clone()).apply_layer(&bad_zstd[..]),
            Err(UnpackError::Malformed(_))
        ));
        Ok(())
    }

    #[test]
    fn tar_guard_passes_long_names_and_pax_and_refuses_huge_metadata(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("root");
        fs::create_dir(&root)?;
        let long_dir = "d".repeat(150);
        let long_file = format!("{long_dir}/{}", "f".repeat(120));
        let data = layer(|b| {
            // GNU long names (the builder writes `L` entries for these).
            dir(b, &long_dir)?;
            file(b, &long_file, &[5u8; 1000])?;
            // A PAX header (with a `size` record matching the entry) first.
            b.append_pax_extensions([("size", &b"512"[..]), ("comment", &b"hi"[..])])?;
            file(b, "exact", &[1u8; 512])?;
            file(b, "after", b"after")
        })?;
        let mut u = Unpacker::new(root.clone());
        u.apply_layer(io::Cursor::new(data))?;
        assert_eq!(fs::read(root.join(&long_file))?, vec![5u8; 1000]);
        assert_eq!(fs::read(root.join("exact"))?, vec![1u8; 512]);
        assert_eq!(fs::read(root.join("after"))?, b"after");

        // A 2 MiB PAX header is refused before it is buffered.
        let huge = vec![b'a'; 2 << 20];
        let data = layer(|b| {
            let mut h = hdr();
            h.set_entry_type(EntryType::XHeader);
            h.set_size(huge.len() as u64);
            b.append_data(&mut h, "PaxHeader", &huge[..])?;
            file(b, "x", b"x")
        })?;
        let r = Unpacker::new(root.clone()).apply_layer(io::Cursor::new(data));
        assert!(
            matches!(&r, Err(UnpackError::Malformed(m)) if m.contains("metadata")),
            "{r:?}"
        );
        assert!(!root.join("x").exists());
        Ok(())
    }

    #[test]
    fn tar_numbers_and_pax_records() {
        assert_eq!(tar_number(b"00000001750\0"), Some(1000));
        assert_eq!(tar_number(b"     1750 \0"), Some(1000));
        assert_eq!(
            tar_number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]),
            Some(4096)
        );
        assert_eq!(tar_number(b"12x"), None);
        assert_eq!(pax_size(b"12 size=900\n"), Some(900));
        assert_eq!(pax_size(b"11 path=ab\n12 size=900\n"), Some(900));
        assert_eq!(pax_size(b"11 path=ab\n"), None);
        assert_eq!(pax_size(b"99 size=1\n"), None);
    }

    #[test]
    fn zstd_layers_of_several_frames_with_skippable_ones() -> Result<(), Box<dyn std::error::Error>>
    {
        use ruzstd::encoding::{compress_to_vec, CompressionLevel};
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().join("root");
        fs::create_dir(&root)?;
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let tar = layer(|b| {
            file(b, "a", b"first")?;
            file(b, "big", &big)
        })?;
        // Split the tarball across two frames with a skippable frame between.
        let (one, two) = tar.split_at(tar.len() / 3);
        let mut blob = compress_to_vec(one, CompressionLevel::Fastest);
        blob.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]);
        blob.extend(compress_to_vec(two, CompressionLevel::Fastest));
        let mut u = Unpacker::new(root.clone());
        u.apply_layer(io::Cursor::new(blob))?;
        assert_eq!(fs::read(root.join("a"))?, b"first");
        assert_eq!(fs::read(root.join("big"))?, big);
        Ok(())
    }
}
