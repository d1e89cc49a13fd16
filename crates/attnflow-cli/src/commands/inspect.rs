//! `attnflow attention inspect` and `attnflow attention blend`: look inside
//! attention (attnflow-inspect).

use std::path::PathBuf;

use attnflow_core::analysis::{HeadFusion, SeededModelConfig};
use attnflow_inspect::files::{self, Summary};
use attnflow_inspect::{
    blend_files, read_tokens, AnalysisOptions, AttentionSource, BlendRequest, Input, Inspector,
};
use clap::Args;
use miette::miette;

use crate::error::{CliError, CliResult};
use crate::output::{print_json, progress_bar};

/// Arguments of `attnflow attention inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A safetensors file of attention weights: one tensor
    /// (layers, batch, heads, n, n) or (layers, heads, n, n), or one tensor
    /// per layer named with a trailing layer number (`layer.0`,
    /// `attentions.1`, ...), each (heads, n, n) or (batch, heads, n, n). Without it, a model with
    /// seeded weights is built (see --layers, --heads, --width, --seed).
    weights: Option<PathBuf>,
    /// A pretrained model: a Hugging Face directory (BERT, llama, mistral,
    /// qwen2, gpt2: config.json, model.safetensors, tokenizer.json) or a
    /// GGUF file. Runs --text through it and inspects every layer's
    /// attention per query head, labelled with its tokens (and, for grouped
    /// heads, the key/value head each query head shares).
    #[arg(long, conflicts_with_all = ["weights", "tokens"], requires = "text")]
    model: Option<PathBuf>,
    /// A training checkpoint directory (`attnflow train --out DIR`): runs
    /// the input through the trained model. Text tasks take characters
    /// (--text); pair tasks take their words; synthetic tasks take token
    /// ids (--text "3 1 4 1 5" or one id per line of --tokens).
    #[arg(long, conflicts_with_all = ["weights", "model", "blueprint"])]
    checkpoint: Option<PathBuf>,
    /// A blueprint spec (TOML): builds the model with seeded weights (--seed)
    /// and runs the input through it; tokens are ids below the blueprint's
    /// vocabulary (--text "3 1 4" or one id per line of --tokens).
    #[arg(long, conflicts_with_all = ["weights", "model"])]
    blueprint: Option<PathBuf>,
    /// The input text; for a seeded model each character is a token.
    #[arg(long, conflicts_with = "tokens")]
    text: Option<String>,
    /// A UTF-8 file with one token per line (labels for a weights file, or
    /// the seeded model's input).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Batch element to inspect, for weights with a batch axis.
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Seeded model: number of attention blocks.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Seeded model: heads per block.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Seeded model: embedding width (divisible by --heads).
    #[arg(long, default_value_t = 32)]
    width: usize,
    /// Seeded model: seed of every weight.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seeded model: causal attention (a decoder) instead of bidirectional.
    #[arg(long)]
    causal: bool,
    /// Rollout head fusion: mean, max or min.
    #[arg(long, default_value = "mean")]
    fusion: String,
    /// Rollout: fraction of each row's lowest weights to discard, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    discard: f64,
    /// Rollout: first layer taken into account (0-based).
    #[arg(long, default_value_t = 0)]
    start_layer: usize,
    /// The output token whose relevance is shown (0-based; default: the last).
    #[arg(long)]
    target: Option<usize>,
    /// Also write the raw maps as `attention.safetensors` in --out: one
    /// tensor `attentions` (layers, heads, n, n), f32, Hugging Face's layout
    /// (it reads back as a weights file).
    #[arg(long)]
    save_weights: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `attnflow attention blend`.
#[derive(Debug, Args)]
pub struct BlendArgs {
    /// The first map, `A_v`: a CSV file of numbers (one row per line) or a
    /// safetensors file with one 2-D tensor (or name it with --name).
    a: PathBuf,
    /// The second map, `A_l`, of the same shape and format.
    b: PathBuf,
    /// Weight of the first map, in [0, 1] (§8.1).
    #[arg(long)]
    alpha: f64,
    /// The tensor to read from safetensors inputs.
    #[arg(long)]
    name: Option<String>,
    /// Row sums may differ from 1 by this much.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// A UTF-8 file with one token per line, to label the pictures.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Directory for blend.csv, blend.png and blend.svg (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl InspectArgs {
    fn source(&self) -> AttentionSource {
        if let Some(directory) = &self.checkpoint {
            AttentionSource::Checkpoint(directory.clone())
        } else if let Some(spec) = &self.blueprint {
            AttentionSource::Blueprint {
                spec: spec.clone(),
                seed: self.seed,
            }
        } else if let Some(model) = &self.model {
            AttentionSource::Pretrained(model.clone())
        } else if let Some(path) = &self.weights {
            AttentionSource::WeightsFile {
                path: path.clone(),
                batch: self.batch,
            }
        } else {
            AttentionSource::Seeded(SeededModelConfig {
                layers: self.layers,
                heads: self.heads,
                width: self.width,
                seed: self.seed,
                causal: self.causal,
            })
        }
    }

    fn input(&self) -> Result<Input, CliError> {
        Ok(match (&self.text, &self.tokens) {
            (Some(text), _) => Input::Text(text.clone()),
            (None, Some(path)) => Input::Tokens(read_tokens(path)?),
            (None, None) => Input::Nothing,
        })
    }
}

/// Runs `attnflow attention inspect`.
pub fn inspect(args: &InspectArgs) -> CliResult {
    let fusion: HeadFusion = args
        .fusion
        .parse()
        .map_err(|error| CliError::bad_input(miette!("--fusion: {error}")))?;
    let options = AnalysisOptions {
        fusion,
        discard: args.discard,
        start_layer: args.start_layer,
        target: args.target,
    };
    let inspection = Inspector::open(&args.source())?.inspect(&args.input()?)?;
    let analysis = inspection.analyse(&options)?;
    let bar = progress_bar(
        files::file_count(&inspection) as u64,
        "{msg} [{bar:30}] {pos}/{len} files",
        args.json,
    );
    bar.set_message("drawing");
    let mut written = files::write(&inspection, &analysis, &args.out, || bar.inc(1))?;
    bar.finish_and_clear();
    if args.save_weights {
        written
            .files
            .push(files::write_weights(&inspection, &args.out)?);
    }
    let summary = Summary::new(&inspection, &analysis, &written);
    if args.json {
        return print_json(&summary);
    }
    print!("{}", summary.to_text(&analysis));
    Ok(())
}

/// Runs `attnflow attention blend`.
pub fn blend_maps(args: &BlendArgs) -> CliResult {
    let blend = blend_files(&BlendRequest {
        a: args.a.clone(),
        b: args.b.clone(),
        alpha: args.alpha,
        name: args.name.clone(),
        tolerance: args.tolerance,
        tokens: args.tokens.clone(),
        out: args.out.clone(),
    })?;
    if args.json {
        return print_json(&blend);
    }
    println!(
        "blend {} · A_v + {} · A_l of {} × {} maps: rows sum to 1 within {:.1e}",
        blend.alpha,
        1.0 - blend.alpha,
        blend.rows,
        blend.columns,
        blend.max_row_sum_error
    );
    println!(
        "wrote {} to {}",
        blend.files.join(", "),
        blend.out.display()
    );
    Ok(())
}
