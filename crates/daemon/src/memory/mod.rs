//! Agent memory: each user's memory files (in their agent sandbox) indexed
//! on the host for hybrid search.
//!
//! ```toml
//! [memory]
//! embedder = "local"        # "local" (all-MiniLM-L6-v2 in the daemon), "openai" or "none"
//! # weights_dir = "/var/lib/ironclaw/models/all-minilm-l6-v2"   # default: DATA_DIR/models/all-minilm-l6-v2
//! # base_url = "http://127.0.0.1:11434/v1"  # "openai": any OpenAI-compatible /v1/embeddings
//! # model = "nomic-embed-text"
//! # api_key_env = "OPENAI_API_KEY"          # read from the environment or the secrets file
//! vector_weight = 0.7
//! text_weight = 0.3
//! paths = ["/root/notes"]   # extra files or directories (their *.md files)
//! ```
//!
//! The index is one SQLite file, `DATA_DIR/memory.sqlite`, separate from
//! the store: it is derived data (rebuilt from the files at any time by a
//! reindex), its vectors are bulky, and embedding a big reindex must not
//! hold the store's writer. Every row carries its owner and every query
//! names one, so users never see each other's chunks; removing a user
//! forgets theirs.
//!
//! Freshness: a write through the agent's file tools reindexes that file
//! at once ([`Memory::file_written`]); before every search the sandbox's
//! memory files are stat'ed and the changed ones (by size and mtime;
//! content hash decides) reindexed, which catches edits made with bash;
//! `reindex` rereads everything.

pub mod agent;
pub mod files;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ironclaw_memory::index::{IndexError, MAX_QUERY_BYTES};
use ironclaw_memory::{Embedder, Index, LocalEmbedder, OpenAiEmbedder, SearchMode, Weights};
use ironclaw_sandbox::AgentClient;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use files::{MemoryPaths, Sig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    #[default]
    Local,
    Openai,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    pub embedder: EmbedderKind,
    /// The local model's files (config.json, tokenizer.json,
    /// model.safetensors); default `DATA_DIR/models/all-minilm-l6-v2`,
    /// where scripts/up.sh has scripts/fetch-minilm.sh put them.
    pub weights_dir: Option<PathBuf>,
    /// `openai`: the API root, e.g. `https://api.openai.com/v1`.
    pub base_url: Option<String>,
    /// `openai`: the embedding model.
    pub model: Option<String>,
    /// `openai`: the environment variable (or secrets file key) holding
    /// the API key; none sends no key (a local Ollama).
    pub api_key_env: Option<String>,
    pub vector_weight: f32,
    pub text_weight: f32,
    /// Extra memory paths in the sandbox: files, or directories whose
    /// `*.md` files count.
    pub paths: Vec<String>,
    /// Files larger than this are indexed up to it.
    pub max_file_bytes: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        let w = Weights::default();
        MemoryConfig {
            embedder: EmbedderKind::Local,
            weights_dir: None,
            base_url: None,
            model: None,
            api_key_env: None,
            vector_weight: w.vector,
            text_weight: w.text,
            paths: Vec::new(),
            max_file_bytes: 1 << 20,
        }
    }
}

impl MemoryConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        for p in &self.paths {
            files::check_extra(p).map_err(|e| anyhow::anyhow!(e))?;
        }
        let ok = |w: f32| w.is_finite() && w >= 0.0;
        if !ok(self.vector_weight) || !ok(self.text_weight) {
            anyhow::bail!("[memory] vector_weight and text_weight must be finite and >= 0");
        }
        if self.vector_weight + self.text_weight <= 0.0 {
            anyhow::bail!("[memory] vector_weight + text_weight must be above 0");
        }
        if self.embedder == EmbedderKind::Openai
            && (self.base_url.is_none() || self.model.is_none())
        {
            anyhow::bail!("[memory] embedder = \"openai\" needs base_url and model");
        }
        if self.max_file_bytes == 0 {
            anyhow::bail!("[memory] max_file_bytes must be at least 1");
        }
        Ok(())
    }
}

/// How the embedder is had: loaded on first use (the local model takes a
/// second or two and ~90 MB), then kept.
enum Source {
    None,
    /// The weights' directory, and whether the config named it.
    Local(PathBuf, bool),
    Ready(Arc<dyn Embedder>),
    Broken(String),
}

/// What `memory status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryStatus {
    pub user: String,
    /// The embedder's id when one works.
    pub embedder: Option<String>,
    /// `hybrid` with an embedder, `text` without.
    pub mode: SearchMode,
    /// Why searches are text only, when they are.
    pub fallback: Option<String>,
    pub files: usize,
    pub chunks: usize,
    pub with_vectors: usize,
    pub paths: Vec<String>,
    pub weights: Weights,
}

/// What a reindex or refresh did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReindexReport {
    pub user: String,
    /// Memory files found in the sandbox.
    pub files: usize,
    /// Files read and (re)indexed because they changed.
    pub indexed: usize,
    /// Files read but as indexed before (same content hash).
    pub unchanged: usize,
    /// Files skipped by their size and mtime (not read).
    pub skipped: usize,
    /// Files gone from the sandbox, dropped from the index.
    pub removed: usize,
    /// Chunks whose vector was computed.
    pub embedded: usize,
    /// Files cut at max_file_bytes, unreadable or not text.
    pub problems: Vec<String>,
    /// Why there was nothing to look at (no agent sandbox yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchView {
    pub user: String,
    #[serde(flatten)]
    pub result: ironclaw_memory::SearchResult,
}

pub struct Memory {
    index: Index,
    source: tokio::sync::Mutex<Source>,
    weights: Weights,
    pub paths: MemoryPaths,
    pub max_file_bytes: usize,
    /// Per user, per path: the signature when last read. Only a cache: a
    /// daemon without it rereads and the content hash decides.
    seen: Mutex<HashMap<String, HashMap<String, Sig>>>,
    /// Per user: one (re)index at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Memory {
    pub fn open(
        cfg: &MemoryConfig,
        data_dir: &Path,
        secrets: &ironclaw_agent::Secrets,
    ) -> anyhow::Result<Arc<Memory>> {
        cfg.check()?;
        let index = Index::open(&data_dir.join("memory.sqlite"))
            .map_err(|e| anyhow::anyhow!("opening the memory index: {e}"))?;
        let source = match cfg.embedder {
            EmbedderKind::None => Source::None,
            EmbedderKind::Local => Source::Local(
                cfg.weights_dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("models/all-minilm-l6-v2")),
                cfg.weights_dir.is_some(),
            ),
            EmbedderKind::Openai => {
                let key = match &cfg.api_key_env {
                    Some(var) => match secrets.get(var) {
                        Some(k) => Some(k),
                        None => {
                            tracing::warn!(
                                "[memory] api_key_env {var} is not set: text search only"
                            );
                            return Ok(Self::with(cfg, index, Source::Broken(format!(
                                "embeddings API key {var} is not set in the daemon's environment or secrets file"
                            ))));
                        }
                    },
                    None => None,
                };
                Source::Ready(Arc::new(OpenAiEmbedder::new(
                    cfg.base_url.as_deref().unwrap_or_default(),
                    cfg.model.as_deref().unwrap_or_default(),
                    key,
                )))
            }
        };
        Ok(Self::with(cfg, index, source))
    }

    fn with(cfg: &MemoryConfig, index: Index, source: Source) -> Arc<Memory> {
        Arc::new(Memory {
            index,
            source: tokio::sync::Mutex::new(source),
            weights: Weights {
                vector: cfg.vector_weight,
                text: cfg.text_weight,
            },
            paths: MemoryPaths::new(&cfg.paths),
            max_file_bytes: cfg.max_file_bytes,
            seen: Mutex::default(),
            locks: Mutex::default(),
        })
    }

    /// Load the embedder in the background, so the first search does not
    /// wait for it (a failure is logged once and shown in status).
    pub fn warm_up(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Ok(e) = me.embedder().await {
                tracing::info!(embedder = e.id(), "memory: embedder ready");
            }
        });
    }

    /// The embedder, loading it on first use; Err says why there is none.
    async fn embedder(&self) -> Result<Arc<dyn Embedder>, String> {
        let mut s = self.source.lock().await;
        if let Source::Local(dir, explicit) = &*s {
            let (dir, explicit) = (dir.clone(), *explicit);
            let loaded = tokio::task::spawn_blocking(move || LocalEmbedder::load(&dir))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            *s = match loaded {
                Ok(e) => Source::Ready(Arc::new(e)),
                Err(why) => {
                    let hint =
                        "scripts/fetch-minilm.sh DIR fetches the weights; [memory] weights_dir";
                    if explicit {
                        tracing::warn!(
                            "memory: no local embedder, text search only: {why} ({hint})"
                        );
                    } else {
                        tracing::info!(
                            "memory: no local embedder, text search only: {why} ({hint})"
                        );
                    }
                    Source::Broken(format!("local embedder unavailable ({why})"))
                }
            };
        }
        match &*s {
            Source::Ready(e) => Ok(e.clone()),
            Source::None => Err("no embedder configured ([memory] embedder = \"none\")".into()),
            Source::Broken(why) => Err(why.clone()),
            Source::Local(..) => unreachable!("loaded above"),
        }
    }

    fn lock_of(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap()
            .entry(user.to_string())
            .or_default()
            .clone()
    }

    pub async fn status(&self, user: &str) -> Result<MemoryStatus, ApiError> {
        let e = self.embedder().await;
        let id = e.as_ref().ok().map(|e| e.id().to_string());
        let st = self.index.status(user, id.as_deref()).map_err(internal)?;
        Ok(MemoryStatus {
            user: user.to_string(),
            mode: if e.is_ok() {
                SearchMode::Hybrid
            } else {
                SearchMode::Text
            },
            fallback: e.err().map(|why| format!("text search only: {why}")),
            embedder: id,
            files: st.files,
            chunks: st.chunks,
            with_vectors: st.with_vectors,
            paths: self.paths.roots().to_vec(),
            weights: self.weights,
        })
    }

    /// Bring `user`'s index up to date with their sandbox behind `agent`:
    /// files whose signature changed are read (all of them when `force`),
    /// files gone are dropped.
    pub async fn refresh(
        &self,
        user: &str,
        agent: &AgentClient,
        force: bool,
    ) -> Result<ReindexReport, ApiError> {
        let lock = self.lock_of(user);
        let _g = lock.lock().await;
        let scan_started = crate::tasks::unix_now();
        let found = self.paths.scan(agent).await?;
        let mut r = ReindexReport {
            user: user.to_string(),
            files: found.len(),
            ..Default::default()
        };
        let known = if force {
            HashMap::new()
        } else {
            self.seen
                .lock()
                .unwrap()
                .get(user)
                .cloned()
                .unwrap_or_default()
        };
        let mut seen = HashMap::new();
        let mut embedder = None;
        for (path, sig) in &found {
            if known.get(path) == Some(sig) {
                r.skipped += 1;
                seen.insert(path.clone(), *sig);
                continue;
            }
            if embedder.is_none() {
                embedder = Some(self.embedder().await.ok());
            }
            let e = embedder.clone().flatten();
            match self
                .index_one(user, agent, path, e.as_deref(), &mut r)
                .await
            {
                // A file modified within the second of the scan may change
                // again unseen by its mtime: read it next time too.
                Ok(()) if sig.mtime < scan_started - 1 => {
                    seen.insert(path.clone(), *sig);
                }
                Ok(()) => {}
                Err(why) => r.problems.push(format!("{path}: {why}")),
            }
        }
        let present: Vec<String> = found.into_iter().map(|(p, _)| p).collect();
        r.removed = self.index.retain_files(user, &present).map_err(internal)?;
        self.seen.lock().unwrap().insert(user.to_string(), seen);
        Ok(r)
    }

    async fn index_one(
        &self,
        user: &str,
        agent: &AgentClient,
        path: &str,
        embedder: Option<&dyn Embedder>,
        r: &mut ReindexReport,
    ) -> Result<(), String> {
        let got = agent
            .read_file(path, self.max_file_bytes)
            .await
            .map_err(|e| e.to_string())?;
        if got.data[..got.data.len().min(8192)].contains(&0) {
            return Err("not text".into());
        }
        let text = String::from_utf8_lossy(&got.data);
        if got.truncated {
            r.problems.push(format!(
                "{path}: larger than max_file_bytes ({}); indexed up to there",
                self.max_file_bytes
            ));
        }
        let stats = match self.index.index_file(user, path, &text, embedder).await {
            Ok(s) => s,
            // The embedder failing must not cost the text index: index
            // without vectors (a later reindex adds them).
            Err(IndexError::Embed(e)) => {
                tracing::warn!("memory: embedding {path}: {e}; indexed for text search only");
                r.problems
                    .push(format!("{path}: embedder failed ({e}); text only"));
                self.index
                    .index_file(user, path, &text, None)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Err(e) => return Err(e.to_string()),
        };
        if stats.unchanged {
            r.unchanged += 1;
        } else {
            r.indexed += 1;
        }
        r.embedded += stats.embedded;
        Ok(())
    }

    /// A tool wrote `path` in `user`'s sandbox: reindex it now if it is a
    /// memory file (failures are logged; the next search retries).
    pub async fn file_written(&self, user: &str, agent: &AgentClient, path: &str) {
        if !self.paths.contains(path) {
            return;
        }
        // Reread it whatever its signature says.
        if let Some(m) = self.seen.lock().unwrap().get_mut(user) {
            m.remove(path);
        }
        if let Err(e) = self.refresh(user, agent, false).await {
            tracing::warn!(user, path, "memory: reindexing after a write: {e}");
        }
    }

    /// `query` as a search takes it, or why not.
    pub fn search_check(&self, query: &str) -> Result<(), ApiError> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(ApiError::BadRequest(format!(
                "the query is {} bytes; at most {MAX_QUERY_BYTES}",
                query.len()
            )));
        }
        if query.trim().is_empty() {
            return Err(ApiError::BadRequest("the query is empty".into()));
        }
        Ok(())
    }

    /// Search `user`'s memory as indexed (refresh first for fresh results).
    pub async fn search(
        &self,
        user: &str,
        query: &str,
        k: usize,
    ) -> Result<ironclaw_memory::SearchResult, ApiError> {
        self.search_check(query)?;
        let e = self.embedder().await;
        let mut r = self
            .index
            .search(
                user,
                query,
                k,
                SearchMode::Hybrid,
                self.weights,
                e.as_ref().ok().map(|e| &**e),
            )
            .await
            .map_err(|e| match e {
                IndexError::QueryTooLong(_) | IndexError::EmptyQuery => {
                    ApiError::BadRequest(e.to_string())
                }
                other => internal(other),
            })?;
        if let (Err(why), Some(_)) = (&e, &r.fallback) {
            r.fallback = Some(format!("text search only: {why}"));
        }
        Ok(r)
    }

    /// Everything of `user`'s (the user was removed).
    pub fn forget(&self, user: &str) {
        if let Err(e) = self.index.forget_owner(user) {
            tracing::warn!(user, "memory: forgetting a removed user's index: {e}");
        }
        self.seen.lock().unwrap().remove(user);
    }
}

fn internal(e: IndexError) -> ApiError {
    ApiError::Internal(e.to_string())
}
