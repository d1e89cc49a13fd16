//! Rollout and attention flow agree with an independent numpy/networkx
//! reference. Fixture: `fixtures/analysis_golden.json`, made by
//! `tools/make_analysis_fixtures.py`.

use attnflow_core::analysis::{
    attention_flow, rollout, AttentionMap, AttentionStack, RolloutOptions,
};
use serde_json::Value;

fn numbers(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(numbers).collect(),
        Value::Number(number) => vec![number.as_f64().unwrap()],
        other => panic!("unexpected JSON {other}"),
    }
}

#[test]
fn rollout_and_flow_match_the_reference() {
    let text = include_str!("fixtures/analysis_golden.json");
    let golden: Value = serde_json::from_str(text).unwrap();
    assert_eq!(golden["generator"], "tools/make_analysis_fixtures.py");
    let (layers, heads, n) = (
        golden["layers"].as_u64().unwrap() as usize,
        golden["heads"].as_u64().unwrap() as usize,
        golden["tokens"].as_u64().unwrap() as usize,
    );
    let values = numbers(&golden["attention"]);
    let model = AttentionStack::new(
        (0..layers)
            .map(|layer| {
                (0..heads)
                    .map(|head| {
                        let start = (layer * heads + head) * n * n;
                        AttentionMap::new(n, n, values[start..start + n * n].to_vec()).unwrap()
                    })
                    .collect()
            })
            .collect(),
    )
    .unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let options = RolloutOptions {
            fusion: case["fusion"].as_str().unwrap().parse().unwrap(),
            discard_ratio: case["discard_ratio"].as_f64().unwrap(),
            start_layer: case["start_layer"].as_u64().unwrap() as usize,
            residual: true,
        };
        let expected = numbers(&case["rollout"]);
        let actual = rollout(&model, &options).unwrap();
        for (index, (a, e)) in actual.values().iter().zip(&expected).enumerate() {
            assert!(
                (a - e).abs() < 1e-12,
                "{options:?} rollout entry {index}: {a} vs {e}"
            );
        }
        let target = case["target"].as_u64().unwrap() as usize;
        let expected = numbers(&case["flow"]);
        let flow = attention_flow(&model, &options, target).unwrap();
        for (input, (a, e)) in flow.iter().zip(&expected).enumerate() {
            assert!(
                (a - e).abs() < 1e-9,
                "{options:?} flow {target} -> {input}: {a} vs {e}"
            );
        }
    }
}
