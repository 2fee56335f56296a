//! From a checked [`PinacleConfig`] to what a pod runs: its image, tier,
//! install steps and processes (the services' and the user's), environment,
//! public ports and tabs.

use pinacle_orchestrator::processes::{HealthCheck, PodProcesses, ProcessSpec, Restart, Step};
use pinacle_orchestrator::Tier;

use crate::pinacle_yaml::{local_url, PinacleConfig, Tab};
use crate::services::{Service, ServiceHealth, ServiceTab, TAB_ORDER};
use crate::templates::Template;

/// The image pods start from when neither `image` nor `template` says.
pub const DEFAULT_IMAGE: &str = "base";

/// Where the pod's host puts the devcontainer features it fetched (read
/// only, inside the pod), with the script installing them in order.
pub const FEATURES_DIR: &str = "/run/pinacle/features";

/// The install step of a pod with devcontainer features: first of all
/// steps, run once per image (its text names the features, so another set
/// runs again).
pub fn features_step(features: &[crate::pinacle_yaml::FeatureRequest]) -> Option<String> {
    use sha2::Digest;
    if features.is_empty() {
        return None;
    }
    let mut h = sha2::Sha256::new();
    for f in features {
        h.update(f.id.as_bytes());
        h.update([0]);
        for (k, v) in &f.options {
            h.update(k.as_bytes());
            h.update([1]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        h.update([2]);
    }
    let digest = hex::encode(&h.finalize()[..8]);
    Some(format!("sh {FEATURES_DIR}/install.sh # features {digest}"))
}

/// A tab as the IDE shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ResolvedTab {
    /// A terminal in the pod running `command` (a login shell when `None`).
    Terminal { name: String, service: Option<String>, command: Option<String> },
    /// A page served in the pod on `port`.
    Pod { name: String, service: Option<String>, port: u16, path: String },
    /// An outside page.
    External { name: String, url: String },
}

/// What a pod is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct PodDefinition {
    /// Image in the host's store.
    pub image: String,
    pub tier: Tier,
    /// The template, if the file names one.
    pub template: Option<&'static Template>,
    /// Install steps, processes and environment for the supervisor.
    pub processes: PodProcesses,
    /// Secrets to inject, by name.
    pub secrets: Vec<String>,
    /// Ports open without signing in.
    pub public_ports: Vec<u16>,
    /// Tabs, as written or generated.
    pub tabs: Vec<ResolvedTab>,
    /// GPUs asked for.
    pub gpus: u32,
    /// Seconds without use before the pod stops; `None`: never / the default.
    pub idle_timeout_secs: Option<u64>,
}

/// Resolves a checked file. The result passes [`PodProcesses::validate`]
/// for every file [`crate::parse`] accepts (checked by tests and fuzzing).
pub fn resolve(c: &PinacleConfig) -> PodDefinition {
    let template = c.template.as_deref().and_then(Template::find);
    let image = c.image.clone().or_else(|| template.map(|t| t.image.to_owned())).unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
    let services: Vec<&Service> = c.services.iter().filter_map(|s| Service::find(s)).filter(|s| s.is_supported()).collect();

    let mut install: Vec<Step> = Vec::new();
    let mut push_step = |name: String, run: &str, once: bool| {
        if !install.iter().any(|s| s.run == run) {
            install.push(Step { name, run: run.to_owned(), cwd: None, once });
        }
    };
    if let Some(run) = features_step(&c.features) {
        push_step("features".into(), &run, true);
    }
    for s in &services {
        for (i, run) in s.install.iter().enumerate() {
            push_step(format!("{}-{}", s.id, i + 1), run, true);
        }
    }
    let groups: [(&str, &[String], bool); 4] =
        [("onCreate", &c.on_create, true), ("install", &c.install, true), ("postCreate", &c.post_create, true), ("postStart", &c.post_start, false)];
    for (label, commands, once) in groups {
        for (i, run) in commands.iter().enumerate() {
            let name = if commands.len() == 1 { label.to_owned() } else { format!("{label}-{}", i + 1) };
            push_step(name, run, once);
        }
    }

    let mut processes = Vec::new();
    for s in &services {
        let (Some(run), Some(port)) = (s.start, s.port) else { continue };
        let health = match s.health {
            ServiceHealth::Tcp { port } => Some(HealthCheck { port, path: None, command: None, interval_secs: 5 }),
            ServiceHealth::Http { port, path } => Some(HealthCheck { port, path: Some(path.into()), command: None, interval_secs: 5 }),
            _ => None,
        };
        let web = matches!(s.tab, ServiceTab::Web { .. });
        processes.push(ProcessSpec {
            name: s.id.to_owned(),
            run: run.to_owned(),
            cwd: None,
            env: Vec::new(),
            restart: Restart::Always,
            health,
            port: web.then_some(port),
        });
    }
    for p in &c.processes {
        let endpoint = p.endpoint();
        let health = match (p.health_check.is_empty(), &endpoint) {
            (false, _) => Some(HealthCheck {
                port: 0,
                path: None,
                command: Some(p.health_check.join(" && ")),
                interval_secs: 5,
            }),
            (true, Some((port, path))) => Some(HealthCheck { port: *port, path: Some(path.clone()), command: None, interval_secs: 5 }),
            (true, None) => None,
        };
        processes.push(ProcessSpec {
            name: p.name.clone(),
            run: p.start_command.join(" && "),
            cwd: None,
            env: Vec::new(),
            restart: Restart::Always,
            health,
            port: endpoint.map(|(port, _)| port),
        });
    }

    PodDefinition {
        image,
        tier: c.tier,
        template,
        processes: PodProcesses {
            install,
            processes,
            env: c.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        },
        secrets: c.secrets.clone(),
        public_ports: {
            let mut ports: Vec<u16> = c.ports.iter().filter(|p| p.public).map(|p| p.port).collect();
            ports.sort_unstable();
            ports
        },
        tabs: tabs(c),
        gpus: c.gpu.as_ref().map(|g| g.count).unwrap_or(0),
        idle_timeout_secs: c.idle_timeout.and_then(|t| t.seconds()),
    }
}

/// The file's tabs, or generated ones: processes with a URL first, then the
/// coding assistant, then the other services in [`TAB_ORDER`].
pub fn tabs(c: &PinacleConfig) -> Vec<ResolvedTab> {
    if !c.tabs.is_empty() {
        // a tab of a service this Pinacle cannot run is left out
        let shown = |t: &&Tab| t.url.is_some() || t.service.as_deref().and_then(Service::find).is_some_and(|s| s.is_supported());
        return c.tabs.iter().filter(shown).map(resolve_tab).collect();
    }
    let mut out = Vec::new();
    for p in &c.processes {
        if let Some((port, path)) = p.endpoint() {
            out.push(ResolvedTab::Pod { name: p.display_name.clone().unwrap_or_else(|| p.name.clone()), service: None, port, path });
        }
    }
    let mut ordered: Vec<&Service> = c.services.iter().filter_map(|s| Service::find(s)).filter(|s| s.is_supported()).collect();
    ordered.sort_by_key(|s| TAB_ORDER.iter().position(|id| *id == s.id).unwrap_or(TAB_ORDER.len()));
    ordered.sort_by_key(|s| !s.is_coding_assistant());
    for s in ordered {
        if let Some(tab) = service_tab(s, s.display_name.to_owned()) {
            out.push(tab);
        }
    }
    out
}

fn service_tab(s: &Service, name: String) -> Option<ResolvedTab> {
    match s.tab {
        ServiceTab::None => None,
        ServiceTab::Terminal { command } => {
            Some(ResolvedTab::Terminal { name, service: Some(s.id.to_owned()), command: command.map(str::to_owned) })
        }
        ServiceTab::Web { port, path } => Some(ResolvedTab::Pod { name, service: Some(s.id.to_owned()), port, path: path.to_owned() }),
    }
}

fn resolve_tab(t: &Tab) -> ResolvedTab {
    if let Some(url) = &t.url {
        if let Ok((port, path)) = local_url(url) {
            return ResolvedTab::Pod { name: t.name.clone(), service: t.service.clone(), port, path };
        }
        return ResolvedTab::External { name: t.name.clone(), url: url.clone() };
    }
    t.service
        .as_deref()
        .and_then(Service::find)
        .filter(|s| s.is_supported())
        .and_then(|s| service_tab(s, t.name.clone()))
        .unwrap_or_else(|| ResolvedTab::Terminal { name: t.name.clone(), service: t.service.clone(), command: None })
}
