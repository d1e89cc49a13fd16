//! §4.2-4.3: the heatmap of an attention map.

use super::error::{AnalysisError, AnalysisResult};
use super::map::AttentionMap;

/// §4.2: `h_ij = a_ij / max_kl a_kl` where `a_ij > 0`, else 0 — exactly as
/// the paper writes it (and as its §4.3 pseudocode computes it).
///
/// Consequences of taking the formula literally, all deliberate:
/// * negative entries (possible in arbitrary matrices, never in softmax
///   output) become 0, not a negative shade;
/// * a matrix with no positive entry gives all zeros (the paper would
///   divide by a non-positive maximum);
/// * `-inf` is non-positive and becomes 0;
/// * NaN and `+inf` have no place on a `[0, 1]` scale and are an error
///   naming the cell.
///
/// `name` names the map in errors.
pub fn heatmap(map: &AttentionMap, name: &str) -> AnalysisResult<AttentionMap> {
    let columns = map.columns().max(1);
    for (index, &value) in map.values().iter().enumerate() {
        if value.is_nan() || value == f64::INFINITY {
            return Err(AnalysisError::NotFinite {
                map: name.to_string(),
                row: index / columns,
                column: index % columns,
                value,
            });
        }
    }
    let maximum = map
        .values()
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let values = map
        .values()
        .iter()
        .map(|&value| {
            // §4.2: only positive entries are scaled; the rest are 0. When
            // some entry is positive, the maximum is positive too.
            if value > 0.0 {
                value / maximum
            } else {
                0.0
            }
        })
        .collect();
    AttentionMap::new(map.rows(), map.columns(), values)
}
