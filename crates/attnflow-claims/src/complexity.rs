//! §9: attention costs `O(n²d)` time. Decided from the FLOPs attnflow's
//! blueprint account counts and, when asked, from timing the exact engine.

use std::time::Instant;

use attnflow_blueprint::{scale, CostOptions, Fit, Spec};
use attnflow_core::analysis::random::stream;
use candle_core::{Device, Tensor};

use crate::{ClaimCheck, ClaimStatus, Engines};

/// One attention layer over `seq` tokens of width 16: the part of the
/// account that grows with n² dominates the projections' n·d².
const ATTENTION_SPEC: &str = r#"
[model]
name = "one-attention-layer"
[dims]
seq = 512
[[node]]
name = "x"
op = "input"
shape = [1, "seq", 16]
[[node]]
name = "attention"
op = "attention"
input = "x"
heads = 1
"#;

const COUNTED_LENGTHS: [u64; 4] = [1024, 2048, 4096, 8192];

/// The evidence on §9.
#[derive(Clone, Debug, PartialEq)]
pub struct ComplexityEvidence {
    /// The exponent of n in the attention node's counted forward FLOPs.
    pub counted: Option<Fit>,
    /// The exponent of n fitted to the exact engine's measured times.
    pub timed: Option<Fit>,
    /// `(n, seconds)`, best of 3.
    pub timings: Vec<(usize, f64)>,
    /// Whether timing was asked for.
    pub timing_asked: bool,
}

impl ComplexityEvidence {
    /// The rule, as printed.
    pub const RULE: &'static str = "holds if the exponent of n in the attention FLOPs counted by the blueprint account (n = 1024 … 8192, d = 16) lies in [1.8, 2.2] and, when timed, the exponent fitted to the exact engine's times lies in [1.6, 2.4]; false if either lies outside; inconclusive if the count fails or the timing is not measurable";

    /// Counts, and times when `lengths` is not empty.
    pub fn gather(engines: &dyn Engines, lengths: &[usize]) -> Self {
        let counted = Spec::parse("one-attention-layer.toml", ATTENTION_SPEC)
            .ok()
            .and_then(|spec| {
                scale(
                    &spec,
                    "seq",
                    &COUNTED_LENGTHS,
                    &[],
                    CostOptions::default(),
                    |_| {},
                )
                .ok()
            })
            .and_then(|report| report.attention);
        let timings = time_attention(engines, lengths);
        let points: Vec<(f64, f64)> = timings.iter().map(|&(n, s)| (n as f64, s)).collect();
        Self {
            counted,
            timed: attnflow_blueprint::scale::fit_exponent(&points),
            timings,
            timing_asked: !lengths.is_empty(),
        }
    }

    /// The verdict by [`Self::RULE`].
    pub fn decide(&self) -> ClaimStatus {
        let Some(counted) = self.counted else {
            return ClaimStatus::Inconclusive;
        };
        let counted_ok = (1.8..=2.2).contains(&counted.exponent);
        let timed_ok = match (self.timing_asked, self.timed) {
            (false, _) => true,
            (true, Some(fit)) => (1.6..=2.4).contains(&fit.exponent),
            (true, None) => return ClaimStatus::Inconclusive,
        };
        if counted_ok && timed_ok {
            ClaimStatus::Holds
        } else {
            ClaimStatus::False
        }
    }

    /// The check, with its decisive numbers.
    pub fn check(&self) -> ClaimCheck {
        let counted = self.counted.map_or("not countable".to_string(), |fit| {
            format!("{:.3}", fit.exponent)
        });
        let timed = if self.timing_asked {
            let timings: Vec<String> = self
                .timings
                .iter()
                .map(|(n, seconds)| format!("n = {n}: {:.2} ms", seconds * 1e3))
                .collect();
            format!(
                "; measured exponent of the exact engine {} ({}; d = 64, best of 3; timing depends on this machine)",
                self.timed.map_or("not measurable".to_string(), |fit| format!("{:.2}", fit.exponent)),
                timings.join(", ")
            )
        } else {
            "; not timed".to_string()
        };
        ClaimCheck {
            id: "complexity",
            section: "§9",
            statement: "attention costs O(n²d) time",
            rule: Self::RULE,
            status: self.decide(),
            finding: "time grows as n² for fixed d (the fused kernel changes memory, not the n² time)".into(),
            evidence: format!(
                "counted exponent of n in one attention layer's FLOPs (blueprint account, n = 1024 … 8192): {counted}{timed}"
            ),
        }
    }
}

/// Best-of-3 time of the engine's attention at each length (d = 64).
fn time_attention(engines: &dyn Engines, lengths: &[usize]) -> Vec<(usize, f64)> {
    let d = 64;
    let mut points = Vec::new();
    for &n in lengths {
        let make = |label: &str| -> candle_core::Result<Tensor> {
            let mut rng = stream(n as u64, label);
            let values: Vec<f32> = rng
                .normals(n * d, 1.0)
                .into_iter()
                .map(|v| v as f32)
                .collect();
            Tensor::from_vec(values, (n, d), &Device::Cpu)
        };
        let Ok((q, k, v)) =
            (|| Ok::<_, candle_core::Error>((make("q")?, make("k")?, make("v")?)))()
        else {
            continue;
        };
        // One untimed run first: thread pools and allocations warm up.
        if engines.attention(&q, &k, &v).is_err() {
            continue;
        }
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let start = Instant::now();
            if engines.attention(&q, &k, &v).is_err() {
                break;
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        if best.is_finite() && best > 0.0 {
            points.push((n, best));
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shipped;

    #[test]
    fn counted_flops_grow_as_n_squared() {
        let evidence = ComplexityEvidence::gather(&Shipped, &[]);
        let counted = evidence.counted.expect("the spec counts");
        assert!((counted.exponent - 2.0).abs() < 0.1, "{counted:?}");
        assert_eq!(evidence.decide(), ClaimStatus::Holds);
        assert!(evidence.check().evidence.contains("not timed"));
    }

    #[test]
    fn timing_decides_too() {
        let mut evidence = ComplexityEvidence::gather(&Shipped, &[]);
        evidence.timing_asked = true;
        // Linear time would refute the claim; quadratic time confirms it.
        for (times, status) in [
            ([1.0, 2.0, 4.0], ClaimStatus::False),
            ([1.0, 4.0, 16.0], ClaimStatus::Holds),
        ] {
            let points: Vec<(f64, f64)> = [100.0, 200.0, 400.0].into_iter().zip(times).collect();
            evidence.timed = attnflow_blueprint::scale::fit_exponent(&points);
            assert_eq!(evidence.decide(), status);
        }
        evidence.timed = None;
        assert_eq!(evidence.decide(), ClaimStatus::Inconclusive);
    }

    #[test]
    fn the_timed_check_reports_its_timings() {
        let evidence = ComplexityEvidence::gather(&Shipped, &[64, 128]);
        let text = evidence.check().evidence;
        assert!(
            text.contains("n = 64") && text.contains("n = 128"),
            "{text}"
        );
    }
}
