//! Sentence embeddings of a text file (one text per line), written as JSON
//! lines or safetensors, with a summary of what was embedded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::pretrained::{Embeddings, PretrainedBert};
use crate::sentence::Pooling;

/// Reads a file's lines as texts, refusing bytes that are not UTF-8 with
/// the line and column. A final newline ends the last line; it does not
/// start an empty one. `\r\n` endings are accepted.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let place = path.display().to_string();
    let fault = |location: String, message: String| ModelError::TextFile { location, message };
    let bytes = std::fs::read(path)
        .map_err(|error| fault(place.clone(), format!("cannot read: {error}")))?;
    if bytes.is_empty() {
        return Err(fault(place, "is empty: give one text per line".into()));
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    body.split(|&byte| byte == b'\n')
        .enumerate()
        .map(|(index, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            String::from_utf8(line.to_vec()).map_err(|error| {
                let column = error.utf8_error().valid_up_to() + 1;
                fault(
                    format!("{place}:{}:{column}", index + 1),
                    format!("not valid UTF-8 (byte {column} of the line)"),
                )
            })
        })
        .collect()
}

/// One JSON object per text, fields in this order:
/// `{"line", "text", "tokens", "truncated", "embedding"}`.
pub fn jsonl(texts: &[String], embedded: &Embeddings) -> Result<Vec<u8>> {
    let rows = embedded.embeddings.to_vec2::<f32>()?;
    let mut out = Vec::new();
    for (index, (text, embedding)) in texts.iter().zip(rows).enumerate() {
        // Written by hand so the fields keep this order (serde_json's maps
        // sort keys). Strings and finite floats always encode.
        let line = format!(
            "{{\"line\":{},\"text\":{},\"tokens\":{},\"truncated\":{},\"embedding\":{}}}",
            index + 1,
            serde_json::to_string(text).unwrap_or_default(),
            embedded.token_counts[index],
            embedded.truncated[index],
            serde_json::to_string(&embedding).unwrap_or_default(),
        );
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// A safetensors file: `embeddings` (texts, width) f32, `token_counts` u32,
/// `truncated` u8, with the model, input and recipe in the metadata.
pub fn safetensors(model: &PretrainedBert, input: &Path, embedded: &Embeddings) -> Result<Vec<u8>> {
    let count = embedded.token_counts.len();
    let token_counts: Vec<u32> = embedded.token_counts.iter().map(|&n| n as u32).collect();
    let token_counts = Tensor::from_vec(token_counts, count, &Device::Cpu)?;
    let truncated: Vec<u8> = embedded
        .truncated
        .iter()
        .map(|&cut| u8::from(cut))
        .collect();
    let truncated = Tensor::from_vec(truncated, count, &Device::Cpu)?;
    let embeddings = embedded.embeddings.to_dtype(DType::F32)?;
    let metadata = HashMap::from([
        ("model".to_string(), model.directory.display().to_string()),
        ("input".to_string(), input.display().to_string()),
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
    safetensors::serialize(tensors, Some(metadata)).map_err(|error| {
        ModelError::Candle(candle_core::Error::Msg(format!(
            "cannot encode the embeddings: {error}"
        )))
    })
}

/// What an embedding run did, for people and machines.
#[derive(Clone, Debug, Serialize)]
pub struct EmbedSummary {
    /// The model directory.
    pub model: PathBuf,
    /// The input file.
    pub input: PathBuf,
    /// The output file (`None`: standard output).
    pub output: Option<PathBuf>,
    /// `jsonl` or `safetensors`.
    pub format: String,
    /// Texts embedded.
    pub texts: usize,
    /// Embedding width.
    pub width: usize,
    /// The model's layers.
    #[serde(skip)]
    pub layers: usize,
    /// How tokens were pooled.
    pub pooling: Pooling,
    /// Whether embeddings have unit length.
    pub normalized: bool,
    /// The longest input in tokens.
    pub max_tokens: usize,
    /// Lines (1-based) whose text was cut to `max_tokens`.
    pub truncated_lines: Vec<usize>,
    /// Lines (1-based) that are empty.
    pub empty_lines: Vec<usize>,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Seconds to load the model.
    pub load_seconds: f64,
    /// Seconds to embed.
    pub embed_seconds: f64,
    /// Texts per second while embedding.
    pub texts_per_second: f64,
}

impl EmbedSummary {
    /// The summary as people read it.
    pub fn to_text(&self) -> String {
        let mut lines = vec![format!(
            "embedded {} texts with {} ({} layers, width {}; {} pooling{}, at most {} tokens)",
            self.texts,
            self.model.display(),
            self.layers,
            self.width,
            format!("{:?}", self.pooling).to_lowercase(),
            if self.normalized { ", unit length" } else { "" },
            self.max_tokens
        )];
        if !self.truncated_lines.is_empty() {
            lines.push(format!(
                "  {} texts were cut to {} tokens (lines {})",
                self.truncated_lines.len(),
                self.max_tokens,
                list(&self.truncated_lines)
            ));
        }
        if !self.empty_lines.is_empty() {
            lines.push(format!(
                "  {} lines are empty and were embedded as empty texts (lines {})",
                self.empty_lines.len(),
                list(&self.empty_lines)
            ));
        }
        lines.push(format!(
            "  {:.1} texts/s ({:.2} s; model loaded in {:.2} s)",
            self.texts_per_second, self.embed_seconds, self.load_seconds
        ));
        if let Some(path) = &self.output {
            lines.push(format!("wrote {}", path.display()));
        }
        lines.join("\n") + "\n"
    }
}

/// Lines (1-based) of texts that match `predicate`.
pub fn lines_where(count: usize, predicate: impl Fn(usize) -> bool) -> Vec<usize> {
    (0..count)
        .filter(|&index| predicate(index))
        .map(|index| index + 1)
        .collect()
}

/// Up to ten numbers, then a count of the rest.
fn list(numbers: &[usize]) -> String {
    let shown: Vec<String> = numbers.iter().take(10).map(usize::to_string).collect();
    match numbers.len().saturating_sub(10) {
        0 => shown.join(", "),
        more => format!("{}, and {more} more", shown.join(", ")),
    }
}
