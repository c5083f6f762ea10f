//! The OpenAPI 3.1 document of /v1. Written out by hand from the routes in
//! `lib.rs::router` (a test checks every route is documented; the fuzz
//! test drives schemathesis with it, so parameters, bodies, response
//! schemas and the create -> use links below are what clients can rely on).

use axum::response::IntoResponse;
use serde_json::{json, Map, Value};

/// One operation: `id` (operationId), summary, success status, request body.
fn op(id: &str, summary: &str, ok: &str, body: Option<Value>) -> Value {
    let mut o = json!({
        "operationId": id,
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

/// The success response returns JSON of this schema.
fn returns(mut o: Value, schema: Value) -> Value {
    let ok = success_code(&o);
    o["responses"][ok]["content"] = json!({"application/json": {"schema": schema}});
    o
}

/// The success response returns `content_type` (text, a byte stream).
fn returns_raw(mut o: Value, content_type: &str) -> Value {
    let ok = success_code(&o);
    o["responses"][ok]["content"] = json!({content_type: {"schema": {"type": "string"}}});
    o
}

/// The success response has these OpenAPI links (name -> operationId, parameters).
fn links(mut o: Value, links: &[(&str, &str, Value)]) -> Value {
    let ok = success_code(&o);
    let mut m = Map::new();
    for (name, target, params) in links {
        m.insert(
            name.to_string(),
            json!({"operationId": target, "parameters": params}),
        );
    }
    o["responses"][ok]["links"] = Value::Object(m);
    o
}

/// Extra query parameters.
fn query(mut o: Value, params: &[Value]) -> Value {
    let mut list = o["parameters"].as_array().cloned().unwrap_or_default();
    list.extend(params.iter().cloned());
    o["parameters"] = Value::Array(list);
    o
}

/// No bearer token needed.
fn public(mut o: Value) -> Value {
    o["security"] = json!([]);
    o
}

fn success_code(o: &Value) -> String {
    o["responses"]
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "default")
        .unwrap()
        .clone()
}

fn q(name: &str, required: bool, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": required, "schema": schema, "description": description})
}

/// `?owner=USER`: the admin acts in that user's namespace.
fn owner_param() -> Value {
    json!({"name": "owner", "in": "query", "required": false, "schema": {"type": "string"},
           "description": "Admin only: the user whose sandbox NAME is (default: the caller's own; at most once). Another user's sandbox is a 404 for non-admins."})
}

/// `?owner=USER` on task routes.
fn tasks_owner() -> Value {
    json!({"name": "owner", "in": "query", "required": false, "schema": {"type": "string"},
           "description": "Admin only: the user whose tasks these are (default: the caller's own). Another user's task is a 404 for non-admins."})
}

/// `?user=USER` on memory routes.
fn memory_user() -> Value {
    json!({"name": "user", "in": "query", "required": false, "schema": {"type": "string"},
           "description": "Admin only: the user whose memory this is (default: the caller's own). Another user's is a 404 for non-admins."})
}

fn name_param() -> Value {
    json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}])
}

fn path_query() -> Value {
    q(
        "path",
        true,
        json!({"type": "string", "minLength": 1}),
        "Absolute path inside the sandbox",
    )
}

/// A sandbox-name link parameter set from a `Sandbox` response.
fn sandbox_link() -> Value {
    json!({"path.name": "$response.body#/name", "query.owner": "$response.body#/owner"})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn schemas() -> Value {
    let name = json!({"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"});
    let usage = json!({"type": "object", "required": ["turns", "input_tokens", "output_tokens", "cost_usd"], "properties": {
        "turns": {"type": "integer"}, "input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"},
        "cache_read_tokens": {"type": "integer", "description": "of input_tokens, read from the provider's prompt cache"},
        "cache_write_tokens": {"type": "integer", "description": "of input_tokens, written to the provider's prompt cache"},
        "cost_usd": {"type": "number"}}});
    json!({
        "MemoryStatus": {"type": "object", "required": ["user", "mode", "files", "chunks", "with_vectors", "paths", "weights"], "properties": {
            "user": {"type": "string"}, "embedder": {"type": ["string", "null"]}, "mode": {"type": "string", "enum": ["hybrid", "text", "vector"]},
            "fallback": {"type": ["string", "null"]}, "files": {"type": "integer"}, "chunks": {"type": "integer"}, "with_vectors": {"type": "integer"},
            "paths": {"type": "array", "items": {"type": "string"}}, "weights": {"type": "object"}}},
        "MemorySearch": {"type": "object", "required": ["user", "mode", "hits"], "properties": {
            "user": {"type": "string"}, "mode": {"type": "string", "enum": ["hybrid", "text", "vector"]}, "fallback": {"type": "string"},
            "hits": {"type": "array", "items": {"type": "object", "required": ["path", "start_line", "end_line", "snippet", "score"], "properties": {
                "path": {"type": "string"}, "start_line": {"type": "integer"}, "end_line": {"type": "integer"}, "snippet": {"type": "string"}, "score": {"type": "number"}}}}}},
        "MemoryReindex": {"type": "object", "required": ["user", "files", "indexed", "unchanged", "skipped", "removed", "embedded", "problems"], "properties": {
            "user": {"type": "string"}, "files": {"type": "integer"}, "indexed": {"type": "integer"}, "unchanged": {"type": "integer"},
            "skipped": {"type": "integer"}, "removed": {"type": "integer"}, "embedded": {"type": "integer"},
            "problems": {"type": "array", "items": {"type": "string"}}, "note": {"type": "string"}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        "Name": name,
        "CreateSandbox": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
            "name": name,
            "image": {"type": ["string", "null"]}, "backend": {"type": ["string", "null"], "enum": ["namespace", "qemu", "firecracker", null]},
            "vcpus": {"type": ["integer", "null"], "minimum": 1, "maximum": 64},
            "memory_mib": {"type": ["integer", "null"], "minimum": 16, "maximum": 1_048_576},
            "disk_mib": {"type": ["integer", "null"], "minimum": 64, "maximum": 16_777_216},
            "mounts": {"type": "array", "description": "Host directories to bind in (namespace backend; only under the daemon's [[mount_roots]])",
                "items": {"type": "object", "required": ["host", "guest"], "additionalProperties": false, "properties": {
                    "host": {"type": "string"}, "guest": {"type": "string"}, "read_only": {"type": "boolean", "default": true}}}},
            "network": {"type": ["string", "null"], "enum": ["internet", "none", null], "description": "internet: a port on the host bridge, egress under `egress`; none: loopback only (default from the config)"},
            "egress": {"oneOf": [schema_ref("Egress"), {"type": "null"}]},
            "join": {"oneOf": [name.clone(), {"type": "null"}], "description": "A named network of the owner's to join: its members reach each other"}}},
        "Egress": {"type": "object", "additionalProperties": false, "description": "Egress policy. Empty denies all; the host, 127/8, 169.254/16 and other sandboxes are denied whatever it says; private ranges need allow_cidrs.",
            "properties": {
                "allow_all": {"type": "boolean", "default": false},
                "allow_domains": {"type": "array", "items": {"type": "string"}, "description": "example.com, or *.example.com for the names under it"},
                "allow_cidrs": {"type": "array", "items": {"type": "string"}, "description": "e.g. 203.0.113.0/24"},
                "deny_cidrs": {"type": "array", "items": {"type": "string"}}}},
        "Sandbox": {"type": "object",
            "required": ["name", "owner", "state", "backend", "image", "vcpus", "memory_mib", "disk_mib", "disk_used_bytes", "created_at", "started_at", "state_reason", "pid", "mounts", "network", "address", "egress", "exposures"],
            "properties": {
                "name": {"type": "string"}, "owner": {"type": "string"},
                "state": {"type": "string", "enum": ["creating", "running", "stopped", "crashed", "error"]},
                "backend": {"type": "string"}, "image": {"type": "string"},
                "vcpus": {"type": "integer"}, "memory_mib": {"type": "integer"}, "disk_mib": {"type": "integer"},
                "disk_used_bytes": {"type": "integer"}, "created_at": {"type": "string"},
                "started_at": {"type": ["string", "null"]}, "state_reason": {"type": ["string", "null"]},
                "pid": {"type": ["integer", "null"]},
                "mounts": {"type": "array", "items": {"type": "object", "properties": {
                    "host": {"type": "string"}, "guest": {"type": "string"}, "read_only": {"type": "boolean"}}}},
                "network": {"type": "string", "enum": ["internet", "none"]},
                "address": {"type": ["string", "null"], "description": "Address on the sandbox bridge"},
                "egress": schema_ref("Egress"),
                "network_name": {"type": ["string", "null"]},
                "exposures": {"type": "array", "items": schema_ref("Exposure")}}},
        "Exposure": {"type": "object", "required": ["port", "public", "url"], "properties": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535}, "public": {"type": "boolean"},
            "url": {"type": "string", "description": "http://PORT-NAME.<base_domain>:<listen port>"}}},
        "ExposureList": {"type": "object", "required": ["ports"], "properties": {"ports": {"type": "array", "items": schema_ref("Exposure")}}},
        "Expose": {"type": "object", "required": ["port"], "additionalProperties": false, "properties": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "public": {"type": "boolean", "default": false, "description": "Reachable without a token"}}},
        "SandboxList": {"type": "object", "required": ["sandboxes"], "properties": {"sandboxes": {"type": "array", "items": schema_ref("Sandbox")}}},
        "Exec": {"type": "object", "required": ["argv"], "additionalProperties": false, "properties": {
            "argv": {"type": "array", "minItems": 1, "items": {"type": "string"}, "description": "argv[0] names the command (not empty)"}, "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "cwd": {"type": ["string", "null"]}, "stdin": {"type": ["string", "null"]},
            "timeout_secs": {"type": ["integer", "null"], "minimum": 1}, "timeout_ms": {"type": ["integer", "null"], "minimum": 1}},
            "description": "timeout_secs or timeout_ms, not both; at most exec_timeout_max_secs"},
        "ExecResult": {"type": "object", "required": ["exit_code", "signal", "timed_out", "truncated", "stdout_truncated", "stderr_truncated", "stdout", "stderr"], "properties": {
            "exit_code": {"type": ["integer", "null"]}, "signal": {"type": ["integer", "null"]}, "timed_out": {"type": "boolean"},
            "truncated": {"type": "boolean"}, "stdout_truncated": {"type": "boolean"}, "stderr_truncated": {"type": "boolean"},
            "stdout": {"type": "string"}, "stderr": {"type": "string"}}},
        "FileStat": {"type": "object", "required": ["path", "kind", "size", "mode", "mtime"], "properties": {
            "path": {"type": "string"}, "kind": {"type": "string", "enum": ["file", "dir", "symlink", "other"]},
            "size": {"type": "integer"}, "mode": {"type": "integer"}, "mtime": {"type": "integer"}}},
        "DirList": {"type": "object", "required": ["entries"], "properties": {"entries": {"type": "array", "items": {"type": "object",
            "required": ["name", "kind", "size", "mode", "mtime"], "properties": {
            "name": {"type": "string"}, "kind": {"type": "string", "enum": ["file", "dir", "symlink", "other"]},
            "size": {"type": "integer"}, "mode": {"type": "integer"}, "mtime": {"type": "integer"}}}}}},
        "ConsoleList": {"type": "object", "required": ["sessions"], "properties": {"sessions": {"type": "array", "items": {"type": "object",
            "required": ["name"], "properties": {"name": {"type": "string"}, "pid": {"type": ["integer", "null"]}, "alive": {"type": "boolean"},
            "attached": {"type": "integer", "description": "clients attached now"}, "rows": {"type": "integer"}, "cols": {"type": "integer"}}}}}},
        "BuildImage": {"type": "object", "required": ["name", "from"], "additionalProperties": false, "properties": {"name": name, "from": {"type": "string", "enum": ["busybox", "debian"]}}},
        "Mkdir": {"type": "object", "required": ["path"], "additionalProperties": false, "properties": {"path": {"type": "string", "minLength": 1}, "parents": {"type": "boolean"}}},
        "Remove": {"type": "object", "required": ["path"], "additionalProperties": false, "properties": {"path": {"type": "string", "minLength": 1}, "recursive": {"type": "boolean"}}},
        "Rename": {"type": "object", "required": ["from", "to"], "additionalProperties": false, "properties": {"from": {"type": "string", "minLength": 1}, "to": {"type": "string", "minLength": 1}}},
        "Usage": usage,
        "DeployInit": {"type": "object", "additionalProperties": false, "properties": {
            "port": {"type": "integer", "minimum": 1, "maximum": 19999, "default": 8000, "description": "The port the app's URL serves (kept once set)"}}},
        "DeployTarget": {"type": "object", "required": ["name", "remote", "port", "auth"], "properties": {
            "name": {"type": "string"}, "remote": {"type": "string", "description": "git remote URL"}, "port": {"type": "integer"}, "auth": {"type": "string"}}},
        "ReleaseList": {"type": "object", "required": ["port", "releases"], "properties": {"port": {"type": "integer"}, "releases": {"type": "array", "items": {"type": "object",
            "required": ["number", "commit", "status", "created_at"], "properties": {
            "number": {"type": "integer"}, "commit": {"type": "string"},
            "status": {"type": "string", "enum": ["building", "live", "failed", "rolled-back", "superseded"]},
            "created_at": {"type": "string"}, "web": {"type": "string"}, "log_tail": {"type": "string"}}}}}},
        "Session": {"type": "object", "required": ["id", "user", "agent", "title", "created_at", "updated_at", "messages"], "properties": {
            "id": {"type": "string"}, "user": {"type": "string"}, "agent": {"type": "string"}, "title": {"type": ["string", "null"]},
            "created_at": {"type": "string"}, "updated_at": {"type": "string"}, "messages": {"type": "integer"}}},
        "SessionList": {"type": "object", "required": ["sessions"], "properties": {"sessions": {"type": "array", "items": schema_ref("Session")}}},
        "SessionHistory": {"type": "object", "required": ["session", "messages", "usage"], "properties": {
            "session": schema_ref("Session"), "messages": {"type": "array", "items": {"type": "object"}}, "usage": {"type": "object"}}},
        "User": {"type": "object", "required": ["name", "admin", "created_at"], "properties": {
            "name": {"type": "string"}, "admin": {"type": "boolean"}, "created_at": {"type": "string"}, "tokens": {"type": "integer"}}},
        "NewUser": {"type": "object", "required": ["user", "token", "token_id"], "properties": {
            "user": schema_ref("User"), "token": {"type": "string"}, "token_id": {"type": "string"}}},
        "NewToken": {"type": "object", "required": ["user", "token", "token_id"], "properties": {
            "user": {"type": "string"}, "token": {"type": "string"}, "token_id": {"type": "string"}}},
        "AddKey": {"type": "object", "required": ["key"], "additionalProperties": false, "properties": {
            "key": {"type": "string", "minLength": 1, "description": "One line of a .pub file: ALGORITHM BASE64 [COMMENT]"},
            "label": {"type": ["string", "null"]}}},
        "SshKey": {"type": "object", "required": ["id", "user", "fingerprint", "algorithm", "label", "created_at"], "properties": {
            "id": {"type": "string"}, "user": {"type": "string"}, "fingerprint": {"type": "string"}, "algorithm": {"type": "string"},
            "label": {"type": ["string", "null"]}, "created_at": {"type": "string"}}},
        "CreateTask": {"type": "object", "required": ["name", "prompt"], "additionalProperties": false,
            "description": "Exactly one of at, every, cron.", "properties": {
            "name": name, "prompt": {"type": "string", "minLength": 1, "maxLength": 16384},
            "at": {"type": ["string", "null"], "description": "RFC 3339, or a local YYYY-MM-DDTHH:MM[:SS] in tz; in the future"},
            "every": {"type": ["string", "null"], "description": "A duration: 30s, 5m, 1h, 1d"},
            "cron": {"type": ["string", "null"], "description": "5 fields, or 6 with seconds first"},
            "tz": {"type": ["string", "null"], "description": "IANA time zone (default UTC)"}}},
        "TaskRun": {"type": "object", "required": ["id", "slot", "state", "result", "error", "started_at", "finished_at"], "properties": {
            "id": {"type": "integer"}, "task_id": {"type": "string"}, "slot": {"type": "integer", "description": "unix seconds"},
            "state": {"type": "string", "enum": ["running", "ok", "failed"]},
            "result": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
            "started_at": {"type": "string"}, "finished_at": {"type": ["string", "null"]}}},
        "Task": {"type": "object", "required": ["name", "owner", "prompt", "next_run", "created_at"], "properties": {
            "name": {"type": "string"}, "owner": {"type": "string"}, "prompt": {"type": "string"},
            "at": {"type": ["string", "null"]}, "every": {"type": ["string", "null"]}, "cron": {"type": ["string", "null"]},
            "tz": {"type": ["string", "null"]}, "next_run": {"type": ["string", "null"]}, "created_at": {"type": "string"},
            "last_run": {"anyOf": [{"$ref": "#/components/schemas/TaskRun"}, {"type": "null"}]}}},
        "ChatCompletion": {"type": "object", "required": ["model", "messages"], "properties": {
            "model": {"type": "string"}, "stream": {"type": "boolean"},
            "messages": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role", "content"], "properties": {
                "role": {"type": "string", "enum": ["system", "user", "assistant"]}, "content": {"type": "string", "minLength": 1}}}}}}
    })
}

pub fn document() -> Value {
    let mut d = base_document();
    channel_paths(&mut d);
    d
}

fn base_document() -> Value {
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
    // Where a new sandbox leads: every operation on it.
    let sandbox_links = [
        ("show", "getSandbox", sandbox_link()),
        ("info", "sandboxInfo", sandbox_link()),
        ("logs", "sandboxLogs", sandbox_link()),
        ("exec", "execInSandbox", sandbox_link()),
        ("stop", "stopSandbox", sandbox_link()),
        ("egress", "setSandboxEgress", sandbox_link()),
        ("start", "startSandbox", sandbox_link()),
        ("consoles", "listConsoles", sandbox_link()),
        ("list_dir", "listDir", sandbox_link()),
        ("mkdir", "makeDir", sandbox_link()),
        ("upload", "uploadFile", sandbox_link()),
        ("ports", "listPorts", sandbox_link()),
        ("expose", "exposePort", sandbox_link()),
        ("remove", "deleteSandbox", sandbox_link()),
    ];
    // POST .../ports answers 201 for a new exposure, 200 for a changed one.
    let expose_ok = json!({"description": "success", "content": {"application/json": {"schema": schema_ref("Exposure")}},
        "links": {"unexpose": {"operationId": "unexposePort", "parameters": {"path.name": "$request.path.name", "path.port": "$response.body#/port"}}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "IronClaw", "version": env!("CARGO_PKG_VERSION"), "description": "Sandboxes (microVMs and namespaces) with a guest agent, behind one API. Bearer token auth."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/health": {"get": public(returns(op("health", "Liveness (no auth)", "200", None),
                json!({"type": "object", "required": ["status", "version"], "properties": {"status": {"type": "string"}, "version": {"type": "string"}}})))},
            "/v1/host": {"get": returns(op("hostReport", "Host capability report (doctor)", "200", None), json!({"type": "object"}))},
            "/v1/openapi.json": {"get": public(returns(op("openapi", "This document (no auth)", "200", None), json!({"type": "object"})))},
            "/v1/sandboxes": {
                "parameters": [owner_param()],
                "get": returns(op("listSandboxes", "List the caller's sandboxes (the admin: everyone's, or one user's with ?owner=)", "200", None), schema_ref("SandboxList")),
                "post": links(returns(op("createSandbox", "Create and start a sandbox", "201", Some(schema_ref("CreateSandbox"))), schema_ref("Sandbox")), &sandbox_links)
            },
            "/v1/sandboxes/{name}": in_sandbox(json!({
                "get": returns(op("getSandbox", "Show a sandbox", "200", None), schema_ref("Sandbox")),
                "delete": op("deleteSandbox", "Stop and remove a sandbox and its disk", "204", None)})),
            "/v1/sandboxes/{name}/start": in_sandbox(json!({"post": returns(op("startSandbox", "Start a stopped sandbox", "200", None), schema_ref("Sandbox"))})),
            "/v1/sandboxes/{name}/egress": in_sandbox(json!({"put": returns(op("setSandboxEgress", "Replace the sandbox's egress policy (applied at once while it runs)", "200", Some(schema_ref("Egress"))), schema_ref("Sandbox"))})),
            "/v1/sandboxes/{name}/stop": in_sandbox(json!({"post": returns(op("stopSandbox", "Stop a sandbox (its disk is kept)", "200", None), schema_ref("Sandbox"))})),
            "/v1/sandboxes/{name}/info": in_sandbox(json!({"get": returns(op("sandboxInfo", "Guest agent info", "200", None), json!({"type": "object"}))})),
            "/v1/sandboxes/{name}/logs": in_sandbox(json!({"get": query(returns_raw(op("sandboxLogs", "Recent console (and VMM) log, text", "200", None), "text/plain"),
                &[q("bytes", false, json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}), "Most bytes of log to return (default 65536, at most 16 MiB)")])})),
            "/v1/sandboxes/{name}/exec": in_sandbox(json!({"post": returns(op("execInSandbox", "Run a command to completion", "200", Some(schema_ref("Exec"))), schema_ref("ExecResult"))})),
            "/v1/sandboxes/{name}/exec/ws": in_sandbox(json!({"get": op("execWebSocket", "Streamed exec over WebSocket (see docs/api.md); a plain GET is a 400", "101", None)})),
            "/v1/sandboxes/{name}/console": in_sandbox(json!({"get": returns(op("listConsoles", "List persistent console sessions", "200", None), schema_ref("ConsoleList"))})),
            "/v1/sandboxes/{name}/console/ws": in_sandbox(json!({"get": query(op("consoleWebSocket", "Attach to a persistent console session over WebSocket; a plain GET is a 400", "101", None), &[
                q("session", false, schema_ref("Name"), "Session name (default main)"),
                q("rows", false, json!({"type": "integer", "minimum": 0, "maximum": 65535}), "Terminal rows"),
                q("cols", false, json!({"type": "integer", "minimum": 0, "maximum": 65535}), "Terminal columns")])})),
            "/v1/sandboxes/{name}/console/{session}": {"parameters": [
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "session", "in": "path", "required": true, "schema": {"type": "string"}},
                owner_param()],
                "delete": op("killConsole", "Kill a console session", "204", None)},
            "/v1/sandboxes/{name}/files": in_sandbox(json!({
                "get": query(returns_raw(op("downloadFile", "Download a file (streamed)", "200", None), "application/octet-stream"), &[path_query()]),
                "put": {
                    "operationId": "uploadFile",
                    "summary": "Upload a file (streamed raw body)",
                    "parameters": [path_query(), q("mode", false, json!({"type": "string", "pattern": "^[0-7]{1,4}$"}), "Octal permission bits, e.g. 644")],
                    "requestBody": {"required": false, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                    "responses": {
                        "200": {"description": "success", "content": {"application/json": {"schema": schema_ref("FileStat")}}},
                        "default": {"description": "error", "content": {"application/json": {"schema": schema_ref("Error")}}}
                    }
                }})),
            "/v1/sandboxes/{name}/fs/stat": in_sandbox(json!({"get": query(returns(op("statPath", "Stat a path", "200", None), schema_ref("FileStat")), &[path_query()])})),
            "/v1/sandboxes/{name}/fs/list": in_sandbox(json!({"get": query(returns(op("listDir", "List a directory", "200", None), schema_ref("DirList")), &[path_query()])})),
            "/v1/sandboxes/{name}/fs/mkdir": in_sandbox(json!({"post": op("makeDir", "Make a directory", "204", Some(schema_ref("Mkdir")))})),
            "/v1/sandboxes/{name}/fs/remove": in_sandbox(json!({"post": op("removePath", "Remove a path", "204", Some(schema_ref("Remove")))})),
            "/v1/sandboxes/{name}/fs/rename": in_sandbox(json!({"post": op("renamePath", "Rename a path", "204", Some(schema_ref("Rename")))})),
            "/v1/sandboxes/{name}/ports": in_sandbox(json!({
                "get": returns(op("listPorts", "The sandbox's exposed ports with their URLs", "200", None), schema_ref("ExposureList")),
                "post": {
                    "operationId": "exposePort",
                    "summary": "Expose a port at http://PORT-NAME.<base_domain> (private unless public; posting again changes public)",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("Expose")}}},
                    "responses": {
                        "201": expose_ok.clone(),
                        "200": expose_ok,
                        "default": {"description": "error", "content": {"application/json": {"schema": schema_ref("Error")}}}
                    }
                }})),
            "/v1/sandboxes/{name}/ports/{port}": {"parameters": [
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "port", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1, "maximum": 65535}},
                owner_param()],
                "delete": op("unexposePort", "Stop serving an exposed port", "204", None)},
            "/v1/sandboxes/{name}/deploy": in_sandbox(json!({
                "post": {
                    "operationId": "deployInit",
                    "summary": "Make the sandbox a git-push deploy target (idempotent): answers its git remote (201 new, 200 existing)",
                    "requestBody": {"required": false, "content": {"application/json": {"schema": schema_ref("DeployInit")}}},
                    "responses": {
                        "201": {"description": "success", "content": {"application/json": {"schema": schema_ref("DeployTarget")}}},
                        "200": {"description": "success", "content": {"application/json": {"schema": schema_ref("DeployTarget")}}},
                        "default": {"description": "error", "content": {"application/json": {"schema": schema_ref("Error")}}}
                    }
                }})),
            "/v1/sandboxes/{name}/watch": in_sandbox(json!({"get": query(returns_raw(op("watchDir", "Changes in a directory as Server-Sent Events (event create, write, remove, rename, chmod or overflow; data {type, path}), after a first ready event", "200", None), "text/event-stream"), &[
                q("path", true, json!({"type": "string", "minLength": 1}), "The directory to watch"),
                q("recursive", false, json!({"type": "boolean"}), "Its subdirectories too"),
                q("timeout_secs", false, json!({"type": "integer", "minimum": 0}), "End the stream after this long (default: when the client leaves)")])})),
            "/v1/sandboxes/{name}/deploy/releases": in_sandbox(json!({"get": returns(op("deployReleases", "The sandbox's releases, oldest first", "200", None), schema_ref("ReleaseList"))})),
            "/v1/sandboxes/{name}/deploy/logs": in_sandbox(json!({"get": query(returns_raw(op("deployLogs", "The live release's process log (text; streamed with follow)", "200", None), "text/plain"), &[
                q("follow", false, json!({"type": "boolean"}), "Keep streaming new lines"),
                q("lines", false, json!({"type": "integer", "minimum": 0, "maximum": 100_000}), "Lines of history (default 100)")])})),
            "/v1/sandboxes/{name}/deploy/rollback": in_sandbox(json!({"post": returns(op("deployRollback", "Switch back to the previous good release (started and listening before the switch)", "200", None),
                json!({"type": "object", "required": ["release", "url", "output"], "properties": {"release": {"type": ["integer", "null"]}, "url": {"type": "string"}, "output": {"type": "array", "items": {"type": "string"}}}}))})),
            "/v1/sandboxes/{name}/git/info/refs": in_sandbox(json!({"get": query(returns_raw(op("gitInfoRefs", "Git smart HTTP: ref advertisement of the deploy repository (token as bearer or as the basic-auth password)", "200", None), "application/octet-stream"),
                &[q("service", false, json!({"type": "string", "enum": ["git-upload-pack", "git-receive-pack"]}), "The git service")])})),
            "/v1/sandboxes/{name}/git/git-upload-pack": in_sandbox(json!({"post": returns_raw(op("gitUploadPack", "Git smart HTTP fetch/clone (git's request body)", "200", None), "application/x-git-upload-pack-result")})),
            "/v1/sandboxes/{name}/git/git-receive-pack": in_sandbox(json!({"post": returns_raw(op("gitReceivePack", "Git smart HTTP push: runs the release while the push waits; its output comes as `remote:` lines", "200", None), "application/x-git-receive-pack-result")})),
            "/v1/sessions": {
                "get": returns(op("listSessions", "The caller's chat sessions, newest first", "200", None), schema_ref("SessionList")),
                "post": {
                    "operationId": "createSession",
                    "summary": "Start a session (body optional)",
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {"agent": {"type": ["string", "null"]}}}}}},
                    "responses": {
                        "201": {"description": "success", "content": {"application/json": {"schema": schema_ref("Session")}},
                                "links": {"show": {"operationId": "getSession", "parameters": {"path.id": "$response.body#/id"}},
                                          "remove": {"operationId": "deleteSession", "parameters": {"path.id": "$response.body#/id"}}}},
                        "default": {"description": "error", "content": {"application/json": {"schema": schema_ref("Error")}}}
                    }
                }
            },
            "/v1/sessions/{id}": {"parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": returns(op("getSession", "A session with its full history and usage", "200", None), schema_ref("SessionHistory")),
                "delete": op("deleteSession", "Delete a session", "204", None)},
            "/v1/tasks": {"parameters": [tasks_owner()],
                "get": returns(op("listTasks", "The caller's scheduled tasks", "200", None), json!({"type": "array", "items": schema_ref("Task")})),
                "post": links(returns(op("createTask", "Schedule a task (400 on bad input, 403 at a limit)", "201", Some(schema_ref("CreateTask"))), schema_ref("Task")),
                    &[("show", "getTask", json!({"path.name": "$response.body#/name"})),
                      ("runs", "listTaskRuns", json!({"path.name": "$response.body#/name"})),
                      ("remove", "deleteTask", json!({"path.name": "$response.body#/name"}))])},
            "/v1/tasks/{name}": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}, tasks_owner()],
                "get": returns(op("getTask", "A scheduled task", "200", None), schema_ref("Task")),
                "delete": op("deleteTask", "Cancel a task (its runs go with it)", "204", None)},
            "/v1/tasks/{name}/runs": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}, tasks_owner()],
                "get": returns(op("listTaskRuns", "A task's runs, newest first, with their result or failure", "200", None),
                    json!({"type": "array", "items": schema_ref("TaskRun")}))},
            "/v1/tasks/{name}/runs/{id}": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}, tasks_owner()],
                "get": returns(op("getTaskRun", "One run with its conversation (messages; null while it runs)", "200", None),
                    json!({"allOf": [schema_ref("TaskRun"), {"type": "object", "required": ["messages"], "properties": {"messages": {"type": ["array", "null"]}}}]}))},
            "/v1/memory/status": {"parameters": [memory_user()],
                "get": returns(op("memoryStatus", "The caller's memory index: files, chunks, vectors, the embedder, and why search is text only when it is", "200", None), schema_ref("MemoryStatus"))},
            "/v1/memory/search": {"parameters": [memory_user()],
                "post": returns(op("memorySearch", "Search the caller's memory files (hybrid BM25 + vectors, or text only, said in fallback); 400 for an empty or over-4-KiB query", "200",
                    Some(json!({"type": "object", "required": ["query"], "additionalProperties": false, "properties": {
                        "query": {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": "\\S", "description": "at most 4096 bytes, not only spaces"}, "max_results": {"type": ["integer", "null"], "minimum": 1, "maximum": 50}}}))),
                    schema_ref("MemorySearch"))},
            "/v1/memory/reindex": {"parameters": [memory_user()],
                "post": returns(op("memoryReindex", "Reread the caller's memory files from their agent sandbox (started if stopped) and index what changed", "200", None), schema_ref("MemoryReindex"))},
            "/v1/chat/ws": {"get": query(op("chatWebSocket", "Streaming chat over WebSocket (see docs/api.md); a plain GET is a 400", "101", None),
                &[q("session", false, json!({"type": "string"}), "Session id (default: the latest, or a new one)")])},
            "/v1/models": {"get": returns(op("listModels", "Agents, OpenAI-style", "200", None),
                json!({"type": "object", "required": ["object", "data"], "properties": {"object": {"type": "string"}, "data": {"type": "array"}}}))},
            "/v1/chat/completions": {"post": op("chatCompletions", "OpenAI-compatible chat completions (model = agent name; stream or not)", "200",
                Some(schema_ref("ChatCompletion")))},
            "/v1/me": {"get": returns(op("me", "The calling user and their usage", "200", None),
                json!({"type": "object", "required": ["user", "admin", "usage", "sandbox", "quota"], "properties": {
                    "user": {"type": "string"}, "admin": {"type": "boolean"}, "usage": schema_ref("Usage"),
                    "sandbox": {"type": ["string", "null"]}, "quota": {"type": "object"}}}))},
            "/v1/users": {
                "get": returns(op("listUsers", "List users with usage (admin)", "200", None),
                    json!({"type": "object", "required": ["users"], "properties": {"users": {"type": "array", "items": schema_ref("User")}}})),
                "post": links(returns(op("addUser", "Add a user; returns their first token (admin)", "201",
                    Some(json!({"type": "object", "required": ["name"], "additionalProperties": false, "properties": {"name": schema_ref("Name")}}))), schema_ref("NewUser")), &[
                    ("tokens", "listTokens", json!({"path.name": "$response.body#/user/name"})),
                    ("issue", "issueToken", json!({"path.name": "$response.body#/user/name"})),
                    ("revoke_first", "revokeToken", json!({"path.name": "$response.body#/user/name", "path.id": "$response.body#/token_id"})),
                    ("remove", "deleteUser", json!({"path.name": "$response.body#/user/name"}))])
            },
            "/v1/users/{name}": sandbox_paths(json!({"delete": op("deleteUser", "Remove a user, their sandboxes, sessions and tokens (admin)", "204", None)})),
            "/v1/users/{name}/tokens": sandbox_paths(json!({
                "get": returns(op("listTokens", "List a user's tokens (admin)", "200", None),
                    json!({"type": "object", "required": ["tokens"], "properties": {"tokens": {"type": "array"}}})),
                "post": {
                    "operationId": "issueToken",
                    "summary": "Issue a token (admin; body optional)",
                    "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {"label": {"type": ["string", "null"]}}}}}},
                    "responses": {
                        "201": {"description": "success", "content": {"application/json": {"schema": schema_ref("NewToken")}},
                                "links": {"revoke": {"operationId": "revokeToken", "parameters": {"path.name": "$response.body#/user", "path.id": "$response.body#/token_id"}}}},
                        "default": {"description": "error", "content": {"application/json": {"schema": schema_ref("Error")}}}
                    }
                },
                "delete": returns(op("revokeAllTokens", "Revoke all of a user's tokens (admin)", "200", None),
                    json!({"type": "object", "required": ["revoked"], "properties": {"revoked": {"type": "integer"}}}))})),
            "/v1/users/{name}/tokens/{id}": {"parameters": [
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "delete": op("revokeToken", "Revoke one token (admin)", "204", None)},
            "/v1/keys": {
                "parameters": [owner_param()],
                "get": returns(op("listKeys", "The caller's SSH public keys (the admin: a user's with ?owner=)", "200", None),
                    json!({"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": schema_ref("SshKey")}}})),
                "post": links(returns(op("addKey", "Register an SSH public key (one line of a .pub file); 409 if already registered", "201",
                    Some(schema_ref("AddKey"))), schema_ref("SshKey")), &[
                    ("remove", "deleteKey", json!({"path.id": "$response.body#/id"}))])
            },
            "/v1/keys/{id}": {"parameters": [
                {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, owner_param()],
                "delete": op("deleteKey", "Remove one of the caller's SSH keys", "204", None)},
            "/v1/images": {
                "get": returns(op("listImages", "List images", "200", None),
                    json!({"type": "object", "required": ["images"], "properties": {"images": {"type": "array"}}})),
                "post": returns_raw(op("buildImage", "Build an image; progress streamed as NDJSON", "200", Some(schema_ref("BuildImage"))), "application/x-ndjson")
            },
            "/v1/images/{name}": sandbox_paths(json!({"delete": op("deleteImage", "Remove an unused image", "204", None)}))
        }
    })
}

/// Chat channels (`/v1/channels`, admin) and pairing approval.
fn channel_paths(d: &mut Value) {
    let name =
        json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
    let opt_str = json!({"type": ["string", "null"]});
    let add = json!({"type": "object", "required": ["kind", "name"], "additionalProperties": false, "properties": {
        "kind": {"type": "string", "enum": ["telegram", "slack", "discord", "matrix", "webhook"]},
        "name": schema_ref("Name"),
        "token_env": opt_str, "secret_env": opt_str, "api_base": opt_str, "callback_url": opt_str,
        "access": {"type": "string", "enum": ["pairing", "allowlist", "open"]},
        "allow": {"type": "array", "items": {"type": "string"}},
        "groups": {"type": "array", "items": {"type": "string"}},
        "trigger": opt_str,
        "scope": {"type": "string", "enum": ["sender", "chat", "thread"]},
        "user": opt_str}});
    let channel = json!({"type": "object", "required": ["name", "kind", "owner", "settings", "running", "connected", "last_error", "queue_depth", "created_at"], "properties": {
        "name": {"type": "string"}, "kind": {"type": "string"}, "owner": {"type": "string"}, "settings": {"type": "object"},
        "running": {"type": "boolean"}, "connected": {"type": "boolean"}, "last_error": {"type": ["string", "null"]},
        "queue_depth": {"type": "integer"}, "created_at": {"type": "string"}}});
    let paths = json!({
        "/v1/channels": {
            "get": returns(op("listChannels", "Chat channels with their status: connected, last error, queue depth (admin)", "200", None),
                json!({"type": "object", "required": ["channels"], "properties": {"channels": {"type": "array", "items": channel}}})),
            "post": links(returns(op("addChannel", "Add a chat channel; its credentials are named env vars of the daemon (admin)", "201", Some(add)), channel.clone()),
                &[("show", "getChannel", json!({"path.name": "$response.body#/name"})),
                  ("messages", "listChannelMessages", json!({"path.name": "$response.body#/name"})),
                  ("remove", "deleteChannel", json!({"path.name": "$response.body#/name"}))])},
        "/v1/channels/{name}": {"parameters": name,
            "get": returns(op("getChannel", "A channel's status (admin)", "200", None), channel),
            "delete": op("deleteChannel", "Remove a channel with its messages and queue (admin)", "204", None)},
        "/v1/channels/{name}/messages": {"parameters": name,
            "get": query(returns(op("listChannelMessages", "Inbound messages, newest first, each with its reply parts and their delivery log (admin)", "200", None),
                json!({"type": "object", "required": ["messages"], "properties": {"messages": {"type": "array"}}})),
                &[q("limit", false, json!({"type": "integer", "minimum": 1, "maximum": 500}), "At most this many (default 50)")])},
        "/v1/channels/{name}/events": {"parameters": name,
            "post": public(op("channelEvents", "Inbound endpoint the chat service calls (signed: webhook X-Ironclaw-Signature, Slack X-Slack-Signature v0)", "200",
                Some(json!({"type": "object"}))))},
        "/v1/pairings/approve": {
            "post": returns(op("approvePairing", "Link the sender waiting with a pairing code to a user (admin)", "200",
                Some(json!({"type": "object", "required": ["code", "user"], "additionalProperties": false, "properties": {
                    "code": {"type": "string"}, "user": {"type": "string"}}}))),
                json!({"type": "object", "required": ["channel", "sender", "code", "user"], "properties": {
                    "channel": {"type": "string"}, "sender": {"type": "string"}, "code": {"type": "string"}, "user": {"type": ["string", "null"]}}}))}
    });
    if let (Some(p), Value::Object(add)) = (d["paths"].as_object_mut(), paths) {
        p.extend(add);
    }
}

pub async fn serve() -> impl IntoResponse {
    axum::Json(document())
}
