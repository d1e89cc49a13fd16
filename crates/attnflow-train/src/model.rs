//! A candle model built from a checked blueprint: one [`Layer`] per node,
//! evaluated front to back in the blueprint's topological order.
//!
//! Every op records a backward pass, because candle-nn's fused kernels
//! silently train nothing (ARCHITECTURE.md, "Known traps in candle"). The ops training spends its
//! time in (linear maps, layer norm, GELU(tanh), learned positions, and
//! the loss) are our fused custom ops in [`crate::kernels`], one graph node
//! each with its own backward; the rest are compositions of candle ops
//! (RMS norm from the mean square, softmax with a detached maximum, patch
//! embedding as a reshape and a matrix product). Attention runs through
//! attnflow-core's `attend` (its fused kernel when no weights are asked
//! for) or `scaled_dot_product_attention`, between our projections, which
//! write and read the `(batch, heads, seq, head_dim)` layout directly. Plain
//! multi-head attention keeps the parameter names of core's
//! [`MultiHeadAttention`].
//!
//! Every weight matrix (linear maps, attention projections, untied heads,
//! patch embeddings) starts as PyTorch's `nn.Linear` does: uniform in
//! ±1/√fan_in. candle's default (Kaiming normal with the ReLU gain) is √6
//! times wider; with it a small decoder ended the copy task at 7× the loss
//! PyTorch reached after the same steps, and PyTorch given that
//! initialisation did no better.
//!
//! The model is shape-agnostic at run time: the blueprint's dims fix the
//! parameter shapes, while batch size and sequence length come from the
//! inputs (learned position tables bound the length).

use std::collections::BTreeMap;

use attnflow_blueprint::ops::{Activation, AttentionOp, Mask, PoolKind, PositionalKind};
use attnflow_blueprint::{BlockPosition, Blueprint, Element, Node, Op};
use attnflow_core::{
    scaled_dot_product_attention, AttentionMask, MultiHeadAttention, MultiHeadAttentionConfig,
    SdpaOptions,
};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Init, VarBuilder};
use serde::Serialize;

use crate::rng::Rng;
use crate::store::ParameterStore;
use crate::{Result, TrainError};
use attnflow_kernels as kernels;

/// Whether the forward pass trains (dropout active, drawing its masks from
/// the given generator) or evaluates (dropout is the identity).
pub enum Mode<'a> {
    /// Inference: deterministic, no dropout.
    Eval,
    /// Training: dropout masks come from `rng`, so a resumed run draws the
    /// same masks as an uninterrupted one.
    Train {
        /// The generator dropout draws from.
        rng: &'a mut Rng,
    },
}

/// Which attention weights a forward pass hands back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Capture {
    /// Attention nodes to capture: a node's full name (`block.1.attn`), a
    /// layer prefix (`block.1`) or a block name (`block`, every layer).
    /// `None` captures every attention node.
    pub nodes: Option<Vec<String>>,
    /// Heads to keep, by index; `None` keeps all.
    pub heads: Option<Vec<usize>>,
}

impl Capture {
    /// Every head of every attention node.
    pub fn all() -> Self {
        Self::default()
    }

    fn wants(&self, node: &Node) -> bool {
        match &self.nodes {
            None => true,
            Some(names) => names.iter().any(|name| {
                node.name == *name
                    || node
                        .name
                        .strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            }),
        }
    }
}

/// The attention weights of one node from one forward pass.
#[derive(Clone, Debug)]
pub struct CapturedAttention {
    /// The attention node's name.
    pub node: String,
    /// Where it sits in a repeated block, if it does.
    pub block: Option<BlockPosition>,
    /// The head indices kept, in order.
    pub heads: Vec<usize>,
    /// `(batch, heads kept, n, m)`; rows of visible keys sum to one. Still
    /// attached to the graph, so a regulariser on them trains the model.
    pub weights: Tensor,
}

/// What a forward pass returns.
#[derive(Clone, Debug)]
pub struct ForwardOutput {
    /// The value of every output node (nodes no other node reads), by name.
    pub outputs: BTreeMap<String, Tensor>,
    /// The captured attention weights, in node order.
    pub attention: Vec<CapturedAttention>,
}

/// A linear map `y = x Wᵀ + b` over the last axis of any-rank input.
#[derive(Clone, Debug)]
struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    fn new(vb: &VarBuilder, inputs: usize, outputs: usize, bias: bool) -> Result<Self> {
        let weight = vb.get_with_hints((outputs, inputs), "weight", linear_init(inputs))?;
        Ok(Self {
            weight,
            bias: bias_parameter(vb, inputs, outputs, bias)?,
        })
    }

    /// One fused op (forward and backward) on the CPU in f32.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(kernels::linear(x, &self.weight, self.bias.as_ref())?)
    }

    /// `GELU(tanh)(x)·Wᵀ + b` in one op.
    fn forward_after_gelu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(kernels::linear_after_gelu(
            x,
            &self.weight,
            self.bias.as_ref(),
        )?)
    }

    /// `(batch, seq, in)` -> `(batch, heads, seq, out / heads)`: the
    /// projection and the head split in one op.
    fn forward_to_heads(&self, x: &Tensor, heads: usize) -> Result<Tensor> {
        Ok(kernels::linear_to_heads(
            x,
            &self.weight,
            self.bias.as_ref(),
            heads,
        )?)
    }

    /// `(batch, heads, seq, head_dim)` -> `(batch, seq, out)`: the head
    /// merge and the projection in one op.
    fn forward_from_heads(&self, x: &Tensor) -> Result<Tensor> {
        Ok(kernels::linear_from_heads(
            x,
            &self.weight,
            self.bias.as_ref(),
        )?)
    }
}

/// PyTorch's `nn.Linear` weight initialisation (Kaiming uniform with
/// a = √5): uniform in ±1/√fan_in.
fn linear_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// candle-nn's `linear_b` bias initialisation, which is also PyTorch's:
/// uniform in ±1/√in.
fn bias_parameter(
    vb: &VarBuilder,
    inputs: usize,
    outputs: usize,
    bias: bool,
) -> Result<Option<Tensor>> {
    if !bias {
        return Ok(None);
    }
    let bound = 1.0 / (inputs.max(1) as f64).sqrt();
    Ok(Some(vb.get_with_hints(
        outputs,
        "bias",
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?))
}

/// Our projections around core's attention: the query, key and value
/// projections write the `(batch, heads, seq, head_dim)` layout attention
/// reads, and the output projection reads it back, so the head split and
/// merge are part of the products.
#[derive(Clone, Debug)]
struct AttentionLayer {
    op: AttentionOp,
    query: Dense,
    key: Dense,
    value: Dense,
    output: Dense,
}

#[derive(Clone, Debug)]
enum Layer {
    Input,
    Embedding {
        weight: Tensor,
    },
    LearnedPositions {
        table: Tensor,
    },
    SinusoidalPositions,
    RotaryPositions,
    Dense(Dense),
    Attention(Box<AttentionLayer>),
    Normalise {
        weight: Tensor,
        bias: Option<Tensor>,
        eps: f64,
    },
    RmsNorm {
        weight: Tensor,
        eps: f64,
    },
    FeedForward {
        gate: Option<Dense>,
        up: Dense,
        down: Dense,
        activation: Activation,
    },
    Activation(Activation),
    Add,
    Concat(usize),
    Dropout(f64),
    Softmax(usize),
    Pool(PoolKind),
    Matmul(bool),
    PatchEmbedding {
        projection: Dense,
        patch: usize,
    },
    ClassToken {
        token: Tensor,
    },
}

/// A trainable model built from a checked blueprint.
#[derive(Clone, Debug)]
pub struct Model {
    blueprint: Blueprint,
    store: ParameterStore,
    layers: Vec<Layer>,
    device: Device,
}

impl Model {
    /// Builds the model, creating its parameters in `store` (or reusing the
    /// ones already there, so building twice from one store shares weights).
    ///
    /// Parameter names are `<node>.<tensor>`, e.g. `block.0.attn.q_proj.weight`;
    /// a tied weight lives once, under the node that owns it.
    pub fn new(blueprint: &Blueprint, store: &ParameterStore, device: &Device) -> Result<Self> {
        let vb = store.var_builder(device);
        let layers = blueprint
            .nodes
            .iter()
            .map(|node| build_layer(blueprint, node, &vb))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            blueprint: blueprint.clone(),
            store: store.clone(),
            layers,
            device: device.clone(),
        })
    }

    /// The blueprint the model was built from.
    pub fn blueprint(&self) -> &Blueprint {
        &self.blueprint
    }

    /// The parameter store (shared with the optimiser and checkpoints).
    pub fn store(&self) -> &ParameterStore {
        &self.store
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether every attention node is causal or windowed, so that position
    /// `i` never sees a later position: such a model can be trained on
    /// next-token prediction. Models without attention count as causal only
    /// if they have none at all.
    pub fn is_autoregressive(&self) -> bool {
        self.blueprint.nodes.iter().all(|node| match &node.op {
            Op::Attention(op) => matches!(op.mask, Mask::Causal | Mask::Window { .. }),
            _ => true,
        })
    }

    /// The names of the attention nodes, in order.
    pub fn attention_nodes(&self) -> Vec<String> {
        self.blueprint
            .nodes
            .iter()
            .filter(|node| matches!(node.op, Op::Attention(_)))
            .map(|node| node.name.clone())
            .collect()
    }

    /// Runs the model on `inputs` (tensor by input-node name; index inputs
    /// as `u32`), returning the output nodes' values and the attention
    /// weights `capture` asks for (none when `capture` is `None`).
    pub fn forward(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        mode: Mode<'_>,
        capture: Option<&Capture>,
    ) -> Result<ForwardOutput> {
        let mut mode = mode;
        let blueprint = &self.blueprint;
        let mut values: Vec<Option<Tensor>> = vec![None; blueprint.nodes.len()];
        let mut attention = Vec::new();
        for (index, (node, layer)) in blueprint.nodes.iter().zip(&self.layers).enumerate() {
            let fault = |message: String| TrainError::Model {
                blueprint: blueprint.name.clone(),
                node: node.name.clone(),
                message,
            };
            let args: Vec<&Tensor> = node
                .inputs
                .iter()
                .map(|name| {
                    blueprint
                        .position(name)
                        .and_then(|position| values[position].as_ref())
                        .ok_or_else(|| fault(format!("input `{name}` has no value")))
                })
                .collect::<Result<_>>()?;
            let value = match layer {
                Layer::Input => {
                    let tensor = inputs
                        .get(&node.name)
                        .ok_or_else(|| fault("no tensor was given for this input".to_string()))?;
                    check_input(node, tensor).map_err(fault)?;
                    tensor.clone()
                }
                Layer::Embedding { weight } => {
                    let ids = args[0];
                    let flat = ids.flatten_all()?;
                    let rows = weight.index_select(&flat, 0)?;
                    let mut dims = ids.dims().to_vec();
                    dims.push(weight.dim(1)?);
                    rows.reshape(dims)?
                }
                Layer::LearnedPositions { table } => {
                    let x = args[0];
                    let length = x.dim(D::Minus2)?;
                    if length > table.dim(0)? {
                        return Err(fault(format!(
                            "sequence length {length} exceeds the learned position table's max_len {}",
                            table.dim(0)?
                        )));
                    }
                    kernels::add_positions(x, table)?
                }
                Layer::SinusoidalPositions => {
                    let x = args[0];
                    let table = sinusoidal_table(x.dim(D::Minus2)?, x.dim(D::Minus1)?, x.device())?;
                    x.broadcast_add(&table)?
                }
                Layer::RotaryPositions => {
                    let x = args[0];
                    rotate(x, x.dim(D::Minus2)?, x.dim(D::Minus1)?)?
                }
                Layer::Dense(dense) => dense.forward(args[0])?,
                Layer::Attention(layer) => {
                    let wanted = capture.filter(|capture| capture.wants(node));
                    let (output, weights) =
                        attend(layer, &args, wanted.is_some()).map_err(|error| match error {
                            TrainError::Core(core) => fault(core.to_string()),
                            other => other,
                        })?;
                    if let (Some(capture), Some(weights)) = (wanted, weights) {
                        let heads_total = weights.dim(1)?;
                        let heads: Vec<usize> = match &capture.heads {
                            None => (0..heads_total).collect(),
                            Some(heads) => {
                                if let Some(bad) = heads.iter().find(|head| **head >= heads_total) {
                                    return Err(fault(format!(
                                        "head {bad} was asked for but the node has {heads_total} heads"
                                    )));
                                }
                                heads.clone()
                            }
                        };
                        let weights = if heads.len() == heads_total {
                            weights
                        } else {
                            let index = Tensor::new(
                                heads.iter().map(|head| *head as u32).collect::<Vec<_>>(),
                                weights.device(),
                            )?;
                            weights.index_select(&index, 1)?
                        };
                        attention.push(CapturedAttention {
                            node: node.name.clone(),
                            block: node.block.clone(),
                            heads,
                            weights,
                        });
                    }
                    output
                }
                // Our fused op with its own backward: candle-nn's fused layer
                // norm records none.
                Layer::Normalise { weight, bias, eps } => {
                    kernels::layer_norm(args[0], weight, bias.as_ref(), *eps)?
                }
                Layer::RmsNorm { weight, eps } => {
                    let x = args[0];
                    let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
                    let normed = x.broadcast_div(&(mean_square + *eps)?.sqrt()?)?;
                    scale_and_shift(&normed, weight, None)?
                }
                Layer::FeedForward {
                    gate,
                    up,
                    down,
                    activation,
                } => {
                    let x = args[0];
                    match (gate, activation) {
                        // The activation folded into the second product.
                        (None, Activation::GeluTanh) => down.forward_after_gelu(&up.forward(x)?)?,
                        (Some(gate), _) => down.forward(
                            &activate(&gate.forward(x)?, *activation)?.mul(&up.forward(x)?)?,
                        )?,
                        (None, _) => down.forward(&activate(&up.forward(x)?, *activation)?)?,
                    }
                }
                Layer::Activation(function) => activate(args[0], *function)?,
                Layer::Add => {
                    let mut sum = args[0].clone();
                    for other in &args[1..] {
                        sum = (sum + *other)?;
                    }
                    sum
                }
                Layer::Concat(axis) => Tensor::cat(&args, *axis)?,
                Layer::Dropout(p) => match &mut mode {
                    Mode::Train { rng } if *p > 0.0 => dropout(args[0], *p, rng)?,
                    _ => args[0].clone(),
                },
                Layer::Softmax(axis) => softmax(args[0], *axis)?,
                Layer::Pool(kind) => {
                    let x = args[0];
                    let axis = x.rank() - 2;
                    match kind {
                        PoolKind::Mean => x.mean(axis)?,
                        PoolKind::First => x.narrow(axis, 0, 1)?.squeeze(axis)?,
                    }
                }
                Layer::Matmul(transpose_b) => {
                    let right = if *transpose_b {
                        args[1].transpose(D::Minus2, D::Minus1)?
                    } else {
                        args[1].clone()
                    };
                    args[0].contiguous()?.matmul(&right.contiguous()?)?
                }
                Layer::PatchEmbedding { projection, patch } => {
                    patch_embed(args[0], projection, *patch).map_err(|error| match error {
                        TrainError::Candle(candle) => fault(candle.to_string()),
                        other => other,
                    })?
                }
                Layer::ClassToken { token } => {
                    let x = args[0];
                    let dims = x.dims().to_vec();
                    let mut token_dims = dims.clone();
                    let seq_axis = dims.len() - 2;
                    token_dims[seq_axis] = 1;
                    let token = token.broadcast_as(token_dims)?.contiguous()?;
                    Tensor::cat(&[&token, x], seq_axis)?
                }
            };
            values[index] = Some(value);
        }
        let outputs = blueprint
            .outputs()
            .into_iter()
            .filter_map(|node| {
                blueprint
                    .position(&node.name)
                    .and_then(|position| values[position].take())
                    .map(|value| (node.name.clone(), value))
            })
            .collect();
        Ok(ForwardOutput { outputs, attention })
    }
}

fn check_input(node: &Node, tensor: &Tensor) -> std::result::Result<(), String> {
    let rank = node.shape.len();
    if tensor.rank() != rank {
        return Err(format!(
            "expected a rank-{rank} tensor like {:?}, got shape {:?}",
            node.shape,
            tensor.dims()
        ));
    }
    // Batch and sequence length may differ from the spec's dims; feature
    // axes (image channels and sides) must match what the weights expect.
    if rank >= 3
        && node.element == Element::Float
        && tensor.dim(1).ok() != Some(node.shape[1] as usize)
    {
        return Err(format!(
            "expected {} channels/features on axis 1, got shape {:?}",
            node.shape[1],
            tensor.dims()
        ));
    }
    match (node.element, tensor.dtype()) {
        (Element::Index, DType::U32) | (Element::Float, DType::F32) => Ok(()),
        (Element::Index, dtype) => Err(format!("holds token ids and needs u32, got {dtype:?}")),
        (Element::Float, dtype) => Err(format!("needs f32, got {dtype:?}")),
    }
}

fn build_layer(blueprint: &Blueprint, node: &Node, root: &VarBuilder) -> Result<Layer> {
    let vb = root.pp(node.name.as_str());
    let input_width = blueprint.input_width(node) as usize;
    let fault = |message: String| TrainError::Model {
        blueprint: blueprint.name.clone(),
        node: node.name.clone(),
        message,
    };
    Ok(match &node.op {
        Op::Input { .. } => Layer::Input,
        Op::Embedding { .. } => Layer::Embedding {
            weight: main_weight(blueprint, node, root)?,
        },
        Op::Positional { kind, max_len } => match kind {
            PositionalKind::Learned => {
                let max_len =
                    max_len.ok_or_else(|| fault("a learned table needs max_len".into()))?;
                Layer::LearnedPositions {
                    table: vb.get_with_hints(
                        (max_len as usize, input_width),
                        "weight",
                        Init::Randn {
                            mean: 0.0,
                            stdev: 1.0 / (input_width.max(1) as f64).sqrt(),
                        },
                    )?,
                }
            }
            PositionalKind::Sinusoidal => Layer::SinusoidalPositions,
            PositionalKind::Rotary => Layer::RotaryPositions,
        },
        Op::Linear { bias, .. } | Op::Head { bias, .. } => {
            let weight = main_weight(blueprint, node, root)?;
            let outputs = weight.dim(0)?;
            Layer::Dense(Dense {
                weight,
                bias: bias_parameter(&vb, input_width, outputs, *bias)?,
            })
        }
        Op::Attention(op) => {
            let query_width = input_width;
            let memory_width = node
                .inputs
                .get(1)
                .and_then(|name| blueprint.node(name))
                .and_then(|memory| memory.shape.last().copied())
                .map_or(query_width, |width| width as usize);
            let (heads, kv_heads, head_dim) = (
                op.heads as usize,
                op.kv_heads as usize,
                op.head_dim as usize,
            );
            let out = op.out as usize;
            // Core's module gives all four projections one bias flag.
            let standard = kv_heads == heads
                && heads * head_dim == query_width
                && out == query_width
                && !op.rotary
                && op.key_bias == op.bias
                && op.output_bias == op.bias;
            let layer = AttentionLayer {
                op: *op,
                query: Dense::new(&vb.pp("q_proj"), query_width, heads * head_dim, op.bias)?,
                key: Dense::new(
                    &vb.pp("k_proj"),
                    memory_width,
                    kv_heads * head_dim,
                    op.key_bias,
                )?,
                value: Dense::new(&vb.pp("v_proj"), memory_width, kv_heads * head_dim, op.bias)?,
                output: Dense::new(&vb.pp("out_proj"), heads * head_dim, out, op.output_bias)?,
            };
            if standard {
                // Plain multi-head attention keeps core's module's parameter
                // names: the module, created after the projections, finds
                // them in the store (with their shapes checked), so the
                // projections' initialisation stands.
                let config = MultiHeadAttentionConfig {
                    embed_dim: query_width,
                    num_heads: heads,
                    key_dim: Some(memory_width),
                    value_dim: Some(memory_width),
                    bias: op.bias,
                };
                MultiHeadAttention::new(&config, vb.clone())
                    .map_err(|error| fault(error.to_string()))?;
            }
            Layer::Attention(Box::new(layer))
        }
        Op::LayerNorm { eps, bias } => Layer::Normalise {
            weight: vb.get_with_hints(input_width, "weight", Init::Const(1.0))?,
            bias: if *bias {
                Some(vb.get_with_hints(input_width, "bias", Init::Const(0.0))?)
            } else {
                None
            },
            eps: *eps,
        },
        Op::RmsNorm { eps } => Layer::RmsNorm {
            weight: vb.get_with_hints(input_width, "weight", Init::Const(1.0))?,
            eps: *eps,
        },
        Op::FeedForward {
            hidden,
            activation,
            gated,
            bias,
            out,
        } => {
            let hidden = *hidden as usize;
            Layer::FeedForward {
                gate: if *gated {
                    Some(Dense::new(&vb.pp("gate"), input_width, hidden, *bias)?)
                } else {
                    None
                },
                up: Dense::new(&vb.pp("up"), input_width, hidden, *bias)?,
                down: Dense::new(&vb.pp("down"), hidden, *out as usize, *bias)?,
                activation: *activation,
            }
        }
        Op::Activation { function } => Layer::Activation(*function),
        Op::Add => Layer::Add,
        Op::Concat { axis } => Layer::Concat(*axis),
        Op::Dropout { p } => Layer::Dropout(*p),
        Op::Softmax { axis } => Layer::Softmax(*axis),
        Op::Pool { kind } => Layer::Pool(*kind),
        Op::Matmul { transpose_b } => Layer::Matmul(*transpose_b),
        Op::PatchEmbedding { patch, dim, bias } => {
            let input = blueprint
                .node(&node.inputs[0])
                .ok_or_else(|| fault("missing input".into()))?;
            let channels = input.shape[1] as usize;
            let patch = *patch as usize;
            let dim = *dim as usize;
            // PyTorch's Conv2d layout (dim, channels, patch, patch), used as
            // a matrix over flattened (channel, row, column) patches.
            let inner = channels * patch * patch;
            let weight =
                vb.get_with_hints((dim, channels, patch, patch), "weight", linear_init(inner))?;
            Layer::PatchEmbedding {
                projection: Dense {
                    weight: weight.reshape((dim, inner))?,
                    bias: bias_parameter(&vb, inner, dim, *bias)?,
                },
                patch,
            }
        }
        Op::ClassToken => Layer::ClassToken {
            token: vb.get_with_hints(
                input_width,
                "token",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0 / (input_width.max(1) as f64).sqrt(),
                },
            )?,
        },
    })
}

/// The weight of an embedding, linear map or head, shared with the node it
/// is tied to: it lives under the tie root's name, created with the root's
/// initialisation whichever node asks first.
fn main_weight(blueprint: &Blueprint, node: &Node, root: &VarBuilder) -> Result<Tensor> {
    let owner = blueprint.tie_root(node);
    let shape = owner
        .op
        .tieable_weight(blueprint.input_width(owner))
        .ok_or_else(|| TrainError::Model {
            blueprint: blueprint.name.clone(),
            node: node.name.clone(),
            message: format!("tied to `{}`, which has no weight", owner.name),
        })?;
    let init = match owner.op {
        Op::Embedding { dim, .. } => Init::Randn {
            mean: 0.0,
            stdev: 1.0 / (dim.max(1) as f64).sqrt(),
        },
        _ => linear_init(shape[1] as usize),
    };
    Ok(root.get_with_hints(
        (shape[0] as usize, shape[1] as usize),
        &format!("{}.weight", owner.name),
        init,
    )?)
}

/// Attention of one node: `(output, weights)`, weights `(batch, heads, n, m)`
/// when asked for.
fn attend(
    layer: &AttentionLayer,
    args: &[&Tensor],
    need_weights: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let query = args[0];
    let memory = args.get(1).copied().unwrap_or(query);
    let unbatched = query.rank() == 2;
    let (query, memory) = if unbatched {
        (query.unsqueeze(0)?, memory.unsqueeze(0)?)
    } else {
        (query.clone(), memory.clone())
    };
    if query.rank() != 3 || memory.rank() != 3 {
        return Err(TrainError::config(
            "attention input",
            format!(
                "attention runs on (batch, seq, features) or (seq, features); got {:?}",
                args[0].dims()
            ),
        ));
    }
    let (n, m) = (query.dim(1)?, memory.dim(1)?);
    let mask = attention_mask(layer.op.mask, n, m, query.device())?;
    let op = &layer.op;
    let (heads, kv_heads, head_dim) = (
        op.heads as usize,
        op.kv_heads as usize,
        op.head_dim as usize,
    );
    let mut q = layer.query.forward_to_heads(&query, heads)?;
    let mut k = layer.key.forward_to_heads(&memory, kv_heads)?;
    let v = layer.value.forward_to_heads(&memory, kv_heads)?;
    if op.rotary {
        q = rotate(&q, n, head_dim)?;
        k = rotate(&k, m, head_dim)?;
    }
    // Without weights to hand back, core's `attend` may take its fused
    // kernel; with them, the exact path materialises them.
    let options = SdpaOptions::default();
    let (attended, weights) = if need_weights {
        let exact = scaled_dot_product_attention(&q, &k, &v, &mask, &options)?;
        (exact.output, Some(exact.weights))
    } else {
        (attnflow_core::attend(&q, &k, &v, &mask, &options)?, None)
    };
    let output = layer.output.forward_from_heads(&attended)?;
    if unbatched {
        Ok((
            output.squeeze(0)?,
            // Captured weights keep their batch axis of one.
            weights,
        ))
    } else {
        Ok((output, weights))
    }
}

/// The blueprint's masks as attnflow-core masks. Causal and window masks
/// align the last query with the last key (as the blueprint documents), so
/// a query sees keys up to `i + (m - n)`.
pub fn attention_mask(mask: Mask, n: usize, m: usize, device: &Device) -> Result<AttentionMask> {
    let offset = m as i64 - n as i64;
    let window = match mask {
        Mask::None => return Ok(AttentionMask::none()),
        Mask::Causal if n == m => return Ok(AttentionMask::causal()),
        Mask::Causal => i64::MAX,
        Mask::Window { size } => size as i64,
    };
    let mut allowed = vec![0u8; n * m];
    for i in 0..n {
        let last = i as i64 + offset;
        for j in 0..m {
            let j_signed = j as i64;
            if j_signed <= last && last - j_signed < window {
                allowed[i * m + j] = 1;
            }
        }
    }
    Ok(AttentionMask::none().with_allowed(Tensor::from_vec(allowed, (n, m), device)?))
}

/// Softmax along `axis` with the maximum detached: the shift cancels in the
/// gradient, so nothing is lost and the max's backward is skipped.
pub fn softmax(x: &Tensor, axis: usize) -> Result<Tensor> {
    let max = x.max_keepdim(axis)?.detach();
    let exps = x.broadcast_sub(&max)?.exp()?;
    Ok(exps.broadcast_div(&exps.sum_keepdim(axis)?)?)
}

/// Log-softmax over the last axis, stable and differentiable.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&log_sum)?)
}

/// `(rows, width)` copies of a `(width)` vector, built as the product of a
/// column of ones and the vector: its backward is then one matrix product
/// instead of candle's slow reduction over a leading axis.
fn repeat_rows(vector: &Tensor, rows: usize) -> Result<Tensor> {
    let width = vector.elem_count();
    let ones = Tensor::ones((rows, 1), vector.dtype(), vector.device())?;
    Ok(ones.matmul(&vector.reshape((1, width))?)?)
}

/// `normed · gain + shift` over the last axis (norm layers).
fn scale_and_shift(normed: &Tensor, gain: &Tensor, shift: Option<&Tensor>) -> Result<Tensor> {
    let dims = normed.dims().to_vec();
    let width = gain.elem_count();
    let rows = normed.elem_count() / width.max(1);
    let flat = normed.reshape((rows, width))?;
    let mut y = flat.mul(&repeat_rows(gain, rows)?)?;
    if let Some(shift) = shift {
        y = (y + repeat_rows(shift, rows)?)?;
    }
    Ok(y.reshape(dims)?)
}

fn activate(x: &Tensor, function: Activation) -> Result<Tensor> {
    Ok(match function {
        Activation::Relu => x.relu()?,
        Activation::Gelu => x.gelu_erf()?,
        // One fused op, forward and backward (a vectorised exp), instead of
        // candle's gelu (tanh and powf per element, both ways).
        Activation::GeluTanh => kernels::gelu_tanh(x)?,
        Activation::Silu => x.silu()?,
        // 1 / (1 + e^-x), written out so the backward is candle's own.
        Activation::Sigmoid => (x.neg()?.exp()? + 1.0)?.recip()?,
        Activation::Tanh => x.tanh()?,
    })
}

/// Inverted dropout: zero each entry with probability `p`, scale the rest
/// by `1 / (1 - p)`; the mask comes from `rng`.
fn dropout(x: &Tensor, p: f64, rng: &mut Rng) -> Result<Tensor> {
    let keep_scale = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.next_f64() < p { 0.0 } else { keep_scale })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
    Ok(x.mul(&mask)?)
}

/// The sine/cosine table of Vaswani et al. (2017, §3.5), `(length, width)`:
/// even features `sin(pos / 10000^(2i/width))`, odd ones the cosine.
fn sinusoidal_table(length: usize, width: usize, device: &Device) -> Result<Tensor> {
    let mut table = vec![0f32; length * width];
    for position in 0..length {
        for feature in 0..width {
            let pair = (feature / 2) as f64;
            let angle = position as f64 / 10000f64.powf(2.0 * pair / width as f64);
            table[position * width + feature] = if feature % 2 == 0 {
                angle.sin() as f32
            } else {
                angle.cos() as f32
            };
        }
    }
    Ok(Tensor::from_vec(table, (length, width), device)?)
}

/// Rotary position embedding (Su et al. 2021) in the "rotate half" layout
/// of GPT-NeoX and Llama: feature `f` and `f + width/2` form a pair rotated
/// by `pos · 10000^(-2f/width)`. `x` is `(.., length, width)`.
fn rotate(x: &Tensor, length: usize, width: usize) -> Result<Tensor> {
    let half = width / 2;
    let mut cos = vec![0f32; length * width];
    let mut sin = vec![0f32; length * width];
    for position in 0..length {
        for feature in 0..half {
            let angle = position as f64 / 10000f64.powf(2.0 * feature as f64 / width as f64);
            for offset in [0, half] {
                cos[position * width + feature + offset] = angle.cos() as f32;
                sin[position * width + feature + offset] = angle.sin() as f32;
            }
        }
    }
    let cos = Tensor::from_vec(cos, (length, width), x.device())?;
    let sin = Tensor::from_vec(sin, (length, width), x.device())?;
    let first = x.narrow(D::Minus1, 0, half)?;
    let second = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
    Ok(x.broadcast_mul(&cos)?.add(&rotated.broadcast_mul(&sin)?)?)
}

/// A non-overlapping `patch × patch` convolution as a reshape and a matrix
/// product: `(b, c, H, W)` -> `(b, H/p · W/p, dim)`, patches in row-major
/// order and each flattened as (channel, row, column) like Conv2d's weight.
fn patch_embed(x: &Tensor, projection: &Dense, patch: usize) -> Result<Tensor> {
    let (batch, channels, height, width) = x.dims4()?;
    if height % patch != 0 || width % patch != 0 {
        return Err(TrainError::config(
            "patch",
            format!("image {height}×{width} is not divisible into {patch}×{patch} patches"),
        ));
    }
    let (rows, columns) = (height / patch, width / patch);
    // (b, c, rows, p, W) -> (b, rows, c, p, W) keeps each rank at most 5.
    let grouped = x
        .reshape((batch, channels, rows, patch, width))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?
        .reshape((batch * rows, channels, patch, columns, patch))?
        .permute((0, 3, 1, 2, 4))?
        .contiguous()?
        .reshape((batch, rows * columns, channels * patch * patch))?;
    projection.forward(&grouped)
}
