//! Access to the f32 data behind candle tensors and storages.

use candle_core::{bail, CpuStorage, Device, Layout, Result, Shape, Storage, Tensor};

/// The contiguous f32 slice a custom op's forward reads.
pub(crate) fn cpu_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("attnflow kernel: input is not contiguous"),
    }
}

/// Runs `f` on the f32 values of `tensor` (made contiguous first: the
/// incoming gradient may be a stride-0 broadcast).
pub fn with_values<R>(tensor: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("attnflow kernel: tensor is not on the CPU")
    };
    let values = cpu_slice(cpu, layout)?;
    Ok(f(values))
}

/// An f32 tensor on the CPU from computed values.
pub(crate) fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(values, shape.into(), &Device::Cpu)
}

/// Whether `tensors` can take the fused kernels: f32 on the CPU.
pub(crate) fn fusable(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.dtype() == candle_core::DType::F32 && t.device().is_cpu())
}
