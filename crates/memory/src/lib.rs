//! The memory index: Markdown memory files cut into chunks ([`chunk`]),
//! kept in SQLite with FTS5 and vectors ([`index`]), embedded by a remote
//! OpenAI-compatible endpoint ([`embed`]), and searched by a hybrid of BM25
//! and cosine similarity ([`index::Index::search`]). The files themselves
//! live in the agent's sandbox; only the index is on the host.

pub mod chunk;
pub mod embed;
pub mod index;

pub use chunk::{chunk_markdown, Chunk, ChunkConfig};
pub use embed::{EmbedError, Embedder, LocalEmbedder, OpenAiEmbedder};
pub use index::{Hit, Index, IndexError, SearchMode, SearchResult, Weights};
