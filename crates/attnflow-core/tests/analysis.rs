//! Analysis of attention maps: §4.2 heatmaps, §8.1 blends, §8.2 products,
//! rollout (with a test for each rollout trap), flow and head statistics.

use attnflow_core::analysis::{
    attention_flow, blend, discard_lowest, fuse_heads, head_statistics, heatmap, layer_product,
    rollout, rollout_layers, target_row, AnalysisError, AttentionMap, AttentionStack, HeadFusion,
    RolloutOptions, SeededModel, SeededModelConfig, MAX_FLOW_TOKENS,
};
use candle_core::{Device, Tensor};
use proptest::prelude::*;

fn map(rows: &[&[f64]]) -> AttentionMap {
    AttentionMap::from_rows(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap()
}

fn assert_close(actual: &[f64], expected: &[f64], tolerance: f64) {
    assert_eq!(actual.len(), expected.len());
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tolerance, "entry {index}: {a} vs {e}");
    }
}

// ---------------------------------------------------------------- §4.2

#[test]
fn heatmap_divides_positive_entries_by_the_maximum() {
    let result = heatmap(&map(&[&[0.2, 0.4], &[0.0, 0.8]]), "A").unwrap();
    assert_close(result.values(), &[0.25, 0.5, 0.0, 1.0], 1e-15);
}

#[test]
fn heatmap_sets_non_positive_entries_to_zero() {
    let result = heatmap(&map(&[&[-0.5, 0.5], &[f64::NEG_INFINITY, 0.25]]), "A").unwrap();
    assert_eq!(result.values(), &[0.0, 1.0, 0.0, 0.5]);
}

#[test]
fn heatmap_of_an_all_non_positive_matrix_is_zeros() {
    let result = heatmap(&map(&[&[-1.0, 0.0], &[-0.0, -3.0]]), "A").unwrap();
    assert_eq!(result.values(), &[0.0; 4]);
}

#[test]
fn heatmap_rejects_nan_and_positive_infinity_naming_the_cell() {
    let error = heatmap(&map(&[&[0.1, 0.2], &[f64::NAN, 0.3]]), "layer 2 head 1").unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("layer 2 head 1") && message.contains("row 1, column 0"),
        "{message}"
    );
    assert!(heatmap(&map(&[&[f64::INFINITY, 0.2]]), "A").is_err());
}

// ---------------------------------------------------------------- §8.1

#[test]
fn blend_is_the_convex_combination() {
    let vision = map(&[&[1.0, 0.0], &[0.5, 0.5]]);
    let language = map(&[&[0.0, 1.0], &[0.25, 0.75]]);
    let result = blend(&vision, &language, 0.25, 1e-9).unwrap();
    assert_close(result.values(), &[0.25, 0.75, 0.3125, 0.6875], 1e-15);
}

#[test]
fn blend_checks_alpha_shapes_and_stochastic_rows() {
    let good = map(&[&[0.5, 0.5]]);
    for alpha in [-0.1, 1.1, f64::NAN] {
        assert!(matches!(
            blend(&good, &good, alpha, 1e-6),
            Err(AnalysisError::Parameter { .. })
        ));
    }
    let wider = map(&[&[0.2, 0.3, 0.5]]);
    assert!(matches!(
        blend(&good, &wider, 0.5, 1e-6),
        Err(AnalysisError::Shape { .. })
    ));
    let not_a_distribution = map(&[&[0.5, 0.6]]);
    let error = blend(&good, &not_a_distribution, 0.5, 1e-6).unwrap_err();
    assert!(error.to_string().contains("A_l: row 0"), "{error}");
    let negative = map(&[&[1.5, -0.5]]);
    assert!(blend(&negative, &good, 0.5, 1e-6).is_err());
    // Within tolerance is accepted.
    assert!(blend(&map(&[&[0.5, 0.5 + 1e-8]]), &good, 0.5, 1e-6).is_ok());
}

// ---------------------------------------------------------------- §8.2

#[test]
fn layer_product_composes_in_the_order_information_flows() {
    let first = map(&[&[1.0, 0.0], &[1.0, 0.0]]);
    let second = map(&[&[0.0, 1.0], &[0.0, 1.0]]);
    // Output token i of layer 2 reads token 1 of layer 1, which read token 0.
    let product = layer_product(&[first.clone(), second.clone()]).unwrap();
    assert_eq!(product.values(), &[1.0, 0.0, 1.0, 0.0]);
    // The other order would say the opposite.
    assert_eq!(
        second.matmul(&first).unwrap().values(),
        &[1.0, 0.0, 1.0, 0.0]
    );
    assert_eq!(
        first.matmul(&second).unwrap().values(),
        &[0.0, 1.0, 0.0, 1.0]
    );
    assert!(layer_product(&[]).is_err());
}

// ------------------------------------------------------------- rollout

fn stack(layers: Vec<Vec<AttentionMap>>) -> AttentionStack {
    AttentionStack::new(layers).unwrap()
}

#[test]
fn rollout_matches_a_hand_computed_case() {
    // R1 = 0.5·A1 + 0.5·I = [[1, 0], [0.25, 0.75]]
    // R2 = 0.5·A2 + 0.5·I = [[0.75, 0.25], [0, 1]]
    // R2 · R1 = [[0.8125, 0.1875], [0.25, 0.75]]
    let a1 = map(&[&[1.0, 0.0], &[0.5, 0.5]]);
    let a2 = map(&[&[0.5, 0.5], &[0.0, 1.0]]);
    let result = rollout(&stack(vec![vec![a1], vec![a2]]), &RolloutOptions::default()).unwrap();
    assert_close(result.values(), &[0.8125, 0.1875, 0.25, 0.75], 1e-15);
}

#[test]
fn trap_discarding_renormalises_rows_not_columns() {
    // Row sums after discarding differ (0.7 vs 0.9), and column sums differ
    // from row sums: dividing by the wrong axis gives a different matrix
    // whose rows are not distributions.
    let fused = map(&[&[0.1, 0.2, 0.7], &[0.6, 0.3, 0.1]]);
    let result = discard_lowest(&fused, 0.4).unwrap();
    // 0.4 · 3 columns = 1 weight discarded per row: 0.1 in each row.
    assert_close(
        result.values(),
        &[0.0, 0.2 / 0.9, 0.7 / 0.9, 0.6 / 0.9, 0.3 / 0.9, 0.0],
        1e-15,
    );
    for row in result.iter_rows() {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    }
}

#[test]
fn trap_no_token_is_special() {
    // Token 0 (where a [CLS] would sit) holds the lowest weights: it is
    // discarded like any other, not kept back.
    let heads = vec![map(&[
        &[0.05, 0.45, 0.5],
        &[0.05, 0.9, 0.05],
        &[0.1, 0.3, 0.6],
    ])];
    let options = RolloutOptions {
        discard_ratio: 0.34,
        residual: false,
        ..RolloutOptions::default()
    };
    let layers = rollout_layers(&stack(vec![heads]), &options).unwrap();
    assert_eq!(layers[0].get(0, 0), 0.0);
    assert_eq!(layers[0].get(2, 0), 0.0);
    // Any token can be the target: the last token's row, not just row 0.
    let a1 = map(&[&[1.0, 0.0], &[0.5, 0.5]]);
    let a2 = map(&[&[0.5, 0.5], &[0.0, 1.0]]);
    let result = rollout(&stack(vec![vec![a1], vec![a2]]), &RolloutOptions::default()).unwrap();
    assert_close(target_row(&result, 1).unwrap(), &[0.25, 0.75], 1e-15);
    assert!(matches!(
        target_row(&result, 2),
        Err(AnalysisError::Parameter { .. })
    ));
}

#[test]
fn trap_each_layer_is_paired_with_its_own_maps_from_the_start_layer() {
    let a0 = map(&[&[0.0, 1.0], &[0.0, 1.0]]);
    let a1 = map(&[&[1.0, 0.0], &[0.5, 0.5]]);
    let a2 = map(&[&[0.5, 0.5], &[0.0, 1.0]]);
    let options = RolloutOptions {
        start_layer: 1,
        ..RolloutOptions::default()
    };
    let model = stack(vec![vec![a0], vec![a1.clone()], vec![a2.clone()]]);
    let from_one = rollout(&model, &options).unwrap();
    let without_first = rollout(
        &stack(vec![vec![a1.clone()], vec![a2.clone()]]),
        &RolloutOptions::default(),
    )
    .unwrap();
    assert_eq!(from_one, without_first);
    // Swapping the layers changes the answer: layers are not interchangeable.
    let swapped = rollout(&stack(vec![vec![a2], vec![a1]]), &RolloutOptions::default()).unwrap();
    assert_ne!(swapped, without_first);
    let too_far = RolloutOptions {
        start_layer: 3,
        ..RolloutOptions::default()
    };
    assert!(matches!(
        rollout(&model, &too_far),
        Err(AnalysisError::Parameter { .. })
    ));
}

#[test]
fn head_fusion_mean_max_min() {
    let heads = [map(&[&[0.2, 0.8]]), map(&[&[0.6, 0.4]])];
    assert_close(
        fuse_heads(&heads, HeadFusion::Mean).unwrap().values(),
        &[0.4, 0.6],
        1e-15,
    );
    assert_eq!(
        fuse_heads(&heads, HeadFusion::Max).unwrap().values(),
        &[0.6, 0.8]
    );
    assert_eq!(
        fuse_heads(&heads, HeadFusion::Min).unwrap().values(),
        &[0.2, 0.4]
    );
    assert_eq!("max".parse::<HeadFusion>().unwrap(), HeadFusion::Max);
    assert!("median".parse::<HeadFusion>().is_err());
}

#[test]
fn fully_masked_rows_keep_the_token_itself() {
    let heads = vec![map(&[&[1.0, 0.0], &[0.0, 0.0]])];
    let result = rollout(&stack(vec![heads]), &RolloutOptions::default()).unwrap();
    assert_eq!(result.values(), &[1.0, 0.0, 0.0, 1.0]);
}

// ---------------------------------------------------------------- flow

#[test]
fn flow_through_one_layer_is_the_edge_weight() {
    let a = map(&[&[0.5, 0.5, 0.0], &[0.2, 0.3, 0.5], &[0.0, 0.0, 1.0]]);
    let model = stack(vec![vec![a]]);
    let options = RolloutOptions::default();
    let layers = rollout_layers(&model, &options).unwrap();
    for target in 0..3 {
        let flow = attention_flow(&model, &options, target).unwrap();
        assert_close(&flow, layers[0].row(target), 1e-12);
    }
}

#[test]
fn flow_through_two_layers_is_the_sum_of_path_bottlenecks() {
    // With two layers every path target -> k -> j is edge-disjoint from the
    // others, so the max flow is Σ_k min(R2[t, k], R1[k, j]).
    let a1 = map(&[&[0.7, 0.2, 0.1], &[0.1, 0.1, 0.8], &[0.3, 0.3, 0.4]]);
    let a2 = map(&[&[0.2, 0.5, 0.3], &[0.6, 0.2, 0.2], &[0.1, 0.1, 0.8]]);
    let model = stack(vec![vec![a1], vec![a2]]);
    let options = RolloutOptions::default();
    let layers = rollout_layers(&model, &options).unwrap();
    for target in 0..3 {
        let flow = attention_flow(&model, &options, target).unwrap();
        let expected: Vec<f64> = (0..3)
            .map(|j| {
                (0..3)
                    .map(|k| layers[1].get(target, k).min(layers[0].get(k, j)))
                    .sum()
            })
            .collect();
        assert_close(&flow, &expected, 1e-12);
    }
}

#[test]
fn flow_refuses_long_inputs_and_bad_targets() {
    let n = MAX_FLOW_TOKENS + 1;
    let long = stack(vec![vec![AttentionMap::identity(n)]]);
    assert!(matches!(
        attention_flow(&long, &RolloutOptions::default(), 0),
        Err(AnalysisError::Parameter { .. })
    ));
    let short = stack(vec![vec![AttentionMap::identity(3)]]);
    assert!(attention_flow(&short, &RolloutOptions::default(), 3).is_err());
}

// ---------------------------------------------------------- statistics

#[test]
fn statistics_of_identity_and_uniform_maps() {
    let n = 4;
    let identity = head_statistics(&AttentionMap::identity(n), 0, 0);
    assert_eq!(identity.mean_entropy, 0.0);
    assert_eq!(identity.mean_distance, 0.0);
    assert_eq!(identity.diagonal_share, 1.0);
    assert_eq!(identity.first_token_share, 0.25);
    let uniform = AttentionMap::new(n, n, vec![0.25; n * n]).unwrap();
    let stats = head_statistics(&uniform, 1, 2);
    assert!((stats.mean_entropy - (n as f64).ln()).abs() < 1e-12);
    // Mean |i − j| over a uniform 4 × 4: (6 + 4 + 4 + 6) / 4 rows / 4 = 1.25.
    assert!((stats.mean_distance - 1.25).abs() < 1e-12);
    assert_eq!(
        (stats.first_token_share, stats.diagonal_share),
        (0.25, 0.25)
    );
    assert_eq!((stats.layer, stats.head, stats.empty_rows), (1, 2, 0));
    let masked = map(&[&[1.0, 0.0], &[0.0, 0.0]]);
    assert_eq!(head_statistics(&masked, 0, 0).empty_rows, 1);
}

// ------------------------------------------------------ stacks, models

#[test]
fn stack_from_a_five_dimensional_tensor() {
    let values: Vec<f32> = (0..2 * 3 * 2 * 4 * 4).map(|i| i as f32).collect();
    let tensor = Tensor::from_vec(values, (2, 3, 2, 4, 4), &Device::Cpu).unwrap();
    let model = AttentionStack::from_tensor(&tensor, 1).unwrap();
    assert_eq!(
        (model.num_layers(), model.num_heads(), model.num_tokens()),
        (2, 2, 4)
    );
    // Layer 1, batch 1, head 0 starts at ((1·3 + 1)·2 + 0)·16 = 128.
    assert_eq!(model.map(1, 0).get(0, 0), 128.0);
    assert!(AttentionStack::from_tensor(&tensor, 3).is_err());
    let wrong = Tensor::zeros((2, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        AttentionStack::from_tensor(&wrong, 0),
        Err(AnalysisError::Shape { .. })
    ));
    for empty in [(1, 1, 1, 0, 0), (1, 1, 0, 3, 3), (0, 1, 1, 3, 3)] {
        let tensor = Tensor::zeros(empty, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(
            AttentionStack::from_tensor(&tensor, 0).is_err(),
            "{empty:?}"
        );
    }
    assert!(AttentionStack::new(vec![vec![AttentionMap::new(0, 0, vec![]).unwrap()]]).is_err());
    let ragged = AttentionStack::new(vec![
        vec![AttentionMap::identity(2)],
        vec![AttentionMap::identity(3)],
    ]);
    assert!(ragged.is_err());
}

#[test]
fn seeded_model_is_deterministic_and_row_stochastic() {
    let config = SeededModelConfig {
        layers: 2,
        heads: 2,
        width: 8,
        seed: 7,
        causal: true,
    };
    let tokens: Vec<String> = "hello".chars().map(String::from).collect();
    let first = SeededModel::new(config.clone())
        .unwrap()
        .attention(&tokens)
        .unwrap();
    let second = SeededModel::new(config.clone())
        .unwrap()
        .attention(&tokens)
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(
        (first.num_layers(), first.num_heads(), first.num_tokens()),
        (2, 2, 5)
    );
    first.check_row_stochastic(1e-12).unwrap();
    // Causal: nothing above the diagonal.
    assert_eq!(first.map(1, 1).get(0, 4), 0.0);
    let other = SeededModel::new(SeededModelConfig {
        seed: 8,
        ..config.clone()
    })
    .unwrap();
    assert_ne!(other.attention(&tokens).unwrap(), first);
    assert!(SeededModel::new(SeededModelConfig {
        width: 7,
        ..config.clone()
    })
    .is_err());
    assert!(SeededModel::new(SeededModelConfig {
        layers: 0,
        ..config
    })
    .is_err());
}

// ----------------------------------------------------------- properties

fn stochastic_rows(n: usize) -> impl Strategy<Value = Vec<f64>> {
    // Entries in (0, 1], each row divided by its sum.
    proptest::collection::vec(proptest::collection::vec(1e-6f64..1.0, n), n).prop_map(|rows| {
        rows.into_iter()
            .flat_map(|row| {
                let sum: f64 = row.iter().sum();
                row.into_iter().map(move |v| v / sum)
            })
            .collect()
    })
}

fn random_stack(n: usize, layers: usize, heads: usize) -> impl Strategy<Value = AttentionStack> {
    proptest::collection::vec(stochastic_rows(n), layers * heads).prop_map(move |maps| {
        let mut maps = maps.into_iter();
        AttentionStack::new(
            (0..layers)
                .map(|_| {
                    (0..heads)
                        .map(|_| AttentionMap::new(n, n, maps.next().unwrap()).unwrap())
                        .collect()
                })
                .collect(),
        )
        .unwrap()
    })
}

fn fusion() -> impl Strategy<Value = HeadFusion> {
    prop_oneof![
        Just(HeadFusion::Mean),
        Just(HeadFusion::Max),
        Just(HeadFusion::Min)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rollout_rows_stay_stochastic(
        model in (2usize..7).prop_flat_map(|n| random_stack(n, 3, 2)),
        fusion in fusion(),
        discard in 0.0f64..0.9,
        start in 0usize..3,
    ) {
        let options = RolloutOptions { fusion, discard_ratio: discard, start_layer: start, residual: true };
        let result = rollout(&model, &options).unwrap();
        prop_assert!(result.max_row_sum_error() < 1e-12);
        prop_assert!(result.values().iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn blend_rows_stay_stochastic(
        (a, b) in (1usize..8).prop_flat_map(|n| (stochastic_rows(n), stochastic_rows(n))),
        alpha in 0.0f64..=1.0,
    ) {
        let n = (a.len() as f64).sqrt() as usize;
        let a = AttentionMap::new(n, n, a).unwrap();
        let b = AttentionMap::new(n, n, b).unwrap();
        let result = blend(&a, &b, alpha, 1e-9).unwrap();
        prop_assert!(result.max_row_sum_error() < 1e-12);
    }

    #[test]
    fn discarding_keeps_rows_stochastic(rows in (1usize..9).prop_flat_map(stochastic_rows), ratio in 0.0f64..1.0) {
        let n = (rows.len() as f64).sqrt() as usize;
        let result = discard_lowest(&AttentionMap::new(n, n, rows).unwrap(), ratio).unwrap();
        prop_assert!(result.max_row_sum_error() < 1e-12);
    }

    #[test]
    fn flow_never_exceeds_capacity(model in (2usize..6).prop_flat_map(|n| random_stack(n, 3, 2)), target in 0usize..2) {
        let options = RolloutOptions::default();
        let layers = rollout_layers(&model, &options).unwrap();
        let flow = attention_flow(&model, &options, target).unwrap();
        let n = model.num_tokens();
        for (input, &value) in flow.iter().enumerate() {
            prop_assert!(value >= 0.0);
            // Cut at the source: its out-capacity is its row sum, 1.
            prop_assert!(value <= 1.0 + 1e-12);
            // Cut at the sink: its in-capacity from the first layer used.
            let into_sink: f64 = (0..n).map(|i| layers[0].get(i, input)).sum();
            prop_assert!(value <= into_sink + 1e-12);
        }
    }

    #[test]
    fn heatmap_values_lie_in_the_unit_interval(values in proptest::collection::vec(-2.0f64..2.0, 1..40)) {
        let count = values.len();
        let result = heatmap(&AttentionMap::new(1, count, values.clone()).unwrap(), "A").unwrap();
        prop_assert!(result.values().iter().all(|&h| (0.0..=1.0).contains(&h)));
        let maximum = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if maximum > 0.0 {
            prop_assert!(result.values().contains(&1.0));
        }
    }
}
