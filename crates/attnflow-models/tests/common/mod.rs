//! Shared test helpers: where the real model lives, and a tiny random BERT
//! written to a temp dir for tests that need no download.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// The unpacked all-MiniLM-L6-v2 directory (`attnflow_testkit`: fails when
/// missing, unless the run opted out of models).
pub fn model_dir(_test: &str) -> Option<PathBuf> {
    attnflow_testkit::model(attnflow_testkit::Model::MiniLm)
}

/// The committed fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Word pieces of the tiny model's vocabulary after the five special tokens.
pub const TINY_WORDS: [&str; 19] = [
    "the", "cat", "sat", "on", "mat", "a", "dog", "ran", ".", ",", "!", "##s", "big", "small",
    "red", "blue", "is", "was", "##ed",
];

/// Settings of the tiny BERT.
pub struct Tiny {
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    /// Save the encoder under `bert.` (as a task model does).
    pub prefixed: bool,
}

impl Default for Tiny {
    fn default() -> Self {
        Self {
            hidden: 8,
            heads: 2,
            layers: 2,
            intermediate: 16,
            max_positions: 32,
            prefixed: false,
        }
    }
}

impl Tiny {
    pub fn vocab_size(&self) -> usize {
        5 + TINY_WORDS.len()
    }

    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_act": "gelu",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": self.max_positions,
            "num_attention_heads": self.heads,
            "num_hidden_layers": self.layers,
            "pad_token_id": 0,
            "type_vocab_size": 2,
            "vocab_size": self.vocab_size(),
        })
    }

    /// Random weights of the right shapes, deterministic.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let d = self.hidden;
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                vec![self.vocab_size(), d],
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![self.max_positions, d],
            ),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, d]),
            ("embeddings.LayerNorm.weight".into(), vec![d]),
            ("embeddings.LayerNorm.bias".into(), vec![d]),
            ("pooler.dense.weight".into(), vec![d, d]),
            ("pooler.dense.bias".into(), vec![d]),
        ];
        for layer in 0..self.layers {
            let p = format!("encoder.layer.{layer}.");
            for (name, shape) in [
                ("attention.self.query", vec![d, d]),
                ("attention.self.key", vec![d, d]),
                ("attention.self.value", vec![d, d]),
                ("attention.output.dense", vec![d, d]),
                ("intermediate.dense", vec![self.intermediate, d]),
                ("output.dense", vec![d, self.intermediate]),
            ] {
                shapes.push((format!("{p}{name}.bias"), vec![shape[0]]));
                shapes.push((format!("{p}{name}.weight"), shape));
            }
            for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
                shapes.push((format!("{p}{name}.weight"), vec![d]));
                shapes.push((format!("{p}{name}.bias"), vec![d]));
            }
        }
        let prefix = if self.prefixed { "bert." } else { "" };
        shapes
            .into_iter()
            .enumerate()
            .map(|(index, (name, shape))| {
                let count: usize = shape.iter().product();
                let values: Vec<f32> = (0..count)
                    .map(|i| 0.5 * ((i as f32 * 0.731 + index as f32 * 1.37).sin()))
                    .collect();
                let tensor = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
                (format!("{prefix}{name}"), tensor)
            })
            .collect()
    }

    /// Writes config.json, tokenizer.json and model.safetensors into `dir`.
    pub fn write(&self, dir: &Path) {
        self.write_with(dir, self.tensors());
    }

    /// Like [`Tiny::write`] with the given tensors.
    pub fn write_with(&self, dir: &Path, tensors: HashMap<String, Tensor>) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&self.config()).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    }
}

/// A BERT word-piece tokenizer.json with the tiny vocabulary, laid out as
/// transformers saves one.
pub fn tiny_tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    for (id, token) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .chain(TINY_WORDS.iter())
        .enumerate()
    {
        vocab.insert(token.to_string(), id.into());
    }
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"),
            special(3, "[SEP]"), special(4, "[MASK]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

/// Every element of a tensor as f32.
pub fn values(tensor: &Tensor) -> Vec<f32> {
    tensor
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
