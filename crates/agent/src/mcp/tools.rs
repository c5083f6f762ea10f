//! The two tools that put an agent's MCP servers in front of the model,
//! small enough for the first-turn prompt: `mcp_tools` (servers; with
//! `server`, its tools, descriptions and input schemas) and `mcp_call`.
//! A listed tool is also callable by its prefixed name, `mcp__SERVER__TOOL`.

use serde_json::{json, Value};

use super::{config, McpHub};
use crate::provider::ToolSpec;
use crate::tools::ToolOutput;
use crate::turn::SandboxAccess;

pub const TOOL_NAMES: [&str; 2] = ["mcp_tools", "mcp_call"];

/// Most bytes of a listing or result given to the model.
const MAX_OUTPUT: usize = 32 * 1024;

pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "mcp_tools".into(),
            description: "List MCP servers, or one server's tools and schemas.".into(),
            input_schema: json!({"type": "object", "properties": {"server": {"type": "string"}}, "required": []}),
        },
        ToolSpec {
            name: "mcp_call".into(),
            description: "Call an MCP server's tool.".into(),
            input_schema: json!({"type": "object", "properties": {
                "server": {"type": "string"}, "tool": {"type": "string"},
                "arguments": {"type": "object"}}, "required": ["server", "tool"]}),
        },
    ]
}

/// Whether `name` is one of the MCP tools (the two above or a prefixed one).
pub fn handles(name: &str) -> bool {
    TOOL_NAMES.contains(&name) || config::split_prefixed(name).is_some()
}

fn err(content: impl Into<String>) -> ToolOutput {
    ToolOutput {
        content: content.into(),
        is_error: true,
    }
}

pub async fn execute(
    hub: &McpHub,
    sandbox: &dyn SandboxAccess,
    name: &str,
    input: &Value,
) -> ToolOutput {
    if let Some(raw) = input.get(crate::tools::INVALID_ARGS) {
        return err(format!(
            "invalid arguments: not a JSON object: {}",
            raw.as_str().unwrap_or_default()
        ));
    }
    let s = |k: &str| match input.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(err(format!("invalid arguments: {k} must be a string"))),
    };
    match name {
        "mcp_tools" => match s("server") {
            Err(e) => e,
            Ok(None) => list_servers(hub),
            Ok(Some(server)) => list_tools(hub, sandbox, server).await,
        },
        "mcp_call" => {
            let (server, tool) = match (s("server"), s("tool")) {
                (Ok(Some(a)), Ok(Some(b))) => (a, b),
                (Err(e), _) | (_, Err(e)) => return e,
                _ => return err("invalid arguments: server and tool are required"),
            };
            // Accept the prefixed name too.
            let tool = config::split_prefixed(tool)
                .filter(|(s, _)| *s == server)
                .map_or(tool, |(_, t)| t);
            call(hub, sandbox, server, tool, input.get("arguments")).await
        }
        prefixed => match config::split_prefixed(prefixed) {
            Some((server, tool)) => call(hub, sandbox, server, tool, Some(input)).await,
            None => err(format!("unknown tool {prefixed:?}")),
        },
    }
}

fn list_servers(hub: &McpHub) -> ToolOutput {
    let mut out = String::from("MCP servers (call mcp_tools with server to see its tools):\n");
    for s in hub.servers() {
        let kind = match s.transport() {
            config::Transport::Stdio => "runs in your machine",
            config::Transport::Http => "remote",
        };
        out.push_str(&format!("- {} ({kind})\n", s.name));
    }
    ToolOutput {
        content: out.trim_end().to_string(),
        is_error: false,
    }
}

async fn list_tools(hub: &McpHub, sandbox: &dyn SandboxAccess, server: &str) -> ToolOutput {
    let tools = match hub.list_tools(server, sandbox).await {
        Ok(t) => t,
        Err(e) => return err(e),
    };
    if tools.is_empty() {
        return ToolOutput {
            content: format!("MCP server {server:?} has no tools"),
            is_error: false,
        };
    }
    let mut out = format!(
        "Tools of {server} (call with mcp_call {{server, tool, arguments}} or by the mcp__ name):\n"
    );
    for t in &tools {
        let name = t["name"].as_str().unwrap_or_default();
        let alias = config::prefixed(server, name).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "\n## {name} ({alias})\n{}\ninput schema: {}\n",
            t["description"].as_str().unwrap_or("").trim(),
            t.get("inputSchema").unwrap_or(&Value::Null)
        ));
    }
    ToolOutput {
        content: cut(out),
        is_error: false,
    }
}

async fn call(
    hub: &McpHub,
    sandbox: &dyn SandboxAccess,
    server: &str,
    tool: &str,
    arguments: Option<&Value>,
) -> ToolOutput {
    let args = match arguments {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return err("invalid arguments: arguments must be a JSON object"),
    };
    match hub.call(server, tool, args, sandbox).await {
        Ok(r) => result_text(&r),
        Err(e) => err(e),
    }
}

/// A `CallToolResult` as text: text content as is, anything else as JSON.
pub fn result_text(r: &Value) -> ToolOutput {
    let mut parts = Vec::new();
    for c in r["content"].as_array().into_iter().flatten() {
        match (c["type"].as_str(), c["text"].as_str()) {
            (Some("text"), Some(t)) => parts.push(t.to_string()),
            (Some("image" | "audio"), _) => parts.push(format!(
                "[{} content, {}, not shown]",
                c["type"].as_str().unwrap_or_default(),
                c["mimeType"].as_str().unwrap_or("unknown type")
            )),
            _ => parts.push(c.to_string()),
        }
    }
    if parts.is_empty() {
        if let Some(s) = r.get("structuredContent") {
            parts.push(s.to_string());
        }
    }
    let text = parts.join("\n");
    ToolOutput {
        content: cut(if text.is_empty() {
            "(no output)".into()
        } else {
            text
        }),
        is_error: r["isError"].as_bool().unwrap_or(false),
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_OUTPUT {
        let mut at = MAX_OUTPUT;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        let total = s.len();
        s.truncate(at);
        s.push_str(&format!("\n[... cut: {total} bytes in all]"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_cost_little() {
        let n = crate::tokens::tools(&specs());
        println!("MCP tool schemas: {n} cl100k tokens, whatever the servers offer");
        assert!(n < 110, "{n}");
    }

    #[test]
    fn results_become_text() {
        let r = json!({"content": [{"type": "text", "text": "hi"}, {"type": "image", "data": "x", "mimeType": "image/png"}], "isError": true});
        let o = result_text(&r);
        assert!(o.is_error);
        assert_eq!(o.content, "hi\n[image content, image/png, not shown]");
        assert_eq!(result_text(&json!({"content": []})).content, "(no output)");
        assert!(handles("mcp_call") && handles("mcp__a__b") && !handles("bash"));
        let big = cut("é".repeat(MAX_OUTPUT));
        assert!(big.ends_with("bytes in all]"));
    }
}
