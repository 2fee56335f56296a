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
    // no set-uid programs or device nodes of the pod's making count on the host
    mount(Some("overlay"), target, Some("overlay"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options.as_str()))
        .map_err(|e| AgentError::Mount(format!("mounting overlay at {}: {e}", target.display())))
}

/// How many overlay mounts use `lower` as their lower layer, directly or
/// through an id-mapped clone of it (the layers of user-namespace pods).
pub fn overlays_over(lower: &Path) -> usize {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return 0 };
    let needle = format!("lowerdir={}", lower.display());
    let lower_path = lower.to_string_lossy();
    info.lines()
        .filter(|l| {
            let overlay = l.contains(" - overlay ") && l.split(',').any(|opt| opt == needle);
            // an id-mapped clone: its root (field 4) is the image's path
            // within its file system
            let fields: Vec<&str> = l.split(' ').collect();
            let clone = fields.len() > 5
                && fields[5].split(',').any(|o| o == "idmapped")
                && fields[3] != "/"
                && lower_path.ends_with(&*unescape_mountinfo(fields[3]));
            overlay || clone
        })
        .count()
}

/// Where the id-mapped layers of a user-namespace pod whose root
/// filesystem is mounted at `target` are attached: beside it.
pub fn layers_dir(target: &Path) -> std::path::PathBuf {
    target.with_file_name("idmap")
}

/// The root filesystem of a pod in a user namespace (youki pods): the
/// pod's disk (`disk_root`, holding `upper/` and `work/`) and each of
/// `more` (name, directory) id-mapped (on-disk uid 0 is host uid
/// `host_id`) under [`layers_dir`], and an overlay of the id-mapped image
/// `lower` under the id-mapped `upper/`, owned by the pod's namespace, at
/// `target`. `helper` is `pinacle-youki` (`mount-rootfs`), a
/// single-threaded process that may fork. Nothing is ever chowned: the
/// files stay owned by uid 0 on disk. `data_root`: the agent's data
/// directory, which (and the directories below it) the pod's root group may
/// be allowed to search. Unless `target` is already mounted. On failure
/// nothing stays mounted.
#[allow(clippy::too_many_arguments)]
pub async fn mount_userns_overlay(
    helper: &Path,
    lower: &Path,
    disk_root: &Path,
    more: &[(&str, &Path)],
    target: &Path,
    data_root: &Path,
    host_id: u32,
    count: u32,
) -> Result<(), AgentError> {
    if is_mount_point(target) {
        return Ok(());
    }
    let layers = layers_dir(target);
    // left by a crash: never stack mounts
    unmount_under(&layers)?;
    allow_search_by_group(target, data_root, host_id)?;
    for dir in [disk_root.join("upper"), disk_root.join("work"), target.to_path_buf(), layers.clone()] {
        std::fs::create_dir_all(&dir).map_err(AgentError::io("creating", &dir))?;
    }
    let mut cmd = crate::runtime::clean_command(helper);
    cmd.arg("mount-rootfs").arg("--layers").arg(&layers);
    let mut source = |name: &str, dir: &Path| {
        let mut arg = std::ffi::OsString::from(format!("{name}="));
        arg.push(dir.as_os_str());
        cmd.arg("--source").arg(arg);
    };
    source("image", lower);
    source("disk", disk_root);
    for (name, dir) in more {
        std::fs::create_dir_all(dir).map_err(AgentError::io("creating", dir))?;
        source(name, dir);
    }
    cmd.args(["--lower", "image", "--upper", "disk/upper", "--work", "disk/work", "--target"])
        .arg(target)
        .args(["--host-id", &host_id.to_string(), "--count", &count.to_string()])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| AgentError::Mount(format!("mounting the user-namespace root file system at {} timed out", target.display())))?
        .map_err(AgentError::io("running", helper))?;
    if !out.status.success() {
        let _ = unmount(target);
        return Err(AgentError::Mount(format!(
            "mounting the user-namespace root file system at {}: {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The runtime sets a user-namespace pod up as the pod's root, which must
/// reach the pod's directories under the agent's private data directory
/// (0700): each directory from `data_root` down to `path`'s parent that
/// others may not search, owned by root with no group permissions, gets
/// group `gid` (the pods' root group on the host) and group search
/// permission only (no reading). Directories above `data_root` are never
/// changed, and one of them, or one that already gives another group
/// rights, that the pod's root may not search is an error: nobody else
/// gains access.
fn allow_search_by_group(path: &Path, data_root: &Path, gid: u32) -> Result<(), AgentError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut dir = std::path::PathBuf::new();
    let parent = path.parent().unwrap_or(path);
    for part in parent.components() {
        dir.push(part);
        let meta = std::fs::symlink_metadata(&dir).map_err(AgentError::io("reading", &dir))?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o001 != 0 || (meta.gid() == gid && mode & 0o010 != 0) {
            continue;
        }
        if meta.uid() != 0 || mode & 0o070 != 0 || !dir.starts_with(data_root) {
            return Err(AgentError::Mount(format!(
                "youki pods need {} to be searchable by their root group (gid {gid}): it is mode {mode:o}, uid {} gid {}; allow it with: chgrp {gid} DIR && chmod g+x DIR",
                dir.display(),
                meta.uid(),
                meta.gid()
            )));
        }
        nix::unistd::chown(&dir, None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| AgentError::io("securing", &dir)(e.into()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o010)).map_err(AgentError::io("securing", &dir))?;
    }
    Ok(())
}

/// Unmounts everything mounted at or below `dir` (deepest first).
fn unmount_under(dir: &Path) -> Result<(), AgentError> {
    let (Ok(canon), Ok(info)) = (dir.canonicalize(), std::fs::read_to_string("/proc/self/mountinfo")) else {
        return Ok(());
    };
    let prefix = canon.to_string_lossy().into_owned();
    let mut inside: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape_mountinfo))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    inside.sort_by_key(|m| std::cmp::Reverse(m.len()));
    inside.dedup();
    for m in inside {
        unmount_one(Path::new(&m))?;
    }
    Ok(())
}

/// Unmounts `target` if it is mounted (a lazy detach if it is busy), and
/// the id-mapped layers beside it, if any.
pub fn unmount(target: &Path) -> Result<(), AgentError> {
    unmount_one(target)?;
    unmount_under(&layers_dir(target))
}

fn unmount_one(target: &Path) -> Result<(), AgentError> {
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
    unmount_under(dir)?;
    std::fs::remove_dir_all(dir).map_err(AgentError::io("removing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pods_root_group_may_search_the_data_directory_and_nothing_above() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let top = tempfile::tempdir().unwrap();
        let data = top.path().join("data");
        std::fs::create_dir_all(data.join("pods/p")).unwrap();
        for d in [top.path(), data.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        // the data directory above: not searchable by the group, never changed
        let err = allow_search_by_group(&data.join("pods/p/rootfs"), &data.join("pods"), 4242).unwrap_err();
        assert!(err.to_string().contains("searchable"), "{err}");
        assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o7777, 0o700);
        // the top is above the data directory: refused too, unchanged
        assert!(allow_search_by_group(&data.join("pods/p/rootfs"), &data, 4242).is_err());
        assert_eq!(std::fs::metadata(top.path()).unwrap().mode() & 0o7777, 0o700);
        // with a searchable top, the data directory gets group search only
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        allow_search_by_group(&data.join("pods/p/rootfs"), &data, 4242).unwrap();
        let meta = std::fs::metadata(&data).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o7777), (4242, 0o710));
        // a directory that already gives another group rights is left alone
        let other = data.join("pods/q");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(allow_search_by_group(&other.join("rootfs"), &data, 4242).is_err());
        assert_eq!(std::fs::metadata(&other).unwrap().mode() & 0o7777, 0o750);
    }

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
