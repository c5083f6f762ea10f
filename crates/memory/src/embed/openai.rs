//! An OpenAI-compatible `/v1/embeddings` endpoint.

use std::time::Duration;

use super::{normalized, EmbedError, Embedder};

/// An OpenAI-compatible `/v1/embeddings` endpoint.
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    id: String,
    /// Texts per request.
    batch: usize,
}

impl OpenAiEmbedder {
    /// `base_url` is the API root (`https://api.openai.com/v1`,
    /// `http://localhost:11434/v1`).
    pub fn new(base_url: &str, model: &str, api_key: Option<String>) -> Self {
        let url = format!("{}/embeddings", base_url.trim_end_matches('/'));
        OpenAiEmbedder {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("a TLS backend"),
            id: format!("openai:{model}@{url}"),
            url,
            model: model.into(),
            api_key,
            batch: 64,
        }
    }
}

#[derive(serde::Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(serde::Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

#[async_trait::async_trait]
impl Embedder for OpenAiEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch) {
            let mut req = self
                .http
                .post(&self.url)
                .json(&serde_json::json!({"model": self.model, "input": batch}));
            if let Some(k) = &self.api_key {
                req = req.bearer_auth(k);
            }
            let http = |source| EmbedError::Http {
                url: self.url.clone(),
                source,
            };
            let resp = req.send().await.map_err(http)?;
            let status = resp.status();
            if !status.is_success() {
                let body = resp.text().await.unwrap_or_default();
                return Err(EmbedError::Status {
                    url: self.url.clone(),
                    status: status.as_u16(),
                    body: body.chars().take(300).collect(),
                });
            }
            let mut r: Response = resp.json().await.map_err(http)?;
            if r.data.len() != batch.len() {
                return Err(EmbedError::Malformed {
                    url: self.url.clone(),
                    why: format!("{} vectors for {} inputs", r.data.len(), batch.len()),
                });
            }
            r.data.sort_by_key(|d| d.index);
            let dims = r.data[0].embedding.len();
            for d in r.data {
                if d.embedding.len() != dims || dims == 0 {
                    return Err(EmbedError::Malformed {
                        url: self.url.clone(),
                        why: "vectors of different or zero length".into(),
                    });
                }
                out.push(normalized(d.embedding));
            }
        }
        Ok(out)
    }
}
