//! `attnflow attention ...`: run the attention engine on the user's tensors.

use std::path::PathBuf;

use attnflow_core::file::{attend_file, write_tensors, FileOptions};
use clap::{Args, Subcommand};

use crate::error::CliResult;
use crate::output::print_json;

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
    let options = FileOptions {
        causal: args.causal,
        scale: args.scale,
        heads: args.heads,
    };
    let attended = attend_file(&args.input, &options)?;
    let outputs = [("output", &attended.output), ("weights", &attended.weights)];
    write_tensors(&args.output, &outputs)?;
    let mode = if attended.multi_head {
        "multi-head"
    } else {
        "scaled dot-product"
    };
    if args.json {
        return print_json(&serde_json::json!({
            "mode": mode,
            "input": args.input,
            "output_file": args.output,
            "dtype": format!("{:?}", attended.output.dtype()).to_lowercase(),
            "output_shape": attended.output.dims(),
            "weights_shape": attended.weights.dims(),
            "causal": args.causal,
        }));
    }
    println!("{mode} attention on {}", args.input.display());
    for (name, tensor) in outputs {
        let dims: Vec<String> = tensor.dims().iter().map(usize::to_string).collect();
        let shape = format!("({})", dims.join(", "));
        println!("  {name:<8} {shape:<20} {:?}", tensor.dtype());
    }
    println!("wrote {}", args.output.display());
    Ok(())
}
