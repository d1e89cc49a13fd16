//! `attnflow eval-lm`: the perplexity of a text file under a decoder, with
//! a sliding window for texts longer than the context, and a progress bar.
//! The work is attnflow-models' `perplexity`.

use std::path::PathBuf;

use attnflow_models::{perplexity, PerplexityOptions, PretrainedDecoder};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use miette::miette;

use super::embed::model_error;
use crate::error::{CliError, CliResult};

/// Arguments of `attnflow eval-lm`.
#[derive(Debug, Args)]
pub struct EvalLmArgs {
    /// The decoder: a Hugging Face directory (llama, mistral, qwen2, gpt2)
    /// or a GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// A UTF-8 text file to score.
    #[arg(long)]
    text: PathBuf,
    /// Tokens per window (default: the model's context, at most 1024).
    #[arg(long)]
    context: Option<usize>,
    /// Tokens each window advances by (default: half the context); every
    /// scored token sees at least `context − stride` tokens before it.
    #[arg(long)]
    stride: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `attnflow eval-lm`.
pub fn run(args: EvalLmArgs) -> CliResult {
    let text = std::fs::read_to_string(&args.text).map_err(|error| {
        CliError::bad_input(miette!("cannot read {}: {error}", args.text.display()))
    })?;
    let decoder = PretrainedDecoder::open(&args.model).map_err(model_error)?;
    let context = args
        .context
        .unwrap_or_else(|| decoder.config.max_positions.min(1024));
    let options = PerplexityOptions {
        context,
        stride: args.stride.unwrap_or((context / 2).max(1)),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("scoring [{bar:30}] {pos}/{len} tokens ({per_sec}, {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let report = perplexity(&decoder, &text, options, |progress| {
        bar.set_length(progress.total as u64);
        bar.set_position(progress.scored as u64);
    })
    .map_err(|error| match error {
        attnflow_models::ModelError::Input { input, message } if input == "text" => {
            CliError::bad_input(miette!("{}: {message}", args.text.display()))
        }
        other => model_error(other),
    })?;
    bar.finish_and_clear();
    if args.json {
        let value = serde_json::json!({
            "model": args.model,
            "text": args.text,
            "report": report,
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "perplexity {:.4} over {} ({} tokens, {} scored; {} window{} of {} tokens, stride {})",
        report.perplexity,
        args.text.display(),
        report.tokens,
        report.scored,
        report.windows,
        if report.windows == 1 { "" } else { "s" },
        report.options.context,
        report.options.stride
    );
    println!(
        "mean NLL {:.4} nats/token · {:.4} bits/byte · {:.1} s ({:.0} tokens/s through the model)",
        report.mean_nll, report.bits_per_byte, report.seconds, report.tokens_per_second
    );
    Ok(())
}
