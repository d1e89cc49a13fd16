//! A small attention model with seeded weights, so attention can be
//! inspected before any training: a stack of §2.2 multi-head attention
//! blocks over seeded embeddings of the input tokens.
//!
//! The weights are a pure function of the seed (no global RNG, no time),
//! so the same text and seed give the same maps on every machine.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use super::error::{AnalysisError, AnalysisResult};
use super::map::AttentionStack;
use super::random::stream;
use crate::{AttentionMask, MultiHeadAttention, MultiHeadAttentionConfig};

/// The shape and seed of a [`SeededModel`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededModelConfig {
    /// Number of attention blocks.
    pub layers: usize,
    /// Heads per block.
    pub heads: usize,
    /// Embedding width; must be divisible by `heads`.
    pub width: usize,
    /// Seed of every weight and embedding.
    pub seed: u64,
    /// Whether each block is causal (a decoder) or sees all tokens (an
    /// encoder).
    pub causal: bool,
}

impl Default for SeededModelConfig {
    fn default() -> Self {
        Self {
            layers: 4,
            heads: 4,
            width: 32,
            seed: 0,
            causal: false,
        }
    }
}

/// A stack of multi-head self-attention blocks, `x ← norm(x + MHA(x))`,
/// with weights drawn from a seeded generator.
pub struct SeededModel {
    config: SeededModelConfig,
    blocks: Vec<MultiHeadAttention>,
}

impl SeededModel {
    /// Builds the model; fails on a zero size or a width not divisible by
    /// the number of heads.
    pub fn new(config: SeededModelConfig) -> AnalysisResult<Self> {
        if config.layers == 0 {
            return Err(AnalysisError::parameter("layers", "must be at least 1"));
        }
        let block = MultiHeadAttentionConfig::new(config.width, config.heads);
        block.head_dim()?;
        let width = config.width;
        // Scaled so scores have a spread of a few units: uniform-looking
        // maps teach nothing, one-hot maps hide everything.
        let scale = 2.0 / (width as f64).sqrt();
        let mut tensors = HashMap::new();
        for layer in 0..config.layers {
            for projection in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                let name = format!("{layer}.{projection}");
                let mut rng = stream(config.seed, &name);
                tensors.insert(
                    format!("{name}.weight"),
                    Tensor::from_vec(
                        rng.normals(width * width, scale),
                        (width, width),
                        &Device::Cpu,
                    )?,
                );
                tensors.insert(
                    format!("{name}.bias"),
                    Tensor::from_vec(rng.normals(width, 0.1), width, &Device::Cpu)?,
                );
            }
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F64, &Device::Cpu);
        let blocks = (0..config.layers)
            .map(|layer| MultiHeadAttention::new(&block, vb.pp(layer.to_string())))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(Self { config, blocks })
    }

    /// The model's configuration.
    pub fn config(&self) -> &SeededModelConfig {
        &self.config
    }

    /// The embedding of `tokens`: a seeded vector per distinct token (the
    /// same token always gets the same vector) plus a sinusoidal position
    /// code, so repeated tokens at different places still differ.
    pub fn embed(&self, tokens: &[String]) -> AnalysisResult<Tensor> {
        let width = self.config.width;
        let mut values = Vec::with_capacity(tokens.len() * width);
        for (position, token) in tokens.iter().enumerate() {
            let mut rng = stream(self.config.seed, &format!("token:{token}"));
            for (dimension, value) in rng.normals(width, 1.0).into_iter().enumerate() {
                let frequency = 1.0 / 10_000f64.powf((dimension / 2 * 2) as f64 / width as f64);
                let angle = position as f64 * frequency;
                let code = if dimension % 2 == 0 {
                    angle.sin()
                } else {
                    angle.cos()
                };
                values.push(value + code);
            }
        }
        Ok(Tensor::from_vec(
            values,
            (tokens.len(), width),
            &Device::Cpu,
        )?)
    }

    /// Runs the model on `tokens` and returns every block's attention maps.
    pub fn attention(&self, tokens: &[String]) -> AnalysisResult<AttentionStack> {
        if tokens.is_empty() {
            return Err(AnalysisError::parameter(
                "tokens",
                "the input has no tokens",
            ));
        }
        let mask = if self.config.causal {
            AttentionMask::causal()
        } else {
            AttentionMask::none()
        };
        let mut x = self.embed(tokens)?;
        let mut layers = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (attended, weights) = block.forward(&x, &x, &x, &mask, true)?;
            layers.push(weights.expect("weights were requested"));
            // RMS norm keeps activations at unit scale through the stack.
            let sum = (x + attended)?;
            let rms = sum.sqr()?.mean_keepdim(D::Minus1)?.sqrt()?;
            x = sum.broadcast_div(&(rms + 1e-6)?)?;
        }
        AttentionStack::from_layer_tensors(&layers)
    }
}

/// Splits text into tokens for the seeded model: one token per character
/// (Unicode scalar value), which needs no vocabulary.
pub fn character_tokens(text: &str) -> Vec<String> {
    text.chars().map(String::from).collect()
}
