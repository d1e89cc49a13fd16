//! Gradient flow (§2.3): per-parameter gradient L2 norms, a per-layer
//! summary over training, and flags for vanishing, exploding and
//! non-finite gradients.

use std::collections::BTreeMap;

use attnflow_blueprint::Blueprint;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Result;
use attnflow_kernels::{sum_of_squares, with_values};

/// A gradient norm below this is flagged as vanishing.
pub const VANISHING: f64 = 1e-7;
/// A gradient norm above this is flagged as exploding.
pub const EXPLODING: f64 = 1e3;

/// The gradient of each parameter (`None` when the backward pass reached it
/// not at all) and its L2 norm, computed in f64 (0 when absent).
pub fn gradient_norms(
    parameters: &[(String, Var)],
    gradients: &GradStore,
) -> Result<Vec<(Option<Tensor>, f64)>> {
    parameters
        .par_iter()
        .map(|(_, var)| match gradients.get(var.as_tensor()) {
            Some(gradient) => {
                // Summed in f64, one vectorised pass over the gradient in
                // place.
                let sum = if gradient.dtype() == DType::F32 {
                    with_values(gradient, sum_of_squares)?
                } else {
                    let values = gradient
                        .flatten_all()?
                        .to_dtype(DType::F32)?
                        .to_vec1::<f32>()?;
                    sum_of_squares(&values)
                };
                Ok((Some(gradient.clone()), sum.sqrt()))
            }
            None => Ok((None, 0.0)),
        })
        .collect()
}

/// The global norm `sqrt(Σ ‖g‖²)` of per-parameter norms.
pub fn global_norm(norms: &[f64]) -> f64 {
    norms.iter().map(|norm| norm * norm).sum::<f64>().sqrt()
}

/// One line of `grad_norms.jsonl`: every parameter's gradient norm at a
/// logged step (before clipping).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientRecord {
    /// The update this gradient was used for (1-based).
    pub step: u64,
    /// The global norm before clipping.
    pub total_norm: f64,
    /// Each parameter's norm, by name.
    pub norms: BTreeMap<String, f64>,
    /// Parameters the backward pass did not reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// What a flag says about a gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// Norm below [`VANISHING`] (a parameter that is barely trained).
    Vanishing,
    /// Norm above [`EXPLODING`].
    Exploding,
    /// NaN or infinite.
    NonFinite,
    /// No gradient at all: the loss does not depend on the parameter
    /// (or an op on its path records no backward).
    Missing,
}

/// A flagged parameter: when it was first flagged and how often.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradientFlag {
    /// The parameter.
    pub parameter: String,
    /// What is wrong.
    pub kind: FlagKind,
    /// First logged step with the fault.
    pub first_step: u64,
    /// Logged steps with the fault.
    pub count: u64,
    /// The norm at the first such step (0 when missing).
    pub norm: f64,
}

/// One layer's gradient norms over training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    /// `block.layer` for repeated blocks, the node's name otherwise.
    pub layer: String,
    /// Its parameters.
    pub parameters: Vec<String>,
    /// Norms summarised (parameters × logged steps).
    pub samples: usize,
    /// Smallest norm.
    pub min: f64,
    /// Median norm.
    pub median: f64,
    /// Largest norm.
    pub max: f64,
}

/// A parameter whose gradient is zero by construction: tiny norms there
/// are rounding, not a training fault, so they are explained, not flagged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StructuralZero {
    /// The parameter.
    pub parameter: String,
    /// Why its gradient is zero.
    pub reason: String,
    /// The largest norm logged (rounding).
    pub largest_norm: f64,
}

/// The gradient-flow report of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GradientFlowReport {
    /// Logged steps summarised.
    pub logged_steps: usize,
    /// Per-layer summaries in model order (structural zeros left out).
    pub layers: Vec<LayerSummary>,
    /// Every flagged parameter.
    pub flags: Vec<GradientFlag>,
    /// Parameters whose gradient is zero by construction.
    #[serde(default)]
    pub structural_zeros: Vec<StructuralZero>,
}

/// Why a key projection's bias never learns.
pub const KEY_BIAS_REASON: &str = "the key bias adds the same q·b to every score in a query's row, and softmax ignores a constant per row, so its gradient is exactly zero (norms seen are rounding); `key_bias = false` on the attention node leaves it out";

/// Parameters whose gradient is zero by construction in `blueprint`, with
/// the reason: the key bias of attention without rotary embedding (with
/// rotary, each position rotates the bias differently, so it does learn).
pub fn structural_zeros(blueprint: &Blueprint) -> BTreeMap<String, String> {
    blueprint
        .nodes
        .iter()
        .filter_map(|node| match &node.op {
            attnflow_blueprint::Op::Attention(attention)
                if attention.key_bias && !attention.rotary =>
            {
                Some((
                    format!("{}.k_proj.bias", node.name),
                    KEY_BIAS_REASON.to_string(),
                ))
            }
            _ => None,
        })
        .collect()
}

/// The layer a parameter belongs to: the node whose name is the longest
/// prefix of the parameter's, as `block.layer` when in a repeated block.
pub fn layer_of(blueprint: &Blueprint, parameter: &str) -> String {
    let owner = blueprint
        .nodes
        .iter()
        .filter(|node| {
            parameter
                .strip_prefix(node.name.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
        })
        .max_by_key(|node| node.name.len());
    match owner {
        Some(node) => match &node.block {
            Some(position) => format!("{}.{}", position.block, position.layer),
            None => node.name.clone(),
        },
        None => parameter.to_string(),
    }
}

/// Collects logged gradient records and turns them into the report.
#[derive(Clone, Debug, Default)]
pub struct GradientFlow {
    records: Vec<GradientRecord>,
    structural: BTreeMap<String, String>,
}

impl GradientFlow {
    /// An empty collector that knows `blueprint`'s structural zeros.
    pub fn new(blueprint: &Blueprint) -> Self {
        Self {
            records: Vec::new(),
            structural: structural_zeros(blueprint),
        }
    }

    /// The flags a record raises (for deciding whether to log a step). A
    /// structural zero is never vanishing; it is still flagged if its
    /// gradient is non-finite, exploding or missing.
    pub fn flags_of(&self, record: &GradientRecord) -> Vec<(String, FlagKind, f64)> {
        let mut flags: Vec<(String, FlagKind, f64)> = record
            .norms
            .iter()
            .filter(|(name, _)| !record.missing.contains(name))
            .filter_map(|(name, norm)| {
                let kind = if !norm.is_finite() {
                    FlagKind::NonFinite
                } else if *norm < VANISHING && self.structural.contains_key(name) {
                    return None;
                } else if *norm < VANISHING {
                    FlagKind::Vanishing
                } else if *norm > EXPLODING {
                    FlagKind::Exploding
                } else {
                    return None;
                };
                Some((name.clone(), kind, *norm))
            })
            .collect();
        flags.extend(
            record
                .missing
                .iter()
                .map(|name| (name.clone(), FlagKind::Missing, 0.0)),
        );
        flags
    }

    /// Adds a logged record.
    pub fn push(&mut self, record: GradientRecord) {
        self.records.push(record);
    }

    /// The records so far.
    pub fn records(&self) -> &[GradientRecord] {
        &self.records
    }

    /// Summaries per layer (in the order of `parameters`) and all flags.
    pub fn report(&self, blueprint: &Blueprint, parameters: &[String]) -> GradientFlowReport {
        let mut layers: Vec<(String, Vec<String>, Vec<f64>)> = Vec::new();
        for name in parameters
            .iter()
            .filter(|name| !self.structural.contains_key(*name))
        {
            let layer = layer_of(blueprint, name);
            let norms = self
                .records
                .iter()
                .filter_map(|record| record.norms.get(name).copied())
                .filter(|norm| norm.is_finite());
            match layers
                .iter_mut()
                .find(|(existing, _, _)| *existing == layer)
            {
                Some((_, names, values)) => {
                    names.push(name.clone());
                    values.extend(norms);
                }
                None => layers.push((layer, vec![name.clone()], norms.collect())),
            }
        }
        let layers = layers
            .into_iter()
            .map(|(layer, parameters, mut values)| {
                values.sort_by(f64::total_cmp);
                let median = match values.len() {
                    0 => f64::NAN,
                    count if count % 2 == 1 => values[count / 2],
                    count => 0.5 * (values[count / 2 - 1] + values[count / 2]),
                };
                LayerSummary {
                    layer,
                    parameters,
                    samples: values.len(),
                    min: values.first().copied().unwrap_or(f64::NAN),
                    median,
                    max: values.last().copied().unwrap_or(f64::NAN),
                }
            })
            .collect();
        let mut flags: BTreeMap<(String, FlagKind), GradientFlag> = BTreeMap::new();
        for record in &self.records {
            for (parameter, kind, norm) in self.flags_of(record) {
                flags
                    .entry((parameter.clone(), kind))
                    .and_modify(|flag| flag.count += 1)
                    .or_insert(GradientFlag {
                        parameter,
                        kind,
                        first_step: record.step,
                        count: 1,
                        norm,
                    });
            }
        }
        let structural_zeros = self
            .structural
            .iter()
            .filter(|(parameter, _)| parameters.contains(parameter))
            .map(|(parameter, reason)| StructuralZero {
                parameter: parameter.clone(),
                reason: reason.clone(),
                largest_norm: self
                    .records
                    .iter()
                    .filter_map(|record| record.norms.get(parameter).copied())
                    .fold(0.0, f64::max),
            })
            .collect();
        GradientFlowReport {
            logged_steps: self.records.len(),
            layers,
            flags: flags.into_values().collect(),
            structural_zeros,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attention_blueprint(attributes: &str) -> Blueprint {
        Blueprint::from_text(
            "a.toml",
            &format!("[dims]\nb = 1\ns = 4\nd = 4\n[[node]]\nname = \"x\"\nop = \"input\"\nshape = [\"b\", \"s\", \"d\"]\n[[node]]\nname = \"attn\"\nop = \"attention\"\ninput = \"x\"\nheads = 2\n{attributes}\n"),
            &[],
        )
        .unwrap()
    }

    #[test]
    fn the_key_bias_is_a_structural_zero_not_a_vanishing_gradient() {
        let names: Vec<String> = ["attn.k_proj.bias", "attn.q_proj.bias", "attn.q_proj.weight"]
            .iter()
            .map(|name| name.to_string())
            .collect();
        let record = GradientRecord {
            step: 1,
            total_norm: 1.0,
            norms: names.iter().cloned().zip([1e-9, 1e-9, 0.5]).collect(),
            missing: vec![],
        };
        let mut flow = GradientFlow::new(&attention_blueprint(""));
        flow.push(record.clone());
        let report = flow.report(&attention_blueprint(""), &names);
        let flagged: Vec<&str> = report
            .flags
            .iter()
            .map(|flag| flag.parameter.as_str())
            .collect();
        // The query bias is a real vanishing gradient; the key bias is not.
        assert_eq!(flagged, ["attn.q_proj.bias"]);
        assert_eq!(report.structural_zeros.len(), 1);
        assert_eq!(report.structural_zeros[0].parameter, "attn.k_proj.bias");
        assert_eq!(report.structural_zeros[0].largest_norm, 1e-9);
        assert!(report.structural_zeros[0]
            .reason
            .contains("softmax ignores a constant per row"));
        assert_eq!(report.layers[0].min, 1e-9);
        assert_eq!(report.layers[0].samples, 2);
        // With rotary embedding each position rotates the bias differently:
        // it learns, so a tiny norm there is flagged.
        let rotary = attention_blueprint("rotary = true");
        let flow = GradientFlow::new(&rotary);
        assert!(flow
            .flags_of(&record)
            .iter()
            .any(|(name, kind, _)| name == "attn.k_proj.bias" && *kind == FlagKind::Vanishing));
        // Without a key bias there is nothing to explain.
        assert!(structural_zeros(&attention_blueprint("key_bias = false")).is_empty());
    }

    #[test]
    fn flags_and_medians() {
        let blueprint = Blueprint::from_text(
            "t.toml",
            "[dims]\nb = 1\ns = 4\nd = 4\n[[node]]\nname = \"x\"\nop = \"input\"\nshape = [\"b\", \"s\", \"d\"]\n[[block]]\nname = \"layer\"\nrepeat = 2\ninput = \"x\"\noutput = \"lin\"\n[[block.node]]\nname = \"lin\"\nop = \"linear\"\ninput = \"in\"\nout = 4\n",
            &[],
        )
        .unwrap();
        assert_eq!(layer_of(&blueprint, "layer.1.lin.weight"), "layer.1");
        let mut flow = GradientFlow::default();
        let names = [
            "layer.0.lin.weight",
            "layer.0.lin.bias",
            "layer.1.lin.weight",
        ];
        for (step, values) in [(1, [1.0, 1e-9, 2.0]), (2, [3.0, 5.0, f64::NAN])] {
            flow.push(GradientRecord {
                step,
                total_norm: 0.0,
                norms: names.iter().map(|n| n.to_string()).zip(values).collect(),
                missing: vec![],
            });
        }
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let report = flow.report(&blueprint, &names);
        assert_eq!(report.layers.len(), 2);
        assert_eq!(report.layers[0].layer, "layer.0");
        assert_eq!(report.layers[0].min, 1e-9);
        assert_eq!(report.layers[0].median, 2.0);
        assert_eq!(report.layers[0].max, 5.0);
        assert_eq!(report.layers[1].samples, 1);
        let kinds: Vec<_> = report
            .flags
            .iter()
            .map(|f| (f.parameter.as_str(), f.kind, f.first_step))
            .collect();
        assert!(kinds.contains(&("layer.0.lin.bias", FlagKind::Vanishing, 1)));
        assert!(kinds.contains(&("layer.1.lin.weight", FlagKind::NonFinite, 2)));
        assert_eq!(global_norm(&[3.0, 4.0]), 5.0);
    }
}
