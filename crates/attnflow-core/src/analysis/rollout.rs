//! §8.2 with residual connections: attention rollout (Abnar & Zuidema
//! 2020, "Quantifying Attention Flow in Transformers", §3).
//!
//! Each layer's heads are fused into one map, the lowest weights are
//! optionally discarded, and the residual connection is accounted for as
//! `0.5·A + 0.5·I`; the layers are then multiplied in the order information
//! flows. Three bugs common in published rollout code are avoided on
//! purpose, each with a test:
//! * after discarding, rows are renormalised (each query's distribution),
//!   never columns — dividing by `a.sum(-1)` without keeping the dimension
//!   broadcasts over the wrong axis;
//! * no token is special: any token's row can be read as the target, and
//!   no `[CLS]` column is kept back from discarding;
//! * layers are used from `start_layer` on, each paired with its own maps.

use super::error::{AnalysisError, AnalysisResult};
use super::map::AttentionMap;
use super::map::AttentionStack;

/// How the heads of one layer become one map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeadFusion {
    /// The mean over heads (Abnar & Zuidema's choice).
    #[default]
    Mean,
    /// The element-wise maximum over heads.
    Max,
    /// The element-wise minimum over heads.
    Min,
}

impl HeadFusion {
    /// The fusion's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Max => "max",
            Self::Min => "min",
        }
    }
}

impl std::str::FromStr for HeadFusion {
    type Err = AnalysisError;

    fn from_str(text: &str) -> AnalysisResult<Self> {
        match text {
            "mean" => Ok(Self::Mean),
            "max" => Ok(Self::Max),
            "min" => Ok(Self::Min),
            other => Err(AnalysisError::parameter(
                "head fusion",
                format!("`{other}` is not one of mean, max, min"),
            )),
        }
    }
}

/// Settings of [`rollout`] and [`super::attention_flow`].
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutOptions {
    /// How heads are fused per layer.
    pub fusion: HeadFusion,
    /// Fraction in `[0, 1)` of each row's lowest weights set to zero before
    /// renormalising; 0 keeps everything. The largest weight of a row is
    /// always kept, so no row becomes empty.
    pub discard_ratio: f64,
    /// The first layer taken into account (0-based); earlier layers are
    /// skipped, as if the analysis started from that layer's input.
    pub start_layer: usize,
    /// Whether to account for the residual connection (`0.5·A + 0.5·I`).
    /// Without it, rollout is the plain §8.2 product of the fused maps.
    pub residual: bool,
}

impl Default for RolloutOptions {
    fn default() -> Self {
        Self {
            fusion: HeadFusion::Mean,
            discard_ratio: 0.0,
            start_layer: 0,
            residual: true,
        }
    }
}

impl RolloutOptions {
    fn check(&self, stack: &AttentionStack) -> AnalysisResult<()> {
        if !(0.0..1.0).contains(&self.discard_ratio) {
            return Err(AnalysisError::parameter(
                "discard ratio",
                format!("is {}; it must lie in [0, 1)", self.discard_ratio),
            ));
        }
        if self.start_layer >= stack.num_layers() {
            return Err(AnalysisError::parameter(
                "start layer",
                format!(
                    "is {} but the model has layers 0..{}",
                    self.start_layer,
                    stack.num_layers() - 1
                ),
            ));
        }
        Ok(())
    }
}

/// The heads of one layer fused into one map (before any renormalising).
pub fn fuse_heads(heads: &[AttentionMap], fusion: HeadFusion) -> AnalysisResult<AttentionMap> {
    let first = heads
        .first()
        .ok_or_else(|| AnalysisError::shape("heads", "a layer needs at least one head"))?;
    let mut values = first.values().to_vec();
    for head in &heads[1..] {
        if (head.rows(), head.columns()) != (first.rows(), first.columns()) {
            return Err(AnalysisError::shape(
                "heads",
                "the heads of a layer have different shapes",
            ));
        }
        for (fused, &value) in values.iter_mut().zip(head.values()) {
            *fused = match fusion {
                HeadFusion::Mean => *fused + value,
                HeadFusion::Max => fused.max(value),
                HeadFusion::Min => fused.min(value),
            };
        }
    }
    if fusion == HeadFusion::Mean {
        let count = heads.len() as f64;
        values.iter_mut().for_each(|value| *value /= count);
    }
    AttentionMap::new(first.rows(), first.columns(), values)
}

/// Sets the lowest `ratio` of each row's weights to zero, keeping the row's
/// largest weight, then renormalises each row (the axis of the query's
/// distribution). Ties are broken by column order, so the result is
/// deterministic.
pub fn discard_lowest(map: &AttentionMap, ratio: f64) -> AnalysisResult<AttentionMap> {
    if !(0.0..1.0).contains(&ratio) {
        return Err(AnalysisError::parameter(
            "discard ratio",
            format!("is {ratio}; it must lie in [0, 1)"),
        ));
    }
    let mut result = map.clone();
    let columns = map.columns();
    let discard = ((ratio * columns as f64).floor() as usize).min(columns.saturating_sub(1));
    for row in 0..map.rows() {
        let values = result.row_mut(row);
        let mut order: Vec<usize> = (0..columns).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
        for &column in &order[..discard] {
            values[column] = 0.0;
        }
    }
    result.normalise_rows();
    Ok(result)
}

/// The per-layer matrices rollout multiplies, from `start_layer` on:
/// fused, discarded, rows renormalised, and with the residual `0.5·A + 0.5·I`
/// (rows renormalised again). With the residual, every row is a
/// distribution — even rows of fully masked queries, which keep the token
/// itself.
pub fn rollout_layers(
    stack: &AttentionStack,
    options: &RolloutOptions,
) -> AnalysisResult<Vec<AttentionMap>> {
    options.check(stack)?;
    let n = stack.num_tokens();
    let mut layers = Vec::with_capacity(stack.num_layers() - options.start_layer);
    for (index, heads) in stack.layers().iter().enumerate().skip(options.start_layer) {
        let fused = fuse_heads(heads, options.fusion)?;
        fused.check_finite(&format!("layer {index} (fused)"))?;
        // discard_lowest also renormalises rows when nothing is discarded.
        let mut layer = discard_lowest(&fused, options.discard_ratio)?;
        if options.residual {
            let values = layer
                .values()
                .iter()
                .enumerate()
                .map(|(cell, &value)| {
                    let diagonal = if cell / n == cell % n { 1.0 } else { 0.0 };
                    0.5 * value + 0.5 * diagonal
                })
                .collect();
            layer = AttentionMap::new(n, n, values)?;
            layer.normalise_rows();
        }
        layers.push(layer);
    }
    Ok(layers)
}

/// Attention rollout: the product of [`rollout_layers`], last layer on the
/// left. Row `t` of the result is how much output token `t` of the last
/// layer draws on each input token; pick any `t` with [`target_row`].
pub fn rollout(stack: &AttentionStack, options: &RolloutOptions) -> AnalysisResult<AttentionMap> {
    let layers = rollout_layers(stack, options)?;
    super::layer_product(&layers)
}

/// Row `target` of a rollout (or any map): the relevance of every input
/// token to that output token. Fails, naming the target, when it is out of
/// range.
pub fn target_row(map: &AttentionMap, target: usize) -> AnalysisResult<&[f64]> {
    if target >= map.rows() {
        return Err(AnalysisError::parameter(
            "target token",
            format!("is {target} but there are only {} tokens", map.rows()),
        ));
    }
    Ok(map.row(target))
}
