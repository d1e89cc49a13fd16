//! §8.1 multi-modal blends and §8.2 hierarchical products of attention maps.

use super::error::{AnalysisError, AnalysisResult};
use super::map::AttentionMap;

/// §8.1: `A = α A_v + (1 − α) A_l` for two maps of equal shape.
///
/// Both inputs must be row-stochastic within `tolerance` (checked, naming
/// `A_v` or `A_l` and the row at fault) and `α` must lie in `[0, 1]`; then
/// the blend is row-stochastic too, being a convex combination of two
/// distributions per row.
pub fn blend(
    vision: &AttentionMap,
    language: &AttentionMap,
    alpha: f64,
    tolerance: f64,
) -> AnalysisResult<AttentionMap> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(AnalysisError::parameter(
            "alpha",
            format!("is {alpha}; §8.1 needs α in [0, 1]"),
        ));
    }
    if (vision.rows(), vision.columns()) != (language.rows(), language.columns()) {
        return Err(AnalysisError::shape(
            "A_l",
            format!(
                "is {} × {} but A_v is {} × {}; a blend needs equal shapes",
                language.rows(),
                language.columns(),
                vision.rows(),
                vision.columns()
            ),
        ));
    }
    vision.check_row_stochastic("A_v", tolerance)?;
    language.check_row_stochastic("A_l", tolerance)?;
    let values = vision
        .values()
        .iter()
        .zip(language.values())
        .map(|(&v, &l)| alpha * v + (1.0 - alpha) * l)
        .collect();
    AttentionMap::new(vision.rows(), vision.columns(), values)
}

/// §8.2: the hierarchical product of the layers' maps, taken in the order
/// information flows: `A_L · … · A_2 · A_1`, so row `i` of the result says
/// how output token `i` of the last layer mixes the input tokens.
///
/// (The paper writes `Π_{i=1}^{L} A_i` without fixing an order; for
/// non-commuting matrices only this one composes the layers.) A product of
/// row-stochastic matrices is row-stochastic. Plain products ignore the
/// residual connections; [`super::rollout`] accounts for them.
pub fn layer_product(layers: &[AttentionMap]) -> AnalysisResult<AttentionMap> {
    let first = layers
        .first()
        .ok_or_else(|| AnalysisError::shape("layers", "no maps to multiply"))?;
    let mut product = first.clone();
    for (index, layer) in layers.iter().enumerate().skip(1) {
        product = layer.matmul(&product).map_err(|_| {
            AnalysisError::shape(
                &format!("layer {index}"),
                format!(
                    "is {} × {} but the product so far is {} × {}",
                    layer.rows(),
                    layer.columns(),
                    product.rows(),
                    product.columns()
                ),
            )
        })?;
    }
    Ok(product)
}
