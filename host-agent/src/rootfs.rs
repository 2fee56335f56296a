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

/// How many overlay mounts use `lower` as their lower layer.
pub fn overlays_over(lower: &Path) -> usize {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return 0 };
    let needle = format!("lowerdir={}", lower.display());
    info.lines()
        .filter(|l| l.contains(" - overlay "))
        .filter(|l| l.split(',').any(|opt| opt == needle))
        .count()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_mounts_are_found_counted_and_removed() {
        if !nix::unistd::geteuid().is_root() {
            panic!("mount tests run as root (CI does)");
        }
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        std::fs::create_dir_all(&lower).unwrap();
        std::fs::write(lower.join("f"), "image").unwrap();
        let target = tmp.path().join("pod/rootfs");
        mount_overlay(&lower, &tmp.path().join("pod/upper"), &tmp.path().join("pod/work"), &target).unwrap();
        // idempotent: a second call does not stack a second mount
        mount_overlay(&lower, &tmp.path().join("pod/upper"), &tmp.path().join("pod/work"), &target).unwrap();
        assert!(is_mount_point(&target));
        assert_eq!(overlays_over(&lower), 1);
        std::fs::write(target.join("g"), "pod").unwrap();
        assert!(tmp.path().join("pod/upper/g").exists(), "writes land in the pod's layer");
        assert!(!lower.join("g").exists(), "the image stays untouched");
        remove_tree(&tmp.path().join("pod")).unwrap();
        assert!(!is_mount_point(&target));
        assert_eq!(overlays_over(&lower), 0);
        assert!(!tmp.path().join("pod").exists());
    }
}
