//! Agent memory: status, search, reindex.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Hybrid,
    Text,
    Vector,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Text => "text",
            SearchMode::Vector => "vector",
        }
    }
}

/// `GET /v1/memory/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemoryStatus {
    pub user: String,
    /// The embedder's id when one works.
    #[serde(default)]
    pub embedder: Option<String>,
    /// hybrid with an embedder, text without.
    pub mode: SearchMode,
    /// Why searches are text only, when they are.
    #[serde(default)]
    pub fallback: Option<String>,
    pub files: u64,
    pub chunks: u64,
    pub with_vectors: u64,
    pub paths: Vec<String>,
    pub weights: MemoryWeights,
}

/// The hybrid score: `vector * cosine + text * normalised BM25`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MemoryWeights {
    pub vector: f32,
    pub text: f32,
}

/// `POST /v1/memory/search`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySearchRequest {
    /// At most 4096 bytes, not only spaces.
    #[schema(min_length = 1, max_length = 4096, pattern = "\\S")]
    pub query: String,
    /// 1 to 50 (a whole number; `4.0` is 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 50)]
    pub max_results: Option<serde_json::Number>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemoryHit {
    pub path: String,
    pub start_line: u64,
    pub end_line: u64,
    pub snippet: String,
    pub score: f32,
}

/// What `POST /v1/memory/search` answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemorySearch {
    pub user: String,
    pub mode: SearchMode,
    /// Why the ranking is not what was asked for, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub hits: Vec<MemoryHit>,
}

/// What `POST /v1/memory/reindex` did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct MemoryReindex {
    pub user: String,
    /// Memory files found in the sandbox.
    pub files: u64,
    /// Files read and (re)indexed because they changed.
    pub indexed: u64,
    /// Files read but as indexed before.
    pub unchanged: u64,
    /// Files skipped by their size and mtime.
    pub skipped: u64,
    /// Files gone from the sandbox, dropped from the index.
    pub removed: u64,
    /// Chunks whose vector was computed.
    pub embedded: u64,
    /// Files cut at max_file_bytes, unreadable or not text.
    pub problems: Vec<String>,
    /// Why there was nothing to look at (no agent sandbox yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `?user=` (or `?owner=`) of the memory routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemoryUserQuery {
    /// Admin only: the user whose memory this is (default: the caller's
    /// own). Another user's is a 404 for non-admins.
    pub user: Option<String>,
}
