//! Per-head summary statistics: how focused each head is and where it looks.

use super::map::{AttentionMap, AttentionStack};

/// Summary of one head's attention map, each averaged over the queries
/// whose row is not empty (fully masked queries attend nowhere and would
/// otherwise drag every average towards zero).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeadStatistics {
    /// Layer index (0-based).
    pub layer: usize,
    /// Head index within the layer (0-based).
    pub head: usize,
    /// Mean Shannon entropy of a row, in nats: 0 for a head that looks at
    /// one key, `ln m` for one that spreads evenly over `m` keys.
    pub mean_entropy: f64,
    /// Mean of `Σ_j a_ij |i − j|`: how far, in tokens, a query looks.
    pub mean_distance: f64,
    /// Mean weight on the first token (`a_i0`): "attention sink" heads put
    /// most of their weight there.
    pub first_token_share: f64,
    /// Mean weight on the query's own position (`a_ii`).
    pub diagonal_share: f64,
    /// Number of queries whose row is empty (fully masked) and was skipped.
    pub empty_rows: usize,
}

/// The statistics of one map. Rows are read as distributions: entries are
/// divided by the row sum, so statistics of unnormalised maps (heatmaps,
/// max-fused heads) are still comparable.
pub fn head_statistics(map: &AttentionMap, layer: usize, head: usize) -> HeadStatistics {
    let mut totals = [0.0f64; 4];
    let mut counted = 0usize;
    for (i, row) in map.iter_rows().enumerate() {
        let sum: f64 = row.iter().filter(|value| **value > 0.0).sum();
        if sum <= 0.0 || !sum.is_finite() {
            continue;
        }
        counted += 1;
        let mut entropy = 0.0;
        let mut distance = 0.0;
        for (j, &value) in row.iter().enumerate() {
            if value > 0.0 {
                let p = value / sum;
                entropy -= p * p.ln();
                distance += p * i.abs_diff(j) as f64;
            }
        }
        totals[0] += entropy;
        totals[1] += distance;
        totals[2] += row.first().map_or(0.0, |value| value.max(0.0) / sum);
        totals[3] += row.get(i).map_or(0.0, |value| value.max(0.0) / sum);
    }
    let mean = |total: f64| {
        if counted == 0 {
            0.0
        } else {
            total / counted as f64
        }
    };
    HeadStatistics {
        layer,
        head,
        mean_entropy: mean(totals[0]),
        mean_distance: mean(totals[1]),
        first_token_share: mean(totals[2]),
        diagonal_share: mean(totals[3]),
        empty_rows: map.rows() - counted,
    }
}

/// The statistics of every head of a stack, layer by layer.
pub fn stack_statistics(stack: &AttentionStack) -> Vec<HeadStatistics> {
    stack
        .layers()
        .iter()
        .enumerate()
        .flat_map(|(layer, heads)| {
            heads
                .iter()
                .enumerate()
                .map(move |(head, map)| head_statistics(map, layer, head))
        })
        .collect()
}
