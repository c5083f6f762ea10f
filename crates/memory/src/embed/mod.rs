//! Embedders: text in, one vector per text out. [`OpenAiEmbedder`] speaks
//! the OpenAI `/v1/embeddings` wire format (OpenAI, Ollama, vLLM and
//! others serve it); [`LocalEmbedder`] runs all-MiniLM-L6-v2 in-process
//! with candle, no network. Vectors are L2-normalised, so the index's
//! cosine is a dot product.

mod local;
mod openai;

pub use local::LocalEmbedder;
pub use openai::OpenAiEmbedder;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embeddings request to {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("embeddings endpoint {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("embeddings endpoint {url}: {why}")]
    Malformed { url: String, why: String },
    #[error("local embedding model in {dir}: {why}")]
    Load { dir: String, why: String },
    #[error("local embedding model: {0}")]
    Run(String),
}

#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// Names the model (and so the vector space): vectors of another id
    /// are never compared with this one's.
    fn id(&self) -> &str;
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// `v` scaled to unit length (a zero vector stays zero).
pub fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}
