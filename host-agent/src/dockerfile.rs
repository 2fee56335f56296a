//! Dockerfile builds with full syntax (FROM a registry image, multi-stage,
//! ARG, ENV, COPY, WORKDIR, USER, RUN, ...) through Debian's `buildah`, into
//! the same [`pinacle_oci::Store`] that registry pulls fill.
//!
//! A build runs `buildah bud` in a private storage root (`vfs` driver, its own
//! `storage.conf`, `registries.conf`, `containers.conf`, signature policy and
//! auth file) under `{store}/builds/`, never the host's container storage.
//! Every output line goes to the caller's log. The result is pushed as an OCI
//! image layout and imported with [`pinacle_oci::Store::import_layout`] (the
//! pull's digest checks and unpacker), then the private root, buildah's
//! intermediate images with it, is removed: a failed build leaves nothing.
//!
//! `RUN` steps run user code as root, so by default they run in gVisor
//! ([`Isolation::Gvisor`]: buildah's `oci` isolation with runsc through the
//! `pinacle-runsc-build` wrapper, runsc's rootfs overlay off so the steps'
//! writes reach the image) with no network unless asked
//! ([`BuildNetwork`]). [`Isolation::Runc`] (namespaces, seccomp, dropped
//! capabilities) is there for hosts without runsc.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use pinacle_oci::{Credentials, OciError, PulledImage, Reference, Store};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// How many output lines an error keeps.
const TAIL_LINES: usize = 20;
/// Longest output line kept (the rest of a longer line is dropped).
const MAX_LINE: usize = 4096;
/// The tag of the OCI layout buildah pushes to.
const LAYOUT_TAG: &str = "build";

/// Repository prefix of images this host builds (`localhost/pinacle/NAME`):
/// pods name them pinned, and they are found in the store, never asked of a
/// registry.
pub const BUILT_REPOSITORY_PREFIX: &str = "pinacle/";

/// Repository prefix of images built for pods from their repositories.
pub use pinacle_host_api::POD_BUILDS_PREFIX;

/// Where `RUN` steps run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Isolation {
    /// gVisor (`runsc`, through `pinacle-runsc-build`): the safest for user
    /// Dockerfiles.
    #[default]
    Gvisor,
    /// runc: Linux namespaces, seccomp and dropped capabilities.
    Runc,
}

/// The network `RUN` steps (and nothing else) see. Base images are pulled by
/// buildah itself, in the network it runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BuildNetwork {
    /// Loopback only.
    #[default]
    None,
    /// The host's network (loopback services included): for the operator's
    /// own builds.
    Host,
    /// The network namespace at this path (e.g. `/var/run/netns/NAME`, one
    /// with NAT egress): buildah runs inside it (`nsenter --net`), so base
    /// image pulls use it too.
    Namespace(PathBuf),
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The build context (COPY sources).
    pub context_dir: PathBuf,
    /// The Dockerfile, relative to `context_dir` (or absolute inside it).
    pub dockerfile: PathBuf,
    /// The reference the image is recorded as, e.g.
    /// `localhost/pinacle/app:latest`; its pinned form
    /// (`localhost/pinacle/app@sha256:…`) is what pods use.
    pub name: String,
    /// `--build-arg NAME=VALUE`.
    pub build_args: Vec<(String, String)>,
    /// The stage to build (`--target`); the last one when `None`.
    pub target: Option<String>,
    /// Registries (`host[:port]`) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Credentials per registry (`host[:port]`, as in a reference).
    pub credentials: Vec<(String, Credentials)>,
    /// Where `RUN` steps run.
    pub isolation: Isolation,
    /// The network `RUN` steps see.
    pub network: BuildNetwork,
}

/// Why a build failed. Nothing is left in the store when it does.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// buildah is not installed.
    #[error("buildah is not installed: install it with `apt-get install buildah` (Debian's package)")]
    BuildahMissing,
    /// The runtime for RUN steps is missing.
    #[error("cannot run RUN steps: {0}")]
    RuntimeMissing(String),
    /// The Dockerfile path leaves the context directory.
    #[error("the Dockerfile {} is outside the build context {}", dockerfile.display(), context.display())]
    DockerfileOutsideContext {
        /// The Dockerfile as given.
        dockerfile: PathBuf,
        /// The context directory.
        context: PathBuf,
    },
    /// The context or the Dockerfile does not exist (or is not a file/directory).
    #[error("{what} {} does not exist", path.display())]
    NotFound {
        /// `build context` or `Dockerfile`.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
    },
    /// The image name is not a reference.
    #[error("`{name}` cannot name a built image: {source}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why.
        source: pinacle_oci::ReferenceError,
    },
    /// buildah rejected the Dockerfile.
    #[error("Dockerfile error{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Syntax {
        /// The line of the Dockerfile, when it could be told.
        line: Option<usize>,
        /// buildah's message.
        message: String,
    },
    /// A `FROM` image does not exist.
    #[error("base image {image} was not found: {message}")]
    BaseImageNotFound {
        /// The image as buildah names it.
        image: String,
        /// buildah's message.
        message: String,
    },
    /// A `FROM` image's registry refused the credentials.
    #[error("registry refused access to base image {image}: {message}; check the registry credentials")]
    BaseImageAuth {
        /// The image as buildah names it.
        image: String,
        /// buildah's message.
        message: String,
    },
    /// A `FROM` image's registry cannot be reached.
    #[error("cannot reach the registry of base image {image}: {message}")]
    BaseImageUnreachable {
        /// The image as buildah names it.
        image: String,
        /// buildah's message.
        message: String,
    },
    /// A `RUN` step exited non-zero.
    #[error("step `{step}` failed with exit code {exit_code}; last output:\n{}", last_lines.join("\n"))]
    RunFailed {
        /// The step as buildah prints it (`RUN make`).
        step: String,
        /// Its exit code.
        exit_code: i32,
        /// The last lines of output before the error.
        last_lines: Vec<String>,
    },
    /// Another step failed (a COPY source missing, ...).
    #[error("step `{step}` failed: {message}")]
    StepFailed {
        /// The step as buildah prints it.
        step: String,
        /// buildah's message.
        message: String,
    },
    /// buildah failed otherwise.
    #[error("buildah failed ({status}): {message}; last output:\n{}", last_lines.join("\n"))]
    Buildah {
        /// Its exit status.
        status: String,
        /// Its last `Error:` line, if any.
        message: String,
        /// The last lines of output.
        last_lines: Vec<String>,
    },
    /// A Dockerfile feature refused here (the line, and what).
    #[error("Dockerfile line {line}: {message}")]
    Unsupported {
        /// The line of the Dockerfile.
        line: usize,
        /// What is refused, and why.
        message: String,
    },
    /// The built image could not be stored.
    #[error("storing the built image: {0}")]
    Import(#[from] OciError),
    /// Local I/O.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { what, path, source }
}

/// Builds `req` and stores the image in `store` (recorded as `req.name`);
/// every line buildah prints goes to `log`.
pub async fn build(store: &Store, req: &BuildRequest, log: &(dyn Fn(&str) + Send + Sync)) -> Result<PulledImage, BuildError> {
    let reference = Reference::parse(&req.name).map_err(|source| BuildError::InvalidName { name: req.name.clone(), source })?;
    let (context, dockerfile) = resolve_paths(&req.context_dir, &req.dockerfile)?;
    let text = std::fs::read(&dockerfile).map_err(io_err("reading", &dockerfile))?;
    refuse_run_mounts(&String::from_utf8_lossy(&text))?;
    let buildah = crate::agent::find_binary("buildah").ok_or(BuildError::BuildahMissing)?;
    let runtime = match req.isolation {
        Isolation::Gvisor => {
            let wrapper = crate::agent::find_binary("pinacle-runsc-build").ok_or_else(|| {
                BuildError::RuntimeMissing(
                    "pinacle-runsc-build is not installed next to pinacle or on PATH (build the workspace; scripts/setup.sh installs it)".into(),
                )
            })?;
            if std::env::var_os("PINACLE_RUNSC").is_none() && crate::agent::find_binary("runsc").is_none() {
                return Err(BuildError::RuntimeMissing("runsc is not installed (apt-get install runsc)".into()));
            }
            wrapper
        }
        Isolation::Runc => {
            crate::agent::find_binary("runc").ok_or_else(|| BuildError::RuntimeMissing("runc is not installed (apt-get install runc)".into()))?
        }
    };
    let work = BuildDir::create(store.dir(), &runtime)?;
    let result = run_build(store, req, &reference, &context, &dockerfile, &buildah, &runtime, &work, log).await;
    work.remove(&buildah).await;
    result
}

/// Refuses `RUN --mount` (and `ONBUILD RUN --mount`): Debian 12's buildah
/// (1.28) lets such mounts reach the host's file system (CVE-2024-1753,
/// CVE-2024-9675, CVE-2024-11218), and builds run tenants' Dockerfiles.
pub fn refuse_run_mounts(text: &str) -> Result<(), BuildError> {
    // the escape character: `\`, or what a leading `# escape=` directive says
    let mut escape = '\\';
    for line in text.lines() {
        let t = line.trim();
        let Some(directive) = t.strip_prefix('#') else { break };
        let directive = directive.trim();
        if let Some(v) = directive.strip_prefix("escape=").or_else(|| directive.strip_prefix("escape =")) {
            escape = v.trim().chars().next().unwrap_or('\\');
        } else if !directive.to_ascii_lowercase().starts_with("syntax") && !directive.to_ascii_lowercase().starts_with("check") {
            break;
        }
    }
    let mut logical = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        if logical.is_empty() {
            start = i + 1;
            if line.trim_start().starts_with('#') {
                continue;
            }
        } else if line.trim_start().starts_with('#') {
            // comment lines inside a continued instruction are dropped
            continue;
        }
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix(escape) {
            logical.push_str(body);
            logical.push(' ');
            continue;
        }
        logical.push_str(trimmed);
        check_instruction(&logical, start)?;
        logical.clear();
    }
    if !logical.is_empty() {
        check_instruction(&logical, start)?;
    }
    Ok(())
}

fn check_instruction(instruction: &str, line: usize) -> Result<(), BuildError> {
    let mut words = instruction.split_whitespace();
    let mut first = words.next().unwrap_or_default().to_ascii_uppercase();
    if first == "ONBUILD" {
        first = words.next().unwrap_or_default().to_ascii_uppercase();
    }
    if first != "RUN" {
        return Ok(());
    }
    for w in words.take_while(|w| w.starts_with("--")) {
        if w.to_ascii_lowercase().starts_with("--mount") {
            return Err(BuildError::Unsupported {
                line,
                message: "RUN --mount is not supported (with this host's buildah a mount can reach the host's files); COPY what the step needs instead".into(),
            });
        }
    }
    Ok(())
}

/// The canonical context directory and Dockerfile; the Dockerfile (symlinks
/// resolved) must be a file inside the context.
pub fn resolve_paths(context_dir: &Path, dockerfile: &Path) -> Result<(PathBuf, PathBuf), BuildError> {
    let context = std::fs::canonicalize(context_dir).map_err(|_| BuildError::NotFound { what: "build context", path: context_dir.to_path_buf() })?;
    if !context.is_dir() {
        return Err(BuildError::NotFound { what: "build context", path: context_dir.to_path_buf() });
    }
    let outside = || BuildError::DockerfileOutsideContext { dockerfile: dockerfile.to_path_buf(), context: context_dir.to_path_buf() };
    let joined = context.join(dockerfile);
    // `..` that climbs out is refused even when it would climb back in.
    if dockerfile.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        let lexical = normalize(&joined);
        if !lexical.starts_with(&context) {
            return Err(outside());
        }
    }
    let file = match std::fs::canonicalize(&joined) {
        Ok(f) => f,
        Err(_) if !normalize(&joined).starts_with(&context) => return Err(outside()),
        Err(_) => return Err(BuildError::NotFound { what: "Dockerfile", path: dockerfile.to_path_buf() }),
    };
    if !file.starts_with(&context) {
        return Err(outside());
    }
    if !file.is_file() {
        return Err(BuildError::NotFound { what: "Dockerfile", path: dockerfile.to_path_buf() });
    }
    Ok((context, file))
}

/// `path` with `.` and `..` resolved lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn run_build(
    store: &Store,
    req: &BuildRequest,
    reference: &Reference,
    context: &Path,
    dockerfile: &Path,
    buildah: &Path,
    runtime: &Path,
    work: &BuildDir,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<PulledImage, BuildError> {
    let tag = "localhost/pinacle-build/image:build";
    let mut bud = work.buildah(buildah, &req.network);
    bud.arg("bud")
        .arg("--isolation")
        .arg("oci")
        .arg("--runtime")
        .arg(runtime)
        .arg("--retry")
        .arg("0")
        .arg("--format")
        .arg("oci")
        .arg("--signature-policy")
        .arg(work.dir.join("policy.json"));
    let network = match req.network {
        BuildNetwork::None => "none",
        BuildNetwork::Host | BuildNetwork::Namespace(_) => "host",
    };
    bud.arg("--network").arg(network);
    // The runtime's state is private to the build (so a cancelled build's
    // containers can be found and killed).
    bud.arg("--runtime-flag").arg(format!("root={}", work.dir.join("runtime").display()));
    if req.isolation == Isolation::Gvisor {
        bud.arg("--runtime-flag").arg(format!("network={network}")).arg("--runtime-flag").arg("overlay2=none");
    }
    bud.arg("--authfile").arg(work.dir.join("auth.json"));
    for (k, v) in &req.build_args {
        bud.arg("--build-arg").arg(format!("{k}={v}"));
    }
    if let Some(t) = &req.target {
        bud.arg("--target").arg(t);
    }
    bud.arg("-f").arg(dockerfile).arg("-t").arg(tag).arg(context);
    work.write_config(req)?;
    log(&format!("building {} from {}", reference, dockerfile.display()));
    let out = run_logged(&mut bud, log).await?;
    if !out.success {
        return Err(classify(&out, dockerfile));
    }
    let layout = work.dir.join("layout");
    let mut push = work.buildah(buildah, &BuildNetwork::None);
    push.arg("push").arg("--signature-policy").arg(work.dir.join("policy.json")).arg(tag).arg(format!("oci:{}:{LAYOUT_TAG}", layout.display()));
    let out = run_logged(&mut push, log).await?;
    if !out.success {
        return Err(BuildError::Buildah { status: out.status, message: out.error_line.unwrap_or_default(), last_lines: out.tail.into() });
    }
    let name = reference.to_string();
    let progress = |p: pinacle_oci::PullProgress| {
        if let Some(line) = crate::registry::progress_line(&p) {
            log(&line.replace("pulling", "storing").replace("pulled", "stored"));
        }
    };
    Ok(store.import_layout(&layout, LAYOUT_TAG, &name, &progress).await?)
}

/// A build's private directory: buildah's storage, configuration and the
/// exported layout; removed (with everything buildah left, mounts
/// included) when done, and on drop if a build is cancelled. Directories of
/// builds whose process is gone are removed by the next build.
struct BuildDir {
    dir: PathBuf,
    removed: bool,
    /// The OCI runtime RUN steps use (its state is in `{dir}/runtime`).
    runtime: PathBuf,
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        if !self.removed {
            // Cancelled: buildah is killed, but a RUN step's sandbox lives on
            // in its own session. Kill and delete every container of this
            // build's private runtime state, then remove everything.
            let root = self.dir.join("runtime");
            let ids = std::process::Command::new(&self.runtime).arg("--root").arg(&root).args(["list", "--quiet"]).stderr(Stdio::null()).output();
            if let Ok(out) = ids {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace().take(64) {
                    let run = |args: &[&str]| {
                        let _ =
                            std::process::Command::new(&self.runtime).arg("--root").arg(&root).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
                    };
                    run(&["kill", id, "KILL"]);
                    run(&["delete", "--force", id]);
                }
            }
            remove_now(&self.dir);
        }
    }
}

fn remove_now(dir: &Path) {
    if let Err(e) = crate::rootfs::remove_tree(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a build's directory");
    }
}

/// Removes `builds/build-PID-*` directories of processes that are gone.
fn remove_stale(builds: &Path) {
    let Ok(entries) = std::fs::read_dir(builds) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix("build-")).and_then(|n| n.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                remove_now(&entry.path());
            }
        }
    }
}

static BUILD_COUNTER: AtomicU64 = AtomicU64::new(0);

impl BuildDir {
    fn create(store_dir: &Path, runtime: &Path) -> Result<BuildDir, BuildError> {
        use std::os::unix::fs::DirBuilderExt;
        let builds = store_dir.join("builds");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&builds).map_err(io_err("creating", &builds))?;
        remove_stale(&builds);
        let dir = builds.join(format!("build-{}-{}", std::process::id(), BUILD_COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(io_err("creating", &dir))?;
        let work = BuildDir { dir, removed: false, runtime: runtime.to_path_buf() };
        for sub in ["root", "runroot", "tmp", "runtime"] {
            let p = work.dir.join(sub);
            std::fs::create_dir(&p).map_err(io_err("creating", &p))?;
        }
        Ok(work)
    }

    /// The private configuration: storage in this directory, only the
    /// given registries insecure, short names from Docker Hub, any image
    /// accepted (digests are checked on import), and the credentials.
    fn write_config(&self, req: &BuildRequest) -> Result<(), BuildError> {
        let write = |name: &str, text: String| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let p = self.dir.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(io_err("writing", &p))
        };
        write(
            "storage.conf",
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
                toml_string(&self.dir.join("root").to_string_lossy()),
                toml_string(&self.dir.join("runroot").to_string_lossy())
            ),
        )?;
        let mut registries = String::from("unqualified-search-registries = [\"docker.io\"]\nshort-name-mode = \"permissive\"\n");
        for r in &req.insecure_registries {
            registries.push_str(&format!("\n[[registry]]\nlocation = {}\ninsecure = true\n", toml_string(r)));
        }
        write("registries.conf", registries)?;
        write("containers.conf", String::new())?;
        write("policy.json", r#"{"default":[{"type":"insecureAcceptAnything"}]}"#.to_string())?;
        // Always present (buildah checks the file it is pointed at).
        let mut auths = serde_json::Map::new();
        for (registry, creds) in &req.credentials {
            if let Credentials::Basic { username, password } = creds {
                auths.insert(registry.clone(), serde_json::json!({ "auth": base64(format!("{username}:{password}").as_bytes()) }));
            }
        }
        write("auth.json", serde_json::json!({ "auths": auths }).to_string())?;
        Ok(())
    }

    /// `buildah --root … --runroot … --storage-driver vfs` with the private
    /// configuration in its environment (inside `network`'s namespace when
    /// one is named).
    fn buildah(&self, buildah: &Path, network: &BuildNetwork) -> Command {
        let mut cmd = match network {
            BuildNetwork::Namespace(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(buildah);
                c
            }
            _ => Command::new(buildah),
        };
        cmd.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--storage-driver")
            .arg("vfs")
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.dir.join("registries.conf"))
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .env("TMPDIR", self.dir.join("tmp"))
            .env_remove("BUILDAH_ISOLATION")
            .env_remove("BUILDAH_LAYERS")
            .env_remove("BUILDAH_FORMAT");
        cmd
    }

    /// Removes buildah's containers and images, then the directory (after
    /// unmounting anything left under it).
    async fn remove(mut self, buildah: &Path) {
        let quiet = |mut c: Command| async move {
            let _ = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().await;
        };
        let mut rm = self.buildah(buildah, &BuildNetwork::None);
        rm.args(["rm", "--all"]);
        quiet(rm).await;
        let mut rmi = self.buildah(buildah, &BuildNetwork::None);
        rmi.args(["rmi", "--all", "--force"]);
        quiet(rmi).await;
        let dir = self.dir.clone();
        if tokio::task::spawn_blocking(move || remove_now(&dir)).await.is_ok() {
            self.removed = true;
        }
    }
}

fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a buildah command did.
struct Output {
    success: bool,
    status: String,
    /// The last lines (at most [`TAIL_LINES`]).
    tail: VecDeque<String>,
    /// The last line starting with `Error: `, without it.
    error_line: Option<String>,
}

/// Runs `cmd` with stdout and stderr on one pipe (lines keep their order),
/// each line (at most [`MAX_LINE`] bytes kept) to `log`.
async fn run_logged(cmd: &mut Command, log: &(dyn Fn(&str) + Send + Sync)) -> Result<Output, BuildError> {
    let pipe_err = |e: nix::errno::Errno| BuildError::Io { what: "creating a pipe for", path: PathBuf::from("buildah"), source: e.into() };
    let (r, w) = nix::unistd::pipe().map_err(pipe_err)?;
    let w2 = w.try_clone().map_err(io_err("creating a pipe for", Path::new("buildah")))?;
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::from(w)).stderr(Stdio::from(w2)).kill_on_drop(true).spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BuildError::BuildahMissing
        } else {
            BuildError::Io { what: "running", path: PathBuf::from(cmd.as_std().get_program()), source: e }
        }
    })?;
    // The parent's copies of the write end must go, or the reader never ends.
    cmd.as_std_mut().stdout(Stdio::null()).stderr(Stdio::null());
    let mut reader = BufReader::new(tokio::fs::File::from_std(std::fs::File::from(r)));
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut error_line = None;
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if buf.is_empty() {
            break;
        }
        let (chunk, consumed, ended) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        if chunk.len() > room {
            overlong = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(consumed);
        if ended {
            let mut text = String::from_utf8_lossy(&line).into_owned();
            if overlong {
                text.push_str(" …");
            }
            log(&text);
            if let Some(e) = text.strip_prefix("Error: ") {
                error_line = Some(e.to_owned());
            }
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
            line.clear();
            overlong = false;
        }
    }
    if !line.is_empty() {
        let text = String::from_utf8_lossy(&line).into_owned();
        log(&text);
        if let Some(e) = text.strip_prefix("Error: ") {
            error_line = Some(e.to_owned());
        }
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
    }
    let status = child.wait().await.map_err(io_err("waiting for", Path::new("buildah")))?;
    Ok(Output { success: status.success(), status: status.to_string(), tail, error_line })
}

/// Turns buildah's final `Error:` line into a typed error.
fn classify(out: &Output, dockerfile: &Path) -> BuildError {
    let last_lines: Vec<String> = out.tail.iter().filter(|l| !l.starts_with("Error: ")).cloned().collect();
    let Some(message) = out.error_line.clone() else {
        return BuildError::Buildah { status: out.status.clone(), message: String::new(), last_lines };
    };
    if let Some(rest) = message.strip_prefix("building at STEP \"") {
        // `STEP "RUN x": detail`; the step itself may hold `": `, so the
        // longest step that starts a line of the Dockerfile wins.
        let text = std::fs::read_to_string(dockerfile).unwrap_or_default();
        let cuts: Vec<usize> = rest.match_indices("\": ").map(|(i, _)| i).collect();
        let cut = cuts.iter().rev().copied().find(|&i| text.lines().any(|l| l.trim().starts_with(rest[..i].trim()))).or(cuts.first().copied());
        let (step, detail) = match cut {
            Some(i) => (rest[..i].to_owned(), rest[i + 3..].to_owned()),
            None => (rest.trim_end_matches('"').to_owned(), String::new()),
        };
        if let Some(code) = detail.rsplit_once("exit status ").and_then(|(_, c)| c.trim().parse::<i32>().ok()) {
            if step.starts_with("RUN") {
                let last_lines = last_lines.into_iter().filter(|l| !l.starts_with("time=\"") && !l.starts_with("error running container")).collect();
                return BuildError::RunFailed { step, exit_code: code, last_lines };
            }
        }
        if is_syntax(&detail) {
            let detail = detail.split(" &imagebuilder").next().unwrap_or(&detail).to_owned();
            return BuildError::Syntax { line: line_of(dockerfile, &step), message: detail };
        }
        return BuildError::StepFailed { step, message: detail };
    }
    if is_syntax(&message) {
        let line = message.split_whitespace().next().filter(|w| w.chars().all(|c| c.is_ascii_uppercase())).and_then(|instr| line_of(dockerfile, instr));
        return BuildError::Syntax { line, message };
    }
    if let Some(image) = base_image(&message) {
        let lower = message.to_ascii_lowercase();
        if ["manifest unknown", "name unknown", "not found", "no such image"].iter().any(|s| lower.contains(s)) {
            return BuildError::BaseImageNotFound { image, message };
        }
        if ["unauthorized", "authentication required", "denied", "authentication failed"].iter().any(|s| lower.contains(s)) {
            return BuildError::BaseImageAuth { image, message };
        }
        if ["pinging container registry", "connection refused", "no such host", "i/o timeout", "network is unreachable"].iter().any(|s| lower.contains(s)) {
            return BuildError::BaseImageUnreachable { image, message };
        }
    }
    BuildError::Buildah { status: out.status.clone(), message, last_lines }
}

fn is_syntax(message: &str) -> bool {
    [
        "Unknown instruction",
        "dockerfile parse error",
        "requires at least",
        "requires exactly",
        "requires either",
        "no contents in",
        "was not found in the provided Dockerfile",
        "Syntax error",
        "unexpected end of statement",
    ]
    .iter()
    .any(|s| message.contains(s))
}

/// The image named in a pull error (`…initializing source docker://IMAGE: …`).
fn base_image(message: &str) -> Option<String> {
    let at = message.find("docker://")? + "docker://".len();
    let rest = &message[at..];
    let end = rest.find(": ").unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// The 1-based line of the Dockerfile that starts with `step` (as buildah
/// prints it: arguments may be trimmed, so the instruction and its first
/// words are compared).
fn line_of(dockerfile: &Path, step: &str) -> Option<usize> {
    let text = std::fs::read_to_string(dockerfile).ok()?;
    let want: Vec<String> = step.split_whitespace().map(str::to_ascii_uppercase).take(3).collect();
    let first = want.first()?.clone();
    text.lines()
        .position(|l| {
            let got: Vec<String> = l.split_whitespace().map(str::to_ascii_uppercase).take(want.len()).collect();
            got == want || (want.len() == 1 && got.first() == Some(&first))
        })
        .or_else(|| text.lines().position(|l| l.split_whitespace().next().map(str::to_ascii_uppercase).as_ref() == Some(&first)))
        .map(|i| i + 1)
}

#[cfg(test)]
mod run_mount_tests {
    use super::*;

    fn line(text: &str) -> Option<usize> {
        match refuse_run_mounts(text) {
            Ok(()) => None,
            Err(BuildError::Unsupported { line, .. }) => Some(line),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn run_mounts_are_refused_however_written() {
        assert_eq!(line("FROM debian\nRUN --mount=type=bind,source=/,target=/h cat /h/etc/shadow\n"), Some(2));
        assert_eq!(line("FROM debian\nrun   --network=none --MOUNT=type=cache,target=/x true\n"), Some(2));
        assert_eq!(line("FROM debian\nRUN \\\n  --mount=type=bind,from=x,source=l \\\n  true\n"), Some(2), "continued lines");
        assert_eq!(line("FROM debian\nONBUILD RUN --mount=type=secret,id=a true\n"), Some(2));
        assert_eq!(line("# escape=`\nFROM debian\nRUN `\n --mount=type=bind,source=/ true\n"), Some(3), "another escape character");
    }

    #[test]
    fn everything_else_passes() {
        assert_eq!(line("FROM debian\nRUN echo --mount=not-a-flag\nCOPY --from=a /x /y\nRUN --network=none true\n# RUN --mount=x\n"), None);
        assert_eq!(line(""), None);
        assert_eq!(line("RUN \\\n# a comment inside\n  echo ok\n"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn a_dockerfile_outside_the_context_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        std::fs::create_dir_all(ctx.join("sub")).unwrap();
        std::fs::write(tmp.path().join("Dockerfile"), "FROM x\n").unwrap();
        std::fs::write(ctx.join("sub/Dockerfile"), "FROM x\n").unwrap();
        std::os::unix::fs::symlink("../Dockerfile", ctx.join("link")).unwrap();
        for bad in ["../Dockerfile", "link", "/etc/passwd", "sub/../../Dockerfile"] {
            let err = resolve_paths(&ctx, Path::new(bad)).unwrap_err();
            assert!(matches!(err, BuildError::DockerfileOutsideContext { .. }), "{bad}: {err:?}");
        }
        let (c, f) = resolve_paths(&ctx, Path::new("sub/Dockerfile")).unwrap();
        assert_eq!(f, c.join("sub/Dockerfile"));
        let err = resolve_paths(&ctx, Path::new("absent")).unwrap_err();
        assert!(matches!(err, BuildError::NotFound { what: "Dockerfile", .. }), "{err:?}");
        let err = resolve_paths(&ctx, Path::new("sub")).unwrap_err();
        assert!(matches!(err, BuildError::NotFound { what: "Dockerfile", .. }), "{err:?}");
    }

    fn out(lines: &[&str]) -> Output {
        Output {
            success: false,
            status: "exit status: 1".into(),
            tail: lines.iter().map(|s| s.to_string()).collect(),
            error_line: lines.iter().rev().find_map(|l| l.strip_prefix("Error: ")).map(str::to_owned),
        }
    }

    #[test]
    fn buildah_errors_become_typed_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let df = tmp.path().join("Dockerfile");
        std::fs::write(&df, "FROM a AS b\n\nFROBNICATE x\nRUN make all\nRUN echo \"a\": b\n").unwrap();
        let e = classify(&out(&["out", "Error: building at STEP \"RUN make all\": while running runtime: exit status 7"]), &df);
        assert!(matches!(&e, BuildError::RunFailed { step, exit_code: 7, last_lines } if step == "RUN make all" && last_lines == &["out"]), "{e:?}");
        let e = classify(&out(&["Error: building at STEP \"RUN echo \"a\": b\": exit status 2"]), &df);
        assert!(matches!(&e, BuildError::RunFailed { step, exit_code: 2, .. } if step == "RUN echo \"a\": b"), "{e:?}");
        let e = classify(&out(&["Error: building at STEP \"FROBNICATE \": Build error: Unknown instruction: \"FROBNICATE\" &imagebuilder.Step{}"]), &df);
        assert!(matches!(&e, BuildError::Syntax { line: Some(3), message } if message == "Build error: Unknown instruction: \"FROBNICATE\""), "{e:?}");
        let e = classify(&out(&["Error: creating build container: initializing source docker://127.0.0.1:5/nope:1: reading manifest 1 in 127.0.0.1:5/nope: manifest unknown: manifest unknown"]), &df);
        assert!(matches!(&e, BuildError::BaseImageNotFound { image, .. } if image == "127.0.0.1:5/nope:1"), "{e:?}");
        let e = classify(&out(&["Error: creating build container: initializing source docker://127.0.0.1:5/x:1: pinging container registry 127.0.0.1:5: Get \"http://127.0.0.1:5/v2/\": dial tcp 127.0.0.1:5: connect: connection refused"]), &df);
        assert!(matches!(&e, BuildError::BaseImageUnreachable { .. }), "{e:?}");
        let e = classify(
            &out(&["Error: building at STEP \"COPY missing /x\": checking on sources under \"/c\": copier: stat: \"/missing\": no such file or directory"]),
            &df,
        );
        assert!(matches!(&e, BuildError::StepFailed { step, .. } if step == "COPY missing /x"), "{e:?}");
        let e = classify(&out(&["Error: FROM requires either one argument, or three: FROM <source> [as <name>]"]), &df);
        assert!(matches!(&e, BuildError::Syntax { line: Some(1), .. }), "{e:?}");
    }
}
