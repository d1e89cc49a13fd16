//! The engines the claims are checked on. Each method's default is the
//! engine attnflow ships, so [`Shipped`] checks the product itself; a test
//! overrides one method with a faulty engine and sees the verdict change.

use attnflow_core::analysis::{
    blend, heatmap, layer_product, rollout, AnalysisResult, AttentionMap, AttentionStack,
    RolloutOptions,
};
use attnflow_core::{scaled_dot_product_attention, AttentionMask, SdpaOptions};
use attnflow_data::select::{select_cover, select_within_budget, Item, SelectOptions, Selection};
use attnflow_data::DataResult;
use attnflow_workflow::markov::{Absorption, ChainError, MarkovChain};
use candle_core::Tensor;

/// The computations a claim check calls. Every default is the shipped
/// engine.
pub trait Engines {
    /// §5.3: absorption analysis of a chain (attnflow-workflow).
    fn absorption(&self, chain: &MarkovChain) -> Result<Absorption, ChainError> {
        chain.absorption()
    }

    /// §6.2, budget form: maximise value within the weight budget
    /// (attnflow-data).
    fn select_within_budget(&self, items: &[Item], budget: f64) -> DataResult<Selection> {
        select_within_budget(items, budget, &SelectOptions::default())
    }

    /// §6.2, cover form: least cost covering `required` (attnflow-data).
    fn select_cover(&self, items: &[Item], required: f64) -> DataResult<Selection> {
        select_cover(items, required, &SelectOptions::default())
    }

    /// §4.2: the heatmap `a / max a` (attnflow-core).
    fn heatmap(&self, map: &AttentionMap) -> AnalysisResult<AttentionMap> {
        heatmap(map, "claim check")
    }

    /// §8.1: `α·A_v + (1 − α)·A_l` (attnflow-core).
    fn blend(
        &self,
        vision: &AttentionMap,
        language: &AttentionMap,
        alpha: f64,
    ) -> AnalysisResult<AttentionMap> {
        blend(vision, language, alpha, 1e-9)
    }

    /// §8.2: `A_L ⋯ A_1` (attnflow-core).
    fn layer_product(&self, layers: &[AttentionMap]) -> AnalysisResult<AttentionMap> {
        layer_product(layers)
    }

    /// §8.2 with residuals: attention rollout (attnflow-core).
    fn rollout(
        &self,
        stack: &AttentionStack,
        options: &RolloutOptions,
    ) -> AnalysisResult<AttentionMap> {
        rollout(stack, options)
    }

    /// §3.2: scaled dot-product attention's output (attnflow-core's exact
    /// engine, unmasked).
    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        scaled_dot_product_attention(q, k, v, &AttentionMask::none(), &SdpaOptions::default())
            .map(|output| output.output)
            .map_err(|error| candle_core::Error::Msg(error.to_string()))
    }
}

/// The engines attnflow ships.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shipped;

impl Engines for Shipped {}
