//! `attnflow generate`: text from a decoder (a Hugging Face directory or a
//! GGUF file) with a key/value cache, greedy or sampled, with the prefill
//! and decode speeds; `--inspect` writes the attention report over the
//! prompt and the generated tokens. The work is attnflow-models'
//! `generate`.

use std::io::Write as _;
use std::path::PathBuf;

use super::embed::model_error;
use crate::error::{CliError, CliResult};
use attnflow_inspect::files::{self, Summary};
use attnflow_inspect::AnalysisOptions;
use attnflow_models::{generate, GenerateOptions, Generation, PretrainedDecoder, StopReason};
use clap::Args;

/// Arguments of `attnflow generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The decoder: a Hugging Face directory (llama, mistral, qwen2, gpt2)
    /// or a GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Most new tokens.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature; 0 takes the most likely token every time.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling: sample among the most likely tokens whose
    /// probabilities first sum to this (1 keeps all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the sampler (the same seed gives the same text).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the attention report (heatmaps per query head, rollout, flow,
    /// statistics) over the prompt and the generated tokens to this
    /// directory.
    #[arg(long, value_name = "DIR")]
    inspect: Option<PathBuf>,
    /// Print one JSON object instead of streaming the text.
    #[arg(long)]
    json: bool,
}

fn stop_text(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndOfSequence => "end of sequence",
        StopReason::MaxTokens => "max tokens",
        StopReason::ContextFull => "context full",
    }
}

/// Runs `attnflow generate`.
pub fn run(args: GenerateArgs) -> CliResult {
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop_at_eos: true,
    };
    options.check().map_err(model_error)?;
    let decoder = PretrainedDecoder::open(&args.model).map_err(model_error)?;
    let mut stdout = std::io::stdout();
    if !args.json {
        print!("{}", args.prompt);
        let _ = stdout.flush();
    }
    let json = args.json;
    let generation = generate(&decoder, &args.prompt, &options, |text| {
        if !json {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    })
    .map_err(model_error)?;
    let report = match &args.inspect {
        Some(directory) => Some(inspect_generation(&decoder, &generation, directory)?),
        None => None,
    };
    if args.json {
        let value = serde_json::json!({
            "model": args.model,
            "prompt": args.prompt,
            "prompt_ids": generation.prompt.ids,
            "generated_ids": generation.generated,
            "text": generation.text,
            "stop": generation.stop,
            "prefill": {
                "tokens": generation.prompt.ids.len(),
                "seconds": generation.prefill_seconds,
                "tokens_per_second": generation.prefill_tokens_per_second,
            },
            "decode": {
                "steps": generation.decode_steps,
                "seconds": generation.decode_seconds,
                "tokens_per_second": generation.decode_tokens_per_second,
            },
            "inspect": report,
        });
        println!("{value}");
        return Ok(());
    }
    println!();
    eprintln!(
        "prefill: {} tokens in {:.1} ms ({:.0} tokens/s) · decode: {} tokens in {:.1} ms ({:.1} tokens/s) · stopped at {}",
        generation.prompt.ids.len(),
        generation.prefill_seconds * 1e3,
        generation.prefill_tokens_per_second,
        generation.decode_steps,
        generation.decode_seconds * 1e3,
        generation.decode_tokens_per_second,
        stop_text(generation.stop)
    );
    if let Some(directory) = &args.inspect {
        eprintln!(
            "wrote the attention report over {} tokens to {} (open report.html)",
            generation.prompt.ids.len() + generation.generated.len(),
            directory.display()
        );
    }
    Ok(())
}

/// `--inspect`: the attention report over the prompt and the generated
/// tokens, written to `directory`.
fn inspect_generation(
    decoder: &PretrainedDecoder,
    generation: &Generation,
    directory: &std::path::Path,
) -> Result<Summary, CliError> {
    let ids: Vec<u32> = generation
        .prompt
        .ids
        .iter()
        .chain(&generation.generated)
        .copied()
        .collect();
    let inspection = attnflow_inspect::inspect_decoder(decoder, &ids)?;
    let analysis = inspection.analyse(&AnalysisOptions::default())?;
    let written = files::write(&inspection, &analysis, directory, || {})?;
    Ok(Summary::new(&inspection, &analysis, &written))
}
