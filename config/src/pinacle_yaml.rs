//! `pinacle.yaml`: Pinacle's published pod format, read as users write it
//! today, plus our optional additions (`env`, `secrets`, `ports`, `gpu`,
//! `image`, lifecycle hooks, `idleTimeout`).
//!
//! [`parse`] reports every problem at once, each with line, column, field
//! path, what was expected and, for near-misses, a suggestion. Unknown
//! fields are warnings, or errors with [`ParseOptions::strict`].

use std::collections::BTreeMap;

use pinacle_orchestrator::hostname::{valid_service_name, MAX_SERVICE};
use pinacle_orchestrator::{PodName, Tier};
use saphyr::{MarkedYaml, Scalar, YamlData};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostic::{did_you_mean, Diagnostics};
use crate::services::Service;
use crate::templates::Template;
use crate::yaml::{index, is_null, join, scalar_str, Ctx};

/// The only format version there is.
pub const VERSION: &str = "1.0";

/// The file name looked for at a repository's root.
pub const FILE_NAME: &str = "pinacle.yaml";

/// A checked `pinacle.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "pinacle.yaml", description = "A Pinacle pod: what it runs, on which tier, with which services and tabs.")]
pub struct PinacleConfig {
    /// Format version: "1.0" (a number 1.0 is read the same).
    #[schemars(schema_with = "crate::schema::version")]
    pub version: String,
    /// The pod's name (lower-case letters, digits and dashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The template the pod starts from (its image and starter files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::template_id")]
    pub template: Option<String>,
    /// Resources: CPU, memory and disk.
    #[schemars(schema_with = "crate::schema::tier")]
    pub tier: Tier,
    /// Services from the registry (at most one AI coding assistant).
    #[serde(default)]
    #[schemars(schema_with = "crate::schema::services")]
    pub services: Vec<String>,
    /// Commands run once before the processes start: one command, a
    /// multi-line script, or a list of commands run in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::string_or_list")]
    pub install: Vec<String>,
    /// The user's own long-running processes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<Process>,
    /// Tabs of the browser IDE; generated when left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tabs: Vec<Tab>,
    /// Environment of every process and terminal (not for secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::env")]
    pub env: BTreeMap<String, String>,
    /// Names of the user's or team's secrets to inject as environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::env_names")]
    pub secrets: Vec<String>,
    /// Ports the pod serves, and which of them anyone may open without signing in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// GPUs passed through to the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// The image to start from instead of the template's (`base`, `node`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::image")]
    pub image: Option<String>,
    /// `image: {build: …}` in the file: the image is built from a
    /// Dockerfile in the pod's repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub image_build: Option<ImageBuild>,
    /// Devcontainer features installed when the pod is created, in
    /// dependency order: `{reference: {option: value}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::features")]
    pub features: Vec<FeatureRequest>,
    /// Run once when the pod is first created, before `install`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::string_or_list")]
    pub on_create: Vec<String>,
    /// Run once after `install`, before the processes start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::string_or_list")]
    pub post_create: Vec<String>,
    /// Run at every start of the pod, before the processes start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::string_or_list")]
    pub post_start: Vec<String>,
    /// Stop the pod after this long without use: `30m`, `2h`, `90s`, a number
    /// of minutes, or `never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::idle_timeout")]
    pub idle_timeout: Option<IdleTimeout>,
    /// Pull-request previews (with the GitHub App): a pod for each pull
    /// request of the repository, following its head, removed when it
    /// closes. `previews: true` takes the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previews: Option<Previews>,
    /// GitHub settings of pods made from this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubSettings>,
}

/// `previews:`: a pod for each pull request (GitHub App).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Previews {
    /// Pull requests from forks get a pod too (their code is untrusted:
    /// the pod never has secrets, its git token only reads, and it has no
    /// agent memory).
    #[serde(default)]
    pub forks: bool,
    /// Pods of the repository's own pull requests get the secrets named in
    /// `secrets:` (never a fork's).
    #[serde(default)]
    pub secrets: bool,
    /// Pushes to the branch of a running pod are fetched into it (and
    /// fast-forwarded when its work tree is clean).
    #[serde(default)]
    pub pull_on_push: bool,
    /// Stop a preview after this many seconds without a change to its pull
    /// request (`staleAfter: 7d`; `never`: none). Default 7 days.
    #[serde(default = "default_stale_after", skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<u64>,
    /// Keep a closed pull request's pod, stopped, this many seconds before
    /// deleting it (`retention: 3d`); 0, the default: delete at once.
    #[serde(default)]
    pub retention: u64,
    /// Prebuild the default branch at each push: a pod that pulls its
    /// image and runs its install steps, then stops, so pull requests'
    /// pods start from a warm image.
    #[serde(default)]
    pub prebuild: bool,
}

fn default_stale_after() -> Option<u64> {
    Some(7 * 24 * 3600)
}

impl Default for Previews {
    fn default() -> Self {
        Self { forks: false, secrets: false, pull_on_push: false, stale_after: default_stale_after(), retention: 0, prebuild: false }
    }
}

/// `github:`: how pods of this repository use GitHub.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GithubSettings {
    /// Register the pod's own ed25519 key as a deploy key of the
    /// repository: `read` (or `true`) or `write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_key: Option<DeployKeyAccess>,
}

/// A deploy key's access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeployKeyAccess {
    Read,
    Write,
}

/// An image built from a Dockerfile of the pod's repository (full
/// Dockerfile syntax, built by the pod's host after the clone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageBuild {
    /// The Dockerfile, relative to the repository's root.
    pub dockerfile: String,
    /// The build context (what COPY reads), relative to the repository's
    /// root; `.` when left out.
    #[serde(default = "dot")]
    pub context: String,
    /// `ARG` values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// The stage to build; the last one when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn dot() -> String {
    ".".into()
}

/// A devcontainer feature (an OCI artifact, e.g.
/// `ghcr.io/devcontainers/features/node:1`) with its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureRequest {
    /// The feature's OCI reference.
    pub id: String,
    /// Option values, as the feature's `devcontainer-feature.json` names them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Most features one pod asks for.
pub const MAX_FEATURE_REQUESTS: usize = 32;

/// A process the user runs (a dev server, a worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Process {
    /// Identifier: letters, digits, `-` and `_`; with a `url`, at most 12
    /// lower-case letters, digits and dashes (it names a host).
    pub name: String,
    /// Shown in the IDE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The command; a list runs its commands one after another.
    #[schemars(schema_with = "crate::schema::string_or_list")]
    pub start_command: Vec<String>,
    /// Where it serves, inside the pod: `http://localhost:3000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A command that succeeds when the process is healthy (a list: all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::string_or_list")]
    pub health_check: Vec<String>,
}

impl Process {
    /// The port and path of [`Process::url`].
    pub fn endpoint(&self) -> Option<(u16, String)> {
        self.url.as_deref().and_then(|u| local_url(u).ok())
    }
}

/// A tab of the browser IDE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tab {
    pub name: String,
    /// A service from `services`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A page: `http://localhost:PORT/...` inside the pod, or any https URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A port the pod serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Open to anyone with the link, without signing in.
    #[serde(default)]
    pub public: bool,
}

/// GPUs for the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// How many (1 to 8).
    pub count: u32,
    /// `nvidia` (the only vendor supported).
    pub vendor: String,
}

/// How long a pod may sit unused before it is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IdleTimeout {
    /// Seconds.
    After(u64),
    /// `never`.
    Never(Never),
}

/// The word `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Never {
    Never,
}

/// How to read a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Unknown fields are errors instead of warnings.
    pub strict: bool,
}

/// The top-level fields, in canonical order.
pub const FIELDS: &[&str] = &[
    "version", "name", "template", "tier", "services", "install", "processes", "tabs", "env", "secrets", "ports", "gpu",
    "image", "features", "onCreate", "postCreate", "postStart", "idleTimeout", "previews", "github",
];
const PREVIEW_FIELDS: &[&str] = &["forks", "secrets", "pullOnPush", "staleAfter", "retention", "prebuild"];
const GITHUB_FIELDS: &[&str] = &["deployKey"];
const BUILD_FIELDS: &[&str] = &["dockerfile", "context", "args", "target"];
const PROCESS_FIELDS: &[&str] = &["name", "displayName", "startCommand", "url", "healthCheck"];
const TAB_FIELDS: &[&str] = &["name", "service", "url"];
const PORT_FIELDS: &[&str] = &["port", "name", "public"];
const GPU_FIELDS: &[&str] = &["count", "vendor"];

/// Longest accepted idle timeout: 30 days.
pub const MAX_IDLE_SECS: u64 = 30 * 24 * 3600;

/// Reads `text` (the contents of `file`, named in diagnostics). Returns the
/// configuration when there are no errors, with the warnings; or every
/// problem found.
pub fn parse(file: &str, text: &str, options: ParseOptions) -> Result<(PinacleConfig, Diagnostics), Diagnostics> {
    let mut ctx = Ctx::new(file, options.strict);
    let config = match crate::yaml::load(&mut ctx, text) {
        Some(root) => read_config(&mut ctx, &root),
        // nothing but comments
        None if !ctx.diags.has_errors() => Some(empty_config()),
        None => None,
    };
    let mut diags = ctx.diags;
    diags.sort();
    match config {
        Some(c) if !diags.has_errors() => Ok((c, diags)),
        _ => Err(diags),
    }
}

fn empty_config() -> PinacleConfig {
    PinacleConfig {
        version: VERSION.into(),
        name: None,
        template: None,
        tier: Tier::DevSmall,
        services: Vec::new(),
        install: Vec::new(),
        processes: Vec::new(),
        tabs: Vec::new(),
        env: BTreeMap::new(),
        secrets: Vec::new(),
        ports: Vec::new(),
        gpu: None,
        image: None,
        image_build: None,
        features: Vec::new(),
        on_create: Vec::new(),
        post_create: Vec::new(),
        post_start: Vec::new(),
        idle_timeout: None,
        previews: None,
        github: None,
    }
}

fn read_config(ctx: &mut Ctx<'_>, root: &MarkedYaml<'_>) -> Option<PinacleConfig> {
    let mut c = empty_config();
    if is_null(root) {
        return Some(c);
    }
    let fields = ctx.fields(root, "", "pinacle.yaml", FIELDS)?;
    let mut tabs_node = None;
    for (key, value) in fields {
        let path = key;
        match key {
            "version" => read_version(ctx, value),
            "name" => {
                if let Some(name) = ctx.string(value, path) {
                    match PodName::parse(&name) {
                        Ok(_) => c.name = Some(name),
                        Err(e) => ctx.error(value, path, e.to_string(), None),
                    }
                }
            }
            "template" => {
                if let Some(t) = ctx.string(value, path) {
                    if Template::find(&t).is_some() {
                        c.template = Some(t);
                    } else {
                        let ids: Vec<_> = Template::ids().collect();
                        ctx.error(
                            value,
                            path,
                            format!("unknown template {t:?}; expected one of {}", ids.join(", ")),
                            did_you_mean(&t, ids.iter().copied()),
                        );
                    }
                }
            }
            "tier" => {
                if let Some(t) = ctx.string(value, path) {
                    match t.parse::<Tier>() {
                        Ok(tier) => c.tier = tier,
                        Err(_) => ctx.error(
                            value,
                            path,
                            format!("unknown tier {t:?}; expected one of dev.small, dev.medium, dev.large, dev.xlarge"),
                            did_you_mean(&t, Tier::ALL.iter().map(|t| t.id())),
                        ),
                    }
                }
            }
            "services" => {
                c.services = read_services(ctx, value);
            }
            "install" => c.install = ctx.string_or_list(value, path).unwrap_or_default(),
            "processes" => c.processes = read_processes(ctx, value),
            "tabs" => tabs_node = Some(value),
            "env" => c.env = read_env(ctx, value),
            "secrets" => c.secrets = read_secret_names(ctx, value),
            "ports" => c.ports = read_ports(ctx, value),
            "gpu" => c.gpu = read_gpu(ctx, value),
            "image" => match &value.data {
                YamlData::Mapping(_) => c.image_build = read_image_build(ctx, value),
                _ => {
                    if let Some(image) = ctx.string(value, path) {
                        match crate::image_ref::check(&image) {
                            Ok(_) => c.image = Some(image),
                            Err(why) => ctx.error(
                                value,
                                path,
                                why,
                                Some("name an image of `pinacle image list` (like `base`), a registry image (like `python:3.13` or `ghcr.io/owner/image:tag`), or `build: {dockerfile: Dockerfile}`".into()),
                            ),
                        }
                    }
                }
            },
            "features" => c.features = read_features(ctx, value),
            "onCreate" => c.on_create = ctx.string_or_list(value, path).unwrap_or_default(),
            "postCreate" => c.post_create = ctx.string_or_list(value, path).unwrap_or_default(),
            "postStart" => c.post_start = ctx.string_or_list(value, path).unwrap_or_default(),
            "idleTimeout" => c.idle_timeout = read_idle_timeout(ctx, value),
            "previews" => c.previews = read_previews(ctx, value),
            "github" => c.github = read_github(ctx, value),
            _ => {}
        }
    }
    if let Some(tabs) = tabs_node {
        c.tabs = read_tabs(ctx, tabs, &c);
    }
    Some(c)
}

fn read_version(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) {
    let ok = match &node.data {
        YamlData::Value(Scalar::String(s)) => s == VERSION || s == "1",
        YamlData::Value(Scalar::FloatingPoint(f)) => f.into_inner() == 1.0,
        YamlData::Value(Scalar::Integer(i)) => *i == 1,
        _ => false,
    };
    if !ok {
        ctx.error(
            node,
            "version",
            format!("unsupported version {}; this Pinacle reads version \"1.0\"", crate::yaml::describe(node)),
            Some("write `version: \"1.0\"`".into()),
        );
    }
}

fn read_services(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> Vec<String> {
    let Some(items) = ctx.list(node, "services", "a list of service names") else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    let mut assistant: Option<(String, usize)> = None;
    for (i, item) in items.iter().enumerate() {
        let path = index("services", i);
        let Some(id) = ctx.string(item, &path) else { continue };
        let Some(service) = Service::find(&id) else {
            let ids: Vec<_> = Service::ids().collect();
            ctx.error(
                item,
                &path,
                format!("unknown service {id:?}; expected one of {}", ids.join(", ")),
                did_you_mean(&id, ids.iter().copied()),
            );
            continue;
        };
        if out.contains(&id) {
            ctx.error(item, &path, format!("{id:?} is listed twice"), Some("remove one of them".into()));
            continue;
        }
        if let Some(why) = service.unsupported {
            // kept in the file (it reads back the same), left out of the pod
            ctx.warn(item, &path, format!("{why}; the pod is created without it"), None);
        }
        if service.is_coding_assistant() {
            if let Some((first, line)) = &assistant {
                ctx.error(
                    item,
                    &path,
                    format!("at most one AI coding assistant per pod; {first:?} is already listed on line {line}"),
                    Some(format!("keep either {first:?} or {id:?}")),
                );
                continue;
            }
            assistant = Some((id.clone(), item.span.start.line()));
        }
        out.push(id);
    }
    out
}

fn read_processes(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> Vec<Process> {
    let Some(items) = ctx.list(node, "processes", "a list of processes") else { return Vec::new() };
    let mut out: Vec<Process> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index("processes", i);
        let Some(fields) = ctx.fields(item, &path, "a process", PROCESS_FIELDS) else { continue };
        let mut name = None;
        let mut name_node = None;
        let mut p = Process { name: String::new(), display_name: None, start_command: Vec::new(), url: None, health_check: Vec::new() };
        let mut ok = true;
        for (key, value) in &fields {
            let fpath = join(&path, key);
            match *key {
                "name" => {
                    name_node = Some(*value);
                    name = ctx.non_empty(value, &fpath);
                }
                "displayName" => p.display_name = ctx.string(value, &fpath),
                "startCommand" => match ctx.string_or_list(value, &fpath) {
                    Some(cmd) if !cmd.is_empty() => p.start_command = cmd,
                    Some(_) => {
                        ctx.error(value, &fpath, "must not be empty", None);
                        ok = false;
                    }
                    None => ok = false,
                },
                "url" => {
                    if let Some(url) = ctx.string(value, &fpath) {
                        match local_url(&url) {
                            Ok(_) => p.url = Some(url),
                            Err(why) => {
                                ctx.error(value, &fpath, why, Some("write it as http://localhost:PORT".into()));
                                ok = false;
                            }
                        }
                    }
                }
                "healthCheck" => p.health_check = ctx.string_or_list(value, &fpath).unwrap_or_default(),
                _ => {}
            }
        }
        if !fields.iter().any(|(k, _)| *k == "startCommand") {
            ctx.error(item, &path, "missing field startCommand: the command that runs the process", Some("add `startCommand: npm run dev`".into()));
            ok = false;
        }
        match (name, name_node) {
            (Some(n), Some(node)) => {
                if !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                    ctx.error(node, &join(&path, "name"), format!("{n:?}: use letters, digits, - and _"), None);
                    ok = false;
                } else if let Some(prev) = out.iter().position(|q| q.name == n) {
                    ctx.error(node, &join(&path, "name"), format!("{n:?} is already the name of processes[{prev}]"), Some("give each process its own name".into()));
                    ok = false;
                } else if Service::find(&n).is_some_and(|s| s.start.is_some()) {
                    ctx.error(node, &join(&path, "name"), format!("{n:?} is the name of a service's process"), Some(format!("call it something else, like \"my-{n}\"")));
                    ok = false;
                } else if p.url.is_some() && !valid_service_name(&n) {
                    // a process with a URL names a host
                    let lower: String = n.to_ascii_lowercase().replace('_', "-").chars().take(MAX_SERVICE).collect();
                    ctx.error(
                        node,
                        &join(&path, "name"),
                        format!("{n:?} serves a url, so it names a host: use at most {MAX_SERVICE} lower-case letters, digits and dashes"),
                        Some(format!("did you mean {lower:?}?")),
                    );
                    ok = false;
                }
                p.name = n;
            }
            (None, None) => {
                ctx.error(item, &path, "missing field name", Some("add `name: app`".into()));
                ok = false;
            }
            _ => ok = false,
        }
        if ok {
            out.push(p);
        }
    }
    out
}

fn read_tabs(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, c: &PinacleConfig) -> Vec<Tab> {
    let Some(items) = ctx.list(node, "tabs", "a list of tabs") else { return Vec::new() };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index("tabs", i);
        let Some(fields) = ctx.fields(item, &path, "a tab", TAB_FIELDS) else { continue };
        let mut tab = Tab { name: String::new(), service: None, url: None };
        let mut ok = true;
        for (key, value) in &fields {
            let fpath = join(&path, key);
            match *key {
                "name" => match ctx.non_empty(value, &fpath) {
                    Some(n) => tab.name = n,
                    None => ok = false,
                },
                "service" => {
                    let Some(s) = ctx.string(value, &fpath) else {
                        ok = false;
                        continue;
                    };
                    if Service::find(&s).is_none() {
                        let ids: Vec<_> = Service::ids().collect();
                        ctx.error(value, &fpath, format!("unknown service {s:?}"), did_you_mean(&s, ids.iter().copied()));
                        ok = false;
                    } else if !c.services.contains(&s) {
                        ctx.error(value, &fpath, format!("service {s:?} is not in `services`"), Some(format!("add {s:?} to `services`")));
                        ok = false;
                    } else {
                        tab.service = Some(s);
                    }
                }
                "url" => {
                    let Some(u) = ctx.non_empty(value, &fpath) else {
                        ok = false;
                        continue;
                    };
                    if local_url(&u).is_ok() || u.starts_with("https://") {
                        tab.url = Some(u);
                    } else {
                        ctx.error(value, &fpath, format!("{u:?} is neither http://localhost:PORT in the pod nor an https:// page"), None);
                        ok = false;
                    }
                }
                _ => {}
            }
        }
        if !fields.iter().any(|(k, _)| *k == "name") {
            ctx.error(item, &path, "missing field name", Some("add `name: Preview`".into()));
            ok = false;
        }
        if ok && tab.service.is_none() && tab.url.is_none() && !fields.iter().any(|(k, _)| *k == "service" || *k == "url") {
            ctx.error(item, &path, "a tab needs a `service` or a `url`", Some("add `url: http://localhost:3000`".into()));
            ok = false;
        }
        if ok {
            out.push(tab);
        }
    }
    out
}

/// Whether `s` is a usable environment variable name.
pub fn valid_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && s.len() <= 128
}

fn read_env(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let YamlData::Mapping(map) = &node.data else {
        ctx.expected(node, "env", "a mapping of NAME: value");
        return out;
    };
    for (key, value) in map {
        let Some(name) = scalar_str(key) else {
            ctx.expected(key, "env", "a variable name");
            continue;
        };
        let path = join("env", name);
        if !valid_env_name(name) {
            ctx.error(key, &path, format!("{name:?} is not a variable name: use letters, digits and _, not starting with a digit"), None);
            continue;
        }
        if name.starts_with("PINACLE_") {
            ctx.error(key, &path, "names starting with PINACLE_ are reserved", None);
            continue;
        }
        if let Some(v) = ctx.scalar_text(value, &path) {
            if v.contains('\0') {
                ctx.error(value, &path, "values may not contain NUL", None);
                continue;
            }
            out.insert(name.to_owned(), v);
        }
    }
    out
}

fn read_secret_names(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> Vec<String> {
    let Some(items) = ctx.list(node, "secrets", "a list of secret names") else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index("secrets", i);
        let Some(name) = ctx.string(item, &path) else { continue };
        if !valid_env_name(&name) {
            ctx.error(item, &path, format!("{name:?} is not a secret name: use letters, digits and _"), None);
        } else if out.contains(&name) {
            ctx.error(item, &path, format!("{name:?} is listed twice"), None);
        } else {
            out.push(name);
        }
    }
    out
}

fn read_ports(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> Vec<Port> {
    let Some(items) = ctx.list(node, "ports", "a list of ports") else { return Vec::new() };
    let mut out: Vec<Port> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index("ports", i);
        let mut port_node = item;
        let port = if let YamlData::Value(Scalar::Integer(_)) = item.data {
            ctx.integer(item, &path, 1, 65535).map(|p| Port { port: p as u16, name: None, public: false })
        } else {
            let Some(fields) = ctx.fields(item, &path, "a port (a number, or port/name/public)", PORT_FIELDS) else { continue };
            let mut p = Port { port: 0, name: None, public: false };
            let mut ok = true;
            for (key, value) in &fields {
                let fpath = join(&path, key);
                match *key {
                    "port" => {
                        port_node = value;
                        match ctx.integer(value, &fpath, 1, 65535) {
                            Some(n) => p.port = n as u16,
                            None => ok = false,
                        }
                    }
                    "name" => p.name = ctx.string(value, &fpath),
                    "public" => match ctx.boolean(value, &fpath) {
                        Some(b) => p.public = b,
                        None => ok = false,
                    },
                    _ => {}
                }
            }
            if !fields.iter().any(|(k, _)| *k == "port") {
                ctx.error(item, &path, "missing field port", Some("add `port: 3000`".into()));
                ok = false;
            }
            ok.then_some(p)
        };
        let Some(port) = port else { continue };
        if out.iter().any(|p| p.port == port.port) {
            ctx.error(port_node, &path, format!("port {} is listed twice", port.port), None);
            continue;
        }
        out.push(port);
    }
    out
}

fn read_gpu(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> Option<Gpu> {
    if let YamlData::Value(Scalar::Integer(_)) = node.data {
        return ctx.integer(node, "gpu", 1, 8).map(|n| Gpu { count: n as u32, vendor: "nvidia".into() });
    }
    let fields = ctx.fields(node, "gpu", "a GPU request (a count, or count/vendor)", GPU_FIELDS)?;
    let mut gpu = Gpu { count: 1, vendor: "nvidia".into() };
    let mut ok = true;
    for (key, value) in fields {
        let path = join("gpu", key);
        match key {
            "count" => match ctx.integer(value, &path, 1, 8) {
                Some(n) => gpu.count = n as u32,
                None => ok = false,
            },
            "vendor" => match ctx.string(value, &path) {
                Some(v) if v.eq_ignore_ascii_case("nvidia") => gpu.vendor = "nvidia".into(),
                Some(v) => {
                    ctx.error(value, &path, format!("GPU vendor {v:?} is not supported; only nvidia GPUs can be passed through"), did_you_mean(&v, ["nvidia"]));
                    ok = false;
                }
                None => ok = false,
            },
            _ => {}
        }
    }
    ok.then_some(gpu)
}

fn read_previews(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> Option<Previews> {
    match &node.data {
        YamlData::Value(Scalar::Boolean(true)) => return Some(Previews::default()),
        YamlData::Value(Scalar::Boolean(false)) => return None,
        _ => {}
    }
    let fields = ctx.fields(node, "previews", "`true`, or the previews' settings", PREVIEW_FIELDS)?;
    let mut p = Previews::default();
    let mut ok = true;
    for (key, value) in fields {
        let path = join("previews", key);
        match key {
            "forks" | "secrets" | "pullOnPush" | "prebuild" => match ctx.boolean(value, &path) {
                Some(b) if key == "forks" => p.forks = b,
                Some(b) if key == "secrets" => p.secrets = b,
                Some(b) if key == "prebuild" => p.prebuild = b,
                Some(b) => p.pull_on_push = b,
                None => ok = false,
            },
            "staleAfter" | "retention" => {
                let never = matches!(&value.data, YamlData::Value(Scalar::String(s)) if s.trim() == "never");
                let secs = match &value.data {
                    YamlData::Value(Scalar::Integer(0)) => Some(0),
                    YamlData::Value(Scalar::String(s)) => parse_duration(s),
                    _ => None,
                };
                match (key, never, secs) {
                    ("staleAfter", true, _) => p.stale_after = None,
                    (_, false, Some(secs)) if secs <= MAX_IDLE_SECS * 12 => {
                        if key == "staleAfter" {
                            p.stale_after = Some(secs.max(60));
                        } else {
                            p.retention = secs;
                        }
                    }
                    _ => {
                        let also = if key == "staleAfter" { ", or never" } else { ", or 0" };
                        ctx.error(value, &path, format!("expected a duration like 7d, 12h or 30m{also} (at most a year); found {}", crate::yaml::describe(value)), None);
                        ok = false;
                    }
                }
            }
            _ => {}
        }
    }
    ok.then_some(p)
}

fn read_github(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> Option<GithubSettings> {
    let fields = ctx.fields(node, "github", "GitHub settings", GITHUB_FIELDS)?;
    let mut g = GithubSettings::default();
    for (key, value) in fields {
        let path = join("github", key);
        if key == "deployKey" {
            g.deploy_key = match &value.data {
                YamlData::Value(Scalar::Boolean(true)) => Some(DeployKeyAccess::Read),
                YamlData::Value(Scalar::Boolean(false)) => None,
                YamlData::Value(Scalar::String(s)) if s == "read" => Some(DeployKeyAccess::Read),
                YamlData::Value(Scalar::String(s)) if s == "write" => Some(DeployKeyAccess::Write),
                _ => {
                    ctx.error(value, &path, format!("expected true, false, read or write; found {}", crate::yaml::describe(value)), Some("write `deployKey: read`".into()));
                    return None;
                }
            };
        }
    }
    Some(g)
}

fn read_image_build(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> Option<ImageBuild> {
    let fields = ctx.fields(node, "image", "an image name, or `build` with a Dockerfile", &["build"])?;
    let Some((_, build)) = fields.into_iter().find(|(k, _)| *k == "build") else {
        ctx.error(node, "image", "expected `build:` with the Dockerfile to build", Some("image:\n  build:\n    dockerfile: Dockerfile".into()));
        return None;
    };
    let fields = ctx.fields(build, "image.build", "a Dockerfile build", BUILD_FIELDS)?;
    let mut out = ImageBuild { dockerfile: String::new(), context: dot(), args: BTreeMap::new(), target: None };
    let mut ok = true;
    for (key, value) in fields {
        let path = join("image.build", key);
        match key {
            "dockerfile" | "context" => match ctx.non_empty(value, &path) {
                Some(p) => match repository_path(&p) {
                    Ok(p) if key == "dockerfile" => out.dockerfile = p,
                    Ok(p) => out.context = p,
                    Err(why) => {
                        ctx.error(value, &path, why, Some("give a path inside the repository, relative to its root".into()));
                        ok = false;
                    }
                },
                None => ok = false,
            },
            "args" => {
                let YamlData::Mapping(map) = &value.data else {
                    ctx.expected(value, &path, "a mapping of ARG: value");
                    ok = false;
                    continue;
                };
                for (k, v) in map {
                    let Some(name) = scalar_str(k) else {
                        ctx.expected(k, &path, "an ARG name");
                        ok = false;
                        continue;
                    };
                    let arg_path = join(&path, name);
                    if !valid_env_name(name) {
                        ctx.error(k, &arg_path, format!("{name:?} is not an ARG name: use letters, digits and _"), None);
                        ok = false;
                    } else if let Some(v) = ctx.scalar_text(v, &arg_path) {
                        out.args.insert(name.to_owned(), v);
                    }
                }
            }
            "target" => match ctx.non_empty(value, &path) {
                Some(t) if t.len() <= 128 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) => out.target = Some(t),
                Some(t) => {
                    ctx.error(value, &path, format!("{t:?} is not a stage name"), None);
                    ok = false;
                }
                None => ok = false,
            },
            _ => {}
        }
    }
    if out.dockerfile.is_empty() {
        ctx.error(build, "image.build.dockerfile", "the Dockerfile to build is missing", Some("dockerfile: Dockerfile".into()));
        ok = false;
    }
    ok.then_some(out)
}

/// `path` (relative to a repository's root) with `.` and `..` resolved;
/// refused when absolute or when it leaves the repository.
pub fn repository_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        return Err(format!("{path:?} is absolute; paths are relative to the repository's root"));
    }
    if path.contains('\0') || path.len() > 1024 {
        return Err(format!("{path:?} is not a path"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("{path:?} leaves the repository"));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(if parts.is_empty() { ".".into() } else { parts.join("/") })
}

/// Whether `id` can name a feature: an OCI reference with a registry
/// (`ghcr.io/devcontainers/features/node:1`).
pub fn check_feature_reference(id: &str) -> Result<(), String> {
    if id.starts_with("./") || id.starts_with("../") {
        return Err(format!("{id:?} is a feature in the repository; only features published to a registry are supported (not supported yet: local features)"));
    }
    if id.starts_with("https://") || id.starts_with("http://") {
        return Err(format!("{id:?} is a feature tarball URL; only features published to a registry (OCI artifacts) are supported"));
    }
    if !id.contains('/') {
        return Err(format!("{id:?} names no registry; write the whole reference, like `ghcr.io/devcontainers/features/{id}:1`"));
    }
    crate::image_ref::check(id).map(|_| ()).map_err(|why| why.replace("image reference", "feature reference"))
}

fn read_features(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> Vec<FeatureRequest> {
    let mut out = Vec::new();
    let YamlData::Mapping(map) = &node.data else {
        ctx.expected(node, "features", "a mapping of feature reference: options");
        return out;
    };
    if map.len() > MAX_FEATURE_REQUESTS {
        ctx.error(node, "features", format!("{} features; at most {MAX_FEATURE_REQUESTS} are accepted", map.len()), None);
        return out;
    }
    for (key, value) in map {
        let Some(id) = scalar_str(key) else {
            ctx.expected(key, "features", "a feature reference");
            continue;
        };
        let path = join("features", id);
        if let Err(why) = check_feature_reference(id) {
            ctx.error(key, &path, why, None);
            continue;
        }
        let mut options = BTreeMap::new();
        match &value.data {
            YamlData::Mapping(opts) => {
                for (k, v) in opts {
                    let Some(name) = scalar_str(k) else {
                        ctx.expected(k, &path, "an option name");
                        continue;
                    };
                    if let Some(v) = ctx.scalar_text(v, &join(&path, name)) {
                        options.insert(name.to_owned(), v);
                    }
                }
            }
            // `node: "20"`: the version, as in devcontainer.json
            YamlData::Value(Scalar::String(v)) => {
                options.insert("version".to_owned(), v.to_string());
            }
            _ if is_null(value) => {}
            _ => {
                ctx.expected(value, &path, "a mapping of option: value (or {})");
                continue;
            }
        }
        out.push(FeatureRequest { id: id.to_owned(), options });
    }
    out
}

fn read_idle_timeout(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>) -> Option<IdleTimeout> {
    let parsed = match &node.data {
        YamlData::Value(Scalar::Integer(m)) if *m > 0 => Some((*m as u64).saturating_mul(60)),
        YamlData::Value(Scalar::String(s)) if s.trim() == "never" => return Some(IdleTimeout::Never(Never::Never)),
        YamlData::Value(Scalar::String(s)) => parse_duration(s),
        _ => None,
    };
    match parsed {
        Some(secs) if (60..=MAX_IDLE_SECS).contains(&secs) => Some(IdleTimeout::After(secs)),
        Some(_) => {
            ctx.error(node, "idleTimeout", "must be between 1 minute and 30 days", None);
            None
        }
        None => {
            ctx.error(node, "idleTimeout", format!("expected a duration like 30m, 2h or 90s, a number of minutes, or never; found {}", crate::yaml::describe(node)), None);
            None
        }
    }
}

/// `90s`, `30m`, `2h`, `1d` (or combinations like `1h30m`) in seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            number.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
    }
    if !number.is_empty() {
        return None;
    }
    Some(total)
}

/// The port and path of a URL that points into the pod:
/// `http://localhost:3000/app` → `(3000, "/app")`.
pub fn local_url(url: &str) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{url:?}: {p:?} is not a port"))?),
        None => (authority, if url.starts_with("https") { 443 } else { 80 }),
    };
    if !matches!(host, "localhost" | "127.0.0.1" | "0.0.0.0" | "[::1]") {
        return Err(format!("{url:?} must point into the pod (localhost), not {host:?}"));
    }
    let path = if path.is_empty() { "/".to_owned() } else if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    Ok((port, path))
}

impl IdleTimeout {
    /// Seconds, or `None` for never.
    pub fn seconds(self) -> Option<u64> {
        match self {
            IdleTimeout::After(s) => Some(s),
            IdleTimeout::Never(_) => None,
        }
    }
}

impl PinacleConfig {
    /// A configuration with every default (`dev.small`, no services).
    pub fn empty() -> Self {
        empty_config()
    }
}

/// Writes `c` in the canonical style: the header comment, fields in the
/// order of [`FIELDS`], two-space indentation, defaults left out except
/// `version`, `tier` and `services`.
pub fn to_canonical_yaml(c: &PinacleConfig) -> String {
    use std::fmt::Write;
    let mut out = String::from("# Pinacle Pod Configuration\n# https://pinacle.dev/docs/pinacle-yaml\n");
    let _ = writeln!(out, "version: \"{VERSION}\"");
    if let Some(name) = &c.name {
        let _ = writeln!(out, "name: {}", quote(name));
    }
    if let Some(t) = &c.template {
        let _ = writeln!(out, "template: {}", quote(t));
    }
    let _ = writeln!(out, "tier: {}", c.tier.id());
    write_list(&mut out, "services", &c.services, "");
    write_commands(&mut out, "install", &c.install, "");
    if !c.processes.is_empty() {
        out.push_str("processes:\n");
        for p in &c.processes {
            let _ = writeln!(out, "  - name: {}", quote(&p.name));
            if let Some(d) = &p.display_name {
                let _ = writeln!(out, "    displayName: {}", quote(d));
            }
            write_commands(&mut out, "startCommand", &p.start_command, "    ");
            if let Some(u) = &p.url {
                let _ = writeln!(out, "    url: {}", quote(u));
            }
            write_commands(&mut out, "healthCheck", &p.health_check, "    ");
        }
    }
    if !c.tabs.is_empty() {
        out.push_str("tabs:\n");
        for t in &c.tabs {
            let _ = writeln!(out, "  - name: {}", quote(&t.name));
            if let Some(s) = &t.service {
                let _ = writeln!(out, "    service: {}", quote(s));
            }
            if let Some(u) = &t.url {
                let _ = writeln!(out, "    url: {}", quote(u));
            }
        }
    }
    if !c.env.is_empty() {
        out.push_str("env:\n");
        for (k, v) in &c.env {
            let _ = writeln!(out, "  {k}: {}", quote(v));
        }
    }
    write_list(&mut out, "secrets", &c.secrets, "");
    if !c.ports.is_empty() {
        out.push_str("ports:\n");
        for p in &c.ports {
            let _ = writeln!(out, "  - port: {}", p.port);
            if let Some(n) = &p.name {
                let _ = writeln!(out, "    name: {}", quote(n));
            }
            let _ = writeln!(out, "    public: {}", p.public);
        }
    }
    if let Some(g) = &c.gpu {
        let _ = writeln!(out, "gpu:\n  count: {}\n  vendor: {}", g.count, g.vendor);
    }
    if let Some(i) = &c.image {
        let _ = writeln!(out, "image: {}", quote(i));
    } else if let Some(b) = &c.image_build {
        let _ = writeln!(out, "image:\n  build:\n    dockerfile: {}\n    context: {}", quote(&b.dockerfile), quote(&b.context));
        if !b.args.is_empty() {
            out.push_str("    args:\n");
            for (k, v) in &b.args {
                let _ = writeln!(out, "      {k}: {}", quote(v));
            }
        }
        if let Some(t) = &b.target {
            let _ = writeln!(out, "    target: {}", quote(t));
        }
    }
    if !c.features.is_empty() {
        out.push_str("features:\n");
        for f in &c.features {
            if f.options.is_empty() {
                let _ = writeln!(out, "  {}: {{}}", quote(&f.id));
            } else {
                let _ = writeln!(out, "  {}:", quote(&f.id));
                for (k, v) in &f.options {
                    let _ = writeln!(out, "    {}: {}", quote(k), quote(v));
                }
            }
        }
    }
    write_commands(&mut out, "onCreate", &c.on_create, "");
    write_commands(&mut out, "postCreate", &c.post_create, "");
    write_commands(&mut out, "postStart", &c.post_start, "");
    match c.idle_timeout {
        Some(IdleTimeout::After(s)) if s % 3600 == 0 => { let _ = writeln!(out, "idleTimeout: {}h", s / 3600); }
        Some(IdleTimeout::After(s)) if s % 60 == 0 => { let _ = writeln!(out, "idleTimeout: {}m", s / 60); }
        Some(IdleTimeout::After(s)) => { let _ = writeln!(out, "idleTimeout: {s}s"); }
        Some(IdleTimeout::Never(_)) => out.push_str("idleTimeout: never\n"),
        None => {}
    }
    if let Some(p) = &c.previews {
        out.push_str("previews:\n");
        let _ = writeln!(out, "  forks: {}\n  secrets: {}\n  pullOnPush: {}\n  prebuild: {}", p.forks, p.secrets, p.pull_on_push, p.prebuild);
        match p.stale_after {
            Some(s) => { let _ = writeln!(out, "  staleAfter: {s}s"); }
            None => out.push_str("  staleAfter: never\n"),
        }
        let _ = writeln!(out, "  retention: {}", if p.retention == 0 { "0".to_owned() } else { format!("{}s", p.retention) });
    }
    if let Some(g) = &c.github {
        out.push_str("github:\n");
        match g.deploy_key {
            Some(DeployKeyAccess::Read) => out.push_str("  deployKey: read\n"),
            Some(DeployKeyAccess::Write) => out.push_str("  deployKey: write\n"),
            None => out.push_str("  deployKey: false\n"),
        }
    }
    out
}

fn write_list(out: &mut String, key: &str, items: &[String], indent: &str) {
    if items.is_empty() {
        if key == "services" {
            out.push_str("services: []\n");
        }
        return;
    }
    out.push_str(&format!("{indent}{key}:\n"));
    for i in items {
        out.push_str(&format!("{indent}  - {}\n", quote(i)));
    }
}

fn write_commands(out: &mut String, key: &str, commands: &[String], indent: &str) {
    match commands {
        [] => {}
        [one] if one.contains('\n') => {
            out.push_str(&format!("{indent}{key}: |\n"));
            for line in one.lines() {
                if line.is_empty() {
                    out.push('\n');
                } else {
                    out.push_str(&format!("{indent}  {line}\n"));
                }
            }
        }
        [one] => out.push_str(&format!("{indent}{key}: {}\n", quote(one))),
        many => write_list(out, key, many, indent),
    }
}

/// A YAML scalar for `s`: plain when that reads back as the same string,
/// double-quoted (JSON escapes are valid YAML) otherwise.
fn quote(s: &str) -> String {
    let plain_safe = !s.is_empty()
        && !s.starts_with(|c: char| c.is_whitespace() || "-?:,[]{}#&*!|>'\"%@`~".contains(c))
        && !s.ends_with(char::is_whitespace)
        // `c:` at the end of a value starts a mapping
        && !s.ends_with(':')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains(['\n', '\t', '\r'])
        && s.chars().all(|c| !c.is_control())
        && !matches!(s.to_ascii_lowercase().as_str(), "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~" | "y" | "n")
        && s.parse::<f64>().is_err()
        && !s.starts_with("0x")
        && !s.starts_with("0o");
    if plain_safe {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, quote, to_canonical_yaml, DeployKeyAccess, ParseOptions, Previews};

    #[test]
    fn previews_and_deploy_keys_read_and_write_back() {
        let text = "version: \"1.0\"\npreviews:\n  forks: true\n  pullOnPush: true\n  prebuild: true\n  staleAfter: 2d\n  retention: 12h\ngithub:\n  deployKey: write\n";
        let (c, _) = parse("pinacle.yaml", text, ParseOptions { strict: true }).unwrap();
        let p = c.previews.clone().unwrap();
        assert_eq!((p.forks, p.secrets, p.pull_on_push, p.stale_after, p.retention, p.prebuild), (true, false, true, Some(2 * 86400), 12 * 3600, true));
        assert_eq!(c.github.as_ref().unwrap().deploy_key, Some(DeployKeyAccess::Write));
        let (again, _) = parse("pinacle.yaml", &to_canonical_yaml(&c), ParseOptions { strict: true }).unwrap();
        assert_eq!((again.previews, again.github), (c.previews, c.github));
        let (c, _) = parse("pinacle.yaml", "version: \"1.0\"\npreviews: true\ngithub: {deployKey: true}\n", ParseOptions { strict: true }).unwrap();
        assert_eq!(c.previews, Some(Previews::default()));
        assert_eq!(c.github.unwrap().deploy_key, Some(DeployKeyAccess::Read));
        let e = parse("pinacle.yaml", "version: \"1.0\"\npreviews:\n  staleAfter: soon\n", ParseOptions { strict: true }).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("previews.staleAfter") && shown.contains("pinacle.yaml:3:"), "{shown}");
        let e = parse("pinacle.yaml", "version: \"1.0\"\ngithub:\n  deployKey: admin\n", ParseOptions { strict: true }).unwrap_err();
        assert!(e.to_string().contains("github.deployKey"), "{e}");
    }

    #[test]
    fn quoted_commands_read_back_as_the_same_string() {
        for s in ["make", "c:", "a: b", "x #y", "-v", "true", "1.5", " lead", "trail ", "0x1f", "npm run dev", "https://x.y:8080/p", "echo 'a'"] {
            let text = format!("version: \"1.0\"\ninstall: {}\n", quote(s));
            let (c, _) = parse("t.yaml", &text, ParseOptions { strict: true }).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.install, vec![s.to_owned()], "{text}");
        }
    }
}

