//! The example blueprints check, and their parameter counts equal the
//! published ones exactly.

use std::path::PathBuf;

use attnflow_blueprint::cost::non_embedding_params;
use attnflow_blueprint::{account, Blueprint, Convention, CostOptions, Counting};

fn example(name: &str) -> Blueprint {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/blueprints")
        .join(name);
    Blueprint::from_file(&path, &[]).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn params(name: &str) -> u128 {
    account(&example(name), CostOptions::default()).total.params
}

#[test]
fn published_parameter_counts() {
    assert_eq!(params("gpt2-small.toml"), 124_439_808);
    assert_eq!(params("bert-base.toml"), 109_482_240);
    assert_eq!(params("all-MiniLM-L6-v2.toml"), 22_713_216);
    // TinyLlama-1.1B's config.
    assert_eq!(params("llama-style.toml"), 1_100_048_384);
    // SmolLM2-135M, derived from its GGUF metadata.
    assert_eq!(params("SmolLM2-135M.toml"), 134_515_008);
    // timm vit_base_patch16_224.
    assert_eq!(params("vit-b16.toml"), 86_567_656);
    assert!(params("tiny.toml") > 0);
}

#[test]
fn kaplan_reproduces_the_closed_form_for_gpt2() {
    let blueprint = example("gpt2-small.toml");
    let n = non_embedding_params(&blueprint);
    // All parameters minus token (50257·768) and position (1024·768) tables.
    assert_eq!(n, 124_439_808 - 50_257 * 768 - 1_024 * 768);
    let options = CostOptions {
        convention: Convention::Kaplan,
        ..CostOptions::default()
    };
    let cost = account(&blueprint, options).total;
    let (n_layer, n_ctx, d_attn, tokens) = (12u128, 1024u128, 768u128, 1024u128);
    // Kaplan et al. 2020, Table 1: C_forward = 2N + 2·n_layer·n_ctx·d_attn per token.
    assert_eq!(
        cost.forward_flops,
        tokens * (2 * n + 2 * n_layer * n_ctx * d_attn)
    );
    assert_eq!(cost.training_flops, 3 * cost.forward_flops);
}

#[test]
fn exact_causal_counting_is_cheaper_than_dense() {
    let blueprint = example("gpt2-small.toml");
    let dense = account(&blueprint, CostOptions::default());
    let exact = account(
        &blueprint,
        CostOptions {
            counting: Counting::Exact,
            ..CostOptions::default()
        },
    );
    let attention = |account: &attnflow_blueprint::Account| account.by_op["attention"].macs;
    let projections = 12u128 * 4 * 1024 * 768 * 768;
    // Dense: two n×n×d products per layer; exact: n(n+1)/2 entries each.
    assert_eq!(attention(&dense) - projections, 12 * 2 * 1024 * 1024 * 768);
    assert_eq!(
        attention(&exact) - projections,
        12 * 2 * (1024 * 1025 / 2) * 768
    );
    assert_eq!(dense.total.params, exact.total.params);
}

/// The fixture comes from `tools/blueprint_flop_fixture.py`, which runs
/// PyTorch's FlopCounterMode on equivalent torch models (and checks the
/// result against a hand derivation before writing it).
#[test]
fn matmul_convention_equals_pytorch_flop_counter() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/flop_counter.json")).unwrap();
    let models = fixture["models"].as_object().unwrap();
    assert_eq!(models.len(), 4);
    for (name, model) in models {
        let spec = model["spec"].as_str().unwrap();
        let overrides: Vec<(String, String)> = model["set"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(dim, value)| (dim.clone(), value.to_string()))
            .collect();
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(spec);
        let blueprint = Blueprint::from_file(&path, &overrides).unwrap();
        let options = CostOptions {
            convention: Convention::Matmul,
            ..CostOptions::default()
        };
        let cost = account(&blueprint, options).total;
        let expected = model["flops"].as_u64().unwrap();
        assert_eq!(cost.forward_flops, u128::from(expected), "{name}");
        assert_eq!(cost.forward_flops, 2 * cost.macs, "{name}");
        if let Some(params) = model.get("torch_params") {
            assert_eq!(cost.params, u128::from(params.as_u64().unwrap()), "{name}");
        }
    }
}

/// Cross attention: queries from the decoder, keys and values from the
/// encoder's memory of a different length and width.
#[test]
fn cross_attention_shapes_params_and_reach() {
    let text = r#"[dims]
batch = 3
source = 10
target = 7
d_encoder = 24
d_model = 16
heads = 4

[[node]]
name = "memory"
op = "input"
shape = ["batch", "source", "d_encoder"]

[[node]]
name = "queries"
op = "input"
shape = ["batch", "target", "d_model"]

[[node]]
name = "cross"
op = "attention"
input = ["queries", "memory"]
heads = "heads"
bias = false
"#;
    let blueprint = Blueprint::from_text("cross.toml", text, &[]).unwrap();
    assert_eq!(blueprint.node("cross").unwrap().shape, vec![3, 7, 16]);
    let cost = account(&blueprint, CostOptions::default()).total;
    // W_Q 16×16, W_K and W_V 24×16, W_O 16×16, no biases.
    assert_eq!(cost.params, 16 * 16 + 2 * 24 * 16 + 16 * 16);
    // Projections plus two products over 7×10 scores of head width 4.
    let projections = 3 * (7 * 16 * 16 + 2 * 10 * 24 * 16 + 7 * 16 * 16);
    assert_eq!(cost.macs, projections + 3 * 4 * 2 * 7 * 10 * 4);
    let summary = attnflow_blueprint::summary(&blueprint);
    let memory = summary
        .receptive
        .iter()
        .find(|entry| entry.input == "memory")
        .unwrap();
    assert_eq!((memory.seen_by_first, memory.seen_by_last), (10, 10));
    let queries = summary
        .receptive
        .iter()
        .find(|entry| entry.input == "queries")
        .unwrap();
    assert_eq!((queries.seen_by_first, queries.seen_by_last), (1, 1));
    let json = serde_json::to_value(&blueprint).unwrap();
    assert_eq!(json["nodes"][2]["op"], "attention");
    assert_eq!(json["nodes"][2]["cross"], true);
    assert_eq!(json["nodes"][2]["inputs"][1], "memory");
}
