//! `attnflow embed`: sentence embeddings of a text file with a pretrained
//! BERT-family model directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use attnflow_models::{ModelError, PretrainedBert};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use miette::miette;

use crate::error::{CliError, CliResult};
use attnflow_base::write_atomically;

/// Arguments of `attnflow embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// The Hugging Face model directory: config.json, model.safetensors and
    /// tokenizer.json (plus the sentence-transformers files, if any).
    #[arg(long)]
    model: PathBuf,
    /// UTF-8 text file, one text per line (an empty line is an empty text).
    #[arg(long)]
    input: PathBuf,
    /// Output format: JSON lines (one object per input line) or a
    /// safetensors file with `embeddings` (texts, width).
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
    /// Where to write (replaced atomically). JSON lines go to stdout when
    /// absent; safetensors needs a file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// How embeddings are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `{"line", "text", "tokens", "truncated", "embedding"}` per line.
    Jsonl,
    /// `embeddings` (texts, width) f32, `token_counts` u32, `truncated` u8.
    Safetensors,
}

/// Runs `attnflow embed`.
pub fn run(args: EmbedArgs) -> CliResult {
    if args.batch_size == 0 {
        return Err(CliError::bad_input(miette!(
            "--batch-size must be at least 1"
        )));
    }
    if args.format == Format::Safetensors && args.output.is_none() {
        return Err(CliError::bad_input(miette!(
            "--format safetensors writes a binary file: give it with --output FILE"
        )));
    }
    let texts = read_lines(&args.input)?;

    let started = Instant::now();
    let model = PretrainedBert::open(&args.model, &Device::Cpu).map_err(model_error)?;
    let load_seconds = started.elapsed().as_secs_f64();

    let progress = ProgressBar::new(texts.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} texts, {per_sec}, eta {eta}")
            .expect("the template is valid"),
    );
    let started = Instant::now();
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embedded = model
        .embed(&text_refs, args.batch_size, |done| {
            progress.set_position(done as u64)
        })
        .map_err(|error| match error {
            // Texts are numbered from 1 in the order of the file's lines.
            ModelError::Input { input, message } => CliError::bad_input(miette!(
                "{}: {}: {message}",
                args.input.display(),
                input.replace("text ", "line ")
            )),
            other => model_error(other),
        })?;
    progress.finish_and_clear();
    let embed_seconds = started.elapsed().as_secs_f64();

    let bytes = match args.format {
        Format::Jsonl => jsonl(&texts, &embedded)?,
        Format::Safetensors => safetensors_bytes(&model, &args, &embedded)?,
    };
    match &args.output {
        Some(path) => write_atomically(path, &bytes).map_err(|error| {
            CliError::failed(miette!("cannot write {}: {error}", path.display()))
        })?,
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .map_err(|error| CliError::failed(miette!("cannot write to stdout: {error}")))?;
        }
    }

    let truncated_lines: Vec<usize> = embedded
        .truncated
        .iter()
        .enumerate()
        .filter(|(_, cut)| **cut)
        .map(|(index, _)| index + 1)
        .collect();
    let empty_lines: Vec<usize> = texts
        .iter()
        .enumerate()
        .filter(|(_, text)| text.trim().is_empty())
        .map(|(index, _)| index + 1)
        .collect();
    let per_second = texts.len() as f64 / embed_seconds.max(1e-9);
    let summary = serde_json::json!({
        "model": model.directory,
        "input": args.input,
        "output": args.output,
        "format": match args.format { Format::Jsonl => "jsonl", Format::Safetensors => "safetensors" },
        "texts": texts.len(),
        "width": model.config.hidden_size,
        "pooling": model.sentence.pooling,
        "normalized": model.sentence.normalize,
        "max_tokens": model.sentence.max_length,
        "truncated_lines": truncated_lines,
        "empty_lines": empty_lines,
        "batch_size": args.batch_size,
        "load_seconds": load_seconds,
        "embed_seconds": embed_seconds,
        "texts_per_second": per_second,
    });
    // With JSON lines on stdout, the summary goes to stderr so the two never mix.
    let to_stderr = args.output.is_none();
    let say = |line: String| {
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    if args.json {
        say(summary.to_string());
        return Ok(());
    }
    say(format!(
        "embedded {} texts with {} ({} layers, width {}; {} pooling{}, at most {} tokens)",
        texts.len(),
        model.directory.display(),
        model.config.num_hidden_layers,
        model.config.hidden_size,
        format!("{:?}", model.sentence.pooling).to_lowercase(),
        if model.sentence.normalize {
            ", unit length"
        } else {
            ""
        },
        model.sentence.max_length
    ));
    if !truncated_lines.is_empty() {
        say(format!(
            "  {} texts were cut to {} tokens (lines {})",
            truncated_lines.len(),
            model.sentence.max_length,
            list(&truncated_lines)
        ));
    }
    if !empty_lines.is_empty() {
        say(format!(
            "  {} lines are empty and were embedded as empty texts (lines {})",
            empty_lines.len(),
            list(&empty_lines)
        ));
    }
    say(format!(
        "  {per_second:.1} texts/s ({embed_seconds:.2} s; model loaded in {load_seconds:.2} s)"
    ));
    if let Some(path) = &args.output {
        say(format!("wrote {}", path.display()));
    }
    Ok(())
}

/// Reads the input's lines, refusing bytes that are not UTF-8 with the
/// line and column. A final newline ends the last line; it does not start
/// an empty one. `\r\n` endings are accepted.
fn read_lines(path: &Path) -> Result<Vec<String>, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|error| CliError::bad_input(miette!("cannot read {}: {error}", path.display())))?;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if bytes.is_empty() {
        return Err(CliError::bad_input(miette!(
            "{} is empty: give one text per line",
            path.display()
        )));
    }
    body.split(|&byte| byte == b'\n')
        .enumerate()
        .map(|(index, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            String::from_utf8(line.to_vec()).map_err(|error| {
                let column = error.utf8_error().valid_up_to() + 1;
                CliError::bad_input(miette!(
                    "{}:{}:{column}: not valid UTF-8 (byte {column} of the line)",
                    path.display(),
                    index + 1
                ))
            })
        })
        .collect()
}

fn jsonl(texts: &[String], embedded: &attnflow_models::Embeddings) -> Result<Vec<u8>, CliError> {
    let rows = embedded
        .embeddings
        .to_vec2::<f32>()
        .map_err(|error| CliError::failed(miette!("cannot read the embeddings: {error}")))?;
    let mut out = Vec::new();
    for (index, (text, embedding)) in texts.iter().zip(rows).enumerate() {
        // Written by hand so the fields keep this order (serde_json's maps sort keys).
        let encode = |error: serde_json::Error| {
            CliError::failed(miette!("cannot encode line {}: {error}", index + 1))
        };
        let line = format!(
            "{{\"line\":{},\"text\":{},\"tokens\":{},\"truncated\":{},\"embedding\":{}}}",
            index + 1,
            serde_json::to_string(text).map_err(encode)?,
            embedded.token_counts[index],
            embedded.truncated[index],
            serde_json::to_string(&embedding).map_err(encode)?,
        );
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

fn safetensors_bytes(
    model: &PretrainedBert,
    args: &EmbedArgs,
    embedded: &attnflow_models::Embeddings,
) -> Result<Vec<u8>, CliError> {
    let failed =
        |error: candle_core::Error| CliError::failed(miette!("cannot encode the results: {error}"));
    let count = embedded.token_counts.len();
    let token_counts: Vec<u32> = embedded.token_counts.iter().map(|&n| n as u32).collect();
    let token_counts = Tensor::from_vec(token_counts, count, &Device::Cpu).map_err(failed)?;
    let truncated: Vec<u8> = embedded
        .truncated
        .iter()
        .map(|&cut| u8::from(cut))
        .collect();
    let truncated = Tensor::from_vec(truncated, count, &Device::Cpu).map_err(failed)?;
    let embeddings = embedded.embeddings.to_dtype(DType::F32).map_err(failed)?;
    let metadata = std::collections::HashMap::from([
        ("model".to_string(), model.directory.display().to_string()),
        ("input".to_string(), args.input.display().to_string()),
        (
            "pooling".to_string(),
            format!("{:?}", model.sentence.pooling).to_lowercase(),
        ),
        (
            "normalized".to_string(),
            model.sentence.normalize.to_string(),
        ),
        (
            "max_tokens".to_string(),
            model.sentence.max_length.to_string(),
        ),
    ]);
    let tensors = [
        ("embeddings", &embeddings),
        ("token_counts", &token_counts),
        ("truncated", &truncated),
    ];
    safetensors::serialize(tensors, Some(metadata))
        .map_err(|error| CliError::failed(miette!("cannot encode the results: {error}")))
}

/// A model error as a CLI error: the user's input (exit 2) or the work (1).
pub(crate) fn model_error(error: ModelError) -> CliError {
    if error.is_input_fault() {
        CliError::bad_input(miette!("{error}"))
    } else {
        CliError::failed(miette!("{error}"))
    }
}

/// Up to ten numbers, then a count of the rest.
fn list(numbers: &[usize]) -> String {
    let shown: Vec<String> = numbers.iter().take(10).map(usize::to_string).collect();
    match numbers.len().saturating_sub(10) {
        0 => shown.join(", "),
        more => format!("{}, and {more} more", shown.join(", ")),
    }
}

/// Arguments of `attnflow bench embed`.
#[derive(Debug, Args)]
pub struct BenchEmbedArgs {
    /// The Hugging Face model directory (as for `attnflow embed`).
    #[arg(long)]
    model: PathBuf,
    /// Number of generated texts (4 to 40 words each).
    #[arg(long, default_value_t = 1000)]
    texts: usize,
    /// Texts per forward pass, for both tools.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Seed of the text generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The Python interpreter to try for sentence-transformers.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Skip sentence-transformers even when installed.
    #[arg(long)]
    no_python: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `attnflow bench embed`: the same generated texts through attnflow
/// and sentence-transformers, texts/s for both, their ratio and agreement.
pub fn bench(args: BenchEmbedArgs) -> CliResult {
    if args.batch_size == 0 || args.texts == 0 {
        return Err(CliError::bad_input(miette!(
            "--texts and --batch-size must be at least 1"
        )));
    }
    let config = attnflow_models::EmbedBenchConfig {
        texts: args.texts,
        batch_size: args.batch_size,
        python: (!args.no_python).then(|| args.python.clone()),
        seed: args.seed,
    };
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!(
        "embedding {} texts with attnflow, then the peer",
        args.texts
    ));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let report = attnflow_models::bench_embed(&args.model, &config).map_err(model_error)?;
    spinner.finish_and_clear();
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|error| CliError::failed(miette!("cannot encode JSON: {error}")))?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "bench embed: {} texts (mean {:.1} word pieces), batch {}, model {}",
        report.texts,
        report.mean_tokens,
        report.batch_size,
        report.model.display()
    );
    println!(
        "  attnflow               {:>8.1} texts/s ({:.2} s)",
        report.attnflow_texts_per_second, report.attnflow_seconds
    );
    match &report.peer {
        attnflow_models::PeerOutcome::Measured {
            seconds,
            texts_per_second,
            version,
            torch,
            threads,
            min_cosine,
            max_abs_difference,
        } => {
            println!(
                "  sentence-transformers  {texts_per_second:>8.1} texts/s ({seconds:.2} s; sentence-transformers {version}, torch {torch}, {threads} threads)"
            );
            if let Some(ratio) = report.ratio {
                println!("  ratio attnflow / sentence-transformers: {ratio:.2}×");
            }
            println!(
                "  agreement over {} texts: min cosine {min_cosine:.6}, max |difference| {max_abs_difference:.1e}",
                report.texts
            );
        }
        attnflow_models::PeerOutcome::Skipped { reason } => {
            println!("  sentence-transformers not run: {reason}");
        }
        attnflow_models::PeerOutcome::Failed { error } => {
            println!("  sentence-transformers failed: {error}");
        }
    }
    Ok(())
}
