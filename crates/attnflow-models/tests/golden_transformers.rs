//! all-MiniLM-L6-v2 against Hugging Face transformers (eager attention,
//! `output_attentions=True`, `output_hidden_states=True`) and
//! sentence-transformers. Fixtures: `tests/fixtures/bert_golden.*`, made by
//! `tools/make_bert_fixtures.py`. The model comes from
//! `ATTNFLOW_TEST_MODEL_DIR` (set by `.ci/run`).

mod common;

use std::sync::OnceLock;

use attnflow_blueprint::{account, Blueprint, CostOptions};
use attnflow_models::{blueprint_of_directory, ForwardOptions, PretrainedBert};
use candle_core::{DType, Device, Tensor, D};
use common::{fixtures, max_abs_diff, model_dir, values};

/// The published parameter count of all-MiniLM-L6-v2, pooler included.
const MINILM_PARAMETERS: usize = 22_713_216;

struct Golden {
    meta: serde_json::Value,
    tensors: std::collections::HashMap<String, Tensor>,
}

fn golden() -> &'static Golden {
    static GOLDEN: OnceLock<Golden> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("bert_golden.json")).unwrap();
        let tensors = candle_core::safetensors::load(
            fixtures().join("bert_golden.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        Golden {
            meta: serde_json::from_str(&text).unwrap(),
            tensors,
        }
    })
}

fn model(test: &str) -> Option<&'static PretrainedBert> {
    static MODEL: OnceLock<PretrainedBert> = OnceLock::new();
    let dir = model_dir(test)?;
    Some(MODEL.get_or_init(|| PretrainedBert::open(&dir, &Device::Cpu).unwrap()))
}

fn texts() -> Vec<String> {
    golden().meta["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| case["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn token_ids_match_the_python_tokenizers() {
    let Some(model) = model("token_ids_match_the_python_tokenizers") else {
        return;
    };
    assert_eq!(model.tokenizer.max_length(), 512);
    for case in golden().meta["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let tokens: Vec<String> = serde_json::from_value(case["tokens"].clone()).unwrap();
        let encoding = model.tokenizer.encode(&[text], 1).unwrap().remove(0);
        assert_eq!(encoding.ids, expected, "ids of {text:?}");
        assert_eq!(encoding.tokens, tokens, "tokens of {text:?}");
        assert_eq!(encoding.truncated, expected.len() == 512, "{text:?}");
    }
}

#[test]
fn hidden_states_and_attentions_match_transformers() {
    let Some(model) = model("hidden_states_and_attentions_match_transformers") else {
        return;
    };
    let golden = golden();
    let tensor = |name: &str| golden.tensors[name].clone();
    let input_ids = tensor("batch.input_ids").to_dtype(DType::U32).unwrap();
    let attention_mask = tensor("batch.attention_mask").to_dtype(DType::U32).unwrap();

    // Our own tokenizer and padding give the same batch.
    let indices: Vec<usize> = serde_json::from_value(golden.meta["batch"].clone()).unwrap();
    let all = texts();
    let batch_texts: Vec<&str> = indices.iter().map(|&i| all[i].as_str()).collect();
    let encodings = model.tokenizer.encode(&batch_texts, 1).unwrap();
    let batch = model.tokenizer.batch(&encodings, &Device::Cpu).unwrap();
    assert_eq!(values(&batch.input_ids), values(&input_ids));
    assert_eq!(values(&batch.attention_mask), values(&attention_mask));

    let output = model
        .model
        .forward(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
            ForwardOptions::everything(),
        )
        .unwrap();
    let layers = model.config.num_hidden_layers;
    assert_eq!(output.attentions.len(), layers);
    assert_eq!(output.hidden_states.len(), layers + 1);
    let mut worst = 0f32;
    for (layer, weights) in output.attentions.iter().enumerate() {
        let diff = max_abs_diff(weights, &tensor(&format!("batch.attention.{layer}")));
        assert!(diff < 1e-4, "attention of layer {layer} differs by {diff}");
        worst = worst.max(diff);
    }
    for (layer, hidden) in output.hidden_states.iter().enumerate() {
        let head = hidden.narrow(D::Minus1, 0, 16).unwrap();
        let diff = max_abs_diff(&head, &tensor(&format!("batch.hidden.{layer}.head")));
        assert!(
            diff < 1e-4,
            "hidden state {layer} (first 16 features) differs by {diff}"
        );
        let norms = hidden
            .sqr()
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .sqrt()
            .unwrap();
        let expected = tensor(&format!("batch.hidden.{layer}.norm"));
        for (ours, theirs) in values(&norms).iter().zip(values(&expected)) {
            assert!(
                (ours - theirs).abs() <= 1e-4 * theirs.max(1.0),
                "hidden state {layer} norm {ours} vs {theirs}"
            );
        }
        worst = worst.max(diff);
    }
    let diff = max_abs_diff(
        &output.last_hidden_state,
        &tensor("batch.last_hidden_state"),
    );
    assert!(diff < 1e-4, "last hidden state differs by {diff}");
    let diff = max_abs_diff(output.pooled.as_ref().unwrap(), &tensor("batch.pooled"));
    assert!(diff < 1e-4, "pooler output differs by {diff}");
    eprintln!("worst attention/hidden difference: {worst:e}");
}

#[test]
fn sentence_embeddings_match_sentence_transformers() {
    let Some(model) = model("sentence_embeddings_match_sentence_transformers") else {
        return;
    };
    let golden = golden();
    assert_eq!(
        model.sentence.max_length as u64,
        golden.meta["sentence_max_length"].as_u64().unwrap()
    );
    let all = texts();
    let texts: Vec<&str> = all.iter().map(String::as_str).collect();
    // A batch size that mixes lengths, so padding is exercised.
    let embedded = model.embed(&texts, 3, |_| {}).unwrap();
    let counts: Vec<usize> =
        serde_json::from_value(golden.meta["sentence_token_counts"].clone()).unwrap();
    assert_eq!(embedded.token_counts, counts);
    assert_eq!(embedded.truncated.last(), Some(&true));
    let expected = &golden.tensors["sentences.embeddings"];
    assert_eq!(embedded.embeddings.dims(), expected.dims());
    for row in 0..texts.len() {
        let ours = values(&embedded.embeddings.get(row).unwrap());
        let theirs = values(&expected.get(row).unwrap());
        let dot: f32 = ours.iter().zip(&theirs).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cosine = dot / (norm(&ours) * norm(&theirs));
        assert!(cosine > 0.9999, "text {row}: cosine {cosine}");
        assert!((norm(&ours) - 1.0).abs() < 1e-5);
        let diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "text {row}: embedding differs by {diff}");
    }
}

#[test]
fn parameter_count_is_the_published_one() {
    let Some(model) = model("parameter_count_is_the_published_one") else {
        return;
    };
    assert_eq!(model.model.parameter_count(), MINILM_PARAMETERS);
    let (blueprint, _) = blueprint_of_directory(&model.directory, &[]).unwrap();
    let derived = account(&blueprint, CostOptions::default());
    assert_eq!(derived.total.params, MINILM_PARAMETERS as u128);

    // The hand-written example blueprint of the same model costs the same.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/blueprints/all-MiniLM-L6-v2.toml");
    let example = Blueprint::from_file(&example, &[]).unwrap();
    assert_eq!(
        account(&example, CostOptions::default()).total,
        derived.total
    );
}
