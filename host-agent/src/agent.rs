//! The host agent proper: settles pods into their recorded state, runs
//! commands in them, and reconciles what the runtime holds with what the
//! control plane records.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinacle_orchestrator::pod::pod_id_of_sandbox;
use pinacle_orchestrator::{PodEvent, PodJob, PodRecord, PodState, RuntimeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::runtime::{OciCliRuntime, SandboxRuntime, SandboxStatus};
use crate::{bundle, rootfs, AgentError, ControlPlane, ControlPlaneError, DataLayout, ImageStore};

/// How a host agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This host's id; its queue is `host.{id}`.
    pub host_id: String,
    /// Where images, pods and volumes live.
    pub data: DataLayout,
    /// `runsc`, if gVisor is to be offered.
    pub runsc: Option<PathBuf>,
    /// `pinacle-youki`, if libcontainer is to be offered.
    pub youki: Option<PathBuf>,
    /// How long a pod's processes get to exit after SIGTERM on stop.
    pub stop_grace: Duration,
    /// How often to compare the runtime with the control plane.
    pub reconcile_interval: Duration,
    /// Pod networking; `None`: pods get loopback only.
    pub network: Option<crate::network::NetworkConfig>,
    /// The static `pinacle-supervisor` every pod starts as its first
    /// process; `None`: pods run a bare init and exec goes through the
    /// runtime.
    pub supervisor: Option<PathBuf>,
    /// How many times its free space the data filesystem may be promised
    /// to pods' (sparse) disks: 1 never promises more than it holds.
    pub disk_overcommit: f64,
    /// Registries (`host[:port]`) pulled from over plain HTTP; every other
    /// registry is reached over HTTPS only.
    pub insecure_registries: Vec<String>,
    /// The control plane's URL, where the platform gateway forwards pods'
    /// platform requests (see [`crate::platform`]); `None`: pods get no
    /// platform services.
    pub platform_upstream: Option<String>,
    /// Roots to trust for an `https://` upstream besides the system's.
    pub platform_ca: Option<Vec<u8>>,
}

impl AgentConfig {
    /// Defaults for a host with data in `data`: runtimes found next to the
    /// current executable or on `PATH`.
    pub fn new(host_id: impl Into<String>, data: impl Into<PathBuf>) -> Self {
        Self {
            host_id: host_id.into(),
            data: DataLayout::new(data),
            runsc: find_binary("runsc"),
            youki: find_binary("pinacle-youki"),
            stop_grace: Duration::from_secs(5),
            reconcile_interval: Duration::from_secs(10),
            network: None,
            supervisor: crate::supervisor::find_supervisor(),
            disk_overcommit: 1.0,
            insecure_registries: insecure_registries_from_env(),
            platform_upstream: None,
            platform_ca: None,
        }
    }
}

/// `PINACLE_INSECURE_REGISTRIES`: comma-separated `host[:port]` names of
/// registries reached over plain HTTP (a registry on loopback, say).
pub fn insecure_registries_from_env() -> Vec<String> {
    std::env::var("PINACLE_INSECURE_REGISTRIES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Finds `name` next to the current executable, then on `PATH`.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?;
        // test binaries live in target/*/deps; the real binaries one level up
        [dir.join(name), dir.parent()?.join(name)].into_iter().find(|p| p.is_file())
    });
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file())
        })
    })
}

/// A command to run in a pod, and its output (wire types of the host contract).
pub use pinacle_host_api::{ExecOutput, ExecRequest};

/// How long one git step of a pod's repository set-up may take.
pub const CLONE_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// What a git step in a pod did.
#[derive(Debug)]
struct GitRun {
    code: i32,
    stdout: Vec<u8>,
    /// The last line of its stderr.
    last: String,
}

impl GitRun {
    /// The failure in the user's terms: git's last line, or what exited how.
    fn message(&self, what: &str) -> String {
        match (self.code, self.last.is_empty()) {
            (127, _) => "git is not installed in the pod's image".into(),
            (_, false) => self.last.clone(),
            (code, true) => format!("{what} exited with status {code}"),
        }
    }
}

/// Most lines of a pod image build's output recorded as pod events.
pub const MAX_BUILD_EVENT_LINES: usize = 2000;

/// In a pod's directory: its image was built from its repository (holds
/// the pinned image).
pub const BUILT_MARKER: &str = "image-built";

/// Pods' image builds this host runs at once.
pub const POD_BUILDS_AT_ONCE: usize = 2;

/// Longest a pod's image build may take (then it is cancelled: its
/// sandboxes killed, its files removed) and the pod fails.
pub const POD_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Largest build context taken out of a pod (it is written, then
/// unpacked, on the pod's own disk).
pub const MAX_CONTEXT_BYTES: u64 = 2 << 30;

/// How long a pod's supervisor may take to answer after the sandbox starts.
pub const SUPERVISOR_START_TIMEOUT: Duration = Duration::from_secs(20);

/// What one reconcile pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub orphans_removed: Vec<String>,
    pub restarted: Vec<Uuid>,
    pub resumed: Vec<Uuid>,
    pub leftovers_removed: Vec<PathBuf>,
    /// What could not be repaired this pass (retried on the next).
    pub errors: Vec<String>,
}

/// Drives the sandboxes of one host.
pub struct HostAgent {
    config: AgentConfig,
    control: Arc<dyn ControlPlane>,
    runtimes: HashMap<RuntimeKind, Arc<dyn SandboxRuntime>>,
    images: ImageStore,
    locks: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    ready: AtomicBool,
    /// One image build at a time (pods waiting for the same image share it).
    image_builds: tokio::sync::Mutex<()>,
    /// Images pulled from registries, content-addressed.
    oci: Arc<pinacle_oci::Store>,
    /// Pods' image builds running at once (the rest wait their turn).
    pod_builds: tokio::sync::Semaphore,
}

impl HostAgent {
    /// An agent with the runtimes `config` names. Fails if it names none.
    pub fn new(config: AgentConfig, control: Arc<dyn ControlPlane>) -> Result<Self, AgentError> {
        let mut runtimes: HashMap<RuntimeKind, Arc<dyn SandboxRuntime>> = HashMap::new();
        if let Some(runsc) = &config.runsc {
            crate::runtime::check_runsc(runsc)?;
            let state = config.data.runtime_state("runsc");
            runtimes.insert(RuntimeKind::Gvisor, Arc::new(OciCliRuntime::gvisor(runsc, &state)));
        }
        if let Some(youki) = &config.youki {
            let state = config.data.runtime_state("youki");
            runtimes.insert(RuntimeKind::Youki, Arc::new(OciCliRuntime::youki(youki, &state)));
        }
        Self::with_runtimes(config, control, runtimes)
    }

    /// An agent with the given runtimes (for tests and other runtimes).
    pub fn with_runtimes(
        config: AgentConfig,
        control: Arc<dyn ControlPlane>,
        runtimes: HashMap<RuntimeKind, Arc<dyn SandboxRuntime>>,
    ) -> Result<Self, AgentError> {
        if runtimes.is_empty() {
            return Err(AgentError::Runtime {
                runtime: "none",
                op: "find",
                id: config.host_id.clone(),
                message: "no sandbox runtime found: install runsc (apt-get install runsc) or build pinacle-youki".into(),
            });
        }
        for dir in [config.data.pods(), config.data.volumes(), config.data.images()] {
            std::fs::create_dir_all(&dir).map_err(AgentError::io("creating", &dir))?;
        }
        let images = ImageStore::new(config.data.images());
        let oci_dir = config.data.root().join("oci");
        let oci = pinacle_oci::Store::new(&oci_dir, config.insecure_registries.clone())
            .map_err(|e| AgentError::ImageBuild(format!("opening the registry image store {}: {e}", oci_dir.display())))?;
        Ok(Self {
            config,
            control,
            runtimes,
            images,
            locks: Mutex::default(),
            ready: AtomicBool::new(false),
            image_builds: tokio::sync::Mutex::new(()),
            pod_builds: tokio::sync::Semaphore::new(POD_BUILDS_AT_ONCE),
            oci: Arc::new(oci),
        })
    }

    /// This host's id.
    pub fn host_id(&self) -> &str {
        &self.config.host_id
    }

    /// The image store of this host.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// Runtimes this host offers, gVisor first.
    pub fn runtimes(&self) -> Vec<RuntimeKind> {
        [RuntimeKind::Gvisor, RuntimeKind::Youki]
            .into_iter()
            .filter(|k| self.runtimes.contains_key(k))
            .collect()
    }

    /// Whether the first reconcile pass has finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn runtime(&self, kind: RuntimeKind) -> Result<&Arc<dyn SandboxRuntime>, AgentError> {
        self.runtimes.get(&kind).ok_or_else(|| AgentError::Runtime {
            runtime: "none",
            op: "find",
            id: kind.to_string(),
            message: format!("runtime {kind} is not available on host {}", self.config.host_id),
        })
    }

    fn lock_of(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id).or_default().clone()
    }

    /// Drops the pod's lock entry once nobody holds or waits for it.
    fn forget_lock(&self, id: Uuid) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.get(&id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&id);
        }
    }

    /// Waits for exclusive work on pod `id`.
    async fn lock_pod(&self, id: Uuid) -> PodLock<'_> {
        let guard = self.lock_of(id).lock_owned().await;
        PodLock { agent: self, id, guard: Some(guard) }
    }

    /// Exclusive work on pod `id`, unless someone is at it already.
    fn try_lock_pod(&self, id: Uuid) -> Option<PodLock<'_>> {
        let guard = self.lock_of(id).try_lock_owned().ok()?;
        Some(PodLock { agent: self, id, guard: Some(guard) })
    }

    /// Runs one job. Stale jobs (the pod moved on) are dropped; failures are
    /// recorded on the pod, so only control-plane trouble is an error here.
    pub async fn handle(&self, job: PodJob) -> Result<(), AgentError> {
        let _lock = self.lock_pod(job.pod_id()).await;
        self.handle_locked(job).await
    }

    async fn handle_locked(&self, job: PodJob) -> Result<(), AgentError> {
        let id = job.pod_id();
        let Some(mut pod) = self.control.pod(id).await? else {
            tracing::debug!(%id, ?job, "job for unknown pod dropped");
            return Ok(());
        };
        if !job.expected_state().contains(&pod.state) {
            tracing::debug!(%id, ?job, state = %pod.state, "stale job dropped");
            return Ok(());
        }
        let started = Instant::now();
        match job {
            PodJob::Provision(_) | PodJob::Start(_) => {
                let fresh = pod.state == PodState::Pending;
                if fresh {
                    let msg = format!("provisioning on host {} with {}", self.config.host_id, pod.runtime);
                    pod.state = match self.control.record(id, PodEvent::ProvisionStarted, &msg).await {
                        Ok(state) => state,
                        // deleted meanwhile: the delete job takes over
                        Err(ControlPlaneError::Transition(_)) => return Ok(()),
                        Err(e) => return Err(e.into()),
                    };
                }
                // an image still to be built from the repository: the first
                // sandbox (the template's image) only clones; its steps and
                // processes wait for the built image
                let first = match self.control.image_setup(id).await {
                    Ok(setup) if setup.build.is_some() && !self.config.data.pod(id).join(BUILT_MARKER).exists() => {
                        let mut bare = pod.clone();
                        bare.processes.install.clear();
                        bare.processes.processes.clear();
                        bare
                    }
                    _ => pod.clone(),
                };
                match self.ensure_running(&first, fresh).await {
                    Ok(()) => match self.settle_repository(&pod).await {
                        Ok(restart) => match self.settle_build(&pod, restart).await {
                            Ok(()) => {
                                let msg = format!("sandbox running ({} ms)", started.elapsed().as_millis());
                                self.record_if_current(id, PodEvent::SandboxRunning, &msg).await
                            }
                            Err(e) => {
                                // the clone stays; the next start builds again
                                if let Err(stop) = self.ensure_stopped(&pod).await {
                                    tracing::warn!(pod = %pod.id, error = %stop, "stopping after a failed image build");
                                }
                                tracing::warn!(pod = %pod.id, name = %pod.name, error = %e, "image not built");
                                self.record_if_current(id, PodEvent::Failed, &e.to_string()).await
                            }
                        },
                        Err(e) => {
                            // nothing half-done: no sandbox, an empty workspace
                            if let Err(stop) = self.ensure_stopped(&pod).await {
                                tracing::warn!(pod = %pod.id, error = %stop, "stopping after a failed clone");
                            }
                            tracing::warn!(pod = %pod.id, name = %pod.name, error = %e, "repository not set up");
                            self.record_if_current(id, PodEvent::Failed, &e.to_string()).await
                        }
                    },
                    Err(e) => self.fail(&pod, e).await,
                }
            }
            PodJob::Stop(_) => match self.ensure_stopped(&pod).await {
                Ok(()) => {
                    let mut msg = format!("sandbox stopped ({} ms)", started.elapsed().as_millis());
                    if pod.snapshot_on_stop {
                        match self.take_snapshot(&pod, "", true).await {
                            Ok(s) => {
                                msg.push_str(&format!("; snapshot {} ({} bytes)", s.id, s.size_bytes));
                                // where the project's memory stands goes with it
                                if let Err(e) = self.control.snapshot_taken(pod.id, &s.id).await {
                                    tracing::warn!(pod = %pod.id, snapshot = %s.id, error = %e, "the automatic snapshot's memory position was not recorded");
                                }
                            }
                            Err(e) => msg.push_str(&format!("; automatic snapshot failed: {e}")),
                        }
                    }
                    self.record_if_current(id, PodEvent::SandboxStopped, &msg).await
                }
                Err(e) => self.fail(&pod, e).await,
            },
            PodJob::Delete(_) => match self.remove(&pod).await {
                Ok(()) => self.record_if_current(id, PodEvent::Removed, "sandbox, layer and volume removed").await,
                Err(e) => {
                    // Deleting cannot fail into another state: leave it
                    // deleting and let the next reconcile pass retry.
                    tracing::warn!(%id, error = %e, "delete failed; will retry");
                    Ok(())
                }
            },
        }
    }

    /// Records `event` unless the pod moved on meanwhile (then the job that
    /// moved it takes over).
    async fn record_if_current(&self, id: Uuid, event: PodEvent, msg: &str) -> Result<(), AgentError> {
        match self.control.record(id, event, msg).await {
            Ok(_) | Err(ControlPlaneError::Transition(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn fail(&self, pod: &PodRecord, error: AgentError) -> Result<(), AgentError> {
        tracing::warn!(pod = %pod.id, name = %pod.name, %error, "pod operation failed");
        self.record_if_current(pod.id, PodEvent::Failed, &error.to_string()).await
    }

    /// Makes the pod's sandbox run: storage, overlay, bundle, sandbox.
    /// `fresh`: the pod was pending until this job, so no earlier attempt can
    /// have left a sandbox and the runtime need not be asked.
    async fn ensure_running(&self, pod: &PodRecord, fresh: bool) -> Result<(), AgentError> {
        let runtime = self.runtime(pod.runtime)?;
        let sid = pod.sandbox_id();
        if !fresh {
            match runtime.status(&sid).await? {
                SandboxStatus::Running => return Ok(()),
                SandboxStatus::Missing => {}
                SandboxStatus::Created | SandboxStatus::Stopped | SandboxStatus::Broken => runtime.delete(&sid).await?,
            }
        }
        let t0 = Instant::now();
        let lower = self.image_for(pod).await?;
        let dir = self.config.data.pod(pod.id);
        std::fs::create_dir_all(&dir).map_err(AgentError::io("creating", &dir))?;
        let volume = self.config.data.volume(pod.id);
        let disk = crate::storage::ensure_mounted(&volume, pod.tier.limits().disk_bytes, &pod.image, Some(&lower.join("root")), self.config.disk_overcommit).await?;
        let disk_ms = t0.elapsed().as_millis();
        let workspace = disk.workspace();
        let root = dir.join("rootfs");
        // a repository fills the workspace instead of the template's files
        let from_repository = self.control.repository(pod.id).await?.is_some();
        let prepared = async {
            if !from_repository {
                write_starter_files(pod, &workspace)?;
            }
            // the pod's own key; a ~/.ssh the pod made unusable is its business
            if let Err(e) = crate::pod_keys::ensure(&disk.home(), pod.name.as_str()) {
                tracing::warn!(pod = %pod.name, error = %e, "the pod's SSH key could not be made");
            }
            let attachment = match &self.config.network {
                Some(net) => Some(net.attach(pod.id, &dir, &self.config.data.pods(), &pod.egress).await?),
                None => None,
            };
            match pod.runtime {
                // pod root is an unprivileged host uid: the root file system,
                // disk and supervisor directories through id-mapped clones
                RuntimeKind::Youki => {
                    let helper = self.config.youki.as_deref().ok_or_else(|| AgentError::Mount("pinacle-youki is not configured".into()))?;
                    let etc = crate::supervisor::SupervisorDirs::of(&dir, &disk.root).etc;
                    rootfs::mount_userns_overlay(
                        helper,
                        &lower,
                        &disk.root,
                        &[("etc", &etc)],
                        &root,
                        self.config.data.root(),
                        bundle::POD_ID_BASE,
                        bundle::POD_ID_COUNT,
                    )
                    .await?;
                }
                RuntimeKind::Gvisor => rootfs::mount_overlay(&lower, &disk.upper(), &disk.work(), &root)?,
            }
            Ok::<_, AgentError>(attachment)
        }
        .await;
        let attachment = match prepared {
            Ok(a) => a,
            Err(e) => {
                // leave no mount behind
                let _ = crate::storage::unmount(&volume).await;
                return Err(e);
            }
        };
        let started = async {
            // youki pods: a file outside the pod's trees, bound read-only
            // (the host could not create files in a user-namespace overlay)
            let resolv_conf = dir.join("resolv.conf");
            match (&attachment, pod.runtime) {
                (Some(_), RuntimeKind::Youki) => write_host_resolv_conf(&resolv_conf)?,
                (Some(_), RuntimeKind::Gvisor) => write_resolv_conf(&root)?,
                (None, _) => {}
            }
            let netns = match (&attachment, pod.runtime) {
                (Some(a), _) => Some(a.netns_path()),
                // runsc's --network=none already gives a working loopback
                (None, RuntimeKind::Youki) => Some(crate::network::loopback_namespace(pod.id).await?),
                (None, RuntimeKind::Gvisor) => None,
            };
            // the image's own Env (a registry image's config), then the
            // pod's secrets: later entries win
            let mut env = self.image_env(&pod.image).await;
            // devcontainer features: fetched and laid out here, installed
            // by the pod's first install step; their containerEnv joins
            // the pod's environment
            let setup = self.control.image_setup(pod.id).await?;
            let features_dir = crate::pod_features::dir_of(&dir);
            // only when this start runs the step installing them
            let with_features = !setup.features.is_empty() && pod.processes.install.iter().any(|s| s.name == "features");
            if with_features {
                let registry_env = self.control.registry_environment(pod.id).await?;
                let (report, events) = self.reporter(pod.id);
                let prepared = crate::pod_features::prepare(&self.oci, &setup.features, &registry_env, &features_dir, &report).await;
                drop(report);
                let _ = events.await;
                let container_env = prepared?;
                let base = bundle::merge_env(bundle::pod_env(pod).into_iter().chain(env.iter().cloned()));
                env.extend(crate::pod_features::container_env_entries(&container_env, &base));
            }
            env.extend(self.control.pod_environment(pod.id).await?);
            // the platform services (memory): a token, where it is, the name
            let platform = attachment.is_some() && self.platform_gateway().is_some() && self.refresh_platform_token(pod.id, &dir).await;
            // the pod's git token (the GitHub App), read by its credential helper
            let git_token = attachment.is_some() && self.refresh_git_token(pod.id, &dir).await;
            if platform {
                let own: Vec<String> = bundle::pod_env(pod).into_iter().chain(env.iter().cloned()).collect();
                let services = crate::platform::pod_env(&own);
                env.extend(services);
            }
            let supervisor = match &self.config.supervisor {
                Some(binary) => {
                    let all_env = bundle::merge_env(bundle::pod_env(pod).into_iter().chain(env.iter().cloned()));
                    Some((binary.as_path(), crate::supervisor::prepare(pod, &dir, &disk.root, all_env)?))
                }
                None => None,
            };
            let mut spec = bundle::pod_spec(
                pod,
                &root,
                &workspace,
                bundle::nofile_limit(),
                &env,
                supervisor.as_ref().map(|(b, d)| (*b, d)),
            )?;
            bundle::add_home(&mut spec, &disk.home())?;
            if with_features {
                bundle::bind_readonly_dir(&mut spec, &features_dir, pinacle_config::resolve::FEATURES_DIR)?;
            }
            if git_token && !platform {
                bundle::bind_readonly_dir(&mut spec, &crate::platform::token_dir(&dir), crate::platform::TOKEN_DIR_IN_POD)?;
            }
            if let (true, Some(net)) = (platform, &self.config.network) {
                bundle::bind_readonly_dir(&mut spec, &crate::platform::token_dir(&dir), crate::platform::TOKEN_DIR_IN_POD)?;
                let gateway = net.subnet.gateway();
                match pod.runtime {
                    RuntimeKind::Gvisor => write_pod_hosts(&root, gateway)?,
                    RuntimeKind::Youki => {
                        let hosts = dir.join("hosts");
                        write_host_file(&hosts, &crate::platform::pod_hosts("", gateway))?;
                        bundle::bind_file_readonly(&mut spec, &hosts, "/etc/hosts")?;
                    }
                }
            }
            if pod.runtime == RuntimeKind::Youki {
                if attachment.is_some() {
                    bundle::bind_resolv_conf(&mut spec, &resolv_conf)?;
                }
                let layers = rootfs::layers_dir(&root);
                bundle::remap_sources(&mut spec, &disk.root, &layers.join("disk"));
                if let Some((_, dirs)) = &supervisor {
                    bundle::remap_sources(&mut spec, &dirs.etc, &layers.join("etc"));
                }
            }
            if netns.is_some() {
                // the runtime runs inside the pod's namespace (runsc with
                // --network=host): a network namespace in the spec would make
                // it a new, empty one.
                bundle::inherit_network_namespace(&mut spec);
            }
            bundle::write_bundle(&dir, &spec)?;
            let before_runtime = t0.elapsed().as_millis();
            let console = self.config.data.console_log(pod.id);
            crate::storage::rotate_console(&console)?;
            runtime.create_and_start(&sid, &dir, &console, netns.as_deref()).await?;
            let runtime_ms = t0.elapsed().as_millis() - before_runtime;
            tracing::debug!(pod = %pod.name, disk_ms, before_runtime_ms = before_runtime, runtime_ms, "sandbox started");
            if let Some((_, dirs)) = &supervisor {
                // Running means the supervisor answers: exec works at once.
                let client = dirs.client().ok_or_else(|| AgentError::Bundle("supervisor secret missing".into()))?;
                if let Err(e) = client.wait_ready(SUPERVISOR_START_TIMEOUT).await {
                    let console = crate::runtime::tail_of(&self.config.data.console_log(pod.id), 2048);
                    return Err(AgentError::Supervisor(format!("did not start: {e}; console: {}", console.trim())));
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = started {
            // leave nothing half-made: no sandbox, no mount
            let _ = runtime.delete(&sid).await;
            let _ = rootfs::unmount(&root);
            self.keep_console_tail(pod.id);
            let _ = crate::storage::unmount(&volume).await;
            return Err(e);
        }
        Ok(())
    }

    /// Clones the pod's repository into its empty `/workspace` (inside the
    /// running pod, through its supervisor) and, when the pod takes its
    /// configuration from the repository, hands the repository's file to
    /// the control plane and restarts the sandbox if the image or processes
    /// changed. Done once per pod (a marker in the agent's own directory of
    /// the pod says so), and never into a `/workspace` that holds anything.
    /// On failure `/workspace` is emptied again and the marker not written
    /// (the next start tries anew).
    async fn settle_repository(&self, pod: &PodRecord) -> Result<bool, crate::repository::RepositoryFailure> {
        use crate::repository::{self as repo, ConfigFile, RepositoryFailure};
        let Some(source) = self.control.repository(pod.id).await.map_err(AgentError::from)? else { return Ok(false) };
        let marker = self.config.data.pod(pod.id).join(repo::CLONED_MARKER);
        if marker.exists() {
            // cloned before; a pull request's new head is fetched into it
            let held = std::fs::read_to_string(&marker).unwrap_or_default().trim().to_owned();
            if let Some(want) = source.commit.as_deref().filter(|c| !held.is_empty() && !held.starts_with(c) && !c.starts_with(held.as_str())) {
                let t0 = Instant::now();
                self.control.progress(pod.id, &format!("fetching {want}")).await;
                let update = self.run_git(pod, repo::update_argv(&source, want)?, true).await?;
                if update.code == 0 {
                    std::fs::write(&marker, want).map_err(AgentError::io("writing", &marker))?;
                    self.control.progress(pod.id, &format!("moved to {want} ({} ms); starting the processes again", t0.elapsed().as_millis())).await;
                    // the processes started on the old head: start again
                    return Ok(true);
                } else {
                    self.control.progress(pod.id, &format!("not moved to {want}: {}", update.message("git"))).await;
                }
            }
            return Ok(false);
        }
        let disk = crate::storage::PodDisk { root: crate::storage::mount_point(&self.config.data.volume(pod.id)) };
        let empty = std::fs::read_dir(disk.workspace()).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty {
            self.control.progress(pod.id, "/workspace is not empty: the repository is not cloned into it").await;
            std::fs::write(&marker, b"").map_err(AgentError::io("writing", &marker))?;
            return Ok(false);
        }
        let t0 = Instant::now();
        let what = match (&source.branch, &source.commit) {
            (_, Some(c)) => format!(" at {c}"),
            (Some(b), None) => format!(" (branch {b})"),
            (None, None) => String::new(),
        };
        self.control.progress(pod.id, &format!("cloning {}{what}", source.url)).await;
        let result = async {
            let clone = self.run_git(pod, repo::clone_argv(&source)?, true).await?;
            if clone.code != 0 {
                return Err(RepositoryFailure::Clone { url: source.url.clone(), message: clone.message("git") });
            }
            self.control.progress(pod.id, &format!("repository cloned ({} ms)", t0.elapsed().as_millis())).await;
            if !source.use_repository_config {
                return Ok(false);
            }
            let read = self.run_git(pod, repo::read_config_argv(), false).await?;
            match repo::parse_config_output(&read.stdout) {
                ConfigFile::None => {
                    let note = "the repository has no pinacle.yaml or devcontainer.json: the pod keeps the default configuration";
                    self.control.progress(pod.id, note).await;
                    Ok(false)
                }
                ConfigFile::TooLarge { file } => {
                    Err(RepositoryFailure::Config { file, message: format!("it is larger than {} bytes", repo::MAX_CONFIG_BYTES) })
                }
                ConfigFile::NotText { file } => Err(RepositoryFailure::Config { file, message: "it is not UTF-8 text".into() }),
                ConfigFile::Found { file, text } => match self.control.apply_repository_config(pod.id, &file, &text).await {
                    Ok(crate::control::RepositoryConfigOutcome::Applied) => {
                        self.control.progress(pod.id, &format!("configured from the repository's {file}")).await;
                        Ok(false)
                    }
                    Ok(crate::control::RepositoryConfigOutcome::Restart) => {
                        let note = format!("configured from the repository's {file}; starting the sandbox again with its image and processes");
                        self.control.progress(pod.id, &note).await;
                        Ok(true)
                    }
                    Err(ControlPlaneError::InvalidConfig(message)) => Err(RepositoryFailure::Config { file, message }),
                    Err(e) => Err(AgentError::from(e).into()),
                },
            }
        }
        .await;
        match &result {
            Ok(_) => std::fs::write(&marker, source.commit.as_deref().unwrap_or_default()).map_err(AgentError::io("writing", &marker))?,
            Err(_) => {
                if let Err(e) = self.run_git(pod, repo::cleanup_argv(), false).await {
                    tracing::warn!(pod = %pod.id, error = %e, "emptying /workspace after a failed clone");
                }
            }
        }
        result
    }

    /// Builds the pod's image from the Dockerfile of its repository when its
    /// configuration asks (`image: {build: …}`, a devcontainer's `build`)
    /// and records it as the pod's image, then starts the sandbox again on
    /// it; `restart`: start again anyway (the configuration changed). The
    /// context is the clone, taken out of the running pod as a tar (made
    /// by the pod's own `tar`, unpacked on the host with the image layer
    /// unpacker: nothing of the repository is read by path as host root).
    /// `RUN` steps run in gVisor in the pod's own network namespace. An
    /// image built from the same commit and build settings for the same
    /// owner is reused.
    async fn settle_build(&self, pod: &PodRecord, restart: bool) -> Result<(), AgentError> {
        let setup = self.control.image_setup(pod.id).await?;
        let current = self.control.pod(pod.id).await?.ok_or(AgentError::ControlPlane(ControlPlaneError::NotFound(pod.id)))?;
        let built_marker = self.config.data.pod(pod.id).join(BUILT_MARKER);
        let mut restart = restart;
        if let Some(build) = &setup.build {
            if self.control.repository(pod.id).await?.is_none() {
                return Err(AgentError::ImageBuild("`image: {build: …}` builds from the pod's repository, and this pod has none".into()));
            }
            // built once per pod (the marker), then the recorded image is
            // the pod's (its image may have no git to ask the commit of)
            let built = built_marker.exists() && current.image.starts_with(&format!("localhost/{}", crate::dockerfile::POD_BUILDS_PREFIX));
            if !built {
                let head = self.run_git(pod, vec!["git".into(), "rev-parse".into(), "HEAD".into()], false).await?;
                let commit = if head.code == 0 { String::from_utf8_lossy(&head.stdout).trim().to_owned() } else { String::new() };
                let key = {
                    use sha2::Digest;
                    let mut h = sha2::Sha256::new();
                    h.update(pod.owner.as_bytes());
                    h.update([0]);
                    h.update(commit.as_bytes());
                    h.update([0]);
                    h.update(serde_json::to_vec(build).unwrap_or_default());
                    hex::encode(&h.finalize()[..16])
                };
                let reuse = matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit());
                let pinned = self.build_pod_image(pod, build, &key, reuse).await?;
                self.control.set_built_image(pod.id, &pinned).await?;
                std::fs::write(&built_marker, &pinned).map_err(AgentError::io("writing", &built_marker))?;
                restart = true;
            }
        }
        if restart {
            let updated = self.control.pod(pod.id).await?.ok_or(AgentError::ControlPlane(ControlPlaneError::NotFound(pod.id)))?;
            self.ensure_stopped(pod).await?;
            self.ensure_running(&updated, false).await?;
        }
        Ok(())
    }

    /// The image of `build` for the pod (`localhost/pinacle/pods/{key}`,
    /// pinned): from the store when built before (`reuse`), else built.
    async fn build_pod_image(&self, pod: &PodRecord, build: &pinacle_config::pinacle_yaml::ImageBuild, key: &str, reuse: bool) -> Result<String, AgentError> {
        let name = format!("localhost/{}{key}:latest", crate::dockerfile::POD_BUILDS_PREFIX);
        let reference = pinacle_oci::Reference::parse(&name).map_err(|e| AgentError::ImageBuild(e.to_string()))?;
        if reuse {
            if let Some(img) = self.oci.find(&reference).await? {
                self.control.progress(pod.id, &format!("image built before from this commit of {}: reused", build.dockerfile)).await;
                return Ok(reference.pinned(&img.info.manifest_digest).to_string());
            }
        }
        let dockerfile = if build.context == "." {
            std::path::PathBuf::from(&build.dockerfile)
        } else {
            match std::path::Path::new(&build.dockerfile).strip_prefix(&build.context) {
                Ok(rel) => rel.to_path_buf(),
                Err(_) => {
                    return Err(AgentError::ImageBuild(format!(
                        "the Dockerfile {} is outside the build context {}; move it into the context or make the context a folder above it",
                        build.dockerfile, build.context
                    )))
                }
            }
        };
        // on the pod's own disk, outside what the pod sees: its size bounds
        // what the pod can make the host unpack
        let work = crate::storage::mount_point(&self.config.data.volume(pod.id)).join("build-context");
        crate::rootfs::remove_tree(&work)?;
        std::fs::create_dir_all(&work).map_err(AgentError::io("creating", &work))?;
        let result = async {
            let context = work.join("context");
            self.control.progress(pod.id, &format!("reading the build context {} from the pod", build.context)).await;
            self.pod_tar(pod, &format!("/workspace/{}", build.context), &work.join("context.tar"), &context).await?;
            let registry_env = self.control.registry_environment(pod.id).await?;
            let network = match (&self.config.network, crate::network::recorded(&self.config.data.pod(pod.id))) {
                (Some(_), Some(a)) => crate::dockerfile::BuildNetwork::Namespace(a.netns_path()),
                _ => crate::dockerfile::BuildNetwork::None,
            };
            let req = crate::dockerfile::BuildRequest {
                context_dir: context,
                dockerfile,
                name: name.clone(),
                build_args: build.args.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                target: build.target.clone(),
                insecure_registries: self.config.insecure_registries.clone(),
                credentials: crate::registry::all_credentials(&registry_env),
                isolation: crate::dockerfile::Isolation::Gvisor,
                network,
            };
            let (report, events) = self.reporter(pod.id);
            let lines = std::sync::atomic::AtomicUsize::new(0);
            let log = |line: &str| {
                // the build's output in the pod's events, bounded
                match lines.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                    n if n < MAX_BUILD_EVENT_LINES => report(format!("build: {line}")),
                    n if n == MAX_BUILD_EVENT_LINES => report(format!("build: (more output is not recorded; at most {MAX_BUILD_EVENT_LINES} lines are)")),
                    _ => {}
                }
            };
            let waiting = self.pod_builds.available_permits() == 0;
            if waiting {
                report("build: waiting for another pod's build to finish".into());
            }
            let _turn = self.pod_builds.acquire().await.map_err(|e| AgentError::ImageBuild(e.to_string()))?;
            let t0 = Instant::now();
            let built = match tokio::time::timeout(POD_BUILD_TIMEOUT, crate::dockerfile::build(&self.oci, &req, &log)).await {
                Ok(built) => built,
                Err(_) => {
                    drop(report);
                    let _ = events.await;
                    return Err(AgentError::ImageBuild(format!("{} took longer than {} minutes and was stopped", build.dockerfile, POD_BUILD_TIMEOUT.as_secs() / 60)));
                }
            };
            drop(report);
            let _ = events.await;
            let built = built.map_err(|e| AgentError::ImageBuild(format!("{} ({}): {e}", build.dockerfile, build.context)))?;
            self.control.progress(pod.id, &format!("image built from {} in {} ms", build.dockerfile, t0.elapsed().as_millis())).await;
            Ok::<_, AgentError>(reference.pinned(&built.info.manifest_digest).to_string())
        }
        .await;
        if let Err(e) = crate::rootfs::remove_tree(&work) {
            tracing::warn!(pod = %pod.id, error = %e, "removing a build context");
        }
        result
    }

    /// Copies `dir` of the running pod to `target` on the host: the pod's
    /// `tar` writes it to stdout (at most [`MAX_CONTEXT_BYTES`], kept in
    /// `tar_file`), the image layer unpacker reads it (no path leaves
    /// `target`, no device or link out of it).
    async fn pod_tar(&self, pod: &PodRecord, dir: &str, tar_file: &Path, target: &Path) -> Result<(), AgentError> {
        use tokio::io::AsyncWriteExt;
        let req = ExecRequest { argv: vec!["tar".into(), "-cf".into(), "-".into(), "-C".into(), dir.into(), ".".into()], env: Vec::new(), cwd: Some("/workspace".into()), stdin: None };
        let mut rx = self.exec(pod, req).await?;
        let mut file = tokio::fs::File::create(tar_file).await.map_err(AgentError::io("creating", tar_file))?;
        let mut written: u64 = 0;
        let mut stderr = Vec::new();
        let deadline = tokio::time::Instant::now() + CLONE_TIMEOUT;
        let code = loop {
            let Ok(next) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                return Err(AgentError::ImageBuild(format!("reading the build context {dir} took too long")));
            };
            match next {
                Some(ExecOutput::Stdout(d)) => {
                    written += d.len() as u64;
                    if written > MAX_CONTEXT_BYTES {
                        return Err(AgentError::ImageBuild(format!("the build context {dir} is larger than {} MiB; add a .dockerignore or a smaller context", MAX_CONTEXT_BYTES >> 20)));
                    }
                    file.write_all(&d).await.map_err(AgentError::io("writing", tar_file))?;
                }
                Some(ExecOutput::Stderr(d)) => {
                    let room = 4096usize.saturating_sub(stderr.len());
                    stderr.extend_from_slice(&d[..d.len().min(room)]);
                }
                Some(ExecOutput::Exit(code)) => break code,
                None => break 255,
            }
        };
        file.flush().await.map_err(AgentError::io("writing", tar_file))?;
        drop(file);
        if code != 0 {
            let why = String::from_utf8_lossy(&stderr);
            let why = why.lines().last().unwrap_or("").trim().to_owned();
            return Err(AgentError::ImageBuild(match code {
                127 => "the pod's image has no `tar` to hand the build context over".to_owned(),
                _ => format!("the build context {dir} could not be read: {why}"),
            }));
        }
        // a plain tar only (the unpacker would also inflate gzip and zstd)
        let mut magic = [0u8; 4];
        let head = std::fs::File::open(tar_file).and_then(|mut f| std::io::Read::read(&mut f, &mut magic)).map_err(AgentError::io("reading", tar_file))?;
        if head >= 2 && (magic[..2] == [0x1f, 0x8b] || magic == [0x28, 0xb5, 0x2f, 0xfd]) {
            return Err(AgentError::ImageBuild("the pod's `tar` sent a compressed archive; a plain tar is expected".into()));
        }
        let (tar_file, target) = (tar_file.to_path_buf(), target.to_path_buf());
        tokio::task::spawn_blocking(move || -> Result<(), AgentError> {
            std::fs::create_dir_all(&target).map_err(AgentError::io("creating", &target))?;
            let f = std::fs::File::open(&tar_file).map_err(AgentError::io("opening", &tar_file))?;
            let mut unpacker = pinacle_oci::unpack::Unpacker::new(target.clone());
            unpacker.apply_layer(std::io::BufReader::new(f)).map_err(|e| AgentError::ImageBuild(format!("the build context: {e}")))?;
            unpacker.finish().map_err(|e| AgentError::ImageBuild(format!("the build context: {e}")))
        })
        .await
        .map_err(|e| AgentError::ImageBuild(e.to_string()))?
    }

    /// Runs a git step of [`Self::settle_repository`] in the pod: stdout kept
    /// up to a bound, stderr as progress notes (when `report`) and its last
    /// line kept; stopped after [`CLONE_TIMEOUT`].
    async fn run_git(&self, pod: &PodRecord, argv: Vec<String>, report: bool) -> Result<GitRun, AgentError> {
        let req = ExecRequest { argv, env: crate::repository::git_env(), cwd: Some("/workspace".into()), stdin: None };
        let mut rx = self.exec(pod, req).await?;
        let mut progress = crate::repository::Progress::default();
        let mut stdout = Vec::new();
        let limit = crate::repository::MAX_CONFIG_BYTES + 4096;
        let deadline = tokio::time::Instant::now() + CLONE_TIMEOUT;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                let last = format!("stopped after {} minutes", CLONE_TIMEOUT.as_secs() / 60);
                return Ok(GitRun { code: 124, stdout, last });
            };
            match next {
                Some(ExecOutput::Stdout(d)) => {
                    let room = limit.saturating_sub(stdout.len());
                    stdout.extend_from_slice(&d[..d.len().min(room)]);
                }
                Some(ExecOutput::Stderr(d)) => {
                    for line in progress.feed(&d, Instant::now()) {
                        if report {
                            self.control.progress(pod.id, &line).await;
                        }
                    }
                }
                Some(ExecOutput::Exit(code)) => return Ok(GitRun { code, stdout, last: progress.last_line().to_owned() }),
                None => return Ok(GitRun { code: 255, stdout, last: progress.last_line().to_owned() }),
            }
        }
    }

    /// The root filesystem of `image` if it is on this host (built, or
    /// pulled by a pinned reference), without building or pulling it.
    pub fn existing_rootfs(&self, image: &str) -> Option<std::path::PathBuf> {
        if pinacle_config::image_ref::is_registry_reference(image) {
            let reference = pinacle_oci::Reference::parse(image).ok()?;
            let rootfs = self.oci.image_dir(reference.digest()?).join("rootfs");
            return rootfs.is_dir().then_some(rootfs);
        }
        self.images.rootfs(image)
    }

    /// The `Env` of a registry image's config (`HOME` excepted: pods keep
    /// theirs); nothing for host-built images.
    async fn image_env(&self, image: &str) -> Vec<String> {
        if !pinacle_config::image_ref::is_registry_reference(image) {
            return Vec::new();
        }
        let Some(digest) = pinacle_oci::Reference::parse(image).ok().and_then(|r| r.digest().cloned()) else { return Vec::new() };
        match self.oci.get(&digest).await {
            Ok(Some(img)) => img.info.config.env.into_iter().filter(|e| e.contains('=') && !e.starts_with("HOME=")).collect(),
            _ => Vec::new(),
        }
    }

    /// The store of images pulled from registries.
    pub fn registry_images(&self) -> &Arc<pinacle_oci::Store> {
        &self.oci
    }

    /// The manifest digest `image` (a registry reference, by tag or digest)
    /// names now, asked of its registry with the credentials in `env` (the
    /// owner's secrets): what a new pod pins.
    pub async fn resolve_image(&self, image: &str, env: &[String]) -> Result<String, pinacle_oci::OciError> {
        // a digest is asked of the registry too, with this owner's
        // credentials: an image another tenant pulled (a private one) is in
        // this host's store, and having its digest must not be enough
        let reference = pinacle_oci::Reference::parse(image)?;
        // images this host built (`pinacle image build NAME --dockerfile`,
        // the operator's) live in the store only: no registry to ask
        if reference.registry() == "localhost" && reference.repository().starts_with(crate::dockerfile::BUILT_REPOSITORY_PREFIX) {
            let not_found = || pinacle_oci::OciError::NotFound { reference: reference.to_string() };
            // images built for pods are recorded on their pod by this agent
            // only, never named by a request
            if reference.repository().starts_with(crate::dockerfile::POD_BUILDS_PREFIX) {
                return Err(not_found());
            }
            // a digest finds any image in the store (another tenant's
            // private pull, say): it names a host-built image only when
            // that image was recorded under this name
            let name = format!("localhost/{}", reference.repository());
            let recorded = |r: &String| r == &name || r.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@'));
            return match self.oci.find(&reference).await?.filter(|img| img.info.references.iter().any(recorded)) {
                Some(img) => Ok(reference.pinned(&img.info.manifest_digest).to_string()),
                None => Err(not_found()),
            };
        }
        let creds = crate::registry::credentials_for(env, reference.registry());
        let digest = self.oci.resolve(&reference, &creds).await?;
        Ok(reference.pinned(&digest).to_string())
    }

    /// Pulls a registry image (pinned or not) into this host's store,
    /// reporting progress lines to `progress`.
    pub async fn pull_image(
        &self,
        image: &str,
        env: &[String],
        progress: Arc<dyn Fn(pinacle_oci::PullProgress) + Send + Sync>,
    ) -> Result<pinacle_oci::PulledImage, pinacle_oci::OciError> {
        let reference = pinacle_oci::Reference::parse(image)?;
        let creds = crate::registry::credentials_for(env, reference.registry());
        self.oci.pull(&reference, &creds, &*progress).await
    }

    /// A progress reporter for pod `id`'s events (lines sent in order by a
    /// task that ends when the reporter is dropped).
    fn reporter(&self, id: Uuid) -> (impl Fn(String) + Send + Sync, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let control = self.control.clone();
        let events = tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                control.progress(id, &line).await;
            }
        });
        (move |line: String| drop(tx.send(line)), events)
    }

    /// The root filesystem of the pod's image: pulled from its registry
    /// (by the digest pinned at creation), or built first when this host can
    /// build it (a template's image on first use takes minutes).
    async fn image_for(&self, pod: &PodRecord) -> Result<std::path::PathBuf, AgentError> {
        let built_for_pod = format!("localhost/{}", crate::dockerfile::POD_BUILDS_PREFIX);
        if pod.image.starts_with(&built_for_pod) && self.existing_rootfs(&pod.image).is_none() {
            // the image built for the pod is not on this host (a wiped
            // store): start on the template's image, and the build runs
            // again once the sandbox is up (settle_build)
            let marker = self.config.data.pod(pod.id).join(BUILT_MARKER);
            let _ = std::fs::remove_file(&marker);
            let fallback = pinacle_config::templates::Template::find(&pod.template).map_or(pinacle_config::resolve::DEFAULT_IMAGE, |t| t.image);
            let note = format!("the image built for this pod is not on this host; starting on {fallback} to build it again");
            self.control.progress(pod.id, &note).await;
            let mut on_fallback = pod.clone();
            on_fallback.image = fallback.to_owned();
            return Box::pin(self.image_for(&on_fallback)).await;
        }
        if pinacle_config::image_ref::is_registry_reference(&pod.image) {
            let env = self.control.registry_environment(pod.id).await?;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let report = Arc::new(move |p: pinacle_oci::PullProgress| {
                if let Some(line) = crate::registry::progress_line(&p) {
                    let _ = tx.send(line);
                }
            });
            let control = self.control.clone();
            let id = pod.id;
            let events = tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    control.progress(id, &line).await;
                }
            });
            let pulled = self.pull_image(&pod.image, &env, report.clone()).await;
            drop(report);
            let _ = events.await;
            return pulled.map(|p| p.rootfs).map_err(AgentError::Pull);
        }
        if let Some(lower) = self.images.rootfs(&pod.image) {
            return Ok(lower);
        }
        if !ImageStore::buildable().contains(&pod.image.as_str()) {
            return Err(AgentError::ImageMissing(pod.image.clone()));
        }
        let _one_at_a_time = self.image_builds.lock().await;
        if let Some(lower) = self.images.rootfs(&pod.image) {
            return Ok(lower);
        }
        tracing::info!(pod = %pod.name, image = %pod.image, "building the pod's image");
        let image = pod.image.clone();
        let progress = move |line: &str| tracing::debug!(%image, "{line}");
        self.images.build(&pod.image, false, &progress).await?;
        self.images.rootfs(&pod.image).ok_or_else(|| AgentError::ImageMissing(pod.image.clone()))
    }

    /// Stops the pod's sandbox (SIGTERM, then force after the grace period)
    /// and unmounts its root filesystem. Storage is kept.
    async fn ensure_stopped(&self, pod: &PodRecord) -> Result<(), AgentError> {
        let runtime = self.runtime(pod.runtime)?;
        let sid = pod.sandbox_id();
        if runtime.status(&sid).await? == SandboxStatus::Running {
            let _ = runtime.kill(&sid, libc_sigterm()).await;
            let deadline = Instant::now() + self.config.stop_grace;
            while Instant::now() < deadline && runtime.status(&sid).await? == SandboxStatus::Running {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        runtime.delete(&sid).await?;
        rootfs::unmount(&self.config.data.pod(pod.id).join("rootfs"))?;
        self.keep_console_tail(pod.id);
        crate::storage::unmount(&self.config.data.volume(pod.id)).await
    }

    /// Keeps the tail of the pod's console log (on its disk) in its pod
    /// directory before the disk is unmounted.
    fn keep_console_tail(&self, id: Uuid) {
        if crate::rootfs::is_mount_point(&crate::storage::mount_point(&self.config.data.volume(id))) {
            crate::storage::save_console_tail(&self.config.data.console_log(id), &self.config.data.console_tail(id));
        }
    }

    /// Removes the pod's sandbox, writable layer and volume.
    async fn remove(&self, pod: &PodRecord) -> Result<(), AgentError> {
        self.ensure_stopped(pod).await?;
        if let Some(net) = &self.config.network {
            net.detach(pod.id, &self.config.data.pod(pod.id)).await?;
        }
        crate::network::remove_namespace(pod.id).await?;
        rootfs::remove_tree(&self.config.data.pod(pod.id))?;
        rootfs::remove_tree(&self.config.data.snapshots(pod.id))?;
        rootfs::remove_tree(&self.config.data.volume(pod.id))
    }

    /// Starts `req` in the pod's sandbox; output arrives on the returned
    /// channel, ending with [`ExecOutput::Exit`].
    pub async fn exec(&self, pod: &PodRecord, req: ExecRequest) -> Result<mpsc::Receiver<ExecOutput>, AgentError> {
        let runtime = self.runtime(pod.runtime)?;
        let sid = pod.sandbox_id();
        if runtime.status(&sid).await? != SandboxStatus::Running {
            return Err(AgentError::NotRunning(pod.name.to_string()));
        }
        if let Some(client) = self.supervisor_of(pod.id) {
            return self.exec_through_supervisor(client, req).await;
        }
        let mut env = bundle::pod_env(pod);
        env.extend(req.env.iter().cloned());
        let cwd = req.cwd.as_deref().unwrap_or("/workspace");
        let crate::runtime::ExecCommand { command: mut cmd, files } = runtime.exec_command(&sid, cwd, &env, &req.argv)?;
        cmd.stdin(if req.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(AgentError::io("running exec for", PathBuf::from(&sid)))?;
        if let (Some(input), Some(mut stdin)) = (req.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let (tx, rx) = mpsc::channel(64);
        let pumps = [
            child.stdout.take().map(|s| pump(s, tx.clone(), ExecOutput::Stdout)),
            child.stderr.take().map(|s| pump(s, tx.clone(), ExecOutput::Stderr)),
        ];
        tokio::spawn(async move {
            // the runtime's files for this exec go when it has ended
            let _files = files;
            let finished = async move {
                for p in pumps.into_iter().flatten() {
                    let _ = p.await;
                }
                match child.wait().await {
                    Ok(status) => exit_code(status),
                    Err(_) => 255,
                }
            };
            tokio::select! {
                code = finished => {
                    let _ = tx.send(ExecOutput::Exit(code)).await;
                }
                // The caller went away: dropping `finished` drops the child,
                // which is killed (kill_on_drop).
                _ = tx.closed() => tracing::debug!("exec caller gone; command killed"),
            }
        });
        Ok(rx)
    }

    /// The pod's supervisor, if it runs one (set up when it last started).
    pub fn supervisor_of(&self, pod: Uuid) -> Option<pinacle_supervisor::client::SupervisorClient> {
        self.config.supervisor.as_ref()?;
        let dirs = crate::supervisor::SupervisorDirs::of(&self.config.data.pod(pod), &crate::storage::mount_point(&self.config.data.volume(pod)));
        dirs.socket().exists().then(|| dirs.client()).flatten()
    }

    /// An interactive command (a terminal when `spec.tty` is set) in a
    /// running pod: input goes on the sender, output and the exit status
    /// come on the receiver. Needs the pod's supervisor.
    pub async fn exec_session(
        &self,
        pod: &PodRecord,
        spec: pinacle_supervisor::protocol::ExecSpec,
    ) -> Result<(mpsc::Sender<pinacle_supervisor::client::ExecInput>, mpsc::Receiver<pinacle_supervisor::client::ExecEvent>), AgentError> {
        let runtime = self.runtime(pod.runtime)?;
        if runtime.status(&pod.sandbox_id()).await? != SandboxStatus::Running {
            return Err(AgentError::NotRunning(pod.name.to_string()));
        }
        let client = self
            .supervisor_of(pod.id)
            .ok_or_else(|| AgentError::Supervisor(format!("pod {} runs without a supervisor; restart it", pod.name)))?;
        client.exec(spec).await.map_err(|e| AgentError::Supervisor(e.to_string()))
    }

    async fn exec_through_supervisor(
        &self,
        client: pinacle_supervisor::client::SupervisorClient,
        req: ExecRequest,
    ) -> Result<mpsc::Receiver<ExecOutput>, AgentError> {
        use pinacle_supervisor::client::{ExecEvent, ExecInput};
        let spec = pinacle_supervisor::protocol::ExecSpec { argv: req.argv, env: req.env, cwd: req.cwd, tty: None, session: None };
        let (input, mut events) = client.exec(spec).await.map_err(|e| AgentError::Supervisor(e.to_string()))?;
        tokio::spawn(async move {
            if let Some(data) = req.stdin {
                let _ = input.send(ExecInput::Stdin(data)).await;
            }
            let _ = input.send(ExecInput::StdinEnd).await;
        });
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let (out, last) = match event {
                    ExecEvent::Stdout(d) => (ExecOutput::Stdout(d), false),
                    ExecEvent::Stderr(d) => (ExecOutput::Stderr(d), false),
                    ExecEvent::Exit(s) => (ExecOutput::Exit(s.code), true),
                };
                if tx.send(out).await.is_err() || last {
                    return;
                }
            }
            let _ = tx.send(ExecOutput::Exit(255)).await;
        });
        Ok(rx)
    }

    /// The last `max_bytes` of the pod's console log (its main process's
    /// output): from its disk while mounted, else the tail kept when the
    /// disk was unmounted.
    pub fn logs(&self, id: Uuid, max_bytes: u64) -> String {
        let live = self.config.data.console_log(id);
        if crate::rootfs::is_mount_point(&crate::storage::mount_point(&self.config.data.volume(id))) && live.exists() {
            return crate::runtime::tail_of(&live, max_bytes);
        }
        crate::runtime::tail_of(&self.config.data.console_tail(id), max_bytes)
    }

    /// Compares the runtime with the control plane and repairs differences:
    /// unfinished work is resumed, running pods whose sandbox is gone are
    /// restarted, sandboxes and directories no live pod owns are removed.
    pub async fn reconcile(self: &Arc<Self>) -> Result<ReconcileReport, AgentError> {
        let mut report = ReconcileReport::default();
        let pods = self.control.pods_on_host(&self.config.host_id).await?;
        let live: HashMap<Uuid, &PodRecord> = pods.iter().map(|p| (p.id, p)).collect();
        // One item failing must not stop the pass: note it and go on.
        let mut failed = |what: String, e: AgentError| {
            tracing::warn!(error = %e, "reconcile: {what}");
            report.errors.push(format!("{what}: {e}"));
        };

        for (kind, runtime) in &self.runtimes {
            let sandboxes = match runtime.list().await {
                Ok(s) => s,
                Err(e) => {
                    failed(format!("listing {kind} sandboxes"), e);
                    continue;
                }
            };
            for sid in sandboxes {
                let Some(id) = pod_id_of_sandbox(&sid) else { continue };
                let owned = live
                    .get(&id)
                    .is_some_and(|p| p.runtime == *kind && (p.state.wants_sandbox() || p.state.is_transitional()));
                if owned {
                    continue;
                }
                let Some(_lock) = self.try_lock_pod(id) else { continue };
                // Re-read: the pod may have been created or started since the list.
                match self.control.pod(id).await {
                    Ok(Some(p)) if p.state.is_live() && p.runtime == *kind && p.state.wants_sandbox() => continue,
                    Ok(_) => {}
                    Err(e) => {
                        failed(format!("reading pod {id}"), e.into());
                        continue;
                    }
                }
                tracing::info!(sandbox = %sid, runtime = %kind, "removing sandbox no live pod owns");
                match runtime.delete(&sid).await {
                    Ok(()) => report.orphans_removed.push(sid),
                    Err(e) => failed(format!("removing sandbox {sid}"), e),
                }
            }
        }

        for pod in &pods {
            let Some(lock) = self.try_lock_pod(pod.id) else { continue };
            if pod.state == PodState::Running {
                let status = match self.runtime(pod.runtime) {
                    Ok(rt) => rt.status(&pod.sandbox_id()).await,
                    Err(e) => Err(e),
                };
                let status = match status {
                    Ok(SandboxStatus::Running) => continue,
                    Ok(other) => other,
                    Err(e) => {
                        failed(format!("inspecting pod {}", pod.name), e);
                        continue;
                    }
                };
                let msg = format!("sandbox found {status:?}; restarting");
                if self.control.record(pod.id, PodEvent::SandboxLost, &msg).await.is_ok() {
                    report.restarted.push(pod.id);
                    drop(lock);
                    self.spawn_job(PodJob::Start(pod.id));
                }
            } else if let Some(job) = PodJob::to_settle(pod.state, pod.id) {
                report.resumed.push(pod.id);
                drop(lock);
                self.spawn_job(job);
            }
        }

        for dir in [self.config.data.pods(), self.config.data.volumes()] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Some(id) = entry.file_name().to_str().and_then(|s| Uuid::parse_str(s).ok()) else {
                    continue;
                };
                if live.contains_key(&id) {
                    continue;
                }
                let Some(_lock) = self.try_lock_pod(id) else { continue };
                match self.control.pod(id).await {
                    Ok(Some(p)) if p.state.is_live() => continue,
                    Ok(_) => {}
                    Err(e) => {
                        failed(format!("reading pod {id}"), e.into());
                        continue;
                    }
                }
                tracing::info!(path = %entry.path().display(), "removing storage no live pod owns");
                if let Some(net) = self.config.network.as_ref().filter(|_| crate::network::recorded(&entry.path()).is_some()) {
                    if let Err(e) = net.detach(id, &entry.path()).await {
                        failed(format!("removing the network of {}", entry.path().display()), e);
                        continue;
                    }
                }
                if let Err(e) = crate::network::remove_namespace(id).await {
                    failed(format!("removing the network namespace of {}", entry.path().display()), e);
                    continue;
                }
                match rootfs::remove_tree(&entry.path()) {
                    Ok(()) => report.leftovers_removed.push(entry.path()),
                    Err(e) => failed(format!("removing {}", entry.path().display()), e),
                }
            }
        }
        report.leftovers_removed.extend(remove_empty_cgroups(Path::new(CGROUP_ROOT), |id| live.contains_key(&id)));
        if let Some(net) = &self.config.network {
            match net.remove_orphans(&self.config.data.pods()).await {
                Ok(veths) => report.leftovers_removed.extend(veths.into_iter().map(PathBuf::from)),
                Err(e) => failed("removing leftover pod interfaces".into(), e),
            }
        }
        self.ready.store(true, Ordering::Relaxed);
        Ok(report)
    }

    /// Applies a pod's new egress policy at once, if the pod is attached
    /// to this host's network; false if it is not (it gets the policy when
    /// it next starts).
    pub async fn set_egress(&self, pod: Uuid, egress: &str) -> Result<bool, AgentError> {
        match &self.config.network {
            Some(net) => net.set_egress(&self.config.data.pod(pod), egress).await,
            None => Ok(false),
        }
    }

    /// Snapshots of `pod` on this host, oldest first.
    pub fn snapshots(&self, pod: Uuid) -> Vec<crate::snapshot::SnapshotInfo> {
        crate::snapshot::list(&self.config.data.snapshots(pod))
    }

    /// Takes a snapshot of a stopped pod's volumes.
    pub async fn snapshot(&self, pod: &PodRecord, name: &str) -> Result<crate::snapshot::SnapshotInfo, AgentError> {
        let _lock = self.lock_pod(pod.id).await;
        self.take_snapshot(pod, name, false).await
    }

    /// Replaces a stopped pod's volumes with snapshot `id`'s.
    pub async fn restore_snapshot(&self, pod: &PodRecord, id: &str) -> Result<crate::snapshot::SnapshotInfo, AgentError> {
        let _lock = self.lock_pod(pod.id).await;
        let dir = self.config.data.snapshots(pod.id);
        crate::snapshot::find(&dir, id)?;
        let id = id.to_owned();
        self.with_idle_disk(pod, move |disk| crate::snapshot::restore(disk, &dir, &id)).await
    }

    /// Deletes snapshot `id` of `pod`.
    pub async fn delete_snapshot(&self, pod: Uuid, id: &str) -> Result<crate::snapshot::SnapshotInfo, AgentError> {
        crate::snapshot::delete(&self.config.data.snapshots(pod), id)
    }

    async fn take_snapshot(&self, pod: &PodRecord, name: &str, auto: bool) -> Result<crate::snapshot::SnapshotInfo, AgentError> {
        let dir = self.config.data.snapshots(pod.id);
        let (name, image) = (name.to_owned(), pod.image.clone());
        let dir2 = dir.clone();
        let info = self.with_idle_disk(pod, move |disk| crate::snapshot::create(disk, &dir2, &name, auto, &image)).await?;
        if auto {
            crate::snapshot::prune_auto(&dir);
        }
        Ok(info)
    }

    /// Runs `f` on the pod's disk while nothing in the pod runs: mounts the
    /// disk for it and unmounts it after.
    async fn with_idle_disk<T: Send + 'static>(
        &self,
        pod: &PodRecord,
        f: impl FnOnce(&std::path::Path) -> Result<T, AgentError> + Send + 'static,
    ) -> Result<T, AgentError> {
        let runtime = self.runtime(pod.runtime)?;
        if runtime.status(&pod.sandbox_id()).await? == SandboxStatus::Running {
            return Err(AgentError::NotStopped(pod.name.to_string()));
        }
        let volume = self.config.data.volume(pod.id);
        let lower = self.existing_rootfs(&pod.image);
        let disk = crate::storage::ensure_mounted(&volume, pod.tier.limits().disk_bytes, &pod.image, lower.as_deref().map(|l| l.join("root")).as_deref(), self.config.disk_overcommit).await?;
        let root = disk.root.clone();
        let result = tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| AgentError::Snapshot(format!("snapshot task: {e}")))?;
        crate::storage::unmount(&volume).await?;
        result
    }

    /// The pod's own SSH key (see [`crate::pod_keys`]); `None` while its
    /// disk is not mounted (the pod is stopped) or before it first ran.
    pub async fn pod_key(&self, pod: &PodRecord) -> Option<crate::pod_keys::PodKey> {
        let disk = crate::storage::PodDisk { root: crate::storage::mount_point(&self.config.data.volume(pod.id)) };
        tokio::task::spawn_blocking(move || crate::pod_keys::read(&disk.home())).await.ok().flatten()
    }

    /// Replaces the pod's own SSH key. A running pod sees the new key at
    /// once (the old one stays valid until the rename); a stopped pod's
    /// disk is mounted for it.
    pub async fn rotate_pod_key(&self, pod: &PodRecord) -> Result<crate::pod_keys::PodKey, AgentError> {
        let _lock = self.lock_pod(pod.id).await;
        let name = pod.name.to_string();
        let runtime = self.runtime(pod.runtime)?;
        if runtime.status(&pod.sandbox_id()).await? == SandboxStatus::Running {
            let disk = crate::storage::PodDisk { root: crate::storage::mount_point(&self.config.data.volume(pod.id)) };
            return tokio::task::spawn_blocking(move || crate::pod_keys::rotate(&disk.home(), &name))
                .await
                .map_err(|e| AgentError::Bundle(format!("key rotation task: {e}")))?;
        }
        self.with_idle_disk(pod, move |root| crate::pod_keys::rotate(&crate::storage::PodDisk { root: root.to_owned() }.home(), &name)).await
    }

    /// What a running pod uses now: CPU over a short sample, memory (its
    /// cgroup's, v2 or v1) and disk (its disk image's filesystem).
    /// Unknown figures are `None` (a pod that is not running has none).
    pub async fn usage(&self, pod: Uuid) -> PodUsage {
        let id = pinacle_orchestrator::pod::sandbox_id(pod);
        let root = Path::new(CGROUP_ROOT);
        // CPU time in microseconds: cgroup v2 `cpu.stat`, else v1 `cpuacct.usage` (ns)
        let cpu_usec = || {
            let v2 = std::fs::read_to_string(root.join("pinacle").join(&id).join("cpu.stat"))
                .ok()
                .and_then(|t| t.lines().find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.trim().parse::<u64>().ok())));
            v2.or_else(|| {
                std::fs::read_to_string(root.join("cpuacct/pinacle").join(&id).join("cpuacct.usage")).ok()?.trim().parse::<u64>().ok().map(|ns| ns / 1000)
            })
        };
        let before = (Instant::now(), cpu_usec());
        tokio::time::sleep(USAGE_SAMPLE).await;
        let after = (Instant::now(), cpu_usec());
        let cpu_percent = match (before.1, after.1) {
            (Some(a), Some(b)) => {
                let wall = after.0.duration_since(before.0).as_micros().max(1) as f64;
                Some(b.saturating_sub(a) as f64 * 100.0 / wall)
            }
            _ => None,
        };
        let read_u64 = |p: PathBuf| std::fs::read_to_string(p).ok().and_then(|v| v.trim().parse::<u64>().ok());
        let memory_bytes = read_u64(root.join("pinacle").join(&id).join("memory.current"))
            .or_else(|| read_u64(root.join("memory/pinacle").join(&id).join("memory.usage_in_bytes")));
        let disk_bytes = crate::storage::usage(&self.config.data.volume(pod)).map(|(used, _)| used);
        PodUsage {
            cpu_percent,
            memory_bytes,
            disk_bytes,
        }
    }

    /// The pod's network address on this host, if it has one.
    pub fn pod_address(&self, pod: Uuid) -> Option<std::net::Ipv4Addr> {
        crate::network::recorded(&self.config.data.pod(pod)).map(|a| a.ip)
    }

    fn spawn_job(self: &Arc<Self>, job: PodJob) {
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = agent.handle(job).await {
                tracing::warn!(?job, error = %e, "job failed");
            }
        });
    }

    /// Reconciles now and then every `reconcile_interval` until `shutdown`.
    pub async fn reconcile_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            match self.reconcile().await {
                Ok(r) if r != ReconcileReport::default() => tracing::info!(report = ?r, "reconciled"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
            self.refresh_platform_tokens().await;
            tokio::select! {
                _ = tokio::time::sleep(self.config.reconcile_interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl HostAgent {
    /// Where the platform gateway listens (the bridge's address), when
    /// pods are networked and a control plane URL is known.
    pub fn platform_gateway(&self) -> Option<std::net::SocketAddr> {
        let net = self.config.network.as_ref()?;
        self.config.platform_upstream.as_ref()?;
        Some(std::net::SocketAddr::from((net.subnet.gateway(), crate::platform::GATEWAY_PORT)))
    }

    /// Serves pods' platform requests until `shutdown` (nothing to do
    /// without [`Self::platform_gateway`]).
    pub async fn serve_platform(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let (Some(addr), Some(upstream)) = (self.platform_gateway(), self.config.platform_upstream.clone()) else { return };
        // no limit on a whole answer (the router's streams and task events
        // run as long as they have something to say), only on silence
        let mut client = reqwest::Client::builder().read_timeout(Duration::from_secs(300)).connect_timeout(Duration::from_secs(10));
        if let Some(pem) = &self.config.platform_ca {
            match reqwest::Certificate::from_pem_bundle(pem) {
                Ok(certs) => {
                    for c in certs {
                        client = client.add_root_certificate(c);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "the control plane's CA is unusable for the platform gateway"),
            }
        }
        let client = match client.build() {
            Ok(c) => c,
            Err(e) => return tracing::error!(error = %e, "platform gateway not started"),
        };
        let std::net::IpAddr::V4(gateway_ip) = addr.ip() else { return };
        let gateway = Arc::new(crate::platform::Gateway {
            gateway_ip,
            upstream: upstream.trim_end_matches('/').to_owned(),
            pods: Arc::new(crate::platform::RecordedPods(self.config.data.pods())),
            client,
        });
        if let Err(e) = gateway.serve(addr, shutdown).await {
            tracing::error!(%addr, error = %e, "platform gateway stopped: pods cannot reach the memory service");
        }
    }

    /// Fetches pod `id`'s platform token into its directory; false when
    /// the control plane gives none.
    async fn refresh_platform_token(&self, id: Uuid, dir: &Path) -> bool {
        match self.control.platform_token(id).await {
            Ok(Some(t)) => match crate::platform::write_token(dir, &t.token.0) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(pod = %id, error = %e, "platform token not written");
                    false
                }
            },
            Ok(None) => {
                let _ = std::fs::remove_file(crate::platform::token_dir(dir).join(crate::platform::TOKEN_FILE));
                false
            }
            Err(e) => {
                tracing::warn!(pod = %id, error = %e, "no platform token for the pod");
                false
            }
        }
    }

    /// Fetches pod `id`'s git token into its platform directory; false
    /// (and no file) when the control plane gives none.
    async fn refresh_git_token(&self, id: Uuid, dir: &Path) -> bool {
        let file = crate::platform::token_dir(dir).join(crate::platform::GIT_TOKEN_FILE);
        match self.control.git_token(id).await {
            Ok(Some(t)) => match crate::platform::write_file(dir, crate::platform::GIT_TOKEN_FILE, &t.token.0) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(pod = %id, error = %e, "git token not written");
                    false
                }
            },
            Ok(None) => {
                let _ = std::fs::remove_file(&file);
                false
            }
            Err(e) => {
                // the token in place (if any) stays until it expires
                tracing::warn!(pod = %id, error = %e, "no git token for the pod");
                file.exists()
            }
        }
    }

    /// Replaces the platform and git tokens older than
    /// [`crate::platform::TOKEN_REFRESH`] (they live three times as long,
    /// or more).
    async fn refresh_platform_tokens(&self) {
        let Ok(entries) = std::fs::read_dir(self.config.data.pods()) else { return };
        for e in entries.flatten() {
            let Ok(id) = Uuid::parse_str(&e.file_name().to_string_lossy()) else { continue };
            let git = crate::platform::token_dir(&e.path()).join(crate::platform::GIT_TOKEN_FILE);
            let age = std::fs::metadata(&git).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if age.is_some_and(|a| a >= crate::platform::TOKEN_REFRESH) {
                self.refresh_git_token(id, &e.path()).await;
            }
            if self.platform_gateway().is_none() {
                continue;
            }
            let file = crate::platform::token_dir(&e.path()).join(crate::platform::TOKEN_FILE);
            let age = std::fs::metadata(&file).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if age.is_some_and(|a| a >= crate::platform::TOKEN_REFRESH) {
                self.refresh_platform_token(id, &e.path()).await;
            }
        }
    }
}

/// Holds a pod's lock; forgets the lock entry when released.
struct PodLock<'a> {
    agent: &'a HostAgent,
    id: Uuid,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for PodLock<'_> {
    fn drop(&mut self) {
        self.guard.take();
        self.agent.forget_lock(self.id);
    }
}

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How long [`HostAgent::usage`] watches a pod's CPU time.
const USAGE_SAMPLE: Duration = Duration::from_millis(250);

/// A pod's resource use now (see [`HostAgent::usage`]).
pub use pinacle_host_api::PodUsage;

/// How old an empty cgroup must be before reconcile removes it: a runtime
/// creates the cgroup a moment before it moves the sandbox in.
const CGROUP_GRACE: Duration = Duration::from_secs(60);

/// Removes empty `pinacle/pinacle-<uuid>` cgroups of pods that are not live
/// (a sandbox killed mid-create can leave them behind) in every hierarchy
/// under `root`, once older than [`CGROUP_GRACE`]. Returns what it removed.
fn remove_empty_cgroups(root: &Path, is_live: impl Fn(Uuid) -> bool) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir(root) else { return removed };
    for h in hierarchies.flatten() {
        let Ok(groups) = std::fs::read_dir(h.path().join("pinacle")) else { continue };
        for g in groups.flatten() {
            let Some(id) = g.file_name().to_str().and_then(pod_id_of_sandbox) else { continue };
            let empty = std::fs::read_to_string(g.path().join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
            let old = g
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > CGROUP_GRACE));
            if !is_live(id) && empty && old && std::fs::remove_dir(g.path()).is_ok() {
                removed.push(g.path());
            }
        }
    }
    removed
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn pump<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut reader: R,
    tx: mpsc::Sender<ExecOutput>,
    wrap: fn(Vec<u8>) -> ExecOutput,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(wrap(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Gives the pod's root file system the host's reachable name servers.
/// The root file system is the pod's: `/etc` may be a link by now, so the
/// file is written through [`crate::safe_fs::Tree`], never outside it. A
/// pod that broke its own `/etc` starts without the file (and a warning).
fn write_resolv_conf(root: &Path) -> Result<(), AgentError> {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let tree = crate::safe_fs::Tree::open(root).map_err(AgentError::io("opening", root))?;
    if let Err(e) = tree.write_file(Path::new("etc/resolv.conf"), crate::network::pod_resolv_conf(&host).as_bytes(), 0o644) {
        tracing::warn!(root = %root.display(), error = %e, "the pod's /etc/resolv.conf could not be written (the pod changed its /etc)");
    }
    Ok(())
}

/// Writes the pod's resolv.conf at `file`, in the agent's own directory of
/// the pod (bound read-only into the pod).
fn write_host_resolv_conf(file: &Path) -> Result<(), AgentError> {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    write_host_file(file, &crate::network::pod_resolv_conf(&host))
}

/// Writes `file` whole (a reader sees the old or the new contents).
fn write_host_file(file: &Path, contents: &str) -> Result<(), AgentError> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(AgentError::io("writing", &tmp))?;
    std::fs::rename(&tmp, file).map_err(AgentError::io("installing", file))
}

/// Adds the platform's name to a gVisor pod's own `/etc/hosts`.
fn write_pod_hosts(root: &Path, gateway: std::net::Ipv4Addr) -> Result<(), AgentError> {
    let existing = std::fs::read_to_string(root.join("etc/hosts")).unwrap_or_default();
    let tree = crate::safe_fs::Tree::open(root).map_err(AgentError::io("opening", root))?;
    if let Err(e) = tree.write_file(Path::new("etc/hosts"), crate::platform::pod_hosts(&existing, gateway).as_bytes(), 0o644) {
        tracing::warn!(root = %root.display(), error = %e, "the pod's /etc/hosts could not be written (the pod changed its /etc)");
    }
    Ok(())
}

/// Fills a new pod's empty workspace with its template's starter files
/// (inside the workspace only, whatever links it holds).
fn write_starter_files(pod: &PodRecord, workspace: &std::path::Path) -> Result<(), AgentError> {
    let Some(template) = pinacle_config::templates::Template::find(&pod.template) else { return Ok(()) };
    if template.files.is_empty() || std::fs::read_dir(workspace).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Ok(());
    }
    let tree = crate::safe_fs::Tree::open(workspace).map_err(AgentError::io("opening", workspace))?;
    for f in template.files {
        tree.write_file(Path::new(f.path), f.contents.as_bytes(), 0o644).map_err(AgentError::io("writing", workspace.join(f.path)))?;
    }
    Ok(())
}
