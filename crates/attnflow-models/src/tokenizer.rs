//! Word-piece tokenization from `tokenizer.json` (the Hugging Face
//! `tokenizers` library, so ids match Python's exactly) and batching with
//! padding.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{ModelError, Result};

/// One text, tokenized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids, `[CLS] … [SEP]` included.
    pub ids: Vec<u32>,
    /// Segment ids (all zero for a single text).
    pub type_ids: Vec<u32>,
    /// The word pieces, as labels for reports (`[CLS]`, `hello`, `##s`, …).
    pub tokens: Vec<String>,
    /// Whether the text was cut to fit the maximum length.
    pub truncated: bool,
}

/// A batch of encodings padded to the longest, as tensors for
/// [`crate::BertModel::forward`].
#[derive(Clone, Debug)]
pub struct Batch {
    /// `(batch, n)` u32 token ids, padding filled with the pad id.
    pub input_ids: Tensor,
    /// `(batch, n)` u32 segment ids, zero on padding.
    pub token_type_ids: Tensor,
    /// `(batch, n)` u32, one for real tokens, zero for padding.
    pub attention_mask: Tensor,
    /// Real (unpadded) length of every row.
    pub lengths: Vec<usize>,
}

/// The tokenizer of a model directory, cutting every text to at most
/// `max_length` tokens (special tokens included), as transformers does with
/// `truncation=True`.
#[derive(Clone)]
pub struct BertTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    max_length: usize,
    pad_id: u32,
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BertTokenizer")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl BertTokenizer {
    /// Loads `tokenizer.json`. The file's own padding and truncation
    /// settings are replaced: batches are padded to their longest text and
    /// cut at `max_length`.
    pub fn from_file(path: &Path, max_length: usize, pad_id: u32) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "tokenizer.json holds the word-piece vocabulary and rules (save it with the Python tokenizer's `save_pretrained`)".to_string(),
            });
        }
        let mut inner =
            tokenizers::Tokenizer::from_file(path).map_err(|error| ModelError::Tokenizer {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
        inner.with_padding(None);
        let mut tokenizer = Self {
            inner,
            path: path.to_path_buf(),
            max_length: 0,
            pad_id,
        };
        tokenizer.set_max_length(max_length)?;
        Ok(tokenizer)
    }

    /// The longest encoding produced, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// A copy that cuts texts at `max_length` tokens instead.
    pub fn with_max_length(&self, max_length: usize) -> Result<Self> {
        let mut copy = self.clone();
        copy.set_max_length(max_length)?;
        Ok(copy)
    }

    fn set_max_length(&mut self, max_length: usize) -> Result<()> {
        // [CLS] and [SEP] need two places; fewer leaves no room for text.
        if max_length < 2 {
            return Err(ModelError::Tokenizer {
                path: self.path.clone(),
                message: format!("maximum length {max_length} leaves no room for [CLS] and [SEP]"),
            });
        }
        self.inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|error| ModelError::Tokenizer {
                path: self.path.clone(),
                message: error.to_string(),
            })?;
        self.max_length = max_length;
        Ok(())
    }

    /// Tokenizes each text with `[CLS]`/`[SEP]`; `first_index` numbers the
    /// texts in messages (line numbers of an input file, say).
    pub fn encode(&self, texts: &[&str], first_index: usize) -> Result<Vec<Encoding>> {
        texts
            .iter()
            .enumerate()
            .map(|(offset, text)| {
                let encoding = self.inner.encode(*text, true).map_err(|error| {
                    ModelError::input(format!("text {}", first_index + offset), error.to_string())
                })?;
                Ok(Encoding {
                    ids: encoding.get_ids().to_vec(),
                    type_ids: encoding.get_type_ids().to_vec(),
                    tokens: encoding.get_tokens().to_vec(),
                    truncated: !encoding.get_overflowing().is_empty(),
                })
            })
            .collect()
    }

    /// Pads encodings to the longest of them and stacks them into tensors.
    pub fn batch(&self, encodings: &[Encoding], device: &Device) -> Result<Batch> {
        if encodings.is_empty() {
            return Err(ModelError::input("texts", "an empty batch"));
        }
        let n = encodings.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        let rows = encodings.len();
        let (mut ids, mut types) = (Vec::new(), Vec::new());
        self.pad_into(encodings, n, &mut ids, &mut types);
        let mut mask = Vec::with_capacity(rows * n);
        for encoding in encodings {
            mask.extend(std::iter::repeat_n(1u32, encoding.ids.len()));
            mask.extend(std::iter::repeat_n(0u32, n - encoding.ids.len()));
        }
        Ok(Batch {
            input_ids: Tensor::from_vec(ids, (rows, n), device)?,
            token_type_ids: Tensor::from_vec(types, (rows, n), device)?,
            attention_mask: Tensor::from_vec(mask, (rows, n), device)?,
            lengths: encodings.iter().map(|e| e.ids.len()).collect(),
        })
    }

    /// Token and segment ids of `encodings`, each padded on the right to
    /// `n` with the pad id and segment 0 (none is padded past its own
    /// length: `n = 0` lays them back to back), into buffers the caller
    /// reuses.
    pub fn pad_into(
        &self,
        encodings: &[Encoding],
        n: usize,
        ids: &mut Vec<u32>,
        type_ids: &mut Vec<u32>,
    ) {
        ids.clear();
        type_ids.clear();
        for encoding in encodings {
            let pad = n.saturating_sub(encoding.ids.len());
            ids.extend_from_slice(&encoding.ids);
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            type_ids.extend_from_slice(&encoding.type_ids);
            type_ids.extend(std::iter::repeat_n(0, pad));
        }
    }
}
