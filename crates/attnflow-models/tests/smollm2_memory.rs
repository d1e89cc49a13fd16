//! Peak memory of SmolLM2-135M (Q4_1 GGUF): loading it and generating stay
//! far under the 800 MB that its dequantized f32 weights (540 MB) would
//! approach, since the weights stay in their blocks. Its own test binary,
//! so the process's peak is this test's alone.

use attnflow_models::{generate, GenerateOptions, PretrainedDecoder};
use attnflow_testkit::Model;

#[test]
fn loads_and_generates_under_800_megabytes() {
    let Some(path) = attnflow_testkit::model(Model::SmolLm2) else {
        return;
    };
    let decoder = PretrainedDecoder::open(&path).unwrap();
    assert!(
        decoder.model.weight_bytes() < 120_000_000,
        "weights take {} bytes",
        decoder.model.weight_bytes()
    );
    let options = GenerateOptions {
        max_tokens: 16,
        ..GenerateOptions::default()
    };
    let generation = generate(&decoder, "The capital of France is", &options, |_| {}).unwrap();
    assert!(generation.text.starts_with(" Paris"), "{}", generation.text);
    let peak = attnflow_base::peak_rss_bytes().expect("peak memory is readable on Linux");
    assert!(peak < 800_000_000, "peak resident memory {peak} bytes");
}
