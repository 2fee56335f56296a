//! The JSON Schema of `pinacle.yaml`, generated from [`PinacleConfig`] (the
//! same types [`crate::parse`] fills), with the registries' names as enums.

use schemars::{json_schema, Schema, SchemaGenerator};

use crate::pinacle_yaml::PinacleConfig;
use crate::services::Service;
use crate::templates::Template;

/// The schema, as JSON.
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(PinacleConfig);
    schema.insert("$id".into(), "https://pinacle.dev/schemas/pinacle.yaml.json".into());
    schema.to_value()
}

/// The schema, pretty-printed with a trailing newline (the file kept in the
/// repository at `config/pinacle.schema.json`).
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    s.push('\n');
    s
}

pub(crate) fn version(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "description": "Format version.", "enum": ["1.0", 1.0] })
}

pub(crate) fn tier(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": ["dev.small", "dev.medium", "dev.large", "dev.xlarge"], "default": "dev.small" })
}

pub(crate) fn template_id(_: &mut SchemaGenerator) -> Schema {
    let ids: Vec<_> = Template::ids().collect();
    json_schema!({ "enum": ids })
}

pub(crate) fn services(_: &mut SchemaGenerator) -> Schema {
    let ids: Vec<_> = Service::ids().collect();
    json_schema!({ "type": "array", "items": { "enum": ids }, "uniqueItems": true })
}

pub(crate) fn string_or_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "oneOf": [
            { "type": "string", "minLength": 1 },
            { "type": "array", "items": { "type": "string", "minLength": 1 } }
        ]
    })
}

pub(crate) fn env(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
        "additionalProperties": { "type": ["string", "number", "boolean"] }
    })
}

pub(crate) fn env_names(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }, "uniqueItems": true })
}

pub(crate) fn idle_timeout(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "oneOf": [
            { "type": "string", "pattern": "^([0-9]+[smhd])+$|^never$" },
            { "type": "integer", "minimum": 1, "description": "minutes" }
        ]
    })
}

pub(crate) fn image(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "oneOf": [
            { "type": "string", "minLength": 1, "description": "an image of `pinacle image list` (`base`, `node`, ...) or a registry image (`python:3.13`, `ghcr.io/owner/image@sha256:…`)" },
            {
                "type": "object",
                "additionalProperties": false,
                "required": ["build"],
                "properties": {
                    "build": {
                        "type": "object",
                        "description": "Build the image from a Dockerfile of the pod's repository.",
                        "additionalProperties": false,
                        "required": ["dockerfile"],
                        "properties": {
                            "dockerfile": { "type": "string", "minLength": 1, "description": "relative to the repository's root" },
                            "context": { "type": "string", "minLength": 1, "default": ".", "description": "relative to the repository's root" },
                            "args": { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } },
                            "target": { "type": "string", "minLength": 1 }
                        }
                    }
                }
            }
        ]
    })
}

pub(crate) fn features(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "Devcontainer features (OCI references) and their options.",
        "maxProperties": crate::pinacle_yaml::MAX_FEATURE_REQUESTS,
        "additionalProperties": {
            "oneOf": [
                { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } },
                { "type": "string", "description": "the `version` option" },
                { "type": "null" }
            ]
        }
    })
}
