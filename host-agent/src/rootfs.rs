//! The pod's root filesystem: an overlay of the image (read-only, below) and
//! the pod's own writable layer (above).

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::AgentError;

/// Whether `path` is a mount point (its device differs from its parent's, or
/// it is listed in `/proc/self/mountinfo`).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else { return false };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let target = canon.to_string_lossy();
    info.lines().any(|line| line.split(' ').nth(4).map(unescape_mountinfo).as_deref() == Some(&*target))
}

fn unescape_mountinfo(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Mounts `lower` (read-only) under `upper` at `target`, unless `target` is
/// already a mount point. Creates `upper`, `work` and `target` as needed.
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, target: &Path) -> Result<(), AgentError> {
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir).map_err(AgentError::io("creating", dir))?;
    }
    if is_mount_point(target) {
        return Ok(());
    }
    for p in [lower, upper, work] {
        if p.to_string_lossy().contains([',', ':']) {
            return Err(AgentError::Mount(format!(
                "overlay paths may not contain ',' or ':': {}",
                p.display()
            )));
        }
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .map_err(|e| AgentError::Mount(format!("mounting overlay at {}: {e}", target.display())))
}

/// Unmounts `target` if it is mounted; a lazy detach if it is busy.
pub fn unmount(target: &Path) -> Result<(), AgentError> {
    if !is_mount_point(target) {
        return Ok(());
    }
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH)
            .map_err(|e| AgentError::Mount(format!("detaching {}: {e}", target.display()))),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(AgentError::Mount(format!("unmounting {}: {e}", target.display()))),
    }
}

/// Removes `dir` after unmounting anything mounted inside it.
pub fn remove_tree(dir: &Path) -> Result<(), AgentError> {
    if !dir.exists() {
        return Ok(());
    }
    if let (Ok(canon), Ok(info)) = (dir.canonicalize(), std::fs::read_to_string("/proc/self/mountinfo")) {
        let prefix = canon.to_string_lossy().into_owned();
        let mut inside: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(unescape_mountinfo))
            .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in inside {
            unmount(Path::new(&m))?;
        }
    }
    std::fs::remove_dir_all(dir).map_err(AgentError::io("removing", dir))
}
