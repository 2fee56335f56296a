//! Devcontainer features (<https://containers.dev/implementors/features/>)
//! applied to a pod: the pure part, no I/O.
//!
//! The agent fetches each feature's OCI artifact (one tar layer of media
//! type [`LAYER_MEDIA_TYPE`]), unpacks it with its safe unpacker into
//! `{FEATURES_DIR}/{NN}-{id}/` inside the pod, and runs the script this
//! module writes there as root. This module:
//!
//! - reads a layer's `devcontainer-feature.json` and checks it has an
//!   `install.sh` ([`read_archive`], [`parse_metadata`]; the file may be
//!   JSONC: comments and trailing commas are accepted, as the reference
//!   CLI does);
//! - works out the environment each `install.sh` gets: its options by
//!   their env names, defaults filled in, values checked against `enum`,
//!   and the spec's `_REMOTE_USER`/`_CONTAINER_USER` variables, which are
//!   `root` in Pinacle ([`install_env`], [`option_env_name`]);
//! - orders the features: `dependsOn` is hard, `installsAfter` soft,
//!   `overrideFeatureInstallOrder` puts the features it lists first as far
//!   as `dependsOn` allows, and otherwise the order the features were
//!   listed in is kept ([`order`], [`canonical_id`]);
//! - writes one POSIX `sh` script that installs them all in that order and
//!   stops at the first that fails, with its exit code ([`install_script`]);
//! - works out the pod's environment from the features' `containerEnv`,
//!   `${NAME}` references expanded ([`expand_container_env`]).
//!
//! What it does not do: a feature's `entrypoint`, `mounts`, `privileged`,
//! `capAdd`, `securityOpt`, `init` and its lifecycle hooks
//! (`onCreateCommand`, `postCreateCommand`, ...) are not applied; they are
//! listed in [`FeatureMetadata::unsupported`] for the caller to report.
//! `customizations` (editor settings) are ignored silently. Nothing here
//! fetches, unpacks or runs anything.
//!
//! `containerEnv` values may reference variables as `${NAME}` or `$NAME`
//! (Docker's `ENV` form, which is what the spec's reference CLI uses); no
//! other expansion (`${NAME:-default}`, command substitution) is done: any
//! other `$` is a literal `$`, in [`expand_container_env`] and in the
//! install script alike.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::Read;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// The media type of a feature artifact's single layer: a plain tar.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.devcontainers.layer.v1+tar";
/// Where feature directories are, inside the pod.
pub const FEATURES_DIR: &str = "/run/pinacle/features";
/// At most this many features per pod (requested plus dependsOn closure).
pub const MAX_FEATURES: usize = 32;
/// Largest devcontainer-feature.json accepted.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;
/// [`read_archive`] reads at most this many entries of a layer.
pub const MAX_ARCHIVE_ENTRIES: usize = 10_000;
/// Longest `containerEnv` value [`expand_container_env`] keeps, expanded.
pub const MAX_ENV_VALUE_BYTES: usize = 64 * 1024;
/// The longest feature id part of a [`dir_name`].
const MAX_DIR_ID_CHARS: usize = 40;

const METADATA_FILE: &str = "devcontainer-feature.json";
const INSTALL_SCRIPT: &str = "install.sh";

/// Keys of devcontainer-feature.json that Pinacle does not apply; reported
/// in [`FeatureMetadata::unsupported`] when present with a value that asks
/// for something.
const UNSUPPORTED_KEYS: &[&str] = &[
    "entrypoint",
    "mounts",
    "privileged",
    "capAdd",
    "securityOpt",
    "init",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
];

/// The spec's user variables every `install.sh` gets; features run as root.
const USER_VARIABLES: &[(&str, &str)] =
    &[("_CONTAINER_USER", "root"), ("_CONTAINER_USER_HOME", "/root"), ("_REMOTE_USER", "root"), ("_REMOTE_USER_HOME", "/root")];

/// Why a feature cannot be applied. `feature` is the reference as the user
/// wrote it.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("feature {feature}: its layer has no devcontainer-feature.json at the top; is it a devcontainer feature?")]
    NoMetadata { feature: String },
    #[error("feature {feature}: its layer has no install.sh at the top; every feature needs one")]
    NoInstallScript { feature: String },
    #[error("feature {feature}: its devcontainer-feature.json is larger than {max} bytes")]
    MetadataTooLarge { feature: String, max: usize },
    #[error("feature {feature}: its devcontainer-feature.json is not valid: {message}")]
    InvalidMetadata { feature: String, message: String },
    #[error("feature {feature} has no option {option:?}; {}", known_options(.known))]
    UnknownOption { feature: String, option: String, known: Vec<String> },
    #[error("feature {feature}, option {option:?}: {message}")]
    InvalidOptionValue { feature: String, option: String, message: String },
    #[error("features depend on each other in a cycle ({}); remove one of these dependsOn", cycle_text(.features))]
    Cycle { features: Vec<String> },
    #[error("more than {max} features (the requested ones and the ones they depend on); request fewer")]
    TooMany { max: usize },
    #[error("feature {feature}: its layer is not a readable tar archive: {message}")]
    Tar { feature: String, message: String },
}

fn known_options(known: &[String]) -> String {
    if known.is_empty() {
        "it has no options".to_owned()
    } else {
        format!("its options are: {}", known.join(", "))
    }
}

fn cycle_text(features: &[String]) -> String {
    let mut names: Vec<&str> = features.iter().map(String::as_str).collect();
    if let Some(first) = features.first() {
        names.push(first);
    }
    names.join(" depends on ")
}

/// A feature's devcontainer-feature.json, the parts Pinacle uses.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMetadata {
    pub id: String,
    pub version: Option<String>,
    pub name: Option<String>,
    /// option name -> its default and allowed values
    pub options: BTreeMap<String, OptionSpec>,
    /// dependsOn: feature reference -> options (values as strings), in file
    /// order
    pub depends_on: Vec<(String, BTreeMap<String, String>)>,
    pub installs_after: Vec<String>,
    /// containerEnv in file order
    pub container_env: Vec<(String, String)>,
    /// Keys present (in file order) that ask for something Pinacle does not
    /// apply: `entrypoint`, `mounts`, `privileged`, `capAdd`, `securityOpt`,
    /// `init` and the lifecycle hooks. A key whose value asks for nothing
    /// (`false`, `[]`, `""`, `null`) is not listed.
    pub unsupported: Vec<String>,
}

/// One option of a feature.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionSpec {
    /// The default value as a string (`true`/`false` for booleans).
    pub default: Option<String>,
    /// The allowed values, when the option has an `enum` (`proposals` are
    /// only suggestions and allow anything).
    pub allowed: Option<Vec<String>>,
}

/// A JSON value whose objects keep their keys in file order (serde_json's
/// `Value` sorts them unless its `preserve_order` feature is on).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The value of `key` (the last one, when a key is repeated).
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A string, boolean or number as a string.
    fn scalar(&self) -> Option<String> {
        match self {
            Json::String(s) => Some(s.clone()),
            Json::Bool(b) => Some(b.to_string()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Whether the value asks for nothing: `null`, `false`, `""`, `[]`, `{}`.
    fn is_empty(&self) -> bool {
        match self {
            Json::Null | Json::Bool(false) => true,
            Json::String(s) => s.is_empty(),
            Json::Array(a) => a.is_empty(),
            Json::Object(o) => o.is_empty(),
            Json::Bool(true) | Json::Number(_) => false,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Json::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Json>()? {
            entries.push(entry);
        }
        Ok(Json::Object(entries))
    }
}

/// Parses a feature's devcontainer-feature.json (JSON, or JSONC with
/// comments and trailing commas). `feature` names the feature in errors.
pub fn parse_metadata(feature: &str, json: &str) -> Result<FeatureMetadata, FeatureError> {
    if json.len() > MAX_METADATA_BYTES {
        return Err(FeatureError::MetadataTooLarge { feature: feature.to_owned(), max: MAX_METADATA_BYTES });
    }
    let invalid = |message: String| FeatureError::InvalidMetadata { feature: feature.to_owned(), message };
    // JSONC (comments, trailing commas) read by the same parser as
    // devcontainer.json, straight into `Json` (keys in file order)
    let options = jsonc_parser::ParseOptions { allow_comments: true, allow_trailing_commas: true, allow_loose_object_property_names: false, allow_missing_commas: false, ..Default::default() };
    let root: Json = jsonc_parser::parse_to_serde_value::<Option<Json>>(json, &options)
        .map_err(|e| {
            let what = match e.kind() {
                jsonc_parser::errors::ParseErrorKind::UnterminatedCommentBlock => "a /* comment is not closed".to_owned(),
                other => other.to_string(),
            };
            invalid(format!("line {}, column {}: {what}", e.line_display(), e.column_display()))
        })?
        .unwrap_or(Json::Null);
    let Json::Object(entries) = &root else {
        return Err(invalid(format!("expected an object, found {}", root.kind())));
    };

    let id = match root.get("id") {
        Some(Json::String(id)) if !id.trim().is_empty() => id.clone(),
        Some(Json::String(_)) => return Err(invalid("\"id\" is empty".into())),
        Some(other) => return Err(invalid(format!("\"id\" must be a string, found {}", other.kind()))),
        None => return Err(invalid("it has no \"id\"".into())),
    };
    let optional_string = |key: &str| match root.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("{key:?} must be a string, found {}", other.kind()))),
    };
    let version = optional_string("version")?;
    let name = optional_string("name")?;

    let mut options = BTreeMap::new();
    match root.get("options") {
        None | Some(Json::Null) => {}
        Some(Json::Object(declared)) => {
            for (option, spec) in declared {
                options.insert(option.clone(), parse_option(option, spec).map_err(invalid)?);
            }
        }
        Some(other) => return Err(invalid(format!("\"options\" must be an object, found {}", other.kind()))),
    }

    let mut depends_on = Vec::new();
    match root.get("dependsOn") {
        None | Some(Json::Null) => {}
        Some(Json::Object(dependencies)) => {
            for (reference, value) in dependencies {
                let mut values = BTreeMap::new();
                match value {
                    Json::Null => {}
                    Json::Object(given) => {
                        for (option, v) in given {
                            let Some(v) = v.scalar() else {
                                return Err(invalid(format!(
                                    "dependsOn {reference:?}: option {option:?} must be a string, boolean or number, found {}",
                                    v.kind()
                                )));
                            };
                            values.insert(option.clone(), v);
                        }
                    }
                    other => return Err(invalid(format!("dependsOn {reference:?}: expected an object of options, found {}", other.kind()))),
                }
                depends_on.push((reference.clone(), values));
            }
        }
        Some(other) => return Err(invalid(format!("\"dependsOn\" must be an object of feature references, found {}", other.kind()))),
    }

    let installs_after = match root.get("installsAfter") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| match item {
                Json::String(s) => Ok(s.clone()),
                other => Err(invalid(format!("\"installsAfter\" must list strings, found {}", other.kind()))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(invalid(format!("\"installsAfter\" must be an array, found {}", other.kind()))),
    };

    let mut container_env = Vec::new();
    match root.get("containerEnv") {
        None | Some(Json::Null) => {}
        Some(Json::Object(vars)) => {
            for (var, value) in vars {
                let Some(value) = value.scalar() else {
                    return Err(invalid(format!("containerEnv {var:?} must be a string, found {}", value.kind())));
                };
                container_env.push((var.clone(), value));
            }
        }
        Some(other) => return Err(invalid(format!("\"containerEnv\" must be an object, found {}", other.kind()))),
    }

    let mut unsupported: Vec<String> = Vec::new();
    for (key, value) in entries {
        if UNSUPPORTED_KEYS.contains(&key.as_str()) && !value.is_empty() && !unsupported.contains(key) {
            unsupported.push(key.clone());
        }
    }

    Ok(FeatureMetadata { id, version, name, options, depends_on, installs_after, container_env, unsupported })
}

fn parse_option(option: &str, spec: &Json) -> Result<OptionSpec, String> {
    if !matches!(spec, Json::Object(_)) {
        return Err(format!("option {option:?} must be an object, found {}", spec.kind()));
    }
    let default = match spec.get("default") {
        None | Some(Json::Null) => None,
        Some(value) => {
            Some(value.scalar().ok_or_else(|| format!("option {option:?}: \"default\" must be a string, boolean or number, found {}", value.kind()))?)
        }
    };
    let allowed = match spec.get("enum") {
        None | Some(Json::Null) => None,
        Some(Json::Array(values)) => Some(
            values
                .iter()
                .map(|v| v.scalar().ok_or_else(|| format!("option {option:?}: \"enum\" must list strings, found {}", v.kind())))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(other) => return Err(format!("option {option:?}: \"enum\" must be an array, found {}", other.kind())),
    };
    Ok(OptionSpec { default, allowed })
}

/// The metadata and the install script found in a feature's tar layer.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureArchive {
    pub metadata: FeatureMetadata,
    /// The devcontainer-feature.json as it is in the layer.
    pub metadata_json: String,
}

/// An entry's name without leading `./` (`./install.sh`, `install.sh`).
fn top_level_name(path: &[u8]) -> &[u8] {
    let mut path = path;
    while let Some(rest) = path.strip_prefix(b"./") {
        path = rest;
    }
    path
}

/// Reads `devcontainer-feature.json` from a feature's tar layer (named
/// `devcontainer-feature.json` or `./devcontainer-feature.json`) and checks
/// the layer has an `install.sh` (a file or a link, same naming). When an
/// entry is repeated the last one counts, as when the layer is unpacked.
/// Reads at most [`MAX_METADATA_BYTES`] of the metadata and
/// [`MAX_ARCHIVE_ENTRIES`] entries. A gzip-compressed layer is refused: the
/// spec's layers are plain tar.
pub fn read_archive(feature: &str, tar_bytes: &[u8]) -> Result<FeatureArchive, FeatureError> {
    let tar_error = |message: String| FeatureError::Tar { feature: feature.to_owned(), message };
    if tar_bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(tar_error(format!("it is gzip-compressed; a feature layer ({LAYER_MEDIA_TYPE}) is a plain tar")));
    }
    let mut archive = tar::Archive::new(tar_bytes);
    let entries = archive.entries().map_err(|e| tar_error(e.to_string()))?;
    let mut metadata: Option<Vec<u8>> = None;
    let mut has_install_script = false;
    for (count, entry) in entries.enumerate() {
        if count >= MAX_ARCHIVE_ENTRIES {
            return Err(tar_error(format!("it has more than {MAX_ARCHIVE_ENTRIES} entries")));
        }
        let mut entry = entry.map_err(|e| tar_error(e.to_string()))?;
        let kind = entry.header().entry_type();
        let name = top_level_name(&entry.path_bytes()).to_vec();
        if name == METADATA_FILE.as_bytes() {
            if !kind.is_file() {
                return Err(FeatureError::InvalidMetadata {
                    feature: feature.to_owned(),
                    message: "devcontainer-feature.json in the layer is not a regular file".into(),
                });
            }
            if entry.size() > MAX_METADATA_BYTES as u64 {
                return Err(FeatureError::MetadataTooLarge { feature: feature.to_owned(), max: MAX_METADATA_BYTES });
            }
            let mut bytes = Vec::new();
            (&mut entry).take(MAX_METADATA_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|e| tar_error(e.to_string()))?;
            if bytes.len() > MAX_METADATA_BYTES {
                return Err(FeatureError::MetadataTooLarge { feature: feature.to_owned(), max: MAX_METADATA_BYTES });
            }
            metadata = Some(bytes);
        } else if name == INSTALL_SCRIPT.as_bytes() {
            has_install_script = kind.is_file() || kind.is_symlink() || kind.is_hard_link();
        }
    }
    let Some(bytes) = metadata else {
        return Err(FeatureError::NoMetadata { feature: feature.to_owned() });
    };
    let metadata_json =
        String::from_utf8(bytes).map_err(|_| FeatureError::InvalidMetadata { feature: feature.to_owned(), message: "it is not UTF-8".into() })?;
    let metadata = parse_metadata(feature, &metadata_json)?;
    if !has_install_script {
        return Err(FeatureError::NoInstallScript { feature: feature.to_owned() });
    }
    Ok(FeatureArchive { metadata, metadata_json })
}

/// The env var name of an option, per the spec: every character not in
/// `[A-Za-z0-9_]` becomes `_`, a leading run of digits and underscores
/// becomes one `_`, and the result is uppercased: `version` -> `VERSION`,
/// `install-tools` -> `INSTALL_TOOLS`, `9lives` -> `_LIVES`.
pub fn option_env_name(name: &str) -> String {
    let replaced: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    let rest = replaced.trim_start_matches(|c: char| c.is_ascii_digit() || c == '_');
    let name = if rest.len() < replaced.len() { format!("_{rest}") } else { replaced };
    name.to_ascii_uppercase()
}

/// The environment `install.sh` of `meta` gets for the `requested` options:
/// every option of the metadata with its requested value or else its
/// default (an option with neither is left out), as `(ENV_NAME, value)`,
/// plus the spec's user variables (`_REMOTE_USER=root`,
/// `_REMOTE_USER_HOME=/root`, `_CONTAINER_USER=root`,
/// `_CONTAINER_USER_HOME=/root`), which win over an option of the same env
/// name; sorted by name. A requested option the feature does not declare is
/// [`FeatureError::UnknownOption`]; a requested value outside the option's
/// `enum` is [`FeatureError::InvalidOptionValue`].
pub fn install_env(feature: &str, meta: &FeatureMetadata, requested: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, FeatureError> {
    if let Some(option) = requested.keys().find(|option| !meta.options.contains_key(*option)) {
        return Err(FeatureError::UnknownOption { feature: feature.to_owned(), option: option.clone(), known: meta.options.keys().cloned().collect() });
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for (option, spec) in &meta.options {
        let value = match requested.get(option) {
            Some(value) => {
                if let Some(allowed) = &spec.allowed {
                    if !allowed.contains(value) {
                        return Err(FeatureError::InvalidOptionValue {
                            feature: feature.to_owned(),
                            option: option.clone(),
                            message: format!("{value:?} is not allowed; choose one of: {}", allowed.join(", ")),
                        });
                    }
                }
                value.clone()
            }
            None => match &spec.default {
                Some(default) => default.clone(),
                None => continue,
            },
        };
        let name = option_env_name(option);
        if USER_VARIABLES.iter().any(|(builtin, _)| *builtin == name) {
            continue;
        }
        env.push((name, value));
    }
    env.extend(USER_VARIABLES.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())));
    env.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(env)
}

/// The identity of a feature reference, for matching `dependsOn`,
/// `installsAfter` and `overrideFeatureInstallOrder`: the reference without
/// its tag or digest, lowercased (`ghcr.io/devcontainers/features/node:1`,
/// `...node@sha256:...` and `...node` are all
/// `ghcr.io/devcontainers/features/node`). A registry port stays: only a
/// `:` after the last `/` starts a tag.
pub fn canonical_id(reference: &str) -> String {
    let reference = reference.trim();
    let without_digest = reference.split_once('@').map_or(reference, |(name, _)| name);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let without_tag = match without_digest[last_slash..].find(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    };
    without_tag.to_lowercase()
}

/// The last path component of a canonical id: a feature's bare id.
fn bare_id(canonical: &str) -> &str {
    canonical.rsplit('/').next().unwrap_or(canonical)
}

/// One feature to order: its reference, and its metadata.
#[derive(Debug, Clone, Copy)]
pub struct ToOrder<'a> {
    pub reference: &'a str,
    pub metadata: &'a FeatureMetadata,
}

/// The install order of `features`, as indices into it.
///
/// - `dependsOn` is hard: a dependency installs before its dependent. A
///   dependency that is not in `features` counts as satisfied (the caller
///   adds dependencies to the list first).
/// - `installsAfter` is soft: it orders only among the features present,
///   and a cycle made only of `installsAfter` is broken rather than refused.
/// - `override_order` (devcontainer.json's `overrideFeatureInstallOrder`,
///   references or canonical ids) puts the features it lists first, in its
///   order, as far as `dependsOn` allows: a listed feature's dependencies
///   are pulled forward with it, and its own `installsAfter` is ignored.
/// - Otherwise the order is stable: of the features ready at the same
///   time, the one listed first goes first.
///
/// References match by [`canonical_id`]; a reference without `/` (a bare
/// id such as `common-utils`) also matches the one feature whose last path
/// component or metadata id it is, when only one does. A `dependsOn` cycle
/// is [`FeatureError::Cycle`] naming the canonical ids in it; more than
/// [`MAX_FEATURES`] features is [`FeatureError::TooMany`].
pub fn order(features: &[ToOrder<'_>], override_order: &[String]) -> Result<Vec<usize>, FeatureError> {
    let n = features.len();
    if n > MAX_FEATURES {
        return Err(FeatureError::TooMany { max: MAX_FEATURES });
    }
    let canonical: Vec<String> = features.iter().map(|f| canonical_id(f.reference)).collect();
    let ids: Vec<String> = features.iter().map(|f| f.metadata.id.to_lowercase()).collect();
    let resolve = |reference: &str| -> Vec<usize> {
        let wanted = canonical_id(reference);
        let exact: Vec<usize> = (0..n).filter(|&i| canonical[i] == wanted).collect();
        if !exact.is_empty() || wanted.contains('/') || wanted.is_empty() {
            return exact;
        }
        let by_id: Vec<usize> = (0..n).filter(|&i| bare_id(&canonical[i]) == wanted || ids[i] == wanted).collect();
        if by_id.len() == 1 {
            by_id
        } else {
            Vec::new()
        }
    };

    let mut position = vec![usize::MAX; n];
    for (p, entry) in override_order.iter().enumerate() {
        for i in resolve(entry) {
            position[i] = position[i].min(p);
        }
    }

    // hard[v] / soft[v]: the features that must install before v.
    let mut hard: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut soft: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (v, feature) in features.iter().enumerate() {
        for (reference, _) in &feature.metadata.depends_on {
            for u in resolve(reference) {
                if !hard[v].contains(&u) {
                    hard[v].push(u);
                }
            }
        }
        if position[v] != usize::MAX {
            continue;
        }
        for reference in &feature.metadata.installs_after {
            for u in resolve(reference) {
                if u != v && !soft[v].contains(&u) {
                    soft[v].push(u);
                }
            }
        }
    }

    // A feature is as urgent as the most urgent feature that waits for it.
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); n];
    for v in 0..n {
        for &u in hard[v].iter().chain(&soft[v]) {
            after[u].push(v);
        }
    }
    let priority: Vec<usize> = (0..n)
        .map(|v| {
            let mut seen = vec![false; n];
            let mut stack = vec![v];
            let mut best = usize::MAX;
            while let Some(w) = stack.pop() {
                if std::mem::replace(&mut seen[w], true) {
                    continue;
                }
                best = best.min(position[w]);
                stack.extend(after[w].iter().copied().filter(|&x| !seen[x]));
            }
            best
        })
        .collect();

    let mut done = vec![false; n];
    let mut result = Vec::with_capacity(n);
    while result.len() < n {
        let hard_ready = |i: &usize| !done[*i] && hard[*i].iter().all(|&u| done[u]);
        let key = |i: &usize| (priority[*i], *i);
        let next =
            (0..n).filter(hard_ready).filter(|&i| soft[i].iter().all(|&u| done[u])).min_by_key(key).or_else(|| (0..n).filter(hard_ready).min_by_key(key));
        let Some(next) = next else {
            return Err(FeatureError::Cycle { features: find_cycle(&hard, &done).into_iter().map(|i| canonical[i].clone()).collect() });
        };
        done[next] = true;
        result.push(next);
    }
    Ok(result)
}

/// A cycle among the features not `done`, each of which has a hard
/// dependency not done: follows first dependencies until one repeats. The
/// cycle is returned in "depends on" order, starting at its lowest index.
fn find_cycle(hard: &[Vec<usize>], done: &[bool]) -> Vec<usize> {
    let Some(start) = (0..hard.len()).find(|&i| !done[i]) else {
        return Vec::new();
    };
    let mut path = vec![start];
    let mut current = start;
    loop {
        let Some(next) = hard[current].iter().copied().find(|&u| !done[u]) else {
            return path;
        };
        if let Some(at) = path.iter().position(|&p| p == next) {
            let mut cycle = path.split_off(at);
            if let Some(lowest) = cycle.iter().enumerate().min_by_key(|(_, &i)| i).map(|(k, _)| k) {
                cycle.rotate_left(lowest);
            }
            return cycle;
        }
        path.push(next);
        current = next;
    }
}

/// One feature ready to install.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Its directory under [`FEATURES_DIR`] ([`dir_name`]).
    pub dir: String,
    /// Its reference, for messages.
    pub reference: String,
    /// The environment its `install.sh` gets ([`install_env`]).
    pub env: Vec<(String, String)>,
    /// Its `containerEnv`, seen by the features installed after it and by
    /// the pod.
    pub container_env: Vec<(String, String)>,
}

/// The directory name of the `n`-th (0-based) feature: `NN-id`, the id
/// lowercased and restricted to `[a-z0-9-_.]` (anything else becomes `-`),
/// at most 40 characters of it.
pub fn dir_name(n: usize, id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .take(MAX_DIR_ID_CHARS)
        .collect();
    format!("{:02}-{id}", n.saturating_add(1))
}

/// Whether `name` can be an environment variable set from `sh`.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `s` as one `sh` word, literally: single-quoted (`it's` ->
/// `'it'"'"'s'`). A NUL cannot be in a shell word and is dropped.
fn sh_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("'\"'\"'"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A piece of a `containerEnv` value: text, or a `${NAME}`/`$NAME`
/// reference.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits a `containerEnv` value into text and variable references. A `$`
/// that does not start `${NAME}` or `$NAME` is text.
fn pieces(value: &str) -> Vec<Piece<'_>> {
    let bytes = value.as_bytes();
    let is_start = |b: u8| b.is_ascii_alphabetic() || b == b'_';
    let is_rest = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let name_end = |from: usize| (from..bytes.len()).find(|&j| !is_rest(bytes[j])).unwrap_or(bytes.len());
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let (name_start, end, after) = match bytes.get(i + 1) {
            Some(b'{') if bytes.get(i + 2).is_some_and(|&b| is_start(b)) => {
                let end = name_end(i + 2);
                if bytes.get(end) != Some(&b'}') {
                    i += 1;
                    continue;
                }
                (i + 2, end, end + 1)
            }
            Some(&b) if is_start(b) => {
                let end = name_end(i + 1);
                (i + 1, end, end)
            }
            _ => {
                i += 1;
                continue;
            }
        };
        if text_start < i {
            out.extend(value.get(text_start..i).map(Piece::Text));
        }
        out.extend(value.get(name_start..end).map(Piece::Var));
        i = after;
        text_start = after;
    }
    if text_start < bytes.len() {
        out.extend(value.get(text_start..).map(Piece::Text));
    }
    out
}

/// A `containerEnv` value as a double-quoted `sh` word in which only its
/// `${NAME}`/`$NAME` references expand: every other `$`, `` ` ``, `\` and
/// `"` is escaped, so no command substitution can happen.
fn sh_expanding(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for piece in pieces(value) {
        match piece {
            Piece::Var(name) => {
                let _ = write!(out, "${{{name}}}");
            }
            Piece::Text(text) => {
                for c in text.chars() {
                    if matches!(c, '$' | '`' | '\\' | '"') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
        }
    }
    out.push('"');
    out
}

/// The POSIX `sh` script that installs `features` in the given order from
/// their directories under [`FEATURES_DIR`]; see [`install_script_in`].
pub fn install_script(features: &[Prepared]) -> String {
    install_script_in(FEATURES_DIR, features)
}

/// The POSIX `sh` script that installs `features`, in the given order, from
/// their directories under `base_dir`.
///
/// For each feature it prints `pinacle: installing feature REF (n/total)`,
/// then in a subshell copies the feature's directory to a fresh
/// `mktemp -d` directory (the features directory is read-only), makes
/// `install.sh` executable and runs it there with the feature's
/// [`Prepared::env`] exported (single-quoted: taken literally) and the
/// `containerEnv` of the features installed before it, as the spec asks.
/// Those are exported double-quoted with only their `${NAME}`/`$NAME`
/// references expanding (so `PATH=/x/bin:${PATH}` prepends); they come from
/// features, which run as root in the pod anyway. The copy is removed
/// afterwards. When `install.sh` fails, the script prints
/// `pinacle: feature REF failed (exit N)` to stderr and exits with `N`;
/// the features after it do not run. Variables whose names are not `sh`
/// names, or whose values hold a NUL, are left out.
pub fn install_script_in(base_dir: &str, features: &[Prepared]) -> String {
    let total = features.len();
    let mut script = String::new();
    script.push_str("#!/bin/sh\n");
    script.push_str("# Installs devcontainer features in order; written by Pinacle's host agent.\n");
    for (k, feature) in features.iter().enumerate() {
        let reference = sh_quote(&feature.reference);
        let source = sh_quote(&format!("{}/{}/.", base_dir.trim_end_matches('/'), feature.dir));
        let _ = writeln!(script, "\nprintf 'pinacle: installing feature %s (%s/%s)\\n' {reference} {} {total}", k + 1);
        script.push_str("(\n");
        script.push_str("  pinacle_dir=$(mktemp -d) || exit 1\n");
        let _ = writeln!(script, "  cp -R {source} \"$pinacle_dir\" || exit 1");
        script.push_str("  cd \"$pinacle_dir\" || exit 1\n");
        script.push_str("  (\n");
        for (name, value) in features[..k].iter().flat_map(|earlier| &earlier.container_env) {
            if is_env_name(name) && !value.contains('\0') {
                let _ = writeln!(script, "    export {name}={}", sh_expanding(value));
            }
        }
        for (name, value) in &feature.env {
            if is_env_name(name) && !value.contains('\0') {
                let _ = writeln!(script, "    export {name}={}", sh_quote(value));
            }
        }
        script.push_str("    chmod +x ./install.sh || exit 1\n");
        script.push_str("    ./install.sh\n");
        script.push_str("  )\n");
        script.push_str("  pinacle_rc=$?\n");
        script.push_str("  cd / && rm -rf \"$pinacle_dir\"\n");
        script.push_str("  exit \"$pinacle_rc\"\n");
        script.push_str(") || {\n");
        script.push_str("  pinacle_rc=$?\n");
        let _ = writeln!(script, "  printf 'pinacle: feature %s failed (exit %s)\\n' {reference} \"$pinacle_rc\" >&2");
        script.push_str("  exit \"$pinacle_rc\"\n");
        script.push_str("}\n");
    }
    let noun = if total == 1 { "feature" } else { "features" };
    let _ = writeln!(script, "\nprintf 'pinacle: %s {noun} installed\\n' {total}");
    script
}

/// The pod's environment from the features' `containerEnv`, in install
/// order: `${NAME}` and `$NAME` references (`PATH=/x/bin:${PATH}`) expand
/// against `base` (`NAME=VALUE` entries, the later of a name winning) and
/// the `containerEnv` of earlier features; an unknown name expands to
/// nothing. Returns `NAME=VALUE` for each variable the features set, once,
/// where it was first set, with its last value. A variable whose name is
/// not an `sh` name, whose value holds a NUL, or whose value expands to
/// more than [`MAX_ENV_VALUE_BYTES`] is skipped.
pub fn expand_container_env(features: &[Prepared], base: &[String]) -> Vec<String> {
    let mut values: BTreeMap<&str, String> = BTreeMap::new();
    for entry in base {
        if let Some((name, value)) = entry.split_once('=') {
            values.insert(name, value.to_owned());
        }
    }
    let mut set: Vec<&str> = Vec::new();
    for (name, value) in features.iter().flat_map(|f| &f.container_env) {
        if !is_env_name(name) || value.contains('\0') {
            continue;
        }
        let Some(expanded) = expand(value, &values) else {
            continue;
        };
        if !set.contains(&name.as_str()) {
            set.push(name);
        }
        values.insert(name, expanded);
    }
    set.into_iter().filter_map(|name| values.get(name).map(|value| format!("{name}={value}"))).collect()
}

/// `value` with its references expanded, or `None` when that is longer
/// than [`MAX_ENV_VALUE_BYTES`].
fn expand(value: &str, values: &BTreeMap<&str, String>) -> Option<String> {
    let mut out = String::new();
    for piece in pieces(value) {
        let part = match piece {
            Piece::Text(text) => text,
            Piece::Var(name) => values.get(name).map_or("", String::as_str),
        };
        if out.len() + part.len() > MAX_ENV_VALUE_BYTES {
            return None;
        }
        out.push_str(part);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official node feature's devcontainer-feature.json (abridged).
    const NODE: &str = r#"{
    "id": "node",
    "version": "1.6.1",
    "name": "Node.js (via nvm), yarn and pnpm",
    "documentationURL": "https://github.com/devcontainers/features/tree/main/src/node",
    "description": "Installs Node.js, nvm, yarn, pnpm, and needed dependencies.",
    "options": {
        "version": {
            "type": "string",
            "proposals": ["lts", "latest", "none", "22", "20", "18"],
            "default": "lts",
            "description": "Select or enter a Node.js version to install"
        },
        "nodeGypDependencies": {
            "type": "boolean",
            "default": true,
            "description": "Install dependencies to compile native node modules (node-gyp)?"
        },
        "nvmInstallPath": {
            "type": "string",
            "default": "/usr/local/share/nvm",
            "description": "The path where NVM will be installed."
        },
        "pnpmVersion": {
            "type": "string",
            "proposals": ["latest", "8.8.0", "none"],
            "default": "latest",
            "description": "Select or enter the PNPM version to install"
        },
        "nvmVersion": {
            "type": "string",
            "proposals": ["latest", "0.39"],
            "default": "latest",
            "description": "Version of NVM to install."
        },
        "installYarnUsingApt": {
            "type": "boolean",
            "default": true,
            "description": "On Debian and Ubuntu systems, you have the option to install Yarn globally via APT."
        }
    },
    "customizations": {
        "vscode": {
            "extensions": ["dbaeumer.vscode-eslint"]
        }
    },
    "containerEnv": {
        "NVM_DIR": "/usr/local/share/nvm",
        "NVM_SYMLINK_CURRENT": "true",
        "PATH": "/usr/local/share/nvm/current/bin:${PATH}"
    },
    "installsAfter": [
        "ghcr.io/devcontainers/features/common-utils"
    ]
}"#;

    /// The official python feature's devcontainer-feature.json (abridged).
    const PYTHON: &str = r#"{
    "id": "python",
    "version": "1.6.3",
    "name": "Python",
    "documentationURL": "https://github.com/devcontainers/features/tree/main/src/python",
    "description": "Installs the provided version of Python, as well as PIPX, and other common Python utilities.",
    "options": {
        "version": {
            "type": "string",
            "proposals": ["latest", "os-provided", "none", "3.12", "3.11", "3.10"],
            "default": "os-provided",
            "description": "Select a Python version to install."
        },
        "installTools": { "type": "boolean", "default": true, "description": "Flag indicating whether or not to install the tools specified via the 'toolsToInstall' option." },
        "toolsToInstall": { "type": "string", "default": "flake8,autopep8,black,yapf,mypy,pydocstyle,pycodestyle,bandit,pipenv,virtualenv,pytest,pylint" },
        "optimize": { "type": "boolean", "default": false },
        "enableShared": { "type": "boolean", "default": false },
        "installPath": { "type": "string", "default": "/usr/local/python" },
        "installJupyterlab": { "type": "boolean", "default": false },
        "configureJupyterlabAllowOrigin": { "type": "string", "default": "" },
        "httpProxy": { "type": "string", "default": "" }
    },
    "containerEnv": {
        "PYTHON_PATH": "/usr/local/python/current",
        "PIPX_HOME": "/usr/local/py-utils",
        "PIPX_BIN_DIR": "/usr/local/py-utils/bin",
        "PATH": "/usr/local/python/current/bin:/usr/local/py-utils/bin:${PATH}"
    },
    "customizations": { "vscode": { "extensions": ["ms-python.python"] } },
    "installsAfter": [
        "ghcr.io/devcontainers/features/common-utils",
        "ghcr.io/devcontainers/features/oryx"
    ]
}"#;

    /// The official common-utils feature (abridged).
    const COMMON_UTILS: &str = r#"{
    "id": "common-utils",
    "version": "2.5.2",
    "name": "Common Utilities",
    "options": {
        "installZsh": { "type": "boolean", "default": true },
        "username": { "type": "string", "proposals": ["devcontainer", "vscode", "codespace", "none", "automatic"], "default": "automatic" },
        "userUid": { "type": "string", "proposals": ["1001", "automatic"], "default": "automatic" }
    }
}"#;

    /// The official docker-in-docker feature (abridged): an `enum` option
    /// and keys Pinacle does not apply.
    const DOCKER_IN_DOCKER: &str = r#"{
    "id": "docker-in-docker",
    "version": "2.12.0",
    "name": "Docker (Docker-in-Docker)",
    "options": {
        "version": { "type": "string", "proposals": ["latest", "none", "20.10"], "default": "latest" },
        "moby": { "type": "boolean", "default": true },
        "dockerDashComposeVersion": { "type": "string", "enum": ["none", "v1", "v2"], "default": "v2" },
        "azureDnsAutoDetection": { "type": "boolean", "default": true },
        "dockerDefaultAddressPool": { "type": "string", "default": "" },
        "installDockerBuildx": { "type": "boolean", "default": true }
    },
    "entrypoint": "/usr/local/share/docker-init.sh",
    "privileged": true,
    "init": false,
    "capAdd": [],
    "containerEnv": { "DOCKER_BUILDKIT": "1" },
    "customizations": { "vscode": { "extensions": ["ms-azuretools.vscode-docker"] } },
    "mounts": [{ "source": "dind-var-lib-docker-${devcontainerId}", "target": "/var/lib/docker", "type": "volume" }],
    "postStartCommand": "/usr/local/share/docker-init.sh",
    "installsAfter": ["ghcr.io/devcontainers/features/common-utils"]
}"#;

    fn meta(json: &str) -> FeatureMetadata {
        parse_metadata("test", json).unwrap()
    }

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_node_feature_parses() {
        let node = meta(NODE);
        assert_eq!(node.id, "node");
        assert_eq!(node.version.as_deref(), Some("1.6.1"));
        assert_eq!(node.name.as_deref(), Some("Node.js (via nvm), yarn and pnpm"));
        assert_eq!(node.options.len(), 6);
        assert_eq!(node.options["version"], OptionSpec { default: Some("lts".into()), allowed: None });
        assert_eq!(node.options["nodeGypDependencies"].default.as_deref(), Some("true"));
        assert_eq!(node.installs_after, ["ghcr.io/devcontainers/features/common-utils"]);
        assert_eq!(
            node.container_env,
            [
                ("NVM_DIR".to_owned(), "/usr/local/share/nvm".to_owned()),
                ("NVM_SYMLINK_CURRENT".to_owned(), "true".to_owned()),
                ("PATH".to_owned(), "/usr/local/share/nvm/current/bin:${PATH}".to_owned()),
            ]
        );
        assert!(node.depends_on.is_empty());
        assert!(node.unsupported.is_empty(), "customizations are ignored silently");
    }

    #[test]
    fn container_env_keeps_file_order() {
        let python = meta(PYTHON);
        let names: Vec<&str> = python.container_env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["PYTHON_PATH", "PIPX_HOME", "PIPX_BIN_DIR", "PATH"]);
        assert_eq!(python.options["optimize"].default.as_deref(), Some("false"));
        assert_eq!(python.options["configureJupyterlabAllowOrigin"].default.as_deref(), Some(""));
    }

    #[test]
    fn enums_and_unsupported_keys_are_recorded() {
        let dind = meta(DOCKER_IN_DOCKER);
        assert_eq!(dind.options["dockerDashComposeVersion"].allowed, Some(vec!["none".to_owned(), "v1".to_owned(), "v2".to_owned()]));
        assert_eq!(dind.options["version"].allowed, None, "proposals allow anything");
        // `init: false` and `capAdd: []` ask for nothing.
        assert_eq!(dind.unsupported, ["entrypoint", "privileged", "mounts", "postStartCommand"]);
    }

    #[test]
    fn depends_on_numbers_and_jsonc_parse() {
        let json = r#"{
            // A feature with dependencies; JSONC as the reference CLI accepts it.
            "id": "app",
            "options": {
                "port": { "type": "string", "default": 8080 }, /* a number default */
                "flag": { "type": "boolean" },
            },
            "dependsOn": {
                "ghcr.io/devcontainers/features/node:1": { "version": "20", "nodeGypDependencies": false },
                "ghcr.io/devcontainers/features/common-utils:2": {},
            },
            "containerEnv": { "URL": "http://example.com//not-a-comment", "N": 3 },
        }"#;
        let app = meta(json);
        assert_eq!(app.options["port"].default.as_deref(), Some("8080"));
        assert_eq!(app.options["flag"].default, None);
        assert_eq!(
            app.depends_on,
            [
                ("ghcr.io/devcontainers/features/node:1".to_owned(), options(&[("version", "20"), ("nodeGypDependencies", "false")])),
                ("ghcr.io/devcontainers/features/common-utils:2".to_owned(), BTreeMap::new()),
            ]
        );
        assert_eq!(app.container_env[0].1, "http://example.com//not-a-comment");
        assert_eq!(app.container_env[1].1, "3");
    }

    #[test]
    fn invalid_metadata_says_what_is_wrong() {
        let message = |json: &str| parse_metadata("ghcr.io/x/y:1", json).unwrap_err().to_string();
        assert!(message("[]").contains("expected an object, found an array"), "{}", message("[]"));
        assert!(message("{}").contains("no \"id\""));
        assert!(message(r#"{"id": 3}"#).contains("\"id\" must be a string"));
        assert!(message(r#"{"id": "x", "options": {"a": {"default": []}}}"#).contains("option \"a\": \"default\" must be"));
        assert!(message(r#"{"id": "x", "installsAfter": "y"}"#).contains("\"installsAfter\" must be an array"));
        assert!(message(r#"{"id": "x", "dependsOn": ["y"]}"#).contains("\"dependsOn\" must be an object"));
        assert!(message(r#"{"id": "x", "containerEnv": {"A": {}}}"#).contains("containerEnv \"A\""));
        assert!(message(r#"{"id": "x" /* open"#).contains("not closed"));
        assert!(message(r#"{"id": "x""#).contains("ghcr.io/x/y:1"));
        let deep = format!("{{\"id\": \"x\", \"a\": {}{}}}", "[".repeat(200_000), "]".repeat(200_000));
        assert!(matches!(parse_metadata("x", &deep), Err(FeatureError::MetadataTooLarge { .. })));
        let deep = format!("{{\"id\": \"x\", \"a\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(parse_metadata("x", &deep), Err(FeatureError::InvalidMetadata { .. })), "recursion is limited");
    }

    #[test]
    fn option_env_names_follow_the_spec() {
        assert_eq!(option_env_name("version"), "VERSION");
        assert_eq!(option_env_name("install-tools"), "INSTALL_TOOLS");
        assert_eq!(option_env_name("nodeGypDependencies"), "NODEGYPDEPENDENCIES");
        assert_eq!(option_env_name("9lives"), "_LIVES");
        assert_eq!(option_env_name("__9_x"), "_X");
        assert_eq!(option_env_name("_x"), "_X");
        assert_eq!(option_env_name("a.b c"), "A_B_C");
        assert_eq!(option_env_name("héllo"), "H_LLO");
        assert_eq!(option_env_name("123"), "_");
        assert_eq!(option_env_name(""), "");
    }

    #[test]
    fn install_env_fills_defaults_and_takes_overrides() {
        let node = meta(NODE);
        let env = install_env("node", &node, &options(&[("version", "20"), ("nodeGypDependencies", "false")])).unwrap();
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "INSTALLYARNUSINGAPT",
                "NODEGYPDEPENDENCIES",
                "NVMINSTALLPATH",
                "NVMVERSION",
                "PNPMVERSION",
                "VERSION",
                "_CONTAINER_USER",
                "_CONTAINER_USER_HOME",
                "_REMOTE_USER",
                "_REMOTE_USER_HOME"
            ]
        );
        assert_eq!(env_value(&env, "VERSION"), Some("20"));
        assert_eq!(env_value(&env, "NODEGYPDEPENDENCIES"), Some("false"));
        assert_eq!(env_value(&env, "NVMINSTALLPATH"), Some("/usr/local/share/nvm"));
        assert_eq!(env_value(&env, "_REMOTE_USER"), Some("root"));
        assert_eq!(env_value(&env, "_REMOTE_USER_HOME"), Some("/root"));
        assert_eq!(env_value(&env, "_CONTAINER_USER_HOME"), Some("/root"));

        let defaults = install_env("node", &node, &BTreeMap::new()).unwrap();
        assert_eq!(env_value(&defaults, "VERSION"), Some("lts"));

        // An option with no default and no value is left out; a built-in wins.
        let json = r#"{"id": "x", "options": {"flag": {"type": "boolean"}, "_remote_user": {"type": "string", "default": "me"}}}"#;
        let env = install_env("x", &meta(json), &BTreeMap::new()).unwrap();
        assert_eq!(env_value(&env, "FLAG"), None);
        assert_eq!(env.iter().filter(|(n, _)| n == "_REMOTE_USER").count(), 1);
        assert_eq!(env_value(&env, "_REMOTE_USER"), Some("root"));
    }

    #[test]
    fn an_unknown_option_is_refused() {
        let err = install_env("ghcr.io/devcontainers/features/node:1", &meta(NODE), &options(&[("versoin", "20")])).unwrap_err();
        let FeatureError::UnknownOption { feature, option, known } = &err else { panic!("{err:?}") };
        assert_eq!(feature, "ghcr.io/devcontainers/features/node:1");
        assert_eq!(option, "versoin");
        assert!(known.contains(&"version".to_owned()));
        assert!(err.to_string().contains("has no option \"versoin\"; its options are: installYarnUsingApt, nodeGypDependencies"), "{err}");
        let none = install_env("x", &meta(r#"{"id": "x"}"#), &options(&[("a", "b")])).unwrap_err();
        assert!(none.to_string().contains("it has no options"), "{none}");
    }

    #[test]
    fn a_value_outside_the_enum_is_refused() {
        let dind = meta(DOCKER_IN_DOCKER);
        let err = install_env("dind", &dind, &options(&[("dockerDashComposeVersion", "v3")])).unwrap_err();
        let FeatureError::InvalidOptionValue { option, .. } = &err else { panic!("{err:?}") };
        assert_eq!(option, "dockerDashComposeVersion");
        assert!(err.to_string().contains("\"v3\" is not allowed; choose one of: none, v1, v2"), "{err}");
        let env = install_env("dind", &dind, &options(&[("dockerDashComposeVersion", "v1"), ("version", "27.0")])).unwrap();
        assert_eq!(env_value(&env, "DOCKERDASHCOMPOSEVERSION"), Some("v1"));
        assert_eq!(env_value(&env, "VERSION"), Some("27.0"), "proposals are suggestions");
    }

    #[test]
    fn canonical_ids_drop_tag_and_digest_only() {
        assert_eq!(canonical_id("ghcr.io/devcontainers/features/node:1"), "ghcr.io/devcontainers/features/node");
        assert_eq!(canonical_id("ghcr.io/devcontainers/features/node"), "ghcr.io/devcontainers/features/node");
        let digest = format!("ghcr.io/devcontainers/features/node@sha256:{}", "ab".repeat(32));
        assert_eq!(canonical_id(&digest), "ghcr.io/devcontainers/features/node");
        assert_eq!(canonical_id("GHCR.io/DevContainers/Features/Node:1.2"), "ghcr.io/devcontainers/features/node");
        assert_eq!(canonical_id("host:5000/x/y:1"), "host:5000/x/y");
        assert_eq!(canonical_id("host:5000/x/y"), "host:5000/x/y");
        assert_eq!(canonical_id("host:5000/x/y:1@sha256:00"), "host:5000/x/y");
        assert_eq!(canonical_id("node:lts"), "node");
        assert_eq!(canonical_id(""), "");
        assert_eq!(canonical_id(":"), "");
    }

    fn feature(id: &str, depends_on: &[&str], installs_after: &[&str]) -> FeatureMetadata {
        FeatureMetadata {
            id: id.to_owned(),
            version: None,
            name: None,
            options: BTreeMap::new(),
            depends_on: depends_on.iter().map(|r| ((*r).to_owned(), BTreeMap::new())).collect(),
            installs_after: installs_after.iter().map(|r| (*r).to_owned()).collect(),
            container_env: Vec::new(),
            unsupported: Vec::new(),
        }
    }

    fn ordered(list: &[(&str, &FeatureMetadata)], override_order: &[&str]) -> Result<Vec<String>, FeatureError> {
        let features: Vec<ToOrder<'_>> = list.iter().map(|(reference, metadata)| ToOrder { reference, metadata }).collect();
        let override_order: Vec<String> = override_order.iter().map(|s| (*s).to_owned()).collect();
        Ok(order(&features, &override_order)?.into_iter().map(|i| bare_id(&canonical_id(list[i].0)).to_owned()).collect())
    }

    const F: &str = "ghcr.io/devcontainers/features";

    #[test]
    fn installs_after_orders_the_features_present() {
        let (node, python, common) = (meta(NODE), meta(PYTHON), meta(COMMON_UTILS));
        let list = [(&*format!("{F}/node:1"), &node), (&*format!("{F}/python:1"), &python), (&*format!("{F}/common-utils:2"), &common)];
        assert_eq!(ordered(&list, &[]).unwrap(), ["common-utils", "node", "python"]);
        // Absent ones (oryx, common-utils here) do not matter; the listed order stays.
        assert_eq!(ordered(&list[..2], &[]).unwrap(), ["node", "python"]);
        let swapped = [list[1], list[0]];
        assert_eq!(ordered(&swapped, &[]).unwrap(), ["python", "node"]);
    }

    #[test]
    fn depends_on_chains_install_dependencies_first() {
        let a = feature("a", &["ghcr.io/x/b:1"], &[]);
        let b = feature("b", &["ghcr.io/x/c@sha256:00"], &[]);
        let c = feature("c", &["ghcr.io/x/not-here:1"], &[]);
        let d = feature("d", &[], &[]);
        let list = [("ghcr.io/x/a:1", &a), ("ghcr.io/x/d", &d), ("ghcr.io/x/b:2", &b), ("GHCR.IO/x/c:3", &c)];
        assert_eq!(ordered(&list, &[]).unwrap(), ["d", "c", "b", "a"]);
        // A bare id matches when only one feature has it.
        let e = feature("e", &["c"], &["d"]);
        let list = [("ghcr.io/x/e", &e), ("ghcr.io/x/c", &c), ("ghcr.io/x/d", &d)];
        assert_eq!(ordered(&list, &[]).unwrap(), ["c", "d", "e"]);
        // ... and not when two do.
        let c2 = feature("c", &[], &[]);
        let list = [("ghcr.io/x/e", &e), ("ghcr.io/x/c", &c), ("ghcr.io/y/c", &c2), ("ghcr.io/x/d", &d)];
        assert_eq!(ordered(&list, &[]).unwrap(), ["c", "c", "d", "e"]);
        let list = [("ghcr.io/x/d", &d), ("ghcr.io/x/e", &e), ("ghcr.io/x/c", &c), ("ghcr.io/y/c", &c2)];
        assert_eq!(ordered(&list, &[]).unwrap(), ["d", "e", "c", "c"]);
    }

    #[test]
    fn without_constraints_the_order_is_stable() {
        let (a, b, c) = (feature("a", &[], &[]), feature("b", &[], &[]), feature("c", &[], &[]));
        assert_eq!(ordered(&[("x/c", &c), ("x/a", &a), ("x/b", &b)], &[]).unwrap(), ["c", "a", "b"]);
        assert_eq!(ordered(&[], &[]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn override_order_comes_first_as_far_as_depends_on_allows() {
        let (node, python, common) = (meta(NODE), meta(PYTHON), meta(COMMON_UTILS));
        let list = [(&*format!("{F}/common-utils:2"), &common), (&*format!("{F}/node:1"), &node), (&*format!("{F}/python:1"), &python)];
        assert_eq!(ordered(&list, &[&format!("{F}/python"), &format!("{F}/node:1")]).unwrap(), ["python", "node", "common-utils"]);
        // A bare id and an absent feature in the override list.
        assert_eq!(ordered(&list, &["ghcr.io/other/thing", "python"]).unwrap(), ["python", "common-utils", "node"]);

        // A listed feature's dependencies come with it, ahead of the rest.
        let app = feature("app", &["ghcr.io/x/base"], &[]);
        let base = feature("base", &[], &[]);
        let other = feature("other", &[], &[]);
        let list = [("ghcr.io/x/other", &other), ("ghcr.io/x/base", &base), ("ghcr.io/x/app", &app)];
        assert_eq!(ordered(&list, &[]).unwrap(), ["other", "base", "app"]);
        assert_eq!(ordered(&list, &["ghcr.io/x/app"]).unwrap(), ["base", "app", "other"]);
        // It cannot put a feature before what it depends on.
        assert_eq!(ordered(&list, &["ghcr.io/x/app", "ghcr.io/x/base"]).unwrap(), ["base", "app", "other"]);
    }

    #[test]
    fn a_depends_on_cycle_names_its_features() {
        let a = feature("a", &["ghcr.io/x/b"], &[]);
        let b = feature("b", &["ghcr.io/x/a:1"], &[]);
        let c = feature("c", &["ghcr.io/x/a"], &[]);
        let d = feature("d", &[], &[]);
        let list = [("ghcr.io/x/d", &d), ("ghcr.io/x/c", &c), ("ghcr.io/x/a", &a), ("ghcr.io/x/b", &b)];
        let err = ordered(&list, &[]).unwrap_err();
        let FeatureError::Cycle { features } = &err else { panic!("{err:?}") };
        assert_eq!(features, &["ghcr.io/x/a", "ghcr.io/x/b"]);
        assert!(err.to_string().contains("(ghcr.io/x/a depends on ghcr.io/x/b depends on ghcr.io/x/a)"), "{err}");
        // A feature that depends on itself.
        let s = feature("s", &["ghcr.io/x/s:2"], &[]);
        let FeatureError::Cycle { features } = ordered(&[("ghcr.io/x/s:1", &s)], &[]).unwrap_err() else { panic!() };
        assert_eq!(features, ["ghcr.io/x/s"]);
    }

    #[test]
    fn an_installs_after_cycle_is_broken() {
        let a = feature("a", &[], &["ghcr.io/x/b"]);
        let b = feature("b", &[], &["ghcr.io/x/a"]);
        let c = feature("c", &[], &[]);
        assert_eq!(ordered(&[("ghcr.io/x/c", &c), ("ghcr.io/x/a", &a), ("ghcr.io/x/b", &b)], &[]).unwrap(), ["c", "a", "b"]);
    }

    #[test]
    fn too_many_features_are_refused() {
        let f = feature("f", &[], &[]);
        let references: Vec<String> = (0..=MAX_FEATURES).map(|i| format!("ghcr.io/x/f{i}")).collect();
        let features: Vec<ToOrder<'_>> = references.iter().map(|reference| ToOrder { reference, metadata: &f }).collect();
        assert!(matches!(order(&features, &[]), Err(FeatureError::TooMany { max: MAX_FEATURES })));
        assert_eq!(order(&features[..MAX_FEATURES], &[]).unwrap().len(), MAX_FEATURES);
    }

    /// A tar with these entries, named exactly so (`./` kept).
    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_ustar();
            let field = &mut header.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    const INSTALL: &[u8] = b"#!/bin/sh\nset -e\necho installing\n";

    #[test]
    fn the_archive_is_read_with_or_without_a_dot_slash() {
        for (metadata_name, install_name) in [("devcontainer-feature.json", "install.sh"), ("./devcontainer-feature.json", "./install.sh")] {
            let tar = tar_of(&[("./", b""), ("./NOTES.md", b"notes"), (metadata_name, NODE.as_bytes()), (install_name, INSTALL)]);
            let archive = read_archive("node", &tar).unwrap();
            assert_eq!(archive.metadata, meta(NODE));
            assert_eq!(archive.metadata_json, NODE);
        }
    }

    #[test]
    fn an_archive_without_install_sh_or_metadata_is_refused() {
        let tar = tar_of(&[("./devcontainer-feature.json", NODE.as_bytes()), ("./scripts/install.sh", INSTALL)]);
        let err = read_archive("ghcr.io/x/node:1", &tar).unwrap_err();
        assert!(matches!(&err, FeatureError::NoInstallScript { feature } if feature == "ghcr.io/x/node:1"), "{err:?}");
        assert!(err.to_string().contains("no install.sh"));
        let tar = tar_of(&[("./install.sh", INSTALL), ("./src/devcontainer-feature.json", NODE.as_bytes())]);
        assert!(matches!(read_archive("node", &tar), Err(FeatureError::NoMetadata { .. })));
        assert!(matches!(read_archive("node", &[]), Err(FeatureError::NoMetadata { .. })));
        let tar = tar_of(&[("./install.sh", INSTALL), ("./devcontainer-feature.json", b"{\"id\": ")]);
        assert!(matches!(read_archive("node", &tar), Err(FeatureError::InvalidMetadata { .. })));
        let tar = tar_of(&[("./install.sh", INSTALL), ("./devcontainer-feature.json", b"\xff\xfe")]);
        assert!(matches!(read_archive("node", &tar), Err(FeatureError::InvalidMetadata { .. })));
    }

    #[test]
    fn oversized_metadata_and_broken_layers_are_refused() {
        let big = format!("{{\"id\": \"node\", \"description\": \"{}\"}}", "x".repeat(MAX_METADATA_BYTES));
        let tar = tar_of(&[("./install.sh", INSTALL), ("./devcontainer-feature.json", big.as_bytes())]);
        let err = read_archive("node", &tar).unwrap_err();
        assert!(matches!(err, FeatureError::MetadataTooLarge { max: MAX_METADATA_BYTES, .. }), "{err:?}");
        assert!(matches!(parse_metadata("node", &big), Err(FeatureError::MetadataTooLarge { .. })));

        let err = read_archive("node", &[0x1f, 0x8b, 8, 0, 0, 0]).unwrap_err();
        assert!(err.to_string().contains("gzip-compressed"), "{err}");
        let err = read_archive("node", &[b'x'; 1024]).unwrap_err();
        assert!(matches!(err, FeatureError::Tar { .. }), "{err:?}");
        // Truncated in the middle of the metadata.
        let tar = tar_of(&[("./install.sh", INSTALL), ("./devcontainer-feature.json", NODE.as_bytes())]);
        assert!(read_archive("node", &tar[..1024 + 100]).is_err());

        let many: Vec<(String, &[u8])> = (0..MAX_ARCHIVE_ENTRIES).map(|i| (format!("f{i}"), &b""[..])).collect();
        let mut entries: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        entries.push(("install.sh", INSTALL));
        entries.push(("devcontainer-feature.json", NODE.as_bytes()));
        let err = read_archive("node", &tar_of(&entries)).unwrap_err();
        assert!(err.to_string().contains("more than 10000 entries"), "{err}");
    }

    #[test]
    fn dir_names_are_numbered_and_clean() {
        assert_eq!(dir_name(0, "node"), "01-node");
        assert_eq!(dir_name(11, "common-utils"), "12-common-utils");
        assert_eq!(dir_name(99, "x"), "100-x");
        assert_eq!(dir_name(0, "Docker in/Docker_1.0"), "01-docker-in-docker_1.0");
        assert_eq!(dir_name(0, "../../etc"), "01-..-..-etc");
        assert_eq!(dir_name(0, &"a".repeat(100)), format!("01-{}", "a".repeat(40)));
        assert_eq!(dir_name(usize::MAX, "x"), format!("{}-x", usize::MAX));
    }

    #[test]
    fn quoting_keeps_any_value_literal() {
        assert_eq!(sh_quote("it's"), "'it'\"'\"'s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_expanding("/x/bin:${PATH}"), "\"/x/bin:${PATH}\"");
        assert_eq!(sh_expanding("$HOME/a"), "\"${HOME}/a\"");
        assert_eq!(sh_expanding("$(id) `id` \\ \" ${A:-b} $1 $"), "\"\\$(id) \\`id\\` \\\\ \\\" \\${A:-b} \\$1 \\$\"");
        assert_eq!(pieces("a${B}c$D_1.e${"), [Piece::Text("a"), Piece::Var("B"), Piece::Text("c"), Piece::Var("D_1"), Piece::Text(".e${")]);
        assert_eq!(pieces("${}${1}$"), [Piece::Text("${}${1}$")]);
    }

    #[test]
    fn the_script_uses_the_features_dir() {
        let node = Prepared { dir: "01-node".into(), reference: format!("{F}/node:1"), env: vec![("VERSION".into(), "lts".into())], container_env: vec![] };
        let script = install_script(&[node]);
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("cp -R '/run/pinacle/features/01-node/.' \"$pinacle_dir\""), "{script}");
        assert!(script.contains("export VERSION='lts'"));
        assert!(script.contains("pinacle: %s feature installed"));
    }

    struct Run {
        code: Option<i32>,
        stdout: String,
        stderr: String,
    }

    fn run_script(script: &str, work: &std::path::Path) -> Run {
        let path = work.join("install-features.sh");
        std::fs::write(&path, script).unwrap();
        let out =
            std::process::Command::new("/bin/sh").arg(&path).env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin").env("TMPDIR", work).output().unwrap();
        Run { code: out.status.code(), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() }
    }

    /// A feature directory whose install.sh (not executable: the script
    /// makes it so) runs `body`.
    fn fake_feature(base: &std::path::Path, dir: &str, body: &str) {
        std::fs::create_dir_all(base.join(dir)).unwrap();
        std::fs::write(base.join(dir).join("install.sh"), format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::write(base.join(dir).join(".hidden"), "copied too").unwrap();
    }

    #[test]
    fn the_script_installs_in_order_with_literal_values() {
        let work = tempfile::tempdir().unwrap();
        let base = work.path().join("features");
        let out = work.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let record = r#"echo "$(basename "$0")" >/dev/null
name=$(cat .name)
echo "$name" >> "$OUT/order"
printf '%s' "$MSG" > "$OUT/$name.msg"
printf '%s' "$PATH" > "$OUT/$name.path"
printf '%s' "$TRICKY" > "$OUT/$name.tricky"
printf '%s' "$_REMOTE_USER" > "$OUT/$name.user"
pwd > "$OUT/$name.pwd"
cat .hidden > "$OUT/$name.hidden""#;
        fake_feature(&base, "01-node", record);
        std::fs::write(base.join("01-node/.name"), "node").unwrap();
        fake_feature(&base, "02-python", record);
        std::fs::write(base.join("02-python/.name"), "python").unwrap();

        let msg = "it's a \"$HOME\" test; `id` $(touch pwned) \\n\nsecond line ${PATH}";
        let tricky = "it's \"q\" \\ $(touch pwned) `touch pwned2` ${NOPE}x $ ${PATH:-d}";
        let env = |extra: &str| {
            vec![
                ("MSG".to_owned(), format!("{msg}{extra}")),
                ("OUT".to_owned(), out.to_string_lossy().into_owned()),
                ("_REMOTE_USER".to_owned(), "root".to_owned()),
                ("bad-name".to_owned(), "skipped".to_owned()),
                ("NUL".to_owned(), "a\0b".to_owned()),
            ]
        };
        let node = Prepared {
            dir: "01-node".into(),
            reference: format!("{F}/node:1"),
            env: env(""),
            container_env: vec![("PATH".into(), "/opt/node/bin:${PATH}".into()), ("TRICKY".into(), tricky.into()), ("bad name".into(), "x".into())],
        };
        let python = Prepared {
            dir: "02-python".into(),
            reference: "ghcr.io/x/py:1'; touch pwned; '".into(),
            env: env(" 2"),
            container_env: vec![("PATH".into(), "/opt/py/bin:$PATH".into())],
        };
        let features = [node, python];
        let script = install_script_in(&base.to_string_lossy(), &features);
        let run = run_script(&script, work.path());
        assert_eq!(run.code, Some(0), "{}\n{}\n{script}", run.stdout, run.stderr);
        assert_eq!(
            run.stdout,
            format!(
                "pinacle: installing feature {F}/node:1 (1/2)\npinacle: installing feature ghcr.io/x/py:1'; touch pwned; ' (2/2)\npinacle: 2 features installed\n"
            )
        );
        let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
        assert_eq!(read("order"), "node\npython\n");
        assert_eq!(read("node.msg"), msg);
        assert_eq!(read("python.msg"), format!("{msg} 2"));
        assert_eq!(read("node.user"), "root");
        assert_eq!(read("node.hidden"), "copied too");
        // Earlier features' containerEnv only, `${PATH}` expanded.
        assert_eq!(read("node.path"), "/usr/local/bin:/usr/bin:/bin");
        assert_eq!(read("node.tricky"), "");
        assert_eq!(read("python.path"), "/opt/node/bin:/usr/local/bin:/usr/bin:/bin");
        let expected_tricky = "it's \"q\" \\ $(touch pwned) `touch pwned2` x $ ${PATH:-d}";
        assert_eq!(read("python.tricky"), expected_tricky);
        // The same values as expand_container_env works out for the pod.
        let pod_env = expand_container_env(&features, &["PATH=/usr/local/bin:/usr/bin:/bin".to_owned()]);
        assert_eq!(pod_env, ["PATH=/opt/py/bin:/opt/node/bin:/usr/local/bin:/usr/bin:/bin".to_owned(), format!("TRICKY={expected_tricky}")]);
        // It ran in copies, which are gone; the features directory is untouched.
        let pwd = read("node.pwd");
        assert!(!pwd.trim().starts_with(&*base.to_string_lossy()), "{pwd}");
        assert!(!std::path::Path::new(pwd.trim()).exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(base.join("01-node/install.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0);
        let leftovers: Vec<_> = std::fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 3, "{leftovers:?}");
        assert!(!work.path().join("pwned").exists() && !work.path().join("pwned2").exists() && !out.join("pwned").exists());
    }

    #[test]
    fn a_failing_feature_stops_the_script_with_its_code() {
        let work = tempfile::tempdir().unwrap();
        let base = work.path().join("features");
        let out = work.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        fake_feature(&base, "01-a", "echo a >> \"$OUT/order\"");
        fake_feature(&base, "02-b", "echo b >> \"$OUT/order\"; echo 'b broke' >&2; exit 7");
        fake_feature(&base, "03-c", "echo c >> \"$OUT/order\"");
        let prepared = |dir: &str, reference: &str| Prepared {
            dir: dir.into(),
            reference: reference.into(),
            env: vec![("OUT".into(), out.to_string_lossy().into_owned())],
            container_env: vec![],
        };
        let features = [prepared("01-a", "ghcr.io/x/a:1"), prepared("02-b", "ghcr.io/x/b's:1"), prepared("03-c", "ghcr.io/x/c:1")];
        let run = run_script(&install_script_in(&base.to_string_lossy(), &features), work.path());
        assert_eq!(run.code, Some(7), "{}\n{}", run.stdout, run.stderr);
        assert_eq!(std::fs::read_to_string(out.join("order")).unwrap(), "a\nb\n");
        assert!(run.stderr.contains("b broke\npinacle: feature ghcr.io/x/b's:1 failed (exit 7)\n"), "{}", run.stderr);
        assert!(!run.stdout.contains("(3/3)") && !run.stdout.contains("installed"), "{}", run.stdout);

        // A feature directory that is missing fails the script too.
        let run = run_script(&install_script_in(&base.to_string_lossy(), &[prepared("09-gone", "ghcr.io/x/gone")]), work.path());
        assert_eq!(run.code, Some(1));
        assert!(run.stderr.contains("pinacle: feature ghcr.io/x/gone failed (exit 1)"), "{}", run.stderr);

        // No features: nothing to do.
        let run = run_script(&install_script_in("/nonexistent", &[]), work.path());
        assert_eq!(run.code, Some(0));
        assert_eq!(run.stdout, "pinacle: 0 features installed\n");
    }

    #[test]
    fn container_env_expands_against_the_base_and_earlier_features() {
        let node = meta(NODE);
        let python = meta(PYTHON);
        let prepared =
            |dir: &str, m: &FeatureMetadata| Prepared { dir: dir.into(), reference: m.id.clone(), env: vec![], container_env: m.container_env.clone() };
        let features = [prepared("01-node", &node), prepared("02-python", &python)];
        let base = ["HOME=/root".to_owned(), "PATH=/bin".to_owned(), "PATH=/usr/bin:/bin".to_owned(), "junk".to_owned()];
        assert_eq!(
            expand_container_env(&features, &base),
            [
                "NVM_DIR=/usr/local/share/nvm",
                "NVM_SYMLINK_CURRENT=true",
                "PATH=/usr/local/python/current/bin:/usr/local/py-utils/bin:/usr/local/share/nvm/current/bin:/usr/bin:/bin",
                "PYTHON_PATH=/usr/local/python/current",
                "PIPX_HOME=/usr/local/py-utils",
                "PIPX_BIN_DIR=/usr/local/py-utils/bin",
            ]
        );
        // Unknown names expand to nothing; a variable may use one set before it.
        let f = Prepared {
            dir: "01-x".into(),
            reference: "x".into(),
            env: vec![],
            container_env: vec![
                ("A".into(), "${UNSET}a".into()),
                ("B".into(), "$A-${A}".into()),
                ("bad name".into(), "x".into()),
                ("BIG".into(), "${HUGE}${HUGE}".into()),
                ("OK".into(), "${HUGE}".into()),
            ],
        };
        let huge = format!("HUGE={}", "h".repeat(MAX_ENV_VALUE_BYTES));
        let env = expand_container_env(&[f], std::slice::from_ref(&huge));
        assert_eq!(env.len(), 3);
        assert_eq!(env[..2], ["A=a", "B=a-a"]);
        assert_eq!(env[2], format!("OK={}", &huge["HUGE=".len()..]));
    }
}
