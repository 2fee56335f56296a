//! The REST API's OpenAPI 3.1 document, served at
//! `/api/v1/memory/openapi.json`: the paths written here, the schemas
//! generated from the same Rust types the handlers use.

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::http::Batch;
use crate::model::*;

fn op(summary: &str, request: Option<&str>, response: &str, status: &str) -> Value {
    let mut o = json!({
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            status: {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{response}")}}}},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"}
        }
    });
    if let Some(r) = request {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{r}")}}}});
    }
    o
}

fn id_param() -> Value {
    json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}])
}

fn log_param() -> Value {
    json!([{"name": "log", "in": "path", "required": true, "schema": {"type": "string", "enum": ["events", "changelog"]}}])
}

/// The whole document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let names = [
        ("NewMemory", generator.subschema_for::<NewMemory>()),
        ("Added", generator.subschema_for::<Added>()),
        ("Batch", generator.subschema_for::<Batch>()),
        ("Memory", generator.subschema_for::<Memory>()),
        ("Patch", generator.subschema_for::<Patch>()),
        ("Page", generator.subschema_for::<Page>()),
        ("SearchRequest", generator.subschema_for::<SearchRequest>()),
        ("Hit", generator.subschema_for::<Hit>()),
        ("Document", generator.subschema_for::<Document>()),
        ("Ingested", generator.subschema_for::<Ingested>()),
        ("History", generator.subschema_for::<History>()),
        ("LogPage", generator.subschema_for::<LogPage>()),
        ("Verification", generator.subschema_for::<Verification>()),
        ("Export", generator.subschema_for::<Export>()),
        ("Imported", generator.subschema_for::<Imported>()),
        ("Purged", generator.subschema_for::<Purged>()),
        ("Position", generator.subschema_for::<Position>()),
        ("RestoreRequest", generator.subschema_for::<RestoreRequest>()),
        ("Restored", generator.subschema_for::<Restored>()),
        ("Reembedding", generator.subschema_for::<Reembedding>()),
        ("ForkRequest", generator.subschema_for::<ForkRequest>()),
        ("Forked", generator.subschema_for::<Forked>()),
    ];
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    for (name, s) in names {
        // types that became definitions are referenced; inline ones are added
        schemas.entry(name.to_owned()).or_insert_with(|| s.to_value());
    }
    schemas.insert("Results".into(), json!({"type": "object", "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}}}}));
    schemas.insert("BatchResults".into(), json!({"type": "object", "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/Added"}}}}));
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}),
    );
    let list_params = json!([
        {"name": "layers", "in": "query", "schema": {"type": "string"}, "description": "comma-separated layers"},
        {"name": "session_id", "in": "query", "schema": {"type": "string"}},
        {"name": "since", "in": "query", "schema": {"type": "integer"}},
        {"name": "until", "in": "query", "schema": {"type": "integer"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"}}
    ]);
    let mut one = Map::new();
    one.insert("parameters".into(), id_param());
    one.insert("get".into(), op("The current version of a memory", None, "Memory", "200"));
    one.insert("patch".into(), op("Update: a new version supersedes the current one", Some("Patch"), "Memory", "200"));
    one.insert("delete".into(), op("Delete (its history stays)", None, "Memory", "200"));
    let mut list = op("Current memories, newest first", None, "Page", "200");
    list["parameters"] = list_params;
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Pinacle memory (Pinak)", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Long-term memory for the agents in pods. Tenant and project come from the bearer token."},
        "servers": [{"url": "/api/v1/memory"}],
        "paths": {
            "/memories": {"post": op("Add a memory (duplicates are answered with the existing one)", Some("NewMemory"), "Added", "201"), "get": list},
            "/memories/batch": {"post": op("Add up to 1000 memories in one transaction", Some("Batch"), "BatchResults", "200")},
            "/memories/{id}": Value::Object(one),
            "/memories/{id}/history": {"parameters": id_param(), "get": op("Every version and its changelog entries", None, "History", "200")},
            "/search": {"post": op("Hybrid search (vector and BM25, reciprocal-rank fusion)", Some("SearchRequest"), "Results", "200")},
            "/documents": {"post": op("Ingest a document into the rag layer", Some("Document"), "Ingested", "201")},
            "/logs/{log}": {"parameters": log_param(), "get": op("A page of a hash-chained log", None, "LogPage", "200")},
            "/logs/{log}/verify": {"parameters": log_param(), "get": op("Check a log's chain; names the first broken entry", None, "Verification", "200")},
            "/export": {"get": op("The project's current memories", None, "Export", "200")},
            "/import": {"post": op("Add an export's memories", Some("Export"), "Imported", "200")},
            "/project": {"delete": op("Purge the project's memory (admin)", None, "Purged", "200")},
            "/position": {"get": op("The project's changelog position", None, "Position", "200")},
            "/restore": {"post": op("Bring the memories back to a changelog position (as new versions)", Some("RestoreRequest"), "Restored", "200")},
            "/fork": {"post": op("Copy another project's memories (the same tenant's), as they stood at a changelog position, into this one", Some("ForkRequest"), "Forked", "201")},
            "/reembed": {
                "post": op("Start embedding again, in the background, the memories another embedder made", None, "Reembedding", "202"),
                "get": op("Where the project's re-embedding stands", None, "Reembedding", "200")
            }
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "responses": {"Error": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": Value::Object(schemas)
        }
    })
}
