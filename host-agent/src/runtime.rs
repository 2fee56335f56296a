//! Sandbox runtimes behind one trait, and a driver for runtimes that speak
//! the `runc` command line (`runsc`, and `pinacle-youki` over libcontainer).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use pinacle_orchestrator::RuntimeKind;
use tokio::process::Command;

use crate::AgentError;

/// A sandbox's state as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxStatus {
    /// The runtime knows no sandbox of that id.
    Missing,
    Created,
    Running,
    /// Its process exited; the runtime still holds its state.
    Stopped,
    /// The runtime lists it but cannot read its state (a create that was cut
    /// short). Only deleting it helps.
    Broken,
}

/// A sandbox runtime. Every method is idempotent where its name says a state
/// (`delete` of a missing sandbox succeeds).
#[async_trait]
pub trait SandboxRuntime: Send + Sync + 'static {
    /// Creates sandbox `id` from `bundle` and starts it; its main process
    /// writes stdout and stderr to `console_log`.
    /// `netns`: the pod's network namespace, when it has one (youki finds
    /// it in the bundle; runsc is started inside it).
    async fn create_and_start(&self, id: &str, bundle: &Path, console_log: &Path, netns: Option<&Path>) -> Result<(), AgentError>;
    /// The sandbox's status.
    async fn status(&self, id: &str) -> Result<SandboxStatus, AgentError>;
    /// Ids of all sandboxes this runtime holds (ours and anyone else's).
    async fn list(&self) -> Result<Vec<String>, AgentError>;
    /// Sends `signal` (a number) to all of the sandbox's processes.
    async fn kill(&self, id: &str, signal: i32) -> Result<(), AgentError>;
    /// Removes the sandbox, killing it if it runs. Succeeds if it is missing.
    async fn delete(&self, id: &str) -> Result<(), AgentError>;
    /// A command that runs `argv` inside the running sandbox, with the exit
    /// code of `argv` as its own. The caller sets up stdio and spawns it.
    /// The caller keeps the returned [`ExecCommand`] until the command ends.
    fn exec_command(&self, id: &str, cwd: &str, env: &[String], argv: &[String]) -> Result<ExecCommand, AgentError>;
}

/// A command that runs something in a sandbox, and the files it needs
/// while it runs (removed when this is dropped).
pub struct ExecCommand {
    pub command: Command,
    pub files: Vec<RemoveOnDrop>,
}

/// A file removed when dropped.
#[derive(Debug)]
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the OCI process of an exec (`argv` in `cwd` with `env`, the
/// pod's capabilities) to a new private file in `dir`: what runsc reads
/// with `--process`, so that the environment (secrets a caller passes)
/// stays off the host's command lines, which every host user can read.
fn write_exec_process(dir: &Path, cwd: &str, env: &[String], argv: &[String]) -> Result<RemoveOnDrop, AgentError> {
    use oci_spec::runtime::{LinuxCapabilitiesBuilder, ProcessBuilder};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: oci_spec::OciSpecError| AgentError::Bundle(e.to_string());
    let caps: std::collections::HashSet<_> = crate::bundle::POD_CAPABILITIES.iter().copied().collect();
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(argv.to_vec())
        .env(env.to_vec())
        .cwd(cwd)
        .no_new_privileges(true)
        .capabilities(LinuxCapabilitiesBuilder::default().bounding(caps.clone()).effective(caps.clone()).permitted(caps).build().map_err(err)?)
        .build()
        .map_err(err)?;
    let json = serde_json::to_vec(&process).map_err(|e| AgentError::Bundle(e.to_string()))?;
    let path = dir.join(format!("exec-{}.json", uuid::Uuid::new_v4().simple()));
    let guard = RemoveOnDrop(path.clone());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&path)
        .map_err(AgentError::io("writing", &path))?;
    f.write_all(&json).map_err(AgentError::io("writing", &path))?;
    Ok(guard)
}

/// Drives a runtime with a `runc`-style command line.
#[derive(Debug, Clone)]
pub struct OciCliRuntime {
    kind: RuntimeKind,
    binary: PathBuf,
    global: Vec<String>,
}

/// The only environment the agent's child processes (runtimes, `ip`,
/// `nft`, `mount`, `mkfs`) get: the agent's own may hold the platform's
/// secrets (`PINACLE_MASTER_KEY` and the like).
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command for `program` with no environment but [`CHILD_PATH`].
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().env("PATH", CHILD_PATH);
    cmd
}

/// The oldest gVisor release Pinacle runs pods with: 20240729 (Debian 13's
/// `runsc` 0.0~20240729). Older releases lack `statx`, so GNU `ls -la`,
/// `stat` and `find` fail in every pod with "Invalid argument".
pub const MIN_RUNSC_RELEASE: u32 = 20240729;

/// The release date (`YYYYMMDD`) in `runsc --version` output: Debian's
/// `runsc version 0.0~20240729.0` or upstream's `runsc version release-20240729.0`.
pub fn runsc_release(version_output: &str) -> Option<u32> {
    let line = version_output.lines().find(|l| l.starts_with("runsc version"))?;
    let version = line.trim_start_matches("runsc version").trim();
    let digits = version
        .trim_start_matches("0.0~")
        .trim_start_matches("release-")
        .split(['.', '-', '+'])
        .next()?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Checks that the `runsc` at `binary` is [`MIN_RUNSC_RELEASE`] or newer.
pub fn check_runsc(binary: &Path) -> Result<u32, AgentError> {
    let fail = |message: String| AgentError::Runtime { runtime: "runsc", op: "check", id: binary.display().to_string(), message };
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let release = runsc_release(&text).ok_or_else(|| fail(format!("cannot read its version from {:?}", text.trim())))?;
    if release < MIN_RUNSC_RELEASE {
        return Err(fail(format!(
            "release {release} is too old: pods need {MIN_RUNSC_RELEASE} or newer (older gVisor lacks statx, so `ls -la` fails in pods); \
             run scripts/setup.sh, which installs Debian 13's runsc 0.0~20240729"
        )));
    }
    Ok(release)
}

/// How long one runtime command may take before the agent gives up on it.
const RUNTIME_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

impl OciCliRuntime {
    /// gVisor's `runsc` keeping its state in `state_dir`. Pods get no network
    /// yet (loopback only) and writes go to the pod's own overlay layer on
    /// disk (`--overlay2=none`), not to memory.
    pub fn gvisor(binary: impl Into<PathBuf>, state_dir: &Path) -> Self {
        Self {
            kind: RuntimeKind::Gvisor,
            binary: binary.into(),
            global: vec![
                format!("--root={}", state_dir.display()),
                "--network=none".to_owned(),
                "--overlay2=none".to_owned(),
                // the supervisor listens on a socket in a host directory
                "--host-uds=create".to_owned(),
            ],
        }
    }

    /// youki's libcontainer through the `pinacle-youki` binary.
    pub fn youki(binary: impl Into<PathBuf>, state_dir: &Path) -> Self {
        Self {
            kind: RuntimeKind::Youki,
            binary: binary.into(),
            global: vec![format!("--root={}", state_dir.display())],
        }
    }

    fn name(&self) -> &'static str {
        match self.kind {
            RuntimeKind::Gvisor => "runsc",
            RuntimeKind::Youki => "pinacle-youki",
        }
    }

    /// [`OciCliRuntime::command`] run inside the network namespace at `ns`,
    /// with `--network=host` (the namespace's own network) for runsc.
    fn command_in_netns(&self, ns: &Path) -> Result<Command, AgentError> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(ns).map_err(AgentError::io("opening network namespace", ns))?;
        let mut cmd = clean_command(&self.binary);
        cmd.args(self.global.iter().map(|a| if a == "--network=none" { "--network=host" } else { a.as_str() }))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let fd = file.as_raw_fd();
        // SAFETY: setns and prctl are async-signal-safe; `file` outlives the
        // spawn because it moves into the closure, which the Command keeps.
        unsafe {
            cmd.pre_exec(move || {
                let _keep = &file;
                let borrowed = std::os::fd::BorrowedFd::borrow_raw(fd);
                nix::sched::setns(borrowed, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        Ok(cmd)
    }

    /// The command for sandbox `id`: inside the pod's network namespace when
    /// it has one: runsc reaches its sandbox's control server through an
    /// abstract socket, which lives in that namespace, and a youki exec
    /// inherits it (the spec names no network namespace).
    fn command_for(&self, id: &str) -> Command {
        let ns = id
            .strip_prefix("pinacle-")
            .and_then(|u| uuid::Uuid::parse_str(u).ok())
            .map(|u| Path::new(crate::network::NETNS_DIR).join(crate::network::pod_names(u).netns))
            .filter(|p| p.exists());
        if let Some(ns) = ns {
            match self.command_in_netns(&ns) {
                Ok(cmd) => return cmd,
                Err(e) => tracing::warn!(sandbox = id, error = %e, "cannot enter the pod's network namespace"),
            }
        }
        self.command()
    }

    fn command(&self) -> Command {
        let mut cmd = clean_command(&self.binary);
        cmd.args(&self.global).stdin(Stdio::null()).kill_on_drop(true);
        // A runtime command must not outlive the agent: an orphaned `create`
        // finishing after the next agent started would race its repair.
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        cmd
    }

    /// Runs a runtime command to completion, returning stdout, or the error
    /// with stderr as its message.
    async fn run(&self, op: &'static str, id: &str, args: &[&str]) -> Result<String, AgentError> {
        let fail = |message: String| AgentError::Runtime {
            runtime: self.name(),
            op,
            id: id.to_owned(),
            message,
        };
        let mut cmd = self.command_for(id);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = tokio::time::timeout(RUNTIME_COMMAND_TIMEOUT, cmd.output())
            .await
            .map_err(|_| fail(format!("timed out after {RUNTIME_COMMAND_TIMEOUT:?}")))?
            .map_err(|e| fail(format!("cannot run {}: {e}", self.binary.display())))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
        }
    }
}

#[async_trait]
impl SandboxRuntime for OciCliRuntime {
    async fn create_and_start(&self, id: &str, bundle: &Path, console_log: &Path, netns: Option<&Path>) -> Result<(), AgentError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(console_log)
            .map_err(AgentError::io("opening", console_log))?;
        let log_err = log.try_clone().map_err(AgentError::io("opening", console_log))?;
        let mut cmd = match (self.kind, netns) {
            // runsc's own netns support fails on this release, and youki
            // (libcontainer) joins a namespace by path only after making the
            // pod's user namespace, which then may not join it: start both
            // inside the pod's namespace and let the sandbox inherit it.
            (_, Some(ns)) => self.command_in_netns(ns)?,
            _ => self.command(),
        };
        cmd.arg("create")
            .arg(format!("--bundle={}", bundle.display()))
            .arg(id)
            .stdout(log)
            .stderr(log_err);
        let status = tokio::time::timeout(RUNTIME_COMMAND_TIMEOUT, cmd.status())
            .await
            .map_err(|_| AgentError::Runtime {
                runtime: self.name(),
                op: "create",
                id: id.to_owned(),
                message: format!("timed out after {RUNTIME_COMMAND_TIMEOUT:?}"),
            })?
            .map_err(AgentError::io("running", &self.binary))?;
        if !status.success() {
            return Err(AgentError::Runtime {
                runtime: self.name(),
                op: "create",
                id: id.to_owned(),
                message: format!("{status}; console log ends with: {}", tail_of(console_log, 2048)),
            });
        }
        self.run("start", id, &["start", id]).await.map(|_| ())
    }

    async fn status(&self, id: &str) -> Result<SandboxStatus, AgentError> {
        match self.run("inspect", id, &["state", id]).await {
            Ok(json) => {
                let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| AgentError::Runtime {
                    runtime: self.name(),
                    op: "inspect",
                    id: id.to_owned(),
                    message: format!("unreadable state {json:?}: {e}"),
                })?;
                Ok(match v.get("status").and_then(|s| s.as_str()) {
                    Some("running") => SandboxStatus::Running,
                    Some("created" | "creating") => SandboxStatus::Created,
                    _ => SandboxStatus::Stopped,
                })
            }
            Err(e) => {
                if self.list().await?.iter().any(|s| s == id) {
                    tracing::warn!(sandbox = id, error = %e, "sandbox listed but unreadable");
                    Ok(SandboxStatus::Broken)
                } else {
                    Ok(SandboxStatus::Missing)
                }
            }
        }
    }

    async fn list(&self) -> Result<Vec<String>, AgentError> {
        let args: &[&str] = match self.kind {
            RuntimeKind::Gvisor => &["list", "-quiet"],
            RuntimeKind::Youki => &["list"],
        };
        let out = self.run("list", "sandboxes", args).await?;
        Ok(out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
    }

    async fn kill(&self, id: &str, signal: i32) -> Result<(), AgentError> {
        let sig = signal.to_string();
        self.run("signal", id, &["kill", id, &sig]).await.map(|_| ())
    }

    async fn delete(&self, id: &str) -> Result<(), AgentError> {
        if self.status(id).await? == SandboxStatus::Missing {
            return Ok(());
        }
        self.run("delete", id, &["delete", "--force", id]).await.map(|_| ())
    }

    fn exec_command(&self, id: &str, cwd: &str, env: &[String], argv: &[String]) -> Result<ExecCommand, AgentError> {
        let mut cmd = self.command_for(id);
        cmd.arg("exec");
        if self.kind == RuntimeKind::Gvisor {
            // the whole process from a private file: no environment on argv
            let state = self.global.iter().find_map(|a| a.strip_prefix("--root=")).map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
            std::fs::create_dir_all(&state).map_err(AgentError::io("creating", &state))?;
            let file = write_exec_process(&state, cwd, env, argv)?;
            cmd.arg(format!("--process={}", file.0.display())).arg(id);
            return Ok(ExecCommand { command: cmd, files: vec![file] });
        }
        // pinacle-youki passes its own environment on: exactly the pod's
        cmd.arg(format!("--cwd={cwd}")).arg("--env-from-environ");
        cmd.env_clear().envs(env.iter().filter_map(|kv| kv.split_once('=')));
        cmd.arg(id).arg("--").args(argv);
        Ok(ExecCommand { command: cmd, files: Vec::new() })
    }
}

/// The last `max` bytes of a file, lossily decoded, for error messages.
pub fn tail_of(path: &Path, max: u64) -> String {
    String::from_utf8_lossy(&tail_bytes(path, max)).trim().to_owned()
}

/// The last `max` bytes of a regular file (a link or anything else: none).
pub fn tail_bytes(path: &Path, max: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path);
    let Ok(mut f) = opened else { return Vec::new() };
    let Ok(meta) = f.metadata() else { return Vec::new() };
    if !meta.is_file() {
        return Vec::new();
    }
    let _ = f.seek(SeekFrom::Start(meta.len().saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runsc_release_dates_are_read_from_debian_and_upstream_builds() {
        assert_eq!(runsc_release("runsc version 0.0~20240729.0\nspec: 1.2.0\n"), Some(20240729));
        assert_eq!(runsc_release("runsc version 0.0~20221219.0\nspec: 1.0.2-dev\n"), Some(20221219));
        assert_eq!(runsc_release("runsc version release-20251110.0\nspec: 1.1.0\n"), Some(20251110));
        assert_eq!(runsc_release("runsc version VERSION_MISSING\n"), None);
        assert_eq!(runsc_release(""), None);
        assert!(runsc_release("runsc version 0.0~20221219.0").unwrap() < MIN_RUNSC_RELEASE);
    }
}
