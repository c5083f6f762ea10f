//! The agent's MCP client against a real MCP server built on the official
//! Python `mcp` package (tests/mcp/server.py): over stdio through the
//! guest agent's exec stream, and over streamable HTTP from the host with
//! a bearer token read from the host environment. Turns are driven by the
//! scripted mock LLM. (That a stdio server runs inside a real sandbox is
//! checked by the daemon's tests/mcp_client.rs; the guest here is in
//! `serve` mode.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::*;
use ironclaw_agent::mcp::{McpHub, McpServerConfig};
use ironclaw_agent::mock::{MockLlm, MockReply};
use ironclaw_agent::{run_turn, TurnEvent};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn server_py() -> String {
    format!("{}/tests/mcp/server.py", env!("CARGO_MANIFEST_DIR"))
}

/// The host's python3 with the `mcp` package (the guest in `serve` mode
/// has a plain PATH, which may find another one).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import mcp, sys; print(sys.executable)"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 lacks the mcp package (scripts/test.sh installs it)"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn stdio_server(name: &str) -> McpServerConfig {
    McpServerConfig {
        name: name.into(),
        command: Some(python()),
        args: vec![server_py(), "stdio".into()],
        ..Default::default()
    }
}

/// Tool results of a turn, in order: (name, output, is_error).
fn tool_ends(events: &[TurnEvent]) -> Vec<(String, String, bool)> {
    let mut names = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in events {
        match e {
            TurnEvent::ToolStart { id, name, .. } => {
                names.insert(id.clone(), name.clone());
            }
            TurnEvent::ToolEnd {
                id,
                output,
                is_error,
            } => out.push((names[id].clone(), output.clone(), *is_error)),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_server_over_the_exec_stream_lists_and_calls_tools() {
    let guest = Guest::start().await;
    let mock = MockLlm::start([
        MockReply::tool("mcp_tools", json!({})),
        MockReply::tool("mcp_tools", json!({"server": "py"})),
        MockReply::tool(
            "mcp_call",
            json!({"server": "py", "tool": "add", "arguments": {"a": 2, "b": 40}}),
        ),
        MockReply::tool("mcp__py__where", json!({})),
        MockReply::tool(
            "mcp_call",
            json!({"server": "py", "tool": "fail", "arguments": {"why": "on purpose"}}),
        ),
        MockReply::tool("mcp_call", json!({"server": "nope", "tool": "x"})),
        MockReply::text("done"),
    ])
    .await;
    let mut ctx = context(&mock, Wire::OpenAi, &guest);
    let hub = Arc::new(McpHub::new(
        vec![stdio_server("py")],
        &guest.workdir(),
        McpHub::host_env(),
    ));
    ctx.mcp = Some(hub.clone());
    let (tx, events) = collector();
    let out = run_turn(&ctx, &[], "use the py tools", tx, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.final_text(), "done");
    let ends = tool_ends(&events.await.unwrap());
    assert_eq!(ends.len(), 6, "{ends:?}");
    assert_eq!(ends[0].0, "mcp_tools");
    assert!(
        ends[0].1.contains("- py (runs in your machine)"),
        "{ends:?}"
    );
    assert!(
        ends[1].1.contains("## add (mcp__py__add)")
            && ends[1].1.contains("Add two integers.")
            && ends[1].1.contains("\"a\""),
        "{}",
        ends[1].1
    );
    assert_eq!((ends[2].1.as_str(), ends[2].2), ("42", false));
    let workdir = guest.workdir();
    assert!(
        ends[3].1.contains(&format!("cwd={workdir}")) && !ends[3].2,
        "the server runs where the guest runs it: {}",
        ends[3].1
    );
    // The SDK hides the exception's text; the failure itself comes through.
    assert!(ends[4].2 && ends[4].1.contains("fail"), "{:?}", ends[4]);
    assert!(
        ends[5].2
            && ends[5]
                .1
                .contains("unknown MCP server \"nope\"; configured: py"),
        "{:?}",
        ends[5]
    );
    // Two tools were offered, not the server's: listing stays lazy.
    let first = &mock.requests()[0].body;
    let names: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"mcp_tools") && names.contains(&"mcp_call"));
    assert!(!names.iter().any(|n| n.starts_with("mcp__")), "{names:?}");

    // One connection, reused, held until closed; the process then ends.
    assert_eq!(hub.connected().await, ["py"]);
    let pid: String = ends[3]
        .1
        .split("pid=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .into();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    hub.close().await;
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !std::path::Path::new(&format!("/proc/{pid}/status")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| s.contains("State:\tZ"))
    });
    assert!(gone, "the server process {pid} outlived its connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_fails_to_start_gives_its_stderr() {
    let guest = Guest::start().await;
    let broken = McpServerConfig {
        name: "broken".into(),
        command: Some("sh".into()),
        args: vec![
            "-c".into(),
            "echo 'Traceback: no module named nothing' >&2; exit 3".into(),
        ],
        ..Default::default()
    };
    let missing = McpServerConfig {
        name: "missing".into(),
        command: Some("/no/such/server".into()),
        ..Default::default()
    };
    let hub = McpHub::new(vec![broken, missing], &guest.workdir(), McpHub::host_env());
    let out = ironclaw_agent::mcp::tools::execute(
        &hub,
        &guest.agent,
        "mcp_tools",
        &json!({"server": "broken"}),
    )
    .await;
    assert!(out.is_error);
    assert!(
        out.content
            .contains("MCP server \"broken\" failed to start")
            && out.content.contains("Traceback: no module named nothing")
            && out.content.contains("code 3"),
        "{}",
        out.content
    );
    let out = ironclaw_agent::mcp::tools::execute(
        &hub,
        &guest.agent,
        "mcp_call",
        &json!({"server": "missing", "tool": "x"}),
    )
    .await;
    assert!(out.is_error);
    assert!(out.content.contains("127"), "{}", out.content);
    assert!(hub.connected().await.is_empty());
}

struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(token: &str) -> HttpServer {
        let mut child = Command::new("python3")
            .arg(server_py())
            .arg("http")
            .env("MCP_TEST_TOKEN", token)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().strip_prefix("port ").unwrap().parse().unwrap();
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_from_the_host_with_a_host_held_token() {
    const TOKEN: &str = "host-only-mcp-token-5d1c";
    let srv = HttpServer::start(TOKEN);
    let guest = Guest::start().await;
    let http = |name: &str, env: &str| McpServerConfig {
        name: name.into(),
        url: Some(format!("http://127.0.0.1:{}/mcp", srv.port)),
        bearer_env: Some(env.into()),
        ..Default::default()
    };
    let env: ironclaw_agent::mcp::EnvLookup = Arc::new(|k: &str| match k {
        "WEB_TOKEN" => Some(TOKEN.to_string()),
        "WRONG_TOKEN" => Some("wrong".to_string()),
        _ => None,
    });
    let hub = Arc::new(McpHub::new(
        vec![
            http("web", "WEB_TOKEN"),
            http("bad", "WRONG_TOKEN"),
            http("unset", "NOT_SET"),
        ],
        &guest.workdir(),
        env,
    ));
    let mock = MockLlm::start([
        MockReply::tool("mcp_tools", json!({"server": "web"})),
        MockReply::tool("mcp__web__add", json!({"a": 1, "b": 2})),
        MockReply::tool("mcp_call", json!({"server": "bad", "tool": "add"})),
        MockReply::tool("mcp_call", json!({"server": "unset", "tool": "add"})),
        // The sandbox's environment does not hold the token.
        MockReply::tool("bash", json!({"command": "env; echo end"})),
        MockReply::text("ok"),
    ])
    .await;
    let mut ctx = context(&mock, Wire::Anthropic, &guest);
    ctx.mcp = Some(hub.clone());
    let (tx, events) = collector();
    run_turn(&ctx, &[], "web", tx, CancellationToken::new())
        .await
        .unwrap();
    let ends = tool_ends(&events.await.unwrap());
    assert!(
        ends[0].1.contains("## where (mcp__web__where)"),
        "{:?}",
        ends[0]
    );
    assert_eq!((ends[1].1.as_str(), ends[1].2), ("3", false));
    assert!(
        ends[2].2 && ends[2].1.contains("\"bad\" failed to start"),
        "{:?}",
        ends[2]
    );
    assert!(
        ends[3].2
            && ends[3]
                .1
                .contains("host environment variable NOT_SET is not set"),
        "{:?}",
        ends[3]
    );
    assert!(ends[4].1.contains("end") && !ends[4].1.contains(TOKEN));
    // The token went to the MCP server only, never to the model.
    for r in mock.requests() {
        assert!(!r.raw.contains(TOKEN));
    }
    assert_eq!(hub.connected().await, ["web"]);
}

/// Figures, no timed assert: an MCP tool call over the exec stream (the
/// connection already up) next to a plain exec of `true` on the same guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_call_round_trip_next_to_exec() {
    const N: u32 = 30;
    let guest = Guest::start().await;
    let hub = McpHub::new(
        vec![stdio_server("py")],
        &guest.workdir(),
        McpHub::host_env(),
    );
    let args = || json!({"a": 1, "b": 2}).as_object().cloned();
    let t = std::time::Instant::now();
    assert_eq!(
        hub.call("py", "add", args(), &guest.agent).await.unwrap()["content"][0]["text"],
        "3"
    );
    let start = t.elapsed();
    let t = std::time::Instant::now();
    for _ in 0..N {
        hub.call("py", "add", args(), &guest.agent).await.unwrap();
    }
    let mcp = t.elapsed() / N;
    let t = std::time::Instant::now();
    for _ in 0..N {
        let req = ironclaw_sandbox::types::ExecRequest {
            argv: vec!["true".into()],
            ..Default::default()
        };
        let out = guest.agent.exec_collect(req, None).await.unwrap();
        assert_eq!(out.status.code, 0);
    }
    let exec = t.elapsed() / N;
    println!(
        "MCP client: first call (python3 start + initialize + call) {:.1} ms; \
         then mcp tools/call {:.2} ms vs exec `true` {:.2} ms on the same guest ({:.2}x)",
        start.as_secs_f64() * 1e3,
        mcp.as_secs_f64() * 1e3,
        exec.as_secs_f64() * 1e3,
        mcp.as_secs_f64() / exec.as_secs_f64()
    );
}
