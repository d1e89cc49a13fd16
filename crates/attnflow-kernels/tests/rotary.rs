//! Rotary embeddings against transformers' Llama rotary embedding (default,
//! "linear" and "llama3" scaling): the frequencies, the cos/sin tables and
//! the rotated queries. Fixture made by `tools/make_rotary_fixtures.py`.

mod common;

use attnflow_kernels::{
    inverse_frequencies, rotary_in_place, HeadsLayout, RotaryConfig, RotaryScaling, RotaryTables,
};
use serde_json::Value;

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_f64().expect("a number") as f32)
        .collect()
}

fn config(name: &str, dims: usize) -> RotaryConfig {
    match name {
        "default" => RotaryConfig {
            dims,
            theta: 10_000.0,
            scaling: RotaryScaling::None,
        },
        "linear" => RotaryConfig {
            dims,
            theta: 10_000.0,
            scaling: RotaryScaling::Linear { factor: 4.0 },
        },
        "llama3" => RotaryConfig {
            dims,
            theta: 500_000.0,
            scaling: RotaryScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 64,
            },
        },
        other => panic!("unknown case {other}"),
    }
}

/// Units in the last place between two floats of one sign.
fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn tables_and_rotations_match_transformers() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rotary.json"
    ))
    .expect("the fixture (tools/make_rotary_fixtures.py)");
    let fixture: Value = serde_json::from_str(&text).unwrap();
    let number = |key: &str| fixture[key].as_u64().unwrap() as usize;
    let (head_dim, heads, positions, first, seq) = (
        number("head_dim"),
        number("heads"),
        number("positions"),
        number("first_position"),
        number("seq"),
    );
    let q = floats(&fixture["q"]);
    for (name, case) in fixture["cases"].as_object().unwrap() {
        let config = config(name, head_dim);
        assert_eq!(case["attention_scaling"].as_f64(), Some(1.0), "{name}");
        // Frequencies: the same f32 arithmetic, at most an ulp apart where
        // pow rounds differently.
        let frequencies = inverse_frequencies(&config);
        for (got, want) in frequencies.iter().zip(floats(&case["inv_freq"])) {
            assert!(ulps(*got, want) <= 1, "{name}: frequency {got} vs {want}");
        }
        let tables = RotaryTables::new(&config, positions);
        assert_eq!(tables.dims(), head_dim);
        for (table, key) in [(tables.cos(), "cos"), (tables.sin(), "sin")] {
            let want = floats(&case[key]);
            assert_eq!(table.len(), want.len(), "{name}: {key} size");
            let worst = table
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // The angles are the same f32 products; their cosines differ
            // by float rounding of cos in f32 at most.
            assert!(worst <= 2.5e-7, "{name}: {key} differs by {worst}");
        }
        let mut rotated = q.clone();
        rotary_in_place(
            &mut rotated,
            HeadsLayout::contiguous(heads, seq, head_dim),
            (1, heads, seq),
            &tables,
            first,
        );
        let mut worst = 0f32;
        for (index, (got, want)) in rotated.iter().zip(floats(&case["rotated"])).enumerate() {
            worst = worst.max((got - want).abs());
            assert!(
                (got - want).abs() <= 2e-6 * (1.0 + want.abs()),
                "{name}: rotated[{index}] = {got}, transformers {want}"
            );
        }
        println!("{name}: rotated values within {worst:e} of transformers'");
    }
}
