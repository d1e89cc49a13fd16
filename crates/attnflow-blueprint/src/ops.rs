//! The op set: what each op's attributes mean, which it accepts, and how it
//! maps input shapes to its output shape.
//!
//! Shapes follow the usual layout: token tensors are `[batch, seq]` indices,
//! activations `[batch, seq, features]`, images `[batch, channels, height,
//! width]`. Weight matrices are `[out, in]`, as in PyTorch, so that a tie
//! between an embedding `[vocab, d]` and an output head `d -> vocab` is a
//! plain shape equality.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Serialize;

use crate::error::SpecErrorKind;
use crate::expr::{Expr, ExprError};
use crate::spec::{AttrValue, NodeSpec, Sp};

/// Whether a tensor holds real numbers or integer indices (token ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Element {
    /// Real numbers, stored in the account's chosen dtype.
    Float,
    /// Integer indices (token ids), stored as 64-bit integers.
    Index,
}

/// How positions are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionalKind {
    /// A learned table `[max_len, d]` added to the input.
    Learned,
    /// The fixed sine/cosine table of Vaswani et al. added to the input.
    Sinusoidal,
    /// Rotary embedding (Su et al.): pairs of features rotated by a
    /// position-dependent angle.
    Rotary,
}

/// Element-wise nonlinearities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `x·Φ(x)` with the exact error function.
    Gelu,
    /// GELU with the tanh approximation (GPT-2's `gelu_new`).
    GeluTanh,
    /// `x·σ(x)` (SwiGLU's gate in Llama).
    Silu,
    /// `σ(x)`.
    Sigmoid,
    /// `tanh(x)` (BERT's pooler).
    Tanh,
}

impl Activation {
    const NAMES: &'static [&'static str] =
        &["relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh"];

    /// The name used in specs.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Silu => "silu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        }
    }

    fn from_name(name: &str) -> Option<Activation> {
        Some(match name {
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            "gelu_tanh" => Activation::GeluTanh,
            "silu" | "swish" => Activation::Silu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            _ => return None,
        })
    }
}

/// Which query/key pairs attention may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mask {
    /// Every query sees every key.
    None,
    /// Query `i` sees keys `0..=i` (top-left aligned, as PyTorch's SDPA,
    /// when query and key lengths differ).
    Causal,
    /// Query `i` sees the `size` most recent keys up to and including `i`.
    Window {
        /// Number of keys visible to each query, itself included.
        size: u64,
    },
}

/// Multi-head attention's resolved attributes (§2.2, §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AttentionOp {
    /// Query heads `h`.
    pub heads: u64,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: u64,
    /// Features per head `d_k`.
    pub head_dim: u64,
    /// Which entries of the score matrix are used.
    pub mask: Mask,
    /// Whether the query, key and value projections carry biases.
    pub bias: bool,
    /// Whether the key projection carries one (default: `bias`). Its
    /// gradient is zero by construction without rotary embedding (softmax
    /// ignores a constant per row), so Llama-style blueprints leave it out.
    pub key_bias: bool,
    /// Whether the output projection carries a bias (Qwen2 biases only
    /// q, k and v); `bias` unless the spec says otherwise.
    pub output_bias: bool,
    /// Output features (the output projection's width).
    pub out: u64,
    /// Whether queries and keys are rotated (rotary position embedding).
    pub rotary: bool,
    /// Cross attention: keys and values come from a second input.
    pub cross: bool,
}

/// How a sequence is reduced to one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// Average over positions.
    Mean,
    /// Take the first position (BERT's `[CLS]`, ViT's class token).
    First,
}

/// A node's operation with its attributes resolved to numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A graph input of a declared shape.
    Input {
        /// The declared shape.
        shape: Vec<u64>,
        /// Indices or real numbers.
        element: Element,
    },
    /// Table lookup `[vocab, dim]`.
    Embedding {
        /// Rows of the table.
        vocab: u64,
        /// Width of each row.
        dim: u64,
        /// The node whose weight this one shares.
        tie: Option<String>,
    },
    /// Position information added to or rotated into the input.
    Positional {
        /// Which encoding.
        kind: PositionalKind,
        /// Longest sequence the table covers (learned tables only).
        max_len: Option<u64>,
    },
    /// `y = x Wᵀ + b`.
    Linear {
        /// Output features.
        out: u64,
        /// Whether there is a bias.
        bias: bool,
        /// The node whose weight this one shares.
        tie: Option<String>,
    },
    /// Multi-head attention.
    Attention(AttentionOp),
    /// Layer normalisation over the last axis.
    LayerNorm {
        /// Added to the variance.
        eps: f64,
        /// Whether there is a learned shift (the scale is always there).
        bias: bool,
    },
    /// Root-mean-square normalisation over the last axis.
    RmsNorm {
        /// Added to the mean square.
        eps: f64,
    },
    /// Two-layer position-wise network, optionally gated (GLU variants).
    FeedForward {
        /// Hidden width.
        hidden: u64,
        /// The nonlinearity.
        activation: Activation,
        /// `act(x W_g) ⊙ (x W_u)` instead of `act(x W_u)`.
        gated: bool,
        /// Whether the projections carry biases.
        bias: bool,
        /// Output features.
        out: u64,
    },
    /// An element-wise nonlinearity.
    Activation {
        /// Which one.
        function: Activation,
    },
    /// Element-wise sum of equal shapes (residual connections).
    Add,
    /// Concatenation along one axis.
    Concat {
        /// The axis, normalised to be non-negative.
        axis: usize,
    },
    /// Dropout (costs nothing at inference).
    Dropout {
        /// Drop probability.
        p: f64,
    },
    /// Softmax along one axis.
    Softmax {
        /// The axis, normalised to be non-negative.
        axis: usize,
    },
    /// Reduces the sequence axis.
    Pool {
        /// Mean or first position.
        kind: PoolKind,
    },
    /// The output projection (language-model or classifier head).
    Head {
        /// Output features (vocabulary or classes).
        out: u64,
        /// Whether there is a bias.
        bias: bool,
        /// The node whose weight this one shares.
        tie: Option<String>,
    },
    /// A batched matrix product of two inputs.
    Matmul {
        /// Multiply by the transpose of the second input.
        transpose_b: bool,
    },
    /// Non-overlapping `patch × patch` convolution turning an image into tokens (ViT).
    PatchEmbedding {
        /// Patch side in pixels.
        patch: u64,
        /// Token width.
        dim: u64,
        /// Whether there is a bias.
        bias: bool,
    },
    /// Prepends one learned token to the sequence (ViT's `[class]`).
    ClassToken,
}

/// The op names a spec may use.
pub const OP_NAMES: &[&str] = &[
    "input",
    "embedding",
    "positional",
    "linear",
    "attention",
    "layer_norm",
    "rms_norm",
    "feed_forward",
    "activation",
    "add",
    "concat",
    "dropout",
    "softmax",
    "pool",
    "head",
    "matmul",
    "patch_embedding",
    "class_token",
];

/// The largest tensor (in elements) and the largest size attnflow accepts:
/// 2^48 (about 2.8·10^14). Far beyond any real model, and small enough that
/// every product in the account (elements × size × a small constant, summed
/// over nodes) fits in 128 bits.
pub const MAX_ELEMENTS: u64 = 1 << 48;

/// Keys every node may carry besides its op's attributes.
const COMMON_KEYS: &[&str] = &["doc"];

/// The attributes op `op` accepts (besides `name`, `op`, `input`, `doc`).
pub fn allowed_attributes(op: &str) -> &'static [&'static str] {
    match op {
        "input" => &["shape", "dtype"],
        "embedding" => &["vocab", "dim", "tie"],
        "positional" => &["kind", "max_len"],
        "linear" | "head" => &["out", "bias", "tie"],
        "attention" => &[
            "heads",
            "kv_heads",
            "head_dim",
            "mask",
            "window",
            "bias",
            "key_bias",
            "output_bias",
            "out",
            "rotary",
        ],
        "layer_norm" => &["eps", "bias"],
        "rms_norm" => &["eps"],
        "feed_forward" => &["hidden", "activation", "gated", "bias", "out"],
        "activation" => &["function"],
        "concat" | "softmax" => &["axis"],
        "dropout" => &["p"],
        "pool" => &["kind"],
        "matmul" => &["transpose_b"],
        "patch_embedding" => &["patch", "dim", "bias"],
        _ => &[],
    }
}

/// A fault found while resolving one node: where and what. The caller adds
/// the node's name and turns the span into file, line and column.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Byte range of the offending text.
    pub span: Range<usize>,
    /// What is wrong.
    pub kind: SpecErrorKind,
}

impl Fault {
    fn new(span: Range<usize>, kind: SpecErrorKind) -> Self {
        Self { span, kind }
    }
}

/// A shape and element type flowing along an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorType {
    /// Sizes of each axis.
    pub shape: Vec<u64>,
    /// Indices or reals.
    pub element: Element,
}

/// Turns a spec value (integer or expression string) into a positive size.
pub fn resolve_size(value: &Sp<AttrValue>, dims: &BTreeMap<String, i128>) -> Result<u64, Fault> {
    let span = value.span.clone();
    let (text, number) = match &value.value {
        AttrValue::Integer(number) => (number.to_string(), *number),
        AttrValue::Float(number) => {
            return Err(Fault::new(
                span,
                SpecErrorKind::NonInteger {
                    expression: number.to_string(),
                    message: "sizes are whole numbers".into(),
                },
            ))
        }
        AttrValue::Text(text) => {
            let expr = Expr::parse(text).map_err(|error| expr_fault(&span, text, error, dims))?;
            let number = expr
                .eval(dims)
                .map_err(|error| expr_fault(&span, text, error, dims))?;
            (text.clone(), number)
        }
        other => {
            return Err(Fault::new(
                span,
                SpecErrorKind::WrongType {
                    field: "size".into(),
                    expected: "an integer or a dimension expression".into(),
                    found: other.type_name().into(),
                },
            ))
        }
    };
    if number <= 0 {
        return Err(Fault::new(
            span,
            SpecErrorKind::NonInteger {
                expression: text,
                message: format!("evaluates to {number}; sizes must be positive"),
            },
        ));
    }
    match u64::try_from(number) {
        Ok(size) if size <= MAX_ELEMENTS => Ok(size),
        _ => Err(Fault::new(
            span,
            SpecErrorKind::Overflow { expression: text },
        )),
    }
}

/// Converts an expression error into a fault at `span`.
pub fn expr_fault(
    span: &Range<usize>,
    text: &str,
    error: ExprError,
    dims: &BTreeMap<String, i128>,
) -> Fault {
    let kind = match error {
        ExprError::Syntax(message) => SpecErrorKind::ExpressionSyntax {
            expression: text.to_string(),
            message,
        },
        ExprError::UnknownDimension(name) => SpecErrorKind::UnknownDimension {
            hint: suggestion(&name, dims.keys().map(String::as_str)),
            name,
            expression: text.to_string(),
        },
        ExprError::NonInteger(literal) => SpecErrorKind::NonInteger {
            expression: text.to_string(),
            message: format!("`{literal}` is fractional"),
        },
        ExprError::NotDivisible {
            numerator,
            denominator,
        } => SpecErrorKind::NotDivisible {
            expression: text.to_string(),
            numerator,
            denominator,
        },
        ExprError::Overflow => SpecErrorKind::Overflow {
            expression: text.to_string(),
        },
    };
    Fault::new(span.clone(), kind)
}

/// `" (did you mean `x`?)"` for the closest candidate by edit distance, or "".
pub fn suggestion<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 3))
        .min();
    best.map(|(_, candidate)| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default()
}

fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous: Vec<usize> = (0..=right.len()).collect();
    for (row, left_char) in left.chars().enumerate() {
        let mut current = vec![row + 1];
        for (column, right_char) in right.iter().enumerate() {
            let substitution = previous[column] + usize::from(left_char != *right_char);
            current.push(
                substitution
                    .min(previous[column + 1] + 1)
                    .min(current[column] + 1),
            );
        }
        previous = current;
    }
    previous[right.len()]
}

/// Reads a node's attributes with the dims resolved.
struct Attributes<'a> {
    node: &'a NodeSpec,
    dims: &'a BTreeMap<String, i128>,
}

impl Attributes<'_> {
    fn get(&self, key: &str) -> Option<&Sp<AttrValue>> {
        self.node.attribute(key).map(|attribute| &attribute.value)
    }

    fn wrong_type(&self, key: &str, value: &Sp<AttrValue>, expected: &str) -> Fault {
        Fault::new(
            value.span.clone(),
            SpecErrorKind::WrongType {
                field: key.to_string(),
                expected: expected.to_string(),
                found: value.value.type_name().to_string(),
            },
        )
    }

    fn size(&self, key: &str) -> Result<Option<u64>, Fault> {
        self.get(key)
            .map(|value| resolve_size(value, self.dims))
            .transpose()
    }

    fn required_size(&self, key: &str) -> Result<u64, Fault> {
        self.size(key)?.ok_or_else(|| self.missing(key))
    }

    fn missing(&self, key: &str) -> Fault {
        Fault::new(
            self.node.name.span.clone(),
            SpecErrorKind::Missing {
                field: key.to_string(),
                context: format!(" (op `{}` needs it)", self.node.op.value),
            },
        )
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool, Fault> {
        match self.get(key) {
            None => Ok(default),
            Some(Sp {
                value: AttrValue::Bool(flag),
                ..
            }) => Ok(*flag),
            Some(value) => Err(self.wrong_type(key, value, "true or false")),
        }
    }

    fn real(&self, key: &str, default: f64) -> Result<f64, Fault> {
        match self.get(key) {
            None => Ok(default),
            Some(Sp {
                value: AttrValue::Float(number),
                ..
            }) => Ok(*number),
            Some(Sp {
                value: AttrValue::Integer(number),
                ..
            }) => Ok(*number as f64),
            Some(value) => Err(self.wrong_type(key, value, "a number")),
        }
    }

    fn integer(&self, key: &str, default: i128) -> Result<i128, Fault> {
        match self.get(key) {
            None => Ok(default),
            Some(Sp {
                value: AttrValue::Integer(number),
                ..
            }) => Ok(*number),
            Some(value) => Err(self.wrong_type(key, value, "an integer")),
        }
    }

    fn text(&self, key: &str) -> Result<Option<Sp<String>>, Fault> {
        match self.get(key) {
            None => Ok(None),
            Some(Sp {
                value: AttrValue::Text(text),
                span,
            }) => Ok(Some(Sp {
                value: text.clone(),
                span: span.clone(),
            })),
            Some(value) => Err(self.wrong_type(key, value, "a string")),
        }
    }

    fn choice(
        &self,
        key: &str,
        choices: &[&str],
        default: &str,
    ) -> Result<(String, Range<usize>), Fault> {
        match self.text(key)? {
            None => Ok((default.to_string(), self.node.name.span.clone())),
            Some(text) if choices.contains(&text.value.as_str()) => Ok((text.value, text.span)),
            Some(text) => Err(Fault::new(
                text.span,
                SpecErrorKind::InvalidAttribute {
                    attribute: key.to_string(),
                    message: format!("`{}` is not one of {}", text.value, choices.join(", ")),
                },
            )),
        }
    }
}

fn axis(value: i128, rank: usize, span: Range<usize>) -> Result<usize, Fault> {
    let rank_signed = rank as i128;
    let normalised = if value < 0 {
        value + rank_signed
    } else {
        value
    };
    if normalised < 0 || normalised >= rank_signed {
        return Err(Fault::new(
            span,
            SpecErrorKind::InvalidAttribute {
                attribute: "axis".into(),
                message: format!("axis {value} is out of range for a rank-{rank} input"),
            },
        ));
    }
    Ok(normalised as usize)
}

fn shape_text(shape: &[u64]) -> String {
    let parts: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Checks the attribute keys of `node` against its op. Returns the op's
/// allowed list on success so the caller need not look it up again.
pub fn check_attribute_names(node: &NodeSpec) -> Result<(), Fault> {
    if !OP_NAMES.contains(&node.op.value.as_str()) {
        return Err(Fault::new(
            node.op.span.clone(),
            SpecErrorKind::UnknownOp {
                op: format!(
                    "{}{}",
                    node.op.value,
                    suggestion(&node.op.value, OP_NAMES.iter().copied())
                ),
                known: OP_NAMES.join(", "),
            },
        ));
    }
    let allowed = allowed_attributes(&node.op.value);
    for attribute in &node.attributes {
        let key = attribute.key.value.as_str();
        if !allowed.contains(&key) && !COMMON_KEYS.contains(&key) {
            let mut listed: Vec<&str> = vec!["name", "op", "input"];
            listed.extend_from_slice(allowed);
            listed.extend_from_slice(COMMON_KEYS);
            return Err(Fault::new(
                attribute.key.span.clone(),
                SpecErrorKind::UnknownAttribute {
                    attribute: format!("{key}{}", suggestion(key, allowed.iter().copied())),
                    op: node.op.value.clone(),
                    allowed: listed.join(", "),
                },
            ));
        }
    }
    Ok(())
}

/// Resolves `node`'s op against the dims and its inputs' types, returning
/// the op and its output type. `input_spans[i]` locates input `i` for
/// messages about it.
pub fn resolve(
    node: &NodeSpec,
    dims: &BTreeMap<String, i128>,
    inputs: &[TensorType],
    input_spans: &[Range<usize>],
) -> Result<(Op, TensorType), Fault> {
    check_attribute_names(node)?;
    let attributes = Attributes { node, dims };
    let op_name = node.op.value.as_str();
    let node_span = node.name.span.clone();
    let count_fault = |expected: &str| {
        Fault::new(
            input_spans
                .first()
                .cloned()
                .unwrap_or_else(|| node_span.clone()),
            SpecErrorKind::InputCount {
                op: op_name.to_string(),
                expected: expected.to_string(),
                found: inputs.len(),
            },
        )
    };
    let mismatch = |message: String| {
        Fault::new(
            node.op.span.clone(),
            SpecErrorKind::ShapeMismatch {
                op: op_name.to_string(),
                message,
            },
        )
    };
    let expected_inputs = match op_name {
        "input" => (0, 0, "no"),
        "add" | "concat" => (2, usize::MAX, "two or more"),
        "attention" => (1, 2, "one (self attention) or two (query, memory)"),
        "matmul" => (2, 2, "two"),
        _ => (1, 1, "one"),
    };
    if inputs.len() < expected_inputs.0 || inputs.len() > expected_inputs.1 {
        return Err(count_fault(expected_inputs.2));
    }
    let float_input = |index: usize| -> Result<&TensorType, Fault> {
        let input = &inputs[index];
        if input.element == Element::Index {
            return Err(mismatch(format!(
                "input {} holds indices (token ids); `{op_name}` needs real numbers (add an embedding first)",
                shape_text(&input.shape)
            )));
        }
        if input.shape.is_empty() {
            return Err(mismatch("input is a scalar".into()));
        }
        Ok(input)
    };
    let with_last = |shape: &[u64], last: u64| {
        let mut out = shape.to_vec();
        if let Some(end) = out.last_mut() {
            *end = last;
        }
        out
    };
    let float = |shape: Vec<u64>| TensorType {
        shape,
        element: Element::Float,
    };

    let resolved = match op_name {
        "input" => {
            let shape_value = attributes
                .get("shape")
                .ok_or_else(|| attributes.missing("shape"))?;
            let AttrValue::List(items) = &shape_value.value else {
                return Err(attributes.wrong_type("shape", shape_value, "an array of sizes"));
            };
            if items.is_empty() {
                return Err(attributes.wrong_type(
                    "shape",
                    shape_value,
                    "a non-empty array of sizes",
                ));
            }
            let shape = items
                .iter()
                .map(|item| resolve_size(item, dims))
                .collect::<Result<Vec<u64>, Fault>>()?;
            let (dtype, _) = attributes.choice("dtype", &["float", "index"], "float")?;
            let element = if dtype == "index" {
                Element::Index
            } else {
                Element::Float
            };
            (
                Op::Input {
                    shape: shape.clone(),
                    element,
                },
                TensorType { shape, element },
            )
        }
        "embedding" => {
            let vocab = attributes.required_size("vocab")?;
            let dim = attributes.required_size("dim")?;
            let input = &inputs[0];
            if input.element != Element::Index {
                return Err(mismatch(format!(
                    "embedding looks up indices, but its input {} holds real numbers",
                    shape_text(&input.shape)
                )));
            }
            let mut shape = input.shape.clone();
            shape.push(dim);
            (
                Op::Embedding {
                    vocab,
                    dim,
                    tie: attributes.text("tie")?.map(|tie| tie.value),
                },
                float(shape),
            )
        }
        "positional" => {
            let input = float_input(0)?;
            let (kind, _) =
                attributes.choice("kind", &["learned", "sinusoidal", "rotary"], "learned")?;
            let kind = match kind.as_str() {
                "learned" => PositionalKind::Learned,
                "sinusoidal" => PositionalKind::Sinusoidal,
                _ => PositionalKind::Rotary,
            };
            if input.shape.len() < 2 {
                return Err(mismatch(format!(
                    "needs [.., seq, features], got {}",
                    shape_text(&input.shape)
                )));
            }
            let seq = input.shape[input.shape.len() - 2];
            let max_len = attributes.size("max_len")?;
            if kind == PositionalKind::Learned && max_len.is_none() {
                return Err(attributes.missing("max_len"));
            }
            if let Some(max_len) = max_len {
                if seq > max_len {
                    return Err(mismatch(format!(
                        "sequence length {seq} exceeds max_len {max_len} of the position table"
                    )));
                }
            }
            if kind == PositionalKind::Rotary && input.shape[input.shape.len() - 1] % 2 != 0 {
                return Err(mismatch(
                    "rotary embedding rotates feature pairs; the width must be even".into(),
                ));
            }
            (Op::Positional { kind, max_len }, float(input.shape.clone()))
        }
        "linear" | "head" => {
            let input = float_input(0)?;
            let out = attributes.required_size("out")?;
            let bias = attributes.flag("bias", true)?;
            let tie = attributes.text("tie")?.map(|tie| tie.value);
            let op = if op_name == "linear" {
                Op::Linear { out, bias, tie }
            } else {
                Op::Head { out, bias, tie }
            };
            (op, float(with_last(&input.shape, out)))
        }
        "attention" => {
            let query = float_input(0)?;
            let memory = if inputs.len() == 2 {
                float_input(1)?
            } else {
                query
            };
            let rank = query.shape.len();
            if rank < 2 || memory.shape.len() != rank {
                return Err(mismatch(format!(
                    "needs [.., seq, features] inputs of equal rank, got {} and {}",
                    shape_text(&query.shape),
                    shape_text(&memory.shape)
                )));
            }
            if query.shape[..rank - 2] != memory.shape[..rank - 2] {
                return Err(mismatch(format!(
                    "batch axes differ between query {} and memory {}",
                    shape_text(&query.shape),
                    shape_text(&memory.shape)
                )));
            }
            let width = query.shape[rank - 1];
            let heads = attributes.required_size("heads")?;
            let kv_heads = attributes.size("kv_heads")?.unwrap_or(heads);
            if heads % kv_heads != 0 {
                let span = attributes
                    .get("kv_heads")
                    .map_or(node_span.clone(), |value| value.span.clone());
                return Err(Fault::new(
                    span,
                    SpecErrorKind::NotDivisible {
                        expression: "heads / kv_heads".into(),
                        numerator: heads.into(),
                        denominator: kv_heads.into(),
                    },
                ));
            }
            let head_dim = match attributes.size("head_dim")? {
                Some(head_dim) => head_dim,
                None => {
                    if width % heads != 0 {
                        let span = attributes
                            .get("heads")
                            .map_or(node_span.clone(), |value| value.span.clone());
                        return Err(Fault::new(
                            span,
                            SpecErrorKind::NotDivisible {
                                expression: "input width / heads (the default head_dim)".into(),
                                numerator: width.into(),
                                denominator: heads.into(),
                            },
                        ));
                    }
                    width / heads
                }
            };
            let (mask_name, _) =
                attributes.choice("mask", &["none", "causal", "window"], "none")?;
            let window = attributes.size("window")?;
            let mask = match (mask_name.as_str(), window) {
                ("window", Some(size)) => Mask::Window { size },
                ("window", None) => return Err(attributes.missing("window")),
                (_, Some(_)) => {
                    let value = attributes
                        .get("window")
                        .map_or(node_span.clone(), |value| value.span.clone());
                    return Err(Fault::new(
                        value,
                        SpecErrorKind::InvalidAttribute {
                            attribute: "window".into(),
                            message: "only applies with mask = \"window\"".into(),
                        },
                    ));
                }
                ("causal", None) => Mask::Causal,
                _ => Mask::None,
            };
            let rotary = attributes.flag("rotary", false)?;
            if rotary && head_dim % 2 != 0 {
                return Err(mismatch(format!(
                    "rotary embedding rotates feature pairs; head_dim {head_dim} is odd"
                )));
            }
            let out = attributes.size("out")?.unwrap_or(width);
            let bias = attributes.flag("bias", true)?;
            let op = AttentionOp {
                heads,
                kv_heads,
                head_dim,
                mask,
                bias,
                key_bias: attributes.flag("key_bias", bias)?,
                output_bias: attributes.flag("output_bias", bias)?,
                out,
                rotary,
                cross: inputs.len() == 2,
            };
            (Op::Attention(op), float(with_last(&query.shape, out)))
        }
        "layer_norm" => {
            let input = float_input(0)?;
            let op = Op::LayerNorm {
                eps: attributes.real("eps", 1e-5)?,
                bias: attributes.flag("bias", true)?,
            };
            (op, float(input.shape.clone()))
        }
        "rms_norm" => {
            let input = float_input(0)?;
            let op = Op::RmsNorm {
                eps: attributes.real("eps", 1e-6)?,
            };
            (op, float(input.shape.clone()))
        }
        "feed_forward" => {
            let input = float_input(0)?;
            let (function, span) = attributes.choice("activation", Activation::NAMES, "gelu")?;
            let activation = Activation::from_name(&function).ok_or_else(|| {
                Fault::new(
                    span,
                    SpecErrorKind::InvalidAttribute {
                        attribute: "activation".into(),
                        message: format!("unknown activation `{function}`"),
                    },
                )
            })?;
            let width = input.shape[input.shape.len() - 1];
            let out = attributes.size("out")?.unwrap_or(width);
            let op = Op::FeedForward {
                hidden: attributes.required_size("hidden")?,
                activation,
                gated: attributes.flag("gated", false)?,
                bias: attributes.flag("bias", true)?,
                out,
            };
            (op, float(with_last(&input.shape, out)))
        }
        "activation" => {
            let input = float_input(0)?;
            let Some(function) = attributes.text("function")? else {
                return Err(attributes.missing("function"));
            };
            let activation = Activation::from_name(&function.value).ok_or_else(|| {
                Fault::new(
                    function.span.clone(),
                    SpecErrorKind::InvalidAttribute {
                        attribute: "function".into(),
                        message: format!(
                            "`{}` is not one of {}",
                            function.value,
                            Activation::NAMES.join(", ")
                        ),
                    },
                )
            })?;
            (
                Op::Activation {
                    function: activation,
                },
                float(input.shape.clone()),
            )
        }
        "add" => {
            let first = float_input(0)?;
            for (index, other) in inputs.iter().enumerate().skip(1) {
                float_input(index)?;
                if other.shape != first.shape {
                    return Err(Fault::new(
                        input_spans.get(index).cloned().unwrap_or(node_span.clone()),
                        SpecErrorKind::ShapeMismatch {
                            op: "add".into(),
                            message: format!(
                                "input {} has shape {} but input {} has shape {}",
                                index + 1,
                                shape_text(&other.shape),
                                1,
                                shape_text(&first.shape)
                            ),
                        },
                    ));
                }
            }
            (Op::Add, float(first.shape.clone()))
        }
        "concat" => {
            let first = float_input(0)?;
            let rank = first.shape.len();
            let axis_value = attributes.integer("axis", -1)?;
            let axis_span = attributes
                .get("axis")
                .map_or(node_span.clone(), |value| value.span.clone());
            let axis = axis(axis_value, rank, axis_span)?;
            let mut shape = first.shape.clone();
            for (index, other) in inputs.iter().enumerate().skip(1) {
                float_input(index)?;
                let agrees = other.shape.len() == rank
                    && other
                        .shape
                        .iter()
                        .zip(&first.shape)
                        .enumerate()
                        .all(|(position, (a, b))| position == axis || a == b);
                if !agrees {
                    return Err(mismatch(format!(
                        "input {} has shape {}, which does not match {} outside axis {axis}",
                        index + 1,
                        shape_text(&other.shape),
                        shape_text(&first.shape)
                    )));
                }
                shape[axis] += other.shape[axis];
            }
            (Op::Concat { axis }, float(shape))
        }
        "dropout" => {
            let input = float_input(0)?;
            let p = attributes.real("p", 0.1)?;
            if !(0.0..1.0).contains(&p) {
                let span = attributes
                    .get("p")
                    .map_or(node_span.clone(), |value| value.span.clone());
                return Err(Fault::new(
                    span,
                    SpecErrorKind::InvalidAttribute {
                        attribute: "p".into(),
                        message: format!("{p} is not a probability in [0, 1)"),
                    },
                ));
            }
            (Op::Dropout { p }, float(input.shape.clone()))
        }
        "softmax" => {
            let input = float_input(0)?;
            let axis_span = attributes
                .get("axis")
                .map_or(node_span.clone(), |value| value.span.clone());
            let axis = axis(
                attributes.integer("axis", -1)?,
                input.shape.len(),
                axis_span,
            )?;
            (Op::Softmax { axis }, float(input.shape.clone()))
        }
        "pool" => {
            let input = float_input(0)?;
            let (kind, _) = attributes.choice("kind", &["mean", "first"], "mean")?;
            if input.shape.len() < 2 {
                return Err(mismatch(format!(
                    "needs [.., seq, features], got {}",
                    shape_text(&input.shape)
                )));
            }
            let mut shape = input.shape.clone();
            shape.remove(shape.len() - 2);
            let kind = if kind == "mean" {
                PoolKind::Mean
            } else {
                PoolKind::First
            };
            (Op::Pool { kind }, float(shape))
        }
        "matmul" => {
            let left = float_input(0)?;
            let right = float_input(1)?;
            let transpose_b = attributes.flag("transpose_b", false)?;
            let rank = left.shape.len();
            if rank < 2 || right.shape.len() != rank {
                return Err(mismatch(format!(
                    "needs two inputs of equal rank >= 2, got {} and {}",
                    shape_text(&left.shape),
                    shape_text(&right.shape)
                )));
            }
            let (rows, inner) = (left.shape[rank - 2], left.shape[rank - 1]);
            let (right_inner, columns) = if transpose_b {
                (right.shape[rank - 1], right.shape[rank - 2])
            } else {
                (right.shape[rank - 2], right.shape[rank - 1])
            };
            if inner != right_inner || left.shape[..rank - 2] != right.shape[..rank - 2] {
                return Err(mismatch(format!(
                    "cannot multiply {} by {}{}",
                    shape_text(&left.shape),
                    shape_text(&right.shape),
                    if transpose_b { " transposed" } else { "" }
                )));
            }
            let mut shape = left.shape[..rank - 2].to_vec();
            shape.extend([rows, columns]);
            (Op::Matmul { transpose_b }, float(shape))
        }
        "patch_embedding" => {
            let input = float_input(0)?;
            let patch = attributes.required_size("patch")?;
            let dim = attributes.required_size("dim")?;
            if input.shape.len() != 4 {
                return Err(mismatch(format!(
                    "needs an image [batch, channels, height, width], got {}",
                    shape_text(&input.shape)
                )));
            }
            let (height, width) = (input.shape[2], input.shape[3]);
            for (side, name) in [(height, "height"), (width, "width")] {
                if side % patch != 0 {
                    let span = attributes
                        .get("patch")
                        .map_or(node_span.clone(), |value| value.span.clone());
                    return Err(Fault::new(
                        span,
                        SpecErrorKind::NotDivisible {
                            expression: format!("image {name} / patch"),
                            numerator: side.into(),
                            denominator: patch.into(),
                        },
                    ));
                }
            }
            let op = Op::PatchEmbedding {
                patch,
                dim,
                bias: attributes.flag("bias", true)?,
            };
            (
                op,
                float(vec![
                    input.shape[0],
                    (height / patch) * (width / patch),
                    dim,
                ]),
            )
        }
        "class_token" => {
            let input = float_input(0)?;
            if input.shape.len() < 2 {
                return Err(mismatch(format!(
                    "needs [.., seq, features], got {}",
                    shape_text(&input.shape)
                )));
            }
            let mut shape = input.shape.clone();
            let seq_axis = shape.len() - 2;
            shape[seq_axis] += 1;
            (Op::ClassToken, float(shape))
        }
        _ => unreachable!("op names were checked above"),
    };
    // Every tensor the node materialises, weights included, must stay below
    // MAX_ELEMENTS so that the account's products cannot overflow.
    let mut tensors: Vec<(String, Vec<u64>)> = vec![("output".into(), resolved.1.shape.clone())];
    let width = inputs
        .first()
        .and_then(|input| input.shape.last().copied())
        .unwrap_or(1);
    let rows: Vec<u64> = inputs
        .first()
        .map(|input| input.shape[..input.shape.len().saturating_sub(1)].to_vec())
        .unwrap_or_default();
    let with =
        |base: &[u64], extra: &[u64]| -> Vec<u64> { base.iter().chain(extra).copied().collect() };
    match &resolved.0 {
        Op::Embedding { vocab, dim, .. } => tensors.push(("weight".into(), vec![*vocab, *dim])),
        Op::Positional {
            max_len: Some(max_len),
            ..
        } => tensors.push(("table".into(), vec![*max_len, width])),
        Op::Linear { out, .. } | Op::Head { out, .. } => {
            tensors.push(("weight".into(), vec![width, *out]))
        }
        Op::FeedForward { hidden, out, .. } => {
            tensors.push(("hidden".into(), with(&rows, &[*hidden])));
            tensors.push(("weight".into(), vec![width.max(*out), *hidden]));
        }
        Op::PatchEmbedding { patch, dim, .. } => tensors.push((
            "weight".into(),
            vec![inputs[0].shape[1], *patch, *patch, *dim],
        )),
        Op::Attention(attention) => {
            let memory = inputs.get(1).unwrap_or(&inputs[0]);
            let rank = memory.shape.len();
            let batch = &inputs[0].shape[..rank - 2];
            let (queries, keys) = (inputs[0].shape[rank - 2], memory.shape[rank - 2]);
            tensors.push((
                "queries".into(),
                with(batch, &[queries, attention.heads, attention.head_dim]),
            ));
            tensors.push((
                "keys".into(),
                with(batch, &[keys, attention.kv_heads, attention.head_dim]),
            ));
            tensors.push((
                "scores".into(),
                with(batch, &[attention.heads, queries, keys]),
            ));
            tensors.push((
                "weight".into(),
                vec![
                    width.max(memory.shape[rank - 1]).max(attention.out),
                    attention.heads,
                    attention.head_dim,
                ],
            ));
        }
        _ => {}
    }
    for (what, shape) in tensors {
        let elements = shape
            .iter()
            .try_fold(1u64, |product, size| product.checked_mul(*size));
        if elements.is_none_or(|count| count > MAX_ELEMENTS) {
            return Err(Fault::new(
                node_span,
                SpecErrorKind::Overflow {
                    expression: format!("{what} {}", shape_text(&shape)),
                },
            ));
        }
    }
    Ok(resolved)
}

impl Op {
    /// The op's name as written in specs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Embedding { .. } => "embedding",
            Op::Positional { .. } => "positional",
            Op::Linear { .. } => "linear",
            Op::Attention(_) => "attention",
            Op::LayerNorm { .. } => "layer_norm",
            Op::RmsNorm { .. } => "rms_norm",
            Op::FeedForward { .. } => "feed_forward",
            Op::Activation { .. } => "activation",
            Op::Add => "add",
            Op::Concat { .. } => "concat",
            Op::Dropout { .. } => "dropout",
            Op::Softmax { .. } => "softmax",
            Op::Pool { .. } => "pool",
            Op::Head { .. } => "head",
            Op::Matmul { .. } => "matmul",
            Op::PatchEmbedding { .. } => "patch_embedding",
            Op::ClassToken => "class_token",
        }
    }

    /// The node this one shares its weight with, if tied.
    pub fn tie(&self) -> Option<&str> {
        match self {
            Op::Embedding { tie, .. } | Op::Linear { tie, .. } | Op::Head { tie, .. } => {
                tie.as_deref()
            }
            _ => None,
        }
    }

    /// The shape of the op's main weight matrix `[out, in]` (embedding:
    /// `[vocab, dim]`), given the input width; `None` if it has none that
    /// can be tied.
    pub fn tieable_weight(&self, input_width: u64) -> Option<[u64; 2]> {
        match self {
            Op::Embedding { vocab, dim, .. } => Some([*vocab, *dim]),
            Op::Linear { out, .. } | Op::Head { out, .. } => Some([*out, input_width]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_find_close_names() {
        assert_eq!(
            suggestion("atention", OP_NAMES.iter().copied()),
            " (did you mean `attention`?)"
        );
        assert_eq!(suggestion("zzzzzzzz", OP_NAMES.iter().copied()), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
