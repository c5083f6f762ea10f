//! The index in SQLite: every owner's chunks with their line ranges, an
//! FTS5 table over them (BM25), and each chunk's vector as an f32 blob
//! with the id of the model that made it. Vectors are scanned brute force:
//! at memory sizes (thousands of chunks per owner) a scan of 384-float
//! rows takes milliseconds, and needs no extension that can fail to load.
//!
//! Reindexing is incremental: an unchanged file is skipped by its hash, and
//! an unchanged chunk of a changed file keeps its vector.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::chunk::{self, ChunkConfig};
use crate::embed::{EmbedError, Embedder};

/// Longest query accepted (bytes): a search is a question, not a document.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Most results one search returns.
pub const MAX_RESULTS: usize = 50;
const SNIPPET_CHARS: usize = 700;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("memory index: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Embed(#[from] EmbedError),
    #[error("query is {0} bytes; at most {MAX_QUERY_BYTES}")]
    QueryTooLong(usize),
    #[error("query is empty")]
    EmptyQuery,
}

/// How a search ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Hybrid,
    Text,
    Vector,
}

/// The hybrid score: `vector * cosine + text * normalised BM25`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Weights {
    pub vector: f32,
    pub text: f32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            vector: 0.7,
            text: 0.3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub path: String,
    pub start_line: usize,
    pub end_line: usize,
    pub snippet: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SearchResult {
    /// The ranking used: what was asked for, or text when no vectors
    /// could be had.
    pub mode: SearchMode,
    /// Why the ranking is not what was asked for, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub hits: Vec<Hit>,
}

/// What indexing one file did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileStats {
    pub chunks: usize,
    /// Chunks whose vector was computed now.
    pub embedded: usize,
    /// The file was as indexed before: nothing done.
    pub unchanged: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub files: usize,
    pub chunks: usize,
    /// Chunks with a vector of the given model.
    pub with_vectors: usize,
}

const SCHEMA: &[&str] = &[
    // 1
    "CREATE TABLE files (
        owner      TEXT NOT NULL,
        path       TEXT NOT NULL,
        hash       TEXT NOT NULL,
        indexed_at TEXT NOT NULL,
        PRIMARY KEY (owner, path)
     );
     CREATE TABLE chunks (
        id         INTEGER PRIMARY KEY,
        owner      TEXT NOT NULL,
        path       TEXT NOT NULL,
        start_line INTEGER NOT NULL,
        end_line   INTEGER NOT NULL,
        hash       TEXT NOT NULL,
        text       TEXT NOT NULL,
        indexed    TEXT NOT NULL,
        model      TEXT,
        vector     BLOB
     );
     CREATE INDEX chunks_by_file ON chunks (owner, path);
     CREATE VIRTUAL TABLE chunks_fts USING fts5(
        indexed, content = 'chunks', content_rowid = 'id', tokenize = 'porter unicode61'
     );
     CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts (rowid, indexed) VALUES (new.id, new.indexed);
     END;
     CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, indexed) VALUES ('delete', old.id, old.indexed);
     END;",
];

pub struct Index {
    conn: Mutex<Connection>,
    chunking: ChunkConfig,
}

impl Index {
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        Self::with(Connection::open(path)?)
    }

    pub fn in_memory() -> Result<Index, IndexError> {
        Self::with(Connection::open_in_memory()?)
    }

    fn with(conn: Connection) -> Result<Index, IndexError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The vector scan reads every blob of an owner's chunks on each
        // search: map the file and keep its pages cached rather than copy
        // them in from the OS through SQLite's 2 MiB default page cache
        // (scripts/bench.sh --memory: p50 of a vector search over 10,000
        // chunks went from ~37 ms to the figure in README.md).
        conn.pragma_update(None, "mmap_size", 256i64 << 20)?;
        conn.pragma_update(None, "cache_size", -(64i64 << 10))?;
        let done: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in SCHEMA.iter().enumerate().skip(done) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(Index {
            conn: Mutex::new(conn),
            chunking: ChunkConfig::default(),
        })
    }

    pub fn with_chunking(mut self, c: ChunkConfig) -> Self {
        self.chunking = c;
        self
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Index `content` as `owner`'s file `path`, embedding new chunks with
    /// `embedder` when there is one. An embedder's failure fails the
    /// call and changes nothing.
    pub async fn index_file(
        &self,
        owner: &str,
        path: &str,
        content: &str,
        embedder: Option<&dyn Embedder>,
    ) -> Result<FileStats, IndexError> {
        let file_hash = chunk::hash(content);
        let model = embedder.map(|e| e.id().to_string());
        let (same_file, known, total) = {
            let c = self.conn();
            let same = c
                .query_row(
                    "SELECT hash FROM files WHERE owner = ?1 AND path = ?2",
                    params![owner, path],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
                .is_some_and(|h| h == file_hash);
            // Vectors already made for this model, by chunk hash.
            let mut known: HashMap<String, Vec<u8>> = HashMap::new();
            let mut missing = 0usize;
            let mut total = 0usize;
            let mut st =
                c.prepare("SELECT hash, model, vector FROM chunks WHERE owner = ?1 AND path = ?2")?;
            let rows = st.query_map(params![owner, path], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                ))
            })?;
            for row in rows {
                let (h, m, v) = row?;
                total += 1;
                match (m, v) {
                    (Some(m), Some(v)) if Some(&m) == model.as_ref() => {
                        known.insert(h, v);
                    }
                    _ => missing += 1,
                }
            }
            (same && (model.is_none() || missing == 0), known, total)
        };
        if same_file {
            return Ok(FileStats {
                chunks: total,
                embedded: 0,
                unchanged: true,
            });
        }
        let chunks = chunk::chunk_markdown(content, self.chunking);
        let todo: Vec<String> = match embedder {
            Some(_) => chunks
                .iter()
                .filter(|c| !known.contains_key(&c.hash))
                .map(|c| c.indexed.clone())
                .collect(),
            None => Vec::new(),
        };
        let fresh = match embedder {
            Some(e) if !todo.is_empty() => e.embed(&todo).await?,
            _ => Vec::new(),
        };
        let mut fresh = todo.into_iter().zip(fresh).collect::<HashMap<_, _>>();
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute(
            "DELETE FROM chunks WHERE owner = ?1 AND path = ?2",
            params![owner, path],
        )?;
        {
            let mut ins = tx.prepare(
                "INSERT INTO chunks (owner, path, start_line, end_line, hash, text, indexed, model, vector)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for ch in &chunks {
                let vector = known
                    .get(&ch.hash)
                    .cloned()
                    .or_else(|| fresh.remove(&ch.indexed).map(|v| to_blob(&v)));
                let m = vector.as_ref().and(model.as_deref());
                ins.execute(params![
                    owner,
                    path,
                    ch.start_line as i64,
                    ch.end_line as i64,
                    ch.hash,
                    ch.text,
                    ch.indexed,
                    m,
                    vector
                ])?;
            }
        }
        tx.execute(
            "INSERT INTO files (owner, path, hash, indexed_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (owner, path) DO UPDATE SET hash = excluded.hash, indexed_at = excluded.indexed_at",
            params![owner, path, file_hash, now()],
        )?;
        tx.commit()?;
        let embedded = chunks.len()
            - chunks
                .iter()
                .filter(|c| known.contains_key(&c.hash))
                .count();
        Ok(FileStats {
            chunks: chunks.len(),
            embedded: if embedder.is_some() { embedded } else { 0 },
            unchanged: false,
        })
    }

    /// Forget `owner`'s files that are not in `present` (deleted since).
    pub fn retain_files(&self, owner: &str, present: &[String]) -> Result<usize, IndexError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let indexed: Vec<String> = {
            let mut st = tx.prepare("SELECT path FROM files WHERE owner = ?1")?;
            let rows = st.query_map([owner], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut gone = 0;
        for p in indexed.iter().filter(|p| !present.contains(p)) {
            tx.execute(
                "DELETE FROM chunks WHERE owner = ?1 AND path = ?2",
                params![owner, p],
            )?;
            tx.execute(
                "DELETE FROM files WHERE owner = ?1 AND path = ?2",
                params![owner, p],
            )?;
            gone += 1;
        }
        tx.commit()?;
        Ok(gone)
    }

    /// Everything of `owner`'s (the user was removed).
    pub fn forget_owner(&self, owner: &str) -> Result<(), IndexError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        tx.execute("DELETE FROM chunks WHERE owner = ?1", [owner])?;
        tx.execute("DELETE FROM files WHERE owner = ?1", [owner])?;
        tx.commit()?;
        Ok(())
    }

    pub fn status(&self, owner: &str, model: Option<&str>) -> Result<Status, IndexError> {
        let c = self.conn();
        let files: i64 = c.query_row(
            "SELECT COUNT(*) FROM files WHERE owner = ?1",
            [owner],
            |r| r.get(0),
        )?;
        let chunks: i64 = c.query_row(
            "SELECT COUNT(*) FROM chunks WHERE owner = ?1",
            [owner],
            |r| r.get(0),
        )?;
        let with_vectors: i64 = c.query_row(
            "SELECT COUNT(*) FROM chunks WHERE owner = ?1 AND model = ?2",
            params![owner, model],
            |r| r.get(0),
        )?;
        Ok(Status {
            files: files as usize,
            chunks: chunks as usize,
            with_vectors: with_vectors as usize,
        })
    }

    /// The `k` best chunks of `owner`'s for `query`. Hybrid and vector
    /// modes need an embedder; without one (or when it fails) the search
    /// is by text and the result says so.
    pub async fn search(
        &self,
        owner: &str,
        query: &str,
        k: usize,
        mode: SearchMode,
        weights: Weights,
        embedder: Option<&dyn Embedder>,
    ) -> Result<SearchResult, IndexError> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(IndexError::QueryTooLong(query.len()));
        }
        if query.trim().is_empty() {
            return Err(IndexError::EmptyQuery);
        }
        let k = k.clamp(1, MAX_RESULTS);
        let mut fallback = None;
        let qvec = match (mode, embedder) {
            (SearchMode::Text, _) => None,
            (_, None) => {
                fallback = Some("no embedder configured or loaded: text search only".into());
                None
            }
            (_, Some(e)) => match e.embed(&[query.to_string()]).await {
                Ok(mut v) => v.pop().map(|v| (e.id().to_string(), v)),
                Err(err) => {
                    tracing::warn!("memory search: embedding the query: {err}");
                    fallback = Some(format!("embedder failed ({err}): text search only"));
                    None
                }
            },
        };
        let used = match (&qvec, mode) {
            (None, _) => SearchMode::Text,
            (Some(_), m) => m,
        };
        let pool = k * 4;
        let text = if used == SearchMode::Vector {
            Vec::new()
        } else {
            self.text_scores(owner, query, pool)?
        };
        let vector = match &qvec {
            Some((model, v)) => self.vector_scores(owner, model, v, pool)?,
            None => Vec::new(),
        };
        let mut scores: HashMap<i64, f32> = HashMap::new();
        let (wv, wt) = match used {
            SearchMode::Hybrid => (weights.vector, weights.text),
            SearchMode::Text => (0.0, 1.0),
            SearchMode::Vector => (1.0, 0.0),
        };
        for (id, s) in &text {
            *scores.entry(*id).or_default() += wt * s;
        }
        for (id, s) in &vector {
            *scores.entry(*id).or_default() += wv * s;
        }
        let mut ranked: Vec<(i64, f32)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        let c = self.conn();
        let mut st =
            c.prepare("SELECT path, start_line, end_line, text FROM chunks WHERE id = ?1")?;
        let mut hits = Vec::with_capacity(ranked.len());
        for (id, score) in ranked {
            let hit = st.query_row([id], |r| {
                Ok(Hit {
                    path: r.get(0)?,
                    start_line: r.get::<_, i64>(1)? as usize,
                    end_line: r.get::<_, i64>(2)? as usize,
                    snippet: snippet(&r.get::<_, String>(3)?),
                    score,
                })
            })?;
            hits.push(hit);
        }
        Ok(SearchResult {
            mode: used,
            fallback,
            hits,
        })
    }

    /// BM25 over FTS5, best first, normalised to (0, 1] by the best.
    fn text_scores(
        &self,
        owner: &str,
        query: &str,
        n: usize,
    ) -> Result<Vec<(i64, f32)>, IndexError> {
        let Some(expr) = fts_query(query) else {
            return Ok(Vec::new());
        };
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT c.id, bm25(chunks_fts) AS rank FROM chunks_fts
             JOIN chunks c ON c.id = chunks_fts.rowid
             WHERE chunks_fts MATCH ?1 AND c.owner = ?2
             ORDER BY rank LIMIT ?3",
        )?;
        let rows: Vec<(i64, f64)> = st
            .query_map(params![expr, owner, n as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        // bm25() is negative, lower is better.
        let best = rows.iter().map(|(_, r)| -r).fold(0.0f64, f64::max);
        Ok(rows
            .into_iter()
            .map(|(id, r)| (id, if best > 0.0 { (-r / best) as f32 } else { 0.0 }))
            .collect())
    }

    /// Cosine similarity (vectors are unit length) of every chunk with a
    /// vector of `model`, best `n`, clamped to [0, 1].
    fn vector_scores(
        &self,
        owner: &str,
        model: &str,
        q: &[f32],
        n: usize,
    ) -> Result<Vec<(i64, f32)>, IndexError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT id, vector FROM chunks WHERE owner = ?1 AND model = ?2")?;
        let mut rows = st.query(params![owner, model])?;
        let mut all = Vec::new();
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            // A NULL or non-blob vector scores nothing.
            let score = r.get_ref(1)?.as_blob().map_or(0.0, |b| dot_blob(q, b));
            all.push((id, score.max(0.0)));
        }
        if all.len() > n {
            all.select_nth_unstable_by(n, |a, b| b.1.total_cmp(&a.1));
            all.truncate(n);
        }
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(all)
    }
}

/// An FTS5 expression matching any of the query's words (each quoted, so
/// no FTS syntax in the query can do anything); `None` without words.
fn fts_query(q: &str) -> Option<String> {
    let mut words: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    words.dedup();
    words.truncate(64);
    (!words.is_empty()).then(|| {
        words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR ")
    })
}

fn snippet(text: &str) -> String {
    if text.chars().count() <= SNIPPET_CHARS {
        return text.to_string();
    }
    let mut s: String = text.chars().take(SNIPPET_CHARS).collect();
    s.push('…');
    s
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn dot_blob(q: &[f32], blob: &[u8]) -> f32 {
    if blob.len() != q.len() * 4 {
        return 0.0;
    }
    blob.chunks_exact(4)
        .zip(q)
        .map(|(b, x)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x)
        .sum()
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
