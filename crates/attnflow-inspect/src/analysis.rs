//! What an inspection shows: the §4.2 heatmap of every head, the §8.2
//! rollout across layers, attention flow, and per-head statistics.

use attnflow_core::analysis::{
    attention_flow, heatmap, rollout, stack_statistics, AttentionMap, HeadFusion, HeadStatistics,
    RolloutOptions, MAX_FLOW_TOKENS,
};

use crate::error::{InspectError, Result};
use crate::source::Inspection;

/// How to roll attention out across layers.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisOptions {
    /// How the heads of a layer are fused.
    pub fusion: HeadFusion,
    /// Fraction of each row's lowest weights to discard, in `[0, 1)`.
    pub discard: f64,
    /// The first layer taken into account (0-based).
    pub start_layer: usize,
    /// The token whose relevance is shown; `None` takes the last.
    pub target: Option<usize>,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        Self {
            fusion: HeadFusion::Mean,
            discard: 0.0,
            start_layer: 0,
            target: None,
        }
    }
}

/// The views derived from an inspection.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The options the views were made with.
    pub options: AnalysisOptions,
    /// The target token (resolved: never `None`).
    pub target: usize,
    /// The rollout matrix `n × n` (Abnar & Zuidema 2020, residual-aware).
    pub rollout: AttentionMap,
    /// Attention flow from the target to every token (at most
    /// [`MAX_FLOW_TOKENS`] tokens; `None` beyond).
    pub flow: Option<Vec<f64>>,
    /// Statistics of every head.
    pub statistics: Vec<HeadStatistics>,
    /// `heatmaps[layer][head]`: §4.2, `h = a / max a`, row-major.
    pub heatmaps: Vec<Vec<Vec<f64>>>,
}

impl Analysis {
    /// The rollout settings in words.
    pub fn settings(&self) -> String {
        format!(
            "{} fusion, discard {}, from layer {}",
            self.options.fusion.name(),
            self.options.discard,
            self.options.start_layer
        )
    }

    /// The target's row of the rollout: how much each token contributes.
    pub fn relevance(&self) -> &[f64] {
        self.rollout.row(self.target)
    }

    /// The `count` most relevant tokens to the target, most relevant first.
    pub fn most_relevant(&self, count: usize) -> Vec<usize> {
        let relevance = self.relevance();
        let mut order: Vec<usize> = (0..relevance.len()).collect();
        order.sort_by(|&a, &b| relevance[b].total_cmp(&relevance[a]));
        order.truncate(count);
        order
    }
}

impl Inspection {
    /// Derives every view of this inspection.
    pub fn analyse(&self, options: &AnalysisOptions) -> Result<Analysis> {
        let n = self.maps.num_tokens();
        let target = options.target.unwrap_or(n - 1);
        if target >= n {
            return Err(InspectError::input(
                format!("--target {target}"),
                format!("there are only {n} tokens (0..{})", n - 1),
            ));
        }
        let rollout_options = RolloutOptions {
            fusion: options.fusion,
            discard_ratio: options.discard,
            start_layer: options.start_layer,
            residual: true,
        };
        let rolled =
            rollout(&self.maps, &rollout_options).map_err(InspectError::analysis("rollout"))?;
        let flow = if n <= MAX_FLOW_TOKENS {
            Some(
                attention_flow(&self.maps, &rollout_options, target)
                    .map_err(InspectError::analysis("attention flow"))?,
            )
        } else {
            None
        };
        let heatmaps = self
            .maps
            .layers()
            .iter()
            .enumerate()
            .map(|(layer, heads)| {
                heads
                    .iter()
                    .enumerate()
                    .map(|(head, map)| {
                        let name = format!("layer {layer} head {head}");
                        heatmap(map, &name)
                            .map(AttentionMap::into_values)
                            .map_err(InspectError::analysis(name))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Analysis {
            options: options.clone(),
            target,
            rollout: rolled,
            flow,
            statistics: stack_statistics(&self.maps),
            heatmaps,
        })
    }
}

/// One head's statistics in the report's plain-number form.
pub fn summary_of(statistics: &HeadStatistics) -> attnflow_report::HeadSummary {
    attnflow_report::HeadSummary {
        layer: statistics.layer,
        head: statistics.head,
        mean_entropy: statistics.mean_entropy,
        mean_distance: statistics.mean_distance,
        first_token_share: statistics.first_token_share,
        diagonal_share: statistics.diagonal_share,
    }
}

impl Analysis {
    /// Every head's statistics in the report's plain-number form.
    pub fn head_summaries(&self) -> Vec<attnflow_report::HeadSummary> {
        self.statistics.iter().map(summary_of).collect()
    }
}
