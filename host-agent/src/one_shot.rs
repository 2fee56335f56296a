//! One-shot gVisor sandboxes: a program run once on standard input, its
//! standard output read back, the sandbox removed after. The AI router's
//! subprocess modules run here, with the runtime pods use (`runsc`) and
//! tighter bounds than a pod's:
//!
//! - no network at all (`--network=none`: loopback only, no egress);
//! - the image's root filesystem read-only, the program's files read-only
//!   at `/module`, a small `/tmp` in memory, nothing else of the host;
//! - uid and gid 65534 (nobody), no capabilities, `no_new_privileges`;
//! - memory, process count and one CPU capped by the spec's resources;
//! - wall time: past `timeout` the sandbox is killed and deleted;
//! - standard output read up to `max_output` bytes (more is an error), and
//!   the first 4 KiB of standard error kept for the error message.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::images::ImageStore;
use crate::runtime::CHILD_PATH;

/// One run.
#[derive(Debug, Clone)]
pub struct OneShotJob<'a> {
    /// An image built on this host (`busybox`, `python`, …).
    pub image: &'a str,
    /// Mounted read-only at `/module`.
    pub files: &'a Path,
    pub command: &'a [String],
    pub memory_mb: u32,
    pub timeout: Duration,
    pub max_output: usize,
}

/// Why a run did not answer.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error("ran past its time limit of {0:?} and was killed")]
    Timeout(Duration),
    #[error("wrote more than {0} bytes to standard output")]
    OutputTooLarge(usize),
    #[error("exited with status {status}: {stderr}")]
    Exited { status: i32, stderr: String },
    #[error("image {0:?} is not built on this host (pinacle image build {0})")]
    NoImage(String),
    #[error("runsc: {0}")]
    Runtime(String),
    /// As many sandboxes as allowed run already.
    #[error("{0} module sandboxes run already; try again shortly")]
    Busy(usize),
}

/// Bytes of standard error kept.
const STDERR_KEPT: usize = 4096;
/// Processes a run may have at once.
const PIDS: i64 = 64;
/// Sandboxes that may run at once on a host: each holds up to its
/// module's memory; past this a call is refused at once, not queued.
pub const MAX_RUNNING: usize = 8;

/// Runs one-shot sandboxes with `runsc`.
#[derive(Debug, Clone)]
pub struct OneShotSandbox {
    runsc: PathBuf,
    state: PathBuf,
    work: PathBuf,
    images: ImageStore,
    running: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// One slot of [`MAX_RUNNING`], given back when dropped.
struct Slot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl OneShotSandbox {
    /// Sandboxes with `runsc`, keeping runtime state in `state` and bundles
    /// in `work` (both made, mode 0700), on root filesystems from `images`.
    pub fn new(runsc: PathBuf, state: PathBuf, work: PathBuf, images: ImageStore) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        for d in [&state, &work] {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(d)?;
        }
        // runsc resolves relative paths against the bundle: every path it sees is absolute
        let (state, work) = (std::fs::canonicalize(&state)?, std::fs::canonicalize(&work)?);
        // what a crashed server left: bundles, and sandboxes of its runs
        if let Ok(entries) = std::fs::read_dir(&work) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if id.starts_with("pinacle-oneshot-") {
                    let me = Self { runsc: runsc.clone(), state: state.clone(), work: work.clone(), images: images.clone(), running: Default::default() };
                    me.remove_sandbox(&id);
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Self { runsc, state, work, images, running: Default::default() })
    }

    /// Kills and deletes sandbox `id` (nothing if it is gone).
    fn remove_sandbox(&self, id: &str) {
        let _ = self.runsc().args(["kill", "--all", id, "9"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = self.runsc().args(["delete", "--force", id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }

    /// Whether `image` is built here.
    pub fn check_image(&self, image: &str) -> Result<PathBuf, OneShotError> {
        self.images.rootfs(image).ok_or_else(|| OneShotError::NoImage(image.to_owned()))
    }

    fn runsc(&self) -> Command {
        let mut cmd = Command::new(&self.runsc);
        cmd.env_clear().env("PATH", CHILD_PATH).arg(format!("--root={}", self.state.display())).args(["--network=none", "--overlay2=none"]);
        cmd
    }

    /// Runs `job` on `input` to its end (blocking).
    pub fn run(&self, job: &OneShotJob<'_>, input: &[u8]) -> Result<Vec<u8>, OneShotError> {
        use std::sync::atomic::Ordering;
        if self.running.fetch_add(1, Ordering::AcqRel) >= MAX_RUNNING {
            self.running.fetch_sub(1, Ordering::AcqRel);
            return Err(OneShotError::Busy(MAX_RUNNING));
        }
        let _slot = Slot(self.running.clone());
        let rootfs = std::fs::canonicalize(self.check_image(job.image)?).map_err(|e| OneShotError::Runtime(e.to_string()))?;
        let files = std::fs::canonicalize(job.files).map_err(|e| OneShotError::Runtime(format!("{}: {e}", job.files.display())))?;
        let job = &OneShotJob { files: &files, ..job.clone() };
        let id = format!("pinacle-oneshot-{}", uuid::Uuid::new_v4().simple());
        let bundle = self.work.join(&id);
        std::fs::create_dir(&bundle).map_err(|e| OneShotError::Runtime(format!("creating {}: {e}", bundle.display())))?;
        let result = self.run_in(&id, &bundle, &rootfs, job, input);
        // whatever happened, nothing of the run stays
        self.remove_sandbox(&id);
        let _ = std::fs::remove_dir_all(&bundle);
        result
    }

    fn run_in(&self, id: &str, bundle: &Path, rootfs: &Path, job: &OneShotJob<'_>, input: &[u8]) -> Result<Vec<u8>, OneShotError> {
        let spec = spec(rootfs, job);
        write_private(&bundle.join("config.json"), &serde_json::to_vec(&spec).unwrap_or_default()).map_err(|e| OneShotError::Runtime(format!("writing the bundle: {e}")))?;
        let mut cmd = self.runsc();
        cmd.args(["run", "--bundle"]).arg(bundle).arg(id).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from));
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| OneShotError::Runtime(format!("starting {}: {e}", self.runsc.display())))?;
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            if let Some(mut s) = stdin {
                // a program that reads nothing closes the pipe: not an error of ours
                let _ = s.write_all(&input);
            }
        });
        let max = job.max_output;
        let out_reader = std::thread::spawn(move || read_bounded(stdout, max + 1));
        let err_reader = std::thread::spawn(move || read_bounded(stderr, STDERR_KEPT));
        let deadline = started + job.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Ok(s),
                Ok(None) if Instant::now() >= deadline => break Err(OneShotError::Timeout(job.timeout)),
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => break Err(OneShotError::Runtime(e.to_string())),
            }
        };
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                // the sandbox first (it may outlive `runsc run`), then runsc;
                // the pipes' threads end once both are gone and are not waited for
                self.remove_sandbox(id);
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let _ = writer.join();
        let out = out_reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            return Err(OneShotError::Exited { status: code, stderr: String::from_utf8_lossy(&err).trim().to_owned() });
        }
        if out.len() > max {
            return Err(OneShotError::OutputTooLarge(max));
        }
        Ok(out)
    }
}

/// The OCI spec of a run (see the module's docs for what it grants).
pub fn spec(rootfs: &Path, job: &OneShotJob<'_>) -> serde_json::Value {
    let memory = i64::from(job.memory_mb.max(1)) << 20;
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 65534, "gid": 65534},
            "args": job.command,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp", "LANG=C.UTF-8"],
            "cwd": "/module",
            "noNewPrivileges": true,
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "inheritable": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "module",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=16m"]},
            {"destination": "/module", "type": "bind", "source": job.files, "options": ["rbind", "ro", "nosuid", "nodev"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
            "resources": {
                "memory": {"limit": memory},
                "pids": {"limit": PIDS},
                "cpu": {"quota": 100_000, "period": 100_000}
            }
        }
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

/// The first `max` bytes of `source`; the rest is read and dropped (so the
/// writer never blocks on a full pipe).
fn read_bounded(source: Option<impl Read>, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(mut s) = source {
        let _ = (&mut s).take(max as u64).read_to_end(&mut out);
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_grants_no_network_no_privilege_and_read_only_files() {
        let cmd = vec!["/module/run".to_owned()];
        let job = OneShotJob { image: "busybox", files: Path::new("/srv/m"), command: &cmd, memory_mb: 32, timeout: Duration::from_secs(1), max_output: 10 };
        let s = spec(Path::new("/img/rootfs"), &job);
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["process"]["user"]["uid"], 65534);
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(s["process"]["capabilities"]["bounding"], serde_json::json!([]));
        assert!(s["linux"]["namespaces"].as_array().map(|a| a.iter().any(|n| n["type"] == "network")).unwrap_or(false), "its own (empty) network namespace");
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 32 << 20);
        let module = s["mounts"].as_array().and_then(|m| m.iter().find(|m| m["destination"] == "/module")).cloned().unwrap_or_default();
        assert!(module["options"].as_array().map(|o| o.iter().any(|x| x == "ro")).unwrap_or(false));
        assert_eq!(s["mounts"].as_array().map(Vec::len), Some(3), "nothing else of the host");
    }
}
