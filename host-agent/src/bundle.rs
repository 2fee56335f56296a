//! The OCI bundle (`config.json`) of a pod.
//!
//! Start from the runtime-spec defaults (the same as `runc spec`: own pid,
//! net, ipc, uts, mount and cgroup namespaces, masked and read-only kernel
//! paths, `noNewPrivileges`), then apply the pod's tier limits, a Docker-like
//! minimal capability set without `NET_RAW` and `MKNOD`, and the workspace
//! mount. youki pods, on the host's kernel, also get a user namespace
//! ([`POD_ID_BASE`]), the seccomp filter of [`crate::seccomp`], every device
//! refused but the runtime's allow-list, and more masked paths.

use std::collections::HashSet;
use std::path::Path;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
};
use pinacle_orchestrator::{PodRecord, RuntimeKind};

use crate::AgentError;

/// Host uid and gid that a youki pod's uid and gid 0 are (the pod's ids
/// `0..POD_ID_COUNT` are `POD_ID_BASE..POD_ID_BASE + POD_ID_COUNT` on the
/// host). Far above any range `useradd` hands out as subordinate ids.
pub const POD_ID_BASE: u32 = 1_000_000_000;
/// How many ids a youki pod has (uid and gid 0 to 65535).
pub const POD_ID_COUNT: u32 = 65_536;

/// Paths hidden from pods on top of the runtime-spec defaults (the same
/// additions as Docker's): host power meters (RAPL energy counters leak
/// what other tenants compute), interrupt counts and thermal data.
pub const EXTRA_MASKED_PATHS: &[&str] = &[
    "/sys/devices/virtual/powercap",
    "/proc/interrupts",
    "/sys/devices/system/cpu/cpu0/thermal_throttle",
    "/sys/class/powercap",
];

/// What youki pods, which see the host's /sys (read-only), must not see
/// of it: other pods' and the host's cgroups, kernel debugging, tracing
/// and security interfaces.
pub const YOUKI_MASKED_PATHS: &[&str] = &[
    "/sys/fs/cgroup",
    "/sys/kernel/debug",
    "/sys/kernel/tracing",
    "/sys/kernel/security",
    "/sys/fs/bpf",
    "/sys/fs/fuse",
    "/sys/fs/pstore",
    "/sys/kernel/config",
];

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

/// `NAME=value` entries with one entry per name: a later value replaces an
/// earlier one in its place (a process would see the first of duplicates).
pub fn merge_env(entries: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in entries {
        let name = entry.split('=').next().unwrap_or_default().to_owned();
        match out.iter_mut().find(|e| e.split('=').next() == Some(name.as_str())) {
            Some(slot) => *slot = entry,
            None => out.push(entry),
        }
    }
    out
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
        .env(merge_env(pod_env(pod).into_iter().chain(extra_env.iter().cloned())))
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
        // every device refused, then the runtime's own allow-list (null,
        // zero, full, random, urandom, tty, console, pts, ptmx, tun)
        .devices(vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().map_err(err)?])
        .build()
        .map_err(err)?;
    let defaults = oci_spec::runtime::Linux::default();
    let youki = pod.runtime == RuntimeKind::Youki;
    let mut namespaces = defaults.namespaces().clone().unwrap_or_default();
    if youki {
        // pod root is an unprivileged host uid (gVisor has its own kernel)
        namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User).build().map_err(err)?);
    }

    let mut masked = defaults.masked_paths().clone().unwrap_or_default();
    masked.extend(EXTRA_MASKED_PATHS.iter().map(|p| (*p).to_owned()));
    if youki {
        masked.extend(YOUKI_MASKED_PATHS.iter().map(|p| (*p).to_owned()));
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(masked)
        .readonly_paths(defaults.readonly_paths().clone().unwrap_or_default())
        .resources(resources)
        .cgroups_path(format!("/pinacle/{}", pod.sandbox_id()))
        .build()
        .map_err(err)?;
    if youki {
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(POD_ID_BASE)
            .size(POD_ID_COUNT)
            .build()
            .map_err(err)?;
        linux.set_uid_mappings(Some(vec![map])).set_gid_mappings(Some(vec![map]));
        linux.set_seccomp(Some(crate::seccomp::pod_profile().map_err(err)?));
    }
    let mut mounts: Vec<_> = oci_spec::runtime::get_default_mounts()
        .into_iter()
        // cgroup mounts differ between runtimes and hybrid hosts; pods do not need them.
        .filter(|m| m.typ().as_deref() != Some("cgroup"))
        .map(|m| match m.typ().as_deref() {
            // A new sysfs belongs to the network namespace's user namespace,
            // and a youki pod's network namespace (made by the agent) is the
            // host's: the kernel refuses it. The host's /sys instead, read-only
            // all the way down, with the host's cgroups and kernel interfaces
            // masked (see YOUKI_MASKED_PATHS).
            Some("sysfs") if youki => MountBuilder::default()
                .destination("/sys")
                .typ("bind")
                .source("/sys")
                .options(["rbind", "rro", "nosuid", "noexec", "nodev"].map(str::to_owned).to_vec())
                .build()
                .map_err(err),
            _ => Ok(m),
        })
        .collect::<Result<_, _>>()?;
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

fn push_mount(spec: &mut Spec, mount: oci_spec::runtime::Mount) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(mount);
    spec.set_mounts(Some(mounts));
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
    push_mount(spec, mount);
    Ok(())
}

/// Points every mount whose source lies under `from` at the same place
/// under `to` (a youki pod's directories go through their id-mapped
/// clones, see [`crate::rootfs::mount_userns_overlay`]).
pub fn remap_sources(spec: &mut Spec, from: &Path, to: &Path) {
    let Some(mounts) = spec.mounts_mut() else { return };
    for m in mounts.iter_mut() {
        let Some(rest) = m.source().as_deref().and_then(|s| s.strip_prefix(from).ok()).map(Path::to_path_buf) else {
            continue;
        };
        let new = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
        m.set_source(Some(new));
    }
}

/// Binds `file` (prepared by the agent outside the pod's trees) read-only
/// at `/etc/resolv.conf`, so the host never writes into the pod's root
/// file system for it.
pub fn bind_resolv_conf(spec: &mut Spec, file: &Path) -> Result<(), AgentError> {
    bind_file_readonly(spec, file, "/etc/resolv.conf")
}

/// Binds the host file `file` read-only at `destination` in the pod.
pub fn bind_file_readonly(spec: &mut Spec, file: &Path, destination: &str) -> Result<(), AgentError> {
    let mount = MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(file)
        .options(vec!["bind".to_owned(), "ro".to_owned(), "nosuid".to_owned(), "nodev".to_owned(), "noexec".to_owned()])
        .build()
        .map_err(|e| AgentError::Bundle(e.to_string()))?;
    push_mount(spec, mount);
    Ok(())
}

/// Binds the host directory `dir` read-only at `destination` in the pod.
pub fn bind_readonly_dir(spec: &mut Spec, dir: &Path, destination: &str) -> Result<(), AgentError> {
    let mount = MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(dir)
        .options(vec!["rbind".to_owned(), "ro".to_owned(), "nosuid".to_owned(), "nodev".to_owned()])
        .build()
        .map_err(|e| AgentError::Bundle(e.to_string()))?;
    push_mount(spec, mount);
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
     #[test]
    fn merged_environments_keep_one_entry_per_name_and_the_last_value() {
        let merged = merge_env(["PATH=/bin".to_owned(), "HOME=/root".into(), "PATH=/opt/bin:/bin".into(), "A=1".into(), "A=2=x".into()]);
        assert_eq!(merged, ["PATH=/opt/bin:/bin", "HOME=/root", "A=2=x"]);
    }

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
        let spec = pod_spec(&pod(Tier::DevMedium), Path::new("/r"), Path::new("/w"), 1024, &[], None).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(200_000));
        // the test pod runs under gVisor: the sentry's slack on top of the tier
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some((4 << 30) + GVISOR_MEMORY_SLACK as i64));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 2048);
        let mut youki = pod(Tier::DevMedium);
        youki.runtime = RuntimeKind::Youki;
        let spec = pod_spec(&youki, Path::new("/r"), Path::new("/w"), 1024, &[], None).unwrap();
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(4 << 30));
        assert_eq!(spec.hostname().as_deref(), Some("demo"));
    }

    #[test]
    fn youki_pods_get_a_user_namespace_a_syscall_filter_and_device_rules() {
        let mut youki = pod(Tier::DevSmall);
        youki.runtime = RuntimeKind::Youki;
        let spec = pod_spec(&youki, Path::new("/r"), Path::new("/w"), 1024, &[], None).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<_> = linux.namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
        assert!(ns.contains(&LinuxNamespaceType::User));
        let uid = linux.uid_mappings().as_ref().unwrap();
        assert_eq!((uid[0].container_id(), uid[0].host_id(), uid[0].size()), (0, POD_ID_BASE, POD_ID_COUNT));
        assert_eq!(linux.gid_mappings().as_ref().unwrap(), uid);
        assert!(linux.seccomp().is_some());
        let devices = linux.resources().as_ref().unwrap().devices().as_ref().unwrap();
        assert!(!devices[0].allow() && devices[0].typ().is_none(), "deny every device first");
        for p in ["/sys/devices/virtual/powercap", "/proc/keys", "/proc/kcore"] {
            assert!(linux.masked_paths().as_ref().unwrap().iter().any(|m| m == p), "{p} masked");
        }
        assert!(linux.readonly_paths().as_ref().unwrap().iter().any(|m| m == "/proc/sysrq-trigger"));
        // gVisor pods: gVisor's own kernel, no user namespace or filter in the spec
        let spec = pod_spec(&pod(Tier::DevSmall), Path::new("/r"), Path::new("/w"), 1024, &[], None).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.uid_mappings().is_none() && linux.seccomp().is_none());
    }

    #[test]
    fn mount_sources_move_to_their_id_mapped_clones() {
        let mut spec = pod_spec(&pod(Tier::DevSmall), Path::new("/r"), Path::new("/d/disk/workspace"), 1024, &[], None).unwrap();
        add_home(&mut spec, Path::new("/d/disk/home")).unwrap();
        remap_sources(&mut spec, Path::new("/d/disk"), Path::new("/p/idmap/disk"));
        let source = |dest: &str| {
            spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new(dest)).unwrap().source().clone()
        };
        assert_eq!(source("/workspace").as_deref(), Some(Path::new("/p/idmap/disk/workspace")));
        assert_eq!(source("/root").as_deref(), Some(Path::new("/p/idmap/disk/home")));
        // a sibling with the same prefix in its name is not under it
        assert_eq!(source("/proc").as_deref(), Some(Path::new("proc")));
    }

    #[test]
    fn least_privilege_defaults() {
        let spec = pod_spec(&pod(Tier::DevSmall), Path::new("/r"), Path::new("/w"), 1024, &[], None).unwrap();
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
