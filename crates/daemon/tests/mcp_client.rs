//! Agents as MCP clients, end to end: a real daemon, the user's real agent
//! sandbox (Debian image), the scripted mock LLM, and an MCP server built
//! on the official Python `mcp` package. The stdio server runs inside the
//! sandbox (the host's installed `mcp` package and its dependencies are
//! bound in read-only through `agent_mounts` and `[[mount_roots]]`); the
//! HTTP server runs on the host's loopback and its token, held in the
//! daemon's environment, never reaches the sandbox.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::chat::{self, chat_turn};
use ironclaw_agent::mock::{MockLlm, MockReply};
use serde_json::{json, Value};

const WEB_TOKEN: &str = "mcp-web-token-held-on-host-8e21";

fn server_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/mcp")
}

/// The host's site-packages holding `mcp` (pure Python, plus pydantic-core
/// built for CPython 3.11, which the Debian image's python3 is).
fn site_packages() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import mcp, os, sys; assert sys.version_info[:2] == (3, 11), sys.version; \
             print(os.path.dirname(os.path.dirname(mcp.__file__)))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the host needs python3.11 with the mcp package (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start() -> HttpServer {
        let mut child = Command::new("python3")
            .arg(server_dir().join("server.py"))
            .arg("http")
            .env("MCP_TEST_TOKEN", WEB_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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

/// (name, output, is_error) of each tool call of a turn's events.
fn tool_ends(events: &[Value]) -> Vec<(String, String, bool)> {
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "tool_start")
        .collect();
    let ends: Vec<&Value> = events.iter().filter(|e| e["type"] == "tool_end").collect();
    starts
        .iter()
        .zip(ends)
        .map(|(s, e)| {
            (
                s["name"].as_str().unwrap().to_string(),
                e["output"].as_str().unwrap().to_string(),
                e["is_error"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_server_runs_in_the_sandbox_and_http_server_keeps_its_token_on_the_host() {
    let web = HttpServer::start();
    let site = site_packages();
    let dir = server_dir().canonicalize().unwrap();
    assert!(
        !std::path::Path::new("/etc/ironclaw-box").exists(),
        "the host must not have the sandbox's marker file"
    );
    let mock = MockLlm::start([
        MockReply::tool("bash", json!({"command": "touch /etc/ironclaw-box; cat /proc/sys/kernel/hostname"})),
        MockReply::tool("mcp_tools", json!({})),
        MockReply::tool("mcp_tools", json!({"server": "py"})),
        MockReply::tool("mcp__py__where", json!({})),
        MockReply::tool(
            "mcp_call",
            json!({"server": "py", "tool": "add", "arguments": {"a": 20, "b": 22}}),
        ),
        MockReply::tool("mcp_call", json!({"server": "web", "tool": "add", "arguments": {"a": 1, "b": 1}})),
        MockReply::tool("mcp_call", json!({"server": "broken", "tool": "x"})),
        // Nothing in the sandbox holds the HTTP server's token.
        MockReply::tool(
            "bash",
            json!({"command": "env; cat /proc/1/environ; grep -rs mcp-web-token /etc /root /tmp; echo end"}),
        ),
        MockReply::text("done"),
        // Second turn: the same connection is reused.
        MockReply::tool("mcp__py__where", json!({})),
        MockReply::text("again"),
    ])
    .await;
    let config = format!(
        r#"agent_mounts = [{{ host = "{site}", guest = "/opt/pylib" }}, {{ host = "{dir}", guest = "/opt/mcptest" }}]

[[mount_roots]]
path = "{site}"

[[mount_roots]]
path = "{dir}"

[[agents]]
name = "ironclaw"

[[agents.mcp]]
name = "py"
command = "python3"
args = ["/opt/mcptest/server.py", "stdio"]
env = {{ PYTHONPATH = "/opt/pylib" }}

[[agents.mcp]]
name = "web"
url = "http://127.0.0.1:{port}/mcp"
bearer_env = "MCP_WEB_TOKEN"

[[agents.mcp]]
name = "broken"
command = "python3"
args = ["-c", "import sys; sys.stderr.write('boom: no config\\n'); sys.exit(4)"]
"#,
        dir = dir.display(),
        port = web.port,
    );
    let base = mock.openai_base();
    let d = common::Daemon::start_env(
        &config,
        &[
            ("IRONCLAW_PROVIDER", "openai"),
            ("IRONCLAW_BASE_URL", &base),
            ("IRONCLAW_API_KEY", chat::MOCK_KEY),
            ("IRONCLAW_MODEL", "mock-model"),
            ("MCP_WEB_TOKEN", WEB_TOKEN),
        ],
    )
    .await;
    // The test daemon's default image is "mini": here it is Debian, with
    // python3.11 for the server.
    d.build_image("mini", "debian").await;

    let (_, events) = chat_turn(&d, &d.token, "use your MCP servers").await;
    let ends = tool_ends(&events);
    assert_eq!(ends.len(), 8, "{events:?}");
    let sandbox_host = ends[0].1.trim().to_string();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(!ends[0].2, "{:?}", ends[0]);
    assert!(
        ends[1].1.contains("- py (runs in your machine)") && ends[1].1.contains("- web (remote)"),
        "{:?}",
        ends[1]
    );
    assert!(ends[2].1.contains("## add (mcp__py__add)"), "{:?}", ends[2]);
    // The stdio server ran inside the sandbox: its hostname, its files.
    let whr = &ends[3].1;
    assert!(!ends[3].2, "{whr}");
    assert!(whr.contains("marker=True"), "{whr}");
    assert!(whr.contains(&format!("host={sandbox_host} ")), "{whr}");
    assert_ne!(sandbox_host, host_name.trim());
    assert_eq!((ends[4].1.as_str(), ends[4].2), ("42", false));
    assert_eq!(
        (ends[5].1.as_str(), ends[5].2),
        ("2", false),
        "{:?}",
        ends[5]
    );
    assert!(
        ends[6].2
            && ends[6].1.contains("\"broken\" failed to start")
            && ends[6].1.contains("boom: no config")
            && ends[6].1.contains("code 4"),
        "{:?}",
        ends[6]
    );
    assert!(ends[7].1.contains("end"), "{:?}", ends[7]);
    assert!(
        !ends[7].1.contains(WEB_TOKEN),
        "the token reached the sandbox"
    );
    for r in mock.requests() {
        assert!(!r.raw.contains(WEB_TOKEN), "the token reached the model");
    }

    let (_, events) = chat_turn(&d, &d.token, "again").await;
    let again = tool_ends(&events);
    let pid = |s: &str| {
        s.split("pid=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        pid(&again[0].1),
        pid(whr),
        "the connection is reused across turns"
    );
}
