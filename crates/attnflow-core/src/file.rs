//! Attention on the user's own tensors, read from and written to
//! safetensors files (`attnflow attention sdpa`).
//!
//! A file holds `q`, `k`, `v` and optionally `mask` and `key_padding`; with
//! `q_proj.weight`, `k_proj.weight`, `v_proj.weight` and `out_proj.weight`
//! it holds a multi-head attention block (§2.2) instead. Every fault names
//! the file and the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use safetensors::SafeTensors;

use crate::{
    scaled_dot_product_attention, AttentionMask, CoreError, MultiHeadAttention,
    MultiHeadAttentionConfig, SdpaOptions,
};

/// A fault in a tensor file: the user's input, named.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what it should be: not safetensors, a missing or
    /// misshapen tensor, an unsupported dtype, a missing setting.
    #[error("{}: {message}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        message: String,
    },
    /// The attention engine refused the tensors (shapes that do not fit).
    #[error("{}: {source}", path.display())]
    Engine {
        /// The file.
        path: PathBuf,
        /// The engine's error.
        source: CoreError,
    },
}

impl attnflow_base::Classified for FileError {
    fn fault(&self) -> attnflow_base::Fault {
        match self {
            FileError::Io { .. } => attnflow_base::Fault::Failed,
            FileError::Engine { source, .. } => attnflow_base::Classified::fault(source),
            FileError::Input { .. } => attnflow_base::Fault::BadInput,
        }
    }
}

fn input(path: &Path, message: impl Into<String>) -> FileError {
    FileError::Input {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads every tensor of a safetensors file onto the CPU, keeping each
/// tensor's dtype. `bool` tensors (which candle lacks) become `u8` with the
/// same 0/1 values.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>, FileError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            input(path, format!("cannot read: {source}"))
        }
        _ => FileError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|error| input(path, format!("not a valid safetensors file: {error}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::BOOL | safetensors::Dtype::U8 => DType::U8,
            safetensors::Dtype::U32 => DType::U32,
            safetensors::Dtype::I64 => DType::I64,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(input(
                    path,
                    format!("tensor `{name}` has dtype {other:?}, which attention does not take (use f32, f64, f16, bf16, or bool/u8 for masks)"),
                ))
            }
        };
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|error| input(path, format!("tensor `{name}`: {error}")))?;
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

/// Writes named tensors to a safetensors file, atomically.
pub fn write_tensors(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<(), FileError> {
    let contiguous = tensors
        .iter()
        .map(|(name, tensor)| Ok((name.to_string(), tensor.contiguous()?)))
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(|error| FileError::Engine {
            path: path.to_path_buf(),
            source: error.into(),
        })?;
    let bytes = safetensors::serialize(contiguous, None).map_err(|error| FileError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(error.to_string()),
    })?;
    attnflow_base::write_atomically(path, &bytes).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// How to attend over a file's tensors.
#[derive(Clone, Debug, Default)]
pub struct FileOptions {
    /// Add a causal mask (query i sees keys j <= i).
    pub causal: bool,
    /// Multiply scores by this instead of `1/sqrt(d_k)` (plain attention only).
    pub scale: Option<f64>,
    /// Heads of a multi-head block (required when the file holds one).
    pub heads: Option<usize>,
}

/// The result of attending over a file's tensors.
#[derive(Clone, Debug)]
pub struct FileAttention {
    /// Whether the file held a multi-head block (§2.2) rather than plain
    /// `q`, `k`, `v` (§3.2).
    pub multi_head: bool,
    /// The attention output.
    pub output: Tensor,
    /// The normalised weights `(batch, heads, n, m)` (or `(n, m)`).
    pub weights: Tensor,
}

/// Runs scaled dot-product attention, or multi-head attention when the file
/// holds projection weights, on the tensors of `path`.
pub fn attend_file(path: &Path, options: &FileOptions) -> Result<FileAttention, FileError> {
    let tensors = read_tensors(path)?;
    let require = |name: &str| -> Result<&Tensor, FileError> {
        tensors.get(name).ok_or_else(|| {
            let mut found: Vec<&str> = tensors.keys().map(String::as_str).collect();
            found.sort_unstable();
            let held = if found.is_empty() {
                "nothing".to_string()
            } else {
                found.join(", ")
            };
            input(
                path,
                format!("no tensor named `{name}` (the file holds: {held})"),
            )
        })
    };
    let (q, k, v) = (require("q")?, require("k")?, require("v")?);
    let engine = |source: CoreError| FileError::Engine {
        path: path.to_path_buf(),
        source,
    };
    let mut mask = AttentionMask::none().with_causal(options.causal);
    if let Some(user_mask) = tensors.get("mask") {
        mask = if user_mask.dtype().is_float() {
            mask.with_additive(user_mask.clone())
        } else {
            mask.with_allowed(user_mask.clone())
        };
    }
    if let Some(padding) = tensors.get("key_padding") {
        mask = mask.with_key_padding(padding.clone());
    }
    if !tensors.contains_key("q_proj.weight") {
        let sdpa = SdpaOptions {
            scale: options.scale,
        };
        let attended = scaled_dot_product_attention(q, k, v, &mask, &sdpa).map_err(engine)?;
        return Ok(FileAttention {
            multi_head: false,
            output: attended.output,
            weights: attended.weights,
        });
    }
    let heads = options.heads.ok_or_else(|| {
        input(
            path,
            "holds projection weights (multi-head attention): give the number of heads (--heads)",
        )
    })?;
    if options.scale.is_some() {
        return Err(input(
            path,
            "a scale applies to plain attention; multi-head attention scales by 1/sqrt(head width)",
        ));
    }
    let width = |name: &str, axis: usize| -> Result<usize, FileError> {
        let tensor = require(name)?;
        tensor
            .dims()
            .get(axis)
            .copied()
            .filter(|_| tensor.rank() == 2)
            .ok_or_else(|| {
                input(
                    path,
                    format!(
                        "tensor `{name}` must be a matrix (out, in), got shape {:?}",
                        tensor.dims()
                    ),
                )
            })
    };
    require("out_proj.weight")?;
    let config = MultiHeadAttentionConfig {
        embed_dim: width("q_proj.weight", 0)?,
        num_heads: heads,
        key_dim: Some(width("k_proj.weight", 1)?),
        value_dim: Some(width("v_proj.weight", 1)?),
        bias: tensors.contains_key("q_proj.bias"),
    };
    let builder = VarBuilder::from_tensors(tensors.clone(), q.dtype(), &Device::Cpu);
    let module = MultiHeadAttention::new(&config, builder).map_err(|error| match error {
        CoreError::Candle(candle) => input(
            path,
            format!(
                "projection weights do not fit a block of width {} with {heads} heads: {candle}",
                config.embed_dim
            ),
        ),
        other => engine(other),
    })?;
    let (output, weights) = module.forward(q, k, v, &mask, true).map_err(engine)?;
    let weights = weights.ok_or_else(|| {
        engine(CoreError::Config {
            field: "need_weights".into(),
            message: "the block returned no weights".into(),
        })
    })?;
    Ok(FileAttention {
        multi_head: true,
        output,
        weights,
    })
}
