//! Helpers shared by the kernel tests: seeded data, tensors, comparisons,
//! and the reference check of a training op.

#![allow(dead_code)]

use candle_core::{DType, Device, Tensor, Var};

/// A small seeded generator (splitmix64) for test data.
pub struct Seeded(pub u64);

impl Seeded {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-scale, scale)`.
    pub fn values(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    pub fn below(&mut self, limit: u64) -> u64 {
        self.next() % limit
    }
}

pub fn tensor(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(values, shape, &Device::Cpu).unwrap()
}

pub fn var(values: &[f32], shape: &[usize], dtype: DType) -> Var {
    Var::from_tensor(&tensor(values, shape).to_dtype(dtype).unwrap()).unwrap()
}

pub fn values(tensor: &Tensor) -> Vec<f64> {
    tensor
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

pub fn f32_values(tensor: &Tensor) -> Vec<f32> {
    tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

pub fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// `max |got − want| ≤ tolerance · max(|want|, 1e-3)`.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tolerance: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (index, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tolerance * scale,
            "{what}[{index}]: got {g}, want {w} (scale {scale})"
        );
    }
}

/// A function of several inputs to check: on f32 inputs the kernel runs,
/// on f64 inputs its reference composition (the kernels fall back to it).
pub type Function<'a> = dyn Fn(&[Tensor]) -> Tensor + 'a;

/// Checks a training op at `inputs`: its value against the f64 reference,
/// the gradients of `Σ y·r` (random `r`) against the reference's autograd
/// in f64, and central finite differences of the f32 kernel itself at a
/// few entries per input.
pub fn check(name: &str, inputs: &[(Vec<f32>, Vec<usize>)], function: &Function<'_>) {
    let mut rng = Seeded(7);
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
    let weights = rng.values(y.elem_count(), 1.0);
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
    let step = 1e-2f32;
    for (index, (input, shape)) in inputs.iter().enumerate() {
        let Some(gradient) = grads.get(&fast[index]).map(values) else {
            continue;
        };
        for probe in 0..4 {
            let entry = rng.below(input.len() as u64) as usize;
            let at = |delta: f32| {
                let tensors: Vec<Tensor> = inputs
                    .iter()
                    .enumerate()
                    .map(|(other, (v, s))| {
                        let mut v = v.clone();
                        if other == index {
                            v[entry] += delta;
                        }
                        tensor(&v, s)
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

/// Runs `work` on a pool of `threads` threads.
pub fn on_threads<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(work)
}
