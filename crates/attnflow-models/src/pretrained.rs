//! A Hugging Face model directory, loaded whole: configuration, weights,
//! tokenizer and sentence-embedding recipe.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::bert::{BertModel, BertOutput, ForwardOptions, PackedTokens, Workspace, PROBE_TENSOR};
use crate::config::BertConfig;
use crate::error::{read_json, ModelError, Result};
use crate::sentence::{normalize_row, pool_sequence, SentenceConfig};
use crate::tokenizer::{BertTokenizer, Encoding};
use crate::weights::Weights;

/// The files a model directory must hold, with what each is for.
pub const REQUIRED_FILES: [(&str, &str); 3] = [
    ("config.json", "config.json holds the model's hyper-parameters"),
    ("tokenizer.json", "tokenizer.json holds the word-piece vocabulary and rules (save it with the Python tokenizer's `save_pretrained`)"),
    ("model.safetensors", "model.safetensors holds the weights (save them with `save_pretrained(..., safe_serialization=True)`)"),
];

/// Checks that `directory` is a directory with every file of
/// [`REQUIRED_FILES`], before anything large is read.
pub fn check_directory(directory: &Path) -> Result<()> {
    if !directory.is_dir() {
        let reason = if directory.exists() {
            "it is a file; give the directory that holds config.json"
        } else {
            "it does not exist"
        };
        return Err(ModelError::NotADirectory {
            path: directory.to_path_buf(),
            reason: reason.to_string(),
        });
    }
    for (file, what) in REQUIRED_FILES {
        let path = directory.join(file);
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path,
                what: what.to_string(),
            });
        }
    }
    Ok(())
}

/// A BERT checkpoint loaded from a Hugging Face model directory.
#[derive(Clone, Debug)]
pub struct PretrainedBert {
    /// The directory it was loaded from.
    pub directory: PathBuf,
    /// Its `config.json`.
    pub config: BertConfig,
    /// The encoder with its weights.
    pub model: BertModel,
    /// The tokenizer, cutting texts at the model's longest input.
    pub tokenizer: BertTokenizer,
    /// How sentence embeddings are made.
    pub sentence: SentenceConfig,
}

/// One text run through the model with everything kept, for inspection.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The text's tokens, `[CLS]` and `[SEP]` included.
    pub encoding: Encoding,
    /// Hidden states of every layer and attention of every layer and head,
    /// batch size one.
    pub output: BertOutput,
}

/// Sentence embeddings of a list of texts, in the order given.
#[derive(Clone, Debug)]
pub struct Embeddings {
    /// `(texts, d)` f32.
    pub embeddings: Tensor,
    /// Tokens each text became, special tokens included (after cutting).
    pub token_counts: Vec<usize>,
    /// Whether each text was cut to the maximum length.
    pub truncated: Vec<bool>,
}

impl Inspection {
    /// Every layer's attention for the one text, `(heads, n, n)` each, in
    /// layer order: the input of attention analysis (heatmaps, rollout).
    pub fn layer_attentions(&self) -> Result<Vec<Tensor>> {
        self.output
            .attentions
            .iter()
            .map(|weights| Ok(weights.get(0)?))
            .collect()
    }
}

impl PretrainedBert {
    /// Loads `directory`: `config.json`, `model.safetensors` and
    /// `tokenizer.json` (required), plus the optional `tokenizer_config.json`
    /// and sentence-transformers files.
    pub fn open(directory: &Path, device: &Device) -> Result<Self> {
        check_directory(directory)?;
        let config = BertConfig::from_file(&directory.join("config.json"))?;
        let model_max_length = model_max_length(directory, &config)?;
        let tokenizer = BertTokenizer::from_file(
            &directory.join("tokenizer.json"),
            model_max_length,
            config.pad_token_id,
        )?;
        let sentence = SentenceConfig::from_directory(directory, model_max_length)?;
        let weights =
            Weights::from_file(&directory.join("model.safetensors"), PROBE_TENSOR, device)?;
        let model = BertModel::load(&config, &weights, device)?;
        Ok(Self {
            directory: directory.to_path_buf(),
            config,
            model,
            tokenizer,
            sentence,
        })
    }

    /// Runs one text through the model keeping every layer's hidden states
    /// and attention weights.
    pub fn inspect(&self, text: &str) -> Result<Inspection> {
        let encoding = self
            .tokenizer
            .encode(&[text], 1)?
            .pop()
            .expect("one text gives one encoding");
        let batch = self
            .tokenizer
            .batch(std::slice::from_ref(&encoding), self.model.device())?;
        let output = self.model.forward(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
            ForwardOptions::everything(),
        )?;
        Ok(Inspection { encoding, output })
    }

    /// Sentence embeddings of `texts`, `batch_size` at a time, following
    /// [`PretrainedBert::sentence`]. `progress` is called with the number
    /// of texts done after each batch.
    ///
    /// Texts are batched longest first (by characters), as
    /// sentence-transformers does, and the result is in the order given.
    /// A batch is not padded: its texts run back to back
    /// ([`BertModel::encode_packed`]), so no product is spent on padding
    /// rows, and a text's embedding is the one it gets alone. A second
    /// thread tokenizes the next batches while the encoder runs, and the
    /// encoder's buffers are reused from batch to batch.
    pub fn embed(
        &self,
        texts: &[&str],
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Embeddings> {
        if batch_size == 0 {
            return Err(ModelError::input("batch size", "must be at least 1"));
        }
        let d = self.config.hidden_size;
        let device = self.model.device();
        if texts.is_empty() {
            return Ok(Embeddings {
                embeddings: Tensor::zeros((0, d), candle_core::DType::F32, device)?,
                token_counts: Vec::new(),
                truncated: Vec::new(),
            });
        }
        let tokenizer = self.tokenizer.with_max_length(self.sentence.max_length)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&index| std::cmp::Reverse(texts[index].chars().count()));
        let mut embedded = EmbeddedTexts {
            values: vec![0f32; texts.len() * d],
            token_counts: vec![0; texts.len()],
            truncated: vec![false; texts.len()],
        };
        std::thread::scope(|scope| -> Result<()> {
            // Two batches ahead at most: bounded memory, and the encoder
            // never waits on the tokenizer after the first batch.
            let (sender, batches) = std::sync::mpsc::sync_channel(2);
            let order = &order;
            let tokenizer = &tokenizer;
            scope.spawn(move || {
                for chunk in order.chunks(batch_size) {
                    let encoded: Result<Vec<Encoding>> = chunk
                        .iter()
                        .map(|&index| {
                            // Numbered from 1 in messages, as input lines.
                            let mut one = tokenizer.encode(&[texts[index]], index + 1)?;
                            Ok(one.remove(0))
                        })
                        .collect();
                    let failed = encoded.is_err();
                    if sender.send(encoded).is_err() || failed {
                        return;
                    }
                }
            });
            let mut buffers = BatchBuffers::default();
            let mut done = 0;
            for chunk in order.chunks(batch_size) {
                let encodings = batches.recv().map_err(|_| {
                    ModelError::input("texts", "the tokenizer thread stopped early")
                })??;
                self.embed_batch(chunk, &encodings, &mut buffers, &mut embedded)?;
                done += chunk.len();
                progress(done);
            }
            Ok(())
        })?;
        Ok(Embeddings {
            embeddings: Tensor::from_vec(embedded.values, (texts.len(), d), &Device::Cpu)?
                .to_device(device)?,
            token_counts: embedded.token_counts,
            truncated: embedded.truncated,
        })
    }

    /// Encodes one batch of tokenized texts (`chunk` their indices in the
    /// input) and writes their pooled embeddings in place.
    fn embed_batch(
        &self,
        chunk: &[usize],
        encodings: &[Encoding],
        buffers: &mut BatchBuffers,
        embedded: &mut EmbeddedTexts,
    ) -> Result<()> {
        let d = self.config.hidden_size;
        buffers.lengths.clear();
        buffers
            .lengths
            .extend(encodings.iter().map(|encoding| encoding.ids.len()));
        // Back to back, no padding: a batch's products run on its real
        // tokens only.
        self.tokenizer
            .pad_into(encodings, 0, &mut buffers.ids, &mut buffers.type_ids);
        let tokens = PackedTokens {
            ids: &buffers.ids,
            type_ids: &buffers.type_ids,
            lengths: &buffers.lengths,
        };
        let mut rows = self.model.encode_packed(&tokens, &mut buffers.workspace)?;
        for ((&index, encoding), &length) in chunk.iter().zip(encodings).zip(&buffers.lengths) {
            let (sequence, rest) = rows.split_at(length * d);
            rows = rest;
            let row = &mut embedded.values[index * d..(index + 1) * d];
            // Every row is a real token: nothing to mask.
            pool_sequence(row, sequence, None, self.sentence.pooling);
            if self.sentence.normalize {
                normalize_row(row);
            }
            embedded.token_counts[index] = length;
            embedded.truncated[index] = encoding.truncated;
        }
        Ok(())
    }
}

/// Embeddings being filled in, in input order.
struct EmbeddedTexts {
    values: Vec<f32>,
    token_counts: Vec<usize>,
    truncated: Vec<bool>,
}

/// What one batch needs besides the encoder's workspace, reused across
/// batches.
#[derive(Default)]
struct BatchBuffers {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
    lengths: Vec<usize>,
    workspace: Workspace,
}

/// The longest input: `max_position_embeddings`, lowered to
/// `tokenizer_config.json`'s `model_max_length` when that is smaller
/// (transformers stores a huge sentinel when it has no limit).
fn model_max_length(directory: &Path, config: &BertConfig) -> Result<usize> {
    let path = directory.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(config.max_position_embeddings);
    }
    let value = read_json(&path, "tokenizer settings")?;
    Ok(
        match value
            .get("model_max_length")
            .and_then(serde_json::Value::as_f64)
        {
            Some(limit) if limit >= 2.0 && limit < config.max_position_embeddings as f64 => {
                limit as usize
            }
            _ => config.max_position_embeddings,
        },
    )
}
