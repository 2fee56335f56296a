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
    // `python3 -m venv` works in every pod
    "python3-venv",
];

/// Images this host builds itself; the templates' images (`node`, `vite`,
/// `python`...) come from their recipes (see [`ImageStore::buildable`]).
/// `base` is Debian 13 (trixie); `base-bookworm` keeps Debian 12 available
/// by name.
pub const BUILDABLE: &[&str] = &["base", "base-bookworm", "busybox"];

/// The Debian release each Debian base image is debootstrapped from.
fn debian_suite(name: &str) -> Option<&'static str> {
    match name {
        "base" => Some("trixie"),
        "base-bookworm" => Some("bookworm"),
        _ => None,
    }
}

/// What a built-in image is made from, hashed into its `recipe_sha256`: an
/// image built from anything else (an older Debian) is rebuilt.
fn builtin_recipe(name: &str) -> String {
    match debian_suite(name) {
        Some(suite) => format!("debootstrap --variant=minbase {suite} + {}", BASE_PACKAGES.join(" ")),
        None => format!("builtin {name}"),
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Where a recipe's `COPY` sources come from.
#[derive(Debug, Clone)]
pub enum RecipeContext {
    /// A built-in template's files (`files/...` in its directory).
    Template(&'static pinacle_config::templates::Template),
    /// A directory on this host.
    Dir(PathBuf),
}

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
    /// SHA-256 of the recipe (and the files it copies) it was built from:
    /// a changed recipe is rebuilt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_sha256: Option<String>,
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

    /// An empty scratch directory to build image `name` in, unless a
    /// running pod uses the image (it cannot be replaced under it).
    fn scratch_for(&self, name: &str) -> Result<PathBuf, AgentError> {
        let in_use = crate::rootfs::overlays_over(&self.dir.join(name).join("rootfs"));
        if in_use > 0 {
            return Err(AgentError::ImageBuild(format!(
                "image {name} is the lower layer of {in_use} running pod(s); stop them before rebuilding it"
            )));
        }
        let scratch = self.dir.join(format!(".build-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).map_err(AgentError::io("creating", &scratch))?;
        Ok(scratch)
    }

    /// Every image name this host can build.
    pub fn buildable() -> Vec<&'static str> {
        let mut names: Vec<&str> = BUILDABLE.to_vec();
        for t in pinacle_config::templates::Template::known() {
            if t.recipe.is_some() && !names.contains(&t.image) {
                names.push(t.image);
            }
        }
        names
    }

    /// Builds image `name` (one of [`ImageStore::buildable`]), and the images
    /// its recipe starts from, reporting progress lines to `progress`. An
    /// existing image is kept unless `force` (which rebuilds `name` only).
    pub async fn build(
        &self,
        name: &str,
        force: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<ImageInfo, AgentError> {
        if let Some(t) = pinacle_config::templates::Template::building(name) {
            let recipe = t.recipe.unwrap_or_default();
            return self.build_recipe(name, recipe, RecipeContext::Template(t), force, progress).await;
        }
        if !BUILDABLE.contains(&name) {
            return Err(AgentError::ImageBuild(format!(
                "unknown image {name:?}; buildable images: {}",
                Self::buildable().join(", ")
            )));
        }
        let digest = sha256_hex(&builtin_recipe(name));
        if !force {
            if let Some(info) = self.list()?.into_iter().find(|i| i.name == name) {
                // busybox images from before recipes were recorded are kept
                if info.recipe_sha256.as_deref() == Some(digest.as_str()) || (name == "busybox" && info.recipe_sha256.is_none()) {
                    progress(&format!("image {name} is already built"));
                    return Ok(info);
                }
                progress(&format!("image {name} was built from another recipe ({}); rebuilding it", info.source));
            }
        }
        let scratch = self.scratch_for(name)?;
        let rootfs = scratch.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(AgentError::io("creating", &rootfs))?;
        let result = match debian_suite(name) {
            None => build_busybox(&rootfs, progress).await,
            Some(suite) => build_debian_base(&rootfs, suite, progress).await,
        };
        let source = match result {
            Ok(source) => source,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e);
            }
        };
        self.install_built(name, &scratch, source, Some(digest), progress)
    }

    /// Builds `name` from a recipe (the Dockerfile subset of
    /// [`pinacle_config::dockerfile`]): a copy of the `FROM` image (built
    /// first if this host can), then each `RUN` in a chroot with `/proc`,
    /// `/dev` and the host's DNS, in a mount namespace of its own.
    ///
    /// Recipes run as root on the host: they are the operator's (built-in
    /// templates or `pinacle image build --recipe`), never a user's; users'
    /// Dockerfile steps run inside their pod's sandbox instead.
    pub async fn build_recipe(
        &self,
        name: &str,
        recipe_text: &str,
        context: RecipeContext,
        force: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<ImageInfo, AgentError> {
        if !valid_image_name(name) {
            return Err(AgentError::ImageBuild(format!("{name:?} is not an image name: use a-z, 0-9 and -")));
        }
        let recipe = pinacle_config::dockerfile::parse(&format!("recipe of {name}"), recipe_text)
            .map_err(|d| AgentError::ImageBuild(d.to_string()))?;
        if recipe.from == name {
            return Err(AgentError::ImageBuild(format!("image {name} cannot start FROM itself")));
        }
        // the parent first (a no-op when it is current): a child built FROM
        // an older parent is rebuilt, so its digest covers the parent's
        let parent_info = if self.rootfs(&recipe.from).is_some() && !ImageStore::buildable().contains(&recipe.from.as_str()) {
            self.list()?.into_iter().find(|i| i.name == recipe.from)
        } else {
            Some(Box::pin(self.build(&recipe.from, false, progress)).await?)
        };
        let mut digest = recipe_digest(recipe_text, &recipe, &context);
        if let Some(parent) = &parent_info {
            digest = sha256_hex(&format!("{digest} FROM {} {}", parent.name, parent.recipe_sha256.as_deref().unwrap_or(&parent.built_at.to_string())));
        }
        if !force {
            if let Some(info) = self.list()?.into_iter().find(|i| i.name == name) {
                if info.recipe_sha256.as_deref() == Some(digest.as_str()) {
                    progress(&format!("image {name} is already built"));
                    return Ok(info);
                }
                progress(&format!("image {name} was built from another recipe; rebuilding it"));
            }
        }
        let parent = self.rootfs(&recipe.from).ok_or_else(|| AgentError::ImageMissing(recipe.from.clone()))?;
        let scratch = self.scratch_for(name)?;
        let rootfs = scratch.join("rootfs");
        progress(&format!("copying image {}", recipe.from));
        let result = async {
            run_logged(Command::new("cp").arg("-a").arg("--reflink=auto").arg(&parent).arg(&rootfs), progress).await?;
            let mut env: Vec<(String, String)> = Vec::new();
            let mut workdir = String::from("/");
            let total = recipe.steps.len();
            for (i, (line, step)) in recipe.steps.iter().enumerate() {
                match step {
                    pinacle_config::dockerfile::Instruction::Run(cmd) => {
                        progress(&format!("step {}/{total} (line {line}): RUN {cmd}", i + 1));
                        run_in_chroot(&rootfs, cmd, &workdir, &env, progress).await?;
                    }
                    pinacle_config::dockerfile::Instruction::Copy(copy) => {
                        progress(&format!("step {}/{total} (line {line}): COPY {}", i + 1, copy.sources.join(" ")));
                        copy_into(&rootfs, copy, &context)?;
                    }
                    pinacle_config::dockerfile::Instruction::Env(k, v) => env.push((k.clone(), v.clone())),
                    pinacle_config::dockerfile::Instruction::Workdir(dir) => workdir = dir.clone(),
                }
            }
            let _ = std::fs::remove_dir_all(rootfs.join("var/cache/apt/archives"));
            let _ = std::fs::create_dir_all(rootfs.join("var/cache/apt/archives/partial"));
            let _ = std::fs::remove_dir_all(rootfs.join("var/lib/apt/lists"));
            let _ = std::fs::create_dir_all(rootfs.join("var/lib/apt/lists/partial"));
            Ok::<_, AgentError>(format!("recipe: FROM {} + {} steps", recipe.from, recipe.steps.len()))
        }
        .await;
        match result {
            Ok(source) => self.install_built(name, &scratch, source, Some(digest), progress),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                Err(e)
            }
        }
    }

    /// Measures the image in `scratch`, writes its `image.json` and renames it into place.
    fn install_built(
        &self,
        name: &str,
        scratch: &Path,
        source: String,
        recipe_sha256: Option<String>,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<ImageInfo, AgentError> {
        let rootfs = scratch.join("rootfs");
        for dir in ["workspace", "proc", "sys", "dev", "tmp"] {
            let _ = std::fs::create_dir_all(rootfs.join(dir));
        }
        progress("measuring image size");
        let info = ImageInfo {
            name: name.to_owned(),
            built_at: chrono::Utc::now().timestamp(),
            source,
            size_bytes: dir_size(&rootfs),
            recipe_sha256,
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
        std::fs::rename(scratch, &target).map_err(AgentError::io("installing", &target))?;
        progress(&format!("image {name} built"));
        Ok(info)
    }
}

/// SHA-256 over a recipe and the contents of the files it copies.
fn recipe_digest(text: &str, recipe: &pinacle_config::dockerfile::Recipe, context: &RecipeContext) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(text.as_bytes());
    for copy in recipe.copies() {
        for src in &copy.sources {
            h.update(src.as_bytes());
            match context {
                RecipeContext::Template(t) => {
                    if let Some(f) = t.file(src.strip_prefix("files/").unwrap_or(src)) {
                        h.update(f.contents.as_bytes());
                    }
                }
                RecipeContext::Dir(dir) => {
                    if let Ok(bytes) = std::fs::read(dir.join(src)) {
                        h.update(&bytes);
                    }
                }
            }
        }
    }
    hex::encode(h.finalize())
}

/// Runs `cmd`, sending its output lines to `progress`; an error with the
/// last lines when it fails.
async fn run_logged(cmd: &mut Command, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<(), AgentError> {
    // stdout and stderr share one pipe, so lines keep their order
    let (r, w) = nix::unistd::pipe().map_err(|e| AgentError::ImageBuild(format!("pipe: {e}")))?;
    let w2 = w.try_clone().map_err(|e| AgentError::ImageBuild(format!("pipe: {e}")))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2))
        .spawn()
        .map_err(|e| AgentError::ImageBuild(format!("cannot run {cmd:?}: {e}")))?;
    // the parent's copies of the write end must go, or the reader never ends
    let std_cmd = cmd.as_std_mut();
    std_cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut tail: Vec<String> = Vec::new();
    let mut lines = BufReader::new(tokio::fs::File::from_std(std::fs::File::from(r))).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        progress(&line);
        tail.push(line);
        if tail.len() > 15 {
            tail.remove(0);
        }
    }
    let status = child.wait().await.map_err(|e| AgentError::ImageBuild(e.to_string()))?;
    if !status.success() {
        return Err(AgentError::ImageBuild(format!("{status}:\n{}", tail.join("\n"))));
    }
    Ok(())
}

/// Runs a recipe's `RUN` in `rootfs`, in a private mount namespace (so its
/// `/proc` and `/dev` mounts go away with it) with the host's resolv.conf.
async fn run_in_chroot(
    rootfs: &Path,
    cmd: &str,
    workdir: &str,
    env: &[(String, String)],
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), AgentError> {
    // Earlier steps may have made any directory of the image a link: the
    // files the build adds are written inside the image, never through it.
    let tree = crate::safe_fs::Tree::open(rootfs).map_err(AgentError::io("opening", rootfs))?;
    let resolv = Path::new("etc/resolv.conf");
    let saved = tree.read_file(resolv, 1 << 20).ok().flatten();
    let _ = tree.remove_file(resolv);
    if let Ok(host) = std::fs::read("/etc/resolv.conf") {
        let _ = tree.write_file(resolv, &host, 0o644);
    }
    // The host's trust store and proxy settings apply to the build (an
    // organisation's TLS-inspecting proxy, say), not to the image.
    let build_ca = Path::new("run/pinacle-build-ca.crt");
    let host_ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let ca = std::fs::read(host_ca).is_ok_and(|pem| tree.write_file(build_ca, &pem, 0o644).is_ok());
    const SCRIPT: &str =
        "mount -t proc proc \"$R/proc\" && mount --rbind /dev \"$R/dev\" && exec chroot \"$R\" /bin/sh -c 'cd \"$WORKDIR\" && eval \"$RUN\"'";
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--fork", "/bin/sh", "-c", SCRIPT])
        .env_clear()
        .env("R", rootfs)
        .env("RUN", cmd)
        .env("WORKDIR", workdir)
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LANG", "C.UTF-8");
    if ca {
        for var in ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "npm_config_cafile", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"] {
            command.env(var, "/run/pinacle-build-ca.crt");
        }
    }
    for var in ["http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"] {
        if let Some(v) = std::env::var_os(var) {
            command.env(var, v);
        }
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let result = run_logged(&mut command, progress).await;
    let _ = tree.remove_file(build_ca);
    let _ = tree.remove_file(resolv);
    if let Some(saved) = saved {
        let _ = tree.write_file(resolv, &saved, 0o644);
    }
    result.map_err(|e| AgentError::ImageBuild(format!("RUN {cmd}: {e}")))
}

/// Copies a recipe's `COPY` sources into `rootfs`. A destination ending in
/// `/` (or several sources) is a directory.
fn copy_into(rootfs: &Path, copy: &pinacle_config::dockerfile::Copy, context: &RecipeContext) -> Result<(), AgentError> {
    let dest_rel = copy.dest.trim_start_matches('/');
    if dest_rel.split('/').any(|c| c == "..") {
        return Err(AgentError::ImageBuild(format!("COPY destination {} leaves the image", copy.dest)));
    }
    let as_dir = copy.dest.ends_with('/') || copy.sources.len() > 1;
    let tree = crate::safe_fs::Tree::open(rootfs).map_err(AgentError::io("opening", rootfs))?;
    for src in &copy.sources {
        let file_name = Path::new(src).file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let dest = if as_dir { Path::new(dest_rel).join(&file_name) } else { PathBuf::from(dest_rel) };
        let contents: Vec<u8> = match context {
            RecipeContext::Template(t) => {
                let rel = src.strip_prefix("files/").unwrap_or(src);
                t.file(rel)
                    .ok_or_else(|| AgentError::ImageBuild(format!("COPY {src}: not a file of template {}", t.id)))?
                    .contents
                    .as_bytes()
                    .to_vec()
            }
            RecipeContext::Dir(dir) => {
                if src.split('/').any(|c| c == "..") || src.starts_with('/') {
                    return Err(AgentError::ImageBuild(format!("COPY {src}: sources must stay inside {}", dir.display())));
                }
                std::fs::read(dir.join(src)).map_err(AgentError::io("reading", dir.join(src)))?
            }
        };
        tree.write_file(&dest, &contents, 0o644).map_err(AgentError::io("writing", rootfs.join(&dest)))?;
    }
    Ok(())
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

/// A Debian rootfs of release `suite` from debootstrap (minbase plus
/// [`BASE_PACKAGES`]).
async fn build_debian_base(rootfs: &Path, suite: &str, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<String, AgentError> {
    let mirror = std::env::var("PINACLE_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_owned());
    progress(&format!("debootstrap {suite} from {mirror}"));
    let mut child = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", BASE_PACKAGES.join(",")))
        .arg(suite)
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
    Ok(format!("debootstrap {suite} ({mirror}) + {}", BASE_PACKAGES.join(" ")))
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
        assert!(err.to_string().contains("buildable images: base, base-bookworm, busybox"), "{err}");
        assert!(store.rootfs("../etc").is_none());
    }
}
