//! The objective of §7.1, `J = L + λR`: cross-entropy `L` on the scored
//! targets plus an attention regulariser `R` weighted by `λ`.

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::model::{log_softmax, CapturedAttention};
use crate::Result;

/// The attention regulariser `R`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Regulariser {
    /// No regulariser: `R` is not computed and `J = L`.
    #[default]
    None,
    /// Mean attention entropy `-Σ_j a_ij ln a_ij` over every row of every
    /// head of every attention node (nats). Penalising it sharpens attention.
    Entropy,
    /// Mean attention mass outside the band `|i - j| <= width` (each row's
    /// mass on keys farther than `width` positions). Penalising it keeps
    /// attention local.
    Band {
        /// Half-width of the band, in positions.
        width: usize,
    },
}

impl Regulariser {
    /// Parses `none`, `entropy` or `band:W`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text {
            "none" => Ok(Self::None),
            "entropy" => Ok(Self::Entropy),
            _ => match text.strip_prefix("band:").map(str::parse::<usize>) {
                Some(Ok(width)) => Ok(Self::Band { width }),
                _ => Err(format!(
                    "`{text}` is not a regulariser; use none, entropy or band:W (W a whole number of positions)"
                )),
            },
        }
    }

    /// The name `parse` reads.
    pub fn name(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Entropy => "entropy".into(),
            Self::Band { width } => format!("band:{width}"),
        }
    }

    /// `R` over the captured attention weights: the mean over nodes of each
    /// node's mean over batch, heads and query rows. `None` for
    /// [`Regulariser::None`] or when nothing was captured.
    pub fn value(&self, attention: &[CapturedAttention]) -> Result<Option<Tensor>> {
        if *self == Self::None || attention.is_empty() {
            return Ok(None);
        }
        let mut per_node = Vec::with_capacity(attention.len());
        for captured in attention {
            let weights = &captured.weights;
            let row_values = match self {
                Self::None => unreachable!("handled above"),
                Self::Entropy => row_entropy(weights)?,
                Self::Band { width } => {
                    let (n, m) = (weights.dim(D::Minus2)?, weights.dim(D::Minus1)?);
                    let offset = m as i64 - n as i64;
                    let mut outside = vec![0f32; n * m];
                    for i in 0..n {
                        for j in 0..m {
                            // Distance from the query's own position, with
                            // keys aligned to the end as the masks are.
                            if (j as i64 - (i as i64 + offset)).unsigned_abs() as usize > *width {
                                outside[i * m + j] = 1.0;
                            }
                        }
                    }
                    let outside = Tensor::from_vec(outside, (n, m), weights.device())?
                        .to_dtype(weights.dtype())?;
                    weights.broadcast_mul(&outside)?.sum(D::Minus1)?
                }
            };
            per_node.push(row_values.mean_all()?);
        }
        let count = per_node.len() as f64;
        Ok(Some((Tensor::stack(&per_node, 0)?.sum_all()? / count)?))
    }
}

/// `-Σ_j a_ij ln a_ij` for every row; masked (zero) weights contribute
/// nothing and, because the logarithm sees `max(a, tiny)`, no NaN gradient.
pub fn row_entropy(weights: &Tensor) -> Result<Tensor> {
    let safe = weights.maximum(1e-30)?;
    Ok(weights.mul(&safe.log()?)?.sum(D::Minus1)?.neg()?)
}

/// Mean attention entropy (nats) over captured weights, as a number.
pub fn mean_entropy(attention: &[CapturedAttention]) -> Result<Option<f64>> {
    match Regulariser::Entropy.value(attention)? {
        Some(value) => Ok(Some(value.to_dtype(DType::F64)?.to_scalar::<f64>()?)),
        None => Ok(None),
    }
}

/// Cross-entropy over the scored targets: `-Σ w_t ln p(target_t) / Σ w_t`,
/// with logits `(batch, n, vocab)` and targets and weights `(batch, n)`.
///
/// One fused op (log-softmax, pick, weighted mean; its backward is
/// `softmax - onehot`) on the CPU in f32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let total = weights
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?
        .max(1.0);
    Ok(attnflow_kernels::cross_entropy(
        logits,
        targets,
        weights,
        f64::from(total),
    )?)
}

/// Per-example scores of one batch: the summed loss, the number of scored
/// targets predicted right, and the number of examples with every scored
/// target right.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    /// Sum over scored targets of `-ln p(target)`.
    pub loss_sum: f64,
    /// Scored targets.
    pub targets: usize,
    /// Scored targets whose arg-max prediction is right.
    pub correct_targets: usize,
    /// Examples.
    pub examples: usize,
    /// Examples whose every scored target is right.
    pub correct_examples: usize,
}

/// Scores logits `(batch, n, vocab)` against the batch's targets.
pub fn score(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Scores> {
    let log_probabilities = log_softmax(logits)?;
    let picked = log_probabilities
        .gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?
        .squeeze(D::Minus1)?
        .to_vec2::<f32>()?;
    let predicted = logits.argmax(D::Minus1)?.to_vec2::<u32>()?;
    let targets = targets.to_vec2::<u32>()?;
    let weights = weights.to_vec2::<f32>()?;
    let mut scores = Scores::default();
    for row in 0..targets.len() {
        let mut all_right = true;
        for position in 0..targets[row].len() {
            if weights[row][position] <= 0.0 {
                continue;
            }
            scores.targets += 1;
            scores.loss_sum -= f64::from(picked[row][position]);
            if predicted[row][position] == targets[row][position] {
                scores.correct_targets += 1;
            } else {
                all_right = false;
            }
        }
        scores.examples += 1;
        if all_right {
            scores.correct_examples += 1;
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let device = Device::Cpu;
        let logits = Tensor::new(&[[[1.0f32, 2.0, 0.5], [0.0, 0.0, 3.0]]], &device).unwrap();
        let targets = Tensor::new(&[[1u32, 0]], &device).unwrap();
        let weights = Tensor::new(&[[1.0f32, 1.0]], &device).unwrap();
        let loss = cross_entropy(&logits, &targets, &weights)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let lse = |row: [f64; 3]| row.iter().map(|x| x.exp()).sum::<f64>().ln();
        let expected = ((lse([1.0, 2.0, 0.5]) - 2.0) + (lse([0.0, 0.0, 3.0]) - 0.0)) / 2.0;
        assert!((f64::from(loss) - expected).abs() < 1e-6);
        let only_first = Tensor::new(&[[1.0f32, 0.0]], &device).unwrap();
        let loss = cross_entropy(&logits, &targets, &only_first)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((f64::from(loss) - (lse([1.0, 2.0, 0.5]) - 2.0)).abs() < 1e-6);
        let scores = score(&logits, &targets, &weights).unwrap();
        assert_eq!((scores.correct_targets, scores.correct_examples), (1, 0));
    }

    #[test]
    fn entropy_and_band_on_known_weights() {
        let device = Device::Cpu;
        // One row uniform over 4 keys (entropy ln 4), one row one-hot (0).
        let weights = Tensor::new(
            &[[[[0.25f32, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0]]]],
            &device,
        )
        .unwrap();
        let captured = vec![CapturedAttention {
            node: "attn".into(),
            block: None,
            heads: vec![0],
            weights,
        }];
        let entropy = mean_entropy(&captured).unwrap().unwrap();
        assert!((entropy - 4f64.ln() / 2.0).abs() < 1e-6);
        // n = 2, m = 4: offset 2, rows sit at key positions 2 and 3.
        // Row 0 (pos 2), band 0: mass off key 2 = 0.75; row 1 (pos 3): key 1 is off = 1.
        let band = Regulariser::Band { width: 0 }
            .value(&captured)
            .unwrap()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((band - (0.75 + 1.0) / 2.0).abs() < 1e-6);
        assert!(Regulariser::None.value(&captured).unwrap().is_none());
        assert_eq!(
            Regulariser::parse("band:3"),
            Ok(Regulariser::Band { width: 3 })
        );
        assert!(Regulariser::parse("band:x").is_err());
    }
}
