//! YaRN's rotary frequencies (Peng et al. 2023, "YaRN: Efficient Context
//! Window Extension of Large Language Models", §3.2): each frequency blends
//! interpolation (divided by the extension factor) and extrapolation (kept)
//! by a linear ramp over the dimensions whose wavelengths lie between
//! `beta_fast` and `beta_slow` rotations of the original context. Computed
//! in `f32` in transformers' order (`_compute_yarn_parameters`), for
//! [`crate::RotaryTables::from_frequencies`]; the attention factor that
//! multiplies cos and sin is [`yarn_attention_factor`].

/// The settings of YaRN scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    /// Rotated values per head row (the head width).
    pub dims: usize,
    /// The base `θ`.
    pub theta: f64,
    /// The context extension factor.
    pub factor: f64,
    /// The context the model was first trained at.
    pub original_max_position_embeddings: f64,
    /// Rotations where extrapolation ends (32 by default).
    pub beta_fast: f64,
    /// Rotations where interpolation begins (1 by default).
    pub beta_slow: f64,
    /// Whether the ramp's ends are rounded outwards to whole dims.
    pub truncate: bool,
}

/// The `dims / 2` inverse frequencies of YaRN.
pub fn yarn_frequencies(yarn: &Yarn) -> Vec<f32> {
    let dims = yarn.dims;
    // §3.2: the dimension whose wavelength makes `rotations` turns over the
    // original context.
    let correction = |rotations: f64| {
        (dims as f64
            * (yarn.original_max_position_embeddings / (rotations * 2.0 * std::f64::consts::PI))
                .ln())
            / (2.0 * yarn.theta.ln())
    };
    let (mut low, mut high) = (correction(yarn.beta_fast), correction(yarn.beta_slow));
    if yarn.truncate {
        low = low.floor();
        high = high.ceil();
    }
    let low = low.max(0.0) as f32;
    let mut high = high.min(dims as f64 - 1.0) as f32;
    if low == high {
        // transformers avoids the division by zero the same way.
        high += 0.001;
    }
    let base = yarn.theta as f32;
    let factor = yarn.factor as f32;
    (0..dims / 2)
        .map(|i| {
            let position = base.powf((2 * i) as f32 / dims as f32);
            let extrapolation = 1.0 / position;
            let interpolation = 1.0 / (factor * position);
            let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
            let keep = 1.0 - ramp;
            interpolation * (1.0 - keep) + extrapolation * keep
        })
        .collect()
}

/// `0.1 · mscale · ln(scale) + 1`, 1 when not extending (YaRN's `mscale`).
pub fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// The factor on cos and sin: the configured one, else
/// `mscale(factor, mscale) / mscale(factor, mscale_all_dim)` when both are
/// given, else `mscale(factor, 1)`.
pub fn yarn_attention_factor(
    factor: f64,
    configured: Option<f64>,
    mscale: Option<f64>,
    mscale_all_dim: Option<f64>,
) -> f64 {
    match (configured, mscale, mscale_all_dim) {
        (Some(value), _, _) => value,
        (None, Some(mscale), Some(all)) if mscale != 0.0 && all != 0.0 => {
            yarn_mscale(factor, mscale) / yarn_mscale(factor, all)
        }
        _ => yarn_mscale(factor, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_dims_extrapolate_high_dims_interpolate() {
        let yarn = Yarn {
            dims: 16,
            theta: 10_000.0,
            factor: 4.0,
            original_max_position_embeddings: 32.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            truncate: true,
        };
        let frequencies = yarn_frequencies(&yarn);
        let plain = |i: usize| 1.0 / 10_000f32.powf((2 * i) as f32 / 16.0);
        // The fastest dimension turns far more than 32 times over the
        // original context: kept. The slowest turns less than once:
        // interpolated by the factor.
        assert_eq!(frequencies[0], plain(0));
        assert!((frequencies[7] - plain(7) / 4.0).abs() < 1e-9);
        assert!(
            (yarn_attention_factor(4.0, None, None, None) - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12
        );
        assert_eq!(yarn_attention_factor(4.0, Some(1.5), None, None), 1.5);
    }
}
