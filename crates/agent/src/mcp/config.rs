//! An agent's MCP servers as the config file declares them
//! (`[[agents.mcp]]`), checked once at start-up, and the names their tools
//! get in front of the model.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

/// One MCP server of an agent: either a command run in the user's sandbox
/// (stdio) or a URL reached from the host (streamable HTTP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Letters, digits and `-`, up to 32: it becomes part of tool names.
    pub name: String,
    /// stdio: the program, run inside the sandbox.
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: environment of the process, in the sandbox. Plain values
    /// only: secrets go to HTTP servers, which the host reaches.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// stdio: working directory in the sandbox.
    pub cwd: Option<String>,
    /// HTTP: the server's streamable-HTTP endpoint.
    pub url: Option<String>,
    /// HTTP: a host environment variable holding a bearer token.
    pub bearer_env: Option<String>,
    /// HTTP: header name -> host environment variable holding its value.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
}

/// How a server is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Stdio,
    Http,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum McpConfigError {
    #[error("MCP server name {0:?} is invalid: use 1-32 letters, digits or '-'")]
    BadName(String),
    #[error("MCP server {0:?} is declared twice")]
    Duplicate(String),
    #[error("MCP server {0:?} needs either `command` (stdio, run in the sandbox) or `url` (HTTP, from the host)")]
    NoTransport(String),
    #[error("MCP server {0:?} has both `command` and `url`; pick one")]
    BothTransports(String),
    #[error("MCP server {name:?}: {field} only applies to {applies}")]
    Misplaced {
        name: String,
        field: &'static str,
        applies: &'static str,
    },
    #[error("MCP server {name:?}: url {url:?} is not an http:// or https:// URL")]
    BadUrl { name: String, url: String },
    #[error("MCP server {name:?}: {what} {value:?} is invalid")]
    BadValue {
        name: String,
        what: &'static str,
        value: String,
    },
}

impl McpServerConfig {
    pub fn transport(&self) -> Transport {
        if self.command.is_some() {
            Transport::Stdio
        } else {
            Transport::Http
        }
    }

    /// Check one server; see [`validate_all`] for a list.
    pub fn validate(&self) -> Result<(), McpConfigError> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 32
            || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(McpConfigError::BadName(n.clone()));
        }
        let misplaced = |field, applies| McpConfigError::Misplaced {
            name: n.clone(),
            field,
            applies,
        };
        match (&self.command, &self.url) {
            (None, None) => return Err(McpConfigError::NoTransport(n.clone())),
            (Some(_), Some(_)) => return Err(McpConfigError::BothTransports(n.clone())),
            (Some(cmd), None) => {
                if cmd.is_empty() || cmd.contains('\0') {
                    return Err(McpConfigError::BadValue {
                        name: n.clone(),
                        what: "command",
                        value: cmd.clone(),
                    });
                }
                if self.bearer_env.is_some() {
                    return Err(misplaced("bearer_env", "HTTP servers (`url`)"));
                }
                if !self.headers_env.is_empty() {
                    return Err(misplaced("headers_env", "HTTP servers (`url`)"));
                }
                for k in self.env.keys() {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(McpConfigError::BadValue {
                            name: n.clone(),
                            what: "env name",
                            value: k.clone(),
                        });
                    }
                }
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.parse::<reqwest::Url>().is_err()
                {
                    return Err(McpConfigError::BadUrl {
                        name: n.clone(),
                        url: url.clone(),
                    });
                }
                if !self.args.is_empty() {
                    return Err(misplaced("args", "stdio servers (`command`)"));
                }
                if !self.env.is_empty() {
                    return Err(misplaced("env", "stdio servers (`command`)"));
                }
                if self.cwd.is_some() {
                    return Err(misplaced("cwd", "stdio servers (`command`)"));
                }
                for h in self.headers_env.keys() {
                    if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        return Err(McpConfigError::BadValue {
                            name: n.clone(),
                            what: "header name",
                            value: h.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Check an agent's servers: each valid, names unique.
pub fn validate_all(servers: &[McpServerConfig]) -> Result<(), McpConfigError> {
    let mut seen = HashSet::new();
    for s in servers {
        s.validate()?;
        if !seen.insert(s.name.as_str()) {
            return Err(McpConfigError::Duplicate(s.name.clone()));
        }
    }
    Ok(())
}

/// Prefix of every MCP tool name the model sees.
pub const PREFIX: &str = "mcp__";

/// The name a server's tool has for the model: `mcp__SERVER__TOOL`, when
/// it fits what providers accept (OpenAI: `[a-zA-Z0-9_-]{1,64}`); None
/// otherwise (the tool is still callable through `mcp_call`).
pub fn prefixed(server: &str, tool: &str) -> Option<String> {
    let name = format!("{PREFIX}{server}__{tool}");
    let ok = name.len() <= 64
        && !tool.is_empty()
        && tool
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(name)
}

/// The (server, tool) a prefixed name stands for. Server names have no
/// `_`, so the first `__` after the prefix ends the server's.
pub fn split_prefixed(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (server, tool) = rest.split_once("__")?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(name: &str) -> McpServerConfig {
        McpServerConfig {
            name: name.into(),
            command: Some("python3".into()),
            ..Default::default()
        }
    }

    #[test]
    fn names_round_trip_and_fit_provider_rules() {
        let n = prefixed("files", "read_text").unwrap();
        assert_eq!(n, "mcp__files__read_text");
        assert_eq!(split_prefixed(&n), Some(("files", "read_text")));
        assert_eq!(
            split_prefixed("mcp__a-b__x__y"),
            Some(("a-b", "x__y")),
            "a tool name may itself hold __"
        );
        assert_eq!(split_prefixed("mcp__x"), None);
        assert_eq!(split_prefixed("bash"), None);
        assert_eq!(prefixed("s", "has space"), None);
        assert_eq!(prefixed("s", "dotted.name"), None);
        assert_eq!(prefixed("s", &"x".repeat(60)), None, "over 64 characters");
        assert_eq!(prefixed("s", ""), None);
        let long = prefixed(&"s".repeat(32), &"t".repeat(25)).unwrap();
        assert_eq!(long.len(), 64);
    }

    #[test]
    fn bad_configs_get_clear_errors() {
        assert!(validate_all(&[stdio("ok-1")]).is_ok());
        let e = |s: McpServerConfig| validate_all(&[s]).unwrap_err().to_string();
        assert!(
            e(stdio("bad_name")).contains("use 1-32 letters"),
            "underscore"
        );
        assert!(e(stdio("")).contains("invalid"));
        assert!(e(stdio(&"a".repeat(33))).contains("invalid"));
        let none = McpServerConfig {
            name: "x".into(),
            ..Default::default()
        };
        assert!(e(none).contains("needs either `command`"));
        let both = McpServerConfig {
            url: Some("http://127.0.0.1:1/mcp".into()),
            ..stdio("x")
        };
        assert!(e(both).contains("both `command` and `url`"));
        let bearer_on_stdio = McpServerConfig {
            bearer_env: Some("TOKEN".into()),
            ..stdio("x")
        };
        assert!(e(bearer_on_stdio).contains("bearer_env only applies to HTTP"));
        let http = |url: &str| McpServerConfig {
            name: "h".into(),
            url: Some(url.into()),
            ..Default::default()
        };
        assert!(validate_all(&[http("https://example.com/mcp")]).is_ok());
        assert!(e(http("ftp://x/")).contains("not an http://"));
        assert!(e(http("http://")).contains("not an http://"));
        let args_on_http = McpServerConfig {
            args: vec!["-v".into()],
            ..http("http://127.0.0.1:9/mcp")
        };
        assert!(e(args_on_http).contains("args only applies to stdio"));
        let bad_header = McpServerConfig {
            headers_env: [("bad header".to_string(), "V".to_string())].into(),
            ..http("http://127.0.0.1:9/mcp")
        };
        assert!(e(bad_header).contains("header name"));
        let dup = validate_all(&[stdio("a"), stdio("a")]).unwrap_err();
        assert_eq!(dup, McpConfigError::Duplicate("a".into()));
    }

    #[test]
    fn parses_from_toml() {
        #[derive(Debug, Deserialize)]
        struct A {
            mcp: Vec<McpServerConfig>,
        }
        let a: A = toml::from_str(
            "[[mcp]]\nname = \"py\"\ncommand = \"python3\"\nargs = [\"/srv/s.py\"]\nenv = { A = \"1\" }\n\
             [[mcp]]\nname = \"web\"\nurl = \"http://127.0.0.1:9/mcp\"\nbearer_env = \"WEB_TOKEN\"\n",
        )
        .unwrap();
        assert_eq!(a.mcp[0].transport(), Transport::Stdio);
        assert_eq!(a.mcp[1].transport(), Transport::Http);
        validate_all(&a.mcp).unwrap();
        let unknown = toml::from_str::<A>("[[mcp]]\nname = \"x\"\ncomand = \"y\"\n");
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }
}
