//! What tokens cost, from the per-model prices in the config.

use crate::config::ModelInfo;
use crate::model::Usage;

/// US dollars for `usage` on `model`.
pub fn cost_usd(usage: Usage, model: &ModelInfo) -> f64 {
    (usage.input_tokens as f64 * model.input_price_per_mtok
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

    #[test]
    fn prices_per_million() {
        let m = ModelInfo {
            provider: "p".into(),
            name: "m".into(),
            id: "m".into(),
            context_window: 1000,
            max_output_tokens: 100,
            input_price_per_mtok: 3.0,
            output_price_per_mtok: 15.0,
        };
        let u = Usage {
            input_tokens: 1_000,
            output_tokens: 200,
        };
        assert!((cost_usd(u, &m) - 0.006).abs() < 1e-12);
        assert_eq!(cost_micro_usd(u, &m), 6000);
    }
}
