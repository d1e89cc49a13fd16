//! `attnflow embed`: sentence embeddings of a text file with a pretrained
//! BERT-family model directory.

use std::path::PathBuf;
use std::time::Instant;

use attnflow_base::write_atomically;
use attnflow_models::embedding_file::{self, EmbedSummary};
use attnflow_models::{ModelError, PretrainedBert};
use candle_core::Device;
use clap::{Args, ValueEnum};
use miette::miette;

use crate::error::{CliError, CliResult};
use crate::output::progress_bar;

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
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
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
    if args.format == Format::Safetensors && args.output.is_none() {
        return Err(CliError::bad_input(miette!(
            "--format safetensors writes a binary file: give it with --output FILE"
        )));
    }
    let texts = embedding_file::read_texts(&args.input)?;
    let started = Instant::now();
    let model = PretrainedBert::open(&args.model, &Device::Cpu)?;
    let load_seconds = started.elapsed().as_secs_f64();

    let progress = progress_bar(
        texts.len() as u64,
        "{bar:40} {pos}/{len} texts, {per_sec}, eta {eta}",
        false,
    );
    let started = Instant::now();
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch_size = args.batch_size as usize;
    let embedded = model
        .embed(&text_refs, batch_size, |done| {
            progress.set_position(done as u64)
        })
        .map_err(|error| match error {
            // Texts are numbered from 1 in the order of the file's lines.
            ModelError::Input { input, message } => CliError::bad_input(miette!(
                "{}: {}: {message}",
                args.input.display(),
                input.replace("text ", "line ")
            )),
            other => other.into(),
        })?;
    progress.finish_and_clear();
    let embed_seconds = started.elapsed().as_secs_f64();

    let bytes = match args.format {
        Format::Jsonl => embedding_file::jsonl(&texts, &embedded)?,
        Format::Safetensors => embedding_file::safetensors(&model, &args.input, &embedded)?,
    };
    write_output(args.output.as_deref(), &bytes)?;
    let summary = EmbedSummary {
        model: model.directory.clone(),
        input: args.input.clone(),
        output: args.output.clone(),
        format: format!("{:?}", args.format).to_lowercase(),
        texts: texts.len(),
        width: model.config.hidden_size,
        layers: model.config.num_hidden_layers,
        pooling: model.sentence.pooling,
        normalized: model.sentence.normalize,
        max_tokens: model.sentence.max_length,
        truncated_lines: embedding_file::lines_where(texts.len(), |i| embedded.truncated[i]),
        empty_lines: embedding_file::lines_where(texts.len(), |i| texts[i].trim().is_empty()),
        batch_size,
        load_seconds,
        embed_seconds,
        texts_per_second: texts.len() as f64 / embed_seconds.max(1e-9),
    };
    let text = if args.json {
        serde_json::to_string(&summary).unwrap_or_default() + "\n"
    } else {
        summary.to_text()
    };
    // With JSON lines on stdout, the summary goes to stderr so the two never mix.
    if args.output.is_none() {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    Ok(())
}

/// Writes the embeddings to `path` atomically, or to standard output.
fn write_output(path: Option<&std::path::Path>, bytes: &[u8]) -> CliResult {
    match path {
        Some(path) => write_atomically(path, bytes)
            .map_err(|error| CliError::failed(miette!("cannot write {}: {error}", path.display()))),
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(bytes)
                .and_then(|()| stdout.flush())
                .map_err(|error| CliError::failed(miette!("cannot write to stdout: {error}")))
        }
    }
}

/// A model error as a CLI error: the user's input (exit 2) or the work (1).
pub(crate) fn model_error(error: ModelError) -> CliError {
    error.into()
}
