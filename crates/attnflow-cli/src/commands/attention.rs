//! `attnflow attention ...`: run the attention engine on the user's tensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use attnflow_core::{
    scaled_dot_product_attention, AttentionMask, CoreError, MultiHeadAttention,
    MultiHeadAttentionConfig, SdpaOptions,
};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::{Args, Subcommand};
use miette::miette;
use safetensors::SafeTensors;

use crate::error::{CliError, CliResult};
use attnflow_base::write_atomically;

/// Subcommands of `attnflow attention`.
#[derive(Debug, Subcommand)]
pub enum AttentionCommand {
    /// Scaled dot-product attention (§3.2) on tensors from a safetensors file.
    ///
    /// The file holds `q`, `k`, `v`, and optionally `mask` and
    /// `key_padding`. `q`, `k`, `v` are (n, d), (batch, n, d) or
    /// (batch, heads, n, d). A `mask` of integer or bool dtype marks with
    /// non-zero the keys a query MAY attend to; a float `mask` is added to
    /// the scores. `key_padding` is (batch, m), non-zero marking padding.
    ///
    /// When the file also holds `q_proj.weight`, `k_proj.weight`,
    /// `v_proj.weight` and `out_proj.weight` (each (out, in), biases
    /// optional), it runs multi-head attention (§2.2) with `--heads` heads
    /// on `q`, `k`, `v` of shape (batch, n, width) instead.
    ///
    /// Writes `output` and `weights` to the output file.
    Sdpa(SdpaArgs),
    /// Look inside attention: §4.2 heatmaps of every head, a layers × heads
    /// grid, attention rollout and flow, per-head statistics (JSON) and a
    /// self-contained report.html, for a weights file or a seeded model.
    Inspect(super::inspect::InspectArgs),
    /// §8.1 blend `α·A + (1 − α)·B` of two row-stochastic maps (CSV or
    /// safetensors), written as CSV with PNG and SVG pictures.
    Blend(super::inspect::BlendArgs),
}

/// Arguments of `attnflow attention sdpa`.
#[derive(Debug, Args)]
pub struct SdpaArgs {
    /// The safetensors file holding the input tensors.
    #[arg(long)]
    input: PathBuf,
    /// Where to write `output` and `weights` (safetensors; replaced atomically).
    #[arg(long)]
    output: PathBuf,
    /// Apply a causal mask (query i sees keys j <= i).
    #[arg(long)]
    causal: bool,
    /// Multiply scores by this instead of 1/sqrt(d_k).
    #[arg(long)]
    scale: Option<f64>,
    /// Number of heads, for multi-head attention (files with projection weights).
    #[arg(long)]
    heads: Option<usize>,
    /// Print a machine-readable summary instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs an `attnflow attention` subcommand.
pub fn run(command: AttentionCommand) -> CliResult {
    match command {
        AttentionCommand::Sdpa(args) => sdpa(&args),
        AttentionCommand::Inspect(args) => super::inspect::inspect(&args),
        AttentionCommand::Blend(args) => super::inspect::blend_maps(&args),
    }
}

fn sdpa(args: &SdpaArgs) -> CliResult {
    let input = &args.input;
    let tensors = load_tensors(input)?;
    let require = |name: &str| -> Result<&Tensor, CliError> {
        tensors.get(name).ok_or_else(|| {
            let mut found: Vec<&str> = tensors.keys().map(String::as_str).collect();
            found.sort_unstable();
            CliError::bad_input(miette!(
                "{}: no tensor named `{name}` (the file holds: {})",
                input.display(),
                if found.is_empty() {
                    "nothing".to_string()
                } else {
                    found.join(", ")
                }
            ))
        })
    };
    let (q, k, v) = (require("q")?, require("k")?, require("v")?);
    let in_file = |error: CoreError| match error {
        CoreError::Candle(error) => CliError::failed(miette!("{}: {error}", input.display())),
        other => CliError::bad_input(miette!("{}: {other}", input.display())),
    };

    let mut mask = AttentionMask::none().with_causal(args.causal);
    if let Some(user_mask) = tensors.get("mask") {
        mask = if user_mask.dtype().is_float() {
            mask.with_additive(user_mask.clone())
        } else {
            mask.with_allowed(user_mask.clone())
        };
    }
    if let Some(padding) = tensors.get("key_padding") {
        mask = mask.with_key_padding(padding.clone());
    }

    let multi_head = tensors.contains_key("q_proj.weight");
    let (output, weights) = if multi_head {
        let heads = args.heads.ok_or_else(|| {
            CliError::bad_input(miette!(
                "{} holds projection weights (multi-head attention): give the number of heads with --heads",
                input.display()
            ))
        })?;
        if args.scale.is_some() {
            return Err(CliError::bad_input(miette!(
                "--scale applies to plain attention; multi-head attention scales by 1/sqrt(head width)"
            )));
        }
        let projection =
            |name: &str| -> Result<&Tensor, CliError> { require(&format!("{name}.weight")) };
        let (q_proj, k_proj, v_proj) = (
            projection("q_proj")?,
            projection("k_proj")?,
            projection("v_proj")?,
        );
        projection("out_proj")?;
        let width = |t: &Tensor, axis: usize, name: &str| -> Result<usize, CliError> {
            t.dims()
                .get(axis)
                .copied()
                .filter(|_| t.rank() == 2)
                .ok_or_else(|| {
                    CliError::bad_input(miette!(
                        "{}: tensor `{name}` must be a matrix (out, in), got shape {:?}",
                        input.display(),
                        t.dims()
                    ))
                })
        };
        let config = MultiHeadAttentionConfig {
            embed_dim: width(q_proj, 0, "q_proj.weight")?,
            num_heads: heads,
            key_dim: Some(width(k_proj, 1, "k_proj.weight")?),
            value_dim: Some(width(v_proj, 1, "v_proj.weight")?),
            bias: tensors.contains_key("q_proj.bias"),
        };
        let vb = VarBuilder::from_tensors(tensors.clone(), q.dtype(), &Device::Cpu);
        let module = MultiHeadAttention::new(&config, vb).map_err(|error| match error {
            CoreError::Candle(candle) => CliError::bad_input(miette!(
                "{}: projection weights do not fit a block of width {} with {heads} heads: {candle}",
                input.display(),
                config.embed_dim
            )),
            other => in_file(other),
        })?;
        let (output, weights) = module.forward(q, k, v, &mask, true).map_err(in_file)?;
        (output, weights.expect("weights were requested"))
    } else {
        let options = SdpaOptions { scale: args.scale };
        let attended = scaled_dot_product_attention(q, k, v, &mask, &options).map_err(in_file)?;
        (attended.output, attended.weights)
    };

    let outputs = [("output", &output), ("weights", &weights)];
    let bytes = safetensors::serialize(outputs, None)
        .map_err(|error| CliError::failed(miette!("cannot encode the results: {error}")))?;
    write_atomically(&args.output, &bytes).map_err(|error| {
        CliError::failed(miette!("cannot write {}: {error}", args.output.display()))
    })?;

    let mode = if multi_head {
        "multi-head"
    } else {
        "scaled dot-product"
    };
    if args.json {
        let summary = serde_json::json!({
            "mode": mode,
            "input": input,
            "output_file": args.output,
            "dtype": format!("{:?}", output.dtype()).to_lowercase(),
            "output_shape": output.dims(),
            "weights_shape": weights.dims(),
            "causal": args.causal,
        });
        println!("{summary}");
    } else {
        println!("{mode} attention on {}", input.display());
        for (name, tensor) in outputs {
            println!(
                "  {name:<8} {:<20} {:?}",
                shape_text(tensor),
                tensor.dtype()
            );
        }
        println!("wrote {}", args.output.display());
    }
    Ok(())
}

/// A shape as users write it: `(2, 4, 6, 8)`.
fn shape_text(tensor: &Tensor) -> String {
    let dims: Vec<String> = tensor.dims().iter().map(usize::to_string).collect();
    format!("({})", dims.join(", "))
}

/// Reads every tensor of a safetensors file onto the CPU. `bool` tensors
/// (which candle lacks) become `u8` with the same 0/1 values.
pub(crate) fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|error| CliError::bad_input(miette!("cannot read {}: {error}", path.display())))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|error| {
        CliError::bad_input(miette!(
            "{} is not a valid safetensors file: {error}",
            path.display()
        ))
    })?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::BOOL | safetensors::Dtype::U8 => DType::U8,
            safetensors::Dtype::U32 => DType::U32,
            safetensors::Dtype::I64 => DType::I64,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(CliError::bad_input(miette!(
                    "{}: tensor `{name}` has dtype {other:?}, which attention does not take (use f32, f64, f16, bf16, or bool/u8 for masks)",
                    path.display()
                )))
            }
        };
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|error| {
                CliError::bad_input(miette!("{}: tensor `{name}`: {error}", path.display()))
            })?;
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}
