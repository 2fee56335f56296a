//! Importing `.devcontainer/devcontainer.json` (or `.devcontainer.json`)
//! when a repository has no `pinacle.yaml`.
//!
//! The file is JSONC (comments, trailing commas). What maps:
//! - `image`: any OCI reference (checked by [`crate::image_ref`]); the
//!   pod's host pulls it from its registry, pinned at creation.
//! - `build` (`dockerfile`, `context`, `args`, `target`; paths relative to
//!   the devcontainer file): `image: {build: …}`, built with full Dockerfile
//!   syntax by the pod's host from its repository.
//! - `features`: every feature published as an OCI artifact
//!   (`ghcr.io/devcontainers/features/node:1`, any registry), with its
//!   options; the pod's host fetches them and installs them in dependency
//!   order before the lifecycle commands. Legacy short ids (`node`) mean
//!   `ghcr.io/devcontainers/features/node:1`. Local (`./x`) features and
//!   tarball URLs are refused as not supported.
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
use crate::dockerfile::shell_quote;
use crate::pinacle_yaml::{check_feature_reference, parse, repository_path, to_canonical_yaml, FeatureRequest, Gpu, ImageBuild, ParseOptions, PinacleConfig, Port};

/// Where devcontainer files are looked for, in order.
pub const PATHS: &[&str] = &[".devcontainer/devcontainer.json", ".devcontainer.json"];

/// The result of an import: a `pinacle.yaml` equivalent, and what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub config: PinacleConfig,
    /// Warnings for everything ignored or approximated.
    pub report: Diagnostics,
}

/// Imports `text` (the contents of `file`: its path in the repository, like
/// `.devcontainer/devcontainer.json`, which `build` paths are relative to).
pub fn import(file: &str, text: &str) -> Result<Imported, Diagnostics> {
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
            "build" => cx.build(key, value, &mut c),
            "dockerFile" | "context" => {
                // the older top-level form of `build`
                if key == "dockerFile" || !obj.contains_key("dockerFile") {
                    let mut build = serde_json::Map::new();
                    if let Some(d) = obj.get("dockerFile") {
                        build.insert("dockerfile".into(), d.clone());
                    }
                    if let Some(ctx) = obj.get("context") {
                        build.insert("context".into(), ctx.clone());
                    }
                    cx.build(key, &Value::Object(build), &mut c);
                }
            }
            "features" => cx.features(value, &mut c),
            "overrideFeatureInstallOrder" => cx.warn(key, key, "ignored: features install in the order their dependencies ask for".into()),
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
    if c.image.is_some() && c.image_build.is_some() {
        cx.warn("image", "image", "both `image` and `build` are given: the image is built from the Dockerfile".into());
        c.image = None;
    }
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

    /// The repository directory `build` paths are relative to: the
    /// devcontainer file's directory from its `.devcontainer` folder on
    /// (the repository's root for `.devcontainer.json`).
    fn base_dir(&self) -> String {
        let parts: Vec<&str> = self.file.split('/').collect();
        match parts.iter().rposition(|p| *p == ".devcontainer") {
            Some(i) if i + 1 < parts.len() => parts[i..parts.len() - 1].join("/"),
            _ => String::new(),
        }
    }

    fn build(&mut self, key: &str, build: &Value, c: &mut PinacleConfig) {
        let Some(obj) = build.as_object() else {
            self.error(key, "build", "expected an object with `dockerfile`".into(), None);
            return;
        };
        let base = self.base_dir();
        let path_of = |cx: &mut Self, field: &str, default: Option<&str>| -> Option<String> {
            let value = match obj.get(field) {
                Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
                None if default.is_some() => default.unwrap_or_default(),
                _ => {
                    cx.error(field, &format!("build.{field}"), "expected a path (relative to the devcontainer file)".into(), None);
                    return None;
                }
            };
            let joined = if base.is_empty() { value.to_owned() } else { format!("{base}/{value}") };
            match repository_path(&joined) {
                Ok(p) => Some(p),
                Err(why) => {
                    cx.error(field, &format!("build.{field}"), why, Some("keep the Dockerfile and its context inside the repository".into()));
                    None
                }
            }
        };
        let dockerfile = path_of(self, "dockerfile", None);
        let context = path_of(self, "context", Some("."));
        let mut args = std::collections::BTreeMap::new();
        if let Some(a) = obj.get("args") {
            match a.as_object() {
                Some(map) => {
                    for (name, v) in map {
                        let path = format!("build.args.{name}");
                        let v = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            _ => {
                                self.error(name, &path, "expected a string".into(), None);
                                continue;
                            }
                        };
                        if !crate::pinacle_yaml::valid_env_name(name) {
                            self.error(name, &path, format!("{name:?} is not an ARG name"), None);
                        } else if v.contains("${localEnv:") {
                            self.warn(name, &path, "refers to the user's machine (${localEnv:...}); ignored".into());
                        } else {
                            args.insert(name.clone(), v);
                        }
                    }
                }
                None => self.error("args", "build.args", "expected an object of ARG: value".into(), None),
            }
        }
        let target = match obj.get("target") {
            None => None,
            Some(Value::String(t)) if !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) => Some(t.clone()),
            Some(t) => {
                self.error("target", "build.target", format!("{t} is not a stage name"), None);
                None
            }
        };
        for ignored in ["cacheFrom", "options"] {
            if obj.contains_key(ignored) {
                self.warn(ignored, &format!("build.{ignored}"), "ignored: builds run with the host's builder and its defaults".into());
            }
        }
        if let (Some(dockerfile), Some(context)) = (dockerfile, context) {
            c.image_build = Some(ImageBuild { dockerfile, context, args, target });
        }
    }

    fn features(&mut self, value: &Value, c: &mut PinacleConfig) {
        let Some(map) = value.as_object() else {
            self.error("features", "features", "expected an object of feature ids".into(), None);
            return;
        };
        if map.len() > crate::pinacle_yaml::MAX_FEATURE_REQUESTS {
            self.error("features", "features", format!("{} features; at most {} are accepted", map.len(), crate::pinacle_yaml::MAX_FEATURE_REQUESTS), None);
            return;
        }
        for (id, opts) in map {
            let path = format!("features.{id}");
            // legacy short ids name the official collection
            let reference = if !id.contains('/') && !id.starts_with('.') && !id.contains("://") {
                let short = id.split([':', '@']).next().unwrap_or(id);
                // the ids the devcontainers project renamed when it moved them
                let short = match short {
                    "golang" => "go",
                    "common" => "common-utils",
                    "docker-from-docker" => "docker-outside-of-docker",
                    "github" => "github-cli",
                    other => other,
                };
                let reference = format!("ghcr.io/devcontainers/features/{short}:1");
                self.warn(id, &path, format!("a short feature id: read as {reference}"));
                reference
            } else {
                id.clone()
            };
            if let Err(why) = check_feature_reference(&reference) {
                self.error(id, &path, why, None);
                continue;
            }
            let mut options = std::collections::BTreeMap::new();
            match opts {
                Value::Object(o) => {
                    for (name, v) in o {
                        match v {
                            Value::String(s) => {
                                options.insert(name.clone(), s.clone());
                            }
                            Value::Bool(b) => {
                                options.insert(name.clone(), b.to_string());
                            }
                            Value::Number(n) => {
                                options.insert(name.clone(), n.to_string());
                            }
                            _ => self.error(name, &format!("{path}.{name}"), "expected a string or a boolean".into(), None),
                        }
                    }
                }
                Value::String(v) => {
                    options.insert("version".into(), v.clone());
                }
                Value::Bool(true) | Value::Null => {}
                _ => {
                    self.error(id, &path, "expected an object of options".into(), None);
                    continue;
                }
            }
            c.features.push(FeatureRequest { id: reference, options });
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
