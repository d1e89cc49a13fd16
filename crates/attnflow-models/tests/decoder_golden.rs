//! Tiny random decoders against Hugging Face transformers (eager attention,
//! float32): token ids, logits, every layer's attention and hidden states
//! within 1e-4, and greedy generation. Fixtures:
//! `tests/fixtures/decoders/{llama,mistral,qwen2,gpt2,tiny-llama-gguf}/`,
//! made by `tools/make_decoder_fixtures.py`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use attnflow_models::decoder::model::{DecoderOutput, ForwardOptions, LogitRows};
use attnflow_models::{generate, GenerateOptions, PretrainedDecoder};
use candle_core::{Device, Tensor};

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/decoders")
        .join(name)
}

struct Golden {
    meta: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

fn golden(name: &str) -> Golden {
    let directory = fixture(name);
    let meta =
        serde_json::from_str(&std::fs::read_to_string(directory.join("golden.json")).unwrap())
            .unwrap();
    let tensors =
        candle_core::safetensors::load(directory.join("golden.safetensors"), &Device::Cpu).unwrap();
    Golden { meta, tensors }
}

fn values(tensor: &Tensor) -> Vec<f32> {
    tensor.flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(what: &str, ours: &[f32], theirs: &[f32], tolerance: f32) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let (index, difference) = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0, 0f32),
            |best, (i, d)| if d > best.1 { (i, d) } else { best },
        );
    assert!(
        difference <= tolerance,
        "{what}: largest difference {difference:e} at {index} (ours {}, transformers {})",
        ours[index],
        theirs[index]
    );
}

fn model_path(name: &str) -> PathBuf {
    if name.ends_with("gguf") {
        fixture(name).join("model.gguf")
    } else {
        fixture(name)
    }
}

/// A fixture's decoder and the token ids of `text`.
fn open_with_ids(name: &str, text: &str) -> (PretrainedDecoder, Vec<u32>) {
    let decoder = PretrainedDecoder::open(&model_path(name)).unwrap();
    let ids = decoder.tokenizer.encode(text).unwrap().ids;
    (decoder, ids)
}

/// A forward pass over `ids` with an empty cache.
fn fresh_pass(
    decoder: &PretrainedDecoder,
    ids: &[u32],
    logits: LogitRows,
    attentions: bool,
    hidden_states: bool,
) -> DecoderOutput {
    let mut cache = decoder.model.cache(ids.len());
    let options = ForwardOptions {
        logits,
        attentions,
        hidden_states,
    };
    decoder.model.forward(ids, &mut cache, options).unwrap()
}

/// Everything a fixture holds, checked for one model.
fn check_model(name: &str) {
    let golden = golden(name);
    let decoder = PretrainedDecoder::open(&model_path(name)).unwrap();
    assert_eq!(
        decoder.model.parameter_count() as u64,
        golden.meta["parameters"].as_u64().unwrap(),
        "{name}: parameter count"
    );
    assert_eq!(
        decoder.config.parameter_count(),
        decoder.model.parameter_count(),
        "{name}: the config's count"
    );
    for (number, case) in golden.meta["cases"].as_array().unwrap().iter().enumerate() {
        let text = case["text"].as_str().unwrap();
        let expected_ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_u64().unwrap() as u32)
            .collect();
        let ids = decoder.tokenizer.encode(text).unwrap().ids;
        assert_eq!(ids, expected_ids, "{name}: token ids of {text:?}");

        let output = fresh_pass(&decoder, &ids, LogitRows::All, true, true);
        let place = |what: &str| format!("{name} input {number} {what}");
        assert_close(
            &place("logits"),
            &output.logits,
            &values(&golden.tensors[&format!("input{number}.logits")]),
            TOLERANCE,
        );
        let attention: Vec<f32> = output.attentions.concat();
        assert_close(
            &place("attention"),
            &attention,
            &values(&golden.tensors[&format!("input{number}.attention")]),
            TOLERANCE,
        );
        let hidden: Vec<f32> = output.hidden_states.concat();
        assert_close(
            &place("hidden states"),
            &hidden,
            &values(&golden.tensors[&format!("input{number}.hidden")]),
            TOLERANCE,
        );

        if let Some(greedy) = case.get("greedy") {
            let expected: Vec<u32> = greedy
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_u64().unwrap() as u32)
                .collect();
            let options = GenerateOptions {
                max_tokens: expected.len(),
                stop_at_eos: false,
                ..GenerateOptions::default()
            };
            let generation = generate(&decoder, text, &options, |_| {}).unwrap();
            assert_eq!(
                generation.generated, expected,
                "{name}: greedy tokens of {text:?}"
            );
        }
    }
}

#[test]
fn llama_with_grouped_heads_and_llama3_rope() {
    check_model("llama");
}

#[test]
fn mistral_with_one_kv_head_and_a_sliding_window() {
    check_model("mistral");
}

#[test]
fn qwen2_with_biases_tied_embeddings_and_yarn() {
    check_model("qwen2");
}

#[test]
fn gpt2_with_learned_positions_and_conv1d_weights() {
    check_model("gpt2");
}

#[test]
fn gguf_with_every_tensor_type() {
    check_model("tiny-llama-gguf");
}

/// Decoding one token at a time through the cache gives the logits and
/// attention rows of the full forward pass.
#[test]
fn cached_decoding_equals_the_full_pass() {
    for name in ["llama", "mistral", "gpt2", "tiny-llama-gguf"] {
        let (decoder, ids) = open_with_ids(
            name,
            "Grouped heads share keys and values; rotary positions.",
        );
        let n = ids.len();
        let vocab = decoder.config.vocab_size;
        let everything = ForwardOptions {
            logits: LogitRows::All,
            attentions: true,
            hidden_states: false,
        };
        let mut cache = decoder.model.cache(n);
        let full = decoder.model.forward(&ids, &mut cache, everything).unwrap();
        // Prefill three tokens, then one at a time (a small capacity makes
        // the cache grow on the way).
        let mut cache = decoder.model.cache(2);
        let prefix = decoder
            .model
            .forward(&ids[..3], &mut cache, everything)
            .unwrap();
        assert_close(
            &format!("{name}: prefix logits"),
            &prefix.logits,
            &full.logits[..3 * vocab],
            TOLERANCE,
        );
        let heads = decoder.config.num_heads;
        for position in 3..n {
            let step = decoder
                .model
                .forward(&ids[position..=position], &mut cache, everything)
                .unwrap();
            assert_close(
                &format!("{name}: logits at {position}"),
                &step.logits,
                &full.logits[position * vocab..(position + 1) * vocab],
                TOLERANCE,
            );
            let layers = step.attentions.len();
            for layer in 0..layers {
                for head in 0..heads {
                    let row =
                        &step.attentions[layer][head * (position + 1)..(head + 1) * (position + 1)];
                    let start = (head * n + position) * n;
                    assert_close(
                        &format!("{name}: layer {layer} head {head} row {position}"),
                        row,
                        &full.attentions[layer][start..start + position + 1],
                        TOLERANCE,
                    );
                }
            }
        }
    }
}

/// Without weights to return, prefill goes through attnflow-core's fused
/// kernel; its logits equal the exact path's.
#[test]
fn fused_and_exact_prefill_agree() {
    for name in ["llama", "qwen2", "gpt2"] {
        let (decoder, ids) = open_with_ids(name, "The quick brown fox jumps over the lazy dog.");
        let run = |attentions| fresh_pass(&decoder, &ids, LogitRows::All, attentions, false).logits;
        assert_close(
            &format!("{name}: fused vs exact"),
            &run(false),
            &run(true),
            1e-4,
        );
    }
}

/// A pass that wants fewer logit rows carries only those rows past the last
/// layer's attention; its logits and maps are the full pass's.
#[test]
fn fewer_logit_rows_give_the_full_pass_rows_and_maps() {
    for name in ["llama", "mistral", "qwen2", "gpt2"] {
        let (decoder, ids) = open_with_ids(
            name,
            "The quick brown fox jumps over the lazy dog, twice over.",
        );
        let n = ids.len();
        let vocab = decoder.config.vocab_size;
        let run = |logits, attentions| fresh_pass(&decoder, &ids, logits, attentions, false);
        let full = run(LogitRows::All, true);
        for attentions in [false, true] {
            for (rows, first) in [(LogitRows::Last, n - 1), (LogitRows::Tail(3), n - 3)] {
                let part = run(rows, attentions);
                assert_eq!(part.logit_positions, first..n, "{name} {rows:?}");
                assert_close(
                    &format!("{name}: {rows:?} logits, maps kept: {attentions}"),
                    &part.logits,
                    &full.logits[first * vocab..],
                    // Without maps the fused kernel attends (see above).
                    TOLERANCE,
                );
                if attentions {
                    assert_eq!(part.attentions, full.attentions, "{name}: {rows:?} maps");
                }
            }
        }
        let none = run(LogitRows::None, true);
        assert!(none.logits.is_empty(), "{name}: no logit rows");
        assert_eq!(
            none.attentions, full.attentions,
            "{name}: maps without logits"
        );
    }
}
