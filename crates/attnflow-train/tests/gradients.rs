//! Every example blueprint trains: one step gives every parameter a finite,
//! non-zero gradient (candle-nn's fused ops would silently give none; see
//! ARCHITECTURE.md, "Known traps in candle"), and the model's parameter count is the blueprint's.

mod common;

use std::collections::BTreeMap;

use attnflow_blueprint::{account, Blueprint, CostOptions, Element, Op};
use attnflow_train::model::{log_softmax, Mode};
use attnflow_train::rng::Rng;
use attnflow_train::{Capture, Model, ParameterStore};
use candle_core::{Device, Tensor, D};

fn check_blueprint(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let file = path.display().to_string();
    let declared: Vec<String> = Blueprint::from_text(&file, &text, &[])
        .unwrap()
        .dims
        .keys()
        .cloned()
        .collect();
    let blueprint = Blueprint::from_text(&file, &text, &common::tiny_overrides(&declared))
        .unwrap_or_else(|error| panic!("{file}: {error}"));
    let device = Device::Cpu;
    let store = ParameterStore::new(11);
    let model = Model::new(&blueprint, &store, &device).unwrap();
    assert_eq!(
        store.scalar_count() as u128,
        account(&blueprint, CostOptions::default()).total.params,
        "{file}: parameter count differs from the blueprint's account"
    );

    let mut rng = Rng::seeded(3);
    let mut inputs = BTreeMap::new();
    for input in blueprint.inputs() {
        let shape: Vec<usize> = input.shape.iter().map(|size| *size as usize).collect();
        let count: usize = shape.iter().product();
        let tensor = match input.element {
            Element::Index => {
                // Ids valid for every embedding that reads this input.
                let vocab = blueprint
                    .nodes
                    .iter()
                    .filter(|node| node.inputs.first() == Some(&input.name))
                    .filter_map(|node| match node.op {
                        Op::Embedding { vocab, .. } => Some(vocab),
                        _ => None,
                    })
                    .min()
                    .unwrap();
                let ids: Vec<u32> = (0..count).map(|_| rng.below(vocab) as u32).collect();
                Tensor::from_vec(ids, shape, &device).unwrap()
            }
            Element::Float => {
                let values: Vec<f32> = (0..count).map(|_| rng.normal() as f32).collect();
                Tensor::from_vec(values, shape, &device).unwrap()
            }
        };
        inputs.insert(input.name.clone(), tensor);
    }
    // With captured weights attention takes the exact path; without, core's
    // fused kernel: both must train every parameter.
    for capture in [Some(Capture::all()), None] {
        check_step(&file, &model, &store, &inputs, capture.as_ref(), &mut rng);
    }
}

fn check_step(
    file: &str,
    model: &Model,
    store: &ParameterStore,
    inputs: &BTreeMap<String, Tensor>,
    capture: Option<&Capture>,
    rng: &mut Rng,
) {
    let device = Device::Cpu;
    let mut dropout = Rng::seeded(4);
    let forward = model
        .forward(inputs, Mode::Train { rng: &mut dropout }, capture)
        .unwrap();
    if capture.is_some() {
        assert_eq!(forward.attention.len(), model.attention_nodes().len());
    }
    // Every output read as logits over its last axis, against random classes.
    let mut loss = Tensor::new(0f32, &device).unwrap();
    for output in forward.outputs.values() {
        let classes = output.dim(D::Minus1).unwrap();
        let rows = output.elem_count() / classes;
        let targets: Vec<u32> = (0..rows)
            .map(|_| rng.below(classes as u64) as u32)
            .collect();
        let targets = Tensor::from_vec(targets, rows, &device).unwrap();
        let log_probabilities = log_softmax(&output.reshape((rows, classes)).unwrap()).unwrap();
        let picked = log_probabilities
            .gather(&targets.unsqueeze(1).unwrap(), 1)
            .unwrap();
        loss = (loss - picked.mean_all().unwrap()).unwrap();
    }
    let gradients = loss.backward().unwrap();
    for (name, var) in store.parameters() {
        let gradient = gradients
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{file}: `{name}` received no gradient"));
        let norm = gradient
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        assert!(
            norm.is_finite() && norm > 0.0,
            "{file}: `{name}` has gradient norm {norm}"
        );
    }
}

#[test]
fn every_example_blueprint_gives_every_parameter_a_gradient() {
    let mut checked = 0;
    for directory in ["blueprints", "train"] {
        let mut paths: Vec<_> = std::fs::read_dir(common::examples().join(directory))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "toml")
            })
            .collect();
        paths.sort();
        for path in paths {
            check_blueprint(&path);
            checked += 1;
        }
    }
    assert!(checked >= 8, "checked {checked} blueprints");
}
