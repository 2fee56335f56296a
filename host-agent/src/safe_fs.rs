//! Reading and writing inside trees a pod controls, as root on the host,
//! without ever leaving them.
//!
//! A pod's root filesystem, its `/workspace` and its home are the pod's:
//! any directory in them may be a symbolic link by the time the agent
//! looks, pointing anywhere on the host (`/etc -> /root`). Resolving such
//! a path by name as host root would follow the link out of the tree.
//!
//! [`Tree`] holds a descriptor of the tree's top (a path the agent owns)
//! and resolves everything below it with `openat2(RESOLVE_IN_ROOT)`: links
//! are followed as the pod itself would see them, with the tree's top as
//! `/`, so `..` and absolute links stay inside. The last component of a
//! file written is never followed: an entry there is unlinked and the file
//! made anew (`O_CREAT | O_EXCL | O_NOFOLLOW`). Nothing crosses a mount
//! point (`RESOLVE_NO_XDEV`) or a magic link (`/proc/self/fd/...`).
//!
//! New files and directories take the owner of the directory they are made
//! in, so a pod whose files belong to another uid (a user namespace) can
//! still change them.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// A directory tree opened once; paths below it never resolve outside it.
#[derive(Debug)]
pub struct Tree {
    top: OwnedFd,
    path: PathBuf,
}

fn resolve_flags() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV
}

/// `path` as plain components, refusing anything but names (no `..`, no
/// root): callers name paths relative to the tree.
fn components(rel: &Path) -> std::io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is not a plain relative path", rel.display()))),
        })
        .collect()
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl Tree {
    /// Opens the tree whose top is `path` (a directory the agent owns; a
    /// link there is refused).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let fd = nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY, Mode::empty())?;
        Ok(Self { top: owned(fd), path: path.to_owned() })
    }

    /// The tree's top, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_in(&self, rel: &Path, flags: OFlag, mode: u32) -> std::io::Result<OwnedFd> {
        let rel: PathBuf = components(rel)?.iter().collect();
        let rel = if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel };
        let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).mode(Mode::from_bits_truncate(mode)).resolve(resolve_flags());
        loop {
            match openat2(self.top.as_raw_fd(), &rel, how) {
                Ok(fd) => return Ok(owned(fd)),
                // the kernel asks for a retry when a rename raced the lookup
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The directory `rel` (inside the tree), made with its parents when
    /// missing (mode 0755, owned like their parent).
    pub fn create_dir_all(&self, rel: &Path) -> std::io::Result<OwnedFd> {
        let parts = components(rel)?;
        let mut dir = self.open_in(Path::new("."), OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
        for i in 0..parts.len() {
            let prefix: PathBuf = parts[..=i].iter().collect();
            let opened = self.open_in(&prefix, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0);
            dir = match opened {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {
                    match nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), parts[i], Mode::from_bits_truncate(0o755)) {
                        Ok(()) => inherit_owner(&dir, parts[i])?,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.open_in(&prefix, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(dir)
    }

    /// Writes `contents` to a new file `rel` (mode `mode`), replacing
    /// whatever entry was there (a link is removed, never followed); its
    /// parent directories are made as needed.
    pub fn write_file(&self, rel: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
        let parts = components(rel)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"));
        };
        let parent: PathBuf = parents.iter().collect();
        let dir = self.create_dir_all(&parent)?;
        match nix::unistd::unlinkat(Some(dir.as_raw_fd()), *name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let fd = nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            *name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )?;
        let mut file = File::from(owned(fd));
        inherit_owner(&dir, name)?;
        file.write_all(contents)?;
        // the umask may have narrowed the mode
        nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))?;
        Ok(())
    }

    /// A regular file's contents, at most `max` bytes; `None` when `rel` is
    /// missing or not a regular file (a FIFO is never opened for reading
    /// in a way that blocks). Links resolve inside the tree.
    pub fn read_file(&self, rel: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
        let fd = match self.open_in(rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Ok(None);
        }
        let mut out = Vec::new();
        file.take(max).read_to_end(&mut out)?;
        Ok(Some(out))
    }

    /// Removes the entry `rel` if it is there (a file or a link; not a
    /// directory).
    pub fn remove_file(&self, rel: &Path) -> std::io::Result<()> {
        let parts = components(rel)?;
        let Some((name, parents)) = parts.split_last() else { return Ok(()) };
        let parent: PathBuf = parents.iter().collect();
        let dir = match self.open_in(&parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        match nix::unistd::unlinkat(Some(dir.as_raw_fd()), *name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Gives `name` in `dir` the owner of `dir` (never following a link).
fn inherit_owner(dir: &OwnedFd, name: &OsStr) -> std::io::Result<()> {
    let meta = File::from(dir.try_clone()?).metadata()?;
    if meta.uid() == nix::unistd::geteuid().as_raw() && meta.gid() == nix::unistd::getegid().as_raw() {
        return Ok(());
    }
    nix::unistd::fchownat(
        Some(dir.as_raw_fd()),
        name,
        Some(nix::unistd::Uid::from_raw(meta.uid())),
        Some(nix::unistd::Gid::from_raw(meta.gid())),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_resolve_inside_the_tree_and_never_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // the pod made /etc a link to a host directory, by absolute path and by ..
        symlink(&outside, root.join("etc")).unwrap();
        symlink("../../outside", root.join("up")).unwrap();
        // what the absolute link names, seen from inside the tree
        let inside = root.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        let tree = Tree::open(&root).unwrap();
        tree.write_file(Path::new("etc/resolv.conf"), b"nameserver 192.0.2.1\n", 0o644).unwrap();
        // `..` stops at the tree's top: up -> {root}/outside, which is missing
        assert!(tree.write_file(Path::new("up/x"), b"x", 0o644).is_err());
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing was written outside the tree");
        // the absolute link is taken as the pod sees it: inside the tree
        assert_eq!(std::fs::read_to_string(inside.join("resolv.conf")).unwrap(), "nameserver 192.0.2.1\n");
        // a link as the last component is replaced, its target untouched
        std::fs::write(outside.join("target"), "host file").unwrap();
        symlink(outside.join("target"), root.join("real/file")).unwrap();
        tree.write_file(Path::new("real/file"), b"pod file", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(outside.join("target")).unwrap(), "host file");
        assert!(std::fs::symlink_metadata(root.join("real/file")).unwrap().is_file());
        // reading through a link that leaves finds nothing outside
        assert_eq!(tree.read_file(Path::new("up/target"), 100).unwrap(), None);
        assert_eq!(tree.read_file(Path::new("real/file"), 3).unwrap().unwrap(), b"pod");
        // paths naming .. or / are refused outright
        assert!(tree.write_file(Path::new("../x"), b"", 0o644).is_err());
        assert!(tree.write_file(Path::new("/x"), b"", 0o644).is_err());
        // a FIFO is not a file to read
        nix::unistd::mkfifo(&root.join("real/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        assert_eq!(tree.read_file(Path::new("real/fifo"), 10).unwrap(), None);
        tree.remove_file(Path::new("real/fifo")).unwrap();
        assert!(!root.join("real/fifo").exists());
    }

    #[test]
    fn new_entries_take_their_directorys_owner() {
        if !nix::unistd::geteuid().is_root() {
            panic!("ownership tests run as root (CI does)");
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ws");
        std::fs::create_dir_all(&root).unwrap();
        nix::unistd::chown(&root, Some(nix::unistd::Uid::from_raw(100_000)), Some(nix::unistd::Gid::from_raw(100_000))).unwrap();
        let tree = Tree::open(&root).unwrap();
        tree.write_file(Path::new("src/main.js"), b"1", 0o644).unwrap();
        for p in ["src", "src/main.js"] {
            let m = std::fs::metadata(root.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (100_000, 100_000), "{p}");
        }
        assert_eq!(std::fs::metadata(root.join("src/main.js")).unwrap().mode() & 0o777, 0o644);
    }
}
