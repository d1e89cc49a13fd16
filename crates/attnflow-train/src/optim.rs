//! AdamW (Loshchilov and Hutter 2019) with state we can checkpoint, the
//! learning-rate schedule (linear warm-up, then cosine decay) and
//! global-norm gradient clipping.
//!
//! candle-nn's `AdamW` keeps its moments private, so a resumed run could
//! not continue it exactly; this one exposes them.

use candle_core::{Tensor, Var};
use rayon::prelude::*;

use attnflow_kernels::{adamw_update, with_values, AdamWStep};
use serde::{Deserialize, Serialize};

use crate::Result;

/// AdamW's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay β₁.
    pub beta1: f64,
    /// Second-moment decay β₂.
    pub beta2: f64,
    /// Added to √v̂ to avoid division by zero.
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices (rank >= 2) only: biases
    /// and norm gains are not decayed (as nanoGPT).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW over named parameters; moments in the parameters' order.
///
/// The update runs as one fused loop per parameter on the host (training
/// runs on the CPU): reading the weight, gradient and both moments once
/// instead of a dozen candle passes with an allocation each.
pub struct AdamW {
    config: AdamWConfig,
    parameters: Vec<(String, Var)>,
    first_moments: Vec<Vec<f32>>,
    second_moments: Vec<Vec<f32>>,
    steps: u64,
}

impl AdamW {
    /// Zero moments for `parameters`.
    pub fn new(parameters: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let first_moments: Vec<Vec<f32>> = parameters
            .iter()
            .map(|(_, var)| vec![0f32; var.elem_count()])
            .collect();
        let second_moments = first_moments.clone();
        Ok(Self {
            config,
            parameters,
            first_moments,
            second_moments,
            steps: 0,
        })
    }

    /// Updates completed so far (`t` in the bias corrections).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The parameters, by name.
    pub fn parameters(&self) -> &[(String, Var)] {
        &self.parameters
    }

    /// One update with `gradients` (one per parameter, in order; `None` for
    /// a parameter that received none, which then only decays) scaled by
    /// `gradient_scale` (for clipping) at learning rate `learning_rate`.
    ///
    /// The arithmetic follows PyTorch's `torch.optim.AdamW` (f32 state):
    /// `θ ← θ(1 - ηλ)`, `m ← β₁m + (1-β₁)g`, `v ← β₂v + (1-β₂)g²`,
    /// `θ ← θ - (η / (1-β₁ᵗ)) · m / (√v / √(1-β₂ᵗ) + ε)`.
    pub fn step(
        &mut self,
        gradients: &[Option<Tensor>],
        gradient_scale: f64,
        learning_rate: f64,
    ) -> Result<()> {
        self.steps += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let t = self.steps as i32;
        let step_size = (learning_rate / (1.0 - beta1.powi(t))) as f32;
        let correction2_root = (1.0 - beta2.powi(t)).sqrt() as f32;
        let (beta1, beta2, eps, scale) = (
            beta1 as f32,
            beta2 as f32,
            eps as f32,
            gradient_scale as f32,
        );
        // Parameters are independent: updated in parallel, each by one
        // vectorised loop reading the weight and gradient in place.
        let updated: Vec<Tensor> = self
            .parameters
            .par_iter()
            .zip(gradients.par_iter())
            .zip(
                self.first_moments
                    .par_iter_mut()
                    .zip(self.second_moments.par_iter_mut()),
            )
            .map(
                |(((_, var), gradient), (first, second))| -> Result<Tensor> {
                    let decay = if var.rank() >= 2 { weight_decay } else { 0.0 };
                    let keep = (1.0 - learning_rate * decay) as f32;
                    let weights = with_values(var.as_tensor(), |weights| -> Result<Vec<f32>> {
                        let mut out = vec![0f32; weights.len()];
                        match gradient {
                            None => {
                                for (out, weight) in out.iter_mut().zip(weights) {
                                    *out = weight * keep;
                                }
                            }
                            Some(gradient) => {
                                if gradient.elem_count() != weights.len() {
                                    return Err(candle_core::Error::ShapeMismatchBinaryOp {
                                        lhs: var.shape().clone(),
                                        rhs: gradient.shape().clone(),
                                        op: "adamw",
                                    }
                                    .into());
                                }
                                with_values(gradient, |gradient| {
                                    adamw_update(
                                        weights,
                                        gradient,
                                        first,
                                        second,
                                        &mut out,
                                        AdamWStep {
                                            scale,
                                            beta1,
                                            beta2,
                                            eps,
                                            keep,
                                            step_size,
                                            correction2_root,
                                        },
                                    )
                                })?;
                            }
                        }
                        Ok(out)
                    })??;
                    Ok(Tensor::from_vec(weights, var.shape(), var.device())?)
                },
            )
            .collect::<Result<_>>()?;
        for ((_, var), value) in self.parameters.iter().zip(&updated) {
            var.set(value)?;
        }
        Ok(())
    }

    /// The moments as named tensors (`m.<name>`, `v.<name>`) for a
    /// checkpoint.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut state = Vec::with_capacity(2 * self.parameters.len());
        for (index, (name, var)) in self.parameters.iter().enumerate() {
            for (prefix, moments) in [("m", &self.first_moments), ("v", &self.second_moments)] {
                let tensor = Tensor::from_slice(&moments[index], var.shape(), var.device())?;
                state.push((format!("{prefix}.{name}"), tensor));
            }
        }
        Ok(state)
    }

    /// Restores moments (shaped like the parameters, checked by the caller)
    /// and the step count.
    pub fn restore(&mut self, first: Vec<Tensor>, second: Vec<Tensor>, steps: u64) -> Result<()> {
        let host = |tensors: Vec<Tensor>| -> Result<Vec<Vec<f32>>> {
            tensors
                .iter()
                .map(|tensor| Ok(tensor.flatten_all()?.to_vec1::<f32>()?))
                .collect()
        };
        self.first_moments = host(first)?;
        self.second_moments = host(second)?;
        self.steps = steps;
        Ok(())
    }
}

/// The learning rate at `step` (0-based) of `total`: linear warm-up from
/// `peak / warmup` to `peak` over `warmup` steps, then cosine decay to
/// `floor` at the last step.
pub fn learning_rate(step: u64, total: u64, warmup: u64, peak: f64, floor: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    floor + 0.5 * (peak - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The factor that scales a gradient of global norm `norm` down to
/// `max_norm` (1 when already within it, as PyTorch's
/// `clip_grad_norm_`).
pub fn clip_scale(norm: f64, max_norm: Option<f64>) -> f64 {
    match max_norm {
        Some(max_norm) if norm > max_norm => max_norm / (norm + 1e-6),
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_matches_the_formula() {
        let device = Device::Cpu;
        let matrix = Var::new(&[[1.0f32, -2.0]], &device).unwrap();
        let bias = Var::new(&[0.5f32], &device).unwrap();
        let config = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let mut optimiser = AdamW::new(
            vec![("w".into(), matrix.clone()), ("b".into(), bias.clone())],
            config,
        )
        .unwrap();
        let gw = Tensor::new(&[[0.2f32, -0.4]], &device).unwrap();
        let gb = Tensor::new(&[1.0f32], &device).unwrap();
        let lr = 0.01;
        optimiser
            .step(&[Some(gw.clone()), Some(gb.clone())], 1.0, lr)
            .unwrap();
        // Step one: m̂ = g, v̂ = g², so the update is lr·g/(|g| + eps).
        let w = matrix.as_tensor().to_vec2::<f32>().unwrap();
        let expect =
            |p: f64, g: f64, decay: f64| p * (1.0 - lr * decay) - lr * g / (g.abs() + 1e-8);
        assert!((f64::from(w[0][0]) - expect(1.0, 0.2, 0.1)).abs() < 1e-6);
        assert!((f64::from(w[0][1]) - expect(-2.0, -0.4, 0.1)).abs() < 1e-6);
        let b = bias.as_tensor().to_vec1::<f32>().unwrap();
        assert!((f64::from(b[0]) - expect(0.5, 1.0, 0.0)).abs() < 1e-6);
        // Step two with a halved gradient: moments by hand.
        optimiser.step(&[Some(gw), Some(gb)], 0.5, lr).unwrap();
        let (b1, b2) = (0.9f64, 0.999f64);
        let m = b1 * 1.0 * (1.0 - b1) + (1.0 - b1) * 0.5;
        let v = b2 * (1.0 - b2) * 1.0 + (1.0 - b2) * 0.25;
        let m_hat = m / (1.0 - b1 * b1);
        let v_hat = v / (1.0 - b2 * b2);
        let expected = expect(0.5, 1.0, 0.0) - lr * m_hat / (v_hat.sqrt() + 1e-8);
        let b = bias.as_tensor().to_vec1::<f32>().unwrap();
        assert!((f64::from(b[0]) - expected).abs() < 1e-6);
        assert_eq!(optimiser.steps(), 2);
        assert_eq!(optimiser.state().unwrap().len(), 4);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        assert!((learning_rate(0, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!((learning_rate(9, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((learning_rate(10, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((learning_rate(55, 100, 10, 1.0, 0.1) - 0.55).abs() < 1e-12);
        assert!((learning_rate(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
        assert!(learning_rate(50, 100, 0, 1.0, 0.0) < 1.0);
        assert_eq!(clip_scale(0.5, Some(1.0)), 1.0);
        assert!((clip_scale(4.0, Some(1.0)) - 0.25).abs() < 1e-6);
        assert_eq!(clip_scale(4.0, None), 1.0);
    }
}
