//! The root filesystem of a pod that runs in a user namespace.
//!
//! Pod uid 0 is an unprivileged host uid (`host_id`), yet the files on the
//! pod's disk and in its image stay owned by host uid 0, like gVisor pods'
//! (so a pod's data does not depend on its runtime, and nothing is ever
//! chowned). This works with id-mapped mounts (Linux 5.12+ for ext4, 5.19+
//! for overlayfs over id-mapped layers):
//!
//! 1. a child process makes a user namespace with the map `0 host_id count`;
//! 2. each source directory (the image, the pod's disk, ...) is cloned as a
//!    detached mount, id-mapped through that namespace (on-disk uid 0 shows
//!    as `host_id`) and attached under `layers/`;
//! 3. the child, root of that namespace in a mount namespace of its own,
//!    creates the overlay (the id-mapped image below, the id-mapped disk's
//!    `upper/` above) and hands the detached mount back over a pidfd;
//! 4. this process attaches it at the target.
//!
//! The overlay belongs to the pod's namespace, so copy-ups and whiteouts
//! are made with the pod's own credentials through the id-mapped layers and
//! land on disk as uid 0. The host reads and writes the disk directly, as
//! for every other pod.
//!
//! This process is single-threaded (the runtime's command line), so
//! `fork` is safe here; the child only makes raw system calls.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// What to mount: `sources` id-mapped at `layers/{name}`, then an overlay
/// of `layers/{lower}` under `layers/{upper}` (work dir `layers/{work}`) at
/// `target`.
pub struct RootfsPlan {
    pub sources: Vec<(String, PathBuf)>,
    pub layers: PathBuf,
    pub lower: String,
    pub upper: String,
    pub work: String,
    pub target: PathBuf,
    pub host_id: u32,
    pub count: u32,
}

fn cstr(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).with_context(|| format!("path with a NUL byte: {}", path.display()))
}

fn check(ret: libc::c_long, what: &str) -> Result<libc::c_long> {
    if ret < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| what.to_owned());
    }
    Ok(ret)
}

/// A child process, killed and reaped when dropped.
struct Child {
    pid: libc::pid_t,
    /// The child waits on the other end: closing it (on drop) lets it exit.
    _go: OwnedFd,
    /// What the child reports.
    result: OwnedFd,
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: our own child; reaped once.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into(), "pipe")?;
    // SAFETY: just created, owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks; the child runs `body(go, result)`, then exits.
///
/// # Safety
/// The process must be single-threaded, and `body` may only make raw
/// system calls on memory prepared before the fork.
unsafe fn fork_child(body: impl FnOnce(RawFd, RawFd)) -> Result<Child> {
    let (go_r, go_w) = pipe()?;
    let (result_r, result_w) = pipe()?;
    let pid = libc::fork();
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        body(go_r.as_raw_fd(), result_w.as_raw_fd());
        libc::_exit(1);
    }
    drop((go_r, result_w));
    Ok(Child { pid, _go: go_w, result: result_r })
}

/// A child in a new user namespace (whose maps the parent writes), which
/// waits until killed: the namespace the layers are id-mapped through.
fn namespace_holder() -> Result<Child> {
    // SAFETY: single-threaded; the child makes raw system calls only.
    let child = unsafe {
        fork_child(|go, result| {
            let ok: &[u8] = if libc::unshare(libc::CLONE_NEWUSER) == 0 { b"u" } else { b"e" };
            libc::write(result, ok.as_ptr().cast(), 1);
            let mut byte = [0u8; 1];
            libc::read(go, byte.as_mut_ptr().cast(), 1);
            libc::_exit(0)
        })?
    };
    let mut byte = [0u8; 1];
    // SAFETY: reading one byte into a local buffer.
    let n = unsafe { libc::read(child.result.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
    if n != 1 || byte[0] != b'u' {
        bail!("could not make a user namespace (kernel without user namespaces?)");
    }
    Ok(child)
}

/// The overlay's options, prepared before `fork` (the child allocates
/// nothing). The layers are paths relative to `layers`, a descriptor the
/// child inherits and changes into: the pod's root may not search the
/// agent's private directories above it. (Descriptors of the layers
/// themselves would not do: they name mounts of this mount namespace, and
/// overlayfs takes its layers from the mounting task's own.)
struct OverlayArgs {
    layers: RawFd,
    keys: [CString; 3],
    values: [CString; 3],
}

/// A child that joins `userns` as its root, makes a mount namespace of its
/// own, creates the overlay and reports the new mount's descriptor number
/// (or 0, the failed step and errno), then waits until killed.
fn overlay_maker(userns: RawFd, overlay: &OverlayArgs) -> Result<Child> {
    // SAFETY: single-threaded; the child makes raw system calls only, on
    // memory prepared before the fork.
    unsafe {
        fork_child(|go, result| {
            // failure: 0, the step, errno (little-endian i32)
            let report = |step: u8| {
                let e = *libc::__errno_location();
                let b = e.to_le_bytes();
                let buf = [0, step, b[0], b[1], b[2], b[3]];
                libc::write(result, buf.as_ptr().cast(), buf.len());
                libc::_exit(1)
            };
            // unshare moves the working directory onto the new namespace's
            // copy of its mount
            if libc::setns(userns, libc::CLONE_NEWUSER) != 0
                || libc::setresgid(0, 0, 0) != 0
                || libc::setresuid(0, 0, 0) != 0
                || libc::fchdir(overlay.layers) != 0
                || libc::unshare(libc::CLONE_NEWNS) != 0
            {
                report(1);
            }
            let fs = libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) as RawFd;
            if fs < 0 {
                report(2);
            }
            for (i, (k, v)) in overlay.keys.iter().zip(&overlay.values).enumerate() {
                if libc::syscall(libc::SYS_fsconfig, fs, FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0) != 0 {
                    report(3 + i as u8);
                }
            }
            if libc::syscall(libc::SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, std::ptr::null::<u8>(), std::ptr::null::<u8>(), 0) != 0 {
                report(6);
            }
            let mnt = libc::syscall(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) as RawFd;
            if !(1..=255).contains(&mnt) {
                report(7);
            }
            let buf = [mnt as u8];
            libc::write(result, buf.as_ptr().cast(), 1);
            // keep the descriptor open until the parent has taken it
            let mut byte = [0u8; 1];
            libc::read(go, byte.as_mut_ptr().cast(), 1);
            libc::_exit(0)
        })
    }
}

/// Clones `source` as a detached mount id-mapped through `userns`, and
/// attaches it at `target`.
/// `read_only`: the clone is read-only too (the image below an overlay:
/// nothing may ever write or delete through it).
fn idmapped_bind(source: &Path, target: &Path, userns: &OwnedFd, read_only: bool) -> Result<()> {
    let src = cstr(source)?;
    // SAFETY: valid C string; flags per open_tree(2).
    let tree = check(
        unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                src.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
            )
        },
        &format!("cloning the mount of {}", source.display()),
    )?;
    // SAFETY: a new descriptor, owned here.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
    let attr_set = if read_only { MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY } else { MOUNT_ATTR_IDMAP };
    let attr = MountAttr { attr_set, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    // SAFETY: attr is a valid mount_attr of the size passed.
    check(
        unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        },
        &format!("id-mapping {} (the file system must support id-mapped mounts)", source.display()),
    )?;
    move_mount(&tree, target)
}

fn move_mount(tree: &OwnedFd, target: &Path) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    let dst = cstr(target)?;
    // SAFETY: a detached mount descriptor and a valid C string.
    check(
        unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        },
        &format!("attaching at {}", target.display()),
    )?;
    Ok(())
}

/// Mounts the plan. On error, whatever was attached is left for the
/// caller's cleanup (it unmounts everything under `layers` and `target`).
pub fn mount_rootfs(plan: &RootfsPlan) -> Result<()> {
    for name in [&plan.lower, &plan.upper, &plan.work] {
        if name.contains([',', ':']) || name.contains("..") || name.starts_with('/') {
            bail!("overlay layer names are relative and may not contain ',', ':' or '..': {name}");
        }
    }
    let path_of = |name: &str| plan.layers.join(name);
    let holder = namespace_holder()?;
    let map = format!("0 {} {}", plan.host_id, plan.count);
    std::fs::write(format!("/proc/{}/uid_map", holder.pid), &map).context("writing the uid map")?;
    std::fs::write(format!("/proc/{}/setgroups", holder.pid), "deny").context("denying setgroups")?;
    std::fs::write(format!("/proc/{}/gid_map", holder.pid), &map).context("writing the gid map")?;
    let userns: OwnedFd = std::fs::File::open(format!("/proc/{}/ns/user", holder.pid))
        .context("opening the user namespace")?
        .into();
    for (name, source) in &plan.sources {
        idmapped_bind(source, &path_of(name), &userns, *name == plan.lower)?;
    }
    // the layers' directory as a descriptor the overlay maker inherits (no O_CLOEXEC)
    let layers_path = cstr(&plan.layers)?;
    // SAFETY: a valid C string.
    let layers = check(
        unsafe { libc::open(layers_path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW) }.into(),
        "opening the layers' directory",
    )?;
    // SAFETY: new descriptor, owned here.
    let layers = unsafe { OwnedFd::from_raw_fd(layers as RawFd) };
    let overlay = OverlayArgs {
        layers: layers.as_raw_fd(),
        keys: [CString::new("lowerdir")?, CString::new("upperdir")?, CString::new("workdir")?],
        values: [CString::new(plan.lower.as_str())?, CString::new(plan.upper.as_str())?, CString::new(plan.work.as_str())?],
    };
    let maker = overlay_maker(userns.as_raw_fd(), &overlay)?;
    drop(layers);
    let mut byte = [0u8; 6];
    // SAFETY: reading into a local buffer of that size.
    let n = unsafe { libc::read(maker.result.as_raw_fd(), byte.as_mut_ptr().cast(), byte.len()) };
    if n < 1 || byte[0] == 0 {
        let step = match byte[1] {
            1 => "entering the namespace",
            2 => "opening overlayfs",
            3 => "setting lowerdir",
            4 => "setting upperdir",
            5 => "setting workdir",
            6 => "creating the overlay",
            7 => "making the mount",
            _ => "starting",
        };
        let errno = std::io::Error::from_raw_os_error(i32::from_le_bytes([byte[2], byte[3], byte[4], byte[5]]));
        bail!("could not mount the overlay in the pod's user namespace ({step}: {errno})");
    }
    // SAFETY: pidfd_open of our own live child.
    let pidfd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, maker.pid, 0) }, "pidfd_open")?;
    // SAFETY: new descriptor, owned here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: takes a copy of the child's descriptor.
    let mnt = check(
        unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), libc::c_int::from(byte[0]), 0) },
        "taking the overlay from the namespace",
    )?;
    // SAFETY: new descriptor, owned here.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as RawFd) };
    drop((maker, holder));
    move_mount(&mnt, &plan.target)
}
