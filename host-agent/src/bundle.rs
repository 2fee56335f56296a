//! The OCI bundle (`config.json`) of a pod.
//!
//! Start from the runtime-spec defaults (the same as `runc spec`: own pid,
//! net, ipc, uts, mount and cgroup namespaces, masked and read-only kernel
//! paths, `noNewPrivileges`), then apply the pod's tier limits, a Docker-like
//! minimal capability set without `NET_RAW` and `MKNOD`, and the workspace
//! mount.

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResourcesBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec,
};
use pinacle_orchestrator::{PodRecord, RuntimeKind};

use crate::AgentError;

/// CFS period used for CPU quotas, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The pod's first process when no supervisor binary is available: waits
/// for SIGTERM and exits cleanly on it. Works with BusyBox and Debian alike.
pub const INIT_SCRIPT: &str =
    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// Capabilities granted inside a pod: Docker's default set less `NET_RAW`
/// and `MKNOD`. Enough to install packages as root in the pod, nothing that
/// reaches the host.
pub const POD_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::Setfcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::AuditWrite,
];

/// The environment every pod process starts with.
pub fn pod_env(pod: &PodRecord) -> Vec<String> {
    vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        "HOME=/root".to_owned(),
        "TERM=xterm-256color".to_owned(),
        "LANG=C.UTF-8".to_owned(),
        format!("PINACLE_POD={}", pod.name),
    ]
}

/// What a gVisor sandbox may use on top of its tier's memory: the sentry's
/// own memory. The pod's processes are held to the tier's memory by the
/// supervisor's memory guard; the host's limit on the sandbox stays the
/// backstop.
pub const GVISOR_MEMORY_SLACK: u64 = 256 << 20;

/// Open-file limit pods get: 65536, or the agent's own hard limit if lower
/// (a runtime cannot raise it beyond that).
pub fn nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    getrlimit(Resource::RLIMIT_NOFILE).map(|(_, hard)| hard.min(65_536)).unwrap_or(1024)
}

/// Builds the OCI spec of `pod` with `rootfs` as `/`, `workspace` bound at
/// `/workspace`, at most `nofile` open files per process, and `extra_env`
/// (`NAME=value`, the pod's secrets) after the standard environment.
/// Commands exec'd into the pod inherit the same environment.
pub fn pod_spec(
    pod: &PodRecord,
    rootfs: &Path,
    workspace: &Path,
    nofile: u64,
    extra_env: &[String],
    netns: Option<&Path>,
    supervisor: Option<(&Path, &crate::supervisor::SupervisorDirs)>,
) -> Result<Spec, AgentError> {
    let err = |e: oci_spec::OciSpecError| AgentError::Bundle(e.to_string());
    let limits = pod.tier.limits();
    let caps: HashSet<Capability> = POD_CAPABILITIES.iter().copied().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .build()
        .map_err(err)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(match supervisor {
            Some(_) => vec![pinacle_supervisor::paths::BINARY.to_owned()],
            None => vec!["/bin/sh".to_owned(), "-c".to_owned(), INIT_SCRIPT.to_owned()],
        })
        .env(pod_env(pod).into_iter().chain(extra_env.iter().cloned()).collect::<Vec<_>>())
        .cwd("/workspace")
        .no_new_privileges(true)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(nofile)
            .soft(nofile)
            .build()
            .map_err(err)?])
        .build()
        .map_err(err)?;
    let sandbox_memory = match pod.runtime {
        RuntimeKind::Gvisor => limits.memory_bytes + GVISOR_MEMORY_SLACK,
        RuntimeKind::Youki => limits.memory_bytes,
    };
    let resources = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .quota(i64::from(limits.vcpus) * CPU_PERIOD_US as i64)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(err)?,
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(sandbox_memory as i64)
                .swap(sandbox_memory as i64)
                .build()
                .map_err(err)?,
        )
        .pids(LinuxPidsBuilder::default().limit(i64::from(limits.pids)).build().map_err(err)?)
        .build()
        .map_err(err)?;
    let defaults = oci_spec::runtime::Linux::default();
    let namespaces: Vec<_> = defaults
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|mut n| {
            // the pod's prepared network namespace, joined by path
            if let (oci_spec::runtime::LinuxNamespaceType::Network, Some(path)) = (n.typ(), netns) {
                n.set_path(Some(path.to_path_buf()));
            }
            n
        })
        .collect();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(defaults.masked_paths().clone().unwrap_or_default())
        .readonly_paths(defaults.readonly_paths().clone().unwrap_or_default())
        .resources(resources)
        .cgroups_path(format!("/pinacle/{}", pod.sandbox_id()))
        .build()
        .map_err(err)?;
    let mut mounts: Vec<_> = oci_spec::runtime::get_default_mounts()
        .into_iter()
        // cgroup mounts differ between runtimes and hybrid hosts; pods do not need them.
        .filter(|m| m.typ().as_deref() != Some("cgroup"))
        .collect();
    mounts.push(
        MountBuilder::default()
            .destination("/workspace")
            .typ("bind")
            .source(workspace)
            .options(vec!["rbind".to_owned(), "rw".to_owned()])
            .build()
            .map_err(err)?,
    );
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec!["nosuid".into(), "nodev".into(), "mode=1777".into(), "size=512m".into()])
            .build()
            .map_err(err)?,
    );
    if let Some((binary, dirs)) = supervisor {
        use pinacle_supervisor::paths;
        let bind = |source: &Path, destination: &str, mode: &str| {
            MountBuilder::default()
                .destination(destination)
                .typ("bind")
                .source(source)
                .options(vec!["rbind".to_owned(), mode.to_owned(), "nosuid".to_owned(), "nodev".to_owned()])
                .build()
                .map_err(err)
        };
        mounts.push(bind(binary, paths::BINARY, "ro")?);
        mounts.push(bind(&dirs.etc, paths::CONFIG_DIR, "ro")?);
        mounts.push(bind(&dirs.run, paths::RUN_DIR, "rw")?);
    }
    let mut spec = Spec::default();
    spec.set_hostname(Some(pod.name.to_string()))
        .set_root(Some(RootBuilder::default().path(rootfs).readonly(false).build().map_err(err)?))
        .set_process(Some(process))
        .set_mounts(Some(mounts))
        .set_linux(Some(linux));
    Ok(spec)
}

/// Binds the pod's persistent home directory at `/root`.
pub fn add_home(spec: &mut Spec, home: &Path) -> Result<(), AgentError> {
    let mount = MountBuilder::default()
        .destination("/root")
        .typ("bind")
        .source(home)
        .options(vec!["rbind".to_owned(), "rw".to_owned(), "nosuid".to_owned(), "nodev".to_owned()])
        .build()
        .map_err(|e| AgentError::Bundle(e.to_string()))?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Drops the network namespace from `spec`: the sandbox then shares the
/// network namespace of the process that starts it.
pub fn inherit_network_namespace(spec: &mut Spec) {
    if let Some(linux) = spec.linux_mut() {
        if let Some(ns) = linux.namespaces_mut() {
            ns.retain(|n| n.typ() != oci_spec::runtime::LinuxNamespaceType::Network);
        }
    }
}

/// Writes `spec` to `{bundle}/config.json` (atomically: temp file + rename),
/// readable by root only: it holds the pod's secrets.
pub fn write_bundle(bundle: &Path, spec: &Spec) -> Result<(), AgentError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = bundle.join("config.json.tmp");
    let target = bundle.join("config.json");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(AgentError::io("writing", &tmp))?;
    serde_json::to_writer(std::io::BufWriter::new(file), spec)
        .map_err(|e| AgentError::Bundle(format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &target).map_err(AgentError::io("installing", &target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinacle_orchestrator::{PodName, PodState, RuntimeKind, Tier};

    fn pod(tier: Tier) -> PodRecord {
        PodRecord {
            id: uuid::Uuid::nil(),
            name: PodName::parse("demo").unwrap(),
            owner: "admin".into(),
            state: PodState::Pending,
            image: "busybox".into(),
            template: "minimal".into(),
            tier,
            runtime: RuntimeKind::Gvisor,
            host: "local".into(),
            egress: "allow-all".into(),
            processes: Default::default(),
            snapshot_on_stop: false,
        }
    }

    #[test]
    fn tier_limits_reach_the_spec() {
        let spec = pod_spec(&pod(Tier::DevMedium), Path::new("/r"), Path::new("/w"), 1024, &[], None, None).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(200_000));
        // the test pod runs under gVisor: the sentry's slack on top of the tier
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some((4 << 30) + GVISOR_MEMORY_SLACK as i64));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 2048);
        let mut youki = pod(Tier::DevMedium);
        youki.runtime = RuntimeKind::Youki;
        let spec = pod_spec(&youki, Path::new("/r"), Path::new("/w"), 1024, &[], None, None).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(4 << 30));
        assert_eq!(spec.hostname().as_deref(), Some("demo"));
    }

    #[test]
    fn least_privilege_defaults() {
        let spec = pod_spec(&pod(Tier::DevSmall), Path::new("/r"), Path::new("/w"), 1024, &[], None, None).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().unwrap().bounding().as_ref().unwrap();
        assert!(!caps.contains(&Capability::SysAdmin));
        assert!(!caps.contains(&Capability::NetRaw));
        assert!(caps.contains(&Capability::Chown));
        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<_> = linux.namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
        for want in [
            oci_spec::runtime::LinuxNamespaceType::Pid,
            oci_spec::runtime::LinuxNamespaceType::Mount,
            oci_spec::runtime::LinuxNamespaceType::Network,
        ] {
            assert!(ns.contains(&want), "{want:?}");
        }
        assert!(linux.masked_paths().as_ref().unwrap().iter().any(|p| p == "/proc/kcore"));
        let ws = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/workspace"));
        assert_eq!(ws.unwrap().source().as_deref(), Some(Path::new("/w")));
    }
}
