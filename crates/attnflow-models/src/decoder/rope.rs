//! Rotary position embeddings (Su et al. 2021, RoFormer §3.4) of a decoder:
//! the frequencies its configuration states (plain, linear, Llama 3, YaRN;
//! dynamic NTK equals plain within the trained context), turned into
//! attnflow-kernels' cos/sin tables, which grow with the positions used.

use std::sync::{Arc, RwLock};

use attnflow_kernels::yarn::{yarn_frequencies, Yarn};
use attnflow_kernels::{
    inverse_frequencies, rotary_in_place, HeadsLayout, RotaryConfig, RotaryScaling, RotaryTables,
};

use crate::decoder::config::{RopeConfig, RopeScaling};

/// The rotary map of a model.
#[derive(Debug)]
pub struct Rotary {
    frequencies: Vec<f32>,
    attention_factor: f32,
    head_dim: usize,
    /// The most positions the tables ever cover (the model's context).
    limit: usize,
    tables: RwLock<Arc<RotaryTables>>,
}

impl Clone for Rotary {
    fn clone(&self) -> Self {
        Self {
            frequencies: self.frequencies.clone(),
            attention_factor: self.attention_factor,
            head_dim: self.head_dim,
            limit: self.limit,
            tables: RwLock::new(self.current()),
        }
    }
}

/// The `head_dim / 2` inverse frequencies of `rope` and the factor on cos
/// and sin.
pub fn frequencies(rope: &RopeConfig, head_dim: usize) -> (Vec<f32>, f32) {
    let plain = |scaling| {
        inverse_frequencies(&RotaryConfig {
            dims: head_dim,
            theta: rope.theta,
            scaling,
        })
    };
    match &rope.scaling {
        RopeScaling::None | RopeScaling::Dynamic { .. } => (plain(RotaryScaling::None), 1.0),
        RopeScaling::Linear { factor } => (plain(RotaryScaling::Linear { factor: *factor }), 1.0),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => (
            plain(RotaryScaling::Llama3 {
                factor: *factor,
                low_freq_factor: *low_freq_factor,
                high_freq_factor: *high_freq_factor,
                original_max_position_embeddings: *original_max_position_embeddings as usize,
            }),
            1.0,
        ),
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            attention_factor,
            truncate,
        } => (
            yarn_frequencies(&Yarn {
                dims: head_dim,
                theta: rope.theta,
                factor: *factor,
                original_max_position_embeddings: *original_max_position_embeddings,
                beta_fast: *beta_fast,
                beta_slow: *beta_slow,
                truncate: *truncate,
            }),
            *attention_factor as f32,
        ),
    }
}

impl Rotary {
    /// The map for `rope`, heads of `head_dim`, at most `limit` positions.
    pub fn new(rope: &RopeConfig, head_dim: usize, limit: usize) -> Self {
        let (frequencies, attention_factor) = frequencies(rope, head_dim);
        let initial = limit.min(256);
        let tables = RotaryTables::from_frequencies(&frequencies, attention_factor, initial);
        Self {
            frequencies,
            attention_factor,
            head_dim,
            limit,
            tables: RwLock::new(Arc::new(tables)),
        }
    }

    fn current(&self) -> Arc<RotaryTables> {
        Arc::clone(
            &self
                .tables
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    /// Tables covering positions `0..end` (rebuilt, doubled, when short).
    fn tables(&self, end: usize) -> Arc<RotaryTables> {
        let current = self.current();
        if current.positions() >= end {
            return current;
        }
        let positions = end.max(2 * current.positions()).min(self.limit.max(end));
        let grown = Arc::new(RotaryTables::from_frequencies(
            &self.frequencies,
            self.attention_factor,
            positions,
        ));
        *self
            .tables
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::clone(&grown);
        grown
    }

    /// Rotates `(n, heads · head_dim)` token rows in place, row `i` at
    /// position `first + i`.
    pub fn rotate(&self, rows: &mut [f32], heads: usize, first: usize, n: usize) {
        let tables = self.tables(first + n);
        let width = heads * self.head_dim;
        rotary_in_place(
            rows,
            HeadsLayout::token_rows(n, width, self.head_dim, 0),
            (1, heads, n),
            &tables,
            first,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(scaling: RopeScaling) -> RopeConfig {
        RopeConfig {
            theta: 10_000.0,
            scaling,
        }
    }

    #[test]
    fn rotation_preserves_norms_and_keeps_relative_positions_only() {
        let rotary = Rotary::new(&rope(RopeScaling::None), 8, 1000);
        let q: Vec<f32> = (0..8).map(|i| (i as f32 + 1.0).ln()).collect();
        let k: Vec<f32> = (0..8).map(|i| (i as f32 * 0.7).cos()).collect();
        let score = |m: usize, n: usize| {
            let (mut a, mut b) = (q.clone(), k.clone());
            rotary.rotate(&mut a, 1, m, 1);
            rotary.rotate(&mut b, 1, n, 1);
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>();
            assert!((norm(&a) - norm(&q)).abs() < 1e-4);
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
        };
        // RoFormer §3.4: <R_m q, R_n k> depends on m − n only; position
        // 300 also makes the tables grow past their first 256.
        assert!((score(5, 2) - score(303, 300)).abs() < 1e-3);
    }

    #[test]
    fn yarn_scales_cos_and_sin() {
        let (_, factor) = frequencies(
            &rope(RopeScaling::Yarn {
                factor: 4.0,
                original_max_position_embeddings: 32.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: 1.25,
                truncate: true,
            }),
            16,
        );
        assert_eq!(factor, 1.25);
    }
}
