//! What tokens cost, from the per-model prices in the config. Prompt tokens
//! the provider read from its cache, or wrote to it, are priced at the
//! model's cache prices; the rest of the prompt at the input price.

use crate::config::ModelInfo;
use crate::model::Usage;

/// US dollars for `usage` on `model`.
pub fn cost_usd(usage: Usage, model: &ModelInfo) -> f64 {
    (usage.uncached_input_tokens() as f64 * model.input_price_per_mtok
        + usage.cache_read_tokens as f64 * model.cache_read_price_per_mtok
        + usage.cache_write_tokens as f64 * model.cache_write_price_per_mtok
        + usage.output_tokens as f64 * model.output_price_per_mtok)
        / 1_000_000.0
}

/// The same in millionths of a dollar, rounded: an integer sums exactly in
/// a database column across many turns.
pub fn cost_micro_usd(usage: Usage, model: &ModelInfo) -> u64 {
    (cost_usd(usage, model) * 1_000_000.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelInfo {
        ModelInfo {
            provider: "p".into(),
            name: "m".into(),
            id: "m".into(),
            context_window: 1000,
            max_output_tokens: 100,
            input_price_per_mtok: 3.0,
            output_price_per_mtok: 15.0,
            cache_read_price_per_mtok: 0.3,
            cache_write_price_per_mtok: 3.75,
        }
    }

    #[test]
    fn prices_per_million() {
        let u = Usage::new(1_000, 200);
        assert!((cost_usd(u, &model()) - 0.006).abs() < 1e-12);
        assert_eq!(cost_micro_usd(u, &model()), 6000);
    }

    #[test]
    fn cached_prompt_tokens_cost_the_cache_prices() {
        // 10,000 prompt tokens: 8,000 read from the cache, 1,000 written.
        let u = Usage {
            input_tokens: 10_000,
            output_tokens: 0,
            cache_read_tokens: 8_000,
            cache_write_tokens: 1_000,
        };
        let want = (1_000.0 * 3.0 + 8_000.0 * 0.3 + 1_000.0 * 3.75) / 1e6;
        assert!((cost_usd(u, &model()) - want).abs() < 1e-12);
        assert!(cost_usd(u, &model()) < cost_usd(Usage::new(10_000, 0), &model()));
    }
}
