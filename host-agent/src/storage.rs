//! A pod's persistent storage: one ext4 filesystem image per pod, as large
//! as its tier's disk, loop-mounted on the host. It holds everything the pod
//! writes, so writes beyond the tier's size fail with ENOSPC inside the pod
//! and nowhere else:
//!
//! ```text
//! {volume}/disk.img          sparse ext4 image (tier disk size)
//! {volume}/disk/             its mount point
//!   workspace/               /workspace
//!   home/                    /root, the pod user's home
//!   upper/, work/            the root filesystem's writable overlay layer
//!   image                    the image the layer was made on
//!
//!   run/                     /.pinacle/run: the supervisor's socket and
//!                            logs (made anew on each start)
//!   console.log{,.1}         the runtime's and the pod's init's output
//!                            (rotated on each start)
//! ```
//!
//! `/workspace` and the home survive stop/start and an image change; the
//! overlay layer is reset when the pod's image changes (it only makes sense
//! on top of the image it was made on).
//!
//! The images are sparse: a pod's disk takes host space as the pod writes.
//! So that the data filesystem is never promised more than it holds, a new
//! disk is made only when the free space covers it and what every other
//! pod's disk may still grow by, times the operator's overcommit ratio
//! (`--disk-overcommit`, 1 by default: no overcommit).

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::rootfs::is_mount_point;
use crate::AgentError;

/// Paths inside a mounted pod disk.
#[derive(Debug, Clone)]
pub struct PodDisk {
    /// The mount point.
    pub root: PathBuf,
}

impl PodDisk {
    pub fn workspace(&self) -> PathBuf {
        self.root.join("workspace")
    }
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
}

/// The image file of a pod's disk in `volume`.
pub fn image_file(volume: &Path) -> PathBuf {
    volume.join("disk.img")
}

/// Where a pod's disk is mounted.
pub fn mount_point(volume: &Path) -> PathBuf {
    volume.join("disk")
}

async fn run(cmd: &mut Command, what: &str) -> Result<(), AgentError> {
    // no secret of the agent's reaches mkfs, mount or cp
    cmd.env_clear().env("PATH", crate::runtime::CHILD_PATH);
    let out = cmd.output().await.map_err(|e| AgentError::Mount(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(AgentError::Mount(format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// Creates (first time) and mounts the pod's disk of `size` bytes, and
/// prepares its directories for `image`. Returns its paths. `image_home`:
/// the image's `/root`, copied into a new home.
/// A new disk is refused unless the data filesystem can hold it
/// (see [`check_capacity`]); `overcommit` scales the free space.
pub async fn ensure_mounted(volume: &Path, size: u64, image: &str, image_home: Option<&Path>, overcommit: f64) -> Result<PodDisk, AgentError> {
    std::fs::create_dir_all(volume).map_err(AgentError::io("creating", volume))?;
    let file = image_file(volume);
    let root = mount_point(volume);
    std::fs::create_dir_all(&root).map_err(AgentError::io("creating", &root))?;
    if !is_mount_point(&root) {
        if !file.exists() {
            // one new disk at a time per host: each check sees the others
            let volumes = volume.parent().unwrap_or(volume);
            let _one = crate::data_lock::hold(&DISK_LOCK, &volumes.with_file_name("disk.lock")).await?;
            check_capacity(volumes, volume, size, overcommit)?;
            let scratch = volume.join("disk.img.new");
            let f = std::fs::File::create(&scratch).map_err(AgentError::io("creating", &scratch))?;
            f.set_len(size).map_err(AgentError::io("sizing", &scratch))?;
            drop(f);
            run(
                Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]).arg(&scratch),
                "making the pod's filesystem (mkfs.ext4 from e2fsprogs)",
            )
            .await?;
            std::fs::rename(&scratch, &file).map_err(AgentError::io("installing", &file))?;
        }
        run(
            Command::new("mount").args(["-o", "loop,nodev,nosuid,noatime"]).arg(&file).arg(&root),
            "mounting the pod's disk",
        )
        .await?;
    }
    let disk = PodDisk { root };
    // a restore a crash interrupted is finished or undone before anything
    // looks at the volumes (an empty /workspace would get starter files)
    crate::snapshot::recover(&disk.root)?;
    let marker = disk.root.join("image");
    let previous = std::fs::read_to_string(&marker).ok();
    if previous.as_deref().is_some_and(|p| p != image) {
        // the writable layer belongs to the old image
        for dir in [disk.upper(), disk.work()] {
            crate::rootfs::remove_tree(&dir)?;
        }
    }
    // Pods from before per-pod disks kept /workspace in {volume}/workspace:
    // move it onto the disk the first time (a copy, then the old one goes).
    let legacy = volume.join("workspace");
    if legacy.is_dir() && !disk.workspace().exists() {
        let scratch = disk.root.join("workspace.moving");
        crate::rootfs::remove_tree(&scratch)?;
        run(Command::new("cp").arg("-a").arg(&legacy).arg(&scratch), "moving the old workspace onto the pod's disk").await?;
        std::fs::rename(&scratch, disk.workspace()).map_err(AgentError::io("installing", disk.workspace()))?;
        crate::rootfs::remove_tree(&legacy)?;
    }
    for dir in [disk.workspace(), disk.upper(), disk.work()] {
        std::fs::create_dir_all(&dir).map_err(AgentError::io("creating", &dir))?;
    }
    if !disk.home().exists() {
        let scratch = disk.root.join("home.new");
        let _ = std::fs::remove_dir_all(&scratch);
        match image_home.filter(|h| h.is_dir()) {
            Some(src) => run(Command::new("cp").arg("-a").arg(src).arg(&scratch), "copying the image's home").await?,
            None => std::fs::create_dir_all(&scratch).map_err(AgentError::io("creating", &scratch))?,
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o700)).map_err(AgentError::io("securing", &scratch))?;
        std::fs::rename(&scratch, disk.home()).map_err(AgentError::io("installing", disk.home()))?;
    }
    if previous.as_deref() != Some(image) {
        std::fs::write(&marker, image).map_err(AgentError::io("writing", &marker))?;
    }
    Ok(disk)
}

static DISK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bytes a disk image may still take on the host: its size less what is
/// already allocated to it.
fn growth_left(image: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(image).map(|m| m.size().saturating_sub(m.blocks() * 512)).unwrap_or(0)
}

/// What [`check_capacity`] decides from its figures: whether a new disk of
/// `size` fits when `free` bytes are free, existing disks may still grow by
/// `promised`, and the operator allows `overcommit` times the free space.
pub fn fits(size: u64, promised: u64, free: u64, overcommit: f64) -> bool {
    (size as f64) + (promised as f64) <= (free as f64) * overcommit
}

/// Refuses a new disk of `size` bytes for `volume` when the data
/// filesystem under `volumes` could not hold it besides what the other
/// pods' disks may still grow by (times `overcommit`).
pub fn check_capacity(volumes: &Path, volume: &Path, size: u64, overcommit: f64) -> Result<(), AgentError> {
    let st = nix::sys::statvfs::statvfs(volumes).map_err(|e| AgentError::io("measuring", volumes)(e.into()))?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let promised: u64 = std::fs::read_dir(volumes)
        .map_err(AgentError::io("reading", volumes))?
        .flatten()
        .filter(|e| e.path() != volume)
        .map(|e| growth_left(&image_file(&e.path())))
        .sum();
    if fits(size, promised, free, overcommit) {
        return Ok(());
    }
    const GIB: f64 = (1u64 << 30) as f64;
    Err(AgentError::Mount(format!(
        "no room for the pod's {:.1} GiB disk: the data filesystem has {:.1} GiB free and the other pods' disks may still grow by {:.1} GiB \
         (overcommit ratio {overcommit}); free space, delete pods or raise --disk-overcommit",
        size as f64 / GIB,
        free as f64 / GIB,
        promised as f64 / GIB,
    )))
}

/// How much of a pod's console log is kept in its pod directory when its
/// disk goes away, for `pinacle pod logs` of a stopped or failed pod.
pub const CONSOLE_TAIL_BYTES: u64 = 64 * 1024;

/// Starts a new console log on the pod's disk: the previous one becomes
/// `console.log.1` (replacing the older one).
pub fn rotate_console(log: &Path) -> Result<(), AgentError> {
    let old = log.with_extension("log.1");
    match std::fs::rename(log, &old) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AgentError::io("rotating", log)(e)),
    }
}

/// Copies the last [`CONSOLE_TAIL_BYTES`] of `log` (on the pod's disk) to
/// `tail` (in the pod's directory). Nothing when there is no log.
pub fn save_console_tail(log: &Path, tail: &Path) {
    let text = crate::runtime::tail_bytes(log, CONSOLE_TAIL_BYTES);
    if text.is_empty() {
        return;
    }
    let tmp = tail.with_extension("log.tmp");
    if std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, tail)).is_err() {
        tracing::warn!(path = %tail.display(), "could not keep the console log's tail");
    }
}

/// Unmounts the pod's disk if it is mounted (lazily when busy).
pub async fn unmount(volume: &Path) -> Result<(), AgentError> {
    let root = mount_point(volume);
    if !is_mount_point(&root) {
        return Ok(());
    }
    if run(Command::new("umount").arg(&root), "unmounting the pod's disk").await.is_err() {
        run(Command::new("umount").arg("-l").arg(&root), "unmounting the pod's disk").await?;
    }
    Ok(())
}

/// Bytes used and available on a mounted pod disk.
pub fn usage(volume: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(&mount_point(volume)).ok()?;
    let frag = st.fragment_size() as u64;
    let total = st.blocks() as u64 * frag;
    let avail = st.blocks_available() as u64 * frag;
    Some((total.saturating_sub(st.blocks_free() as u64 * frag), avail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_disk_holds_its_size_keeps_volumes_across_images_and_adopts_an_old_workspace() {
        if !nix::unistd::geteuid().is_root() {
            panic!("mount tests run as root (CI does)");
        }
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("vol");
        // an old-layout workspace is adopted
        std::fs::create_dir_all(volume.join("workspace/src")).unwrap();
        std::fs::write(volume.join("workspace/src/old.txt"), "kept").unwrap();
        let image_home = tmp.path().join("image-root");
        std::fs::create_dir_all(&image_home).unwrap();
        std::fs::write(image_home.join(".profile"), "from the image").unwrap();
        let disk = ensure_mounted(&volume, 64 << 20, "base", Some(&image_home), 1.0).await.unwrap();
        assert_eq!(std::fs::read_to_string(disk.workspace().join("src/old.txt")).unwrap(), "kept");
        assert!(!volume.join("workspace").exists());
        assert_eq!(std::fs::read_to_string(disk.home().join(".profile")).unwrap(), "from the image");
        let (used, avail) = usage(&volume).unwrap();
        assert!(used + avail <= 64 << 20 && avail > 32 << 20, "{used} + {avail}");
        // writing past the size fails
        let big = vec![0u8; 80 << 20];
        let err = std::fs::write(disk.workspace().join("big"), &big).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC));
        std::fs::remove_file(disk.workspace().join("big")).unwrap();
        std::fs::write(disk.upper().join("layer.txt"), "old image").unwrap();
        unmount(&volume).await.unwrap();
        // the same image keeps its layer; another image resets it, not the volumes
        let disk = ensure_mounted(&volume, 64 << 20, "base", None, 1.0).await.unwrap();
        assert!(disk.upper().join("layer.txt").exists());
        unmount(&volume).await.unwrap();
        let disk = ensure_mounted(&volume, 64 << 20, "node", None, 1.0).await.unwrap();
        assert!(!disk.upper().join("layer.txt").exists());
        assert!(disk.workspace().join("src/old.txt").exists() && disk.home().join(".profile").exists());
        unmount(&volume).await.unwrap();
        assert!(!crate::rootfs::is_mount_point(&mount_point(&volume)));
    }

    #[test]
    fn new_disks_must_fit_the_free_space_beside_what_others_may_still_take() {
        const G: u64 = 1 << 30;
        assert!(fits(20 * G, 0, 75 * G, 1.0));
        assert!(!fits(20 * G, 60 * G, 75 * G, 1.0), "three disks promised 60 GiB already");
        assert!(fits(20 * G, 60 * G, 75 * G, 2.0), "the operator allows overcommit");
        assert!(!fits(20 * G, 0, 10 * G, 1.0));
    }

    #[tokio::test]
    async fn a_disk_the_data_filesystem_cannot_hold_is_refused_with_a_clear_error() {
        if !nix::unistd::geteuid().is_root() {
            panic!("mount tests run as root (CI does)");
        }
        let tmp = tempfile::tempdir().unwrap();
        let volumes = tmp.path().join("volumes");
        std::fs::create_dir_all(&volumes).unwrap();
        let st = nix::sys::statvfs::statvfs(&volumes).unwrap();
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        // a disk larger than the free space: refused, nothing made
        let err = ensure_mounted(&volumes.join("a"), free + (1 << 30), "base", None, 1.0).await.unwrap_err().to_string();
        assert!(err.contains("no room for the pod's") && err.contains("--disk-overcommit"), "{err}");
        assert!(!image_file(&volumes.join("a")).exists());
        // an existing sparse disk's promise counts against the next one
        let other = volumes.join("b");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::File::create(image_file(&other)).unwrap().set_len(free).unwrap();
        let err = check_capacity(&volumes, &volumes.join("c"), 1 << 30, 1.0).unwrap_err().to_string();
        assert!(err.contains("may still grow by"), "{err}");
        check_capacity(&volumes, &volumes.join("c"), 1 << 30, 3.0).unwrap();
    }

    #[test]
    fn console_logs_rotate_and_keep_a_bounded_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("console.log");
        std::fs::write(&log, "first run\n").unwrap();
        rotate_console(&log).unwrap();
        assert!(!log.exists());
        assert_eq!(std::fs::read_to_string(tmp.path().join("console.log.1")).unwrap(), "first run\n");
        rotate_console(&log).unwrap();
        std::fs::write(&log, vec![b'x'; 3 * CONSOLE_TAIL_BYTES as usize]).unwrap();
        let tail = tmp.path().join("tail.log");
        save_console_tail(&log, &tail);
        assert_eq!(std::fs::metadata(&tail).unwrap().len(), CONSOLE_TAIL_BYTES);
    }
}
