//! The router's registries as files: `models.yml` (providers and models
//! with their prices), `intents.yml` (what a task asks for and which models
//! may serve it), `policies.yml` (budgets, latency SLOs, privacy, provider
//! allow and deny lists, fallback order, retries, circuit breakers,
//! streaming) and `modules.yml` (AgentPackage manifests).
//!
//! Every problem is located by file, line, column and field path, with a
//! did-you-mean where one is likely (the same walker as `pinacle.yaml`).
//! References across files (an intent's candidates, a model's provider) are
//! checked after all four are read and reported where they are written.
//! A model without a price is an error: nothing is ever billed at $0 by
//! omission (a free local model says `price: {input: 0, output: 0}`).

use std::collections::BTreeMap;

use pinacle_config::diagnostic::did_you_mean;
use pinacle_config::yaml::{self, Ctx};
use pinacle_config::{Diagnostic, Diagnostics, Severity};
use saphyr::MarkedYaml;
use serde::Serialize;

/// The four file names, in the order they are read.
pub const FILES: [&str; 4] = ["models.yml", "intents.yml", "policies.yml", "modules.yml"];

/// Where a reference was written, to report it there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loc {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub path: String,
}

impl Loc {
    fn of(ctx: &Ctx<'_>, node: &MarkedYaml<'_>, path: &str) -> Self {
        let start = node.span.start;
        Self { file: ctx.file.to_owned(), line: start.line().max(1), column: start.col() + 1, path: path.to_owned() }
    }
}

/// Who may see a task's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Privacy {
    /// Only providers on this platform's own machines (`cloud: false`).
    LocalOnly,
    /// Local providers first, cloud providers after them.
    Hybrid,
    /// Any allowed provider, ordered by the policy.
    AllowApi,
}

impl Privacy {
    pub const NAMES: [&'static str; 3] = ["local-only", "hybrid", "allow-api"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local-only" => Some(Self::LocalOnly),
            "hybrid" => Some(Self::Hybrid),
            "allow-api" => Some(Self::AllowApi),
            _ => None,
        }
    }

    /// The stricter of two.
    pub fn strictest(self, other: Self) -> Self {
        self.min(other)
    }
}

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI's chat completions (OpenAI, vLLM, llama.cpp, any compatible server).
    Openai,
    /// Azure OpenAI: OpenAI's protocol, `api-key` header, deployments in the path.
    Azure,
    /// Anthropic Messages.
    Anthropic,
    /// Ollama's `/api/chat` (NDJSON).
    Ollama,
}

impl ProviderKind {
    pub const NAMES: [&'static str; 4] = ["openai", "azure", "anthropic", "ollama"];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "openai" => Some(Self::Openai),
            "azure" => Some(Self::Azure),
            "anthropic" => Some(Self::Anthropic),
            "ollama" => Some(Self::Ollama),
            _ => None,
        }
    }
}

/// One upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provider {
    pub id: String,
    pub kind: ProviderKind,
    /// Base URL (`https://api.openai.com/v1`, `http://127.0.0.1:8080/v1`,
    /// `https://api.anthropic.com`, `http://127.0.0.1:11434`).
    pub url: String,
    /// Whether it runs outside this platform's machines: `local-only`
    /// tasks never reach a cloud provider.
    pub cloud: bool,
    /// The environment variable of the server holding its key (read when
    /// the registry is loaded; never logged or answered).
    pub api_key_env: Option<String>,
    /// A platform secret of the caller (user or team) holding their own
    /// key, preferred over the server's when set.
    pub api_key_secret: Option<String>,
    /// Azure's `api-version`.
    pub api_version: Option<String>,
    /// Whole-request limit for a call that does not stream.
    pub timeout_ms: u64,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Chat,
    Embedding,
}

/// One model of one provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    /// The name clients ask for.
    pub id: String,
    pub provider: String,
    /// The name sent upstream (default: `id`).
    pub upstream: String,
    /// Its tier (`local`, `small`, `large`, ...): intents allow tiers and
    /// the policy sets latency SLOs per tier.
    pub tier: String,
    pub kind: ModelKind,
    pub price: Price,
    /// Context window, in tokens.
    pub context: u32,
    /// Most output tokens one call may ask for (the worst case reserved).
    pub max_output: u32,
    /// Models to try after this one when a client names it.
    pub fallbacks: Vec<String>,
    #[serde(skip)]
    pub loc: Option<Loc>,
}

/// One kind of task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intent {
    pub id: String,
    pub description: String,
    /// The model tried first when it qualifies.
    pub default_route: String,
    /// Every model that may serve it (the default route included or not).
    pub candidates: Vec<String>,
    pub privacy: Privacy,
    /// Tiers allowed (empty: any).
    pub tiers: Vec<String>,
    /// Output cap for its tasks (else the model's).
    pub max_output: Option<u32>,
    /// Modules run on its tasks' input, in order.
    pub modules: Vec<String>,
    #[serde(skip)]
    pub refs: Vec<(String, Loc)>,
}

/// How long a budget's spend accumulates before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
    /// Never resets.
    Total,
}

impl Period {
    pub const NAMES: [&'static str; 3] = ["day", "month", "total"];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            "total" => Some(Self::Total),
            _ => None,
        }
    }

    /// The window `now` falls in (`2026-12-06`, `2026-12`, `all`).
    pub fn window(self, now: chrono::DateTime<chrono::Utc>) -> String {
        match self {
            Self::Day => now.format("%Y-%m-%d").to_string(),
            Self::Month => now.format("%Y-%m").to_string(),
            Self::Total => "all".to_owned(),
        }
    }
}

/// A budget for one kind of subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    /// What each subject may spend per period unless overridden (none: no
    /// limit but the hard cap).
    pub default_usd: Option<f64>,
    /// The most any subject may spend, overrides included.
    pub hard_cap_usd: f64,
    pub period: Period,
    /// Per subject id (a user, team, key id; for tasks, not used).
    pub overrides: BTreeMap<String, f64>,
}

impl Budget {
    /// The cap for `subject` in USD.
    pub fn cap_for(&self, subject: &str) -> f64 {
        let wanted = self.overrides.get(subject).copied().or(self.default_usd).unwrap_or(self.hard_cap_usd);
        wanted.min(self.hard_cap_usd)
    }
}

/// Budgets by scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Budgets {
    /// Per task: the cap on one task's worst case (a request may ask for
    /// less, or more up to the hard cap).
    pub task: Option<Budget>,
    pub user: Option<Budget>,
    pub team: Option<Budget>,
    /// Per API key (or pod token).
    pub key: Option<Budget>,
}

/// Retries of one provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retries {
    /// Extra attempts on the same provider after a retryable failure.
    pub max: u32,
    /// The longest `Retry-After` honoured; a longer wait moves on to the next candidate.
    pub max_retry_after_ms: u64,
}

/// Circuit breakers per provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breaker {
    /// Consecutive failures that open it.
    pub failures: u32,
    /// How long it stays open before one probe is let through.
    pub open_ms: u64,
}

/// Streaming limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamPolicy {
    /// No first chunk within this: the next candidate is tried.
    pub first_token_timeout_ms: u64,
    /// No chunk for this long after the first: the stream is cut.
    pub stall_timeout_ms: u64,
    /// After a failure past the first chunk, go on with the next candidate
    /// (at most once, the partial output carried) instead of ending with
    /// an error. A request may turn it on for itself.
    pub continue_on_failure: bool,
}

/// The operator's policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// The intent of a request that names none.
    pub default_intent: Option<String>,
    pub budgets: Budgets,
    /// p95 latency goals by tier or model id (a model's own wins).
    pub latency_slo_ms: BTreeMap<String, u64>,
    /// Intents whose tasks are local-only whatever their file says.
    pub local_only_intents: Vec<String>,
    /// Subjects (`user:<id>`, `team:<id>`) whose tasks never leave the platform.
    pub local_only_subjects: Vec<String>,
    /// Providers allowed (empty: all).
    pub allow_providers: Vec<String>,
    pub deny_providers: Vec<String>,
    /// Providers in the order they are preferred (unlisted ones after).
    pub fallback_order: Vec<String>,
    pub retries: Retries,
    pub breaker: Breaker,
    pub stream: StreamPolicy,
    #[serde(skip)]
    pub refs: Vec<(String, Loc)>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_intent: None,
            budgets: Budgets::default(),
            latency_slo_ms: BTreeMap::new(),
            local_only_intents: Vec::new(),
            local_only_subjects: Vec::new(),
            allow_providers: Vec::new(),
            deny_providers: Vec::new(),
            fallback_order: Vec::new(),
            retries: Retries { max: 1, max_retry_after_ms: 5_000 },
            breaker: Breaker { failures: 5, open_ms: 30_000 },
            stream: StreamPolicy { first_token_timeout_ms: 30_000, stall_timeout_ms: 60_000, continue_on_failure: false },
            refs: Vec::new(),
        }
    }
}

/// How a module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleRuntime {
    Wasm,
    Subprocess,
}

/// An AgentPackage manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Module {
    pub name: String,
    pub version: String,
    pub runtime: ModuleRuntime,
    /// Where its code comes from (a path beside the registry, or an OCI reference).
    pub source: String,
    pub memory_mb: u32,
    pub fuel: u64,
    pub timeout_ms: u64,
    /// Hosts it may reach (empty: none).
    pub network: Vec<String>,
    /// Directories it may read (empty: none).
    pub filesystem: Vec<String>,
    pub intents: Vec<String>,
    pub input_schema: Option<serde_json::Value>,
    pub output_schema: Option<serde_json::Value>,
    /// A subprocess module's sandbox image (a name the host agent builds,
    /// like `busybox` or `python`).
    pub image: Option<String>,
    /// A subprocess module's program and arguments (its files are at
    /// `/module` in the sandbox).
    pub command: Vec<String>,
    /// The installed package it came from (`None`: modules.yml).
    pub package: Option<String>,
    #[serde(skip)]
    pub loc: Option<Loc>,
}

/// One loaded, checked version of all four files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Registry {
    pub providers: BTreeMap<String, Provider>,
    pub models: BTreeMap<String, Model>,
    pub intents: BTreeMap<String, Intent>,
    pub policy: Policy,
    pub modules: BTreeMap<String, Module>,
    /// SHA-256 of the four files as read (hex), to tell versions apart.
    pub digest: String,
}

impl Registry {
    /// Reads the four files' texts (`None`: the file is absent, its
    /// defaults apply). Returns the registry with its warnings, or every
    /// problem.
    pub fn parse(texts: [Option<&str>; 4]) -> Result<(Self, Diagnostics), Diagnostics> {
        Self::parse_with(texts, &[])
    }

    /// [`Registry::parse`] with installed packages' manifests as modules
    /// beside modules.yml's (a name both use is an error).
    pub fn parse_with(texts: [Option<&str>; 4], packages: &[PackageText]) -> Result<(Self, Diagnostics), Diagnostics> {
        let mut all = Diagnostics::default();
        let mut reg = Registry::default();
        let mut digest = sha2::Sha256::default();
        for (name, text) in FILES.iter().zip(texts) {
            use sha2::Digest;
            digest.update(name.as_bytes());
            digest.update([0]);
            let Some(text) = text else { continue };
            digest.update(text.as_bytes());
            digest.update([0]);
            let mut ctx = Ctx::new(name, true);
            if let Some(root) = yaml::load(&mut ctx, text) {
                match *name {
                    "models.yml" => read_models(&mut ctx, &root, &mut reg),
                    "intents.yml" => read_intents(&mut ctx, &root, &mut reg),
                    "policies.yml" => read_policy(&mut ctx, &root, &mut reg),
                    _ => read_modules(&mut ctx, &root, &mut reg),
                }
            }
            all.0.extend(ctx.diags.0);
        }
        for p in packages {
            use sha2::Digest;
            digest.update(p.file.as_bytes());
            digest.update([0]);
            digest.update(p.digest.as_bytes());
            digest.update([0]);
            let mut ctx = Ctx::new(&p.file, true);
            if let Some(root) = yaml::load(&mut ctx, &p.text) {
                read_package(&mut ctx, &root, p, &mut reg);
            }
            all.0.extend(ctx.diags.0);
        }
        {
            use sha2::Digest;
            reg.digest = hex::encode(digest.finalize());
        }
        check_references(&reg, &mut all);
        all.0.sort_by(|a, b| (FILES.iter().position(|f| *f == a.file), a.line, a.column).cmp(&(FILES.iter().position(|f| *f == b.file), b.line, b.column)));
        if all.has_errors() {
            Err(all)
        } else {
            Ok((reg, all))
        }
    }

    /// The SLO of `model` in ms: its own entry, else its tier's.
    pub fn slo_ms(&self, model: &Model) -> Option<u64> {
        self.policy.latency_slo_ms.get(&model.id).or_else(|| self.policy.latency_slo_ms.get(&model.tier)).copied()
    }
}

fn err(diags: &mut Diagnostics, loc: &Loc, message: String, suggestion: Option<String>) {
    diags.0.push(Diagnostic {
        severity: Severity::Error,
        file: loc.file.clone(),
        line: loc.line,
        column: loc.column,
        path: loc.path.clone(),
        message,
        suggestion,
    });
}

/// References across files: each is reported where it is written.
fn check_references(reg: &Registry, diags: &mut Diagnostics) {
    let model_ids = || reg.models.keys().map(String::as_str);
    for model in reg.models.values() {
        let Some(loc) = &model.loc else { continue };
        if !reg.providers.contains_key(&model.provider) {
            let suggestion = did_you_mean(&model.provider, reg.providers.keys().map(String::as_str))
                .or_else(|| Some("declare it under providers:".to_owned()));
            err(diags, &Loc { path: format!("{}.provider", loc.path), ..loc.clone() }, format!("unknown provider {:?}", model.provider), suggestion);
        }
        for f in &model.fallbacks {
            if !reg.models.contains_key(f) {
                err(diags, loc, format!("fallback {f:?} is not a model"), did_you_mean(f, model_ids()));
            }
        }
    }
    for intent in reg.intents.values() {
        for (what, loc) in &intent.refs {
            match what.split_once(':') {
                Some(("model", id)) => match reg.models.get(id) {
                    None => err(diags, loc, format!("unknown model {id:?}"), did_you_mean(id, model_ids()).or_else(|| Some("declare it in models.yml".into()))),
                    Some(m) if m.kind != ModelKind::Chat => err(diags, loc, format!("{id:?} is an embedding model; intents route chat"), None),
                    Some(m) if !intent.tiers.is_empty() && !intent.tiers.contains(&m.tier) => err(
                        diags,
                        loc,
                        format!("{id:?} is of tier {:?}, which this intent does not allow ({})", m.tier, intent.tiers.join(", ")),
                        Some("add its tier to tiers: or pick another model".into()),
                    ),
                    Some(_) => {}
                },
                Some(("module", name)) if !reg.modules.contains_key(name) => {
                    err(diags, loc, format!("unknown module {name:?}"), did_you_mean(name, reg.modules.keys().map(String::as_str)).or_else(|| Some("declare it in modules.yml".into())));
                }
                _ => {}
            }
        }
    }
    for (what, loc) in &reg.policy.refs {
        match what.split_once(':') {
            Some(("intent", id)) if !reg.intents.contains_key(id) => {
                err(diags, loc, format!("unknown intent {id:?}"), did_you_mean(id, reg.intents.keys().map(String::as_str)).or_else(|| Some("declare it in intents.yml".into())))
            }
            Some(("provider", id)) if !reg.providers.contains_key(id) => {
                err(diags, loc, format!("unknown provider {id:?}"), did_you_mean(id, reg.providers.keys().map(String::as_str)).or_else(|| Some("declare it in models.yml under providers:".into())))
            }
            Some(("slo", id)) if !reg.models.contains_key(id) && !reg.models.values().any(|m| m.tier == id) => err(
                diags,
                loc,
                format!("{id:?} is neither a model nor a tier of one"),
                did_you_mean(id, reg.models.values().map(|m| m.tier.as_str()).chain(model_ids())),
            ),
            _ => {}
        }
    }
}

/// A name of models, providers, intents and modules: 1 to 128 characters
/// of letters, digits and `._-:/@`.
fn check_id(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, path: &str, id: &str) -> bool {
    let ok = !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/@".contains(c));
    if !ok {
        ctx.error(node, path, format!("{id:?} is not a valid name"), Some("use 1 to 128 letters, digits and . _ - : / @".into()));
    }
    ok
}

fn string_list(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, path: &str) -> Vec<String> {
    let Some(items) = ctx.list(node, path, "a list of strings") else { return Vec::new() };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(s) = ctx.non_empty(item, &yaml::index(path, i)) {
            out.push(s);
        }
    }
    out
}

/// The entries of a mapping of named things (`models: {id: {...}}`).
fn named<'n, 'i>(ctx: &mut Ctx<'_>, node: &'n MarkedYaml<'i>, path: &str, what: &str) -> Vec<(String, &'n MarkedYaml<'i>, &'n MarkedYaml<'i>)> {
    let saphyr::YamlData::Mapping(map) = &node.data else {
        if !yaml::is_null(node) {
            ctx.expected(node, path, what);
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let Some(name) = yaml::scalar_str(key) else {
            ctx.error(key, path, format!("names must be strings, found {}", yaml::describe(key)), Some("put the name in quotes".into()));
            continue;
        };
        let p = yaml::join(path, name);
        if check_id(ctx, key, &p, name) {
            out.push((name.to_owned(), key, value));
        }
    }
    out
}

fn usd(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, path: &str) -> Option<f64> {
    ctx.number(node, path, 0.0, 1_000_000.0)
}

const MODELS_FIELDS: &[&str] = &["providers", "models"];
const PROVIDER_FIELDS: &[&str] = &["kind", "url", "cloud", "api_key_env", "api_key_secret", "api_version", "timeout_ms"];
const MODEL_FIELDS: &[&str] = &["provider", "upstream", "tier", "kind", "price", "context", "max_output", "fallbacks"];
const PRICE_FIELDS: &[&str] = &["input", "output"];

fn read_models(ctx: &mut Ctx<'_>, root: &MarkedYaml<'_>, reg: &mut Registry) {
    if yaml::is_null(root) {
        return;
    }
    let Some(fields) = ctx.fields(root, "", "models.yml", MODELS_FIELDS) else { return };
    for (key, value) in fields {
        match key {
            "providers" => {
                for (id, _, node) in named(ctx, value, "providers", "a mapping of provider names to providers") {
                    let path = format!("providers.{id}");
                    if let Some(p) = read_provider(ctx, node, &path, &id) {
                        reg.providers.insert(id, p);
                    }
                }
            }
            _ => {
                for (id, _, node) in named(ctx, value, "models", "a mapping of model names to models") {
                    let path = format!("models.{id}");
                    if let Some(m) = read_model(ctx, node, &path, &id) {
                        reg.models.insert(id, m);
                    }
                }
            }
        }
    }
}

fn read_provider(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, path: &str, id: &str) -> Option<Provider> {
    let fields = ctx.fields(node, path, "a provider", PROVIDER_FIELDS)?;
    let (mut kind, mut url, mut cloud) = (None, None, None);
    let mut p = Provider { id: id.to_owned(), kind: ProviderKind::Openai, url: String::new(), cloud: true, api_key_env: None, api_key_secret: None, api_version: None, timeout_ms: 120_000 };
    let mut ok = true;
    for (key, value) in fields {
        let fp = yaml::join(path, key);
        match key {
            "kind" => match ctx.string(value, &fp) {
                Some(s) => match ProviderKind::parse(&s) {
                    Some(k) => kind = Some(k),
                    None => {
                        ctx.error(value, &fp, format!("unknown kind {s:?}; expected one of {}", ProviderKind::NAMES.join(", ")), did_you_mean(&s, ProviderKind::NAMES));
                        ok = false;
                    }
                },
                None => ok = false,
            },
            "url" => match ctx.non_empty(value, &fp) {
                Some(s) if s.starts_with("http://") || s.starts_with("https://") => url = Some(s.trim_end_matches('/').to_owned()),
                Some(s) => {
                    ctx.error(value, &fp, format!("{s:?} is not an http(s) URL"), Some("write it as http://host:port/v1 or https://…".into()));
                    ok = false;
                }
                None => ok = false,
            },
            "cloud" => cloud = ctx.boolean(value, &fp),
            "api_key_env" => p.api_key_env = ctx.non_empty(value, &fp),
            "api_key_secret" => p.api_key_secret = ctx.non_empty(value, &fp),
            "api_version" => p.api_version = ctx.non_empty(value, &fp),
            _ => p.timeout_ms = ctx.integer(value, &fp, 100, 3_600_000).map_or(p.timeout_ms, |v| v as u64),
        }
    }
    let Some(kind) = kind else {
        if ok {
            ctx.error(node, path, "a provider needs kind:", Some(format!("one of {}", ProviderKind::NAMES.join(", "))));
        }
        return None;
    };
    let Some(url) = url else {
        if ok {
            ctx.error(node, path, "a provider needs url:", Some("its base URL, like http://127.0.0.1:8080/v1".into()));
        }
        return None;
    };
    let Some(cloud) = cloud else {
        ctx.error(node, path, "a provider must say whether it is a cloud service (cloud: true or false)", Some("local-only tasks never reach cloud: true providers".into()));
        return None;
    };
    if kind == ProviderKind::Azure && p.api_version.is_none() {
        ctx.error(node, path, "an azure provider needs api_version:", Some("like 2024-10-21".into()));
        return None;
    }
    p.kind = kind;
    p.url = url;
    p.cloud = cloud;
    ok.then_some(p)
}

fn read_model(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, path: &str, id: &str) -> Option<Model> {
    let fields = ctx.fields(node, path, "a model", MODEL_FIELDS)?;
    let mut m = Model {
        id: id.to_owned(),
        provider: String::new(),
        upstream: id.to_owned(),
        tier: String::new(),
        kind: ModelKind::Chat,
        price: Price { input: 0.0, output: 0.0 },
        context: 8192,
        max_output: 4096,
        fallbacks: Vec::new(),
        loc: Some(Loc::of(ctx, node, path)),
    };
    let (mut provider, mut tier, mut price, mut ok) = (false, false, false, true);
    for (key, value) in fields {
        let fp = yaml::join(path, key);
        match key {
            "provider" => {
                if let Some(s) = ctx.non_empty(value, &fp) {
                    m.provider = s;
                    provider = true;
                }
            }
            "upstream" => m.upstream = ctx.non_empty(value, &fp).unwrap_or(m.upstream),
            "tier" => {
                if let Some(s) = ctx.non_empty(value, &fp) {
                    tier = check_id(ctx, value, &fp, &s);
                    m.tier = s;
                }
            }
            "kind" => match ctx.string(value, &fp).as_deref() {
                Some("chat") => m.kind = ModelKind::Chat,
                Some("embedding") => m.kind = ModelKind::Embedding,
                Some(s) => {
                    ctx.error(value, &fp, format!("unknown kind {s:?}; expected chat or embedding"), did_you_mean(s, ["chat", "embedding"]));
                    ok = false;
                }
                None => ok = false,
            },
            "price" => {
                let Some(pf) = ctx.fields(value, &fp, "a price (input and output, USD per million tokens)", PRICE_FIELDS) else {
                    ok = false;
                    continue;
                };
                let (mut input, mut output) = (None, None);
                for (k, v) in pf {
                    let p = yaml::join(&fp, k);
                    if k == "input" {
                        input = usd(ctx, v, &p);
                    } else {
                        output = usd(ctx, v, &p);
                    }
                }
                match (input, output) {
                    (Some(input), Some(output)) => {
                        m.price = Price { input, output };
                        price = true;
                    }
                    _ => {
                        ctx.error(value, &fp, "a price needs both input and output (USD per million tokens)", Some("write price: {input: 0.15, output: 0.60}".into()));
                        ok = false;
                    }
                }
            }
            "context" => m.context = ctx.integer(value, &fp, 1, 10_000_000).map_or(m.context, |v| v as u32),
            "max_output" => m.max_output = ctx.integer(value, &fp, 1, 1_000_000).map_or(m.max_output, |v| v as u32),
            _ => m.fallbacks = string_list(ctx, value, &fp),
        }
    }
    if !provider {
        ctx.error(node, path, "a model needs provider:", Some("the name of one of providers:".into()));
        ok = false;
    }
    if !tier && m.kind == ModelKind::Chat {
        ctx.error(node, path, "a chat model needs tier:", Some("like local, small or large: intents and latency SLOs name tiers".into()));
        ok = false;
    }
    if !price {
        ctx.error(
            node,
            path,
            "a model needs a price: a model without one would be billed $0",
            Some("write price: {input: USD, output: USD} per million tokens (0 and 0 for a free local model)".into()),
        );
        ok = false;
    }
    ok.then_some(m)
}

const INTENTS_FIELDS: &[&str] = &["intents"];
const INTENT_FIELDS: &[&str] = &["description", "default_route", "candidates", "privacy", "tiers", "max_output", "modules"];

fn read_intents(ctx: &mut Ctx<'_>, root: &MarkedYaml<'_>, reg: &mut Registry) {
    if yaml::is_null(root) {
        return;
    }
    let Some(fields) = ctx.fields(root, "", "intents.yml", INTENTS_FIELDS) else { return };
    for (_, value) in fields {
        for (id, _, node) in named(ctx, value, "intents", "a mapping of intent names to intents") {
            let path = format!("intents.{id}");
            if let Some(i) = read_intent(ctx, node, &path, &id) {
                reg.intents.insert(id, i);
            }
        }
    }
}

fn read_intent(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, path: &str, id: &str) -> Option<Intent> {
    let fields = ctx.fields(node, path, "an intent", INTENT_FIELDS)?;
    let mut i = Intent {
        id: id.to_owned(),
        description: String::new(),
        default_route: String::new(),
        candidates: Vec::new(),
        privacy: Privacy::Hybrid,
        tiers: Vec::new(),
        max_output: None,
        modules: Vec::new(),
        refs: Vec::new(),
    };
    let mut ok = true;
    let mut privacy = false;
    for (key, value) in fields {
        let fp = yaml::join(path, key);
        match key {
            "description" => i.description = ctx.string(value, &fp).unwrap_or_default(),
            "default_route" => {
                if let Some(s) = ctx.non_empty(value, &fp) {
                    i.refs.push((format!("model:{s}"), Loc::of(ctx, value, &fp)));
                    i.default_route = s;
                }
            }
            "candidates" => {
                if let Some(items) = ctx.list(value, &fp, "a list of model names") {
                    for (n, item) in items.iter().enumerate() {
                        let ip = yaml::index(&fp, n);
                        if let Some(s) = ctx.non_empty(item, &ip) {
                            i.refs.push((format!("model:{s}"), Loc::of(ctx, item, &ip)));
                            i.candidates.push(s);
                        }
                    }
                }
            }
            "privacy" => match ctx.string(value, &fp) {
                Some(s) => match Privacy::parse(&s) {
                    Some(p) => {
                        i.privacy = p;
                        privacy = true;
                    }
                    None => {
                        ctx.error(value, &fp, format!("unknown privacy {s:?}; expected one of {}", Privacy::NAMES.join(", ")), did_you_mean(&s, Privacy::NAMES));
                        ok = false;
                    }
                },
                None => ok = false,
            },
            "tiers" => i.tiers = string_list(ctx, value, &fp),
            "max_output" => i.max_output = ctx.integer(value, &fp, 1, 1_000_000).map(|v| v as u32),
            _ => {
                if let Some(items) = ctx.list(value, &fp, "a list of module names") {
                    for (n, item) in items.iter().enumerate() {
                        let ip = yaml::index(&fp, n);
                        if let Some(s) = ctx.non_empty(item, &ip) {
                            i.refs.push((format!("module:{s}"), Loc::of(ctx, item, &ip)));
                            i.modules.push(s);
                        }
                    }
                }
            }
        }
    }
    if i.default_route.is_empty() && i.candidates.is_empty() {
        ctx.error(node, path, "an intent needs default_route: or candidates:", Some("name the models that may serve it".into()));
        ok = false;
    }
    if !privacy {
        ctx.error(node, path, "an intent must say its privacy", Some(format!("privacy: one of {}", Privacy::NAMES.join(", "))));
        ok = false;
    }
    if !i.default_route.is_empty() && !i.candidates.contains(&i.default_route) {
        i.candidates.insert(0, i.default_route.clone());
    }
    ok.then_some(i)
}

const POLICY_FIELDS: &[&str] = &["default_intent", "budgets", "latency_slo_ms", "privacy", "providers", "fallback_order", "retries", "circuit_breaker", "stream"];
const BUDGETS_FIELDS: &[&str] = &["task", "user", "team", "key"];
const BUDGET_FIELDS: &[&str] = &["default_usd", "hard_cap_usd", "period", "overrides"];
const PRIVACY_FIELDS: &[&str] = &["local_only_intents", "local_only_subjects"];
const ALLOW_FIELDS: &[&str] = &["allow", "deny"];
const RETRY_FIELDS: &[&str] = &["max", "max_retry_after_ms"];
const BREAKER_FIELDS: &[&str] = &["failures", "open_ms"];
const STREAM_FIELDS: &[&str] = &["first_token_timeout_ms", "stall_timeout_ms", "continue_on_failure"];

fn read_policy(ctx: &mut Ctx<'_>, root: &MarkedYaml<'_>, reg: &mut Registry) {
    if yaml::is_null(root) {
        return;
    }
    let Some(fields) = ctx.fields(root, "", "policies.yml", POLICY_FIELDS) else { return };
    let mut p = Policy::default();
    for (key, value) in fields {
        let fp = key;
        match key {
            "default_intent" => {
                if let Some(s) = ctx.non_empty(value, fp) {
                    p.refs.push((format!("intent:{s}"), Loc::of(ctx, value, fp)));
                    p.default_intent = Some(s);
                }
            }
            "budgets" => {
                let Some(bf) = ctx.fields(value, fp, "budgets (task, user, team, key)", BUDGETS_FIELDS) else { continue };
                for (scope, node) in bf {
                    let bp = yaml::join(fp, scope);
                    let b = read_budget(ctx, node, &bp, scope == "task");
                    match scope {
                        "task" => p.budgets.task = b,
                        "user" => p.budgets.user = b,
                        "team" => p.budgets.team = b,
                        _ => p.budgets.key = b,
                    }
                }
            }
            "latency_slo_ms" => {
                for (name, key_node, node) in named(ctx, value, fp, "a mapping of tiers or models to milliseconds") {
                    let np = yaml::join(fp, &name);
                    if let Some(ms) = ctx.integer(node, &np, 1, 3_600_000) {
                        p.refs.push((format!("slo:{name}"), Loc::of(ctx, key_node, &np)));
                        p.latency_slo_ms.insert(name, ms as u64);
                    }
                }
            }
            "privacy" => {
                let Some(pf) = ctx.fields(value, fp, "privacy lists", PRIVACY_FIELDS) else { continue };
                for (k, node) in pf {
                    let kp = yaml::join(fp, k);
                    if k == "local_only_intents" {
                        if let Some(items) = ctx.list(node, &kp, "a list of intent names") {
                            for (n, item) in items.iter().enumerate() {
                                let ip = yaml::index(&kp, n);
                                if let Some(s) = ctx.non_empty(item, &ip) {
                                    p.refs.push((format!("intent:{s}"), Loc::of(ctx, item, &ip)));
                                    p.local_only_intents.push(s);
                                }
                            }
                        }
                    } else {
                        for s in string_list(ctx, node, &kp) {
                            if !(s.starts_with("user:") || s.starts_with("team:")) {
                                ctx.error(node, &kp, format!("{s:?} is not a subject"), Some("write user:<id> or team:<id>".into()));
                            }
                            p.local_only_subjects.push(s);
                        }
                    }
                }
            }
            "providers" => {
                let Some(af) = ctx.fields(value, fp, "provider lists (allow, deny)", ALLOW_FIELDS) else { continue };
                for (k, node) in af {
                    let kp = yaml::join(fp, k);
                    let list = provider_refs(ctx, node, &kp, &mut p.refs);
                    if k == "allow" {
                        p.allow_providers = list;
                    } else {
                        p.deny_providers = list;
                    }
                }
            }
            "fallback_order" => p.fallback_order = provider_refs(ctx, value, fp, &mut p.refs),
            "retries" => {
                let Some(rf) = ctx.fields(value, fp, "retries", RETRY_FIELDS) else { continue };
                for (k, node) in rf {
                    let kp = yaml::join(fp, k);
                    if k == "max" {
                        p.retries.max = ctx.integer(node, &kp, 0, 10).map_or(p.retries.max, |v| v as u32);
                    } else {
                        p.retries.max_retry_after_ms = ctx.integer(node, &kp, 0, 600_000).map_or(p.retries.max_retry_after_ms, |v| v as u64);
                    }
                }
            }
            "circuit_breaker" => {
                let Some(cf) = ctx.fields(value, fp, "a circuit breaker", BREAKER_FIELDS) else { continue };
                for (k, node) in cf {
                    let kp = yaml::join(fp, k);
                    if k == "failures" {
                        p.breaker.failures = ctx.integer(node, &kp, 1, 1000).map_or(p.breaker.failures, |v| v as u32);
                    } else {
                        p.breaker.open_ms = ctx.integer(node, &kp, 1, 3_600_000).map_or(p.breaker.open_ms, |v| v as u64);
                    }
                }
            }
            _ => {
                let Some(sf) = ctx.fields(value, fp, "streaming limits", STREAM_FIELDS) else { continue };
                for (k, node) in sf {
                    let kp = yaml::join(fp, k);
                    match k {
                        "first_token_timeout_ms" => p.stream.first_token_timeout_ms = ctx.integer(node, &kp, 1, 3_600_000).map_or(p.stream.first_token_timeout_ms, |v| v as u64),
                        "stall_timeout_ms" => p.stream.stall_timeout_ms = ctx.integer(node, &kp, 1, 3_600_000).map_or(p.stream.stall_timeout_ms, |v| v as u64),
                        _ => p.stream.continue_on_failure = ctx.boolean(node, &kp).unwrap_or(false),
                    }
                }
            }
        }
    }
    reg.policy = p;
}

fn provider_refs(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, path: &str, refs: &mut Vec<(String, Loc)>) -> Vec<String> {
    let Some(items) = ctx.list(node, path, "a list of provider names") else { return Vec::new() };
    let mut out = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let ip = yaml::index(path, n);
        if let Some(s) = ctx.non_empty(item, &ip) {
            refs.push((format!("provider:{s}"), Loc::of(ctx, item, &ip)));
            out.push(s);
        }
    }
    out
}

fn read_budget(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, path: &str, task: bool) -> Option<Budget> {
    let fields = ctx.fields(node, path, "a budget", BUDGET_FIELDS)?;
    let mut b = Budget { default_usd: None, hard_cap_usd: 0.0, period: Period::Month, overrides: BTreeMap::new() };
    let mut cap = None;
    for (key, value) in fields {
        let fp = yaml::join(path, key);
        match key {
            "default_usd" => b.default_usd = usd(ctx, value, &fp),
            "hard_cap_usd" => cap = usd(ctx, value, &fp),
            "period" => {
                if let Some(s) = ctx.string(value, &fp) {
                    match Period::parse(&s) {
                        Some(_) if task => ctx.error(value, &fp, "a task's budget has no period", Some("remove period:".into())),
                        Some(p) => b.period = p,
                        None => ctx.error(value, &fp, format!("unknown period {s:?}; expected one of {}", Period::NAMES.join(", ")), did_you_mean(&s, Period::NAMES)),
                    }
                }
            }
            _ => {
                for (subject, _, v) in named(ctx, value, &fp, "a mapping of subject ids to USD") {
                    let sp = yaml::join(&fp, &subject);
                    if let Some(x) = usd(ctx, v, &sp) {
                        b.overrides.insert(subject, x);
                    }
                }
            }
        }
    }
    let Some(cap) = cap else {
        ctx.error(node, path, "a budget needs hard_cap_usd:", Some("the most any one subject may spend, in USD".into()));
        return None;
    };
    b.hard_cap_usd = cap;
    if let Some(d) = b.default_usd {
        if d > cap {
            ctx.error(node, &yaml::join(path, "default_usd"), format!("the default ({d}) is above the hard cap ({cap})"), Some("lower default_usd or raise hard_cap_usd".into()));
            return None;
        }
    }
    for (s, v) in &b.overrides {
        if *v > cap {
            ctx.warn(node, &format!("{path}.overrides.{s}"), format!("{v} is above the hard cap ({cap}); the hard cap applies"), None);
        }
    }
    Some(b)
}

const MODULES_FIELDS: &[&str] = &["modules"];
const MODULE_FIELDS: &[&str] = &["version", "runtime", "source", "image", "command", "resources", "permissions", "intents", "input_schema", "output_schema"];
const PACKAGE_FIELDS: &[&str] = &["name", "version", "runtime", "source", "image", "command", "resources", "permissions", "intents", "input_schema", "output_schema"];

/// An installed package's manifest, read beside the four files.
#[derive(Debug, Clone)]
pub struct PackageText {
    /// The name it was installed under.
    pub name: String,
    /// How diagnostics name the file (`packages/NAME/agent.yml`).
    pub file: String,
    pub text: String,
    /// Its unpacked files; its `source` is relative to this.
    pub dir: std::path::PathBuf,
    /// The package's manifest digest (a new version is a new registry).
    pub digest: String,
}

/// The `name:` of a package's manifest, if it has a plain one.
pub fn package_name(text: &str) -> Option<String> {
    let mut ctx = Ctx::new(MANIFEST_LABEL, false);
    let root = yaml::load(&mut ctx, text)?;
    let fields = ctx.fields(&root, "", "an AgentPackage manifest", PACKAGE_FIELDS)?;
    let (_, node) = fields.into_iter().find(|(k, _)| *k == "name")?;
    yaml::scalar_str(node).map(str::to_owned)
}

const MANIFEST_LABEL: &str = "agent.yml";

fn read_package(ctx: &mut Ctx<'_>, root: &MarkedYaml<'_>, p: &PackageText, reg: &mut Registry) {
    let Some(fields) = ctx.fields(root, "", "an AgentPackage manifest", PACKAGE_FIELDS) else { return };
    let named = fields.iter().find(|(k, _)| *k == "name").and_then(|(_, v)| ctx.string(v, "name"));
    match named {
        Some(n) if n == p.name => {}
        Some(n) => {
            ctx.error(root, "name", format!("the manifest names {n:?} but the package is installed as {:?}", p.name), Some("reinstall the package".into()));
            return;
        }
        None => {
            ctx.error(root, "name", "a package's agent.yml needs name:", Some("the module's name, as intents name it".into()));
            return;
        }
    }
    if reg.modules.contains_key(&p.name) {
        ctx.error(root, "name", format!("module {:?} is also declared in modules.yml", p.name), Some("remove one of them, or install the package under another name".into()));
        return;
    }
    let Some(mut m) = read_module_fields(ctx, root, "", &p.name, PACKAGE_FIELDS) else { return };
    // a package reaches its own files only: no absolute source, no `..`,
    // and no host directories (the operator grants those in modules.yml)
    let inside = std::path::Path::new(&m.source).components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if !inside {
        ctx.error(root, "source", format!("source {:?} leaves the package", m.source), Some("a path inside the package, like module.wasm or .".into()));
        return;
    }
    if !m.filesystem.is_empty() {
        ctx.error(root, "permissions.filesystem", "a package may not be granted host directories", Some("declare the module in modules.yml to grant directories".into()));
        return;
    }
    m.source = p.dir.join(&m.source).display().to_string();
    m.package = Some(p.name.clone());
    reg.modules.insert(p.name.clone(), m);
}
const RESOURCE_FIELDS: &[&str] = &["memory_mb", "fuel", "timeout_ms"];
/// A subprocess module's wall time when its manifest gives none (the
/// sandbox's start included).
pub const SUBPROCESS_TIMEOUT_MS: u64 = 5_000;
/// A subprocess module's memory when its manifest gives none.
pub const SUBPROCESS_MEMORY_MB: u32 = 64;
const PERMISSION_FIELDS: &[&str] = &["network", "filesystem"];

fn read_modules(ctx: &mut Ctx<'_>, root: &MarkedYaml<'_>, reg: &mut Registry) {
    if yaml::is_null(root) {
        return;
    }
    let Some(fields) = ctx.fields(root, "", "modules.yml", MODULES_FIELDS) else { return };
    for (_, value) in fields {
        for (name, _, node) in named(ctx, value, "modules", "a mapping of module names to AgentPackage manifests") {
            let path = format!("modules.{name}");
            if let Some(m) = read_module(ctx, node, &path, &name) {
                reg.modules.insert(name, m);
            }
        }
    }
}

fn read_module(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, path: &str, name: &str) -> Option<Module> {
    read_module_fields(ctx, node, path, name, MODULE_FIELDS)
}

fn read_module_fields(ctx: &mut Ctx<'_>, node: &MarkedYaml<'_>, path: &str, name: &str, allowed: &[&str]) -> Option<Module> {
    let fields = ctx.fields(node, path, "an AgentPackage manifest", allowed)?;
    let mut m = Module {
        name: name.to_owned(),
        version: "0.0.0".into(),
        runtime: ModuleRuntime::Wasm,
        source: String::new(),
        memory_mb: 16,
        fuel: 100_000_000,
        timeout_ms: 100,
        network: Vec::new(),
        filesystem: Vec::new(),
        intents: Vec::new(),
        input_schema: None,
        output_schema: None,
        image: None,
        command: Vec::new(),
        package: None,
        loc: Some(Loc::of(ctx, node, path)),
    };
    let (mut runtime, mut ok) = (false, true);
    let (mut timeout_set, mut memory_set) = (false, false);
    for (key, value) in fields {
        let fp = yaml::join(path, key);
        match key {
            "version" => m.version = ctx.non_empty(value, &fp).unwrap_or(m.version),
            "runtime" => match ctx.string(value, &fp).as_deref() {
                Some("wasm") => {
                    m.runtime = ModuleRuntime::Wasm;
                    runtime = true;
                }
                Some("subprocess") => {
                    m.runtime = ModuleRuntime::Subprocess;
                    runtime = true;
                }
                Some(s) => {
                    ctx.error(value, &fp, format!("unknown runtime {s:?}; expected wasm or subprocess"), did_you_mean(s, ["wasm", "subprocess"]));
                    ok = false;
                }
                None => ok = false,
            },
            "source" => m.source = ctx.non_empty(value, &fp).unwrap_or_default(),
            "name" => {}
            "image" => m.image = ctx.non_empty(value, &fp),
            "command" => m.command = string_list(ctx, value, &fp),
            "resources" => {
                let Some(rf) = ctx.fields(value, &fp, "resources", RESOURCE_FIELDS) else { continue };
                for (k, v) in rf {
                    let kp = yaml::join(&fp, k);
                    match k {
                        "memory_mb" => {
                            memory_set = true;
                            m.memory_mb = ctx.integer(v, &kp, 1, 4096).map_or(m.memory_mb, |x| x as u32);
                        }
                        "fuel" => m.fuel = ctx.integer(v, &kp, 1, i64::MAX).map_or(m.fuel, |x| x as u64),
                        _ => {
                            timeout_set = true;
                            m.timeout_ms = ctx.integer(v, &kp, 1, 600_000).map_or(m.timeout_ms, |x| x as u64);
                        }
                    }
                }
            }
            "permissions" => {
                let Some(pf) = ctx.fields(value, &fp, "permissions", PERMISSION_FIELDS) else { continue };
                for (k, v) in pf {
                    let kp = yaml::join(&fp, k);
                    if k == "network" {
                        m.network = string_list(ctx, v, &kp);
                    } else {
                        m.filesystem = string_list(ctx, v, &kp);
                    }
                }
            }
            "intents" => m.intents = string_list(ctx, value, &fp),
            "input_schema" => m.input_schema = Some(to_json(value)),
            _ => m.output_schema = Some(to_json(value)),
        }
    }
    if !runtime {
        ctx.error(node, path, "a module needs runtime:", Some("wasm or subprocess".into()));
        ok = false;
    }
    if m.source.is_empty() {
        let what = if m.runtime == ModuleRuntime::Subprocess { "the directory of its files (mounted at /module)" } else { "a .wasm/.wat path beside the manifest" };
        ctx.error(node, path, "a module needs source:", Some(what.into()));
        ok = false;
    }
    // a sandbox takes hundreds of milliseconds to start: subprocess
    // modules get defaults that leave room for it
    if m.runtime == ModuleRuntime::Subprocess {
        if !timeout_set {
            m.timeout_ms = SUBPROCESS_TIMEOUT_MS;
        }
        if !memory_set {
            m.memory_mb = SUBPROCESS_MEMORY_MB;
        }
    }
    if runtime && m.runtime == ModuleRuntime::Subprocess && m.command.is_empty() {
        ctx.error(node, path, "a subprocess module needs command:", Some("the program and its arguments, e.g. [\"/module/run\"]".into()));
        ok = false;
    }
    if runtime && m.runtime == ModuleRuntime::Wasm && (m.image.is_some() || !m.command.is_empty()) {
        ctx.error(node, path, "image: and command: are for runtime: subprocess", Some("remove them, or set runtime: subprocess".into()));
        ok = false;
    }
    ok.then_some(m)
}

/// A YAML subtree as JSON (schemas are written in YAML).
fn to_json(node: &MarkedYaml<'_>) -> serde_json::Value {
    use saphyr::{Scalar, YamlData};
    match &node.data {
        YamlData::Value(Scalar::Null) => serde_json::Value::Null,
        YamlData::Value(Scalar::Boolean(b)) => (*b).into(),
        YamlData::Value(Scalar::Integer(i)) => (*i).into(),
        YamlData::Value(Scalar::FloatingPoint(f)) => serde_json::Number::from_f64(f.into_inner()).map_or(serde_json::Value::Null, Into::into),
        YamlData::Value(Scalar::String(s)) => s.to_string().into(),
        YamlData::Sequence(items) => items.iter().map(to_json).collect(),
        YamlData::Mapping(map) => map
            .iter()
            .filter_map(|(k, v)| yaml::scalar_str(k).map(|k| (k.to_owned(), to_json(v))))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        _ => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const MODELS: &str = "providers:\n  local:\n    kind: openai\n    url: http://127.0.0.1:8080/v1\n    cloud: false\n  openai:\n    kind: openai\n    url: https://api.openai.com/v1\n    cloud: true\n    api_key_env: OPENAI_API_KEY\nmodels:\n  small-local:\n    provider: local\n    tier: local\n    price: {input: 0, output: 0}\n  gpt-mini:\n    provider: openai\n    upstream: gpt-4o-mini\n    tier: small\n    price: {input: 0.15, output: 0.6}\n    max_output: 1024\n";
    pub const INTENTS: &str = "intents:\n  chat:\n    default_route: small-local\n    candidates: [gpt-mini]\n    privacy: hybrid\n";
    pub const POLICIES: &str = "default_intent: chat\nbudgets:\n  user: {default_usd: 5, hard_cap_usd: 20, period: month}\nlatency_slo_ms: {local: 500, small: 2000}\nfallback_order: [local, openai]\n";

    #[test]
    fn a_good_registry_reads_whole() {
        let (reg, warnings) = Registry::parse([Some(MODELS), Some(INTENTS), Some(POLICIES), None]).expect("valid");
        assert!(warnings.0.is_empty(), "{warnings}");
        assert_eq!(reg.models["gpt-mini"].upstream, "gpt-4o-mini");
        assert_eq!(reg.models["gpt-mini"].price, Price { input: 0.15, output: 0.6 });
        assert_eq!(reg.intents["chat"].candidates, ["small-local", "gpt-mini"]);
        assert_eq!(reg.policy.budgets.user.as_ref().map(|b| b.cap_for("u1")), Some(5.0));
        assert_eq!(reg.slo_ms(&reg.models["small-local"]), Some(500));
        assert_eq!(reg.digest.len(), 64);
    }

    #[test]
    fn a_model_without_a_price_is_refused_where_it_is_written() {
        let models = MODELS.replace("    price: {input: 0.15, output: 0.6}\n", "");
        let e = Registry::parse([Some(&models), Some(INTENTS), Some(POLICIES), None]).expect_err("no price");
        let d = e.errors().next().expect("an error");
        assert_eq!((d.file.as_str(), d.line, d.path.as_str()), ("models.yml", 17, "models.gpt-mini"));
        assert!(d.message.contains("billed $0"), "{d}");
    }

    #[test]
    fn unknown_references_are_located_in_their_own_file_with_a_suggestion() {
        let intents = INTENTS.replace("[gpt-mini]", "[gpt-mnii]");
        let policies = POLICIES.replace("[local, openai]", "[local, opnai]");
        let e = Registry::parse([Some(MODELS), Some(&intents), Some(&policies), None]).expect_err("bad refs");
        let shown = e.to_string();
        assert!(shown.contains("intents.yml:4:18: error: intents.chat.candidates[0]: unknown model \"gpt-mnii\"; did you mean \"gpt-mini\"?"), "{shown}");
        assert!(shown.contains("policies.yml:5:25: error: fallback_order[1]: unknown provider \"opnai\"; did you mean \"openai\"?"), "{shown}");
    }

    #[test]
    fn typos_in_field_names_and_values_get_suggestions() {
        let intents = INTENTS.replace("privacy: hybrid", "privcy: hybrid");
        let e = Registry::parse([Some(MODELS), Some(&intents), None, None]).expect_err("typo");
        assert!(e.to_string().contains("did you mean \"privacy\"?"), "{e}");
        let intents = INTENTS.replace("privacy: hybrid", "privacy: local_only");
        let e = Registry::parse([Some(MODELS), Some(&intents), None, None]).expect_err("typo");
        assert!(e.to_string().contains("did you mean \"local-only\"?"), "{e}");
    }

    #[test]
    fn a_default_above_the_hard_cap_and_a_cloud_flag_left_out_are_errors() {
        let policies = POLICIES.replace("default_usd: 5", "default_usd: 50");
        assert!(Registry::parse([Some(MODELS), Some(INTENTS), Some(&policies), None]).is_err());
        let models = MODELS.replace("    cloud: false\n", "");
        let e = Registry::parse([Some(&models), None, None, None]).expect_err("no cloud flag");
        assert!(e.to_string().contains("cloud: true or false"), "{e}");
    }

    #[test]
    fn no_files_is_an_empty_registry_and_hostile_yaml_is_refused() {
        let (reg, _) = Registry::parse([None, None, None, None]).expect("empty");
        assert!(reg.models.is_empty());
        let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n";
        assert!(Registry::parse([Some(bomb), None, None, None]).is_err());
    }

    #[test]
    fn a_package_reaches_its_own_files_only() {
        let pkg = |text: &str| PackageText { name: "guard".into(), file: "packages/guard/agent.yml".into(), text: text.into(), dir: "/srv/p/guard".into(), digest: "sha256:1".into() };
        let ok = Registry::parse_with([None; 4], &[pkg("name: guard\nruntime: subprocess\nsource: .\ncommand: [/module/run]\n")]).expect("valid").0;
        let m = &ok.modules["guard"];
        assert_eq!((m.source.as_str(), m.package.as_deref(), m.timeout_ms, m.memory_mb), ("/srv/p/guard/.", Some("guard"), SUBPROCESS_TIMEOUT_MS, SUBPROCESS_MEMORY_MB));
        for (bad, what) in [
            ("name: guard\nruntime: subprocess\nsource: /\ncommand: [/bin/cat]\n", "leaves the package"),
            ("name: guard\nruntime: subprocess\nsource: ../../etc\ncommand: [/bin/cat]\n", "leaves the package"),
            ("name: guard\nruntime: wasm\nsource: m.wat\npermissions: {filesystem: [/]}\n", "host directories"),
            ("name: other\nruntime: wasm\nsource: m.wat\n", "installed as"),
        ] {
            let d = Registry::parse_with([None; 4], &[pkg(bad)]).expect_err(bad);
            let e = d.errors().next().expect("an error");
            assert!(e.message.contains(what), "{bad}: {}", e.message);
            assert_eq!(e.file, "packages/guard/agent.yml");
        }
    }

    #[test]
    fn modules_read_their_limits_and_schemas() {
        let modules = "modules:\n  redact:\n    runtime: wasm\n    source: redact.wat\n    resources: {memory_mb: 8, fuel: 1000000, timeout_ms: 20}\n    permissions: {network: []}\n    input_schema: {type: object, required: [text]}\n";
        let (reg, _) = Registry::parse([None, None, None, Some(modules)]).expect("valid");
        let m = &reg.modules["redact"];
        assert_eq!((m.memory_mb, m.fuel, m.timeout_ms), (8, 1_000_000, 20));
        assert_eq!(m.input_schema.as_ref().and_then(|s| s["required"][0].as_str()), Some("text"));
    }
}
