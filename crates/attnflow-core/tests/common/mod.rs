//! Helpers shared by the integration tests.

use candle_core::{DType, Device, Tensor};

/// A deterministic pseudo-random tensor in [-1, 1) (a 64-bit LCG), so tests
/// need no RNG state and reproduce exactly.
pub fn seeded(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let count: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let values: Vec<f64> = (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// All values of a tensor as f64, in row-major order.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}
