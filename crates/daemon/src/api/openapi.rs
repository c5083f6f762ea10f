//! The OpenAPI 3.1 document of /v1. Written out by hand from the routes in
//! `lib.rs::router` (a test checks every route is documented).

use axum::response::IntoResponse;
use serde_json::{json, Value};

fn op(summary: &str, ok: &str, body: Option<Value>) -> Value {
    let mut o = json!({
        "summary": summary,
        "responses": {
            ok: {"description": "success"},
            "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    });
    if let Some(b) = body {
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    o
}

/// `?owner=USER`: the admin acts in that user's namespace.
fn owner_param() -> Value {
    json!({"name": "owner", "in": "query", "required": false, "schema": {"type": "string"},
           "description": "Admin only: the user whose sandbox NAME is (default: the caller's own). Another user's sandbox is a 404 for non-admins."})
}

fn name_param() -> Value {
    json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}])
}

pub fn document() -> Value {
    let sandbox_paths = |get: Value| {
        let mut v = get;
        v["parameters"] = name_param();
        v
    };
    let in_sandbox = |get: Value| {
        let mut v = get;
        let mut params = name_param();
        params.as_array_mut().unwrap().push(owner_param());
        v["parameters"] = params;
        v
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "IronClaw", "version": env!("CARGO_PKG_VERSION"), "description": "Sandboxes (microVMs and namespaces) with a guest agent, behind one API. Bearer token auth."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "CreateSandbox": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
                    "image": {"type": "string"}, "backend": {"type": "string", "enum": ["namespace", "qemu", "firecracker"]},
                    "vcpus": {"type": "integer"}, "memory_mib": {"type": "integer"}, "disk_mib": {"type": "integer"},
                    "mounts": {"type": "array", "description": "Host directories to bind in (namespace backend; only under the daemon's [[mount_roots]])",
                        "items": {"type": "object", "required": ["host", "guest"], "properties": {
                            "host": {"type": "string"}, "guest": {"type": "string"}, "read_only": {"type": "boolean", "default": true}}}}}},
                "Exec": {"type": "object", "required": ["argv"], "properties": {
                    "argv": {"type": "array", "items": {"type": "string"}}, "env": {"type": "object"},
                    "cwd": {"type": "string"}, "stdin": {"type": "string"}, "timeout_secs": {"type": "integer"}, "timeout_ms": {"type": "integer"}}},
                "BuildImage": {"type": "object", "required": ["name", "from"], "properties": {"name": {"type": "string"}, "from": {"type": "string", "enum": ["busybox", "debian"]}}},
                "Path": {"type": "object", "required": ["path"], "properties": {"path": {"type": "string"}, "parents": {"type": "boolean"}, "recursive": {"type": "boolean"}}},
                "Rename": {"type": "object", "required": ["from", "to"], "properties": {"from": {"type": "string"}, "to": {"type": "string"}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/health": {"get": op("Liveness (no auth)", "200", None)},
            "/v1/host": {"get": op("Host capability report (doctor)", "200", None)},
            "/v1/openapi.json": {"get": op("This document (no auth)", "200", None)},
            "/v1/sandboxes": {
                "parameters": [owner_param()],
                "get": op("List the caller's sandboxes (the admin: everyone's, or one user's with ?owner=)", "200", None),
                "post": op("Create and start a sandbox", "201", Some(json!({"$ref": "#/components/schemas/CreateSandbox"})))
            },
            "/v1/sandboxes/{name}": in_sandbox(json!({"get": op("Show a sandbox", "200", None), "delete": op("Stop and remove a sandbox and its disk", "204", None)})),
            "/v1/sandboxes/{name}/start": in_sandbox(json!({"post": op("Start a stopped sandbox", "200", None)})),
            "/v1/sandboxes/{name}/stop": in_sandbox(json!({"post": op("Stop a sandbox (its disk is kept)", "200", None)})),
            "/v1/sandboxes/{name}/info": in_sandbox(json!({"get": op("Guest agent info", "200", None)})),
            "/v1/sandboxes/{name}/logs": in_sandbox(json!({"get": op("Recent console (and VMM) log, text; ?bytes=", "200", None)})),
            "/v1/sandboxes/{name}/exec": in_sandbox(json!({"post": op("Run a command to completion", "200", Some(json!({"$ref": "#/components/schemas/Exec"})))})),
            "/v1/sandboxes/{name}/exec/ws": in_sandbox(json!({"get": op("Streamed exec over WebSocket (see docs/api.md)", "101", None)})),
            "/v1/sandboxes/{name}/console": in_sandbox(json!({"get": op("List persistent console sessions", "200", None)})),
            "/v1/sandboxes/{name}/console/ws": in_sandbox(json!({"get": op("Attach to a persistent console session over WebSocket", "101", None)})),
            "/v1/sandboxes/{name}/console/{session}": {"parameters": [
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "session", "in": "path", "required": true, "schema": {"type": "string"}},
                owner_param()],
                "delete": op("Kill a console session", "204", None)},
            "/v1/sandboxes/{name}/files": in_sandbox(json!({
                "get": op("Download a file (streamed)", "200", None),
                "put": op("Upload a file (streamed raw body; ?path=&mode=)", "200", None)})),
            "/v1/sandboxes/{name}/fs/stat": in_sandbox(json!({"get": op("Stat a path", "200", None)})),
            "/v1/sandboxes/{name}/fs/list": in_sandbox(json!({"get": op("List a directory", "200", None)})),
            "/v1/sandboxes/{name}/fs/mkdir": in_sandbox(json!({"post": op("Make a directory", "204", Some(json!({"$ref": "#/components/schemas/Path"})))})),
            "/v1/sandboxes/{name}/fs/remove": in_sandbox(json!({"post": op("Remove a path", "204", Some(json!({"$ref": "#/components/schemas/Path"})))})),
            "/v1/sandboxes/{name}/fs/rename": in_sandbox(json!({"post": op("Rename a path", "204", Some(json!({"$ref": "#/components/schemas/Rename"})))})),
            "/v1/sessions": {
                "get": op("The caller's chat sessions, newest first", "200", None),
                "post": op("Start a session", "201", Some(json!({"type": "object", "properties": {"agent": {"type": "string"}}})))
            },
            "/v1/sessions/{id}": {"parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": op("A session with its full history and usage", "200", None),
                "delete": op("Delete a session", "204", None)},
            "/v1/chat/ws": {"get": op("Streaming chat over WebSocket (see docs/api.md)", "101", None)},
            "/v1/models": {"get": op("Agents, OpenAI-style", "200", None)},
            "/v1/chat/completions": {"post": op("OpenAI-compatible chat completions (model = agent name; stream or not)", "200",
                Some(json!({"type": "object", "required": ["model", "messages"]})))},
            "/v1/me": {"get": op("The calling user and their usage", "200", None)},
            "/v1/users": {
                "get": op("List users with usage (admin)", "200", None),
                "post": op("Add a user; returns their first token (admin)", "201", Some(json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}})))
            },
            "/v1/users/{name}": sandbox_paths(json!({"delete": op("Remove a user, their sandboxes, sessions and tokens (admin)", "204", None)})),
            "/v1/users/{name}/tokens": sandbox_paths(json!({
                "get": op("List a user's tokens (admin)", "200", None),
                "post": op("Issue a token (admin)", "201", None),
                "delete": op("Revoke all of a user's tokens (admin)", "200", None)})),
            "/v1/users/{name}/tokens/{id}": {"parameters": [
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "delete": op("Revoke one token (admin)", "204", None)},
            "/v1/images": {
                "get": op("List images", "200", None),
                "post": op("Build an image; progress streamed as NDJSON", "200", Some(json!({"$ref": "#/components/schemas/BuildImage"})))
            },
            "/v1/images/{name}": sandbox_paths(json!({"delete": op("Remove an unused image", "204", None)}))
        }
    })
}

pub async fn serve() -> impl IntoResponse {
    axum::Json(document())
}
