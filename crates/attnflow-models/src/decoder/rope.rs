//! Rotary position embeddings (Su et al. 2021, RoFormer §3.4) with the
//! frequency scalings Hugging Face models declare, computed in `f32` in the
//! order transformers computes them so that the angles agree to the last
//! bits.

use crate::decoder::config::{RopeConfig, RopeScaling};

/// The rotary map of a model: its inverse frequencies and the factor that
/// multiplies cos and sin.
#[derive(Clone, Debug)]
pub struct RotaryTable {
    inverse_frequencies: Vec<f32>,
    attention_factor: f32,
}

/// Cos and sin of the angles of a run of positions, `(n, head_dim / 2)`
/// each, already multiplied by the attention factor.
#[derive(Clone, Debug)]
pub struct RotaryAngles {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// The inverse frequencies `θ_i` (`head_dim / 2` of them) and the factor
/// that multiplies cos and sin.
pub fn inverse_frequencies(rope: &RopeConfig, head_dim: usize) -> (Vec<f32>, f32) {
    let dim = head_dim as f32;
    let base = rope.theta as f32;
    // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in f32.
    let plain: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / dim))
        .collect();
    match &rope.scaling {
        RopeScaling::None | RopeScaling::Dynamic { .. } => (plain, 1.0),
        RopeScaling::Linear { factor } => {
            let factor = *factor as f32;
            (plain.iter().map(|f| f / factor).collect(), 1.0)
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let factor = *factor as f32;
            let low = *low_freq_factor as f32;
            let high = *high_freq_factor as f32;
            let old = *original_max_position_embeddings as f32;
            let low_wavelength = (*original_max_position_embeddings / *low_freq_factor) as f32;
            let high_wavelength = (*original_max_position_embeddings / *high_freq_factor) as f32;
            let two_pi = (2.0 * std::f64::consts::PI) as f32;
            let scaled = plain
                .iter()
                .map(|&frequency| {
                    let wavelength = two_pi / frequency;
                    let kept = if wavelength > low_wavelength {
                        frequency / factor
                    } else {
                        frequency
                    };
                    let medium = !(wavelength < high_wavelength) && !(wavelength > low_wavelength);
                    if medium {
                        let smooth = (old / wavelength - low) / (high - low);
                        (1.0 - smooth) * kept / factor + smooth * kept
                    } else {
                        kept
                    }
                })
                .collect();
            (scaled, 1.0)
        }
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            attention_factor,
            truncate,
        } => {
            let correction = |rotations: f64| {
                (head_dim as f64
                    * (original_max_position_embeddings / (rotations * 2.0 * std::f64::consts::PI))
                        .ln())
                    / (2.0 * rope.theta.ln())
            };
            let (mut low, mut high) = (correction(*beta_fast), correction(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0) as f32;
            let mut high = high.min(head_dim as f64 - 1.0) as f32;
            if low == high {
                high += 0.001;
            }
            let factor = *factor as f32;
            let blended = (0..head_dim / 2)
                .map(|i| {
                    let position = base.powf((2 * i) as f32 / dim);
                    let extrapolation = 1.0 / position;
                    let interpolation = 1.0 / (factor * position);
                    let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                    let keep = 1.0 - ramp;
                    interpolation * (1.0 - keep) + extrapolation * keep
                })
                .collect();
            (blended, *attention_factor as f32)
        }
    }
}

impl RotaryTable {
    /// The map for `rope` and heads of `head_dim`.
    pub fn new(rope: &RopeConfig, head_dim: usize) -> Self {
        let (inverse_frequencies, attention_factor) = inverse_frequencies(rope, head_dim);
        Self {
            inverse_frequencies,
            attention_factor,
        }
    }

    /// The angles of positions `first..first + n`.
    pub fn angles(&self, first: usize, n: usize) -> RotaryAngles {
        let half = self.inverse_frequencies.len();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for position in first..first + n {
            for &frequency in &self.inverse_frequencies {
                // transformers: position.float() * inv_freq, then cos/sin,
                // then times the attention factor, all in f32.
                let angle = position as f32 * frequency;
                cos.push(angle.cos() * self.attention_factor);
                sin.push(angle.sin() * self.attention_factor);
            }
        }
        RotaryAngles { half, cos, sin }
    }
}

impl RotaryAngles {
    /// Rotates every head of the rows in place: `rows` is
    /// `(n, heads · head_dim)`, one row per position of these angles, in the
    /// rotate-half layout (`x_i` pairs with `x_{i + d/2}`).
    pub fn rotate(&self, rows: &mut [f32], heads: usize) {
        let half = self.half;
        let head_dim = 2 * half;
        let width = heads * head_dim;
        if width == 0 {
            return;
        }
        for (offset, row) in rows.chunks_exact_mut(width).enumerate() {
            let cos = &self.cos[offset * half..(offset + 1) * half];
            let sin = &self.sin[offset * half..(offset + 1) * half];
            for head in row.chunks_exact_mut(head_dim) {
                let (low, high) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (low[i], high[i]);
                    // q·cos + rotate_half(q)·sin, rotate_half(q) = (−q₂, q₁).
                    low[i] = a * cos[i] - b * sin[i];
                    high[i] = b * cos[i] + a * sin[i];
                }
            }
        }
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
    fn plain_frequencies_and_rotation_preserve_norms() {
        let (frequencies, factor) = inverse_frequencies(&rope(RopeScaling::None), 8);
        assert_eq!(factor, 1.0);
        assert_eq!(frequencies[0], 1.0);
        assert!((frequencies[3] as f64 - 10_000f64.powf(-6.0 / 8.0)).abs() < 1e-7);
        let table = RotaryTable::new(&rope(RopeScaling::None), 8);
        let mut row: Vec<f32> = (0..16).map(|i| (i as f32 * 0.3).sin()).collect();
        let before: f32 = row.iter().map(|x| x * x).sum();
        table.angles(7, 1).rotate(&mut row, 2);
        let after: f32 = row.iter().map(|x| x * x).sum();
        assert!((before - after).abs() < 1e-5);
    }

    #[test]
    fn relative_positions_only() {
        // RoFormer §3.4: <R_m q, R_n k> depends on m − n only.
        let table = RotaryTable::new(&rope(RopeScaling::None), 8);
        let q: Vec<f32> = (0..8).map(|i| (i as f32 + 1.0).ln()).collect();
        let k: Vec<f32> = (0..8).map(|i| (i as f32 * 0.7).cos()).collect();
        let score = |m: usize, n: usize| {
            let (mut a, mut b) = (q.clone(), k.clone());
            table.angles(m, 1).rotate(&mut a, 1);
            table.angles(n, 1).rotate(&mut b, 1);
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
        };
        assert!((score(5, 2) - score(33, 30)).abs() < 1e-4);
    }

    #[test]
    fn linear_and_llama3_scale_low_frequencies() {
        let (plain, _) = inverse_frequencies(&rope(RopeScaling::None), 16);
        let (linear, _) = inverse_frequencies(&rope(RopeScaling::Linear { factor: 4.0 }), 16);
        assert!((linear[5] - plain[5] / 4.0).abs() < 1e-12);
        let (llama3, _) = inverse_frequencies(
            &rope(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 16.0,
            }),
            16,
        );
        // High frequencies (short wavelengths) are kept, the lowest divided.
        assert_eq!(llama3[0], plain[0]);
        assert!((llama3[7] - plain[7] / 8.0).abs() < 1e-12);
    }
}
