//! A tiny random BERT written to a temp dir: loading, forward invariants,
//! padding, both tensor layouts, the derived blueprint, and every refusal.
//! Needs no download.

mod common;

use std::path::Path;

use attnflow_blueprint::{account, CostOptions};
use attnflow_models::{
    blueprint_of_directory, ForwardOptions, ModelError, PackedTokens, PretrainedBert, Workspace,
};
use candle_core::{Device, Tensor, D};
use common::{max_abs_diff, values, Tiny};

fn open(dir: &Path) -> Result<PretrainedBert, ModelError> {
    PretrainedBert::open(dir, &Device::Cpu)
}

fn tiny_dir(tiny: &Tiny) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny.write(dir.path());
    dir
}

#[test]
fn tokenizes_with_word_pieces() {
    let dir = tiny_dir(&Tiny::default());
    let model = open(dir.path()).unwrap();
    let encoding = model
        .tokenizer
        .encode(&["The CATS sat, zebra!"], 1)
        .unwrap()
        .remove(0);
    assert_eq!(
        encoding.tokens,
        ["[CLS]", "the", "cat", "##s", "sat", ",", "[UNK]", "!", "[SEP]"]
    );
    assert_eq!(encoding.ids, [2, 5, 6, 16, 7, 14, 1, 15, 3]);
    assert!(!encoding.truncated);
}

#[test]
fn forward_keeps_every_layer_and_masks_padding() {
    let tiny = Tiny::default();
    let dir = tiny_dir(&tiny);
    let model = open(dir.path()).unwrap();
    let encodings = model
        .tokenizer
        .encode(&["the cat sat on the mat .", "a dog"], 1)
        .unwrap();
    let batch = model.tokenizer.batch(&encodings, &Device::Cpu).unwrap();
    assert_eq!(batch.lengths, [9, 4]);
    let output = model
        .model
        .forward(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
            ForwardOptions::everything(),
        )
        .unwrap();
    assert_eq!(output.hidden_states.len(), tiny.layers + 1);
    assert_eq!(output.attentions.len(), tiny.layers);
    assert_eq!(output.pooled.as_ref().unwrap().dims(), &[2, tiny.hidden]);
    assert_eq!(
        max_abs_diff(
            &output.last_hidden_state,
            output.hidden_states.last().unwrap()
        ),
        0.0
    );
    for weights in &output.attentions {
        assert_eq!(weights.dims(), &[2, tiny.heads, 9, 9]);
        let sums = values(&weights.sum(D::Minus1).unwrap());
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
        // The second text has 4 real tokens: keys 4.. are padding.
        let padded = weights.get(1).unwrap().narrow(D::Minus1, 4, 5).unwrap();
        assert!(values(&padded).iter().all(|&w| w == 0.0));
    }

    // The short text alone gives the same hidden states on its real tokens.
    let alone = model
        .tokenizer
        .batch(&encodings[1..], &Device::Cpu)
        .unwrap();
    let alone = model
        .model
        .forward(
            &alone.input_ids,
            &alone.token_type_ids,
            &alone.attention_mask,
            ForwardOptions::default(),
        )
        .unwrap();
    assert!(alone.hidden_states.is_empty() && alone.attentions.is_empty());
    let in_batch = output
        .last_hidden_state
        .get(1)
        .unwrap()
        .narrow(0, 0, 4)
        .unwrap();
    let diff = max_abs_diff(&in_batch, &alone.last_hidden_state.get(0).unwrap());
    assert!(diff < 1e-5, "padding changed real tokens by {diff}");
}

#[test]
fn packed_sequences_give_the_real_rows_of_the_padded_batch() {
    let tiny = Tiny::default();
    let dir = tiny_dir(&tiny);
    let model = open(dir.path()).unwrap();
    let texts = [
        "the cat sat on the mat .",
        "a dog",
        "blue",
        "the red dog ran",
    ];
    let encodings = model.tokenizer.encode(&texts, 1).unwrap();
    let batch = model.tokenizer.batch(&encodings, &Device::Cpu).unwrap();
    let padded = values(
        &model
            .model
            .forward(
                &batch.input_ids,
                &batch.token_type_ids,
                &batch.attention_mask,
                ForwardOptions::default(),
            )
            .unwrap()
            .last_hidden_state,
    );
    let (mut ids, mut type_ids) = (Vec::new(), Vec::new());
    model
        .tokenizer
        .pad_into(&encodings, 0, &mut ids, &mut type_ids);
    let tokens = PackedTokens {
        ids: &ids,
        type_ids: &type_ids,
        lengths: &batch.lengths,
    };
    let mut workspace = Workspace::default();
    let packed = model.model.encode_packed(&tokens, &mut workspace).unwrap();
    let (d, n) = (tiny.hidden, batch.lengths.iter().max().copied().unwrap());
    assert_eq!(packed.len(), batch.lengths.iter().sum::<usize>() * d);
    let mut rows = packed.chunks_exact(d);
    for (b, &length) in batch.lengths.iter().enumerate() {
        for i in 0..length {
            let row = rows.next().unwrap();
            let want = &padded[(b * n + i) * d..][..d];
            for (got, want) in row.iter().zip(want) {
                assert!(
                    (got - want).abs() < 1e-5,
                    "text {b} token {i}: {got} packed, {want} padded"
                );
            }
        }
    }
    // Refused: ids that do not add up to the lengths, a sequence past the
    // position embeddings, nothing at all.
    let short = PackedTokens {
        ids: &ids[1..],
        ..tokens
    };
    let error = model
        .model
        .encode_packed(&short, &mut workspace)
        .unwrap_err();
    assert!(error.to_string().contains("input_ids"), "{error}");
    let long = vec![5u32; tiny.max_positions + 1];
    let lengths = [long.len()];
    let too_long = PackedTokens {
        ids: &long,
        type_ids: &long,
        lengths: &lengths,
    };
    let error = model
        .model
        .encode_packed(&too_long, &mut workspace)
        .unwrap_err();
    assert!(error.to_string().contains("position embeddings"), "{error}");
    let empty = PackedTokens {
        ids: &[],
        type_ids: &[],
        lengths: &[0],
    };
    assert!(model.model.encode_packed(&empty, &mut workspace).is_err());
}

#[test]
fn inspection_keeps_word_pieces_and_every_layer() {
    let tiny = Tiny::default();
    let dir = tiny_dir(&tiny);
    let model = open(dir.path()).unwrap();
    let inspection = model.inspect("The cats sat.").unwrap();
    assert_eq!(
        inspection.encoding.tokens,
        ["[CLS]", "the", "cat", "##s", "sat", ".", "[SEP]"]
    );
    let layers = inspection.layer_attentions().unwrap();
    assert_eq!(layers.len(), tiny.layers);
    for weights in &layers {
        assert_eq!(weights.dims(), &[tiny.heads, 7, 7]);
    }
    assert_eq!(inspection.output.hidden_states.len(), tiny.layers + 1);
}

#[test]
fn embeddings_are_unit_length_in_input_order_and_independent_of_batching() {
    let dir = tiny_dir(&Tiny::default());
    let model = open(dir.path()).unwrap();
    let texts = ["a dog", "the red cat sat on the big mat .", "", "blue"];
    let mut seen = Vec::new();
    let together = model.embed(&texts, 3, |done| seen.push(done)).unwrap();
    assert_eq!(seen, [3, 4]);
    assert_eq!(together.embeddings.dims(), &[4, 8]);
    assert_eq!(together.token_counts, [4, 11, 2, 3]);
    let norms = values(&together.embeddings.sqr().unwrap().sum(1).unwrap());
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5), "{norms:?}");
    for (index, text) in texts.iter().enumerate() {
        let alone = model.embed(&[text], 1, |_| {}).unwrap();
        let diff = max_abs_diff(
            &together.embeddings.get(index).unwrap(),
            &alone.embeddings.get(0).unwrap(),
        );
        assert!(diff < 1e-5, "text {index} moved by {diff} when batched");
    }
    let none = model.embed(&[], 8, |_| {}).unwrap();
    assert_eq!(none.embeddings.dims(), &[0, 8]);
    assert!(model.embed(&texts, 0, |_| {}).is_err());
}

#[test]
fn long_texts_are_cut_and_reported() {
    let tiny = Tiny::default();
    let dir = tiny_dir(&tiny);
    let model = open(dir.path()).unwrap();
    let long = "the cat sat on the mat . ".repeat(10);
    let encoding = model.tokenizer.encode(&[&long], 1).unwrap().remove(0);
    assert_eq!(encoding.ids.len(), tiny.max_positions);
    assert_eq!(encoding.tokens.last().unwrap(), "[SEP]");
    assert!(encoding.truncated);
    let embedded = model.embed(&[&long, "a dog"], 2, |_| {}).unwrap();
    assert_eq!(embedded.truncated, [true, false]);
    assert_eq!(embedded.token_counts[0], tiny.max_positions);
}

#[test]
fn loads_the_bert_prefixed_layout_identically() {
    let bare = tiny_dir(&Tiny::default());
    let prefixed = tiny_dir(&Tiny {
        prefixed: true,
        ..Tiny::default()
    });
    let a = open(bare.path())
        .unwrap()
        .embed(&["the cat"], 1, |_| {})
        .unwrap();
    let b = open(prefixed.path())
        .unwrap()
        .embed(&["the cat"], 1, |_| {})
        .unwrap();
    assert_eq!(max_abs_diff(&a.embeddings, &b.embeddings), 0.0);
}

#[test]
fn half_precision_weights_load_as_f32() {
    let tiny = Tiny::default();
    let full = tiny_dir(&tiny);
    let half = tempfile::tempdir().unwrap();
    let tensors = tiny
        .tensors()
        .into_iter()
        .map(|(name, tensor)| (name, tensor.to_dtype(candle_core::DType::F16).unwrap()))
        .collect();
    tiny.write_with(half.path(), tensors);
    let a = open(full.path())
        .unwrap()
        .embed(&["the red cat"], 1, |_| {})
        .unwrap();
    let b = open(half.path())
        .unwrap()
        .embed(&["the red cat"], 1, |_| {})
        .unwrap();
    assert_eq!(b.embeddings.dtype(), candle_core::DType::F32);
    let diff = max_abs_diff(&a.embeddings, &b.embeddings);
    // f16 keeps about three decimal digits of each weight.
    assert!(
        diff > 0.0 && diff < 2e-2,
        "f16 weights moved the embedding by {diff}"
    );
}

#[test]
fn derived_blueprint_counts_the_loaded_parameters() {
    let tiny = Tiny::default();
    let dir = tiny_dir(&tiny);
    let model = open(dir.path()).unwrap();
    let stored: usize = tiny.tensors().values().map(Tensor::elem_count).sum();
    assert_eq!(model.model.parameter_count(), stored);
    let (blueprint, text) = blueprint_of_directory(dir.path(), &[]).unwrap();
    assert!(text.contains("[[block]]"));
    let cost = account(&blueprint, CostOptions::default());
    assert_eq!(cost.total.params, stored as u128);

    // Without a pooler, neither counts it.
    let mut tensors = tiny.tensors();
    tensors.retain(|name, _| !name.starts_with("pooler."));
    let without = tempfile::tempdir().unwrap();
    tiny.write_with(without.path(), tensors);
    let model = open(without.path()).unwrap();
    assert!(!model.model.has_pooler());
    let (blueprint, _) = blueprint_of_directory(without.path(), &[]).unwrap();
    assert_eq!(
        account(&blueprint, CostOptions::default()).total.params,
        model.model.parameter_count() as u128
    );
    let overrides = [("seq".to_string(), "16".to_string())];
    let (blueprint, _) = blueprint_of_directory(dir.path(), &overrides).unwrap();
    assert_eq!(blueprint.dims["seq"], 16);
}

/// The error's message, checked to be an input fault.
fn refusal(dir: &Path) -> String {
    let error = open(dir).expect_err("the model should be refused");
    assert!(
        error.is_input_fault(),
        "{error} should be the input's fault"
    );
    error.to_string()
}

#[test]
fn refuses_missing_directories_and_files() {
    let message = refusal(Path::new("/nonexistent/model"));
    assert!(
        message.contains("/nonexistent/model") && message.contains("does not exist"),
        "{message}"
    );

    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let dir = tiny_dir(&Tiny::default());
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let message = refusal(dir.path());
        assert!(message.contains(&format!("{file}: missing")), "{message}");
    }
    let dir = tiny_dir(&Tiny::default());
    let message = refusal(&dir.path().join("config.json"));
    assert!(message.contains("it is a file"), "{message}");
}

#[test]
fn refuses_missing_and_misshapen_tensors() {
    let tiny = Tiny::default();
    let mut tensors = tiny.tensors();
    tensors.remove("encoder.layer.1.output.dense.bias");
    let dir = tempfile::tempdir().unwrap();
    tiny.write_with(dir.path(), tensors);
    let message = refusal(dir.path());
    assert!(
        message.contains("model.safetensors")
            && message.contains("`encoder.layer.1.output.dense.bias`"),
        "{message}"
    );

    let mut tensors = tiny.tensors();
    tensors.insert(
        "encoder.layer.0.intermediate.dense.weight".into(),
        Tensor::zeros((8, 16), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    tiny.write_with(dir.path(), tensors);
    let message = refusal(dir.path());
    assert!(
        message.contains("`encoder.layer.0.intermediate.dense.weight` has shape [8, 16]")
            && message.contains("[16, 8]"),
        "{message}"
    );

    let mut tensors = tiny.tensors();
    tensors.retain(|name, _| !name.starts_with("embeddings.word"));
    let dir = tempfile::tempdir().unwrap();
    tiny.write_with(dir.path(), tensors);
    let message = refusal(dir.path());
    assert!(
        message.contains("embeddings.word_embeddings.weight"),
        "{message}"
    );

    let mut tensors = tiny.tensors();
    let name = "encoder.layer.0.attention.self.key.bias";
    tensors.insert(
        name.into(),
        tensors[name].to_dtype(candle_core::DType::I64).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    tiny.write_with(dir.path(), tensors);
    let message = refusal(dir.path());
    assert!(
        message.contains(&format!("`{name}` has dtype I64")),
        "{message}"
    );

    let dir = tiny_dir(&tiny);
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let message = refusal(dir.path());
    assert!(
        message.contains("not a valid safetensors file"),
        "{message}"
    );
}

#[test]
fn refuses_bad_configs() {
    let dir = tiny_dir(&Tiny::default());
    std::fs::write(
        dir.path().join("config.json"),
        "{\n  \"model_type\": \"bert\",\n  oops\n}",
    )
    .unwrap();
    let message = refusal(dir.path());
    assert!(
        message.contains("config.json:3:3: invalid JSON"),
        "{message}"
    );

    let mut config = Tiny::default().config();
    config["model_type"] = "t5".into();
    config["architectures"] = serde_json::json!(["T5ForConditionalGeneration"]);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let message = refusal(dir.path());
    assert!(
        message.contains("unsupported architecture")
            && message.contains("T5ForConditionalGeneration"),
        "{message}"
    );

    let mut config = Tiny::default().config();
    config["hidden_size"] = 9.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let message = refusal(dir.path());
    assert!(message.contains("`num_attention_heads`"), "{message}");

    // A config that disagrees with the weights is caught at the tensor.
    let mut config = Tiny::default().config();
    config["intermediate_size"] = 32.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let message = refusal(dir.path());
    assert!(
        message.contains("`encoder.layer.0.intermediate.dense.weight` has shape [16, 8]"),
        "{message}"
    );

    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        Tiny::default().config().to_string(),
    )
    .unwrap();
    let message = refusal(dir.path());
    assert!(message.contains("tokenizer.json: tokenizer:"), "{message}");
}

#[test]
fn refuses_bad_forward_inputs() {
    let tiny = Tiny::default();
    let dir = tiny_dir(&tiny);
    let model = open(dir.path()).unwrap();
    let ids = Tensor::new(&[[2u32, 99, 3]], &Device::Cpu).unwrap();
    let zeros = ids.zeros_like().unwrap();
    let ones = ids.ones_like().unwrap();
    let error = model
        .model
        .forward(&ids, &zeros, &ones, ForwardOptions::default())
        .unwrap_err();
    assert!(
        error.to_string().contains("input `input_ids`: holds id 99"),
        "{error}"
    );
    let long = Tensor::zeros(
        (1, tiny.max_positions + 1),
        candle_core::DType::U32,
        &Device::Cpu,
    )
    .unwrap();
    let error = model
        .model
        .forward(
            &long,
            &long,
            &long.ones_like().unwrap(),
            ForwardOptions::default(),
        )
        .unwrap_err();
    assert!(error.to_string().contains("33 positions"), "{error}");
    let error = model
        .model
        .forward(
            &ids,
            &zeros,
            &Tensor::new(&[[1u32, 1]], &Device::Cpu).unwrap(),
            ForwardOptions::default(),
        )
        .unwrap_err();
    assert!(error.to_string().contains("attention_mask"), "{error}");
}
