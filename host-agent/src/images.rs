//! The image store: read-only root filesystems that pods start from.
//!
//! An image is a directory `{data}/images/{name}/rootfs` plus `image.json`.
//! Builds happen in a scratch directory beside it and are renamed into place
//! when complete, so a half-built image is never visible.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::AgentError;

/// Packages the `base` image adds to Debian's minimal base.
pub const BASE_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "git",
    "curl",
    "ca-certificates",
    "tmux",
    "procps",
    "python3",
];

/// Images this host knows how to build.
pub const BUILDABLE: &[&str] = &["base", "busybox"];

/// An image in the store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImageInfo {
    pub name: String,
    /// Unix seconds when the build finished.
    pub built_at: i64,
    /// How it was built, for humans.
    pub source: String,
    /// Bytes on disk.
    pub size_bytes: u64,
}

/// Read-only root filesystems on this host.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

impl ImageStore {
    /// A store in `dir` (created on first build).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The root filesystem of `name`, if it is built.
    pub fn rootfs(&self, name: &str) -> Option<PathBuf> {
        if !valid_image_name(name) {
            return None;
        }
        let dir = self.dir.join(name);
        dir.join("image.json").is_file().then(|| dir.join("rootfs"))
    }

    /// Every built image, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageInfo>, AgentError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(AgentError::io("reading image store", &self.dir)(e)),
        };
        for entry in entries.flatten() {
            let meta = entry.path().join("image.json");
            if let Ok(raw) = std::fs::read(&meta) {
                if let Ok(info) = serde_json::from_slice::<ImageInfo>(&raw) {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Builds image `name` (one of [`BUILDABLE`]), reporting progress lines to
    /// `progress`. An existing image is kept unless `force`.
    pub async fn build(
        &self,
        name: &str,
        force: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<ImageInfo, AgentError> {
        if !BUILDABLE.contains(&name) {
            return Err(AgentError::ImageBuild(format!(
                "unknown image {name:?}; buildable images: {}",
                BUILDABLE.join(", ")
            )));
        }
        if !force {
            if let Some(info) = self.list()?.into_iter().find(|i| i.name == name) {
                progress(&format!("image {name} is already built"));
                return Ok(info);
            }
        }
        let in_use = crate::rootfs::overlays_over(&self.dir.join(name).join("rootfs"));
        if in_use > 0 {
            return Err(AgentError::ImageBuild(format!(
                "image {name} is the lower layer of {in_use} running pod(s); stop them before rebuilding it"
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(AgentError::io("creating", &self.dir))?;
        let scratch = self.dir.join(format!(".build-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let rootfs = scratch.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(AgentError::io("creating", &rootfs))?;
        let result = match name {
            "busybox" => build_busybox(&rootfs, progress).await,
            _ => build_debian_base(&rootfs, progress).await,
        };
        let source = match result {
            Ok(source) => source,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e);
            }
        };
        for dir in ["workspace", "proc", "sys", "dev", "tmp"] {
            let _ = std::fs::create_dir_all(rootfs.join(dir));
        }
        progress("measuring image size");
        let info = ImageInfo {
            name: name.to_owned(),
            built_at: chrono::Utc::now().timestamp(),
            source,
            size_bytes: dir_size(&rootfs),
        };
        let meta = serde_json::to_vec_pretty(&info).map_err(|e| AgentError::ImageBuild(e.to_string()))?;
        std::fs::write(scratch.join("image.json"), meta)
            .map_err(AgentError::io("writing", scratch.join("image.json")))?;
        let target = self.dir.join(name);
        if target.exists() {
            let old = self.dir.join(format!(".old-{name}-{}", std::process::id()));
            std::fs::rename(&target, &old).map_err(AgentError::io("moving aside", &target))?;
            let _ = std::fs::remove_dir_all(&old);
        }
        std::fs::rename(&scratch, &target).map_err(AgentError::io("installing", &target))?;
        progress(&format!("image {name} built"));
        Ok(info)
    }
}

/// Image names are path components: keep them to `[a-z0-9-]`.
fn valid_image_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A BusyBox rootfs: the static binary from Debian's `busybox-static` and a
/// link for each applet.
async fn build_busybox(rootfs: &Path, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<String, AgentError> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            AgentError::ImageBuild("busybox not found; install Debian's busybox-static".into())
        })?;
    progress("copying busybox");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).map_err(AgentError::io("creating", &bin))?;
    std::fs::copy(busybox, bin.join("busybox")).map_err(AgentError::io("copying", busybox))?;
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .await
        .map_err(AgentError::io("running", busybox))?;
    if !out.status.success() {
        return Err(AgentError::ImageBuild(
            "busybox --list failed; is it the static build (busybox-static)?".into(),
        ));
    }
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" && !applet.contains('/') && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    for dir in ["etc", "root", "usr/bin", "var/tmp"] {
        let _ = std::fs::create_dir_all(rootfs.join(dir));
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(AgentError::io("writing", rootfs.join("etc/passwd")))?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n")
        .map_err(AgentError::io("writing", rootfs.join("etc/group")))?;
    Ok(format!("busybox from {}", busybox.display()))
}

/// A Debian 12 rootfs from debootstrap (minbase plus [`BASE_PACKAGES`]).
async fn build_debian_base(rootfs: &Path, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<String, AgentError> {
    let mirror = std::env::var("PINACLE_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned());
    progress(&format!("debootstrap bookworm from {mirror}"));
    let mut child = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", BASE_PACKAGES.join(",")))
        .arg("bookworm")
        .arg(rootfs)
        .arg(&mirror)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            AgentError::ImageBuild(format!("cannot run debootstrap ({e}); install Debian's debootstrap"))
        })?;
    let mut last_lines = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            progress(&line);
            last_lines.push(line);
            if last_lines.len() > 20 {
                last_lines.remove(0);
            }
        }
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = err.read_to_string(&mut stderr).await;
    }
    let status = child.wait().await.map_err(|e| AgentError::ImageBuild(e.to_string()))?;
    if !status.success() {
        return Err(AgentError::ImageBuild(format!(
            "debootstrap exited with {status}: {}{}",
            last_lines.join("\n"),
            stderr
        )));
    }
    progress("cleaning package caches");
    let _ = std::fs::remove_dir_all(rootfs.join("var/cache/apt/archives"));
    let _ = std::fs::create_dir_all(rootfs.join("var/cache/apt/archives/partial"));
    let _ = std::fs::remove_dir_all(rootfs.join("var/lib/apt/lists"));
    let _ = std::fs::create_dir_all(rootfs.join("var/lib/apt/lists/partial"));
    Ok(format!("debootstrap bookworm ({mirror}) + {}", BASE_PACKAGES.join(" ")))
}

/// Bytes used by regular files under `dir` (links not followed).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn busybox_image_builds_atomically_and_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::new(tmp.path().join("images"));
        assert!(store.rootfs("busybox").is_none());
        let info = store.build("busybox", false, &|_| {}).await.unwrap();
        assert_eq!(info.name, "busybox");
        let rootfs = store.rootfs("busybox").unwrap();
        assert!(rootfs.join("bin/busybox").is_file());
        assert_eq!(std::fs::read_link(rootfs.join("bin/sh")).unwrap(), Path::new("busybox"));
        assert_eq!(store.list().unwrap().len(), 1);
        // no scratch directories are left behind
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["busybox".to_string()]);
    }

    #[tokio::test]
    async fn unknown_images_are_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ImageStore::new(tmp.path());
        let err = store.build("fedora", false, &|_| {}).await.unwrap_err();
        assert!(err.to_string().contains("buildable images: base, busybox"), "{err}");
        assert!(store.rootfs("../etc").is_none());
    }
}
