//! Importing `.devcontainer/devcontainer.json` (or `.devcontainer.json`)
//! when a repository has no `pinacle.yaml`.
//!
//! The file is JSONC (comments, trailing commas). What maps:
//! - `image`: any OCI reference (checked by [`crate::image_ref`]); the
//!   pod's host pulls it from its registry, pinned at creation.
//! - `build.dockerfile`: its `FROM` becomes the image like `image`; its
//!   `RUN` lines run once as install steps inside the pod's sandbox; `ENV`
//!   joins the pod's environment; `COPY`/`ADD` are refused, naming the line.
//! - `features`: [`FEATURES`] (node, python, rust, go, github-cli; git and
//!   common-utils are already in the base image) become install steps;
//!   the rest are reported (features are not pulled as OCI artifacts yet).
//! - `forwardPorts`, `portsAttributes` (`label`, `visibility: public`),
//!   `containerEnv` and `remoteEnv`.
//! - Every lifecycle command in string, array and object form:
//!   `onCreateCommand` and `updateContentCommand` → `onCreate`,
//!   `postCreateCommand` → `postCreate`, `postStartCommand` and
//!   `postAttachCommand` → `postStart`. `initializeCommand` runs on the
//!   user's machine in VS Code and is ignored here.
//! - `hostRequirements` → the smallest tier with that many CPUs, that much
//!   memory and storage; `gpu: true` → one GPU.
//! - `customizations.vscode.extensions` → the `code-server` service plus a
//!   step installing the extensions into it from the gallery (Open VSX);
//!   where the gallery is unreachable the step's log says "skipped: gallery
//!   unreachable" for each and the pod goes on (see
//!   [`crate::services::vscode_extensions_step`]).
//!
//! Everything else is reported as ignored.

use pinacle_orchestrator::Tier;
use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::dockerfile::{self, shell_quote, Instruction};
use crate::pinacle_yaml::{parse, to_canonical_yaml, Gpu, PinacleConfig, Port, ParseOptions};

/// Where devcontainer files are looked for, in order.
pub const PATHS: &[&str] = &[".devcontainer/devcontainer.json", ".devcontainer.json"];

/// Devcontainer features Pinacle knows, by id (the part after the last `/`,
/// before `:`), with the install step each becomes (`None`: already in the base image).
pub const FEATURES: &[(&str, Option<&str>)] = &[
    ("common-utils", None),
    ("git", None),
    ("node", Some("command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }")),
    ("python", Some("command -v pip3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip; }")),
    ("rust", Some("command -v cargo >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc cargo build-essential; }")),
    ("go", Some("command -v go >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang; }")),
    ("github-cli", Some("command -v gh >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gh; }")),
];

/// The result of an import: a `pinacle.yaml` equivalent, and what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub config: PinacleConfig,
    /// Warnings for everything ignored or approximated.
    pub report: Diagnostics,
}

/// Imports `text` (the contents of `file`). `read` returns other files of
/// the repository by path relative to the devcontainer file's directory (for
/// `build.dockerfile`).
pub fn import(file: &str, text: &str, read: &dyn Fn(&str) -> Option<String>) -> Result<Imported, Diagnostics> {
    let mut cx = Cx { file, text, diags: Diagnostics::default() };
    if text.len() > crate::yaml::MAX_FILE_BYTES {
        cx.error_at(1, 1, "", format!("the file is {} bytes; at most {} are accepted", text.len(), crate::yaml::MAX_FILE_BYTES), None);
        return Err(cx.diags);
    }
    let options = jsonc_parser::ParseOptions { allow_comments: true, allow_trailing_commas: true, allow_loose_object_property_names: false, allow_missing_commas: false, ..Default::default() };
    let value: Value = match std::panic::catch_unwind(|| jsonc_parser::parse_to_serde_value::<Option<Value>>(text, &options)) {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => Value::Object(Map::new()),
        Ok(Err(e)) => {
            cx.error_at(e.line_display(), e.column_display(), "", format!("not valid JSON: {}", e.kind()), None);
            return Err(cx.diags);
        }
        Err(_) => {
            cx.error_at(1, 1, "", "not valid JSON".into(), None);
            return Err(cx.diags);
        }
    };
    let Value::Object(obj) = value else {
        cx.error_at(1, 1, "", "expected an object at the top".into(), None);
        return Err(cx.diags);
    };
    let mut c = PinacleConfig::empty();
    c.services.push("web-terminal".into());
    let mut on_create = Vec::new();
    let mut post_create = Vec::new();
    let mut post_start = Vec::new();
    let mut extension_steps = Vec::new();
    for (key, value) in &obj {
        match key.as_str() {
            "name" | "$schema" => {}
            "image" => match value.as_str() {
                Some(image) => {
                    if let Some(image) = cx.check_image(key, image) {
                        c.image = Some(image);
                    }
                }
                None => cx.error(key, key, "expected a string".into(), None),
            },
            "build" => {
                if let Some(steps) = cx.build(value, read, &mut c) {
                    on_create.splice(0..0, steps);
                }
            }
            "dockerFile" => {
                let build = serde_json::json!({ "dockerfile": value });
                if let Some(steps) = cx.build(&build, read, &mut c) {
                    on_create.splice(0..0, steps);
                }
            }
            "features" => cx.features(value, &mut on_create),
            "forwardPorts" => cx.forward_ports(value, &mut c.ports),
            "portsAttributes" => {} // read with forwardPorts below
            "containerEnv" | "remoteEnv" => cx.env(key, value, &mut c),
            // in the spec's order, below
            "onCreateCommand" | "updateContentCommand" | "postCreateCommand" | "postStartCommand" | "postAttachCommand" => {}
            "initializeCommand" => cx.warn(key, key, "ignored: it runs on the user's own machine, not in the pod".into()),
            "hostRequirements" => cx.host_requirements(value, &mut c),
            "customizations" => cx.customizations(value, &mut c, &mut extension_steps),
            "workspaceFolder" | "workspaceMount" => cx.warn(key, key, "ignored: the repository is always at /workspace".into()),
            other => cx.warn(other, other, format!("{other:?} is not supported and was ignored")),
        }
    }
    for key in ["onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand", "postAttachCommand"] {
        let Some(value) = obj.get(key) else { continue };
        let target = match key {
            "onCreateCommand" | "updateContentCommand" => &mut on_create,
            "postCreateCommand" => &mut post_create,
            _ => &mut post_start,
        };
        if key == "postAttachCommand" {
            cx.warn(key, key, "runs at every start here (there is no attach event)".into());
        }
        cx.lifecycle(key, value, target);
    }
    if let Some(attrs) = obj.get("portsAttributes") {
        cx.ports_attributes(attrs, &mut c.ports);
    }
    c.on_create = on_create;
    post_create.extend(extension_steps);
    c.post_create = post_create;
    c.post_start = post_start;
    if cx.diags.has_errors() {
        cx.diags.sort();
        return Err(cx.diags);
    }
    // What we built must read back as a valid pinacle.yaml.
    let yaml = to_canonical_yaml(&c);
    match parse("pinacle.yaml (from devcontainer.json)", &yaml, ParseOptions { strict: true }) {
        Ok((config, _)) => {
            cx.diags.sort();
            Ok(Imported { config, report: cx.diags })
        }
        Err(e) => {
            cx.error_at(1, 1, "", format!("the imported configuration is not valid: {e}"), None);
            Err(cx.diags)
        }
    }
}

struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    diags: Diagnostics,
}

impl Cx<'_> {
    /// The line and column of `"key"` in the text (its first occurrence).
    fn locate(&self, key: &str) -> (usize, usize) {
        let needle = format!("\"{key}\"");
        let Some(at) = self.text.find(&needle) else { return (1, 1) };
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, column)
    }

    fn push(&mut self, severity: Severity, key: &str, path: &str, message: String, suggestion: Option<String>) {
        let (line, column) = self.locate(key);
        self.diags.0.push(Diagnostic { severity, file: self.file.into(), line, column, path: path.into(), message, suggestion });
    }

    fn error(&mut self, key: &str, path: &str, message: String, suggestion: Option<String>) {
        self.push(Severity::Error, key, path, message, suggestion);
    }

    fn warn(&mut self, key: &str, path: &str, message: String) {
        self.push(Severity::Warning, key, path, message, None);
    }

    fn error_at(&mut self, line: usize, column: usize, path: &str, message: String, suggestion: Option<String>) {
        self.diags.0.push(Diagnostic { severity: Severity::Error, file: self.file.into(), line, column, path: path.into(), message, suggestion });
    }

    /// The image as a registry reference (or a host image name), or an
    /// error located at `key`.
    fn check_image(&mut self, key: &str, image: &str) -> Option<String> {
        match crate::image_ref::check(image) {
            Ok(name) => Some(name.as_str().to_owned()),
            Err(why) => {
                self.error(key, key, why, Some("name a registry image like `mcr.microsoft.com/devcontainers/base:trixie`".into()));
                None
            }
        }
    }

    fn build(&mut self, build: &Value, read: &dyn Fn(&str) -> Option<String>, c: &mut PinacleConfig) -> Option<Vec<String>> {
        let Some(path) = build.get("dockerfile").and_then(Value::as_str) else {
            self.error("build", "build.dockerfile", "expected the path of a Dockerfile".into(), None);
            return None;
        };
        let context = build.get("context").and_then(Value::as_str).unwrap_or(".");
        let Some(text) = read(path) else {
            self.error("dockerfile", "build.dockerfile", format!("{path:?} was not found next to the devcontainer file"), None);
            return None;
        };
        let name = format!(".devcontainer/{path}");
        let recipe = match dockerfile::parse(&name, &text) {
            Ok(r) => r,
            Err(e) => {
                self.diags.0.extend(e.0);
                return None;
            }
        };
        match crate::image_ref::check(&recipe.from) {
            Ok(image) => c.image = Some(image.as_str().to_owned()),
            Err(why) => self.diags.0.push(Diagnostic {
                severity: Severity::Error,
                file: name.clone(),
                line: recipe.from_line,
                column: 1,
                path: String::new(),
                message: format!("FROM: {why}"),
                suggestion: Some("start FROM a registry image like `debian:trixie` or `python:3.13`".into()),
            }),
        }
        let mut steps = Vec::new();
        let mut workdir: Option<String> = None;
        for (line, step) in &recipe.steps {
            match step {
                Instruction::Run(cmd) => steps.push(match &workdir {
                    Some(dir) => format!("cd {} && {cmd}", shell_quote(dir)),
                    None => cmd.clone(),
                }),
                Instruction::Env(k, v) => {
                    if crate::pinacle_yaml::valid_env_name(k) {
                        c.env.insert(k.clone(), v.clone());
                    }
                }
                Instruction::Workdir(dir) => workdir = Some(dir.clone()),
                Instruction::Copy(_) => self.diags.0.push(Diagnostic {
                    severity: Severity::Error,
                    file: name.clone(),
                    line: *line,
                    column: 1,
                    path: String::new(),
                    message: format!("COPY/ADD from the build context ({context}) is not supported"),
                    suggestion: Some("copy the files in postCreateCommand from /workspace instead".into()),
                }),
            }
        }
        for (line, what) in &recipe.ignored {
            self.diags.0.push(Diagnostic {
                severity: Severity::Warning,
                file: name.clone(),
                line: *line,
                column: 1,
                path: String::new(),
                message: format!("ignored: {what}"),
                suggestion: None,
            });
        }
        Some(steps)
    }

    fn features(&mut self, value: &Value, steps: &mut Vec<String>) {
        let Some(map) = value.as_object() else {
            self.error("features", "features", "expected an object of feature ids".into(), None);
            return;
        };
        for id in map.keys() {
            let short = id.rsplit('/').next().unwrap_or(id);
            let short = short.split([':', '@']).next().unwrap_or(short);
            match FEATURES.iter().find(|(f, _)| *f == short) {
                Some((_, Some(step))) => {
                    if !steps.iter().any(|s| s == step) {
                        steps.push((*step).to_owned());
                    }
                }
                Some((_, None)) => {}
                None => {
                    let known: Vec<_> = FEATURES.iter().map(|(f, _)| *f).collect();
                    self.warn(id, &format!("features.{id}"), format!("feature {id:?} is not supported and was ignored; supported: {}", known.join(", ")));
                }
            }
        }
    }

    fn forward_ports(&mut self, value: &Value, ports: &mut Vec<Port>) {
        let Some(list) = value.as_array() else {
            self.error("forwardPorts", "forwardPorts", "expected a list of ports".into(), None);
            return;
        };
        for (i, p) in list.iter().enumerate() {
            let port = match p {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.rsplit(':').next().and_then(|p| p.parse().ok()),
                _ => None,
            };
            match port.filter(|p| (1..=65535).contains(p)) {
                Some(p) if !ports.iter().any(|q| u64::from(q.port) == p) => ports.push(Port { port: p as u16, name: None, public: false }),
                Some(_) => {}
                None => self.error("forwardPorts", &format!("forwardPorts[{i}]"), format!("{p} is not a port"), None),
            }
        }
    }

    fn ports_attributes(&mut self, value: &Value, ports: &mut Vec<Port>) {
        let Some(map) = value.as_object() else { return };
        for (key, attrs) in map {
            let Ok(port) = key.parse::<u16>() else {
                self.warn(key, &format!("portsAttributes.{key}"), "port ranges and patterns are not supported; ignored".into());
                continue;
            };
            let entry = match ports.iter().position(|p| p.port == port) {
                Some(i) => &mut ports[i],
                None => {
                    ports.push(Port { port, name: None, public: false });
                    let last = ports.len() - 1;
                    &mut ports[last]
                }
            };
            if let Some(label) = attrs.get("label").and_then(Value::as_str) {
                entry.name = Some(label.to_owned());
            }
            if attrs.get("visibility").and_then(Value::as_str) == Some("public") {
                entry.public = true;
            }
        }
    }

    fn env(&mut self, key: &str, value: &Value, c: &mut PinacleConfig) {
        let Some(map) = value.as_object() else {
            self.error(key, key, "expected an object of NAME: value".into(), None);
            return;
        };
        for (name, v) in map {
            let path = format!("{key}.{name}");
            let Some(v) = v.as_str() else {
                self.error(name, &path, "expected a string".into(), None);
                continue;
            };
            if !crate::pinacle_yaml::valid_env_name(name) || name.starts_with("PINACLE_") {
                self.error(name, &path, format!("{name:?} cannot be an environment variable here"), None);
            } else if v.contains("${localEnv:") {
                self.warn(name, &path, "refers to the user's machine (${localEnv:...}); ignored; store it as a secret instead".into());
            } else {
                c.env.insert(name.clone(), v.to_owned());
            }
        }
    }

    fn lifecycle(&mut self, key: &str, value: &Value, out: &mut Vec<String>) {
        let mut one = |cx: &mut Self, v: &Value, path: &str| match v {
            Value::String(s) if !s.trim().is_empty() => out.push(s.clone()),
            Value::Array(argv) if !argv.is_empty() && argv.iter().all(Value::is_string) => {
                out.push(argv.iter().filter_map(Value::as_str).map(shell_quote).collect::<Vec<_>>().join(" "));
            }
            _ => cx.error(key, path, "expected a command: a string, a list of strings, or an object of them".into(), None),
        };
        match value {
            Value::Object(map) => {
                for (name, v) in map {
                    one(self, v, &format!("{key}.{name}"));
                }
            }
            v => one(self, v, key),
        }
    }

    fn host_requirements(&mut self, value: &Value, c: &mut PinacleConfig) {
        let cpus = value.get("cpus").and_then(Value::as_u64).unwrap_or(1);
        let memory = value.get("memory").and_then(Value::as_str).map(parse_size);
        let storage = value.get("storage").and_then(Value::as_str).map(parse_size);
        for (field, parsed) in [("memory", memory), ("storage", storage)] {
            if let Some(None) = parsed {
                self.error(field, &format!("hostRequirements.{field}"), "expected a size like \"4gb\"".into(), None);
            }
        }
        let (memory, storage) = (memory.flatten().unwrap_or(0), storage.flatten().unwrap_or(0));
        match smallest_tier(cpus, memory, storage) {
            Some(tier) => c.tier = tier,
            None => self.error("hostRequirements", "hostRequirements", "no tier is that large (dev.xlarge: 8 CPUs, 16 GiB memory, 160 GiB disk)".into(), None),
        }
        match value.get("gpu") {
            Some(Value::Bool(true)) => c.gpu = Some(Gpu { count: 1, vendor: "nvidia".into() }),
            Some(Value::Object(g)) => {
                let count = g.get("cores").and_then(Value::as_u64).map(|_| 1).unwrap_or(1);
                c.gpu = Some(Gpu { count, vendor: "nvidia".into() });
            }
            Some(Value::String(s)) if s == "optional" => self.warn("gpu", "hostRequirements.gpu", "an optional GPU is not requested".into()),
            _ => {}
        }
    }

    fn customizations(&mut self, value: &Value, c: &mut PinacleConfig, post_create: &mut Vec<String>) {
        let Some(extensions) = value.pointer("/vscode/extensions").and_then(Value::as_array) else { return };
        let ids: Vec<&str> = extensions.iter().filter_map(Value::as_str).collect();
        if ids.is_empty() {
            return;
        }
        if let Some(why) = crate::services::Service::find("code-server").and_then(|s| s.unsupported) {
            self.warn("extensions", "customizations.vscode.extensions", format!("not installed: {why}"));
            return;
        }
        if !c.services.iter().any(|s| s == "code-server") {
            c.services.push("code-server".into());
        }
        let mut valid = Vec::new();
        for id in ids {
            if id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) {
                valid.push(id);
            } else {
                self.warn(id, "customizations.vscode.extensions", format!("{id:?} is not an extension id; ignored"));
            }
        }
        if !valid.is_empty() {
            // one step for all; it reports each as installed, already there,
            // or "skipped: gallery unreachable", and never fails the pod
            post_create.push(crate::services::vscode_extensions_step(&valid));
        }
    }
}

/// `"4gb"`, `"512mb"`, `"32GB"` in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let unit = s[digits.len()..].trim();
    let n: f64 = digits.parse().ok()?;
    let mult: f64 = match unit {
        "" | "b" => 1.0,
        "kb" | "k" => 1024.0,
        "mb" | "m" => 1024.0 * 1024.0,
        "gb" | "g" => 1024.0 * 1024.0 * 1024.0,
        "tb" | "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// The smallest tier with at least `cpus`, `memory` and `storage` bytes.
pub fn smallest_tier(cpus: u64, memory: u64, storage: u64) -> Option<Tier> {
    Tier::ALL.into_iter().find(|t| {
        let l = t.limits();
        u64::from(l.vcpus) >= cpus && l.memory_bytes >= memory && l.disk_bytes >= storage
    })
}
