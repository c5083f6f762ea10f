//! Providers and models from the daemon's TOML file (or, for a quick start,
//! from four environment variables), API keys from the environment or a
//! secrets file, and the [`Registry`] that turns a model name into a
//! provider to call.
//!
//! ```toml
//! default_model = "gpt-4o-mini"
//!
//! [[providers]]
//! name = "openai"
//! kind = "openai"                      # or "anthropic"
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"       # the variable (or secrets-file key) holding the key
//! models = [
//!   { name = "gpt-4o-mini", context_window = 128000, max_output_tokens = 4096,
//!     input_price_per_mtok = 0.15, output_price_per_mtok = 0.60,
//!     cache_read_per_mtok = 0.075 },    # optional, see ModelConfig
//! ]
//! [providers.retry]                    # optional; seconds
//! max_attempts = 4
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::provider::{anthropic::Anthropic, openai::OpenAi, Provider, RetryPolicy};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid provider configuration: {0}")]
    Toml(String),
    #[error("{0}")]
    Invalid(String),
    #[error("provider {provider:?}: {var} (its api_key_env) is not set in the environment or the secrets file")]
    MissingKey { provider: String, var: String },
    #[error("cannot read the secrets file {path}: {error}")]
    SecretsRead { path: String, error: std::io::Error },
    #[error("the secrets file {path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}")]
    SecretsPermissions { path: String, mode: u32 },
    #[error("the secrets file {path}, line {line}: expected KEY=value")]
    SecretsSyntax { path: String, line: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Chat Completions: OpenAI, OpenRouter, Ollama, vLLM, llama.cpp, ...
    Openai,
    Anthropic,
}

impl ProviderKind {
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Openai => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Used when a session names no model; else the first model declared.
    #[serde(default)]
    pub default_model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Defaults to the vendor's public endpoint.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The name of the variable holding the API key (looked up in the
    /// environment, then the secrets file). None for servers without keys
    /// (a local Ollama). Keys themselves never go in the config file.
    #[serde(default)]
    pub api_key_env: Option<String>,
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// What users and sessions call it.
    pub name: String,
    /// What the provider calls it, when different (e.g. a dated version).
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default = "default_context")]
    pub context_window: u32,
    #[serde(default = "default_output")]
    pub max_output_tokens: u32,
    #[serde(default)]
    pub input_price_per_mtok: f64,
    #[serde(default)]
    pub output_price_per_mtok: f64,
    /// Prompt tokens read from the provider's cache. Absent: the vendor's
    /// usual ratio to the input price (Anthropic 0.1x, OpenAI 0.5x).
    #[serde(default, alias = "cache_read_price_per_mtok")]
    pub cache_read_per_mtok: Option<f64>,
    /// Prompt tokens written to the cache. Absent: Anthropic's 1.25x of
    /// the input price (5-minute cache); OpenAI does not bill writes, so
    /// the input price there.
    #[serde(default, alias = "cache_write_price_per_mtok")]
    pub cache_write_per_mtok: Option<f64>,
}

fn default_context() -> u32 {
    128_000
}

fn default_output() -> u32 {
    4096
}

/// A resolved model: everything the agent loop needs to know about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub provider: String,
    pub name: String,
    /// Sent to the provider.
    pub id: String,
    pub context_window: u32,
    pub max_output_tokens: u32,
    /// US dollars per million tokens.
    pub input_price_per_mtok: f64,
    pub output_price_per_mtok: f64,
    /// Prompt-cache prices, resolved (the config's, or the vendor's usual
    /// ratio to the input price).
    #[serde(default)]
    pub cache_read_price_per_mtok: f64,
    #[serde(default)]
    pub cache_write_price_per_mtok: f64,
}

impl ProvidersConfig {
    /// Parse a TOML document with `[[providers]]` tables (and optionally
    /// `default_model`) at its top level.
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        toml::from_str(s).map_err(|e| ConfigError::Toml(e.to_string()))
    }

    /// The quick start: `IRONCLAW_PROVIDER=openai|anthropic`,
    /// `IRONCLAW_MODEL`, and optionally `IRONCLAW_BASE_URL`,
    /// `IRONCLAW_API_KEY`, `IRONCLAW_CONTEXT_WINDOW`,
    /// `IRONCLAW_MAX_OUTPUT_TOKENS`. `Ok(None)` when `IRONCLAW_PROVIDER` is
    /// unset.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any variable lookup (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let get = |k: &str| {
            var(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(kind) = get("IRONCLAW_PROVIDER") else {
            return Ok(None);
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "openai" => ProviderKind::Openai,
            "anthropic" => ProviderKind::Anthropic,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "IRONCLAW_PROVIDER={other:?}: expected openai or anthropic"
                )))
            }
        };
        let model = get("IRONCLAW_MODEL").ok_or_else(|| {
            ConfigError::Invalid("IRONCLAW_PROVIDER is set but IRONCLAW_MODEL is not".into())
        })?;
        let num = |k: &str, default: u32| -> Result<u32, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| {
                    ConfigError::Invalid(format!("{k}={v:?} is not a positive integer"))
                }),
            }
        };
        let name = match kind {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        };
        Ok(Some(ProvidersConfig {
            default_model: Some(model.clone()),
            providers: vec![ProviderConfig {
                name: name.into(),
                kind,
                base_url: get("IRONCLAW_BASE_URL"),
                api_key_env: get("IRONCLAW_API_KEY").map(|_| "IRONCLAW_API_KEY".to_string()),
                models: vec![ModelConfig {
                    name: model,
                    id: None,
                    context_window: num("IRONCLAW_CONTEXT_WINDOW", default_context())?,
                    max_output_tokens: num("IRONCLAW_MAX_OUTPUT_TOKENS", default_output())?,
                    input_price_per_mtok: 0.0,
                    output_price_per_mtok: 0.0,
                    cache_read_per_mtok: None,
                    cache_write_per_mtok: None,
                }],
                retry: RetryPolicy::default(),
            }],
        }))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for p in &self.providers {
            if p.name.trim().is_empty() {
                return Err(ConfigError::Invalid("a provider has an empty name".into()));
            }
            if !names.insert(p.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "provider {:?} is declared twice",
                    p.name
                )));
            }
            if p.models.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "provider {:?} declares no models",
                    p.name
                )));
            }
            if let Some(u) = &p.base_url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(ConfigError::Invalid(format!(
                        "provider {:?}: base_url {u:?} must start with http:// or https://",
                        p.name
                    )));
                }
            }
            for m in &p.models {
                if m.name.trim().is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "provider {:?} has a model with an empty name",
                        p.name
                    )));
                }
                if m.context_window == 0 || m.max_output_tokens == 0 {
                    return Err(ConfigError::Invalid(format!(
                        "model {:?}: context_window and max_output_tokens must be positive",
                        m.name
                    )));
                }
                let cache = [m.cache_read_per_mtok, m.cache_write_per_mtok];
                if m.input_price_per_mtok < 0.0
                    || m.output_price_per_mtok < 0.0
                    || cache.iter().flatten().any(|p| *p < 0.0)
                {
                    return Err(ConfigError::Invalid(format!(
                        "model {:?}: prices cannot be negative",
                        m.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// API keys: the process environment first, then a secrets file of
/// `KEY=value` lines that only the daemon's user may read.
#[derive(Default, Clone)]
pub struct Secrets {
    file: HashMap<String, String>,
}

// Never print values.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("keys", &self.file.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    /// Only the environment.
    pub fn env_only() -> Secrets {
        Secrets::default()
    }

    /// Load a secrets file, refusing one that group or others can read:
    /// a key anyone on the host can read is a leaked key.
    pub fn load(path: &Path) -> Result<Secrets, ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|error| ConfigError::SecretsRead {
            path: shown.clone(),
            error,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::SecretsPermissions { path: shown, mode });
        }
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::SecretsRead {
            path: shown.clone(),
            error,
        })?;
        Self::parse(&text).map_err(|line| ConfigError::SecretsSyntax { path: shown, line })
    }

    /// `KEY=value` lines; blank lines and `#` comments skipped; an optional
    /// `export ` prefix and matching quotes around the value are removed.
    /// Err(line number) on a line that is none of these.
    pub fn parse(text: &str) -> Result<Secrets, usize> {
        let mut file = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (k, v) = line.split_once('=').ok_or(i + 1)?;
            let k = k.trim();
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(i + 1);
            }
            let v = v.trim();
            let v = ['"', '\'']
                .iter()
                .find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
                .unwrap_or(v);
            file.insert(k.to_string(), v.to_string());
        }
        Ok(Secrets { file })
    }

    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.file.get(name).cloned())
    }
}

/// No such model; the message lists the ones there are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model {name:?}; available: {}", if known.is_empty() { "none (no provider configured)".to_string() } else { known.join(", ") })]
pub struct UnknownModel {
    pub name: String,
    pub known: Vec<String>,
}

struct Entry {
    config: ProviderConfig,
    provider: Arc<dyn Provider>,
}

/// The configured providers, ready to call. Build once at daemon start.
pub struct Registry {
    entries: Vec<Entry>,
    default_model: Option<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field(
                "models",
                &self.models().iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Registry {
    pub fn new(cfg: &ProvidersConfig, secrets: &Secrets) -> Result<Registry, ConfigError> {
        cfg.validate()?;
        let mut entries = Vec::new();
        for p in &cfg.providers {
            let key = match &p.api_key_env {
                None => None,
                Some(var) => Some(secrets.get(var).ok_or_else(|| ConfigError::MissingKey {
                    provider: p.name.clone(),
                    var: var.clone(),
                })?),
            };
            let base = p
                .base_url
                .clone()
                .unwrap_or_else(|| p.kind.default_base_url().to_string());
            let provider: Arc<dyn Provider> = match p.kind {
                ProviderKind::Openai => Arc::new(OpenAi::new(&p.name, base, key, p.retry.clone())),
                ProviderKind::Anthropic => {
                    Arc::new(Anthropic::new(&p.name, base, key, p.retry.clone()))
                }
            };
            entries.push(Entry {
                config: p.clone(),
                provider,
            });
        }
        let reg = Registry {
            entries,
            default_model: cfg.default_model.clone(),
        };
        if let Some(d) = &cfg.default_model {
            reg.resolve(d)
                .map_err(|e| ConfigError::Invalid(format!("default_model: {e}")))?;
        }
        Ok(reg)
    }

    /// Every model, as `/v1/models` would list them.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.entries
            .iter()
            .flat_map(|e| e.config.models.iter().map(|m| info(&e.config, m)))
            .collect()
    }

    /// The model sessions use when they name none.
    pub fn default_model(&self) -> Option<ModelInfo> {
        match &self.default_model {
            Some(d) => self.resolve(d).ok().map(|(_, m)| m),
            None => self.models().into_iter().next(),
        }
    }

    /// Find a model by its name, or by `provider/name` when two providers
    /// offer the same name. (Model names may contain slashes themselves,
    /// as OpenRouter's do, so the plain name is tried first.)
    pub fn resolve(&self, name: &str) -> Result<(Arc<dyn Provider>, ModelInfo), UnknownModel> {
        let found: Vec<_> = self
            .entries
            .iter()
            .flat_map(|e| e.config.models.iter().map(move |m| (e, m)))
            .filter(|(_, m)| m.name == name)
            .collect();
        if let [(e, m)] = found.as_slice() {
            return Ok((e.provider.clone(), info(&e.config, m)));
        }
        if found.is_empty() {
            if let Some((p, m)) = name.split_once('/') {
                if let Some(e) = self.entries.iter().find(|e| e.config.name == p) {
                    if let Some(mc) = e.config.models.iter().find(|mc| mc.name == m) {
                        return Ok((e.provider.clone(), info(&e.config, mc)));
                    }
                }
            }
        }
        let mut known: Vec<String> = Vec::new();
        for e in &self.entries {
            for m in &e.config.models {
                let ambiguous = self
                    .entries
                    .iter()
                    .filter(|o| o.config.models.iter().any(|om| om.name == m.name))
                    .count()
                    > 1;
                known.push(if ambiguous {
                    format!("{}/{}", e.config.name, m.name)
                } else {
                    m.name.clone()
                });
            }
        }
        Err(UnknownModel {
            name: name.to_string(),
            known,
        })
    }
}

fn info(p: &ProviderConfig, m: &ModelConfig) -> ModelInfo {
    ModelInfo {
        provider: p.name.clone(),
        name: m.name.clone(),
        id: m.id.clone().unwrap_or_else(|| m.name.clone()),
        context_window: m.context_window,
        max_output_tokens: m.max_output_tokens,
        input_price_per_mtok: m.input_price_per_mtok,
        output_price_per_mtok: m.output_price_per_mtok,
        cache_read_price_per_mtok: m.cache_read_per_mtok.unwrap_or(match p.kind {
            ProviderKind::Anthropic => m.input_price_per_mtok * 0.1,
            ProviderKind::Openai => m.input_price_per_mtok * 0.5,
        }),
        cache_write_price_per_mtok: m.cache_write_per_mtok.unwrap_or(match p.kind {
            ProviderKind::Anthropic => m.input_price_per_mtok * 1.25,
            ProviderKind::Openai => m.input_price_per_mtok,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
default_model = "small"

[[providers]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:11434/v1"
models = [{ name = "small", context_window = 8192 }, { name = "shared" }]

[[providers]]
name = "claude"
kind = "anthropic"
api_key_env = "IRONCLAW_TEST_NEVER_SET_KEY"
models = [{ name = "sonnet", id = "claude-sonnet-4-5", input_price_per_mtok = 3.0, output_price_per_mtok = 15.0 }, { name = "shared", input_price_per_mtok = 2.0, cache_read_per_mtok = 0.5 }]
[providers.retry]
max_attempts = 2
base_delay = 0.01
"#;

    fn secrets() -> Secrets {
        Secrets::parse("IRONCLAW_TEST_NEVER_SET_KEY=sk-test").unwrap()
    }

    #[test]
    fn parses_and_resolves() {
        let cfg = ProvidersConfig::from_toml_str(TOML).unwrap();
        assert_eq!(cfg.providers[1].retry.max_attempts, 2);
        let reg = Registry::new(&cfg, &secrets()).unwrap();
        let (p, m) = reg.resolve("sonnet").unwrap();
        assert_eq!(p.name(), "claude");
        assert_eq!(m.id, "claude-sonnet-4-5");
        assert_eq!(m.context_window, 128_000);
        // Cache prices: Anthropic's usual ratios when absent, else as set.
        assert!((m.cache_read_price_per_mtok - 0.3).abs() < 1e-9);
        assert!((m.cache_write_price_per_mtok - 3.75).abs() < 1e-9);
        let shared = reg.resolve("claude/shared").unwrap().1;
        assert_eq!(shared.cache_read_price_per_mtok, 0.5);
        assert!((shared.cache_write_price_per_mtok - 2.5).abs() < 1e-9);
        assert_eq!(reg.resolve("local/shared").unwrap().1.provider, "local");
        assert_eq!(reg.default_model().unwrap().name, "small");
        // The key is not printed by Debug.
        assert!(!format!("{p:?} {:?}", secrets()).contains("sk-test"));
    }

    #[test]
    fn unknown_model_lists_the_known_ones() {
        let cfg = ProvidersConfig::from_toml_str(TOML).unwrap();
        let reg = Registry::new(&cfg, &secrets()).unwrap();
        let e = reg.resolve("gpt-5").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown model \"gpt-5\"; available: small, local/shared, sonnet, claude/shared"
        );
        // Ambiguous plain names are refused too, with the qualified names.
        assert!(reg.resolve("shared").is_err());
        let empty = Registry::new(&ProvidersConfig::default(), &Secrets::env_only()).unwrap();
        assert!(empty.resolve("x").unwrap_err().to_string().contains("none"));
    }

    #[test]
    fn config_errors_are_clear() {
        let e = Registry::new(
            &ProvidersConfig::from_toml_str(TOML).unwrap(),
            &Secrets::env_only(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("IRONCLAW_TEST_NEVER_SET_KEY"), "{e}");
        let e = ProvidersConfig::from_toml_str("[[providers]]\nname='x'\nkind='gemini'\nmodels=[]")
            .unwrap_err();
        assert!(e.to_string().contains("gemini"), "{e}");
        let cfg =
            ProvidersConfig::from_toml_str("[[providers]]\nname='x'\nkind='openai'\nmodels=[]")
                .unwrap();
        let e = Registry::new(&cfg, &Secrets::env_only()).unwrap_err();
        assert!(e.to_string().contains("declares no models"), "{e}");
    }

    #[test]
    fn quick_start_from_env() {
        let vars: HashMap<&str, &str> = [
            ("IRONCLAW_PROVIDER", "anthropic"),
            ("IRONCLAW_MODEL", "claude-x"),
            ("IRONCLAW_API_KEY", "k"),
            ("IRONCLAW_BASE_URL", "http://127.0.0.1:9/"),
        ]
        .into();
        let cfg = ProvidersConfig::from_vars(|k| vars.get(k).map(|v| v.to_string()))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.providers[0].kind, ProviderKind::Anthropic);
        assert_eq!(
            cfg.providers[0].api_key_env.as_deref(),
            Some("IRONCLAW_API_KEY")
        );
        assert_eq!(cfg.default_model.as_deref(), Some("claude-x"));
        assert!(ProvidersConfig::from_vars(|_| None).unwrap().is_none());
        let e = ProvidersConfig::from_vars(|k| (k == "IRONCLAW_PROVIDER").then(|| "x".into()))
            .unwrap_err();
        assert!(e.to_string().contains("openai or anthropic"));
    }

    #[test]
    fn secrets_file_rules() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets");
        std::fs::write(&p, "# keys\nexport A=1\nB = \"two\"\n\nC='3'\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secrets::load(&p).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Secrets::load(&p).unwrap();
        assert_eq!(s.file.get("A").unwrap(), "1");
        assert_eq!(s.file.get("B").unwrap(), "two");
        assert_eq!(s.file.get("C").unwrap(), "3");
        assert!(!format!("{s:?}").contains("two"));
        assert_eq!(Secrets::parse("ok=1\nnot a pair\n").unwrap_err(), 2);
    }
}
