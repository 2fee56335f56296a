//! The host side of the in-pod supervisor: finding its static binary,
//! preparing each pod's configuration, secret and socket directory, and
//! the bind mounts that put them in the pod.

use std::path::{Path, PathBuf};

use pinacle_orchestrator::PodRecord;
use pinacle_supervisor::config::SupervisorConfig;
use pinacle_supervisor::{client::SupervisorClient, paths};

use crate::AgentError;

/// Whether the ELF file `bytes` needs no dynamic loader (it has no
/// `PT_INTERP` program header), so that it runs in any image.
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return false; // not a 64-bit little-endian ELF
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| bytes.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let Some(phoff) = u64_at(0x20).and_then(|v| usize::try_from(v).ok()) else { return false };
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    if phentsize < 4 {
        return false;
    }
    (0..phnum).all(|i| {
        let o = phoff.saturating_add(i.saturating_mul(phentsize));
        bytes.get(o..o + 4).is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != PT_INTERP)
    }) && phnum > 0
}

fn static_binary(path: &Path) -> Option<PathBuf> {
    let bytes = std::fs::read(path).ok()?;
    is_static_elf(&bytes).then(|| path.to_path_buf())
}

/// The static `pinacle-supervisor`: `PINACLE_SUPERVISOR`, else beside the
/// current executable, else the musl build of this source tree
/// (`target/x86_64-unknown-linux-musl/{release,debug}`), else on `PATH`.
/// Dynamically linked builds are passed over: they would not run in a
/// BusyBox image.
pub fn find_supervisor() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PINACLE_SUPERVISOR") {
        return static_binary(Path::new(&p));
    }
    const NAME: &str = "pinacle-supervisor";
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::current_exe().ok().as_deref().and_then(Path::parent) {
        candidates.push(dir.join(NAME));
        // target/{debug,release}/ and target/debug/deps/
        for up in [dir.parent(), dir.parent().and_then(Path::parent)].into_iter().flatten() {
            for profile in ["release", "debug"] {
                candidates.push(up.join("x86_64-unknown-linux-musl").join(profile).join(NAME));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(NAME)));
    }
    candidates.iter().find_map(|p| static_binary(p))
}

/// Where a pod's supervisor files live on the host.
#[derive(Debug, Clone)]
pub struct SupervisorDirs {
    /// Mounted read-only at `/.pinacle/etc`: configuration and secret (in
    /// the pod's directory: the agent's, out of the pod's reach).
    pub etc: PathBuf,
    /// Mounted read-write at `/.pinacle/run`: the socket and logs. On the
    /// pod's own disk, so that what the pod writes there counts against its
    /// disk size and can never fill the host's data filesystem.
    pub run: PathBuf,
}

impl SupervisorDirs {
    /// The directories of the pod whose directory is `pod_dir` and whose
    /// disk is mounted at `disk_root`.
    pub fn of(pod_dir: &Path, disk_root: &Path) -> Self {
        Self { etc: pod_dir.join("supervisor").join("etc"), run: disk_root.join("run") }
    }

    pub fn socket(&self) -> PathBuf {
        self.run.join(paths::SOCKET)
    }

    /// A client for the pod's supervisor, if it was set up.
    pub fn client(&self) -> Option<SupervisorClient> {
        let secret = std::fs::read_to_string(self.etc.join(paths::SECRET_FILE)).ok()?;
        Some(SupervisorClient::new(self.socket(), secret.trim()))
    }
}

fn random_hex(bytes: usize) -> Result<String, AgentError> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(AgentError::io("reading", "/dev/urandom"))?;
    Ok(hex::encode(buf))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(AgentError::io("writing", &tmp))?;
    f.write_all(bytes).map_err(AgentError::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(AgentError::io("writing", path))
}

/// Writes the pod's supervisor configuration (its environment, `env`, and
/// its processes) and a fresh control secret; makes the run directory anew
/// on the pod's disk (mounted at `disk_root`), owned like the pod's
/// `/workspace` (whoever the pod's root is on the host). Returns the
/// directories to mount.
pub fn prepare(pod: &PodRecord, pod_dir: &Path, disk_root: &Path, env: Vec<String>) -> Result<SupervisorDirs, AgentError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dirs = SupervisorDirs::of(pod_dir, disk_root);
    // the run directory of agents before it moved onto the pod's disk
    crate::rootfs::remove_tree(&pod_dir.join("supervisor").join("run"))?;
    // whatever the pod left there (links included) goes, never followed
    crate::rootfs::remove_tree(&dirs.run)?;
    for d in [&dirs.etc, &dirs.run] {
        std::fs::create_dir_all(d).map_err(AgentError::io("creating", d))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(AgentError::io("securing", d))?;
    }
    if let Ok(owner) = std::fs::metadata(disk_root.join("workspace")) {
        let (uid, gid) = (nix::unistd::Uid::from_raw(owner.uid()), nix::unistd::Gid::from_raw(owner.gid()));
        nix::unistd::chown(&dirs.run, Some(uid), Some(gid)).map_err(|e| AgentError::io("securing", &dirs.run)(e.into()))?;
    }
    let config = SupervisorConfig {
        env,
        pod: pod.processes.clone(),
        // gVisor's host OOM killer can only take the whole sandbox: the
        // supervisor picks the process instead (see `bundle::GVISOR_MEMORY_SLACK`)
        memory_limit_bytes: (pod.runtime == pinacle_orchestrator::RuntimeKind::Gvisor).then(|| pod.tier.limits().memory_bytes),
    };
    config.validate().map_err(|e| AgentError::Bundle(format!("pod processes: {e}")))?;
    let json = serde_json::to_vec_pretty(&config).map_err(|e| AgentError::Bundle(e.to_string()))?;
    write_private(&dirs.etc.join(paths::CONFIG_FILE), &json)?;
    write_private(&dirs.etc.join(paths::SECRET_FILE), random_hex(32)?.as_bytes())?;
    let _ = std::fs::remove_file(dirs.socket());
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        // this test binary is dynamically linked; /bin/busybox (busybox-static) is not
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
        if let Ok(bb) = std::fs::read("/bin/busybox") {
            assert!(is_static_elf(&bb));
        }
        assert!(!is_static_elf(b"#!/bin/sh\necho hi\n"));
        assert!(!is_static_elf(&[0x7f, b'E', b'L', b'F', 2, 1, 0, 0]));
        let mut truncated = me[..64].to_vec();
        truncated[0x38] = 200; // claims 200 program headers beyond the end
        assert!(!is_static_elf(&truncated));
    }

    #[test]
    fn preparing_writes_a_private_config_and_a_new_secret_each_time() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pod = PodRecord {
            id: uuid::Uuid::nil(),
            name: pinacle_orchestrator::PodName::parse("demo").unwrap(),
            owner: "u".into(),
            state: pinacle_orchestrator::PodState::Pending,
            image: "busybox".into(),
            template: "minimal".into(),
            tier: pinacle_orchestrator::Tier::DevSmall,
            runtime: pinacle_orchestrator::RuntimeKind::Youki,
            host: "local".into(),
            egress: "allow-all".into(),
            processes: serde_json::from_str(r#"{"processes":[{"name":"web","run":"httpd"}]}"#).unwrap(),
            snapshot_on_stop: false,
        };
        let disk = dir.path().join("disk");
        std::fs::create_dir_all(disk.join("run")).unwrap();
        std::fs::write(disk.join("run/left-over.log"), "from the last run").unwrap();
        let dirs = prepare(&pod, dir.path(), &disk, vec!["A=1".into()]).unwrap();
        assert_eq!(dirs.run, disk.join("run"), "the run directory is on the pod's disk");
        assert!(!disk.join("run/left-over.log").exists(), "made anew on each start");
        let first = dirs.client().unwrap();
        let config: SupervisorConfig = serde_json::from_slice(&std::fs::read(dirs.etc.join("supervisor.json")).unwrap()).unwrap();
        assert_eq!(config.env, vec!["A=1".to_string()]);
        assert_eq!(config.pod.processes[0].name, "web");
        for f in ["supervisor.json", "secret"] {
            assert_eq!(std::fs::metadata(dirs.etc.join(f)).unwrap().permissions().mode() & 0o777, 0o600, "{f}");
        }
        let secret = std::fs::read_to_string(dirs.etc.join("secret")).unwrap();
        prepare(&pod, dir.path(), &disk, vec![]).unwrap();
        assert_ne!(std::fs::read_to_string(dirs.etc.join("secret")).unwrap(), secret);
        assert_eq!(first.socket(), Some(dirs.socket().as_path()));
    }
}
