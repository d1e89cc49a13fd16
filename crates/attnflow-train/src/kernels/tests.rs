//! Each kernel against its reference composition of candle ops: the forward
//! value, the gradients against candle's autograd of the reference run in
//! f64, and central finite differences of the kernel itself.

use candle_core::{DType, Device, Tensor, Var};

use super::{activation, linear, loss, norm, positions, simd};
use crate::rng::Rng;

fn random(rng: &mut Rng, shape: &[usize], scale: f64) -> Vec<f32> {
    let count = shape.iter().product();
    (0..count).map(|_| (rng.normal() * scale) as f32).collect()
}

fn var(values: &[f32], shape: &[usize], dtype: DType) -> Var {
    let tensor = Tensor::from_slice(values, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    Var::from_tensor(&tensor).unwrap()
}

fn values(tensor: &Tensor) -> Vec<f64> {
    tensor
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tolerance: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (index, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * scale,
            "{what}[{index}]: got {g}, want {w} (scale {scale})"
        );
    }
}

/// A function of several inputs to check: the kernel on f32 inputs, the
/// reference composition on f64 ones (the kernels fall back to it there).
type Function<'a> = dyn Fn(&[Tensor]) -> Tensor + 'a;

/// Checks `function` at `inputs`: value against the f64 reference,
/// gradients of `Σ y·r` (random `r`) against the reference's autograd, and
/// a few central finite differences of the f32 kernel.
fn check(name: &str, inputs: &[(Vec<f32>, Vec<usize>)], function: &Function<'_>) {
    let mut rng = Rng::seeded(7);
    let fast: Vec<Var> = inputs.iter().map(|(v, s)| var(v, s, DType::F32)).collect();
    let exact: Vec<Var> = inputs.iter().map(|(v, s)| var(v, s, DType::F64)).collect();
    let fast_tensors: Vec<Tensor> = fast.iter().map(|v| v.as_tensor().clone()).collect();
    let exact_tensors: Vec<Tensor> = exact.iter().map(|v| v.as_tensor().clone()).collect();
    let y = function(&fast_tensors);
    let y_exact = function(&exact_tensors);
    assert_eq!(y.dims(), y_exact.dims(), "{name}: output shape");
    assert_close(
        &format!("{name} forward"),
        &values(&y),
        &values(&y_exact),
        2e-5,
    );
    let weights = random(&mut rng, y.dims(), 1.0);
    let weigh = |y: &Tensor| {
        let r = Tensor::from_slice(&weights, y.dims(), &Device::Cpu)
            .unwrap()
            .to_dtype(y.dtype())
            .unwrap();
        y.mul(&r).unwrap().sum_all().unwrap()
    };
    let grads = weigh(&y).backward().unwrap();
    let grads_exact = weigh(&y_exact).backward().unwrap();
    for (index, (f, e)) in fast.iter().zip(&exact).enumerate() {
        let got = grads.get(f).map(values);
        let want = grads_exact.get(e).map(values);
        match (got, want) {
            (Some(got), Some(want)) => {
                assert_close(&format!("{name} grad {index}"), &got, &want, 1e-4)
            }
            (None, None) => {}
            (got, want) => panic!(
                "{name} grad {index}: kernel has {}, reference has {}",
                got.is_some(),
                want.is_some()
            ),
        }
    }
    // Finite differences of the kernel itself at a few entries per input.
    let step = 1e-2f32;
    for (index, (input, shape)) in inputs.iter().enumerate() {
        let Some(gradient) = grads.get(&fast[index]).map(values) else {
            continue;
        };
        for probe in 0..4 {
            let entry = (rng.below(input.len() as u64)) as usize;
            let at = |delta: f32| {
                let tensors: Vec<Tensor> = inputs
                    .iter()
                    .enumerate()
                    .map(|(other, (v, s))| {
                        let mut v = v.clone();
                        if other == index {
                            v[entry] += delta;
                        }
                        Tensor::from_slice(&v, s.as_slice(), &Device::Cpu).unwrap()
                    })
                    .collect();
                values(&weigh(&function(&tensors)))[0]
            };
            let numeric = (at(step) - at(-step)) / (2.0 * f64::from(step));
            let analytic = gradient[entry];
            assert!(
                (numeric - analytic).abs() <= 2e-2 * (1.0 + analytic.abs()),
                "{name} input {index} {shape:?} entry {entry} (probe {probe}): finite difference {numeric}, gradient {analytic}"
            );
        }
    }
}

#[test]
fn exp_is_accurate_and_saturates() {
    // GELU's own exp (inlined into its vectorised loops, which
    // `gelu_paths_agree_with_the_formula` checks on every path).
    for i in 0..20001 {
        let x = -80.0 + 160.0 * i as f32 / 20000.0;
        let want = f64::from(x).exp();
        let got = f64::from(simd::portable::exp(x));
        assert!(((got - want) / want).abs() < 5e-7, "exp({x})");
    }
    // Far outside the range the result saturates instead of turning NaN.
    let (low, high) = (simd::portable::exp(-1000.0), simd::portable::exp(1000.0));
    assert!((0.0..1e-37).contains(&low) && high.is_finite() && high > 1e38);
}

#[test]
fn gelu_paths_agree_with_the_formula() {
    let mut rng = Rng::seeded(3);
    let xs = random(&mut rng, &[1000], 3.0);
    let dy = random(&mut rng, &[1000], 1.0);
    let (mut fast, mut portable) = (vec![0f32; 1000], vec![0f32; 1000]);
    simd::gelu_forward(&xs, simd::as_uninit(&mut fast));
    simd::portable::gelu_forward(&xs, &mut portable);
    let (mut dfast, mut dportable) = (vec![0f32; 1000], vec![0f32; 1000]);
    simd::gelu_backward(&xs, &dy, simd::as_uninit(&mut dfast));
    simd::portable::gelu_backward(&xs, &dy, &mut dportable);
    for i in 0..xs.len() {
        let x = f64::from(xs[i]);
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let z = c * (x + 0.044715 * x * x * x);
        let want = 0.5 * x * (1.0 + z.tanh());
        let dwant = 0.5 * (1.0 + z.tanh())
            + 0.5 * x * (1.0 - z.tanh().powi(2)) * c * (1.0 + 3.0 * 0.044715 * x * x);
        for got in [fast[i], portable[i]] {
            assert!(
                (f64::from(got) - want).abs() < 1e-5 * (1.0 + want.abs()),
                "gelu({x})"
            );
        }
        for got in [dfast[i], dportable[i]] {
            let want = dwant * f64::from(dy[i]);
            assert!(
                (f64::from(got) - want).abs() < 1e-5 * (1.0 + want.abs()),
                "gelu'({x})"
            );
        }
    }
}

#[test]
fn linear_matches_the_reference() {
    let mut rng = Rng::seeded(11);
    let (batch, seq, inputs, outputs, heads) = (2, 5, 12, 8, 4);
    let x = random(&mut rng, &[batch, seq, inputs], 1.0);
    let w = random(&mut rng, &[outputs, inputs], 0.3);
    let b = random(&mut rng, &[outputs], 0.3);
    let shapes = |v: &[usize]| v.to_vec();
    check(
        "linear",
        &[
            (x.clone(), shapes(&[batch, seq, inputs])),
            (w.clone(), shapes(&[outputs, inputs])),
            (b.clone(), shapes(&[outputs])),
        ],
        &|t| linear::linear(&t[0], &t[1], Some(&t[2])).unwrap(),
    );
    check(
        "linear without bias",
        &[
            (x.clone(), shapes(&[batch, seq, inputs])),
            (w.clone(), shapes(&[outputs, inputs])),
        ],
        &|t| linear::linear(&t[0], &t[1], None).unwrap(),
    );
    check(
        "linear to heads",
        &[
            (x.clone(), shapes(&[batch, seq, inputs])),
            (w.clone(), shapes(&[outputs, inputs])),
            (b.clone(), shapes(&[outputs])),
        ],
        &|t| linear::linear_to_heads(&t[0], &t[1], Some(&t[2]), heads).unwrap(),
    );
    check(
        "linear after gelu",
        &[
            (x.clone(), shapes(&[batch, seq, inputs])),
            (w.clone(), shapes(&[outputs, inputs])),
            (b.clone(), shapes(&[outputs])),
        ],
        &|t| linear::linear_after_gelu(&t[0], &t[1], Some(&t[2])).unwrap(),
    );
    // From heads: x is (batch, heads, seq, inputs / heads).
    check(
        "linear from heads",
        &[
            (x, shapes(&[batch, heads, seq, inputs / heads])),
            (w, shapes(&[outputs, inputs])),
            (b, shapes(&[outputs])),
        ],
        &|t| linear::linear_from_heads(&t[0], &t[1], Some(&t[2])).unwrap(),
    );
}

#[test]
fn head_layouts_are_the_transposes_they_stand_for() {
    let mut rng = Rng::seeded(5);
    let (batch, seq, width, heads) = (3, 4, 8, 2);
    let x = Tensor::from_vec(
        random(&mut rng, &[batch, seq, width], 1.0),
        (batch, seq, width),
        &Device::Cpu,
    )
    .unwrap();
    let w = Tensor::from_vec(
        random(&mut rng, &[width, width], 1.0),
        (width, width),
        &Device::Cpu,
    )
    .unwrap();
    let rows = linear::linear(&x, &w, None).unwrap();
    let split = linear::linear_to_heads(&x, &w, None, heads).unwrap();
    let want = rows
        .reshape((batch, seq, heads, width / heads))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap();
    assert_eq!(values(&split), values(&want));
    let merged = linear::linear_from_heads(&split, &w, None).unwrap();
    let want = linear::linear(&rows, &w, None).unwrap();
    assert_eq!(values(&merged), values(&want));
}

#[test]
fn layer_norm_matches_the_reference() {
    let mut rng = Rng::seeded(13);
    let (rows, width) = (6, 10);
    let mut x = random(&mut rng, &[rows, width], 2.0);
    // An offset row: the centring must not lose it.
    for value in &mut x[..width] {
        *value += 5.0;
    }
    let g = random(&mut rng, &[width], 1.0);
    let b = random(&mut rng, &[width], 1.0);
    check(
        "layer_norm",
        &[
            (x.clone(), vec![2, 3, width]),
            (g.clone(), vec![width]),
            (b, vec![width]),
        ],
        &|t| norm::layer_norm(&t[0], &t[1], Some(&t[2]), 1e-5).unwrap(),
    );
    check(
        "layer_norm without shift",
        &[(x, vec![rows, width]), (g, vec![width])],
        &|t| norm::layer_norm(&t[0], &t[1], None, 1e-5).unwrap(),
    );
}

#[test]
fn gelu_tanh_matches_the_reference() {
    let mut rng = Rng::seeded(17);
    check(
        "gelu_tanh",
        &[(random(&mut rng, &[4, 9], 2.0), vec![4, 9])],
        &|t| activation::gelu_tanh(&t[0]).unwrap(),
    );
}

#[test]
fn add_positions_matches_the_reference() {
    let mut rng = Rng::seeded(19);
    check(
        "add_positions",
        &[
            (random(&mut rng, &[3, 4, 6], 1.0), vec![3, 4, 6]),
            (random(&mut rng, &[7, 6], 1.0), vec![7, 6]),
        ],
        &|t| positions::add_positions(&t[0], &t[1]).unwrap(),
    );
}

#[test]
fn cross_entropy_matches_the_reference() {
    let mut rng = Rng::seeded(23);
    let (batch, seq, vocab) = (3, 5, 7);
    let logits = random(&mut rng, &[batch, seq, vocab], 2.0);
    let targets: Vec<u32> = (0..batch * seq)
        .map(|_| rng.below(vocab as u64) as u32)
        .collect();
    let weights: Vec<f32> = (0..batch * seq)
        .map(|i| if i % 4 == 0 { 0.0 } else { 1.0 })
        .collect();
    let total = f64::from(weights.iter().sum::<f32>());
    let targets = Tensor::from_vec(targets, (batch, seq), &Device::Cpu).unwrap();
    let weights_tensor = Tensor::from_vec(weights, (batch, seq), &Device::Cpu).unwrap();
    check(
        "cross_entropy",
        &[(logits, vec![batch, seq, vocab])],
        &|t| {
            let weights = weights_tensor.to_dtype(t[0].dtype()).unwrap();
            loss::cross_entropy(&t[0], &targets, &weights, total).unwrap()
        },
    );
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    // Big enough for every kernel to split its work.
    let mut rng = Rng::seeded(29);
    let (batch, seq, inputs, outputs) = (8, 64, 128, 256);
    let x = random(&mut rng, &[batch, seq, inputs], 1.0);
    let w = random(&mut rng, &[outputs, inputs], 0.1);
    let b = random(&mut rng, &[outputs], 0.1);
    let g = random(&mut rng, &[outputs], 1.0);
    let run = |threads: usize| -> Vec<Vec<f64>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let x = var(&x, &[batch, seq, inputs], DType::F32);
            let w = var(&w, &[outputs, inputs], DType::F32);
            let b = var(&b, &[outputs], DType::F32);
            let g = var(&g, &[outputs], DType::F32);
            let h = linear::linear(&x, &w, Some(&b)).unwrap();
            let h = norm::layer_norm(&h, &g, Some(&b), 1e-5).unwrap();
            let h = activation::gelu_tanh(&h).unwrap();
            let loss = h.sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let mut out = vec![values(&h)];
            for v in [&x, &w, &b, &g] {
                out.push(values(grads.get(v).unwrap()));
            }
            out
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn layer_norm_paths_agree() {
    // Width 37: whole 16-lane groups and a remainder.
    let mut rng = Rng::seeded(31);
    let (rows, width) = (5, 37);
    let x = random(&mut rng, &[rows, width], 2.0);
    let dy = random(&mut rng, &[rows, width], 1.0);
    let gain = random(&mut rng, &[width], 1.0);
    let shift = random(&mut rng, &[width], 1.0);
    let mut outputs = Vec::new();
    for portable in [false, true] {
        let mut y = vec![0f32; rows * width];
        let mut dx = vec![0f32; rows * width];
        let mut dgain = vec![0f32; width];
        let mut dshift = vec![0f32; width];
        if portable {
            simd::portable::layer_norm_forward(&x, &gain, Some(&shift), 1e-5, &mut y);
            simd::portable::layer_norm_backward(
                &x,
                &gain,
                &dy,
                1e-5,
                &mut dx,
                &mut dgain,
                &mut dshift,
            );
        } else {
            simd::layer_norm_forward(&x, &gain, Some(&shift), 1e-5, simd::as_uninit(&mut y));
            simd::layer_norm_backward(
                &x,
                &gain,
                &dy,
                1e-5,
                simd::as_uninit(&mut dx),
                &mut dgain,
                &mut dshift,
            );
        }
        outputs.push([y, dx, dgain, dshift]);
    }
    for (fast, portable) in outputs[0].iter().zip(&outputs[1]) {
        let fast: Vec<f64> = fast.iter().map(|v| f64::from(*v)).collect();
        let portable: Vec<f64> = portable.iter().map(|v| f64::from(*v)).collect();
        assert_close("layer norm paths", &fast, &portable, 1e-5);
    }
}

#[test]
fn sum_of_squares_matches_a_plain_f64_sum() {
    let mut rng = Rng::seeded(37);
    for len in [0, 1, 7, 8, 9, 1000, 4099] {
        let values = random(&mut rng, &[len], 3.0);
        let want: f64 = values.iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
        let got = simd::sum_of_squares(&values);
        assert!(
            (got - want).abs() <= 1e-12 * want.max(1e-300),
            "len {len}: {got} vs {want}"
        );
    }
}

#[test]
fn a_second_backward_recomputes_what_the_first_took() {
    // linear_after_gelu keeps GELU(x) for one backward; another backward of
    // the same graph recomputes it and must agree.
    let mut rng = Rng::seeded(41);
    let x = var(&random(&mut rng, &[6, 8], 1.0), &[6, 8], DType::F32);
    let w = var(&random(&mut rng, &[5, 8], 0.3), &[5, 8], DType::F32);
    let loss = linear::linear_after_gelu(&x, &w, None)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    let first = loss.backward().unwrap();
    let second = loss.backward().unwrap();
    for v in [&x, &w] {
        assert_eq!(
            values(first.get(v).unwrap()),
            values(second.get(v).unwrap())
        );
    }
}
